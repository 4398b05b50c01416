"""Where the transformer's weights live: fp8 storage and block swap (issue #10).

A 14B-class model holds 28 GB of bf16 weights, more than the 16-24 GB cards artists own. Two
options bring it under, each paid for in a different currency:

- **fp8 storage** keeps every Linear weight of the transformer blocks in ``float8_e4m3fn`` with
  one float32 scale per tensor (half of bf16's bytes) and dequantises it to the compute dtype
  right before its matmul, so compute stays in bf16. Cost: one weight-sized cast per Linear call
  and a relative rounding error of at most 2^-4 per weight (3 mantissa bits). Embeddings, norms,
  modulations and heads are small and stay in the compute dtype.
- **Block swap** keeps the first ``n`` layers' weights in (pinned) CPU memory and copies each
  layer to the compute device just before it runs, on a side CUDA stream one layer ahead, so the
  copy of layer i+1 overlaps the compute of layer i; the copy is dropped after use. Cost: PCIe
  time per swapped layer and step, hidden while a layer computes longer than it copies.

On a CPU-only host the compute device is the offload memory; block swap then still fetches a
fresh copy per layer and drops it, so the whole path runs (and is tested) with identical outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448: the largest |w| maps here, so no weight saturates
FP8_FORMATS = (torch.float8_e4m3fn, torch.float8_e5m2)
"""The float8 formats a file's weights are kept in as stored: the matmul takes the weight
dequantised to the compute dtype, so e5m2's bytes serve as well as e4m3's."""


def quantise_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight / scale)`` in float8_e4m3fn and the float32 scale ``max|w| / 448``."""
    weight = weight.detach().float()
    scale = (weight.abs().amax() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    return (weight / scale).to(FP8), scale


class Float8Linear(nn.Linear):
    """A Linear whose weight is stored in float8 with a ``weight_scale``: e4m3fn per tensor as
    this pack quantises, or a file's own e4m3fn or e5m2 bytes with their scale, per tensor or per
    output row (kept, not rounded again).

    The state dict holds ``weight`` (fp8), ``weight_scale`` and ``bias`` (compute dtype), so a
    quantised model saves and loads without re-quantising.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        compute_dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = compute_dtype
        weight = torch.empty(out_features, in_features, dtype=FP8, device=device)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32, device=device))
        self.bias = (
            nn.Parameter(
                torch.empty(out_features, dtype=compute_dtype, device=device), requires_grad=False
            )
            if bias
            else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, compute_dtype: torch.dtype) -> Float8Linear:
        """The fp8 twin of ``linear`` (on meta it only takes the structure)."""
        device = linear.weight.device
        module = cls(
            linear.in_features, linear.out_features, linear.bias is not None, compute_dtype, device
        )
        if device.type != "meta":
            weight, scale = quantise_fp8(linear.weight)
            module.weight.data, module.weight_scale = weight, scale
            if linear.bias is not None:
                module.bias.data = linear.bias.detach().to(compute_dtype)
        return module

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """A per-row scale ([out, 1]) takes the place of the per-tensor one it is built with."""
        scale = state_dict.get(prefix + "weight_scale")
        if scale is not None and scale.shape != self.weight_scale.shape:
            self.weight_scale = torch.empty(scale.shape, device=self.weight_scale.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def dequantised_weight(self) -> torch.Tensor:
        """Scaled in float32, then cast once: a small layer's scale is subnormal in fp16 (max|w|
        under 0.027), and one under 6e-8 rounds to 0, zeroing the whole weight."""
        return (self.weight.float() * self.weight_scale).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantised_weight(), self.bias)

    def extra_repr(self) -> str:
        storage = str(self.weight.dtype).removeprefix("torch.")
        return f"{super().extra_repr()}, storage={storage}, compute={self.compute_dtype}"


def stream_layers(model: nn.Module) -> list[list[nn.Module]]:
    """The model's layers in execution order: video block i with the audio block i it
    interleaves with (dual-stream first, then single-stream)."""
    video = [*model.blocks, *model.single_blocks]
    audio = [*getattr(model, "audio_blocks", ()), *getattr(model, "audio_single_blocks", ())]
    return [[block, *audio[index : index + 1]] for index, block in enumerate(video)]


def store_linears_in_fp8(model: nn.Module, compute_dtype: torch.dtype) -> list[str]:
    """Swap every nn.Linear inside the transformer blocks for a :class:`Float8Linear` in place;
    returns the qualified names of the swapped modules (works on a ``meta`` model too)."""
    blocks = {id(block) for layer in stream_layers(model) for block in layer}
    names = []
    for block_name, block in model.named_modules():
        if id(block) not in blocks:
            continue
        for name, module in list(block.named_modules()):
            if type(module) is not nn.Linear:
                continue
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name)
            setattr(parent, child, Float8Linear.from_linear(module, compute_dtype))
            names.append(f"{block_name}.{name}")
    return names


def _tensor_slots(modules) -> list[tuple[nn.Module, str, bool]]:
    """(module, name, is_parameter) of the parameters and buffers each module holds itself."""
    slots = []
    for module in modules:
        slots += [(module, n, True) for n, p in module._parameters.items() if p is not None]
        slots += [(module, n, False) for n, b in module._buffers.items() if b is not None]
    return slots


def _holder(slot) -> torch.Tensor:
    """The Parameter or buffer in the slot: modules that share a weight hold the same one."""
    module, name, is_parameter = slot
    return (module._parameters if is_parameter else module._buffers)[name]


def _get(slot) -> torch.Tensor:
    return _holder(slot).data


def _set(slot, tensor: torch.Tensor) -> None:
    module, name, is_parameter = slot
    if is_parameter:
        parameter = module._parameters[name]
        if torch._has_compatible_shallow_copy_type(parameter, tensor):
            parameter.data = tensor  # keeps the Parameter object, as nn.Module.to does
        else:  # e.g. CPU -> meta: a new Parameter, again as nn.Module.to does
            module._parameters[name] = nn.Parameter(tensor, parameter.requires_grad)
    else:
        module._buffers[name] = tensor


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in pinned memory if it is in CPU memory, so its copies to a CUDA device run
    asynchronously; PyTorch pins only CPU tensors (one already on a GPU stays as it is)."""
    if tensor.device.type != "cpu" or tensor.is_pinned():
        return tensor
    return tensor.pin_memory()


class BlockSwap:
    """Streams the weights of the first ``count`` layers to ``device`` one layer ahead.

    The model's forward calls :meth:`fetch` before layer i and :meth:`release` after it. Between
    calls the swapped layers' tensors are their offload copies (pinned when the device is CUDA
    and they are in CPU memory, so copies run asynchronously); during layer i its tensors are
    device copies, and layer i+1's copy is already made (on CUDA, in flight on a side stream).
    At most two swapped layers are on the device at once.
    """

    def __init__(self, layers: list[list[nn.Module]], count: int, device: torch.device) -> None:
        self.device = device
        self.count = count
        self.slots = [
            _tensor_slots(module for block in layer for module in block.modules())
            for layer in layers[:count]
        ]
        self.offloaded = [[_get(slot) for slot in slots] for slots in self.slots]
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.offloaded = [[_pinned(t) for t in tensors] for tensors in self.offloaded]
            for slots, tensors in zip(self.slots, self.offloaded):
                for slot, tensor in zip(slots, tensors):
                    _set(slot, tensor)
            self.copy_stream = torch.cuda.Stream(device)
        self._in_flight: dict[int, tuple[list[torch.Tensor], torch.cuda.Event | None]] = {}
        self.on_device: set[int] = set()
        self.peak_layers_on_device = 0

    def swapped_modules(self) -> set[int]:
        """Ids of every module whose tensors this swap owns."""
        return {id(module) for slots in self.slots for module, _, _ in slots}

    def _prefetch(self, index: int) -> None:
        if index >= self.count or index in self._in_flight:
            return
        if self.cuda:
            with torch.cuda.stream(self.copy_stream):
                copies = [t.to(self.device, non_blocking=True) for t in self.offloaded[index]]
                ready = torch.cuda.Event()
                ready.record(self.copy_stream)
        else:  # MPS, XPU: a plain copy; on the CPU a fresh one, so the CPU runs the same path
            copies = [t.to(self.device, copy=True) for t in self.offloaded[index]]
            ready = None
        self._in_flight[index] = (copies, ready)
        self.on_device.add(index)
        self.peak_layers_on_device = max(self.peak_layers_on_device, len(self.on_device))

    def fetch(self, index: int) -> None:
        """Layer ``index``'s weights onto the device (waiting for its copy), and the next
        layer's copy started."""
        if index >= self.count:
            return
        self._prefetch(index)
        copies, ready = self._in_flight.pop(index)
        if ready is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(ready)
            for tensor in copies:  # freed copies are reused only after this layer's kernels ran
                tensor.record_stream(compute)
        for slot, tensor in zip(self.slots[index], copies):
            _set(slot, tensor)
        self._prefetch(index + 1)

    def release(self, index: int) -> None:
        """Layer ``index``'s tensors back to their offload copies; the device copies are freed."""
        if index >= self.count:
            return
        for slot, tensor in zip(self.slots[index], self.offloaded[index]):
            _set(slot, tensor)
        self.on_device.discard(index)

    def restore(self) -> None:
        """Every swapped tensor back to its offload copy, in-flight copies dropped: the state
        after a forward that stopped between fetch and release (out of memory, interrupt)."""
        for index in range(self.count):
            self.release(index)
        self._in_flight.clear()


def check_block_swap(model: nn.Module, blocks: int) -> int:
    """``blocks`` if the model has that many layers to swap, else an :class:`InputError`."""
    layers = len(stream_layers(model))
    if not 0 <= blocks <= layers:
        raise InputError(
            "block_swap",
            f"{blocks} blocks to swap in a model of {layers} blocks",
            f"use 0 (off) to {layers}",
        )
    return blocks


def enable_block_swap(
    model: nn.Module, blocks: int, device: torch.device | str
) -> BlockSwap | None:
    """Stream the first ``blocks`` layers of ``model`` to ``device`` during its forward; 0 turns
    block swap off. Call :func:`place` afterwards to move the other weights."""
    check_block_swap(model, blocks)
    layers = stream_layers(model)
    model.weight_streamer = BlockSwap(layers, blocks, torch.device(device)) if blocks else None
    return model.weight_streamer


def device_bytes(model: nn.Module, swapped: int = 0) -> int:
    """Bytes of weights ``model`` holds on its compute device during a forward with its first
    ``swapped`` layers block-swapped: the resident tensors plus the two largest swapped layers,
    the most a :class:`BlockSwap` has in flight. A weight two modules share (an encoder's output
    head tied to its embedding) counts once, as it moves once."""
    layers = stream_layers(model)[:swapped] if swapped else []
    streamed = [[m for block in layer for m in block.modules()] for layer in layers]
    skipped = {id(module) for modules in streamed for module in modules}

    def size(modules) -> int:
        held = {id(_holder(slot)): _get(slot) for slot in _tensor_slots(modules)}
        return sum(tensor.numel() * tensor.element_size() for tensor in held.values())

    resident = size(module for module in model.modules() if id(module) not in skipped)
    return resident + sum(sorted((size(modules) for modules in streamed), reverse=True)[:2])


def place(model: nn.Module, device: torch.device | str) -> None:
    """Move every weight of ``model`` to ``device`` except those a block swap streams."""
    streamer = getattr(model, "weight_streamer", None)
    skipped = streamer.swapped_modules() if streamer is not None else set()
    resident = [module for module in model.modules() if id(module) not in skipped]
    for slot in _tensor_slots(resident):
        _set(slot, _get(slot).to(device))


ReserveMemory = Callable[[torch.device, int], None]
"""Called with a device and a byte count before the pack puts that much there: a host frees room
(ComfyUI unloads its own models), since the pack's models live outside its model management."""


def rest_on(model: nn.Module, device: torch.device | str, reserve: ReserveMemory | None) -> None:
    """``model``'s weights onto ``device``, where they wait between uses, with ``reserve`` asked
    for them first unless they are all there already: a loader with ``offload`` off keeps its
    model on the GPU from the load on, and must make room for it like any later visit."""
    device = torch.device(device)
    tensors = [_get(slot) for slot in _tensor_slots(model.modules())]
    there = all(
        t.device.type == device.type and device.index in (None, t.device.index) for t in tensors
    )
    if reserve is not None and not there:
        reserve(device, device_bytes(model))
    place(model, device)


@contextmanager
def visiting(
    model: nn.Module,
    compute_device: torch.device | str,
    rest_device: torch.device | str,
    reserve: ReserveMemory | None = None,
    working_bytes: int = 0,
) -> Iterator[nn.Module]:
    """``model`` on ``compute_device`` for the block, then back on ``rest_device``: a text encoder
    or VAE used once per render must not hold GPU memory while the transformer samples. Before
    it moves, ``reserve`` is asked for its weights (unless they already rest there) plus the
    ``working_bytes`` its activations and outputs take. A move that runs out of memory part-way
    puts the weights already moved back too."""
    compute_device, rest_device = torch.device(compute_device), torch.device(rest_device)
    if reserve is not None:
        weights = device_bytes(model) if compute_device != rest_device else 0
        reserve(compute_device, weights + working_bytes)
    try:
        place(model, compute_device)
        yield model
    finally:
        if compute_device != rest_device:
            place(model, rest_device)
