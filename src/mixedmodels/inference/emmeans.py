"""Estimated marginal means and their contrasts, as R's emmeans 1.8.4.

:func:`emmeans` builds emmeans' *reference grid* of a fitted
:class:`~mixedmodels.LinearMixedModel` or
:class:`~mixedmodels.GeneralizedLinearMixedModel`, averages its predictions
over the factors not asked for and returns an :class:`EMMeans`, whose
:meth:`EMMeans.contrasts` gives emmeans' ``contrast()`` / ``pairs()`` tables.

What is reproduced (emmeans' defaults):

* the reference grid: every variable of the fixed part (and of ``offset()``
  terms of the formula) at its reference values: factors at all their levels,
  numeric covariates at their mean over the rows used in the fit, except that a
  covariate with at most two distinct values keeps both (emmeans'
  ``cov.keep = "2"``); ``at`` overrides either. Transformed covariates
  (``log(x)``, ``poly(x, 2)``, ``scale(x)``) are evaluated at the reference
  value of the variable (``log(mean(x))``), as emmeans does; the model's
  offset (``offset()`` terms and the ``offset=`` argument together) enters
  every mean at its average over the rows used, as emmeans 1.8 recovers it
  as a covariate ``.offset.`` (``offset`` here replaces it);
* marginal means with equal weights over the other grid dimensions (or
  ``weights="proportional" | "outer" | "cells" | "flat"``);
* inference: for lmer Kenward-Roger (the adjusted covariance of pbkrtest's
  ``vcovAdj`` and its ``Lb_ddf`` degrees of freedom; emmeans' default when
  pbkrtest is installed), or Satterthwaite (lmerTest's), or asymptotic; as
  emmeans, more than 3000 observations turn the default into the asymptotic
  method. glmer is always asymptotic (df = inf);
* ``type="response"`` for a glmer with a non-identity link, or an lmer whose
  response is written ``log(y)``, ``log2(y)``, ``log10(y)``, ``log1p(y)`` or
  ``sqrt(y)``: means back-transformed, delta-method standard errors, intervals
  back-transformed from the link scale; contrasts of log- or logit-scale means
  become ratios / odds ratios (labels ``"a / b"``), others stay on the link
  scale;
* contrast families ``pairwise``, ``revpairwise``, ``trt.vs.ctrl``, ``consec``,
  ``eff`` and custom coefficient dicts with emmeans' labels and default
  p-value adjustments (Tukey for pairwise, Dunnett's approximation
  ``dunnettx`` for trt.vs.ctrl, ``mvt`` for consec, ``fdr`` for eff); every
  adjustment of emmeans: ``tukey``, ``sidak``, ``scheffe``, ``dunnettx``,
  ``mvt`` (a randomized integration, as mvtnorm's, so only to about 1e-3) and
  R's ``p.adjust`` methods ``holm``, ``hochberg``, ``hommel``, ``bonferroni``,
  ``BH`` / ``fdr``, ``BY``, ``none``.

Not reproduced: nested-factor handling (emmeans' ``nesting``) and ``regrid``
objects. A marginal mean that is not estimable (an empty cell of a
rank-deficient model) raises :class:`~mixedmodels.exceptions.ModelSpecError`
naming it; emmeans shows it as ``nonEst``.
"""


from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mixedmodels.exceptions import MixedModelsWarning, ModelSpecError
from mixedmodels.inference.emmeans_contrasts import (
    AdjustmentFamily,
    ContrastFamily,
    adjusted_p,
    make_family,
    normalize_adjust,
)
from mixedmodels.inference.emmeans_grid import (
    ReferenceGrid,
    Transform,
    estimable,
    marginal,
    model_transform,
    null_basis,
    parse_specs,
    reference_grid,
)

__all__ = ["EMMeans", "emmeans"]

#: emmeans' pbkrtest.limit / lmerTest.limit: above this many observations its
#: default degrees-of-freedom method becomes "asymptotic".
DF_LIMIT = 3000

_DDF_NAMES = {
    "kenward-roger": "kenward-roger",
    "kr": "kenward-roger",
    "kenwardroger": "kenward-roger",
    "satterthwaite": "satterthwaite",
    "asymptotic": "asymptotic",
}
_INHERIT: Any = object()


# --------------------------------------------------------------------------- inference


def _resolve_ddf(model: Any, ddf: str | None) -> str:
    """Return the degrees-of-freedom method: emmeans' default and its 3000-row limit."""
    is_glmm = hasattr(model, "family")
    if ddf is None:
        if is_glmm:
            return "asymptotic"
        if model.nobs > DF_LIMIT:
            warnings.warn(
                f"emmeans: degrees-of-freedom calculations disabled because the number of "
                f"observations ({model.nobs}) exceeds {DF_LIMIT} (emmeans' pbkrtest.limit); "
                "using asymptotic (z) inference. Pass ddf='kenward-roger' to force them.",
                MixedModelsWarning,
                stacklevel=3,
            )
            return "asymptotic"
        return "kenward-roger"
    key = str(ddf).lower().replace("_", "-").replace(" ", "-")
    method = _DDF_NAMES.get(key) or _DDF_NAMES.get(key.replace("-", ""))
    if method is None:
        raise ModelSpecError(
            f"ddf {ddf!r} is not one of 'kenward-roger', 'satterthwaite', 'asymptotic'"
        )
    if is_glmm and method != "asymptotic":
        raise ModelSpecError(
            f"ddf {ddf!r} is for linear mixed models: a glmer's inference is asymptotic"
        )
    return method


def _vcov_for(model: Any, ddf: str) -> np.ndarray:
    """Return the covariance of the fixed effects the method uses (KR: pbkrtest's vcovAdj)."""
    if ddf == "kenward-roger":
        from mixedmodels.inference.kenward_roger import kenward_roger_vcov

        return np.asarray(kenward_roger_vcov(model), dtype=float)
    return np.asarray(model.vcov, dtype=float)


def _se_df(model: Any, L: np.ndarray, ddf: str) -> tuple[np.ndarray, np.ndarray]:
    """Return standard errors and degrees of freedom of the rows of ``L`` (kept columns)."""
    if L.shape[0] == 0:
        return np.empty(0), np.empty(0)
    if ddf == "asymptotic":
        V = np.asarray(model.vcov, dtype=float)
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", L, V, L), 0.0))
        return se, np.full(L.shape[0], np.inf)
    from mixedmodels.inference.ddf import contrast_df

    table = contrast_df(model, L, ddf)
    return table["se"].to_numpy(dtype=float), table["df"].to_numpy(dtype=float)


def _is_num(values: pd.Series) -> bool:
    """Return emmeans' .is.num: whether every value reads as a number.

    Then contrast labels carry the variable name (``period1 - period2``).
    """
    for value in values:
        if isinstance(value, (bool, np.bool_)):
            return False
        try:
            number = float(str(value).strip())
        except ValueError:
            return False
        if math.isnan(number):
            return False
    return True


_PARENS = re.compile(r"-|\+|/|\*")


def _label(value: Any, name: str, enhance: bool) -> str:
    """Return a grid value as emmeans pastes it.

    Numbers to 15 significant digits, booleans as R's TRUE / FALSE, prefixed by
    the variable name when ``enhance`` (numeric levels, see :func:`_is_num`).
    """
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.15g}"
    elif isinstance(value, (bool, np.bool_)):
        text = "TRUE" if value else "FALSE"
    else:
        text = str(value)
    return f"{name}{text}" if enhance else text


# --------------------------------------------------------------------------- results


class EMMeans:
    """Estimated marginal means of a fitted mixed model (emmeans' ``emmGrid``).

    Returned by :func:`emmeans`; ``len()`` is the number of means, and
    ``means["emmean"]`` reads a column of :attr:`table`.

    Attributes
    ----------
    model : LinearMixedModel or GeneralizedLinearMixedModel
        The fitted model.
    table : pandas.DataFrame
        One row per mean: the grid variables (primary, then ``by``), ``emmean``
        (back-transformed when ``type="response"``), ``se``, ``df``, ``lower``,
        ``upper``.
    linfct : pandas.DataFrame
        The linear functions of the fixed effects that give the means
        (link scale, columns named as ``model.fixef``).
    specs, by : list of str
        The primary and the ``by`` variables.
    ddf : str
        ``"kenward-roger"``, ``"satterthwaite"`` or ``"asymptotic"``.
    level : float
        Confidence level of the intervals.
    type : str
        ``"link"`` or ``"response"``.
    notes : list of str
        emmeans' messages (averaging, scales, adjustments).
    estimate_name : str
        emmeans' name of the estimate column (``emmean``, ``prob``, ``rate``, ``response``).
    columns : pandas.Index
        The columns of :attr:`table`.
    """

    def __init__(
        self,
        model: Any,
        combos: pd.DataFrame,
        L: np.ndarray,
        offset: np.ndarray,
        specs: list[str],
        by: list[str],
        ddf: str,
        level: float,
        type: str,
        transform: Transform | None,
        numeric: set[str],
        notes: list[str],
    ):
        self.model = model
        self.specs, self.by = specs, by
        self.ddf, self.level, self.type = ddf, level, type
        self.notes = notes
        self._transform = transform
        self._numeric = numeric
        self._combos = combos
        self._L = L
        self._offset = offset
        self.linfct = pd.DataFrame(L, columns=list(model.fixef.index))
        self._estimate = L @ np.asarray(model.beta, dtype=float) + offset
        self._se, self._df = _se_df(model, L, ddf)
        self.table = self._make_table()

    # ------------------------------------------------------------------ the table

    def _make_table(self) -> pd.DataFrame:
        est, se, df = self._estimate, self._se, self._df
        crit = stats.t.ppf(0.5 + self.level / 2, np.where(np.isnan(df), np.inf, df))
        lower, upper = est - crit * se, est + crit * se
        if self.type == "response" and self._transform is not None:
            tr = self._transform
            se = np.abs(tr.mu_eta(est) * se)
            lo, hi = tr.linkinv(lower), tr.linkinv(upper)
            lower, upper = np.minimum(lo, hi), np.maximum(lo, hi)
            est = tr.linkinv(est)
        table = self._label_columns()
        table["emmean"] = est
        table["se"] = se
        table["df"] = df
        table["lower"] = lower
        table["upper"] = upper
        table.index = pd.RangeIndex(len(table), name="emm")
        table.columns.name = None
        return table

    def _label_columns(self) -> pd.DataFrame:
        out = {}
        for name in self.specs + self.by:
            values = self._combos[name].tolist()
            if name in self._numeric:
                out[name] = np.asarray(values, dtype=float)
            else:
                labels = [_label(v, name, False) for v in values]
                cats = list(dict.fromkeys(labels))
                out[name] = pd.Categorical(labels, categories=cats)
        return pd.DataFrame(out)

    @property
    def estimate_name(self) -> str:
        """Name of the estimate column in emmeans' output.

        ``emmean`` on the link scale, ``prob`` / ``rate`` / ``response``
        back-transformed (this table's column is always ``emmean``).
        """
        if self.type == "response" and self._transform is not None:
            return self._transform.label
        return "emmean"

    def to_frame(self) -> pd.DataFrame:
        """Return a copy of :attr:`table`."""
        return self.table.copy()

    def __getitem__(self, key: Any) -> Any:
        return self.table[key]

    def __len__(self) -> int:
        return len(self.table)

    @property
    def columns(self) -> pd.Index:
        """The columns of :attr:`table`."""
        return self.table.columns

    def __repr__(self) -> str:
        lines = [self.table.to_string()]
        lines += [""] + self.notes if self.notes else []
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.table.to_html()

    # ------------------------------------------------------------------ contrasts

    def pairs(self, **kwargs: Any) -> pd.DataFrame:
        """Return the pairwise contrasts, ``contrasts("pairwise", ...)`` (emmeans' ``pairs()``)."""
        return self.contrasts("pairwise", **kwargs)

    def contrasts(
        self,
        method: str | Mapping[str, Sequence[float]] = "pairwise",
        adjust: str | None = None,
        ref: Any = None,
        by: Any = _INHERIT,
        type: str | None = None,
        reverse: bool = False,
    ) -> pd.DataFrame:
        """Return contrasts of the means, as emmeans' ``contrast()``.

        Parameters
        ----------
        method : str or dict
            ``"pairwise"``, ``"revpairwise"``, ``"trt.vs.ctrl"``, ``"consec"``,
            ``"eff"``, or ``{name: coefficients}`` with one coefficient per
            mean of a ``by`` group.
        adjust : str, optional
            p-value adjustment; default the method's (pairwise: ``"tukey"``,
            trt.vs.ctrl: ``"dunnettx"``, consec: ``"mvt"``, eff: ``"fdr"``,
            custom: ``"none"``).
        ref : str, int or list, optional
            Control level(s) of trt.vs.ctrl: labels, or 0-based positions
            (default the first).
        by : str or list of str or None, optional
            Groups within which to contrast (default the means' ``by``).
        type : {"link", "response"}, optional
            Default the means' type. On the response scale, contrasts of
            log / logit means are ratios / odds ratios (labels ``"a / b"``);
            tests are always done on the link scale.
        reverse : bool
            trt.vs.ctrl and consec: the reversed differences.

        Returns
        -------
        pandas.DataFrame
            ``contrast``, the by variables, ``estimate, se, df``, ``t`` (``z``
            when df is infinite) and ``p_value``; ``attrs`` holds ``adjust``
            (the method used) and ``notes``.
        """
        by_vars = self.by if by is _INHERIT else _as_list(by)
        for name in by_vars:
            if name not in self.specs + self.by:
                raise ModelSpecError(
                    f"by variable {name!r} is not a variable of these means "
                    f"({self.specs + self.by})"
                )
        primary = [v for v in self.specs + self.by if v not in by_vars]
        if not primary:
            raise ModelSpecError(
                f"by = {by_vars} leaves no variable to contrast: the means vary only by them"
            )
        groups, levs, raw = self._groups(primary, by_vars)
        family = make_family(method, levs, raw, ref, reverse)
        C = family.coef
        k = len(levs)
        L_rows, rows_meta = [], []
        for g, rows in enumerate(groups):
            if len(rows) != k:
                raise ModelSpecError("the by groups are of irregular size")
            L_rows.append(C.T @ self._L[rows])
            rows_meta.append(np.asarray(C.T @ self._offset[rows]))
        Lc = np.vstack(L_rows) if L_rows else np.zeros((0, self._L.shape[1]))
        offset = np.concatenate(rows_meta) if rows_meta else np.zeros(0)
        return self._contrast_table(family, Lc, offset, groups, by_vars, adjust, type)

    def _groups(
        self, primary: list[str], by_vars: list[str]
    ) -> tuple[list[np.ndarray], list[str], list[str]]:
        """Return the rows of every by group and the labels of the first group's means.

        Groups come in order of appearance; the labels are emmeans' levs, with
        parentheses where needed, and as pasted (raw).
        """
        combos = self._combos
        if by_vars:
            keys = combos[by_vars].astype(str).agg("\x1f".join, axis=1).to_numpy()
            order = list(dict.fromkeys(keys))
            groups = [np.flatnonzero(keys == key) for key in order]
        else:
            groups = [np.arange(len(combos))]
        first = combos.iloc[groups[0]]
        enhance = {v: _is_num(combos[v]) for v in primary}
        raw = [
            " ".join(_label(row[v], v, enhance[v]) for v in primary)
            for _, row in first.iterrows()
        ]
        levs = [f"({lv})" if _PARENS.search(lv) else lv for lv in raw]
        return groups, levs, raw

    def _contrast_table(
        self,
        family: ContrastFamily,
        Lc: np.ndarray,
        offset: np.ndarray,
        groups: list[np.ndarray],
        by_vars: list[str],
        adjust: str | None,
        type: str | None,
    ) -> pd.DataFrame:
        notes: list[str] = []
        n_con = family.coef.shape[1]
        est = Lc @ np.asarray(self.model.beta, dtype=float) + offset
        se, df = _se_df(self.model, Lc, self.ddf)
        t = est / se
        sums = family.coef.sum(axis=0)
        scale = np.abs(family.coef).max(axis=0) + 1e-6
        true_contrast = bool(np.all(np.abs(sums / scale) < 1e-6)) if n_con else False
        est_type = family.est_type or (2 if np.all(np.abs(sums) < 1e-3) else 1)
        by_rows = [np.arange(g * n_con, (g + 1) * n_con) for g in range(len(groups))]
        fam = AdjustmentFamily(
            fam_size=family.fam_size or len(groups[0]),
            n_contr=n_con,
            est_type=est_type,
            by_rows=by_rows,
            linfct=Lc,
        )
        method = family.adjust if adjust is None else adjust
        if normalize_adjust(method) == "mvt" and n_con > 1:
            V = _vcov_for(self.model, self.ddf)
            cov = Lc @ V @ Lc.T
            sd = np.sqrt(np.diag(cov))
            fam.corr = cov / np.outer(sd, sd)
        pval, used = adjusted_p(t, df, method, fam, notes)
        names = list(family.names)
        type = self.type if type is None else _check_type(type)
        if type == "response" and self._transform is not None:
            if true_contrast and self._transform.name in ("log", "log2", "log10", "logit"):
                est, se = _ratio(est, se, self._transform.name)
                names = [n.replace(" - ", " / ") for n in names]
            else:
                notes.append(f"Note: contrasts are still on the {self._transform.name} scale")
        table = pd.DataFrame({"contrast": pd.Categorical(
            [names[i % n_con] for i in range(len(est))], categories=list(dict.fromkeys(names))
        )})
        first_rows = [g[0] for g in groups]
        for name in by_vars:
            col = self.table[name].to_numpy()
            table[name] = np.repeat(np.asarray(col[first_rows]), n_con)
            if isinstance(self.table[name].dtype, pd.CategoricalDtype):
                table[name] = pd.Categorical(
                    table[name], categories=self.table[name].cat.categories
                )
        stat = "z" if np.all(np.isinf(df) | np.isnan(df)) else "t"
        table["estimate"] = est
        table["se"] = se
        table["df"] = df
        table[stat] = t
        table["p_value"] = pval
        table.index = pd.RangeIndex(len(table), name="contrast_id")
        table.attrs["adjust"] = used
        table.attrs["notes"] = notes
        return table


def _ratio(est: np.ndarray, se: np.ndarray, link: str) -> tuple[np.ndarray, np.ndarray]:
    """Back-transformed contrasts of log-type means: ratios with delta-method SEs."""
    base = {"log": math.e, "logit": math.e, "log2": 2.0, "log10": 10.0}[link]
    ratio = base**est
    return ratio, ratio * math.log(base) * se


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_type(type: str) -> str:
    if type not in ("link", "response"):
        raise ModelSpecError(f"type must be 'link' or 'response', not {type!r}")
    return type


# --------------------------------------------------------------------------- entry point


def emmeans(
    model: Any,
    specs: str | Sequence[str],
    by: str | Sequence[str] | None = None,
    at: Mapping[str, Any] | None = None,
    ddf: str | None = None,
    level: float = 0.95,
    type: str = "link",
    weights: str | Sequence[float] = "equal",
    offset: float | None = None,
) -> EMMeans:
    """Compute estimated marginal means, as R's ``emmeans(model, specs, ...)`` (emmeans 1.8.4).

    Parameters
    ----------
    model : LinearMixedModel or GeneralizedLinearMixedModel
        A fitted model.
    specs : str or list of str
        The variables whose means are wanted: a name (``"A"``), a list of
        names, or a formula text (``"~ A | B"``, ``"A * B"``, ``"~ A:B"``).
    by : str or list of str, optional
        Variables whose levels group the means (added to the ``|`` part of specs).
    at : dict, optional
        Reference values: ``{"x": [2, 8]}`` for a covariate (default its mean),
        ``{"A": ["a", "b"]}`` to restrict a factor.
    ddf : {"kenward-roger", "satterthwaite", "asymptotic"}, optional
        lmer: default Kenward-Roger (asymptotic beyond 3000 observations, as
        emmeans); glmer: asymptotic only.
    level : float
        Confidence level of the intervals.
    type : {"link", "response"}
        ``"response"``: back-transform through the glmer's link (or the lmer's
        response transformation).
    weights : str or sequence of float
        Averaging weights: ``"equal"`` (emmeans' default), ``"proportional"``,
        ``"outer"``, ``"cells"``, ``"flat"``, or one weight per combination of
        the averaged-over grid values.
    offset : float, optional
        An offset for every mean, replacing the model's (by default the mean
        of the model's offset over the rows used, as emmeans).

    Returns
    -------
    EMMeans
        ``.table`` (DataFrame: grid variables, ``emmean, se, df, lower, upper``)
        and ``.contrasts(...)``.

    Raises
    ------
    ModelSpecError
        Unknown variables, bad options, or a mean that is not estimable.
    """
    model.require_fit()
    if not 0 < level < 1:
        raise ModelSpecError(f"level must be between 0 and 1, not {level!r}")
    type = _check_type(type)
    primary, by_vars = parse_specs(specs, by)
    method = _resolve_ddf(model, ddf)
    rg = reference_grid(model, at)
    facs = primary + by_vars
    combos, L_all, offsets = marginal(rg, facs, weights)
    if not facs:  # specs "1": the overall mean, labelled as emmeans labels it
        combos, primary = pd.DataFrame({"1": ["overall"]}), ["1"]
    if offset is not None:
        offsets = np.full(len(combos), float(offset))
    _check_estimable(model, combos, L_all, facs)
    L = L_all[:, np.asarray(model.frame.fixed.kept)]
    notes = _notes(rg, facs)
    transform = model_transform(model)
    if type == "response" and transform is None:
        notes.append("type='response': the model has no link or response transformation")
    return EMMeans(
        model, combos, L, offsets, primary, by_vars, method, level, type, transform,
        rg.numeric, notes,
    )


def _check_estimable(model: Any, combos: pd.DataFrame, L_all: np.ndarray, facs: list[str]) -> None:
    ok = estimable(L_all, null_basis(model))
    if ok.all():
        return
    cells = [
        ", ".join(f"{f}={_label(combos.iloc[i][f], f, False)}" for f in facs) or "overall"
        for i in np.flatnonzero(~ok)
    ]
    raise ModelSpecError(
        f"marginal mean(s) not estimable in model {model.frame.parsed.text!r} "
        f"(a cell without data in a rank-deficient fit): {'; '.join(cells)}"
    )


def _notes(rg: ReferenceGrid, facs: list[str]) -> list[str]:
    avgd = [n for n, v in rg.levels.items() if len(v) > 1 and n not in facs]
    return [f"Results are averaged over the levels of: {', '.join(avgd)}"] if avgd else []

