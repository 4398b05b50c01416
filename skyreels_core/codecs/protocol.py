"""The codec protocol shared by the sampler, mask builders, refiner and nodes.

Real codecs (diffusers' Wan VAE, MMAudio), the demo codecs and adapters around the host's VAE
objects all satisfy it, so nothing downstream knows which one it got.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..shapes import pixel_frame_count


@runtime_checkable
class VideoCodec(Protocol):
    """Pixel frames <-> normalised latents.

    ``encode``: frames [B, T, H, W, 3] float in 0..1 (T = 4k+1) -> latents [B, C, T_lat, H/8, W/8].
    ``decode``: latents -> frames [B, T, H, W, 3] float in 0..1.
    """

    latent_channels: int
    temporal_stride: int
    spatial_stride: int

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class AudioCodec(Protocol):
    """Waveform <-> latents at a fixed token rate.

    ``encode``: waveform [B, channels, S] at ``sample_rate`` -> latents [B, C, L];
    ``decode``: latents -> waveform [B, channels, L * samples_per_token]. Sounds from files come in
    at any rate and channel count: ``av_io.resample_audio`` to ``sample_rate`` and ``channels``.
    """

    latent_channels: int
    channels: int
    sample_rate: int
    samples_per_token: int

    def encode(self, waveform: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


def audio_token_count(num_frames: int, fps: float, sample_rate: int, samples_per_token: int) -> int:
    """Audio tokens that cover a clip of ``num_frames`` at ``fps``.

    Rounded to nearest: 81 frames at 16 fps with MMAudio-44k (44100 Hz, 1024 samples/token) give
    5.0625 s * 43.07 = 218.02 -> 218, the paper's count.
    """
    seconds = num_frames / fps
    return max(1, round(seconds * sample_rate / samples_per_token))


def latent_audio_tokens(latent_frames: int, fps: float, rate) -> int:
    """Audio tokens beside ``latent_frames`` video latents, at ``rate``'s ``sample_rate`` and
    ``samples_per_token`` (an audio codec or an AudioRate): the sampler sizes the audio stream by
    the latents' pixel frames, those padded to whole groups (Video to Audio) included."""
    frames = pixel_frame_count(latent_frames)
    return audio_token_count(frames, fps, rate.sample_rate, rate.samples_per_token)
