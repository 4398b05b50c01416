"""The multi-task mix of the paper's training: which pixels are given, per task.

Training draws a task per sample and builds its conditioning pixels here; the condition latents
then come from ``masks.condition_from_pixels``, the same function inference uses, so the model is
trained on exactly the conditions the mask builders produce (snapping included).
"""

from __future__ import annotations

import torch

from .masks import hold_keyframes

# Relative frequency of each task in a training batch. T2AV dominates as in the paper's mix; the
# reference tasks are generation tasks (nothing known in the clip) with references attached.
TASK_WEIGHTS: dict[str, float] = {
    "t2av": 0.30,
    "i2av": 0.15,
    "extend": 0.10,
    "interpolate": 0.10,
    "keyframes": 0.10,
    "edit": 0.10,
    "image_reference": 0.10,
    "audio_reference": 0.05,
}


# The tasks whose known pixels follow from the clip alone, an extension's also from how many
# frames it keeps (which the count of known pixels tells): their condition latents can be encoded
# once per clip (``training.Batch.encoded_conditions``).
FIXED_BY_CLIP = frozenset({"i2av", "extend", "interpolate"})


def draw_task(generator: torch.Generator) -> str:
    names = list(TASK_WEIGHTS)
    weights = torch.tensor([TASK_WEIGHTS[name] for name in names])
    return names[int(torch.multinomial(weights, 1, generator=generator))]


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An int in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def conditioning_pixels(
    task: str, video: torch.Tensor, generator: torch.Generator, temporal_stride: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditioning video and its pixel known-mask [T, H, W] for one training clip [T, H, W, 3].

    Keyframe tasks hold the chosen frame over its whole latent group, exactly as the inference
    builders do (``masks.hold_keyframes``), so training sees the conditions users will give.
    """
    frames, height, width = video.shape[:3]
    condition = video.clone()
    known = torch.zeros(frames, height, width, dtype=torch.bool)
    latent_frames = 1 + (frames - 1) // temporal_stride
    if task == "i2av":
        hold_keyframes(condition, known, {0: video[0]}, temporal_stride)
    elif task == "extend":
        kept_latents = _randint(1, max(1, latent_frames // 2), generator)
        known[: 1 + (kept_latents - 1) * temporal_stride] = True
    elif task == "interpolate":
        hold_keyframes(condition, known, {0: video[0], frames - 1: video[-1]}, temporal_stride)
    elif task == "keyframes":
        count = _randint(1, min(3, frames), generator)
        indices = torch.randperm(frames, generator=generator)[:count].tolist()
        hold_keyframes(condition, known, {i: video[i] for i in indices}, temporal_stride)
    elif task == "edit":
        box_h = _randint(height // 4, height // 2, generator)
        box_w = _randint(width // 4, width // 2, generator)
        top = _randint(0, height - box_h, generator)
        left = _randint(0, width - box_w, generator)
        known[:] = True
        known[:, top : top + box_h, left : left + box_w] = False
    elif task not in TASK_WEIGHTS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_WEIGHTS)}")
    return condition, known
