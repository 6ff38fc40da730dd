"""The levels pass over partitioned data: the levels of every factor column, in R's order.

The pass finds the distinct values of every factor column, merged across
partitions into the levels in R's order.

Every partition reports what it holds (:meth:`Levels.of`); the reports are
summed with ``+`` in the map-reduce tree, and :meth:`Levels.final` orders the
union as R's ``factor()`` does: a categorical's category order, otherwise the
sorted values (numbers numerically), unused levels dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError

__all__ = ["Levels", "LevelsResult", "check_same_kind"]


@dataclass
class Levels:
    """Distinct values of a factor column, mergeable across partitions.

    For categoricals ``order`` is the union of category lists (first seen first)
    and ``values`` the observed categories; otherwise ``values`` are sorted uniques.
    """

    categorical: bool
    values: np.ndarray
    order: list = field(default_factory=list)

    @classmethod
    def of(cls, s: pd.Series) -> "Levels":
        """Return the levels one partition's column holds."""
        if isinstance(s.dtype, pd.CategoricalDtype):
            observed = s.cat.remove_unused_categories().cat.categories
            return cls(True, np.asarray(observed, dtype=object), list(s.cat.categories))
        return cls(False, pd.unique(s.to_numpy()))

    def __add__(self, other: "Levels") -> "Levels":
        if self.categorical and other.categorical:
            order = self.order if self.order == other.order else _union(self.order, other.order)
            return Levels(True, _unique_object(self.values, other.values), order)
        a, b = self._plain(), other._plain()
        return Levels(False, pd.unique(np.concatenate([a, b])))

    def _plain(self) -> np.ndarray:
        return self.values if not self.categorical else np.asarray(self.values)

    def final(self) -> np.ndarray:
        """Return the levels in R's order."""
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
class LevelsResult:
    """What the levels pass returns per partition (and, summed, for the data)."""

    nrows: int
    ndropped: int
    levels: dict[str, Levels]
    combos: dict[tuple[str, ...], pd.DataFrame]

    def __add__(self, other: "LevelsResult") -> "LevelsResult":
        for k in self.levels:
            check_same_kind(k, self.levels[k], other.levels[k])
        levels = {k: self.levels[k] + other.levels[k] for k in self.levels}
        combos = {
            k: pd.concat([self.combos[k], other.combos[k]], ignore_index=True).drop_duplicates(
                ignore_index=True
            )
            for k in self.combos
        }
        return LevelsResult(self.nrows + other.nrows, self.ndropped + other.ndropped, levels, combos)


def check_same_kind(name: str, a: Levels, b: Levels) -> None:
    """Check that a factor column holds numbers in every partition or text in every one.

    Its levels could not be ordered, nor new values matched, otherwise. An
    empty side is not checked.
    """
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
