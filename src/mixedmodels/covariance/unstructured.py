"""lme4's unstructured covariance: Λ any lower-triangular matrix."""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from mixedmodels.covariance.structure import CovarianceStructure


@functools.cache
def _lower_triangle(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a k x k lower triangle, column by column (lme4's θ order)."""
    cols, rows = np.triu_indices(k)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    for arr in (rows, cols):
        arr.setflags(write=False)
    return rows, cols


class Unstructured(CovarianceStructure):
    """A general covariance of the k random effects (lme4's ``(x | g)``).

    θ is the lower triangle of Λ column by column, k(k+1)/2 values, the
    diagonal ones non-negative; the start is Λ = I.

    Parameters
    ----------
    k : int
        The number of random effects per level.

    Attributes
    ----------
    k : int
        The number of random effects per level.
    ntheta : int
        k(k+1)/2, the length of θ.
    rows, cols : numpy.ndarray
        Row and column of Λ of each θ element (lme4's column-wise lower
        triangle; read-only arrays shared between structures of the same k).
    """

    def __init__(self, k: int):
        super().__init__(k)
        self.rows, self.cols = _lower_triangle(k)

    def __reduce__(self) -> tuple:
        # k is the whole state: an unpickled structure shares the cached layout
        return (type(self), (self.k,))

    @property
    def ntheta(self) -> int:
        """The length of θ: k(k+1)/2."""
        return self.k * (self.k + 1) // 2

    def theta_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the row and column of each θ element in Λ (lme4's column-wise lower triangle)."""
        return self.rows, self.cols

    def lower_bounds(self) -> np.ndarray:
        """Return 0 for the diagonal elements of Λ and -inf for the others (a new array)."""
        return np.where(self.rows == self.cols, 0.0, -np.inf)

    def start(self) -> np.ndarray:
        """Return lme4's start, Λ = I."""
        return np.where(self.rows == self.cols, 1.0, 0.0)

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """Return Λ: ``theta`` placed in the lower triangle, column by column."""
        out = np.zeros((self.k, self.k))
        out[self.rows, self.cols] = theta
        return out

    def theta_scale(self, column_scales: np.ndarray) -> np.ndarray:
        """Return the scale of each θ element: its row's column scale.

        Multiplying column r of the model matrix by c divides row r of Λ by
        c: each θ element scales with its row's column.
        """
        return column_scales[self.rows]

    def theta_names(self, group: str, cnames: Sequence[str]) -> list[str]:
        """Return lme4's names, e.g. ``Subject.(Intercept)``, ``Subject.Days.(Intercept)``."""
        names = []
        for i, j in zip(self.rows, self.cols):
            if i == j:
                names.append(f"{group}.{cnames[i]}")
            else:
                names.append(f"{group}.{cnames[i]}.{cnames[j]}")
        return names
