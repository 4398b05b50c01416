"""A loaded model together with where its weights live between uses.

ComfyUI keeps node outputs alive across queue items, so a loaded model must not pin GPU memory
while other nodes (the text encoder, the VAEs) run: weights wait on the offload device and move to
the compute device only inside :meth:`LoadedModel.on`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AudioRate:
    """The audio codec rate a model was trained with (sets the audio token count of a clip)."""

    sample_rate: int
    samples_per_token: int


MMAUDIO_44K = AudioRate(sample_rate=44100, samples_per_token=1024)


class LoadedModel:
    def __init__(
        self,
        module: nn.Module,
        name: str,
        audio_codec_rate: AudioRate | None = MMAUDIO_44K,
        offload_device: torch.device | str = "cpu",
    ) -> None:
        self.module = module.eval().requires_grad_(False)
        self.name = name
        self.audio_codec_rate = audio_codec_rate
        self.offload_device = torch.device(offload_device)

    @property
    def config(self):
        return self.module.config

    @property
    def has_audio(self) -> bool:
        return self.module.config.audio_latent_channels is not None

    @contextmanager
    def on(self, device: torch.device | str) -> Iterator[nn.Module]:
        """The module on ``device`` for the duration of the block, then back to the offload device."""
        device = torch.device(device)
        self.module.to(device)
        try:
            yield self.module
        finally:
            if device != self.offload_device:
                self.module.to(self.offload_device)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """``auto`` is bf16 where the device computes it fast (CUDA with bf16 support), else fp32."""
    if name != "auto":
        return DTYPES[name]
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
