"""The shared MLLM encoder: a real Qwen2.5-VL and Qwen3-VL (tiny configs) loaded from local folders."""

from __future__ import annotations

import pytest
import torch

from skyreels_core.encoder import MLLMEncoder, create_tiny_encoder_folder
from skyreels_core.errors import CheckpointError
from skyreels_core.prompts import parse_multishot

PROMPT = "a red circle bounces on the floor"


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def folder(request, tmp_path_factory):
    return create_tiny_encoder_folder(
        tmp_path_factory.mktemp(request.param),
        vocab_texts=[PROMPT, "a blue square moves right"],
        family=request.param,
    )


@pytest.fixture(scope="module")
def encoder(folder):
    return MLLMEncoder.from_folder(folder, dtype=torch.float32)


def test_prefix_drop_is_exact(encoder):
    encoding = encoder.encode(PROMPT)
    assert encoding.features.shape == (1, 7, 64) and encoding.mask.all()
    ids = encoder.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    full = encoder.tokenizer(
        encoder._render([{"type": "text", "text": PROMPT}]), add_special_tokens=False
    )["input_ids"]
    assert full[len(encoder._prefix) : len(full) - encoder._suffix_length] == ids
    # The same words after the cut give the same token ids: the first kept token is the prompt's.
    assert encoder.tokenizer.convert_ids_to_tokens(ids[:1]) == ["a"]


def test_images_change_the_features_and_add_their_tokens(encoder):
    plain = encoder.encode(PROMPT)
    image = torch.zeros(64, 64, 3)
    image[16:48, 16:48, 0] = 1
    with_image = encoder.encode(PROMPT, images=[image])
    assert with_image.features.shape[1] > plain.features.shape[1]
    words = with_image.features[:, -plain.features.shape[1] :]
    assert (words - plain.features).abs().max() > 1e-4  # the words attended the image
    video = encoder.encode(PROMPT, video=torch.rand(9, 64, 64, 3))
    assert video.features.shape[1] > with_image.features.shape[1]


def test_cache_returns_identical_tensors_and_dtype_is_honoured(folder, encoder):
    assert encoder.encode(PROMPT) is encoder.encode(PROMPT)
    half = MLLMEncoder.from_folder(folder, dtype=torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert torch.allclose(
        half.encode(PROMPT).features, encoder.encode(PROMPT).features, atol=0.1, rtol=0.1
    )


def test_weights_visit_the_compute_device_only_while_encoding(folder, encoder, monkeypatch):
    from skyreels_core import offload

    moves = []
    monkeypatch.setattr(offload, "place", lambda model, device: moves.append(str(device)))
    monkeypatch.setattr(encoder, "offload_device", torch.device("meta"))  # "away from the GPU"
    encoder.encode("a green square moves left")
    encoder.encode("a green square moves left")  # cached: nothing moves
    assert moves == ["cpu", "meta"]


def test_room_is_asked_for_only_when_a_prompt_is_encoded(folder):
    calls = []
    encoder = MLLMEncoder.from_folder(
        folder, dtype=torch.float32, reserve=lambda device, size: calls.append((device, size))
    )
    encoder.encode("a green square moves left")
    encoder.encode("a green square moves left")  # cached: the weights stay where they rest
    encoder.encode("a red circle bounces on the floor")
    assert calls == [(torch.device("cpu"), 0)] * 2  # its weights already rest where it computes


def test_multishot_ranges(encoder):
    shots = parse_multishot("[0-16] a red circle bounces\n[17-32] a blue square moves right", 33)
    encoding = encoder.encode_shots(shots, 33)
    first = encoder.encode("a red circle bounces").features.shape[1]
    assert encoding.shot_ranges == [(0, first, 0, 5), (first, encoding.features.shape[1], 5, 9)]


def test_missing_or_foreign_folders_say_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        MLLMEncoder.from_folder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(CheckpointError, match="not a Qwen-VL"):
        MLLMEncoder.from_folder(tmp_path)


def test_a_hidden_layer_the_model_lacks_is_named_at_load_and_outer_whitespace_is_dropped(
    folder, encoder
):
    """The tiny encoder has 2 layers, so 3 hidden states: 3 or -4 is refused before a prompt
    runs; a prompt's blank first line (a BPE tokenizer would merge it into the template's
    newline) encodes as the prompt itself."""
    from skyreels_core.errors import InputError

    for layer in (3, -4):
        with pytest.raises(InputError, match=f"^hidden_layer: {layer} of a model with 3 hidden"):
            MLLMEncoder.from_folder(folder, dtype=torch.float32, hidden_layer=layer)
    plain = encoder.encode("a red circle bounces")
    torch.testing.assert_close(
        encoder.encode("\n  a red circle bounces \n").features, plain.features
    )
