"""R's Poisson family: counts."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import special

from mixedmodels.exceptions import FamilyError, NonIntegerResponseWarning
from mixedmodels.families.densities import dpois_log
from mixedmodels.families.family import Family, SplitDeviance, describe_values
from mixedmodels.families.numeric import as_float, non_integer

__all__ = ["Poisson"]


class Poisson(Family):
    """R's ``poisson(link = "log")``.

    See :class:`~mixedmodels.families.family.Family` for what the attributes mean.

    Attributes
    ----------
    name : str
        ``"poisson"``.
    link : Link
        The link (default ``"log"``).
    links : tuple of str
        ``"log"``, ``"identity"``, ``"sqrt"``.
    default_link : str
        ``"log"``.
    dispersion_is_fixed : bool
        True: φ = 1.
    counts_trials : bool
        False.
    constant_variance : bool
        False.
    kernel_code : int
        1, the compiled GLMM steps' Poisson variance.
    is_linear : bool
        False.
    """

    name = "poisson"
    links = ("log", "identity", "sqrt")
    default_link = "log"
    dispersion_is_fixed = True
    kernel_code = 1  # glmm_numba's Poisson variance

    def variance(self, mu):
        """Return ``mu`` (a copy)."""
        return as_float(mu).copy()

    def valid_mu(self, mu):
        """Return whether every ``mu`` is finite and positive."""
        mu = as_float(mu)
        return bool(np.all(np.isfinite(mu)) and np.all(mu > 0))

    def dev_resids(self, y, mu, wt=None):
        """Return ``2 wt (y log(y/mu) - (y - mu))``, and ``2 wt mu`` where ``y = 0``."""
        y, mu = as_float(y), as_float(mu)
        wt = 1.0 if wt is None else as_float(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(y > 0, wt * (y * np.log(y / mu) - (y - mu)), mu * wt)
        return 2 * r

    def aic(self, y, n, mu, wt, dev):
        """Return -2 × the Poisson log-likelihood, as R's ``poisson()$aic``.

        That is ``-2 sum(wt log dpois(y, mu))``; ``dev`` is not used.
        """
        y = as_float(y)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        with np.errstate(invalid="ignore"):
            return float(-2 * np.sum(dpois_log(y, mu) * wt))

    def mustart(self, y, wt=None):
        """Return ``y + 0.1``, as R's ``poisson()$initialize``."""
        return as_float(y) + 0.1

    def deviance_at(self, y, wt):
        """Return the deviance split into the saturated part and an ``xlogy`` term in μ.

        The saturated part is computed here; the term in μ replaces R's
        elementwise branches.
        """
        xlogy = special.xlogy
        constant = 2.0 * float(wt @ (xlogy(y, y) - y))
        return SplitDeviance(constant, lambda mu: -2.0 * float(wt @ (xlogy(y, mu) - mu)))

    def reference_mu(self, y, wt):
        """Return :meth:`mustart` kept at least 1e-3."""
        return np.clip(self.mustart(y, wt), 1e-3, None)

    def continuous_saturated_aic(self, y, n, wt):
        """Return -2 × the saturated log-likelihood with log Γ(y + 1) in place of log(y!)."""
        gammaln, xlogy = special.gammaln, special.xlogy
        return float(-2 * np.sum(wt * (xlogy(y, y) - y - gammaln(y + 1))))

    def simulate(self, mu, weights, dispersion, rng):
        """Draw Poisson counts with means ``mu``, as floats (the dispersion is 1)."""
        return rng.poisson(mu).astype(float)

    def _check_response(self, y, w, column_name):
        super()._check_response(y, w, column_name)
        neg = y < 0
        if np.any(neg):
            raise FamilyError(
                f"negative values not allowed for the Poisson family: response {column_name!r} has "
                f"{describe_values(y[neg])}"
            )
        nonint = non_integer(y)
        if np.any(nonint):
            warnings.warn(
                f"non-integer counts in response {column_name!r} for the Poisson family "
                f"({describe_values(y[nonint])}); R's dpois() gives them zero probability, so the "
                f"log-likelihood is -Inf",
                NonIntegerResponseWarning,
                stacklevel=3,
            )
