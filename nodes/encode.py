"""Prompt encoding through the shared MLLM encoder (text, images and video frames together)."""

from __future__ import annotations

from skyreels_core.prompts import parse_multishot
from skyreels_core.shapes import MAX_FRAMES

from . import link_types

CATEGORY = "SkyReels-V4/encode"
ENCODER_INPUT = (
    link_types.TEXT_ENCODER,
    {"tooltip": "The MLLM encoder from SkyReels-V4 Load Text Encoder."},
)


class SkyReelsV4TextEncode:
    DESCRIPTION = (
        "Encodes a prompt, optionally with images and video frames the prompt talks about, into the "
        "features both streams read. Results are cached, so re-queueing reuses them."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.TEXT,)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = (
        "The prompt (and any images or frames) as the MLLM's hidden states, for the Sampler's text "
        "or negative.",
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": ENCODER_INPUT,
                "prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "a red circle bounces on the floor",
                        "tooltip": "What to see and hear.",
                    },
                ),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Images the prompt refers to (read by the MLLM)."}),
                "video": (
                    "IMAGE",
                    {"tooltip": "Video frames the prompt refers to (read by the MLLM)."},
                ),
            },
        }

    def encode(self, text_encoder, prompt: str, images=None, video=None):
        return (text_encoder.encode(prompt, images=images, video=video),)


class SkyReelsV4MultiShotTextEncode:
    DESCRIPTION = (
        "A multi-shot prompt: one line per shot, '[start-end] description' in pixel frames. In "
        "the video's text cross-attention each shot's frames (and high-res keyframes) read only "
        "their own shot's text; the joint attention of the blocks reads the whole prompt."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.TEXT,)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("All shots' prompts as one encoding, each shot tied to its frames.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": ENCODER_INPUT,
                "shots": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "[0-16] a red circle bounces on the floor\n[17-32] a blue square moves right",
                        "tooltip": "One shot per line: [first-last frame] description.",
                    },
                ),
                "frames": (
                    "INT",
                    {
                        "default": 33,
                        "min": 1,
                        "max": MAX_FRAMES,
                        "step": 4,
                        "tooltip": "Clip length (4k+1). A story longer than the Sampler's clip "
                        "is read from its start (Extend to Length tells the rest).",
                    },
                ),
            }
        }

    def encode(self, text_encoder, shots: str, frames: int):
        return (text_encoder.encode_shots(parse_multishot(shots, frames), frames),)


NODE_CLASS_MAPPINGS = {
    "SkyReelsV4TextEncode": SkyReelsV4TextEncode,
    "SkyReelsV4MultiShotTextEncode": SkyReelsV4MultiShotTextEncode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4TextEncode": "SkyReels-V4 Text Encode",
    "SkyReelsV4MultiShotTextEncode": "SkyReels-V4 Multi-Shot Text Encode",
}
