"""The eval's measurements score the world's own ground truth as perfect and catch corruptions."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from skyreels_core.demo import bundle
from skyreels_core.demo.dataset import HELD_OUT_SEED
from skyreels_core.demo.metrics import (
    av_sync_error_ms,
    centroids,
    click_onsets,
    contact_frames,
    dominant_colour,
    dominant_pitch_colour,
    dominant_shape,
    mean_av_sync,
    object_masks,
    psnr,
    shape_features,
)
from skyreels_core.demo.world import (
    BACKGROUND,
    COLOURS,
    click,
    render_audio,
    render_scene,
    sample_scene_spec,
    spec_from_caption,
)


def test_ground_truth_scores_perfectly():
    for seed in range(30):
        scene = render_scene(sample_scene_spec(7000 + seed))
        truth = scene.objects[0].spec
        assert dominant_colour(scene.frames) == truth.colour
        assert dominant_shape(scene.frames) == truth.shape
        assert dominant_pitch_colour(scene.audio[0], scene.sample_rate) == truth.colour
        onsets = click_onsets(scene.audio[0], scene.sample_rate)
        assert [round(t * scene.fps) for t in onsets] == scene.contact_frames
        inner = [f for f in scene.contact_frames if 2 <= f < 31]  # two frames either side seen
        found = contact_frames(scene.frames)
        assert len(found) == len(inner) and all(abs(a - b) <= 1 for a, b in zip(found, inner))


def test_av_sync_error_of_the_truth_and_of_a_shifted_click():
    scene = render_scene(spec_from_caption("a red circle bounces on the floor", seed=1))
    exact = av_sync_error_ms(scene.frames, scene.audio[0], scene.fps, scene.sample_rate)
    assert exact["matched"] == exact["contacts"] >= 1 and exact["mean_error_ms"] < 5
    late = torch.roll(scene.audio[0], 3 * scene.sample_rate // 16)  # three frames late
    shifted = av_sync_error_ms(scene.frames, late, scene.fps, scene.sample_rate)
    assert abs(shifted["mean_error_ms"] - 187.5) < 5


def test_pooled_av_sync_carries_its_standard_error():
    clip = {"contacts": 2, "onsets": 2, "matched": 2}
    results = [{**clip, "mean_error_ms": error} for error in (10.0, 20.0, 30.0)]
    silent = {"contacts": 1, "onsets": 0, "matched": 0, "mean_error_ms": None}
    pooled = mean_av_sync([*results, silent])
    assert pooled["av_sync_ms"] == 20.0 and abs(pooled["av_sync_ms_stderr"] - 10 / 3**0.5) < 1e-9
    assert pooled["visual_contacts"] == 7 and pooled["contacts_with_a_click"] == 6
    assert mean_av_sync(results[:1])["av_sync_ms_stderr"] is None  # one clip: no spread to measure
    assert mean_av_sync([silent])["av_sync_ms"] is None


def test_wrong_colour_and_psnr():
    scene = render_scene(spec_from_caption("a red square moves right", seed=2))
    recoloured = scene.frames[..., [2, 1, 0]]  # red becomes blue
    assert dominant_colour(recoloured) == "blue"
    assert psnr(scene.frames, scene.frames) == 99.0
    noisy = (scene.frames + 0.01 * torch.randn_like(scene.frames)).clamp(0, 1)
    assert 35 < psnr(noisy, scene.frames) < 45


def test_shape_survives_blur_where_fill_ratios_fail():
    # A decoder's softening must not change the verdict: blur the truth with a Gaussian of 1 px.
    radius = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-(radius**2) / 2)
    kernel = (kernel / kernel.sum())[None, None]
    for seed in range(30):
        scene = render_scene(sample_scene_spec(7100 + seed))
        frames = scene.frames.permute(0, 3, 1, 2).reshape(-1, 1, 64, 64)
        for weights in (kernel[..., None], kernel[:, :, None]):  # separable: columns, then rows
            frames = torch.nn.functional.conv2d(frames, weights, padding="same")
        blurred = frames.reshape(-1, 3, 64, 64).permute(0, 2, 3, 1)
        assert dominant_shape(blurred) == scene.objects[0].spec.shape


def test_an_empty_clip_has_no_colour_shape_position_or_contact():
    """A model that draws nothing must score as wrong, not as some default colour or shape: an
    all-background clip (one frame holding only a faint speck) has no colour, no shape, no
    position anywhere and no contact."""
    frames = torch.tensor(BACKGROUND).expand(33, 64, 64, 3).clone()
    frames[7, 30, 30] += 0.2  # a speck: not an object
    assert dominant_colour(frames) is None and dominant_shape(frames) is None
    assert centroids(frames).isnan().all()
    assert contact_frames(frames) == []
    silence = torch.zeros(1, 33000)
    assert av_sync_error_ms(frames, silence, 16.0, 16000) == {
        "contacts": 0, "onsets": 0, "matched": 0, "mean_error_ms": None
    }  # fmt: skip


def test_objects_are_whatever_differs_from_the_background_darker_or_lighter():
    """A decoder's dark blotch is as much "not background" as a bright shape."""
    frames = torch.tensor(BACKGROUND).expand(1, 8, 8, 3).clone()
    frames[0, 2, 2] = 0.0  # darker than the background in every channel
    frames[0, 5, 5] = torch.tensor(COLOURS["red"])
    assert object_masks(frames)[0].nonzero().tolist() == [[2, 2], [5, 5]]


def test_shape_features_read_the_textbook_cumulants_and_reject_noise():
    """The thresholds sit between the values ``shape_features`` documents for sharp shapes: an
    apex-up triangle skews by -1, point-symmetric shapes by 0; a square's diagonal/axis
    kurtosis ratio is 0.5, a circle's 1. A thin cross (streaks of noise) has no flat-topped
    silhouette and is no shape at all."""
    features = {}
    for shape in ("circle", "square", "triangle"):
        scene = render_scene(spec_from_caption(f"a red {shape} moves right", seed=4))
        contrast = (scene.frames - torch.tensor(BACKGROUND)).abs().sum(-1)
        features[shape] = shape_features(contrast[5])
    assert features["triangle"][0] == pytest.approx(-1.0, abs=0.05)
    assert features["circle"] == pytest.approx((0.0, 1.0), abs=0.05)
    assert features["square"] == pytest.approx((0.0, 0.5), abs=0.05)
    cross = torch.zeros(64, 64)
    cross[32, 20:45] = cross[20:45, 32] = 1.0
    assert shape_features(cross) is None


def test_centroids_track_the_true_centre_to_a_fraction_of_a_pixel():
    """Contacts are read off the centroid track, so it must sit on the world's true centre (the
    anti-aliased edges make that sub-pixel) for the symmetric shapes."""
    for caption in ("a red circle bounces on the floor", "a blue square moves left"):
        scene = render_scene(spec_from_caption(caption, seed=1))
        error = (centroids(scene.frames) - scene.objects[0].positions).abs().max().item()
        assert error < 0.15, caption


def test_av_sync_is_exact_on_the_truth_and_averages_each_contacts_own_error():
    """The world's own clip has its click on the contact frame to the sample, so it reads under
    one 2 ms onset window; with the first click one frame late and the second two, the mean is
    of 62.5 and 125 ms (the onset windows put the second at 123.5); a hum with no click matches
    no contact."""
    scene = render_scene(spec_from_caption("a green triangle bounces on the floor", seed=3))
    tracked = scene.objects[0]
    assert tracked.contact_frames == contact_frames(scene.frames) == [15, 29]
    exact = av_sync_error_ms(scene.frames, scene.audio[0], scene.fps, scene.sample_rate)
    assert exact["matched"] == 2 and exact["mean_error_ms"] < 2.0

    def sync_with_clicks_on(frames: list[int]) -> dict:
        audio = render_audio([replace(tracked, contact_frames=frames)], 33, 16.0, 16000)
        return av_sync_error_ms(scene.frames, audio[0], scene.fps, scene.sample_rate)

    late = sync_with_clicks_on([16, 31])
    assert (late["contacts"], late["onsets"], late["matched"]) == (2, 2, 2)
    assert late["mean_error_ms"] == pytest.approx((62.5 + 123.5) / 2, abs=0.5)
    hum_only = sync_with_clicks_on([])
    assert hum_only == {"contacts": 2, "onsets": 0, "matched": 0, "mean_error_ms": None}


def test_psnr_averages_channels_and_reads_only_the_masked_pixels():
    """1.0 is the peak and the error is per pixel (mean over RGB): an offset of 0.1 everywhere is
    exactly 20 dB; errors outside the mask do not count."""
    a = torch.full((2, 4, 4, 3), 0.5)
    assert psnr(a + 0.1, a) == pytest.approx(20.0, abs=1e-4)
    b = a.clone()
    b[:, :, 2:] += 0.3
    b[:, :, :2, 0] += 0.3  # one channel in three: mse 0.03
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True
    assert psnr(b, a, mask) == pytest.approx(10 * math.log10(1 / 0.03), abs=1e-4)
    assert psnr(b, a, ~mask) == pytest.approx(10 * math.log10(1 / 0.09), abs=1e-4)


def test_a_pitch_between_two_colours_goes_to_the_nearer_in_musical_interval():
    """Pitch is heard on a log scale: 272 Hz is nearer 330 (green) than 220 (red) in cents,
    though nearer 220 in Hz; 150-1000 Hz is read, so a low rumble does not count."""
    t = torch.arange(32000, dtype=torch.float64) / 16000
    tone = torch.sin(2 * math.pi * 272 * t).float()
    assert dominant_pitch_colour(tone, 16000) == "green"
    rumble = 3 * torch.sin(2 * math.pi * 60 * t).float()
    assert dominant_pitch_colour(tone + rumble, 16000) == "green"


def test_shape_and_colour_read_right_through_the_bundled_video_codec():
    """The eval reads decoded frames: the bundled codec softens a circle's kurtosis ratio to
    0.91-0.98 and a square's to 0.64-0.66 on these held-out scenes, on either side of the 0.8
    threshold, and a triangle's skew to -0.57..-0.77, still well below -0.15."""
    codec = bundle.video_codec()
    scenes = [render_scene(sample_scene_spec(HELD_OUT_SEED + i)) for i in range(12)]
    with torch.no_grad():
        decoded = codec.decode(codec.encode(torch.stack([s.frames for s in scenes])))
    for scene, frames in zip(scenes, decoded):
        truth = scene.objects[0].spec
        assert (dominant_colour(frames), dominant_shape(frames)) == (truth.colour, truth.shape)


def test_click_onsets_ignore_faint_ticks_and_count_a_long_burst_once():
    """Onsets are bursts of high-frequency energy relative to the loudest: a tick at a fifth of
    a click's amplitude (a decoder's artefact) is not a click, and a sustained 300 ms hiss is
    one event at its start, not one every ``min_gap``."""
    t = torch.arange(32000, dtype=torch.float64) / 16000
    hum = 0.15 * torch.sin(2 * math.pi * 440 * t)
    burst = click(16000).double()
    audio = hum.clone()
    audio[8000 : 8000 + len(burst)] += burst  # 0.5 s
    audio[24000 : 24000 + len(burst)] += 0.2 * burst  # 1.5 s
    assert click_onsets(audio.float(), 16000) == [0.5]
    hiss = hum.clone()
    hiss[16000:20800] += 0.3 * torch.sin(2 * math.pi * 3000 * t[16000:20800])  # 1.0-1.3 s
    assert click_onsets(hiss.float(), 16000) == [1.0]


def test_pitch_is_the_strongest_tone_in_the_band_without_leakage_from_outside_it():
    """Two hums: the louder names the colour (yellow's 660 Hz over blue's 440, both in the
    150-1000 Hz band). A loud tone just below the band must not leak into it and outvote a
    faint blue hum (the Hann window keeps its skirt out)."""
    t = torch.arange(32000, dtype=torch.float64) / 16000
    two = 0.15 * torch.sin(2 * math.pi * 660 * t) + 0.05 * torch.sin(2 * math.pi * 440 * t)
    assert dominant_pitch_colour(two.float(), 16000) == "yellow"
    rumble = torch.sin(2 * math.pi * 140.25 * t) + 0.01 * torch.sin(2 * math.pi * 440 * t)
    assert dominant_pitch_colour(rumble.float(), 16000) == "blue"
