"""Memory parts: a demo render's and a scaled step's peak under each memory option, the working
memory codecs and transformers ask the host for, and what only a CUDA GPU measures.

Memory on CPU is counted as *tracked tensor bytes*: every storage an aten op allocates while the
measurement runs (activations and streamed weight copies), plus the weights resident on the
compute device. A block-swapped layer's offload copy is not counted: on a GPU host it lives in CPU
RAM. Peak RSS (the whole process, libraries included) is reported for the demo command as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from functools import partial

import torch

from ..codecs.mmaudio import MMAudioCodec, _config
from ..codecs.wan_vae import CONFIG, WanVideoCodec
from ..config import ModelConfig, get_preset
from ..errors import InputError
from ..mmdit import DualStreamMMDiT, video_token_count
from ..offload import device_bytes, store_linears_in_fp8, stream_layers
from ..refiner import RefinerConfig, RefinerDiT, RefinerSettings, refine
from ..render import Pipeline, RenderRequest, render
from ..runtime import LoadedModel
from ..sampling import SamplerHooks, SamplerSettings, sample
from ..types import VideoCondition
from .instruments import (
    TrackedTensorBytes,
    best_time,
    children_peak_rss,
    finished,
    least_counted_and_peak,
    scaled_preset,
    step_inputs,
    weight_bytes,
)
from .speed import sparse_vs_dense


def _measured_step(
    model, inputs, blocks: int, device: torch.device | str = "cpu", repeats: int = 1
) -> dict:
    """Compute-device bytes (resident weights + the step's peak) and wall time of one step on
    ``device``: the peak is the tracked tensor bytes on the CPU, CUDA's own count on a GPU."""
    loaded = LoadedModel(model, "bench", block_swap=blocks)
    video, timestep, text, audio = inputs
    with loaded.on(device) as module:
        streamer = module.weight_streamer
        resident = weight_bytes(module, streamer.swapped_modules() if streamer else set())
        there = (video.to(device), timestep.to(device), text.to(device))
        audio = None if audio is None else audio.to(device)
        run_step = finished(lambda: module(*there, audio=audio), device)
        step_s = best_time(run_step, repeats)
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
    pipeline = Pipeline.load()
    weights = sum(weight_bytes(m) for m in (pipeline.model, pipeline.encoder.model))
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


def fewest_swapped_layers(model: torch.nn.Module, budget_bytes: float) -> int | None:
    """The fewest layers a block swap must stream for ``model``'s weights on the compute device
    (:func:`offload.device_bytes`: the resident ones and two in flight) to fit ``budget_bytes``;
    None where streaming them all is not enough."""
    layers = len(stream_layers(model))
    return next((n for n in range(layers + 1) if device_bytes(model, n) <= budget_bytes), None)


def gpu_weight_projection(budget_gib: float = 20.0) -> dict:
    """Analytic GPU weight bytes of the 14B-class presets in bf16 and with fp8 block weights, and
    the fewest swapped layers that bring them under ``budget_gib`` (a 24 GB card less room for
    480p activations and the CUDA context): the resident layers plus two in flight. The copy time
    assumes PCIe 4.0 x16 at 25 GB/s; it is hidden while each layer computes longer than it copies."""
    projection = {}
    for preset in ("wan2.1-t2v-14b", "skyreels-v4-14b"):
        for storage in ("bf16", "fp8_e4m3fn"):
            with torch.device("meta"):
                model = DualStreamMMDiT(get_preset(preset)).to(torch.bfloat16)
            if storage != "bf16":
                store_linears_in_fp8(model, torch.bfloat16)
            layers = [weight_bytes(torch.nn.ModuleList(layer)) for layer in stream_layers(model)]
            fits = fewest_swapped_layers(model, budget_gib * 2**30)
            projection[f"{preset}.{storage}"] = {
                "weights_gib": weight_bytes(model) / 2**30, "layers": len(layers), "block_swap_to_fit": fits,
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


def _codec_memory(reserve: _Asked, video_sizes, audio_tokens) -> dict:
    from diffusers import AutoencoderKLWan, MMAudioVAE, MMAudioVocoder

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
