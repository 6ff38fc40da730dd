"""The parameters of ``confint``, ``profile`` and ``bootstrap``, as lme4 names them.

lme4's variance parameters are the standard deviations and correlations of
every random-effects term in θ order (``.sig01, .sig02, ...``; readable names
``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``), then the
residual SD ``.sigma`` (``sigma``) when the model has one, then the fixed
effects. This module maps between them and θ, selects them by name or
position, and builds the interval frames every method returns; the profile
and the bootstrap both use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError

__all__ = [
    "VarianceParameter",
    "check_level",
    "check_names",
    "has_residual_sd",
    "interval_frame",
    "parameter_names",
    "sdcor_at",
    "sdcor_from_covariances",
    "select_parameters",
    "theta_from_sdcor",
    "variance_parameters",
]


@dataclass(frozen=True)
class VarianceParameter:
    """One standard deviation or correlation of a random-effects term, or the residual SD.

    Where it sits in θ and its two names.

    Attributes
    ----------
    term : int
        Index of the term in ``frame.terms``; -1 for the residual SD.
    row, col : int
        The element of the term's covariance matrix (row == col for an SD).
    lme4 : str
        lme4's name: ``.sig01``, ..., ``.sigma``.
    readable : str
        The readable name: ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
        ``sigma``.
    kind : str
        ``"sd"``, ``"cor"`` or ``"sigma"``.
    lower, upper : float
        The parameter's bounds: -1 and 1 for a correlation, 0 and inf otherwise.
    """

    term: int  # index in frame.terms; -1 for the residual SD
    row: int
    col: int
    lme4: str  # .sig01, ..., .sigma
    readable: str  # sd_(Intercept)|Subject, cor_Days.(Intercept)|Subject, sigma

    def unit_scale(self, model: Any) -> float:
        """Return the factor giving this parameter for unit-scale random-effects columns.

        An SD of column r times its scale (see ``ReTerm.column_scales``); 1 for
        correlations and σ.
        """
        if self.kind != "sd":
            return 1.0
        return float(model.frame.terms[self.term].column_scales[self.row])

    @property
    def kind(self) -> str:
        """``"sd"``, ``"cor"`` or ``"sigma"`` (the residual SD)."""
        if self.term < 0:
            return "sigma"
        return "sd" if self.row == self.col else "cor"

    @property
    def lower(self) -> float:
        """Lower bound: -1 for a correlation, 0 otherwise."""
        return -1.0 if self.kind == "cor" else 0.0

    @property
    def upper(self) -> float:
        """Upper bound: 1 for a correlation, inf otherwise."""
        return 1.0 if self.kind == "cor" else math.inf


def has_residual_sd(model: Any) -> bool:
    """Tell whether the model has a residual SD, lme4's useSc (lmer; glmer with a scale)."""
    return bool(getattr(model, "has_residual", True))


def variance_parameters(model: Any) -> list[VarianceParameter]:
    """Return lme4's variance parameters of ``model`` in lme4's order.

    θ order within every term, terms in the fit's order, then the residual SD.
    """
    out: list[VarianceParameter] = []
    for j, term in enumerate(model.frame.terms):
        rows, cols = term.theta_rows_cols()
        for r, c in zip(rows, cols):
            if r == c:
                readable = f"sd_{term.cnames[r]}|{term.name}"
            else:
                readable = f"cor_{term.cnames[r]}.{term.cnames[c]}|{term.name}"
            out.append(VarianceParameter(j, int(r), int(c), f".sig{len(out) + 1:02d}", readable))
    if has_residual_sd(model):
        out.append(VarianceParameter(-1, 0, 0, ".sigma", "sigma"))
    return out


def parameter_names(model: Any, names: str = "lme4") -> list[str]:
    """Return the names of all the parameters of ``confint`` / ``profile``.

    The variance parameters (``names="lme4"``: ``.sig01``, ...; ``"readable"``:
    ``sd_(Intercept)|Subject``, ...) then the fixed effects.
    """
    style = check_names(names)
    return [getattr(v, style) for v in variance_parameters(model)] + list(model.frame.fixed.names)


def check_names(names: str) -> str:
    """Return ``names`` if it is a naming style ("lme4" or "readable"), else raise."""
    if names not in ("lme4", "readable"):
        raise MixedModelsError(f"names must be 'lme4' or 'readable', not {names!r}")
    return names


def sdcor_from_covariances(model: Any, covariances: Sequence[np.ndarray]) -> np.ndarray:
    """Return the SDs and correlations of every term, in θ order.

    From the terms' covariance matrices; a correlation with a zero SD is NaN.
    """
    out = []
    for term, cov in zip(model.frame.terms, covariances):
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        rows, cols = term.theta_rows_cols()
        for r, c in zip(rows, cols):
            if r == c:
                out.append(sd[r])
            else:
                denom = sd[r] * sd[c]
                out.append(cov[r, c] / denom if denom > 0 else np.nan)
    return np.asarray(out, dtype=float)


def sdcor_at(model: Any, theta: np.ndarray, sigma: float) -> np.ndarray:
    """Return [SDs and correlations, σ] of an lmer fit at (θ, σ)."""
    covs = [sigma**2 * lam @ lam.T for lam in model.lambdas(theta)]
    return np.append(sdcor_from_covariances(model, covs), sigma)


def theta_from_sdcor(model: Any, values: np.ndarray) -> np.ndarray | None:
    """Return θ for [SDs and correlations, σ] (lme4's convProfParToPar).

    λ_j is the Cholesky factor of the term's covariance over σ². None when a
    term's correlations do not form a positive semi-definite matrix or σ <= 0.
    """
    sigma = values[-1]
    if not sigma > 0:
        return None
    parts, pos = [], 0
    for term in model.frame.terms:
        k = term.k
        rows, cols = term.theta_rows_cols()
        sd = np.zeros(k)
        R = np.eye(k)
        for r, c in zip(rows, cols):
            v = values[pos]
            pos += 1
            if r == c:
                sd[r] = v
            else:
                R[r, c] = R[c, r] = v
        L = _semidefinite_cholesky(R)
        if L is None:
            return None
        lam = (sd[:, None] * L) / sigma
        parts.append(lam[rows, cols])
    return np.concatenate(parts)


def _semidefinite_cholesky(R: np.ndarray, tol: float = 1e-10) -> np.ndarray | None:
    """Return the lower Cholesky factor of a correlation matrix that may be singular.

    |correlation| = 1 gives zero pivots, which are allowed; None if the matrix
    is not PSD.
    """
    k = R.shape[0]
    L = np.zeros((k, k))
    for j in range(k):
        d = R[j, j] - L[j, :j] @ L[j, :j]
        if d < -tol:
            return None
        d = math.sqrt(max(d, 0.0))
        L[j, j] = d
        for i in range(j + 1, k):
            num = R[i, j] - L[i, :j] @ L[j, :j]
            if d > 0:
                L[i, j] = num / d
            elif abs(num) > 1e-8:
                return None
    return L


def select_parameters(model: Any, parm: Any) -> list[int]:
    """Return the positions (in :func:`parameter_names` order) selected by ``parm``.

    ``parm`` is None (all), a name or list of names in either naming style,
    integer positions (0-based), or lme4's ``"theta_"`` (variance parameters)
    / ``"beta_"`` (fixed effects).
    """
    lme4 = parameter_names(model, "lme4")
    readable = parameter_names(model, "readable")
    nvp = len(variance_parameters(model))
    total = len(lme4)
    if parm is None:
        return list(range(total))
    items = [parm] if isinstance(parm, (str, int, np.integer)) else list(parm)
    chosen: list[int] = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < total:
                raise MixedModelsError(
                    f"parameter position {item} is out of range: the model has {total} "
                    f"parameters ({', '.join(lme4)})"
                )
            chosen.append(int(item))
        elif item == "theta_":
            chosen.extend(range(nvp))
        elif item == "beta_":
            chosen.extend(range(nvp, total))
        elif item in lme4:
            chosen.append(lme4.index(item))
        elif item in readable:
            chosen.append(readable.index(item))
        else:
            raise MixedModelsError(
                f"unknown parameter {item!r}: the parameters are {', '.join(lme4)} "
                f"(or {', '.join(readable[:nvp])}), 'theta_' or 'beta_'"
            )
    return sorted(set(chosen))


def check_level(level: float) -> None:
    """Raise unless the confidence ``level`` is strictly between 0 and 1."""
    if not 0 < level < 1:
        raise MixedModelsError(f"level must be strictly between 0 and 1, not {level!r}")


def interval_frame(labels, lower, upper, level: float, method: str) -> pd.DataFrame:
    """Return the frame of intervals every method returns.

    Columns ``lower`` and ``upper``, indexed by ``parameter`` (``labels``);
    ``attrs`` hold the ``level`` and the ``method``.
    """
    out = pd.DataFrame(
        {"lower": np.asarray(lower, dtype=float), "upper": np.asarray(upper, dtype=float)},
        index=pd.Index(labels, name="parameter"),
    )
    out.attrs["level"] = level
    out.attrs["method"] = method
    return out

