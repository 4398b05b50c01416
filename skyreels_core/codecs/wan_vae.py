"""The Wan 2.1 video VAE behind the codec protocol, through diffusers' AutoencoderKLWan.

The architecture config ships with the pack (``configs/wan2.1_vae.json``), so nothing is fetched;
weights come from the original single-file checkpoint (Wan's own key names, as safetensors),
converted by diffusers' own converter and validated key by key. Latents are normalised per channel
with the config's mean/std (DESIGN §2). The causal encoder/decoder runs frame group by frame
group with a feature cache, so memory is bounded in time; spatial tiling reuses diffusers' tiles,
blended linearly over the overlap so there are no seams.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import CheckpointError, InputError
from ..loading import read_header, validate_keys

CONFIG = Path(__file__).resolve().parent / "configs" / "wan2.1_vae.json"


class WanVideoCodec:
    temporal_stride = 4
    spatial_stride = 8

    def __init__(self, vae) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.latent_channels = vae.config.z_dim
        self.mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)

    def set_tiling(self, tile_size: int | None, tile_overlap: int = 8) -> None:
        """Tile encode/decode spatially; sizes in latent pixels, None = untiled.

        Why: a 720p decode holds every activation of the full frame at once; tiles of tile_size
        latent pixels bound that, and the overlap is blended so the joins are not visible.
        """
        if tile_size is None:
            self.vae.disable_tiling()
            return
        if not 0 <= tile_overlap < tile_size:
            raise InputError(
                "tile_overlap",
                f"{tile_overlap} with tile_size {tile_size}",
                "use an overlap of at least 0 and smaller than tile_size",
            )
        size, stride = (
            tile_size * self.spatial_stride,
            (tile_size - tile_overlap) * self.spatial_stride,
        )
        self.vae.enable_tiling(size, size, stride, stride)

    @classmethod
    def from_single_file(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device="cpu",
        config: dict | None = None,
    ) -> WanVideoCodec:
        from diffusers import AutoencoderKLWan
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        path = Path(path)
        read_header(path, "video_vae")
        config = config or {
            k: v for k, v in json.loads(CONFIG.read_text()).items() if not k.startswith("_")
        }
        vae = AutoencoderKLWan.from_config(config)
        state = convert_wan_vae_to_diffusers(load_file(str(path)))
        expected = {key: tuple(value.shape) for key, value in vae.state_dict().items()}
        try:
            validate_keys(
                expected,
                {key: tuple(value.shape) for key, value in state.items()},
                "video_vae",
                "Wan 2.1 VAE",
            )
        except CheckpointError as error:
            raise CheckpointError(
                "video_vae", error.problem, "use the original Wan 2.1 VAE (wan_2.1_vae.safetensors)"
            ) from None
        vae.load_state_dict(state)
        return cls(vae.to(device=device, dtype=dtype))

    def _placed(self, x: torch.Tensor) -> torch.Tensor:
        parameter = next(self.vae.parameters())
        return x.to(parameter.device, parameter.dtype)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] in 0..1 (T = 4k+1) -> normalised latents [B, 16, T_lat, H/8, W/8]."""
        if frames.dim() != 5 or frames.shape[-1] != 3:
            raise InputError(
                "frames", f"shape {tuple(frames.shape)}", "pass [batch, frames, height, width, 3]"
            )
        x = self._placed(frames.permute(0, 4, 1, 2, 3) * 2 - 1)
        latents = self.vae.encode(x).latent_dist.mode().float().cpu()
        return (latents - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> [B, T, H, W, 3] in 0..1."""
        x = self.vae.decode(self._placed(latents.float().cpu() * self.std + self.mean)).sample
        return ((x.float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)
