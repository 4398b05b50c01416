"""Malformed inputs end in a result or one clear InputError, never another crash (hypothesis)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from codec_helpers import PoolingCodec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skyreels_pack import NODE_CLASS_MAPPINGS
from workflow_tools import object_info_from_mappings, validate_workflow

from skyreels_core import masks
from skyreels_core.av_io import read_audio, read_video
from skyreels_core.errors import CheckpointError, InputError
from skyreels_core.joining import continue_clip, join_audio, join_frames
from skyreels_core.shapes import parse_frame_indices

CODEC = PoolingCodec()
FUZZ = settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    frames=st.integers(-3, 40),
    height=st.integers(0, 70),
    width=st.integers(0, 70),
    mask_frames=st.integers(0, 3),
    indices=st.text(alphabet="0123456789,- ;x", max_size=12),
)
def test_mask_builders_never_crash(frames, height, width, mask_frames, indices):
    clip = torch.rand(max(frames, 1), max(height, 1), max(width, 1), 3)
    mask = torch.ones(mask_frames, max(height, 1), max(width, 1))
    for build in (
        lambda: masks.text_to_video(CODEC, frames, height, width),
        lambda: masks.extend_video(CODEC, clip, frames, 5),
        lambda: continue_clip(CODEC, clip, frames, mask_frames * 3 - 1),
        lambda: masks.edit_video(CODEC, clip, mask),
        lambda: masks.keyframes(
            CODEC, {i: clip[0] for i in parse_frame_indices(indices, max(frames, 1))}, frames
        ),
    ):
        try:
            condition = build()
        except InputError:
            continue
        assert condition.latents.shape[2] == condition.known_mask.shape[2]


@FUZZ
@given(
    frames=st.integers(1, 40),
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    longest_side=st.integers(0, 100),
)
def test_video_to_audio_takes_any_clip(frames, height, width, longest_side):
    """Any clip gives a condition: every cell known, sides on the 16 px grid, the frames held up
    to the next 4k+1 count, and the clip's own length kept for the decoders."""
    condition = masks.video_to_audio(CODEC, torch.rand(frames, height, width, 3), longest_side)
    latent_frames, latent_height, latent_width = condition.latents.shape[2:]
    assert latent_frames == 1 + (frames + 2) // 4 and condition.clip_frames == frames
    assert latent_height % 2 == 0 and latent_width % 2 == 0 and condition.known_mask.all()


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".mp4", ".wav", ".mkv", ".png"]))
def test_the_av_reader_turns_garbage_into_input_errors(tmp_path, data, suffix):
    path = tmp_path / f"clip{suffix}"
    path.write_bytes(data)
    for read in (read_video, read_audio):
        with pytest.raises(InputError):
            read(path)


@FUZZ
@given(
    lengths=st.tuples(st.integers(0, 12), st.integers(0, 12)),
    sizes=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    overlap=st.integers(-2, 14),
    samples=st.tuples(st.integers(0, 3000), st.integers(0, 3000)),
    rates=st.tuples(st.sampled_from([8000, 16000, 44100]), st.sampled_from([8000, 16000])),
    fps=st.floats(1.0, 60.0),
)
def test_joins_give_the_joined_length_or_one_input_error(
    lengths, sizes, overlap, samples, rates, fps
):
    first, second = (torch.rand(n, size, size, 3) for n, size in zip(lengths, sizes))
    try:
        frames = join_frames(first, second, overlap)
    except InputError:
        frames = None
    if frames is not None:
        assert frames.shape[0] == lengths[0] + lengths[1] - overlap
    sounds = [{"waveform": torch.rand(1, 1, n), "sample_rate": r} for n, r in zip(samples, rates)]
    start, fade = max(lengths[0] - overlap, 0) / fps, max(overlap, 0) / fps
    joined = join_audio(*sounds, start, fade)
    assert joined["sample_rate"] == rates[0] and joined["waveform"].shape[:2] == (1, 1)
    assert joined["waveform"].shape[-1] >= round(start * rates[0])


@FUZZ
@given(data=st.binary(max_size=512))
def test_any_file_as_an_av_latent_loads_or_is_refused_by_name(tmp_path, data):
    from skyreels_core.av_latent_file import load_av_latent

    path = tmp_path / "take.av_latent.safetensors"
    path.write_bytes(data)
    with pytest.raises((InputError, CheckpointError), match="^av_latent"):
        load_av_latent(path)


OBJECT_INFO = object_info_from_mappings(NODE_CLASS_MAPPINGS)
BASE = json.loads(
    (Path(__file__).resolve().parents[1] / "workflows/text_to_video.json").read_text()
)


@FUZZ
@given(
    node=st.integers(0, len(BASE["nodes"]) - 1),
    slot=st.integers(0, 12),
    value=st.one_of(
        st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=8), st.none()
    ),
    link=st.integers(0, len(BASE["links"]) - 1),
    kind=st.sampled_from(["IMAGE", "AUDIO", "SKYREELS_MODEL", "*", "INT"]),
)
def test_the_workflow_validator_reports_instead_of_crashing(node, slot, value, link, kind):
    workflow = json.loads(json.dumps(BASE))
    values = workflow["nodes"][node]["widgets_values"]
    if values:
        values[slot % len(values)] = value
    workflow["links"][link][5] = kind
    try:
        errors = validate_workflow(workflow, OBJECT_INFO)
    except TypeError:
        pytest.fail("the validator crashed on a malformed value")
    assert isinstance(errors, list)


LORA_MODEL = None


def _lora_model():
    global LORA_MODEL
    if LORA_MODEL is None:
        from model_helpers import tiny_model

        LORA_MODEL = tiny_model()
    return LORA_MODEL


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(["", "diffusion_model.", "transformer.", "lora_unet_", "x."]),
            st.sampled_from(["blocks.0.self_attn.q", "blocks_0_ffn_0", "blocks.0.attn1.to_out.0",
                             "blocks.0.norm3", "blocks.0.modulation", "single_blocks.0.linear1",
                             "audio_head.head", "patch_embedding", "blocks.9.self_attn.q", "head"]),
            st.sampled_from([".lora_A.weight", ".lora_B.weight", ".lora_down.weight",
                             ".lora_up.weight", ".alpha", ".diff", ".diff_b", ".lora_B.bias",
                             ".hada_w1_a", ".weight", ""]),
            st.one_of(  # the tiny model's widths (32, 64, 160, 4 audio channels) or anything
                st.lists(st.sampled_from([2, 4, 32, 64, 160]), min_size=1, max_size=2),
                st.sampled_from([[1, 6, 32], []]),
                st.lists(st.integers(0, 70), min_size=0, max_size=4),
            ),
        ),
        min_size=1,
        max_size=6,
    )
)  # fmt: skip
def test_any_lora_file_reads_or_is_refused_by_name(tmp_path_factory, entries):
    """Any mix of spellings, layers, fields and shapes: a Lora whose every tensor fits the layer
    it lands on, or one CheckpointError naming lora_name."""
    from safetensors.torch import save_file

    from skyreels_core.errors import CheckpointError
    from skyreels_core.lora import read_lora

    model = _lora_model()
    state = {f"{p}{layer}{field}": torch.zeros(shape) for p, layer, field, shape in entries}
    path = tmp_path_factory.mktemp("lora") / "fuzz.safetensors"
    save_file(state, str(path))
    try:
        lora = read_lora(path, model)
    except CheckpointError as error:
        assert error.input_name == "lora_name"
        return
    modules, parameters = dict(model.named_modules()), dict(model.named_parameters())
    for name, delta in lora.layers.items():
        layer = modules[name]
        if delta.down is not None:
            assert delta.down.shape[1] == layer.in_features
            assert delta.up.shape == (layer.out_features, delta.down.shape[0])
        if delta.weight is not None:
            assert delta.weight.shape == layer.weight.shape
        if delta.bias is not None:
            assert delta.bias.shape == (layer.out_features,)
    for name, diff in lora.parameters.items():
        assert diff.shape == parameters[name].shape
