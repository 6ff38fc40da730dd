"""The results of a GLMM fit that the fitted-model protocol reads.

The protocol is :class:`~mixedmodels.report.results.MixedModelResults`; the
results are the scale, deviances, covariances of the fixed and the random
effects, fitted values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular

__all__ = ["GlmerResults"]


class GlmerResults:
    """The results part of a generalized linear mixed model.

    A mixin of :class:`~mixedmodels.models.glmm.model.GeneralizedLinearMixedModel`
    (not used by itself): it reads the fit's θ, β, modes, engine and family.
    It gives the model ``method``, ``has_residual``, ``sigma``, ``deviance``,
    ``deviance_conditional``, ``n_params``, ``vcov``, ``b``,
    ``linear_predictor``, ``fitted``, ``response`` and ``summary_title``.
    """

    @property
    def method(self) -> str:
        """The approximation's short name: ``"nAGQ = 0"``, ``"Laplace"`` or ``"AGQ-<nagq>"``."""
        if self.nagq == 0:
            return "nAGQ = 0"
        return "Laplace" if self.nagq == 1 else f"AGQ-{self.nagq}"

    @property
    def has_residual(self) -> bool:
        """Whether the family has a scale (Gamma, inverse Gaussian, Gaussian)."""
        return not self.family.dispersion_is_fixed

    @property
    def sigma(self) -> float:
        """The residual scale as lme4's ``sigma``.

        It is 1 for the binomial and Poisson families; otherwise
        √((Σ Pearson residuals² + ‖u‖²) / n) at the optimum (lme4 reports the
        random effects' variances and conditional variances multiplied by σ²
        for these families, and so does this).
        """
        self.require_fit()
        if self.family.dispersion_is_fixed:
            return 1.0
        e, m = self._engine, self._modes_final
        pearson2 = e.wt * (e.y - m.mu) ** 2 / self.family.variance(m.mu)
        return float(np.sqrt((pearson2.sum() + m.u @ m.u) / self.nobs))

    @property
    def deviance(self) -> float:
        """-2 × log-likelihood, the ``deviance`` of lme4's summary table."""
        self.require_fit()
        return self.fitted_objective

    @property
    def deviance_conditional(self) -> float:
        """Σ squared deviance residuals at the conditional modes.

        That is what R's ``deviance(fit)`` returns for a glmer fit.
        """
        self.require_fit()
        return float(np.sum(self._dev_resids()))

    def _dev_resids(self) -> np.ndarray:
        e = self._engine
        return e.family.dev_resids(e.y, self._modes_final.mu, e.wt)

    @property
    def n_params(self) -> int:
        """Number of parameters, as lme4's ``npar``.

        Fixed effects, θ and, for families with a scale (Gamma, inverse
        Gaussian), the scale (lme4's ``useSc``).
        """
        return len(self._beta) + len(self.theta_vector) + int(self.has_residual)

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effects estimates.

        It comes from the finite-difference Hessian of the deviance over
        (θ, β) (lme4's default, ``2 H⁻¹`` restricted to β), or from the PIRLS
        system when there is none (nAGQ = 0, or the Hessian is not positive
        definite).
        """
        self.require_fit()
        if "vcov" not in self._cache:
            self._cache["vcov"] = self._vcov_matrix()
        names = self.frame.fixed.names
        return pd.DataFrame(self._cache["vcov"], index=names, columns=names)

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
        _, _, factor = e.solve(self.lambdas(self.theta_vector), w, z, True)
        Linv = solve_triangular(factor.RX(), np.eye(e.p), lower=True)
        return self.sigma**2 * (Linv.T @ Linv)

    @property
    def b(self) -> list[np.ndarray]:
        """Conditional modes per term, (ℓ, k) arrays in the engine's term order."""
        self.require_fit()
        return [u @ lam.T for u, lam in zip(self._u, self.lambdas(self.theta_vector))]

    def condvar_b(self) -> list[np.ndarray]:
        """Return the conditional covariance of b per term and level: Λ (L L')⁻¹ Λ'.

        As lme4's ``condVar``, from the factor of the last PIRLS step (a step
        for u alone: after nAGQ = 0, one is taken).
        """
        if "condvar" not in self._cache:
            e, m = self._engine, self._modes_final
            lams = self.lambdas(self.theta_vector)
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
        """The linear predictor η at the fit, conditional on the random effects."""
        self.require_fit()
        return pd.Series(self._modes_final.eta, index=self.frame.data.index, name="eta")

    @property
    def fitted(self) -> pd.Series:
        """Fitted means μ (response scale), conditional on the random effects."""
        self.require_fit()
        return pd.Series(self._modes_final.mu, index=self.frame.data.index, name="fitted")

    @property
    def response(self) -> np.ndarray:
        """The response as the fit uses it (binomial: proportions)."""
        return self._engine.y

    # ------------------------------------------------------------------ tables

    def summary_title(self) -> list[str]:
        """Return the summary's first lines: the method (lme4's words) and the family."""
        approx = {0: "Adaptive Gauss-Hermite Quadrature, nAGQ = 0",
                  1: "Laplace Approximation"}.get(self.nagq, f"Adaptive Gauss-Hermite Quadrature, nAGQ = {self.nagq}")
        return [
            f"Generalized linear mixed model fit by maximum likelihood ({approx})",
            f" Family: {self.family.name}  ( {self.family.link.name} )",
        ]
