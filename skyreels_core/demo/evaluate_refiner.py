"""The refiner's metric of DESIGN §6 on held-out scenes of the demo world.

Both contenders start from the same thing, the 64 px clip's latents (what the sampler hands the
refiner): the refiner refines them and the codec decodes the result; the baseline decodes them
and upsamples the frames bicubically (and, at a higher frame rate, blends neighbouring frames
linearly in time). Both are scored by PSNR against the world rendered directly at the refined
size (128 px at the trained 2x) and the full frame rate. The codec's own reconstruction error
bounds both, so the margin is read against ``codec_psnr_db``, the refined size's own
encode-decode.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..refiner import RefinerDiT, RefinerSettings, refine, refined_frame_count
from .dataset import HELD_OUT_SEED
from .metrics import psnr
from .train_refiner import SCALE, encode_pair, scene_pair

FIRST_SEED = HELD_OUT_SEED + 3000  # clear of the generator eval's held-out scenes


def bicubic_baseline(frames: torch.Tensor, scale: int, fps_factor: int) -> torch.Tensor:
    """[T, h, w, 3] -> [r (T - 1) + 1, h * scale, w * scale, 3]: bicubic in space, linear in time."""
    x = F.interpolate(frames.permute(0, 3, 1, 2), scale_factor=scale, mode="bicubic").clamp(0, 1)
    size = (refined_frame_count(frames.shape[0], fps_factor), *x.shape[2:])
    # align_corners keeps the first and last frames (and the unchanged spatial size) exact.
    x = F.interpolate(x.transpose(0, 1)[None], size=size, mode="trilinear", align_corners=True)
    return x[0].permute(1, 2, 3, 0)


@torch.no_grad()
def refiner_psnr(
    refiner: RefinerDiT,
    codec,
    *,
    cases: int = 4,
    settings: RefinerSettings | None = None,
    keyframe_indices: Sequence[int] = (),
    first_seed: int = FIRST_SEED,
) -> dict:
    """Mean PSNR (dB) of the refined clip and of the bicubic baseline against ground truth, over
    ``cases`` held-out scenes. ``keyframe_indices`` (low-res latent frames) re-injects the true
    128 px keyframes there, as a perfect keyframe sampler would give them."""
    settings = settings or RefinerSettings(scale=SCALE)
    r = settings.fps_factor
    refined_scores, bicubic_scores, codec_scores = [], [], []
    for case in range(cases):
        low, high = (frames[None] for frames in scene_pair(first_seed + case, settings.scale))
        low_latents, high_latents = encode_pair(codec, low, high, r)
        keyframes = high_latents[:, :, list(keyframe_indices)] if keyframe_indices else None
        refined = refine(
            refiner, low_latents, settings, keyframes=keyframes, keyframe_indices=keyframe_indices
        )
        truth = high[0]
        refined_scores.append(psnr(codec.decode(refined)[0], truth))
        baseline = bicubic_baseline(codec.decode(low_latents)[0], settings.scale, r)
        bicubic_scores.append(psnr(baseline, truth))
        codec_scores.append(psnr(codec.decode(codec.encode(high))[0], truth))
    refined_db, bicubic_db = statistics.fmean(refined_scores), statistics.fmean(bicubic_scores)
    return {
        "refined_psnr_db": refined_db,
        "bicubic_psnr_db": bicubic_db,
        "gain_db": refined_db - bicubic_db,
        "codec_psnr_db": statistics.fmean(codec_scores),
        "cases": cases,
        "fps_factor": r,
        "scale": settings.scale,
        "keyframe_indices": list(keyframe_indices),
    }
