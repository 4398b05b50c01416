"""Checkpoints are safetensors only, validated before reading, and self-describing."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct

import pytest
import torch
from model_helpers import inputs, tiny_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from skyreels_core.demo import bundle
from skyreels_core.errors import CheckpointError
from skyreels_core.loading import load_model, save_model, write_safetensors
from skyreels_core.refiner import REFINER_PRESETS, RefinerDiT


def test_round_trip_detects_the_preset_and_casts(tmp_path):
    model = tiny_model()
    path = save_model(model, tmp_path / "tiny.safetensors")
    loaded = load_model(path)
    assert loaded.config == model.config
    video, t, text, audio = inputs(model)
    with torch.no_grad():
        assert torch.equal(
            loaded(video, t, text, audio=audio).video, model(video, t, text, audio=audio).video
        )
    half = load_model(path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_the_same_tensors_and_metadata_always_write_the_same_bytes(tmp_path):
    """safetensors orders metadata by a per-process hash seed: a manifest's sha256 could not be
    checked against a rerun until the header was written sorted (train-demo's model: 3 keys)."""
    tensors = {"b.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.ones(5, dtype=torch.half)}
    metadata = {name: json.dumps({"value": index}) for index, name in enumerate("zyxwvu")}
    paths = [write_safetensors(tensors, tmp_path / f"{n}.safetensors", metadata) for n in range(8)]
    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}
    assert len(digests) == 1
    raw = paths[0].read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert list(json.loads(raw[8 : 8 + length])["__metadata__"]) == sorted(metadata)
    with safe_open(str(paths[0]), framework="pt") as handle:
        assert handle.metadata() == metadata
    loaded = load_file(str(paths[0]))
    assert all(torch.equal(loaded[key], value) for key, value in tensors.items())


def test_pickle_files_are_refused_without_being_opened(tmp_path):
    evil = tmp_path / "model.ckpt"
    evil.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(evil)
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="no safetensors header"):
        load_model(disguised)


def test_truncated_and_missing_files_say_what_to_do(tmp_path):
    path = save_model(tiny_model(), tmp_path / "tiny.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    header_end = 8 + int.from_bytes(data[:8], "little")
    for end in (200, header_end - 4):  # a cut in the header's last bytes is one too
        cut.write_bytes(data[:end])
        with pytest.raises(CheckpointError, match="^model: cut.safetensors is truncated. Fix: re-"):
            load_model(cut)
    cut.write_bytes(data[:-4])  # in the tensors: safetensors' own check names it
    with pytest.raises(CheckpointError, match="^model: cut.safetensors cannot be read"):
        load_model(cut)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_mismatched_checkpoints_list_the_differences(tmp_path):
    state = dict(tiny_model().state_dict())
    state.pop("head.head.weight")
    state["blocks.0.ffn.0.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    from skyreels_core.config import get_preset

    with pytest.raises(CheckpointError) as caught:
        load_model(path, get_preset("tiny"))
    message = str(caught.value)
    assert "missing 1 keys (head.head.weight)" in message
    assert "unexpected 1 keys (extra.weight)" in message
    assert "blocks.0.ffn.0.weight (3, 3) != (64, 32)" in message


def test_files_of_other_models_are_recognised(tmp_path):
    path = tmp_path / "sdxl.safetensors"
    save_file({"conditioner.embedders.0.weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="neither a SkyReels-V4"):
        load_model(path)


def _write_shards(state: dict, metadata: dict, folder, count: int, stem: str = "model") -> list:
    """``state`` split over ``count`` files as sharded releases name them, the metadata in each."""
    keys = sorted(state)
    paths = []
    for index in range(count):
        part = {key: state[key].contiguous() for key in keys[index::count]}
        path = folder / f"{stem}-{index + 1:05d}-of-{count:05d}.safetensors"
        save_file(part, str(path), metadata=metadata)
        paths.append(path)
    return paths


def test_a_sharded_checkpoint_loads_from_any_of_its_shards(tmp_path):
    model = tiny_model()
    single = load_model(save_model(model, tmp_path / "single.safetensors"))
    with safe_open(str(tmp_path / "single.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    shards = _write_shards(model.state_dict(), metadata, tmp_path, 3)
    for picked in shards:
        loaded = load_model(picked)
        assert loaded.config == model.config
        assert loaded.state_dict().keys() == single.state_dict().keys()
        assert all(torch.equal(v, single.state_dict()[k]) for k, v in loaded.state_dict().items())
    shards[1].unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00003.safetensors is not beside"):
        load_model(shards[0])
    with pytest.raises(CheckpointError, match="put all 3 shards in"):
        load_model(shards[2])


def test_shards_repeating_a_tensor_are_refused(tmp_path):
    model = tiny_model()
    state = model.state_dict()
    first, second = _write_shards(state, {}, tmp_path, 2)
    key = sorted(state)[0]
    save_file({**load_file(str(second)), key: state[key].contiguous()}, str(second))
    with pytest.raises(CheckpointError, match=f"repeats {key}"):
        load_model(first)


def test_file_lists_show_a_sharded_checkpoint_once(tmp_path, monkeypatch):
    from skyreels_pack.nodes import host

    monkeypatch.setenv("SKYREELS_MODELS_DIR", str(tmp_path))
    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    for name in ("big-00001-of-00002.safetensors", "big-00002-of-00002.safetensors",
                 "small.safetensors", "x-00002-of-00002.txt"):  # fmt: skip
        (folder / name).write_bytes(b"x")
    assert host.list_models("diffusion_models") == [
        "big-00001-of-00002.safetensors",
        "small.safetensors",
    ]


def test_the_refiner_is_sent_to_its_own_loader(tmp_path):
    """The refiner is a Wan-like DiT without text: its file (the bundled demo refiner, as copied
    into models/diffusion_models) is named for what it is, not a bare KeyError."""
    with pytest.raises(CheckpointError, match="model: .*is a SkyReels-V4 refiner.*Load Refiner"):
        load_model(bundle.WEIGHTS_DIR / "refiner.safetensors")
    # The same weights without their metadata: Wan-like, lacking what a Wan model holds.
    state = RefinerDiT(REFINER_PRESETS["tiny"]).state_dict()
    path = tmp_path / "bare.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    with pytest.raises(CheckpointError, match=r"neither .*lacks text_embedding\.0\.weight\)"):
        load_model(path)
