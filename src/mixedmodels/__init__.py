"""mixedmodels: mixed, multilevel and hierarchical models for Python.

Quick start::

    import mixedmodels as mm
    sleep = mm.datasets.load("sleepstudy")
    m = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    print(m)

Submodules are imported lazily so that ``import mixedmodels`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from mixedmodels.exceptions import (
    ArgumentError,
    ConvergenceWarning,
    DataError,
    FamilyError,
    FormulaError,
    MissingDataWarning,
    MixedModelsError,
    MixedModelsWarning,
    ModelSpecError,
    NonIntegerResponseWarning,
    PredictionError,
    RankDeficiencyWarning,
    RefitWarning,
    SeparationWarning,
    SingularFitWarning,
)
from mixedmodels.support.version import VERSION as __version__  # noqa: F401 - the package attribute

# module-level names loaded on first access; the model kinds' functions and
# classes (mm.lmer, mm.LinearMixedModel, ...) come from the registry in api.py
_LAZY = {
    "datasets": ("mixedmodels.datasets", None),
    "families": ("mixedmodels.families", None),
    "anova": ("mixedmodels.inference.lrt", "anova"),
    "compare": ("mixedmodels.inference.lrt", "compare"),
    "r2": ("mixedmodels.inference.r2", "r2"),
    "icc": ("mixedmodels.inference.r2", "icc"),
    "rlrt": ("mixedmodels.inference.rlrt", "rlrt"),
    "emmeans": ("mixedmodels.inference.emmeans", "emmeans"),
    # nlme's residual structures, for gls
    "corAR1": ("mixedmodels.residual", "corAR1"),
    "corARMA": ("mixedmodels.residual", "corARMA"),
    "corCAR1": ("mixedmodels.residual", "corCAR1"),
    "corCompSymm": ("mixedmodels.residual", "corCompSymm"),
    "corSymm": ("mixedmodels.residual", "corSymm"),
    "corExp": ("mixedmodels.residual", "corExp"),
    "corGaus": ("mixedmodels.residual", "corGaus"),
    "corLin": ("mixedmodels.residual", "corLin"),
    "corRatio": ("mixedmodels.residual", "corRatio"),
    "corSpher": ("mixedmodels.residual", "corSpher"),
    "varIdent": ("mixedmodels.residual", "varIdent"),
    "varPower": ("mixedmodels.residual", "varPower"),
    "varExp": ("mixedmodels.residual", "varExp"),
    "varConstPower": ("mixedmodels.residual", "varConstPower"),
    "varFixed": ("mixedmodels.residual", "varFixed"),
    "varComb": ("mixedmodels.residual", "varComb"),
}

__all__ = [
    "lmer",
    "LinearMixedModel",
    "glmer",
    "GeneralizedLinearMixedModel",
    "gls",
    "GeneralizedLeastSquares",
    "corAR1",
    "corARMA",
    "corCAR1",
    "corCompSymm",
    "corSymm",
    "corExp",
    "corGaus",
    "corLin",
    "corRatio",
    "corSpher",
    "varIdent",
    "varPower",
    "varExp",
    "varConstPower",
    "varFixed",
    "varComb",
    "datasets",
    "families",
    "anova",
    "compare",
    "r2",
    "icc",
    "rlrt",
    "emmeans",
    "MixedModelsError",
    "FormulaError",
    "DataError",
    "ModelSpecError",
    "ArgumentError",
    "FamilyError",
    "PredictionError",
    "MixedModelsWarning",
    "SingularFitWarning",
    "SeparationWarning",
    "RankDeficiencyWarning",
    "RefitWarning",
    "MissingDataWarning",
    "ConvergenceWarning",
    "NonIntegerResponseWarning",
]


def __getattr__(name: str) -> Any:
    # import_module, not `from mixedmodels import api`: that would ask this
    # function for `api` first
    api = importlib.import_module("mixedmodels.api")

    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
    elif name in api.exported():
        value = api.exported()[name]()
    else:
        raise AttributeError(f"module 'mixedmodels' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    api = importlib.import_module("mixedmodels.api")

    return sorted(set(globals()) | set(_LAZY) | set(api.exported()))
