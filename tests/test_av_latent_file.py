"""AV latents saved and loaded: exact round trips, the files listed where they were saved, bad
files refused by name, and a loaded latent refining exactly as the one that was saved."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file
from skyreels_pack import NODE_CLASS_MAPPINGS

from skyreels_core.av_latent_file import SUFFIX, load_av_latent, save_av_latent
from skyreels_core.errors import InputError
from skyreels_core.refiner import REFINER_PRESETS, RefinerDiT
from skyreels_core.types import AVLatent

SaveAVLatent = NODE_CLASS_MAPPINGS["SkyReelsV4SaveAVLatent"]
LoadAVLatent = NODE_CLASS_MAPPINGS["SkyReelsV4LoadAVLatent"]
Refine = NODE_CLASS_MAPPINGS["SkyReelsV4Refine"]


def _latent(keyframes: bool = True, audio: bool = True) -> AVLatent:
    generator = torch.Generator().manual_seed(0)
    return AVLatent(
        video=torch.randn(1, 4, 5, 4, 6, generator=generator),
        audio=torch.randn(1, 4, 40, generator=generator) if audio else None,
        keyframes=torch.randn(1, 4, 2, 8, 12, generator=generator) if keyframes else None,
        keyframe_indices=[0, 4] if keyframes else [],
        fps=24.0,
        clip_frames=15,
    )


def _same(a: AVLatent, b: AVLatent) -> bool:
    tensors = ("video", "audio", "keyframes")
    numbers = ("keyframe_indices", "fps", "clip_frames", "source_fps")
    for name in tensors:
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and not torch.equal(x, y)):
            return False
    return all(getattr(a, name) == getattr(b, name) for name in numbers)


@pytest.mark.parametrize(("keyframes", "audio"), [(True, True), (False, True), (False, False)])
def test_a_saved_latent_loads_back_bit_for_bit(tmp_path, keyframes, audio):
    latent = replace(_latent(keyframes, audio), source_fps=12.0)  # a take made from a 12 fps clip
    path = save_av_latent(latent, tmp_path / f"take{SUFFIX}", {"workflow": "{}"})
    assert _same(load_av_latent(path), latent)
    assert not list(tmp_path.glob("*.partial"))


def test_other_files_and_inconsistent_latents_are_refused_by_name(tmp_path):
    model_file = tmp_path / f"model{SUFFIX}"
    save_file({"weight": torch.zeros(2, 2)}, str(model_file))
    with pytest.raises(InputError, match="av_latent: .*is not an AV latent"):
        load_av_latent(model_file)
    preview = tmp_path / "take_preview_00001.mp4"  # beside the takes in a download folder
    preview.write_bytes(b"a clip")
    with pytest.raises(InputError, match="^av_latent: take_preview_00001.mp4 is not an AV latent"):
        load_av_latent(preview)  # it said: convert it with to-safetensors
    renamed = tmp_path / "take.av_latent (1).safetensors"  # the host's upload of a taken name
    save_av_latent(_latent(), renamed)
    assert _same(load_av_latent(renamed), _latent())
    # Keyframes that do not match their indices: a hand-edited or truncated save.
    path = save_av_latent(_latent(), tmp_path / f"edited{SUFFIX}")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    numbers = json.loads(metadata["av_latent"])
    save_file(
        tensors,
        str(path),
        {**metadata, "av_latent": json.dumps({**numbers, "keyframe_indices": [0]})},
    )
    with pytest.raises(InputError, match="keyframes of shape"):
        load_av_latent(path)
    save_file(
        tensors,
        str(path),
        {**metadata, "av_latent": json.dumps({**numbers, "keyframe_indices": [0, 9]})},
    )
    with pytest.raises(InputError, match="outside the clip's 5"):
        load_av_latent(path)
    for key in ("fps", "source_fps"):  # a take saved before the rates were checked
        rates = json.dumps({**numbers, key: 0.0})
        save_file(tensors, str(path), {**metadata, "av_latent": rates})
        with pytest.raises(InputError, match="^av_latent: edited.* holds a frame rate of 0 fps"):
            load_av_latent(path)
    save_file(tensors, str(path), {**metadata, "av_latent": "{not json"})
    with pytest.raises(InputError, match="^av_latent: edited.av_latent.safetensors has a damaged"):
        load_av_latent(path)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    inputs.mkdir()
    monkeypatch.setenv("SKYREELS_INPUT_DIR", str(inputs))
    monkeypatch.setenv("SKYREELS_OUTPUT_DIR", str(outputs))
    return inputs, outputs


def test_saved_takes_are_listed_where_they_were_saved_and_load_exactly(folders):
    inputs, outputs = folders
    first, second = _latent(), _latent(keyframes=False, audio=False)
    workflow = {"nodes": [], "links": []}
    results = [
        SaveAVLatent().save(
            latent, "latents/take", prompt={"1": {}}, extra_pnginfo={"workflow": workflow}
        )
        for latent in (first, second)
    ]
    saved = [result["ui"]["skyreels_latents"][0] for result in results]
    assert [s["filename"] for s in saved] == [f"take_00001{SUFFIX}", f"take_00002{SUFFIX}"]
    assert all(s["subfolder"] == "latents" and s["type"] == "output" for s in saved)
    save_av_latent(first, inputs / f"brought{SUFFIX}")  # a file copied in from elsewhere
    (inputs / "notes.txt").write_text("not a latent")

    names = LoadAVLatent.INPUT_TYPES()["required"]["av_latent"][0]
    assert names == [
        f"brought{SUFFIX}",
        f"latents/take_00001{SUFFIX} [output]",
        f"latents/take_00002{SUFFIX} [output]",
    ]
    for name, latent in zip(names, (first, first, second)):
        assert LoadAVLatent.VALIDATE_INPUTS(av_latent=name) is True
        output = LoadAVLatent().load(name)
        assert _same(output["result"][0], latent)
    (take,) = LoadAVLatent().load(names[0])["ui"]["skyreels_take"]  # what the node shows
    assert take == {"frames": 15, "fps": 24.0, "latent_size": [4, 6], "sound": True, "keyframes": 2}
    (silent,) = LoadAVLatent().load(names[2])["ui"]["skyreels_take"]
    assert (silent["sound"], silent["keyframes"]) == (False, 0)
    from safetensors import safe_open

    with safe_open(str(outputs / "latents" / saved[0]["filename"]), "pt") as handle:
        assert json.loads(handle.metadata()["workflow"]) == workflow  # reopens as its graph


def test_names_outside_the_folders_are_refused(folders):
    inputs, outputs = folders
    outputs.mkdir()
    save_av_latent(_latent(), inputs.parent / f"outside{SUFFIX}")
    for name in (f"../outside{SUFFIX} [output]", f"../outside{SUFFIX}", "/etc/passwd [output]"):
        assert "av_latent" in LoadAVLatent.VALIDATE_INPUTS(av_latent=name)
        with pytest.raises(InputError, match="av_latent"):
            LoadAVLatent().load(name)
    with pytest.raises(InputError, match="filename_prefix"):
        SaveAVLatent().save(_latent(), "../escape")


def test_a_loaded_take_refines_exactly_as_the_saved_one(folders):
    torch.manual_seed(0)
    refiner = RefinerDiT(REFINER_PRESETS["tiny"]).eval()
    widgets = dict(scale=2, fps_factor=2, reinject_keyframes=True, sparsity=0.75, steps=2,
                   denoise_start=0.6, seed=1)  # fmt: skip
    latent = _latent()
    SaveAVLatent().save(latent, "take")
    (loaded,) = LoadAVLatent().load(f"take_00001{SUFFIX} [output]")["result"]
    (direct,) = Refine().refine(refiner, latent, **widgets)["result"]
    (from_file,) = Refine().refine(refiner, loaded, **widgets)["result"]
    assert torch.equal(direct.video, from_file.video) and torch.equal(direct.audio, latent.audio)


def test_a_prefix_with_glob_characters_never_replaces_an_earlier_take(folders):
    """ "lat[a]" reads as a character class to a glob: unescaped, the second take was written
    over the first."""
    _, outputs = folders
    takes = [AVLatent(video=torch.full((1, 4, 3, 4, 4), float(i)), fps=16.0) for i in range(2)]
    saved = [SaveAVLatent().save(take, "lat[a]")["ui"]["skyreels_latents"][0] for take in takes]
    assert [s["filename"] for s in saved] == [f"lat[a]_00001{SUFFIX}", f"lat[a]_00002{SUFFIX}"]
    for entry, take in zip(saved, takes):
        assert _same(load_av_latent(outputs / entry["filename"]), take)


def test_an_existing_file_is_never_overwritten(tmp_path):
    """A file that appeared under the chosen name (another run, a copy) is kept as it was."""
    path = save_av_latent(_latent(), tmp_path / f"take{SUFFIX}")
    before = path.read_bytes()
    with pytest.raises(InputError, match="output: .*already exists.*never overwritten"):
        save_av_latent(_latent(keyframes=False), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial file left


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"audio": torch.zeros(2, 4, 40)}, r"audio latents of shape \(2, 4, 40\) beside video"),
        ({"keyframe_indices": [0, 9]}, r"keyframe latent frames \[0, 9\] outside the clip's 5"),
        ({"keyframe_indices": [0, 5]}, r"keyframe latent frames \[0, 5\] outside the clip's 5"),
        ({"keyframes": None}, "keyframes of shape None for latent frames"),
    ],
)
def test_a_latent_load_would_refuse_is_not_saved(folders, change, message):
    """Save AV Latent runs Load AV Latent's shape check: a take that could never be loaded back
    (a batch-2 sound beside one clip) is refused by the input's name, and nothing is written."""
    _, outputs = folders
    latent = replace(_latent(), **change)
    with pytest.raises(InputError, match=f"av_latent: the latent holds {message}"):
        SaveAVLatent().save(latent, "take")
    assert list(outputs.iterdir()) == []


def test_a_take_saved_again_in_place_leaves_the_loaded_one_as_loaded(tmp_path):
    """safetensors' tensors read the mapped file: a take file overwritten in place under a host
    that holds the loaded take changed it (or crashed the process with SIGBUS)."""
    path = save_av_latent(_latent(), tmp_path / "take.av_latent.safetensors")
    loaded = load_av_latent(path)
    video = loaded.video.clone()
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    with path.open("r+b") as file:
        file.seek(header)
        file.write(bytes(path.stat().st_size - header))
    assert torch.equal(loaded.video, video) and video.abs().sum() > 0
