"""Compiled PIRLS steps for GLMMs whose random-effects terms are all scalar (optional: Numba).

A PIRLS step of such a model touches every row a few times: working weights
and response from η, the per-level sums of the first term, the row's few
entries of the dense block [Z_rest X]'W[Z_rest X] and of B = [Z_rest X]'WZ0,
then η, μ and the deviance again. numpy does each of these as a separate
pass with its own temporaries (a dozen passes and ~1 ms per step on 7,584
rows); here each is one loop over the rows. The Schur complement
S - Σ_s R_s R_s' is formed from the nonzeros of each level's row R_s only: a
level of the first term meets few levels of the others, so this costs a
fraction of the dense rank-k update on large crossed designs.

The links and variances are R's (``family.c``): the same clamps as
:mod:`mixedmodels.families`, so the numbers equal the numpy path's up to the
order of summation. A family and link have a compiled path where both have a
``kernel_code`` (the numbers the kernels switch on: links logit 0, log 1,
probit 2, cloglog 3; variances binomial 0, Poisson 1); the engine uses numpy
for the rest.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from mixedmodels.linalg.kernels.loader import KernelSet, numba_enabled

if TYPE_CHECKING:
    from mixedmodels.families import Family

__all__ = ["available", "ready", "supports", "kernels", "warm_up"]


def available() -> bool:
    """Return whether Numba can be used (see ``loader.numba_enabled``)."""
    return numba_enabled()


# Rows up to which a process's first model fits on the numpy path rather than
# waiting for the kernels to load (0.3-0.4 s): the numpy path costs ~15 µs per
# row and fit more (VerbAgg, 7,584 rows: 0.16 s against 0.055 s compiled).
SMALL_ROWS = 10_000


def supports(family: Family, nobs: int | None = None) -> bool:
    """Return whether a model of ``family`` and ``nobs`` rows built now uses compiled steps.

    ``family`` has them when its variance function and its link have a
    ``kernel_code`` each; a model built now uses them as :func:`ready` says
    (small: at most ``SMALL_ROWS`` rows).
    """
    if family.kernel_code is None or family.link.kernel_code is None:
        return False
    return ready(small=nobs is not None and nobs <= SMALL_ROWS)


def ready(small: bool = False) -> bool:
    """Return whether the kernels are loaded and a model built now uses them.

    See :mod:`mixedmodels.linalg.kernels.loader`, and ``KernelSet.ready`` for
    ``small``.
    """
    return KERNELS.ready(small)


def warm_up() -> None:
    """Load (or compile) every kernel the engine calls, with the argument types it passes.

    On a tiny model: two crossed scalar terms of two levels, an intercept, four
    rows.
    """
    from mixedmodels.linalg.kernels import glmm_numba as g

    n, l0, Q1 = 4, 2, 2
    codes = np.array([[0, 1, 0, 1], [0, 0, 1, 1]], dtype=np.int64)
    zv, lam = np.ones((2, n)), np.ones(2)
    offs, ubase = np.zeros(2, dtype=np.int64), np.array([0, l0], dtype=np.int64)
    X = np.ones((n, 1))
    XT = np.ascontiguousarray(X.T)
    y, wt, offset = np.array([0.0, 1.0, 1.0, 0.0]), np.ones(n), np.zeros(n)
    eta, mu = np.zeros(n), np.full(n, 0.5)
    common = (codes, zv, lam, offs, X, XT, eta, mu, y, wt, offset, 0, 0, l0, Q1)
    L0, R, S, y0, yr = g.assemble(*common, False)
    g.sparse_downdate(R, S)
    unit = g.weighted_sums(*common)
    g.eliminate(*g.scaled_sums(unit, lam, offs, Q1, np.zeros(0), True), Q1, False)
    u, b = np.zeros(l0 + Q1), np.zeros(1)
    g.update(codes, zv, lam, ubase, X, u, b, offset, y, wt, 0, 0, np.empty(n), np.empty(n))
    g.pirls(codes, zv, lam, offs, ubase, X, XT, y, wt, offset, eta, mu, 0, 0, l0, Q1,
            1e-10, 30, 10, 0.0, unit, np.zeros(0))


KERNELS = KernelSet("glmer", __name__, warm_up)


@functools.cache
def kernels():
    """Return (assemble, update, pirls), compiled on first use (or loaded from Numba's cache)."""
    from mixedmodels.linalg.kernels import glmm_numba as _glmm_numba

    return _glmm_numba.assemble, _glmm_numba.update, _glmm_numba.pirls


@functools.cache
def weighted_sums():
    """Return ``glmm_numba.weighted_sums`` (the PWLS system's sums before elimination)."""
    from mixedmodels.linalg.kernels import glmm_numba as _glmm_numba

    return _glmm_numba.weighted_sums


@functools.cache
def rescaling():
    """Return (``scaled_sums``, ``eliminate``) of ``glmm_numba``.

    Together they make a PWLS system from its sums at unit λ.
    """
    from mixedmodels.linalg.kernels import glmm_numba as _glmm_numba

    return _glmm_numba.scaled_sums, _glmm_numba.eliminate


@functools.cache
def sparse_downdate():
    """Return ``glmm_numba.sparse_downdate`` (S -= R'R from R's nonzeros)."""
    from mixedmodels.linalg.kernels import glmm_numba as _glmm_numba

    return _glmm_numba.sparse_downdate
