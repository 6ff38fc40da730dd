"""The allow-list every Python expression of a formula passes before anything evaluates it.

Formulas arrive from pipelines, web forms, the CLI and JSON; formulaic (and
this package's own fast paths) evaluate the Python parts of a formula, such as
``I(Days ** 2)``, ``log(Reaction)`` or ``cbind(incidence, size - incidence)``.
Evaluating arbitrary Python would run arbitrary code
(``I(__import__('os').system(...))``), so each such part is parsed with
:mod:`ast` and accepted only if every node is one of:

* a name (a data column, checked against the data later, or ``pi``);
  R-style dotted names (``my.var``) are column names too;
* a number or ``True``/``False``;
* an arithmetic, comparison or boolean operator;
* a call of a function in :data:`FUNCTIONS` (or of ``np.<f>`` for ``f`` in
  :data:`NUMPY_FUNCTIONS`), with the arguments that function takes: data
  expressions where it takes data, literals (numbers, strings, lists of them,
  a contrast such as ``contr.sum``) where it takes settings.

Everything else (attribute access, subscripts, lambdas, comprehensions,
f-strings, assignment expressions, dunder names, starred or ``**`` arguments,
calls of any other callable) is a :class:`~mixedmodels.exceptions.FormulaError`
with a caret under the offending text. The list is documented in
``docs/formulas.md``.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from typing import Any, NoReturn

from mixedmodels.exceptions import FormulaError

__all__ = [
    "CONSTANTS",
    "NAMESPACES",
    "FUNCTIONS",
    "NUMPY_FUNCTIONS",
    "FunctionRule",
    "check_expression",
]


@dataclass(frozen=True)
class FunctionRule:
    """What a formula function takes.

    Attributes
    ----------
    data_args : int
        Number of leading positional arguments that are data expressions.
    settings : tuple of str
        Names of the further arguments, positional (in this order) or by
        keyword; their values must be literals.
    """

    data_args: int = 1
    settings: tuple[str, ...] = ()


_ONE = FunctionRule()
_SPLINE = ("df", "knots", "degree", "include_intercept", "lower_bound", "upper_bound",
           "extrapolation")
_CUBIC = ("df", "knots", "lower_bound", "upper_bound", "constraints", "extrapolation")

# The functions a formula may call, and the arguments they take.
FUNCTIONS: dict[str, FunctionRule] = {
    "I": _ONE,
    "log": _ONE, "log1p": _ONE, "log2": _ONE, "log10": _ONE,
    "exp": _ONE, "expm1": _ONE, "exp2": _ONE, "exp10": _ONE,
    "sqrt": _ONE, "abs": _ONE, "sin": _ONE, "cos": _ONE, "tan": _ONE,
    "C": FunctionRule(1, ("contrasts", "levels", "spans_intercept")),
    "factor": _ONE,
    "poly": FunctionRule(1, ("degree", "raw")),
    "scale": FunctionRule(1, ("center", "scale", "ddof")),
    "center": _ONE,
    "standardize": FunctionRule(1, ("center", "rescale", "ddof")),
    "bs": FunctionRule(1, _SPLINE),
    "cr": FunctionRule(1, _CUBIC), "cs": FunctionRule(1, _CUBIC), "cc": FunctionRule(1, _CUBIC),
    "Q": FunctionRule(0, ("name",)),
}

# ``np.<name>`` calls accepted (numpy's spelling of the functions above, and a few
# element-wise ones of two arguments); data arguments only.
NUMPY_FUNCTIONS: dict[str, FunctionRule] = {
    **{
        name: _ONE
        for name in (
            "log", "log1p", "log2", "log10", "exp", "expm1", "exp2", "sqrt", "abs",
            "absolute", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh",
            "tanh", "square", "sign", "floor", "ceil", "rint",
        )
    },
    **{name: FunctionRule(2) for name in ("maximum", "minimum", "power", "arctan2")},
}

# Names (and ``np.`` attributes) that are numbers, not columns, unless the data
# have a column of that name.
CONSTANTS = frozenset({"pi"})
_NUMPY_CONSTANTS = frozenset({"pi", "e"})

# The modules formula evaluation knows (numpy as ``np``; formulaic's contrasts as
# ``contr``): never data columns, and only their allowed members may be used.
NAMESPACES = frozenset({"np", "contr"})

# Contrasts C() takes as its second argument: ``contr.sum`` or ``contr.sum()``,
# and formulaic's classes ``Sum()``, ``Treatment("b")``, ...
_CONTRAST_NAMES = frozenset({"treatment", "sum", "helmert", "poly", "diff"})
_CONTRAST_CLASSES = frozenset({"Treatment", "Sum", "Helmert", "Poly", "Diff"})

_BINARY_OPS = (
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.BitXor, ast.BitOr, ast.BitAnd,
)
_UNARY_OPS = (ast.USub, ast.UAdd, ast.Not, ast.Invert)
_COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)

# What the rejected node kinds are called in the messages.
_NODE_NAMES = {
    ast.Attribute: "attribute access is",
    ast.Subscript: "subscripts ([...]) are",
    ast.Lambda: "lambda is",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "generator expressions are",
    ast.NamedExpr: "assignment expressions (:=) are",
    ast.JoinedStr: "f-strings are",
    ast.Starred: "starred arguments are",
    ast.IfExp: "conditional expressions (a if b else c) are",
    ast.Dict: "dictionaries are",
    ast.Set: "sets are",
    ast.List: "lists are",
    ast.Tuple: "tuples are",
    ast.Await: "await is",
    ast.Yield: "yield is",
    ast.YieldFrom: "yield is",
    ast.Slice: "slices are",
}


def check_expression(
    text: str, formula: str | None = None, start: int = 0, response: bool = False
) -> None:
    """Raise unless ``text`` is an allowed formula expression.

    Parameters
    ----------
    text : str
        A Python expression part of a formula, e.g. ``"I(Days ** 2)"``,
        ``"log(Reaction)"``; backticked names (```my col```) are names.
    formula : str, optional
        The whole formula the text is part of, for the caret of the message
        (default: ``text`` itself).
    start : int
        Character offset of ``text`` in ``formula``.
    response : bool
        Whether ``text`` is a left-hand side, where ``cbind(a, b)`` may be the
        whole expression.

    Raises
    ------
    FormulaError
        Naming what is not allowed and pointing at it.
    """
    problem = _problem(text, response)
    if problem is not None:
        message, at = problem
        if formula is None:
            formula, start = text, 0
        raise FormulaError(message, formula, start + at)


def check_evaluated_terms(formula: Any) -> None:
    """Check every term a parsed formulaic formula will evaluate as Python.

    The formula side was checked as text before formulaic parsed it; this
    checks what formulaic's own parser made of it (the expressions it will
    ``eval``), so that nothing relies on the two tokenizers agreeing, and a
    stored model spec is checked again before it is applied to new data.

    Parameters
    ----------
    formula : formulaic SimpleFormula
        An iterable of terms, each with ``factors`` holding ``expr`` and
        ``eval_method``.

    Raises
    ------
    FormulaError
        At the first Python factor outside the allow-list.
    """
    for term in formula:
        for factor in term.factors:
            if getattr(factor.eval_method, "value", factor.eval_method) == "python":
                check_expression(factor.expr)


@functools.lru_cache(maxsize=2048)
def _problem(text: str, response: bool) -> tuple[str, int] | None:
    """``(message, offset in text)`` of the first disallowed part, or ``None``."""
    masked = _mask_backticks(text)
    # Python's and formulaic's tokenizers must cut the text the same way: no
    # escapes or triple quotes, which a simpler tokenizer could read differently
    for tricky, what in (("\\", "backslashes"), ('"""', "triple-quoted strings"),
                         ("'''", "triple-quoted strings")):
        if tricky in masked:
            return f"{what} are not allowed in a formula", masked.index(tricky)
    source = f"({masked}\n)"  # parentheses: the text may span lines
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as err:
        return f"not a valid expression: {text.strip()!r}", _syntax_offset(err, len(text))
    checker = _Checker(source, text)
    try:
        if response and _is_cbind(tree):
            checker.cbind(tree)
        else:
            checker.data(tree)
    except _Rejected as rejected:
        return rejected.message, rejected.offset
    return None


def _syntax_offset(err: SyntaxError, length: int) -> int:
    """Character offset in the text of a syntax error of the wrapped source."""
    offset = (err.offset or 2) - 2 if (err.lineno or 1) == 1 else length
    return min(max(offset, 0), max(length - 1, 0))


def _mask_backticks(text: str) -> str:
    """Return ``text`` with each backticked name replaced by an identifier of the same length.

    The identifier is ``B`` repeated, so that ``ast`` parses the text and
    offsets are kept; quoted strings are skipped.
    """
    out, i = list(text), 0
    while i < len(text):
        char = text[i]
        if char in "'\"`":
            end = i + 1
            while end < len(text) and text[end] != char:
                end += 2 if (text[end] == "\\" and char != "`") else 1
            if char == "`" and end < len(text):
                out[i : end + 1] = "B" * (end + 1 - i)
            i = end + 1
        else:
            i += 1
    return "".join(out)


def _is_cbind(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "cbind"


class _Rejected(Exception):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message = message
        self.offset = offset


class _Checker:
    """A walk of an expression tree that checks it against the allow-list.

    It raises :class:`_Rejected` at the first node outside the allow-list.
    """

    def __init__(self, source: str, text: str):
        self.source = source
        self.written = f"({text}\n)"  # ``source`` before masking: the same offsets
        self.line_starts = [0]
        for line in source.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))

    # ----------------------------------------------------------- positions

    def offset(self, node: ast.AST) -> int:
        """Character offset of ``node`` in the text (ast counts UTF-8 bytes)."""
        line_start = self.line_starts[node.lineno - 1]
        line = self.source[line_start:]
        column = len(line.encode("utf-8")[: node.col_offset].decode("utf-8", "replace"))
        return max(line_start + column - 1, 0)  # - 1: the added "("

    def segment(self, node: ast.AST) -> str:
        """Return the text of ``node`` as written (backticked names unmasked)."""
        return (ast.get_source_segment(self.written, node) or "").strip()

    def reject(self, node: ast.AST, message: str) -> NoReturn:
        raise _Rejected(message, self.offset(node))

    # ----------------------------------------------------------- data expressions

    def data(self, node: ast.AST) -> None:
        """Check a data expression: names, numbers, operators, allowed calls."""
        if isinstance(node, ast.Name):
            self.name(node)
        elif isinstance(node, ast.Attribute):
            self.dotted_value(node)
        elif isinstance(node, ast.Constant):
            self.number(node)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, _BINARY_OPS):
            self.data(node.left)
            self.data(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY_OPS):
            self.data(node.operand)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.data(value)
        elif isinstance(node, ast.Compare):
            self.compare(node)
        elif isinstance(node, ast.Call):
            self.call(node)
        else:
            self.reject(node, f"{self.kind(node)} not allowed in a formula: {self.segment(node)!r}")

    def kind(self, node: ast.AST) -> str:
        """Return what a rejected node is called, with its verb (``"lambda is"``)."""
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.BoolOp)):
            return f"operator {type(node.op).__name__} is"
        return _NODE_NAMES.get(type(node), f"{type(node).__name__} is")

    def name(self, node: ast.Name) -> None:
        if node.id.startswith("__"):
            self.reject(node, f"dunder name {node.id!r} is not allowed in a formula")
        if node.id == "cbind":
            self.reject(node, "cbind(successes, failures) must be the whole left-hand side")
        if node.id in NAMESPACES:
            self.reject(node, f"the module {node.id!r} is not allowed in a formula (only its "
                              "members listed in docs/formulas.md can be used)")

    def number(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.reject(
                node,
                f"a string ({self.segment(node)}) is only allowed as a setting of a function "
                "(e.g. C(f, levels=['a', 'b'])) or in Q(\"column name\"); "
                "write a column name with backticks or Q(...)",
            )
        if not isinstance(node.value, (int, float, complex, bool)):
            self.reject(node, f"{self.segment(node)!r} is not allowed in a formula")

    def compare(self, node: ast.Compare) -> None:
        """Check a comparison of data expressions.

        A string may stand on either side, as in R's ``I(group == "treated")``.
        """
        self.comparand(node.left)
        for op, right in zip(node.ops, node.comparators):
            if not isinstance(op, _COMPARISONS):
                self.reject(node, f"comparison {type(op).__name__} is not allowed in a formula")
            self.comparand(right)

    def comparand(self, node: ast.AST) -> None:
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            self.data(node)

    def dotted(self, node: ast.AST) -> list[str] | None:
        """Return ``["a", "b", "c"]`` for the plain dotted name ``a.b.c``, else ``None``."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        return [node.id, *reversed(parts)]

    def dotted_value(self, node: ast.Attribute) -> None:
        """Check an attribute: ``np.pi`` and ``np.e``, or an R-style dotted column name.

        A dotted column name (``my.var``) is checked against the data later;
        any other attribute access is refused.
        """
        parts = self.dotted(node)
        if parts is None or any(p.startswith("__") for p in parts):
            self.reject(node, f"attribute access is not allowed in a formula: {self.segment(node)!r}")
        if parts == ["np", parts[-1]] and parts[-1] in _NUMPY_CONSTANTS:
            return
        if parts[0] in NAMESPACES:
            self.reject(node, f"attribute access is not allowed in a formula: {self.segment(node)!r}")

    # ----------------------------------------------------------- calls

    def call(self, node: ast.Call) -> None:
        self.arguments(node, self.rule(node))

    def rule(self, node: ast.Call) -> FunctionRule:
        """Return the rule of the called function; reject, naming it, a function not allowed."""
        func = node.func
        if isinstance(func, ast.Name) and func.id in FUNCTIONS:
            return FUNCTIONS[func.id]
        parts = self.dotted(func)
        if parts and len(parts) == 2 and parts[0] == "np" and parts[1] in NUMPY_FUNCTIONS:
            return NUMPY_FUNCTIONS[parts[1]]
        callee = self.segment(func)
        if isinstance(func, ast.Name) and func.id == "cbind":
            self.reject(func, "cbind(successes, failures) must be the whole left-hand side")
        if isinstance(func, ast.Name) and func.id == "offset":
            self.reject(func, "offset(...) is only allowed as a term of the formula's right side")
        self.reject(
            func,
            f"calling {callee!r} is not allowed in a formula; the functions are "
            f"{', '.join(sorted(FUNCTIONS))} (see docs/formulas.md)",
        )

    def arguments(self, node: ast.Call, rule: FunctionRule) -> None:
        name = self.segment(node.func)
        positional = node.args
        if len(positional) > rule.data_args + len(rule.settings):
            self.reject(node, f"{name}() takes at most {rule.data_args + len(rule.settings)} "
                              f"argument(s), got {len(positional)}")
        if len(positional) < rule.data_args:
            self.reject(node, f"{name}() needs {rule.data_args} data argument(s)")
        for arg in positional[: rule.data_args]:
            if isinstance(arg, ast.Starred):
                self.reject(arg, "starred arguments are not allowed in a formula")
            self.data(arg)
        given = set()
        for setting, arg in zip(rule.settings, positional[rule.data_args :]):
            given.add(setting)
            self.setting(node, setting, arg)
        for keyword in node.keywords:
            if keyword.arg is None:
                self.reject(keyword.value, "**keyword arguments are not allowed in a formula")
            if keyword.arg not in rule.settings or keyword.arg in given:
                self.reject(keyword.value, f"{name}() takes no argument {keyword.arg!r} here; "
                            f"its settings are {list(rule.settings)}")
            given.add(keyword.arg)
            self.setting(node, keyword.arg, keyword.value)

    def setting(self, call: ast.Call, setting: str, node: ast.AST) -> None:
        """Check a function's setting: a literal.

        That is a number, string, bool, None, a list or tuple of those; in C()'s
        contrasts also a contrast (``contr.sum``, ``Treatment('b')``); Q()'s
        name must be a string.
        """
        if setting == "name":
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                self.reject(node, 'Q() takes one quoted column name, e.g. Q("my column")')
            return
        if setting == "contrasts" and self.contrast(node):
            return
        self.literal(node)

    def literal(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and not isinstance(node.value, bytes):
            return
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
                and isinstance(node.operand, ast.Constant)
                and isinstance(node.operand.value, (int, float))):
            return
        if isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                self.literal(element)
            return
        self.reject(node, f"a function setting must be a literal (a number, a string or a "
                          f"list of them), not {self.segment(node)!r}")

    def contrast(self, node: ast.AST) -> bool:
        """Return whether ``node`` is a contrast, checking a call's arguments are literals.

        A contrast is ``contr.<name>``, ``contr.<name>(literals)`` or a contrast
        class called with literals (``Treatment("b")``).
        """
        called = isinstance(node, ast.Call)
        parts = self.dotted(node.func if called else node)
        known = parts is not None and (
            (len(parts) == 2 and parts[0] == "contr" and parts[1] in _CONTRAST_NAMES)
            or (called and len(parts) == 1 and parts[0] in _CONTRAST_CLASSES)
        )
        if known and called:
            for keyword in node.keywords:
                if keyword.arg is None:
                    self.reject(keyword.value, "**keyword arguments are not allowed in a formula")
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self.literal(arg)
        return known

    # ----------------------------------------------------------- cbind

    def cbind(self, node: ast.Call) -> None:
        """Check ``cbind(successes, failures)``: two data arguments, optionally named."""
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.reject(arg, "starred arguments are not allowed in a formula")
            self.data(arg)
        for keyword in node.keywords:
            if keyword.arg is None:
                self.reject(keyword.value, "**keyword arguments are not allowed in a formula")
            self.data(keyword.value)
