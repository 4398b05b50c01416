"""VALIDATE_INPUTS helpers: bad input reported the way the host shows it best."""

from __future__ import annotations

import functools
from collections.abc import Callable

from skyreels_core.errors import InputError


def reports_input_errors(validate: Callable) -> Callable:
    """Turn an InputError into the returned message: the host then marks the node with
    "Custom validation failed: <message>" before anything runs, where a raised error would show
    as an exception with a traceback."""

    @functools.wraps(validate)
    def checked(cls, **inputs):
        try:
            return validate(cls, **inputs)
        except InputError as error:
            return str(error)

    return checked
