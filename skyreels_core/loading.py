"""Checkpoints: safetensors only, memory-mapped, validated key by key, built on the meta device.

A model is constructed on ``meta`` (no memory), its expected keys and shapes are compared with
the file's before a byte is read, and the tensors are then assigned straight from the mapped file,
so a 14B checkpoint never exists twice in memory and a wrong file fails in milliseconds. With fp8
storage each block weight is quantised as it is read, so the full-precision model never exists.
Large releases ship in shards (``name-00001-of-00006.safetensors``); picking any shard loads the
set, so they need no merging. Wan 2.1 is read in every layout it is published in: the original,
ComfyUI's (a prefix), ComfyUI's fp8_scaled (:mod:`.scaled_weights`) and diffusers' (its names).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import PRESETS, ModelConfig, config_from_dict
from .errors import CheckpointError
from .mmdit import DualStreamMMDiT
from .offload import FP8_FORMATS, ReserveMemory, quantise_fp8, store_linears_in_fp8
from .paths import published
from .scaled_weights import SCALE_SUFFIXES, ScaledLayout, dequantise, fitted_scale, scaled_layout

CONFIG_METADATA_KEY = "skyreels_config"
SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.safetensors$")
WAN_PREFIXES = ("model.diffusion_model.",)
DIFFUSERS_WAN_MARKER = "condition_embedder.time_embedder.linear_1.weight"
DIFFUSERS_WAN_NAMES = (  # applied in order, as substrings
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
    (".norm2.", ".norm3."),  # diffusers' cross-attention norm is Wan's norm3
)
# What only diffusers' names hold (Wan's own norm2 is a layer too): a name with one of these marks
# a file named as diffusers names Wan's layers.
DIFFUSERS_ONLY_NAMES = (
    *(theirs for theirs, _ in DIFFUSERS_WAN_NAMES if theirs != ".norm2."),
    "proj_out.",
    "scale_shift_table.",
)
WAN_IMAGE_CONDITION_MARKS = (  # Wan I2V's CLIP projection and image cross-attention, both layouts
    "img_emb.",
    ".k_img.",
    "condition_embedder.image_embedder.",
    ".add_k_proj.",
)
HEAD_DIM = 128  # every Wan 2.1 model uses 128-dim heads
WAN_KEYS = (  # what wan_config_from_shapes reads a Wan 2.1 file's config off
    "patch_embedding.weight",
    "blocks.0.self_attn.q.weight",
    "blocks.0.ffn.0.weight",
    "text_embedding.0.weight",
    "head.head.weight",
)


def _check_safetensors(path: Path, input_name: str) -> None:
    """Refuse anything that is not a complete safetensors file before any parser touches it."""
    if not path.is_file():
        raise CheckpointError(
            input_name, f"{path} does not exist", "check the file name and folder"
        )
    if path.suffix != ".safetensors":
        raise CheckpointError(
            input_name,
            f"{path.name} is not a .safetensors file",
            "convert it with `python -m skyreels_core to-safetensors IN OUT.safetensors` (pickle "
            "checkpoints can run code when loaded and are refused)",
        )
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        raise CheckpointError(
            input_name,
            f"{path.name} has no safetensors header",
            "re-download or re-export the file",
        )
    header_length = struct.unpack("<Q", head[:8])[0]
    if 8 + header_length > size:
        raise CheckpointError(input_name, f"{path.name} is truncated", "re-download the file")


def read_header(
    path: Path, input_name: str = "checkpoint"
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Key -> shape and the metadata of a safetensors file, without reading tensor data."""
    _check_safetensors(path, input_name)
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            return shapes, handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(
            input_name, f"{path.name} cannot be read ({error})", "re-download the file"
        ) from None


def is_later_shard(name: str) -> bool:
    """A shard other than the first of a sharded checkpoint: file lists show the first only."""
    match = SHARD_NAME.match(Path(name).name)
    return match is not None and int(match["index"]) != 1


def checkpoint_shards(path: Path, input_name: str = "checkpoint") -> list[Path]:
    """The files a checkpoint lives in: ``path`` alone, or every shard of its set, whichever
    shard was picked."""
    match = SHARD_NAME.match(path.name)
    if match is None:
        return [path]
    count = int(match["count"])
    shards = [
        path.with_name(f"{match['stem']}-{index:05d}-of-{count:05d}.safetensors")
        for index in range(1, count + 1)
    ]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise CheckpointError(
            input_name,
            f"{path.name} is one of {count} shards and {describe_keys(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not beside it",
            f"put all {count} shards in {path.parent}",
        )
    return shards


def read_checkpoint_header(
    path: Path, input_name: str = "checkpoint"
) -> tuple[list[Path], dict[str, tuple[int, ...]], dict[str, str]]:
    """The checkpoint's files, and key -> shape and metadata over all of them."""
    shards = checkpoint_shards(path, input_name)
    shapes: dict[str, tuple[int, ...]] = {}
    metadata: dict[str, str] = {}
    for shard in shards:
        part, part_metadata = read_header(shard, input_name)
        repeated = part.keys() & shapes.keys()
        if repeated:
            raise CheckpointError(
                input_name,
                f"{shard.name} repeats {describe_keys(repeated)} from an earlier shard",
                "use the shards of one release only",
            )
        shapes.update(part)
        metadata = {**part_metadata, **metadata}
    return shards, shapes, metadata


def _strip_prefix(key: str) -> str:
    for prefix in WAN_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def wan_name_from_diffusers(key: str) -> str:
    """A diffusers WanTransformer3DModel key as original Wan 2.1 names it (the inverse of
    diffusers' ``convert_wan_transformer_to_diffusers`` for a T2V model)."""
    for theirs, ours in DIFFUSERS_WAN_NAMES:
        key = key.replace(theirs, ours)
    if key.startswith("proj_out."):
        return "head.head." + key.removeprefix("proj_out.")
    if key == "scale_shift_table":
        return "head.modulation"
    return key.replace(".scale_shift_table", ".modulation")


def key_renamer(keys) -> Callable[[str], str]:
    """How a file's keys become the model's: ComfyUI's prefix stripped, diffusers' names mapped
    back to Wan's (a diffusers release of Wan 2.1 loads as the original does)."""
    if DIFFUSERS_WAN_MARKER in keys:
        return wan_name_from_diffusers
    return _strip_prefix


def wan_config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """A Wan-compatible config read off an original-layout Wan 2.1 checkpoint's shapes."""
    dim, in_channels, *patch = shapes["patch_embedding.weight"]
    layers = 1 + max(int(key.split(".")[1]) for key in shapes if key.startswith("blocks."))
    same_shape = (
        preset.name
        for preset in PRESETS.values()
        if not preset.joint_text and preset.dim == dim and preset.num_dual_blocks == layers
    )
    name = next(same_shape, "wan2.1-t2v")  # a preset's name where the file is one of them
    return ModelConfig(
        name=name,
        dim=dim,
        num_heads=dim // HEAD_DIM,
        ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
        num_dual_blocks=layers,
        num_single_blocks=0,
        text_dim=shapes["text_embedding.0.weight"][1],
        video_latent_channels=shapes["head.head.weight"][0] // (patch[0] * patch[1] * patch[2]),
        channel_concat_inpainting=in_channels
        != shapes["head.head.weight"][0] // (patch[0] * patch[1] * patch[2]),
        joint_text=False,
        audio_latent_channels=None,
        patch_size=tuple(patch),
    )


def detect_config(
    shapes: dict[str, tuple[int, ...]], metadata: dict[str, str], input_name: str
) -> ModelConfig:
    """The config the file describes, or read off an original-layout Wan 2.1 file's shapes. A
    file is taken for Wan only when it holds every key that reading needs: a Wan-like DiT of
    another kind (the refiner has no text embedding) is refused by name, not a bare KeyError."""
    if CONFIG_METADATA_KEY in metadata:
        return config_from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
    _refuse_refiner(metadata, input_name)
    if any(mark in key for key in shapes for mark in WAN_IMAGE_CONDITION_MARKS):
        raise CheckpointError(
            input_name,
            "the file is an image-to-video Wan checkpoint (it holds a CLIP image projection and "
            "image cross-attention); this pack starts from an image through the "
            "channel-concat condition of a T2V-layout model instead",
            "pick a Wan 2.1 T2V checkpoint (wan2.1_t2v_*.safetensors) or a SkyReels-V4 one, and "
            "give the image to Mask: Image to Video",
        )
    missing = [key for key in WAN_KEYS if key not in shapes]
    width = shapes.get("patch_embedding.weight", (HEAD_DIM,))[0]
    if not missing and width % HEAD_DIM:
        raise CheckpointError(
            input_name,
            f"the file is Wan-shaped but {width} wide, which no Wan 2.1 release is (every one "
            f"has {HEAD_DIM}-wide heads)",
            "pick a Wan 2.1 T2V release (1.3B: 1536 wide, 14B: 5120) or a SkyReels-V4 checkpoint",
        )
    if not missing:
        return wan_config_from_shapes(shapes)
    raise CheckpointError(
        input_name,
        "the file is neither a SkyReels-V4 checkpoint nor an original-layout Wan 2.1 T2V "
        f"checkpoint (it lacks {describe_keys(missing)})",
        "pick a SkyReels-V4 / Wan 2.1 diffusion model file (it must hold patch_embedding, "
        "text_embedding, blocks.* and head)",
    )


def _refuse_refiner(metadata: dict[str, str], input_name: str) -> None:
    """The refiner's own file, picked in the generator's loader: say where it belongs."""
    from .refiner import CONFIG_METADATA_KEY as REFINER_KEY  # refiner imports this module

    if REFINER_KEY in metadata:
        raise CheckpointError(
            input_name,
            "the file is a SkyReels-V4 refiner, not a generator model",
            "load it with SkyReels-V4 Load Refiner (from models/skyreels_refiner) and pick a "
            "SkyReels-V4 or Wan 2.1 diffusion model here",
        )


def build_on_meta(config: ModelConfig) -> DualStreamMMDiT:
    """The model's structure without allocating its weights."""
    with torch.device("meta"):
        return DualStreamMMDiT(config)


def describe_keys(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def shapes_of(
    tensors: Mapping[str, torch.Tensor], skip: Callable[[str], bool] = lambda key: False
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a state dict (a module's own, built on meta, or one read from a file)."""
    return {key: tuple(value.shape) for key, value in tensors.items() if not skip(key)}


def validate_keys(
    expected: dict[str, tuple],
    found: dict[str, tuple],
    input_name: str,
    config_name: str,
    fix: str = "use a checkpoint of this model/preset (or let the loader detect the preset)",
) -> None:
    """Exact key and shape match, or one error that lists what differs."""
    missing = expected.keys() - found.keys()
    unexpected = found.keys() - expected.keys()
    mismatched = [
        f"{k} {found[k]} != {expected[k]}"
        for k in expected.keys() & found.keys()
        if tuple(found[k]) != tuple(expected[k])
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} keys ({describe_keys(missing)})")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} keys ({describe_keys(unexpected)})")
        if mismatched:
            problems.append(f"mis-shaped {len(mismatched)} tensors ({describe_keys(mismatched)})")
        raise CheckpointError(
            input_name,
            f"the file does not match the {config_name} model: " + "; ".join(problems),
            fix,
        )


@contextmanager
def open_tensors(shards: list[Path], rename) -> Iterator[dict[str, Callable[[], torch.Tensor]]]:
    """Model name -> a reader of that tensor, over every shard's memory-mapped file."""
    with ExitStack() as stack:
        readers = {}
        for shard in shards:
            handle = stack.enter_context(safe_open(str(shard), framework="pt", device="cpu"))
            readers |= {rename(key): partial(handle.get_tensor, key) for key in handle.keys()}
        yield readers


def load_tensors(
    readers: dict[str, Callable[[], torch.Tensor]],
    layout: ScaledLayout,
    dtype: torch.dtype,
    device,
    fp8_weights: frozenset[str] = frozenset(),
    input_name: str = "model",
) -> dict[str, torch.Tensor]:
    """Every model tensor cast to ``dtype`` on ``device``, scaled weights taken back to their
    true values; keys in ``fp8_weights`` are stored in fp8 instead, with their scale under
    ``<module>.weight_scale`` (a file's own float8 weight and scale, e4m3fn or e5m2, per tensor
    or per row, as they are, never rounded twice; a plain float8 weight, as ``*_fp8_e4m3fn`` and
    ``*_fp8_e5m2`` releases store them, at scale 1)."""
    state = {}
    for name in layout.model_keys(readers):
        tensor = readers[name]()
        scale = readers[layout.scales[name]]() if name in layout.scales else None
        as_stored = tensor.dtype in FP8_FORMATS and scale is not None
        if scale is not None and not (name in fp8_weights and as_stored):
            tensor, scale = dequantise(tensor, scale, name, input_name), None
        if name in fp8_weights:
            if scale is None and tensor.dtype in FP8_FORMATS:
                scale = torch.ones(())
            elif scale is None:
                tensor, scale = quantise_fp8(tensor)
            state[name] = tensor.to(device)
            state[name.removesuffix("weight") + "weight_scale"] = fitted_scale(
                tensor, scale, name, input_name
            ).to(device)
        else:
            state[name] = tensor.to(device=device, dtype=dtype)
    return state


def holds_fp8_weights(path: str | Path, input_name: str = "model") -> bool:
    """Whether a checkpoint ships its weights in float8: scaled (a ``*_fp8_scaled`` release) or
    plain (a ``*_fp8_e4m3fn`` or ``*_fp8_e5m2`` one), read off the header without loading a
    tensor."""
    shards, shapes, _ = read_checkpoint_header(Path(path), input_name)
    if any(key.endswith(SCALE_SUFFIXES) for key in shapes):
        return True
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            weights = (key for key in handle.keys() if key.endswith(".weight"))
            if any(handle.get_slice(key).get_dtype() in ("F8_E4M3", "F8_E5M2") for key in weights):
                return True
    return False


def load_model(
    path: str | Path,
    config: ModelConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    input_name: str = "model",
    fp8: bool = False,
    reserve: ReserveMemory | None = None,
) -> DualStreamMMDiT:
    """A SkyReels-V4 or original-layout Wan 2.1 checkpoint as a ready model (eval mode).

    ``dtype`` is the compute precision; ``fp8`` stores the transformer blocks' Linear weights in
    float8_e4m3fn with per-tensor scales (:mod:`skyreels_core.offload`), about half the bytes of
    bf16, dequantised to ``dtype`` at each call. The weights load straight onto ``device``:
    ``reserve`` is asked for their room first (a host keeping models on the GPU).
    """
    shards, shapes, metadata = read_checkpoint_header(Path(path), input_name)
    rename = key_renamer(shapes)
    with open_tensors(shards, rename) as readers:
        layout = scaled_layout(readers, lambda key: readers[key](), metadata, input_name)
        shapes = {rename(key): shape for key, shape in shapes.items()}
        shapes = {key: shapes[key] for key in layout.model_keys(shapes)}
        config = config or detect_config(shapes, metadata, input_name)
        model = build_on_meta(config)
        validate_keys(shapes_of(model.state_dict()), shapes, input_name, config.name)
        quantised = store_linears_in_fp8(model, dtype) if fp8 else []
        fp8_weights = frozenset(f"{name}.weight" for name in quantised)
        if reserve is not None:
            reserve(torch.device(device), loaded_bytes(model, dtype))
        state = load_tensors(readers, layout, dtype, device, fp8_weights, input_name)
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()


def loaded_bytes(skeleton: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes the weights of ``skeleton`` (built on meta) take once loaded in ``dtype``, its fp8
    ones as stored."""
    return sum(
        tensor.numel() * (tensor.element_size() if tensor.dtype in FP8_FORMATS else dtype.itemsize)
        for tensor in skeleton.state_dict().values()
    )


def write_safetensors(
    tensors: dict[str, torch.Tensor],
    path: Path,
    metadata: dict[str, str] | None = None,
    *,
    overwrite: bool = True,
) -> Path:
    """Published whole (:func:`.paths.published`); without ``overwrite`` never over a file. The
    same tensors and metadata always give the same bytes (:func:`_sort_metadata`), so a file's
    sha256 names its contents: train-demo's manifest can be checked against a rerun."""
    with published(path, overwrite) as partial:
        save_file(tensors, str(partial), metadata)
        _sort_metadata(partial)
    return path


def _sort_metadata(path: Path) -> None:
    """Rewrite the header of a file just saved with its metadata keys in sorted order.

    Why: safetensors keeps the metadata in a Rust hash map, whose order is seeded per process, so
    one file saved twice came out in different bytes (train-demo's model, with three keys: 5 runs
    in 6). The rewrite only reorders the header's JSON, which keeps its length (padding
    included), so the tensor data is not touched, whatever the file's size; a header this JSON
    would not fit exactly is left as safetensors wrote it."""
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        written = handle.read(length)
        header = json.loads(written)
        metadata = header.pop("__metadata__", None)
        if metadata is None or len(metadata) < 2:
            return
        ordered = {"__metadata__": dict(sorted(metadata.items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) != len(written.rstrip(b" ")):
            return
        handle.seek(8)
        handle.write(text.ljust(length))


def save_model(
    model: torch.nn.Module,
    path: str | Path,
    extra_metadata: dict[str, str] | None = None,
    config_key: str = CONFIG_METADATA_KEY,
) -> Path:
    """Safetensors with the model's config dataclass in the metadata under ``config_key``, so the
    file describes itself (the generator and the refiner each have their own key)."""
    path = Path(path)
    metadata = {config_key: json.dumps(asdict(model.config)), **(extra_metadata or {})}
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    return write_safetensors(state, path, metadata)


@dataclass
class WanTransferReport:
    """What initialising the full model from Wan 2.1 did, key by key."""

    mapped: list[str] = field(default_factory=list)
    partially_mapped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


@torch.no_grad()
def initialise_video_stream_from_wan(model: DualStreamMMDiT, path: str | Path) -> WanTransferReport:
    """Copy an original Wan 2.1 T2V checkpoint onto the video stream of a full model (DESIGN §3).

    Wan's names are the video stream's names, so equal names with equal shapes copy 1:1. The patch
    embedding takes concat(V, I, M): Wan's weights fill the V channels and the condition channels
    start at zero, so the initialised model ignores conditions until trained. Everything else
    (audio stream, joint-text weights, the exchange, a different text width) starts fresh.
    """
    shards, shapes, metadata = read_checkpoint_header(Path(path), "wan checkpoint")
    with open_tensors(shards, key_renamer(shapes)) as readers:
        layout = scaled_layout(readers, lambda key: readers[key](), metadata, "wan checkpoint")
        wan = load_tensors(readers, layout, torch.float32, "cpu", input_name="wan checkpoint")
    report = WanTransferReport()
    own = model.state_dict()
    for key, target in own.items():
        source = wan.get(key)
        if source is not None and source.shape == target.shape:
            target.copy_(source.to(target.dtype))
            report.mapped.append(key)
        elif (
            key == "patch_embedding.weight"
            and source is not None
            and source.shape[1] < target.shape[1]
        ):
            target.zero_()
            target[:, : source.shape[1]] = source.to(target.dtype)
            report.partially_mapped.append(key)
        else:
            report.fresh.append(key)
    report.unused = sorted(wan.keys() - own.keys())
    return report
