"""Linear mixed models: :func:`lmer` and :class:`LinearMixedModel`.

The objective is the profiled deviance (or REML criterion) as a function of θ
alone (Bates et al. 2015, *Fitting linear mixed-effects models using lme4*, J.
Stat. Softw. 67(1)); β, the random effects and σ all come from the same blocked
Cholesky factor (see :mod:`mixedmodels.linalg.augmented`).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from typing import Any, Mapping, NamedTuple

import numpy as np
import pandas as pd
from scipy.linalg import blas, lapack

from mixedmodels.exceptions import ConvergenceWarning, DataError
from mixedmodels.linalg.augmented import AugmentedSystem, DenseBelow, Factor, TermData
from mixedmodels.linalg.dense import DenseSystem
from mixedmodels.models.base import SINGULAR_TOL, RandomEffectsModel, consecutive_slices
from mixedmodels.models.base import include_random as _include_random
from mixedmodels.optim.minimize import (
    OptimizerRecord,
    ThetaScaling,
    minimize_theta,
    minimize_theta_gradient,
)
from mixedmodels.spec.design import ModelFrame, build_model_frame
from mixedmodels.spec.formula import parse_formula, require_random
from mixedmodels.support.arguments import check_na_action, check_optimizer, r_argument_hints
from mixedmodels.support.progress import FitProgress
from mixedmodels.support.threads import auto_thread_plan, blas_threads

__all__ = ["lmer", "LinearMixedModel"]

_OPTIMIZERS = {
    "lbfgsb": "default: L-BFGS-B with the analytic gradient",
    "bobyqa": "derivative-free, lme4's default",
}

# lme4's isSingular() tolerance on θ elements with a zero lower bound.


class LinearMixedModel(RandomEffectsModel):
    """A linear mixed-effects model, lme4's ``lmer``.

    Parameters
    ----------
    formula : str
        lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : DataFrame
        pandas or polars data; never modified.
    reml : bool, default True
        Fit by REML (True) or maximum likelihood (False).
    weights : str or array-like, optional
        Prior weights: a column name or one value per row of ``data``.
    offset : str or array-like, optional
        A known term added to the linear predictor (in addition to ``offset()``
        terms of the formula).
    contrasts : dict, optional
        ``{column: contrast}`` for factors of the fixed part, e.g.
        ``{"f": "contr.sum"}`` (``contr.treatment``, ``contr.sum``,
        ``contr.helmert``, ``contr.poly``).
    na_action : {"omit", "fail"}, default "omit"
        ``"omit"`` drops incomplete rows (with a warning saying how many),
        ``"fail"`` raises :class:`DataError`.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> m = mm.LinearMixedModel("Reaction ~ Days + (Days | Subject)",
    ...                         mm.datasets.load("sleepstudy")).fit()
    >>> round(m.reml_criterion, 3)
    1743.628
    """

    model_kind = "lmer"

    @r_argument_hints()
    def __init__(
        self,
        formula: str,
        data: Any,
        reml: bool = True,
        weights: Any = None,
        offset: Any = None,
        contrasts: Mapping[str, str] | None = None,
        na_action: str = "omit",
    ):
        check_na_action(na_action)
        self.formula = formula
        self.reml = bool(reml)
        self.data_name: str | None = None  # shown as "Data:" in summaries when set
        parsed = require_random(parse_formula(formula))
        self.frame: ModelFrame = build_model_frame(
            parsed, data, weights=weights, offset=offset, na_action=na_action, contrasts=contrasts
        )
        self._setup_engine()
        self._fitted = False

    @classmethod
    def from_cross_products(
        cls, formula: str, reml: bool, frame: ModelFrame, system: AugmentedSystem,
        n_eff: int, log_weights: float = 0.0,
    ) -> "LinearMixedModel":
        """A model of data it does not hold: its engine built from the summed
        cross-products of partitioned data (``frame`` without rows, ``n_eff``
        rows of positive weight, ``log_weights`` the sum of their logarithms).
        It fits and reports as any other; methods that need the rows say so."""
        model = cls.__new__(cls)
        model.formula, model.reml, model.data_name, model.frame = formula, bool(reml), None, frame
        model._engine_rebuildable = False  # nothing to rebuild it from
        model._system = system
        model._theta_slices = consecutive_slices([t.ntheta for t in frame.terms])
        model._ldW, model._n_eff, model._fitted = float(log_weights), int(n_eff), False
        return model

    # ------------------------------------------------------------------ engine

    # The blocked engine (cross-products, the update operator, workspaces:
    # 36 MB for InstEval's 1.3 MB of data) is dropped after a fit and not
    # pickled; the factor at θ (12 MB) is not pickled either. Both are rebuilt
    # from the model frame when a method needs them (refit, profile, ddf ...).
    # False where the frame cannot rebuild the engine (Dask models).
    _engine_rebuildable = True
    _REBUILT_ON_DEMAND = ("_system", "_factor", "_last_factor", "_fast")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._engine_rebuildable:
            for name in self._REBUILT_ON_DEMAND:
                state.pop(name, None)
        return state

    def __getattr__(self, name: str) -> Any:
        # reached only for a missing attribute: an engine released or unpickled
        if name == "_system" and self._engine_rebuildable and "frame" in self.__dict__:
            self._setup_engine()
            return self.__dict__["_system"]
        if name == "_factor" and self.__dict__.get("_fitted"):
            self._factor = self._factor_at_optimum()
            return self._factor
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _factor_at_optimum(self) -> Factor:
        """The factor at the fitted θ, computed again as the fit did (its BLAS threads)."""
        with blas_threads(self.optsum.blas_threads[0]):
            return self._system.factor(self.lambdas(self._theta), keep=True)

    def _release_engine(self) -> None:
        """Drop a blocked engine after a fit (see ``_REBUILT_ON_DEMAND``); the
        small dense one stays (refits and bootstraps reuse it)."""
        if self._engine_rebuildable and isinstance(self.__dict__.get("_system"), AugmentedSystem):
            del self.__dict__["_system"]

    def _setup_engine(self) -> None:
        fr = self.frame
        sqrtw = None if fr.weights is None else np.sqrt(fr.weights)
        y = fr.y if fr.offset is None else fr.y - fr.offset
        # a matrix of factors only is kept as its cells (X = E[cell]) and the
        # cross-products are sums over cells; else C order (one transposing
        # copy of formulaic's Fortran-order X): the products Z_j'X are 5x
        # faster on it
        cells = fr.fixed.cells if sqrtw is None else None
        X = None if cells is not None else np.ascontiguousarray(fr.fixed.X)
        if sqrtw is not None:
            X, y = X * sqrtw[:, None], y * sqrtw
        tdata = []
        for term in fr.terms:
            z = term.z if sqrtw is None else term.z * sqrtw[:, None]
            tdata.append(TermData(term.codes, z, term.nlevels))
        # the rank check's X'X (unweighted) saves the cross-products' largest product
        xtx = fr.fixed.gram if sqrtw is None else None
        self._system = _make_system(tdata, X, y, xtx, cells)
        self._theta_slices = consecutive_slices([t.ntheta for t in fr.terms])
        self._ldW = 0.0 if fr.weights is None else float(np.sum(np.log(fr.weights[fr.weights > 0])))
        self._n_eff = fr.nobs if fr.weights is None else int(np.count_nonzero(fr.weights))

    def _criterion(self, f: Factor, reml: bool) -> float:
        n, p = self._n_eff, self.frame.fixed.p
        r2 = f.pwrss()
        if reml:
            nmp = n - p
            return float(
                f.logdet_re() + f.logdet_x() + nmp * (1.0 + np.log(2 * np.pi * r2 / nmp)) - self._ldW
            )
        return float(f.logdet_re() + n * (1.0 + np.log(2 * np.pi * r2 / n)) - self._ldW)

    def objective(self, theta: np.ndarray) -> float:
        """The profiled deviance (ML) or REML criterion at ``theta``."""
        f = self._system.factor(self.lambdas(np.asarray(theta, dtype=float)))
        if f is None:
            return np.inf
        return self._criterion(f, self.reml)

    def objective_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective and its analytic gradient with respect to θ (see
        ``_objective_gradient``; refitted copies of small models use
        :class:`_SmallDenseEvaluator`, the same gradient in fewer operations)."""
        fast = self.__dict__.get("_fast")
        if fast is not None:
            return fast(np.asarray(theta, dtype=float))
        return self._objective_gradient(theta)

    def _objective_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective and its analytic gradient with respect to θ.

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
        """The objective, its gradient and the system's per-term gradient parts
        (None where θ cannot be factorised)."""
        theta = np.asarray(theta, dtype=float)
        lams = self.lambdas(theta)
        f = self._system.factor(lams)
        if f is None:
            return np.inf, np.zeros_like(theta), None
        value = self._criterion(f, self.reml)
        beta, us = self._system.solve(f)
        n, p = self._n_eff, self.frame.fixed.p
        nu = n - p if self.reml else n
        r2 = f.pwrss()
        sub = self._system.Q1 + (p if self.reml else 0)
        parts = self._system.gradient_parts(f, sub, beta, us)
        d_logdet, d_pwrss, numeric = self._gradient_blocks(parts, len(theta))
        grad = d_logdet + (nu / r2) * d_pwrss
        for i in numeric:
            grad[i] = self._numeric_partial(theta, i, value)
        self._last_factor = (theta.copy(), f)  # the optimum is usually the last point
        return value, grad, parts

    def _start_evaluation(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray | None]:
        """The objective, its gradient and, when every term is a scalar
        (``(1 | g)``), estimates of the Hessian's diagonal (see
        ``_curvature_estimate``) at the start of a search."""
        if self.__dict__.get("_fast") is not None or any(t.k != 1 for t in self.frame.terms):
            value, grad = self.objective_gradient(theta)
            return value, grad, None
        value, grad, parts = self._evaluate(theta)
        return value, grad, self._curvature_estimate(theta, parts)

    def _curvature_estimate(self, theta: np.ndarray, parts: list | None) -> np.ndarray | None:
        """Estimates of the Hessian's diagonal at ``theta`` for a model whose
        terms are all scalar; None where they are not usable.

        For a scalar term with ℓ levels, g_i = [M⁻¹]_ii over its levels and
        B = Σ g_i, the expected information of log θ in the one-way model gives
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
        """∂logdet/∂θ = 2 K[c, r] and ∂pwrss/∂θ = -2 R[r, c] from the system's
        per-term (K, R), and the θ elements it could not give (NaN there: a
        term of the blocked system whose λ is singular)."""
        d_logdet = np.full(ntheta, np.nan)
        d_pwrss = np.full(ntheta, np.nan)
        missing: list[int] = []
        for term, sl, part in zip(self.frame.terms, self._theta_slices, parts):
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

    def _criterion_pieces_gradient(
        self, theta: np.ndarray, reml: bool | None = None, numeric: bool = True
    ) -> "CriterionPieces | None":
        """The two θ-dependent pieces of the deviance before σ is profiled out,
        with their analytic gradients.

        With σ kept, the ML deviance is ``logdet + pwrss / σ² + n log(2πσ²)``
        and the REML criterion ``logdet + pwrss / σ² + (n - p) log(2πσ²)``,
        where ``logdet = log|L_θ|²`` (ML) or ``log|L_θ|² + log|R_X|²`` (REML)
        and ``pwrss = r²_θ`` (lmerTest's ``devfun_vp``). These are the two
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
        f = self._system.factor(self.lambdas(theta))
        if f is None:
            return None
        # read the factor now: the blocked system reuses its buffers on the
        # next factorisation (numeric partials below)
        logdet_re, logdet_x, r2 = float(f.logdet_re()), float(f.logdet_x()), float(f.pwrss())
        LX = np.array(f.LX(), dtype=float)
        beta, us = self._system.solve(f)
        p = self.frame.fixed.p
        sub = self._system.Q1 + (p if reml else 0)
        parts = self._system.gradient_parts(f, sub, beta, us)
        d_logdet, d_pwrss, missing = self._gradient_blocks(parts, len(theta))
        if numeric:
            for i in missing:
                d_logdet[i], d_pwrss[i] = self._numeric_pieces_partial(theta, i, reml)
        logdet = logdet_re + (logdet_x if reml else 0.0)
        return CriterionPieces(logdet, r2, d_logdet, d_pwrss, logdet_re, logdet_x, LX)

    def _numeric_pieces_partial(self, theta: np.ndarray, i: int, reml: bool) -> tuple[float, float]:
        """Central differences of (logdet, pwrss) in θ_i (both sides: the
        pieces are smooth through θ_i = 0)."""
        h = _difference_step(theta, i, self.theta_scale)
        vals = []
        for sign in (1.0, -1.0):
            x = theta.copy()
            x[i] += sign * h
            f = self._system.factor(self.lambdas(x))
            if f is None:
                return np.nan, np.nan
            vals.append((f.logdet_re() + (f.logdet_x() if reml else 0.0), f.pwrss()))
        return (vals[0][0] - vals[1][0]) / (2 * h), (vals[0][1] - vals[1][1]) / (2 * h)

    @r_argument_hints()
    def fit(
        self,
        start: np.ndarray | None = None,
        *,
        optimizer: str = "lbfgsb",
        ftol_rel: float = 1e-12,
        maxeval: int = 100_000,
        keep_history: bool = False,
        threads: int | str = "auto",
        progress: bool = False,
    ) -> "LinearMixedModel":
        """Minimise the objective over θ and compute every estimate; returns self.

        Parameters
        ----------
        start : array-like, optional
            Initial θ (default: :meth:`initial_theta`).
        optimizer : {"lbfgsb", "bobyqa"}
            ``"lbfgsb"`` (default) uses the analytic gradient of the profiled
            objective; ``"bobyqa"`` is lme4's derivative-free default.
        ftol_rel : float
            Relative change of the objective at which the optimizer stops.
        maxeval : int
            Maximum number of objective evaluations.
        keep_history : bool
            Keep every (θ, objective) evaluated in ``optsum.history``.
        threads : int or "auto"
            BLAS threads during the fit. ``"auto"``: one thread for a dense
            block of the factor under 2,000 rows, every core above (see
            ``_threads.auto_thread_plan``: from the block's size and the core
            count only, so the same call gives bit-identical results). An
            integer sets the threads for the whole fit (one on a machine busy
            with other work: OpenBLAS threads that find their cores busy can
            slow a fit down a hundredfold).
        progress : bool
            Show evaluations, objective and elapsed time while a fit runs for more
            than a second (a notebook cell or a line on standard error).
        """
        check_optimizer(optimizer, _OPTIMIZERS)
        monitor = FitProgress(f"lmer {self.formula}") if progress else None
        everywhere, factorisations = self._blas_thread_plan(threads)
        self._system.lapack_threads = factorisations
        try:
            with blas_threads(everywhere):
                self._fit(start, optimizer, ftol_rel, maxeval, keep_history, monitor)
            self.optsum.blas_threads = (everywhere, factorisations)
        finally:
            self._system.lapack_threads = None
            if monitor is not None:
                monitor.close()
        self._release_engine()
        return self

    def _blas_thread_plan(self, threads: int | str) -> tuple[int | None, int | None]:
        """BLAS threads during the fit and, if different, inside the dense
        factorisations (see ``_threads.auto_thread_plan``)."""
        if threads != "auto":
            return int(threads), None
        return auto_thread_plan(self._system.dense_size)

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
        """Starting θ: moment estimates where they are cheap, lme4's λ = I elsewhere.

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
        ratios = _backfitted_ratios(resid, intercepts, ml=not self.reml)
        ratios = dict(zip(map(id, intercepts), ratios))
        parts = []
        for term in fr.terms:
            start = term.theta_start()
            if id(term) in ratios:
                start = np.array([ratios[id(term)]])
            else:
                lam = _unit_regression_start(resid, w, term)
                if lam is not None:
                    rows, cols = term.theta_rows_cols()
                    start = lam[rows, cols]
            parts.append(start)
        return np.concatenate(parts)

    def _fixed_cross_products(self, w: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """X'WX and X'Wy: from the augmented system's cross-products of [X y]
        (its last rows) when it has them, else from the data."""
        p = self.frame.fixed.p
        system = self.__dict__.get("_system")
        if isinstance(system, AugmentedSystem):  # Arr ends with [X y]'W[X y]
            xy = system.Arr[-(p + 1):, -(p + 1):]
            return xy[:p, :p], xy[:p, p]
        X = self.frame.fixed.X
        Xw = X if self.frame.weights is None else X * w[:, None]
        return Xw.T @ X, Xw.T @ y

    def _snap_to_boundary(self, theta: np.ndarray, value: float) -> np.ndarray:
        """Set (near-)zero diagonal elements of λ to exactly zero when that is no
        worse: an unbounded search approaches a zero variance without reaching
        it, lme4 reports the boundary itself."""
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
        self._theta = theta
        f = self._reused_factor(theta) or self._system.factor(self.lambdas(theta), keep=True)
        if f is None:
            raise DataError("the model could not be factorised at the optimum")
        self._factor = f
        self._beta, self._u = f.solve()
        n, p = self._n_eff, len(self._beta)
        self._sigma = float(np.sqrt(f.pwrss() / (n - p if self.reml else n)))
        self._objective = self._criterion(f, self.reml)
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
        """The factor of the last evaluation with the gradient, if it was at
        ``theta`` and is still valid (see ``AugmentedSystem.kept``)."""
        last = self.__dict__.pop("_last_factor", None)
        kept = getattr(self._system, "kept", None)
        if last is None or kept is None or not np.array_equal(last[0], theta):
            return None
        return kept(last[1])

    # ------------------------------------------------------------------ protocol

    @property
    def method(self) -> str:
        return "REML" if self.reml else "ML"

    @property
    def sigma(self) -> float:
        """Residual standard deviation."""
        self._require_fit()
        return self._sigma

    @property
    def reml_criterion(self) -> float:
        """-2 × REML log-likelihood (``REMLcrit``); NaN for ML fits."""
        self._require_fit()
        return self._objective if self.reml else float("nan")

    @property
    def deviance(self) -> float:
        """-2 × log-likelihood for ML fits; for REML fits the ML deviance at the
        REML estimates (lme4's ``deviance(fit, REML = FALSE)``)."""
        self._require_fit()
        return self._criterion(self._factor, reml=False) if self.reml else self._objective

    @property
    def n_params(self) -> int:
        return len(self._beta) + len(self._theta) + 1

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effects estimates."""
        self._require_fit()
        LX = self._factor.LX()
        p = LX.shape[0]
        from scipy.linalg import solve_triangular

        Linv = solve_triangular(LX, np.eye(p), lower=True, check_finite=False)
        V = self._sigma**2 * (Linv.T @ Linv)
        names = self.frame.fixed.names
        return pd.DataFrame(V, index=names, columns=names)

    def _covariances(self) -> list[np.ndarray]:
        """Σ_j = σ² λ_j λ_j' for every term."""
        return [self._sigma**2 * lam @ lam.T for lam in self.lambdas(self._theta)]

    @property
    def b(self) -> list[np.ndarray]:
        """Conditional modes per term, (ℓ, k) arrays in the engine's term order."""
        self._require_fit()
        return [u @ lam.T for u, lam in zip(self._u, self.lambdas(self._theta))]

    def _condvar_b(self) -> list[np.ndarray]:
        """Conditional covariance of b per term and level, (ℓ, k, k) stacks."""
        if "condvar" not in self._cache:
            cv = self._factor.condvar_u()
            lams = self.lambdas(self._theta)
            self._cache["condvar"] = [
                self._sigma**2 * (lam @ c @ lam.T) for c, lam in zip(cv, lams)
            ]
        return self._cache["condvar"]

    def _linear_predictor_re(self) -> np.ndarray:
        eta = np.zeros(self.frame.nobs)
        for term, b in zip(self.frame.terms, self.b):
            eta += np.einsum("nk,nk->n", term.z, b[term.codes])
        return eta

    @property
    def fitted(self) -> pd.Series:
        """Fitted values (conditional on the random effects), indexed like the data."""
        self._require_fit()
        self._require_rows("fitted")
        fr = self.frame
        mu = fr.fixed.dot(self._beta) + self._linear_predictor_re()
        if fr.offset is not None:
            mu = mu + fr.offset
        return pd.Series(mu, index=fr.data.index, name="fitted")

    def residuals(self, type: str = "response") -> pd.Series:
        """Residuals indexed like the data, as lme4's ``residuals``:
        ``"response"`` (y - fitted, the default) or ``"working"`` (the same
        for a linear model); ``"pearson"`` or ``"deviance"`` (both √weight ×
        (y - fitted) for a Gaussian response)."""
        fit = self.fitted
        r = self.frame.y - fit.to_numpy()
        if type in ("pearson", "deviance"):
            w = self.frame.weights
            r = r if w is None else r * np.sqrt(w)
        elif type not in ("response", "working"):
            raise DataError(
                f"residual type must be 'response', 'pearson', 'deviance' or 'working', not {type!r}"
            )
        return pd.Series(r, index=fit.index, name="residuals")

    # ------------------------------------------------------------------ prediction

    def predict(
        self,
        newdata: Any = None,
        re_form: str | None = None,
        new_levels: str = "population",
        interval: str = "none",
        level: float = 0.95,
    ) -> pd.Series | pd.DataFrame:
        """Predictions for the fitted data or ``newdata``, optionally with intervals.

        Parameters
        ----------
        newdata : DataFrame, optional
            New rows; None predicts the fitted data.
        re_form : None or "~0"
            None includes every random effect; ``"~0"`` (or ``"NA"``) gives
            population-level predictions, for which grouping columns need not exist.
        new_levels : {"population", "error", "nan"}
            What an unseen grouping level gets: zero random effects, an error
            naming the level, or NaN.
        interval : {"none", "confidence", "prediction"}
            ``"none"``: a Series of predictions. Otherwise a DataFrame
            ``fit, lower, upper``: ``"confidence"`` includes the uncertainty of
            the fixed effects only (x'V_β x, also when the prediction includes
            random effects); ``"prediction"`` (a new observation) adds the
            random effects' variance, z'C z with C the conditional covariance
            of the level's modes for levels seen in the fit and z'Σz (a new
            group) for unseen levels and for every term when ``re_form="~0"``,
            and the residual variance σ² (σ²/w on weighted fitted rows). The
            components are named in the DataFrame's ``attrs``; covariances of
            β with the modes and the uncertainty of Σ and σ are not included.
            See :mod:`mixedmodels.inference.prediction`.
        level : float
            Coverage of the intervals.

        Examples
        --------
        >>> import mixedmodels as mm
        >>> m = mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
        >>> new = mm.datasets.load("sleepstudy").head(2)
        >>> m.predict(new, re_form="~0", interval="confidence").columns.tolist()
        ['fit', 'lower', 'upper']
        """
        self._require_fit()
        from mixedmodels.inference.prediction import (
            check_interval,
            interval_frame,
            prediction_variance,
        )

        check_interval(interval)
        if newdata is None:
            if _include_random(re_form):
                fit = self.fitted.rename("predicted")
            else:
                self._require_rows("predict without newdata")
                fr = self.frame
                eta = fr.fixed.X @ self._beta + (0 if fr.offset is None else fr.offset)
                fit = pd.Series(eta, index=fr.data.index, name="predicted")
        else:
            eta, index = self._newdata_eta(newdata, re_form, new_levels)
            fit = pd.Series(eta, index=index, name="predicted")
        if interval == "none":
            return fit
        variance = prediction_variance(
            self, newdata, re_form, new_levels, residual=interval == "prediction"
        )
        return interval_frame(fit.to_numpy(), variance, interval, level, re_form=re_form)

    # ------------------------------------------------------------------ inference

    # ------------------------------------------------------------------ refit

    def refit(self, newresp: Any, **fit_kwargs: Any) -> "LinearMixedModel":
        """The same model fitted to another response (lme4's ``refit``).

        Nothing is parsed or rebuilt: the new model shares the formula, the
        model frame (but for the response), the random-effects design and the
        factor's pattern; only the response column of the augmented system
        ([Z X y]'y) is recomputed, and the optimizer starts from this fit's θ.
        This model is left untouched.

        Parameters
        ----------
        newresp : array-like or None
            One value per row used in the fit (``nobs``), on the scale of the
            response (offsets and prior weights apply as in the original fit);
            None refits the same response.
        **fit_kwargs
            Passed to :meth:`fit` (``start`` defaults to this fit's θ).

        Returns
        -------
        LinearMixedModel
            A new fitted model.

        Examples
        --------
        >>> import mixedmodels as mm
        >>> m = mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
        >>> m2 = m.refit(m.simulate(seed=1).iloc[:, 0])
        >>> m2.fixef.index.tolist() == m.fixef.index.tolist()
        True
        """
        self._require_fit()
        self._require_rows("refit")
        if newresp is None:  # lme4's refit(object): the same response again
            newresp = self.frame.y
        y = _new_response(newresp, self.frame.nobs, self.frame.response_name)
        new = self._clone(y=y)
        start = self._refit_start()
        if not fit_kwargs and new._fast is not None and start is self._theta:
            return new._fit_seeded(self._theta, self._curvature_inverse())
        fit_kwargs.setdefault("start", start)
        return new.fit(**fit_kwargs)

    def _prepare_refits(self) -> None:
        """Compute what many refits share (the starting curvature of the
        seeded search) once, e.g. before a bootstrap forks its workers."""
        system = self._system
        small = isinstance(system, DenseSystem) and system.N <= _SmallDenseEvaluator.MAX_SIZE
        if small and self._refit_start() is self._theta:
            self._curvature_inverse()

    def _require_rows(self, what: str) -> None:
        """Raise unless the model frame holds the rows (a fit from partitions,
        Dask or Parquet, keeps only their cross-products)."""
        if len(self.frame.y) != self.frame.nobs:
            raise DataError(
                f"{what} needs the rows of the data in memory; this model was fitted from "
                "partitions (Dask or Parquet): fit it with a pandas DataFrame instead"
            )

    def _refit_start(self, theta: np.ndarray | None = None) -> np.ndarray:
        """θ to start a refit from: this fit's (or ``theta``), with zero
        diagonal elements of λ moved to 0.1 (for unit-scale columns, see
        ``theta_scale``). The objective is even in those
        elements, so a gradient search started exactly at zero never leaves it
        even when the new optimum is away from the boundary. Returns the same
        array when nothing is moved."""
        theta = self._theta if theta is None else theta
        scale = self.theta_scale  # both rules on θ for unit-scale columns
        at_zero = (self.theta_lower == 0) & (np.abs(theta) * scale < SINGULAR_TOL)
        if not at_zero.any():
            return theta
        return np.where(at_zero, 0.1 / scale, theta)

    def _curvature_inverse(self) -> np.ndarray:
        """The inverse Hessian of the objective in θ at this optimum (central
        differences of the analytic gradient), made positive definite: the
        starting curvature of refits (see ``_fit_seeded``). Cached."""
        cache = self._cache
        if "refit_hinv" not in cache:
            theta = self._theta
            fg = self.objective_gradient
            m = len(theta)
            H = np.empty((m, m))
            scale = self.theta_scale  # steps for unit-scale columns
            for i in range(m):
                h = 1e-4 * max(abs(theta[i]) * scale[i], 0.1) / scale[i]
                e = np.zeros(m)
                e[i] = h
                H[:, i] = (fg(theta + e)[1] - fg(theta - e)[1]) / (2 * h)
            # made positive definite on θ for unit-scale columns (the floor is
            # relative to the largest eigenvalue), then back to θ
            H = 0.5 * (H + H.T) / np.outer(scale, scale)
            vals, vecs = np.linalg.eigh(H) if np.all(np.isfinite(H)) else (np.ones(m), np.eye(m))
            floor = 1e-3 * max(float(np.max(np.abs(vals))), 1e-8)
            vals = np.maximum(np.abs(vals), floor)
            cache["refit_hinv"] = ((vecs / vals) @ vecs.T) / np.outer(scale, scale)
        return cache["refit_hinv"]

    def _fit_seeded(self, start: np.ndarray, hinv: np.ndarray) -> "LinearMixedModel":
        """Fit by a quasi-Newton search (BFGS) from ``start`` whose first
        inverse Hessian is ``hinv``, the curvature at a neighbouring optimum:
        a refit to a response drawn near the original one then needs four to
        eight evaluations instead of about twelve. A search that does not
        converge is finished by the default fit from where it stopped."""
        with blas_threads(1):  # one thread: these blocks are small (see fit)
            return self._fit_seeded_now(np.asarray(start, dtype=float), hinv)

    def _fit_seeded_now(self, start: np.ndarray, hinv: np.ndarray) -> "LinearMixedModel":
        t0 = time.perf_counter()
        scaling = ThetaScaling(self.theta_scale)  # the search on unit-scale columns' θ
        result = _bfgs(
            scaling.objective_gradient(self.objective_gradient),
            scaling.to_search(start),
            hinv * np.outer(self.theta_scale, self.theta_scale),
        )
        result["x"] = result["x"] / self.theta_scale
        if not result["converged"]:
            self._fit(result["x"], "lbfgsb", 1e-12, 100_000, False, None)
            self.optsum.evaluations += result["evaluations"]
            self.optsum.theta_start = start
            self.optsum.blas_threads = (1, None)
            return self
        record = OptimizerRecord(
            optimizer="BFGS (seeded)",
            theta_start=start,
            theta_final=result["x"],
            objective_start=result["f0"],
            objective_final=result["f"],
            evaluations=result["evaluations"],
            return_code="CONVERGED",
            elapsed=time.perf_counter() - t0,
            blas_threads=(1, None),
        )
        self._set_optimum(record)
        return self

    def _clone(
        self,
        y: np.ndarray | None = None,
        reml: bool | None = None,
        drop_fixed: int | None = None,
    ) -> "LinearMixedModel":
        """An unfitted copy sharing the design: with response ``y`` (only the
        response column of the system recomputed), another criterion (``reml``)
        or without the fixed-effects column ``drop_fixed`` (system rebuilt)."""
        new = object.__new__(type(self))
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k not in _FIT_STATE})
        frame = self.frame
        if y is not None or drop_fixed is not None:
            frame = _copy_frame(frame)
            if y is not None:
                frame.__dict__["y"] = y
        if drop_fixed is not None:
            fixed = copy.copy(frame.fixed)
            keep = [j for j in range(fixed.X.shape[1]) if j != drop_fixed]
            fixed.X = np.ascontiguousarray(fixed.X[:, keep])
            fixed.names = [fixed.names[j] for j in keep]
            if fixed.gram is not None:  # the rank check's X'X, taken by the cross-products
                fixed.gram = fixed.gram[np.ix_(keep, keep)]
            frame.__dict__["fixed"] = fixed
        new.frame = frame
        if reml is not None:
            new.reml = bool(reml)
        if drop_fixed is not None:
            new._setup_engine()
        elif y is not None:
            new._system = _system_with_response(self._system, frame)
        else:
            new._system = _system_copy(self._system)
        new._fast = _SmallDenseEvaluator.create(new)
        if new._fast is not None and drop_fixed is None:
            self.__dict__.setdefault("_fast_pattern", new._fast.pattern)  # for the next clones
        new._fitted = False
        return new

    # ------------------------------------------------------------------ simulation

    def simulate(
        self, nsim: int = 1, seed: int | np.random.Generator | None = None, use_u: bool = False
    ) -> pd.DataFrame:
        """New responses from the fitted model, one column per simulation.

        Parameters
        ----------
        nsim : int
            Number of simulated response vectors.
        seed : int or Generator, optional
            Random seed for reproducibility.
        use_u : bool, default False
            Condition on the fitted random effects (True) or draw new ones (False,
            lme4's default ``re.form = NA``).
        """
        self._require_fit()
        self._require_rows("simulate")
        rng = np.random.default_rng(seed)
        fr = self.frame
        n = fr.nobs
        base = fr.fixed.X @ self._beta + (0 if fr.offset is None else fr.offset)
        out = np.empty((n, nsim))
        lams = self.lambdas(self._theta)
        w = np.ones(n) if fr.weights is None else fr.weights
        for s in range(nsim):
            eta = base.copy()
            for term, lam, b in zip(fr.terms, lams, self.b):
                if use_u:
                    bb = b
                else:
                    bb = self._sigma * rng.standard_normal((term.nlevels, term.k)) @ lam.T
                eta += np.einsum("nk,nk->n", term.z, bb[term.codes])
            out[:, s] = eta + self._sigma * rng.standard_normal(n) / np.sqrt(w)
        cols = [f"sim_{i + 1}" for i in range(nsim)]
        return pd.DataFrame(out, index=fr.data.index, columns=cols)


# What a fit sets; a clone made for a refit starts without it.
_FIT_STATE = frozenset(
    {"optsum", "_theta", "_factor", "_beta", "_u", "_sigma", "_objective", "_cache", "_fitted"}
)


class CriterionPieces(NamedTuple):
    """What :meth:`LinearMixedModel._criterion_pieces_gradient` returns at one θ.

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


def _new_response(newresp: Any, nobs: int, name: str) -> np.ndarray:
    """A refit's response as a float vector of the fit's length, checked."""
    if isinstance(newresp, pd.DataFrame):
        if newresp.shape[1] != 1:
            raise DataError(
                f"refit needs one response column for {name!r}, got a DataFrame with "
                f"{newresp.shape[1]} columns"
            )
        newresp = newresp.iloc[:, 0]
    try:
        y = np.asarray(newresp, dtype=float)
    except (TypeError, ValueError) as err:
        raise DataError(f"the new response for {name!r} is not numeric: {err}") from err
    if y.ndim == 2 and 1 in y.shape:
        y = y.ravel()
    if y.shape != (nobs,):
        raise DataError(
            f"refit needs one response value per row used in the fit ({nobs}), "
            f"got an array of shape {y.shape} for {name!r}"
        )
    if not np.all(np.isfinite(y)):
        raise DataError(f"the new response for {name!r} has missing or infinite values")
    return y


def _copy_frame(frame: ModelFrame) -> ModelFrame:
    """A shallow copy of a model frame that leaves a deferred ``data`` deferred
    (``copy.copy`` would build it through ``__getstate__``)."""
    new = object.__new__(type(frame))
    new.__dict__.update(frame.__dict__)
    return new


def _weighted_response(frame: ModelFrame) -> tuple[np.ndarray, np.ndarray]:
    """(W(y - offset), y - offset): the response as the system sees it, times
    the weights once (so that products with the unweighted z and X give the
    weighted cross-products)."""
    y = frame.y if frame.offset is None else frame.y - frame.offset
    return (y if frame.weights is None else frame.weights * y), y


def _response_crossproducts(frame: ModelFrame) -> np.ndarray:
    """[Z X y]'y of the weighted system, in the system's order (terms, X, y):
    O(n (q_k + p)) with no n-row matrix."""
    wy, y = _weighted_response(frame)
    parts = []
    for term in frame.terms:
        k = term.z.shape[1]
        block = np.empty((term.nlevels, k))
        for a in range(k):
            block[:, a] = np.bincount(term.codes, term.z[:, a] * wy, minlength=term.nlevels)
        parts.append(block.ravel())
    parts.append(frame.fixed.X.T @ wy)
    parts.append(np.array([wy @ y]))
    return np.concatenate(parts)


def _system_copy(system):
    """A copy of an engine system that shares its (read-only) cross-products
    but none of its workspaces, so two models can use them independently."""
    new = copy.copy(system)
    new.lapack_threads = None
    if isinstance(system, AugmentedSystem):
        new._work = None
        new._acc = None
        below = system._below
        if isinstance(below, DenseBelow):
            below = copy.copy(below)
            below._buf = np.empty_like(system._below._buf)
            new._below = new._dense = below
    return new


def _system_with_response(system, frame: ModelFrame):
    """The system of ``frame`` (same design, new response) from ``system``:
    only the response row and column of the cross-products change."""
    v = _response_crossproducts(frame)
    new = _system_copy(system)
    if isinstance(system, DenseSystem):
        A = system.A.copy()
        A[:, -1] = v
        A[-1, :] = v
        new.A = A
        return new
    q0 = system.Axy0.shape[1]
    Axy0 = system.Axy0.copy()
    Axy0[-1] = v[:q0]
    Arr = system.Arr.copy()
    Arr[:, -1] = v[q0:]
    Arr[-1, :] = v[q0:]
    new.Axy0, new.Arr = Axy0, Arr
    if isinstance(new._below, DenseBelow):
        new._below.Bt = new._below.Bt.copy()
        new._below.Bt[:, -1] = v[:q0]
    else:
        new._below = copy.copy(new._below)
        new._below.Axy0 = Axy0
    return new


def _bfgs(
    fg, x0: np.ndarray, hinv: np.ndarray, gtol: float = 1e-4, ftol_rel: float = 1e-12,
    maxeval: int = 200,
) -> dict[str, Any]:
    """Minimise by BFGS with a backtracking (Armijo) line search, from ``x0``
    with the first inverse Hessian ``hinv``.

    Converged when the largest gradient component is below
    max(gtol, 1e-7 |f|) (the rule of ``minimize_theta_gradient``, whose search
    L-BFGS-B is too costly per iteration for the many tiny fits of a
    bootstrap) or when a full step lowers f by less than ``ftol_rel`` |f|.
    """
    x = x0.copy()
    f, g = fg(x)
    f0, evaluations = f, 1
    if not np.isfinite(f):
        return {"x": x, "f": f, "f0": f0, "evaluations": evaluations, "converged": False}
    tol = max(gtol, 1e-7 * abs(f))
    H = hinv.copy()
    while evaluations < maxeval:
        if abs(g).max() <= tol:
            return {"x": x, "f": f, "f0": f0, "evaluations": evaluations, "converged": True}
        d = -H @ g
        slope = float(g @ d)
        if not slope < 0:  # not a descent direction: restart from the seed
            H = hinv.copy()
            d = -H @ g
            slope = float(g @ d)
        step, accepted = 1.0, False
        while evaluations < maxeval and step > 1e-10:
            x_new = x + step * d
            f_new, g_new = fg(x_new)
            evaluations += 1
            if np.isfinite(f_new) and f_new <= f + 1e-4 * step * slope:
                accepted = True
                break
            # minimum of the quadratic through f, the slope and f_new, kept in [0.1, 0.5]
            denom = 2.0 * (f_new - f - step * slope) if np.isfinite(f_new) else 0.0
            trial = -slope * step * step / denom if denom > 0 else 0.5 * step
            step = min(max(trial, 0.1 * step), 0.5 * step)
        if not accepted:
            break
        s, yv = x_new - x, g_new - g
        small_change = f - f_new <= ftol_rel * max(abs(f), 1.0) and step == 1.0
        x, f, g = x_new, f_new, g_new
        sy = float(s @ yv)
        if sy > 1e-12 * np.sqrt(float(s @ s) * float(yv @ yv)):  # curvature condition
            rho = 1.0 / sy
            Hy = H @ yv
            H = H + ((sy + float(yv @ Hy)) * rho * rho) * (s[:, None] * s) - rho * (
                Hy[:, None] * s + s[:, None] * Hy
            )
        if small_change:
            return {"x": x, "f": f, "f0": f0, "evaluations": evaluations, "converged": True}
    return {"x": x, "f": f, "f0": f0, "evaluations": evaluations, "converged": False}


class _SmallDenseEvaluator:
    """The objective and its gradient for a model whose system is one small
    dense block, in a fixed handful of array operations.

    With S = Λ̃'AΛ̃ + diag(I_q, 0) (A = [Z X y]'[Z X y], Λ̃ = blockdiag(Λ, I),
    formed as a dense matrix: for a small block two matrix products cost less
    than scaling by terms) and L its Cholesky factor, the criterion is
    log|S_s| + ν log r² + const, with S_s the leading ``s`` rows (s = q for ML,
    q + p for REML) and r² = L_NN². Because ∂S/∂θ_t = E_t'AΛ̃ + Λ̃'AE_t
    (E_t = ∂Λ̃/∂θ_t) and ∂r²/∂θ_t = r² z'(∂S/∂θ_t)z with L'z = e_N,

        ∂f/∂θ_t = 2 ⟨E_t, AΛ̃ Q⟩,  Q = S_s⁻¹ (padded with zeros) + ν z z',

    and only the entries of AΛ̃Q where some E_t is one are formed: S_s⁻¹Λ̃'A
    by one Cholesky solve, then a gather over the (level, row, column) pairs
    of every λ. No λ is inverted, so the gradient is exact on the boundary
    too. Used by the many refits of a bootstrap or a profile: about three
    times faster than the general code on a 40-row block.
    """

    MAX_SIZE = 150  # dense blocks up to this size (larger: the general code)

    def __init__(self, model: "LinearMixedModel"):
        system = model._system
        self.A = system.A
        p = system.p
        pattern = model.__dict__.get("_fast_pattern")
        if pattern is None or pattern.template.shape[0] != system.N:
            pattern = model._fast_pattern = _EvaluatorPattern(model)
        self.pattern = pattern
        self.q = system.q
        self.sub = system.q + (p if model.reml else 0)
        self.nu = float(model._n_eff - p if model.reml else model._n_eff)
        self.const = self.nu * (1.0 - np.log(self.nu) + np.log(2 * np.pi)) - model._ldW

    @classmethod
    def create(cls, model: "LinearMixedModel") -> "_SmallDenseEvaluator | None":
        system = model._system
        if isinstance(system, DenseSystem) and system.N <= cls.MAX_SIZE:
            return cls(model)
        return None

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        pat = self.pattern
        lam = pat.template.copy()
        lam.ravel()[pat.flat] = theta[pat.index]
        LA = lam.T @ self.A
        S = LA @ lam
        S.ravel()[pat.diag_q] += 1.0
        # S is symmetric: its transpose is the Fortran-ordered array LAPACK
        # factors in place, without the copy a C-ordered argument costs
        L, info = lapack.dpotrf(S.T, lower=1, overwrite_a=1, clean=0)
        if info != 0:
            return np.inf, np.zeros_like(theta)
        d = np.log(L.ravel(order="K")[pat.diag_all])
        sub, nu = self.sub, self.nu
        value = 2.0 * float(d[:sub].sum()) + nu * 2.0 * float(d[-1]) + self.const
        z = blas.dtrsv(L, pat.e, lower=1, trans=1)
        Phi = LA[:, : self.q]
        X, info = lapack.dpotrs(L[:sub, :sub], Phi[:sub], lower=1)
        pairs = X[pat.cols, pat.rows] + nu * (Phi.T @ z)[pat.rows] * z[pat.cols]
        grad = 2.0 * np.bincount(pat.index, pairs, minlength=pat.ntheta)
        return value, grad


class _EvaluatorPattern:
    """What :class:`_SmallDenseEvaluator` needs of a design (not of the
    response or the criterion): where every λ entry goes in Λ̃ and in the
    gradient. Shared by a model and its refitted copies."""

    def __init__(self, model: "LinearMixedModel"):
        system = model._system
        N, q = system.N, system.q
        rows, cols, index = [], [], []
        start, t0 = 0, 0
        for term in model.frame.terms:
            k, nl = term.k, term.nlevels
            r, c = term.theta_rows_cols()
            base = start + np.arange(nl)[:, None] * k
            rows.append((base + r[None, :]).ravel())
            cols.append((base + c[None, :]).ravel())
            index.append(np.tile(np.arange(t0, t0 + len(r)), nl))
            start += nl * k
            t0 += len(r)
        self.rows = np.concatenate(rows)
        self.cols = np.concatenate(cols)
        self.index = np.concatenate(index)
        self.flat = self.rows * N + self.cols  # λ's entries in Λ̃
        self.ntheta = t0
        self.template = np.zeros((N, N))
        self.template[q:, q:] = np.eye(N - q)
        self.diag_q = np.arange(q) * (N + 1)
        self.diag_all = np.arange(N) * (N + 1)
        self.e = np.zeros(N)
        self.e[-1] = 1.0


# Models with at most this many random effects + p + 1 are one dense block.
DENSE_LIMIT = 1000


def _make_system(
    terms: list[TermData],
    X: np.ndarray | None,
    y: np.ndarray,
    xtx: np.ndarray | None = None,
    cells: tuple[np.ndarray, np.ndarray] | None = None,
):
    """The dense system for small models, the blocked one otherwise (``xtx``:
    X'X if known, which the blocked one takes instead of recomputing it;
    ``cells``: X as its cells, then ``X`` is None)."""
    p = X.shape[1] if cells is None else cells[1].shape[1]
    if sum(t.q for t in terms) + p + 1 <= DENSE_LIMIT:
        if cells is not None:
            X = cells[1][cells[0]]
        return DenseSystem(terms, np.column_stack([X, y]))
    return AugmentedSystem.from_terms(terms, X, y, xtx=xtx, cells=cells)


def _unit_regression_start(resid: np.ndarray, w: np.ndarray, term) -> np.ndarray | None:
    """``_regression_start`` for the term's columns at their search scale
    (its floors are absolute), mapped back: row r of λ over column r's scale."""
    scale = term.column_scales
    if np.all(scale == 1.0):
        return _regression_start(resid, w, term.z, term.codes, term.nlevels)
    lam = _regression_start(resid, w, term.z / scale, term.codes, term.nlevels)
    return None if lam is None else lam / scale[:, None]


def _regression_start(
    resid: np.ndarray, w: np.ndarray, z: np.ndarray, codes: np.ndarray, nlevels: int
) -> np.ndarray | None:
    """λ from the two-stage (moment) estimate of a term's covariance.

    Within every level with more observations than the term has columns, the
    residuals are regressed on z: b_l = (Z_l'WZ_l)⁻¹Z_l'Wr_l. The covariance of
    the b_l overstates Σ by the estimation error σ²(Z_l'WZ_l)⁻¹, whose average is
    subtracted; relative to the pooled within-level σ², with eigenvalues kept
    positive, its Cholesky factor is the starting λ. None when there are too few
    usable levels.
    """
    k = z.shape[1]
    wz = z * w[:, None]
    zz = np.empty((nlevels, k, k))
    for a in range(k):
        for b in range(a, k):
            zz[:, a, b] = zz[:, b, a] = np.bincount(codes, wz[:, a] * z[:, b], minlength=nlevels)
    zr = np.stack([np.bincount(codes, wz[:, a] * resid, minlength=nlevels) for a in range(k)], 1)
    rr = np.bincount(codes, w * resid**2, minlength=nlevels)
    counts = np.bincount(codes, minlength=nlevels)
    det = np.linalg.det(zz)
    scale = np.einsum("lii->l", zz) ** k
    usable = (counts > k) & (det > 1e-8 * np.maximum(scale, 1e-300))
    if usable.sum() <= k + 1:
        return None
    zz, zr, rr, counts = zz[usable], zr[usable], rr[usable], counts[usable]
    inv = np.linalg.inv(zz)
    b = np.einsum("lab,lb->la", inv, zr)
    sigma2 = (rr - np.einsum("la,la->l", b, zr)).sum() / (counts - k).sum()
    if not sigma2 > 0:
        return None
    rel = np.cov(b, rowvar=False).reshape(k, k) / sigma2 - inv.mean(axis=0)
    vals, vecs = np.linalg.eigh(rel)
    vals = np.maximum(vals, 1e-2 * max(vals.max(), 1e-4))  # positive: not on a boundary
    lam = np.linalg.cholesky((vecs * vals) @ vecs.T)
    return lam if np.all(np.isfinite(lam)) else None


def _backfitted_ratios(
    resid: np.ndarray, terms: list, sweeps: int = 2, ml: bool = False
) -> list[float]:
    """One-way ratios of several intercept terms (ANOVA, or ML with ``ml``:
    see ``_one_way_ratio``), each from the residuals less the other terms'
    group means shrunk as BLUPs (n θ² / (n θ² + 1))."""
    n = len(resid)
    counts = [np.bincount(t.codes, minlength=t.nlevels).astype(float) for t in terms]
    work = np.empty(n)  # the same arithmetic in a few reused arrays of n: fresh pages cost
    ratios = [_one_way_ratio(resid, t.codes, t.nlevels, ml, c, work) for t, c in zip(terms, counts)]
    if len(terms) < 2:
        return ratios
    fitted = [np.zeros(n) for _ in terms]
    total, partial, new = np.zeros(n), np.empty(n), np.empty(n)
    # coarsest first: with nested factors the finest one's group means would
    # otherwise take up the variation of the coarser ones
    order = sorted(range(len(terms)), key=lambda j: terms[j].nlevels)
    for _ in range(sweeps):
        for j in order:
            t = terms[j]
            np.subtract(total, fitted[j], out=partial)
            np.subtract(resid, partial, out=partial)  # resid - (total - fitted[j])
            ratios[j] = _one_way_ratio(partial, t.codes, t.nlevels, ml, counts[j], work)
            means = np.bincount(t.codes, partial, minlength=t.nlevels) / np.maximum(counts[j], 1.0)
            shrink = counts[j] * ratios[j] ** 2 / (counts[j] * ratios[j] ** 2 + 1.0)
            np.take(shrink * means, t.codes, out=new)
            total += np.subtract(new, fitted[j], out=work)
            fitted[j], new = new, fitted[j]
    return ratios


# Bounds of a starting ratio: a search never starts on the boundary.
_RATIO_BOUNDS = (0.05, 5.0)


def _one_way_ratio(
    resid: np.ndarray,
    codes: np.ndarray,
    nlevels: int,
    ml: bool,
    counts: np.ndarray | None = None,
    work: np.ndarray | None = None,
) -> float:
    """The between / within standard-deviation ratio of one grouping of the
    residuals: the ANOVA moment estimate, which is the REML estimate of a
    balanced one-way model; with ``ml`` the one-way maximum-likelihood
    estimate, from Newton steps on its profiled deviance starting there (the
    start of an ML fit then sits at its optimum for a one-way model).
    ``counts``: the groups' sizes if known; ``work``: an array like ``resid``
    to compute in."""
    if counts is None:
        counts = np.bincount(codes, minlength=nlevels).astype(float)
    sums = np.bincount(codes, resid, minlength=nlevels)
    ratio = _anova_ratio(resid, codes, counts, sums, work)
    if not ml:
        return ratio
    used = counts > 0
    n_g = counts[used]
    return _one_way_ml_ratio(n_g, sums[used] ** 2 / n_g, float(resid @ resid), ratio)


def _anova_ratio(
    resid: np.ndarray,
    codes: np.ndarray,
    counts: np.ndarray,
    sums: np.ndarray,
    work: np.ndarray | None = None,
) -> float:
    """sqrt(between / within) variance ratio of the one-way ANOVA moment estimator
    (unbalanced groups: n0 = (N - Σn_g²/N) / (g - 1))."""
    means = sums / np.maximum(counts, 1.0)
    used = counts > 0
    n, g = counts.sum(), int(used.sum())
    if g < 2 or n <= g:
        return 1.0
    work = np.take(means, codes, out=work)
    np.subtract(resid, work, out=work)
    within = np.sum(np.square(work, out=work)) / (n - g)
    grand = np.sum(counts * means) / n
    between = np.sum(counts[used] * (means[used] - grand) ** 2) / (g - 1)
    n0 = (n - np.sum(counts**2) / n) / (g - 1)
    if within <= 0 or n0 <= 0:
        return 1.0
    ratio = max(between - within, 0.0) / n0 / within
    return float(np.clip(np.sqrt(ratio), *_RATIO_BOUNDS))


def _one_way_ml_ratio(n_g: np.ndarray, a_g: np.ndarray, rss: float, start: float) -> float:
    """Minimiser over ρ = ratio² of the one-way profiled ML deviance of
    zero-mean residuals, N log σ²(ρ) + Σ log(1 + n_g ρ) with N σ²(ρ) = rss -
    Σ a_g + Σ a_g / (1 + n_g ρ) (a_g = n_g ȳ_g²): Newton steps from ``start``
    while the deviance is convex there; ``start`` if they do not settle."""
    N = n_g.sum()
    ssw = rss - a_g.sum()
    lo, hi = _RATIO_BOUNDS[0] ** 2, _RATIO_BOUNDS[1] ** 2
    rho = start**2
    for _ in range(20):
        d = 1.0 / (1.0 + n_g * rho)
        s2 = ssw + np.sum(a_g * d)
        s1 = -np.sum(a_g * n_g * d * d)  # N σ²' and N σ²''
        s11 = 2.0 * np.sum(a_g * n_g * n_g * d**3)
        grad = N * s1 / s2 + np.sum(n_g * d)
        curv = N * (s11 / s2 - (s1 / s2) ** 2) - np.sum((n_g * d) ** 2)
        if not (s2 > 0 and np.isfinite(curv) and curv > 0):
            return start
        new = min(max(rho - grad / curv, lo), hi)
        if abs(new - rho) <= 1e-6 * max(rho, lo):
            return float(np.sqrt(new))
        rho = new
    return start


def _difference_step(theta: np.ndarray, i: int, theta_scale: np.ndarray) -> float:
    """Step for differences in θ_i: 1e-6 max(1, |θ_i|) on the unit-scale
    columns' θ (see ``RandomEffectsModel.theta_scale``), in θ's own units."""
    return 1e-6 * max(1.0, abs(theta[i]) * theta_scale[i]) / theta_scale[i]


def _is_partitioned(data: Any) -> bool:
    """A Dask DataFrame (by module name: dask is not imported) or a str / PathLike
    to a Parquet file or directory: fitted partition by partition."""
    module = type(data).__module__.split(".")[0]
    return isinstance(data, (str, os.PathLike)) or module in ("dask", "dask_expr")


# split_every: an argument of mixedmodels.models.lmm.dask.lmer_dask, for partitioned data
@r_argument_hints(LinearMixedModel.fit, also=("split_every",))
def lmer(
    formula: str,
    data: Any,
    reml: bool = True,
    weights: Any = None,
    offset: Any = None,
    contrasts: Mapping[str, str] | None = None,
    na_action: str = "omit",
    **fit_kwargs: Any,
) -> LinearMixedModel:
    """Fit a linear mixed-effects model, as lme4's ``lmer``.

    Parameters are those of :class:`LinearMixedModel`; ``fit_kwargs`` go to
    :meth:`LinearMixedModel.fit`.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> m = mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
    >>> m.fixef.round(3).to_dict()
    {'(Intercept)': 251.405, 'Days': 10.467}
    """
    model_kwargs = dict(
        reml=reml, weights=weights, offset=offset, contrasts=contrasts, na_action=na_action
    )
    if _is_partitioned(data):  # Dask DataFrame or Parquet path: mixedmodels.models.lmm.dask
        from mixedmodels.models.lmm.dask import lmer_dask

        return lmer_dask(formula, data, **model_kwargs, **fit_kwargs)
    return LinearMixedModel(formula, data, **model_kwargs).fit(**fit_kwargs)
