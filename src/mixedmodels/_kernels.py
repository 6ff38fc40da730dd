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
(``linalg.DenseBelow``).

Imported only when such a model is fitted; ``available()`` says whether Numba is
installed (``pip install 'mixedmodels[fast]'``); without it the engine falls back
to scipy's sparse products.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "available",
    "warm_up",
    "accumulators",
    "rank_update",
    "finish_scalar",
    "gather_blocks",
]


def available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _compile():
    import numba

    @numba.njit(cache=True, nogil=True, parallel=True)
    def rank_update(indptr, indices, data, k0, C, out):
        """out[t, i, j] += Σ_ab C[s, a, b] B[i, (s, a)] B[j, (s, b)] for i <= j (upper),
        levels split into ``out.shape[0]`` chunks run in parallel, one
        accumulator each (summed by the caller).

        Row indices are sorted within a column, so the entries j >= i of column
        (s, b) start at a pointer that only moves forward as i grows."""
        nlev = C.shape[0]
        nchunks = out.shape[0]
        for t in numba.prange(nchunks):
            acc = out[t]
            for s in range(t * nlev // nchunks, (t + 1) * nlev // nchunks):
                for a in range(k0):
                    ca = s * k0 + a
                    for b in range(k0):
                        cb = s * k0 + b
                        start, end = indptr[cb], indptr[cb + 1]
                        for p in range(indptr[ca], indptr[ca + 1]):
                            i = indices[p]
                            while start < end and indices[start] < i:
                                start += 1
                            cab = C[s, a, b] * data[p]
                            for r in range(start, end):
                                acc[i, indices[r]] += cab * data[r]

    @numba.njit(cache=True, nogil=True)
    def finish_row(Arr, acc, sc, nq, S, i):
        N = S.shape[0]
        for j in range(i, N):
            u = 0.0
            for t in range(acc.shape[0]):
                u += acc[t, i, j]
                acc[t, i, j] = 0.0
            S[i, j] = sc[i] * sc[j] * (Arr[i, j] - u)
        if i < nq:
            S[i, i] += 1.0

    @numba.njit(cache=True, nogil=True, parallel=True)
    def finish_scalar(Arr, acc, sc, nq, S):
        """S[i, j] = sc[i] sc[j] (Arr[i, j] - Σ_t acc[t, i, j]) for j >= i, plus 1
        on the first ``nq`` diagonal entries; the accumulators are cleared for
        the next update. Rows h and N - 1 - h go to the same thread, so the
        threads get equal shares of the triangle."""
        N = S.shape[0]
        for h in numba.prange((N + 1) // 2):
            finish_row(Arr, acc, sc, nq, S, h)
            if N - 1 - h != h:
                finish_row(Arr, acc, sc, nq, S, N - 1 - h)

    @numba.njit(cache=True, nogil=True, parallel=True)
    def gather_blocks(indptr, indices, data, k0, Pu, sc, sub, out):
        """out[s, a, b] = Σ_ij B[i, (s, a)] P[i, j] B[j, (s, b)] for
        P[i, j] = sc[i] sc[j] S⁻¹[i, j] on the leading ``sub`` rows (zero beyond),
        S⁻¹ given by its upper triangle ``Pu`` (C order): no full P is built."""
        nlev = out.shape[0]
        for s in numba.prange(nlev):
            for a in range(k0):
                ca = s * k0 + a
                for b in range(a, k0):
                    cb = s * k0 + b
                    acc = 0.0
                    for p in range(indptr[ca], indptr[ca + 1]):
                        i = indices[p]
                        if i >= sub:
                            break
                        row = 0.0
                        if a == b:
                            for r in range(p + 1, indptr[cb + 1]):
                                j = indices[r]
                                if j >= sub:
                                    break
                                row += Pu[i, j] * sc[j] * data[r]
                            acc += data[p] * sc[i] * (2.0 * row + Pu[i, i] * sc[i] * data[p])
                        else:
                            for r in range(indptr[cb], indptr[cb + 1]):
                                j = indices[r]
                                if j >= sub:
                                    break
                                v = Pu[i, j] if i <= j else Pu[j, i]
                                row += v * sc[j] * data[r]
                            acc += data[p] * sc[i] * row
                    out[s, a, b] = acc
                    out[s, b, a] = acc

    return (
        rank_update,
        finish_scalar,
        gather_blocks,
    )


@functools.cache
def _kernels():
    return _compile()


def warm_up() -> None:
    """Compile (or load from Numba's cache) every loop once, on tiny inputs: the
    first use in a process otherwise pays about a second for it."""
    import scipy.sparse as sp

    B = sp.csc_array(np.ones((3, 2)))
    for k0 in (1, 2):
        C = np.ones((2 // k0, k0, k0))
        acc = rank_update(B, k0, C, 3)
        gather_blocks(B, k0, np.eye(3), np.ones(3), 3)
    finish_scalar(np.eye(3), acc, np.ones(3), 2, np.empty((3, 3)))


def accumulators(nlev: int, N: int) -> np.ndarray:
    """Zeroed per-thread accumulators for :func:`rank_update`, (threads, N, N)."""
    import numba

    return np.zeros((max(1, min(numba.get_num_threads(), nlev)), N, N))


def rank_update(B, k0: int, C: np.ndarray, N: int, out: np.ndarray | None = None) -> np.ndarray:
    """Upper triangle (C order) of B blockdiag(C_s) B', accumulated into ``out``
    (zeroed, from :func:`accumulators`); returns the per-thread parts, (t, N, N)."""
    if out is None:
        out = accumulators(C.shape[0], N)
    _kernels()[0](B.indptr, B.indices, B.data, k0, np.ascontiguousarray(C), out)
    return out


def finish_scalar(Arr: np.ndarray, acc: np.ndarray, sc: np.ndarray, nq: int, S: np.ndarray) -> None:
    """S = diag(sc)(Arr - Σ acc)diag(sc) + I_nq on the upper triangle (C order);
    clears ``acc``."""
    _kernels()[1](Arr, acc, sc, nq, S)


def gather_blocks(B, k0: int, Pu: np.ndarray, sc: np.ndarray, sub: int) -> np.ndarray:
    """H_s = B_s' P B_s for every level s, (ℓ0, k0, k0), for P = diag(sc) S diag(sc)
    on the leading ``sub`` rows (zero beyond) with S symmetric, given by its
    upper triangle ``Pu`` (C order)."""
    out = np.empty((B.shape[1] // k0, k0, k0))
    _kernels()[2](B.indptr, B.indices, B.data, k0, np.ascontiguousarray(Pu), sc, sub, out)
    return out
