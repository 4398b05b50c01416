"""Out-of-memory is reported with the memory options and does not keep the failed tensors alive."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

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


def test_other_errors_pass_through_unchanged():
    with pytest.raises(KeyError):
        with out_of_memory_advice("decode"):
            raise KeyError("x")
