"""Reference nodes: clean in-context latents prepended to the attention sequences (DESIGN §3).

References chain: each node takes an optional ``references`` input and adds its own, so images, a
clip, a storyboard and a voice can all condition one render.
"""

from __future__ import annotations

from skyreels_core import references as refs
from skyreels_core.av_io import trim_audio
from skyreels_core.errors import InputError
from skyreels_core.shapes import rgb_pixels
from skyreels_core.types import References

from . import link_types
from .codec_inputs import video_codec
from .validation import check_pixel_grid, reports_input_errors, require_sound

CATEGORY = "SkyReels-V4/references"
MAX_IMAGE_REFERENCES = 9

CHAIN_INPUT = (link_types.REFERENCES, {"tooltip": "References to add these to (optional chain)."})
SIZE_INPUTS = {
    "width": (
        "INT",
        {
            "default": 64,
            "min": 16,
            "max": 4096,
            "step": 16,
            "tooltip": "Clip width the references are fitted to.",
        },
    ),
    "height": (
        "INT",
        {
            "default": 64,
            "min": 16,
            "max": 4096,
            "step": 16,
            "tooltip": "Clip height the references are fitted to.",
        },
    ),
}


def _chain(previous: References | None, new: References) -> tuple[References]:
    return (refs.merge_references(previous, new) if previous else new,)


class _ReferenceNode:
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.REFERENCES,)
    RETURN_NAMES = ("references",)
    OUTPUT_TOOLTIPS = (
        "The in-context references so far, this one added, for the Sampler or the next reference "
        "node.",
    )
    FUNCTION = "build"


class _SizedReferenceNode(_ReferenceNode):
    """A reference node fitting its pictures to a width and height, checked when queued."""

    @classmethod
    @reports_input_errors
    def VALIDATE_INPUTS(cls, width: int = 64, height: int = 64):
        check_pixel_grid(width, height)
        return True


class SkyReelsV4ImageReferences(_SizedReferenceNode):
    DESCRIPTION = (
        "Up to 9 reference images (characters, objects, style). A new image socket appears as each "
        "one is connected."
    )

    @classmethod
    def INPUT_TYPES(cls):
        optional = {
            f"image_{index}": ("IMAGE", {"tooltip": f"Reference image {index}."})
            for index in range(1, MAX_IMAGE_REFERENCES + 1)
        }
        return {
            "required": {"video_vae": link_types.VIDEO_VAE_INPUT, **SIZE_INPUTS},
            "optional": {"references": CHAIN_INPUT, **optional},
        }

    def build(self, video_vae, width: int, height: int, references=None, **images):
        ordered = [
            frame
            for name, image in sorted(images.items(), key=lambda item: int(item[0].split("_")[1]))
            if image is not None
            for frame in rgb_pixels(image, name)
        ]
        if not ordered:
            raise InputError(
                "image_1", "no reference image is connected", "connect at least one IMAGE"
            )
        new = refs.image_references(video_codec(video_vae), ordered, height, width)
        return _chain(references, new)


class SkyReelsV4ClipReference(_SizedReferenceNode):
    DESCRIPTION = "A reference clip (motion or identity) as clean in-context latents."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "clip": ("IMAGE", {"tooltip": "Reference frames (4k+1 of them)."}),
                **SIZE_INPUTS,
            },
            "optional": {"references": CHAIN_INPUT},
        }

    def build(self, video_vae, clip, width: int, height: int, references=None):
        new = refs.clip_reference(video_codec(video_vae), clip, height, width)
        return _chain(references, new)


class SkyReelsV4StoryboardReference(_SizedReferenceNode):
    DESCRIPTION = (
        "A storyboard grid image (up to 9 panels) split into keyframe references, read row by row."
    )

    @classmethod
    def INPUT_TYPES(cls):
        grid = {"default": 3, "min": 1, "max": 9}
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "grid": ("IMAGE", {"tooltip": "One image holding the panels in a regular grid."}),
                "rows": ("INT", {**grid, "tooltip": "Panel rows in the grid."}),
                "columns": ("INT", {**grid, "tooltip": "Panel columns in the grid."}),
                "panels": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 9,
                        "tooltip": "Panels used (0 = all rows x columns).",
                    },
                ),
                **SIZE_INPUTS,
            },
            "optional": {"references": CHAIN_INPUT},
        }

    def build(
        self,
        video_vae,
        grid,
        rows: int,
        columns: int,
        panels: int,
        width: int,
        height: int,
        references=None,
    ):
        if grid.shape[0] != 1:
            raise InputError(
                "grid",
                f"a batch of {grid.shape[0]} images; the storyboard is one image of panels",
                "connect one grid image, or give separate keyframe images to Image References",
            )
        new = refs.storyboard_references(
            video_codec(video_vae), grid[0], rows, columns, height, width, panels=panels or None
        )
        return _chain(references, new)


class SkyReelsV4AudioReference(_ReferenceNode):
    DESCRIPTION = (
        "A reference sound (a voice bound to a character, an ambience) in the audio stream, "
        "whole or a part of it."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio_vae": link_types.AUDIO_VAE_INPUT,
                "audio": (
                    "AUDIO",
                    {"tooltip": "Any sample rate and channel count; it is resampled."},
                ),
            },
            "optional": {
                "references": CHAIN_INPUT,
                "start_seconds": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 86400.0,
                        "step": 0.1,
                        "tooltip": "Where the part of the sound taken starts (0 = its beginning).",
                    },
                ),
                "duration_seconds": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 86400.0,
                        "step": 0.1,
                        "tooltip": "How long that part is (0 = to the end). Every second of it "
                        "joins the audio stream's attention: a minute of a voice costs as many "
                        "tokens as twelve 5-second clips; a few seconds carry a voice.",
                    },
                ),
            },
        }

    def build(
        self,
        audio_vae,
        audio,
        references=None,
        start_seconds: float = 0.0,
        duration_seconds: float = 0.0,
    ):
        part = trim_audio(require_sound(audio), start_seconds, duration_seconds)
        new = refs.audio_reference(audio_vae, part["waveform"], part["sample_rate"])
        return _chain(references, new)


NODE_CLASS_MAPPINGS = {
    cls.__name__: cls
    for cls in (
        SkyReelsV4ImageReferences,
        SkyReelsV4ClipReference,
        SkyReelsV4StoryboardReference,
        SkyReelsV4AudioReference,
    )
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4ImageReferences": "SkyReels-V4 Image References",
    "SkyReelsV4ClipReference": "SkyReels-V4 Clip Reference",
    "SkyReelsV4StoryboardReference": "SkyReels-V4 Storyboard Reference",
    "SkyReelsV4AudioReference": "SkyReels-V4 Audio Reference",
}
