"""In-context references (DESIGN §3): clean latents the model prepends to its attention sequences.

How each reaches the model: images become 1-frame video latents, a clip its latents, a storyboard
grid one 1-frame latent per panel; all go in ``References.video`` and sit at temporal positions
``-N + i`` before the clip, untouched by noise, their outputs dropped. A reference sound goes in
``References.audio`` and precedes the clip's audio tokens on the same scaled clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .codecs import AudioCodec, VideoCodec
from .errors import InputError
from .memory import check_codec_ram, clip_bytes
from .shapes import SPATIAL_STRIDE, latent_frame_count, rgb_pixels, single_images
from .types import References

MAX_STORYBOARD_PANELS = 9


def fit_frames(
    frames: torch.Tensor, height: int, width: int, input_name: str = "frames"
) -> torch.Tensor:
    """[T, H, W, 3] resized to cover (height, width) keeping the aspect ratio, then centre-cropped."""
    t, h, w = frames.shape[:3]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    x = rgb_pixels(frames, input_name).permute(0, 3, 1, 2)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return x[:, :, top : top + height, left : left + width].permute(0, 2, 3, 1).clamp(0, 1)


def image_references(
    codec: VideoCodec,
    images: torch.Tensor | Sequence[torch.Tensor],
    height: int,
    width: int,
    input_name: str = "images",
) -> References:
    images = single_images(images, input_name)
    if not images:
        raise InputError(input_name, "no reference image", "connect at least one image")
    frames = torch.cat([fit_frames(image[None], height, width, input_name) for image in images])
    latents = codec.encode(frames[:, None])  # each image its own 1-frame clip
    return References(video=latents.permute(2, 1, 0, 3, 4))  # [N, C, 1, h, w] -> [1, C, N, h, w]


def clip_reference(codec: VideoCodec, clip: torch.Tensor, height: int, width: int) -> References:
    """The clip's latents at the render's size, refused first where that encode cannot fit in
    RAM on the CPU (the resized copy and what the codec adds)."""
    latent_frame_count(clip.shape[0], codec.temporal_stride, "clip")
    frames = clip.shape[0]
    check_codec_ram(
        codec, "encode", frames, height, width, held=clip_bytes(frames, height, width),
        input_name="clip", remedy="a shorter clip or a smaller width and height",
    )  # fmt: skip
    return References(video=codec.encode(fit_frames(clip, height, width, "clip")[None]))


def split_storyboard(
    grid: torch.Tensor, rows: int, cols: int, panels: int | None = None
) -> list[torch.Tensor]:
    """The panels of a regular grid image, row by row (``panels`` keeps the first ones)."""
    count = rows * cols if panels is None else panels
    if not 1 <= count <= min(rows * cols, MAX_STORYBOARD_PANELS):
        raise InputError(
            "panels",
            f"{count} panels in a {rows} x {cols} grid",
            f"use 1..{min(rows * cols, MAX_STORYBOARD_PANELS)} panels",
        )
    height, width = grid.shape[:2]
    ph, pw = height // rows, width // cols
    if not (ph and pw):
        raise InputError(
            "grid",
            f"{width} x {height} px is too small for {cols} x {rows} panels",
            "connect the storyboard image itself, or use fewer rows and columns",
        )
    # A 1024 px grid of 3 has a pixel left over: the few px the panels cannot share are split
    # between the edges (each panel is resized to the render anyway).
    top, left = (height - ph * rows) // 2, (width - pw * cols) // 2
    return [
        grid[top + r * ph : top + (r + 1) * ph, left + c * pw : left + (c + 1) * pw]
        for r in range(rows)
        for c in range(cols)
    ][:count]


def storyboard_references(
    codec: VideoCodec,
    grid: torch.Tensor,
    rows: int,
    cols: int,
    height: int,
    width: int,
    panels: int | None = None,
) -> References:
    grid_panels = split_storyboard(grid, rows, cols, panels)
    return image_references(codec, grid_panels, height, width, "grid")


def audio_reference(codec: AudioCodec, waveform: torch.Tensor, sample_rate: int) -> References:
    """A reference sound of any rate, channel count and length: resampled to the codec's rate and
    channels, its last token filled with silence (MMAudio encodes whole tokens only)."""
    from .av_io import fit_length, resample_audio

    if waveform.dim() == 2:
        waveform = waveform[None]
    if waveform.shape[0] != 1:
        raise InputError(
            "audio",
            f"a batch of {waveform.shape[0]} sounds",
            "connect one sound (chain an Audio Reference per sound)",
        )
    if waveform.shape[-1] == 0:
        raise InputError(
            "audio",
            "the reference sound is empty",
            "connect a sound at least a fraction of a second long",
        )
    resampled = resample_audio(waveform, sample_rate, codec.sample_rate, codec.channels)
    tokens = -(-resampled.shape[-1] // codec.samples_per_token)
    return References(audio=codec.encode(fit_length(resampled, tokens * codec.samples_per_token)))


def pixel_size(latents: torch.Tensor) -> str:
    """``W x H px`` of video latents, as the nodes' width and height widgets say it."""
    height, width = (side * SPATIAL_STRIDE for side in latents.shape[-2:])
    return f"{width} x {height} px"


def merge_references(*references: References | None) -> References:
    """All references in order, videos concatenated along N and sounds along time."""
    present = [r for r in references if r]
    videos = [r.video for r in present if r.video is not None]
    sounds = [r.audio for r in present if r.audio is not None]
    for kind, latents in (("video", videos), ("audio", sounds)):
        for later in latents[1:]:
            if later.shape[1] != latents[0].shape[1]:  # another family's VAE made one of them
                raise InputError(
                    "references",
                    f"{kind} latents of {later.shape[1]} channels chained after ones of "
                    f"{latents[0].shape[1]}",
                    "make every reference with the VAEs of the model they are for",
                )
    for video in videos[1:]:
        if video.shape[-2:] != videos[0].shape[-2:]:
            raise InputError(
                "references",
                f"a reference made at {pixel_size(video)} chained after one made at "
                f"{pixel_size(videos[0])}",
                "give every reference node the clip's width and height",
            )
    return References(
        video=torch.cat(videos, dim=2) if videos else None,
        audio=torch.cat(sounds, dim=2) if sounds else None,
    )
