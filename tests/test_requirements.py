"""The transformers and diffusers floors: declared alike in requirements.txt and pyproject.toml,
and an older library named with its upgrade when a loader first needs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skyreels_core import requirements
from skyreels_core.encoder import MLLMEncoder
from skyreels_core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _floors(lines) -> dict[str, tuple[int, int]]:
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([a-z]+)>=(\d+)\.(\d+)\s*", line)
        if match and match[1] in requirements.MINIMUM_VERSIONS:
            found[match[1]] = (int(match[2]), int(match[3]))
    return found


def test_both_declarations_name_the_floors_the_code_checks():
    listed = _floors((ROOT / "requirements.txt").read_text().splitlines())
    project = re.findall(r'^\s*"([^"]+)",$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert listed == _floors(project) == requirements.MINIMUM_VERSIONS


@pytest.mark.parametrize("installed", ["4.57.6", "5.0.0rc1", "5.24.9"])
def test_an_older_transformers_is_named_before_the_encoder_loads(installed, monkeypatch, tmp_path):
    monkeypatch.setattr(requirements, "version", lambda package: installed)
    with pytest.raises(InputError, match=f"^encoder: the pack needs transformers 5.25 or later and "
                       f"ComfyUI's Python has {re.escape(installed)}. Fix: run") as error:  # fmt: skip
        MLLMEncoder.from_folder(tmp_path)
    assert 'pip install -U "transformers>=5.25"' in error.value.fix


def test_a_missing_diffusers_is_named_with_its_install(monkeypatch):
    from importlib.metadata import PackageNotFoundError

    def not_installed(package):
        raise PackageNotFoundError(package)

    monkeypatch.setattr(requirements, "version", not_installed)
    with pytest.raises(InputError, match="^audio_vae: the pack needs diffusers 0.42 or later and "
                       "ComfyUI's Python does not have it. Fix: run") as error:  # fmt: skip
        requirements.import_required("diffusers", "audio_vae")
    assert 'pip install -U "diffusers>=0.42"' in error.value.fix


def test_the_installed_versions_pass():
    for package in requirements.MINIMUM_VERSIONS:
        assert requirements.import_required(package, "x").__name__ == package
    assert requirements._release("0.42.1") == (0, 42) and requirements._release("dev") == (0, 0)


def test_every_data_file_of_the_library_is_packaged():
    """pyproject's package data left out the demo encoder's chat_template.jinja: installed as a
    package (pip install ., a wheel), every render failed with "has no chat template"."""
    table = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]
    globs = re.findall(r'"([^"]+)"', re.search(r"^skyreels_core = \[(.*)\]$", table, re.M)[1])
    library = ROOT / "skyreels_core"
    data = [p for p in library.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert data and all(any(p.relative_to(library).match(g) for g in globs) for p in data), [
        p.name for p in data if not any(p.relative_to(library).match(g) for g in globs)
    ]
