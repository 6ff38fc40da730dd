"""Compiled loops for the rank update of large models (optional: Numba).

When the first term's levels touch many rows of the dense block (a million
observations over 20,000 x 1,000 crossed levels), the list of entry pairs that
the precomputed update operator stores would not fit in memory, and sparse
matrix products of scipy spend most of their time in bookkeeping. The update
and the gradient's gather walk the pattern of B's random-effects rows
(Z_r'Z_0, CSC) level by level instead: the same arithmetic, no pair list, no
temporary sparse matrices (B's dense [X y] rows are dense products in the
engine); a third loop scales and finishes the dense block in one pass over its
upper triangle (numpy would make several passes over an array of ~100 MB).
When B is dense enough that most pairs exist, the engine uses BLAS instead
(:class:`~mixedmodels.linalg.below.DenseBelow`).

Imported only when such a model is fitted; ``ready()`` says whether a model
built now uses the loops (Numba installed, not switched off, the loops loaded:
see :mod:`mixedmodels.linalg.kernels.loader`); otherwise the engine falls back
to scipy's sparse products.
"""

from __future__ import annotations

import functools

import numpy as np

from mixedmodels.linalg.kernels.loader import KernelSet, numba_enabled

__all__ = [
    "available",
    "ready",
    "warm_up",
    "accumulators",
    "rank_update",
    "finish_scalar",
    "gather_blocks",
    "scalar_pairs",
    "pattern_apply",
    "pattern_adjoint",
    "scatter_upper",
    "gather_lower",
    "symv_lower",
]


def available() -> bool:
    """Return whether Numba can be used (see ``loader.numba_enabled``)."""
    return numba_enabled()


def ready() -> bool:
    """Return whether a model built now uses the loops.

    See :mod:`mixedmodels.linalg.kernels.loader`: the sequential ones are loaded
    in the background; the parallel ones, for the largest models only, on their
    first use.
    """
    return KERNELS.ready()


@functools.cache
def _kernels():
    """Return (rank_update, finish_scalar, gather_blocks), compiled on first use or cached."""
    from mixedmodels.linalg.kernels import lmm_numba as _lmm_numba

    return _lmm_numba.rank_update, _lmm_numba.finish_scalar, _lmm_numba.gather_blocks


def warm_up(parallel: bool = True) -> None:
    """Compile (or load from Numba's cache) the loops once, on tiny inputs.

    The first use in a process otherwise pays about a second for it. With
    ``parallel=False`` only the sequential ones (the update operator's build
    and its scatter and gather): running a parallel loop starts Numba's worker
    threads, which then compete with BLAS for the cores.
    """
    import scipy.sparse as sp

    B = sp.csc_array(np.ones((3, 2)))
    B.sort_indices()
    ptr, rank, _, touched = scalar_pairs(B, 3)
    pattern_adjoint(ptr, rank, pattern_apply(ptr, rank, np.ones(2), len(touched)))
    rowptr, positions = np.array([0, 2, 2]), np.array([0, 1])
    S, one = np.zeros((3, 3)), np.ones(2)
    scatter_upper(S, 2, rowptr, positions, one, 0.5 * one, np.ones(3))
    gather_lower(np.asfortranarray(S), 2, rowptr, positions, 3, np.ones(3))
    single = np.asfortranarray(S, dtype=np.float32)  # the inverse kept in single precision
    gather_lower(single, 2, rowptr, positions, 3, np.ones(3))
    symv_lower(single, np.ones(3))
    if not parallel:
        return
    for k0 in (1, 2):
        C = np.ones((2 // k0, k0, k0))
        acc = rank_update(B, k0, C, 3)
        gather_blocks(B, k0, np.eye(3), np.ones(3), 3)
    finish_scalar(np.eye(3), acc, np.ones(3), 2, np.empty((3, 3)))


def accumulators(nlev: int, N: int) -> np.ndarray:
    """Return zeroed per-thread accumulators for :func:`rank_update`, (threads, N, N)."""
    import numba

    return np.zeros((max(1, min(numba.get_num_threads(), nlev)), N, N))


def rank_update(B, k0: int, C: np.ndarray, N: int, out: np.ndarray | None = None) -> np.ndarray:
    """Accumulate the upper triangle (C order) of B blockdiag(C_s) B' into ``out``.

    ``out`` is zeroed, from :func:`accumulators` (made when None). Returns the
    per-thread parts, (t, N, N), whose sum is the update.
    """
    if out is None:
        out = accumulators(C.shape[0], N)
    _kernels()[0](B.indptr, B.indices, B.data, k0, np.ascontiguousarray(C), out)
    return out


def finish_scalar(Arr: np.ndarray, acc: np.ndarray, sc: np.ndarray, nq: int, S: np.ndarray) -> None:
    """Set S = diag(sc)(Arr - Σ acc)diag(sc) + I_nq on the upper triangle (C order).

    ``acc`` is cleared (zeroed) for the next update.
    """
    _kernels()[1](Arr, acc, sc, nq, S)


def gather_blocks(B, k0: int, Pu: np.ndarray, sc: np.ndarray, sub: int) -> np.ndarray:
    """Return H_s = B_s' P B_s for every level s, (ℓ0, k0, k0).

    P = diag(sc) S diag(sc) on the leading ``sub`` rows (zero beyond), with S
    symmetric, given by its upper triangle ``Pu`` (C order).
    """
    out = np.empty((B.shape[1] // k0, k0, k0))
    _kernels()[2](B.indptr, B.indices, B.data, k0, np.ascontiguousarray(Pu), sc, sub, out)
    return out


def scatter_upper(
    S: np.ndarray, nrows: int, rowptr: np.ndarray, positions: np.ndarray,
    arr: np.ndarray, update: np.ndarray, sc: np.ndarray,
) -> None:
    """Write S's leading ``nrows`` x ``nrows`` upper triangle (C order).

    diag(sc)(arr - update)diag(sc) at the sorted flat ``positions`` (row i's
    from ``rowptr[i]``), zero elsewhere.
    """
    from mixedmodels.linalg.kernels import lmm_numba as _lmm_numba

    _lmm_numba.scatter_upper(S, nrows, rowptr, positions, arr, update, sc)


def gather_lower(
    inv: np.ndarray, nrows: int, rowptr: np.ndarray, positions: np.ndarray, N: int,
    sc: np.ndarray,
) -> np.ndarray:
    """Return w sc[i] sc[j] inv[j, i] at the positions (i, j) of an N x N C-ordered array.

    The positions are as in :func:`scatter_upper`; the values come from the
    lower triangle of the Fortran-ordered ``inv``; w = 2 off the diagonal, 1 on
    it.
    """
    from mixedmodels.linalg.kernels import lmm_numba as _lmm_numba

    out = np.empty(len(positions))
    _lmm_numba.gather_lower(inv, nrows, rowptr, positions, N, sc, out)
    return out


def symv_lower(Z: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Return Z v in double precision.

    Z is symmetric, given by the lower triangle of a Fortran-ordered array
    (float32 or float64).
    """
    from mixedmodels.linalg.kernels import lmm_numba as _lmm_numba

    out = np.empty(len(v))
    _lmm_numba.symv_lower(Z, np.ascontiguousarray(v, dtype=float), out)
    return out


def scalar_pairs(B, N: int):
    """Return the update operator of a scalar first term from B's sorted CSC pattern.

    In one compiled pass: (ptr, rank, value, touched), the operator's CSC
    arrays (int32 where they fit) and the touched flat positions
    (``linalg.rank_update.scalar_pairs`` builds the same with numpy, several
    times slower). ``value`` is None when
    every entry of B is 1 (unweighted rows, each pair of levels met at most
    once): then every value is 1, and :func:`pattern_apply` and
    :func:`pattern_adjoint` apply the operator without an array as long as the
    pairs.
    """
    from mixedmodels.linalg.kernels import lmm_numba as _lmm_numba

    unit = bool(np.all(B.data == 1.0))
    ptr, rank, value, touched = _lmm_numba.scalar_pairs(B.indptr, B.indices, B.data, N, not unit)
    if ptr[-1] < 2**31:  # int32 throughout: scipy would otherwise widen the ranks
        ptr = ptr.astype(np.int32)
    return ptr, rank, (None if unit else value), touched


def pattern_apply(ptr: np.ndarray, rank: np.ndarray, c: np.ndarray, nrows: int) -> np.ndarray:
    """Return T c for the (nrows x len(c)) operator whose values are all 1.

    See :func:`scalar_pairs`.
    """
    from mixedmodels.linalg.kernels import lmm_numba as _lmm_numba

    out = np.empty(nrows)
    _lmm_numba.pattern_apply(ptr, rank, np.ascontiguousarray(c, dtype=float), out)
    return out


def pattern_adjoint(ptr: np.ndarray, rank: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Return T'w for the operator of :func:`pattern_apply`."""
    from mixedmodels.linalg.kernels import lmm_numba as _lmm_numba

    out = np.empty(len(ptr) - 1)
    _lmm_numba.pattern_adjoint(ptr, rank, np.ascontiguousarray(w, dtype=float), out)
    return out


KERNELS = KernelSet("lmer", __name__, functools.partial(warm_up, parallel=False))
