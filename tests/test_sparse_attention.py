"""Block-sparse (VSA-style) attention: exact when keeping everything, the requested density otherwise."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from skyreels_core.sparse_attention import (
    CUBE_TOKENS,
    CUDA_TILES,
    _layout_on,
    _pool,
    block_mask_from_selection,
    block_sparse_attention,
    cube_order,
    dense_attention_flops,
    gathered_attention,
    select_cubes,
    sparse_attention_flops,
)

warnings.filterwarnings("ignore", message=".*flex_attention.*")


def _qkv(length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 2, length, 16, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("grid", [(4, 4, 4), (5, 6, 7), (1, 9, 3)])
def test_keep_all_equals_dense_attention(grid):
    q, k, v = _qkv(grid[0] * grid[1] * grid[2])
    dense = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(block_sparse_attention(q, k, v, grid, keep_ratio=1.0), dense, atol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(("grid", "local"), [((8, 8, 8), False), ((5, 9, 10), True)])
def test_gathered_path_equals_flex_with_the_same_block_mask(grid, local):
    """The CPU path and the FlexAttention BlockMask (CUDA's path, run eagerly here) attend the
    same cube pairs: top-k plus the neighbourhood, padded tokens left out."""
    q, k, v = _qkv(grid[0] * grid[1] * grid[2], seed=2)
    index, valid, neighbours = _layout_on(grid, q.device)
    qc, kc, vc = (x[:, :, index] for x in (q, k, v))
    selected = select_cubes(
        _pool(qc, valid), _pool(kc, valid), keep=3, local=neighbours if local else None
    )
    if local:
        assert selected.sum(-1).min() < selected.sum(-1).max()  # rows of different widths
    block_mask = block_mask_from_selection(selected, valid)
    assert block_mask.BLOCK_SIZE == (CUBE_TOKENS, CUBE_TOKENS)  # what the tiles must divide
    assert all(CUBE_TOKENS % tile == 0 for tile in CUDA_TILES.values())
    flex = flex_attention(qc, kc, vc, block_mask=block_mask, kernel_options=CUDA_TILES)
    gathered = gathered_attention(qc, kc, vc, selected, valid)
    assert torch.allclose(gathered[:, :, valid], flex[:, :, valid], atol=1e-5)


def test_token_order_round_trip_and_padding():
    index, valid, cubes = cube_order((5, 6, 7))
    assert cubes == (2, 2, 2) and valid.sum() == 5 * 6 * 7
    assert torch.equal(index[valid].sort().values, torch.arange(5 * 6 * 7))


def test_selection_density_matches_the_request():
    generator = torch.Generator().manual_seed(0)
    pooled_q, pooled_k = (
        torch.randn(1, 2, 64, 16, generator=generator),
        torch.randn(1, 2, 64, 16, generator=generator),
    )
    for ratio in (0.25, 0.5):
        selected = select_cubes(pooled_q, pooled_k, int(ratio * 64), None)
        assert selected.float().mean().item() == ratio


def test_sparse_attention_differs_from_dense_and_the_gate_adds_the_coarse_path():
    grid = (8, 8, 8)
    q, k, v = _qkv(512, seed=1)
    dense = F.scaled_dot_product_attention(q, k, v)
    sparse = block_sparse_attention(q, k, v, grid, keep_ratio=0.25, local=False)
    assert (sparse - dense).abs().max() > 1e-3
    gated = block_sparse_attention(q, k, v, grid, keep_ratio=0.25, local=False, gate=torch.zeros(2))
    assert torch.equal(gated, sparse)  # a zero gate is the fine path exactly
    assert not torch.equal(
        block_sparse_attention(q, k, v, grid, keep_ratio=0.25, local=False, gate=torch.ones(2)),
        sparse,
    )


def test_flops_at_75_percent_sparsity():
    grid = (16, 30, 52)  # a 480p-class refiner grid after patching
    dense = dense_attention_flops(16 * 30 * 52, 128, 40)
    sparse = sparse_attention_flops(grid, 128, 40, keep_ratio=0.25, local=False)
    assert dense / sparse >= 3.0


def test_layout_and_kernel_are_built_once_per_shape_and_device():
    from skyreels_core.sparse_attention import _layout_on, flex_kernel

    first, second = (
        _layout_on((5, 6, 7), torch.device("cpu")),
        _layout_on((5, 6, 7), torch.device("cpu")),
    )
    assert all(a is b for a, b in zip(first, second))
    assert flex_kernel("cpu") is flex_kernel("cpu")


def test_float32_gates_beside_bf16_tokens_keep_the_tokens_dtype():
    q, k, v = (x.to(torch.bfloat16) for x in _qkv(4 * 4 * 8, seed=3))
    gate = torch.zeros(q.shape[1])
    out = block_sparse_attention(q, k, v, (4, 4, 8), keep_ratio=1.0, gate=gate)
    dense = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert out.dtype == torch.bfloat16 and (out.float() - dense).abs().max() < 0.02


def _cube_means(x, grid):
    """Per 4x4x4 cube of a row-major [B, H, T*H*W, D] grid, the mean of its real tokens, cubes
    row-major: written out by hand, independent of the library's cube order and padding."""
    t, h, w = (torch.arange(n) // 4 for n in grid)
    cubes = [-(-n // 4) for n in grid]
    cube = ((t[:, None, None] * cubes[1] + h[None, :, None]) * cubes[2] + w[None, None]).flatten()
    sums = torch.zeros(*x.shape[:2], cubes[0] * cubes[1] * cubes[2], x.shape[3])
    sums.index_add_(2, cube, x)
    return sums / torch.bincount(cube)[:, None].float(), cube


def test_the_gate_adds_each_tokens_own_cubes_coarse_attention():
    """The trained refiner's long-range path: with gate 1 every token gains exactly the coarse
    attention of its own cube (pooled queries over pooled keys and values, each pool a mean over
    the cube's real tokens). Handing a token another cube's coarse output, or shrinking the edge
    cubes' pools by counting their padding, changes what a trained refiner computes, which the
    old "gated differs from fine" check could not see. Grid 5x6x7 leaves every cube partial."""
    grid = (5, 6, 7)
    q, k, v = _qkv(5 * 6 * 7, seed=3)
    fine = block_sparse_attention(q, k, v, grid, keep_ratio=0.25)
    gated = block_sparse_attention(q, k, v, grid, keep_ratio=0.25, gate=torch.ones(2))
    (pq, cube), (pk, _), (pv, _) = (_cube_means(x, grid) for x in (q, k, v))
    coarse = F.scaled_dot_product_attention(pq, pk, pv)
    torch.testing.assert_close(gated - fine, coarse[:, :, cube], atol=1e-5, rtol=1e-5)
    half = block_sparse_attention(q, k, v, grid, keep_ratio=0.25, gate=torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(half[:, 1], fine[:, 1], atol=0, rtol=0)  # per head
    torch.testing.assert_close(
        half[:, 0] - fine[:, 0], 0.5 * coarse[:, 0, cube], atol=1e-5, rtol=1e-5
    )


def test_a_partial_cube_pools_to_the_mean_of_its_real_tokens():
    """Grid 5x6x7's last cube holds 1x2x3 real tokens: all ones, it pools to exactly 1, not
    6/64; pooling by 64 would make edge cubes look small to the top-k and the coarse path."""
    index, valid, cubes = cube_order((5, 6, 7))
    x = torch.ones(1, 1, 5 * 6 * 7, 4)
    pooled = _pool(x[:, :, index], valid)
    assert cubes == (2, 2, 2) and pooled.shape == (1, 1, 8, 4)
    assert torch.equal(pooled, torch.ones(1, 1, 8, 4))


def test_the_kept_cube_count_rounds_up(monkeypatch):
    """keep_ratio 0.3 of 8 cubes keeps ceil(2.4) = 3 per query cube: rounding down keeps fewer
    than asked (and a small ratio on a small grid would keep only the minimum)."""
    import skyreels_core.sparse_attention as sparse

    keeps = []
    original = sparse.select_cubes

    def spy(q_pooled, k_pooled, keep, local):
        keeps.append(keep)
        return original(q_pooled, k_pooled, keep, local)

    monkeypatch.setattr(sparse, "select_cubes", spy)
    q, k, v = _qkv(8 * 8 * 8)
    block_sparse_attention(q, k, v, (8, 8, 8), keep_ratio=0.3, local=False)
    block_sparse_attention(q, k, v, (8, 8, 8), keep_ratio=0.01, local=False)
    assert keeps == [3, 1]


def test_every_query_cube_keeps_itself_and_its_face_neighbours():
    """The local part of the selection: a cube and the cubes sharing a face with it, whatever the
    top-k picks. Without it a token could lose the tokens right beside it across a cube edge
    (visible seams in the refined video). On 3 cubes in a row the middle keeps all three; on a
    2x2x2 grid each keeps itself and its 3 face neighbours, never the diagonal ones."""
    from skyreels_core.sparse_attention import neighbourhood

    line = neighbourhood((3, 1, 1))
    assert line.tolist() == [[True, True, False], [True, True, True], [False, True, True]]
    cube = neighbourhood((2, 2, 2))
    assert cube.sum(1).tolist() == [4] * 8 and not cube[0, 7] and cube[0, 4]
    q, k, v = _qkv(8 * 8 * 8)
    index, valid, _ = _layout_on((8, 8, 8), q.device)
    qc, kc = q[:, :, index], k[:, :, index]
    selected = select_cubes(_pool(qc, valid), _pool(kc, valid), 1, cube)
    assert bool((selected | ~cube).all())  # every neighbour kept, for every head


@pytest.fixture
def recorded_compiles(monkeypatch):
    """torch.compile with a backend that counts the kernels it is asked to build and runs each
    graph as it is: dynamo's caching and limits are those of inductor's."""
    from skyreels_core.sparse_attention import flex_kernel

    built = []

    def backend(graph, example_inputs):
        built.append(graph)
        return graph.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=backend, **kw))
    flex_kernel.cache_clear()
    yield built
    flex_kernel.cache_clear()


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_the_compiled_kernel_keeps_a_kernel_for_every_clip_size(recorded_compiles):
    """dynamo compiles a function for at most 8 input shapes, then runs it uncompiled: the ninth
    clip size a session refines ran FlexAttention unfused, with the full score matrix on the
    GPU. Each of eleven sizes gets its own kernel, and each attends the gathered path's pairs."""
    from skyreels_core.sparse_attention import compiled_flex

    for frames in range(1, 12):
        grid = (4 * frames, 8, 8)
        q, k, v = _qkv(grid[0] * 64, seed=frames)
        index, valid, neighbours = _layout_on(grid, q.device)
        qc, kc, vc = (x[:, :, index] for x in (q, k, v))
        selected = select_cubes(_pool(qc, valid), _pool(kc, valid), 1, neighbours)
        flex = compiled_flex(qc, kc, vc, block_mask_from_selection(selected, valid))
        gathered = gathered_attention(qc, kc, vc, selected, valid)
        assert torch.allclose(flex, gathered, atol=1e-5)
        assert len(recorded_compiles) == frames
    assert torch._dynamo.config.recompile_limit == 8  # the host's own limit is left as it was


def test_without_triton_the_fine_path_is_the_gathered_one(monkeypatch, caplog):
    """A CUDA host where Triton cannot build (Windows without triton-windows, a GTX 10xx) failed
    the refiner's first step with TritonMissing / GPUTooOldForTriton; it takes the gathered path,
    which needs no compiler, and says so once."""
    import torch.utils._triton

    from skyreels_core import sparse_attention

    for available in (False, True):
        monkeypatch.setattr(
            torch.utils._triton, "has_triton", lambda available=available: available
        )
        sparse_attention.triton_builds.cache_clear()
        with caplog.at_level("INFO", logger=sparse_attention.__name__):
            assert sparse_attention.triton_builds() is available
            assert sparse_attention.triton_builds() is available
        assert caplog.text.count("gathered SDPA") == (0 if available else 1)
        caplog.clear()
    sparse_attention.triton_builds.cache_clear()


def test_where_flex_attention_does_not_compile_the_gathered_path_takes_over(monkeypatch, caplog):
    """Triton installed but unable to build (Windows' portable ComfyUI lacks the headers
    triton-windows compiles against): the refiner's first step failed with torch's compile
    error. The gathered path answers instead, from then on, and the log says why once."""
    import inspect

    from torch._inductor.exc import TritonMissing

    from skyreels_core import sparse_attention

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise TritonMissing(inspect.currentframe())

    monkeypatch.setattr(sparse_attention, "FLEX_DEVICE", "cpu")  # the CUDA branch, on the CPU
    monkeypatch.setattr(sparse_attention, "FLEX_FAILED", [])
    monkeypatch.setattr(sparse_attention, "triton_builds", lambda: True)
    monkeypatch.setattr(sparse_attention, "compiled_flex", failing)
    grid = (8, 8, 8)
    q, k, v = _qkv(512, seed=4)
    index, valid, neighbours = _layout_on(grid, q.device)
    qc, kc, vc = (x[:, :, index] for x in (q, k, v))
    selected = select_cubes(_pool(qc, valid), _pool(kc, valid), 2, neighbours)
    expected = gathered_attention(qc, kc, vc, selected, valid)
    with caplog.at_level("WARNING", logger=sparse_attention.__name__):
        for _ in range(3):
            out = sparse_attention.fine_attention(qc, kc, vc, selected, valid)
            assert torch.equal(out, expected)
    assert len(calls) == 1 and caplog.text.count("does not compile here") == 1


@pytest.mark.parametrize("local", [False, True])
def test_each_query_cube_attends_the_key_cubes_its_pooled_query_scores_highest(local):
    """The selection itself, against a reference written out by hand: query cube i keeps the
    ``keep`` key cubes j of the highest mean(q in i) . mean(k in j), per head, (with local, also
    itself and its face neighbours), and its tokens attend exactly the real tokens of those cubes.
    Keeping the lowest-scoring cubes, or scoring per key cube instead of per query cube, still
    keeps the requested density and still differs from dense: only this check tells."""
    grid = (5, 6, 7)  # 2 x 2 x 2 cubes, every one partial
    q, k, v = _qkv(5 * 6 * 7, seed=5)
    (pq, cube), (pk, _) = _cube_means(q, grid), _cube_means(k, grid)
    scores = pq @ pk.transpose(-1, -2)  # [1, 2, 8, 8]
    chosen = scores >= scores.topk(2, dim=-1).values[..., -1:]  # keep_ratio 0.25 of 8 cubes
    assert chosen.sum(-1).eq(2).all() and not torch.equal(chosen[:, 0], chosen[:, 1])
    if local:
        corners = torch.tensor([(t, h, w) for t in range(2) for h in range(2) for w in range(2)])
        chosen = chosen | ((corners[:, None] - corners[None]).abs().sum(-1) <= 1)
    mask = chosen[:, :, cube][:, :, :, cube]  # token pairs of the chosen cube pairs
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = block_sparse_attention(q, k, v, grid, keep_ratio=0.25, local=local)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_flops_count_the_kept_cubes_and_sparse_runs_only_at_half_of_dense_or_less():
    """16^3 tokens are 64 cubes of 64: a query cube keeps ceil(0.25 x 64) = 16 cubes and, in the
    worst case, 7 local ones (itself and 6 face neighbours), each 64 x 64 token pairs of QK^T and
    PV, plus the coarse path's 64 x 64 cube pairs. Sparse runs where that is at most half of
    dense: 13 x 16 x 16 tokens (0.54 of dense) refine dense, 12 x 16 x 16 (0.40) sparse."""
    from skyreels_core.sparse_attention import sparse_pays_off

    fine = 4.0 * 64 * 64 * (16 + 7) * 64
    assert sparse_attention_flops((16, 16, 16), 1, 1, 0.25) == fine + 4.0 * 64 * 64
    assert (
        sparse_attention_flops((16, 16, 16), 1, 1, 0.25, local=False)
        == fine / 23 * 16 + 4.0 * 64 * 64
    )
    assert sparse_attention_flops((16, 16, 16), 128, 40, 0.25) == 128 * 40 * (fine + 4.0 * 64 * 64)
    assert dense_attention_flops(4096, 128, 40) == 4.0 * 4096 * 4096 * 128 * 40
    assert not sparse_pays_off((13, 16, 16), 0.25) and sparse_pays_off((12, 16, 16), 0.25)
