"""Skipping model calls whose output is predictable: runtime-adaptive step caching (EasyCache).

Late in a flow-matching render the model's output drifts slowly and in step with its input. After
two computed steps, the ratio k = |Δ output| / |Δ input| (the "transformation rate") predicts a
step's relative output change from its input change alone; while the predicted changes summed
since the last computed step stay below ``threshold``, the step takes an estimate from the last
computed outputs instead of calling the model (both guidance passes, both streams). The first ``warmup`` steps,
which lay out the scene, always run.

The decision rule is EasyCache's (Zhou et al., 2025; ComfyUI's core EasyCache node). Its
stand-in differs: EasyCache adds the input's change to the cached output (it caches a residual,
``output - input``), but a flow model's output is a velocity, which changes slowly and smoothly
in the noise level while the latents move. The stand-in here extends the last two computed
velocities linearly in each stream's noise level σ (the last one alone until there are two). Measured on
the demo model (24 held-out prompts, 50 steps, threshold 0.2 / 0.5): EasyCache's residual 45.6 /
41.0 dB from the uncached render, the last velocity 47.8 / 43.1, the extension 52.8 / 43.1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Streams = list[torch.Tensor]


def _mean_abs(tensors: Streams) -> torch.Tensor:
    """Mean |x| over every element of every stream (a 0-dim tensor: no sync until compared)."""
    total = sum(t.abs().sum() for t in tensors)
    return total / sum(t.numel() for t in tensors)


class StepCache:
    """Decides per step whether the model runs, and stands in for it when it does not."""

    def __init__(self, threshold: float, warmup: int) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.skipped: list[int] = []
        self._input: Streams | None = None  # the last computed step's input
        self._output: Streams | None = None  # and its output
        self._sigmas: list[float] = []  # and its streams' noise levels
        self._previous: tuple[Streams, list[float]] | None = None  # the step before: output, σs
        self._output_size: torch.Tensor | None = None
        self._rate: torch.Tensor | None = None  # |Δ output| / |Δ input| of the last two computed
        self._predicted = 0.0  # relative output change predicted since the last computed step

    def reuse(self, index: int, latents: Streams, sigmas: Sequence[float]) -> Streams | None:
        """The stand-in output for step ``index`` with each stream at its noise level in
        ``sigmas``, or None when the model must run."""
        if self.threshold <= 0 or index < self.warmup or self._rate is None:
            return None
        change = _mean_abs([x - p for x, p in zip(latents, self._input)])
        self._predicted += float(self._rate * change / self._output_size)
        if self._predicted >= self.threshold:
            self._predicted = 0.0
            return None
        self.skipped.append(index)
        if self._previous is None:
            return [output.clone() for output in self._output]
        before, before_sigmas = self._previous
        return [
            o + (sigma - last) / (last - first) * (o - b)
            for o, b, sigma, last, first in zip(
                self._output, before, sigmas, self._sigmas, before_sigmas, strict=True
            )
        ]

    def store(self, latents: Streams, output: Streams, sigmas: Sequence[float]) -> None:
        """Record a computed step, each stream at its noise level in ``sigmas``."""
        if self.threshold <= 0:
            return
        if self._input is not None:
            self._previous = self._output, self._sigmas
            input_change = _mean_abs([x - p for x, p in zip(latents, self._input)])
            output_change = _mean_abs([o - p for o, p in zip(output, self._output)])
            self._rate = output_change / input_change.clamp(min=1e-12)
        self._input = [x.clone() for x in latents]
        self._output = [o.clone() for o in output]
        self._sigmas = list(sigmas)
        self._output_size = _mean_abs(output).clamp(min=1e-12)
