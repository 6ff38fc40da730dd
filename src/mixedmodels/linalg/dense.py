"""The whole augmented system as one dense block: the engine of small models.

When the random effects number a few hundred, an evaluation costs the number of
array operations, not their size, so this system keeps them few: one copy of
the cross-product matrix, Λ applied to its rows then its columns (the row-scaled
copy is what the gradient needs), one Cholesky factorization, and for the
gradient one triangular inverse and one matrix product for all terms.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas, lapack

from mixedmodels.linalg.factor import inverse_from_factor
from mixedmodels.support.threads import blas_threads

__all__ = ["DenseSystem", "DenseFactor", "scale_cols", "scale_rows"]

# Build [Z X y]'[Z X y] from a dense [Z X y] when it has at most this many
# entries (one matrix product); above, from sparse Z.
_DENSE_BUILD_ENTRIES = 4_000_000


def scale_rows(S: np.ndarray, bounds, lams) -> None:
    """Compute S <- Λ'S in place, Λ = blockdiag(I ⊗ λ_j) over the index ranges ``bounds``."""
    ncol = S.shape[1]
    for (start, stop), lam in zip(bounds, lams):
        k = lam.shape[0]
        if k == 1:
            S[start:stop] *= lam[0, 0]
        else:
            block = S[start:stop].reshape(-1, k, ncol)
            S[start:stop] = np.matmul(lam.T, block).reshape(stop - start, ncol)


def scale_cols(S: np.ndarray, bounds, lams) -> None:
    """Compute S <- SΛ in place (Λ as in :func:`scale_rows`)."""
    nrow = S.shape[0]
    for (start, stop), lam in zip(bounds, lams):
        k = lam.shape[0]
        if k == 1:
            S[:, start:stop] *= lam[0, 0]
        else:
            S[:, start:stop] = (S[:, start:stop].reshape(nrow, -1, k) @ lam).reshape(nrow, -1)


@dataclass
class DenseFactor:
    """The Cholesky factor of the whole augmented system, one dense block."""

    lam: list[np.ndarray]
    L: np.ndarray  # lower factor of [Λ'Z'ZΛ + I, ...; X ..., y ...]
    PhiA: np.ndarray  # Λ̃'A[:, :q]: rows of the cross-products times Λ (X, y rows as is)
    q: int
    p: int
    bounds: list[tuple[int, int]]  # index range of each term
    ks: list[int]
    lapack_threads: int | None = None  # BLAS threads inside the inverse

    def logdet_re(self) -> float:
        """Return log det(Λ'Z'ZΛ + I)."""
        return 2.0 * float(np.log(np.diagonal(self.L)[: self.q]).sum())

    def logdet_x(self) -> float:
        """Return log det(R_X'R_X), the REML correction."""
        return 2.0 * float(np.log(np.diagonal(self.L)[self.q : self.q + self.p]).sum())

    def pwrss(self) -> float:
        """Return the penalised weighted residual sum of squares r²."""
        return float(self.L[-1, -1] ** 2)

    def LX(self) -> np.ndarray:
        """Return the lower factor L_X of X'V⁻¹X / σ² (so vcov β = σ² (L_X L_X')⁻¹)."""
        return self.L[self.q : self.q + self.p, self.q : self.q + self.p]

    def solve(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Return β and the spherical random effects u (one (ℓ, k) array per term)."""
        e = np.zeros(self.L.shape[0])
        e[-1] = 1.0
        z = blas.dtrsv(self.L, e, lower=1, trans=1)  # L'z = e_N
        x = -self.L[-1, -1] * z[:-1]
        us = [x[a:b].reshape(-1, k) for (a, b), k in zip(self.bounds, self.ks)]
        return x[self.q :], us

    def inverse(self, sub: int) -> np.ndarray:
        """Return (L L')⁻¹ of the leading ``sub`` rows, both triangles."""
        if sub == 0:
            return np.zeros((0, 0))
        with blas_threads(self.lapack_threads):
            low = inverse_from_factor(self.L[:sub, :sub])
        inv = low + low.T  # L was factored with clean=1: its upper triangle is zero
        inv.ravel()[:: sub + 1] *= 0.5
        return inv

    def diagonal_blocks(self, inv: np.ndarray) -> list[np.ndarray]:
        """Return the per-level k x k diagonal blocks of the symmetric ``inv``, per term."""
        out = []
        for (a, b), k in zip(self.bounds, self.ks):
            block = inv[a:b, a:b].reshape((b - a) // k, k, (b - a) // k, k)
            out.append(np.einsum("lalb->lab", block))
        return out

    def condvar_u(self) -> list[np.ndarray]:
        """Return the diagonal blocks of (L_Z L_Z')⁻¹ per term: (ℓ, k, k) stacks."""
        return self.diagonal_blocks(self.inverse(self.q))


class DenseSystem:
    """The whole augmented system as one dense matrix A = [Z X y]'[Z X y].

    Same interface as :class:`mixedmodels.linalg.augmented.AugmentedSystem`: ``factor``,
    ``solve``, ``gradient_parts``, ``inverse_block_sums``, ``N`` and ``Q1``.
    """

    def __init__(self, terms, Xy: np.ndarray):
        self.q = sum(t.q for t in terms)
        self.p = Xy.shape[1] - 1
        self.A = _cross_products(terms, Xy, self.q)
        self.N = self.A.shape[0]  # size of the dense block
        self.Q1 = self.q  # the dense block starts at the first random effect
        edges = np.cumsum([0] + [t.q for t in terms])
        self.bounds = [(int(edges[i]), int(edges[i + 1])) for i in range(len(terms))]
        self.ks = [t.k for t in terms]
        self.lapack_threads: int | None = None  # BLAS threads inside the factorisations

    @property
    def dense_size(self) -> int:
        """The size by which BLAS threads are chosen: the whole system's."""
        return self.N

    def copy(self) -> "DenseSystem":
        """Return a copy sharing the (read-only) cross-products, without the thread setting.

        Two models can then use the two independently.
        """
        new = copy.copy(self)
        new.lapack_threads = None
        return new

    def with_response(self, v: np.ndarray) -> "DenseSystem":
        """Return the system of the same design with another response.

        ``v`` is the new [Z X y]'Wy in the system's order (terms, X, y); only A's
        last row and column change.
        """
        new = self.copy()
        A = self.A.copy()
        A[:, -1] = v
        A[-1, :] = v
        new.A = A
        return new

    def factor(self, lams: list[np.ndarray], rows: bool = False, keep: bool = False):
        """Return the factor of Λ̃'AΛ̃ + diag(I_q, 0); None if not positive definite.

        ``rows`` and ``keep`` are accepted for the interface of
        :meth:`AugmentedSystem.factor`: the dense factor is always whole and owns
        its arrays.
        """
        S = self.A.copy()
        scale_rows(S, self.bounds, lams)
        PhiA = S[:, : self.q].copy()
        scale_cols(S, self.bounds, lams)
        S.ravel()[: self.q * (self.N + 1) : self.N + 1] += 1.0
        with blas_threads(self.lapack_threads):
            L, info = lapack.dpotrf(S, lower=1, overwrite_a=1, clean=1)
        if info != 0:
            return None
        return DenseFactor(lams, L, PhiA, self.q, self.p, self.bounds, self.ks, self.lapack_threads)

    def solve(self, f: DenseFactor) -> tuple[np.ndarray, list[np.ndarray]]:
        """Return β and the spherical random effects u of ``f`` (:meth:`DenseFactor.solve`)."""
        return f.solve()

    def gradient_parts(
        self, f: DenseFactor, sub: int, beta: np.ndarray, us: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return per term K = Σ_l [Ω⁻¹Φ'Z_j]_(l,l) and R = Σ_l (Z_j'r)_l u_l'.

        Both without inverting λ: Ω is M (``sub = q``, ML) or the system with X
        (REML), Φ = [ZΛ X] restricted alike, r = y - Xβ - ZΛu.
        """
        q = self.q
        inv, Phi = f.inverse(sub)[:q], f.PhiA[:sub]
        b_all = np.concatenate([(U @ lam.T).ravel() for U, lam in zip(us, f.lam)])
        A = self.A
        zres = A[:q, -1] - A[:q, :q] @ b_all - A[:q, q : q + self.p] @ beta
        out = []
        for (a, b), k, U in zip(self.bounds, self.ks, us):
            # only the level-diagonal k x k blocks of (Ω⁻¹Φ'Z)[a:b, a:b], summed:
            # Σ_l inv_l Φ_l as one (k, ℓ·sub) @ (ℓ·sub, k) product, not the q x q one
            nlev = (b - a) // k
            left = inv[a:b].reshape(nlev, k, sub).transpose(1, 0, 2).reshape(k, nlev * sub)
            right = Phi[:, a:b].reshape(sub, nlev, k).transpose(1, 0, 2).reshape(nlev * sub, k)
            out.append((left @ right, zres[a:b].reshape(-1, k).T @ U))
        return out

    def inverse_block_sums(self, f: DenseFactor, sub: int) -> list[np.ndarray]:
        """Return per term the sum over levels of the diagonal blocks of an inverse.

        The inverse is that of the leading ``sub`` rows (``sub = Q1`` for M,
        ``Q1 + p`` for REML's Ω).
        """
        return [b.sum(axis=0) for b in f.diagonal_blocks(f.inverse(sub))]


def _cross_products(terms, Xy: np.ndarray, q: int) -> np.ndarray:
    """Return a = [Z X y]'[Z X y], dense; through a dense [Z X y] when that is small."""
    n, m = Xy.shape
    if n * (q + m) <= _DENSE_BUILD_ENTRIES:
        W = np.zeros((n, q + m))
        start, rows = 0, np.arange(n)[:, None]
        for t in terms:
            W[rows, start + t.codes[:, None] * t.k + np.arange(t.k)] = t.z
            start += t.q
        W[:, q:] = Xy
        return W.T @ W
    Z = sp.hstack([t.sparse() for t in terms], format="csr")
    ZtXy = np.asarray(Z.T @ Xy)
    return np.block([[(Z.T @ Z).toarray(), ZtXy], [ZtXy.T, Xy.T @ Xy]])
