"""The Numba kernels of :mod:`mixedmodels.linalg.kernels.lmm_kernels`.

Imported only when Numba is installed and a model uses them. Module-level
functions, so that Numba's on-disk cache finds them again in the next process
(functions defined inside another function are compiled again in every
process: about 3 s).
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, parallel=True)
def rank_update(indptr, indices, data, k0, C, out):
    """Accumulate out[t, i, j] += Σ_ab C[s, a, b] B[i, (s, a)] B[j, (s, b)] for i <= j (upper).

    The levels are split into ``out.shape[0]`` chunks run in parallel, one
    accumulator each (summed by the caller).

    Row indices are sorted within a column, so the entries j >= i of column
    (s, b) start at a pointer that only moves forward as i grows.
    """
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
    """Finish row ``i`` of S for :func:`finish_scalar` (its entries j >= i), clearing ``acc``'s."""
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
    """Set S[i, j] = sc[i] sc[j] (Arr[i, j] - Σ_t acc[t, i, j]) for j >= i.

    Plus 1 on the first ``nq`` diagonal entries; the accumulators are cleared
    for the next update. Rows h and N - 1 - h go to the same thread, so the
    threads get equal shares of the triangle.
    """
    N = S.shape[0]
    for h in numba.prange((N + 1) // 2):
        finish_row(Arr, acc, sc, nq, S, h)
        if N - 1 - h != h:
            finish_row(Arr, acc, sc, nq, S, N - 1 - h)

@numba.njit(cache=True, nogil=True, parallel=True)
def gather_blocks(indptr, indices, data, k0, Pu, sc, sub, out):
    """Set out[s, a, b] = Σ_ij B[i, (s, a)] P[i, j] B[j, (s, b)] for every level s.

    P[i, j] = sc[i] sc[j] S⁻¹[i, j] on the leading ``sub`` rows (zero beyond),
    S⁻¹ given by its upper triangle ``Pu`` (C order): no full P is built.
    """
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


_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@numba.njit(cache=True, nogil=True, inline="always")
def _popcount(x):
    """Return the number of set bits of a uint64 (the SWAR count: no intrinsic needed)."""
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return np.int64((x * _H01) >> np.uint64(56))


@numba.njit(cache=True, nogil=True)
def scalar_pairs(indptr, indices, data, N, with_values):
    """Return the update operator of a scalar first term from B's sorted CSC pattern.

    For every level s and every pair f <= e of its entries (rows r_f <= r_e,
    level by level, e-major), the value B_f B_e at the rank of the flat
    position r_f N + r_e among all positions touched. Returns (ptr, rank,
    value, touched): the operator in CSC form (one column per level) and the
    touched positions in increasing order; ``value`` is empty unless
    ``with_values``.

    The touched positions are bits of an N² bitmap (N²/8 bytes: it stays in
    cache where an array of N² counters did not), a position's rank the set
    bits before it: a running count per 64-bit word plus the word's own.
    """
    nlev = len(indptr) - 1
    ptr = np.zeros(nlev + 1, dtype=np.int64)
    for s in range(nlev):
        m = indptr[s + 1] - indptr[s]
        ptr[s + 1] = ptr[s] + m * (m + 1) // 2
    one = np.uint64(1)
    words = (N * N + 63) // 64
    bits = np.zeros(words, dtype=np.uint64)
    for s in range(nlev):
        for e in range(indptr[s], indptr[s + 1]):
            base = indices[e]
            for f in range(indptr[s], e + 1):
                flat = indices[f] * N + base
                bits[flat >> 6] |= one << np.uint64(flat & 63)
    before = np.empty(words + 1, dtype=np.int64)  # set bits in the words before
    before[0] = 0
    for w in range(words):
        before[w + 1] = before[w] + _popcount(bits[w])
    touched = np.empty(before[words], dtype=np.int64)
    k = 0
    for w in range(words):
        b = bits[w]
        while b:
            low = b & (~b + one)  # the lowest set bit
            touched[k] = w * 64 + _popcount(low - one)
            k += 1
            b ^= low
    rank = np.empty(ptr[nlev], dtype=np.int32)
    value = np.empty(ptr[nlev] if with_values else 0, dtype=np.float64)
    k = 0
    for s in range(nlev):
        for e in range(indptr[s], indptr[s + 1]):
            base = indices[e]
            for f in range(indptr[s], e + 1):
                flat = indices[f] * N + base
                w = flat >> 6
                rank[k] = before[w] + _popcount(bits[w] & ((one << np.uint64(flat & 63)) - one))
                if with_values:
                    value[k] = data[f] * data[e]
                k += 1
    return ptr, rank, value, touched


@numba.njit(cache=True, nogil=True)
def pattern_apply(ptr, rank, c, out):
    """Compute out = T c for T given by its CSC pattern with every value 1.

    The pattern is the column pointers ``ptr`` and row ``rank``s; the sums are
    in the order of scipy's csc_matvec.
    """
    out[:] = 0.0
    for s in range(len(ptr) - 1):
        cs = c[s]
        for k in range(ptr[s], ptr[s + 1]):
            out[rank[k]] += cs


@numba.njit(cache=True, nogil=True)
def pattern_adjoint(ptr, rank, w, out):
    """Compute out = T'w for T as in ``pattern_apply``: the order of scipy's csr_matvec on T'."""
    for s in range(len(ptr) - 1):
        acc = 0.0
        for k in range(ptr[s], ptr[s + 1]):
            acc += w[rank[k]]
        out[s] = acc


@numba.njit(cache=True, nogil=True)
def scatter_upper(S, nrows, rowptr, positions, arr, update, sc):
    """Set S[i, j] = (arr[p] - update[p]) sc[i] sc[j] at the update operator's positions p.

    The positions are flat i N + j of the C-ordered S, sorted, ``rowptr`` the
    first position of each row; zero elsewhere in the upper triangle of the
    leading ``nrows`` x ``nrows`` block: one pass over it, no temporaries.
    """
    N = S.shape[1]
    flat = S.reshape(-1)
    for i in range(nrows):
        base = i * N
        for j in range(base + i, base + nrows):
            flat[j] = 0.0
        si = sc[i]
        for p in range(rowptr[i], rowptr[i + 1]):
            pos = positions[p]
            flat[pos] = (arr[p] - update[p]) * (si * sc[pos - base])


@numba.njit(cache=True, nogil=True)
def gather_lower(inv, nrows, rowptr, positions, N, sc, out):
    """Set out[p] = w sc[i] sc[j] inv[j, i] at the update operator's positions p = (i, j).

    i <= j (see ``scatter_upper``); the values come from the lower triangle of
    ``inv``
    (Fortran order: inv[j, i] at flat i n + j); w = 1 on the diagonal, 2 off it
    (an off-diagonal position stands for two entries of the symmetric array).
    """
    n = inv.shape[0]
    flat = inv.T.reshape(-1)  # inv.T is C-ordered: flat[i n + j] = inv[j, i]
    for i in range(nrows):
        base = i * N
        si = sc[i]
        for p in range(rowptr[i], rowptr[i + 1]):
            j = positions[p] - base
            v = flat[i * n + j] * (si * sc[j])
            out[p] = v if j == i else 2.0 * v


@numba.njit(cache=True, nogil=True)
def symv_lower(Z, v, out):
    """Compute out = Z v in double precision for a symmetric Z given by its lower triangle.

    Z is a Fortran-ordered array of any float type (the single-precision
    inverse: no double copy of it).
    """
    n = v.shape[0]
    out[:] = 0.0
    for j in range(n):
        col = Z[:, j]
        vj = v[j]
        acc = np.float64(col[j]) * vj
        for i in range(j + 1, n):
            z = np.float64(col[i])
            out[i] += z * vj
            acc += z * v[i]
        out[j] += acc
