"""nlme's spatial residual correlation structures (``corSpatial``).

Within a group, the correlation of two observations at distance d is
(1 - nugget) · f(d / range) (nugget 0 without ``nugget=True``), 1 on the
diagonal, with f exponential (corExp), Gaussian (corGaus), linear
(corLin), rational quadratic (corRatio) or spherical (corSpher).

Unconstrained scale (nlme's): log(range), or log(range - minD) for corLin
and corSpher whose range must exceed the smallest distance minD of the
data; logit(nugget).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Sequence

import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.special import expit, logit

from mixedmodels.exceptions import DataError, MixedModelsWarning, ModelSpecError
from mixedmodels.residual.correlation import CorrelationStructure

__all__ = ["SpatialCorrelation", "corExp", "corGaus", "corLin", "corRatio", "corSpher"]

#: nlme's metric names and scipy's
_METRICS = {"euclidean": "euclidean", "maximum": "chebyshev", "manhattan": "cityblock"}


class SpatialCorrelation(CorrelationStructure):
    """A correlation that decays with the distance between coordinates.

    Parameters
    ----------
    value : sequence of float, optional
        range (and nugget, with ``nugget=True``) in natural scale; by default
        nlme's start from the data's smallest distance (and nugget 0.1).
    form : str
        The coordinates and grouping: ``"~ x + y"``, ``"~ x + y | g"``.
    nugget : bool
        Whether a nugget effect is estimated.
    metric : {"euclidean", "maximum", "manhattan"}
        The distance.
    fixed : bool
        Whether the parameters stay at ``value``.

    Attributes
    ----------
    min_distance : float
        nlme's minD: the smallest within-group distance of the data (after
        :meth:`initialize`).
    """

    position_ndim = 2
    #: whether the unconstrained range is measured from the smallest distance
    shifted_range = False
    #: nlme's default start of the range, a multiple of the smallest distance
    default_range_factor = 0.9

    def __init__(
        self,
        value: Sequence[float] | float | None = None,
        form: str = "~ 1",
        nugget: bool = False,
        metric: str = "euclidean",
        fixed: bool = False,
    ):
        if metric not in _METRICS:
            raise ModelSpecError(f"metric must be one of {list(_METRICS)}, got {metric!r}")
        super().__init__(value, form, fixed)
        self.nugget = bool(nugget)
        self.metric = metric
        if self.value is not None:
            if self.value.size == 1 and self.nugget:
                self.value = np.append(self.value, 0.1)  # nlme's default nugget
            self._check_natural(self.value)

    @property
    def n_params(self) -> int:
        """1 (range) or 2 (range, nugget)."""
        return 2 if self.nugget else 1

    @property
    def param_names(self) -> list[str]:
        """``["range"]`` or ``["range", "nugget"]``."""
        return ["range", "nugget"] if self.nugget else ["range"]

    @staticmethod
    @abstractmethod
    def shape(scaled: np.ndarray) -> np.ndarray:
        """f(d / range), the correlation before the nugget (each structure's own)."""

    def distances(self, positions: np.ndarray) -> np.ndarray:
        """Distance matrices of one group's coordinates (n x d) or a stack (m x n x d)."""
        coords = np.asarray(positions, dtype=float)
        if coords.ndim == 1:
            coords = coords[:, None]
        if coords.ndim == 2:
            return squareform(pdist(coords, _METRICS[self.metric]))
        return np.stack([squareform(pdist(group, _METRICS[self.metric])) for group in coords])

    def _read_groups(self, groups: list[np.ndarray]) -> None:
        pairs = [pdist(g[:, None] if g.ndim == 1 else g, _METRICS[self.metric]) for g in groups]
        pairs = np.concatenate([np.zeros(0)] + pairs)
        if pairs.size == 0:
            raise DataError(f"{type(self).__name__}: no group has two observations, no distance to model")
        if not self.nugget and np.any(pairs == 0):
            raise DataError(
                f"{type(self).__name__}: two observations of a group are at distance 0 (equal coordinates of "
                f"{self.covariates or 'the form'}): their correlation would be 1 and R_i singular; "
                "use nugget=True or remove the duplicates"
            )
        self.min_distance = float(pairs.min())
        # nlme's start is a multiple of minD; with ties (minD = 0) the smallest positive distance
        self._start_distance = float(pairs[pairs > 0].min()) if np.any(pairs > 0) else 1.0
        if self.value is not None and self.shifted_range and self.value[0] <= self.min_distance:
            warnings.warn(
                f"initial value for 'range' of {type(self).__name__} ({self.value[0]:.6g}) not above the minimum "
                f"distance {self.min_distance:.6g}: setting it to 1.1 * min(distance)",
                MixedModelsWarning,
                stacklevel=3,
            )
            self.value = self.value.copy()
            self.value[0] = 1.1 * self.min_distance

    def default_value(self) -> np.ndarray:
        """Return nlme's default: range = 0.9 (1.1 for corLin, corSpher) × min distance; nugget 0.1."""
        self._require_initialized()
        start = [self.default_range_factor * self._start_distance]
        return np.array(start + [0.1] if self.nugget else start)

    def _check_natural(self, natural: np.ndarray) -> None:
        name = type(self).__name__
        if natural.size != self.n_params:
            raise ModelSpecError(
                f'initial value for "{name}" parameters of wrong dimension: {natural.size} given, '
                f"{self.n_params} expected"
            )
        if natural[0] <= 0:
            raise ModelSpecError(f"'range' must be > 0 in \"{name}\" initial value, got {natural[0]:.6g}")
        if self.nugget and not 0 < natural[1] < 1:
            raise ModelSpecError(f"initial value of nugget ratio must be between 0 and 1, got {natural[1]:.6g}")

    def _range_offset(self) -> float:
        if not self.shifted_range:
            return 0.0
        self._require_initialized()
        return self.min_distance

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """log(range) (log(range - minD) for corLin/corSpher), logit(nugget)."""
        natural = np.asarray(natural, dtype=float).reshape(-1)
        self._check_natural(natural)
        offset = self._range_offset()
        if natural[0] <= offset:
            raise ModelSpecError(
                f"range of {type(self).__name__} must exceed the minimum distance {offset:.6g}, got {natural[0]:.6g}"
            )
        out = [np.log(natural[0] - offset)]
        return np.array(out + [logit(natural[1])] if self.nugget else out)

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """exp(u₁) (+ minD for corLin/corSpher), expit(u₂)."""
        u = np.asarray(unconstrained, dtype=float).reshape(-1)
        out = [np.exp(u[0]) + self._range_offset()]
        return np.array(out + [expit(u[1])] if self.nugget else out)

    def matrix(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """R_i: (1 - nugget) f(d / range) off the diagonal, 1 on it."""
        natural = self.natural(params)
        distances = self.distances(positions)
        # 1 - nugget as expit(-u): exact for large |u|, as nlme's 1/(1 + exp(u))
        scale = expit(-np.asarray(params, dtype=float).reshape(-1)[1]) if self.nugget else 1.0
        corr = scale * self.shape(distances / natural[0])
        n = distances.shape[-1]
        corr[..., np.arange(n), np.arange(n)] = 1.0
        return corr

    def __repr__(self) -> str:
        value = None if self.value is None else self.value.tolist()
        return (
            f"{type(self).__name__}(value={value}, form={self.form!r}, nugget={self.nugget}, "
            f"metric={self.metric!r}, fixed={self.fixed})"
        )


class corExp(SpatialCorrelation):  # noqa: N801 - nlme's class name
    """Exponential spatial correlation exp(-d/range) (nlme's ``corExp``)."""

    @staticmethod
    def shape(scaled: np.ndarray) -> np.ndarray:
        """exp(-s)."""
        return np.exp(-scaled)


class corGaus(SpatialCorrelation):  # noqa: N801 - nlme's class name
    """Gaussian spatial correlation exp(-(d/range)²) (nlme's ``corGaus``)."""

    @staticmethod
    def shape(scaled: np.ndarray) -> np.ndarray:
        """exp(-s²)."""
        return np.exp(-(scaled * scaled))


class corLin(SpatialCorrelation):  # noqa: N801 - nlme's class name
    """Linear spatial correlation (1 - d/range)₊ (nlme's ``corLin``)."""

    shifted_range = True
    default_range_factor = 1.1

    @staticmethod
    def shape(scaled: np.ndarray) -> np.ndarray:
        """1 - s below 1, 0 beyond."""
        return np.where(scaled < 1, 1.0 - scaled, 0.0)


class corRatio(SpatialCorrelation):  # noqa: N801 - nlme's class name
    """Rational quadratic spatial correlation 1/(1 + (d/range)²) (nlme's ``corRatio``)."""

    @staticmethod
    def shape(scaled: np.ndarray) -> np.ndarray:
        """1/(1 + s²)."""
        return 1.0 / (1.0 + scaled * scaled)


class corSpher(SpatialCorrelation):  # noqa: N801 - nlme's class name
    """Spherical spatial correlation 1 - 1.5 s + 0.5 s³ below s = d/range = 1 (nlme's ``corSpher``)."""

    shifted_range = True
    default_range_factor = 1.1

    @staticmethod
    def shape(scaled: np.ndarray) -> np.ndarray:
        """1 - 1.5 s + 0.5 s³ below 1, 0 beyond."""
        return np.where(scaled < 1, 1.0 - 1.5 * scaled + 0.5 * scaled**3, 0.0)
