"""ComfyUI node classes, one module per group; each module exports NODE_CLASS_MAPPINGS and
NODE_DISPLAY_NAME_MAPPINGS, merged here."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from . import host

NODE_GROUPS: tuple[str, ...] = (
    "loaders",
    "media",
    "encode",
    "masks",
    "references",
    "sampler",
    "refiner",
    "av_codecs",
    "clips",
    "output",
)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

host.register_model_folders()
host.install_example_inputs(Path(__file__).resolve().parents[1] / "workflows" / "assets")
for _group in NODE_GROUPS:
    _module = import_module(f".{_group}", __name__)
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
