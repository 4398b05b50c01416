"""Overnight-queue reliability: repeated renders leak nothing and repeat exactly; an interrupt
mid-sampling leaves no output file and the next render still runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from skyreels_pack import NODE_CLASS_MAPPINGS
from workflow_tools import core_shims, object_info_from_mappings, run_api_prompt

from skyreels_core.types import AVLatent
from skyreels_core.workflow_format import ui_to_api

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "workflows" / "assets"
WORKFLOW = json.loads((ROOT / "workflows" / "text_to_video.json").read_text())
PROMPT = ui_to_api(
    WORKFLOW, object_info_from_mappings({**core_shims(ASSETS), **NODE_CLASS_MAPPINGS})
)
SAMPLER_ID = next(i for i, node in PROMPT.items() if node["class_type"] == "SkyReelsV4Sampler")


def _resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


@pytest.fixture
def folders(tmp_path, monkeypatch):
    output = tmp_path / "output"
    monkeypatch.setenv("SKYREELS_OUTPUT_DIR", str(output))
    return output


def _render() -> AVLatent:
    outputs = run_api_prompt(
        PROMPT, NODE_CLASS_MAPPINGS, core_shims(ASSETS), {"workflow": WORKFLOW}
    )
    return outputs[SAMPLER_ID]["result"][0]


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_twenty_queued_renders_leak_nothing_and_repeat_exactly(folders):
    first = _render()
    for _ in range(4):  # allocator pools and caches settle
        _render()
    settled = _resident_bytes()
    for _ in range(15):
        result = _render()
        assert torch.equal(result.video, first.video) and torch.equal(result.audio, first.audio)
    growth = _resident_bytes() - settled
    assert growth < 48 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over 15 renders"
    saved = sorted(p.name for p in folders.rglob("*.mp4"))
    assert len(saved) == 20 and len(set(saved)) == 20  # every render kept, none overwritten


def test_an_interrupt_stops_within_a_step_and_leaves_no_file(folders, monkeypatch):
    host = sys.modules["skyreels_pack.nodes.host"]
    calls = []

    class Interrupted(Exception):
        pass

    def interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted

    monkeypatch.setattr(host, "check_interrupt", interrupt)
    with pytest.raises(Interrupted):
        _render()
    assert len(calls) == 2  # the second step's check stopped it
    assert not folders.exists() or not any(folders.rglob("*"))
    monkeypatch.undo()
    monkeypatch.setenv("SKYREELS_OUTPUT_DIR", str(folders))
    _render()
    assert len(list(folders.rglob("*.mp4"))) == 1


def test_the_host_is_asked_for_room_before_the_encoder_and_the_model_compute(folders, monkeypatch):
    from skyreels_core.offload import device_bytes

    host = sys.modules["skyreels_pack.nodes.host"]
    asked, modules = [], []
    monkeypatch.setattr(host, "reserve", lambda device, size: asked.append(size))
    make_room = host.make_room
    monkeypatch.setattr(
        host,
        "make_room",
        lambda module, *args: modules.append((module, args)) or make_room(module, *args),
    )
    result = _render()
    # The model's weights where they rest, asked before they are read (Load Model); the prompt
    # and the negative prompt each encoded once (the encoder's weights rest on this CPU where
    # it computes: nothing to move); the model's weights where it computes; the activations of
    # its batched guidance pass.
    [(model, (device, swapped, lora_bytes))] = modules
    assert type(model).__name__ == "DualStreamMMDiT" and swapped == 0 and lora_bytes == 0
    weights = device_bytes(model)
    assert asked[:4] == [weights, 0, 0, weights] and len(asked) == 5
    shapes, audio = [result.video.shape], result.audio.shape[-1]
    bounds = [model.activation_bytes(shapes, audio, text, 2) for text in (1, 512)]
    assert bounds[0] < asked[4] < bounds[1]  # both prompts' tokens, padded to one length


def test_freeing_memory_each_step_empties_the_cache_per_step_and_changes_nothing(
    folders, monkeypatch
):
    host = sys.modules["skyreels_pack.nodes.host"]
    first = _render()
    emptied = []
    monkeypatch.setattr(host, "soft_empty_cache", lambda: emptied.append(1))
    monkeypatch.setitem(PROMPT[SAMPLER_ID]["inputs"], "free_memory_each_step", True)
    result = _render()
    steps = PROMPT[SAMPLER_ID]["inputs"]["steps"]
    assert len(emptied) == steps + 1  # after every step, and once when sampling ends
    assert torch.equal(result.video, first.video) and torch.equal(result.audio, first.audio)
