"""Long clips from windows: a window that continues the last frames of the one before, and the
two joined into one clip with its sound.

The model renders one window of its trained length at a time. The next window keeps the previous
window's last frames as its first (the extension condition of DESIGN §2), so both hold those
frames; the join lays the two over each other there and cross-fades, frames and sound alike,
so neither the picture nor the hum jumps at the seam.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import torch

from .av_io import check_channels, fit_length, resample_audio
from .codecs.protocol import VideoCodec
from .errors import InputError
from .masks import check_size, extend_video
from .sampling import MAX_SEED
from .shapes import (
    frame_count,
    frame_rate,
    latent_frame_count,
    rgb_pixels,
    sound_samples,
    whole_groups,
)
from .types import VideoCondition

# Frames a window keeps of the clip before it: the demo model's smoothest seams of 1, 5 and 9
# (bench/README.md, part long_video).
DEFAULT_OVERLAP = 5

log = logging.getLogger(__name__)


def continue_clip(
    codec: VideoCodec, clip: torch.Tensor, frames: int, overlap: int
) -> VideoCondition:
    """A window of ``frames`` whose first ``overlap`` frames (snapped down to 1 + 4k) are the
    last ones of ``clip`` [T, H, W, 3]: the rest continues it. Refusals name ``clip`` and
    ``overlap``, the frames kept, not the extension's source and known_frames."""
    kept = kept_frames(codec, frame_count(clip, "clip"), overlap)
    last = clip[clip.shape[0] - kept :]
    condition = extend_video(codec, last, frames, kept, source_input="clip", known_input="overlap")
    return replace(condition, story_start=clip.shape[0] - kept)


def kept_frames(codec: VideoCodec, clip_frames: int, overlap: int) -> int:
    """How many of a clip's last frames a window keeps for ``overlap``: snapped down to 1 + 4k
    (whole latent groups), at most the clip's own."""
    if overlap < 1:
        raise InputError("overlap", f"{overlap} frames", "keep at least 1 frame")
    return whole_groups(min(overlap, clip_frames), codec.temporal_stride)


def _fade(length: int, like: torch.Tensor) -> torch.Tensor:
    """Weights of the second clip across an overlap of ``length``: 0 < w < 1, rising linearly."""
    return torch.arange(1, length + 1, dtype=like.dtype, device=like.device) / (length + 1)


def join_frames(first: torch.Tensor, second: torch.Tensor, overlap: int) -> torch.Tensor:
    """[T1 + T2 - overlap, H, W, 3]: ``second`` starts ``overlap`` frames before ``first`` ends,
    the shared frames cross-faded."""
    first, second = rgb_pixels(first, "frames_a"), rgb_pixels(second, "frames_b")
    if first.shape[1:] != second.shape[1:]:
        raise InputError(
            "frames_b",
            f"frames of {tuple(second.shape[1:3])} after frames of {tuple(first.shape[1:3])}",
            "render the second window at the first one's size",
        )
    if not 0 <= overlap <= min(first.shape[0], second.shape[0]):
        raise InputError(
            "overlap",
            f"{overlap} frames for clips of {first.shape[0]} and {second.shape[0]}",
            "use the frames the second window kept from the first (Continue Clip's overlap)",
        )
    weight = _fade(overlap, first).view(-1, *[1] * (first.dim() - 1))
    cut = first.shape[0] - overlap
    shared = first[cut:] * (1 - weight) + second[:overlap] * weight
    return torch.cat([first[:cut], shared, second[overlap:]])


def join_audio(first: dict, second: dict, start_seconds: float, fade_seconds: float) -> dict:
    """The host AUDIO of ``first`` with ``second`` starting ``start_seconds`` into it, cross-faded
    over ``fade_seconds``; ``second`` is resampled to the first's rate and channels."""
    for name, sound in (("audio_a", first), ("audio_b", second)):
        check_channels(sound["waveform"].shape[-2], name)
    rate = first["sample_rate"]
    a = first["waveform"].float()
    b = resample_audio(second["waveform"], second["sample_rate"], rate, a.shape[1])
    if a.shape[0] != b.shape[0]:
        raise InputError(
            "audio_b", f"a batch of {b.shape[0]} after {a.shape[0]}", "join one clip to one"
        )
    start = round(start_seconds * rate)
    fade = min(round(fade_seconds * rate), b.shape[-1], max(a.shape[-1] - start, 0))
    a = a[..., : start + fade]
    if a.shape[-1] < start:  # the first sound ends early: silence until the second begins
        a = torch.nn.functional.pad(a, (0, start - a.shape[-1]))
    weight = _fade(fade, a)
    shared = a[..., start:] * (1 - weight) + b[..., :fade] * weight
    return {"waveform": torch.cat([a[..., :start], shared, b[..., fade:]], -1), "sample_rate": rate}


def join_clips(
    first: torch.Tensor,
    second: torch.Tensor,
    overlap: int,
    fps: float,
    first_audio: dict | None = None,
    second_audio: dict | None = None,
) -> tuple[torch.Tensor, dict | None]:
    """Frames and sound of ``second`` (a window that kept ``first``'s last ``overlap`` frames)
    joined onto ``first``; without sounds (a video-only model) the frames alone."""
    frame_rate(fps)
    frames = join_frames(first, second, overlap)
    if first_audio is None and second_audio is None:
        return frames, None
    if first_audio is None or second_audio is None:
        missing = "audio_a" if first_audio is None else "audio_b"
        raise InputError(
            missing,
            "no sound (not connected, or a clip without a sound track) beside the other's sound",
            "give both clips a sound, or neither",
        )
    _require_sound_as_long(first.shape[0], fps, first_audio, "audio_a")
    _require_sound_as_long(second.shape[0], fps, second_audio, "audio_b")
    start = (first.shape[0] - overlap) / fps
    return frames, join_audio(first_audio, second_audio, start, overlap / fps)


def _require_sound_as_long(frames: int, fps: float, sound: dict, input_name: str) -> None:
    """A clip's sound lasts as long as its frames at ``fps``, give or take a tenth (a clip's own
    track may run a little long): a window rendered at another rate brought a sound of another
    length, which the join laid under these frames out of step, without a word."""
    seconds, expected = sound["waveform"].shape[-1] / sound["sample_rate"], frames / fps
    if abs(seconds - expected) > max(0.1 * expected, 2 / fps):
        raise InputError(
            input_name,
            f"{seconds:.2f} s of sound for {frames} frames, which last {expected:.2f} s at "
            f"{fps:g} fps",
            "render both clips at this fps (wire the first clip's fps into the second Sampler)",
        )


def require_matching_sound(clip_has_sound: bool, model_makes_sound: bool) -> None:
    """A clip continued by a model must bring a sound exactly when the model makes one."""
    if clip_has_sound != model_makes_sound:
        raise InputError(
            "audio",
            "the clip has a sound but the model makes none"
            if clip_has_sound
            else "the clip has no sound but the model makes one",
            "connect the clip's sound (Decode Audio) for a model with an audio stream, and none "
            "for a video-only one",
        )


def _continuable(codec: VideoCodec, frames: torch.Tensor, audio: dict | None) -> torch.Tensor:
    """The clip as RGB, checked before the first window renders: a size the model cannot take or
    a batch of sounds would otherwise fail only at the first join, minutes later."""
    frames = rgb_pixels(frames, "frames")
    check_size(*frames.shape[1:3], "frames", codec)
    if audio is not None and audio["waveform"].shape[0] != 1:
        raise InputError(
            "audio",
            f"a batch of {audio['waveform'].shape[0]} sounds for one clip",
            "connect the clip's own sound",
        )
    return frames


def window_count(
    codec: VideoCodec, clip_frames: int, total_frames: int, window_frames: int, overlap: int
) -> int:
    """How many windows :func:`extend_to_length` renders (a progress bar's length, known before
    the first one); a length the clip already has, or windows that could not grow it, are
    named."""
    if total_frames <= clip_frames:
        raise InputError(
            "total_frames",
            f"{total_frames} frames for a clip that already has {clip_frames}",
            "ask for more frames than the clip has",
        )
    latent_frame_count(window_frames, codec.temporal_stride, input_name="window_frames")
    kept = kept_frames(codec, max(clip_frames, overlap), overlap)  # once the clip has grown
    if kept >= window_frames:
        raise InputError(
            "overlap",
            f"{kept} frames kept of {window_frames}-frame windows leave nothing to render",
            "keep fewer frames than a window has",
        )
    count, frames = 0, clip_frames
    while frames < total_frames:
        count += 1
        frames += window_frames - kept_frames(codec, frames, overlap)
    return count


def window_seed(seed: int, number: int) -> int:
    """The seed of a clip's ``number``-th continuation window: one seed for every window drew
    the same noise each time, and its sound (not conditioned on the clip's) came back as nearly
    a copy, an audible loop every window (waveform correlation up to 0.96)."""
    return (seed + number) % (MAX_SEED + 1)


def extend_to_length(
    codec: VideoCodec,
    frames: torch.Tensor,
    audio: dict | None,
    fps: float,
    total_frames: int,
    window_frames: int,
    overlap: int,
    render_window: Callable[[VideoCondition, int, int], tuple[torch.Tensor, dict | None]],
) -> tuple[torch.Tensor, dict | None]:
    """The clip ``frames`` (with its sound) continued window by window until it is
    ``total_frames`` long: each window keeps the clip's last ``overlap`` frames (snapped to 1 +
    4k), ``render_window`` makes its frames and sound from that condition (and the window's
    number, 1 for the first continuation, and the frame of the grown clip it starts at: a story's
    shots are read there), and the join cross-fades them in; the last window's surplus is cut
    off."""
    frames = _continuable(codec, frames, audio)
    windows = window_count(codec, frames.shape[0], total_frames, window_frames, overlap)
    log.info("extending %d frames to %d in %d windows", frames.shape[0], total_frames, windows)
    number = 0
    while frames.shape[0] < total_frames:
        number += 1
        condition = continue_clip(codec, frames, window_frames, overlap)
        first_frame = frames.shape[0] - len(condition.known_frames)
        window, sound = render_window(condition, number, first_frame)
        require_matching_sound(audio is not None, sound is not None)
        frames, audio = join_clips(frames, window, len(condition.known_frames), fps, audio, sound)
    if audio is not None:  # exactly the frames' length: the windows' sounds end on whole tokens
        samples = sound_samples(total_frames, fps, audio["sample_rate"])
        audio = {**audio, "waveform": fit_length(audio["waveform"], samples)}
    if frames.shape[0] > total_frames:  # a copy: a view kept the surplus alive in the host's cache
        frames = frames[:total_frames].clone()
    return frames, audio
