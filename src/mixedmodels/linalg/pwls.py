"""Penalised weighted least squares for PIRLS: the blocked system of a GLMM.

Each PIRLS step solves, for working weights w and working response z,

    min ‖W^½(z - Xβ - ZΛu)‖² + ‖u‖²        (over u, and β when ``joint``)

whose matrix is [Λ'Z'WZΛ + I, Λ'Z'WX; X'WZΛ, X'WX]. The weights change at
every step, so the cross-products are rebuilt each time; their sparsity
patterns do not, so every position a row touches is found once and each
rebuild is a few ``bincount``s over the rows. As in the linear model
(MixedModels.jl's layout), the first (largest) term's block is block-diagonal
- one k x k block per level, eliminated level by level at no cost - and only
the Schur complement of the other terms and X is a dense matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas, lapack, solve_triangular

from mixedmodels.linalg.dense import scale_cols, scale_rows
from mixedmodels.linalg.rank_update import scalar_pairs

__all__ = ["BlockedSystem", "BlockedFactor"]


class WeightedCrossProducts:
    """G'diag(w)G for any row weights w, by one sparse product.

    Every pair of nonzeros in a row of G touches one position of the upper
    triangle, and the map w -> those sums is a sparse matrix built once.
    """

    def __init__(self, G: sp.csr_array):
        G = sp.csr_array(G)
        G.sort_indices()
        self.m = G.shape[1]
        columns_of_rows = sp.csc_array((G.data, G.indices, G.indptr), shape=(self.m, G.shape[0]))
        counts = np.diff(G.indptr).astype(np.int64)
        T, self.positions = scalar_pairs(columns_of_rows, counts, self.m)
        self.T = T.tocsr()  # row-wise products: faster than the column-wise CSC
        self.G = G

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """Return the full symmetric m x m matrix G'diag(w)G."""
        A = np.zeros((self.m, self.m))
        A.ravel()[self.positions] = self.T @ w
        return A + np.triu(A, 1).T


def term_matrix(term) -> sp.csr_array:
    """Return a random-effects term's n x (levels·k) model matrix."""
    n, k = term.z.shape
    rows = np.repeat(np.arange(n), k)
    cols = (term.codes[:, None] * k + np.arange(k)).ravel()
    return sp.csr_array((term.z.ravel(), (rows, cols)), shape=(n, term.nlevels * k))


@dataclass
class BlockedFactor:
    """The factor of one PWLS step.

    Per level of the first term the Cholesky factor L0 of M_s = λ0'A_sλ0 + I,
    the rows R = L0⁻¹B̃' below it, and the dense Cholesky factor LS of the
    Schur complement of the other terms (and X, for a joint step).
    """

    L0: np.ndarray  # (ℓ0, k0, k0) lower
    R: np.ndarray  # (ℓ0, k0, m)
    LS: np.ndarray  # (m, m) lower
    Q1: int  # rows of the other random-effects terms in the Schur block
    logdet: float | None = None  # ldL2 when the factorisation computed it already

    def ldL2(self) -> float:
        """Return log det(Λ'Z'WZΛ + I), the random-effects block."""
        if self.logdet is not None:
            return self.logdet
        d0 = np.log(np.diagonal(self.L0, axis1=1, axis2=2)).sum()
        return 2.0 * float(d0 + np.log(np.diagonal(self.LS)[: self.Q1]).sum())

    def first_sd(self) -> np.ndarray:
        """Return 1 / diag(L) of the first term's rows (adaptive quadrature's scale)."""
        return 1.0 / np.diagonal(self.L0, axis1=1, axis2=2).ravel()

    def RX(self) -> np.ndarray:
        """Return the X block of the factor (a joint step): σ²(RX RX')⁻¹ is vcov(β)."""
        return self.LS[self.Q1 :, self.Q1 :]

    def condvar_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the diagonal blocks of (Λ'Z'WZΛ + I)⁻¹ (a step without X).

        The first term's per level, (ℓ0, k0, k0), and the rest's as the full
        Q1 x Q1 inverse (the caller takes its diagonal blocks).
        """
        Q1 = self.Q1
        L0inv = np.linalg.inv(self.L0)
        M0inv = np.transpose(L0inv, (0, 2, 1)) @ L0inv
        if Q1 == 0:
            return M0inv, np.zeros((0, 0))
        LS = self.LS[:Q1, :Q1]
        V = np.transpose(L0inv, (0, 2, 1)) @ self.R[:, :, :Q1]  # M_s⁻¹ B̃_s', (ℓ0, k0, Q1)
        flat = V.reshape(-1, Q1).T  # (Q1, ℓ0 k0)
        Y = solve_triangular(LS, flat, lower=True, check_finite=False)
        k0 = self.L0.shape[1]
        Yb = Y.T.reshape(-1, k0, Q1)
        first = M0inv + Yb @ np.transpose(Yb, (0, 2, 1))
        inv, _ = lapack.dpotri(np.array(LS, order="F"), lower=1)
        rest = np.tril(inv) + np.tril(inv, -1).T
        return first, rest


class BlockedSystem:
    """The PWLS system of a GLMM, rebuilt for every set of working weights.

    Parameters
    ----------
    terms : list of ReTerm
        Random-effects terms, largest first (the first one's block is diagonal).
    X : ndarray
        Fixed-effects matrix.
    """

    def __init__(self, terms, X: np.ndarray):
        t0, rest = terms[0], terms[1:]
        self.k0, self.l0 = t0.k, t0.nlevels
        self.q0 = self.k0 * self.l0
        self.codes0 = t0.codes
        self.z0 = t0.z
        self.n, self.p = X.shape
        self.X = X
        rest_blocks = [term_matrix(t) for t in rest]
        self.Q1 = sum(b.shape[1] for b in rest_blocks)
        edges = np.cumsum([0] + [b.shape[1] for b in rest_blocks])
        self.rest_bounds = [(int(edges[i]), int(edges[i + 1])) for i in range(len(rest))]
        # the dense block is [Z_rest X]'W[Z_rest X]: Z_rest's part from the
        # pairs of its nonzeros, X's parts by dense and sparse-dense products
        n = self.n
        self.Zr = sp.hstack(rest_blocks, format="csr") if rest_blocks else sp.csr_array((n, 0))
        self.ZrT = self.Zr.T.tocsr()  # once: a transpose is a new sparse object per call
        self.cross = WeightedCrossProducts(self.Zr) if self.Q1 else None
        self.m = self.Q1 + self.p
        self._first_positions()
        self._below_positions(self.Zr)

    def _first_positions(self) -> None:
        """Find where each row's products z0_a z0_b land among the first term's blocks."""
        k0 = self.k0
        a, b = np.meshgrid(np.arange(k0), np.arange(k0), indexing="ij")
        self._pos00 = (self.codes0[:, None] * k0 * k0 + (a * k0 + b).ravel()[None, :]).ravel()
        self._val00 = (self.z0[:, a.ravel()] * self.z0[:, b.ravel()]).ravel()
        self._pos0 = (self.codes0[:, None] * k0 + np.arange(k0)[None, :]).ravel()

    def _below_positions(self, G: sp.csr_array) -> None:
        """Find where each row's products G_ic z0_ia land in B.

        B is the Q1 x q0 array of the other terms' rows (G = Z_rest).
        """
        k0, q0 = self.k0, self.q0
        counts = np.diff(G.indptr)
        row = np.repeat(np.arange(self.n), counts)
        col0 = self.codes0[row][:, None] * k0 + np.arange(k0)[None, :]  # (nnz, k0)
        self._posB = (G.indices[:, None].astype(np.int64) * q0 + col0).ravel()
        self._valB = (G.data[:, None] * self.z0[row]).ravel()
        self._rowB = np.repeat(row, k0)

    # -- cross-products at weights w ------------------------------------------

    def _below(self, w: np.ndarray, m: int) -> np.ndarray:
        """Return [Z_rest X]'WZ0, its first ``m`` rows (C order)."""
        Q1, q0 = self.Q1, self.q0
        if not Q1:
            rest = np.zeros(0)
        else:
            rest = np.bincount(self._posB, w[self._rowB] * self._valB, minlength=Q1 * q0)
        if m == Q1:  # no X rows: the bincount's own array, no copy
            return rest.reshape(Q1, q0)
        B = np.empty((m, q0))
        B[:Q1] = rest.reshape(Q1, q0)
        if m > Q1:  # X'WZ0 level by level
            wz0 = w[:, None] * self.z0
            for j in range(self.p):
                for a in range(self.k0):
                    B[Q1 + j, a::self.k0] = np.bincount(
                        self.codes0, self.X[:, j] * wz0[:, a], minlength=self.l0
                    )
        return B

    def _dense_block(self, w: np.ndarray, m: int) -> np.ndarray:
        """[Z_rest X]'W[Z_rest X], its leading m x m block (Fortran order)."""
        Q1 = self.Q1
        A = np.empty((m, m), order="F")
        if Q1:
            A[:Q1, :Q1] = self.cross(w)
        if m > Q1:
            WX = self.X * w[:, None]
            if Q1:
                A[:Q1, Q1:] = self.ZrT @ WX
                A[Q1:, :Q1] = A[:Q1, Q1:].T
            A[Q1:, Q1:] = self.X.T @ WX
        return A

    # -- one step -----------------------------------------------------------

    def solve(self, lams: list[np.ndarray], w: np.ndarray, z: np.ndarray, joint: bool):
        """(u, β or empty, factor) of the PWLS step at weights w, working response z."""
        k0, l0 = self.k0, self.l0
        m = self.m if joint else self.Q1
        lam0, lam_rest = lams[0], lams[1:]
        # first term: M_s = λ0'A_sλ0 + I
        A00 = np.bincount(self._pos00, w[np.repeat(np.arange(self.n), k0 * k0)] * self._val00,
                          minlength=l0 * k0 * k0).reshape(l0, k0, k0) if k0 > 1 else \
            np.bincount(self.codes0, w * self.z0[:, 0] ** 2, minlength=l0).reshape(l0, 1, 1)
        if k0 == 1:
            L0 = np.sqrt(lam0[0, 0] ** 2 * A00 + 1.0)
        else:
            M = lam0.T @ A00 @ lam0
            M[:, np.arange(k0), np.arange(k0)] += 1.0
            L0 = np.linalg.cholesky(M)
        # B = [Z_rest X]'WZ0 (m x q0), then B̃ = Λ̃_r'B with λ0 on the level columns
        B = self._below(w, m)
        scale_rows(B, self.rest_bounds, lam_rest)
        # R_s = L0_s⁻¹ B̃_s' with B̃ = B (λ0 per level); kept as an (ℓ0 k0) x m
        # array F-ordered, so that BLAS takes it and its transpose without copies
        if k0 == 1:
            B *= (lam0[0, 0] / L0[:, 0, 0])[None, :]  # in place: B becomes R'
            Rt = B
            R = Rt.T[:, None, :]
        else:
            Bs = np.transpose((B.reshape(m, l0, k0) @ lam0), (1, 2, 0))  # (ℓ0, k0, m)
            R = np.linalg.solve(L0, Bs)
            Rt = np.ascontiguousarray(R.reshape(l0 * k0, m).T)
        # Schur complement S = Λ̃'AΛ̃ + diag(I_Q1, 0) - Σ R_s'R_s
        A = self._dense_block(w, m)
        scale_rows(A, self.rest_bounds, lam_rest)
        scale_cols(A, self.rest_bounds, lam_rest)
        A[np.arange(self.Q1), np.arange(self.Q1)] += 1.0
        if m:
            # A - R'R by one rank-k update (half the flops of a product)
            S = blas.dsyrk(-1.0, Rt.T, beta=1.0, c=A, trans=1, lower=1, overwrite_c=1)
            LS, info = lapack.dpotrf(S, lower=1, clean=1, overwrite_a=1)
            if info != 0:
                return None
        else:
            LS = np.zeros((0, 0))
        # right-hand sides
        wz = w * z
        c0 = np.bincount(self._pos0, (wz[:, None] * self.z0).ravel(), minlength=self.q0)
        c0 = (c0.reshape(l0, k0) @ lam0)  # λ0' c0_s per level (row vectors)
        cr = np.concatenate([self.ZrT @ wz, self.X.T @ wz if m > self.Q1 else []])
        scale_rows(cr[:, None], self.rest_bounds, lam_rest)
        # forward: y0 = L0⁻¹ c0; y_r = c_r - Σ R_s' y0_s; solve S x = y_r
        y0 = c0 / L0[:, :, 0] if k0 == 1 else np.linalg.solve(L0, c0[:, :, None])[:, :, 0]
        yr = cr - Rt @ y0.ravel()
        x = lapack.dpotrs(LS, yr, lower=1)[0] if m else np.zeros(0)
        # back: u0_s = L0_s⁻ᵀ(y0_s - R_s x)
        t = y0 - (Rt.T @ x).reshape(l0, k0) if m else y0
        u0 = t / L0[:, :, 0] if k0 == 1 else np.linalg.solve(np.transpose(L0, (0, 2, 1)), t[:, :, None])[:, :, 0]
        u = np.concatenate([u0.ravel(), x[: self.Q1]])
        beta = x[self.Q1 :] if joint else np.zeros(0)
        return u, beta, BlockedFactor(L0, R, LS, self.Q1)
