"""The shared MLLM encoder: one Qwen-VL model reads the prompt together with images and video
frames (DESIGN §3), and a chosen hidden layer gives the features both streams condition on.

Loading reads a local folder only (``local_files_only``, no remote code). The chat template's fixed
prefix (system turn, user header) and suffix are measured once from the template itself and cut
from every encoding, so features start at the user's first token whatever the template says.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import CheckpointError, InputError
from .offload import ReserveMemory, rest_on, visiting
from .requirements import import_required
from .shapes import rgb_pixels, single_images
from .types import TextEncoding

SYSTEM_PROMPT = "Describe the video and its sound: objects, colours, motion, camera and timing."
CACHE_SIZE = 64
LOCAL_ONLY = {"local_files_only": True, "trust_remote_code": False}
MODEL_CLASSES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}


def _messages(prompt_items: list[dict]) -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": prompt_items},
    ]


def _require_hidden_layer(model, hidden_layer: int) -> None:
    """A layer the model has, checked at load rather than at the first prompt, after the weights
    of a 7B encoder have loaded and run."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    states = getattr(config or model.config, "num_hidden_layers", None)
    if states is None:
        return
    states += 1  # the embeddings' output, then each layer's
    if not -states <= hidden_layer < states:
        raise InputError(
            "hidden_layer",
            f"{hidden_layer} of a model with {states} hidden states",
            f"use {-states} to {states - 1} (-1: the last layer)",
        )


def _json_file(path: Path, input_name: str) -> dict:
    """A model folder's JSON file as a dict, or an error naming the file: a download cut short
    or a file edited by hand failed as a bare JSONDecodeError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        data = error
    if not isinstance(data, dict):
        raise CheckpointError(
            input_name,
            f"{path} is not a JSON object ({data})",
            "download the file again from the model's release",
        )
    return data


def _require_processor_files(folder: Path, input_name: str, image_processor: bool = True) -> None:
    """The files transformers reads the tokenizer and (with ``image_processor``) the image
    processor from, checked before the weights load (minutes and many GB for a 7B model) instead
    of failing after them. A Qwen2 tokenizer reads tokenizer.json, or vocab.json with merges.txt
    (with neither it loads an empty vocabulary); the image processor reads
    preprocessor_config.json, or processor_config.json with an ``image_processor`` entry."""

    def has(*names: str) -> bool:
        return all((folder / name).is_file() for name in names)

    missing = {}  # what the message says is missing -> the release's files to copy
    if not has("tokenizer.json") and not has("vocab.json", "merges.txt"):
        missing["tokenizer.json (or vocab.json and merges.txt)"] = (
            "tokenizer.json, tokenizer_config.json"
        )
    processor = folder / "processor_config.json"
    if (
        image_processor
        and not has("preprocessor_config.json")
        and not (processor.is_file() and "image_processor" in _json_file(processor, input_name))
    ):
        missing["preprocessor_config.json"] = "preprocessor_config.json"
    if missing:
        raise CheckpointError(
            input_name,
            f"{folder} has no {' and no '.join(missing)}",
            f"copy {', '.join(missing.values())} from the model's release (its Hugging Face "
            "repo) into the folder, beside the weights",
        )


def _chat_template(folder: Path, tokenizer, input_name: str) -> str:
    """A model folder's chat template: its tokenizer_config's, or a chat_template file's."""
    template = tokenizer.chat_template
    for name in ("chat_template.jinja", "chat_template.json"):
        if template is None and (folder / name).is_file():
            template = (
                _json_file(folder / name, input_name).get("chat_template")
                if name.endswith(".json")
                else (folder / name).read_text(encoding="utf-8")
            )
    if template is None:
        raise CheckpointError(
            input_name,
            f"{folder} has no chat template",
            "copy the model's chat_template.json into the folder",
        )
    return template


MAX_ASPECT = 200  # the Qwen-VL processors' smart_resize refuses longer pictures


def _to_pil(image: torch.Tensor, input_name: str):
    """A picture for the image processor; one it would refuse inside transformers (Qwen-VL's
    resize takes sides under 200:1) is named with its input first."""
    from PIL import Image

    pixels = rgb_pixels(image, input_name)
    height, width = pixels.shape[:2]
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise InputError(
            input_name,
            f"a picture of {width} x {height} px, over {MAX_ASPECT}:1",
            f"crop or pad it to under {MAX_ASPECT}:1",
        )
    return Image.fromarray((pixels.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())


MAX_VIDEO_FRAMES = 8


class MLLMEncoder:
    """Tokenizer, image processor and chat template of the model folder, expanded the way the
    Qwen-VL processors do (each image pad becomes grid_t * grid_h * grid_w / merge^2 tokens).
    Video frames are read as a sequence of up to ``MAX_VIDEO_FRAMES`` images, which needs no
    torchvision (the Qwen video processors do)."""

    def __init__(
        self,
        model,
        tokenizer,
        image_processor,
        chat_template: str,
        hidden_layer: int = -1,
        offload_device: torch.device | str | None = None,
        compute_device: torch.device | str | None = None,
        reserve: ReserveMemory | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        _require_hidden_layer(model, hidden_layer)
        self.compute_device = torch.device(compute_device or next(model.parameters()).device)
        # Where the weights rest between encodings: a 7B encoder must not sit in GPU memory
        # while the MMDiT samples. Features are cached, so re-queued prompts never move it.
        self.offload_device = torch.device(offload_device or self.compute_device)
        rest_on(self.model, self.offload_device, reserve)
        # Asked for room before the weights move to compute (a host frees it); only when a
        # prompt is actually encoded, never for a cached one.
        self.reserve = reserve
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.hidden_layer = hidden_layer
        self.image_token = "<|image_pad|>"
        self._control_tokens = sorted(
            token.content for token in tokenizer.added_tokens_decoder.values() if token.special
        )
        self._cache: OrderedDict[str, TextEncoding] = OrderedDict()
        template = self._render([])
        cut = template.rindex("<|im_end|>")
        self._prefix = tokenizer(template[:cut], add_special_tokens=False)["input_ids"]
        self._suffix_length = len(tokenizer(template[cut:], add_special_tokens=False)["input_ids"])

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        *,
        dtype: torch.dtype = torch.bfloat16,
        device="cpu",
        offload_device=None,
        hidden_layer: int = -1,
        reserve: ReserveMemory | None = None,
        input_name: str = "encoder",
    ) -> MLLMEncoder:
        """The encoder of a Qwen-VL model folder. Its weights load straight onto
        ``offload_device`` (default: ``device``) and visit ``device`` per encoding, so a 7B
        encoder never has to fit beside the other models on the GPU just to be loaded. Errors
        name ``input_name`` (default: the Load Text Encoder node's folder input)."""
        transformers = import_required("transformers", input_name)

        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise CheckpointError(
                input_name,
                f"{folder} has no config.json",
                "use a Qwen2.5-VL / Qwen3-VL model folder",
            )
        model_type = _json_file(config_path, input_name).get("model_type")
        if model_type not in MODEL_CLASSES:
            raise CheckpointError(
                input_name,
                f"model type {model_type!r} is not a Qwen-VL model",
                f"use one of {', '.join(MODEL_CLASSES)}",
            )
        if not any(folder.glob("*.safetensors")):
            raise CheckpointError(
                input_name,
                f"{folder} has no .safetensors weights",
                "download the safetensors shards",
            )
        _require_processor_files(folder, input_name)
        # Everything but the weights first: a folder that fails, fails in seconds.
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **LOCAL_ONLY)
        template = _chat_template(folder, tokenizer, input_name)
        image_processor = transformers.Qwen2VLImageProcessorPil.from_pretrained(
            folder, **LOCAL_ONLY
        )
        model_class = getattr(transformers, MODEL_CLASSES[model_type])
        model = model_class.from_pretrained(folder, dtype=dtype, use_safetensors=True, **LOCAL_ONLY)
        return cls(
            model,
            tokenizer,
            image_processor,
            template,
            hidden_layer,
            offload_device,
            compute_device=device,
            reserve=reserve,
        )

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        tokenizer_folder: str | Path,
        *,
        dtype: torch.dtype = torch.bfloat16,
        device="cpu",
        offload_device=None,
        hidden_layer: int = -1,
        reserve: ReserveMemory | None = None,
        input_name: str = "encoder",
    ) -> MLLMEncoder:
        """The encoder of a single-file Qwen2.5-VL as ComfyUI keeps it (:mod:`.encoder_file`),
        with the tokenizer of ``tokenizer_folder``. The chat template is the pack's own, which
        renders this encoder's messages exactly as Qwen2.5-VL's does: the host's tokenizer
        folder carries Qwen2.5's text-only template, which cannot place an image."""
        transformers = import_required("transformers", input_name)

        from .encoder_file import PREPROCESSOR, load_qwen25_vl_file

        tokenizer_folder = Path(tokenizer_folder)
        _require_processor_files(tokenizer_folder, input_name, image_processor=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_folder, **LOCAL_ONLY)
        image_processor = transformers.Qwen2VLImageProcessorPil(**PREPROCESSOR)
        model = load_qwen25_vl_file(
            Path(path), tokenizer, dtype, offload_device or device, input_name, reserve
        )
        return cls(
            model,
            tokenizer,
            image_processor,
            CHAT_TEMPLATE,
            hidden_layer,
            offload_device,
            compute_device=device,
            reserve=reserve,
        )

    def _render(self, items: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            _messages(items), tokenize=False, chat_template=self.chat_template
        )

    @property
    def device(self) -> torch.device:
        return self.compute_device

    def _computing(self):
        return visiting(self.model, self.compute_device, self.offload_device, self.reserve)

    def _key(self, prompt: str, images: list[torch.Tensor]) -> str:
        digest = hashlib.sha256(f"{self.hidden_layer}\0{prompt}".encode())
        for tensor in images:
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()

    @torch.no_grad()
    def encode(
        self,
        prompt: str,
        images: torch.Tensor | Sequence[torch.Tensor] | None = None,
        video: torch.Tensor | None = None,
        input_name: str = "prompt",
    ) -> TextEncoding:
        """Features [1, L, D] of the user's turn: images, video frames, then the prompt's words.
        The prompt's outer whitespace is dropped: a BPE tokenizer merges a leading newline with
        the template's own, which would change the prefix the features are cut after."""
        prompt = prompt.strip()
        control = next((token for token in self._control_tokens if token in prompt), None)
        if control is not None:  # read as the token itself: a turn's end, a picture's place
            raise InputError(
                input_name,
                f"holds {control}, a control token of the encoder's chat format",
                "remove it from the text (pictures go to the image inputs)",
            )
        pictures = single_images(images, "images")
        names = ["images"] * len(pictures)
        if video is not None:
            step = max(1, -(-len(video) // MAX_VIDEO_FRAMES))
            pictures += list(video[::step])
            names += ["video"] * (len(pictures) - len(names))
        key = self._key(prompt, pictures)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        text = self._render(
            [*({"type": "image"} for _ in pictures), {"type": "text", "text": prompt}]
        )
        inputs = {}
        if pictures:
            vision = self.image_processor(
                images=[_to_pil(p, name) for p, name in zip(pictures, names)], return_tensors="pt"
            )
            merge = self.image_processor.merge_size**2
            for grid in vision["image_grid_thw"]:
                text = text.replace(
                    self.image_token, "<|placeholder|>" * int(grid.prod() // merge), 1
                )
            text = text.replace("<|placeholder|>", self.image_token)
            inputs = {
                "pixel_values": vision["pixel_values"].to(self.device, self.model.dtype),
                "image_grid_thw": vision["image_grid_thw"].to(self.device),
            }
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(
            self.device
        )
        if ids[0, : len(self._prefix)].tolist() != self._prefix:
            raise RuntimeError("the chat template's prefix changed between encodings")
        if pictures:
            # Which tokens are image patches: the multimodal RoPE places them on a 3-D grid.
            image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
            inputs["mm_token_type_ids"] = (ids == image_id).int()
        with self._computing():
            output = self.model.model(input_ids=ids, output_hidden_states=True, **inputs)
        hidden = output.hidden_states[self.hidden_layer][0]
        features = hidden[len(self._prefix) : ids.shape[1] - self._suffix_length][None].float()
        self._require_finite(features)
        # Cached where the weights rest: 64 prompts with pictures are a GB of GPU memory the
        # host cannot reclaim, and the sampler moves the features it reads to its device itself.
        features = features.to(self.offload_device)
        encoding = TextEncoding(
            features, torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        )
        self._cache[key] = encoding
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return encoding

    def _require_finite(self, features: torch.Tensor) -> None:
        """Features with NaN or inf stop here, named as the encoder's: the sampler would only
        find its first prediction not finite and blame the diffusion model."""
        if bool(torch.isfinite(features).all()):
            return
        if self.model.dtype == torch.float16:
            fix = "load it in bf16 or fp32 (Load Text Encoder's dtype): float16 overflows in it"
        else:
            fix = "check the encoder's files (a damaged download or conversion)"
        raise InputError("encoder", "its features are not finite (NaN/inf)", fix)

    def encode_shots(self, shots, frames: int) -> TextEncoding:
        """Each shot encoded alone, tokens concatenated, with the latent frames each shot covers."""
        from .prompts import shot_latent_ranges

        encodings = [self.encode(shot.text, input_name="shots") for shot in shots]
        ranges, start = [], 0
        for encoding, (frame_start, frame_end) in zip(encodings, shot_latent_ranges(shots, frames)):
            length = encoding.features.shape[1]
            ranges.append((start, start + length, frame_start, frame_end))
            start += length
        features = torch.cat([e.features for e in encodings], dim=1)
        mask = torch.cat([e.mask for e in encodings], dim=1)
        return TextEncoding(features, mask, ranges)


SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
)


def create_tiny_encoder_folder(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    vocab_texts: list[str] | None = None,
    seed: int = 0,
    family: str = "qwen2_5_vl",
) -> Path:
    """A real Qwen2.5-VL (or Qwen3-VL, ``family="qwen3_vl"``) in a tiny config with random weights
    and a word-level tokenizer built locally, saved the way a downloaded model folder is: for tests
    and the bundled demo."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = sorted(
        {
            w
            for text in (vocab_texts or []) + [SYSTEM_PROMPT, "system user assistant"]
            for w in pre_tokenizers.Whitespace().pre_tokenize_str(text.lower())
        }
    )
    vocab = {token: i for i, token in enumerate(["<unk>", *SPECIAL_TOKENS])}
    for word, _ in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    from tokenizers import normalizers

    tokenizer.normalizer = normalizers.Lowercase()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    ids = {token: vocab[token] for token in SPECIAL_TOKENS}
    heads = 4
    tokens = dict(
        bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    text = {
        "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": 2,
        "num_attention_heads": heads, "num_key_value_heads": 2, "vocab_size": len(vocab),
        "max_position_embeddings": 2048, "bos_token_id": ids["<|im_start|>"], "eos_token_id": ids["<|im_end|>"],
    }  # fmt: skip
    vision = {
        "depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden_size,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3,
    }  # fmt: skip
    if family == "qwen2_5_vl":
        patch = 14
        text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3], "rope_type": "default"}
        vision.update(patch_size=patch, fullatt_block_indexes=[0], window_size=112)
        config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    elif family == "qwen3_vl":
        patch = 16
        text["rope_parameters"] = {
            "rope_type": "default",
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
        }
        vision.update(patch_size=patch, deepstack_visual_indexes=[0], num_position_embeddings=64)
        config = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)
    else:
        raise ValueError(f"family {family!r}: use one of {', '.join(MODEL_CLASSES)}")
    torch.manual_seed(seed)
    model = getattr(transformers, MODEL_CLASSES[family])(config)
    model.save_pretrained(folder, safe_serialization=True)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    side = 4 * patch  # at least 2 x 2 merged patches
    transformers.Qwen2VLImageProcessorPil(
        min_pixels=side * side, max_pixels=4 * side * side, patch_size=patch
    ).save_pretrained(folder)
    return folder
