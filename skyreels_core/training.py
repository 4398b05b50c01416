"""Multi-task flow-matching training of the dual-stream model (DESIGN §3, the paper's task mix).

One step: draw a task for the batch, build each clip's condition with the inference builders
(``tasks.conditioning_pixels`` -> ``masks.condition_from_pixels``), noise both streams to a
shifted-uniform time, and regress the velocity on the cells that are not given. Known cells ride
on the path of the condition latents, as the sampler puts them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import InputError
from .loading import write_safetensors
from .masks import condition_from_pixels
from .objective import flow_matching_loss, masked_mse, noised, velocity_target
from .paths import output_folder
from .sampling.schedules import shift_sigma
from .tasks import FIXED_BY_CLIP, conditioning_pixels, draw_task
from .types import References, TextEncoding, VideoCondition

TEXT_DROPOUT = (
    0.1  # prompts dropped to the sampler's null text, so guidance has an unconditional branch
)
TIME_SHIFT = 3.0


KEYFRAME_SHARE = 0.5
"""Share of steps that also generate high-res keyframes, where the batch carries them: the
Sampler's low-res clip + high-res keyframes pass (DESIGN §4), one noise level for both."""
MAX_KEYFRAMES = 2


@dataclass
class Batch:
    """Clean training clips: pixels [B, T, H, W, 3], latents of both streams, their prompts, and
    optionally the same clips' latents at the keyframes' higher resolution [B, C, T', h, w]."""

    pixels: torch.Tensor
    video_latents: torch.Tensor
    audio_latents: torch.Tensor
    text: TextEncoding
    keyframe_latents: torch.Tensor | None = None
    clips: torch.Tensor | None = None
    """Each clip's index in the world it was drawn from, which keys :attr:`encoded_conditions`."""
    encoded_conditions: dict[tuple[int, str, int], VideoCondition] | None = None
    """Condition latents already encoded, shared by a world and the batches drawn from it (see
    :func:`_condition`); None encodes every step's conditions afresh."""


def check_counts(counts: dict[str, int]) -> None:
    """Each of a training command's counts (flag: value) is 1 or more, refused by its flag before
    any work: 0 or less divides by zero (--checkpoint-every), crashes in torch (--batch) or
    writes a file that learned nothing (--steps, a LoRA's --rank)."""
    for flag, value in counts.items():
        if value < 1:
            raise InputError(flag, f"{value}", "give 1 or more")


def start_run(seed: int, out: Path) -> tuple[torch.Generator, Path, float]:
    """A training command's start: torch's global generator seeded (weight initialisation), a
    CPU generator for the data draws, the output folder checked, and the clock started."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed), output_folder(Path(out), "--out"), time.monotonic()


def sample_times(batch: int, generator: torch.Generator) -> torch.Tensor:
    return shift_sigma(torch.rand(batch, generator=generator), TIME_SHIFT)


def _audio_times(share: float, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The sound's flow times: the picture's ``t``, but for a ``share`` of the clips one drawn
    apart, so the model learns the sound at every time against any picture (the sampler's
    ``audio_lag``). No draw at share 0: a model of one time trains on the batches it always did."""
    if not share:
        return t
    own = torch.rand(len(t), generator=generator) < share
    return torch.where(own, sample_times(len(t), generator), t)


def training_loss(
    model, video_codec, batch: Batch, generator: torch.Generator, task: str | None = None
) -> tuple[torch.Tensor, str]:
    task = task or draw_task(generator)
    conditions = [
        _condition(video_codec, batch, row, task, *conditioning_pixels(task, clip, generator))
        for row, clip in enumerate(batch.pixels)
    ]
    condition_latents = torch.cat([c.latents for c in conditions])
    known = torch.cat([c.known_mask for c in conditions])
    size = len(batch.pixels)
    references = None
    if task == "image_reference":
        frame = int(torch.randint(batch.pixels.shape[1], (), generator=generator))
        references = References(video=video_codec.encode(batch.pixels[:, frame : frame + 1]))
    elif task == "audio_reference":
        length = batch.audio_latents.shape[2] // 3
        start = int(torch.randint(batch.audio_latents.shape[2] - length, (), generator=generator))
        references = References(audio=batch.audio_latents[:, :, start : start + length])
    t = sample_times(size, generator)
    t_audio = _audio_times(model.config.audio_time_share, t, generator)
    video_noise = torch.randn(batch.video_latents.shape, generator=generator)
    audio_noise = torch.randn(batch.audio_latents.shape, generator=generator)
    video_x0 = torch.where(known.bool(), condition_latents, batch.video_latents)
    video_in = torch.cat([noised(video_x0, video_noise, t), condition_latents, known], dim=1)
    text = batch.text.nulled(torch.rand(size, generator=generator) < TEXT_DROPOUT)
    keyframes = _keyframes(batch, known, t, generator)
    out = model(
        video_in,
        t,
        text,
        audio=noised(batch.audio_latents, audio_noise, t_audio),
        audio_timestep=t_audio,
        references=references,
        keyframes=None if keyframes is None else keyframes.model_input,
        keyframe_indices=None if keyframes is None else keyframes.indices,
    )
    loss = flow_matching_loss(
        out.video, video_x0, video_noise, out.audio, batch.audio_latents, audio_noise, known
    )
    if keyframes is not None:
        loss = loss + masked_mse(out.keyframes, velocity_target(keyframes.x0, keyframes.noise))
    return loss, task


def _condition(
    codec, batch: Batch, row: int, task: str, pixels: torch.Tensor, known: torch.Tensor
) -> VideoCondition:
    """Clip ``row``'s condition, from ``batch.encoded_conditions`` where its task's known pixels
    follow from the clip (:data:`.tasks.FIXED_BY_CLIP`). Why: the codec's encodes are 3 % of a
    demo model step, and these tasks are a third of the steps; the draws are made as before and
    the latents are the same numbers, so a run trains the same weights bit for bit."""
    cache = batch.encoded_conditions
    if cache is None or batch.clips is None or task not in FIXED_BY_CLIP:
        return condition_from_pixels(codec, pixels, known)
    key = (int(batch.clips[row]), task, int(known.sum()))
    if key not in cache:
        cache[key] = condition_from_pixels(codec, pixels, known)
    return cache[key]


@dataclass
class _Keyframes:
    """One step's high-res keyframes: their latent frames, clean latents and noise, and the
    model's input for them (noised latents beside all-zero condition channels)."""

    indices: list[int]
    x0: torch.Tensor
    noise: torch.Tensor
    model_input: torch.Tensor


def _keyframes(
    batch: Batch, known: torch.Tensor, t: torch.Tensor, generator: torch.Generator
) -> _Keyframes | None:
    """High-res keyframes for a :data:`KEYFRAME_SHARE` of the steps whose batch carries them, as
    the Sampler makes them: at latent frames no clip of the batch keeps from its condition (the
    Sampler refuses those), noised at the clip's time, their condition channels all zero (no
    high-res condition, all unknown)."""
    if batch.keyframe_latents is None:
        return None
    if float(torch.rand((), generator=generator)) >= KEYFRAME_SHARE:
        return None
    free = (known.amax(dim=(0, 1, 3, 4)) == 0).nonzero().flatten().tolist()
    if not free:  # a spatial edit keeps part of every frame
        return None
    count = int(torch.randint(1, min(MAX_KEYFRAMES, len(free)) + 1, (), generator=generator))
    indices = sorted(free[i] for i in torch.randperm(len(free), generator=generator)[:count])
    x0 = batch.keyframe_latents[:, :, indices]
    noise = torch.randn(x0.shape, generator=generator)
    condition = x0.new_zeros(x0.shape[0], x0.shape[1] + known.shape[1], *x0.shape[2:])
    return _Keyframes(indices, x0, noise, torch.cat([noised(x0, noise, t), condition], dim=1))


def save_checkpoint(
    path: Path,
    model,
    optimiser: torch.optim.Optimizer,
    step: int,
    generator: torch.Generator | None = None,
) -> None:
    """Model and optimiser state as safetensors (no pickle), written then renamed; with the batch
    generator's state, so a resumed run draws the batches an unbroken one would have."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    if generator is not None:
        tensors["generator"] = generator.get_state()
    for index, state in optimiser.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optimiser.{index}.{name}"] = torch.as_tensor(value).contiguous()
    metadata = {"step": str(step), "config": json.dumps(optimiser.state_dict()["param_groups"])}
    write_safetensors(tensors, path, metadata)


def load_checkpoint(
    path: Path,
    model,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
) -> int:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns the step it was taken at.
    The trainers resume from the one in their --out, so a file there that is no checkpoint, or one
    of another model configuration (an earlier run's leftover), is refused naming --out."""
    fix = "delete it to start afresh, or use another --out"
    try:
        with safe_open(str(path), framework="pt") as handle:
            step = int((handle.metadata() or {})["step"])
            # Copied out of the mapped file: the optimiser keeps its state tensors as given, and
            # Windows refuses to replace a file still mapped (every later checkpoint failed).
            tensors = {key: handle.get_tensor(key).clone() for key in handle.keys()}
    except (SafetensorError, OSError, KeyError, ValueError):
        raise InputError("--out", f"{path} is not a training checkpoint", fix) from None
    try:
        model.load_state_dict(
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        state = optimiser.state_dict()
        for key, value in tensors.items():
            if key.startswith("optimiser."):
                _, index, name = key.split(".", 2)
                state["state"].setdefault(int(index), {})[name] = value
        optimiser.load_state_dict(state)
        if generator is not None and "generator" in tensors:
            generator.set_state(tensors["generator"])
    except (RuntimeError, ValueError, KeyError):
        raise InputError(
            "--out", f"{path} is a checkpoint of another model configuration", fix
        ) from None
    return step


def adamw(parameters, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW through its fused kernel: the same update as the per-parameter loop in a few kernels
    a step instead of about ten per parameter, which is most of the optimiser's time for the
    demo's hundreds of small tensors."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)


def cosine_with_warmup(
    optimiser: torch.optim.Optimizer, step: int, steps: int, peak: float, warmup: int = 100
) -> None:
    """Linear warm-up into a cosine decay to zero at ``steps``; set per step so a resumed run
    continues the same curve."""
    lr = (
        peak
        * min(1.0, (step + 1) / warmup)
        * 0.5
        * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    for group in optimiser.param_groups:
        group["lr"] = lr
