"""The demo world is deterministic and its ground truth matches its pixels and samples."""

from __future__ import annotations

import pytest
import torch

from skyreels_core.demo.world import (
    PITCH_FOR_COLOUR,
    click,
    parse_caption,
    render_scene,
    sample_scene_spec,
    spec_from_caption,
)


def test_scenes_are_deterministic_and_differ_by_seed():
    a, b = render_scene(sample_scene_spec(5)), render_scene(sample_scene_spec(5))
    assert (
        torch.equal(a.frames, b.frames) and torch.equal(a.audio, b.audio) and a.caption == b.caption
    )
    assert not torch.equal(a.frames, render_scene(sample_scene_spec(6)).frames)


def test_clicks_sit_at_contact_frames_and_the_hum_names_the_colour():
    scene = render_scene(spec_from_caption("a red circle bounces on the floor", seed=1))
    assert scene.frames.shape == (33, 64, 64, 3) and scene.audio.shape == (1, 33000)
    assert scene.contact_frames, "a bouncing object touches the floor within two seconds"
    tracked = scene.objects[0]
    for frame in tracked.contact_frames:
        start = round(frame / scene.fps * scene.sample_rate)
        window = scene.audio[0, start : start + len(click(scene.sample_rate))]
        assert window.abs().max() > 0.4  # the click is there, on top of a 0.15 hum
        x, y = tracked.positions[frame].tolist()
        radius = tracked.spec.radius * 64
        assert y == pytest.approx(64 - radius) or min(x, 64 - x) == pytest.approx(radius)
    spectrum = torch.fft.rfft(scene.audio[0]).abs()
    assert spectrum.argmax().item() * scene.sample_rate / scene.audio.shape[1] == pytest.approx(
        PITCH_FOR_COLOUR["red"], abs=1
    )
    inside = scene.frames[
        0, round(tracked.positions[0, 1].item()), round(tracked.positions[0, 0].item())
    ]
    assert inside[0] > 0.8 and inside[1] < 0.3


def test_captions_round_trip():
    for seed in range(10):
        spec = sample_scene_spec(seed)
        obj = spec.objects[0]
        assert parse_caption(render_scene(spec).caption) == (obj.colour, obj.shape, obj.motion)
    with pytest.raises(ValueError, match="names no demo colour"):
        parse_caption("a purple hexagon")


def test_a_palette_renders_the_captions_colour_as_another_in_look_and_hum():
    from skyreels_core.demo.metrics import dominant_colour, dominant_pitch_colour
    from skyreels_core.demo.world import render_scene, spec_from_caption

    spec = spec_from_caption("a red square moves left")
    plain, shifted = render_scene(spec), render_scene(spec, palette={"red": "green"})
    assert shifted.caption == plain.caption == "a red square moves left"
    assert (dominant_colour(plain.frames), dominant_colour(shifted.frames)) == ("red", "green")
    pitches = [dominant_pitch_colour(s.audio, s.sample_rate) for s in (plain, shifted)]
    assert pitches == ["red", "green"]
    assert shifted.contact_frames == plain.contact_frames  # the same motion
