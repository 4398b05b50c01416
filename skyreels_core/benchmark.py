"""``python -m skyreels_core bench``: speed and cost measured in one run (ratios, not asserts).

Parts (``--only`` picks some; ``--help`` lists them, :data:`PART_FUNCTIONS` maps each to the
function whose docstring says what it measures): tokens and FLOPs of a 1080p, 32 fps, 15 s render
direct vs. low-res + keyframes + sparse refiner; a step against diffusers' Wan with the same
weights; step time by part; memory and working memory; sparse vs dense attention; LoRA and step
cache overheads; schedules; and, only when named, the minutes-long demo measurements of long
clips and LoRA training, and what only a CUDA GPU measures (block swap, fp8, FlexAttention).

Memory on CPU is counted as *tracked tensor bytes*: every storage an aten op allocates while the
measurement runs (activations and streamed weight copies), plus the weights resident on the
compute device. A block-swapped layer's offload copy is not counted: on a GPU host it lives in CPU
RAM. Peak RSS (the whole process, libraries included) is reported for the demo command as well.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import subprocess
import sys
import tempfile
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .config import ModelConfig, get_preset
from .errors import InputError
from .paths import output_file, write_json
from .sparse_attention import dense_attention_flops, sparse_attention_flops


def _held_out_captions(cases: int) -> list[str]:
    """The prompts of the demo world's first ``cases`` held-out scenes, which no training saw."""
    from .demo.dataset import HELD_OUT_SEED
    from .demo.world import render_scene, sample_scene_spec

    return [render_scene(sample_scene_spec(HELD_OUT_SEED + i)).caption for i in range(cases)]


def step_flops(
    config: ModelConfig, video_tokens: int, audio_tokens: int, text_tokens: int = 256
) -> float:
    """Forward FLOPs of one model call (multiply-add = 2 FLOPs), per stream and block."""
    d, f = config.dim, config.ffn_dim

    def stream(tokens: int, text_cross: bool) -> float:
        joint = tokens + (text_tokens if config.joint_text else 0)
        projections = 2 * joint * (4 * d * d + 2 * d * f)  # q, k, v, o and the MLP
        attention = 4 * joint * joint * d
        cross = (
            (2 * tokens * 2 * d * d + 2 * text_tokens * 2 * d * d + 4 * tokens * text_tokens * d)
            if text_cross
            else 0
        )
        return projections + attention + cross

    per_block = stream(video_tokens, True)
    if config.has_audio and audio_tokens:
        exchange = 2 * (
            2 * (video_tokens + audio_tokens) * 2 * d * d + 4 * video_tokens * audio_tokens * d
        )
        per_block += stream(audio_tokens, False) + exchange
    return per_block * config.num_blocks


def video_tokens(width: int, height: int, frames: int, patch: int = 2) -> int:
    return (1 + (frames - 1) // 4) * math.ceil(height / 8 / patch) * math.ceil(width / 8 / patch)


def analytic(
    steps: int = 50, refiner_steps: int = 4, keyframes: int = 4, keep_ratio: float = 0.25
) -> dict:
    """Direct 1080p/32 fps/15 s vs the staged path of DESIGN §4 for the full preset."""
    config = get_preset("skyreels-v4-14b")
    audio = round(15 * 44100 / 1024)
    direct_tokens = video_tokens(1920, 1088, 15 * 32 + 1)
    direct = steps * step_flops(config, direct_tokens, audio)
    low_tokens = video_tokens(832, 480, 15 * 16 + 1) + keyframes * video_tokens(1920, 1088, 1)
    low = steps * step_flops(config, low_tokens, audio)
    refiner = ModelConfig(name="refiner", dim=config.dim, num_heads=config.num_heads, ffn_dim=config.ffn_dim,
                          num_dual_blocks=config.num_blocks, num_single_blocks=0, text_dim=config.text_dim,
                          joint_text=False, audio_latent_channels=None)  # fmt: skip
    dense_refiner = step_flops(refiner, direct_tokens, 0)
    grid = (1 + 15 * 32 // 4, 1088 // 16, 1920 // 16)
    attention_saved = dense_attention_flops(
        direct_tokens, config.head_dim, config.num_heads
    ) - sparse_attention_flops(grid, config.head_dim, config.num_heads, keep_ratio)
    sparse_refiner = refiner_steps * (dense_refiner - refiner.num_blocks * attention_saved)
    staged = low + sparse_refiner
    return {
        "direct": {"video_tokens": direct_tokens, "audio_tokens": audio, "steps": steps, "flops": direct},
        "staged": {
            "low_res_plus_keyframe_tokens": low_tokens, "steps": steps, "flops_generation": low,
            "refiner_tokens": direct_tokens, "refiner_steps": refiner_steps, "keep_ratio": keep_ratio,
            "flops_refiner": sparse_refiner, "flops": staged,
        },
        "staged_over_direct": staged / direct,
    }  # fmt: skip


def _finished(function: Callable[[], object], device: torch.device | str) -> Callable[[], object]:
    """``function`` run to its end: CUDA computes asynchronously, so a timer waits for it."""
    if torch.device(device).type != "cuda":
        return function

    def run():
        result = function()
        torch.cuda.synchronize(device)
        return result

    return run


def _time(function, repeats: int = 3) -> float:
    return _times({"only": function}, repeats)["only"]


def _times(functions: dict, repeats: int = 3) -> dict[str, float]:
    """Best wall time of each function, run round-robin after a warm-up, so a machine busy with
    other work slows every contender alike instead of whichever ran during the busy spell."""
    best = dict.fromkeys(functions, math.inf)
    for function in functions.values():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@torch.no_grad()
def step_vs_diffusers(dim: int = 512, layers: int = 4, frames: int = 5, size: int = 32) -> dict:
    """Our Wan-compatible model vs diffusers' WanTransformer3DModel: same weights, same tokens."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    from .mmdit import DualStreamMMDiT
    from .types import TextEncoding

    config = ModelConfig(name="wan-bench", dim=dim, num_heads=dim // 128, ffn_dim=4 * dim, num_dual_blocks=layers,
                         num_single_blocks=0, text_dim=4096, channel_concat_inpainting=False, joint_text=False,
                         audio_latent_channels=None)  # fmt: skip
    ours = DualStreamMMDiT(config).eval()
    theirs = WanTransformer3DModel(num_attention_heads=dim // 128, attention_head_dim=128, in_channels=16, out_channels=16,
                                   text_dim=4096, ffn_dim=4 * dim, num_layers=layers, cross_attn_norm=True,
                                   qk_norm="rms_norm_across_heads").eval()  # fmt: skip
    theirs.load_state_dict(convert_wan_transformer_to_diffusers(dict(ours.state_dict())))
    latents = torch.randn(1, 16, frames, size, size)
    text = torch.randn(1, 64, 4096)
    t = torch.tensor([0.5])
    encoding = TextEncoding(text, torch.ones(1, 64, dtype=torch.bool))
    timed = _times(
        {
            "ours": lambda: ours(latents, t, encoding),
            "theirs": lambda: theirs(latents, t * 1000, text),
        },
        repeats=7,
    )
    ours_s, theirs_s = timed["ours"], timed["theirs"]
    tokens = frames * (size // 2) ** 2
    return {
        "dim": dim,
        "layers": layers,
        "video_tokens": tokens,
        "ours_s": ours_s,
        "diffusers_s": theirs_s,
        "ours_over_diffusers": ours_s / theirs_s,
    }


def scaled_preset(dim: int, dual: int, single: int, preset: str = "skyreels-v4-14b") -> ModelConfig:
    """A 14B preset's shape (head dim 128, its FFN's ratio to the width, its channels; by default
    SkyReels-V4's: FFN 2.7 x width, 40 audio channels) at a width and depth a CPU runs in
    seconds."""
    full = get_preset(preset)
    return replace(full, name=f"{preset.removesuffix('-14b')}-scaled-{dim}", dim=dim, num_heads=dim // full.head_dim,
                   ffn_dim=32 * round(full.ffn_dim * dim / full.dim / 32), num_dual_blocks=dual,
                   num_single_blocks=single)  # fmt: skip


def step_inputs(
    config: ModelConfig,
    frames: int,
    size: int,
    audio_tokens: int,
    text_tokens: int = 64,
    width: int | None = None,
):
    """(video, timestep, text, audio) of one model call on latents of ``size`` (x ``width``);
    no audio for a model without an audio stream."""
    from .types import TextEncoding

    generator = torch.Generator().manual_seed(0)
    shape = (1, config.video_in_channels, frames, size, width or size)
    video = torch.randn(shape, generator=generator)
    audio = None
    if config.has_audio:
        audio = torch.randn(1, config.audio_latent_channels, audio_tokens, generator=generator)
    text = TextEncoding(torch.randn(1, text_tokens, config.text_dim, generator=generator),
                        torch.ones(1, text_tokens, dtype=torch.bool))  # fmt: skip
    return video, torch.tensor([0.5]), text, audio


class _PartTimer:
    """Exclusive wall time per part: each moment goes to the innermost part running."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.last = time.perf_counter()

    def _charge(self) -> None:
        now = time.perf_counter()
        if self.stack:
            self.totals[self.stack[-1]] += now - self.last
        self.last = now

    def enter(self, part: str) -> None:
        self._charge()
        self.stack.append(part)

    def exit(self) -> None:
        self._charge()
        self.stack.pop()

    def wrap(self, function, part: str):
        def timed(*args, **kwargs):
            self.enter(part)
            try:
                return function(*args, **kwargs)
            finally:
                self.exit()

        return timed

    def hook(self, module: torch.nn.Module, part: str) -> list:
        return [module.register_forward_pre_hook(lambda *_: self.enter(part)),
                module.register_forward_hook(lambda *_: self.exit())]  # fmt: skip


@torch.no_grad()
def step_split(
    dim: int = 256, frames: int = 21, size: int = 16, audio_tokens: int = 218, repeats: int = 5
) -> dict:
    """One dual-stream step's wall time by part, on CPU. video: the video stream's blocks (its
    joint attention kernel included); audio: the audio stream's; cross_modal: both directions of
    the audio-video exchange; text: text embeddings, the video stream's text cross-attention and
    the dual-stream blocks' separate text weights; other: patchify, RoPE tables, heads."""
    from .mmdit import DualStreamMMDiT

    config = scaled_preset(dim, dual=3, single=1)
    model = DualStreamMMDiT(config).eval()
    inputs = step_inputs(config, frames, size, audio_tokens)
    run_step = lambda: model(*inputs[:3], audio=inputs[3])  # noqa: E731
    total_s = _time(run_step)
    timer, handles = _PartTimer(), []
    streams = {
        "video": [*model.blocks, *model.single_blocks],
        "audio": [*model.audio_blocks, *model.audio_single_blocks],
    }
    for stream, blocks in streams.items():
        for block in blocks:
            for step in ("attend", "feed_forward"):
                setattr(block, step, timer.wrap(getattr(block, step), stream))
            if hasattr(block, "cross_attn"):
                block.cross_text = timer.wrap(block.cross_text, "text")
            handles += timer.hook(block.av_cross_attn, "cross_modal")
            if hasattr(block, "text_attn"):
                for module in (*block.text_attn.children(), block.text_ffn):
                    handles += timer.hook(module, "text")
    for module in (model.text_embedding, model.audio_text_embedding):
        handles += timer.hook(module, "text")
    best: dict[str, float] = defaultdict(lambda: math.inf)
    for _ in range(repeats):  # each part's best run: other work on the machine only adds time
        timer.totals.clear()
        timer.enter("other")
        run_step()
        timer.exit()
        for part, seconds in timer.totals.items():
            best[part] = min(best[part], seconds)
    for handle in handles:
        handle.remove()
    measured = sum(best.values())
    grid_tokens = frames * (size // 2) ** 2
    return {"config": f"{config.name}: dim {dim}, 3 dual + 1 single blocks", "video_tokens": grid_tokens,
            "audio_tokens": audio_tokens, "text_tokens": 64, "step_s": total_s,
            **{f"{part}_s": best.get(part, 0.0) for part in ("video", "audio", "cross_modal", "text", "other")},
            **{f"{part}_share": best.get(part, 0.0) / measured for part in ("video", "audio", "cross_modal", "text", "other")},
            "note": "exclusive CPU wall time by region; the joint attention kernel counts under its modality, "
                    "single-stream blocks process text with the modality weights (counted as the modality)"}  # fmt: skip


def demo_train_step(batch: int = 8, scenes: int = 16, steps: int = 10, repeats: int = 3) -> dict:
    """train-demo's model step (the demo preset, the multi-task mix on rendered world clips, the
    bundled codecs and text encoder) with AdamW's fused kernel and with its per-parameter loop,
    round-robin on the same batches; and the minutes its model stage (``MODEL_STEPS``, the shipped
    schedule) takes at the fused pace, which the issue's one-hour budget on 2 CPU cores is about."""
    from .demo.bundle import WEIGHTS_DIR
    from .demo.codecs import DemoAudioCodec, DemoVideoCodec
    from .demo.dataset import render_world
    from .demo.train import MODEL_STEPS, encode_world, model_step
    from .encoder import MLLMEncoder
    from .mmdit import DualStreamMMDiT

    video_codec = DemoVideoCodec.load(WEIGHTS_DIR / "video_codec.safetensors")
    audio_codec = DemoAudioCodec.load(WEIGHTS_DIR / "audio_codec.safetensors")
    encoder = MLLMEncoder.from_folder(WEIGHTS_DIR / "text_encoder", dtype=torch.float32)
    world = encode_world(render_world(scenes, seed=0), video_codec, audio_codec, encoder)

    losses: dict[str, list[float]] = {"fused": [], "loop": []}

    def contender(name: str):
        torch.manual_seed(0)
        model = DualStreamMMDiT(get_preset("demo")).train()
        optimiser = torch.optim.AdamW(model.parameters(), weight_decay=0.01, fused=name == "fused")

        def run_steps() -> None:  # the same batches and tasks on every call
            generator = torch.Generator().manual_seed(0)
            for step in range(steps):
                loss, _ = model_step(
                    model, optimiser, video_codec, world, step, MODEL_STEPS, batch, generator
                )
                losses[name].append(loss)

        return run_steps

    timed = _times({name: contender(name) for name in losses}, repeats)
    fused_s, loop_s = timed["fused"] / steps, timed["loop"] / steps
    # Both contenders train the same model on the same batches: their losses agree to rounding.
    loss_difference = max(abs(a - b) for a, b in zip(*losses.values(), strict=True))
    return {"batch": batch, "fused_step_s": fused_s, "loop_step_s": loop_s, "fused_over_loop": fused_s / loop_s,
            "model_stage_minutes": fused_s * MODEL_STEPS / 60, "loss_difference": loss_difference}  # fmt: skip


class TrackedTensorBytes(TorchDispatchMode):
    """Live and peak bytes of the tensor storages that aten ops allocate while the mode is on.

    A storage counts from the op that creates it until it is freed; views and in-place results
    (outputs sharing an input's storage) are not new memory. Tensors made before entering are
    not counted, so the caller adds what was resident (the weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._tracked: set[int] = set()

    def _freed(self, key: int, size: int) -> None:
        self._tracked.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}  # fmt: skip
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if key in inputs or key in self._tracked or size == 0:
                continue
            self._tracked.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key, size)
        return out


def _weight_bytes(model: torch.nn.Module, skipped: set[int] = frozenset()) -> int:
    return sum(t.numel() * t.element_size() for m in model.modules() if id(m) not in skipped
               for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)  # fmt: skip


def _measured_step(
    model, inputs, blocks: int, device: torch.device | str = "cpu", repeats: int = 1
) -> dict:
    """Compute-device bytes (resident weights + the step's peak) and wall time of one step on
    ``device``: the peak is the tracked tensor bytes on the CPU, CUDA's own count on a GPU."""
    from .runtime import LoadedModel

    loaded = LoadedModel(model, "bench", block_swap=blocks)
    video, timestep, text, audio = inputs
    with loaded.on(device) as module:
        streamer = module.weight_streamer
        resident = _weight_bytes(module, streamer.swapped_modules() if streamer else set())
        there = (video.to(device), timestep.to(device), text.to(device))
        audio = None if audio is None else audio.to(device)
        run_step = _finished(lambda: module(*there, audio=audio), device)
        step_s = _time(run_step, repeats)
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            run_step()
            step_peak = torch.cuda.max_memory_allocated(device) - before
        else:
            with TrackedTensorBytes() as tracked:
                run_step()
            step_peak = tracked.peak
    return {"step_s": step_s, "resident_weight_bytes": resident, "step_peak_bytes": step_peak,
            "device_peak_bytes": resident + step_peak}  # fmt: skip


def _demo_render_memory() -> dict:
    """Tracked bytes of one demo render in this process, and the demo command's peak RSS."""
    from .demo.render import DemoPipeline, RenderRequest, render

    pipeline = DemoPipeline.load()
    weights = sum(_weight_bytes(m) for m in (pipeline.model, pipeline.encoder.model))
    with TrackedTensorBytes() as tracked:
        render(pipeline, RenderRequest())
    with tempfile.TemporaryDirectory() as folder:
        before = children_peak_rss()
        subprocess.run([sys.executable, "-m", "skyreels_core", "demo", "--out", f"{folder}/demo.mp4"],
                       check=True, capture_output=True)  # fmt: skip
        peak = children_peak_rss()
    note = ("not measurable here (no getrusage: Windows)" if peak is None
            else "whole process incl. torch/ffmpeg libraries" if peak > before
            else "not measurable (an earlier child had a higher peak)")  # fmt: skip
    return {"request": "t2av, 33 frames, 64x64, 20 steps, guidance on", "model_and_encoder_weight_bytes": weights,
            "render_tracked_peak_bytes": tracked.peak, "demo_command_peak_rss_bytes": peak,
            "demo_command_peak_rss_note": note}  # fmt: skip


def rss_added_by(run: Callable[[], object]) -> int:
    """The most RSS ``run`` added to this process (Linux): its peak (VmHWM, reset through
    /proc/self/clear_refs just before) less the RSS it started from, libraries' workspaces
    included."""

    def status_bytes(field: str) -> int:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", status)[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from here
    before = status_bytes("VmRSS")
    run()
    return status_bytes("VmHWM") - before


def children_peak_rss() -> int | None:
    """The highest RSS of this process's finished children, in bytes: getrusage counts KiB on
    Linux and bytes on macOS; Windows has no getrusage (None), where importing it at the top
    had stopped every ``bench`` part."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def fewest_swapped_layers(model: torch.nn.Module, budget_bytes: float) -> int | None:
    """The fewest layers a block swap must stream for ``model``'s weights on the compute device
    (:func:`offload.device_bytes`: the resident ones and two in flight) to fit ``budget_bytes``;
    None where streaming them all is not enough."""
    from .offload import device_bytes, stream_layers

    layers = len(stream_layers(model))
    return next((n for n in range(layers + 1) if device_bytes(model, n) <= budget_bytes), None)


def gpu_weight_projection(budget_gib: float = 20.0) -> dict:
    """Analytic GPU weight bytes of the 14B-class presets in bf16 and with fp8 block weights, and
    the fewest swapped layers that bring them under ``budget_gib`` (a 24 GB card less room for
    480p activations and the CUDA context): the resident layers plus two in flight. The copy time
    assumes PCIe 4.0 x16 at 25 GB/s; it is hidden while each layer computes longer than it copies."""
    from .mmdit import DualStreamMMDiT
    from .offload import device_bytes, store_linears_in_fp8, stream_layers

    projection = {}
    for preset in ("wan2.1-t2v-14b", "skyreels-v4-14b"):
        for storage in ("bf16", "fp8_e4m3fn"):
            with torch.device("meta"):
                model = DualStreamMMDiT(get_preset(preset)).to(torch.bfloat16)
            if storage != "bf16":
                store_linears_in_fp8(model, torch.bfloat16)
            layers = [_weight_bytes(torch.nn.ModuleList(layer)) for layer in stream_layers(model)]
            fits = fewest_swapped_layers(model, budget_gib * 2**30)
            projection[f"{preset}.{storage}"] = {
                "weights_gib": _weight_bytes(model) / 2**30, "layers": len(layers), "block_swap_to_fit": fits,
                "weights_with_that_swap_gib": None if fits is None else device_bytes(model, fits) / 2**30,
                "streamed_per_forward_gib": None if fits is None else sum(layers[:fits]) / 2**30,
                "copy_s_per_forward_at_25_gbps": None if fits is None else sum(layers[:fits]) / 25e9}  # fmt: skip
    return {"budget_gib": budget_gib, **projection}


@torch.no_grad()
def memory(
    dim: int = 384, frames: int = 21, size: int = 16, audio_tokens: int = 218, swap: int = 30
) -> dict:
    """Peak memory of a demo render, and of one step of the full preset's shape (40 layers) at a
    CPU-sized width with each memory option; plus the analytic GPU weights of the 14B presets."""
    from .mmdit import DualStreamMMDiT
    from .offload import store_linears_in_fp8

    config = scaled_preset(dim, dual=30, single=10)
    inputs = step_inputs(config, frames, size, audio_tokens)
    torch.manual_seed(0)
    model = DualStreamMMDiT(config).eval()
    steps = {
        "fp32": _measured_step(model, inputs, 0),
        f"fp32_block_swap_{swap}": _measured_step(model, inputs, swap),
    }
    store_linears_in_fp8(model, torch.float32)
    steps["fp8"] = _measured_step(model, inputs, 0)
    steps[f"fp8_block_swap_{swap}"] = _measured_step(model, inputs, swap)
    base = steps["fp32"]
    for result in steps.values():
        result["device_peak_over_fp32"] = result["device_peak_bytes"] / base["device_peak_bytes"]
        result["step_time_over_fp32"] = result["step_s"] / base["step_s"]
    return {"demo_render": _demo_render_memory(),
            "scaled_step": {"config": f"{config.name}: dim {dim}, 30 dual + 10 single blocks, compute fp32 on CPU",
                            "video_tokens": frames * (size // 2) ** 2, "audio_tokens": audio_tokens, **steps},
            "gpu_weights_projected": gpu_weight_projection()}  # fmt: skip


@torch.no_grad()
def _random_model(config: ModelConfig, dtype: torch.dtype, draw_on: torch.device | str):
    """A model of ``config`` in ``dtype`` resting on the CPU, as a loader leaves it, its weights
    drawn on ``draw_on`` (a GPU draws 14B in seconds; speed and memory do not depend on values).
    Built on ``meta``: a 14B model never exists in float32, nor twice."""
    from .mmdit import DualStreamMMDiT

    with torch.device("meta"):
        model = DualStreamMMDiT(config).to(dtype)
    model = model.to_empty(device="cpu")
    generator = torch.Generator(draw_on).manual_seed(0)
    for tensor in model.parameters():
        drawn = torch.randn(tensor.shape, generator=generator, device=draw_on)
        tensor.copy_(drawn.mul_(0.02))
    return model.eval()


@torch.no_grad()
def device_step_and_attention(
    device: torch.device | str,
    config: ModelConfig,
    latent_size: tuple[int, int, int],
    text_tokens: int,
    budget_bytes: float,
    sparse_grids: tuple[tuple[int, int, int], ...],
    dtype: torch.dtype = torch.bfloat16,
) -> dict:
    """One model step of ``config`` (a video-only model: Wan's shape, no audio tokens) on
    ``device`` at ``latent_size`` (frames, height, width) without block swap, with the fewest swapped layers whose weights fit ``budget_bytes`` and
    with fp8 block weights (best of 3 after a warm-up, and the device's peak, against the working
    memory the model asks the host for and the least it counts); and the refiner's sparse
    attention against dense SDPA at ``sparse_grids`` with the model's heads."""
    from .mmdit import video_token_count
    from .offload import store_linears_in_fp8

    frames, height, width = latent_size
    inputs = step_inputs(config, frames, height, 0, text_tokens, width=width)
    model = _random_model(config, dtype, device)
    swap = fewest_swapped_layers(model, budget_bytes)
    if swap is None:
        raise InputError(
            "budget_gib", f"{budget_bytes / 2**30:.1f} GiB cannot hold {config.name}", "give more"
        )
    name = str(dtype).removeprefix("torch.")
    steps = {name: _measured_step(model, inputs, 0, device, repeats=3)}
    if swap:
        steps[f"{name}_block_swap_{swap}"] = _measured_step(model, inputs, swap, device, repeats=3)
    store_linears_in_fp8(model, dtype)
    steps["fp8"] = _measured_step(model, inputs, 0, device, repeats=3)
    # What the host is asked to make room for, and what the CPU's refusal counts, per row's peak.
    counted = ([(1, config.video_in_channels, *latent_size)], 0, text_tokens, 1)
    asked, least = (model.activation_bytes(*counted, least=least) for least in (False, True))
    for result in steps.values():
        result[f"step_time_over_{name}"] = result["step_s"] / steps[name]["step_s"]
        result["asked_over_step_peak"] = asked / result["step_peak_bytes"]
        result["least_over_step_peak"] = least / result["step_peak_bytes"]
    sparse = sparse_vs_dense(sparse_grids, config.num_heads, config.head_dim, device=device, dtype=dtype)  # fmt: skip
    return {"step": {"config": config.name, "latents": "x".join(map(str, latent_size)),
                     "video_tokens": video_token_count(config.patch_size, [latent_size]),
                     "text_tokens": text_tokens, "budget_gib": budget_bytes / 2**30, **steps},
            "sparse_attention": sparse}  # fmt: skip


def cuda(budget_gib: float = 20.0) -> dict:
    """What only a CUDA GPU measures, sized to a few minutes on a lent H100: a step of the Wan
    2.1 14B shape at 480p, 5 s (21 x 60 x 104 latents, 512 prompt tokens) in bf16, with the
    block swap a 24 GB card needs (the target: at most 25 % slower than none) and with fp8
    weights; and the refiner's sparse attention through the compiled FlexAttention kernel against
    dense SDPA at 480p and 720p refiner grids (the target: a third of dense's cost)."""
    if not torch.cuda.is_available():
        raise InputError(
            "--only",
            "part cuda needs a CUDA GPU, and torch sees none here",
            "run it on a machine with one, or leave cuda out",
        )
    config = get_preset("wan2.1-t2v-14b")
    grids = ((21, 30, 52), (21, 45, 80))
    results = device_step_and_attention("cuda", config, (21, 60, 104), 512, budget_gib * 2**30, grids)  # fmt: skip
    return {"device": torch.cuda.get_device_name(), **results}


def sparse_vs_dense(
    grids: tuple[tuple[int, int, int], ...] = (
        (9, 8, 8),
        (1, 32, 32),
        (8, 16, 16),
        (16, 32, 32),
        (17, 32, 32),
    ),
    heads: int = 4,
    head_dim: int = 64,
    keep_ratio: float = 0.25,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict:
    """The refiner's sparse attention (top-k cubes plus the neighbourhood, as the refiner runs it)
    vs dense SDPA, on ``device``'s path (compiled FlexAttention on CUDA, gathered SDPA
    elsewhere), at refiner token grids: the demo refiner's, one latent frame, two whose frames
    fill whole 4-frame cubes and a 1 + 4k one as real clips have; ``refine_runs`` is the path
    :func:`refine` takes there (:func:`sparse_pays_off`)."""
    import torch.nn.functional as F

    from .sparse_attention import block_sparse_attention, sparse_pays_off

    def measure(grid: tuple[int, int, int]) -> dict:
        length = math.prod(grid)
        q, k, v = (torch.randn(1, heads, length, head_dim, device=device, dtype=dtype) for _ in range(3))  # fmt: skip
        times = _times({
            "dense": _finished(lambda: F.scaled_dot_product_attention(q, k, v), device),
            "sparse": _finished(lambda: block_sparse_attention(q, k, v, grid, keep_ratio=keep_ratio), device),
        })  # fmt: skip
        dense_f = dense_attention_flops(length, head_dim, heads)
        sparse_f = sparse_attention_flops(grid, head_dim, heads, keep_ratio)
        return {"tokens": length, "keep_ratio": keep_ratio, "device": str(q.device),
                "dense_s": times["dense"], "sparse_s": times["sparse"],
                "time_ratio_dense_over_sparse": times["dense"] / times["sparse"],
                "flop_ratio_dense_over_sparse": dense_f / sparse_f,
                "refine_runs": "sparse" if sparse_pays_off(grid, keep_ratio) else "dense"}  # fmt: skip

    return {"x".join(map(str, grid)): measure(grid) for grid in grids}


@torch.no_grad()
def lora_overhead(
    dim: int = 384, rank: int = 32, frames: int = 5, size: int = 32, audio_tokens: int = 54
) -> dict:
    """One step of the full preset's shape (scaled down) with a rank-``rank`` LoRA on every Linear
    layer, applied by output hooks (the pack's way: the shared model never changes), against the
    same LoRA merged into a copy's weights (no per-call cost, a second copy of every patched
    weight) and against no LoRA; outputs checked equal so the three compute the same thing."""
    import copy

    from .lora import LayerDelta, Lora
    from .mmdit import DualStreamMMDiT
    from .runtime import LoadedModel

    torch.manual_seed(0)
    config = scaled_preset(dim, 3, 1)
    model = DualStreamMMDiT(config).eval()
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    lora = Lora("bench", layers={name: LayerDelta(down=torch.randn(rank, m.in_features) * 0.02,
                                                  up=torch.randn(m.out_features, rank) * 0.02)
                                 for name, m in linears.items()})  # fmt: skip
    merged = copy.deepcopy(model)
    for name, delta in lora.layers.items():
        merged.get_submodule(name).weight += delta.up @ delta.down
    hooked = LoadedModel(copy.deepcopy(model), "hooked").with_lora(lora, 1.0)
    inputs = step_inputs(config, frames, size, audio_tokens)

    def step(module):
        return lambda: module(*inputs[:3], audio=inputs[3])

    with hooked.on("cpu") as hooked_module:
        outputs = {"merged": step(merged)(), "hooks": step(hooked_module)()}
        times = _times({"none": step(model), "hooks": step(hooked_module), "merged": step(merged)})
    error = max((getattr(outputs["merged"], s) - getattr(outputs["hooks"], s)).abs().max().item()
                for s in ("video", "audio"))  # fmt: skip
    lora_bytes = sum(d.down.numel() + d.up.numel() for d in lora.layers.values()) * 4
    with torch.device("meta"):
        full = DualStreamMMDiT(get_preset("skyreels-v4-14b"))
    full_linears = [m for m in full.modules() if isinstance(m, torch.nn.Linear)]

    def lora_share(linears) -> float:  # a LoRA's FLOPs over its layers' own, per token
        extra = sum(rank * (m.in_features + m.out_features) for m in linears)
        return extra / sum(m.in_features * m.out_features for m in linears)

    return {"config": f"{config.name}: dim {dim}, 3 dual + 1 single blocks, fp32 on CPU",
            "rank": rank, "layers": len(linears), "lora_bytes": lora_bytes,
            "patched_weight_bytes": sum(m.weight.numel() * 4 for m in linears.values()),
            "video_tokens": frames * (size // 2) ** 2, "audio_tokens": audio_tokens,
            "hooks_over_none": times["hooks"] / times["none"],
            "merged_over_none": times["merged"] / times["none"],
            "hooks_vs_merged_max_abs_difference": error,
            "lora_flops_over_layer_flops": lora_share(linears.values()),
            "lora_flops_over_layer_flops_full_preset": lora_share(full_linears)}  # fmt: skip


@torch.no_grad()
def step_cache(
    cases: int = 24,
    thresholds: tuple[float, ...] = (0.1, 0.2, 0.5),
    steps: tuple[int, ...] = (20, 50),
) -> dict:
    """Demo renders of held-out prompts with the step cache at each threshold against the same
    renders uncached: model calls a render, wall time, PSNR of the decoded frames, and how many
    keep the uncached render's colour, shape and pitch."""
    from .demo.metrics import dominant_colour, dominant_pitch_colour, dominant_shape, psnr
    from .demo.render import DemoPipeline, RenderRequest, render

    pipeline = DemoPipeline.load()
    render(pipeline, RenderRequest(steps=2))  # first-call costs out of the timings
    calls = []
    pipeline.model.register_forward_hook(lambda *_: calls.append(1))

    def readings(frames, audio) -> tuple:
        pitch = dominant_pitch_colour(audio["waveform"][0], audio["sample_rate"])
        return dominant_colour(frames), dominant_shape(frames), pitch

    prompts = _held_out_captions(cases)
    results = {}
    for count in steps:
        plain = {}
        for threshold in (0.0, *thresholds):
            calls.clear()
            start, closeness, same = time.perf_counter(), [], 0
            for index, prompt in enumerate(prompts):
                request = RenderRequest(prompt=prompt, seed=index, steps=count,
                                        cache_threshold=threshold)  # fmt: skip
                frames, audio, _ = render(pipeline, request)
                if threshold == 0:
                    plain[index] = frames, readings(frames, audio)
                    continue
                closeness.append(psnr(frames, plain[index][0]))
                same += readings(frames, audio) == plain[index][1]
            seconds = time.perf_counter() - start
            if threshold == 0:
                uncached_s = seconds
                continue
            results[f"{count}_steps_threshold_{threshold:g}"] = {
                "model_calls_per_render": len(calls) / cases,
                "time_over_uncached": seconds / uncached_s,
                "psnr_vs_uncached_db": sum(closeness) / cases,
                "same_colour_shape_pitch": f"{same}/{cases}",
            }
    return results


class _Asked:
    """A reserve callback that records what it is asked for, and the tracked peak beside it."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def __call__(self, device: torch.device, needed_bytes: int) -> None:
        self.asked.append(needed_bytes)

    def measure(self, function, *args, **kwargs) -> dict:
        self.asked.clear()
        with TrackedTensorBytes() as tracked:
            function(*args, **kwargs)
        # On this CPU the weights rest where they compute, so what is asked is working memory.
        return {"asked_bytes": sum(self.asked), "tracked_peak_bytes": tracked.peak,
                "asked_over_peak": sum(self.asked) / tracked.peak}  # fmt: skip


def least_counted_and_peak(model: torch.nn.Module, run: Callable[[], object]) -> tuple[int, int]:
    """The least ``run``'s passes of ``model`` were counted to take (``activation_bytes(...,
    least=True)``, the figure the CPU's RAM refusal compares; the largest count) and the tracked
    peak of the tensors ``run`` allocated: the first must stay below the second."""
    counted, own = [], model.activation_bytes

    def count(*args, least: bool = False) -> int:
        counts = own(*args, least=least)
        if least:
            counted.append(counts)
        return counts

    model.activation_bytes = count
    try:
        with torch.no_grad(), TrackedTensorBytes() as tracked:
            run()
    finally:
        del model.activation_bytes
    return max(counted), tracked.peak


def _codec_memory(reserve: _Asked, video_sizes, audio_tokens) -> dict:
    from diffusers import AutoencoderKLWan, MMAudioVAE, MMAudioVocoder

    from .codecs.mmaudio import MMAudioCodec, _config
    from .codecs.wan_vae import CONFIG, WanVideoCodec

    wan = {k: v for k, v in json.loads(CONFIG.read_text()).items() if not k.startswith("_")}
    video = WanVideoCodec(AutoencoderKLWan.from_config(wan), reserve=reserve)
    results = {}
    for frames, height, width in video_sizes:
        latents = torch.randn(1, video.latent_channels, frames, height, width)
        name = f"wan_vae_{frames}x{height}x{width}"
        results[f"{name}.decode"] = reserve.measure(video.decode, latents)
        results[f"{name}.encode"] = reserve.measure(video.encode, video.decode(latents))
    audio = MMAudioCodec(MMAudioVAE.from_config(_config("mmaudio_44k_vae.json")),
                         MMAudioVocoder.from_config(_config("mmaudio_44k_vocoder.json")),
                         reserve=reserve)  # fmt: skip
    for tokens in audio_tokens:
        latents = torch.randn(1, audio.latent_channels, tokens)
        mel = audio.decode_mel(latents)
        results[f"mmaudio_{tokens}.vae"] = reserve.measure(audio.decode_mel, latents)
        results[f"mmaudio_{tokens}.vocoder"] = reserve.measure(audio.vocode, mel)
        results[f"mmaudio_{tokens}.encode"] = reserve.measure(audio.encode, audio.vocode(mel))
    return results


def _transformer_memory(reserve: _Asked, dims, video_sizes, audio_tokens) -> dict:
    from .mmdit import DualStreamMMDiT
    from .refiner import RefinerConfig, RefinerDiT, RefinerSettings, refine
    from .sampling import SamplerHooks, SamplerSettings, sample
    from .types import VideoCondition

    hooks, results = SamplerHooks(reserve=reserve), {}
    for dim in dims:
        config = scaled_preset(dim, dual=2, single=1)
        generator, refiner = (
            DualStreamMMDiT(config).eval(),
            RefinerDiT(RefinerConfig.from_model(config, 2)),
        )
        for frames, size in video_sizes:
            shape = (1, config.video_latent_channels, frames, size, size)
            condition = VideoCondition(torch.zeros(shape), torch.zeros(1, 1, *shape[2:]))
            text = step_inputs(config, frames, size, audio_tokens)[2]
            name = f"dim_{dim}_{frames}x{size}x{size}"
            sampled = partial(sample, generator, text=text, negative_text=None,
                              condition=condition, audio_tokens=audio_tokens, fps=16.0,
                              settings=SamplerSettings(steps=1), hooks=hooks)  # fmt: skip
            refined = partial(refine, refiner, torch.randn(shape), RefinerSettings(sparsity=0),
                              hooks=hooks)  # fmt: skip
            for part, model, run in (("sampler_guided", generator, sampled),
                                     ("refiner_dense", refiner, refined)):  # fmt: skip
                least, peak = least_counted_and_peak(model, run)
                results[f"{name}.{part}"] = {
                    **reserve.measure(run),
                    "least_over_peak": least / peak,
                }
    return results


@torch.no_grad()
def working_memory(
    video_sizes: tuple[tuple[int, int, int], ...] = ((3, 8, 8), (3, 16, 16)),
    audio_tokens: tuple[int, ...] = (32, 128),
    dims: tuple[int, ...] = (256, 512),
    model_sizes: tuple[tuple[int, int], ...] = ((5, 16), (9, 32)),
) -> dict:
    """The working memory each codec and transformer asks the host for before it computes (the
    reserve hooks, beside its weights) against the tracked peak of the same call, float32 on this
    CPU with random weights: the real Wan 2.1 VAE and MMAudio-44k VAE + vocoder architectures at
    (latent frames, height, width) and audio token counts; a guided sampler step and a refiner
    step (dense: off CUDA the sparse path gathers key cubes per query chunk, which CUDA's
    FlexAttention kernel never holds) of the 14B preset's shape at CPU widths, at (latent frames,
    latent size). A ratio below 1 would let the host keep too much resident and the pack run out
    of memory; at a few MiB the host's inference reserve, asked for beside, covers the rest."""
    torch.manual_seed(0)
    reserve = _Asked()
    return {**_codec_memory(reserve, video_sizes, audio_tokens),
            **_transformer_memory(reserve, dims, model_sizes, 54)}  # fmt: skip


@torch.no_grad()
def long_video(cases: int = 24, overlaps: tuple[int, ...] = (1, 5, 9)) -> dict:
    """Two 33-frame demo windows joined, as the long_video workflow makes them, on held-out
    prompts (the second window at the prompt's seed + 1), for each overlap kept by the second window:
    the object's step across the seam over the clip's median step, how often the seam is the
    largest step of all, the colour and shape of the two windows, and AV sync of the joined clip."""
    from .demo.metrics import (
        av_sync_error_ms,
        centroids,
        dominant_colour,
        dominant_shape,
        mean_av_sync,
    )
    from .demo.render import DemoPipeline, RenderRequest, render
    from .joining import join_clips, window_seed

    pipeline = DemoPipeline.load()
    prompts = _held_out_captions(cases)
    firsts = [render(pipeline, RenderRequest(prompt=p, seed=i)) for i, p in enumerate(prompts)]
    results = {}
    for overlap in overlaps:
        ratios, largest, kept, syncs = [], 0, 0, []
        for index, (prompt, (frames, audio, _)) in enumerate(zip(prompts, firsts)):
            request = RenderRequest(task="extend", prompt=prompt, seed=window_seed(index, 1),
                                    source=frames[frames.shape[0] - overlap :])  # fmt: skip
            second, second_audio, _ = render(pipeline, request)
            joined, sound = join_clips(frames, second, overlap, request.fps, audio, second_audio)
            fps, seam = request.fps, frames.shape[0] - 1  # the step into the first new frame
            (ratio,), is_largest = _seam_steps(centroids(joined), [seam], overlap)
            ratios.append(ratio)
            largest += is_largest
            halves = [joined[: seam + 1 - overlap], joined[seam + 1 :]]
            kept += len({(dominant_colour(h), dominant_shape(h)) for h in halves}) == 1
            syncs.append(av_sync_error_ms(joined, sound["waveform"][0], fps, sound["sample_rate"]))
        ratios.sort()
        results[f"overlap_{overlap}"] = {
            "seam_step_over_median_step": ratios[len(ratios) // 2],
            "seam_step_over_median_step_max": ratios[-1],
            "seam_is_the_largest_step": f"{largest}/{cases}",
            "same_colour_and_shape": f"{kept}/{cases}",
            **mean_av_sync(syncs),
        }
    return results


def _seam_steps(path: torch.Tensor, seams: list[int], overlap: int) -> tuple[list[float], bool]:
    """Each seam's step (from frame ``seam`` into the first new frame after it) over the median
    step away from the seams and their cross-faded frames, and whether a seam is the largest
    step of all. ``path``: the object's centroid per frame."""
    steps = (path[1:] - path[:-1]).norm(dim=-1)
    away = torch.ones_like(steps, dtype=torch.bool)
    for seam in seams:
        away[seam - overlap : seam + 1] = False
    others = steps[away]
    return [float(steps[s] / others.median()) for s in seams], bool(
        max(steps[s] for s in seams) > others.max()
    )


def extend_to_length_windows(cases: int = 24, total_frames: int = 117) -> dict:
    """The demo render continued to ``total_frames`` (four 33-frame windows, each keeping the
    last 5 frames) by ``render_longer``, the Extend to Length node's loop, on held-out prompts
    (window n at the prompt's seed + n): whether all windows keep the prompt's colour and shape,
    each seam's step over the median step, and AV sync over the whole clip."""
    from .demo.metrics import (
        av_sync_error_ms,
        centroids,
        dominant_colour,
        dominant_shape,
        mean_av_sync,
    )
    from .demo.render import DemoPipeline, RenderRequest, render, render_longer
    from .joining import DEFAULT_OVERLAP

    pipeline = DemoPipeline.load()
    kept, ratios, largest, syncs = 0, [], 0, []
    for index, prompt in enumerate(_held_out_captions(cases)):
        request = RenderRequest(prompt=prompt, seed=index)
        frames, audio, _ = render(pipeline, request)
        frames, audio = render_longer(pipeline, request, frames, audio, total_frames)
        step = request.frames - DEFAULT_OVERLAP
        seams = list(range(request.frames - 1, total_frames - 1, step))
        # Each window's own frames: the clip's up to its overlap, then each window's new ones.
        starts = [0, *range(request.frames, total_frames, step)]
        windows = [frames[start : start + step] for start in starts]
        kept += len({(dominant_colour(w), dominant_shape(w)) for w in windows}) == 1
        seam_ratios, is_largest = _seam_steps(centroids(frames), seams, DEFAULT_OVERLAP)
        ratios += seam_ratios
        largest += is_largest
        syncs.append(
            av_sync_error_ms(frames, audio["waveform"][0], request.fps, audio["sample_rate"])
        )
    ratios.sort()
    return {
        "frames": total_frames,
        "windows": len(seams) + 1,
        "same_colour_and_shape_in_every_window": f"{kept}/{cases}",
        "seam_step_over_median_step": ratios[len(ratios) // 2],
        "a_seam_is_the_largest_step": f"{largest}/{cases}",
        **mean_av_sync(syncs),
    }


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """The host's KarrasScheduler (k-diffusion's get_sigmas_karras): ``steps`` times spaced
    uniformly in ``sigma ** (1 / rho)`` from ``sigma_max`` to ``sigma_min``, then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    high, low = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [*((high + ramp * (low - high)) ** rho).tolist(), 0.0]


def schedules(cases: int = 24) -> dict:
    """Held-out prompts rendered with the demo's own shifted schedule and with the host's Karras
    schedule (sigma_max 1, flow matching's pure noise) through the Sampler's ``sigmas``, at 20
    and 8 steps: how often colour, shape and hum follow the prompt, and the AV sync."""
    from .demo.metrics import (
        av_sync_error_ms,
        dominant_colour,
        dominant_pitch_colour,
        dominant_shape,
        mean_av_sync,
    )
    from .demo.render import DemoPipeline, RenderRequest, render

    pipeline = DemoPipeline.load()
    captions = _held_out_captions(cases)
    results = {}
    for steps in (20, 8):
        for name, sigmas in (("shift_3", None), ("karras", karras_sigmas(steps, 0.002, 1.0))):
            colours = shapes = hums = 0
            syncs = []
            for index, caption in enumerate(captions):
                colour, shape = caption.split()[1:3]  # "a red circle ..."
                request = RenderRequest(prompt=caption, seed=index, steps=steps, sigmas=sigmas)
                frames, audio, _ = render(pipeline, request)
                waveform, rate = audio["waveform"][0], audio["sample_rate"]
                colours += dominant_colour(frames) == colour
                shapes += dominant_shape(frames) == shape
                hums += dominant_pitch_colour(waveform, rate) == colour
                syncs.append(av_sync_error_ms(frames, waveform, request.fps, rate))
            results[f"{name}_{steps}_steps"] = {
                "colour": f"{colours}/{cases}", "shape": f"{shapes}/{cases}",
                "pitch": f"{hums}/{cases}", **mean_av_sync(syncs),
            }  # fmt: skip
    return results


@torch.no_grad()
def _palette_readings(pipeline, lora, cases: int, strength: float = 1.0) -> dict:
    """What a LoRA does to held-out prompts at ``strength``: colours and hums moved to the
    palette shift's next colour, shapes kept, and the sound's sync kept."""
    from .demo.metrics import (
        av_sync_error_ms,
        dominant_colour,
        dominant_pitch_colour,
        dominant_shape,
        mean_av_sync,
    )
    from .demo.render import RenderRequest, render
    from .demo.train_lora import PALETTE_SHIFT
    from .lora import applied

    colours = hums = shapes = 0
    syncs = []
    for index, caption in enumerate(_held_out_captions(cases)):
        shifted, shape = PALETTE_SHIFT[caption.split()[1]], caption.split()[2]  # "a red circle ..."
        with applied(pipeline.model, [(lora, strength)], torch.device("cpu")):
            frames, audio, _ = render(pipeline, RenderRequest(prompt=caption, seed=index))
        colours += dominant_colour(frames) == shifted
        hums += dominant_pitch_colour(audio["waveform"][0], audio["sample_rate"]) == shifted
        shapes += dominant_shape(frames) == shape
        syncs.append(av_sync_error_ms(frames, audio["waveform"][0], 16.0, audio["sample_rate"]))
    return {"colours_shifted": f"{colours}/{cases}", "hums_shifted": f"{hums}/{cases}",
            "shapes_kept": f"{shapes}/{cases}", **mean_av_sync(syncs)}  # fmt: skip


def lora_training(cases: int = 24, clips: int = 256, steps: int = 400) -> dict:
    """The bundled palette-shift LoRA on held-out prompts, and one trained the way a user trains
    one: the palette-shifted world written as ``clips`` captioned MP4 files (H.264 + AAC) and
    ``train-demo-lora --clips`` for ``steps`` steps, read the same way."""
    from .__main__ import main
    from .av_io import write_mp4
    from .demo import bundle
    from .demo.dataset import render_world
    from .demo.render import DemoPipeline
    from .demo.train_lora import PALETTE_SHIFT
    from .lora import read_lora

    pipeline = DemoPipeline.load()
    bundled = read_lora(bundle.lora_path(), pipeline.model)
    results = {
        "bundled": _palette_readings(pipeline, bundled, cases),
        "bundled_at_half_strength": _palette_readings(pipeline, bundled, cases, strength=0.5),
    }
    with tempfile.TemporaryDirectory() as folder:
        shifted = Path(folder) / "palette_shift"
        shifted.mkdir()
        world = render_world(clips, seed=0, palette=PALETTE_SHIFT)
        for index, (pixels, sound, caption) in enumerate(
            zip(world.pixels, world.audio, world.captions)
        ):
            write_mp4(
                shifted / f"{index:04d}.mp4",
                pixels,
                16.0,
                {"waveform": sound[None], "sample_rate": 16000},
            )
            (shifted / f"{index:04d}.txt").write_text(caption)
        start = time.perf_counter()
        main(["train-demo-lora", "--clips", str(shifted), "--out", folder, "--steps", str(steps)])
        minutes = (time.perf_counter() - start) / 60
        trained = read_lora(Path(folder) / "palette_shift.safetensors", pipeline.model)
        results["from_clips"] = {"clips": clips, "steps": steps, "train_minutes": minutes,
                                 **_palette_readings(pipeline, trained, cases)}  # fmt: skip
    return results


PART_FUNCTIONS = {"analytic": analytic, "step": step_vs_diffusers, "split": step_split,
                  "train": demo_train_step, "memory": memory, "sparse": sparse_vs_dense,
                  "lora": lora_overhead, "cache": step_cache, "working_memory": working_memory,
                  "schedules": schedules, "long_video": long_video,
                  "extend_to_length": extend_to_length_windows,
                  "lora_training": lora_training, "cuda": cuda}  # fmt: skip
# Minutes each on 2 CPU cores, or a GPU's, so run only when named.
LONGER_PARTS = ("long_video", "extend_to_length", "lora_training", "cuda")
PARTS = tuple(part for part in PART_FUNCTIONS if part not in LONGER_PARTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts of {', '.join(PARTS)} (the default), and the longer "
        f"{', '.join(LONGER_PARTS)}",
    )


def _rows(values: dict, prefix: str = ""):
    """(dotted key, readable value) for the table; bytes in MiB, floats to 4 digits."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _rows(value, f"{name}.")
        elif key.endswith("_bytes"):
            yield name.removesuffix("_bytes") + "_mib", f"{value / 2**20:.1f}"
        else:
            yield name, f"{value:.4g}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    chosen = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in PART_FUNCTIONS]
    if unknown:
        raise InputError(
            "--only", f"unknown parts {unknown}", f"choose from {', '.join(PARTS + LONGER_PARTS)}"
        )
    if args.json:  # a str: Path would drop the "/" that says a folder was meant
        args.json = output_file(args.json, "--json", "bench.json")
    results = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}}  # fmt: skip
    for part in chosen:
        results[part] = PART_FUNCTIONS[part]()
        print(f"[{part}]")
        for key, value in _rows(results[part]):
            print(f"  {key:48s} {value}")
    if args.json:
        write_json(args.json, results, "--json")
        print(f"wrote {args.json}")
    return 0
