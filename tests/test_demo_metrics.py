"""The eval's measurements score the world's own ground truth as perfect and catch corruptions."""

from __future__ import annotations

import torch

from skyreels_core.demo.metrics import (
    av_sync_error_ms,
    click_onsets,
    contact_frames,
    dominant_colour,
    dominant_pitch_colour,
    dominant_shape,
    mean_av_sync,
    psnr,
)
from skyreels_core.demo.world import render_scene, sample_scene_spec, spec_from_caption


def test_ground_truth_scores_perfectly():
    for seed in range(30):
        scene = render_scene(sample_scene_spec(7000 + seed))
        truth = scene.objects[0].spec
        assert dominant_colour(scene.frames) == truth.colour
        assert dominant_shape(scene.frames) == truth.shape
        assert dominant_pitch_colour(scene.audio[0], scene.sample_rate) == truth.colour
        onsets = click_onsets(scene.audio[0], scene.sample_rate)
        assert [round(t * scene.fps) for t in onsets] == scene.contact_frames
        inner = [f for f in scene.contact_frames if 2 <= f < 31]
        assert all(abs(a - b) <= 1 for a, b in zip(contact_frames(scene.frames), inner))


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
