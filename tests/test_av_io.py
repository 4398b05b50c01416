"""MP4 with sound: exact frames and fps, audio from t = 0, clicks where they belong, atomic writes."""

from __future__ import annotations

import av
import pytest
import torch

from skyreels_core.av_io import next_free_path, read_audio, read_video, resample_audio, write_mp4
from skyreels_core.demo.metrics import psnr
from skyreels_core.errors import InputError

RATE = 16000


def _clip_with_click(frame: int, frames: int = 33, fps: float = 16.0):
    # Smooth pictures: random pixels would measure 4:2:0 chroma loss, not the writer.
    ramp = torch.linspace(0, 1, 48)[None, :, None] * torch.linspace(0.2, 1, 64)[:, None, None]
    pixels = torch.stack([(ramp + torch.tensor([i / frames, 0.5, 0.2])) % 1 for i in range(frames)])
    wave = torch.zeros(1, 1, round(frames / fps * RATE))
    start = round(frame / fps * RATE)
    wave[0, 0, start : start + 80] = 0.8
    return pixels, {"waveform": wave, "sample_rate": RATE}


@pytest.mark.parametrize("fps", [16.0, 24.0])
def test_round_trip_keeps_frames_fps_duration_and_click_time(tmp_path, fps):
    frames, audio = _clip_with_click(10, fps=fps)
    path = write_mp4(
        tmp_path / "clip.mp4", frames, fps, audio, {"prompt": "a red circle", "seed": "7"}
    )
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.metadata["prompt"] == "a red circle" and container.metadata["seed"] == "7"
        video, sound = container.streams.video[0], container.streams.audio[0]
        video_seconds = float(video.duration * video.time_base)
        audio_seconds = float(sound.duration * sound.time_base)
    assert (
        abs(video_seconds - 33 / fps) < 0.1 / fps and abs(audio_seconds - video_seconds) < 1 / fps
    )
    decoded, read_fps, read_sound = read_video(path)
    assert decoded.shape == (33, 64, 48, 3) and read_fps == fps
    assert (decoded - frames).abs().mean() < 0.03  # lossy, but the same pictures
    wave = read_sound["waveform"][0, 0]
    onset = (wave.abs() > 0.3).nonzero()[0].item() / read_sound["sample_rate"]
    assert abs(onset - 10 / fps) <= 0.005


@pytest.mark.parametrize("frames", [33, 85])
def test_audio_is_trimmed_or_padded_to_the_video_and_read_back_at_its_length(tmp_path, frames):
    """AAC fills its last 1024-sample frame: read back without the fill, a saved clip's sound is
    its own length (85 frames read 63.5 ms long, which Encode Audio refused as another clip's)."""
    pixels, audio = _clip_with_click(4, frames=frames)
    silence = torch.zeros_like(audio["waveform"])
    audio["waveform"] = torch.cat([audio["waveform"], silence, silence], dim=2)  # 3x too long
    path = write_mp4(tmp_path / "long.mp4", pixels, 16.0, audio)
    for read in (read_audio(path), read_video(path)[2]):
        assert abs(read["waveform"].shape[-1] / RATE - frames / 16) < 0.001
        # the sound's start is kept (its end is cut): the click still sounds at frame 4
        onset = (read["waveform"][0, 0].abs() > 0.3).nonzero()[0].item() / RATE
        assert abs(onset - 4 / 16) <= 0.005


def test_never_overwrites_and_never_leaves_partial_files(tmp_path):
    frames, audio = _clip_with_click(3)
    path = write_mp4(tmp_path / "a.mp4", frames, 16.0, audio)
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_mp4(path, frames, 16.0, audio)
    assert path.read_bytes() == before
    tagged = write_mp4(tmp_path / "tagged.mp4", frames, 16.0, None, {"seed": 7})  # a script's int
    with av.open(str(tagged)) as container:
        assert container.metadata["seed"] == "7"
    tagged.unlink()
    with pytest.raises(InputError, match="fps"):
        write_mp4(tmp_path / "b.mp4", frames, 0.0, audio)
    flat = {"waveform": audio["waveform"][0], "sample_rate": RATE}
    with pytest.raises(InputError, match=r"^audio: waveform of shape \(1, 33000\) is not"):
        write_mp4(tmp_path / "b.mp4", frames, 16.0, flat)
    for waveform, problem in [
        (torch.zeros(0, 1, 33000), r"waveform of shape \(0, 1, 33000\) is not one"),
        (torch.full((1, 1, 33000), float("nan")), "holds NaN or infinite samples"),
    ]:  # an index error, and FFmpeg's "avcodec_send_frame() returned 22"
        with pytest.raises(InputError, match=f"^audio: {problem}"):
            write_mp4(tmp_path / "b.mp4", frames, 16.0, {"waveform": waveform, "sample_rate": RATE})
    nan_pixel = frames.clone()
    nan_pixel[3, 5, 7, 1] = float("nan")  # written as a black or noisy frame, without a word
    with pytest.raises(InputError, match="^frames: hold NaN or infinite pixels"):
        write_mp4(tmp_path / "b.mp4", nan_pixel, 16.0, audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
    assert next_free_path(tmp_path, "a") == tmp_path / "a_00001.mp4"
    (tmp_path / "a_00001.mp4").write_bytes(b"")
    assert next_free_path(tmp_path, "a") == tmp_path / "a_00002.mp4"


def test_resampling_keeps_the_pitch():
    t = torch.arange(44100) / 44100
    tone = torch.sin(2 * torch.pi * 440 * t)[None].repeat(2, 1)
    mono = resample_audio(tone, 44100, RATE, channels=1)
    assert mono.shape == (1, RATE)
    peak = torch.fft.rfft(mono[0]).abs().argmax().item()
    assert peak == 440


def test_unreadable_files_name_the_input(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(InputError, match="video: cannot read"):
        read_video(bad)


def test_an_odd_sided_clip_is_saved_with_its_last_row_and_column_repeated(tmp_path):
    """H.264 4:2:0 needs even sides; a GIF's 47 x 63 px (kept as it is by Video to Audio) must
    still save, as 48 x 64 with the edge repeated, every frame and the sound kept."""
    frames, audio = _clip_with_click(9)
    odd = frames[:, :63, :47]
    path = write_mp4(tmp_path / "odd.mp4", odd, 16.0, audio)
    saved, fps, sound = read_video(path)
    assert saved.shape == (33, 64, 48, 3) and fps == 16.0 and sound["waveform"].shape[-1] > 0
    assert psnr(saved[:, :63, :47], odd) > 25.0  # the whole even clip saves at 25.9 dB
    assert (saved[:, 63] - saved[:, 62]).abs().mean() < 0.02  # repeated, up to 4:2:0 chroma
    assert (saved[:, :, 47] - saved[:, :, 46]).abs().mean() < 0.02


@pytest.mark.parametrize(("height", "width"), [(63, 48), (64, 47)])
def test_a_clip_with_one_odd_side_is_padded_on_that_side_only(tmp_path, height, width):
    """Only the odd side is padded: padding the other (height and width parity swapped) made a
    frame of the wrong size for the stream, and the save failed or scrambled the picture."""
    frames, audio = _clip_with_click(9)
    odd = frames[:, :height, :width]
    path = write_mp4(tmp_path / "odd.mp4", odd, 16.0, audio)
    saved, _, _ = read_video(path)
    assert saved.shape == (33, 64, 48, 3)
    assert psnr(saved[:, :height, :width], odd) > 25.0


@pytest.mark.parametrize("rate", [1000, 30000, 192000])
def test_a_sound_at_a_rate_aac_cannot_carry_is_resampled_to_one_it_can(tmp_path, rate):
    """AAC carries 7.35 to 96 kHz at fixed rates: another (a 192 kHz studio file) is resampled to
    the next one up (96 kHz at most) instead of failing the save after the render."""
    frames = torch.rand(9, 32, 32, 3)
    tone = torch.sin(2 * torch.pi * 200 * torch.arange(rate) / rate)[None, None]
    path = write_mp4(tmp_path / "a.mp4", frames, 16.0, {"waveform": tone, "sample_rate": rate})
    sound = read_audio(path)
    assert sound["sample_rate"] == {1000: 7350, 30000: 32000, 192000: 96000}[rate]
    spectrum = torch.fft.rfft(sound["waveform"][0, 0, :4096]).abs()
    assert abs(int(spectrum.argmax()) * sound["sample_rate"] / 4096 - 200) < 15  # pitch kept


def _tones(frequencies: list[int], rate: int, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(round(seconds * rate)) / rate
    return torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in frequencies])


def _peak_hz(wave: torch.Tensor, rate: int) -> float:
    return torch.fft.rfft(wave).abs().argmax().item() * rate / wave.shape[-1]


@pytest.mark.parametrize("channels", [6, 8])
def test_a_surround_sound_keeps_every_channel_through_save_and_load(tmp_path, channels):
    """5.1 and 7.1 (a film's track) were saved as a mono mix, and reading 7.1 crashed the process
    (PyAV's planar 8-channel frames); now each channel keeps its own tone both ways."""
    frequencies = [300 + 200 * c for c in range(channels)]
    sound = {"waveform": _tones(frequencies, 48000)[None], "sample_rate": 48000}
    path = write_mp4(tmp_path / "surround.mp4", torch.rand(16, 32, 32, 3), 16.0, sound)
    read = read_audio(path)
    assert read["waveform"].shape[:2] == (1, channels)
    with av.open(str(path)) as container:
        assert container.streams.audio[0].channels == channels
    peaks = [_peak_hz(wave, read["sample_rate"]) for wave in read["waveform"][0]]
    for channel, (peak, frequency) in enumerate(zip(peaks, frequencies)):
        if channel != 3:  # the low-frequency channel: AAC keeps only its lows
            assert abs(peak - frequency) < 5


def test_a_mono_mixdown_is_the_channels_mean_and_too_many_channels_are_named():
    stereo = _tones([440, 440], 16000)[None]  # a centred sound keeps its level
    assert torch.allclose(resample_audio(stereo, 16000, 16000, 1), stereo[:, :1])
    surround = _tones([300, 500, 700, 900, 1100, 1300], 44100)
    mono = resample_audio(surround, 44100, 16000, 1)
    assert torch.allclose(mono, resample_audio(surround.mean(0, keepdim=True), 44100, 16000))
    tone = _tones([440], 16000)
    for rate in (16000, 44100):  # a mono sound copied to both channels at its own level
        stereo = resample_audio(tone, 16000, rate, 2)
        assert torch.allclose(stereo[0], stereo[1])
        assert torch.allclose(stereo.square().mean().sqrt(), tone.square().mean().sqrt(), rtol=0.01)
    with pytest.raises(InputError, match="9 channels") as error:
        resample_audio(torch.zeros(9, 100), 16000, 8000, 2)
    assert error.value.input_name == "audio" and "1 to 8 channels" in str(error.value)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_a_surround_downmix_never_exceeds_the_sounds_own_peak(rate):
    """FFmpeg's float downmix of 5.1 adds the centre and a surround to each side at 0.707: a
    full-scale track came out at 2.4 (clipped once saved); it is normalised as FFmpeg normalises
    its integer formats, so a sound at 0.9 on every channel stays at 0.9."""
    loud = torch.full((1, 6, 4800), 0.9)
    stereo = resample_audio(loud, 48000, rate, 2)
    assert stereo.shape[:2] == (1, 2)
    torch.testing.assert_close(stereo[..., 500:-500], torch.full_like(stereo[..., 500:-500], 0.9))
    front = torch.zeros(6, 4800)
    front[0] = 0.5  # the front left alone lands on the left at the mix's one gain
    mixed = resample_audio(front, 48000, 48000, 2)
    assert mixed[1].abs().max() < 1e-6 and 0.15 < mixed[0].abs().max() < 0.25


def test_rgba_frames_are_saved_as_their_colour(tmp_path):
    """The host's Join Image with Alpha hands over RGBA: the MP4 holds the colour, alpha dropped."""
    rgb = torch.rand(5, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    rgba = torch.cat([rgb, torch.zeros(5, 16, 16, 1)], dim=-1)
    with_alpha = read_video(write_mp4(tmp_path / "rgba.mp4", rgba, 16.0))[0]
    without = read_video(write_mp4(tmp_path / "rgb.mp4", rgb, 16.0))[0]
    assert torch.equal(with_alpha, without)


@pytest.mark.parametrize("prefix", ["take[1]", "clip*", "what?", "[!x]"])
def test_next_free_path_counts_past_prefixes_with_glob_characters(tmp_path, prefix):
    """The prefix is a name, not a pattern: its own files are counted, lookalikes are not."""
    for name in (f"{prefix}_00001.mp4", f"{prefix}_00002.mp4", "take1_00003.mp4", "a_00004.mp4"):
        (tmp_path / name).write_bytes(b"")
    assert next_free_path(tmp_path, prefix) == tmp_path / f"{prefix}_00003.mp4"


def test_next_free_path_counts_past_the_highest_take_not_into_a_gap(tmp_path):
    for name in ("take_00002.mp4", "take_00005.mp4", "take_notes.mp4", "take_00009.png"):
        (tmp_path / name).write_bytes(b"")
    assert next_free_path(tmp_path, "take") == tmp_path / "take_00006.mp4"


def test_a_filesystem_without_hard_links_still_gets_the_file_and_no_overwrite(
    tmp_path, monkeypatch
):
    """exFAT drives and Google Drive / rclone mounts refuse os.link: the finished render was
    deleted with the partial file."""
    import errno
    import os

    def no_links(source, target):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(target))

    monkeypatch.setattr(os, "link", no_links)
    frames, audio = _clip_with_click(3)
    path = write_mp4(tmp_path / "a.mp4", frames, 16.0, audio)
    before = path.read_bytes()
    assert read_video(path)[0].shape == frames.shape
    with pytest.raises(InputError, match="already exists"):
        write_mp4(path, torch.rand(5, 16, 16, 3), 16.0)
    assert path.read_bytes() == before

    def replace_fails(source, target):  # the claim made, the move of the finished file failed
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(OSError, match="Input/output error"):
        write_mp4(tmp_path / "b.mp4", frames, 16.0, audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # no empty b.mp4 claim left


def test_saved_files_get_the_umasks_permissions(tmp_path):
    """Renders and latents are readable as the umask says (a shared disk's render farm reads
    them), not 0600 as a temporary file would leave them."""
    import os
    import stat

    from skyreels_core.av_latent_file import save_av_latent
    from skyreels_core.loading import write_safetensors
    from skyreels_core.types import AVLatent

    previous = os.umask(0o022)
    try:
        paths = [
            write_mp4(tmp_path / "clip.mp4", torch.rand(5, 16, 16, 3), 16.0),
            write_safetensors({"x": torch.zeros(2)}, tmp_path / "lora.safetensors"),
            save_av_latent(AVLatent(torch.zeros(1, 4, 2, 2, 2)), tmp_path / "take.safetensors"),
        ]
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(path.stat().st_mode) for path in paths] == [0o644] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.mp4",
        "lora.safetensors",
        "take.safetensors",
    ]


class _CountingContainer:
    """An opened container that counts the frames and samples its streams decode."""

    def __init__(self, container, counts: dict[str, int]) -> None:
        self.container, self.counts = container, counts

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.container.__exit__(*exc)

    def __getattr__(self, name: str):
        return getattr(self.container, name)

    def decode(self, *streams):
        for frame in self.container.decode(*streams):
            kind = "samples" if isinstance(frame, av.AudioFrame) else "frames"
            self.counts[kind] += frame.samples if kind == "samples" else 1
            yield frame


@pytest.mark.parametrize("fps, frames", [(16.0, 33), (30.0, 62)])
def test_a_time_limit_decodes_only_that_stretch_of_a_long_clip(tmp_path, monkeypatch, fps, frames):
    """max_seconds reads the frames (whole ones, up to the limit's) and the sound over them,
    the same as a full read's start, and decodes little more: a minute of 1080p took tens of
    gigabytes to train a LoRA on its first two seconds."""
    pixels, audio = _clip_with_click(10, frames=round(10 * fps), fps=fps)
    path = write_mp4(tmp_path / "long.mp4", pixels, fps, audio)
    whole, _, whole_sound = read_video(path)
    counts = {"frames": 0, "samples": 0}
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: _CountingContainer(real_open(*a, **k), counts))
    part, read_fps, sound = read_video(path, max_seconds=33 / 16)
    samples = round(frames / fps * RATE)
    assert read_fps == fps and torch.equal(part, whole[:frames])
    assert torch.equal(sound["waveform"], whole_sound["waveform"][..., :samples])
    assert counts["frames"] == frames and samples <= counts["samples"] <= samples + 2048


@pytest.mark.parametrize("offset", [0.5, -0.25])
def test_a_sound_starting_after_or_before_the_picture_is_read_on_the_clips_clock(tmp_path, offset):
    """An edited file's sound often starts later (or its picture later): read from t = 0 the
    sound was off by the whole gap (0.48 s)."""
    from fractions import Fraction

    import numpy as np

    path, rate = tmp_path / "offset.mp4", 48000
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=16)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=rate, layout="mono")
        for index in range(32):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), "u1"), format="rgb24")
            frame.pts, frame.time_base = index + max(0, round(-offset * 16)), Fraction(1, 16)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        wave = np.zeros((1, 2 * rate), "f4")
        wave[0, rate : rate + 64] = 0.8  # a click 1 s into the sound: 1 + offset s into the film
        frame = av.AudioFrame.from_ndarray(wave, format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, max(0, round(offset * rate))
        frame.time_base = Fraction(1, rate)
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    _, _, audio = read_video(path)
    onset = (audio["waveform"][0, 0].abs() > 0.3).nonzero()[0].item() / rate
    assert abs(onset - (1 + offset)) <= 0.005


@pytest.mark.parametrize("size", [64, 112])
def test_the_same_small_frames_save_as_the_same_bytes(tmp_path, size):
    """Under 128 px the x264 PyAV bundles wrote 5-6 different files of 6 saves of one moving
    square (pixels apart by up to 44/255): a queued render saved twice did not compare equal."""
    frames = torch.rand(33, size, size, 3, generator=torch.Generator().manual_seed(0)) * 0.2
    for t in range(33):
        frames[t, 20:40, t : t + 20] = torch.tensor([0.9, 0.1, 0.1])
    saved = {write_mp4(tmp_path / f"{i}.mp4", frames, 16.0).read_bytes() for i in range(4)}
    assert len(saved) == 1


def test_a_report_written_over_a_full_disk_keeps_the_one_before(tmp_path, monkeypatch):
    """A report written in place was cut off mid-JSON under its name, the previous one lost,
    and the OSError ended the command in a traceback."""
    import errno
    import json
    import re
    from pathlib import Path

    from skyreels_core.paths import write_json

    report = tmp_path / "report.json"
    write_json(report, {"renders": [1, 2]}, "--report")
    original = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        original(self, text[:10], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    message = f"--report: cannot write {report} (No space left on device). Fix: free space"
    with pytest.raises(InputError, match=f"^{re.escape(message)}"):
        write_json(report, {"renders": [3]}, "--report")
    assert json.loads(report.read_text()) == {"renders": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_file_another_program_holds_open_keeps_the_new_one_beside_it(tmp_path, monkeypatch):
    """Windows refuses to replace a file another program holds open (demo --overwrite while
    the old clip plays, a train-demo bundle ComfyUI loaded): the finished file was deleted with
    its partial file and the command ended in a PermissionError traceback."""
    import errno
    import os

    from skyreels_core.paths import FileInUse

    frames, audio = _clip_with_click(3)
    path = write_mp4(tmp_path / "demo.mp4", frames, 16.0, audio)
    before = path.read_bytes()
    (tmp_path / "demo (new 1).mp4").write_bytes(b"an earlier kept file")
    replace = os.replace

    def held_open(source, target):  # as Windows answers for a file a player has open
        if str(target) == str(path):
            raise PermissionError(errno.EACCES, "Access is denied", str(target))
        return replace(source, target)

    monkeypatch.setattr(os, "replace", held_open)
    with pytest.raises(FileInUse) as error:
        write_mp4(path, torch.rand(5, 16, 16, 3), 16.0, overwrite=True)
    assert str(error.value).startswith(f"output: {path} is open in another program")
    assert "move demo (new 2).mp4 into its place" in str(error.value)
    assert path.read_bytes() == before
    assert read_video(tmp_path / "demo (new 2).mp4")[0].shape == (5, 16, 16, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo (new 1).mp4", "demo (new 2).mp4", "demo.mp4"
    ]  # fmt: skip


def test_pixels_are_rounded_to_the_nearest_level_and_an_ntsc_rate_is_kept(tmp_path):
    """100.6 / 255 is saved as level 101, not cut to 100 (a whole clip a level darker); 29.97 fps
    (30000 / 1001) is written as it is, not as 30 fps (a minute of it 1.8 s short)."""
    flat = torch.full((3, 32, 32, 3), 100.6 / 255)
    frames, fps, _ = read_video(write_mp4(tmp_path / "grey.mp4", flat, 30000 / 1001))
    assert torch.equal(frames * 255, torch.full_like(frames, 101.0))
    assert fps == pytest.approx(30000 / 1001, abs=1e-6)


def test_a_sound_of_more_channels_than_aac_carries_is_saved_as_their_mean(tmp_path):
    """10 channels (no AAC layout): saved mono as their mean, so a click on all but the first
    channel is heard at 0.9 x 9 / 10."""
    wave = torch.zeros(1, 10, RATE)
    wave[0, 1:, 4000:4080] = 0.9
    path = write_mp4(
        tmp_path / "ten.mp4",
        torch.zeros(16, 16, 16, 3),
        16.0,
        {"waveform": wave, "sample_rate": RATE},
    )
    sound = read_audio(path)["waveform"]
    assert sound.shape == (1, 1, RATE)
    assert sound.abs().max().item() == pytest.approx(0.81, abs=0.03)
    onset = (sound[0, 0].abs() > 0.3).nonzero()[0].item()
    assert abs(onset - 4000) <= 80


def test_a_video_without_frames_and_frames_of_the_wrong_rank_are_named(tmp_path):
    empty = tmp_path / "empty.avi"
    with av.open(str(empty), "w") as container:  # a video stream that never got a frame
        stream = container.add_stream("mpeg4", rate=16)
        stream.width = stream.height = 16
        container.start_encoding()
    with pytest.raises(InputError, match="^video: empty.avi has no frames"):
        read_video(empty)
    with pytest.raises(InputError, match=r"^frames: shape \(8, 8, 3\) is not \[frames"):
        write_mp4(tmp_path / "flat.mp4", torch.rand(8, 8, 3), 16.0)
    assert not (tmp_path / "flat.mp4").exists()
