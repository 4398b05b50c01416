"""Out-of-memory is reported with the memory options and does not keep the failed tensors alive,
nor weights on the GPU; an encode, or a model pass, on the CPU that cannot fit in RAM is refused
before it starts, by an estimate that stays below the real peak."""

from __future__ import annotations

import gc
import json
import re
import sys
import weakref
from types import SimpleNamespace

import pytest
import torch
from codec_helpers import TINY, PoolingCodec
from diffusers import AutoencoderKLWan
from torch import nn

import skyreels_core.offload as offload
from skyreels_core import memory
from skyreels_core.benchmark.instruments import TrackedTensorBytes, least_counted_and_peak
from skyreels_core.codecs.tiling import decode_tiled, encode_tiled
from skyreels_core.codecs.wan_vae import CONFIG, WanVideoCodec
from skyreels_core.demo.bundle import video_codec
from skyreels_core.errors import InputError, MemoryAdviceError
from skyreels_core.memory import MEMORY_OPTIONS, out_of_memory_advice


def test_out_of_memory_becomes_advice_and_releases_tensors():
    holder = {}

    def render():
        activations = torch.zeros(1024)
        holder["ref"] = weakref.ref(activations)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(MemoryAdviceError) as caught:
        with out_of_memory_advice("sampling"):
            render()
    message = str(caught.value)
    assert message.startswith(
        "sampling ran out of memory (CUDA out of memory. Tried to allocate 20.00 GiB)"
    )
    assert all(option in message for option in MEMORY_OPTIONS)
    gc.collect()
    assert holder["ref"]() is None


def test_the_cpu_running_out_of_ram_becomes_advice_too():
    """torch's CPU allocator reports running out of RAM as a plain RuntimeError: a CPU host (the
    demo's) got the raw allocator message instead of the memory options."""
    huge = 2**50  # a petabyte: refused by any machine this runs on
    with pytest.raises(MemoryAdviceError) as caught:
        with out_of_memory_advice("mask"):
            torch.empty(huge, dtype=torch.uint8)
    message = str(caught.value)
    assert message.startswith("mask ran out of memory (") and "can't allocate memory" in message
    assert all(option in message for option in MEMORY_OPTIONS)
    windows = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate 10 bytes."  # fmt: skip
    with pytest.raises(MemoryAdviceError, match=r"^mask ran out of memory \(\[enforce fail"):
        with out_of_memory_advice("mask"):
            raise RuntimeError(windows)  # torch's Windows build words it so


def test_an_apple_gpu_running_out_of_memory_becomes_advice_and_empties_its_cache(monkeypatch):
    """On Apple silicon torch reports the GPU full as a plain RuntimeError: a Mac artist got the
    raw message (and a batched guidance pass no fallback), and the cache was never emptied."""
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: emptied.append(1))
    mps = (
        "MPS backend out of memory (MPS allocated: 17.80 GiB, other allocations: 1.02 GiB, max "
        "allowed: 18.13 GiB). Tried to allocate 1.25 GiB on private pool."
    )
    with pytest.raises(MemoryAdviceError, match=r"^sampling ran out of memory \(MPS backend out"):
        with out_of_memory_advice("sampling"):
            raise RuntimeError(mps)
    assert emptied == [1]
    from skyreels_pack.nodes import host  # standalone, the pack empties it without the host

    host.soft_empty_cache()
    assert emptied == [1, 1]


def test_other_errors_pass_through_unchanged():
    with pytest.raises(KeyError):
        with out_of_memory_advice("decode"):
            raise KeyError("x")


def test_running_out_of_memory_while_a_vae_moves_in_leaves_none_of_it_on_the_gpu(monkeypatch):
    """A VAE or text encoder that fills the GPU part-way through its move goes back whole."""
    vae = nn.Sequential(*[nn.Linear(8, 8) for _ in range(4)])
    on_gpu = set()  # "meta" stands in for the GPU; the stand-in keeps track of what is there
    real_set = offload._set

    def set_until_full(slot, tensor):
        if tensor.device.type != "meta":
            on_gpu.discard(slot)
            return real_set(slot, tensor)
        if len(on_gpu) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        on_gpu.add(slot)

    monkeypatch.setattr(offload, "_set", set_until_full)
    with pytest.raises(MemoryAdviceError, match="video decode ran out of memory"):
        with out_of_memory_advice("video decode"), offload.visiting(vae, "meta", "cpu"):
            pytest.fail("the block ran without its weights")
    assert on_gpu == set()  # every weight back on the rest device


def test_a_runtime_error_that_is_not_out_of_memory_passes_through_unchanged():
    """A shape mismatch is a bug to report, not a memory problem: re-raised as "decode ran out of
    memory ... Try: block swap", it would send users after memory options."""
    bug = RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")
    with pytest.raises(RuntimeError) as caught:
        with out_of_memory_advice("decode"):
            raise bug
    assert caught.value is bug and not isinstance(caught.value, MemoryAdviceError)


def _wan_codec(config: dict) -> WanVideoCodec:
    torch.manual_seed(0)
    return WanVideoCodec(AutoencoderKLWan.from_config(config))


FULL_WAN = {k: v for k, v in json.loads(CONFIG.read_text()).items() if not k.startswith("_")}


@pytest.mark.parametrize(
    "codec_name, way, lowest",  # lowest: the estimate's least share of the tracked peak
    [("demo", "encode", 0.75), ("tiny_wan", "encode", 0.75), ("full_wan", "encode", 0.75),
     ("demo", "decode", 0.6), ("tiny_wan", "decode", 0.45), ("full_wan", "decode", 0.45)],
)  # fmt: skip
def test_the_ram_estimate_stays_below_a_real_peak(codec_name, way, lowest):
    """The pre-flight check refuses only what cannot fit: its estimate, from the codec's config,
    is below the tensor bytes a real encode or decode holds at its peak (which its RSS exceeds),
    and close enough to it to refuse what is far too large. The full-size Wan 2.1 VAE at 32 x 32
    px; bench encode_ram.py measures peak RSS at larger sizes."""
    codec = {"demo": video_codec, "tiny_wan": lambda: _wan_codec(TINY),
             "full_wan": lambda: _wan_codec(FULL_WAN)}[codec_name]()  # fmt: skip
    clip = torch.rand(1, 5, 32, 32, 3)
    given = clip if way == "encode" else codec.encode(clip)
    with TrackedTensorBytes() as tracked:
        getattr(codec, way)(given)
    estimate = memory.codec_ram_bytes(codec, way, 5, 32, 32)
    # measured: encodes 0.80, 0.81 and 1.0; decodes 0.72, 0.57 and 0.54
    assert lowest * tracked.peak <= estimate <= tracked.peak


def test_available_ram_counts_free_swap_from_psutil_or_meminfo_or_is_unknown(monkeypatch, tmp_path):
    """What the OOM killer leaves: available RAM plus free swap (a machine with 16 GB of RAM and
    32 GB of swap renders a clip past its RAM slowly, and was refused it), from psutil as ComfyUI
    reads it, else /proc/meminfo; unknown off Linux without psutil."""
    _machine(monkeypatch, available=3 * 2**30, swap_free=2**30)
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "no cgroup")  # not in a container
    assert memory.available_ram() == 4 * 2**30
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       16384 kB\nMemFree:  1024 kB\nMemAvailable:   8192 kB\n"
        "SwapTotal:      4096 kB\nSwapFree:       2048 kB\n"
    )
    monkeypatch.setattr(memory, "MEMINFO", meminfo)
    assert memory.available_ram() == (8192 + 2048) * 1024
    meminfo.write_text("MemTotal:       16384 kB\nMemAvailable:   8192 kB\n")  # no swap lines
    assert memory.available_ram() == 8192 * 1024
    meminfo.write_text("MemTotal:       16384 kB\nMemFree:  1024 kB\n")  # Linux before 3.14
    assert memory.available_ram() is None  # MemFree leaves out the page cache: unknown
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "missing")  # not Linux
    assert memory.available_ram() is None


def _machine(monkeypatch, available: int, swap_free: int) -> None:
    """psutil as it reports a machine with this much available RAM and free swap."""
    psutil = SimpleNamespace(
        virtual_memory=lambda: SimpleNamespace(available=available),
        swap_memory=lambda: SimpleNamespace(free=swap_free),
    )
    monkeypatch.setitem(sys.modules, "psutil", psutil)


def _in_cgroup(monkeypatch, tmp_path, path: str):
    """This process in cgroup ``path`` of a cgroup v2 mount made under tmp_path: its root."""
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path / "fs")
    (tmp_path / "cgroup").write_text(f"0::{path}\n")
    return tmp_path / "fs"


def _cgroup(folder, **files):
    """Writes a cgroup's files, named as keywords: ``memory_swap_max`` is ``memory.swap.max``,
    ``memory_limit_in_bytes`` is ``memory.limit_in_bytes``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / re.sub(r"_(?!in_|bytes)", ".", name)).write_text(text)


def test_available_ram_is_a_memory_limited_containers_room(monkeypatch, tmp_path):
    """In Docker with ``--memory 6g`` on a 64 GB host, the host's free RAM let a clip through
    that the container's OOM killer then ended ComfyUI over: the room left is the limit less what
    the cgroup holds (its page cache counted as free), plus the swap it may still use, and a
    parent's tighter limit binds its children. No limit, or no cgroup, leaves the machine's."""
    GiB = 2**30
    _machine(monkeypatch, available=48 * GiB, swap_free=2 * GiB)
    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    monkeypatch.setattr(memory, "PROC_CGROUP", proc)
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    proc.write_text("0::/docker/abc\n")
    leaf = root / "docker" / "abc"
    stat = f"anon {4 * GiB}\nfile {GiB}\nshmem 0\n"
    _cgroup(leaf, memory_max=str(6 * GiB), memory_current=str(5 * GiB), memory_stat=stat)
    _cgroup(leaf, memory_swap_max="0", memory_swap_current="0")
    assert memory.available_ram() == 2 * GiB  # 6 - (5 - 1 of page cache), no swap
    (leaf / "memory.swap.max").write_text(str(GiB))
    assert memory.available_ram() == 3 * GiB  # and 1 GiB of swap
    (leaf / "memory.swap.max").write_text("max")
    assert memory.available_ram() == 4 * GiB  # as much swap as the machine has free
    (leaf / "memory.max").write_text("max")
    assert memory.available_ram() == 50 * GiB  # no limit: the machine's
    _cgroup(root / "docker", memory_max=str(3 * GiB), memory_current=str(2 * GiB))
    _cgroup(root / "docker", memory_stat="file 0\n")
    assert memory.available_ram() == 3 * GiB  # the parent's: 1 GiB and the free swap
    proc.write_text("0::/\n")  # a container's own cgroup namespace: the mount's root is its own
    _cgroup(root, memory_max=str(GiB), memory_current=str(GiB // 2), memory_stat="file 0\n")
    assert memory.available_ram() == GiB // 2 + 2 * GiB
    (root / "memory.max").write_text("max")
    # cgroup v1 beside v2 (a hybrid host); v1 writes "no limit" as the largest page-aligned count
    proc.write_text("12:pids:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n")
    v1 = root / "memory"  # the host's path is not mounted there: the mount's root is the cgroup
    _cgroup(v1, memory_limit_in_bytes="9223372036854771712", memory_usage_in_bytes="0")
    _cgroup(v1, memory_stat=f"cache {GiB}\ntotal_cache {2 * GiB}\n")
    assert memory.available_ram() == 3 * GiB  # v2's parent still binds
    (root / "docker" / "memory.max").write_text("max")
    assert memory.available_ram() == 50 * GiB
    (v1 / "memory.limit_in_bytes").write_text(str(4 * GiB))
    (v1 / "memory.usage_in_bytes").write_text(str(3 * GiB))
    assert memory.available_ram() == (4 - (3 - 2) + 2) * GiB  # total_cache is free; and the swap


def test_a_container_limit_refuses_what_the_host_would_let_through(monkeypatch, tmp_path):
    """The pre-flight refuses, in the container, what its machine alone would have let run."""
    GiB = 2**30
    _machine(monkeypatch, available=48 * GiB, swap_free=0)
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path)
    (tmp_path / "cgroup").write_text("0::/\n")
    held = memory.clip_bytes(81, 720, 1280)

    def check() -> None:
        memory.check_codec_ram(
            PoolingCodec(), "encode", 81, 720, 1280, held=held, input_name="source", remedy="a cut"
        )

    check()  # the machine's 48 GiB hold it
    needed = held + memory.codec_ram_bytes(PoolingCodec(), "encode", 81, 720, 1280)
    _cgroup(tmp_path, memory_max=str(needed - 1), memory_current="0", memory_stat="file 0\n")
    with pytest.raises(InputError, match=r"^source: encoding 81 frames of 1280 x 720 px"):
        check()


def test_a_codec_off_the_cpu_is_not_checked(monkeypatch):
    """On a GPU the encode's OutOfMemoryError becomes advice; RAM is not what runs out there."""
    monkeypatch.setattr(memory, "available_ram", lambda: 0)

    class OnGpu(PoolingCodec):
        device = torch.device("cuda")

    held = 2 * memory.clip_bytes(17, 64, 64)
    memory.check_codec_ram(
        OnGpu(), "encode", 17, 64, 64, held=held, input_name="source", remedy="x"
    )
    with pytest.raises(InputError, match="^source: encoding 17 frames of 64 x 64 px on the CPU"):
        memory.check_codec_ram(PoolingCodec(), "encode", 17, 64, 64, held=held,
                               input_name="source", remedy="x")  # fmt: skip


def test_encode_video_is_refused_whole_and_taken_in_tiles_that_fit(monkeypatch):
    """Encode Video's whole-frame encode that cannot fit is refused, naming tile_size; in tiles
    it needs one tile's working memory, so the same RAM takes it."""
    codec = video_codec()
    frames = torch.rand(1, 9, 256, 256, 3)
    whole = memory.codec_ram_bytes(codec, "encode", 9, 256, 256)
    monkeypatch.setattr(memory, "available_ram", lambda: whole - 1)
    with pytest.raises(InputError) as refused, TrackedTensorBytes() as tracked:
        encode_tiled(codec, frames, 0, 0)
    assert re.match(
        r"tile_size: encoding 9 frames of 256 x 256 px on the CPU needs at least 0\.0 GiB of "
        r"memory, and 0\.0 GiB \(RAM and free swap\) is available\. Fix: a tile_size \(one tile's memory at a time\), fewer "
        r"frames, or a machine with a GPU",
        str(refused.value),
    )
    assert tracked.peak == 0  # refused before anything was allocated
    tiled = encode_tiled(codec, frames, 16, 4)
    assert tiled.shape == (1, codec.latent_channels, 3, 32, 32)


def test_decode_video_is_refused_whole_and_taken_in_tiles_that_fit(monkeypatch):
    """Decode Video's whole-frame decode that cannot fit is refused, naming tile_size, before
    anything is allocated; in tiles it needs the whole clip it lays them into and one tile's
    working memory, so the same RAM takes it, and a RAM short of even that names the tiles."""
    codec = video_codec()
    latents = codec.encode(torch.rand(1, 9, 256, 256, 3))
    whole = memory.codec_ram_bytes(codec, "decode", 9, 256, 256)
    monkeypatch.setattr(memory, "available_ram", lambda: whole - 1)
    with pytest.raises(InputError) as refused, TrackedTensorBytes() as tracked:
        decode_tiled(codec, latents, 0, 0)
    assert str(refused.value).startswith(
        "tile_size: decoding 9 frames of 256 x 256 px on the CPU needs at least 0.0 GiB"
    )
    assert "Fix: a tile_size (one tile's memory at a time), fewer frames" in str(refused.value)
    assert tracked.peak == 0
    tiled = decode_tiled(codec, latents, 16, 4)
    assert tiled.shape == (1, 9, 256, 256, 3)
    monkeypatch.setattr(memory, "available_ram", lambda: memory.clip_bytes(9, 256, 256))
    with pytest.raises(InputError, match="^tile_size: decoding 9 frames of 256 x 256 px in 128 x "
                       "128 px tiles on the CPU .* Fix: a smaller tile_size"):  # fmt: skip
        decode_tiled(codec, latents, 16, 4)


def test_the_advice_quotes_the_errors_first_line_or_says_out_of_memory():
    """The advice quotes the line that says what ran out, not a traceback line torch appends
    after it, and an OutOfMemoryError raised without a message still reads "(out of memory)"
    rather than "()"."""
    said = "CUDA out of memory. Tried to allocate 2.00 GiB\nException raised from malloc at c10"
    with pytest.raises(MemoryAdviceError) as caught:
        with out_of_memory_advice("decode"):
            raise torch.OutOfMemoryError(said)
    assert str(caught.value).startswith(
        "decode ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB). Try: "
    )
    with pytest.raises(MemoryAdviceError) as caught:
        with out_of_memory_advice("decode"):
            raise torch.OutOfMemoryError()
    assert str(caught.value).startswith("decode ran out of memory (out of memory). Try: ")


def test_a_cgroup_over_its_limit_or_its_swap_limit_has_no_room_and_no_borrowed_swap(
    monkeypatch, tmp_path
):
    """A cgroup whose limit was lowered below what it holds (the kernel reclaims it gradually)
    has no room left, not a negative room that made every encode look impossible by the excess;
    the swap it may use is what its swap limit leaves, never below none and never more than the
    machine has free."""
    GiB = 2**30
    _machine(monkeypatch, available=48 * GiB, swap_free=2 * GiB)
    root = _in_cgroup(monkeypatch, tmp_path, "/")
    _cgroup(root, memory_max=str(4 * GiB), memory_current=str(7 * GiB), memory_stat="file 0\n")
    _cgroup(root, memory_swap_max="max", memory_swap_current="0")
    assert memory.available_ram() == 2 * GiB  # no RAM left, the machine's free swap
    (root / "memory.swap.max").write_text(str(8 * GiB))  # more than the machine has free
    assert memory.available_ram() == 2 * GiB
    (root / "memory.swap.max").write_text(str(GiB))  # lowered below what it has swapped out
    (root / "memory.swap.current").write_text(str(3 * GiB))
    assert memory.available_ram() == 0


def test_a_clip_is_four_bytes_a_channel_value():
    """IMAGE frames are float32 RGB: what the pre-flight check counts for each clip it holds."""
    assert memory.clip_bytes(2, 3, 5) == 2 * 3 * 5 * 3 * 4 == 360


def test_a_codec_without_a_device_computes_where_its_weights_are():
    """A codec module naming no device runs where its weights rest: on the GPU ("meta" stands in
    for it) it is not checked against RAM, on the CPU it is, and so is a codec of no weights."""
    on_gpu = nn.Linear(2, 2, device="meta")
    assert not memory.computes_on_cpu(on_gpu)
    assert memory.computes_on_cpu(nn.Linear(2, 2))
    assert memory.computes_on_cpu(nn.Identity())
    assert memory.computes_on_cpu(SimpleNamespace())


def test_a_refusal_in_tiles_names_them_width_by_height(monkeypatch):
    """A tile is (height, width) px, as the clip; the message says width x height, as it says the
    clip's size, so a tall tile reads as tall."""
    monkeypatch.setattr(memory, "available_ram", lambda: 0)
    with pytest.raises(InputError, match="^tile_size: decoding 9 frames of 96 x 256 px in 96 x 128 px tiles on"):  # fmt: skip
        memory.check_codec_ram(
            PoolingCodec(), "decode", 9, 256, 96, held=1, input_name="tile_size", remedy="x",
            tile=(128, 96),
        )  # fmt: skip


def test_a_cgroup_path_not_mounted_takes_the_mounts_root_not_a_namesake_below_it(
    monkeypatch, tmp_path
):
    """Without its own cgroup namespace a container sees the host's path (``/docker/abc``) over
    a mount whose root is its own cgroup: that root binds it. A group below the root that happens
    to share the path's first part (docker-in-docker's own ``docker`` group, limited for its
    containers) is not this process's and must not bind it."""
    GiB = 2**30
    _machine(monkeypatch, available=48 * GiB, swap_free=0)
    root = _in_cgroup(monkeypatch, tmp_path, "/docker/abc")
    _cgroup(root, memory_max=str(8 * GiB), memory_current=str(2 * GiB), memory_stat="file 0\n")
    _cgroup(root / "docker", memory_max=str(GiB), memory_current="0", memory_stat="file 0\n")
    assert memory.available_ram() == 6 * GiB


def test_the_failed_renders_tensors_are_freed_before_the_cache_is_emptied(monkeypatch):
    """Emptying the GPU's cache gives back only blocks no tensor holds: the failed render's
    activations must be gone by then, those caught in reference cycles (closures, hooks, frames
    that hold their own error) too, or the next queue item starts without their memory."""
    alive_at_emptying = []

    def render():
        activations = {"output": torch.zeros(1024)}
        activations["self"] = activations  # a reference cycle: only the collector frees it
        holder["ref"] = weakref.ref(activations["output"])
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    holder = {}
    monkeypatch.setattr(
        memory, "empty_device_cache", lambda: alive_at_emptying.append(holder["ref"]() is not None)
    )
    gc.disable()  # the collector runs when told to, not when allocations happen to trigger it
    try:
        with pytest.raises(MemoryAdviceError):
            with out_of_memory_advice("sampling"):
                render()
    finally:
        gc.enable()
    assert alive_at_emptying == [False]


@pytest.mark.parametrize(
    ("frames", "size", "text_tokens", "audio_tokens", "batched"),
    [
        (3, 8, 8, 54, True),
        (3, 8, 8, 54, False),
        (9, 16, 64, 54, True),
        (9, 16, 512, 54, False),
        (9, 8, 8, 144, False),  # as many audio tokens as video tokens
        (1, 2, 8, 2000, False),  # a long sound over a tiny picture
    ],
)
def test_the_least_a_sampler_pass_is_counted_to_take_stays_below_its_peak(
    frames, size, text_tokens, audio_tokens, batched
):
    """The CPU refusal must never refuse a render that fits: the demo model's pass is counted
    below what it takes, whichever stream is the longer, and close enough to it (0.68-0.94 of
    the tracked peak here) that little that cannot fit reaches the OOM killer."""
    from skyreels_core.config import get_preset
    from skyreels_core.mmdit import DualStreamMMDiT
    from skyreels_core.sampling import SamplerSettings, sample
    from skyreels_core.types import TextEncoding, VideoCondition

    torch.manual_seed(0)
    config = get_preset("demo")
    model = DualStreamMMDiT(config).eval()
    shape = (1, config.video_latent_channels, frames, size, size)
    text = TextEncoding(torch.randn(1, text_tokens, config.text_dim), torch.ones(1, text_tokens, dtype=torch.bool))  # fmt: skip
    settings = SamplerSettings(steps=1, batch_guidance=batched)
    least, peak = least_counted_and_peak(model, lambda: sample(
        model, text=text, negative_text=None, fps=16.0, audio_tokens=audio_tokens,
        settings=settings, condition=VideoCondition(torch.zeros(shape), torch.zeros(1, 1, *shape[2:]))))  # fmt: skip
    assert 0.6 * peak < least <= peak


@pytest.mark.parametrize(
    ("frames", "size", "sparsity", "fps_factor"),
    [(3, 8, 0.0, 1), (9, 16, 0.75, 1), (9, 16, 0.0, 2)],
)
def test_the_least_a_refiner_pass_is_counted_to_take_stays_below_its_peak(
    frames, size, sparsity, fps_factor
):
    from skyreels_core.refiner import REFINER_PRESETS, RefinerDiT, RefinerSettings, refine

    torch.manual_seed(0)
    model = RefinerDiT(REFINER_PRESETS["demo"]).eval()
    low = torch.randn(1, model.config.video_latent_channels, frames, size, size)
    settings = RefinerSettings(steps=1, sparsity=sparsity, fps_factor=fps_factor)
    least, peak = least_counted_and_peak(model, lambda: refine(model, low, settings))
    assert 0.6 * peak < least <= peak


def test_a_model_rendering_compiled_is_counted_by_what_any_execution_holds():
    """Inductor writes a GELU over its input and frees dead buffers sooner: a compiled pass of
    Wan 2.1's shape peaked below the eager count (1.05 of its peak, bench/compiled_step_ram.py),
    so while compiled steps are set the count is a matmul's input and output and an attention's
    q, k, v and output (0.72 of that peak there), and the eager count again afterwards."""
    from skyreels_core.config import ModelConfig
    from skyreels_core.mmdit import DualStreamMMDiT
    from skyreels_core.runtime import LoadedModel

    config = ModelConfig(
        name="wan-tiny", dim=64, num_heads=1, ffn_dim=172, num_dual_blocks=2, num_single_blocks=0,
        text_dim=32, channel_concat_inpainting=False, joint_text=False, audio_latent_channels=None,
    )  # fmt: skip
    model = DualStreamMMDiT(config)
    counted = ([(1, config.video_in_channels, 3, 8, 8)], 0, 16, 1)
    eager = model.activation_bytes(*counted, least=True)
    with LoadedModel(model, "wan-tiny", compile=True).on("cpu") as module:
        compiled = module.activation_bytes(*counted, least=True)
    d, f, video, text = 64, 172, 3 * 4 * 4, 16
    assert compiled == 4 * (d * (video + text) + max((d + f) * video, 4 * d * video))
    assert eager == 4 * (d * (video + text) + (d + 2 * f) * video) > compiled
    assert model.activation_bytes(*counted, least=True) == eager
