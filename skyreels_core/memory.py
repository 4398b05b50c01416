"""Turning out-of-memory into advice, after giving the memory back.

An overnight queue must survive one render that does not fit: the failing render reports which
memory options exist, and the next queue item starts with the cache emptied.
"""

from __future__ import annotations

import gc

import torch

from .errors import MemoryAdviceError

MEMORY_OPTIONS = (
    "block swap (loader: block_swap, streams transformer blocks from CPU memory)",
    "fp8 weights (loader: dtype fp8_e4m3fn, halves the model's memory)",
    "tiled VAE decode (Decode Video: tile_size)",
    "a lower resolution (Video to Audio: longest_side) or fewer frames",
)


CPU_OUT_OF_MEMORY = (
    "DefaultCPUAllocator: can't allocate memory",  # Linux, macOS
    "DefaultCPUAllocator: not enough memory",  # Windows
)
"""What torch's CPU allocator says when RAM runs out: a plain RuntimeError, not OutOfMemoryError."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device or the CPU running out of memory."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(words in str(error) for words in CPU_OUT_OF_MEMORY)
    )


class out_of_memory_advice:  # noqa: N801 - used as a context manager, reads like one
    """Re-raise an out-of-memory error during ``stage`` as :class:`MemoryAdviceError`.

    A class rather than ``@contextmanager``: the generator protocol keeps the original traceback
    (and with it every activation of the failed render) alive in ``__exit__``'s arguments, so the
    cache could not give the memory back before the error reaches the queue.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, error, traceback) -> bool:
        if error is None or not is_out_of_memory(error):
            return False
        detail = str(error).splitlines()[0] if str(error) else "out of memory"
        error.__traceback__ = None
        del traceback, error
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        options = "; ".join(MEMORY_OPTIONS)
        raise MemoryAdviceError(
            f"{self.stage} ran out of memory ({detail}). Try: {options}."
        ) from None
