"""Classifier-free guidance with a scale per stream, CFG-Zero* and APG.

Video and audio are guided by separate scales (the open twin-backbone AV models use about 4 for
video and 3 for audio: audio over-guided turns metallic before video over-saturates). The high-res
keyframes are video and share the video scale. A stream whose scale is 1 takes the conditional
velocity unchanged, and when every stream's scale is 1 the sampler makes no unconditional call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Streams = list[torch.Tensor]


def _per_sample_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> over every dim but the batch, shaped to broadcast against ``a``."""
    dot = (a * b).flatten(1).sum(dim=1)
    return dot.view(-1, *([1] * (a.dim() - 1)))


def cfg_zero_star_scale(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """CFG-Zero* (Fan et al. 2025): the per-sample s* = <c, u> / |u|^2 that best fits the
    unconditional velocity to the conditional one, so early, inaccurate unconditional estimates
    pull the sample off its path less."""
    return _per_sample_dot(cond, uncond) / (_per_sample_dot(uncond, uncond) + 1e-8)


class AdaptiveProjectedGuidance:
    """APG (Sadat et al. 2024) for one stream, applied to the x0 predictions as in the paper.

    The guidance difference is smoothed with (negative) momentum, clipped to ``norm_threshold``
    (0 turns clipping off: the useful radius depends on the latent scale of the codec), and split
    into the part parallel to the conditional x0, which mostly raises saturation and is kept with
    weight ``eta``, and the orthogonal part, which carries the prompt.
    """

    def __init__(self, momentum: float = -0.5, eta: float = 0.0, norm_threshold: float = 0.0):
        self.momentum = momentum
        self.eta = eta
        self.norm_threshold = norm_threshold
        self._running: torch.Tensor | None = None

    def update(self, cond_x0: torch.Tensor, uncond_x0: torch.Tensor) -> torch.Tensor:
        """The x0 step ``D`` so that the guided x0 is ``cond_x0 + (scale - 1) D``."""
        diff = cond_x0 - uncond_x0
        if self.momentum:
            if self._running is not None:
                diff = diff + self.momentum * self._running
            self._running = diff
        if self.norm_threshold > 0:
            norm = _per_sample_dot(diff, diff).sqrt()
            diff = diff * torch.clamp(self.norm_threshold / (norm + 1e-12), max=1.0)
        unit = cond_x0 / (_per_sample_dot(cond_x0, cond_x0).sqrt() + 1e-12)
        parallel = _per_sample_dot(diff, unit) * unit
        return diff - parallel + self.eta * parallel


class StreamGuidance:
    """Combines conditional and unconditional velocities of every stream of one render.

    ``scales`` has one entry per stream, in the sampler's stream order. Holds APG momentum across
    steps, so one instance serves one render.
    """

    def __init__(
        self,
        scales: Sequence[float],
        *,
        cfg_zero_star: bool = False,
        zero_init_steps: int = 1,
        apg: tuple[float, float, float] | None = None,
    ) -> None:
        self.scales = [float(s) for s in scales]
        self.cfg_zero_star = cfg_zero_star
        self.zero_init_steps = zero_init_steps
        self._apg = [AdaptiveProjectedGuidance(*apg) for _ in self.scales] if apg else None

    @property
    def needs_unconditional(self) -> bool:
        return any(scale != 1.0 for scale in self.scales)

    def _zero_init(self, index: int) -> bool:
        return self.cfg_zero_star and index < self.zero_init_steps

    def branches(self, index: int) -> tuple[bool, bool]:
        """Which model passes step ``index`` needs: (conditional, unconditional). During CFG-Zero*'s
        zero-init the guided streams do not move, so only unguided streams still need a pass."""
        if self._zero_init(index):
            return any(scale == 1.0 for scale in self.scales), False
        return True, self.needs_unconditional

    def combine(
        self,
        index: int,
        sigmas: Sequence[float],
        latents: Streams,
        cond: Streams | None,
        uncond: Streams | None,
    ) -> Streams:
        """The guided velocity of each stream at step ``index`` (each at its time in ``sigmas``),
        from the passes that :meth:`branches` asked for."""
        guided = []
        for n, (scale, x, sigma) in enumerate(zip(self.scales, latents, sigmas, strict=True)):
            if scale == 1.0:
                guided.append(cond[n])
            elif self._zero_init(index):
                # CFG-Zero*'s zero-init: the first velocities are mostly wrong; not moving is better.
                guided.append(torch.zeros_like(x))
            else:
                c, u = cond[n], uncond[n]
                if self.cfg_zero_star:
                    u = cfg_zero_star_scale(c, u) * u
                if self._apg is not None:
                    step = self._apg[n].update(x - sigma * c, x - sigma * u)
                    guided.append(c - ((scale - 1.0) / sigma) * step)
                else:
                    guided.append(u + scale * (c - u))
        return guided
