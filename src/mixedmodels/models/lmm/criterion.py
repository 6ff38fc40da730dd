"""The profiled criterion of a linear mixed model as a function of θ.

Its value, its analytic gradient and, kept apart, the two θ-dependent pieces
(log-determinant and penalised residual sum of squares) that inference
differentiates (Satterthwaite's and Kenward-Roger's degrees of freedom).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mixedmodels.linalg.factor import Factor

__all__ = ["CriterionPieces", "ProfiledCriterion"]


class ProfiledCriterion:
    """The objective of a linear mixed model and its gradient in θ.

    A base class of :class:`~mixedmodels.models.lmm.model.LinearMixedModel`
    (not used by itself); it gives the model :meth:`objective` and
    :meth:`objective_gradient`. It reads the model's engine and design:
    ``system`` (the augmented or dense system), ``frame``, ``reml``,
    ``n_eff``, ``log_det_weights``, ``theta_slices``, ``lambdas``, ``theta_scale`` and
    ``theta_lower``.
    """

    def profiled_criterion(self, f: Factor, reml: bool) -> float:
        """Return the profiled deviance (ML) or REML criterion of a factorisation.

        Parameters
        ----------
        f : Factor
            The system factorised at some θ (``system.factor(lambdas(θ))``;
            at the optimum ``fitted_factor``).
        reml : bool
            The REML criterion (True) or the ML deviance (False).

        Returns
        -------
        float
            The criterion, σ profiled out, with the prior weights' log-determinant.
        """
        n, p = self.n_eff, self.frame.fixed.p
        r2 = f.pwrss()
        if reml:
            nmp = n - p
            return float(
                f.logdet_re() + f.logdet_x() + nmp * (1.0 + np.log(2 * np.pi * r2 / nmp)) - self.log_det_weights
            )
        return float(f.logdet_re() + n * (1.0 + np.log(2 * np.pi * r2 / n)) - self.log_det_weights)

    def objective(self, theta: np.ndarray) -> float:
        """Return the profiled deviance (ML) or REML criterion at ``theta``."""
        f = self.system.factor(self.lambdas(np.asarray(theta, dtype=float)))
        if f is None:
            return np.inf
        return self.profiled_criterion(f, self.reml)

    def objective_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Return the objective and its analytic gradient with respect to θ.

        See ``_objective_gradient``; refitted copies of small models use
        :class:`~mixedmodels.models.lmm.engine.SmallDenseEvaluator`, the same
        gradient in fewer operations.
        """
        fast = self.__dict__.get("_fast")
        if fast is not None:
            return fast(np.asarray(theta, dtype=float))
        return self._objective_gradient(theta)

    def _objective_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Return the objective and its analytic gradient with respect to θ.

        For θ_t the (r, c) element of term j's λ_j, with U_j the (ℓ_j, k_j)
        spherical modes and B_j the sum over levels of the diagonal blocks of
        M⁻¹ (ML) or of the random-effects block of Ω⁻¹ (REML)::

            ∂d/∂θ_t = 2[(ℓ_j I - B_j) λ_j⁻¹]_{c,r} - 2 (ν / r²) [λ_j⁻ᵀ U_j'U_j]_{r,c}

        with ν = n (ML) or n - p (REML). It follows from Λ'Z'V⁻¹ZΛ = I - M⁻¹ and
        the normal equations Λ'Z'(y - Xβ - ZΛu) = u. The blocked system uses
        this form, which needs λ_j invertible (elements of a term with a
        (near-)zero diagonal in λ_j are then differentiated numerically); the
        dense system computes the same two k x k matrices without inverting λ_j
        (see ``gradient_parts``), so singular fits keep an exact gradient.
        """
        value, grad, _ = self._evaluate(theta)
        return value, grad

    def _evaluate(self, theta: np.ndarray) -> tuple[float, np.ndarray, list | None]:
        """Return the objective, its gradient and the system's per-term gradient parts.

        The parts are None where θ cannot be factorised.
        """
        theta = np.asarray(theta, dtype=float)
        lams = self.lambdas(theta)
        f = self.system.factor(lams)
        if f is None:
            return np.inf, np.zeros_like(theta), None
        value = self.profiled_criterion(f, self.reml)
        beta, us = self.system.solve(f)
        n, p = self.n_eff, self.frame.fixed.p
        nu = n - p if self.reml else n
        r2 = f.pwrss()
        sub = self.system.Q1 + (p if self.reml else 0)
        parts = self.system.gradient_parts(f, sub, beta, us)
        d_logdet, d_pwrss, numeric = self._gradient_blocks(parts, len(theta))
        grad = d_logdet + (nu / r2) * d_pwrss
        for i in numeric:
            grad[i] = self._numeric_partial(theta, i, value)
        self._last_factor = (theta.copy(), f)  # the optimum is usually the last point
        return value, grad, parts

    def _start_evaluation(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Return the objective, its gradient and the Hessian's diagonal at a search's start.

        The estimates of the Hessian's diagonal (see ``curvature_estimate``)
        are only given when every term is a scalar (``(1 | g)``), else None.
        """
        if self.__dict__.get("_fast") is not None or any(t.k != 1 for t in self.frame.terms):
            value, grad = self.objective_gradient(theta)
            return value, grad, None
        value, grad, parts = self._evaluate(theta)
        return value, grad, self.curvature_estimate(theta, parts)

    def curvature_estimate(self, theta: np.ndarray, parts: list | None) -> np.ndarray | None:
        """Return estimates of the Hessian's diagonal at ``theta`` for all-scalar terms.

        None where they are not usable. For a scalar term with ℓ levels,
        g_i = [M⁻¹]_ii over its levels and B = Σ g_i, the expected information
        of log θ in the one-way model gives
        ∂²d/∂θ² ≈ 4 Σ (1 - g_i)² / θ² >= 4 (ℓ - B)² / (ℓ θ²) = 4 K² / ℓ with
        K = (ℓ - B) / θ the gradient part the evaluation already has. Crossed
        terms hardly interact in the Hessian (off-diagonal entries are a few
        percent of the diagonal ones on InstEval), so the diagonal is what
        matters for scaling the search.
        """
        if parts is None:
            return None
        h = []
        for term, part in zip(self.frame.terms, parts):
            if part is None:
                return None
            K = float(part[0][0, 0])
            h.append(4.0 * K * K / term.nlevels)
        h = np.array(h)
        near_zero = np.abs(theta) * self.theta_scale < 1e-3
        if not np.all(np.isfinite(h)) or np.any(h <= 0) or np.any(near_zero):
            return None
        # a term the objective hardly depends on (its grouping aliased with fixed
        # effects: K ~ 0) would get a step scale of ~1/sqrt(h), far outside
        # anything factorisable: that search cannot be scaled by these estimates
        if h.min() < 1e-10 * h.max():
            return None
        return h

    def _gradient_blocks(self, parts, ntheta: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Return ∂logdet/∂θ = 2 K[c, r] and ∂pwrss/∂θ = -2 R[r, c] from the per-term (K, R).

        Also the θ elements the system could not give (NaN there: a term of
        the blocked system whose λ is singular).
        """
        d_logdet = np.full(ntheta, np.nan)
        d_pwrss = np.full(ntheta, np.nan)
        missing: list[int] = []
        for term, sl, part in zip(self.frame.terms, self.theta_slices, parts):
            if part is None:  # λ singular where only the λ⁻¹ form is available
                missing.extend(range(sl.start, sl.stop))
                continue
            K, R = part
            rows, cols = term.theta_rows_cols()
            d_logdet[sl] = 2.0 * K[cols, rows]
            d_pwrss[sl] = -2.0 * R[rows, cols]
        return d_logdet, d_pwrss, missing

    def _numeric_partial(self, theta: np.ndarray, i: int, value: float) -> float:
        """One partial derivative by differences, one-sided at a lower bound."""
        h = _difference_step(theta, i, self.theta_scale)
        up = theta.copy()
        up[i] += h
        if self.theta_lower[i] == 0 and theta[i] - h < 0:
            return (self.objective(up) - value) / h
        down = theta.copy()
        down[i] -= h
        return (self.objective(up) - self.objective(down)) / (2 * h)

    def criterion_pieces_gradient(
        self, theta: np.ndarray, reml: bool | None = None, numeric: bool = True
    ) -> "CriterionPieces | None":
        """Return the two θ-dependent pieces of the deviance, with their analytic gradients.

        The pieces are those before σ is profiled out. With σ kept, the ML
        deviance is ``logdet + pwrss / σ² + n log(2πσ²)`` and the REML
        criterion ``logdet + pwrss / σ² + (n - p) log(2πσ²)``, where
        ``logdet = log|L_θ|²`` (ML) or ``log|L_θ|² + log|R_X|²`` (REML) and
        ``pwrss = r²_θ`` (lmerTest's ``devfun_vp``). These are the two
        matrices of ``_objective_gradient`` kept apart:
        ``∂logdet/∂θ_t = 2 K[c, r]`` and ``∂pwrss/∂θ_t = -2 R[r, c]``
        (its profiled gradient is ``∂logdet + ν ∂pwrss / r²``).

        Parameters
        ----------
        theta : ndarray
            Where to evaluate.
        reml : bool, optional
            Whether ``logdet`` includes ``log|R_X|²``; the model's own
            criterion by default.
        numeric : bool, default True
            Elements the system can only differentiate through λ⁻¹ (a term of
            the blocked system whose λ has a (near-)zero diagonal) are then
            central differences of each piece (step 1e-6 max(1, |θ_t|));
            with False they are NaN.

        Returns
        -------
        CriterionPieces or None
            None when the system cannot be factorised at ``theta``.
        """
        theta = np.asarray(theta, dtype=float)
        reml = self.reml if reml is None else bool(reml)
        f = self.system.factor(self.lambdas(theta))
        if f is None:
            return None
        # read the factor now: the blocked system reuses its buffers on the
        # next factorisation (numeric partials below)
        logdet_re, logdet_x, r2 = float(f.logdet_re()), float(f.logdet_x()), float(f.pwrss())
        LX = np.array(f.LX(), dtype=float)
        beta, us = self.system.solve(f)
        p = self.frame.fixed.p
        sub = self.system.Q1 + (p if reml else 0)
        parts = self.system.gradient_parts(f, sub, beta, us)
        d_logdet, d_pwrss, missing = self._gradient_blocks(parts, len(theta))
        if numeric:
            for i in missing:
                d_logdet[i], d_pwrss[i] = self._numeric_pieces_partial(theta, i, reml)
        logdet = logdet_re + (logdet_x if reml else 0.0)
        return CriterionPieces(logdet, r2, d_logdet, d_pwrss, logdet_re, logdet_x, LX)

    def _numeric_pieces_partial(self, theta: np.ndarray, i: int, reml: bool) -> tuple[float, float]:
        """Return central differences of (logdet, pwrss) in θ_i.

        Both sides: the pieces are smooth through θ_i = 0.
        """
        h = _difference_step(theta, i, self.theta_scale)
        vals = []
        for sign in (1.0, -1.0):
            x = theta.copy()
            x[i] += sign * h
            f = self.system.factor(self.lambdas(x))
            if f is None:
                return np.nan, np.nan
            vals.append((f.logdet_re() + (f.logdet_x() if reml else 0.0), f.pwrss()))
        return (vals[0][0] - vals[1][0]) / (2 * h), (vals[0][1] - vals[1][1]) / (2 * h)


class CriterionPieces(NamedTuple):
    """What :meth:`LinearMixedModel.criterion_pieces_gradient` returns at one θ.

    Attributes
    ----------
    logdet : float
        log|L_θ|² (+ log|R_X|² for REML).
    pwrss : float
        r²_θ, the penalised weighted residual sum of squares.
    d_logdet, d_pwrss : ndarray
        Their gradients with respect to θ (NaN where not available).
    logdet_re, logdet_x : float
        log|L_θ|² and log|R_X|² separately.
    LX : ndarray
        The fixed-effects factor (a copy): vcov(β) = σ² (L_X L_X')⁻¹.
    """

    logdet: float
    pwrss: float
    d_logdet: np.ndarray
    d_pwrss: np.ndarray
    logdet_re: float
    logdet_x: float
    LX: np.ndarray


def _difference_step(theta: np.ndarray, i: int, theta_scale: np.ndarray) -> float:
    """Return the step for differences in θ_i, in θ's own units.

    The step is 1e-6 max(1, |θ_i|) on the unit-scale columns' θ (see
    ``RandomEffectsModel.theta_scale``).
    """
    return 1e-6 * max(1.0, abs(theta[i]) * theta_scale[i]) / theta_scale[i]
