"""Weights stored as float8 with a scale beside them, as ComfyUI's ``*_fp8_scaled`` releases ship.

A scaled layer's true weight is ``stored x scale`` (a float8 tensor and a float32 scale per
tensor or per output row). Two layouts are in the wild and both are read: the original one (a ``scaled_fp8``
marker tensor, ``<layer>.scale_weight`` and optionally ``<layer>.scale_input``) and the
mixed-precision one (``<layer>.weight_scale``, ``<layer>.comfy_quant`` holding
``{"format": ...}`` as UTF-8 bytes, optionally ``<layer>.input_scale``), which is also what this
pack's own fp8 storage saves. Input scales only serve the host's fp8 matmuls: a weight taken back
to its true values needs none, so they are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from .errors import CheckpointError

MARKER = "scaled_fp8"
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
FORMAT_SUFFIX = ".comfy_quant"
INPUT_SCALE_SUFFIXES = (".scale_input", ".input_scale")
READABLE_FORMATS = ("float8_e4m3fn", "float8_e5m2")


@dataclass(frozen=True)
class ScaledLayout:
    """Which weights of a checkpoint carry a scale, and which keys are no model tensor."""

    scales: dict[str, str]  # weight key -> its scale's key
    companions: frozenset[str]  # markers, scales, formats, input scales

    def model_keys(self, keys: Iterable[str]) -> list[str]:
        return [key for key in keys if key not in self.companions]


def scaled_layout(
    keys: Iterable[str],
    read: Callable[[str], torch.Tensor],
    metadata: dict[str, str],
    input_name: str,
) -> ScaledLayout:
    """The layout of a checkpoint with these keys; ``read`` fetches a (small) tensor by key.

    A layer stored in a format other than float8 (nvfp4, int8 with block scales) cannot be taken
    back to its weight here, so it is refused by name rather than loaded as noise.
    """
    keys = list(keys)
    scales = {
        key.removesuffix(suffix) + ".weight": key
        for key in keys
        for suffix in SCALE_SUFFIXES
        if key.endswith(suffix)
    }
    formats = {key: _format(read(key)) for key in keys if key.endswith(FORMAT_SUFFIX)}
    listed = json.loads(metadata.get("_quantization_metadata", "{}")).get("layers", {})
    formats |= {f"{layer}{FORMAT_SUFFIX}": entry.get("format") for layer, entry in listed.items()}
    unreadable = sorted(
        f"{key.removesuffix(FORMAT_SUFFIX)} ({fmt})"
        for key, fmt in formats.items()
        if fmt not in READABLE_FORMATS
    )
    if unreadable:
        raise CheckpointError(
            input_name,
            f"{len(unreadable)} layers are quantised in a format this pack cannot read: "
            + ", ".join(unreadable[:4]),
            "pick the model's bf16, fp16 or fp8_scaled release (set dtype to fp8_e4m3fn to keep "
            "its block weights in 8 bits)",
        )
    companions = {
        key for key in keys if key == MARKER or key.endswith((FORMAT_SUFFIX, *INPUT_SCALE_SUFFIXES))
    }
    return ScaledLayout(scales, frozenset(companions | set(scales.values())))


def _format(blob: torch.Tensor) -> str | None:
    try:
        return json.loads(bytes(blob.to(torch.uint8).flatten().tolist())).get("format")
    except (ValueError, AttributeError):
        return None


def fitted_scale(
    stored: torch.Tensor, scale: torch.Tensor, name: str = "weight", input_name: str = "model"
) -> torch.Tensor:
    """A per-tensor scale as a float32 scalar, a per-row one (one per output channel) as a float32
    column that broadcasts over ``stored``. A per-row scale saved flat ([out], not [out, 1]) is
    laid along the rows: left as it is it would scale the columns of a square matrix, silently."""
    scale = scale.float()
    if scale.numel() == 1:
        return scale.reshape(())
    if scale.ndim == 1 and stored.ndim > 1 and scale.numel() == stored.shape[0]:
        scale = scale.reshape(-1, *[1] * (stored.ndim - 1))
    try:
        fits = torch.broadcast_shapes(stored.shape, scale.shape) == stored.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise CheckpointError(
            input_name,
            f"{name} has a scale of shape {tuple(scale.shape)} that does not fit its "
            f"{tuple(stored.shape)} values (not one per tensor nor one per output row)",
            "pick the model's bf16, fp16 or fp8_scaled release as ComfyUI ships it",
        )
    return scale


def dequantise(
    stored: torch.Tensor, scale: torch.Tensor, name: str = "weight", input_name: str = "model"
) -> torch.Tensor:
    """The true weight in float32, from a per-tensor or per-row scale (:func:`fitted_scale`)."""
    return stored.float() * fitted_scale(stored, scale, name, input_name)
