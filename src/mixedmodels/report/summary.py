"""lme4's and lmerTest's printed summary of a fitted model.

The title, the criteria, the scaled residuals, the random-effects and
fixed-effects tables, the correlation of the fixed effects and the fit's
messages; and the short form ``print(model)`` shows.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.report.abbreviate import abbreviate
from mixedmodels.report.format import (
    align,
    fixed_decimals,
    format_joint,
    format_numbers,
    format_pvalues,
    pad,
    significance_stars,
)
from mixedmodels.report.tidy import standard_coef_table

__all__ = ["ModelSummary", "format_print", "format_summary"]


class ModelSummary:
    """The summary of a fitted model, as ``model.summary()`` returns it.

    ``str()`` gives lme4's layout, or lmerTest's for linear mixed models with
    denominator degrees of freedom.

    Attributes
    ----------
    model : MixedModelResults
        The fitted model summarised.
    coefficients : DataFrame
        The fixed-effects table (:meth:`~mixedmodels.report.results.MixedModelResults.coef_table`).
    varcorr : DataFrame
        Variance components (as ``model.varcorr``).
    ddf : str
        The method of the tests: "satterthwaite", "kenward-roger", "lme4" or
        "z" (GLMMs).
    correlation : bool or None
        Whether the correlation of the fixed effects is printed; None: as
        lme4, when there are at most 12 fixed effects.
    """

    def __init__(
        self, model: Any, ddf: str | None = None, correlation: bool | None = None
    ):
        self.model = model
        self.correlation = correlation
        self.ddf = model.coef_test_method(ddf)
        # (a subclass may define coef_table without the ddf argument)
        self.coefficients = model.coef_table() if ddf is None else model.coef_table(ddf)
        self.varcorr = model.varcorr

    def __str__(self) -> str:
        return format_summary(self.model, self.coefficients, self.ddf, self.correlation)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


def _title(model: Any, method: str | None = None) -> str:
    if hasattr(model, "summary_title"):
        return "\n".join(model.summary_title())
    reml = getattr(model, "reml", False)
    # lme4's and lmerTest's titles without R's class names (['lmerMod'],
    # [lmerModLmerTest]) and the stray spaces R prints after "likelihood"
    title = f"Linear mixed model fit by {'REML' if reml else 'maximum likelihood'}"
    if method in ("satterthwaite", "kenward-roger"):
        name = "Satterthwaite's" if method == "satterthwaite" else "Kenward-Roger's"
        return f"{title}. t-tests use {name} method"
    return title


def _random_effects_lines(model: Any, with_variance: bool) -> list[str]:
    """Return the lines of lme4's random-effects table.

    Numbers are formatted jointly per column (4 significant digits), then
    left-justified under the header as R prints it.
    """
    header = ["Groups", "Name"] + (["Variance"] if with_variance else []) + ["Std.Dev."]
    covs = model.covariances()
    has_resid = getattr(model, "has_residual", True)
    all_var = np.concatenate([np.diag(c) for c in covs] + ([[model.sigma**2]] if has_resid else []))
    var_txt = iter(pad(format_numbers(all_var, 4)))
    sd_txt = iter(pad(format_numbers(np.sqrt(all_var), 4)))
    any_corr = any(c.shape[0] > 1 for c in covs)
    rows: list[list[str]] = []
    for label, term, cov in zip(model.group_labels(), model.frame.terms, covs):
        sd = np.sqrt(np.diag(cov))
        for i, name in enumerate(term.cnames):
            row = [label if i == 0 else "", name]
            row += [next(var_txt)] if with_variance else []
            row.append(next(sd_txt))
            if any_corr:
                row.append(" ".join(_corr_text(cov, sd, i, j) for j in range(i)))
            rows.append(row)
    if has_resid:
        row = ["Residual", ""] + ([next(var_txt)] if with_variance else []) + [next(sd_txt)]
        rows.append(row + ([""] if any_corr else []))
    if any_corr:
        header.append("Corr")
    return align([header] + rows, left=set(range(len(header))))


def _corr_text(cov: np.ndarray, sd: np.ndarray, i: int, j: int) -> str:
    denom = sd[i] * sd[j]
    return f"{cov[i, j] / denom:5.2f}" if denom > 0 else "  NaN"


def _groups_line(model: Any) -> str:
    groups = ", ".join(f"{k}, {v}" for k, v in model.ngroups.items())
    return f"Number of obs: {model.nobs}, groups:  {groups}"


_HEADERS = {
    "estimate": "Estimate",
    "se": "Std. Error",
    "df": "df",
    "t": "t value",
    "z": "z value",
}


_LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def _print_table(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Return the coefficient table as printed.

    R's column names; an lmer's asymptotic table is shown as z tests.
    """
    table = standard_coef_table(table)
    if method == "asymptotic":
        table = table.drop(columns="df").rename(columns={"t": "z"})
    stat = "t" if "t" in table.columns else "z"
    cols = [c for c in ("estimate", "se", "df") if c in table.columns] + [stat]
    out = table[cols].rename(columns=_HEADERS)
    if "p_value" in table.columns:
        out[f"Pr(>|{stat}|)"] = table["p_value"]
    return out


def _fixed_lines(table: pd.DataFrame, method: str = "lme4") -> list[str]:
    """Return the lines of the coefficient table as R's ``printCoefmat`` prints it.

    With digits 4, as lme4's and lmerTest's summaries call it: estimates, SEs
    (and df) rounded jointly to the decimals that give the smallest of them 4
    significant digits, then formatted jointly; test statistics rounded to 3
    decimals; p-values by ``format.pval`` (3 digits) with significance stars
    when some p < 0.1.
    """
    table = _print_table(table, method)
    has_p = table.columns[-1].startswith("Pr(")
    ncs = len(table.columns) - (2 if has_p else 1)
    values = table.to_numpy(dtype=float)
    cs = values[:, :ncs]
    finite = np.abs(cs[np.isfinite(cs) & (cs != 0)])
    dec = max(1, 4 - 1 - math.floor(math.log10(finite.min()))) if finite.size else 4
    cols = format_joint(np.round(cs, dec), 4)
    cols.append(format_joint(np.round(values[:, ncs : ncs + 1], 3), 4)[0])
    header = [""] + list(table.columns)
    stars = False
    if has_p:
        p = values[:, -1]
        cols.append(format_pvalues(p))
        stars = bool(np.any(p[np.isfinite(p)] < 0.1))
        if stars:
            marks = [significance_stars(v) for v in p]
            width = max(len(m) for m in marks)
            cols.append([m.ljust(width) for m in marks])
            header.append("")
    names = list(table.index)
    rows = [header] + [[names[i]] + [c[i] for c in cols] for i in range(len(names))]
    lines = align(rows, left={0})
    if stars:
        # the caller drops every line's first character (the empty name column)
        lines += [" ---", " " + _LEGEND]
    return lines


# R's print width (getOption("width")): wider matrices are printed in blocks of columns
_PRINT_WIDTH = 80


# lme4's option lme4.summary.cor.max: more fixed effects, no correlations by default
_COR_MAX = 12


def _correlation_lines(model: Any, correlation: bool | None = None) -> list[str]:
    """Return the lines of lme4's "Correlation of Fixed Effects".

    The lower triangle of the correlations rounded to 3 decimals and formatted
    jointly, rows named by ``abbreviate(names, 11)`` and columns by
    ``abbreviate(names, 6)``, printed as R prints a character matrix
    (left-aligned, in blocks of columns that fit 80 characters). ``correlation``
    None: shown for at most 12 fixed effects, else a note (lme4's message).
    """
    V = model.vcov.to_numpy()
    names = list(model.vcov.index)
    p = len(names)
    if correlation is None and p > _COR_MAX:
        return ["", f"Correlation matrix not shown by default, as p = {p} > {_COR_MAX}.",
                "Use summary(correlation=True) or model.vcov if you need it"]
    if p < 2 or correlation is False:
        return []
    sd = np.sqrt(np.diag(V))
    with np.errstate(divide="ignore", invalid="ignore"):
        C = np.round(V / np.outer(sd, sd), 3) + 0.0  # + 0.0: no "-0.000"
    texts = ["NaN" if np.isnan(v) else f"{v:.3f}" for v in C.ravel()]
    width = max(len(t) for t in texts)
    cells = np.array([t.rjust(width) for t in texts], dtype=object).reshape(p, p)
    row_names = abbreviate(names, 11)[1:]
    col_names = abbreviate(names, 6)[:-1]
    columns = [[col_names[j]] + [cells[i, j] if i > j else "" for i in range(1, p)]
               for j in range(p - 1)]
    return ["", "Correlation of Fixed Effects:"] + _character_matrix_lines(row_names, columns)


def _character_matrix_lines(row_names: list[str], columns: list[list[str]]) -> list[str]:
    """Return the lines of R's print of a character matrix with ``quote = FALSE``.

    Row names and cells are left-aligned, one space between columns; columns
    that do not fit the print width go to a further block below.
    """
    label_width = max(len(r) for r in row_names)
    widths = [max(len(c) for c in col) for col in columns]
    lines, start = [], 0
    while start < len(columns):
        stop, used = start + 1, label_width + widths[start] + 1
        while stop < len(columns) and used + widths[stop] + 1 < _PRINT_WIDTH:
            used += widths[stop] + 1
            stop += 1
        labels = [""] + row_names
        for r, label in enumerate(labels):
            parts = [label.ljust(label_width)]
            parts += [columns[j][r].ljust(widths[j]) for j in range(start, stop)]
            lines.append(" ".join(parts).rstrip())
        start = stop
    return lines


def _criterion_lines(model: Any) -> list[str]:
    if getattr(model, "reml", False):
        return [f"REML criterion at convergence: {model.reml_criterion:.1f}"]
    names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    vals = [f"{model.aic:.1f}", f"{model.bic:.1f}", f"{model.loglik:.1f}", f"{model.deviance:.1f}", str(model.df_residual)]
    width = max(len(v) for v in vals + names) + 1
    return ["".join(n.rjust(width) for n in names), "".join(v.rjust(width) for v in vals)]


def format_summary(
    model: Any,
    table: pd.DataFrame | None = None,
    method: str = "lme4",
    correlation: bool | None = None,
) -> str:
    """Format the full summary of a fitted model (``str(model.summary())``).

    Parameters
    ----------
    model : MixedModelResults
        A fitted model.
    table : DataFrame, optional
        Its coefficient table (``model.coef_table()`` when not given).
    method : str
        The tests of ``table``: "lme4" (no df, no p-values), "satterthwaite",
        "kenward-roger", "asymptotic" (printed as z tests) or "z" (GLMMs); it
        also chooses the title.
    correlation : bool, optional
        Print the correlation of the fixed effects; None: as lme4, when there
        are at most 12.

    Returns
    -------
    str
        The summary in lme4's layout, or lmerTest's with denominator df.
    """
    if table is None:
        table = model.coef_table()
    lines = [_title(model, method), f"Formula: {model.formula}"]
    if getattr(model, "data_name", None):
        lines.append(f"   Data: {model.data_name}")
    if getattr(model, "weights_given", False):
        lines.append(" Weights: given")
    offset_text = _offset_text(model)
    if offset_text:
        lines.append(f" Offset: {offset_text}")
    lines += [""] + _criterion_lines(model) + ["", "Scaled residuals: "]
    scaled = model.pearson_residuals_for_summary() / model.sigma
    q = np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0])
    qt = fixed_decimals(q, 4)
    rows = [["Min", "1Q", "Median", "3Q", "Max"], qt]
    lines += [line[1:] for line in align(rows, left=set())]
    lines += ["", "Random effects:"] + _random_effects_lines(model, with_variance=True)
    lines.append(_groups_line(model))
    lines += ["", "Fixed effects:"] + [line[1:] for line in _fixed_lines(table, method)]
    lines += _correlation_lines(model, correlation)
    lines += _fit_messages(model)
    return "\n".join(lines)


def _offset_text(model: Any) -> str:
    """Return the offset terms of the formula, and "given" for an ``offset=`` argument."""
    frame = model.frame
    parts = [f"offset({expr})" for expr in frame.parsed.offsets]
    if getattr(model, "offset_given", False):
        parts.append("given (offset=)")
    return " + ".join(parts)


def _fit_messages(model: Any) -> list[str]:
    out = []
    dropped = [n for n in model.frame.fixed.all_names if n not in set(model.frame.fixed.names)]
    if dropped:
        out += ["", f"fit warnings: fixed-effect model matrix is rank deficient so dropping "
                f"{len(dropped)} column(s): {', '.join(dropped)}"]
    if model.is_singular:
        out += ["", "boundary (singular) fit: see is_singular"]
    return out


def format_print(model: Any) -> str:
    """Format the short form of a fitted model that ``print(model)`` shows (lme4's ``print``).

    Title, formula, criteria, the random-effects standard deviations, the
    numbers of observations and groups, the fixed-effects estimates and the
    fit's messages.
    """
    lines = [_title(model), f"Formula: {model.formula}"]
    lines += _criterion_lines(model)
    lines += ["Random effects:"] + _random_effects_lines(model, with_variance=False)
    lines.append(_groups_line(model))
    lines.append("Fixed Effects:")
    est = model.fixef
    txt = format_numbers(est.to_numpy(), 4)
    rows = [list(est.index), txt]
    lines += [line[1:] for line in align(rows, left=set())]
    lines += _fit_messages(model)
    return "\n".join(lines)
