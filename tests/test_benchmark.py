"""The analytic cost model behind the staged 1080p path (DESIGN §4) and the bench's own
instruments (tracked tensor bytes, the part timer, the GPU weight projection); no timings."""

from __future__ import annotations

import functools

import pytest
import torch

from skyreels_core.benchmark.demo_quality import step_cache
from skyreels_core.benchmark.instruments import TrackedTensorBytes, children_peak_rss
from skyreels_core.benchmark.memory import (
    device_step_and_attention,
    fewest_swapped_layers,
    gpu_weight_projection,
)
from skyreels_core.benchmark.speed import (
    _PartTimer,
    analytic,
    demo_train_step,
    lora_overhead,
    step_flops,
    step_split,
    video_tokens,
)
from skyreels_core.config import ModelConfig, get_preset
from skyreels_core.demo.train import MODEL_STEPS
from skyreels_core.errors import InputError
from skyreels_core.mmdit import DualStreamMMDiT


def test_token_counts_and_quadratic_attention():
    assert video_tokens(1920, 1088, 481) == 121 * 68 * 120
    config = get_preset("wan2.1-t2v-14b")
    small, large = step_flops(config, 10_000, 0, 0), step_flops(config, 100_000, 0, 0)
    assert 10 < large / small < 100  # linear projections plus quadratic attention


def test_staged_path_costs_at_most_a_quarter_of_the_direct_render():
    report = analytic()
    assert report["direct"]["video_tokens"] == 987_360 and report["direct"]["audio_tokens"] == 646
    assert report["staged_over_direct"] <= 0.25


def test_tracked_tensor_bytes_count_new_storages_until_freed():
    x = torch.randn(256, 256)  # made before tracking: not counted
    with TrackedTensorBytes() as tracked:
        a = x @ x
        b = a.t()  # a view: no new memory
        a.mul_(2)  # in place: no new memory
        c = a + 1
        del a, b
        assert tracked.live == c.numel() * 4
        del c
    assert tracked.peak == 2 * 256 * 256 * 4 and tracked.live == 0


def test_part_timer_charges_each_moment_to_the_innermost_part():
    timer = _PartTimer()
    outer = timer.wrap(lambda: inner(), "video")
    inner = timer.wrap(lambda: sum(range(50_000)), "text")
    timer.enter("other")
    outer()
    timer.exit()
    assert set(timer.totals) == {"other", "video", "text"}
    assert all(seconds >= 0 for seconds in timer.totals.values())


def test_projection_halves_weights_in_fp8_and_swaps_the_fewest_layers_that_fit():
    projection = gpu_weight_projection(budget_gib=20.0)
    bf16, fp8 = projection["wan2.1-t2v-14b.bf16"], projection["wan2.1-t2v-14b.fp8_e4m3fn"]
    assert 0.5 < fp8["weights_gib"] / bf16["weights_gib"] < 0.52  # fp8 blocks, bf16 embeddings
    assert 25 < bf16["weights_gib"] < 28 and bf16["layers"] == 40
    assert bf16["weights_with_that_swap_gib"] <= 20.0 and fp8["block_swap_to_fit"] == 0


def test_the_cuda_parts_step_and_attention_run_on_any_device_with_their_memory_options():
    """The cuda part is what a lent GPU runs, in one call: the same measurement on the CPU, at a
    tiny Wan shape, must give every row (no swap, the fewest swapped layers that fit, fp8) with
    the weights each keeps resident, and the sparse attention beside dense."""
    from skyreels_core.offload import device_bytes

    config = ModelConfig(
        name="wan-tiny", dim=128, num_heads=1, ffn_dim=256, num_dual_blocks=4, num_single_blocks=0,
        text_dim=32, channel_concat_inpainting=False, joint_text=False, audio_latent_channels=None,
    )  # fmt: skip
    with torch.device("meta"):
        budget = device_bytes(DualStreamMMDiT(config), 3)  # fp32: three layers must stream
    report = device_step_and_attention("cpu", config, (1, 4, 6), 8, budget, ((1, 8, 8),), torch.float32)  # fmt: skip
    step = report["step"]
    plain, swapped, fp8 = step["float32"], step["float32_block_swap_3"], step["fp8"]
    assert step["video_tokens"] == 6 and plain["step_time_over_float32"] == 1.0
    assert swapped["resident_weight_bytes"] < budget < plain["resident_weight_bytes"]
    assert fp8["resident_weight_bytes"] < 0.5 * plain["resident_weight_bytes"]
    assert all(row["step_s"] > 0 and row["step_peak_bytes"] > 0 for row in (plain, swapped, fp8))
    assert plain["least_over_step_peak"] < 1 < plain["asked_over_step_peak"]
    sparse = report["sparse_attention"]["1x8x8"]
    assert sparse["tokens"] == 64 and sparse["device"] == "cpu"


def test_the_fewest_swapped_layers_fit_the_budget_and_one_fewer_does_not():
    from skyreels_core.offload import device_bytes

    with torch.device("meta"):
        model = DualStreamMMDiT(get_preset("wan2.1-t2v-14b")).to(torch.bfloat16)
    swap = fewest_swapped_layers(model, 20 * 2**30)
    assert device_bytes(model, swap) <= 20 * 2**30 < device_bytes(model, swap - 1)
    assert fewest_swapped_layers(model, 2**30) is None  # the embeddings alone take more


def test_the_cuda_part_without_a_gpu_is_refused_by_name(monkeypatch):
    from skyreels_core.benchmark.memory import cuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError) as refused:
        cuda()
    assert refused.value.input_name == "--only"


def test_step_split_reports_every_part():
    split = step_split(dim=128, frames=1, size=4, audio_tokens=4)
    parts = ("video", "audio", "cross_modal", "text", "other")
    assert all(split[f"{part}_s"] > 0 for part in parts)
    assert abs(sum(split[f"{part}_share"] for part in parts) - 1) < 1e-9


def test_demo_train_step_times_compiled_and_eager_steps_of_the_demo_model(monkeypatch):
    """The eager backend stands in for inductor's kernels (tests/test_train_cli.py compiles for
    real): the same steps, so the losses agree and the ratio compares kernels."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    report = demo_train_step(batch=2, scenes=2, steps=2, repeats=1)
    assert report["loss_difference"] < 1e-5
    assert report["compiled_step_s"] > 0 and report["eager_step_s"] > 0
    assert report["compiled_over_eager"] == report["compiled_step_s"] / report["eager_step_s"]
    compiled_minutes = report["compiled_step_s"] * MODEL_STEPS / 60
    assert report["model_stage_minutes"] == pytest.approx(
        compiled_minutes + report["compile_s"] / 60
    )


def test_lora_part_computes_the_same_step_with_hooks_as_merged():
    report = lora_overhead(dim=128, rank=4, frames=1, size=4, audio_tokens=4)
    assert report["hooks_vs_merged_max_abs_difference"] < 1e-4
    assert report["hooks_over_none"] > 0 and report["merged_over_none"] > 0
    # rank 4 on 128-wide layers: 4 * (in + out) / (in * out), about 6 %; the full preset's 1 %
    assert 0.02 < report["lora_flops_over_layer_flops"] < 0.1
    assert report["lora_flops_over_layer_flops_full_preset"] < 0.002


def test_cache_part_counts_model_calls_and_compares_with_the_uncached_render():
    report = step_cache(cases=1, thresholds=(0.2, 5.0), steps=(10,))
    light, heavy = report["10_steps_threshold_0.2"], report["10_steps_threshold_5"]
    assert 2 <= heavy["model_calls_per_render"] < light["model_calls_per_render"] <= 10
    assert light["psnr_vs_uncached_db"] > heavy["psnr_vs_uncached_db"]
    # 0.2 skips nothing in 10 steps (measured: 10 calls, the same render): the readings agree
    assert light["same_colour_shape_pitch"] == "1/1" and light["psnr_vs_uncached_db"] > 60


def test_long_video_part_joins_two_windows_per_prompt_and_reads_the_seam():
    from skyreels_core.benchmark.demo_quality import long_video

    report = long_video(cases=2, overlaps=(5,))["overlap_5"]
    assert 0 < report["seam_step_over_median_step"] <= report["seam_step_over_median_step_max"]
    assert report["seam_is_the_largest_step"] in {"0/2", "1/2", "2/2"}
    assert report["same_colour_and_shape"] in {"0/2", "1/2", "2/2"}
    # Two 33-frame windows joined over 5 frames hold a bounce or two each: contacts are seen.
    assert report["visual_contacts"] > 0


def test_extend_to_length_part_reads_every_window_and_seam():
    from skyreels_core.benchmark.demo_quality import _seam_steps, extend_to_length_windows

    report = extend_to_length_windows(cases=1, total_frames=61)
    assert (report["frames"], report["windows"]) == (61, 2)
    assert report["same_colour_and_shape_in_every_window"] in {"0/1", "1/1"}
    assert report["seam_step_over_median_step"] > 0 and report["visual_contacts"] > 0
    # A path moving one pixel a frame that jumps 4 at frame 10 into 11: the seam reads 4x.
    path = torch.arange(20.0)[:, None].repeat(1, 2) / 2**0.5
    path[11:] += 3 / 2**0.5
    assert _seam_steps(path, [10], 5) == ([pytest.approx(4.0)], True)


def test_lora_training_part_reads_the_bundled_lora_and_one_trained_from_clips():
    from skyreels_core.benchmark.demo_quality import lora_training

    report = lora_training(cases=1, clips=2, steps=1)
    bundled = report["bundled"]  # measured on 24: 24/24 colours, 24/24 hums, 22/24 shapes
    assert bundled["colours_shifted"] == "1/1"
    assert bundled["hums_shifted"] in {"0/1", "1/1"} and bundled["shapes_kept"] in {"0/1", "1/1"}
    assert report["from_clips"]["clips"] == 2 and report["from_clips"]["train_minutes"] > 0
    assert report["from_clips"]["shapes_kept"] in {"0/1", "1/1"}


def test_schedules_part_renders_the_shifted_and_the_hosts_karras_schedule():
    from skyreels_core.benchmark.demo_quality import karras_sigmas, schedules

    # The host's KarrasScheduler at 4 steps from 1 to 0.002 (k-diffusion's formula, rho 7).
    expected = [1.0, 0.2168889, 0.0306096, 0.002, 0.0]
    assert karras_sigmas(4, 0.002, 1.0) == pytest.approx(expected, abs=1e-7)
    report = schedules(cases=1)
    assert set(report) == {
        "shift_3_20_steps",
        "karras_20_steps",
        "shift_3_8_steps",
        "karras_8_steps",
    }
    shifted = report["shift_3_20_steps"]  # the demo's default render follows its prompt
    assert (shifted["colour"], shifted["shape"]) == ("1/1", "1/1") and shifted["visual_contacts"]
    # Whether one case's other renders show a contact is the model's draw (the bundle's Karras 20
    # steps shows none on this prompt); each reading's sync is there exactly when a click is.
    for reading in report.values():
        assert 0 <= reading["contacts_with_a_click"] <= reading["visual_contacts"]
        assert (reading["av_sync_ms"] is None) == (reading["contacts_with_a_click"] == 0)


def test_keyframes_part_refines_with_and_without_the_takes_keyframes():
    """Without the keyframes the refined end frames are the refiner's own upscale of the clip's
    (close to it); with them they are the 128 px keyframes, drawn in the same pass but apart."""
    from skyreels_core.benchmark.demo_quality import joint_keyframes

    report = joint_keyframes(cases=2)
    assert set(report) == {"with_keyframes", "without_keyframes"}
    alone, laid_in = report["without_keyframes"], report["with_keyframes"]
    assert alone["end_frames_vs_clip_psnr_db"] > 25.0
    assert laid_in["end_frames_vs_clip_psnr_db"] < alone["end_frames_vs_clip_psnr_db"]
    assert all(r["end_frames_colour_alike"].endswith("/4") for r in report.values())
    assert all(10.0 < r["first_step_psnr_db"] < 60.0 for r in report.values())


def test_a_json_path_naming_a_folder_is_refused_before_any_part_runs(tmp_path, capsys, monkeypatch):
    """It ended the run in IsADirectoryError after every part had run."""
    from skyreels_core import benchmark
    from skyreels_core.__main__ import main

    ran = lambda: pytest.fail("a part ran before the check")  # noqa: E731
    monkeypatch.setitem(benchmark.PART_FUNCTIONS, "analytic", ran)
    assert main(["bench", "--only", "analytic", "--json", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: --json: {tmp_path} names a folder. Fix: name a file, e.g. {tmp_path / 'bench.json'}\n"
    )


def test_model_replaces_the_demo_model_in_the_parts_that_render_it(tmp_path, capsys, monkeypatch):
    """``bench --model`` measures a train-demo run's model on the parts that render the demo
    model (bench/README.md's keyframe stage was measured so): each of them loads that model, the
    report names it, and --model with no such part is refused before any part runs."""
    import json

    from skyreels_core import benchmark
    from skyreels_core.__main__ import main
    from skyreels_core.benchmark import demo_quality

    class Loaded(Exception):
        pass

    def load(model=None, device="cpu"):
        raise Loaded(model)

    monkeypatch.setattr(demo_quality.Pipeline, "load", load)
    model = tmp_path / "model.safetensors"
    for part in benchmark.MODEL_PARTS:
        with pytest.raises(Loaded) as loaded:
            benchmark.PART_FUNCTIONS[part](model=model)
        assert loaded.value.args == (model,), part
    seen = []
    monkeypatch.setitem(
        benchmark.PART_FUNCTIONS, "keyframes", lambda model: seen.append(model) or {}
    )
    ran = lambda: pytest.fail("a part ran before the check")  # noqa: E731
    monkeypatch.setitem(benchmark.PART_FUNCTIONS, "analytic", ran)
    report = tmp_path / "bench.json"
    assert main(["bench", "--only", "keyframes", "--model", str(model), "--json", str(report)]) == 0
    assert seen == [model] and json.loads(report.read_text())["machine"]["model"] == str(model)
    capsys.readouterr()
    assert main(["bench", "--only", "analytic", "--model", str(model)]) == 2
    assert capsys.readouterr().err == (
        "error: --model: none of the parts ['analytic'] renders the demo model. Fix: add one of "
        "cache, schedules, keyframes, long_video, extend_to_length to --only, or leave --model out\n"
    )


def test_childrens_peak_rss_is_bytes_on_linux_and_macos_and_unknown_on_windows(monkeypatch):
    """getrusage's ru_maxrss counts KiB on Linux and bytes on macOS (a Mac's figure was 1024x
    too large); Windows has no resource module, whose import at the top stopped every part."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "bytearray(64 * 2**20)"], check=True)
    linux = children_peak_rss()
    assert 64 * 2**20 < linux < 4 * 2**30  # a child that held 64 MiB, counted in bytes
    monkeypatch.setattr(sys, "platform", "darwin")
    assert children_peak_rss() == linux // 1024
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource now fails, as on Windows
    assert children_peak_rss() is None
