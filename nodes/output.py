"""Saving the finished clip: MP4 with sound, the workflow embedded, written atomically."""

from __future__ import annotations

import json

from skyreels_core.av_io import next_free_path, write_mp4
from skyreels_core.errors import InputError

from . import host

CATEGORY = "SkyReels-V4/output"


def _output_folder(filename_prefix: str):
    """The folder and file stem for ``filename_prefix``, which may name a sub-folder of the output."""
    root = host.output_dir().resolve()
    target = (root / filename_prefix).resolve()
    if not target.is_relative_to(root) or target == root:
        raise InputError(
            "filename_prefix",
            f"{filename_prefix!r} leaves the output folder",
            "use a name like 'videos/skyreels'",
        )
    return root, target.parent, target.name


class SkyReelsV4SaveVideo:
    DESCRIPTION = (
        "Saves frames and sound as an MP4 (H.264 + AAC) in the output folder, with the prompt graph "
        "and workflow in its metadata. Never overwrites a file; a failed write leaves nothing behind."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The clip's frames."}),
                "fps": (
                    "FLOAT",
                    {
                        "default": 16.0,
                        "min": 1.0,
                        "max": 120.0,
                        "tooltip": "Frame rate of the file.",
                    },
                ),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "SkyReelsV4",
                        "tooltip": "File name start; may include a sub-folder.",
                    },
                ),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "The sound; trimmed or padded to the clip length."})
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(
        self, frames, fps: float, filename_prefix: str, audio=None, prompt=None, extra_pnginfo=None
    ):
        root, folder, stem = _output_folder(filename_prefix)
        folder.mkdir(parents=True, exist_ok=True)
        metadata = {}
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        if extra_pnginfo and "workflow" in extra_pnginfo:
            metadata["workflow"] = json.dumps(extra_pnginfo["workflow"])
        path = write_mp4(next_free_path(folder, stem), frames, fps, audio, metadata)
        saved = {
            "filename": path.name,
            "subfolder": "" if folder == root else folder.relative_to(root).as_posix(),
            "type": "output",
            "format": "video/mp4",
            "frame_rate": float(fps),
            "frame_count": int(frames.shape[0]),
        }
        return {"ui": {"skyreels_videos": [saved]}}


NODE_CLASS_MAPPINGS = {"SkyReelsV4SaveVideo": SkyReelsV4SaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"SkyReelsV4SaveVideo": "SkyReels-V4 Save Video (MP4 + sound)"}
