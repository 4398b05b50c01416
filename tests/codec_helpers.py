"""Codec test helpers: tiny Wan 2.1 VAE and MMAudio VAE + vocoder files, and a tiny exact codec behind the
VideoCodec protocol for tests that must not depend on a VAE.

Encoding averages each causal latent group (frame 0 alone, then 4 frames) over 8 x 8 pixels and
projects RGB to C channels; decoding inverts the projection and repeats. Known-mask and I/O logic
can then be checked exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

TINY = {  # a Wan 2.1 VAE's shape at its smallest: 16 channels, 8x and 4x strides
    "base_dim": 8,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
}
# Two levels and one resnet per level keep the decoder's receptive field at 12 latent pixels:
# conv_in 1 + mid-block 4 convs + 4 convs at latent size + 0.5 (upsampler) + 4 convs and conv_out
# at 2x (2.5). The encoder's is smaller (about 9.5).
SMALL_FIELD = {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 2], "num_res_blocks": 1,
               "temperal_downsample": [False]}  # fmt: skip
FIELD = 12


def local_wan_vae():
    """A random diffusers Wan VAE whose every output pixel depends on inputs at most FIELD latent
    pixels away (the tiling tests' subject): the mid-block attention, the one global layer, is
    switched off by zeroing its output."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(3)
    vae = AutoencoderKLWan(**SMALL_FIELD, latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    with torch.no_grad():
        for part in (vae.encoder, vae.decoder):
            for tensor in part.mid_block.attentions[0].proj.parameters():
                tensor.zero_()
    return vae


RESNET = {
    "norm1.gamma": "residual.0.gamma",
    "conv1": "residual.2",
    "norm2.gamma": "residual.3.gamma",
    "conv2": "residual.6",
    "conv_shortcut": "shortcut",
}


def to_original_layout(key: str) -> str:
    """diffusers -> Wan's own key names (the inverse of diffusers' converter, for making test files)."""
    fixed = {"encoder.conv_in": "encoder.conv1", "decoder.conv_in": "decoder.conv1", "post_quant_conv": "conv2",
             "quant_conv": "conv1", "encoder.norm_out": "encoder.head.0", "encoder.conv_out": "encoder.head.2",
             "decoder.norm_out": "decoder.head.0", "decoder.conv_out": "decoder.head.2"}  # fmt: skip
    for new, old in fixed.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    if match := re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d)\.(.+)", key):
        part, kind, index, rest = match.groups()
        slot = {"resnets": {"0": 0, "1": 2}, "attentions": {"0": 1}}[kind][index]
        for new, old in RESNET.items():
            rest = rest.replace(new, old) if kind == "resnets" and rest.startswith(new) else rest
        return f"{part}.middle.{slot}.{rest}"
    if match := re.match(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
        index, rest = match.groups()
        for new, old in RESNET.items():
            if rest.startswith(new):
                rest = old + rest[len(new) :]
        return f"encoder.downsamples.{index}.{rest}"
    if match := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        block, resnet, rest = match.groups()
        if rest.startswith("conv_shortcut"):
            return f"decoder.upsamples.{4 * int(block)}.shortcut" + rest[len("conv_shortcut") :]
        for new, old in RESNET.items():
            if rest.startswith(new):
                rest = old + rest[len(new) :]
        return f"decoder.upsamples.{4 * int(block) + int(resnet)}.{rest}"
    if match := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.upsamples.{4 * int(match[1]) + 3}.{match[2]}"
    return key


TINY_AUDIO = {"mel_bins": 16, "hidden_channels": 8, "channel_multipliers": [1, 2], "n_fft": 256,
              "hop_length": 64}  # fmt: skip
TINY_VOCODER = {"num_mels": 16, "upsample_initial_channel": 16, "upsample_rates": [8, 8],
                "upsample_kernel_sizes": [16, 16], "resblock_kernel_sizes": [3],
                "resblock_dilation_sizes": [[1, 3]]}  # fmt: skip


def write_tiny_wan_vae(path: Path):
    """A random tiny diffusers Wan VAE (``TINY``), saved in the original Wan 2.1 layout."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY).eval()
    save_file({to_original_layout(k): v.clone() for k, v in vae.state_dict().items()}, str(path))
    return vae


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
