"""The refiner nodes: which keyframes they re-inject, what they output, what they refuse."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file
from skyreels_pack import NODE_CLASS_MAPPINGS
from skyreels_pack.nodes import host
from skyreels_pack.nodes.refiner import SkyReelsV4Refine, SkyReelsV4RefinerLoader
from workflow_tools import validate_as_host

from skyreels_core.demo import bundle
from skyreels_core.errors import CheckpointError, InputError
from skyreels_core.refiner import REFINER_PRESETS, RefinerDiT
from skyreels_core.types import AVLatent

warnings.filterwarnings("ignore", message=".*flex_attention.*")

WIDGETS = dict(
    scale=2,
    fps_factor=2,
    reinject_keyframes=True,
    sparsity=0.75,
    steps=2,
    denoise_start=0.6,
    seed=1,
)


def _clip(keyframes: bool = True) -> AVLatent:
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(1, 4, 5, 4, 6, generator=generator)
    audio = torch.randn(1, 4, 40, generator=generator)
    if not keyframes:
        return AVLatent(video=video, audio=audio, fps=16.0)
    keys = torch.randn(1, 4, 2, 8, 12, generator=generator)
    return AVLatent(video=video, audio=audio, keyframes=keys, keyframe_indices=[0, 4], fps=16.0)


@pytest.fixture
def refiner():
    torch.manual_seed(0)
    return RefinerDiT(REFINER_PRESETS["tiny"]).eval()


def test_refine_node_reinjects_the_samplers_keyframes_and_carries_the_audio(refiner):
    clip = _clip()
    (out,) = SkyReelsV4Refine().refine(refiner, clip, **WIDGETS)["result"]
    assert out.video.shape == (1, 4, 9, 8, 12) and out.fps == 32.0
    assert torch.equal(out.video[:, :, [0, 8]], clip.keyframes)
    assert out.audio is clip.audio and out.keyframes is None


def test_refine_node_takes_other_keyframes_at_typed_frames(refiner):
    clip = _clip(keyframes=False)
    other = AVLatent(video=torch.rand(1, 4, 1, 8, 12))
    (out,) = SkyReelsV4Refine().refine(
        refiner, clip, **WIDGETS, keyframes=other, keyframe_indices="8"
    )["result"]
    assert torch.equal(out.video[:, :, 4], other.video[:, :, 0])  # pixel 8 -> latent 2 -> 2 x 2


@pytest.mark.parametrize(
    ("keyframes", "indices", "input_name"),
    [
        (None, "0", "keyframes"),  # typed frames, nothing to re-inject
        (AVLatent(video=torch.rand(1, 4, 1, 8, 12)), "", "keyframe_indices"),  # frames unknown
        (AVLatent(video=torch.rand(1, 4, 1, 8, 12)), "40", "keyframe_indices"),  # outside
        (AVLatent(video=torch.rand(1, 4, 1, 6, 6)), "0", "keyframes"),  # wrong size
    ],
)
def test_refine_node_names_bad_keyframe_inputs(refiner, keyframes, indices, input_name):
    with pytest.raises(InputError) as error:
        SkyReelsV4Refine().refine(
            refiner,
            _clip(keyframes=False),
            **WIDGETS,
            keyframes=keyframes,
            keyframe_indices=indices,
        )
    assert error.value.input_name == input_name


def test_refine_node_says_keyframe_faults_in_its_own_widgets_and_pixel_frames(refiner):
    """The take's own keyframes at another scale were blamed on the unconnected keyframes input;
    another take's keyframes past this clip said "use latent frames 0..2", which no widget takes;
    a typed count was "indices for keyframes"; a clip's video as keyframes needs its frames typed."""
    cases = [
        (_clip(), None, "", {"scale": 4}, "scale: the take's keyframes were rendered at 2x"),
        (_clip(keyframes=False), AVLatent(video=torch.rand(1, 4, 17, 4, 6), keyframes=torch.rand(
            1, 4, 1, 8, 12), keyframe_indices=[6]), "", {}, r"keyframes: their frames \[21\] lie "
            "past the clip's 17 frames"),
        (_clip(keyframes=False), AVLatent(video=torch.rand(1, 4, 17, 4, 6), keyframes=torch.rand(
            1, 4, 1, 8, 12), keyframe_indices=[5]), "", {}, r"keyframes: their frames \[17\] lie "
            "past the clip's 17 frames"),  # the first latent frame past the clip's 5
        (_clip(), None, "0", {}, "keyframe_indices: 1 frames typed for 2 keyframes"),
        (_clip(keyframes=False), AVLatent(video=torch.rand(1, 4, 1, 8, 12)), "", {},
            "keyframe_indices: the connected keyframes do not say which frames they are. Fix: "
            'type their frames in the low-res clip, e.g. "0, 16"'),
    ]  # fmt: skip
    for clip, keyframes, typed, change, message in cases:
        with pytest.raises(InputError, match=f"^{message}"):
            SkyReelsV4Refine().refine(refiner, clip, **{**WIDGETS, **change},
                                      keyframes=keyframes, keyframe_indices=typed)  # fmt: skip


def test_validate_inputs_refuses_a_frame_rate_factor_of_three():
    assert validate_as_host(SkyReelsV4Refine, WIDGETS) is True
    verdict = validate_as_host(SkyReelsV4Refine, {**WIDGETS, "fps_factor": 3})
    assert verdict.startswith("fps_factor:")  # the host shows the message on the node


def test_validate_inputs_takes_a_linked_factor_and_names_only_it():
    """A factor wired from an Int node reaches the validator as None (unknown before the run):
    the prompt was refused with a bare TypeError. The host shows a refusal on every input the
    validator names (five widgets were marked for one bad factor) and checks the others' min /
    max itself, so the validator names fps_factor alone."""
    assert validate_as_host(SkyReelsV4Refine, WIDGETS, linked=["fps_factor"]) is True
    verdict = validate_as_host(SkyReelsV4Refine, {**WIDGETS, "fps_factor": 5})
    assert verdict == "fps_factor: 5 is above the maximum, 4. Fix: use 4 or less"
    assert inspect.getfullargspec(SkyReelsV4Refine.VALIDATE_INPUTS).args == ["cls", "fps_factor"]


def test_refine_node_checks_for_cancel_every_step(refiner, monkeypatch):
    calls = []

    def cancel_on_second():
        calls.append(1)
        if len(calls) == 2:
            raise InterruptedError

    monkeypatch.setattr(host, "check_interrupt", cancel_on_second)
    with pytest.raises(InterruptedError):
        SkyReelsV4Refine().refine(refiner, _clip(), **WIDGETS)
    assert len(calls) == 2


def test_refine_node_asks_for_the_weights_then_the_activations_of_the_refined_clip(
    refiner, monkeypatch
):
    from skyreels_core.offload import device_bytes

    asked = []
    monkeypatch.setattr(host, "reserve", lambda device, size: asked.append(size))
    (refined,) = SkyReelsV4Refine().refine(refiner, _clip(), **WIDGETS)["result"]
    assert refined.video.shape == (1, 4, 9, 8, 12)  # 2x fps, 2x size
    assert asked == [device_bytes(refiner), refiner.activation_bytes(refined.video.shape)]


def test_loader_lists_and_opens_the_bundled_refiner():
    choices = SkyReelsV4RefinerLoader.INPUT_TYPES()["required"]["refiner_name"][0]
    assert choices[0] == bundle.BUNDLED
    (refiner,) = SkyReelsV4RefinerLoader().load(bundle.BUNDLED, "auto")
    assert refiner.config == REFINER_PRESETS["demo"] and not refiner.training


def test_a_file_that_is_no_refiner_is_named_by_the_loaders_input(tmp_path, monkeypatch):
    """Its errors named "refiner", the Refine node's socket, not this node's refiner_name."""
    monkeypatch.setenv("SKYREELS_MODELS_DIR", str(tmp_path))
    (tmp_path / "skyreels_refiner").mkdir()
    save_file(
        {"weight": torch.zeros(2, 2)}, str(tmp_path / "skyreels_refiner" / "model.safetensors")
    )
    with pytest.raises(CheckpointError, match="^refiner_name: model.safetensors is not a Sky"):
        SkyReelsV4RefinerLoader().load("model.safetensors", "fp32")


def test_the_demo_refiner_notes_a_scale_it_was_not_trained_for(caplog):
    """Trained for 2x, the demo refiner comes out below bicubic at 1x, 3x and 4x: Refine says so
    on the node and in the log, and says nothing at 2x (nor for another refiner)."""
    demo = SkyReelsV4RefinerLoader().load(bundle.BUNDLED, "fp32")[0]
    clip = AVLatent(video=torch.randn(1, 8, 3, 8, 8), fps=16.0)
    widgets = {**WIDGETS, "fps_factor": 1, "reinject_keyframes": False, "sparsity": 0.0}
    with caplog.at_level("WARNING"):
        at_two = SkyReelsV4Refine().refine(demo, clip, **widgets)
        assert at_two["ui"] == {"skyreels_note": [""]} and caplog.records == []
        at_three = SkyReelsV4Refine().refine(demo, clip, **{**widgets, "scale": 3})
    note = at_three["ui"]["skyreels_note"][0]
    assert "trained for 2x only; at 3x it comes out worse than plain bicubic" in note
    assert note in caplog.text and at_three["result"][0].video.shape == (1, 8, 3, 24, 24)
    tiny = RefinerDiT(REFINER_PRESETS["tiny"]).eval()
    small = AVLatent(video=torch.randn(1, 4, 3, 8, 8), fps=16.0)
    assert SkyReelsV4Refine().refine(tiny, small, **{**widgets, "scale": 3})["ui"] == {
        "skyreels_note": [""]
    }


def test_the_demo_refiner_notes_a_takes_own_keyframes_the_demo_model_never_learned():
    """Laying a take's own high-res keyframes in (refine_saved_take, low_res_keyframes_refiner),
    the demo refiner says they are the demo model's untrained ones (bench part keyframes); not
    with reinject_keyframes off, with keyframes given from elsewhere, or for another refiner."""
    demo = SkyReelsV4RefinerLoader().load(bundle.BUNDLED, "fp32")[0]
    keys = torch.randn(1, 8, 1, 16, 16)
    take = AVLatent(torch.randn(1, 8, 3, 8, 8), keyframes=keys, keyframe_indices=[0], fps=16.0)
    widgets = {**WIDGETS, "fps_factor": 1, "sparsity": 0.0}

    def note(**changes) -> str:
        return SkyReelsV4Refine().refine(demo, take, **{**widgets, **changes})["ui"][
            "skyreels_note"
        ][0]

    assert note().startswith("the take's high-res keyframes come from the demo model, which never")
    assert note().endswith("Turn reinject_keyframes off for a smoother clip")
    assert note(reinject_keyframes=False) == ""
    assert note(keyframes=AVLatent(video=keys), keyframe_indices="0") == ""
    tiny = RefinerDiT(REFINER_PRESETS["tiny"]).eval()
    assert SkyReelsV4Refine().refine(tiny, _clip(), **WIDGETS)["ui"] == {"skyreels_note": [""]}


def test_refine_node_previews_its_running_estimate_through_a_video_vae(refiner, monkeypatch):
    """With ``video_vae`` wired, every step shows the middle frame of the clip the refiner is
    heading for, in the node: the last one is the refined clip's own; a VAE of another family
    is refused before the first step."""
    import numpy as np
    from codec_helpers import PoolingCodec
    from PIL import Image

    from skyreels_core.preview import previewer

    shown, updates = [], []

    class Recording(host.Progress):
        def update(self, value, preview=None):
            updates.append(value)
            if preview is not None:
                shown.append((value, np.asarray(preview)))
            super().update(value, preview)

    monkeypatch.setattr(host, "Progress", Recording)
    codec = PoolingCodec()
    (out,) = SkyReelsV4Refine().refine(refiner, _clip(), **WIDGETS, video_vae=codec)["result"]
    assert [step for step, _ in shown] == [1, 2] and updates == [1, 2]  # one event a step
    rgb = (previewer(codec)(out.video) * 255).round().to(torch.uint8).numpy()
    image = Image.fromarray(rgb)
    scale = 256 // max(image.size)
    expected = np.asarray(image.resize((image.width * scale, image.height * scale)))
    assert np.array_equal(shown[-1][1], expected)
    assert not np.array_equal(shown[0][1], expected)
    with pytest.raises(InputError, match="^video_vae: .*16 video latent channels"):
        SkyReelsV4Refine().refine(refiner, _clip(), **WIDGETS, video_vae=PoolingCodec(16))
    # A host started without previews (ComfyUI's default --preview-method none) is sent none:
    # an API script got an image a step, the core samplers none.
    shown.clear(), updates.clear()
    monkeypatch.setattr(host, "previews_on", lambda: False)
    SkyReelsV4Refine().refine(refiner, _clip(), **WIDGETS, video_vae=codec)
    assert shown == [] and updates == [1, 2]


def test_refine_node_names_a_latent_its_patches_cannot_split(refiner):
    """5 latent rows (frames 40 px high, encoded before Encode Video checked the grid) split into
    2 x 2 patches only at an even scale: refused by av_latent's name instead of a bare reshape
    error."""
    clip = AVLatent(video=torch.randn(1, 4, 3, 5, 8), fps=16.0)
    with pytest.raises(InputError) as error:
        SkyReelsV4Refine().refine(refiner, clip, **{**WIDGETS, "scale": 1})
    assert str(error.value) == (
        "av_latent: its 5 x 8 latent size times scale 1 does not divide into the refiner's "
        "2 x 2 patches. Fix: encode frames whose height and width are multiples of 16 px, or set "
        "scale to 2 or 4"
    )
    (out,) = SkyReelsV4Refine().refine(refiner, clip, **WIDGETS)["result"]
    assert out.video.shape == (1, 4, 5, 10, 16)


def test_a_refined_video_to_audio_take_keeps_its_own_length():
    """A Video to Audio take holds its 7-frame clip's last frame to 9: refined at 2x fps it is
    2 (7 - 1) + 1 = 13 frames at 32 fps, and both decoders trim to those, not to the 17 the
    padded latents cover."""
    demo = SkyReelsV4RefinerLoader().load(bundle.BUNDLED, "fp32")[0]
    generator = torch.Generator().manual_seed(3)
    video, audio = torch.randn(1, 8, 3, 8, 8, generator=generator), torch.randn(1, 8, 35)
    take = AVLatent(video=video, audio=audio, fps=16.0, clip_frames=7)
    widgets = {**WIDGETS, "reinject_keyframes": False, "sparsity": 0.0}
    (out,) = SkyReelsV4Refine().refine(demo, take, **widgets)["result"]
    assert out.clip_frames == 13 and out.fps == 32.0 and out.video.shape[2] == 5
    frames, fps = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]().decode(out, bundle.video_codec())
    whole, _ = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]().decode(
        replace(out, clip_frames=None), bundle.video_codec()
    )
    assert frames.shape[0] == 13 and whole.shape[0] == 17 and torch.equal(frames, whole[:13])
    codec = bundle.audio_codec()
    (sound,) = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeAudio"]().decode(out, codec)
    assert sound["waveform"].shape[-1] == round(13 / 32 * codec.sample_rate)


def test_refine_node_pairs_typed_keyframes_with_frames_in_the_order_typed(refiner):
    """Keyframes A, B typed "16, 0" re-inject A at frame 16 (latent 4, refined latent 8) and B at
    frame 0, as Mask: Keyframes pairs its images; two frames in one latent group are refused by
    the same message as there, not as a count of indices."""
    clip = _clip(keyframes=False)
    a, b = torch.full((1, 4, 1, 8, 12), 1.0), torch.full((1, 4, 1, 8, 12), -1.0)
    other = AVLatent(video=torch.cat([a, b], dim=2))

    def refined(indices: str) -> torch.Tensor:
        node = SkyReelsV4Refine()
        return node.refine(refiner, clip, **WIDGETS, keyframes=other, keyframe_indices=indices)[
            "result"
        ][0].video

    out = refined("16, 0")
    assert torch.equal(out[:, :, 8], a[:, :, 0]) and torch.equal(out[:, :, 0], b[:, :, 0])
    assert torch.equal(refined("-1, 0"), out)
    swapped = refined("0, 16")
    assert torch.equal(swapped[:, :, 0], a[:, :, 0]) and torch.equal(swapped[:, :, 8], b[:, :, 0])
    with pytest.raises(InputError) as error:
        refined("14, 16")
    assert str(error.value) == (
        "keyframe_indices: frames 14 and 16 fall in one latent group (frames 13-16), which holds "
        "one image. Fix: keep keyframes in different groups: frame 0 alone, then groups of 4 "
        "(1-4, 5-8, ...)"
    )


def test_refine_node_rests_the_refiner_and_its_output_where_the_host_says(refiner, monkeypatch):
    """After a refine the refiner's weights go back to the host's offload device, and the refined
    take is handed over on its intermediate device ("meta" stands in for the CPU beside a GPU
    for each): otherwise the refiner would stay in VRAM outside the host's model management, and
    the host would cache a GPU tensor."""
    monkeypatch.setattr(host, "intermediate_device", lambda: torch.device("meta"))
    (out,) = SkyReelsV4Refine().refine(refiner, _clip(), **WIDGETS)["result"]
    assert out.video.device.type == "meta" and out.audio.device.type == "meta"
    assert out.video.shape == (1, 4, 9, 8, 12)
    assert {p.device.type for p in refiner.parameters()} == {"cpu"}
    monkeypatch.setattr(host, "offload_device", lambda: torch.device("meta"))
    SkyReelsV4Refine().refine(refiner, _clip(), **WIDGETS)
    assert {p.device.type for p in refiner.parameters()} == {"meta"}


def test_refine_without_reinjection_ignores_the_keyframe_inputs(refiner):
    """reinject_keyframes off refines from the low-res clip alone: frames left typed in
    keyframe_indices with no keyframes connected are not read, so they neither stop the refine
    (as "typed but no high-res keyframes are connected") nor change it."""
    clip = _clip(keyframes=False)
    widgets = {**WIDGETS, "reinject_keyframes": False}
    (plain,) = SkyReelsV4Refine().refine(refiner, clip, **widgets)["result"]
    (typed,) = SkyReelsV4Refine().refine(refiner, clip, **widgets, keyframe_indices="0")["result"]
    assert torch.equal(typed.video, plain.video) and plain.video.shape == (1, 4, 9, 8, 12)


def test_refine_names_the_latent_input_of_another_width(refiner):
    """The tiny refiner takes 4 video latent channels: an 8-channel take is av_latent's fault and
    8-channel keyframes the keyframes input's, each named by its own socket."""
    wide = AVLatent(video=torch.rand(1, 8, 5, 4, 6), fps=16.0)
    for clip, keyframes, input_name in [
        (wide, None, "av_latent"),
        (_clip(keyframes=False), replace(wide, video=torch.rand(1, 8, 1, 8, 12)), "keyframes"),
    ]:
        with pytest.raises(InputError) as error:
            SkyReelsV4Refine().refine(
                refiner, clip, **WIDGETS, keyframes=keyframes, keyframe_indices="0"
            )
        assert str(error.value).startswith(
            f"{input_name}: 8 video latent channels where this refiner takes 4."
        ), str(error.value)
