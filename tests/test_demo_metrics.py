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


def test_wrong_colour_and_psnr():
    scene = render_scene(spec_from_caption("a red square moves right", seed=2))
    recoloured = scene.frames[..., [2, 1, 0]]  # red becomes blue
    assert dominant_colour(recoloured) == "blue"
    assert psnr(scene.frames, scene.frames) == 99.0
    noisy = (scene.frames + 0.01 * torch.randn_like(scene.frames)).clamp(0, 1)
    assert 35 < psnr(noisy, scene.frames) < 45
