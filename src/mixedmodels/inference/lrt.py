"""Likelihood-ratio tests and information criteria for fitted mixed models.

* :func:`anova` compares nested models as lme4's ``anova.merMod``: REML fits
  are refitted by maximum likelihood first (on copies), the models are sorted
  by their number of parameters and each is tested against the one before.
* :func:`compare` tabulates AIC, AICc (MuMIn's), BIC, their differences from
  the best model and Akaike / BIC weights.
* :func:`drop1` is lme4's ``drop1.merMod``: every fixed-effect term that can be
  dropped without breaking marginality (R's ``drop.scope``) is removed in
  turn, the model refitted, and the ML AIC (and, with ``test="Chisq"``, the
  likelihood-ratio test) reported.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mixedmodels.exceptions import MixedModelsWarning, ModelSpecError, RefitWarning
from mixedmodels.inference.protocol import is_generalized, require_mixed_model
from mixedmodels.spec.formula import variables_in

__all__ = [
    "RefitWarning", "anova", "check_same_rows", "compare", "drop1", "family_name", "fixed_term_labels", "ml_fit",
]


# ---------------------------------------------------------------------------- checks


def _check_models(models: Sequence[Any], names: Sequence[str] | None, least: int) -> list[str]:
    """Validate the models and return their names.

    They must be fitted mixed models, at least ``least`` of them, on the same rows.
    """
    if len(models) < least:
        raise ModelSpecError(f"need at least {least} fitted models to compare, got {len(models)}")
    if names is None:
        names = [f"m{i}" for i in range(len(models))]
    names = [str(n) for n in names]
    if len(names) != len(models):
        raise ModelSpecError(f"{len(names)} names given for {len(models)} models")
    if len(set(names)) != len(names):
        raise ModelSpecError(f"model names must be unique, got {names}")
    for name, m in zip(names, models):
        require_mixed_model(
            m, f"model {name!r} is a {type(m).__name__}, not a fitted lmer/glmer model"
        )
    check_same_rows(models, names)
    return names


def check_same_rows(models: Sequence[Any], names: Sequence[str]) -> None:
    """Refuse models fitted to different observations.

    A likelihood-ratio test or an information criterion compares likelihoods
    of the same data: the models must use the same rows, the same response and
    the same values of every column both hold, else :class:`ModelSpecError`.
    """
    first, name0 = models[0], names[0]
    for name, m in zip(names[1:], models[1:]):
        if m.nobs != first.nobs:
            raise ModelSpecError(
                f"models were not all fitted to the same size of dataset: {name0!r} uses "
                f"{first.nobs} observations, {name!r} {m.nobs} (remove the rows with missing "
                "values in any model's variables before fitting)"
            )
        if not first.frame.data.index.equals(m.frame.data.index):
            raise ModelSpecError(
                f"models {name0!r} and {name!r} were fitted to different rows of the data "
                "(missing values dropped in different columns?): remove the incomplete rows "
                "before fitting"
            )
        y0, y1 = np.asarray(first.frame.y), np.asarray(m.frame.y)
        if y0.shape == y1.shape and not np.array_equal(y0, y1):
            raise ModelSpecError(
                f"models {name0!r} and {name!r} have different responses "
                f"({first.frame.response_name!r} and {m.frame.response_name!r}): their "
                "likelihoods cannot be compared"
            )
        column = _differing_column(first.frame.data, m.frame.data)
        if column is not None:
            # lme4 refuses models whose calls name different data objects; the
            # values are what matters: a variable both models use must agree
            raise ModelSpecError(
                f"models {name0!r} and {name!r} were fitted to different data: column "
                f"{column!r} has different values in the two fits (all models must be "
                "fitted to the same data)"
            )


def _differing_column(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """Return the first column both frames hold whose values differ, or None.

    The rows are aligned by the caller.
    """
    for column in a.columns.intersection(b.columns):
        left, right = a[column], b[column]
        if left.equals(right):
            continue
        # the same values read with another dtype (a column made categorical
        # by one formula) are the same data
        if not left.astype(str).reset_index(drop=True).equals(
            right.astype(str).reset_index(drop=True)
        ):
            return str(column)
    return None


def family_name(model: Any) -> str:
    """Return the name of the response distribution of a fitted model.

    Its family's name for a glmer, ``"gaussian"`` for a linear mixed model.
    """
    family = getattr(model, "family", None)
    return "gaussian" if family is None else str(family.name)


def _check_same_family(models: Sequence[Any], names: Sequence[str]) -> None:
    """Refuse a likelihood-ratio test between models of different response distributions.

    They are never nested, and the chi-square reference distribution of the
    statistic does not apply.
    """
    first = family_name(models[0])
    for name, m in zip(names[1:], models[1:]):
        other = family_name(m)
        if other != first:
            raise ModelSpecError(
                f"models {names[0]!r} ({first} family, {models[0].model_kind}) and {name!r} "
                f"({other} family, {m.model_kind}) assume different response distributions: "
                "they are not nested, so a likelihood-ratio test between them is not valid; "
                "compare their information criteria with mixedmodels.compare instead"
            )


def _is_reml(model: Any) -> bool:
    return bool(getattr(model, "reml", False))


def ml_fit(model: Any) -> Any:
    """Return the model fitted by maximum likelihood.

    The model itself when it already is (ML lmer, any glmer), otherwise a
    refitted copy (lme4's ``refitML``), started from the REML θ. The model
    given is not changed.
    """
    if not _is_reml(model):
        return model
    # the model's own unfitted copy: shares the design, not the system's
    # workspaces (which the original's factor may still point into)
    new = model.clone(reml=False)
    return new.fit(start=np.asarray(model.theta_vector, dtype=float))


# ---------------------------------------------------------------------------- anova


def anova(*models: Any, names: Sequence[str] | None = None, refit: bool = True) -> pd.DataFrame:
    """Test nested mixed models by likelihood ratios, as lme4's ``anova(m0, m1, ...)``.

    Parameters
    ----------
    *models : fitted LinearMixedModel or GeneralizedLinearMixedModel
        Two or more models fitted to the same observations.
    names : sequence of str, optional
        Row names (default ``"m0"``, ``"m1"``, ... in the order given).
    refit : bool, default True
        Refit REML fits by maximum likelihood first (copies; the models given
        are not changed), with a :class:`RefitWarning`, as lme4 does. With
        False the REML log-likelihoods are used as they are (valid only for
        models with the same fixed effects).

    Returns
    -------
    DataFrame
        One row per model, sorted by the number of parameters (stable), indexed
        by name, with columns ``npar, aic, bic, loglik, deviance, chisq, df,
        p_value``: ``chisq = 2 max(0, Δ loglik)`` against the row above, on
        ``df = Δ npar`` degrees of freedom (NaN in the first row, and p NaN
        where ``df`` is 0).

    Raises
    ------
    ModelSpecError
        Fewer than two models; models fitted to different observations, to
        different responses or to different values of a variable they share
        (lme4: "models were not all fitted to the same size of dataset", "all
        models must be fit to the same data object"); models of different
        families (a linear mixed model is Gaussian), which are not nested.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> sleep = mm.datasets.load("sleepstudy")
    >>> m0 = mm.lmer("Reaction ~ Days + (1 | Subject)", sleep, reml=False)
    >>> m1 = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    >>> round(float(mm.anova(m0, m1).loc["m1", "chisq"]), 2)
    42.14
    """
    names = _check_models(models, names, least=2)
    _check_same_family(models, names)
    reml = [_is_reml(m) for m in models]
    if refit and any(reml):
        warnings.warn("refitting model(s) with ML (instead of REML)", RefitWarning, stacklevel=2)
        models = tuple(ml_fit(m) for m in models)
    elif any(reml) and not all(reml):
        warnings.warn(
            "some models fit with REML = TRUE, some not: their log-likelihoods are not comparable",
            MixedModelsWarning,
            stacklevel=2,
        )
    npar = np.array([m.n_params for m in models], dtype=float)
    order = np.argsort(npar, kind="stable")
    loglik = np.array([models[i].loglik for i in order])
    npar = npar[order]
    nobs = models[0].nobs
    chisq = np.concatenate([[np.nan], 2.0 * np.maximum(0.0, np.diff(loglik))])
    df = np.concatenate([[np.nan], np.diff(npar)])
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, stats.chi2.sf(chisq, np.where(df > 0, df, 1.0)), np.nan)
    table = pd.DataFrame(
        {
            "npar": npar.astype(int),
            "aic": -2.0 * loglik + 2.0 * npar,
            "bic": -2.0 * loglik + math.log(nobs) * npar,
            "loglik": loglik,
            "deviance": -2.0 * loglik,
            "chisq": chisq,
            "df": df,
            "p_value": p,
        },
        index=pd.Index([names[i] for i in order], name="model"),
    )
    return table


# ---------------------------------------------------------------------------- compare


def compare(
    *models: Any, names: Sequence[str] | None = None, refit: bool = False
) -> pd.DataFrame:
    """Tabulate information criteria of several models.

    AIC, AICc, BIC, their differences from the smallest and the Akaike /
    Schwarz weights.

    AICc is MuMIn's: ``AIC + 2k(k + 1) / (n - k - 1)`` with k the number of
    parameters (fixed effects, variance parameters and the residual scale)
    and n the number of observations. A weight is ``exp(-Δ/2)`` normalised
    over the models.

    Parameters
    ----------
    *models : fitted LinearMixedModel or GeneralizedLinearMixedModel
        One or more models fitted to the same observations.
    names : sequence of str, optional
        Row names (default ``"m0"``, ``"m1"``, ...).
    refit : bool, default False
        Use maximum-likelihood refits of REML fits (copies). REML criteria are
        comparable only between models with the same fixed effects; a warning
        says so when REML fits with different fixed effects are compared
        without ``refit``.

    Returns
    -------
    DataFrame
        Indexed by model name in the order given, columns ``npar, loglik, aic,
        aicc, bic, delta_aic, delta_aicc, delta_bic, weight_aic, weight_aicc,
        weight_bic``.
    """
    names = _check_models(models, names, least=1)
    if refit:
        models = tuple(ml_fit(m) for m in models)
    else:
        _warn_reml_fixed_differ(models, names)
    k = np.array([m.n_params for m in models], dtype=float)
    loglik = np.array([m.loglik for m in models])
    n = models[0].nobs
    aic = -2.0 * loglik + 2.0 * k
    with np.errstate(divide="ignore", invalid="ignore"):
        aicc = np.where(n - k - 1 > 0, aic + 2.0 * k * (k + 1) / (n - k - 1), np.inf)
    bic = -2.0 * loglik + math.log(n) * k
    out = {"npar": k.astype(int), "loglik": loglik, "aic": aic, "aicc": aicc, "bic": bic}
    for key, values in (("aic", aic), ("aicc", aicc), ("bic", bic)):
        delta, weight = _deltas_weights(values)
        out[f"delta_{key}"] = delta
        out[f"weight_{key}"] = weight
    columns = ["npar", "loglik", "aic", "aicc", "bic", "delta_aic", "delta_aicc", "delta_bic",
               "weight_aic", "weight_aicc", "weight_bic"]
    return pd.DataFrame(out, index=pd.Index(names, name="model"))[columns]


def _deltas_weights(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the differences from the minimum and the normalised exp(-Δ/2) weights."""
    finite = np.isfinite(values)
    if not finite.any():
        nan = np.full_like(values, np.nan)
        return nan, nan
    delta = values - values[finite].min()
    w = np.where(finite, np.exp(-0.5 * np.where(finite, delta, 0.0)), 0.0)
    return delta, w / w.sum()


def _warn_reml_fixed_differ(models: Sequence[Any], names: Sequence[str]) -> None:
    reml = [m for m in models if _is_reml(m)]
    if not reml:
        return
    fixed = {tuple(m.frame.fixed.names) for m in models}
    if len(fixed) > 1 or len(reml) < len(models):
        warnings.warn(
            "comparing REML criteria of models with different fixed effects (or with ML fits) "
            "is not meaningful: use refit=True to compare maximum-likelihood fits",
            MixedModelsWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------- drop1


def fixed_term_labels(model: Any) -> tuple[bool, list[tuple[str, frozenset[str]]]]:
    """Return whether the fixed part has an intercept, and its terms.

    The terms as (label, set of variables), in formula order (by degree, as
    R's ``terms``).
    """
    from formulaic import Formula

    fixed = model.frame.parsed.fixed
    try:
        formula = Formula(fixed)
    except Exception as err:  # formulaic's parser errors have no common base
        raise ModelSpecError(f"cannot split the fixed part {fixed!r} into terms: {err}") from err
    intercept, terms = False, []
    for term in formula:
        factors = [str(f) for f in term.factors]
        if factors == ["1"]:
            intercept = True
            continue
        terms.append((str(term), frozenset(factors)))
    return intercept, terms


def drop_scope(terms: Sequence[tuple[str, frozenset[str]]]) -> list[str]:
    """Return R's ``drop.scope``: the terms that can be dropped respecting marginality.

    Those whose variables are not all contained in another term.
    """
    out = []
    for i, (label, vars_i) in enumerate(terms):
        if not any(vars_i <= vars_j for j, (_, vars_j) in enumerate(terms) if j != i):
            out.append(label)
    return out


_CONTRAST_CALL = re.compile(r"C\(\s*([A-Za-z_][\w.]*)\s*,\s*(contr\.\w+)\s*\)")


def _model_contrasts(model: Any) -> dict[str, str]:
    """Return the contrasts the model's formulas were built with.

    Read from the ``C(f, contr.X)`` wrappers left by ``spec.coding.with_contrasts``:
    the model keeps no other record.
    """
    specs = [model.frame.fixed.model_spec] + [t.model_spec for t in model.frame.terms]
    out: dict[str, str] = {}
    for spec in specs:
        text = str(getattr(spec, "formula", ""))
        out.update(dict(_CONTRAST_CALL.findall(text)))
    return out


def refit_fixed(
    model: Any, fixed_terms: Sequence[str], intercept: bool, *, reml: bool | None = None
) -> Any:
    """Return the model refitted with another fixed part, given by its terms' labels.

    The same random terms, family, weights, offsets and contrasts, fitted to
    the rows used.

    ``reml``: for an lmer model, fit by REML (True) or ML (False); default the
    model's own method. Used by :func:`drop1` and by the null model of
    :func:`mixedmodels.r2` for Poisson GLMMs.
    """
    fr = model.frame
    rhs = " + ".join(["1" if intercept else "0", *fixed_terms])
    random = " + ".join(t.text for t in fr.parsed.random)
    formula = f"{fr.parsed.response} ~ {rhs} + {random}"
    used = variables_in(rhs) | {v for t in fr.parsed.random for v in variables_in(t.expr)}
    contrasts = {c: k for c, k in _model_contrasts(model).items() if c in used}
    # the offset() terms of the formula are part of frame.offset: passed as an
    # array, without those terms, the total is the same
    kwargs = {
        "weights": fr.weights, "offset": fr.offset, "contrasts": contrasts or None,
        "na_action": "omit",
    }
    # the protocol's constructor: the model's own class with lmer's / glmer's options
    if is_generalized(model):
        new = type(model)(formula, fr.data, family=model.family, nagq=model.nagq, **kwargs)
        return new.fit(pirls_tol=getattr(model, "pirls_tol", 1e-7))
    method = _is_reml(model) if reml is None else bool(reml)
    return type(model)(formula, fr.data, reml=method, **kwargs).fit()


def drop1(model: Any, test: str = "none") -> pd.DataFrame:
    """Compute single-term deletions of fixed effects, as lme4's ``drop1.merMod``.

    Every fixed-effect term that can be dropped respecting marginality (R's
    ``drop.scope``: no other term contains all its variables) is removed in
    turn and the model refitted to the same rows. As lme4's ``extractAIC``,
    the AICs are those of maximum-likelihood fits (REML fits are refitted by
    ML), so they compare models with different fixed effects.

    Parameters
    ----------
    model : fitted LinearMixedModel or GeneralizedLinearMixedModel
        The full model.
    test : {"none", "Chisq"}
        ``"Chisq"`` adds the likelihood-ratio statistic and its χ² p-value.

    Returns
    -------
    DataFrame
        Index ``"<none>"`` (the full model) then the dropped terms; columns
        ``npar`` (parameters removed; NaN for ``<none>``) and ``aic``, with
        ``test="Chisq"`` also ``lrt`` and ``p_value``.

    Raises
    ------
    ModelSpecError
        For an unknown ``test``.
    """
    tests = {"none": "none", "chisq": "Chisq"}
    if not isinstance(test, str) or test.lower() not in tests:
        raise ModelSpecError(f"test must be 'none' or 'Chisq', not {test!r}")
    test = tests[test.lower()]
    model.require_fit()
    intercept, terms = fixed_term_labels(model)
    scope = drop_scope(terms)
    full = ml_fit(model)
    fits = [full]
    for label in scope:
        kept = [t for t, _ in terms if t != label]
        # lme4 refits with the model's method, then by ML for the AIC: the same optimum
        reduced = refit_fixed(model, kept, intercept, reml=False)
        if reduced.nobs != model.nobs:
            raise ModelSpecError(
                f"dropping {label!r} changed the number of rows used ({model.nobs} -> "
                f"{reduced.nobs}): remove missing values first"
            )
        fits.append(reduced)
    k = np.array([f.n_params for f in fits], dtype=float)
    aic = np.array([f.aic for f in fits])
    npar = k[0] - k
    npar[0] = np.nan
    table = pd.DataFrame(
        {"npar": npar, "aic": aic}, index=pd.Index(["<none>", *scope], name="term")
    )
    if test == "Chisq":
        dev = aic - 2.0 * k
        lrt = dev - dev[0]
        lrt[0] = np.nan
        with np.errstate(invalid="ignore"):
            ok = npar > 0
            p = np.where(ok, stats.chi2.sf(lrt, np.where(ok, npar, 1.0)), np.nan)
        table["lrt"] = lrt
        table["p_value"] = p
    return table
