"""The compiled PIRLS steps of a GLMM whose random-effects terms are all scalar.

The kernels are :mod:`mixedmodels.linalg.kernels.glmm_kernels`: the
engine's steps in a few loops over the rows, for the families and links
whose ``kernel_code`` the kernels know.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.linalg import blas, lapack

from mixedmodels.families import Family
from mixedmodels.linalg.pwls import BlockedFactor
from mixedmodels.models.glmm.modes import (
    PIRLS_FAILURES,
    PIRLS_MAXIT,
    STEP_HALVINGS,
    Modes,
    PirlsError,
    c_array,
)
from mixedmodels.spec.frame import ModelFrame

if TYPE_CHECKING:
    from mixedmodels.models.glmm.engine import Engine

__all__ = ["FUSED_MAX_BLOCK", "SYRK_DENSITY", "CompiledTerms"]

# compiled PIRLS runs its whole loop in one call when the Schur block has at
# most this many rows (its Cholesky is then a plain loop, cheaper than LAPACK's call)
FUSED_MAX_BLOCK = 64
# Density of the first term's rows R from which the Schur downdate of the
# stepwise (not fused) compiled PIRLS is BLAS syrk rather than a loop over
# R's nonzeros (measured crossover on 10,000 x 500 levels: ~14%).
SYRK_DENSITY = 0.14


class CompiledTerms:
    """The compiled PIRLS steps for a model whose random-effects terms are all scalar.

    The steps are :mod:`mixedmodels.linalg.kernels.glmm_kernels`, for a family
    and link they support. The object holds each term's codes and z values
    as rows of two arrays, and where its modes sit in u and in the Schur
    block.
    """

    def __init__(self, frame: ModelFrame, family: Family):
        from mixedmodels.linalg.kernels import glmm_kernels as gk

        terms = frame.terms
        self.codes = np.ascontiguousarray(np.stack([t.codes for t in terms]).astype(np.int64))
        self.zv = np.ascontiguousarray(np.stack([t.z[:, 0] for t in terms]).astype(float))
        sizes = np.array([t.nlevels for t in terms], dtype=np.int64)
        self.l0 = int(sizes[0])
        # Schur-block columns of terms 1.. (term 0 has none) and offsets in u
        self.offs = np.zeros(len(terms), dtype=np.int64)
        self.offs[1:] = np.cumsum(np.concatenate([[0], sizes[1:-1]]))
        self.ubase = np.concatenate([[0], self.l0 + self.offs[1:]]).astype(np.int64)
        self.Q1 = int(sizes[1:].sum())
        # the kernels' numbers of the link and the variance function
        self.link = family.link.kernel_code
        self.fam = family.kernel_code
        # C order for every array the kernels take: another layout would make
        # Numba compile (seconds) another specialisation
        self.X = np.ascontiguousarray(frame.fixed.X, dtype=float)
        self.XT = np.ascontiguousarray(self.X.T)  # X'WX from contiguous columns
        self.no_x = np.zeros((len(terms[0].codes), 0))
        self.no_xt = np.zeros((0, len(terms[0].codes)))
        self.assemble, self.kernel_update, self.kernel_pirls = gk.kernels()
        self.kernel_sums = gk.weighted_sums()
        self.kernel_scaled, self.kernel_eliminate = gk.rescaling()
        # the kernel's "no sums given" (the same array types, so no other specialisation)
        self._no_sums = (np.zeros(0), np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)), np.zeros(0))
        self._no_beta = np.zeros(0)

    @classmethod
    def build(cls, frame: ModelFrame, family: Family) -> "CompiledTerms | None":
        """Return the compiled steps of the model, or None where they do not apply.

        They do not apply to a term not scalar, a family or link without
        kernels, or when the kernels are not loaded or switched off
        (``MIXEDMODELS_NUMBA=0``).
        """
        from mixedmodels.linalg.kernels import glmm_kernels as gk

        if not frame.terms or any(t.k != 1 for t in frame.terms):
            return None
        if not gk.supports(family, frame.nobs):
            return None
        return cls(frame, family)

    def solve(self, e: "Engine", lams, eta, mu, offset, joint: bool):
        """Take one PWLS step at the working weights of (η, μ); return (u, β, factor).

        None where the system is not positive definite.
        """
        lam = self.lam_values(lams)
        X, XT = (self.X, self.XT) if joint else (self.no_x, self.no_xt)
        L0, R, S, y0, yr = self.assemble(
            self.codes, self.zv, lam, self.offs, X, XT, c_array(eta), c_array(mu), c_array(e.y), c_array(e.wt), c_array(offset),
            self.link, self.fam, self.l0, self.Q1, False,
        )
        return self._solve_eliminated(L0, R, S, y0, yr, joint)

    def solve_scaled(self, unit: tuple, lams, beta: np.ndarray | None, joint: bool):
        """Take the step of :meth:`solve` from the sums of :meth:`unit_sums`.

        The weights are those the sums were computed at (the stage's start);
        ``beta`` is the fixed β of the offset, when not ``joint``.
        """
        beta_arr = self._no_beta if joint or beta is None else c_array(beta)
        L0, c0, R, S, yr = self.kernel_scaled(unit, self.lam_values(lams), self.offs, self.Q1, beta_arr, joint)
        return self._solve_eliminated(*self.kernel_eliminate(L0, c0, R, S, yr, self.Q1, False), joint)

    def _solve_eliminated(self, L0, R, S, y0, yr, joint: bool):
        """Return the step's solution from the system with the first term eliminated.

        S is not yet downdated by R'R.
        """
        self._downdate(R, S)
        Q1 = self.Q1
        if len(yr):
            # S holds the upper triangle in C order: S.T is its lower in Fortran order
            LS, info = lapack.dpotrf(S.T, lower=1, clean=1, overwrite_a=1)
            if info != 0:
                return None
            x = lapack.dpotrs(LS, yr, lower=1)[0]
            u0 = (y0 - R @ x) / L0
        else:
            LS, x, u0 = np.zeros((0, 0)), yr, y0 / L0
        u = np.concatenate([u0, x[:Q1]])
        beta = x[Q1:] if joint else np.zeros(0)
        return u, beta, BlockedFactor(L0[:, None, None], R[:, None, :], LS, Q1)

    @staticmethod
    def _downdate(R: np.ndarray, S: np.ndarray) -> None:
        """Downdate S -= R'R in place, on S's upper triangle (C order).

        BLAS syrk unless R is sparse enough for its nonzeros alone to cost
        less (below ~14% the compiled loop over them wins; numba's own product
        would be a gemm, twice syrk's work, hence the assembly's 25%).
        """
        if not R.size:
            return
        sample = R[:: max(1, R.shape[0] // 256)]  # a few hundred rows tell the density
        if np.count_nonzero(sample) >= SYRK_DENSITY * sample.size:
            # R.T and S.T are Fortran-order views: S.T's lower triangle is S's upper
            out = blas.dsyrk(-1.0, R.T, beta=1.0, c=S.T, trans=0, lower=1, overwrite_c=1)
            if not np.may_share_memory(out, S):
                S.T[...] = out
        else:
            from mixedmodels.linalg.kernels import glmm_kernels as gk

            gk.sparse_downdate()(R, S)

    @staticmethod
    def lam_values(lams) -> np.ndarray:
        """Return λ of every (scalar) term as one float array.

        The λ's are given as 1 x 1 arrays or, from
        :meth:`Engine.scalar_lambdas`, already as that array.
        """
        if isinstance(lams, np.ndarray) and lams.ndim == 1:
            # writable: a read-only array (θ from the optimizer) would make
            # Numba compile every kernel a second time (12 s)
            return np.require(lams, dtype=float, requirements=["C", "W"])
        return np.array([float(l[0, 0]) for l in lams])

    def fused(self, joint: bool) -> bool:
        """Return whether the whole PIRLS loop runs compiled (a small Schur block)."""
        return self.Q1 + (self.X.shape[1] if joint else 0) <= FUSED_MAX_BLOCK

    def unit_sums(self, e: "Engine", eta_start, mu_start) -> tuple:
        """Return the system's sums at (η, μ) with unit λ, X and the model's offset.

        They are ``glmm_numba.weighted_sums``
        (:mod:`mixedmodels.linalg.kernels.glmm_numba`): the first PIRLS step's
        system at any λ (and β) from a rescaling (``glmm_numba.scaled_sums``).
        """
        return self.kernel_sums(
            self.codes, self.zv, np.ones(len(self.codes)), self.offs, self.X, self.XT, c_array(eta_start),
            c_array(mu_start), c_array(e.y), c_array(e.wt), c_array(e.offset), self.link, self.fam, self.l0, self.Q1,
        )

    def pirls(
        self, e: "Engine", lams, eta_start, mu_start, offset, joint: bool, tol: float,
        unit: tuple | None = None, beta: np.ndarray | None = None,
    ) -> "Modes":
        """Run :meth:`Engine.pirls` in one compiled call (``glmm_numba.pirls``).

        ``unit`` is :meth:`unit_sums` at ``eta_start`` for the first step, with
        ``beta`` the fixed β that ``offset`` holds (when not ``joint``).
        """
        lam = self.lam_values(lams)
        X, XT = (self.X, self.XT) if joint else (self.no_x, self.no_xt)
        if unit is None:
            unit, beta = self._no_sums, None
        status, u, b, eta, mu, pdev, it, L0, R, LS, ldl2 = self.kernel_pirls(
            self.codes, self.zv, lam, self.offs, self.ubase, X, XT, c_array(e.y), c_array(e.wt), c_array(offset),
            c_array(eta_start), c_array(mu_start), self.link, self.fam, self.l0, self.Q1,
            float(tol), PIRLS_MAXIT, STEP_HALVINGS, float(e.deviance_constant),
            unit, self._no_beta if joint or beta is None else c_array(beta),
        )
        if status:
            raise PirlsError(PIRLS_FAILURES[status])
        factor = BlockedFactor(L0[:, None, None], R[:, None, :], LS, self.Q1, float(ldl2))
        return Modes(u, b, eta, mu, factor, float(pdev), int(it))

    def update(self, e: "Engine", lams, u, b, offset):
        """Return (η, μ, deviance) at the modes ``u`` and β ``b``.

        The deviance lacks its μ-free part (the engine's ``deviance_constant``).
        """
        lam = self.lam_values(lams)
        X = self.X if len(b) else self.no_x
        n = len(e.y)
        eta, mu = np.empty(n), np.empty(n)
        dev = self.kernel_update(
            self.codes, self.zv, lam, self.ubase, X, c_array(u), c_array(b), c_array(offset), c_array(e.y), c_array(e.wt),
            self.link, self.fam, eta, mu,
        )
        return eta, mu, dev
