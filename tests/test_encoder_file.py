"""A single-file Qwen2.5-VL, as ComfyUI keeps it (release names, no lm_head, often fp8_scaled,
tokenizer elsewhere), encodes exactly as the same model loaded from its release folder."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from skyreels_core.encoder import MLLMEncoder, create_tiny_encoder_folder
from skyreels_core.errors import CheckpointError

PROMPT = "a red circle bounces on the floor"
RELEASE_PREPROCESSOR = {  # Qwen2.5-VL-7B-Instruct's preprocessor_config.json
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}  # fmt: skip


def _release_config(tokenizer) -> dict:
    """A Qwen2.5-VL-7B-Instruct config.json at a tiny width: the release's head widths (128 text,
    80 vision), RoPE sections and full-attention blocks, with fewer and narrower layers."""
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in [("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>"),
                            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                            ("vision_start_token_id", "<|vision_start|>"),
                            ("vision_end_token_id", "<|vision_end|>")]
    }  # fmt: skip
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
        "hidden_act": "silu", "hidden_size": 256, "intermediate_size": 320, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": len(tokenizer), **ids,
        "vision_config": {
            "depth": 8, "hidden_act": "silu", "hidden_size": 160, "intermediate_size": 96,
            "num_heads": 2, "in_chans": 3, "out_hidden_size": 256, "patch_size": 14,
            "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
            "fullatt_block_indexes": [7], "tokens_per_second": 2, "temporal_patch_size": 2,
        },
    }  # fmt: skip


def _release_names(state: dict) -> dict:
    """transformers' names back to the release's, as ComfyUI's file holds them (no lm_head)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("model.visual."):
            renamed[key.removeprefix("model.")] = value
        elif key.startswith("model.language_model."):
            renamed["model." + key.removeprefix("model.language_model.")] = value
    return renamed


def _fp8_scaled(state: dict) -> dict:
    """ComfyUI's fp8_scaled spelling of the matrices: float8 values, a scale each, a marker."""
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if value.ndim == 2 and key.endswith("proj.weight"):
            scale = value.abs().amax() / 448.0
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key.removesuffix("weight") + "scale_weight"] = scale
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(the release folder, ComfyUI's single file, a folder holding only the tokenizer)."""
    import transformers

    root = tmp_path_factory.mktemp("qwen25")
    tokenizer_folder = create_tiny_encoder_folder(root / "tokenizer", vocab_texts=[PROMPT])
    for path in tokenizer_folder.iterdir():  # keep the tokenizer and its chat template only
        if not path.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            path.unlink()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_folder)
    config = transformers.Qwen2_5_VLConfig.from_dict(_release_config(tokenizer))
    torch.manual_seed(0)
    model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    model.save_pretrained(root / "release")
    tokenizer.save_pretrained(root / "release")
    transformers.Qwen2VLImageProcessorPil(**RELEASE_PREPROCESSOR).save_pretrained(root / "release")
    single = root / "qwen_2.5_vl_tiny.safetensors"
    save_file(_release_names(model.state_dict()), str(single))
    return root / "release", single, tokenizer_folder


def _image() -> torch.Tensor:
    """Wider than the vision tower's 112 px attention windows, so windowed and full-attention
    blocks differ."""
    image = torch.rand(168, 224, 3, generator=torch.Generator().manual_seed(0))
    image[8:40, 20:60, 0] = 1
    return image


def test_a_single_file_encodes_as_its_release_folder(release):
    folder, single, tokenizer_folder = release
    reference = MLLMEncoder.from_folder(folder, dtype=torch.float32)
    ours = MLLMEncoder.from_file(single, tokenizer_folder, dtype=torch.float32)
    for images in ([], [_image()]):
        expected = reference.encode(PROMPT, images=images).features
        got = ours.encode(PROMPT, images=images).features
        assert got.shape == expected.shape and got.shape[-1] == 256
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert ours.encode(PROMPT, images=[_image()]).features.shape[1] > len(PROMPT.split())


@pytest.mark.parametrize(
    "device, dtype, itemsize",
    [("cuda", torch.bfloat16, 2), ("cuda", torch.float32, 4), ("cpu", torch.float32, None)],
)
def test_a_single_file_loaded_onto_the_gpu_asks_for_its_room_first(
    release, monkeypatch, device, dtype, itemsize
):
    """With offload off the file's weights load straight onto the GPU, and were read there
    without asking the host for room: it is asked for their bytes in the chosen dtype (the tied
    output head once) before a tensor is read. Onto the CPU nothing is asked: the host's room
    is the GPU's."""
    from safetensors import safe_open

    from skyreels_core import encoder_file

    class Read(Exception):
        pass

    def load_tensors(*args, **kwargs):
        events.append("read")
        raise Read

    _, single, tokenizer_folder = release
    events = []
    monkeypatch.setattr(encoder_file, "load_tensors", load_tensors)
    with pytest.raises(Read):
        MLLMEncoder.from_file(
            single,
            tokenizer_folder,
            dtype=dtype,
            device=device,
            offload_device=device,
            reserve=lambda device, size: events.append((device, size)),
        )
    with safe_open(str(single), "pt") as tensors:
        elements = sum(
            math.prod(tensors.get_slice(key).get_shape())
            for key in tensors.keys()
            if not key.startswith("lm_head")
        )
    asked = [] if itemsize is None else [(torch.device(device), itemsize * elements)]
    assert events == [*asked, "read"]


def test_an_fp8_scaled_single_file_loads_its_true_weights(release, tmp_path):
    from safetensors.torch import load_file

    _, single, tokenizer_folder = release
    state = _fp8_scaled(load_file(str(single)))
    path = tmp_path / "qwen_2.5_vl_tiny_fp8_scaled.safetensors"
    save_file(state, str(path))
    encoder = MLLMEncoder.from_file(path, tokenizer_folder, dtype=torch.float32)
    key = "model.layers.1.mlp.down_proj"
    weight = encoder.model.model.language_model.layers[1].mlp.down_proj.weight
    assert torch.equal(weight, state[f"{key}.weight"].float() * state[f"{key}.scale_weight"])
    exact = MLLMEncoder.from_file(single, tokenizer_folder, dtype=torch.float32)
    a, b = (e.encode(PROMPT).features for e in (encoder, exact))
    assert 0 < (a - b).norm() / b.norm() < 0.1


def test_another_models_file_is_refused_before_its_weights_are_read(release, tmp_path):
    _, _, tokenizer_folder = release
    path = tmp_path / "umt5_xxl.safetensors"
    save_file({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(CheckpointError, match="^encoder: ") as error:
        MLLMEncoder.from_file(path, tokenizer_folder, dtype=torch.float32)
    assert "not a Qwen2.5-VL" in error.value.problem and "model.embed_tokens" in error.value.problem


def test_a_file_of_widths_no_release_has_is_refused_and_not_listed(release, tmp_path):
    """The bundled demo encoder's model.safetensors has Qwen2.5-VL's names but a 64-wide text
    stream: no config sits beside it, and reading head counts off its widths (heads of 128)
    divided by zero. It is left out of the list, and named if picked."""
    from skyreels_core.demo import bundle
    from skyreels_core.encoder_file import holds_qwen25_vl

    _, _, tokenizer_folder = release
    path = bundle.WEIGHTS_DIR / "text_encoder" / "model.safetensors"
    assert not holds_qwen25_vl(path)
    with pytest.raises(CheckpointError, match="^encoder: model.safetensors has widths no Qwen2.5"):
        MLLMEncoder.from_file(path, tokenizer_folder, dtype=torch.float32)


def test_the_loader_node_offers_qwen_files_and_reads_them_with_the_hosts_tokenizer(
    release, tmp_path, monkeypatch
):
    import shutil

    from skyreels_pack import NODE_CLASS_MAPPINGS
    from skyreels_pack.nodes import host

    from skyreels_core import encoder_file
    from skyreels_core.demo import bundle
    from skyreels_core.errors import InputError

    folder, single, tokenizer_folder = release
    encoders = tmp_path / "text_encoders"
    shutil.copytree(folder, encoders / "Qwen2.5-VL-tiny")  # a release folder and its own shards
    shutil.copy(single, encoders / "qwen_2.5_vl_tiny.safetensors")
    save_file({"shared.weight": torch.zeros(4, 4)}, str(encoders / "umt5_xxl_fp8.safetensors"))
    monkeypatch.setenv("SKYREELS_MODELS_DIR", str(tmp_path))
    node = NODE_CLASS_MAPPINGS["SkyReelsV4TextEncoderLoader"]
    choices = node.INPUT_TYPES()["required"]["encoder"][0]
    assert choices == [bundle.BUNDLED, "Qwen2.5-VL-tiny", "qwen_2.5_vl_tiny.safetensors"]
    # ComfyUI's listing follows links, so one to a drive not mounted is listed; an unreadable
    # file raises on open. Neither may take the whole menu down.
    (encoders / "qwen_2.5_vl_gone.safetensors").symlink_to(tmp_path / "unmounted.safetensors")
    listing = host.list_models
    monkeypatch.setattr(
        host, "list_models", lambda kind: [*listing(kind), "qwen_2.5_vl_gone.safetensors"]
    )
    unreadable = encoders / "qwen_2.5_vl_locked.safetensors"
    shutil.copy(single, unreadable)
    reader = encoder_file.read_checkpoint_header

    def locked_out(path, *args):
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return reader(path, *args)

    monkeypatch.setattr(encoder_file, "read_checkpoint_header", locked_out)
    assert node.INPUT_TYPES()["required"]["encoder"][0] == choices

    monkeypatch.setattr(host, "qwen25_tokenizer_folder", lambda: None)
    with pytest.raises(InputError, match="^encoder: .*qwen25_tokenizer"):
        node().load("qwen_2.5_vl_tiny.safetensors", "fp32", -1)
    monkeypatch.setattr(host, "qwen25_tokenizer_folder", lambda: tokenizer_folder)
    from_file = node().load("qwen_2.5_vl_tiny.safetensors", "fp32", -1)[0]
    from_folder = node().load("Qwen2.5-VL-tiny", "fp32", -1)[0]
    a, b = (e.encode(PROMPT, images=[_image()]).features for e in (from_file, from_folder))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    changed = node.IS_CHANGED(encoder="qwen_2.5_vl_tiny.safetensors", dtype="fp32")
    assert "qwen_2.5_vl_tiny.safetensors" in changed


def test_the_hosts_qwen_tokenizer_is_found_beside_its_model_management(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from skyreels_pack.nodes import host

    comfy = tmp_path / "comfy"
    (comfy / "text_encoders" / "qwen25_tokenizer").mkdir(parents=True)
    fake = SimpleNamespace(__file__=str(comfy / "model_management.py"))
    monkeypatch.setattr(host, "IN_COMFYUI", True)
    monkeypatch.setattr(host, "model_management", fake)
    assert host.qwen25_tokenizer_folder() == comfy / "text_encoders" / "qwen25_tokenizer"
    (comfy / "text_encoders" / "qwen25_tokenizer").rmdir()
    assert host.qwen25_tokenizer_folder() is None
    monkeypatch.setattr(host, "IN_COMFYUI", False)
    assert host.qwen25_tokenizer_folder() is None


def test_release_names_become_transformers_names_and_transformers_names_stay():
    """A release key gains transformers' ``model.language_model.`` / ``model.`` prefix; a key
    already spelled as transformers spells it (a file saved from transformers) keeps its name,
    where ``model.visual.*`` became ``model.language_model.visual.*`` and was missing."""
    from skyreels_core.encoder_file import transformers_name

    for release_name, transformers in [
        ("visual.blocks.0.attn.qkv.weight", "model.visual.blocks.0.attn.qkv.weight"),
        ("model.layers.0.mlp.up_proj.weight", "model.language_model.layers.0.mlp.up_proj.weight"),
        ("model.visual.merger.mlp.2.weight", "model.visual.merger.mlp.2.weight"),
        ("model.language_model.norm.weight", "model.language_model.norm.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ]:
        assert transformers_name(release_name) == transformers, release_name


def test_a_file_of_zero_width_is_no_qwen25_vl(tmp_path):
    """Zero divides into heads of any width: a file of Qwen2.5-VL's names whose text or vision
    width is 0 (an empty export) is not listed, where it read as zero heads; the same names at
    the release's head widths are."""
    from safetensors.torch import save_file

    from skyreels_core.encoder_file import REQUIRED_KEYS, holds_qwen25_vl

    for text, vision, listed in [(128, 80, True), (0, 80, False), (128, 0, False)]:
        state = {key: torch.zeros(2, 2) for key in REQUIRED_KEYS}
        state["model.embed_tokens.weight"] = torch.zeros(4, text)
        state["visual.patch_embed.proj.weight"] = torch.zeros(vision, 3)
        path = tmp_path / f"qwen_{text}_{vision}.safetensors"
        save_file(state, str(path))
        assert holds_qwen25_vl(path) is listed, (text, vision)


def test_a_single_file_with_its_own_output_head_keeps_it(release, tmp_path):
    """A single file that carries ``lm_head`` (an export of the full model) loads it as its own:
    neither refused as an unexpected key nor replaced by the embedding table, which stands in
    only where the file has none."""
    from safetensors.torch import load_file

    _, single, tokenizer_folder = release
    state = load_file(str(single))
    head = torch.randn_like(state["model.embed_tokens.weight"])
    path = tmp_path / "qwen_2.5_vl_tiny_with_head.safetensors"
    save_file(state | {"lm_head.weight": head}, str(path))
    encoder = MLLMEncoder.from_file(path, tokenizer_folder, dtype=torch.float32)
    assert torch.equal(encoder.model.lm_head.weight, head)
