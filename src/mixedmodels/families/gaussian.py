"""R's Gaussian family.

Used by glmer for the other links than the identity: with it, the GLMM is the
linear mixed model.
"""

from __future__ import annotations

import numpy as np

from mixedmodels.exceptions import FamilyError
from mixedmodels.families.family import Family
from mixedmodels.families.numeric import as_float

__all__ = ["Gaussian"]


class Gaussian(Family):
    """R's ``gaussian(link = "identity")``; the dispersion is estimated.

    See :class:`~mixedmodels.families.family.Family` for what the attributes mean.

    Attributes
    ----------
    name : str
        ``"gaussian"``.
    link : Link
        The link (default ``"identity"``).
    links : tuple of str
        ``"inverse"``, ``"log"``, ``"identity"``.
    default_link : str
        ``"identity"``.
    dispersion_is_fixed : bool
        False: φ (σ²) is estimated.
    counts_trials : bool
        False.
    constant_variance : bool
        True: V(mu) = 1.
    kernel_code : None
        None: the compiled GLMM steps do not implement this variance function (numpy path).
    is_linear : bool
        True with the identity link.
    """

    name = "gaussian"
    links = ("inverse", "log", "identity")
    default_link = "identity"
    dispersion_is_fixed = False
    constant_variance = True

    @property
    def is_linear(self) -> bool:
        """Whether the link is the identity: then the GLMM is the linear mixed model."""
        return self.link.name == "identity"

    def variance(self, mu):
        """Return ones: ``V(mu) = 1``."""
        return np.ones_like(as_float(mu))

    def dev_resids(self, y, mu, wt=None):
        """Return ``wt (y - mu)²``."""
        y, mu = as_float(y), as_float(mu)
        wt = 1.0 if wt is None else as_float(wt)
        return wt * ((y - mu) ** 2)

    def aic(self, y, n, mu, wt, dev):
        """Return R's ``gaussian()$aic``: ``nobs (log(2π dev / nobs) + 1) + 2 - sum(log(wt))``."""
        y = as_float(y)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        nobs = y.size
        with np.errstate(divide="ignore"):
            return float(nobs * (np.log(dev / nobs * 2 * np.pi) + 1) + 2 - np.sum(np.log(wt)))

    def mustart(self, y, wt=None):
        """Return ``y``; as in R, a log link needs ``y > 0`` and an inverse link ``y != 0``.

        Otherwise a FamilyError says no valid starting values were found.
        """
        y = as_float(y)
        if (self.link.name == "inverse" and np.any(y == 0)) or (self.link.name == "log" and np.any(y <= 0)):
            raise FamilyError(
                f"cannot find valid starting values for the gaussian family with the "
                f"{self.link.name} link: the response has values outside the link's domain"
            )
        return y.copy()

    def simulate(self, mu, weights, dispersion, rng):
        """Draw normal responses with standard deviations ``sqrt(dispersion / weights)``."""
        return rng.normal(mu, np.sqrt(dispersion / weights))
