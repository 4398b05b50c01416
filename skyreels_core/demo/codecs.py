"""Tiny learned codecs of the demo world, behind the codec protocol.

Video: each causal latent group (frame 0 alone, then 4 frames) is stacked on channels and
compressed 8x spatially by a small conv net, so latents follow the Wan VAE's 1 + 4k / 8x layout.
Audio: a strided 1-D conv net, 256 samples per token at 16 kHz (62.5 tokens/s). Latents are
normalised per channel with statistics measured after training, like the Wan VAE's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..errors import CheckpointError
from ..loading import write_safetensors
from ..shapes import latent_frame_count

GROUP = 4


class DemoVideoCodec(nn.Module):
    temporal_stride = 4
    spatial_stride = 8
    cheap_decode = True  # live previews decode the x0 estimate's middle frame outright

    def __init__(self, latent_channels: int = 8, width: int = 48) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.width = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3 * GROUP, width, 4, 2, 1), nn.GELU(),
            nn.Conv2d(width, width, 4, 2, 1), nn.GELU(),
            nn.Conv2d(width, width, 4, 2, 1), nn.GELU(),
            nn.Conv2d(width, latent_channels, 1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, width, 1), nn.GELU(),
            nn.ConvTranspose2d(width, width, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose2d(width, width, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose2d(width, 3 * GROUP, 4, 2, 1),
        )  # fmt: skip
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    @staticmethod
    def _groups(frames: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] -> [B * T_lat, 12, H, W]; frame 0 is repeated to fill its group."""
        first = frames[:, :1].expand(-1, GROUP, -1, -1, -1)
        groups = torch.cat([first, frames[:, 1:]], dim=1).unflatten(1, (-1, GROUP))
        return groups.permute(0, 1, 2, 5, 3, 4).flatten(2, 3).flatten(0, 1)

    def encode_ram_bytes(self, frames: int, height: int, width: int) -> int:
        """At least the RAM an encode of [1, frames, height, width, 3] adds on the CPU (see
        :func:`skyreels_core.memory.check_codec_ram`): each latent group's frames stacked on
        channels (its input in -1..1), all groups encoded at once, and while the first conv's
        output goes through the GELU, that output, the GELU's and the stacked input are all
        alive (bench/encode_ram.py measures 0.6 to 0.9 of the real peak RSS)."""
        conv = self.encoder[0]
        groups = latent_frame_count(frames, self.temporal_stride)
        stacked = groups * conv.in_channels * height * width
        first = groups * conv.out_channels * (height // conv.stride[0]) * (width // conv.stride[1])
        return (stacked + 2 * first) * conv.weight.dtype.itemsize

    def decode_ram_bytes(self, frames: int, height: int, width: int) -> int:
        """At least the RAM a decode of a clip of ``frames`` at height x width px takes on the
        CPU: every latent group decoded at once, so the last transposed conv's input (half the
        size, ``width`` channels) and its output (the group's frames stacked on channels, full
        size) are alive together (0.78 of the tracked tensor peak at 17 frames, 64 px)."""
        conv = self.decoder[-1]
        groups = latent_frame_count(frames, self.temporal_stride)
        half = (height // conv.stride[0]) * (width // conv.stride[1])
        return (
            groups
            * (conv.in_channels * half + conv.out_channels * height * width)
            * (conv.weight.dtype.itemsize)
        )

    def raw_encode(self, frames: torch.Tensor) -> torch.Tensor:
        batch = frames.shape[0]
        dtype = self.encoder[0].weight.dtype
        z = self.encoder(self._groups(frames.to(dtype)) * 2 - 1)
        return z.unflatten(0, (batch, -1)).transpose(1, 2)  # [B, C, T_lat, h, w]

    def raw_decode(self, z: torch.Tensor) -> torch.Tensor:
        batch, _, latent_frames = z.shape[:3]
        x = self.decoder(z.transpose(1, 2).flatten(0, 1).to(self.decoder[0].weight.dtype))
        x = x.unflatten(1, (GROUP, 3)).permute(0, 1, 3, 4, 2).unflatten(0, (batch, latent_frames))
        # Frame 0 was repeated over its group when encoding; its group's last slot is its decode.
        x = torch.cat([x[:, 0, -1:], x[:, 1:].flatten(1, 2)], dim=1)
        return (x + 1) / 2

    def _norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean.view(1, -1, 1, 1, 1), self.latent_std.view(1, -1, 1, 1, 1)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        mean, std = self._norm()
        return (self.raw_encode(frames) - mean) / std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._norm()
        return self.raw_decode(latents * std + mean).clamp(0, 1)

    def save(self, path: Path) -> Path:
        return _save(
            self,
            path,
            {"kind": "demo-video", "latent_channels": self.latent_channels, "width": self.width},
        )

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> DemoVideoCodec:
        return _load(cls, path, "demo-video", device)


class DemoAudioCodec(nn.Module):
    sample_rate = 16000
    samples_per_token = 256
    channels = 1

    def __init__(self, latent_channels: int = 8, width: int = 96) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.width = width
        hop = self.samples_per_token
        self.encoder = nn.Sequential(
            nn.Conv1d(1, width, 2 * hop, hop, hop // 2), nn.GELU(),
            nn.Conv1d(width, width, 3, 1, 1), nn.GELU(),
            nn.Conv1d(width, latent_channels, 1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv1d(latent_channels, width, 3, 1, 1), nn.GELU(),
            nn.Conv1d(width, width, 3, 1, 1), nn.GELU(),
            nn.ConvTranspose1d(width, 1, 2 * hop, hop, hop // 2),
        )  # fmt: skip
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    def raw_encode(self, waveform: torch.Tensor) -> torch.Tensor:
        mono = waveform.mean(dim=1, keepdim=True).to(self.encoder[0].weight.dtype)
        padded = F.pad(mono, (0, -mono.shape[-1] % self.samples_per_token))
        return self.encoder(padded)

    def raw_decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.to(self.decoder[0].weight.dtype))

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        return (self.raw_encode(waveform) - self.latent_mean[:, None]) / self.latent_std[:, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.raw_decode(
            latents * self.latent_std[:, None] + self.latent_mean[:, None]
        ).clamp(-1, 1)

    def save(self, path: Path) -> Path:
        return _save(
            self,
            path,
            {"kind": "demo-audio", "latent_channels": self.latent_channels, "width": self.width},
        )

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> DemoAudioCodec:
        return _load(cls, path, "demo-audio", device)


def _save(module: nn.Module, path: Path, config: dict) -> Path:
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    return write_safetensors(state, Path(path), {"codec": json.dumps(config)})


def _load(cls, path: Path, kind: str, device):
    from ..loading import read_header

    _, metadata = read_header(Path(path), f"{kind} codec")
    config = json.loads(metadata.get("codec", "{}"))
    if config.get("kind") != kind:
        raise CheckpointError(
            f"{kind} codec",
            f"{Path(path).name} is not a {kind} codec",
            "pick the matching codec file",
        )
    codec = cls(config["latent_channels"], config["width"])
    codec.load_state_dict(load_file(str(path)))
    return codec.to(device).eval().requires_grad_(False)
