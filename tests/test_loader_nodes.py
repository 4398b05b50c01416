"""Loader nodes: files come from the models folder, replaced files are reloaded, and the audio
loader opens MMAudio VAE + vocoder files (separate or combined) through the codec."""

from __future__ import annotations

import os
import time

import pytest
import torch
from codec_helpers import TINY_AUDIO, TINY_VOCODER, write_tiny_mmaudio
from safetensors.torch import save_file
from skyreels_pack import NODE_CLASS_MAPPINGS

import skyreels_core.codecs.mmaudio as mmaudio
from skyreels_core.errors import InputError

AUDIO_LOADER = NODE_CLASS_MAPPINGS["SkyReelsV4AudioVAELoader"]
MODEL_LOADER = NODE_CLASS_MAPPINGS["SkyReelsV4ModelLoader"]


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("SKYREELS_MODELS_DIR", str(tmp_path))
    (tmp_path / "audio_vae").mkdir()
    return tmp_path


@pytest.fixture
def tiny_audio_files(models, monkeypatch):
    vae, vocoder = write_tiny_mmaudio(models / "audio_vae")
    # The node reads the shipped 44.1 kHz configs; the tiny ones keep the test small.
    tiny = {"mmaudio_44k_vae.json": TINY_AUDIO, "mmaudio_44k_vocoder.json": TINY_VOCODER}
    monkeypatch.setattr(mmaudio, "_config", lambda name: tiny[name])
    return vae, vocoder


def test_audio_loader_lists_and_opens_mmaudio_files(tiny_audio_files):
    vae, vocoder = tiny_audio_files
    choices = AUDIO_LOADER.INPUT_TYPES()["required"]
    assert choices["vae_name"][0][1:] == [
        "combined.safetensors",
        "vae.safetensors",
        "vocoder.safetensors",
    ]
    separate = AUDIO_LOADER().load("vae.safetensors", "vocoder.safetensors", "fp32")[0]
    combined = AUDIO_LOADER().load("combined.safetensors", choices["vocoder_name"][0][0], "fp32")[0]
    latents = torch.randn(1, 40, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = vocoder(vae.decode(latents / 0.417).sample).sample
    for codec in (separate, combined):
        assert (codec.decode(latents) - expected).abs().max() < 1e-5


def test_cancel_stops_a_long_sounds_decode_between_its_vocoder_chunks(
    tiny_audio_files, monkeypatch
):
    """A minutes-long Video to Audio sound vocodes chunk by chunk for minutes (hours on a CPU):
    the loaded codec asks the host's Cancel between chunks."""
    from skyreels_pack.nodes import host

    class Cancelled(Exception):
        pass

    def cancel():
        raise Cancelled

    monkeypatch.setattr(host, "check_interrupt", cancel)
    monkeypatch.setattr(mmaudio, "VOCODE_CHUNK_FRAMES", 2)
    in_vae = AUDIO_LOADER.INPUT_TYPES()["required"]["vocoder_name"][0][0]
    codec = AUDIO_LOADER().load("combined.safetensors", in_vae, "fp32")[0]
    chunks = []
    codec.vocoder.register_forward_hook(lambda *_: chunks.append(1))
    with pytest.raises(Cancelled):
        codec.decode(torch.randn(1, 40, 5))
    assert chunks == [1]


def test_a_replaced_checkpoint_is_reloaded_an_unchanged_one_is_not(models):
    folder = models / "diffusion_models"
    folder.mkdir()
    path = folder / "model.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    first = MODEL_LOADER.IS_CHANGED(model_name="model.safetensors", dtype="auto")
    assert MODEL_LOADER.IS_CHANGED(model_name="model.safetensors", dtype="auto") == first
    save_file({"x": torch.zeros(3)}, str(path))
    later = time.time() + 5
    os.utime(path, (later, later))
    assert MODEL_LOADER.IS_CHANGED(model_name="model.safetensors", dtype="auto") != first
    missing = MODEL_LOADER.IS_CHANGED(model_name="gone.safetensors", dtype="auto")
    assert "not found" in missing  # load() then fails with the same clear message


def test_replacing_any_shard_of_a_checkpoint_reloads_it(models):
    folder = models / "diffusion_models"
    folder.mkdir()
    for index in (1, 2):
        save_file(
            {f"x{index}": torch.zeros(2)}, str(folder / f"m-0000{index}-of-00002.safetensors")
        )
    first = MODEL_LOADER.IS_CHANGED(model_name="m-00001-of-00002.safetensors", dtype="auto")
    later = time.time() + 5
    os.utime(folder / "m-00002-of-00002.safetensors", (later, later))
    assert MODEL_LOADER.IS_CHANGED(model_name="m-00001-of-00002.safetensors", dtype="auto") != first
    (folder / "m-00002-of-00002.safetensors").unlink()
    missing = MODEL_LOADER.IS_CHANGED(model_name="m-00001-of-00002.safetensors", dtype="auto")
    assert "m-00002-of-00002.safetensors" in missing and "not beside it" in missing


def test_an_fp8_file_stays_in_8_bits_under_auto_and_widens_when_asked(models):
    from skyreels_core.demo import bundle
    from skyreels_core.loading import load_model, save_model
    from skyreels_core.offload import Float8Linear, store_linears_in_fp8

    model = load_model(bundle.model_path())
    store_linears_in_fp8(model, torch.float32)
    (models / "diffusion_models").mkdir()
    save_model(model, models / "diffusion_models" / "demo_fp8_scaled.safetensors")
    q = model.blocks[0].self_attn.q
    kept = MODEL_LOADER().load("demo_fp8_scaled.safetensors", "auto", "sdpa")[0].module
    assert isinstance(kept.blocks[0].self_attn.q, Float8Linear)
    assert torch.equal(
        kept.blocks[0].self_attn.q.weight.view(torch.uint8), q.weight.view(torch.uint8)
    )
    wide = MODEL_LOADER().load("demo_fp8_scaled.safetensors", "fp32", "sdpa")[0].module
    assert type(wide.blocks[0].self_attn.q) is torch.nn.Linear
    assert torch.equal(wide.blocks[0].self_attn.q.weight, q.weight.float() * q.weight_scale)


def test_a_device_without_float8_widens_an_fp8_file_under_auto_and_refuses_fp8_storage(
    models, monkeypatch
):
    """An Apple GPU's torch held no float8 tensors ("Trying to convert Float8_e4m3fn to the MPS
    backend"): there an fp8 file loads widened under auto, as a bf16 one would, and fp8_e4m3fn
    is refused when the model loads, naming the dtype, not at the sampler's first step."""
    from skyreels_core import runtime
    from skyreels_core.demo import bundle
    from skyreels_core.loading import load_model, save_model
    from skyreels_core.offload import store_linears_in_fp8

    model = load_model(bundle.model_path())
    store_linears_in_fp8(model, torch.float32)
    (models / "diffusion_models").mkdir()
    save_model(model, models / "diffusion_models" / "demo_fp8_scaled.safetensors")
    q = model.blocks[0].self_attn.q
    assert runtime.holds_float8("cpu")  # this torch keeps float8 on the CPU
    monkeypatch.setattr(runtime, "holds_float8", lambda device: False)
    wide = MODEL_LOADER().load("demo_fp8_scaled.safetensors", "auto", "sdpa")[0].module
    assert type(wide.blocks[0].self_attn.q) is torch.nn.Linear
    assert torch.equal(wide.blocks[0].self_attn.q.weight, q.weight.float() * q.weight_scale)
    with pytest.raises(InputError, match=r"^dtype: torch .* keeps no float8 weights on this cpu"):
        MODEL_LOADER().load(bundle.BUNDLED, "fp8_e4m3fn", "sdpa")
    bf16 = MODEL_LOADER().load(bundle.BUNDLED, "bf16", "sdpa")[0].module
    assert bf16.blocks[0].self_attn.q.weight.dtype == torch.bfloat16


def test_the_float8_probe_answers_per_device_from_what_torch_does(monkeypatch):
    """The probe converts a tensor on the device to each float8 format the loader keeps, and
    takes torch's refusal (a TypeError on MPS, a RuntimeError where a kernel is missing) as no,
    rather than letting either take the model load down."""
    from skyreels_core import runtime

    refused = []
    real_to = torch.Tensor.to

    def refusing_to(self, *args, **kwargs):
        if torch.float8_e5m2 in args:
            refused.append(args)
            raise TypeError("Trying to convert Float8_e5m2 to the MPS backend")
        return real_to(self, *args, **kwargs)

    def unsupported_to(self, *args, **kwargs):
        if torch.float8_e4m3fn in args:
            raise RuntimeError("\"copy_\" not implemented for 'Float8_e4m3fn'")
        return real_to(self, *args, **kwargs)

    runtime.holds_float8.cache_clear()
    try:
        assert runtime.holds_float8("cpu")
        runtime.holds_float8.cache_clear()
        monkeypatch.setattr(torch.Tensor, "to", refusing_to)
        assert not runtime.holds_float8("cpu") and refused
        runtime.holds_float8.cache_clear()
        monkeypatch.setattr(torch.Tensor, "to", unsupported_to)  # a backend's other refusal
        assert not runtime.holds_float8("cpu")
    finally:
        runtime.holds_float8.cache_clear()


def test_lora_node_lists_the_loras_folder_and_the_sampler_renders_with_it(models):
    """Chained Load LoRA nodes change what the Sampler node renders, strength 0 changes nothing,
    and the loaded model the chain starts from renders as before."""
    from skyreels_pack import NODE_CLASS_MAPPINGS as NODES

    from skyreels_core import masks
    from skyreels_core.demo import bundle
    from skyreels_core.types import TextEncoding

    model = MODEL_LOADER().load(bundle.BUNDLED, "fp32", "sdpa")[0]
    linears = [n for n, m in model.module.named_modules() if isinstance(m, torch.nn.Linear)]
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name in linears:
        layer = model.module.get_submodule(name)
        state[f"{name}.lora_A.weight"] = torch.randn(2, layer.in_features, generator=generator)
        state[f"{name}.lora_B.weight"] = torch.randn(layer.out_features, 2, generator=generator)
    (models / "loras" / "styles").mkdir(parents=True)
    save_file(
        {k: v * 0.05 for k, v in state.items()}, str(models / "loras" / "styles" / "a.safetensors")
    )
    lora_node = NODES["SkyReelsV4LoraLoader"]
    listed = lora_node.INPUT_TYPES()["required"]["lora_name"][0]
    assert listed == [bundle.BUNDLED_LORA, "styles/a.safetensors"]

    def render(loaded):
        text = TextEncoding(torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(1)),
                            torch.ones(1, 4, dtype=torch.bool))  # fmt: skip
        condition = masks.text_to_video(bundle.video_codec(), 5, 32, 32)
        return NODES["SkyReelsV4Sampler"]().sample(
            loaded, text, condition, seed=3, steps=2, shift=3.0, solver="euler",
            video_guidance=1.0, audio_guidance=1.0, fps=16.0,
        )["result"][0]  # fmt: skip

    base = render(model)
    styled = lora_node().load(lora_node().load(model, "styles/a.safetensors", 0.5)[0],
                              "styles/a.safetensors", 0.5)[0]  # fmt: skip
    once = lora_node().load(model, "styles/a.safetensors", 1.0)[0]
    off = lora_node().load(model, "styles/a.safetensors", 0.0)[0]
    assert len(styled.loras) == 2 and model.loras == ()
    torch.testing.assert_close(render(styled).video, render(once).video, atol=1e-4, rtol=0)
    assert (render(once).video - base.video).abs().mean() > 0.05
    assert (render(once).audio - base.audio).abs().mean() > 0.01
    assert torch.equal(render(off).video, base.video)
    assert torch.equal(render(model).video, base.video)
    with pytest.raises(InputError, match="lora"):
        lora_node().load(model, "../diffusion_models/x.safetensors", 1.0)


def test_block_swap_streams_from_cpu_memory_when_comfyui_keeps_models_on_the_gpu(monkeypatch):
    """--highvram / --gpu-only make ComfyUI's offload device the GPU: the model rests there, but
    with blocks to swap it rests in CPU memory, where they stream from."""
    from skyreels_pack.nodes import host

    from skyreels_core.demo import bundle

    monkeypatch.setattr(host, "offload_device", lambda: torch.device("meta"))  # the GPU
    kept = MODEL_LOADER().load(bundle.BUNDLED, "fp32", "sdpa")[0]
    assert kept.offload_device.type == "meta"
    assert {p.device.type for p in kept.module.parameters()} == {"meta"}
    swapped = MODEL_LOADER().load(bundle.BUNDLED, "fp32", "sdpa", block_swap=1)[0]
    assert swapped.offload_device.type == "cpu"
    assert {p.device.type for p in swapped.module.parameters()} == {"cpu"}
    with swapped.on(host.torch_device()) as module:
        assert module.weight_streamer.count == 1


def test_the_hidden_layer_widget_and_text_encode_images_and_video_reach_the_encoder():
    """Load Text Encoder's hidden_layer picks the features (not the last layer whatever the
    widget says), and Text Encode hands its images and video frames to the MLLM."""
    from skyreels_core.demo import bundle
    from skyreels_core.encoder import MLLMEncoder

    loader = NODE_CLASS_MAPPINGS["SkyReelsV4TextEncoderLoader"]()
    encode = NODE_CLASS_MAPPINGS["SkyReelsV4TextEncode"]().encode
    middle = loader.load(bundle.BUNDLED, "fp32", 1)[0]
    last = loader.load(bundle.BUNDLED, "fp32", -1)[0]
    assert (middle.hidden_layer, last.hidden_layer) == (1, -1)
    direct = MLLMEncoder.from_folder(bundle.text_encoder_dir(), dtype=torch.float32, hidden_layer=1)
    prompt = "a red circle bounces on the floor"
    features = encode(middle, prompt)[0].features
    torch.testing.assert_close(features, direct.encode(prompt).features)
    assert (features - encode(last, prompt)[0].features).abs().max() > 1e-3
    image, video = torch.rand(1, 64, 64, 3), torch.rand(5, 64, 64, 3)
    both = encode(middle, prompt, images=image, video=video)[0].features
    torch.testing.assert_close(both, direct.encode(prompt, images=image, video=video).features)
    assert both.shape[1] > encode(middle, prompt, images=image)[0].features.shape[1]


def test_load_text_encoder_keeps_bf16_on_cards_the_model_loads_in_fp32(monkeypatch):
    """On a card before Ampere auto loads the model in fp32 (bf16 attention there builds the
    full score matrix); a text encoder's weights fill the card instead, so it stays bf16
    (a 7B in fp32: 33 GB, past a 24 GB Titan RTX, which encoded it in bf16 before)."""
    from types import SimpleNamespace

    from skyreels_pack.nodes import host

    from skyreels_core.demo import bundle

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(major=7))
    monkeypatch.setattr(host, "torch_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(host, "offload_device", lambda: torch.device("cpu"))
    loaded = []
    from skyreels_core.encoder import MLLMEncoder

    monkeypatch.setattr(
        MLLMEncoder, "from_folder", lambda folder, **options: loaded.append(options)
    )
    NODE_CLASS_MAPPINGS["SkyReelsV4TextEncoderLoader"]().load(bundle.BUNDLED, "auto", -1)
    assert loaded[0]["dtype"] == torch.bfloat16


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp8_e4m3fn"])
def test_models_read_onto_the_gpu_ask_for_their_room_first(monkeypatch, dtype):
    """Where the host keeps models on the GPU (--highvram, --gpu-only) Load Model and Load
    Refiner read their weights straight onto it, and never asked it for room: asked now, for
    the bytes the weights take ("meta" stands in for the GPU)."""
    from skyreels_pack.nodes import host

    from skyreels_core.demo import bundle
    from skyreels_core.offload import device_bytes

    asked = []
    monkeypatch.setattr(host, "offload_device", lambda: torch.device("meta"))
    monkeypatch.setattr(host, "reserve", lambda device, size: asked.append((device, size)))
    loaded = NODE_CLASS_MAPPINGS["SkyReelsV4ModelLoader"]().load(bundle.BUNDLED, dtype, "sdpa")[0]
    assert asked == [(torch.device("meta"), device_bytes(loaded.module))]
    if dtype == "fp8_e4m3fn":
        return
    asked.clear()
    refiner = NODE_CLASS_MAPPINGS["SkyReelsV4RefinerLoader"]().load(bundle.BUNDLED, dtype)[0]
    assert asked == [(torch.device("meta"), device_bytes(refiner))]


def test_the_offload_toggle_rests_encoder_and_vaes_where_the_host_says(
    tiny_audio_files, monkeypatch
):
    """offload on: the text encoder's and the audio VAE's weights rest on the host's offload
    device between uses ("meta" stands in for the CPU beside a GPU); off: where they compute.
    Were the toggle ignored, the weights would sit in GPU memory while the transformer samples."""
    from skyreels_pack.nodes import host

    from skyreels_core.demo import bundle

    monkeypatch.setattr(host, "offload_device", lambda: torch.device("meta"))
    text = NODE_CLASS_MAPPINGS["SkyReelsV4TextEncoderLoader"]()
    resting = text.load(bundle.BUNDLED, "fp32", -1, offload=True)[0]
    assert resting.offload_device.type == "meta"
    assert {p.device.type for p in resting.model.parameters()} == {"meta"}
    kept = text.load(bundle.BUNDLED, "fp32", -1, offload=False)[0]
    assert kept.offload_device.type == "cpu"
    assert {p.device.type for p in kept.model.parameters()} == {"cpu"}
    audio = AUDIO_LOADER().load("vae.safetensors", "vocoder.safetensors", "fp32", offload=True)[0]
    assert audio.offload_device.type == "meta"
    assert {p.device.type for p in audio.vae.parameters()} == {"meta"}
    on = AUDIO_LOADER().load("vae.safetensors", "vocoder.safetensors", "fp32", offload=False)[0]
    assert {p.device.type for p in on.vocoder.parameters()} == {"cpu"}


def test_the_hidden_layer_widget_defaults_to_the_layer_the_library_encodes_with():
    """A fresh Load Text Encoder node encodes as the library, the demo CLI and the training
    scripts do: the last hidden layer (-1). A default of 0 would hand the model the embedding
    layer's features, a prompt it was never trained to read."""
    import inspect

    from skyreels_core.encoder import MLLMEncoder

    spec = NODE_CLASS_MAPPINGS["SkyReelsV4TextEncoderLoader"].INPUT_TYPES()["required"]
    for method in (MLLMEncoder.__init__, MLLMEncoder.from_folder):
        assert inspect.signature(method).parameters["hidden_layer"].default == -1
    assert spec["hidden_layer"][1]["default"] == -1
