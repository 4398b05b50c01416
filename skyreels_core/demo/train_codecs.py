"""Train and ship the demo codecs on their own, so they can be refreshed without retraining the
dual-stream model (``train-demo`` reuses codec files already present in its output folder)."""

from __future__ import annotations

from pathlib import Path

import torch

from .train import render_world, train_audio_codec, train_video_codec


def train_codecs(
    out_dir: Path, scenes: int = 64, steps: int = 600, seed: int = 0
) -> tuple[Path, Path]:
    """Render ``scenes`` world clips from ``seed`` and fit both codecs for ``steps`` each.

    Returns the written (video, audio) safetensors paths; their configs sit in the metadata.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = render_world(scenes, seed)
    video = train_video_codec(data, steps, generator).save(out_dir / "video_codec.safetensors")
    audio = train_audio_codec(data, steps, generator).save(out_dir / "audio_codec.safetensors")
    return video, audio
