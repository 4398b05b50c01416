"""Joining windows into one long clip: frames and sound cross-faded where they overlap."""

from __future__ import annotations

import logging

from skyreels_core.errors import InputError
from skyreels_core.families import require_width
from skyreels_core.joining import (
    DEFAULT_OVERLAP,
    extend_to_length,
    join_clips,
    require_matching_sound,
    window_count,
    window_seed,
)
from skyreels_core.prompts import shots_in_window, tells_one_story
from skyreels_core.sampling import SamplerSettings
from skyreels_core.shapes import MAX_FRAMES, MAX_JOINED_FRAMES, latent_frame_count

from . import host, link_types
from .av_codecs import SkyReelsV4DecodeAudio, SkyReelsV4DecodeVideo
from .codec_inputs import video_codec
from .sampler import SkyReelsV4Sampler
from .validation import host_sound

CATEGORY = "SkyReels-V4/clips"
LOG = logging.getLogger("skyreels_v4")
# The Sampler's own inputs that every window shares, taken from it so the two never drift.
WINDOW_SETTINGS = ("seed", "steps", "shift", "solver", "video_guidance", "audio_guidance")
WINDOW_EXTRAS = ("negative", "references", "cache_threshold", "sigmas")


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
                        "default": DEFAULT_OVERLAP,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Frames the two share: wire Continue Clip's overlap here.",
                    },
                ),
                "fps": link_types.fps_input("Both clips' rate."),
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
        sound_a, sound_b = host_sound(audio_a, "audio_a"), host_sound(audio_b, "audio_b")
        return join_clips(frames_a, frames_b, overlap, fps, sound_a, sound_b)


class SkyReelsV4ExtendToLength:
    DESCRIPTION = (
        "Continues a clip window by window until it is `total_frames` long: each window starts "
        "with the clip's last frames (as Mask: Continue Clip does), is rendered with the prompt "
        "and settings given here and joined on (as Join Clips does). A multi-shot prompt written "
        "for total_frames tells one story across the windows; one written for window_frames "
        "repeats in each. One node for what long_video wires by hand per window."
    )
    CATEGORY = CATEGORY
    FUNCTION = "extend"
    RETURN_TYPES = ("IMAGE", "AUDIO")
    RETURN_NAMES = ("frames", "audio")
    OUTPUT_TOOLTIPS = (
        "The clip continued to total_frames, the windows cross-faded where they overlap.",
        "Its sound, joined the same way (none for a video-only model).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        sampler = SkyReelsV4Sampler.INPUT_TYPES()
        return {
            "required": {
                "model": sampler["required"]["model"],
                "text": sampler["required"]["text"],
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "audio_vae": link_types.AUDIO_VAE_INPUT,
                "frames": ("IMAGE", {"tooltip": "The clip so far (a first window's frames)."}),
                "fps": link_types.fps_input(
                    "The clip's rate (Decode Video's fps); every window is rendered at it."
                ),
                "total_frames": (
                    "INT",
                    {
                        "default": 89,
                        "min": 2,
                        "max": MAX_JOINED_FRAMES,
                        "tooltip": "How long the clip comes out; the last window's surplus is "
                        "cut off.",
                    },
                ),
                "window_frames": (
                    "INT",
                    {
                        "default": 33,
                        "min": 5,
                        "max": MAX_FRAMES,
                        "step": 4,
                        "tooltip": "Frames per window (1 + 4k): the length the model was "
                        "trained on (33 for the demo model, 81 for 14B-class ones).",
                    },
                ),
                "overlap": (
                    "INT",
                    {
                        "default": DEFAULT_OVERLAP,
                        "min": 1,
                        "max": MAX_FRAMES,
                        "tooltip": "How many of the clip's last frames each window starts with "
                        "(snapped down to 1 + 4k); 5 gives the demo model its smoothest seams.",
                    },
                ),
                **{name: sampler["required"][name] for name in WINDOW_SETTINGS},
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "The clip's sound (none for a video-only model)."}),
                **{name: sampler["optional"][name] for name in WINDOW_EXTRAS},
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def extend(
        self,
        model,
        text,
        video_vae,
        audio_vae,
        frames,
        fps: float,
        total_frames: int,
        window_frames: int,
        overlap: int,
        audio=None,
        unique_id=None,
        **settings,
    ):
        audio = host_sound(audio)
        require_matching_sound(audio is not None, model.has_audio)  # before the first window
        sigmas = settings.get("sigmas")
        if sigmas is not None and float(sigmas[0]) < 1.0:
            raise InputError(
                "sigmas",
                f"the schedule starts at {float(sigmas[0]):g}, and every window is drawn from "
                "noise",
                "start the schedule at 1 (Schedule, or the host's sigma nodes with sigma_max 1)",
            )
        codec = video_codec(video_vae)  # the windows' conditions: named here, not as "condition"
        config = model.module.config
        require_width("video_vae", codec.latent_channels, config.video_latent_channels,
                      "video latent channels", "this model")  # fmt: skip
        windows = window_count(codec, frames.shape[0], total_frames, window_frames, overlap)
        negative = settings.get("negative")
        story = tells_one_story(text, total_frames, window_frames)
        negative_story = negative is not None and tells_one_story(
            negative, total_frames, window_frames, "negative"
        )
        window_latents = latent_frame_count(window_frames, input_name="window_frames")
        steps = SamplerSettings(steps=settings["steps"], sigmas=settings.get("sigmas")).steps
        progress = host.Progress(steps * windows, unique_id, "SkyReels-V4 Extend to Length")
        sampler, decode_video, decode_audio = (
            SkyReelsV4Sampler(),
            SkyReelsV4DecodeVideo(),
            SkyReelsV4DecodeAudio(),
        )

        def render_window(condition, number: int, first_frame: int):
            LOG.info("SkyReels-V4 Extend to Length: window %d after the clip", number)
            window_settings = {**settings, "seed": window_seed(settings["seed"], number)}
            if negative_story:
                window_settings["negative"] = shots_in_window(negative, first_frame, window_latents)
            prompt = shots_in_window(text, first_frame, window_latents) if story else text
            sampled = sampler.sample(
                model, prompt, condition, fps=fps, audio_vae=audio_vae, video_vae=video_vae,
                unique_id=unique_id, progress=progress.part((number - 1) * steps),
                **window_settings,
            )  # fmt: skip
            latent = sampled["result"][0]
            window = decode_video.decode(latent, video_vae)[0]
            sound = decode_audio.decode(latent, audio_vae)[0] if latent.audio is not None else None
            return window, sound

        try:
            return extend_to_length(
                codec, frames, audio, fps, total_frames, window_frames, overlap, render_window
            )
        finally:
            progress.close()


NODE_CLASS_MAPPINGS = {
    "SkyReelsV4JoinClips": SkyReelsV4JoinClips,
    "SkyReelsV4ExtendToLength": SkyReelsV4ExtendToLength,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4JoinClips": "SkyReels-V4 Join Clips",
    "SkyReelsV4ExtendToLength": "SkyReels-V4 Extend to Length",
}
