"""Cheap live previews of the sampler's x0 estimate: the middle latent frame as RGB.

A codec whose one-frame decode costs next to nothing (``cheap_decode``, the demo codec) is simply
decoded. A codec with published latent-to-RGB factors (the host's, for Wan 2.1) uses those.
Others get a linear map from latent channels to RGB fitted to the codec itself, which works for
any codec behind the protocol; decoding every step would cost more than the step, and the
decoder's activations would compete with the model's. The map is fitted on the decoder's side
(random latents decoded, each latent cell against the mean colour painted over it), because a
preview stands in for the decode. On six renders of the demo model (mean absolute error per
latent cell, 0..1, background / object) an encoder-side fit (27 solid colours encoded, as this
module did first) read 0.098 / 0.290, worse than painting the background alone (0.003 / 0.174);
the decoder-side fit reads 0.005 / 0.167; a decode, 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .codecs import VideoCodec


@torch.no_grad()
def fit_preview_factors(
    codec: VideoCodec, clips: int = 4, latent_frames: int = 2, size: int = 8
) -> torch.Tensor:
    """[C + 1, 3] least-squares map from a latent cell (channels + bias) to its decoded mean RGB.

    The probe is fixed (seed 0), so one codec always gets the same factors.
    """
    generator = torch.Generator().manual_seed(0)
    shape = (clips, codec.latent_channels, latent_frames, size, size)
    latents = torch.randn(shape, generator=generator)
    frames = codec.decode(latents).float().cpu()
    colours = cell_colours(frames, codec.temporal_stride, codec.spatial_stride)
    cells = latents.permute(0, 2, 3, 4, 1).reshape(-1, codec.latent_channels)
    design = torch.cat([cells, torch.ones(len(cells), 1)], dim=1)
    return torch.linalg.lstsq(design, colours.reshape(-1, 3)).solution


def cell_colours(frames: torch.Tensor, temporal_stride: int, spatial_stride: int) -> torch.Tensor:
    """Mean RGB [B, T_lat, h, w, 3] over each latent cell of frames [B, T, H, W, 3]: latent frame 0
    holds frame 0 alone, each later one the next ``temporal_stride`` frames (T = 1 + s(T_lat - 1))."""
    batch, count, height, width, _ = frames.shape
    groups = (count - 1) // temporal_stride
    later = frames[:, 1:].reshape(batch, groups, temporal_stride, height, width, 3).mean(dim=2)
    grouped = torch.cat([frames[:, :1], later], dim=1).flatten(0, 1).permute(0, 3, 1, 2)
    pooled = F.avg_pool2d(grouped, spatial_stride).permute(0, 2, 3, 1)
    return pooled.reshape(batch, groups + 1, *pooled.shape[1:])


def latent_preview(latents: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """RGB [H, W, 3] in 0..1 of the middle latent frame of the first sample of [B, C, T, H, W]."""
    frame = latents[0, :, latents.shape[2] // 2].float()
    rgb = torch.einsum("chw,cr->hwr", frame, factors[:-1].to(frame)) + factors[-1].to(frame)
    return rgb.clamp(0, 1)


def previewer(
    codec: VideoCodec, factors: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Latents [B, C, T, h, w] -> RGB [H, W, 3] in 0..1 of the first sample's middle latent frame:
    decoded when the codec decodes cheaply (a lone latent frame decodes to its group's last
    frame), else through ``factors`` ([C + 1, 3], published ones) or the fitted map at latent
    resolution."""
    if getattr(codec, "cheap_decode", False):

        def decoded(latents: torch.Tensor) -> torch.Tensor:
            middle = latents.shape[2] // 2
            device = next(codec.parameters()).device  # where it rests now (offloading moves it)
            frame = latents[:1, :, middle : middle + 1].to(device, torch.float32)
            return codec.decode(frame)[0, -1].float()

        return decoded
    if factors is None:
        factors = fit_preview_factors(codec)
    return lambda latents: latent_preview(latents, factors)
