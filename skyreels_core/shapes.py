"""The shape arithmetic every part agrees on (DESIGN §2).

The video codec is causal with temporal stride 4: the first pixel frame has its own latent frame
and every further latent frame covers 4 pixel frames, so valid clip lengths are ``4k + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch

from .errors import InputError

TEMPORAL_STRIDE = 4
MAX_FRAMES = 1025  # one render's longest clip (64 s at 16 fps); longer ones join windows
MAX_JOINED_FRAMES = 100_000  # a clip joined from windows (Extend to Length): 104 min at 16 fps
SPATIAL_STRIDE = 8
FPS_RANGE = (1.0, 1000.0)  # the widgets hold 1..120; a linked 240 fps clip is real, 1e9 is not


def frame_rate(fps: float, input_name: str = "fps") -> float:
    """``fps`` as a rate a clip can have. The widgets keep to their limits, but a linked value
    skips them: 0 or NaN failed deep inside (a division by zero, a float made an int), and a
    millionth of a frame per second asked for terabytes of sound tokens."""
    if not a_frame_rate(fps):
        low, high = FPS_RANGE
        raise InputError(
            input_name, f"{fps:g} fps", f"give the clip's frame rate, {low:g} to {high:g} fps"
        )
    return float(fps)


def a_frame_rate(fps: float) -> bool:
    """Whether ``fps`` lies in :data:`FPS_RANGE` (NaN does not)."""
    low, high = FPS_RANGE
    return low <= fps <= high


def nearest_valid_frame_counts(
    num_frames: int, temporal_stride: int = TEMPORAL_STRIDE
) -> tuple[int, int]:
    """The valid counts just below and above ``num_frames`` (equal when it is valid)."""
    below = max(1, ((num_frames - 1) // temporal_stride) * temporal_stride + 1)
    above = below if below >= num_frames else below + temporal_stride
    return below, above


def latent_frame_count(
    num_frames: int, temporal_stride: int = TEMPORAL_STRIDE, input_name: str = "frames"
) -> int:
    """Latent frames for a clip of ``num_frames`` pixel frames; rejects counts other than 4k+1."""
    if num_frames < 1 or (num_frames - 1) % temporal_stride:
        below, above = nearest_valid_frame_counts(max(num_frames, 1), temporal_stride)
        counts = f"{below} or {above}" if below != above else f"1, {1 + temporal_stride}, ..."
        raise InputError(
            input_name, f"{num_frames} frames is not {temporal_stride}k+1", f"use {counts} frames"
        )
    return 1 + (num_frames - 1) // temporal_stride


def whole_groups(frames: int, temporal_stride: int = TEMPORAL_STRIDE) -> int:
    """``frames`` snapped down to 1 + 4k: the known frames a clip keeps fill whole latent groups."""
    return 1 + (frames - 1) // temporal_stride * temporal_stride


def sound_samples(frames: int, fps: float, sample_rate: int) -> int:
    """Samples of sound as long as ``frames`` frames at ``fps``: what a clip's sound is cut or
    padded to wherever picture and sound must end together."""
    return round(frames / fps * sample_rate)


def pixel_frame_count(latent_frames: int, temporal_stride: int = TEMPORAL_STRIDE) -> int:
    """Pixel frames decoded from ``latent_frames`` latent frames."""
    return 1 + (latent_frames - 1) * temporal_stride


def latent_size(
    pixels: int, stride: int = SPATIAL_STRIDE, patch: int = 1, input_name: str = "size"
) -> int:
    """Latent cells along one spatial axis; the pixel size must divide by ``stride * patch``."""
    multiple = stride * patch
    if pixels < multiple or pixels % multiple:
        lower = max(multiple, pixels // multiple * multiple)
        raise InputError(
            input_name,
            f"{pixels} px is not a multiple of {multiple}",
            f"use {lower} or {lower + multiple} px",
        )
    return pixels // stride


def latent_to_pixel_frames(latent_index: int, temporal_stride: int = TEMPORAL_STRIDE) -> range:
    """The pixel frames a latent frame covers under causal grouping (frame 0 alone, then 4 each)."""
    if latent_index == 0:
        return range(0, 1)
    start = 1 + (latent_index - 1) * temporal_stride
    return range(start, start + temporal_stride)


def parse_frame_indices(
    text: str, num_frames: int, input_name: str = "keyframe_indices"
) -> list[int]:
    """Frame indices typed as ``"0, 16, 32"`` (negative counts from the end), sorted and unique."""
    return sorted(set(typed_frame_indices(text, num_frames, input_name)))


def typed_frame_indices(
    text: str, num_frames: int, input_name: str = "keyframe_indices"
) -> list[int]:
    """Frame indices in the order typed, for pairing with images given in that order."""
    typed = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            typed.append(int(part))
        except ValueError:
            raise InputError(
                input_name, f"{part!r} is not a frame number", 'write numbers like "0, 16, 32"'
            ) from None
    if not typed:
        raise InputError(input_name, "no frame numbers given", 'write numbers like "0, 16, 32"')
    return frames_in_clip(typed, num_frames, input_name)


def frames_in_clip(indices: Sequence[int], num_frames: int, input_name: str) -> list[int]:
    """``indices`` as frames of a clip of ``num_frames`` (negative counts from the end), in order;
    one outside it is an :class:`InputError` naming ``input_name``."""
    frames = []
    for typed in indices:
        if isinstance(typed, bool) or not isinstance(typed, Integral):  # 0.5 passes the range
            raise InputError(input_name, f"{typed!r} is not a frame number", "give whole numbers")
        index = int(typed) + num_frames if typed < 0 else int(typed)
        if not 0 <= index < num_frames:
            raise InputError(
                input_name,
                f"frame {typed} is outside the clip of {num_frames} frames",
                f"use 0..{num_frames - 1}",
            )
        frames.append(index)
    return frames


def latent_index_of_frame(frame: int, temporal_stride: int = TEMPORAL_STRIDE) -> int:
    """The latent frame whose causal group holds pixel ``frame`` (frame 0 alone, then groups of 4)."""
    return (frame + temporal_stride - 1) // temporal_stride


def frame_count(pixels: torch.Tensor, input_name: str) -> int:
    """The frames of an IMAGE batch; one of no frames is named here, where builders read it (it
    failed later as a bare index error, or as a negative count of another input)."""
    if pixels.dim() == 4 and pixels.shape[0] == 0:
        raise InputError(
            input_name, "no frames (an empty IMAGE batch)", "connect at least one frame"
        )
    return pixels.shape[0]


def single_images(
    images: torch.Tensor | Sequence[torch.Tensor] | None, input_name: str
) -> list[torch.Tensor]:
    """Images [H, W, C] one by one from a host IMAGE batch [N, H, W, C], one image, or a list of
    either (what the nodes hand over and what a script has), so the library takes all alike."""
    if images is None:
        return []
    items = [images] if isinstance(images, torch.Tensor) else list(images)
    flat = []
    for item in items:
        if item.dim() == 4:
            frame_count(item, input_name)
            flat.extend(item)
        elif item.dim() == 3:
            flat.append(item)
        else:
            raise InputError(
                input_name, f"shape {tuple(item.shape)} is not an image", "pass IMAGE [N, H, W, 3]"
            )
    return flat


def rgb_pixels(pixels: torch.Tensor, input_name: str) -> torch.Tensor:
    """The colour of IMAGE pixels ``[..., C]`` as float RGB: hosts and packs also hand over RGBA
    (the host's Join Image with Alpha) and grey images, which every encoder here would otherwise
    fail on deep inside a convolution. Alpha is dropped, as the host's own VAE Encode drops it.
    An IMAGE batch of no frames is named (see :func:`frame_count`)."""
    frame_count(pixels, input_name)
    channels = pixels.shape[-1] if pixels.dim() else 0
    if channels == 1:
        return pixels.float().repeat_interleave(3, dim=-1)
    if channels in (3, 4):
        return pixels[..., :3].float()
    raise InputError(
        input_name,
        f"{channels} colour channels (shape {tuple(pixels.shape)})",
        "pass an IMAGE with 3 (RGB), 4 (RGBA) or 1 (grey) channels",
    )
