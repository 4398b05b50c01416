"""``python -m skyreels_core demo``: render a clip with sound on the bundled demo model.

Without --image/--video the task's inputs come from a scene of the demo world drawn from --seed,
so every task runs out of the box.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..decoding import take_frames
from ..errors import InputError
from ..joining import DEFAULT_OVERLAP
from ..paths import output_file
from ..refiner import RefinerSettings, load_refiner, refine_take
from ..render import (
    EXTEND_KEPT_FRAMES,
    TASKS,
    Pipeline,
    RenderRequest,
    check_request,
    default_keyframes,
    render,
    render_longer,
)
from ..sampling import MAX_SEED, MAX_STEPS, SamplerHooks
from ..shapes import MAX_FRAMES, MAX_JOINED_FRAMES, latent_frame_count, parse_frame_indices
from . import bundle
from .world import FPS as WORLD_FPS
from .world import render_scene, sample_scene_spec

DEFAULT_PROMPT = "a red circle bounces on the floor"
REFINE_SCALE = REFINE_FPS_FACTOR = 2  # what the bundled refiner learned


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # A string, not a Path: Path drops the "/" that shows a folder was meant.
    parser.add_argument("--out", default="demo.mp4", help="where to write the MP4")
    parser.add_argument("--task", choices=TASKS, default="t2av")
    parser.add_argument(
        "--prompt",
        help="default: the demo scene's own caption where the task's inputs come from one, "
        f"else {DEFAULT_PROMPT!r}",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--frames",
        type=int,
        help="clip length, 4k+1 (default 33); --task v2a: any count (default: the whole clip)",
    )
    parser.add_argument(
        "--total-frames",
        type=int,
        help="continue the render to this many frames in --frames windows (the demo model "
        "learned 33), each starting with the last 5 frames so far and joined on",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--cache-threshold",
        type=float,
        default=0.0,
        help="step cache: skip model calls while the predicted change stays below this "
        "(0 = off; 0.2 ran 13 of 20 calls with the same colour, shape, pitch and sync)",
    )
    parser.add_argument("--image", type=Path, help="first frame (i2av) or reference image (ref)")
    parser.add_argument(
        "--video",
        type=Path,
        help="source clip (extend, interpolate, keyframes, edit, v2a); rendered at its own fps",
    )
    parser.add_argument("--mask", type=Path, help="edit mask image, white = change")
    parser.add_argument(
        "--keyframes",
        help='frame indices for --task keyframes, e.g. "0, 16, 32" (default: first, middle, last)',
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="another demo-preset checkpoint, with the codecs train-demo wrote beside it "
        "(default: bundled)",
    )
    parser.add_argument(
        "--refine",
        action="store_true",
        help=f"then refine the clip with the bundled refiner: {REFINE_SCALE}x the size at "
        f"{REFINE_FPS_FACTOR}x the fps (64 px at 16 fps: 128 px at 32 fps), the sound kept",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _read_image(path: Path, input_name: str) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
            return pixels.view(image.height, image.width, 3).float().div(255)[None]
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(
            input_name, f"cannot read {path} ({error})", "pass a PNG or JPEG file"
        ) from None


def _world_clip(args: argparse.Namespace) -> torch.Tensor:
    """A scene of the demo world for a task's inputs; it also gives --prompt its default (the
    scene's caption), so the sound's pitch and the clip's colour agree."""
    frames = args.frames or 33
    if args.task == "extend":  # it keeps a clip's first 9 frames: --frames alone decides
        frames = max(frames, EXTEND_KEPT_FRAMES)  # (a scene's start is the same at any length)
    scene = render_scene(sample_scene_spec(args.seed + 1), frames=frames)
    if args.prompt is None:
        args.prompt = scene.caption
    return scene.frames


def _source(args: argparse.Namespace) -> tuple[torch.Tensor | None, float]:
    """The task's pixels and the fps to render at: a --video clip's own (its kept frames keep
    their timing, and the sound lasts as long as they do), else the demo world's 16."""
    if args.video is not None:
        from ..av_io import read_video

        # Only the frames the render takes: a long clip decoded whole held gigabytes of floats.
        frames, fps, _ = read_video(args.video, max_frames=args.frames)
        return frames, fps
    if args.image is not None:
        return _read_image(args.image, "--image"), WORLD_FPS
    if args.task == "t2av":
        return None, WORLD_FPS
    return _world_clip(args), WORLD_FPS


def _mask(args: argparse.Namespace, source: torch.Tensor | None) -> torch.Tensor | None:
    if args.task != "edit":
        return None
    if args.mask is not None:
        return _read_image(args.mask, "--mask")[..., 0]
    mask = torch.zeros(1, *source.shape[1:3])
    height, width = mask.shape[1:]
    mask[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
    return mask


def _keyframes(args: argparse.Namespace) -> list[int]:
    """The frames --task keyframes keeps; refused for other tasks, where they would be ignored."""
    if args.task != "keyframes":
        if args.keyframes is not None:
            raise InputError(
                "--keyframes", f"given for --task {args.task}", "add --task keyframes or drop it"
            )
        return []
    if args.keyframes is None:
        return default_keyframes(args.frames)
    return parse_frame_indices(args.keyframes, args.frames, "--keyframes")


def _check_pixel_inputs(args: argparse.Namespace) -> None:
    """--image, --video and --mask only where the task reads them: an ignored one would still
    set the render's size (a t2av clip at the image's size), so, like --keyframes, it is refused."""
    readers = {
        "--image": ("i2av", "ref"),
        "--video": ("extend", "interpolate", "keyframes", "edit", "v2a"),
    }
    for flag, value in (("--image", args.image), ("--video", args.video)):
        if value is not None and args.task not in readers[flag]:
            *most, last = readers[flag]
            tasks = f"{', '.join(most)} or {last}"
            raise InputError(
                flag, f"given for --task {args.task}", f"add --task {tasks}, or drop it"
            )
    if args.mask is not None and args.task != "edit":
        raise InputError("--mask", f"given for --task {args.task}", "add --task edit or drop it")


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse what would fail, or be ignored, only after the model loaded; fills --frames's
    default."""
    if not 0 <= args.seed <= MAX_SEED:
        raise InputError("--seed", f"{args.seed}", f"use 0 to {MAX_SEED}")
    if not 1 <= args.steps <= MAX_STEPS:
        raise InputError("--steps", f"{args.steps}", f"use 1 to {MAX_STEPS}")
    _check_pixel_inputs(args)
    if args.task != "v2a":  # v2a keeps the clip as it is, so any length will do
        args.frames = 33 if args.frames is None else args.frames
        latent_frame_count(args.frames, input_name="--frames")
    elif args.frames is not None and args.frames < 1:
        raise InputError("--frames", f"{args.frames}", "give a positive count or leave it out")
    limits = (("--frames", args.frames, MAX_FRAMES), ("--total-frames", args.total_frames, MAX_JOINED_FRAMES))  # fmt: skip
    for flag, count, limit in limits:
        if count is not None and count > limit:
            raise InputError(flag, f"{count}", f"use at most {limit} (the nodes' limit)")
    if args.total_frames is not None:
        if args.task == "v2a":
            raise InputError(
                "--total-frames", "given for --task v2a, which keeps its clip", "drop it"
            )
        if args.frames <= DEFAULT_OVERLAP:
            raise InputError(
                "--frames",
                f"{args.frames}-frame windows, each starting with the last {DEFAULT_OVERLAP} "
                "frames so far, add nothing",
                f"use windows of at least {DEFAULT_OVERLAP + 4} frames (the demo model learned 33)",
            )
        if args.total_frames <= args.frames:
            raise InputError(
                "--total-frames",
                f"{args.total_frames} frames, not more than --frames {args.frames}",
                "ask for more frames than one window has, or leave it out",
            )
    if not 0 <= args.cache_threshold < math.inf:  # nan and inf are no threshold
        raise InputError("--cache-threshold", f"{args.cache_threshold}", "use 0 (off) or more")
    _check_refine(args)


def _check_refine(args: argparse.Namespace) -> None:
    """--refine only where there is one take the bundled refiner can read: its latents are the
    bundled video codec's, which a model train-demo wrote with codecs of its own does not share."""
    if not args.refine:
        return
    if args.task == "v2a":
        raise InputError(
            "--refine", "given for --task v2a, which keeps its clip as given", "drop it"
        )
    if args.total_frames is not None:
        raise InputError(
            "--refine",
            "given with --total-frames: the refiner takes one window's take",
            "drop one of them",
        )
    if args.model is not None:
        codec = bundle.pipeline_files(args.model, "--model")[0]
        if codec.read_bytes() != (bundle.WEIGHTS_DIR / codec.name).read_bytes():
            raise InputError(
                "--refine",
                f"the bundled refiner reads the bundled video codec's latents, and {args.model} "
                "was trained with a codec of its own",
                "drop --refine, or --model",
            )


@contextmanager
def _notes_shown() -> Iterator[None]:
    """The library's notes (the steps the step cache skipped, a window's part of a story) on
    stderr while it renders, as ComfyUI's console shows them to an artist: Python shows a
    script only warnings unless it sets up logging. Shown here only, so a caller's own logging
    does not print them twice."""
    logger = logging.getLogger("skyreels_core")
    handler, level, propagate = logging.StreamHandler(), logger.level, logger.propagate
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..av_io import write_mp4

    _check_arguments(args)
    out = output_file(
        args.out, "--out", "demo.mp4", refuse_existing=not args.overwrite, suffix=".mp4"
    )
    source, fps = _source(args)
    if args.frames is None:  # v2a: the whole clip
        args.frames = source.shape[0]
    if args.prompt is None:
        args.prompt = DEFAULT_PROMPT
    # The demo model works at 64 px; a task that keeps pixels works at the source's size.
    height, width = (64, 64) if source is None or args.task == "v2a" else source.shape[1:3]
    request = RenderRequest(
        task=args.task,
        prompt=args.prompt,
        seed=args.seed,
        frames=args.frames,
        height=height,
        width=width,
        fps=fps,
        source=source,
        mask=_mask(args, source),
        keyframes=_keyframes(args),
        steps=args.steps,
        cache_threshold=args.cache_threshold,
    )
    check_request(request)
    pipeline = Pipeline.load(args.model)
    with _notes_shown(), tqdm(total=args.steps, desc=f"demo {args.task}") as bar:
        hooks = SamplerHooks(progress=lambda step, total: bar.update(step - bar.n))
        frames, audio, take = render(pipeline, request, hooks)
    fps = request.fps
    if args.refine:
        refined = refine_take(
            load_refiner(bundle.refiner_path()),
            take,
            RefinerSettings(scale=REFINE_SCALE, fps_factor=REFINE_FPS_FACTOR),
        )
        frames, fps = take_frames(refined, pipeline.video_codec)[0], refined.fps
    if args.total_frames is not None:
        windows = -(-(args.total_frames - args.frames) // (args.frames - DEFAULT_OVERLAP))
        with _notes_shown(), tqdm(total=args.steps * windows, desc="demo windows") as bar:
            hooks = SamplerHooks(progress=lambda step, total: bar.update(1))
            frames, audio = render_longer(
                pipeline, request, frames, audio, args.total_frames, hooks
            )
    if args.task == "v2a":  # the clip as given, not its trip through the video codec
        frames = source[: args.frames]
    metadata = {
        "prompt": args.prompt,
        "seed": str(args.seed),
        "task": args.task,
        "steps": str(args.steps),
        "cache_threshold": str(args.cache_threshold),
        "model": str(args.model or "bundled demo"),
    }
    if args.total_frames is not None:
        metadata["total_frames"] = str(args.total_frames)
    if request.keyframes:
        metadata["keyframes"] = ", ".join(map(str, request.keyframes))
    if args.refine:
        metadata["refined"] = f"{REFINE_SCALE}x size, {REFINE_FPS_FACTOR}x fps"
    path = write_mp4(out, frames, fps, audio, metadata, overwrite=args.overwrite)
    count = frames.shape[0]
    print(f"wrote {path} ({count} frame{'s' * (count != 1)} at {fps:g} fps with sound)")
    return 0
