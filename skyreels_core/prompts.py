"""Multi-shot prompts: one line per shot, ``[first-last] description`` in pixel frames.

Each shot's text is encoded alone and its tokens are bound to the latent frames the shot covers
(``TextEncoding.shot_ranges``); the video stream's text cross-attention then lets every frame read
only its own shot (DESIGN §3, multi-shot prompts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import InputError
from .shapes import (
    latent_frame_count,
    latent_index_of_frame,
    latent_to_pixel_frames,
    pixel_frame_count,
)
from .types import TextEncoding

SHOT_LINE = re.compile(r"^\s*\[\s*(\d+)\s*-\s*(\d+)\s*\]\s*(\S.*?)\s*$")  # a blank text: no tokens


@dataclass(frozen=True)
class Shot:
    text: str
    start_frame: int  # first pixel frame, inclusive
    end_frame: int  # last pixel frame, inclusive
    line: int = field(default=0, compare=False)  # its line in the shots text, for messages


def parse_multishot(text: str, frames: int) -> list[Shot]:
    """Shots in order; they must not overlap, must lie inside the clip and must each get latent
    frames of their own (checked here, before any shot is encoded)."""
    shots = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = SHOT_LINE.match(line)
        if match is None:
            raise InputError(
                "shots",
                f"line {number} {line.strip()!r} is not '[first-last] description'",
                "write e.g. '[0-16] a red circle bounces'",
            )
        start, end, description = int(match[1]), int(match[2]), match[3]
        if start > end:
            raise InputError(
                "shots",
                f"line {number} runs from frame {start} back to {end}",
                f"write the first frame first: [{end}-{start}]",
            )
        if not 0 <= start <= end < frames:
            raise InputError(
                "shots",
                f"line {number} covers frames {start}-{end} outside 0-{frames - 1}",
                "keep every shot inside the clip",
            )
        if shots and start <= shots[-1].end_frame:
            raise InputError(
                "shots",
                f"line {number} starts at {start}, inside the previous shot",
                "list shots in order without overlap",
            )
        shots.append(Shot(description, start, end, number))
    if not shots:
        raise InputError(
            "shots", "no shot given", "write one line per shot: '[first-last] description'"
        )
    shot_latent_ranges(shots, frames)
    return shots


def shot_latent_ranges(
    shots: list[Shot], frames: int, temporal_stride: int = 4
) -> list[tuple[int, int]]:
    """[start, end) latent frames per shot, covering the whole clip of ``frames``: a frame no shot
    lists would attend no text at all, so frames before the first shot follow it and frames in
    a gap or after the last shot follow the shot before them; a latent group shared by two shots
    goes to the later one, so a shot lying wholly in the group where the next one starts would get
    none and its text would never be read: refused."""
    starts = [0, *(latent_index_of_frame(shot.start_frame, temporal_stride) for shot in shots[1:])]
    ends = [*starts[1:], latent_frame_count(frames, temporal_stride)]
    for shot, end in zip(shots, ends):
        own = latent_index_of_frame(shot.start_frame, temporal_stride)  # the first is stretched
        if own >= end:
            pixels = latent_to_pixel_frames(own, temporal_stride)
            raise InputError(
                "shots",
                f"line {shot.line} (frames {shot.start_frame}-{shot.end_frame}) lies in latent "
                f"frame {own} (frames {pixels[0]}-{pixels[-1]}), which the next shot starts in "
                "and takes, so its text is never read",
                f"start each shot in a different latent group: frames 0, 1-{temporal_stride}, "
                f"{temporal_stride + 1}-{2 * temporal_stride}, ...",
            )
    return list(zip(starts, ends))


def tells_one_story(
    text: TextEncoding, total_frames: int, window_frames: int, input_name: str = "text"
) -> bool:
    """Whether a multi-shot prompt given to windows of a long clip is one story over all of it
    (written for ``total_frames``, rounded up to 1 + 4k: each window reads its own part) rather
    than shots every window repeats (written for ``window_frames``); written for neither, no
    window could place its shots, so it is refused before the first window renders."""
    if not text.shot_ranges:
        return False
    written_for = text.shot_ranges[-1][3]
    story = latent_index_of_frame(total_frames - 1) + 1
    if written_for == story:
        return True
    if written_for == latent_frame_count(window_frames, input_name="window_frames"):
        return False
    raise InputError(
        input_name,
        f"a multi-shot prompt written for {pixel_frame_count(written_for)} frames",
        f"set Multi-Shot Text Encode's frames to {pixel_frame_count(story)} for one story over "
        f"the whole clip, or to the window's {window_frames} to repeat the shots in each window",
    )


def shots_in_window(
    text: TextEncoding, first_frame: int, latent_frames: int, temporal_stride: int = 4
) -> TextEncoding:
    """A story's shots as the window starting at its pixel frame ``first_frame`` reads them:
    each of the window's ``latent_frames`` follows the story's shot at the group's last pixel
    frame (exact when the window starts on a group's last frame, as Extend to Length's do from a
    1 + 4k-frame clip; from another clip a shot's edge moves by up to 3 frames); frames past the
    story's end follow its last shot."""
    shots = text.shot_ranges
    ranges: list[tuple[int, int, int, int]] = []
    for frame in range(latent_frames):
        in_story = latent_index_of_frame(first_frame + temporal_stride * frame, temporal_stride)
        shot = next((s for s in shots if in_story < s[3]), shots[-1])
        if ranges and ranges[-1][:2] == shot[:2]:
            ranges[-1] = (*shot[:2], ranges[-1][2], frame + 1)
        else:
            ranges.append((*shot[:2], frame, frame + 1))
    return TextEncoding(text.features, text.mask, ranges)
