"""Compiled PIRLS steps for GLMMs whose random-effects terms are all scalar
(optional: Numba).

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
order of summation. Only the families and links in ``LINKS``/``VARIANCES``
have a compiled path; the engine uses numpy for the rest.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["available", "supports", "kernels", "LINKS", "VARIANCES"]

LINKS = {"logit": 0, "log": 1, "probit": 2, "cloglog": 3}
VARIANCES = {"binomial": 0, "poisson": 1}


def available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def supports(family_name: str, link_name: str) -> bool:
    """Whether this family and link have compiled steps (and Numba is there)."""
    if family_name not in VARIANCES or link_name not in LINKS:
        return False
    if family_name == "poisson" and link_name != "log":
        return False
    return available()


@functools.cache
def kernels():
    """(assemble, update, pirls), compiled on first use (or loaded from Numba's cache)."""
    from . import _glmm_numba

    return _glmm_numba.assemble, _glmm_numba.update, _glmm_numba.pirls


@functools.cache
def weighted_sums():
    """``_glmm_numba.weighted_sums`` (the PWLS system's sums before elimination)."""
    from . import _glmm_numba

    return _glmm_numba.weighted_sums


@functools.cache
def rescaling():
    """(``scaled_sums``, ``eliminate``) of ``_glmm_numba``: a PWLS system
    from its sums at unit λ."""
    from . import _glmm_numba

    return _glmm_numba.scaled_sums, _glmm_numba.eliminate


@functools.cache
def sparse_downdate():
    """``_glmm_numba.sparse_downdate`` (S -= R'R from R's nonzeros)."""
    from . import _glmm_numba

    return _glmm_numba.sparse_downdate
