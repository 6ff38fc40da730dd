"""The formula scanner: text -> tokens that keep their character positions.

With bracket pairs, depths and call arguments (:class:`Scan`), so that every
syntax error can point at its character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mixedmodels.exceptions import FormulaError


@dataclass(frozen=True)
class Token:
    """One token of formula text, with its character positions.

    Attributes
    ----------
    kind : str
        ``"name"``, ``"number"``, ``"backtick"``, ``"string"`` or ``"op"``.
    text : str
        The token's text as written.
    start, end : int
        Its character positions in the text: ``text[start:end]``.
    """

    kind: str  # "name", "number", "backtick", "string" or "op"
    text: str
    start: int
    end: int


# Identifiers are Unicode, as in Python and R (``réaction``); R-style dots allowed.
NAME_RE = re.compile(r"[^\W\d][\w.]*")
_NUMBER_RE = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[jJ]?")
_OPERATORS = ("||", "**", "//", "==", "!=", "<=", ">=", "<<", ">>")
BARS = ("|", "||")
_OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in _OPENERS.items()}
OPERAND_KINDS = ("name", "number", "backtick", "string")


def tokenize(text: str) -> list[Token]:
    """Split formula text into tokens with their character positions.

    Parameters
    ----------
    text : str
        Formula or expression text.

    Returns
    -------
    list of Token
        Tokens in order; whitespace (including newlines) is skipped, and so
        is a comment from ``#`` to the end of its line, as R's parser does.

    Raises
    ------
    FormulaError
        For an unterminated string or backticked name.
    """
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        if text[pos] == "#":
            newline = text.find("\n", pos)
            pos = len(text) if newline < 0 else newline
            continue
        token = _next_token(text, pos)
        tokens.append(token)
        pos = token.end
    return tokens


def _next_token(text: str, pos: int) -> Token:
    """Read the single token that starts at ``pos``."""
    char = text[pos]
    if char in "`'\"":
        return _quoted_token(text, pos)
    for kind, regex in (("number", _NUMBER_RE), ("name", NAME_RE)):
        match = regex.match(text, pos)
        if match:
            return Token(kind, match.group(), pos, match.end())
    for op in _OPERATORS:
        if text.startswith(op, pos):
            return Token("op", op, pos, pos + len(op))
    return Token("op", char, pos, pos + 1)


def _quoted_token(text: str, pos: int) -> Token:
    """Read a backticked name or a quoted string starting at ``pos``."""
    quote = text[pos]
    end = pos + 1
    while end < len(text) and text[end] != quote:
        end += 2 if (text[end] == "\\" and quote != "`") else 1
    if end >= len(text):
        what = "backticked name" if quote == "`" else "string"
        raise FormulaError(f"unterminated {what}", text, pos)
    kind = "backtick" if quote == "`" else "string"
    return Token(kind, text[pos : end + 1], pos, end + 1)


def _match_brackets(tokens: list[Token], text: str) -> dict[int, int]:
    """Pair opening and closing brackets (token indices, both directions).

    Raises
    ------
    FormulaError
        At an unmatched or mismatched bracket.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.kind != "op":
            continue
        if tok.text in _OPENERS:
            stack.append(i)
        elif tok.text in CLOSERS:
            if not stack:
                raise FormulaError(f"unmatched '{tok.text}'", text, tok.start)
            opener = stack.pop()
            if tokens[opener].text != CLOSERS[tok.text]:
                raise FormulaError(
                    f"'{tok.text}' does not match '{tokens[opener].text}'", text, tok.start
                )
            pairs[opener] = i
            pairs[i] = opener
    if stack:
        raise FormulaError(f"unmatched '{tokens[stack[-1]].text}'", text, tokens[stack[-1]].start)
    return pairs


def _depths(tokens: list[Token]) -> list[int]:
    """Bracket depth of each token (brackets themselves count as outside)."""
    depths = []
    depth = 0
    for tok in tokens:
        if tok.kind == "op" and tok.text in CLOSERS:
            depth -= 1
        depths.append(depth)
        if tok.kind == "op" and tok.text in _OPENERS:
            depth += 1
    return depths


def _inside_calls(tokens: list[Token]) -> list[bool]:
    """Whether each token lies inside a function call's brackets (at any depth)."""
    inside: list[bool] = []
    stack: list[bool] = []  # per open bracket: is it, or an outer one, a call?
    for i, tok in enumerate(tokens):
        if tok.kind == "op" and tok.text in CLOSERS and stack:
            stack.pop()
        inside.append(bool(stack) and stack[-1])
        if tok.kind == "op" and tok.text in _OPENERS:
            stack.append((bool(stack) and stack[-1]) or is_call(tokens, i))
    return inside


def is_call(tokens: list[Token], i: int) -> bool:
    """Whether the bracket at token ``i`` opens a function call's arguments."""
    return i > 0 and tokens[i - 1].kind in ("name", "backtick")


class Scan:
    """Tokens of one formula with bracket pairs and depths.

    Parameters
    ----------
    text : str
        Formula or expression text.

    Attributes
    ----------
    text : str
        The text scanned.
    tokens : list of Token
        Its tokens (:func:`tokenize`).
    pairs : dict of int to int
        The matching bracket of each bracket token, both directions.
    depths : list of int
        Bracket depth of each token (brackets themselves count as outside).
    in_call : list of bool
        Whether each token lies inside a function call's brackets.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pairs = _match_brackets(self.tokens, text)
        self.depths = _depths(self.tokens)
        self.in_call = _inside_calls(self.tokens)

    def span(self, lo: int, hi: int, python: bool = False) -> str:
        """Return the text of tokens ``lo..hi-1`` with each run of whitespace made one space.

        A ``^`` that R evaluates as a power (inside a function's arguments,
        ``I(x^2)``, or anywhere in Python text: ``python=True``, the response)
        is written ``**``: Python and formulaic read ``^`` as exclusive or, so
        ``I(Days^2)`` would otherwise silently be ``Days XOR 2``.  Outside
        calls ``^`` stays formula syntax (``(a + b)^2``, interactions).
        """
        parts: list[str] = []
        for i in range(lo, hi):
            tok = self.tokens[i]
            if parts and tok.start > self.tokens[i - 1].end:
                parts.append(" ")
            power = tok.kind == "op" and tok.text == "^" and (python or self.in_call[i])
            parts.append("**" if power else tok.text)
        return "".join(parts)

    def error(self, message: str, i: int) -> FormulaError:
        """Return a FormulaError pointing at token ``i`` (or the end of the text)."""
        pos = self.tokens[i].start if i < len(self.tokens) else len(self.text)
        return FormulaError(message, self.text, pos)

    def is_op(self, i: int, *ops: str) -> bool:
        """Return whether token ``i`` is one of the operators ``ops``."""
        tok = self.tokens[i]
        return tok.kind == "op" and tok.text in ops
