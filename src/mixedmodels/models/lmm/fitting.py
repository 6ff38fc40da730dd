"""The search for the optimum of a linear mixed model.

Starting θ, the optimizer runs (L-BFGS-B with the analytic gradient,
BOBYQA), the boundary and the estimates read off the factor at the optimum.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from mixedmodels.exceptions import ConvergenceWarning, DataError
from mixedmodels.linalg.augmented import AugmentedSystem
from mixedmodels.linalg.factor import Factor
from mixedmodels.models.lmm.starts import backfitted_ratios, unit_regression_start
from mixedmodels.optim.minimize import (
    OptimizerRecord,
    ThetaScaling,
    minimize_theta,
    minimize_theta_gradient,
)
from mixedmodels.support.threads import auto_thread_plan

if TYPE_CHECKING:  # the model imports this module
    from mixedmodels.models.lmm.model import LinearMixedModel

__all__ = ["OptimumSearch"]


class OptimumSearch:
    """The fit's stages of a linear mixed model: start, search, optimum.

    A base class of :class:`~mixedmodels.models.lmm.model.LinearMixedModel`
    (not used by itself; ``fit`` itself is the model's); it gives the model
    :meth:`initial_theta`. It uses the criterion
    (:class:`~mixedmodels.models.lmm.criterion.ProfiledCriterion`) and sets
    what a fit sets (``optsum``, ``theta_vector``, ``fitted_factor``, ``_beta``,
    ``_u``, ``_sigma``, ``fitted_objective``, ``_cache``, ``_fitted``).
    """

    def blas_thread_plan(self, threads: int | str) -> tuple[int | None, int | None]:
        """Return the BLAS threads of the fit and, if different, of its factorisations.

        See :func:`~mixedmodels.support.threads.auto_thread_plan`.
        """
        if threads != "auto":
            return int(threads), None
        return auto_thread_plan(self.system.dense_size)

    def _fit(
        self, start, optimizer, ftol_rel, maxeval, keep_history, monitor
    ) -> "LinearMixedModel":
        theta0 = self.initial_theta() if start is None else np.asarray(start, dtype=float)
        # the search runs on θ for unit-scale random-effects columns, so that
        # its steps and stopping rules do not depend on the covariates' units
        scaling = ThetaScaling(self.theta_scale)
        objective = scaling.objective(self.objective)
        x0 = scaling.to_search(theta0)
        if optimizer == "lbfgsb":
            # No bounds: the objective depends on Σ = σ²λλ' only, which is the
            # same for λ with a column's sign flipped, so the search may pass
            # through a zero diagonal instead of sticking to it (bounded searches
            # stopped at a boundary point worse than lme4's on a maximal 8 x 8
            # model); the signs are made positive at the end (_canonical_theta).
            record = minimize_theta_gradient(
                scaling.objective_gradient(self.objective_gradient),
                objective,
                x0,
                np.full_like(self.theta_lower, -np.inf),
                ftol_rel=ftol_rel,
                maxeval=maxeval,
                keep_history=keep_history,
                callback=monitor,
                start_evaluation=scaling.start_evaluation(self._start_evaluation),
            )
            if not record.converged:  # a failed line search: finish derivative-free
                polish = minimize_theta(
                    objective,
                    record.theta_final,
                    self.theta_lower,
                    ftol_rel=ftol_rel,
                    callback=monitor,
                )
                polish.evaluations += record.evaluations
                polish.optimizer = "L-BFGS-B, then LN_BOBYQA"
                polish.theta_start, polish.objective_start = x0, record.objective_start
                record = polish
        else:
            record = minimize_theta(
                objective,
                x0,
                self.theta_lower,
                ftol_rel=ftol_rel,
                maxeval=maxeval,
                keep_history=keep_history,
                callback=monitor,
            )
        record = scaling.to_theta(record)
        self._set_optimum(record)
        return self

    def initial_theta(self) -> np.ndarray:
        """Return starting θ: moment estimates where they are cheap, lme4's λ = I elsewhere.

        For a scalar intercept term (``(1 | g)``) the one-way ANOVA estimator of
        the between-group variance of the fixed-effects least-squares residuals,
        relative to the within-group variance, gives θ; it lands near the optimum
        for crossed and nested variance components alike and saves a third to a
        half of the evaluations. With several such terms each one's estimate
        comes from the residuals less the others' shrunken group means, in two
        sweeps (backfitting), so that crossed effects do not inflate each
        other's within-group variance. It is clipped to [0.05, 5] so that the
        search never starts on the boundary. Other terms get the two-stage estimate of
        their covariance from per-level least-squares fits (see
        ``_regression_start``), and λ = I where that is not available.
        """
        fr = self.frame
        w = np.ones(fr.nobs) if fr.weights is None else fr.weights
        y = fr.y if fr.offset is None else fr.y - fr.offset
        # least squares by the normal equations: a starting value needs no more
        # accuracy, and the system holds X'WX and X'Wy already
        gram, xty = self._fixed_cross_products(w, y)
        # equilibrated: a covariate in huge or tiny units leaves X'X so
        # ill-conditioned that lstsq's cutoff would drop it
        d = np.sqrt(np.diag(gram))
        d = np.where(d > 0, d, 1.0)
        coef, *_ = np.linalg.lstsq(gram / np.outer(d, d), xty / d, rcond=None)
        coef = coef / d
        resid = y - fr.fixed.dot(coef)
        intercepts = [t for t in fr.terms if t.k == 1 and np.all(t.z[:, 0] == 1.0)]
        ratios = backfitted_ratios(resid, intercepts, ml=not self.reml)
        ratios = dict(zip(map(id, intercepts), ratios))
        parts = []
        for term in fr.terms:
            start = term.theta_start()
            if id(term) in ratios:
                start = np.array([ratios[id(term)]])
            else:
                lam = unit_regression_start(resid, w, term)
                if lam is not None:
                    rows, cols = term.theta_rows_cols()
                    start = lam[rows, cols]
            parts.append(start)
        return np.concatenate(parts)

    def _fixed_cross_products(self, w: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return X'WX and X'Wy.

        They come from the augmented system's cross-products of [X y] (its
        last rows) when it has them, else from the data.
        """
        p = self.frame.fixed.p
        system = self.__dict__.get("system")
        if isinstance(system, AugmentedSystem):  # Arr ends with [X y]'W[X y]
            xy = system.Arr[-(p + 1):, -(p + 1):]
            return xy[:p, :p], xy[:p, p]
        X = self.frame.fixed.X
        Xw = X if self.frame.weights is None else X * w[:, None]
        return Xw.T @ X, Xw.T @ y

    def _snap_to_boundary(self, theta: np.ndarray, value: float) -> np.ndarray:
        """Return θ with (near-)zero diagonal elements of λ set to zero when that is no worse.

        An unbounded search approaches a zero variance without reaching it;
        lme4 reports the boundary itself.
        """
        unit = np.abs(theta) * self.theta_scale  # the rule is free of the columns' units
        near = np.flatnonzero((self.theta_lower == 0) & (unit < 1e-4))
        if near.size == 0:
            return theta
        tolerance = 1e-10 * max(1.0, abs(value))
        trial = theta.copy()
        trial[near] = 0.0
        if self.objective(trial) <= value + tolerance:
            return trial
        for i in near:
            trial = theta.copy()
            trial[i] = 0.0
            candidate = self.objective(trial)
            if candidate <= value + tolerance:
                theta, value = trial, min(value, candidate)
        return theta

    def _set_optimum(self, record: OptimizerRecord) -> None:
        theta = self._canonical_theta(record.theta_final)
        theta = self._snap_to_boundary(theta, record.objective_final)
        self.optsum = record
        self.theta_vector = theta
        f = self._reused_factor(theta) or self.system.factor(self.lambdas(theta), keep=True)
        if f is None:
            raise DataError("the model could not be factorised at the optimum")
        self.fitted_factor = f
        self._beta, self._u = f.solve()
        n, p = self.n_eff, len(self._beta)
        self._sigma = float(np.sqrt(f.pwrss() / (n - p if self.reml else n)))
        self.fitted_objective = self.profiled_criterion(f, self.reml)
        self._fitted = True
        self._cache: dict[str, Any] = {}
        if not record.converged:
            warnings.warn(
                f"optimizer stopped with code {record.return_code} after "
                f"{record.evaluations} evaluations",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._warn_if_singular()

    def _reused_factor(self, theta: np.ndarray) -> Factor | None:
        """Return the factor of the last evaluation with the gradient, if still usable.

        That is, if it was at ``theta`` and is still valid (see
        ``AugmentedSystem.kept``); else None.
        """
        last = self.__dict__.pop("_last_factor", None)
        kept = getattr(self.system, "kept", None)
        if last is None or kept is None or not np.array_equal(last[0], theta):
            return None
        return kept(last[1])
