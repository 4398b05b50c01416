"""The attention dispatch: every backend available here agrees with sdpa; missing ones say the fix;
``auto`` picks one that takes the model's dtype."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from skyreels_core.attention import BlockSparsity, attention, available_backends
from skyreels_core.errors import InputError
from skyreels_core.runtime import resolve_attention


def _qkv():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(1, 2, 16, 8, generator=generator) for _ in range(3)]


def test_sdpa_is_plain_softmax_attention():
    q, k, v = _qkv()
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
    assert torch.allclose(attention(q, k, v), weights @ v, atol=1e-6)
    mask = torch.ones(1, 1, 1, 16, dtype=torch.bool)
    mask[..., 10:] = False
    assert torch.allclose(
        attention(q, k, v, mask=mask),
        F.scaled_dot_product_attention(q[..., :, :], k[..., :10, :], v[..., :10, :]),
        atol=1e-6,
    )


@pytest.mark.parametrize("backend", ["flash_attn", "sage"])
def test_cuda_only_backends_name_the_fix_on_cpu(backend):
    q, k, v = _qkv()
    assert backend not in available_backends("cpu")
    with pytest.raises(InputError, match="choose sdpa"):
        attention(q, k, v, backend=backend)


FIND_SPEC = importlib.util.find_spec


def installed(monkeypatch, *packages: str) -> None:
    """Of the optional packages, ``packages`` and only those look installed to the checks."""

    def find_spec(name, *args):
        if name in ("sageattention", "flash_attn"):
            return object() if name in packages else None
        return FIND_SPEC(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_auto_picks_the_fastest_backend_that_takes_the_dtype(monkeypatch):
    installed(monkeypatch, "sageattention", "flash_attn")
    assert resolve_attention("auto", "cuda", torch.bfloat16) == "sage"
    assert resolve_attention("auto", "cuda", torch.float16) == "sage"
    assert resolve_attention("auto", "cuda", torch.float32) == "sdpa"  # both take fp16/bf16 only
    assert resolve_attention("auto", "cpu", torch.bfloat16) == "sdpa"
    installed(monkeypatch, "flash_attn")
    assert resolve_attention("auto", "cuda", torch.bfloat16) == "flash_attn"


@pytest.mark.parametrize("backend", ["flash_attn", "sage"])
def test_a_chosen_half_precision_backend_refuses_fp32_at_load(monkeypatch, backend):
    installed(monkeypatch, "sageattention", "flash_attn")
    assert resolve_attention(backend, "cuda", torch.bfloat16) == backend
    with pytest.raises(
        InputError,
        match=rf"^attention: {backend} takes fp16/bf16 weights and the model computes in fp32\. "
        r"Fix: choose sdpa, or dtype bf16/fp16$",
    ):
        resolve_attention(backend, "cuda", torch.float32)
    assert resolve_attention("sdpa", "cuda", torch.float32) == "sdpa"


def test_model_loader_picks_an_attention_backend_that_takes_the_dtype(monkeypatch):
    """Under fp32 Load Model's auto picks sdpa, and a chosen sage is refused at load."""
    from skyreels_pack.nodes import host
    from skyreels_pack.nodes.loaders import SkyReelsV4ModelLoader

    from skyreels_core.demo import bundle

    installed(monkeypatch, "sageattention")
    monkeypatch.setattr(host, "torch_device", lambda: torch.device("cuda"))  # nothing runs there
    load = SkyReelsV4ModelLoader().load
    assert load(bundle.BUNDLED, "fp32", "auto")[0].module.attention_backend == "sdpa"
    assert load(bundle.BUNDLED, "bf16", "auto")[0].module.attention_backend == "sage"
    with pytest.raises(InputError, match="^attention: sage takes fp16/bf16 weights"):
        load(bundle.BUNDLED, "fp32", "sage")


def test_unknown_backend_lists_the_choices():
    with pytest.raises(InputError, match="sdpa, flash_attn, sage, flex"):
        attention(*_qkv(), backend="xformers")


@pytest.mark.skipif(
    importlib.util.find_spec("skyreels_core.sparse_attention") is None,
    reason="no sparse attention yet",
)
def test_flex_with_everything_kept_equals_dense():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4 * 4 * 4, 16, generator=generator) for _ in range(3))
    dense = attention(q, k, v)
    sparse = attention(q, k, v, backend="flex", sparsity=BlockSparsity((4, 4, 4), 1.0))
    assert torch.allclose(dense, sparse, atol=1e-5)
