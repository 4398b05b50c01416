"""Loader nodes: files come from the models folder, replaced files are reloaded, and the audio
loader opens MMAudio VAE + vocoder files (separate or combined) through the codec."""

from __future__ import annotations

import os
import time

import pytest
import torch
from codec_helpers import TINY_AUDIO, TINY_VOCODER, write_tiny_mmaudio
from safetensors.torch import save_file
from skyreels_pack import NODE_CLASS_MAPPINGS

import skyreels_core.codecs.mmaudio as mmaudio

AUDIO_LOADER = NODE_CLASS_MAPPINGS["SkyReelsV4AudioVAELoader"]
MODEL_LOADER = NODE_CLASS_MAPPINGS["SkyReelsV4ModelLoader"]


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYREELS_MODELS_DIR", str(tmp_path))
    (tmp_path / "audio_vae").mkdir()
    return tmp_path


@pytest.fixture
def tiny_audio_files(models, monkeypatch):
    vae, vocoder = write_tiny_mmaudio(models / "audio_vae")
    # The node reads the shipped 44.1 kHz configs; the tiny ones keep the test small.
    tiny = {"mmaudio_44k_vae.json": TINY_AUDIO, "mmaudio_44k_vocoder.json": TINY_VOCODER}
    monkeypatch.setattr(mmaudio, "_config", lambda name: tiny[name])
    return vae, vocoder


def test_audio_loader_lists_and_opens_mmaudio_files(tiny_audio_files):
    vae, vocoder = tiny_audio_files
    choices = AUDIO_LOADER.INPUT_TYPES()["required"]
    assert choices["vae_name"][0][1:] == [
        "combined.safetensors",
        "vae.safetensors",
        "vocoder.safetensors",
    ]
    separate = AUDIO_LOADER().load("vae.safetensors", "vocoder.safetensors", "fp32")[0]
    combined = AUDIO_LOADER().load("combined.safetensors", choices["vocoder_name"][0][0], "fp32")[0]
    latents = torch.randn(1, 40, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = vocoder(vae.decode(latents / 0.417).sample).sample
    for codec in (separate, combined):
        assert (codec.decode(latents) - expected).abs().max() < 1e-5


def test_a_replaced_checkpoint_is_reloaded_an_unchanged_one_is_not(models):
    folder = models / "diffusion_models"
    folder.mkdir()
    path = folder / "model.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    first = MODEL_LOADER.IS_CHANGED(model_name="model.safetensors", dtype="auto")
    assert MODEL_LOADER.IS_CHANGED(model_name="model.safetensors", dtype="auto") == first
    save_file({"x": torch.zeros(3)}, str(path))
    later = time.time() + 5
    os.utime(path, (later, later))
    assert MODEL_LOADER.IS_CHANGED(model_name="model.safetensors", dtype="auto") != first
    missing = MODEL_LOADER.IS_CHANGED(model_name="gone.safetensors", dtype="auto")
    assert "not found" in missing  # load() then fails with the same clear message
