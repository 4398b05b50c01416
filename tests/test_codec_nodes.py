"""The encode/decode nodes on the bundled demo codecs: a sound must fit its clip."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from codec_helpers import TINY_AUDIO, TINY_VOCODER, write_tiny_mmaudio
from skyreels_pack import NODE_CLASS_MAPPINGS

from skyreels_core.av_io import fit_length, resample_audio
from skyreels_core.codecs import audio_token_count
from skyreels_core.demo import bundle
from skyreels_core.errors import InputError

ENCODE_VIDEO = NODE_CLASS_MAPPINGS["SkyReelsV4EncodeVideo"]
ENCODE_AUDIO = NODE_CLASS_MAPPINGS["SkyReelsV4EncodeAudio"]


@pytest.fixture(scope="module")
def clip():
    frames = torch.rand(33, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    return ENCODE_VIDEO().encode(frames, bundle.video_codec(), 16.0)[0]


def _sound(seconds: float, rate: int = 22050) -> dict:
    return {"waveform": torch.zeros(1, 1, round(seconds * rate)), "sample_rate": rate}


def test_a_sound_within_a_frame_of_the_clip_is_fitted_to_its_tokens(clip):
    codec = bundle.audio_codec()
    tokens = audio_token_count(33, 16.0, codec.sample_rate, codec.samples_per_token)
    for seconds in (33 / 16, 2.0):  # exact, and one frame short
        encoded = ENCODE_AUDIO().encode(clip, _sound(seconds), codec)[0]
        assert encoded.audio.shape == (1, codec.latent_channels, tokens)
        assert torch.equal(encoded.video, clip.video)


def test_a_sound_of_another_length_names_the_input_and_the_fix(clip):
    with pytest.raises(InputError, match=r"3\.00 s of sound for a 2\.06 s clip") as error:
        ENCODE_AUDIO().encode(clip, _sound(3.0), bundle.audio_codec())
    assert error.value.input_name == "audio" and "trim or pad" in str(error.value)


def test_a_clip_without_a_sound_track_is_named(clip):
    """The host's Get Video Components gives None for a silent clip: Encode Audio and Audio
    Reference failed with "'NoneType' object is not subscriptable"."""
    codec = bundle.audio_codec()
    reference = NODE_CLASS_MAPPINGS["SkyReelsV4AudioReference"]()
    for run in (
        lambda: ENCODE_AUDIO().encode(clip, None, codec),
        lambda: reference.build(codec, None),
    ):
        with pytest.raises(InputError, match="^audio: no sound: the clip has no sound track"):
            run()


def test_a_surround_sound_reaches_a_mono_codec_as_its_mixdown(clip, tmp_path):
    """MMAudio encodes mono only, and most sounds are stereo or more: Encode Audio and Audio
    Reference hand it FFmpeg's mixdown rather than failing on the channel count."""
    from skyreels_core.codecs.mmaudio import MMAudioCodec

    write_tiny_mmaudio(tmp_path)
    codec = MMAudioCodec.from_single_file(
        tmp_path / "combined.safetensors", vae_config=TINY_AUDIO, vocoder_config=TINY_VOCODER
    )
    rate, samples = 22050, round(33 / 16 * 22050)
    t = torch.arange(samples) / rate
    surround = torch.stack([torch.sin(2 * torch.pi * (200 + 100 * c) * t) for c in range(6)])
    sound = {"waveform": 0.2 * surround[None], "sample_rate": rate}
    mixdown = resample_audio(sound["waveform"], rate, codec.sample_rate, 1)
    tokens = audio_token_count(33, 16.0, codec.sample_rate, codec.samples_per_token)
    expected = codec.encode(fit_length(mixdown, tokens * codec.samples_per_token))
    encoded = ENCODE_AUDIO().encode(clip, sound, codec)[0]
    assert torch.equal(encoded.audio, expected)
    (reference,) = NODE_CLASS_MAPPINGS["SkyReelsV4AudioReference"]().build(codec, sound)
    tokens = -(-mixdown.shape[-1] // codec.samples_per_token)  # the last one part silence
    assert torch.equal(
        reference.audio, codec.encode(fit_length(mixdown, tokens * codec.samples_per_token))
    )


def test_tiled_decode_and_encode_nodes_match_whole_frames():
    """The demo codec sees about 2 latent pixels around each output pixel; an overlap of 8 gives
    each tile 3 pixels of unweighted context, so tiles reproduce the whole-frame result."""
    codec = bundle.video_codec()
    frames = torch.rand(9, 128, 128, 3, generator=torch.Generator().manual_seed(1))
    whole = ENCODE_VIDEO().encode(frames, codec, 16.0)[0]
    tiled = ENCODE_VIDEO().encode(frames, codec, 16.0, tile_size=12, tile_overlap=8)[0]
    assert (tiled.video - whole.video).abs().max() < 1e-4
    decode = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]()
    untiled_frames, fps = decode.decode(whole, codec)
    tiled_frames, _ = decode.decode(whole, codec, tile_size=12, tile_overlap=8)
    assert tiled_frames.shape == untiled_frames.shape == (9, 128, 128, 3) and fps == 16.0
    assert (tiled_frames - untiled_frames).abs().max() < 1e-4
    with pytest.raises(InputError) as error:
        decode.decode(whole, codec, tile_size=8, tile_overlap=8)
    assert error.value.input_name == "tile_overlap"


def test_a_vae_other_than_wan_2_1_on_video_vae_is_refused_by_name():
    """A host VAE of another model (an SD or Flux VAE from Load VAE) would decode latents it
    was never trained on into noise, or fail deep inside with a shape error."""
    frames = torch.rand(5, 32, 32, 3)

    class HostImageVAE:  # what ComfyUI's Load VAE gives for an image model's VAE
        latent_channels = 4

    with pytest.raises(InputError) as refused:
        ENCODE_VIDEO().encode(frames, HostImageVAE(), 16.0)
    assert refused.value.input_name == "video_vae"
    assert "HostImageVAE is not the Wan 2.1 video VAE" in str(refused.value)


@pytest.mark.parametrize("node", ["SkyReelsV4DecodeVideo", "SkyReelsV4EncodeVideo"])
def test_tiled_coding_shows_its_progress_and_stops_between_tiles_on_cancel(monkeypatch, node):
    """A tiled Wan decode at 720p runs minutes: it showed no progress and Cancel took effect
    only at the next node. The node's bar moves per tile, and Cancel stops before the next."""
    from skyreels_pack.nodes import host

    class Cancelled(Exception):
        pass

    codec = bundle.video_codec()
    frames = torch.rand(9, 128, 128, 3, generator=torch.Generator().manual_seed(1))
    latent = ENCODE_VIDEO().encode(frames, codec, 16.0)[0]
    shown, tiles_coded = [], []
    for name in ("encode", "decode"):
        method = getattr(codec, name)
        monkeypatch.setattr(codec, name, lambda x, f=method: tiles_coded.append(1) or f(x))

    class Bar:
        def __init__(self, total, node_id=None, description=""):
            self.total = total

        def update(self, value, preview=None):
            shown.append((value, self.total))

        def close(self):
            shown.append("closed")

    def check_interrupt():
        if len(tiles_coded) == 2:
            raise Cancelled

    monkeypatch.setattr(host, "Progress", Bar)
    monkeypatch.setattr(host, "check_interrupt", check_interrupt)
    tiles = {"tile_size": 12, "tile_overlap": 8}  # 16 x 16 latent pixels: 2 x 2 tiles
    with pytest.raises(Cancelled):
        if node == "SkyReelsV4EncodeVideo":
            NODE_CLASS_MAPPINGS[node]().encode(frames, codec, 16.0, **tiles)
        else:
            NODE_CLASS_MAPPINGS[node]().decode(latent, codec, **tiles)
    assert shown == [(1, 4), (2, 4), "closed"] and len(tiles_coded) == 2


def test_decoders_trim_to_the_clip_a_condition_padded(clip):
    """Video to Audio holds a 30-frame clip's last frame to 33: both decoders give back 30."""
    codec = bundle.audio_codec()
    with_sound = ENCODE_AUDIO().encode(clip, _sound(33 / 16), codec)[0]
    padded = replace(with_sound, clip_frames=30)
    frames, _ = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]().decode(padded, bundle.video_codec())
    whole, _ = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]().decode(
        with_sound, bundle.video_codec()
    )
    assert frames.shape[0] == 30 and torch.equal(frames, whole[:30])
    (audio,) = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeAudio"]().decode(padded, codec)
    assert audio["waveform"].shape[-1] == round(30 / 16 * codec.sample_rate)


def test_audio_reference_takes_the_part_of_the_sound_asked_for():
    """A voice's few seconds out of a long recording: every second of a reference joins the
    audio stream's attention."""
    codec, rate = bundle.audio_codec(), 16000
    sound = {
        "waveform": torch.randn(1, 1, 3 * rate, generator=torch.Generator()),
        "sample_rate": rate,
    }
    node = NODE_CLASS_MAPPINGS["SkyReelsV4AudioReference"]()
    (part,) = node.build(codec, sound, start_seconds=0.5, duration_seconds=1.0)
    expected = codec.encode(sound["waveform"][..., rate // 2 : rate // 2 + rate])
    assert part.audio.shape == (1, codec.latent_channels, rate // codec.samples_per_token + 1)
    assert torch.equal(part.audio, expected)
    (whole,) = node.build(codec, sound)
    assert whole.audio.shape[-1] == 3 * rate // codec.samples_per_token + 1
    (to_end,) = node.build(codec, sound, start_seconds=2.0, duration_seconds=9.0)
    assert torch.equal(to_end.audio, codec.encode(sound["waveform"][..., 2 * rate :]))
    with pytest.raises(InputError, match=r"start_seconds: 3 s is past the sound's end \(3\.00 s\)"):
        node.build(codec, sound, start_seconds=3.0)


@pytest.mark.parametrize(
    ("height", "width", "message"),
    [
        (36, 64, "frames height: 36 px is not a multiple of 16. Fix: use 32 or 48 px"),
        (64, 40, "frames width: 40 px is not a multiple of 16. Fix: use 32 or 48 px"),
    ],
)
def test_encode_video_refuses_frames_off_the_16_px_grid(height, width, message):
    """The codec's 8 px stride would crop 36 px to 32, and 40 px gives 5 latent rows that the
    model's 2 x 2 patches cannot split: both are refused by the frames' name."""
    with pytest.raises(InputError) as error:
        ENCODE_VIDEO().encode(torch.rand(9, height, width, 3), bundle.video_codec(), 16.0)
    assert str(error.value) == message


def test_encode_audio_refuses_a_batch_of_sounds_for_one_clip(clip):
    """The host's VAE Decode Audio at batch_size 2 gives two sounds: one clip takes one."""
    sounds = {"waveform": torch.zeros(2, 1, round(33 / 16 * 22050)), "sample_rate": 22050}
    with pytest.raises(InputError, match=r"^audio: 2 sounds for 1 clip\(s\)") as error:
        ENCODE_AUDIO().encode(clip, sounds, bundle.audio_codec())
    assert "Latent From Batch" in error.value.fix


def test_encode_audio_keeps_the_takes_keyframes_and_measures_its_own_length(clip):
    """A keyframe-mode Video to Audio take (30 of 33 frames) given its own 30-frame sound keeps
    its keyframes and length; the sound is padded to the 33 frames' tokens and trimmed back."""
    codec = bundle.audio_codec()
    keys = torch.randn(1, 8, 2, 16, 16)
    take = replace(clip, keyframes=keys, keyframe_indices=[0, 8], clip_frames=30)
    rate = codec.sample_rate
    sound = torch.randn(1, 1, round(30 / 16 * rate), generator=torch.Generator().manual_seed(2))
    encoded = ENCODE_AUDIO().encode(take, {"waveform": sound, "sample_rate": rate}, codec)[0]
    tokens = audio_token_count(33, 16.0, rate, codec.samples_per_token)
    expected = codec.encode(fit_length(sound, tokens * codec.samples_per_token))
    assert encoded.audio.shape == (1, codec.latent_channels, tokens)
    assert torch.equal(encoded.audio, expected)
    assert encoded.keyframes is keys and encoded.keyframe_indices == [0, 8]
    assert encoded.clip_frames == 30 and encoded.video is clip.video and encoded.fps == 16.0
    (audio,) = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeAudio"]().decode(encoded, codec)
    assert audio["waveform"].shape[-1] == round(30 / 16 * rate)
    with pytest.raises(InputError, match=r"2\.06 s of sound for a 1\.88 s clip \(30 frames"):
        ENCODE_AUDIO().encode(take, _sound(33 / 16), codec)


def test_a_refined_clip_takes_exactly_the_sounds_its_source_took(tmp_path):
    """Refine makes r (F - 1) + 1 frames at r x the fps: the same span, but its last frame ends
    sooner. A sound made for the source still fits it: the same lengths are taken and refused at
    1x, 2x and 4x fps, after refining twice, and after Save / Load AV Latent."""
    from skyreels_core.av_latent_file import load_av_latent, save_av_latent

    refine = NODE_CLASS_MAPPINGS["SkyReelsV4Refine"]().refine
    demo = NODE_CLASS_MAPPINGS["SkyReelsV4RefinerLoader"]().load(bundle.BUNDLED, "fp32")[0]
    frames = torch.rand(17, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    source = ENCODE_VIDEO().encode(frames, bundle.video_codec(), 16.0)[0]  # 17 / 16 = 1.0625 s
    widgets = dict(
        scale=2, reinject_keyframes=False, sparsity=0.0, steps=1, denoise_start=1.0, seed=0
    )
    seconds = (0.9, 0.999, 1.001, 17 / 16, 1.124, 1.126, 1.5)  # taken: 1 s to 18 / 16 s

    def taken(clip) -> list[bool]:
        verdicts = []
        for length in seconds:
            try:
                ENCODE_AUDIO().encode(clip, _sound(length), bundle.audio_codec())
                verdicts.append(True)
            except InputError:
                verdicts.append(False)
        return verdicts

    expected = [False, False, True, True, True, False, False]
    assert taken(source) == expected
    for factor in (2, 4):
        refined = refine(demo, source, fps_factor=factor, **widgets)["result"][0]
        assert (refined.frames, refined.fps) == (16 * factor + 1, 16.0 * factor)
        assert taken(refined) == expected
    doubled = refine(demo, source, fps_factor=2, **widgets)["result"][0]
    twice = refine(demo, doubled, fps_factor=2, **widgets)["result"][0]
    saved = save_av_latent(twice, tmp_path / "take.av_latent.safetensors")
    assert taken(twice) == taken(load_av_latent(saved)) == expected
    with pytest.raises(InputError) as error:
        ENCODE_AUDIO().encode(twice, _sound(1.5), bundle.audio_codec())
    assert error.value.problem == (
        "1.50 s of sound for a 1.06 s clip (65 frames at 64 fps, refined from 16 fps)"
    )


def test_the_tiled_decode_and_encode_hand_both_tile_widgets_to_the_tiler(monkeypatch):
    """tile_size and tile_overlap reach the tiler as typed: an overlap left at its default 8 when
    4 is asked for redoes twice the work per tile, and an overlap as large as the tile (which
    the tiler refuses) would pass unnoticed."""
    from skyreels_pack.nodes import av_codecs

    seen = []
    take_frames, encode_tiled = av_codecs.take_frames, av_codecs.encode_tiled
    monkeypatch.setattr(av_codecs, "take_frames",
                        lambda latent, codec, *tiles: seen.append(tiles[:2]) or take_frames(
                            latent, codec, *tiles))  # fmt: skip
    monkeypatch.setattr(av_codecs, "encode_tiled",
                        lambda codec, pixels, *tiles: seen.append(tiles[:2]) or encode_tiled(
                            codec, pixels, *tiles))  # fmt: skip
    codec = bundle.video_codec()
    (latent,) = ENCODE_VIDEO().encode(torch.rand(5, 128, 128, 3), codec, 16.0, 12, 4)
    frames, _ = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]().decode(latent, codec, 12, 4)
    assert seen == [(12, 4), (12, 4)] and frames.shape == (5, 128, 128, 3)
    with pytest.raises(InputError) as error:
        NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]().decode(latent, codec, 12, 12)
    assert error.value.input_name == "tile_overlap"


def test_decode_video_gives_a_refined_take_s_own_frame_rate():
    """A take refined to 2x fps (32 fps, made at 16) decodes at 32 fps: the rate it was made at
    would play the refined frames at half speed, the sound ending halfway."""
    codec = bundle.video_codec()
    latent = ENCODE_VIDEO().encode(torch.rand(9, 32, 32, 3), codec, 32.0)[0]
    frames, fps = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]().decode(
        replace(latent, source_fps=16.0), codec
    )
    assert fps == 32.0 and type(fps) is float and frames.shape == (9, 32, 32, 3)
