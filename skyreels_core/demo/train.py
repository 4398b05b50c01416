"""``python -m skyreels_core train-demo``: rebuild the bundled demo model from nothing.

Stages (each resumable: a finished stage's files are reused, the model stage restarts from its
last checkpoint): render the world, train the video and audio codecs, build the tiny Qwen-VL text
encoder, train the dual-stream model on the multi-task mix, write the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import get_preset
from ..encoder import MLLMEncoder, create_tiny_encoder_folder
from ..loading import save_model
from ..mmdit import DualStreamMMDiT
from ..training import Batch, load_checkpoint, save_checkpoint, training_loss
from ..types import TextEncoding
from .bundle import WEIGHTS_DIR
from .codecs import DemoAudioCodec, DemoVideoCodec
from .world import COLOURS, MOTIONS, SHAPES, render_scene, sample_scene_spec

FRAMES = 33
TRAIN_SEEDS = range(0, 100_000)  # held-out eval seeds start at 1_000_000


@dataclass
class WorldData:
    pixels: torch.Tensor  # [N, T, H, W, 3]
    audio: torch.Tensor  # [N, 1, S]
    captions: list[str]


def render_world(count: int, seed: int) -> WorldData:
    scenes = [
        render_scene(sample_scene_spec(seed * 100_000 + i, max_objects=2), frames=FRAMES)
        for i in range(count)
    ]
    return WorldData(
        torch.stack([s.frames for s in scenes]),
        torch.stack([s.audio for s in scenes]),
        [s.caption for s in scenes],
    )


def _schedule(optimiser, step: int, steps: int, peak: float, warmup: int = 100) -> None:
    lr = (
        peak
        * min(1.0, (step + 1) / warmup)
        * 0.5
        * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    for group in optimiser.param_groups:
        group["lr"] = lr


def _normalise(codec, latents: torch.Tensor, dims: tuple[int, ...]) -> None:
    codec.latent_mean.copy_(latents.mean(dim=dims))
    codec.latent_std.copy_(latents.std(dim=dims).clamp_min(1e-3))


def _fit(codec, loss_of_batch, steps: int, description: str) -> None:
    optimiser = torch.optim.AdamW(codec.parameters(), lr=2e-3, weight_decay=0.0)
    for step in tqdm(range(steps), desc=description, leave=False):
        _schedule(optimiser, step, steps, 2e-3)
        loss = loss_of_batch()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def train_video_codec(data: WorldData, steps: int, generator: torch.Generator) -> DemoVideoCodec:
    codec = DemoVideoCodec()

    def loss():
        clips = data.pixels[torch.randint(len(data.pixels), (4,), generator=generator)]
        z = codec.raw_encode(clips)
        return F.mse_loss(codec.raw_decode(z), clips) + 1e-4 * z.pow(2).mean()

    _fit(codec, loss, steps, "video codec")
    with torch.no_grad():
        _normalise(
            codec, torch.cat([codec.raw_encode(c[None]) for c in data.pixels[:64]]), (0, 2, 3, 4)
        )
    return codec.eval().requires_grad_(False)


def _stft_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    loss = 0.0
    for size in (256, 1024):
        window = torch.hann_window(size)
        sa = torch.stft(a.flatten(0, 1), size, size // 4, window=window, return_complex=True).abs()
        sb = torch.stft(b.flatten(0, 1), size, size // 4, window=window, return_complex=True).abs()
        loss = loss + (sa - sb).abs().mean() + (torch.log1p(sa) - torch.log1p(sb)).abs().mean()
    return loss


def train_audio_codec(data: WorldData, steps: int, generator: torch.Generator) -> DemoAudioCodec:
    codec = DemoAudioCodec()

    def loss():
        wave = data.audio[torch.randint(len(data.audio), (8,), generator=generator)]
        z = codec.raw_encode(wave)
        out = codec.raw_decode(z)[..., : wave.shape[-1]]
        return (out - wave).abs().mean() + _stft_loss(out, wave) + 1e-4 * z.pow(2).mean()

    _fit(codec, loss, steps, "audio codec")
    with torch.no_grad():
        _normalise(codec, codec.raw_encode(data.audio[:64]), (0, 2))
    return codec.eval().requires_grad_(False)


def caption_vocabulary() -> list[str]:
    return [f"a {c} {s} {m} and" for c in COLOURS for s in SHAPES for m in MOTIONS]


def encode_captions(encoder: MLLMEncoder, captions: list[str]) -> TextEncoding:
    """All captions padded to one length (mask marks real tokens)."""
    encodings = [encoder.encode(caption) for caption in captions]
    length = max(e.features.shape[1] for e in encodings)
    features = torch.stack(
        [F.pad(e.features[0], (0, 0, 0, length - e.features.shape[1])) for e in encodings]
    )
    mask = torch.stack([F.pad(e.mask[0], (0, length - e.mask.shape[1])) for e in encodings])
    return TextEncoding(features, mask)


def _sha256(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(path.rglob("*")):
            if file.is_file():
                digest.update(file.name.encode())
                digest.update(file.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the bundle is written")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scenes", type=int, default=384, help="training clips rendered from the world"
    )
    parser.add_argument("--codec-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=4000, help="model training steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--max-minutes", type=float, default=50.0, help="stop model training after this long"
    )
    parser.add_argument("--checkpoint-every", type=int, default=250)


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = render_world(args.scenes, args.seed)

    video_path, audio_path = out / "video_codec.safetensors", out / "audio_codec.safetensors"
    video_codec = (
        DemoVideoCodec.load(video_path)
        if video_path.exists()
        else train_video_codec(data, args.codec_steps, generator)
    )
    video_codec.save(video_path)
    audio_codec = (
        DemoAudioCodec.load(audio_path)
        if audio_path.exists()
        else train_audio_codec(data, args.codec_steps, generator)
    )
    audio_codec.save(audio_path)

    encoder_dir = out / "text_encoder"
    if not (encoder_dir / "config.json").exists():
        create_tiny_encoder_folder(
            encoder_dir,
            hidden_size=get_preset("demo").text_dim,
            vocab_texts=caption_vocabulary(),
            seed=args.seed,
        )
    encoder = MLLMEncoder.from_folder(encoder_dir, dtype=torch.float32)

    with torch.no_grad():
        video_latents = torch.cat([video_codec.encode(clip[None]) for clip in data.pixels])
        audio_latents = audio_codec.encode(data.audio)
        text = encode_captions(encoder, data.captions)

    model = DualStreamMMDiT(get_preset("demo")).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    checkpoint = out / "model_training.safetensors"
    step = load_checkpoint(checkpoint, model, optimiser) if checkpoint.exists() else 0
    deadline = started + args.max_minutes * 60
    with tqdm(total=args.steps, initial=step, desc="demo model") as bar:
        while step < args.steps and time.monotonic() < deadline:
            _schedule(optimiser, step, args.steps, 1e-3, warmup=200)
            index = torch.randint(len(data.pixels), (args.batch,), generator=generator)
            batch = Batch(data.pixels[index], video_latents[index], audio_latents[index],
                          TextEncoding(text.features[index], text.mask[index]))  # fmt: skip
            loss, task = training_loss(model, video_codec, batch, generator)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", task=task)
            if step % args.checkpoint_every == 0:
                save_checkpoint(checkpoint, model, optimiser, step)
    save_checkpoint(checkpoint, model, optimiser, step)
    model_path = save_model(model.eval(), out / "model.safetensors", {"training_steps": str(step)})
    manifest = {
        "preset": "demo",
        "command": f"python -m skyreels_core train-demo --seed {args.seed} --scenes {args.scenes} --codec-steps {args.codec_steps} --steps {args.steps} --batch {args.batch}",
        "seed": args.seed,
        "training_steps": step,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "audio_rate": {
            "sample_rate": audio_codec.sample_rate,
            "samples_per_token": audio_codec.samples_per_token,
        },
        "fps": 16.0,
        "frames": FRAMES,
        "size": 64,
        "sha256": {p.name: _sha256(p) for p in (model_path, video_path, audio_path, encoder_dir)},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote the demo bundle to {out} ({step} model steps)")
    return 0
