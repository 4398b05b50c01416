"""Accepting either the pack's codecs or the host's VAE objects on a node input."""

from __future__ import annotations

from skyreels_core.codecs import VideoCodec
from skyreels_core.errors import InputError

from . import host


def video_codec(vae) -> VideoCodec:
    """The VideoCodec behind a ``video_vae`` socket: ours as-is, the host's Wan 2.1 VAE adapted."""
    if isinstance(vae, VideoCodec):
        return vae
    if host.is_host_wan_vae(vae):
        return host.HostWanVideoCodec(vae)
    raise InputError(
        "video_vae",
        f"a {type(vae).__name__} is not the Wan 2.1 video VAE this model was trained with",
        "connect SkyReels-V4 Load Video VAE, or the host's Load VAE with wan_2.1_vae.safetensors",
    )
