"""The flow-matching noise schedule (DESIGN §3): uniform steps in t, bent by the timestep shift.

``x_t = (1 - t) x0 + t eps`` runs from t = 1 (noise) to t = 0 (data). The shift
``σ' = sσ / (1 + (s - 1)σ)`` of the open twin-backbone video models (s = 5 by default) keeps more
steps at high noise, where a long clip's layout and motion are decided.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from ..errors import InputError

MAX_STEPS = 200  # the Sampler's widget and the demo command; beyond it a step changes nothing


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


def custom_sigmas(
    values: Sequence[float] | torch.Tensor, input_name: str = "sigmas"
) -> torch.Tensor:
    """A schedule given as its times (a distillation LoRA's published one, the host's sigma nodes):
    checked to run from at most 1 strictly down to exactly 0, so every solver step is a real step
    and the render ends clean.

    The host's Karras-style schedulers default to sigma_max 14.6 (the noise scale of the older
    epsilon models); flow matching's noise is t = 1, hence the advice.
    """
    times = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    if times.numel() < 2:
        raise InputError(
            input_name, f"{times.numel()} time(s)", "give at least a start and the final 0"
        )
    if not bool(torch.isfinite(times).all()):
        raise InputError(input_name, "holds NaN or inf", "give finite times from 1 down to 0")
    if not 0 < times[0] <= 1:
        raise InputError(
            input_name,
            f"starts at {times[0].item():g}, outside (0, 1] (1 is pure noise in flow matching)",
            "start at 1 (or below, with an initial latent to refine); for the host's Karras or "
            "Exponential scheduler set sigma_max to 1 and sigma_min to about 0.002",
        )
    if times[-1] != 0:
        raise InputError(
            input_name,
            f"ends at {times[-1].item():g}, so the render would keep that much noise",
            "end the schedule at 0",
        )
    if not bool((times[1:] < times[:-1]).all()):
        raise InputError(
            input_name, "is not strictly decreasing", "list each time once, from high to low"
        )
    return times


def sigmas_from_text(text: str, input_name: str = "custom") -> torch.Tensor:
    """Times written out, as papers and model cards print them: ``1.0, 0.9375, 0.8333, 0.625, 0``
    (commas, spaces or a pasted Python list's brackets between them)."""
    values = []
    for token in re.split(r"[\s,;\[\]()]+", text.strip()):
        if not token:
            continue
        try:
            values.append(float(token))
        except ValueError:
            raise InputError(
                input_name, f"{token!r} is not a number", "write times like 1, 0.9, 0.6, 0"
            ) from None
    return custom_sigmas(values, input_name)


def lagged_sigmas(sigmas: Sequence[float], lag: float) -> list[float]:
    """The sound's times behind the picture's ``sigmas``: ``s0 (1 - (1 - σ / s0)^lag)`` with ``s0``
    the schedule's start, so both streams start at ``s0`` and end at 0 in the same steps while
    the sound stays noisier in between (lag 2: 0.75 where the picture is at 0.5). The sound then
    lays out its clicks against a picture whose contacts are already plain, as it would for a
    finished clip, at no extra model call; lag 1 is the joint sampling of one time."""
    start = sigmas[0]
    return [start * (1.0 - (1.0 - sigma / start) ** lag) for sigma in sigmas]
