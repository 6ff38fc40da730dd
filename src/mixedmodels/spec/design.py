"""Model frames and design matrices: the fixed-effects matrix and one object per
random-effects term.

The flow is ``formula`` (parse) -> ``design`` (this module: columns checked, NA rows
dropped, matrices built) -> ``linalg`` (the blocked Cholesky) -> model classes.
"""

from __future__ import annotations

import ast
import functools
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from mixedmodels.exceptions import (
    DataError,
    FormulaError,
    MissingDataWarning,
    MixedModelsError,
    ModelSpecError,
    PredictionError,
    RankDeficiencyWarning,
)
from mixedmodels.spec.formula import (
    ParsedFormula,
    RandomTermSpec,
    _Scan,
    check_formula_side,
    variables_in,
)
from mixedmodels.spec.guard import CONSTANTS, check_evaluated_terms, check_expression
from mixedmodels.support.threads import blas_threads, thin_product_threads

__all__ = [
    "ReTerm",
    "FixedEffects",
    "ModelFrame",
    "build_model_frame",
    "r_column_names",
    "to_pandas",
]

# Relative tolerance of the rank test of X (lme4: rankMatrix(tol = 1e-7)).
RANK_TOL = 1e-7


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


CONTRASTS = ("contr.treatment", "contr.sum", "contr.helmert", "contr.poly")


def r_column_names(names: Sequence[str], model_spec: Any = None) -> list[str]:
    """Translate formulaic column names into R's: the term label as written,
    then the level suffix.

    ``Intercept`` -> ``(Intercept)``; treatment coding ``f[T.b]`` -> ``fb``;
    full dummy coding ``f[b]`` -> ``fb``; the contrasts this package adds,
    ``C(f, contr.sum)[S.a]`` -> ``f1`` (R numbers sum and Helmert columns) and
    ``C(f, contr.poly)[.L]`` -> ``f.L`` (``[^4]`` -> ``f^4``); R's ``factor(x)``
    (rewritten as ``C(x, levels=None)``) -> ``factor(x)1``; a
    ``C(f)`` the user wrote keeps its label: ``C(f)b``.
    """
    levels = _factor_levels(model_spec) if model_spec is not None else {}
    pattern = re.compile(
        r"(?P<call>C\((?P<cvar>[^,()]+)(?P<args>,[^()]*)?\))(?=\[)|(?P<var>[^\[\]:]+)(?=\[)"
    )
    level_part = re.compile(r"\[(?P<lvl>[^\]]*)\]")

    def label_of(match: re.Match) -> tuple[str, str]:
        if match.group("var"):
            var = match.group("var").strip()
            return var, var
        var, args = match.group("cvar").strip(), match.group("args") or ""
        if "levels=None" in args:  # our rewrite of R's factor(x)
            return var, f"factor({var})"
        if "contr." in args:
            return var, var
        return var, match.group("call")

    def suffix(var: str, lvl: str) -> str:
        known = [str(v) for v in levels.get(var, [])]
        if lvl.startswith("T."):
            return lvl[2:]
        if lvl.startswith("S.") and lvl[2:] in known:
            return str(known.index(lvl[2:]) + 1)
        if lvl.startswith("H.") and lvl[2:] in known:
            return str(known.index(lvl[2:]))
        return lvl

    def translate(part: str) -> str:
        match = pattern.match(part)
        rest = part[match.end():] if match else ""
        lvl = level_part.match(rest) if match else None
        if not (match and lvl):
            return part
        var, label = label_of(match)
        return label + suffix(var, lvl.group("lvl")) + rest[lvl.end():]

    return [
        "(Intercept)" if n == "Intercept" else _r_power(":".join(translate(p) for p in _split_colon(n)))
        for n in names
    ]


def _r_power(name: str) -> str:
    """R's deparsed power: the formula parser hands R's ``x^2`` on as Python's
    ``x ** 2`` (formulaic would read ``^`` as exclusive or); R prints ``x^2``."""
    return name.replace(" ** ", "^")


def _split_colon(name: str) -> list[str]:
    """Split an interaction column name at the colons outside brackets and parentheses."""
    parts, depth, current = [], 0, ""
    for ch in name:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


@functools.lru_cache(maxsize=1024)
def rewrite_factor_calls(expr: str) -> str:
    """R's ``factor(x)`` as formulaic's ``C(x, levels=None)``: the same coding;
    the (default) ``levels=None`` marks it for :func:`r_column_names`."""
    return re.sub(r"(?<![\w.])factor\(\s*([^\W\d][\w.]*)\s*\)", r"C(\1, levels=None)", expr)


def factor_contrasts(
    frame: pd.DataFrame | ArrayColumns, columns: Sequence[str], user: Mapping[str, str] | None
) -> dict[str, str]:
    """Contrast of every factor that needs a non-default one: the user's, and
    R's ``contr.poly`` for ordered factors."""
    dtypes = {c: _dtype_of(frame, c) for c in columns}
    out = {
        c: "contr.poly"
        for c, dtype in dtypes.items()
        if isinstance(dtype, pd.CategoricalDtype) and dtype.ordered
    }
    for col, kind in (user or {}).items():
        if kind not in CONTRASTS:
            raise DataError(f"contrast {kind!r} for column {col!r} is not one of {list(CONTRASTS)}")
        if col not in frame.columns:
            raise DataError(f"contrasts name column {col!r}, which is not used by the model")
        out[col] = kind
    return out


def with_contrasts(expr: str, contrasts: Mapping[str, str]) -> str:
    """Wrap bare factor names of a formula side as ``C(f, contr.X)`` for formulaic."""
    for col, kind in contrasts.items():
        if not re.fullmatch(r"[^\W\d][\w.]*", col):
            continue
        expr = re.sub(rf"(?<![\w.`])(?<!C\(){re.escape(col)}(?![\w.`(])", f"C({col}, {kind})", expr)
    return expr


# --------------------------------------------------------------------------- grouping


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
    """The interaction of factors given as (codes, levels): see :func:`interaction_codes`."""
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
    """What a factor's fitted levels are: the numeric dtype of number levels
    (a categorical's categories count), ``None`` for text (strings, booleans
    and anything else)."""
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        return None
    return np.dtype(getattr(dtype, "numpy_dtype", dtype))


def level_labels(values: pd.Series, kind: np.dtype | None) -> np.ndarray:
    """The labels new ``values`` get as levels of a factor whose fitted levels
    are of ``kind`` (:func:`level_kind`): the text the fit gave each level
    (``str`` of the level), ``None`` where a value is missing. A value that
    cannot be such a level keeps its own text (an unseen level)."""
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
    """A value as a text level: numbers as R writes them (whole numbers without
    a decimal point), anything else as ``str`` gives it."""
    if _is_number(value) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _number_label(kind: np.dtype, value: Any) -> str:
    """A value as a level of a factor of numbers of dtype ``kind``: the text
    of that number as the fit labels it; text is read as a number first."""
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
    """Position of every new value among a factor's fitted ``levels`` by the
    rule above (-1 where missing or unseen), and the mask of the unseen ones.

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
    """Codes of new ``values`` of a fixed factor among its fitted ``levels``
    (-1 where missing); a value that is no level is a :class:`PredictionError`
    naming the column, the values, their type and the fitted levels."""
    kind = level_kind(pd.Index(levels).dtype)
    codes, unseen = match_levels(values, levels, kind)
    if unseen.any():
        raise unseen_levels_error(name or values.name, values, unseen, levels)
    return codes


def unseen_levels_error(
    name: Any, values: pd.Series, unseen: np.ndarray, levels: Sequence[Any]
) -> PredictionError:
    """The error for new values of factor column ``name`` that match none of its
    fitted ``levels``."""
    bad = sorted({str(v) for v in np.asarray(values, dtype=object)[unseen]})
    shown = [str(v) for v in levels[:20]] + (["..."] if len(levels) > 20 else [])
    return PredictionError(
        f"newdata column {name!r} (dtype {values.dtype}) has level(s) {bad} not seen in the "
        f"fit; the fitted levels ({pd.Index(levels).dtype}) are {shown}"
    )


# --------------------------------------------------------------------------- terms


@functools.cache
def _lower_triangle(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a k x k lower triangle, column by column (lme4's θ order)."""
    cols, rows = np.triu_indices(k)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    for arr in (rows, cols):
        arr.setflags(write=False)
    return rows, cols


# Columns of a model matrix whose root mean square lies in this range are
# searched as they are (lme4's parametrisation, and its singularity rule);
# others at unit root mean square (see search_scales).
MODERATE_COLUMN_SCALE = (0.1, 10.0)


def search_scales(matrix: np.ndarray) -> np.ndarray:
    """Per column, its root mean square where that lies outside
    ``MODERATE_COLUMN_SCALE``, else 1 (read-only): the factor by which
    searches and finite differences divide a column so that their steps and
    rules do not depend on the units of a covariate. Columns in moderate
    units keep lme4's own scale (and its numbers); the others are all
    brought to unit root mean square, so a fit is the same whatever their units."""
    low, high = MODERATE_COLUMN_SCALE
    scales = np.ones(matrix.shape[1])
    if matrix.shape[0] > 0:
        rms = np.sqrt(np.einsum("nk,nk->k", matrix, matrix) / matrix.shape[0])
        if not low <= rms.min(initial=1.0) <= rms.max(initial=1.0) <= high:
            usable = np.isfinite(rms) & (rms > 0)
            scales = np.where(usable & ((rms < low) | (rms > high)), rms, 1.0)
    scales.setflags(write=False)
    return scales


@dataclass
class ReTerm:
    """One random-effects term ``(expr | group)``.

    Attributes
    ----------
    spec : RandomTermSpec
        The parsed term.
    codes : ndarray of int, shape (n,)
        Level index of every observation.
    levels : list of str
        Level labels of the grouping factor, in R's order.
    z : ndarray, shape (n, k)
        The term's model matrix (unweighted).
    cnames : list of str
        Column names of ``z`` in R's spelling.
    model_spec : formulaic ModelSpec
        Re-applies the term's left side to new data.
    group_dtypes : tuple
        The dtype of every grouping column: their :func:`level_kind` tells
        how new data are matched to the levels (empty: as text levels).
    """

    spec: RandomTermSpec
    codes: np.ndarray
    levels: list[str]
    z: np.ndarray
    cnames: list[str]
    model_spec: Any = field(repr=False)
    group_dtypes: tuple = ()

    def level_positions(self, newdata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Where each row of ``newdata`` falls among the levels (-1: unseen or
        missing, see :func:`match_levels`) and each row's level label
        (``"NA"`` where missing)."""
        kinds = [level_kind(d) for d in self.group_dtypes] or [None] * len(self.spec.group)
        parts = [level_labels(newdata[g], k) for g, k in zip(self.spec.group, kinds)]
        if len(parts) == 1:
            labels = parts[0]
        else:
            labels = np.array(
                [None if None in row else ":".join(row) for row in zip(*parts)], dtype=object
            )
        positions = pd.Index(self.levels).get_indexer(labels)
        return positions, np.where(pd.isna(labels), "NA", labels)

    @property
    def name(self) -> str:
        return self.spec.group_name

    @property
    def k(self) -> int:
        return self.z.shape[1]

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @property
    def nranef(self) -> int:
        return self.k * self.nlevels

    @property
    def ntheta(self) -> int:
        return self.k * (self.k + 1) // 2

    def theta_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of each θ element in λ: lme4's column-wise lower triangle."""
        return _lower_triangle(self.k)

    def theta_lower(self) -> np.ndarray:
        rows, cols = self.theta_rows_cols()
        return np.where(rows == cols, 0.0, -np.inf)

    def theta_start(self) -> np.ndarray:
        """lme4's start λ = I, for the unit-scale columns (see ``theta_scale``)."""
        rows, cols = self.theta_rows_cols()
        return np.where(rows == cols, 1.0, 0.0) / self.theta_scale()

    @functools.cached_property
    def column_scales(self) -> np.ndarray:
        """Per column of ``z``, the factor by which the searches divide it
        (see ``search_scales``).

        Multiplying a column of ``z`` by c divides row r of λ, hence the θ
        elements in it, by c: the same model in other units. Searches,
        boundary snapping and the singularity rule run on θ for the scaled
        columns (see ``theta_scale``), so they give the same fit whatever the
        units of a covariate outside the moderate range.
        """
        return search_scales(self.z)  # ones for a Dask term (no rows here)

    def theta_scale(self) -> np.ndarray:
        """Per θ element, the factor giving θ in unit-scale columns: θ ×
        ``theta_scale()`` is θ for ``z / column_scales`` (row r of λ times
        the scale of column r)."""
        rows, _ = self.theta_rows_cols()
        return self.column_scales[rows]

    def lam(self, theta: np.ndarray) -> np.ndarray:
        """The k x k lower-triangular relative covariance factor λ for this θ slice."""
        rows, cols = self.theta_rows_cols()
        out = np.zeros((self.k, self.k))
        out[rows, cols] = theta
        return out

    def theta_names(self) -> list[str]:
        """lme4's names of θ, e.g. ``Subject.(Intercept)``, ``Subject.Days.(Intercept)``."""
        rows, cols = self.theta_rows_cols()
        names = []
        for i, j in zip(rows, cols):
            if i == j:
                names.append(f"{self.name}.{self.cnames[i]}")
            else:
                names.append(f"{self.name}.{self.cnames[i]}.{self.cnames[j]}")
        return names


class FixedEffects:
    """The fixed-effects model matrix after rank-deficiency checks.

    Attributes
    ----------
    X : ndarray, shape (n, p)
        The full-rank matrix actually fitted. With ``cells`` it is built on
        first use.
    names : list of str
        R-style names of the kept columns.
    all_names : list of str
        Names of every column the formula produced; dropped ones show as NaN.
    kept : ndarray of int
        Positions of ``names`` within ``all_names``.
    model_spec : formulaic ModelSpec
        Re-applies the fixed part (stateful transforms included) to new data.
    gram : ndarray or None
        X'X when the rank check computed it (None otherwise).
    cells : (ndarray, ndarray) or None
        For a matrix of factors only (their treatment dummies and
        interactions): each row's cell, the combination of its levels, and the
        matrix's row for every cell, so that X = E[cell]. Products with X are
        then sums over far fewer cells than rows (``linalg.term_times_cells``).
    """

    def __init__(
        self,
        X: np.ndarray | None,
        names: list[str],
        all_names: list[str],
        kept: np.ndarray,
        model_spec: Any,
        gram: np.ndarray | None = None,
        cells: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        if X is None and cells is None:
            raise ValueError("FixedEffects needs X or its cells")
        self._X = X
        self.names = names
        self.all_names = all_names
        self.kept = kept
        self.model_spec = model_spec
        self.gram = gram
        self.cells = cells

    @property
    def X(self) -> np.ndarray:
        if self._X is None:
            cell, E = self.cells
            self._X = E[cell]
        return self._X

    @X.setter
    def X(self, value: np.ndarray) -> None:
        self._X = value
        self.cells = None

    @property
    def p(self) -> int:
        """The number of columns of X (without building it)."""
        return self.cells[1].shape[1] if self._X is None else self._X.shape[1]

    def dot(self, beta: np.ndarray) -> np.ndarray:
        """X β, from the cells when X is kept as them (X is not built)."""
        if self._X is None:
            cell, E = self.cells
            return (E @ beta)[cell]
        return self._X @ beta

    def __repr__(self) -> str:
        return f"FixedEffects(names={self.names!r})"


def full_rank_columns(X: np.ndarray, tol: float = RANK_TOL) -> np.ndarray:
    """Positions of a maximal set of linearly independent columns, earliest first.

    Mirrors R's ``qr()`` with limited pivoting: a column is dropped only if it is
    (numerically) a combination of the columns kept before it.
    """
    return _rank_and_gram(X, tol)[0]


def _rank_and_gram(X: np.ndarray, tol: float = RANK_TOL) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`full_rank_columns`, and X'X when the check computed it (every
    column kept: the engine's cross-products take it instead of recomputing)."""
    if X.shape[1] == 0:
        return np.arange(0), None
    quick = _few_columns_rank(X, tol)
    if quick is not None:
        return quick, None
    quick, gram = _well_conditioned_rank(X)
    if quick is not None:
        return quick, gram
    R = np.linalg.qr(X, mode="r")
    norms = np.linalg.norm(R, axis=0)
    kept: list[int] = []
    for j in range(R.shape[1]):
        col = R[:, j]
        if kept:
            basis = R[:, kept]
            coef, *_ = np.linalg.lstsq(basis, col, rcond=None)
            resid = col - basis @ coef
        else:
            resid = col
        if norms[j] > 0 and np.linalg.norm(resid) > tol * norms[j]:
            kept.append(j)
    return np.asarray(kept, dtype=np.int64), None


# Squared column norms in this range: no under- or overflow on the way.
_SAFE_SQUARES = (1e-200, 1e200)


def _few_columns_rank(X: np.ndarray, tol: float) -> np.ndarray | None:
    """:func:`full_rank_columns` of one or two non-zero columns without a QR
    (most small models: an intercept and at most one covariate), or ``None``
    where the QR must decide.

    In exact arithmetic the test there compares the distance of the second
    column from the first's span with ``tol`` times its norm, and neither
    changes under the QR's rotation; computed here and there, they differ by
    rounding of order ``n * eps`` of the norm, so a test closer to its threshold
    than a wide bound on that is left to the QR.
    """
    n, p = X.shape
    if p > 2:
        return None
    with np.errstate(all="ignore"):  # extreme scales fail the range test: QR
        squares = [float(X[:, j] @ X[:, j]) for j in range(p)]
    if not all(_SAFE_SQUARES[0] < sq < _SAFE_SQUARES[1] for sq in squares):
        return None
    if p == 1:  # R is the 1 x 1 (+-|x|): kept, as x is not zero
        return np.zeros(1, dtype=np.int64)
    x0, x1 = X[:, 0], X[:, 1]
    norm1 = float(np.sqrt(squares[1]))
    resid = float(np.linalg.norm(x1 - (x0 @ x1) / squares[0] * x0))
    margin = (1e-10 + 100 * n * np.finfo(float).eps) * norm1
    if abs(resid - tol * norm1) <= margin:
        return None
    return np.arange(2 if resid > tol * norm1 else 1, dtype=np.int64)


# The Gram test below certifies full rank when every column keeps at least this
# fraction of its norm away from the span of the columns before it.
_GRAM_MIN_RATIO = 1e-3


def _well_conditioned_rank(X: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """All columns and X'X, when X'X shows them clearly independent; else ``None``s.

    The diagonal of the Cholesky factor of X'X scaled to unit diagonal is, for
    each column, its distance from the span of the columns before it relative to
    its norm: the quantity the QR test compares with ``tol``. From the Gram
    matrix it carries rounding of order eps x the condition number, so it only
    decides when every ratio is far above ``tol`` (at least 1e-3); near-collinear
    or dependent columns are left to the QR. For long X this costs one X'X
    instead of a QR of X.
    """
    n, p = X.shape
    if n < 4 * p:  # short: the QR is as cheap
        return None, None
    with np.errstate(all="ignore"), blas_threads(thin_product_threads(p, n)):
        G = X.T @ X
    return _gram_rank(G)


def _gram_rank(G: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """All columns and ``G`` when the Gram matrix X'X shows the columns clearly
    independent (see ``_well_conditioned_rank``); else ``None``s."""
    p = G.shape[0]
    with np.errstate(all="ignore"):
        d = np.sqrt(np.diagonal(G))
        if not (np.all(np.isfinite(G)) and np.all(d > 0)):
            return None, None
        try:
            L = np.linalg.cholesky(G / np.outer(d, d))
        except np.linalg.LinAlgError:
            return None, None
    if not np.all(np.diagonal(L) >= _GRAM_MIN_RATIO):
        return None, None
    return np.arange(p, dtype=np.int64), G


# --------------------------------------------------------------------------- frame


@dataclass
class ModelFrame:
    """Everything the engine needs, built from a parsed formula and data."""

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
    """A dataclass field that accepts a :class:`Deferred` and computes it on first
    access: ``ModelFrame.data`` is seldom read (fitted values take its index) and
    building that frame costs more than the rest of a small model's frame."""

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
    """Weights / offset given as a column name or as an array aligned with data."""
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


def _check_columns(names: set[str], data: pd.DataFrame, formula: str) -> None:
    missing = sorted(n for n in names if n not in data.columns)
    if missing:
        col = missing[0]
        pos = _find_name(formula, col)
        close = _close_matches(col, data.columns)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise FormulaError(
            f"column {col!r} named in the formula is not in the data{hint}",
            formula=formula,
            position=pos,
        )


def _find_name(formula: str, name: str) -> int | None:
    match = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", formula)
    return match.start() if match else None


def _close_matches(name: str, columns: Sequence[Any]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, [str(c) for c in columns], n=1)
    return found[0] if found else None


def _column_missing(values: pd.Series) -> np.ndarray:
    """Missing-value mask of one column, without building a DataFrame."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.array.codes < 0  # .array: .cat.codes builds a Series
    arr = values.to_numpy()
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind in "iub":
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(pd.isna(values), dtype=bool)


def _drop_missing(
    data: pd.DataFrame, used: list[str], extra: dict[str, np.ndarray], fail: bool = False
) -> tuple[pd.DataFrame, dict[str, np.ndarray], int, np.ndarray]:
    """The used columns of the rows without a missing value (R's na.omit) and
    their positions in ``data``, or an error naming the columns (na.fail)."""
    # take() by position: a list __getitem__ costs several times more in pandas
    frame = data.take([data.columns.get_loc(c) for c in used], axis=1)
    missing = {c: _column_missing(frame[c]) for c in used}
    keep, n_dropped = _complete_rows(missing, extra, len(data), fail)
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


def _complete_rows(
    missing: dict[str, np.ndarray], extra: dict[str, np.ndarray], n: int, fail: bool
) -> tuple[np.ndarray | None, int]:
    """Mask of the rows without a missing value (``None`` if that is all of them)
    and the number of the others; with ``fail``, an error naming the columns."""
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


def _check_finite(data: pd.DataFrame, used: list[str]) -> None:
    for col in used:
        values = data[col]
        if values.dtype.kind != "f":
            continue
        arr = values.to_numpy()
        if np.isinf(arr).any():
            raise DataError(f"column {col!r} holds infinite values (+-Inf)")


def _tidy_categoricals(frame: pd.DataFrame, used: list[str]) -> pd.DataFrame:
    """The frame with unused categorical levels removed (a new frame only if some are)."""
    for col in used:
        values = frame[col]
        if not isinstance(values.dtype, pd.CategoricalDtype):
            continue
        codes = values.cat.codes.to_numpy()
        if np.bincount(codes, minlength=len(values.cat.categories)).min() == 0:
            frame = frame.assign(**{col: values.cat.remove_unused_categories()})
    return frame


def _copy_on_write() -> bool:
    """Whether pandas copies shared data on write (always from pandas 3): only
    then may the frame of ``ModelFrame.data`` be built after the call returns."""
    return _PANDAS_MAJOR >= 3 or pd.get_option("mode.copy_on_write") is True


_PANDAS_MAJOR = int(pd.__version__.split(".")[0])

# The used columns of an ordinary frame are read once into numpy arrays
# (:class:`ArrayColumns`); False sends every model through pandas frames and the
# model-matrix code alone (the reference the tests compare with).
FAST_PATH = True


def _plain_numeric(dtype: Any) -> bool:
    """A numpy int, unsigned or float dtype: its values need no pandas to read."""
    return isinstance(dtype, np.dtype) and dtype.kind in "iuf"


def _numeric_not_bool(values: Any) -> bool:
    """Whether a Series or dtype is numeric and not boolean (a model-matrix column)."""
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
        """The columns ``names`` of ``data``, or ``None`` for a frame with a
        repeated column name (left to the general path and its errors)."""
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
        """:func:`_drop_missing`: keep the complete rows only (R's na.omit), or
        an error naming the columns (na.fail)."""
        missing = {c: _column_missing(s) for c, s in self._series.items()}
        self.keep, n_dropped = _complete_rows(missing, extra, len(self._data), fail)
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
        return len(self._data) if self.keep is None else int(np.count_nonzero(self.keep))

    def row_label(self, i: int) -> Any:
        """Index label of the ``i``-th complete row."""
        if self.keep is not None:
            i = int(np.flatnonzero(self.keep)[i])
        return self._data.index[i]

    def series(self, name: str) -> pd.Series:
        """Column ``name`` of the complete rows as a pandas Series."""
        s = self._series[name]
        return s if self.keep is None else s[self.keep]

    def values(self, name: str) -> np.ndarray:
        """Values of column ``name`` in the complete rows (a numpy-backed column)."""
        if name not in self._values:
            arr = self._series[name].to_numpy()
            self._values[name] = arr if self.keep is None else arr[self.keep]
        return self._values[name]

    def floats(self, name: str) -> np.ndarray:
        """A plain numeric column as a new float array (never the caller's memory)."""
        return np.array(self.values(name), dtype=float)

    def check_finite(self) -> None:
        """:func:`_check_finite` without a frame."""
        for col in self.columns:
            dtype = self.dtypes[col]
            if dtype.kind != "f":
                continue
            arr = self.values(col) if isinstance(dtype, np.dtype) else self.series(col).to_numpy()
            if np.isinf(arr).any():
                raise DataError(f"column {col!r} holds infinite values (+-Inf)")

    def factor(self, group: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Codes and levels of a grouping factor (:func:`factor_codes`,
        :func:`interaction_codes`) from the arrays."""
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
        """The used columns of the complete rows as a DataFrame, built once."""
        if self._frame is None:
            data = self._data
            frame = data.take([data.columns.get_loc(c) for c in self.columns], axis=1)
            if self.keep is not None:
                frame = frame.loc[self.keep]
            self._frame = _tidy_categoricals(frame, self.columns)
        return self._frame

    def deferred_frame(self) -> pd.DataFrame | Deferred:
        """:meth:`frame`, or a promise of it if it has not been needed yet."""
        return self._frame if self._frame is not None else Deferred(self.frame)


class Deferred:
    """A value computed on first use (see :class:`ModelFrame`)."""

    def __init__(self, make: Any):
        self.make = make


def _dtype_of(data: pd.DataFrame | ArrayColumns, col: str) -> Any:
    """The dtype of a used column, read from a frame or from the arrays."""
    return data.dtypes[col] if isinstance(data, ArrayColumns) else data[col].dtype


# R's arithmetic functions that formulaic does not know by these names.
R_FUNCTIONS = {
    "sqrt": np.sqrt,
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "exp": np.exp,
    "expm1": np.expm1,
    "abs": np.abs,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "pi": np.pi,
    "np": np,
}


@dataclass
class DesignMatrix:
    """A model matrix with its column names and the spec that rebuilds it on new data."""

    values: np.ndarray
    columns: list[str]
    model_spec: Any = field(repr=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype, copy=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


class SimpleSpec:
    """Model matrix of an optional intercept, plain numeric columns and, with
    an intercept, unordered factors in treatment coding (first level the
    reference, one column per other level).

    The common random-effects sides (``1``, ``Days``, ``0 + x``) and simple fixed
    parts (``1 + period``, ``service + x``) need no formula machinery; building
    them directly keeps the per-fit overhead of small models low (formulaic
    spends ~6 ms on one factor). The columns, their names, the encoder state of
    the factors and the matrix on new data are formulaic's; anything else goes
    through formulaic.

    Parameters
    ----------
    intercept : bool
    variables : list of str
        In formula order.
    levels : dict, optional
        The factors among ``variables`` and their levels (the fitted values,
        as formulaic's encoder keeps them).
    interactions : list of (str, str), optional
        Two-way interaction terms, as written (their factors are among the
        main effects: then formulaic codes them by treatment contrasts too).
    """

    def __init__(
        self,
        intercept: bool,
        variables: list[str],
        levels: dict[str, list] | None = None,
        interactions: list[tuple[str, str]] | None = None,
    ):
        self.intercept = intercept
        self.variables = variables
        self.levels = dict(levels or {})
        self.interactions = list(interactions or [])
        self.column_names = (["Intercept"] if intercept else []) + [
            c for term in self.terms() for c in self._columns_of(term)
        ]

    def terms(self) -> list[tuple[str, ...]]:
        """The terms after the intercept, formulaic's order: main effects,
        then the two-way interactions."""
        return [(v,) for v in self.variables] + [tuple(p) for p in self.interactions]

    def _columns_of(self, term: tuple[str, ...]) -> list[str]:
        """formulaic's column names of a term: a factor's treatment columns
        ``f[T.b]``; in an interaction the first variable's columns vary
        fastest (``a[T.y]:b[T.q]``, ``a[T.z]:b[T.q]``, ...)."""
        return self._compose(term, lambda var, level: f"{var}[T.{level}]")

    def _compose(self, term: tuple[str, ...], level_name) -> list[str]:
        """Names of a term's columns: a number's own name, a factor's
        ``level_name(var, level)`` for each level after the first, joined by
        ``:`` with the first variable varying fastest."""
        names = [""]
        for var in term:
            if var in self.levels:
                own = [level_name(var, level) for level in self.levels[var][1:]]
            else:
                own = [var]
            names = [f"{n}:{o}" if n else o for o in own for n in names]
        return names

    def widths(self) -> list[int]:
        """Number of columns of each term (see :meth:`terms`), in order."""
        return [len(self._columns_of(term)) for term in self.terms()]

    @property
    def encoder_state(self) -> dict:
        """The factors' levels in formulaic's layout (see ``_factor_levels``)."""
        return {name: ("CATEGORICAL", {"categories": list(lv)}) for name, lv in self.levels.items()}

    @classmethod
    def parse(cls, rhs: str, data: pd.DataFrame | ArrayColumns) -> SimpleSpec | None:
        """The spec of ``rhs`` if it is that simple, else ``None``.

        ``data`` is the frame of the complete rows, or their arrays.
        """
        shape = _simple_shape(rhs)
        if shape is None:
            return None
        intercept, variables, pairs = shape
        levels = {}
        for name in variables:
            if name not in data.columns:
                return None
            if isinstance(data, ArrayColumns):  # read as arrays: plain numpy numbers only
                if name in data.plain:
                    continue
                values = data.series(name)
            elif _numeric_not_bool(data[name]):
                continue
            else:
                values = data[name]
            found = _treatment_levels(values) if intercept else None
            if found is None:
                return None
            levels[name] = found
        for pair in pairs:
            others = [v for v in pair if v not in variables]
            if any(not _is_plain_number(data, v) for v in others):
                return None  # a factor only in an interaction: formulaic codes it fully
            if others and any(v in levels for v in pair):
                return None  # f:x without x: f coded fully too
        return cls(intercept, list(variables), levels, list(pairs))

    def get_model_matrix(
        self, data: pd.DataFrame, na_action: str = "raise", context: Any = None
    ) -> DesignMatrix:
        def columns(name: str) -> np.ndarray:
            if name not in data.columns:
                raise PredictionError(f"column {name!r} is not in the data")
            if name in self.levels:
                return factor_level_codes(data[name], self.levels[name])
            return data[name].to_numpy(dtype=float)[:, None]

        return self._build(len(data), columns)

    def from_arrays(self, cols: ArrayColumns) -> DesignMatrix:
        """:meth:`get_model_matrix` on the complete rows held by ``cols``."""

        def columns(name: str) -> np.ndarray:
            if name in self.levels:  # codes of the levels parse() found in these rows
                return cols.factor([name])[0]
            return cols.floats(name)[:, None]  # the same cast as to_numpy(dtype=float)

        return self._build(cols.nrows, columns)

    def _build(self, n: int, columns) -> DesignMatrix:
        """The matrix from ``columns(name)`` (a factor's level codes, a
        number's (n, 1) column), each variable read once: intercept, main
        effects, then interactions as products with the first variable's
        columns varying fastest. Terms of factors only are written as the
        ones they are (no dummy blocks and products of them)."""
        values = np.zeros((n, len(self.column_names)))
        if self.intercept:
            values[:, 0] = 1.0
        own = {name: columns(name) for term in self.terms() for name in term}
        j = int(self.intercept)
        for term in self.terms():
            if all(name in self.levels for name in term):
                j += self._put_dummies(values, j, [own[name] for name in term],
                                       [len(self.levels[name]) - 1 for name in term])
                continue
            block = self._block(term[0], own[term[0]])
            for name in term[1:]:
                other = self._block(name, own[name])
                block = (block[:, None, :] * other[:, :, None]).reshape(n, -1)
            values[:, j : j + block.shape[1]] = block
            j += block.shape[1]
        return DesignMatrix(values, list(self.column_names), self)

    # Cells are used when there are at most this fraction of the rows of them,
    # and at least this many rows (below, X costs less than setting them up).
    MAX_CELLS_PER_ROW = 0.25
    MIN_CELL_ROWS = 5000

    def cells(self, cols: ArrayColumns) -> tuple[np.ndarray, np.ndarray] | None:
        """(cell, E) with X = E[cell] when every term holds factors only (the
        wide matrix of a factorial design is then a few distinct rows): a row's
        cell is the mixed-radix number of its factors' level codes, E the matrix
        of every combination of levels, built by the same code as X (so its
        rows are X's exactly). None for other terms, more cells than
        ``MAX_CELLS_PER_ROW`` of the rows or fewer rows than ``MIN_CELL_ROWS``."""
        names = [name for term in self.terms() for name in term]
        if not names or any(name not in self.levels for name in names):
            return None
        names = list(dict.fromkeys(names))
        sizes = [len(self.levels[name]) for name in names]
        ncells = int(np.prod(sizes))
        if ncells > self.MAX_CELLS_PER_ROW * cols.nrows or cols.nrows < self.MIN_CELL_ROWS:
            return None
        cell = np.zeros(cols.nrows, dtype=np.intp)
        grid, stride = {}, 1
        for name, size in zip(names, sizes):
            codes = cols.factor([name])[0]
            if np.any(codes < 0):
                return None
            cell += codes * stride
            grid[name] = (np.arange(ncells) // stride) % size
            stride *= size
        E = self._build(ncells, lambda name: grid[name]).values
        return cell, E

    def _block(self, name: str, own: np.ndarray) -> np.ndarray:
        """A variable's columns: a factor's treatment dummies, a number itself."""
        return self._dummies(name, own) if name in self.levels else own

    @staticmethod
    def _put_dummies(values: np.ndarray, j: int, codes: list[np.ndarray], widths: list[int]) -> int:
        """A term of factors (a main effect or their interaction) into the
        zeroed ``values`` from column ``j``: a one where every factor is at a
        level after its first, in the column the product of their dummies
        puts it (the first factor's varying fastest); rows with a missing
        level all NaN, as the dummies' product. Returns the term's width."""
        col = np.zeros(len(values), dtype=np.intp)
        present = np.ones(len(values), dtype=bool)
        missing = np.zeros(len(values), dtype=bool)
        stride = 1
        for c, width in zip(codes, widths):
            missing |= c < 0
            present &= c > 0
            col += (c - 1) * stride
            stride *= width
        rows = np.flatnonzero(present & ~missing)
        values[rows, j + col[rows]] = 1.0
        if missing.any():
            values[missing, j : j + stride] = np.nan
        return stride

    def _dummies(self, name: str, codes: np.ndarray) -> np.ndarray:
        """Treatment columns of factor ``name`` from its level codes (-1:
        missing, a row of NaN)."""
        block = np.zeros((len(codes), len(self.levels[name]) - 1))
        rows = np.flatnonzero(codes > 0)
        block[rows, codes[rows] - 1] = 1.0
        missing = codes < 0
        if missing.any():
            block[missing] = np.nan
        return block

    def r_names(self) -> list[str]:
        """:func:`r_column_names` of the columns: a factor's name and level,
        interactions joined by ``:``."""
        out = ["(Intercept)"] if self.intercept else []
        for term in self.terms():
            out.extend(self._compose(term, lambda var, level: f"{var}{level}"))
        return out


def _is_plain_number(data: pd.DataFrame | ArrayColumns, name: str) -> bool:
    """Whether ``name`` is a numeric (not boolean) column of ``data`` that
    the simple spec reads as numbers."""
    if name not in data.columns:
        return False
    if isinstance(data, ArrayColumns):
        return name in data.plain
    return _numeric_not_bool(data[name])


def _treatment_levels(values: pd.Series) -> list | None:
    """The levels formulaic encodes a factor column with, for an unordered
    categorical (its used categories, in order) or a column of strings (sorted);
    None for anything else (ordered factors, booleans, mixed objects)."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        if dtype.ordered:
            return None
        codes = np.asarray(values.array.codes)
        used = np.bincount(codes[codes >= 0], minlength=len(dtype.categories)) > 0
        return [c for c, u in zip(dtype.categories.tolist(), used) if u] or None
    if pd.api.types.infer_dtype(values, skipna=False) != "string":
        return None
    levels = np.unique(values.to_numpy(dtype=object).astype(str)).tolist()
    return levels or None


@functools.lru_cache(maxsize=1024)
def _simple_shape(
    rhs: str,
) -> tuple[bool, tuple[str, ...], tuple[tuple[str, str], ...]] | None:
    """Intercept flag, main-effect names (in order of appearance) and two-way
    interactions (in order of appearance, as written) of a right side made of
    an optional intercept, names, ``a:b`` and ``a*b`` (= a + b + a:b), else
    ``None``. Whether the names are numeric columns or factors, and whether
    every factor in an interaction has its main effect, is for
    :meth:`SimpleSpec.parse`."""
    tokens = [t.strip() for t in rhs.replace("-", "+-").split("+")]
    if "" in tokens[1:]:  # dangling operator: let formulaic report it
        return None
    name = r"[^\W\d]\w*"
    intercept, variables, pairs = True, [], []

    def add_pair(a: str, b: str) -> bool:
        if a == b:
            return False
        if not any({a, b} == set(p) for p in pairs):
            pairs.append((a, b))
        return True

    for token in tokens:
        if token in ("1", ""):
            continue
        if token in ("0", "-1", "- 1"):
            intercept = False
            continue
        if re.fullmatch(name, token):
            if token not in variables:
                variables.append(token)
            continue
        match = re.fullmatch(rf"({name})\s*([:*])\s*({name})", token)
        if match is None:
            return None
        a, op, b = match.groups()
        if op == "*":
            for v in (a, b):
                if v not in variables:
                    variables.append(v)
        if not add_pair(a, b):
            return None
    return intercept, tuple(variables), tuple(pairs)


def _model_matrix(rhs: str, data: pd.DataFrame | ArrayColumns, where: str) -> DesignMatrix:
    if isinstance(data, ArrayColumns):
        simple = SimpleSpec.parse(rhs, data)
        if simple is not None:
            return simple.from_arrays(data)
        data = data.frame()
    simple = SimpleSpec.parse(rhs, data)
    if simple is not None:
        return simple.get_model_matrix(data)
    import formulaic

    check_formula_side(rhs)  # nothing outside the allow-list reaches formulaic's eval
    data = integers_as_floats(data, factor_arguments(rhs))
    aliases = _reserved_aliases(rhs, data)
    if aliases:
        rhs, data = _apply_aliases(rhs, aliases), data.rename(columns=aliases)
    try:
        # missing values were dropped before: NaN or Inf here come from
        # transforms (log of 0 ...), checked by build_model_frame
        formula = formulaic.Formula(rhs)
    except Exception as err:  # formulaic raises many kinds; give ours
        raise FormulaError(f"cannot build the {where} model matrix from {rhs!r}: {err}") from err
    check_evaluated_terms(formula)  # what formulaic's parser will eval, checked again
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            mm = formulaic.model_matrix(formula, data, na_action="ignore", context=R_FUNCTIONS)
    except Exception as err:  # formulaic raises many kinds; give ours
        raise FormulaError(f"cannot build the {where} model matrix from {rhs!r}: {err}") from err
    spec = AliasedSpec(mm.model_spec, aliases) if aliases else mm.model_spec
    columns = [_unalias(c, aliases) for c in mm.columns]
    return DesignMatrix(np.asarray(mm, dtype=float), columns, spec)


def integers_as_floats(frame: pd.DataFrame, factors: Collection[str] = ()) -> pd.DataFrame:
    """``frame`` with its integer columns as float64, for evaluating formula
    terms.

    numpy computes in a column's own dtype: ``I(x * x)`` of an int8 column
    holding 100 wraps around to 16, ``I(a - b)`` of unsigned columns to large
    numbers, and int64 products past 9.2e18 wrap silently too (R's integer
    arithmetic gives NA there; doubles give the product). Columns in
    ``factors`` (used as ``C(x)``/``factor(x)``) become int64 instead, so that
    their level labels stay ``1``, not ``1.0``. Returns ``frame`` itself when
    nothing changes (the caller's frame is never modified).
    """
    changes: dict[Any, Any] = {}
    for col, dtype in frame.dtypes.items():
        if not pd.api.types.is_integer_dtype(dtype) or (col in factors and dtype == np.int64):
            continue
        if col not in factors:
            changes[col] = np.float64
        elif isinstance(dtype, np.dtype) and dtype.itemsize < 8:
            changes[col] = np.int64
    if not changes or frame.columns.has_duplicates:
        return frame
    return frame.astype(changes)


_FACTOR_ARGUMENT = re.compile(r"(?<![\w.])(?:C|factor)\(\s*(`[^`]*`|[^\W\d][\w.]*)\s*[,)]")


@functools.lru_cache(maxsize=1024)
def factor_arguments(rhs: str) -> frozenset[str]:
    """The columns a formula side codes as factors: ``x`` of ``C(x, ...)`` and
    ``factor(x)``."""
    return frozenset(m.strip("`") for m in _FACTOR_ARGUMENT.findall(rhs))


def _r_names(mm: DesignMatrix) -> list[str]:
    """R's names of a model matrix's columns (:func:`r_column_names`)."""
    if isinstance(mm.model_spec, SimpleSpec):
        return mm.model_spec.r_names()
    return r_column_names(list(mm.columns), mm.model_spec)


def _reserved_names() -> set[str]:
    import formulaic.transforms

    return set(formulaic.transforms.TRANSFORMS) | set(R_FUNCTIONS)


def _reserved_aliases(rhs: str, data: pd.DataFrame) -> dict[str, str]:
    """Data columns named like a formula function (a factor ``C``, a column
    ``log``): formulaic would resolve the name to the function, so they are
    renamed for it and renamed back in the column names."""
    reserved = _reserved_names()
    return {
        col: f"{col}__column__"
        for col in data.columns
        if isinstance(col, str)
        and col in reserved
        and re.search(rf"(?<![\w.]){re.escape(col)}(?![\w.(])", rhs)
    }


def _apply_aliases(rhs: str, aliases: dict[str, str]) -> str:
    for col, alias in aliases.items():
        rhs = re.sub(rf"(?<![\w.]){re.escape(col)}(?![\w.(])", alias, rhs)
    return rhs


def _unalias(name: str, aliases: dict[str, str]) -> str:
    for col, alias in aliases.items():
        name = name.replace(alias, col)
    return name


class AliasedSpec:
    """A formulaic spec built on renamed columns, applied to new data the same way."""

    def __init__(self, spec: Any, aliases: dict[str, str]):
        self.spec = spec
        self.aliases = aliases

    @property
    def encoder_state(self) -> dict:
        return {_unalias(k, self.aliases): v for k, v in self.spec.encoder_state.items()}

    def get_model_matrix(self, data: pd.DataFrame, **kwargs: Any) -> Any:
        return self.spec.get_model_matrix(data.rename(columns=self.aliases), **kwargs)


def _response(parsed: ParsedFormula, data: pd.DataFrame | ArrayColumns) -> np.ndarray:
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
            _find_name(parsed.text, "cbind"),
        )
    return evaluate_expression(lhs, data, "response")


_CBIND_CALL = re.compile(r"(?<![\w.])cbind\s*\(")


def _glm_response(
    parsed: ParsedFormula, data: pd.DataFrame | ArrayColumns
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """The response of a GLM (R's glm / glmer) and the levels of a factor response.

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
    if name in data.columns and _is_factor_dtype(_dtype_of(data, name)):
        return _factor_response(data, name)
    return _glm_response_part(lhs, data, "response", "numeric, logical or a factor"), None


def _is_factor_dtype(dtype: Any) -> bool:
    """Categorical, string or object (R's factor() of the values), not logical."""
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
    """A numeric or logical column (floats, logicals as 0/1), or an arithmetic
    expression of columns: the response or one argument of ``cbind``."""
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
    """Column ``name`` of the complete rows."""
    return data.series(name) if isinstance(data, ArrayColumns) else data[name]


def _factor_response(
    data: pd.DataFrame | ArrayColumns, name: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A factor response as R's binomial family reads it: 0 for the first level
    (unused levels dropped: a categorical's order, else the sorted values), 1 else."""
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
    """``expr`` without the backticks of a single backticked name."""
    if len(expr) > 2 and expr[0] == "`" and expr[-1] == "`" and "`" not in expr[1:-1]:
        return expr[1:-1]
    return expr


@functools.lru_cache(maxsize=256)
def cbind_arguments(lhs: str, formula: str | None = None) -> tuple[str, ...] | None:
    """The two argument texts of a ``cbind(successes, failures)`` left side, or
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
    scan = _Scan(lhs)
    tokens = scan.tokens
    at = _find_name(formula, "cbind") if formula else None
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


def evaluate_expression(expr: str, data: pd.DataFrame | ArrayColumns, what: str) -> np.ndarray:
    """Evaluate an arithmetic expression of columns (``log(y)``, ``Days * 2``)
    that passes the formula allow-list (:func:`~mixedmodels.spec.guard.check_expression`)."""
    check_expression(expr)
    if isinstance(data, ArrayColumns) and expr in data.plain:
        return data.floats(expr)  # what formulaic's I(x) gives for a numeric x
    if isinstance(data, ArrayColumns):
        value = _plain_arithmetic(expr, data)
        if value is not None:
            return value
    mm = _model_matrix(f"0 + I({expr})", data, what)
    if mm.shape[1] != 1:
        raise DataError(f"{what} {expr!r} does not evaluate to one numeric column")
    return np.asarray(mm, dtype=float)[:, 0]


_ARITHMETIC_OPS = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
}
_ARITHMETIC_CALLS = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "log1p": np.log1p}


def _plain_arithmetic(expr: str, data: ArrayColumns) -> np.ndarray | None:
    """``expr`` evaluated directly when it is only plain numeric columns,
    numbers, ``+ - * /``, unary minus and ``log``/``exp``/``sqrt``/``log1p``
    of those (``size - incidence``, ``log(exposure)``): the same float
    arithmetic formulaic's ``I()`` does, without its per-call cost; None for
    anything else (formulaic then evaluates it)."""
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return None

    def value(node: ast.AST) -> np.ndarray | float | None:
        if isinstance(node, ast.Name):
            return data.values(node.id).astype(float) if node.id in data.plain else None
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC_OPS:
            left, right = value(node.left), value(node.right)
            if left is None or right is None:
                return None
            return _ARITHMETIC_OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = value(node.operand)
            return None if inner is None else -inner
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _ARITHMETIC_CALLS and node.func.id not in data.columns
            and len(node.args) == 1 and not node.keywords
        ):
            inner = value(node.args[0])
            return None if inner is None else _ARITHMETIC_CALLS[node.func.id](inner)
        return None

    with np.errstate(all="ignore"):  # R gives NaN / Inf as numpy does; callers check
        result = value(tree)
    if result is None or np.ndim(result) == 0:
        return None
    return np.array(result, dtype=float)


def build_fixed(
    parsed: ParsedFormula,
    data: pd.DataFrame | ArrayColumns,
    contrasts: Mapping[str, str] | None = None,
) -> FixedEffects:
    """The fixed-effects matrix with aliased columns dropped (and a warning naming them)."""
    rhs = with_contrasts(rewrite_factor_calls(parsed.fixed), contrasts or {})
    by_cells = _fixed_by_cells(rhs, data)
    if by_cells is not None:
        return by_cells
    mm = _model_matrix(rhs, data, "fixed-effects")
    X = np.asarray(mm, dtype=float)
    all_names = _r_names(mm)
    if not isinstance(mm.model_spec, SimpleSpec) and not np.isfinite(X).all():
        # an error or a frame without the NaN rows follows (build_model_frame):
        # a rank test would take NaN or Inf columns for aliased ones
        return FixedEffects(X, all_names, all_names, np.arange(X.shape[1]), mm.model_spec)
    kept, gram = _rank_and_gram(X)
    warn_rank_deficient(all_names, kept, stacklevel=5)
    return FixedEffects(
        # formulaic's matrices are in Fortran order: kept so (a C copy of a long
        # matrix costs a transposition; numpy and BLAS take either order)
        X=X if len(kept) == X.shape[1] else X[:, kept],
        names=[all_names[i] for i in kept],
        all_names=all_names,
        kept=kept,
        model_spec=mm.model_spec,
        gram=gram,
    )


def warn_rank_deficient(all_names: Sequence[str], kept: np.ndarray, stacklevel: int) -> None:
    """lme4's warning that the fixed-effects columns not in ``kept`` are
    aliased and dropped (nothing when every column is kept). In memory and
    for partitioned data alike; ``stacklevel`` as for :func:`warnings.warn`."""
    if len(kept) == len(all_names):
        return
    keep = set(kept.tolist())
    dropped = [name for i, name in enumerate(all_names) if i not in keep]
    warnings.warn(
        "fixed-effect model matrix is rank deficient so dropping "
        f"{len(dropped)} column(s): {', '.join(dropped)}",
        RankDeficiencyWarning,
        stacklevel=stacklevel,
    )


def _fixed_by_cells(rhs: str, data: pd.DataFrame | ArrayColumns) -> FixedEffects | None:
    """The fixed effects of a matrix of factors only, kept as its cells (see
    ``FixedEffects.cells``) when the Gram test shows every column independent:
    X'X = E' diag(counts) E without X. None where that does not apply (then X
    is built and checked as usual)."""
    if not isinstance(data, ArrayColumns):
        return None
    if data.nrows < SimpleSpec.MIN_CELL_ROWS:
        return None
    simple = SimpleSpec.parse(rhs, data)
    if simple is None or len(simple.column_names) <= 2:
        return None
    cells = simple.cells(data)
    if cells is None or data.nrows < 4 * len(simple.column_names):
        return None
    cell, E = cells
    counts = np.bincount(cell, minlength=E.shape[0])
    kept, gram = _gram_rank((E.T * counts) @ E)
    if kept is None:
        return None
    names = simple.r_names()
    return FixedEffects(None, names, names, kept, simple, gram=gram, cells=cells)


def build_term(
    spec: RandomTermSpec,
    data: pd.DataFrame | ArrayColumns,
    contrasts: Mapping[str, str] | None = None,
    residual: bool = True,
) -> ReTerm:
    """One random-effects term: grouping codes, levels and its model matrix
    (``residual``: the model has a residual, see ``_check_term_size``)."""
    if isinstance(data, ArrayColumns):
        codes, levels = data.factor(spec.group)
    elif len(spec.group) == 1:
        codes, levels = factor_codes(data[spec.group[0]])
    else:
        codes, levels = interaction_codes([data[g] for g in spec.group])
    mm = _model_matrix(
        with_contrasts(rewrite_factor_calls(spec.expr), contrasts or {}),
        data,
        f"random-effects term {spec.text}",
    )
    z = np.ascontiguousarray(np.asarray(mm, dtype=float))
    if z.shape[1] == 0:
        raise FormulaError(f"random-effects term {spec.text} has no columns")
    cnames = _r_names(mm)
    dtypes = tuple(_dtype_of(data, g) for g in spec.group)
    term = ReTerm(spec, codes, levels, z, cnames, mm.model_spec, dtypes)
    _check_term_size(term, len(codes), residual)
    return term


def _check_term_size(term: ReTerm, n: int, residual: bool = True) -> None:
    """At least two levels; with a residual (lmer), fewer levels and random
    effects than observations (glmer allows as many, as lme4: an
    observation-level random effect models overdispersion)."""
    if term.nlevels < 2:
        raise ModelSpecError(
            f"grouping factor {term.name!r} of term {term.spec.text} has "
            f"{term.nlevels} level: it needs at least 2"
        )
    if not residual:
        return
    if term.nlevels >= n:
        raise ModelSpecError(
            f"grouping factor {term.name!r} has {term.nlevels} levels for {n} observations: "
            "the number of levels must be smaller than the number of observations "
            "(the random effects would be confounded with the residual)"
        )
    if term.nranef >= n:
        raise ModelSpecError(
            f"term {term.spec.text} has {term.nranef} random effects for {n} observations: "
            "the model is unidentifiable"
        )


def order_terms(terms: list[ReTerm]) -> list[ReTerm]:
    """Terms in decreasing number of random effects (stable), as MixedModels.jl
    stores them: the largest term becomes the block-diagonal leading block of L,
    eliminated at no cost, and the dense remainder is as small as it can be."""
    return sorted(terms, key=lambda t: -t.nranef)


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
    used = {c for c in _used_columns(parsed) if c in data.columns or c not in CONSTANTS}
    _check_columns(used, data, parsed.text)
    _check_unique_columns(data, used)
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
        _check_predictor_kinds(parsed, cols.dtypes, cols.series)
        source: pd.DataFrame | ArrayColumns = cols
        row_label = cols.row_label
        rows = np.arange(len(data)) if cols.keep is None else np.flatnonzero(cols.keep)
    else:
        frame, extra, n_dropped, rows = _drop_missing(data, columns, extra, fail=fail)
        if len(frame) == 0:
            raise DataError("no complete rows remain after dropping rows with missing values")
        _check_finite(frame, columns)
        _check_predictor_kinds(parsed, frame.dtypes.to_dict(), frame.__getitem__)
        source = frame = _tidy_categoricals(frame, columns)
        row_label = frame.index.__getitem__

    if glm_response:
        y, response_levels = _glm_response(parsed, source)
    else:
        y, response_levels = _response(parsed, source), None
    w = extra["weights"] if "weights" in extra else _numeric_column(source, w_col, "weights")
    if w is not None:
        _check_weights(w, row_label, w_col)
    given_offset = (
        extra["offset"] if "offset" in extra else _numeric_column(source, o_col, "offset")
    )
    if given_offset is not None and not np.all(np.isfinite(given_offset)):
        where = f"column {o_col!r}" if o_col else "offset"
        raise DataError(f"offset {where} holds infinite values (+-Inf)")
    off = _total_offset(parsed, source, given_offset)
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


def _numeric_column(
    frame: pd.DataFrame | ArrayColumns, col: str | None, what: str
) -> np.ndarray | None:
    """A weights / offset column as floats, or a DataError naming it."""
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
    """Prior weights must be finite, non-negative and not all zero (``row_label``
    gives the index label of a row, for the message)."""
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


def _check_unique_columns(data: pd.DataFrame, used: set[str]) -> None:
    """A used column must be one column of the data (a :class:`DataError`
    naming a repeated one; unused repeats are harmless)."""
    if data.columns.is_unique:
        return
    repeated = sorted({str(c) for c in data.columns[data.columns.duplicated()]} & used)
    if repeated:
        count = int((data.columns == repeated[0]).sum())
        raise DataError(
            f"column {repeated[0]!r} appears {count} times in the data: "
            "give the columns distinct names"
        )


def _check_predictor_kinds(
    parsed: ParsedFormula, dtypes: Mapping[str, Any], series: Callable[[str], pd.Series]
) -> None:
    """Every predictor of one type (not numbers mixed with text), and no
    covariate (a predictor other than a grouping factor) a date or duration,
    whose arithmetic is not a model's: a :class:`DataError` naming the column
    and a conversion. ``dtypes`` and ``series`` give the used columns (the
    response has its own checks)."""
    covariates, predictors = _predictor_columns(parsed)
    for col in sorted(predictors & dtypes.keys()):
        dtype = dtypes[col]
        if isinstance(dtype, np.dtype) and dtype.kind == "O":
            _check_one_type(col, series(col))
        elif col in covariates and _is_time(dtype):
            raise DataError(_time_message(col, dtype))


def _is_time(dtype: Any) -> bool:
    """Dates, durations and periods (numpy's or pandas')."""
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
    """An object column mixing numbers and text (``1``, ``"1"``, ``1.0``)
    cannot be ordered into levels, and R's rule would merge what pandas keeps
    apart: a :class:`DataError` asking for one type."""
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if not inferred.startswith("mixed") or inferred == "mixed-integer-float":
        return
    kinds = sorted({type(v).__name__ for v in values.dropna()})
    raise DataError(
        f"column {name!r} mixes values of types {', '.join(kinds)}: convert it to one "
        "type (numbers or text) first"
    )


@functools.lru_cache(maxsize=512)
def _predictor_columns(parsed: ParsedFormula) -> tuple[frozenset[str], frozenset[str]]:
    """The columns of a formula's right side other than grouping factors
    (covariates), and all of them (with the grouping factors): once per formula."""
    covariates: set[str] = set()
    for expr in [parsed.fixed, *parsed.offsets, *(t.expr for t in parsed.random)]:
        covariates |= variables_in(expr) if expr else set()
    groups = {g for term in parsed.random for g in term.group}
    return frozenset(covariates), frozenset(covariates | groups)


def _evaluated_parts(
    parsed: ParsedFormula,
    y: np.ndarray,
    offset: np.ndarray | None,
    fixed: FixedEffects,
    terms: list[ReTerm],
) -> list[tuple[list[str], np.ndarray]]:
    """What the formula evaluated, as (names of its columns, values): the
    response, the offset and every model matrix that transforms may have made
    non-finite (a simple spec's columns are checked data)."""
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
    """The rows where some part is NaN (``None`` if none is) and the names of
    those parts; a :class:`DataError` naming a part that is infinite."""
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
    """Report the rows dropped because the formula made them NaN (as
    :func:`_complete_rows` does for missing values), or refuse them (na.fail)."""
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
    """A linear mixed model of a constant response (after the offset) has no
    residual variance to estimate: a :class:`DataError` saying so."""
    modelled = y if offset is None else y - offset
    if len(y) and not (modelled != modelled[0]).any():
        after = " after the offset" if offset is not None else ""
        raise DataError(
            f"the response {name or 'y'!r} is constant{after} (every value is "
            f"{modelled[0]:g}): a linear mixed model needs a response that varies"
        )


def _used_columns(parsed: ParsedFormula) -> set[str]:
    return set(_used_columns_cached(parsed))


@functools.lru_cache(maxsize=512)
def _used_columns_cached(parsed: ParsedFormula) -> frozenset[str]:
    """:func:`_used_columns`, once per formula (parsed formulas are immutable)."""
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


def _total_offset(
    parsed: ParsedFormula, frame: pd.DataFrame | ArrayColumns, given: np.ndarray | None
) -> np.ndarray | None:
    total = None if given is None else np.asarray(given, dtype=float).copy()
    for expr in parsed.offsets:
        values = evaluate_expression(expr, frame, "offset")
        total = values if total is None else total + values
    return total


# --------------------------------------------------------------------------- newdata


def newdata_frame(newdata: Any, parsed: ParsedFormula) -> pd.DataFrame:
    """``newdata`` as a pandas frame, or a :class:`PredictionError` naming a
    column predictions read (not the response) that appears more than once."""
    frame = to_pandas(newdata)
    if not frame.columns.is_unique:
        repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        used = [c for c in repeated if c in _predictor_columns(parsed)[1]]
        if used:
            raise PredictionError(
                f"newdata column {used[0]!r} appears {int((frame.columns == used[0]).sum())} "
                "times: give the columns distinct names"
            )
    return frame


def newdata_fixed_matrix(fixed: FixedEffects, newdata: pd.DataFrame) -> np.ndarray:
    """The fixed-effects matrix for new data, with the fitted model's encoding."""
    return apply_spec(fixed.model_spec, newdata, "fixed-effects")[:, fixed.kept]


def apply_spec(model_spec: Any, newdata: pd.DataFrame, what: str) -> np.ndarray:
    """Rebuild a model matrix on new data with the fitted encoding (stateful
    transforms such as ``scale()`` keep their training state). Factor columns
    are matched to the fitted levels first (:func:`match_levels`): formulaic
    would turn a value of another type into NaN dummies without an error; small
    integer columns are evaluated as floats (:func:`integers_as_floats`)."""
    missing = None
    if not isinstance(model_spec, SimpleSpec):  # it matches its own levels
        formulaic_spec = model_spec.spec if isinstance(model_spec, AliasedSpec) else model_spec
        check_evaluated_terms(formulaic_spec.formula)  # a stored spec is data too
        newdata, missing = with_fitted_levels(model_spec, newdata)
    newdata = integers_as_floats(newdata, spec_factors(model_spec))
    try:
        with warnings.catch_warnings():
            # every value was matched to a level above: what formulaic reports
            # here is a missing one, made a missing row below
            warnings.filterwarnings("ignore", "Data has categories outside")
            mm = model_spec.get_model_matrix(newdata, na_action="ignore", context=R_FUNCTIONS)
    except MixedModelsError:
        raise
    except Exception as err:
        raise PredictionError(f"cannot build the {what} matrix for newdata: {err}") from err
    values = np.array(mm, dtype=float)
    if missing is not None:
        values[missing] = np.nan  # formulaic codes a missing factor value as the reference level
    return values


def with_fitted_levels(
    model_spec: Any, newdata: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """``newdata`` with every factor column of the spec holding the fitted
    level values themselves (a new frame if any changes), and the mask of the
    rows where a factor value is missing (``None`` if none is); a value that
    is no level is a :class:`PredictionError` naming it."""
    replaced, missing = {}, None
    for name, levels in _factor_levels(model_spec).items():
        if name not in newdata.columns or not isinstance(newdata[name], pd.Series):
            continue
        values = newdata[name]
        codes = factor_level_codes(values, levels, name)
        if (codes < 0).any():
            missing = (codes < 0) if missing is None else missing | (codes < 0)
        fitted = pd.Index(levels)
        if (fitted.get_indexer(values) == codes).all():
            continue  # the values are the levels already
        matched = np.asarray(fitted, dtype=object).take(np.maximum(codes, 0))
        matched[codes < 0] = np.nan
        replaced[name] = pd.Series(matched, index=newdata.index).infer_objects()
    return (newdata.assign(**replaced) if replaced else newdata), missing


def spec_factors(model_spec: Any) -> set[str]:
    """The columns a fitted spec codes as factors (see :func:`integers_as_floats`)."""
    return set(_factor_levels(model_spec))


def _factor_levels(model_spec: Any) -> dict[str, list[Any]]:
    """Categorical variables of a formulaic spec and their fitted levels."""
    out: dict[str, list[Any]] = {}
    try:
        encoder_state = model_spec.encoder_state
    except AttributeError:
        return out
    for name, (kind, state) in encoder_state.items():
        if str(kind).endswith("CATEGORICAL") and "categories" in state:
            base = re.sub(r"^C\(([^,()]+).*\)$", r"\1", name).strip()
            out[base] = list(state["categories"])
    return out
