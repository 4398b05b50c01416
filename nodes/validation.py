"""VALIDATE_INPUTS helpers: bad input reported the way the host shows it best."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

from skyreels_core.errors import InputError
from skyreels_core.masks import PATCH
from skyreels_core.shapes import SPATIAL_STRIDE, latent_size


def reports_input_errors(validate: Callable) -> Callable:
    """Turn an InputError into the returned message: the host then marks the node with
    "Custom validation failed: <message>" before anything runs, where a raised error would show
    as an exception with a traceback.

    The host reads the validator's signature: it passes only the inputs named there and skips
    its own min / max checks for exactly those, so the wrapper keeps ``validate``'s signature (a
    catch-all ``**inputs`` turned every check off) and makes those checks itself. An input wired
    from another node arrives as None, its value unknown before the run: it is left out, so
    ``validate``'s default stands in, and the node checks the real value when it runs."""

    @functools.wraps(validate)
    def checked(cls, **inputs):
        given = {name: value for name, value in inputs.items() if value is not None}
        try:
            _within_limits(cls, given)
            return validate(cls, **given)
        except InputError as error:
            return str(error)

    checked.__signature__ = inspect.signature(validate)
    return checked


def _within_limits(cls, inputs: dict) -> None:
    """The host's min / max checks, for the inputs a validator takes (the host leaves them out).
    Only numbers have limits: a file name's validator does not list the folders again."""
    inputs = {name: v for name, v in inputs.items() if type(v) in (int, float)}
    if not inputs:
        return
    declared = cls.INPUT_TYPES()
    specs = {**declared.get("required", {}), **declared.get("optional", {})}
    for name, value in inputs.items():
        spec = specs.get(name, ())
        options = spec[1] if len(spec) > 1 else {}
        low, high = options.get("min"), options.get("max")
        if low is not None and value < low:
            raise InputError(name, f"{value} is below the minimum, {low}", f"use {low} or more")
        if high is not None and value > high:
            raise InputError(name, f"{value} is above the maximum, {high}", f"use {high} or less")


def check_pixel_grid(width: int, height: int) -> None:
    """Width and height on the grid every video codec's stride times the model's patch divides
    (16 px), checked when queued: the host's ``step`` only moves the widget's arrows, so 72
    passed and the render failed. A codec with a coarser stride is checked again at run time,
    when it is known."""
    for name, pixels in (("width", width), ("height", height)):
        latent_size(pixels, SPATIAL_STRIDE, PATCH, name)


def require_sound(audio: dict | None, input_name: str = "audio") -> dict:
    """The host's AUDIO (:func:`host_sound`), or a named refusal where there is none: the host's
    Get Video Components gives None for a clip without a sound track, which failed deep inside
    as a bare TypeError."""
    if audio is None:
        raise InputError(
            input_name,
            "no sound: the clip has no sound track",
            "give it one (Mask: Video to Audio makes a sound for a clip), or connect a Load Audio",
        )
    return host_sound(audio, input_name)


def host_sound(audio: dict | None, input_name: str = "audio") -> dict | None:
    """An AUDIO input as the pack reads it: float samples [batch, channels, samples] at a
    positive rate. The host's nodes give just that; another pack's int16 samples failed inside
    torch, a rate of 0 inside FFmpeg. Integer samples are scaled to -1..1, as FFmpeg reads them."""
    if audio is None:
        return None
    waveform, rate = audio.get("waveform"), audio.get("sample_rate")
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 3:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform)
        raise InputError(
            input_name, f"a waveform of {shape}, not [batch, channels, samples]", "connect an AUDIO"
        )
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 1:
        raise InputError(
            input_name, f"a sample rate of {rate!r}", "connect a sound whose node gives its rate"
        )
    if waveform.dtype in (torch.int16, torch.int32):
        waveform = waveform.float() / 2 ** (torch.iinfo(waveform.dtype).bits - 1)
    elif not waveform.is_floating_point():
        raise InputError(
            input_name, f"samples of {waveform.dtype}", "connect float, int16 or int32 samples"
        )
    return {**audio, "waveform": waveform, "sample_rate": int(rate)}
