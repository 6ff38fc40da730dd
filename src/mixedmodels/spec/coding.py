"""How factors are coded and named.

Contrasts (R's ``contr.*``), R's ``factor(x)``, R's names of model-matrix
columns and the fitted levels a model-matrix spec keeps.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping, Sequence

import pandas as pd

from mixedmodels.exceptions import DataError
from mixedmodels.spec.columns import ArrayColumns, dtype_of
from mixedmodels.spec.matrix import DesignMatrix, SimpleSpec

CONTRASTS = ("contr.treatment", "contr.sum", "contr.helmert", "contr.poly")


def r_column_names(names: Sequence[str], model_spec: Any = None) -> list[str]:
    """Translate formulaic column names into R's: the term label as written, then the level suffix.

    ``Intercept`` -> ``(Intercept)``; treatment coding ``f[T.b]`` -> ``fb``;
    full dummy coding ``f[b]`` -> ``fb``; the contrasts this package adds,
    ``C(f, contr.sum)[S.a]`` -> ``f1`` (R numbers sum and Helmert columns) and
    ``C(f, contr.poly)[.L]`` -> ``f.L`` (``[^4]`` -> ``f^4``); R's ``factor(x)``
    (rewritten as ``C(x, levels=None)``) -> ``factor(x)1``; a
    ``C(f)`` the user wrote keeps its label: ``C(f)b``.
    """
    levels = fitted_factor_levels(model_spec) if model_spec is not None else {}
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
    """Return a column name with R's deparsed power: ``x^2`` for ``x ** 2``.

    The formula parser hands R's ``x^2`` on as Python's ``x ** 2`` (formulaic
    would read ``^`` as exclusive or); R prints ``x^2``.
    """
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
    """Rewrite R's ``factor(x)`` in an expression as formulaic's ``C(x, levels=None)``.

    The coding is the same; the (default) ``levels=None`` marks it for
    :func:`r_column_names`.
    """
    return re.sub(r"(?<![\w.])factor\(\s*([^\W\d][\w.]*)\s*\)", r"C(\1, levels=None)", expr)


def factor_contrasts(
    frame: pd.DataFrame | ArrayColumns, columns: Sequence[str], user: Mapping[str, str] | None
) -> dict[str, str]:
    """Return the contrast of every factor that needs a non-default one.

    Those are the user's, and R's ``contr.poly`` for ordered factors. A
    :class:`DataError` names an unknown contrast or a column the model does not
    use.
    """
    dtypes = {c: dtype_of(frame, c) for c in columns}
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


def r_names(mm: DesignMatrix) -> list[str]:
    """Return R's names of a model matrix's columns (:func:`r_column_names`)."""
    if isinstance(mm.model_spec, SimpleSpec):
        return mm.model_spec.r_names()
    return r_column_names(list(mm.columns), mm.model_spec)


def spec_factors(model_spec: Any) -> set[str]:
    """Return the columns a fitted spec codes as factors (see :func:`integers_as_floats`)."""
    return set(fitted_factor_levels(model_spec))


def fitted_factor_levels(model_spec: Any) -> dict[str, list[Any]]:
    """Return the categorical variables of a formulaic spec and their fitted levels."""
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
