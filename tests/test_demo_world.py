"""The demo world is deterministic and its ground truth matches its pixels and samples."""

from __future__ import annotations

import pytest
import torch

from skyreels_core.demo.dataset import HELD_OUT_SEED
from skyreels_core.demo.world import (
    BACKGROUND,
    COLOURS,
    GRAVITY,
    PITCH_FOR_COLOUR,
    click,
    parse_caption,
    render_scene,
    sample_scene_spec,
    simulate,
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


# Held-out scenes as the bundled model was trained on them: (seed offset, caption, contact
# frames, centre (x, y) at frames 0/16/32, pixel sum, audio energy).
WORLD_AS_TRAINED = [
    (1, "a blue circle bounces on the floor", [14],
     [36.309, 21.024, 30.799, 47.599, 25.289, 25.054], 57524.2, 375.57),
    (2, "a green square moves right", [31],
     [19.047, 30.829, 38.672, 30.829, 55.023, 30.829], 55796.8, 375.61),
    (6, "a blue triangle moves left", [19],
     [40.413, 36.331, 12.841, 36.331, 30.466, 36.331], 56232.2, 375.57),
]  # fmt: skip


@pytest.mark.parametrize("offset, caption, contacts, centres, pixels, energy", WORLD_AS_TRAINED)
def test_the_world_stays_the_one_the_bundled_model_was_trained_on(
    offset, caption, contacts, centres, pixels, energy
):
    """The bundle's weights and the eval's held-out ground truth both come from this world: a
    changed gravity, speed range, shape size or click would silently score the model against a
    world it never saw, though every self-consistency check still passed."""
    scene = render_scene(sample_scene_spec(HELD_OUT_SEED + offset))
    assert scene.caption == caption and scene.contact_frames == contacts
    positions = scene.objects[0].positions[[0, 16, 32]].flatten().tolist()
    assert positions == pytest.approx(centres, abs=2e-3)
    assert scene.frames.sum().item() == pytest.approx(pixels, abs=0.2)
    assert scene.audio.pow(2).sum().item() == pytest.approx(energy, abs=0.02)


def test_shapes_move_as_the_caption_says_under_gravity_and_stop_at_the_walls():
    """A shape gliding left moves by its speed from the first frame on, turns at the left wall
    with its edge on it (that frame clicks) and keeps its height; a bouncing one falls with
    constant acceleration between contacts."""
    left = render_scene(spec_from_caption("a blue square moves left", seed=1)).objects[0]
    x, y = left.positions.unbind(1)
    radius = left.spec.radius * 64
    assert left.spec.vx < 0 and x[0] > 32  # starts right of centre, so it crosses the frame
    (contact,) = left.contact_frames
    assert torch.allclose(x[1:contact] - x[: contact - 1], torch.tensor(left.spec.vx), atol=1e-4)
    assert x[contact] == pytest.approx(radius) and (x[contact + 1 :] > x[contact]).all()
    assert (y == y[0]).all()
    fall = render_scene(spec_from_caption("a green circle bounces on the floor", seed=3))
    y = fall.objects[0].positions[:, 1]
    accelerations = [
        (y[f + 1] - 2 * y[f] + y[f - 1]).item()
        for f in range(1, 32)
        if not {f - 1, f, f + 1} & set(fall.contact_frames)
    ]
    assert len(accelerations) > 20 and accelerations == pytest.approx(
        [GRAVITY] * len(accelerations), abs=1e-4
    )


def test_motion_scales_with_the_frame_size():
    """At 128 px every length doubles (start, radius, speed, gravity), so the same scene is the
    same motion twice as large, with its contacts on the same frames."""
    spec = spec_from_caption("a green circle bounces on the floor", seed=3).objects[0]
    small, large = simulate(spec, 33, 64), simulate(spec, 33, 128)
    assert torch.allclose(large.positions, 2 * small.positions, atol=1e-3)
    assert large.contact_frames == small.contact_frames


def test_two_objects_each_hum_click_and_are_captioned():
    """Two-object scenes (the training mix): different colours, both named in the caption, both
    hums in the sound and both objects' contacts clicking."""
    spec = sample_scene_spec(1, max_objects=2)
    scene = render_scene(spec)
    first, second = scene.objects
    assert first.spec.colour != second.spec.colour
    assert scene.caption == "a yellow square moves left and a green triangle bounces on the floor"
    assert scene.contact_frames == sorted(first.contact_frames + second.contact_frames) == [14, 26]
    spectrum = torch.fft.rfft(scene.audio[0]).abs()
    hz = scene.sample_rate / scene.audio.shape[1]  # Hz per bin
    for tracked in (first, second):
        bin_ = round(PITCH_FOR_COLOUR[tracked.spec.colour] / hz)
        assert spectrum[bin_] > 0.5 * spectrum.max()
    for frame in scene.contact_frames:
        start = round(frame / scene.fps * scene.sample_rate)
        assert scene.audio[0, start : start + 100].abs().max() > 0.5


def test_shapes_are_drawn_in_their_exact_colour_on_the_background():
    """The palette colour inside a shape and the background outside are exact (only edge pixels
    blend), so colour metrics on the truth have nothing to round away; the click is a 3 kHz
    burst, well above every hum."""
    scene = render_scene(spec_from_caption("a yellow circle moves right", seed=0))
    x, y = (round(v) for v in scene.objects[0].positions[0].tolist())
    assert scene.frames[0, y, x].tolist() == pytest.approx(COLOURS["yellow"])
    assert scene.frames[0, 0, 0].tolist() == pytest.approx(BACKGROUND)
    burst = click(16000)
    assert torch.fft.rfft(burst, n=16000).abs().argmax().item() == 3000


def test_a_caption_without_motion_bounces_and_one_without_shape_is_refused():
    """Users type partial prompts: a missing motion means the default bounce, a missing colour
    or shape is an error (the demo cannot draw it)."""
    assert parse_caption("A Red Circle") == ("red", "circle", "bounces on the floor")
    assert parse_caption("A GREEN SQUARE MOVES RIGHT, fast") == ("green", "square", "moves right")
    for text in ("a red hexagon", "a purple circle"):
        with pytest.raises(ValueError, match="names no demo colour"):
            parse_caption(text)
