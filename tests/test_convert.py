"""``to-safetensors``: pickled originals become safetensors without running anything in them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skyreels_core.__main__ import main


def test_a_nested_generator_state_becomes_a_flat_safetensors_file(tmp_path):
    weight = torch.randn(4, 3)
    state = {"conv_pre.weight_g": weight[:, :1], "conv_pre.weight_v": weight, "shared": weight}
    torch.save({"generator": state, "steps": 10}, tmp_path / "bigvgan_generator.pt")
    target = tmp_path / "bigvgan.safetensors"
    assert main(["to-safetensors", str(tmp_path / "bigvgan_generator.pt"), str(target)]) == 0
    loaded = load_file(str(target))
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not list(tmp_path.glob("*.partial"))


class RunsCode:
    """Unpickling this calls print: what a malicious checkpoint does with a worse function."""

    def __reduce__(self):
        return print, ("pickle code ran",)


def test_code_in_a_pickle_is_refused_and_nothing_is_written(tmp_path, capsys):
    torch.save({"weights": torch.ones(2), "payload": RunsCode()}, tmp_path / "evil.pt")
    target = tmp_path / "out.safetensors"
    assert main(["to-safetensors", str(tmp_path / "evil.pt"), str(target)]) == 2
    captured = capsys.readouterr()
    first_line = "not a plain PyTorch checkpoint (UnpicklingError: Weights only load failed."
    assert first_line in captured.err  # torch's first line, not its last (an allowlisting hint)
    assert "pickle code ran" not in captured.out
    assert not target.exists()


@pytest.mark.parametrize("existing", [True, False])
def test_an_existing_target_is_never_overwritten_and_a_missing_source_is_named(tmp_path, existing):
    source = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, source)
    target = tmp_path / "model.safetensors"
    if existing:
        target.write_bytes(b"keep me")
        assert main(["to-safetensors", str(source), str(target)]) == 2
        assert target.read_bytes() == b"keep me"
    else:
        assert main(["to-safetensors", str(tmp_path / "missing.pt"), str(target)]) == 2
        assert not target.exists()


@pytest.mark.parametrize(
    "content, said",
    [(b"hello\n", "KeyError: 101"), (b"", "EOFError"),
     ("caf\u00e9 au lait\n".encode("latin-1"), "UnicodeDecodeError: 'utf-8' codec can't decode")],
)  # fmt: skip
def test_a_file_that_is_no_pickle_is_named_in_one_line(tmp_path, capsys, content, said):
    """Text and empty files raised KeyError, IndexError or UnicodeDecodeError from torch.load."""
    source, target = tmp_path / "notes.pt", tmp_path / "notes.safetensors"
    source.write_bytes(content)
    assert main(["to-safetensors", str(source), str(target)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: source: notes.pt is not a plain PyTorch checkpoint ({said}"
    )
    assert not target.exists()


def test_the_targets_folder_is_made_or_refused_before_the_load(tmp_path, capsys):
    source = tmp_path / "model.pt"
    torch.save({"w": torch.arange(3.0)}, source)
    nested = tmp_path / "new" / "folder" / "model.safetensors"
    assert main(["to-safetensors", str(source), str(nested)]) == 0
    assert torch.equal(load_file(str(nested))["w"], torch.arange(3.0))
    capsys.readouterr()
    assert main(["to-safetensors", str(source), str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: target: {tmp_path} names a folder. "
        f"Fix: name a file, e.g. {tmp_path / 'model.safetensors'}\n"
    )
    for name in ("model.pt", "model"):  # safetensors bytes under a name no loader lists
        assert main(["to-safetensors", str(source), str(tmp_path / "out" / name)]) == 2
        assert capsys.readouterr().err == (
            f"error: target: {name} is not a .safetensors name. Fix: use model.safetensors\n"
        )
    assert not (tmp_path / "out").exists()
    if Path("/sys/fs").is_dir():  # sysfs takes no new file, not even root's
        assert main(["to-safetensors", str(source), "/sys/fs/model.safetensors"]) == 2
        assert capsys.readouterr().err.startswith("error: target: cannot write into /sys/fs (")


def test_sparse_tensors_and_keys_alike_as_text_are_one_line_and_nothing_is_written(
    tmp_path, capsys
):
    """A sparse tensor died in .contiguous(); {1: a, "1": b} lost one tensor silently."""
    sparse = torch.eye(3).to_sparse()
    for name, state, said in (
        ("sparse.pt", {"w": sparse}, "holds sparse tensors (w). Fix: save them dense"),
        ("alike.pt", {1: torch.ones(2), "1": torch.zeros(2)}, "holds keys that read alike"),
    ):
        torch.save(state, tmp_path / name)
        target = tmp_path / f"{name}.safetensors"
        assert main(["to-safetensors", str(tmp_path / name), str(target)]) == 2
        assert capsys.readouterr().err.startswith(f"error: source: {name} {said}")
        assert not target.exists()
    assert main(["to-safetensors", str(tmp_path / "alike.pt"), str(tmp_path / "out") + "/"]) == 2
    assert "names a folder" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_weights_under_state_dict_or_model_become_a_flat_safetensors_file(tmp_path, key):
    """Lightning and most trainers save {"state_dict": {...}, "epoch": ...}: the weights inside
    are written (not refused as holding non-tensor entries)."""
    state = {"layer.weight": torch.randn(3, 2), "layer.bias": torch.randn(3)}
    torch.save({key: state, "epoch": 7}, tmp_path / "trained.ckpt")
    target = tmp_path / "trained.safetensors"
    assert main(["to-safetensors", str(tmp_path / "trained.ckpt"), str(target)]) == 0
    loaded = load_file(str(target))
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_flat_state_dict_with_a_tensor_named_model_converts_whole(tmp_path):
    """Only a nested dict under ``generator`` / ``state_dict`` / ``model`` holds the weights: a
    flat state dict whose tensor is named ``model`` (or ``generator``) is the weights itself,
    and was refused as holding no named tensors."""
    state = {"model": torch.randn(3), "generator": torch.randn(2), "head.weight": torch.randn(2, 2)}
    torch.save(state, tmp_path / "flat.pt")
    target = tmp_path / "flat.safetensors"
    assert main(["to-safetensors", str(tmp_path / "flat.pt"), str(target)]) == 0
    loaded = load_file(str(target))
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "checkpoint, said",
    [({}, "holds no named tensors. Fix: pass a state dict file"),
     (torch.ones(3), "holds no named tensors. Fix: pass a state dict file"),
     ({"w": torch.ones(2), "epoch": 7},
      "holds non-tensor entries (epoch). Fix: pass a file whose weights are a flat state dict")],
    ids=["empty", "one tensor", "flat with a number"],
)  # fmt: skip
def test_a_checkpoint_of_no_state_dict_is_named_in_one_line(tmp_path, capsys, checkpoint, said):
    """An empty dict wrote a safetensors file of nothing; a bare tensor, or a number beside the
    tensors, died in an AttributeError instead of naming the source."""
    torch.save(checkpoint, tmp_path / "odd.pt")
    target = tmp_path / "odd.safetensors"
    assert main(["to-safetensors", str(tmp_path / "odd.pt"), str(target)]) == 2
    assert capsys.readouterr().err == f"error: source: odd.pt {said}\n"
    assert not target.exists()


def test_an_existing_target_is_named_before_the_source_is_read(tmp_path, capsys):
    """The target is checked before the (possibly long) load: a taken name is the error even
    where the source would fail too, so no 30 GB read precedes it."""
    source, target = tmp_path / "notes.pt", tmp_path / "model.safetensors"
    source.write_bytes(b"hello\n")  # would fail torch.load
    target.write_bytes(b"keep me")
    assert main(["to-safetensors", str(source), str(target)]) == 2
    assert capsys.readouterr().err.startswith(f"error: target: {target} exists")
    assert target.read_bytes() == b"keep me"


def test_a_folder_as_the_source_is_named(tmp_path, capsys):
    """A folder (a release directory) passed as the checkpoint is refused by name, where
    torch.load raised IsADirectoryError with a traceback."""
    folder = tmp_path / "release"
    folder.mkdir()
    target = tmp_path / "model.safetensors"
    assert main(["to-safetensors", str(folder), str(target)]) == 2
    assert capsys.readouterr().err.startswith(f"error: source: {folder} was not found")
    assert not target.exists()
