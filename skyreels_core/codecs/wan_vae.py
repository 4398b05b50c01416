"""The Wan 2.1 video VAE behind the codec protocol, through diffusers' AutoencoderKLWan.

The architecture config ships with the pack (``configs/wan2.1_vae.json``), so nothing is fetched;
weights come from the original single-file checkpoint (Wan's own key names, as safetensors),
converted by diffusers' own converter and validated key by key. Latents are normalised per channel
with the config's mean/std (DESIGN §2). The causal encoder/decoder runs frame group by frame
group with a feature cache, so memory is bounded in time; spatial tiling is the codec-agnostic
:mod:`skyreels_core.codecs.tiling`. Between uses the weights rest on an offload device.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import InputError
from ..loading import read_header, shapes_of, validate_keys
from ..offload import ReserveMemory, rest_on, visiting
from ..requirements import import_required

CONFIG = Path(__file__).resolve().parent / "configs" / "wan2.1_vae.json"

# Working memory per pixel of one frame, in elements of the compute dtype: the causal VAE runs
# one latent frame at a time, so its activations scale with the frame, not the clip. Tracked peaks
# of diffusers' AutoencoderKLWan (bench part working_memory) reach 4,900 for decode and 3,570 for
# encode; these are the host's budgets for the same VAE (ComfyUI's sd.py), leaving the caching
# allocator its margin.
DECODE_ELEMENTS_PER_PIXEL = 7000
ENCODE_ELEMENTS_PER_PIXEL = 6000
CACHED_FRAMES = 2  # what each causal conv keeps of the chunk before (diffusers' CACHE_T)


def ram_lower_bound(
    way: str,
    base_dim: int,
    res_blocks: int,
    itemsize: int,
    frames: int,
    height: int,
    width: int,
    chunk_frames: int = 4,
) -> int:
    """At least the bytes a Wan 2.1 VAE's ``way`` ("encode" or "decode") of a clip of ``frames``
    at height x width px takes beside its input, from its config alone (a full-size VAE's figure
    without loading one). Both run a chunk of ``chunk_frames`` frames at a time (frame 0 alone
    first) through a full-resolution stage ``base_dim`` channels wide (the encoder's first, the
    decoder's last), where at least this is alive at once, in the compute dtype: a residual
    block's input, the activation it convolves, that padded with the cached frames, its output,
    and the caches of the stage's convs. Beside it, the whole clip: an encode's input moved to
    -1..1 (float32), a decode's output (compute dtype).

    diffusers' and ComfyUI's encoders hold at least that much (ComfyUI's drops a conv's old cache
    before padding): diffusers' full-size VAE peaks at 1.2 to 1.4 times it in tensors and 1.5 to
    3.2 times in RSS (bench/encode_ram.py; the rest is CPU convolution workspaces and the
    allocator), ComfyUI's at 1.5 to 3 in RSS; its decodes at about twice it in tensors (the
    decoder's upsampling stages hold more)."""
    chunk = min(frames, chunk_frames)
    caches = 2 * res_blocks * min(chunk, CACHED_FRAMES)
    alive_frames = 3 * chunk + (chunk + CACHED_FRAMES) + caches
    clip_itemsize = 4 if way == "encode" else itemsize
    return frames * height * width * 3 * clip_itemsize + (
        alive_frames * base_dim * height * width * itemsize
    )


class WanRamBounds:
    """``encode_ram_bytes`` / ``decode_ram_bytes`` (what ``memory.check_codec_ram`` reads)
    of a Wan 2.1 VAE whose ``ram_shape`` gives its base width, residual blocks per stage and
    compute dtype's item size: the pack's own VAE and the host's."""

    def ram_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def encode_ram_bytes(self, frames: int, height: int, width: int) -> int:
        return ram_lower_bound("encode", *self.ram_shape(), frames, height, width)

    def decode_ram_bytes(self, frames: int, height: int, width: int) -> int:
        return ram_lower_bound("decode", *self.ram_shape(), frames, height, width)


class WanVideoCodec(WanRamBounds):
    def __init__(
        self,
        vae,
        offload_device: torch.device | str | None = None,
        reserve: ReserveMemory | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """``vae`` computes on ``device`` (default: where its weights are now); they rest on
        ``offload_device`` (default: there too) between encodes and decodes, and ``reserve`` is
        asked for room before they move to either."""
        self.vae = vae.eval().requires_grad_(False)
        parameter = next(vae.parameters())
        self.device, self.dtype = torch.device(device or parameter.device), parameter.dtype
        self.offload_device = torch.device(offload_device or self.device)
        rest_on(self.vae, self.offload_device, reserve)
        self.reserve = reserve
        self.latent_channels = vae.config.z_dim
        self.spatial_stride = 2 ** len(vae.config.temperal_downsample)
        self.temporal_stride = 2 ** sum(vae.config.temperal_downsample)
        self.mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)

    @classmethod
    def from_single_file(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device="cpu",
        offload_device: torch.device | str | None = None,
        config: dict | None = None,
        reserve: ReserveMemory | None = None,
        input_name: str = "vae_name",
    ) -> WanVideoCodec:
        """Errors name the input that picked the file as the caller calls it (default: the Load
        Video VAE node's)."""
        diffusers = import_required("diffusers", input_name)
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        path = Path(path)
        read_header(path, input_name)
        config = config or {
            k: v for k, v in json.loads(CONFIG.read_text()).items() if not k.startswith("_")
        }
        vae = diffusers.AutoencoderKLWan.from_config(config)
        state = convert_wan_vae_to_diffusers(load_file(str(path)))
        validate_keys(
            shapes_of(vae.state_dict()),
            shapes_of(state),
            input_name,
            "Wan 2.1 VAE",
            "use the original Wan 2.1 VAE (wan_2.1_vae.safetensors)",
        )
        vae.load_state_dict(state)
        return cls(vae.to(dtype=dtype), offload_device, reserve, device)

    def ram_shape(self) -> tuple[int, int, int]:
        """For :class:`WanRamBounds`: this VAE's config and compute dtype."""
        return self.vae.config.base_dim, self.vae.config.num_res_blocks, self.dtype.itemsize

    def _placed(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.dtype)

    def _visit(self, elements: int):
        """The VAE on its compute device, with room asked for it and ``elements`` of working
        memory in the compute dtype."""
        working = elements * self.dtype.itemsize
        return visiting(self.vae, self.device, self.offload_device, self.reserve, working)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] in 0..1 (T = 4k+1) -> normalised latents [B, 16, T_lat, H/8, W/8]."""
        if frames.dim() != 5 or frames.shape[-1] != 3:
            raise InputError(
                "frames", f"shape {tuple(frames.shape)}", "pass [batch, frames, height, width, 3]"
            )
        batch, _, height, width, _ = frames.shape
        pixels = batch * height * width
        with self._visit(ENCODE_ELEMENTS_PER_PIXEL * pixels + frames.numel()):
            x = self._placed(frames.permute(0, 4, 1, 2, 3) * 2 - 1)
            latents = self.vae.encode(x).latent_dist.mode().float().cpu()
        return (latents - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> [B, T, H, W, 3] in 0..1."""
        if latents.dim() != 5 or latents.shape[1] != self.latent_channels:
            raise InputError(
                "video_latents",
                f"shape {tuple(latents.shape)}",
                f"pass [batch, {self.latent_channels}, frames, height, width]",
            )
        batch, _, latent_frames, height, width = latents.shape
        pixels = batch * height * width * self.spatial_stride**2
        frames = (latent_frames - 1) * self.temporal_stride + 1
        # Output frames are gathered on the device and copied once more as they grow.
        with self._visit(DECODE_ELEMENTS_PER_PIXEL * pixels + 2 * 3 * frames * pixels):
            z = self._placed(latents.float().cpu() * self.std + self.mean)
            x = self.vae.decode(z).sample.cpu()
        # in place: out of place held three clip-sized copies in RAM (2.7 GB at 720p, 81 frames)
        return x.float().add_(1).div_(2).clamp_(0, 1).permute(0, 2, 3, 4, 1)
