"""LoRA files apply at render time, match diffusers + PEFT on Wan, and leave the model as loaded."""

from __future__ import annotations

import re

import pytest
import torch
from model_helpers import (
    WAN_TINY,
    diffusers_wan,
    inputs,
    tiny_model,
    wan_inputs,
    write_wan_checkpoint,
)
from safetensors.torch import save_file

from skyreels_core.errors import CheckpointError
from skyreels_core.loading import load_model
from skyreels_core.lora import read_lora
from skyreels_core.mmdit import DualStreamMMDiT
from skyreels_core.runtime import LoadedModel
from skyreels_core.types import TextEncoding

WAN_LAYERS = [
    f"blocks.{block}.{layer}"
    for block in range(2)
    for layer in (*(f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"), "ffn.0", "ffn.2")
]  # fmt: skip
RANK = 4


def random_lora(model: torch.nn.Module, layers, seed: int = 0, bias: bool = True) -> dict:
    """Wan-format (ComfyUI / diffusion-pipe) LoRA tensors: down, up, alpha and a bias diff."""
    generator = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    state = {}
    for layer in layers:
        linear = modules[layer]
        key = f"diffusion_model.{layer}"
        state[f"{key}.lora_down.weight"] = (
            torch.randn(RANK, linear.in_features, generator=generator) * 0.1
        )
        state[f"{key}.lora_up.weight"] = (
            torch.randn(linear.out_features, RANK, generator=generator) * 0.1
        )
        state[f"{key}.alpha"] = torch.tensor(2.0)
        if bias:
            state[f"{key}.diff_b"] = torch.randn(linear.out_features, generator=generator) * 0.05
    return state  # fmt: skip


def cloned(state: dict) -> dict:
    """diffusers' converter scales some tensors in place; it gets its own copies."""
    return {key: value.clone() for key, value in state.items()}


def kohya(state: dict) -> dict:
    def rename(key: str) -> str:
        layer, _, rest = key.removeprefix("diffusion_model.").partition(".lora_")
        if not rest:
            layer, _, field = layer.rpartition(".")
            return f"lora_unet_{layer.replace('.', '_')}.{field}"
        return f"lora_unet_{layer.replace('.', '_')}.lora_{rest}"

    return {rename(key): value for key, value in state.items()}


@pytest.fixture
def wan(tmp_path):
    path = tmp_path / "wan_tiny.safetensors"
    state = write_wan_checkpoint(path)
    return load_model(path, WAN_TINY), state


def run_ours(loaded: LoadedModel) -> torch.Tensor:
    latents, t, text = wan_inputs()
    with loaded.on("cpu") as module, torch.no_grad():
        return module(latents, t, TextEncoding(text, torch.ones(2, 7, dtype=torch.bool))).video


def save(tmp_path, name: str, state: dict):
    path = tmp_path / name
    save_file(state, str(path))
    return path


def test_matches_diffusers_and_peft_on_wan(wan, tmp_path):
    pytest.importorskip("peft")
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

    model, state = wan
    lora_state = random_lora(model, WAN_LAYERS)
    path = save(tmp_path, "style.safetensors", lora_state)
    ours = run_ours(LoadedModel(model, "wan").with_lora(read_lora(str(path), model), 0.7))

    theirs = diffusers_wan(state)
    converted = _convert_non_diffusers_wan_lora_to_diffusers(cloned(lora_state))
    theirs.load_lora_adapter(converted, adapter_name="style", prefix="transformer")
    theirs.set_adapters(["style"], weights=[0.7])
    latents, t, text = wan_inputs()
    with torch.no_grad():
        reference = theirs(latents, t * 1000, text).sample
    base = run_ours(LoadedModel(model, "wan"))
    assert (ours - base).abs().max() > 0.05  # the LoRA matters here
    assert (ours - reference).abs().max().item() <= 1e-4


def test_every_spelling_gives_the_same_render(wan, tmp_path):
    """Wan's names, kohya / musubi's underscores, diffusers' names (from diffusers' own
    converter) and the PEFT lora_A / lora_B spelling are one LoRA."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

    model, _ = wan
    wan_state = random_lora(model, WAN_LAYERS, bias=False)
    peft_spelling = {
        key.replace("lora_down", "lora_A").replace("lora_up", "lora_B"): value
        for key, value in wan_state.items()
    }
    spellings = {
        "wan": wan_state,
        "kohya": kohya(wan_state),
        "diffusers": _convert_non_diffusers_wan_lora_to_diffusers(cloned(wan_state)),
        "peft": peft_spelling,
    }
    renders = {
        name: run_ours(
            LoadedModel(model, "wan").with_lora(
                read_lora(save(tmp_path, f"{name}.safetensors", state), model), 1.0
            )
        )
        for name, state in spellings.items()
    }
    for name, render in renders.items():
        torch.testing.assert_close(render, renders["wan"], atol=1e-5, rtol=0, msg=name)


def unprefixed(state: dict) -> dict:
    return {key.removeprefix("diffusion_model."): value for key, value in state.items()}


@pytest.mark.parametrize("respelled", [kohya, unprefixed])
def test_a_layer_spelled_twice_applies_once_or_is_refused_when_the_two_differ(
    wan, tmp_path, respelled
):
    """Kohya's underscores beside Wan's names (two layer names for one layer), and a prefix
    dropped (one layer name from two keys): the same tensors twice apply once, as the file with
    one spelling does; different tensors cannot both apply, so the file is refused by name."""
    model, _ = wan
    state = random_lora(model, ["blocks.0.self_attn.q"])
    once = run_ours(LoadedModel(model, "wan").with_lora(
        read_lora(save(tmp_path, "once.safetensors", state), model), 1.0))  # fmt: skip
    twice = read_lora(save(tmp_path, "twice.safetensors", state | respelled(cloned(state))), model)
    assert list(twice.layers) == ["blocks.0.self_attn.q"]
    torch.testing.assert_close(
        run_ours(LoadedModel(model, "wan").with_lora(twice, 1.0)), once, atol=0, rtol=0
    )
    other = respelled(random_lora(model, ["blocks.0.self_attn.q"], seed=1))
    with pytest.raises(CheckpointError, match="twice with different weights") as error:
        read_lora(save(tmp_path, "merged.safetensors", state | other), model)
    assert error.value.input_name == "lora_name"


def test_the_loaded_model_is_unchanged_after_and_beside_a_lora_render(wan, tmp_path):
    model, _ = wan
    before = {key: value.clone() for key, value in model.state_dict().items()}
    plain = LoadedModel(model, "wan")
    state = random_lora(model, WAN_LAYERS)
    state["diffusion_model.blocks.0.norm3.diff"] = torch.full((64,), 0.5)  # a non-Linear diff
    styled = plain.with_lora(read_lora(save(tmp_path, "a.safetensors", state), model), 1.0)
    base = run_ours(plain)
    with_lora = run_ours(styled)
    assert plain.loras == () and len(styled.loras) == 1 and styled.module is plain.module
    on_device = [
        v for k, v in state.items() if k.endswith(("_down.weight", "_up.weight", "diff_b"))
    ]
    assert styled.lora_bytes() == 4 * sum(v.numel() for v in on_device)  # what make_room counts
    assert plain.lora_bytes() == 0
    # a LoRA at strength 0 is never put on the device
    assert plain.with_lora(styled.loras[0][0], 0.0).lora_bytes() == 0
    assert torch.equal(run_ours(plain), base)
    assert not torch.equal(with_lora, base)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(module._forward_hooks for module in model.modules())


def test_strength_scales_the_delta_and_loras_add(wan, tmp_path):
    """Each layer's output moves by strength x the LoRA's delta, and two LoRAs by the sum."""
    model, _ = wan
    plain = LoadedModel(model, "wan")
    first = read_lora(save(tmp_path, "a.safetensors", random_lora(model, WAN_LAYERS, 1)), model)
    second = read_lora(save(tmp_path, "b.safetensors", random_lora(model, WAN_LAYERS, 2)), model)
    assert torch.equal(run_ours(plain.with_lora(first, 0.0)), run_ours(plain))
    with plain.with_lora(first, 0.0).on("cpu"):  # nothing of it on the device, as lora_bytes says
        assert not any(module._forward_hooks for module in model.modules())

    x = torch.randn(3, 64)
    layer = dict(model.named_modules())["blocks.1.ffn.0"]
    expected = layer(x)
    for lora, strength in ((first, 0.5), (second, -1.5)):
        delta = lora.layers["blocks.1.ffn.0"]
        expected = expected + strength * (delta.scale * x @ delta.down.T @ delta.up.T + delta.bias)
    both = plain.with_lora(first, 0.5).with_lora(second, -1.5)
    with both.on("cpu"), torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    assert first.layers["blocks.1.ffn.0"].scale == 0.5  # alpha 2 over rank 4


def test_reaches_the_audio_stream_and_single_blocks_by_the_packs_own_names(tmp_path):
    model = tiny_model()
    modules = dict(model.named_modules())
    layers = [
        name
        for name, module in modules.items()
        if isinstance(module, torch.nn.Linear)
        and name.startswith(("audio_blocks.0.", "single_blocks.0.", "audio_head"))
    ]
    state = {
        key.removeprefix("diffusion_model."): value
        for key, value in random_lora(model, layers).items()
    }
    lora = read_lora(save(tmp_path, "own.safetensors", state), model)
    assert sorted(lora.layers) == sorted(layers) and not lora.skipped
    video, t, text, audio = inputs(model)
    plain = LoadedModel(model, "tiny")
    with plain.on("cpu"), torch.no_grad():
        base = model(video, t, text, audio=audio)
    with plain.with_lora(lora, 1.0).on("cpu"), torch.no_grad():
        styled = model(video, t, text, audio=audio)
    assert (styled.audio - base.audio).abs().max() > 1e-3
    assert (styled.video - base.video).abs().max() > 1e-3  # single blocks carry both streams


def test_fp8_storage_takes_a_lora_as_the_merged_weights_would(wan, tmp_path):
    from skyreels_core.offload import store_linears_in_fp8

    model, state = wan
    lora_state = random_lora(model, WAN_LAYERS)
    path = save(tmp_path, "a.safetensors", lora_state)
    merged = {key: value.clone() for key, value in state.items()}
    for layer in WAN_LAYERS:
        key = f"diffusion_model.{layer}"
        delta = lora_state[f"{key}.lora_up.weight"] @ lora_state[f"{key}.lora_down.weight"]
        merged[f"{layer}.weight"] += 0.5 * delta
        merged[f"{layer}.bias"] += lora_state[f"{key}.diff_b"]
    reference = DualStreamMMDiT(WAN_TINY)
    reference.load_state_dict(merged)
    store_linears_in_fp8(model, torch.float32)
    ours = run_ours(LoadedModel(model, "wan").with_lora(read_lora(path, model), 1.0))
    expected = run_ours(LoadedModel(reference.eval(), "merged"))
    base = run_ours(LoadedModel(model, "wan"))
    # fp8 rounding of the base weights only: far smaller than what the LoRA changes
    assert (ours - expected).abs().max() < 0.1 * (expected - base).abs().max()


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, "LoHa"),
        ({"diffusion_model.blocks.0.self_attn.q.weight": torch.zeros(64, 64)}, "not a LoRA weight"),
        ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 64)}, "half"),
        ({"diffusion_model.blocks.7.self_attn.q.lora_A.weight": torch.zeros(4, 64),
          "diffusion_model.blocks.7.self_attn.q.lora_B.weight": torch.zeros(64, 4)}, "no layer"),
        ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 5120),
          "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(5120, 4)}, "14B"),
        ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 64),
          "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(64, 4),
          "diffusion_model.blocks.0.self_attn.q.alpha": torch.ones(2)}, "alpha of 2 values"),
        ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(()),
          "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(64, 4)}, "shape \\(\\)"),
        # a LyCORIS key among plain pairs still makes the file a LyCORIS one
        ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 64),
          "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(64, 4),
          "lora_unet_blocks_0_self_attn_q.hada_w1_a": torch.zeros(2, 2)}, "LoHa"),
        ({"diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(64, 4)}, "half"),
        # a narrower model's LoRA (in 32, this model's 64) fits no more than a wider one's
        ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 32),
          "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(64, 4)},
         "a down of shape \\(4, 32\\)"),
        ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 64),
          "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(64, 2)},
         "down and up weights of different ranks"),
        ({"diffusion_model.blocks.0.norm3.lora_A.weight": torch.zeros(4, 64),
          "diffusion_model.blocks.0.norm3.lora_B.weight": torch.zeros(64, 4)},
         "blocks.0.norm3 a low-rank pair, and that is not a Linear layer"),
        ({"diffusion_model.blocks.0.norm3.diff": torch.zeros(32)},
         "changes blocks.0.norm3.weight with shape \\(32,\\), and this model's is \\(64,\\)"),
    ],
)  # fmt: skip
def test_a_wrong_file_is_refused_by_name(wan, tmp_path, state, message):
    model, _ = wan
    with pytest.raises(CheckpointError, match=message) as error:
        read_lora(save(tmp_path, "bad.safetensors", state), model)
    assert error.value.input_name == "lora_name"


def test_layers_the_model_lacks_are_skipped_and_listed(wan, tmp_path):
    """An I2V LoRA's image attention (k_img / v_img) on a T2V model: the rest applies."""
    model, _ = wan
    state = random_lora(model, ["blocks.0.self_attn.q"])
    state["diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight"] = torch.zeros(4, 64)
    state["diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight"] = torch.zeros(64, 4)
    lora = read_lora(save(tmp_path, "i2v.safetensors", state), model)
    assert list(lora.layers) == ["blocks.0.self_attn.q"]
    assert lora.skipped == ["blocks.0.cross_attn.k_img"]


def test_block_swap_renders_the_same_lora_and_restores_every_weight(wan, tmp_path):
    """The streamed layers (block 0 here) take their hooks and patched norm like resident ones."""
    model, _ = wan
    state = random_lora(model, WAN_LAYERS)
    state["diffusion_model.blocks.0.norm3.diff"] = torch.full((64,), 0.5)
    lora = read_lora(save(tmp_path, "a.safetensors", state), model)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    resident = run_ours(LoadedModel(model, "wan").with_lora(lora, 0.8))
    swapped = run_ours(LoadedModel(model, "wan", block_swap=1).with_lora(lora, 0.8))
    torch.testing.assert_close(swapped, resident, atol=1e-6, rtol=0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_compiled_model_renders_with_its_lora_and_without_it_again(monkeypatch, wan, tmp_path):
    """torch.compile ignores hooks added after compiling unless told to guard on them; the eager
    backend traces the same way as inductor without a compiler toolchain."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    # torch's own patch: monkeypatch's undo deletes a config entry torch then no longer knows.
    with torch._dynamo.config.patch(skip_nnmodule_hook_guards=True):  # the default
        model, _ = wan
        lora = read_lora(save(tmp_path, "a.safetensors", random_lora(model, WAN_LAYERS)), model)
        eager_plain = run_ours(LoadedModel(model, "eager"))
        eager_styled = run_ours(LoadedModel(model, "eager").with_lora(lora, 1.0))
        compiled = LoadedModel(model, "compiled", compile=True)
        torch.testing.assert_close(run_ours(compiled), eager_plain, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            run_ours(compiled.with_lora(lora, 1.0)), eager_styled, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(run_ours(compiled), eager_plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "has no safetensors header"),  # an empty file
        (b"\x00" * 100, "has no safetensors header"),  # an aborted download
        (b"PK\x03\x04 a zip", "has no safetensors header"),  # another format renamed
        ("cut", "is truncated"),
    ],
    ids=["empty", "zeros", "zip", "cut"],
)
def test_an_unreadable_file_is_refused_by_name(wan, tmp_path, content, message):
    """An empty, cut or foreign file meets the loaders' header check and names lora_name, where
    the safetensors parser raised its own bare error."""
    model, _ = wan
    path = save(tmp_path, "lora.safetensors", random_lora(model, ["blocks.0.self_attn.q"]))
    path.write_bytes(path.read_bytes()[:200] if content == "cut" else content)
    with pytest.raises(CheckpointError, match=f"lora_name: lora.safetensors {message}") as error:
        read_lora(path, model)
    assert error.value.input_name == "lora_name"


def test_a_distillation_loras_modulation_difference_applies_to_its_block(wan, tmp_path):
    """LightX2V's step-distillation LoRAs carry ``blocks.N.diff_m``, the block's modulation table
    difference, beside their pairs: it moves that table by strength x the difference."""
    model, _ = wan
    plain = LoadedModel(model, "wan")
    state = random_lora(model, WAN_LAYERS)
    table = dict(model.named_parameters())["blocks.0.modulation"]
    change = torch.full_like(table, 0.25)
    state["diffusion_model.blocks.0.diff_m"] = change
    lora = read_lora(save(tmp_path, "lightx2v.safetensors", state), model)
    before = table.detach().clone()
    with plain.with_lora(lora, 2.0).on("cpu"), torch.no_grad():
        torch.testing.assert_close(table, before + 2.0 * change)
    assert torch.equal(table, before)


@pytest.mark.parametrize("rslora", [False, True])
def test_alphas_kept_in_diffusers_metadata_match_diffusers(wan, tmp_path, rslora):
    """diffusers writes a PEFT LoRA's alphas into the file's lora_adapter_metadata, not as .alpha
    tensors (one default, a per-layer pattern, rsLoRA's square root): they scale as diffusers
    scales them."""
    pytest.importorskip("peft")
    import json

    from diffusers import WanPipeline
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

    model, state = wan
    lora_state = random_lora(model, WAN_LAYERS, bias=False)
    peft_state = _convert_non_diffusers_wan_lora_to_diffusers(cloned(lora_state))
    config = {
        "r": RANK, "lora_alpha": 8.0, "alpha_pattern": {"blocks.1.attn1.to_q": 1.0},
        "rank_pattern": {}, "use_rslora": rslora,
        "target_modules": sorted({k.split(".lora_")[0].removeprefix("transformer.") for k in peft_state}),
    }  # fmt: skip
    metadata = {
        "lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in config.items()})
    }
    path = tmp_path / "peft.safetensors"
    save_file(peft_state, str(path), metadata)
    ours = run_ours(LoadedModel(model, "wan").with_lora(read_lora(str(path), model), 0.7))

    theirs = diffusers_wan(state)
    loaded, read_metadata = WanPipeline.lora_state_dict(str(path), return_lora_metadata=True)
    theirs.load_lora_adapter(loaded, adapter_name="s", prefix="transformer", metadata=read_metadata)
    theirs.set_adapters(["s"], weights=[0.7])
    latents, t, text = wan_inputs()
    with torch.no_grad():
        reference = theirs(latents, t * 1000, text).sample
    without = run_ours(
        LoadedModel(model, "wan").with_lora(
            read_lora(save(tmp_path, "bare.safetensors", peft_state), model), 0.7
        )
    )
    assert (without - reference).abs().max() > 0.01  # read without its metadata, it differs
    assert (ours - reference).abs().max().item() <= 1e-4


def test_two_loras_on_one_parameter_add_and_restore_the_original(wan, tmp_path):
    """Two distillation LoRAs that both move one block's modulation table: inside the render the
    table holds both differences, and after it the model is exactly as loaded. If the second
    LoRA took the first one's patched table for "the original", the host's cached model would
    keep the first LoRA's change in every later render, with or without LoRAs."""
    model, _ = wan
    plain = LoadedModel(model, "wan")
    table = dict(model.named_parameters())["blocks.0.modulation"]
    norm = dict(model.named_parameters())["blocks.0.norm3.weight"]
    first = save(tmp_path, "a.safetensors", {
        "diffusion_model.blocks.0.diff_m": torch.full_like(table, 1.0),
        "diffusion_model.blocks.0.norm3.diff": torch.full_like(norm, 1.0),
    })  # fmt: skip
    second = save(tmp_path, "b.safetensors", {
        "diffusion_model.blocks.0.diff_m": torch.full_like(table, 2.0),
        "diffusion_model.blocks.0.norm3.diff": torch.full_like(norm, -0.5),
    })  # fmt: skip
    table_before, norm_before = table.detach().clone(), norm.detach().clone()
    both = plain.with_lora(read_lora(first, model), 1.0).with_lora(read_lora(second, model), 1.0)
    with both.on("cpu"), torch.no_grad():
        torch.testing.assert_close(table, table_before + 3.0)  # two roundings: close, not equal
        torch.testing.assert_close(norm, norm_before + 0.5)
    assert torch.equal(table, table_before)
    assert torch.equal(norm, norm_before)


def test_a_peft_alpha_pattern_names_the_end_of_a_layer_only(tmp_path):
    """PEFT matches an ``alpha_pattern`` key against the end of a layer's dotted name: the
    pattern ``0.attn1.to_q`` is block 0's query, not block 10's. Matched anywhere in the name, a
    trained LoRA's per-layer alphas would scale unrelated layers (here 2x too strong)."""
    import json
    from dataclasses import replace

    torch.manual_seed(0)
    model = DualStreamMMDiT(replace(WAN_TINY, num_dual_blocks=11))
    generator = torch.Generator().manual_seed(0)
    state = {}
    for block in (0, 10):
        prefix = f"transformer.blocks.{block}.attn1.to_q"
        state[f"{prefix}.lora_A.weight"] = torch.randn(RANK, 64, generator=generator)
        state[f"{prefix}.lora_B.weight"] = torch.randn(64, RANK, generator=generator)
    config = {"r": RANK, "lora_alpha": 4.0, "alpha_pattern": {"0.attn1.to_q": 8.0, "attn1": 16.0}}
    metadata = {"lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in config.items()})}  # fmt: skip
    path = tmp_path / "peft.safetensors"
    save_file(state, str(path), metadata)
    lora = read_lora(path, model)
    assert sorted(lora.layers) == ["blocks.0.self_attn.q", "blocks.10.self_attn.q"]
    assert lora.layers["blocks.0.self_attn.q"].scale == 2.0  # the pattern's 8 over rank 4
    assert lora.layers["blocks.10.self_attn.q"].scale == 1.0  # the default 4 over rank 4


def test_adapter_metadata_that_is_not_json_is_refused_by_name(tmp_path):
    """Its alphas unknown, the LoRA would apply at rank / alpha times its strength."""
    model = DualStreamMMDiT(WAN_TINY)
    state = {
        "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(RANK, 64),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(64, RANK),
    }
    path = tmp_path / "cut.safetensors"
    save_file(state, str(path), {"lora_adapter_metadata": '{"r": 4, "lora_alp'})
    with pytest.raises(CheckpointError, match="^lora_name: .*lora_adapter_metadata is not JSON"):
        read_lora(path, model)


def test_a_new_trainable_lora_starts_at_zero_effect_and_unit_gain():
    """A LoRA being trained starts from the model exactly as loaded (``up`` zeros), and its
    ``down`` maps a unit-variance input to unit variance (random / sqrt(in_features)). A nonzero
    start shifted every render before the first step; an unscaled ``down`` made the first steps'
    updates sqrt(in_features) times too large."""
    from skyreels_core.lora import applied
    from skyreels_core.lora_training import lora_parameters, trainable_lora

    model = tiny_model().requires_grad_(False)
    lora = trainable_lora(model, RANK, torch.Generator().manual_seed(0), "new")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    video, t, text, audio = inputs(model)
    with torch.no_grad():
        base = model(video, t, text, audio=audio)
    with applied(model, [(lora, 1.0)], torch.device("cpu")):
        out = model(video, t, text, audio=audio)
    assert torch.equal(out.video, base.video) and torch.equal(out.audio, base.audio)
    (out.video.square().mean() + out.audio.square().mean()).backward()
    assert any(delta.up.grad.abs().sum() > 0 for delta in lora.layers.values())

    assert sorted(lora.layers) == sorted(linears)
    assert all(p.requires_grad for p in lora_parameters(lora))
    gains = []
    for name, delta in lora.layers.items():
        assert delta.down.shape == (RANK, linears[name].in_features)
        assert torch.equal(delta.up, torch.zeros(linears[name].out_features, RANK))
        gains.append(delta.down.pow(2).mean() * linears[name].in_features)
    assert abs(torch.stack(gains).mean().item() - 1.0) < 0.1


def test_a_lora_file_replaced_in_place_leaves_the_read_lora_as_read(tmp_path):
    """safetensors' tensors read the mapped file: a LoRA file overwritten in place (cp, wget -O)
    under a running host changed the LoRA the host had cached, and a shorter one crashed the
    process with SIGBUS at the next render."""
    model = tiny_model()
    layers = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][:4]
    state = {k.removeprefix("diffusion_model."): v for k, v in random_lora(model, layers).items()}
    path = save(tmp_path, "style.safetensors", state)
    lora = read_lora(path, model)
    tensors = [t for d in lora.layers.values() for t in (d.down, d.up) if t is not None]
    before = [t.clone() for t in tensors]
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    with path.open("r+b") as file:  # as cp writes into the old file: same inode, new bytes
        file.seek(header)
        file.write(bytes(path.stat().st_size - header))
    assert all(torch.equal(t, b) for t, b in zip(tensors, before, strict=True))


def test_full_weight_and_bias_differences_move_their_layers_by_strength(wan, tmp_path):
    """Distillation LoRAs carry whole differences: a Linear layer's ``.diff`` [out, in] adds
    strength x (x diffᵀ) to its output and ``.diff_b`` strength x diff_b, on a square layer and
    a wide one alike; a norm's ``.diff_b`` moves its bias and leaves its weight. No other test
    reads a Linear ``.diff`` or a non-Linear ``.diff_b``."""
    model, _ = wan
    plain, modules = LoadedModel(model, "wan"), dict(model.named_modules())
    generator = torch.Generator().manual_seed(3)
    state, expected, x = {}, {}, torch.randn(3, 64, generator=generator)
    for layer in ("blocks.0.self_attn.q", "blocks.1.ffn.0"):  # 64 x 64 and 96 x 64
        linear = modules[layer]
        diff = torch.randn(linear.out_features, 64, generator=generator) * 0.1
        diff_b = torch.randn(linear.out_features, generator=generator) * 0.1
        state |= {f"diffusion_model.{layer}.diff": diff, f"diffusion_model.{layer}.diff_b": diff_b}
        with torch.no_grad():
            expected[layer] = linear(x) + 0.5 * (x @ diff.T + diff_b)
    state["diffusion_model.blocks.0.norm3.diff_b"] = torch.full((64,), 0.25)
    lora = read_lora(save(tmp_path, "distill.safetensors", state), model)
    norm = modules["blocks.0.norm3"]
    weight, bias = norm.weight.detach().clone(), norm.bias.detach().clone()
    with plain.with_lora(lora, 0.5).on("cpu"), torch.no_grad():
        for layer, value in expected.items():
            torch.testing.assert_close(modules[layer](x), value, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(norm.bias, bias + 0.125)
        assert torch.equal(norm.weight, weight)
    assert torch.equal(norm.bias, bias)


def test_older_field_spellings_and_comfyuis_prefix_read_as_the_same_deltas(wan, tmp_path):
    """Besides ``lora_down`` / ``lora_up`` and ``diff_b``, files spell a pair ``lora.down`` /
    ``lora.up`` (older kohya and LyCORIS exports) and a bias difference ``lora_B.bias``
    (diffusers), under ComfyUI's ``model.diffusion_model.`` prefix too. With any of them not
    read, the file was refused as holding no LoRA weight, or its layers skipped as unknown."""
    model, _ = wan
    layers = ["blocks.0.self_attn.q", "blocks.1.ffn.0"]
    state = random_lora(model, layers)
    reference = read_lora(save(tmp_path, "wan.safetensors", state), model)

    def respell(key: str) -> str:
        key = key.replace("_down.", ".down.").replace("_up.", ".up.")
        return "model." + key.replace(".diff_b", ".lora_B.bias")

    respelled = {respell(key): value for key, value in state.items()}
    assert "model.diffusion_model.blocks.0.self_attn.q.lora.down.weight" in respelled
    assert "model.diffusion_model.blocks.0.self_attn.q.lora_B.bias" in respelled
    lora = read_lora(save(tmp_path, "old.safetensors", respelled), model)
    assert list(lora.layers) == list(reference.layers) == layers and not lora.skipped
    for layer in layers:
        ours, theirs = lora.layers[layer], reference.layers[layer]
        assert ours.scale == theirs.scale == 0.5
        for field_name in ("down", "up", "bias"):
            assert torch.equal(getattr(ours, field_name), getattr(theirs, field_name)), field_name


@pytest.mark.parametrize(
    ("key", "name"),
    [("diffusion_model.blocks.0.modulation.diff", "blocks.0.modulation"),
     ("transformer.blocks.0.scale_shift_table.diff", "blocks.0.modulation"),
     ("transformer.scale_shift_table.diff", "head.modulation")],
)  # fmt: skip
def test_a_difference_named_by_its_parameter_moves_that_parameter(wan, tmp_path, key, name):
    """A ``.diff`` may name a parameter that is no module, as a block's modulation table is (Wan's
    ``blocks.0.modulation``, diffusers' ``blocks.0.scale_shift_table``): it moves that parameter
    itself, and diffusers' head ``scale_shift_table`` the head's. Resolved against module names
    only, a table was skipped (and a file of nothing else refused); taken as a module's, it was
    looked for as ``blocks.0.modulation.weight``."""
    model, _ = wan
    table = dict(model.named_parameters())[name]
    change = torch.full_like(table, 0.5)
    lora = read_lora(save(tmp_path, "table.safetensors", {key: change}), model)
    assert list(lora.parameters) == [name] and not lora.layers
    assert not lora.skipped
    before = table.detach().clone()
    with LoadedModel(model, "wan").with_lora(lora, 2.0).on("cpu"), torch.no_grad():
        torch.testing.assert_close(table, before + 1.0)
    assert torch.equal(table, before)


def test_an_empty_rank_pair_reads_and_changes_nothing(wan, tmp_path):
    """A trainer's export of a layer at rank 0 (down [0, in], up [out, 0]) with its alpha: it
    adds nothing, where alpha / rank divided by zero and took the whole file down."""
    model, _ = wan
    key = "diffusion_model.blocks.0.self_attn.q"
    state = {
        f"{key}.lora_down.weight": torch.zeros(0, 64),
        f"{key}.lora_up.weight": torch.zeros(64, 0),
        f"{key}.alpha": torch.tensor(2.0),
    }
    lora = read_lora(save(tmp_path, "empty.safetensors", state), model)
    assert list(lora.layers) == ["blocks.0.self_attn.q"]
    layer, x = dict(model.named_modules())["blocks.0.self_attn.q"], torch.randn(3, 64)
    with torch.no_grad():
        plain = layer(x)
        with LoadedModel(model, "wan").with_lora(lora, 1.0).on("cpu"):
            assert torch.equal(layer(x), plain)


def test_one_value_spelled_twice_names_both_keys(wan, tmp_path):
    """The refusal of a layer given twice with different tensors names the two keys that gave
    them, so the user sees which spellings clash; naming the second key twice hid the first."""
    model, _ = wan
    state = random_lora(model, ["blocks.0.self_attn.q"], bias=False)
    state["blocks.0.self_attn.q.alpha"] = torch.tensor(4.0)  # beside diffusion_model.…'s 2
    with pytest.raises(CheckpointError, match="twice with different weights") as error:
        read_lora(save(tmp_path, "clash.safetensors", state), model)
    named = set(re.findall(r"'([^']+)'", str(error.value)))
    assert named == {"blocks.0.self_attn.q.alpha", "diffusion_model.blocks.0.self_attn.q.alpha"}


def test_a_diffusers_named_files_norm2_is_wans_norm3(wan, tmp_path):
    """diffusers names Wan's cross-attention norm (Wan's ``norm3``) ``norm2``, while Wan's own
    ``norm2`` is the feed-forward norm, a layer of no weights. In a file named as diffusers
    names layers (its ``attn1.to_q`` says so) ``norm2.diff`` moves Wan's norm3: resolved name by
    name it took the weightless norm2 and the file was refused."""
    model, _ = wan
    norm3 = dict(model.named_modules())["blocks.0.norm3"]
    change = torch.full_like(norm3.weight, 0.25)
    state = {
        "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.randn(4, 64),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(64, 4),
        "transformer.blocks.0.norm2.diff": change,
    }
    lora = read_lora(save(tmp_path, "diffusers.safetensors", state), model)
    assert list(lora.layers) == ["blocks.0.self_attn.q"]
    assert list(lora.parameters) == ["blocks.0.norm3.weight"] and not lora.skipped
    torch.testing.assert_close(lora.parameters["blocks.0.norm3.weight"], change)
    wan_named = {"diffusion_model.blocks.0.norm3.diff": change}
    lora = read_lora(save(tmp_path, "wan.safetensors", wan_named), model)
    assert list(lora.parameters) == ["blocks.0.norm3.weight"]
