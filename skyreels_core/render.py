"""One render with a model, its codecs and its encoder, for scripts, the ``demo`` command and
the eval: the bundled demo files (:meth:`Pipeline.load`) or real weights (:meth:`Pipeline.from_files`).

The same steps an artist wires in ComfyUI (encode the prompt, build the task's condition, sample
video and audio together, decode both), as one function scripts can call.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import masks
from .codecs import latent_audio_tokens
from .decoding import take_frames, take_sound
from .demo import bundle
from .errors import InputError
from .joining import DEFAULT_OVERLAP, extend_to_length, window_seed
from .references import image_references
from .runtime import LoadedModel, resolve_attention
from .sampling import SamplerHooks, SamplerSettings, sample
from .shapes import TEMPORAL_STRIDE, frame_rate, frames_in_clip, whole_groups
from .types import References, VideoCondition

log = logging.getLogger(__name__)

TASKS = ("t2av", "i2av", "extend", "interpolate", "keyframes", "edit", "v2a", "ref")
EXTEND_KEPT_FRAMES = 9  # the extend task keeps a clip's first 9 frames, all of a shorter one


@dataclass
class Pipeline:
    """A model with its codecs and encoder, loaded once and reused across renders."""

    model: torch.nn.Module
    video_codec: object
    audio_codec: object | None  # None only beside a video-only model (Wan 2.1)
    encoder: object
    # How the model computes on ``device`` (from_files: block swap, compiled blocks); None: where
    # it was loaded, as it is.
    runtime: LoadedModel | None = None
    device: torch.device | str = "cpu"

    @classmethod
    def load(cls, model_path: Path | None = None, device: torch.device | str = "cpu") -> Pipeline:
        """The bundled pipeline, or ``model_path``'s: a model train-demo wrote into a folder of its
        own decodes with the codecs it was trained with, which lie beside it (a model file alone
        takes the bundled ones): another codec would read its latents as noise."""
        from .demo.codecs import DemoAudioCodec, DemoVideoCodec
        from .encoder import MLLMEncoder
        from .loading import load_model

        device = _reachable(device)
        model_path = Path(model_path) if model_path else bundle.model_path()
        video, audio, encoder = bundle.pipeline_files(model_path, "--model")
        return cls(
            load_model(model_path, dtype=torch.float32, device=device).eval(),
            DemoVideoCodec.load(video, device=device),
            DemoAudioCodec.load(audio, device=device),
            MLLMEncoder.from_folder(encoder, dtype=torch.float32, device=device),
            device=device,
        )

    @classmethod
    def from_files(
        cls,
        model: str | Path,
        video_vae: str | Path,
        audio_vae: str | Path | None,
        encoder: str | Path,
        *,
        vocoder: str | Path | None = None,
        tokenizer: str | Path | None = None,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
        fp8: bool = False,
        block_swap: int = 0,
        attention: str = "sdpa",
        compile: bool = False,
    ) -> Pipeline:
        """Real weights, in the files the loader nodes read (README, "Model files"): a
        SkyReels-V4 or Wan 2.1 checkpoint (its first shard for a sharded one), the Wan 2.1 VAE,
        MMAudio's VAE with its vocoder inside or in ``vocoder`` (None for a Wan 2.1 checkpoint,
        which has no audio stream and renders no sound), and a Qwen-VL model folder or ComfyUI's
        single Qwen2.5-VL file read with the Qwen2.5 ``tokenizer`` folder ComfyUI ships. Errors
        name these arguments. The codecs and encoder rest in CPU memory and visit ``device`` per
        use, as the loader nodes' ``offload`` has them, so the GPU holds the model and one of them
        at a time. The rest are the Load Model node's options: ``fp8`` keeps the model's block
        weights in 8 bits (:func:`load_model`), about half of bf16's; ``block_swap`` streams that
        many of its layers from CPU memory, for a GPU that holds fewer; ``attention`` picks the
        kernel (``auto``: the fastest installed); ``compile`` runs the blocks through
        ``torch.compile``."""
        from .codecs.wan_vae import WanVideoCodec
        from .loading import load_model

        device = _reachable(device)
        given = {"model": model, "video_vae": video_vae, "audio_vae": audio_vae,
                 "encoder": encoder, "vocoder": vocoder, "tokenizer": tokenizer}  # fmt: skip
        for name, path in given.items():  # all checked before gigabytes of weights load
            if path is not None and not Path(path).exists():
                raise InputError(name, f"{path} does not exist", "check the path")
        if tokenizer is None and Path(encoder).is_file():
            raise InputError(
                "tokenizer",
                f"{Path(encoder).name} is a single file, which carries no tokenizer",
                "pass tokenizer=ComfyUI's comfy/text_encoders/qwen25_tokenizer folder, or give "
                "encoder the model's folder",
            )
        resting = torch.device("cpu") if block_swap else device
        module = load_model(model, dtype=dtype, device=resting, input_name="model", fp8=fp8)
        module.attention_backend = resolve_attention(attention, device, dtype)
        runtime = LoadedModel(
            module, module.config.name, None, resting, block_swap=block_swap, compile=compile
        )
        options = {"dtype": dtype, "device": device, "offload_device": "cpu"}
        return cls(
            module,
            WanVideoCodec.from_single_file(video_vae, **options, input_name="video_vae"),
            _audio_codec(module, audio_vae, vocoder, options),
            _encoder(encoder, tokenizer, options),
            runtime,
            device,
        )

    def model_on_device(self) -> AbstractContextManager[torch.nn.Module]:
        """The model ready to compute on ``device`` for the block: its swapped layers streaming
        there and its compiled blocks installed, both undone after."""
        return nullcontext(self.model) if self.runtime is None else self.runtime.on(self.device)


def _reachable(device: torch.device | str) -> torch.device:
    """``device`` as torch names it, refused by name where this torch cannot reach it: a GPU
    asked of a CPU build (or one past the count) failed only deep in the first weight copy."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(
            "device", f"{device!r} is not a device", "use 'cuda', 'cuda:1', 'mps' or 'cpu'"
        ) from None
    count = {
        "cpu": 1,
        "cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "mps": int(torch.backends.mps.is_available()),
    }.get(device.type, 1)  # another accelerator: left to torch
    if (device.index or 0) >= count:
        raise InputError(
            "device",
            f"{device}, where this torch ({torch.__version__}) sees {count} such device(s)",
            "pass a device it sees ('cpu' always), or install the torch build for your GPU",
        )
    return device


def _audio_codec(model: torch.nn.Module, audio_vae, vocoder, options: dict):
    """MMAudio for a model with an audio stream; none for a video-only one, which has no use for it."""
    from .codecs.mmaudio import MMAudioCodec

    if audio_vae is None:
        if model.config.has_audio:
            raise InputError(
                "audio_vae",
                f"the {model.config.name} model has an audio stream and no audio VAE was given",
                "pass MMAudio's VAE (models/audio_vae/mmaudio_vae_44k.safetensors)",
            )
        return None
    return MMAudioCodec.from_single_file(
        audio_vae, vocoder, **options, vae_input_name="audio_vae", vocoder_input_name="vocoder"
    )


def _encoder(encoder: str | Path, tokenizer: str | Path | None, options: dict):
    """A Qwen-VL model folder, or ComfyUI's single Qwen2.5-VL file with a tokenizer folder."""
    from .encoder import MLLMEncoder

    if not Path(encoder).is_file():
        return MLLMEncoder.from_folder(encoder, **options, input_name="encoder")
    return MLLMEncoder.from_file(encoder, tokenizer, **options, input_name="encoder")


@dataclass
class RenderRequest:
    """What to render. Pixel inputs are [T, H, W, 3] in 0..1; ``mask`` is [T or 1, H, W], 1 = change.
    The defaults are the demo model's (64 px, 33 frames at 16 fps, its guidance): give real
    weights the size, length and guidance they were trained for."""

    task: str = "t2av"
    prompt: str = "a red circle bounces on the floor"
    seed: int = 0
    frames: int = 33
    height: int = 64
    width: int = 64
    fps: float = 16.0
    source: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    keyframes: list[int] | None = None  # the keyframes task's frames; None: default_keyframes
    # Low-res + high-res keyframes (the Sampler node's inputs): these frames also rendered at
    # keyframe_scale x the size in the same pass, kept in the take for refine_take to lay in.
    keyframe_indices: tuple[int, ...] = ()
    keyframe_scale: int = 2
    steps: int = 20
    shift: float = 3.0
    cache_threshold: float = 0.0  # the step cache, off (SamplerSettings)
    sigmas: tuple[float, ...] | None = None  # a schedule given outright: replaces steps, shift
    # Chosen on 120 validation scenes, never the eval's (README, "The bundled demo model"):
    # video/audio guidance 6/1.5 read shape 80 %, pitch 93 %, AV sync ~70 ms; 4/1 read 77 %,
    # 92 %, 84 ms; audio guidance 2-3 sharpens the clicks a little but pushes the hum off-key.
    video_guidance: float = 6.0
    audio_guidance: float = 1.5


def default_keyframes(frames: int) -> list[int]:
    """First, middle and last frame, each a latent group's start (frame 0 and every 4th): the
    keyframes task's frames when none are given, at any clip length."""
    return sorted({0, 4 * ((frames - 1) // 8), frames - 1})


def check_request(request: RenderRequest) -> None:
    """The request's task and pixels fit each other; callers run it before loading the model."""
    task, source = request.task, request.source
    frame_rate(request.fps)
    frames_in_clip(request.keyframe_indices, request.frames, "keyframe_indices")
    if task not in TASKS:
        raise InputError("task", f"{task!r} is not a task", f"use one of {', '.join(TASKS)}")
    if source is None and task != "t2av":
        raise InputError(
            "source", f"the {task} task needs a source image or clip", "pass --image or --video"
        )
    if task in {"keyframes", "edit", "v2a"} and source.shape[0] < request.frames:
        raise InputError(
            "video",
            f"{source.shape[0]} frames, fewer than the {request.frames} the {task} task asks for",
            "give a longer clip or fewer --frames",
        )
    if (
        task == "extend"
        and (kept := whole_groups(min(EXTEND_KEPT_FRAMES, source.shape[0]))) >= request.frames
    ):
        raise InputError(
            "--frames",
            f"{request.frames} frames, and the extend task keeps the clip's first {kept}: "
            "nothing is left to generate",
            f"use --frames {kept + TEMPORAL_STRIDE} or more",
        )


def build_condition(codec, request: RenderRequest) -> tuple[VideoCondition, References | None]:
    """The task's condition and references from the request's pixels (DESIGN §2)."""
    check_request(request)
    task, frames, source = request.task, request.frames, request.source
    if task in {"t2av", "ref"}:
        condition = masks.text_to_video(codec, frames, request.height, request.width)
        if task == "t2av":
            return condition, None
        return condition, image_references(codec, [source[0]], request.height, request.width)
    if task == "i2av":
        return masks.image_to_video(codec, source[:1], frames), None
    if task == "extend":
        return masks.extend_video(
            codec, source, frames, known_frames=min(EXTEND_KEPT_FRAMES, source.shape[0])
        ), None
    if task == "interpolate":
        return masks.interpolate(codec, source[0], source[-1], frames), None
    if task == "keyframes":
        indices = request.keyframes if request.keyframes is not None else default_keyframes(frames)
        indices = frames_in_clip(indices, frames, "keyframes")  # -1: the last
        return masks.keyframes(codec, {index: source[index] for index in indices}, frames), None
    if task == "v2a":  # any clip, seen at the request's size (the demo model's 64 px)
        longest_side = max(request.height, request.width)
        return masks.video_to_audio(codec, source[:frames], longest_side), None
    if request.mask is None:
        raise InputError("mask", "the edit task needs a mask (white = change)", "pass --mask")
    return masks.edit_video(codec, source[:frames], request.mask), None


@torch.no_grad()
def render(pipeline: Pipeline, request: RenderRequest, hooks: SamplerHooks | None = None):
    """Frames [T, H, W, 3], the host-style AUDIO dict (None from a video-only model) and the
    AVLatent of one render."""
    condition, references = build_condition(pipeline.video_codec, request)
    return render_condition(pipeline, request, condition, references, hooks)


def render_longer(
    pipeline: Pipeline,
    request: RenderRequest,
    frames: torch.Tensor,
    audio: dict,
    total_frames: int,
    hooks: SamplerHooks | None = None,
) -> tuple[torch.Tensor, dict]:
    """A render continued to ``total_frames`` in windows of the request's length, each keeping
    the clip's last frames, with the request's prompt, settings and references and the window's
    own seed: the Extend to Length node's loop."""
    references = build_condition(pipeline.video_codec, request)[1]

    def window(condition: VideoCondition, number: int, _first: int) -> tuple[torch.Tensor, dict]:
        log.info("window %d after the first", number)
        # No high-res keyframes: a window's take is not kept for a refiner to lay them in.
        seeded = replace(request, seed=window_seed(request.seed, number), keyframe_indices=())
        return render_condition(pipeline, seeded, condition, references, hooks)[:2]

    return extend_to_length(
        pipeline.video_codec,
        frames,
        audio,
        request.fps,
        total_frames,
        request.frames,
        DEFAULT_OVERLAP,
        window,
    )


@torch.no_grad()
def render_condition(
    pipeline: Pipeline,
    request: RenderRequest,
    condition: VideoCondition,
    references: References | None,
    hooks: SamplerHooks | None = None,
):
    """``render`` for a condition already built (a window continuing a clip)."""
    keyframes = bool(request.keyframe_indices)
    note = bundle.render_advice(pipeline.model.config.name, condition, keyframes=keyframes)
    if note:
        log.warning("%s", note)
    codec, tokens = pipeline.audio_codec, None  # a video-only model (Wan 2.1) renders silence
    if pipeline.model.config.has_audio:  # v2a pads a clip to 4k+1 frames: the span counts
        tokens = latent_audio_tokens(condition.num_latent_frames, request.fps, codec)
    settings = SamplerSettings(
        steps=request.steps,
        shift=request.shift,
        seed=request.seed,
        video_guidance=request.video_guidance,
        audio_guidance=request.audio_guidance,
        cache_threshold=request.cache_threshold,
        sigmas=request.sigmas,
    )
    text, negative = pipeline.encoder.encode(request.prompt), pipeline.encoder.encode("")
    with pipeline.model_on_device() as model:
        latent = sample(
            model,
            text=text,
            negative_text=negative,
            condition=condition,
            audio_tokens=tokens,
            fps=request.fps,
            settings=settings,
            references=references,
            keyframe_indices=masks.keyframe_latent_frames(
                frames_in_clip(request.keyframe_indices, request.frames, "keyframe_indices")
            ),
            keyframe_scale=request.keyframe_scale,
            hooks=hooks,
        )
    sound = None if latent.audio is None else take_sound(latent, codec)
    return take_frames(latent, pipeline.video_codec)[0], sound, latent
