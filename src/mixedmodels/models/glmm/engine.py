"""PIRLS and the Laplace / quadrature deviance of a GLMM.

They are lme4's ``pwrssUpdate`` and ``glmerLaplace`` / ``glmerAGQ`` over one
model frame.

For a relative covariance factor Λ(θ) and fixed effects β, the conditional
modes ũ of the spherical random effects minimise the penalised deviance

    pdev(u) = Σ devresid(y, μ(u)) + ‖u‖²,   η = offset + Xβ + ZΛu,  μ = g⁻¹(η),

found by penalised iteratively reweighted least squares (PIRLS): each step
solves the weighted least-squares problem of the working response with the
working weights w = prior weight · (dμ/dη)² / V(μ). The engine asks the
family for everything that differs between families (its deviance split,
its saturated log-likelihood, its compiled-kernel codes); numpy steps, or
the compiled ones of :mod:`mixedmodels.models.glmm.compiled`.

lme4's quadrature deviance drops the saturated log-likelihood that ``aic``
holds (so its log-likelihood is shifted for binomial counts, lme4 issue 161);
here it is added back, so that ``nagq = 25`` gives the marginal log-likelihood
itself, on the same scale as the Laplace one.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import scipy.sparse as sp

from mixedmodels.families import Family
from mixedmodels.linalg.pwls import BlockedSystem, term_matrix
from mixedmodels.models.glmm.compiled import CompiledTerms
from mixedmodels.models.glmm.modes import (
    PIRLS_FAILURES,
    PIRLS_MAXIT,
    STEP_HALVINGS,
    Modes,
    PirlsError,
)
from mixedmodels.spec.frame import ModelFrame

__all__ = ["Engine", "gauss_hermite"]


class Engine:
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
        self._set_response_constants()
        self._frame = frame
        self.compiled = CompiledTerms.build(frame, family)
        self._start_cache: list | None = None  # [η, μ, unit sums or None] of a stage's start

    @functools.cached_property
    def Z(self) -> sp.csr_matrix:
        """The random-effects model matrix, sparse.

        Built on first use: the compiled steps do not need it.
        """
        return sp.hstack([term_matrix(t) for t in self._terms], format="csr")

    @functools.cached_property
    def _X_columns(self) -> np.ndarray:
        """X in Fortran order, for Xβ as a sum of columns.

        That is 2-3x faster than row-by-row dot products with a handful of
        columns (the compiled steps' X' seen transposed, when they hold it).
        """
        if self.compiled is not None:
            return self.compiled.XT.T
        return np.asfortranarray(self.X)

    def fixed_offset(self, beta: np.ndarray) -> np.ndarray:
        """Return the offset plus Xβ: the part of η held fixed with β."""
        return self.offset + self._X_columns @ beta

    @functools.cached_property
    def system(self) -> BlockedSystem:
        """The blocked PWLS system of the numpy steps (built on first use)."""
        return BlockedSystem(self._terms, self.X)

    def with_response(self, y: np.ndarray, n: np.ndarray, prior_weights: np.ndarray) -> "Engine":
        """Return the same engine (design, blocked system) for another response.

        Only the response-dependent constants are recomputed.
        """
        new = copy.copy(self)
        new.y, new.n, new.wt = y, n, prior_weights
        new._set_response_constants()
        new._start_cache = None
        if new.compiled is None:  # the process's first small model (see CompiledTerms): its refits are not
            new.compiled = CompiledTerms.build(new._frame, new.family)
            new.__dict__.pop("_X_columns", None)
        return new

    def _set_response_constants(self) -> None:
        """Compute what the family gives once per response.

        That is the deviance as a function of μ (``deviance_constant``: its
        μ-free part, which the compiled steps add to theirs) and
        ``saturated``, ``aic - deviance`` where that is the same at every μ
        (else None).
        """
        self._deviance = self.family.deviance_at(self.y, self.wt)
        self.deviance_constant = self._deviance.constant
        self.saturated = self.family.saturated_aic(self.y, self.n, self.wt)

    # -- pieces ---------------------------------------------------------------

    def _lam_times(self, lams, u: np.ndarray) -> np.ndarray:
        out = np.empty_like(u)
        for (a, b), lam in zip(self.bounds, lams):
            k = lam.shape[0]
            out[a:b] = (u[a:b].reshape(-1, k) @ lam.T).ravel()
        return out

    def penalised_deviance(self, mu: np.ndarray, u: np.ndarray) -> float:
        """Return PIRLS's penalised deviance: Σ deviance residuals at μ plus ‖u‖²."""
        return self.deviance(mu) + float(u @ u)

    def deviance(self, mu: np.ndarray) -> float:
        """Return Σ deviance residuals at μ.

        As the family splits them, see
        :meth:`Family.deviance_at <mixedmodels.families.family.Family.deviance_at>`.
        """
        return self._deviance(mu)

    def working(
        self, eta: np.ndarray, mu: np.ndarray, offset: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the working weights and working response (η without ``offset``)."""
        fam = self.family
        d = fam.mu_eta(eta)
        w = self.wt * d * d / fam.variance(mu)
        z = eta - offset + (self.y - mu) / d
        return w, z

    @staticmethod
    def scalar_lambdas(theta) -> np.ndarray:
        """Return λ of a model whose terms are all scalar, for the compiled steps: θ as floats.

        The compiled steps are only built for such models.
        """
        return np.asarray(theta, dtype=float)

    def solve(self, lams, w: np.ndarray, z: np.ndarray, joint: bool):
        """Take one PWLS step; return (u, β, factor)."""
        res = self.system.solve(lams, w, z, joint)
        if res is None:
            raise PirlsError(PIRLS_FAILURES[1])
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
    ) -> Modes:
        """Find the conditional modes by PIRLS, as lme4's ``pwrssUpdate``.

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
        c = self.compiled
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
                raise PirlsError(PIRLS_FAILURES[2])
            if pdev - old > tol:
                raise PirlsError(PIRLS_FAILURES[3])
            old, u_prev, b_prev = pdev, u, b
        return Modes(u, b, eta, mu, factor, pdev, it)

    def _start_state(self, eta_start: np.ndarray, sums: bool) -> tuple[np.ndarray, tuple | None]:
        """Return μ at PIRLS's starting η and, with ``sums``, the compiled steps' sums there.

        The sums are the system at unit λ (see ``CompiledTerms.unit_sums``),
        else None. Every evaluation of a stage starts from the same η, so
        both are computed once per stage (η arrays are never changed in
        place).
        """
        cached = self._start_cache
        if cached is None or cached[0] is not eta_start:
            cached = self._start_cache = [eta_start, self.family.linkinv(eta_start), None]
        if sums and cached[2] is None:
            cached[2] = self.compiled.unit_sums(self, eta_start, cached[1])
        return cached[1], cached[2] if sums else None

    def _step(self, lams, eta: np.ndarray, mu: np.ndarray, offset: np.ndarray, joint: bool):
        """Take one PWLS step from (η, μ); return (u, β or empty, factor)."""
        if self.compiled is not None:
            return self._compiled_result(self.compiled.solve(self, lams, eta, mu, offset, joint))
        w, z = self.working(eta, mu, offset)
        return self.solve(lams, w, z, joint)

    @staticmethod
    def _compiled_result(res):
        if res is None:
            raise PirlsError(PIRLS_FAILURES[1])
        return res

    def _update(self, lams, u: np.ndarray, b: np.ndarray, offset: np.ndarray):
        if self.compiled is not None:
            eta, mu, dev = self.compiled.update(self, lams, u, b, offset)
            return eta, mu, dev + self.deviance_constant + float(u @ u)
        eta = offset + self.Z @ self._lam_times(lams, u)
        if len(b):
            eta = eta + self.X @ b
        mu = self.family.linkinv(eta)
        return eta, mu, self.penalised_deviance(mu, u)

    # -- deviances ---------------------------------------------------------------

    def aic_term(self, mu: np.ndarray) -> float:
        """Return R's ``family$aic`` at μ (-2 × conditional log-likelihood)."""
        dev = self.deviance(mu)
        if self.saturated is not None:
            return dev + self.saturated
        return float(self.family.aic(self.y, self.n, mu, self.wt, dev))

    def laplace(self, modes: Modes) -> float:
        """Return lme4's Laplace deviance: aic + ‖u‖² + log det(Λ'Z'WZΛ + I)."""
        if self.saturated is not None:  # aic = deviance + constant: PIRLS's pdev has it
            return modes.pdev + self.saturated + modes.ldL2()
        return self.aic_term(modes.mu) + float(modes.u @ modes.u) + modes.ldL2()

    def quadrature(self, modes: Modes, lams, nodes: np.ndarray, weights: np.ndarray) -> float:
        """Return the adaptive Gauss-Hermite deviance for one scalar term.

        It is lme4's glmerAGQ with the saturated log-likelihood added back
        (see the module notes).
        """
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


def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the nodes and weights of the n-point Gauss-Hermite rule, as lme4's ``GHrule``.

    The rule is for the standard normal density (the weights sum to 1).
    """
    z, w = np.polynomial.hermite_e.hermegauss(n)
    z = (z - z[::-1]) / 2  # exactly symmetric, with an exact zero node for odd n
    w = (w + w[::-1]) / 2
    return z, w / w.sum()
