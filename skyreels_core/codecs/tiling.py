"""Spatial tiling for convolutional codecs: bounded memory, and exact where the context suffices.

Tiles of ``tile`` latent pixels overlap their neighbours by ``overlap``. Each side of an overlap
is split into three bands: the outer ``context`` pixels of each tile are computed but given no
weight (they only feed the convolutions of the pixels inside), and the middle ``blend`` band is
cross-faded linearly. A pixel that is at least the codec's receptive field away from its tile's
edge is computed exactly as in one whole-frame pass, so with ``context`` >= that field the tiled
result equals the untiled one (up to float rounding); wider blends hide what a global layer
(the VAE's mid-block attention) sees differently per tile.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError
from ..memory import check_codec_ram, clip_bytes
from ..shapes import pixel_frame_count
from .protocol import VideoCodec

TileHook = Callable[[int, int], None]
"""Called with (tiles done, tiles in all) after each tile: a host's progress bar and Cancel."""


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of ``tile`` covering ``size`` with at least ``overlap`` shared; the last is
    aligned to the end, so no tile is cut short."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return [*starts, size - tile]


def bands(overlap: int) -> tuple[int, int]:
    """(context, blend) of one side of an overlap: a quarter of it blended, the rest context."""
    blend = overlap // 4
    return (overlap - blend) // 2, blend


def _profile(start: int, end: int, size: int, overlap: int, scale: int) -> torch.Tensor:
    """Weights along one axis of the tile [start, end) (latent pixels) at output resolution."""
    context, blend = (band * scale for band in bands(overlap))
    length = (end - start) * scale
    position = torch.arange(length, dtype=torch.float32) + 0.5
    weight = torch.ones(length)
    if start > 0:
        weight = torch.minimum(weight, ((position - context) / max(blend, 1)).clamp(0, 1))
    if end < size:
        weight = torch.minimum(weight, ((length - context - position) / max(blend, 1)).clamp(0, 1))
    return weight


def spatially_tiled(
    x: torch.Tensor,
    function: Callable[[torch.Tensor], torch.Tensor],
    *,
    tile: int,
    overlap: int,
    in_scale: int,
    out_scale: int,
    on_tile: TileHook | None = None,
) -> torch.Tensor:
    """``function`` applied to [..., H, W] tensor ``x`` tile by tile. Sizes are in latent pixels,
    ``x`` has ``in_scale`` pixels per latent pixel and the result ``out_scale`` (decoding: 1 and
    the VAE's stride; encoding: the reverse). ``on_tile(done, total)`` is called after each
    tile."""
    height, width = x.shape[-2] // in_scale, x.shape[-1] // in_scale
    rows, columns = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    if len(rows) == len(columns) == 1:
        return function(x)
    total = weights = None
    done, count = 0, len(rows) * len(columns)
    for top in rows:
        bottom = min(top + tile, height)
        vertical = _profile(top, bottom, height, overlap, out_scale)
        for left in columns:
            right = min(left + tile, width)
            piece = function(
                x[..., top * in_scale : bottom * in_scale, left * in_scale : right * in_scale]
            )
            if total is None:
                total = piece.new_zeros(*piece.shape[:-2], height * out_scale, width * out_scale)
                weights = torch.zeros(height * out_scale, width * out_scale, device=piece.device)
            weight = (
                vertical[:, None] * _profile(left, right, width, overlap, out_scale)[None]
            ).to(piece.device)
            region = (
                slice(top * out_scale, bottom * out_scale),
                slice(left * out_scale, right * out_scale),
            )
            total[..., region[0], region[1]] += piece * weight.to(piece.dtype)
            weights[region] += weight
            done += 1
            if on_tile is not None:
                on_tile(done, count)
    return total.div_(weights.to(total.dtype))  # in place: the output is the biggest tensor here


def _check(tile: int, overlap: int) -> None:
    if tile < 0 or not 0 <= overlap < max(tile, 1):
        raise InputError(
            "tile_overlap",
            f"{overlap} with tile_size {tile}",
            "use an overlap of at least 0 and smaller than tile_size (tile_size 0: no tiling)",
        )


def _check_ram(
    codec: VideoCodec,
    way: str,
    frames: int,
    height: int,
    width: int,
    tile: int,
    *,
    held_whole: bool,
    input_name: str,
) -> None:
    """:func:`check_codec_ram` for a clip of ``frames`` at height x width px, run whole or in
    tiles of ``tile`` latent pixels (one tile's working memory at a time), with the whole clip
    held in RAM beside the tiles where ``held_whole`` (a tiled decode's output)."""
    size = (height, width)
    tile_size = tuple(min(side, tile * codec.spatial_stride) for side in size) if tile else None
    check_codec_ram(
        codec, way, frames, *size, tile=tile_size,
        held=clip_bytes(frames, *size) if held_whole else 0, input_name=input_name,
        remedy="a smaller tile_size" if tile else "a tile_size (one tile's memory at a time)",
    )  # fmt: skip


def decode_tiled(
    codec: VideoCodec,
    latents: torch.Tensor,
    tile: int,
    overlap: int,
    on_tile: TileHook | None = None,
) -> torch.Tensor:
    """``codec.decode`` (frames [B, T, H, W, 3]) in spatial tiles of ``tile`` latent pixels
    (0: whole frames); ``on_tile`` as :func:`spatially_tiled` calls it. Refused first where the
    decode (on the CPU) cannot fit in RAM: a tile's, beside the whole clip it is laid into."""
    if tile:
        _check(tile, overlap)
    latent_frames, height, width = latents.shape[2:]
    frames = pixel_frame_count(latent_frames, codec.temporal_stride)
    stride = codec.spatial_stride
    _check_ram(codec, "decode", frames, height * stride, width * stride, tile,
               held_whole=bool(tile), input_name="tile_size")  # fmt: skip
    if tile == 0:
        return codec.decode(latents)
    frames = spatially_tiled(
        latents,
        lambda z: codec.decode(z).permute(0, 4, 1, 2, 3),
        tile=tile,
        overlap=overlap,
        in_scale=1,
        out_scale=codec.spatial_stride,
        on_tile=on_tile,
    )
    return frames.permute(0, 2, 3, 4, 1)


def encode_tiled(
    codec: VideoCodec,
    frames: torch.Tensor,
    tile: int,
    overlap: int,
    on_tile: TileHook | None = None,
) -> torch.Tensor:
    """``codec.encode`` of frames [B, T, H, W, 3] in spatial tiles of ``tile`` latent pixels
    (0: whole frames); ``on_tile`` as :func:`spatially_tiled` calls it. Refused first where one
    tile's encode (on the CPU) cannot fit in RAM."""
    if tile:
        _check(tile, overlap)
    _check_ram(codec, "encode", *frames.shape[1:4], tile, held_whole=False,
               input_name="tile_size")  # fmt: skip
    if tile == 0:
        return codec.encode(frames)
    return spatially_tiled(
        frames.permute(0, 4, 1, 2, 3),
        lambda x: codec.encode(x.permute(0, 2, 3, 4, 1)),
        tile=tile,
        overlap=overlap,
        in_scale=codec.spatial_stride,
        out_scale=1,
        on_tile=on_tile,
    )
