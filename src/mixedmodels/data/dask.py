"""Partitioned data on Dask: reading it, and map-reduce passes over its partitions.

The passes sum what the fit needs over the partitions without gathering them.
The fit needs only the cross-products of ``[Z X y]``
(:class:`~mixedmodels.linalg.augmented.CrossProducts`), which are sums over
rows: the cross-products of the data are the sum of those of its row
partitions. Every partition builds its piece of ``[Z X y]`` (square roots of
the prior weights applied, :meth:`PartitionPlan.encode`) and its
:class:`CrossProducts`; the pieces are summed with ``+`` in a tree of
``split_every`` inputs per node. The QR factor ``R`` of the unweighted
fixed-effects matrix is accumulated alongside (``qr([R_a; R_b])``), so aliased
columns are found exactly as in memory (:func:`design.full_rank_columns`).
Sparse blocks carry int32 indices, a partition's Z'[X y] comes from weighted
counts (no n-row sparse matrix), and every task hands the heap memory it freed
back to the system, so the pass holds little beyond the partial sums.

Everything is expressed with ``dask.delayed``; whichever scheduler is active is
used: a ``distributed.Client`` connected to a multi-machine cluster, a
``LocalCluster``, or dask's default threads. Dask is imported lazily: importing
this module needs no dask.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.data.plan import PartitionPlan
from mixedmodels.exceptions import DataError, MixedModelsError
from mixedmodels.linalg.crossproducts import CrossProducts, TermData

__all__ = [
    "DaskUnsupportedError",
    "is_dask_dataframe",
    "is_path",
    "import_dask",
    "read_partitioned",
    "Partial",
    "accumulate",
    "levels_task",
    "map_reduce",
    "tree_reduce",
    "keep_columns",
    "exact_quantiles",
]


class DaskUnsupportedError(MixedModelsError):
    """Something the in-memory :func:`lmer` supports is not available for Dask / Parquet data."""


def is_dask_dataframe(data: Any) -> bool:
    """Return True for a Dask DataFrame (checked by module name: dask is not imported)."""
    module = type(data).__module__.split(".")[0]
    return module in ("dask", "dask_expr") and hasattr(data, "map_partitions")


def is_path(data: Any) -> bool:
    """Return True for a str or PathLike: Parquet files given by their path."""
    return isinstance(data, (str, os.PathLike))


def import_dask():
    """Return dask and dask.dataframe; without them, raise an ImportError saying how to install."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fitting Dask or Parquet data needs dask: pip install 'mixedmodels[dask]'"
        ) from err
    return dask, dd


def read_partitioned(data: Any) -> Any:
    """Return ``data`` as a Dask DataFrame.

    A Parquet file or directory is read lazily, a Dask DataFrame is returned as
    it is; anything else raises a :class:`DataError`.
    """
    ddf = read_parquet(data) if is_path(data) else data
    if not is_dask_dataframe(ddf):
        raise DataError(f"data must be a Dask DataFrame or a Parquet path, not {type(data).__name__}")
    return ddf


def read_parquet(path: Any) -> Any:
    """Return a Parquet file or directory as a lazy Dask DataFrame (errors name the path)."""
    _, dd = import_dask()
    text = os.fspath(path)
    if not os.path.exists(text) and "://" not in text:
        raise DataError(f"data path {text!r} does not exist (expected a Parquet file or directory)")
    if os.path.isfile(text) and not text.lower().endswith((".parquet", ".pq", ".parq")):
        raise DataError(
            f"data path {text!r} is not a Parquet file: a path given as data must be a "
            "Parquet file or a directory of Parquet files (load CSV files with pandas)"
        )
    return dd.read_parquet(text)


# --------------------------------------------------------------------------- map-reduce


@dataclass
class Partial:
    """Sums over the rows of some partitions.

    Partials add with ``+`` (the reduce step of :func:`map_reduce`).

    Attributes
    ----------
    cross : CrossProducts or None
        Cross-products of the weighted ``[Z X y]``; None for no rows.
    R : ndarray
        QR factor of the unweighted fixed-effects matrix (all columns).
    n : int
        Rows summed.
    n_eff : int
        Rows with positive weight.
    sum_logw : float
        Sum of the log prior weights of those rows (0 without weights).
    ndropped : int
        Rows dropped as incomplete.
    """

    cross: CrossProducts | None
    R: np.ndarray  # QR factor of the unweighted fixed-effects matrix (all columns)
    n: int
    n_eff: int  # rows with positive weight
    sum_logw: float
    ndropped: int

    def __add__(self, other: "Partial") -> "Partial":
        if self.cross is None:
            cross = other.cross
        elif other.cross is None:
            cross = self.cross
        else:
            cross = self.cross + other.cross
        return Partial(
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
    """Return glibc's ``malloc_trim``, or None (other C libraries, other systems)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _returning_memory(fn: Any) -> Any:
    """Return a task function that hands freed heap memory back to the system when done.

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
def accumulate(plan: PartitionPlan, part: pd.DataFrame) -> Partial:
    """Return the sums of one partition: the map step of the cross-products pass.

    The partition is encoded by ``plan`` (:meth:`PartitionPlan.encode`); the
    offset is subtracted from y, the rows are scaled by the square roots of the
    prior weights, and the cross-products of ``[Z X y]`` taken. ``R`` is the QR
    factor of the unweighted X (X itself when the partition has no more rows
    than columns). A partition without complete rows gives no cross-products,
    only its count of dropped rows.

    Parameters
    ----------
    plan : PartitionPlan
        The model's encoding of a partition.
    part : pandas.DataFrame
        One partition.

    Returns
    -------
    Partial
        Its cross-products, ``R``, row counts (all, positive weight, dropped)
        and the sum of the log weights of the rows with positive weight.
    """
    enc = plan.encode(part)
    X, y, w = enc["X"], enc["y"], enc["w"]
    p = X.shape[1]
    R = np.linalg.qr(X, mode="r") if len(y) > p else X.copy()
    if len(y) == 0:
        return Partial(None, R, 0, 0, 0.0, enc["ndropped"])
    if enc["offset"] is not None:
        y = y - enc["offset"]
    sqrtw = None if w is None else np.sqrt(w)
    if sqrtw is not None:
        X, y = X * sqrtw[:, None], y * sqrtw
    tdata = []
    for (codes, z), tp in zip(enc["terms"], plan.terms):
        if sqrtw is not None:
            z = z * sqrtw[:, None]
        tdata.append(TermData(codes, z, tp.nlevels))
    cross = CrossProducts.from_data(tdata, np.ascontiguousarray(X), y)
    if w is None:
        n_eff, slw = len(y), 0.0
    else:
        pos = w > 0
        n_eff, slw = int(pos.sum()), float(np.log(w[pos]).sum())
    return Partial(cross, R, len(y), n_eff, slw, enc["ndropped"])


@_returning_memory
def _sum(*parts: Any) -> Any:
    """Sum of partial results, releasing each as soon as it is added."""
    parts = list(parts)
    total = parts.pop(0)
    while parts:
        total = total + parts.pop(0)
    return total


def tree_reduce(dask, leaves: list, split_every: int):
    """Return a tree of ``split_every``-ary sums of ``leaves``, as one delayed value.

    Depth-first scheduling keeps few partials alive.
    """
    level = list(leaves)
    while len(level) > 1:
        level = [
            dask.delayed(_sum)(*level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def map_reduce(ddf: Any, fn: Any, plan: PartitionPlan, split_every: int) -> Any:
    """Return the sum over the partitions of ``fn(plan, partition)``, computed.

    The plan is shipped to the workers once (one delayed key), the partial
    results summed with ``+`` in a tree of ``split_every`` (at least 2) inputs
    per node. A partition without a column the model uses raises a
    :class:`DataError` naming the columns.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        The data.
    fn : callable
        ``fn(plan, partition)``: the map step (:func:`accumulate`,
        :func:`levels_task`, ...); its results must support ``+``.
    plan : PartitionPlan
        Passed to every call of ``fn``.
    split_every : int
        Inputs per node of the reduction tree.
    """
    dask, _ = import_dask()
    plan_d = dask.delayed(plan)  # one key: shipped once, not once per task
    leaves = [dask.delayed(fn)(plan_d, part) for part in ddf.to_delayed()]
    try:
        return tree_reduce(dask, leaves, max(2, int(split_every))).compute()
    except KeyError as err:  # selecting the used columns of a partition without them
        raise DataError(
            f"a partition of the data lacks column(s) {err}: every partition (every "
            f"Parquet file) must hold the columns the model uses ({', '.join(plan.columns)})"
        ) from err


@_returning_memory
def levels_task(plan: PartitionPlan, part: pd.DataFrame) -> Any:
    """Return the levels pass of one partition (:meth:`PartitionPlan.levels_of`)."""
    return plan.levels_of(part)


def keep_columns(cross: CrossProducts, kept: np.ndarray, p_all: int) -> CrossProducts:
    """Return the cross-products with only the kept fixed-effects columns."""
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


# --------------------------------------------------------------------------- quantiles


def exact_quantiles(series: Any, probs: Any, bins: int = 65536) -> np.ndarray:
    """Return exact quantiles of a Dask Series without gathering it.

    The quantiles are those of ``np.quantile``'s linear interpolation. Pass 1
    counts and finds the range, pass 2 builds a histogram of ``bins`` equal
    bins, pass 3 collects only the values in the bins that hold the order
    statistics needed.
    """
    dask, _ = import_dask()
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
    hist = tree_reduce(dask, [dask.delayed(_histogram)(p, edges) for p in parts], 2).compute()
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
