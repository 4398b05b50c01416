"""The training task mix produces the known-pixel patterns each task promises."""

from __future__ import annotations

import torch

from skyreels_core.tasks import TASK_WEIGHTS, draw_task, pixel_known_mask


def _mask(task, seed=0):
    return pixel_known_mask(task, 33, 32, 32, torch.Generator().manual_seed(seed))


def test_task_patterns():
    assert not _mask("t2av").any()
    assert _mask("i2av")[0].all() and not _mask("i2av")[1:].any()
    both = _mask("interpolate")
    assert both[0].all() and both[-1].all() and not both[1:-1].any()
    for seed in range(20):
        extend = _mask("extend", seed).flatten(1).all(1)
        kept = int(extend.sum())
        assert (kept - 1) % 4 == 0 and extend[:kept].all() and not extend[kept:].any()
        keys = _mask("keyframes", seed).flatten(1).all(1).nonzero().flatten().tolist()
        assert 1 <= len(keys) <= 3 and all(k == 0 or k % 4 == 0 for k in keys)
        edit = _mask("edit", seed)
        unknown = (~edit).float().mean().item()
        assert 1 / 16 <= unknown <= 1 / 4 and (edit == edit[0]).all()


def test_draw_task_follows_the_weights():
    generator = torch.Generator().manual_seed(0)
    draws = [draw_task(generator) for _ in range(4000)]
    for task, weight in TASK_WEIGHTS.items():
        assert abs(draws.count(task) / len(draws) - weight) < 0.03
