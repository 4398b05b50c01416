"""Live previews for the host's progress bar, from the sampler's running x0 estimate."""

from __future__ import annotations

from collections.abc import Callable
from weakref import WeakKeyDictionary

import torch

from skyreels_core.codecs import VideoCodec
from skyreels_core.codecs.wan_vae import WanVideoCodec
from skyreels_core.preview import fit_preview_factors, previewer

from . import host
from .host import Progress

PREVIEW_SIZE = 256


# A fitted map costs a decode, so it is kept per codec for as long as the codec lives, and no
# longer: the cache must not keep a VAE the artist has switched away from in memory.
_FITTED: WeakKeyDictionary = WeakKeyDictionary()


def _previewer(codec: VideoCodec) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Wan 2.1 VAE previews with the host's own factors, as ComfyUI previews Wan; another
    codec decodes its preview (a cheap one) or through factors fitted to it once."""
    wan = isinstance(codec, (WanVideoCodec, host.HostWanVideoCodec))
    factors = host.wan21_preview_factors() if wan else None
    if factors is None and not getattr(codec, "cheap_decode", False):
        if codec not in _FITTED:
            _FITTED[codec] = fit_preview_factors(codec)
        factors = _FITTED[codec]
    return previewer(codec, factors)


def preview_hook(progress: Progress, codec: VideoCodec) -> Callable[[int, torch.Tensor], None]:
    """A sampler preview hook that shows the middle frame of the x0 estimate in the node."""
    from PIL import Image

    preview = _previewer(codec)

    def show(step: int, video_estimate: torch.Tensor) -> None:
        rgb = preview(video_estimate)
        pixels = (rgb * 255).round().to(torch.uint8).cpu().numpy()
        image = Image.fromarray(pixels)
        scale = max(1, PREVIEW_SIZE // max(image.size))
        progress.update(step, preview=image.resize((image.width * scale, image.height * scale)))

    return show
