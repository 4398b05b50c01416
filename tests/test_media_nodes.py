"""The PyAV audio loader: reads the input folder exactly, refuses what lies outside it."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch
from skyreels_pack import NODE_CLASS_MAPPINGS

from skyreels_core.errors import InputError

LoadAudio = NODE_CLASS_MAPPINGS["SkyReelsV4LoadAudio"]


def _write_wav(path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM, channels interleaved: samples is [channels, count]."""
    with wave.open(str(path), "wb") as file:
        file.setnchannels(samples.shape[0])
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.T.astype("<i2").tobytes())


@pytest.fixture
def input_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYREELS_INPUT_DIR", str(tmp_path))
    return tmp_path


def test_loads_the_samples_channels_and_rate(input_dir):
    samples = np.random.default_rng(0).integers(-32768, 32767, size=(2, 1000))
    (input_dir / "sounds").mkdir()
    _write_wav(input_dir / "sounds" / "voice.wav", samples, 22050)
    _write_wav(input_dir / "Take 2.WAV", samples[:1], 8000)
    (input_dir / "notes.txt").write_text("not audio")

    files = LoadAudio.INPUT_TYPES()["required"]["audio"][0]
    assert files == ["Take 2.WAV"]  # the top level, as the host lists its input folder
    (audio,) = LoadAudio().load("sounds/voice.wav")  # a subfolder path an API prompt may name
    assert audio["sample_rate"] == 22050
    expected = torch.from_numpy(samples / 32768.0).float()[None]
    assert audio["waveform"].shape == (1, 2, 1000)
    torch.testing.assert_close(audio["waveform"], expected, rtol=0, atol=1e-7)


def test_a_replaced_file_reads_as_changed(input_dir):
    _write_wav(input_dir / "a.wav", np.zeros((1, 100)), 16000)
    before = LoadAudio.IS_CHANGED(audio="a.wav")
    assert LoadAudio.IS_CHANGED(audio="a.wav") == before
    _write_wav(input_dir / "a.wav", np.ones((1, 100)), 16000)
    assert LoadAudio.IS_CHANGED(audio="a.wav") != before


def test_missing_or_outside_files_are_one_clear_message(input_dir):
    assert LoadAudio.VALIDATE_INPUTS(audio="gone.wav").startswith("audio: 'gone.wav' was not found")
    assert "outside" in LoadAudio.VALIDATE_INPUTS(audio="../secret.wav")
    (input_dir / "broken.wav").write_bytes(b"RIFF not really")
    assert LoadAudio.VALIDATE_INPUTS(audio="broken.wav") is True  # it exists; reading fails
    with pytest.raises(InputError, match="audio: cannot read broken.wav"):
        LoadAudio().load("broken.wav")
