"""R's Gamma family: positive responses, variance φμ²."""

from __future__ import annotations

import numpy as np

from mixedmodels.families.densities import dgamma_log
from mixedmodels.families.family import Family, require_positive
from mixedmodels.families.numeric import as_float

__all__ = ["Gamma"]


class Gamma(Family):
    """R's ``Gamma(link = "inverse")``; the dispersion is estimated.

    See :class:`~mixedmodels.families.family.Family` for what the attributes mean.

    Attributes
    ----------
    name : str
        ``"Gamma"``.
    link : Link
        The link (default ``"inverse"``).
    links : tuple of str
        ``"inverse"``, ``"log"``, ``"identity"``.
    default_link : str
        ``"inverse"``.
    dispersion_is_fixed : bool
        False: φ is estimated.
    counts_trials : bool
        False.
    constant_variance : bool
        False.
    kernel_code : None
        None: the compiled GLMM steps do not implement this variance function (numpy path).
    is_linear : bool
        False.
    """

    name = "Gamma"
    links = ("inverse", "log", "identity")
    default_link = "inverse"
    dispersion_is_fixed = False

    def variance(self, mu):
        """Return ``mu²``."""
        mu = as_float(mu)
        return mu * mu

    def valid_mu(self, mu):
        """Return whether every ``mu`` is finite and positive."""
        mu = as_float(mu)
        return bool(np.all(np.isfinite(mu)) and np.all(mu > 0))

    def dev_resids(self, y, mu, wt=None):
        """Return ``-2 wt (log(y/mu) - (y - mu)/mu)``, the log taken as 0 at ``y = 0`` (as R)."""
        y, mu = as_float(y), as_float(mu)
        wt = 1.0 if wt is None else as_float(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -2 * wt * (np.log(np.where(y == 0, 1.0, y / mu)) - (y - mu) / mu)

    def aic(self, y, n, mu, wt, dev):
        """Return R's ``Gamma()$aic``: -2 × the log-likelihood at φ = ``dev / sum(wt)``, plus 2."""
        y, mu = as_float(y), as_float(mu)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        disp = dev / np.sum(wt)
        with np.errstate(invalid="ignore"):
            return float(-2 * np.sum(dgamma_log(y, 1 / disp, mu * disp) * wt) + 2)

    def simulate(self, mu, weights, dispersion, rng):
        """Draw Gamma responses with shape 1/φ and scale μφ, φ = ``dispersion / weights``."""
        phi = dispersion / weights
        return rng.gamma(1.0 / phi, mu * phi)

    def _check_response(self, y, w, column_name):
        super()._check_response(y, w, column_name)
        require_positive(y, f"non-positive values not allowed for the Gamma family: response {column_name!r}")
