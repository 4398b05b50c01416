"""The demo commands on the bundled model: render, bad input, training smoke run, short eval."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from skyreels_core.__main__ import main
from skyreels_core.av_io import read_video, write_mp4
from skyreels_core.demo import bundle
from skyreels_core.demo.metrics import dominant_colour, dominant_shape, psnr
from skyreels_core.demo.world import render_scene, sample_scene_spec, spec_from_caption
from skyreels_core.errors import InputError
from skyreels_core.render import Pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_demo_command_writes_a_clip_with_sound(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert (
        main(["demo", "--out", str(out), "--steps", "6", "--prompt", "a blue square moves right"])
        == 0
    )
    assert f"wrote {out}" in capsys.readouterr().out
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.video[0].frames == 33
        assert container.metadata["prompt"] == "a blue square moves right"


def test_refine_doubles_the_size_and_fps_of_the_same_clip(tmp_path, capsys):
    """--refine: the render's take through the bundled refiner, 128 px at 32 fps, 2n-1 frames;
    each even frame shrunk back is the plain render's frame (29-30 dB measured), the colour,
    shape and sound kept, and the refiner's own work, not a bicubic upscale."""
    plain, refined = tmp_path / "plain.mp4", tmp_path / "refined.mp4"
    assert main(["demo", "--seed", "3", "--out", str(plain)]) == 0
    assert main(["demo", "--seed", "3", "--refine", "--out", str(refined)]) == 0
    assert "(65 frames at 32 fps with sound)" in capsys.readouterr().out
    low, low_fps, low_audio = read_video(plain)
    high, high_fps, high_audio = read_video(refined)
    assert (low_fps, high_fps) == (16.0, 32.0) and high.shape == (65, 128, 128, 3)
    shrunk = F.avg_pool2d(high[::2].permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    assert psnr(shrunk, low) > 25.0
    bicubic = F.interpolate(low.permute(0, 3, 1, 2), scale_factor=2, mode="bicubic")
    assert psnr(high[::2], bicubic.permute(0, 2, 3, 1)) < 40.0
    assert (dominant_colour(high), dominant_shape(high)) == (dominant_colour(low), "circle")
    seconds = high_audio["waveform"].shape[-1] / high_audio["sample_rate"]
    assert abs(seconds - 65 / 32) < 0.07 and high_audio["waveform"].std() > 0
    with av.open(str(refined)) as container:
        assert container.metadata["refined"] == "2x size, 2x fps"


@pytest.mark.parametrize(
    "args, line",
    [(["--task", "v2a"], "--refine: given for --task v2a, which keeps its clip as given. Fix: drop it"),
     (["--total-frames", "61"], "--refine: given with --total-frames: the refiner takes one "
                                "window's take. Fix: drop one of them")],
)  # fmt: skip
def test_refine_where_no_take_fits_the_refiner_is_one_line(tmp_path, capsys, no_model, args, line):
    assert main(["demo", "--refine", *args, "--out", str(tmp_path / "x.mp4")]) == 2
    assert capsys.readouterr().err == f"error: {line}\n"


def test_refine_of_a_model_trained_with_its_own_codec_is_refused(tmp_path, capsys, no_model):
    """The bundled refiner reads the bundled codec's latents: a train-demo model with a codec of
    its own would refine noise. The same codec (a run that reproduced it) goes on to the render."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(bundle.model_path(), folder / "model.safetensors")
    shutil.copytree(bundle.WEIGHTS_DIR / "text_encoder", folder / "text_encoder")
    for name in ("video_codec.safetensors", "audio_codec.safetensors"):
        shutil.copy(bundle.WEIGHTS_DIR / name, folder / name)
    args = ["demo", "--refine", "--model", str(folder / "model.safetensors")]
    with pytest.raises(AssertionError, match="the model loaded"):
        main([*args, "--out", str(tmp_path / "same.mp4")])
    codec = load_file(folder / "video_codec.safetensors")
    save_file({k: v + 1e-3 for k, v in codec.items()}, folder / "video_codec.safetensors")
    assert main([*args, "--out", str(tmp_path / "own.mp4")]) == 2
    assert capsys.readouterr().err.startswith(
        "error: --refine: the bundled refiner reads the bundled video codec's latents, and "
    )


def test_the_demo_command_says_which_steps_the_step_cache_skipped(tmp_path, capsys):
    """--help promises "0.2 ran 13 of 20 calls" and README the console line that says so, but
    the library's notes went to a logger Python shows a script only warnings from."""
    out = tmp_path / "cached.mp4"
    root = logging.getLogger()
    own = logging.StreamHandler()  # a caller's own logging: the note is not printed twice
    root.addHandler(own)
    try:
        assert main(["demo", "--out", str(out), "--cache-threshold", "0.2"]) == 0
    finally:
        root.removeHandler(own)
    notes = [line for line in capsys.readouterr().err.splitlines() if "step cache" in line]
    assert len(notes) == 1 and notes[0].endswith(
        "step cache: the model ran at 13 of 20 steps (skipped 7, 9, 11, 13, 15, 17, 19)"
    )
    assert logging.getLogger("skyreels_core").propagate


def test_total_frames_continues_the_render_in_windows_to_that_length(tmp_path, capsys):
    """--total-frames 89: the 33-frame render and two more windows, each keeping the last 5
    frames; one green triangle throughout, the sound as long as the clip."""
    out = tmp_path / "long.mp4"
    prompt = "a green triangle bounces on the floor"
    args = ["demo", "--prompt", prompt, "--seed", "42", "--total-frames", "89", "--out", str(out)]
    assert main(args) == 0
    assert "(89 frames at 16 fps with sound)" in capsys.readouterr().out  # not one window's 33
    frames, fps, audio = read_video(out)
    assert frames.shape[0] == 89 and fps == 16.0
    assert abs(audio["waveform"].shape[-1] / audio["sample_rate"] - 89 / 16) < 0.07
    windows = [frames[start : start + 28] for start in (0, 33, 61)]
    assert [(dominant_colour(w), dominant_shape(w)) for w in windows] == [("green", "triangle")] * 3
    with av.open(str(out)) as container:
        assert container.metadata["total_frames"] == "89"
    capsys.readouterr()
    for bad, name in (
        (["--total-frames", "33"], "--total-frames: 33 frames, not more than --frames 33"),
        (["--frames", "5", "--total-frames", "20"], "--frames: 5-frame windows"),
    ):
        assert main(["demo", *bad, "--out", str(tmp_path / "x.mp4")]) == 2
        assert name in capsys.readouterr().err


def test_keyframes_default_to_first_middle_last_and_belong_to_their_task(tmp_path, capsys):
    """The middle keyframe is a latent group's start (every 4th frame): of 13 frames, frame 4,
    not frame 6, which would share a group with generated frames."""
    out = tmp_path / "keys.mp4"
    assert (
        main(["demo", "--task", "keyframes", "--frames", "13", "--steps", "2", "--out", str(out)])
        == 0
    )
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames == 13
        assert container.metadata["task"] == "keyframes"
        assert container.metadata["keyframes"] == "0, 4, 12"
        # The inputs came from the demo scene of seed 0 + 1: the prompt defaults to its caption.
        assert container.metadata["prompt"] == render_scene(sample_scene_spec(1)).caption
    assert main(["demo", "--frames", "1", "--steps", "2", "--out", str(tmp_path / "one.mp4")]) == 0
    assert "(1 frame at 16 fps with sound)" in capsys.readouterr().out
    assert main(["demo", "--keyframes", "0, 8", "--out", str(tmp_path / "x.mp4")]) == 2
    assert capsys.readouterr().err == (
        "error: --keyframes: given for --task t2av. Fix: add --task keyframes or drop it\n"
    )
    assert not (tmp_path / "x.mp4").exists()


def test_video_to_audio_keeps_the_given_clip_and_its_fps(tmp_path, capsys):
    """--task v2a takes a --video clip of any length and size (the model sees it at 64 px) and
    writes it back as given: its own frames, size and fps, with sound as long."""
    clip = render_scene(spec_from_caption("a red square bounces on the floor", seed=7)).frames
    clip = F.interpolate(clip[:30].permute(0, 3, 1, 2), size=(96, 96), mode="bilinear")
    source = write_mp4(tmp_path / "in.mp4", clip.permute(0, 2, 3, 1), 24.0, None)
    out = tmp_path / "v2a.mp4"
    assert main(["demo", "--task", "v2a", "--video", str(source), "--steps", "2",
                 "--prompt", "a red square bounces on the floor", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert "30 frames at 24 fps" in printed.out
    assert "expect the sound to miss the motion" not in printed.err  # seen at 64 px, as it learned
    frames, fps, audio = read_video(out)
    assert fps == 24.0 and frames.shape == (30, 96, 96, 3)
    assert psnr(frames, read_video(source)[0]) >= 40.0
    assert 0 <= audio["waveform"].shape[-1] - round(30 / 24 * audio["sample_rate"]) < 1024
    assert main(["demo", "--task", "v2a", "--video", str(source), "--frames", "37",
                 "--out", str(tmp_path / "long.mp4")]) == 2  # fmt: skip
    assert capsys.readouterr().err == (
        "error: video: 30 frames, fewer than the 37 the v2a task asks for. "
        "Fix: give a longer clip or fewer --frames\n"
    )
    # Without --video, the demo world's scene whole: 33 frames, as every other task's default.
    world = tmp_path / "world.mp4"
    assert main(["demo", "--task", "v2a", "--steps", "1", "--out", str(world)]) == 0
    assert read_video(world)[0].shape[0] == 33


def test_a_long_source_clip_is_read_only_as_far_as_the_render_takes(tmp_path, monkeypatch):
    """--video was decoded whole to float pixels before --frames took its start (a 30 s 480p
    clip peaked at 5.1 GB for a 33-frame render)."""
    from skyreels_core import av_io

    clip = render_scene(spec_from_caption("a red square bounces on the floor", seed=7)).frames
    source = write_mp4(tmp_path / "in.mp4", clip, 16.0, None)  # 33 frames
    read = []
    original = av_io.read_video
    monkeypatch.setattr(
        av_io,
        "read_video",
        lambda *a, **k: read.append(original(*a, **k)[0].shape[0]) or original(*a, **k),
    )
    assert main(["demo", "--task", "extend", "--video", str(source), "--frames", "17",
                 "--steps", "1", "--out", str(tmp_path / "out.mp4")]) == 0  # fmt: skip
    assert read[0] == 17


def test_the_step_cache_skips_model_calls_and_keeps_the_render(tmp_path):
    """On the bundled model at threshold 0.2, a third of the 20 steps skip the model; the
    decoded clip stays within 35 dB of the uncached one with its colour and shape (24 held-out
    prompts: 13.2 calls a render, 46.3 dB, every reading unchanged)."""
    from skyreels_core.demo.metrics import dominant_colour, dominant_shape
    from skyreels_core.render import RenderRequest, render

    pipeline = Pipeline.load()
    calls = []
    pipeline.model.register_forward_hook(lambda *_: calls.append(1))
    request = RenderRequest(prompt="a blue triangle moves right", seed=1)
    plain = render(pipeline, request)[0]
    uncached_calls = len(calls)
    cached = render(pipeline, replace(request, cache_threshold=0.2))[0]
    assert uncached_calls == 20 and len(calls) - uncached_calls <= 16  # measured 13
    assert psnr(cached, plain) > 35.0
    assert (dominant_colour(cached), dominant_shape(cached)) == ("blue", "triangle")
    assert main(["demo", "--cache-threshold", "-1", "--out", str(tmp_path / "x.mp4")]) == 2


def test_a_script_rendering_the_demo_model_at_128_px_is_told_why_it_gets_noise(caplog):
    from skyreels_core.render import RenderRequest, render

    pipeline = Pipeline.load()
    with caplog.at_level(logging.WARNING, logger="skyreels_core.render"):
        render(pipeline, RenderRequest(frames=5, steps=1))
        assert caplog.records == []
        frames = render(pipeline, RenderRequest(frames=5, steps=1, height=128, width=96))[0]
    assert frames.shape == (5, 128, 96, 3)
    assert "trained on 64 px clips; at 96x128 px expect noise" in caplog.text


def test_a_script_asking_for_a_device_torch_cannot_reach_is_told_which(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="^device: cuda:1, where this torch .* sees 0 such"):
        Pipeline.load(device="cuda:1")
    with pytest.raises(InputError, match="^device: 'gpu' is not a device"):
        Pipeline.load(device="gpu")


def test_a_scripted_keyframes_task_takes_frames_from_the_end_and_refuses_others():
    from skyreels_core.render import RenderRequest, render

    clip = render_scene(spec_from_caption("a red square bounces on the floor", seed=7)).frames
    request = RenderRequest(task="keyframes", frames=9, source=clip[:9], keyframes=[0, -1], steps=1)
    frames = render(Pipeline.load(), request)[0]
    assert psnr(frames[-1:], clip[8:9]) > 25.0  # the clip's last frame, kept
    for bad in ([9], [0.5]):
        with pytest.raises(InputError, match="^keyframes: "):
            render(Pipeline.load(), replace(request, keyframes=bad))


def test_a_scripted_render_carries_its_own_fps_to_the_take():
    """sample() stamped every take 16 fps (only the Sampler node put the clip's rate back): a
    24 fps script render, saved and reopened, decoded a third too long for the sound it held."""
    from skyreels_core.render import RenderRequest, render

    frames, audio, latent = render(Pipeline.load(), RenderRequest(frames=9, fps=24.0, steps=1))
    assert latent.fps == 24.0
    assert latent.audio.shape[-1] == round(9 / 24 * 16_000 / 256)  # tokens counted at 24 fps
    assert abs(audio["waveform"].shape[-1] - 9 / 24 * 16_000) <= 256 / 2  # to the nearest token


def test_a_script_renders_high_res_keyframes_that_refine_take_lays_in():
    """``keyframe_indices`` (the Sampler's low-res + high-res keyframes mode): the take holds
    those frames at ``keyframe_scale`` x the size, rendered in the same pass, and
    :func:`refine_take` holds each on its refined latent frame (fps x2: latent frame 2i); frames
    outside the clip and a scale below 1 are refused by name."""
    from skyreels_core.refiner import RefinerSettings, load_refiner, refine_take
    from skyreels_core.render import RenderRequest, render

    pipeline = Pipeline.load()
    request = RenderRequest(frames=17, seed=42, steps=4, keyframe_indices=(0, -1))
    frames, _, take = render(pipeline, request)
    assert take.keyframe_indices == [0, 4] and take.keyframes.shape == (1, 8, 2, 16, 16)
    assert take.video.shape == (1, 8, 5, 8, 8) and frames.shape == (17, 64, 64, 3)
    refined = refine_take(load_refiner(bundle.refiner_path()), take, RefinerSettings(fps_factor=2))
    assert refined.video.shape == (1, 8, 9, 16, 16)
    torch.testing.assert_close(refined.video[:, :, [0, 8]], take.keyframes, rtol=0, atol=0)
    for bad, name in (((17,), "keyframe_indices"), ((0.5,), "keyframe_indices"),
                      ((0,), "keyframe_scale")):  # fmt: skip
        with pytest.raises(InputError, match=f"^{name}: "):
            scale = 0 if name == "keyframe_scale" else 2
            render(pipeline, RenderRequest(frames=17, keyframe_indices=bad, keyframe_scale=scale))


def test_sound_for_a_clip_not_4k_plus_1_long_spans_its_padded_latents():
    """Video to audio pads a 30-frame clip to 33 (whole latent groups): the sound is sampled for
    all 33, as long as the video latents it is aligned with, and trimmed to the clip's 30 only
    when written (the demo command's v2a test)."""
    from skyreels_core.render import RenderRequest, render

    clip = render_scene(spec_from_caption("a red square bounces on the floor", seed=7)).frames
    request = RenderRequest(task="v2a", frames=30, fps=24.0, source=clip[:30], steps=1)
    latent = render(Pipeline.load(), request)[2]
    assert latent.audio.shape[-1] == round(33 / 24 * 16_000 / 256)


def test_the_demo_models_advice_names_the_sizes_and_lengths_it_never_learned():
    from skyreels_core import masks

    codec = bundle.video_codec()
    advice = lambda frames, height, width, preset="demo": bundle.render_advice(  # noqa: E731
        preset, masks.text_to_video(codec, frames, height, width)
    )
    assert advice(33, 64, 64) is None and advice(17, 48, 64) is None
    longer = advice(37, 64, 64)
    assert longer.startswith("the demo model was trained on 33-frame clips; at 37 frames")
    assert "long_video" in longer and "px" not in longer
    both = advice(81, 128, 128)
    size, length = both.index("trained on 64 px clips"), both.index("trained on 33-frame clips")
    assert 0 < size < length and "at 128x128 px" in both and "at 81 frames" in both
    assert advice(81, 128, 128, preset="skyreels-v4-14b") is None
    # Sound for a kept clip: nothing to refine or join; the fix is the model's view of the clip.
    clip = masks.video_to_audio(codec, torch.rand(30, 180, 320, 3))
    sound_only = bundle.render_advice("demo", clip)
    assert "at 320x176 px expect the sound to miss the motion" in sound_only
    assert "Set Mask: Video to Audio's longest_side to 64" in sound_only
    assert "refine" not in sound_only and "long_video" not in sound_only
    # High-res keyframes beside a clip, which its training never showed it (bench part keyframes).
    keyframes = bundle.render_advice("demo", masks.text_to_video(codec, 17, 64, 64), keyframes=True)
    assert keyframes.startswith("the demo model never learned high-res keyframes: they keep")
    assert keyframes.endswith("Leave keyframe_indices empty; Refine then upscales the clip itself")
    assert bundle.render_advice("skyreels-v4-14b", clip, keyframes=True) is None


def test_demo_bad_input_is_one_clear_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "skyreels_core", "demo", "--frames", "30", "--out", str(tmp_path / "x.mp4")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --frames: 30 frames is not 4k+1. Fix: use 29 or 33 frames"
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize(
    "command",
    [["train-demo", "--out", "FILE"], ["train-demo-refiner", "--out", "FILE"],
     ["demo", "--out", "FILE/clip.mp4"], ["eval-demo", "--json", "FILE/report.json"],
     ["bench", "--only", "analytic", "--json", "FILE/bench.json"]],
)  # fmt: skip
def test_an_output_path_inside_a_file_is_one_line_before_any_work(tmp_path, capsys, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main([arg.replace("FILE", str(blocker)) for arg in command]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {command[-2]}: {blocker} is a file. Fix: name a folder\n"
    )
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize(
    "command",
    [["eval-demo", "--json", "DIR/"], ["bench", "--only", "analytic", "--json", "DIR/"],
     ["to-safetensors", "SOURCE", "DIR/"], ["queue", "WORKFLOW", "--report", "DIR/"]],
)  # fmt: skip
def test_an_output_path_ending_in_a_slash_names_a_folder_before_any_work(tmp_path, capsys, command):
    """argparse's Path dropped the "/", and each command wrote a file named like the folder."""
    torch.save({"w": torch.zeros(2)}, tmp_path / "source.pt")
    names = {"DIR/": f"{tmp_path / 'new'}/", "SOURCE": str(tmp_path / "source.pt"),
             "WORKFLOW": str(Path(__file__).parents[1] / "workflows" / "text_to_video.json")}  # fmt: skip
    assert main([names.get(arg, arg) for arg in command]) == 2
    assert f"{tmp_path / 'new'}/ names a folder" in capsys.readouterr().err
    assert not (tmp_path / "new").is_file()


def test_eval_scenes_below_the_held_out_seed_are_refused(capsys):
    assert main(["eval-demo", "--scene-offset", "-1", "--cases", "0"]) == 2
    assert capsys.readouterr().err == "error: --scene-offset: -1. Fix: give 0 or more\n"


def test_train_demo_smoke_run_writes_a_loadable_bundle_and_resumes(tmp_path):
    from skyreels_core.loading import load_model

    args = [
        "train-demo",
        "--no-compile",  # tests/test_train_cli.py checks the compiled steps
        "--out",
        str(tmp_path),
        "--scenes",
        "4",
        "--codec-scenes",
        "4",
        "--video-codec-steps",
        "2",
        "--audio-codec-steps",
        "2",
        "--video-decoder-steps",
        "2",
        "--batch",
        "2",
        "--keyframe-steps",
        "2",
    ]
    assert main([*args, "--steps", "3", "--max-minutes", "0"]) == 0  # stopped before a step
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["training_steps"] == 0 and manifest["command"].endswith("--max-minutes 0")
    assert manifest["keyframe_steps"] == 0  # it follows a finished model stage only
    assert main([*args, "--steps", "3", "--checkpoint-every", "1"]) == 0  # no limit by default
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "--max-minutes" not in manifest["command"]
    assert (manifest["training_steps"], manifest["keyframe_steps"]) == (3, 2)
    assert set(manifest["sha256"]) == {
        "model.safetensors", "video_codec.safetensors", "audio_codec.safetensors", "text_encoder",
    }  # fmt: skip
    assert load_model(tmp_path / "model.safetensors").config.name == "demo"
    assert main([*args, "--steps", "5"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["training_steps"], manifest["keyframe_steps"]) == (5, 2)
    # demo / eval-demo --model: the model decodes with the codecs trained beside it (it read the
    # bundled ones, whose latents mean something else); a model file alone takes the bundled.
    own = Pipeline.load(tmp_path / "model.safetensors")
    alone = tmp_path / "alone" / "model.safetensors"
    alone.parent.mkdir()
    shutil.copy(tmp_path / "model.safetensors", alone)
    bundled = Pipeline.load(alone)
    for name, codec in (("video_codec", "video_codec"), ("audio_codec", "audio_codec")):
        trained = load_file(str(tmp_path / f"{name}.safetensors"))
        assert _same_weights(getattr(own, codec).state_dict(), trained)
        assert not _same_weights(getattr(bundled, codec).state_dict(), trained)
        shipped = load_file(str(bundle.WEIGHTS_DIR / f"{name}.safetensors"))
        assert _same_weights(getattr(bundled, codec).state_dict(), shipped)
    (tmp_path / "audio_codec.safetensors").unlink()  # a run that has not finished: named
    with pytest.raises(InputError, match=r"^--model: .* holds a model.safetensors without its "
                       r"audio_codec.safetensors\. Fix: finish its train-demo run"):  # fmt: skip
        Pipeline.load(tmp_path / "model.safetensors")


def _same_weights(state: dict, file: dict) -> bool:
    return state.keys() == file.keys() and all(torch.equal(state[k], file[k]) for k in state)


def test_train_demo_lora_smoke_run_writes_a_lora_load_lora_opens(tmp_path):
    """Two steps from the zero-effect start: a file of the pack's own layer names that reads
    back onto every Linear layer of the bundled model, with its provenance, listed in the
    folder's manifest."""
    from safetensors import safe_open

    from skyreels_core.demo import bundle
    from skyreels_core.loading import load_model
    from skyreels_core.lora import read_lora

    (tmp_path / "manifest.json").write_text(json.dumps({"sha256": {}}))
    assert main(["train-demo-lora", "--out", str(tmp_path), "--scenes", "4", "--steps", "2",
                 "--batch", "2", "--rank", "2"]) == 0  # fmt: skip
    path = tmp_path / bundle.LORA_FILE
    model = load_model(bundle.model_path())
    lora = read_lora(path, model)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(lora.layers) == sorted(linears) and not lora.skipped
    assert all(d.down.shape[0] == 2 and d.scale == 1.0 for d in lora.layers.values())
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["command"].startswith("python -m skyreels_core train-demo-lora")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sha256"] == {bundle.LORA_FILE: bundle.file_digest(path)}


def _write_clips(folder: Path, specs: list[tuple[str, int, int, bool]]) -> None:
    """World clips (caption, frames, width, with sound) as MP4s with their captions beside."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (caption, frames, width, sound) in enumerate(specs):
        scene = render_scene(spec_from_caption(caption, seed=index), frames=frames, size=64)
        pixels = F.interpolate(scene.frames.permute(0, 3, 1, 2), size=(64, width)).permute(
            0, 2, 3, 1
        )
        audio = {"waveform": scene.audio[None], "sample_rate": scene.sample_rate} if sound else None
        write_mp4(folder / f"clip{index}.mp4", pixels, scene.fps, audio)
        (folder / f"clip{index}.txt").write_text(f"  {caption}\n")


def test_your_clips_are_fitted_to_the_demo_models_shape(tmp_path):
    from skyreels_core.demo.dataset import read_clips

    _write_clips(tmp_path, [("a red circle bounces on the floor", 40, 96, True),
                            ("a blue square moves right", 33, 64, False)])  # fmt: skip
    data = read_clips(tmp_path)
    assert data.pixels.shape == (2, 33, 64, 64, 3) and data.audio.shape == (2, 1, 33000)
    assert data.captions == ["a red circle bounces on the floor", "a blue square moves right"]
    assert data.audio[0].abs().max() > 0.05 and data.audio[1].abs().max() == 0  # silent: silence
    # The 96 px wide clip is centre-cropped, not squashed: its first frame matches the source's.
    source = read_video(tmp_path / "clip0.mp4")[0][0, :, 16:80]
    assert psnr(data.pixels[0, 0], source) > 25
    (tmp_path / "clip1.txt").unlink()
    with pytest.raises(InputError, match="^--clips: clip1.mp4 has no caption"):
        read_clips(tmp_path)
    (tmp_path / "clip1.txt").write_text("a blue square moves right")
    _write_clips(tmp_path / "short", [("a red circle bounces on the floor", 20, 64, True)])
    with pytest.raises(InputError, match="^--clips: clip0.mp4 lasts 1.25 s"):
        read_clips(tmp_path / "short")
    with pytest.raises(InputError, match="holds no video files"):
        read_clips(tmp_path / "nothing")


def test_train_demo_lora_on_your_clips_writes_a_lora_named_after_them(tmp_path):
    from safetensors import safe_open

    from skyreels_core.demo import bundle
    from skyreels_core.loading import load_model
    from skyreels_core.lora import read_lora

    clips = tmp_path / "my_style"
    _write_clips(clips, [("a green triangle bounces on the floor", 33, 64, True)] * 2)
    assert main(["train-demo-lora", "--clips", str(clips), "--out", str(tmp_path / "loras"),
                 "--steps", "2", "--batch", "2", "--rank", "2"]) == 0  # fmt: skip
    path = tmp_path / "loras" / "my_style.safetensors"
    lora = read_lora(path, load_model(bundle.model_path()))
    assert lora.layers and any(d.up.abs().max() > 0 for d in lora.layers.values())  # it trained
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["clips"] == "2" and "--clips my_style" in metadata["command"]
    assert "palette" not in metadata


@pytest.fixture
def no_model(monkeypatch):
    """The demo model never loads: what a test refuses is refused before any work."""
    from skyreels_core.demo import cli

    def never(model_path=None):
        raise AssertionError("the model loaded before the arguments were checked")

    monkeypatch.setattr(cli.Pipeline, "load", never)


@pytest.mark.parametrize(
    "args, line",
    [(["--out", "DIR"], "--out: DIR names a folder. Fix: name a file, e.g. DIR/demo.mp4"),
     (["--out", "DIR", "--overwrite"],
      "--out: DIR names a folder. Fix: name a file, e.g. DIR/demo.mp4"),
     (["--out", "DIR/new/"], "--out: DIR/new/ names a folder. Fix: name a file, e.g. DIR/new/demo.mp4"),
     (["--out", "DIR/clip.gif"], "--out: DIR/clip.gif does not end in .mp4. Fix: name it DIR/clip.mp4"),
     (["--out", "DIR/clip"], "--out: DIR/clip does not end in .mp4. Fix: name it DIR/clip.mp4"),
     (["--out", "DIR/old.gif"], "--out: DIR/old.gif does not end in .mp4. Fix: name it DIR/old.mp4")],
)  # fmt: skip
def test_demo_out_naming_a_folder_is_one_line_before_the_render(
    tmp_path, capsys, no_model, args, line
):
    """A folder, existing or written with a trailing "/", would end the render in
    IsADirectoryError or a file named like the folder; any name but .mp4 held MP4 bytes that
    players, which go by the name, would not open."""
    existing = tmp_path / "old.gif"  # named for its suffix, not told to pass --overwrite first
    existing.write_bytes(b"GIF89a")
    assert main(["demo", *[arg.replace("DIR", str(tmp_path)) for arg in args]]) == 2
    assert capsys.readouterr().err == f"error: {line.replace('DIR', str(tmp_path))}\n"
    assert list(tmp_path.iterdir()) == [existing]


def test_demo_out_ending_in_upper_case_mp4_goes_on_to_the_render(tmp_path, no_model):
    """Players go by the suffix in any case: "clip.MP4" (as cameras and Windows name files) holds
    MP4 bytes under an MP4 name, and refusing it as "does not end in .mp4" was wrong."""
    with pytest.raises(AssertionError, match="the model loaded"):
        main(["demo", "--out", str(tmp_path / "clip.MP4")])


@pytest.mark.skipif(not Path("/sys/fs").is_dir(), reason="needs sysfs, which takes no new files")
def test_demo_out_in_a_folder_without_write_access_is_one_line_before_the_render(capsys, no_model):
    assert main(["demo", "--out", "/sys/fs/clip.mp4"]) == 2
    assert capsys.readouterr().err.startswith("error: --out: cannot write into /sys/fs (")
    assert not Path("/sys/fs/clip.mp4").exists()


@pytest.mark.parametrize(
    "args, line",
    [(["--image", "IMAGE"], "--image: given for --task t2av. Fix: add --task i2av or ref, or drop it"),
     (["--video", "VIDEO"], "--video: given for --task t2av. "
                            "Fix: add --task extend, interpolate, keyframes, edit or v2a, or drop it"),
     (["--task", "i2av", "--image", "IMAGE", "--video", "VIDEO"],
      "--video: given for --task i2av. "
      "Fix: add --task extend, interpolate, keyframes, edit or v2a, or drop it"),
     (["--task", "extend", "--image", "IMAGE"],
      "--image: given for --task extend. Fix: add --task i2av or ref, or drop it"),
     (["--task", "ref", "--video", "VIDEO"], "--video: given for --task ref. "
                            "Fix: add --task extend, interpolate, keyframes, edit or v2a, or drop it"),
     (["--task", "extend", "--mask", "IMAGE"],
      "--mask: given for --task extend. Fix: add --task edit or drop it")],
)  # fmt: skip
def test_pixel_inputs_a_task_ignores_are_refused(tmp_path, capsys, no_model, args, line):
    """An ignored --image still set the render's size: t2av rendered text alone at 96x80 px."""
    from PIL import Image

    Image.new("RGB", (96, 80), "white").save(tmp_path / "image.png")
    write_mp4(tmp_path / "clip.mp4", torch.rand(5, 64, 64, 3), 16.0, None)
    paths = {"IMAGE": str(tmp_path / "image.png"), "VIDEO": str(tmp_path / "clip.mp4")}
    args = [paths.get(arg, arg) for arg in args]
    assert main(["demo", *args, "--out", str(tmp_path / "x.mp4")]) == 2
    assert capsys.readouterr().err == f"error: {line}\n"
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64 - 1])
def test_demo_seed_outside_the_sampler_nodes_range_is_refused(tmp_path, capsys, no_model, seed):
    """-1 silently rendered seed 2**64 - 1; 2**63 and up crashed in the generator."""
    assert main(["demo", "--seed", str(seed), "--out", str(tmp_path / "x.mp4")]) == 2
    assert capsys.readouterr().err == f"error: --seed: {seed}. Fix: use 0 to {2**63 - 1}\n"


def test_demo_renders_the_largest_seed_the_sampler_node_allows(tmp_path):
    out = tmp_path / "max.mp4"
    args = ["demo", "--seed", str(2**63 - 1), "--steps", "1", "--frames", "5", "--out", str(out)]
    assert main(args) == 0
    with av.open(str(out)) as container:
        assert container.metadata["seed"] == str(2**63 - 1)


def test_extend_too_short_names_frames_and_the_smallest_count_that_works(tmp_path, capsys):
    """Extend keeps a clip's first 9 frames (all of a shorter one, to 1 + 4k): the demo world's
    scene keeps 9 at any --frames, so 13 is the least; a 6-frame --video keeps 5, so 9."""
    clip = write_mp4(tmp_path / "six.mp4", render_scene(sample_scene_spec(3), frames=6).frames,
                     16.0, None)  # fmt: skip
    out = str(tmp_path / "x.mp4")
    for args, kept, least in ((["--frames", "5"], 9, 13), (["--frames", "9"], 9, 13),
                              (["--frames", "5", "--video", str(clip)], 5, 9)):  # fmt: skip
        assert main(["demo", "--task", "extend", *args, "--out", out]) == 2
        frames = args[1]
        assert capsys.readouterr().err == (
            f"error: --frames: {frames} frames, and the extend task keeps the clip's first {kept}: "
            f"nothing is left to generate. Fix: use --frames {least} or more\n"
        )
    for args in (["--frames", "13"], ["--frames", "9", "--video", str(clip)]):
        assert main(["demo", "--task", "extend", *args, "--steps", "1", "--out", out]) == 0
        assert read_video(out)[0].shape[0] == int(args[1])
        Path(out).unlink()


def test_train_demo_lora_never_replaces_your_lora_unasked(tmp_path, capsys):
    """Like demo's --out: an earlier LoRA of the clips' name stays unless --overwrite is given."""
    from skyreels_core.demo import bundle
    from skyreels_core.loading import load_model
    from skyreels_core.lora import read_lora

    clips, out = tmp_path / "my_style", tmp_path / "loras"
    _write_clips(clips, [("a green triangle bounces on the floor", 33, 64, True)] * 2)
    out.mkdir()
    earlier = out / "my_style.safetensors"
    earlier.write_bytes(b"an earlier LoRA")
    args = ["train-demo-lora", "--clips", str(clips), "--out", str(out), "--steps", "1",
            "--batch", "2", "--rank", "2"]  # fmt: skip
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"error: --out: {earlier} already exists. Fix: choose another path or pass --overwrite\n"
    )
    assert earlier.read_bytes() == b"an earlier LoRA"
    assert main([*args, "--overwrite"]) == 0
    assert read_lora(earlier, load_model(bundle.model_path())).layers


@pytest.mark.parametrize("command", ["train-demo", "train-demo-lora"])
def test_training_scenes_past_the_training_range_name_the_flag(tmp_path, capsys, command):
    """Seeds 0 to 9 draw up to 100,000 scenes each below the held-out evaluation's 1,000,000."""
    seed_line = ("error: --seed: {} would draw scenes from {}, where only 0 to 999999 are for "
                 "training (the evaluation's start at 1000000). Fix: use 0 to 9\n")  # fmt: skip
    for flags, line in (
        (["--seed", "10"], seed_line.format(10, 1_000_000)),
        (["--seed", "-1"], seed_line.format(-1, -100_000)),
        (["--scenes", "100001"], "error: --scenes: 100001. Fix: use 1 to 100000 (the scenes of "
                                 "one --seed)\n"),
    ):  # fmt: skip
        assert main([command, *flags, "--out", str(tmp_path)]) == 2
        assert capsys.readouterr().err == line


def test_captions_are_utf8_with_or_without_a_bom_and_others_are_named(tmp_path, capsys):
    from skyreels_core.demo.dataset import read_clips

    clips = tmp_path / "clips"
    _write_clips(clips, [("a red circle bounces on the floor", 33, 64, False)])
    (clips / "clip0.txt").write_bytes("\ufeffa red circle bounces on the floor\r\n".encode())
    assert read_clips(clips).captions == ["a red circle bounces on the floor"]
    (clips / "clip0.txt").write_bytes("a red circle, café au lait".encode("latin-1"))
    assert main(["train-demo-lora", "--clips", str(clips), "--out", str(tmp_path / "loras")]) == 2
    assert capsys.readouterr().err == (
        "error: --clips: clip0.txt is not UTF-8. Fix: save it as UTF-8 text\n"
    )


def test_a_long_clip_is_read_only_as_far_as_its_lora_uses_it(tmp_path, monkeypatch):
    """A LoRA learns a clip's first 33 frames at 16 fps: a 10 s clip (a minute of 1080p took
    tens of gigabytes) decodes those 2 s, its frames and sound what a full read gives there."""
    from skyreels_core import av_io
    from skyreels_core.demo import dataset

    _write_clips(tmp_path, [("a red circle bounces on the floor", 160, 96, True)])
    returned = []

    def spy(path, **limits):
        result = av_io.read_video(path, **limits)
        returned.append(result[0].shape[0])
        return result

    monkeypatch.setattr(dataset, "read_video", spy)
    part = dataset.read_clips(tmp_path)
    monkeypatch.setattr(dataset, "read_video", lambda path, **limits: av_io.read_video(path))
    whole = dataset.read_clips(tmp_path)
    assert returned == [33]
    assert torch.equal(part.pixels, whole.pixels) and torch.equal(part.audio, whole.audio)


def test_hidden_files_in_the_clips_folder_are_skipped(tmp_path):
    """macOS leaves ._clip0.mp4 (AppleDouble) beside a copied clip: it was read as a clip and
    refused as one without a caption."""
    from skyreels_core.demo.dataset import read_clips

    _write_clips(tmp_path, [("a red circle bounces on the floor", 33, 64, False)])
    (tmp_path / "._clip0.mp4").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / ".hidden.mov").write_bytes(b"")
    assert read_clips(tmp_path).captions == ["a red circle bounces on the floor"]


@pytest.mark.parametrize(
    "args, line",
    [(["--steps", "0"], "--steps: 0. Fix: use 1 to 200"),
     (["--steps", "10000000000"], "--steps: 10000000000. Fix: use 1 to 200"),
     (["--cache-threshold", "nan"], "--cache-threshold: nan. Fix: use 0 (off) or more"),
     (["--cache-threshold", "inf"], "--cache-threshold: inf. Fix: use 0 (off) or more"),
     (["--frames", "0"], "--frames: 0 frames is not 4k+1. Fix: use 1, 5, ... frames"),
     (["--frames", "7"], "--frames: 7 frames is not 4k+1. Fix: use 5 or 9 frames"),
     (["--frames", "100001"], "--frames: 100001. Fix: use at most 1025 (the nodes' limit)"),
     (["--total-frames", "100001"],
      "--total-frames: 100001. Fix: use at most 100000 (the nodes' limit)"),
     (["--task", "v2a", "--frames", "0"], "--frames: 0. Fix: give a positive count or leave it out"),
     (["--task", "v2a", "--total-frames", "40"],
      "--total-frames: given for --task v2a, which keeps its clip. Fix: drop it")],
)  # fmt: skip
def test_numbers_that_cannot_render_are_one_line_before_anything_is_made(
    tmp_path, capsys, no_model, args, line
):
    """--steps 10000000000 died in torch.linspace after the model loaded; nan passed as a
    threshold and was written into the clip's metadata; --frames 0 advised "1 or 1 frames".
    --total-frames joins windows: it was held to one render's 1025 frames, Extend to Length's
    limit is 100000."""
    out = tmp_path / "new" / "x.mp4"
    assert main(["demo", *args, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {line}\n"
    assert not out.parent.exists()


def test_a_scripted_request_takes_its_defaults_from_its_own_length():
    """RenderRequest(task="keyframes", frames=17) asked for frame 32 of 17 (the defaults were
    fixed at 0, 16, 32); fps 0 divided by zero deep in the render."""
    from skyreels_core.demo import bundle
    from skyreels_core.render import RenderRequest, build_condition

    clip = render_scene(spec_from_caption("a red square bounces on the floor", seed=7)).frames
    condition, _ = build_condition(
        bundle.video_codec(), RenderRequest(task="keyframes", frames=17, source=clip[:17])
    )
    assert condition.known_frames == [0, 5, 6, 7, 8, 13, 14, 15, 16]  # frames 0, 8 and 16
    with pytest.raises(InputError, match="^fps: 0"):
        build_condition(bundle.video_codec(), RenderRequest(fps=0.0))


def test_the_largest_counts_the_nodes_allow_pass_the_checks(tmp_path, no_model):
    """The limits are the nodes' own, inclusive: 200 steps, 1025 frames and 100000 in all reach
    the model."""
    args = ["--steps", "200", "--frames", "1025", "--total-frames", "100000"]
    with pytest.raises(AssertionError, match="the model loaded"):
        main(["demo", *args, "--out", str(tmp_path / "x.mp4")])


def test_an_existing_out_is_kept_unless_overwrite_and_refused_before_the_render(
    tmp_path, capsys, no_model
):
    """Refused after the render, a clip's minutes of work were lost for a name."""
    out = tmp_path / "old.mp4"
    out.write_bytes(b"an earlier clip")
    assert main(["demo", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: --out: {out} already exists. Fix: choose another path or pass --overwrite\n"
    )
    assert out.read_bytes() == b"an earlier clip"
    with pytest.raises(AssertionError, match="the model loaded"):  # --overwrite: on to the render
        main(["demo", "--out", str(out), "--overwrite"])


def test_the_seed_and_steps_reach_the_sampler(tmp_path, monkeypatch):
    """--steps 3 runs the model 3 times (one call a step, guidance batched), and another --seed
    draws another clip from the same prompt."""
    from skyreels_core.demo import cli

    calls = []
    load = cli.Pipeline.load

    def counted(model_path=None):
        pipeline = load(model_path)
        pipeline.model.register_forward_hook(lambda *_: calls.append(1))
        return pipeline

    monkeypatch.setattr(cli.Pipeline, "load", counted)
    clips = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}.mp4"
        args = ["--frames", "5", "--steps", "3", "--seed", seed, "--out", str(out)]
        assert main(["demo", *args]) == 0
        clips.append(read_video(out)[0])
    assert len(calls) == 2 * 3
    assert psnr(clips[0], clips[1]) < 40.0


@pytest.mark.parametrize(
    "task, args, kept",
    [("i2av", [], [0]), ("interpolate", [], [0, 8]), ("keyframes", [], [0, 4, 8]),
     ("keyframes", ["--keyframes", "0, 8"], [0, 8])],
)  # fmt: skip
def test_the_clip_tasks_keep_their_source_frames_where_they_belong(tmp_path, task, args, kept):
    """Each kept frame comes back as its own source frame through the codec (about 33 dB; any
    other frame of the scene reads 21 to 23): i2av the first, interpolate the first and last,
    keyframes the ones asked for. The source is the demo world's scene for --seed 0."""
    source = render_scene(sample_scene_spec(1), frames=9).frames
    out = tmp_path / "clip.mp4"
    assert main(["demo", "--task", task, *args, "--frames", "9", "--steps", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    frames = read_video(out)[0]
    assert frames.shape[0] == 9
    assert [psnr(frames[i], source[i]) >= 30.0 for i in kept] == [True] * len(kept)
    if task == "keyframes":
        with av.open(str(out)) as container:
            assert container.metadata["keyframes"] == ", ".join(map(str, kept))


def test_an_image_given_to_i2av_is_its_first_frame(tmp_path):
    from PIL import Image

    source = render_scene(sample_scene_spec(5), frames=1).frames[0]
    image = tmp_path / "first.png"
    Image.fromarray((source * 255).round().byte().numpy()).save(image)
    out = tmp_path / "clip.mp4"
    assert main(["demo", "--task", "i2av", "--image", str(image), "--frames", "5", "--steps", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    assert psnr(read_video(out)[0][0], source) >= 30.0


def test_the_default_edit_mask_changes_the_middle_and_keeps_the_border(tmp_path):
    """Without --mask the edit regenerates the middle half of the frame (white = change) and
    keeps the rest of the demo world's scene."""
    source = render_scene(sample_scene_spec(1), frames=9).frames
    out = tmp_path / "edit.mp4"
    assert main(["demo", "--task", "edit", "--frames", "9", "--steps", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    change = (read_video(out)[0] - source).abs().mean(dim=(0, 3))  # [64, 64]
    middle = torch.zeros(64, 64, dtype=torch.bool)
    middle[16:48, 16:48] = True
    assert change[middle].mean() > 3 * change[~middle].mean()  # measured 0.029 and 0.0064


def test_a_reference_image_steers_the_render_at_its_own_size(tmp_path):
    """--task ref renders at the image's size (48x64 here) and takes the image in: two images,
    same seed and prompt, two clips. Without --image the world scene's first frame is the
    reference."""
    from PIL import Image

    clips = []
    for colour in ("red", "blue"):
        image = tmp_path / f"{colour}.png"
        Image.new("RGB", (64, 48), colour).save(image)
        out = tmp_path / f"{colour}.mp4"
        assert main(["demo", "--task", "ref", "--image", str(image), "--frames", "5",
                     "--steps", "2", "--out", str(out)]) == 0  # fmt: skip
        clips.append(read_video(out)[0])
    assert clips[0].shape == (5, 48, 64, 3)
    assert psnr(clips[0], clips[1]) < 40.0
    assert main(["demo", "--task", "ref", "--frames", "5", "--steps", "1",
                 "--out", str(tmp_path / "world.mp4")]) == 0  # fmt: skip


def test_an_edit_of_a_clip_shorter_than_frames_is_one_line(tmp_path, capsys, no_model):
    clip = write_mp4(tmp_path / "five.mp4", render_scene(sample_scene_spec(3), frames=5).frames,
                     16.0, None)  # fmt: skip
    for task in ("edit", "keyframes"):
        assert main(["demo", "--task", task, "--video", str(clip), "--frames", "9",
                     "--out", str(tmp_path / "x.mp4")]) == 2  # fmt: skip
        assert capsys.readouterr().err == (
            f"error: video: 5 frames, fewer than the 9 the {task} task asks for. "
            "Fix: give a longer clip or fewer --frames\n"
        )


def test_an_unreadable_image_exits_with_one_line_naming_it(tmp_path, capsys):
    from skyreels_core.__main__ import main

    garbage = tmp_path / "frame.png"
    garbage.write_bytes(b"not a picture")
    out = tmp_path / "x.mp4"
    assert main(["demo", "--task", "i2av", "--image", str(garbage), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --image: cannot read {garbage}") and error.count("\n") == 1
    assert "Fix: pass a PNG or JPEG file" in error and not out.exists()
