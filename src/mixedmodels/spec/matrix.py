"""Model matrices of one formula side.

:class:`SimpleSpec` for intercepts, numbers and treatment-coded factors (no
formula machinery), formulaic for the rest (:func:`model_matrix`), and
arithmetic expressions of columns (:func:`evaluate_expression`, used by
responses and offsets).
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Collection

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, FormulaError, PredictionError
from mixedmodels.spec.columns import ArrayColumns, numeric_not_bool
from mixedmodels.spec.formula import check_formula_side
from mixedmodels.spec.guard import check_evaluated_terms, check_expression
from mixedmodels.spec.levels import factor_level_codes

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
    """A model matrix with its column names and the spec that rebuilds it on new data.

    Attributes
    ----------
    values : numpy.ndarray, shape (n, p)
        The matrix (``numpy.asarray`` of the object gives it).
    columns : list of str
        Column names in formulaic's spelling (see ``r_column_names`` for R's).
    model_spec : SimpleSpec, AliasedSpec or formulaic ModelSpec
        Rebuilds the matrix on new data (``get_model_matrix``).
    shape : tuple of int
        The matrix's shape.
    """

    values: np.ndarray
    columns: list[str]
    model_spec: Any = field(repr=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype, copy=False)

    @property
    def shape(self) -> tuple[int, int]:
        """The matrix's shape."""
        return self.values.shape


class SimpleSpec:
    """Model matrix of an optional intercept, plain numeric columns and treatment-coded factors.

    Factors are unordered ones, with an intercept only, in treatment coding
    (first level the reference, one column per other level).

    The common random-effects sides (``1``, ``Days``, ``0 + x``) and simple fixed
    parts (``1 + period``, ``service + x``) need no formula machinery; building
    them directly keeps the per-fit overhead of small models low (formulaic
    spends ~6 ms on one factor). The columns, their names, the encoder state of
    the factors and the matrix on new data are formulaic's; anything else goes
    through formulaic.

    Parameters
    ----------
    intercept : bool
        Whether the matrix has an intercept column.
    variables : list of str
        In formula order.
    levels : dict, optional
        The factors among ``variables`` and their levels (the fitted values,
        as formulaic's encoder keeps them).
    interactions : list of (str, str), optional
        Two-way interaction terms, as written (their factors are among the
        main effects: then formulaic codes them by treatment contrasts too).

    Attributes
    ----------
    intercept : bool
        Whether the matrix has an intercept column.
    variables : list of str
        The main effects, in formula order.
    levels : dict of str to list
        The factors among ``variables`` and their fitted levels.
    interactions : list of (str, str)
        The two-way interaction terms.
    column_names : list of str
        formulaic's names of the columns (``Intercept``, ``x``, ``f[T.b]``, ...).
    encoder_state : dict
        The factors' levels in formulaic's layout.
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
        """Return the terms after the intercept, in formulaic's order.

        Main effects first, then the two-way interactions.
        """
        return [(v,) for v in self.variables] + [tuple(p) for p in self.interactions]

    def _columns_of(self, term: tuple[str, ...]) -> list[str]:
        """Return formulaic's column names of a term.

        A factor's treatment columns are ``f[T.b]``; in an interaction the first
        variable's columns vary fastest (``a[T.y]:b[T.q]``, ``a[T.z]:b[T.q]``,
        ...).
        """
        return self._compose(term, lambda var, level: f"{var}[T.{level}]")

    def _compose(self, term: tuple[str, ...], level_name) -> list[str]:
        """Return the names of a term's columns.

        A number's own name, a factor's ``level_name(var, level)`` for each
        level after the first, joined by ``:`` with the first variable varying
        fastest.
        """
        names = [""]
        for var in term:
            if var in self.levels:
                own = [level_name(var, level) for level in self.levels[var][1:]]
            else:
                own = [var]
            names = [f"{n}:{o}" if n else o for o in own for n in names]
        return names

    def widths(self) -> list[int]:
        """Return the number of columns of each term (see :meth:`terms`), in order."""
        return [len(self._columns_of(term)) for term in self.terms()]

    @property
    def encoder_state(self) -> dict:
        """The factors' levels in formulaic's layout (see ``fitted_factor_levels``)."""
        return {name: ("CATEGORICAL", {"categories": list(lv)}) for name, lv in self.levels.items()}

    @classmethod
    def parse(cls, rhs: str, data: pd.DataFrame | ArrayColumns) -> SimpleSpec | None:
        """Return the spec of ``rhs`` if it is that simple, else ``None``.

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
            elif numeric_not_bool(data[name]):
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
        """Return the model matrix of ``data``, as formulaic's ``ModelSpec.get_model_matrix``.

        Factor values are matched to the fitted levels (a :class:`PredictionError` for
        a value that is none, or a missing column); ``na_action`` and ``context`` are
        accepted for formulaic's signature and not used.
        """
        def columns(name: str) -> np.ndarray:
            if name not in data.columns:
                raise PredictionError(f"column {name!r} is not in the data")
            if name in self.levels:
                return factor_level_codes(data[name], self.levels[name])
            return data[name].to_numpy(dtype=float)[:, None]

        return self._build(len(data), columns)

    def from_arrays(self, cols: ArrayColumns) -> DesignMatrix:
        """Return :meth:`get_model_matrix` of the complete rows held by ``cols``."""

        def columns(name: str) -> np.ndarray:
            if name in self.levels:  # codes of the levels parse() found in these rows
                return cols.factor([name])[0]
            return cols.floats(name)[:, None]  # the same cast as to_numpy(dtype=float)

        return self._build(cols.nrows, columns)

    def _build(self, n: int, columns) -> DesignMatrix:
        """Return the matrix from ``columns(name)``, each variable read once.

        ``columns(name)`` gives a factor's level codes or a number's (n, 1)
        column. The matrix is the intercept, main effects, then interactions as
        products with the first variable's columns varying fastest. Terms of
        factors only are written as the ones they are (no dummy blocks and
        products of them).
        """
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
        """Return (cell, E) with X = E[cell] when every term holds factors only.

        The wide matrix of a factorial design is then a few distinct rows: a
        row's cell is the mixed-radix number of its factors' level codes, E the
        matrix of every combination of levels, built by the same code as X (so
        its rows are X's exactly). None for other terms, more cells than
        ``MAX_CELLS_PER_ROW`` of the rows, fewer rows than ``MIN_CELL_ROWS``,
        or a missing level.
        """
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
        """Return a variable's columns: a factor's treatment dummies, a number itself."""
        return self._dummies(name, own) if name in self.levels else own

    @staticmethod
    def _put_dummies(values: np.ndarray, j: int, codes: list[np.ndarray], widths: list[int]) -> int:
        """Write a term of factors (a main effect or their interaction) into ``values``.

        The zeroed ``values`` get, from column ``j``, a one where every factor
        is at a level after its first, in the column the product of their
        dummies puts it (the first factor's varying fastest); rows with a
        missing level are all NaN, as the dummies' product. Returns the term's
        width.
        """
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
        """Return the treatment columns of factor ``name`` from its level codes.

        A code of -1 (missing) gives a row of NaN.
        """
        block = np.zeros((len(codes), len(self.levels[name]) - 1))
        rows = np.flatnonzero(codes > 0)
        block[rows, codes[rows] - 1] = 1.0
        missing = codes < 0
        if missing.any():
            block[missing] = np.nan
        return block

    def r_names(self) -> list[str]:
        """Return R's names of the columns, as :func:`r_column_names` would give them.

        A factor's name and level, interactions joined by ``:``.
        """
        out = ["(Intercept)"] if self.intercept else []
        for term in self.terms():
            out.extend(self._compose(term, lambda var, level: f"{var}{level}"))
        return out


def _is_plain_number(data: pd.DataFrame | ArrayColumns, name: str) -> bool:
    """Return whether ``name`` is a numeric (not boolean) column of ``data``.

    That is a column the simple spec reads as numbers.
    """
    if name not in data.columns:
        return False
    if isinstance(data, ArrayColumns):
        return name in data.plain
    return numeric_not_bool(data[name])


def _treatment_levels(values: pd.Series) -> list | None:
    """Return the levels formulaic encodes a factor column with, or None.

    For an unordered categorical they are its used categories, in order; for a
    column of strings the sorted values; None for anything else (ordered
    factors, booleans, mixed objects).
    """
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
    """Return the shape of a simple right side: intercept, main effects, interactions.

    That is the intercept flag, main-effect names (in order of appearance) and
    two-way interactions (in order of appearance, as written) of a right side
    made of an optional intercept, names, ``a:b`` and ``a*b`` (= a + b + a:b),
    else ``None``. Whether the names are numeric columns or factors, and
    whether every factor in an interaction has its main effect, is for
    :meth:`SimpleSpec.parse`.
    """
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


def model_matrix(rhs: str, data: pd.DataFrame | ArrayColumns, where: str) -> DesignMatrix:
    """Return the model matrix of a formula side ``rhs`` for ``data``.

    :class:`SimpleSpec` builds it where the side is that simple; formulaic
    builds the rest, after the allow-list check (:func:`check_formula_side`),
    with integer columns as floats (as int64 where coded as factors) and
    columns named like formula functions renamed. Errors are a
    :class:`FormulaError` naming ``where`` (e.g. ``"fixed-effects"``). Missing
    values were dropped before: NaN or Inf in the matrix come from transforms
    and are left to the caller.
    """
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
    """Return ``frame`` with its integer columns as float64, for evaluating formula terms.

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


_FACTOR_CALL = re.compile(r"(?<![\w.])(?:C|factor)\(")


def factor_calls(rhs: str) -> list[tuple[str, str]]:
    """Return every ``C(...)`` / ``factor(...)`` call of a formula side.

    Each as (the call's text, its first argument's text), in order: what
    tells a column coded as a factor (``factor(x)``) from an expression coded
    as one (``C(x + 1)``).
    """
    calls = []
    for match in _FACTOR_CALL.finditer(rhs):
        depth, first_end = 0, None
        for i in range(match.end(), len(rhs)):
            ch = rhs[i]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                if depth == 0:
                    end = i
                    break
                depth -= 1
            elif ch == "," and depth == 0 and first_end is None:
                first_end = i
        else:
            continue  # unbalanced: the parser reports it
        argument = rhs[match.end(): first_end if first_end is not None else end].strip()
        calls.append((rhs[match.start(): end + 1], argument))
    return calls


@functools.lru_cache(maxsize=1024)
def factor_arguments(rhs: str) -> frozenset[str]:
    """Return the columns a formula side codes as factors: ``x`` of ``C(x, ...)``, ``factor(x)``."""
    return frozenset(m.strip("`") for m in _FACTOR_ARGUMENT.findall(rhs))


def _reserved_names() -> set[str]:
    import formulaic.transforms

    return set(formulaic.transforms.TRANSFORMS) | set(R_FUNCTIONS)


def _reserved_aliases(rhs: str, data: pd.DataFrame) -> dict[str, str]:
    """Return aliases for the data columns named like a formula function.

    For a factor ``C`` or a column ``log`` formulaic would resolve the name to
    the function, so such columns are renamed for it (column -> alias) and
    renamed back in the column names.
    """
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
    """A formulaic spec built on renamed columns, applied to new data the same way.

    Attributes
    ----------
    spec : formulaic ModelSpec
        The spec, which knows the columns by their aliases.
    aliases : dict of str to str
        Column name -> alias.
    encoder_state : dict
        The spec's encoder state, keyed by the columns' own names.
    """

    def __init__(self, spec: Any, aliases: dict[str, str]):
        self.spec = spec
        self.aliases = aliases

    @property
    def encoder_state(self) -> dict:
        """The spec's encoder state, keyed by the columns' own names."""
        return {_unalias(k, self.aliases): v for k, v in self.spec.encoder_state.items()}

    def get_model_matrix(self, data: pd.DataFrame, **kwargs: Any) -> Any:
        """Return the spec's model matrix of ``data`` with the columns renamed to their aliases."""
        return self.spec.get_model_matrix(data.rename(columns=self.aliases), **kwargs)


def evaluate_expression(expr: str, data: pd.DataFrame | ArrayColumns, what: str) -> np.ndarray:
    """Evaluate an arithmetic expression of columns (``log(y)``, ``Days * 2``).

    The expression must pass the formula allow-list
    (:func:`~mixedmodels.spec.guard.check_expression`) and give one numeric
    column (a :class:`DataError` otherwise; ``what`` names it in messages).
    """
    check_expression(expr)
    if isinstance(data, ArrayColumns) and expr in data.plain:
        return data.floats(expr)  # what formulaic's I(x) gives for a numeric x
    if isinstance(data, ArrayColumns):
        value = _plain_arithmetic(expr, data)
        if value is not None:
            return value
    mm = model_matrix(f"0 + I({expr})", data, what)
    if mm.shape[1] != 1:
        raise DataError(f"{what} {expr!r} does not evaluate to one numeric column")
    return np.asarray(mm, dtype=float)[:, 0]


_ARITHMETIC_OPS = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
}
_ARITHMETIC_CALLS = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "log1p": np.log1p}


def _plain_arithmetic(expr: str, data: ArrayColumns) -> np.ndarray | None:
    """Return ``expr`` evaluated directly when it is plain arithmetic of numeric columns.

    Plain arithmetic is plain numeric columns, numbers, ``+ - * /``, unary
    minus and ``log``/``exp``/``sqrt``/``log1p`` of those (``size -
    incidence``, ``log(exposure)``): the same float arithmetic formulaic's
    ``I()`` does, without its per-call cost; None for anything else
    (formulaic then evaluates it).
    """
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
