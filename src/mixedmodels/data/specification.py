"""The specification of a model of partitioned data, and the cross-products of its ``[Z X y]``.

Three steps, the specification decided with the in-memory model frame's
functions:

1. **levels pass** (map-reduce): every partition drops its incomplete rows (the
   in-memory rule), checks its predictors' types and reports the distinct
   values of its factor columns (grouping columns, the columns formulas code as
   factors, columns inside ``factor()`` / ``C()``) and its row counts. The
   global levels follow R's order (:mod:`mixedmodels.data.levels`).
2. The specification is built once, by the functions that build the in-memory
   model frame (:func:`~mixedmodels.spec.coding.factor_contrasts`,
   :func:`~mixedmodels.spec.fixed.build_fixed`,
   :func:`~mixedmodels.spec.random.build_term`), on a small pandas *prototype*
   frame holding every level: so every partition gets the same columns, named
   and coded as in memory.
3. **accumulation pass** (map-reduce, :mod:`mixedmodels.data.dask`): the
   cross-products and the QR factor of X, from which the rank test of the
   in-memory path finds the aliased columns.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from mixedmodels.exceptions import (
    DataError,
    MissingDataWarning,
    RankDeficiencyWarning,
)
from mixedmodels.linalg.crossproducts import CrossProducts
from mixedmodels.spec.checks import check_columns, check_unique_columns, used_columns
from mixedmodels.spec.coding import factor_contrasts
from mixedmodels.spec.fixed import FixedEffects, build_fixed, full_rank_columns, warn_rank_deficient
from mixedmodels.spec.formula import ParsedFormula
from mixedmodels.spec.frame import ModelFrame
from mixedmodels.spec.guard import CONSTANTS
from mixedmodels.spec.levels import combine_codes
from mixedmodels.spec.matrix import factor_arguments, factor_calls
from mixedmodels.spec.random import ReTerm, build_term, check_term_size, order_terms
from mixedmodels.spec.response import is_factor_dtype

from .dask import DaskUnsupportedError, Partial, accumulate, keep_columns, levels_task, map_reduce
from .plan import PartitionPlan, TermPlan, combined_codes

__all__ = ["DaskModelFrame", "PartitionedData", "specify_partitioned"]


@dataclass
class DaskModelFrame(ModelFrame):
    """The model frame of a Dask fit: metadata only, no rows.

    ``y`` is empty and ``data`` holds no rows (the used columns' names only);
    the other attributes of :class:`~mixedmodels.spec.frame.ModelFrame` are as
    in memory, the fixed-effects and random-effects matrices without rows.

    Attributes
    ----------
    n : int
        The number of rows used (complete rows).
    source : dask.dataframe.DataFrame
        The Dask DataFrame of the used columns (before dropping incomplete rows).
    plan : PartitionPlan
        What a partition needs to encode its rows.
    nobs : int
        The number of rows used: ``n`` (property).
    """

    n: int = 0
    source: Any = None
    plan: Any = None

    @property
    def nobs(self) -> int:  # type: ignore[override]
        """The number of rows used (``y`` holds none of them)."""
        return self.n


@dataclass
class PartitionedData:
    """What the passes over partitioned data give the fit.

    That is the model frame (no rows) and the sums over the rows.

    Attributes
    ----------
    frame : DaskModelFrame
        The specification: fixed effects (kept columns), terms, levels.
    cross : CrossProducts
        The cross-products of the weighted ``[Z X y]``, kept columns only.
    n_eff : int
        Rows with a positive weight (every row without weights).
    log_weights : float
        The sum of the logarithms of the positive weights (0 without weights).
    """

    frame: DaskModelFrame
    cross: CrossProducts
    n_eff: int
    log_weights: float


Mark = Callable[[str, float], None]  # records that a phase ran from a perf_counter time until now


def specify_partitioned(
    parsed: ParsedFormula,
    ddf: Any,
    weights: str | None,
    offset: str | None,
    contrasts: Mapping[str, str] | None,
    na_action: str,
    split_every: int,
    mark: Mark,
) -> PartitionedData:
    """Return the specification of a model of a Dask DataFrame and the sums over its rows.

    The model is that of ``parsed`` on ``ddf``; two map-reduce passes (see the
    module) find them. ``weights`` and ``offset`` are column names; ``mark(phase, start)``
    records the time of each phase (``levels_pass``, ``encodings``,
    ``accumulate_pass``, ``system``).
    """
    for what, value in (("weights", weights), ("offset", offset)):
        if value is not None and not isinstance(value, str):
            raise DaskUnsupportedError(
                f"with Dask or Parquet data, {what} must be a column name, not an array"
            )
    meta = pd.DataFrame(columns=list(ddf.columns))
    used = {c for c in used_columns(parsed) if c in meta.columns or c not in CONSTANTS}
    check_columns(used, meta, parsed.text)
    check_unique_columns(meta, used)
    for what, col in (("weights", weights), ("offset", offset)):
        if col is not None and col not in ddf.columns:
            raise DataError(f"{what} column {col!r} is not in the data")
    columns = sorted(used | {c for c in (weights, offset) if c})
    dtypes = ddf.dtypes
    source = ddf[columns]
    plan = _partition_plan(parsed, columns, used, dtypes, na_action, weights, offset)

    t0 = time.perf_counter()
    lv = map_reduce(source, levels_task, plan, split_every)
    mark("levels_pass", t0)
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
    plan.factor_levels = {c: lv.levels[c].final() for c in plan.factor_levels}

    t0 = time.perf_counter()
    proto = _prototype(dtypes, columns, plan.factor_levels, plan.ordered)
    codings = factor_contrasts(proto, columns, contrasts)
    with warnings.catch_warnings():  # the prototype's rank is no data's: see the R pass
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        fixed_proto = build_fixed(parsed, proto, codings)
    plan.fixed_spec = fixed_proto.model_spec
    terms, term_plans = _terms(parsed, proto, codings, plan, lv, dtypes)
    stateful = _stateful(fixed_proto.model_spec) + [
        name for term in terms for name in _stateful(term.model_spec)
    ]
    if stateful:
        raise DaskUnsupportedError(
            f"stateful transforms ({', '.join(stateful)}) need statistics of the whole data "
            "and are not supported with Dask or Parquet data: transform the columns first"
        )
    plan.terms = [term_plans[id(t)] for t in terms]
    mark("encodings", t0)

    t0 = time.perf_counter()
    total: Partial = map_reduce(source, accumulate, plan, split_every)
    mark("accumulate_pass", t0)
    if total.n_eff == 0:
        raise DataError("weights are all zero: no observation carries information")

    t0 = time.perf_counter()
    fixed = _fixed_effects(total.R, fixed_proto)
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
    return PartitionedData(
        frame=frame,
        cross=keep_columns(total.cross, fixed.kept, len(fixed.all_names)),
        n_eff=int(total.n_eff) if weights is not None else int(total.n),
        log_weights=float(total.sum_logw),
    )


def _check_factor_calls(texts: list[str], columns: set[str]) -> None:
    """Refuse ``C(expr)`` / ``factor(expr)`` of anything but a column.

    The levels pass collects the levels of columns; the levels of an
    expression such as ``C(x + 1)`` would be known from the sample frame only,
    and partitions with other values would be coded wrongly.
    """
    for text in texts:
        for call, argument in factor_calls(text):
            if argument.strip("`") not in columns:
                raise DaskUnsupportedError(
                    f"{call}: on Dask or Parquet data, C() and factor() take a column "
                    f"name, not the expression {argument!r}; add the column to the data first "
                    "(e.g. ddf.assign(...)) and use factor() of it"
                )


def _partition_plan(
    parsed: ParsedFormula,
    columns: list[str],
    used: set[str],
    dtypes: pd.Series,
    na_action: str,
    weights: str | None,
    offset: str | None,
) -> PartitionPlan:
    """Return the plan of the levels pass: which columns need their levels.

    Those are the grouping columns, the columns formulas code as factors (as
    formulaic does) and the arguments of ``factor(x)`` / ``C(x)``.
    """
    grouping = {g for spec in parsed.random for g in spec.group}
    texts = [parsed.fixed] + [spec.expr for spec in parsed.random]
    _check_factor_calls(texts, set(columns))
    factor_calls = set().union(*(factor_arguments(t) for t in texts)) & set(columns)
    formula_factors = [c for c in columns if c in used and is_factor_dtype(dtypes[c])]
    level_cols = sorted(grouping | set(formula_factors) | factor_calls)
    return PartitionPlan(
        parsed=parsed,
        columns=columns,
        fail_on_na=na_action == "fail",
        factor_levels={c: None for c in level_cols},
        formula_factors=formula_factors,
        ordered={
            c: True
            for c in columns
            if isinstance(dtypes[c], pd.CategoricalDtype) and dtypes[c].ordered
        },
        combos=sorted({tuple(spec.group) for spec in parsed.random if len(spec.group) > 1}),
        weights_col=weights,
        offset_col=offset,
    )


def _terms(
    parsed: ParsedFormula,
    proto: pd.DataFrame,
    codings: dict[str, str],
    plan: PartitionPlan,
    lv: Any,
    dtypes: pd.Series,
) -> tuple[list[ReTerm], dict[int, TermPlan]]:
    """Return the random-effects terms and what a partition needs to find each row's level.

    The terms (in the engine's order) are built by the in-memory
    :func:`build_term` on the prototype and given the data's levels.
    """
    terms, plans = [], {}
    for spec in parsed.random:
        term = build_term(spec, proto, codings, residual=False)
        raw = [plan.factor_levels[g] for g in spec.group]
        if len(spec.group) == 1:
            used_combined, labels = None, [str(v) for v in raw[0]]
        else:
            used_combined, labels = _combined_levels(lv.combos[tuple(spec.group)], spec.group, raw)
        term = dataclasses.replace(
            term,
            codes=np.empty(0, np.int64),
            levels=labels,
            z=np.empty((0, term.k)),  # no rows: column_scales are ones
            group_dtypes=tuple(dtypes[g] for g in spec.group),
        )
        check_term_size(term, lv.nrows)
        plans[id(term)] = TermPlan(tuple(spec.group), term.model_spec, raw, used_combined)
        terms.append(term)
    return order_terms(terms), plans


def _fixed_effects(R: np.ndarray, proto: FixedEffects) -> FixedEffects:
    """Return the fixed effects of the data.

    Its columns are the prototype's; the aliased ones are found from the
    accumulated QR factor ``R`` of the data's X.
    """
    if R.shape[0] < R.shape[1]:
        R = np.vstack([R, np.zeros((R.shape[1] - R.shape[0], R.shape[1]))])
    kept = full_rank_columns(R)
    all_names = proto.all_names
    warn_rank_deficient(all_names, kept, stacklevel=6)
    return FixedEffects(
        X=np.empty((0, len(kept))),
        names=[all_names[i] for i in kept],
        all_names=all_names,
        kept=kept,
        model_spec=proto.model_spec,
    )


def _prototype(
    dtypes: pd.Series, columns: list[str], levels: dict[str, np.ndarray], ordered: dict[str, bool]
) -> pd.DataFrame:
    """Return a small frame that holds every level of every factor column (numbers elsewhere)."""
    size = max([2] + [len(v) for v in levels.values()])
    data = {}
    for col in columns:
        if col in levels and is_factor_dtype(dtypes[col]):
            data[col] = pd.Categorical(
                np.resize(levels[col], size), categories=levels[col], ordered=ordered.get(col, False)
            )
        elif col in levels:  # numbers or logicals grouping or inside factor(x) / C(x): their values
            data[col] = np.resize(levels[col], size)
        else:
            data[col] = np.arange(1.0, size + 1.0)
    return pd.DataFrame(data)


def _stateful(spec: Any) -> list[str]:
    """Return the stateful transforms (``scale()``, ...) of a model-matrix specification."""
    state = getattr(spec, "transform_state", None) or {}
    return sorted(state)


def _combined_levels(
    combos: pd.DataFrame, group: tuple[str, ...], raw: list[np.ndarray]
) -> tuple[np.ndarray, list[str]]:
    """Return the observed combinations of several grouping factors.

    As their sorted combined codes (:func:`combined_codes`) and R's ``a:b``
    levels (labels as :func:`combine_codes` gives them in memory).
    """
    per_col = [
        (pd.Categorical(combos[col].to_numpy(), categories=levels).codes.astype(np.int64), levels)
        for col, levels in zip(group, raw)
    ]
    used = np.unique(combined_codes([(codes, len(levels)) for codes, levels in per_col]))
    _, labels = combine_codes([(codes, [str(v) for v in levels]) for codes, levels in per_col])
    return used, labels
