"""``lmer``: the entry point of linear mixed models.

It sends data in memory to :class:`~mixedmodels.models.lmm.model.LinearMixedModel` and
partitioned data (a Dask DataFrame, a Parquet path) to
:func:`~mixedmodels.models.lmm.dask.lmer_dask`. It sits above both, so neither
imports the other's module for the hand-over.
"""

from __future__ import annotations

from typing import Any

from mixedmodels.data.dask import is_dask_dataframe, is_path
from mixedmodels.models.lmm.dask import DaskLinearMixedModel, lmer_dask
from mixedmodels.models.lmm.model import LinearMixedModel
from mixedmodels.models.lmm.options import LmmOptions
from mixedmodels.support.arguments import option_values, r_argument_hints, takes_options

__all__ = ["lmer"]


# split_every: an argument of mixedmodels.models.lmm.dask.lmer_dask, for partitioned data
@r_argument_hints(LinearMixedModel.fit, also=("split_every",))
@takes_options(LmmOptions)
def lmer(formula: str, data: Any, options: LmmOptions, **fit_kwargs: Any) -> LinearMixedModel | DaskLinearMixedModel:
    """Fit a linear mixed-effects model, as lme4's ``lmer``.

    Parameters are those of :class:`LinearMixedModel` (``reml``, ``weights``,
    ``offset``, ``contrasts``, ``na_action``: see
    :class:`~mixedmodels.models.lmm.options.LmmOptions`); ``fit_kwargs`` go to
    :meth:`LinearMixedModel.fit`.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> m = mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
    >>> m.fixef.round(3).to_dict()
    {'(Intercept)': 251.405, 'Days': 10.467}
    """
    model_kwargs = option_values(options)
    if is_path(data) or is_dask_dataframe(data):
        return lmer_dask(formula, data, **model_kwargs, **fit_kwargs)
    return LinearMixedModel(formula, data, **model_kwargs).fit(**fit_kwargs)
