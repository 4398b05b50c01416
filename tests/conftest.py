"""Shared test setup: the pack is imported the way ComfyUI imports it (by file location, as a
package), under the name ``skyreels_pack`` so tests can ``from skyreels_pack.nodes import ...``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "skyreels_pack"
# Test helper modules (model_helpers, workflow_tools) import by name under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_pack(name: str = PACK_NAME, root: Path = ROOT):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


load_pack()


GLOBAL_SEED = 0x5EED_7E57
"""The seed of torch's global generator in every test: not one a test renders with, so a test's
random latents and the noise of ``initial_noise(seed)`` are never the same numbers (seed 0 made a
condition's latents equal a seed-0 render's noise, and blinded a sampler test to its noised path)."""


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(GLOBAL_SEED)
    yield


@pytest.fixture
def gpu() -> torch.device:
    """The CUDA device the GPU-only tests run on; they are skipped where torch sees none (CI),
    and a lent GPU machine runs them (README, "Tests")."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch.device("cuda")  # LOCALCHECK
