"""Flow-matching sampling of the dual-stream model: schedule, solvers, guidance, the sampler."""

from .sampler import (
    MAX_SEED,
    SamplerHooks,
    SamplerSettings,
    denoise,
    initial_noise,
    require_finite,
    require_fps,
    require_one_family,
    sample,
)
from .schedules import MAX_STEPS, custom_sigmas, flow_sigmas, sigmas_from_text
from .solvers import SOLVERS

__all__ = [
    "MAX_SEED",
    "MAX_STEPS",
    "SOLVERS",
    "SamplerHooks",
    "SamplerSettings",
    "custom_sigmas",
    "denoise",
    "flow_sigmas",
    "initial_noise",
    "require_finite",
    "require_fps",
    "require_one_family",
    "sample",
    "sigmas_from_text",
]
