"""``python -m skyreels_core train-demo-lora``: the bundled example LoRA, a palette shift, or with
``--clips`` a LoRA for the demo model on a folder of your own captioned clips.

The world is rendered with every colour shown (and hummed) as the next one of the palette, red as
green, green as blue, blue as yellow, yellow as red, while the captions keep the colour the
prompt names; a rank-8 LoRA on the frozen demo model learns that look from the same multi-task
loss as the model (:func:`..training.training_loss`). With it, "a red circle" renders green and
hums at green's pitch: a style the base model never makes, so a workflow shows at a glance that
Load LoRA works. A few minutes on 2 CPU cores. Your clips are fitted to the demo model's shape
(:func:`.dataset.read_clips`: 33 frames at 16 fps, 64 px square, mono sound) and train the same way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..lora import applied
from ..lora_training import lora_parameters, save_lora, trainable_lora
from ..paths import output_file, write_json
from ..render import Pipeline
from ..training import check_counts, start_run, training_loss
from . import bundle
from .dataset import read_clips, render_world, training_seeds
from .train import draw_batch, encode_world

PALETTE_SHIFT = {"red": "green", "green": "blue", "blue": "yellow", "yellow": "red"}
SCENES = 256
BASE_FILES = ("model.safetensors", *bundle.PIPELINE_FILES)
"""What train-demo writes into its --out, all of which the LoRA's training reads."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clips",
        type=Path,
        help="train on the videos in this folder, each with its caption in a .txt file of the "
        "same name, instead of the palette-shifted world",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"folder for the LoRA (default: the bundle's, for {bundle.LORA_FILE}; with --clips: "
        "loras/, the file named after the clips' folder); a folder train-demo wrote: the LoRA is "
        "trained on its model",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scenes",
        type=int,
        help=f"training scenes from the world (default {SCENES}; not with --clips)",
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="with --clips: replace a LoRA of the same name in --out (the bundled one is always "
        "rebuilt in place)",
    )


def _lora_name(clips: Path | None) -> str:
    return bundle.LORA_FILE if clips is None else f"{Path(clips).resolve().name}.safetensors"


def check_arguments(args: argparse.Namespace) -> None:
    """The flags that cannot train, or that would be ignored, refused before --out is made and
    any clip is read; fills --scenes's default."""
    check_counts({"--steps": args.steps, "--rank": args.rank, "--batch": args.batch})
    if not args.lr > 0:
        raise InputError("--lr", f"{args.lr:g}", "give a positive learning rate")
    if args.out is not None and args.out.suffix.lower() == ".safetensors":
        raise InputError(
            "--out",
            f"{args.out} names a file",
            f"name a folder (the LoRA is written there as {_lora_name(args.clips)})",
        )
    if args.clips is not None:
        if args.scenes is not None:
            raise InputError(
                "--scenes", "given with --clips, which trains on the clips instead of the world",
                "drop one",
            )  # fmt: skip
        return
    args.scenes = SCENES if args.scenes is None else args.scenes
    training_seeds(args.scenes, args.seed)


def base_files(out: Path) -> tuple[Path, ...] | None:
    """The files (:data:`BASE_FILES`) of the model the LoRA is trained on: --out's own where
    train-demo wrote a model there (a LoRA fits the model it was trained on, and --out's manifest
    lists the LoRA beside it), else None, the bundled ones. Checked before the clips are read."""
    model = out / BASE_FILES[0]
    return (model, *bundle.pipeline_files(model, "--out")) if model.exists() else None


def load_base(files: tuple[Path, ...] | None) -> tuple[Pipeline, Path]:
    """The pipeline of :func:`base_files`' model, and the model's file."""
    model = bundle.model_path() if files is None else files[0]
    return Pipeline.load(model), model


def _record_in_manifest(manifest_path: Path, path: Path, command: str) -> None:
    """A bundle folder's manifest lists the LoRA's sha256 and command beside the model's."""
    if not manifest_path.exists():
        return
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"][path.name] = bundle.file_digest(path)
    manifest["lora_command"] = command
    write_json(manifest_path, manifest, "--out")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    clips = args.clips
    default_out = bundle.WEIGHTS_DIR if clips is None else Path("loras")
    generator, out, started = start_run(args.seed, args.out or default_out)
    name = _lora_name(clips)
    # Your own LoRA is never replaced unasked, as demo's --out; the bundled one is rebuilt.
    refuse_existing = clips is not None and not args.overwrite
    target = output_file(out / name, "--out", name, refuse_existing=refuse_existing)
    base = base_files(out)
    data = (
        render_world(args.scenes, args.seed, palette=PALETTE_SHIFT)
        if clips is None
        else read_clips(clips)
    )
    pipeline, model_path = load_base(base)
    pipeline.model.requires_grad_(False)
    world = encode_world(data, pipeline.video_codec, pipeline.audio_codec, pipeline.encoder)
    lora = trainable_lora(pipeline.model, args.rank, generator, name)
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
    source = f"--scenes {args.scenes}" if clips is None else f"--clips {Path(clips).name}"
    provenance = {
        "command": f"python -m skyreels_core train-demo-lora --seed {args.seed} {source} "
        f"--steps {args.steps} --rank {args.rank} --batch {args.batch} --lr {args.lr:g}",
        "base_model_sha256": bundle.file_digest(model_path),
        "minutes": f"{(time.monotonic() - started) / 60:.1f}",
    }
    if clips is None:
        provenance["palette"] = ", ".join(f"{a} as {b}" for a, b in PALETTE_SHIFT.items())
    else:
        provenance["clips"] = str(len(data.captions))
    path = save_lora(lora, target, provenance)
    if clips is None:
        _record_in_manifest(out / "manifest.json", path, provenance["command"])
    print(f"wrote {path} ({args.steps} steps, {provenance['minutes']} minutes)")
    return 0
