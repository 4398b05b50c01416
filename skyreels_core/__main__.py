"""Command line: ``python -m skyreels_core <command>``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen command's module is imported, so ``info`` does not pay for the codecs' imports.
User errors print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import InputError

COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("skyreels_core.config", "print a model preset and its parameter counts"),
    "demo": ("skyreels_core.demo.cli", "render a clip with sound on the bundled demo model"),
    "train-demo": ("skyreels_core.demo.train", "train the bundled demo model from scratch"),
    "train-demo-refiner": (
        "skyreels_core.demo.train_refiner",
        "train the bundled demo refiner (64 -> 128 px, x1/x2/x4 fps)",
    ),
    "train-demo-lora": (
        "skyreels_core.demo.train_lora",
        "train the bundled example LoRA (a palette shift) on the frozen demo model",
    ),
    "eval-demo": (
        "skyreels_core.demo.evaluate",
        "measure the demo model (AV sync, adherence, PSNR)",
    ),
    "queue": (
        "skyreels_core.batch_queue",
        "queue a workflow on a running ComfyUI once per seed / prompt, widgets overridden",
    ),
    "bench": ("skyreels_core.benchmark", "speed and memory benchmarks"),
    "to-safetensors": (
        "skyreels_core.convert",
        "rewrite a pickle checkpoint (.pt/.pth) as .safetensors without running its code",
    ),
}


def _lines_never_fail() -> None:
    """A character the console's encoding lacks is escaped, not raised: on Windows a redirected
    stdout is in the ANSI code page, and a prompt in another script ended a batch mid-queue
    with a UnicodeEncodeError, its renders half queued and half reported."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _lines_never_fail()
    parser = argparse.ArgumentParser(prog="python -m skyreels_core")
    subparsers = parser.add_subparsers(dest="command", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = subparsers.add_parser(name, help=help_text)
        if name != chosen:
            continue
        module = importlib.import_module(module_name)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the writes publish only whole files, so one line will do
        print(f"{chosen}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
