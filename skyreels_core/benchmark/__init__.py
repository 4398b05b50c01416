"""``python -m skyreels_core bench``: speed and cost measured in one run (ratios, not asserts).

Parts (``--only`` picks some; ``--help`` lists them, :data:`PART_FUNCTIONS` maps each to the
function whose docstring says what it measures): tokens and FLOPs of a 1080p, 32 fps, 15 s render
direct vs. low-res + keyframes + sparse refiner; a step against diffusers' Wan with the same
weights; step time by part; memory and working memory; sparse vs dense attention; LoRA and step
cache overheads; schedules; joint keyframes; and, only when named, the minutes-long demo
measurements of long clips and LoRA training, and what only a CUDA GPU measures (block swap, fp8,
FlexAttention).
The parts live by what they measure: :mod:`.speed`, :mod:`.memory` and :mod:`.demo_quality`,
all with :mod:`.instruments`.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from ..errors import InputError
from ..paths import output_file, write_json
from .demo_quality import (
    extend_to_length_windows,
    joint_keyframes,
    long_video,
    lora_training,
    schedules,
    step_cache,
)
from .memory import cuda, memory, working_memory
from .speed import (
    analytic,
    demo_train_step,
    lora_overhead,
    sparse_vs_dense,
    step_split,
    step_vs_diffusers,
)

PART_FUNCTIONS = {"analytic": analytic, "step": step_vs_diffusers, "split": step_split,
                  "train": demo_train_step, "memory": memory, "sparse": sparse_vs_dense,
                  "lora": lora_overhead, "cache": step_cache, "working_memory": working_memory,
                  "schedules": schedules, "keyframes": joint_keyframes, "long_video": long_video,
                  "extend_to_length": extend_to_length_windows,
                  "lora_training": lora_training, "cuda": cuda}  # fmt: skip
# Minutes each on 2 CPU cores, or a GPU's, so run only when named.
LONGER_PARTS = ("long_video", "extend_to_length", "lora_training", "cuda")
PARTS = tuple(part for part in PART_FUNCTIONS if part not in LONGER_PARTS)
# The parts that render the demo model, which --model replaces (a train-demo run's, to compare).
MODEL_PARTS = ("cache", "schedules", "keyframes", "long_video", "extend_to_length")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts of {', '.join(PARTS)} (the default), and the longer "
        f"{', '.join(LONGER_PARTS)}",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help=f"a demo-preset checkpoint for the parts {', '.join(MODEL_PARTS)}, with the codecs "
        "train-demo wrote beside it (default: the bundled model)",
    )


def _rows(values: dict, prefix: str = ""):
    """(dotted key, readable value) for the table; bytes in MiB, floats to 4 digits."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _rows(value, f"{name}.")
        elif key.endswith("_bytes"):
            yield name.removesuffix("_bytes") + "_mib", f"{value / 2**20:.1f}"
        else:
            yield name, f"{value:.4g}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    chosen = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in PART_FUNCTIONS]
    if unknown:
        raise InputError(
            "--only", f"unknown parts {unknown}", f"choose from {', '.join(PARTS + LONGER_PARTS)}"
        )
    if args.model and not set(chosen) & set(MODEL_PARTS):
        raise InputError(
            "--model",
            f"none of the parts {chosen} renders the demo model",
            f"add one of {', '.join(MODEL_PARTS)} to --only, or leave --model out",
        )
    if args.json:  # a str: Path would drop the "/" that says a folder was meant
        args.json = output_file(args.json, "--json", "bench.json")
    results = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}}  # fmt: skip
    if args.model:
        results["machine"]["model"] = str(args.model)
    for part in chosen:
        given = {"model": args.model} if args.model and part in MODEL_PARTS else {}
        results[part] = PART_FUNCTIONS[part](**given)
        print(f"[{part}]")
        for key, value in _rows(results[part]):
            print(f"  {key:48s} {value}")
    if args.json:
        write_json(args.json, results, "--json")
        print(f"wrote {args.json}")
    return 0
