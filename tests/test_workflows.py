"""Every shipped workflow matches the node definitions and runs headlessly on the bundled model."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
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
from skyreels_core.demo.metrics import psnr
from skyreels_core.workflow_format import ui_to_api

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
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


# Saved clip (width, height, frames) and mask timeline frames where a workflow differs from
# the 64 px, 33-frame default: the refiner turns 17 frames at 64 px into 33 at 128 px.
SAVED_CLIPS = {"low_res_keyframes_refiner": ((128, 128, 33), 17)}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_on_the_demo_model(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SKYREELS_OUTPUT_DIR", str(tmp_path / "output"))
    inputs = tmp_path / "input"
    shutil.copytree(ASSETS, inputs)
    monkeypatch.setenv("SKYREELS_INPUT_DIR", str(inputs))
    workflow = json.loads(path.read_text())
    result = run_api_prompt(
        ui_to_api(workflow, OBJECT_INFO),
        NODE_CLASS_MAPPINGS,
        core_shims(inputs),
        {"workflow": workflow},
    )
    (width, height, frames), timeline_frames = SAVED_CLIPS.get(path.stem, ((64, 64, 33), 33))
    uis = [node["ui"] for node in result.values() if node["ui"]]
    saved = [video for ui in uis for video in ui.get("skyreels_videos", [])]
    assert len(saved) == 1 and saved[0]["frame_count"] == frames
    file = tmp_path / "output" / saved[0]["subfolder"] / saved[0]["filename"]
    with av.open(str(file)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        video = container.streams.video[0]
        assert (video.width, video.height, video.frames) == (width, height, frames)
        assert json.loads(container.metadata["workflow"]) == workflow
    timelines = [t for ui in uis for t in ui.get("skyreels_timeline", [])]
    assert len(timelines) == 1 and timelines[0]["frames"] == timeline_frames
    _check_thumbnail(path, av_io.read_video(file)[0], tmp_path)


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
