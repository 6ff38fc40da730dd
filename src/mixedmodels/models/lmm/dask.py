"""Fitting :func:`~mixedmodels.lmer` to data that live in partitions: Dask
DataFrames and Parquet files, on one machine or on a cluster.

The fit needs only the cross-products of ``[Z X y]`` (:class:`~mixedmodels.linalg.augmented.CrossProducts`),
which are sums over rows: the cross-products of the data are the sum of those of
its row partitions. So the data are never gathered in one place:

1. **levels pass** (map-reduce): every partition drops its incomplete rows and
   reports the distinct values of its factor columns (grouping columns, string /
   categorical columns, numeric columns inside ``factor()`` / ``C()``) and its
   row counts. The global levels follow R's order (a categorical's category
   order, otherwise sorted values, numbers numerically), unused levels dropped.
2. The fixed-effects and random-effects encodings are built once, on a small
   pandas *prototype* frame holding every level, so every partition gets the
   same columns.
3. **accumulation pass** (map-reduce): every partition builds its piece of
   ``[Z X y]`` (square roots of the prior weights applied) and its
   :class:`CrossProducts`; the pieces are summed with ``+`` in a tree of
   ``split_every`` inputs per node. The QR factor ``R`` of the unweighted
   fixed-effects matrix is accumulated alongside (``qr([R_a; R_b])``), so
   aliased columns are found exactly as in memory (:func:`design.full_rank_columns`).
   Sparse blocks carry int32 indices, a partition's Z'[X y] comes from weighted
   counts (no n-row sparse matrix), and every task hands the heap memory it
   freed back to the system, so the pass holds little beyond the partial sums.
4. The optimisation runs on the accumulated blocks, with the same engine as
   :class:`~mixedmodels.models.lmm.model.LinearMixedModel` (this module's model is a subclass).
   Nothing there is of the size of the data; the largest block, Z_i'Z_0, becomes
   the engine's storage as it is (kept dense when most level pairs occur).

Everything is expressed with ``dask.delayed``; whichever scheduler is active is
used: a ``distributed.Client`` connected to a multi-machine cluster, a
``LocalCluster``, or dask's default threads.

This module imports dask lazily: importing it (as :mod:`mixedmodels.models.lmm.model` does
only when ``lmer`` is given a Dask DataFrame or a path) needs no dask.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from mixedmodels.exceptions import (
    DataError,
    MissingDataWarning,
    MixedModelsError,
    RankDeficiencyWarning,
)
from mixedmodels.linalg.augmented import AugmentedSystem
from mixedmodels.linalg.crossproducts import CrossProducts, TermData
from mixedmodels.models.base import consecutive_slices
from mixedmodels.models.lmm.model import LinearMixedModel
from mixedmodels.spec.checks import check_columns, used_columns
from mixedmodels.spec.coding import (
    factor_contrasts,
    r_column_names,
    rewrite_factor_calls,
    spec_factors,
    with_contrasts,
)
from mixedmodels.spec.columns import check_finite
from mixedmodels.spec.fixed import FixedEffects, full_rank_columns
from mixedmodels.spec.formula import ParsedFormula, parse_formula, require_random
from mixedmodels.spec.frame import ModelFrame, nonfinite_rows
from mixedmodels.spec.matrix import R_FUNCTIONS, integers_as_floats, model_matrix
from mixedmodels.spec.random import ReTerm, check_term_size, order_terms
from mixedmodels.spec.response import response_values, total_offset

__all__ = [
    "DaskLinearMixedModel",
    "DaskUnsupportedError",
    "lmer_dask",
    "is_dask_dataframe",
    "is_path",
    "exact_quantiles",
]


class DaskUnsupportedError(MixedModelsError):
    """Something the in-memory :func:`lmer` supports is not available for Dask / Parquet data."""


def is_dask_dataframe(data: Any) -> bool:
    """True for a Dask DataFrame (checked by module name: dask is not imported)."""
    module = type(data).__module__.split(".")[0]
    return module in ("dask", "dask_expr") and hasattr(data, "map_partitions")


def is_path(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


def _import_dask():
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fitting Dask or Parquet data needs dask: pip install 'mixedmodels[dask]'"
        ) from err
    return dask, dd


def _read_parquet(path: Any):
    _, dd = _import_dask()
    text = os.fspath(path)
    if not os.path.exists(text) and "://" not in text:
        raise DataError(f"data path {text!r} does not exist (expected a Parquet file or directory)")
    if os.path.isfile(text) and not text.lower().endswith((".parquet", ".pq", ".parq")):
        raise DataError(
            f"data path {text!r} is not a Parquet file: a path given as data must be a "
            "Parquet file or a directory of Parquet files (load CSV files with pandas)"
        )
    return dd.read_parquet(text)


# --------------------------------------------------------------------------- levels


def _is_factor_dtype(dtype: Any) -> bool:
    """Columns that formulaic (and R) treat as factors: not numeric, or bool."""
    return (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(dtype)
        or not pd.api.types.is_numeric_dtype(dtype)
    )


@dataclass
class _Levels:
    """Distinct values of a factor column, mergeable across partitions.

    For categoricals ``order`` is the union of category lists (first seen first)
    and ``values`` the observed categories; otherwise ``values`` are sorted uniques.
    """

    categorical: bool
    values: np.ndarray
    order: list = field(default_factory=list)

    @classmethod
    def of(cls, s: pd.Series) -> "_Levels":
        if isinstance(s.dtype, pd.CategoricalDtype):
            observed = s.cat.remove_unused_categories().cat.categories
            return cls(True, np.asarray(observed, dtype=object), list(s.cat.categories))
        return cls(False, pd.unique(s.to_numpy()))

    def __add__(self, other: "_Levels") -> "_Levels":
        if self.categorical and other.categorical:
            order = self.order if self.order == other.order else _union(self.order, other.order)
            return _Levels(True, _unique_object(self.values, other.values), order)
        a, b = self._plain(), other._plain()
        return _Levels(False, pd.unique(np.concatenate([a, b])))

    def _plain(self) -> np.ndarray:
        return self.values if not self.categorical else np.asarray(self.values)

    def final(self) -> np.ndarray:
        """The levels in R's order."""
        if self.categorical:
            seen = set(self.values.tolist())
            return np.asarray([c for c in self.order if c in seen], dtype=object)
        values = self.values
        if values.dtype == object:
            values = np.asarray(values.tolist())  # numbers as numbers, strings as str
            if values.dtype.kind not in "biufUS":
                values = self.values
        return np.unique(values)


def _union(a: list, b: list) -> list:
    seen = set(a)
    return list(a) + [x for x in b if x not in seen]


def _unique_object(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(pd.unique(np.concatenate([a, b]).astype(object)), dtype=object)


@dataclass
class _LevelsResult:
    """What the levels pass returns per partition (and, summed, for the data)."""

    nrows: int
    ndropped: int
    levels: dict[str, _Levels]
    combos: dict[tuple[str, ...], pd.DataFrame]

    def __add__(self, other: "_LevelsResult") -> "_LevelsResult":
        for k in self.levels:
            _check_same_kind(k, self.levels[k], other.levels[k])
        levels = {k: self.levels[k] + other.levels[k] for k in self.levels}
        combos = {
            k: pd.concat([self.combos[k], other.combos[k]], ignore_index=True).drop_duplicates(
                ignore_index=True
            )
            for k in self.combos
        }
        return _LevelsResult(self.nrows + other.nrows, self.ndropped + other.ndropped, levels, combos)


def _check_same_kind(name: str, a: _Levels, b: _Levels) -> None:
    """A factor column must hold numbers in every partition or text in every
    one (its levels could not be ordered, nor new values matched, otherwise)."""
    if len(a.values) == 0 or len(b.values) == 0:
        return
    numbers = ("integer", "floating", "mixed-integer-float", "decimal")
    kinds = [pd.api.types.infer_dtype(x.values, skipna=True) in numbers for x in (a, b)]
    if kinds[0] != kinds[1]:
        raise DataError(
            f"column {name!r} holds numbers in some partitions and text in others: "
            "give it one type in every partition (e.g. convert it with astype(str) "
            "before writing the files)"
        )


# --------------------------------------------------------------------------- plan


@dataclass
class _TermPlan:
    group: tuple[str, ...]
    model_spec: Any
    # single grouping column: its raw levels; several: per-column raw levels and
    # the sorted combined codes that occur
    raw_levels: list[np.ndarray]
    used_combined: np.ndarray | None


@dataclass
class _Plan:
    """Everything a partition needs to build its piece of the model (picklable, small)."""

    parsed: ParsedFormula
    columns: list[str]
    fail_on_na: bool
    factor_levels: dict[str, np.ndarray] = field(default_factory=dict)
    formula_factors: list[str] = field(default_factory=list)  # turned into Categoricals
    ordered: dict[str, bool] = field(default_factory=dict)
    combos: list[tuple[str, ...]] = field(default_factory=list)
    fixed_spec: Any = None
    terms: list[_TermPlan] = field(default_factory=list)
    weights_col: str | None = None
    offset_col: str | None = None

    # ------------------------------------------------------------ helpers

    def complete_rows(self, part: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        part = part[self.columns]
        mask = part.isna().any(axis=1).to_numpy() if self.columns else np.zeros(len(part), bool)
        ndropped = int(mask.sum())
        if ndropped:
            if self.fail_on_na:
                cols = [c for c in self.columns if part[c].isna().any()]
                raise DataError(
                    f"{ndropped} row(s) have missing values (in {', '.join(map(repr, cols))}) "
                    "and na_action='fail'"
                )
            part = part.loc[~mask]
        return part, ndropped

    def levels_of(self, part: pd.DataFrame) -> _LevelsResult:
        nrows = len(part)
        part, ndropped = self.complete_rows(part)
        levels = {c: _Levels.of(part[c]) for c in self.factor_levels}
        combos = {}
        for key in self.combos:
            sub = pd.DataFrame({c: np.asarray(part[c], dtype=object) for c in key})
            combos[key] = sub.drop_duplicates(ignore_index=True)
        return _LevelsResult(nrows - ndropped, ndropped, levels, combos)

    def model_frame(self, part: pd.DataFrame) -> pd.DataFrame:
        """Used columns of complete rows, factor columns as Categoricals with the global levels."""
        frame = part.copy()
        for col in self.formula_factors:
            frame[col] = pd.Categorical(
                frame[col], categories=self.factor_levels[col], ordered=self.ordered.get(col, False)
            )
        return frame

    def codes(self, frame: pd.DataFrame, part: pd.DataFrame, tp: _TermPlan) -> np.ndarray:
        per_col = []
        for col, levels in zip(tp.group, tp.raw_levels):
            if col in self.formula_factors and isinstance(frame[col].dtype, pd.CategoricalDtype):
                c = frame[col].cat.codes.to_numpy(np.int64)
            else:
                c = pd.Categorical(part[col], categories=levels).codes.astype(np.int64)
            per_col.append((c, len(levels)))
        if len(per_col) == 1:
            codes = per_col[0][0]
        else:
            combined = np.zeros(len(frame), dtype=np.int64)
            for c, nl in per_col:
                combined = combined * nl + c
            codes = np.searchsorted(tp.used_combined, combined).astype(np.int64)
        if len(codes) and codes.min() < 0:  # cannot happen: levels are global
            raise DataError(f"grouping values of {':'.join(tp.group)} missing from the levels pass")
        return codes

    def encode(self, part: pd.DataFrame) -> dict[str, Any]:
        """The rows of one partition as the engine sees them."""
        part, ndropped = self.complete_rows(part)
        check_finite(part, self.columns)
        frame = self.model_frame(part)
        y = response_values(self.parsed, frame)
        w = None
        if self.weights_col is not None:
            w = _numeric(frame, self.weights_col, "weights")
            bad = ~np.isfinite(w) | (w < 0)
            if bad.any():
                raise DataError(
                    f"weights column {self.weights_col!r} must be finite and non-negative: "
                    f"{int(bad.sum())} bad value(s)"
                )
        given = None if self.offset_col is None else _numeric(frame, self.offset_col, "offset")
        if given is not None and not np.all(np.isfinite(given)):
            raise DataError(f"offset column {self.offset_col!r} holds infinite values (+-Inf)")
        off = total_offset(self.parsed, frame, given) if len(frame) else None
        X = _matrix(self.fixed_spec, frame, "fixed-effects")
        terms = []
        for tp in self.terms:
            z = _matrix(tp.model_spec, frame, "random-effects")
            terms.append((self.codes(frame, part, tp), z))
        self.check_evaluated(part, y, off, X, [z for _, z in terms])
        return {
            "index": part.index,
            "ndropped": ndropped,
            "y": y,
            "w": w,
            "offset": off,
            "X": X,
            "terms": terms,
        }


    def check_evaluated(
        self, part: pd.DataFrame, y: np.ndarray, off: np.ndarray | None, X: np.ndarray, zs: list
    ) -> None:
        """What the formula evaluated must be finite: an infinite value is an
        error naming its term (``design.nonfinite_rows``), and so is a NaN one,
        as the rows of partitions are counted before they are evaluated."""
        arrays = [y, X, *zs] + ([] if off is None else [off])
        if all(np.isfinite(a).all() for a in arrays):
            return
        spec_names = [(self.fixed_spec, "fixed-effects column {!r}")] + [
            (tp.model_spec, "column {!r} of the term grouped by " + ":".join(tp.group))
            for tp in self.terms
        ]
        parts = [([f"response {self.parsed.response!r}"], y)]
        for (spec, label), values in zip(spec_names, [X, *zs]):
            names = r_column_names(list(spec.column_names), spec)
            parts.append(([label.format(n) for n in names], values))
        if off is not None:
            parts.append(([f"offset {' + '.join(self.parsed.offsets) or self.offset_col!r}"], off))
        nan_rows, names = nonfinite_rows(parts, part.index.__getitem__)
        raise DataError(
            f"{int(nan_rows.sum())} row(s) of a partition evaluate to NaN (in {', '.join(names)}): "
            "rows of Dask or Parquet data are counted before the formula is evaluated, so "
            "they cannot be dropped here: filter them out of the data first"
        )


def _numeric(frame: pd.DataFrame, col: str, what: str) -> np.ndarray:
    values = frame[col]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        raise DataError(f"{what} column {col!r} is not numeric (dtype {values.dtype})")
    return values.to_numpy(dtype=float)


def _matrix(spec: Any, frame: pd.DataFrame, what: str) -> np.ndarray:
    frame = integers_as_floats(frame, spec_factors(spec))
    try:
        mm = spec.get_model_matrix(frame, na_action="ignore", context=R_FUNCTIONS)
    except MixedModelsError:
        raise
    except Exception as err:
        raise DataError(f"cannot build the {what} matrix of a partition: {err}") from err
    return np.ascontiguousarray(np.asarray(mm, dtype=float))


# --------------------------------------------------------------------------- accumulation


@dataclass
class _Partial:
    """Sums over the rows of some partitions."""

    cross: CrossProducts | None
    R: np.ndarray  # QR factor of the unweighted fixed-effects matrix (all columns)
    n: int
    n_eff: int  # rows with positive weight
    sum_logw: float
    ndropped: int

    def __add__(self, other: "_Partial") -> "_Partial":
        if self.cross is None:
            cross = other.cross
        elif other.cross is None:
            cross = self.cross
        else:
            cross = self.cross + other.cross
        return _Partial(
            cross,
            _stack_r(self.R, other.R),
            self.n + other.n,
            self.n_eff + other.n_eff,
            self.sum_logw + other.sum_logw,
            self.ndropped + other.ndropped,
        )


def _stack_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = np.vstack([a, b])
    if both.shape[0] <= both.shape[1]:
        return both
    return np.linalg.qr(both, mode="r")


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (other C libraries, other systems)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _returning_memory(fn: Any) -> Any:
    """A task function that hands freed heap memory back to the system when done.

    A partition's arrays (a few MB up to 32 MB) fall below glibc's adaptive mmap
    threshold once a larger block has been freed, so they come from the worker
    threads' malloc arenas, which keep their pages after ``free``: over the 50
    partitions of 100 million rows the process held about 1 GB it no longer
    used (accumulation peak 3.2 GB without trimming, 2.3 GB with). Dask's
    documentation gives the same remedy (``malloc_trim``) for worker memory.
    """

    @functools.wraps(fn)
    def task(*args: Any) -> Any:
        try:
            return fn(*args)
        finally:
            trim = _malloc_trim()
            if trim is not None:
                trim(0)

    return task


@_returning_memory
def _accumulate(plan: _Plan, part: pd.DataFrame) -> _Partial:
    enc = plan.encode(part)
    X, y, w = enc["X"], enc["y"], enc["w"]
    p = X.shape[1]
    R = np.linalg.qr(X, mode="r") if len(y) > p else X.copy()
    if len(y) == 0:
        return _Partial(None, R, 0, 0, 0.0, enc["ndropped"])
    if enc["offset"] is not None:
        y = y - enc["offset"]
    sqrtw = None if w is None else np.sqrt(w)
    if sqrtw is not None:
        X, y = X * sqrtw[:, None], y * sqrtw
    tdata = []
    for (codes, z), tp in zip(enc["terms"], plan.terms):
        nlevels = len(tp.raw_levels[0]) if tp.used_combined is None else len(tp.used_combined)
        if sqrtw is not None:
            z = z * sqrtw[:, None]
        tdata.append(TermData(codes, z, nlevels))
    cross = CrossProducts.from_data(tdata, np.ascontiguousarray(X), y)
    if w is None:
        n_eff, slw = len(y), 0.0
    else:
        pos = w > 0
        n_eff, slw = int(pos.sum()), float(np.log(w[pos]).sum())
    return _Partial(cross, R, len(y), n_eff, slw, enc["ndropped"])


@_returning_memory
def _sum(*parts: Any) -> Any:
    """Sum of partial results, releasing each as soon as it is added."""
    parts = list(parts)
    total = parts.pop(0)
    while parts:
        total = total + parts.pop(0)
    return total


def _tree_reduce(dask, leaves: list, split_every: int):
    """A tree of ``split_every``-ary sums (depth-first scheduling keeps few partials alive)."""
    level = list(leaves)
    while len(level) > 1:
        level = [
            dask.delayed(_sum)(*level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _map_reduce(ddf: Any, fn: Any, plan: _Plan, split_every: int) -> Any:
    dask, _ = _import_dask()
    plan_d = dask.delayed(plan)  # one key: shipped once, not once per task
    leaves = [dask.delayed(fn)(plan_d, part) for part in ddf.to_delayed()]
    try:
        return _tree_reduce(dask, leaves, max(2, int(split_every))).compute()
    except KeyError as err:  # selecting the used columns of a partition without them
        raise DataError(
            f"a partition of the data lacks column(s) {err}: every partition (every "
            f"Parquet file) must hold the columns the model uses ({', '.join(plan.columns)})"
        ) from err


@_returning_memory
def _levels_fn(plan: _Plan, part: pd.DataFrame) -> _LevelsResult:
    return plan.levels_of(part)


# --------------------------------------------------------------------------- frame


@dataclass
class DaskModelFrame(ModelFrame):
    """The model frame of a Dask fit: metadata only, no rows.

    ``y`` is empty; ``nobs`` is the number of rows used; ``source`` is the Dask
    DataFrame of the used columns (before dropping incomplete rows).
    """

    n: int = 0
    source: Any = None
    plan: Any = None

    @property
    def nobs(self) -> int:  # type: ignore[override]
        return self.n


_FACTOR_CALL = re.compile(r"(?<![\w.])(?:factor|C)\(\s*`?([A-Za-z_][\w.]*)`?")


def _prototype(dtypes: pd.Series, columns: list[str], levels: dict[str, np.ndarray],
               ordered: dict[str, bool]) -> pd.DataFrame:
    """A small frame that holds every level of every factor column (numbers elsewhere)."""
    size = max([2] + [len(v) for v in levels.values()])
    data = {}
    for col in columns:
        if col in levels and _is_factor_dtype(dtypes[col]):
            data[col] = pd.Categorical(
                np.resize(levels[col], size), categories=levels[col], ordered=ordered.get(col, False)
            )
        elif col in levels:  # numeric used as factor(x) / C(x): its values
            data[col] = np.resize(levels[col], size)
        else:
            data[col] = np.arange(1.0, size + 1.0)
    return pd.DataFrame(data)


def _stateful(spec: Any) -> list[str]:
    state = getattr(spec, "transform_state", None) or {}
    return sorted(state)


def _level_labels(values: np.ndarray) -> list[str]:
    return [str(v) for v in values]


class DaskLinearMixedModel(LinearMixedModel):
    """:class:`LinearMixedModel` for data in partitions: a Dask DataFrame or a
    Parquet file / directory.

    The constructor runs two map-reduce passes over the data (levels, then
    cross-products); :meth:`fit` then works on the accumulated blocks alone.
    Parameters are those of :class:`LinearMixedModel`, except that ``weights``
    and ``offset`` must be column names, plus:

    split_every : int, default 2
        Fan-in of the reduction tree. 2 keeps the fewest partial sums alive at
        once (they can be large: Z_i'Z_0 of two crossed factors).

    Row-level results are lazy Dask Series (``fitted``, ``residuals``,
    ``predict()``); ``simulate`` is not supported.
    """

    def __init__(
        self,
        formula: str,
        data: Any,
        reml: bool = True,
        weights: Any = None,
        offset: Any = None,
        contrasts: Mapping[str, str] | None = None,
        na_action: str = "omit",
        split_every: int = 2,
    ):
        if na_action not in ("omit", "fail"):
            raise DataError(f"na_action must be 'omit' or 'fail', not {na_action!r}")
        self.formula = formula
        self.reml = bool(reml)
        self.data_name = os.fspath(data) if is_path(data) else None
        self.timings: dict[str, float] = {}  # seconds per phase
        self.phases: dict[str, tuple[float, float]] = {}  # its (start, stop) perf_counter
        ddf = _read_parquet(data) if is_path(data) else data
        if not is_dask_dataframe(ddf):
            raise DataError(f"data must be a Dask DataFrame or a Parquet path, not {type(data).__name__}")
        parsed = require_random(parse_formula(formula))
        self.frame = self._build(parsed, ddf, weights, offset, contrasts, na_action, split_every)
        self._fitted = False

    # ------------------------------------------------------------------ passes

    def _mark(self, phase: str, start: float) -> None:
        """Record that ``phase`` ran from ``start`` (``time.perf_counter``) until now."""
        stop = time.perf_counter()
        self.timings[phase] = stop - start
        self.phases[phase] = (start, stop)

    def _build(self, parsed, ddf, weights, offset, contrasts, na_action, split_every) -> DaskModelFrame:
        for what, value in (("weights", weights), ("offset", offset)):
            if value is not None and not isinstance(value, str):
                raise DaskUnsupportedError(
                    f"with Dask or Parquet data, {what} must be a column name, not an array"
                )
        used = used_columns(parsed)
        meta = pd.DataFrame(columns=list(ddf.columns))
        check_columns(used, meta, parsed.text)
        for what, col in (("weights", weights), ("offset", offset)):
            if col is not None and col not in ddf.columns:
                raise DataError(f"{what} column {col!r} is not in the data")
        columns = sorted(used | {c for c in (weights, offset) if c})
        dtypes = ddf.dtypes
        source = ddf[columns]

        grouping = {g for spec in parsed.random for g in spec.group}
        texts = [parsed.fixed] + [spec.expr for spec in parsed.random]
        factor_calls = {m.group(1) for t in texts for m in _FACTOR_CALL.finditer(t)} & set(columns)
        formula_factors = [c for c in columns if c in used and _is_factor_dtype(dtypes[c])]
        level_cols = sorted(grouping | set(formula_factors) | factor_calls)
        ordered = {
            c: bool(dtypes[c].ordered)
            for c in columns
            if isinstance(dtypes[c], pd.CategoricalDtype) and dtypes[c].ordered
        }
        plan = _Plan(
            parsed=parsed,
            columns=columns,
            fail_on_na=na_action == "fail",
            factor_levels={c: None for c in level_cols},
            formula_factors=formula_factors,
            ordered=ordered,
            combos=sorted({tuple(spec.group) for spec in parsed.random if len(spec.group) > 1}),
            weights_col=weights,
            offset_col=offset,
        )

        # pass 1: levels and counts
        t0 = time.perf_counter()
        lv = _map_reduce(source, _levels_fn, plan, split_every)
        self._mark("levels_pass", t0)
        if lv.nrows == 0:
            if lv.ndropped:
                raise DataError("no complete rows remain after dropping rows with missing values")
            raise DataError("the data are empty (0 rows)")
        if lv.ndropped:
            warnings.warn(
                f"{lv.ndropped} row(s) with missing values in used columns were dropped",
                MissingDataWarning,
                stacklevel=4,
            )
        plan.factor_levels = {c: lv.levels[c].final() for c in level_cols}

        # the encodings, built once on a prototype holding every level
        t0 = time.perf_counter()
        proto = _prototype(dtypes, columns, plan.factor_levels, ordered)
        codings = factor_contrasts(proto, columns, contrasts)
        rhs = with_contrasts(rewrite_factor_calls(parsed.fixed), codings)
        fixed_mm = model_matrix(rhs, proto, "fixed-effects")
        plan.fixed_spec = fixed_mm.model_spec
        all_names = r_column_names(list(fixed_mm.columns), fixed_mm.model_spec)
        bad = _stateful(fixed_mm.model_spec)
        re_terms: list[ReTerm] = []
        for spec in parsed.random:
            mm = model_matrix(
                with_contrasts(rewrite_factor_calls(spec.expr), codings),
                proto,
                f"random-effects term {spec.text}",
            )
            bad += _stateful(mm.model_spec)
            k = mm.shape[1]
            if k == 0:
                raise DaskUnsupportedError(f"random-effects term {spec.text} has no columns")
            raw = [plan.factor_levels[g] for g in spec.group]
            if len(spec.group) == 1:
                used_combined = None
                labels = _level_labels(raw[0])
            else:
                used_combined, labels = _combined_levels(lv.combos[tuple(spec.group)], spec.group, raw)
            tp = _TermPlan(tuple(spec.group), mm.model_spec, raw, used_combined)
            term = ReTerm(
                spec,
                np.empty(0, np.int64),
                labels,
                np.empty((0, k)),
                r_column_names(list(mm.columns), mm.model_spec),
                mm.model_spec,
                tuple(dtypes[g] for g in spec.group),
            )
            term._plan = tp  # type: ignore[attr-defined]
            check_term_size(term, lv.nrows)
            re_terms.append(term)
        if bad:
            raise DaskUnsupportedError(
                f"stateful transforms ({', '.join(bad)}) need statistics of the whole data "
                "and are not supported with Dask or Parquet data: transform the columns first"
            )
        terms = order_terms(re_terms)
        plan.terms = [t._plan for t in terms]  # type: ignore[attr-defined]
        self._mark("encodings", t0)

        # pass 2: cross-products
        t0 = time.perf_counter()
        total: _Partial = _map_reduce(source, _accumulate, plan, split_every)
        self._mark("accumulate_pass", t0)
        if total.n_eff == 0:
            raise DataError("weights are all zero: no observation carries information")

        t0 = time.perf_counter()
        R = total.R
        if R.shape[0] < R.shape[1]:
            R = np.vstack([R, np.zeros((R.shape[1] - R.shape[0], R.shape[1]))])
        kept = full_rank_columns(R)
        p_all = len(all_names)
        if len(kept) < p_all:
            keep = set(kept.tolist())
            dropped = [all_names[i] for i in range(p_all) if i not in keep]
            warnings.warn(
                "fixed-effect model matrix is rank deficient so dropping "
                f"{len(dropped)} column(s): {', '.join(dropped)}",
                RankDeficiencyWarning,
                stacklevel=4,
            )
        cross = _keep_columns(total.cross, kept, p_all)
        fixed = FixedEffects(
            X=np.empty((0, len(kept))),
            names=[all_names[i] for i in kept],
            all_names=all_names,
            kept=kept,
            model_spec=fixed_mm.model_spec,
        )
        frame = DaskModelFrame(
            parsed=parsed,
            data=meta[columns],
            y=np.empty(0),
            fixed=fixed,
            terms=terms,
            weights=None,
            offset=None,
            n_dropped=lv.ndropped,
            response_name=parsed.response or "y",
            n=total.n,
            source=source,
            plan=plan,
        )
        self.weights_given = weights is not None
        # what initial_theta needs; Z_i'Z_0 (possibly large) lives on only in the system
        self._cross = CrossProducts(cross.shapes, cross.A00, cross.Axy0, [], cross.Arr)
        self._system = AugmentedSystem(cross)
        self._theta_slices = consecutive_slices([t.ntheta for t in terms])
        self._ldW = float(total.sum_logw)
        self._n_eff = int(total.n_eff) if weights is not None else int(total.n)
        self._mark("system", t0)
        return frame

    _engine_rebuildable = False  # the engine is built from the data's passes

    def _setup_engine(self) -> None:  # the engine is built from the accumulated blocks
        raise DaskUnsupportedError("a Dask model's engine is built from its accumulated cross-products")

    # ------------------------------------------------------------------ start values

    def initial_theta(self) -> np.ndarray:
        """The in-memory moment estimates, computed from the cross-products alone.

        Unweighted fits get the same starting values as :class:`LinearMixedModel`
        (up to rounding); weighted fits use weighted moments.
        """
        cross, fr = self._cross, self.frame
        p = len(fr.fixed.names)
        Q1 = self._system.Q1
        A = cross.Arr[Q1:, Q1:]
        XtX, Xty, yty = A[:p, :p], A[:p, p], A[p, p]
        coef, *_ = np.linalg.lstsq(XtX, Xty, rcond=None)
        rss = float(yty - 2.0 * coef @ Xty + coef @ XtX @ coef)
        parts = []
        offsets = self._system.rest_offsets
        for i, term in enumerate(fr.terms):
            start = term.theta_start()
            if term.k == 1 and term.cnames == ["(Intercept)"]:
                if i == 0:
                    counts = cross.A00[:, 0, 0]
                    zxy = cross.Axy0.T  # (q0, p + 1)
                else:
                    a, b = offsets[i - 1], offsets[i]
                    counts = np.diag(cross.Arr[a:b, a:b])
                    zxy = cross.Arr[a:b, Q1:]
                sums = zxy[:, p] - zxy[:, :p] @ coef
                start = np.array([_anova_ratio_sums(counts, sums, rss)])
            parts.append(start)
        return np.concatenate(parts)

    # ------------------------------------------------------------------ rows (lazy)

    def _row_function(self, kind: str, include_re: bool = True, name: str | None = None):
        fr = self.frame
        return _RowFunction(
            fr.plan,
            self._beta,
            fr.fixed.kept,
            [b.copy() for b in self.b] if include_re else None,
            kind,
            name or kind,
        )

    def _lazy(self, kind: str, include_re: bool = True, name: str | None = None):
        fn = self._row_function(kind, include_re, name)
        return self.frame.source.map_partitions(fn, meta=pd.Series([], dtype=float, name=name or kind))

    @property
    def fitted(self):
        """Fitted values as a lazy Dask Series (partitions as in the data, incomplete rows dropped)."""
        self._require_fit()
        return self._lazy("fitted")

    def residuals(self, type: str = "response"):
        """Residuals as a lazy Dask Series: ``"response"`` (or ``"working"``),
        or ``"pearson"`` (also ``"deviance"``: √weight × response residual)."""
        self._require_fit()
        if type in ("response", "working"):
            return self._lazy("residuals")
        if type in ("pearson", "deviance"):
            return self._lazy("pearson")
        raise DataError(
            f"residual type must be 'response', 'pearson', 'deviance' or 'working', not {type!r}"
        )

    def predict(self, newdata: Any = None, re_form: str | None = None, new_levels: str = "population"):
        """As :meth:`LinearMixedModel.predict`; without ``newdata`` a lazy Dask
        Series over the fitted data; with a Dask DataFrame one lazy Series (per partition);
        with in-memory ``newdata`` a pandas Series."""
        from mixedmodels.support.newdata import include_random as _include_random

        self._require_fit()
        if newdata is None:
            return self._lazy("fitted", _include_random(re_form), name="predicted")
        if is_dask_dataframe(newdata):
            shell = self._shell()
            meta = pd.Series([], dtype=float, name="predicted")
            return newdata.map_partitions(
                _predict_partition, shell, re_form, new_levels, meta=meta
            )
        return super().predict(newdata, re_form=re_form, new_levels=new_levels)

    def _shell(self) -> "LinearMixedModel":
        """A light copy for prediction on workers (no cross-products, no Dask source)."""
        import copy

        shell = copy.copy(self)
        shell._system = None
        shell._cross = None
        shell._factor = None
        shell.frame = copy.copy(self.frame)
        shell.frame.source = None
        shell.b  # noqa: B018 - fails early if unfitted
        return shell

    def _pearson_residuals(self) -> np.ndarray:
        """The five-number summary (min, quartiles, max) of the Pearson residuals:
        all the summary's "Scaled residuals" line needs (``np.quantile`` of these
        five values at 0, ¼, ½, ¾, 1 returns them). Exact, computed on first use by
        three more passes over the data (see :func:`exact_quantiles`)."""
        if "pearson_q" not in self._cache:
            r = self._lazy("pearson")
            self._cache["pearson_q"] = exact_quantiles(r, [0.0, 0.25, 0.5, 0.75, 1.0])
        return self._cache["pearson_q"]

    def simulate(self, *args: Any, **kwargs: Any):
        raise DaskUnsupportedError(
            "simulate() is not supported for Dask or Parquet fits: it would produce one "
            "value per row; fit an in-memory sample with mixedmodels.lmer for simulation"
        )


def exact_quantiles(series: Any, probs: Any, bins: int = 65536) -> np.ndarray:
    """Exact quantiles of a Dask Series (``np.quantile``'s linear interpolation),
    without gathering it: pass 1 counts and finds the range, pass 2 builds a
    histogram of ``bins`` equal bins, pass 3 collects only the values in the
    bins that hold the order statistics needed."""
    dask, _ = _import_dask()
    parts = series.to_delayed()
    probs = np.asarray(probs, dtype=float)

    stats = dask.compute(*[dask.delayed(_range_of)(p) for p in parts])
    n = sum(c for c, _, _ in stats)
    if n == 0:
        return np.full(len(probs), np.nan)
    lo = min(a for c, a, _ in stats if c)
    hi = max(b for c, _, b in stats if c)
    if lo == hi:
        return np.full(len(probs), lo)
    edges = (lo, hi, bins)
    hist = _tree_reduce(dask, [dask.delayed(_histogram)(p, edges) for p in parts], 2).compute()
    cum = np.cumsum(hist)
    pos = (n - 1) * probs
    ranks = np.unique(np.concatenate([np.floor(pos), np.minimum(np.floor(pos) + 1, n - 1)]).astype(np.int64))
    need = np.unique(np.searchsorted(cum, ranks, side="right"))
    found = dask.compute(*[dask.delayed(_values_in_bins)(p, edges, need) for p in parts])
    values = {b: np.sort(np.concatenate([f[b] for f in found])) for b in need}
    start = np.concatenate([[0], cum[:-1]])

    def order_stat(rank: int) -> float:
        b = int(np.searchsorted(cum, rank, side="right"))
        return float(values[b][rank - start[b]])

    out = []
    for q in pos:
        k = int(np.floor(q))
        frac = q - k
        a = order_stat(k)
        out.append(a if frac == 0 else a + frac * (order_stat(min(k + 1, n - 1)) - a))
    return np.asarray(out)


def _range_of(s: pd.Series) -> tuple[int, float, float]:
    v = s.to_numpy(dtype=float)
    return (len(v), float(v.min()), float(v.max())) if len(v) else (0, np.inf, -np.inf)


def _bin_of(v: np.ndarray, edges: tuple[float, float, int]) -> np.ndarray:
    lo, hi, bins = edges
    b = np.floor((v - lo) / (hi - lo) * bins).astype(np.int64)
    return np.clip(b, 0, bins - 1)


def _histogram(s: pd.Series, edges: tuple[float, float, int]) -> np.ndarray:
    return np.bincount(_bin_of(s.to_numpy(dtype=float), edges), minlength=edges[2])


def _values_in_bins(s: pd.Series, edges, need: np.ndarray) -> dict[int, np.ndarray]:
    v = s.to_numpy(dtype=float)
    b = _bin_of(v, edges)
    return {int(k): v[b == k] for k in need}


def _predict_partition(part: pd.DataFrame, shell: LinearMixedModel, re_form, new_levels) -> pd.Series:
    return LinearMixedModel.predict(shell, part, re_form=re_form, new_levels=new_levels)


@dataclass
class _RowFunction:
    """Fitted values / residuals of one partition (picklable, small)."""

    plan: _Plan
    beta: np.ndarray
    kept: np.ndarray
    b: list[np.ndarray] | None
    kind: str
    name: str

    def __call__(self, part: pd.DataFrame) -> pd.Series:
        enc = self.plan.encode(part)
        eta = enc["X"][:, self.kept] @ self.beta
        if self.b is not None:
            for (codes, z), b in zip(enc["terms"], self.b):
                eta += np.einsum("nk,nk->n", z, b[codes])
        if enc["offset"] is not None:
            eta = eta + enc["offset"]
        if self.kind == "fitted":
            out = eta
        else:
            out = enc["y"] - eta
            if self.kind == "pearson" and enc["w"] is not None:
                out = out * np.sqrt(enc["w"])
        return pd.Series(out, index=enc["index"], name=self.name, dtype=float)


def _anova_ratio_sums(counts: np.ndarray, sums: np.ndarray, rss: float) -> float:
    """:func:`mixedmodels.models.lmm.model._anova_ratio` from per-group counts and residual sums
    and the total residual sum of squares (what cross-products give)."""
    counts = np.asarray(counts, dtype=float)
    means = sums / np.maximum(counts, 1.0)
    used = counts > 0
    n, g = counts.sum(), int(used.sum())
    if g < 2 or n <= g:
        return 1.0
    within = (rss - np.sum(counts * means**2)) / (n - g)
    grand = np.sum(counts * means) / n
    between = np.sum(counts[used] * (means[used] - grand) ** 2) / (g - 1)
    n0 = (n - np.sum(counts**2) / n) / (g - 1)
    if within <= 0 or n0 <= 0:
        return 1.0
    ratio = max(between - within, 0.0) / n0 / within
    return float(np.clip(np.sqrt(ratio), 0.05, 5.0))


def _combined_levels(combos: pd.DataFrame, group: tuple[str, ...], raw: list[np.ndarray]):
    """Observed combinations of several grouping factors: R's ``a:b`` levels."""
    combined = np.zeros(len(combos), dtype=np.int64)
    for col, levels in zip(group, raw):
        codes = pd.Categorical(combos[col].to_numpy(), categories=levels).codes.astype(np.int64)
        combined = combined * len(levels) + codes
    used = np.unique(combined)
    labels = []
    for value in used:
        parts = []
        for levels in reversed(raw):
            value, idx = divmod(int(value), len(levels))
            parts.append(str(levels[idx]))
        labels.append(":".join(reversed(parts)))
    return used, labels


def _keep_columns(cross: CrossProducts, kept: np.ndarray, p_all: int) -> CrossProducts:
    """The cross-products with only the kept fixed-effects columns."""
    if len(kept) == p_all:
        return cross
    rows = np.concatenate([kept, [p_all]])
    Q1 = cross.Arr.shape[0] - p_all - 1
    idx = np.concatenate([np.arange(Q1), Q1 + rows])
    return CrossProducts(
        cross.shapes,
        cross.A00,
        cross.Axy0[rows],
        cross.A_re0,
        np.ascontiguousarray(cross.Arr[np.ix_(idx, idx)]),
    )


def lmer_dask(
    formula: str,
    data: Any,
    reml: bool = True,
    weights: Any = None,
    offset: Any = None,
    contrasts: Mapping[str, str] | None = None,
    na_action: str = "omit",
    split_every: int = 2,
    **fit_kwargs: Any,
) -> DaskLinearMixedModel:
    """:func:`mixedmodels.lmer` for a Dask DataFrame or a Parquet file / directory."""
    model = DaskLinearMixedModel(
        formula,
        data,
        reml=reml,
        weights=weights,
        offset=offset,
        contrasts=contrasts,
        na_action=na_action,
        split_every=split_every,
    )
    t0 = time.perf_counter()
    model.fit(**fit_kwargs)
    model._mark("optimize", t0)
    return model
