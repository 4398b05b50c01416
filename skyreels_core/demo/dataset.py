"""Training tensors: the demo world rendered (every trainer, codecs, model, refiner, draws its
clips here, from seeds disjoint from the held-out evaluation seeds), or a folder of the user's
own captioned clips fitted to the demo model's shape (a LoRA's training set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..av_io import fit_length, read_video, resample_audio
from ..errors import InputError
from ..file_kinds import SUFFIXES, files_of
from ..shapes import sound_samples
from .world import FPS, SAMPLE_RATE, render_scene, sample_scene_spec

FRAMES = 33
# The model's clips, and the refiner's output (the video decoder is fine-tuned for both).
LOW_SIZE, HIGH_SIZE = 64, 128
SCENES_PER_SEED = 100_000
HELD_OUT_SEED = 1_000_000  # evaluation scenes start here; training never reaches it


@dataclass
class WorldData:
    pixels: torch.Tensor  # [N, T, H, W, 3]
    audio: torch.Tensor  # [N, 1, S]
    captions: list[str]


def training_seeds(count: int, seed: int) -> range:
    """Scene seeds ``seed * SCENES_PER_SEED + i`` for ``count`` training clips; every demo trainer
    draws from here, so none reaches the held-out evaluation scenes. Its arguments are the
    trainers' --seed and --scenes, named as such when refused."""
    seeds = HELD_OUT_SEED // SCENES_PER_SEED
    if not 0 <= seed < seeds:
        raise InputError(
            "--seed",
            f"{seed} would draw scenes from {seed * SCENES_PER_SEED}, where only 0 to "
            f"{HELD_OUT_SEED - 1} are for training (the evaluation's start at {HELD_OUT_SEED})",
            f"use 0 to {seeds - 1}",
        )
    if not 1 <= count <= SCENES_PER_SEED:
        raise InputError(
            "--scenes", f"{count}", f"use 1 to {SCENES_PER_SEED} (the scenes of one --seed)"
        )
    return range(seed * SCENES_PER_SEED, seed * SCENES_PER_SEED + count)


def render_world(
    count: int, seed: int, size: int = LOW_SIZE, palette: dict[str, str] | None = None
) -> WorldData:
    """``count`` training scenes at ``size`` px (the world scales motion and sizes with it),
    their colours rendered through ``palette`` (:func:`render_scene`)."""
    scenes = [
        render_scene(
            sample_scene_spec(scene, max_objects=2), frames=FRAMES, size=size, palette=palette
        )
        for scene in training_seeds(count, seed)
    ]
    return WorldData(
        torch.stack([s.frames for s in scenes]),
        torch.stack([s.audio for s in scenes]),
        [s.caption for s in scenes],
    )


@torch.no_grad()
def world_latents(codec, count: int, seed: int, size: int) -> torch.Tensor:
    """Latents [N, C, T', h, w] of the ``count`` training scenes :func:`render_world` draws,
    rendered at ``size`` px and encoded one scene at a time: the world at 128 px held as pixels
    would take 6.6 GB."""
    return torch.cat(
        [
            codec.encode(
                render_scene(
                    sample_scene_spec(scene, max_objects=2), frames=FRAMES, size=size
                ).frames[None]
            )
            for scene in tqdm(training_seeds(count, seed), desc=f"world at {size} px", leave=False)
        ]
    )


def _fit_clip(path: Path, frames: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's first ``frames`` frames at the world's frame rate, centre-cropped square and
    resized to ``size``, and its sound as mono at the world's rate, as long as those frames.
    Only those seconds are decoded: a long clip's whole length would be held as float pixels."""
    seconds = frames / FPS
    pixels, fps, audio = read_video(path, max_seconds=seconds)
    if pixels.shape[0] / fps + 1e-6 < seconds:
        raise InputError(
            "--clips",
            f"{path.name} lasts {pixels.shape[0] / fps:.2f} s, less than {seconds:.2f} s",
            f"use clips of at least {frames} frames at {FPS:g} fps",
        )
    picked = pixels[(torch.arange(frames) * fps / FPS).long()]
    height, width = picked.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = picked[:, top : top + side, left : left + side].permute(0, 3, 1, 2)
    video = F.interpolate(square, size=size, mode="bilinear", antialias=True)
    samples = sound_samples(frames, FPS, SAMPLE_RATE)
    if audio is None:  # a silent clip teaches silence
        return video.permute(0, 2, 3, 1).clamp(0, 1), torch.zeros(1, samples)
    sound = resample_audio(audio["waveform"][0], audio["sample_rate"], SAMPLE_RATE, 1)
    return video.permute(0, 2, 3, 1).clamp(0, 1), fit_length(sound, samples)


def _caption(video: Path) -> str:
    """The clip's caption from the text file of the same name, on one line. Read as UTF-8 with
    or without the BOM Windows editors write (one would start the prompt otherwise); any other
    encoding is refused by name rather than guessed."""
    path = video.with_suffix(".txt")
    try:
        text = path.read_text(encoding="utf-8-sig") if path.is_file() else ""
    except UnicodeDecodeError:
        raise InputError("--clips", f"{path.name} is not UTF-8", "save it as UTF-8 text") from None
    if not text.strip():
        raise InputError(
            "--clips", f"{video.name} has no caption", f"write what it shows into {path.name}"
        )
    return " ".join(text.split())


def read_clips(folder: Path, frames: int = FRAMES, size: int = LOW_SIZE) -> WorldData:
    """Every video in ``folder`` with its caption (the text file of the same name), fitted to the
    demo model's clips: ``frames`` frames at its frame rate, ``size`` px square, mono sound;
    hidden files are none (:func:`files_of`)."""
    folder = Path(folder)
    videos = files_of(folder, ("video",)) if folder.is_dir() else []
    if not videos:
        raise InputError(
            "--clips",
            f"{folder} holds no video files",
            f"put {', '.join(SUFFIXES['video'])} clips there",
        )
    pixels, audio, captions = [], [], []
    for video in videos:
        caption = _caption(video)
        clip, sound = _fit_clip(video, frames, size)
        pixels.append(clip)
        audio.append(sound)
        captions.append(caption)
    return WorldData(torch.stack(pixels), torch.stack(audio), captions)
