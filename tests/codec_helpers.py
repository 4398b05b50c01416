"""Codec test helpers: tiny MMAudio VAE + vocoder files, and a tiny exact codec behind the
VideoCodec protocol for tests that must not depend on a VAE.

Encoding averages each causal latent group (frame 0 alone, then 4 frames) over 8 x 8 pixels and
projects RGB to C channels; decoding inverts the projection and repeats. Known-mask and I/O logic
can then be checked exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

TINY_AUDIO = {"mel_bins": 16, "hidden_channels": 8, "channel_multipliers": [1, 2], "n_fft": 256,
              "hop_length": 64}  # fmt: skip
TINY_VOCODER = {"num_mels": 16, "upsample_initial_channel": 16, "upsample_rates": [8, 8],
                "upsample_kernel_sizes": [16, 16], "resblock_kernel_sizes": [3],
                "resblock_dilation_sizes": [[1, 3]]}  # fmt: skip


def write_tiny_mmaudio(folder: Path):
    """Random tiny diffusers MMAudio VAE and vocoder, saved as vae/vocoder/combined.safetensors
    (combined: the vocoder under ``vocoder.``, as one-file releases ship it)."""
    from diffusers import MMAudioVAE, MMAudioVocoder

    torch.manual_seed(0)
    vae, vocoder = MMAudioVAE(**TINY_AUDIO).eval(), MMAudioVocoder(**TINY_VOCODER).eval()
    save_file(vae.state_dict(), str(folder / "vae.safetensors"))
    save_file(vocoder.state_dict(), str(folder / "vocoder.safetensors"))
    combined = {**vae.state_dict(), **{f"vocoder.{k}": v for k, v in vocoder.state_dict().items()}}
    save_file(combined, str(folder / "combined.safetensors"))
    return vae, vocoder


class PoolingCodec:
    temporal_stride = 4
    spatial_stride = 8

    def __init__(self, latent_channels: int = 4) -> None:
        self.latent_channels = latent_channels
        generator = torch.Generator().manual_seed(0)
        self.projection = torch.randn(latent_channels, 3, generator=generator)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 4, 1, 2, 3)  # [B, 3, T, H, W]
        first, rest = x[:, :, :1], x[:, :, 1:]
        groups = rest.unflatten(2, (-1, 4)).mean(3) if rest.shape[2] else rest
        pooled = F.avg_pool3d(torch.cat([first, groups], dim=2), (1, 8, 8))
        return (
            torch.einsum("bct hw->bthwc".replace(" ", ""), pooled)
            .matmul(self.projection.T)
            .permute(0, 4, 1, 2, 3)
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        rgb = torch.linalg.pinv(self.projection).matmul(latents.permute(0, 2, 3, 4, 1)[..., None])[
            ..., 0
        ]
        rgb = rgb.repeat_interleave(8, 2).repeat_interleave(8, 3)  # [B, T, H, W, 3]
        return torch.cat([rgb[:, :1], rgb[:, 1:].repeat_interleave(4, 1)], dim=1).clamp(0, 1)
