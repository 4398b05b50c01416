"""Parts that read the demo model's renders with the eval's metrics (colour, shape, pitch, AV
sync, seams) on held-out prompts: the step cache, long clips, schedules, joint keyframes and LoRA
training."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..av_io import write_mp4
from ..decoding import take_frames
from ..demo import bundle
from ..demo.dataset import HELD_OUT_SEED, render_world
from ..demo.metrics import (
    av_sync_error_ms,
    centroids,
    dominant_colour,
    dominant_pitch_colour,
    dominant_shape,
    mean_av_sync,
    psnr,
)
from ..demo.train_lora import PALETTE_SHIFT
from ..demo.world import render_scene, sample_scene_spec
from ..joining import DEFAULT_OVERLAP, join_clips, window_seed
from ..lora import applied, read_lora
from ..refiner import RefinerSettings, load_refiner, refine_take
from ..render import Pipeline, RenderRequest, render, render_longer


def _held_out_captions(cases: int) -> list[str]:
    """The prompts of the demo world's first ``cases`` held-out scenes, which no training saw."""
    return [render_scene(sample_scene_spec(HELD_OUT_SEED + i)).caption for i in range(cases)]


@torch.no_grad()
def step_cache(
    cases: int = 24,
    thresholds: tuple[float, ...] = (0.1, 0.2, 0.5),
    steps: tuple[int, ...] = (20, 50),
    model: Path | None = None,
) -> dict:
    """Demo renders of held-out prompts with the step cache at each threshold against the same
    renders uncached: model calls a render, wall time, PSNR of the decoded frames, and how many
    keep the uncached render's colour, shape and pitch."""
    pipeline = Pipeline.load(model)
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


@torch.no_grad()
def long_video(
    cases: int = 24, overlaps: tuple[int, ...] = (1, 5, 9), model: Path | None = None
) -> dict:
    """Two 33-frame demo windows joined, as the long_video workflow makes them, on held-out
    prompts (the second window at the prompt's seed + 1), for each overlap kept by the second window:
    the object's step across the seam over the clip's median step, how often the seam is the
    largest step of all, the colour and shape of the two windows, and AV sync of the joined clip."""
    pipeline = Pipeline.load(model)
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


def extend_to_length_windows(
    cases: int = 24, total_frames: int = 117, model: Path | None = None
) -> dict:
    """The demo render continued to ``total_frames`` (four 33-frame windows, each keeping the
    last 5 frames) by ``render_longer``, the Extend to Length node's loop, on held-out prompts
    (window n at the prompt's seed + n): whether all windows keep the prompt's colour and shape,
    each seam's step over the median step, and AV sync over the whole clip."""
    pipeline = Pipeline.load(model)
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


@torch.no_grad()
def joint_keyframes(cases: int = 24, frames: int = 17, model: Path | None = None) -> dict:
    """Held-out prompts rendered as the low_res_keyframes_refiner workflow renders them (a 64 px
    clip with its first and last frames also at 128 px in the same pass, then Refine at twice
    the size and fps, the keyframes laid in), against the same take refined without them: each
    end frame shrunk back to 64 px against the clip's own (PSNR, and colour and shape alike),
    and the step from the refined clip's first frame into its second (PSNR of the two: a
    keyframe that disagrees with the clip around it shows as a jump there)."""
    pipeline, refiner = Pipeline.load(model), load_refiner(bundle.refiner_path())
    names = {"with_keyframes": True, "without_keyframes": False}  # Refine's reinject_keyframes
    ends = {name: [] for name in names}  # (PSNR, colour alike, shape alike) per end frame
    first_steps = {name: [] for name in names}
    for index, caption in enumerate(_held_out_captions(cases)):
        request = RenderRequest(prompt=caption, seed=index, frames=frames, keyframe_indices=(0, -1))
        clip, _, take = render(pipeline, request)
        for name, reinject in names.items():
            settings = RefinerSettings(fps_factor=2, reinject_keyframes=reinject)
            refined = take_frames(refine_take(refiner, take, settings), pipeline.video_codec)[0]
            shrunk = torch.nn.functional.avg_pool2d(refined[[0, -1]].permute(0, 3, 1, 2), 2)
            for end, own in zip(shrunk.permute(0, 2, 3, 1)[:, None], clip[[0, -1]][:, None]):
                colour = dominant_colour(end) == dominant_colour(own)
                ends[name].append(
                    (psnr(end, own), colour, dominant_shape(end) == dominant_shape(own))
                )
            first_steps[name].append(psnr(refined[:1], refined[1:2]))
    return {
        name: {
            "end_frames_vs_clip_psnr_db": sum(r[0] for r in ends[name]) / (2 * cases),
            "end_frames_colour_alike": f"{sum(r[1] for r in ends[name])}/{2 * cases}",
            "end_frames_shape_alike": f"{sum(r[2] for r in ends[name])}/{2 * cases}",
            "first_step_psnr_db": sum(first_steps[name]) / cases,
        }
        for name in names
    }


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """The host's KarrasScheduler (k-diffusion's get_sigmas_karras): ``steps`` times spaced
    uniformly in ``sigma ** (1 / rho)`` from ``sigma_max`` to ``sigma_min``, then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    high, low = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [*((high + ramp * (low - high)) ** rho).tolist(), 0.0]


def schedules(cases: int = 24, model: Path | None = None) -> dict:
    """Held-out prompts rendered with the demo's own shifted schedule and with the host's Karras
    schedule (sigma_max 1, flow matching's pure noise) through the Sampler's ``sigmas``, at 20
    and 8 steps: how often colour, shape and hum follow the prompt, and the AV sync."""
    pipeline = Pipeline.load(model)
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
    from ..__main__ import main

    pipeline = Pipeline.load()
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
