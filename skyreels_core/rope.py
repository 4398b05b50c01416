"""Rotary position embeddings on one clock for both streams (DESIGN §3).

Video tokens rotate by (t, h, w) with Wan's split of the head dimension (44/42/42 of 128); audio
tokens by one time axis whose positions are scaled by ``T_lat / L_a`` so audio token j sits at
video time ``j * T_lat / L_a``. Cross-modal attention rotates only the temporal pairs, on both
sides, so it sees true time offsets and nothing else. Positions are floats: references sit at
negative times and high-res keyframes at fractional low-res grid positions.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .shapes import TEMPORAL_STRIDE, pixel_frame_count


def axis_split(head_dim: int) -> tuple[int, int, int]:
    """Rotary pairs for (t, h, w): Wan's ``d - 4(d//6)``, ``2(d//6)``, ``2(d//6)`` dims, halved."""
    spatial = 2 * (head_dim // 6)
    return (head_dim - 2 * spatial) // 2, spatial // 2, spatial // 2


def inverse_frequencies(dims: int, theta: float) -> torch.Tensor:
    """Wan's frequency table for one axis of ``dims`` dims, in float64 like the reference."""
    return 1.0 / theta ** (torch.arange(0, dims, 2, dtype=torch.float64) / dims)


def video_angles(
    positions: torch.Tensor, head_dim: int, theta: float, temporal_only: bool = False
) -> torch.Tensor:
    """Angles [L, head_dim/2] for (t, h, w) positions [L, 3]; ``temporal_only`` zeroes h and w."""
    pairs = axis_split(head_dim)
    parts = []
    for axis, count in enumerate(pairs):
        frequencies = inverse_frequencies(2 * count, theta)
        angle = positions[:, axis, None].double() * frequencies
        parts.append(angle if axis == 0 or not temporal_only else torch.zeros_like(angle))
    return torch.cat(parts, dim=1)


def audio_angles(
    times: torch.Tensor, head_dim: int, theta: float, temporal_only: bool = False
) -> torch.Tensor:
    """Angles [L, head_dim/2] for audio tokens at video times [L]: the whole head dimension on one
    time axis for self-attention, or only the video's temporal pairs for cross-modal attention."""
    if temporal_only:
        t_pairs = axis_split(head_dim)[0]
        angle = times[:, None].double() * inverse_frequencies(2 * t_pairs, theta)
        return torch.cat([angle, angle.new_zeros(len(times), head_dim // 2 - t_pairs)], dim=1)
    return times[:, None].double() * inverse_frequencies(head_dim, theta)


def audio_time_scale(latent_frames: int, audio_tokens: int) -> float:
    """Video time per audio token, ``T_lat / L_a``: 21 / 218 for the paper's 5 s clips."""
    return latent_frames / audio_tokens


def audio_group_angles(
    length: int, ref_length: int, latent_frames: int, harmonics: int
) -> torch.Tensor:
    """Where each audio token sits inside its video latent group: angles 2 pi m f / 4 for
    m = 1..``harmonics`` [L_ref + L, harmonics], f the token's time in video frames; the model
    feeds their sin and cos (the :func:`rotary` table) to the audio embedding.

    Rotary attention tells a token only its offsets to others, and at the latent clock the fastest
    temporal pair turns one radian per group of 4 frames: too coarse to say which of the 4 frames
    a latent's event falls on. This absolute, group-periodic feature lets the audio stream's MLPs
    combine "the latent I attend shows a contact on its 2nd frame" with "I am on the 2nd frame",
    where a click must go. The audio spans the clip's 4 (T_lat - 1) + 1 frames (1 + 4k layout).
    """
    frames = pixel_frame_count(latent_frames)
    f = torch.arange(-ref_length, length, dtype=torch.float64) * frames / length
    m = torch.arange(1, harmonics + 1, dtype=torch.float64)
    return 2 * math.pi * f[:, None] * m / TEMPORAL_STRIDE


def rotary(angles: torch.Tensor) -> torch.Tensor:
    """(cos, sin) of every angle, [L, head_dim/2, 2] float32: the real view of the unit rotations
    e^(i angle), so eager code multiplies them as complex numbers without a copy."""
    return torch.stack([angles.cos(), angles.sin()], dim=-1).to(torch.float32)


# One render's tables (the video and audio streams' self and cross tables, the audio phase, the
# refiner's) and a few more: each is tens of MB of GPU memory at 720p, which neither the host's
# model unloading nor its cache emptying can reclaim, so renders of many shapes must not pile
# them up (64 held 2.5 GB at 720p).
DEVICE_TABLES = 8


def device_table(angles: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """The :func:`rotary` table of ``angles`` on ``device``, made once: callers pass angles from
    their per-shape caches, so the same tensor object (hashed by identity, kept alive as the key)
    returns the same table instead of a host-to-device copy every forward."""
    return _device_table(angles, torch.device(device), torch.is_inference_mode_enabled())


@lru_cache(maxsize=DEVICE_TABLES)
def _device_table(angles: torch.Tensor, device: torch.device, inference: bool) -> torch.Tensor:
    # Keyed on inference mode too: the host samples under it, and its tensors cannot be saved for
    # a later backward pass.
    return rotary(angles).to(device)


ROTARY_CHUNK = 1024  # tokens rotated at a time in half precision (see apply_rotary)


def apply_rotary(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of token-major [B, L, heads, head_dim] by the table's rotations
    [L, head_dim/2, 2] (Wan's layout), in float32.

    Eagerly one complex multiply, about 4x faster forward and backward than the real arithmetic's
    separate kernels; under ``torch.compile`` the real arithmetic, which Inductor fuses into one
    kernel and which avoids its missing code generation for complex operators. Half-precision
    input is rotated ``ROTARY_CHUNK`` tokens at a time into its output: its float32 copies of
    the whole of q and k were the model's activation peak in bf16."""
    if torch.compiler.is_compiling():
        pairs = x.float().unflatten(-1, (-1, 2))
        cos, sin = table[:, None, :, 0], table[:, None, :, 1]
        real, imag = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
        return rotated.flatten(-2).to(x.dtype)
    if x.dtype == torch.float32 or x.shape[1] <= ROTARY_CHUNK:
        return _rotate(x, table)
    out = torch.empty_like(x)
    for start in range(0, x.shape[1], ROTARY_CHUNK):
        part = slice(start, start + ROTARY_CHUNK)
        out[:, part] = _rotate(x[:, part], table[part])
    return out


def _rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    pairs = x.float().unflatten(-1, (-1, 2))
    turns = torch.view_as_complex(table)[:, None]
    return torch.view_as_real(torch.view_as_complex(pairs) * turns).flatten(-2).to(x.dtype)


def video_positions(
    frames: int,
    height: int,
    width: int,
    *,
    time_offset: float = 0.0,
    times=None,
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """(t, h, w) of every token of a [frames, height, width] token grid, row-major.

    ``times`` overrides the per-frame times (keyframes sit at their latent frame index);
    ``spatial_scale`` maps a finer grid onto the low-res grid's coordinates by token centres: the
    2 x 2 tokens of a 2x finer grid over low-res token j sit at j -+ 0.25, around j itself (at
    j and j + 0.5 a keyframe's picture would sit a quarter token off the clip's).
    """
    t = (
        torch.as_tensor(times, dtype=torch.float64)
        if times is not None
        else torch.arange(frames, dtype=torch.float64)
    )
    t = t + time_offset
    h, w = (
        (torch.arange(n, dtype=torch.float64) + 0.5) * spatial_scale - 0.5 for n in (height, width)
    )
    grid = torch.meshgrid(t, h, w, indexing="ij")
    return torch.stack([axis.flatten() for axis in grid], dim=1)
