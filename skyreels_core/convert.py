"""``python -m skyreels_core to-safetensors``: a PyTorch pickle checkpoint to ``.safetensors``.

The pack loads only safetensors, because a pickle can run code when it is opened. Some originals
still ship as pickles (MMAudio's ``v1-44.pth`` VAE, NVIDIA's ``bigvgan_generator.pt``). This reads
one with ``torch.load(weights_only=True)``, whose unpickler accepts only tensors and plain
containers, so nothing in the file can execute, and writes its tensors unchanged: key layouts are
converted when the loaders open the file.
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import torch

from .errors import CheckpointError, InputError
from .loading import write_safetensors
from .paths import output_file

NESTED_KEYS = ("generator", "state_dict", "model")  # where trainers tuck the weights away
# What torch.load raises on a file that is no checkpoint of plain tensors: code it refuses to
# run, a damaged archive, an empty file (EOFError), text read as pickle opcodes (KeyError,
# IndexError: LookupError) or as a string (UnicodeDecodeError: ValueError).
NOT_A_CHECKPOINT = (pickle.UnpicklingError, RuntimeError, EOFError, LookupError, ValueError)


def tensors_of(checkpoint: object, source: Path) -> dict[str, torch.Tensor]:
    """The flat name -> tensor mapping of a loaded checkpoint (inside ``generator`` /
    ``state_dict`` / ``model`` when the weights sit there)."""
    if isinstance(checkpoint, dict):
        nested = next(
            (checkpoint[k] for k in NESTED_KEYS if isinstance(checkpoint.get(k), dict)), None
        )
        checkpoint = nested if nested is not None else checkpoint
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise InputError(
            "source", f"{source.name} holds no named tensors", "pass a state dict file"
        )
    others = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise InputError(
            "source",
            f"{source.name} holds non-tensor entries ({', '.join(map(str, others[:3]))})",
            "pass a file whose weights are a flat state dict",
        )
    sparse = [str(k) for k, v in checkpoint.items() if v.layout != torch.strided]
    if sparse:
        raise InputError(
            "source",
            f"{source.name} holds sparse tensors ({', '.join(sparse[:3])})",
            "save them dense (tensor.to_dense()) first",
        )
    # safetensors refuses tensors sharing storage; each gets its own contiguous copy.
    tensors = {str(k): v.detach().clone().contiguous() for k, v in checkpoint.items()}
    if len(tensors) < len(checkpoint):  # 1 and "1" are one name in a safetensors file
        raise InputError(
            "source",
            f"{source.name} holds keys that read alike as text (such as 1 and '1')",
            "give every tensor a distinct string name",
        )
    return tensors


def _first_line(error: Exception) -> str:
    """What torch.load said, for the message; its kind where it said nothing (an empty file)."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def convert(source: Path, target: str | Path) -> Path:
    """``target`` checked before the (possibly long) load, then written once, never over a file."""
    is_folder = str(target).endswith(("/", os.sep)) or Path(target).is_dir()  # named by output_file
    if Path(target).suffix != ".safetensors" and not is_folder:  # what every loader lists
        name = Path(target).name
        raise InputError(
            "target", f"{name} is not a .safetensors name", f"use {Path(name).stem}.safetensors"
        )
    target = output_file(target, "target", "model.safetensors")
    if target.exists():
        raise InputError("target", f"{target} exists", "choose a new file name")
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except NOT_A_CHECKPOINT as error:
        raise CheckpointError(
            "source",
            f"{source.name} is not a plain PyTorch checkpoint ({_first_line(error)})",
            "only files of tensors convert; one that needs code to load is refused",
        ) from None
    return write_safetensors(tensors_of(checkpoint, source), target, overwrite=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a .pt / .pth / .ckpt checkpoint")
    parser.add_argument(
        "target", help="the .safetensors file to write (never over an existing one)"
    )


def run(args: argparse.Namespace) -> int:
    if not args.source.is_file():
        raise InputError("source", f"{args.source} was not found", "pass an existing file")
    print(f"wrote {convert(args.source, args.target)}")
    return 0
