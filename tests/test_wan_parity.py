"""A Wan-compatible config loads an original-layout Wan 2.1 checkpoint 1:1 and matches diffusers."""

from __future__ import annotations

import pytest
import torch
from model_helpers import WAN_TINY, diffusers_wan, wan_inputs, write_wan_checkpoint
from safetensors.torch import save_file

from skyreels_core.config import get_preset
from skyreels_core.loading import initialise_video_stream_from_wan, load_model
from skyreels_core.mmdit import DualStreamMMDiT
from skyreels_core.types import TextEncoding


@pytest.fixture
def wan_checkpoint(tmp_path):
    path = tmp_path / "wan2.1_t2v_tiny.safetensors"
    return path, write_wan_checkpoint(path, prefix="model.diffusion_model.")


def test_matches_diffusers_wan_transformer(wan_checkpoint):
    path, state = wan_checkpoint
    ours = load_model(path, WAN_TINY)
    theirs = diffusers_wan(state)
    latents, t, text = wan_inputs()
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


def test_a_diffusers_release_of_wan_loads_as_the_original(wan_checkpoint, tmp_path):
    """diffusers' own layout (Wan-AI's *-Diffusers repos, sharded transformer files) maps back to
    Wan's names: the same weights, and the same output as diffusers' model."""
    _, state = wan_checkpoint
    theirs = diffusers_wan(state)
    keys = sorted(theirs.state_dict())
    halves = (keys[: len(keys) // 2], keys[len(keys) // 2 :])
    for index, half in enumerate(halves, start=1):
        shard = tmp_path / f"diffusion_pytorch_model-0000{index}-of-00002.safetensors"
        save_file({key: theirs.state_dict()[key].contiguous() for key in half}, str(shard))
    ours = load_model(tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors", WAN_TINY)
    loaded = ours.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)
    latents, t, text = wan_inputs()
    with torch.no_grad():
        a = ours(latents, t, TextEncoding(text, torch.ones(2, 7, dtype=torch.bool))).video
        b = theirs(latents, t * 1000, text).sample
    assert (a - b).abs().max().item() <= 1e-4


def test_an_image_to_video_wan_checkpoint_is_named(wan_checkpoint, tmp_path):
    """Wan's I2V release adds a CLIP image projection and image cross-attention: named as such,
    with where the image goes instead, not a list of unexpected keys."""
    from skyreels_core.errors import CheckpointError

    _, state = wan_checkpoint
    i2v = {**state, "img_emb.proj.1.weight": torch.zeros(64, 32),
           "blocks.0.cross_attn.k_img.weight": torch.zeros(64, 64)}  # fmt: skip
    path = tmp_path / "wan2.1_i2v_480p_tiny.safetensors"
    save_file({f"model.diffusion_model.{k}": v for k, v in i2v.items()}, str(path))
    with pytest.raises(CheckpointError, match="^model_name: the file is an image-to-video Wan"):
        load_model(path, input_name="model_name")


def test_a_diffusers_image_to_video_wan_is_named(tmp_path):
    from diffusers import WanTransformer3DModel

    from skyreels_core.errors import CheckpointError

    i2v = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=36,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=96, num_layers=1,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", image_dim=48,
        added_kv_proj_dim=128,
    )  # fmt: skip
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in i2v.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="^model_name: the file is an image-to-video Wan"):
        load_model(path, input_name="model_name")


def test_a_wan_shaped_file_of_no_wan_width_is_named(wan_checkpoint):
    """WAN_TINY is 64 wide: read without a config it cannot be a Wan release (128-wide heads)."""
    from skyreels_core.errors import CheckpointError

    path, _ = wan_checkpoint
    with pytest.raises(CheckpointError, match="^model_name: the file is Wan-shaped but 64 wide"):
        load_model(path, input_name="model_name")


def test_the_flex_backend_runs_a_text_free_generator_densely(wan_checkpoint):
    """flex is block-sparse only where a refiner asks for it; the generator passed its grid
    where a BlockSparsity belongs and failed on a Wan-layout model."""
    path, _ = wan_checkpoint
    model = load_model(path, WAN_TINY)
    latents, t, text = wan_inputs()
    encoding = TextEncoding(text, torch.ones(2, 7, dtype=torch.bool))
    with torch.no_grad():
        dense = model(latents, t, encoding).video
        model.attention_backend = "flex"
        assert torch.equal(model(latents, t, encoding).video, dense)


@pytest.mark.parametrize(("head_dim", "grid"), [(32, (3, 4, 4)), (128, (5, 3, 7))])
def test_rotary_tables_equal_diffusers_wan_rotary_pos_embed(head_dim, grid):
    """Wan weights were trained with Wan's rotary frequencies and its 44/42/42 split of the head
    (at 128): any drift in the table turns every position a pretrained Wan model reads into a
    slightly wrong one, which the end-to-end parity test (near-flat attention) cannot see. The
    model's own cached table must be bit-identical to diffusers' WanRotaryPosEmbed."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    from skyreels_core.mmdit import _video_table
    from skyreels_core.rope import rotary, video_angles, video_positions

    cos, sin = WanRotaryPosEmbed(head_dim, (1, 2, 2), 1024)(
        torch.zeros(1, 4, grid[0], 2 * grid[1], 2 * grid[2])
    )
    cos, sin = cos[0, :, 0], sin[0, :, 0]  # [L, head_dim], each pair's value repeated
    assert torch.equal(cos[:, 0::2], cos[:, 1::2]) and torch.equal(sin[:, 0::2], sin[:, 1::2])
    ours = rotary(_video_table(grid, 0, (), (0, 0), head_dim, 1e4, False))
    assert ours.shape == (grid[0] * grid[1] * grid[2], head_dim // 2, 2)
    assert torch.equal(ours[..., 0], cos[:, 0::2])
    assert torch.equal(ours[..., 1], sin[:, 0::2])
    public = rotary(video_angles(video_positions(*grid), head_dim, 1e4))
    assert torch.equal(public, ours)


def test_matches_diffusers_wan_with_position_sensitive_attention(tmp_path, monkeypatch):
    """The default test checkpoint's q/k are so small that attention ignores position: dropping
    the rotation moved its output by 3e-5, under the 1e-4 tolerance. Here the q/k norm weights
    are large, so a rotary that differs from Wan's (frequencies, axis split, which keys rotate)
    fails the comparison; the second half proves the test can see position at all."""
    from skyreels_core import blocks

    path = tmp_path / "wan_sharp.safetensors"
    state = write_wan_checkpoint(path, qk_norm_std=2.0)
    ours = load_model(path, WAN_TINY)
    theirs = diffusers_wan(state)
    latents, t, text = wan_inputs()
    encoding = TextEncoding(text, torch.ones(2, 7, dtype=torch.bool))
    with torch.no_grad():
        a = ours(latents, t, encoding).video
        b = theirs(latents, t * 1000, text).sample
        assert (a - b).abs().max().item() <= 1e-5
        monkeypatch.setattr(blocks, "apply_rotary", lambda x, table: x)
        unrotated = ours(latents, t, encoding).video
    assert (unrotated - a).abs().max().item() > 1e-2
