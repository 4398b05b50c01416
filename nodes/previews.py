"""Live previews for the host's progress bar, from the sampler's running x0 estimate, and the
hooks through which a render node lends the library the host's bar, interrupt and memory."""

from __future__ import annotations

from collections.abc import Callable
from weakref import WeakKeyDictionary

import torch

from skyreels_core.codecs import VideoCodec
from skyreels_core.codecs.wan_vae import WanVideoCodec
from skyreels_core.preview import fit_preview_factors, previewer
from skyreels_core.sampling import SamplerHooks

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


def preview_hook(codec: VideoCodec, shown: dict) -> Callable[[int, torch.Tensor], None]:
    """A sampler preview hook: the middle frame of the x0 estimate, kept in ``shown`` under its
    step for the bar to show with that step."""
    from PIL import Image

    preview = _previewer(codec)

    def show(step: int, video_estimate: torch.Tensor) -> None:
        rgb = preview(video_estimate)
        pixels = (rgb * 255).round().to(torch.uint8).cpu().numpy()
        image = Image.fromarray(pixels)
        scale = max(1, PREVIEW_SIZE // max(image.size))
        shown[step] = image.resize((image.width * scale, image.height * scale))

    return show


def render_hooks(
    progress: Progress, codec: VideoCodec | None, *, free_memory_each_step: bool = False
) -> SamplerHooks:
    """The Sampler's and Refine's hooks: the bar moves once a step (with the step's preview
    where a video VAE is connected and the host shows previews), the host's cancel stops the
    render, and memory is asked of the host."""
    shown: dict = {}

    def after_step(step: int, total: int) -> None:
        progress.update(step, preview=shown.pop(step, None))
        if free_memory_each_step:
            host.soft_empty_cache()

    return SamplerHooks(
        progress=after_step,
        preview=preview_hook(codec, shown) if codec is not None and host.previews_on() else None,
        interrupt=host.check_interrupt,
        reserve=host.reserve,
    )
