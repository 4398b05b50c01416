"""Multi-shot prompt parsing and the latent frames each shot covers."""

from __future__ import annotations

import pytest
import torch

from skyreels_core.errors import InputError
from skyreels_core.prompts import (
    Shot,
    parse_multishot,
    shot_latent_ranges,
    shots_in_window,
    tells_one_story,
)
from skyreels_core.types import TextEncoding


def test_shots_parse_and_map_to_latent_frames():
    shots = parse_multishot("[0-16] a red circle bounces\n\n[17-32] a blue square moves right", 33)
    assert shots == [Shot("a red circle bounces", 0, 16), Shot("a blue square moves right", 17, 32)]
    assert shot_latent_ranges(shots, 33) == [(0, 5), (5, 9)]


def test_every_frame_of_the_clip_follows_a_shot():
    """Frames no line lists (before the first shot, in a gap, after the last) would attend no text:
    they follow the nearest shot before them, the first shot for the clip's opening frames."""
    shots = parse_multishot("[8-12] a red circle\n[21-24] a blue square", 33)
    assert shot_latent_ranges(shots, 33) == [(0, 6), (6, 9)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a red circle", "is not"),
        ("[0-40] x", "outside"),
        ("[0-33] x", r"line 1 covers frames 0-33 outside 0-32"),  # frame 33 is one past the end
        (
            "[16-0] x",
            r"line 1 runs from frame 16 back to 0. Fix: write the first frame first: \[0-16\]",
        ),
        ("[0-10] a\n[5-20] b", "inside the previous"),
        # Ranges are inclusive: [16-32] would share frame 16 with [0-16], one frame two prompts.
        ("[0-16] a\n[16-32] b", "line 2 starts at 16, inside the previous shot"),
        ("", "no shot"),
        ("[0-16] a\n[17-32]  ", r"line 2 '\[17-32\]' is not"),  # blank: its frames read no text
        ("[0-16] a\n[17-32]\t\u3000", r"line 2 '\[17-32\]' is not"),
        ("[5-6] a red circle\n[7-32] a blue square", "line 1 .* lies in latent frame 2"),
    ],
)
def test_bad_shot_lists_name_the_fix(text, message):
    with pytest.raises(InputError, match=message):
        parse_multishot(text, 33)


def test_a_shot_inside_the_next_shots_latent_group_is_refused_before_encoding():
    """Frames 1 and 2 share latent frame 1 (frames 1-4), which goes to the later shot: "[1-1] b"
    would get no latent frame and its text would never be read. Multi-Shot Text Encode names
    its shots input and the line (counting every line) before encoding anything; one shot per
    group is taken."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    class NoEncoder:
        def encode_shots(self, shots, frames):
            raise AssertionError("encoded a shot list that loses a shot")

    node = NODE_CLASS_MAPPINGS["SkyReelsV4MultiShotTextEncode"]()
    with pytest.raises(InputError) as error:
        node.encode(NoEncoder(), "\n[0-0] a\n[1-1] b\n[2-16] c", 17)  # lines count from the top
    assert str(error.value) == (
        "shots: line 3 (frames 1-1) lies in latent frame 1 (frames 1-4), which the next shot "
        "starts in and takes, so its text is never read. Fix: start each shot in a different "
        "latent group: frames 0, 1-4, 5-8, ..."
    )
    shots = parse_multishot("[0-0] a\n[1-4] b\n[5-16] c", 17)
    assert shot_latent_ranges(shots, 17) == [(0, 1), (1, 2), (2, 5)]


STORY = TextEncoding(torch.zeros(1, 7, 4), torch.ones(1, 7, dtype=torch.bool),
                     [(0, 3, 0, 11), (3, 5, 11, 16), (5, 7, 16, 23)])  # fmt: skip


@pytest.mark.parametrize(
    ("first_frame", "ranges"),
    [
        (0, [(0, 3, 0, 9)]),
        (28, [(0, 3, 0, 4), (3, 5, 4, 9)]),  # story latents 7-15
        (56, [(3, 5, 0, 2), (5, 7, 2, 9)]),  # 14-22
        (84, [(5, 7, 0, 9)]),  # past the story's end: its last shot
        (26, [(0, 3, 0, 4), (3, 5, 4, 9)]),  # a group's last frame: 26 + 4j lies in 7 + j
    ],
)
def test_a_window_reads_the_part_of_the_story_it_covers(first_frame, ranges):
    """A story written for a long clip, read by a window of 9 latent frames starting at
    ``first_frame``: each window frame follows the story's shot at that time."""
    window = shots_in_window(STORY, first_frame, 9)
    assert window.shot_ranges == ranges and window.features is STORY.features


def test_a_story_is_written_for_the_whole_clip_or_one_window():
    assert tells_one_story(STORY, 89, 33)  # 23 latent frames: the whole clip
    assert tells_one_story(STORY, 87, 33)  # rounded up to 89
    window = TextEncoding(STORY.features, STORY.mask, [(0, 3, 0, 4), (3, 7, 4, 9)])
    assert not tells_one_story(window, 89, 33)  # the shots repeat in each window
    assert not tells_one_story(TextEncoding(STORY.features, STORY.mask), 89, 33)
    with pytest.raises(InputError, match="^text: a multi-shot prompt written for 89 frames") as e:
        tells_one_story(STORY, 120, 33)
    assert "frames to 121 for one story" in str(e.value) and "window's 33" in str(e.value)
