"""Out-of-memory is reported with the memory options and does not keep the failed tensors alive,
nor weights on the GPU."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

import skyreels_core.offload as offload
from skyreels_core.errors import MemoryAdviceError
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
