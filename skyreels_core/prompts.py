"""Multi-shot prompts: one line per shot, ``[first-last] description`` in pixel frames.

Each shot's text is encoded alone and its tokens are bound to the latent frames the shot covers
(``TextEncoding.shot_ranges``); the video stream's text cross-attention then lets every frame read
only its own shot (DESIGN §3, multi-shot prompts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import InputError
from .shapes import latent_frame_count, latent_index_of_frame, latent_to_pixel_frames

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
