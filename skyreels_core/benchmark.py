"""``python -m skyreels_core bench``: speed and cost measured in one run (ratios, not asserts).

Parts (``--only`` picks some): ``analytic`` (tokens and FLOPs of a 1080p, 32 fps, 15 s render done
directly vs. low-res clip + high-res keyframes + sparse refiner), ``step`` (one denoising step of
the Wan-compatible model vs diffusers' WanTransformer3DModel with the same weights and tokens),
``sparse`` (block-sparse vs dense attention at refiner token counts).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from .config import ModelConfig, get_preset
from .sparse_attention import dense_attention_flops, sparse_attention_flops

PARTS = ("analytic", "step", "sparse")


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


def _time(function, repeats: int = 3) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


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
    ours_s = _time(lambda: ours(latents, t, encoding))
    theirs_s = _time(lambda: theirs(latents, t * 1000, text))
    tokens = frames * (size // 2) ** 2
    return {
        "dim": dim,
        "layers": layers,
        "video_tokens": tokens,
        "ours_s": ours_s,
        "diffusers_s": theirs_s,
        "ours_over_diffusers": ours_s / theirs_s,
    }


def sparse_vs_dense(
    grid: tuple[int, int, int] = (8, 16, 16),
    heads: int = 4,
    head_dim: int = 64,
    keep_ratio: float = 0.25,
) -> dict:
    import warnings

    import torch.nn.functional as F

    from .sparse_attention import block_sparse_attention

    warnings.filterwarnings("ignore", message=".*flex_attention.*")
    length = math.prod(grid)
    q, k, v = (torch.randn(1, heads, length, head_dim) for _ in range(3))
    dense_s = _time(lambda: F.scaled_dot_product_attention(q, k, v))
    sparse_s = _time(
        lambda: block_sparse_attention(q, k, v, grid, keep_ratio=keep_ratio, local=False)
    )
    dense_f = dense_attention_flops(length, head_dim, heads)
    sparse_f = sparse_attention_flops(grid, head_dim, heads, keep_ratio, local=False)
    return {"grid": grid, "tokens": length, "keep_ratio": keep_ratio, "dense_s": dense_s, "sparse_s": sparse_s,
            "time_ratio_dense_over_sparse": dense_s / sparse_s, "flop_ratio_dense_over_sparse": dense_f / sparse_f,
            "note": "eager FlexAttention on CPU evaluates the mask densely; the time gain needs compiled flex on GPU"}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}"
    )


def run(args: argparse.Namespace) -> int:
    chosen = [part.strip() for part in args.only.split(",") if part.strip()]
    functions = {"analytic": analytic, "step": step_vs_diffusers, "sparse": sparse_vs_dense}
    results = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}}  # fmt: skip
    for part in chosen:
        results[part] = functions[part]()
        print(f"[{part}]")
        for key, value in results[part].items():
            print(f"  {key:32s} {value if not isinstance(value, float) else f'{value:.4g}'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0
