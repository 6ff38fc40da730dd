"""The results protocol every fitted model shares.

A model class supplies the engine-specific pieces (``beta``, ``vcov``,
``sigma``, ``loglik``, ``_covariances``, ``b``, ``_condvar_b`` ...); this base
class turns them into what users see: named pandas objects, lme4's summary
layout, and tidy DataFrames in broom.mixed's spirit.
"""

from __future__ import annotations

import html
import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError, ModelSpecError

__all__ = ["MixedModelResults", "NotFittedError", "ModelSummary", "abbreviate"]


class NotFittedError(MixedModelsError):
    """A result was asked of a model that has not been fitted (call ``.fit()``)."""


class MixedModelResults:
    """Shared accessors, summaries and tidy outputs of fitted mixed models."""

    model_kind = "model"
    _fitted = False

    def _require_fit(self) -> None:
        if not self._fitted:
            raise NotFittedError("the model has not been fitted yet: call .fit() first")

    # ------------------------------------------------------------------ basic numbers

    @property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates, named as in R (dropped aliased columns excluded)."""
        self._require_fit()
        return pd.Series(self.beta, index=self.frame.fixed.names, name="fixef")

    @property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.vcov.index, name="se")

    @property
    def nobs(self) -> int:
        """Number of observations used (after dropping incomplete rows)."""
        return self.frame.nobs

    @property
    def n_dropped(self) -> int:
        """Number of rows dropped for missing values."""
        return self.frame.n_dropped

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of every grouping factor (lme4's names, e.g. ``cask:batch``)."""
        out: dict[str, int] = {}
        for term in self.frame.terms:
            out.setdefault(term.name, term.nlevels)
        return out

    @property
    def aic(self) -> float:
        self._require_fit()
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        self._require_fit()
        return -2.0 * self.loglik + math.log(self.nobs) * self.n_params

    @property
    def df_residual(self) -> int:
        return self.nobs - self.n_params

    # ------------------------------------------------------------------ variance components

    def _group_labels(self) -> list[str]:
        """Per-term group names made unique as R's make.unique (Subject, Subject.1)."""
        seen: dict[str, int] = {}
        labels = []
        for term in self.frame.terms:
            count = seen.get(term.name, 0)
            labels.append(term.name if count == 0 else f"{term.name}.{count}")
            seen[term.name] = count + 1
        return labels

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(fit))``.

        One row per standard deviation, then per correlation of each term, then the
        residual: columns ``grp, var1, var2, vcov, sdcor``.
        """
        self._require_fit()
        rows = []
        for label, term, cov in zip(self._group_labels(), self.frame.terms, self._covariances()):
            sd = np.sqrt(np.diag(cov))
            for i, name in enumerate(term.cnames):
                rows.append((label, name, None, cov[i, i], sd[i]))
            for i in range(term.k):
                for j in range(i + 1, term.k):
                    denom = sd[i] * sd[j]
                    corr = cov[i, j] / denom if denom > 0 else float("nan")
                    rows.append((label, term.cnames[i], term.cnames[j], cov[i, j], corr))
        if getattr(self, "has_residual", True):
            rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects: group name -> DataFrame
        (index: levels in R's order, one column per term column)."""
        self._require_fit()
        return self._per_group(self.b)

    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """Conditional covariance matrices of the random effects per term:
        ``{group label: (levels, k, k) array}`` (lme4's ``postVar``)."""
        self._require_fit()
        return dict(zip(self._group_labels(), self._condvar_b()))

    @property
    def ranef_condsd(self) -> dict[str, pd.DataFrame]:
        """Conditional standard deviations of the random effects, laid out as ``ranef``."""
        self._require_fit()
        sds = [np.sqrt(np.diagonal(c, axis1=1, axis2=2)) for c in self._condvar_b()]
        return self._per_group(sds)

    def _per_group(self, arrays: list[np.ndarray]) -> dict[str, pd.DataFrame]:
        """One DataFrame per grouping factor; terms sharing a factor (``||``) side by side."""
        parts: dict[str, list[pd.DataFrame]] = {}
        for term, values in zip(self.frame.terms, arrays):
            index = pd.Index(term.levels, name=term.name)
            parts.setdefault(term.name, []).append(
                pd.DataFrame(values, index=index, columns=term.cnames)
            )
        return {name: pd.concat(frames, axis=1) if len(frames) > 1 else frames[0]
                for name, frames in parts.items()}

    # ------------------------------------------------------------------ tables

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """The fixed-effects table, one row per coefficient (aliased, dropped
        columns as NaN rows), indexed by ``term``.

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "asymptotic", "lme4"}, optional
            Linear mixed models: t tests with Satterthwaite's (the default, as
            lmerTest's ``summary``) or Kenward-Roger's denominator degrees of
            freedom (pbkrtest; a REML fit, standard errors from the adjusted
            covariance), or ``"asymptotic"`` (df = inf, normal p-values);
            ``"lme4"`` gives lme4's table without df and p-values. GLMMs have
            asymptotic z tests only.

        Returns
        -------
        DataFrame
            lmer: columns ``estimate, se, df, t, p_value`` (``"lme4"``:
            ``estimate, se, t``); glmer: ``estimate, se, z, p_value``.

        Raises
        ------
        ModelSpecError
            A ddf other than "asymptotic" for a GLMM, Kenward-Roger for an ML fit,
            or an unknown ddf.
        """
        self._require_fit()
        method = self._coef_method(ddf)
        names = self.frame.fixed.names
        est = np.asarray(self.beta, dtype=float)
        if method in ("z", "lme4"):
            se = self.se.to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                stat = est / se
            if method == "lme4":
                table = pd.DataFrame({"estimate": est, "se": se, "t": stat}, index=names)
            else:
                from scipy import stats

                p = 2 * stats.norm.sf(np.abs(stat))  # accurate far in the tail
                table = pd.DataFrame({"estimate": est, "se": se, "z": stat, "p_value": p}, index=names)
        else:
            from mixedmodels.inference.ddf import contrast_df

            table = contrast_df(self, np.eye(len(est)), method)
            table.index = pd.Index(names)
        table = table.reindex(self.frame.fixed.all_names)
        table.index.name = "term"
        return table

    def _coef_method(self, ddf: str | None) -> str:
        """"z" (GLMMs), "lme4", or the ddf method of a linear mixed model."""
        from mixedmodels.inference.ddf import normalise_ddf

        if ddf is not None and str(ddf).strip().lower() == "lme4":
            if self.model_kind != "lmer":
                raise ModelSpecError(
                    f"ddf='lme4' is for linear mixed models; a {self.model_kind} model has z tests"
                )
            return "lme4"
        if self.model_kind != "lmer":
            if ddf is not None and normalise_ddf(ddf) != "asymptotic":
                raise ModelSpecError(
                    f"ddf={ddf!r}: denominator degrees of freedom (Satterthwaite, Kenward-Roger) "
                    f"are for linear mixed models; a {self.model_kind} model has asymptotic "
                    "z tests only (ddf='asymptotic'); for tests of terms use likelihood-ratio "
                    "tests (mixedmodels.anova)"
                )
            return "z"
        method = normalise_ddf(ddf, "satterthwaite")
        if method == "kenward-roger" and not getattr(self, "reml", False):
            raise ModelSpecError(
                "Kenward-Roger's method is only available for REML fits (as in lmerTest): "
                "refit with reml=True, or use ddf='satterthwaite'"
            )
        return method

    def anova(self, type: int | str = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F tests of the fixed-effects terms, lmerTest's ``anova(model, type, ddf)``.

        Parameters
        ----------
        type : {3, 2, 1, "III", "II", "I"}
            The hypotheses, built as lmerTest builds them (details in
            :mod:`mixedmodels.inference.ftest`):

            * Type I: sequential -- each term adjusted for the terms before it
              in the formula (rows of the Doolittle factor of X'X).
            * Type II: each term adjusted for every term that does not contain
              it (terms contained in no other: their coefficients = 0).
            * Type III (default): each term adjusted for all others, with the
              contrasts of a term contained in an interaction orthogonalised
              against the interaction's cells. They are built on the
              treatment-coded design and mapped to the model's coding, so the
              table is the same whichever ``contrasts=`` the model uses
              (``contr.sum`` or ``contr.treatment`` alike); with ``contr.sum``
              and balanced data they are "the term's coefficients = 0", i.e.
              equal marginal means (SAS's Type III), not the simple effects at
              a reference level that treatment-coded coefficients are.

            Models with a single term use Type I for every type (lmerTest).
        ddf : {"satterthwaite", "kenward-roger"}
            Denominator degrees of freedom (Kenward-Roger needs a REML fit).

        Returns
        -------
        DataFrame
            Indexed by formula term (no intercept row); columns ``sum_sq,
            mean_sq, num_df, den_df, F, p_value``. ``attrs["hypotheses"]``
            holds every term's contrast matrix.

        Raises
        ------
        ModelSpecError
            For GLMMs (use likelihood-ratio tests: ``mixedmodels.anova(m0, m1)``
            or ``m.drop1()``) and for Kenward-Roger on ML fits.
        """
        self._require_fit()
        from mixedmodels.inference.ftest import anova_table

        if self.model_kind != "lmer":
            raise ModelSpecError(
                f"F tests with denominator degrees of freedom are for linear mixed models; "
                f"for a {self.model_kind} model use likelihood-ratio tests: "
                "mixedmodels.anova(smaller_model, model)"
            )
        method = self._coef_method(ddf)
        if method not in ("satterthwaite", "kenward-roger"):
            raise ModelSpecError(
                f"anova needs ddf='satterthwaite' or 'kenward-roger', not {ddf!r}"
            )
        return anova_table(self, type, method)

    def tidy(
        self,
        effects: str = "fixed",
        conf_int: bool = False,
        conf_level: float = 0.95,
        ddf: str | None = None,
        conf_method: str | None = None,
        **confint_options: Any,
    ) -> pd.DataFrame:
        """A tidy DataFrame of estimates, in broom.mixed's spirit.

        Parameters
        ----------
        effects : {"fixed", "ran_pars", "ran_vals"}
            Fixed effects (with ``df`` and ``p_value`` as broom.mixed gives them
            for lmerTest fits); variance parameters (``sd__X``, ``cor__X.Y``,
            ``sd__Observation``); or conditional modes per level.
        conf_int : bool
            Add the intervals ``conf_low``/``conf_high``.
        conf_level : float
            Coverage of the intervals.
        ddf : str, optional
            The fixed-effects tests (see :meth:`coef_table`); default
            Satterthwaite for lmer fits, z tests for GLMMs.
        conf_method : {"Wald", "profile", "boot"}, optional
            How the intervals are computed. Default: Wald (estimate ± z se)
            for the fixed effects and the conditional modes, and the
            likelihood profile (lme4's ``confint(method = "profile")``, the
            ML deviance profiled as :meth:`profile` does) for the variance
            parameters, which have no Wald intervals (broom.mixed's default
            ``conf.method = "Wald"`` gives NA there; here that combination is
            refused). ``"profile"`` and ``"boot"`` (parametric bootstrap,
            percentile intervals) go through :meth:`confint`; the conditional
            modes have Wald intervals only, as in broom.mixed.
        **confint_options
            Passed to :meth:`confint` with ``conf_method`` "profile" or
            "boot" (e.g. ``nsim``, ``seed``, ``boot_type``, ``progress``).

        Raises
        ------
        ModelSpecError
            Wald intervals for ``ran_pars``, intervals other than Wald for
            ``ran_vals``, an unknown ``conf_method``, or interval options
            without ``conf_int``.
        """
        self._require_fit()
        method = _interval_method(effects, conf_method, conf_int, confint_options)
        if effects == "fixed":
            table = standard_coef_table(self.coef_table() if ddf is None else self.coef_table(ddf))
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
        elif effects == "ran_pars":
            out = self._tidy_ran_pars()
        elif effects == "ran_vals":
            out = self._tidy_ran_vals()
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
            ci = self.confint(parm=parm, method=method, level=conf_level, **confint_options)
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
            bounds = ci.reindex(self._ran_pars_parameter_names())
        out["conf_low"] = bounds["lower"].to_numpy()
        out["conf_high"] = bounds["upper"].to_numpy()
        out.attrs["conf_method"] = method
        return out

    def _ran_pars_parameter_names(self) -> list[str]:
        """lme4's parameter name (``.sig01`` ... ``.sigma``) of every row of
        ``tidy("ran_pars")``, whose rows follow ``varcorr``: per term the
        standard deviations, then the correlations, then the residual."""
        from mixedmodels.inference.parameters import variance_parameters

        lme4 = {(v.term, v.row, v.col): v.lme4 for v in variance_parameters(self)}
        out = []
        for j, term in enumerate(self.frame.terms):
            out += [lme4[(j, i, i)] for i in range(term.k)]
            # θ holds the lower triangle: the correlation of columns i < l is (l, i)
            out += [lme4[(j, l, i)] for i in range(term.k) for l in range(i + 1, term.k)]
        if (-1, 0, 0) in lme4:
            out.append(lme4[(-1, 0, 0)])
        return out

    def _tidy_ran_pars(self) -> pd.DataFrame:
        rows = []
        for r in self.varcorr.itertuples(index=False):
            if r.grp == "Residual":
                rows.append(("ran_pars", "Residual", "sd__Observation", r.sdcor))
            elif pd.isna(r.var2):
                rows.append(("ran_pars", r.grp, f"sd__{r.var1}", r.sdcor))
            else:
                rows.append(("ran_pars", r.grp, f"cor__{r.var1}.{r.var2}", r.sdcor))
        return pd.DataFrame(rows, columns=["effect", "group", "term", "estimate"])

    def _tidy_ran_vals(self) -> pd.DataFrame:
        frames = []
        for label, term, b, cv in zip(self._group_labels(), self.frame.terms, self.b, self._condvar_b()):
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

    def glance(self) -> pd.DataFrame:
        """One-row model summary: nobs, sigma, loglik, aic, bic, deviance, df_residual."""
        self._require_fit()
        row = {
            "nobs": self.nobs,
            "sigma": self.sigma,
            "loglik": self.loglik,
            "aic": self.aic,
            "bic": self.bic,
            "deviance": self.deviance,
            "df_residual": self.df_residual,
        }
        if getattr(self, "reml", False):
            row["reml_criterion"] = self.reml_criterion
        return pd.DataFrame([row])

    # ------------------------------------------------------------------ printing

    def summary(self, ddf: str | None = None, correlation: bool | None = None) -> "ModelSummary":
        """The model summary: printable, with the tables as attributes.

        Linear mixed models print lmerTest's layout (t tests with
        Satterthwaite's df by default, ``ddf="kenward-roger"`` for
        Kenward-Roger's); ``ddf="lme4"`` prints lme4's (no df, no p-values).
        GLMMs print lme4's z tests. ``correlation``: print the correlation of
        the fixed effects (default, as lme4: when there are at most 12).
        """
        self._require_fit()
        return ModelSummary(self, ddf, correlation)

    def __str__(self) -> str:
        if not self._fitted:
            return f"<unfitted {type(self).__name__}: {self.formula}>"
        return _format_print(self)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        if not self._fitted:
            return f"<pre>{html.escape(str(self))}</pre>"
        return f"<pre>{html.escape(str(self.summary()))}</pre>"


class ModelSummary:
    """The summary of a fitted model; ``str()`` gives lme4's layout, or
    lmerTest's for linear mixed models with denominator degrees of freedom.

    Attributes
    ----------
    coefficients : DataFrame
        The fixed-effects table (:meth:`MixedModelResults.coef_table`).
    varcorr : DataFrame
        Variance components (as ``model.varcorr``).
    ddf : str
        The method of the tests: "satterthwaite", "kenward-roger", "lme4" or
        "z" (GLMMs).
    """

    def __init__(
        self, model: MixedModelResults, ddf: str | None = None, correlation: bool | None = None
    ):
        self.model = model
        self.correlation = correlation
        self.ddf = model._coef_method(ddf)
        # (a subclass may define coef_table without the ddf argument)
        self.coefficients = model.coef_table() if ddf is None else model.coef_table(ddf)
        self.varcorr = model.varcorr

    def __str__(self) -> str:
        return _format_summary(self.model, self.coefficients, self.ddf, self.correlation)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


_CONF_METHODS = {"wald": "Wald", "profile": "profile", "boot": "boot"}


def _interval_method(
    effects: str, conf_method: str | None, conf_int: bool, options: dict[str, Any]
) -> str:
    """The interval method of ``tidy``: the default for ``effects``, or the
    one asked for when the effects have it."""
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
    """A coefficient table with this package's column names (``estimate, se,
    [df], t | z, [p_value]``), whichever naming produced it."""
    return table.rename(columns=_STANDARD_NAMES)


# ---------------------------------------------------------------------- formatting helpers


def format_numbers(values: np.ndarray, digits: int = 4) -> list[str]:
    """Format numbers jointly as R's ``format(x, digits=)``: enough decimals that
    every finite element shows ``digits`` significant digits (at most 15)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values) & (values != 0)]
    decimals = min(max((_decimals_for(v, digits) for v in finite), default=0), 15)
    return ["NaN" if not np.isfinite(v) else f"{v:.{decimals}f}" for v in values]


def _decimals_for(value: float, digits: int) -> int:
    """Decimals R needs to show ``value`` with ``digits`` significant digits, trailing
    zeros of the rounded value dropped."""
    mag = math.floor(math.log10(abs(value)))
    dec = max(digits - 1 - mag, 0)
    text = f"{value:.{dec}f}"
    if "." in text:
        trimmed = text.rstrip("0")
        dec = len(trimmed.split(".")[1]) if not trimmed.endswith(".") else 0
    return dec


def _align(rows: list[list[str]], left: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append(" " + " ".join(cells).rstrip())
    return lines


def _title(model: Any, method: str | None = None) -> str:
    if hasattr(model, "summary_title"):
        return "\n".join(model.summary_title())
    reml = getattr(model, "reml", False)
    # lme4's and lmerTest's titles without R's class names (['lmerMod'],
    # [lmerModLmerTest]) and the stray spaces R prints after "likelihood"
    title = f"Linear mixed model fit by {'REML' if reml else 'maximum likelihood'}"
    if method in ("satterthwaite", "kenward-roger"):
        name = "Satterthwaite's" if method == "satterthwaite" else "Kenward-Roger's"
        return f"{title}. t-tests use {name} method"
    return title


def _random_effects_lines(model: Any, with_variance: bool) -> list[str]:
    """lme4's random-effects table: numbers formatted jointly per column (4
    significant digits), then left-justified under the header as R prints it."""
    header = ["Groups", "Name"] + (["Variance"] if with_variance else []) + ["Std.Dev."]
    covs = model._covariances()
    has_resid = getattr(model, "has_residual", True)
    all_var = np.concatenate([np.diag(c) for c in covs] + ([[model.sigma**2]] if has_resid else []))
    var_txt = iter(_pad(format_numbers(all_var, 4)))
    sd_txt = iter(_pad(format_numbers(np.sqrt(all_var), 4)))
    any_corr = any(c.shape[0] > 1 for c in covs)
    rows: list[list[str]] = []
    for label, term, cov in zip(model._group_labels(), model.frame.terms, covs):
        sd = np.sqrt(np.diag(cov))
        for i, name in enumerate(term.cnames):
            row = [label if i == 0 else "", name]
            row += [next(var_txt)] if with_variance else []
            row.append(next(sd_txt))
            if any_corr:
                row.append(" ".join(_corr_text(cov, sd, i, j) for j in range(i)))
            rows.append(row)
    if has_resid:
        row = ["Residual", ""] + ([next(var_txt)] if with_variance else []) + [next(sd_txt)]
        rows.append(row + ([""] if any_corr else []))
    if any_corr:
        header.append("Corr")
    return _align([header] + rows, left=set(range(len(header))))


def _pad(texts: list[str]) -> list[str]:
    width = max((len(t) for t in texts), default=0)
    return [t.rjust(width) for t in texts]


def _corr_text(cov: np.ndarray, sd: np.ndarray, i: int, j: int) -> str:
    denom = sd[i] * sd[j]
    return f"{cov[i, j] / denom:5.2f}" if denom > 0 else "  NaN"


def _groups_line(model: Any) -> str:
    groups = ", ".join(f"{k}, {v}" for k, v in model.ngroups.items())
    return f"Number of obs: {model.nobs}, groups:  {groups}"


_HEADERS = {
    "estimate": "Estimate",
    "se": "Std. Error",
    "df": "df",
    "t": "t value",
    "z": "z value",
}

_LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def _print_table(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """The coefficient table as printed: R's column names; an lmer's
    asymptotic table as z tests."""
    table = standard_coef_table(table)
    if method == "asymptotic":
        table = table.drop(columns="df").rename(columns={"t": "z"})
    stat = "t" if "t" in table.columns else "z"
    cols = [c for c in ("estimate", "se", "df") if c in table.columns] + [stat]
    out = table[cols].rename(columns=_HEADERS)
    if "p_value" in table.columns:
        out[f"Pr(>|{stat}|)"] = table["p_value"]
    return out


def _fixed_lines(table: pd.DataFrame, method: str = "lme4") -> list[str]:
    """R's ``printCoefmat`` (digits 4, as lme4's and lmerTest's summaries call
    it): estimates, SEs (and df) rounded jointly to the decimals that give the
    smallest of them 4 significant digits, then formatted jointly; test
    statistics rounded to 3 decimals; p-values by ``format.pval`` (3 digits)
    with significance stars when some p < 0.1."""
    table = _print_table(table, method)
    has_p = table.columns[-1].startswith("Pr(")
    ncs = len(table.columns) - (2 if has_p else 1)
    values = table.to_numpy(dtype=float)
    cs = values[:, :ncs]
    finite = np.abs(cs[np.isfinite(cs) & (cs != 0)])
    dec = max(1, 4 - 1 - math.floor(math.log10(finite.min()))) if finite.size else 4
    cols = _format_joint(np.round(cs, dec), 4)
    cols.append(_format_joint(np.round(values[:, ncs : ncs + 1], 3), 4)[0])
    header = [""] + list(table.columns)
    stars = False
    if has_p:
        p = values[:, -1]
        cols.append(_format_pvalues(p))
        stars = bool(np.any(p[np.isfinite(p)] < 0.1))
        if stars:
            marks = [_stars(v) for v in p]
            width = max(len(m) for m in marks)
            cols.append([m.ljust(width) for m in marks])
            header.append("")
    names = list(table.index)
    rows = [header] + [[names[i]] + [c[i] for c in cols] for i in range(len(names))]
    lines = _align(rows, left={0})
    if stars:
        # the caller drops every line's first character (the empty name column)
        lines += [" ---", " " + _LEGEND]
    return lines


def _format_joint(block: np.ndarray, digits: int) -> list[list[str]]:
    """Columns of ``block`` formatted together as R's ``format(x, digits=)``
    of a matrix; a non-zero value that would print as zero gets its own
    formatting with one digit fewer (printCoefmat's rule); NA as "NA"."""
    flat = block.ravel()
    finite = np.isfinite(flat)
    texts = format_numbers(flat, digits) if finite.any() else []
    out = []
    for i, v in enumerate(flat):
        if np.isnan(v):
            out.append("NA")
        elif np.isinf(v):
            out.append("Inf" if v > 0 else "-Inf")
        else:
            t = texts[i]
            if v != 0 and float(t) == 0:
                t = f"{v:.{max(digits - 2, 0)}e}"
            out.append(t)
    width = max((len(t) for t in out), default=0)  # format() pads to a common width
    out = [t.rjust(width) for t in out]
    shaped = np.array(out, dtype=object).reshape(block.shape)
    return [list(shaped[:, j]) for j in range(block.shape[1])]


def _format_pvalues(p: np.ndarray) -> list[str]:
    """R's ``format.pval(p, digits = 3)``: p-values of 1e-4 and above formatted
    jointly in fixed notation, smaller ones jointly in scientific notation,
    those below machine precision as "< 2e-16" ("<2e-16" next to short ones)."""
    p = np.asarray(p, dtype=float)
    eps = np.finfo(float).eps
    out = ["NA"] * len(p)
    ok = np.isfinite(p)
    tiny = ok & (p < eps)
    rest = ok & ~tiny
    with np.errstate(divide="ignore"):
        expo = np.floor(np.log10(np.where(p > 0, p, 1e-50)))
    fixp = rest & (expo >= -4)  # R: expo >= -3 | (expo == -4 & digits > 1)
    sci = rest & ~fixp
    if fixp.any():
        for i, t in zip(np.flatnonzero(fixp), format_numbers(p[fixp], 3)):
            out[i] = t
    if sci.any():
        mant = max(_sci_digits(v, 3) for v in p[sci])
        for i in np.flatnonzero(sci):
            out[i] = f"{p[i]:.{mant}e}"
    if tiny.any():
        widths = [len(out[i]) for i in np.flatnonzero(rest)]
        sep = "" if widths and max(widths) <= 6 else " "
        if not widths:
            sep = ""
        for i in np.flatnonzero(tiny):
            out[i] = f"<{sep}2e-16"
    return out


def _sci_digits(value: float, digits: int) -> int:
    """Mantissa decimals R needs for ``value`` with ``digits`` significant
    digits, trailing zeros dropped."""
    text = f"{value:.{digits - 1}e}".split("e")[0]
    if "." not in text:
        return 0
    return len(text.split(".")[1].rstrip("0"))


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""


def _fixed_decimals(values: np.ndarray, decimals: int) -> list[str]:
    return ["NA" if not np.isfinite(v) else f"{v:.{decimals}f}" for v in values]


# ---------------------------------------------------------------------- R's abbreviate

_C_SPACE = frozenset(" \t\n\v\f\r")  # C's isspace in the C locale
_LOWER_VOWELS = frozenset("aeiou")


def _strip_chars(text: str, minlength: int, use_classes: bool) -> str:
    """R's C routine ``stripchars`` (src/main/character.c): drop characters
    from the end until ``minlength`` is reached: lower-case vowels ending a
    word, then lower-case vowels not starting one, then lower-case letters
    likewise, then anything but a word's first character. The first
    character is never dropped; spaces count as word boundaries and are
    removed at the end when the result is still longer than ``minlength``."""
    s = list(text)
    nspace = 0

    def char(i: int) -> str:
        return s[i] if 0 <= i < len(s) else "\0"

    def first_of_word(i: int) -> bool:
        return char(i - 1) in _C_SPACE

    def last_of_word(i: int) -> bool:
        return char(i - 1) not in _C_SPACE and (char(i + 1) == "\0" or char(i + 1) in _C_SPACE)

    def short_enough() -> bool:
        return len(s) - nspace <= minlength

    def strip(drop) -> bool:
        """One right-to-left pass deleting where ``drop(i)``; True when short enough."""
        for i in range(len(s) - 1, 0, -1):
            if drop(i):
                del s[i]
            if short_enough():
                return True
        return False

    done = len(s) < minlength
    if not done:
        trailing = True
        for i in range(len(s) - 1, 0, -1):
            if s[i] in _C_SPACE:
                if trailing:
                    del s[i:]
                else:
                    nspace += 1
            else:
                trailing = False
            if short_enough():
                done = True
                break
    passes = []
    if use_classes:
        passes = [
            lambda i: char(i) in _LOWER_VOWELS and last_of_word(i),
            lambda i: char(i) in _LOWER_VOWELS and not first_of_word(i),
            lambda i: "a" <= char(i) <= "z" and last_of_word(i),
            lambda i: "a" <= char(i) <= "z" and not first_of_word(i),
        ]
    passes.append(lambda i: not first_of_word(i) and char(i) not in _C_SPACE)
    for drop in passes:
        if done:
            break
        done = strip(drop)
    if len(s) > minlength:
        s = s[:1] + [c for c in s[1:] if c not in _C_SPACE]
    return "".join(s)


def abbreviate(
    names: list[str], minlength: int = 4, use_classes: bool = True, strict: bool = False
) -> list[str]:
    """R's ``abbreviate(names, minlength)`` (method "left.kept"), as lme4's
    summary uses it for the headers of the correlation of fixed effects.

    Names longer than ``minlength`` lose characters from the end (see
    :func:`_strip_chars`); unless ``strict``, names whose abbreviations
    collide are abbreviated again with ``minlength`` one larger until all
    differ. Exact for ASCII names; others follow the same rules with
    ASCII's lower-case letters and vowels.

    Examples
    --------
    >>> abbreviate(["(Intercept)", "period2", "period3"], 6)
    ['(Intr)', 'perid2', 'perid3']
    """
    if minlength <= 0:
        return ["" for _ in names]
    old = [str(n).lstrip(" ").rstrip(" ") for n in names]
    unique = list(dict.fromkeys(old))

    def shorten(items: list[str], length: int) -> list[str]:
        return [_strip_chars(t, length, use_classes) if len(t) > length else t for t in items]

    result = shorten(unique, minlength)
    if not strict:
        redo = _duplicated(result)
        while any(redo):
            minlength += 1
            clashing = {r for r, d in zip(result, redo) if d}
            redo = [d or r in clashing for r, d in zip(result, redo)]
            again = iter(shorten([u for u, d in zip(unique, redo) if d], minlength))
            result = [next(again) if d else r for r, d in zip(result, redo)]
            redo = _duplicated(result)
    lookup = dict(zip(unique, result))
    return [lookup[t] for t in old]


def _duplicated(values: list[str]) -> list[bool]:
    """R's ``duplicated``: True for every repeat of an earlier value."""
    seen: set[str] = set()
    out = []
    for v in values:
        out.append(v in seen)
        seen.add(v)
    return out


# R's print width (getOption("width")): wider matrices are printed in blocks of columns
_PRINT_WIDTH = 80
# lme4's option lme4.summary.cor.max: more fixed effects, no correlations by default
_COR_MAX = 12


def _correlation_lines(model: Any, correlation: bool | None = None) -> list[str]:
    """lme4's "Correlation of Fixed Effects": the lower triangle of the
    correlations rounded to 3 decimals and formatted jointly, rows named by
    ``abbreviate(names, 11)`` and columns by ``abbreviate(names, 6)``, printed
    as R prints a character matrix (left-aligned, in blocks of columns that
    fit 80 characters). ``correlation`` None: shown for at most 12 fixed
    effects, else a note (lme4's message)."""
    V = model.vcov.to_numpy()
    names = list(model.vcov.index)
    p = len(names)
    if correlation is None and p > _COR_MAX:
        return ["", f"Correlation matrix not shown by default, as p = {p} > {_COR_MAX}.",
                "Use summary(correlation=True) or model.vcov if you need it"]
    if p < 2 or correlation is False:
        return []
    sd = np.sqrt(np.diag(V))
    with np.errstate(divide="ignore", invalid="ignore"):
        C = np.round(V / np.outer(sd, sd), 3) + 0.0  # + 0.0: no "-0.000"
    texts = ["NaN" if np.isnan(v) else f"{v:.3f}" for v in C.ravel()]
    width = max(len(t) for t in texts)
    cells = np.array([t.rjust(width) for t in texts], dtype=object).reshape(p, p)
    row_names = abbreviate(names, 11)[1:]
    col_names = abbreviate(names, 6)[:-1]
    columns = [[col_names[j]] + [cells[i, j] if i > j else "" for i in range(1, p)]
               for j in range(p - 1)]
    return ["", "Correlation of Fixed Effects:"] + _character_matrix_lines(row_names, columns)


def _character_matrix_lines(row_names: list[str], columns: list[list[str]]) -> list[str]:
    """R's print of a character matrix with ``quote = FALSE``: row names and
    cells left-aligned, one space between columns; columns that do not fit
    the print width go to a further block below."""
    label_width = max(len(r) for r in row_names)
    widths = [max(len(c) for c in col) for col in columns]
    lines, start = [], 0
    while start < len(columns):
        stop, used = start + 1, label_width + widths[start] + 1
        while stop < len(columns) and used + widths[stop] + 1 < _PRINT_WIDTH:
            used += widths[stop] + 1
            stop += 1
        labels = [""] + row_names
        for r, label in enumerate(labels):
            parts = [label.ljust(label_width)]
            parts += [columns[j][r].ljust(widths[j]) for j in range(start, stop)]
            lines.append(" ".join(parts).rstrip())
        start = stop
    return lines


def _criterion_lines(model: Any) -> list[str]:
    if getattr(model, "reml", False):
        return [f"REML criterion at convergence: {model.reml_criterion:.1f}"]
    names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    vals = [f"{model.aic:.1f}", f"{model.bic:.1f}", f"{model.loglik:.1f}", f"{model.deviance:.1f}", str(model.df_residual)]
    width = max(len(v) for v in vals + names) + 1
    return ["".join(n.rjust(width) for n in names), "".join(v.rjust(width) for v in vals)]


def _format_summary(
    model: Any,
    table: pd.DataFrame | None = None,
    method: str = "lme4",
    correlation: bool | None = None,
) -> str:
    if table is None:
        table = model.coef_table()
    lines = [_title(model, method), f"Formula: {model.formula}"]
    if getattr(model, "data_name", None):
        lines.append(f"   Data: {model.data_name}")
    if getattr(model, "weights_given", False):
        lines.append(" Weights: given")
    offset_text = _offset_text(model)
    if offset_text:
        lines.append(f" Offset: {offset_text}")
    lines += [""] + _criterion_lines(model) + ["", "Scaled residuals: "]
    scaled = model._pearson_residuals() / model.sigma
    q = np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0])
    qt = _fixed_decimals(q, 4)
    rows = [["Min", "1Q", "Median", "3Q", "Max"], qt]
    lines += [line[1:] for line in _align(rows, left=set())]
    lines += ["", "Random effects:"] + _random_effects_lines(model, with_variance=True)
    lines.append(_groups_line(model))
    lines += ["", "Fixed effects:"] + [line[1:] for line in _fixed_lines(table, method)]
    lines += _correlation_lines(model, correlation)
    lines += _fit_messages(model)
    return "\n".join(lines)


def _offset_text(model: Any) -> str:
    """The offset terms of the formula, and "given" for an ``offset=`` argument."""
    frame = model.frame
    parts = [f"offset({expr})" for expr in frame.parsed.offsets]
    if getattr(model, "offset_given", False):
        parts.append("given (offset=)")
    return " + ".join(parts)


def _fit_messages(model: Any) -> list[str]:
    out = []
    dropped = [n for n in model.frame.fixed.all_names if n not in set(model.frame.fixed.names)]
    if dropped:
        out += ["", f"fit warnings: fixed-effect model matrix is rank deficient so dropping "
                f"{len(dropped)} column(s): {', '.join(dropped)}"]
    if model.is_singular:
        out += ["", "boundary (singular) fit: see is_singular"]
    return out


def _format_print(model: Any) -> str:
    lines = [_title(model), f"Formula: {model.formula}"]
    lines += _criterion_lines(model)
    lines += ["Random effects:"] + _random_effects_lines(model, with_variance=False)
    lines.append(_groups_line(model))
    lines.append("Fixed Effects:")
    est = model.fixef
    txt = format_numbers(est.to_numpy(), 4)
    rows = [list(est.index), txt]
    lines += [line[1:] for line in _align(rows, left=set())]
    lines += _fit_messages(model)
    return "\n".join(lines)
