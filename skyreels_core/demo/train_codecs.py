"""Train and ship the demo codecs on their own, so they can be refreshed without retraining the
dual-stream model (``train-demo`` reuses codec files already present in its output folder)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..training import adamw, cosine_with_warmup
from .codecs import DemoAudioCodec, DemoVideoCodec
from .dataset import HIGH_SIZE, WorldData, render_world


def _normalise(codec, latents: torch.Tensor, dims: tuple[int, ...]) -> None:
    codec.latent_mean.copy_(latents.mean(dim=dims))
    codec.latent_std.copy_(latents.std(dim=dims).clamp_min(1e-3))


def _fit(module: nn.Module, loss_of_batch, steps: int, description: str, peak: float) -> None:
    optimiser = adamw(module.parameters(), lr=peak, weight_decay=0.0)
    for step in tqdm(range(steps), desc=description, leave=False):
        cosine_with_warmup(optimiser, step, steps, peak)
        loss = loss_of_batch()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


MOTION_WEIGHT = 10.0


def _video_reconstruction_loss(decoded: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
    motion = F.mse_loss(decoded.diff(dim=1), clips.diff(dim=1))
    return F.mse_loss(decoded, clips) + MOTION_WEIGHT * motion


def train_video_codec(data: WorldData, steps: int, generator: torch.Generator) -> DemoVideoCodec:
    """Pixel MSE plus ``MOTION_WEIGHT`` x the MSE of frame-to-frame differences.

    Why the motion term: the four frames of a latent group differ by a few pixels of motion, which
    plain MSE barely rewards, so a codec fitted on it alone decodes every group as one frozen frame
    (the video stutters at 4 fps and a bounce lands on the group's edge, up to two frames off: 43 ms
    of AV-sync error on perfect latents, and 23 of 59 contacts lost). With the term, round trips
    keep the motion: 29.3 -> 32.6 dB, 43 -> 12 ms, 58 of 59 contacts on 60 held-out clips (the
    world's own frames read 7.5 ms), at the same size and cost.
    """
    codec = DemoVideoCodec()

    def loss():
        clips = data.pixels[torch.randint(len(data.pixels), (4,), generator=generator)]
        z = codec.raw_encode(clips)
        return _video_reconstruction_loss(codec.raw_decode(z), clips) + 1e-4 * z.pow(2).mean()

    _fit(codec, loss, steps, "video codec", peak=2e-3)
    with torch.no_grad():
        _normalise(
            codec, torch.cat([codec.raw_encode(c[None]) for c in data.pixels[:64]]), (0, 2, 3, 4)
        )
    return codec.eval().requires_grad_(False)


def _crops(clips: torch.Tensor, count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random clips cut to [size, size] at one offset on the codec's 8 px grid."""
    offsets = torch.randint(0, (clips.shape[2] - size) // 8 + 1, (2,), generator=generator) * 8
    y, x = offsets.tolist()
    chosen = clips[torch.randint(len(clips), (count,), generator=generator)]
    return chosen[:, :, y : y + size, x : x + size]


def finetune_video_decoder(
    codec: DemoVideoCodec,
    data: WorldData,
    high_res: torch.Tensor,
    steps: int,
    generator: torch.Generator,
) -> DemoVideoCodec:
    """Fit the decoder alone on the 64 px clips and on 64 px crops of the same scenes rendered at
    the refiner's output size (``high_res``), half of each batch.

    Why: fitted on 64 px clips only, the codec's 128 px round trip read 30.4 dB, under bicubic
    upsampling of its own 64 px decode (30.0 dB), so the refiner could not beat bicubic at 1x fps.
    4,000 steps lift it to 33.7 dB (64 px: 30.9 -> 32.1) and the refiner to +0.35 dB over bicubic.
    Why the decoder alone: the encoder defines the latent space, and frozen it keeps every latent
    the model and the refiner were trained on (as Stable Diffusion's VAE decoder was fine-tuned),
    so neither needs retraining. A two-size fit of the whole codec moves the latents.
    """
    codec.requires_grad_(False)
    codec.decoder.requires_grad_(True)
    size = data.pixels.shape[2]

    def loss():
        clips = data.pixels[torch.randint(len(data.pixels), (2,), generator=generator)]
        clips = torch.cat([clips, _crops(high_res, 2, size, generator)])
        with torch.no_grad():
            z = codec.raw_encode(clips)
        return _video_reconstruction_loss(codec.raw_decode(z), clips)

    _fit(codec.decoder, loss, steps, "video decoder at two sizes", peak=1e-3)
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

    _fit(codec, loss, steps, "audio codec", peak=2e-3)
    with torch.no_grad():
        _normalise(codec, codec.raw_encode(data.audio[:64]), (0, 2))
    return codec.eval().requires_grad_(False)


def train_codecs(
    out_dir: Path,
    scenes: int = 128,
    video_steps: int = 2000,
    audio_steps: int = 3000,
    seed: int = 0,
    video_decoder_steps: int = 4000,
) -> tuple[Path, Path]:
    """Render ``scenes`` world clips from ``seed`` and fit each codec from its own seeded state,
    so either can be retrained alone and still reproduce the shipped file; then fine-tune the
    video decoder at both sizes (:func:`finetune_video_decoder`).

    Returns the written (video, audio) safetensors paths; their configs sit in the metadata.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = render_world(scenes, seed)
    torch.manual_seed(seed)
    video = train_video_codec(data, video_steps, torch.Generator().manual_seed(seed))
    high_res = render_world(scenes, seed, size=HIGH_SIZE).pixels
    video = finetune_video_decoder(
        video, data, high_res, video_decoder_steps, torch.Generator().manual_seed(seed)
    )
    torch.manual_seed(seed)
    audio = train_audio_codec(data, audio_steps, torch.Generator().manual_seed(seed))
    return (
        video.save(out_dir / "video_codec.safetensors"),
        audio.save(out_dir / "audio_codec.safetensors"),
    )
