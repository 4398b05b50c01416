"""``python -m skyreels_core train-demo-refiner``: train the bundled demo refiner (DESIGN §5).

The production :class:`~skyreels_core.refiner.RefinerDiT` in its ``demo`` config learns, on the
demo world, to turn the 64 px clip's latents into the 128 px clip's latents at the same, twice or
four times the frame rate: the low-res input is the world rendered at 64 px keeping every r-th
frame, the target the same scene rendered at 128 px with every frame, both through the bundled
demo video codec. Its condition comes from :func:`~skyreels_core.refiner.build_condition`, the
function inference uses, with 0-3 high-res keyframes taken from the 128 px clip at the low frame
rate (what the sampler's keyframe mode gives). Flow matching with the generator's objective; the
loss skips the held keyframes, as it skips known cells in the generator's training.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..objective import flow_matching_loss, noised
from ..refiner import FPS_FACTORS, REFINER_PRESETS, RefinerDiT, build_condition, save_refiner
from ..training import (
    adamw,
    check_counts,
    cosine_with_warmup,
    load_checkpoint,
    save_checkpoint,
    start_run,
)
from . import bundle
from .dataset import FRAMES, HIGH_SIZE, LOW_SIZE, training_seeds
from .world import render_scene, sample_scene_spec

SCALE = HIGH_SIZE // LOW_SIZE
FPS_WEIGHTS = {1: 0.4, 2: 0.4, 4: 0.2}  # x1 (pure super-resolution) and x2 are the common asks
MAX_KEYFRAMES = 3
MEAN_SHARE = 0.5
"""Share of samples at t = 1, where one step returns the refiner's mean prediction of the clip:
the PSNR-optimal output, and what a one-step refinement from ``denoise_start`` 1 gives."""
SPARSE_SHARE = 0.3
"""Share of steps run with the node's default block-sparse attention, so the coarse gates learn
and the weights serve sparse and dense attention alike."""
SPARSE_KEEP_RATIO = 0.25


@dataclass
class RefinerData:
    """Latents of the same scenes at both sizes: ``low[r]`` [N, C, T_r, 8, 8] and ``high[r]``
    [N, C, T_r, 16, 16] keep every r-th frame; ``high[1]`` is the target of every fps factor."""

    low: dict[int, torch.Tensor]
    high: dict[int, torch.Tensor]

    def __len__(self) -> int:
        return len(self.high[1])


def scene_pair(seed: int, scale: int = SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """(64 px frames, 64 * ``scale`` px frames) [T, H, W, 3] of one world scene: the world scales
    positions, speeds and sizes with the frame size, so both show the same motion."""
    spec = sample_scene_spec(seed, max_objects=2)
    return (
        render_scene(spec, frames=FRAMES, size=LOW_SIZE).frames,
        render_scene(spec, frames=FRAMES, size=LOW_SIZE * scale).frames,
    )


@torch.no_grad()
def encode_pair(codec, low: torch.Tensor, high: torch.Tensor, fps_factor: int):
    """Latents of every ``fps_factor``-th frame of a [B, T, H, W, 3] pair (T = 4k + 1 stays so)."""
    return codec.encode(low[:, ::fps_factor]), codec.encode(high[:, ::fps_factor])


def encode_world(codec, count: int, seed: int) -> RefinerData:
    """``count`` training scenes, drawn as every demo trainer draws them."""
    low, high = {r: [] for r in FPS_FACTORS}, {r: [] for r in FPS_FACTORS}
    for scene in tqdm(training_seeds(count, seed), desc="world at 64 and 128 px", leave=False):
        pair = [frames[None] for frames in scene_pair(scene)]
        for r in FPS_FACTORS:
            z_low, z_high = encode_pair(codec, *pair, r)
            low[r].append(z_low)
            high[r].append(z_high)
    return RefinerData(
        {r: torch.cat(z) for r, z in low.items()}, {r: torch.cat(z) for r, z in high.items()}
    )


def training_loss(
    model: RefinerDiT,
    data: RefinerData,
    index: torch.Tensor,
    fps_factor: int,
    generator: torch.Generator,
    keep_ratio: float | None = None,
) -> torch.Tensor:
    """One flow-matching loss on the scenes ``index`` at ``fps_factor``: times uniform in (0, 1),
    so every start time the refine node offers was trained, or 1 for a ``MEAN_SHARE`` of them;
    attention block-sparse when ``keep_ratio`` is given."""
    low, source, target = (
        data.low[fps_factor][index],
        data.high[fps_factor][index],
        data.high[1][index],
    )
    frames = low.shape[2]
    count = int(torch.randint(0, min(MAX_KEYFRAMES, frames) + 1, (), generator=generator))
    chosen = sorted(torch.randperm(frames, generator=generator)[:count].tolist())
    condition = build_condition(
        low,
        scale=SCALE,
        fps_factor=fps_factor,
        keyframes=source[:, :, chosen] if chosen else None,
        keyframe_indices=chosen,
    )
    t = torch.rand(len(index), generator=generator)
    t = torch.where(torch.rand(len(index), generator=generator) < MEAN_SHARE, 1.0, t)
    noise = torch.randn(target.shape, generator=generator)
    x0 = torch.where(condition.held, condition.latents, target)
    video = torch.cat([noised(x0, noise, t), condition.model_condition], dim=1)
    velocity = model(video, t, keep_ratio)
    return flow_matching_loss(velocity, x0, noise, known_mask=condition.held.float())


def draw_fps_factor(generator: torch.Generator) -> int:
    weights = torch.tensor(list(FPS_WEIGHTS.values()))
    return list(FPS_WEIGHTS)[int(torch.multinomial(weights, 1, generator=generator))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=bundle.WEIGHTS_DIR, help="folder for refiner.safetensors"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=256, help="training scenes from the world")
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=32.0,
        help="stop training after this long; the learning rate anneals over whichever of "
        "--steps or --max-minutes ends first (reproducible when --steps ends first)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=250)


def run(args: argparse.Namespace) -> int:
    check_counts(
        {"--steps": args.steps, "--batch": args.batch, "--checkpoint-every": args.checkpoint_every}
    )
    training_seeds(args.scenes, args.seed)  # refused before --out is made
    generator, out, started = start_run(args.seed, args.out)
    codec = bundle.video_codec()
    model = RefinerDiT(REFINER_PRESETS["demo"]).train()
    optimiser = adamw(model.parameters(), lr=1e-3, weight_decay=0.01)
    checkpoint = out / "refiner_training.safetensors"
    # Resumed before the world is encoded, so a leftover checkpoint is refused before that work
    # (the encoding draws from no generator: the model starts as it would after it).
    step = load_checkpoint(checkpoint, model, optimiser, generator) if checkpoint.exists() else 0
    data = encode_world(codec, args.scenes, args.seed)
    deadline = started + args.max_minutes * 60
    first_step, training_started = step, time.monotonic()
    with tqdm(total=args.steps, initial=step, desc="demo refiner") as bar:
        while step < args.steps and (now := time.monotonic()) < deadline:
            # Anneal over whichever budget ends first, so a time-capped run still ends cool.
            horizon = args.steps
            if step - first_step >= 10:
                rate = (step - first_step) / (now - training_started)
                horizon = min(args.steps, step + 1 + int(rate * (deadline - now)))
            cosine_with_warmup(optimiser, step, horizon, 1e-3, warmup=200)
            index = torch.randint(len(data), (args.batch,), generator=generator)
            sparse = float(torch.rand((), generator=generator)) < SPARSE_SHARE
            keep_ratio = SPARSE_KEEP_RATIO if sparse else None
            fps_factor = draw_fps_factor(generator)
            loss = training_loss(model, data, index, fps_factor, generator, keep_ratio)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % args.checkpoint_every == 0:
                save_checkpoint(checkpoint, model, optimiser, step, generator)
    codec_file = bundle.WEIGHTS_DIR / "video_codec.safetensors"
    provenance = {
        "command": f"python -m skyreels_core train-demo-refiner --seed {args.seed} "
        f"--scenes {args.scenes} --steps {args.steps} --batch {args.batch} "
        f"--max-minutes {args.max_minutes:g}",
        "training_steps": str(step),
        "minutes": f"{(time.monotonic() - started) / 60:.1f}",
        "video_codec_sha256": hashlib.sha256(codec_file.read_bytes()).hexdigest(),
        "sizes": f"{LOW_SIZE} px -> {HIGH_SIZE} px, fps x{'/x'.join(map(str, FPS_FACTORS))}",
    }
    path = save_refiner(model.eval(), out / "refiner.safetensors", provenance)
    checkpoint.unlink(missing_ok=True)  # optimiser state: only needed to resume an unfinished run
    print(f"wrote {path} ({step} steps, {provenance['minutes']} minutes)")
    return 0
