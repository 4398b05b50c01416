"""Loader nodes: the dual-stream model, its LoRAs, the MLLM encoder, the video and audio codecs.

Heavy libraries (diffusers, transformers) are imported inside the load functions so that the
host's start-up does not pay for them. Every loader lists the bundled demo files first, so a fresh
install renders without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

import torch

from skyreels_core.demo import bundle
from skyreels_core.errors import InputError
from skyreels_core.loading import checkpoint_shards
from skyreels_core.lora import read_lora
from skyreels_core.paths import fingerprint
from skyreels_core.runtime import (
    DTYPES,
    FP8_STORAGE,
    LoadedModel,
    keeps_float8,
    resolve_attention,
    resolve_dtype,
)

from . import host, link_types

CATEGORY = "SkyReels-V4/loaders"
DTYPE_CHOICES = ["auto", *DTYPES]
DTYPE_INPUT = (
    DTYPE_CHOICES,
    {
        "default": "auto",
        "tooltip": "Weight precision: auto is bf16 on CUDA from RTX 30xx / A100 on and on "
        "Apple GPUs from macOS 14, else fp32. "
        "fp16/bf16 halve memory; on a CPU, fp16 computes many times slower than bf16 (no fast "
        "kernels there).",
    },
)


ENCODER_DTYPE_INPUT = (
    DTYPE_CHOICES,
    {
        "default": "auto",
        "tooltip": "Weight precision: auto is bf16 on CUDA (older cards too: the weights fill "
        "them, not long attention), fp32 on CPU. Qwen-VL overflows in fp16.",
    },
)


OFFLOAD_INPUT = (
    "BOOLEAN",
    {
        "default": True,
        "tooltip": "Rest the weights in CPU memory between uses, so they hold no GPU memory while "
        "the transformer samples. Costs one copy of the weights to the GPU per use (the text "
        "encoder: per prompt not already encoded). The bundled demo codecs are tiny and stay put.",
    },
)


def _rest_device(offload: bool, device: torch.device) -> torch.device:
    return host.offload_device() if offload else device


VOCODER_IN_VAE = "(inside the VAE file)"


def _source(kind: str, name: str) -> Path | None:
    """The file or folder an input names: the bundled demo files or the host's model folders."""
    if name == bundle.BUNDLED:
        return bundle.WEIGHTS_DIR
    if name == bundle.BUNDLED_LORA:
        return bundle.lora_path()
    if name == VOCODER_IN_VAE:
        return None
    if kind == "text_encoders" and not name.endswith(".safetensors"):
        return host.model_dir_path(kind, name)
    return host.model_path(kind, name)


def _text_encoder_choices() -> list[str]:
    """Model folders, then single-file Qwen2.5-VLs (ComfyUI's qwen_2.5_vl_7b*.safetensors); the
    T5 and CLIP files other models keep in the folder, and a model folder's own shards, are not
    offered."""
    files = [name for name in host.list_models("text_encoders") if _single_file_qwen(name)]
    return [bundle.BUNDLED, *host.list_model_dirs("text_encoders"), *files]


def _single_file_qwen(name: str) -> bool:
    """Whether a listed text-encoder file is offered; a dangling link (a drive not mounted) or an
    unreadable file is left out, since a list that raises would hide every node from the menu."""
    from skyreels_core.encoder_file import holds_qwen25_vl

    try:
        path = host.model_path("text_encoders", name)
    except InputError:
        return False
    return not path.with_name("config.json").is_file() and holds_qwen25_vl(path)


class FileLoader:
    CATEGORY = CATEGORY
    FUNCTION = "load"
    FILE_INPUTS: dict[str, str] = {}  # input name -> the host model folder it picks from

    @classmethod
    def IS_CHANGED(cls, **inputs) -> str:
        """A checkpoint replaced under the same name (any shard of a sharded one) is reloaded; an
        unchanged one never is."""
        try:
            paths = [_source(kind, inputs[name]) for name, kind in cls.FILE_INPUTS.items()]
            files = [
                file
                for path in paths
                if path is not None
                for file in (checkpoint_shards(path) if path.is_file() else [path])
            ]
        except InputError as error:
            return str(error)  # load() raises the same clear error
        return fingerprint(files)


class SkyReelsV4ModelLoader(FileLoader):
    DESCRIPTION = (
        "Loads the dual-stream MMDiT (or a Wan 2.1 T2V checkpoint) from models/diffusion_models."
    )
    RETURN_TYPES = (link_types.MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The dual-stream model, for Load LoRA and the Sampler.",)
    FILE_INPUTS = {"model_name": "diffusion_models"}

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (
                    [bundle.BUNDLED, *host.list_models("diffusion_models")],
                    {
                        "tooltip": "A .safetensors checkpoint; the preset is detected from its keys and shapes."
                    },
                ),
                "dtype": (
                    [*DTYPE_CHOICES, FP8_STORAGE],
                    {
                        "default": "auto",
                        "tooltip": "Weight precision: auto is bf16 on CUDA from RTX 30xx / A100 "
                        "on and on Apple GPUs from macOS 14, else fp32; fp16/bf16 halve "
                        "memory. fp8_e4m3fn stores the block weights in 8 bits (a quarter "
                        "of fp32, half of bf16) and "
                        "computes in auto precision; costs one cast per layer call and "
                        "slight detail loss (each weight within 1/16 of its value). An "
                        "fp8 file (fp8_scaled, e4m3fn, e5m2) stays in 8 bits, as stored, "
                        "under auto; pick bf16/fp16/fp32 to widen it.",
                    },
                ),
                "attention": (
                    ["auto", "sdpa", "flash_attn", "sage"],
                    {
                        "default": "auto",
                        "tooltip": "auto picks the fastest installed (sage, then flash_attn, then "
                        "sdpa); sdpa works everywhere; flash_attn and sage need their packages, "
                        "CUDA and dtype bf16/fp16 (under fp32 auto picks sdpa).",
                    },
                ),
            },
            "optional": {
                "block_swap": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 64,
                        "tooltip": "Keep this many transformer blocks in CPU memory and stream each "
                        "to the GPU just before it runs (0 = off). Saves one block's weights of GPU "
                        "memory per block; costs PCIe copy time each step, mostly hidden behind "
                        "compute. Needs that much free CPU RAM; the model then rests in CPU "
                        "memory between renders, even with --highvram.",
                    },
                ),
                "compile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "torch.compile the transformer blocks: faster steps after the "
                        "first, which pays minutes of compilation (and again for each new size). "
                        "Needs a working compiler toolchain (Triton on GPU).",
                    },
                ),
            },
        }

    def load(
        self,
        model_name: str,
        dtype: str,
        attention: str,
        block_swap: int = 0,
        compile: bool = False,
    ):
        from skyreels_core.loading import holds_fp8_weights, load_model

        device = host.torch_device()
        # Swapped blocks stream from CPU memory, so with blocks to swap the model rests there even
        # where ComfyUI keeps models on the GPU (--highvram, --gpu-only).
        offload = torch.device("cpu") if block_swap else host.offload_device()
        if model_name == bundle.BUNDLED:
            path, rate = bundle.model_path(), bundle.audio_rate()
        else:
            path, rate = host.model_path("diffusion_models", model_name), bundle.MMAUDIO_RATE
        fp8 = keeps_float8(dtype, lambda: holds_fp8_weights(path, "model_name"), device)
        torch_dtype = resolve_dtype("auto" if fp8 else dtype, device)
        module = load_model(
            path,
            dtype=torch_dtype,
            device=offload,
            fp8=fp8,
            input_name="model_name",
            reserve=host.reserve,  # where the host keeps models on the GPU (--highvram)
        )
        if module.config.audio_latent_channels is None:
            rate = None
        module.attention_backend = resolve_attention(attention, device, torch_dtype)
        return (
            LoadedModel(module, model_name, rate, offload, block_swap=block_swap, compile=compile),
        )


class SkyReelsV4TextEncoderLoader(FileLoader):
    DESCRIPTION = (
        "Loads the shared MLLM encoder from models/text_encoders: a Qwen2.5-VL / Qwen3-VL model "
        "folder, or the single Qwen2.5-VL file ComfyUI keeps for Qwen-Image (fp8_scaled too)."
    )
    RETURN_TYPES = (link_types.TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The shared MLLM text encoder, for the Text Encode nodes.",)
    FILE_INPUTS = {"encoder": "text_encoders"}

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder": (
                    _text_encoder_choices(),
                    {
                        "tooltip": "A folder with config.json, safetensors shards, tokenizer and "
                        "processor files; or a single Qwen2.5-VL .safetensors "
                        "(qwen_2.5_vl_7b_fp8_scaled.safetensors, as Qwen-Image and HunyuanVideo "
                        "1.5 use), which takes ComfyUI's own Qwen2.5 tokenizer."
                    },
                ),
                "dtype": ENCODER_DTYPE_INPUT,
                "hidden_layer": (
                    "INT",
                    {
                        "default": -1,
                        "min": -64,
                        "max": 64,
                        "tooltip": "Which hidden layer gives the features (-1 = last).",
                    },
                ),
            },
            "optional": {"offload": OFFLOAD_INPUT},
        }

    def load(self, encoder: str, dtype: str, hidden_layer: int, offload: bool = True):
        from skyreels_core.encoder import MLLMEncoder

        device = host.torch_device()
        options = {
            "dtype": resolve_dtype(dtype, device, weights_dominate=True),
            "device": device,
            "offload_device": _rest_device(offload, device),
            "hidden_layer": hidden_layer,
            "reserve": host.reserve,
        }
        if encoder == bundle.BUNDLED:
            return (MLLMEncoder.from_folder(bundle.text_encoder_dir(), **options),)
        path = _source("text_encoders", encoder)
        if path.is_dir():
            return (MLLMEncoder.from_folder(path, **options),)
        tokenizer = host.qwen25_tokenizer_folder()
        if tokenizer is None:
            raise InputError(
                "encoder",
                f"{encoder} is a single-file Qwen2.5-VL, and this ComfyUI ships no Qwen2.5 "
                "tokenizer (comfy/text_encoders/qwen25_tokenizer) to read it with",
                "update ComfyUI, or pick the model's folder (Qwen/Qwen2.5-VL-7B-Instruct)",
            )
        return (MLLMEncoder.from_file(path, tokenizer, **options),)


class SkyReelsV4VideoVAELoader(FileLoader):
    DESCRIPTION = "Loads the video VAE: the Wan 2.1 VAE from models/vae, or the bundled demo codec."
    RETURN_TYPES = (link_types.VIDEO_VAE,)
    RETURN_NAMES = ("video_vae",)
    OUTPUT_TOOLTIPS = (
        "The video VAE, for the mask, reference and codec nodes and the Sampler's previews.",
    )
    FILE_INPUTS = {"vae_name": "video_vae"}

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_name": (
                    [bundle.BUNDLED, *host.list_models("video_vae")],
                    {"tooltip": "The original Wan 2.1 VAE .safetensors (wan_2.1_vae.safetensors)."},
                ),
                "dtype": DTYPE_INPUT,
            },
            "optional": {"offload": OFFLOAD_INPUT},
        }

    def load(self, vae_name: str, dtype: str, offload: bool = True):
        device = host.torch_device()
        if vae_name == bundle.BUNDLED:
            return (bundle.video_codec(device=device),)
        from skyreels_core.codecs.wan_vae import WanVideoCodec

        return (
            WanVideoCodec.from_single_file(
                host.model_path("video_vae", vae_name),
                dtype=resolve_dtype(dtype, device),
                device=device,
                offload_device=_rest_device(offload, device),
                reserve=host.reserve,
            ),
        )


class SkyReelsV4AudioVAELoader(FileLoader):
    DESCRIPTION = (
        "Loads the audio VAE + vocoder the model was trained with: MMAudio 44.1 kHz from "
        "models/audio_vae, or the bundled demo codec."
    )
    RETURN_TYPES = (link_types.AUDIO_VAE,)
    RETURN_NAMES = ("audio_vae",)
    OUTPUT_TOOLTIPS = (
        "The audio VAE with its vocoder, for Decode Audio, Encode Audio, Audio Reference and the "
        "Sampler.",
    )
    FILE_INPUTS = {"vae_name": "audio_vae", "vocoder_name": "audio_vae"}

    @classmethod
    def INPUT_TYPES(cls):
        files = host.list_models("audio_vae")
        return {
            "required": {
                "vae_name": (
                    [bundle.BUNDLED, *files],
                    {
                        "tooltip": "The MMAudio-44k VAE .safetensors: diffusers' layout, or "
                        "MMAudio's own (ComfyUI-MMAudio's mmaudio_vae_44k_fp16.safetensors)."
                    },
                ),
                "vocoder_name": (
                    [VOCODER_IN_VAE, *files],
                    {
                        "default": VOCODER_IN_VAE,
                        "tooltip": "The BigVGAN vocoder .safetensors, or none when the VAE file "
                        "carries it under vocoder.*. Ignored for the bundled codec.",
                    },
                ),
                "dtype": DTYPE_INPUT,
            },
            "optional": {"offload": OFFLOAD_INPUT},
        }

    def load(
        self,
        vae_name: str,
        vocoder_name: str = VOCODER_IN_VAE,
        dtype: str = "auto",
        offload: bool = True,
    ):
        device = host.torch_device()
        if vae_name == bundle.BUNDLED:
            return (bundle.audio_codec(device=device),)
        from skyreels_core.codecs.mmaudio import MMAudioCodec

        return (
            MMAudioCodec.from_single_file(
                _source("audio_vae", vae_name),
                _source("audio_vae", vocoder_name),
                dtype=resolve_dtype(dtype, device),
                device=device,
                offload_device=_rest_device(offload, device),
                reserve=host.reserve,
                interrupt=host.check_interrupt,  # Cancel between a long sound's vocoder chunks
            ),
        )


class SkyReelsV4LoraLoader(FileLoader):
    DESCRIPTION = (
        "Applies a LoRA from models/loras while the model renders: Wan 2.1 LoRAs (ComfyUI, kohya, "
        "diffusers spellings) reach the video stream, LoRAs in this pack's own layer names any "
        "layer. Chain several. The loaded model itself never changes, so other workflows using "
        "it render without the LoRA."
    )
    RETURN_TYPES = (link_types.MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = (
        "The same model with this LoRA applied while it renders; chain another Load LoRA for more.",
    )
    FILE_INPUTS = {"lora_name": "loras"}

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (link_types.MODEL, {"tooltip": "From Load Model or another Load LoRA."}),
                "lora_name": (
                    [bundle.BUNDLED_LORA, *host.list_models("loras")],
                    {
                        "tooltip": "A .safetensors LoRA; layers this model lacks are skipped and "
                        "logged. The bundled one is for the bundled demo model: it renders every "
                        "colour as the next (red as green, green as blue, blue as yellow, yellow "
                        "as red), look and hum."
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -10.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "How much of the LoRA to add: 0 leaves the model as it is, "
                        "negative values push away from its style.",
                    },
                ),
            }
        }

    def load(self, model: LoadedModel, lora_name: str, strength: float):
        lora = read_lora(_source("loras", lora_name), model.module)
        return (model.with_lora(lora, strength),)


NODE_CLASS_MAPPINGS = {
    cls.__name__: cls
    for cls in (
        SkyReelsV4ModelLoader,
        SkyReelsV4TextEncoderLoader,
        SkyReelsV4VideoVAELoader,
        SkyReelsV4AudioVAELoader,
        SkyReelsV4LoraLoader,
    )
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4ModelLoader": "SkyReels-V4 Load Model",
    "SkyReelsV4TextEncoderLoader": "SkyReels-V4 Load Text Encoder (MLLM)",
    "SkyReelsV4VideoVAELoader": "SkyReels-V4 Load Video VAE",
    "SkyReelsV4AudioVAELoader": "SkyReels-V4 Load Audio VAE",
    "SkyReelsV4LoraLoader": "SkyReels-V4 Load LoRA",
}
