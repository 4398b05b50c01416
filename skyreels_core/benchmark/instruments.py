"""What the bench parts measure with: best-of wall times that wait for CUDA, the tensor bytes aten
ops allocate, the RSS a run adds, and the scaled models and inputs the speed and memory parts
share (scripts in ``bench/`` import them too)."""

from __future__ import annotations

import math
import re
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..config import ModelConfig, get_preset


def finished(function: Callable[[], object], device: torch.device | str) -> Callable[[], object]:
    """``function`` run to its end: CUDA computes asynchronously, so a timer waits for it."""
    if torch.device(device).type != "cuda":
        return function

    def run():
        result = function()
        torch.cuda.synchronize(device)
        return result

    return run


def best_time(function, repeats: int = 3) -> float:
    return best_times({"only": function}, repeats)["only"]


def best_times(
    functions: dict, repeats: int = 3, warm_up_s: dict[str, float] | None = None
) -> dict[str, float]:
    """Best wall time of each function, run round-robin after a warm-up, so a machine busy with
    other work slows every contender alike instead of whichever ran during the busy spell.
    ``warm_up_s``, where given, receives each warm-up call's time (a compiler's first call)."""
    best = dict.fromkeys(functions, math.inf)
    for name, function in functions.items():
        start = time.perf_counter()
        function()
        if warm_up_s is not None:
            warm_up_s[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def scaled_preset(dim: int, dual: int, single: int, preset: str = "skyreels-v4-14b") -> ModelConfig:
    """A 14B preset's shape (head dim 128, its FFN's ratio to the width, its channels; by default
    SkyReels-V4's: FFN 2.7 x width, 40 audio channels) at a width and depth a CPU runs in
    seconds."""
    full = get_preset(preset)
    return replace(full, name=f"{preset.removesuffix('-14b')}-scaled-{dim}", dim=dim, num_heads=dim // full.head_dim,
                   ffn_dim=32 * round(full.ffn_dim * dim / full.dim / 32), num_dual_blocks=dual,
                   num_single_blocks=single)  # fmt: skip


def step_inputs(
    config: ModelConfig,
    frames: int,
    size: int,
    audio_tokens: int,
    text_tokens: int = 64,
    width: int | None = None,
):
    """(video, timestep, text, audio) of one model call on latents of ``size`` (x ``width``);
    no audio for a model without an audio stream."""
    from ..types import TextEncoding

    generator = torch.Generator().manual_seed(0)
    shape = (1, config.video_in_channels, frames, size, width or size)
    video = torch.randn(shape, generator=generator)
    audio = None
    if config.has_audio:
        audio = torch.randn(1, config.audio_latent_channels, audio_tokens, generator=generator)
    text = TextEncoding(torch.randn(1, text_tokens, config.text_dim, generator=generator),
                        torch.ones(1, text_tokens, dtype=torch.bool))  # fmt: skip
    return video, torch.tensor([0.5]), text, audio


class TrackedTensorBytes(TorchDispatchMode):
    """Live and peak bytes of the tensor storages that aten ops allocate while the mode is on.

    A storage counts from the op that creates it until it is freed; views and in-place results
    (outputs sharing an input's storage) are not new memory. Tensors made before entering are
    not counted, so the caller adds what was resident (the weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._tracked: set[int] = set()

    def _freed(self, key: int, size: int) -> None:
        self._tracked.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}  # fmt: skip
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if key in inputs or key in self._tracked or size == 0:
                continue
            self._tracked.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key, size)
        return out


def weight_bytes(model: torch.nn.Module, skipped: set[int] = frozenset()) -> int:
    return sum(t.numel() * t.element_size() for m in model.modules() if id(m) not in skipped
               for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)  # fmt: skip


def rss_added_by(run: Callable[[], object]) -> int:
    """The most RSS ``run`` added to this process (Linux): its peak (VmHWM, reset through
    /proc/self/clear_refs just before) less the RSS it started from, libraries' workspaces
    included."""

    def status_bytes(field: str) -> int:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", status)[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from here
    before = status_bytes("VmRSS")
    run()
    return status_bytes("VmHWM") - before


def children_peak_rss() -> int | None:
    """The highest RSS of this process's finished children, in bytes: getrusage counts KiB on
    Linux and bytes on macOS; Windows has no getrusage (None), where importing it at the top
    had stopped every ``bench`` part."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def least_counted_and_peak(model: torch.nn.Module, run: Callable[[], object]) -> tuple[int, int]:
    """The least ``run``'s passes of ``model`` were counted to take (``activation_bytes(...,
    least=True)``, the figure the CPU's RAM refusal compares; the largest count) and the tracked
    peak of the tensors ``run`` allocated: the first must stay below the second."""
    counted, own = [], model.activation_bytes

    def count(*args, least: bool = False) -> int:
        counts = own(*args, least=least)
        if least:
            counted.append(counts)
        return counts

    model.activation_bytes = count
    try:
        with torch.no_grad(), TrackedTensorBytes() as tracked:
            run()
    finally:
        del model.activation_bytes
    return max(counted), tracked.peak
