"""F tests of formula terms for linear mixed models: lmerTest's ``anova``.

Type I, II and III hypotheses, with Satterthwaite's or Kenward-Roger's
denominator degrees of freedom.

Every row of the table is one joint F test (:func:`mixedmodels.inference.ddf.f_test`)
of a contrast matrix L built from the fixed-effects design's term -> column
mapping, exactly as lmerTest 3.1-3 builds it:

Type I (``get_contrasts_type1``)
    Sequential: the rows of the unit upper-triangular Doolittle factor of X'X
    that belong to the term. Each term is tested adjusted for the terms before
    it in the formula and ignoring those after it.
Type II (``get_contrasts_type2_unfolded``)
    A term contained in no other term (highest order) gets the marginal
    contrast (its coefficients = 0). A term contained in others is tested
    adjusted for every term that does not contain it: X is reordered as
    [unrelated terms, the term, the terms containing it] and the term's rows of
    the Doolittle factor of that X'X are taken.
Type III (``get_contrasts_type3``)
    The hypotheses are defined on the treatment-coded design X_t (factors with
    ``contr.treatment``, whatever coding the model uses): with rdX the
    over-parametrised design (an intercept and, per term, every level
    combination of its factors times its covariates), L₀ = (X_t⁺ rdX)' gives
    each cell mean of each term as a combination of the coefficients; the
    columns of a term contained in others are then orthogonalised (least
    squares residuals over the rows of L₀) against the columns of the terms
    containing it, higher-order terms first, and the term's (non-zero) columns
    of L₀, read at the rows of X_t's coefficients, are its contrasts. They are
    finally mapped to the model's own coding by X_t⁺ X. For a balanced design
    these are SAS's Type III (and, with ``contr.sum``, the familiar "marginal
    means equal" hypotheses); because they are built from the design and not
    from the coding, the table is the same whatever contrasts the factors use
    (``contr.treatment``, ``contr.sum``, ``contr.helmert``, ``contr.poly``):
    only the printed coefficients change. Terms contained in others are tested
    at the "average" of the containing terms' cells, not at a reference level,
    so a main effect in a model with its interaction is *not* the simple
    effect at the reference level that its treatment-coded coefficients are.

Models with a single term (or one column) use the Type I contrasts for every
type, as lmerTest does. Sums of squares are lmerTest's ``F σ² num_df``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import ModelSpecError
from mixedmodels.inference.ddf import f_test, normalise_ddf

__all__ = [
    "FixedTerm",
    "fixed_terms",
    "containment",
    "doolittle",
    "type1_contrasts",
    "type2_contrasts",
    "type3_contrasts",
    "term_contrasts",
    "anova_table",
]

ANOVA_COLUMNS = ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p_value"]


@dataclass
class FixedTerm:
    """One term of the fixed-effects formula.

    Attributes
    ----------
    label : str
        R's term label (``"service:dept"``, ``"factor(x)"``); ``"(Intercept)"``.
    columns : list of int
        Its columns among the design's columns (the fitted, full-rank ones).
    variables : tuple of str
        The variables of the term.
    numeric : frozenset of str
        Those that are numeric covariates (R's dataClass "numeric").
    expr : str
        The term as the formula engine writes it (to rebuild it on data).
    order : int
        Number of variables (1 for a main effect, 2 for a two-way interaction, ...).
    is_intercept : bool
        Whether this is the intercept (a term without variables).
    """

    label: str
    columns: list[int]
    variables: tuple[str, ...]
    numeric: frozenset[str] = field(default_factory=frozenset)
    expr: str = ""

    @property
    def order(self) -> int:
        """Number of variables of the term (0 for the intercept)."""
        return len(self.variables)

    @property
    def is_intercept(self) -> bool:
        """Whether this is the intercept (a term without variables)."""
        return not self.variables


# ---------------------------------------------------------------------------- terms


def _spec_parts(model_spec: Any) -> tuple[Any, dict[str, str]]:
    """Return the formulaic spec inside ``model_spec`` and its column aliases."""
    aliases = getattr(model_spec, "aliases", None)
    if aliases is not None and hasattr(model_spec, "spec"):
        return model_spec.spec, dict(aliases)
    return model_spec, {}


def _unalias(text: str, aliases: dict[str, str]) -> str:
    for col, alias in aliases.items():
        text = text.replace(alias, col)
    return text


_CONTRAST_CALL = re.compile(r"C\(\s*([^,()]+?)\s*,\s*contr\.\w+\s*\)")
_FACTOR_CALL = re.compile(r"C\(\s*([^,()]+?)\s*,\s*levels\s*=\s*None\s*\)")


def _variable_label(expr: str) -> str:
    """Return R's name of a variable.

    ``C(f, contr.sum)`` -> ``f``; our rewrite of ``factor(x)`` -> ``factor(x)``.
    """
    expr = expr.strip()
    m = _FACTOR_CALL.fullmatch(expr)
    if m:
        return f"factor({m.group(1).strip()})"
    m = _CONTRAST_CALL.fullmatch(expr)
    if m:
        return m.group(1).strip()
    return expr


def design_terms(model_spec: Any, ncols: int) -> list[FixedTerm]:
    """Return every term of a fixed-effects design, intercept included.

    Each with its columns among the ``ncols`` columns the spec produces.
    """
    simple_vars = getattr(model_spec, "variables", None)
    if simple_vars is not None and hasattr(model_spec, "intercept"):  # SimpleSpec
        out = []
        pos = 0
        if model_spec.intercept:
            out.append(FixedTerm("(Intercept)", [0], ()))
            pos = 1
        for term, width in zip(model_spec.terms(), model_spec.widths()):
            numeric = frozenset(v for v in term if v not in model_spec.levels)
            label = ":".join(term)
            out.append(FixedTerm(label, list(range(pos, pos + width)), term, numeric, label))
            pos += width
        return out
    spec, aliases = _spec_parts(model_spec)
    indices = getattr(spec, "term_indices", None)
    if indices is None:
        raise ModelSpecError("cannot map the fixed-effects columns to formula terms")
    state = getattr(spec, "encoder_state", {}) or {}
    out = []
    for term, cols in indices.items():
        factors = [str(getattr(f, "expr", f)) for f in getattr(term, "factors", [])]
        factors = [f for f in factors if f != "1"]
        if not factors:
            out.append(FixedTerm("(Intercept)", list(cols), ()))
            continue
        names = tuple(_variable_label(_unalias(f, aliases)) for f in factors)
        numeric = frozenset(
            name for f, name in zip(factors, names) if not _is_categorical(state.get(f))
        )
        label = ":".join(names)
        out.append(FixedTerm(label, list(cols), names, numeric, _unalias(str(term), aliases)))
    return out


def _is_categorical(entry: Any) -> bool:
    return entry is not None and str(entry[0]).upper().endswith("CATEGORICAL")


def fixed_terms(model: Any) -> list[FixedTerm]:
    """Return the model's fixed-effects terms, intercept first if present.

    Each with its columns among the fitted (full-rank) coefficients
    ``model.fixef``, labelled as R's ``terms()`` labels them.
    """
    fixed = model.frame.fixed
    terms = design_terms(fixed.model_spec, len(fixed.all_names))
    return _r_labels(_to_kept(terms, np.asarray(fixed.kept)), model.frame.parsed.fixed)


def _r_labels(terms: list[FixedTerm], formula: str) -> list[FixedTerm]:
    """Return the terms labelled as R's ``terms()`` writes them.

    The variables of an interaction in their order of first appearance in the
    formula (``0 + Evit + Time:Evit`` has the term ``Evit:Time``).
    """

    def first(var: str) -> int:
        m = re.search(rf"(?<![\w.]){re.escape(var)}(?![\w.])", formula)
        return m.start() if m else len(formula)

    out = []
    for t in terms:
        if t.order > 1:
            variables = tuple(sorted(t.variables, key=first))
            t = FixedTerm(":".join(variables), t.columns, variables, t.numeric, t.expr)
        out.append(t)
    return out


def _to_kept(terms: list[FixedTerm], kept: np.ndarray) -> list[FixedTerm]:
    """Columns re-indexed among the kept ones (aliased columns dropped)."""
    pos = {int(c): k for k, c in enumerate(kept)}
    return [
        FixedTerm(t.label, [pos[c] for c in t.columns if c in pos], t.variables, t.numeric, t.expr)
        for t in terms
    ]


def containment(terms: list[FixedTerm]) -> dict[str, list[str]]:
    """Return lmerTest's ``containment``: for every term, the terms containing it.

    A term contains another when it has all its variables and more, and the
    same numeric covariates.
    """
    model_terms = [t for t in terms if not t.is_intercept]
    out = {}
    for t in model_terms:
        vt = set(t.variables)
        out[t.label] = [
            u.label
            for u in model_terms
            if vt <= set(u.variables) and len(set(u.variables) - vt) > 0 and t.numeric == u.numeric
        ]
    return out


# ---------------------------------------------------------------------------- Doolittle


def doolittle(x: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Return lmerTest's ``doolittle`` factors: x = L U with unit lower-triangular L.

    Entries below ``eps`` (absolute) are set to zero; pivots below ``eps`` give
    zero columns.
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        U[i, :] = x[i, :] - L[i, :i] @ U[:i, :]
        if i + 1 < n:
            col = x[i + 1 :, i] - L[i + 1 :, :i] @ U[:i, i]
            L[i + 1 :, i] = 0.0 if abs(U[i, i]) < eps else col / U[i, i]
    L[np.abs(L) < eps] = 0.0
    U[np.abs(U) < eps] = 0.0
    return L, U


def _crossprod_X(model: Any) -> np.ndarray:
    X = np.asarray(model.frame.fixed.X, dtype=float)
    if X.shape[0] != model.nobs:
        raise ModelSpecError(
            "Type I-III contrasts need the fixed-effects matrix in memory "
            "(not available for Dask / Parquet fits)"
        )
    return X.T @ X


def type1_contrasts(model: Any, terms: list[FixedTerm] | None = None) -> dict[str, np.ndarray]:
    """Return the sequential (Type I) contrasts per term: ``{label: (k, p) array}``."""
    terms = fixed_terms(model) if terms is None else terms
    p = len(model.beta)
    if p == 0:
        return {}
    XtX = _crossprod_X(model)
    Lfull = np.ones((1, 1)) if p == 1 else doolittle(XtX)[0].T
    return {t.label: Lfull[t.columns, :] for t in terms if not t.is_intercept}


def type2_contrasts(model: Any, terms: list[FixedTerm] | None = None) -> dict[str, np.ndarray]:
    """Return lmerTest's Type II contrasts (``get_contrasts_type2_unfolded``)."""
    terms = fixed_terms(model) if terms is None else terms
    model_terms = [t for t in terms if not t.is_intercept]
    if len(model.beta) <= 1 or len(model_terms) <= 1:
        return type1_contrasts(model, terms)
    contained = containment(terms)
    XtX = _crossprod_X(model)
    p = XtX.shape[0]
    by_label = {t.label: t for t in model_terms}
    col_term = [""] * p
    for t in terms:
        for c in t.columns:
            col_term[c] = t.label
    out = {}
    for t in model_terms:
        if not contained[t.label]:
            out[t.label] = np.eye(p)[t.columns, :]
            continue
        moved = list(t.columns) + [c for u in contained[t.label] for c in by_label[u].columns]
        rest = [c for c in range(p) if c not in set(moved)]
        perm = rest + moved
        Lc = doolittle(XtX[np.ix_(perm, perm)])[0].T
        rows = [i for i, c in enumerate(perm) if col_term[c] == t.label]
        back = np.argsort(perm)  # columns in the original order
        out[t.label] = Lc[np.ix_(rows, back)]
    return out


# ---------------------------------------------------------------------------- Type III


def zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """Round as R's ``zapsmall``: to ``digits`` significant digits of the largest |value|."""
    x = np.asarray(x, dtype=float)
    finite = x[np.isfinite(x)]
    mx = float(np.max(np.abs(finite))) if finite.size else 0.0
    if mx > 0:
        digits = max(0, digits - int(np.ceil(np.log10(mx))))
    return np.round(x, digits) + 0.0  # + 0.0: no negative zeros


def _lstsq(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of B on the columns of A (A⁺ B)."""
    coef, *_ = np.linalg.lstsq(A, B, rcond=1e-10)
    return coef


def _treatment_design(model: Any) -> tuple[np.ndarray, list[str], list[FixedTerm], Any]:
    """Return the fixed design rebuilt with ``contr.treatment`` for every factor.

    Full-rank X_t, its column names, its terms (columns among X_t's) and its
    spec (lmerTest's ``get_model_matrix(type = "remake", contrasts =
    "contr.treatment")`` and ``ensure_full_rank``).
    """
    from mixedmodels.spec.coding import r_names, rewrite_factor_calls, with_contrasts
    from mixedmodels.spec.fixed import full_rank_columns
    from mixedmodels.spec.matrix import model_matrix

    data = _frame_data(model)
    fixed_text = model.frame.parsed.fixed
    factors = {
        c: "contr.treatment"
        for c in data.columns
        if isinstance(c, str) and not _is_numeric_column(data[c])
    }
    rhs = with_contrasts(rewrite_factor_calls(fixed_text), factors)
    mm = model_matrix(rhs, data, "fixed-effects (treatment coding)")
    X = np.asarray(mm, dtype=float)
    kept = full_rank_columns(X)
    names = [r_names(mm)[i] for i in kept]
    terms = _r_labels(_to_kept(design_terms(mm.model_spec, X.shape[1]), kept), fixed_text)
    return np.ascontiguousarray(X[:, kept]), names, terms, mm.model_spec


def _frame_data(model: Any) -> pd.DataFrame:
    data = model.frame.data
    if not isinstance(data, pd.DataFrame) or len(data) != model.nobs:
        raise ModelSpecError(
            "Type III contrasts rebuild the design from the data, which this model "
            "does not hold (Dask / Parquet fit)"
        )
    return data


def _is_numeric_column(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _overparametrised(model: Any, terms: list[FixedTerm]) -> tuple[np.ndarray, list[str]]:
    """Return lmerTest's ``get_rdX``, the over-parametrised design, and its column names.

    An intercept (if any) and, per term, the model matrix of ``~ 0 + term``
    (every level combination).
    """
    from mixedmodels.spec.coding import r_names
    from mixedmodels.spec.matrix import model_matrix

    data = _frame_data(model)
    blocks, names = [], []
    for t in terms:
        if t.is_intercept:
            continue
        mm = model_matrix(f"0 + {t.expr}", data, f"Type III design of term {t.label}")
        blocks.append(np.asarray(mm, dtype=float))
        names += r_names(mm)
    if any(t.is_intercept for t in terms):
        blocks.insert(0, np.ones((model.nobs, 1)))
        names.insert(0, "(Intercept)")
    if not blocks:
        return np.empty((model.nobs, 0)), []
    return np.column_stack(blocks), names


def type3_contrasts(model: Any, terms: list[FixedTerm] | None = None) -> dict[str, np.ndarray]:
    """Return lmerTest's Type III contrasts (``get_contrasts_type3``).

    In the model's own coding: ``{label: (k, p) array}``. See the module docstring.
    """
    terms = fixed_terms(model) if terms is None else terms
    model_terms = [t for t in terms if not t.is_intercept]
    if len(model.beta) <= 1 or len(model_terms) <= 1:
        return type1_contrasts(model, terms)
    Xt, names_t, terms_t, _ = _treatment_design(model)
    labels_t = {t.label for t in terms_t if not t.is_intercept}
    if labels_t != {t.label for t in model_terms}:
        raise ModelSpecError(
            "cannot build Type III contrasts: the treatment-coded design has terms "
            f"{sorted(labels_t)}, the model {sorted(t.label for t in model_terms)}"
        )
    rdX, rd_names = _overparametrised(model, terms_t)
    L = zapsmall(_lstsq(Xt, rdX).T)  # rows: rdX columns, columns: X_t's
    cols = {t.label: t.columns for t in terms_t}
    contained = containment(terms_t)
    for t in sorted(model_terms, key=lambda u: -u.order):
        above = [c for u in contained[t.label] for c in cols[u]]
        if not above or not cols[t.label]:
            continue
        Xc, Y = L[:, above], L[:, cols[t.label]]
        L[:, cols[t.label]] = zapsmall(Y - Xc @ _lstsq(Xc, Y))
    index = {name: i for i, name in enumerate(rd_names)}
    missing = [n for n in names_t if n not in index]
    if missing:
        raise ModelSpecError(
            f"cannot build Type III contrasts: coefficient(s) {missing} have no cell in the "
            "over-parametrised design"
        )
    L = L[[index[n] for n in names_t], :]
    coding = zapsmall(_lstsq(Xt, np.asarray(model.frame.fixed.X, dtype=float)))
    out = {}
    for t in model_terms:
        Lt = L[:, cols[t.label]].T
        Lt = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
        out[t.label] = Lt @ coding
    return out


def term_contrasts(model: Any, type: int | str = 3) -> dict[str, np.ndarray]:
    """Return the contrast matrix of every term for an ANOVA of ``type``.

    ``type`` is 1, 2, 3 or "I", "II", "III"; the matrices' columns are the
    coefficients of ``model.fixef``.
    """
    kind = _anova_type(type)
    terms = fixed_terms(model)
    builder = {1: type1_contrasts, 2: type2_contrasts, 3: type3_contrasts}[kind]
    out = builder(model, terms)
    return {t.label: out.get(t.label, np.zeros((0, len(model.beta)))) for t in terms if not t.is_intercept}


def _anova_type(type: int | str) -> int:
    key = str(type).strip().upper()
    table = {"1": 1, "I": 1, "2": 2, "II": 2, "3": 3, "III": 3}
    if key not in table:
        raise ModelSpecError(f"ANOVA type must be 1, 2 or 3 ('I', 'II', 'III'), not {type!r}")
    return table[key]


def anova_table(model: Any, type: int | str = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
    """Return lmerTest's ``anova(model, type, ddf)``: one F test per formula term.

    Parameters
    ----------
    model : LinearMixedModel
        A fitted lmer model (Kenward-Roger needs a REML fit).
    type : {3, 2, 1, "III", "II", "I"}
        The hypotheses (see the module docstring).
    ddf : {"satterthwaite", "kenward-roger"}
        Denominator degrees of freedom.

    Returns
    -------
    DataFrame
        Indexed by term (no intercept row), columns ``sum_sq, mean_sq,
        num_df, den_df, F, p_value``; ``attrs["heading"]`` is lmerTest's title
        and ``attrs["hypotheses"]`` the contrast matrices (lmerTest's
        ``show_tests``).
    """
    method = normalise_ddf(ddf)
    if method == "asymptotic":
        raise ModelSpecError(
            "anova needs ddf='satterthwaite' or 'kenward-roger' (for likelihood-ratio "
            "tests use mixedmodels.anova(model1, model2))"
        )
    kind = _anova_type(type)
    from mixedmodels.support.threads import blas_threads

    # one BLAS thread: the n x p products here are small, and OpenBLAS threads
    # spinning on cores busy with other work slow them down a hundredfold
    cache = getattr(model, "inference_cache", None)
    key = ("term_contrasts", kind)
    Ls = cache.get(key) if isinstance(cache, dict) else None
    if Ls is None:
        with blas_threads(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=pd.errors.PerformanceWarning)
            Ls = term_contrasts(model, kind)
        if isinstance(cache, dict):  # the design does not change after the fit
            cache[key] = Ls
    rows = {label: f_test(model, L, method) if L.shape[0] else _nan_row() for label, L in Ls.items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=ANOVA_COLUMNS, dtype=float)
    table.index.name = "term"
    name = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's"}[method]
    roman = {1: "I", 2: "II", 3: "III"}[kind]
    table.attrs["heading"] = f"Type {roman} Analysis of Variance Table with {name} method"
    table.attrs["hypotheses"] = {k: v.copy() for k, v in Ls.items()}
    return table


def _nan_row() -> dict:
    return {c: float("nan") for c in ANOVA_COLUMNS}
