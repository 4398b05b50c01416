"""The audio stream's error around each click, per noise level, with the video given.

The model is given each held-out clip whole (video known, as the edit task gives it) and both
streams at one fixed noise level; the audio velocity error is read on the tokens around each
visual contact and on the rest. Nothing is sampled or decoded, so it takes seconds. It shows how
well a model predicts the clicks at each noise level; it is not a proxy for AV sync (a model that
cut it by a third at high noise read worse sync, see README).
"""

from __future__ import annotations

import torch

from ..masks import condition_from_pixels
from ..objective import noised, velocity_target
from .train import encode_captions
from .world import Scene

NOISE_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.85, 0.95)
CLICK_RADIUS_TOKENS = 3  # +-48 ms at 16 ms per token: a click's burst and its onset


def click_tokens(scene: Scene, samples_per_token: int, tokens: int) -> torch.Tensor:
    """[tokens] True within CLICK_RADIUS_TOKENS of a contact's audio token."""
    near = torch.zeros(tokens, dtype=torch.bool)
    for frame in scene.contact_frames:
        centre = round(frame / scene.fps * scene.sample_rate / samples_per_token)
        near[max(0, centre - CLICK_RADIUS_TOKENS) : centre + CLICK_RADIUS_TOKENS + 1] = True
    return near


@torch.no_grad()
def click_error_by_noise(
    pipeline, scenes: list[Scene], levels=NOISE_LEVELS, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{noise level: {"near_contacts", "elsewhere"}}: mean squared audio velocity error."""
    video_codec, audio_codec = pipeline.video_codec, pipeline.audio_codec
    given = [
        condition_from_pixels(video_codec, s.frames, torch.ones(s.frames.shape[:3], dtype=torch.bool))
        for s in scenes
    ]  # fmt: skip
    video = torch.cat([c.latents for c in given])
    known = torch.cat([c.known_mask for c in given])
    audio = audio_codec.encode(torch.stack([s.audio for s in scenes]))
    text = encode_captions(pipeline.encoder, [s.caption for s in scenes])
    near = torch.stack(
        [click_tokens(s, audio_codec.samples_per_token, audio.shape[2]) for s in scenes]
    )
    generator = torch.Generator().manual_seed(seed)
    video_noise = torch.randn(video.shape, generator=generator)
    audio_noise = torch.randn(audio.shape, generator=generator)
    report = {}
    for level in levels:
        t = torch.full((len(scenes),), float(level))
        video_in = torch.cat([noised(video, video_noise, t), video, known], dim=1)
        out = pipeline.model(video_in, t, text, audio=noised(audio, audio_noise, t))
        error = (out.audio - velocity_target(audio, audio_noise)).pow(2).mean(1)  # [B, tokens]
        report[f"{level:g}"] = {
            "near_contacts": error[near].mean().item(),
            "elsewhere": error[~near].mean().item(),
        }
    return report
