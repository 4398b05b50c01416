"""Speed parts: the staged 1080p path's analytic cost, a step against diffusers' Wan, step time
by part, the demo's training step, sparse vs dense attention and the LoRA hooks' overhead."""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from ..config import ModelConfig, get_preset
from ..demo.bundle import WEIGHTS_DIR
from ..demo.codecs import DemoAudioCodec, DemoVideoCodec
from ..demo.dataset import render_world
from ..demo.train import MODEL_STEPS, encode_world, model_step
from ..encoder import MLLMEncoder
from ..lora import LayerDelta, Lora
from ..mmdit import DualStreamMMDiT
from ..runtime import LoadedModel, compile_blocks, installed
from ..sparse_attention import (
    block_sparse_attention,
    dense_attention_flops,
    sparse_attention_flops,
    sparse_pays_off,
)
from ..training import adamw
from ..types import TextEncoding
from .instruments import (
    best_time,
    best_times,
    finished,
    scaled_preset,
    step_inputs,
)


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


@torch.no_grad()
def step_vs_diffusers(dim: int = 512, layers: int = 4, frames: int = 5, size: int = 32) -> dict:
    """Our Wan-compatible model vs diffusers' WanTransformer3DModel: same weights, same tokens."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

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
    timed = best_times(
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
    config = scaled_preset(dim, dual=3, single=1)
    model = DualStreamMMDiT(config).eval()
    inputs = step_inputs(config, frames, size, audio_tokens)
    run_step = lambda: model(*inputs[:3], audio=inputs[3])  # noqa: E731
    total_s = best_time(run_step)
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
    bundled codecs and text encoder) with its blocks compiled (train-demo's default) and eager
    (``--no-compile``), round-robin on the same batches; the seconds the first compiled steps
    spend compiling; and the minutes the model stage (``MODEL_STEPS``, the shipped schedule)
    takes compiled, which the issue's one-hour budget on 2 CPU cores is about."""
    video_codec = DemoVideoCodec.load(WEIGHTS_DIR / "video_codec.safetensors")
    audio_codec = DemoAudioCodec.load(WEIGHTS_DIR / "audio_codec.safetensors")
    encoder = MLLMEncoder.from_folder(WEIGHTS_DIR / "text_encoder", dtype=torch.float32)
    world = encode_world(render_world(scenes, seed=0), video_codec, audio_codec, encoder)

    losses: dict[str, list[float]] = {"compiled": [], "eager": []}

    def contender(name: str):
        torch.manual_seed(0)
        model = DualStreamMMDiT(get_preset("demo")).train()
        optimiser = adamw(model.parameters(), lr=1e-3, weight_decay=0.01)
        compiled = compile_blocks(model) if name == "compiled" else {}

        def run_steps() -> None:  # the same batches and tasks on every call
            generator = torch.Generator().manual_seed(0)
            with installed(compiled):
                for step in range(steps):
                    loss, _ = model_step(
                        model, optimiser, video_codec, world, step, MODEL_STEPS, batch, generator
                    )
                    losses[name].append(loss)

        return run_steps

    contenders = {name: contender(name) for name in losses}
    torch._dynamo.reset()  # compiled from nothing, as a train-demo run starts
    first_s: dict[str, float] = {}
    timed = best_times(contenders, repeats, first_s)
    compiled_s, eager_s = timed["compiled"] / steps, timed["eager"] / steps
    compile_s = first_s["compiled"] - timed["compiled"]
    # Both contenders train the same model on the same batches: their losses agree to rounding.
    loss_difference = max(abs(a - b) for a, b in zip(*losses.values(), strict=True))
    return {"batch": batch, "compiled_step_s": compiled_s, "eager_step_s": eager_s,
            "compiled_over_eager": compiled_s / eager_s, "compile_s": compile_s,
            "model_stage_minutes": (compiled_s * MODEL_STEPS + compile_s) / 60,
            "loss_difference": loss_difference}  # fmt: skip


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

    def measure(grid: tuple[int, int, int]) -> dict:
        length = math.prod(grid)
        q, k, v = (torch.randn(1, heads, length, head_dim, device=device, dtype=dtype) for _ in range(3))  # fmt: skip
        times = best_times({
            "dense": finished(lambda: F.scaled_dot_product_attention(q, k, v), device),
            "sparse": finished(lambda: block_sparse_attention(q, k, v, grid, keep_ratio=keep_ratio), device),
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
        times = best_times(
            {"none": step(model), "hooks": step(hooked_module), "merged": step(merged)}
        )
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
