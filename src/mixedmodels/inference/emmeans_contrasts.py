"""emmeans' contrast families and p-value adjustments.

The families ``pairwise``, ``revpairwise``, ``trt.vs.ctrl``, ``consec``,
``eff`` and custom coefficients; the adjustments ``tukey``, ``sidak``,
``scheffe``, ``dunnettx``, ``mvt`` and R's ``p.adjust`` methods; for
:meth:`mixedmodels.inference.emmeans.EMMeans.contrasts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from mixedmodels.exceptions import ModelSpecError

__all__ = [
    "AdjustmentFamily", "ContrastFamily", "adjusted_p", "make_family", "normalize_adjust", "p_adjust",
]

_P_ADJUST = ("holm", "hochberg", "hommel", "bonferroni", "BH", "BY", "fdr", "none")
_ADJUSTMENTS = ("sidak", "tukey", "scheffe", "dunnettx", "mvt") + _P_ADJUST


# --------------------------------------------------------------------------- p-value adjustment


def p_adjust(p: Sequence[float], method: str = "holm", n: int | None = None) -> np.ndarray:
    """Adjust p-values as R's ``p.adjust``: Holm, Hochberg, Hommel, Bonferroni, BH, BY or none.

    Parameters
    ----------
    p : sequence of float
        Unadjusted p-values (NaN allowed: left out, as R does).
    method : str
        One of ``holm, hochberg, hommel, bonferroni, BH, fdr, BY, none``.
    n : int, optional
        Number of tests (default: the non-missing p-values).

    Returns
    -------
    numpy.ndarray
        The adjusted p-values, NaN where ``p`` is.
    """
    p0 = np.asarray(p, dtype=float).copy()
    ok = ~np.isnan(p0)
    pv = p0[ok]
    lp = len(pv)
    n = lp if n is None else int(n)
    method = "BH" if method == "fdr" else method
    if n <= 1 or method == "none":
        return p0
    if n == 2 and method == "hommel":
        method = "hochberg"
    p0[ok] = _p_adjust_values(pv, method, n)
    return p0


def _p_adjust_values(p: np.ndarray, method: str, n: int) -> np.ndarray:
    lp = len(p)
    if method == "bonferroni":
        return np.minimum(1.0, n * p)
    if method == "holm":
        o = np.argsort(p, kind="stable")
        i = np.arange(1, lp + 1)
        out = np.minimum(1.0, np.maximum.accumulate((n - i + 1) * p[o]))
        return out[np.argsort(o, kind="stable")]
    if method in ("hochberg", "BH", "BY"):
        i = np.arange(lp, 0, -1)
        o = np.argsort(-p, kind="stable")
        if method == "hochberg":
            scaled = (n - i + 1) * p[o]
        else:
            q = np.sum(1.0 / np.arange(1, n + 1)) if method == "BY" else 1.0
            scaled = q * n / i * p[o]
        out = np.minimum(1.0, np.minimum.accumulate(scaled))
        return out[np.argsort(o, kind="stable")]
    if method == "hommel":
        return _hommel(p, n)
    raise ModelSpecError(f"p-value adjustment {method!r} is not one of {list(_ADJUSTMENTS)}")


def _hommel(p: np.ndarray, n: int) -> np.ndarray:
    """R's p.adjust(method = "hommel"), line for line."""
    lp = len(p)
    p = np.concatenate([p, np.ones(n - lp)])
    i = np.arange(1, n + 1)
    o = np.argsort(p, kind="stable")
    p = p[o]
    ro = np.argsort(o, kind="stable")
    q = np.full(n, np.min(n * p / i))
    pa = q.copy()
    for m in range(n - 1, 1, -1):
        i1 = np.arange(0, n - m + 1)
        i2 = np.arange(n - m + 1, n)
        q1 = np.min(m * p[i2] / np.arange(2, m + 1))
        q[i1] = np.minimum(m * p[i1], q1)
        q[i2] = q[n - m]
        pa = np.maximum(pa, q)
    return np.maximum(pa, p)[ro][:lp] if lp == n else np.maximum(pa, p)[ro[:lp]]


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall (emmeans rounds the Tukey df with it)."""
    finite = x[~np.isnan(x)]
    if finite.size == 0:
        return x
    mx = np.max(np.abs(finite))
    if not mx > 0:
        return x
    decimals = max(0, digits - math.ceil(math.log10(mx))) if np.isfinite(mx) else 0
    return np.round(x, decimals)


def _ptukey_sf(q: np.ndarray, nmeans: float, df: np.ndarray) -> np.ndarray:
    """Return the upper tail of the studentized range (R's ptukey(lower.tail = FALSE)).

    ``nmeans`` and ``df`` may be fractional.
    """
    return np.array(
        [stats.studentized_range.sf(qi, nmeans, di) if np.isfinite(qi) else np.nan
         for qi, di in zip(q, df)]
    )


def _pdunnx(x: np.ndarray, k: int, df: np.ndarray) -> np.ndarray:
    """Return emmeans' .pdunnx: Dunnett's distribution as a blend of Tukey's and Sidak's."""
    twt = (k - 1) / k
    nmeans = (1 + math.sqrt(1 + 8 * k)) / 2
    tukey = 1.0 - _ptukey_sf(math.sqrt(2) * x, nmeans, df)
    sidak = _f_cdf(x**2, 1, df) ** k
    return twt * tukey + (1 - twt) * sidak


def _f_cdf(x: np.ndarray, d1: float, d2: np.ndarray) -> np.ndarray:
    """R's pf(x, d1, d2), also for d2 = Inf (then chi-squared(d1) / d1)."""
    x, d2 = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(d2, dtype=float))
    out = np.empty(x.shape)
    inf = np.isinf(d2)
    out[inf] = stats.chi2.cdf(x[inf] * d1, d1)
    out[~inf] = stats.f.cdf(x[~inf], d1, d2[~inf])
    return out


def _mvt_df(d: float) -> int:
    """Return emmeans' .fix.df: whole df for mvtnorm, 0 (normal) when infinite or > 9999."""
    if np.isnan(d) or np.isinf(d) or d > 9999:
        return 0
    return math.floor(max(1.0, d) + 0.25)


def _pmvt(t: np.ndarray, df: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """Return emmeans' mvt adjustment: 1 - P(max |T_j| <= |t_i|).

    For the multivariate t of the family's correlation (mvtnorm::pmvt with
    integer df); a randomized quasi-Monte Carlo integral, seeded for
    reproducibility.
    """
    k = len(t)
    out = np.empty(k)
    for i in range(k):
        a = abs(t[i])
        upper, lower = np.full(k, a), np.full(k, -a)
        dfi = _mvt_df(df[i])
        if dfi > 0:
            dist = stats.multivariate_t(
                loc=np.zeros(k), shape=corr, df=dfi, allow_singular=True, seed=1
            )
            prob = dist.cdf(upper, lower_limit=lower, maxpts=200000 * k, random_state=1)
        else:
            dist = stats.multivariate_normal(mean=np.zeros(k), cov=corr, allow_singular=True, seed=1)
            prob = dist.cdf(upper, lower_limit=lower)
        out[i] = 1.0 - prob
    return np.clip(out, 0.0, 1.0)


@dataclass
class AdjustmentFamily:
    """What an adjustment needs of one family of tests (emmeans' fam.info).

    Attributes
    ----------
    fam_size : int
        Number of means in the family (Tukey's number of means).
    n_contr : int
        Number of contrasts per ``by`` group.
    est_type : int
        1 prediction, 2 contrast, 3 pairs.
    by_rows : list of numpy.ndarray
        The rows of the tests in every ``by`` group.
    linfct : numpy.ndarray
        The tests' linear functions of the fixed effects (kept columns).
    corr : numpy.ndarray or None
        Correlation of the tests' estimates, for the ``mvt`` adjustment.
    """

    fam_size: int
    n_contr: int
    est_type: int  # 1 prediction, 2 contrast, 3 pairs
    by_rows: list[np.ndarray]
    linfct: np.ndarray  # rows of the tests, kept columns
    corr: np.ndarray | None = None


def normalize_adjust(adjust: str) -> str:
    """Return the canonical name of a p-value adjustment.

    Case-insensitive, and a unique prefix is enough (``"bonf"``); an unknown
    name raises :class:`ModelSpecError`.
    """
    key = str(adjust)
    low = key.lower()
    if low in ("bh", "by"):
        return low.upper()
    matches = [a for a in _ADJUSTMENTS if a.lower().startswith(low)]
    if low in [a.lower() for a in _ADJUSTMENTS]:
        return next(a for a in _ADJUSTMENTS if a.lower() == low)
    if len(matches) == 1:
        return matches[0]
    raise ModelSpecError(f"adjust {adjust!r} is not one of {list(_ADJUSTMENTS)}")


def adjusted_p(
    t: np.ndarray, df: np.ndarray, adjust: str, fam: AdjustmentFamily, notes: list[str]
) -> tuple[np.ndarray, str]:
    """Return emmeans' .adj.p.value for two-sided tests: the p-values and the method used."""
    adjust = normalize_adjust(adjust)
    if fam.n_contr == 1 and adjust != "scheffe":
        adjust = "none"
    if fam.est_type != 3 and adjust == "tukey":
        notes.append(
            'adjust = "tukey" was changed to "sidak" because "tukey" is only appropriate '
            "for one set of pairwise comparisons"
        )
        adjust = "sidak"
    df = np.where(np.isnan(df), np.inf, df)
    p_unadj = 2.0 * stats.t.sf(np.abs(t), df)
    ragged = adjust in _P_ADJUST or adjust == "mvt"
    groups = fam.by_rows if ragged else [np.arange(len(t))]
    pval = np.empty(len(t))
    for rows in groups:
        abst, d = np.abs(t[rows]), df[rows]
        n_contr, fam_size = fam.n_contr, fam.fam_size
        if ragged:
            n_contr = len(rows)
        if adjust in _P_ADJUST:
            pval[rows] = _p_adjust_family(p_unadj[rows], adjust, n_contr, fam)
        elif adjust == "sidak":
            pval[rows] = 1.0 - (1.0 - p_unadj[rows]) ** n_contr
        elif adjust == "tukey":
            pval[rows] = _ptukey_sf(math.sqrt(2) * abst, fam_size, _zapsmall(d))
        elif adjust == "scheffe":
            pval[rows] = _scheffe(t[rows], d, rows, fam)
        elif adjust == "dunnettx":
            pval[rows] = 1.0 - _pdunnx(abst, n_contr, d)
        elif adjust == "mvt":
            pval[rows] = _pmvt(t[rows], d, fam.corr[np.ix_(rows, rows)])
    return pval, adjust


def _p_adjust_family(p: np.ndarray, adjust: str, n_contr: int, fam: AdjustmentFamily) -> np.ndarray:
    if n_contr == len(p):
        return p_adjust(p, adjust, n=n_contr)
    cols = p.reshape(n_contr, -1, order="F")
    return np.concatenate(
        [p_adjust(c, adjust, n=int(np.sum(~np.isnan(c)))) for c in cols.T]
    )


def _scheffe(t: np.ndarray, df: np.ndarray, rows: np.ndarray, fam: AdjustmentFamily) -> np.ndarray:
    """Scheffe's adjustment with the rank of each by group's linear functions."""
    out = np.empty(len(t))
    for group in fam.by_rows:
        sel = np.isin(rows, group)
        if not sel.any():
            continue
        rank = np.linalg.matrix_rank(_zapsmall(fam.linfct[group]), tol=1e-7)
        out[sel] = 1.0 - _f_cdf(t[sel] ** 2 / rank, rank, df[sel])
    return out



# --------------------------------------------------------------------------- contrast families


@dataclass
class ContrastFamily:
    """Coefficients of a family of contrasts with their names and emmeans' attributes.

    Attributes
    ----------
    coef : numpy.ndarray
        The coefficients, levels x contrasts.
    names : list of str
        The contrasts' labels (``"a - b"``).
    adjust : str
        The family's default p-value adjustment.
    est_type : int or None
        3 for pairs; None: contrast or prediction, decided from the sums.
    fam_size : int or None
        Number of means for Tukey's adjustment (None: the size of a ``by`` group).
    """

    coef: np.ndarray
    names: list[str]
    adjust: str
    est_type: int | None = None  # 3 for pairs; None: contrast/prediction from the sums
    fam_size: int | None = None


def _pairwise(levs: list[str], reverse: bool = False) -> ContrastFamily:
    k = len(levs)
    cols, names = [], []
    pairs = (
        [(i, j) for i in range(k - 1) for j in range(i + 1, k)]
        if not reverse
        else [(i, j) for i in range(1, k) for j in range(i)]
    )
    for i, j in pairs:
        con = np.zeros(k)
        con[i], con[j] = 1.0, -1.0
        cols.append(con)
        names.append(f"{levs[i]} - {levs[j]}")
    fam_size = k if not reverse else None
    return ContrastFamily(_stack(cols, k), names, "tukey", 3, fam_size)


def _trt_vs_ctrl(levs: list[str], raw: list[str], ref: Any, reverse: bool) -> ContrastFamily:
    k = len(levs)
    refs = _ref_positions(ref, raw)
    ctrl = levs[refs[0]] if len(refs) == 1 else "avg(" + ",".join(levs[r] for r in refs) + ")"
    templ = np.zeros(k)
    templ[refs] = -1.0 / len(refs)
    cols, names = [], []
    for i in range(k):
        if i in refs:
            continue
        con = templ.copy()
        con[i] = 1.0
        cols.append(-con if reverse else con)
        names.append(f"{ctrl} - {levs[i]}" if reverse else f"{levs[i]} - {ctrl}")
    return ContrastFamily(_stack(cols, k), names, "dunnettx")


def _ref_positions(ref: Any, raw: list[str]) -> list[int]:
    """Positions of the control level(s): labels, or 0-based positions."""
    refs = [0] if ref is None else ref
    if isinstance(refs, (str, int, np.integer)):
        refs = [refs]
    out = []
    for r in refs:
        if isinstance(r, (int, np.integer)) and not isinstance(r, bool):
            if not 0 <= int(r) < len(raw):
                raise ModelSpecError(
                    f"ref position {r} is out of range for {len(raw)} means (0-based)"
                )
            out.append(int(r))
        elif str(r) in raw:
            out.append(raw.index(str(r)))
        else:
            raise ModelSpecError(f"ref {r!r} is not one of the levels {raw}")
    return sorted(set(out))


def _consec(levs: list[str], reverse: bool) -> ContrastFamily:
    k = len(levs)
    sgn = -1.0 if reverse else 1.0
    cols, names = [], []
    for i in range(k - 1):
        con = np.zeros(k)
        con[i], con[i + 1] = -sgn, sgn
        cols.append(con)
        names.append(f"{levs[i]} - {levs[i + 1]}" if reverse else f"{levs[i + 1]} - {levs[i]}")
    return ContrastFamily(_stack(cols, k), names, "mvt")


def _eff(levs: list[str]) -> ContrastFamily:
    k = len(levs)
    cols = [np.full(k, -1.0 / k) + np.eye(k)[i] for i in range(k)]
    return ContrastFamily(_stack(cols, k), [f"{lv} effect" for lv in levs], "fdr")


def _custom(method: Mapping[str, Sequence[float]], k: int) -> ContrastFamily:
    cols, names = [], []
    for name, coefs in method.items():
        con = np.asarray(coefs, dtype=float).ravel()
        if len(con) != k:
            raise ModelSpecError(
                f"custom contrast {name!r} has {len(con)} coefficients for {k} means"
            )
        cols.append(con)
        names.append(str(name))
    return ContrastFamily(_stack(cols, k), names, "none")


def _stack(cols: list[np.ndarray], k: int) -> np.ndarray:
    return np.column_stack(cols) if cols else np.zeros((k, 0))


def make_family(
    method: Any, levs: list[str], raw: list[str], ref: Any, reverse: bool
) -> ContrastFamily:
    """Return the contrast family ``method`` of the means labelled ``levs``.

    Parameters
    ----------
    method : str or dict
        ``"pairwise"``, ``"revpairwise"``, ``"trt.vs.ctrl"`` (or ``"dunnett"``),
        ``"consec"``, ``"eff"``, or ``{name: coefficients}``.
    levs : list of str
        The means' labels as contrast names show them (parenthesised where needed).
    raw : list of str
        The same labels as pasted, which ``ref`` labels are matched against.
    ref : str, int or list
        trt.vs.ctrl's control level(s): labels or 0-based positions (None: the first).
    reverse : bool
        trt.vs.ctrl and consec: the reversed differences.
    """
    if isinstance(method, Mapping):
        return _custom(method, len(levs))
    if method == "pairwise":
        return _pairwise(levs)
    if method == "revpairwise":
        return _pairwise(levs, reverse=True)
    if method in ("trt.vs.ctrl", "dunnett"):
        return _trt_vs_ctrl(levs, raw, ref, reverse)
    if method == "consec":
        return _consec(levs, reverse)
    if method == "eff":
        return _eff(levs)
    raise ModelSpecError(
        f"contrast method {method!r} is not one of 'pairwise', 'revpairwise', 'trt.vs.ctrl', "
        "'consec', 'eff' or a dict of coefficient vectors"
    )
