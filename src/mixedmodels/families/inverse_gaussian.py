"""R's inverse Gaussian family: positive responses, variance φμ³."""

from __future__ import annotations

import numpy as np

from mixedmodels.families.family import Family, require_positive
from mixedmodels.families.numeric import as_float

__all__ = ["InverseGaussian"]


class InverseGaussian(Family):
    """R's ``inverse.gaussian(link = "1/mu^2")``; the dispersion is estimated.

    See :class:`~mixedmodels.families.family.Family` for what the attributes mean.

    Attributes
    ----------
    name : str
        ``"inverse.gaussian"``.
    link : Link
        The link (default ``"1/mu^2"``).
    links : tuple of str
        ``"inverse"``, ``"log"``, ``"identity"``, ``"1/mu^2"``.
    default_link : str
        ``"1/mu^2"``.
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

    name = "inverse.gaussian"
    links = ("inverse", "log", "identity", "1/mu^2")
    default_link = "1/mu^2"
    dispersion_is_fixed = False

    def variance(self, mu):
        """Return ``mu³``."""
        mu = as_float(mu)
        return mu**3

    def dev_resids(self, y, mu, wt=None):
        """Return ``wt (y - mu)² / (y mu²)``."""
        y, mu = as_float(y), as_float(mu)
        wt = 1.0 if wt is None else as_float(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return wt * ((y - mu) ** 2) / (y * mu**2)

    def aic(self, y, n, mu, wt, dev):
        """Return R's ``inverse.gaussian()$aic``.

        That is ``sum(wt) (1 + log(2π dev / sum(wt))) + 3 sum(wt log(y)) + 2``.
        """
        y = as_float(y)
        wt = np.ones_like(y) if wt is None else as_float(wt)
        sw = np.sum(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(sw * (1 + np.log(dev / sw * 2 * np.pi)) + 3 * np.sum(np.log(y) * wt) + 2)

    def simulate(self, mu, weights, dispersion, rng):
        """Draw inverse Gaussian (Wald) responses: mean μ, shape 1/φ.

        φ is ``dispersion / weights``.
        """
        phi = dispersion / weights
        return rng.wald(mu, 1.0 / phi)

    def _check_response(self, y, w, column_name):
        super()._check_response(y, w, column_name)
        require_positive(
            y, f"positive values only are allowed for the inverse.gaussian family: response {column_name!r}"
        )
