"""The transformer blocks of both streams (DESIGN §3).

Module names follow Wan 2.1's original checkpoint (``self_attn``, ``cross_attn``, ``norm3``,
``ffn``, ``modulation``), so a Wan checkpoint loads into the video stream's dual-stream blocks
without renaming. Each block is split into the steps the dual-stream model interleaves across
streams: joint attention, text cross-attention (video only), then the audio-video exchange, then
the feed-forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import BlockSparsity, attention
from .rope import apply_rotary

Table = torch.Tensor  # (cos, sin) of the rotary angles, [L, head_dim / 2, 2] (rope.rotary)
# The steps the model's forward calls on a block, which ``runtime.compile_blocks`` compiles.
BLOCK_STEPS = ("attend", "cross_text", "feed_forward")


def runs_compiled(model: nn.Module) -> bool:
    """Whether ``model``'s blocks run compiled steps now: a compiled model renders with them set
    on its blocks, shadowing the methods (``runtime.LoadedModel.on``)."""
    return any(step in vars(module) for module in model.modules() for step in BLOCK_STEPS)


class RMSNorm(nn.Module):
    """Wan's RMS norm over the whole width (before the head split), computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # one fused kernel
        return normed.type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, as Wan does for stability in half precision."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def gelu_mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
    )


class Attention(nn.Module):
    """q/k/v/o projections with RMS q/k norms; ``heads`` splits [B, L, D] into [B, H, L, d]."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def heads(self, x: torch.Tensor, table: Table | None = None) -> torch.Tensor:
        """[B, L, D] -> [B, heads, L, head_dim], rotated before the transpose: on contiguous
        token-major memory the rotation runs 6x faster than on the transposed view."""
        x = x.unflatten(-1, (self.num_heads, -1))
        return (x if table is None else apply_rotary(x, table)).transpose(1, 2)

    def query(self, x: torch.Tensor, table: Table | None = None) -> torch.Tensor:
        return self.heads(self.norm_q(self.q(x)), table)

    def key_value(
        self, x: torch.Tensor, table: Table | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.norm_k(self.k(x)), table), self.heads(self.v(x))

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return self.o(y.transpose(1, 2).flatten(2))

    def cross(
        self, x, context, *, mask=None, q_table=None, k_table=None, backend="sdpa"
    ) -> torch.Tensor:
        k, v = self.key_value(context, k_table)
        return self.output(attention(self.query(x, q_table), k, v, mask=mask, backend=backend))


class AVCrossAttention(nn.Module):
    """One direction of the bidirectional audio-video exchange: ``x`` attends the other stream,
    with only the temporal rotary pairs applied on both sides (one clock, DESIGN §3).

    ``subframes`` > 1 (the audio's side in the ``demo`` preset, ``av_video_subframes``) splits
    each video token into one token per frame its latent holds, by a learned projection, each
    keyed at its frame's own time: a sound can then attend the frame it falls on instead of a
    latent that blends four, which is where a contact's exact frame is lost.
    """

    def __init__(self, dim: int, num_heads: int, eps: float, subframes: int = 0) -> None:
        super().__init__()
        self.subframes = subframes
        if subframes > 1:
            self.split_frames = nn.Linear(dim, subframes * dim)
            with torch.no_grad():  # starts as copies of each token: the paper's exchange
                self.split_frames.weight.copy_(torch.eye(dim).repeat(subframes, 1))
                self.split_frames.bias.zero_()
        self.norm_x = LayerNorm(dim, eps, elementwise_affine=True)
        self.norm_context = LayerNorm(dim, eps, elementwise_affine=True)
        self.attn = Attention(dim, num_heads, eps)
        nn.init.zeros_(
            self.attn.o.weight
        )  # a fresh exchange starts as identity (pretrained streams intact)
        nn.init.zeros_(self.attn.o.bias)

    def forward(
        self, x, other, x_table: Table, other_table: Table, backend: str = "sdpa"
    ) -> torch.Tensor:
        context = self.norm_context(other)
        if self.subframes > 1:
            context = self.split_frames(context).unflatten(-1, (self.subframes, -1)).flatten(1, 2)
        update = self.attn.cross(
            self.norm_x(x),
            context,
            q_table=x_table,
            k_table=other_table,
            backend=backend,
        )
        return x + update


def _along_tokens(parts: list[torch.Tensor]) -> torch.Tensor:
    """One token sequence; a lone part is passed through, since cat would copy it."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _joint(
    q_parts: list[torch.Tensor],
    kv_parts: list[tuple[torch.Tensor, torch.Tensor]],
    mask,
    backend,
    sparsity: BlockSparsity | None = None,
) -> torch.Tensor:
    k = _along_tokens([k for k, _ in kv_parts])
    v = _along_tokens([v for _, v in kv_parts])
    q = _along_tokens(q_parts)
    return attention(q, k, v, mask=mask, backend=backend, sparsity=sparsity)


class _StreamBlock(nn.Module):
    """What every block of a stream may carry besides its self-attention: the text
    cross-attention (video stream) and one direction of the audio-video exchange."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        eps: float,
        text_cross: bool,
        av_cross: bool,
        av_subframes: int = 0,
    ) -> None:
        super().__init__()
        if text_cross:
            self.norm3 = LayerNorm(dim, eps, elementwise_affine=True)
            self.cross_attn = Attention(dim, num_heads, eps)
        if av_cross:
            self.av_cross_attn = AVCrossAttention(dim, num_heads, eps, av_subframes)

    def cross_text(self, x, context, mask, backend):
        return x + self.cross_attn.cross(self.norm3(x), context, mask=mask, backend=backend)


class DualStreamBlock(_StreamBlock):
    """Modality and text tokens keep separate weights and modulation but attend jointly.

    With ``joint_text=False`` and ``text_cross=True`` this is exactly a Wan 2.1 block.
    """

    def __init__(
        self,
        dim,
        num_heads,
        ffn_dim,
        eps,
        *,
        joint_text: bool,
        text_cross: bool,
        av_cross: bool,
        av_subframes: int = 0,
    ):
        super().__init__(dim, num_heads, eps, text_cross, av_cross, av_subframes)
        self.norm1 = LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = Attention(dim, num_heads, eps)
        self.norm2 = LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = gelu_mlp(dim, ffn_dim)
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        if joint_text:
            self.text_attn = Attention(dim, num_heads, eps)
            self.text_ffn = gelu_mlp(dim, ffn_dim)
            self.text_modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def attend(
        self, x, text, e, table: Table, mask, backend, sparsity: BlockSparsity | None = None
    ):
        """Joint self-attention of the modality tokens (rotated) and the text tokens (not rotated).
        ``sparsity`` configures the block-sparse ``flex`` backend (the refiner, text-free)."""
        shift, scale, gate = (self.modulation + e).chunk(6, dim=1)[:3]
        h = modulate(self.norm1(x), shift, scale)
        q_parts = [self.self_attn.query(h, table)]
        kv_parts = [self.self_attn.key_value(h, table)]
        if text is not None:
            t_shift, t_scale, t_gate = (self.text_modulation + e).chunk(6, dim=1)[:3]
            ht = modulate(self.norm1(text), t_shift, t_scale)
            q_parts.append(self.text_attn.query(ht))
            kv_parts.append(self.text_attn.key_value(ht))
        out = _joint(q_parts, kv_parts, mask, backend, sparsity if text is None else None)
        length = x.shape[1]
        x = x + self.self_attn.output(out[:, :, :length]) * gate
        if text is not None:
            text = text + self.text_attn.output(out[:, :, length:]) * t_gate
        return x, text

    def feed_forward(self, x, text, e):
        shift, scale, gate = (self.modulation + e).chunk(6, dim=1)[3:]
        x = x + self.ffn(modulate(self.norm2(x), shift, scale)) * gate
        if text is not None:
            t_shift, t_scale, t_gate = (self.text_modulation + e).chunk(6, dim=1)[3:]
            text = text + self.text_ffn(modulate(self.norm2(text), t_shift, t_scale)) * t_gate
        return x, text


class SingleStreamBlock(_StreamBlock):
    """One set of weights over concat(modality, text): parallel attention + MLP (as in Flux)."""

    def __init__(
        self,
        dim,
        num_heads,
        ffn_dim,
        eps,
        *,
        text_cross: bool,
        av_cross: bool,
        av_subframes: int = 0,
    ):
        super().__init__(dim, num_heads, eps, text_cross, av_cross, av_subframes)
        self.dim, self.ffn_dim, self.num_heads = dim, ffn_dim, num_heads
        self.norm = LayerNorm(dim, eps, elementwise_affine=False)
        self.linear1 = nn.Linear(dim, 3 * dim + ffn_dim)
        self.linear2 = nn.Linear(dim + ffn_dim, dim)
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.modulation = nn.Parameter(torch.randn(1, 3, dim) / dim**0.5)

    def attend(self, x, text, e, table: Table, mask, backend, grid=None):
        """The ``del``s free each sequence-wide tensor once it is dead: the block's peak, the
        model's, fell from about 18 to 11-15 sequence-widths (bench part ``working_memory``)."""
        shift, scale, gate = (self.modulation + e[:, :3]).chunk(3, dim=1)
        length = x.shape[1]
        h = modulate(self.norm(torch.cat([x, text], dim=1)), shift, scale)
        fused = self.linear1(h)
        del h
        q, k, v, mlp = fused.split([self.dim, self.dim, self.dim, self.ffn_dim], dim=-1)
        heads = lambda t: t.unflatten(-1, (self.num_heads, -1))  # noqa: E731  token-major
        q, k, v = heads(self.norm_q(q)), heads(self.norm_k(k)), heads(v)
        q = torch.cat([apply_rotary(q[:, :length], table), q[:, length:]], dim=1)
        k = torch.cat([apply_rotary(k[:, :length], table), k[:, length:]], dim=1)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = attention(q, k, v, mask=mask, backend=backend).transpose(1, 2).flatten(2)
        del q, k, v
        mlp = F.gelu(mlp, approximate="tanh")
        del fused  # its last view, mlp, is gone: linear1's output is freed before the concat
        joined = torch.cat([out, mlp], dim=-1)
        del out, mlp
        update = self.linear2(joined) * gate
        return x + update[:, :length], text + update[:, length:]

    def feed_forward(self, x, text, e):
        return x, text  # the MLP runs in parallel with the attention in ``attend``
