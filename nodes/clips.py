"""Joining windows into one long clip: frames and sound cross-faded where they overlap."""

from __future__ import annotations

from skyreels_core.joining import join_clips

CATEGORY = "SkyReels-V4/clips"


class SkyReelsV4JoinClips:
    DESCRIPTION = (
        "Joins a clip and the window that continues it (Mask: Continue Clip) into one: the "
        "second starts `overlap` frames before the first ends, and frames and sound are "
        "cross-faded there. Chain it for longer clips."
    )
    CATEGORY = CATEGORY
    FUNCTION = "join"
    RETURN_TYPES = ("IMAGE", "AUDIO")
    RETURN_NAMES = ("frames", "audio")
    OUTPUT_TOOLTIPS = (
        "The joined frames, the overlap cross-faded.",
        "The joined sound, cross-faded where the windows overlap (none when neither window has "
        "one).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames_a": ("IMAGE", {"tooltip": "The clip so far."}),
                "frames_b": ("IMAGE", {"tooltip": "The window that continues it."}),
                "overlap": (
                    "INT",
                    {
                        "default": 5,
                        "min": 0,
                        "max": 1025,
                        "tooltip": "Frames the two share: wire Continue Clip's overlap here.",
                    },
                ),
                "fps": (
                    "FLOAT",
                    {"default": 16.0, "min": 1.0, "max": 120.0, "tooltip": "Both clips' rate."},
                ),
            },
            "optional": {
                "audio_a": (
                    "AUDIO",
                    {"tooltip": "The clip's sound (none for a video-only model)."},
                ),
                "audio_b": ("AUDIO", {"tooltip": "The window's sound."}),
            },
        }

    def join(self, frames_a, frames_b, overlap: int, fps: float, audio_a=None, audio_b=None):
        return join_clips(frames_a, frames_b, overlap, fps, audio_a, audio_b)


NODE_CLASS_MAPPINGS = {"SkyReelsV4JoinClips": SkyReelsV4JoinClips}
NODE_DISPLAY_NAME_MAPPINGS = {"SkyReelsV4JoinClips": "SkyReels-V4 Join Clips"}
