"""The base class of the lme4-style models: what they share.

That is θ and the λ factor of every random-effects term, singularity, the
random-effects part of predictions for new data, and the inference methods
(``confint``, ``profile``, ``bootstrap``, ``drop1``). The models supply
``frame`` (a :class:`~mixedmodels.spec.frame.ModelFrame`), ``theta_slices``,
and after fitting ``theta_vector`` and ``b``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import PredictionError, SingularFitWarning
from mixedmodels.report.results import MixedModelResults
from mixedmodels.spec.matrix import evaluate_expression
from mixedmodels.spec.newdata import apply_spec, newdata_fixed_matrix, newdata_frame
from mixedmodels.support.newdata import include_random, level_positions
from mixedmodels.support.warnings import warn_caller

__all__ = ["RandomEffectsModel", "SINGULAR_TOL", "consecutive_slices"]


def consecutive_slices(sizes: list[int]) -> list[slice]:
    """Slices of consecutive runs of ``sizes`` entries (each term's part of θ)."""
    out, start = [], 0
    for size in sizes:
        out.append(slice(start, start + size))
        start += size
    return out


# lme4's isSingular tolerance: a diagonal element of some λ below it.
SINGULAR_TOL = 1e-4


class RandomEffectsModel(MixedModelResults):
    """The base class of the lme4-style models: θ, λ, singularity, inference.

    Base of :class:`~mixedmodels.LinearMixedModel`,
    :class:`~mixedmodels.GeneralizedLinearMixedModel` and
    :class:`~mixedmodels.models.lmm.dask.DaskLinearMixedModel`; itself a
    :class:`~mixedmodels.report.results.MixedModelResults` (``fixef``, ``se``,
    ``varcorr``, ``ranef``, summaries, tidy tables). The attributes it adds
    (results need a fit first):

    Attributes
    ----------
    beta : ndarray
        Fixed-effects estimates as an array (``fixef`` is the named Series).
    theta : Series
        θ, the relative covariance parameters, with lme4's names.
    theta_vector : ndarray
        The same θ as a plain array, the engine's (set by ``fit``).
    theta_slices : list of slice
        Where each random-effects term's θ lies in ``theta_vector``.
    fitted_objective : float
        The optimizer's objective at the optimum (REML criterion or ML
        deviance of an lmer, Laplace/AGQ deviance of a glmer).
    theta_lower : ndarray
        Lower bounds of θ: 0 for the diagonal elements of every λ, -inf else.
    theta_scale : ndarray
        Per θ element, the factor giving θ for unit-scale columns.
    loglik : float
        Log-likelihood at the optimum (lme4's ``logLik``).
    is_singular : bool
        Whether the fit is on the boundary (lme4's ``isSingular``).
    """

    @property
    def beta(self) -> np.ndarray:
        """Fixed-effects estimates as an array (see ``fixef`` for names)."""
        self.require_fit()
        return self._beta

    @property
    def loglik(self) -> float:
        """Log-likelihood: -½ × the objective at the optimum, as lme4's ``logLik``.

        It is the REML log-likelihood for REML fits, and the Laplace or
        quadrature approximation for GLMMs.
        """
        self.require_fit()
        return -0.5 * self.fitted_objective

    def covariances(self) -> list[np.ndarray]:
        """Return the covariance matrix Σ_j = σ² λ_j λ_j' of every random-effects term.

        Returns
        -------
        list of ndarray
            One (k, k) matrix per term, in the engine's term order.
        """
        return [self.sigma**2 * lam @ lam.T for lam in self.lambdas(self.theta_vector)]

    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        """Return the relative covariance factors λ of every term for ``theta``."""
        return [t.lam(theta[s]) for t, s in zip(self.frame.terms, self.theta_slices)]

    @property
    def theta_lower(self) -> np.ndarray:
        """Lower bounds of θ: 0 for the diagonal elements of every λ, -inf for the others."""
        return np.concatenate([t.theta_lower() for t in self.frame.terms])

    @property
    def theta_scale(self) -> np.ndarray:
        """Per θ element, the factor giving θ in unit-scale columns.

        See :meth:`~mixedmodels.spec.random.ReTerm.theta_scale`; all ones
        unless a random-effects column is in tiny or huge units. The searches
        run on θ × theta_scale, and the singularity rule reads it, so neither
        depends on the units of the covariates.
        """
        scale = self.__dict__.get("_theta_scale")
        if scale is None:
            scale = np.concatenate([t.theta_scale() for t in self.frame.terms])
            self._theta_scale = scale
        return scale

    def _canonical_theta(self, theta: np.ndarray) -> np.ndarray:
        """Return θ with every λ column's sign chosen to make its diagonal non-negative.

        The covariance is the same; this is lme4's parametrization.
        """
        out = np.array(theta, dtype=float)
        for term, sl in zip(self.frame.terms, self.theta_slices):
            lam = term.lam(out[sl])
            flip = np.where(np.diag(lam) < 0, -1.0, 1.0)
            rows, cols = term.theta_rows_cols()
            out[sl] = (lam * flip[None, :])[rows, cols]
        return out

    def _singular_terms(self) -> list[str]:
        out = []
        unit = self.theta_vector * self.theta_scale
        for term, s in zip(self.frame.terms, self.theta_slices):
            th = unit[s]
            if np.any(th[term.theta_lower() == 0] < SINGULAR_TOL):
                out.append(term.spec.text)
        return out

    @property
    def is_singular(self) -> bool:
        """Whether the fit is singular, as lme4's ``isSingular``.

        True when a diagonal element of some λ is below 1e-4 (λ of the
        unit-scale columns where a column is in tiny or huge units, see
        :attr:`theta_scale`).
        """
        self.require_fit()
        unit = self.theta_vector * self.theta_scale
        return bool(np.any(unit[self.theta_lower == 0] < SINGULAR_TOL))

    @property
    def theta(self) -> pd.Series:
        """θ with lme4's names (column-wise lower triangles of the λ factors)."""
        self.require_fit()
        names = [n for t in self.frame.terms for n in t.theta_names()]
        return pd.Series(self.theta_vector, index=names, name="theta")

    def _newdata_eta(self, newdata, re_form: str | None, new_levels: str):
        """Return the linear predictor of new rows and their index.

        The linear predictor holds the fixed effects, the offsets and, unless
        ``re_form`` excludes them, the random effects.
        """
        if new_levels not in ("population", "error", "nan"):
            raise PredictionError(
                f"new_levels must be 'population', 'error' or 'nan', not {new_levels!r}"
            )
        include_re = include_random(re_form)
        nd = newdata_frame(newdata, self.frame.parsed)
        eta = newdata_fixed_matrix(self.frame.fixed, nd) @ self._beta + self._newdata_offset(nd)
        if include_re:
            eta = eta + self._newdata_random(nd, new_levels)
        return eta, nd.index

    def _newdata_offset(self, nd: pd.DataFrame) -> np.ndarray:
        total = np.zeros(len(nd))
        for expr in self.frame.parsed.offsets:
            total += evaluate_expression(expr, nd, "offset")
        return total

    def _newdata_random(self, nd: pd.DataFrame, new_levels: str) -> np.ndarray:
        total = np.zeros(len(nd))
        for term, b in zip(self.frame.terms, self.b):
            pos, labels = level_positions(term, nd)
            unseen = pos < 0
            if unseen.any():
                if new_levels == "error":
                    bad = sorted(set(labels[unseen]))
                    raise PredictionError(
                        f"newdata has level(s) {bad} of grouping factor {term.name!r} "
                        "not seen in the fit"
                    )
            z = apply_spec(term.model_spec, nd, f"random-effects term {term.spec.text}")
            contrib = np.einsum("nk,nk->n", z, b[np.where(unseen, 0, pos)])
            contrib[unseen] = np.nan if new_levels == "nan" else 0.0
            total += contrib
        return total

    def confint(
        self,
        parm: Any = None,
        method: str = "profile",
        level: float = 0.95,
        nsim: int = 500,
        seed: int | np.random.Generator | None = None,
        names: str = "lme4",
        boot_type: str = "perc",
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Confidence intervals of all parameters (lme4's ``confint.merMod``).

        Rows, as lme4 names them: the random-effect standard deviations and
        correlations of every term in θ order (``.sig01``, ``.sig02``, ...; for
        ``(Days | Subject)``: intercept SD, correlation, slope SD), the residual
        SD ``.sigma``, then the fixed effects. ``names="readable"`` gives
        lme4's other names (``sd_(Intercept)|Subject``,
        ``cor_Days.(Intercept)|Subject``, ``sigma``).

        Parameters
        ----------
        parm : None, str, int or list
            Rows to compute: names (either style), 0-based positions,
            ``"theta_"`` (variance parameters) or ``"beta_"`` (fixed effects).
        method : {"profile", "wald", "boot"}
            Likelihood profile (of the ML deviance, as lme4; see :meth:`profile`),
            Wald (fixed effects only: β ± z se; NaN for the variance
            parameters, as lme4) or parametric bootstrap (see :meth:`bootstrap`).
        level : float
        nsim, seed : int, int or Generator
            Bootstrap replicates and seed (``method="boot"``).
        names : {"lme4", "readable"}
        boot_type : {"perc", "basic", "norm", "shortest"}
            Bootstrap interval (lme4's ``boot.type``; ``"shortest"`` is the
            shortest interval holding ``level`` of the replicates).
        **kwargs
            Passed to :meth:`profile` or :meth:`bootstrap` (e.g. ``n_jobs``,
            ``progress``).

        Returns
        -------
        DataFrame
            Columns ``lower`` and ``upper``, index ``parameter``; the level and
            the method in ``attrs``.
        """
        from mixedmodels.inference.confint import confint

        return confint(self, parm, method, level, nsim, seed, names, boot_type, **kwargs)

    def profile(
        self, which: Any = None, *, progress: bool = False, names: str = "lme4", **kwargs: Any
    ):
        """Likelihood profiles of the parameters (lme4's ``profile.merMod``).

        The ML deviance (lmer: REML fits are refitted by ML first, as lme4
        does; glmer: the Laplace or quadrature deviance) is minimised over the
        other parameters on lme4's grid of values of each parameter; see
        :func:`mixedmodels.inference.profile.profile` for the grid controls
        (``alphamax``, ``maxpts``, ``delta``, ``maxmult``, ...).

        Parameters
        ----------
        which : None, str, int or list
            Parameters to profile (as ``parm`` of :meth:`confint`).
        progress : bool
            Show the parameter being profiled and the points done.
        names : {"lme4", "readable"}

        Returns
        -------
        ProfileResult
            ``.table`` (parameter, value, zeta and every parameter's value),
            ``.confint(level)``, ``.plot()``.
        """
        from mixedmodels.inference.profile import profile

        return profile(self, which, names=names, progress=progress, **kwargs)

    def bootstrap(
        self,
        nsim: int = 1000,
        seed: int | np.random.Generator | None = None,
        n_jobs: int = 1,
        progress: bool = False,
        use_u: bool = False,
    ):
        """Parametric bootstrap (lme4's ``bootMer``, type "parametric").

        Responses are simulated from the fit (:meth:`simulate`, all drawn
        from one Generator seeded with ``seed``) and the model refitted to each
        (:meth:`refit`). ``n_jobs`` worker processes share the refits; the
        result does not depend on it.

        Parameters
        ----------
        nsim : int
            Number of replicates.
        seed : int or Generator, optional
            Seed of the one Generator all responses are drawn from.
        n_jobs : int
            Worker processes sharing the refits.
        progress : bool
            Show the replicates done.
        use_u : bool
            Simulate conditional on the fitted random effects (lme4's
            ``use.u = TRUE``) instead of drawing new ones.

        Returns
        -------
        BootstrapResult
            ``.replicates`` (θ, σ, β, SDs and correlations per replicate),
            ``.confint(method, level)``, counts of failed and singular refits.
        """
        from mixedmodels.inference.bootstrap import bootstrap

        return bootstrap(self, nsim=nsim, seed=seed, n_jobs=n_jobs, progress=progress, use_u=use_u)

    def drop1(self, test: str = "none") -> pd.DataFrame:
        """Single-term deletions of fixed effects (lme4's ``drop1``).

        The table gives the ML AIC of the model without each term that can be
        dropped respecting marginality, and with ``test="Chisq"`` the
        likelihood-ratio test. See :func:`mixedmodels.inference.lrt.drop1`.
        """
        from mixedmodels.inference.lrt import drop1

        return drop1(self, test=test)

    def pearson_residuals_for_summary(self) -> np.ndarray:
        """Return the Pearson residuals as the summary's "Scaled residuals" line needs them.

        It divides them by σ and prints their quartiles; a model may return any
        values with the same minimum, quartiles and maximum (the Dask model
        returns just those five).

        Returns
        -------
        ndarray
            The Pearson residuals.
        """
        return self.residuals("pearson").to_numpy()

    def _warn_if_singular(self) -> None:
        if self.is_singular:
            warn_caller(
                "boundary (singular) fit: zero variance or |correlation| = 1 in term(s) "
                + ", ".join(self._singular_terms()),
                SingularFitWarning,
            )
