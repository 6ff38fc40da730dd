"""The used columns of the data, read once.

Missing rows, infinite values, unused categories, and :class:`ArrayColumns`
(the columns as numpy arrays, with the pandas frame of the complete rows built
only when asked).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, MissingDataWarning
from mixedmodels.spec.levels import category_codes, combine_codes, factor_codes, sorted_codes


def column_missing(values: pd.Series) -> np.ndarray:
    """Return the missing-value mask of one column, without building a DataFrame."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.array.codes < 0  # .array: .cat.codes builds a Series
    arr = values.to_numpy()
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind in "iub":
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(pd.isna(values), dtype=bool)


def drop_missing_rows(
    data: pd.DataFrame, used: list[str], extra: dict[str, np.ndarray], fail: bool = False
) -> tuple[pd.DataFrame, dict[str, np.ndarray], int, np.ndarray]:
    """Return the used columns of the rows without a missing value (R's na.omit).

    Returns the frame of those rows, ``extra`` (arrays such as weights and
    offsets, whose NaN count as missing) restricted to them, the number of rows
    dropped (with a :class:`MissingDataWarning`) and the rows' positions in
    ``data``. With ``fail`` a missing value is a :class:`DataError` naming the
    columns instead (na.fail).
    """
    # take() by position: a list __getitem__ costs several times more in pandas
    frame = data.take([data.columns.get_loc(c) for c in used], axis=1)
    missing = {c: column_missing(frame[c]) for c in used}
    keep, n_dropped = complete_rows(missing, extra, len(data), fail)
    rows = np.arange(len(data)) if keep is None else np.flatnonzero(keep)
    if n_dropped:
        frame = frame.loc[keep]
        extra = {k: v[keep] for k, v in extra.items()}
        warnings.warn(
            f"{n_dropped} row(s) with missing values in used columns were dropped",
            MissingDataWarning,
            stacklevel=4,
        )
    return frame, extra, n_dropped, rows


def complete_rows(
    missing: dict[str, np.ndarray], extra: dict[str, np.ndarray], n: int, fail: bool
) -> tuple[np.ndarray | None, int]:
    """Return the mask of the rows without a missing value, and the number of the others.

    The mask is ``None`` if that is all of them. With ``fail``, a missing value
    is a :class:`DataError` naming the columns.
    """
    missing = {**missing, **{k: np.isnan(v) for k, v in extra.items()}}
    mask = np.zeros(n, dtype=bool)
    for m in missing.values():
        mask |= m
    n_dropped = int(mask.sum())
    if n_dropped and fail:
        cols = [c for c, m in missing.items() if m.any()]
        raise DataError(
            f"{n_dropped} row(s) have missing values (in {', '.join(map(repr, cols))}) "
            "and na_action='fail'"
        )
    return (~mask if n_dropped else None), n_dropped


def check_finite(data: pd.DataFrame, used: list[str]) -> None:
    """Raise a :class:`DataError` naming the first float column of ``used`` with ±Inf."""
    for col in used:
        values = data[col]
        if values.dtype.kind != "f":
            continue
        arr = values.to_numpy()
        if np.isinf(arr).any():
            raise DataError(f"column {col!r} holds infinite values (+-Inf)")


def drop_unused_categories(frame: pd.DataFrame, used: list[str]) -> pd.DataFrame:
    """Return the frame with unused categorical levels removed (a new frame only if some are)."""
    for col in used:
        values = frame[col]
        if not isinstance(values.dtype, pd.CategoricalDtype):
            continue
        codes = values.cat.codes.to_numpy()
        if np.bincount(codes, minlength=len(values.cat.categories)).min() == 0:
            frame = frame.assign(**{col: values.cat.remove_unused_categories()})
    return frame


# Whether pandas copies shared data on write: None asks pandas (always from
# pandas 3); False builds the frame of the used rows during the call, as
# without copy-on-write (the tests of that path on any pandas).
COPY_ON_WRITE: bool | None = None


def _copy_on_write() -> bool:
    """Return whether pandas copies shared data on write (see ``COPY_ON_WRITE``).

    Only then may the frame of ``ModelFrame.data`` be built after the call
    returns.
    """
    if COPY_ON_WRITE is not None:
        return COPY_ON_WRITE
    return _PANDAS_MAJOR >= 3 or pd.get_option("mode.copy_on_write") is True


_PANDAS_MAJOR = int(pd.__version__.split(".")[0])


def _plain_numeric(dtype: Any) -> bool:
    """Return whether ``dtype`` is a numpy int, unsigned or float dtype (read without pandas)."""
    return isinstance(dtype, np.dtype) and dtype.kind in "iuf"


def numeric_not_bool(values: Any) -> bool:
    """Return whether a Series or dtype is numeric and not boolean (a model-matrix column)."""
    dtype = getattr(values, "dtype", values)
    if _plain_numeric(dtype):  # the common case, without pandas' slower tests
        return True
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


class ArrayColumns:
    """The used columns of a DataFrame, each read once, for the complete rows.

    Reading a column of a pandas frame costs microseconds (tens with an Arrow
    string column index) and building a sub-frame far more; for small models
    that was most of the cost of a fit. This holds each used column's values as
    numpy arrays, restricted to the complete rows, and builds the pandas frame
    of those rows (``ModelFrame.data``, formulaic's input) only when asked.

    Parameters
    ----------
    data : DataFrame
        The caller's data (never modified).
    names : list of str
        The used columns, in the order of the frame :meth:`frame` builds.
    series : dict of str to Series
        Those columns of ``data``, read once.

    Attributes
    ----------
    columns : list of str
        The used columns (``names``).
    dtypes : dict of str to dtype
        Their dtypes.
    plain : dict of str to numpy.dtype
        The columns of a plain numeric numpy dtype (int, unsigned or float).
    keep : numpy.ndarray of bool or None
        The complete rows after :meth:`drop_missing`; None: all of them.
    nrows : int
        The number of complete rows.
    """

    def __init__(self, data: pd.DataFrame, names: list[str], series: dict[str, pd.Series]):
        self.columns = names
        self.dtypes = {c: s.dtype for c, s in series.items()}
        self.plain = {c: d for c, d in self.dtypes.items() if _plain_numeric(d)}
        self._data = data
        self._series = series
        self.keep: np.ndarray | None = None  # complete rows; None: all of them
        self._values: dict[str, np.ndarray] = {}
        self._frame: pd.DataFrame | None = None

    @classmethod
    def read(cls, data: pd.DataFrame, names: list[str]) -> ArrayColumns | None:
        """Return the columns ``names`` of ``data``, or ``None`` for a repeated column name.

        A frame with a repeated column name is left to the general path and its
        errors.
        """
        series = {c: data[c] for c in names}
        if not all(isinstance(s, pd.Series) for s in series.values()):
            return None
        # under copy-on-write a shallow copy is a snapshot: the caller's later
        # edits do not reach the frame built from it after the call
        snapshot = data.copy(deep=False) if _copy_on_write() else data
        return cls(snapshot, names, series)

    def drop_missing(
        self, extra: dict[str, np.ndarray], fail: bool = False
    ) -> tuple[dict[str, np.ndarray], int]:
        """Keep the complete rows only (R's na.omit), as :func:`drop_missing_rows`.

        With ``fail`` a missing value is a :class:`DataError` naming the columns
        (na.fail). Returns ``extra`` restricted to the complete rows and the
        number of rows dropped.
        """
        missing = {c: column_missing(s) for c, s in self._series.items()}
        self.keep, n_dropped = complete_rows(missing, extra, len(self._data), fail)
        if not _copy_on_write():  # the frame must be a copy taken now
            self.frame()
        if n_dropped:
            extra = {k: v[self.keep] for k, v in extra.items()}
            warnings.warn(
                f"{n_dropped} row(s) with missing values in used columns were dropped",
                MissingDataWarning,
                stacklevel=4,
            )
        return extra, n_dropped

    @property
    def nrows(self) -> int:
        """The number of complete rows."""
        return len(self._data) if self.keep is None else int(np.count_nonzero(self.keep))

    def row_label(self, i: int) -> Any:
        """Return the index label of the ``i``-th complete row."""
        if self.keep is not None:
            i = int(np.flatnonzero(self.keep)[i])
        return self._data.index[i]

    def series(self, name: str) -> pd.Series:
        """Return column ``name`` of the complete rows as a pandas Series."""
        s = self._series[name]
        return s if self.keep is None else s[self.keep]

    def values(self, name: str) -> np.ndarray:
        """Return the values of column ``name`` in the complete rows (a numpy-backed column)."""
        if name not in self._values:
            arr = self._series[name].to_numpy()
            self._values[name] = arr if self.keep is None else arr[self.keep]
        return self._values[name]

    def floats(self, name: str) -> np.ndarray:
        """Return a plain numeric column as a new float array (never the caller's memory)."""
        return np.array(self.values(name), dtype=float)

    def check_finite(self) -> None:
        """Raise a :class:`DataError` for infinite values (:func:`check_finite` without a frame)."""
        for col in self.columns:
            dtype = self.dtypes[col]
            if dtype.kind != "f":
                continue
            arr = self.values(col) if isinstance(dtype, np.dtype) else self.series(col).to_numpy()
            if np.isinf(arr).any():
                raise DataError(f"column {col!r} holds infinite values (+-Inf)")

    def factor(self, group: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Return the codes and levels of a grouping factor, from the arrays.

        As :func:`factor_codes` (and :func:`interaction_codes` for several
        columns in ``group``).
        """
        parts = [self._factor(g) for g in group]
        return parts[0] if len(parts) == 1 else combine_codes(parts)

    def _factor(self, name: str) -> tuple[np.ndarray, list[str]]:
        dtype = self.dtypes[name]
        if isinstance(dtype, pd.CategoricalDtype):
            cat = self._series[name].array
            codes = cat.codes if self.keep is None else cat.codes[self.keep]
            return category_codes(codes, cat.categories)
        if isinstance(dtype, np.dtype):
            return sorted_codes(self.values(name))
        # extension dtypes: to_numpy's result may depend on missing values
        return factor_codes(self.series(name))

    def frame(self) -> pd.DataFrame:
        """Return the used columns of the complete rows as a DataFrame, built once."""
        if self._frame is None:
            data = self._data
            frame = data.take([data.columns.get_loc(c) for c in self.columns], axis=1)
            if self.keep is not None:
                frame = frame.loc[self.keep]
            self._frame = drop_unused_categories(frame, self.columns)
        return self._frame

    def deferred_frame(self) -> pd.DataFrame | Deferred:
        """Return :meth:`frame`, or a promise of it if it has not been needed yet."""
        return self._frame if self._frame is not None else Deferred(self.frame)


class Deferred:
    """A value computed on first use (see :class:`ModelFrame`).

    Attributes
    ----------
    make : callable
        Computes the value, called without arguments.
    """

    def __init__(self, make: Any):
        self.make = make


def dtype_of(data: pd.DataFrame | ArrayColumns, col: str) -> Any:
    """Return the dtype of a used column, read from a frame or from the arrays."""
    return data.dtypes[col] if isinstance(data, ArrayColumns) else data[col].dtype
