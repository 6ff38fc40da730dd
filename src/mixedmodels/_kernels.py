"""Compiled loops for the rank update of large models (optional: Numba).

When the first term's levels touch many rows of the dense block (a million
observations over 20,000 x 1,000 crossed levels), the list of entry pairs that
the precomputed update operator stores would not fit in memory, and sparse
matrix products of scipy spend most of their time in bookkeeping. These two
loops walk the pattern of B = [Z_r X y]'Z_0 level by level instead: the same
arithmetic, no pair list, no temporary sparse matrices.

Imported only when such a model is fitted; ``available()`` says whether Numba is
installed (``pip install 'mixedmodels[fast]'``); without it the engine falls back
to scipy's sparse products.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["available", "rank_update", "gather_blocks"]


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

    @numba.njit(cache=True, nogil=True, parallel=True)
    def gather_blocks(indptr, indices, data, k0, P, out):
        """out[s, a, b] = Σ_ij B[i, (s, a)] P[i, j] B[j, (s, b)] (P symmetric, full);
        computed for a <= b and mirrored, the diagonal blocks over i <= j only;
        levels in parallel."""
        nlev = out.shape[0]
        for s in numba.prange(nlev):  # levels are independent: each writes its own block
            for a in range(k0):
                ca = s * k0 + a
                for b in range(a, k0):
                    cb = s * k0 + b
                    acc = 0.0
                    for p in range(indptr[ca], indptr[ca + 1]):
                        i = indices[p]
                        row = 0.0
                        if a == b:
                            for r in range(p + 1, indptr[cb + 1]):
                                row += P[i, indices[r]] * data[r]
                            acc += data[p] * (2.0 * row + P[i, i] * data[p])
                        else:
                            for r in range(indptr[cb], indptr[cb + 1]):
                                row += P[i, indices[r]] * data[r]
                            acc += data[p] * row
                    out[s, a, b] = acc
                    out[s, b, a] = acc

    return rank_update, gather_blocks


@functools.cache
def _kernels():
    return _compile()


def rank_update(B, k0: int, C: np.ndarray, N: int) -> np.ndarray:
    """Upper triangle (C order) of B blockdiag(C_s) B' as a dense N x N array."""
    import numba

    chunks = max(1, min(numba.get_num_threads(), C.shape[0]))
    out = np.zeros((chunks, N, N))
    _kernels()[0](B.indptr, B.indices, B.data, k0, np.ascontiguousarray(C), out)
    return out[0] if chunks == 1 else out.sum(axis=0)


def gather_blocks(B, k0: int, P: np.ndarray) -> np.ndarray:
    """H_s = B_s' P B_s for every level s, (ℓ0, k0, k0)."""
    out = np.empty((B.shape[1] // k0, k0, k0))
    _kernels()[1](B.indptr, B.indices, B.data, k0, np.ascontiguousarray(P), out)
    return out
