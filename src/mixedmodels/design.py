"""Model frames and design matrices: the fixed-effects matrix and one object per
random-effects term.

The flow is ``formula`` (parse) -> ``design`` (this module: columns checked, NA rows
dropped, matrices built) -> ``linalg`` (the blocked Cholesky) -> model classes.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .exceptions import (
    DataError,
    MixedModelsError,
    FormulaError,
    MissingDataWarning,
    ModelSpecError,
    PredictionError,
    RankDeficiencyWarning,
)
from .formula import ParsedFormula, RandomTermSpec, variables_in

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
        "(Intercept)" if n == "Intercept" else ":".join(translate(p) for p in _split_colon(n))
        for n in names
    ]


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


def rewrite_factor_calls(expr: str) -> str:
    """R's ``factor(x)`` as formulaic's ``C(x, levels=None)``: the same coding;
    the (default) ``levels=None`` marks it for :func:`r_column_names`."""
    return re.sub(r"(?<![\w.])factor\(\s*([A-Za-z_][\w.]*)\s*\)", r"C(\1, levels=None)", expr)


def factor_contrasts(
    frame: pd.DataFrame, columns: Sequence[str], user: Mapping[str, str] | None
) -> dict[str, str]:
    """Contrast of every factor that needs a non-default one: the user's, and
    R's ``contr.poly`` for ordered factors."""
    out = {
        c: "contr.poly"
        for c in columns
        if isinstance(frame[c].dtype, pd.CategoricalDtype) and frame[c].cat.ordered
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
        if not re.fullmatch(r"[A-Za-z_][\w.]*", col):
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
        cat = values.cat.remove_unused_categories()
        return cat.cat.codes.to_numpy(np.int64), [str(c) for c in cat.cat.categories]
    uniques, codes = np.unique(values.to_numpy(), return_inverse=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def interaction_codes(columns: Sequence[pd.Series]) -> tuple[np.ndarray, list[str]]:
    """Codes of the observed combinations of several factors, R's ``a:b``.

    Levels are ordered with the first factor varying slowest and labelled
    ``"a1:b1"``; unobserved combinations are dropped.
    """
    codes_levels = [factor_codes(c) for c in columns]
    combined = np.zeros(len(columns[0]), dtype=np.int64)
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


# --------------------------------------------------------------------------- terms


@functools.cache
def _lower_triangle(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a k x k lower triangle, column by column (lme4's θ order)."""
    cols, rows = np.triu_indices(k)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    for arr in (rows, cols):
        arr.setflags(write=False)
    return rows, cols


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
    """

    spec: RandomTermSpec
    codes: np.ndarray
    levels: list[str]
    z: np.ndarray
    cnames: list[str]
    model_spec: Any = field(repr=False)

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
        rows, cols = self.theta_rows_cols()
        return np.where(rows == cols, 1.0, 0.0)

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


@dataclass
class FixedEffects:
    """The fixed-effects model matrix after rank-deficiency checks.

    Attributes
    ----------
    X : ndarray, shape (n, p)
        The full-rank matrix actually fitted.
    names : list of str
        R-style names of the kept columns.
    all_names : list of str
        Names of every column the formula produced; dropped ones show as NaN.
    kept : ndarray of int
        Positions of ``names`` within ``all_names``.
    model_spec : formulaic ModelSpec
        Re-applies the fixed part (stateful transforms included) to new data.
    """

    X: np.ndarray
    names: list[str]
    all_names: list[str]
    kept: np.ndarray
    model_spec: Any = field(repr=False)


def full_rank_columns(X: np.ndarray, tol: float = RANK_TOL) -> np.ndarray:
    """Positions of a maximal set of linearly independent columns, earliest first.

    Mirrors R's ``qr()`` with limited pivoting: a column is dropped only if it is
    (numerically) a combination of the columns kept before it.
    """
    if X.shape[1] == 0:
        return np.arange(0)
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
    return np.asarray(kept, dtype=np.int64)


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

    @property
    def nobs(self) -> int:
        return len(self.y)


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
        return values.cat.codes.to_numpy() < 0
    arr = values.to_numpy()
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind in "iub":
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(pd.isna(values), dtype=bool)


def _drop_missing(
    data: pd.DataFrame, used: list[str], extra: dict[str, np.ndarray], fail: bool = False
) -> tuple[pd.DataFrame, dict[str, np.ndarray], int]:
    """The used columns of the rows without a missing value (R's na.omit), or an
    error naming the columns (na.fail)."""
    # take() by position: a list __getitem__ costs several times more in pandas
    frame = data.take([data.columns.get_loc(c) for c in used], axis=1)
    missing = {c: _column_missing(frame[c]) for c in used}
    missing.update({k: np.isnan(v) for k, v in extra.items()})
    mask = np.zeros(len(data), dtype=bool)
    for m in missing.values():
        mask |= m
    n_dropped = int(mask.sum())
    if n_dropped and fail:
        cols = [c for c, m in missing.items() if m.any()]
        raise DataError(
            f"{n_dropped} row(s) have missing values (in {', '.join(map(repr, cols))}) "
            "and na_action='fail'"
        )
    if n_dropped:
        keep = ~mask
        frame = frame.loc[keep]
        extra = {k: v[keep] for k, v in extra.items()}
        warnings.warn(
            f"{n_dropped} row(s) with missing values in used columns were dropped",
            MissingDataWarning,
            stacklevel=4,
        )
    return frame, extra, n_dropped


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


# R's arithmetic functions that formulaic does not know by these names.
R_FUNCTIONS = {
    "sqrt": np.sqrt,
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "exp": np.exp,
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
    """Model matrix of an optional intercept and plain numeric columns.

    The common random-effects sides (``1``, ``Days``, ``0 + x``) and simple fixed
    parts need no formula machinery; building them directly keeps the per-fit
    overhead of small models low. Anything else goes through formulaic.
    """

    encoder_state: dict = {}

    def __init__(self, intercept: bool, variables: list[str]):
        self.intercept = intercept
        self.variables = variables
        self.column_names = (["Intercept"] if intercept else []) + variables

    @classmethod
    def parse(cls, rhs: str, data: pd.DataFrame) -> "SimpleSpec | None":
        tokens = [t.strip() for t in rhs.replace("-", "+-").split("+")]
        intercept, variables = True, []
        for token in tokens:
            if token in ("1", ""):
                continue
            if token in ("0", "-1", "- 1"):
                intercept = False
            elif (
                re.fullmatch(r"[A-Za-z_][\w]*", token)
                and token in data.columns
                and token not in variables
                and pd.api.types.is_numeric_dtype(data[token])
                and not pd.api.types.is_bool_dtype(data[token])
            ):
                variables.append(token)
            else:
                return None
        if "" in tokens[1:]:  # dangling operator: let formulaic report it
            return None
        return cls(intercept, variables)

    def get_model_matrix(
        self, data: pd.DataFrame, na_action: str = "raise", context: Any = None
    ) -> DesignMatrix:
        cols = [np.ones(len(data))] if self.intercept else []
        for name in self.variables:
            if name not in data.columns:
                raise PredictionError(f"column {name!r} is not in the data")
            cols.append(data[name].to_numpy(dtype=float))
        values = np.column_stack(cols) if cols else np.empty((len(data), 0))
        return DesignMatrix(values, list(self.column_names), self)


def _model_matrix(rhs: str, data: pd.DataFrame, where: str) -> DesignMatrix:
    simple = SimpleSpec.parse(rhs, data)
    if simple is not None:
        return simple.get_model_matrix(data)
    import formulaic

    aliases = _reserved_aliases(rhs, data)
    if aliases:
        rhs, data = _apply_aliases(rhs, aliases), data.rename(columns=aliases)
    try:
        mm = formulaic.model_matrix(rhs, data, na_action="raise", context=R_FUNCTIONS)
    except Exception as err:  # formulaic raises many kinds; give ours
        raise FormulaError(f"cannot build the {where} model matrix from {rhs!r}: {err}") from err
    spec = AliasedSpec(mm.model_spec, aliases) if aliases else mm.model_spec
    columns = [_unalias(c, aliases) for c in mm.columns]
    return DesignMatrix(np.asarray(mm, dtype=float), columns, spec)


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


def _response(parsed: ParsedFormula, data: pd.DataFrame) -> np.ndarray:
    lhs = parsed.response
    if lhs is None:
        raise FormulaError("the formula has no response: write it as 'y ~ ...'", parsed.text, 0)
    if lhs in data.columns:
        col = data[lhs]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            raise DataError(f"response column {lhs!r} is not numeric (dtype {col.dtype})")
        return col.to_numpy(dtype=float)
    return evaluate_expression(lhs, data, "response")


def evaluate_expression(expr: str, data: pd.DataFrame, what: str) -> np.ndarray:
    """Evaluate an arithmetic expression of columns (``log(y)``, ``Days * 2``)."""
    mm = _model_matrix(f"0 + I({expr})", data, what)
    if mm.shape[1] != 1:
        raise DataError(f"{what} {expr!r} does not evaluate to one numeric column")
    return np.asarray(mm, dtype=float)[:, 0]


def build_fixed(
    parsed: ParsedFormula, data: pd.DataFrame, contrasts: Mapping[str, str] | None = None
) -> FixedEffects:
    """The fixed-effects matrix with aliased columns dropped (and a warning naming them)."""
    rhs = with_contrasts(rewrite_factor_calls(parsed.fixed), contrasts or {})
    mm = _model_matrix(rhs, data, "fixed-effects")
    X = np.asarray(mm, dtype=float)
    all_names = r_column_names(list(mm.columns), mm.model_spec)
    kept = full_rank_columns(X)
    if len(kept) < X.shape[1]:
        dropped = [all_names[i] for i in range(X.shape[1]) if i not in set(kept.tolist())]
        warnings.warn(
            "fixed-effect model matrix is rank deficient so dropping "
            f"{len(dropped)} column(s): {', '.join(dropped)}",
            RankDeficiencyWarning,
            stacklevel=4,
        )
    return FixedEffects(
        X=np.ascontiguousarray(X[:, kept]),
        names=[all_names[i] for i in kept],
        all_names=all_names,
        kept=kept,
        model_spec=mm.model_spec,
    )


def build_term(
    spec: RandomTermSpec, data: pd.DataFrame, contrasts: Mapping[str, str] | None = None
) -> ReTerm:
    """One random-effects term: grouping codes, levels and its model matrix."""
    groups = [data[g] for g in spec.group]
    if len(groups) == 1:
        codes, levels = factor_codes(groups[0])
    else:
        codes, levels = interaction_codes(groups)
    mm = _model_matrix(
        with_contrasts(rewrite_factor_calls(spec.expr), contrasts or {}),
        data,
        f"random-effects term {spec.text}",
    )
    z = np.ascontiguousarray(np.asarray(mm, dtype=float))
    if z.shape[1] == 0:
        raise FormulaError(f"random-effects term {spec.text} has no columns")
    cnames = r_column_names(list(mm.columns), mm.model_spec)
    term = ReTerm(spec, codes, levels, z, cnames, mm.model_spec)
    _check_term_size(term, len(codes))
    return term


def _check_term_size(term: ReTerm, n: int) -> None:
    if term.nlevels < 2:
        raise ModelSpecError(
            f"grouping factor {term.name!r} of term {term.spec.text} has "
            f"{term.nlevels} level: it needs at least 2"
        )
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
) -> ModelFrame:
    """Check the data against the formula, drop incomplete rows, build every matrix.

    The caller's DataFrame is never modified.
    """
    data = to_pandas(data)
    if len(data) == 0:
        raise DataError("the data are empty (0 rows)")
    used = {c for c in _used_columns(parsed) if c in data.columns or c not in R_FUNCTIONS}
    _check_columns(used, data, parsed.text)
    w_arr, w_col = _column_or_array(weights, data, "weights")
    o_arr, o_col = _column_or_array(offset, data, "offset")
    columns = sorted(used | {c for c in (w_col, o_col) if c})
    extra = {k: v for k, v in (("weights", w_arr), ("offset", o_arr)) if v is not None}
    frame, extra, n_dropped = _drop_missing(data, columns, extra, fail=na_action == "fail")
    if len(frame) == 0:
        raise DataError("no complete rows remain after dropping rows with missing values")
    _check_finite(frame, columns)
    frame = _tidy_categoricals(frame, columns)

    y = _response(parsed, frame)
    w = extra["weights"] if "weights" in extra else _numeric_column(frame, w_col, "weights")
    if w is not None:
        _check_weights(w, frame.index, w_col)
    given_offset = extra["offset"] if "offset" in extra else _numeric_column(frame, o_col, "offset")
    if given_offset is not None and not np.all(np.isfinite(given_offset)):
        where = f"column {o_col!r}" if o_col else "offset"
        raise DataError(f"offset {where} holds infinite values (+-Inf)")
    off = _total_offset(parsed, frame, given_offset)
    codings = factor_contrasts(frame, columns, contrasts)
    fixed = build_fixed(parsed, frame, codings)
    terms = order_terms([build_term(spec, frame, codings) for spec in parsed.random])
    return ModelFrame(
        parsed=parsed,
        data=frame,
        y=y,
        fixed=fixed,
        terms=terms,
        weights=w,
        offset=off,
        n_dropped=n_dropped,
        response_name=parsed.response or "y",
    )


def _numeric_column(frame: pd.DataFrame, col: str | None, what: str) -> np.ndarray | None:
    """A weights / offset column as floats, or a DataError naming it."""
    if col is None:
        return None
    values = frame[col]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        raise DataError(f"{what} column {col!r} is not numeric (dtype {values.dtype})")
    return values.to_numpy(dtype=float)


def _check_weights(w: np.ndarray, index: pd.Index, col: str | None) -> None:
    """Prior weights must be finite, non-negative and not all zero."""
    where = f"weights column {col!r}" if col else "weights"
    for bad, what in ((~np.isfinite(w), "infinite"), (w < 0, "negative")):
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where} must be finite and non-negative: {int(bad.sum())} {what} value(s), "
                f"the first at row {index[first]} ({float(w[first]):g})"
            )
    if not np.any(w > 0):
        raise DataError(f"{where} are all zero: no observation carries information")


def _used_columns(parsed: ParsedFormula) -> set[str]:
    used: set[str] = set()
    if parsed.response:
        used |= variables_in(parsed.response)
    used |= variables_in(parsed.fixed)
    for expr in parsed.offsets:
        used |= variables_in(expr)
    for term in parsed.random:
        used |= variables_in(term.expr)
        used |= set(term.group)
    return used


def _total_offset(
    parsed: ParsedFormula, frame: pd.DataFrame, given: np.ndarray | None
) -> np.ndarray | None:
    total = None if given is None else np.asarray(given, dtype=float).copy()
    for expr in parsed.offsets:
        values = evaluate_expression(expr, frame, "offset")
        total = values if total is None else total + values
    return total


# --------------------------------------------------------------------------- newdata


def newdata_fixed_matrix(fixed: FixedEffects, newdata: pd.DataFrame) -> np.ndarray:
    """The fixed-effects matrix for new data, with the fitted model's encoding."""
    for factor, levels in _factor_levels(fixed.model_spec).items():
        if factor in newdata.columns:
            unseen = sorted(set(map(str, newdata[factor].dropna().unique())) - set(map(str, levels)))
            if unseen:
                raise PredictionError(
                    f"newdata column {factor!r} has level(s) {unseen} not seen in the fit"
                )
    return apply_spec(fixed.model_spec, newdata, "fixed-effects")[:, fixed.kept]


def apply_spec(model_spec: Any, newdata: pd.DataFrame, what: str) -> np.ndarray:
    """Rebuild a model matrix on new data with the fitted encoding (stateful
    transforms such as ``scale()`` keep their training state)."""
    try:
        mm = model_spec.get_model_matrix(newdata, na_action="ignore", context=R_FUNCTIONS)
    except MixedModelsError:
        raise
    except Exception as err:
        raise PredictionError(f"cannot build the {what} matrix for newdata: {err}") from err
    return np.asarray(mm, dtype=float)


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
