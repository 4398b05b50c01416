"""Every shipped workflow matches the node definitions and runs headlessly on the bundled model."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from unittest import mock

import av
import numpy as np
import pytest
import torch
from PIL import Image
from skyreels_pack import NODE_CLASS_MAPPINGS
from workflow_tools import (
    core_shims,
    object_info_from_mappings,
    run_api_prompt,
    validate_workflow,
)

from skyreels_core import av_io
from skyreels_core.demo.metrics import (
    av_sync_error_ms,
    centroids,
    dominant_colour,
    dominant_pitch_colour,
    dominant_shape,
    psnr,
)
from skyreels_core.errors import InputError
from skyreels_core.workflow_format import ui_to_api

ROOT = Path(__file__).resolve().parents[1]
# render_takes first: SKYREELS_UPDATE_THUMBNAILS=1 rewrites its take, which refine_saved_take reads,
# before that workflow's card is drawn.
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"), key=lambda p: (p.stem != "render_takes", p))
ASSETS = ROOT / "workflows" / "assets"
# The host's loaders and ours read workflows/assets/ as their input folder, so file widgets are
# checked too.
with mock.patch.dict(os.environ, {"SKYREELS_INPUT_DIR": str(ASSETS)}):
    OBJECT_INFO = object_info_from_mappings({**core_shims(ASSETS), **NODE_CLASS_MAPPINGS})


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_workflows", ROOT / "workflows" / "build_workflows.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


BUILDER = _builder()


def test_committed_workflows_equal_the_builder_output():
    built = BUILDER.build_all()
    assert sorted(built) == sorted(path.stem for path in WORKFLOWS)
    for path in WORKFLOWS:
        assert json.loads(path.read_text()) == built[path.stem], (
            f"run python workflows/build_workflows.py ({path.name})"
        )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_validates(path):
    assert validate_workflow(json.loads(path.read_text()), OBJECT_INFO) == []


def test_validator_catches_broken_workflows():
    workflow = json.loads((ROOT / "workflows" / "text_to_video.json").read_text())
    broken = json.loads(json.dumps(workflow))
    sampler = next(n for n in broken["nodes"] if n["type"] == "SkyReelsV4Sampler")
    sampler["widgets_values"][4] = "heun"  # not a solver
    sampler["widgets_values"][2] = 0  # steps below the minimum
    broken["links"][0][5] = "IMAGE"
    broken["nodes"].append({"id": 99, "type": "NoSuchNode", "inputs": [], "widgets_values": []})
    errors = validate_workflow(broken, OBJECT_INFO)
    assert any("heun" in e for e in errors) and any("steps=0" in e for e in errors)
    assert any("link 1" in e for e in errors) and any("NoSuchNode" in e for e in errors)


# Saved clip (width, height, frames) and mask timeline frames (None: no mask node) where a
# workflow differs from the 64 px, 33-frame default: the refiner turns 17 frames at 64 px into 33
# at 128 px; render_takes saves its 17-frame take's preview; refine_saved_take starts from a take.
# The notes on the demo model's untrained high-res keyframes (up to their first colon).
SAMPLER_NOTE, REFINE_NOTE = (
    "the demo model never learned high-res keyframes",
    "the take's high-res keyframes come from the demo model, which never learned them",
)
KEYFRAME_NOTES = {
    "low_res_keyframes_refiner": sorted([SAMPLER_NOTE, REFINE_NOTE]),
    "render_takes": [SAMPLER_NOTE],
    "refine_saved_take": [REFINE_NOTE],
}
SAVED_CLIPS = {
    "low_res_keyframes_refiner": ((128, 128, 33), 17),
    "long_video": ((64, 64, 61), 33),
    "extend_to_length": ((64, 64, 89), 33),
    "render_takes": ((64, 64, 17), 17),
    "refine_saved_take": ((128, 128, 33), None),
}


def _run_workflow(path: Path, inputs: Path, output: Path) -> tuple[dict, dict, list[dict], Path]:
    """(the UI workflow, each node's outputs, the nodes' UI results, the one saved MP4) of a
    headless run."""
    workflow = json.loads(path.read_text())
    result = run_api_prompt(
        ui_to_api(workflow, OBJECT_INFO),
        NODE_CLASS_MAPPINGS,
        core_shims(inputs),
        {"workflow": workflow},
    )
    uis = [node["ui"] for node in result.values() if node["ui"]]
    saved = [video for ui in uis for video in ui.get("skyreels_videos", [])]
    assert len(saved) == 1
    return workflow, result, uis, output / saved[0]["subfolder"] / saved[0]["filename"]


@pytest.fixture
def host_folders(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(input, output) folders as the host's: the example inputs copied in, the output empty."""
    inputs, output = tmp_path / "input", tmp_path / "output"
    shutil.copytree(ASSETS, inputs)
    monkeypatch.setenv("SKYREELS_INPUT_DIR", str(inputs))
    monkeypatch.setenv("SKYREELS_OUTPUT_DIR", str(output))
    return inputs, output


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_on_the_demo_model(path, host_folders, tmp_path):
    inputs, output = host_folders
    workflow, _, uis, file = _run_workflow(path, inputs, output)
    (width, height, frames), timeline_frames = SAVED_CLIPS.get(path.stem, ((64, 64, 33), 33))
    with av.open(str(file)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        video = container.streams.video[0]
        assert (video.width, video.height, video.frames) == (width, height, frames)
        assert json.loads(container.metadata["workflow"]) == workflow
    timelines = [t for ui in uis for t in ui.get("skyreels_timeline", [])]
    assert all(t["frames"] == timeline_frames for t in timelines)
    assert bool(timelines) == (timeline_frames is not None)
    notes = [note for ui in uis for note in ui.get("skyreels_note", [])]
    # No shipped workflow asks what the demo never learned, but the three that show the low-res
    # + high-res keyframes path for real weights, where the Sampler and Refine say so.
    told = sorted(note.split(":")[0] for note in notes if note)
    assert notes and told == KEYFRAME_NOTES.get(path.stem, [])
    frames = av_io.read_video(file)[0]
    if path.stem == "render_takes":
        _check_the_example_take(uis, output)
    if path.stem == "video_to_audio":
        _check_sound_added_to_the_clip(file, inputs / "skyreels_v4_source_clip.mp4")
    if path.stem == "lora_style":  # "a red circle ..." through the palette-shift LoRA
        audio = av_io.read_video(file)[2]
        pitch = dominant_pitch_colour(audio["waveform"][0], audio["sample_rate"])
        assert (dominant_colour(frames), dominant_shape(frames), pitch) == (
            "green",
            "circle",
            "green",
        )
    if path.stem in ("long_video", "extend_to_length"):
        # Windows of one green triangle (the clip's own 28 frames, then 28 new ones each), the
        # sound running through to the end.
        windows = [frames[start : start + 28] for start in [0, *range(33, len(frames), 28)]]
        assert [(dominant_colour(w), dominant_shape(w)) for w in windows] == [
            ("green", "triangle")
        ] * len(windows)
        audio = av_io.read_video(file)[2]
        assert audio["waveform"].shape[-1] >= round(len(frames) / 16 * audio["sample_rate"])
    if path.stem == "video_to_video":  # the green triangle's bounce, recoloured by the prompt
        source = av_io.read_video(inputs / "skyreels_v4_source_clip.mp4")[0]
        assert (dominant_colour(source), dominant_colour(frames)) == ("green", "red")
        assert dominant_shape(frames) == "triangle"
        # Its path stays the source's (the same prompt and seed from pure noise: 24 px off).
        path_error = (centroids(frames) - centroids(source)).norm(dim=-1).mean()
        assert path_error < 6.0, f"{path_error:.1f} px from the source's path"
    _check_thumbnail(path, frames, tmp_path)


def test_video_to_audio_takes_any_clip_and_keeps_it(host_folders):
    """A 30-frame 72 x 72 clip at 24 fps (no 4k+1 count, off the 16 px grid: the model sees 33
    frames of 80 x 80) comes back as it was, 30 frames of 72 x 72 at 24 fps, with a sound 30/24 s
    long whose click is on the contact: the workflow feeds the clip's fps to the sampler (the
    sound's length) and to the save. (The demo model knows square frames only: squashed to
    72 x 40 its click lands three frames late.)"""
    inputs, output = host_folders
    source = inputs / "skyreels_v4_source_clip.mp4"
    frames = av_io.read_video(source)[0][:30].permute(0, 3, 1, 2)
    frames = torch.nn.functional.interpolate(frames, size=(72, 72), mode="bilinear")
    av_io.write_mp4(source, frames.permute(0, 2, 3, 1), 24.0, None, overwrite=True)
    file = _run_workflow(ROOT / "workflows" / "video_to_audio.json", inputs, output)[3]
    _check_sound_added_to_the_clip(file, source)


@pytest.mark.parametrize("name", ["extend_video", "keyframes", "masked_edit"])
def test_a_workflow_keeping_a_clips_frames_renders_at_the_clips_rate(host_folders, name):
    """A 24 fps source clip: the kept footage comes out at 24 fps, its sound as long as its
    frames (the Sampler and Save Video were left at 16 fps: two-thirds speed)."""
    inputs, output = host_folders
    source = inputs / "skyreels_v4_source_clip.mp4"
    frames = av_io.read_video(source)[0]
    av_io.write_mp4(source, frames, 24.0, None, overwrite=True)
    file = _run_workflow(ROOT / "workflows" / f"{name}.json", inputs, output)[3]
    saved, fps, audio = av_io.read_video(file)
    assert fps == 24.0 and saved.shape[0] == 33
    assert abs(audio["waveform"].shape[-1] / audio["sample_rate"] - 33 / 24) < 0.05


def test_long_video_renders_its_second_window_at_the_first_ones_rate(host_folders, tmp_path):
    """The first Sampler set to 24 fps: the second window renders at 24 too (wired from the
    first clip), so the joined sound lasts as long as the 61 frames. The second Sampler had a
    widget of its own left at 16: its sound a third too long, laid in out of step."""
    inputs, output = host_folders
    workflow = json.loads((ROOT / "workflows" / "long_video.json").read_text())
    (first,) = [n for n in workflow["nodes"] if n["type"] == "SkyReelsV4Sampler" and n["id"] == 8]
    fps_at = 7  # seed, its control, steps, shift, solver, video and audio guidance, fps
    assert first["widgets_values"][fps_at] == 16.0
    first["widgets_values"][fps_at] = 24.0
    path = tmp_path / "long_video_24.json"
    path.write_text(json.dumps(workflow))
    file = _run_workflow(path, inputs, output)[3]
    saved, fps, audio = av_io.read_video(file)
    assert fps == 24.0 and saved.shape[0] == 61
    assert abs(audio["waveform"].shape[-1] / audio["sample_rate"] - 61 / 24) < 0.05


def test_reroll_sound_keeps_the_video_bit_for_bit(host_folders):
    """Keep Video hands the first sampler's video to the second, which returns it unchanged with
    a sound of its own seed; a second sampler at another fps is refused, naming the fix."""
    inputs, output = host_folders
    path = ROOT / "workflows" / "reroll_sound.json"
    _, result, uis, _ = _run_workflow(path, inputs, output)
    prompt = ui_to_api(json.loads(path.read_text()), OBJECT_INFO)
    first, second = sorted(
        (i for i, node in prompt.items() if node["class_type"] == "SkyReelsV4Sampler"), key=int
    )
    made, remade = result[first]["result"][0], result[second]["result"][0]
    assert torch.equal(remade.video, made.video)
    # A new draw, far above rounding; small beside the sound itself (4 % on the bundle), since
    # the picture decides the hum and its clicks and the seed little else.
    assert (remade.audio - made.audio).abs().mean() > 0.01 * made.audio.abs().mean()
    keep = next(i for i, node in prompt.items() if node["class_type"] == "SkyReelsV4MaskKeepVideo")
    assert result[keep]["ui"]["skyreels_timeline"][0]["known_frames"] == list(range(33))
    sampler = NODE_CLASS_MAPPINGS["SkyReelsV4Sampler"]()
    settings = {**prompt[second]["inputs"], "fps": 24.0}
    linked = {name: result[str(v[0])]["result"][v[1]] for name, v in settings.items()
              if isinstance(v, list)}  # fmt: skip
    with pytest.raises(InputError, match="^fps: 24 fps for a clip made at 16 fps. Fix: set fps"):
        sampler.sample(**{**settings, **linked})


def _text_to_video_render(host_folders) -> tuple[dict, object, dict]:
    """(the Sampler node's outputs and UI, its AV latent, its inputs with links resolved) of the
    shipped text_to_video workflow, for tests that call the Sampler again."""
    inputs, output = host_folders
    path = ROOT / "workflows" / "text_to_video.json"
    _, result, _, _ = _run_workflow(path, inputs, output)
    prompt = ui_to_api(json.loads(path.read_text()), OBJECT_INFO)
    sampler_id = next(i for i, node in prompt.items() if node["class_type"] == "SkyReelsV4Sampler")
    settings = {name: result[str(v[0])]["result"][v[1]] if isinstance(v, list) else v
                for name, v in prompt[sampler_id]["inputs"].items()}  # fmt: skip
    return result[sampler_id], result[sampler_id]["result"][0], settings


def test_the_sampler_notes_a_size_the_demo_model_never_saw(host_folders, caplog):
    """At 64 px the Sampler's note is empty; at 128 px (noise from the demo model) it says so on
    the node and in the log, with what to do instead."""
    sampler, _, settings = _text_to_video_render(host_folders)
    assert sampler["ui"] == {"skyreels_note": [""]}
    video_vae = settings["video_vae"]
    large = NODE_CLASS_MAPPINGS["SkyReelsV4MaskT2V"]().build(video_vae, 128, 128, 9)["result"][0]
    with caplog.at_level(logging.WARNING):
        ran = NODE_CLASS_MAPPINGS["SkyReelsV4Sampler"]().sample(
            **{**settings, "condition": large, "steps": 1}
        )
    note = ran["ui"]["skyreels_note"][0]
    assert "trained on 64 px clips; at 128x128 px expect noise" in note
    assert "low_res_keyframes_refiner" in note and note in caplog.text
    assert ran["result"][0].video.shape[-2:] == (16, 16)


def test_denoise_start_keeps_what_it_starts_from(host_folders):
    """Video-to-video and variations: a Sampler given a render as ``initial`` with another seed
    lands the nearer that render, in both streams, the lower denoise_start is (0.1: a third of
    the distance the same seed from pure noise lands at); below 1 with nothing to start from, or
    from video without sound, is one error naming the fix."""
    _, made, settings = _text_to_video_render(host_folders)
    sampler = NODE_CLASS_MAPPINGS["SkyReelsV4Sampler"]()

    def distance(**changes) -> tuple[float, float]:
        other = sampler.sample(**{**settings, "seed": 9, **changes})["result"][0]
        return (other.video - made.video).abs().mean(), (other.audio - made.audio).abs().mean()

    near, mid, far = (distance(initial=made, denoise_start=d) for d in (0.1, 0.5, 1.0))
    assert far == distance()  # at 1 the start is pure noise, whatever ``initial`` holds
    for stream in (0, 1):
        assert near[stream] < mid[stream] < far[stream]
        assert near[stream] < 0.5 * far[stream]
    with pytest.raises(
        InputError, match="^denoise_start: starting at 0.3 needs latents to start from"
    ):
        distance(denoise_start=0.3)
    silent = replace(made, audio=None)
    with pytest.raises(InputError, match="^initial: the AV latent to start from has no audio"):
        distance(initial=silent, denoise_start=0.3)


def test_a_schedule_wired_into_the_sampler_replaces_its_steps(host_folders, monkeypatch):
    """The Schedule node's own schedule in ``sigmas`` renders bit for bit what the Sampler's
    widgets do, whatever they say; a written-out one runs its own steps (the progress bar's
    total) to another clip; Extend to Length hands it to every window."""
    _, made, settings = _text_to_video_render(host_folders)
    sampler, schedule = (NODE_CLASS_MAPPINGS[name]() for name in
                         ("SkyReelsV4Sampler", "SkyReelsV4Schedule"))  # fmt: skip
    (own,) = schedule.schedule(settings["steps"], settings["shift"], 1.0)
    given = sampler.sample(**{**settings, "steps": 3, "shift": 1.0, "sigmas": own})["result"][0]
    assert torch.equal(given.video, made.video) and torch.equal(given.audio, made.audio)

    totals = []
    host = sys.modules[type(sampler).__module__].host
    monkeypatch.setattr(host, "Progress", _recording(host.Progress, totals))
    (written,) = schedule.schedule(20, 5.0, 1.0, custom="1, 0.9375, 0.8333, 0.625, 0")
    short = sampler.sample(**{**settings, "sigmas": written})["result"][0]
    assert totals == [4]
    assert (short.video - made.video).abs().mean() > 0.01 * made.video.abs().mean()

    node = NODE_CLASS_MAPPINGS["SkyReelsV4ExtendToLength"]()
    assert node.INPUT_TYPES()["optional"]["sigmas"][0] == "SIGMAS"
    frames = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeVideo"]().decode(made, settings["video_vae"])
    sound = NODE_CLASS_MAPPINGS["SkyReelsV4DecodeAudio"]().decode(made, settings["audio_vae"])
    window = {name: settings[name] for name in ("seed", "steps", "shift", "solver",
                                               "video_guidance", "audio_guidance")}  # fmt: skip
    with pytest.raises(InputError, match="^sigmas: starts at 14.6"):
        node.extend(settings["model"], settings["text"], settings["video_vae"],
                    settings["audio_vae"], frames[0], 16.0, 61, 33, 5, sound[0],
                    sigmas=torch.tensor([14.6, 1.0, 0.0]), **window)  # fmt: skip


def _recording(progress: type, totals: list[int]) -> type:
    """``progress`` that also notes each bar's total."""

    class Recording(progress):
        def __init__(self, total: int, *args, **kwargs) -> None:
            totals.append(total)
            super().__init__(total, *args, **kwargs)

    return Recording


def _check_the_example_take(uis: list[dict], output: Path) -> None:
    """refine_saved_take's example input is this workflow's take (its seed 42), saved beside the
    preview clip; SKYREELS_UPDATE_THUMBNAILS=1 writes it again with the cards."""
    from skyreels_core.av_latent_file import load_av_latent

    [saved] = [latent for ui in uis for latent in ui.get("skyreels_latents", [])]
    file = output / saved["subfolder"] / saved["filename"]
    example = ASSETS / BUILDER.EXAMPLE_TAKE
    if os.environ.get("SKYREELS_UPDATE_THUMBNAILS") == "1":
        shutil.copyfile(file, example)
    take, shipped = load_av_latent(file), load_av_latent(example)
    assert (
        (take.keyframe_indices, take.fps)
        == (shipped.keyframe_indices, shipped.fps)
        == ([0, 4], 16.0)
    )
    for name in ("video", "audio", "keyframes"):
        made, kept = getattr(take, name), getattr(shipped, name)
        assert (made - kept).norm() <= 1e-3 * kept.norm(), f"{example.name} is stale ({name})"


def test_a_saved_take_refines_as_the_one_pass_workflow_does(host_folders):
    """render_takes then refine_saved_take renders what low_res_keyframes_refiner renders at once:
    the Refine node's output from the saved take equals the one-pass one."""
    inputs, output = host_folders

    def refined(name: str):
        path = ROOT / "workflows" / f"{name}.json"
        _, result, _, _ = _run_workflow(path, inputs, output)
        prompt = ui_to_api(json.loads(path.read_text()), OBJECT_INFO)
        (node,) = (i for i, n in prompt.items() if n["class_type"] == "SkyReelsV4Refine")
        return result[node]["result"][0]

    one_pass, two_pass = refined("low_res_keyframes_refiner"), refined("refine_saved_take")
    for name in ("video", "audio"):
        a, b = getattr(one_pass, name), getattr(two_pass, name)
        assert a.shape == b.shape and (a - b).norm() <= 1e-3 * a.norm(), name


def _check_sound_added_to_the_clip(file: Path, source: Path) -> None:
    """Video to audio keeps the clip as it was (its frames, not their trip through the codec; its
    fps), its sound lasts as long, and the click lands on the contact the clip shows (the demo
    eval's one-frame target, 62.5 ms, with a frame's slack for this single clip)."""
    frames, fps, audio = av_io.read_video(file)
    clip, clip_fps, _ = av_io.read_video(source)
    clip_samples = round(clip.shape[0] / clip_fps * audio["sample_rate"])
    assert fps == clip_fps
    assert 0 <= audio["waveform"].shape[-1] - clip_samples < 1024  # AAC pads its last 1024
    assert psnr(frames, clip) >= 40.0  # two H.264 encodes apart; the codec round trip: 34
    sync = av_sync_error_ms(clip, audio["waveform"][0], fps, audio["sample_rate"])
    assert sync["contacts"] == sync["matched"] == 1 and sync["mean_error_ms"] < 125.0


def _check_thumbnail(path: Path, frames: torch.Tensor, tmp_path: Path) -> None:
    """The template browser's card shows what the workflow renders: the committed thumbnail
    matches one made from this run's clip (JPEG and run-to-run noise aside).
    SKYREELS_UPDATE_THUMBNAILS=1 writes it instead, after a change to what a workflow renders."""
    committed = path.with_suffix(".jpg")
    if os.environ.get("SKYREELS_UPDATE_THUMBNAILS") == "1":
        BUILDER.thumbnail(frames, committed)
    fresh = BUILDER.thumbnail(frames, tmp_path / committed.name)
    assert committed.exists(), f"no {committed.name}: run with SKYREELS_UPDATE_THUMBNAILS=1"
    expected, actual = (
        torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255)
        for p in (committed, fresh)
    )
    assert expected.shape == actual.shape == (256, 256, 3)
    assert psnr(actual, expected) >= 30.0, (
        f"{committed.name} is stale: SKYREELS_UPDATE_THUMBNAILS=1"
    )


def test_a_workflow_saved_before_the_samplers_newer_inputs_still_converts():
    """A text_to_video saved before the Sampler had `initial`, denoise_start, cache_threshold and
    audio_lag (appended last for this reason) validates, and its prompt leaves them to the
    defaults that render as it did then: from pure noise, every step run, the model's own lag."""
    import inspect

    workflow = json.loads((ROOT / "workflows" / "text_to_video.json").read_text())
    sampler = next(node for node in workflow["nodes"] if node["type"] == "SkyReelsV4Sampler")
    sampler["widgets_values"] = sampler["widgets_values"][:-3]
    sampler["inputs"] = [i for i in sampler["inputs"] if i["name"] != "initial"]
    assert validate_workflow(workflow, OBJECT_INFO) == []
    prompt = ui_to_api(workflow, OBJECT_INFO)
    (inputs,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "SkyReelsV4Sampler"]
    assert inputs["free_memory_each_step"] is False and inputs["seed"] == 42
    assert not {"initial", "denoise_start", "cache_threshold", "audio_lag"} & set(inputs)
    defaults = inspect.signature(NODE_CLASS_MAPPINGS["SkyReelsV4Sampler"].sample).parameters
    assert (defaults["denoise_start"].default, defaults["cache_threshold"].default) == (1.0, 0.0)
    assert defaults["audio_lag"].default == 0.0
