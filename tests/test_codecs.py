"""The Wan 2.1 VAE through diffusers: original-layout checkpoints load exactly."""

from __future__ import annotations

import pytest
import torch
from codec_helpers import (
    FIELD,
    TINY,
    TINY_AUDIO,
    TINY_VOCODER,
    local_wan_vae,
    write_tiny_mmaudio,
    write_tiny_wan_vae,
)
from safetensors.torch import load_file, save_file

from skyreels_core.codecs import VideoCodec, audio_token_count
from skyreels_core.codecs.tiling import bands, decode_tiled, encode_tiled, tile_starts
from skyreels_core.codecs.wan_vae import WanVideoCodec
from skyreels_core.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def reference_and_file(tmp_path_factory):
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    path = tmp_path_factory.mktemp("vae") / "wan_2.1_vae_tiny.safetensors"
    vae = write_tiny_wan_vae(path)
    original = load_file(str(path))
    assert set(convert_wan_vae_to_diffusers(original)) == set(vae.state_dict())  # exact inverse
    return vae, path


def test_original_checkpoint_loads_and_matches_diffusers(reference_and_file):
    vae, path = reference_and_file
    codec = WanVideoCodec.from_single_file(path, config=TINY)
    assert isinstance(codec, VideoCodec) and codec.latent_channels == 16
    frames = torch.rand(1, 5, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    latents = codec.encode(frames)
    assert latents.shape == (1, 16, 2, 4, 4)
    with torch.no_grad():
        direct = vae.encode(frames.permute(0, 4, 1, 2, 3) * 2 - 1).latent_dist.mode()
        expected = (direct - codec.mean) / codec.std
        assert (latents - expected).abs().max() < 1e-5
        decoded = vae.decode(direct).sample
    assert (
        codec.decode(latents) - ((decoded + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)
    ).abs().max() < 1e-5


def test_wrong_files_are_refused(tmp_path):
    path = tmp_path / "not_a_vae.safetensors"
    save_file({"blocks.0.weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="^vae_name: .*Wan 2.1 VAE"):
        WanVideoCodec.from_single_file(path, config=TINY)
    (tmp_path / "empty.safetensors").write_bytes(b"\0" * 32)
    with pytest.raises(CheckpointError, match="^vae_name: "):
        WanVideoCodec.from_single_file(tmp_path / "empty.safetensors", config=TINY)


def test_audio_token_count_of_the_paper():
    assert audio_token_count(81, 16, 44100, 1024) == 218


def test_audio_token_count_rounds_to_the_nearest_token():
    """The count is the nearest whole token, not the whole tokens inside the clip: 33 frames at
    16 fps of 16 kHz sound in 256-sample tokens are 128.9 tokens, so 129. Rounding down would
    leave 0.9 token (14 ms) of the clip without sound tokens and break the rule that gives the
    paper's 218."""
    assert audio_token_count(33, 16, 16000, 256) == 129  # 128.91
    assert audio_token_count(17, 16, 16000, 256) == 66  # 66.41
    assert audio_token_count(1, 16, 16000, 256) == 4  # 3.91
    assert audio_token_count(1, 16, 1000, 1024) == 1  # 0.06: never no token at all


def test_a_decoded_take_s_sound_is_its_clip_s_length_to_the_nearest_sample():
    """17 frames at 24 fps of 44.1 kHz sound are 31,237.5 samples: 31,238 (cut down, the sound
    would end before its picture); the longer sound of whole tokens is trimmed at its end."""
    from skyreels_core.decoding import take_sound
    from skyreels_core.types import AVLatent

    class TokenCodec:  # each token decodes to 1024 samples of its own value
        sample_rate = 44100

        def decode(self, latents):
            return latents[:, :1].repeat_interleave(1024, dim=-1)

    audio = torch.arange(40.0).expand(1, 4, 40)
    take = AVLatent(video=torch.zeros(1, 4, 5, 2, 2), audio=audio, fps=24.0)
    sound = take_sound(take, TokenCodec())
    assert sound["sample_rate"] == 44100 and sound["waveform"].shape == (1, 1, 31238)
    assert torch.equal(sound["waveform"][0, 0, ::1024], torch.arange(31.0))  # its start kept


@pytest.fixture(scope="module")
def local_codec():
    return WanVideoCodec(local_wan_vae())


def test_tiled_decode_and_encode_equal_untiled_when_the_context_covers_the_field(local_codec):
    codec = local_codec
    assert (codec.spatial_stride, codec.temporal_stride) == (2, 1)
    overlap = 32
    assert bands(overlap)[0] >= FIELD  # each tile's unweighted context covers the field
    latents = torch.randn(1, 4, 3, 48, 56, generator=torch.Generator().manual_seed(2))
    assert len(tile_starts(48, 40, overlap)) == 2 and len(tile_starts(56, 40, overlap)) == 3
    whole = codec.decode(latents)
    tiled = decode_tiled(codec, latents, 40, overlap)
    assert tiled.shape == whole.shape == (1, 3, 96, 112, 3)
    assert (tiled - whole).abs().max() < 1e-5
    frames = whole.clone()
    assert (encode_tiled(codec, frames, 40, overlap) - codec.encode(frames)).abs().max() < 1e-5
    # The same tiles with too little context differ: the test above can fail.
    assert (decode_tiled(codec, latents, 40, 8) - whole).abs().max() > 1e-3


def test_vae_weights_visit_the_compute_device_only_while_coding(local_codec, monkeypatch):
    from skyreels_core import offload

    moves = []
    monkeypatch.setattr(offload, "place", lambda model, device: moves.append(str(device)))
    monkeypatch.setattr(local_codec, "offload_device", torch.device("meta"))  # "away from the GPU"
    latents = local_codec.encode(torch.rand(1, 2, 8, 8, 3))
    local_codec.decode(latents)
    assert moves == ["cpu", "meta", "cpu", "meta"]


def test_the_codec_asks_for_its_weights_and_working_memory_before_it_moves(
    local_codec, monkeypatch
):
    from skyreels_core import offload
    from skyreels_core.codecs import wan_vae

    asked = []
    monkeypatch.setattr(offload, "place", lambda model, device: None)
    monkeypatch.setattr(local_codec, "reserve", lambda device, size: asked.append((device, size)))
    latents = torch.randn(2, 4, 3, 6, 5)
    local_codec.decode(latents)  # offload off: the weights already rest where they compute
    monkeypatch.setattr(local_codec, "offload_device", torch.device("meta"))
    local_codec.decode(latents)
    weights = offload.device_bytes(local_codec.vae)
    pixels = 2 * 12 * 10  # batch x frame pixels at stride 2
    working = (wan_vae.DECODE_ELEMENTS_PER_PIXEL * pixels + 2 * 3 * 3 * pixels) * 4
    assert asked == [(torch.device("cpu"), working), (torch.device("cpu"), weights + working)]


def test_what_the_real_codecs_and_transformers_ask_for_covers_their_measured_peak():
    """The real Wan 2.1 VAE and MMAudio architectures and the 14B preset's shape at a CPU width
    (random weights): the working memory asked of the host is at least each call's tracked peak,
    and not wildly more."""
    from skyreels_core.benchmark.memory import working_memory

    results = working_memory(((2, 8, 8),), (8,), dims=(256,), model_sizes=((5, 16),))
    assert len(results) == 7
    for name, result in results.items():
        assert 1.0 <= result["asked_over_peak"] <= 2.5, name


def test_a_long_sound_is_vocoded_in_chunks_to_the_whole_ones_samples_in_a_chunks_memory(
    monkeypatch,
):
    """MMAudio-44k's vocoder takes 240 elements an output sample: a ten-minute Video to Audio
    clip needed 25 GB in float32 at once. In chunks (here 48 mel frames, with the 32 of context
    each side the codec reads) the sound is the whole one's and the peak a chunk's. The vocoder
    is MMAudio-44k's in every layer but a sixth of the width: how far an output sample reaches
    depends on the kernels, dilations and upsampling, not on the channels (random weights)."""
    from diffusers import MMAudioVAE, MMAudioVocoder

    from skyreels_core.benchmark.instruments import TrackedTensorBytes
    from skyreels_core.codecs import mmaudio

    torch.manual_seed(0)
    vocoder = {**mmaudio._config("mmaudio_44k_vocoder.json"), "upsample_initial_channel": 256}
    vae = {**TINY_AUDIO, "mel_bins": 128, "n_fft": 2048, "hop_length": 512}  # 44k's mel frames
    codec = mmaudio.MMAudioCodec(MMAudioVAE.from_config(vae), MMAudioVocoder.from_config(vocoder))
    mel = torch.randn(1, 128, 150)
    with torch.no_grad(), TrackedTensorBytes() as whole_run:
        whole = codec.vocode(mel)
    monkeypatch.setattr(mmaudio, "VOCODE_CHUNK_FRAMES", 48)
    with TrackedTensorBytes() as chunked_run:
        chunked = codec.vocode(mel)
    assert chunked.shape == whole.shape == (1, 1, 150 * 512)
    assert (chunked - whole).abs().max() <= 1e-5 * whole.abs().max()
    assert chunked_run.peak < 0.8 * whole_run.peak  # 112 frames at most at once, of 150


def test_one_tile_is_the_untiled_path_and_a_bad_overlap_is_named(local_codec):
    latents = torch.randn(1, 4, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(decode_tiled(local_codec, latents, 8, 2), local_codec.decode(latents))
    with pytest.raises(InputError, match="tile_overlap"):
        decode_tiled(local_codec, latents, 4, 4)


@pytest.mark.parametrize("height, width", [(6, 20), (20, 6)])
def test_tiling_a_frame_whose_one_side_fits_in_one_tile(height, width):
    """832 x 480 is 104 x 60 latents: with tile_size 64 the short side is one tile and the long one
    several. Tiles cut past the short side's end would crash decode and encode on a shape error
    at such common sizes; an exact codec must give the untiled result."""
    from codec_helpers import PoolingCodec

    codec = PoolingCodec(4)
    latents = torch.randn(1, 4, 2, height, width, generator=torch.Generator().manual_seed(3))
    assert len(tile_starts(min(height, width), 8, 4)) == 1
    assert len(tile_starts(max(height, width), 8, 4)) == 4
    whole = codec.decode(latents)
    tiled = decode_tiled(codec, latents, 8, 4)
    assert tiled.shape == whole.shape == (1, 5, 8 * height, 8 * width, 3)
    assert (tiled - whole).abs().max() < 1e-5
    encoded = encode_tiled(codec, whole, 8, 4)
    assert encoded.shape == latents.shape
    assert (encoded - codec.encode(whole)).abs().max() < 1e-5


def test_tiles_that_disagree_cross_fade_linearly_at_pixel_centres():
    """Two tiles of 16 over 24 pixels share 8: 3 of context each side carry no weight, and the 2
    blended pixels in the middle take 1/4 and 3/4 of the later tile, weighed at their centres
    (0 and 1/2 at their left edges left the first tile's output alone on one of them)."""
    from skyreels_core.codecs.tiling import spatially_tiled

    ramp = torch.arange(24.0).expand(1, 1, 24)

    def where_it_starts(tile):  # a "codec" whose output says which tile made it
        return torch.full_like(tile, float(tile[..., 0, 0].item() > 0))

    row = spatially_tiled(ramp, where_it_starts, tile=16, overlap=8, in_scale=1, out_scale=1)
    expected = torch.tensor([0.0] * 11 + [0.25, 0.75] + [1.0] * 11)
    assert torch.allclose(row[0, 0], expected)


@pytest.fixture(scope="module")
def audio_reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    return (*write_tiny_mmaudio(folder), folder)


def _tiny_mmaudio(vae_path, vocoder_path=None):
    from skyreels_core.codecs.mmaudio import MMAudioCodec

    return MMAudioCodec.from_single_file(
        vae_path, vocoder_path, vae_config=TINY_AUDIO, vocoder_config=TINY_VOCODER
    )


@pytest.mark.parametrize("offloaded", [True, False])
def test_the_vaes_load_where_they_rest_and_ask_for_room_there_first(
    reference_and_file, audio_reference, offloaded
):
    """Loaded with offload off, the VAEs stayed on the GPU without asking the host for room;
    with offload on they passed through it at load. "meta" stands in for the GPU: weights that
    visited it could not come back."""
    from skyreels_core.codecs.mmaudio import MMAudioCodec
    from skyreels_core.offload import device_bytes

    asked = []
    placement = dict(
        device="meta",
        offload_device="cpu" if offloaded else "meta",
        reserve=lambda device, size: asked.append((device, size)),
    )
    video = WanVideoCodec.from_single_file(reference_and_file[1], config=TINY, **placement)
    folder = audio_reference[-1]
    audio = MMAudioCodec.from_single_file(
        folder / "combined.safetensors",
        vae_config=TINY_AUDIO,
        vocoder_config=TINY_VOCODER,
        **placement,
    )
    parts = [video.vae, audio.vae, audio.vocoder]
    rest = torch.device(placement["offload_device"])
    assert {p.device for part in parts for p in part.parameters()} == {rest}
    assert video.device == audio.device == torch.device("meta")
    assert asked == ([] if offloaded else [(rest, device_bytes(part)) for part in parts])


def test_mmaudio_loads_and_matches_diffusers(audio_reference):
    from skyreels_core.codecs import AudioCodec
    from skyreels_core.codecs.mmaudio import MMAudioCodec

    vae, vocoder, folder = audio_reference
    codec = _tiny_mmaudio(folder / "vae.safetensors", folder / "vocoder.safetensors")
    assert isinstance(codec, AudioCodec) and codec.samples_per_token == 128
    wave = torch.rand(1, 1, 128 * 6, generator=torch.Generator().manual_seed(3)) * 2 - 1
    latents = codec.encode(wave)
    assert latents.shape == (1, 40, 6)
    with torch.no_grad():
        direct = vae.encode(wave[:, 0]).latent_dist.mode()
        assert (latents - direct * 0.417).abs().max() < 1e-5
        expected = vocoder(vae.decode(direct).sample).sample
    decoded = codec.decode(latents)
    assert decoded.shape == (1, 1, 128 * 6)
    assert (decoded - expected).abs().max() < 1e-5
    one_file = _tiny_mmaudio(folder / "combined.safetensors")
    assert (one_file.decode(latents) - expected).abs().max() < 1e-5
    with pytest.raises(InputError, match="waveform"):
        codec.encode(torch.zeros(1, 2, 128))
    with pytest.raises(
        InputError, match=r"^waveform: 700 samples. Fix: .* multiple of 128 samples"
    ):
        codec.encode(wave[..., :700])  # 5.47 tokens: the sound's end would be dropped unsaid
    _weights_visit_only_while_coding(codec, wave)
    with pytest.raises(CheckpointError, match="^vocoder_name: "):
        MMAudioCodec.from_single_file(
            folder / "vae.safetensors", folder / "vae.safetensors", vae_config=TINY_AUDIO
        )


def test_a_vae_file_without_its_vocoder_names_the_vocoder_input(audio_reference):
    """The vocoder read from the VAE file (vocoder_path None) that holds none: the input to change
    is the one picking the vocoder, named as the caller names its inputs (the node's by
    default)."""
    from skyreels_core.codecs.mmaudio import MMAudioCodec

    _, _, folder = audio_reference
    with pytest.raises(CheckpointError, match="^vocoder_name: vae.safetensors holds no vocoder"):
        _tiny_mmaudio(folder / "vae.safetensors")
    with pytest.raises(CheckpointError) as error:
        MMAudioCodec.from_single_file(
            folder / "vae.safetensors",
            vae_config=TINY_AUDIO,
            vae_input_name="--audio-vae",
            vocoder_input_name="--vocoder",
        )
    assert error.value.input_name == "--vocoder"
    assert error.value.fix == (
        "pick the vocoder file in --vocoder, or a VAE file in --audio-vae that holds its vocoder"
    )
    junk = folder / "junk.safetensors"  # no MMAudio VAE at all: the VAE's input, not the vocoder's
    save_file({"weight": torch.zeros(2, 2)}, str(junk))
    with pytest.raises(CheckpointError) as error:
        MMAudioCodec.from_single_file(junk, vae_config=TINY_AUDIO, vae_input_name="vae_name")
    assert error.value.input_name == "vae_name"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mmaudio_in_half_precision_encodes_through_a_float32_mel(audio_reference, dtype):
    """Weights in bf16 / fp16 (the loader's dtype): the STFT has no such kernel on CPU, so the
    log-mel front end stays float32 and only the networks run in the lower precision."""
    from skyreels_core.codecs.mmaudio import MMAudioCodec

    _, _, folder = audio_reference
    paths = folder / "vae.safetensors", folder / "vocoder.safetensors"
    config = {"vae_config": TINY_AUDIO, "vocoder_config": TINY_VOCODER}
    full = MMAudioCodec.from_single_file(*paths, **config)
    half = MMAudioCodec.from_single_file(*paths, dtype=dtype, **config)
    wave = torch.rand(1, 1, 128 * 6, generator=torch.Generator().manual_seed(3)) * 2 - 1
    latents = half.encode(wave)
    assert (
        latents.dtype == torch.float32 and half.vae.mel_converter.mel_basis.dtype == torch.float32
    )
    assert (latents - full.encode(wave)).abs().max() < 0.05 * full.encode(wave).abs().max()
    assert half.decode(latents).shape == (1, 1, 128 * 6)


def _weights_visit_only_while_coding(codec, wave):
    from skyreels_core import offload

    moves = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offload, "place", lambda model, device: moves.append((model, str(device))))
        patch.setattr(codec, "offload_device", torch.device("meta"))  # "away from the GPU"
        codec.decode(codec.encode(wave))
    vae, vocoder = codec.vae, codec.vocoder
    assert moves == [(vae, "cpu"), (vae, "meta")] * 2 + [(vocoder, "cpu"), (vocoder, "meta")]


def test_shipped_mmaudio_config_gives_the_paper_token_count():
    import json
    from pathlib import Path

    import skyreels_core.codecs.mmaudio as mmaudio

    vae = json.loads((Path(mmaudio.__file__).parent / "configs/mmaudio_44k_vae.json").read_text())
    voc = json.loads(
        (Path(mmaudio.__file__).parent / "configs/mmaudio_44k_vocoder.json").read_text()
    )
    per_token = vae["hop_length"] * 2
    assert per_token == torch.tensor(voc["upsample_rates"]).prod().item() * 2 == 1024
    assert vae["latent_channels"] == 40
    assert audio_token_count(81, 16, vae["sample_rate"], per_token) == 218


def test_mmaudio_vae_in_its_own_layout_loads_with_weight_norm_baked(audio_reference, tmp_path):
    """MMAudio's own VAE files (ComfyUI-MMAudio's mmaudio_vae_44k*.safetensors) hold un-normalised
    conv weights without the ``vae.`` prefix. A release-like diffusers VAE (unit-norm conv output
    channels, as diffusers' MMAudioMPConv1d expects) is written that way, each output channel at
    about unit RMS per element, as MMAudio's forced weight normalisation trains them (rescaled
    at random around it), and must load to the same model."""
    from diffusers import MMAudioVAE

    _, vocoder, folder = audio_reference
    torch.manual_seed(5)
    vae = MMAudioVAE(**TINY_AUDIO).eval()
    generator = torch.Generator().manual_seed(6)
    original = {}
    with torch.no_grad():
        for key, value in vae.state_dict().items():
            if key.startswith("mel_converter."):
                continue
            if key.endswith(".weight"):
                dims = list(range(1, value.dim()))
                value.div_(torch.linalg.vector_norm(value, dim=dims, keepdim=True))  # released
                scale = torch.rand(value.shape[0], *[1] * len(dims), generator=generator) + 0.5
                original[key.removeprefix("vae.")] = value * scale * value[0].numel() ** 0.5
            else:
                original[key.removeprefix("vae.")] = value.clone()
    assert "encoder.conv_in.weight" in original and "data_mean" in original
    save_file(original, str(tmp_path / "mmaudio_vae_44k.safetensors"))
    codec = _tiny_mmaudio(tmp_path / "mmaudio_vae_44k.safetensors", folder / "vocoder.safetensors")
    wave = torch.rand(1, 1, 128 * 6, generator=generator) * 2 - 1
    with torch.no_grad():
        direct = vae.encode(wave[:, 0]).latent_dist.mode()
        expected = vocoder(vae.decode(direct).sample).sample
    latents = codec.encode(wave)
    assert (latents / codec.scale - direct).abs().max() < 1e-3 * direct.abs().max()
    assert (codec.decode(latents) - expected).abs().max() < 1e-3 * expected.abs().max()


@pytest.mark.parametrize("naming", ["weight_g", "parametrizations"])
def test_bigvgan_vocoder_in_its_own_weight_normed_layout_loads(audio_reference, tmp_path, naming):
    """NVIDIA's BigVGAN files keep each conv as magnitude g and direction v (torch's weight_norm,
    old or parametrised names); v is rescaled at random, as training leaves it."""

    vae, vocoder, folder = audio_reference
    generator = torch.Generator().manual_seed(7)
    original = {}
    for key, value in vocoder.state_dict().items():
        if key.endswith(".weight") and value.dim() == 3:
            prefix = key.removesuffix(".weight")
            magnitude = torch.linalg.vector_norm(value, dim=[1, 2], keepdim=True)
            direction = value * (torch.rand(value.shape[0], 1, 1, generator=generator) + 0.5)
            names = ((f"{prefix}.weight_g", f"{prefix}.weight_v") if naming == "weight_g" else
                     (f"{prefix}.parametrizations.weight.original0",
                      f"{prefix}.parametrizations.weight.original1"))  # fmt: skip
            original.update(zip(names, (magnitude, direction)))
        else:
            original[key] = value.clone()
    save_file(original, str(tmp_path / "bigvgan.safetensors"))
    codec = _tiny_mmaudio(folder / "vae.safetensors", tmp_path / "bigvgan.safetensors")
    latents = torch.randn(1, 40, 6, generator=generator)
    with torch.no_grad():
        expected = vocoder(vae.decode(latents / codec.scale).sample).sample
    assert (codec.decode(latents) - expected).abs().max() < 1e-5
