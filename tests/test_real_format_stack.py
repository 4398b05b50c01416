"""Every workflow on files in the real models' formats, picked from the host's model folders: a
SkyReels-V4 checkpoint with Wan 2.1's 16 video and MMAudio's 40 audio channels, a Qwen2.5-VL
folder, the original-layout Wan 2.1 VAE, MMAudio's VAE + vocoder in one file and a refiner (tiny
shapes, random weights).

The demo codecs forgive what the real ones do not (MMAudio encodes mono only and whole tokens only;
the Wan VAE is causal in time): this is where a workflow that runs on the demo model but not on
real weights shows up. Random weights render noise, so the checks are the saved clips' shapes and
sound, and the clear errors where a demo-only file meets the real stack. A few run with every
loader in half precision, as GPU users load them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest
import torch
from codec_helpers import TINY, TINY_AUDIO, TINY_VOCODER, write_tiny_mmaudio, write_tiny_wan_vae
from skyreels_pack import NODE_CLASS_MAPPINGS
from test_workflows import ASSETS, OBJECT_INFO, ROOT, SAVED_CLIPS, WORKFLOWS
from workflow_tools import core_shims, run_api_prompt

import skyreels_core.codecs.mmaudio as mmaudio
import skyreels_core.codecs.wan_vae as wan_vae
from skyreels_core.codecs import audio_token_count
from skyreels_core.config import ModelConfig
from skyreels_core.demo import bundle
from skyreels_core.encoder import create_tiny_encoder_folder
from skyreels_core.errors import InputError
from skyreels_core.loading import save_model
from skyreels_core.mmdit import DualStreamMMDiT
from skyreels_core.refiner import RefinerConfig, RefinerDiT, save_refiner
from skyreels_core.runtime import AudioRate
from skyreels_core.workflow_format import ui_to_api

# The tiny MMAudio's token: 128 samples (hop 64, one 2x downsampling), where the 44k one has 1024.
TINY_AUDIO_RATE = AudioRate(sample_rate=44100, samples_per_token=128)
FILES = {
    "SkyReelsV4ModelLoader": {"model_name": "skyreels_v4_tiny.safetensors"},
    "SkyReelsV4TextEncoderLoader": {"encoder": "qwen2_5_vl_tiny"},
    "SkyReelsV4VideoVAELoader": {"vae_name": "wan_2.1_vae_tiny.safetensors"},
    "SkyReelsV4AudioVAELoader": {"vae_name": "combined.safetensors"},
    "SkyReelsV4RefinerLoader": {"refiner_name": "skyreels_v4_refiner_tiny.safetensors"},
}
# Files made by or for the demo model, which the real stack must refuse by name.
DEMO_ONLY = {"lora_style": "lora_name", "refine_saved_take": "av_latent"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for folder in ("diffusion_models", "text_encoders", "vae", "audio_vae", "skyreels_refiner"):
        (root / folder).mkdir()
    text_dim = 64
    create_tiny_encoder_folder(root / "text_encoders" / "qwen2_5_vl_tiny", hidden_size=text_dim)
    torch.manual_seed(0)
    config = ModelConfig(
        name="tiny-real-channels", dim=32, num_heads=2, ffn_dim=64, num_dual_blocks=1,
        num_single_blocks=1, text_dim=text_dim, video_latent_channels=16, audio_latent_channels=40,
    )  # fmt: skip
    save_model(
        DualStreamMMDiT(config),
        root / "diffusion_models" / FILES["SkyReelsV4ModelLoader"]["model_name"],
    )
    refiner = RefinerConfig(
        name="tiny-real-channels", dim=32, num_heads=2, ffn_dim=64, num_blocks=1
    )
    save_refiner(
        RefinerDiT(refiner),
        root / "skyreels_refiner" / FILES["SkyReelsV4RefinerLoader"]["refiner_name"],
    )
    write_tiny_wan_vae(root / "vae" / FILES["SkyReelsV4VideoVAELoader"]["vae_name"])
    write_tiny_mmaudio(root / "audio_vae")
    return root


@pytest.fixture
def real_stack(models, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(input, output) folders, the model folders holding the real-format files."""
    inputs, output = tmp_path / "input", tmp_path / "output"
    shutil.copytree(ASSETS, inputs)
    monkeypatch.setenv("SKYREELS_INPUT_DIR", str(inputs))
    monkeypatch.setenv("SKYREELS_OUTPUT_DIR", str(output))
    monkeypatch.setenv("SKYREELS_MODELS_DIR", str(models))
    # The loaders read the shipped full-size configs; these files are the tiny ones.
    tiny = {"mmaudio_44k_vae.json": TINY_AUDIO, "mmaudio_44k_vocoder.json": TINY_VOCODER}
    monkeypatch.setattr(mmaudio, "_config", lambda name: tiny[name])
    config = tmp_path / "wan_vae_tiny.json"
    config.write_text(json.dumps(TINY))
    monkeypatch.setattr(wan_vae, "CONFIG", config)
    monkeypatch.setattr(bundle, "MMAUDIO_RATE", TINY_AUDIO_RATE)
    return inputs, output


def _real_prompt(path: Path) -> tuple[dict, dict]:
    """(the UI workflow, its API prompt with every loader on the real-format files)."""
    workflow = json.loads(path.read_text())
    prompt = ui_to_api(workflow, OBJECT_INFO)
    for node in prompt.values():
        node["inputs"].update(FILES.get(node["class_type"], {}))
    return workflow, prompt


# Every codec and network path once (sound encoded, sound added, refined); fp16 where the sound is
# encoded only, since CPUs run it slowly.
HALF_PRECISION = [
    ("references", "bf16"),
    ("references", "fp16"),
    ("video_to_audio", "bf16"),
    ("low_res_keyframes_refiner", "bf16"),
]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_on_real_format_files(path, real_stack):
    _run_and_check(path, real_stack)


@pytest.mark.parametrize("name, dtype", HALF_PRECISION)
def test_workflow_runs_with_every_loader_in_half_precision(name, dtype, real_stack):
    """The loaders' dtype as a GPU user sets it (the MMAudio mel's FFT once failed in bf16)."""
    _run_and_check(ROOT / "workflows" / f"{name}.json", real_stack, dtype)


def _run_and_check(path: Path, real_stack, dtype: str | None = None) -> None:
    inputs, output = real_stack
    workflow, prompt = _real_prompt(path)
    for node in prompt.values():
        if dtype and "dtype" in node["inputs"]:
            node["inputs"]["dtype"] = dtype
    run = lambda: run_api_prompt(  # noqa: E731
        prompt, NODE_CLASS_MAPPINGS, core_shims(inputs), {"workflow": workflow}
    )
    if path.stem in DEMO_ONLY:
        with pytest.raises(InputError) as error:
            run()
        assert error.value.input_name == DEMO_ONLY[path.stem]
        return
    result = run()
    saved = [v for node in result.values() for v in (node["ui"] or {}).get("skyreels_videos", [])]
    assert len(saved) == 1
    (width, height, frames), _ = SAVED_CLIPS.get(path.stem, ((64, 64, 33), 33))
    with av.open(str(output / saved[0]["subfolder"] / saved[0]["filename"])) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert (video.width, video.height, video.frames) == (width, height, frames)
        video_seconds = float(video.duration * video.time_base)
        assert abs(float(sound.duration * sound.time_base) - video_seconds) < 0.1
        assert sound.rate == TINY_AUDIO_RATE.sample_rate


BUNDLED_LOADERS = {
    "video": ("SkyReelsV4VideoVAELoader", {"vae_name": bundle.BUNDLED, "dtype": "auto"}),
    "audio": ("SkyReelsV4AudioVAELoader", {"vae_name": bundle.BUNDLED, "dtype": "auto"}),
    "model": ("SkyReelsV4ModelLoader", {"model_name": bundle.BUNDLED}),
}


@pytest.mark.parametrize(
    "bundled, wired_to, input_name, taker",
    [
        ("video", "7", "condition", "this model"),  # Mask: Text to Video encodes with it
        ("audio", "8", "audio_vae", "this model"),  # the Sampler, before its first step
        ("model", "8", "condition", "this model"),
        ("video", "9", "av_latent", "this video VAE"),  # Decode Video alone
        ("audio", "10", "av_latent", "this audio VAE"),  # Decode Audio alone
    ],
)
def test_files_of_two_families_wired_together_are_named(
    real_stack, bundled, wired_to, input_name, taker
):
    """The text-to-video workflow on the real-format files with one node given a bundled demo
    file instead: the node that meets the mismatch names its input, where the tensors would
    fail with a bare size mismatch (the demo decoders) or after the render (the Sampler)."""
    inputs, _ = real_stack
    workflow, prompt = _real_prompt(ROOT / "workflows" / "text_to_video.json")
    loader, values = BUNDLED_LOADERS[bundled]
    source = next(k for k, node in prompt.items() if node["class_type"] == loader)
    prompt["99"] = {"class_type": loader, "inputs": {**prompt[source]["inputs"], **values}}
    node = prompt[wired_to]["inputs"]
    for name, link in node.items():
        if isinstance(link, list) and link[0] == source:
            node[name] = ["99", link[1]]
    with pytest.raises(InputError) as error:
        run_api_prompt(prompt, NODE_CLASS_MAPPINGS, core_shims(inputs), {"workflow": workflow})
    assert error.value.input_name == input_name
    assert f"where {taker} takes" in str(error.value) and "files of one family" in str(error.value)


def _script_files(models: Path) -> tuple[Path, Path, Path, Path]:
    """The model, video VAE, audio VAE and encoder ``Pipeline.from_files`` takes, in its order."""
    return (
        models / "diffusion_models" / FILES["SkyReelsV4ModelLoader"]["model_name"],
        models / "vae" / FILES["SkyReelsV4VideoVAELoader"]["vae_name"],
        models / "audio_vae" / FILES["SkyReelsV4AudioVAELoader"]["vae_name"],
        models / "text_encoders" / FILES["SkyReelsV4TextEncoderLoader"]["encoder"],
    )


def test_a_script_renders_with_real_format_files(models, real_stack):
    """README's "Scripting without ComfyUI" with your own weights: ``Pipeline.from_files`` on the
    files the loader nodes read renders a clip with sound of the asked size, length and rate."""
    from skyreels_core.render import Pipeline, RenderRequest, render

    model, video_vae, audio_vae, encoder = _script_files(models)
    pipeline = Pipeline.from_files(model, video_vae, audio_vae, encoder, dtype=torch.float32)
    request = RenderRequest(prompt="a red circle", frames=9, height=32, width=48, fps=24.0, steps=2)
    frames, audio, take = render(pipeline, request)
    assert frames.shape == (9, 32, 48, 3) and take.video.shape == (1, 16, 3, 4, 6)
    tokens = audio_token_count(9, 24.0, 44100, TINY_AUDIO_RATE.samples_per_token)
    assert take.audio.shape == (1, 40, tokens) and audio["sample_rate"] == 44100
    assert audio["waveform"].shape == (1, 1, tokens * TINY_AUDIO_RATE.samples_per_token)
    assert take.fps == 24.0 and frames.std() > 0 and audio["waveform"].std() > 0
    with pytest.raises(InputError) as refused:  # a file of the wrong kind is named by argument
        Pipeline.from_files(model, audio_vae, audio_vae, encoder)
    assert refused.value.input_name == "video_vae"


def test_a_script_keeps_the_models_block_weights_in_fp8_when_asked(models, real_stack):
    """``fp8=True``, for a GPU that cannot hold bf16 weights: the blocks' Linear layers store
    float8 and the render runs on them, close to the same render in full precision."""
    from skyreels_core.offload import Float8Linear
    from skyreels_core.render import Pipeline, RenderRequest, render

    files = _script_files(models)
    request = RenderRequest(frames=5, height=32, width=32, steps=2)
    takes = []
    for fp8 in (False, True):
        pipeline = Pipeline.from_files(*files, dtype=torch.float32, fp8=fp8)
        stored = {
            type(m) for m in pipeline.model.blocks.modules() if isinstance(m, torch.nn.Linear)
        }
        assert (Float8Linear in stored) == fp8
        takes.append(render(pipeline, request)[2])
    full, eight = takes
    assert 0 < (eight.video - full.video).abs().mean() < 0.1 * full.video.abs().mean()


def _tiny_wan(path: Path, text_dim: int = 64) -> Path:
    config = ModelConfig(
        name="tiny-wan", dim=32, num_heads=2, ffn_dim=64, num_dual_blocks=1, num_single_blocks=0,
        text_dim=text_dim, video_latent_channels=16, audio_latent_channels=None, joint_text=False,
        channel_concat_inpainting=False,
    )  # fmt: skip
    save_model(DualStreamMMDiT(config), path)
    return path


def test_a_script_renders_a_video_only_model_without_sound(models, real_stack, tmp_path):
    """A Wan 2.1-shaped checkpoint (no audio stream) needs no audio VAE and renders its frames and
    no sound, where the script would otherwise ask the model for audio tokens it cannot take; a
    model with an audio stream and no audio VAE is refused naming ``audio_vae``."""
    from skyreels_core.render import Pipeline, RenderRequest, render

    skyreels, video_vae, _, encoder = _script_files(models)
    wan = _tiny_wan(tmp_path / "wan.safetensors")
    pipeline = Pipeline.from_files(wan, video_vae, None, encoder, dtype=torch.float32)
    frames, audio, take = render(pipeline, RenderRequest(frames=5, height=32, width=32, steps=1))
    assert frames.shape == (5, 32, 32, 3) and audio is None and take.audio is None
    assert pipeline.audio_codec is None
    with pytest.raises(InputError, match="^audio_vae: the tiny-real-channels model has an audio"):
        Pipeline.from_files(skyreels, video_vae, None, encoder, dtype=torch.float32)


def test_a_script_reads_comfyuis_single_file_qwen_with_a_tokenizer_folder(
    models, real_stack, tmp_path, monkeypatch
):
    """``encoder`` may be the single Qwen2.5-VL file ComfyUI keeps in models/text_encoders, read
    with the tokenizer folder ComfyUI ships (``tokenizer``); without one it is refused naming
    ``tokenizer``, a path that does not exist by its argument and a device this torch cannot
    reach as ``device``, all before the model's weights load. The render's prompt then went through that file: its width (256) is the
    model's text width."""
    import transformers
    from safetensors.torch import save_file
    from test_encoder_file import _release_config, _release_names

    import skyreels_core.loading
    from skyreels_core.render import Pipeline, RenderRequest, render

    tokenizer_folder = create_tiny_encoder_folder(tmp_path / "qwen25_tokenizer")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_folder)
    qwen = transformers.Qwen2_5_VLForConditionalGeneration(
        transformers.Qwen2_5_VLConfig.from_dict(_release_config(tokenizer))
    )
    single = tmp_path / "qwen_2.5_vl_tiny.safetensors"
    save_file(_release_names(qwen.state_dict()), str(single))
    files = (_tiny_wan(tmp_path / "wan.safetensors", 256), _script_files(models)[1], None, single)
    with monkeypatch.context() as patched:
        patched.setattr(skyreels_core.loading, "load_model", None)  # any load would raise
        with pytest.raises(InputError, match="^tokenizer: qwen_2.5_vl_tiny.safetensors is a sin"):
            Pipeline.from_files(*files, dtype=torch.float32)
        patched.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU machine
        for device, refused in (("cuda", "cuda, where this torch"), ("gpu", "'gpu' is not a")):
            with pytest.raises(InputError, match=f"^device: {refused}"):
                Pipeline.from_files(*files, tokenizer=tokenizer_folder, device=device)
        for index, name in enumerate(("model", "video_vae", "audio_vae", "encoder")):
            missing = [*files[:index], tmp_path / "typo", *files[index + 1 :]]
            with pytest.raises(InputError, match=f"^{name}: .*typo does not exist"):
                Pipeline.from_files(*missing, tokenizer=tokenizer_folder, dtype=torch.float32)
    pipeline = Pipeline.from_files(*files, tokenizer=tokenizer_folder, dtype=torch.float32)
    assert pipeline.encoder.encode("a red circle").features.shape[-1] == 256
    frames = render(pipeline, RenderRequest(frames=5, height=32, width=32, steps=1))[0]
    assert frames.shape == (5, 32, 32, 3) and frames.std() > 0


def test_a_script_streams_the_models_layers_with_block_swap(models, real_stack):
    """``block_swap``, for a GPU that holds fewer layers than the model has: the layers stream
    during the render (the Load Model node's BlockSwap) and the render equals the one without;
    more layers than the model has is refused naming ``block_swap``."""
    from skyreels_core.render import Pipeline, RenderRequest, render

    files = _script_files(models)
    request = RenderRequest(frames=5, height=32, width=32, steps=2)
    resident = render(Pipeline.from_files(*files, dtype=torch.float32), request)[2]
    swapped = Pipeline.from_files(*files, dtype=torch.float32, block_swap=2)
    streamers = []
    swapped.model.register_forward_pre_hook(
        lambda module, _: streamers.append(module.weight_streamer)
    )
    take = render(swapped, request)[2]
    assert streamers and all(s is not None and s.count == 2 for s in streamers)
    assert swapped.model.weight_streamer is None  # restored after the render
    torch.testing.assert_close(take.video, resident.video, rtol=0, atol=0)
    torch.testing.assert_close(take.audio, resident.audio, rtol=0, atol=0)
    with pytest.raises(InputError, match="^block_swap: 3 blocks to swap in a model of 2"):
        Pipeline.from_files(*files, dtype=torch.float32, block_swap=3)


def test_a_script_takes_the_load_model_nodes_attention_and_compile(models, real_stack, monkeypatch):
    """``attention`` picks the kernel as Load Model does (``auto``: sdpa on a CPU; one that cannot
    take the dtype refused by name, before the first step); ``compile`` renders through the
    compiled block steps (``torch.compile`` counted here, not run), the same render as eager."""
    from skyreels_core.render import Pipeline, RenderRequest, render

    files = _script_files(models)
    with pytest.raises(InputError, match="^attention: flash_attn takes fp16/bf16 weights"):
        Pipeline.from_files(*files, dtype=torch.float32, attention="flash_attn")
    request = RenderRequest(frames=5, height=32, width=32, steps=2)
    eager = Pipeline.from_files(*files, dtype=torch.float32, attention="auto")
    assert eager.model.attention_backend == "sdpa"
    calls = []

    def counted(step):
        return lambda *args, **kwargs: calls.append(1) or step(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", counted)
    compiled = Pipeline.from_files(*files, dtype=torch.float32, compile=True)
    take = render(compiled, request)[2]
    assert calls  # the render went through the compiled steps
    torch.testing.assert_close(take.video, render(eager, request)[2].video, rtol=0, atol=0)
    calls.clear()
    render(eager, request)
    assert not calls


def test_a_script_renders_on_a_gpu_with_block_swap_and_compiled_blocks(models, real_stack, gpu):
    """``Pipeline.from_files`` as a GPU user calls it: bf16, the fastest attention installed, a
    swapped layer streamed from pinned CPU memory and the blocks compiled by inductor. The take
    is the CPU's float32 render up to bf16 rounding, and the weights rest in CPU memory after."""
    from skyreels_core.render import Pipeline, RenderRequest, render

    files = _script_files(models)
    request = RenderRequest(frames=5, height=32, width=32, steps=2)
    reference = render(Pipeline.from_files(*files, dtype=torch.float32), request)[2]
    pipeline = Pipeline.from_files(*files, device=gpu, block_swap=1, attention="auto", compile=True)
    frames, audio, take = render(pipeline, request)
    assert frames.shape == (5, 32, 32, 3) and audio["waveform"].std() > 0
    error = (take.video.float().cpu() - reference.video).abs().mean()
    assert error < 0.05 * reference.video.abs().mean()
    assert {p.device.type for p in pipeline.model.parameters()} == {"cpu"}
