"""References: shapes and order of in-context latents, storyboard splitting, audio references."""

from __future__ import annotations

import pytest
import torch
from codec_helpers import PoolingCodec

from skyreels_core.demo.codecs import DemoAudioCodec
from skyreels_core.errors import InputError
from skyreels_core.references import (
    audio_reference,
    clip_reference,
    image_references,
    merge_references,
    split_storyboard,
    storyboard_references,
)

CODEC = PoolingCodec()


def test_images_become_one_latent_frame_each_in_order():
    red, blue = torch.zeros(32, 48, 3), torch.zeros(64, 64, 3)
    red[..., 0], blue[..., 2] = 1, 1
    refs = image_references(CODEC, [red, blue], 32, 32)
    assert refs.video.shape == (1, 4, 2, 4, 4) and refs.audio is None
    assert torch.allclose(
        refs.video[:, :, 0],
        CODEC.encode(torch.zeros(1, 1, 32, 32, 3) + red[0, 0])[:, :, 0],
        atol=1e-5,
    )
    assert torch.allclose(
        refs.video[:, :, 1],
        CODEC.encode(torch.zeros(1, 1, 32, 32, 3) + blue[0, 0])[:, :, 0],
        atol=1e-5,
    )


def test_storyboard_split_recovers_the_panels_exactly():
    panels = [torch.full((16, 24, 3), i / 10) for i in range(6)]
    grid = torch.cat([torch.cat(panels[r * 3 : r * 3 + 3], dim=1) for r in range(2)], dim=0)
    split = split_storyboard(grid, 2, 3)
    assert all(torch.equal(a, b) for a, b in zip(split, panels)) and len(split) == 6
    assert len(split_storyboard(grid, 2, 3, panels=4)) == 4
    assert storyboard_references(CODEC, grid, 2, 3, 32, 32).video.shape[2] == 6
    # A grid a pixel or two off the panel count (1024 px in 3) keeps its panels, the spare
    # pixels split between the edges.
    framed = torch.nn.functional.pad(grid.permute(2, 0, 1), (1, 1, 0, 1), value=1.0)
    split = split_storyboard(framed.permute(1, 2, 0), 2, 3)
    assert all(torch.equal(a, b) for a, b in zip(split, panels))
    with pytest.raises(InputError, match="grid: 2 x 1 px is too small for 3 x 2 panels"):
        split_storyboard(grid[:1, :2], 2, 3)
    with pytest.raises(InputError, match="panels"):
        split_storyboard(torch.zeros(40, 40, 3), 4, 4)  # 16 > 9


def test_the_storyboard_node_refuses_a_batch_it_would_read_one_image_of():
    from skyreels_pack import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["SkyReelsV4StoryboardReference"]()
    batch = torch.rand(4, 32, 48, 3)
    with pytest.raises(InputError, match="^grid: a batch of 4 images"):
        node.build(CODEC, batch, 2, 2, 0, 32, 32)
    (one,) = node.build(CODEC, batch[:1], 2, 2, 0, 32, 32)
    assert one.video.shape[2] == 4


def test_clips_audio_and_merging():
    clip = clip_reference(CODEC, torch.rand(5, 32, 32, 3), 32, 32)
    assert clip.video.shape == (1, 4, 2, 4, 4)
    with pytest.raises(InputError, match="4k\\+1"):
        clip_reference(CODEC, torch.rand(4, 32, 32, 3), 32, 32)
    sound = audio_reference(DemoAudioCodec(), torch.randn(2, 44100), 44100)
    assert sound.audio.shape == (1, 8, 63)  # 1 s at 16 kHz / 256 samples per token
    merged = merge_references(
        clip, None, sound, image_references(CODEC, [torch.rand(32, 32, 3)], 32, 32)
    )
    assert merged.video.shape[2] == 3 and torch.equal(merged.audio, sound.audio)


def test_references_of_two_sizes_or_a_batch_of_sounds_are_refused_by_name():
    small, large = (image_references(CODEC, [torch.rand(32, 32, 3)], s, s) for s in (32, 64))
    with pytest.raises(InputError, match="^references: a reference made at 64 x 64 px chained "
                       "after one made at 32 x 32 px"):  # fmt: skip
        merge_references(small, large)
    other = image_references(PoolingCodec(latent_channels=16), [torch.rand(32, 32, 3)], 32, 32)
    with pytest.raises(
        InputError, match="^references: video latents of 16 channels chained after ones of 4"
    ):  # fmt: skip (a bare torch.cat error before)
        merge_references(small, other)
    with pytest.raises(InputError, match="^audio: a batch of 2 sounds"):
        audio_reference(DemoAudioCodec(), torch.randn(2, 1, 16000), 16000)
