"""Block-sparse video attention in the style of VSA (DESIGN §4), through FlexAttention block masks.

Tokens are regrouped into cubes of 4 x 4 x 4 latent tokens; each query cube attends the ``k`` key
cubes whose pooled keys score highest against its pooled query, plus its own cube and its face
neighbours: on CUDA (where Triton builds) in one compiled FlexAttention call whose BlockMask lists
exactly those cubes, elsewhere by gathering each query cube's kept key cubes for one SDPA call per
chunk (the same pairs; bench/ measures both against dense). A coarse path (pooled queries over
pooled keys/values) carries the long range, added through a gate that starts at zero so a model
initialised from dense weights starts as the fine sparse path.
"""

from __future__ import annotations

import logging
import math
from functools import cache, lru_cache, wraps
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

log = logging.getLogger(__name__)

CUBE = (4, 4, 4)
CUBE_TOKENS = math.prod(CUBE)
# The Triton kernel's tiles must divide the BlockMask's 64-token blocks; its default tile for
# bf16 / fp16 at head width 128 is 128 queries, which torch refuses for a 64-token mask.
CUDA_TILES = {"BLOCK_M": CUBE_TOKENS, "BLOCK_N": CUBE_TOKENS}


def _normal_tensors(make):
    """Layouts made as normal tensors even under inference mode, as the host refines: they are
    cached, and a later training step over the same grid cannot save inference tensors (its
    index lookups) for its backward pass. Normal tensors serve inference just as well."""

    @wraps(make)
    def made(*args, **kwargs):
        with torch.inference_mode(False):
            return make(*args, **kwargs)

    return made


@lru_cache(maxsize=16)
@_normal_tensors
def cube_order(
    grid: tuple[int, int, int], cube: tuple[int, int, int] = CUBE
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """(gather index into the padded sequence, validity of each padded slot, cube grid).

    Row-major (t, h, w) tokens are padded to whole cubes and listed cube by cube; padded slots
    point at token 0 and are masked out of attention."""
    cubes = tuple(-(-g // c) for g, c in zip(grid, cube))
    coords = torch.meshgrid(*(torch.arange(n * c) for n, c in zip(cubes, cube)), indexing="ij")
    t, h, w = (
        axis.reshape(cubes[0], cube[0], cubes[1], cube[1], cubes[2], cube[2])
        .permute(0, 2, 4, 1, 3, 5)
        .flatten()
        for axis in coords
    )
    valid = (t < grid[0]) & (h < grid[1]) & (w < grid[2])
    index = torch.where(valid, (t * grid[1] + h) * grid[2] + w, torch.zeros_like(t))
    return index, valid, cubes


@lru_cache(maxsize=16)
@_normal_tensors
def neighbourhood(cubes: tuple[int, int, int]) -> torch.Tensor:
    """[n, n] bool: each cube and its face neighbours."""
    coords = torch.stack(
        torch.meshgrid(*(torch.arange(n) for n in cubes), indexing="ij"), -1
    ).reshape(-1, 3)
    return (coords[:, None] - coords[None]).abs().sum(-1) <= 1


def select_cubes(
    q_pooled: torch.Tensor, k_pooled: torch.Tensor, keep: int, local: torch.Tensor | None
) -> torch.Tensor:
    """[B, H, n, n] bool: the top-``keep`` key cubes per query cube by pooled score, plus ``local``."""
    scores = q_pooled @ k_pooled.transpose(-1, -2)
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    chosen.scatter_(-1, scores.topk(keep, dim=-1).indices, True)
    return chosen | local if local is not None else chosen


@lru_cache(maxsize=32)
@_normal_tensors
def _layout_on(
    grid: tuple[int, int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gather index, slot validity, cube neighbourhood) of one grid, kept on ``device``: every
    block of every denoising step reuses them instead of copying them over again."""
    index, valid, cubes = cube_order(grid)
    return index.to(device), valid.to(device), neighbourhood(cubes).to(device)


@lru_cache(maxsize=32)
@_normal_tensors
def _scatter_on(grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """(token, slot) index pairs that put each real slot's output back in token order, made once
    per grid: indexing by the boolean validity in every block would wait on the GPU twice (each
    boolean index counts its true values on the host) per block and step."""
    index, valid, _ = cube_order(grid)
    slots = valid.nonzero().squeeze(1)
    return index[slots].to(device), slots.to(device)


FLEX_SHAPES = 64
"""Input shapes one process compiles the FlexAttention kernel for (clip sizes, guidance batches):
past dynamo's default limit of 8 a ninth shape, a long session's ninth resolution or length, ran
the unfused kernel, which builds the full score matrix (out of memory until a restart)."""


@lru_cache(maxsize=4)
def flex_kernel(device_type: str):
    """FlexAttention compiled once per device type. With ``dynamic=False`` torch.compile keeps one
    kernel per input shape, so a refiner run compiles once per clip size and reuses it for every
    block and step; only the compiled kernel skips the blocks a BlockMask leaves out. Call it
    through :func:`compiled_flex`, which lets it keep :data:`FLEX_SHAPES` kernels."""
    # imported here, as BlockMask below: the cube layout and FLOP counts this module also holds
    # are read at start-up (the refiner's dense fallback), on a torch without FlexAttention too
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def block_mask_from_selection(selected: torch.Tensor, valid: torch.Tensor) -> BlockMask:
    """A FlexAttention BlockMask that visits exactly the selected cube pairs (padding masked)."""
    from torch.nn.attention.flex_attention import BlockMask

    counts = selected.sum(-1, dtype=torch.int32)
    order = torch.argsort(selected.to(torch.int8), dim=-1, descending=True, stable=True).to(
        torch.int32
    )
    valid = valid.to(selected.device)

    # The mask_mod repeats the block selection: compiled kernels skip unlisted blocks, the eager
    # kernel (tests) evaluates only the mask_mod, and both must agree.
    def kept(b, h, q_index, kv_index):
        return selected[b, h, q_index // CUBE_TOKENS, kv_index // CUBE_TOKENS] & valid[kv_index]

    length = valid.numel()
    return BlockMask.from_kv_blocks(
        counts, order, BLOCK_SIZE=CUBE_TOKENS, mask_mod=kept, seq_lengths=(length, length)
    )


GATHER_ELEMENTS = 2**20
"""Gathered key elements per chunk of :func:`gathered_attention`: small enough to stay in a CPU's
cache between the copy and the attention that reads it (bench/: 4 MiB chunks run ~2x faster than
one gather of everything)."""


def gathered_attention(
    qc: torch.Tensor,
    kc: torch.Tensor,
    vc: torch.Tensor,
    selected: torch.Tensor,
    valid: torch.Tensor,
) -> torch.Tensor:
    """The fine path without FlexAttention, for devices where it is not compiled (the CPU): each
    query cube's kept key cubes are gathered side by side and attended by one SDPA call over a
    chunk of query cubes, so work and memory scale with the kept cubes, not with all of them.

    ``qc``/``kc``/``vc`` [B, H, n * 64, D] are in cube order, ``selected`` [B, H, n, n] the kept
    cube pairs, ``valid`` [n * 64] the real (unpadded) token slots. Query cubes keep different
    numbers of cubes (top-k plus their neighbourhood), so each row is padded to the widest and
    the pad masked, as are padded tokens."""
    batch, heads, length, dim = qc.shape
    count = length // CUBE_TOKENS
    width = int(selected.sum(-1).max())
    order = torch.argsort(selected.to(torch.int8), dim=-1, descending=True, stable=True)
    order = order[..., :width]
    kept = selected.gather(-1, order)[..., None] & valid.view(count, CUBE_TOKENS)[order]
    rows = batch * heads * count
    mask = kept.reshape(1, rows, 1, width * CUBE_TOKENS)
    offsets = torch.arange(batch * heads, device=qc.device).view(batch, heads, 1, 1) * count
    sources = (order + offsets).reshape(rows, width)
    q, k, v = (x.reshape(rows, CUBE_TOKENS, dim) for x in (qc, kc, vc))
    chunk = max(1, GATHER_ELEMENTS // (width * CUBE_TOKENS * dim))
    parts = []
    for start in range(0, rows, chunk):
        index = sources[start : start + chunk].flatten()
        keys, values = (
            x.index_select(0, index).view(1, -1, width * CUBE_TOKENS, dim) for x in (k, v)
        )
        window = slice(start, start + chunk)
        parts.append(
            F.scaled_dot_product_attention(q[None, window], keys, values, attn_mask=mask[:, window])
        )
    return torch.cat(parts, dim=1).view(batch, heads, length, dim)


def compiled_flex(qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, block_mask: BlockMask):
    """The compiled kernel over one BlockMask, allowed a kernel for each of :data:`FLEX_SHAPES`
    input shapes (the limit set for this call only, not for the host's other compiled code)."""
    with torch._dynamo.config.patch(recompile_limit=FLEX_SHAPES):
        return flex_kernel(qc.device.type)(
            qc, kc, vc, block_mask=block_mask, kernel_options=CUDA_TILES
        )


FLEX_DEVICE = "cuda"  # where the compiled FlexAttention runs (Triton's kernels)
FLEX_FAILED: list[str] = []
"""Why compiling FlexAttention failed in this process, once it has: the gathered path from then on."""


@cache
def triton_builds() -> bool:
    """Whether torch.compile can build GPU kernels here: the check inductor makes before it
    raises TritonMissing or GPUTooOldForTriton (ComfyUI on Windows without triton-windows, a
    GTX 10xx card)."""
    from torch.utils._triton import has_triton

    if has_triton():
        return True
    log.info("Triton cannot build kernels here: sparse attention runs as gathered SDPA (slower)")
    return False


def fine_attention(
    qc: torch.Tensor,
    kc: torch.Tensor,
    vc: torch.Tensor,
    selected: torch.Tensor,
    valid: torch.Tensor,
) -> torch.Tensor:
    """Attention over the selected cube pairs: compiled FlexAttention on CUDA where Triton builds
    it, the gathered SDPA elsewhere (eager FlexAttention evaluates the mask for every pair, slower
    than dense), and from the first time compiling fails on (a Triton installed that cannot
    build here, as in Windows' portable ComfyUI without its headers)."""
    if qc.device.type == FLEX_DEVICE and triton_builds() and not FLEX_FAILED:
        from .runtime import toolchain_failures

        try:
            return compiled_flex(qc, kc, vc, block_mask_from_selection(selected, valid))
        except toolchain_failures() as error:
            FLEX_FAILED.append(str(error).splitlines()[0])
            log.warning("FlexAttention does not compile here (%s): sparse attention runs as "
                        "gathered SDPA (slower)", FLEX_FAILED[0])  # fmt: skip
    return gathered_attention(qc, kc, vc, selected, valid)


def _pool(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over each cube's valid tokens: [B, H, n * 64, D] -> [B, H, n, D]."""
    weights = valid.to(x.dtype).view(-1, CUBE_TOKENS, 1)
    cubes = x.unflatten(2, (-1, CUBE_TOKENS))
    return (cubes * weights).sum(3) / weights.sum(1).clamp_min(1)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: tuple[int, int, int],
    *,
    keep_ratio: float = 0.25,
    local: bool = True,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention over [B, H, L, D] video tokens (L = T * H * W, row-major) keeping ``keep_ratio`` of
    the key cubes per query cube. ``gate`` (per head, [H]) mixes in the coarse cube attention."""
    index, valid, local_cubes = _layout_on(tuple(grid), q.device)
    qc, kc, vc = (x[:, :, index] for x in (q, k, v))
    q_pooled, k_pooled, v_pooled = (_pool(x, valid) for x in (qc, kc, vc))
    count = q_pooled.shape[2]
    keep = max(1, min(count, math.ceil(keep_ratio * count)))
    # The selection depends on the pooled scores, so the BlockMask is built per call (cheap: one
    # top-k over cubes); its layout above and the compiled kernel are what is cached per shape.
    selected = select_cubes(q_pooled, k_pooled, keep, local_cubes if local else None)
    out = fine_attention(qc, kc, vc, selected, valid)
    if gate is not None:
        coarse = F.scaled_dot_product_attention(q_pooled, k_pooled, v_pooled)
        gate = gate.to(out.dtype).view(1, -1, 1, 1)  # float32 gates would promote bf16 tokens
        out = out + gate * coarse.repeat_interleave(CUBE_TOKENS, dim=2)
    tokens, slots = _scatter_on(tuple(grid), q.device)
    result = torch.empty_like(q)
    result[:, :, tokens] = out[:, :, slots]
    return result


def sparse_pays_off(grid: tuple[int, int, int], keep_ratio: float) -> bool:
    """Whether block-sparse attention over ``grid`` is worth running: at most half of dense's
    FLOPs. Its gathered kernel computes at about 60 % of dense attention's rate (bench part
    ``sparse``), and a small grid pads its cubes and keeps its neighbourhood whatever the ratio:
    one latent frame at 32x32 tokens costs 5.8x dense's FLOPs and ran 10x slower."""
    dense = dense_attention_flops(math.prod(grid), 1, 1)
    return sparse_attention_flops(grid, 1, 1, keep_ratio) <= dense / 2


def dense_attention_flops(tokens: int, head_dim: int, heads: int) -> float:
    """QK^T and PV multiply-adds, counted as 2 FLOPs each."""
    return 4.0 * tokens * tokens * head_dim * heads


def sparse_attention_flops(
    grid: tuple[int, int, int], head_dim: int, heads: int, keep_ratio: float, local: bool = True
) -> float:
    """FLOPs of the fine path (kept cubes, local ones included in the worst case) plus the coarse path."""
    _, _, cubes = cube_order(tuple(grid))
    count = math.prod(cubes)
    kept = min(count, math.ceil(keep_ratio * count) + (7 if local else 0))
    fine = 4.0 * count * CUBE_TOKENS * kept * CUBE_TOKENS * head_dim * heads
    return fine + dense_attention_flops(count, head_dim, heads)
