"""lme4's finite-difference derivatives of the GLMM deviance and its convergence check.

The derivatives over (θ, β) are lme4's ``deriv12``, the check its
``checkConv``: the Newton steps, the standard errors and the warnings at the
optimum come from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixedmodels.exceptions import ModelSpecError
from mixedmodels.models.base import SINGULAR_TOL
from mixedmodels.support.threads import blas_threads

__all__ = ["GRADIENT_TOL", "HESSIAN_STEP", "ConvergenceCheck", "FiniteDifferences", "deriv12_mixed"]

# lme4's checkConv: a scaled gradient above this draws a convergence warning.
GRADIENT_TOL = 2e-3
# lme4's deriv12 step for the finite-difference Hessian over (θ, β).
HESSIAN_STEP = 1e-4


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
        """Whether the optimum looks sound (no messages)."""
        return not self.messages


class FiniteDifferences:
    """The derivatives part of a generalized linear mixed model.

    A mixin of :class:`~mixedmodels.models.glmm.model.GeneralizedLinearMixedModel`
    (not used by itself): it reads the model's ``objective``,
    ``param_scale``, bounds and optimum. It gives the model
    :meth:`deviance_hessian` and the convergence check.
    """

    def _derivatives(
        self, params: np.ndarray, f0: float, fun=None, kind: str = "forward"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the central-difference gradient and Hessian of the deviance.

        As lme4's ``deriv12``: step 1e-4, one-sided at a lower bound. ``fun``
        replaces the objective (to count its evaluations). The probes are
        independent: with compiled PIRLS steps (which release the GIL) they
        run on the fit's worker threads.

        ``kind`` chooses the mixed second differences: "forward" (one probe
        per pair, f(x+hᵢ+hⱼ), error O(h): enough for the Newton steps) or
        "lme4" (deriv12's four probes x±hᵢ±hⱼ, error O(h²): the Hessian whose
        inverse gives lme4's standard errors; they moved by ~1e-5 relative
        with the forward one).
        """
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
                H[i, j] = deriv12_mixed(fpair[n], *extra[3 * n : 3 * n + 3],
                                         (h[i], down[i]), (h[j], down[j]))
            else:
                H[i, j] = (fpair[n] - fplus[i] - fplus[j] + f0) / (h[i] * h[j])
            H[j, i] = H[i, j]
        return g, H

    def _evaluate_all(self, objective, points: list[np.ndarray]) -> np.ndarray:
        """Evaluate ``objective`` at every point, in order; on the fit's worker threads if any."""
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
        params = np.concatenate([self.theta_vector, self._beta])
        if derivs is None:  # lme4's deriv12 at the optimum: the SEs' too
            derivs = self._cache["deriv12"] = self._derivatives(params, self.fitted_objective, kind="lme4")
        g_raw, H = derivs
        # the checks read the derivatives for unit-scale columns of Z and X
        # (the same where they are moderate), so that they do not depend on units
        scale = self.param_scale
        g = g_raw / scale
        Hs = 0.5 * (H + H.T) / np.outer(scale, scale)
        at_bound = np.zeros(len(params), bool)
        unit_theta = self.theta_vector * self.theta_scale
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

    def deviance_hessian(
        self, theta: Any = None, fixef: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the gradient and Hessian of the deviance over (θ, β), as lme4's ``deriv12``.

        As ``deriv12`` computes them for its standard errors: central
        differences with step 1e-4, the mixed ones from the four points
        x ± hᵢ ± hⱼ.

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
        self.require_fit()
        if self.nagq == 0:
            raise ModelSpecError(
                "deviance_hessian needs the Laplace or quadrature deviance (nagq >= 1); "
                "with nagq = 0 β is not a parameter of the deviance"
            )
        at_optimum = theta is None and fixef is None
        theta = self.theta_vector if theta is None else np.asarray(theta, float).ravel()
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


def deriv12_mixed(f_pp, f_pm, f_mp, f_mm, steps_i, steps_j) -> float:
    """Return lme4's deriv12 mixed second difference from f(x ± hᵢ ± hⱼ).

    ``steps_i`` and ``steps_j`` are the (up, down) steps of each coordinate.
    It is deriv12's expression where all four steps are equal,
    (f₊₊ − f₊₋ − f₋₊ + f₋₋) / (2h)²; the same central difference over the
    product of the spans where a step is scaled (``param_scale``).
    """
    (ui, di), (uj, dj) = steps_i, steps_j
    return (f_pp - f_pm - f_mp + f_mm) / ((ui + di) * (uj + dj))
