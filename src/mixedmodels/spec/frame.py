"""The model frame (:func:`build_model_frame`).

A parsed formula and a DataFrame checked against each other, incomplete rows
dropped, and every matrix built.

The path is ``formula`` (parse) -> ``checks`` and ``columns`` (the used
columns, complete rows) -> ``response``, ``fixed`` and ``random`` (the
matrices, through ``matrix`` and ``coding``) -> :class:`ModelFrame`, which the
models fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, MissingDataWarning
from mixedmodels.spec.checks import (
    check_columns,
    check_predictor_kinds,
    check_unique_columns,
    used_columns,
)
from mixedmodels.spec.coding import factor_contrasts
from mixedmodels.spec.columns import (
    ArrayColumns,
    Deferred,
    check_finite,
    drop_missing_rows,
    drop_unused_categories,
)
from mixedmodels.spec.fixed import FixedEffects, build_fixed
from mixedmodels.spec.formula import ParsedFormula
from mixedmodels.spec.guard import CONSTANTS
from mixedmodels.spec.levels import to_pandas
from mixedmodels.spec.matrix import SimpleSpec
from mixedmodels.spec.random import ReTerm, build_term, order_terms
from mixedmodels.spec.response import (
    cbind_arguments,
    glm_response_values,
    response_values,
    total_offset,
)

# The used columns of an ordinary frame are read once into numpy arrays
# (:class:`ArrayColumns`); False sends every model through pandas frames and the
# model-matrix code alone (the reference the tests compare with).
FAST_PATH = True


@dataclass
class ModelFrame:
    """Everything the engine needs, built from a parsed formula and data.

    Made by :func:`build_model_frame`.

    Attributes
    ----------
    parsed : ParsedFormula
        The parsed formula.
    data : DataFrame
        The used columns of the rows used, with the original index; built on
        first access when the columns were read as arrays.
    y : numpy.ndarray
        The response, shape (n,); (n, 2) for glmer's
        ``cbind(successes, failures)``.
    fixed : FixedEffects
        The fixed-effects model matrix, aliased columns dropped.
    terms : list of ReTerm
        The random-effects terms, in decreasing number of random effects
        (:func:`~mixedmodels.spec.random.order_terms`).
    weights : numpy.ndarray or None
        Prior weights of the rows used; None if none were given.
    offset : numpy.ndarray or None
        The total offset: the given one plus the formula's ``offset()`` terms;
        None if there is none.
    n_dropped : int
        The number of rows dropped: missing values, or rows where the formula
        evaluates to NaN.
    response_name : str
        The left side of the formula as written (``"y"`` if there is none).
    response_levels : tuple of str or None
        glmer (``glm_response=True``): the levels of a factor response, whose
        first level is coded 0 (failure) and every other 1; None otherwise.
    nobs : int
        The number of rows used.
    """

    parsed: ParsedFormula
    data: pd.DataFrame  # rows used, original index kept
    y: np.ndarray
    fixed: FixedEffects
    terms: list[ReTerm]
    weights: np.ndarray | None
    offset: np.ndarray | None
    n_dropped: int
    response_name: str
    # glmer (``glm_response=True``): the levels of a factor response, whose
    # first level is coded 0 (failure) and every other 1; None otherwise
    response_levels: tuple[str, ...] | None = None

    @property
    def nobs(self) -> int:
        """The number of rows used (``y`` is (n,), or (n, 2) for a cbind response)."""
        return len(self.y)

    def __getstate__(self) -> dict[str, Any]:
        # a deferred frame is built now: a pickle holds the used columns only
        return {**self.__dict__, "_data": self.data}


class _DeferredField:
    """A dataclass field that accepts a :class:`Deferred` and computes it on first access.

    ``ModelFrame.data`` is seldom read (fitted values take its index) and
    building that frame costs more than the rest of a small model's frame.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.slot]
        if isinstance(value, Deferred):
            value = obj.__dict__[self.slot] = value.make()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


# set after the dataclass is made, so that it is not taken for a default value
ModelFrame.data = _DeferredField()  # type: ignore[assignment]
ModelFrame.data.__set_name__(ModelFrame, "data")


def _column_or_array(
    value: Any, data: pd.DataFrame, what: str
) -> tuple[np.ndarray | None, str | None]:
    """Return weights / offset given as a column name or as an array aligned with data.

    The pair is (the array, None) or (None, the column name); (None, None) for
    None.
    """
    if value is None:
        return None, None
    if isinstance(value, str):
        if value not in data.columns:
            raise DataError(f"{what} column {value!r} is not in the data")
        return None, value
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape[0] != len(data):
        raise DataError(f"{what} has length {arr.shape[0]}, the data have {len(data)} rows")
    return arr, None


def build_model_frame(
    parsed: ParsedFormula,
    data: Any,
    weights: Any = None,
    offset: Any = None,
    na_action: str = "omit",
    contrasts: Mapping[str, str] | None = None,
    glm_response: bool = False,
) -> ModelFrame:
    """Check the data against the formula, drop incomplete rows, build every matrix.

    With ``glm_response`` (glmer) the response may also be a logical column
    (0/1), a factor (0 for its first level, 1 for the others; the levels are
    kept as ``ModelFrame.response_levels``) or ``cbind(successes, failures)``
    (``y`` of shape (n, 2)); lmer's (the default) is numeric only.

    The caller's DataFrame is never modified. The used columns are read once into
    numpy arrays (:class:`ArrayColumns`); intercepts and plain numeric columns
    are built from those, anything else by formulaic from the frame of the
    complete rows, so results do not depend on the path taken.
    """
    data = to_pandas(data)
    if len(data) == 0:
        raise DataError("the data are empty (0 rows)")
    used = {c for c in used_columns(parsed) if c in data.columns or c not in CONSTANTS}
    check_columns(used, data, parsed.text)
    check_unique_columns(data, used)
    w_arr, w_col = _column_or_array(weights, data, "weights")
    o_arr, o_col = _column_or_array(offset, data, "offset")
    columns = sorted(used | {c for c in (w_col, o_col) if c})
    extra = {k: v for k, v in (("weights", w_arr), ("offset", o_arr)) if v is not None}
    fail = na_action == "fail"
    cols = ArrayColumns.read(data, columns) if FAST_PATH else None
    if cols is not None:
        extra, n_dropped = cols.drop_missing(extra, fail=fail)
        if cols.nrows == 0:
            raise DataError("no complete rows remain after dropping rows with missing values")
        cols.check_finite()
        check_predictor_kinds(parsed, cols.dtypes, cols.series)
        source: pd.DataFrame | ArrayColumns = cols
        row_label = cols.row_label
        rows = np.arange(len(data)) if cols.keep is None else np.flatnonzero(cols.keep)
    else:
        frame, extra, n_dropped, rows = drop_missing_rows(data, columns, extra, fail=fail)
        if len(frame) == 0:
            raise DataError("no complete rows remain after dropping rows with missing values")
        check_finite(frame, columns)
        check_predictor_kinds(parsed, frame.dtypes.to_dict(), frame.__getitem__)
        source = frame = drop_unused_categories(frame, columns)
        row_label = frame.index.__getitem__

    if glm_response:
        y, response_levels = glm_response_values(parsed, source)
    else:
        y, response_levels = response_values(parsed, source), None
    w = extra["weights"] if "weights" in extra else numeric_column(source, w_col, "weights")
    if w is not None:
        _check_weights(w, row_label, w_col)
    given_offset = (
        extra["offset"] if "offset" in extra else numeric_column(source, o_col, "offset")
    )
    if given_offset is not None and not np.all(np.isfinite(given_offset)):
        where = f"column {o_col!r}" if o_col else "offset"
        raise DataError(f"offset {where} holds infinite values (+-Inf)")
    off = total_offset(parsed, source, given_offset)
    codings = factor_contrasts(source, columns, contrasts)
    fixed = build_fixed(parsed, source, codings)
    terms = order_terms(
        [build_term(spec, source, codings, residual=not glm_response) for spec in parsed.random]
    )
    nan_rows, nan_names = nonfinite_rows(_evaluated_parts(parsed, y, off, fixed, terms), row_label)
    if nan_rows is not None:
        # R's model frame holds the evaluated terms, and na.omit drops their
        # NaN rows too: the frame is built again on the rows left
        _refuse_or_warn_nan(nan_rows, nan_names, fail)
        keep = rows[~nan_rows]
        frame = build_model_frame(
            parsed,
            data.iloc[keep],
            weights=w_col if w_arr is None else w_arr[keep],
            offset=o_col if o_arr is None else o_arr[keep],
            na_action=na_action,
            contrasts=contrasts,
            glm_response=glm_response,
        )
        frame.n_dropped += n_dropped + int(nan_rows.sum())
        return frame
    if not glm_response:
        _check_response_varies(y, off, parsed.response)
    return ModelFrame(
        parsed=parsed,
        data=source.deferred_frame() if isinstance(source, ArrayColumns) else source,
        y=y,
        fixed=fixed,
        terms=terms,
        weights=w,
        offset=off,
        n_dropped=n_dropped,
        response_name=parsed.response or "y",
        response_levels=response_levels,
    )


def numeric_column(
    frame: pd.DataFrame | ArrayColumns, col: str | None, what: str
) -> np.ndarray | None:
    """Return a weights / offset column as floats; a DataError names a non-numeric one."""
    if col is None:
        return None
    if isinstance(frame, ArrayColumns):
        if col in frame.plain:
            return frame.floats(col)
        frame = frame.frame()
    values = frame[col]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        raise DataError(f"{what} column {col!r} is not numeric (dtype {values.dtype})")
    return values.to_numpy(dtype=float)


def _check_weights(w: np.ndarray, row_label: Callable[[int], Any], col: str | None) -> None:
    """Check that prior weights are finite, non-negative and not all zero.

    ``row_label`` gives the index label of a row, for the message.
    """
    where = f"weights column {col!r}" if col else "weights"
    for bad, what in ((~np.isfinite(w), "infinite"), (w < 0, "negative")):
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where} must be finite and non-negative: {int(bad.sum())} {what} value(s), "
                f"the first at row {row_label(first)} ({float(w[first]):g})"
            )
    if not np.any(w > 0):
        raise DataError(f"{where} are all zero: no observation carries information")


def _evaluated_parts(
    parsed: ParsedFormula,
    y: np.ndarray,
    offset: np.ndarray | None,
    fixed: FixedEffects,
    terms: list[ReTerm],
) -> list[tuple[list[str], np.ndarray]]:
    """Return what the formula evaluated, as (names of its columns, values).

    These are the response, the offset and every model matrix that transforms
    may have made non-finite (a simple spec's columns are checked data).
    """
    lhs = parsed.response or "y"
    names = list(cbind_arguments(lhs) or [lhs]) if y.ndim == 2 else [lhs]
    parts = [([f"response {n!r}" for n in names], y)]
    if parsed.offsets:  # a given offset was checked as data
        parts.append(([f"offset {' + '.join(parsed.offsets)!r}"], offset))
    if fixed.cells is None and not isinstance(fixed.model_spec, SimpleSpec):
        parts.append(([f"fixed-effects column {n!r}" for n in fixed.names], fixed.X))
    for term in terms:
        if not isinstance(term.model_spec, SimpleSpec):
            parts.append(([f"column {n!r} of term {term.spec.text}" for n in term.cnames], term.z))
    return parts


def nonfinite_rows(
    parts: list[tuple[list[str], np.ndarray]], row_label: Callable[[int], Any]
) -> tuple[np.ndarray | None, list[str]]:
    """Return the rows where some part is NaN (``None`` if none is) and those parts' names.

    A part that is infinite is a :class:`DataError` naming it.
    """
    nan_rows, nan_names = None, []
    for names, values in parts:
        if np.isfinite(values).all():  # the common case, in one pass
            continue
        values = values.reshape(len(values), -1)
        bad = ~np.isfinite(values)
        for j in np.flatnonzero(bad.any(axis=0)):
            column = values[:, j]
            inf = np.isinf(column)
            if inf.any():
                first = int(np.flatnonzero(inf)[0])
                raise DataError(
                    f"{names[j]} is infinite in {int(inf.sum())} row(s), the first at row "
                    f"{row_label(first)} ({column[first]:g}): a model needs finite values "
                    "(transform the data so that it is finite, or drop those rows)"
                )
            nan_names.append(names[j])
            nan_rows = np.isnan(column) if nan_rows is None else nan_rows | np.isnan(column)
    return nan_rows, nan_names


def _refuse_or_warn_nan(nan_rows: np.ndarray, names: list[str], fail: bool) -> None:
    """Warn of the rows dropped because the formula made them NaN, or refuse them.

    The warning is as :func:`complete_rows`'s for missing values; with ``fail``
    (na.fail), or when every row is NaN, a :class:`DataError`.
    """
    count = int(nan_rows.sum())
    where = ", ".join(names)
    if fail:
        raise DataError(f"{count} row(s) evaluate to NaN (in {where}) and na_action='fail'")
    if count == len(nan_rows):
        raise DataError(f"every row evaluates to NaN (in {where}): no rows remain")
    warnings.warn(
        f"{count} row(s) where the formula evaluates to NaN (in {where}) were dropped",
        MissingDataWarning,
        stacklevel=4,
    )


def _check_response_varies(y: np.ndarray, offset: np.ndarray | None, name: str | None) -> None:
    """Raise a :class:`DataError` if the response (after the offset) is constant.

    A linear mixed model of a constant response has no residual variance to
    estimate.
    """
    modelled = y if offset is None else y - offset
    if len(y) and not (modelled != modelled[0]).any():
        after = " after the offset" if offset is not None else ""
        raise DataError(
            f"the response {name or 'y'!r} is constant{after} (every value is "
            f"{modelled[0]:g}): a linear mixed model needs a response that varies"
        )
