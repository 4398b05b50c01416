"""Saving results: the finished clip as MP4 with sound, or a render's AV latent to refine and
decode later; the workflow embedded, written atomically, never over another file."""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime
from pathlib import Path

from skyreels_core.av_io import numbered_paths, write_mp4
from skyreels_core.av_latent_file import SUFFIX, save_av_latent
from skyreels_core.errors import InputError
from skyreels_core.paths import PARTIAL_NAME_EXTRA, UNPORTABLE, under_a_free_name

from . import host, link_types
from .validation import host_sound, reports_input_errors

CATEGORY = "SkyReels-V4/output"
FOLDERS = {"output": host.output_dir, "temp": host.temp_dir}  # the host's folder types
PREFIX_TOOLTIP = (
    "File name start; may include a sub-folder and the host's tokens: %date:yyyy-MM-dd%, "
    "%width%, %height%, %year%, %month%, %day%, %hour%, %minute%, %second%."
)
ON_WINDOWS = os.name == "nt"
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10))}  # fmt: skip
DATE_TOKEN = re.compile(r"%date:([^%]*)%")
DATE_FIELDS = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")  # the frontend's formatDate letters
NAME_MAX = 255  # bytes of one name on ext4, APFS; NTFS holds 255 UTF-16 units, never fewer
# What a save adds to the stem at the longest: the number, the suffix, the partial file's marks.
STEM_MAX = NAME_MAX - len("_00001") - len(SUFFIX) - PARTIAL_NAME_EXTRA
LOG = logging.getLogger("skyreels_v4")


def _date(pattern: str, now: datetime) -> str:
    """``pattern`` as the host's frontend formats %date:pattern%: yyyy or yy for the year, and
    M, d, h (0-23), m, s for the rest, doubled for two digits."""
    fields = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def field(match: re.Match) -> str:
        text = match[0]
        if text in ("yy", "yyyy"):
            return str(now.year)[-len(text) :]
        return str(fields[text[0]]).zfill(len(text)) if text[0] in fields else text

    return DATE_FIELDS.sub(field, pattern)


def _expanded(filename_prefix: str, width: int, height: int) -> str:
    """The prefix with the host's tokens filled in, so a prefix means here what it means in the
    core save nodes: %date:FORMAT%, which the frontend fills only for the host's own nodes, then
    what folder_paths.get_save_image_path fills (%width%, %height%, %year% ... %second%)."""
    now = datetime.now()
    prefix = DATE_TOKEN.sub(lambda match: _date(match[1], now), filename_prefix)
    values = {"width": f"{width}", "height": f"{height}", "year": f"{now.year}",
              "month": f"{now.month:02d}", "day": f"{now.day:02d}", "hour": f"{now.hour:02d}",
              "minute": f"{now.minute:02d}", "second": f"{now.second:02d}"}  # fmt: skip
    for name, value in values.items():
        prefix = prefix.replace(f"%{name}%", value)
    return prefix


def _output_folder(
    filename_prefix: str, root=None, width: int = 0, height: int = 0, saving: bool = False
):
    """The folder and file stem for ``filename_prefix``, which may name a sub-folder of the
    output; its tokens are filled in with the frames' ``width`` and ``height`` (0 where there are
    none, as the host's Save Latent does). A trailing "/" is dropped, as the host does.
    Containment is judged on the name, not where links lead, as the host judges it: a sub-folder
    linked to another drive takes the renders. A stem too long for a file name is refused when
    queued, and shortened when ``saving`` (a linked prefix, known only then): the render is
    kept."""
    root = Path(os.path.abspath(root or host.output_dir()))
    if "\x00" in filename_prefix:
        raise InputError("filename_prefix", "holds a NUL character", "use a plain file name")
    expanded = _expanded(filename_prefix, width, height)
    if ON_WINDOWS:
        _require_windows_names(filename_prefix, expanded)
    target = Path(os.path.normpath(root / expanded))
    if not target.is_relative_to(root) or target == root:
        problem = "leaves the output folder" if target != root else "names no file"
        raise InputError(
            "filename_prefix", f"{filename_prefix!r} {problem}", "use a name like 'videos/skyreels'"
        )
    stem = _fitting_stem(target.relative_to(root).parts, saving)
    for folder in (target.parent, *target.parent.parents):
        if folder == root:
            break
        if folder.exists() and not folder.is_dir():
            raise InputError(
                "filename_prefix",
                f"{filename_prefix!r} saves into {folder.relative_to(root)}, which is a file",
                "name another sub-folder",
            )
    return root, target.parent, stem


def _fitting_stem(parts: tuple[str, ...], shorten: bool) -> str:
    """The last of ``parts``, the stem, with room for what a save adds; the folders' names
    within what a file system holds. A prompt wired in as the prefix failed the save after the
    render on "File name too long"."""
    *folders, stem = parts
    for folder in folders:
        _require_fits(folder, NAME_MAX)
    if shorten and len(os.fsencode(stem)) > STEM_MAX:
        short = os.fsencode(stem)[:STEM_MAX].decode("utf-8", "ignore")
        LOG.warning("SkyReels-V4: filename_prefix shortened to %r (%d bytes fit)", short, STEM_MAX)
        return short
    _require_fits(stem, STEM_MAX)
    return stem


def _require_fits(name: str, room: int) -> None:
    size = len(os.fsencode(name))
    if size > room:
        raise InputError(
            "filename_prefix",
            f"the name {name[:24]!r}... is {size} bytes; a file system holds {room} there",
            "shorten it (a prompt wired in as the prefix: its first words)",
        )


def _require_windows_names(prefix: str, expanded: str) -> None:
    """Names Windows can hold, checked when queued: the save failed after the render, naming its
    partial file, and a ":" (``%date:hh:mm%``) wrote into a hidden stream of the file before it."""
    for name in re.split(r"[\\/]", expanded):
        bad = UNPORTABLE.search(name)
        if bad:
            problem = f"holds {bad[0]!r}, which Windows file names cannot"
        elif name not in ("", ".", "..") and name != name.rstrip(" ."):
            problem = f"ends the name {name!r} in a dot or space, which Windows drops"
        elif name.split(".")[0].upper() in WINDOWS_DEVICES:
            problem = f"names {name!r}, which Windows keeps for a device"
        else:
            continue
        raise InputError(
            "filename_prefix", f"{prefix!r} {problem}", "use letters, digits, - and _ there"
        )


class _SaveNode:
    """An output node: it writes a file into the output folder and returns nothing to link."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    @reports_input_errors
    def VALIDATE_INPUTS(cls, filename_prefix: str | None = None):
        """A prefix that leaves the output folder is refused when queued, not after the render."""
        if filename_prefix is not None:
            _output_folder(filename_prefix)
        return True


class SkyReelsV4SaveVideo(_SaveNode):
    DESCRIPTION = (
        "Saves frames and sound as an MP4 (H.264 + AAC) in the output folder, with the prompt graph "
        "and workflow in its metadata. Never overwrites a file; a failed write leaves nothing behind."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The clip's frames."}),
                "fps": link_types.fps_input("Frame rate of the file."),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "SkyReelsV4",
                        "tooltip": PREFIX_TOOLTIP,
                    },
                ),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "The sound; trimmed or padded to the clip length."})
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    FOLDER = "output"  # the host's folder type, for its /view route

    def save(
        self, frames, fps: float, filename_prefix: str, audio=None, prompt=None, extra_pnginfo=None
    ):
        sound = host_sound(audio)
        height, width = frames.shape[1:3]
        root, folder, stem = _output_folder(
            filename_prefix, FOLDERS[self.FOLDER](), width, height, saving=True
        )
        folder.mkdir(parents=True, exist_ok=True)
        metadata = _graph_metadata(prompt, extra_pnginfo)
        path = under_a_free_name(
            lambda name: write_mp4(name, frames, fps, sound, metadata),
            numbered_paths(folder, stem, ".mp4"),
        )
        saved = {
            **_located(path, root, self.FOLDER),
            "format": "video/mp4",
            "frame_rate": float(fps),
            "frame_count": int(frames.shape[0]),
        }
        return {"ui": {"skyreels_videos": [saved]}}


class SkyReelsV4PreviewVideo(SkyReelsV4SaveVideo):
    DESCRIPTION = (
        "Plays frames and sound in the node without keeping them: the MP4 goes to ComfyUI's temp "
        "folder, which the host empties when it starts. For trying prompts and seeds; Save Video "
        "keeps the keepers."
    )
    FOLDER = "temp"

    @classmethod
    def INPUT_TYPES(cls):
        spec = super().INPUT_TYPES()
        del spec["required"]["filename_prefix"]  # nothing to name: the file is not kept
        return spec

    def save(self, frames, fps: float, audio=None, prompt=None, extra_pnginfo=None):
        return super().save(frames, fps, "SkyReelsV4_preview", audio, prompt, extra_pnginfo)


def _graph_metadata(prompt, extra_pnginfo) -> dict[str, str]:
    """The prompt graph and the workflow, so a saved file reopens as the graph that made it;
    none where the host runs with --disable-metadata."""
    metadata = {}
    if host.metadata_disabled():
        return metadata
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    if extra_pnginfo and "workflow" in extra_pnginfo:
        metadata["workflow"] = json.dumps(extra_pnginfo["workflow"])
    return metadata


def _located(path, root, folder_type: str = "output") -> dict:
    """Where a saved file lies, as the host's /view route and output listings name it."""
    folder = path.parent
    subfolder = "" if folder == root else folder.relative_to(root).as_posix()
    return {"filename": path.name, "subfolder": subfolder, "type": folder_type}


class SkyReelsV4SaveAVLatent(_SaveNode):
    DESCRIPTION = (
        "Saves a render's AV latent (video, audio and keyframe latents, fps) as safetensors in "
        "the output folder, with the workflow in its metadata. Load AV Latent lists it (press "
        "R), to refine and decode only the takes you keep. Never overwrites a file."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "av_latent": (link_types.AV_LATENT, {"tooltip": "A Sampler's or Refine's output."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "latents/SkyReelsV4",
                        "tooltip": PREFIX_TOOLTIP,
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, av_latent, filename_prefix: str, prompt=None, extra_pnginfo=None):
        root, folder, stem = _output_folder(filename_prefix, saving=True)
        folder.mkdir(parents=True, exist_ok=True)
        metadata = _graph_metadata(prompt, extra_pnginfo)
        path = under_a_free_name(
            lambda name: save_av_latent(av_latent, name, metadata),
            numbered_paths(folder, stem, SUFFIX),
        )
        return {"ui": {"skyreels_latents": [_located(path, root)]}}


NODE_CLASS_MAPPINGS = {
    "SkyReelsV4SaveVideo": SkyReelsV4SaveVideo,
    "SkyReelsV4PreviewVideo": SkyReelsV4PreviewVideo,
    "SkyReelsV4SaveAVLatent": SkyReelsV4SaveAVLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4SaveVideo": "SkyReels-V4 Save Video (MP4 + sound)",
    "SkyReelsV4PreviewVideo": "SkyReels-V4 Preview Video (MP4 + sound)",
    "SkyReelsV4SaveAVLatent": "SkyReels-V4 Save AV Latent",
}
