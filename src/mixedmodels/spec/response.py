"""The left side of a formula and the offset.

lmer's numeric response, glmer's (numeric, logical, factor or
``cbind(successes, failures)``), and the offset terms added to the linear
predictor.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, FormulaError
from mixedmodels.spec.checks import find_name
from mixedmodels.spec.columns import ArrayColumns, dtype_of
from mixedmodels.spec.formula import ParsedFormula
from mixedmodels.spec.levels import factor_codes
from mixedmodels.spec.matrix import evaluate_expression
from mixedmodels.spec.tokens import Scan


def response_values(parsed: ParsedFormula, data: pd.DataFrame | ArrayColumns) -> np.ndarray:
    """Return lmer's response: a numeric column or an expression of columns, as floats.

    Raises
    ------
    FormulaError
        If the formula has no response, or it is a ``cbind`` (glmer's).
    DataError
        If the response column is not numeric (logicals included).
    """
    lhs = parsed.response
    if lhs is None:
        raise FormulaError("the formula has no response: write it as 'y ~ ...'", parsed.text, 0)
    if isinstance(data, ArrayColumns):
        if lhs in data.plain:
            return data.floats(lhs)
        if lhs in data.columns:  # checked (and an error raised) on the frame
            data = data.frame()
    if lhs in data.columns:
        col = data[lhs]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            raise DataError(f"response column {lhs!r} is not numeric (dtype {col.dtype})")
        return col.to_numpy(dtype=float)
    if "cbind" in lhs and _CBIND_CALL.search(lhs):
        raise FormulaError(
            f"the response {lhs!r} is a cbind(successes, failures) matrix: "
            "cbind responses are for glmer (binomial), lmer needs one numeric response",
            parsed.text,
            find_name(parsed.text, "cbind"),
        )
    return evaluate_expression(lhs, data, "response")


_CBIND_CALL = re.compile(r"(?<![\w.])cbind\s*\(")


def glm_response_values(
    parsed: ParsedFormula, data: pd.DataFrame | ArrayColumns
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Return the response of a GLM (R's glm / glmer) and the levels of a factor response.

    ``y`` is a numeric column or expression (floats), a logical column (0/1), a
    factor (0 for its first level, 1 for every other: R's binomial rule; the
    levels are returned), or ``cbind(successes, failures)``: an (n, 2) array.
    Value ranges are for the family to check.
    """
    lhs = parsed.response
    if lhs is None:
        raise FormulaError("the formula has no response: write it as 'y ~ ...'", parsed.text, 0)
    if isinstance(data, ArrayColumns) and lhs in data.plain:
        return data.floats(lhs), None
    args = cbind_arguments(lhs, parsed.text)
    if args is not None:
        parts = [_glm_response_part(arg, data) for arg in args]
        return np.column_stack(parts), None
    name = _column_name(lhs)
    if name in data.columns and is_factor_dtype(dtype_of(data, name)):
        return _factor_response(data, name)
    return _glm_response_part(lhs, data, "response", "numeric, logical or a factor"), None


def is_factor_dtype(dtype: Any) -> bool:
    """Return whether a dtype is a factor's: categorical, string or object, not logical.

    Such a column is R's factor() of its values.
    """
    return isinstance(dtype, pd.CategoricalDtype) or (
        not pd.api.types.is_bool_dtype(dtype)
        and (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype))
    )


def _glm_response_part(
    expr: str,
    data: pd.DataFrame | ArrayColumns,
    what: str = "cbind argument",
    kinds: str = "numeric or logical",
) -> np.ndarray:
    """Return the response or one argument of ``cbind`` as floats.

    It is a numeric or logical column (logicals as 0/1), or an arithmetic
    expression of columns.
    """
    name = _column_name(expr)
    if name not in data.columns:
        return evaluate_expression(expr, data, f"{what} {expr!r}" if what != "response" else what)
    if isinstance(data, ArrayColumns) and name in data.plain:
        return data.floats(name)
    values = _response_series(data, name)
    dtype = values.dtype
    if not (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)):
        raise DataError(f"{what} column {name!r} is not {kinds} (dtype {dtype})")
    return values.to_numpy(dtype=float, copy=True)


def _response_series(data: pd.DataFrame | ArrayColumns, name: str) -> pd.Series:
    """Return column ``name`` of the complete rows."""
    return data.series(name) if isinstance(data, ArrayColumns) else data[name]


def _factor_response(
    data: pd.DataFrame | ArrayColumns, name: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return a factor response as R's binomial family reads it, and its levels.

    0 for the first level (unused levels dropped: a categorical's order, else
    the sorted values), 1 else.
    """
    try:
        if isinstance(data, ArrayColumns):
            codes, levels = data.factor((name,))
        else:
            codes, levels = factor_codes(data[name])
    except TypeError as err:  # unorderable values (e.g. strings mixed with numbers)
        raise DataError(
            f"response column {name!r}: its values cannot be sorted as factor levels ({err})"
        ) from err
    if len(levels) < 2:
        raise DataError(
            f"response column {name!r} is a factor with a single level ({levels[0]!r}): "
            "a factor response needs at least 2 levels (the first is failure, the others success)"
        )
    return (codes != 0).astype(float), tuple(levels)


def _column_name(expr: str) -> str:
    """Return ``expr`` without the backticks of a single backticked name."""
    if len(expr) > 2 and expr[0] == "`" and expr[-1] == "`" and "`" not in expr[1:-1]:
        return expr[1:-1]
    return expr


@functools.lru_cache(maxsize=256)
def cbind_arguments(lhs: str, formula: str | None = None) -> tuple[str, ...] | None:
    """Return the two argument texts of a ``cbind(successes, failures)`` left side.

    ``None`` if ``lhs`` holds no ``cbind``.

    Arguments are split at the commas outside brackets (``cbind(pmax(a, b), n - a)``);
    an argument may be named (``cbind(yes = a, no = b)``), as in R.

    Raises
    ------
    FormulaError
        If ``cbind`` is not the whole left side or has other than 2 arguments.
    """
    if "cbind" not in lhs:
        return None
    scan = Scan(lhs)
    tokens = scan.tokens
    at = find_name(formula, "cbind") if formula else None
    where = formula if at is not None else None
    calls = [
        i
        for i, tok in enumerate(tokens[:-1])
        if tok.kind == "name" and tok.text == "cbind" and scan.is_op(i + 1, "(")
    ]
    if not calls:
        return None
    if calls != [0] or scan.pairs.get(1) != len(tokens) - 1:
        raise FormulaError(
            f"cbind(successes, failures) must be the whole left-hand side, not {lhs!r}",
            where,
            at,
        )
    bounds, start = [], 2
    for i in range(2, len(tokens) - 1):
        if scan.depths[i] == 1 and scan.is_op(i, ","):
            bounds.append((start, i))
            start = i + 1
    bounds.append((start, len(tokens) - 1))
    if bounds == [(2, 2)]:
        bounds = []
    args = []
    for lo, hi in bounds:
        if hi - lo >= 2 and tokens[lo].kind == "name" and scan.is_op(lo + 1, "="):
            lo += 2  # a named argument: R's cbind(yes = a, no = b)
        if lo >= hi:
            raise FormulaError(f"{lhs!r} has an empty argument", where, at)
        args.append(scan.span(lo, hi))
    if len(args) != 2:
        raise FormulaError(
            f"cbind response {lhs!r} has {len(args)} argument(s): it needs exactly 2, "
            "cbind(successes, failures)",
            where,
            at,
        )
    return tuple(args)


def total_offset(
    parsed: ParsedFormula, frame: pd.DataFrame | ArrayColumns, given: np.ndarray | None
) -> np.ndarray | None:
    """Return the total offset: ``given`` plus the formula's ``offset()`` terms.

    None when there is neither.
    """
    total = None if given is None else np.asarray(given, dtype=float).copy()
    for expr in parsed.offsets:
        values = evaluate_expression(expr, frame, "offset")
        total = values if total is None else total + values
    return total


# --------------------------------------------------------------------------- newdata
