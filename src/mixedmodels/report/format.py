"""Numbers formatted as R formats them in lme4's printed output.

Jointly to a number of significant digits (``format``), p-values
(``format.pval``), significance stars, and the alignment of printed tables.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "align", "fixed_decimals", "format_joint", "format_numbers", "format_pvalues", "pad",
    "significance_stars",
]


def format_numbers(values: np.ndarray, digits: int = 4) -> list[str]:
    """Format numbers jointly as R's ``format(x, digits=)``.

    All get the same number of decimals: enough that every finite element shows
    ``digits`` significant digits (at most 15). Non-finite values print as "NaN".
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values) & (values != 0)]
    decimals = min(max((_decimals_for(v, digits) for v in finite), default=0), 15)
    return ["NaN" if not np.isfinite(v) else f"{v:.{decimals}f}" for v in values]


def _decimals_for(value: float, digits: int) -> int:
    """Count the decimals R needs to show ``value`` with ``digits`` significant digits.

    Trailing zeros of the rounded value are dropped.
    """
    mag = math.floor(math.log10(abs(value)))
    dec = max(digits - 1 - mag, 0)
    text = f"{value:.{dec}f}"
    if "." in text:
        trimmed = text.rstrip("0")
        dec = len(trimmed.split(".")[1]) if not trimmed.endswith(".") else 0
    return dec


def align(rows: list[list[str]], left: set[int]) -> list[str]:
    """Lay out a table of texts as lines with aligned columns.

    Every column is padded to its widest cell: on the right for the column
    indexes in ``left``, on the left for the others. Cells are joined by a
    space, each line starts with one space and has no trailing spaces.
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append(" " + " ".join(cells).rstrip())
    return lines


def pad(texts: list[str]) -> list[str]:
    """Right-align ``texts`` to the width of the longest."""
    width = max((len(t) for t in texts), default=0)
    return [t.rjust(width) for t in texts]


def format_joint(block: np.ndarray, digits: int) -> list[list[str]]:
    """Format the columns of ``block`` together as R's ``format(x, digits=)`` of a matrix.

    A non-zero value that would print as zero gets its own formatting with one
    digit fewer (printCoefmat's rule); NA prints as "NA", infinities as "Inf" and
    "-Inf". All texts are padded to a common width; the result is a list of
    columns, each a list of texts.
    """
    flat = block.ravel()
    finite = np.isfinite(flat)
    texts = format_numbers(flat, digits) if finite.any() else []
    out = []
    for i, v in enumerate(flat):
        if np.isnan(v):
            out.append("NA")
        elif np.isinf(v):
            out.append("Inf" if v > 0 else "-Inf")
        else:
            t = texts[i]
            if v != 0 and float(t) == 0:
                t = f"{v:.{max(digits - 2, 0)}e}"
            out.append(t)
    width = max((len(t) for t in out), default=0)  # format() pads to a common width
    out = [t.rjust(width) for t in out]
    shaped = np.array(out, dtype=object).reshape(block.shape)
    return [list(shaped[:, j]) for j in range(block.shape[1])]


def format_pvalues(p: np.ndarray) -> list[str]:
    """Format p-values as R's ``format.pval(p, digits = 3)``.

    P-values of 1e-4 and above are formatted jointly in fixed notation, smaller
    ones jointly in scientific notation, those below machine precision as
    "< 2e-16" ("<2e-16" next to short ones); missing ones as "NA".
    """
    p = np.asarray(p, dtype=float)
    eps = np.finfo(float).eps
    out = ["NA"] * len(p)
    ok = np.isfinite(p)
    tiny = ok & (p < eps)
    rest = ok & ~tiny
    with np.errstate(divide="ignore"):
        expo = np.floor(np.log10(np.where(p > 0, p, 1e-50)))
    fixp = rest & (expo >= -4)  # R: expo >= -3 | (expo == -4 & digits > 1)
    sci = rest & ~fixp
    if fixp.any():
        for i, t in zip(np.flatnonzero(fixp), format_numbers(p[fixp], 3)):
            out[i] = t
    if sci.any():
        mant = max(_sci_digits(v, 3) for v in p[sci])
        for i in np.flatnonzero(sci):
            out[i] = f"{p[i]:.{mant}e}"
    if tiny.any():
        widths = [len(out[i]) for i in np.flatnonzero(rest)]
        sep = "" if widths and max(widths) <= 6 else " "
        if not widths:
            sep = ""
        for i in np.flatnonzero(tiny):
            out[i] = f"<{sep}2e-16"
    return out


def _sci_digits(value: float, digits: int) -> int:
    """Count the mantissa decimals R needs for ``value`` with ``digits`` significant digits.

    Trailing zeros are dropped.
    """
    text = f"{value:.{digits - 1}e}".split("e")[0]
    if "." not in text:
        return 0
    return len(text.split(".")[1].rstrip("0"))


def significance_stars(p: float) -> str:
    """Return R's significance code of a p-value: "***", "**", "*", "." or ""."""
    if not np.isfinite(p):
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""


def fixed_decimals(values: np.ndarray, decimals: int) -> list[str]:
    """Format every value with ``decimals`` decimals; non-finite ones as "NA"."""
    return ["NA" if not np.isfinite(v) else f"{v:.{decimals}f}" for v in values]
