"""The refiner of DESIGN §4: the low-res clip to high resolution and (optionally) a higher frame rate.

Read top to bottom in the order data flows: the configuration -> the video-only DiT (the video
stream's own block, patch embedding, time embedding and head, without text or audio) -> its
condition (upsample in latent space, insert frames, re-inject the high-res keyframes) -> the few
flow-matching steps from a start time -> checkpoints.

Frame-rate convention: a clip of F = 4k + 1 pixel frames refined at ``fps_factor`` r has
r (F - 1) + 1 frames at r times the frame rate, so it keeps its first and last instants (33 frames
at x2 -> 65, 17 at x2 -> 33, 9 at x4 -> 33). In latent frames that is r (T - 1) + 1: low-res latent
frame i lands on refined latent frame r i (both groups end on the same instant) and the r - 1
frames between are inserted, unknown in the mask. A frame count of 4k + 1 stays 4k + 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .attention import BlockSparsity
from .blocks import DualStreamBlock, runs_compiled
from .config import ModelConfig, check_heads
from .errors import CheckpointError, InputError
from .loading import loaded_bytes, read_header, save_model, shapes_of, validate_keys
from .memory import refuse_past_ram
from .mmdit import (
    TIMESTEP_SCALE,
    Head,
    forward_activation_bytes,
    least_activation_elements,
    sinusoidal_embedding,
    video_token_count,
)
from .objective import noised
from .offload import Float8Linear, ReserveMemory
from .rope import device_table, video_angles, video_positions
from .sampling import SamplerHooks, denoise, initial_noise, require_finite
from .sampling.schedules import flow_sigmas
from .sampling.solvers import make_solver
from .shapes import SPATIAL_STRIDE, pixel_frame_count
from .sparse_attention import sparse_pays_off
from .types import AVLatent

CONFIG_METADATA_KEY = "skyreels_refiner_config"
SCALES = (1, 2, 3, 4)
FPS_FACTORS = (1, 2, 4)


# Working memory of a forward, in elements of the compute dtype per token and unit of width: the
# video-only blocks peak at 8.9-9.8 (bench part working_memory, dense attention, widths 256-512).
REFINER_ACTIVATION_ELEMENTS = 16


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RefinerConfig:
    """The refiner's shape: plain numbers, so one class serves the demo and a 14B-class refiner.

    Widths and layouts are the video stream's (a :class:`ModelConfig`), so a refiner of the same
    width initialises from the generator's video stream (:func:`initialise_from_video_stream`).
    """

    name: str
    dim: int
    num_heads: int
    ffn_dim: int
    num_blocks: int
    video_latent_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        check_heads(self.name, self.dim, self.num_heads)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def in_channels(self) -> int:
        """concat(x_t, I, M), the generator's inpainting layout (DESIGN §2)."""
        return 2 * self.video_latent_channels + 1

    @classmethod
    def from_model(cls, config: ModelConfig, num_blocks: int | None = None) -> RefinerConfig:
        """A refiner as wide as ``config``'s video stream, with its first ``num_blocks`` blocks."""
        return cls(
            name=f"{config.name}-refiner",
            dim=config.dim,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
            num_blocks=num_blocks or config.num_dual_blocks,
            video_latent_channels=config.video_latent_channels,
            patch_size=config.patch_size,
            freq_dim=config.freq_dim,
            eps=config.eps,
            rope_theta=config.rope_theta,
        )


REFINER_PRESETS: dict[str, RefinerConfig] = {
    "tiny": RefinerConfig("tiny-refiner", dim=32, num_heads=2, ffn_dim=64, num_blocks=2,
                          video_latent_channels=4),
    # The bundled demo refiner: the demo generator's width, 8 latent channels, ~0.7 M weights.
    "demo": RefinerConfig("demo-refiner", dim=128, num_heads=4, ffn_dim=384, num_blocks=3,
                          video_latent_channels=8),
}  # fmt: skip


# -- the video-only DiT ----------------------------------------------------------------------
@lru_cache(maxsize=32)
def _rotary_angles(grid: tuple[int, int, int], head_dim: int, theta: float) -> torch.Tensor:
    """3D RoPE angles of the refined token grid (integer t, h, w), computed once per shape."""
    return video_angles(video_positions(*grid), head_dim, theta)


class RefinerDiT(nn.Module):
    """Patch embedding -> N video-stream blocks (self-attention + FFN, adaLN-Zero on the time) ->
    head. Self-attention is dense, or block-sparse (VSA-style, FlexAttention block masks) when a
    ``keep_ratio`` is given; then each block adds the coarse cube attention through its learned
    per-head gate, zero at initialisation so a refiner starts as its dense weights' fine path.
    Module names equal the generator's, so weights copy by name."""

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        self.config = config
        self.attention_backend = "sdpa"  # the dense path; sparse always goes through flex
        d = config.dim
        self.patch_embedding = nn.Conv3d(
            config.in_channels, d, config.patch_size, config.patch_size
        )
        # Wan's layouts, as mmdit.stream_embeddings builds them, without the text projection.
        self.time_embedding = nn.Sequential(
            nn.Linear(config.freq_dim, d), nn.SiLU(), nn.Linear(d, d)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(
            DualStreamBlock(
                d,
                config.num_heads,
                config.ffn_dim,
                config.eps,
                joint_text=False,
                text_cross=False,
                av_cross=False,
            )
            for _ in range(config.num_blocks)
        )
        self.coarse_gates = nn.Parameter(torch.zeros(config.num_blocks, config.num_heads))
        pt, ph, pw = config.patch_size
        self.head = Head(d, config.video_latent_channels * pt * ph * pw, config.eps)

    def activation_bytes(self, video_shape: Sequence[int], least: bool = False) -> int:
        """Device memory one forward's activations take beyond the weights for latents of
        ``video_shape``, so a host can make room before refining; ``least``: the least they
        can take, so a refusal never refuses what fits."""
        c, dtype = self.config, self.patch_embedding.weight.dtype
        if not least:
            return forward_activation_bytes(
                c.dim, c.patch_size, dtype, [video_shape], 0, video_shape[0],
                REFINER_ACTIVATION_ELEMENTS,
            )  # fmt: skip
        tokens = video_token_count(c.patch_size, [video_shape])
        elements = least_activation_elements(
            c.dim, c.ffn_dim, [tokens], 0, False, runs_compiled(self)
        )
        return video_shape[0] * elements * dtype.itemsize

    def forward(
        self, video: torch.Tensor, timestep: torch.Tensor, keep_ratio: float | None = None
    ) -> torch.Tensor:
        """Velocity [B, C, T, H, W] for ``video`` = concat(x_t, I, M) [B, 2C + 1, T, H, W] at flow
        times ``timestep`` [B]; ``keep_ratio`` (0, 1] turns on block-sparse attention."""
        c = self.config
        batch, _, frames, height, width = video.shape
        pt, ph, pw = c.patch_size
        grid = (frames // pt, height // ph, width // pw)
        weight = self.patch_embedding.weight
        x = self.patch_embedding(video.to(weight.dtype)).flatten(2).transpose(1, 2)
        e = self.time_embedding(
            sinusoidal_embedding(timestep * TIMESTEP_SCALE, c.freq_dim).to(weight.dtype)
        )
        e6 = self.time_projection(e).unflatten(1, (6, -1))
        table = device_table(_rotary_angles(grid, c.head_dim, c.rope_theta), video.device)
        backend = self.attention_backend if keep_ratio is None else "flex"
        for block, gate in zip(self.blocks, self.coarse_gates):
            sparsity = None if keep_ratio is None else BlockSparsity(grid, keep_ratio, gate)
            x, _ = block.attend(x, None, e6, table, None, backend, sparsity)
            x, _ = block.feed_forward(x, None, e6)
        out = self.head(x, e).reshape(batch, *grid, pt, ph, pw, -1)
        return out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(batch, -1, frames, height, width)


@torch.no_grad()
def initialise_from_video_stream(refiner: RefinerDiT, model: nn.Module) -> list[str]:
    """Copy the generator's video stream onto the refiner (DESIGN §4): patch embedding (same
    concat(x_t, I, M) input), time embedding, the first blocks' self-attention, FFN and
    modulation, and the head. Returns the refiner keys left as initialised (only the coarse gates,
    which start at zero, when widths match); the generator's text, cross-attention and audio
    weights have no place here. A generator kept in fp8 gives its true weights (its state dict
    holds the 8-bit codes, whose scale would be left behind)."""
    source = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, Float8Linear):
            source[f"{name}.weight"] = module.dequantised_weight()
    fresh = []
    for key, target in refiner.state_dict().items():
        value = source.get(key)
        if value is not None and value.shape == target.shape:
            target.copy_(value.to(target.dtype))
        else:
            fresh.append(key)
    return fresh


# -- the condition ---------------------------------------------------------------------------
@dataclass
class RefinerCondition:
    """What the refiner starts from and is conditioned on, at the refined size and frame rate.

    ``latents`` (I) [B, C, T', H', W']: the low-res clip upsampled in latent space, the inserted
    frames blended linearly from their neighbours, the high-res keyframes written at their frames;
    it is also the start of the denoising (noised to the start time). ``given`` (M)
    [B, 1, T', H', W']: 1 on frames the clip or a keyframe gives, 0 on inserted frames.
    ``held`` [B, 1, T', 1, 1] bool: the re-injected keyframes, kept bit-identical.
    """

    latents: torch.Tensor
    given: torch.Tensor
    held: torch.Tensor

    @property
    def model_condition(self) -> torch.Tensor:
        return torch.cat([self.latents, self.given], dim=1)


def refined_frame_count(frames: int, fps_factor: int) -> int:
    """Frames (pixel or latent) after interpolating by ``fps_factor``: r (F - 1) + 1."""
    return fps_factor * (frames - 1) + 1


def _check_factors(scale: int, fps_factor: int) -> None:
    if scale not in SCALES:
        raise InputError(
            "scale", f"{scale} is not a super-resolution factor", f"use one of {SCALES}"
        )
    if fps_factor not in FPS_FACTORS:
        raise InputError(
            "fps_factor", f"{fps_factor} is not a frame-rate factor", f"use one of {FPS_FACTORS}"
        )


def _check_keyframes(
    keyframes: torch.Tensor | None, indices: Sequence[int], low_res: torch.Tensor, scale: int
) -> list[int]:
    indices = [int(i) for i in indices]
    if keyframes is None:
        if indices:
            raise InputError(
                "keyframe_indices", "indices were given without keyframes", "connect the keyframes"
            )
        return []
    batch, channels, frames, height, width = low_res.shape
    if keyframes.dim() != 5 or keyframes.shape[2] != len(indices):
        raise InputError(
            "keyframe_indices",
            f"{len(indices)} indices for {keyframes.shape[2] if keyframes.dim() == 5 else '?'} keyframes",
            "give one latent frame index per keyframe",
        )
    if len(set(indices)) != len(indices):
        raise InputError("keyframe_indices", f"{indices} repeats a frame", "give each frame once")
    outside = [i for i in indices if not 0 <= i < frames]
    if outside:
        raise InputError(
            "keyframe_indices",
            f"latent frames {outside} are outside the clip's {frames} latent frames",
            f"use latent frames 0..{frames - 1}",
        )
    expected = (batch, channels, height * scale, width * scale)
    found = (keyframes.shape[0], keyframes.shape[1], *keyframes.shape[3:])
    if found != expected:
        raise InputError(
            "keyframes",
            f"keyframe latents of batch, channels, size {found} where {expected} is needed",
            f"render the keyframes at {scale}x the clip's latent size (the sampler's keyframe_scale)"
            " or set scale to match",
        )
    return indices


def build_condition(
    low_res: torch.Tensor,
    *,
    scale: int,
    fps_factor: int = 1,
    keyframes: torch.Tensor | None = None,
    keyframe_indices: Sequence[int] = (),
) -> RefinerCondition:
    """The refiner's condition from low-res latents [B, C, T, h, w] and optional high-res
    keyframes [B, C, K, h * scale, w * scale] at low-res latent frames ``keyframe_indices``.

    Upsampling is bilinear in space and linear in time between the kept frames: the cheapest
    guess that stays on the latent manifold's convex hull, which the refiner then corrects. A
    keyframe lands on refined latent frame ``fps_factor * i``, the group that ends on the same
    instant as its own; at fps_factor > 1 a held keyframe group other than frame 0 still plays the
    4 low-rate frames it encodes (the causal codec's grouping), so the interpolated frames around
    it are what moves smoothly.
    """
    _check_factors(scale, fps_factor)
    if low_res.dim() != 5:
        raise InputError(
            "latents", f"shape {tuple(low_res.shape)} is not video latents", "pass [B, C, T, H, W]"
        )
    indices = _check_keyframes(keyframes, keyframe_indices, low_res, scale)
    batch, channels, frames, height, width = low_res.shape
    low_res = low_res.float()
    size = (height * scale, width * scale)
    spatial = F.interpolate(low_res, size=(frames, *size), mode="trilinear", align_corners=False)
    refined_frames = refined_frame_count(frames, fps_factor)
    latents = F.interpolate(
        spatial, size=(refined_frames, *size), mode="trilinear", align_corners=True
    )
    kept = torch.arange(0, refined_frames, fps_factor, device=low_res.device)
    given = torch.zeros(batch, 1, refined_frames, *size, device=low_res.device)
    given[:, :, kept] = 1.0
    held = torch.zeros(batch, 1, refined_frames, 1, 1, dtype=torch.bool, device=low_res.device)
    if indices:
        targets = [fps_factor * i for i in indices]
        latents[:, :, targets] = keyframes.to(latents)
        held[:, :, targets] = True
    return RefinerCondition(latents, given, held)


# -- refinement ------------------------------------------------------------------------------
@dataclass
class RefinerSettings:
    """User-facing options. ``sparsity`` is the share of key cubes each query cube skips (0 =
    dense attention; 0.75 keeps a quarter plus the local cubes, DESIGN §4's target) where
    block-sparse attention pays off (:func:`refine`; smaller clips refine dense).
    ``denoise_start`` is the flow time the upsampled clip is noised to: lower keeps more of it,
    higher lets the refiner redraw more. A few uniform (shift 1) steps suffice from there: the
    condition pins the layout, so no steps need to go to the coarse structure that a
    generation's shift protects. The default, one step from 1, returns the refiner's mean
    prediction: on the demo's validation scenes it scores highest in PSNR (1 step from 1.0:
    -0.02 / +0.76 dB against bicubic at x1 / x2 fps; 4 steps from 0.6: -0.51 / -0.20)."""

    scale: int = 2
    fps_factor: int = 1
    reinject_keyframes: bool = True
    sparsity: float = 0.75
    steps: int = 1
    denoise_start: float = 1.0
    seed: int = 0
    solver: str = "euler"
    shift: float = 1.0

    def validate(self) -> RefinerSettings:
        """Every option checked before any work, each bad one an :class:`InputError`."""
        _check_factors(self.scale, self.fps_factor)
        if not 0.0 <= self.sparsity < 1.0:
            raise InputError(
                "sparsity", f"{self.sparsity} is outside [0, 1)", "use 0 (dense) to 0.95"
            )
        flow_sigmas(self.steps, self.shift, self.denoise_start)  # checks steps, shift and start
        return self

    @property
    def keep_ratio(self) -> float | None:
        """None (dense attention) at sparsity 0, else the share of key cubes kept."""
        return None if self.sparsity == 0.0 else 1.0 - self.sparsity


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    weight = model.patch_embedding.weight
    return weight.device, weight.dtype


def _check_latents(low_res: torch.Tensor, config: RefinerConfig, scale: int) -> None:
    """Latents [B, C, T, h, w] this refiner can take at ``scale``: its VAE's channels, and a
    refined size that splits into its patches. A latent from frames off the 16 px grid (Load AV
    Latent of a file saved before Encode Video checked them) fails the patch reshape deep inside
    the model otherwise."""
    if low_res.shape[1] != config.video_latent_channels:
        raise InputError(
            "latents",
            f"{low_res.shape[1]} latent channels for a refiner of {config.video_latent_channels}",
            "refine latents of the video VAE this refiner was trained with",
        )
    _, patch_h, patch_w = config.patch_size
    height, width = low_res.shape[3:]
    fitting = [s for s in SCALES if not (height * s % patch_h or width * s % patch_w)]
    if scale not in fitting:
        scales = f", or set scale to {' or '.join(map(str, fitting))}" if fitting else ""
        raise InputError(
            "av_latent",
            f"its {height} x {width} latent size times scale {scale} does not divide into the "
            f"refiner's {patch_h} x {patch_w} patches",
            f"encode frames whose height and width are multiples of {SPATIAL_STRIDE * patch_h} px"
            f"{scales}",
        )


def _refuse_past_ram(model: RefinerDiT, low_res: Sequence[int], settings: RefinerSettings) -> None:
    """On the CPU a pass past the RAM raises nothing (the OOM killer ends the host's process,
    with every queued render): a refine whose pass cannot fit is refused before it allocates,
    counting the least a pass can take, so nothing that fits is refused."""
    batch, channels, latent_frames, height, width = low_res
    scale, fps_factor = settings.scale, settings.fps_factor
    refined = (batch, channels, refined_frame_count(latent_frames, fps_factor), height * scale, width * scale)  # fmt: skip
    pixel_frames = refined_frame_count(pixel_frame_count(latent_frames), fps_factor)
    refuse_past_ram(
        model.activation_bytes(refined, least=True),
        "scale",
        f"refining to {pixel_frames} frames of {width * scale * SPATIAL_STRIDE} x "
        f"{height * scale * SPATIAL_STRIDE} px on the CPU",
        "a lower scale or fps_factor, a shorter take, or a machine with a GPU",
    )


def refine(
    model: RefinerDiT,
    low_res: torch.Tensor,
    settings: RefinerSettings,
    *,
    keyframes: torch.Tensor | None = None,
    keyframe_indices: Sequence[int] = (),
    hooks: SamplerHooks | None = None,
) -> torch.Tensor:
    """Refined latents [B, C, r (T - 1) + 1, h * scale, w * scale] (float32, on the model's
    device) from low-res latents [B, C, T, h, w].

    The held keyframes go through the sampler's own loop (:func:`~.sampling.denoise`) as known
    cells: on the noised path of their own noise, with the known velocity, so they come out
    bit-identical. The noise is drawn on the CPU from ``seed``: the same seed refines the same
    way on any device. ``settings.sparsity`` applies where block-sparse attention pays off
    (:func:`~.sparse_attention.sparse_pays_off`); smaller clips refine dense.
    """
    hooks = hooks or SamplerHooks()
    keep_ratio = settings.validate().keep_ratio
    device, dtype = _placement(model)
    if low_res.dim() == 5:
        _check_latents(low_res, model.config, settings.scale)
        if device.type == "cpu":
            _refuse_past_ram(model, low_res.shape, settings)
    if not settings.reinject_keyframes:
        keyframes, keyframe_indices = None, ()
    condition = build_condition(
        low_res.to(device),
        scale=settings.scale,
        fps_factor=settings.fps_factor,
        keyframes=None if keyframes is None else keyframes.to(device),
        keyframe_indices=keyframe_indices,
    )
    sigmas = flow_sigmas(settings.steps, settings.shift, settings.denoise_start).tolist()
    solver = make_solver(settings.solver, sigmas)
    start = condition.latents
    noise = initial_noise(settings.seed, [tuple(start.shape)], device)[0]
    held, model_condition = condition.held, condition.model_condition.to(dtype)
    # Dense where sparse would not pay (the refiner trains on both, so dense is a mode it knows:
    # on the demo world's 64 -> 128 px clips it refined 0.05-0.1 dB better, and faster).
    grid = tuple(n // p for n, p in zip(start.shape[2:], model.config.patch_size))
    if keep_ratio is not None and not sparse_pays_off(grid, keep_ratio):
        keep_ratio = None
    if hooks.reserve is not None:
        hooks.reserve(device, model.activation_bytes(tuple(start.shape)))

    def predict(index: int, sigma: float, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        timestep = torch.full((start.shape[0],), sigma, device=device)
        inputs = torch.cat([latents[0].to(dtype), model_condition], dim=1)
        velocity = model(inputs, timestep, keep_ratio).float()
        require_finite([velocity], index, settings.steps, dtype, loader="Load Refiner")
        return [velocity]

    noisy = [noised(start, noise, settings.denoise_start)]
    (x,) = denoise(predict, noisy, held, start, noise, sigmas, solver, hooks)
    return torch.where(held, start, x)


def check_take_keyframes(take: AVLatent, scale: int) -> None:
    """A take's own high-res keyframes fit only a refine at the scale they were rendered at
    (the Sampler's keyframe_scale)."""
    rendered_at = take.keyframes.shape[-1] // take.video.shape[-1]
    if rendered_at != scale:
        raise InputError(
            "scale",
            f"the take's keyframes were rendered at {rendered_at}x (the Sampler's "
            f"keyframe_scale), and scale is {scale}",
            f"set scale to {rendered_at}, or turn reinject_keyframes off",
        )


def refine_take(
    model: RefinerDiT,
    take: AVLatent,
    settings: RefinerSettings,
    *,
    keyframes: torch.Tensor | None = None,
    keyframe_indices: Sequence[int] = (),
    hooks: SamplerHooks | None = None,
) -> AVLatent:
    """A sampler's take refined as the Refine node refines it: ``keyframes`` (high-res latents
    at the latent frames ``keyframe_indices``) re-injected, else the take's own. The result
    carries the take's sound, the raised fps, its clip's own length and the rate its sound was
    made at, so it decodes, saves and reloads as the node's output does (a bare :func:`refine`
    leaves that bookkeeping to its caller: a take kept at its old fps plays at half speed)."""
    if keyframes is None and settings.reinject_keyframes and take.keyframes is not None:
        check_take_keyframes(take, settings.scale)
        keyframes, keyframe_indices = take.keyframes, take.keyframe_indices
    video = refine(
        model, take.video, settings, keyframes=keyframes, keyframe_indices=keyframe_indices,
        hooks=hooks,
    )  # fmt: skip
    factor = settings.fps_factor
    clip_frames = (
        None if take.clip_frames is None else refined_frame_count(take.clip_frames, factor)
    )
    return AVLatent(
        video=video,
        audio=take.audio,
        fps=take.fps * factor,
        clip_frames=clip_frames,
        source_fps=take.source_fps or take.fps,
    )


# -- checkpoints -----------------------------------------------------------------------------
def save_refiner(
    model: RefinerDiT, path: str | Path, extra_metadata: dict[str, str] | None = None
) -> Path:
    return save_model(model, path, extra_metadata, config_key=CONFIG_METADATA_KEY)


def load_refiner(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    input_name: str = "refiner",
    reserve: ReserveMemory | None = None,
) -> RefinerDiT:
    """A refiner checkpoint written by :func:`save_refiner`, key- and shape-validated before any
    tensor is read (the generator's loader checks, reused); ``reserve`` is asked for the room
    of its weights on ``device`` first."""
    path = Path(path)
    shapes, metadata = read_header(path, input_name)
    if CONFIG_METADATA_KEY not in metadata:
        raise CheckpointError(
            input_name,
            f"{path.name} is not a SkyReels-V4 refiner (no {CONFIG_METADATA_KEY} metadata)",
            "pick a refiner file from models/skyreels_refiner, or the bundled demo refiner",
        )
    values = json.loads(metadata[CONFIG_METADATA_KEY])
    config = RefinerConfig(**{**values, "patch_size": tuple(values["patch_size"])})
    with torch.device("meta"):
        model = RefinerDiT(config)
    validate_keys(shapes_of(model.state_dict()), shapes, input_name, config.name)
    if reserve is not None:
        reserve(torch.device(device), loaded_bytes(model, dtype))
    state = {
        key: value.to(device=device, dtype=dtype)
        for key, value in load_file(str(path), device="cpu").items()
    }
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval().requires_grad_(False)
