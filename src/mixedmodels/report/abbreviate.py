"""R's ``abbreviate(names, minlength)`` (method "left.kept").

lme4's summary uses it for the row and column names of the correlation of
fixed effects.
"""

from __future__ import annotations

__all__ = ["abbreviate"]

_C_SPACE = frozenset(" \t\n\v\f\r")  # C's isspace in the C locale
_LOWER_VOWELS = frozenset("aeiou")


def _strip_chars(text: str, minlength: int, use_classes: bool) -> str:
    """Shorten ``text`` to ``minlength`` as R's C routine ``stripchars`` does.

    The routine is in R's src/main/character.c. It drops characters from the
    end until ``minlength`` is reached: lower-case vowels ending a word, then
    lower-case vowels not starting one, then lower-case letters likewise, then
    anything but a word's first character. The first character is never
    dropped; spaces count as word boundaries and are removed at the end when
    the result is still longer than ``minlength``.
    """
    s = list(text)
    nspace = 0

    def char(i: int) -> str:
        return s[i] if 0 <= i < len(s) else "\0"

    def first_of_word(i: int) -> bool:
        return char(i - 1) in _C_SPACE

    def last_of_word(i: int) -> bool:
        return char(i - 1) not in _C_SPACE and (char(i + 1) == "\0" or char(i + 1) in _C_SPACE)

    def short_enough() -> bool:
        return len(s) - nspace <= minlength

    def strip(drop) -> bool:
        """One right-to-left pass deleting where ``drop(i)``; True when short enough."""
        for i in range(len(s) - 1, 0, -1):
            if drop(i):
                del s[i]
            if short_enough():
                return True
        return False

    done = len(s) < minlength
    if not done:
        trailing = True
        for i in range(len(s) - 1, 0, -1):
            if s[i] in _C_SPACE:
                if trailing:
                    del s[i:]
                else:
                    nspace += 1
            else:
                trailing = False
            if short_enough():
                done = True
                break
    passes = []
    if use_classes:
        passes = [
            lambda i: char(i) in _LOWER_VOWELS and last_of_word(i),
            lambda i: char(i) in _LOWER_VOWELS and not first_of_word(i),
            lambda i: "a" <= char(i) <= "z" and last_of_word(i),
            lambda i: "a" <= char(i) <= "z" and not first_of_word(i),
        ]
    passes.append(lambda i: not first_of_word(i) and char(i) not in _C_SPACE)
    for drop in passes:
        if done:
            break
        done = strip(drop)
    if len(s) > minlength:
        s = s[:1] + [c for c in s[1:] if c not in _C_SPACE]
    return "".join(s)


def abbreviate(
    names: list[str], minlength: int = 4, use_classes: bool = True, strict: bool = False
) -> list[str]:
    """Abbreviate names as R's ``abbreviate(names, minlength)`` (method "left.kept").

    lme4's summary uses it for the headers of the correlation of fixed effects.

    Names longer than ``minlength`` lose characters from the end (see
    :func:`_strip_chars`); unless ``strict``, names whose abbreviations
    collide are abbreviated again with ``minlength`` one larger until all
    differ. Exact for ASCII names; others follow the same rules with
    ASCII's lower-case letters and vowels.

    Parameters
    ----------
    names : list of str
        The names; leading and trailing spaces are removed first.
    minlength : int
        The length to shorten to (R's ``minlength``); 0 or less gives empty strings.
    use_classes : bool
        R's ``use.classes``: drop lower-case vowels, then lower-case letters,
        before other characters.
    strict : bool
        R's ``strict``: keep ``minlength`` even when abbreviations collide.

    Returns
    -------
    list of str
        One abbreviation per name, in the order of ``names``.

    Examples
    --------
    >>> abbreviate(["(Intercept)", "period2", "period3"], 6)
    ['(Intr)', 'perid2', 'perid3']
    """
    if minlength <= 0:
        return ["" for _ in names]
    old = [str(n).lstrip(" ").rstrip(" ") for n in names]
    unique = list(dict.fromkeys(old))

    def shorten(items: list[str], length: int) -> list[str]:
        return [_strip_chars(t, length, use_classes) if len(t) > length else t for t in items]

    result = shorten(unique, minlength)
    if not strict:
        redo = _duplicated(result)
        while any(redo):
            minlength += 1
            clashing = {r for r, d in zip(result, redo) if d}
            redo = [d or r in clashing for r, d in zip(result, redo)]
            again = iter(shorten([u for u, d in zip(unique, redo) if d], minlength))
            result = [next(again) if d else r for r, d in zip(result, redo)]
            redo = _duplicated(result)
    lookup = dict(zip(unique, result))
    return [lookup[t] for t in old]


def _duplicated(values: list[str]) -> list[bool]:
    """R's ``duplicated``: True for every repeat of an earlier value."""
    seen: set[str] = set()
    out = []
    for v in values:
        out.append(v in seen)
        seen.add(v)
    return out
