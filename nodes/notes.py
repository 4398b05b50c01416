"""A node's note to the artist: a line on the node (the frontend's `skyreels_note`) and the log."""

from __future__ import annotations

import logging


def with_note(result, note: str | None, node: str) -> dict:
    """The node's return value carrying ``note``; sent on every run, empty when all is well, so
    the node's line never shows a stale note."""
    if note:
        logging.warning("SkyReels-V4 %s: %s", node, note)
    return {"ui": {"skyreels_note": [note or ""]}, "result": (result,)}
