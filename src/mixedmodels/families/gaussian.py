"""R's Gaussian family (other links than the identity: with it, the GLMM is
the linear mixed model).
"""

from __future__ import annotations

import numpy as np

from mixedmodels.exceptions import FamilyError
from mixedmodels.families.family import Family
from mixedmodels.families.numeric import as_float

__all__ = ["Gaussian"]


class Gaussian(Family):
    """R's ``gaussian(link = "identity")``; the dispersion is estimated."""

    name = "gaussian"
    links = ("inverse", "log", "identity")
    default_link = "identity"
    dispersion_is_fixed = False
    constant_variance = True

    @property
    def is_linear(self) -> bool:
        """With the identity link: the linear mixed model."""
        return self.link.name == "identity"

    def variance(self, mu):
        return np.ones_like(as_float(mu))

    def dev_resids(self, y, mu, wt=None):
        y, mu = as_float(y), as_float(mu)
        wt = 1.0 if wt is None else as_float(wt)
        return wt * ((y - mu) ** 2)

    def aic(self, y, n, mu, wt, dev):
        y = as_float(y)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        nobs = y.size
        with np.errstate(divide="ignore"):
            return float(nobs * (np.log(dev / nobs * 2 * np.pi) + 1) + 2 - np.sum(np.log(wt)))

    def mustart(self, y, wt=None):
        """``y``; as R, a log link needs ``y > 0`` and an inverse link ``y != 0``."""
        y = as_float(y)
        if (self.link.name == "inverse" and np.any(y == 0)) or (self.link.name == "log" and np.any(y <= 0)):
            raise FamilyError(
                f"cannot find valid starting values for the gaussian family with the "
                f"{self.link.name} link: the response has values outside the link's domain"
            )
        return y.copy()

    def simulate(self, mu, weights, dispersion, rng):
        return rng.normal(mu, np.sqrt(dispersion / weights))
