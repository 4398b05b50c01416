"""DESIGN §6 measured on decoded frames and waveforms (never on latents).

Objects are found as the pixels that differ from the world's plain background; colour is the
nearest palette colour of their mean, shape from blur-invariant cumulants of their silhouette (see
``shape_features``), contacts the frames where the trajectory turns at the floor or a wall,
clicks the onsets of high-frequency energy, pitch the strongest tone below 1 kHz.
"""

from __future__ import annotations

import math
import statistics

import torch

from .world import BACKGROUND, COLOURS, PITCH_FOR_COLOUR

SILHOUETTE_LEVEL = 0.4  # of each frame's peak contrast: drops the decoder's faint halo and noise
TRIANGLE_SKEW = -0.15  # a sharp apex-up triangle gives -1, any point-symmetric shape 0
SQUARE_KURTOSIS_RATIO = 0.8  # a sharp square gives 0.5, a circle 1 (decoded: 0.67-0.79 / 0.83-0.92)
OBJECT_THRESHOLD = 0.25
MATCH_WINDOW_MS = 250.0
MIN_TURN_PX = 0.5  # smaller wobbles are anti-aliasing of a moving edge, not a bounce


def object_masks(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W] bool: pixels that are not background."""
    return (frames[..., :3] - torch.tensor(BACKGROUND)).abs().sum(-1) > OBJECT_THRESHOLD


def dominant_colour(frames: torch.Tensor) -> str | None:
    mask = object_masks(frames)
    if mask.sum() < 4:
        return None
    mean = frames[..., :3][mask].mean(0)
    return min(COLOURS, key=lambda name: (torch.tensor(COLOURS[name]) - mean).norm().item())


def _cumulants(weight: torch.Tensor, coordinate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Third and fourth cumulants of ``coordinate`` under the normalised ``weight``."""
    weight = weight / weight.sum()
    centred = coordinate - (weight * coordinate).sum()
    variance = (weight * centred**2).sum()
    return (weight * centred**3).sum(), (weight * centred**4).sum() - 3 * variance**2


def shape_features(frame_contrast: torch.Tensor) -> tuple[float, float] | None:
    """(vertical skew, diagonal/axis kurtosis ratio) of one frame's object, or None if absent.

    Why cumulants: a decoder blurs edges, and blurring is a convolution, under which cumulants
    add. A symmetric blur adds nothing to the third cumulant and a Gaussian one nothing to the
    fourth, so these survive where fill ratios and outlines do not. Apex-up triangles skew
    vertically (normalised third cumulant -1); a square's fourth cumulant along its diagonals is
    half that along its axes (uniform vs. triangular projections), a circle's is the same in every
    direction.
    """
    peak = frame_contrast.max()
    if peak < OBJECT_THRESHOLD:
        return None
    weight = torch.where(frame_contrast > SILHOUETTE_LEVEL * peak, frame_contrast, 0.0)
    ys, xs = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float32) for n in frame_contrast.shape), indexing="ij"
    )
    skew_y, kurt_y = _cumulants(weight, ys)
    kurt_axis = (kurt_y + _cumulants(weight, xs)[1]) / 2
    kurt_diagonal = (
        sum(_cumulants(weight, (xs + sign * ys) / math.sqrt(2))[1] for sign in (1, -1)) / 2
    )
    if kurt_axis >= 0:  # no flat-topped silhouette: noise, not an object
        return None
    return (skew_y / (-kurt_axis) ** 0.75).item(), (kurt_diagonal / kurt_axis).item()


def dominant_shape(frames: torch.Tensor) -> str | None:
    contrast = (frames[..., :3] - torch.tensor(BACKGROUND)).abs().sum(-1)
    features = [f for f in map(shape_features, contrast) if f is not None]
    if not features:
        return None
    skew, ratio = torch.tensor(features).median(0).values.tolist()
    if skew < TRIANGLE_SKEW:
        return "triangle"
    return "square" if ratio < SQUARE_KURTOSIS_RATIO else "circle"


def centroids(frames: torch.Tensor) -> torch.Tensor:
    """[T, 2] (x, y) per frame, weighted by distance from the background: the world's
    anti-aliased edges make this sub-pixel accurate (NaN where no object is visible)."""
    weight = (frames[..., :3] - torch.tensor(BACKGROUND)).abs().sum(-1)
    weight = torch.where(weight > 0.05, weight, torch.zeros_like(weight))
    total = weight.sum(dim=(1, 2))
    ys = torch.arange(frames.shape[1], dtype=torch.float32) + 0.5
    xs = torch.arange(frames.shape[2], dtype=torch.float32) + 0.5
    x = (weight.sum(1) * xs).sum(1) / total
    y = (weight.sum(2) * ys).sum(1) / total
    out = torch.stack([x, y], dim=1)
    out[total < 1.0] = float("nan")
    return out


def contact_frames(frames: torch.Tensor, edge_fraction: float = 0.35) -> list[int]:
    """Frames where the object turns back at the floor or a side wall: the extreme frame of each
    turn (motion two frames before and after points opposite ways) in the outer part of the frame."""
    positions = centroids(frames)
    size = frames.shape[1]
    contacts = []
    for axis, sides in ((1, (1,)), (0, (1, -1))):  # floor only for y; both walls for x
        track = positions[:, axis]
        for side in sides:
            toward = side * (track - size / 2)  # distance toward this edge
            turning = [
                f for f in range(2, len(track) - 2)
                if toward[f] - toward[f - 2] > MIN_TURN_PX and toward[f] - toward[f + 2] > MIN_TURN_PX
                and toward[f] > size * (0.5 - edge_fraction)
            ]  # fmt: skip
            groups: list[list[int]] = []
            for frame in turning:
                if groups and frame - groups[-1][-1] <= 2:
                    groups[-1].append(frame)
                else:
                    groups.append([frame])
            contacts += [max(group, key=lambda f: toward[f].item()) for group in groups]
    return sorted(set(contacts))


def click_onsets(waveform: torch.Tensor, sample_rate: int, min_gap: float = 0.1) -> list[float]:
    """Seconds at which short high-frequency bursts start (the hum is low and steady)."""
    signal = waveform.float().mean(0) if waveform.dim() == 2 else waveform.float()
    high = signal[1:] - signal[:-1]  # first difference: emphasises the 3 kHz click over the hum
    window = max(1, int(0.002 * sample_rate))
    energy = high[: len(high) // window * window].reshape(-1, window).pow(2).mean(1)
    threshold = max(energy.median().item() * 8, energy.max().item() * 0.2, 1e-6)
    onsets, last = [], -math.inf
    for index in (energy > threshold).nonzero().flatten().tolist():
        time = index * window / sample_rate
        if time - last >= min_gap:
            onsets.append(time)
        last = time
    return onsets


def av_sync_error_ms(
    frames: torch.Tensor, waveform: torch.Tensor, fps: float, sample_rate: int
) -> dict:
    """Mean |click onset - visual contact| over contacts with a click within 250 ms."""
    contacts = [frame / fps for frame in contact_frames(frames)]
    onsets = click_onsets(waveform, sample_rate)
    errors = []
    for contact in contacts:
        nearest = min(onsets, key=lambda onset: abs(onset - contact), default=None)
        if nearest is not None and abs(nearest - contact) * 1000 <= MATCH_WINDOW_MS:
            errors.append(abs(nearest - contact) * 1000)
    return {
        "contacts": len(contacts),
        "onsets": len(onsets),
        "matched": len(errors),
        "mean_error_ms": sum(errors) / len(errors) if errors else None,
    }


def mean_av_sync(results: list[dict]) -> dict:
    """Pools ``av_sync_error_ms`` results of many clips: the mean of the clips that got a click,
    with its standard error over those clips, so two models' numbers can be told from noise."""
    errors = [r["mean_error_ms"] for r in results if r["mean_error_ms"] is not None]
    return {
        "av_sync_ms": statistics.fmean(errors) if errors else None,
        "av_sync_ms_stderr": (
            statistics.stdev(errors) / math.sqrt(len(errors)) if len(errors) > 1 else None
        ),
        "visual_contacts": sum(r["contacts"] for r in results),
        "contacts_with_a_click": sum(r["matched"] for r in results),
    }


def dominant_pitch_colour(waveform: torch.Tensor, sample_rate: int) -> str:
    signal = waveform.float().mean(0) if waveform.dim() == 2 else waveform.float()
    spectrum = torch.fft.rfft(signal * torch.hann_window(len(signal))).abs()
    frequencies = torch.fft.rfftfreq(len(signal), 1 / sample_rate)
    band = (frequencies > 150) & (frequencies < 1000)
    peak = frequencies[band][spectrum[band].argmax()].item()
    return min(PITCH_FOR_COLOUR, key=lambda name: abs(math.log(PITCH_FOR_COLOUR[name] / peak)))


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """dB over the pixels where ``mask`` is True ([T, H, W]); 1.0 is the peak."""
    error = (a.float() - b.float()).pow(2).mean(-1)
    if mask is not None:
        error = error[mask]
    mse = error.mean().item()
    return 99.0 if mse == 0 else 10 * math.log10(1 / mse)
