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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mixedmodels.exceptions import MixedModelsWarning, ModelSpecError
from mixedmodels.spec.coding import fitted_factor_levels
from mixedmodels.spec.formula import variables_in
from mixedmodels.spec.newdata import apply_spec

__all__ = ["EMMeans", "emmeans", "p_adjust"]

#: emmeans' pbkrtest.limit / lmerTest.limit: above this many observations its
#: default degrees-of-freedom method becomes "asymptotic".
DF_LIMIT = 3000
#: emmeans' estble.tol (estimability::is.estble).
ESTIMABILITY_TOL = 1e-8
#: emmeans' cov.keep = "2": numeric covariates with at most this many distinct
#: values enter the grid at each of them.
COV_KEEP = 2

_DDF_NAMES = {
    "kenward-roger": "kenward-roger",
    "kr": "kenward-roger",
    "kenwardroger": "kenward-roger",
    "satterthwaite": "satterthwaite",
    "asymptotic": "asymptotic",
}
_P_ADJUST = ("holm", "hochberg", "hommel", "bonferroni", "BH", "BY", "fdr", "none")
_ADJUSTMENTS = ("sidak", "tukey", "scheffe", "dunnettx", "mvt") + _P_ADJUST
_INHERIT: Any = object()


# --------------------------------------------------------------------------- transformations


@dataclass(frozen=True)
class _Transform:
    """The scale the linear functions live on: emmeans' ``misc$tran``."""

    name: str
    linkinv: Callable[[np.ndarray], np.ndarray]
    mu_eta: Callable[[np.ndarray], np.ndarray]
    label: str = "response"  # emmeans' inv.lbl: prob, rate or response


_RESPONSE_TRANSFORMS: dict[str, tuple[Callable, Callable]] = {
    "log": (np.exp, np.exp),
    "log2": (lambda e: 2.0**e, lambda e: 2.0**e * math.log(2.0)),
    "log10": (lambda e: 10.0**e, lambda e: 10.0**e * math.log(10.0)),
    "log1p": (np.expm1, np.exp),
    "sqrt": (lambda e: np.maximum(0.0, e) ** 2, lambda e: 2.0 * np.maximum(0.0, e)),
}


def _model_transform(model: Any) -> _Transform | None:
    """The link of a glmer (None for identity), or the transformation of an
    lmer response written ``log(y)`` etc. (emmeans detects those)."""
    family = getattr(model, "family", None)
    if family is not None:
        link = family.link
        if link.name == "identity":
            return None
        label = {"binomial": "prob", "poisson": "rate"}.get(family.name, "response")
        return _Transform(link.name, link.linkinv, link.mu_eta, label)
    response = model.frame.parsed.response or ""
    match = re.fullmatch(r"\s*(?:np\.)?(log|log2|log10|log1p|sqrt)\((.+)\)\s*", response)
    if match is None:
        return None
    inv, deriv = _RESPONSE_TRANSFORMS[match.group(1)]
    return _Transform(match.group(1), inv, deriv)


# --------------------------------------------------------------------------- reference grid


@dataclass
class _ReferenceGrid:
    """emmeans' reference grid: every combination of the reference values.

    Attributes
    ----------
    levels : dict
        Variable -> its reference values, in the grid's order (first varies fastest).
    numeric : set of str
        Variables whose grid values are numbers (emmeans ``.is.num``).
    X : ndarray, shape (G, p_all)
        The fixed-effects matrix of the grid rows, all formula columns.
    offset : ndarray, shape (G,)
        Offset of each grid row (the mean of the model's offset).
    weights : ndarray, shape (G,)
        Number of observations (sum of prior weights) of each grid cell,
        computed on first use (only non-equal weighting needs it).
    """

    levels: dict[str, list[Any]]
    numeric: set[str]
    X: np.ndarray
    offset: np.ndarray
    grid: pd.DataFrame
    counted: set[str]
    model: Any = field(repr=False)
    _weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def dims(self) -> list[int]:
        return [len(v) for v in self.levels.values()]

    @property
    def weights(self) -> np.ndarray:
        if self._weights is None:
            # emmeans counts observations: the data it recovers from an lmer
            # or glmer carry no prior weights
            self._weights = _cell_weights(self.grid, self.model.frame.data, self.counted)
        return self._weights


def _ordered_variables(text: str, names: set[str]) -> list[str]:
    """``names`` in the order they first appear in ``text`` (R's all.vars order)."""

    def position(name: str) -> int:
        found = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", text)
        return found.start() if found else len(text)

    return sorted(names, key=lambda n: (position(n), n))


def _predictors(model: Any) -> list[str]:
    """Variables of the fixed part and of the formula's offset terms."""
    parsed = model.frame.parsed
    fixed = _ordered_variables(parsed.fixed, variables_in(parsed.fixed))
    for expr in parsed.offsets:
        fixed += [v for v in _ordered_variables(expr, variables_in(expr)) if v not in fixed]
    return fixed


def _reference_levels(
    model: Any, data: pd.DataFrame, at: Mapping[str, Any] | None
) -> tuple[dict[str, list[Any]], set[str], set[str]]:
    """Reference values of every predictor, the numeric ones, and the factors
    (including kept covariates: what emmeans' weights count)."""
    factor_levels = fitted_factor_levels(model.frame.fixed.model_spec)
    at = dict(at or {})
    predictors = _predictors(model)
    unknown = sorted(set(at) - set(predictors))
    if unknown:
        raise ModelSpecError(
            f"at= names {unknown}, which are not variables of the fixed part of the model "
            f"{model.frame.parsed.text!r}"
        )
    levels: dict[str, list[Any]] = {}
    numeric: set[str] = set()
    counted: set[str] = set()
    for name in predictors:
        column = data[name]
        if name in factor_levels:
            fitted = list(factor_levels[name])
            levels[name] = _factor_at(name, fitted, at) if name in at else fitted
            counted.add(name)
            if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in fitted):
                numeric.add(name)  # factor(x) of a numeric x: emmeans keeps the numbers
            continue
        values = np.asarray(column)
        if name in at:
            levels[name] = list(np.atleast_1d(np.asarray(at[name], dtype=float)))
        else:
            unique = np.unique(values)
            if len(unique) <= COV_KEEP:
                levels[name] = list(unique)
                counted.add(name)
            else:
                levels[name] = [float(np.mean(values.astype(float)))]
        if values.dtype != bool:
            numeric.add(name)
    return levels, numeric, counted


def _factor_at(name: str, fitted: list[Any], at: Mapping[str, Any]) -> list[Any]:
    """The levels ``at`` asks of factor ``name`` (emmeans restricts the grid to them)."""
    wanted = [str(v) for v in np.atleast_1d(np.asarray(at[name], dtype=object))]
    by_label = {str(v): v for v in fitted}
    missing = [w for w in wanted if w not in by_label]
    if missing:
        raise ModelSpecError(
            f"at= gives level(s) {missing} of factor {name!r}, whose levels are "
            f"{list(by_label)}"
        )
    return [v for v in fitted if str(v) in set(wanted)]


def _expand_grid(levels: Mapping[str, list[Any]], data: pd.DataFrame) -> pd.DataFrame:
    """R's expand.grid (first variable varying fastest), factor columns typed as
    the fitted data so that the model's encoding applies."""
    dims = [len(v) for v in levels.values()]
    total = int(np.prod(dims)) if dims else 1
    columns = {}
    for axis, (name, values) in enumerate(levels.items()):
        inner = int(np.prod(dims[:axis])) if axis else 1
        idx = np.tile(np.repeat(np.arange(len(values)), inner), total // (inner * len(values)))
        arr = np.empty(total, dtype=object)
        arr[:] = [values[i] for i in idx]
        column = data[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            columns[name] = pd.Categorical(
                arr, categories=column.cat.categories, ordered=column.cat.ordered
            )
        elif pd.api.types.is_numeric_dtype(column.dtype) and column.dtype != bool:
            columns[name] = arr.astype(float)
        else:
            columns[name] = arr
    return pd.DataFrame(columns, index=pd.RangeIndex(total))


def _cell_weights(grid: pd.DataFrame, data: pd.DataFrame, counted: set[str]) -> np.ndarray:
    """emmeans' ``.wgt.``: the number of observations in each grid cell of the
    factors and kept covariates."""
    names = [n for n in grid.columns if n in counted]
    w = np.ones(len(data))
    if not names:
        return np.ones(len(grid))
    keys = data[names].astype(str).agg("\x1f".join, axis=1).to_numpy()
    totals = pd.Series(w).groupby(keys).sum()
    grid_keys = grid[names].astype(str).agg("\x1f".join, axis=1)
    return grid_keys.map(totals).fillna(0.0).to_numpy(dtype=float)


def _reference_grid(model: Any, at: Mapping[str, Any] | None) -> _ReferenceGrid:
    data = model.frame.data
    levels, numeric, counted = _reference_levels(model, data, at)
    grid = _expand_grid(levels, data)
    X = apply_spec(model.frame.fixed.model_spec, grid, "reference-grid")
    # emmeans 1.8 recovers the model's total offset (offset() terms and the
    # offset= argument) as a covariate ".offset." and reduces it to its mean
    total = model.frame.offset
    offset = np.full(len(grid), 0.0 if total is None else float(np.mean(total)))
    return _ReferenceGrid(levels, numeric, X, offset, grid, counted, model)


def _null_basis(model: Any) -> np.ndarray | None:
    """Orthonormal basis of the null space of the full fixed-effects matrix
    (estimability::nonest.basis), or None when no column was dropped."""
    fixed = model.frame.fixed
    p_all = len(fixed.all_names)
    kept = np.asarray(fixed.kept)
    if len(kept) == p_all:
        return None
    dropped = np.setdiff1d(np.arange(p_all), kept)
    X_all = apply_spec(fixed.model_spec, model.frame.data, "fixed-effects")
    coef, *_ = np.linalg.lstsq(X_all[:, kept], X_all[:, dropped], rcond=None)
    basis = np.zeros((p_all, len(dropped)))
    basis[kept, :] = -coef
    basis[dropped, np.arange(len(dropped))] = 1.0
    q, _ = np.linalg.qr(basis)
    return q


def _estimable(L_all: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """estimability::is.estble of every row of ``L_all`` (all formula columns)."""
    if basis is None:
        return np.ones(L_all.shape[0], dtype=bool)
    proj = L_all @ basis
    return np.sum(proj**2, axis=1) < ESTIMABILITY_TOL * np.sum(L_all**2, axis=1)


# --------------------------------------------------------------------------- specs and averaging


def _parse_specs(specs: Any, by: Any) -> tuple[list[str], list[str]]:
    """The primary variables and the ``by`` variables of emmeans' specs:
    a name, a list of names, or a formula text ``"~ A | B"``, ``"A * B"``."""
    by_list = [] if by is None else ([by] if isinstance(by, str) else list(by))
    if isinstance(specs, str):
        text = specs.strip()
        if "~" in text:
            lhs, text = text.split("~", 1)
            if lhs.strip():
                raise ModelSpecError(
                    f"specs {specs!r}: a left-hand side (contrasts) is not supported here; "
                    "call .contrasts(...) on the result instead"
                )
        primary_text, _, by_text = text.partition("|")
        primary = _names_of(primary_text, specs)
        by_list = [b for b in _names_of(by_text, specs) if b not in by_list] + by_list
    elif isinstance(specs, Sequence) and all(isinstance(s, str) for s in specs) and specs:
        primary = list(dict.fromkeys(specs))
    else:
        raise ModelSpecError(
            f"specs must be a variable name, a list of names or a text such as '~ A | B', "
            f"not {specs!r}"
        )
    by_list = [b for b in dict.fromkeys(by_list) if b not in primary]
    return primary, by_list


def _names_of(text: str, specs: Any) -> list[str]:
    names = [n.strip().strip("`") for n in re.split(r"[+*:]", text) if n.strip()]
    for name in names:
        if name != "1" and not re.fullmatch(r"[^\s()]+", name):
            raise ModelSpecError(f"specs {specs!r}: {name!r} is not a variable name")
    return [n for n in names if n != "1"]


def _averaging_weights(
    rg: _ReferenceGrid, use: list[int], rest: list[int], weights: Any
) -> np.ndarray | None:
    """Weights of the averaged-over grid cells (one per ``rest`` combination),
    or None for a per-mean ("cells", "flat") weighting."""
    dims = rg.dims
    n_rest = int(np.prod([dims[i] for i in rest])) if rest else 1
    if isinstance(weights, str):
        kind = weights.lower()
        if kind == "equal":
            return np.ones(n_rest)
        wgt = rg.weights.reshape(dims, order="F")
        margin = wgt.sum(axis=tuple(use)) if use else wgt
        if kind == "proportional":
            return margin.reshape(-1, order="F")
        if kind == "outer":
            total = margin.sum()
            out = np.array(1.0)
            for axis in range(margin.ndim):
                other = tuple(a for a in range(margin.ndim) if a != axis)
                out = np.multiply.outer(out, margin.sum(axis=other) / total)
            return (out * total).reshape(-1, order="F")
        if kind in ("cells", "flat"):
            return None
        raise ModelSpecError(
            f"weights {weights!r}: use 'equal', 'proportional', 'outer', 'cells', 'flat' "
            "or a vector of weights"
        )
    w = np.asarray(weights, dtype=float).ravel()
    if len(w) != n_rest:
        raise ModelSpecError(
            f"weights has {len(w)} values: averaging needs one per combination of the "
            f"averaged-over grid values ({n_rest})"
        )
    return w


def _marginal(
    rg: _ReferenceGrid, facs: list[str], weights: Any
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The combinations of ``facs`` (first fastest), their linear functions over
    all formula columns, and their offsets."""
    names = list(rg.levels)
    missing = [f for f in facs if f not in names]
    if missing:
        raise ModelSpecError(
            f"no variable named {missing[0]!r} in the reference grid; its variables are {names}"
        )
    use = [names.index(f) for f in facs]
    rest = [i for i in range(len(names)) if i not in use]
    dims = rg.dims
    idx = np.arange(int(np.prod(dims))).reshape(dims, order="F")
    idx = np.transpose(idx, use + rest)
    n_use = int(np.prod([dims[i] for i in use])) if use else 1
    idx = idx.reshape(n_use, -1, order="F")
    w = _averaging_weights(rg, use, rest, weights)
    L = np.empty((n_use, rg.X.shape[1]))
    offset = np.empty(n_use)
    for row, cells in enumerate(idx):
        if w is None:
            cw = rg.weights[cells]
            if str(weights).lower() == "flat":
                cw = (cw > 0).astype(float)
        else:
            cw = w
        total = cw.sum()
        if not total > 1e-8:
            raise ModelSpecError(
                f"weights {weights!r} give the marginal mean {row + 1} no observations to average"
            )
        L[row] = cw @ rg.X[cells] / total
        offset[row] = cw @ rg.offset[cells] / total
    combos = _combinations({f: rg.levels[f] for f in facs})
    return combos, L, offset


def _combinations(levels: Mapping[str, list[Any]]) -> pd.DataFrame:
    """R's expand.grid of labelled levels (first fastest)."""
    dims = [len(v) for v in levels.values()]
    total = int(np.prod(dims)) if dims else 1
    out = {}
    for axis, (name, values) in enumerate(levels.items()):
        inner = int(np.prod(dims[:axis])) if axis else 1
        pos = np.tile(np.repeat(np.arange(len(values)), inner), total // (inner * len(values)))
        out[name] = [values[i] for i in pos]
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- inference


def _resolve_ddf(model: Any, ddf: str | None) -> str:
    """The degrees-of-freedom method: emmeans' default and its 3000-row limit."""
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
    """The covariance of the fixed effects the method uses (KR: pbkrtest's vcovAdj)."""
    if ddf == "kenward-roger":
        from mixedmodels.inference.ddf import kenward_roger_vcov

        return np.asarray(kenward_roger_vcov(model), dtype=float)
    return np.asarray(model.vcov, dtype=float)


def _se_df(model: Any, L: np.ndarray, ddf: str) -> tuple[np.ndarray, np.ndarray]:
    """Standard errors and degrees of freedom of the rows of ``L`` (kept columns)."""
    if L.shape[0] == 0:
        return np.empty(0), np.empty(0)
    if ddf == "asymptotic":
        V = np.asarray(model.vcov, dtype=float)
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", L, V, L), 0.0))
        return se, np.full(L.shape[0], np.inf)
    from mixedmodels.inference.ddf import contrast_df

    table = contrast_df(model, L, ddf)
    return table["se"].to_numpy(dtype=float), table["df"].to_numpy(dtype=float)


# --------------------------------------------------------------------------- p-value adjustment


def p_adjust(p: Sequence[float], method: str = "holm", n: int | None = None) -> np.ndarray:
    """R's ``p.adjust``: Holm, Hochberg, Hommel, Bonferroni, BH (fdr), BY or none.

    Parameters
    ----------
    p : sequence of float
        Unadjusted p-values (NaN allowed: left out, as R does).
    method : str
        One of ``holm, hochberg, hommel, bonferroni, BH, fdr, BY, none``.
    n : int, optional
        Number of tests (default: the non-missing p-values).
    """
    p0 = np.asarray(p, dtype=float).copy()
    ok = ~np.isnan(p0)
    pv = p0[ok]
    lp = len(pv)
    n = lp if n is None else int(n)
    method = "BH" if method == "fdr" else method
    if n <= 1 or method == "none":
        return p0
    if n == 2 and method == "hommel":
        method = "hochberg"
    p0[ok] = _p_adjust_values(pv, method, n)
    return p0


def _p_adjust_values(p: np.ndarray, method: str, n: int) -> np.ndarray:
    lp = len(p)
    if method == "bonferroni":
        return np.minimum(1.0, n * p)
    if method == "holm":
        o = np.argsort(p, kind="stable")
        i = np.arange(1, lp + 1)
        out = np.minimum(1.0, np.maximum.accumulate((n - i + 1) * p[o]))
        return out[np.argsort(o, kind="stable")]
    if method in ("hochberg", "BH", "BY"):
        i = np.arange(lp, 0, -1)
        o = np.argsort(-p, kind="stable")
        if method == "hochberg":
            scaled = (n - i + 1) * p[o]
        else:
            q = np.sum(1.0 / np.arange(1, n + 1)) if method == "BY" else 1.0
            scaled = q * n / i * p[o]
        out = np.minimum(1.0, np.minimum.accumulate(scaled))
        return out[np.argsort(o, kind="stable")]
    if method == "hommel":
        return _hommel(p, n)
    raise ModelSpecError(f"p-value adjustment {method!r} is not one of {list(_ADJUSTMENTS)}")


def _hommel(p: np.ndarray, n: int) -> np.ndarray:
    """R's p.adjust(method = "hommel"), line for line."""
    lp = len(p)
    p = np.concatenate([p, np.ones(n - lp)])
    i = np.arange(1, n + 1)
    o = np.argsort(p, kind="stable")
    p = p[o]
    ro = np.argsort(o, kind="stable")
    q = np.full(n, np.min(n * p / i))
    pa = q.copy()
    for m in range(n - 1, 1, -1):
        i1 = np.arange(0, n - m + 1)
        i2 = np.arange(n - m + 1, n)
        q1 = np.min(m * p[i2] / np.arange(2, m + 1))
        q[i1] = np.minimum(m * p[i1], q1)
        q[i2] = q[n - m]
        pa = np.maximum(pa, q)
    return np.maximum(pa, p)[ro][:lp] if lp == n else np.maximum(pa, p)[ro[:lp]]


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall (emmeans rounds the Tukey df with it)."""
    finite = x[~np.isnan(x)]
    if finite.size == 0:
        return x
    mx = np.max(np.abs(finite))
    if not mx > 0:
        return x
    decimals = max(0, digits - math.ceil(math.log10(mx))) if np.isfinite(mx) else 0
    return np.round(x, decimals)


def _ptukey_sf(q: np.ndarray, nmeans: float, df: np.ndarray) -> np.ndarray:
    """Upper tail of the studentized range (R's ptukey(lower.tail = FALSE));
    nmeans and df may be fractional."""
    return np.array(
        [stats.studentized_range.sf(qi, nmeans, di) if np.isfinite(qi) else np.nan
         for qi, di in zip(q, df)]
    )


def _pdunnx(x: np.ndarray, k: int, df: np.ndarray) -> np.ndarray:
    """emmeans' .pdunnx: Dunnett's distribution approximated by a blend of
    Tukey's and Sidak's."""
    twt = (k - 1) / k
    nmeans = (1 + math.sqrt(1 + 8 * k)) / 2
    tukey = 1.0 - _ptukey_sf(math.sqrt(2) * x, nmeans, df)
    sidak = _f_cdf(x**2, 1, df) ** k
    return twt * tukey + (1 - twt) * sidak


def _f_cdf(x: np.ndarray, d1: float, d2: np.ndarray) -> np.ndarray:
    """R's pf(x, d1, d2), also for d2 = Inf (then chi-squared(d1) / d1)."""
    x, d2 = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(d2, dtype=float))
    out = np.empty(x.shape)
    inf = np.isinf(d2)
    out[inf] = stats.chi2.cdf(x[inf] * d1, d1)
    out[~inf] = stats.f.cdf(x[~inf], d1, d2[~inf])
    return out


def _mvt_df(d: float) -> int:
    """emmeans' .fix.df: whole df for mvtnorm, 0 (normal) when infinite or > 9999."""
    if np.isnan(d) or np.isinf(d) or d > 9999:
        return 0
    return math.floor(max(1.0, d) + 0.25)


def _pmvt(t: np.ndarray, df: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """emmeans' mvt adjustment: 1 - P(max |T_j| <= |t_i|) for the multivariate t
    of the family's correlation (mvtnorm::pmvt with integer df); a randomized
    quasi-Monte Carlo integral, seeded for reproducibility."""
    k = len(t)
    out = np.empty(k)
    for i in range(k):
        a = abs(t[i])
        upper, lower = np.full(k, a), np.full(k, -a)
        dfi = _mvt_df(df[i])
        if dfi > 0:
            dist = stats.multivariate_t(
                loc=np.zeros(k), shape=corr, df=dfi, allow_singular=True, seed=1
            )
            prob = dist.cdf(upper, lower_limit=lower, maxpts=200000 * k, random_state=1)
        else:
            dist = stats.multivariate_normal(mean=np.zeros(k), cov=corr, allow_singular=True, seed=1)
            prob = dist.cdf(upper, lower_limit=lower)
        out[i] = 1.0 - prob
    return np.clip(out, 0.0, 1.0)


@dataclass
class _Family:
    """What an adjustment needs of one family of tests (emmeans' fam.info)."""

    fam_size: int
    n_contr: int
    est_type: int  # 1 prediction, 2 contrast, 3 pairs
    by_rows: list[np.ndarray]
    linfct: np.ndarray  # rows of the tests, kept columns
    corr: np.ndarray | None = None


def _normalize_adjust(adjust: str) -> str:
    key = str(adjust)
    low = key.lower()
    if low in ("bh", "by"):
        return low.upper()
    matches = [a for a in _ADJUSTMENTS if a.lower().startswith(low)]
    if low in [a.lower() for a in _ADJUSTMENTS]:
        return next(a for a in _ADJUSTMENTS if a.lower() == low)
    if len(matches) == 1:
        return matches[0]
    raise ModelSpecError(f"adjust {adjust!r} is not one of {list(_ADJUSTMENTS)}")


def _adjusted_p(
    t: np.ndarray, df: np.ndarray, adjust: str, fam: _Family, notes: list[str]
) -> tuple[np.ndarray, str]:
    """emmeans' .adj.p.value for two-sided tests: the p-values and the method used."""
    adjust = _normalize_adjust(adjust)
    if fam.n_contr == 1 and adjust != "scheffe":
        adjust = "none"
    if fam.est_type != 3 and adjust == "tukey":
        notes.append(
            'adjust = "tukey" was changed to "sidak" because "tukey" is only appropriate '
            "for one set of pairwise comparisons"
        )
        adjust = "sidak"
    df = np.where(np.isnan(df), np.inf, df)
    p_unadj = 2.0 * stats.t.sf(np.abs(t), df)
    ragged = adjust in _P_ADJUST or adjust == "mvt"
    groups = fam.by_rows if ragged else [np.arange(len(t))]
    pval = np.empty(len(t))
    for rows in groups:
        abst, d = np.abs(t[rows]), df[rows]
        n_contr, fam_size = fam.n_contr, fam.fam_size
        if ragged:
            n_contr = len(rows)
        if adjust in _P_ADJUST:
            pval[rows] = _p_adjust_family(p_unadj[rows], adjust, n_contr, fam)
        elif adjust == "sidak":
            pval[rows] = 1.0 - (1.0 - p_unadj[rows]) ** n_contr
        elif adjust == "tukey":
            pval[rows] = _ptukey_sf(math.sqrt(2) * abst, fam_size, _zapsmall(d))
        elif adjust == "scheffe":
            pval[rows] = _scheffe(t[rows], d, rows, fam)
        elif adjust == "dunnettx":
            pval[rows] = 1.0 - _pdunnx(abst, n_contr, d)
        elif adjust == "mvt":
            pval[rows] = _pmvt(t[rows], d, fam.corr[np.ix_(rows, rows)])
    return pval, adjust


def _p_adjust_family(p: np.ndarray, adjust: str, n_contr: int, fam: _Family) -> np.ndarray:
    if n_contr == len(p):
        return p_adjust(p, adjust, n=n_contr)
    cols = p.reshape(n_contr, -1, order="F")
    return np.concatenate(
        [p_adjust(c, adjust, n=int(np.sum(~np.isnan(c)))) for c in cols.T]
    )


def _scheffe(t: np.ndarray, df: np.ndarray, rows: np.ndarray, fam: _Family) -> np.ndarray:
    """Scheffe's adjustment with the rank of each by group's linear functions."""
    out = np.empty(len(t))
    for group in fam.by_rows:
        sel = np.isin(rows, group)
        if not sel.any():
            continue
        rank = np.linalg.matrix_rank(_zapsmall(fam.linfct[group]), tol=1e-7)
        out[sel] = 1.0 - _f_cdf(t[sel] ** 2 / rank, rank, df[sel])
    return out


# --------------------------------------------------------------------------- contrast families


@dataclass
class _ContrastFamily:
    """Coefficients (levels x contrasts) with their names and emmeans' attributes."""

    coef: np.ndarray
    names: list[str]
    adjust: str
    est_type: int | None = None  # 3 for pairs; None: contrast/prediction from the sums
    fam_size: int | None = None


def _pairwise(levs: list[str], reverse: bool = False) -> _ContrastFamily:
    k = len(levs)
    cols, names = [], []
    pairs = (
        [(i, j) for i in range(k - 1) for j in range(i + 1, k)]
        if not reverse
        else [(i, j) for i in range(1, k) for j in range(i)]
    )
    for i, j in pairs:
        con = np.zeros(k)
        con[i], con[j] = 1.0, -1.0
        cols.append(con)
        names.append(f"{levs[i]} - {levs[j]}")
    fam_size = k if not reverse else None
    return _ContrastFamily(_stack(cols, k), names, "tukey", 3, fam_size)


def _trt_vs_ctrl(levs: list[str], raw: list[str], ref: Any, reverse: bool) -> _ContrastFamily:
    k = len(levs)
    refs = _ref_positions(ref, raw)
    ctrl = levs[refs[0]] if len(refs) == 1 else "avg(" + ",".join(levs[r] for r in refs) + ")"
    templ = np.zeros(k)
    templ[refs] = -1.0 / len(refs)
    cols, names = [], []
    for i in range(k):
        if i in refs:
            continue
        con = templ.copy()
        con[i] = 1.0
        cols.append(-con if reverse else con)
        names.append(f"{ctrl} - {levs[i]}" if reverse else f"{levs[i]} - {ctrl}")
    return _ContrastFamily(_stack(cols, k), names, "dunnettx")


def _ref_positions(ref: Any, raw: list[str]) -> list[int]:
    """Positions of the control level(s): labels, or 0-based positions."""
    refs = [0] if ref is None else ref
    if isinstance(refs, (str, int, np.integer)):
        refs = [refs]
    out = []
    for r in refs:
        if isinstance(r, (int, np.integer)) and not isinstance(r, bool):
            if not 0 <= int(r) < len(raw):
                raise ModelSpecError(
                    f"ref position {r} is out of range for {len(raw)} means (0-based)"
                )
            out.append(int(r))
        elif str(r) in raw:
            out.append(raw.index(str(r)))
        else:
            raise ModelSpecError(f"ref {r!r} is not one of the levels {raw}")
    return sorted(set(out))


def _consec(levs: list[str], reverse: bool) -> _ContrastFamily:
    k = len(levs)
    sgn = -1.0 if reverse else 1.0
    cols, names = [], []
    for i in range(k - 1):
        con = np.zeros(k)
        con[i], con[i + 1] = -sgn, sgn
        cols.append(con)
        names.append(f"{levs[i]} - {levs[i + 1]}" if reverse else f"{levs[i + 1]} - {levs[i]}")
    return _ContrastFamily(_stack(cols, k), names, "mvt")


def _eff(levs: list[str]) -> _ContrastFamily:
    k = len(levs)
    cols = [np.full(k, -1.0 / k) + np.eye(k)[i] for i in range(k)]
    return _ContrastFamily(_stack(cols, k), [f"{lv} effect" for lv in levs], "fdr")


def _custom(method: Mapping[str, Sequence[float]], k: int) -> _ContrastFamily:
    cols, names = [], []
    for name, coefs in method.items():
        con = np.asarray(coefs, dtype=float).ravel()
        if len(con) != k:
            raise ModelSpecError(
                f"custom contrast {name!r} has {len(con)} coefficients for {k} means"
            )
        cols.append(con)
        names.append(str(name))
    return _ContrastFamily(_stack(cols, k), names, "none")


def _stack(cols: list[np.ndarray], k: int) -> np.ndarray:
    return np.column_stack(cols) if cols else np.zeros((k, 0))


def _make_family(
    method: Any, levs: list[str], raw: list[str], ref: Any, reverse: bool
) -> _ContrastFamily:
    if isinstance(method, Mapping):
        return _custom(method, len(levs))
    if method == "pairwise":
        return _pairwise(levs)
    if method == "revpairwise":
        return _pairwise(levs, reverse=True)
    if method in ("trt.vs.ctrl", "dunnett"):
        return _trt_vs_ctrl(levs, raw, ref, reverse)
    if method == "consec":
        return _consec(levs, reverse)
    if method == "eff":
        return _eff(levs)
    raise ModelSpecError(
        f"contrast method {method!r} is not one of 'pairwise', 'revpairwise', 'trt.vs.ctrl', "
        "'consec', 'eff' or a dict of coefficient vectors"
    )


def _is_num(values: pd.Series) -> bool:
    """emmeans' .is.num: every value reads as a number (then contrast labels
    carry the variable name, ``period1 - period2``)."""
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
    """A grid value as emmeans pastes it (numbers to 15 significant digits,
    prefixed by the variable name when numeric)."""
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

    Attributes
    ----------
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
    type : str
        ``"link"`` or ``"response"``.
    notes : list of str
        emmeans' messages (averaging, scales, adjustments).
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
        transform: _Transform | None,
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
        """emmeans' name of the estimate column: ``emmean`` on the link scale,
        ``prob`` / ``rate`` / ``response`` back-transformed."""
        if self.type == "response" and self._transform is not None:
            return self._transform.label
        return "emmean"

    def to_frame(self) -> pd.DataFrame:
        """A copy of :attr:`table`."""
        return self.table.copy()

    def __getitem__(self, key: Any) -> Any:
        return self.table[key]

    def __len__(self) -> int:
        return len(self.table)

    @property
    def columns(self) -> pd.Index:
        return self.table.columns

    def __repr__(self) -> str:
        lines = [self.table.to_string()]
        lines += [""] + self.notes if self.notes else []
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.table.to_html()

    # ------------------------------------------------------------------ contrasts

    def pairs(self, **kwargs: Any) -> pd.DataFrame:
        """``contrasts("pairwise", ...)`` (emmeans' ``pairs()``)."""
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
        """Contrasts of the means, as emmeans' ``contrast()``.

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
        family = _make_family(method, levs, raw, ref, reverse)
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
        """Rows of every by group (in order of appearance) and the labels of the
        first group's means (emmeans' levs, with parentheses where needed)."""
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
        family: _ContrastFamily,
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
        fam = _Family(
            fam_size=family.fam_size or len(groups[0]),
            n_contr=n_con,
            est_type=est_type,
            by_rows=by_rows,
            linfct=Lc,
        )
        method = family.adjust if adjust is None else adjust
        if _normalize_adjust(method) == "mvt" and n_con > 1:
            V = _vcov_for(self.model, self.ddf)
            cov = Lc @ V @ Lc.T
            sd = np.sqrt(np.diag(cov))
            fam.corr = cov / np.outer(sd, sd)
        pval, used = _adjusted_p(t, df, method, fam, notes)
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
    """Estimated marginal means, as R's ``emmeans(model, specs, ...)`` (emmeans 1.8.4).

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
    model._require_fit()
    if not 0 < level < 1:
        raise ModelSpecError(f"level must be between 0 and 1, not {level!r}")
    type = _check_type(type)
    primary, by_vars = _parse_specs(specs, by)
    method = _resolve_ddf(model, ddf)
    rg = _reference_grid(model, at)
    facs = primary + by_vars
    combos, L_all, offsets = _marginal(rg, facs, weights)
    if not facs:  # specs "1": the overall mean, labelled as emmeans labels it
        combos, primary = pd.DataFrame({"1": ["overall"]}), ["1"]
    if offset is not None:
        offsets = np.full(len(combos), float(offset))
    _check_estimable(model, combos, L_all, facs)
    L = L_all[:, np.asarray(model.frame.fixed.kept)]
    notes = _notes(rg, facs)
    transform = _model_transform(model)
    if type == "response" and transform is None:
        notes.append("type='response': the model has no link or response transformation")
    return EMMeans(
        model, combos, L, offsets, primary, by_vars, method, level, type, transform,
        rg.numeric, notes,
    )


def _check_estimable(model: Any, combos: pd.DataFrame, L_all: np.ndarray, facs: list[str]) -> None:
    ok = _estimable(L_all, _null_basis(model))
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


def _notes(rg: _ReferenceGrid, facs: list[str]) -> list[str]:
    avgd = [n for n, v in rg.levels.items() if len(v) > 1 and n not in facs]
    return [f"Results are averaged over the levels of: {', '.join(avgd)}"] if avgd else []
