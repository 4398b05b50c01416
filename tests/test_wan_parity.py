"""A Wan-compatible config loads an original-layout Wan 2.1 checkpoint 1:1 and matches diffusers."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from skyreels_core.config import ModelConfig, get_preset
from skyreels_core.loading import initialise_video_stream_from_wan, load_model
from skyreels_core.mmdit import DualStreamMMDiT
from skyreels_core.types import TextEncoding

WAN_TINY = ModelConfig(
    name="wan-tiny", dim=64, num_heads=2, ffn_dim=96, num_dual_blocks=2, num_single_blocks=0,
    text_dim=32, video_latent_channels=4, channel_concat_inpainting=False, joint_text=False,
    audio_latent_channels=None,
)  # fmt: skip


@pytest.fixture
def wan_checkpoint(tmp_path):
    """A randomly initialised Wan 2.1 state dict in Wan's own layout (with the ComfyUI prefix)."""
    torch.manual_seed(0)
    model = DualStreamMMDiT(WAN_TINY)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    path = tmp_path / "wan2.1_t2v_tiny.safetensors"
    save_file({f"model.diffusion_model.{key}": value for key, value in state.items()}, str(path))
    return path, state


def test_matches_diffusers_wan_transformer(wan_checkpoint):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    path, state = wan_checkpoint
    ours = load_model(path, WAN_TINY)
    theirs = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=4,
        out_channels=4, text_dim=32, freq_dim=256, ffn_dim=96, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
    )  # fmt: skip
    converted = convert_wan_transformer_to_diffusers({k: v.clone() for k, v in state.items()})
    theirs.load_state_dict(converted, strict=True)
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 3, 8, 8, generator=generator)
    text = torch.randn(2, 7, 32, generator=generator)
    t = torch.tensor([0.25, 0.9])
    with torch.no_grad():
        a = ours(latents, t, TextEncoding(text, torch.ones(2, 7, dtype=torch.bool))).video
        b = theirs(latents, t * 1000, text).sample
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= 1e-4


def test_wan_shapes_are_detected_without_a_config(tmp_path):
    from dataclasses import replace

    # Wan 2.1 uses 128-dim heads at every size; the head count is read from the width.
    config = replace(WAN_TINY, dim=256, num_heads=2, num_dual_blocks=1)
    path = tmp_path / "wan.safetensors"
    save_file(
        {f"model.diffusion_model.{k}": v for k, v in DualStreamMMDiT(config).state_dict().items()},
        str(path),
    )
    detected = load_model(path).config
    assert (detected.dim, detected.num_heads, detected.ffn_dim, detected.num_dual_blocks) == (
        256,
        2,
        96,
        1,
    )
    assert (detected.text_dim, detected.video_latent_channels) == (32, 4)
    assert (
        not detected.joint_text
        and not detected.has_audio
        and not detected.channel_concat_inpainting
    )


def test_full_model_takes_wan_weights_on_its_video_stream(wan_checkpoint):
    from dataclasses import replace

    path, state = wan_checkpoint
    full = DualStreamMMDiT(
        replace(get_preset("tiny"), dim=64, num_heads=2, ffn_dim=96, text_dim=32, num_dual_blocks=2)
    )
    report = initialise_video_stream_from_wan(full, path)
    own = full.state_dict()
    assert "blocks.1.self_attn.q.weight" in report.mapped and "head.head.weight" in report.mapped
    assert torch.equal(own["blocks.1.cross_attn.k.weight"], state["blocks.1.cross_attn.k.weight"])
    assert report.partially_mapped == ["patch_embedding.weight"]
    weight = own["patch_embedding.weight"]
    assert torch.equal(weight[:, :4], state["patch_embedding.weight"]) and not weight[:, 4:].any()
    assert any(k.startswith("audio_blocks.") for k in report.fresh)
    assert any(".text_attn." in k for k in report.fresh) and not report.unused
    assert set(report.mapped) | set(report.partially_mapped) | set(report.fresh) == set(own)
