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
* **refitting**: ``fit(start=...)``, ``refit(newresp)``, and the constructor
  ``type(model)(formula, data, **options)`` with the options of ``lmer`` /
  ``glmer`` (used by :func:`~mixedmodels.inference.lrt.refit_fixed`).
* **engine hooks** (underscore names the models own and inference reads;
  still to be given public names by ``models``): ``_require_fit()``,
  ``_theta``, ``_theta_slices``, ``_covariances``, ``_clone()``, ``_system``,
  ``_criterion()``, ``_factor``, ``_criterion_pieces_gradient()``.
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
    """A fitted mixed model as inference and report use it (see the module
    docstring for the members and what each group is for).
    """

    model_kind: str
    frame: Any

    @property
    def fixef(self) -> pd.Series: ...
    @property
    def beta(self) -> np.ndarray: ...
    @property
    def vcov(self) -> pd.DataFrame: ...
    @property
    def varcorr(self) -> pd.DataFrame: ...
    @property
    def ranef(self) -> dict[str, pd.DataFrame]: ...
    @property
    def theta(self) -> pd.Series: ...
    @property
    def sigma(self) -> float: ...
    @property
    def loglik(self) -> float: ...
    @property
    def aic(self) -> float: ...
    @property
    def nobs(self) -> int: ...
    @property
    def n_params(self) -> int: ...
    @property
    def is_singular(self) -> bool: ...

    def fit(self, *args: Any, **kwargs: Any) -> FittedMixedModel: ...
    def refit(self, newresp: Any, **fit_kwargs: Any) -> FittedMixedModel: ...
    def predict(self, *args: Any, **kwargs: Any) -> Any: ...
    def simulate(self, *args: Any, **kwargs: Any) -> Any: ...
    def summary(self, *args: Any, **kwargs: Any) -> Any: ...
    def tidy(self, *args: Any, **kwargs: Any) -> pd.DataFrame: ...


# members looked up on the class (no property is evaluated, so an unfitted
# model is recognised too: its fitted values raise only when read)
_CLASS_MEMBERS = (
    "model_kind", "fixef", "beta", "vcov", "varcorr", "ranef", "theta", "sigma", "loglik",
    "aic", "nobs", "n_params", "is_singular", "fit", "refit", "predict", "simulate",
    "summary", "tidy",
)


def is_mixed_model(obj: Any) -> bool:
    """Whether ``obj`` implements :class:`FittedMixedModel` (fitted or not):
    its class has every member and the object its ``frame``.
    """
    cls = type(obj)
    return all(hasattr(cls, name) for name in _CLASS_MEMBERS) and hasattr(obj, "frame")


def require_mixed_model(model: Any, message: str) -> None:
    """Raise :class:`ModelSpecError` with ``message`` unless ``model`` is a
    mixed model; raise the model's not-fitted error unless it is fitted.
    """
    if not is_mixed_model(model):
        raise ModelSpecError(message)
    model._require_fit()


def is_generalized(model: Any) -> bool:
    """Whether the model is a generalized linear mixed model (glmer: it has a
    family, ``nagq`` and ``pirls_tol``).
    """
    return getattr(model, "model_kind", None) == "glmer"


def is_linear(model: Any) -> bool:
    """Whether the model is a linear mixed model (lmer: Gaussian, ``reml``)."""
    return getattr(model, "model_kind", None) == "lmer"
