"""Denominator degrees of freedom for linear mixed models.

Satterthwaite's method as lmerTest 3.1-3 computes it and Kenward-Roger's as
pbkrtest 0.5.2 does, for single contrasts (t tests) and joint hypotheses
(F tests).

The methods live in :mod:`mixedmodels.inference.satterthwaite` and
:mod:`mixedmodels.inference.kenward_roger`; this module is their interface
for t tests of contrasts (:func:`contrast_df`) and joint F tests
(:func:`f_test`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mixedmodels.exceptions import ModelSpecError
from mixedmodels.inference.kenward_roger import kenward_roger_contrasts, kenward_roger_f
from mixedmodels.inference.satterthwaite import fstat_ddf, satterthwaite_df, satterthwaite_info

__all__ = ["contrast_df", "f_test", "normalise_ddf"]

_DDF_NAMES = {
    "satterthwaite": "satterthwaite",
    "kenward-roger": "kenward-roger",
    "kenwardroger": "kenward-roger",
    "kr": "kenward-roger",
    "asymptotic": "asymptotic",
}


def normalise_ddf(ddf: str | None, default: str = "satterthwaite") -> str:
    """Return the ddf method's canonical name for any of the accepted spellings.

    The name is ``"satterthwaite"``, ``"kenward-roger"`` or ``"asymptotic"``;
    spellings are case-insensitive (``"KR"``, ``"Kenward-Roger"``). ``None``
    gives ``default``; an unknown name raises :class:`ModelSpecError`.
    """
    if ddf is None:
        return default
    key = str(ddf).strip().lower().replace("_", "-").replace(" ", "-")
    method = _DDF_NAMES.get(key) or _DDF_NAMES.get(key.replace("-", ""))
    if method is None:
        raise ModelSpecError(
            f"ddf {ddf!r} is not one of 'satterthwaite', 'kenward-roger' (or 'KR'), 'asymptotic'"
        )
    return method


# ---------------------------------------------------------------------------- contract API


def _as_contrasts(model: Any, L: Any) -> np.ndarray:
    p = len(model.beta)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.ndim != 2 or L.shape[1] != p:
        raise ModelSpecError(
            f"contrast matrix L must have {p} columns (one per fixed effect of "
            f"{list(model.fixef.index)}), not shape {np.shape(L)}"
        )
    return L


def _t_pvalue(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    t, df = np.broadcast_arrays(np.asarray(t, dtype=float), np.asarray(df, dtype=float))
    out = np.full(t.shape, np.nan)
    ok = np.isfinite(t) & ~np.isnan(df) & (df > 0)
    inf = ok & np.isinf(df)
    fin = ok & ~np.isinf(df)
    out[fin] = 2 * stats.t.sf(np.abs(t[fin]), df[fin])
    out[inf] = 2 * stats.norm.sf(np.abs(t[inf]))
    return out


def contrast_df(model: Any, L: np.ndarray, ddf: str = "satterthwaite") -> pd.DataFrame:
    """Return t tests of single contrasts l'β, lmerTest's ``contest1D``.

    Parameters
    ----------
    model : LinearMixedModel
        A fitted model (``"asymptotic"`` also accepts GLMMs).
    L : array-like, shape (k, p)
        One contrast per row over the fixed effects in ``model.fixef`` order.
    ddf : {"satterthwaite", "kenward-roger", "asymptotic"}
        Satterthwaite (lmerTest), Kenward-Roger (pbkrtest ``vcovAdj`` for the
        standard error, ``Lb_ddf`` for the df; an ML fit uses the adjusted
        covariance of its REML refit, as pbkrtest does), or df = inf with
        normal p-values.

    Returns
    -------
    DataFrame
        Columns ``estimate, se, df, t, p_value``, index 0..k-1.
    """
    method = normalise_ddf(ddf)
    model.require_fit()
    L = _as_contrasts(model, L)
    beta = np.asarray(model.beta, dtype=float)
    est = L @ beta
    if method == "satterthwaite":
        var, df = satterthwaite_df(satterthwaite_info(model), L)
    elif method == "kenward-roger":
        var, df = kenward_roger_contrasts(model, L)
    else:
        V = np.asarray(model.vcov, dtype=float)
        var = np.einsum("kp,pq,kq->k", L, V, L)
        df = np.full(L.shape[0], np.inf)
    se = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = est / se
    out = pd.DataFrame(
        {"estimate": est, "se": se, "df": df, "t": t, "p_value": _t_pvalue(t, df)},
        index=pd.RangeIndex(L.shape[0]),
    )
    out.index.name = "contrast"
    return out


def f_test(model: Any, L: np.ndarray, ddf: str = "satterthwaite") -> dict:
    """Compute the joint F test of the k rows of ``L`` (H0: Lβ = 0).

    Satterthwaite follows lmerTest's ``contestMD`` (the eigen-decomposition of
    L C L', rows beyond its rank dropped, ``get_Fstat_ddf``); Kenward-Roger
    follows ``contestMD``'s use of pbkrtest's ``KRmodcomp`` (F scaled by
    ``F.scaling``, the mean square from the unscaled Wald statistic with the
    adjusted covariance); ``"asymptotic"`` gives the Wald F with den_df = inf
    (a χ²_k / k test).

    Returns
    -------
    dict
        ``sum_sq, mean_sq, num_df, den_df, F, p_value``; sums of squares are
        lmerTest's ``F σ² num_df``.
    """
    method = normalise_ddf(ddf)
    model.require_fit()
    L = _as_contrasts(model, L)
    if L.shape[0] == 0:
        return _f_row(np.nan, np.nan, np.nan, np.nan, 1.0, np.nan)
    sigma = float(model.sigma) if getattr(model, "has_residual", True) else 1.0
    if method == "kenward-roger":
        return _f_kenward_roger(model, L)
    beta = np.asarray(model.beta, dtype=float)
    V = np.asarray(model.vcov, dtype=float)
    if method == "satterthwaite":
        info = satterthwaite_info(model)
        V = info.vcov_beta
    if L.shape[0] > 1:
        d, P = np.linalg.eigh(L @ V @ L.T)
        order = np.argsort(d)[::-1]
        d, P = d[order], P[:, order]
        pos = d > max(np.sqrt(np.finfo(float).eps) * d[0], 0)
        qr = int(pos.sum())
        if qr == 0:
            return _f_row(np.nan, np.nan, np.nan, np.nan, sigma, np.nan)
        PtL = (P.T @ L)[:qr]
        d = d[:qr]
    else:
        PtL, d = L, np.einsum("kp,pq,kq->k", L, V, L)
        qr = 1
    t2 = (PtL @ beta) ** 2 / d
    F = float(np.mean(t2))
    if method == "satterthwaite":
        _, nu = satterthwaite_df(info, PtL)
        den = fstat_ddf(nu)
    else:
        den = np.inf
    return _f_row(F, qr, den, F, sigma, _f_pvalue(F, qr, den))


def _f_kenward_roger(model: Any, L: np.ndarray) -> dict:
    FU, q, den, F, sigma = kenward_roger_f(model, L)
    return _f_row(FU, q, den, F, sigma, _f_pvalue(F, q, den))


def _f_pvalue(F: float, num: float, den: float) -> float:
    if not np.isfinite(F) or not num > 0:
        return float("nan")
    if np.isinf(den):
        return float(stats.chi2.sf(F * num, num))
    return float(stats.f.sf(F, num, den))


def _f_row(F_unscaled: float, num: float, den: float, F: float, sigma: float, p: float) -> dict:
    mean_sq = F_unscaled * sigma**2
    return {
        "sum_sq": mean_sq * num,
        "mean_sq": mean_sq,
        "num_df": num,
        "den_df": den,
        "F": F,
        "p_value": p,
    }
