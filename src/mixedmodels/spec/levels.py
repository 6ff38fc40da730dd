"""Grouping-factor codes and the levels of new data.

A column used as a factor becomes integer codes and level labels in R's order
(:func:`factor_codes`, :func:`interaction_codes` for ``a:b``); a factor met
again in new data is matched to its fitted levels by one rule, R's
(:func:`match_levels`). :func:`to_pandas` is where every data frame enters.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, PredictionError


def to_pandas(data: Any) -> pd.DataFrame:
    """Return ``data`` as a pandas DataFrame (polars and other frames through narwhals)."""
    if isinstance(data, pd.DataFrame):
        return data
    try:
        import narwhals as nw

        return nw.from_native(data, eager_only=True).to_pandas()
    except (TypeError, ImportError) as err:
        raise DataError(
            f"data must be a pandas or polars DataFrame, not {type(data).__name__}"
        ) from err




def factor_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes and level labels of a column used as a grouping factor.

    Categoricals keep their level order (unused levels dropped, as R's
    ``droplevels``); other columns get sorted levels, numbers sorted as numbers,
    as R's ``factor()`` does.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        return category_codes(values.array.codes, values.array.categories)
    return sorted_codes(values.to_numpy())


def category_codes(codes: np.ndarray, categories: pd.Index) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of a categorical with its unused categories dropped.

    The same result as pandas' ``remove_unused_categories`` (category order kept,
    missing values stay -1), from the codes alone: no new Series is built.
    """
    codes = codes.astype(np.int64)
    counts = np.bincount(codes + 1, minlength=len(categories) + 1)[1:]  # code -1 in bin 0
    labels = categories.tolist()  # tolist: iterating an Index costs far more
    if counts.all():
        return codes, [str(c) for c in labels]
    used = counts > 0
    # the new code of every old one; the appended -1 is what code -1 indexes
    recode = np.append(np.cumsum(used) - 1, -1).astype(np.int64, copy=False)
    return recode[codes], [str(c) for c, u in zip(labels, used) if u]


def sorted_codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of an array with its sorted unique values as levels."""
    uniques, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def interaction_codes(columns: Sequence[pd.Series]) -> tuple[np.ndarray, list[str]]:
    """Codes of the observed combinations of several factors, R's ``a:b``.

    Levels are ordered with the first factor varying slowest and labelled
    ``"a1:b1"``; unobserved combinations are dropped.
    """
    return combine_codes([factor_codes(c) for c in columns])


def combine_codes(
    codes_levels: Sequence[tuple[np.ndarray, list[str]]],
) -> tuple[np.ndarray, list[str]]:
    """Return the interaction of factors given as (codes, levels): see :func:`interaction_codes`."""
    combined = np.zeros(len(codes_levels[0][0]), dtype=np.int64)
    for codes, levels in codes_levels:
        combined = combined * len(levels) + codes
    used, inverse = np.unique(combined, return_inverse=True)
    labels = []
    for value in used:
        parts = []
        for codes, levels in reversed(codes_levels):
            value, idx = divmod(int(value), len(levels))
            parts.append(levels[idx])
        labels.append(":".join(reversed(parts)))
    return inverse.astype(np.int64), labels


# --------------------------------------------------------------------------- levels of new data
#
# One rule for every factor met again in new data (grouping factors and fixed
# factors alike), R's: ``factor(new, levels = fitted)`` compares values as text.
# A new value equal to a fitted level is that level; otherwise, when the types
# differ, its text decides: numbers given to a factor of text levels are
# written as R writes them (1 and 1.0 as "1"), text given to a factor of number
# levels is read as a number ("2" is 2).


def level_kind(dtype: Any) -> np.dtype | None:
    """Return what a factor's fitted levels are: a numeric dtype, or ``None`` for text.

    The numeric dtype is that of number levels (a categorical's categories
    count); ``None`` stands for text (strings, booleans and anything else).
    """
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        return None
    return np.dtype(getattr(dtype, "numpy_dtype", dtype))


def level_labels(values: pd.Series, kind: np.dtype | None) -> np.ndarray:
    """Return the labels new ``values`` get as levels of a factor of fitted levels of ``kind``.

    ``kind`` is as :func:`level_kind` gives it. The labels are the text the fit
    gave each level (``str`` of the level), ``None`` where a value is missing.
    A value that cannot be such a level keeps its own text (an unseen level).
    """
    arr = np.asarray(values, dtype=object)
    missing = np.asarray(pd.isna(values), dtype=bool)
    if kind is None and pd.api.types.infer_dtype(values, skipna=True) == "string":
        return np.where(missing, None, arr)  # text for text levels: as it is
    label = _text_label if kind is None else functools.partial(_number_label, kind)
    return np.array([None if m else label(v) for v, m in zip(arr, missing)], dtype=object)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _text_label(value: Any) -> str:
    """Return a value as a text level.

    Numbers are written as R writes them (whole numbers without a decimal
    point), anything else as ``str`` gives it.
    """
    if _is_number(value) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _number_label(kind: np.dtype, value: Any) -> str:
    """Return a value as a level of a factor of numbers of dtype ``kind``.

    That is the text of the number as the fit labels it; text is read as a
    number first.
    """
    number = value
    if isinstance(value, str):
        number = pd.to_numeric(value.strip(), errors="coerce")
    if not _is_number(number) or not np.isfinite(number):
        return str(value)
    if kind.kind in "iu":
        return str(int(number)) if float(number).is_integer() else str(value)
    return str(kind.type(number))


def match_levels(
    values: pd.Series, levels: Sequence[Any], kind: np.dtype | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the position of every new value among a factor's fitted ``levels``.

    The positions follow R's rule (comment above: values compared as text),
    -1 where missing or unseen; the second array is the mask of the unseen
    ones.

    ``levels`` are the level values, or their labels (``str`` of the values);
    values equal to a level are matched directly, the others by their label.
    """
    if pd.api.types.is_bool_dtype(values):  # True == 1 in Python, not as text
        codes = np.full(len(values), -1, dtype=np.int64)
    else:
        codes = np.asarray(pd.Index(levels).get_indexer(values), dtype=np.int64)
    left = (codes < 0) & np.asarray(pd.notna(values), dtype=bool)
    if left.any():
        labels = level_labels(values[left], kind)
        codes[left] = pd.Index([str(v) for v in levels]).get_indexer(labels)
    return codes, (codes < 0) & left


def factor_level_codes(values: pd.Series, levels: Sequence[Any], name: str | None = None) -> np.ndarray:
    """Return the codes of new ``values`` of a fixed factor among its fitted ``levels``.

    Codes are -1 where missing; a value that is no level is a
    :class:`PredictionError` naming the column, the values, their type and the
    fitted levels.
    """
    kind = level_kind(pd.Index(levels).dtype)
    codes, unseen = match_levels(values, levels, kind)
    if unseen.any():
        raise unseen_levels_error(name or values.name, values, unseen, levels)
    return codes


def unseen_levels_error(
    name: Any, values: pd.Series, unseen: np.ndarray, levels: Sequence[Any]
) -> PredictionError:
    """Return the error for new values of factor column ``name`` that match no fitted level.

    The message shows the values, their dtype, and up to 20 of the fitted
    ``levels``.
    """
    bad = sorted({str(v) for v in np.asarray(values, dtype=object)[unseen]})
    shown = [str(v) for v in levels[:20]] + (["..."] if len(levels) > 20 else [])
    return PredictionError(
        f"newdata column {name!r} (dtype {values.dtype}) has level(s) {bad} not seen in the "
        f"fit; the fitted levels ({pd.Index(levels).dtype}) are {shown}"
    )
