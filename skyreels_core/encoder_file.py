"""Qwen2.5-VL as ComfyUI users keep it: one safetensors file in ``models/text_encoders`` (what
Qwen-Image and HunyuanVideo 1.5 load, e.g. ``qwen_2.5_vl_7b_fp8_scaled.safetensors``).

Such a file holds the release's language-model and vision-tower weights under the release's own
names (``model.layers.*``, ``visual.*``), often in scaled fp8, without ``lm_head``, config.json or
tokenizer. The configuration is read off the shapes with the constants every Qwen2.5-VL release
shares (128-wide text heads, 80-wide vision heads, multimodal RoPE sections 16/24/24, full
attention every 8th vision block), the tokenizer comes from a folder (ComfyUI ships Qwen2.5's),
and the image processor takes the release's preprocessor settings. The encoder reads hidden
states, never logits, so the missing ``lm_head`` is the embedding table, shared rather than
drawn at random.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .errors import CheckpointError
from .loading import (
    describe_keys,
    load_tensors,
    open_tensors,
    read_checkpoint_header,
    shapes_of,
    validate_keys,
)
from .offload import ReserveMemory
from .requirements import import_required
from .scaled_weights import scaled_layout

TEXT_HEAD_DIM = 128
VISION_HEAD_DIM = 80
FULL_ATTENTION_EVERY = 8  # vision blocks 7, 15, 23, 31 attend the whole image
REQUIRED_KEYS = (
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "visual.patch_embed.proj.weight",
    "visual.blocks.0.mlp.gate_proj.weight",
    "visual.merger.mlp.2.weight",
)
PREPROCESSOR = {  # the release's preprocessor_config.json
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def transformers_name(key: str) -> str:
    """A release key as transformers' Qwen2_5_VLForConditionalGeneration names it."""
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.")):
        return "model.language_model." + key.removeprefix("model.")
    return key


def _count(shapes: dict, prefix: str) -> int:
    return 1 + max(
        int(key[len(prefix) :].split(".")[0]) for key in shapes if key.startswith(prefix)
    )


def qwen25_vl_config(shapes: dict[str, tuple[int, ...]], token_ids: dict[str, int]) -> dict:
    """The release's config.json for a Qwen2.5-VL of these (release-named) shapes."""
    vocab, hidden = shapes["model.embed_tokens.weight"]
    depth = _count(shapes, "visual.blocks.")
    vision_hidden = shapes["visual.patch_embed.proj.weight"][0]
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": shapes["model.layers.0.mlp.gate_proj.weight"][0],
        "num_hidden_layers": _count(shapes, "model.layers."),
        "num_attention_heads": hidden // TEXT_HEAD_DIM,
        "num_key_value_heads": shapes["model.layers.0.self_attn.k_proj.weight"][0] // TEXT_HEAD_DIM,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        **token_ids,
        "vision_config": {
            "depth": depth,
            "hidden_act": "silu",
            "hidden_size": vision_hidden,
            "intermediate_size": shapes["visual.blocks.0.mlp.gate_proj.weight"][0],
            "num_heads": vision_hidden // VISION_HEAD_DIM,
            "in_chans": 3,
            "out_hidden_size": shapes["visual.merger.mlp.2.weight"][0],
            "patch_size": PREPROCESSOR["patch_size"],
            "spatial_merge_size": PREPROCESSOR["merge_size"],
            "spatial_patch_size": PREPROCESSOR["patch_size"],
            "temporal_patch_size": PREPROCESSOR["temporal_patch_size"],
            "window_size": 112,
            "fullatt_block_indexes": list(
                range(FULL_ATTENTION_EVERY - 1, depth, FULL_ATTENTION_EVERY)
            ),
            "tokens_per_second": 2,
        },
    }


def token_ids(tokenizer) -> dict[str, int]:
    """The special tokens' ids the model looks for, as this tokenizer spells them."""
    names = {
        "bos_token_id": "<|endoftext|>",
        "eos_token_id": "<|im_end|>",
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return {field: tokenizer.convert_tokens_to_ids(token) for field, token in names.items()}


def holds_qwen25_vl(path: Path) -> bool:
    """Whether a safetensors file (or shard set) is a single-file Qwen2.5-VL: what a list of a
    text-encoder folder offers, beside the T5 and CLIP files other models keep there."""
    try:
        _, shapes, _ = read_checkpoint_header(Path(path))
    except (CheckpointError, OSError):
        return False
    return all(key in shapes for key in REQUIRED_KEYS) and _release_heads(shapes)


def _release_heads(shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether the widths split into the heads every Qwen2.5-VL release has (the file carries no
    config, so the head counts are read off its widths; another width divides into none)."""
    text, vision = (
        shapes["model.embed_tokens.weight"][1],
        shapes["visual.patch_embed.proj.weight"][0],
    )
    return text % TEXT_HEAD_DIM == 0 < text and vision % VISION_HEAD_DIM == 0 < vision


def load_qwen25_vl_file(
    path: Path,
    tokenizer,
    dtype: torch.dtype,
    device,
    input_name: str,
    reserve: ReserveMemory | None = None,
) -> torch.nn.Module:
    """The model of a single-file Qwen2.5-VL (or its shards), fp8_scaled weights taken back to
    ``dtype``; a file of another model is refused before its weights are read. The weights load
    straight onto ``device``: off the CPU, ``reserve`` is asked for their room first."""
    transformers = import_required("transformers", input_name)

    shards, shapes, metadata = read_checkpoint_header(Path(path), input_name)
    missing = [key for key in REQUIRED_KEYS if key not in shapes]
    fix = (
        "pick a Qwen2.5-VL file (qwen_2.5_vl_7b*.safetensors, as Qwen-Image uses) or a "
        "Qwen2.5-VL / Qwen3-VL model folder"
    )
    if missing:
        raise CheckpointError(
            input_name,
            f"{Path(path).name} is not a Qwen2.5-VL text encoder (it lacks {describe_keys(missing)})",
            fix,
        )
    if not _release_heads(shapes):
        raise CheckpointError(
            input_name,
            f"{Path(path).name} has widths no Qwen2.5-VL release has (heads of "
            f"{TEXT_HEAD_DIM} and {VISION_HEAD_DIM}), and no config to read its own from",
            f"{fix} with its config.json",
        )
    config = transformers.Qwen2_5_VLConfig.from_dict(qwen25_vl_config(shapes, token_ids(tokenizer)))
    with torch.device("meta"):
        skeleton = transformers.Qwen2_5_VLForConditionalGeneration(config)
    expected = shapes_of(skeleton.state_dict(), lambda key: key == "lm_head.weight")
    with open_tensors(shards, transformers_name) as readers:
        layout = scaled_layout(readers, lambda key: readers[key](), metadata, input_name)
        found = {transformers_name(key): shape for key, shape in shapes.items()}
        found = {key: found[key] for key in layout.model_keys(found) if key != "lm_head.weight"}
        validate_keys(expected, found, input_name, "Qwen2.5-VL")
        if reserve is not None and torch.device(device).type != "cpu":
            reserve(torch.device(device), sum(map(math.prod, expected.values())) * dtype.itemsize)
        state = load_tensors(readers, layout, dtype, device, input_name=input_name)
    state.setdefault("lm_head.weight", state["model.language_model.embed_tokens.weight"])
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=state, dtype=dtype
    )
    return model.to(device)
