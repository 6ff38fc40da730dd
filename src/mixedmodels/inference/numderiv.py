"""numDeriv's ``hessian`` and ``jacobian``, reproduced step for step.

Richardson extrapolation, d = 0.1, eps = 1e-4, r = 4, v = 2: lmerTest's
Satterthwaite degrees of freedom come from them, and its numbers are kept
to rounding only with the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["numderiv_hessian", "numderiv_jacobian"]

# numDeriv's zero.tol: sqrt(.Machine$double.eps / 7e-7)
_ZERO_TOL = float(np.sqrt(np.finfo(float).eps / 7e-7))


def numderiv_hessian(
    func: Callable[[np.ndarray], float],
    x: np.ndarray,
    d: float = 0.1,
    eps: float = 1e-4,
    r: int = 4,
) -> np.ndarray:
    """Return numDeriv's ``hessian(func, x)`` (method "Richardson", v = 2).

    ``genD``'s central second differences at steps h, h/2, ..., h/2^(r-1) with
    h = |d x| + eps (|x| < zero.tol), Richardson-extrapolated, the
    off-diagonal ones corrected by the diagonal, exactly as numDeriv orders
    the arithmetic.
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    f0 = float(func(x))
    h0 = np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)
    hdiag = np.empty(n)
    for i in range(n):
        approx = np.empty(r)
        h = h0.copy()
        for k in range(r):
            f1 = float(func(_shift(x, h, (i,), +1)))
            f2 = float(func(_shift(x, h, (i,), -1)))
            approx[k] = (f1 - 2 * f0 + f2) / h[i] ** 2
            h = h / 2
        hdiag[i] = _richardson(approx)
    H = np.diag(hdiag)
    for i in range(n):
        for j in range(i):
            approx = np.empty(r)
            h = h0.copy()
            for k in range(r):
                f1 = float(func(_shift(x, h, (i, j), +1)))
                f2 = float(func(_shift(x, h, (i, j), -1)))
                approx[k] = (
                    f1 - 2 * f0 + f2 - hdiag[i] * h[i] ** 2 - hdiag[j] * h[j] ** 2
                ) / (2 * h[i] * h[j])
                h = h / 2
            H[i, j] = H[j, i] = _richardson(approx)
    return H


def numderiv_jacobian(
    func: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    d: float = 1e-4,
    eps: float = 1e-4,
    r: int = 4,
) -> np.ndarray:
    """Return numDeriv's ``jacobian(func, x)`` (method "Richardson"): (len f, len x)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    h = np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)
    cols: list[list[np.ndarray]] = [[] for _ in range(n)]
    for _ in range(r):
        for i in range(n):
            f1 = np.asarray(func(_shift(x, h, (i,), +1)), dtype=float).ravel()
            f2 = np.asarray(func(_shift(x, h, (i,), -1)), dtype=float).ravel()
            cols[i].append((f1 - f2) / (2 * h[i]))
        h = h / 2
    return np.column_stack([_richardson(np.array(c)) for c in cols])


def _shift(x: np.ndarray, h: np.ndarray, idx: tuple[int, ...], sign: int) -> np.ndarray:
    """Return x with h added (sign +1) or subtracted at the positions ``idx``."""
    out = x.copy()
    for i in idx:
        out[i] = x[i] + h[i] if sign > 0 else x[i] - h[i]
    return out


def _richardson(approx: np.ndarray) -> Any:
    """Return numDeriv's in-place Richardson table over the first axis (v = 2)."""
    a = np.array(approx, dtype=float, copy=True)
    r = a.shape[0]
    for m in range(1, r):
        for k in range(r - m):
            a[k] = (a[k + 1] * 4.0**m - a[k]) / (4.0**m - 1)
    return a[0]

