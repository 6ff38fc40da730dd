"""Parsing of lme4-style model formulas.

A formula such as ``"Reaction ~ Days + (Days | Subject)"`` is split into a
response, a fixed-effects right-hand side (handed to :mod:`formulaic`
later), ``offset(...)`` terms and random-effects terms ``(expr | group)``.

The parser follows lme4's ``findbars``/``nobars``/``expandDoubleVerts``
semantics:

* ``(expr || g)`` expands into uncorrelated terms ``(1 | g)``,
  ``(0 + x | g)``, ... (``expandDoubleVerts``);
* ``(expr | a/b)`` expands into ``(expr | b:a)`` followed by ``(expr | a)``
  (``expandSlash``); ``a/b/c`` gives ``c:b:a``, ``b:a``, ``a``.

The text is scanned into tokens that keep their character positions
(:mod:`~mixedmodels.spec.tokens`), so
every syntax error is a :class:`~mixedmodels.exceptions.FormulaError` with
a caret under the offending character.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

from mixedmodels.exceptions import FormulaError
from mixedmodels.spec.guard import NAMESPACES, check_expression
from mixedmodels.spec.tokens import (
    BARS,
    CLOSERS,
    NAME_RE,
    OPERAND_KINDS,
    Scan,
    Token,
    is_call,
    tokenize,
)

__all__ = [
    "RandomTermSpec",
    "ParsedFormula",
    "check_formula_side",
    "parse_formula",
    "require_random",
    "variables_in",
]

# ---------------------------------------------------------------------------
# Public data classes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomTermSpec:
    """One (expanded) random-effects term ``(expr | group)``.

    Attributes
    ----------
    expr : str
        Left side of the bar, normalised for formulaic (``"1"``,
        ``"Days"``, ``"1 + Days"``, ``"0 + x"``).
    group : tuple of str
        Grouping variables, in the order of ``group_name``.
    group_name : str
        lme4's name of the grouping factor, e.g. ``"Subject"`` or
        ``"cask:batch"``.
    correlated : bool
        ``False`` for terms produced by expanding ``||``.
    text : str
        lme4-style text of the term, e.g. ``"(0 + Days | Subject)"``.
    """

    expr: str
    group: tuple[str, ...]
    group_name: str
    correlated: bool
    text: str


@dataclass(frozen=True)
class ParsedFormula:
    """A model formula split into its parts.

    Attributes
    ----------
    text : str
        The original formula string.
    response : str or None
        Left-hand side text, ``None`` for a one-sided formula.
    fixed : str
        Fixed-effects right-hand side for formulaic (``"1"`` if only the
        intercept remains).
    offsets : tuple of str
        Expressions inside the ``offset(...)`` terms of the fixed part.
    random : tuple of RandomTermSpec
        Expanded random-effects terms in the order written.
    """

    text: str
    response: str | None
    fixed: str
    offsets: tuple[str, ...]
    random: tuple[RandomTermSpec, ...]


# ---------------------------------------------------------------------------
# Additive terms of a token sequence
# ---------------------------------------------------------------------------


@dataclass
class _Term:
    """A top-level additive term: tokens ``lo..hi-1`` with a sign."""

    sign: str  # "+" or "-"
    lo: int
    hi: int
    sign_index: int | None  # token index of the sign, if written


def _split_terms(scan: Scan, lo: int, hi: int, what: str) -> list[_Term]:
    """Split tokens ``lo..hi-1`` at their outermost ``+`` and ``-``.

    A ``+``/``-`` is binary when it follows an operand (name, number,
    string or closing bracket).  Signs at the start of a term combine into
    the term's sign (``x + -1`` subtracts ``1``); unary minus after another
    operator (``x * -1``) stays inside the term.

    Raises
    ------
    FormulaError
        For an empty side or a trailing ``+``/``-``.
    """
    if lo >= hi:
        raise scan.error(f"{what} is empty", lo)
    base = scan.depths[lo]
    terms: list[_Term] = []
    sign, sign_index, start = "+", None, lo
    for i in range(lo, hi):
        if scan.depths[i] != base or not scan.is_op(i, "+", "-"):
            continue
        if i == start:
            sign = "+" if sign == scan.tokens[i].text else "-"
            sign_index, start = i, i + 1
        elif _ends_operand(scan, i - 1):
            terms.append(_Term(sign, start, i, sign_index))
            sign, sign_index, start = scan.tokens[i].text, i, i + 1
    if start >= hi:
        raise scan.error(f"nothing after '{scan.tokens[hi - 1].text}'", hi - 1)
    terms.append(_Term(sign, start, hi, sign_index))
    return terms


def _ends_operand(scan: Scan, i: int) -> bool:
    """Whether token ``i`` can end an operand."""
    tok = scan.tokens[i]
    return tok.kind in OPERAND_KINDS or (tok.kind == "op" and tok.text in CLOSERS)


def _join_terms(pieces: list[tuple[str, str]]) -> str:
    """Join ``(sign, text)`` pieces into ``"a + b - c"``."""
    out = ""
    for sign, text in pieces:
        if not out:
            out = text if sign == "+" else f"-{text}"
        else:
            out += f" {sign} {text}"
    return out


# ---------------------------------------------------------------------------
# Formula parsing
# ---------------------------------------------------------------------------


def _parse_formula_uncached(formula: str) -> ParsedFormula:
    """Parse an lme4-style mixed-model formula (cached: the result is immutable).

    Parameters
    ----------
    formula : str
        E.g. ``"Reaction ~ Days + (Days | Subject)"``.  Whitespace and
        newlines are allowed anywhere.

    Returns
    -------
    ParsedFormula
        Response, fixed part, offsets and expanded random terms.

    Raises
    ------
    FormulaError
        For any syntax error; ``position`` points at the problem.
    """
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, not {type(formula).__name__}")
    if not formula.strip():
        raise FormulaError("formula is empty", formula, 0)
    scan = Scan(formula)
    tilde = _find_tilde(scan)
    _check_bars(scan, tilde)
    if tilde > 0:
        _check_python(scan, 0, tilde, response=True)
    response = scan.span(0, tilde, python=True) if tilde > 0 else None
    terms = _flatten_groups(
        scan, _split_terms(scan, tilde + 1, len(scan.tokens), "right-hand side of '~'")
    )
    fixed: list[tuple[str, str]] = []
    offsets: list[str] = []
    random: list[RandomTermSpec] = []
    for term in terms:
        offset = _offset_inner(scan, term)
        if _random_term_bar(scan, term.lo, term.hi) is not None:
            random.extend(_parse_random(scan, term))
        elif offset is not None:
            offsets.append(offset)
        else:
            _reject_stray_bar(scan, term)
            _check_terms(scan, term.lo, term.hi)
            fixed.append((term.sign, scan.span(term.lo, term.hi)))
    return ParsedFormula(
        text=formula,
        response=response,
        fixed=_join_terms(fixed) if fixed else "1",
        offsets=tuple(offsets),
        random=tuple(random),
    )


def require_random(parsed: ParsedFormula) -> ParsedFormula:
    """Raise unless ``parsed`` has at least one random-effects term.

    Parameters
    ----------
    parsed : ParsedFormula
        Result of :func:`parse_formula`.

    Returns
    -------
    ParsedFormula
        ``parsed`` itself, for chaining.

    Raises
    ------
    FormulaError
        If ``parsed.random`` is empty.
    """
    if not parsed.random:
        raise FormulaError(
            "the formula has no random-effects term like (1 | group); "
            f"got {parsed.text!r} (use an ordinary linear model for fixed effects only)"
        )
    return parsed


def _flatten_groups(scan: Scan, terms: list[_Term]) -> list[_Term]:
    """Replace a parenthesised sum holding random-effects terms by its terms.

    lme4's ``findbars`` looks inside plain parentheses, so
    ``y ~ x + ((1 | g) + (0 + x | g))`` (the form R prints after expanding
    ``||``) means ``y ~ x + (1 | g) + (0 + x | g)``.

    Raises
    ------
    FormulaError
        If such a group is subtracted.
    """
    out: list[_Term] = []
    for term in terms:
        plain_group = (
            scan.is_op(term.lo, "(")
            and scan.pairs.get(term.lo) == term.hi - 1
            and not is_call(scan.tokens, term.lo)
            and term.hi - term.lo > 2
        )
        if (
            not plain_group
            or _random_term_bar(scan, term.lo, term.hi) is not None
            or not _has_bar(scan, term.lo + 1, term.hi - 1)
        ):
            out.append(term)
            continue
        if term.sign != "+":
            raise scan.error("a random-effects term cannot be subtracted", term.sign_index)
        inner = _split_terms(scan, term.lo + 1, term.hi - 1, "parenthesised group")
        out.extend(_flatten_groups(scan, inner))
    return out


def _has_bar(scan: Scan, lo: int, hi: int) -> bool:
    """Whether tokens ``lo..hi-1`` hold a bar outside function-call arguments."""
    return any(
        scan.is_op(i, *BARS)
        and not any(is_call(scan.tokens, j) for j in _enclosing_openers(scan, i))
        for i in range(lo, hi)
    )


def _reject_stray_bar(scan: Scan, term: _Term) -> None:
    """Raise if a fixed-effects term still holds a random-effects bar."""
    for i in range(term.lo, term.hi):
        if scan.is_op(i, *BARS) and not any(
            is_call(scan.tokens, j) for j in _enclosing_openers(scan, i)
        ):
            raise scan.error(
                "a random-effects term (expr | group) must be added with '+'", term.lo
            )


def _find_tilde(scan: Scan) -> int:
    """Token index of the single top-level ``~``.

    Raises
    ------
    FormulaError
        If there is no top-level ``~`` or more than one.
    """
    found = [
        i for i, tok in enumerate(scan.tokens) if scan.depths[i] == 0 and scan.is_op(i, "~")
    ]
    if not found:
        raise FormulaError(
            f"formula has no '~' (expected e.g. 'y ~ x + (1 | g)'): {scan.text!r}"
        )
    if len(found) > 1:
        raise scan.error("formula has more than one '~'", found[1])
    return found[0]


def _check_bars(scan: Scan, tilde: int) -> None:
    """Reject ``|``/``||`` that are not directly inside a random-term group.

    A bar is allowed inside function-call arguments (Python's bitwise or,
    e.g. ``I(a | b)``) and, on the right of ``~``, at the top level of a
    plain parenthesised group; everything else is an error.  Whether that
    group is a whole term is checked by :func:`_random_term_bar`.
    """
    for i, tok in enumerate(scan.tokens):
        if not scan.is_op(i, *BARS):
            continue
        openers = _enclosing_openers(scan, i)
        if any(is_call(scan.tokens, j) for j in openers):
            continue
        if i < tilde:
            raise scan.error(f"'{tok.text}' on the left of '~'", i)
        if not openers:
            raise scan.error(
                f"'{tok.text}' outside parentheses; write random effects as (expr | group)", i
            )
        if any(scan.tokens[j].text != "(" for j in openers):
            raise scan.error(f"'{tok.text}' nested inside another group", i)


def _enclosing_openers(scan: Scan, i: int) -> list[int]:
    """Token indices of the brackets enclosing token ``i``, innermost first."""
    openers = []
    depth = scan.depths[i]
    for j in range(i - 1, -1, -1):
        if depth == 0:
            break
        if scan.depths[j] == depth - 1:  # the innermost enclosing opener
            openers.append(j)
            depth -= 1
    return openers


def _random_term_bar(scan: Scan, lo: int, hi: int) -> int | None:
    """Token index of the bar if tokens ``lo..hi-1`` contain a ``(... | ...)``.

    Returns ``None`` for a term without a random-effects group.

    Raises
    ------
    FormulaError
        If a random-effects group is combined with other operators
        (e.g. ``(1 | g):x``) or has more than one bar.
    """
    bars = [
        i
        for i in range(lo, hi)
        if scan.is_op(i, *BARS) and scan.depths[i] == scan.depths[lo] + 1
        and not is_call(scan.tokens, _enclosing_openers(scan, i)[0])
    ]
    if not bars:
        return None
    whole = scan.is_op(lo, "(") and scan.pairs.get(lo) == hi - 1
    if not whole:
        raise scan.error("a random-effects term (expr | group) must be added with '+'", lo)
    if len(bars) > 1:
        raise scan.error("more than one bar in a random-effects term", bars[1])
    return bars[0]


def _offset_inner(scan: Scan, term: _Term) -> str | None:
    """Text inside ``offset(...)`` if ``term`` is exactly an offset call."""
    tok = scan.tokens[term.lo]
    if tok.kind != "name" or tok.text != "offset" or term.hi - term.lo < 3:
        return None
    if not (scan.is_op(term.lo + 1, "(") and scan.pairs.get(term.lo + 1) == term.hi - 1):
        return None
    if term.sign != "+":
        raise scan.error("an offset cannot be subtracted", term.sign_index)
    if term.hi - term.lo == 3:
        raise scan.error("offset() needs an expression", term.lo)
    _check_python(scan, term.lo + 2, term.hi - 1)
    return scan.span(term.lo + 2, term.hi - 1)


# ---------------------------------------------------------------------------
# The allow-list: formula syntax between Python parts checked by formula_guard
# ---------------------------------------------------------------------------

# Formula operators (not Python) that may join the terms' names and calls.
_FORMULA_OPS = frozenset({"+", "-", "*", "/", ":", "^", "**", "(", ")"})


def _check_terms(scan: Scan, lo: int, hi: int) -> None:
    """Check tokens ``lo..hi-1`` of formula syntax (a fixed-effects term, the left side of a bar).

    Allowed are formula operators, numbers and names, and calls whose Python
    text passes :func:`~mixedmodels.spec.guard.check_expression`.

    Raises
    ------
    FormulaError
        At a string, an operator that is not formula syntax, or a Python part
        outside the allow-list.
    """
    i = lo
    while i < hi:
        tok = scan.tokens[i]
        if tok.kind in ("name", "backtick") and i + 1 < hi and scan.is_op(i + 1, "("):
            close = scan.pairs[i + 1]
            _check_python(scan, i, close + 1)
            i = close + 1
            continue
        if _is_in_operator(scan, i, hi):
            i += 3
            continue
        if tok.kind == "name":
            _check_python(scan, i, i + 1)
        elif tok.kind == "string":
            raise scan.error(
                'a string is not a term: write a column name plainly, `backticked` or as Q("name")', i
            )
        elif scan.is_op(i, "."):
            raise scan.error("'.' (all other columns) is not supported: name the columns", i)
        elif tok.kind == "op" and tok.text not in _FORMULA_OPS:
            raise scan.error(
                f"'{tok.text}' is not formula syntax; write arithmetic inside I(...)", i
            )
        i += 1


def _is_in_operator(scan: Scan, i: int, hi: int) -> bool:
    """Whether tokens ``i..i+2`` are the nesting operator ``%in%``."""
    return (
        i + 2 < hi
        and scan.is_op(i, "%")
        and scan.tokens[i + 1].text == "in"
        and scan.is_op(i + 2, "%")
    )


def _check_python(scan: Scan, lo: int, hi: int, response: bool = False) -> None:
    """Check the text of tokens ``lo..hi-1`` as a Python expression (caret in the whole formula)."""
    start, end = scan.tokens[lo].start, scan.tokens[hi - 1].end
    check_expression(scan.text[start:end], scan.text, start, response)


@functools.lru_cache(maxsize=1024)
def check_formula_side(text: str) -> str:
    """Check a formula side against the allow-list before it is evaluated.

    A side is e.g. ``"0 + I(x ** 2)"`` or ``"C(f, contr.sum) + x"``; see
    :func:`_check_terms`.

    Parameters
    ----------
    text : str
        Right-hand-side text without ``~``.

    Returns
    -------
    str
        ``text`` itself.

    Raises
    ------
    FormulaError
        At the first part outside the allow-list.
    """
    scan = Scan(text)
    if scan.tokens:
        _check_terms(scan, 0, len(scan.tokens))
    return text


# ---------------------------------------------------------------------------
# Random-effects terms
# ---------------------------------------------------------------------------


def _parse_random(scan: Scan, term: _Term) -> list[RandomTermSpec]:
    """Expand one ``(expr | group)`` or ``(expr || group)`` term.

    Raises
    ------
    FormulaError
        For a subtracted term, an empty side or an invalid grouping side.
    """
    if term.sign != "+":
        raise scan.error("a random-effects term cannot be subtracted", term.sign_index)
    bar = _random_term_bar(scan, term.lo, term.hi)
    open_, close = term.lo, term.hi - 1
    if bar == open_ + 1:
        raise scan.error(f"nothing before '{scan.tokens[bar].text}' in random-effects term", bar)
    if bar == close - 1:
        raise scan.error(f"nothing after '{scan.tokens[bar].text}' in random-effects term", bar)
    levels = _grouping_levels(scan, bar + 1, close)
    _check_terms(scan, open_ + 1, bar)
    double = scan.tokens[bar].text == "||"
    exprs = _double_vert_exprs(scan, open_ + 1, bar) if double else [_lhs_expr(scan, open_ + 1, bar)]
    return [
        _make_spec(expr, group, not double)
        for expr in exprs
        for group in _expand_nesting(levels)
    ]


def _make_spec(expr: str, group: tuple[str, ...], correlated: bool) -> RandomTermSpec:
    """Build a RandomTermSpec with lme4-style text."""
    group_name = ":".join(group)
    shown = ":".join(_quote_name(name) for name in group)
    return RandomTermSpec(expr, group, group_name, correlated, f"({expr} | {shown})")


def _quote_name(name: str) -> str:
    """Backtick ``name`` unless it is a plain identifier."""
    return name if NAME_RE.fullmatch(name) else f"`{name}`"


def _lhs_pieces(scan: Scan, lo: int, hi: int) -> tuple[bool | None, list[tuple[str, str]]]:
    """Intercept flag and remaining ``(sign, text)`` terms of a bar's left side.

    Returns
    -------
    intercept : bool or None
        ``True`` for an explicit ``1``, ``False`` for ``0``/``-1``, ``None``
        when not written (implicit intercept).
    rest : list of (str, str)
        The other terms in written order.
    """
    intercept: bool | None = None
    rest: list[tuple[str, str]] = []
    for term in _split_terms(scan, lo, hi, "left side of the bar"):
        text = scan.span(term.lo, term.hi)
        if text in ("0", "1") and intercept is not False:
            intercept = (text == "1") == (term.sign == "+")
        elif text not in ("0", "1"):
            rest.append((term.sign, text))
    return intercept, rest


def _lhs_expr(scan: Scan, lo: int, hi: int) -> str:
    """Normalised left side of a single-bar term (``"0 + x"`` for ``-1 + x``)."""
    intercept, rest = _lhs_pieces(scan, lo, hi)
    if intercept is False:
        if not rest:
            raise scan.error("random-effects term has no intercept and no variables", lo)
        return _join_terms([("+", "0")] + rest)
    if intercept:
        return _join_terms([("+", "1")] + rest)
    return _join_terms(rest)


def _double_vert_exprs(scan: Scan, lo: int, hi: int) -> list[str]:
    """Left sides produced by lme4's ``expandDoubleVerts`` for ``(lhs || g)``."""
    intercept, rest = _lhs_pieces(scan, lo, hi)
    exprs = [] if intercept is False else ["1"]
    for sign, text in rest:
        if sign != "+":
            raise scan.error(f"cannot subtract '{text}' on the left of '||'", lo)
        exprs.extend(f"0 + {label}" for label in _term_labels(text))
    if not exprs:
        raise scan.error("random-effects term has no intercept and no variables", lo)
    return exprs


def _term_labels(text: str) -> list[str]:
    """Expand one additive term into R-style term labels (``a*b`` -> a, b, a:b)."""
    scan = Scan(text)
    expands = any(
        scan.depths[i] == 0 and scan.is_op(i, "*", "/", "^", "**")
        for i in range(len(scan.tokens))
    )
    if not expands:
        return [text]
    from formulaic import Formula  # deferred: formulaic is heavy

    try:
        return [str(t) for t in Formula(f"0 + {text}")]
    except Exception as exc:  # formulaic raises several parser error types
        raise FormulaError(f"cannot expand {text!r} on the left of '||': {exc}") from exc


def _grouping_levels(scan: Scan, lo: int, hi: int) -> list[tuple[str, ...]]:
    """Parse a grouping side ``a``, ``a:b`` or ``a/b/c`` into nesting levels.

    A name is plain, backticked (```my group```) or quoted as ``Q("my group")``.

    Returns
    -------
    list of tuple of str
        One tuple of names per ``/``-separated level, outermost first.

    Raises
    ------
    FormulaError
        For anything but names joined by ``:`` and ``/``.
    """
    levels: list[tuple[str, ...]] = []
    current: list[str] = []
    expect_name = True
    i = lo
    while i < hi:
        tok = scan.tokens[i]
        if expect_name:
            name, i = _grouping_name(scan, i, hi)
            current.append(name)
        elif scan.is_op(i, ":", "/"):
            if tok.text == "/":
                levels.append(tuple(current))
                current = []
            i += 1
        else:
            raise scan.error("grouping side may only join names with ':' or '/'", i)
        expect_name = not expect_name
    if expect_name:
        raise scan.error("grouping side ends with an operator", hi - 1)
    levels.append(tuple(current))
    return levels


def _grouping_name(scan: Scan, i: int, hi: int) -> tuple[str, int]:
    """Return the grouping variable's name at token ``i`` and the index after it."""
    tok = scan.tokens[i]
    if tok.kind == "backtick":
        return tok.text[1:-1], i + 1
    if tok.kind == "name" and not (i + 1 < hi and scan.is_op(i + 1, "(")):
        return tok.text, i + 1
    if _is_q_call(scan.tokens, i) and i + 3 < hi:
        return _string_value(scan.tokens[i + 2]), i + 4
    raise scan.error('grouping factor must be a variable name (plain, `backticked` or Q("..."))', i)


def _is_q_call(tokens: list[Token], i: int) -> bool:
    """Whether tokens ``i..i+3`` are ``Q("name")``."""
    return (
        i + 3 < len(tokens)
        and tokens[i].kind == "name"
        and tokens[i].text == "Q"
        and tokens[i + 1].text == "("
        and tokens[i + 2].kind == "string"
        and tokens[i + 3].text == ")"
    )


def _string_value(tok: Token) -> str:
    """Return the value of a quoted string token (Python's escapes)."""
    return ast.literal_eval(tok.text)


def _expand_nesting(levels: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """lme4's ``expandSlash``: ``a/b/c`` -> ``c:b:a``, ``b:a``, ``a`` (innermost first)."""
    groups = []
    for depth in range(len(levels), 0, -1):
        names: tuple[str, ...] = ()
        for level in reversed(levels[:depth]):
            names += level
        groups.append(names)
    return groups


# ---------------------------------------------------------------------------
# Variables
# ---------------------------------------------------------------------------

# A bare name (not called) is a column, as in R, even if a function has that
# name (a factor called C, a column called log); only these never are, nor the
# members of the modules formulas know (np.pi, contr.sum).
_NOT_VARIABLES = frozenset(
    {"True", "False", "None", "and", "or", "not", "in", "is", "if", "else", "lambda"}
    | NAMESPACES
)


def variables_in(expr: str) -> set[str]:
    """Names of the data columns a formula or expression text refers to.

    Function names (anything followed by ``(``), module attributes such as
    ``np.pi``, keyword-argument names, numbers and strings are excluded;
    ```weird name``` gives ``"weird name"`` and ``Q("name")`` gives
    ``"name"``.

    Parameters
    ----------
    expr : str
        Formula or expression text, e.g. ``"np.log(x) + I(z**2) + C(f)"``.

    Returns
    -------
    set of str
        E.g. ``{"x", "z", "f"}``.
    """
    tokens = tokenize(expr)
    names: set[str] = set()
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if tok.kind == "backtick":
            names.add(tok.text[1:-1])
        elif tok.kind == "string" and _is_q_argument(tokens, i):
            names.add(_string_value(tok))
        elif tok.kind == "name" and nxt not in ("(", "=") and _is_variable(tok.text):
            names.add(tok.text)
    return names


def _is_variable(name: str) -> bool:
    """Whether a bare name token can be a data column."""
    return name not in _NOT_VARIABLES and name.split(".")[0] not in NAMESPACES


def _is_q_argument(tokens: list[Token], i: int) -> bool:
    """Whether the string token ``i`` is the sole argument of ``Q(...)``."""
    return i >= 2 and _is_q_call(tokens, i - 2)


@functools.lru_cache(maxsize=512)
def _parse_cached(formula: str) -> ParsedFormula:
    return _parse_formula_uncached(formula)


def parse_formula(formula: str) -> ParsedFormula:
    """Parse an lme4-style mixed-model formula; see :func:`_parse_formula_uncached`.

    Refitting the same formula (simulation studies, bootstraps) parses it once.
    """
    if not isinstance(formula, str):
        return _parse_formula_uncached(formula)
    return _parse_cached(formula)
