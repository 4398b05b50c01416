"""Inputs read from the host's folders: sounds through PyAV, and saved AV latents.

ComfyUI's own LoadAudio lives in a module that imports torchaudio, which has no build for torch
2.12 and later: on such hosts that node is missing and any workflow using it fails to queue. This
loader reads the same files through PyAV, which the host already needs for video.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from skyreels_core.av_io import read_audio
from skyreels_core.av_latent_file import SUFFIX, load_av_latent
from skyreels_core.errors import InputError
from skyreels_core.file_kinds import files_of

from . import host, link_types
from .validation import reports_input_errors

CATEGORY = "SkyReels-V4/inputs"
AUDIO_KINDS = ("sound", "video")  # what PyAV here reads (tests/test_media_nodes.py reads each)


def _audio_files() -> list[str]:
    """The input folder's sound and video files, the ones the queue command's --inputs picks
    for Load Audio; top level only like the host's own loaders (listed on every page load, so
    big input trees are not walked)."""
    folder = host.input_dir()
    return [path.name for path in files_of(folder, AUDIO_KINDS)] if folder.is_dir() else []


class FileInput:
    """A node whose one widget names a file: the name is checked before the queue runs (the host
    marks the node with the message), and a file replaced under the same name is read again."""

    CATEGORY = CATEGORY
    FUNCTION = "load"

    @classmethod
    def path(cls, name: str) -> Path:
        """The file ``name`` selects, inside the folders the node reads."""
        raise NotImplementedError

    @classmethod
    def check(cls, name: str | None) -> bool:
        """VALIDATE_INPUTS of each loader, which names its own file input (the host passes a
        validator only the inputs its signature names)."""
        if name is not None:  # None: wired from another node, checked when the node runs
            cls.path(name)
        return True

    @classmethod
    def IS_CHANGED(cls, **inputs) -> str:
        (name,) = inputs.values()
        try:
            return hashlib.sha256(cls.path(name).read_bytes()).hexdigest()
        except InputError as error:
            return str(error)  # load() raises the same clear error


class SkyReelsV4LoadAudio(FileInput):
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The file's sound (the host's AUDIO).",)
    DESCRIPTION = (
        "A sound file from ComfyUI's input folder (or the sound of a video file), as AUDIO at "
        "its own rate and channels. Reads through PyAV, so it works where the core Load Audio "
        "node is missing for lack of torchaudio."
    )

    @classmethod
    def INPUT_TYPES(cls):
        files = _audio_files()
        return {
            "required": {
                "audio": (
                    files or [""],
                    {
                        "audio_upload": True,
                        "tooltip": "A file in the input folder; the upload button adds one.",
                    },
                )
            }
        }

    @classmethod
    def path(cls, name: str) -> Path:
        return host.annotated_path(name, "audio")

    @classmethod
    @reports_input_errors
    def VALIDATE_INPUTS(cls, audio: str | None = None):
        return cls.check(audio)

    def load(self, audio: str):
        return (read_audio(self.path(audio)),)


class SkyReelsV4LoadAVLatent(FileInput):
    RETURN_TYPES = (link_types.AV_LATENT,)
    RETURN_NAMES = ("av_latent",)
    OUTPUT_TOOLTIPS = (
        "The saved take: video, audio and high-res keyframe latents with its fps, for Refine, the "
        "decoders or a Sampler's initial.",
    )
    DESCRIPTION = (
        "An AV latent saved by Save AV Latent: from the output folder where it was written "
        "(marked [output]) or the input folder. Render many seeds to latents, then refine and "
        "decode only the takes you keep."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "av_latent": (
                    host.files_named(SUFFIX) or [""],
                    {"tooltip": f"A saved {SUFFIX} file; press R to list new ones."},
                )
            }
        }

    @classmethod
    def path(cls, name: str) -> Path:
        return host.annotated_path(name, "av_latent")

    @classmethod
    @reports_input_errors
    def VALIDATE_INPUTS(cls, av_latent: str | None = None):
        return cls.check(av_latent)

    def load(self, av_latent: str):
        latent = load_av_latent(self.path(av_latent))
        height, width = latent.video.shape[-2:]
        take = {
            "frames": latent.frames,
            "fps": latent.fps,
            "latent_size": [int(height), int(width)],
            "sound": latent.audio is not None,
            "keyframes": len(latent.keyframe_indices),
        }
        return {"ui": {"skyreels_take": [take]}, "result": (latent,)}


NODE_CLASS_MAPPINGS = {
    "SkyReelsV4LoadAudio": SkyReelsV4LoadAudio,
    "SkyReelsV4LoadAVLatent": SkyReelsV4LoadAVLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4LoadAudio": "SkyReels-V4 Load Audio",
    "SkyReelsV4LoadAVLatent": "SkyReels-V4 Load AV Latent",
}
