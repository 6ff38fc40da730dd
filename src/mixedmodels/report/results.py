"""The results protocol every fitted model shares.

A model class supplies the engine-specific pieces (``beta``, ``vcov``,
``sigma``, ``loglik``, ``covariances``, ``b``, ``condvar_b`` ...); this base
class turns them into what users see: named pandas objects, lme4's summary
layout (:mod:`mixedmodels.report.summary`), and tidy DataFrames in
broom.mixed's spirit (:mod:`mixedmodels.report.tidy`). The members inference
and report read are listed in :mod:`mixedmodels.inference.protocol`.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError, ModelSpecError
from mixedmodels.report.summary import ModelSummary, format_print
from mixedmodels.report.tidy import glance_frame, tidy_frame

__all__ = ["MixedModelResults", "NotFittedError"]


class NotFittedError(MixedModelsError):
    """A result was asked of a model that has not been fitted (call ``.fit()``)."""


class MixedModelResults:
    """Shared accessors, summaries and tidy outputs of fitted mixed models.

    The base of the model classes. A model class supplies the engine's numbers:
    ``frame``, ``formula``, ``beta``, ``vcov``, ``sigma``, ``loglik``,
    ``deviance``, ``n_params``, ``theta``, ``is_singular``, ``b`` and the
    underscore hooks listed in :mod:`mixedmodels.inference.protocol`; this
    class derives the rest. Every fitted value raises :class:`NotFittedError`
    before ``.fit()``.

    Attributes
    ----------
    model_kind : str
        The kind of model: "lmer", "glmer" ("model" on this base class).
    fixef : Series
        Fixed-effects estimates, named as in R (dropped aliased columns excluded).
    se : Series
        Standard errors of the fixed effects.
    nobs : int
        Number of observations used (after dropping incomplete rows).
    n_dropped : int
        Number of rows dropped for missing values.
    ngroups : dict of str to int
        Number of levels of every grouping factor (lme4's names, e.g. ``cask:batch``).
    aic, bic : float
        Akaike's and Schwarz's information criteria, as lme4's ``AIC`` and ``BIC``
        (from ``loglik``, which is the REML one for REML fits, as in lme4).
    df_residual : int
        Residual degrees of freedom, ``nobs - n_params`` (lme4's ``df.residual``).
    varcorr : DataFrame
        Variance components as lme4's ``as.data.frame(VarCorr(fit))``.
    ranef : dict of str to DataFrame
        Conditional modes of the random effects per grouping factor.
    ranef_condsd : dict of str to DataFrame
        Conditional standard deviations of the random effects, laid out as ``ranef``.
    inference_cache : dict
        What inference methods compute once per fit (Satterthwaite's and
        Kenward-Roger's pieces, a REML twin of an ML fit ...).
    """

    model_kind = "model"
    _fitted = False

    def require_fit(self) -> None:
        """Check that the model has been fitted.

        Raises
        ------
        NotFittedError
            If :meth:`fit` has not run yet.
        """
        if not self._fitted:
            raise NotFittedError("the model has not been fitted yet: call .fit() first")

    @property
    def inference_cache(self) -> dict:
        """What inference methods compute once per fit, made on first use.

        The model owns it, so that the methods of :mod:`mixedmodels.inference`
        never set the model's state themselves; a refit starts without it.
        """
        cache = getattr(self, "_cache", None)
        if cache is None:
            cache = {}
            self._cache = cache
        return cache

    def reset_inference_cache(self) -> None:
        """Start an empty inference cache (a copy of a model must not share its original's)."""
        self._cache = {}

    # ------------------------------------------------------------------ basic numbers

    @property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates, named as in R (dropped aliased columns excluded)."""
        self.require_fit()
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
        """Akaike's information criterion, ``-2 loglik + 2 n_params`` (lme4's ``AIC``)."""
        self.require_fit()
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        """Schwarz's criterion, ``-2 loglik + log(nobs) n_params`` (lme4's ``BIC``)."""
        self.require_fit()
        return -2.0 * self.loglik + math.log(self.nobs) * self.n_params

    @property
    def df_residual(self) -> int:
        """Residual degrees of freedom, ``nobs - n_params`` (lme4's ``df.residual``)."""
        return self.nobs - self.n_params

    # ------------------------------------------------------------------ variance components

    def group_labels(self) -> list[str]:
        """Return the grouping factor's name of every term, made unique as R's ``make.unique``.

        Returns
        -------
        list of str
            One label per random-effects term (``Subject``, ``Subject.1``).
        """
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
        self.require_fit()
        rows = []
        for label, term, cov in zip(self.group_labels(), self.frame.terms, self.covariances()):
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
        """Conditional modes of the random effects (lme4's ``ranef``).

        A dict: grouping factor's name -> DataFrame (index: levels in R's order,
        one column per term column; terms sharing a factor side by side).
        """
        self.require_fit()
        return self._per_group(self.b)

    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """Return the conditional covariance matrices of the random effects per term.

        A dict ``{group label: (levels, k, k) array}`` (lme4's ``postVar``);
        labels are made unique as R's make.unique (Subject, Subject.1).
        """
        self.require_fit()
        return dict(zip(self.group_labels(), self.condvar_b()))

    @property
    def ranef_condsd(self) -> dict[str, pd.DataFrame]:
        """Conditional standard deviations of the random effects, laid out as ``ranef``."""
        self.require_fit()
        sds = [np.sqrt(np.diagonal(c, axis1=1, axis2=2)) for c in self.condvar_b()]
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
        """Return the fixed-effects table, one row per coefficient, indexed by ``term``.

        Aliased (dropped) columns are rows of NaN.

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
        self.require_fit()
        method = self.coef_test_method(ddf)
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

    def coef_test_method(self, ddf: str | None) -> str:
        """Return how the coefficient table tests the fixed effects, given ``ddf``.

        Parameters
        ----------
        ddf : str or None
            The ``ddf`` argument of ``coef_table`` / ``summary``.

        Returns
        -------
        str
            ``"z"`` (GLMMs), ``"lme4"`` (t values without p-values), or the
            denominator-degrees-of-freedom method of a linear mixed model
            (``"satterthwaite"`` by default, ``"kenward-roger"``, ...).

        Raises
        ------
        ModelSpecError
            For a method the model kind does not have.
        """
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
        self.require_fit()
        from mixedmodels.inference.ftest import anova_table

        if self.model_kind != "lmer":
            raise ModelSpecError(
                f"F tests with denominator degrees of freedom are for linear mixed models; "
                f"for a {self.model_kind} model use likelihood-ratio tests: "
                "mixedmodels.anova(smaller_model, model)"
            )
        method = self.coef_test_method(ddf)
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
        """Return a tidy DataFrame of estimates, in broom.mixed's spirit.

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
        self.require_fit()
        return tidy_frame(self, effects, conf_int, conf_level, ddf, conf_method, confint_options)

    def glance(self) -> pd.DataFrame:
        """One-row model summary: nobs, sigma, loglik, aic, bic, deviance, df_residual."""
        self.require_fit()
        return glance_frame(self)

    # ------------------------------------------------------------------ printing

    def summary(self, ddf: str | None = None, correlation: bool | None = None) -> "ModelSummary":
        """Return the model summary: printable, with the tables as attributes.

        Linear mixed models print lmerTest's layout (t tests with
        Satterthwaite's df by default, ``ddf="kenward-roger"`` for
        Kenward-Roger's); ``ddf="lme4"`` prints lme4's (no df, no p-values).
        GLMMs print lme4's z tests. ``correlation``: print the correlation of
        the fixed effects (default, as lme4: when there are at most 12).
        """
        self.require_fit()
        return ModelSummary(self, ddf, correlation)

    def __str__(self) -> str:
        if not self._fitted:
            return f"<unfitted {type(self).__name__}: {self.formula}>"
        return format_print(self)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        if not self._fitted:
            return f"<pre>{html.escape(str(self))}</pre>"
        return f"<pre>{html.escape(str(self.summary()))}</pre>"
