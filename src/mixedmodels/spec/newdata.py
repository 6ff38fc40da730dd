"""New data for predictions.

The fitted encodings (contrasts, factor levels, stateful transforms) applied
again to rows the model has not seen.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError, PredictionError
from mixedmodels.spec.checks import predictor_columns
from mixedmodels.spec.coding import fitted_factor_levels, spec_factors
from mixedmodels.spec.fixed import FixedEffects
from mixedmodels.spec.formula import ParsedFormula
from mixedmodels.spec.guard import check_evaluated_terms
from mixedmodels.spec.levels import factor_level_codes, to_pandas
from mixedmodels.spec.matrix import R_FUNCTIONS, AliasedSpec, SimpleSpec, integers_as_floats


def newdata_frame(newdata: Any, parsed: ParsedFormula) -> pd.DataFrame:
    """Return ``newdata`` as a pandas frame.

    A column predictions read (not the response) that appears more than once
    is a :class:`PredictionError` naming it.
    """
    frame = to_pandas(newdata)
    if not frame.columns.is_unique:
        repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        used = [c for c in repeated if c in predictor_columns(parsed)[1]]
        if used:
            raise PredictionError(
                f"newdata column {used[0]!r} appears {int((frame.columns == used[0]).sum())} "
                "times: give the columns distinct names"
            )
    return frame


def newdata_fixed_matrix(fixed: FixedEffects, newdata: pd.DataFrame) -> np.ndarray:
    """Return the fixed-effects matrix for new data, with the fitted model's encoding."""
    return apply_spec(fixed.model_spec, newdata, "fixed-effects")[:, fixed.kept]


def apply_spec(model_spec: Any, newdata: pd.DataFrame, what: str) -> np.ndarray:
    """Rebuild a model matrix on new data with the fitted encoding.

    Stateful transforms such as ``scale()`` keep their training state. Factor
    columns are matched to the fitted levels first (:func:`match_levels`):
    formulaic would turn a value of another type into NaN dummies without an
    error; small integer columns are evaluated as floats
    (:func:`integers_as_floats`). Rows with a missing factor value are NaN.
    """
    missing = None
    if not isinstance(model_spec, SimpleSpec):  # it matches its own levels
        formulaic_spec = model_spec.spec if isinstance(model_spec, AliasedSpec) else model_spec
        check_evaluated_terms(formulaic_spec.formula)  # a stored spec is data too
        newdata, missing = with_fitted_levels(model_spec, newdata)
    newdata = integers_as_floats(newdata, spec_factors(model_spec))
    try:
        with warnings.catch_warnings():
            # every value was matched to a level above: what formulaic reports
            # here is a missing one, made a missing row below
            warnings.filterwarnings("ignore", "Data has categories outside")
            mm = model_spec.get_model_matrix(newdata, na_action="ignore", context=R_FUNCTIONS)
    except MixedModelsError:
        raise
    except Exception as err:
        raise PredictionError(f"cannot build the {what} matrix for newdata: {err}") from err
    values = np.array(mm, dtype=float)
    if missing is not None:
        values[missing] = np.nan  # formulaic codes a missing factor value as the reference level
    return values


def with_fitted_levels(
    model_spec: Any, newdata: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Return ``newdata`` with the fitted level values in the spec's factor columns.

    Every factor column of the spec holds the fitted level values themselves
    (a new frame if any changes); the second value is the mask of the rows
    where a factor value is missing (``None`` if none is). A value that is no
    level is a :class:`PredictionError` naming it.
    """
    replaced, missing = {}, None
    for name, levels in fitted_factor_levels(model_spec).items():
        if name not in newdata.columns or not isinstance(newdata[name], pd.Series):
            continue
        values = newdata[name]
        codes = factor_level_codes(values, levels, name)
        if (codes < 0).any():
            missing = (codes < 0) if missing is None else missing | (codes < 0)
        fitted = pd.Index(levels)
        if (fitted.get_indexer(values) == codes).all():
            continue  # the values are the levels already
        matched = np.asarray(fitted, dtype=object).take(np.maximum(codes, 0))
        matched[codes < 0] = np.nan
        replaced[name] = pd.Series(matched, index=newdata.index).infer_objects()
    return (newdata.assign(**replaced) if replaced else newdata), missing
