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
    (input_dir / "._Take 2.WAV").write_bytes(b"\0\5\26\7")  # macOS AppleDouble: no sound

    files = LoadAudio.INPUT_TYPES()["required"]["audio"][0]
    # the top level, as the host lists its input folder; hidden files skipped, as queue --inputs
    assert files == ["Take 2.WAV"]
    (audio,) = LoadAudio().load("sounds/voice.wav")  # a subfolder path an API prompt may name
    assert audio["sample_rate"] == 22050
    expected = torch.from_numpy(samples / 32768.0).float()[None]
    assert audio["waveform"].shape == (1, 2, 1000)
    torch.testing.assert_close(audio["waveform"], expected, rtol=0, atol=1e-7)


def test_names_annotated_with_their_folder_read_from_it(input_dir, tmp_path, monkeypatch):
    """API scripts and the host's pickers name a saved file ``clip.wav [output]`` (or
    ``[input]``, ``[temp]``), as the core loaders read them: Load Audio refused such a name
    and told the user to put the file into the input folder. Outside each folder is refused."""
    for folder, variable in (("output", "SKYREELS_OUTPUT_DIR"), ("temp", "SKYREELS_TEMP_DIR")):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / folder))
    for folder, rate in (("output", 8000), ("temp", 11025), (".", 16000)):
        _write_wav(input_dir / folder / "take.wav", np.zeros((1, 100)), rate)
    for name, rate in (("take.wav [output]", 8000), ("take.wav [temp]", 11025),
                       ("take.wav [input]", 16000), ("take.wav", 16000)):  # fmt: skip
        assert LoadAudio.VALIDATE_INPUTS(audio=name) is True
        assert LoadAudio().load(name)[0]["sample_rate"] == rate
    assert "outside" in LoadAudio.VALIDATE_INPUTS(audio="../take.wav [output]")


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


RATE = 16000
KINDS = {  # suffix -> (container, codec, sample rate, lossless)
    ".wav": ("wav", "pcm_s16le", RATE, True),
    ".flac": ("flac", "flac", RATE, True),
    ".mp3": ("mp3", "libmp3lame", RATE, False),
    ".ogg": ("ogg", "libopus", 48000, False),
    ".opus": ("opus", "libopus", 48000, False),
    ".m4a": ("ipod", "aac", RATE, False),
    ".aac": ("adts", "aac", RATE, False),
    ".aiff": ("aiff", "pcm_s16be", RATE, True),
    ".aif": ("aiff", "pcm_s16be", RATE, True),
    ".wma": ("asf", "wmav2", RATE, False),
    ".mp4": ("mp4", "aac", RATE, False),
    ".mov": ("mov", "aac", RATE, False),
    ".mkv": ("matroska", "flac", RATE, True),
    ".webm": ("webm", "libopus", 48000, False),
    ".avi": ("avi", "pcm_s16le", RATE, True),
}


def _write_tone(path, container: str, codec: str, rate: int) -> np.ndarray:
    """The tone at ``rate``, mono, written by PyAV as ``codec`` in ``container``; returned."""
    import av

    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype("f4")[None] * 0.5
    with av.open(str(path), "w", format=container) as file:
        stream = file.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = 64000  # WMA has no default
        frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        file.mux(stream.encode(frame))
        file.mux(stream.encode(None))
    return tone[0]


def _peak_hz(waveform: torch.Tensor, rate: int) -> float:
    return float(torch.fft.rfft(waveform).abs().argmax()) * rate / waveform.shape[-1]


def test_every_listed_kind_of_file_is_read_through_pyav(input_dir):
    """Each suffix the node lists, written by PyAV and loaded through the node: the tone comes
    back at its rate, exactly where the codec is lossless."""
    names = {suffix: f"tone{suffix}" for suffix in KINDS}
    tones = {
        suffix: _write_tone(input_dir / names[suffix], container, codec, rate)
        for suffix, (container, codec, rate, _) in KINDS.items()
    }
    assert LoadAudio.INPUT_TYPES()["required"]["audio"][0] == sorted(names.values())
    for suffix, (_, _, rate, lossless) in KINDS.items():
        (audio,) = LoadAudio().load(names[suffix])
        waveform = audio["waveform"][0, 0]
        assert (audio["sample_rate"], audio["waveform"].shape[:2]) == (rate, (1, 1)), suffix
        if lossless:
            expected = torch.from_numpy(tones[suffix])
            torch.testing.assert_close(waveform, expected, rtol=0, atol=1 / 32768, msg=suffix)
        else:  # encoder delay and frame padding: the length to a frame, the pitch exactly
            assert abs(waveform.shape[-1] - rate) <= rate // 8, suffix
            assert _peak_hz(waveform[:rate], rate) == pytest.approx(440, abs=2), suffix
