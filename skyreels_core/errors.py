"""Errors a user can act on.

Every check on user input raises :class:`InputError` with one message naming the input, the bad
value and the fix, so nodes and the CLI can show it as-is instead of a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad input from the user (a node socket, a widget, a CLI flag or a file)."""

    def __init__(self, input_name: str, problem: str, fix: str) -> None:
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        super().__init__(f"{input_name}: {problem}. Fix: {fix}")


class CheckpointError(InputError):
    """A model file that is missing, unsafe, truncated or of another model."""


class MemoryAdviceError(RuntimeError):
    """Out of memory, re-raised with the options that reduce memory use."""
