"""The attention dispatch: every backend available here agrees with sdpa; missing ones say the fix."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from skyreels_core.attention import BlockSparsity, attention, available_backends
from skyreels_core.errors import InputError


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
