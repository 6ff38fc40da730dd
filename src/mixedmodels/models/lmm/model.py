"""Linear mixed models: :func:`lmer` and :class:`LinearMixedModel`.

The objective is the profiled deviance (or REML criterion) as a function of θ
alone (Bates et al. 2015, *Fitting linear mixed-effects models using lme4*, J.
Stat. Softw. 67(1)); β, the random effects and σ all come from the same blocked
Cholesky factor (see :mod:`mixedmodels.linalg.augmented`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError
from mixedmodels.linalg.augmented import AugmentedSystem
from mixedmodels.linalg.crossproducts import TermData
from mixedmodels.linalg.factor import Factor
from mixedmodels.models.base import RandomEffectsModel, consecutive_slices
from mixedmodels.models.lmm.criterion import ProfiledCriterion
from mixedmodels.models.lmm.engine import make_system
from mixedmodels.models.lmm.fitting import OptimumSearch
from mixedmodels.models.lmm.options import LmmOptions
from mixedmodels.models.lmm.refit import Refitting
from mixedmodels.spec.formula import parse_formula, require_random
from mixedmodels.spec.frame import ModelFrame, build_model_frame
from mixedmodels.support.arguments import (
    check_na_action,
    check_optimizer,
    r_argument_hints,
    takes_options,
)
from mixedmodels.support.newdata import include_random
from mixedmodels.support.progress import FitProgress
from mixedmodels.support.threads import blas_threads

__all__ = ["LinearMixedModel"]

_OPTIMIZERS = {
    "lbfgsb": "default: L-BFGS-B with the analytic gradient",
    "bobyqa": "derivative-free, lme4's default",
}


class LinearMixedModel(ProfiledCriterion, OptimumSearch, Refitting, RandomEffectsModel):
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

    Attributes
    ----------
    formula : str
        The formula as given.
    reml : bool
        Whether the criterion is REML (else maximum likelihood).
    method : str
        ``"REML"`` or ``"ML"``.
    model_kind : str
        ``"lmer"``, the name of the kind in :data:`mixedmodels.api.KINDS`.
    data_name : str or None
        Shown as "Data:" in summaries when set.
    frame : ModelFrame
        The model frame: the rows used (``frame.data``), the response
        ``frame.y``, the fixed-effects design ``frame.fixed`` (with the
        column names), the random-effects terms ``frame.terms``, the weights
        and the offset.
    nobs : int
        Number of observations used (after dropping incomplete rows).
    n_dropped : int
        Number of rows dropped for missing values.
    ngroups : dict of str to int
        Number of levels of every grouping factor.
    optsum : OptimizerRecord
        What the optimizer did (start, end, evaluations, return code, time,
        BLAS threads; the history with ``keep_history``); set by :meth:`fit`.
    fixef : Series
        Fixed-effects estimates, named as in R (aliased columns dropped).
    beta : ndarray
        The same as an array.
    se : Series
        Standard errors of the fixed effects.
    vcov : DataFrame
        Covariance matrix of the fixed-effects estimates.
    theta : Series
        θ, the relative covariance parameters, with lme4's names.
    sigma : float
        Residual standard deviation.
    varcorr : DataFrame
        Variance components as lme4's ``as.data.frame(VarCorr(fit))``.
    b : list of ndarray
        Conditional modes of the random effects per term, (levels, k) arrays.
    ranef : dict of str to DataFrame
        Conditional modes per grouping factor, as lme4's ``ranef``.
    ranef_condsd : dict of str to DataFrame
        Their conditional standard deviations, laid out as ``ranef``.
    loglik : float
        Log-likelihood (REML log-likelihood for REML fits).
    reml_criterion : float
        -2 × REML log-likelihood (lme4's ``REMLcrit``); NaN for ML fits.
    deviance : float
        -2 × log-likelihood; for REML fits the ML deviance at the REML estimates.
    aic, bic : float
        Information criteria from ``loglik`` and ``n_params``.
    n_params : int
        Number of parameters: fixed effects, θ and σ.
    df_residual : int
        ``nobs - n_params``.
    fitted : Series
        Fitted values, conditional on the random effects, indexed like the data.
    is_singular : bool
        Whether the fit is on the boundary (lme4's ``isSingular``).
    theta_lower, theta_scale : ndarray
        Lower bounds of θ, and the factors giving θ for unit-scale columns.
    theta_vector, theta_slices, fitted_objective
        θ as an array, each term's slice of it, the criterion at the optimum
        (see :class:`~mixedmodels.models.base.RandomEffectsModel`).
    system : AugmentedSystem or DenseSystem
        The penalised least-squares system of the design (``system.factor(λ)``
        factorises it at a θ); a released blocked one is rebuilt on access.
    fitted_factor : Factor
        The system's factor at the fitted θ (rebuilt on access after unpickling).
    n_eff : int
        Rows of positive weight (``nobs`` without prior weights).
    log_det_weights : float
        log |W|, the sum of the logs of the positive prior weights (0 without).

    Notes
    -----
    The class holds the engine, ``fit`` and the fitted model's protocol; its
    other methods come from three base classes, one module each:
    :class:`~mixedmodels.models.lmm.criterion.ProfiledCriterion` (the
    objective and its gradient), :class:`~mixedmodels.models.lmm.fitting.OptimumSearch`
    (start, search, optimum) and :class:`~mixedmodels.models.lmm.refit.Refitting`
    (``refit``, ``simulate``, design-sharing copies). The results protocol
    (``fixef``, ``varcorr``, ``ranef``, ``summary``, ``tidy`` ...) and the
    inference methods (``confint``, ``profile``, ``bootstrap``, ``drop1``)
    come from :class:`~mixedmodels.models.base.RandomEffectsModel`. Results
    raise :class:`~mixedmodels.report.results.NotFittedError` before
    :meth:`fit`.

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
    @takes_options(LmmOptions)
    def __init__(self, formula: str, data: Any, options: LmmOptions):
        check_na_action(options.na_action)
        self.formula = formula
        self.reml = bool(options.reml)
        self.data_name: str | None = None  # shown as "Data:" in summaries when set
        parsed = require_random(parse_formula(formula))
        self.frame: ModelFrame = build_model_frame(
            parsed,
            data,
            weights=options.weights,
            offset=options.offset,
            na_action=options.na_action,
            contrasts=options.contrasts,
        )
        self._setup_engine()
        self._fitted = False

    @classmethod
    def from_cross_products(
        cls, formula: str, reml: bool, frame: ModelFrame, system: AugmentedSystem,
        n_eff: int, log_weights: float = 0.0,
    ) -> "LinearMixedModel":
        """Return a model of data it does not hold, built from summed cross-products.

        Its engine is built from the summed cross-products of partitioned
        data (``frame`` without rows, ``n_eff`` rows of positive weight,
        ``log_weights`` the sum of their logarithms). It fits and reports as
        any other; methods that need the rows say so.
        """
        model = cls.__new__(cls)
        model.formula, model.reml, model.data_name, model.frame = formula, bool(reml), None, frame
        model._engine_rebuildable = False  # nothing to rebuild it from
        model.system = system
        model.theta_slices = consecutive_slices([t.ntheta for t in frame.terms])
        model.log_det_weights, model.n_eff, model._fitted = float(log_weights), int(n_eff), False
        return model

    # ------------------------------------------------------------------ engine

    # The blocked engine (cross-products, the update operator, workspaces:
    # 36 MB for InstEval's 1.3 MB of data) is dropped after a fit and not
    # pickled; the factor at θ (12 MB) is not pickled either. Both are rebuilt
    # from the model frame when a method needs them (refit, profile, ddf ...).
    # False where the frame cannot rebuild the engine (Dask models).
    _engine_rebuildable = True
    _REBUILT_ON_DEMAND = ("system", "fitted_factor", "_last_factor", "_fast")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._engine_rebuildable:
            for name in self._REBUILT_ON_DEMAND:
                state.pop(name, None)
        return state

    def __getattr__(self, name: str) -> Any:
        # reached only for a missing attribute: an engine released or unpickled
        if name == "system" and self._engine_rebuildable and "frame" in self.__dict__:
            self._setup_engine()
            return self.__dict__["system"]
        if name == "fitted_factor" and self.__dict__.get("_fitted"):
            self.fitted_factor = self._factor_at_optimum()
            return self.fitted_factor
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _factor_at_optimum(self) -> Factor:
        """Return the factor at the fitted θ, computed again as the fit did (its BLAS threads)."""
        with blas_threads(self.optsum.blas_threads[0]):
            return self.system.factor(self.lambdas(self.theta_vector), keep=True)

    def _release_engine(self) -> None:
        """Drop a blocked engine after a fit (see ``_REBUILT_ON_DEMAND``).

        The small dense one stays (refits and bootstraps reuse it).
        """
        if self._engine_rebuildable and isinstance(self.__dict__.get("system"), AugmentedSystem):
            del self.__dict__["system"]

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
        self.system = make_system(tdata, X, y, xtx, cells)
        self.theta_slices = consecutive_slices([t.ntheta for t in fr.terms])
        self.log_det_weights = 0.0 if fr.weights is None else float(np.sum(np.log(fr.weights[fr.weights > 0])))
        self.n_eff = fr.nobs if fr.weights is None else int(np.count_nonzero(fr.weights))

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
            :func:`~mixedmodels.support.threads.auto_thread_plan`: from the
            block's size and the core count only, so the same call gives
            bit-identical results). An
            integer sets the threads for the whole fit (one on a machine busy
            with other work: OpenBLAS threads that find their cores busy can
            slow a fit down a hundredfold).
        progress : bool
            Show evaluations, objective and elapsed time while a fit runs for more
            than a second (a notebook cell or a line on standard error).
        """
        check_optimizer(optimizer, _OPTIMIZERS)
        monitor = FitProgress(f"lmer {self.formula}") if progress else None
        everywhere, factorisations = self.blas_thread_plan(threads)
        self.system.lapack_threads = factorisations
        try:
            with blas_threads(everywhere):
                self._fit(start, optimizer, ftol_rel, maxeval, keep_history, monitor)
            self.optsum.blas_threads = (everywhere, factorisations)
        finally:
            self.system.lapack_threads = None
            if monitor is not None:
                monitor.close()
        self._release_engine()
        return self

    # ------------------------------------------------------------------ protocol

    @property
    def method(self) -> str:
        """The criterion's name as the summary prints it: ``"REML"`` or ``"ML"``."""
        return "REML" if self.reml else "ML"

    @property
    def sigma(self) -> float:
        """Residual standard deviation."""
        self.require_fit()
        return self._sigma

    @property
    def reml_criterion(self) -> float:
        """-2 × REML log-likelihood (``REMLcrit``); NaN for ML fits."""
        self.require_fit()
        return self.fitted_objective if self.reml else float("nan")

    @property
    def deviance(self) -> float:
        """-2 × log-likelihood for ML fits; the ML deviance at the estimates for REML fits.

        For REML fits it is lme4's ``deviance(fit, REML = FALSE)``: the ML
        deviance at the REML estimates.
        """
        self.require_fit()
        return self.profiled_criterion(self.fitted_factor, reml=False) if self.reml else self.fitted_objective

    @property
    def n_params(self) -> int:
        """Number of parameters: fixed effects, θ and σ (lme4's ``df`` of ``logLik``)."""
        return len(self._beta) + len(self.theta_vector) + 1

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effects estimates."""
        self.require_fit()
        LX = self.fitted_factor.LX()
        p = LX.shape[0]
        from scipy.linalg import solve_triangular

        Linv = solve_triangular(LX, np.eye(p), lower=True, check_finite=False)
        V = self._sigma**2 * (Linv.T @ Linv)
        names = self.frame.fixed.names
        return pd.DataFrame(V, index=names, columns=names)

    @property
    def b(self) -> list[np.ndarray]:
        """Conditional modes per term, (ℓ, k) arrays in the engine's term order."""
        self.require_fit()
        return [u @ lam.T for u, lam in zip(self._u, self.lambdas(self.theta_vector))]

    def condvar_b(self) -> list[np.ndarray]:
        """Return the conditional covariance of b per term and level (lme4's ``condVar``).

        Returns
        -------
        list of ndarray
            One (ℓ, k, k) stack per term, in the engine's term order; cached per fit.
        """
        if "condvar" not in self._cache:
            cv = self.fitted_factor.condvar_u()
            lams = self.lambdas(self.theta_vector)
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
        self.require_fit()
        self.require_rows("fitted")
        fr = self.frame
        mu = fr.fixed.dot(self._beta) + self._linear_predictor_re()
        if fr.offset is not None:
            mu = mu + fr.offset
        return pd.Series(mu, index=fr.data.index, name="fitted")

    def residuals(self, type: str = "response") -> pd.Series:
        """Return the residuals indexed like the data, as lme4's ``residuals``.

        ``type`` is ``"response"`` (y - fitted, the default) or ``"working"``
        (the same for a linear model); ``"pearson"`` or ``"deviance"`` (both
        √weight × (y - fitted) for a Gaussian response).
        """
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
        self.require_fit()
        from mixedmodels.inference.prediction import (
            check_interval,
            interval_frame,
            prediction_variance,
        )

        check_interval(interval)
        if newdata is None:
            if include_random(re_form):
                fit = self.fitted.rename("predicted")
            else:
                self.require_rows("predict without newdata")
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
