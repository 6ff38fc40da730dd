"""Nakagawa-Schielzeth R² and the intraclass correlation of mixed models.

As the R package performance 0.10.2 (``r2_nakagawa``, ``icc``) computes them
with insight 0.19's ``get_variance``.

The variance decomposition (Nakagawa, Johnson & Schielzeth 2017, J. R. Soc.
Interface 14: 20170213) is

* fixed: the sample variance of the fixed-effects predictions Xβ;
* random: for every random-effects term with covariance Σ over columns that
  are also columns of X (an intercept added when X has none), the mean over
  observations of x_i'Σx_i (Johnson 2014's random-slope variance, Methods
  Ecol. Evol. 5: 944); terms with one level per observation (overdispersion
  effects of a GLMM) count as dispersion instead;
* distribution-specific: σ² for the linear model; for GLMMs π²/3 (logit),
  1 (probit), π²/6 (cloglog); for the Poisson family with log link the
  lognormal approximation ``log(1 + 1/μ)`` with μ = exp(intercept of the
  null model: the same random effects and no fixed effects besides the
  intercept), 0.25 for the square-root link; σ² for the Gamma family.

Marginal R² = fixed / (fixed + random + residual), conditional R² =
(fixed + random) / (fixed + random + residual); the adjusted ICC is random /
(random + residual), the unadjusted one random / (fixed + random + residual),
residual being distribution-specific plus dispersion variance.

One deliberate difference from performance 0.10.2: that version sums the
covariance of only the first term of each grouping factor (it indexes the
terms by the grouping factor's name), so with ``(1 | g) + (0 + x | g)`` or
``(x || g)`` it leaves out the slope variance; here every term counts.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import (
    FamilyError,
    MixedModelsWarning,
    SingularFitWarning,
)
from mixedmodels.inference.protocol import is_generalized, require_mixed_model
from mixedmodels.spec.formula import variables_in

__all__ = ["icc", "r2", "variance_components"]

# insight's default tolerance for a zero variance parameter (θ on its bound).
TOLERANCE = 1e-5


def _require_model(model: Any, what: str) -> None:
    require_mixed_model(
        model, f"{what} needs a fitted lmer or glmer model, not {type(model).__name__}"
    )


def _fixed_design(model: Any) -> tuple[np.ndarray, list[str]]:
    """Return X with its column names, plus an intercept column if it has none.

    As insight does before matching random-effect columns.
    """
    X, names = model.frame.fixed.X, list(model.frame.fixed.names)
    if not any(n.startswith("(Intercept)") for n in names):
        X = np.column_stack([np.ones(X.shape[0]), X])
        names = ["(Intercept)", *names]
    return X, names


def _term_variance(X: np.ndarray, names: list[str], cnames: list[str], sigma: np.ndarray) -> float:
    """Mean over observations of x_i' Σ x_i, over the term's columns found in X."""
    index = {n: i for i, n in enumerate(names)}
    keep = [j for j, c in enumerate(cnames) if c in index]
    if not keep:
        return 0.0
    Xr = X[:, [index[cnames[j]] for j in keep]]
    S = sigma[np.ix_(keep, keep)]
    return float(np.einsum("ij,ij->", Xr @ S, Xr) / X.shape[0])


def _is_singular(model: Any, tolerance: float) -> bool:
    theta = np.asarray(model.theta_vector, dtype=float)
    return bool(np.any(np.abs(theta[model.theta_lower == 0]) < tolerance))


def _warn_slopes_not_fixed(model: Any) -> None:
    fixed = variables_in(model.frame.parsed.fixed)
    for term in model.frame.terms:
        missing = sorted(variables_in(term.spec.expr) - fixed)
        if missing:
            warnings.warn(
                f"random slope(s) of {', '.join(missing)} in {term.spec.text} are not fixed "
                "effects: this inflates the conditional R² / ICC",
                MixedModelsWarning,
                stacklevel=4,
            )


def _distribution_variance(model: Any) -> float:
    """Return the distribution-specific variance (see the module docstring)."""
    sigma = float(model.sigma)
    if not is_generalized(model):
        return sigma**2
    family, link = model.family.name, model.family.link.name
    if family == "gaussian":
        return sigma**2
    if family == "binomial":
        table = {"logit": math.pi**2 / 3, "probit": 1.0, "cloglog": math.pi**2 / 6}
    elif family == "poisson":
        if link == "log":
            return _poisson_lognormal(model)
        table = {"sqrt": 0.25}
    elif family == "Gamma":
        table = {k: sigma**2 for k in ("inverse", "identity", "log")}
    else:
        return sigma  # insight's fallback for other families: σ itself
    if link not in table:
        raise FamilyError(
            f"R² / ICC for the {family} family are defined for the "
            f"{', '.join(table)} link(s), not {link!r}"
        )
    return table[link]


def _poisson_lognormal(model: Any) -> float:
    """Return the Poisson lognormal distribution variance, log(1 + 1/μ).

    μ = exp(intercept) of the null model (the same random effects, offset and
    weights, an intercept as the only fixed effect); the 1/μ is the family's
    variance at μ over μ².
    """
    from mixedmodels.inference.lrt import refit_fixed

    null = refit_fixed(model, [], True)
    mu = math.exp(float(null.beta[0]))
    if mu < 6:
        warnings.warn(
            f"mu of {mu:.1f} is too close to zero, estimate of random effect variances "
            "may be unreliable",
            MixedModelsWarning,
            stacklevel=4,
        )
    return math.log1p(model.family.variance(np.array([mu]))[0] / mu**2)


def variance_components(model: Any, tolerance: float = TOLERANCE) -> pd.Series:
    """Return the variance decomposition behind :func:`r2` and :func:`icc`.

    As insight's ``get_variance``.

    Parameters
    ----------
    model : fitted LinearMixedModel or GeneralizedLinearMixedModel
        An lmer or glmer fit.
    tolerance : float
        A θ element on its lower bound within this is a zero variance: the
        random variance is then not computed (NaN), as insight.

    Returns
    -------
    Series
        ``var_fixed, var_random, var_residual, var_distribution,
        var_dispersion`` (``var_residual`` = distribution + dispersion).
    """
    _require_model(model, "variance_components")
    X, names = _fixed_design(model)
    n = model.nobs
    var_fixed = float(np.var(model.frame.fixed.X @ np.asarray(model.beta), ddof=1))
    random = dispersion = 0.0
    for term, sigma in zip(model.frame.terms, model.covariances()):
        v = _term_variance(X, names, list(term.cnames), np.atleast_2d(sigma))
        if term.nlevels == n:  # observation-level: overdispersion
            dispersion += v
        else:
            random += v
    if not is_generalized(model) or model.family.constant_variance:
        dispersion = 0.0
    if _is_singular(model, tolerance):
        random = float("nan")
    distribution = _distribution_variance(model)
    return pd.Series(
        {
            "var_fixed": var_fixed,
            "var_random": random,
            "var_residual": distribution + dispersion,
            "var_distribution": distribution,
            "var_dispersion": dispersion,
        },
        name="variance",
    )


def _warn_singular(what: str) -> None:
    warnings.warn(
        f"cannot compute {what}: some variance components equal zero (singular fit); "
        "respecify the random effects or lower `tolerance`",
        SingularFitWarning,
        stacklevel=3,
    )


def r2(model: Any, tolerance: float = TOLERANCE) -> pd.Series:
    """Compute the marginal and conditional R² of a mixed model (Nakagawa & Schielzeth).

    As performance's ``r2_nakagawa``.

    Parameters
    ----------
    model : fitted LinearMixedModel or GeneralizedLinearMixedModel
        lmer fits, or glmer fits of the binomial (logit, probit, cloglog),
        Poisson (log, sqrt) or Gamma families.
    tolerance : float, default 1e-5
        Zero-variance tolerance on θ (see :func:`variance_components`).

    Returns
    -------
    Series
        ``conditional`` and ``marginal`` R². For a singular fit the random
        variance is unknown: the conditional R² is NaN and the marginal one
        fixed / (fixed + residual), with a :class:`SingularFitWarning`.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> m = mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
    >>> mm.r2(m).round(4).to_dict()
    {'conditional': 0.7992, 'marginal': 0.2787}
    """
    v = variance_components(model, tolerance)
    _warn_slopes_not_fixed(model)
    fixed, random, resid = v["var_fixed"], v["var_random"], v["var_residual"]
    if np.isnan(random):
        _warn_singular("the conditional R²")
        marginal, conditional = fixed / (fixed + resid), float("nan")
    else:
        total = fixed + random + resid
        marginal, conditional = fixed / total, (fixed + random) / total
    return pd.Series({"conditional": conditional, "marginal": marginal}, name="r2")


def icc(model: Any, tolerance: float = TOLERANCE) -> pd.Series:
    """Compute the adjusted and unadjusted intraclass correlations, as performance's ``icc``.

    The adjusted ICC is random / (random + residual); the unadjusted (also
    called conditional) ICC divides by the fixed-effects variance as well.

    Parameters
    ----------
    model : fitted LinearMixedModel or GeneralizedLinearMixedModel
        An lmer or glmer fit.
    tolerance : float, default 1e-5
        Zero-variance tolerance on θ; singular fits give NaN with a
        :class:`SingularFitWarning`.

    Returns
    -------
    Series
        ``icc_adjusted``, ``icc_unadjusted``.
    """
    v = variance_components(model, tolerance)
    _warn_slopes_not_fixed(model)
    fixed, random, resid = v["var_fixed"], v["var_random"], v["var_residual"]
    if np.isnan(random):
        _warn_singular("the ICC")
    return pd.Series(
        {
            "icc_adjusted": random / (random + resid),
            "icc_unadjusted": random / (fixed + random + resid),
        },
        name="icc",
    )
