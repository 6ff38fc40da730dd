"""Fitting :func:`~mixedmodels.lmer` to data that live in partitions.

The partitions are those of Dask DataFrames and Parquet files, on one
machine or on a cluster.

The data are never gathered: :func:`mixedmodels.data.specification.specify_partitioned`
decides the model's specification with the in-memory model frame's functions
and sums the cross-products of ``[Z X y]`` over the partitions. The estimates
come from a :class:`~mixedmodels.models.lmm.model.LinearMixedModel` built from
those cross-products (:meth:`~mixedmodels.models.lmm.model.LinearMixedModel.from_cross_products`):
the same engine, the same optimisation. :class:`DaskLinearMixedModel` holds it
and adds what only partitioned data have: starting values from the sums, and
row-level results as lazy Dask Series computed partition by partition.

This module imports dask lazily: importing it (as :mod:`mixedmodels.models.lmm.model` does
only when ``lmer`` is given a Dask DataFrame or a path) needs no dask.
"""

from __future__ import annotations

import copy
import inspect
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.data.dask import (
    DaskUnsupportedError,
    exact_quantiles,
    is_dask_dataframe,
    is_path,
    read_partitioned,
)
from mixedmodels.data.plan import RowFunction
from mixedmodels.data.specification import specify_partitioned
from mixedmodels.exceptions import DataError
from mixedmodels.linalg.augmented import AugmentedSystem
from mixedmodels.linalg.crossproducts import CrossProducts
from mixedmodels.models.base import RandomEffectsModel
from mixedmodels.models.lmm.model import LinearMixedModel
from mixedmodels.models.lmm.options import LmmOptions
from mixedmodels.models.lmm.starts import anova_ratio
from mixedmodels.spec.formula import parse_formula, require_random
from mixedmodels.support.arguments import check_na_action, takes_options
from mixedmodels.support.newdata import include_random

__all__ = ["DaskLinearMixedModel", "lmer_dask"]


class DaskLinearMixedModel(RandomEffectsModel):
    """A linear mixed model of data in partitions: a Dask DataFrame or Parquet files.

    The constructor runs two map-reduce passes over the data (levels, then
    cross-products); :meth:`fit` then works on the accumulated blocks alone.
    :func:`mixedmodels.lmer` returns this class, fitted, for a Dask
    DataFrame or a path to a Parquet file or directory.

    Every estimate and method of a fitted :class:`LinearMixedModel` is its
    ``estimator``'s (a ``LinearMixedModel`` of the cross-products, which holds
    no rows): attributes not defined here are looked up there. Row-level
    results are lazy Dask Series (``fitted``, ``residuals``, ``predict()``);
    ``simulate`` is not supported, nor are the methods that need the rows in
    memory (``refit``, ``bootstrap``, profiles of fixed effects: they raise
    an error saying so).

    Parameters
    ----------
    formula, data
        As for :class:`LinearMixedModel`; ``data`` is a Dask DataFrame or the
        path of a Parquet file or directory.
    reml, weights, offset, contrasts, na_action
        As for :class:`LinearMixedModel` (see
        :class:`~mixedmodels.models.lmm.options.LmmOptions`), except that
        ``weights`` and ``offset`` must be column names.
    split_every : int, default 2
        Fan-in of the reduction tree. 2 keeps the fewest partial sums alive at
        once (they can be large: Z_i'Z_0 of two crossed factors).

    Attributes
    ----------
    estimator : LinearMixedModel
        The model of the cross-products: θ, β, σ, the factor, the optimizer's record.
    frame : DaskModelFrame
        The specification (no rows); ``frame.source`` is the Dask DataFrame of
        the used columns and ``frame.plan`` what a partition does.
    data_name : str or None
        The Parquet path, when the data were given as one.
    timings, phases : dict
        Seconds per phase (``levels_pass``, ``encodings``, ``accumulate_pass``,
        ``system``, ``optimize``) and each phase's (start, stop) ``perf_counter``.
    weights_given : bool
        Whether prior weights were given.
    formula, reml, method, model_kind, optsum
        As :class:`LinearMixedModel`'s (the estimator's).
    fixef, beta, se, vcov : Series, ndarray, Series, DataFrame
        Fixed-effects estimates, their standard errors and covariance.
    theta, sigma, varcorr : Series, float, DataFrame
        θ, the residual standard deviation and the variance components.
    b, ranef, ranef_condsd : list of ndarray, dict, dict
        Conditional modes of the random effects and their conditional SDs.
    loglik, reml_criterion, deviance, aic, bic : float
        As :class:`LinearMixedModel`'s.
    nobs, n_dropped, n_params, df_residual : int
        Rows used and dropped, number of parameters, residual df.
    ngroups : dict of str to int
        Number of levels of every grouping factor.
    fitted : dask Series
        Fitted values, lazy (partitions as in the data, incomplete rows dropped).
    is_singular : bool
        Whether the fit is on the boundary (lme4's ``isSingular``).
    theta_lower, theta_scale : ndarray
        Lower bounds of θ, and the factors giving θ for unit-scale columns.
    """

    model_kind = "lmer"

    @takes_options(LmmOptions)
    def __init__(self, formula: str, data: Any, options: LmmOptions, split_every: int = 2):
        reml, weights, offset = options.reml, options.weights, options.offset
        contrasts, na_action = options.contrasts, options.na_action
        check_na_action(na_action)
        self.timings: dict[str, float] = {}  # seconds per phase
        self.phases: dict[str, tuple[float, float]] = {}  # its (start, stop) perf_counter
        ddf = read_partitioned(data)
        parsed = require_random(parse_formula(formula))
        sums = specify_partitioned(
            parsed, ddf, weights, offset, contrasts, na_action, split_every, self._mark
        )
        t0 = time.perf_counter()
        cross = sums.cross
        self.estimator = LinearMixedModel.from_cross_products(
            formula, reml, sums.frame, AugmentedSystem(cross), sums.n_eff, sums.log_weights
        )
        self.estimator.data_name = os.fspath(data) if is_path(data) else None
        self.weights_given = weights is not None
        # what initial_theta needs; Z_i'Z_0 (possibly large) lives on only in the system
        self._cross = CrossProducts(cross.shapes, cross.A00, cross.Axy0, [], cross.Arr)
        self._mark("system", t0)

    def __getattr__(self, name: str) -> Any:
        # reached only for what this class does not define: the estimator's
        if name == "estimator":  # not yet set (or an unpickling in progress)
            raise AttributeError(name)
        return getattr(self.estimator, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # the estimates live in one place: what is not this class's is the estimator's
        if name in _OWN or "estimator" not in self.__dict__:
            object.__setattr__(self, name, value)
        else:
            setattr(self.estimator, name, value)

    @property
    def _fitted(self) -> bool:  # the base classes' default would hide the estimator's
        return self.estimator._fitted

    def _mark(self, phase: str, start: float) -> None:
        """Record that ``phase`` ran from ``start`` (``time.perf_counter``) until now."""
        stop = time.perf_counter()
        self.timings[phase] = stop - start
        self.phases[phase] = (start, stop)

    # ------------------------------------------------------------------ fit

    def fit(self, start: np.ndarray | None = None, **fit_kwargs: Any) -> "DaskLinearMixedModel":
        """Fit as :meth:`LinearMixedModel.fit` (same options); returns self.

        The search starts by default from :meth:`initial_theta`.
        """
        self.estimator.fit(self.initial_theta() if start is None else start, **fit_kwargs)
        return self

    def initial_theta(self) -> np.ndarray:
        """Return starting θ: the in-memory moment estimates, from the cross-products alone.

        Unweighted fits get the same starting values as :class:`LinearMixedModel`
        (up to rounding); weighted fits use weighted moments.
        """
        cross, fr, system = self._cross, self.frame, self.estimator.system
        p = len(fr.fixed.names)
        Q1 = system.Q1
        A = cross.Arr[Q1:, Q1:]
        XtX, Xty, yty = A[:p, :p], A[:p, p], A[p, p]
        coef, *_ = np.linalg.lstsq(XtX, Xty, rcond=None)
        rss = float(yty - 2.0 * coef @ Xty + coef @ XtX @ coef)
        parts = []
        offsets = system.rest_offsets
        for i, term in enumerate(fr.terms):
            start = term.theta_start()
            if term.k == 1 and term.cnames == ["(Intercept)"]:
                if i == 0:
                    counts = cross.A00[:, 0, 0]
                    zxy = cross.Axy0.T  # (q0, p + 1)
                else:
                    a, b = offsets[i - 1], offsets[i]
                    counts = np.diag(cross.Arr[a:b, a:b])
                    zxy = cross.Arr[a:b, Q1:]
                sums = zxy[:, p] - zxy[:, :p] @ coef
                start = np.array([_anova_ratio_sums(counts, sums, rss)])
            parts.append(start)
        return np.concatenate(parts)

    # ------------------------------------------------------------------ rows (lazy)

    def _row_function(self, kind: str, include_re: bool = True, name: str | None = None):
        fr = self.frame
        return RowFunction(
            fr.plan,
            self._beta,
            fr.fixed.kept,
            [b.copy() for b in self.b] if include_re else None,
            kind,
            name or kind,
        )

    def _lazy(self, kind: str, include_re: bool = True, name: str | None = None):
        fn = self._row_function(kind, include_re, name)
        return self.frame.source.map_partitions(fn, meta=pd.Series([], dtype=float, name=name or kind))

    @property
    def fitted(self):
        """Fitted values as a lazy Dask Series.

        Partitions are as in the data, incomplete rows dropped.
        """
        self.require_fit()
        return self._lazy("fitted")

    def residuals(self, type: str = "response"):
        """Return the residuals as a lazy Dask Series.

        ``type`` is ``"response"`` (or ``"working"``), or ``"pearson"`` (also
        ``"deviance"``: √weight × response residual).
        """
        self.require_fit()
        if type in ("response", "working"):
            return self._lazy("residuals")
        if type in ("pearson", "deviance"):
            return self._lazy("pearson")
        raise DataError(
            f"residual type must be 'response', 'pearson', 'deviance' or 'working', not {type!r}"
        )

    def predict(self, newdata: Any = None, re_form: str | None = None, new_levels: str = "population"):
        """Predict as :meth:`LinearMixedModel.predict`, lazily for partitioned data.

        Without ``newdata``: a lazy Dask Series over the fitted data; with a
        Dask DataFrame: one lazy Series (computed per partition); with
        in-memory ``newdata``: a pandas Series. No intervals.
        """
        self.require_fit()
        if newdata is None:
            return self._lazy("fitted", include_random(re_form), name="predicted")
        if is_dask_dataframe(newdata):
            meta = pd.Series([], dtype=float, name="predicted")
            return newdata.map_partitions(
                _predict_partition, self._shell(), re_form, new_levels, meta=meta
            )
        return self.estimator.predict(newdata, re_form=re_form, new_levels=new_levels)

    def _shell(self) -> LinearMixedModel:
        """Return a light copy of the estimator for prediction on workers.

        It has no cross-products and no Dask source.
        """
        self.b  # noqa: B018 - fails early if unfitted
        shell = copy.copy(self.estimator)
        shell.system = None
        shell.fitted_factor = None
        shell.frame = copy.copy(self.frame)
        shell.frame.source = None
        return shell

    def pearson_residuals_for_summary(self) -> np.ndarray:
        """Return the five-number summary (min, quartiles, max) of the Pearson residuals.

        That is all the summary's "Scaled residuals" line needs (``np.quantile``
        of these five values at 0, ¼, ½, ¾, 1 returns them). Exact, computed on
        first use by three more passes over the data (see
        :func:`~mixedmodels.data.dask.exact_quantiles`).
        """
        if "pearson_q" not in self._cache:
            r = self._lazy("pearson")
            self._cache["pearson_q"] = exact_quantiles(r, [0.0, 0.25, 0.5, 0.75, 1.0])
        return self._cache["pearson_q"]

    def simulate(self, *args: Any, **kwargs: Any):
        """Refuse: simulation is not supported for Dask or Parquet fits (DaskUnsupportedError)."""
        raise DaskUnsupportedError(
            "simulate() is not supported for Dask or Parquet fits: it would produce one "
            "value per row; fit an in-memory sample with mixedmodels.lmer for simulation"
        )


# the attributes a DaskLinearMixedModel keeps itself (the rest are its estimator's)
_OWN = frozenset({"estimator", "timings", "phases", "weights_given", "_cross"})


def _predict_partition(part: pd.DataFrame, shell: LinearMixedModel, re_form, new_levels) -> pd.Series:
    return shell.predict(part, re_form=re_form, new_levels=new_levels)


def _anova_ratio_sums(counts: np.ndarray, sums: np.ndarray, rss: float) -> float:
    """Return the in-memory one-way ANOVA start from per-group sums.

    That is :func:`~mixedmodels.models.lmm.starts.anova_ratio` from per-group
    counts and residual sums and the total residual sum of squares (what
    cross-products give): Σ (r - mean_g)² = rss - Σ n_g mean_g².
    """
    counts = np.asarray(counts, dtype=float)
    return anova_ratio(counts, sums, lambda means: rss - np.sum(counts * means**2))


def lmer_dask(formula: str, data: Any, **arguments: Any) -> DaskLinearMixedModel:
    """:func:`mixedmodels.lmer` for a Dask DataFrame or a Parquet file / directory.

    ``arguments`` are those of :class:`DaskLinearMixedModel` and of
    :meth:`LinearMixedModel.fit` (``start``, ``optimizer``, ...).
    """
    fit_options = {k: arguments.pop(k) for k in list(arguments) if k in _FIT_OPTIONS}
    model = DaskLinearMixedModel(formula, data, **arguments)
    t0 = time.perf_counter()
    model.fit(**fit_options)
    model._mark("optimize", t0)
    return model


_FIT_OPTIONS = frozenset(inspect.signature(LinearMixedModel.fit).parameters) - {"self"}
