"""A loaded model together with where its weights live between uses and how its blocks run.

ComfyUI keeps node outputs alive across queue items, so a loaded model must not pin GPU memory
while other nodes (the text encoder, the VAEs) run: weights wait on the offload device and move to
the compute device only inside :meth:`LoadedModel.on`, except the layers a block swap streams
(:mod:`skyreels_core.offload`), which stay in offload memory even then.
"""

from __future__ import annotations

import copy
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn

from .attention import available_backends, require_backend, takes_dtype
from .blocks import BLOCK_STEPS
from .errors import InputError
from .lora import Lora, applied
from .offload import FP8_FORMATS, check_block_swap, enable_block_swap, place, stream_layers


@dataclass(frozen=True)
class AudioRate:
    """The audio codec rate a model was trained with (sets the audio token count of a clip)."""

    sample_rate: int
    samples_per_token: int


MMAUDIO_44K = AudioRate(sample_rate=44100, samples_per_token=1024)


CompiledSteps = dict[tuple[nn.Module, str], Callable[..., Any]]
"""Compiled callables by the (module, attribute) :meth:`LoadedModel.on` sets them as."""


def compile_blocks(
    module: nn.Module, switch: str = "compile", turn_off: str = "set compile to false"
) -> CompiledSteps:
    """``torch.compile`` every stream block's steps. The model's forward calls a block's
    ``attend``/``cross_text``/``feed_forward`` and its exchange module, never ``block.forward``,
    so those are what get compiled; blocks of one shape share their compiled graphs. They are
    returned, not set: a compiled :class:`LoadedModel` sets them only while it renders, so the
    shared module stays eager for every other use (and after a compilation that failed).

    Dynamo skips guards on module hooks by default, so a compiled block would ignore the forward
    hooks that apply a LoRA (:mod:`.lora`) and render without it, silently; with the guards on
    (process-wide, a few more checks per call) the first render with a LoRA recompiles and later
    ones reuse that graph.

    ``switch`` and ``turn_off`` name the option and how to turn it off where the first call finds
    no toolchain: a node's ``compile`` widget, or a command's ``--compile`` flag."""
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    steps: CompiledSteps = {}
    for layer in stream_layers(module):
        for block in layer:
            for step in BLOCK_STEPS:
                steps[block, step] = torch.compile(getattr(block, step))
            if hasattr(block, "av_cross_attn"):  # as nn.Module.compile() sets it
                exchange = block.av_cross_attn
                steps[exchange, "_compiled_call_impl"] = torch.compile(exchange._call_impl)
    return {key: _naming_toolchain_failures(step, switch, turn_off) for key, step in steps.items()}


def toolchain_failures() -> tuple[type[Exception], ...]:
    """What torch.compile raises where it cannot build kernels: inductor's errors arrive as
    BackendCompilerFailed (since torch 2.7 as its InductorError), all but a missing or too old
    Triton's."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import GPUTooOldForTriton, TritonMissing

    return BackendCompilerFailed, TritonMissing, GPUTooOldForTriton


def _naming_toolchain_failures(
    compiled: Callable[..., Any], switch: str, turn_off: str
) -> Callable[..., Any]:
    """``compiled``, raising an :class:`InputError` on ``switch`` where its first call cannot
    build kernels (no C++ compiler on a CPU, no Triton on a GPU): torch's own error names neither
    the input nor the fix, and comes at the first step, after the text was encoded."""
    from torch._inductor.exc import GPUTooOldForTriton

    def step(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except toolchain_failures() as error:
            cause = getattr(error, "inner_exception", error)
            reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
            fix = f"{turn_off}, or install a C++ compiler (CPU) / Triton (GPU)"
            if isinstance(cause, GPUTooOldForTriton):  # no install helps that card
                fix = f"{turn_off}: Triton builds no kernels for this card"
            raise InputError(
                switch, f"torch.compile has no working toolchain here ({reason})", fix
            ) from error

    return step


def check_toolchain(switch: str, turn_off: str) -> None:
    """Compile and run a one-line function, so a host that cannot build kernels is told so,
    naming ``switch``, before a command's minutes of work rather than at its first model step."""
    _naming_toolchain_failures(torch.compile(_doubled), switch, turn_off)(torch.ones(2))


def _doubled(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


@contextmanager
def installed(steps: CompiledSteps) -> Iterator[None]:
    """``steps`` in place of their modules' own for the block (instance attributes shadowing
    the class's methods), then the modules as they were."""
    for (owner, name), step in steps.items():
        setattr(owner, name, step)
    try:
        yield
    finally:
        for owner, name in steps:
            delattr(owner, name)


class LoadedModel:
    """``block_swap`` layers stream from offload memory during each forward (0 = off);
    ``compile`` runs the blocks through ``torch.compile`` (first step pays the compilation);
    the compiled blocks and ``loras`` (file, strength) apply inside :meth:`on` only, so the
    shared module never changes."""

    def __init__(
        self,
        module: nn.Module,
        name: str,
        audio_codec_rate: AudioRate | None = MMAUDIO_44K,
        offload_device: torch.device | str = "cpu",
        *,
        block_swap: int = 0,
        compile: bool = False,
    ) -> None:
        self.module = module.eval().requires_grad_(False)
        self.name = name
        self.audio_codec_rate = audio_codec_rate
        self.offload_device = torch.device(offload_device)
        self.block_swap = check_block_swap(module, block_swap)
        self.loras: tuple[tuple[Lora, float], ...] = ()
        self.compiled_steps = compile_blocks(self.module) if compile else {}

    @property
    def config(self):
        return self.module.config

    @property
    def has_audio(self) -> bool:
        return self.module.config.audio_latent_channels is not None

    def with_lora(self, lora: Lora, strength: float) -> LoadedModel:
        """This model with one more LoRA; the module is shared, not copied."""
        twin = copy.copy(self)
        twin.loras = (*self.loras, (lora, strength))
        return twin

    def lora_bytes(self) -> int:
        """Compute-device bytes of the LoRAs' tensors while the model renders, counted at four
        bytes a value (their largest precision), so planning never counts short."""
        return 4 * sum(lora.numel() for lora, strength in self.loras if strength != 0)

    @contextmanager
    def on(self, device: torch.device | str) -> Iterator[nn.Module]:
        """The module on ``device`` with its LoRAs and compiled steps for the duration of the block
        (its swapped layers streamed there layer by layer), then back to the offload device as
        loaded."""
        device = torch.device(device)
        with applied(self.module, self.loras, device), installed(self.compiled_steps):
            streamer = enable_block_swap(self.module, self.block_swap, device)
            try:
                place(self.module, device)
                yield self.module
            finally:
                if streamer is not None:
                    streamer.restore()
                if device != self.offload_device:
                    place(self.module, self.offload_device)
                self.module.weight_streamer = None


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FP8_STORAGE = "fp8_e4m3fn"  # block weights in fp8, computed in the ``auto`` precision


def keeps_float8(dtype_name: str, file_in_float8: Callable[[], bool], device) -> bool:
    """Whether the model's block weights are stored in float8: asked for (``fp8_e4m3fn``), or
    ``auto`` with a file that ships them so (``file_in_float8``, read only then). A device whose
    torch holds no float8 tensors (Apple's GPU until recent releases: "Trying to convert
    Float8_e4m3fn to the MPS backend") widens a float8 file under ``auto`` and refuses
    ``fp8_e4m3fn`` when the model loads, not at the first step."""
    wanted = dtype_name == FP8_STORAGE or (dtype_name == "auto" and file_in_float8())
    if not wanted or holds_float8(str(torch.device(device))):
        return wanted
    if dtype_name == "auto":
        return False
    raise InputError(
        "dtype",
        f"torch {torch.__version__} keeps no float8 weights on this {torch.device(device).type} "
        "device",
        "choose auto (an fp8 file is widened then), bf16 or fp16",
    )


@cache
def holds_float8(device: str) -> bool:
    """Whether ``device`` holds both float8 formats a model's weights may be kept in: probed
    once, as torch adds them per backend and release."""
    try:
        for fp8 in FP8_FORMATS:
            torch.zeros(1, device=device).to(fp8)
    except (TypeError, RuntimeError):
        return False
    return True


def resolve_dtype(
    name: str, device: torch.device | str, *, weights_dominate: bool = False
) -> torch.dtype:
    """``auto`` is bf16 where the device computes it fast, else fp32 (fp16 overflows in the model).
    A CUDA card before Ampere (RTX 20xx, GTX 16xx, T4, V100) stores bf16 but emulates its math,
    and neither of SDPA's fast attention kernels takes it there: every attention call would build
    its full score matrix (tens of GB at 480p), so those cards get fp32, whose memory-efficient
    kernel they run. Where the weights fill the card, not long attention or convolutions
    (``weights_dominate``: a 7B text encoder reading a prompt), they stay bf16 there too: fp32
    would double them past a 24 GB card. An Apple GPU computes bf16 from macOS 14 on (the rule of
    ComfyUI's own ``should_use_bf16``): fp32 there would double a model that shares its RAM."""
    if name != "auto":
        return DTYPES[name]
    device = torch.device(device)
    if device.type == "mps":
        return torch.bfloat16 if macos_version() >= (14,) else torch.float32
    if device.type != "cuda":
        return torch.float32
    if weights_dominate or torch.version.hip:
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.get_device_properties(device).major >= 8 else torch.float32


def macos_version() -> tuple[int, ...]:
    """The running macOS's version, () elsewhere."""
    release = platform.mac_ver()[0]
    return tuple(int(part) for part in release.split(".")) if release else ()


def resolve_attention(name: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """``auto`` is the fastest backend installed for ``device`` that takes the compute ``dtype``:
    SageAttention's int8 kernels, then FlashAttention (both fp16/bf16 only), then PyTorch's sdpa
    (which itself picks flash/memory-efficient kernels). A chosen backend that cannot take
    ``dtype`` is refused here, at load, not by its library's assertion at the first step."""
    if name == "auto":
        available = available_backends(device)
        return next(
            backend
            for backend in ("sage", "flash_attn", "sdpa")
            if backend in available and takes_dtype(backend, dtype)
        )
    if not takes_dtype(name, dtype):
        dtype_name = next((key for key, value in DTYPES.items() if value == dtype), str(dtype))
        raise InputError(
            "attention",
            f"{name} takes fp16/bf16 weights and the model computes in {dtype_name}",
            "choose sdpa, or dtype bf16/fp16",
        )
    if name in ("sage", "flash_attn"):
        require_backend(name, device)
    return name
