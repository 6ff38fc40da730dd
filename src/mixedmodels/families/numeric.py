"""Numerical pieces the links, densities and families share.

R's machine constants and the float conversion every function applies to its
input.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["DBL_EPSILON", "DBL_MIN", "as_float", "non_integer", "quoted"]

DBL_EPSILON = float(np.finfo(float).eps)  # .Machine$double.eps
DBL_MIN = float(np.finfo(float).tiny)  # .Machine$double.xmin


def as_float(x: Any) -> np.ndarray:
    """Return ``x`` as a float array (a copy only when needed)."""
    return np.asarray(x, dtype=float)


def non_integer(x: np.ndarray) -> np.ndarray:
    """Return where ``x`` is not a whole number up to a relative 1e-7 (R's ``R_nonint``)."""
    return np.abs(x - np.rint(x)) > 1e-7 * np.maximum(1.0, np.abs(x))


def quoted(names: Iterable[Any]) -> str:
    """Return ``'a', 'b', 'c'``: names listed in a message."""
    return ", ".join(repr(n) for n in names)
