"""Where weights live: fp8 storage within its error bound, block swap with identical outputs,
loader options that are applied and validated."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from model_helpers import inputs, tiny_model
from safetensors.torch import load_file, save_file
from skyreels_pack.nodes.loaders import SkyReelsV4ModelLoader

from skyreels_core.demo import bundle
from skyreels_core.errors import InputError
from skyreels_core.loading import load_model, save_model
from skyreels_core.offload import (
    FP8,
    Float8Linear,
    device_bytes,
    enable_block_swap,
    place,
    quantise_fp8,
    store_linears_in_fp8,
    stream_layers,
)
from skyreels_core.runtime import LoadedModel, resolve_attention


def _run(model, seed=1):
    video, t, text, audio = inputs(model, seed=seed)
    with torch.no_grad():
        return model(video, t, text, audio=audio)


def test_fp8_rounding_stays_within_half_an_e4m3_step():
    weight = torch.randn(64, 48) * torch.logspace(-4, 1, 48)  # normal and subnormal fp8 values
    stored, scale = quantise_fp8(weight)
    assert stored.dtype == FP8 and scale.dtype == torch.float32 and scale.dim() == 0
    error = (stored.float() * scale - weight).abs()
    # 3 mantissa bits: half a step is 2^-4 of |w| for normals; subnormal steps are 2^-9 * scale.
    assert bool((error <= weight.abs() * 2**-4 + scale * 2**-10).all())
    assert stored.float().abs().max() == torch.finfo(FP8).max  # the largest weight is exact
    zero, _ = quantise_fp8(torch.zeros(3, 3))
    assert bool((zero.float() == 0).all())


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_float8_linear_computes_in_the_compute_dtype(compute_dtype):
    linear = torch.nn.Linear(32, 16)
    fp8 = Float8Linear.from_linear(linear, compute_dtype)
    x = torch.randn(5, 32)
    out = fp8(x.to(compute_dtype))
    assert out.dtype == compute_dtype and fp8.weight.dtype == FP8
    bound = (x.abs() @ (linear.weight.abs().T * 2**-4 + fp8.weight_scale * 2**-10)).max()
    tolerance = bound + (0.05 if compute_dtype == torch.bfloat16 else 1e-5)
    assert (out.float() - linear(x)).abs().max() <= tolerance


@pytest.mark.parametrize("largest", [2e-4, 1e-5])
def test_a_small_fp8_layer_keeps_its_weight_in_fp16(largest):
    """A barely trained layer (an exchange projection that starts at zero): its scale is
    subnormal in fp16, or 0, which zeroed the whole weight."""
    linear = torch.nn.Linear(32, 16)
    with torch.no_grad():
        linear.weight.mul_(largest / linear.weight.abs().max())
    fp8 = Float8Linear.from_linear(linear, torch.float16)
    exact = fp8.weight.float() * fp8.weight_scale
    weight = fp8.dequantised_weight()
    assert weight.dtype == torch.float16
    rounding = exact.abs().max() * 2**-11 + 2**-25  # half an fp16 step, subnormal ones too
    assert (weight.float() - exact).abs().max() <= rounding


def test_fp8_model_stores_only_block_linears_and_stays_close():
    model, reference = tiny_model(), _run(tiny_model())
    names = store_linears_in_fp8(model, torch.float32)
    assert names and all(name.split(".")[0].endswith("blocks") for name in names)
    assert all(isinstance(model.get_submodule(name), Float8Linear) for name in names)
    assert (
        type(model.text_embedding[0]) is torch.nn.Linear
    )  # embeddings and heads stay as they were
    out = _run(model)
    for ours, theirs in ((out.video, reference.video), (out.audio, reference.audio)):
        assert (ours - theirs).norm() / theirs.norm() < 0.03


def test_fp8_state_dict_and_checkpoint_round_trip(tmp_path):
    quantised = tiny_model()
    store_linears_in_fp8(quantised, torch.float32)
    expected = _run(quantised)
    save_file(dict(quantised.state_dict()), str(tmp_path / "fp8.safetensors"))
    state = load_file(str(tmp_path / "fp8.safetensors"))
    assert state["blocks.0.ffn.0.weight"].dtype == FP8 and "blocks.0.ffn.0.weight_scale" in state
    fresh = tiny_model(seed=5)
    store_linears_in_fp8(fresh, torch.float32)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(_run(fresh).video, expected.video)
    # Quantising while a full-precision checkpoint is read gives the same model.
    path = save_model(tiny_model(), tmp_path / "fp32.safetensors")
    loaded = load_model(path, fp8=True)
    assert isinstance(loaded.blocks[0].ffn[0], Float8Linear)
    assert torch.equal(_run(loaded).video, expected.video)
    assert torch.equal(_run(loaded).audio, expected.audio)


@pytest.mark.parametrize("blocks", [1, 2])
def test_block_swap_gives_identical_outputs_and_streams_one_layer_ahead(blocks):
    model = tiny_model()
    reference = _run(model)
    swapped_weight = model.blocks[0].self_attn.q.weight
    offloaded = swapped_weight.data_ptr()
    seen = []
    model.blocks[0].self_attn.q.register_forward_pre_hook(
        lambda module, args: seen.append(module.weight.data_ptr())
    )
    loaded = LoadedModel(model, "tiny", block_swap=blocks)
    with loaded.on("cpu") as module:
        out = _run(module)
        streamer = module.weight_streamer
        assert streamer.peak_layers_on_device == blocks  # current + prefetched, never more
    assert torch.equal(out.video, reference.video) and torch.equal(out.audio, reference.audio)
    assert seen and all(pointer != offloaded for pointer in seen)  # ran on a fetched copy
    assert swapped_weight.data_ptr() == offloaded and model.weight_streamer is None


def test_block_swap_keeps_swapped_layers_in_offload_memory():
    model = tiny_model()
    enable_block_swap(model, 1, "meta")  # "meta" stands in for a GPU: resident weights move there
    place(model, "meta")
    first, second = stream_layers(model)
    assert all(p.device.type == "cpu" for block in first for p in block.parameters())
    assert all(p.device.type == "meta" for block in second for p in block.parameters())
    assert model.head.head.weight.device.type == "meta"


def test_each_video_layer_streams_and_quantises_with_the_audio_layer_it_interleaves_with():
    """Video block i runs beside audio block i, so block swap streams them together and fp8
    stores both. Paired with the wrong audio block, the first audio block kept full precision
    (less memory saved) and ran from offload memory while its layer was on the device."""
    model = tiny_model()
    video = [*model.blocks, *model.single_blocks]
    audio = [*model.audio_blocks, *model.audio_single_blocks]
    layers = stream_layers(model)
    assert len(layers) == len(video) == len(audio) == 2
    assert all(
        layer[0] is v and layer[1] is a and len(layer) == 2
        for layer, v, a in zip(layers, video, audio)
    )

    names = store_linears_in_fp8(model, torch.float32)
    for block in audio:
        linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(isinstance(m, Float8Linear) for m in linears)
    every = [m for layer in layers for b in layer for m in b.modules()]
    assert len(names) == sum(isinstance(m, Float8Linear) for m in every)

    model = tiny_model()
    swap = enable_block_swap(model, 1, "meta")
    place(model, "meta")
    owned = swap.swapped_modules()
    assert any(id(m) in owned for m in model.audio_blocks[0].modules())
    assert not any(id(m) in owned for m in model.audio_single_blocks[0].modules())
    assert all(p.device.type == "cpu" for p in model.audio_blocks[0].parameters())
    assert all(p.device.type == "meta" for p in model.audio_single_blocks[0].parameters())


def test_block_swap_streams_to_a_non_cuda_accelerator():
    """On MPS or XPU a swapped layer computes with its weights on that device, like the rest.
    (The forward itself cannot run on "meta": it reads the text mask's values.)"""
    model = tiny_model()
    first = stream_layers(model)[0]
    offloaded = [p.data_ptr() for block in first for p in block.parameters()]
    streamer = enable_block_swap(model, 1, "meta")  # "meta" stands in for mps / xpu
    streamer.fetch(0)  # what the forward calls before the layer runs
    assert {p.device.type for block in first for p in block.parameters()} == {"meta"}
    streamer.release(0)
    assert [p.data_ptr() for block in first for p in block.parameters()] == offloaded


def test_block_swap_pins_only_weights_in_cpu_memory(monkeypatch):
    """PyTorch pins CPU tensors only; weights resting on a GPU are streamed as they are."""
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: None)  # no GPU here
    model = tiny_model().to("meta")  # "meta" stands in for weights resting on the GPU
    streamer = enable_block_swap(model, 1, "cuda")
    assert streamer.count == 1
    assert {p.device.type for p in model.blocks[0].parameters()} == {"meta"}


def test_device_bytes_count_resident_weights_and_two_swapped_layers_in_flight():
    model = tiny_model(num_dual_blocks=2, num_single_blocks=2)
    tensors = [*model.parameters(), *model.buffers()]
    total = sum(t.numel() * t.element_size() for t in tensors)
    assert device_bytes(model) == total
    layers = [
        sum(p.numel() * p.element_size() for block in layer for p in block.parameters())
        for layer in stream_layers(model)
    ]
    assert len(layers) == 4 and device_bytes(model, 2) == total  # both in flight at once
    in_flight = sum(sorted(layers, reverse=True)[:2])
    assert device_bytes(model, 4) == total - sum(layers) + in_flight < total
    store_linears_in_fp8(model, torch.float32)  # fp8 weights count one byte each
    assert device_bytes(model) < total
    tied = torch.nn.ModuleDict({"embed": torch.nn.Embedding(10, 4), "head": torch.nn.Linear(4, 10)})
    tied.head.weight = tied.embed.weight  # an encoder's output head tied to its embedding
    assert device_bytes(tied) == (10 * 4 + 10) * 4  # the shared weight moves, and counts, once


def test_an_interrupted_forward_leaves_the_offload_copies_in_place():
    model = tiny_model()
    offloaded = [p.data_ptr() for p in model.blocks[0].parameters()]

    def interrupt(module, args):
        raise RuntimeError("interrupted")

    handle = model.single_blocks[0].norm.register_forward_pre_hook(interrupt)
    with pytest.raises(RuntimeError, match="interrupted"):
        with LoadedModel(model, "tiny", block_swap=2).on("cpu") as module:
            _run(module)
    handle.remove()
    assert [p.data_ptr() for p in model.blocks[0].parameters()] == offloaded
    assert model.weight_streamer is None


@pytest.mark.parametrize("failing", ["first", "second"])
def test_a_pass_that_runs_out_of_memory_leaves_no_swapped_layer_on_the_device(failing):
    """The sampler retries a batched pass that ran out of memory as two half passes inside the
    same render: the failed pass's current layer and its prefetched next one stayed on the
    device (about 5 GB for a 14B model in bf16) on the card that had just run out. Here the
    first layer (the second's copy then in flight) or the second fails: every swapped tensor is
    back to its offload copy, nothing is in flight, and the retry renders what an unswapped
    model does."""
    model = tiny_model()
    reference = _run(model)
    offloaded = [[p.data_ptr() for p in layer.parameters()] for layer in model.blocks]
    failures = []

    def out_of_memory(module, args):
        if not failures:
            failures.append(module)
            raise torch.OutOfMemoryError("CUDA out of memory")

    norm = model.blocks[0].norm1 if failing == "first" else model.single_blocks[0].norm
    handle = norm.register_forward_pre_hook(out_of_memory)
    with LoadedModel(model, "tiny", block_swap=2).on("cpu") as module:
        with pytest.raises(torch.OutOfMemoryError):
            _run(module)
        streamer = module.weight_streamer
        assert not streamer.on_device and not streamer._in_flight
        assert [[p.data_ptr() for p in layer.parameters()] for layer in model.blocks] == offloaded
        out = _run(module)
    handle.remove()
    assert failures and torch.equal(out.video, reference.video)
    assert torch.equal(out.audio, reference.audio)


def test_bad_block_swap_names_the_input():
    with pytest.raises(InputError, match="block_swap: 3 blocks to swap in a model of 2 blocks"):
        LoadedModel(tiny_model(), "tiny", block_swap=3)


def test_compile_option_compiles_every_block_step_while_the_model_renders(monkeypatch):
    """The compiled steps are set only inside ``on``: the shared module stays eager for others."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda step: compiled.append(step) or step)
    model = tiny_model()
    loaded = LoadedModel(model, "tiny", compile=True)
    blocks = [block for layer in stream_layers(model) for block in layer]
    exchanges = [block.av_cross_attn for block in blocks]
    steps = [(block, name) for block in blocks for name in ("attend", "cross_text", "feed_forward")]
    assert compiled == [
        step
        for block, exchange in zip(blocks, exchanges)
        for step in (block.attend, block.cross_text, block.feed_forward, exchange._call_impl)
    ]
    with loaded.on("cpu"):
        assert all(name in vars(block) for block, name in steps)
        assert all(exchange._compiled_call_impl is not None for exchange in exchanges)
    assert not any(name in vars(block) for block, name in steps)
    assert all(exchange._compiled_call_impl is None for exchange in exchanges)


def _without_triton(error: str):
    """A GPU host's inductor without a working Triton: what its scheduler raises for the device
    (torch._inductor.scheduler.Scheduler.create_backend), standing in on the CPU."""
    import inspect
    from unittest import mock

    import torch._inductor.exc as exc
    import torch._inductor.scheduler

    card = SimpleNamespace(name="NVIDIA GeForce GTX 1080", major=6, minor=1)

    def create_backend(self, device):
        frame = inspect.currentframe()  # where torch's error says it was raised
        if error == "TritonMissing":
            raise exc.TritonMissing(frame)
        raise exc.GPUTooOldForTriton(card, frame)

    return mock.patch.object(torch._inductor.scheduler.Scheduler, "create_backend", create_backend)


@pytest.mark.parametrize("error", ["InvalidCxxCompiler", "TritonMissing", "GPUTooOldForTriton"])
def test_compile_without_a_toolchain_names_the_input_and_leaves_the_model_usable(error):
    """No C++ compiler (a CPU host), no Triton or a card too old for it (a GPU one): torch's error
    at the first step becomes one naming ``compile``, and the same model renders with compile
    off. Triton's two errors are not torch's BackendCompilerFailed. (torch's own
    ``config.patch`` restores its settings; pytest's monkeypatch would delete them on undo.)"""
    import torch._inductor.config

    model = tiny_model()
    reference = _run(model)
    no_compiler = {"cpp.cxx": ("/nonexistent/g++",)}  # a host without a C++ toolchain
    toolchain = (
        torch._inductor.config.patch(no_compiler)
        if error == "InvalidCxxCompiler"
        else _without_triton(error)
    )
    torch._dynamo.reset()  # compiled graphs of earlier tests would not meet the toolchain
    with (
        toolchain,
        pytest.raises(
            InputError,
            match=rf"^compile: torch\.compile has no working toolchain here \({error}: "
            r".*\)\. Fix: set compile to false"
            + (
                ": Triton builds no kernels for this card$"  # installing one would not help
                if error == "GPUTooOldForTriton"
                else r", or install a C\+\+ compiler \(CPU\) / Triton \(GPU\)$"
            ),
        ),
        LoadedModel(model, "tiny", compile=True, block_swap=1).on("cpu") as module,
    ):
        _run(module)
    assert model.weight_streamer is None
    with LoadedModel(model, "tiny").on("cpu") as module:
        out = _run(module)
    assert torch.equal(out.video, reference.video) and torch.equal(out.audio, reference.audio)


def test_attention_auto_picks_an_available_backend():
    assert resolve_attention("auto", "cpu", torch.bfloat16) == "sdpa"
    # An explicit choice the device cannot run is named when the model loads, not at its first
    # attention call after the prompt was encoded.
    with pytest.raises(InputError, match="^attention: sage runs only on CUDA GPUs. Fix: choose"):
        resolve_attention("sage", "cpu", torch.bfloat16)


def test_model_loader_applies_fp8_and_block_swap():
    (loaded,) = SkyReelsV4ModelLoader().load(bundle.BUNDLED, "fp8_e4m3fn", "auto", block_swap=1)
    assert isinstance(loaded.module.blocks[0].ffn[0], Float8Linear)
    assert loaded.module.blocks[0].ffn[0].compute_dtype == torch.float32  # auto on CPU
    assert loaded.block_swap == 1 and loaded.module.attention_backend == "sdpa"


def test_a_render_moves_the_weights_to_its_device_and_back_to_where_they_rest(monkeypatch):
    """Between renders a model's weights wait on its offload device (the CPU here), not pinning
    GPU memory while the text encoder and VAEs run: ``on`` moves them to the render's device
    ("meta" stands in for the GPU) and back after it, and moves nothing back where the render
    ran where they rest."""
    from skyreels_core import runtime

    placed = []
    monkeypatch.setattr(runtime, "place", lambda module, device: placed.append(str(device)))
    loaded = LoadedModel(tiny_model(), "tiny", offload_device="cpu")
    with loaded.on("meta"):
        assert placed == ["meta"]
    assert placed == ["meta", "cpu"]
    placed.clear()
    with loaded.on("cpu"):
        pass
    assert placed == ["cpu"]


def test_a_video_only_model_says_it_has_no_audio_stream():
    """A Wan 2.1 checkpoint loads without an audio stream: the Sampler node asks the loaded
    model, and one that claimed audio would be handed audio latents it has no layers for."""
    from model_helpers import WAN_TINY

    from skyreels_core.mmdit import DualStreamMMDiT

    assert LoadedModel(tiny_model(), "tiny").has_audio
    assert not LoadedModel(DualStreamMMDiT(WAN_TINY), "wan").has_audio
