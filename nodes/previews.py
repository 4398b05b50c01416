"""Live previews for the host's progress bar, from the sampler's running x0 estimate."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from skyreels_core.codecs import VideoCodec
from skyreels_core.preview import previewer

from .host import Progress

PREVIEW_SIZE = 256


_previewer = lru_cache(maxsize=4)(previewer)  # a fitted map is worth keeping per codec


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
