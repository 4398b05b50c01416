"""MMAudio-44k audio VAE + BigVGAN vocoder behind the codec protocol, through diffusers.

Both configs ship with the pack (``configs/mmaudio_44k_*.json``), so nothing is fetched. One token
covers 1024 samples at 44.1 kHz (mel hop 512, encoder downsamples by 2), the rate the paper's audio
stream uses (218 tokens for 81 frames at 16 fps). The VAE is read in diffusers' key layout or in
MMAudio's own (what ComfyUI-MMAudio's ``mmaudio_vae_44k*.safetensors`` hold), the vocoder in
diffusers' layout or BigVGAN's own (weight-normed convs), both converted here. Keys are validated
one by one; the mel filterbank and window are computed, not loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import CheckpointError, InputError
from ..loading import read_header, shapes_of, validate_keys
from ..offload import ReserveMemory, rest_on, visiting
from ..requirements import import_required

CONFIGS = Path(__file__).resolve().parent / "configs"
COMPUTED = "mel_converter."  # filterbank and window buffers, rebuilt from the config

# Working memory in elements of the compute dtype, about 1.4x the tracked peaks of diffusers'
# MMAudioVAE (48 MiB in float32 plus 10 elements per sample, encode or decode) and
# MMAudioVocoder (240 elements per output sample) measured by bench part working_memory.
VAE_FIXED_ELEMENTS = 18_000_000
VAE_ELEMENTS_PER_SAMPLE = 14
VOCODER_ELEMENTS_PER_SAMPLE = 340
# Mel frames vocoded at once (11.9 s at 44.1 kHz; 0.26 GB of working memory in bf16), and the
# frames of context read on either side: an output sample of MMAudio-44k's vocoder depends on
# the mel frames within 19 of its own (measured with a perturbed frame).
VOCODE_CHUNK_FRAMES = 1024
VOCODE_CONTEXT_FRAMES = 32


def _config(name: str) -> dict:
    raw = json.loads((CONFIGS / name).read_text())
    return {key: value for key, value in raw.items() if not key.startswith("_")}


def _load(model: torch.nn.Module, state: dict, input_name: str, what: str) -> None:
    computed = lambda key: key.startswith(COMPUTED)  # noqa: E731
    state = {key: value for key, value in state.items() if not computed(key)}
    expected = shapes_of(model.state_dict(), computed)
    validate_keys(expected, shapes_of(state), input_name, what, f"use the {what} weights")
    model.load_state_dict(state, strict=False)


def _is_original_vae(state: dict) -> bool:
    return "encoder.conv_in.weight" in state and not any(k.startswith("vae.") for k in state)


def original_vae_to_diffusers(state: dict) -> dict:
    """MMAudio's own VAE state (``data_mean``, ``encoder.*``, ``decoder.*``) in diffusers' layout:
    every key under ``vae.``, and every conv weight with its weight normalisation baked in, as
    MMAudio's ``remove_weight_norm`` does before inference (each output channel to unit RMS per
    element, then divided by sqrt(fan-in)); diffusers' convs take the baked weights as they are.
    """
    converted = {}
    for key, value in state.items():
        if key.endswith(".weight"):
            weight = value.float()
            fan_in = weight[0].numel()
            norm = torch.linalg.vector_norm(weight, dim=list(range(1, weight.dim())), keepdim=True)
            value = (weight / (1e-4 + norm / fan_in**0.5) / fan_in**0.5).to(value.dtype)
        converted[f"vae.{key}"] = value
    return converted


WEIGHT_NORM_PAIRS = ((".weight_g", ".weight_v"),
                     (".parametrizations.weight.original0", ".parametrizations.weight.original1"))  # fmt: skip


def bigvgan_to_diffusers(state: dict) -> dict:
    """BigVGAN's own vocoder state (NVIDIA's layout, every conv weight-normed as magnitude ``g``
    and direction ``v``, in torch's old or parametrised naming) in diffusers' MMAudioVocoder
    layout, whose module names are BigVGAN's: each pair becomes ``weight = g * v / ||v||``
    (norm over all but the first dimension, torch's ``weight_norm`` default)."""
    converted = dict(state)
    for magnitude_suffix, direction_suffix in WEIGHT_NORM_PAIRS:
        for key in [k for k in state if k.endswith(magnitude_suffix)]:
            prefix = key.removesuffix(magnitude_suffix)
            magnitude = converted.pop(key)
            direction = converted.pop(prefix + direction_suffix).float()
            dims = list(range(1, direction.dim()))
            norm = torch.linalg.vector_norm(direction, dim=dims, keepdim=True)
            converted[f"{prefix}.weight"] = (magnitude.float() * direction / norm).to(
                magnitude.dtype
            )
    return converted


def _read(path: str | Path, input_name: str) -> dict:
    read_header(Path(path), input_name)
    return load_file(str(path))


class MMAudioCodec:
    def __init__(
        self,
        vae,
        vocoder,
        offload_device: torch.device | str | None = None,
        reserve: ReserveMemory | None = None,
        device: torch.device | str | None = None,
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        """VAE and vocoder compute on ``device`` (default: where their weights are now); they
        rest on ``offload_device`` (default: there too) between encodes and decodes, and
        ``reserve`` is asked for room before they move to either. ``interrupt`` is called
        between a long sound's vocoder chunks and stops the decode by raising (a host's Cancel:
        a minutes-long sound vocodes for minutes on a GPU, hours on a CPU)."""
        self.vae = vae.eval().requires_grad_(False)
        self.vocoder = vocoder.eval().requires_grad_(False)
        parameter = next(vae.parameters())
        self.device, self.dtype = torch.device(device or parameter.device), parameter.dtype
        # The log-mel front end stays in float32, as MMAudio keeps it: FFTs take no bfloat16 on
        # CPU (nor half precision at most sizes), and the mel's log wants the range.
        self.vae.mel_converter.float()
        self.offload_device = torch.device(offload_device or self.device)
        rest_on(self.vae, self.offload_device, reserve)
        rest_on(self.vocoder, self.offload_device, reserve)
        self.reserve = reserve
        self.interrupt = interrupt or (lambda: None)
        self.latent_channels = vae.config.latent_channels
        self.channels = 1
        self.sample_rate = vae.config.sample_rate
        self.samples_per_token = vae.latent_hop_length
        self.scale = vae.config.scaling_factor

    @classmethod
    def from_single_file(
        cls,
        vae_path: str | Path,
        vocoder_path: str | Path | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device="cpu",
        offload_device: torch.device | str | None = None,
        vae_config: dict | None = None,
        vocoder_config: dict | None = None,
        reserve: ReserveMemory | None = None,
        interrupt: Callable[[], None] | None = None,
        vae_input_name: str = "vae_name",
        vocoder_input_name: str = "vocoder_name",
    ) -> MMAudioCodec:
        """vocoder_path None: the vocoder weights are in the VAE file under ``vocoder.``. Errors
        name the inputs that picked the two files as the caller calls them (default: the Load
        Audio VAE node's)."""
        diffusers = import_required("diffusers", vae_input_name)
        vae = diffusers.MMAudioVAE.from_config(vae_config or _config("mmaudio_44k_vae.json"))
        vocoder = diffusers.MMAudioVocoder.from_config(
            vocoder_config or _config("mmaudio_44k_vocoder.json")
        )
        state = _read(vae_path, vae_input_name)
        voc_state = {k[8:]: v for k, v in state.items() if k.startswith("vocoder.")}
        state = {k: v for k, v in state.items() if not k.startswith("vocoder.")}
        if _is_original_vae(state):
            state = original_vae_to_diffusers(state)
        _load(vae, state, vae_input_name, "MMAudio-44k VAE")  # a file of another kind: its input
        if vocoder_path is not None:
            voc_state = _read(vocoder_path, vocoder_input_name)
        elif not voc_state:
            raise CheckpointError(
                vocoder_input_name,
                f"{Path(vae_path).name} holds no vocoder weights (no vocoder.* keys)",
                f"pick the vocoder file in {vocoder_input_name}, or a VAE file in "
                f"{vae_input_name} that holds its vocoder",
            )
        _load(
            vocoder, bigvgan_to_diffusers(voc_state), vocoder_input_name, "MMAudio BigVGAN vocoder"
        )
        vae, vocoder = (part.to(dtype=dtype) for part in (vae, vocoder))
        return cls(vae, vocoder, offload_device, reserve, device, interrupt)

    def _placed(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.dtype)

    def _visit(self, part: torch.nn.Module, elements: int):
        """``part`` on the compute device, with room asked for it and ``elements`` of working
        memory in the compute dtype."""
        working = elements * self.dtype.itemsize
        return visiting(part, self.device, self.offload_device, self.reserve, working)

    def _vae_elements(self, batch: int, tokens: int) -> int:
        return batch * (
            VAE_FIXED_ELEMENTS + VAE_ELEMENTS_PER_SAMPLE * tokens * self.samples_per_token
        )

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, 1, S] mono at sample_rate, S a multiple of 1024 -> scaled latents [B, 40, S/1024]."""
        if waveform.dim() != 3 or waveform.shape[1] != 1:
            raise InputError(
                "waveform",
                f"shape {tuple(waveform.shape)}",
                "pass mono [batch, 1, samples]; av_io.resample_audio(..., channels=1) converts it",
            )
        if waveform.shape[-1] % self.samples_per_token:
            raise InputError(
                "waveform",
                f"{waveform.shape[-1]} samples",
                f"pad or trim to a multiple of {self.samples_per_token} samples",
            )
        batch, _, samples = waveform.shape
        with self._visit(self.vae, self._vae_elements(batch, samples // self.samples_per_token)):
            mono = waveform[:, 0].to(self.device, torch.float32)
            posterior = self.vae.encode(mono).latent_dist
            latents = posterior.mode().float().cpu()
        return latents * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, 40, L] -> mono waveform [B, 1, L * 1024] in -1..1."""
        return self.vocode(self.decode_mel(latents))

    @torch.no_grad()
    def decode_mel(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, 40, L] -> the VAE's mel spectrogram, left on the compute device."""
        if latents.dim() != 3 or latents.shape[1] != self.latent_channels:
            raise InputError(
                "audio_latents",
                f"shape {tuple(latents.shape)}",
                f"pass [batch, {self.latent_channels}, tokens]",
            )
        batch, _, tokens = latents.shape
        with self._visit(self.vae, self._vae_elements(batch, tokens)):
            return self.vae.decode(self._placed(latents.float() / self.scale)).sample

    @torch.no_grad()
    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """The vocoder: mel [B, mels, frames] -> mono waveform [B, 1, samples] on the CPU.

        A sound longer than :data:`VOCODE_CHUNK_FRAMES` goes through in chunks, each read with
        :data:`VOCODE_CONTEXT_FRAMES` of its neighbours' frames on either side and cut back to
        its own samples: the vocoder's working memory (240 elements an output sample) stays that
        of a chunk, so a Video to Audio clip of minutes decodes where a GPU, or a CPU host's RAM,
        holds one chunk; the samples equal the whole sound's to float rounding, since no output
        sample reaches further than the context."""
        frames, hop = mel.shape[-1], self.vae.config.hop_length
        chunk = min(frames, VOCODE_CHUNK_FRAMES + 2 * VOCODE_CONTEXT_FRAMES)
        with self._visit(self.vocoder, VOCODER_ELEMENTS_PER_SAMPLE * mel.shape[0] * chunk * hop):
            if frames <= VOCODE_CHUNK_FRAMES:
                return self.vocoder(mel).sample.cpu().float()
            pieces = []
            for start in range(0, frames, VOCODE_CHUNK_FRAMES):
                if start:
                    self.interrupt()
                first = max(start - VOCODE_CONTEXT_FRAMES, 0)
                last = min(start + VOCODE_CHUNK_FRAMES + VOCODE_CONTEXT_FRAMES, frames)
                own = min(VOCODE_CHUNK_FRAMES, frames - start)
                sound = self.vocoder(mel[..., first:last]).sample
                cut = (start - first) * hop
                pieces.append(sound[..., cut : cut + own * hop].cpu().float())
            return torch.cat(pieces, dim=-1)
