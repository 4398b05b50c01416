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
    fit_frames,
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
    # a host IMAGE batch, as a script holds one, is its images in order (it crashed in torch.cat)
    batch = torch.stack([red[:32, :32], blue[:32, :32]])
    assert torch.equal(image_references(CODEC, batch, 32, 32).video,
                       image_references(CODEC, [red[:32, :32], blue[:32, :32]], 32, 32).video)  # fmt: skip
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
    """A batch of 4 would be read as its first image only, and an empty batch (an upstream
    node's empty output) failed as a bare IndexError: both are refused on grid."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["SkyReelsV4StoryboardReference"]()
    batch = torch.rand(4, 32, 48, 3)
    with pytest.raises(InputError, match="^grid: a batch of 4 images"):
        node.build(CODEC, batch, 2, 2, 0, 32, 32)
    with pytest.raises(InputError, match="^grid: a batch of 0 images; the storyboard is one"):
        node.build(CODEC, batch[:0], 2, 2, 0, 32, 32)
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


def test_a_reference_image_is_covered_and_centre_cropped_not_stretched():
    """A 32x64 image fitted to 32x32 keeps its aspect ratio and its middle: the bright middle
    half (columns 16..47) fills the output exactly. Fitting inside instead of covering stretches
    every Image / Clip / Storyboard reference (and Video to Audio's input); a top-left crop moves
    the subject off centre. Both give a half-dark picture here."""
    wide = torch.zeros(1, 32, 64, 3)
    wide[:, :, 16:48] = torch.rand(1, 32, 32, 3) * 0.5 + 0.5
    out = fit_frames(wide, 32, 32)
    assert out.shape == (1, 32, 32, 3)
    assert torch.equal(out, wide[:, :, 16:48])
    tall = wide.transpose(1, 2).contiguous()  # 64x32, the bright rows 16..47
    out = fit_frames(tall, 32, 32)
    assert out.shape == (1, 32, 32, 3)
    assert torch.equal(out, tall[:, 16:48])


def test_a_small_reference_image_is_scaled_up_to_cover_then_centre_cropped():
    """16x32 to 32x32: scaled 2x to 32x64 (aspect kept), then the middle 32 columns. The bright
    middle half of the source fills the output up to the interpolation's soft edge."""
    small = torch.zeros(1, 16, 32, 3)
    small[:, :, 8:24] = 1.0
    out = fit_frames(small, 32, 32)
    assert out.shape == (1, 32, 32, 3)
    assert out[:, :, 2:30].min().item() == 1.0  # away from the blurred edges, fully bright
    assert out.mean().item() > 0.95


def _greys(references):
    """The mean grey of each reference frame, decoded one by one (PoolingCodec is exact)."""
    frames = CODEC.decode(references.video.permute(2, 1, 0, 3, 4))
    return [round(float(frame.mean()), 3) for frame in frames]


def test_the_image_references_node_keeps_input_order_and_a_chain_puts_earlier_nodes_first():
    """The model reads references as ordered in-context frames: image_1..image_9 come in input
    order, and a chained node's images come after the previous node's."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["SkyReelsV4ImageReferences"]()

    def grey(value):
        return torch.full((1, 32, 32, 3), value)

    (refs,) = node.build(CODEC, 32, 32, image_3=grey(0.9), image_1=grey(0.1), image_2=grey(0.5))
    assert _greys(refs) == [0.1, 0.5, 0.9]
    (first,) = node.build(CODEC, 32, 32, image_1=grey(0.1))
    (chained,) = node.build(CODEC, 32, 32, references=first, image_1=grey(0.9), image_2=grey(0.5))
    assert _greys(chained) == [0.1, 0.9, 0.5]


def test_reference_nodes_make_non_square_latents_height_by_width():
    """width 64, height 32 gives latents 4 high and 8 wide for Image and Clip References, not
    transposed (8 x 4); a 2 x 2 storyboard's panels alike."""
    from skyreels_pack import NODE_CLASS_MAPPINGS as NODES

    (images,) = NODES["SkyReelsV4ImageReferences"]().build(
        CODEC, 64, 32, image_1=torch.rand(1, 40, 70, 3)
    )
    assert images.video.shape == (1, 4, 1, 4, 8)
    (clip,) = NODES["SkyReelsV4ClipReference"]().build(CODEC, torch.rand(5, 40, 70, 3), 64, 32)
    assert clip.video.shape == (1, 4, 2, 4, 8)
    (board,) = NODES["SkyReelsV4StoryboardReference"]().build(
        CODEC, torch.rand(1, 64, 96, 3), 2, 2, 0, 64, 32
    )
    assert board.video.shape == (1, 4, 4, 4, 8)


def test_a_one_row_storyboard_reads_its_panels_left_to_right():
    """A 1 x 3 grid of greys 0.1, 0.5, 0.9 gives three flat panels in that order (rows and
    columns swapped would cut it into three horizontal strips of all three greys)."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    grid = torch.cat([torch.full((32, 32, 3), v) for v in (0.1, 0.5, 0.9)], dim=1)[None]
    node = NODE_CLASS_MAPPINGS["SkyReelsV4StoryboardReference"]()
    (board,) = node.build(CODEC, grid, 1, 3, 0, 32, 32)
    assert _greys(board) == [0.1, 0.5, 0.9]
    frames = CODEC.decode(board.video.permute(2, 1, 0, 3, 4))
    assert float(frames.std(dim=(1, 2, 3, 4)).max()) < 1e-4  # each panel flat


def _tone(rate: int, seconds: float = 1.0, hz: float = 440.0) -> torch.Tensor:
    time = torch.arange(round(rate * seconds)) / rate
    return 0.5 * torch.sin(2 * torch.pi * hz * time)


def test_a_reference_sound_is_encoded_at_the_codecs_rate_and_channels():
    """A 48 kHz stereo tone gives the latents the same tone recorded at the codec's 16 kHz mono
    gives (the resampler's error only); a sound ending mid-token is padded with silence, not cut.
    Encoding the source samples as they came would read 48 kHz as 16 kHz: a tone 3x too high."""
    torch.manual_seed(0)
    codec = DemoAudioCodec()
    native = audio_reference(codec, _tone(16000)[None, None], 16000).audio
    stereo = audio_reference(codec, _tone(48000)[None].repeat(2, 1)[None], 48000).audio
    assert stereo.shape == native.shape == (1, 8, 63)
    assert (stereo - native).norm() < 1e-3 * native.norm()
    short = _tone(16000)[None, None, :15900]  # 62.1 tokens: the 63rd part silence
    padded = torch.nn.functional.pad(short, (0, 63 * 256 - 15900))
    torch.testing.assert_close(
        audio_reference(codec, short, 16000).audio, codec.encode(padded), rtol=0, atol=0
    )

    class WholeTokens:  # as MMAudio: it encodes whole tokens only, and pads nothing itself
        sample_rate, channels, samples_per_token = 16000, 1, 256

        def encode(self, waveform):
            assert waveform.shape[-1] % 256 == 0
            return waveform.unflatten(-1, (-1, 256)).mean(-1)

    tokens = audio_reference(WholeTokens(), short, 16000).audio
    assert tokens.shape == (1, 1, 63)
    torch.testing.assert_close(tokens[..., -1], short[..., 62 * 256 :].sum(-1) / 256)


def test_chained_sound_references_keep_their_order():
    """Sounds chain along time in the order given, as images do: the first node's sound first."""
    codec = DemoAudioCodec()
    low, high = (
        audio_reference(codec, _tone(16000, 0.5, hz)[None, None], 16000) for hz in (220, 880)
    )
    merged = merge_references(low, None, high)
    assert merged.video is None and merged.audio.shape == (1, 8, 32 + 32)
    assert torch.equal(merged.audio, torch.cat([low.audio, high.audio], dim=2))
    assert not torch.equal(low.audio, high.audio)


def test_image_references_with_no_image_connected_name_the_first_image_socket():
    """Nothing connected (or only empty sockets the host passes as None) is refused on image_1,
    the socket the node shows first, with the fix: a refusal naming no socket of the node would
    leave the artist looking for an "images" input that does not exist."""
    from skyreels_pack import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["SkyReelsV4ImageReferences"]()
    for images in ({}, {"image_1": None, "image_2": None}):
        with pytest.raises(InputError) as error:
            node.build(CODEC, 32, 32, **images)
        assert str(error.value) == (
            "image_1: no reference image is connected. Fix: connect at least one IMAGE"
        )
