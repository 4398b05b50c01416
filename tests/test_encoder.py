"""The shared MLLM encoder: a real Qwen2.5-VL and Qwen3-VL (tiny configs) loaded from local folders."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from skyreels_core.encoder import MLLMEncoder, create_tiny_encoder_folder
from skyreels_core.errors import CheckpointError, InputError
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
    as_batch = encoder.encode(
        PROMPT, images=image[None]
    )  # an IMAGE batch (a bare truth-value error)
    assert torch.equal(as_batch.features, with_image.features)
    words = with_image.features[:, -plain.features.shape[1] :]
    assert (words - plain.features).abs().max() > 1e-4  # the words attended the image
    video = encoder.encode(PROMPT, video=torch.rand(9, 64, 64, 3))
    assert video.features.shape[1] > with_image.features.shape[1]


@pytest.mark.parametrize("token", ["<|image_pad|>", "<|im_end|>", "<|vision_start|>"])
def test_a_prompt_holding_a_control_token_is_named(encoder, token):
    """Typed text is read as the token itself: an image placeholder without a picture, or the
    turn's end before the prompt does."""
    with pytest.raises(InputError, match=f"^prompt: holds {re.escape(token)}, a control token"):
        encoder.encode(f"a red circle {token} bounces", images=[torch.rand(64, 64, 3)])
    assert encoder.encode("a red <circle> | bounces").features.shape[1] > 0
    with pytest.raises(InputError, match="^shots: holds"):
        encoder.encode_shots(parse_multishot(f"[0-8] a {token}", 9), 9)


def test_pictures_the_processor_cannot_take_are_named_by_their_input(encoder):
    """A strip over 200:1 failed inside transformers ("absolute aspect ratio must be smaller
    than 200"); a two-channel video was named as images."""
    with pytest.raises(InputError, match="^images: a picture of 1000 x 4 px, over 200:1"):
        encoder.encode(PROMPT, images=[torch.rand(4, 1000, 3)])
    plain = encoder.encode(PROMPT).features.shape[1]
    assert encoder.encode(PROMPT, images=[torch.rand(4, 800, 3)]).features.shape[1] > plain
    with pytest.raises(InputError, match="^video: 2 colour channels"):
        encoder.encode(PROMPT, video=torch.rand(3, 32, 32, 2))


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


@pytest.mark.parametrize("offloaded", [True, False])
def test_the_encoder_loads_where_it_rests_and_asks_for_room_there_first(folder, offloaded):
    """With offload off a 7B encoder rests on the GPU from the load on (16 GB in bf16), and was
    put there without asking the host for room. "meta" stands in for the GPU."""
    from skyreels_core.offload import device_bytes

    calls = []
    rest = torch.device("cpu" if offloaded else "meta")
    encoder = MLLMEncoder.from_folder(
        folder,
        dtype=torch.float32,
        device="meta",
        offload_device=rest,
        reserve=lambda device, size: calls.append((device, size)),
    )
    assert {p.device for p in encoder.model.parameters()} == {rest}
    assert calls == ([] if offloaded else [(rest, device_bytes(encoder.model))])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_features_that_are_not_finite_are_named_as_the_encoders(folder, dtype):
    """An encoder that overflows (Qwen-VL in float16) or a damaged file gave NaN features, which
    the sampler only met as its first prediction not finite, blamed on Load Model. Nothing is
    cached: the same prompt encodes again once the weights are whole."""
    encoder = MLLMEncoder.from_folder(folder, dtype=dtype)
    norm = encoder.model.model.language_model.norm.weight
    whole = norm.detach().clone()
    with torch.no_grad():
        norm[0] = float("inf")
    fix = "load it in bf16 or fp32" if dtype == torch.float16 else "check the encoder's files"
    with pytest.raises(InputError, match=rf"^encoder: its features are not finite .*Fix: {fix}"):
        encoder.encode("a green square moves left")
    with torch.no_grad():
        norm.copy_(whole)
    assert torch.isfinite(encoder.encode("a green square moves left").features).all()


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
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"")  # pickles are never read
    with pytest.raises(CheckpointError, match=r"^encoder: .* has no \.safetensors weights"):
        MLLMEncoder.from_folder(tmp_path)


@pytest.mark.parametrize("text", ['{"model_type": "qwen2_5_vl",', '["qwen2_5_vl"]', "\udcff"])
def test_a_damaged_json_file_is_named_with_its_fix(tmp_path, text):
    """A config.json cut short by a download (or made a list by hand) failed as a bare
    JSONDecodeError or AttributeError, naming no file."""
    (tmp_path / "config.json").write_text(text, errors="surrogateescape")
    with pytest.raises(CheckpointError, match=r"^folder: .*config\.json is not a JSON object"):
        MLLMEncoder.from_folder(tmp_path, input_name="folder")


@pytest.fixture
def weights_never_load(monkeypatch):
    """Every Qwen-VL class's from_pretrained refuses: a check that must come before the weights
    load (minutes and many GB for a 7B model) fails its test instead of passing late."""
    import transformers

    from skyreels_core.encoder import MODEL_CLASSES

    def refuse(*args, **kwargs):
        raise AssertionError("the weights loaded before the folder was checked")

    for name in MODEL_CLASSES.values():
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", refuse)


@pytest.mark.parametrize(
    "removed, named",
    [
        (["tokenizer.json"], "tokenizer.json (or vocab.json and merges.txt)"),
        (["preprocessor_config.json"], "preprocessor_config.json"),
        (
            ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"],
            "tokenizer.json (or vocab.json and merges.txt) and no preprocessor_config.json",
        ),
        (["chat_template.jinja"], "chat template"),
    ],
)
def test_missing_tokenizer_or_processor_files_are_named_before_the_weights_load(
    folder, tmp_path, weights_never_load, removed, named
):
    copy = shutil.copytree(folder, tmp_path / "encoder")
    for name in removed:
        (copy / name).unlink()
    with pytest.raises(CheckpointError, match="^encoder: ") as error:
        MLLMEncoder.from_folder(copy, dtype=torch.float32)
    assert named in error.value.problem
    assert "copy" in error.value.fix


def _vocab_and_merges(folder: Path) -> None:
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def _nested_processor_config(folder: Path) -> None:
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").unlink()
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": processor}))


@pytest.mark.parametrize("rewrite", [_vocab_and_merges, _nested_processor_config])
def test_the_other_file_sets_transformers_reads_pass_the_check(
    folder, tmp_path, weights_never_load, rewrite
):
    """Not refused: Qwen2's BPE tokenizer built from vocab.json and merges.txt, and the image
    processor's settings nested in processor_config.json, both load in transformers, so such a
    folder reaches the weights."""
    copy = shutil.copytree(folder, tmp_path / "encoder")
    rewrite(copy)
    with pytest.raises(AssertionError, match="weights loaded"):
        MLLMEncoder.from_folder(copy, dtype=torch.float32)


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


def test_cached_features_rest_where_the_weights_rest(folder, monkeypatch):
    """Encodings are cached on the offload device (the CPU, where the encoder waits between
    prompts), not on the GPU that computed them; "meta" stands in for an offload device here."""
    import contextlib

    encoder = MLLMEncoder.from_folder(folder, dtype=torch.float32)
    computed = encoder.encode(PROMPT)
    monkeypatch.setattr(encoder, "offload_device", torch.device("meta"))
    monkeypatch.setattr(encoder, "_computing", contextlib.nullcontext)
    rested = encoder.encode(PROMPT + " twice")
    assert computed.features.device.type == "cpu" and rested.features.device.type == "meta"
    assert rested.mask.device.type == "meta" and encoder.encode(PROMPT + " twice") is rested


def test_the_same_prompt_with_another_picture_is_encoded_again(encoder):
    """The cache is keyed by the pictures' content too: keyed by the prompt and sizes alone,
    re-encoding a prompt with a new reference image (same size) would return the first image's
    features."""
    dark = encoder.encode(PROMPT, images=torch.zeros(1, 64, 64, 3))
    light = encoder.encode(PROMPT, images=torch.ones(1, 64, 64, 3))
    assert dark.features.shape == light.features.shape
    assert (dark.features - light.features).abs().max() > 1e-4
    assert encoder.encode(PROMPT, images=torch.zeros(1, 64, 64, 3)) is dark
    # the same bytes in another shape are another picture
    wide = encoder.encode(PROMPT, images=torch.zeros(1, 64, 128, 3))
    tall = encoder.encode(PROMPT, images=torch.zeros(1, 128, 64, 3))
    assert (wide.features - tall.features).abs().max() > 1e-5


def test_the_cache_keeps_the_prompts_used_last(encoder, monkeypatch):
    """At its size, the cache drops the prompt used longest ago: one just read again stays."""
    from skyreels_core import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "CACHE_SIZE", 2)
    fresh = MLLMEncoder(encoder.model, encoder.tokenizer, encoder.image_processor,
                        encoder.chat_template)  # fmt: skip
    first, second = fresh.encode("a red circle"), fresh.encode("a blue square")
    assert fresh.encode("a red circle") is first
    third = fresh.encode("moves right")
    assert fresh.encode("moves right") is third and fresh.encode("a red circle") is first
    again = fresh.encode("a blue square")
    assert again is not second and torch.equal(again.features, second.features)


def test_the_hidden_layer_chosen_is_the_one_read(folder, encoder):
    """hidden_layer picks the hidden state the features come from (the tiny model has 3: the
    embeddings' output, then each layer's), not the last whatever the setting."""
    middle = MLLMEncoder.from_folder(folder, dtype=torch.float32, hidden_layer=1)
    ids = encoder.tokenizer(
        encoder._render([{"type": "text", "text": PROMPT}]),
        add_special_tokens=False,
        return_tensors="pt",
    )["input_ids"]
    with torch.no_grad():
        states = middle.model.model(input_ids=ids, output_hidden_states=True).hidden_states
    cut = slice(len(middle._prefix), ids.shape[1] - middle._suffix_length)
    features = middle.encode(PROMPT).features
    torch.testing.assert_close(features, states[1][:, cut].float())
    torch.testing.assert_close(encoder.encode(PROMPT).features, states[-1][:, cut].float())
    assert (features - encoder.encode(PROMPT).features).abs().max() > 1e-3
    middle.hidden_layer = -1  # the cache is keyed by the layer too
    torch.testing.assert_close(middle.encode(PROMPT).features, states[-1][:, cut].float())


def test_images_and_a_video_are_both_read(encoder):
    """With both inputs given, the video's frames come after the images (each picture adds its
    own tokens); neither input is dropped."""
    plain = encoder.encode(PROMPT).features.shape[1]
    images = encoder.encode(PROMPT, images=torch.rand(2, 64, 64, 3)).features.shape[1]
    video = encoder.encode(PROMPT, video=torch.rand(5, 64, 64, 3)).features.shape[1]
    both = encoder.encode(
        PROMPT, images=torch.rand(2, 64, 64, 3), video=torch.rand(5, 64, 64, 3)
    ).features.shape[1]
    assert both - plain == (images - plain) + (video - plain)
    assert images > plain and video > plain


@pytest.mark.parametrize("frames, read", [(8, 8), (9, 5), (17, 6), (33, 7), (81, 8)])
def test_a_video_gives_the_mllm_at_most_eight_evenly_spaced_frames(encoder, frames, read):
    """Every ceil(frames / 8)-th frame is read: a stride rounded down would give a 17-frame video
    9 frames, over the 8 the encoder is meant to read."""
    video = torch.rand(frames, 64, 64, 3)
    plain = encoder.encode(PROMPT).features.shape[1]
    one = encoder.encode(PROMPT, images=video[:1]).features.shape[1] - plain
    tokens = encoder.encode(PROMPT, video=video).features.shape[1] - plain
    assert tokens == read * one
    step = -(-frames // 8)
    torch.testing.assert_close(
        encoder.encode(PROMPT + " again", video=video).features,
        encoder.encode(PROMPT + " again", images=video[::step]).features,
    )


def test_pixels_outside_0_1_are_clipped_not_wrapped(encoder):
    """An upscaler's overshoot (1.02) reads as white and an undershoot (-0.1) as black: cast to
    bytes without a clamp they would wrap round to near-black and near-white."""
    over = torch.full((1, 64, 64, 3), 1.02)
    over[:, :32] = -0.1
    clipped = over.clamp(0, 1)
    torch.testing.assert_close(
        encoder.encode(PROMPT, images=over).features,
        encoder.encode(PROMPT, images=clipped).features,
    )
    # and to the nearest byte: 100.6 / 255 reads as 101, not as 100
    nearest = encoder.encode(PROMPT, images=torch.full((1, 64, 64, 3), 101 / 255)).features
    level = encoder.encode(PROMPT, images=torch.full((1, 64, 64, 3), 100.6 / 255)).features
    torch.testing.assert_close(level, nearest)


def test_a_bpe_tokenizer_does_not_merge_a_prompt_s_blank_first_line_into_the_template(
    folder, tmp_path
):
    """With a BPE tokenizer (here a tiny one over characters, with Qwen's newline-pair merge) a
    prompt's leading newline would merge with the newline that ends the template's prefix: the
    prefix would no longer match ("the chat template's prefix changed"), and outer spaces would be
    tokens of their own. Stripped, the prompt encodes as itself."""
    from tokenizers import Tokenizer, models

    copy = shutil.copytree(folder, tmp_path / "encoder")
    words = json.loads((copy / "tokenizer.json").read_text())
    special = {token["content"]: token["id"] for token in words["added_tokens"]}
    vocab = dict(special)
    for piece in ["\n", "\n\n", " ", *sorted(set("a red circle"))]:
        vocab.setdefault(piece, len(vocab))
    assert len(vocab) <= json.loads((copy / "config.json").read_text())["text_config"]["vocab_size"]
    bpe = Tokenizer(models.BPE(vocab, [("\n", "\n")], unk_token="<unk>"))
    bpe.add_special_tokens(list(special))
    bpe.save(str(copy / "tokenizer.json"))
    encoder = MLLMEncoder.from_folder(copy, dtype=torch.float32)
    assert encoder.tokenizer("x\n\ny", add_special_tokens=False)["input_ids"][1] == vocab["\n\n"]
    plain = encoder.encode("a red circle")
    assert plain.features.shape[1] == len("a red circle")  # one token a character
    for padded in ("\na red circle", "  a red circle \n"):
        torch.testing.assert_close(encoder.encode(padded).features, plain.features)
