"""A take decoded to the clip it stands for: its frames and sound cut to the clip's own length
(a Video to Audio take's latents cover the clip padded to 1 + 4k frames, and the sound runs to
whole tokens). The decode nodes and the scripting API share these, so both give the same clip."""

from __future__ import annotations

import torch

from .codecs.protocol import AudioCodec, VideoCodec
from .codecs.tiling import TileHook, decode_tiled
from .shapes import sound_samples
from .types import AVLatent


def take_frames(
    take: AVLatent,
    codec: VideoCodec,
    tile_size: int = 0,
    tile_overlap: int = 8,
    on_tile: TileHook | None = None,
) -> torch.Tensor:
    """Frames [B, T, H, W, 3] in 0..1, T the take's own clip length (tiles: see decode_tiled)."""
    return decode_tiled(codec, take.video, tile_size, tile_overlap, on_tile)[:, : take.frames]


def take_sound(take: AVLatent, codec: AudioCodec) -> dict:
    """The take's sound as the host's AUDIO dict, as long as its clip at its fps."""
    waveform = codec.decode(take.audio).float().cpu()
    samples = sound_samples(take.frames, take.fps, codec.sample_rate)
    return {"waveform": waveform[..., :samples], "sample_rate": codec.sample_rate}
