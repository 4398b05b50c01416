"""Audio-video files through PyAV: reading clips and sounds, resampling, writing MP4 with sound.

Writes go to a temporary file beside the target and are linked into place only when complete, so a
failed or interrupted write never leaves a broken file and never replaces an existing one.
"""

from __future__ import annotations

import functools
import glob
import math
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .paths import NameTaken, published
from .shapes import frame_rate, rgb_pixels, sound_samples

# FFmpeg's default layout for each channel count AAC carries (a 5.1 film track is 6 channels).
LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# The most samples a decoder returns past a sound's end: two AAC frames of 1024 (Opus fills less).
CODEC_FILL = 2048
# The sample rates AAC (ISO 14496-3) can carry; a sound at another rate is resampled to the next.
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000,
             32000, 44100, 48000, 64000, 88200, 96000)  # fmt: skip


@contextmanager
def _open(path: Path, input_name: str) -> Iterator:
    """The open container; a file FFmpeg cannot open *or decode* becomes an InputError, since
    corrupt streams often only fail once packets are decoded."""
    import av

    try:
        with av.open(str(path)) as container:
            yield container
    except (av.error.FFmpegError, OSError) as error:
        raise InputError(
            input_name,
            f"cannot read {Path(path).name} ({error})",
            "pass a readable video or audio file",
        ) from None


def resample_audio(
    waveform: torch.Tensor, source_rate: int, target_rate: int, channels: int | None = None
) -> torch.Tensor:
    """[B, C, S] (or [C, S]) float waveform at ``target_rate`` (and ``channels``), via FFmpeg's
    resampler. To mono it takes the channels' mean, as MMAudio prepares its sounds: FFmpeg's own
    mixdown adds stereo's channels at 0.71 each, 3 dB louder than a centred sound was. Mono is
    copied to every channel, as the host does (a generated sound joined to a stereo clip kept its
    level)."""
    import av

    squeeze = waveform.dim() == 2
    batch = waveform[None] if squeeze else waveform
    channels = channels or batch.shape[1]
    if channels == 1:
        batch = batch.mean(1, keepdim=True)
    elif batch.shape[1] == 1:  # mono to every channel at full level (FFmpeg's upmix is -3 dB)
        batch = batch.expand(-1, channels, -1)
    elif channels < batch.shape[1]:
        batch = batch * _downmix_gain(batch.shape[1], channels)
    if source_rate == target_rate and channels == batch.shape[1]:
        return (batch[0] if squeeze else batch).float()
    for count in (batch.shape[1], channels):
        check_channels(count)
    if batch.shape[-1] == 0:  # FFmpeg's resampler has nothing to take: no samples either way
        empty = batch.new_zeros(batch.shape[0], channels, 0).float()
        return empty[0] if squeeze else empty
    out = []
    for item in batch:
        resampler = av.AudioResampler(format="flt", layout=LAYOUTS[channels], rate=target_rate)
        frame = _audio_frame(item, source_rate)
        chunks = [_samples(f) for f in resampler.resample(frame)] + [
            _samples(f) for f in resampler.resample(None)
        ]
        # A few samples may give FFmpeg nothing to return: the length is fitted below.
        resampled = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), "f4")
        out.append(torch.from_numpy(resampled))
    expected = round(batch.shape[-1] * target_rate / source_rate)
    stacked = torch.stack([fit_length(x, expected) for x in out])
    return stacked[0] if squeeze else stacked


@functools.cache
def _downmix_gain(source: int, target: int) -> float:
    """FFmpeg's float downmix adds channels at up to 1 + 2 x 0.707 (5.1 to stereo: a full-scale
    track came out at 2.4, clipped when saved); scaled as FFmpeg normalises its integer formats,
    so that no output channel's coefficients sum to over 1. The sums are read off FFmpeg's own
    matrix by mixing a unit signal on every channel."""
    import av

    check_channels(source)
    check_channels(target)
    resampler = av.AudioResampler(format="flt", layout=LAYOUTS[target], rate=48000)
    frame = _audio_frame(torch.ones(source, 64), 48000)
    mixed = np.concatenate([_samples(f) for f in resampler.resample(frame)], axis=1)
    return 1.0 / max(1.0, float(np.abs(mixed).max()))


def check_channels(count: int, input_name: str = "audio") -> None:
    """A channel count FFmpeg has a layout for."""
    if count not in LAYOUTS:
        raise InputError(
            input_name, f"{count} channels", f"use a sound of 1 to {max(LAYOUTS)} channels"
        )


def _audio_frame(waveform: torch.Tensor, sample_rate: int):
    """[C, S] as one interleaved float frame. Interleaved, not planar: PyAV 18 reads the planes
    of an 8-channel planar frame out of bounds (a crash, not an error)."""
    import av

    interleaved = np.ascontiguousarray(waveform.float().cpu().numpy().T).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(interleaved, format="flt", layout=LAYOUTS[len(waveform)])
    frame.sample_rate = sample_rate
    return frame


def _samples(frame) -> np.ndarray:
    """An interleaved float frame as [C, S]."""
    return frame.to_ndarray().reshape(-1, len(frame.layout.channels)).T


def fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to ``length`` samples."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]))


def read_audio(path: str | Path) -> dict:
    """The host's AUDIO dict: {"waveform": [1, C, S], "sample_rate"}."""
    with _open(Path(path), "audio") as container:
        if not container.streams.audio:
            raise InputError(
                "audio", f"{Path(path).name} has no audio stream", "pass a file with sound"
            )
        return _decode_audio(container)


def trim_audio(audio: dict, start_seconds: float, duration_seconds: float = 0.0) -> dict:
    """The part of an AUDIO dict from ``start_seconds``, ``duration_seconds`` long (0, or past
    the end: to the end)."""
    rate, waveform = audio["sample_rate"], audio["waveform"]
    length = waveform.shape[-1]
    begin = round(start_seconds * rate)
    if begin and begin >= length:
        raise InputError(
            "start_seconds",
            f"{start_seconds:g} s is past the sound's end ({length / rate:.2f} s)",
            "start within the sound",
        )
    end = length if duration_seconds <= 0 else min(length, begin + round(duration_seconds * rate))
    return {"waveform": waveform[..., begin:end], "sample_rate": rate}


def _decode_audio(
    container, max_seconds: float | None = None, clip_start: float | None = None
) -> dict:
    """Every audio frame converted to float in the default layout of its channel count (whatever
    the file stores), concatenated; with ``max_seconds``, only that long from the start, decoding
    stopped once it is covered. With ``clip_start`` (the time of a clip's first frame) the sound
    is placed on the clip's clock: an edited file's sound often starts later than its picture
    (padded with silence), or earlier (trimmed)."""
    import av

    stream = container.streams.audio[0]
    if not stream.channels or not stream.rate:
        raise InputError(
            "audio", "the audio stream has no channels or no rate", "pass a file with sound"
        )
    check_channels(stream.channels)
    converter = av.AudioResampler(format="flt", layout=LAYOUTS[stream.channels], rate=stream.rate)
    wanted = None if max_seconds is None else round(max_seconds * stream.rate)
    chunks, decoded, shift = [], 0, 0
    for frame in container.decode(stream):
        if not chunks and clip_start is not None and frame.time is not None:
            shift = round((frame.time - clip_start) * stream.rate)  # > 0: the sound starts later
        for converted in converter.resample(frame):
            chunks.append(_samples(converted))
            decoded += chunks[-1].shape[1]
        if wanted is not None and decoded + shift >= wanted:
            break
    if not chunks:
        raise InputError("audio", "the audio stream is empty", "pass a file with sound")
    waveform = np.concatenate(chunks, axis=1)[:, : _declared_length(stream, decoded)]
    waveform = np.pad(waveform, ((0, 0), (shift, 0))) if shift > 0 else waveform[:, -shift:]
    waveform = waveform[:, :wanted]
    return {"waveform": torch.from_numpy(waveform.copy())[None].float(), "sample_rate": stream.rate}


def _declared_length(stream, decoded: int) -> int | None:
    """The sound's length as its container declares it, where decoding gave a little more: AAC
    fills its last frame of 1024 samples and decoders return the fill, so a saved clip read back
    was up to 64 ms longer than its sound (Encode Audio took it for another clip's). A length far
    from the decoded one (a header that lies) is not trusted."""
    if not stream.duration or stream.time_base is None:
        return None
    declared = round(stream.duration * stream.time_base * stream.rate)
    return declared if 0 < decoded - declared <= CODEC_FILL else None


def read_video(
    path: str | Path, *, max_frames: int | None = None, max_seconds: float | None = None
) -> tuple[torch.Tensor, float, dict | None]:
    """Frames [T, H, W, 3] in 0..1, the frame rate, and the sound (AUDIO dict) if the file has one.

    ``max_frames`` and ``max_seconds`` (the whole frames that cover it) stop decoding early, the
    sound too at the frames' end: a caller that uses a clip's start never holds all of a long
    clip as float pixels (a minute of 1080p is tens of gigabytes)."""
    path = Path(path)
    with _open(path, "video") as container:
        if not container.streams.video:
            raise InputError("video", f"{path.name} has no video stream", "pass a video file")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 16)
        limits = [max_frames] if max_frames is not None else []
        if max_seconds is not None:  # rounded first: 33 frames at 16 fps are 33, not 34
            limits.append(math.ceil(round(max_seconds * fps, 6)))
        limit = min(limits, default=None)
        frames, start = [], None
        for frame in container.decode(stream):
            start = frame.time if start is None else start
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if limit is not None and len(frames) >= limit:
                break
    if not frames:
        raise InputError(
            "video", f"{path.name} has no frames", "pass a video with at least one frame"
        )
    audio = None
    with _open(path, "video") as container:
        if container.streams.audio:
            seconds = None if limit is None else len(frames) / fps
            audio = _decode_audio(container, seconds, start or 0.0)
    return torch.stack(frames).float().div_(255), fps, audio  # in place: one float copy


def next_free_path(folder: str | Path, prefix: str, suffix: str = ".mp4") -> Path:
    """``<prefix>_00001<suffix>``, counting past the highest number already there (as the host's
    save nodes count: a deleted take's number is not handed out again, so the newest take always
    sorts last). The names are escaped: a prefix such as ``take[1]`` is a glob character class,
    which would hide the files it made and hand out a taken number again."""
    folder = Path(folder)
    pattern = f"{glob.escape(f'{prefix}_')}*{glob.escape(suffix)}"
    taken = [p.name for p in folder.glob(pattern)] if folder.is_dir() else []
    counters = (name[len(prefix) + 1 : len(name) - len(suffix)] for name in taken)
    number = 1 + max((int(counter) for counter in counters if counter.isdigit()), default=0)
    return folder / f"{prefix}_{number:05d}{suffix}"


def numbered_paths(folder: Path, prefix: str, suffix: str) -> Iterator[Path]:
    """:func:`next_free_path`, counted again each time the last one was taken meanwhile."""
    while True:
        yield next_free_path(folder, prefix, suffix)


def _checked_frames(frames: torch.Tensor, fps: float) -> torch.Tensor:
    """The frames as RGB (:func:`rgb_pixels`), or an error naming what is wrong."""
    if frames.dim() != 4 or frames.shape[0] < 1:
        raise InputError(
            "frames",
            f"shape {tuple(frames.shape)} is not [frames, height, width, 3]",
            "pass IMAGE frames",
        )
    frame_rate(fps)
    # Written as black or noise without a word; min and max carry a NaN or inf, with no mask
    # the size of the clip (a quarter of its GBs) to find it.
    if frames.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(frames))).all()):
        raise InputError(
            "frames",
            "hold NaN or infinite pixels",
            "check the node that made them (a render that diverged: fewer steps in fp16)",
        )
    return rgb_pixels(frames, "frames")


def _even_sides(frames: torch.Tensor) -> torch.Tensor:
    """H.264 4:2:0 needs even sides: an odd one (a GIF's, a cropped clip's, which Video to Audio
    takes as it is) gets its last row or column repeated rather than failing the save."""
    bottom, right = frames.shape[1] % 2, frames.shape[2] % 2
    if not (bottom or right):
        return frames
    padded = F.pad(frames.permute(0, 3, 1, 2), (0, right, 0, bottom), mode="replicate")
    return padded.permute(0, 2, 3, 1)


SMALL_FRAME = 128
"""Below this side, x264's macroblock tree (as PyAV bundles it) encodes the same frames into
different files run to run, pixels apart by up to 44/255: it is turned off there, so the same
render saves the same bytes (the demo's 64 px clips). From 128 px it is repeatable and kept."""


def _write(
    path: Path, frames: torch.Tensor, fps: float, audio: dict | None, metadata: dict[str, object]
) -> None:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    height, width = frames.shape[1] + frames.shape[1] % 2, frames.shape[2] + frames.shape[2] % 2
    with av.open(
        str(path), mode="w", format="mp4", options={"movflags": "use_metadata_tags"}
    ) as container:
        for key, value in metadata.items():  # a script's seed may be an int: kept as text
            container.metadata[key] = str(value)
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "18"}
        if min(height, width) < SMALL_FRAME:
            video.options["x264-params"] = "no-mbtree=1"
        sound = None
        if audio is not None:
            waveform = audio["waveform"][0].float().cpu()
            if waveform.shape[0] not in LAYOUTS:
                waveform = waveform.mean(0, keepdim=True)
            sample_rate = int(audio["sample_rate"])
            if sample_rate not in AAC_RATES:
                target = next((r for r in AAC_RATES if r > sample_rate), AAC_RATES[-1])
                waveform = resample_audio(waveform, sample_rate, target)
                sample_rate = target
            waveform = fit_length(waveform, sound_samples(len(frames), fps, sample_rate))
            sound = container.add_stream("aac", rate=sample_rate, layout=LAYOUTS[len(waveform)])
        for index, image in enumerate(frames):  # by frame: whole-clip temporaries were 2x its size
            image = (_even_sides(image[None]).clamp(0, 1) * 255).round().to(torch.uint8)
            frame = av.VideoFrame.from_ndarray(image[0].cpu().numpy(), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            frame = _audio_frame(waveform, sample_rate)
            frame.pts = 0
            container.mux(sound.encode(frame))
            container.mux(sound.encode(None))


def _check_sound_to_save(waveform: torch.Tensor) -> None:
    """One finite [1, C, S] sound: [C, S] was written as one sample, a batch of none failed as an
    index error, and a NaN sample as FFmpeg's "avcodec_send_frame() returned 22"."""
    if waveform.dim() != 3 or waveform.shape[0] != 1:
        raise InputError(
            "audio",
            f"waveform of shape {tuple(waveform.shape)} is not one [1, channels, samples] sound",
            "pass the host's AUDIO of one clip (as Load Audio or Decode Audio give it)",
        )
    if not bool(torch.isfinite(waveform).all()):
        raise InputError(
            "audio",
            "holds NaN or infinite samples",
            "check the node that made the sound (a render that diverged: fewer steps in fp16)",
        )


def write_mp4(
    path: str | Path,
    frames: torch.Tensor,
    fps: float,
    audio: dict | None = None,
    metadata: dict[str, object] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """H.264 yuv420p + AAC with exactly ``len(frames)`` frames at ``fps`` (an odd side gets its last
    row or column repeated); audio from t = 0, trimmed or padded to the video's length; string
    metadata (prompt, seed, model, workflow) in the file."""
    path = Path(path)
    frames = _checked_frames(frames, fps)
    if audio is not None:
        _check_sound_to_save(audio["waveform"])
    if path.exists() and not overwrite:
        raise NameTaken(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with published(path, overwrite) as partial:
        _write(partial, frames, fps, audio, metadata or {})
    return path
