"""Small value types passed between the encoder, mask builders, references, sampler and nodes.

They are plain dataclasses of tensors so nodes can carry them over custom link types
(``SKYREELS_TEXT``, ``SKYREELS_COND``, ``SKYREELS_REFS``, ``SKYREELS_AV_LATENT``) and tests can
build them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .shapes import pixel_frame_count


@dataclass
class TextEncoding:
    """MLLM features of one prompt (optionally with images/video), shared by both streams.

    ``features``: [B, L, D_text]; ``mask``: [B, L] bool, True for real tokens. ``shot_ranges`` holds,
    for multi-shot prompts, one ``(token_start, token_end, frame_start, frame_end)`` per shot: video
    tokens in latent frames [frame_start, frame_end) attend only text tokens [token_start,
    token_end) in the video stream's text cross-attention. ``None`` for a single-shot prompt.
    """

    features: torch.Tensor
    mask: torch.Tensor
    shot_ranges: list[tuple[int, int, int, int]] | None = None

    def nulled(self, rows: torch.Tensor | None = None) -> TextEncoding:
        """The unconditional prompt for ``rows`` (bool [B]; None: every row): zero features
        under the prompt's own mask. Training drops prompts to it and guidance samples against
        it, so the two must stay one function. Zeros give the text projections' bias only (no
        content); keeping the mask avoids rows of the text cross-attention with every key
        masked, whose softmax is NaN or backend-dependent."""
        zeros = torch.zeros_like(self.features)
        features = zeros if rows is None else torch.where(rows[:, None, None], zeros, self.features)
        return TextEncoding(features, self.mask.clone(), self.shot_ranges)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEncoding:
        return TextEncoding(
            self.features.to(device=device, dtype=dtype or self.features.dtype),
            self.mask.to(device),
            self.shot_ranges,
        )


@dataclass
class VideoCondition:
    """The channel-concat inpainting condition of DESIGN §2.

    ``latents`` (I): [B, C_v, T, H, W] VAE encoding of the conditioning video, unknown pixels black.
    ``known_mask`` (M): [B, 1, T, H, W] float, 1 = known/kept, 0 = to generate.
    ``known_frames``: pixel frame indices that ended up known after snapping to latent frames.
    ``clip_frames``: the source clip's own length where the latents cover more (Video to Audio
    holds a clip's last frame up to a 4k+1 count); the decoders trim to it.
    ``fps``: the frame rate the clip was made at, where the condition knows it (a rendered clip's
    latents kept whole); the sampler must run at it.
    ``story_start``: the pixel frame of the clip so far a continuation window starts at; a
    multi-shot prompt written for the longer clip is read from there.
    """

    latents: torch.Tensor
    known_mask: torch.Tensor
    known_frames: list[int] = field(default_factory=list)
    clip_frames: int | None = None
    fps: float | None = None
    story_start: int = 0

    @property
    def num_latent_frames(self) -> int:
        return self.latents.shape[2]


@dataclass
class References:
    """Clean in-context references, prepended to the attention sequences (DESIGN §3).

    ``video``: [B, C_v, N, H, W] latents (images are 1-frame latents, clips several), placed at
    temporal positions ``-N + i``; ``audio``: [B, C_a, L_ref] audio latents placed before the clip's
    audio in the same way.
    """

    video: torch.Tensor | None = None
    audio: torch.Tensor | None = None

    def __bool__(self) -> bool:
        return self.video is not None or self.audio is not None


@dataclass
class AVLatent:
    """Joint sampler output: video latents [B, C_v, T, H, W], audio latents [B, C_a, L], and the
    high-resolution keyframes [B, C_v, K, H_hr, W_hr] with their latent frame indices when the
    low-res + keyframes mode was used.

    ``source_fps``: the frame rate before Refine raised ``fps`` (None: ``fps``). Refining keeps
    the clip's span but ends its last frame sooner, so a sound made for the clip is measured
    against a frame as it was made."""

    video: torch.Tensor
    audio: torch.Tensor | None = None
    keyframes: torch.Tensor | None = None
    keyframe_indices: list[int] = field(default_factory=list)
    fps: float = 16.0
    clip_frames: int | None = None  # the condition's, where the clip is shorter than the latents
    source_fps: float | None = None

    @property
    def frames(self) -> int:
        """Pixel frames of the clip: what the video latents decode to, or the source clip's own
        length when they cover more."""
        return self.clip_frames or pixel_frame_count(self.video.shape[2])

    def to(self, device: torch.device | str) -> AVLatent:
        streams = (self.video, self.audio, self.keyframes)
        video, audio, keyframes = (None if x is None else x.to(device) for x in streams)
        return replace(self, video=video, audio=audio, keyframes=keyframes)


@dataclass
class ModelOutput:
    """Velocities predicted by the dual-stream MMDiT for the noisy tokens only (references and the
    conditioning channels produce no output): video [B, C_v, T, H, W], audio [B, C_a, L] or None,
    keyframes [B, C_v, K, H_hr, W_hr] or None."""

    video: torch.Tensor
    audio: torch.Tensor | None = None
    keyframes: torch.Tensor | None = None
