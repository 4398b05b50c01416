"""The dual-stream sampler: video and audio latents denoised together by flow matching.

One model call per step and guidance branch returns the velocities of both streams (and of the
high-res keyframes of DESIGN §4), and one solver moves them all on the same schedule, so the
audio stays on the video's clock. Tasks come in through the inpainting interface (DESIGN §2): the
known latents ride along on the noised path ``(1 - t) I + t eps`` of their own noise, which is
what the model saw in training, and the output holds them bit-identically. Audio has no
known-mask: it is always generated afresh, after a video edit too, and follows a given audio
reference through the model's in-context references (DESIGN §2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import takes_masks
from ..errors import InputError
from ..families import channels, require_width
from ..memory import fits_in_ram, is_out_of_memory, refuse_past_ram
from ..objective import noised, velocity_target
from ..offload import ReserveMemory
from ..prompts import shots_in_window
from ..references import pixel_size
from ..shapes import SPATIAL_STRIDE, frame_rate, latent_to_pixel_frames, pixel_frame_count
from ..types import AVLatent, References, TextEncoding, VideoCondition
from .guidance import StreamGuidance
from .schedules import custom_sigmas, flow_sigmas, lagged_sigmas
from .solvers import FlowSolver, PerScheduleSolver
from .step_cache import StepCache

Streams = list[torch.Tensor]
log = logging.getLogger(__name__)


@dataclass
class SamplerSettings:
    """User-facing sampler options; defaults from the open twin-backbone AV models (DESIGN §3).

    ``denoise_start`` < 1 starts from ``initial`` noised to that time (refinement,
    video-to-video). ``batch_guidance`` runs the conditional and unconditional passes as one
    batch of two: fewer, larger kernels, at twice the activation memory. ``cache_threshold`` > 0
    skips model calls whose output is predictable (:mod:`.step_cache`); the first
    ``cache_warmup`` share of the steps and the last step always run. ``sigmas``, a schedule
    given outright (:func:`.schedules.custom_sigmas`), replaces ``steps``, ``shift`` and
    ``denoise_start``: they are set from it, so the rest of the sampler reads one schedule.
    ``audio_lag`` > 1 runs the sound behind the picture (:func:`.schedules.lagged_sigmas`), for a
    model trained with a time of its own for the sound; None takes the model's (``audio_lag`` of
    its config: 1 where it was trained with one time for both).
    """

    steps: int = 50
    shift: float = 5.0
    solver: str = "unipc"
    video_guidance: float = 4.0
    audio_guidance: float = 3.0
    seed: int = 0
    cfg_zero_star: bool = False
    cfg_zero_init_steps: int = 1
    apg: bool = False
    apg_momentum: float = -0.5
    apg_eta: float = 0.0
    apg_norm_threshold: float = 0.0
    batch_guidance: bool = True
    denoise_start: float = 1.0
    cache_threshold: float = 0.0
    cache_warmup: float = 0.15
    sigmas: Sequence[float] | torch.Tensor | None = None
    audio_lag: float | None = None

    def __post_init__(self) -> None:
        if self.sigmas is not None:
            self.sigmas = tuple(custom_sigmas(self.sigmas).tolist())
            self.steps, self.denoise_start = len(self.sigmas) - 1, self.sigmas[0]

    def schedule(self) -> list[float]:
        """The times the render steps through, from its start down to 0."""
        if self.sigmas is not None:
            return list(self.sigmas)
        return flow_sigmas(self.steps, self.shift, self.denoise_start).tolist()


@dataclass
class SamplerHooks:
    """Called every step: ``progress(done, total)`` and ``preview(done, x0_video)`` after a step;
    ``interrupt()`` before each model call, and it stops the render by raising. ``reserve`` is
    asked once, before the first step, for the activations of the largest pass (a host frees
    room for them)."""

    progress: Callable[[int, int], None] | None = None
    preview: Callable[[int, torch.Tensor], None] | None = None
    interrupt: Callable[[], None] | None = None
    reserve: ReserveMemory | None = None


def _placement(model: torch.nn.Module, fallback: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype the model computes; a parameter-free model runs where the
    condition lies, in float32."""
    parameters = model.parameters() if hasattr(model, "parameters") else iter(())
    first = next(iter(parameters), None)
    if first is None:
        return fallback.device, torch.float32
    return first.device, first.dtype


MAX_SEED = 2**63 - 1  # the Sampler's seed widget; torch's generator takes no more


def initial_noise(
    seed: int, shapes: Sequence[tuple[int, ...]], device: torch.device | str = "cpu"
) -> Streams:
    """One noise tensor per stream, drawn in stream order from a CPU generator: a seed gives the
    same clip on any device, and the video noise does not depend on whether audio is drawn."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return [
        torch.randn(shape, generator=generator, dtype=torch.float32).to(device) for shape in shapes
    ]


def _with_a_token(text: TextEncoding) -> TextEncoding:
    """An empty prompt (no token: an image-to-video render left without words) as one null
    token: with none, every key of the text cross-attention is masked, a condition training never
    showed, whose result is 0 on one backend and NaN on another. Judged per batch row: one empty
    prompt among several would otherwise keep its row all masked."""
    empty = ~text.mask.any(dim=1)
    if not bool(empty.any()):
        return text
    features, mask = text.features.clone(), text.mask.clone()
    if features.shape[1] == 0:
        features, mask = F.pad(features, (0, 0, 0, 1)), F.pad(mask, (0, 1))
    features[empty, 0] = 0
    mask[empty, 0] = True
    return TextEncoding(features, mask, text.shot_ranges)


def _unconditional(text: TextEncoding, negative: TextEncoding | None) -> TextEncoding:
    """The guidance branch's text. No negative, or one with no token (an empty negative prompt,
    the default in every workflow), is the null text the model was trained on: an empty prompt
    passed as is would mask every text key, a condition training never showed (it cost the demo
    model's eval shape adherence 75 % against 82.5 %). In a batch, each row without a negative
    token takes its prompt's null text."""
    if negative is None:
        return text.nulled()
    empty = ~negative.mask.any(dim=1)
    if not bool(empty.any()):
        return negative
    null = text.nulled()
    if bool(empty.all()):
        return null
    length = max(null.features.shape[1], negative.features.shape[1])
    null, negative = _pad_text(null, length), _pad_text(negative, length)
    rows = empty[:, None]
    return TextEncoding(
        torch.where(rows[..., None], null.features, negative.features),
        torch.where(rows, null.mask, negative.mask),
        negative.shot_ranges,
    )


def _pad_text(text: TextEncoding, length: int) -> TextEncoding:
    missing = length - text.features.shape[1]
    if missing == 0:
        return text
    return TextEncoding(
        F.pad(text.features, (0, 0, 0, missing)), F.pad(text.mask, (0, missing)), text.shot_ranges
    )


def _stack_text(first: TextEncoding, second: TextEncoding) -> TextEncoding:
    """Both prompts as one batch, the shorter padded with masked tokens."""
    length = max(first.features.shape[1], second.features.shape[1])
    first, second = _pad_text(first, length), _pad_text(second, length)
    return TextEncoding(
        torch.cat([first.features, second.features]),
        torch.cat([first.mask, second.mask]),
        first.shot_ranges,
    )


def _stack_references(references: References | None) -> References | None:
    if not references:
        return references
    return References(
        video=None if references.video is None else torch.cat([references.video] * 2),
        audio=None if references.audio is None else torch.cat([references.audio] * 2),
    )


class _ModelCall:
    """Builds the model's inputs from the sampler's streams and returns velocities per stream."""

    def __init__(
        self,
        model: torch.nn.Module,
        condition_latents: torch.Tensor,
        known_mask: torch.Tensor,
        has_audio: bool,
        keyframe_indices: list[int],
        keyframe_shape: tuple[int, ...] | None,
        references: References | None,
        dtype: torch.dtype,
    ) -> None:
        self.model = model
        self.dtype = dtype
        self.has_audio = has_audio
        self.keyframe_indices = keyframe_indices
        self.references = references
        self.concat = bool(model.config.channel_concat_inpainting)
        # The keyframes have no high-res condition: their I and M channels say "all unknown".
        self.video_condition = torch.cat([condition_latents, known_mask], dim=1).to(dtype)
        self.keyframe_condition = (
            torch.zeros(
                keyframe_shape[0],
                self.video_condition.shape[1],
                *keyframe_shape[2:],
                device=condition_latents.device,
                dtype=dtype,
            )
            if keyframe_shape is not None
            else None
        )

    def _video_input(self, latents: torch.Tensor, condition: torch.Tensor, repeat: int):
        latents = latents.to(self.dtype)
        if not self.concat:
            return latents
        return torch.cat([latents, torch.cat([condition] * repeat)], dim=1)

    def __call__(
        self, latents: Streams, sigmas: Sequence[float], text: TextEncoding, repeat: int = 1
    ) -> Streams:
        """Velocities of each stream, each at its time in ``sigmas``; with ``repeat`` = 2 the
        streams are stacked twice along the batch to meet a stacked (conditional,
        unconditional) ``text``."""
        stacked = [torch.cat([x] * repeat) for x in latents]
        video = self._video_input(stacked[0], self.video_condition, repeat)
        audio = stacked[1].to(self.dtype) if self.has_audio else None
        keyframes = None
        if self.keyframe_condition is not None:
            keyframes = self._video_input(stacked[-1], self.keyframe_condition, repeat)
        references = self.references if repeat == 1 else _stack_references(self.references)
        timestep = torch.full(
            (video.shape[0],), sigmas[0], device=video.device, dtype=torch.float32
        )
        audio_timestep = None
        if self.has_audio and sigmas[1] != sigmas[0]:
            audio_timestep = torch.full_like(timestep, sigmas[1])
        output = self.model(
            video,
            timestep,
            text,
            audio=audio,
            references=references,
            keyframes=keyframes,
            keyframe_indices=self.keyframe_indices or None,
            audio_timestep=audio_timestep,
        )
        velocities = [output.video]
        if self.has_audio:
            velocities.append(output.audio)
        if keyframes is not None:
            velocities.append(output.keyframes)
        return [v.float() for v in velocities]


class _GuidanceTexts:
    """The prompts of the two guidance branches, and their stack for batched passes while the
    batch fits (multi-shot prompts batch only with a negative of the same shot layout). Prompts
    of two lengths stack padded under a mask, which flash_attn and sage do not take: for those
    the branches run apart, so the kernel the artist chose runs every attention call."""

    def __init__(
        self, text: TextEncoding, unconditional: TextEncoding | None, batch: bool, backend: str
    ):
        self.conditional = text
        self.unconditional = unconditional
        self.stacked = None
        if not batch or unconditional is None or unconditional.shot_ranges != text.shot_ranges:
            return
        if takes_masks(backend) or text.features.shape[1] == unconditional.features.shape[1]:
            self.stacked = _stack_text(text, unconditional)


def _largest_pass_bytes(
    model: torch.nn.Module,
    shapes: Sequence[tuple[int, ...]],
    has_audio: bool,
    references: References | None,
    texts: _GuidanceTexts,
    least: bool = False,
) -> int:
    """Activation bytes of the largest model pass a render makes: both guidance branches while
    they batch, else one (``least``: the least it can take)."""
    video = [shapes[0], *shapes[1 + has_audio :]]
    audio = shapes[1][-1] if has_audio else 0
    if references is not None:
        video += [] if references.video is None else [tuple(references.video.shape)]
        audio += 0 if references.audio is None else references.audio.shape[-1]
    text = texts.stacked if texts.stacked is not None else texts.conditional
    tokens, batch = text.features.shape[1], text.features.shape[0]
    return model.activation_bytes(video, audio, tokens, batch, least=least)


def _fit_passes_in_ram(
    model: torch.nn.Module,
    shapes: Sequence[tuple[int, ...]],
    has_audio: bool,
    references: References | None,
    texts: _GuidanceTexts,
) -> None:
    """On the CPU a pass past the RAM raises nothing: the OOM killer ends the host's process,
    with every queued render. So the guidance branches run apart where their batched pass cannot
    fit (as they do after a GPU's out-of-memory error), and a render whose single pass cannot fit
    is refused before its first step. Both count the least a pass can take, so nothing that
    fits is refused."""
    if texts.stacked is not None:
        if fits_in_ram(
            _largest_pass_bytes(model, shapes, has_audio, references, texts, least=True)
        ):
            return
        log.info("the guidance branches run apart: both in one pass would not fit in RAM")
        texts.stacked = None
    *_, frames, height, width = shapes[0]
    keyframes = f" and {shapes[-1][2]} keyframes" if len(shapes) > 1 + has_audio else ""
    refuse_past_ram(
        _largest_pass_bytes(model, shapes, has_audio, references, texts, least=True),
        "condition",
        f"sampling {pixel_frame_count(frames)} frames of "
        f"{width * SPATIAL_STRIDE} x {height * SPATIAL_STRIDE} px"
        f"{keyframes} on the CPU",
        "fewer frames or a smaller size (the mask node's), fewer keyframes or references, "
        "or a machine with a GPU",
    )


def _passes(
    call: _ModelCall,
    branches: tuple[bool, bool],
    latents: Streams,
    sigmas: Sequence[float],
    texts: _GuidanceTexts,
) -> tuple[Streams | None, Streams | None]:
    """The conditional and unconditional velocities a step needs, batched as one pass if possible.

    A batched pass that runs out of memory (the GPU's, or a CPU host's RAM) falls back to two
    passes of half the activations for the rest of the render instead of failing it."""
    conditional, unconditional = branches
    if conditional and unconditional and texts.stacked is not None:
        try:
            pairs = [v.chunk(2) for v in call(latents, sigmas, texts.stacked, repeat=2)]
            return [c for c, _ in pairs], [u for _, u in pairs]
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            texts.stacked = None
    cond = call(latents, sigmas, texts.conditional) if conditional else None
    uncond = call(latents, sigmas, texts.unconditional) if unconditional else None
    return cond, uncond


def _shots_for_clip(
    text: TextEncoding | None, input_name: str, latent_frames: int, story_start: int
):
    """A multi-shot prompt binds its shots to a clip length. A story written for a longer clip is
    read from the clip's place in it: its opening for a first window, from ``story_start`` (pixel
    frames) for a window continuing the clip so far (Continue Clip); one written for a shorter
    clip would leave the frames past its end attending no text: named."""
    if text is None or not text.shot_ranges:
        return text
    written_for = text.shot_ranges[-1][3]
    if written_for > latent_frames:
        log.info("%s: %d latent frames of a story of %d, from its frame %d", input_name,
                 latent_frames, written_for, story_start)  # fmt: skip
        return shots_in_window(text, story_start, latent_frames)
    if written_for < latent_frames:
        frames, clip = pixel_frame_count(written_for), pixel_frame_count(latent_frames)
        raise InputError(
            input_name,
            f"a multi-shot prompt written for {frames} frames, on a clip of {clip}",
            f"set Multi-Shot Text Encode's frames to {clip}",
        )
    return text


def _for_batch(tensor: torch.Tensor, batch: int, input_name: str) -> torch.Tensor:
    """One input for every clip of a batch: a batch of one is shared, as many as the clips are
    paired with them; another count is named."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] != 1:
        raise InputError(
            input_name,
            f"a batch of {tensor.shape[0]} for a batch of {batch} clips",
            f"give one, shared by every clip, or {batch}",
        )
    return tensor.expand(batch, *tensor.shape[1:])


def _text_for_batch(text: TextEncoding | None, batch: int, input_name: str):
    if text is None:
        return None
    features = _for_batch(text.features, batch, input_name)
    return TextEncoding(features, _for_batch(text.mask, batch, input_name), text.shot_ranges)


def require_one_family(config, text, negative, condition, references, initial) -> None:
    """Every input the model reads of the model's own family (text width, latent channels):
    otherwise a size mismatch deep inside the first step, or a misleading count."""
    video, audio = config.video_latent_channels, config.audio_latent_channels
    width = "text features"
    checks = [
        ("text", text.features.shape[-1], config.text_dim, width),
        ("negative", negative.features.shape[-1] if negative else None, config.text_dim, width),
        ("condition", channels(condition.latents), video, "video latent channels"),
        ("references", channels(getattr(references, "video", None)), video, "video latent channels"),
        ("references", channels(getattr(references, "audio", None)), audio, "audio latent channels"),
        ("initial", channels(getattr(initial, "video", None)), video, "video latent channels"),
        ("initial", channels(getattr(initial, "audio", None)), audio, "audio latent channels"),
    ]  # fmt: skip
    for input_name, found, expected, what in checks:
        require_width(input_name, found, expected, what, "this model")
    if audio is None and getattr(references, "audio", None) is not None:
        raise InputError(
            "references",
            "an audio reference for a model that makes no sound (it would be ignored)",
            "remove the Audio Reference, or load a model with an audio stream",
        )


def _audio_lag(config, asked: float | None) -> float:
    """The lag the sound runs at: ``asked``, or the model's own; above 1 only for a model trained
    with a time of its own for the sound, which alone knows a sound noisier than its picture."""
    lag = config.audio_lag if asked is None else float(asked)
    if lag < 1.0:
        raise InputError("audio_lag", f"{lag:g}", "give 1 (joint) or more (the sound behind)")
    if lag > 1.0 and not config.audio_time_share:
        raise InputError(
            "audio_lag",
            f"{lag:g} for {config.name}, trained with one time for both streams",
            "set 1, or leave it to the model: only a model trained with a time of its own for the "
            "sound can sample it behind the picture",
        )
    return lag


def require_fps(fps: float, made_at: float | None, what: str) -> None:
    """A render runs at the rate its inputs were made at: at another rate the sound they carry
    is another number of tokens, and the clip another length in seconds."""
    if made_at is not None and abs(made_at - fps) > 1e-6:
        raise InputError(
            "fps",
            f"{fps:g} fps for {what} made at {made_at:g} fps",
            f"set fps to {made_at:g} (wire the clip's fps into it: Decode Video's, or Get Video "
            "Components')",
        )


def _check_keyframes(indices: Sequence[int], known: torch.Tensor, scale: int) -> list[int]:
    """The keyframes' latent frames, sorted. One the condition keeps, wholly or in part (an
    image-to-video first frame, a kept region), is refused: the high-res keyframe has no high-res
    condition, so it is generated afresh there and Refine would lay it over the kept frame."""
    frames = known.shape[2]
    indices = sorted(set(int(i) for i in indices))
    if indices and not 0 <= indices[0] <= indices[-1] < frames:
        raise InputError(
            "keyframe_indices",
            f"latent frames {indices} are outside the clip's {frames} latent frames",
            f"use latent frames 0..{frames - 1}",
        )
    if indices and scale < 1:
        raise InputError("keyframe_scale", f"scale {scale}", "use a scale of 1 or more")
    kept = [i for i in indices if bool(known[:, :, i].any())]
    if kept:
        pixels = [latent_to_pixel_frames(i) for i in kept]
        spans = ", ".join(str(p[0]) if len(p) == 1 else f"{p[0]}-{p[-1]}" for p in pixels)
        subject = (
            f"frame {spans} is" if len(pixels) == len(pixels[0]) == 1 else f"frames {spans} are"
        )
        raise InputError(
            "keyframe_indices",
            f"{subject} kept from the condition (wholly or in part); a high-res keyframe there "
            "would be generated afresh and laid over the kept frames by Refine",
            "leave those frames out of keyframe_indices (Refine sharpens the kept frames anyway)",
        )
    return indices


def _start_latents(
    initial: AVLatent | None,
    noise: Streams,
    start: float,
    has_audio: bool,
    keyframe_indices: list[int],
    start_input: str = "denoise_start",
) -> Streams:
    """Pure noise at t = 1; otherwise ``initial`` noised to ``start`` with the seed's noise.
    ``start_input`` is the input that set the start (a given schedule's first time)."""
    if start >= 1.0:
        return [n.clone() for n in noise]
    if initial is None:
        fix = "start the schedule at 1" if start_input == "sigmas" else "set denoise_start to 1"
        raise InputError(
            start_input,
            f"starting at {start:g} needs latents to start from, and none were given",
            f"connect an AV latent to refine, or {fix}",
        )
    clean = [initial.video]
    if has_audio:
        if initial.audio is None:
            raise InputError(
                "initial",
                "the AV latent to start from has no audio but the model makes audio",
                "give it the clip's sound (Encode Audio; a silent clip can get one from Video "
                "to Audio first), or set denoise_start to 1",
            )
        clean.append(initial.audio)
    if keyframe_indices:
        if (
            initial.keyframes is not None
            and initial.keyframe_indices == keyframe_indices
            and initial.keyframes.shape[-2:] == noise[-1].shape[-2:]
        ):  # the same keyframes at the same scale; otherwise upsampled from the clip
            clean.append(initial.keyframes)
        else:
            low_res = initial.video[:, :, keyframe_indices]
            size = (len(keyframe_indices), *noise[-1].shape[-2:])
            clean.append(F.interpolate(low_res, size=size, mode="trilinear"))
    _require_same_clip(clean[0], noise[0])
    if has_audio and clean[1].shape != noise[1].shape:
        raise InputError(
            "initial",
            f"a sound of {clean[1].shape[-1]} audio tokens where the clip's length at this fps "
            f"takes {noise[1].shape[-1]}",
            "encode the clip's own sound (Encode Audio) for the clip the condition describes",
        )
    return [noised(x.to(n), n, start) for x, n in zip(clean, noise)]


def _require_same_clip(initial: torch.Tensor, needed: torch.Tensor) -> None:
    """Video-to-video starts from a clip the condition must describe: told in frames and pixels,
    as the Mask nodes' widgets say them, not as latent shapes."""
    if initial.shape == needed.shape:
        return
    if initial.shape[:2] != needed.shape[:2]:
        raise InputError(
            "initial",
            f"latents of shape {tuple(initial.shape)} where {tuple(needed.shape)} is needed",
            "refine latents made for the same condition and audio length",
        )
    frames, want = (pixel_frame_count(x.shape[2]) for x in (initial, needed))
    raise InputError(
        "initial",
        f"a clip of {frames} frames at {pixel_size(initial)} for a condition of {want} frames "
        f"at {pixel_size(needed)}",
        f"set the condition's frames, width and height to the clip's ({frames}, "
        f"{pixel_size(initial).removesuffix(' px').replace(' x ', ', ')})",
    )


def denoise(
    predict: Callable[[int, float, list[torch.Tensor]], list[torch.Tensor]],
    latents: list[torch.Tensor],
    known: torch.Tensor,
    known_latents: torch.Tensor,
    noise: torch.Tensor,
    sigmas: Sequence[float],
    solver: FlowSolver | PerScheduleSolver,
    hooks: SamplerHooks,
) -> list[torch.Tensor]:
    """The loop the sampler and the refiner share, over ``len(sigmas) - 1`` steps: the known
    cells of the first stream ride their own noise path (``noise``) at each step's sigma, their
    velocity is the exact one towards ``known_latents`` whatever ``predict`` said, and the
    preview shows them clean. ``predict(index, sigma, latents)`` gives each stream's velocity.
    The loop takes the tensors out of ``latents`` (the list is left empty), so the start does not
    stay alive beside every later step's latents."""
    latents, given = list(latents), latents
    given.clear()
    steps = len(sigmas) - 1
    known_velocity = velocity_target(known_latents, noise)
    with torch.no_grad():
        for index in range(steps):
            if hooks.interrupt is not None:
                hooks.interrupt()
            sigma = sigmas[index]
            latents[0] = torch.where(known, noised(known_latents, noise, sigma), latents[0])
            velocities = predict(index, sigma, latents)
            velocities[0] = torch.where(known, known_velocity, velocities[0])
            if hooks.preview is not None:
                estimate = torch.where(known, known_latents, latents[0] - sigma * velocities[0])
                hooks.preview(index + 1, estimate)
            latents = solver.step(index, latents, velocities)
            if hooks.progress is not None:
                hooks.progress(index + 1, steps)
    return latents


def require_finite(
    velocities: list[torch.Tensor],
    index: int,
    steps: int,
    dtype: torch.dtype,
    loader: str = "Load Model",
) -> None:
    """Stop at the first step whose velocities hold NaN or inf: every later step and the decode
    would only turn them into a black clip, minutes later. One reduction and sync a step."""
    if bool(torch.stack([torch.isfinite(v).all() for v in velocities]).all()):
        return
    if dtype == torch.float16:
        fix = f"load the model in bf16 or fp32 ({loader}'s dtype): float16 overflows in it"
    else:
        fix = "check the model file and the inputs (an encoded clip or reference with NaN)"
    raise InputError(
        "model", f"its prediction at step {index + 1} of {steps} is not finite (NaN/inf)", fix
    )


def sample(
    model: torch.nn.Module,
    *,
    text: TextEncoding,
    negative_text: TextEncoding | None,
    condition: VideoCondition,
    audio_tokens: int | None,
    fps: float,
    settings: SamplerSettings,
    references: References | None = None,
    keyframe_indices: Sequence[int] = (),
    keyframe_scale: int = 2,
    hooks: SamplerHooks | None = None,
    initial: AVLatent | None = None,
) -> AVLatent:
    """Denoise one clip's video and audio latents together.

    ``fps`` is the clip's frame rate, which ``audio_tokens`` were counted at; the result carries
    it, so a saved take's sound and frames keep one length. ``keyframe_indices`` are latent
    frames also rendered at ``keyframe_scale`` times the latent resolution in the same sequence
    (DESIGN §4). ``negative_text`` None guides against a null prompt
    (:meth:`TextEncoding.nulled`). The result lies on the model's device, in float32.
    """
    hooks = hooks or SamplerHooks()
    frame_rate(fps)
    require_one_family(model.config, text, negative_text, condition, references, initial)
    require_fps(fps, condition.fps, "a clip")
    if initial is not None and settings.denoise_start < 1.0:
        require_fps(fps, initial.fps, "the initial latent")
    has_audio = model.config.audio_latent_channels is not None
    if has_audio and not audio_tokens:
        raise InputError("audio_tokens", f"{audio_tokens}", "give the clip's audio token count")
    if not has_audio and audio_tokens:
        raise InputError(
            "audio_tokens", f"{audio_tokens} for a model without audio", "pass None for audio"
        )
    device, dtype = _placement(model, condition.latents)
    known_latents = condition.latents.to(device, torch.float32)
    known = (condition.known_mask == 1).to(device)
    batch, channels, frames, height, width = known_latents.shape
    keyframes = _check_keyframes(keyframe_indices, known, keyframe_scale)
    text = _shots_for_clip(text, "text", frames, condition.story_start)
    negative_text = _shots_for_clip(negative_text, "negative", frames, condition.story_start)
    if references and references.video is not None:
        if references.video.shape[-2:] != (height, width):
            raise InputError(
                "references",
                f"made at {pixel_size(references.video)} for a clip of {pixel_size(known_latents)}",
                "set the reference nodes' width and height to the clip's",
            )

    shapes = [tuple(known_latents.shape)]
    if has_audio:
        shapes.append((batch, model.config.audio_latent_channels, audio_tokens))
    keyframe_shape = None
    if keyframes:
        scaled = (height * keyframe_scale, width * keyframe_scale)
        keyframe_shape = (batch, channels, len(keyframes), *scaled)
        shapes.append(keyframe_shape)

    sigmas = settings.schedule()
    lag = _audio_lag(model.config, settings.audio_lag) if has_audio else 1.0
    schedules = [sigmas] + [lagged_sigmas(sigmas, lag)] * has_audio + [sigmas] * bool(keyframes)
    solver = PerScheduleSolver(settings.solver, schedules)
    scales = [settings.video_guidance] + [settings.audio_guidance] * has_audio
    guidance = StreamGuidance(
        scales + [settings.video_guidance] * bool(keyframes),
        cfg_zero_star=settings.cfg_zero_star,
        zero_init_steps=settings.cfg_zero_init_steps,
        apg=(settings.apg_momentum, settings.apg_eta, settings.apg_norm_threshold)
        if settings.apg
        else None,
    )
    if references:
        references = References(
            *(
                None if r is None else _for_batch(r, batch, "references").to(device)
                for r in (references.video, references.audio)
            )
        )
    text = _text_for_batch(text, batch, "text")
    negative_text = _text_for_batch(negative_text, batch, "negative")
    call = _ModelCall(
        model,
        known_latents,
        known.to(torch.float32),
        has_audio,
        keyframes,
        keyframe_shape,
        references,
        dtype,
    )
    text = _with_a_token(text).to(device, dtype)
    unconditional = None
    if guidance.needs_unconditional:
        negative = None if negative_text is None else negative_text.to(device, dtype)
        unconditional = _unconditional(text, negative).to(device, dtype)
    backend = getattr(model, "attention_backend", "sdpa")
    texts = _GuidanceTexts(text, unconditional, settings.batch_guidance, backend)
    if hasattr(model, "activation_bytes"):
        if device.type == "cpu":
            _fit_passes_in_ram(model, shapes, has_audio, references, texts)
        if hooks.reserve is not None:
            hooks.reserve(device, _largest_pass_bytes(model, shapes, has_audio, references, texts))

    noise = initial_noise(settings.seed, shapes, device)
    start_input = "denoise_start" if settings.sigmas is None else "sigmas"
    latents = _start_latents(
        initial, noise, settings.denoise_start, has_audio, keyframes, start_input
    )
    cache = StepCache(settings.cache_threshold, math.ceil(settings.cache_warmup * settings.steps))

    def predict(index: int, sigma: float, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        last = index == settings.steps - 1
        times = [schedule[index] for schedule in schedules]
        velocities = None if last else cache.reuse(index, latents, times)
        if velocities is None:
            cond, uncond = _passes(call, guidance.branches(index), latents, times, texts)
            velocities = guidance.combine(index, times, latents, cond, uncond)
            require_finite(velocities, index, settings.steps, dtype)
            cache.store(latents, velocities, times)
        return velocities

    latents = denoise(predict, latents, known, known_latents, noise[0], sigmas, solver, hooks)

    if cache.skipped:
        log.info(
            "step cache: the model ran at %d of %d steps (skipped %s)",
            settings.steps - len(cache.skipped),
            settings.steps,
            ", ".join(str(index + 1) for index in cache.skipped),
        )
    return AVLatent(
        video=torch.where(known, known_latents, latents[0]),
        audio=latents[1] if has_audio else None,
        keyframes=latents[-1] if keyframes else None,
        keyframe_indices=keyframes,
        fps=fps,
        clip_frames=condition.clip_frames,
    )
