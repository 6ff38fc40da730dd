"""The arguments that specify a linear mixed model beside its formula and data.

They are defined once: :func:`~mixedmodels.lmer`,
:class:`~mixedmodels.LinearMixedModel` and the Dask entry
(:mod:`mixedmodels.models.lmm.dask`) take them through
:func:`~mixedmodels.support.arguments.takes_options`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["LmmOptions"]


@dataclass(frozen=True)
class LmmOptions:
    """The options of a linear mixed model.

    See :class:`~mixedmodels.LinearMixedModel` for what each one does.

    Attributes
    ----------
    reml : bool
        REML (True, the default) or maximum likelihood.
    weights : str, array-like or None
        Prior weights: a column name or one value per row.
    offset : str, array-like or None
        A known term added to the linear predictor.
    contrasts : dict or None
        ``{column: contrast}`` for factors of the fixed part.
    na_action : {"omit", "fail"}
        What incomplete rows do.
    """

    reml: bool = True
    weights: Any = None
    offset: Any = None
    contrasts: Mapping[str, str] | None = None
    na_action: str = "omit"
