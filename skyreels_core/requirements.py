"""The oldest transformers and diffusers the pack runs on, checked where they are first imported.

A host that keeps an older one (a ComfyUI install with transformers 4.x, which the bundled
encoder's tokenizer and Qwen2VLImageProcessorPil postdate; diffusers before MMAudio's VAE)
otherwise fails with the library's own ImportError or "class TokenizersBackend does not exist",
which says nothing about upgrading. requirements.txt and pyproject.toml declare these same
floors (a test keeps them equal).
"""

from __future__ import annotations

import importlib
import re
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

from .errors import InputError

MINIMUM_VERSIONS = {"transformers": (5, 25), "diffusers": (0, 42)}


def _release(text: str) -> tuple[int, int]:
    """(major, minor) of a version string such as 5.25.0, 0.42.1 or 5.0.0rc1."""
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def import_required(package: str, input_name: str) -> ModuleType:
    """``package`` imported, or one line naming the version it needs and the upgrade."""
    minimum = MINIMUM_VERSIONS[package]
    wanted = ".".join(map(str, minimum))
    try:
        found = version(package)
    except PackageNotFoundError:
        found = None
    if found is None or _release(found) < minimum:
        has = "does not have it" if found is None else f"has {found}"
        raise InputError(
            input_name,
            f"the pack needs {package} {wanted} or later and ComfyUI's Python {has}",
            f'run `python -m pip install -U "{package}>={wanted}"` with ComfyUI\'s Python (or '
            "`pip install -r requirements.txt` in the pack's folder) and restart ComfyUI",
        )
    return importlib.import_module(package)
