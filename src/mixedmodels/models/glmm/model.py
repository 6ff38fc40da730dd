"""Generalized linear mixed models: lme4's ``glmer``.

For a relative covariance factor Λ(θ) and fixed effects β, the conditional
modes ũ of the spherical random effects minimise the penalised deviance

    pdev(u) = Σ devresid(y, μ(u)) + ‖u‖²,   η = offset + Xβ + ZΛu,  μ = g⁻¹(η),

found by penalised iteratively reweighted least squares (PIRLS): each step
solves the weighted least-squares problem of the working response with the
working weights w = prior weight · (dμ/dη)² / V(μ). lme4's Laplace
approximation of -2 log L is then

    aic(y, μ̃) + ‖ũ‖² + log det(Λ'Z'WZΛ + I),

with R's ``family$aic`` (-2 × the conditional log-likelihood, constants
included), so numbers compare with R directly. ``nagq = 0`` lets PIRLS find β
together with u (one optimisation over θ); ``nagq = 1`` (Laplace) optimises
(θ, β) after that stage, as lme4 does by default; ``nagq > 1`` replaces the
Laplace approximation by adaptive Gauss-Hermite quadrature, for a single
scalar random-effects term.

lme4's quadrature deviance drops the saturated log-likelihood that ``aic``
holds (so its log-likelihood is shifted for binomial counts, lme4 issue 161);
here it is added back, so that ``nagq = 25`` gives the marginal log-likelihood
itself, on the same scale as the Laplace one.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special
from scipy.linalg import blas, lapack, solve_triangular

from mixedmodels.exceptions import (
    ConvergenceWarning,
    DataError,
    FamilyError,
    ModelSpecError,
    PredictionError,
    SeparationWarning,
)
from mixedmodels.families import Family, get_family
from mixedmodels.linalg.pwls import BlockedFactor, BlockedSystem, term_matrix
from mixedmodels.models.base import SINGULAR_TOL, RandomEffectsModel, consecutive_slices
from mixedmodels.optim.minimize import OptimizerRecord, ThetaScaling, minimize_theta
from mixedmodels.spec.formula import parse_formula, require_random
from mixedmodels.spec.frame import ModelFrame, build_model_frame
from mixedmodels.spec.random import search_scales
from mixedmodels.support.arguments import check_na_action, r_argument_hints
from mixedmodels.support.newdata import include_random as _include_random
from mixedmodels.support.progress import FitProgress
from mixedmodels.support.threads import auto_thread_plan, blas_threads
from mixedmodels.support.warnings import warn_caller

__all__ = ["GeneralizedLinearMixedModel", "glmer", "ConvergenceCheck"]

# lme4's PIRLS iteration limit and step halvings (its ``maxit``, ``maxstephalfit``).
PIRLS_MAXIT = 100
STEP_HALVINGS = 20
# lme4's checkConv: a scaled gradient above this draws a convergence warning.
GRADIENT_TOL = 2e-3
# lme4's deriv12 step for the finite-difference Hessian over (θ, β).
HESSIAN_STEP = 1e-4
# Initial trust-region radius of the second (θ, β) search, relative to the scale.
POLISH_STEP = 1e-3
# Newton on (θ, β): at most this many steps, stopping when g'H⁻¹g (twice the
# decrease still to come) is below 1e-7 or, for large deviances, 1e-12 of it.
NEWTON_MAXIT = 8
# Density of the first term's rows R from which the Schur downdate of the
# stepwise (not fused) compiled PIRLS is BLAS syrk rather than a loop over
# R's nonzeros (measured crossover on 10,000 x 500 levels: ~14%).
SYRK_DENSITY = 0.14
NEWTON_DECREMENT = 1e-7
NEWTON_DECREMENT_REL = 1e-12
# PIRLS tolerance of the converged modes (see GeneralizedLinearMixedModel._modes)
CONVERGED_PIRLS_TOL = 1e-10
# offset of the fit's deviance from that one below which Newton's optimum is
# kept without a look beyond (see GeneralizedLinearMixedModel._leave_plateau)
PLATEAU_OFFSET = 1e-7
# restarts of Newton past such plateaus, at most
PLATEAU_ESCAPES = 3
# Initial trust region of the (θ, β) search: for θ, and per standard error of β.
STAGE_TWO_THETA_STEP = 0.02
STAGE_TWO_BETA_STEP = 0.2
# the finite-difference probes go to worker threads only when an evaluation
# takes longer than this (cbpp's 0.1 ms evaluations were slower on threads)
PARALLEL_PROBE_SECONDS = 5e-4


class PirlsError(DataError):
    """PIRLS could not find the conditional modes (the model is degenerate there)."""


_PIRLS_FAILURES = {
    1: "the penalised weighted least-squares system is not positive definite",
    2: "PIRLS produced a non-finite deviance",
    3: "PIRLS step halving failed to reduce the deviance",
}
# the evaluation counter of the second stage (whose probes may run on threads)
_COUNT_LOCK = threading.Lock()
# compiled PIRLS runs its whole loop in one call when the Schur block has at
# most this many rows (its Cholesky is then a plain loop, cheaper than LAPACK's call)
FUSED_MAX_BLOCK = 64


# ---------------------------------------------------------------------------- engine


@dataclass
class _Modes:
    """The state PIRLS leaves at (θ, β): modes, linear predictor, mean and
    the factor of its last step's penalised system."""

    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    factor: BlockedFactor  # of the last PWLS step (at the weights it started from)
    pdev: float
    iterations: int

    def ldL2(self) -> float:
        return self.factor.ldL2()


class _Engine:
    """PIRLS and the Laplace / quadrature deviance of one model frame."""

    def __init__(self, frame: ModelFrame, family: Family, y, n, prior_weights, offset):
        self.family = family
        self.y, self.n, self.wt = y, n, prior_weights
        self.offset = offset
        self.X = frame.fixed.X
        self.p = self.X.shape[1]
        self._terms = frame.terms
        self.q = int(sum(t.nlevels * t.k for t in frame.terms))
        edges = np.cumsum([0] + [t.nlevels * t.k for t in frame.terms])
        self.bounds = [(int(edges[i]), int(edges[i + 1])) for i in range(len(frame.terms))]
        self.ks = [t.k for t in frame.terms]
        self.codes0 = frame.terms[0].codes if frame.terms else None
        self._dev_saturated = self._saturated_deviance()
        binary = family.name == "binomial" and bool(np.all((y == 0) | (y == 1)))
        self._success = (y == 1) if binary else None
        self.saturated = self._saturated_constant()
        self._frame = frame
        self._compiled = _CompiledTerms.build(frame, family)
        self._start_cache: list | None = None  # [η, μ, unit sums or None] of a stage's start

    @functools.cached_property
    def Z(self) -> sp.csr_matrix:
        """The random-effects model matrix (built on first use: the compiled
        steps do not need it)."""
        return sp.hstack([term_matrix(t) for t in self._terms], format="csr")

    @functools.cached_property
    def _X_columns(self) -> np.ndarray:
        """X in Fortran order: Xβ as a sum of columns, 2-3x faster than
        row-by-row dot products with a handful of columns (the compiled steps'
        X' seen transposed, when they hold it)."""
        if self._compiled is not None:
            return self._compiled.XT.T
        return np.asfortranarray(self.X)

    def fixed_offset(self, beta: np.ndarray) -> np.ndarray:
        """The offset plus Xβ: the part of η held fixed with β."""
        return self.offset + self._X_columns @ beta

    @functools.cached_property
    def system(self) -> BlockedSystem:
        """The blocked PWLS system of the numpy steps (built on first use)."""
        return BlockedSystem(self._terms, self.X)

    def with_response(self, y: np.ndarray, n: np.ndarray, prior_weights: np.ndarray) -> "_Engine":
        """The same engine (design, blocked system) for another response:
        only the response-dependent constants are recomputed."""
        new = copy.copy(self)
        new.y, new.n, new.wt = y, n, prior_weights
        new._dev_saturated = new._saturated_deviance()
        binary = new.family.name == "binomial" and bool(np.all((y == 0) | (y == 1)))
        new._success = (y == 1) if binary else None
        new.saturated = new._saturated_constant()
        new._start_cache = None
        if new._compiled is None:  # the process's first small model (see _compiled): its refits are not
            new._compiled = _CompiledTerms.build(new._frame, new.family)
            new.__dict__.pop("_X_columns", None)
        return new

    # -- pieces ---------------------------------------------------------------

    def _lam_times(self, lams, u: np.ndarray) -> np.ndarray:
        out = np.empty_like(u)
        for (a, b), lam in zip(self.bounds, lams):
            k = lam.shape[0]
            out[a:b] = (u[a:b].reshape(-1, k) @ lam.T).ravel()
        return out

    def penalised_deviance(self, mu: np.ndarray, u: np.ndarray) -> float:
        return self.deviance(mu) + float(u @ u)

    def deviance(self, mu: np.ndarray) -> float:
        """Σ deviance residuals. For the binomial and Poisson families as the
        saturated part (computed once) minus the μ-dependent one: two
        ``xlogy`` calls instead of R's elementwise ``y log(y/μ)`` branches."""
        fam, y, wt = self.family, self.y, self.wt
        if self._success is not None:  # 0/1 outcomes: one log per row
            return -2.0 * float(wt @ np.log(np.where(self._success, mu, 1.0 - mu)))
        if fam.name == "binomial":
            return self._dev_saturated - 2.0 * float(
                wt @ (special.xlogy(y, mu) + special.xlogy(1.0 - y, 1.0 - mu))
            )
        if fam.name == "poisson":
            return self._dev_saturated - 2.0 * float(wt @ (special.xlogy(y, mu) - mu))
        return float(np.sum(fam.dev_resids(y, mu, wt)))

    def _saturated_deviance(self) -> float:
        """The μ-free part of the binomial / Poisson deviance (see ``deviance``)."""
        y, wt = self.y, self.wt
        if self.family.name == "binomial":
            return 2.0 * float(wt @ (special.xlogy(y, y) + special.xlogy(1.0 - y, 1.0 - y)))
        if self.family.name == "poisson":
            return 2.0 * float(wt @ (special.xlogy(y, y) - y))
        return 0.0

    def working(
        self, eta: np.ndarray, mu: np.ndarray, offset: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Working weights and working response (η without ``offset``)."""
        fam = self.family
        d = fam.mu_eta(eta)
        w = self.wt * d * d / fam.variance(mu)
        z = eta - offset + (self.y - mu) / d
        return w, z

    @staticmethod
    def scalar_lambdas(theta) -> np.ndarray:
        """λ of a model whose terms are all scalar, for the compiled steps
        (which are only built for such models): θ as a float array."""
        return np.asarray(theta, dtype=float)

    def solve(self, lams, w: np.ndarray, z: np.ndarray, joint: bool):
        """One PWLS step: (u, β, factor)."""
        res = self.system.solve(lams, w, z, joint)
        if res is None:
            raise PirlsError(_PIRLS_FAILURES[1])
        return res

    # -- PIRLS -----------------------------------------------------------------

    def pirls(
        self,
        lams: list[np.ndarray],
        eta_start: np.ndarray,
        offset: np.ndarray,
        joint: bool,
        tol: float,
        beta: np.ndarray | None = None,
    ) -> _Modes:
        """Conditional modes by PIRLS, as lme4's ``pwrssUpdate``.

        Starts from the linear predictor ``eta_start`` (its weights and working
        response); ``offset`` is the part of η held fixed: the model's offset
        (``joint``: β is found with u) or the offset plus Xβ (``beta``, when
        given, is that β: the compiled steps then scale the first step's
        system from sums kept for ``eta_start``). Stops when the
        penalised deviance changes by less than ``tol`` (relative), halving
        steps that increase it. The factor kept is that of the last step's
        system, at the weights it started from, as lme4's: with lme4's
        tolerance (1e-7) the Laplace deviance then carries a difference of
        order 1e-4 from the one at the converged weights, which a tighter
        ``tol`` removes.
        """
        c = self._compiled
        mu_start, unit = self._start_state(eta_start, c is not None and (joint or beta is not None))
        if c is not None and c.fused(joint):
            return c.pirls(self, lams, eta_start, mu_start, offset, joint, tol, unit, beta)
        eta, mu = eta_start, mu_start
        q = self.q
        old = np.inf
        u_prev = np.zeros(q)
        b_prev = np.zeros(self.p)
        for it in range(1, PIRLS_MAXIT + 1):
            if it == 1 and unit is not None:  # the start's system, rescaled
                u, b, factor = self._compiled_result(c.solve_scaled(unit, lams, beta, joint))
            else:
                u, b, factor = self._step(lams, eta, mu, offset, joint)
            eta, mu, pdev = self._update(lams, u, b, offset)
            if abs(old - pdev) < tol * abs(pdev):
                break
            halvings = 0
            while (not np.isfinite(pdev) or pdev > old) and halvings < STEP_HALVINGS:
                u = 0.5 * (u_prev + u)
                b = 0.5 * (b_prev + b) if joint else b
                eta, mu, pdev = self._update(lams, u, b, offset)
                halvings += 1
            if not np.isfinite(pdev):
                raise PirlsError(_PIRLS_FAILURES[2])
            if pdev - old > tol:
                raise PirlsError(_PIRLS_FAILURES[3])
            old, u_prev, b_prev = pdev, u, b
        return _Modes(u, b, eta, mu, factor, pdev, it)

    def _start_state(self, eta_start: np.ndarray, sums: bool) -> tuple[np.ndarray, tuple | None]:
        """μ at PIRLS's starting η and (``sums``) the compiled steps' system
        sums there at unit λ (see ``_CompiledTerms.unit_sums``), else None.
        Every evaluation of a stage starts from the same η, so both are
        computed once per stage (η arrays are never changed in place)."""
        cached = self._start_cache
        if cached is None or cached[0] is not eta_start:
            cached = self._start_cache = [eta_start, self.family.linkinv(eta_start), None]
        if sums and cached[2] is None:
            cached[2] = self._compiled.unit_sums(self, eta_start, cached[1])
        return cached[1], cached[2] if sums else None

    def _step(self, lams, eta: np.ndarray, mu: np.ndarray, offset: np.ndarray, joint: bool):
        """One PWLS step from (η, μ): (u, β or empty, factor)."""
        if self._compiled is not None:
            return self._compiled_result(self._compiled.solve(self, lams, eta, mu, offset, joint))
        w, z = self.working(eta, mu, offset)
        return self.solve(lams, w, z, joint)

    @staticmethod
    def _compiled_result(res):
        if res is None:
            raise PirlsError(_PIRLS_FAILURES[1])
        return res

    def _update(self, lams, u: np.ndarray, b: np.ndarray, offset: np.ndarray):
        if self._compiled is not None:
            eta, mu, dev = self._compiled.update(self, lams, u, b, offset)
            return eta, mu, dev + self._dev_saturated + float(u @ u)
        eta = offset + self.Z @ self._lam_times(lams, u)
        if len(b):
            eta = eta + self.X @ b
        mu = self.family.linkinv(eta)
        return eta, mu, self.penalised_deviance(mu, u)

    # -- deviances ---------------------------------------------------------------

    def aic_term(self, mu: np.ndarray) -> float:
        """R's ``family$aic`` at μ (-2 × conditional log-likelihood)."""
        dev = self.deviance(mu)
        if self.saturated is not None:
            return dev + self.saturated
        return float(self.family.aic(self.y, self.n, mu, self.wt, dev))

    def _saturated_constant(self) -> float | None:
        """aic - deviance, the same at every μ for the binomial and Poisson
        families (-2 × the saturated log-likelihood): R's value (Loader's
        densities) for whole counts; for non-whole counts, where R's densities
        are zero, the continuous extension with log Γ, so the likelihood stays
        finite. None for families with an estimated dispersion."""
        fam, y, n, wt = self.family, self.y, self.n, self.wt
        if fam.name not in ("binomial", "poisson"):
            return None
        if self._success is not None:  # 0 or all successes: log C(m, 0) = log C(m, m) = 0
            return 0.0
        mu = np.clip(fam.mustart(y, wt), 1e-3, None) if fam.name == "poisson" else np.full_like(y, 0.5)
        dev = float(np.sum(fam.dev_resids(y, mu, wt)))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(fam.aic(y, n, mu, wt, dev)) - dev
        if np.isfinite(value):
            return value
        return _continuous_saturated(fam.name, y, n, wt)

    def laplace(self, modes: _Modes) -> float:
        """lme4's Laplace deviance: aic + ‖u‖² + log det(Λ'Z'WZΛ + I)."""
        if self.saturated is not None:  # aic = deviance + constant: PIRLS's pdev has it
            return modes.pdev + self.saturated + modes.ldL2()
        return self.aic_term(modes.mu) + float(modes.u @ modes.u) + modes.ldL2()

    def quadrature(self, modes: _Modes, lams, nodes: np.ndarray, weights: np.ndarray) -> float:
        """Adaptive Gauss-Hermite deviance for one scalar term (lme4's glmerAGQ
        with the saturated log-likelihood added back: see the module notes)."""
        q, fam = self.q, self.family
        codes = self.codes0
        sd = modes.factor.first_sd()
        devres0 = fam.dev_resids(self.y, modes.mu, self.wt)
        devc0 = modes.u**2 + np.bincount(codes, devres0, minlength=q)
        mult = np.zeros(q)
        lam = lams[0][0, 0]
        base = modes.eta - self.Z @ (lam * modes.u)
        for z, wk in zip(nodes, weights):
            if z == 0.0:
                mult += wk
                continue
            u = modes.u + z * sd
            mu = fam.linkinv(base + self.Z @ (lam * u))
            devc = u**2 + np.bincount(codes, fam.dev_resids(self.y, mu, self.wt), minlength=q)
            mult += wk * np.exp(0.5 * z * z - 0.5 * (devc - devc0))
        saturated = self.saturated
        if saturated is None:  # families with a scale: it depends on μ
            saturated = self.aic_term(modes.mu) - float(np.sum(devres0))
        return float(devc0.sum()) + modes.ldL2() - 2.0 * float(np.log(mult).sum()) + saturated


class _CompiledTerms:
    """The compiled PIRLS steps (:mod:`mixedmodels.linalg.kernels.glmm_kernels`) for a model
    whose random-effects terms are all scalar, with a family and link they
    support: each term's codes and z values as rows of two arrays, and where
    its modes sit in u and in the Schur block."""

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
        self.link = gk.LINKS[family.link.name]
        self.fam = gk.VARIANCES[family.name]
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
    def build(cls, frame: ModelFrame, family: Family) -> "_CompiledTerms | None":
        from mixedmodels.linalg.kernels import glmm_kernels as gk

        if not frame.terms or any(t.k != 1 for t in frame.terms):
            return None
        if not gk.supports(family.name, family.link.name, frame.nobs):
            return None
        return cls(frame, family)

    def solve(self, e: "_Engine", lams, eta, mu, offset, joint: bool):
        """One PWLS step at the working weights of (η, μ): (u, β, factor),
        or None where the system is not positive definite."""
        lam = self.lam_values(lams)
        X, XT = (self.X, self.XT) if joint else (self.no_x, self.no_xt)
        L0, R, S, y0, yr = self.assemble(
            self.codes, self.zv, lam, self.offs, X, XT, _c(eta), _c(mu), _c(e.y), _c(e.wt), _c(offset),
            self.link, self.fam, self.l0, self.Q1, False,
        )
        return self._solve_eliminated(L0, R, S, y0, yr, joint)

    def solve_scaled(self, unit: tuple, lams, beta: np.ndarray | None, joint: bool):
        """:meth:`solve` at the weights :meth:`unit_sums` was computed at
        (the stage's start), from those sums (``beta``: the fixed β of the
        offset, when not ``joint``)."""
        beta_arr = self._no_beta if joint or beta is None else _c(beta)
        L0, c0, R, S, yr = self.kernel_scaled(unit, self.lam_values(lams), self.offs, self.Q1, beta_arr, joint)
        return self._solve_eliminated(*self.kernel_eliminate(L0, c0, R, S, yr, self.Q1, False), joint)

    def _solve_eliminated(self, L0, R, S, y0, yr, joint: bool):
        """The step's solution from the system with the first term eliminated
        (S not yet downdated by R'R)."""
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
        """S -= R'R on S's upper triangle (C order): BLAS syrk unless R is
        sparse enough for its nonzeros alone to cost less (below ~14% the
        compiled loop over them wins; numba's own product would be a gemm,
        twice syrk's work, hence the assembly's 25%)."""
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
        """λ of every (scalar) term as one array: λ's given as 1 x 1 arrays or,
        from :meth:`_Engine.scalar_lambdas`, already as that array."""
        if isinstance(lams, np.ndarray) and lams.ndim == 1:
            # writable: a read-only array (θ from the optimizer) would make
            # Numba compile every kernel a second time (12 s)
            return np.require(lams, dtype=float, requirements=["C", "W"])
        return np.array([float(l[0, 0]) for l in lams])

    def fused(self, joint: bool) -> bool:
        """Whether the whole PIRLS loop runs compiled (a small Schur block)."""
        return self.Q1 + (self.X.shape[1] if joint else 0) <= FUSED_MAX_BLOCK

    def unit_sums(self, e: "_Engine", eta_start, mu_start) -> tuple:
        """``_glmm_numba.weighted_sums`` at (η, μ) with unit λ, X and the
        model's offset: the first PIRLS step's system at any λ (and β) from a
        rescaling (``_glmm_numba.scaled_sums``)."""
        return self.kernel_sums(
            self.codes, self.zv, np.ones(len(self.codes)), self.offs, self.X, self.XT, _c(eta_start),
            _c(mu_start), _c(e.y), _c(e.wt), _c(e.offset), self.link, self.fam, self.l0, self.Q1,
        )

    def pirls(
        self, e: "_Engine", lams, eta_start, mu_start, offset, joint: bool, tol: float,
        unit: tuple | None = None, beta: np.ndarray | None = None,
    ) -> "_Modes":
        """:meth:`_Engine.pirls` in one compiled call (``_glmm_numba.pirls``);
        ``unit``: :meth:`unit_sums` at ``eta_start`` for the first step, with
        ``beta`` the fixed β that ``offset`` holds (when not ``joint``)."""
        lam = self.lam_values(lams)
        X, XT = (self.X, self.XT) if joint else (self.no_x, self.no_xt)
        if unit is None:
            unit, beta = self._no_sums, None
        status, u, b, eta, mu, pdev, it, L0, R, LS, ldl2 = self.kernel_pirls(
            self.codes, self.zv, lam, self.offs, self.ubase, X, XT, _c(e.y), _c(e.wt), _c(offset),
            _c(eta_start), _c(mu_start), self.link, self.fam, self.l0, self.Q1,
            float(tol), PIRLS_MAXIT, STEP_HALVINGS, float(e._dev_saturated),
            unit, self._no_beta if joint or beta is None else _c(beta),
        )
        if status:
            raise PirlsError(_PIRLS_FAILURES[status])
        factor = BlockedFactor(L0[:, None, None], R[:, None, :], LS, self.Q1, float(ldl2))
        return _Modes(u, b, eta, mu, factor, float(pdev), int(it))

    def update(self, e: "_Engine", lams, u, b, offset):
        lam = self.lam_values(lams)
        X = self.X if len(b) else self.no_x
        n = len(e.y)
        eta, mu = np.empty(n), np.empty(n)
        dev = self.kernel_update(
            self.codes, self.zv, lam, self.ubase, X, _c(u), _c(b), _c(offset), _c(e.y), _c(e.wt),
            self.link, self.fam, eta, mu,
        )
        return eta, mu, dev


def _c(a: np.ndarray) -> np.ndarray:
    """A C-ordered float array (no copy when it is one already)."""
    return np.ascontiguousarray(a, dtype=float)


def _continuous_saturated(family: str, y, n, wt) -> float:
    """-2 × saturated log-likelihood with log Γ in place of factorials."""
    gammaln, xlogy = special.gammaln, special.xlogy
    if family == "poisson":
        return float(-2 * np.sum(wt * (xlogy(y, y) - y - gammaln(y + 1))))
    m = n if np.any(n > 1) else wt
    share = np.where(m > 0, wt / np.where(m > 0, m, 1), 0.0)
    k = m * y
    log_choose = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
    return float(-2 * np.sum(share * (log_choose + xlogy(k, y) + xlogy(m - k, 1 - y))))


def separated_columns(X: np.ndarray, y: np.ndarray, names: list[str]) -> list[str]:
    """Fixed effects whose estimates are infinite because the binomial data
    are (quasi-)completely separated (after Konis): a direction d with
    x_i'd >= 0 for every all-success row, <= 0 for every all-failure row and
    = 0 for the others, not zero on all of them. The sparsest such direction
    (least L1 norm, a linear program) names the columns."""
    from scipy.optimize import linprog

    sign = np.where(y >= 1, 1.0, np.where(y <= 0, -1.0, 0.0))
    ineq = sign != 0
    if not ineq.any():
        return []
    p = X.shape[1]
    A = X[ineq] * sign[ineq, None]
    eq = X[~ineq]
    zeros = np.zeros((len(A), p))
    I = np.eye(p)
    # variables (d, t): minimise Σt with t >= |d|, A d >= 0, Σ A d >= 1, eq d = 0
    A_ub = np.vstack([
        np.hstack([-A, zeros]),
        np.hstack([-A.sum(axis=0)[None, :], np.zeros((1, p))]),
        np.hstack([I, -I]),
        np.hstack([-I, -I]),
    ])
    b_ub = np.concatenate([np.zeros(len(A)), [-1.0], np.zeros(2 * p)])
    res = linprog(
        np.concatenate([np.zeros(p), np.ones(p)]), A_ub=A_ub, b_ub=b_ub,
        A_eq=np.hstack([eq, np.zeros((len(eq), p))]) if len(eq) else None,
        b_eq=np.zeros(len(eq)) if len(eq) else None,
        bounds=[(None, None)] * p + [(0, None)] * p, method="highs",
    )
    if res.status != 0:  # infeasible: no separating direction
        return []
    d = res.x[:p]
    return [name for name, v in zip(names, d) if abs(v) > 1e-9 * np.abs(d).max()]


def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the n-point rule for the standard normal density
    (weights sum to 1), as lme4's ``GHrule``."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    z = (z - z[::-1]) / 2  # exactly symmetric, with an exact zero node for odd n
    w = (w + w[::-1]) / 2
    return z, w / w.sum()


# ---------------------------------------------------------------------------- results


@dataclass
class ConvergenceCheck:
    """lme4's ``checkConv`` at the optimum over (θ, β).

    Attributes
    ----------
    gradient : ndarray
        Finite-difference gradient of the deviance.
    hessian : ndarray
        Finite-difference Hessian of the deviance.
    scaled_gradient : float
        max |H⁻¹g| (the Newton step still to go, in parameter units), or the
        max |g| when H is not positive definite; both for unit-scale columns
        of Z and X (``param_scale``: lme4's own units where those are moderate).
    hessian_eigenvalues : ndarray
        Eigenvalues of the Hessian of the parameters off the boundary (a
        variance at zero is left out, as lme4 does), for unit-scale columns.
    messages : list of str
        What is wrong, in words; empty when the optimum looks sound.
    """

    gradient: np.ndarray
    hessian: np.ndarray
    scaled_gradient: float
    hessian_eigenvalues: np.ndarray
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.messages


class GeneralizedLinearMixedModel(RandomEffectsModel):
    """A generalized linear mixed model (lme4's ``glmer``).

    Parameters
    ----------
    formula : str
        lme4 formula; the response may be numeric, bool, a factor (first level
        = failure) or ``cbind(successes, failures)`` for the binomial family.
    data : DataFrame
        The data (pandas, or anything :func:`mixedmodels.spec.levels.to_pandas` takes).
    family : str or Family
        ``"binomial"``, ``"poisson"``, ``"gamma"``, ``"inverse_gaussian"``,
        ``"gaussian"`` or a :mod:`mixedmodels.families` object.
    link : str, optional
        Overrides the family's default link.
    nagq : int
        0: PIRLS estimates β with the modes (fast, approximate); 1: Laplace
        (default); > 1: adaptive Gauss-Hermite quadrature with that many
        nodes (one scalar random-effects term only).
    weights, offset : column name or array, optional
        Prior weights (binomial: numbers of trials of a proportion response)
        and an offset added to the linear predictor (also ``offset(...)`` in
        the formula).
    contrasts, na_action
        As for :class:`mixedmodels.LinearMixedModel`.
    """

    model_kind = "glmer"
    #: Whether the fit's deviance is taken at converged PIRLS modes rather than
    #: where PIRLS stops at ``pirls_tol`` (set by :meth:`fit` where that
    #: tolerance left the deviance without a minimum near the optimum).
    pirls_converged: bool = False

    @r_argument_hints()
    def __init__(
        self,
        formula: str,
        data: Any,
        family: str | Family = "binomial",
        link: str | None = None,
        nagq: int = 1,
        weights: Any = None,
        offset: Any = None,
        contrasts: Mapping[str, str] | None = None,
        na_action: str = "omit",
    ):
        check_na_action(na_action)
        self.family = get_family(family, link)
        self.nagq = _check_nagq(nagq)
        # the quadrature rule, once (not at every evaluation of the deviance)
        self._rule = gauss_hermite(self.nagq) if self.nagq > 1 else None
        self.formula = formula
        self.data_name: str | None = None
        parsed = require_random(parse_formula(formula))
        self.frame = build_model_frame(
            parsed, data, weights=weights, offset=offset, na_action=na_action,
            contrasts=contrasts, glm_response=True,
        )
        fr = self.frame
        if self.nagq > 1 and not (len(fr.terms) == 1 and fr.terms[0].k == 1):
            raise DataError(
                f"nagq = {self.nagq} (adaptive Gauss-Hermite quadrature) needs a single scalar "
                "random-effects term such as (1 | group); this model has "
                + ", ".join(t.spec.text for t in fr.terms)
                + ". Use nagq = 1 (Laplace) or 0."
            )
        self._init = self._initialize_response()
        offset_arr = np.zeros(fr.nobs) if fr.offset is None else np.asarray(fr.offset, float)
        self._engine = _Engine(fr, self.family, self._init.y, self._init.n, self._init.weights, offset_arr)
        self._theta_slices = consecutive_slices([t.ntheta for t in fr.terms])
        self.weights_given = weights is not None
        self.offset_given = offset is not None
        self._fitted = False
        # the nAGQ = 0 stage's best point: (deviance, θ, PIRLS modes)
        self._stage0_best: tuple[float, np.ndarray | None, _Modes | None] = (np.inf, None, None)

    def _initialize_response(self):
        fr, fam = self.frame, self.family
        name = fr.response_name
        y = np.asarray(fr.y, dtype=float)
        if y.ndim == 2:
            if fam.name != "binomial":
                raise FamilyError(
                    f"a two-column response {name!r} (cbind) is only meaningful for the "
                    f"binomial family, not {fam.name}"
                )
            return fam.initialize_counts(y[:, 0], y[:, 1], fr.weights, column_name=name)
        return fam.initialize(y, fr.weights, column_name=name)

    # ------------------------------------------------------------------ parameters

    @functools.cached_property
    def ntheta(self) -> int:
        return int(sum(t.ntheta for t in self.frame.terms))

    # ------------------------------------------------------------------ objectives

    def _modes(
        self, theta: np.ndarray, beta: np.ndarray | None, converged: bool | None = None,
        eta_start: np.ndarray | None = None,
    ) -> _Modes:
        """PIRLS at θ (``beta`` None: β found with u, the nAGQ = 0 stage) from
        the stage's starting linear predictor, as lme4 starts every evaluation
        (or from ``eta_start``), to the fit's tolerance.

        ``converged`` (default: the fit's ``pirls_converged``): to the modes
        themselves, with the last step's factor at their weights: once more
        from where PIRLS stopped, to ``CONVERGED_PIRLS_TOL`` (its first step is
        then a step from the modes). From ``eta_start`` (which must then be
        near the modes, e.g. theirs at a nearby point) that run alone.
        """
        e = self._engine
        converged = self.pirls_converged if converged is None else converged
        # the compiled steps take λ of scalar terms as numbers: θ itself
        lams = e.scalar_lambdas(theta) if e._compiled is not None else self.lambdas(np.asarray(theta, float))
        offset = e.offset if beta is None else e.fixed_offset(beta)
        if eta_start is None:
            # β given: the first step's system from sums kept for the stage's start
            modes = e.pirls(lams, self._eta_start, offset, beta is None, self.pirls_tol, beta)
            if not converged:
                return modes
            eta_start = modes.eta
        tol = min(CONVERGED_PIRLS_TOL, self.pirls_tol) if converged else self.pirls_tol
        return e.pirls(lams, eta_start, offset, beta is None, tol)

    def _deviance_at(self, modes: _Modes, theta: np.ndarray) -> float:
        if self.nagq > 1:
            z, w = self._rule
            return self._engine.quadrature(modes, self.lambdas(theta), z, w)
        return self._engine.laplace(modes)

    def objective_theta(self, theta: np.ndarray) -> float:
        """The nAGQ = 0 deviance at θ (β found by PIRLS with the modes)."""
        try:
            modes = self._modes(theta, None)
        except PirlsError:
            return np.inf
        value = self._engine.laplace(modes)
        if value < self._stage0_best[0]:  # the stage's end is its best point: kept
            self._stage0_best = (value, np.array(theta, float), modes)
        return value

    @property
    def param_scale(self) -> np.ndarray:
        """Per element of (θ, β), the factor giving it for unit-scale columns
        of Z and X (:attr:`theta_scale`, then ``spec.random.search_scales`` of X;
        all ones unless a column is in tiny or huge units)."""
        scale = self.__dict__.get("_param_scale")
        if scale is None:
            scale = np.concatenate([self.theta_scale, search_scales(self.frame.fixed.X)])
            self._param_scale = scale
        return scale

    def objective(self, params: np.ndarray) -> float:
        """The deviance (Laplace or quadrature) at (θ, β)."""
        return self._deviance_or_inf(params, None)[0]

    def objective_converged(self, params: np.ndarray, eta_start: np.ndarray | None = None) -> float:
        """The deviance at (θ, β) at the converged modes (see :meth:`_modes`):
        the Laplace or quadrature approximation itself, without the offset
        that PIRLS's tolerance leaves (see :meth:`_leave_plateau`). A start
        ``eta_start`` must be near the modes (for instance theirs at a nearby
        point)."""
        return self._deviance_or_inf(params, True, eta_start)[0]

    def _deviance_or_inf(
        self, params: np.ndarray, converged: bool | None, eta_start: np.ndarray | None = None
    ) -> tuple[float, _Modes | None]:
        """The deviance at (θ, β) and PIRLS's modes, or (inf, None) where
        PIRLS fails (see :meth:`_modes` for the arguments)."""
        params = np.asarray(params, float)
        theta, beta = params[: self.ntheta], params[self.ntheta :]
        try:
            modes = self._modes(theta, beta, converged, eta_start)
        except PirlsError:
            return np.inf, None
        return self._deviance_at(modes, theta), modes

    # ------------------------------------------------------------------ fitting

    def initial_theta(self) -> np.ndarray:
        return np.concatenate([t.theta_start() for t in self.frame.terms])

    @r_argument_hints()
    def fit(
        self,
        start: Mapping[str, Any] | Any = None,
        *,
        nagq0_init_step: bool = True,
        pirls_tol: float = 1e-7,
        maxeval: int = 100_000,
        keep_history: bool = False,
        check_convergence: bool = True,
        threads: int | str = "auto",
        progress: bool = False,
    ) -> "GeneralizedLinearMixedModel":
        """Estimate θ and β as lme4's ``glmer``: the nAGQ = 0 stage over θ
        (BOBYQA), then (nagq >= 1) the Laplace or quadrature deviance over
        (θ, β) from there: Newton steps with lme4's finite-difference gradient
        and Hessian (``deriv12``), whose last Hessian gives the standard
        errors; BOBYQA where Newton cannot be trusted (a Hessian not positive
        definite, a variance at zero, no descent) or without the check.

        Parameters
        ----------
        start : dict or array-like, optional
            As lme4's ``start``: ``{"theta": ..., "fixef": ...}`` (either key
            may be left out; ``fixef`` an array in the order of the fixed
            effects or a mapping by their names), or an array of θ. θ starts
            the nAGQ = 0 stage; ``fixef`` (nagq >= 1) replaces that stage's β
            at the start of the Laplace / quadrature stage.
        nagq0_init_step : bool
            lme4's ``nAGQ0initStep``: False skips the nAGQ = 0 stage, and the
            Laplace / quadrature fit starts from the given start (θ default:
            lme4's; β default: PIRLS with β free at that θ, the GLM fit when
            θ = 0). Every PIRLS then starts, as lme4's, from the linear
            predictor of PIRLS over u alone at the start θ with β = 0.
        pirls_tol : float
            PIRLS convergence tolerance (lme4's ``tolPwrss``, default 1e-7,
            which with lme4's way of iterating gives lme4's numbers; 1e-10 or
            below gives the Laplace approximation at the exact modes, which
            can differ from lme4's by ~1e-3 in the deviance and ~1% in SEs).
            Where the offset this tolerance leaves in the deviance makes it a
            sawtooth whose teeth hide the optimum, the fit goes on past them,
            or at converged modes (``pirls_converged``; the optimizer's name
            in ``optsum`` says so).
        maxeval : int
            Maximum number of deviance evaluations per stage.
        keep_history : bool
            Keep every point evaluated in ``optsum.history``.
        check_convergence : bool
            Compute the finite-difference gradient and Hessian at the optimum
            (they also give the standard errors, as lme4's default). False:
            BOBYQA only, and standard errors from the PIRLS system.
        threads : int or "auto"
            Threads: for BLAS (see ``_blas_threads``; one with the compiled
            PIRLS steps) and, with the compiled steps and evaluations slower
            than 0.5 ms, for the finite-difference probes of the Newton stage
            ("auto": the idle cores).
        progress : bool
            Show evaluations (all stages), deviance and elapsed time while the
            fit runs for more than a second.
        """
        self._threads, self._workers = threads, 1  # workers: decided after stage 0
        self.pirls_converged = False  # until the (θ, β) stage finds it needs them
        # compiled steps leave BLAS little (and its threads would compete with
        # the probes' worker threads): one BLAS thread then
        everywhere = 1 if self._engine._compiled is not None else self._blas_threads(threads)
        monitor = FitProgress(f"glmer {self.formula}") if progress else None
        self._callback = None if monitor is None else _counting(monitor)
        try:
            with blas_threads(everywhere):
                self._fit(self._parse_start(start), bool(nagq0_init_step), float(pirls_tol),
                          maxeval, keep_history, check_convergence)
        finally:
            if monitor is not None:
                monitor.close()
        self.optsum.blas_threads = (everywhere, None)
        return self

    def refit(self, newresp: Any, **fit_kwargs: Any) -> "GeneralizedLinearMixedModel":
        """The same model fitted to another response (lme4's ``refit``).

        The design, the blocked system and the formula handling are reused;
        only the response changes, and the fit starts from this fit's θ. This
        model is left untouched.

        Parameters
        ----------
        newresp : array-like
            One value per row used in the fit, on the scale :meth:`simulate`
            returns (binomial: proportions of the trials; Poisson: counts), or
            for the binomial family an (n, 2) array of successes and failures.
        **fit_kwargs
            Passed to :meth:`fit` (default: this fit's ``pirls_tol``).

        Returns
        -------
        GeneralizedLinearMixedModel
            A new fitted model.
        """
        self._require_fit()
        e = self._engine
        y = np.asarray(newresp, dtype=float)
        name = self.frame.response_name
        if y.shape not in ((len(e.y),), (len(e.y), 2)):
            raise DataError(
                f"refit needs one response value per row used in the fit ({len(e.y)}), "
                f"got an array of shape {y.shape} for {name!r}"
            )
        if y.ndim == 2:
            init = self.family.initialize_counts(y[:, 0], y[:, 1], self.frame.weights, column_name=name)
            y, n, wt = init.y, init.n, init.weights
        else:
            self.family.validate_response(y, e.wt, column_name=name)
            n, wt = e.n, e.wt
            if self.family.name == "binomial":
                y = np.where(wt == 0, 0.0, y)
        new = copy.copy(self)
        new._init = self._init._replace(y=y, n=n, weights=wt, mustart=self.family.mustart(y, wt))
        new._engine = e.with_response(y, n, wt)
        new._fitted = False
        fit_kwargs.setdefault("pirls_tol", self.pirls_tol)
        start = dict(fit_kwargs.pop("start", None) or {"theta": self._theta})
        return new.fit(start, **fit_kwargs)

    def _blas_threads(self, threads: int | str) -> int | None:
        """BLAS threads for the fit, as for lmer (``_threads.auto_thread_plan``:
        from the size only, never from the machine's load): one for dense
        blocks under 2,000 rows (idle OpenBLAS workers spinning between the
        many small products of PIRLS made a grouseticks fit six times slower),
        every core above."""
        if threads != "auto":
            return int(threads)
        everywhere, inside = auto_thread_plan(self._engine.system.m)
        return everywhere if inside is None else inside

    def _derivative_workers(self, threads: int | str) -> int:
        """Threads for the finite-difference probes: only with compiled PIRLS
        steps (numpy's small operations would hold the GIL) and then every
        core, or ``threads`` when given."""
        if self._engine._compiled is None:
            return 1
        if threads != "auto":
            return max(int(threads), 1)
        return os.cpu_count() or 1

    def _parse_start(self, start: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(θ, β or None) from ``start`` (see :meth:`fit`), checked against the
        model: a ModelSpecError names the expected lengths and names."""
        theta_names = [n for t in self.frame.terms for n in t.theta_names()]
        if start is None:
            return self.initial_theta(), None
        if not isinstance(start, Mapping):
            return self._start_vector(start, "start (θ)", theta_names), None
        unknown = sorted(set(start) - {"theta", "fixef"})
        if unknown:
            raise ModelSpecError(
                f"start takes the keys 'theta' and 'fixef' (as lme4's start=list(theta=, "
                f"fixef=)), not {unknown}"
            )
        theta = self.initial_theta()
        if start.get("theta") is not None:
            theta = self._start_vector(start["theta"], "start['theta']", theta_names)
        beta = start.get("fixef")
        if beta is None:
            return theta, None
        if self.nagq == 0:
            raise ModelSpecError(
                "start['fixef'] needs nagq >= 1: with nagq = 0 the fixed effects are "
                "estimated with the modes, not searched from a start"
            )
        names = list(self.frame.fixed.names)
        if isinstance(beta, Mapping) or isinstance(beta, pd.Series):
            beta = dict(beta)
            if set(beta) != set(names):
                raise ModelSpecError(
                    f"start['fixef'] needs the {len(names)} fixed effects {names}; got the names "
                    f"{list(beta)}"
                )
            beta = [beta[n] for n in names]
        return theta, self._start_vector(beta, "start['fixef']", names)

    @staticmethod
    def _start_vector(values: Any, what: str, names: list[str]) -> np.ndarray:
        """``values`` as a finite float vector of len(names), else ModelSpecError."""
        try:
            v = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            v = None
        if v is None or v.ndim != 1 or len(v) != len(names) or not np.all(np.isfinite(v)):
            raise ModelSpecError(
                f"{what} needs {len(names)} finite number(s), for {names}; got {values!r}"
            )
        return v

    def _fit(self, start, nagq0_init_step, pirls_tol, maxeval, keep_history,
             check_convergence) -> None:
        self.pirls_tol = pirls_tol
        e = self._engine
        theta0, beta_start = start
        self._eta_start = e.offset + self.family.linkfun(self._init.mustart)
        stage0 = None
        theta = self._theta_stage0 = theta0
        if nagq0_init_step or self.nagq == 0:
            # lme4: one joint PIRLS at θ0 from mustart; its η starts every evaluation
            self._eta_start = self._modes(theta0, None).eta
            theta, modes0, stage0 = self._stage_zero(theta0, maxeval, keep_history)
            if self.nagq == 0:
                self._set_optimum(theta, None, stage0, check=False)
                return
            self._eta_start = modes0.eta
        else:
            # lme4 without that stage: PIRLS over u alone at θ0 and β = 0 from
            # mustart; its η starts every evaluation (the deviance then is
            # lme4's function, which depends on that η at PIRLS's tolerance)
            t0 = time.perf_counter()
            self._eta_start = self._modes(theta0, np.zeros(e.p)).eta
            # β's default start: PIRLS with β free at θ0 (lme4 starts from 0)
            modes0 = self._modes(theta0, None)
            if time.perf_counter() - t0 >= 2 * PARALLEL_PROBE_SECONDS:
                self._workers = self._derivative_workers(self._threads)
        # lme4's updateStart: the stage's θ, and start['fixef'] over its β
        params0 = np.concatenate([theta, modes0.beta if beta_start is None else beta_start])
        self._newton_evaluations = 0
        newton, params0 = (
            self._newton_past_plateaus(params0) if check_convergence else (None, params0)
        )
        if newton is not None:
            params, record, derivs = newton
            self._set_optimum(params[: self.ntheta], params[self.ntheta :],
                              _after_stage_zero(record, stage0), check=True, derivs=derivs)
            return
        record = self._bobyqa_stage(params0, modes0, maxeval, keep_history)
        record.evaluations += self._newton_evaluations
        record = _after_stage_zero(record, stage0)
        params = record.theta_final
        self._set_optimum(params[: self.ntheta], params[self.ntheta :], record,
                          check=check_convergence)

    def _stage_zero(self, theta0: np.ndarray, maxeval: int, keep_history: bool):
        """The nAGQ = 0 stage: BOBYQA over θ from ``theta0`` (β with the modes).
        Returns (θ, PIRLS modes there, record)."""
        self._stage0_best = (np.inf, None, None)
        scaling = ThetaScaling(self.theta_scale)  # θ for unit-scale columns (see lmer)
        stage0 = scaling.to_theta(minimize_theta(
            scaling.objective(self.objective_theta), scaling.to_search(theta0), self.theta_lower,
            ftol_rel=1e-10, maxeval=maxeval, keep_history=keep_history, callback=self._callback,
        ))
        theta = self._theta_stage0 = stage0.theta_final
        if stage0.elapsed >= PARALLEL_PROBE_SECONDS * max(stage0.evaluations, 1):
            self._workers = self._derivative_workers(self._threads)  # else too quick to share
        _, best_theta, modes0 = self._stage0_best
        if best_theta is None or not np.array_equal(best_theta, theta):
            modes0 = self._modes(theta, None)
        return theta, modes0, stage0

    def _newton(self, x0: np.ndarray):
        """Newton's method on the deviance over (θ, β) from the nAGQ = 0 stage's
        end, with lme4's finite-difference gradient and Hessian (``deriv12``)
        and a backtracking line search. Near the optimum (where that stage
        leaves it) it converges in two or three steps, and the last ``deriv12``
        is the one the standard errors and the convergence check need.
        Returns (x, record, (g, H)), or None where it cannot be trusted (a
        Hessian not positive definite, a bound reached, no descent): the
        derivative-free search takes over (``_newton_evaluations`` keeps the
        count spent)."""
        t0 = time.perf_counter()
        first = self._newton_evaluations
        f = self._counted(self.objective)
        lower = self._params_lower()
        x, fx = x0, f(x0)
        f_start = fx
        for _ in range(NEWTON_MAXIT):
            g, H = self._derivatives(x, fx, f)
            Hs = 0.5 * (H + H.T)
            try:
                c = np.linalg.cholesky(Hs)
            except np.linalg.LinAlgError:
                return None
            step = -np.linalg.solve(c.T, np.linalg.solve(c, g))
            decrement = float(-(g @ step))  # g'H⁻¹g: twice the predicted decrease
            if decrement < max(NEWTON_DECREMENT, NEWTON_DECREMENT_REL * abs(fx)):
                # the last step too (one evaluation; g and H are kept from here)
                trial = x + step
                if np.all(trial >= lower):
                    f_trial = f(trial)
                    if f_trial <= fx:
                        x, fx = trial, f_trial
                record = OptimizerRecord(
                    "Newton (deriv12)", x0, x, f_start, fx, self._newton_evaluations - first,
                    "CONVERGED", time.perf_counter() - t0,
                )
                return x, record, (g, H)
            t = 1.0
            while t >= 1.0 / 64:
                trial = x + t * step
                if np.all(trial >= lower):
                    f_trial = f(trial)
                    if f_trial <= fx - 1e-4 * t * decrement:
                        break
                t /= 2
            else:
                return None
            x, fx = trial, f_trial
        return None

    def _counted(self, objective):
        """``objective`` counting its evaluations (see :meth:`_count`)."""

        def f(x: np.ndarray) -> float:
            value = objective(x)
            self._count(value)
            return value

        return f

    def _count(self, value: float) -> None:
        """One more evaluation of the second stage, in ``_newton_evaluations``,
        and the best value so far for the progress callback (under a lock: the
        probes of ``_derivatives`` may run on threads)."""
        with _COUNT_LOCK:
            self._newton_evaluations += 1
            self._stage_best = min(self._stage_best, value)
            if self._callback is not None:
                self._callback(self._newton_evaluations, self._stage_best)

    def _params_lower(self) -> np.ndarray:
        """Lower bounds of (θ, β)."""
        return np.concatenate([self.theta_lower, np.full(self._engine.p, -np.inf)])

    def _newton_past_plateaus(self, x0: np.ndarray):
        """``_newton`` from ``x0`` (the nAGQ = 0 stage's end), then, while
        ``_leave_plateau`` finds it stopped on a raised plateau of the
        deviance, again from a lower point or with PIRLS run to convergence.
        Returns (Newton's result or None, the point the derivative-free
        search is to start from when it is None)."""
        t0 = time.perf_counter()
        self._stage_best = np.inf
        newton = self._newton(x0)
        if newton is None:
            return None, x0
        first = newton[1]
        for escape in range(1, PLATEAU_ESCAPES + 1):
            x, record, (_, H) = newton
            way = self._leave_plateau(x0, x, record.objective_final, H)
            if way is None:
                break
            beyond, converge = way
            if converge:  # from here on, the deviance at converged modes
                self.pirls_converged = True
            newton = self._newton(beyond)
            if newton is None:  # the derivative-free search goes on from there
                return None, beyond
            newton[1].optimizer = (
                "Newton (deriv12), with PIRLS to convergence past a plateau of the inexact PIRLS"
                if converge else
                f"Newton (deriv12), restarted past {escape} plateau(s) of the inexact PIRLS"
            )
        record = newton[1]
        record.theta_start, record.objective_start = first.theta_start, first.objective_start
        record.evaluations = self._newton_evaluations  # with the plateau checks
        record.elapsed = time.perf_counter() - t0
        return newton, x0

    def _leave_plateau(
        self, x0: np.ndarray, x: np.ndarray, fx: float, H: np.ndarray
    ) -> tuple[np.ndarray, bool] | None:
        """Where to go from the optimum ``x`` (deviance ``fx``, Hessian ``H``)
        that Newton found from ``x0`` when it lies on a raised plateau of the
        deviance: (a lower point, False), or (the optimum of the Laplace
        approximation, True) where PIRLS must be run to convergence for the
        deviance to have a minimum near; None where ``x`` stands.

        PIRLS stops at the fit's tolerance (lme4's 1e-7), and the Laplace
        deviance uses the factor of its last step, taken at the weights that
        step started from: the deviance carries an offset of the order of the
        square root of the tolerance, growing from zero near ``x0`` (every
        evaluation starts from the modes there, as lme4's) to the point where
        PIRLS needs one step more, where it falls back to almost zero. The
        deviance is a sawtooth over the Laplace approximation, and Newton
        can stop at the bottom of a raised tooth above a lower one (0.027 in
        a simulated logistic model with 35 groups, where lme4's Nelder-Mead
        went on).

        The offset at ``x`` (the deviance at converged modes, one more PIRLS
        run from where the fit's stopped) tells whether that can be: below
        ``PLATEAU_OFFSET`` (or negative: a lowered tooth), no. Otherwise the next tooth is lower than ``fx``
        only where it begins before the Laplace deviance has risen by the
        offset; it begins first away from ``x0``, so one PIRLS run there (at
        that rise along x - x0) tells, by its number of steps. Where it does,
        one Newton step on the converged deviance (its gradient by forward
        differences, ``H`` as its Hessian) gives the optimum x* of the Laplace
        approximation: where the fit's deviance is lower there than at ``x``,
        Newton goes on from x*; otherwise the deviance has no minimum near,
        only the lower tooth's edge (where lme4's Nelder-Mead stops, with a
        degenerate Hessian), and the fit goes on at converged modes.
        """
        if self.pirls_converged:
            return None
        theta, beta = x[: self.ntheta], x[self.ntheta :]
        try:
            fit_modes = self._modes(theta, beta)
            modes = self._modes(theta, beta, True, fit_modes.eta)
        except PirlsError:
            return None
        f_exact = self._deviance_at(modes, theta)
        self._count(f_exact)
        offset = fx - f_exact
        if offset <= PLATEAU_OFFSET:  # the other teeth (offset ~0) are higher
            return None
        lower = self._params_lower()
        away = x - x0
        rise = 0.5 * float(away @ H @ away)  # the Laplace deviance's rise along x - x0
        if not rise > 0:
            return None
        ray = np.maximum(x + np.sqrt(offset / rise) * away, lower)
        try:
            ray_modes = self._modes(ray[: self.ntheta], ray[self.ntheta :])
        except PirlsError:
            return None
        self._count(self._deviance_at(ray_modes, ray[: self.ntheta]))
        if ray_modes.iterations <= fit_modes.iterations:
            return None  # no other tooth within reach
        # the probes start from the modes at x: they converge in fewer steps
        exact = self._counted(functools.partial(self.objective_converged, eta_start=modes.eta))
        h = HESSIAN_STEP / self.param_scale  # as _derivatives: for unit-scale columns
        probes = [self._shifted(x, {j: h[j]}) for j in range(len(x))]
        g = (self._evaluate_all(exact, probes) - f_exact) / h
        try:
            c = np.linalg.cholesky(0.5 * (H + H.T))
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(g)):
            return None
        best = np.maximum(x - np.linalg.solve(c.T, np.linalg.solve(c, g)), lower)
        return best, not self._counted(self.objective)(best) < fx - NEWTON_DECREMENT

    def _bobyqa_stage(self, params0: np.ndarray, modes0: _Modes, maxeval: int, keep_history: bool):
        """The derivative-free search over (θ, β): BOBYQA from the nAGQ = 0
        stage's end, then once more from its own end with a small trust
        region (BOBYQA can stop early in the flat valleys GLMMs have)."""
        lower = np.concatenate([self.theta_lower, np.full(self._engine.p, -np.inf)])
        # on (θ, β) for unit-scale columns of Z and X: steps free of the units
        scaling = ThetaScaling(self.param_scale)
        objective = scaling.objective(self.objective)
        first = scaling.to_theta(minimize_theta(
            objective, scaling.to_search(params0), lower, ftol_rel=1e-12, maxeval=maxeval,
            keep_history=keep_history,
            initial_step=self._stage_two_step(modes0, scaling.scale),
            callback=self._callback,
        ))
        x1 = scaling.to_search(first.theta_final)
        polish = scaling.to_theta(minimize_theta(
            objective, x1, lower, ftol_rel=1e-12, maxeval=maxeval,
            keep_history=keep_history, initial_step=POLISH_STEP * _scale(x1),
            callback=self._callback,
        ))
        if polish.objective_final <= first.objective_final:
            polish.theta_start, polish.objective_start = first.theta_start, first.objective_start
            polish.evaluations += first.evaluations
            polish.elapsed += first.elapsed
            polish.optimizer = f"{polish.optimizer} twice"
            return polish
        first.evaluations += polish.evaluations
        first.optimizer = f"{first.optimizer} twice"
        return first

    def _stage_two_step(self, modes0: _Modes, scale: np.ndarray) -> np.ndarray:
        """BOBYQA's initial trust region over (θ, β) × ``scale`` (the search's
        coordinates, see ``param_scale``), as lme4's Nelder-Mead steps: 0.02
        for θ (of unit-scale columns), a fifth of each β's standard error
        from the nAGQ = 0 stage's PIRLS system."""
        e = self._engine
        w, z = e.working(modes0.eta, modes0.mu, e.offset)
        theta = self._theta_stage0
        _, _, factor = e.solve(self.lambdas(theta), w, z, True)
        Linv = solve_triangular(factor.RX(), np.eye(e.p), lower=True)
        se = np.sqrt(np.einsum("ij,ij->j", Linv, Linv))
        beta_step = STAGE_TWO_BETA_STEP * np.minimum(se * scale[self.ntheta :], 10.0)
        return np.concatenate([np.full(self.ntheta, STAGE_TWO_THETA_STEP), beta_step])

    def _warn_separation(self) -> None:
        """After the fit: when some fitted probability is within 1e-6 of 0 or 1
        (what separation drives them to), find the separating fixed effects
        (a linear program over the rows, run only then)."""
        self.separated: list[str] = []
        if self.family.name != "binomial":
            return
        mu = self._modes_final.mu
        if not np.any(np.minimum(mu, 1.0 - mu) < 1e-6):
            return
        X = self.frame.fixed.X
        keep = self._engine.wt > 0
        names = separated_columns(X[keep], self._engine.y[keep], self.frame.fixed.names)
        self.separated = names
        if names:
            warn_caller(
                "the data are (quasi-)completely separated by fixed effect(s) "
                + ", ".join(names)
                + ": their estimates are infinite in truth, the ones reported are only as "
                "large as the optimizer went, and their standard errors are meaningless; "
                "consider removing or recoding them (or a penalised fit)",
                SeparationWarning,
            )

    def _set_optimum(
        self, theta, beta, record: OptimizerRecord, check: bool, derivs=None
    ) -> None:
        theta = self._canonical_theta(np.asarray(theta, float))
        modes = self._modes(theta, None if beta is None else np.asarray(beta, float))
        self._theta, self._modes_final = theta, modes
        self._beta = modes.beta if beta is None else np.asarray(beta, float)
        self._u = [modes.u[a:b].reshape(-1, k) for (a, b), k in zip(self._engine.bounds, self._engine.ks)]
        self._objective = self._engine.laplace(modes) if beta is None else self._deviance_at(modes, theta)
        self.optsum = record
        self._cache: dict[str, Any] = {}
        self.convergence: ConvergenceCheck | None = None
        if check:
            self.convergence = self._check_convergence(derivs)
        self._fitted = True
        self._warn_separation()
        if self.convergence is not None and self.convergence.messages:
            warn_caller("; ".join(self.convergence.messages), ConvergenceWarning)
        self._warn_if_singular()

    # ------------------------------------------------------------------ derivatives

    def _derivatives(
        self, params: np.ndarray, f0: float, fun=None, kind: str = "forward"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Central-difference gradient and Hessian of the deviance (lme4's
        ``deriv12``: step 1e-4, one-sided at a lower bound); ``fun`` replaces
        the objective (to count its evaluations). The probes are independent:
        with compiled PIRLS steps (which release the GIL) they run on the
        fit's worker threads.

        ``kind`` chooses the mixed second differences: "forward" (one probe
        per pair, f(x+hᵢ+hⱼ), error O(h): enough for the Newton steps) or
        "lme4" (deriv12's four probes x±hᵢ±hⱼ, error O(h²): the Hessian whose
        inverse gives lme4's standard errors; they moved by ~1e-5 relative
        with the forward one)."""
        x = np.asarray(params, float)
        objective = self.objective if fun is None else fun
        k = len(x)
        lower = np.concatenate([self.theta_lower, np.full(k - self.ntheta, -np.inf)])
        # lme4's step, for unit-scale columns of Z and X (the same where they
        # are moderate): a β of a covariate in huge units moved by 1e-4 would
        # overflow the linear predictor
        h = HESSIAN_STEP / self.param_scale
        down = np.minimum(h, np.where(np.isfinite(lower), x - lower, np.inf))
        shifts: list[dict[int, float]] = [{j: h[j]} for j in range(k)]
        shifts += [{j: -down[j]} if down[j] > 0 else {j: 2 * h[j]} for j in range(k)]
        pairs = [(i, j) for j in range(k) for i in range(j)]
        shifts += [{i: h[i], j: h[j]} for i, j in pairs]
        if kind == "lme4":
            shifts += [s for i, j in pairs for s in ({i: h[i], j: -down[j]}, {i: -down[i], j: h[j]},
                                                    {i: -down[i], j: -down[j]})]
        values = self._evaluate_all(objective, [self._shifted(x, sh) for sh in shifts])
        fplus, fother = values[:k], values[k : 2 * k]
        fpair = values[2 * k : 2 * k + len(pairs)]
        extra = values[2 * k + len(pairs) :]
        H = np.empty((k, k))
        g = np.empty(k)
        for j in range(k):
            hj = h[j]
            if down[j] > 0:
                H[j, j] = fplus[j] / hj**2 - 2 * f0 / (hj * down[j]) + fother[j] / down[j] ** 2
                g[j] = (fplus[j] - fother[j]) / (hj + down[j])
            else:  # at the bound: one-sided (fother holds f(x + 2h))
                H[j, j] = (fother[j] - 2 * fplus[j] + f0) / hj**2
                g[j] = (fplus[j] - f0) / hj
        for n, (i, j) in enumerate(pairs):
            if kind == "lme4" and down[i] > 0 and down[j] > 0:
                H[i, j] = _deriv12_mixed(fpair[n], *extra[3 * n : 3 * n + 3],
                                         (h[i], down[i]), (h[j], down[j]))
            else:
                H[i, j] = (fpair[n] - fplus[i] - fplus[j] + f0) / (h[i] * h[j])
            H[j, i] = H[i, j]
        return g, H

    def _evaluate_all(self, objective, points: list[np.ndarray]) -> np.ndarray:
        """objective at every point, in order; on worker threads when the fit has them."""
        workers = getattr(self, "_workers", 1)
        if workers > 1 and len(points) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                return np.array(list(pool.map(objective, points)))
        return np.array([objective(p) for p in points])

    @staticmethod
    def _shifted(x: np.ndarray, shift: dict[int, float]) -> np.ndarray:
        y = x.copy()
        for j, h in shift.items():
            y[j] += h
        return y

    def _check_convergence(self, derivs=None) -> ConvergenceCheck:
        params = np.concatenate([self._theta, self._beta])
        if derivs is None:  # lme4's deriv12 at the optimum: the SEs' too
            derivs = self._cache["deriv12"] = self._derivatives(params, self._objective, kind="lme4")
        g_raw, H = derivs
        # the checks read the derivatives for unit-scale columns of Z and X
        # (the same where they are moderate), so that they do not depend on units
        scale = self.param_scale
        g = g_raw / scale
        Hs = 0.5 * (H + H.T) / np.outer(scale, scale)
        at_bound = np.zeros(len(params), bool)
        unit_theta = self._theta * self.theta_scale
        at_bound[: self.ntheta] = (self.theta_lower == 0) & (unit_theta < SINGULAR_TOL)
        messages = []
        if not (np.all(np.isfinite(Hs)) and np.all(np.isfinite(g))):
            messages.append(
                "the deviance could not be differentiated at the optimum (non-finite "
                "values): no convergence check, standard errors from the PIRLS system"
            )
            nan = np.full(len(params), np.nan)
            return ConvergenceCheck(g_raw, np.full_like(H, np.nan), np.nan, nan, messages)
        # as lme4's checkConv, the Hessian of the parameters off the boundary
        eig = np.linalg.eigvalsh(Hs[np.ix_(~at_bound, ~at_bound)])
        try:
            c = np.linalg.cholesky(Hs)
            scaled = float(np.max(np.abs(np.linalg.solve(c.T, np.linalg.solve(c, g)))))
        except np.linalg.LinAlgError:
            scaled = float(np.max(np.abs(g)))
        if scaled > GRADIENT_TOL and np.max(np.abs(g[~at_bound]), initial=0.0) > GRADIENT_TOL:
            messages.append(
                f"the optimizer may have stopped short of the optimum: the Newton step still to go "
                f"is {scaled:.3g} (max |gradient| = {np.max(np.abs(g)):.3g}); refit from these "
                "estimates or check the model"
            )
        if eig.min() <= 0:
            messages.append(
                f"the Hessian has {int(np.sum(eig <= 0))} non-positive eigenvalue(s): the optimum "
                "is not a strict minimum, standard errors cannot be trusted"
            )
        elif eig.min() > 0 and eig.max() / eig.min() > 1e6:
            messages.append(
                f"the Hessian is nearly singular (eigenvalue ratio {eig.max() / eig.min():.3g}): "
                "the model is nearly unidentifiable; rescale predictors or simplify the model"
            )
        return ConvergenceCheck(g_raw, H, scaled, eig, messages)

    # ------------------------------------------------------------------ protocol

    @property
    def method(self) -> str:
        if self.nagq == 0:
            return "nAGQ = 0"
        return "Laplace" if self.nagq == 1 else f"AGQ-{self.nagq}"

    @property
    def has_residual(self) -> bool:
        """Whether the family has a scale (Gamma, inverse Gaussian, Gaussian)."""
        return not self.family.dispersion_is_fixed

    @property
    def sigma(self) -> float:
        """The residual scale as lme4's ``sigma``: 1 for the binomial and
        Poisson families; otherwise √((Σ Pearson residuals² + ‖u‖²) / n) at the
        optimum (lme4 reports the random effects' variances and conditional
        variances multiplied by σ² for these families, and so does this)."""
        self._require_fit()
        if self.family.dispersion_is_fixed:
            return 1.0
        e, m = self._engine, self._modes_final
        pearson2 = e.wt * (e.y - m.mu) ** 2 / self.family.variance(m.mu)
        return float(np.sqrt((pearson2.sum() + m.u @ m.u) / self.nobs))

    @property
    def deviance(self) -> float:
        """-2 × log-likelihood, the ``deviance`` of lme4's summary table."""
        self._require_fit()
        return self._objective

    @property
    def deviance_conditional(self) -> float:
        """Σ squared deviance residuals at the conditional modes: what R's
        ``deviance(fit)`` returns for a glmer fit."""
        self._require_fit()
        return float(np.sum(self._dev_resids()))

    def _dev_resids(self) -> np.ndarray:
        e = self._engine
        return e.family.dev_resids(e.y, self._modes_final.mu, e.wt)

    @property
    def n_params(self) -> int:
        """Fixed effects, θ and, for families with a scale (Gamma, inverse
        Gaussian), the scale: lme4's ``npar`` (its ``useSc``)."""
        return len(self._beta) + len(self._theta) + int(self.has_residual)

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed effects: from the finite-difference Hessian of
        the deviance over (θ, β) (lme4's default, ``2 H⁻¹`` restricted to β),
        or from the PIRLS system when there is none (nAGQ = 0, or the Hessian
        is not positive definite)."""
        self._require_fit()
        if "vcov" not in self._cache:
            self._cache["vcov"] = self._vcov_matrix()
        names = self.frame.fixed.names
        return pd.DataFrame(self._cache["vcov"], index=names, columns=names)

    def deviance_hessian(
        self, theta: Any = None, fixef: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient and Hessian of the deviance over (θ, β) as lme4's
        ``deriv12`` computes them for its standard errors: central differences
        with step 1e-4, the mixed ones from the four points x ± hᵢ ± hⱼ.

        Parameters
        ----------
        theta, fixef : array-like, optional
            The point (default: the optimum). Another point (lme4's, say)
            gives the standard errors lme4 would report there:
            ``2 H⁻¹`` restricted to β.

        Returns
        -------
        (gradient, Hessian) : tuple of ndarray
            Ordered θ then β, as lme4's ``optinfo$derivs``.
        """
        self._require_fit()
        if self.nagq == 0:
            raise ModelSpecError(
                "deviance_hessian needs the Laplace or quadrature deviance (nagq >= 1); "
                "with nagq = 0 β is not a parameter of the deviance"
            )
        at_optimum = theta is None and fixef is None
        theta = self._theta if theta is None else np.asarray(theta, float).ravel()
        fixef = self._beta if fixef is None else np.asarray(fixef, float).ravel()
        if theta.shape != (self.ntheta,) or fixef.shape != (len(self._beta),):
            raise ModelSpecError(
                f"deviance_hessian needs {self.ntheta} θ value(s) ({', '.join(self.theta.index)}) "
                f"and {len(self._beta)} fixed effect(s) ({', '.join(self.frame.fixed.names)}); "
                f"got {theta.size} and {fixef.size}"
            )
        params = np.concatenate([theta, fixef])
        if at_optimum and "deriv12" in self._cache:
            return self._cache["deriv12"]
        # the fit's BLAS threads: the same digits as had the fit computed it
        blas = getattr(getattr(self, "optsum", None), "blas_threads", (None, None))[0]
        with blas_threads(blas):
            derivs = self._derivatives(params, self.objective(params), kind="lme4")
        if at_optimum:
            self._cache["deriv12"] = derivs
        return derivs

    def _vcov_matrix(self) -> np.ndarray:
        conv = self.convergence
        k = self.ntheta
        if conv is not None:
            # the Newton steps' Hessian has O(h) mixed differences: lme4's
            # deriv12 (O(h²)), once, is what its standard errors come from
            _, H = self.deviance_hessian()
            H = 0.5 * (H + H.T)
            try:
                Hinv = np.linalg.inv(H)
                V = 2.0 * Hinv[k:, k:]
                if np.all(np.isfinite(V)) and np.linalg.eigvalsh(V).min() > 0:
                    return V
            except np.linalg.LinAlgError:
                pass
        return self._vcov_pirls()

    def _vcov_pirls(self) -> np.ndarray:
        """(R_X'R_X)⁻¹ from a joint PWLS step at the optimum's weights."""
        e = self._engine
        m = self._modes_final
        w, z = e.working(m.eta, m.mu, e.offset)
        _, _, factor = e.solve(self.lambdas(self._theta), w, z, True)
        Linv = solve_triangular(factor.RX(), np.eye(e.p), lower=True)
        return self.sigma**2 * (Linv.T @ Linv)

    def _covariances(self) -> list[np.ndarray]:
        return [self.sigma**2 * lam @ lam.T for lam in self.lambdas(self._theta)]

    @property
    def b(self) -> list[np.ndarray]:
        self._require_fit()
        return [u @ lam.T for u, lam in zip(self._u, self.lambdas(self._theta))]

    def _condvar_b(self) -> list[np.ndarray]:
        """Λ (L L')⁻¹ Λ' per level (lme4's ``condVar``), from the factor of the
        last PIRLS step (a step for u alone: after nAGQ = 0, one is taken)."""
        if "condvar" not in self._cache:
            e, m = self._engine, self._modes_final
            lams = self.lambdas(self._theta)
            factor = m.factor
            if factor.LS.shape[0] != e.system.Q1:  # a joint factor: X rows inside
                w, z = e.working(m.eta, m.mu, e.offset + self.frame.fixed.X @ self._beta)
                _, _, factor = e.solve(lams, w, z, False)
            first, rest = factor.condvar_blocks()
            blocks = [first]
            for (a, b), k in zip(e.system.rest_bounds, e.ks[1:]):
                block = rest[a:b, a:b].reshape((b - a) // k, k, (b - a) // k, k)
                blocks.append(np.einsum("lalb->lab", block))
            s2 = self.sigma**2
            self._cache["condvar"] = [s2 * lam @ c @ lam.T for c, lam in zip(blocks, lams)]
        return self._cache["condvar"]

    # ------------------------------------------------------------------ fitted values

    @property
    def linear_predictor(self) -> pd.Series:
        self._require_fit()
        return pd.Series(self._modes_final.eta, index=self.frame.data.index, name="eta")

    @property
    def fitted(self) -> pd.Series:
        """Fitted means μ (response scale), conditional on the random effects."""
        self._require_fit()
        return pd.Series(self._modes_final.mu, index=self.frame.data.index, name="fitted")

    @property
    def response(self) -> np.ndarray:
        """The response as the fit uses it (binomial: proportions)."""
        return self._engine.y

    def residuals(self, type: str = "deviance") -> pd.Series:
        """Residuals: ``"deviance"`` (R's default for glmer), ``"pearson"``,
        ``"response"`` (y - μ) or ``"working"``."""
        self._require_fit()
        e, m = self._engine, self._modes_final
        y, mu = e.y, m.mu
        if type == "deviance":
            r = np.sign(y - mu) * np.sqrt(np.maximum(self._dev_resids(), 0.0))
        elif type == "pearson":
            r = (y - mu) * np.sqrt(e.wt / self.family.variance(mu))
        elif type == "response":
            r = y - mu
        elif type == "working":
            r = (y - mu) / self.family.mu_eta(m.eta)
        else:
            raise DataError(
                f"residual type must be 'deviance', 'pearson', 'response' or 'working', not {type!r}"
            )
        return pd.Series(r, index=self.frame.data.index, name=f"{type}_residuals")

    def predict(
        self,
        newdata: Any = None,
        re_form: str | None = None,
        type: str = "link",
        new_levels: str = "population",
        interval: str = "none",
        level: float = 0.95,
    ) -> pd.Series | pd.DataFrame:
        """Predictions on the link (default, as R) or response scale.

        Parameters
        ----------
        newdata : DataFrame, optional
            New rows; None predicts the fitted data.
        re_form : None or "~0"
            None includes every random effect; ``"~0"`` gives population predictions.
        type : {"link", "response"}
        new_levels : {"population", "error", "nan"}
            What an unseen grouping level gets (zero random effects by default).
        interval : {"none", "confidence"}
            ``"confidence"``: a DataFrame ``fit, lower, upper`` with the
            uncertainty of the fixed effects (x'V_β x) on the link scale,
            mapped through the inverse link for ``type="response"``. Intervals
            for a new observation need the response distribution: use
            :meth:`simulate` (or :meth:`bootstrap`) for those.
        level : float
            Coverage of the intervals.
        """
        self._require_fit()
        if type not in ("link", "response"):
            raise PredictionError(f"type must be 'link' or 'response', not {type!r}")
        if interval not in ("none", "confidence"):
            raise PredictionError(
                f"interval must be 'none' or 'confidence' for a glmer fit, not {interval!r}: "
                "a prediction interval of a new observation needs the response distribution "
                "(see simulate())"
            )
        fr = self.frame
        if newdata is None:
            include_re = _include_random(re_form)
            eta = self._modes_final.eta if include_re else self._engine.offset + fr.fixed.X @ self._beta
            index = fr.data.index
        else:
            eta, index = self._newdata_eta(newdata, re_form, new_levels)
        if interval == "confidence":
            from mixedmodels.inference.prediction import interval_frame, prediction_variance

            variance = prediction_variance(self, newdata, re_form, new_levels, residual=False)
            transform = self.family.linkinv if type == "response" else None
            return interval_frame(np.asarray(eta, float), variance, interval, level,
                                  transform=transform, re_form=re_form)
        values = eta if type == "link" else self.family.linkinv(eta)
        return pd.Series(np.asarray(values, float), index=index, name="predicted")

    def simulate(
        self, nsim: int = 1, seed: int | np.random.Generator | None = None, use_u: bool = False
    ) -> pd.DataFrame:
        """New responses from the fitted model, one column per simulation
        (binomial: proportions of the trials, as R's ``simulate`` for a
        proportion response; counts for cbind are ``proportion × trials``).

        Parameters
        ----------
        nsim : int
        seed : int or Generator, optional
        use_u : bool
            Condition on the fitted random effects instead of drawing new ones.
        """
        self._require_fit()
        rng = np.random.default_rng(seed)
        fr, e = self.frame, self._engine
        base = e.offset + fr.fixed.X @ self._beta
        lams = self.lambdas(self._theta)
        out = np.empty((fr.nobs, nsim))
        for s in range(nsim):
            eta = base.copy()
            for term, lam, b in zip(fr.terms, lams, self.b):
                bb = b if use_u else rng.standard_normal((term.nlevels, term.k)) @ lam.T
                eta += np.einsum("nk,nk->n", term.z, bb[term.codes])
            out[:, s] = self._draw(self.family.linkinv(eta), rng)
        cols = [f"sim_{i + 1}" for i in range(nsim)]
        return pd.DataFrame(out, index=fr.data.index, columns=cols)

    def _draw(self, mu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        name = self.family.name
        e = self._engine
        if name == "binomial":
            trials = np.rint(e.wt).astype(np.int64)
            return rng.binomial(np.maximum(trials, 0), mu) / np.maximum(trials, 1)
        if name == "poisson":
            return rng.poisson(mu).astype(float)
        # families with a scale: dispersion φ = σ² (as lme4's sigma), prior weights divide it
        phi = self.sigma**2 / e.wt
        if name == "Gamma":  # variance φμ²
            return rng.gamma(1.0 / phi, mu * phi)
        if name == "inverse.gaussian":  # variance φμ³
            return rng.wald(mu, 1.0 / phi)
        return rng.normal(mu, np.sqrt(phi))  # gaussian with another link

    # ------------------------------------------------------------------ tables

    def summary_title(self) -> list[str]:
        approx = {0: "Adaptive Gauss-Hermite Quadrature, nAGQ = 0",
                  1: "Laplace Approximation"}.get(self.nagq, f"Adaptive Gauss-Hermite Quadrature, nAGQ = {self.nagq}")
        return [
            f"Generalized linear mixed model fit by maximum likelihood ({approx})",
            f" Family: {self.family.name}  ( {self.family.link.name} )",
        ]


def _counting(monitor: FitProgress):
    """The optimizers' callback for a fit of several stages: evaluations
    counted across them."""
    count = [0]

    def callback(_: int, best: float) -> None:
        count[0] += 1
        monitor(count[0], best)

    return callback


def _after_stage_zero(record: OptimizerRecord, stage0: OptimizerRecord | None) -> OptimizerRecord:
    """``record`` of the (θ, β) stage counting the nAGQ = 0 stage before it (if any)."""
    if stage0 is not None:
        record.evaluations += stage0.evaluations
        record.elapsed += stage0.elapsed
        record.optimizer = f"{stage0.optimizer} (nAGQ = 0), then {record.optimizer}"
    return record


def _deriv12_mixed(f_pp, f_pm, f_mp, f_mm, steps_i, steps_j) -> float:
    """lme4's deriv12 mixed second difference from f(x ± hᵢ ± hⱼ) ((up, down)
    steps of each coordinate): its expression where all four steps are equal,
    (f₊₊ − f₊₋ − f₋₊ + f₋₋) / (2h)²; the same central difference over the
    product of the spans where a step is scaled (``param_scale``)."""
    (ui, di), (uj, dj) = steps_i, steps_j
    return (f_pp - f_pm - f_mp + f_mm) / ((ui + di) * (uj + dj))


def _scale(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(x), 1.0)


def _check_nagq(nagq: Any) -> int:
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or nagq < 0 or nagq > 100:
        raise DataError(f"nagq must be an integer from 0 to 100, not {nagq!r}")
    return int(nagq)


@r_argument_hints(GeneralizedLinearMixedModel.fit)
def glmer(
    formula: str,
    data: Any,
    family: str | Family = "binomial",
    link: str | None = None,
    nagq: int = 1,
    weights: Any = None,
    offset: Any = None,
    contrasts: Mapping[str, str] | None = None,
    na_action: str = "omit",
    **fit_kwargs: Any,
) -> GeneralizedLinearMixedModel:
    """Fit a generalized linear mixed model, as lme4's ``glmer``.

    Parameters are those of :class:`GeneralizedLinearMixedModel`; ``fit_kwargs``
    go to :meth:`GeneralizedLinearMixedModel.fit`. As in lme4, the Gaussian
    family with the identity link is fitted by :func:`mixedmodels.lmer`
    (with a warning), and that model is returned.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> m = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              mm.datasets.load("cbpp"), family="binomial")
    >>> round(m.loglik, 2)
    -92.03
    """
    fam = get_family(family, link)
    if fam.name == "gaussian" and fam.link.name == "identity":
        # lme4 hands this case to lmer (with a deprecation warning): the
        # Gaussian GLMM with the identity link is the linear mixed model
        warnings.warn(
            "glmer with the Gaussian family and identity link is the linear mixed model: "
            "fitting it with lmer (REML, as lme4 does); call mixedmodels.lmer directly",
            UserWarning,
            stacklevel=2,
        )
        from mixedmodels.models.lmm.model import lmer

        # the fit options go along (lmer names any it does not take)
        return lmer(formula, data, weights=weights, offset=offset, contrasts=contrasts,
                    na_action=na_action, **fit_kwargs)
    model = GeneralizedLinearMixedModel(
        formula, data, family=fam, nagq=nagq, weights=weights, offset=offset,
        contrasts=contrasts, na_action=na_action,
    )
    return model.fit(**fit_kwargs)
