"""The Sampler node and Extend to Length name an input that cannot render as given (a rate, a
schedule, a reference the model cannot read) before the first step, and take a take's keyframes
at another scale."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
from model_helpers import WAN_TINY
from skyreels_pack import NODE_CLASS_MAPPINGS
from skyreels_pack.nodes import host

from skyreels_core import av_io
from skyreels_core.demo import bundle
from skyreels_core.errors import InputError
from skyreels_core.mmdit import DualStreamMMDiT
from skyreels_core.runtime import LoadedModel
from skyreels_core.types import AVLatent, References, TextEncoding, VideoCondition

PROMPT = "a red circle bounces on the floor"
SETTINGS = {"seed": 42, "steps": 2, "shift": 3.0, "solver": "euler", "video_guidance": 6.0,
            "audio_guidance": 1.5}  # fmt: skip


def node(name: str):
    return NODE_CLASS_MAPPINGS[name]()


def first(output):
    return output["result"][0] if isinstance(output, dict) else output[0]


@pytest.fixture(autouse=True)
def previews(tmp_path, monkeypatch):
    """Preview Video writes into a folder of the test's own, not ./temp."""
    monkeypatch.setenv("SKYREELS_TEMP_DIR", str(tmp_path))


@pytest.fixture(scope="module")
def demo():
    model = first(node("SkyReelsV4ModelLoader").load(bundle.BUNDLED, "fp32", "sdpa"))
    encoder = first(node("SkyReelsV4TextEncoderLoader").load(bundle.BUNDLED, "fp32", -1))
    video_vae = first(node("SkyReelsV4VideoVAELoader").load(bundle.BUNDLED, "fp32"))
    audio_vae = first(
        node("SkyReelsV4AudioVAELoader").load(bundle.BUNDLED, "(inside the VAE file)", "fp32")
    )
    text = first(node("SkyReelsV4TextEncode").encode(encoder, PROMPT))
    condition = first(node("SkyReelsV4MaskT2V").build(video_vae, 64, 64, 9))
    return {"model": model, "text": text, "condition": condition, "video_vae": video_vae,
            "audio_vae": audio_vae}  # fmt: skip


def render(demo, **inputs):
    base = {"model": demo["model"], "text": demo["text"], "condition": demo["condition"],
            "fps": 16.0, **SETTINGS}  # fmt: skip
    return first(node("SkyReelsV4Sampler").sample(**{**base, **inputs}))


def test_the_sampler_hands_each_widget_to_the_library_as_itself(demo, monkeypatch):
    """Video and audio guidance swapped, or the shift dropped, rendered a plausible clip that
    only the slow workflow tests caught (the demo's colour and hum drifted)."""
    import sys

    sampler_module = sys.modules[type(node("SkyReelsV4Sampler")).__module__]
    seen, real = [], sampler_module.sample
    monkeypatch.setattr(sampler_module, "sample", lambda *a, **k: seen.append(k) or real(*a, **k))
    render(demo, fps=24.0, video_guidance=6.0, audio_guidance=1.5, shift=3.0, steps=2, seed=42)
    settings = seen[0]["settings"]
    assert (settings.video_guidance, settings.audio_guidance) == (6.0, 1.5)
    assert (settings.shift, settings.steps, settings.seed, settings.solver) == (3.0, 2, 42, "euler")
    assert seen[0]["fps"] == 24.0
    assert settings.audio_lag is None  # the widget's 0: the model's own lag


def test_the_sound_lag_widget_reaches_the_library(demo):
    """The bundled model was trained with a time of its own for the sound, its lag 2: its own
    lag (0) and 2 render alike, 1 (both streams together) another sound, and a lag below 1 is
    named with the fix (a model of one time refusing 2 is tested in test_sampler)."""
    own = render(demo, audio_lag=0.0)
    assert torch.equal(render(demo, audio_lag=2.0).audio, own.audio)
    assert (render(demo, audio_lag=1.0).audio - own.audio).abs().max() > 1e-3
    with pytest.raises(InputError, match=r"^audio_lag: 0\.5\. Fix: give 1"):
        render(demo, audio_lag=0.5)


FRAMES = torch.rand(9, 64, 64, 3)
SOUND = {"waveform": torch.zeros(1, 1, 9000), "sample_rate": 16000}
RATE_TAKERS = {
    "Sampler": lambda demo, fps: render(demo, fps=fps),
    "Encode Video": lambda demo, fps: node("SkyReelsV4EncodeVideo").encode(
        FRAMES, demo["video_vae"], fps
    ),
    "Join Clips": lambda demo, fps: node("SkyReelsV4JoinClips").join(
        FRAMES, FRAMES, 1, fps, SOUND, SOUND
    ),
    "Preview Video": lambda demo, fps: node("SkyReelsV4PreviewVideo").save(FRAMES, fps),
}


@pytest.mark.parametrize("fps", [0.0, math.nan, 1e-9])
@pytest.mark.parametrize("taker", RATE_TAKERS)
def test_a_linked_frame_rate_no_clip_has_is_named_by_every_node_taking_one(demo, taker, fps):
    """A linked fps skips the widget's 1..120: 0 divided by zero in the Sampler and Join Clips,
    NaN failed as a float made an int, 1e-9 asked for terabytes of sound tokens (and was
    advised to swap blocks), and Encode Video kept 0 in the latent for Decode Audio to fail on."""
    with pytest.raises(InputError, match=r"^fps: \S+ fps\. Fix: give the clip's frame rate"):
        RATE_TAKERS[taker](demo, fps)


def _tensors(output, taker: str) -> list[torch.Tensor]:
    """The tensors of a node's answer; Preview Video's is its file, read back."""
    if taker == "Preview Video":
        (saved,) = output["ui"]["skyreels_videos"]
        return [av_io.read_audio(Path(host.temp_dir()) / saved["filename"])["waveform"]]
    if torch.is_tensor(output):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    elif dataclasses.is_dataclass(output):
        output = [getattr(output, field.name) for field in dataclasses.fields(output)]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item, taker)]
    return []


def _sound_takers(demo):
    take = AVLatent(video=torch.zeros(1, 8, 3, 8, 8), fps=16.0)
    return {
        "Encode Audio": lambda sound: node("SkyReelsV4EncodeAudio").encode(
            take, sound, demo["audio_vae"]
        ),
        "Audio Reference": lambda sound: node("SkyReelsV4AudioReference").build(
            demo["audio_vae"], sound
        ),
        "Join Clips": lambda sound: node("SkyReelsV4JoinClips").join(
            FRAMES, FRAMES, 1, 16.0, sound, sound
        ),
        "Preview Video": lambda sound: node("SkyReelsV4PreviewVideo").save(FRAMES, 16.0, sound),
    }


@pytest.mark.parametrize(
    "taker", ["Encode Audio", "Audio Reference", "Join Clips", "Preview Video"]
)
def test_another_packs_sound_is_read_or_named_by_every_node_taking_one(demo, taker):
    """The host's AUDIO is float samples at a positive rate; another pack's int16 samples failed
    inside torch (mean() of Short) and a rate of 0 inside FFmpeg ("Invalid argument"). Integer
    samples read as FFmpeg reads them (full scale = 1); a rate or layout no sound has is named."""
    use = _sound_takers(demo)[taker]
    wave = torch.sin(torch.arange(9000) / 9.0)[None, None] * 0.5
    as_int16 = (wave * 32768).round().to(torch.int16)
    from_floats = use({"waveform": as_int16.float() / 32768, "sample_rate": 16000})
    from_ints = use({"waveform": as_int16, "sample_rate": 16000})
    assert _tensors(from_ints, taker) and all(
        torch.equal(a, b)
        for a, b in zip(_tensors(from_floats, taker), _tensors(from_ints, taker), strict=True)
    )
    for sound, problem in [
        ({"waveform": wave, "sample_rate": 0}, "a sample rate of 0"),
        ({"waveform": wave[0], "sample_rate": 16000}, "a waveform of (1, 9000), not [batch"),
        ({"waveform": wave > 0, "sample_rate": 16000}, "samples of torch.bool"),
    ]:
        with pytest.raises(InputError, match=rf"^audio(_a)?: {re.escape(problem)}"):
            use(sound)


def test_video_to_video_at_the_clips_own_rate_or_the_rate_is_named(demo):
    """A 24 fps clip encoded for video-to-video carries its rate: the Sampler left at 16 names
    fps (its sound is a third more tokens at 24), and renders at 24."""
    take = render(demo)
    frames = first(node("SkyReelsV4DecodeVideo").decode(take, demo["video_vae"]))
    sound = first(node("SkyReelsV4DecodeAudio").decode(take, demo["audio_vae"]))
    samples = round(9 / 24 * sound["sample_rate"])
    sound = {"waveform": sound["waveform"][..., :samples], "sample_rate": sound["sample_rate"]}
    clip = first(node("SkyReelsV4EncodeVideo").encode(frames, demo["video_vae"], 24.0))
    clip = first(node("SkyReelsV4EncodeAudio").encode(clip, sound, demo["audio_vae"]))
    with pytest.raises(InputError, match="^fps: 16 fps for the initial latent made at 24 fps"):
        render(demo, initial=clip, denoise_start=0.5)
    again = render(demo, initial=clip, denoise_start=0.5, fps=24.0)
    assert again.video.shape == clip.video.shape and again.audio.shape == clip.audio.shape
    assert render(demo, initial=clip, denoise_start=1.0).audio.shape == take.audio.shape


def test_a_condition_made_at_another_rate_is_refused_before_memory_is_freed(demo, monkeypatch):
    """A kept 24 fps clip (Keep Video) sampled at 16 fps is named by fps before the host is asked
    to free memory for the model: refused only inside the render, the other models were already
    unloaded (and reloaded by the next queue) for a render that never ran."""
    import sys

    sampler_module = sys.modules[type(node("SkyReelsV4Sampler")).__module__]
    freed = []
    monkeypatch.setattr(sampler_module.host, "make_room", lambda *args, **kw: freed.append(args))
    condition = dataclasses.replace(demo["condition"], fps=24.0)
    with pytest.raises(InputError) as error:
        render(demo, condition=condition, fps=16.0)
    assert str(error.value).startswith("fps: 16 fps for a clip made at 24 fps. Fix: set fps to 24")
    assert freed == []


def test_a_connected_audio_vae_sets_the_sound_s_token_count(demo, monkeypatch):
    """The audio_vae input sets the audio token rate: a codec of half the demo's samples per
    token gives the 9-frame clip twice the tokens. Counted at the model's own codec rate, the
    sound decoded by that VAE would last half the clip."""
    import sys
    from types import SimpleNamespace

    from skyreels_core.codecs import audio_token_count

    sampler_module = sys.modules[type(node("SkyReelsV4Sampler")).__module__]
    seen = []
    stand_in = AVLatent(video=torch.zeros(1, 8, 3, 8, 8), fps=16.0)  # the render is not run
    monkeypatch.setattr(sampler_module, "sample", lambda *a, **k: seen.append(k) or stand_in)
    own = demo["audio_vae"]
    finer = SimpleNamespace(latent_channels=own.latent_channels, sample_rate=own.sample_rate,
                            samples_per_token=own.samples_per_token // 2)  # fmt: skip
    assert torch.equal(render(demo, audio_vae=finer).video, stand_in.video)
    assert seen[0]["audio_tokens"] == audio_token_count(
        9, 16.0, own.sample_rate, own.samples_per_token // 2
    )
    assert seen[0]["audio_tokens"] == 2 * audio_token_count(
        9, 16.0, own.sample_rate, own.samples_per_token
    )


def test_video_to_video_names_a_condition_of_another_clip_in_frames_and_pixels(demo):
    """A 9-frame take refined under a 17-frame condition said "latents of shape (1, 8, 3, 8, 8)
    where (1, 8, 5, 8, 8) is needed"; the widgets speak frames and pixels."""
    take = render(demo)
    longer = first(node("SkyReelsV4MaskT2V").build(demo["video_vae"], 64, 64, 17))
    with pytest.raises(InputError) as error:
        render(demo, condition=longer, initial=take, denoise_start=0.5)
    assert str(error.value) == (
        "initial: a clip of 9 frames at 64 x 64 px for a condition of 17 frames at 64 x 64 px. "
        "Fix: set the condition's frames, width and height to the clip's (9, 64, 64)"
    )


def test_video_to_video_names_a_take_whose_sound_has_another_length(demo):
    take = render(demo, steps=1)
    trimmed = dataclasses.replace(take, audio=take.audio[..., :-3])
    with pytest.raises(InputError) as error:
        render(demo, initial=trimmed, denoise_start=0.5)
    assert str(error.value).startswith(
        "initial: a sound of 32 audio tokens where the clip's length at this fps takes 35."
    )


def test_a_keyframe_scale_below_one_is_named(demo):
    with pytest.raises(InputError) as error:
        render(demo, keyframe_indices="4", keyframe_scale=0)
    assert error.value.input_name == "keyframe_scale"


def test_the_sampler_hands_its_take_over_where_the_host_keeps_outputs(demo, monkeypatch):
    """The host caches every output: a take left on the GPU held its memory between queues
    (Refine already handed its result to the host's intermediate device)."""
    monkeypatch.setattr(host, "intermediate_device", lambda: torch.device("meta"))
    take = render(demo, keyframe_indices="4", steps=1)
    assert {x.device.type for x in (take.video, take.audio, take.keyframes)} == {"meta"}


def test_a_takes_keyframes_refine_at_another_scale(demo):
    """Keyframes made at scale 2 refined at scale 3 start from the clip's frame upsampled; at
    their own scale, from themselves."""
    take = render(demo, keyframe_indices="4", keyframe_scale=2)
    assert take.keyframes.shape[-2:] == (16, 16)
    sharper = render(demo, keyframe_indices="4", keyframe_scale=3, initial=take, denoise_start=0.3)
    assert sharper.keyframes.shape[-2:] == (24, 24)
    same = render(demo, keyframe_indices="4", keyframe_scale=2, initial=take, denoise_start=0.05)
    upsampled = torch.nn.functional.interpolate(
        take.video[:, :, [1]], size=(1, 16, 16), mode="trilinear"
    )

    def distance(a: torch.Tensor) -> float:
        return float((a - take.keyframes).norm() / take.keyframes.norm())

    assert distance(same.keyframes) < 0.25 and 2 * distance(same.keyframes) < distance(upsampled)


def test_two_keyframes_in_one_latent_group_are_named(demo):
    """Keyframe mode makes one high-res frame per latent group: two typed frames in one group
    would silently come out as one."""
    with pytest.raises(InputError, match="^keyframe_indices: frames 5 and 6 fall in one latent"):
        render(demo, keyframe_indices="5, 6")
    assert render(demo, keyframe_indices="8, 4, 4").keyframe_indices == [1, 2]


def test_a_keyframe_on_a_kept_frame_is_named_not_laid_over_the_image(demo):
    """A high-res keyframe has no high-res condition: on image-to-video's first frame it was
    generated afresh and Refine laid it over the user's image (21.6 dB against 35.5 without).
    Frames the condition keeps are refused by name; the others render beside them."""
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    i2v = first(node("SkyReelsV4MaskI2V").build(demo["video_vae"], image, 9))
    with pytest.raises(InputError, match="^keyframe_indices: frame 0 is kept") as error:
        render(demo, condition=i2v, keyframe_indices="0, 8")
    assert "leave those frames out of keyframe_indices" in str(error.value)
    take = render(demo, condition=i2v, keyframe_indices="8")
    assert take.keyframe_indices == [2]
    assert torch.equal(take.video[:, :, 0], i2v.latents[:, :, 0])


def test_extend_to_length_names_a_schedule_that_does_not_start_from_noise(demo):
    take = render(demo, steps=1)
    frames = first(node("SkyReelsV4DecodeVideo").decode(take, demo["video_vae"]))
    sound = first(node("SkyReelsV4DecodeAudio").decode(take, demo["audio_vae"]))
    with pytest.raises(InputError, match="^sigmas: the schedule starts at 0.6, .* start the sch"):
        node("SkyReelsV4ExtendToLength").extend(
            demo["model"], demo["text"], demo["video_vae"], demo["audio_vae"], frames, 16.0, 17,
            9, 5, sound, sigmas=torch.tensor([0.6, 0.3, 0.0]), **SETTINGS,
        )  # fmt: skip


def test_extend_to_length_tells_a_story_written_for_the_whole_clip(demo, monkeypatch):
    """Shots written for total_frames: the first window's Sampler reads the story's opening (it
    refused the story), each further window its own part (every window replayed the first
    shots: red, blue, red, blue); shots written for a window repeat. One progress bar runs over
    all the windows."""
    encoder = first(node("SkyReelsV4TextEncoderLoader").load(bundle.BUNDLED, "fp32", -1))
    story = "[0-40] a red circle bounces on the floor\n[41-88] a blue square moves right"
    text = first(node("SkyReelsV4MultiShotTextEncode").encode(encoder, story, 89))
    t2v = first(node("SkyReelsV4MaskT2V").build(demo["video_vae"], 64, 64, 33))
    clip = render(demo, text=text, condition=t2v)
    frames = first(node("SkyReelsV4DecodeVideo").decode(clip, demo["video_vae"]))
    sound = first(node("SkyReelsV4DecodeAudio").decode(clip, demo["audio_vae"]))
    sampler = type(node("SkyReelsV4Sampler"))
    seen, sample = [], sampler.sample
    monkeypatch.setattr(
        sampler,
        "sample",
        lambda self, m, t, *a, **k: seen.append(t.shot_ranges) or sample(self, m, t, *a, **k),
    )
    bars = []  # one bar over both windows (each window's Sampler filled the node's bar anew)

    class Bar(host.Progress):
        def __init__(self, total, *args, **kwargs):
            super().__init__(total, *args, **kwargs)
            bars.append((total, []))

        def update(self, value, preview=None):
            super().update(value, preview)
            bars[-1][1].append(value)

    monkeypatch.setattr(host, "Progress", Bar)
    settings = {**SETTINGS, "steps": 2}
    extend = node("SkyReelsV4ExtendToLength").extend
    out, _ = extend(demo["model"], text, demo["video_vae"], demo["audio_vae"], frames, 16.0,
                    89, 33, 5, sound, **settings)  # fmt: skip
    red, blue = text.shot_ranges[0][:2], text.shot_ranges[1][:2]
    ((total, values),) = bars  # each step moves the bar once, its preview with it
    assert out.shape[0] == 89 and total == 4 and values == [1, 2, 3, 4]
    assert seen == [[(*red, 0, 4), (*blue, 4, 9)], [(*blue, 0, 9)]]  # story latents 7-15, 14-22
    with pytest.raises(InputError, match="^text: a multi-shot prompt written for 89 frames"):
        extend(demo["model"], text, demo["video_vae"], demo["audio_vae"], frames, 16.0, 61, 33,
               5, sound, **settings)  # fmt: skip
    with pytest.raises(InputError, match="^total_frames: 33 frames for a clip that already has"):
        extend(
            demo["model"],
            text,
            demo["video_vae"],
            demo["audio_vae"],
            frames,
            16.0,
            33,
            33,
            5,
            sound,
            **settings,
        )  # fmt: skip (not: re-encode the story for 33 frames)


def test_extend_to_length_names_a_video_vae_of_another_family(demo):
    """Its windows' conditions come from its video_vae: another family's was named as
    "condition", an input Extend to Length does not have."""
    from codec_helpers import PoolingCodec

    frames = torch.rand(33, 64, 64, 3)
    sound = {"waveform": torch.zeros(1, 1, 33000), "sample_rate": 16000}
    with pytest.raises(InputError, match="^video_vae: 4 video latent channels where this model"):
        node("SkyReelsV4ExtendToLength").extend(
            demo["model"], demo["text"], PoolingCodec(), demo["audio_vae"], frames, 16.0, 61, 33,
            5, sound, **SETTINGS,
        )  # fmt: skip


def test_an_audio_reference_on_a_model_without_sound_is_named():
    model = LoadedModel(DualStreamMMDiT(WAN_TINY).eval(), "wan", None)
    text = TextEncoding(torch.randn(1, 5, 32), torch.ones(1, 5, dtype=torch.bool))
    condition = VideoCondition(torch.zeros(1, 4, 3, 4, 4), torch.zeros(1, 1, 3, 4, 4), [])
    references = References(video=None, audio=torch.randn(1, 8, 20))
    inputs = {"model": model, "text": text, "condition": condition, "fps": 16.0, **SETTINGS}
    assert first(node("SkyReelsV4Sampler").sample(**inputs)).audio is None
    with pytest.raises(InputError, match="^references: an audio reference for a model that"):
        node("SkyReelsV4Sampler").sample(**inputs, references=references)


def test_the_schedule_node_honours_denoise_start_and_reads_blank_text_as_no_schedule():
    """Schedule's widgets are the Sampler's: denoise_start 0.5 starts the shifted schedule at 0.5
    (starting at 1 would redraw a video-to-video take from pure noise), and a custom box holding
    only spaces or a newline means no custom schedule, not a refused one of 0 times."""
    schedule = node("SkyReelsV4Schedule").schedule
    (half,) = schedule(4, 3.0, 0.5)
    torch.testing.assert_close(
        half, torch.tensor([0.5, 0.45 / 1.1, 0.3, 0.5 / 3, 0.0], dtype=torch.float64)
    )
    (whole,) = schedule(4, 3.0, 1.0)
    torch.testing.assert_close(whole, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0], dtype=torch.float64))
    (blank,) = schedule(4, 3.0, 1.0, " \n ")
    assert torch.equal(blank, whole)
    (typed,) = schedule(4, 3.0, 0.5, "1.0, 0.5, 0")
    assert torch.equal(typed, torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))


def test_vaes_of_another_family_are_named_by_their_own_input(demo):
    """An audio VAE or a video VAE of another latent width is refused by its own socket before
    the render: an audio VAE's refusal naming video_vae would send the artist to the wrong
    loader."""
    from types import SimpleNamespace

    from codec_helpers import PoolingCodec

    own = demo["audio_vae"]
    wider = SimpleNamespace(latent_channels=own.latent_channels + 1, sample_rate=own.sample_rate,
                            samples_per_token=own.samples_per_token)  # fmt: skip
    with pytest.raises(InputError) as error:
        render(demo, audio_vae=wider)
    assert str(error.value).startswith(
        "audio_vae: 9 audio latent channels where this model takes 8. Fix: use files of one family"
    )
    with pytest.raises(InputError) as error:
        render(demo, video_vae=PoolingCodec(latent_channels=4))
    assert str(error.value).startswith(
        "video_vae: 4 video latent channels where this model takes 8. Fix: use files of one family"
    )
