"""Starting values of θ for a linear mixed model: moment estimates near the optimum.

The estimates are one-way ANOVA or ML ratios, backfitted over crossed
intercept terms, and two-stage estimates of a term's covariance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["anova_ratio", "backfitted_ratios", "one_way_ratio", "unit_regression_start"]


def unit_regression_start(resid: np.ndarray, w: np.ndarray, term) -> np.ndarray | None:
    """Return ``_regression_start`` for the term's columns at their search scale, mapped back.

    The columns are scaled because its floors are absolute; mapped back, row
    r of λ is divided by column r's scale.
    """
    scale = term.column_scales
    if np.all(scale == 1.0):
        return _regression_start(resid, w, term.z, term.codes, term.nlevels)
    lam = _regression_start(resid, w, term.z / scale, term.codes, term.nlevels)
    return None if lam is None else lam / scale[:, None]


def _regression_start(
    resid: np.ndarray, w: np.ndarray, z: np.ndarray, codes: np.ndarray, nlevels: int
) -> np.ndarray | None:
    """Return λ from the two-stage (moment) estimate of a term's covariance.

    Within every level with more observations than the term has columns, the
    residuals are regressed on z: b_l = (Z_l'WZ_l)⁻¹Z_l'Wr_l. The covariance of
    the b_l overstates Σ by the estimation error σ²(Z_l'WZ_l)⁻¹, whose average is
    subtracted; relative to the pooled within-level σ², with eigenvalues kept
    positive, its Cholesky factor is the starting λ. None when there are too few
    usable levels.
    """
    k = z.shape[1]
    wz = z * w[:, None]
    zz = np.empty((nlevels, k, k))
    for a in range(k):
        for b in range(a, k):
            zz[:, a, b] = zz[:, b, a] = np.bincount(codes, wz[:, a] * z[:, b], minlength=nlevels)
    zr = np.stack([np.bincount(codes, wz[:, a] * resid, minlength=nlevels) for a in range(k)], 1)
    rr = np.bincount(codes, w * resid**2, minlength=nlevels)
    counts = np.bincount(codes, minlength=nlevels)
    det = np.linalg.det(zz)
    scale = np.einsum("lii->l", zz) ** k
    usable = (counts > k) & (det > 1e-8 * np.maximum(scale, 1e-300))
    if usable.sum() <= k + 1:
        return None
    zz, zr, rr, counts = zz[usable], zr[usable], rr[usable], counts[usable]
    inv = np.linalg.inv(zz)
    b = np.einsum("lab,lb->la", inv, zr)
    sigma2 = (rr - np.einsum("la,la->l", b, zr)).sum() / (counts - k).sum()
    if not sigma2 > 0:
        return None
    rel = np.cov(b, rowvar=False).reshape(k, k) / sigma2 - inv.mean(axis=0)
    vals, vecs = np.linalg.eigh(rel)
    vals = np.maximum(vals, 1e-2 * max(vals.max(), 1e-4))  # positive: not on a boundary
    lam = np.linalg.cholesky((vecs * vals) @ vecs.T)
    return lam if np.all(np.isfinite(lam)) else None


def backfitted_ratios(
    resid: np.ndarray, terms: list, sweeps: int = 2, ml: bool = False
) -> list[float]:
    """Return the one-way ratios of several intercept terms, backfitted.

    Each is the ANOVA ratio (or ML with ``ml``: see ``one_way_ratio``) from
    the residuals less the other terms' group means shrunk as BLUPs
    (n θ² / (n θ² + 1)).
    """
    n = len(resid)
    counts = [np.bincount(t.codes, minlength=t.nlevels).astype(float) for t in terms]
    work = np.empty(n)  # the same arithmetic in a few reused arrays of n: fresh pages cost
    ratios = [one_way_ratio(resid, t.codes, t.nlevels, ml, c, work) for t, c in zip(terms, counts)]
    if len(terms) < 2:
        return ratios
    fitted = [np.zeros(n) for _ in terms]
    total, partial, new = np.zeros(n), np.empty(n), np.empty(n)
    # coarsest first: with nested factors the finest one's group means would
    # otherwise take up the variation of the coarser ones
    order = sorted(range(len(terms)), key=lambda j: terms[j].nlevels)
    for _ in range(sweeps):
        for j in order:
            t = terms[j]
            np.subtract(total, fitted[j], out=partial)
            np.subtract(resid, partial, out=partial)  # resid - (total - fitted[j])
            ratios[j] = one_way_ratio(partial, t.codes, t.nlevels, ml, counts[j], work)
            means = np.bincount(t.codes, partial, minlength=t.nlevels) / np.maximum(counts[j], 1.0)
            shrink = counts[j] * ratios[j] ** 2 / (counts[j] * ratios[j] ** 2 + 1.0)
            np.take(shrink * means, t.codes, out=new)
            total += np.subtract(new, fitted[j], out=work)
            fitted[j], new = new, fitted[j]
    return ratios


# Bounds of a starting ratio: a search never starts on the boundary.
_RATIO_BOUNDS = (0.05, 5.0)


def one_way_ratio(
    resid: np.ndarray,
    codes: np.ndarray,
    nlevels: int,
    ml: bool,
    counts: np.ndarray | None = None,
    work: np.ndarray | None = None,
) -> float:
    """Return the between / within standard-deviation ratio of one grouping of the residuals.

    It is the ANOVA moment estimate, which is the REML estimate of a
    balanced one-way model; with ``ml`` the one-way maximum-likelihood
    estimate, from Newton steps on its profiled deviance starting there (the
    start of an ML fit then sits at its optimum for a one-way model).
    ``counts``: the groups' sizes if known; ``work``: an array like ``resid``
    to compute in.
    """
    if counts is None:
        counts = np.bincount(codes, minlength=nlevels).astype(float)
    sums = np.bincount(codes, resid, minlength=nlevels)
    ratio = _anova_ratio(resid, codes, counts, sums, work)
    if not ml:
        return ratio
    used = counts > 0
    n_g = counts[used]
    return _one_way_ml_ratio(n_g, sums[used] ** 2 / n_g, float(resid @ resid), ratio)


def _anova_ratio(
    resid: np.ndarray,
    codes: np.ndarray,
    counts: np.ndarray,
    sums: np.ndarray,
    work: np.ndarray | None = None,
) -> float:
    """Return the ANOVA ratio of residuals ``resid`` in groups ``codes``.

    The sqrt(between / within) variance ratio of the one-way ANOVA moment
    estimator, from the rows (see :func:`anova_ratio`).
    """

    def within_squares(means: np.ndarray) -> float:
        deviations = np.take(means, codes, out=work)
        np.subtract(resid, deviations, out=deviations)
        return float(np.sum(np.square(deviations, out=deviations)))

    return anova_ratio(counts, sums, within_squares)


def anova_ratio(
    counts: np.ndarray, sums: np.ndarray, within_squares: Callable[[np.ndarray], float]
) -> float:
    """Return the sqrt(between / within) variance ratio of the one-way ANOVA moment estimator.

    For unbalanced groups n0 = (N - Σn_g²/N) / (g - 1). It is computed from
    the groups' counts and residual sums and ``within_squares(means)``, the
    sum of squared deviations from the group means: from the rows in memory,
    from the total sum of squares for partitioned data. 1 when undefined.
    """
    means = sums / np.maximum(counts, 1.0)
    used = counts > 0
    n, g = counts.sum(), int(used.sum())
    if g < 2 or n <= g:
        return 1.0
    within = within_squares(means) / (n - g)
    grand = np.sum(counts * means) / n
    between = np.sum(counts[used] * (means[used] - grand) ** 2) / (g - 1)
    n0 = (n - np.sum(counts**2) / n) / (g - 1)
    if within <= 0 or n0 <= 0:
        return 1.0
    ratio = max(between - within, 0.0) / n0 / within
    return float(np.clip(np.sqrt(ratio), *_RATIO_BOUNDS))


def _one_way_ml_ratio(n_g: np.ndarray, a_g: np.ndarray, rss: float, start: float) -> float:
    """Return the ratio minimising the one-way profiled ML deviance of zero-mean residuals.

    The deviance over ρ = ratio² is N log σ²(ρ) + Σ log(1 + n_g ρ) with
    N σ²(ρ) = rss - Σ a_g + Σ a_g / (1 + n_g ρ) (a_g = n_g ȳ_g²); Newton
    steps from ``start`` while the deviance is convex there; ``start`` if
    they do not settle.
    """
    N = n_g.sum()
    ssw = rss - a_g.sum()
    lo, hi = _RATIO_BOUNDS[0] ** 2, _RATIO_BOUNDS[1] ** 2
    rho = start**2
    for _ in range(20):
        d = 1.0 / (1.0 + n_g * rho)
        s2 = ssw + np.sum(a_g * d)
        s1 = -np.sum(a_g * n_g * d * d)  # N σ²' and N σ²''
        s11 = 2.0 * np.sum(a_g * n_g * n_g * d**3)
        grad = N * s1 / s2 + np.sum(n_g * d)
        curv = N * (s11 / s2 - (s1 / s2) ** 2) - np.sum((n_g * d) ** 2)
        if not (s2 > 0 and np.isfinite(curv) and curv > 0):
            return start
        new = min(max(rho - grad / curv, lo), hi)
        if abs(new - rho) <= 1e-6 * max(rho, lo):
            return float(np.sqrt(new))
        rho = new
    return start
