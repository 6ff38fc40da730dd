"""The blocked lower Cholesky factor of the augmented mixed-model system.

For θ the relative covariance factor Λθ is block diagonal, one λ per term level.
With Z the random-effects model matrix and [X y] the fixed-effects matrix and
response (all multiplied by the square roots of the prior weights), the profiled
deviance needs the lower Cholesky factor L of::

    [ Λ'Z'ZΛ + I   Λ'Z'X   Λ'Z'y ]
    [ X'ZΛ         X'X     X'y   ]
    [ y'ZΛ         y'X     y'y   ]

The random-effects terms are stored in decreasing size. The first term's block
of Z'Z is block diagonal (one k x k block per level; diagonal when k = 1), so
its Cholesky factor is too, and eliminating it costs nothing of size n. What
remains is a Schur complement over the other terms and [X y]; it is dense. The
rows of L below the first term keep the pattern of B = [Z_1 .. Z_K X y]'Z_0:
sparse for the random-effects terms in general, dense for [X y]. When two
crossed factors meet in most level pairs (the levels of each drawn at random
over many rows), B's random-effects rows are dense too; they are then stored
as one dense array and every product with them is a BLAS level-3 call (the idea
of MixedModels.jl: one block type per structure, each update chosen by the pair
it combines):

================  ===========================  ================================
block             type                         stored as
================  ===========================  ================================
L[0, 0]           diagonal / block diagonal    (ℓ, k, k) array
L[re, 0]          sparse                       B's CSC pattern (int32 indices)
L[re, 0]          dense (B dense enough)       B' as a (q_0, N) array
L[xy, 0]          dense                        (p + 1, q_0) array
L[rest, rest]     dense                        lower-triangular array
================  ===========================  ================================

L[re, 0] = Λ_r'B_re blockdiag(λ0 L00_s⁻ᵀ) is never formed: B is kept once and
scaled inside each product (:class:`RowsBelow`). All cross-products are
computed once; an evaluation touches only arrays of the size of the random
effects, never of the number of observations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas, lapack, solve_triangular

from mixedmodels.linalg.kernels import lmm_kernels as _kernels
from mixedmodels.support.threads import blas_threads, thin_product_threads

__all__ = ["TermData", "CrossProducts", "AugmentedSystem", "Factor"]


# Below this many rows the inverse is cheap enough to take in double precision.
SINGLE_PRECISION_INVERSE_ROWS = 500
# The largest relative residual ‖LL'Zv - v‖/‖v‖ of the single-precision inverse Z
# along a random v for which it is kept (otherwise it is recomputed in double).
SINGLE_PRECISION_RESIDUAL = 1e-5


def inverse_from_factor(
    L: np.ndarray,
    single_min_rows: int | None = None,
    sub: int | None = None,
    keep_single: bool = False,
) -> np.ndarray:
    """(L₁L₁')⁻¹ for L₁ = L[:sub, :sub] (all of L by default), L lower
    triangular (its upper triangle is not read); the inverse's lower triangle,
    float64, C or Fortran order (its upper triangle holds L's).

    Only the gradient of the objective uses this inverse (the objective itself
    comes from L), so for a large L₁ it is computed in single precision
    (LAPACK spotri, about twice as fast as dpotri) from the double-precision
    factor and kept when its residual along a random direction is below
    ``SINGLE_PRECISION_RESIDUAL`` (one product and two triangular products in
    double precision): the gradient then has a relative error near 1e-6, far
    below the optimizer's gradient tolerance. ``single_min_rows`` overrides
    ``SINGLE_PRECISION_INVERSE_ROWS``. With ``keep_single`` (only where the
    compiled loops are in use: the residual's product is one) an accepted single-precision inverse is returned as
    it is, float32, for callers that read it through compiled loops: no double
    copy of its size.
    """
    n = L.shape[0] if sub is None else sub
    threshold = SINGLE_PRECISION_INVERSE_ROWS if single_min_rows is None else single_min_rows
    if n and n >= threshold:
        with np.errstate(over="ignore", invalid="ignore"):  # L's unused upper triangle
            single = np.array(L[:n, :n], dtype=np.float32, order="F")  # one pass
        inv, info = lapack.spotri(single, lower=1, overwrite_c=1)
        if info == 0:
            if not keep_single:
                inv = inv.astype(np.float64)
            if _inverse_residual(L, inv) <= SINGLE_PRECISION_RESIDUAL:
                return inv
    inv, info = lapack.dpotri(np.array(L[:n, :n], order="F"), lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError("dpotri failed")
    return inv


def _inverse_residual(L: np.ndarray, inv_lower: np.ndarray) -> float:
    """‖L₁L₁'Zv - v‖/‖v‖ for Z = (L₁L₁')⁻¹ given by its lower triangle, L₁ the
    leading block of L of Z's size, and a fixed pseudo-random v: how far Z is
    from the inverse in practice. The triangular products run on all of L with
    v padded by zeros (their leading entries are L₁'s; a contiguous L is not
    copied)."""
    n, N = inv_lower.shape[0], L.shape[0]
    v = np.cos(np.arange(1, n + 1, dtype=float) * 1.618)
    w = np.zeros(N)
    if inv_lower.dtype == np.float64:
        w[:n] = blas.dsymv(1.0, inv_lower, v, lower=1)
    else:  # the kept single-precision inverse, multiplied in double
        w[:n] = _kernels.symv_lower(inv_lower, v)
    w = blas.dtrmv(L, w, lower=1, trans=1)  # [L₁'w₁; 0]
    w = blas.dtrmv(L, w, lower=1)
    res = float(np.linalg.norm(w[:n] - v) / np.linalg.norm(v))
    return res if np.isfinite(res) else np.inf


@dataclass
class TermData:
    """What the engine needs of one random-effects term (weights already applied)."""

    codes: np.ndarray  # (n,) level index per observation
    z: np.ndarray  # (n, k) weighted model matrix
    nlevels: int

    @property
    def k(self) -> int:
        return self.z.shape[1]

    @property
    def q(self) -> int:
        return self.k * self.nlevels

    def sparse(self) -> sp.csr_array:
        """Z for this term as an (n, ℓk) sparse matrix, level-major columns."""
        n, k = self.z.shape
        cols = (self.codes[:, None] * k + np.arange(k)[None, :]).ravel()
        rows = np.repeat(np.arange(n), k)
        return sp.csr_array((self.z.ravel(), (rows, cols)), shape=(n, self.q))


def block_crossprod(term: TermData) -> np.ndarray:
    """Z_j'Z_j as an (ℓ, k, k) stack of per-level blocks."""
    k = term.k
    out = np.empty((term.nlevels, k, k))
    for a in range(k):
        for b in range(a, k):
            s = np.bincount(term.codes, term.z[:, a] * term.z[:, b], minlength=term.nlevels)
            out[:, a, b] = s
            out[:, b, a] = s
    return out


def term_times_cells(
    term: TermData, cell: np.ndarray, E: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Z_j'[X y] for X = E[cell] (see ``FixedEffects.cells``): the term's sums
    over (level, cell) pairs times E, and Z_j'y; one pass over the rows per
    column of the term instead of products with X's n x p entries."""
    ncells, p = E.shape
    k = term.k
    out = np.empty((term.nlevels, k, p + 1))
    index = term.codes.astype(np.intp, copy=False) * ncells + cell
    for a in range(k):
        z = term.z[:, a]
        sums = np.bincount(index, weights=z, minlength=term.nlevels * ncells)
        out[:, a, :p] = sums.reshape(term.nlevels, ncells) @ E
        out[:, a, p] = np.bincount(term.codes, weights=z * y, minlength=term.nlevels)
    return out.reshape(term.q, p + 1)


def term_times(term: TermData, X: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Z_j'[X y], (q_j, p + 1), or Z_j'X without ``y``: for each column a of the
    term, the (levels x n) matrix with z_a in row ``code`` of column i, built
    directly in CSC form (its column pointers are 0..n: no sorting, ~8 bytes a
    row beyond the arrays it wraps) and multiplied into X (C order: 5x faster
    than Fortran) and y in one pass over the rows each -- the sums of per-column
    ``bincount``s, in the same order, 5-8x faster with many columns."""
    n, p = X.shape
    k = term.k
    m = p + (y is not None)
    out = np.empty((term.nlevels, k, m))
    indptr = np.arange(n + 1, dtype=np.int64)
    codes = term.codes.astype(np.int64, copy=False)
    for a in range(k):
        Zt = sp.csc_array((term.z[:, a], codes, indptr), shape=(term.nlevels, n))
        out[:, a, :p] = Zt @ X
        if y is not None:
            out[:, a, p] = Zt @ y
    return out.reshape(term.q, m)


def term_crossprod(ti: TermData, tj: TermData) -> sp.csc_array:
    """Z_i'Z_j, (q_i, q_j) CSC (the column layout the engine keeps for B); for
    two scalar terms straight from the level codes (duplicates summed), which is
    several times faster than a sparse matrix product."""
    if ti.k == 1 and tj.k == 1:
        values = ti.z[:, 0] * tj.z[:, 0]
        idx = np.int32 if max(ti.q, tj.q, len(values)) < 2**31 else np.int64
        rows, cols = ti.codes.astype(idx, copy=False), tj.codes.astype(idx, copy=False)
        coo = sp.coo_array((values, (rows, cols)), shape=(ti.q, tj.q))
        return _compact(sp.csc_array(coo))  # the conversion sums duplicates, sorts rows
    return _compact(sp.csc_array(ti.sparse().T @ tj.sparse()))


def _compact(a: sp.sparray) -> sp.sparray:
    """``a`` with int32 index arrays where its sizes allow: scipy keeps int64
    indices once an input had them, and sums of partial cross-products would
    carry 8 bytes per entry instead of 4."""
    if a.indices.dtype != np.int32 and max(a.nnz, *a.shape) < 2**31:
        a.indices = a.indices.astype(np.int32)
        a.indptr = a.indptr.astype(np.int32)
    return a


def _as_csc(a: sp.sparray) -> sp.csc_array:
    """``a`` as a canonical CSC array (no copy when it already is one)."""
    a = a if a.format == "csc" else sp.csc_array(a)
    a.sum_duplicates()  # sorts row indices too; a no-op on canonical input
    return a


def _stack_csc(blocks: list[sp.sparray], ncols: int) -> sp.csc_array:
    """The blocks stacked vertically as one CSC array, built from their column
    pointers (scipy's vstack of CSC goes through COO: two more copies)."""
    blocks = [_as_csc(b) for b in blocks]
    if len(blocks) == 1:
        return _compact(blocks[0])
    nrows = sum(b.shape[0] for b in blocks)
    nnz = sum(b.nnz for b in blocks)
    idx = np.int32 if max(nrows, ncols, nnz) < 2**31 else np.int64
    counts = sum(np.diff(b.indptr).astype(np.int64) for b in blocks)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(idx)
    indices, data = np.empty(nnz, idx), np.empty(nnz)
    filled = indptr[:-1].copy()  # next free slot per column
    offset = 0
    for b in blocks:
        per_col = np.diff(b.indptr)
        # entry e of column j goes to filled[j] + (e - b.indptr[j])
        dest = np.repeat(filled - b.indptr[:-1], per_col) + np.arange(b.nnz)
        indices[dest] = b.indices + offset
        data[dest] = b.data
        filled += per_col
        offset += b.shape[0]
    return sp.csc_array((data, indices, indptr), shape=(nrows, ncols))


def _fill_rows(Bt: np.ndarray, a: sp.csc_array, col0: int, entries: int = 1 << 22) -> None:
    """Bt[:, col0:col0 + q_i] = a' for a (q_i, q0) CSC block, a few million
    entries at a time (no second copy of the block in any format)."""
    N = Bt.shape[1]
    flat = Bt.reshape(-1)
    bounds = np.searchsorted(a.indptr, np.arange(0, a.nnz + entries, entries), side="left")
    bounds = np.unique(np.clip(bounds, 0, a.shape[1]))
    for j0, j1 in zip(bounds[:-1], bounds[1:]):
        e0, e1 = a.indptr[j0], a.indptr[j1]
        cols = np.repeat(np.arange(j0, j1, dtype=np.int64), np.diff(a.indptr[j0 : j1 + 1]))
        flat[cols * N + col0 + a.indices[e0:e1]] = a.data[e0:e1]


def _right_blocks(
    X: np.ndarray, bounds: list[tuple[int, int]], lams: list[np.ndarray]
) -> np.ndarray:
    """X blockdiag(I ⊗ λ_j) in place over the column ranges ``bounds``."""
    n = X.shape[0]
    for (start, stop), lam in zip(bounds, lams):
        k = lam.shape[0]
        if k == 1:
            X[:, start:stop] *= lam[0, 0]
        else:
            X[:, start:stop] = (X[:, start:stop].reshape(n, -1, k) @ lam).reshape(n, -1)
    return X


def _transform_levels(X: np.ndarray, F: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Rows (s, b) of ``out`` = Σ_a F_s[a, b] X[(s, a), :]: the columns of a
    chunk of levels of B (here as rows, X (c k0, n)) times blockdiag(F_s)."""
    c, k0 = F.shape[0], F.shape[1]
    if k0 == 1:
        return np.multiply(X, F[:, 0], out=out)
    n = X.shape[1]
    np.einsum("lan,lab->lbn", X.reshape(c, k0, n), F, out=out.reshape(c, k0, n))
    return out


class DenseBelow:
    """B = [Z_1 .. Z_K X y]'Z_0 stored dense, transposed: ``Bt`` is (q0, N),
    one row per column of the first term, level-major.

    Chosen when B's random-effects rows are dense enough (two crossed factors
    whose levels meet in most pairs): the rank update B blockdiag(C_s) B' and
    the gradient's weighted gather are then BLAS level-3 products over chunks of
    levels (syrk / gemm) instead of loops over an index pattern, and the array
    takes no more memory than the pattern would (8 bytes a cell against 12 an
    entry). Products are formed chunk by chunk: no second array of B's size.
    """

    def __init__(
        self, blocks: list[sp.sparray], Axy0: np.ndarray, k0: int, chunk_bytes: int = 1 << 25
    ):
        q0 = Axy0.shape[1]
        Q1 = sum(b.shape[0] for b in blocks)
        self.N, self.Q1, self.k0 = Q1 + Axy0.shape[0], Q1, k0
        self.Bt = np.zeros((q0, self.N))
        start = 0
        for b in blocks:
            _fill_rows(self.Bt, _as_csc(b), start)
            start += b.shape[0]
        self.Bt[:, Q1:] = Axy0.T
        self.nlev = q0 // k0
        # levels per chunk: a chunk of W is about chunk_bytes
        self.step = max(1, chunk_bytes // (8 * self.N * k0))
        self._buf = np.empty(min(self.step, self.nlev) * k0 * self.N)

    def chunks(self, F: np.ndarray, ncols: int):
        """Chunks (c k0, ncols) of (B[:ncols] blockdiag(F_s))' over the levels,
        F (ℓ0, k0, k0): row (s, b) is Σ_a F_s[a, b] B[:ncols, (s, a)]. Each chunk
        is a view of one reused buffer, valid until the next."""
        k0 = self.k0
        for s0 in range(0, self.nlev, self.step):
            s1 = min(s0 + self.step, self.nlev)
            X = self.Bt[s0 * k0 : s1 * k0, :ncols]
            W = self._buf[: X.size].reshape(X.shape)
            yield s0, s1, _transform_levels(X, F[s0:s1], W)

    def subtract_update(self, S: np.ndarray, F: np.ndarray) -> None:
        """S -= B blockdiag(F_s F_s') B' on the upper triangle (C order) of the
        N x N array S: one syrk per chunk, straight into S (S' is the
        Fortran-ordered lower triangle BLAS writes)."""
        St = S.T
        for _, _, W in self.chunks(F, self.N):
            out = blas.dsyrk(-1.0, W.T, beta=1.0, c=St, trans=0, lower=1, overwrite_c=1)
            if not np.shares_memory(out, St):  # f2py copied (it should not: St is Fortran)
                St[...] = out

    def weighted_trace(self, P: np.ndarray, F: np.ndarray, sub: int) -> np.ndarray:
        """Σ_s V_s'PV_s, (k0, k0), for V_s = B_s F_s restricted to the leading
        ``sub`` rows and P (sub, sub) symmetric.

        For k0 = 1 that is ⟨P, G⟩ with G = Σ_s V_s V_s' accumulated by syrk
        (half the flops of forming PV); otherwise Σ over chunks of V'(PV)."""
        k0 = self.k0
        if k0 == 1:
            G = np.zeros((sub, sub), order="F")
            for _, _, W in self.chunks(F, sub):
                G = blas.dsyrk(1.0, W.T, beta=1.0, c=G, trans=0, lower=1, overwrite_c=1)
            low = np.tril(G)  # the lower triangle is G's; ⟨P, G⟩ counts it twice
            total = 2.0 * np.sum(P * low) - np.dot(np.diag(P), np.diag(G))
            return np.array([[total]])
        out = np.zeros((k0, k0))
        for s0, s1, W in self.chunks(F, sub):
            PW = (W @ P).reshape(s1 - s0, k0, sub)
            out += np.einsum("lan,lbn->ab", W.reshape(s1 - s0, k0, sub), PW)
        return 0.5 * (out + out.T)

    def t_dot(self, w: np.ndarray) -> np.ndarray:
        """B'w for w of length N."""
        return self.Bt @ w


class SparseBelow:
    """B's rows below the first term with the random-effects rows sparse (the
    engine's CSC array, not copied): the two chunked products a factor's
    :class:`RowsBelow` needs."""

    def __init__(
        self, B_re: sp.csc_array, Axy0: np.ndarray, k0: int, chunk_bytes: int = 1 << 25
    ):
        self.B_re, self.Axy0, self.k0 = B_re, Axy0, k0
        self.Q1 = B_re.shape[0]
        self.N = self.Q1 + Axy0.shape[0]
        self.nlev = B_re.shape[1] // k0
        self.step = max(1, chunk_bytes // (8 * max(self.Q1, 1) * k0))

    def chunks(self, F: np.ndarray, ncols: int):
        """As :meth:`DenseBelow.chunks`, for ``ncols`` <= Q1 (random-effects rows)."""
        k0 = self.k0
        for s0 in range(0, self.nlev, self.step):
            s1 = min(s0 + self.step, self.nlev)
            X = self.B_re[:, s0 * k0 : s1 * k0].toarray()[:ncols].T
            yield s0, s1, _transform_levels(X, F[s0:s1], np.empty(X.shape))

    def t_dot(self, w: np.ndarray) -> np.ndarray:
        """B'w for w of length N."""
        return self.B_re.T @ w[: self.Q1] + self.Axy0.T @ w[self.Q1 :]


@dataclass
class RowsBelow:
    """L[re, 0] = Λ_r' B_re blockdiag(F_s), F_s = λ0 L00_s⁻ᵀ, never formed: B is
    the system's (shared) storage, dense or sparse, and the two products a
    factor needs are taken chunk by chunk (a copy would be as large as B)."""

    below: "DenseBelow | SparseBelow"
    F: np.ndarray  # (ℓ0, k0, k0)
    bounds: list[tuple[int, int]]  # index range of each term after the first
    lams: list[np.ndarray]  # their λ

    def t_dot(self, u: np.ndarray) -> np.ndarray:
        """L[re, 0]'u = blockdiag(F_s)' B_re' Λ_r u."""
        v = np.zeros(self.below.N)
        for (start, stop), lam in zip(self.bounds, self.lams):
            k = lam.shape[0]
            v[start:stop] = (u[start:stop].reshape(-1, k) @ lam.T).ravel()
        y = self.below.t_dot(v).reshape(-1, self.F.shape[1])
        return np.einsum("lab,la->lb", self.F, y).ravel()

    def condvar_extra(self, L11: np.ndarray, L00inv: np.ndarray) -> np.ndarray:
        """Σ_r W[r, (s, j)] W[r, (s, k)] per level s for W = L11⁻¹ L[re, 0]
        blockdiag(L00_s⁻¹), (ℓ0, k0, k0): the part of the first term's
        conditional variances through the other terms."""
        below, Q1 = self.below, self.below.Q1
        k0 = self.F.shape[1]
        T = self.F @ L00inv  # (ℓ0, k0, k0): column transform of level s
        out = np.empty_like(T)
        for s0, s1, W in below.chunks(T, Q1):  # (c k0, Q1): (B_re blockdiag(T))'
            G = _right_blocks(W, self.bounds, self.lams)  # (Λ_r' B_re T)'
            V = solve_triangular(L11, G.T, lower=True, check_finite=False)
            V = V.reshape(Q1, s1 - s0, k0)
            out[s0:s1] = np.einsum("rlj,rlk->ljk", V, V)
        return out


@dataclass
class Factor:
    """L for one θ, with what the objective and the solutions need."""

    lam: list[np.ndarray]
    L00: np.ndarray  # (ℓ0, k0, k0) lower factors of the first term
    L00inv: np.ndarray  # their inverses
    Lre0: RowsBelow | None  # rows of the other terms (Q1 x q0), applied lazily
    Lxy0: np.ndarray  # (p + 1, q0)
    Lrr: np.ndarray  # dense factor over the other terms and [X y]
    q0: int
    Q1: int
    p: int
    rest_sizes: tuple[tuple[int, int], ...]  # (q, k) of the terms after the first
    generation: int = 0  # the system's factorisation count when Lrr is its workspace (else 0)

    def logdet_re(self) -> float:
        """log det(Λ'Z'ZΛ + I)."""
        d0 = np.diagonal(self.L00, axis1=1, axis2=2)
        d1 = np.diag(self.Lrr)[: self.Q1]
        return 2.0 * (np.log(d0).sum() + np.log(d1).sum())

    def logdet_x(self) -> float:
        """log det(R_X'R_X), the REML correction."""
        d = np.diag(self.Lrr)[self.Q1 : self.Q1 + self.p]
        return 2.0 * np.log(d).sum()

    def pwrss(self) -> float:
        """Penalised weighted residual sum of squares r²."""
        return float(self.Lrr[-1, -1] ** 2)

    def LX(self) -> np.ndarray:
        """The lower factor L_X of X'V⁻¹X / σ² (so vcov β = σ² (L_X L_X')⁻¹)."""
        s = self.Q1
        return self.Lrr[s : s + self.p, s : s + self.p]

    def solve(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """β and the spherical random effects u (one (ℓ, k) array per term)."""
        x = _last_row_solution(self.Lrr)
        u_rest, beta = x[: self.Q1], x[self.Q1 :]
        c0 = self.Lxy0[-1].copy()
        c0 -= self.Lxy0[:-1].T @ beta
        if self.Lre0 is not None:
            c0 -= self.Lre0.t_dot(u_rest)
        k0 = self.L00.shape[1]
        u0 = np.einsum("lkj,lk->lj", self.L00inv, c0.reshape(-1, k0))
        return beta, self._split_rest(u0, u_rest)

    def _split_rest(self, u0: np.ndarray, u_rest: np.ndarray) -> list[np.ndarray]:
        us = [u0]
        start = 0
        for size, k in self.rest_sizes:
            us.append(u_rest[start : start + size].reshape(-1, k))
            start += size
        return us

    def condvar_u(self) -> list[np.ndarray]:
        """Diagonal blocks of (L_Z L_Z')⁻¹ per term: (ℓ, k, k) stacks.

        L_Z is the factor of Λ'Z'ZΛ + I alone, as lme4's conditional variances use.
        """
        Q1 = self.Q1
        L11 = self.Lrr[:Q1, :Q1]
        out = []
        # first term: columns of L_Z⁻¹ are [L00⁻¹; -L11⁻¹ Lre0 L00⁻¹]
        base = np.einsum("lij,lik->ljk", self.L00inv, self.L00inv)
        if Q1 and self.Lre0 is not None:
            base = base + self.Lre0.condvar_extra(L11, self.L00inv)
        out.append(base)
        if Q1:
            L11inv = solve_triangular(L11, np.eye(Q1), lower=True, check_finite=False)
            start = 0
            for size, k in self.rest_sizes:
                W = L11inv[:, start : start + size].reshape(Q1, -1, k)
                out.append(np.einsum("rlj,rlk->ljk", W, W))
                start += size
        return out


def _last_row_solution(L: np.ndarray) -> np.ndarray:
    """x with L1'x = c, for L = [[L1, 0], [c', d]] lower triangular: from
    L'z = e_N on the whole of L (x = -d z[:-1]), so that no copy of L1 is made."""
    e = np.zeros(L.shape[0])
    e[-1] = 1.0
    z = blas.dtrsv(L, e, lower=1, trans=1)
    return -L[-1, -1] * z[:-1]


def _zero_upper_rows(S: np.ndarray, rows: int, block: int = 64) -> None:
    """Zero S[i, j] for i < ``rows`` and i <= j < ``rows`` (C order), in
    bands of rows: the upper triangle of the leading block, about half of
    the memory a full clear would write (LAPACK reads no other entry)."""
    for i0 in range(0, rows, block):
        S[i0 : min(i0 + block, rows), i0:rows] = 0.0


def _zero_upper(L: np.ndarray, block: int = 128) -> None:
    """Zero the strict upper triangle of a square array in place, a band of
    columns at a time (no index arrays or masks of its size)."""
    n = L.shape[0]
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        L[:j0, j0:j1] = 0.0
        L[j0:j1, j0:j1] = np.tril(L[j0:j1, j0:j1])


def _update_weights(lam0: np.ndarray, L00inv: np.ndarray) -> np.ndarray:
    """C_s = λ0 M_s⁻¹ λ0' per level of the first term: the rank update is B blockdiag(C) B'."""
    return lam0 @ np.transpose(L00inv, (0, 2, 1)) @ L00inv @ lam0.T


def _blockdiag_csr(blocks: np.ndarray) -> sp.csr_array:
    nl, k, _ = blocks.shape
    bsr = sp.bsr_array((blocks, np.arange(nl), np.arange(nl + 1)), shape=(nl * k, nl * k))
    return bsr.tocsr()


def _pair_index(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (e, f), f <= e, of entries within the same level, for levels
    of m[s] consecutive entries, level by level and e-major."""
    total = int(m.sum())
    # int32 while it fits: these arrays are as long as the pairs, and halving
    # them halves the time of every pass below
    itype = np.int32 if max(total, int((m * (m + 1) // 2).sum())) < 2**31 else np.int64
    level_start = np.zeros(len(m), dtype=itype)
    np.cumsum(m[:-1], out=level_start[1:])
    reps = np.arange(total, dtype=itype) - np.repeat(level_start, m) + 1
    e = np.repeat(np.arange(total, dtype=itype), reps)
    pair_start = np.zeros(total, dtype=itype)
    np.cumsum(reps[:-1], out=pair_start[1:])
    f = np.repeat(np.repeat(level_start, m), reps) + (
        np.arange(len(e), dtype=itype) - np.repeat(pair_start, reps)
    )
    return e, f


def _positions(flat: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """The touched flat positions in order and the rank of each pair's position
    among them (a mark and a running count: no sort)."""
    mark = np.zeros(N * N, dtype=bool)
    mark[flat] = True
    return np.flatnonzero(mark), (np.cumsum(mark) - 1)[flat]


def _scalar_pairs(B: sp.csc_array, m: np.ndarray, N: int):
    """The operator for a scalar first term: one column per level, whose entries
    are already the level's rows in order (sorted CSC)."""
    B.sort_indices()
    rows, vals = B.indices.astype(np.int64), B.data
    e, f = _pair_index(m)
    touched, position = _positions(rows[f] * N + rows[e], N)
    indptr = np.concatenate([[0], np.cumsum(m * (m + 1) // 2)])
    T = sp.csc_array((vals[e] * vals[f], position, indptr), shape=(len(touched), len(m)))
    return T, touched


def _block_pairs(B: sp.csc_array, m: np.ndarray, k0: int, N: int):
    """The operator for a first term with k0 > 1 columns per level."""
    nlev = len(m)
    coo = B.tocoo()
    level = coo.col // k0
    # entries grouped by level and sorted by row inside it: then every pair
    # (e, f) with f at or before e in its level has row(f) <= row(e)
    order = np.lexsort((coo.col, coo.row, level))
    rows, cols, vals = coo.row[order].astype(np.int64), coo.col[order] % k0, coo.data[order]
    e, f = _pair_index(m)
    # same row, two columns of the level: the pair stands for (a, b) and (b, a)
    weight = np.where((rows[e] == rows[f]) & (e != f), 2.0, 1.0)
    reps = np.bincount(e, minlength=len(rows)) if len(e) else np.zeros(len(rows), int)
    cidx = np.repeat(np.repeat(np.arange(nlev), m), reps) * k0 * k0 + cols[e] * k0 + cols[f]
    touched, position = _positions(rows[f] * N + rows[e], N)
    order = np.argsort(cidx, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cidx, minlength=nlev * k0 * k0))])
    values = vals[e] * vals[f] * weight
    T = sp.csc_array(
        (values[order], position[order], indptr), shape=(len(touched), nlev * k0 * k0)
    )
    return T, touched


class RankUpdate:
    """Sparse linear map from the first term's C_s blocks to the Schur-complement
    update: ``update[positions] = T @ vec(C)`` on the flattened N x N array.

    ``positions`` are the touched flat indices i N + j (i <= j), sorted. T is a
    CSC matrix, or only its pattern ``(ptr, rank)`` when every value is 1 (a
    scalar first term whose levels meet each other level once, unweighted:
    InstEval's students and lecturers); the compiled loops then apply it with
    no array of values as long as the pairs. What only some paths read (the
    rows, columns and blocks of the positions) is derived on first use.
    """

    def __init__(
        self,
        T: sp.csc_array | None,
        positions: np.ndarray,
        N: int,
        block_edges: np.ndarray,
        pattern: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.T = T
        self.pattern = pattern
        self.positions = positions
        self.N = N
        self._edges = block_edges  # first row of each block after the first

    def apply(self, c: np.ndarray) -> np.ndarray:
        """T c: the update at the positions."""
        if self.T is not None:
            return self.T @ c
        return _kernels.pattern_apply(*self.pattern, c, len(self.positions))

    def adjoint(self, w: np.ndarray) -> np.ndarray:
        """T'w: per entry of C, the weighted sum over its positions."""
        if self.T is not None:
            return self.T.T @ w
        return _kernels.pattern_adjoint(*self.pattern, w)

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """Row (<= column) of each position in the N x N array."""
        return self.positions // self.N

    @functools.cached_property
    def cols(self) -> np.ndarray:
        return self.positions % self.N

    @functools.cached_property
    def row_block(self) -> np.ndarray:
        """Block (term after the first, or [X y]) of each position's row."""
        return np.searchsorted(self._edges, self.rows, side="right")

    @functools.cached_property
    def col_block(self) -> np.ndarray:
        return np.searchsorted(self._edges, self.cols, side="right")

    @property
    def nblocks(self) -> int:
        return len(self._edges) + 1

    @functools.cached_property
    def pair_code(self) -> np.ndarray:
        """The pair of blocks as one index into the outer product of per-block scales."""
        return self.row_block * self.nblocks + self.col_block

    @functools.cached_property
    def weight(self) -> np.ndarray:
        """Off-diagonal positions stand for two entries of the symmetric update."""
        return np.where(self.rows == self.cols, 1.0, 2.0)

    def row_pointers(self, nrows: int) -> np.ndarray:
        """The first position of each of the leading ``nrows`` rows, ``nrows + 1`` long."""
        ptr = self.__dict__.get("_rowptr")
        if ptr is None or len(ptr) != nrows + 1:
            bounds = np.arange(nrows + 1, dtype=np.int64) * self.N
            ptr = self._rowptr = np.searchsorted(self.positions, bounds)
        return ptr

    def block_scales(self, scale: np.ndarray) -> np.ndarray:
        """scale[row_block] * scale[col_block] at every position (one gather)."""
        return np.outer(scale[: self.nblocks], scale[: self.nblocks]).ravel()[self.pair_code]

    def lower_entries(self, A: np.ndarray) -> np.ndarray:
        """A[cols, rows] (the lower triangle's entries at the transposed
        positions) by one gather from A's memory, C or Fortran order."""
        n = A.shape[0]
        if A.flags.f_contiguous:  # A.T is C-contiguous: A[c, r] = A.T[r, c]
            return A.T.ravel().take(self.rows * n + self.cols)
        return A[self.cols, self.rows]


@dataclass
class CrossProducts:
    """Every cross-product of [Z X y] the engine needs, and nothing of size n.

    Sums over rows, so they add: the cross-products of a data set are the sum of
    those of its row partitions (what a distributed fit accumulates).

    Attributes
    ----------
    shapes : list of (nlevels, k)
        The random-effects terms, largest first.
    A00 : ndarray (ℓ0, k0, k0)
        Z_0'Z_0 of the first term, one block per level.
    Axy0 : ndarray (p + 1, q0)
        [X y]'Z_0.
    A_re0 : list of sparse (q_i, q0)
        Z_i'Z_0 for the other terms, CSC (int32 indices where they fit): the
        system keeps them as B's storage without conversion.
    Arr : ndarray (Q1 + p + 1, Q1 + p + 1)
        [Z_1 .. Z_K X y]'[Z_1 .. Z_K X y], dense.
    """

    shapes: list[tuple[int, int]]
    A00: np.ndarray
    Axy0: np.ndarray
    A_re0: list[sp.csc_array]
    Arr: np.ndarray

    @classmethod
    def from_data(
        cls,
        terms: list[TermData],
        X: np.ndarray | None,
        y: np.ndarray,
        xtx: np.ndarray | None = None,
        cells: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> "CrossProducts":
        """The cross-products of one block of rows (weights already applied to
        the terms' z, X and y; X best in C order); ``xtx``: X'X when already
        computed. X and y stay apart: [X y] would be a copy of X's size. With
        ``cells`` (cell, E), unweighted, X = E[cell] is not needed (None): the
        products with it are sums over cells (see :func:`term_times_cells`)."""
        t0, rest = terms[0], terms[1:]
        Q1 = sum(t.q for t in rest)
        p = X.shape[1] if cells is None else cells[1].shape[1]
        Arr = np.zeros((Q1 + p + 1, Q1 + p + 1))
        if cells is not None:
            cell, E = cells
            ncells = E.shape[0]
            xty = E.T @ np.bincount(cell, weights=y, minlength=ncells)
            if xtx is None:
                xtx = (E.T * np.bincount(cell, minlength=ncells)) @ E
            Arr[Q1:-1, Q1:-1] = xtx
            built: list[np.ndarray] = []

            def times(term: TermData) -> np.ndarray:
                if term.nlevels * ncells <= 2 * len(cell):  # the sums stay small
                    return term_times_cells(term, cell, E, y)
                if not built:  # a term of many levels: products with X after all
                    built.append(E[cell])
                return term_times(term, built[0], y)
        else:
            with blas_threads(thin_product_threads(p, len(y))):
                Arr[Q1:-1, Q1:-1] = X.T @ X if xtx is None else xtx
                xty = X.T @ y

            def times(term: TermData) -> np.ndarray:
                return term_times(term, X, y)
        Arr[-1, Q1:-1] = xty
        Arr[Q1:-1, -1] = xty
        Arr[-1, -1] = y @ y
        start = 0
        for i, ti in enumerate(rest):
            stop = start + ti.q
            Arr[start:stop, Q1:] = times(ti)
            Arr[Q1:, start:stop] = Arr[start:stop, Q1:].T
            inner = start
            for tj in rest[i:]:
                # written entry by entry: these blocks are sparse (diagonal for
                # a scalar term with itself), their dense copies as large as Arr
                block = term_crossprod(ti, tj).tocoo()
                Arr[start + block.row, inner + block.col] = block.data
                Arr[inner + block.col, start + block.row] = block.data
                inner += tj.q
            start = stop
        return cls(
            shapes=[(t.nlevels, t.k) for t in terms],
            A00=block_crossprod(t0),
            Axy0=np.ascontiguousarray(times(t0).T),
            A_re0=[term_crossprod(t, t0) for t in rest],
            Arr=Arr,
        )

    def __add__(self, other: "CrossProducts") -> "CrossProducts":
        if self.shapes != other.shapes:
            raise ValueError("cross-products of different models cannot be added")
        return CrossProducts(
            self.shapes,
            self.A00 + other.A00,
            self.Axy0 + other.Axy0,
            [a + b for a, b in zip(self.A_re0, other.A_re0)],
            self.Arr + other.Arr,
        )


class AugmentedSystem:
    """The cross-products of [Z X y], computed once, and the factorisation for θ.

    Parameters
    ----------
    cross : CrossProducts
        The accumulated cross-products (see :meth:`from_terms` for in-memory data).
        Its blocks are referenced, not copied: Z_i'Z_0 becomes B's storage.
    max_update_nnz : int
        Size limit of the precomputed rank-update operator (see ``_update_operator``);
        above it the update is a sparse product at every evaluation.
    dense_b : bool, optional
        Store B's random-effects rows dense (:class:`DenseBelow`). Default: when
        they hold at least ``dense_density`` nonzeros per cell and the array fits
        ``max_dense_bytes``.
    dense_density, max_dense_bytes : float, int
        The automatic choice of ``dense_b``. The compiled loops make one
        scattered multiply-add per pair of entries of a level (density² of the
        cells), BLAS a much cheaper one per cell: on 1,000 x 20,000 uniformly
        crossed levels the loops win at density 0.1 (0.5 s against 0.8 s for an
        update and a gather), BLAS at 0.2 (0.7 s against 1.0 s) and by far at 0.4.
    """

    def __init__(
        self,
        cross: CrossProducts,
        max_update_nnz: int = 30_000_000,
        dense_b: bool | None = None,
        dense_density: float = 0.15,
        max_dense_bytes: int = 2 << 30,
    ):
        (nl0, k0), rest = cross.shapes[0], cross.shapes[1:]
        self.p = cross.Axy0.shape[0] - 1
        self.k0 = k0
        self.A00 = cross.A00
        self.Axy0 = cross.Axy0
        self.rest_sizes = tuple((nl * k, k) for nl, k in rest)
        self.Q1 = sum(q for q, _ in self.rest_sizes)
        self.rest_offsets = np.cumsum([0] + [q for q, _ in self.rest_sizes])
        self.Arr = cross.Arr
        self.N = self.Arr.shape[0]
        self.scalar_rest = all(k == 1 for _, k in self.rest_sizes)
        edges = list(self.rest_offsets) + [self.N]
        self._block_bounds = [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
        if dense_b is None:
            cells = self.Q1 * nl0 * k0
            nnz = sum(a.nnz for a in cross.A_re0)
            dense_b = bool(cells) and nnz >= dense_density * cells and cells * 8 <= max_dense_bytes
        self.dense_b = dense_b
        # the compiled loops, decided once so that a fit never mixes them with
        # numpy (see _compiled): only the sparse B uses them
        self.compiled = not dense_b and _kernels.ready()
        self._store_below(cross.A_re0, nl0 * k0, max_update_nnz)
        self._lead = self._diagonal_lead()
        self._work: np.ndarray | None = None  # reused Schur-complement buffer
        self._generation = 0  # factorisations so far (a workspace factor is valid until the next)
        self.lapack_threads: int | None = None  # BLAS threads inside the factorisations
        self._acc: np.ndarray | None = None  # reused accumulators of the compiled update

    def _store_below(self, blocks: list[sp.sparray], q0: int, max_update_nnz: int) -> None:
        """B's one copy, dense or sparse, and how the update will be computed:
        BLAS (dense), the precomputed operator (small), compiled loops or sparse
        products (large)."""
        self._dense: DenseBelow | None = None
        self._B_re: sp.csc_array | None = None  # B's random-effects rows when sparse
        self._update: RankUpdate | None = None
        if self.dense_b:
            self._dense = DenseBelow(blocks, self.Axy0, self.k0)
            self._below: DenseBelow | SparseBelow = self._dense
        else:
            self._B_re = _stack_csc(blocks, q0) if blocks else sp.csc_array((0, q0))
            self._below = SparseBelow(self._B_re, self.Axy0, self.k0)
            self._update = self._update_operator(max_update_nnz)
        self._use_kernels = self.compiled and self._update is None

    @classmethod
    def from_terms(
        cls, terms: list[TermData], X: np.ndarray | None, y: np.ndarray,
        max_update_nnz: int = 30_000_000, xtx: np.ndarray | None = None,
        cells: tuple[np.ndarray, np.ndarray] | None = None, **options,
    ) -> "AugmentedSystem":
        """The system of in-memory data: terms largest first, weights applied to
        z, X and y; ``xtx`` X'X if known, ``cells`` X as its cells (see
        ``CrossProducts.from_data``); ``options`` as for the constructor."""
        cross = CrossProducts.from_data(terms, X, y, xtx, cells)
        return cls(cross, max_update_nnz, **options)

    def _bt_dot(self, w: np.ndarray) -> np.ndarray:
        """B'w for w of length N (B = [Z_r X y]'Z_0)."""
        return self._below.t_dot(w)

    def _update_operator(self, max_nnz: int) -> "RankUpdate | None":
        """The linear map C -> upper triangle of B_re blockdiag(C_s) B_re'.

        With C_s = λ0 M_s⁻¹ λ0' for every level s of the first term, the rank
        update of the Schur complement is B blockdiag(C) B' (before scaling by
        Λ of the other terms). Its block over the other random-effects terms is
        sparse and linear in the entries of C, so that map is built once as a
        sparse matrix T: update = T @ vec(C), one sparse matrix-vector product
        per evaluation over the touched positions only. The [X y] rows of B are
        dense: their part of the update is two dense products (``_xy_update``),
        so the pairs stored here grow with the random-effects pattern, not with p.
        Entries are stored at the flat position j*N + i (j <= i) of a C-ordered
        N x N array, the upper triangle, so that its transpose is the
        Fortran-ordered lower triangle LAPACK wants.
        Returns None when T would reach ``max_nnz`` entries.
        """
        k0, N = self.k0, self.N
        B_re = self._B_re
        # entries per level, from the CSC column pointers: decide before any pair list
        m = np.diff(B_re.indptr[::k0]).astype(np.int64)
        if int((m * (m + 1) // 2).sum()) >= max_nnz:
            return None
        edges = self.rest_offsets[1:]
        if k0 == 1 and self.compiled:
            B_re.sort_indices()
            ptr, rank, value, touched = _kernels.scalar_pairs(B_re, N)
            if value is None:  # every value 1: the pattern is the operator
                return RankUpdate(None, touched, N, edges, pattern=(ptr, rank))
            T = sp.csc_array((value, rank, ptr), shape=(len(touched), B_re.shape[1]))
        elif k0 == 1:
            T, touched = _scalar_pairs(B_re, m, N)
        else:
            T, touched = _block_pairs(B_re, m, k0, N)
        return RankUpdate(T, touched, N, edges)

    def _xy_update(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The [X y] columns of the rank update B blockdiag(C) B': the rows of the
        other terms, (Q1, p + 1), and the [X y] block, (p + 1, p + 1)."""
        k0, m = self.k0, self.p + 1
        CB = np.einsum("lab,mlb->lam", C, self.Axy0.reshape(m, -1, k0)).reshape(-1, m)
        cross = self._B_re @ CB if self.Q1 else np.zeros((0, m))
        return np.asarray(cross), self.Axy0 @ CB

    def first_term(self, lam0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cholesky factors of M_s = λ0'A_s λ0 + I per level, and their inverses."""
        k0 = lam0.shape[0]
        M = lam0.T @ self.A00 @ lam0
        M[:, np.arange(k0), np.arange(k0)] += 1.0
        if k0 == 1:
            L00 = np.sqrt(M)
            return L00, 1.0 / L00
        L00 = np.linalg.cholesky(M)
        return L00, np.linalg.inv(L00)

    def factor(
        self, lams: list[np.ndarray], rows: bool = False, keep: bool = False
    ) -> Factor | None:
        """L for the relative covariance factors ``lams``; None if not positive definite.

        Parameters
        ----------
        rows : bool
            Also compute the rows below the first term (needed for u and the
            conditional variances, not for the objective).
        keep : bool
            Return a factor that owns its arrays. Otherwise the dense block lives
            in a workspace reused by the next call (fresh pages of a large array
            cost more than the arithmetic), valid until then.
        """
        self._generation += 1
        lam0 = lams[0]
        L00, L00inv = self.first_term(lam0)
        Lre0, Lxy0 = self._rows_below(lams, L00inv) if (rows or keep) else (None, None)
        if self._update is not None:
            S = self._schur_operator(lams, L00inv)
            if keep:
                S = S.copy()
        elif self._use_kernels or self._dense is not None:
            schur = self._schur_dense if self._dense is not None else self._schur_kernel
            S = schur(lams, L00inv)
            if keep:
                S = S.copy()
        else:
            S = self._schur_products(lams, L00inv)
        if self._lead:
            Lt = self._factor_diagonal_lead(S, keep)
            if Lt is None:
                return None
        else:
            with blas_threads(self.lapack_threads):
                Lt, info = lapack.dpotrf(S.T, lower=1, overwrite_a=1, clean=int(keep))
            if info != 0:
                return None
        q0 = self.A00.shape[0] * lam0.shape[0]
        generation = 0 if keep else self._generation
        return Factor(
            lams, L00, L00inv, Lre0, Lxy0, Lt, q0, self.Q1, self.p, self.rest_sizes, generation
        )

    def kept(self, f: Factor) -> Factor | None:
        """The factor ``factor(..., keep=True)`` would give, from one whose dense
        block is still this system's workspace (no factorisation since): the
        workspace becomes the factor's (the next factorisation allocates a new
        one), its upper triangle is zeroed and the rows below the first term
        are added. None if the workspace has moved on. The fit keeps its last
        evaluation this way instead of factorising the optimum again."""
        if not f.generation or f.generation != self._generation:
            return None
        if self._work is None or not np.may_share_memory(f.Lrr, self._work):
            return None
        self._work = None
        _zero_upper(f.Lrr)
        Lre0, Lxy0 = self._rows_below(f.lam, f.L00inv)
        return Factor(
            f.lam, f.L00, f.L00inv, Lre0, Lxy0, f.Lrr, f.q0, self.Q1, self.p, self.rest_sizes
        )

    def solve(self, f: Factor) -> tuple[np.ndarray, list[np.ndarray]]:
        """β and the spherical modes u for a factor without its rows below the
        first term: the dense block gives (u_rest, β); u0 follows from the first
        term's normal equations M_s u0_s = λ0'(Z0'y - Z0'Xβ - Z0'Z_rΛ_r u_r)_s."""
        N = self.N
        x = _last_row_solution(f.Lrr)  # solves L1'x = c (c: last row of L)
        u_rest, beta = x[: self.Q1], x[self.Q1 :]
        w = np.empty(N)
        for (start, stop), lam, (q, k) in zip(self._block_bounds, f.lam[1:], self.rest_sizes):
            w[start:stop] = (u_rest[start:stop].reshape(-1, k) @ lam.T).ravel()
        w[self.Q1 : N - 1] = beta
        w[-1] = -1.0
        rhs = -self._bt_dot(w).reshape(-1, self.k0) @ f.lam[0]  # λ0'(...) per level
        Minv = np.transpose(f.L00inv, (0, 2, 1)) @ f.L00inv
        u0 = np.einsum("lab,lb->la", Minv, rhs)
        return beta, f._split_rest(u0, u_rest)

    def gradient_parts(
        self, f: Factor, sub: int, beta: np.ndarray, us: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per term, K (∂ log det = 2 K[c, r]) and R (∂ r² = -2 R[r, c]) for
        the θ element at (r, c) of λ; None where λ is singular (this form
        divides by λ)."""
        sums = self.inverse_block_sums(f, sub)
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for lam, B, U in zip(f.lam, sums, us):
            if np.min(np.abs(np.diag(lam))) < 1e-7:
                out.append(None)
                continue
            lam_inv = np.linalg.inv(lam)
            K = (U.shape[0] * np.eye(lam.shape[0]) - B) @ lam_inv
            out.append((K, lam_inv.T @ (U.T @ U)))
        return out

    def inverse_block_sums(self, f: Factor, sub: int) -> list[np.ndarray]:
        """Σ over levels of the diagonal k x k blocks of the inverse, per term.

        The inverse is that of the leading part of the system through the first
        ``sub`` rows of the dense block: ``sub = Q1`` gives M = Λ'Z'ZΛ + I (the ML
        gradient), ``sub = Q1 + p`` the random-effects block of Ω⁻¹ with X included
        (REML). The first term's blocks are M_s⁻¹ + M_s⁻¹λ0'H_sλ0 M_s⁻¹ with
        H_s = B_s'PB_s, P = Λ_r S⁻¹Λ_r'; only their sum over s is needed (see
        ``_first_term_correction``); the other terms' blocks are read off S⁻¹
        directly.
        """
        # single precision kept where compiled loops alone read it (the
        # operator's gather, scalar terms after the first)
        single = self.compiled and self._update is not None and self.scalar_rest and not self._lead
        inv = self._lower_inverse(f.Lrr, sub, keep_single=single)  # lower triangle of S_sub⁻¹
        Minv = np.transpose(f.L00inv, (0, 2, 1)) @ f.L00inv  # (ℓ0, k0, k0)
        first = Minv.sum(axis=0)
        if sub:
            first = first + self._first_term_correction(inv, f.lam, Minv, sub)
        sums = [first]
        for (start, stop), (q, k) in zip(self._block_bounds, self.rest_sizes):
            block = inv[start:stop, start:stop].reshape(q // k, k, q // k, k)
            per_level = np.einsum("lalb->lab", block).astype(float, copy=False)
            lower = np.tril(per_level.sum(axis=0))
            sums.append(lower + np.tril(lower, -1).T)
        return sums

    @property
    def dense_size(self) -> int:
        """The size by which BLAS threads are chosen: the rows of the dense
        factorisation proper (after a diagonal lead), or, when B is stored
        dense, its columns if more (an evaluation is then rank-k updates over
        all of them)."""
        if self._dense is not None:
            return max(self.N - self._lead, self.A00.shape[0] * self.k0)
        return self.N - self._lead

    def _lower_inverse(self, Lrr: np.ndarray, sub: int, keep_single: bool = False) -> np.ndarray:
        """(L L')⁻¹ of the leading ``sub`` rows of the dense factor; its lower
        triangle, or (with a diagonal lead) the entries the gradient reads;
        ``keep_single``: see ``inverse_from_factor``."""
        if sub == 0:
            return np.zeros((0, 0))
        if self._lead:
            return self._inverse_diagonal_lead(Lrr, sub)
        with blas_threads(self.lapack_threads):
            return inverse_from_factor(Lrr, sub=sub, keep_single=keep_single)

    # ------------------------------------------------------------ diagonal lead

    def _diagonal_lead(self) -> int:
        """Rows at the start of the dense block whose block stays diagonal after
        the first term is eliminated: the second term's, when it is scalar, its
        own cross-products are diagonal and no level of the first term meets two
        of its levels (nested factors: A:B after A:B:C). Those rows are
        eliminated by square roots like the first term's, and only what follows
        them is a dense factorisation (MixedModels.jl's chain of diagonal
        blocks for nested terms). 0 when that does not hold or is not known
        (only the precomputed operator lists the touched positions)."""
        up = self._update
        if up is None or not self.rest_sizes or self.rest_sizes[0][1] != 1:
            return 0
        q = self.rest_sizes[0][0]
        # a row's positions are sorted, from its diagonal on: none off the
        # diagonal inside the block if each row's first position is its
        # diagonal or outside, and its second one outside
        ptr = up.row_pointers(q)
        rows, count = np.arange(q), np.diff(ptr)
        some, two = count > 0, count > 1
        first = up.positions[ptr[:-1][some]] - rows[some] * self.N
        second = up.positions[ptr[:-1][two] + 1] - rows[two] * self.N
        if np.any((first != rows[some]) & (first < q)) or np.any(second < q):
            return 0
        # nonzeros of A_rr's leading q x q block, counted over whole rows
        # (contiguous: several times faster than on the block's view)
        rows_q = self.Arr[:q]
        inside = np.count_nonzero(rows_q) - np.count_nonzero(rows_q[:, q:])
        if inside != np.count_nonzero(np.diagonal(rows_q)):
            return 0
        return q

    def _factor_diagonal_lead(self, S: np.ndarray, keep: bool) -> np.ndarray | None:
        """Factor S (valid in its upper triangle, C order) in place when its
        leading block is diagonal: square roots there, the rows below divided by
        them, the rest downdated and factored by LAPACK. Returns the lower factor
        as the Fortran-order view S.T, or None if S is not positive definite."""
        q, N = self._lead, self.N
        diag = S.ravel()[: q * (N + 1) : N + 1]  # a view
        if not np.all(diag > 0):
            return None
        root = np.sqrt(diag)
        S.ravel()[: q * (N + 1) : N + 1] = root
        top = S[:q, q:]  # L21' in the upper triangle
        top /= root[:, None]
        rest = S[q:, q:]
        rest -= top.T @ top
        with blas_threads(self.lapack_threads):
            L22, info = lapack.dpotrf(rest.T, lower=1, clean=1)
        if info != 0:
            return None
        rest[...] = L22.T
        if keep:  # clean: the factor's upper triangle is S's lower one
            S[q:, :q] = 0.0
        return S.T

    def _inverse_diagonal_lead(self, Lrr: np.ndarray, sub: int) -> np.ndarray:
        """S_sub⁻¹ for a factor with a diagonal lead D^½ and L21 below it: with
        W = (L22 L22')⁻¹ of the rows after it,

            S⁻¹ = [D⁻¹ + D^-½ L21'W L21 D^-½    -D^-½ L21'W]
                  [-W L21 D^-½                   W         ].

        The leading block's off-diagonal entries are left zero: its term is
        scalar and its rows never meet in a level of the first term, so neither
        the gather nor the block sums read them. Both triangles are filled."""
        q = self._lead
        root = np.diagonal(Lrr)[: min(q, sub)]
        inv = np.zeros((sub, sub))
        if sub <= q:
            inv.ravel()[:: sub + 1] = 1.0 / root**2
            return inv
        L21 = Lrr[q:sub, :q]
        with blas_threads(self.lapack_threads):
            W = inverse_from_factor(Lrr[q:sub, q:sub])
        W = np.tril(W) + np.tril(W, -1).T
        WL = W @ L21
        inv[q:, q:] = W
        inv[q:, :q] = -WL / root
        inv[:q, q:] = inv[q:, :q].T
        inv.ravel()[: q * (sub + 1) : sub + 1] = (1.0 + np.einsum("aj,aj->j", L21, WL)) / root**2
        return inv

    def _first_term_correction(
        self, inv: np.ndarray, lams: list[np.ndarray], Minv: np.ndarray, sub: int
    ) -> np.ndarray:
        """Σ_s M_s⁻¹λ0'H_sλ0 M_s⁻¹ = Σ_s V_s'PV_s with V_s = B_s λ0 M_s⁻¹, (k0, k0).

        Only this weighted sum of the H_s enters the gradient. With B dense it is
        taken directly by BLAS (:meth:`DenseBelow.weighted_trace`); otherwise the
        H_s are gathered level by level and weighted."""
        lam0 = lams[0]
        if self._dense is not None:
            P = self._full_p(inv, lams[1:], sub)[:sub, :sub]
            return self._dense.weighted_trace(P, lam0 @ Minv, sub)
        H = self._gather_first_term(inv, lams[1:], sub)
        left = Minv @ lam0.T  # (ℓ0, k0, k0): M_s⁻¹λ0'
        return (left @ H @ np.transpose(left, (0, 2, 1))).sum(axis=0)

    def _full_p(self, inv: np.ndarray, lams: list[np.ndarray], sub: int) -> np.ndarray:
        """P = Λ_r S_sub⁻¹ Λ_r' as a full symmetric N x N array (zero beyond ``sub``)
        from the lower triangle of S_sub⁻¹."""
        P = np.zeros((self.N, self.N))
        P[:sub, :sub] = np.tril(inv) + np.tril(inv, -1).T
        return self._scale_rest(P, [lam.T for lam in lams])

    def _gather_first_term(self, inv: np.ndarray, lams: list[np.ndarray], sub: int) -> np.ndarray:
        """H_s = B_s'PB_s for every level s of the first term, (ℓ0, k0, k0):
        through B's random-effects rows (update operator's adjoint, compiled
        loops or sparse products), plus its dense X rows for REML."""
        Q1 = self.Q1
        # with one scalar per term after the first, P is read off S⁻¹ and the scales
        P = None if self.scalar_rest else self._full_p(inv, lams, sub)
        if self._update is not None:
            H = self._gather_operator(inv, P, lams)
        else:
            H = self._gather_re_rows(inv, P, lams, sub)
        if sub > Q1:  # REML: the X rows of P
            if P is None:
                scale = np.array([lam[0, 0] for lam in lams] + [1.0])
                P_rx, P_xx = self._x_blocks_scalar(inv, scale, sub)
            else:
                P_rx, P_xx = P[:Q1, Q1:sub], P[Q1:sub, Q1:sub]
            H += self._gather_x_rows(P_rx, P_xx)
        return 0.5 * (H + np.transpose(H, (0, 2, 1)))

    def _gather_operator(
        self, inv: np.ndarray, P: np.ndarray | None, lams: list[np.ndarray]
    ) -> np.ndarray:
        """The random-effects part of H_s by the adjoint of the update operator."""
        up = self._update
        if P is None:
            # positions are upper (row <= col); S⁻¹ is symmetric, read its lower triangle
            scale = np.array([lam[0, 0] for lam in lams] + [1.0])
            if inv.flags.f_contiguous and self.compiled:  # one compiled pass
                Q1 = self.Q1
                weighted = _kernels.gather_lower(
                    inv, Q1, up.row_pointers(Q1), up.positions, self.N, self._row_scale(scale)
                )
            else:
                weighted = up.lower_entries(inv) * up.block_scales(scale) * up.weight
        else:
            weighted = P[up.rows, up.cols] * up.weight
        return up.adjoint(weighted).reshape(-1, self.k0, self.k0)

    def _x_blocks_scalar(self, inv: np.ndarray, scale: np.ndarray, sub: int):
        """P's X columns, (Q1, p) and (p, p), from the lower triangle of S⁻¹,
        when Λ_r is one scalar per term."""
        Q1 = self.Q1
        P_rx = inv[Q1:sub, :Q1].T * self._row_scale(scale)[:, None]
        low = inv[Q1:sub, Q1:sub]
        return P_rx, np.tril(low) + np.tril(low, -1).T

    def _gather_re_rows(
        self, inv: np.ndarray, P: np.ndarray | None, lams: list[np.ndarray], sub: int
    ) -> np.ndarray:
        """The random-effects part of H_s (P's leading Q1 x Q1 block) by the
        compiled loops or, without them, sparse products."""
        Q1 = self.Q1
        if self._use_kernels:
            if P is None:  # P from the lower triangle of S⁻¹ and the scales
                sc = self._scalar_row_scale(lams)
                return _kernels.gather_blocks(self._B_re, self.k0, inv.T, sc, min(sub, Q1))
            return _kernels.gather_blocks(self._B_re, self.k0, P, np.ones(self.N), Q1)
        if P is None:
            P = self._full_p(inv, lams, sub)
        return self._gather_by_products(P[:Q1, :Q1])

    def _gather_x_rows(self, P_rx: np.ndarray, P_xx: np.ndarray) -> np.ndarray:
        """The part of B_s'PB_s through B's dense X rows:
        B_re,s'P_rx B_x,s (and its transpose, added by the caller's
        symmetrisation, hence twice here) + B_x,s'P_xx B_x,s."""
        k0, p = self.k0, P_xx.shape[0]
        Bx = self.Axy0[:p].reshape(p, -1, k0)  # (p, ℓ, k0)
        W = np.asarray(self._B_re.T @ P_rx).reshape(-1, k0, p) if self.Q1 else 0.0
        cross = np.einsum("lam,mlb->lab", W, Bx) if self.Q1 else 0.0
        PB = np.einsum("mn,nlb->mlb", P_xx, Bx)
        return 2.0 * cross + np.einsum("mla,mlb->lab", Bx, PB)

    def _gather_by_products(self, P: np.ndarray, chunk: int = 256) -> np.ndarray:
        """H_s = B_re,s'P B_re,s level by level, in chunks (P: Q1 x Q1), when
        neither the update operator nor the compiled loops exist."""
        k0 = self.k0
        B = self._B_re
        nlev = B.shape[1] // k0
        out = np.empty((nlev, k0, k0))
        for s0 in range(0, nlev, chunk):
            s1 = min(s0 + chunk, nlev)
            Bc = B[:, s0 * k0 : s1 * k0]
            Hc = np.asarray(Bc.T @ (Bc.T @ P).T)  # (c k0, c k0) dense
            Hc = Hc.reshape(s1 - s0, k0, s1 - s0, k0)
            out[s0:s1] = np.einsum("lalb->lab", Hc)
        return out

    def _rows_below(self, lams: list[np.ndarray], L00inv: np.ndarray):
        """L[re, 0] = Λ_r'B_re blockdiag(F_s) as a :class:`RowsBelow` (not formed)
        and L[xy, 0] = B_xy blockdiag(F_s), F_s = λ0 L00_s⁻ᵀ."""
        F = lams[0] @ np.transpose(L00inv, (0, 2, 1))  # (ℓ0, k0, k0)
        rows = RowsBelow(self._below, F, self._block_bounds[:-1], lams[1:]) if self.Q1 else None
        return rows, self._xy_rows(F)

    def _xy_rows(self, F: np.ndarray) -> np.ndarray:
        """L[xy, 0] = B_xy blockdiag(F_s), (p + 1, q0)."""
        m = self.p + 1
        return np.einsum("mla,lab->mlb", self.Axy0.reshape(m, -1, self.k0), F).reshape(m, -1)

    def _sparse_rows(self, lams: list[np.ndarray], F: np.ndarray) -> sp.sparray:
        """Λ_r'B_re blockdiag(F_s) from B's single sparse copy: scaled entries
        when every λ is a scalar, sparse products with block diagonals otherwise."""
        B = self._B_re
        if self.scalar_rest and self.k0 == 1:
            scale = np.array([lam[0, 0] for lam in lams] + [1.0])
            out = B.copy()
            out.data *= self._row_scale(scale)[out.indices]
            out.data *= np.repeat(F[:, 0, 0], np.diff(out.indptr))
            return out
        blocks = [np.repeat(lam.T[None], q // k, 0) for lam, (q, k) in zip(lams, self.rest_sizes)]
        left = sp.block_diag([_blockdiag_csr(b) for b in blocks], format="csr")  # Λ_r'
        return sp.csr_array(left @ B @ _blockdiag_csr(F))

    def _schur_operator(self, lams: list[np.ndarray], L00inv: np.ndarray) -> np.ndarray:
        """Λ_r'(A_rr - B C B')Λ_r + I, the update from the precomputed operator
        (random-effects block) and dense products ([X y] columns).

        Only the upper triangle (C order) is correct, which is all LAPACK reads.
        """
        C = _update_weights(lams[0], L00inv)
        update = self._update.apply(C.ravel())
        cross, xy = self._xy_update(C)
        S = self._workspace()
        if self.scalar_rest:
            self._scaled_upper_blocks(S, lams[1:], update, cross, xy)
            return self._plus_identity(S)
        np.copyto(S, self.Arr)
        S.ravel()[self._update.positions] -= update
        Q1 = self.Q1
        S[:Q1, Q1:] -= cross
        S[Q1:, Q1:] -= xy
        return self._finish_general(S, lams[1:])

    def _workspace(self) -> np.ndarray:
        if self._work is None:
            self._work = np.empty_like(self.Arr)
        return self._work

    def _finish_general(self, S: np.ndarray, lams: list[np.ndarray]) -> np.ndarray:
        """From A_rr - update (upper triangle valid) to Λ_r'(...)Λ_r + I, any Λ_r."""
        lower = np.tri(self.N, k=-1, dtype=bool)
        np.copyto(S, S.T, where=lower)
        self._scale_rest(S, lams)
        return self._plus_identity(S)

    def _plus_identity(self, S: np.ndarray) -> np.ndarray:
        idx = np.arange(self.Q1)
        S[idx, idx] += 1.0
        return S

    def _scaled_upper_blocks(
        self,
        S: np.ndarray,
        lams: list[np.ndarray],
        update: np.ndarray,
        cross: np.ndarray,
        xy: np.ndarray,
    ) -> None:
        """S = Λ_r'(A_rr - update)Λ_r on the upper triangle, when every term after
        the first is scalar (Λ_r is one scalar per block).

        The random-effects block of A_rr is as sparse as the update (every
        nonzero of it is a position the operator touches): that block is
        cleared and written at those positions only; the [X y] columns are dense."""
        scale = np.array([lam[0, 0] for lam in lams] + [1.0])
        up = self._update
        Q1 = self.Q1
        arr = self._arr_at_positions()
        row_scale = self._row_scale(scale)
        if arr is not None and self.compiled:  # one compiled pass, no temporaries
            _kernels.scatter_upper(S, Q1, up.row_pointers(Q1), up.positions, arr, update, row_scale)
        elif arr is not None:
            _zero_upper_rows(S, Q1)
            S.ravel()[up.positions] = (arr - update) * up.block_scales(scale)
        else:  # some nonzero of A_rr outside the pattern: write blocks
            _zero_upper_rows(S, Q1)
            for i, (r0, r1) in enumerate(self._block_bounds[:-1]):
                for j in range(i, len(scale) - 1):
                    c0, c1 = self._block_bounds[j]
                    np.multiply(self.Arr[r0:r1, c0:c1], scale[i] * scale[j], out=S[r0:r1, c0:c1])
            S.ravel()[up.positions] -= update * up.block_scales(scale)
        S[:Q1, Q1:] = (self.Arr[:Q1, Q1:] - cross) * row_scale[:, None]
        S[Q1:, Q1:] = self.Arr[Q1:, Q1:] - xy

    def _arr_at_positions(self) -> np.ndarray | None:
        """A_rr at the operator's positions, or None if A_rr's random-effects
        block has a nonzero elsewhere (then it is written block by block)."""
        if not hasattr(self, "_arr_pos_values"):
            Q1, up = self.Q1, self._update
            values = self.Arr.ravel()[up.positions]
            # the block is symmetric: its upper triangle from the total count,
            # counted over whole rows (contiguous: 8x faster than the block view)
            rows = self.Arr[:Q1]
            total = np.count_nonzero(rows) - np.count_nonzero(rows[:, Q1:])
            inside = (total + np.count_nonzero(np.diagonal(rows))) // 2
            self._arr_pos_values = values if np.count_nonzero(values) == inside else None
        return self._arr_pos_values

    def _row_scale(self, scale: np.ndarray) -> np.ndarray:
        """One scale per random-effects row from one per term."""
        sizes = [stop - start for start, stop in self._block_bounds[:-1]]
        return np.repeat(scale[:-1], sizes)

    def _schur_kernel(self, lams: list[np.ndarray], L00inv: np.ndarray) -> np.ndarray:
        """Λ_r'(A_rr - B C B')Λ_r + I with the update accumulated by a compiled loop
        over B's pattern (no pair list: for models too large for the operator).
        With scalar terms after the first, one more compiled pass scales and
        finishes the upper triangle, which is all LAPACK reads."""
        C = _update_weights(lams[0], L00inv)
        if self._acc is None:  # kept: fresh pages of large arrays are slow
            self._acc = _kernels.accumulators(C.shape[0], self.N)
        acc = _kernels.rank_update(self._B_re, self.k0, C, self.N, self._acc)
        cross, xy = self._xy_update(C)  # the dense [X y] rows of B: dense products
        Q1 = self.Q1
        acc[0, :Q1, Q1:] += cross
        acc[0, Q1:, Q1:] += xy
        S = self._workspace()
        if self.scalar_rest:
            _kernels.finish_scalar(self.Arr, acc, self._scalar_row_scale(lams[1:]), self.Q1, S)
            return S
        np.subtract(self.Arr, acc.sum(axis=0), out=S)
        acc.fill(0.0)
        return self._finish_general(S, lams[1:])

    def _schur_dense(self, lams: list[np.ndarray], L00inv: np.ndarray) -> np.ndarray:
        """Λ_r'(A_rr - B C B')Λ_r + I with B dense: A_rr copied into the workspace,
        the update subtracted by syrk over chunks of B blockdiag(F_s), F_s F_s' = C_s
        (F_s = λ0 L00_s⁻ᵀ: no square root of C, and C_s = 0 is no special case)."""
        S = self._workspace()
        np.copyto(S, self.Arr)
        F = lams[0] @ np.transpose(L00inv, (0, 2, 1))
        self._dense.subtract_update(S, F)
        if self.scalar_rest:
            sc = self._scalar_row_scale(lams[1:])
            S *= sc[:, None]
            S *= sc[None, :]
            return self._plus_identity(S)
        return self._finish_general(S, lams[1:])

    def _scalar_row_scale(self, lams: list[np.ndarray]) -> np.ndarray:
        """Λ_r's diagonal (every row of the dense block) when the terms after the
        first are scalar."""
        scale = np.array([lam[0, 0] for lam in lams] + [1.0])
        return np.concatenate([self._row_scale(scale), np.ones(self.N - self.Q1)])

    def _schur_products(self, lams: list[np.ndarray], L00inv: np.ndarray) -> np.ndarray:
        """Λ_r'A_rr Λ_r + I - L_r0 L_r0' from explicit sparse products (the
        fallback without the update operator and without Numba)."""
        F = lams[0] @ np.transpose(L00inv, (0, 2, 1))
        Lre0 = self._sparse_rows(lams[1:], F) if self.Q1 else None
        Lxy0 = self._xy_rows(F)
        S = self._scale_rest(self.Arr.copy(), lams[1:])
        Q1 = self.Q1
        if Lre0 is not None:
            S[:Q1, :Q1] -= (Lre0 @ Lre0.T).toarray()
            cross = np.asarray(Lre0 @ Lxy0.T)  # (Q1, p+1)
            S[:Q1, Q1:] -= cross
            S[Q1:, :Q1] -= cross.T
        S[Q1:, Q1:] -= Lxy0 @ Lxy0.T
        idx = np.arange(Q1)
        S[idx, idx] += 1.0
        return S

    def _scale_rest(self, S: np.ndarray, lams: list[np.ndarray]) -> np.ndarray:
        """Λ_r' S Λ_r in place, for the block-diagonal Λ_r = diag(Λ_1, ..., Λ_K, I)."""
        if self.scalar_rest and lams:
            scale = np.ones(self.N)
            for start, stop, lam in zip(self.rest_offsets[:-1], self.rest_offsets[1:], lams):
                scale[start:stop] = lam[0, 0]
            S *= scale[:, None]
            S *= scale[None, :]
            return S
        for (start, stop), lam in zip(zip(self.rest_offsets[:-1], self.rest_offsets[1:]), lams):
            N = S.shape[0]
            k = lam.shape[0]
            cols = S[:, start:stop].reshape(N, -1, k) @ lam
            S[:, start:stop] = cols.reshape(N, -1)
            rows = np.einsum("kj,lkn->ljn", lam, S[start:stop, :].reshape(-1, k, N))
            S[start:stop, :] = rows.reshape(-1, N)
        return S
