"""The demo world rendered into training tensors: every trainer (codecs, model, refiner) draws its
clips here, from seeds disjoint from the held-out evaluation seeds."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .world import render_scene, sample_scene_spec

FRAMES = 33
# The model's clips, and the refiner's output (the video decoder is fine-tuned for both).
LOW_SIZE, HIGH_SIZE = 64, 128
SCENES_PER_SEED = 100_000
HELD_OUT_SEED = 1_000_000  # evaluation scenes start here; training never reaches it


@dataclass
class WorldData:
    pixels: torch.Tensor  # [N, T, H, W, 3]
    audio: torch.Tensor  # [N, 1, S]
    captions: list[str]


def training_seeds(count: int, seed: int) -> range:
    """Scene seeds ``seed * SCENES_PER_SEED + i`` for ``count`` training clips; every demo trainer
    draws from here, so none reaches the held-out evaluation scenes."""
    if not 0 <= count <= SCENES_PER_SEED or (seed + 1) * SCENES_PER_SEED > HELD_OUT_SEED:
        raise ValueError(
            f"seed {seed} with {count} scenes would reach the held-out evaluation scenes; "
            f"use a seed below {HELD_OUT_SEED // SCENES_PER_SEED} and at most {SCENES_PER_SEED} scenes"
        )
    return range(seed * SCENES_PER_SEED, seed * SCENES_PER_SEED + count)


def render_world(
    count: int, seed: int, size: int = LOW_SIZE, palette: dict[str, str] | None = None
) -> WorldData:
    """``count`` training scenes at ``size`` px (the world scales motion and sizes with it),
    their colours rendered through ``palette`` (:func:`render_scene`)."""
    scenes = [
        render_scene(
            sample_scene_spec(scene, max_objects=2), frames=FRAMES, size=size, palette=palette
        )  # fmt: skip
        for scene in training_seeds(count, seed)
    ]
    return WorldData(
        torch.stack([s.frames for s in scenes]),
        torch.stack([s.audio for s in scenes]),
        [s.caption for s in scenes],
    )
