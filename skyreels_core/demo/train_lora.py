"""``python -m skyreels_core train-demo-lora``: the bundled example LoRA, a palette shift.

The world is rendered with every colour shown (and hummed) as the next one of the palette, red as
green, green as blue, blue as yellow, yellow as red, while the captions keep the colour the
prompt names; a rank-8 LoRA on the frozen demo model learns that look from the same multi-task
loss as the model (:func:`..training.training_loss`). With it, "a red circle" renders green and
hums at green's pitch: a style the base model never makes, so a workflow shows at a glance that
Load LoRA works. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..lora import applied
from ..lora_training import lora_parameters, save_lora, trainable_lora
from ..training import start_run, training_loss
from . import bundle
from .dataset import render_world
from .render import DemoPipeline
from .train import draw_batch, encode_world

PALETTE_SHIFT = {"red": "green", "green": "blue", "blue": "yellow", "yellow": "red"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=bundle.WEIGHTS_DIR, help=f"folder for {bundle.LORA_FILE}"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=256, help="training scenes from the world")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)


def _record_in_manifest(manifest_path: Path, path: Path, command: str) -> None:
    """A bundle folder's manifest lists the LoRA's sha256 and command beside the model's."""
    if not manifest_path.exists():
        return
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"][path.name] = bundle.file_digest(path)
    manifest["lora_command"] = command
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    generator, out, started = start_run(args.seed, args.out)
    pipeline = DemoPipeline.load()
    pipeline.model.requires_grad_(False)
    data = render_world(args.scenes, args.seed, palette=PALETTE_SHIFT)
    world = encode_world(data, pipeline.video_codec, pipeline.audio_codec, pipeline.encoder)
    lora = trainable_lora(pipeline.model, args.rank, generator, bundle.LORA_FILE)
    optimiser = torch.optim.AdamW(lora_parameters(lora), lr=args.lr, weight_decay=0.0)
    cpu = torch.device("cpu")
    with tqdm(total=args.steps, desc="demo LoRA") as bar:
        for _ in range(args.steps):
            batch = draw_batch(world, args.batch, generator)
            with applied(pipeline.model, [(lora, 1.0)], cpu):
                loss, _ = training_loss(pipeline.model, pipeline.video_codec, batch, generator)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    provenance = {
        "command": f"python -m skyreels_core train-demo-lora --seed {args.seed} "
        f"--scenes {args.scenes} --steps {args.steps} --rank {args.rank} --batch {args.batch} "
        f"--lr {args.lr:g}",
        "palette": ", ".join(f"{a} as {b}" for a, b in PALETTE_SHIFT.items()),
        "base_model_sha256": bundle.file_digest(bundle.model_path()),
        "minutes": f"{(time.monotonic() - started) / 60:.1f}",
    }
    path = save_lora(lora, out / bundle.LORA_FILE, provenance)
    _record_in_manifest(out / "manifest.json", path, provenance["command"])
    print(f"wrote {path} ({args.steps} steps, {provenance['minutes']} minutes)")
    return 0
