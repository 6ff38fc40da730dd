"""Confidence and prediction intervals for predictions of mixed models.

The variance of a prediction is split into components, and an interval
adds the ones its kind includes (``x`` the fixed-effects row, ``z_j`` the
row of random-effects term j, ``V_β`` the covariance of the fixed effects,
``Σ_j`` the covariance of term j's random effects, ``C_jl`` the conditional
covariance of level l's random effects given the data, lme4's ``postVar``):

* ``"confidence"``: ``fixed`` = x'V_β x only: the uncertainty of the
  fitted fixed effects, also for predictions that include random effects
  (lme4 has no interval for predictions; this is the usual choice, as in
  merTools' ``predictInterval(which = "fixed")`` without residual).
* ``"prediction"``: a new observation: ``fixed`` + ``random`` + ``residual``,
  where ``random`` sums over the random-effects terms

  - z_j'C_jl z_j for a term included in the prediction (``re_form`` None)
    and a level seen in the fit: the uncertainty of that level's
    conditional mode;
  - z_j'Σ_j z_j for a term included but a level not seen in the fit
    (``new_levels="population"``) and for every term when the prediction
    excludes the random effects (``re_form="~0"``): the variance of the
    random effects of a new, unknown group;

  and ``residual`` = σ² (σ²/w for the fitted rows of a weighted fit).
  Covariances between the estimates of β and the conditional modes, and the
  uncertainty of the variance parameters, are not included (as merTools).

The bounds are fit ± z_{(1+level)/2} × sqrt(variance) on the linear-predictor
scale; a generalized model maps them through its inverse link (the bounds of
a monotone transformation), with ``transform``.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any, Callable

import numpy as np
import pandas as pd

from mixedmodels.exceptions import PredictionError
from mixedmodels.spec.newdata import apply_spec, newdata_fixed_matrix, newdata_frame
from mixedmodels.support.newdata import include_random, level_positions

__all__ = ["prediction_variance", "interval_frame", "INTERVALS"]

INTERVALS = ("none", "confidence", "prediction")

_COMPONENTS = {
    "confidence": ("fixed effects: x'V_beta x",),
    "prediction": (
        "fixed effects: x'V_beta x",
        "random effects: z'C z (conditional variance of the mode) for levels seen in the fit, "
        "z'Sigma z (variance of a new group's effects) for unseen levels and for terms "
        "left out by re_form",
        "residual: sigma^2 (sigma^2 / weight for the fitted rows of a weighted fit)",
    ),
}


def check_interval(interval: str) -> str:
    """Return ``interval`` if it is one of :data:`INTERVALS`, else raise ``PredictionError``."""
    if interval not in INTERVALS:
        raise PredictionError(f"interval must be one of {INTERVALS}, not {interval!r}")
    return interval


def prediction_variance(
    model: Any,
    newdata: Any = None,
    re_form: str | None = None,
    new_levels: str = "population",
    residual: bool = True,
) -> pd.DataFrame:
    """Return the variance components of predictions on the linear-predictor scale.

    Parameters
    ----------
    model : fitted lmer or glmer model
        Needs ``vcov``, ``covariances()``, ``condvar_b()``, ``frame`` and,
        for ``residual``, ``sigma``.
    newdata : DataFrame, optional
        Rows to predict; None: the fitted rows.
    re_form : None or "~0"
        Whether the predictions include the random effects.
    new_levels : {"population", "error", "nan"}
        As for ``predict``: unseen levels get the variance of a new group
        ("population"), raise ("error") or NaN ("nan").
    residual : bool
        Compute the residual component (σ², σ²/w on weighted fitted rows).

    Returns
    -------
    DataFrame
        Columns ``fixed``, ``random``, ``residual`` (see the module
        docstring), indexed like the predictions.
    """
    include = include_random(re_form)
    fr = model.frame
    if newdata is None:
        nd, X, index = None, fr.fixed.X, fr.data.index
    else:
        nd = newdata_frame(newdata, fr.parsed)
        X, index = newdata_fixed_matrix(fr.fixed, nd), nd.index
    V = np.asarray(model.vcov, dtype=float)
    fixed = np.einsum("ij,jk,ik->i", X, V, X)
    random = np.zeros(len(X))
    for term, cov, cond in zip(fr.terms, model.covariances(), model.condvar_b()):
        z, pos = _term_rows(term, nd, include)
        marginal = np.einsum("ij,jk,ik->i", z, cov, z)
        if include:
            seen = pos >= 0
            part = marginal.copy()
            cz = np.einsum("ijk,ik->ij", cond[np.where(seen, pos, 0)], z)
            part[seen] = np.einsum("ij,ij->i", z, cz)[seen]
            if (~seen).any():
                if new_levels == "error":
                    raise PredictionError(
                        f"newdata has levels of grouping factor {term.name!r} not seen in the fit"
                    )
                if new_levels == "nan":
                    part[~seen] = np.nan
            random += part
        else:
            random += marginal
    out = pd.DataFrame({"fixed": fixed, "random": random}, index=index)
    if residual:
        sigma2 = float(model.sigma) ** 2
        res = np.full(len(X), sigma2)
        if newdata is None and fr.weights is not None:
            with np.errstate(divide="ignore"):
                res = sigma2 / fr.weights
        out["residual"] = res
    return out


def _term_rows(term: Any, nd: pd.DataFrame | None, include: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return the term's model-matrix rows and the level position of every row.

    A position of -1 is a level unseen in the fit, or not looked up.
    """
    if nd is None:
        return term.z, term.codes
    z = apply_spec(term.model_spec, nd, f"random-effects term {term.spec.text}")
    if not include:
        return z, np.full(len(nd), -1)
    return z, level_positions(term, nd)[0]


def interval_frame(
    fit: pd.Series | np.ndarray,
    variance: pd.DataFrame,
    interval: str,
    level: float = 0.95,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    re_form: str | None = None,
) -> pd.DataFrame:
    """Return ``fit, lower, upper`` for ``interval``.

    "confidence" uses the ``fixed`` component of ``variance``, "prediction"
    all its columns; the components are named in ``attrs``. ``transform`` (an
    inverse link) maps the fit and both bounds.
    """
    if interval not in ("confidence", "prediction"):
        raise PredictionError(f"interval must be 'confidence' or 'prediction', not {interval!r}")
    if not 0 < level < 1:
        raise PredictionError(f"level must be strictly between 0 and 1, not {level!r}")
    eta = np.asarray(fit, dtype=float)
    cols = ["fixed"] if interval == "confidence" else list(variance.columns)
    se = np.sqrt(variance[cols].sum(axis=1).to_numpy())
    z = NormalDist().inv_cdf((1 + level) / 2)
    lower, upper = eta - z * se, eta + z * se
    if transform is not None:
        eta, lower, upper = transform(eta), transform(lower), transform(upper)
        lower, upper = np.minimum(lower, upper), np.maximum(lower, upper)
    out = pd.DataFrame({"fit": eta, "lower": lower, "upper": upper}, index=variance.index)
    components = _COMPONENTS[interval]
    if interval == "prediction" and "residual" not in variance.columns:
        components = components[:2]
    out.attrs.update(
        interval=interval,
        level=level,
        re_form="all random effects" if include_random(re_form) else "none (population level)",
        components=" + ".join(components),
    )
    if transform is not None:
        out.attrs["scale"] = "response (bounds of the linear predictor through the inverse link)"
    return out
