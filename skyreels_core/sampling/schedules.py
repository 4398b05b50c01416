"""The flow-matching noise schedule (DESIGN §3): uniform steps in t, bent by the timestep shift.

``x_t = (1 - t) x0 + t eps`` runs from t = 1 (noise) to t = 0 (data). The shift
``σ' = sσ / (1 + (s - 1)σ)`` of the open twin-backbone video models (s = 5 by default) keeps more
steps at high noise, where a long clip's layout and motion are decided.
"""

from __future__ import annotations

import torch

from ..errors import InputError


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """``sσ / (1 + (s - 1)σ)``: keeps 0 and 1 fixed and pushes every other t towards noise for s > 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigma(sigma: float, shift: float) -> float:
    """The inverse of :func:`shift_sigma`, so a shifted schedule can start at an exact t."""
    return sigma / (shift - (shift - 1) * sigma)


def flow_sigmas(steps: int, shift: float, start: float = 1.0) -> torch.Tensor:
    """[steps + 1] times from ``start`` down to exactly 0, uniform before the shift.

    ``start`` < 1 (refinement, video-to-video) is hit exactly: the uniform grid starts at the
    unshifted time that the shift maps onto ``start``, so fewer steps are not wasted on noise levels
    the input never had. Float64 so that the multistep solvers' log-SNR coefficients stay exact;
    the sampler only reads these as Python numbers.
    """
    if steps < 1:
        raise InputError("steps", f"{steps} steps", "use at least 1 step")
    if not shift > 0:
        raise InputError("shift", f"shift {shift} is not positive", "use a shift above 0, e.g. 5")
    if not 0 < start <= 1:
        raise InputError(
            "denoise_start", f"start time {start} is outside (0, 1]", "use a value in (0, 1]"
        )
    uniform = torch.linspace(unshift_sigma(start, shift), 0.0, steps + 1, dtype=torch.float64)
    sigmas = shift_sigma(uniform, shift)
    sigmas[0] = start
    sigmas[-1] = 0.0
    return sigmas
