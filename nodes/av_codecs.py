"""Decode and encode nodes between the sampler's latents and the host's IMAGE / AUDIO types."""

from __future__ import annotations

from dataclasses import replace

import torch

from skyreels_core.av_io import fit_length, resample_audio
from skyreels_core.codecs import latent_audio_tokens
from skyreels_core.codecs.tiling import encode_tiled
from skyreels_core.decoding import take_frames, take_sound
from skyreels_core.errors import InputError
from skyreels_core.families import channels, require_width
from skyreels_core.masks import check_size
from skyreels_core.memory import out_of_memory_advice
from skyreels_core.shapes import frame_rate, latent_frame_count, rgb_pixels
from skyreels_core.types import AVLatent

from . import host, link_types
from .codec_inputs import video_codec
from .validation import require_sound

CATEGORY = "SkyReels-V4/codecs"
TILE_INPUTS = {
    "tile_size": (
        "INT",
        {
            "default": 0,
            "min": 0,
            "max": 1024,
            "tooltip": "Work in spatial tiles of this many latent pixels (0 = whole frames). Bounds "
            "the VAE's memory by the tile; costs the overlap's repeated work (tile 32, overlap "
            "8: about 1.8x).",
        },
    ),
    "tile_overlap": (
        "INT",
        {
            "default": 8,
            "min": 0,
            "max": 512,
            "tooltip": "Latent pixels neighbouring tiles share: the outer part feeds the edges' "
            "convolutions, the middle quarter is cross-faded, so there are no seams.",
        },
    ),
}


class TileProgress:
    """The node's progress bar over a tiled decode or encode, and Cancel between tiles: a 720p
    Wan 2.1 decode in tiles takes minutes, as the host's own tiled decode shows and honours."""

    def __init__(self) -> None:
        self.bar: host.Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = host.Progress(total)
        self.bar.update(done)
        host.check_interrupt()

    def __enter__(self) -> TileProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()


class SkyReelsV4DecodeVideo:
    DESCRIPTION = "Video latents to IMAGE frames (and the clip's fps, for CreateVideo / Save)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("frames", "fps")
    OUTPUT_TOOLTIPS = (
        "The clip's frames (the host's IMAGE batch, one per frame).",
        "The clip's frame rate: wire it into Save Video or a Sampler that continues the clip.",
    )
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "av_latent": (
                    link_types.AV_LATENT,
                    {"tooltip": "From the sampler or the refiner."},
                ),
                "video_vae": (
                    link_types.ANY_VIDEO_VAE,
                    {"tooltip": "The video VAE the model was trained with."},
                ),
            },
            "optional": TILE_INPUTS,
        }

    def decode(self, av_latent: AVLatent, video_vae, tile_size: int = 0, tile_overlap: int = 8):
        codec = video_codec(video_vae)
        require_width(
            "av_latent", channels(av_latent.video), codec.latent_channels,
            "video latent channels", "this video VAE",
        )  # fmt: skip
        advice = out_of_memory_advice("SkyReels-V4 video decode")
        with advice, torch.no_grad(), TileProgress() as progress:
            frames = take_frames(av_latent, codec, tile_size, tile_overlap, progress)
        frames = frames.to(host.intermediate_device(), torch.float32)
        return (frames.reshape(-1, *frames.shape[2:]), float(av_latent.fps))


class SkyReelsV4DecodeAudio:
    DESCRIPTION = "Audio latents to the host's AUDIO, trimmed to the clip's duration."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The clip's sound (the host's AUDIO).",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "av_latent": (link_types.AV_LATENT, {"tooltip": "From the sampler."}),
                "audio_vae": (
                    link_types.AUDIO_VAE,
                    {"tooltip": "The audio VAE + vocoder the model was trained with."},
                ),
            }
        }

    def decode(self, av_latent: AVLatent, audio_vae):
        if av_latent.audio is None:
            raise InputError(
                "av_latent",
                "it holds no audio (a video-only model made it)",
                "use a model with an audio stream",
            )
        require_width(
            "av_latent", channels(av_latent.audio), audio_vae.latent_channels,
            "audio latent channels", "this audio VAE",
        )  # fmt: skip
        with out_of_memory_advice("SkyReels-V4 audio decode"), torch.no_grad():
            return (take_sound(av_latent, audio_vae),)


class SkyReelsV4EncodeVideo:
    DESCRIPTION = (
        "IMAGE frames to video latents (for the refiner or video-to-video); add sound to them "
        "with Encode Audio."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.AV_LATENT,)
    RETURN_NAMES = ("av_latent",)
    OUTPUT_TOOLTIPS = (
        "The frames as video latents at this fps, no sound yet (Encode Audio adds it), for a "
        "Sampler's initial, Keep Video or Refine.",
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "4k+1 frames."}),
                "video_vae": link_types.VIDEO_VAE_INPUT,
                "fps": link_types.fps_input("Frame rate of the frames."),
            },
            "optional": TILE_INPUTS,
        }

    def encode(self, frames, video_vae, fps: float, tile_size: int = 0, tile_overlap: int = 8):
        latent_frame_count(frames.shape[0], input_name="frames")
        frame_rate(fps)  # kept in the latent: its sound's length is counted at it
        codec = video_codec(video_vae)
        # Off the 16 px grid the codec crops or the model cannot patch the latents.
        check_size(frames.shape[1], frames.shape[2], "frames", codec)
        advice = out_of_memory_advice("SkyReels-V4 video encode")
        with advice, torch.no_grad(), TileProgress() as progress:
            pixels = rgb_pixels(frames, "frames")[None]
            latents = encode_tiled(codec, pixels, tile_size, tile_overlap, progress)
        return (AVLatent(video=latents, fps=fps),)


class SkyReelsV4EncodeAudio:
    DESCRIPTION = "The host's AUDIO to audio latents, attached to an existing video latent."
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.AV_LATENT,)
    RETURN_NAMES = ("av_latent",)
    OUTPUT_TOOLTIPS = ("The AV latent with this sound's latents in its audio stream.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "av_latent": (link_types.AV_LATENT, {"tooltip": "The clip the sound belongs to."}),
                "audio": (
                    "AUDIO",
                    {"tooltip": "Any sample rate and channel count; it is resampled."},
                ),
                "audio_vae": link_types.AUDIO_VAE_INPUT,
            }
        }

    def encode(self, av_latent: AVLatent, audio, audio_vae):
        audio = require_sound(audio)
        waveform = resample_audio(
            audio["waveform"], audio["sample_rate"], audio_vae.sample_rate, audio_vae.channels
        )
        _check_sound(waveform, av_latent, audio_vae.sample_rate)
        # The sampler sizes the audio stream by the latents' frames, the padded ones included.
        tokens = latent_audio_tokens(av_latent.video.shape[2], av_latent.fps, audio_vae)
        waveform = fit_length(waveform, tokens * audio_vae.samples_per_token)
        with out_of_memory_advice("SkyReels-V4 audio encode"), torch.no_grad():
            latents = audio_vae.encode(waveform)
        return (replace(av_latent, audio=latents),)


def _check_sound(waveform: torch.Tensor, av_latent: AVLatent, sample_rate: int) -> None:
    """One sound per clip, as long as the clip itself (``frames``: a padded Video to Audio take is
    trimmed back to its own length on decoding): the host's VAE Decode Audio of a batch gives
    several sounds, which would make an AV latent no node can load or decode as one clip. The
    clip lasts its span, (frames - 1) / fps, which Refine keeps, plus a frame as it was made
    (``source_fps``): Refine's r (F - 1) + 1 frames at r x fps end their last frame sooner, but
    the sound made for the clip still fits it, within that frame."""
    sounds, clips = waveform.shape[0], av_latent.video.shape[0]
    if sounds != clips:
        raise InputError(
            "audio",
            f"{sounds} sounds for {clips} clip(s) in av_latent",
            "give one sound per clip: decode the audio with batch_size 1, or pick one with the "
            "host's Latent From Batch before VAE Decode Audio",
        )
    frames, fps = av_latent.frames, av_latent.fps
    period = 1 / (av_latent.source_fps or fps)
    clip_s, sound_s = (frames - 1) / fps + period, waveform.shape[-1] / sample_rate
    if abs(sound_s - clip_s) > period:  # more than a frame off: the wrong sound
        made = f", refined from {av_latent.source_fps:g} fps" if av_latent.source_fps else ""
        raise InputError(
            "audio",
            f"{sound_s:.2f} s of sound for a {clip_s:.2f} s clip ({frames} frames at {fps:g} fps"
            f"{made})",
            "trim or pad the sound to the clip's length, or encode the matching clip",
        )


NODE_CLASS_MAPPINGS = {
    cls.__name__: cls
    for cls in (
        SkyReelsV4DecodeVideo,
        SkyReelsV4DecodeAudio,
        SkyReelsV4EncodeVideo,
        SkyReelsV4EncodeAudio,
    )
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4DecodeVideo": "SkyReels-V4 Decode Video",
    "SkyReelsV4DecodeAudio": "SkyReels-V4 Decode Audio",
    "SkyReelsV4EncodeVideo": "SkyReels-V4 Encode Video",
    "SkyReelsV4EncodeAudio": "SkyReels-V4 Encode Audio",
}
