"""Flow-matching sampling of the dual-stream model: schedule, solvers, guidance, the sampler."""

from .sampler import SamplerHooks, SamplerSettings, initial_noise, require_finite, sample
from .schedules import flow_sigmas
from .solvers import SOLVERS

__all__ = [
    "SOLVERS",
    "SamplerHooks",
    "SamplerSettings",
    "flow_sigmas",
    "initial_noise",
    "require_finite",
    "sample",
]
