"""Complete separation in a binomial GLMM, found after the fit.

That is fixed effects whose estimates are infinite in truth (after Konis).
"""

from __future__ import annotations

import numpy as np

from mixedmodels.families import Family

__all__ = ["separated_columns", "separating_effects"]

# a fitted probability this close to 0 or 1 is what separation drives them to
NEAR_BOUND = 1e-6


def separating_effects(
    family: Family, mu: np.ndarray, X: np.ndarray, y: np.ndarray, wt: np.ndarray, names: list[str]
) -> list[str]:
    """Return the fixed effects that separate the data of a fit with means ``mu``.

    Only for a family whose response is a proportion of trials, and only
    when some fitted probability is within ``NEAR_BOUND`` of 0 or 1 (then
    :func:`separated_columns`, a linear program over the rows with a
    non-zero weight ``wt``).
    """
    if not family.counts_trials:
        return []
    if not np.any(np.minimum(mu, 1.0 - mu) < NEAR_BOUND):
        return []
    keep = wt > 0
    return separated_columns(X[keep], y[keep], names)


def separated_columns(X: np.ndarray, y: np.ndarray, names: list[str]) -> list[str]:
    """Return fixed effects whose estimates are infinite: the data are separated.

    The binomial data are (quasi-)completely separated (after Konis) when
    there is a direction d with x_i'd >= 0 for every all-success row, <= 0
    for every all-failure row and = 0 for the others, not zero on all of
    them. The sparsest such direction (least L1 norm, a linear program) names
    the columns.
    """
    from scipy.optimize import linprog

    sign = np.where(y >= 1, 1.0, np.where(y <= 0, -1.0, 0.0))
    ineq = sign != 0
    if not ineq.any():
        return []
    p = X.shape[1]
    A = X[ineq] * sign[ineq, None]
    eq = X[~ineq]
    zeros = np.zeros((len(A), p))
    I = np.eye(p)
    # variables (d, t): minimise Σt with t >= |d|, A d >= 0, Σ A d >= 1, eq d = 0
    A_ub = np.vstack([
        np.hstack([-A, zeros]),
        np.hstack([-A.sum(axis=0)[None, :], np.zeros((1, p))]),
        np.hstack([I, -I]),
        np.hstack([-I, -I]),
    ])
    b_ub = np.concatenate([np.zeros(len(A)), [-1.0], np.zeros(2 * p)])
    res = linprog(
        np.concatenate([np.zeros(p), np.ones(p)]), A_ub=A_ub, b_ub=b_ub,
        A_eq=np.hstack([eq, np.zeros((len(eq), p))]) if len(eq) else None,
        b_eq=np.zeros(len(eq)) if len(eq) else None,
        bounds=[(None, None)] * p + [(0, None)] * p, method="highs",
    )
    if res.status != 0:  # infeasible: no separating direction
        return []
    d = res.x[:p]
    return [name for name, v in zip(names, d) if abs(v) > 1e-9 * np.abs(d).max()]
