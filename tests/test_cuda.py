"""What only a CUDA GPU checks: the compiled FlexAttention kernel, block swap's pinned copies on
a side stream, the Wan VAE's tile seams under cuDNN, the demo render on a GPU against the CPU's,
and the working memory the model asks the host for against CUDA's own peak. The CPU tests stand
in for these with the same code on other kernels; these are skipped without a GPU (CI) and run
on a lent machine (bench/README.md records the last run)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from codec_helpers import local_wan_vae
from model_helpers import inputs, tiny_model

from skyreels_core import sparse_attention
from skyreels_core.benchmark.instruments import scaled_preset, step_inputs
from skyreels_core.codecs.tiling import decode_tiled, encode_tiled
from skyreels_core.codecs.wan_vae import WanVideoCodec
from skyreels_core.mmdit import DualStreamMMDiT
from skyreels_core.runtime import LoadedModel


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a.float(), b.float())))


@pytest.mark.parametrize(
    ("dtype", "head_dim", "tolerance"), [(torch.bfloat16, 128, 2e-2), (torch.float32, 64, 1e-4)]
)
@pytest.mark.parametrize("grid", [(8, 8, 8), (5, 9, 10)])  # the second pads partial cubes
def test_compiled_flex_attention_attends_the_cube_pairs_the_gathered_path_does(
    gpu, monkeypatch, dtype, head_dim, tolerance, grid
):
    """On CUDA the refiner's sparse attention runs one compiled FlexAttention kernel (64-token
    tiles, see CUDA_TILES); it must attend exactly the cube pairs the gathered SDPA path attends,
    padded tokens left out, and with every cube kept equal dense attention."""
    compiled = []

    def counted(*args, **kwargs):
        compiled.append(1)
        return kernel(*args, **kwargs)

    kernel = sparse_attention.compiled_flex
    monkeypatch.setattr(sparse_attention, "compiled_flex", counted)
    generator = torch.Generator(gpu).manual_seed(0)
    length = grid[0] * grid[1] * grid[2]
    q, k, v = (torch.randn(1, 2, length, head_dim, generator=generator, device=gpu, dtype=dtype)
               for _ in range(3))  # fmt: skip
    flex = sparse_attention.block_sparse_attention(q, k, v, grid, keep_ratio=0.25)
    every = sparse_attention.block_sparse_attention(q, k, v, grid, keep_ratio=1.0)
    assert len(compiled) == 2 and not sparse_attention.FLEX_FAILED
    torch.testing.assert_close(
        every, F.scaled_dot_product_attention(q, k, v), atol=tolerance, rtol=tolerance
    )
    monkeypatch.setattr(sparse_attention, "FLEX_DEVICE", "gathered")
    gathered = sparse_attention.block_sparse_attention(q, k, v, grid, keep_ratio=0.25)
    assert len(compiled) == 2
    torch.testing.assert_close(flex, gathered, atol=tolerance, rtol=tolerance)
    assert (flex - every).abs().max() > 0.05  # a quarter of the cubes is not all of them


def test_block_swap_streams_pinned_layers_on_a_side_stream_and_equals_the_resident_model(gpu):
    model = tiny_model(num_dual_blocks=2, num_single_blocks=2)
    video, timestep, text, audio = inputs(model)
    there = (video.to(gpu), timestep.to(gpu), text.to(gpu))
    with torch.no_grad(), LoadedModel(model, "tiny").on(gpu) as module:
        resident = module(*there, audio=audio.to(gpu))
    devices = []
    model.blocks[0].self_attn.q.register_forward_pre_hook(
        lambda layer, _: devices.append(layer.weight.device.type)
    )
    with torch.no_grad(), LoadedModel(model, "tiny", block_swap=3).on(gpu) as module:
        streamer = module.weight_streamer
        assert streamer.copy_stream != torch.cuda.current_stream(gpu)
        assert all(t.is_pinned() for tensors in streamer.offloaded for t in tensors)
        assert model.blocks[0].self_attn.q.weight.device.type == "cpu"  # between forwards
        assert model.single_blocks[1].self_attn.q.weight.device.type == "cuda"  # not swapped
        swapped = module(*there, audio=audio.to(gpu))
        assert streamer.peak_layers_on_device == 2
    assert devices == ["cuda"]  # the swapped layer computed on its streamed copy
    assert torch.equal(swapped.video, resident.video) and torch.equal(swapped.audio, resident.audio)
    assert {p.device.type for p in model.parameters()} == {"cpu"}  # all back where they rest


def test_tiled_wan_vae_on_cuda_equals_whole_frames(gpu, monkeypatch):
    """The Wan VAE's tiles on cuDNN's kernels: with context covering the decoder's field, tiled
    equals whole frames (fp32 convolutions; TF32 would round both differently)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    codec = WanVideoCodec(local_wan_vae().to(gpu))
    latents = torch.randn(1, 4, 3, 48, 56, generator=torch.Generator().manual_seed(2))
    whole = codec.decode(latents)
    tiled = decode_tiled(codec, latents, 40, 32)
    assert tiled.shape == whole.shape == (1, 3, 96, 112, 3)
    assert (tiled - whole).abs().max() < 1e-4
    assert (encode_tiled(codec, whole, 40, 32) - codec.encode(whole)).abs().max() < 1e-4
    assert (decode_tiled(codec, latents, 40, 8) - whole).abs().max() > 1e-3  # too little context


def test_the_demo_renders_on_a_gpu_as_on_the_cpu(gpu, monkeypatch):
    """Noise is drawn on the CPU, so a seed gives the same clip on any device: the bundled
    pipeline on the GPU renders the CPU's clip and sound up to float rounding (fp32 throughout:
    cuDNN's TF32 convolutions would round the codecs' and patch embedding's inputs to 10 bits)."""
    from skyreels_core.render import Pipeline, RenderRequest, render

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)

    request = RenderRequest()
    frames_cpu, audio_cpu, take_cpu = render(Pipeline.load(), request)
    frames, audio, take = render(Pipeline.load(device=gpu), request)
    assert frames.shape == frames_cpu.shape == (33, 64, 64, 3)
    assert _psnr(frames.cpu(), frames_cpu) > 35
    sound, sound_cpu = audio["waveform"].cpu(), audio_cpu["waveform"]
    assert sound.shape == sound_cpu.shape
    assert (sound - sound_cpu).norm() < 0.05 * sound_cpu.norm()


@torch.no_grad()
def test_a_steps_cuda_peak_stays_within_the_working_memory_the_model_asks_for(gpu):
    """The Sampler asks the host to free ``activation_bytes`` before sampling: on a GPU it must
    cover the step's real peak, or ComfyUI leaves too little room and the step runs out of
    memory. A 14B preset's shape (head dim 128) at a small width, a 480p-shaped clip in bf16."""
    config = scaled_preset(256, dual=2, single=2)
    model = DualStreamMMDiT(config).to(gpu, torch.bfloat16).eval()
    video, timestep, text, audio = step_inputs(config, 21, 30, 218, 512, width=52)
    there = (video.to(gpu), timestep.to(gpu), text.to(gpu))
    model(*there, audio=audio.to(gpu))  # kernels chosen and workspaces made before the count
    torch.cuda.synchronize(gpu)
    torch.cuda.reset_peak_memory_stats(gpu)
    before = torch.cuda.memory_allocated(gpu)
    model(*there, audio=audio.to(gpu))
    peak = torch.cuda.max_memory_allocated(gpu) - before
    asked = model.activation_bytes([video.shape], 218, 512, 1)
    assert peak <= asked, f"asked {asked / 2**20:.0f} MiB, the step peaked at {peak / 2**20:.0f}"
