"""``to-safetensors``: pickled originals become safetensors without running anything in them."""

from __future__ import annotations

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
    assert "not a plain PyTorch checkpoint" in captured.err
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
