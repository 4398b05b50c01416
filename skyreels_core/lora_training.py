"""Training a LoRA on a frozen model: the same hooks that apply one (:mod:`.lora`), made trainable.

A new LoRA puts a rank-r pair on every Linear layer with ``up`` at zero, so training starts from
the model exactly as loaded; each step enters :func:`.lora.applied` afresh, so the hooks'
stacked tensors carry the step's gradients back to the pairs. The file it writes uses the pack's
own layer names (``<layer>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha``), which Load LoRA
and :func:`.lora.read_lora` open like any other.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .loading import write_safetensors
from .lora import LayerDelta, Lora


def trainable_lora(model: nn.Module, rank: int, generator: torch.Generator, name: str) -> Lora:
    """A zero-effect LoRA on every Linear layer: ``down`` random at unit gain, ``up`` zeros."""
    lora = Lora(name)
    for layer, module in model.named_modules():
        if isinstance(module, nn.Linear):
            down = torch.randn(rank, module.in_features, generator=generator)
            lora.layers[layer] = LayerDelta(
                down=(down / module.in_features**0.5).requires_grad_(),
                up=torch.zeros(module.out_features, rank, requires_grad=True),
            )
    return lora


def lora_parameters(lora: Lora) -> list[torch.Tensor]:
    return [t for delta in lora.layers.values() for t in (delta.down, delta.up)]


def save_lora(lora: Lora, path: Path, metadata: dict[str, str]) -> Path:
    """The pairs in the pack's own names with ``alpha`` = rank (scale 1), written then renamed."""
    tensors = {}
    for layer, delta in lora.layers.items():
        tensors[f"{layer}.lora_A.weight"] = delta.down.detach().contiguous()
        tensors[f"{layer}.lora_B.weight"] = (delta.up * delta.scale).detach().contiguous()
        tensors[f"{layer}.alpha"] = torch.tensor(float(delta.down.shape[0]))
    return write_safetensors(tensors, path, metadata)
