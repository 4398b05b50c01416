"""The dual-stream MMDiT of SkyReels-V4 (DESIGN §3), read top to bottom in the order data flows:
embeddings -> token sequences and their rotary tables -> M dual-stream then N single-stream
blocks, each with text cross-attention (video) and the audio-video exchange -> output heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from .blocks import DualStreamBlock, LayerNorm, SingleStreamBlock, runs_compiled
from .config import ModelConfig
from .errors import InputError
from .rope import (
    audio_angles,
    audio_group_angles,
    audio_time_scale,
    device_table,
    video_angles,
    video_positions,
)
from .shapes import pixel_frame_count
from .types import ModelOutput, References, TextEncoding

TIMESTEP_SCALE = 1000.0  # flow time t in [0, 1] is embedded as Wan's timestep t * 1000
# Working memory of a forward, in elements of the compute dtype per token (video, audio and text)
# and unit of width: 1.4-1.7x the tracked peak of 12-15 in float32 and bfloat16 (bench part
# working_memory; 18-21 before the single-stream block freed its dead tensors).
ACTIVATION_ELEMENTS_PER_TOKEN_WIDTH = 21


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's [cos, sin] timestep embedding, computed in float64 like the reference: on ``t``'s
    device, or on the CPU for one without float64 (an Apple GPU refuses the cast), then back."""
    where = float64_device(t.device)
    half = dim // 2
    frequencies = torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=where) / half)
    angles = torch.outer(t.to(where, torch.float64), frequencies)
    return torch.cat([angles.cos(), angles.sin()], dim=1).float().to(t.device)


def float64_device(device: torch.device) -> torch.device:
    """Where float64 math for ``device`` runs: there, except on Apple's MPS, which has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


def least_activation_elements(
    dim: int,
    ffn_dim: int,
    stream_tokens: Sequence[int],
    text_tokens: int,
    parallel_blocks: bool,
    compiled: bool = False,
    exchange_keys: int = 0,
) -> int:
    """The least working memory one forward can take, in elements, for refusals that must never
    refuse a pass that fits; counted from what the blocks provably hold at once. Throughout:
    every stream and the text (a width a token). Then, one stream at a time, eagerly: a
    feed-forward holds its modulated input and its hidden activations before and after the GELU
    (width + 2 FFN widths a token); a single-stream block (``parallel_blocks``), at its GELU,
    holds linear1's fused q/k/v/MLP output, the attention's output and the GELU's (4 widths + 2 FFN
    widths a token of the stream and its text). ``compiled`` (torch.compile's Inductor writes a
    GELU over its input and frees what is dead sooner): only what any execution holds, a matmul's
    input and output (width + FFN width; linear1's 4 widths + FFN width) and an attention's q, k,
    v and output (4 widths). ``exchange_keys``: the video frame tokens the audio attends where
    its exchange splits video tokens into frames (``av_video_subframes``): eagerly, at the keys'
    RMS norm, the split tokens, their key projection, its norm and the norm's scaled output (4
    widths a frame token); compiled, the keys and values the attention reads (2 widths). The
    tracked or resident peaks sit above it (tests, bench)."""
    longest = max(stream_tokens)
    if compiled:
        transient = max((dim + ffn_dim) * longest, 4 * dim * longest)
        parallel = (4 * dim + ffn_dim) * (longest + text_tokens)
    else:
        transient = (dim + 2 * ffn_dim) * longest
        parallel = (4 * dim + 2 * ffn_dim) * (longest + text_tokens)
    if parallel_blocks:
        transient = max(transient, parallel)
    transient = max(transient, (2 if compiled else 4) * dim * exchange_keys)
    return dim * (sum(stream_tokens) + text_tokens) + transient


def video_token_count(patch_size: Sequence[int], video_shapes: Sequence[Sequence[int]]) -> int:
    """Tokens of video latents shaped ``[..., frames, height, width]`` under ``patch_size``."""
    pt, ph, pw = patch_size
    return sum(t // pt * (h // ph) * (w // pw) for *_, t, h, w in video_shapes)


def forward_activation_bytes(
    dim: int,
    patch_size: Sequence[int],
    dtype: torch.dtype,
    video_shapes: Sequence[Sequence[int]],
    other_tokens: int,
    batch: int,
    elements_per_token_width: float,
) -> int:
    """Activation bytes of one forward of a transformer of width ``dim`` over the video tokens of
    latents shaped ``[..., frames, height, width]`` and ``other_tokens`` more (audio, text)."""
    tokens = video_token_count(patch_size, video_shapes) + other_tokens
    return int(elements_per_token_width * batch * tokens * dim * dtype.itemsize)


def stream_embeddings(config: ModelConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
    """A stream's timestep embedding, its projection to the blocks' 6 modulation vectors, and its
    own text projection (each stream reads the text with its own weights). Layouts are Wan's."""
    d = config.dim
    return (
        nn.Sequential(nn.Linear(config.freq_dim, d), nn.SiLU(), nn.Linear(d, d)),
        nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d)),
        nn.Sequential(nn.Linear(config.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d)),
    )


def embed(modules, timestep: torch.Tensor, features: torch.Tensor, freq_dim: int):
    """(time embedding [B, D], modulation [B, 6, D], projected text [B, L, D]) of one stream."""
    time_embedding, time_projection, text_embedding = modules
    weight = time_embedding[0].weight
    e = time_embedding(sinusoidal_embedding(timestep * TIMESTEP_SCALE, freq_dim).to(weight.dtype))
    return e, time_projection(e).unflatten(1, (6, -1)), text_embedding(features.to(weight.dtype))


class Head(nn.Module):
    """Wan's output head: modulated norm then a linear to the patch's latent values."""

    def __init__(self, dim: int, out_features: int, eps: float) -> None:
        super().__init__()
        self.norm = LayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation + e.unsqueeze(1)).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + scale) + shift)


@lru_cache(maxsize=32)
def _video_table(
    grid, ref_frames, keyframes, key_grid, head_dim, theta, temporal_only, subframes=1
):
    """Rotary angles for [references | clip | keyframes] video tokens; cached per shape. With
    ``subframes`` S each token becomes S, timed in frames: latent t holds frames S t - S + 1 to
    S t (the codec's 1 + 4k layout; frame 0's latent repeats it at -3 to 0)."""
    positions = _video_positions(grid, ref_frames, keyframes, key_grid)
    if subframes > 1:
        offsets = torch.arange(subframes, dtype=torch.float64) - (subframes - 1)
        positions = positions.repeat_interleave(subframes, dim=0)
        positions[:, 0] = positions[:, 0] * subframes + offsets.repeat(len(positions) // subframes)
    return video_angles(positions, head_dim, theta, temporal_only)


def _video_positions(grid, ref_frames, keyframes, key_grid) -> torch.Tensor:
    t, h, w = grid
    parts = []
    if ref_frames:
        parts.append(video_positions(ref_frames, h, w, time_offset=-ref_frames))
    parts.append(video_positions(t, h, w))
    if keyframes:
        parts.append(
            video_positions(
                len(keyframes), *key_grid, times=list(keyframes), spatial_scale=h / key_grid[0]
            )
        )
    return torch.cat(parts)


@lru_cache(maxsize=32)
def _audio_table(length, ref_length, scale, head_dim, theta, temporal_only):
    """Audio token j at video time j * scale; references at (-L_ref + j) * scale."""
    times = torch.arange(-ref_length, length, dtype=torch.float64) * scale
    return audio_angles(times, head_dim, theta, temporal_only)


# Per shape, like the rotary tables, so its rotations stay cached on the device (device_table).
_audio_group_angles = lru_cache(maxsize=32)(audio_group_angles)


class DualStreamMMDiT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.attention_backend = "sdpa"
        # An offload.BlockSwap, or None: fetches layer i's weights before it runs, drops them after.
        self.weight_streamer = None
        d, c = config.dim, config
        pt, ph, pw = config.patch_size
        self.patch_embedding = nn.Conv3d(
            config.video_in_channels, d, config.patch_size, config.patch_size
        )
        self.time_embedding, self.time_projection, self.text_embedding = stream_embeddings(config)
        block_args = (d, c.num_heads, c.ffn_dim, c.eps)
        self.blocks = nn.ModuleList(
            DualStreamBlock(
                *block_args, joint_text=c.joint_text, text_cross=True, av_cross=c.has_audio
            )
            for _ in range(c.num_dual_blocks)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(*block_args, text_cross=True, av_cross=c.has_audio)
            for _ in range(c.num_single_blocks)
        )
        self.head = Head(d, c.video_latent_channels * pt * ph * pw, c.eps)
        if c.has_audio:
            self.audio_embedding = nn.Linear(c.audio_latent_channels, d)
            if c.audio_phase_harmonics:
                self.audio_phase = nn.Linear(2 * c.audio_phase_harmonics, d)
            self.audio_time_embedding, self.audio_time_projection, self.audio_text_embedding = (
                stream_embeddings(config)
            )
            self.audio_blocks = nn.ModuleList(
                DualStreamBlock(
                    *block_args,
                    joint_text=c.joint_text,
                    text_cross=False,
                    av_cross=True,
                    av_subframes=c.av_video_subframes,
                )
                for _ in range(c.num_dual_blocks)
            )
            self.audio_single_blocks = nn.ModuleList(
                SingleStreamBlock(
                    *block_args, text_cross=False, av_cross=True, av_subframes=c.av_video_subframes
                )
                for _ in range(c.num_single_blocks)
            )
            self.audio_head = Head(d, c.audio_latent_channels, c.eps)

    def activation_bytes(
        self,
        video_shapes: Sequence[Sequence[int]],
        audio_tokens: int,
        text_tokens: int,
        batch: int,
        least: bool = False,
    ) -> int:
        """Device memory one forward's activations take beyond the weights, for video latents of
        ``video_shapes`` (clip, keyframes, references), so a host can make room before sampling;
        ``least``: the least they can take, so a refusal never refuses what fits."""
        c, dtype = self.config, self.patch_embedding.weight.dtype
        if not least:
            tokens = audio_tokens + text_tokens
            return forward_activation_bytes(
                c.dim, c.patch_size, dtype, video_shapes, tokens, batch,
                ACTIVATION_ELEMENTS_PER_TOKEN_WIDTH,
            )  # fmt: skip
        streams = [video_token_count(c.patch_size, video_shapes), audio_tokens]
        parallel, compiled = c.num_single_blocks > 0, runs_compiled(self)
        frame_tokens = streams[0] * c.av_video_subframes if c.av_video_subframes > 1 else 0
        elements = least_activation_elements(
            c.dim, c.ffn_dim, streams, text_tokens, parallel, compiled, frame_tokens
        )
        return batch * elements * dtype.itemsize

    # -- inputs ------------------------------------------------------------------------------
    def _patchify(self, video: torch.Tensor) -> torch.Tensor:
        return (
            self.patch_embedding(video.to(self.patch_embedding.weight.dtype))
            .flatten(2)
            .transpose(1, 2)
        )

    def _reference_input(self, latents: torch.Tensor) -> torch.Tensor:
        """Clean references look fully known: concat(ref, ref, ones) under inpainting."""
        if not self.config.channel_concat_inpainting:
            return latents
        ones = torch.ones_like(latents[:, :1])
        return torch.cat([latents, latents, ones], dim=1)

    def _check(self, video, audio, references, keyframes, keyframe_indices) -> None:
        c = self.config
        if video.shape[1] != c.video_in_channels:
            raise InputError(
                "video", f"{video.shape[1]} channels for a model that takes {c.video_in_channels}",
                "pass concat(noisy, condition, mask) for inpainting models, plain latents for Wan models",
            )  # fmt: skip
        pt, ph, pw = c.patch_size
        if video.shape[2] % pt or video.shape[3] % ph or video.shape[4] % pw:
            raise InputError(
                "video",
                f"latent size {tuple(video.shape[2:])} does not divide by the patch {c.patch_size}",
                "use a size divisible by 16 px",
            )
        if audio is not None and not c.has_audio:
            raise InputError(
                "audio", "this model has no audio stream", "use a model with an audio stream"
            )
        streams = (("video", c.video_latent_channels), ("audio", c.audio_latent_channels))
        for stream, channels in streams if references else ():
            latents = getattr(references, stream)
            if latents is not None and channels is not None and latents.shape[1] != channels:
                raise InputError(
                    "references",
                    f"{stream} references of {latents.shape[1]} channels for a model whose {stream} "
                    f"latents have {channels}",
                    "encode them with the VAE the model was trained with",
                )
        if keyframes is not None and len(keyframe_indices or ()) != keyframes.shape[2]:
            raise InputError(
                "keyframe_indices",
                "one index per keyframe is needed",
                "pass as many indices as keyframes",
            )

    # -- forward -----------------------------------------------------------------------------
    def forward(
        self,
        video: torch.Tensor,
        timestep: torch.Tensor,
        text: TextEncoding,
        audio: torch.Tensor | None = None,
        references: References | None = None,
        keyframes: torch.Tensor | None = None,
        keyframe_indices: Sequence[int] | None = None,
        audio_timestep: torch.Tensor | None = None,
    ) -> ModelOutput:
        """``audio_timestep``, the sound's own flow time where it runs behind the picture's
        (``ModelConfig.audio_time_share``); None gives both streams ``timestep``."""
        c = self.config
        self._check(video, audio, references, keyframes, keyframe_indices)
        backend = self.attention_backend
        batch, _, frames, height, width = video.shape
        pt, ph, pw = c.patch_size
        grid = (frames // pt, height // ph, width // pw)
        device, dtype = video.device, self.patch_embedding.weight.dtype

        # Video tokens: [references | clip | high-res keyframes] (DESIGN §3, §4).
        ref_video = references.video if references is not None else None
        ref_frames = 0 if ref_video is None else ref_video.shape[2] // pt
        parts = [] if ref_video is None else [self._patchify(self._reference_input(ref_video))]
        parts.append(self._patchify(video))
        key_grid, key_times = (0, 0), ()
        if keyframes is not None:
            key_grid = (keyframes.shape[3] // ph, keyframes.shape[4] // pw)
            key_times = tuple(int(i) for i in keyframe_indices)
            parts.append(self._patchify(keyframes))
        x = torch.cat(parts, dim=1)
        clip_start = ref_frames * grid[1] * grid[2]
        clip_end = clip_start + math.prod(grid)

        table_args = (grid, ref_frames, key_times, key_grid, c.head_dim, c.rope_theta)
        video_self = device_table(_video_table(*table_args, False), device)
        video_modules = (self.time_embedding, self.time_projection, self.text_embedding)
        e_video, e6_video, context = embed(video_modules, timestep, text.features, c.freq_dim)
        text_video = context if c.joint_text else None
        text_mask = text.mask.to(device, torch.bool)  # a 0/1 float mask would add, not mask
        joint_mask = self._joint_mask(text_mask, x.shape[1]) if c.joint_text else None
        cross_args = (clip_start, grid, key_times, key_grid)
        cross_mask = self._cross_mask(text, text_mask, x.shape[1], *cross_args)

        a = text_audio = None
        if audio is not None:
            ref_audio = references.audio if references is not None else None
            ref_length = 0 if ref_audio is None else ref_audio.shape[2]
            stream = audio if ref_audio is None else torch.cat([ref_audio, audio], dim=2)
            a = self.audio_embedding(stream.transpose(1, 2).to(dtype))
            if c.audio_phase_harmonics:
                phase_args = (audio.shape[2], ref_length, frames, c.audio_phase_harmonics)
                phase = device_table(_audio_group_angles(*phase_args), device)
                a = a + self.audio_phase(torch.cat([phase[..., 1], phase[..., 0]], dim=1).to(dtype))
            scale = audio_time_scale(grid[0], audio.shape[2])  # one clock for both streams
            audio_args = (audio.shape[2], ref_length, scale, c.head_dim, c.rope_theta)
            audio_self = device_table(_audio_table(*audio_args, False), device)
            audio_cross = device_table(_audio_table(*audio_args, True), device)
            video_cross = device_table(_video_table(*table_args, True), device)
            # The audio's side of the exchange on a frame clock (AVCrossAttention.subframes):
            # audio token j at frame j F / L_a, each video frame token at its frame.
            video_frames_cross, audio_frames_cross = video_cross, audio_cross
            if c.av_video_subframes > 1:
                frames_args = (*table_args, True, c.av_video_subframes)
                video_frames_cross = device_table(_video_table(*frames_args), device)
                frame_clock = pixel_frame_count(grid[0]) / audio.shape[2]
                frame_args = (audio.shape[2], ref_length, frame_clock, c.head_dim, c.rope_theta)
                audio_frames_cross = device_table(_audio_table(*frame_args, True), device)
            audio_modules = (
                self.audio_time_embedding,
                self.audio_time_projection,
                self.audio_text_embedding,
            )
            audio_time = timestep if audio_timestep is None else audio_timestep
            e_audio, e6_audio, context_audio = embed(
                audio_modules, audio_time, text.features, c.freq_dim
            )
            text_audio = context_audio if c.joint_text else None
            audio_joint_mask = self._joint_mask(text_mask, a.shape[1]) if c.joint_text else None

        video_blocks = [*self.blocks, *self.single_blocks]
        audio_blocks = [*self.audio_blocks, *self.audio_single_blocks] if a is not None else []
        streamer = self.weight_streamer
        try:
            for index, block in enumerate(video_blocks):
                if streamer is not None:
                    streamer.fetch(index)
                x, text_video = block.attend(
                    x, text_video, e6_video, video_self, joint_mask, backend
                )
                x = block.cross_text(x, context, cross_mask, backend)
                if a is not None:
                    audio_block = audio_blocks[index]
                    a, text_audio = audio_block.attend(
                        a, text_audio, e6_audio, audio_self, audio_joint_mask, backend
                    )
                    # Audio attends video, then video attends the updated audio (the paper's order).
                    a = audio_block.av_cross_attn(
                        a, x, audio_frames_cross, video_frames_cross, backend
                    )
                    x = block.av_cross_attn(x, a, video_cross, audio_cross, backend)
                    a, text_audio = audio_block.feed_forward(a, text_audio, e6_audio)
                x, text_video = block.feed_forward(x, text_video, e6_video)
                if streamer is not None:
                    streamer.release(index)
        except BaseException:
            # A pass that failed part-way (out of memory, Cancel) leaves no swapped layer on the
            # device: the pass after it (the sampler's half-batch retry) has the room it planned.
            if streamer is not None:
                streamer.restore()
            raise

        out = self.head(x, e_video)
        video_out = self._unpatchify(out[:, clip_start:clip_end], grid)
        keyframes_out = None
        if keyframes is not None:
            keyframes_out = self._unpatchify(out[:, clip_end:], (len(key_times), *key_grid))
        audio_out = None
        if a is not None:
            audio_out = self.audio_head(a[:, a.shape[1] - audio.shape[2] :], e_audio).transpose(
                1, 2
            )
        return ModelOutput(video=video_out, audio=audio_out, keyframes=keyframes_out)

    def _unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        pt, ph, pw = self.config.patch_size
        t, h, w = grid
        x = tokens.reshape(tokens.shape[0], t, h, w, pt, ph, pw, -1)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(
            tokens.shape[0], -1, t * pt, h * ph, w * pw
        )

    @staticmethod
    def _joint_mask(text_mask: torch.Tensor, length: int) -> torch.Tensor | None:
        """Key mask for [modality | text] joint attention: padded text tokens are never attended."""
        if bool(text_mask.all()):
            return None
        keys = torch.cat([text_mask.new_ones(text_mask.shape[0], length), text_mask], dim=1)
        return keys[:, None, None, :]

    def _cross_mask(self, text, text_mask, length, clip_start, grid, key_times, key_grid):
        """Text cross-attention mask: padding, and for multi-shot prompts each clip frame's tokens
        attend only their shot's text, as do a high-res keyframe's (at its latent frame);
        references see every shot."""
        if not text.shot_ranges:
            return None if bool(text_mask.all()) else text_mask[:, None, None, :]
        device = text_mask.device
        frame_of_token = torch.full((length,), -1, device=device)
        tokens_per_frame = grid[1] * grid[2]
        clip = torch.arange(grid[0] * tokens_per_frame, device=device) // tokens_per_frame
        frame_of_token[clip_start : clip_start + len(clip)] = clip
        if key_times:
            keys = torch.tensor(key_times, device=device).repeat_interleave(math.prod(key_grid))
            frame_of_token[clip_start + len(clip) :] = keys
        allowed = torch.zeros(length, text_mask.shape[1], dtype=torch.bool, device=device)
        allowed[frame_of_token < 0] = True
        for token_start, token_end, frame_start, frame_end in text.shot_ranges:
            rows = (frame_of_token >= frame_start) & (frame_of_token < frame_end)
            allowed[
                rows.nonzero()[:, 0, None],
                torch.arange(token_start, token_end, device=device),
            ] = True
        return (allowed[None] & text_mask[:, None, :])[:, None]
