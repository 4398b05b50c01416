"""Mask builders: the channel-concat inpainting condition of every task preset (DESIGN §2).

The video stream's input is concat(V_noisy, I, M): ``I`` encodes the conditioning video with every
unknown pixel black, ``M`` marks latent cells that are known. A latent cell counts as known only if
every pixel frame and pixel under it is known (min-pool over the causal 1 + 4k grouping and the
8 x 8 footprint), so an edit never leaks into kept content. A keyframe therefore fills its whole
latent group (frame 0 alone, then groups of 4 ending at every 4th frame) with its image, and each
builder reports the pixel frames it actually kept.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .codecs import VideoCodec
from .errors import InputError
from .memory import check_codec_ram, clip_bytes
from .references import fit_frames
from .shapes import (
    TEMPORAL_STRIDE,
    frame_count,
    latent_frame_count,
    latent_index_of_frame,
    latent_size,
    latent_to_pixel_frames,
    nearest_valid_frame_counts,
    pixel_frame_count,
    rgb_pixels,
    whole_groups,
)
from .types import VideoCondition

PATCH = 2  # the model's spatial patch: sizes must divide by 8 * 2 = 16 pixels
BUILT_CLIP_COPIES = 2
"""Clips in RAM while the codec encodes, for a builder that makes its own (blank or resized): that
one and its masked copy. An edit's source is the caller's, so only the masked copy is new."""


def latent_known_mask(
    pixel_known: torch.Tensor, temporal_stride: int = 4, spatial_stride: int = 8
) -> torch.Tensor:
    """[T_lat, h, w] bool: True where every pixel frame and pixel under the latent cell is known."""
    frames, height, width = pixel_known.shape
    h, w = height // spatial_stride, width // spatial_stride
    spatial = (
        pixel_known.reshape(frames, h, spatial_stride, w, spatial_stride).all(dim=4).all(dim=2)
    )
    rest = spatial[1:].reshape(-1, temporal_stride, h, w).all(dim=1)
    return torch.cat([spatial[:1], rest])


def check_size(height: int, width: int, input_name: str, codec: VideoCodec) -> None:
    """Pixel sides the model takes: the codec's stride times the model's patch (16 px).
    ``input_name`` is the image whose sides they are ("" for height and width inputs)."""
    for side, pixels in (("height", height), ("width", width)):
        latent_size(pixels, codec.spatial_stride, PATCH, f"{input_name} {side}".strip())


def _as_frame(image: torch.Tensor, input_name: str, pick: int = 0) -> torch.Tensor:
    """[H, W, 3] from an IMAGE batch (its image ``pick``: the first, or -1 for a last frame) or
    a single image (see :func:`rgb_pixels`)."""
    if image.dim() == 4:
        frame_count(image, input_name)
        image = image[pick]
    if image.dim() != 3:
        raise InputError(
            input_name, f"shape {tuple(image.shape)} is not an image", "pass an IMAGE [H, W, 3]"
        )
    return rgb_pixels(image, input_name)


def condition_from_pixels(
    codec: VideoCodec, video: torch.Tensor, pixel_known: torch.Tensor, input_name: str = "video"
) -> VideoCondition:
    """The one core builder: encode ``video`` [T, H, W, 3] with unknown pixels black.

    When no pixel is known, ``I`` is zeros with nothing to encode; training goes through this same
    function, so the model sees exactly these zeros for text-to-video. ``input_name``: the input
    the video's pixels came from, for messages.
    """
    frames, height, width = pixel_known.shape
    latent_frame_count(frames, codec.temporal_stride)
    check_size(height, width, input_name, codec)
    if video.shape[:3] != pixel_known.shape:
        raise InputError(
            "mask", f"mask {tuple(pixel_known.shape)} does not match video {tuple(video.shape[:3])}", "use a mask of the clip's frames and size"
        )  # fmt: skip
    known = latent_known_mask(pixel_known, codec.temporal_stride, codec.spatial_stride)
    if pixel_known.any():
        masked = (rgb_pixels(video, input_name) * pixel_known[..., None])[None]
        latents = codec.encode(masked).float()
    else:
        shape = (1, codec.latent_channels, *known.shape)
        latents = torch.zeros(shape)
    fully_known = known.flatten(1).all(dim=1)
    known_frames = [
        f for f in range(frames) if fully_known[latent_index_of_frame(f, codec.temporal_stride)]
    ]
    return VideoCondition(latents, known[None, None].float(), known_frames)


def hold_keyframes(
    video: torch.Tensor,
    pixel_known: torch.Tensor,
    images: dict[int, torch.Tensor],
    temporal_stride: int = 4,
) -> list[int]:
    """Write each keyframe image over its whole latent group (in place) and mark it known.

    Returns the pixel frames that hold a keyframe. Shared with training, which conditions on the
    same held groups.
    """
    held = []
    for index, image in sorted(images.items()):
        group = list(
            latent_to_pixel_frames(latent_index_of_frame(index, temporal_stride), temporal_stride)
        )
        video[group] = image
        pixel_known[group] = True
        held += group
    return held


def keyframe_latent_frames(frames: list[int], temporal_stride: int = TEMPORAL_STRIDE) -> list[int]:
    """The latent frame of each keyframe's pixel frame, in the order given, so that images or
    latents given in that order stay paired with their frames (Mask: Keyframes, Refine). Each
    keyframe is held over its whole latent group, so a second one in the same group would
    silently replace the first: refused."""
    taken: dict[int, int] = {}
    for index in frames:
        group = latent_index_of_frame(index, temporal_stride)
        if group in taken:
            pixels = latent_to_pixel_frames(group, temporal_stride)
            raise InputError(
                "keyframe_indices",
                f"frames {taken[group]} and {index} fall in one latent group (frames "
                f"{pixels[0]}-{pixels[-1]}), which holds one image",
                f"keep keyframes in different groups: frame 0 alone, then groups of "
                f"{temporal_stride} (1-{temporal_stride}, {temporal_stride + 1}-"
                f"{2 * temporal_stride}, ...)",
            )
        taken[group] = index
    return list(taken)


def _blank(frames: int, height: int, width: int, codec: VideoCodec, input_name: str):
    """An empty clip of ``frames`` (the frames input) at the size of ``input_name``'s image, once
    its encode is known to fit in RAM."""
    latent_frame_count(frames, codec.temporal_stride)
    check_size(height, width, input_name, codec)
    check_codec_ram(
        codec, "encode", frames, height, width,
        held=BUILT_CLIP_COPIES * clip_bytes(frames, height, width),
        input_name=input_name, remedy=f"a smaller {input_name}",
    )  # fmt: skip
    return torch.zeros(frames, height, width, 3), torch.zeros(
        frames, height, width, dtype=torch.bool
    )


def text_to_video(codec: VideoCodec, frames: int, height: int, width: int) -> VideoCondition:
    """Nothing known (M = 0): ``I`` and ``M`` zeros at the latent size, as
    :func:`condition_from_pixels` gives them for a clip of no known pixel (training's text to
    video), without building that clip: 1.3 GB at 720p, hundreds of GB at the node's largest."""
    latent_frames = latent_frame_count(frames, codec.temporal_stride)
    check_size(height, width, "", codec)
    size = (latent_frames, height // codec.spatial_stride, width // codec.spatial_stride)
    return VideoCondition(
        torch.zeros(1, codec.latent_channels, *size), torch.zeros(1, 1, *size), []
    )


def keyframes(
    codec: VideoCodec, images: dict[int, torch.Tensor], frames: int, input_name: str = "images"
) -> VideoCondition:
    """Keyframes at any pixel index, each snapped to (and held over) its latent group.
    ``input_name``: the input the images came from, for messages."""
    if not images:
        raise InputError(
            "keyframes", "no keyframe given", "give at least one image with its frame index"
        )
    frames_list = {index: _as_frame(image, input_name) for index, image in images.items()}
    height, width = next(iter(frames_list.values())).shape[:2]
    video, known = _blank(frames, height, width, codec, input_name)
    for index, image in frames_list.items():
        if not 0 <= index < frames:
            raise InputError(
                "keyframe_indices",
                f"frame {index} is outside the clip of {frames} frames",
                f"use 0..{frames - 1}",
            )
        if image.shape[:2] != (height, width):
            raise InputError(
                input_name,
                f"keyframe {index}'s size {tuple(image.shape[:2])} differs from {(height, width)}",
                "give all keyframes the same size",
            )
    keyframe_latent_frames(sorted(frames_list), codec.temporal_stride)
    hold_keyframes(video, known, frames_list, codec.temporal_stride)
    return condition_from_pixels(codec, video, known, input_name)


def image_to_video(codec: VideoCodec, image: torch.Tensor, frames: int) -> VideoCondition:
    """The first frame known."""
    return keyframes(codec, {0: image}, frames, "image")


def interpolate(
    codec: VideoCodec, first: torch.Tensor, last: torch.Tensor, frames: int
) -> VideoCondition:
    """First and last frames known (the last held over the final latent group).

    The shortest clip is frame 0, one latent group to generate and the last image's group: any
    shorter and the last image fills every frame after the first (or, at 1 frame, replaces it)."""
    shortest = 2 * codec.temporal_stride + 1
    if frames < shortest:
        raise InputError(
            "frames",
            f"a {frames}-frame clip leaves nothing between the first and the last image to generate "
            f"(the last one is held over its latent group of {codec.temporal_stride} frames)",
            f"use {shortest} frames or more",
        )
    # a clip given for either end meets the render there: its last image ends it
    first, last = _as_frame(first, "first"), _as_frame(last, "last", -1)
    if first.shape != last.shape:
        raise InputError(
            "last",
            f"size {tuple(last.shape[:2])} differs from the first frame's {tuple(first.shape[:2])}",
            "use two frames of the same size",
        )
    return keyframes(codec, {0: first, frames - 1: last}, frames, "first")


def extend_video(
    codec: VideoCodec,
    source: torch.Tensor,
    frames: int,
    known_frames: int,
    *,
    source_input: str = "source",
    known_input: str = "known_frames",
) -> VideoCondition:
    """The first ``known_frames`` of ``source`` kept (snapped down to 1 + 4k), the rest generated.
    ``source_input`` and ``known_input``: the inputs ``source`` and ``known_frames`` came from,
    for messages (Continue Clip keeps its clip's last frames for its overlap)."""
    stride = codec.temporal_stride
    if known_frames < 1:
        raise InputError(known_input, f"{known_frames} frames", "keep at least 1 frame")
    if frames <= 1:  # the one frame any keep holds fills it, whatever known_frames says
        raise InputError(
            "frames",
            f"a {frames}-frame clip leaves nothing to generate after its kept first frame",
            f"use {1 + stride} frames or more",
        )
    kept = whole_groups(min(known_frames, frame_count(source, source_input)), stride)
    if kept >= frames:
        raise InputError(
            known_input,
            f"keeping {kept} of {frames} frames leaves nothing to generate",
            f"keep fewer than {frames} frames, or raise frames",
        )
    video, known = _blank(frames, *source.shape[1:3], codec, source_input)
    video[:kept] = rgb_pixels(source[:kept], source_input)
    known[:kept] = True
    return condition_from_pixels(codec, video, known, source_input)


def _edit_mask(mask: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """The host MASK (1 = change) as [T, H, W] bool, one mask for all frames or one per frame."""
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3:  # another pack's [B, 1, H, W] failed in expand; [B, H, W, 1] was "resized"
        raise InputError(
            "mask",
            f"shape {tuple(mask.shape)} is not a MASK [frames, height, width]",
            "connect a MASK (the host's Load Image mask, or Image To Mask)",
        )
    if mask.shape[-2:] != (height, width):
        raise InputError(
            "mask",
            f"size {tuple(mask.shape[-2:])} differs from the video's {(height, width)}",
            "resize the mask to the video",
        )
    if mask.shape[0] not in (1, frames):
        raise InputError(
            "mask",
            f"{mask.shape[0]} mask frames for a {frames}-frame clip",
            f"give 1 or {frames} masks",
        )
    return (mask > 0.5).expand(frames, height, width)


def edit_video(codec: VideoCodec, source: torch.Tensor, mask: torch.Tensor) -> VideoCondition:
    """Known everywhere except the user's MASK (M = 1 - mask); audio is generated afresh."""
    frames, height, width = source.shape[:3]
    latent_frame_count(frames, codec.temporal_stride, "source")  # the clip, not a frames widget
    change = _edit_mask(mask, frames, height, width)
    check_codec_ram(
        codec, "encode", frames, height, width, held=clip_bytes(frames, height, width),
        input_name="source", remedy="a smaller source (the core Upscale Image node)",
    )  # fmt: skip
    return condition_from_pixels(codec, rgb_pixels(source, "source"), ~change, "source")


def video_to_audio(
    codec: VideoCodec, source: torch.Tensor, longest_side: int = 0
) -> VideoCondition:
    """The whole clip kept, so only its sound is generated (Foley for a finished shot). It is an
    edit with nothing masked: the audio stream attends the clean clip exactly as it does the kept
    part of any edit, and the eval's "AV sync given the true clip" reads this condition.

    The clip itself is never regenerated, so any clip is taken: the model sees it resized to
    ``longest_side`` (0: its own size) with both sides on the 16 px grid, and its last frame
    repeated up to the next 4k+1 count; ``clip_frames`` tells the decoders to trim the frames
    and the sound made for those extra frames off again. A size whose encode cannot fit in RAM is
    refused before the clip is resized."""
    if source.dim() != 4 or source.shape[0] < 1:
        raise InputError(
            "source", f"shape {tuple(source.shape)} is not a clip", "pass IMAGE frames [T, H, W, 3]"
        )
    frames, height, width = source.shape[:3]
    multiple = codec.spatial_stride * PATCH
    scale = longest_side / max(height, width) if longest_side > 0 else 1.0
    size = [
        max(multiple, int(side * scale / multiple + 0.5) * multiple) for side in (height, width)
    ]
    padded = nearest_valid_frame_counts(frames, codec.temporal_stride)[1]
    check_codec_ram(
        codec, "encode", padded, *size, held=BUILT_CLIP_COPIES * clip_bytes(padded, *size),
        input_name="longest_side",
        remedy="a smaller longest_side (the saved clip keeps its own size)",
    )  # fmt: skip
    clip = rgb_pixels(source, "source")
    clip = clip if size == [height, width] else fit_frames(clip, *size)
    clip = torch.cat([clip, clip[-1:].expand(padded - frames, -1, -1, -1)])
    # Every pixel known; not through edit_video, whose RAM check would count the copies above.
    everything = torch.ones(padded, *size, dtype=torch.bool)
    condition = condition_from_pixels(codec, clip, everything, "source")
    return replace(condition, known_frames=list(range(frames)), clip_frames=frames)


def keep_video(latents: torch.Tensor, fps: float, clip_frames: int | None = None) -> VideoCondition:
    """A rendered clip's own video latents kept whole, so only a new sound is made for it (a sound
    reroll): the Video to Audio condition straight from the latents, with no trip through the
    video codec, so the video comes back bit for bit. ``fps`` is the clip's, which the sampler
    must match for the sound to keep its length."""
    if latents.dim() != 5:
        raise InputError(
            "av_latent",
            f"video latents of shape {tuple(latents.shape)}",
            "connect a sampler's output",
        )
    known = torch.ones(latents.shape[0], 1, *latents.shape[2:])
    frames = clip_frames or pixel_frame_count(latents.shape[2])
    return VideoCondition(
        latents.float().clone(), known, list(range(frames)), clip_frames=clip_frames, fps=fps
    )
