"""The shipped demo codecs keep what the eval measures: pixels (PSNR), shape, click timing, pitch."""

from __future__ import annotations

import pytest
import torch

from skyreels_core.demo.bundle import WEIGHTS_DIR
from skyreels_core.demo.codecs import DemoAudioCodec, DemoVideoCodec
from skyreels_core.demo.dataset import HELD_OUT_SEED, render_world
from skyreels_core.demo.evaluate_refiner import FIRST_SEED
from skyreels_core.demo.metrics import (
    av_sync_error_ms,
    click_onsets,
    contact_frames,
    dominant_pitch_colour,
    dominant_shape,
    mean_av_sync,
    psnr,
)
from skyreels_core.demo.train_codecs import finetune_video_decoder, train_codecs
from skyreels_core.demo.train_refiner import scene_pair
from skyreels_core.demo.world import render_scene, sample_scene_spec

HELD_OUT = [HELD_OUT_SEED + i for i in range(6)]


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(sample_scene_spec(seed, max_objects=2)) for seed in HELD_OUT]


def test_video_codec_layout_and_psnr(scenes):
    codec = DemoVideoCodec.load(WEIGHTS_DIR / "video_codec.safetensors")
    frames = torch.stack([s.frames for s in scenes])
    with torch.no_grad():
        latents = codec.encode(frames)
        decoded = codec.decode(latents)
    assert latents.shape == (len(scenes), codec.latent_channels, 9, 8, 8)
    assert 0.5 < latents.std().item() < 2.0  # normalised for the flow-matching noise scale
    assert decoded.shape == frames.shape
    scores = [psnr(clip, original) for clip, original in zip(decoded, frames)]
    assert sum(scores) / len(scores) >= 25.0  # measured 32.0 dB mean on these six
    assert min(scores) >= 23.0  # two-object scenes with overlapping shapes are the hardest


def test_video_codec_round_trips_the_refiners_128_px_size():
    # Fitted on 64 px clips alone the decoder read 30.4 dB here, below bicubic upsampling of its
    # own 64 px decode, which held the refiner under bicubic at 1x fps.
    codec = DemoVideoCodec.load(WEIGHTS_DIR / "video_codec.safetensors")
    high = torch.stack([scene_pair(FIRST_SEED + i)[1] for i in range(4)])
    with torch.no_grad():
        decoded = codec.decode(codec.encode(high))
    scores = [psnr(clip, original) for clip, original in zip(decoded, high)]
    assert sum(scores) / len(scores) >= 32.5  # measured 33.7 dB on the refiner eval's 12 scenes


def test_decoder_finetune_keeps_the_latents_and_learns_the_larger_size():
    torch.manual_seed(0)
    codec = DemoVideoCodec(width=8)
    encoder = {k: v.clone() for k, v in codec.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in codec.decoder.state_dict().items()}
    data, high = render_world(2, 0, size=16), render_world(2, 0, size=32).pixels
    frames = torch.rand(1, 5, 16, 16, 3)
    latents = codec.encode(frames).detach()

    def high_res_error():
        with torch.no_grad():
            return (codec.decode(codec.encode(high)) - high).square().mean().item()

    before = high_res_error()
    finetune_video_decoder(codec, data, high, 300, torch.Generator().manual_seed(0))
    assert all(torch.equal(v, codec.encoder.state_dict()[k]) for k, v in encoder.items())
    assert torch.equal(codec.encode(frames), latents)  # the model's latent space is untouched
    assert not any(torch.equal(v, codec.decoder.state_dict()[k]) for k, v in decoder.items())
    assert high_res_error() < 0.25 * before  # measured 0.134 -> 0.022
    assert not any(p.requires_grad for p in codec.parameters())


def test_video_codec_keeps_shapes_readable():
    codec = DemoVideoCodec.load(WEIGHTS_DIR / "video_codec.safetensors")
    specs = [sample_scene_spec(HELD_OUT_SEED + 100 + i) for i in range(30)]
    with torch.no_grad():
        decoded = codec.decode(codec.encode(torch.stack([render_scene(s).frames for s in specs])))
    right = sum(dominant_shape(clip) == spec.objects[0].shape for clip, spec in zip(decoded, specs))
    assert right >= 29  # measured 90 of 90 held-out scenes; eval's shape accuracy rests on it


def test_video_codec_keeps_the_motion_inside_each_latent_group():
    # A codec fitted on pixel MSE alone froze each 4-frame group (43 ms of AV-sync error and 23 of
    # 59 contacts lost on perfect latents); the eval's AV sync rests on this round trip.
    codec = DemoVideoCodec.load(WEIGHTS_DIR / "video_codec.safetensors")
    scenes = [render_scene(sample_scene_spec(HELD_OUT_SEED + 100 + i)) for i in range(30)]
    with torch.no_grad():
        decoded = codec.decode(codec.encode(torch.stack([s.frames for s in scenes])))
    contacts = sum(len(contact_frames(scene.frames)) for scene in scenes)
    sync = mean_av_sync(
        [av_sync_error_ms(clip, s.audio, s.fps, s.sample_rate) for s, clip in zip(scenes, decoded)]
    )
    assert sync["contacts_with_a_click"] >= contacts - 1
    assert sync["av_sync_ms"] < 25.0  # measured 8.6 ms, 30 of 30 matched; the world ~7.5


def test_audio_codec_keeps_click_timing(scenes):
    codec = DemoAudioCodec.load(WEIGHTS_DIR / "audio_codec.safetensors")
    audio = torch.stack([s.audio for s in scenes])
    with torch.no_grad():
        latents = codec.encode(audio)
        decoded = codec.decode(latents)[..., : audio.shape[-1]]
    assert latents.shape == (len(scenes), codec.latent_channels, -(-audio.shape[-1] // 256))
    errors = []
    for scene, wave in zip(scenes, decoded):
        truth = click_onsets(scene.audio[0], scene.sample_rate)
        got = click_onsets(wave[0], scene.sample_rate)
        assert len(got) == len(truth)
        errors += [abs(a - b) * 1000 for a, b in zip(got, truth)]
    # Onsets are read on a 2 ms grid; a 256-sample token is 16 ms (the bundle's codec: 5.1 ms).
    assert sum(errors) / len(errors) <= 6.0
    assert max(errors) <= 10.0  # well inside one 62.5 ms frame


def test_audio_codec_keeps_pitch():
    # One object per scene: two equal hums would make the "dominant" pitch a coin toss.
    codec = DemoAudioCodec.load(WEIGHTS_DIR / "audio_codec.safetensors")
    scenes = [render_scene(sample_scene_spec(seed)) for seed in HELD_OUT + [2_000_000, 2_000_001]]
    with torch.no_grad():
        decoded = codec.decode(codec.encode(torch.stack([s.audio for s in scenes])))
    for scene, wave in zip(scenes, decoded):
        assert dominant_pitch_colour(wave[0], scene.sample_rate) == scene.objects[0].spec.colour


def test_train_codecs_writes_loadable_files(tmp_path):
    video_path, audio_path = train_codecs(
        tmp_path, scenes=2, video_steps=2, audio_steps=2, seed=3, video_decoder_steps=2
    )
    video, audio = DemoVideoCodec.load(video_path), DemoAudioCodec.load(audio_path)
    frames = torch.rand(1, 5, 16, 16, 3)
    assert video.decode(video.encode(frames)).shape == frames.shape
    assert audio.encode(torch.zeros(1, 1, 512)).shape == (1, audio.latent_channels, 2)


def test_a_take_decodes_to_its_clips_own_length():
    """A Video to Audio take of a 30-frame clip holds latents for 33 frames and sound to whole
    tokens; a script decoding it got 33 frames and 2.06 s where the decode nodes give 30 frames
    and 1.875 s. take_frames / take_sound serve both."""
    from skyreels_core.codecs import audio_token_count
    from skyreels_core.decoding import take_frames, take_sound
    from skyreels_core.types import AVLatent

    video, audio = (cls.load(WEIGHTS_DIR / name) for cls, name in (
        (DemoVideoCodec, "video_codec.safetensors"), (DemoAudioCodec, "audio_codec.safetensors")))  # fmt: skip
    tokens = audio_token_count(33, 24.0, audio.sample_rate, audio.samples_per_token)
    take = AVLatent(video=torch.zeros(1, video.latent_channels, 9, 8, 8),
                    audio=torch.zeros(1, audio.latent_channels, tokens), fps=24.0, clip_frames=30)  # fmt: skip
    assert take_frames(take, video).shape == (1, 30, 64, 64, 3)
    sound = take_sound(take, audio)
    assert sound["waveform"].shape[-1] == round(30 / 24 * audio.sample_rate)
    assert sound["sample_rate"] == audio.sample_rate


def test_decodes_stay_in_the_media_range_for_latents_far_from_the_data():
    """A render with strong guidance can leave latents far from what the codecs were trained on:
    frames still decode to 0..1 and sound to -1..1 (what IMAGE and AUDIO sockets carry and the
    encoders write), instead of values that wrap or clip differently in every saver."""
    video = DemoVideoCodec.load(WEIGHTS_DIR / "video_codec.safetensors")
    audio = DemoAudioCodec.load(WEIGHTS_DIR / "audio_codec.safetensors")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        frames = video.decode(
            8 * torch.randn(1, video.latent_channels, 3, 4, 4, generator=generator)
        )
        sound = audio.decode(8 * torch.randn(1, audio.latent_channels, 40, generator=generator))
    assert frames.shape == (1, 9, 32, 32, 3) and sound.shape == (1, 1, 40 * 256)
    assert frames.min().item() == 0.0 and frames.max().item() == 1.0  # both ends reached
    assert sound.min().item() == -1.0 and sound.max().item() == 1.0
