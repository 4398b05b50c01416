"""The training task mix produces the conditions each task promises, like the inference builders."""

from __future__ import annotations

import torch

from skyreels_core.masks import latent_known_mask
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
