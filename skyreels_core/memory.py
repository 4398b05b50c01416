"""Turning out-of-memory into advice, after giving the memory back, and refusing beforehand a
whole-clip encode, or a model pass, on the CPU that cannot fit in RAM.

An overnight queue must survive one render that does not fit: the failing render reports which
memory options exist, and the next queue item starts with the cache emptied. That needs an
exception, and on the CPU there is none: Linux overcommits, and its OOM killer ends the whole
process (ComfyUI's server, with every queued render) without a message. So the encodes and the
model passes at a size the user picks are checked against the available RAM before they allocate
anything.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path

import torch

from .errors import InputError, MemoryAdviceError

MEMORY_OPTIONS = (
    "block swap (loader: block_swap, streams transformer blocks from CPU memory)",
    "fp8 weights (loader: dtype fp8_e4m3fn, halves the model's memory)",
    "tiled VAE decode (Decode Video: tile_size)",
    "a lower resolution (Video to Audio: longest_side) or fewer frames",
)


OUT_OF_MEMORY_WORDS = (
    "DefaultCPUAllocator: can't allocate memory",  # Linux, macOS
    "DefaultCPUAllocator: not enough memory",  # Windows
    "MPS backend out of memory",  # Apple silicon
)
"""What torch says when the CPU's RAM or an Apple GPU's memory runs out: a plain RuntimeError,
not the OutOfMemoryError CUDA raises."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device or the CPU running out of memory."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError)
        and any(words in str(error) for words in OUT_OF_MEMORY_WORDS)
    )


def empty_device_cache() -> None:
    """Hand the blocks the GPU's allocator keeps cached (CUDA's, or an Apple GPU's) back."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()


class out_of_memory_advice:  # noqa: N801 - used as a context manager, reads like one
    """Re-raise an out-of-memory error during ``stage`` as :class:`MemoryAdviceError`.

    A class rather than ``@contextmanager``: the generator protocol keeps the original traceback
    (and with it every activation of the failed render) alive in ``__exit__``'s arguments, so the
    cache could not give the memory back before the error reaches the queue.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, error, traceback) -> bool:
        if error is None or not is_out_of_memory(error):
            return False
        detail = str(error).splitlines()[0] if str(error) else "out of memory"
        error.__traceback__ = None
        del traceback, error
        gc.collect()
        empty_device_cache()
        options = "; ".join(MEMORY_OPTIONS)
        raise MemoryAdviceError(
            f"{self.stage} ran out of memory ({detail}). Try: {options}."
        ) from None


MEMINFO = Path("/proc/meminfo")
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED_V1 = 2**60
"""cgroup v1 writes "no limit" as the largest page-aligned count (about 2**63)."""


def available_ram() -> int | None:
    """Bytes this process can still take before an OOM killer strikes: the RAM available without
    swapping plus the free swap (a render past RAM into swap is slow, not lost), or None where
    that is unknown. psutil's RAM figure is the one ComfyUI's own ``get_free_memory`` reports for
    the CPU (and ComfyUI requires psutil); without psutil, Linux's MemAvailable and SwapFree.
    Inside a memory-limited container (Docker's ``--memory``, a Kubernetes limit) the machine's
    figure is not the container's: its cgroup's room is, when smaller."""
    system = _system_memory()
    if system is None:
        return None
    ram, swap = system
    rooms = (_cgroup_room(cgroup, swap) for cgroup in _memory_cgroups())
    return min([ram + swap, *(room for room in rooms if room is not None)])


def _system_memory() -> tuple[int, int] | None:
    """The machine's available RAM and free swap, in bytes."""
    try:
        import psutil
    except ImportError:
        return _meminfo_memory()
    return psutil.virtual_memory().available, psutil.swap_memory().free


def _meminfo_memory() -> tuple[int, int] | None:
    try:
        text = MEMINFO.read_text()
    except OSError:  # not Linux
        return None
    fields = dict(re.findall(r"^(MemAvailable|SwapFree):\s+(\d+) kB", text, re.MULTILINE))
    if "MemAvailable" not in fields:
        return None
    return int(fields["MemAvailable"]) * 1024, int(fields.get("SwapFree", 0)) * 1024


def _memory_cgroups() -> list[tuple[Path, int]]:
    """The memory cgroups whose limits bind this process, with their version: its own and every
    parent up to the mount (a limit set on a parent binds its children). In a container with its
    own cgroup namespace, or with the host's path not mounted, the mount's root is its own."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:  # not Linux
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            version, root = 2, CGROUP_ROOT
        elif "memory" in controllers.split(","):
            version, root = 1, CGROUP_ROOT / "memory"
        else:
            continue
        folder = root / path.lstrip("/")
        folder = folder if folder.is_dir() else root
        found += [
            (level, version) for level in (folder, *folder.parents) if level.is_relative_to(root)
        ]
    return found


def _cgroup_room(cgroup: tuple[Path, int], swap_free: int) -> int | None:
    """What one cgroup still lets its processes take before its OOM killer ends one: its limit
    less what it holds, its page cache counted as free (the kernel drops that first), plus the
    swap it may still use. A cgroup without a limit, or unreadable, does not bind."""
    folder, version = cgroup
    names = {
        2: ("memory.max", "memory.current", "file"),
        1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache"),
    }[version]
    try:
        limit, held = ((folder / name).read_text().strip() for name in names[:2])
        stat = (folder / "memory.stat").read_text()
    except OSError:
        return None
    if limit == "max" or int(limit) >= UNLIMITED_V1:
        return None
    cache = re.search(rf"^{names[2]} (\d+)$", stat, re.MULTILINE)
    used = int(held) - (int(cache[1]) if cache else 0)
    return max(int(limit) - used, 0) + _cgroup_swap_room(folder, swap_free)


def _cgroup_swap_room(folder: Path, swap_free: int) -> int:
    """The swap a cgroup may still fill: cgroup v2's ``memory.swap.max`` less its use, never more
    than the machine's free swap. cgroup v1 has no swap limit of its own here (it counts swap with
    RAM, where it counts it at all), so there it is the machine's free swap."""
    try:
        limit, used = (
            (folder / f"memory.swap.{name}").read_text().strip() for name in ("max", "current")
        )
    except OSError:
        return swap_free
    return swap_free if limit == "max" else min(max(int(limit) - int(used), 0), swap_free)


def clip_bytes(frames: int, height: int, width: int) -> int:
    """One float32 RGB clip, as IMAGE frames hold it."""
    return frames * height * width * 3 * 4


def computes_on_cpu(codec) -> bool:
    """Whether ``codec`` runs on the CPU: its ``device``, else its weights'; a codec of neither
    computes where the frames are, in RAM."""
    device = getattr(codec, "device", None)
    if device is None and isinstance(codec, torch.nn.Module):
        device = next(codec.parameters(), torch.empty(0)).device
    return device is None or torch.device(device).type == "cpu"


def codec_ram_bytes(codec, way: str, frames: int, height: int, width: int) -> int:
    """At least the RAM ``codec``'s ``way`` ("encode" or "decode") of one clip of ``frames`` at
    height x width px takes on the CPU beside its input: the codec's own ``encode_ram_bytes`` or
    ``decode_ram_bytes`` (the Wan 2.1 VAE's, the demo codec's), and 0 for a codec of unknown
    needs, so that only what is counted can refuse."""
    own = getattr(codec, f"{way}_ram_bytes", None)
    return 0 if own is None else own(frames, height, width)


def check_codec_ram(
    codec,
    way: str,
    frames: int,
    height: int,
    width: int,
    *,
    held: int,
    input_name: str,
    remedy: str,
    tile: tuple[int, int] | None = None,
) -> None:
    """Refuse, before anything is allocated, to run ``codec``'s ``way`` on the CPU where it
    needs more RAM than is available: ``held`` bytes the caller keeps beside it (clips it makes,
    a tiled decode's whole output) and what the call takes (:func:`codec_ram_bytes` at
    height x width, or at ``tile``'s size, px, for a call per tile). Both are lower bounds of the real peak, so
    nothing that fits is refused, and where the available RAM is unknown nothing is. On a GPU
    an OutOfMemoryError already turns into advice (:class:`out_of_memory_advice`).

    The error names ``input_name`` and offers ``remedy``, then fewer frames or a GPU."""
    if not computes_on_cpu(codec):
        return
    needed = held + codec_ram_bytes(codec, way, frames, *(tile or (height, width)))
    tiles = f" in {tile[1]} x {tile[0]} px tiles" if tile else ""
    refuse_past_ram(
        needed,
        input_name,
        f"{way.removesuffix('e')}ing {frames} frames of {width} x {height} px{tiles} on the CPU",
        f"{remedy}, fewer frames, or a machine with a GPU (the video VAE runs there)",
    )


def fits_in_ram(needed: int) -> bool:
    """Whether ``needed`` bytes fit in the available RAM; True where that is unknown."""
    available = available_ram()
    return available is None or needed <= available


def refuse_past_ram(needed: int, input_name: str, doing: str, remedy: str) -> None:
    """Raise an :class:`InputError` naming ``input_name`` where ``doing`` (what the CPU would
    compute, as the message says it) needs more than the available RAM."""
    available = available_ram()
    if available is None or needed <= available:
        return
    raise InputError(
        input_name,
        f"{doing} needs at least {needed / 2**30:.1f} GiB of memory, and "
        f"{available / 2**30:.1f} GiB (RAM and free swap) is available",
        remedy,
    )
