"""Long clips from windows: the next window keeps the last frames, and the join cross-fades
frames and sound exactly where the two overlap."""

from __future__ import annotations

import pytest
import torch
from codec_helpers import PoolingCodec
from skyreels_pack import NODE_CLASS_MAPPINGS

from skyreels_core import masks
from skyreels_core.errors import InputError
from skyreels_core.joining import (
    continue_clip,
    extend_to_length,
    join_audio,
    join_clips,
    join_frames,
    window_count,
)

CODEC = PoolingCodec()


def _clip(frames: int, value: float | None = None, seed: int = 0) -> torch.Tensor:
    if value is not None:
        return torch.full((frames, 16, 16, 3), value)
    return torch.rand(frames, 16, 16, 3, generator=torch.Generator().manual_seed(seed))


def test_the_next_window_starts_with_the_clips_last_frames_snapped_to_whole_groups():
    clip = _clip(21)
    condition = continue_clip(CODEC, clip, 17, overlap=7)  # 7 snaps down to 5 = 1 + 4
    expected = masks.extend_video(CODEC, clip[16:], 17, known_frames=5)
    assert condition.known_frames == [0, 1, 2, 3, 4]
    assert torch.equal(condition.latents, expected.latents)
    assert torch.equal(condition.known_mask, expected.known_mask)
    with pytest.raises(InputError, match="^overlap: 0 frames"):
        continue_clip(CODEC, clip, 17, overlap=0)
    with pytest.raises(InputError, match="leaves nothing"):
        continue_clip(CODEC, clip, 17, overlap=17)


def test_frames_cross_fade_linearly_over_the_overlap():
    first, second = _clip(9, 0.0), _clip(7, 1.0)
    joined = join_frames(first, second, 3)
    assert joined.shape == (9 + 7 - 3, 16, 16, 3)
    levels = joined[:, 0, 0, 0].tolist()
    assert levels == pytest.approx([0.0] * 6 + [0.25, 0.5, 0.75] + [1.0] * 4)
    assert torch.equal(join_frames(first, second, 0), torch.cat([first, second]))
    with pytest.raises(InputError, match="^overlap: 10 frames"):
        join_frames(first, second, 10)
    with pytest.raises(InputError, match="^frames_b: frames of"):
        join_frames(first, torch.zeros(7, 8, 16, 3), 3)


def test_sound_cross_fades_from_where_the_second_window_starts():
    rate = 1000
    first = {"waveform": torch.ones(1, 1, 2000), "sample_rate": rate}  # 2 s
    second = {"waveform": torch.zeros(1, 1, 1500), "sample_rate": rate}
    joined = join_audio(first, second, start_seconds=1.5, fade_seconds=0.5)
    wave = joined["waveform"][0, 0]
    assert joined["sample_rate"] == rate and wave.shape[0] == 1500 + 1500
    assert torch.equal(wave[:1500], torch.ones(1500))
    fade = wave[1500:2000]
    assert fade[0] > 0.99 and fade[-1] < 0.01 and (fade[1:] < fade[:-1]).all()  # falls linearly
    assert torch.equal(wave[2000:], torch.zeros(1000))
    # A first sound shorter than where the second starts: silence until it does.
    short = join_audio({"waveform": torch.ones(1, 1, 500), "sample_rate": rate}, second, 1.0, 0.5)
    assert short["waveform"].shape[-1] == 1000 + 1500
    assert short["waveform"][0, 0, 500:1000].abs().max() == 0


def test_a_second_sound_at_another_rate_or_layout_is_converted_to_the_first():
    first = {"waveform": torch.zeros(1, 2, 16000), "sample_rate": 16000}
    tone = torch.sin(torch.arange(44100) / 44100 * 2 * torch.pi * 440)[None, None]
    joined = join_audio(first, {"waveform": tone, "sample_rate": 44100}, 1.0, 0.0)
    assert joined["sample_rate"] == 16000 and joined["waveform"].shape[:2] == (1, 2)
    assert abs(joined["waveform"].shape[-1] - 32000) <= 16  # the resampler's edge
    spectrum = torch.fft.rfft(joined["waveform"][0, 0, 16000:32000]).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # still 440 Hz
    nine = {"waveform": torch.zeros(1, 9, 16000), "sample_rate": 16000}
    with pytest.raises(InputError, match="^audio_a: 9 channels"):  # it said "audio"
        join_audio(nine, first, 1.0, 0.0)


def test_a_window_sound_made_at_another_rate_is_named_and_a_long_track_joins():
    """long_video's second Sampler had its own fps widget: at 24 fps its window's sound lasted
    33 / 24 s under frames joined at 16, laid in out of step without a word. A clip's own track
    a little longer than its frames (a camera's) still joins."""
    frames, rate = _clip(33), 16000
    made_at = {fps: {"waveform": torch.zeros(1, 1, round(33 / fps * rate)), "sample_rate": rate}
               for fps in (16, 24, 1)}  # fmt: skip
    with pytest.raises(
        InputError,
        match=r"^audio_b: 1\.38 s of sound for 33 frames, which last 2\.06 s at 16 fps\. "
        "Fix: render both clips at this fps",
    ):
        join_clips(frames, frames, 5, 16.0, made_at[16], made_at[24])
    with pytest.raises(InputError, match=r"^audio_a: 33\.00 s of sound for 33 frames"):
        join_clips(frames, frames, 5, 16.0, made_at[1], made_at[16])
    camera = {"waveform": torch.zeros(1, 1, round(33 / 16 * rate * 1.08)), "sample_rate": rate}
    joined, sound = join_clips(frames, frames, 5, 16.0, camera, made_at[16])
    assert joined.shape[0] == 61 and sound["waveform"].shape[-1] == round(61 / 16 * rate)


def test_a_sound_may_miss_its_frames_by_a_tenth_or_two_frames_whichever_is_more():
    """The tolerance of a clip's sound against its frames: a tenth of their length for a long
    clip (33 frames at 16 fps last 2.06 s: 8 % over joins, 15 % over is named), two frames for
    a short one (5 frames last 0.31 s: 0.1 s over joins, 0.15 s over is named). Looser, and a
    window made at another fps slips in out of step; tighter, and a camera's track is refused."""
    rate, fps = 16000, 16.0

    def sound(seconds: float) -> dict:
        return {"waveform": torch.zeros(1, 1, round(seconds * rate)), "sample_rate": rate}

    for frames, fits, misses in ((33, 33 / fps * 1.08, 33 / fps * 1.15), (5, 0.4125, 0.4625)):
        clip, own = _clip(frames), sound(frames / fps)
        joined, _ = join_clips(clip, clip, 1, fps, own, sound(fits))
        assert joined.shape[0] == 2 * frames - 1
        with pytest.raises(InputError, match=f"^audio_b: {misses:.2f} s of sound for {frames}"):
            join_clips(clip, clip, 1, fps, own, sound(misses))


def test_the_sound_fades_over_exactly_the_shared_frames():
    """Join Clips lays the second sound in where its frames start (28 of 33 frames kept 5, at
    16 fps: 1.75 s) and fades over those 5 frames' 0.3125 s, not more or less, with the same
    linear ramp as the frames, rounded to the nearest sample."""
    rate, fps = 16000, 16.0
    first = {"waveform": torch.ones(1, 1, 33 * 1000), "sample_rate": rate}
    second = {"waveform": torch.zeros(1, 1, 33 * 1000), "sample_rate": rate}
    _, audio = join_clips(_clip(33), _clip(33), 5, fps, first, second)
    wave = audio["waveform"][0, 0]
    assert wave.shape[0] == 28 * 1000 + 33 * 1000
    assert wave[:28000].eq(1).all() and wave[33000:].eq(0).all()
    ramp = 1 - torch.arange(1, 5001) / 5001
    torch.testing.assert_close(wave[28000:33000], ramp, rtol=0, atol=1e-6)
    # At 24 fps a frame is 666.7 samples: the fade takes the nearest whole count, 667.
    one_frame = join_audio(first, second, start_seconds=0.5, fade_seconds=1 / 24)["waveform"]
    assert one_frame[0, 0, 8000 + 666] > 0 and one_frame[0, 0, 8000 + 667] == 0


def test_the_nodes_hand_the_kept_count_to_the_join():
    continue_node = NODE_CLASS_MAPPINGS["SkyReelsV4MaskContinue"]()
    join = NODE_CLASS_MAPPINGS["SkyReelsV4JoinClips"]()
    clip = _clip(33, seed=1)
    output = continue_node.build(CODEC, clip, 33, 7)
    condition, overlap = output["result"]
    assert overlap == 5 and condition.known_frames == [0, 1, 2, 3, 4]
    assert output["ui"]["skyreels_timeline"][0]["requested_frames"] == list(range(7))
    second = torch.cat([clip[-5:], _clip(28, seed=2)])
    sound = {"waveform": torch.rand(1, 1, 33 * 1000), "sample_rate": 16000}
    frames, audio = join.join(clip, second, overlap, 16.0, audio_a=sound, audio_b=sound)
    assert frames.shape[0] == 33 + 33 - 5
    assert torch.allclose(frames[28:33], clip[28:])  # the shared frames agree: the fade keeps them
    assert audio["waveform"].shape[-1] == round(28 / 16 * 16000) + 33 * 1000
    # A video-only model's windows join without sound; one sound alone is named.
    silent, none = join.join(clip, second, overlap, 16.0)
    assert none is None and torch.equal(silent, frames)
    with pytest.raises(
        InputError, match="^audio_b: no sound \\(not connected, or a clip without a sound"
    ):
        join.join(clip, second, overlap, 16.0, audio_a=sound)


def test_a_clip_is_extended_window_by_window_to_exactly_its_length():
    """Each window starts with the clip so far's last frames (7 snapped to 5) and is joined on
    where they overlap; the last window's surplus is cut, frames and sound alike."""
    clip, rate, fps = _clip(33, seed=1), 16000, 16.0
    sound = {"waveform": torch.rand(1, 1, round(33 / fps * rate)), "sample_rate": rate}
    seen = []

    def render_window(condition, number, first_frame):
        kept = len(condition.known_frames)
        seen.append((number, kept, condition.latents.clone(), first_frame))
        new = _clip(33 - kept, value=number / 10)  # each window its own grey
        window = torch.cat([clip[-kept:], new])  # known frames of some kind, then new ones
        return window, {
            "waveform": torch.full((1, 1, round(33 / fps * rate)), float(number)),
            "sample_rate": rate,
        }

    assert window_count(CODEC, 33, 80, 33, 7) == 2
    frames, audio = extend_to_length(CODEC, clip, sound, fps, 80, 33, 7, render_window)
    assert [(number, kept, first) for number, kept, _, first in seen] == [(1, 5, 28), (2, 5, 56)]
    assert frames.shape == (80, 16, 16, 3) and audio["waveform"].shape[-1] == 80 * 1000
    # the cut frames are freed: a view held them in the host's cache (89 frames for 80)
    assert frames.untyped_storage().nbytes() == frames.numel() * frames.element_size()
    assert torch.equal(frames[:28], clip[:28])  # the clip itself is kept up to its overlap
    assert torch.allclose(frames[33:56], torch.full_like(frames[33:56], 0.1))  # window 1's own
    assert torch.allclose(frames[61:], torch.full_like(frames[61:], 0.2))  # window 2's, cut
    assert torch.equal(seen[0][2], continue_clip(CODEC, clip, 33, 7).latents)
    assert continue_clip(CODEC, clip, 33, 7).story_start == 28  # where a story goes on
    assert audio["waveform"][0, 0, 62 * 1000 :].eq(2.0).all()  # the last window's sound


def test_extending_names_a_length_already_reached_and_a_missing_sound():
    clip = _clip(33, seed=1)
    silent_window = lambda condition, number, first_frame: (_clip(33, seed=number), None)  # noqa: E731
    with pytest.raises(InputError, match="^total_frames: 33 frames for a clip that already has 33"):
        extend_to_length(CODEC, clip, None, 16.0, 33, 33, 5, silent_window)
    sound = {"waveform": torch.zeros(1, 1, 33000), "sample_rate": 16000}
    with pytest.raises(InputError, match="^audio: the clip has a sound but the model makes none"):
        extend_to_length(CODEC, clip, sound, 16.0, 61, 33, 5, silent_window)
    frames, audio = extend_to_length(CODEC, clip, None, 16.0, 61, 33, 5, silent_window)
    assert frames.shape[0] == 61 and audio is None  # a video-only model's clip
    with pytest.raises(InputError, match="^window_frames: 34 frames is not 4k\\+1"):
        extend_to_length(CODEC, clip, None, 16.0, 61, 34, 5, silent_window)
    with pytest.raises(InputError, match="^overlap: 9 frames kept of 9-frame windows"):
        extend_to_length(CODEC, clip, None, 16.0, 61, 9, 11, silent_window)
    # A clip shorter than the overlap keeps fewer frames in the first window only: the check is
    # for the windows after it, before any renders (it failed after the first).
    never = lambda condition, number, first_frame: pytest.fail("rendered a window")  # noqa: E731
    with pytest.raises(InputError, match="^overlap: 9 frames kept of 9-frame windows"):
        extend_to_length(CODEC, clip[:5], None, 16.0, 61, 9, 9, never)


def test_every_window_draws_its_own_seed(monkeypatch):
    """One seed for every window drew the same noise, and the windows' sounds looped."""
    from skyreels_core import render
    from skyreels_core.render import Pipeline, RenderRequest, render_longer

    seeds = []

    def window(pipeline, request, condition, references, hooks=None):
        seeds.append(request.seed)
        return _clip(request.frames, value=0.5, seed=request.seed), None

    monkeypatch.setattr(render, "render_condition", window)
    request = RenderRequest(prompt="a red circle", seed=2**63 - 2, frames=17)
    frames, _ = render_longer(Pipeline.load(), request, _clip(17), None, 61)
    assert frames.shape[0] == 61 and seeds == [2**63 - 1, 0, 1, 2]


def test_every_window_of_a_reference_render_keeps_its_reference(monkeypatch):
    """demo --task ref --total-frames: each window after the first is rendered with the
    request's reference image too, not only the first, or the subject would drift off it."""
    from skyreels_core import render
    from skyreels_core.render import Pipeline, RenderRequest, render_longer

    seen = []

    def window(pipeline, request, condition, references, hooks=None):
        seen.append(references)
        return _clip(request.frames, value=0.5), None

    monkeypatch.setattr(render, "render_condition", window)
    pipeline = Pipeline.load()
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    request = RenderRequest(task="ref", prompt="a red circle", frames=17, source=image)
    render_longer(pipeline, request, _clip(17), None, 61)
    expected = render.build_condition(pipeline.video_codec, request)[1].video
    assert len(seen) == 4 and all(torch.equal(r.video, expected) for r in seen)


def test_extend_to_length_names_a_missing_sound_before_rendering():
    from types import SimpleNamespace

    node = NODE_CLASS_MAPPINGS["SkyReelsV4ExtendToLength"]()
    with pytest.raises(InputError, match="^audio: the clip has no sound but the model makes one"):
        node.extend(SimpleNamespace(has_audio=True), None, CODEC, None, _clip(33), 16.0, 61, 33, 5)
    sound = {"waveform": torch.zeros(1, 1, 33000), "sample_rate": 16000}
    with pytest.raises(InputError, match="^audio: the clip has a sound but the model makes none"):
        node.extend(
            SimpleNamespace(has_audio=False), None, CODEC, None, _clip(33), 16.0, 61, 33, 5, sound
        )
    spec = NODE_CLASS_MAPPINGS["SkyReelsV4Sampler"].INPUT_TYPES()["required"]
    required = type(node).INPUT_TYPES()["required"]
    assert all(required[name] == spec[name] for name in ("seed", "steps", "solver"))


def test_rgba_clips_join_and_extend_as_their_colour_and_bad_clips_stop_before_a_window():
    """RGBA frames (the host's Join Image with Alpha) join and extend as their RGB; a size the
    model cannot take or a batch of sounds is named before the first window renders."""
    clip = _clip(33, seed=1)
    rgba = torch.cat([clip, torch.ones(33, 16, 16, 1)], dim=-1)
    assert torch.equal(join_frames(rgba, clip, 5), join_frames(clip, clip, 5))
    rendered = []

    def render_window(condition, number, first_frame):
        rendered.append(number)
        return _clip(33, seed=number), None

    made, _ = extend_to_length(CODEC, rgba, None, 16.0, 61, 33, 5, render_window)
    assert torch.equal(made, extend_to_length(CODEC, clip, None, 16.0, 61, 33, 5, render_window)[0])
    rendered.clear()
    with pytest.raises(InputError, match="^frames height: 24 px is not a multiple of 16"):
        extend_to_length(CODEC, _clip(33)[:, :12].repeat(1, 2, 1, 1), None, 16.0, 61, 33, 5,
                         render_window)  # fmt: skip
    sounds = {"waveform": torch.zeros(2, 1, 33000), "sample_rate": 16000}
    with pytest.raises(InputError, match="^audio: a batch of 2 sounds for one clip"):
        extend_to_length(CODEC, clip, sounds, 16.0, 61, 33, 5, render_window)
    assert rendered == []


def test_the_extended_sound_lasts_exactly_as_long_as_the_frames():
    """Windows' sounds end on whole audio tokens, a little short of their frames: the last one is
    padded with silence to the clip's exact length."""
    rate, fps = 16000, 16.0
    short = round(33 / fps * rate) - 300

    def render_window(condition, number, first_frame):
        sound = {"waveform": torch.ones(1, 1, short), "sample_rate": rate}
        return _clip(33, seed=number), sound

    sound = {"waveform": torch.ones(1, 1, short), "sample_rate": rate}
    _, audio = extend_to_length(CODEC, _clip(33), sound, fps, 61, 33, 5, render_window)
    assert audio["waveform"].shape[-1] == 61 * 1000
    assert audio["waveform"][..., -300:].abs().max() == 0


@pytest.mark.parametrize(
    ("clip_frames", "total", "window", "overlap"),
    [(17, 100, 17, 6), (17, 100, 17, 5), (33, 200, 33, 10), (5, 61, 17, 9)],
)
def test_the_window_count_is_the_number_of_windows_rendered(clip_frames, total, window, overlap):
    """The progress bar's length, known before the first window: it must count windows as the
    extension grows them, by window - kept frames with the overlap snapped to 1 + 4k (6 keeps
    5), or the bar ends early or never fills."""
    calls = []

    def render_window(condition, number, first_frame):
        calls.append(number)
        return _clip(window, value=number / 10), None

    expected = window_count(CODEC, clip_frames, total, window, overlap)
    frames, _ = extend_to_length(
        CODEC, _clip(clip_frames, seed=1), None, 16.0, total, window, overlap, render_window
    )
    assert frames.shape[0] == total
    assert calls == list(range(1, expected + 1))


def test_each_window_reads_its_own_part_of_a_negative_story(monkeypatch):
    """A negative multi-shot prompt written for the whole clip is a story too: each window of
    Extend to Length gets the shots of the frames it covers, as the positive prompt does. Passed
    whole, every window would read the story's opening shots and the later windows be steered
    away from the wrong things."""
    from types import SimpleNamespace

    from skyreels_pack.nodes import clips

    from skyreels_core.types import TextEncoding

    features, mask = torch.zeros(1, 5, 8), torch.ones(1, 5, dtype=torch.bool)
    text = TextEncoding(features, mask, [(0, 3, 0, 8), (3, 5, 8, 23)])  # 89 frames: 23 latents
    negative = TextEncoding(features, mask, [(0, 2, 0, 12), (2, 4, 12, 23)])
    seen = []

    def sample(self, model, prompt, condition, **settings):
        seen.append((prompt.shot_ranges, settings["negative"].shot_ranges))
        return {"result": (SimpleNamespace(audio=None),)}

    monkeypatch.setattr(clips.SkyReelsV4Sampler, "sample", sample)
    monkeypatch.setattr(clips.SkyReelsV4DecodeVideo, "decode", lambda *_: (_clip(33, 0.5),))
    model = SimpleNamespace(
        has_audio=False, module=SimpleNamespace(config=SimpleNamespace(video_latent_channels=4))
    )
    node = NODE_CLASS_MAPPINGS["SkyReelsV4ExtendToLength"]()
    frames, sound = node.extend(
        model, text, CODEC, None, _clip(33), 16.0, 89, 33, 5, seed=0, steps=2, negative=negative
    )
    assert frames.shape[0] == 89 and sound is None
    # Windows start at frames 28 and 56: story latents 7-15, then 14-22.
    assert seen == [
        ([(0, 3, 0, 1), (3, 5, 1, 9)], [(0, 2, 0, 5), (2, 4, 5, 9)]),
        ([(3, 5, 0, 9)], [(2, 4, 0, 9)]),
    ]


def test_extend_to_length_draws_each_window_from_its_own_seed(monkeypatch):
    """Window n renders at seed + n (wrapping past the largest seed): one seed for every window
    drew the same noise each time, and the sound of each window came back as a near copy of the
    last, an audible loop."""
    from types import SimpleNamespace

    from skyreels_pack.nodes import clips

    from skyreels_core.sampling import MAX_SEED
    from skyreels_core.types import TextEncoding

    seeds = []

    def sample(self, model, prompt, condition, **settings):
        seeds.append(settings["seed"])
        return {"result": (SimpleNamespace(audio=None),)}

    monkeypatch.setattr(clips.SkyReelsV4Sampler, "sample", sample)
    monkeypatch.setattr(clips.SkyReelsV4DecodeVideo, "decode", lambda *_: (_clip(33, 0.5),))
    model = SimpleNamespace(
        has_audio=False, module=SimpleNamespace(config=SimpleNamespace(video_latent_channels=4))
    )
    text = TextEncoding(torch.zeros(1, 5, 8), torch.ones(1, 5, dtype=torch.bool))
    node = NODE_CLASS_MAPPINGS["SkyReelsV4ExtendToLength"]()
    for seed, expected in ((7, [8, 9]), (MAX_SEED, [0, 1])):
        seeds.clear()
        node.extend(model, text, CODEC, None, _clip(33), 16.0, 89, 33, 5, seed=seed, steps=2)
        assert seeds == expected


def test_join_clips_takes_an_overlap_of_zero_to_lay_clips_end_to_end():
    """Clips that share no frame (two separate renders) join end to end: the overlap widget
    reaches 0, and the join then cuts straight from the last frame of one to the other."""
    node = NODE_CLASS_MAPPINGS["SkyReelsV4JoinClips"]
    assert node.INPUT_TYPES()["required"]["overlap"][1]["min"] == 0
    first, second = _clip(9, 0.25), _clip(5, 0.75)
    frames, sound = node().join(first, second, 0, 16.0)
    assert torch.equal(frames, torch.cat([first, second])) and sound is None
