"""R's Gamma family: positive responses, variance φμ²."""

from __future__ import annotations

import numpy as np

from mixedmodels.families.densities import dgamma_log
from mixedmodels.families.family import Family, require_positive
from mixedmodels.families.numeric import as_float

__all__ = ["Gamma"]


class Gamma(Family):
    """R's ``Gamma(link = "inverse")``; the dispersion is estimated."""

    name = "Gamma"
    links = ("inverse", "log", "identity")
    default_link = "inverse"
    dispersion_is_fixed = False

    def variance(self, mu):
        mu = as_float(mu)
        return mu * mu

    def valid_mu(self, mu):
        mu = as_float(mu)
        return bool(np.all(np.isfinite(mu)) and np.all(mu > 0))

    def dev_resids(self, y, mu, wt=None):
        y, mu = as_float(y), as_float(mu)
        wt = 1.0 if wt is None else as_float(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -2 * wt * (np.log(np.where(y == 0, 1.0, y / mu)) - (y - mu) / mu)

    def aic(self, y, n, mu, wt, dev):
        y, mu = as_float(y), as_float(mu)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        disp = dev / np.sum(wt)
        with np.errstate(invalid="ignore"):
            return float(-2 * np.sum(dgamma_log(y, 1 / disp, mu * disp) * wt) + 2)

    def simulate(self, mu, weights, dispersion, rng):
        phi = dispersion / weights
        return rng.gamma(1.0 / phi, mu * phi)

    def _check_response(self, y, w, column_name):
        super()._check_response(y, w, column_name)
        require_positive(y, f"non-positive values not allowed for the Gamma family: response {column_name!r}")
