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


def test_a_masked_call_runs_masked_sdpa_on_every_backend():
    """flash_attn and sage take no mask: a call with padded text runs SDPA under the mask (on the
    CPU too, where those kernels cannot run), and flex with a mask is dense masked attention, not
    block-sparse over tokens the mask would hide."""
    q, k, v = _qkv()
    mask = torch.ones(1, 1, 1, 16, dtype=torch.bool)
    mask[..., 10:] = False
    expected = F.scaled_dot_product_attention(q, k[:, :, :10], v[:, :, :10])
    for backend in ("flash_attn", "sage"):
        torch.testing.assert_close(attention(q, k, v, backend=backend, mask=mask), expected)
    sparsity = BlockSparsity((1, 4, 4), 0.25)
    torch.testing.assert_close(
        attention(q, k, v, backend="flex", mask=mask, sparsity=sparsity), expected
    )
    assert (attention(q, k, v, mask=mask) - attention(q, k, v)).abs().max() > 1e-3


def test_package_kernels_get_their_layouts_and_answer_in_ours(monkeypatch):
    """flash_attn takes and returns token-major [B, L, heads, d], sage head-major with
    tensor_layout="HND"; both answer in the [B, heads, L, d] every block reads. Stand-in kernels
    (softmax attention in the layout each package documents) run here without a GPU."""
    import sys
    from types import ModuleType

    from skyreels_core import attention as attention_module

    def flash_attn_func(q, k, v):
        assert q.shape == (1, 16, 2, 8)  # token-major
        out = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)))
        return out.transpose(1, 2)

    def sageattn(q, k, v, tensor_layout):
        assert tensor_layout == "HND" and q.shape == (1, 2, 16, 8)
        return F.scaled_dot_product_attention(q, k, v)

    flash, sage = ModuleType("flash_attn"), ModuleType("sageattention")
    flash.flash_attn_func, sage.sageattn = flash_attn_func, sageattn
    monkeypatch.setitem(sys.modules, "flash_attn", flash)
    monkeypatch.setitem(sys.modules, "sageattention", sage)
    monkeypatch.setattr(attention_module, "require_backend", lambda backend, device: None)
    q, k, v = _qkv()
    expected = attention(q, k, v)
    for backend in ("flash_attn", "sage"):
        out = attention(q, k, v, backend=backend)
        assert out.shape == (1, 2, 16, 8)
        torch.testing.assert_close(out, expected)
