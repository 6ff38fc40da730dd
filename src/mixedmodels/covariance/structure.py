"""The interface of a random-effects covariance structure."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np


class CovarianceStructure(ABC):
    """The covariance of one level's ``k`` random effects relative to σ².

    Σ = σ² Λ Λᵀ with Λ = :meth:`factor` (θ), θ being the term's slice of the
    model's θ.

    The optimizers search θ within :meth:`lower_bounds` from :meth:`start`;
    the engine asks :meth:`factor` for Λ at every evaluation of the
    objective (so it must be cheap: no checks there). θ is searched for the
    term's columns divided by their search scales (see
    ``spec.random.ReTerm.column_scales``); :meth:`theta_scale` says how that
    rescales θ.

    Parameters
    ----------
    k : int
        The number of random effects per level (columns of the term's model
        matrix).

    Attributes
    ----------
    k : int
        The number of random effects per level.
    ntheta : int
        The length of the term's θ.
    """

    def __init__(self, k: int):
        self.k = k

    @property
    @abstractmethod
    def ntheta(self) -> int:
        """The length of θ."""

    @abstractmethod
    def theta_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the row and column of Λ that each θ element fills.

        This is the layout of a structure whose θ are entries of Λ.
        """

    @abstractmethod
    def lower_bounds(self) -> np.ndarray:
        """Return, per θ element, its lower bound (0 or -inf): a new array."""

    @abstractmethod
    def start(self) -> np.ndarray:
        """Return the θ at which the search starts, for unit-scale columns."""

    @abstractmethod
    def factor(self, theta: np.ndarray) -> np.ndarray:
        """Return the k x k relative covariance factor Λ for ``theta``."""

    @abstractmethod
    def theta_scale(self, column_scales: np.ndarray) -> np.ndarray:
        """Return, per θ element, the factor that rescales θ to scaled columns.

        θ × theta_scale is θ for the columns divided by ``column_scales``.
        """

    @abstractmethod
    def theta_names(self, group: str, cnames: Sequence[str]) -> list[str]:
        """Return the names of θ for grouping factor ``group`` and columns ``cnames``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"
