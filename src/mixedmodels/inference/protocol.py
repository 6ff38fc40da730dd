"""The fitted-model protocol: what ``inference`` and ``report`` ask of a model.

Inference and report sit below ``models`` and never import a model class. They
work on any object that has the members of :class:`FittedMixedModel`; the
lme4-style models (``LinearMixedModel``, ``GeneralizedLinearMixedModel``, the
Dask model) have them by inheriting :class:`~mixedmodels.report.results.MixedModelResults`
and ``models.base.RandomEffectsModel``. A new model kind implements the same
members to get summaries, tidy frames, likelihood-ratio tests, R² and
intervals.

The members, in groups:

* **kind**: ``model_kind`` names the kind (``"lmer"``, ``"glmer"``); a
  generalized model also has ``family`` (a :class:`~mixedmodels.families.Family`),
  ``nagq`` and ``pirls_tol``; a linear one ``reml``. Inference branches on
  :func:`is_linear` / :func:`is_generalized`, never on a class.
* **results** (the shared results protocol): ``fixef``, ``beta``, ``se``,
  ``vcov``, ``varcorr``, ``ranef``, ``theta``, ``sigma``, ``loglik``,
  ``deviance``, ``aic``, ``bic``, ``nobs``, ``n_params``, ``is_singular``,
  ``predict()``, ``simulate()``, ``summary()``, ``tidy()``, ``glance()``.
* **data**: ``frame``, the :class:`~mixedmodels.spec.frame.ModelFrame` the
  model was fitted to (``frame.parsed``, ``frame.fixed``, ``frame.terms``,
  ``frame.data``, ``frame.y``, ``frame.weights``, ``frame.offset``).
* **refitting**: ``fit(start=...)``, ``refit(newresp)``, ``clone(y=, reml=,
  drop_fixed=)`` (lmer: an unfitted copy sharing the design),
  ``devfun_copy()`` (glmer: lme4's deviance function), and the constructor
  ``type(model)(formula, data, **options)`` with the options of ``lmer`` /
  ``glmer`` (used by :func:`~mixedmodels.inference.lrt.refit_fixed`).
* **cache**: ``inference_cache`` (a dict, made on first use, for what an
  inference method computes once per fit) and ``reset_inference_cache()``.
* **engine members** (what a model computes for inference, one line each):

  - ``require_fit()``: raise the model's not-fitted error unless it is fitted.
  - ``theta_vector``: θ as an ndarray, the engine's (``theta`` is the named Series).
  - ``theta_slices``: the slice of ``theta_vector`` holding each term's θ.
  - ``fitted_objective``: the optimizer's objective at the optimum (REML
    criterion or ML deviance of an lmer, Laplace/AGQ deviance of a glmer).
  - ``lambdas(theta)``: every term's relative covariance factor λ_j at θ.
  - ``covariances()``: every term's covariance matrix Σ_j = σ² λ_j λ_j'.
  - ``condvar_b()``: conditional covariances of b per term and level (lme4's ``condVar``).
  - ``group_labels()``: the terms' grouping-factor names made unique as R's ``make.unique``.
  - ``coef_test_method(ddf)``: how the coefficient table tests: ``"z"``,
    ``"lme4"`` or a denominator-df method.
  - ``pearson_residuals_for_summary()``: the Pearson residuals, or values with
    their quartiles, for the summary's "Scaled residuals".

* **linear-model engine** (lmer fits only, see :func:`is_linear`):

  - ``system``: the penalised least-squares system (``system.factor(λ)``, ``system.solve(f)``).
  - ``fitted_factor``: the system's factor at the fitted θ.
  - ``profiled_criterion(factor, reml)``: the profiled ML deviance or REML criterion of a factor.
  - ``criterion_pieces_gradient(theta, reml, numeric)``: the deviance's two
    θ-dependent pieces (σ not profiled out) with their analytic gradients.
  - ``n_eff``: the number of rows of positive weight.
  - ``log_det_weights``: log |W|, the sum of the logs of the positive prior weights.
  - ``require_rows(what)``: raise unless the frame holds the data's rows (not
    a fit from partitions).
  - ``refit_start(theta)``: θ to start a refit from, zero λ diagonals moved off zero.

* **optional** (used when a model has them): ``blas_thread_plan(threads)``,
  the BLAS threads of a fit; ``prepare_refits()``, what many refits share,
  computed once before a bootstrap's workers start.

Inference and report read no underscore name of a model
(``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd

from mixedmodels.exceptions import ModelSpecError

__all__ = [
    "FittedMixedModel",
    "is_generalized",
    "is_linear",
    "is_mixed_model",
    "require_mixed_model",
]


class FittedMixedModel(Protocol):
    """A fitted mixed model as inference and report use it.

    See the module docstring for the members and what each group is for.

    Attributes
    ----------
    model_kind : str
        The kind of model: "lmer", "glmer".
    frame : ModelFrame
        The data the model was fitted to (:class:`~mixedmodels.spec.frame.ModelFrame`).
    theta_vector : ndarray
        θ as an array, the engine's (``theta`` is the named Series).
    theta_slices : list of slice
        The slice of ``theta_vector`` holding each term's θ.
    fitted_objective : float
        The optimizer's objective at the optimum.
    """

    model_kind: str
    frame: Any

    @property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates, named as in R."""

    @property
    def beta(self) -> np.ndarray:
        """Fixed-effects estimates as an array."""

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effects estimates."""

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(fit))``."""

    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects per grouping factor."""

    @property
    def theta(self) -> pd.Series:
        """Covariance parameters θ with lme4's names."""

    @property
    def sigma(self) -> float:
        """Residual scale, lme4's ``sigma`` (1 for binomial and Poisson GLMMs)."""

    @property
    def loglik(self) -> float:
        """Log-likelihood at the optimum, as lme4's ``logLik``."""

    @property
    def aic(self) -> float:
        """Akaike's information criterion."""

    @property
    def nobs(self) -> int:
        """Number of observations used."""

    @property
    def n_params(self) -> int:
        """Number of parameters: fixed effects, θ and a residual scale (lme4's ``npar``)."""

    @property
    def is_singular(self) -> bool:
        """Whether the fit is singular (lme4's ``isSingular``)."""

    theta_vector: np.ndarray
    theta_slices: list[slice]
    fitted_objective: float

    def require_fit(self) -> None:
        """Raise the model's not-fitted error unless it is fitted."""

    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        """Return every term's relative covariance factor λ_j at ``theta``."""

    def covariances(self) -> list[np.ndarray]:
        """Return every term's covariance matrix Σ_j = σ² λ_j λ_j'."""

    def condvar_b(self) -> list[np.ndarray]:
        """Return the conditional covariances of b per term and level (lme4's ``condVar``)."""

    def group_labels(self) -> list[str]:
        """Return the terms' grouping-factor names made unique as R's ``make.unique``."""

    def coef_test_method(self, ddf: str | None) -> str:
        """Return how the coefficient table tests: "z", "lme4" or a ddf method."""

    def pearson_residuals_for_summary(self) -> np.ndarray:
        """Return the Pearson residuals (or values with their quartiles) for the summary."""

    def fit(self, *args: Any, **kwargs: Any) -> FittedMixedModel:
        """Fit the model (``start=`` a starting θ) and return it."""

    def refit(self, newresp: Any, **fit_kwargs: Any) -> FittedMixedModel:
        """Return the model fitted to a new response ``newresp`` (lme4's ``refit``)."""

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """Return predictions for the data or new data."""

    def simulate(self, *args: Any, **kwargs: Any) -> Any:
        """Return responses simulated from the fitted model."""

    def summary(self, *args: Any, **kwargs: Any) -> Any:
        """Return the printable summary of the fit."""

    def tidy(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """Return a tidy DataFrame of estimates, in broom.mixed's spirit."""


# members looked up on the class (no property is evaluated, so an unfitted
# model is recognised too: its fitted values raise only when read)
_CLASS_MEMBERS = (
    "model_kind", "fixef", "beta", "vcov", "varcorr", "ranef", "theta", "sigma", "loglik",
    "aic", "nobs", "n_params", "is_singular", "fit", "refit", "predict", "simulate",
    "summary", "tidy",
)


def is_mixed_model(obj: Any) -> bool:
    """Tell whether ``obj`` implements :class:`FittedMixedModel`, fitted or not.

    True when its class has every member and the object its ``frame``.
    """
    cls = type(obj)
    return all(hasattr(cls, name) for name in _CLASS_MEMBERS) and hasattr(obj, "frame")


def require_mixed_model(model: Any, message: str) -> None:
    """Check that ``model`` is a fitted mixed model.

    Raise :class:`ModelSpecError` with ``message`` unless ``model`` is a mixed
    model; raise the model's not-fitted error unless it is fitted.
    """
    if not is_mixed_model(model):
        raise ModelSpecError(message)
    model.require_fit()


def is_generalized(model: Any) -> bool:
    """Tell whether the model is a generalized linear mixed model.

    A glmer: it has a ``family``, ``nagq`` and ``pirls_tol``.
    """
    return getattr(model, "model_kind", None) == "glmer"


def is_linear(model: Any) -> bool:
    """Tell whether the model is a linear mixed model (lmer: Gaussian, ``reml``)."""
    return getattr(model, "model_kind", None) == "lmer"
