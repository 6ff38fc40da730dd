"""Confidence intervals of a fitted model's parameters (lme4's ``confint.merMod``).

The dispatcher to the likelihood profile (:mod:`mixedmodels.inference.profile`),
the parametric bootstrap (:mod:`mixedmodels.inference.bootstrap`) and Wald
intervals.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError
from mixedmodels.inference.bootstrap import bootstrap
from mixedmodels.inference.parameters import (
    check_level,
    check_names,
    interval_frame,
    parameter_names,
    select_parameters,
    variance_parameters,
)
from mixedmodels.inference.profile import profile

__all__ = ["confint", "wald_confint"]


# ---------------------------------------------------------------------------- confint


def confint(
    model: Any,
    parm: Any = None,
    method: str = "profile",
    level: float = 0.95,
    nsim: int = 500,
    seed: Any = None,
    names: str = "lme4",
    boot_type: str = "perc",
    **kwargs: Any,
) -> pd.DataFrame:
    """Compute confidence intervals of a fitted model's parameters (lme4's ``confint.merMod``).

    The implementation of the models' ``confint`` methods (see
    :meth:`mixedmodels.LinearMixedModel.confint` for the arguments and the
    rows). ``method`` is ``"profile"`` (lmer fits and glmer fits with nagq >= 1 and
    no scale parameter), ``"wald"`` or ``"boot"``;
    ``kwargs`` go to :func:`profile` or to
    :func:`mixedmodels.inference.bootstrap.bootstrap` (``n_jobs``,
    ``progress``, ``use_u``).
    """
    model.require_fit()
    check_level(level)
    check_names(names)
    key = str(method).lower()
    if key == "wald":
        return wald_confint(model, parm, level, names)
    if key == "profile":
        return profile(model, parm, names=names, **kwargs).confint(level)
    if key == "boot":
        boot = bootstrap(model, nsim=nsim, seed=seed, **kwargs)
        return boot.confint(boot_type, level, parm=parm, names=names)
    raise MixedModelsError(f"method must be 'profile', 'wald' or 'boot', not {method!r}")


# ---------------------------------------------------------------------------- Wald


def wald_confint(
    model: Any, parm: Any = None, level: float = 0.95, names: str = "lme4"
) -> pd.DataFrame:
    """Compute Wald intervals β ± z se for the fixed effects.

    The variance parameters get NaN rows, as in lme4's ``confint(fit, method = "Wald")``.
    """
    check_level(level)
    positions = select_parameters(model, parm)
    labels = parameter_names(model, names)
    nvp = len(variance_parameters(model))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    beta = np.asarray(model.fixef, dtype=float)
    se = np.asarray(model.se, dtype=float)
    lower = np.full(len(labels), np.nan)
    upper = np.full(len(labels), np.nan)
    lower[nvp:] = beta - z * se
    upper[nvp:] = beta + z * se
    chosen = [labels[i] for i in positions]
    return interval_frame(chosen, lower[positions], upper[positions], level, "Wald")

