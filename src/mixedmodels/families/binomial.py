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
    """

    name = "binomial"
    links = ("logit", "probit", "cloglog", "cauchit", "log")
    default_link = "logit"
    dispersion_is_fixed = True
    counts_trials = True
    kernel_code = 0  # glmm_numba's binomial variance

    def variance(self, mu):
        mu = as_float(mu)
        return mu * (1 - mu)

    def valid_mu(self, mu):
        mu = as_float(mu)
        return bool(np.all(np.isfinite(mu)) and np.all((mu > 0) & (mu < 1)))

    def dev_resids(self, y, mu, wt=None):
        y, mu = as_float(y), as_float(mu)
        wt = 1.0 if wt is None else as_float(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * wt * (_y_log_y(y, mu) + _y_log_y(1 - y, 1 - mu))

    def aic(self, y, n, mu, wt, dev):
        y, mu = as_float(y), as_float(mu)
        n = np.ones_like(y) if n is None else as_float(n)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        m = n if np.any(n > 1) else wt
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(m > 0, wt / m, 0.0)
            return float(-2 * np.sum(share * dbinom_log(np.rint(m * y), np.rint(m), mu)))

    def mustart(self, y, wt=None):
        y = as_float(y)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        return (wt * y + 0.5) / (wt + 1)

    def response_for_fit(self, y, weights):
        """``y`` with 0 where the weight is 0 (R: ``y[weights == 0] <- 0``)."""
        return np.where(weights == 0, 0.0, y)

    def deviance_at(self, y, wt):
        """Return the deviance split into the saturated part (computed here) and
        two ``xlogy`` terms in μ, rather than R's elementwise ``y log(y/μ)``
        branches; for 0/1 outcomes one log per row.
        """
        success = _binary_successes(y)
        if success is not None:
            return SplitDeviance(0.0, lambda mu: -2.0 * float(wt @ np.log(np.where(success, mu, 1.0 - mu))))
        xlogy = special.xlogy
        constant = 2.0 * float(wt @ (xlogy(y, y) + xlogy(1.0 - y, 1.0 - y)))
        return SplitDeviance(constant, lambda mu: -2.0 * float(wt @ (xlogy(y, mu) + xlogy(1.0 - y, 1.0 - mu))))

    def saturated_aic(self, y, n, wt):
        """0 for 0/1 outcomes (log C(m, 0) = log C(m, m) = 0), else as
        :meth:`Family.saturated_aic`.
        """
        if _binary_successes(y) is not None:
            return 0.0
        return super().saturated_aic(y, n, wt)

    def reference_mu(self, y, wt):
        return np.full_like(y, 0.5)

    def continuous_saturated_aic(self, y, n, wt):
        gammaln, xlogy = special.gammaln, special.xlogy
        m = n if np.any(n > 1) else wt
        share = np.where(m > 0, wt / np.where(m > 0, m, 1), 0.0)
        k = m * y
        log_choose = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
        return float(-2 * np.sum(share * (log_choose + xlogy(k, y) + xlogy(m - k, 1 - y))))

    def simulate(self, mu, weights, dispersion, rng):
        """Proportions of ``rint(weights)`` trials (R's ``simulate`` for a
        proportion response; counts are proportion × trials).
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
        """R's ``binomInitialize`` for a vector response (0/1 or proportions).

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
        """R's ``binomInitialize`` for a two-column ``cbind(successes, failures)`` response.

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
