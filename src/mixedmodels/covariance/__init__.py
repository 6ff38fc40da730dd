"""Random-effects covariance structures.

How a term's θ parametrises the covariance of one level's random effects.

A term ``(expr | g)`` with k columns has, for every level of ``g``, k random
effects with covariance σ² Λ Λᵀ, where Λ (k x k, the relative covariance
factor) is made from the term's slice of θ. :class:`CovarianceStructure` is
what a structure provides (θ's length, bounds, start, names, θ -> Λ);
:class:`Unstructured` is lme4's general positive semi-definite Λ Λᵀ. A new
structure (compound symmetry, AR(1), Toeplitz, ...) is a new subclass in a
module of its own here.

This package imports nothing else of mixedmodels: the terms of ``spec``
hold a structure and delegate to it.
"""

from mixedmodels.covariance.structure import CovarianceStructure
from mixedmodels.covariance.unstructured import Unstructured

__all__ = ["CovarianceStructure", "Unstructured"]
