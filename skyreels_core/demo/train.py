"""``python -m skyreels_core train-demo``: rebuild the bundled demo model from nothing.

Stages (each resumable: a finished stage's files are reused, the model stages restart from their
last checkpoints): render the world, train the video and audio codecs, build the tiny Qwen-VL text
encoder, train the dual-stream model on the multi-task mix (then, with --keyframe-steps, on the same
mix with the Sampler's high-res keyframes added), write the manifest.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from tqdm.auto import tqdm

from ..config import get_preset
from ..encoder import MLLMEncoder, create_tiny_encoder_folder
from ..errors import InputError
from ..loading import save_model
from ..mmdit import DualStreamMMDiT
from ..paths import write_json
from ..runtime import CompiledSteps, check_toolchain, compile_blocks, installed
from ..training import (
    Batch,
    adamw,
    check_counts,
    cosine_with_warmup,
    load_checkpoint,
    save_checkpoint,
    start_run,
    training_loss,
)
from ..types import TextEncoding
from .bundle import LORA_FILE, WEIGHTS_DIR, file_digest
from .codecs import DemoAudioCodec, DemoVideoCodec
from .dataset import FRAMES, HIGH_SIZE, WorldData, render_world, training_seeds, world_latents
from .train_codecs import train_codecs
from .world import COLOURS, MOTIONS, SHAPES

MODEL_STEPS = 12_000  # the shipped model's schedule
KEYFRAME_LR = 5e-4
"""The keyframe stage's peak rate (--keyframe-steps, off in the shipped model): the low-res clip +
high-res keyframes pass (DESIGN §4) learned on the model stage's weights, with its own batch
generator (seeded from --seed), so its result depends on the model stage's weights alone."""
KEYFRAME_CHECKPOINT = "keyframes_training.safetensors"
COMPILE_SWITCH = ("--compile", "pass --no-compile")  # named where torch.compile cannot build


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


def encode_world(
    data: WorldData, video_codec: DemoVideoCodec, audio_codec: DemoAudioCodec, encoder: MLLMEncoder
) -> Batch:
    """Every rendered clip with its latents and caption encoding, computed once before training;
    the conditions that follow from a clip are encoded on their first draw and kept (at most six a
    clip, 20 KB each at the demo's size)."""
    with torch.no_grad():
        video_latents = torch.cat([video_codec.encode(clip[None]) for clip in data.pixels])
        return Batch(
            data.pixels,
            video_latents,
            audio_codec.encode(data.audio),
            encode_captions(encoder, data.captions),
            encoded_conditions={},
        )


def draw_batch(world: Batch, size: int, generator: torch.Generator) -> Batch:
    """``size`` clips of ``world`` drawn with replacement, with their prompts (and high-res
    latents, where the world has them)."""
    index = torch.randint(len(world.pixels), (size,), generator=generator)
    text = TextEncoding(world.text.features[index], world.text.mask[index])
    high = None if world.keyframe_latents is None else world.keyframe_latents[index]
    return Batch(
        world.pixels[index], world.video_latents[index], world.audio_latents[index], text, high,
        clips=index, encoded_conditions=world.encoded_conditions,
    )  # fmt: skip


def model_step(
    model: DualStreamMMDiT,
    optimiser: torch.optim.Optimizer,
    video_codec: DemoVideoCodec,
    world: Batch,
    step: int,
    steps: int,
    batch: int,
    generator: torch.Generator,
    lr: float = 1e-3,
) -> tuple[float, str]:
    """One optimiser step of the multi-task mix on ``batch`` clips drawn from ``world``, at the
    learning rate of ``step`` in a ``steps``-long schedule peaking at ``lr``; returns the loss and
    the task drawn."""
    cosine_with_warmup(optimiser, step, steps, lr, warmup=200)
    loss, task = training_loss(model, video_codec, draw_batch(world, batch, generator), generator)
    optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()
    return loss.item(), task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the bundle is written")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scenes", type=int, default=1024, help="training clips rendered from the world"
    )
    parser.add_argument(
        "--codec-scenes", type=int, default=128, help="clips the codecs are fitted on"
    )
    parser.add_argument("--video-codec-steps", type=int, default=2000)
    parser.add_argument("--audio-codec-steps", type=int, default=3000)
    parser.add_argument(
        "--video-decoder-steps",
        type=int,
        default=4000,
        help="decoder-only fine-tune at 64 and 128 px after the video codec fit",
    )
    parser.add_argument("--steps", type=int, default=MODEL_STEPS, help="model training steps")
    parser.add_argument(
        "--keyframe-steps",
        type=int,
        default=0,
        help="steps of a keyframe stage after the model stage: the multi-task mix with the "
        "Sampler's high-res keyframes in half the steps (0, the shipped model: none; 3000 measured "
        "in bench/README.md)",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the model's blocks through torch.compile: about a minute compiling, then model "
        "steps about 7 %% faster on 2 CPU cores (needs a C++ compiler; --no-compile trains eagerly)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop model training this long after the start (default: run every step); "
        "the same command resumes it",
    )
    parser.add_argument("--checkpoint-every", type=int, default=250)


def check_arguments(args: argparse.Namespace) -> None:
    """The flags that cannot train, refused before --out is made and the codecs' minutes (with
    --compile, a host that cannot compile too)."""
    check_counts(
        {"--steps": args.steps, "--batch": args.batch, "--checkpoint-every": args.checkpoint_every,
         "--codec-scenes": args.codec_scenes}
    )  # fmt: skip
    if args.keyframe_steps < 0:
        raise InputError("--keyframe-steps", f"{args.keyframe_steps}", "give 0 or more")
    training_seeds(args.scenes, args.seed)
    if args.compile:
        check_toolchain(*COMPILE_SWITCH)


def _reused_parts(out: Path, video_path: Path, audio_path: Path, encoder_dir: Path) -> list[str]:
    """The parts an earlier run left in --out, which this run keeps (the bundled folder, the
    default --out, holds them all): said at the start, since the codec flags then do nothing,
    and listed in the manifest, whose command did not make them."""
    reused = []
    if video_path.exists() and audio_path.exists():
        reused += [video_path.name, audio_path.name]
    if (encoder_dir / "config.json").exists():
        reused.append(encoder_dir.name)
    if reused:
        flags = " (the codec flags apply only to new codecs)" if video_path.name in reused else ""
        print(
            f"train-demo: keeping {', '.join(reused)} from an earlier run in {out}; delete "
            f"them, or use a new --out, to make them afresh{flags}"
        )
    return reused


def _warn_of_stale_lora(lora: Path, model_path: Path) -> None:
    """A LoRA fits the model it was trained on: one left in --out (the bundled LoRA, under the
    default --out) no longer fits the model just written."""
    if not lora.exists():
        return
    with safe_open(lora, framework="pt") as handle:
        base = (handle.metadata() or {}).get("base_model_sha256")
    if base != file_digest(model_path):
        print(
            f"{lora} was trained on another model: run `python -m skyreels_core train-demo-lora "
            f"--out {lora.parent}` to fit it to this one"
        )


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    generator, out, started = start_run(args.seed, args.out)
    data = render_world(args.scenes, args.seed)

    video_path, audio_path = out / "video_codec.safetensors", out / "audio_codec.safetensors"
    encoder_dir = out / "text_encoder"
    reused = _reused_parts(out, video_path, audio_path, encoder_dir)
    if video_path.name not in reused:
        # Forked so the model's initialisation draws the same numbers whether or not the codecs
        # (or the text encoder, below) had to be made first: a resumed or reusing run reproduces
        # a fresh one.
        with torch.random.fork_rng():
            train_codecs(
                out,
                args.codec_scenes,
                args.video_codec_steps,
                args.audio_codec_steps,
                args.seed,
                args.video_decoder_steps,
            )
    video_codec, audio_codec = DemoVideoCodec.load(video_path), DemoAudioCodec.load(audio_path)

    if encoder_dir.name not in reused:
        with torch.random.fork_rng():  # it seeds and draws from torch's generator
            create_tiny_encoder_folder(
                encoder_dir,
                hidden_size=get_preset("demo").text_dim,
                vocab_texts=caption_vocabulary(),
                seed=args.seed,
            )
    encoder = MLLMEncoder.from_folder(encoder_dir, dtype=torch.float32)

    world = encode_world(data, video_codec, audio_codec, encoder)

    model = DualStreamMMDiT(get_preset("demo")).train()
    model_stage = Stage("demo model", model, generator, out / "model_training.safetensors",
                        args.steps, 1e-3)  # fmt: skip
    if model_stage.step < args.steps:  # the keyframe stage of a shorter model stage starts again
        (out / KEYFRAME_CHECKPOINT).unlink(missing_ok=True)
    deadline = math.inf if args.max_minutes is None else started + args.max_minutes * 60
    with installed(compiled_blocks(model, args.compile)):
        step = model_stage.run(video_codec, world, args, deadline)
        keyframe_step = 0
        if step == args.steps and args.keyframe_steps:
            world.keyframe_latents = world_latents(video_codec, args.scenes, args.seed, HIGH_SIZE)
            keyframes = torch.Generator().manual_seed(args.seed + 1)
            keyframe_stage = Stage("keyframe stage", model, keyframes, out / KEYFRAME_CHECKPOINT,
                                   args.keyframe_steps, KEYFRAME_LR)  # fmt: skip
            keyframe_step = keyframe_stage.run(video_codec, world, args, deadline)
    model_path = save_model(
        model.eval(),
        out / "model.safetensors",
        {"training_steps": str(step), "keyframe_steps": str(keyframe_step)},
    )
    manifest = {
        "preset": "demo",
        "command": (
            f"python -m skyreels_core train-demo --seed {args.seed} --scenes {args.scenes} "
            f"--codec-scenes {args.codec_scenes} --video-codec-steps {args.video_codec_steps} "
            f"--audio-codec-steps {args.audio_codec_steps} "
            f"--video-decoder-steps {args.video_decoder_steps} --steps {args.steps} "
            f"--keyframe-steps {args.keyframe_steps} --batch {args.batch}"
            + ("" if args.compile else " --no-compile")
            + ("" if args.max_minutes is None else f" --max-minutes {args.max_minutes:g}")
        ),
        "seed": args.seed,
        **({"reused": reused} if reused else {}),
        "training_steps": step,
        "keyframe_steps": keyframe_step,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "audio_rate": {
            "sample_rate": audio_codec.sample_rate,
            "samples_per_token": audio_codec.samples_per_token,
        },
        "fps": 16.0,
        "frames": FRAMES,
        "size": 64,
        "sha256": {
            p.name: file_digest(p) for p in (model_path, video_path, audio_path, encoder_dir)
        },
    }
    write_json(out / "manifest.json", manifest, "--out")
    print(f"wrote the demo bundle to {out} ({step} + {keyframe_step} keyframe model steps)")
    _warn_of_stale_lora(out / LORA_FILE, model_path)
    if step < args.steps or keyframe_step < args.keyframe_steps:
        print("stopped by --max-minutes before the last step: run it again to resume")
    return 0


def compiled_blocks(model: DualStreamMMDiT, compile: bool) -> CompiledSteps:
    """The model's blocks compiled for training (``--compile``), or none: the same math with
    inductor's fused kernels, so the losses agree with eager steps to rounding while a step takes
    about 7 % less time on 2 CPU cores (``bench --only train``: 0.159 against 0.171 s a step),
    worth the minute the first steps spend compiling (a reference's longer sequence compiles once
    more, in seconds)."""
    if not compile:
        return {}
    print("train-demo: compiling the model's blocks; the first step takes about a minute "
          "(--no-compile trains without)")  # fmt: skip
    return compile_blocks(model, *COMPILE_SWITCH)


@dataclass
class Stage:
    """One of train-demo's stages on ``model``: its own optimiser, batch ``generator`` and
    ``checkpoint``, from which it resumes (at :attr:`step`), and a cosine schedule of ``steps``
    peaking at ``lr``."""

    name: str
    model: DualStreamMMDiT
    generator: torch.Generator
    checkpoint: Path
    steps: int
    lr: float
    optimiser: torch.optim.Optimizer = field(init=False)
    step: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.optimiser = adamw(self.model.parameters(), lr=self.lr, weight_decay=0.01)
        if self.checkpoint.exists():
            self.step = load_checkpoint(self.checkpoint, self.model, self.optimiser, self.generator)

    def run(
        self, video_codec: DemoVideoCodec, world: Batch, args: argparse.Namespace, deadline: float
    ) -> int:
        """The steps left, saved every --checkpoint-every steps and where ``deadline`` stops
        them; returns the step reached."""
        with tqdm(total=self.steps, initial=self.step, desc=self.name) as bar:
            while self.step < self.steps and time.monotonic() < deadline:
                loss, task = model_step(self.model, self.optimiser, video_codec, world, self.step,
                                        self.steps, args.batch, self.generator, self.lr)  # fmt: skip
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", task=task)
                if self.step % args.checkpoint_every == 0:
                    self.save()
        self.save()
        return self.step

    def save(self) -> None:
        save_checkpoint(self.checkpoint, self.model, self.optimiser, self.step, self.generator)
