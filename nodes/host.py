"""The one module that talks to ComfyUI.

Everything host-specific (devices, progress bars, interrupts, model and input folders) goes through
here, so the rest of the pack runs the same with or without the host. Without ComfyUI it falls back
to plain torch device selection, a tqdm bar, a no-op interrupt check and a models directory from
``SKYREELS_MODELS_DIR`` (default ``./models``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from skyreels_core.codecs.wan_vae import WanRamBounds
from skyreels_core.loading import is_later_shard
from skyreels_core.memory import empty_device_cache
from skyreels_core.offload import device_bytes
from skyreels_core.paths import resolve_inside

try:
    import comfy.model_management as model_management
    import comfy.utils as comfy_utils
    import folder_paths

    IN_COMFYUI = True
except ImportError:
    model_management = comfy_utils = folder_paths = None
    IN_COMFYUI = False

# Pack folder kind -> (host folder key, sub-folder of models/). The first three are the host's own
# keys, so files users already keep for Wan / Qwen-Image show up without copying.
MODEL_FOLDERS: dict[str, tuple[str, str]] = {
    "diffusion_models": ("diffusion_models", "diffusion_models"),
    "text_encoders": ("text_encoders", "text_encoders"),
    "video_vae": ("vae", "vae"),
    "audio_vae": ("skyreels_audio_vae", "audio_vae"),
    "refiner": ("skyreels_refiner", "skyreels_refiner"),
    "loras": ("loras", "loras"),
}


def models_dir() -> Path:
    if IN_COMFYUI:
        return Path(folder_paths.models_dir)
    return Path(os.environ.get("SKYREELS_MODELS_DIR", "models"))


def register_model_folders() -> None:
    """Make the host list files from ``models/<folder>`` for the pack's own folder kinds."""
    if not IN_COMFYUI:
        return
    for host_key, subfolder in MODEL_FOLDERS.values():
        if host_key not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(host_key, str(models_dir() / subfolder))


def model_folders(kind: str) -> list[Path]:
    host_key, subfolder = MODEL_FOLDERS[kind]
    if IN_COMFYUI:
        return [Path(path) for path in folder_paths.get_folder_paths(host_key)]
    return [models_dir() / subfolder]


def list_models(kind: str) -> list[str]:
    """File names (relative to their folder) of one kind, as the loaders' dropdowns show them;
    a sharded checkpoint shows as its first shard, which loads the set."""
    if IN_COMFYUI:
        names = set(folder_paths.get_filename_list(MODEL_FOLDERS[kind][0]))
    else:
        names = {
            str(path.relative_to(folder)).replace(os.sep, "/")
            for folder in model_folders(kind)
            if folder.is_dir()
            for path in folder.rglob("*")
            if path.is_file()
        }
    return sorted(
        name for name in names if name.endswith(".safetensors") and not is_later_shard(name)
    )


def qwen25_tokenizer_folder() -> Path | None:
    """The Qwen2.5 tokenizer the host ships for its own Qwen2.5-VL text encoder (a single-file
    encoder carries none); None outside ComfyUI or where this version lacks it."""
    if not IN_COMFYUI:
        return None
    folder = Path(model_management.__file__).parent / "text_encoders" / "qwen25_tokenizer"
    return folder if folder.is_dir() else None


def list_model_dirs(kind: str) -> list[str]:
    """Sub-folders of one kind (multi-file models such as the MLLM encoder)."""
    return sorted(
        path.name
        for folder in model_folders(kind)
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_dir()
    )


def model_path(kind: str, name: str) -> Path:
    """Full path of a model file chosen in the UI, refused outside the host's model folders."""
    return resolve_inside(model_folders(kind), name, input_name=f"{kind} file")


def model_dir_path(kind: str, name: str) -> Path:
    """Full path of a model folder chosen in the UI, refused outside the host's model folders."""
    return resolve_inside(model_folders(kind), name, f"{kind} folder", Path.is_dir)


def input_dir() -> Path:
    if IN_COMFYUI:
        return Path(folder_paths.get_input_directory())
    return Path(os.environ.get("SKYREELS_INPUT_DIR", "input"))


def output_dir() -> Path:
    if IN_COMFYUI:
        return Path(folder_paths.get_output_directory())
    return Path(os.environ.get("SKYREELS_OUTPUT_DIR", "output"))


def metadata_disabled() -> bool:
    """The host's --disable-metadata: saved files then carry no prompt or workflow (a server
    shared with clients, or renders handed out), as its own save nodes honour it."""
    if not IN_COMFYUI:
        return False
    from comfy.cli_args import args

    return bool(getattr(args, "disable_metadata", False))


def temp_dir() -> Path:
    """The host's temp folder (emptied when ComfyUI starts), where previews go."""
    if IN_COMFYUI:
        return Path(folder_paths.get_temp_directory())
    return Path(os.environ.get("SKYREELS_TEMP_DIR", "temp"))


def input_path(name: str, input_name: str = "input file") -> Path:
    return resolve_inside(input_dir(), name, input_name=input_name)


OUTPUT_MARK = " [output]"  # the host's annotation for a file picked from the output folder
FOLDER_MARKS = {" [input]": input_dir, OUTPUT_MARK: output_dir, " [temp]": temp_dir}


def annotated_path(name: str, input_name: str = "input file") -> Path:
    """A file as the host's pickers and API scripts name it: in the input folder, or in the
    folder its annotation names (``clip.mp4 [output]``: a file an earlier run saved, used
    without copying it), as the host's own loaders read such names."""
    for mark, folder in FOLDER_MARKS.items():
        if name.endswith(mark):
            return resolve_inside(folder(), name.removesuffix(mark), input_name=input_name)
    return input_path(name, input_name)


def files_named(suffix: str) -> list[str]:
    """Files ending in ``suffix``: the input folder's top level, then every one under the output
    folder, marked with :data:`OUTPUT_MARK` (what :func:`annotated_path` opens)."""
    names = []
    for root, marked in ((input_dir(), False), (output_dir(), True)):
        if not root.is_dir():
            continue
        found = root.rglob(f"*{suffix}") if marked else root.glob(f"*{suffix}")
        relative = sorted(path.relative_to(root).as_posix() for path in found if path.is_file())
        names += [name + OUTPUT_MARK if marked else name for name in relative]
    return names


EXAMPLES_OFFERED = ".skyreels_v4_examples"  # in the input folder: the example names copied once


def install_example_inputs(assets: Path) -> list[str]:
    """Copy the shipped workflows' example inputs into the host's input folder, so a workflow
    opened from the template browser runs without setup. Only inside ComfyUI, each name once
    (one the artist deleted stays deleted; one a pack update adds arrives), never over a file of
    the same name, and never fatal: the pack loads even where the folder is read-only.
    ``SKYREELS_NO_EXAMPLE_INPUTS=1`` turns it off."""
    if not IN_COMFYUI or os.environ.get("SKYREELS_NO_EXAMPLE_INPUTS") == "1":
        return []
    target = input_dir()
    record = target / EXAMPLES_OFFERED
    copied = []
    try:
        offered = set(record.read_text().split()) if record.is_file() else set()
        names = sorted(asset.name for asset in assets.iterdir() if asset.is_file())
        if offered >= set(names):
            return []
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            destination = target / name
            if name not in offered and not destination.exists():
                partial = destination.with_name(f".{name}.partial")
                shutil.copyfile(assets / name, partial)
                partial.replace(destination)  # never a half-copied file under the real name
                copied.append(name)
        record.write_text("\n".join(sorted(offered | set(names))) + "\n")
    except OSError as error:
        logging.warning("SkyReels-V4: could not copy the example inputs to %s (%s)", target, error)
    if copied:
        logging.info("SkyReels-V4: copied %d example inputs to %s", len(copied), target)
    return copied


def torch_device() -> torch.device:
    if IN_COMFYUI:
        return model_management.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def reserve(device: torch.device, needed_bytes: int) -> None:
    """Before the pack puts ``needed_bytes`` on ``device``, ask the host to unload its own models
    (core or another pack's, e.g. the image model that made the first frame) until they and the
    host's inference reserve fit. The pack's models live outside the host's model management, so
    without this the host keeps its models resident and the pack's run out of memory. Standalone
    and on the CPU there is nothing to ask."""
    if IN_COMFYUI and torch.device(device).type != "cpu":
        needed = needed_bytes + model_management.minimum_inference_memory()
        model_management.free_memory(needed, torch.device(device))


def make_room(
    module: torch.nn.Module, device: torch.device, swapped: int = 0, extra_bytes: int = 0
) -> None:
    """:func:`reserve` room for ``module``'s weights with its first ``swapped`` layers
    block-swapped, plus ``extra_bytes`` (a LoRA's tensors)."""
    reserve(device, device_bytes(module, swapped) + extra_bytes)


def offload_device() -> torch.device:
    if IN_COMFYUI:
        return model_management.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    if IN_COMFYUI:
        return model_management.intermediate_device()
    return torch.device("cpu")


def soft_empty_cache() -> None:
    if IN_COMFYUI:
        model_management.soft_empty_cache()
    else:
        empty_device_cache()


def check_interrupt() -> None:
    """Raise the host's interrupt exception when the user pressed Cancel; a no-op standalone."""
    if IN_COMFYUI:
        model_management.throw_exception_if_processing_interrupted()


def previews_on() -> bool:
    """Whether live previews are shown: in ComfyUI its ``--preview-method`` decides (none unless
    asked for), for its own samplers and the pack's alike, so an API script that asked for none
    is not sent an image a step; standalone, whoever passed the hooks asked for them."""
    if not IN_COMFYUI:
        return True
    from comfy.cli_args import LatentPreviewMethod, args

    return getattr(args, "preview_method", None) != LatentPreviewMethod.NoPreviews


class Progress:
    """A progress bar with optional live previews: the host's bar in ComfyUI, tqdm otherwise."""

    def __init__(self, total: int, node_id: str | None = None, description: str = "SkyReels-V4"):
        self.total = total
        if IN_COMFYUI:
            self._bar = comfy_utils.ProgressBar(total, node_id=node_id)
        else:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=description, leave=False)
        self.value = 0

    def update(self, value: int, preview=None) -> None:
        """Move to ``value`` of ``total``; ``preview`` is a PIL image shown in the node (host only)."""
        if IN_COMFYUI:
            shown = ("JPEG", preview, 512) if preview is not None else None
            self._bar.update_absolute(value, self.total, shown)
        else:
            self._bar.update(value - self.value)
        self.value = value

    def close(self) -> None:
        if not IN_COMFYUI:
            self._bar.close()

    def part(self, offset: int) -> ProgressPart:
        """A pass whose steps fill this bar from ``offset`` on (one window of a long clip)."""
        return ProgressPart(self, offset)


class ProgressPart:
    """Step n of one pass is step offset + n of the whole bar: one bar over all of Extend to
    Length's windows, where each window's Sampler filled the node's bar anew."""

    def __init__(self, bar: Progress, offset: int):
        self.bar, self.offset = bar, offset

    def update(self, value: int, preview=None) -> None:
        self.bar.update(self.offset + value, preview)


class HostWanVideoCodec(WanRamBounds):
    """The host's own Wan 2.1 VAE object behind the pack's VideoCodec protocol.

    ComfyUI's VAE returns raw latents; the pack's latents are normalised per channel (DESIGN §2), so
    the host's Wan 2.1 latent format converts in both directions.
    """

    latent_channels = 16
    temporal_stride = 4
    spatial_stride = 8

    def __init__(self, vae) -> None:
        import comfy.latent_formats

        self.vae = vae
        self.latent_format = comfy.latent_formats.Wan21()

    @property
    def device(self) -> torch.device:
        """Where the host's VAE computes (the CPU on a CPU-only host)."""
        return self.vae.device

    def ram_shape(self) -> tuple[int, int, int]:
        """For :class:`WanRamBounds`: the host model's config and compute dtype."""
        model = self.vae.first_stage_model
        return model.dim, model.num_res_blocks, self.vae.vae_dtype.itemsize

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        latents = [self.vae.encode(clip[..., :3]) for clip in frames]
        return self.latent_format.process_in(torch.cat(latents).float())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        frames = self.vae.decode(self.latent_format.process_out(latents))
        return frames.float().clamp(0, 1)


def wan21_preview_factors() -> torch.Tensor | None:
    """ComfyUI's own Wan 2.1 latent-to-RGB factors (what it previews Wan with) as [17, 3]:
    normalised latents and a bias to 0..1 (the host maps to -1..1). None outside ComfyUI or
    where the host publishes none."""
    if not IN_COMFYUI:
        return None
    import comfy.latent_formats

    published = comfy.latent_formats.Wan21
    if getattr(published, "latent_rgb_factors", None) is None:
        return None
    factors = torch.tensor(published.latent_rgb_factors, dtype=torch.float32)
    bias = torch.tensor(getattr(published, "latent_rgb_factors_bias", None) or [0.0] * 3)
    return torch.cat([factors, bias[None] + 1]) / 2


def is_host_wan_vae(vae) -> bool:
    """True for a ComfyUI VAE object holding the Wan 2.1 video VAE. Its channels and strides
    (16, 4x8x8) are HunyuanVideo's VAE's too, whose latents mean something else: the host's
    model class decides."""
    if not IN_COMFYUI:
        return False
    import comfy.ldm.wan.vae

    return (
        isinstance(getattr(vae, "first_stage_model", None), comfy.ldm.wan.vae.WanVAE)
        and getattr(vae, "latent_channels", None) == 16
        and getattr(vae, "downscale_index_formula", None) == (4, 8, 8)
    )
