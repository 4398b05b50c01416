"""Every node is consistent for artists: names, categories, tooltips on every input and output,
defaults inside their ranges."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from codec_helpers import PoolingCodec
from skyreels_pack import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from skyreels_pack.nodes import masks as mask_nodes
from workflow_tools import validate_as_host

CODEC = PoolingCodec()

FRONTEND = Path(__file__).resolve().parents[1] / "js" / "skyreels_v4.js"


def _inputs(cls):
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            yield section, name, spec


def test_the_node_set_is_complete():
    expected = {
        "SkyReelsV4ModelLoader", "SkyReelsV4TextEncoderLoader", "SkyReelsV4VideoVAELoader",
        "SkyReelsV4AudioVAELoader", "SkyReelsV4TextEncode", "SkyReelsV4MultiShotTextEncode",
        "SkyReelsV4MaskT2V", "SkyReelsV4MaskI2V", "SkyReelsV4MaskExtend", "SkyReelsV4MaskInterpolate",
        "SkyReelsV4MaskKeyframes", "SkyReelsV4MaskEdit", "SkyReelsV4MaskVideoToAudio",
        "SkyReelsV4MaskKeepVideo", "SkyReelsV4ImageReferences",
        "SkyReelsV4ClipReference", "SkyReelsV4StoryboardReference", "SkyReelsV4AudioReference",
        "SkyReelsV4Sampler", "SkyReelsV4DecodeVideo", "SkyReelsV4DecodeAudio", "SkyReelsV4EncodeVideo",
        "SkyReelsV4EncodeAudio", "SkyReelsV4SaveVideo", "SkyReelsV4LoadAudio", "SkyReelsV4LoraLoader",
    }  # fmt: skip
    assert expected <= set(NODE_CLASS_MAPPINGS)
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_node_definition_is_consistent(name):
    cls = NODE_CLASS_MAPPINGS[name]
    assert NODE_DISPLAY_NAME_MAPPINGS[name].startswith("SkyReels-V4 ")
    assert cls.CATEGORY.startswith("SkyReels-V4/")
    assert cls.DESCRIPTION and callable(getattr(cls, cls.FUNCTION))
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    tips = getattr(cls, "OUTPUT_TOOLTIPS", ())
    assert len(tips) == len(cls.RETURN_TYPES) and all(tips), f"{name}: a tooltip per output"
    assert getattr(cls, "OUTPUT_NODE", False) or cls.RETURN_TYPES, (
        "a node without outputs must be an output node"
    )
    for section, input_name, spec in _inputs(cls):
        options = spec[1] if len(spec) > 1 else {}
        kind = spec[0]
        assert options.get("tooltip"), f"{name}.{input_name} ({section}) has no tooltip"
        if kind in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"], (name, input_name)
        if isinstance(kind, list):
            assert kind and options.get("default", kind[0]) in kind, (name, input_name)


def test_validation_reports_bad_frame_counts_as_a_message_before_running():
    verdict = NODE_CLASS_MAPPINGS["SkyReelsV4MaskT2V"].VALIDATE_INPUTS(frames=30)
    assert verdict.startswith("frames:") and "29 or 33" in verdict
    assert NODE_CLASS_MAPPINGS["SkyReelsV4MaskT2V"].VALIDATE_INPUTS(frames=33) is True
    verdict = NODE_CLASS_MAPPINGS["SkyReelsV4MaskT2V"].VALIDATE_INPUTS(frames=4001)
    assert verdict == "frames: 4001 is above the maximum, 1025. Fix: use 1025 or less"


def test_validation_checks_the_minimum_and_accepts_both_limits():
    """The host skips its own min / max checks for the inputs a validator takes, so the pack
    makes them: a value under the minimum must be refused with the limit named (else it fails
    later with a less useful message), and each limit itself is a valid value."""
    node = NODE_CLASS_MAPPINGS["SkyReelsV4MaskT2V"]
    assert node.VALIDATE_INPUTS(frames=0) == "frames: 0 is below the minimum, 1. Fix: use 1 or more"
    assert (
        node.VALIDATE_INPUTS(frames=-3) == "frames: -3 is below the minimum, 1. Fix: use 1 or more"
    )
    assert node.VALIDATE_INPUTS(frames=1) is True
    assert node.VALIDATE_INPUTS(frames=1025) is True


@pytest.mark.parametrize(
    "name",
    [
        name
        for name, cls in NODE_CLASS_MAPPINGS.items()
        if {"width", "height"} <= set(cls.INPUT_TYPES()["required"])
    ],
)
def test_sizes_off_the_16_px_grid_are_refused_when_queued(name):
    """The widget's step of 16 only moves its arrows: a typed 72 passed the host's checks and the
    render failed at the Sampler, or at a reference's size check, after the encoder had run.
    Every node with width and height widgets refuses it when queued, naming the nearest sizes."""
    node = NODE_CLASS_MAPPINGS[name]
    assert node.VALIDATE_INPUTS(width=72, height=64) == (
        "width: 72 px is not a multiple of 16. Fix: use 64 or 80 px"
    )
    assert node.VALIDATE_INPUTS(width=64, height=100).startswith("height: 100 px")
    assert node.VALIDATE_INPUTS(width=16, height=4096) is True


def test_validation_checks_the_limits_of_float_inputs_too():
    """A FLOAT a validator takes gets the same host checks as an INT: a strength of -0.01 on a
    0..1 widget is refused before the run, and the limits themselves pass."""
    from skyreels_pack.nodes.validation import reports_input_errors

    class Probe:
        @classmethod
        def INPUT_TYPES(cls):
            spec = {"default": 0.5, "min": 0.0, "max": 1.0, "tooltip": "t"}
            return {"required": {"strength": ("FLOAT", spec)}}

        @classmethod
        @reports_input_errors
        def VALIDATE_INPUTS(cls, strength: float = 0.5):
            return True

    below = "strength: -0.01 is below the minimum, 0.0. Fix: use 0.0 or more"
    assert Probe.VALIDATE_INPUTS(strength=-0.01) == below
    above = "strength: 1.01 is above the maximum, 1.0. Fix: use 1.0 or less"
    assert Probe.VALIDATE_INPUTS(strength=1.01) == above
    assert (
        Probe.VALIDATE_INPUTS(strength=0.0) is True and Probe.VALIDATE_INPUTS(strength=1.0) is True
    )


@pytest.mark.parametrize(
    "name", [n for n, c in NODE_CLASS_MAPPINGS.items() if hasattr(c, "VALIDATE_INPUTS")]
)
def test_validators_name_their_inputs_and_take_linked_ones(name):
    """The host checks min / max (and lists) only of inputs a validator's signature leaves out
    (a catch-all **inputs turned every check off), and passes a wired input as None: a frame
    count from an Int node refused the whole prompt with a TypeError."""
    cls = NODE_CLASS_MAPPINGS[name]
    spec = inspect.getfullargspec(cls.VALIDATE_INPUTS)
    assert spec.varkw is None and len(spec.args) > 1
    assert validate_as_host(cls, dict.fromkeys(spec.args[1:]), linked=spec.args[1:]) is True


def test_every_mask_node_draws_its_timeline_in_the_frontend():
    """The frontend draws the kept-frames timeline on the node types it lists; a mask node left
    out of that list would show no timeline."""
    script = FRONTEND.read_text()
    listed = script[script.index("const MASK_NODES") : script.index("]);")]
    assert set(re.findall(r'"(\w+)"', listed)) == set(mask_nodes.NODE_CLASS_MAPPINGS)


def test_every_frame_rate_widget_keeps_what_is_typed():
    """The frontend rounds a FLOAT to its step's decimals (no step: to 0.1): Encode Video stored
    29.97 as 30 while the Sampler kept 29.97, and then refused the clip's latent. One spec, a
    step of 1 (whole decimals: no rounding), on every fps widget."""
    specs = [
        (name, entry[1])
        for name, cls in NODE_CLASS_MAPPINGS.items()
        for group in ("required", "optional")
        for input_name, entry in cls.INPUT_TYPES().get(group, {}).items()
        if input_name == "fps"
    ]
    assert len(specs) >= 6
    for name, options in specs:
        assert {k: v for k, v in options.items() if k != "tooltip"} == {
            "default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0
        }, name  # fmt: skip


@pytest.mark.parametrize(
    ("name", "call", "input_name"),
    [
        ("SkyReelsV4MaskI2V", lambda n, e, img: n.build(CODEC, e, 9), "image"),
        ("SkyReelsV4MaskInterpolate", lambda n, e, img: n.build(CODEC, img, e, 9), "last"),
        ("SkyReelsV4MaskExtend", lambda n, e, img: n.build(CODEC, e, 9, 5), "source"),
        ("SkyReelsV4MaskContinue", lambda n, e, img: n.build(CODEC, e, 9, 5), "clip"),
        ("SkyReelsV4ImageReferences", lambda n, e, img: n.build(CODEC, 32, 32, image_1=e), "image_1"),
        ("SkyReelsV4JoinClips", lambda n, e, img: n.join(e, img, 0, 16.0), "frames_a"),
    ],
)  # fmt: skip
def test_an_empty_image_batch_is_named_by_the_input_it_reached(name, call, input_name):
    """A batch of no frames (an upstream node's empty output) failed as a bare IndexError, as
    'overlap: -3 frames' or as 'no reference image is connected'."""
    from skyreels_core.errors import InputError

    empty, image = torch.zeros(0, 32, 32, 3), torch.rand(1, 32, 32, 3)
    with pytest.raises(InputError, match=f"^{input_name}: no frames \\(an empty IMAGE batch\\)"):
        call(NODE_CLASS_MAPPINGS[name](), empty, image)


def test_every_frame_count_widget_steps_between_valid_counts():
    """Frame counts must be 4k + 1: a frames widget whose default, minimum or step is off that
    grid makes its arrows walk through counts the node then refuses (step 1 from 33 gives 34)."""
    specs = [
        (name, input_name, entry[1])
        for name, cls in NODE_CLASS_MAPPINGS.items()
        for group in ("required", "optional")
        for input_name, entry in cls.INPUT_TYPES().get(group, {}).items()
        if input_name in ("frames", "window_frames") and entry[0] == "INT"
    ]
    assert len(specs) >= 8
    for name, input_name, options in specs:
        assert options["step"] == 4, (name, input_name)
        assert options["min"] % 4 == 1 and options["default"] % 4 == 1, (name, input_name)
