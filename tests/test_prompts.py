"""Multi-shot prompt parsing and the latent frames each shot covers."""

from __future__ import annotations

import pytest

from skyreels_core.errors import InputError
from skyreels_core.prompts import Shot, parse_multishot, shot_latent_ranges


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
        (
            "[16-0] x",
            r"line 1 runs from frame 16 back to 0. Fix: write the first frame first: \[0-16\]",
        ),
        ("[0-10] a\n[5-20] b", "inside the previous"),
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
