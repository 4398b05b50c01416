"""The encode/decode nodes on the bundled demo codecs: a sound must fit its clip."""

from __future__ import annotations

import pytest
import torch
from skyreels_pack import NODE_CLASS_MAPPINGS

from skyreels_core.codecs import audio_token_count
from skyreels_core.demo import bundle
from skyreels_core.errors import InputError

ENCODE_VIDEO = NODE_CLASS_MAPPINGS["SkyReelsV4EncodeVideo"]
ENCODE_AUDIO = NODE_CLASS_MAPPINGS["SkyReelsV4EncodeAudio"]


@pytest.fixture(scope="module")
def clip():
    frames = torch.rand(33, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    return ENCODE_VIDEO().encode(frames, bundle.video_codec(), 16.0)[0]


def _sound(seconds: float, rate: int = 22050) -> dict:
    return {"waveform": torch.zeros(1, 1, round(seconds * rate)), "sample_rate": rate}


def test_a_sound_within_a_frame_of_the_clip_is_fitted_to_its_tokens(clip):
    codec = bundle.audio_codec()
    tokens = audio_token_count(33, 16.0, codec.sample_rate, codec.samples_per_token)
    for seconds in (33 / 16, 2.0):  # exact, and one frame short
        encoded = ENCODE_AUDIO().encode(clip, _sound(seconds), codec)[0]
        assert encoded.audio.shape == (1, codec.latent_channels, tokens)
        assert torch.equal(encoded.video, clip.video)


def test_a_sound_of_another_length_names_the_input_and_the_fix(clip):
    with pytest.raises(InputError, match=r"3\.00 s of sound for a 2\.06 s clip") as error:
        ENCODE_AUDIO().encode(clip, _sound(3.0), bundle.audio_codec())
    assert error.value.input_name == "audio" and "trim or pad" in str(error.value)
