"""Mask nodes: one per task preset of DESIGN §2, each producing the channel-concat condition.

Every node reports the frames that ended up known after snapping to latent frames, so the
frontend timeline can show the artist what the model will actually keep.
"""

from __future__ import annotations

from skyreels_core import masks
from skyreels_core.errors import InputError
from skyreels_core.joining import DEFAULT_OVERLAP, continue_clip
from skyreels_core.shapes import MAX_FRAMES, latent_frame_count, typed_frame_indices
from skyreels_core.types import VideoCondition

from . import link_types
from .codec_inputs import video_codec
from .validation import check_pixel_grid, reports_input_errors

CATEGORY = "SkyReels-V4/masks"

FRAMES_INPUT = (
    "INT",
    {
        "default": 33,
        "min": 1,
        "max": MAX_FRAMES,
        "step": 4,
        "tooltip": "Length of the clip in pixel frames; must be 4k+1 (33, 81, 121...).",
    },
)


def _output(condition: VideoCondition, frames: int, requested: list[int]) -> dict:
    timeline = {
        "frames": frames,
        "known_frames": list(condition.known_frames),
        "requested_frames": requested,
        "latent_frames": condition.num_latent_frames,
    }
    return {"ui": {"skyreels_timeline": [timeline]}, "result": (condition,)}


class _MaskNode:
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.CONDITION,)
    RETURN_NAMES = ("condition",)
    OUTPUT_TOOLTIPS = (
        "The channel-concat condition (known latents and their mask) for the Sampler.",
    )
    FUNCTION = "build"


class _FramesMaskNode(_MaskNode):
    """A mask node with a frames widget, checked when queued (the clip-reading ones take the
    clip's own length)."""

    @classmethod
    @reports_input_errors
    def VALIDATE_INPUTS(cls, frames: int = 33):
        latent_frame_count(frames)  # raises with the nearest valid counts
        return True


class SkyReelsV4MaskT2V(_FramesMaskNode):
    DESCRIPTION = "Text to video+audio: nothing is known (M = 0)."

    @classmethod
    @reports_input_errors
    def VALIDATE_INPUTS(cls, width: int = 64, height: int = 64, frames: int = 33):
        check_pixel_grid(width, height)
        latent_frame_count(frames)
        return True

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 64, "min": 16, "max": 4096, "step": 16}
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "width": ("INT", {**size, "tooltip": "Width in pixels (multiple of 16)."}),
                "height": ("INT", {**size, "tooltip": "Height in pixels (multiple of 16)."}),
                "frames": FRAMES_INPUT,
            }
        }

    def build(self, video_vae, width: int, height: int, frames: int):
        condition = masks.text_to_video(video_codec(video_vae), frames, height, width)
        return _output(condition, frames, [])


class SkyReelsV4MaskI2V(_FramesMaskNode):
    DESCRIPTION = "Image to video+audio: the first frame is kept."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "image": ("IMAGE", {"tooltip": "The first frame; its size sets the clip size."}),
                "frames": FRAMES_INPUT,
            }
        }

    def build(self, video_vae, image, frames: int):
        condition = masks.image_to_video(video_codec(video_vae), image[:1], frames)
        return _output(condition, frames, [0])


class SkyReelsV4MaskExtend(_FramesMaskNode):
    DESCRIPTION = (
        "Video extension: the first frames of a source clip are kept, the rest continues it."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "source": ("IMAGE", {"tooltip": "The clip to continue (its frames in order)."}),
                "frames": FRAMES_INPUT,
                "known_frames": (
                    "INT",
                    {
                        "default": 9,
                        "min": 1,
                        "max": MAX_FRAMES,
                        "tooltip": "How many source frames to keep (at most the source's "
                        "own); snapped down to 1 + 4k. The timeline shows those kept.",
                    },
                ),
            }
        }

    def build(self, video_vae, source, frames: int, known_frames: int):
        condition = masks.extend_video(video_codec(video_vae), source, frames, known_frames)
        return _output(condition, frames, list(range(min(known_frames, frames))))


class SkyReelsV4MaskContinue(_FramesMaskNode):
    DESCRIPTION = (
        "Continue a clip into a new window: its last frames become the window's first, the rest "
        "is generated. Join Clips lays the two windows over each other there, for clips longer "
        "than the model renders at once."
    )
    RETURN_TYPES = (link_types.CONDITION, "INT")
    RETURN_NAMES = ("condition", "overlap")
    OUTPUT_TOOLTIPS = ("The window's condition.", "The frames kept, for Join Clips' overlap.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "clip": ("IMAGE", {"tooltip": "The clip so far (its frames in order)."}),
                "frames": FRAMES_INPUT,
                "overlap": (
                    "INT",
                    {
                        "default": DEFAULT_OVERLAP,
                        "min": 1,
                        "max": MAX_FRAMES,
                        "tooltip": "How many of the clip's last frames the window starts with; "
                        "snapped down to 1 + 4k. 5 gives the demo model its smoothest seams.",
                    },
                ),
            }
        }

    def build(self, video_vae, clip, frames: int, overlap: int):
        condition = continue_clip(video_codec(video_vae), clip, frames, overlap)
        kept = len(condition.known_frames)
        output = _output(condition, frames, list(range(min(overlap, frames))))
        return {**output, "result": (condition, kept)}


class SkyReelsV4MaskInterpolate(_FramesMaskNode):
    DESCRIPTION = "First-last-frame interpolation: both ends are kept, the middle is generated."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "first": ("IMAGE", {"tooltip": "The first frame."}),
                "last": ("IMAGE", {"tooltip": "The last frame (same size as the first)."}),
                "frames": FRAMES_INPUT,
            }
        }

    def build(self, video_vae, first, last, frames: int):
        condition = masks.interpolate(video_codec(video_vae), first, last, frames)
        return _output(condition, frames, [0, frames - 1])


class SkyReelsV4MaskKeyframes(_FramesMaskNode):
    DESCRIPTION = "Keyframes at chosen frames; indices snap to latent frames (0, then every 4th)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "images": (
                    "IMAGE",
                    {
                        "tooltip": "One image per keyframe index, in the order typed (or a whole "
                        "clip: its frames at those indices)."
                    },
                ),
                "keyframe_indices": (
                    "STRING",
                    {
                        "default": "0, 16, 32",
                        "tooltip": "Frame numbers, comma separated; -1 is the last. One per "
                        "latent group: frame 0 alone, then 1-4, 5-8, ...",
                    },
                ),
                "frames": FRAMES_INPUT,
            }
        }

    def build(self, video_vae, images, keyframe_indices: str, frames: int):
        typed = typed_frame_indices(keyframe_indices, frames)
        requested = sorted(set(typed))
        if images.shape[0] == frames:
            chosen = {index: images[index] for index in requested}
        elif images.shape[0] == len(typed):
            if len(requested) < len(typed):
                raise InputError(
                    "keyframe_indices",
                    f"a frame typed twice in {keyframe_indices!r}",
                    "type each frame once, one image per frame",
                )
            chosen = dict(zip(typed, images))
        else:
            raise InputError(
                "images",
                f"{images.shape[0]} images for {len(typed)} keyframe indices",
                f"give one image per index in the order typed, or a whole clip of {frames} frames",
            )
        condition = masks.keyframes(video_codec(video_vae), chosen, frames)
        return _output(condition, frames, requested)


class SkyReelsV4MaskEdit(_MaskNode):
    DESCRIPTION = "Masked video edit: white in the MASK is regenerated, the rest is kept; audio is made afresh."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "source": ("IMAGE", {"tooltip": "The clip to edit (4k+1 frames)."}),
                "mask": (
                    "MASK",
                    {"tooltip": "1 = change, 0 = keep; one mask for all frames or one per frame."},
                ),
            }
        }

    def build(self, video_vae, source, mask):
        condition = masks.edit_video(video_codec(video_vae), source, mask)
        frames = source.shape[0]
        return _output(condition, frames, list(condition.known_frames))


class SkyReelsV4MaskVideoToAudio(_MaskNode):
    DESCRIPTION = (
        "Video to audio (add sound to a clip): every frame is kept, only the sound is generated. "
        "Wire the clip's fps into the Sampler's fps and Save Video so the sound keeps its time."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "source": (
                    "IMAGE",
                    {
                        "tooltip": "The clip to add sound to: any length and size (it is not redrawn)."
                    },
                ),
                "longest_side": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 4096,
                        "step": 16,
                        "tooltip": "The longest side the model sees, in px on the 16 px grid (the "
                        "saved clip keeps its own size): the resolution the model was trained at. "
                        "0 = the clip's own size.",
                    },
                ),
            }
        }

    def build(self, video_vae, source, longest_side: int = 0):
        condition = masks.video_to_audio(video_codec(video_vae), source, longest_side)
        frames = source.shape[0]
        return _output(condition, frames, list(range(frames)))


class SkyReelsV4MaskKeepVideo(_MaskNode):
    DESCRIPTION = (
        "Keep a render's video and make a new sound for it (reroll the sound): the first "
        "Sampler's video comes back bit for bit from a second Sampler with another seed or "
        "prompt, run at the same fps."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "av_latent": (
                    link_types.AV_LATENT,
                    {"tooltip": "The Sampler output whose video to keep."},
                ),
            }
        }

    def build(self, av_latent):
        condition = masks.keep_video(av_latent.video, av_latent.fps, av_latent.clip_frames)
        return _output(condition, av_latent.frames, list(range(av_latent.frames)))


NODE_CLASS_MAPPINGS = {
    cls.__name__: cls
    for cls in (
        SkyReelsV4MaskT2V,
        SkyReelsV4MaskI2V,
        SkyReelsV4MaskExtend,
        SkyReelsV4MaskContinue,
        SkyReelsV4MaskInterpolate,
        SkyReelsV4MaskKeyframes,
        SkyReelsV4MaskEdit,
        SkyReelsV4MaskVideoToAudio,
        SkyReelsV4MaskKeepVideo,
    )
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4MaskT2V": "SkyReels-V4 Mask: Text to Video",
    "SkyReelsV4MaskI2V": "SkyReels-V4 Mask: Image to Video",
    "SkyReelsV4MaskExtend": "SkyReels-V4 Mask: Extend Video",
    "SkyReelsV4MaskContinue": "SkyReels-V4 Mask: Continue Clip (next window)",
    "SkyReelsV4MaskInterpolate": "SkyReels-V4 Mask: First-Last Frame",
    "SkyReelsV4MaskKeyframes": "SkyReels-V4 Mask: Keyframes",
    "SkyReelsV4MaskEdit": "SkyReels-V4 Mask: Edit Region",
    "SkyReelsV4MaskVideoToAudio": "SkyReels-V4 Mask: Video to Audio (add sound)",
    "SkyReelsV4MaskKeepVideo": "SkyReels-V4 Mask: Keep Video (new sound)",
}
