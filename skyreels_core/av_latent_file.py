"""A render's AV latent in one safetensors file: its video, audio and high-res keyframe latents
with the numbers that travel with them (keyframe indices, fps, the clip's own length).

Sampling is the slow part and decoding or refining a rejected take is wasted work, so a batch of
seeds can be rendered to latents, looked at (the Sampler's previews, a quick decode), and only
the chosen ones refined and decoded later, in another queue run or on another machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from .errors import CheckpointError, InputError
from .file_kinds import AV_LATENT_SUFFIX as SUFFIX
from .loading import read_header, write_safetensors
from .shapes import a_frame_rate
from .types import AVLatent

FORMAT = "skyreels_v4_av_latent"
FORMAT_KEY = "format"


def save_av_latent(
    latent: AVLatent,
    path: Path,
    metadata: dict[str, str] | None = None,
    input_name: str = "av_latent",
) -> Path:
    """Write ``latent`` to ``path``, which must not exist: files are never overwritten, and a
    failed write leaves nothing under the real name. A latent :func:`load_av_latent` would
    refuse is refused here, naming ``input_name``, before a byte is written, so no take is
    saved that cannot be loaded back. ``metadata`` adds text entries such as the workflow."""
    tensors = {"video": latent.video}
    if latent.audio is not None:
        tensors["audio"] = latent.audio
    if latent.keyframes is not None:
        tensors["keyframes"] = latent.keyframes
    indices = [int(i) for i in latent.keyframe_indices]
    _check_shapes(
        "the latent",
        {key: tuple(value.shape) for key, value in tensors.items()},
        indices,
        input_name,
        "pass a latent whose video, audio and keyframe latents belong together (one batch, "
        "keyframes inside the clip), as a Sampler or Refine outputs it",
    )
    tensors = {key: value.detach().float().cpu().contiguous() for key, value in tensors.items()}
    numbers = {
        "keyframe_indices": indices,
        "fps": float(latent.fps),
        "clip_frames": latent.clip_frames,
        "source_fps": latent.source_fps,
    }
    described = {**(metadata or {}), FORMAT_KEY: FORMAT, "av_latent": json.dumps(numbers)}
    return write_safetensors(tensors, Path(path), described, overwrite=False)


def load_av_latent(path: Path, input_name: str = "av_latent") -> AVLatent:
    """The AV latent in ``path``, checked before any tensor is read: a file of another kind or
    with inconsistent shapes is an :class:`InputError` naming ``input_name``."""
    path = Path(path)
    try:
        shapes, metadata = read_header(path, input_name)
    except CheckpointError:
        if path.suffix == ".safetensors":
            raise
        raise InputError(  # a take's preview clip: not "convert it to safetensors"
            input_name,
            f"{path.name} is not an AV latent",
            f"pick a {SUFFIX} take written by SkyReels-V4 Save AV Latent",
        ) from None
    if metadata.get(FORMAT_KEY) != FORMAT or "av_latent" not in metadata:
        raise InputError(
            input_name,
            f"{path.name} is not an AV latent",
            "pick a file written by SkyReels-V4 Save AV Latent",
        )
    try:
        numbers = json.loads(metadata["av_latent"])
        indices = [int(i) for i in numbers.get("keyframe_indices", [])]
    except (ValueError, TypeError, AttributeError):
        raise InputError(
            input_name, f"{path.name} has a damaged description", "save the latent again"
        ) from None
    _check_shapes(path.name, shapes, indices, input_name, "save the latent again")
    fps, source_fps = float(numbers.get("fps", 16.0)), numbers.get("source_fps")
    for rate in (fps, source_fps):  # a take saved before the rates were checked: 0 fps
        if rate is not None and not a_frame_rate(rate):
            raise InputError(
                input_name,
                f"{path.name} holds a frame rate of {rate:g} fps",
                "render and save the take again, at its clip's frame rate",
            )
    # copies of their own: safetensors' tensors read the mapped file, which a take saved again
    # in place under the host that holds this one would change or crash (SIGBUS)
    tensors = {key: value.clone() for key, value in load_file(str(path), device="cpu").items()}
    return AVLatent(
        video=tensors["video"],
        audio=tensors.get("audio"),
        keyframes=tensors.get("keyframes"),
        keyframe_indices=indices,
        fps=fps,
        clip_frames=numbers.get("clip_frames"),
        source_fps=source_fps,
    )


def _check_shapes(
    name: str, shapes: dict[str, tuple[int, ...]], indices: list[int], input_name: str, fix: str
) -> None:
    """One check for both ways: what Save AV Latent writes is exactly what Load AV Latent takes."""
    video = shapes.get("video")
    problems = []
    if video is None or len(video) != 5:
        problems.append(f"video latents of shape {video}, not [batch, channels, frames, h, w]")
    else:
        audio, keyframes = shapes.get("audio"), shapes.get("keyframes")
        if audio is not None and (len(audio) != 3 or audio[0] != video[0]):
            problems.append(f"audio latents of shape {audio} beside video {video}")
        if (keyframes is None) != (not indices) or (
            keyframes is not None
            and (len(keyframes) != 5 or keyframes[:3] != (video[0], video[1], len(indices)))
        ):
            problems.append(f"keyframes of shape {keyframes} for latent frames {indices}")
        if any(not 0 <= i < video[2] for i in indices):
            problems.append(f"keyframe latent frames {indices} outside the clip's {video[2]}")
    if problems:
        raise InputError(input_name, f"{name} holds {'; '.join(problems)}", fix)
