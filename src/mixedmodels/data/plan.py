"""What one partition of partitioned data does, by a plan decided for the whole data.

A partition finds its complete rows, its factor levels, and its rows of
``[Z X y]`` encoded with the model's specification.

A :class:`PartitionPlan` is small and picklable: it travels once to every
worker of a cluster, which applies it to the partitions it holds. Its rules
are the in-memory model frame's (:mod:`mixedmodels.spec`): the same
missing-value rule, finiteness and type checks, response, offset and the
model-matrix specifications decided once for the whole data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, MixedModelsError
from mixedmodels.spec.checks import check_predictor_kinds
from mixedmodels.spec.coding import r_column_names, spec_factors
from mixedmodels.spec.columns import check_finite, column_missing, complete_rows
from mixedmodels.spec.formula import ParsedFormula
from mixedmodels.spec.frame import nonfinite_rows, numeric_column
from mixedmodels.spec.matrix import R_FUNCTIONS, integers_as_floats
from mixedmodels.spec.response import response_values, total_offset

from .levels import Levels, LevelsResult

__all__ = ["TermPlan", "PartitionPlan", "RowFunction", "combined_codes"]


@dataclass
class TermPlan:
    """How a partition finds the level of every row for one random-effects term."""

    group: tuple[str, ...]
    model_spec: Any
    # single grouping column: its raw levels; several: per-column raw levels and
    # the sorted combined codes that occur
    raw_levels: list[np.ndarray]
    used_combined: np.ndarray | None

    @property
    def nlevels(self) -> int:
        """Number of the term's levels in the whole data (combinations that occur, for several)."""
        return len(self.raw_levels[0]) if self.used_combined is None else len(self.used_combined)


def combined_codes(per_column: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Return one code per row for the combination of several factors' codes.

    The factors' codes are given with their numbers of levels; the first factor
    varies slowest: the order of :func:`mixedmodels.spec.levels.combine_codes`.
    """
    combined = np.zeros(len(per_column[0][0]), dtype=np.int64)
    for codes, nlevels in per_column:
        combined = combined * nlevels + codes
    return combined


@dataclass
class PartitionPlan:
    """Everything a partition needs to build its piece of the model (picklable, small)."""

    parsed: ParsedFormula
    columns: list[str]
    fail_on_na: bool
    factor_levels: dict[str, np.ndarray] = field(default_factory=dict)
    formula_factors: list[str] = field(default_factory=list)  # turned into Categoricals
    ordered: dict[str, bool] = field(default_factory=dict)
    combos: list[tuple[str, ...]] = field(default_factory=list)
    fixed_spec: Any = None
    terms: list[TermPlan] = field(default_factory=list)
    weights_col: str | None = None
    offset_col: str | None = None

    def complete_rows(self, part: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        """Return the used columns of the rows without a missing value, and how many were dropped.

        A missing value is an error with ``na_action='fail'``: the in-memory rule.
        """
        part = part[self.columns]
        missing = {c: column_missing(part[c]) for c in self.columns}
        keep, ndropped = complete_rows(missing, {}, len(part), self.fail_on_na)
        return (part if keep is None else part.loc[keep]), ndropped

    def levels_of(self, part: pd.DataFrame) -> LevelsResult:
        """Return the levels pass of one partition.

        That is its complete rows' count, factor levels and the combinations of
        grouping factors that occur.
        """
        nrows = len(part)
        part, ndropped = self.complete_rows(part)
        check_predictor_kinds(self.parsed, part.dtypes.to_dict(), part.__getitem__)
        levels = {c: Levels.of(part[c]) for c in self.factor_levels}
        combos = {}
        for key in self.combos:
            sub = pd.DataFrame({c: np.asarray(part[c], dtype=object) for c in key})
            combos[key] = sub.drop_duplicates(ignore_index=True)
        return LevelsResult(nrows - ndropped, ndropped, levels, combos)

    def model_frame(self, part: pd.DataFrame) -> pd.DataFrame:
        """Return a partition's model frame: factor columns as Categoricals with the global levels.

        ``part`` holds the used columns of the complete rows (:meth:`complete_rows`);
        it is copied, not changed.
        """
        frame = part.copy()
        for col in self.formula_factors:
            frame[col] = pd.Categorical(
                frame[col], categories=self.factor_levels[col], ordered=self.ordered.get(col, False)
            )
        return frame

    def codes(self, frame: pd.DataFrame, part: pd.DataFrame, tp: TermPlan) -> np.ndarray:
        """Return the level of every row for term ``tp``, among the global levels."""
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
            codes = np.searchsorted(tp.used_combined, combined_codes(per_col)).astype(np.int64)
        if len(codes) and codes.min() < 0:  # cannot happen: levels are global
            raise DataError(f"grouping values of {':'.join(tp.group)} missing from the levels pass")
        return codes

    def encode(self, part: pd.DataFrame) -> dict[str, Any]:
        """Return the rows of one partition as the engine sees them."""
        part, ndropped = self.complete_rows(part)
        check_finite(part, self.columns)
        frame = self.model_frame(part)
        y = response_values(self.parsed, frame)
        w = numeric_column(frame, self.weights_col, "weights")
        if w is not None:
            bad = ~np.isfinite(w) | (w < 0)
            if bad.any():
                raise DataError(
                    f"weights column {self.weights_col!r} must be finite and non-negative: "
                    f"{int(bad.sum())} bad value(s)"
                )
        given = numeric_column(frame, self.offset_col, "offset")
        if given is not None and not np.all(np.isfinite(given)):
            raise DataError(f"offset column {self.offset_col!r} holds infinite values (+-Inf)")
        off = total_offset(self.parsed, frame, given) if len(frame) else None
        X = partition_matrix(self.fixed_spec, frame, "fixed-effects")
        terms = []
        for tp in self.terms:
            z = partition_matrix(tp.model_spec, frame, "random-effects")
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
        """Check that what the formula evaluated is finite.

        An infinite value is an error naming its term (``design.nonfinite_rows``),
        and so is a NaN one, as the rows of partitions are counted before they
        are evaluated.
        """
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


def partition_matrix(spec: Any, frame: pd.DataFrame, what: str) -> np.ndarray:
    """Return the model matrix of one partition's rows.

    The specification is the one decided for the whole data, so its columns are
    the same in every partition.
    """
    frame = integers_as_floats(frame, spec_factors(spec))
    try:
        mm = spec.get_model_matrix(frame, na_action="ignore", context=R_FUNCTIONS)
    except MixedModelsError:
        raise
    except Exception as err:
        raise DataError(f"cannot build the {what} matrix of a partition: {err}") from err
    return np.ascontiguousarray(np.asarray(mm, dtype=float))


@dataclass
class RowFunction:
    """Fitted values / residuals of one partition (picklable, small)."""

    plan: PartitionPlan
    beta: np.ndarray
    kept: np.ndarray
    b: list[np.ndarray] | None
    kind: str
    name: str

    def __call__(self, part: pd.DataFrame) -> pd.Series:
        """Return the fitted values or residuals of ``part``'s complete rows, on its index.

        ``kind`` is ``"fitted"`` (the linear predictor, offset included),
        ``"residuals"`` (response minus it) or ``"pearson"`` (those residuals
        times the square roots of the prior weights). ``b`` None leaves the
        random effects out of the linear predictor.
        """
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
