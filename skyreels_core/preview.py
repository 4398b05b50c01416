"""Cheap live previews: a linear map from latent channels to RGB, fitted to the codec itself.

Decoding every step would cost more than the step; a per-codec linear fit (solid colours through
the encoder, least squares back to RGB) works for any codec behind the protocol, including ones
whose latent-to-RGB factors nobody published.
"""

from __future__ import annotations

import torch

from .codecs import VideoCodec

_PROBE_COLOURS = torch.tensor(
    [[r, g, b] for r in (0.0, 0.5, 1.0) for g in (0.0, 0.5, 1.0) for b in (0.0, 0.5, 1.0)]
)


@torch.no_grad()
def fit_preview_factors(codec: VideoCodec, size: int = 32) -> torch.Tensor:
    """[C + 1, 3] least-squares map from a latent cell (channels + bias) to its mean RGB."""
    frames = _PROBE_COLOURS[:, None, None, None, :].expand(-1, 1, size, size, 3).contiguous()
    latents = codec.encode(frames).float().mean(dim=(2, 3, 4))
    design = torch.cat([latents, torch.ones(len(latents), 1)], dim=1)
    return torch.linalg.lstsq(design, _PROBE_COLOURS).solution


def latent_preview(latents: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """RGB [H, W, 3] in 0..1 of the middle latent frame of the first sample of [B, C, T, H, W]."""
    frame = latents[0, :, latents.shape[2] // 2].float()
    rgb = torch.einsum("chw,cr->hwr", frame, factors[:-1].to(frame)) + factors[-1].to(frame)
    return rgb.clamp(0, 1)
