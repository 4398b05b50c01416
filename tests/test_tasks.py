"""The training task mix produces the conditions each task promises, like the inference builders."""

from __future__ import annotations

import torch

from skyreels_core.masks import latent_known_mask
from skyreels_core.shapes import latent_index_of_frame
from skyreels_core.tasks import TASK_WEIGHTS, conditioning_pixels, draw_task

CLIP = torch.rand(33, 32, 32, 3, generator=torch.Generator().manual_seed(0))


def _task(task, seed=0):
    return conditioning_pixels(task, CLIP, torch.Generator().manual_seed(seed))


def _known_latents(known):
    return latent_known_mask(known).flatten(1).all(1).tolist()


def test_task_patterns():
    assert not _task("t2av")[1].any() and not _task("image_reference")[1].any()
    assert _known_latents(_task("i2av")[1]) == [True] + [False] * 8
    video, known = _task("interpolate")
    assert _known_latents(known) == [True] + [False] * 7 + [True]
    assert torch.equal(video[29], CLIP[32]) and torch.equal(
        video[32], CLIP[32]
    )  # the last frame is held
    for seed in range(20):
        extend = _task("extend", seed)[1].flatten(1).all(1)
        kept = int(extend.sum())
        assert (kept - 1) % 4 == 0 and extend[:kept].all() and not extend[kept:].any()
        video, known = _task("keyframes", seed)
        latents = _known_latents(known)
        assert (
            1 <= sum(latents) <= 3
            and known.flatten(1).all(1).sum() == known.flatten(1).any(1).sum()
        )
        edit = _task("edit", seed)[1]
        unknown = (~edit).float().mean().item()
        assert 1 / 16 <= unknown <= 1 / 4 and (edit == edit[0]).all()


def test_draw_task_follows_the_weights():
    generator = torch.Generator().manual_seed(0)
    draws = [draw_task(generator) for _ in range(4000)]
    for task, weight in TASK_WEIGHTS.items():
        assert abs(draws.count(task) / len(draws) - weight) < 0.03


def test_the_edit_box_draws_its_height_and_width_each_from_its_own_side():
    """On a 32 x 64 clip the unknown box is a rectangle 8-16 rows high and 16-32 columns wide,
    and both sides vary: a box whose width followed its height would train the edit task only on
    narrow boxes of wide clips (the inference mask can be any shape). It lies anywhere in the
    frame, its borders included."""
    wide = torch.rand(9, 32, 64, 3, generator=torch.Generator().manual_seed(1))
    sizes, edges = set(), set()
    for seed in range(60):
        unknown = ~conditioning_pixels("edit", wide, torch.Generator().manual_seed(seed))[1][0]
        rows, cols = unknown.any(1).nonzero()[:, 0], unknown.any(0).nonzero()[:, 0]
        h, w = len(rows), len(cols)
        assert int(unknown.sum()) == h * w  # one solid rectangle
        assert 8 <= h <= 16 and 16 <= w <= 32, (seed, h, w)
        sizes.add((h, w))
    assert len({h for h, _ in sizes}) > 3 and len({w for _, w in sizes}) > 3
    # On an 8 x 8 clip the box reaches every border (an off-by-one range never touches the last).
    small = wide[:, :8, :8]
    for seed in range(40):
        unknown = ~conditioning_pixels("edit", small, torch.Generator().manual_seed(seed))[1][0]
        rows, cols = unknown.any(1).nonzero()[:, 0], unknown.any(0).nonzero()[:, 0]
        borders = {"top": rows[0] == 0, "bottom": rows[-1] == 7}
        borders |= {"left": cols[0] == 0, "right": cols[-1] == 7}
        edges |= {border for border, touched in borders.items() if touched}
    assert edges == {"top", "bottom", "left", "right"}


def test_the_keyframes_task_holds_one_to_three_keyframes_and_sometimes_several():
    """The keyframes task draws 1-3 frames: always one would never train the model on several
    keyframes, the Keyframes mask's main use."""
    counts = set()
    for seed in range(40):
        known = _task("keyframes", seed)[1]
        held = sum(_known_latents(known))
        assert 1 <= held <= 3
        counts.add(held)
    assert counts == {1, 2, 3}


def test_known_pixels_are_the_clips_own_frames_each_held_over_its_latent_group():
    """What a task says is known is the clip's own picture: i2av holds frame 0; the keyframes
    task holds each drawn frame over its whole latent group (every frame of the group shows that
    one frame of the clip); extend keeps the clip's first 1 to T_lat // 2 latent groups as they
    are. Everything else is the clip unchanged (the model input masks it anyway)."""
    for seed in range(20):
        for task in ("i2av", "keyframes", "extend"):
            video, known = _task(task, seed)
            held = known.flatten(1).all(1)
            assert torch.equal(video[~held], CLIP[~held])
            frames = held.nonzero()[:, 0].tolist()
            groups = {latent_index_of_frame(f) for f in frames}
            members = {g: [f for f in range(33) if latent_index_of_frame(f) == g] for g in groups}
            assert sorted(f for g in groups for f in members[g]) == frames  # whole groups only
            if task == "extend":
                assert torch.equal(video, CLIP) and groups == set(range(len(groups)))
                assert 1 <= len(groups) <= 9 // 2
                continue
            for group in groups:
                shown = video[members[group]]
                assert (shown == shown[0]).all()
                assert any(torch.equal(CLIP[f], shown[0]) for f in members[group])
            if task == "i2av":
                assert frames == [0] and torch.equal(video[0], CLIP[0])
