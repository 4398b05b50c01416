"""Files of two model families wired together, named before any work is done.

The bundled demo files and real weights differ in their latent channels (8 against the Wan 2.1
VAE's 16 and MMAudio's 40) and text width, and every loader lists both. A demo codec on a real
model's render (or a take saved from the demo model, refined by a real refiner) otherwise fails
deep inside with a bare size mismatch, or only at the decode after a long render.
"""

from __future__ import annotations

import torch

from .errors import InputError

ONE_FAMILY = (
    "use files of one family together: the bundled demo files with each other, or a SkyReels-V4 "
    "checkpoint with the Wan 2.1 VAE, MMAudio and the text encoder and refiner made for it"
)


def channels(latents: torch.Tensor | None) -> int | None:
    return None if latents is None else latents.shape[1]


def require_width(
    input_name: str, found: int | None, expected: int | None, what: str, taker: str
) -> None:
    """``found`` must be ``expected``; None on either side means nothing to compare."""
    if found is not None and expected is not None and found != expected:
        raise InputError(input_name, f"{found} {what} where {taker} takes {expected}", ONE_FAMILY)
