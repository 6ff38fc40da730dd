"""Tidy DataFrames of a fitted model in broom.mixed's spirit.

``tidy`` (fixed effects, variance parameters, conditional modes, with
intervals) and ``glance`` (one row of fit statistics); the model's ``tidy``
and ``glance`` methods call these.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError, ModelSpecError
from mixedmodels.inference.parameters import variance_parameters

__all__ = [
    "glance_frame", "interval_method", "ran_pars_frame", "ran_pars_parameter_names",
    "ran_vals_frame", "standard_coef_table", "tidy_frame",
]


def tidy_frame(
    model: Any,
    effects: str,
    conf_int: bool,
    conf_level: float,
    ddf: str | None,
    conf_method: str | None,
    confint_options: dict[str, Any],
) -> pd.DataFrame:
    """Return the DataFrame of ``model.tidy(...)``.

    See :meth:`~mixedmodels.report.results.MixedModelResults.tidy` for the options.
    """
    method = interval_method(effects, conf_method, conf_int, confint_options)
    if effects == "fixed":
        out = _fixed_frame(model, ddf)
    elif effects == "ran_pars":
        out = ran_pars_frame(model)
    elif effects == "ran_vals":
        out = ran_vals_frame(model)
    else:
        raise MixedModelsError(
            f"effects must be 'fixed', 'ran_pars' or 'ran_vals', not {effects!r}"
        )
    if not conf_int:
        return out
    if method == "Wald":
        z = NormalDist().inv_cdf(0.5 + conf_level / 2)
        out["conf_low"] = out["estimate"] - z * out["std_error"]
        out["conf_high"] = out["estimate"] + z * out["std_error"]
        return out
    parm = "beta_" if effects == "fixed" else "theta_"
    try:
        ci = model.confint(parm=parm, method=method, level=conf_level, **confint_options)
    except MixedModelsError as err:
        if method != "profile":
            raise
        # the profile's own advice names confint's methods; say tidy's
        raise ModelSpecError(
            f"{err} (in tidy: conf_method='boot', or 'Wald' for fixed effects)"
        ) from err
    if effects == "fixed":
        # aliased (dropped) columns have no interval, as no estimate
        bounds = ci.reindex(out["term"])
    else:
        bounds = ci.reindex(ran_pars_parameter_names(model))
    out["conf_low"] = bounds["lower"].to_numpy()
    out["conf_high"] = bounds["upper"].to_numpy()
    out.attrs["conf_method"] = method
    return out


def _fixed_frame(model: Any, ddf: str | None) -> pd.DataFrame:
    """Return the fixed-effects rows of ``tidy``.

    With ``df`` and ``p_value`` where the coefficient table has them.
    """
    table = standard_coef_table(model.coef_table() if ddf is None else model.coef_table(ddf))
    stat = "t" if "t" in table.columns else "z"
    out = pd.DataFrame(
        {
            "effect": "fixed",
            "term": list(table.index),
            "estimate": table["estimate"].to_numpy(),
            "std_error": table["se"].to_numpy(),
            "statistic": table[stat].to_numpy(),
        }
    )
    if "df" in table.columns:
        out["df"] = table["df"].to_numpy()
    if "p_value" in table.columns:
        out["p_value"] = table["p_value"].to_numpy()
    return out


def ran_pars_parameter_names(model: Any) -> list[str]:
    """Return lme4's parameter names (``.sig01`` ... ``.sigma``) of ``tidy("ran_pars")``'s rows.

    The rows follow ``varcorr``: per term the standard deviations, then the
    correlations, then the residual.
    """
    lme4 = {(v.term, v.row, v.col): v.lme4 for v in variance_parameters(model)}
    out = []
    for j, term in enumerate(model.frame.terms):
        out += [lme4[(j, i, i)] for i in range(term.k)]
        # θ holds the lower triangle: the correlation of columns i < l is (l, i)
        out += [lme4[(j, l, i)] for i in range(term.k) for l in range(i + 1, term.k)]
    if (-1, 0, 0) in lme4:
        out.append(lme4[(-1, 0, 0)])
    return out


def ran_pars_frame(model: Any) -> pd.DataFrame:
    """Return the variance-parameter rows of ``tidy``.

    Terms ``sd__X``, ``cor__X.Y``, ``sd__Observation``, in ``varcorr`` order.
    """
    rows = []
    for r in model.varcorr.itertuples(index=False):
        if r.grp == "Residual":
            rows.append(("ran_pars", "Residual", "sd__Observation", r.sdcor))
        elif pd.isna(r.var2):
            rows.append(("ran_pars", r.grp, f"sd__{r.var1}", r.sdcor))
        else:
            rows.append(("ran_pars", r.grp, f"cor__{r.var1}.{r.var2}", r.sdcor))
    return pd.DataFrame(rows, columns=["effect", "group", "term", "estimate"])


def ran_vals_frame(model: Any) -> pd.DataFrame:
    """Return the conditional-mode rows of ``tidy``.

    One row per level and column of every term, with their conditional
    standard deviations.
    """
    frames = []
    for term, b, cv in zip(model.frame.terms, model.b, model.condvar_b()):
        sd = np.sqrt(np.diagonal(cv, axis1=1, axis2=2))
        for j, name in enumerate(term.cnames):
            frames.append(
                pd.DataFrame(
                    {
                        "effect": "ran_vals",
                        "group": term.name,
                        "level": term.levels,
                        "term": name,
                        "estimate": b[:, j],
                        "std_error": sd[:, j],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def glance_frame(model: Any) -> pd.DataFrame:
    """Return the one-row frame of ``model.glance()``."""
    row = {
        "nobs": model.nobs,
        "sigma": model.sigma,
        "loglik": model.loglik,
        "aic": model.aic,
        "bic": model.bic,
        "deviance": model.deviance,
        "df_residual": model.df_residual,
    }
    if getattr(model, "reml", False):
        row["reml_criterion"] = model.reml_criterion
    return pd.DataFrame([row])


_CONF_METHODS = {"wald": "Wald", "profile": "profile", "boot": "boot"}


def interval_method(
    effects: str, conf_method: str | None, conf_int: bool, options: dict[str, Any]
) -> str:
    """Return the interval method of ``tidy`` ("Wald", "profile" or "boot").

    The default for ``effects``, or the one asked for when the effects have it;
    ``ModelSpecError`` for a combination ``tidy`` refuses.
    """
    if options and not conf_int:
        raise ModelSpecError(
            f"interval options {sorted(options)} are only used with conf_int=True"
        )
    if conf_method is None:
        conf_method = "profile" if effects == "ran_pars" else "Wald"
    method = _CONF_METHODS.get(str(conf_method).strip().lower())
    if method is None:
        raise ModelSpecError(
            f"conf_method must be 'Wald', 'profile' or 'boot', not {conf_method!r}"
        )
    if effects == "ran_pars" and method == "Wald":
        raise ModelSpecError(
            "the variance parameters have no Wald intervals (lme4's confint(method = "
            "'Wald') gives NA for them): use conf_method='profile' (the default) or 'boot'"
        )
    if effects == "ran_vals" and method != "Wald":
        raise ModelSpecError(
            "only Wald intervals are available for the conditional modes (as in "
            "broom.mixed): use conf_method='Wald' (the default)"
        )
    if method == "Wald" and options:
        raise ModelSpecError(
            f"interval options {sorted(options)} are for conf_method 'profile' or 'boot'"
        )
    # confint takes the bootstrap's options whatever its method: not silently ignored here
    bootstrap_only = sorted(set(options) & {"nsim", "seed", "boot_type"})
    if method == "profile" and bootstrap_only:
        raise ModelSpecError(
            f"{bootstrap_only} are options of bootstrap intervals: add conf_method='boot'"
        )
    return method


_STANDARD_NAMES = {
    "Estimate": "estimate",
    "Std. Error": "se",
    "t value": "t",
    "z value": "z",
    "Pr(>|t|)": "p_value",
    "Pr(>|z|)": "p_value",
}


def standard_coef_table(table: pd.DataFrame) -> pd.DataFrame:
    """Return a coefficient table with this package's column names.

    The columns become ``estimate, se, [df], t | z, [p_value]``, whichever
    naming (R's printed one or this package's) produced the table.
    """
    return table.rename(columns=_STANDARD_NAMES)
