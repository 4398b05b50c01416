"""The bundled demo model: where its files live and how to open them.

Real SkyReels-V4 weights are not public, so the pack ships a tiny model trained by
``python -m skyreels_core train-demo`` (DESIGN §5). Loaders list it first as ``BUNDLED``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError
from ..runtime import MMAUDIO_44K, AudioRate
from ..shapes import SPATIAL_STRIDE, pixel_frame_count
from ..types import VideoCondition
from .dataset import FRAMES, HIGH_SIZE, LOW_SIZE

BUNDLED = "skyreels-v4-demo (bundled)"
BUNDLED_LORA = "demo palette shift (bundled)"  # train-demo-lora: red as green, green as blue, ...
LORA_FILE = "lora_palette_shift.safetensors"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MMAUDIO_RATE = MMAUDIO_44K
PRESET, REFINER_PRESET = "demo", "demo-refiner"
# px: train-demo's clips (HIGH_SIZE: the codecs' and refiner's only)
TRAINED_LONGEST_SIDE = LOW_SIZE
REFINER_SCALE = HIGH_SIZE // LOW_SIZE  # train-demo-refiner's only scale


def refiner_scale_advice(preset: str, scale: int) -> str | None:
    """What to do instead when the demo refiner is asked for a scale it was not trained for: on
    four held-out scenes (evaluate_refiner.refiner_psnr, 1x fps: refined / bicubic) it reads
    1x 23.5 / 32.1 dB, 2x 31.5 / 30.9, 3x 27.2 / 30.5, 4x 26.2 / 30.3. None otherwise."""
    if preset != REFINER_PRESET or scale == REFINER_SCALE:
        return None
    return (
        f"the demo refiner was trained for {REFINER_SCALE}x only; at {scale}x it comes out worse "
        f"than plain bicubic upscaling. Use scale {REFINER_SCALE}"
    )


def sampled_keyframes_advice(preset: str) -> str | None:
    """What to do instead when the demo refiner lays in a take's own high-res keyframes: the
    takes it reads are the demo model's, which never learned them (:func:`render_advice`)."""
    if preset != REFINER_PRESET:
        return None
    return (
        "the take's high-res keyframes come from the demo model, which never learned them: they "
        "keep the clip's colours, not its shapes. Turn reinject_keyframes off for a smoother clip"
    )


def render_advice(preset: str, condition: VideoCondition, keyframes: bool = False) -> str | None:
    """What to do instead when the demo model is asked for clips unlike the ones it learned,
    else None. At 128 px its renders are noise (0 of 4 prompts kept colour and shape, 4 of 4 at
    64 px); past 33 frames the sound misses the motion (12 held-out prompts at 81 frames: 14 of
    58 contacts clicked, AV sync 86 ms; at 33 frames 13 of 19, 39 ms). Its training never showed it
    high-res ``keyframes`` beside a clip (train-demo's --keyframe-steps, off for it): they keep
    its colours, not its shapes (bench part ``keyframes``)."""
    if preset != PRESET:
        return None
    notes = []
    sound_only = bool(condition.known_mask.all())  # Video to Audio, Keep Video: no frame is drawn
    height, width = (SPATIAL_STRIDE * n for n in condition.latents.shape[-2:])
    if max(height, width) != TRAINED_LONGEST_SIDE:
        fix = (
            f"Set Mask: Video to Audio's longest_side to {TRAINED_LONGEST_SIDE} (the saved clip "
            f"keeps its own size); for Keep Video, render the clip at {TRAINED_LONGEST_SIDE} px"
            if sound_only
            else f"Render at {TRAINED_LONGEST_SIDE} px (longest side) and refine it (workflow "
            "low_res_keyframes_refiner)"
        )
        notes.append(
            f"the demo model was trained on {TRAINED_LONGEST_SIDE} px clips; at {width}x{height} "
            f"px expect {'the sound to miss the motion' if sound_only else 'noise'}. {fix}"
        )
    frames = pixel_frame_count(condition.num_latent_frames)
    if frames > FRAMES:
        fix = (
            f"Give it the clip in parts of {FRAMES} frames"
            if sound_only
            else f"Render {FRAMES}-frame windows and join them (workflow long_video)"
        )
        notes.append(
            f"the demo model was trained on {FRAMES}-frame clips; at {frames} frames expect the "
            f"sound to miss most contacts. {fix}"
        )
    if keyframes:
        notes.append(
            "the demo model never learned high-res keyframes: they keep the clip's colours, not "
            "its shapes (refined end frames 24 dB from the clip's, 32 dB without them). Leave "
            "keyframe_indices empty; Refine then upscales the clip itself"
        )
    return "; ".join(notes) or None


def _existing(path: Path) -> Path:
    if not path.exists():
        raise CheckpointError(
            "demo model",
            f"{path.name} is missing from {path.parent}",
            "run `python -m skyreels_core train-demo` to rebuild the bundled demo files",
        )
    return path


def manifest() -> dict:
    return json.loads(_existing(WEIGHTS_DIR / "manifest.json").read_text())


def model_path() -> Path:
    return _existing(WEIGHTS_DIR / "model.safetensors")


def refiner_path() -> Path:
    return _existing(WEIGHTS_DIR / "refiner.safetensors")


def lora_path() -> Path:
    return _existing(WEIGHTS_DIR / LORA_FILE)


def text_encoder_dir() -> Path:
    return _existing(WEIGHTS_DIR / "text_encoder")


PIPELINE_FILES = ("video_codec.safetensors", "audio_codec.safetensors", "text_encoder")
"""What train-demo writes beside its model: the codecs and encoder the model was trained with."""


def pipeline_files(model: Path, flag: str) -> tuple[Path, ...]:
    """The :data:`PIPELINE_FILES` of ``model``: those train-demo wrote beside it, or the bundled
    ones for a model file alone in its folder. Some without the others is a train-demo run that
    has not finished: named as ``flag``'s."""
    folder = Path(model).parent
    missing = [name for name in PIPELINE_FILES if not (folder / name).exists()]
    if len(missing) == len(PIPELINE_FILES):
        return tuple(_existing(WEIGHTS_DIR / name) for name in PIPELINE_FILES)
    if missing:
        raise InputError(
            flag,
            f"{folder} holds a {Path(model).name} without its {', '.join(missing)}",
            f"finish its train-demo run (the same command resumes it), or use another {flag}",
        )
    return tuple(folder / name for name in PIPELINE_FILES)


def video_codec(device: torch.device | str = "cpu"):
    from .codecs import DemoVideoCodec

    return DemoVideoCodec.load(_existing(WEIGHTS_DIR / "video_codec.safetensors"), device=device)


def audio_codec(device: torch.device | str = "cpu"):
    from .codecs import DemoAudioCodec

    return DemoAudioCodec.load(_existing(WEIGHTS_DIR / "audio_codec.safetensors"), device=device)


def audio_rate() -> AudioRate:
    """The demo audio codec's rate, read from the manifest so the model file stays self-describing."""
    rate = manifest()["audio_rate"]
    return AudioRate(sample_rate=rate["sample_rate"], samples_per_token=rate["samples_per_token"])


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes, in sorted order)."""
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(path.rglob("*")):
            if file.is_file():
                digest.update(file.name.encode())
                digest.update(file.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()
