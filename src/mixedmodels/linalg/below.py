"""The rows of the augmented system below its first term, stored once, and the factor's there.

B = [Z_1 .. Z_K X y]'Z_0, the rows of the augmented system below its first
term, is stored once (dense or sparse); the rows of the factor there are
applied through that storage without being formed (see
:mod:`mixedmodels.linalg.augmented`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas, solve_triangular

from mixedmodels.linalg.crossproducts import as_csc, fill_rows

__all__ = ["DenseBelow", "RowsBelow", "SparseBelow"]


def _right_blocks(
    X: np.ndarray, bounds: list[tuple[int, int]], lams: list[np.ndarray]
) -> np.ndarray:
    """Return X blockdiag(I ⊗ λ_j), computed in place over the column ranges ``bounds``."""
    n = X.shape[0]
    for (start, stop), lam in zip(bounds, lams):
        k = lam.shape[0]
        if k == 1:
            X[:, start:stop] *= lam[0, 0]
        else:
            X[:, start:stop] = (X[:, start:stop].reshape(n, -1, k) @ lam).reshape(n, -1)
    return X


def _transform_levels(X: np.ndarray, F: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Set rows (s, b) of ``out`` to Σ_a F_s[a, b] X[(s, a), :], and return ``out``.

    That is the columns of a chunk of levels of B (here as rows, X (c k0, n))
    times blockdiag(F_s).
    """
    c, k0 = F.shape[0], F.shape[1]
    if k0 == 1:
        return np.multiply(X, F[:, 0], out=out)
    n = X.shape[1]
    np.einsum("lan,lab->lbn", X.reshape(c, k0, n), F, out=out.reshape(c, k0, n))
    return out


class DenseBelow:
    """B = [Z_1 .. Z_K X y]'Z_0 stored dense, transposed.

    ``Bt`` is (q0, N), one row per column of the first term, level-major.
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
            fill_rows(self.Bt, as_csc(b), start)
            start += b.shape[0]
        self.Bt[:, Q1:] = Axy0.T
        self.nlev = q0 // k0
        # levels per chunk: a chunk of W is about chunk_bytes
        self.step = max(1, chunk_bytes // (8 * self.N * k0))
        self._buf = np.empty(min(self.step, self.nlev) * k0 * self.N)

    def chunks(self, F: np.ndarray, ncols: int):
        """Yield chunks (c k0, ncols) of (B[:ncols] blockdiag(F_s))' over the levels.

        F is (ℓ0, k0, k0): row (s, b) is Σ_a F_s[a, b] B[:ncols, (s, a)]. Each
        chunk comes as ``(s0, s1, W)``, its levels s0 to s1 - 1 and W a view of
        one reused buffer, valid until the next.
        """
        k0 = self.k0
        for s0 in range(0, self.nlev, self.step):
            s1 = min(s0 + self.step, self.nlev)
            X = self.Bt[s0 * k0 : s1 * k0, :ncols]
            W = self._buf[: X.size].reshape(X.shape)
            yield s0, s1, _transform_levels(X, F[s0:s1], W)

    def subtract_update(self, S: np.ndarray, F: np.ndarray) -> None:
        """Compute S -= B blockdiag(F_s F_s') B' on the upper triangle of S (N x N, C order).

        One syrk per chunk, straight into S (S' is the Fortran-ordered lower
        triangle BLAS writes).
        """
        St = S.T
        for _, _, W in self.chunks(F, self.N):
            out = blas.dsyrk(-1.0, W.T, beta=1.0, c=St, trans=0, lower=1, overwrite_c=1)
            if not np.shares_memory(out, St):  # f2py copied (it should not: St is Fortran)
                St[...] = out

    def weighted_trace(self, P: np.ndarray, F: np.ndarray, sub: int) -> np.ndarray:
        """Return Σ_s V_s'PV_s, (k0, k0), for V_s = B_s F_s on the leading ``sub`` rows.

        P is (sub, sub) symmetric.

        For k0 = 1 that is ⟨P, G⟩ with G = Σ_s V_s V_s' accumulated by syrk
        (half the flops of forming PV); otherwise Σ over chunks of V'(PV).
        """
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
        """Return B'w for w of length N."""
        return self.Bt @ w

    def copy(self) -> "DenseBelow":
        """Return a copy sharing B (read-only) with a workspace of its own."""
        new = copy.copy(self)
        new._buf = np.empty_like(self._buf)
        return new

    def with_response(self, Axy0: np.ndarray) -> "DenseBelow":
        """Return B of the same design with another response.

        ``Axy0`` is the new [X y]'Z_0, of which only the y row differs (B's last
        column).
        """
        new = self.copy()
        new.Bt = self.Bt.copy()
        new.Bt[:, -1] = Axy0[-1]
        return new


class SparseBelow:
    """B's rows below the first term, the random-effects rows sparse.

    They are the engine's CSC array, not copied; the class gives the two
    chunked products a factor's :class:`RowsBelow` needs.
    """

    def __init__(
        self, B_re: sp.csc_array, Axy0: np.ndarray, k0: int, chunk_bytes: int = 1 << 25
    ):
        self.B_re, self.Axy0, self.k0 = B_re, Axy0, k0
        self.Q1 = B_re.shape[0]
        self.N = self.Q1 + Axy0.shape[0]
        self.nlev = B_re.shape[1] // k0
        self.step = max(1, chunk_bytes // (8 * max(self.Q1, 1) * k0))

    def chunks(self, F: np.ndarray, ncols: int):
        """Yield chunks as :meth:`DenseBelow.chunks`, for ``ncols`` <= Q1 (random-effects rows)."""
        k0 = self.k0
        for s0 in range(0, self.nlev, self.step):
            s1 = min(s0 + self.step, self.nlev)
            X = self.B_re[:, s0 * k0 : s1 * k0].toarray()[:ncols].T
            yield s0, s1, _transform_levels(X, F[s0:s1], np.empty(X.shape))

    def t_dot(self, w: np.ndarray) -> np.ndarray:
        """Return B'w for w of length N."""
        return self.B_re.T @ w[: self.Q1] + self.Axy0.T @ w[self.Q1 :]

    def with_response(self, Axy0: np.ndarray) -> "SparseBelow":
        """Return B of the same design with another response (the new [X y]'Z_0).

        The random-effects rows are shared.
        """
        new = copy.copy(self)
        new.Axy0 = Axy0
        return new


@dataclass
class RowsBelow:
    """L[re, 0] = Λ_r' B_re blockdiag(F_s), F_s = λ0 L00_s⁻ᵀ, never formed.

    B is the system's (shared) storage, dense or sparse, and the two products a
    factor needs are taken chunk by chunk (a copy would be as large as B).
    """

    below: "DenseBelow | SparseBelow"
    F: np.ndarray  # (ℓ0, k0, k0)
    bounds: list[tuple[int, int]]  # index range of each term after the first
    lams: list[np.ndarray]  # their λ

    def t_dot(self, u: np.ndarray) -> np.ndarray:
        """Return L[re, 0]'u = blockdiag(F_s)' B_re' Λ_r u."""
        v = np.zeros(self.below.N)
        for (start, stop), lam in zip(self.bounds, self.lams):
            k = lam.shape[0]
            v[start:stop] = (u[start:stop].reshape(-1, k) @ lam.T).ravel()
        y = self.below.t_dot(v).reshape(-1, self.F.shape[1])
        return np.einsum("lab,la->lb", self.F, y).ravel()

    def condvar_extra(self, L11: np.ndarray, L00inv: np.ndarray) -> np.ndarray:
        """Return the part of the first term's conditional variances through the other terms.

        That is Σ_r W[r, (s, j)] W[r, (s, k)] per level s, (ℓ0, k0, k0), for
        W = L11⁻¹ L[re, 0] blockdiag(L00_s⁻¹).
        """
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
