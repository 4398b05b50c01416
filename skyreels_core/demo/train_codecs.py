"""Train and ship the demo codecs on their own, so they can be refreshed without retraining the
dual-stream model (``train-demo`` reuses codec files already present in its output folder)."""

from __future__ import annotations

from pathlib import Path

import torch

from .train import render_world, train_audio_codec, train_video_codec


def train_codecs(
    out_dir: Path,
    scenes: int = 128,
    video_steps: int = 2000,
    audio_steps: int = 3000,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Render ``scenes`` world clips from ``seed`` and fit each codec from its own seeded state,
    so either can be retrained alone and still reproduce the shipped file.

    Returns the written (video, audio) safetensors paths; their configs sit in the metadata.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = render_world(scenes, seed)
    torch.manual_seed(seed)
    video = train_video_codec(data, video_steps, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    audio = train_audio_codec(data, audio_steps, torch.Generator().manual_seed(seed))
    return (
        video.save(out_dir / "video_codec.safetensors"),
        audio.save(out_dir / "audio_codec.safetensors"),
    )
