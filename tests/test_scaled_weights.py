"""ComfyUI's ``*_fp8_scaled`` releases load: weights taken back to stored x scale, or kept in fp8."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import WAN_TINY, wan_inputs, write_wan_checkpoint
from safetensors.torch import save_file

from skyreels_core.errors import CheckpointError
from skyreels_core.loading import holds_fp8_weights, load_model, save_model
from skyreels_core.offload import Float8Linear, store_linears_in_fp8
from skyreels_core.types import TextEncoding

PREFIX = "model.diffusion_model."


def _scaled(state: dict[str, torch.Tensor], layout: str, fmt: str = "float8_e4m3fn") -> dict:
    """``state`` as a ComfyUI fp8_scaled file holds it: every matrix as float8 and its scale
    (max|w| / 448, written out here rather than through the pack's own quantiser)."""
    file = {}
    for key, value in state.items():
        layer = key.removesuffix(".weight")
        if value.ndim != 2 or not key.endswith(".weight"):
            file[PREFIX + key] = value.to(torch.bfloat16)
            continue
        scale = value.abs().amax().float() / 448.0
        file[PREFIX + key] = (value / scale).to(torch.float8_e4m3fn)
        if layout == "legacy":
            file[f"{PREFIX}{layer}.scale_weight"] = scale
            file[f"{PREFIX}{layer}.scale_input"] = torch.ones(())
        else:
            file[f"{PREFIX}{layer}.weight_scale"] = scale
            file[f"{PREFIX}{layer}.input_scale"] = torch.ones(())
            blob = json.dumps({"format": fmt}).encode()
            file[f"{PREFIX}{layer}.comfy_quant"] = torch.tensor(list(blob), dtype=torch.uint8)
    if layout == "legacy":
        file[PREFIX + "scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return file


@pytest.fixture
def wan_state(tmp_path):
    return write_wan_checkpoint(tmp_path / "wan.safetensors")


def _true_weights(file: dict, keys) -> dict[str, torch.Tensor]:
    """What the file's tensors are (stored x scale for a scaled one), by model key."""
    true = {}
    for name in keys:
        layer = name.removesuffix(".weight")
        scale = file.get(f"{PREFIX}{layer}.scale_weight", file.get(f"{PREFIX}{layer}.weight_scale"))
        true[name] = file[PREFIX + name].float() * (1 if scale is None else scale)
    return true


@pytest.mark.parametrize("layout", ["legacy", "comfy_quant"])
def test_fp8_scaled_files_load_as_their_true_weights(wan_state, tmp_path, layout):
    file = _scaled(wan_state, layout)
    path = tmp_path / f"wan2.1_t2v_tiny_fp8_scaled_{layout}.safetensors"
    save_file(file, str(path))
    assert holds_fp8_weights(path)
    model = load_model(path, WAN_TINY, input_name="model_name")
    own = model.state_dict()
    true = _true_weights(file, wan_state)
    assert set(own) == set(wan_state)
    for key, value in own.items():
        assert torch.equal(value, true[key]), key
    scaled_key = "blocks.1.ffn.0.weight"  # e4m3 keeps 3 mantissa bits: within 1/16 of each value
    error = (own[scaled_key] - wan_state[scaled_key]).abs()
    assert 0 < error.max() <= wan_state[scaled_key].abs().max() / 16
    latents, t, text = wan_inputs()
    mask = torch.ones(2, 7, dtype=torch.bool)
    reference = load_model(tmp_path / "wan.safetensors", WAN_TINY)
    with torch.no_grad():
        ours = model(latents, t, TextEncoding(text, mask)).video
        exact = reference(latents, t, TextEncoding(text, mask)).video
    assert 0 < (ours - exact).norm() / exact.norm() < 0.05


def test_fp8_storage_keeps_a_files_float8_weights_as_they_are(wan_state, tmp_path):
    file = _scaled(wan_state, "comfy_quant")
    path = tmp_path / "wan_fp8_scaled.safetensors"
    save_file(file, str(path))
    model = load_model(path, WAN_TINY, dtype=torch.bfloat16, fp8=True)
    linear = model.blocks[1].self_attn.q
    assert isinstance(linear, Float8Linear)
    stored = file[PREFIX + "blocks.1.self_attn.q.weight"]
    assert torch.equal(linear.weight.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(linear.weight_scale, file[PREFIX + "blocks.1.self_attn.q.weight_scale"])
    head = model.state_dict()["head.head.weight"]  # outside the blocks: dequantised
    assert head.dtype == torch.bfloat16


def test_an_e5m2_scaled_file_loads_as_its_true_weights_and_fp8_storage_keeps_its_bytes(
    wan_state, tmp_path
):
    """float8_e5m2 (5 exponent bits, scale max|w| / 57344) is read as stored x scale; fp8
    storage keeps the e5m2 bytes and their scale (the matmul takes the weight dequantised, so
    e5m2 serves as e4m3 does) rather than rounding the true weights again into e4m3."""
    file = _scaled(wan_state, "comfy_quant", "float8_e5m2")
    for key in [key for key in file if key.endswith(".weight_scale")]:
        weight = key.removesuffix("_scale")
        true = file[weight].float() * file[key]
        file[key] = true.abs().amax() / 57344.0
        file[weight] = (true / file[key]).to(torch.float8_e5m2)
    path = tmp_path / "wan_fp8_e5m2_scaled.safetensors"
    save_file(file, str(path))
    own = load_model(path, WAN_TINY).state_dict()
    for key, value in _true_weights(file, wan_state).items():
        assert torch.equal(own[key], value), key
    linear = load_model(path, WAN_TINY, dtype=torch.bfloat16, fp8=True).blocks[1].self_attn.q
    stored = file[PREFIX + "blocks.1.self_attn.q.weight"]
    assert linear.weight.dtype == torch.float8_e5m2
    assert torch.equal(linear.weight.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(linear.weight_scale, file[PREFIX + "blocks.1.self_attn.q.weight_scale"])
    assert "storage=float8_e5m2" in repr(linear)


def test_a_per_tensor_scale_saved_as_one_element_is_a_scalar(wan_state, tmp_path):
    """A release that saves each scale as [1] rather than []: the same weights, and fp8
    storage keeps one scalar scale per layer, as for the 0-dim ones."""
    file = _scaled(wan_state, "comfy_quant")
    flat = {
        key: value.reshape(1) if key.endswith("_scale") else value for key, value in file.items()
    }
    path = tmp_path / "wan_fp8_scaled_flat.safetensors"
    save_file(flat, str(path))
    linear = load_model(path, WAN_TINY, dtype=torch.bfloat16, fp8=True).blocks[1].self_attn.q
    assert linear.weight_scale.shape == ()
    assert torch.equal(linear.weight_scale, file[PREFIX + "blocks.1.self_attn.q.weight_scale"])


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_a_plain_fp8_file_stays_as_stored(wan_state, tmp_path, fp8):
    """``*_fp8_e4m3fn`` and ``*_fp8_e5m2`` releases store the matrices as float8 with no scale:
    fp8 storage keeps those bytes at scale 1 (they were quantised again, 71 % of the e4m3 values
    moved, up to 5 %), dtype auto sees the file as 8-bit (an e5m2 one loaded at 2-4x its size,
    past a 24 GB card for a 14B model), and wider dtypes read the values exactly."""
    file = {key: value.to(fp8) if value.ndim == 2 else value for key, value in wan_state.items()}
    path = tmp_path / "wan_fp8.safetensors"
    save_file(file, str(path))
    assert holds_fp8_weights(path)
    model = load_model(path, WAN_TINY, dtype=torch.bfloat16, fp8=True)
    linear = model.blocks[1].ffn[0]
    assert isinstance(linear, Float8Linear)
    stored = file["blocks.1.ffn.0.weight"]
    assert linear.weight.dtype == fp8
    assert torch.equal(linear.weight.view(torch.uint8), stored.view(torch.uint8))
    assert float(linear.weight_scale) == 1.0
    assert torch.equal(linear.dequantised_weight(), stored.to(torch.bfloat16))
    wide = load_model(path, WAN_TINY).state_dict()["blocks.1.ffn.0.weight"]
    assert wide.dtype == torch.float32 and torch.equal(wide, stored.float())


def test_the_packs_own_fp8_storage_saves_and_loads_back(wan_state, tmp_path):
    model = load_model(tmp_path / "wan.safetensors", WAN_TINY)
    store_linears_in_fp8(model, torch.float32)
    quantised = {key: value.clone() for key, value in model.state_dict().items()}
    save_model(model, tmp_path / "fp8.safetensors")
    assert holds_fp8_weights(tmp_path / "fp8.safetensors")
    again = load_model(tmp_path / "fp8.safetensors", WAN_TINY)
    weight = quantised["blocks.0.ffn.2.weight"].float() * quantised["blocks.0.ffn.2.weight_scale"]
    assert torch.equal(again.state_dict()["blocks.0.ffn.2.weight"], weight)
    assert not holds_fp8_weights(tmp_path / "wan.safetensors")


def test_layers_in_formats_that_cannot_be_read_are_named(wan_state, tmp_path):
    path = tmp_path / "wan_nvfp4.safetensors"
    save_file(_scaled(wan_state, "comfy_quant", fmt="nvfp4"), str(path))
    with pytest.raises(CheckpointError) as error:
        load_model(path, WAN_TINY, input_name="model_name")
    message = str(error.value)
    assert "model_name" in message and "nvfp4" in message and "blocks.0." in message
    assert "fp8_scaled release" in message


def test_layers_declared_unreadable_only_in_the_header_metadata_are_named(wan_state, tmp_path):
    """Mixed-precision files may list their per-layer formats only in the header's
    ``_quantization_metadata`` (no ``.comfy_quant`` tensors): those nvfp4 / int8 layers must be
    refused by name too, not loaded as if they were float8 (noise)."""
    layers = {
        "blocks.0.ffn.0": {"format": "nvfp4"},
        "blocks.1.self_attn.q": {"format": "int8_blockwise"},
        "blocks.0.self_attn.k": {"format": "float8_e4m3fn"},
    }
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    path = tmp_path / "wan_mixed.safetensors"
    save_file(_scaled(wan_state, "legacy"), str(path), metadata)
    with pytest.raises(CheckpointError) as error:
        load_model(path, WAN_TINY, input_name="model_name")
    message = str(error.value)
    assert message.startswith("model_name: 2 layers are quantised in a format this pack cannot")
    assert "blocks.0.ffn.0 (nvfp4), blocks.1.self_attn.q (int8_blockwise)" in message
    readable = tmp_path / "wan_fp8_listed.safetensors"
    listed = {"layers": {"blocks.0.self_attn.k": {"format": "float8_e4m3fn"}}}
    save_file(_scaled(wan_state, "legacy"), str(readable), {"_quantization_metadata": json.dumps(listed)})  # fmt: skip
    assert load_model(readable, WAN_TINY).config.dim == 64


@pytest.mark.parametrize("rows", ["flat", "column"])
def test_per_row_scales_scale_rows_whether_saved_flat_or_as_a_column(wan_state, tmp_path, rows):
    file, true = {}, {}
    for key, value in wan_state.items():
        if value.ndim != 2 or not key.endswith(".weight"):
            file[PREFIX + key], true[key] = value, value
            continue
        scale = value.abs().amax(dim=1).clamp(min=1e-12) / 448.0  # one per output row
        stored = (value / scale[:, None]).to(torch.float8_e4m3fn)
        file[PREFIX + key], true[key] = stored, stored.float() * scale[:, None]
        file[f"{PREFIX}{key.removesuffix('weight')}scale_weight"] = (
            scale if rows == "flat" else scale[:, None]
        )
    path = tmp_path / "wan_fp8_rows.safetensors"
    save_file(file, str(path))
    own = load_model(path, WAN_TINY).state_dict()
    square = [k for k, v in wan_state.items() if v.ndim == 2 and v.shape[0] == v.shape[1]]
    assert square and any(v.ndim == 2 and v.shape[0] != v.shape[1] for v in wan_state.values())
    for key, value in own.items():
        assert torch.equal(value, true[key]), key
    # fp8 storage (dtype auto on such a file) keeps the stored bytes and their row scales: they
    # were taken back and quantised again per tensor, up to twice the file's own error.
    model = load_model(path, WAN_TINY, dtype=torch.bfloat16, fp8=True)
    kept = model.blocks[0].self_attn.q
    stored = file[PREFIX + "blocks.0.self_attn.q.weight"]
    assert torch.equal(kept.weight.view(torch.uint8), stored.view(torch.uint8))
    assert kept.weight_scale.shape == (stored.shape[0], 1)
    assert torch.equal(kept.dequantised_weight(), true["blocks.0.self_attn.q.weight"].bfloat16())
    save_model(model, tmp_path / "kept.safetensors")  # and they save and load back as they are
    again = load_model(tmp_path / "kept.safetensors", WAN_TINY, dtype=torch.bfloat16, fp8=True)
    assert torch.equal(again.blocks[0].self_attn.q.weight_scale, kept.weight_scale)
    latents, t, text = wan_inputs()
    encoding = TextEncoding(text, torch.ones(2, 7, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(model(latents, t, encoding).video, again(latents, t, encoding).video)


def test_a_scale_that_fits_no_row_nor_tensor_is_named(wan_state, tmp_path):
    file = _scaled(wan_state, "legacy")
    key = f"{PREFIX}blocks.0.ffn.0.scale_weight"
    file[key] = torch.ones(3)
    save_file(file, str(tmp_path / "wan_bad_scale.safetensors"))
    with pytest.raises(CheckpointError, match="^model_name: blocks.0.ffn.0.weight has a scale"):
        load_model(tmp_path / "wan_bad_scale.safetensors", WAN_TINY, input_name="model_name")
