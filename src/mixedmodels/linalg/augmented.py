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
scaled inside each product (:class:`~mixedmodels.linalg.below.RowsBelow`). All
cross-products are computed once (:mod:`mixedmodels.linalg.crossproducts`); an
evaluation touches only arrays of the size of the random effects, never of the
number of observations.

The steps, one module each: ``crossproducts`` (once, from the rows), ``below``
(B's storage), ``rank_update`` (the precomputed update operator), ``schur``
(the dense block for θ), ``factor`` (L and what it gives), ``inverse_sums``
(the gradient's parts); this module ties them together.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from mixedmodels.linalg.below import DenseBelow, SparseBelow
from mixedmodels.linalg.crossproducts import CrossProducts, TermData, stack_csc
from mixedmodels.linalg.factor import Factor, last_row_solution
from mixedmodels.linalg.inverse_sums import InverseBlockSums
from mixedmodels.linalg.kernels import lmm_kernels as _kernels
from mixedmodels.linalg.rank_update import RankUpdate, block_pairs, scalar_pairs
from mixedmodels.linalg.schur import SchurComplement
from mixedmodels.support.threads import blas_threads

__all__ = ["AugmentedSystem"]


def _zero_upper(L: np.ndarray, block: int = 128) -> None:
    """Zero the strict upper triangle of a square array in place.

    A band of columns at a time: no index arrays or masks of its size.
    """
    n = L.shape[0]
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        L[:j0, j0:j1] = 0.0
        L[j0:j1, j0:j1] = np.tril(L[j0:j1, j0:j1])


class AugmentedSystem(SchurComplement, InverseBlockSums):
    """The cross-products of [Z X y], computed once, and the factorisation for θ.

    This class chooses, once, how B is stored and how the rank update is
    computed, and factors and solves for θ. Its two base classes hold the
    steps that depend on those choices: :class:`~mixedmodels.linalg.schur.SchurComplement`
    forms the dense block for θ, :class:`~mixedmodels.linalg.inverse_sums.InverseBlockSums`
    the gradient's parts from a factor.

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
        """Store B's one copy, dense or sparse, and choose how the update will be computed.

        BLAS (dense), the precomputed operator (small), compiled loops or sparse
        products (large).
        """
        self._dense: DenseBelow | None = None
        self._B_re: sp.csc_array | None = None  # B's random-effects rows when sparse
        self._update: RankUpdate | None = None
        if self.dense_b:
            self._dense = DenseBelow(blocks, self.Axy0, self.k0)
            self._below: DenseBelow | SparseBelow = self._dense
        else:
            self._B_re = stack_csc(blocks, q0) if blocks else sp.csc_array((0, q0))
            self._below = SparseBelow(self._B_re, self.Axy0, self.k0)
            self._update = self._update_operator(max_update_nnz)
        self._use_kernels = self.compiled and self._update is None

    @classmethod
    def from_terms(
        cls, terms: list[TermData], X: np.ndarray | None, y: np.ndarray,
        max_update_nnz: int = 30_000_000, xtx: np.ndarray | None = None,
        cells: tuple[np.ndarray, np.ndarray] | None = None, **options,
    ) -> "AugmentedSystem":
        """Return the system of in-memory data.

        ``terms`` come largest first, the weights applied to z, X and y; ``xtx``
        is X'X if known, ``cells`` X as its cells (see ``CrossProducts.from_data``);
        ``options`` as for the constructor.
        """
        cross = CrossProducts.from_data(terms, X, y, xtx, cells)
        return cls(cross, max_update_nnz, **options)

    def copy(self) -> "AugmentedSystem":
        """Return a copy sharing the (read-only) cross-products but no workspace.

        Nor the thread setting: two models can then use the two independently
        (a refit beside its original).
        """
        new = copy.copy(self)
        new.lapack_threads = None
        new._work = None
        new._acc = None
        if self._dense is not None:
            new._below = new._dense = self._dense.copy()
        return new

    def with_response(self, v: np.ndarray) -> "AugmentedSystem":
        """Return the system of the same design with another response.

        ``v`` is the new [Z X y]'Wy in the system's order (terms, X, y). Only the
        response row and column of the cross-products change; the rest is shared.
        """
        new = self.copy()
        q0 = self.Axy0.shape[1]
        Axy0 = self.Axy0.copy()
        Axy0[-1] = v[:q0]
        Arr = self.Arr.copy()
        Arr[:, -1] = v[q0:]
        Arr[-1, :] = v[q0:]
        new.Axy0, new.Arr = Axy0, Arr
        new._below = new._below.with_response(Axy0)
        if new._dense is not None:
            new._dense = new._below
        return new

    def _bt_dot(self, w: np.ndarray) -> np.ndarray:
        """B'w for w of length N (B = [Z_r X y]'Z_0)."""
        return self._below.t_dot(w)

    def _update_operator(self, max_nnz: int) -> "RankUpdate | None":
        """Return the linear map C -> upper triangle of B_re blockdiag(C_s) B_re'.

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
            T, touched = scalar_pairs(B_re, m, N)
        else:
            T, touched = block_pairs(B_re, m, k0, N)
        return RankUpdate(T, touched, N, edges)

    def first_term(self, lam0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the Cholesky factors of M_s = λ0'A_s λ0 + I per level, and their inverses."""
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
        """Return L for the relative covariance factors ``lams``; None if not positive definite.

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
        """Return the factor ``factor(..., keep=True)`` would give, from a workspace factor.

        ``f``'s dense block must still be this system's workspace (no
        factorisation since): the workspace becomes the factor's (the next
        factorisation allocates a new one), its upper triangle is zeroed and the
        rows below the first term are added. None if the workspace has moved
        on. The fit keeps its last evaluation this way instead of factorising
        the optimum again.
        """
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
        """Return β and the spherical modes u for a factor without its rows below the first term.

        The dense block gives (u_rest, β); u0 follows from the first term's
        normal equations M_s u0_s = λ0'(Z0'y - Z0'Xβ - Z0'Z_rΛ_r u_r)_s.
        """
        N = self.N
        x = last_row_solution(f.Lrr)  # solves L1'x = c (c: last row of L)
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

    @property
    def dense_size(self) -> int:
        """The size by which BLAS threads are chosen.

        That is the rows of the dense factorisation proper (after a diagonal
        lead), or, when B is stored dense, its columns if more (an evaluation is
        then rank-k updates over all of them).
        """
        if self._dense is not None:
            return max(self.N - self._lead, self.A00.shape[0] * self.k0)
        return self.N - self._lead

    def _diagonal_lead(self) -> int:
        """Return how many rows at the start of the dense block stay diagonal.

        Diagonal, that is, after the first term is eliminated: the second term's
        rows, when it is scalar, its own cross-products are diagonal and no
        level of the first term meets two of its levels (nested factors: A:B
        after A:B:C). Those rows are
        eliminated by square roots like the first term's, and only what follows
        them is a dense factorisation (MixedModels.jl's chain of diagonal
        blocks for nested terms). 0 when that does not hold or is not known
        (only the precomputed operator lists the touched positions).
        """
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
        """Factor S in place when its leading block is diagonal.

        S is valid in its upper triangle, C order. Square roots on the leading
        block, the rows below divided by them, the rest downdated and factored
        by LAPACK. Returns the lower factor as the Fortran-order view S.T, or
        None if S is not positive definite.
        """
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

    def _row_scale(self, scale: np.ndarray) -> np.ndarray:
        """One scale per random-effects row from one per term."""
        sizes = [stop - start for start, stop in self._block_bounds[:-1]]
        return np.repeat(scale[:-1], sizes)

    def _scalar_row_scale(self, lams: list[np.ndarray]) -> np.ndarray:
        """Return Λ_r's diagonal over every row of the dense block (the later terms scalar)."""
        scale = np.array([lam[0, 0] for lam in lams] + [1.0])
        return np.concatenate([self._row_scale(scale), np.ones(self.N - self.Q1)])

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
