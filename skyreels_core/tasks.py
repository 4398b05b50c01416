"""The multi-task mix of the paper's training (§ inpainting): which pixels are known per task.

Training draws a task per sample and builds its pixel known-mask here; the condition latents then
come from ``masks.condition_from_pixels``, the same function inference uses, so the model is
trained on exactly the conditions the mask builders produce (snapping included).
"""

from __future__ import annotations

import torch

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


def draw_task(generator: torch.Generator) -> str:
    names = list(TASK_WEIGHTS)
    weights = torch.tensor([TASK_WEIGHTS[name] for name in names])
    return names[int(torch.multinomial(weights, 1, generator=generator))]


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An int in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def pixel_known_mask(
    task: str,
    frames: int,
    height: int,
    width: int,
    generator: torch.Generator,
    temporal_stride: int = 4,
) -> torch.Tensor:
    """[T, H, W] bool, True where the task gives the pixel. Frame choices sit on latent boundaries
    (frame 0, then every ``temporal_stride``-th) so that the known frames survive snapping."""
    known = torch.zeros(frames, height, width, dtype=torch.bool)
    latent_frames = 1 + (frames - 1) // temporal_stride
    if task == "i2av":
        known[0] = True
    elif task == "extend":
        kept_latents = _randint(1, max(1, latent_frames // 2), generator)
        known[: 1 + (kept_latents - 1) * temporal_stride] = True
    elif task == "interpolate":
        known[0] = known[-1] = True
    elif task == "keyframes":
        count = _randint(1, min(3, latent_frames), generator)
        latents = torch.randperm(latent_frames, generator=generator)[:count]
        for latent in latents.tolist():
            known[0 if latent == 0 else latent * temporal_stride] = True
    elif task == "edit":
        box_h = _randint(height // 4, height // 2, generator)
        box_w = _randint(width // 4, width // 2, generator)
        top = _randint(0, height - box_h, generator)
        left = _randint(0, width - box_w, generator)
        known[:] = True
        known[:, top : top + box_h, left : left + box_w] = False
    elif task not in TASK_WEIGHTS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_WEIGHTS)}")
    return known
