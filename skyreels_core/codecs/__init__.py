"""Codecs behind one protocol (DESIGN §2): Wan 2.1 video VAE, MMAudio-44k audio VAE + vocoder, and
the bundled demo codecs."""

from .protocol import AudioCodec, VideoCodec, audio_token_count, latent_audio_tokens

__all__ = ["AudioCodec", "VideoCodec", "audio_token_count", "latent_audio_tokens"]
