"""Residual structures of nlme's lme and gls.

Within a group i the residuals have covariance σ² A_i R_i A_i: R_i a
correlation structure (:class:`CorrelationStructure`: serial ones in
:mod:`~mixedmodels.residual.correlation`, spatial ones in
:mod:`~mixedmodels.residual.spatial`), A_i a variance function
(:class:`VarianceFunction`, in :mod:`~mixedmodels.residual.variance`). Each
structure works in nlme's unconstrained parameter scale and gives the
lme/gls engine R_i, its lower Cholesky factor and log-determinant.

This package imports nothing of mixedmodels but the exceptions. ``mm.gls``
(:mod:`mixedmodels.models.gls`) uses these structures; lme comes next (issue 16).
"""

from mixedmodels.residual.correlation import (
    CorrelationStructure,
    corAR1,
    corARMA,
    corCAR1,
    corCompSymm,
    corSymm,
)
from mixedmodels.residual.spatial import (
    SpatialCorrelation,
    corExp,
    corGaus,
    corLin,
    corRatio,
    corSpher,
)
from mixedmodels.residual.variance import (
    VarianceFunction,
    parse_form,
    varComb,
    varConstPower,
    varExp,
    varFixed,
    varIdent,
    varPower,
)

__all__ = [
    "CorrelationStructure",
    "SpatialCorrelation",
    "corAR1",
    "corARMA",
    "corCAR1",
    "corCompSymm",
    "corExp",
    "corGaus",
    "corLin",
    "corRatio",
    "corSpher",
    "corSymm",
    "VarianceFunction",
    "parse_form",
    "varComb",
    "varConstPower",
    "varExp",
    "varFixed",
    "varIdent",
    "varPower",
]
