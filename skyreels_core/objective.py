"""The flow-matching objective (DESIGN §3), shared by training and the sampler.

Convention (kept by sampler and loss alike): ``x_t = (1 - t) x0 + t eps`` with t = 1 pure noise,
and the model predicts the velocity ``v = eps - x0`` (the paper writes the opposite sign; this
one matches Wan and diffusers' flow-matching schedulers, so Wan checkpoints sample unchanged).
"""

from __future__ import annotations

import torch


def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for per-sample times ``t`` [B] (or a scalar)."""
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device).reshape(-1, *([1] * (x0.dim() - 1)))
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over the cells with weight 1 (all cells when ``weight`` is None)."""
    error = (prediction.float() - target.float()).pow(2)
    if weight is None:
        return error.mean()
    weight = weight.float().expand_as(error)
    return (error * weight).sum() / weight.sum().clamp_min(1)


def flow_matching_loss(
    video_prediction: torch.Tensor,
    video_x0: torch.Tensor,
    video_noise: torch.Tensor,
    audio_prediction: torch.Tensor | None = None,
    audio_x0: torch.Tensor | None = None,
    audio_noise: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖v̂_v - (ε_v - z_v)‖² + ‖v̂_a - (ε_a - z_a)‖²``; known video cells (``known_mask`` = 1)
    are given, not generated, so they carry no loss."""
    unknown = None if known_mask is None else 1 - known_mask
    loss = masked_mse(video_prediction, velocity_target(video_x0, video_noise), unknown)
    if audio_prediction is not None:
        loss = loss + masked_mse(audio_prediction, velocity_target(audio_x0, audio_noise))
    return loss
