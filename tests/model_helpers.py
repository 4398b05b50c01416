"""Small builders shared by the model tests."""

from __future__ import annotations

import torch

from skyreels_core.config import get_preset
from skyreels_core.mmdit import DualStreamMMDiT
from skyreels_core.types import TextEncoding


def tiny_model(seed: int = 0, **overrides) -> DualStreamMMDiT:
    from dataclasses import replace

    torch.manual_seed(seed)
    return DualStreamMMDiT(replace(get_preset("tiny"), **overrides)).eval()


def inputs(
    model: DualStreamMMDiT,
    batch=2,
    frames=3,
    height=4,
    width=6,
    audio_tokens=11,
    text_tokens=5,
    seed=1,
):
    generator = torch.Generator().manual_seed(seed)
    c = model.config
    video = torch.randn(batch, c.video_in_channels, frames, height, width, generator=generator)
    mask = torch.ones(batch, text_tokens, dtype=torch.bool)
    mask[0, -2:] = False
    text = TextEncoding(torch.randn(batch, text_tokens, c.text_dim, generator=generator), mask)
    audio = (
        torch.randn(batch, c.audio_latent_channels, audio_tokens, generator=generator)
        if c.has_audio
        else None
    )
    return video, torch.tensor([0.3, 0.8])[:batch], text, audio


def zero_av_exchange(model: DualStreamMMDiT) -> None:
    for module in model.modules():
        if module.__class__.__name__ == "AVCrossAttention":
            torch.nn.init.zeros_(module.attn.o.weight)
            torch.nn.init.zeros_(module.attn.o.bias)


def randomise_av_exchange(model: DualStreamMMDiT, seed: int = 3) -> None:
    torch.manual_seed(seed)
    for module in model.modules():
        if module.__class__.__name__ == "AVCrossAttention":
            torch.nn.init.normal_(module.attn.o.weight, std=0.2)
