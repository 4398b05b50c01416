"""Live previews: the linear latent-to-RGB map fitted to a codec's decoder."""

from __future__ import annotations

import torch

from skyreels_core.demo import bundle
from skyreels_core.demo.world import render_scene, sample_scene_spec
from skyreels_core.preview import cell_colours, fit_preview_factors, latent_preview, previewer


class LinearCodec:
    """A decoder that paints each latent cell with a fixed linear colour (8x8 pixels, frame 0
    alone, then 4 frames per latent frame): the fit must find that map exactly."""

    latent_channels = 5
    temporal_stride = 4
    spatial_stride = 8

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(3)
        self.factors = torch.randn(self.latent_channels + 1, 3, generator=generator)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("bcthw,cr->bthwr", latents, self.factors[:-1]) + self.factors[-1]
        frames = torch.cat([rgb[:, :1], rgb[:, 1:].repeat_interleave(self.temporal_stride, 1)], 1)
        return frames.repeat_interleave(8, 2).repeat_interleave(8, 3)


def test_the_fit_recovers_a_linear_decoders_colours():
    codec = LinearCodec()
    torch.testing.assert_close(fit_preview_factors(codec), codec.factors, atol=1e-5, rtol=1e-5)


def test_cell_colours_average_each_latent_cells_frames_and_pixels():
    frames = torch.rand(2, 9, 16, 24, 3)
    colours = cell_colours(frames, temporal_stride=4, spatial_stride=8)
    assert colours.shape == (2, 3, 2, 3, 3)
    torch.testing.assert_close(colours[1, 0, 1, 2], frames[1, 0, 8:16, 16:24].mean((0, 1)))
    torch.testing.assert_close(colours[0, 2, 0, 1], frames[0, 5:9, 0:8, 8:16].mean((0, 1, 2)))


def test_a_mapped_preview_is_the_first_clip_s_middle_latent_frame_within_0_1():
    """Three latent frames: the preview paints the middle one of the first clip as the decoder
    would, colours past 0..1 (the map's overshoot) held at the ends."""
    codec = LinearCodec()
    latents = torch.randn(2, 5, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    colours = cell_colours(codec.decode(latents), 4, 8)[0, 1]
    assert ((colours < 0) | (colours > 1)).any() and ((colours > 0) & (colours < 1)).any()
    shown = latent_preview(latents, codec.factors)
    torch.testing.assert_close(shown, colours.clamp(0, 1), atol=1e-5, rtol=0)


def test_the_fitted_map_paints_the_demo_codecs_background_and_leans_to_its_objects():
    """The demo codec is far from linear, so no map shows its objects well; fitted on the decoder's
    side it must at least paint the background right and miss the objects by less than the
    background alone would (an encoder-side fit read 0.098 and 0.290, worse than that)."""
    codec = bundle.video_codec()
    factors = fit_preview_factors(codec)
    background, objects, flat = [], [], []
    for seed in range(9000, 9004):
        latents = codec.encode(render_scene(sample_scene_spec(seed)).frames[None])
        painted = cell_colours(codec.decode(latents).float(), 4, 8)[0]
        for index, colours in enumerate(painted):
            error = (latent_preview(latents[:, :, index : index + 1], factors) - colours).abs()
            floor = colours.flatten(0, 1).median(dim=0).values
            object_cells = (colours - floor).abs().amax(dim=-1) > 0.15
            background.append(error[~object_cells].mean())
            if object_cells.any():
                objects.append(error[object_cells].mean())
                flat.append((colours - floor).abs()[object_cells].mean())
    assert torch.stack(background).mean() < 0.02
    assert torch.stack(objects).mean() < torch.stack(flat).mean()


def test_the_demo_codec_previews_by_decoding_the_middle_frame():
    """A lone latent frame decodes to its group's last frame: the preview is that frame of the
    clip's decode, exactly."""
    codec = bundle.video_codec()
    latents = codec.encode(render_scene(sample_scene_spec(9000)).frames[None])
    middle = latents.shape[2] // 2
    shown = previewer(codec)(latents)
    torch.testing.assert_close(shown, codec.decode(latents)[0, 4 * middle])


def test_the_preview_node_fits_a_codec_once_and_keeps_no_codec_alive(monkeypatch):
    """Fitted factors are kept for as long as their codec lives: a second render fits nothing,
    and a VAE the artist switched away from is not held in memory by the preview cache."""
    import gc
    import weakref

    from skyreels_pack.nodes import previews

    fits = []
    fit = previews.fit_preview_factors
    monkeypatch.setattr(previews, "fit_preview_factors", lambda c: fits.append(c) or fit(c))
    codec = LinearCodec()
    latents = torch.randn(1, 5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    first = previews._previewer(codec)(latents)
    torch.testing.assert_close(previews._previewer(codec)(latents), first, rtol=0, atol=0)
    torch.testing.assert_close(first, latent_preview(latents, codec.factors), atol=1e-5, rtol=0)
    assert len(fits) == 1
    others = [LinearCodec() for _ in range(6)]
    for other in others:
        previews._previewer(other)
    alive = [weakref.ref(other) for other in others]
    fits.clear()
    del others, other
    gc.collect()
    assert [ref() for ref in alive] == [None] * 6
