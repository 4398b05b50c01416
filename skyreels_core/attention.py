"""One attention entry point for every block, with interchangeable kernels.

``sdpa`` (PyTorch's fused attention) is the default and runs everywhere; ``flash_attn`` and
``sage`` are optional CUDA packages, imported only when chosen so a missing one never breaks the
pack; ``flex`` is the refiner's block-sparse attention.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import InputError

BACKENDS = ("sdpa", "flash_attn", "sage", "flex")
_PACKAGES = {
    "flash_attn": ("flash_attn", "pip install flash-attn"),
    "sage": ("sageattention", "pip install sageattention"),
}
HALF_PRECISION = (torch.float16, torch.bfloat16)  # the only dtypes their kernels take


@dataclass(frozen=True)
class BlockSparsity:
    """What the block-sparse ``flex`` backend needs to know of a video token sequence: its
    (T, H, W) ``grid``, the share of key cubes kept, and the learned per-head ``gate`` [heads] of
    the coarse path (None: the fine path alone)."""

    grid: tuple[int, int, int]
    keep_ratio: float
    gate: torch.Tensor | None = None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run on ``device`` with what is installed."""
    cuda = torch.device(device).type == "cuda"
    return ["sdpa", "flex"] + [
        name
        for name, (package, _) in _PACKAGES.items()
        if cuda and importlib.util.find_spec(package)
    ]


def takes_dtype(backend: str, dtype: torch.dtype) -> bool:
    """Whether ``backend`` computes on ``dtype`` tensors: flash_attn and sage take fp16/bf16
    only (their own assertion fails otherwise, at the first attention call)."""
    return backend not in _PACKAGES or dtype in HALF_PRECISION


def takes_masks(backend: str) -> bool:
    """Whether ``backend`` runs its own kernel under an attention mask: flash_attn and sage take
    none, so :func:`attention` runs a masked call (padded text) through SDPA instead."""
    return backend not in _PACKAGES


def require_backend(backend: str, device: torch.device | str) -> None:
    """A package backend (sage, flash_attn) runs on ``device``: checked when the model loads and
    again at each call, where the tensors may sit elsewhere."""
    package, fix = _PACKAGES[backend]
    if torch.device(device).type != "cuda":
        raise InputError("attention", f"{backend} runs only on CUDA GPUs", "choose sdpa")
    if importlib.util.find_spec(package) is None:
        raise InputError("attention", f"{backend} is not installed", f"{fix}, or choose sdpa")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str = "sdpa",
    mask: torch.Tensor | None = None,
    sparsity: BlockSparsity | None = None,
) -> torch.Tensor:
    """Softmax attention over [B, heads, L, head_dim] tensors; ``mask`` is a boolean key mask
    broadcastable to [B, heads, L_q, L_k] (True = attend). The ``flex`` backend is block-sparse
    over a video token grid described by ``sparsity`` (dense without one)."""
    if backend == "sdpa" or (mask is not None and not takes_masks(backend)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if backend == "flash_attn":
        require_backend(backend, q.device)
        from flash_attn import flash_attn_func

        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    if backend == "sage":
        require_backend(backend, q.device)
        from sageattention import sageattn

        return sageattn(q, k, v, tensor_layout="HND")
    if backend == "flex":
        if sparsity is None or mask is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        from .sparse_attention import block_sparse_attention

        return block_sparse_attention(
            q, k, v, sparsity.grid, keep_ratio=sparsity.keep_ratio, gate=sparsity.gate
        )
    raise InputError(
        "attention", f"{backend!r} is not an attention backend", f"use one of {', '.join(BACKENDS)}"
    )
