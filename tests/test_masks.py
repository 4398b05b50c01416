"""Mask builders: exact known-masks per preset, snapping, validation, and the no-leak property."""

from __future__ import annotations

import re

import pytest
import torch
from codec_helpers import PoolingCodec
from hypothesis import given, settings
from hypothesis import strategies as st

from skyreels_core import masks, memory
from skyreels_core.benchmark.instruments import TrackedTensorBytes
from skyreels_core.demo.bundle import video_codec
from skyreels_core.errors import InputError
from skyreels_core.references import fit_frames
from skyreels_core.shapes import MAX_FRAMES

CODEC = PoolingCodec()


def _clip(frames=17, size=32, seed=0):
    return torch.rand(frames, size, size, 3, generator=torch.Generator().manual_seed(seed))


def _known(condition):
    return condition.known_mask[0, 0].flatten(1).all(1).tolist()


def test_text_to_video_knows_nothing_and_encodes_nothing():
    condition = masks.text_to_video(CODEC, 17, 32, 48)
    assert condition.latents.shape == (1, 4, 5, 4, 6) and not condition.latents.any()
    assert not condition.known_mask.any() and condition.known_frames == []
    blank = masks.condition_from_pixels(  # what training conditions text to video on
        CODEC, torch.zeros(17, 32, 48, 3), torch.zeros(17, 32, 48, dtype=torch.bool)
    )
    assert torch.equal(condition.latents, blank.latents)
    assert torch.equal(condition.known_mask, blank.known_mask)
    # No pixels are built: a clip of the node's most frames at 2048 px asked for 51 GB of zeros.
    longest = masks.text_to_video(CODEC, MAX_FRAMES, 2048, 2048)
    assert longest.latents.shape == (1, 4, (MAX_FRAMES - 1) // 4 + 1, 256, 256)


def test_image_to_video_keeps_frame_zero():
    clip = _clip()
    condition = masks.image_to_video(CODEC, clip[:1], 17)
    assert _known(condition) == [True, False, False, False, False] and condition.known_frames == [0]
    video = torch.zeros_like(clip)
    video[0] = clip[0]
    assert torch.allclose(condition.latents, CODEC.encode(video[None]))  # unknown pixels are black


def test_extend_snaps_down_to_whole_latent_groups():
    condition = masks.extend_video(CODEC, _clip(), 17, known_frames=7)
    assert condition.known_frames == [0, 1, 2, 3, 4] and _known(condition) == [
        True,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(InputError, match="leaves nothing"):
        masks.extend_video(CODEC, _clip(), 17, known_frames=17)


def test_extend_keeps_the_whole_source_when_asked_for_more_frames_than_it_has():
    """Extend Video with known_frames above the source's length keeps all 9 source frames
    (already 1 + 4k) and generates the rest, instead of crashing on a shape mismatch."""
    clip = _clip()
    condition = masks.extend_video(CODEC, clip[:9], 17, known_frames=13)
    assert condition.known_frames == list(range(9))
    assert _known(condition) == [True, True, True, False, False]
    video = torch.zeros_like(clip)
    video[:9] = clip[:9]
    assert torch.allclose(condition.latents, CODEC.encode(video[None]))


def test_an_edit_mask_at_exactly_one_half_changes_nothing():
    """The host MASK is 1 where to change: a soft mask of 0.5 is not over the line, so the whole
    clip stays known (a feathered edge at 0.5 must not grow the edited region)."""
    clip = _clip()
    condition = masks.edit_video(CODEC, clip, torch.full((32, 32), 0.5))
    assert bool(condition.known_mask.all())
    nudged = torch.full((32, 32), 0.5)
    nudged[0, 0] = 0.5001
    assert not bool(masks.edit_video(CODEC, clip, nudged).known_mask.all())


def test_interpolation_holds_the_last_frame_over_its_group():
    clip = _clip()
    condition = masks.interpolate(CODEC, clip[0], clip[-1], 17)
    assert _known(condition) == [True, False, False, False, True]
    assert condition.known_frames == [0, 13, 14, 15, 16]
    # Clips for both ends (a script's IMAGE batches, as the node takes them): the render starts
    # on the first clip's first image and ends on the last clip's last, as the node's does.
    batches = masks.interpolate(CODEC, clip, clip, 17)
    assert torch.equal(batches.latents, condition.latents)


def test_keyframes_snap_to_their_latent_group():
    clip = _clip()
    condition = masks.keyframes(CODEC, {6: clip[6], 16: clip[16]}, 17)
    assert _known(condition) == [False, False, True, False, True]
    assert condition.known_frames == [5, 6, 7, 8, 13, 14, 15, 16]
    with pytest.raises(InputError, match="outside the clip"):
        masks.keyframes(CODEC, {17: clip[0]}, 17)


def test_edit_keeps_everything_outside_the_mask():
    clip = _clip()
    mask = torch.zeros(32, 32)
    mask[8:20, 8:16] = 1  # touches latent rows 1-2, column 1
    condition = masks.edit_video(CODEC, clip, mask)
    known = condition.known_mask[0, 0]
    assert not known[:, 1:3, 1].any() and known.sum() == 5 * (16 - 2)
    assert condition.known_frames == []
    kept = clip * (mask < 0.5)[None, ..., None]  # the pixels to change are encoded black
    assert torch.allclose(condition.latents, CODEC.encode(kept[None]))
    # Another pack's mask with a channel axis: it failed in expand, or was called a wrong size.
    for shape in [(1, 1, 32, 32), (1, 32, 32, 1)]:
        with pytest.raises(
            InputError, match=rf"^mask: shape {re.escape(str(shape))} is not a MASK"
        ):
            masks.edit_video(CODEC, clip, mask.reshape(shape))


def test_video_to_audio_keeps_the_whole_clip():
    clip = _clip()
    condition = masks.video_to_audio(CODEC, clip)
    assert condition.known_mask.all() and condition.known_frames == list(range(17))
    assert torch.equal(condition.latents, CODEC.encode(clip[None]))
    with pytest.raises(InputError, match="source: shape \\(32, 32, 3\\) is not a clip"):
        masks.video_to_audio(CODEC, clip[0])


def test_video_to_audio_takes_any_clip():
    """A 14-frame 40 x 24 clip: the model sees it at 48 x 32 (longest side 48, both on the 16 px
    grid), its last frame held to 17 frames; every frame known, so nothing is redrawn."""
    clip = torch.rand(14, 24, 40, 3, generator=torch.Generator().manual_seed(1))
    condition = masks.video_to_audio(CODEC, clip, longest_side=48)
    model_view = fit_frames(clip, 32, 48)
    expected = torch.cat([model_view, model_view[-1:].expand(3, -1, -1, -1)])
    assert torch.equal(condition.latents, CODEC.encode(expected[None]))
    assert condition.known_mask.all() and condition.known_frames == list(range(14))
    assert condition.clip_frames == 14  # what the decoders trim the 17 back to (the held
    # frames are no frames of the clip: the timeline listed 17 known frames of a 14-frame clip)
    same = masks.video_to_audio(CODEC, clip[:13, :16, :32])  # already fits: taken as it is
    assert torch.equal(same.latents, CODEC.encode(clip[None, :13, :16, :32]))


def test_video_to_audio_refuses_a_size_whose_encode_cannot_fit_in_ram(monkeypatch):
    """On a CPU host a clip resized to a large longest_side grew past RAM while it was encoded,
    and Linux's OOM killer ended ComfyUI with every queued render, without a message. The node
    now names longest_side, the RAM the encode needs at least and the RAM there is, before it
    resizes anything."""
    from skyreels_pack.nodes.masks import SkyReelsV4MaskVideoToAudio

    codec, source = video_codec(), torch.rand(5, 36, 64, 3)
    monkeypatch.setattr(memory, "available_ram", lambda: 2**29)
    with pytest.raises(InputError) as refused, TrackedTensorBytes() as tracked:
        SkyReelsV4MaskVideoToAudio().build(codec, source, 2048)
    needed = masks.BUILT_CLIP_COPIES * memory.clip_bytes(5, 1152, 2048)
    needed += memory.codec_ram_bytes(codec, "encode", 5, 1152, 2048)
    assert str(refused.value) == (
        f"longest_side: encoding 5 frames of 2048 x 1152 px on the CPU needs at least "
        f"{needed / 2**30:.1f} GiB of memory, and 0.5 GiB (RAM and free swap) is available. Fix: a smaller longest_side "
        "(the saved clip keeps its own size), fewer frames, or a machine with a GPU (the video "
        "VAE runs there)"
    )
    assert tracked.peak < 2**20  # the 2048 px clip (142 MB a copy) was never made


def test_video_to_audio_runs_when_the_ram_suffices_or_is_unknown(monkeypatch):
    """The boundary is the estimate itself: RAM of exactly that runs, one byte less is refused,
    and where the available RAM is unknown the check is skipped rather than refusing."""
    codec, clip = video_codec(), torch.rand(14, 24, 40, 3)
    expected = masks.video_to_audio(codec, clip, longest_side=48).latents
    needed = masks.BUILT_CLIP_COPIES * memory.clip_bytes(17, 32, 48)
    needed += memory.codec_ram_bytes(codec, "encode", 17, 32, 48)
    for available in (needed, None):
        monkeypatch.setattr(memory, "available_ram", lambda available=available: available)
        assert torch.equal(masks.video_to_audio(codec, clip, longest_side=48).latents, expected)
    monkeypatch.setattr(memory, "available_ram", lambda: needed - 1)
    with pytest.raises(InputError, match="^longest_side: encoding 17 frames of 48 x 32 px"):
        masks.video_to_audio(codec, clip, longest_side=48)


def test_video_to_audio_checks_the_ram_once_before_the_resize(monkeypatch):
    """The resized clip then encodes with the RAM it was checked for: a second check, as an edit
    of the resized clip made one, read the RAM its copies already took and could refuse it,
    naming the source and a resize, for what only longest_side sets."""
    codec, clip = video_codec(), torch.rand(14, 24, 40, 3)
    expected = masks.video_to_audio(codec, clip, longest_side=48).latents
    needed = masks.BUILT_CLIP_COPIES * memory.clip_bytes(17, 32, 48)
    needed += memory.codec_ram_bytes(codec, "encode", 17, 32, 48)
    readings = iter([needed, 0])
    monkeypatch.setattr(memory, "available_ram", lambda: next(readings))
    assert torch.equal(masks.video_to_audio(codec, clip, longest_side=48).latents, expected)


@pytest.mark.parametrize(
    "build, input_name",
    [
        (lambda codec, image: masks.image_to_video(codec, image, 17), "image"),
        (lambda codec, image: masks.keyframes(codec, {0: image, 16: image}, 17), "images"),
        (lambda codec, image: masks.extend_video(codec, image.expand(5, -1, -1, -1), 17, 5), "source"),
        (lambda codec, image: masks.edit_video(codec, image.expand(17, -1, -1, -1), image[..., 0]), "source"),
    ],
)  # fmt: skip
def test_every_builder_that_encodes_a_clip_refuses_one_past_ram_first(
    monkeypatch, build, input_name
):
    """Image to Video, Keyframes, Extend (and Continue Clip) build a blank clip of the frames
    widget's length at the image's size, and an edit encodes its source whole: each is checked
    like Video to Audio, before the clip or its masked copy is made."""
    codec, image = video_codec(), torch.zeros(1, 1, 1, 3).expand(1, 1024, 1024, 3)
    monkeypatch.setattr(memory, "available_ram", lambda: 2**27)
    with pytest.raises(InputError) as refused, TrackedTensorBytes() as tracked:
        build(codec, image)
    assert str(refused.value).startswith(
        f"{input_name}: encoding 17 frames of 1024 x 1024 px on the CPU needs at least"
    )
    assert f"Fix: a smaller {input_name}" in str(refused.value)
    assert tracked.peak < 2**21  # an edit's 1 MB change mask at most, never a 214 MB clip


def test_a_clip_reference_past_ram_is_refused_before_it_is_resized(monkeypatch):
    """Clip Reference encodes the whole clip at the render's width and height: checked as the
    mask builders are, naming the clip."""
    from skyreels_core.references import clip_reference

    codec, clip = video_codec(), torch.zeros(1, 1, 1, 3).expand(17, 64, 64, 3)
    monkeypatch.setattr(memory, "available_ram", lambda: 2**27)
    with pytest.raises(InputError) as refused, TrackedTensorBytes() as tracked:
        clip_reference(codec, clip, 1024, 1024)
    assert str(refused.value).startswith(
        "clip: encoding 17 frames of 1024 x 1024 px on the CPU needs at least"
    )
    assert "Fix: a shorter clip or a smaller width and height" in str(refused.value)
    assert tracked.peak < 2**20
    monkeypatch.setattr(memory, "available_ram", lambda: None)
    assert clip_reference(codec, clip, 32, 32).video.shape[2] == 5


def test_keep_video_keeps_the_latents_as_they_are():
    latents = torch.randn(1, 4, 5, 4, 6)
    condition = masks.keep_video(latents, 24.0, clip_frames=14)
    assert torch.equal(condition.latents, latents) and condition.latents is not latents
    assert condition.known_mask.shape == (1, 1, 5, 4, 6) and condition.known_mask.all()
    assert condition.known_frames == list(range(14)) and condition.clip_frames == 14
    assert condition.fps == 24.0
    assert masks.keep_video(latents, 16.0).known_frames == list(range(17))
    with pytest.raises(InputError, match="^av_latent: video latents of shape \\(4, 5\\)"):
        masks.keep_video(torch.zeros(4, 5), 16.0)


def test_validation_names_input_and_fix():
    with pytest.raises(InputError, match="use 17 or 21 frames"):
        masks.text_to_video(CODEC, 18, 32, 32)
    with pytest.raises(InputError, match="multiple of 16"):
        masks.text_to_video(CODEC, 17, 40, 32)
    with pytest.raises(
        InputError, match=r"^height: 8 px is not a multiple of 16. Fix: use 16 or 32"
    ):
        masks.text_to_video(CODEC, 17, 8, 32)  # below one multiple: the smallest two
    with pytest.raises(InputError, match="differs from the video"):
        masks.edit_video(CODEC, _clip(), torch.zeros(16, 16))
    with pytest.raises(InputError, match="give 1 or 17 masks"):
        masks.edit_video(CODEC, _clip(), torch.zeros(3, 32, 32))
    with pytest.raises(InputError, match="^source: 16 frames is not 4k\\+1. Fix: use 13 or 17"):
        masks.edit_video(CODEC, _clip(frames=16), torch.zeros(32, 32))


@settings(max_examples=300, deadline=None)
@given(
    frames=st.sampled_from([1, 5, 9]),
    blocks=st.tuples(st.integers(2, 4), st.integers(2, 4)),
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0.0, 1.0),
)
def test_a_cell_is_never_known_when_any_pixel_under_it_is_unknown(frames, blocks, seed, density):
    generator = torch.Generator().manual_seed(seed)
    height, width = 8 * blocks[0], 8 * blocks[1]
    pixel_known = torch.rand(frames, height, width, generator=generator) < density
    # Whole latent groups known sometimes, so that True cells occur too.
    pixel_known |= torch.rand(frames, 1, 1, generator=generator) < density / 2
    known = masks.latent_known_mask(pixel_known)
    for latent in range(known.shape[0]):
        group = [0] if latent == 0 else list(range(4 * latent - 3, 4 * latent + 1))
        for row in range(known.shape[1]):
            for col in range(known.shape[2]):
                under = pixel_known[group, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8]
                assert bool(known[latent, row, col]) == bool(under.all())


@pytest.mark.parametrize("channels", [1, 4])
def test_rgba_and_grey_images_condition_as_their_colour(channels):
    """RGBA (the host's Join Image with Alpha) and grey IMAGEs reach every encoder as RGB: alpha
    dropped, grey repeated, in edits, references, the text encoder's images and saved MP4s."""
    from skyreels_core.encoder import _to_pil
    from skyreels_core.references import clip_reference

    rgb = torch.rand(9, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    if channels == 4:
        given, colour = torch.cat([rgb, torch.rand(9, 16, 16, 1)], dim=-1), rgb
    else:
        given, colour = rgb[..., :1], rgb[..., :1].expand(-1, -1, -1, 3)
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12] = 1
    edited, expected = (masks.edit_video(CODEC, clip, mask) for clip in (given, colour))
    assert torch.equal(edited.latents, expected.latents)
    made, expected = (clip_reference(CODEC, clip, 16, 16) for clip in (given, colour))
    assert torch.equal(made.video, expected.video)
    assert _to_pil(given[0], "images").tobytes() == _to_pil(colour[0], "images").tobytes()


def test_an_image_of_two_channels_is_refused_by_its_input_name():
    from skyreels_core.references import image_references

    with pytest.raises(InputError, match="^grid: 2 colour channels"):
        image_references(CODEC, [torch.rand(16, 16, 2)], 16, 16, "grid")


def test_keyframe_images_pair_with_the_frames_in_the_order_typed():
    """ "32, 0" with red then blue puts red at frame 32; two keyframes in one latent group (one
    image held over it) and a frame typed twice are refused by name."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["SkyReelsV4MaskKeyframes"]()
    red, blue = (torch.zeros(1, 16, 16, 3).index_fill_(-1, torch.tensor([c]), 1.0) for c in (0, 2))

    def latents(images, indices):
        return node.build(CODEC, torch.cat(images), indices, 33)["result"][0].latents

    assert torch.equal(latents([red, blue], "32, 0"), latents([blue, red], "0, 32"))
    assert not torch.equal(latents([red, blue], "32, 0"), latents([red, blue], "0, 32"))
    assert torch.equal(latents([red, blue], "-1, 0"), latents([red, blue], "32, 0"))
    # the latent frames come back in the order typed, to stay paired with their images
    assert masks.keyframe_latent_frames([32, 0, 6]) == [8, 0, 2]
    with pytest.raises(InputError, match="^keyframe_indices: frames 14 and 16 fall in one latent"):
        latents([red, blue], "14, 16")
    with pytest.raises(InputError, match="^keyframe_indices: a frame typed twice"):
        latents([red, blue], "0, 0")


def test_first_last_frame_refuses_a_clip_with_nothing_between_its_ends():
    """The last image is held over its whole latent group: at 5 frames it fills frames 1-4, so
    nothing is left to generate, and at 1 frame it would replace the first. Both are refused by
    frames; 9 (the first, one generated group, the last's group) is the shortest taken."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["SkyReelsV4MaskInterpolate"]()
    first, last = torch.zeros(1, 16, 16, 3), torch.ones(1, 16, 16, 3)
    for frames in (1, 5):
        with pytest.raises(InputError) as error:
            node.build(CODEC, first, last, frames)
        assert error.value.input_name == "frames" and error.value.fix == "use 9 frames or more"
    output = node.build(CODEC, first, last, 9)
    assert output["ui"]["skyreels_timeline"][0]["known_frames"] == [0, 5, 6, 7, 8]
    assert _known(output["result"][0]) == [True, False, True]


def test_extend_keeps_at_most_the_source_and_its_timeline_says_so():
    """known_frames past the source's length keeps the whole source (the widget reaches 1025
    whatever the clip): the timeline shows the 9 frames kept beside the 64 asked for."""
    from skyreels_pack import NODE_CLASS_MAPPINGS as NODES

    out = NODES["SkyReelsV4MaskExtend"]().build(CODEC, _clip(9), 17, 64)
    (timeline,) = out["ui"]["skyreels_timeline"]
    assert timeline["known_frames"] == list(range(9)) and len(timeline["requested_frames"]) == 17
    assert out["result"][0].known_frames == list(range(9))


def test_mask_nodes_name_their_own_inputs():
    """Each mask node's refusals name an input it has: the image whose size is off the 16 px
    grid (Text to Video's height widget), Continue Clip's overlap for a window it would fill, and
    Extend's frames where even one kept frame leaves nothing to generate."""
    from skyreels_pack import NODE_CLASS_MAPPINGS as NODES

    off_grid = torch.rand(9, 40, 40, 3)
    cases = {
        "image height": lambda: NODES["SkyReelsV4MaskI2V"]().build(CODEC, off_grid[:1], 17),
        "first height": lambda: NODES["SkyReelsV4MaskInterpolate"]().build(
            CODEC, off_grid[:1], off_grid[:1], 17
        ),
        "images height": lambda: NODES["SkyReelsV4MaskKeyframes"]().build(
            CODEC, off_grid[:2], "0, 16", 17
        ),
        "images": lambda: NODES["SkyReelsV4MaskKeyframes"]().build(
            CODEC, torch.rand(2, 16, 16, 2), "0, 16", 17
        ),
        "source height": lambda: NODES["SkyReelsV4MaskExtend"]().build(CODEC, off_grid, 17, 5),
        "source height ": lambda: NODES["SkyReelsV4MaskEdit"]().build(
            CODEC, torch.rand(17, 40, 40, 3), torch.zeros(1, 40, 40)
        ),
        "clip height": lambda: NODES["SkyReelsV4MaskContinue"]().build(CODEC, off_grid, 17, 5),
        "overlap": lambda: NODES["SkyReelsV4MaskContinue"]().build(CODEC, _clip(9), 5, 5),
        "known_frames": lambda: NODES["SkyReelsV4MaskExtend"]().build(CODEC, _clip(9), 5, 5),
        "frames": lambda: NODES["SkyReelsV4MaskExtend"]().build(CODEC, _clip(9), 1, 1),
        "height": lambda: NODES["SkyReelsV4MaskT2V"]().build(CODEC, 32, 40, 17),
    }
    for input_name, build in cases.items():
        with pytest.raises(InputError) as error:
            build()
        assert error.value.input_name == input_name.strip(), str(error.value)
        assert "fewer than 1 " not in error.value.fix


def test_keep_video_node_keeps_a_take_s_clip_length():
    """Rerolling the sound of a 30-frame Video to Audio take (its latents padded to 33 frames)
    keeps 30 frames: a condition without clip_frames would render and list 33."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    from skyreels_core.types import AVLatent

    take = AVLatent(video=torch.randn(1, 4, 9, 2, 2), fps=16.0, clip_frames=30)
    out = NODE_CLASS_MAPPINGS["SkyReelsV4MaskKeepVideo"]().build(take)
    condition = out["result"][0]
    assert condition.clip_frames == 30 and condition.known_frames == list(range(30))
    assert torch.equal(condition.latents, take.video) and condition.fps == 16.0


def test_image_to_video_node_keeps_the_first_image_of_a_batch():
    """Of a batch of two images (grey 0.1, then 0.9) the first is the first frame, not the last."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    images = torch.stack([torch.full((32, 32, 3), 0.1), torch.full((32, 32, 3), 0.9)])
    condition = NODE_CLASS_MAPPINGS["SkyReelsV4MaskI2V"]().build(CODEC, images, 5)["result"][0]
    assert torch.equal(condition.latents, masks.image_to_video(CODEC, images[:1], 5).latents)
    first = CODEC.decode(condition.latents)[0, 0]
    assert abs(float(first.mean()) - 0.1) < 1e-4


def test_mask_node_timelines_show_the_frames_asked_for_kept_and_the_latent_count():
    """The frontend's timeline is all an artist sees of what a mask node asked for and kept: a
    timeline that dropped Image to Video's frame 0, listed First-Last's last frame past the
    clip, showed an edit asking for nothing or Continue Clip's 64-frame overlap on a 17-frame
    window, or counted pixel frames as latent frames would misdraw it."""
    from skyreels_pack import NODE_CLASS_MAPPINGS as NODES

    def timeline(output):
        (drawn,) = output["ui"]["skyreels_timeline"]
        return drawn

    image, clip = _clip(1), _clip(9)
    assert timeline(NODES["SkyReelsV4MaskI2V"]().build(CODEC, image, 9)) == {
        "frames": 9, "known_frames": [0], "requested_frames": [0], "latent_frames": 3
    }  # fmt: skip
    assert timeline(NODES["SkyReelsV4MaskInterpolate"]().build(CODEC, image, image, 9)) == {
        "frames": 9, "known_frames": [0, 5, 6, 7, 8], "requested_frames": [0, 8],
        "latent_frames": 3,
    }  # fmt: skip
    change = torch.zeros(9, 32, 32)
    change[5:] = 1
    edit = timeline(NODES["SkyReelsV4MaskEdit"]().build(CODEC, clip, change))
    assert edit["known_frames"] == edit["requested_frames"] == [0, 1, 2, 3, 4]
    window = NODES["SkyReelsV4MaskContinue"]().build(CODEC, clip, 17, 64)
    assert timeline(window) == {
        "frames": 17, "known_frames": list(range(9)), "requested_frames": list(range(17)),
        "latent_frames": 5,
    }  # fmt: skip
    assert window["result"][1] == 9


def test_keyframe_images_of_the_wrong_count_are_refused_by_the_images_input():
    """Three images for two typed frames, or ten for a nine-frame clip, is the images input's
    fault: naming keyframe_indices would send the artist to the wrong widget, and reading ten
    images as a clip would take frames from a clip of another length."""
    from skyreels_pack import NODE_CLASS_MAPPINGS as NODES

    with pytest.raises(InputError) as error:
        NODES["SkyReelsV4MaskKeyframes"]().build(CODEC, _clip(3), "0, 8", 9)
    assert str(error.value) == (
        "images: 3 images for 2 keyframe indices. Fix: give one image per index in the order "
        "typed, or a whole clip of 9 frames"
    )
    with pytest.raises(InputError, match=r"^images: 10 images for 2 keyframe indices\."):
        NODES["SkyReelsV4MaskKeyframes"]().build(CODEC, _clip(10), "0, 8", 9)  # not a 9-frame clip


@pytest.mark.parametrize(
    ("build", "input_name", "message"),
    [
        (lambda: masks.keyframes(CODEC, {}, 17), "keyframes", "no keyframe given"),
        (
            lambda: masks.keyframes(CODEC, {0: _clip(1)[0], 8: _clip(1, 16)[0]}, 17),
            "images",
            "keyframe 8's size (16, 16) differs",
        ),
        (
            lambda: masks.interpolate(CODEC, _clip(1)[0], _clip(1, 16)[0], 17),
            "last",
            "size (16, 16) differs from the first frame's (32, 32)",
        ),
        (
            lambda: masks.image_to_video(CODEC, torch.rand(32, 32), 17),
            "image",
            "shape (32, 32) is not an image",
        ),
        (lambda: masks.extend_video(CODEC, _clip(), 17, 0), "known_frames", "0 frames"),
        (
            lambda: masks.condition_from_pixels(
                CODEC, _clip(), torch.ones(17, 16, 16, dtype=torch.bool), "source"
            ),
            "mask",
            "does not match video",
        ),
    ],
)
def test_inputs_that_cannot_make_a_condition_are_named(build, input_name, message):
    with pytest.raises(InputError) as refused:
        build()
    assert refused.value.input_name == input_name and message in str(refused.value)


def test_an_empty_reference_sound_is_named():
    from skyreels_core.demo.bundle import audio_codec
    from skyreels_core.references import audio_reference

    with pytest.raises(InputError, match="the reference sound is empty") as refused:
        audio_reference(audio_codec(), torch.zeros(1, 0), 16000)
    assert refused.value.input_name == "audio"
