"""The factor L of the augmented system at one θ, and the inverse of a Cholesky factor's block.

:class:`Factor` gives the objective's pieces, β, the modes and their
conditional variances; :func:`inverse_from_factor` the inverse of a leading
block of a Cholesky factor (what the gradient reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas, lapack, solve_triangular

from mixedmodels.linalg.below import RowsBelow
from mixedmodels.linalg.kernels import lmm_kernels as _kernels

__all__ = [
    "SINGLE_PRECISION_INVERSE_ROWS",
    "SINGLE_PRECISION_RESIDUAL",
    "Factor",
    "inverse_from_factor",
    "last_row_solution",
]


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
    """Return the lower triangle of (L₁L₁')⁻¹ for L₁ = L[:sub, :sub] (all of L by default).

    L is lower triangular (its upper triangle is not read). The inverse's lower
    triangle comes as float64, C or Fortran order (its upper triangle holds L's).

    Only the gradient of the objective uses this inverse (the objective itself
    comes from L), so for a large L₁ it is computed in single precision
    (LAPACK spotri, about twice as fast as dpotri) from the double-precision
    factor and kept when its residual along a random direction is below
    ``SINGLE_PRECISION_RESIDUAL`` (one product and two triangular products in
    double precision): the gradient then has a relative error near 1e-6, far
    below the optimizer's gradient tolerance. ``single_min_rows`` overrides
    ``SINGLE_PRECISION_INVERSE_ROWS``. With ``keep_single`` (only where the
    compiled loops are in use: the residual's product is one) an accepted
    single-precision inverse is returned as it is, float32, for callers that
    read it through compiled loops: no double copy of its size.
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
    """Return ‖L₁L₁'Zv - v‖/‖v‖: how far Z is from the inverse of L₁L₁' in practice.

    Z = (L₁L₁')⁻¹ is given by its lower triangle, L₁ is the leading block of L
    of Z's size, and v a fixed pseudo-random vector. The triangular products run on all of L with
    v padded by zeros (their leading entries are L₁'s; a contiguous L is not
    copied).
    """
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
        """Return log det(Λ'Z'ZΛ + I)."""
        d0 = np.diagonal(self.L00, axis1=1, axis2=2)
        d1 = np.diag(self.Lrr)[: self.Q1]
        return 2.0 * (np.log(d0).sum() + np.log(d1).sum())

    def logdet_x(self) -> float:
        """Return log det(R_X'R_X), the REML correction."""
        d = np.diag(self.Lrr)[self.Q1 : self.Q1 + self.p]
        return 2.0 * np.log(d).sum()

    def pwrss(self) -> float:
        """Return the penalised weighted residual sum of squares r²."""
        return float(self.Lrr[-1, -1] ** 2)

    def LX(self) -> np.ndarray:
        """Return the lower factor L_X of X'V⁻¹X / σ² (so vcov β = σ² (L_X L_X')⁻¹)."""
        s = self.Q1
        return self.Lrr[s : s + self.p, s : s + self.p]

    def solve(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Return β and the spherical random effects u (one (ℓ, k) array per term)."""
        x = last_row_solution(self.Lrr)
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
        """Return the diagonal blocks of (L_Z L_Z')⁻¹ per term: (ℓ, k, k) stacks.

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


def last_row_solution(L: np.ndarray) -> np.ndarray:
    """Return x with L1'x = c, for L = [[L1, 0], [c', d]] lower triangular.

    It comes from L'z = e_N on the whole of L (x = -d z[:-1]), so that no copy
    of L1 is made.
    """
    e = np.zeros(L.shape[0])
    e[-1] = 1.0
    z = blas.dtrsv(L, e, lower=1, trans=1)
    return -L[-1, -1] * z[:-1]
