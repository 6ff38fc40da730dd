"""GLM families and link functions, computed as R's ``stats::family`` objects.

The modules: :mod:`~mixedmodels.families.links` (R's ``make.link``),
:mod:`~mixedmodels.families.densities` (R's log-densities),
:mod:`~mixedmodels.families.family` (the :class:`Family` interface the GLMM
engine asks), one module per family, and
:mod:`~mixedmodels.families.registry` (:func:`get_family`). A new family is a
subclass of :class:`Family` in a module of its own, imported here.

``glmer``'s deviance and log-likelihood are built from these, so every function
follows R's code (``src/library/stats/R/family.R``, ``.../src/family.c`` and the
``nmath`` densities) rather than a textbook formula: the logit link's ±30
thresholds, the probit and cauchit clamps at the ``DBL_EPSILON`` quantiles, the
``y log(y/mu)`` convention at ``y = 0``, the binomial AIC's rounding of the
number of trials, and Catherine Loader's saddle-point log-densities that R's
``dbinom``, ``dpois`` and ``dgamma`` use (accurate for huge counts, where
``log(y!)`` minus ``y log(mu)`` would cancel catastrophically).

>>> fam = get_family("binomial")            # binomial(link = "logit")
>>> float(fam.linkinv(-40.0))               # clamped as R's C code does
2.2204460492503126e-16
>>> get_family("poisson", link="sqrt")
Poisson(link='sqrt')

All functions are vectorised over numpy arrays and return float arrays (or
numpy floats for scalar input); they emit no floating-point warnings but, like
R, return ``inf``/``nan`` where R does.
"""

from mixedmodels.exceptions import FamilyError, NonIntegerResponseWarning
from mixedmodels.families.family import Family, FamilyInit
from mixedmodels.families.links import (
    CauchitLink,
    CloglogLink,
    IdentityLink,
    InverseLink,
    InverseSquareLink,
    Link,
    LogitLink,
    LogLink,
    ProbitLink,
    SqrtLink,
    make_link,
)
from mixedmodels.families.registry import get_family

# isort: off
# the families register themselves as they are defined: in R's order, the
# order in which get_family lists them
from mixedmodels.families.binomial import Binomial
from mixedmodels.families.poisson import Poisson
from mixedmodels.families.gamma import Gamma
from mixedmodels.families.inverse_gaussian import InverseGaussian
from mixedmodels.families.gaussian import Gaussian
# isort: on

__all__ = [
    "FamilyError",
    "NonIntegerResponseWarning",
    "Link",
    "LogitLink",
    "ProbitLink",
    "CloglogLink",
    "CauchitLink",
    "LogLink",
    "IdentityLink",
    "InverseLink",
    "SqrtLink",
    "InverseSquareLink",
    "make_link",
    "FamilyInit",
    "Family",
    "Binomial",
    "Poisson",
    "Gamma",
    "InverseGaussian",
    "Gaussian",
    "get_family",
]
