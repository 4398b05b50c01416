"""Small builders shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from skyreels_core.config import ModelConfig, get_preset
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


WAN_TINY = ModelConfig(
    name="wan-tiny", dim=64, num_heads=2, ffn_dim=96, num_dual_blocks=2, num_single_blocks=0,
    text_dim=32, video_latent_channels=4, channel_concat_inpainting=False, joint_text=False,
    audio_latent_channels=None,
)  # fmt: skip


def write_wan_checkpoint(
    path: Path, prefix: str = "", qk_norm_std: float = 0.05
) -> dict[str, torch.Tensor]:
    """A randomly initialised Wan 2.1 state dict in Wan's own layout, saved under ``prefix``
    (ComfyUI's is ``model.diffusion_model.``); returns it without the prefix.

    ``qk_norm_std`` is the spread of the q/k RMS-norm weights: at the default 0.05 the attention
    logits are nearly flat, so position (RoPE) barely moves the output; about 2 makes it visible."""
    torch.manual_seed(0)
    model = DualStreamMMDiT(WAN_TINY)
    for name, parameter in model.named_parameters():
        sharp = ".norm_q." in name or ".norm_k." in name
        torch.nn.init.normal_(parameter, std=qk_norm_std if sharp else 0.05)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    save_file({f"{prefix}{key}": value for key, value in state.items()}, str(path))
    return state


def diffusers_wan(state: dict[str, torch.Tensor]):
    """diffusers' WanTransformer3DModel of WAN_TINY's shape holding ``state``."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=4,
        out_channels=4, text_dim=32, freq_dim=256, ffn_dim=96, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
    )  # fmt: skip
    model.load_state_dict(convert_wan_transformer_to_diffusers(dict(state)), strict=True)
    return model


def wan_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents, flow times, text features) for WAN_TINY, batch of two."""
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 3, 8, 8, generator=generator)
    text = torch.randn(2, 7, 32, generator=generator)
    return latents, torch.tensor([0.25, 0.9]), text
