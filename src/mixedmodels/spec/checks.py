"""Checks of the data against a formula.

The columns it uses (:func:`used_columns`) must be present and unique in the
data, and the predictors of a kind a model can take.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, FormulaError
from mixedmodels.spec.formula import ParsedFormula, variables_in


def check_columns(names: set[str], data: pd.DataFrame, formula: str) -> None:
    """Check that the data has every column in ``names``.

    Raises
    ------
    FormulaError
        For the first missing column (alphabetically), pointing at its place in
        ``formula`` and suggesting a close column name of the data.
    """
    missing = sorted(n for n in names if n not in data.columns)
    if missing:
        col = missing[0]
        pos = find_name(formula, col)
        close = _close_matches(col, data.columns)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise FormulaError(
            f"column {col!r} named in the formula is not in the data{hint}",
            formula=formula,
            position=pos,
        )


def find_name(formula: str, name: str) -> int | None:
    """Return where ``name`` first stands as a whole name in ``formula``, or None."""
    match = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", formula)
    return match.start() if match else None


def _close_matches(name: str, columns: Sequence[Any]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, [str(c) for c in columns], n=1)
    return found[0] if found else None


def check_unique_columns(data: pd.DataFrame, used: set[str]) -> None:
    """Check that every used column is one column of the data.

    A :class:`DataError` names a repeated one; unused repeats are harmless.
    """
    if data.columns.is_unique:
        return
    repeated = sorted({str(c) for c in data.columns[data.columns.duplicated()]} & used)
    if repeated:
        count = int((data.columns == repeated[0]).sum())
        raise DataError(
            f"column {repeated[0]!r} appears {count} times in the data: "
            "give the columns distinct names"
        )


def check_predictor_kinds(
    parsed: ParsedFormula, dtypes: Mapping[str, Any], series: Callable[[str], pd.Series]
) -> None:
    """Check that the predictors are of a kind a model can take.

    Every predictor must be of one type (not numbers mixed with text), and no
    covariate (a predictor other than a grouping factor) a date or duration,
    whose arithmetic is not a model's: a :class:`DataError` names the column
    and a conversion. ``dtypes`` and ``series`` give the used columns (the
    response has its own checks).
    """
    covariates, predictors = predictor_columns(parsed)
    for col in sorted(predictors & dtypes.keys()):
        dtype = dtypes[col]
        if isinstance(dtype, np.dtype) and dtype.kind == "O":
            _check_one_type(col, series(col))
        elif col in covariates and _is_time(dtype):
            raise DataError(_time_message(col, dtype))


def _is_time(dtype: Any) -> bool:
    """Return whether ``dtype`` holds dates, durations or periods (numpy's or pandas')."""
    return isinstance(dtype, (pd.DatetimeTZDtype, pd.PeriodDtype)) or (
        isinstance(dtype, np.dtype) and dtype.kind in "mM"
    )


def _time_message(col: str, dtype: Any) -> str:
    if getattr(dtype, "kind", "") == "m":
        return (
            f"column {col!r} holds durations (dtype {dtype}), which cannot enter a model as "
            f"a covariate: convert it to numbers first, e.g. "
            f"data[{col!r}].dt.total_seconds() / 86400 (days)"
        )
    return (
        f"column {col!r} holds dates (dtype {dtype}), which cannot enter a model as a "
        f"covariate: convert it to numbers first, e.g. (data[{col!r}] - data[{col!r}].min()).dt.days"
    )


def _check_one_type(name: str, values: pd.Series) -> None:
    """Raise a :class:`DataError` asking for one type if a column mixes numbers and text.

    An object column mixing numbers and text (``1``, ``"1"``, ``1.0``) cannot be
    ordered into levels, and R's rule would merge what pandas keeps apart.
    """
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if not inferred.startswith("mixed") or inferred == "mixed-integer-float":
        return
    kinds = sorted({type(v).__name__ for v in values.dropna()})
    raise DataError(
        f"column {name!r} mixes values of types {', '.join(kinds)}: convert it to one "
        "type (numbers or text) first"
    )


@functools.lru_cache(maxsize=512)
def predictor_columns(parsed: ParsedFormula) -> tuple[frozenset[str], frozenset[str]]:
    """Return the covariates and all the predictors of a formula's right side.

    The covariates are the columns other than grouping factors; the second set
    is all of them (with the grouping factors). Computed once per formula.
    """
    covariates: set[str] = set()
    for expr in [parsed.fixed, *parsed.offsets, *(t.expr for t in parsed.random)]:
        covariates |= variables_in(expr) if expr else set()
    groups = {g for term in parsed.random for g in term.group}
    return frozenset(covariates), frozenset(covariates | groups)


def used_columns(parsed: ParsedFormula) -> set[str]:
    """Return the data columns a formula uses: response, fixed part, offsets, random terms.

    The grouping factors count; the set is a new one the caller may change.
    """
    return set(_used_columns_cached(parsed))


@functools.lru_cache(maxsize=512)
def _used_columns_cached(parsed: ParsedFormula) -> frozenset[str]:
    """Return :func:`used_columns`, once per formula (parsed formulas are immutable)."""
    used: set[str] = set()
    if parsed.response:
        used |= variables_in(parsed.response)
    used |= variables_in(parsed.fixed)
    for expr in parsed.offsets:
        used |= variables_in(expr)
    for term in parsed.random:
        used |= variables_in(term.expr)
        used |= set(term.group)
    return frozenset(used)
