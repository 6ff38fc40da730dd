"""R's binomial family: a proportion of successes, the prior weights the trials."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import special

from mixedmodels.exceptions import FamilyError, NonIntegerResponseWarning
from mixedmodels.families.densities import dbinom_log
from mixedmodels.families.family import (
    Family,
    FamilyInit,
    SplitDeviance,
    checked_weights,
    describe_values,
    weights_like,
)
from mixedmodels.families.numeric import as_float

__all__ = ["Binomial"]


def _y_log_y(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``y log(y/mu)``, 0 at ``y = 0`` (R's ``y_log_y`` in ``family.c``)."""
    return np.where(y != 0, y * np.log(y / mu), 0.0)


class Binomial(Family):
    """R's ``binomial(link = "logit")``: ``y`` a proportion, the weights the trials.

    A 0/1 response has weights 1; a proportion of successes out of ``m``
    trials has weight ``m`` (see :meth:`initialize_counts` for R's
    ``cbind(successes, failures)``).

    See :class:`~mixedmodels.families.family.Family` for what the attributes mean.

    Attributes
    ----------
    name : str
        ``"binomial"``.
    link : Link
        The link (default ``"logit"``).
    links : tuple of str
        ``"logit"``, ``"probit"``, ``"cloglog"``, ``"cauchit"``, ``"log"``.
    default_link : str
        ``"logit"``.
    dispersion_is_fixed : bool
        True: φ = 1.
    counts_trials : bool
        True.
    constant_variance : bool
        False.
    kernel_code : int
        0, the compiled GLMM steps' binomial variance.
    is_linear : bool
        False.
    """

    name = "binomial"
    links = ("logit", "probit", "cloglog", "cauchit", "log")
    default_link = "logit"
    dispersion_is_fixed = True
    counts_trials = True
    kernel_code = 0  # glmm_numba's binomial variance

    def variance(self, mu):
        """Return ``mu (1 - mu)``."""
        mu = as_float(mu)
        return mu * (1 - mu)

    def valid_mu(self, mu):
        """Return whether every ``mu`` is finite and inside (0, 1)."""
        mu = as_float(mu)
        return bool(np.all(np.isfinite(mu)) and np.all((mu > 0) & (mu < 1)))

    def dev_resids(self, y, mu, wt=None):
        """Return ``2 wt (y log(y/mu) + (1 - y) log((1 - y)/(1 - mu)))``, 0 log 0 as 0."""
        y, mu = as_float(y), as_float(mu)
        wt = 1.0 if wt is None else as_float(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * wt * (_y_log_y(y, mu) + _y_log_y(1 - y, 1 - mu))

    def aic(self, y, n, mu, wt, dev):
        """Return -2 × the binomial log-likelihood, as R's ``binomial()$aic``.

        The numbers of trials ``m`` are ``n`` where any ``n`` > 1 (a two-column
        response), else the prior weights; successes and trials are rounded, and each
        observation counts ``wt / m`` times (0 where ``m`` is 0). ``dev`` is not used.
        """
        y, mu = as_float(y), as_float(mu)
        n = np.ones_like(y) if n is None else as_float(n)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        m = n if np.any(n > 1) else wt
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(m > 0, wt / m, 0.0)
            return float(-2 * np.sum(share * dbinom_log(np.rint(m * y), np.rint(m), mu)))

    def mustart(self, y, wt=None):
        """Return ``(wt y + 0.5) / (wt + 1)``, as R's ``binomial()$initialize``."""
        y = as_float(y)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        return (wt * y + 0.5) / (wt + 1)

    def response_for_fit(self, y, weights):
        """Return ``y`` with 0 where the weight is 0 (R: ``y[weights == 0] <- 0``)."""
        return np.where(weights == 0, 0.0, y)

    def deviance_at(self, y, wt):
        """Return the deviance split into the saturated part and two ``xlogy`` terms in μ.

        The saturated part is computed here; the terms in μ replace R's
        elementwise ``y log(y/μ)`` branches; for 0/1 outcomes it is one log per
        row.
        """
        success = _binary_successes(y)
        if success is not None:
            return SplitDeviance(0.0, lambda mu: -2.0 * float(wt @ np.log(np.where(success, mu, 1.0 - mu))))
        xlogy = special.xlogy
        constant = 2.0 * float(wt @ (xlogy(y, y) + xlogy(1.0 - y, 1.0 - y)))
        return SplitDeviance(constant, lambda mu: -2.0 * float(wt @ (xlogy(y, mu) + xlogy(1.0 - y, 1.0 - mu))))

    def saturated_aic(self, y, n, wt):
        """Return 0 for 0/1 outcomes, else as :meth:`Family.saturated_aic`.

        For 0/1 outcomes log C(m, 0) = log C(m, m) = 0.
        """
        if _binary_successes(y) is not None:
            return 0.0
        return super().saturated_aic(y, n, wt)

    def reference_mu(self, y, wt):
        """Return μ = 0.5 everywhere, inside (0, 1) whatever ``y``."""
        return np.full_like(y, 0.5)

    def continuous_saturated_aic(self, y, n, wt):
        """Return -2 × the saturated log-likelihood with log Γ for the binomial coefficient.

        The numbers of trials are as in :meth:`aic`, not rounded.
        """
        gammaln, xlogy = special.gammaln, special.xlogy
        m = n if np.any(n > 1) else wt
        share = np.where(m > 0, wt / np.where(m > 0, m, 1), 0.0)
        k = m * y
        log_choose = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
        return float(-2 * np.sum(share * (log_choose + xlogy(k, y) + xlogy(m - k, 1 - y))))

    def simulate(self, mu, weights, dispersion, rng):
        """Draw proportions of successes in ``rint(weights)`` trials.

        This is R's ``simulate`` for a proportion response; counts are
        proportion × trials. ``dispersion`` is not used (it is 1).
        """
        trials = np.rint(weights).astype(np.int64)
        return rng.binomial(np.maximum(trials, 0), mu) / np.maximum(trials, 1)

    def _check_response(self, y, w, column_name):
        y = self.response_for_fit(y, w)
        bad = ~((y >= 0) & (y <= 1))
        if np.any(bad):
            raise FamilyError(
                f"the binomial family needs response {column_name!r} in [0, 1] (0/1 outcomes, "
                f"or proportions of successes with the numbers of trials as weights); "
                f"{describe_values(y[bad])}"
            )
        m = w * y
        nonint = np.abs(m - np.rint(m)) > 0.001
        if np.any(nonint):
            i = int(np.flatnonzero(nonint.ravel())[0])
            warnings.warn(
                f"non-integer #successes in a binomial glm: response {column_name!r} times the "
                f"weights is not a whole number at {int(nonint.sum())} observation(s), "
                f"e.g. {y.flat[i]:g} * {w.flat[i]:g} = {m.flat[i]:g}",
                NonIntegerResponseWarning,
                stacklevel=3,
            )

    def initialize(self, y, weights=None, column_name="y"):
        """Validate a vector response (0/1 or proportions) and start, as R's ``binomInitialize``.

        Returns
        -------
        FamilyInit
            ``y`` with 0 where the weight is 0, ``n`` ones, the weights, and
            ``mustart = (weights * y + 0.5) / (weights + 1)``.
        """
        self.validate_response(y, weights, column_name)
        y = as_float(y)
        w = weights_like(y, weights).copy()
        y = self.response_for_fit(y, w)
        return FamilyInit(y, np.ones_like(y), w, self.mustart(y, w))

    def initialize_counts(
        self,
        successes: Any,
        failures: Any,
        weights: Any = None,
        column_name: str = "cbind(successes, failures)",
    ) -> FamilyInit:
        """Validate and start a two-column ``cbind(successes, failures)`` response.

        This is R's ``binomInitialize`` for a two-column response.

        Parameters
        ----------
        successes, failures : array-like
            Counts per observation.
        weights : array-like, optional
            Prior weights (default 1); multiplied by the numbers of trials.
        column_name : str
            Name of the response, for the messages.

        Returns
        -------
        FamilyInit
            ``y = successes / n`` (0 where ``n = 0``), ``n = successes + failures``,
            ``weights * n`` and ``mustart = (n * y + 0.5) / (n + 1)``.

        Raises
        ------
        FamilyError
            Negative or non-finite counts (R does not check these), bad weights.

        Warns
        -----
        NonIntegerResponseWarning
            Non-integer counts (R's "non-integer counts in a binomial glm!").
        """
        s, f = np.broadcast_arrays(as_float(successes), as_float(failures))
        counts = np.concatenate([s.ravel(), f.ravel()])
        bad = ~np.isfinite(counts) | (counts < 0)
        if np.any(bad):
            raise FamilyError(
                f"the binomial family needs non-negative finite counts in {column_name!r}; "
                f"{describe_values(counts[bad])}"
            )
        nonint = np.abs(counts - np.rint(counts)) > 0.001
        if np.any(nonint):
            warnings.warn(
                f"non-integer counts in a binomial glm: {column_name!r} has {describe_values(counts[nonint])}",
                NonIntegerResponseWarning,
                stacklevel=2,
            )
        n = s + f
        w = checked_weights(n, weights, column_name)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(n == 0, 0.0, s / n)
        return FamilyInit(y, n, w * n, (n * y + 0.5) / (n + 1))


def _binary_successes(y: np.ndarray) -> np.ndarray | None:
    """Where ``y`` is 1, when every ``y`` is 0 or 1 (0/1 outcomes); else None."""
    return (y == 1) if bool(np.all((y == 0) | (y == 1))) else None
