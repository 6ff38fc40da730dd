"""emmeans' reference grid of a fitted model and the marginal means over it.

The response transformation, the grid's variables at their reference values,
the cell weights, the parsing of ``specs`` and the averaging matrices (see
:mod:`mixedmodels.inference.emmeans` for what is reproduced).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import ModelSpecError
from mixedmodels.spec.coding import fitted_factor_levels
from mixedmodels.spec.formula import variables_in
from mixedmodels.spec.newdata import apply_spec

__all__ = [
    "ReferenceGrid", "Transform", "estimable", "marginal", "model_transform", "null_basis",
    "parse_specs", "reference_grid",
]

#: emmeans' estble.tol (estimability::is.estble).
ESTIMABILITY_TOL = 1e-8
#: emmeans' cov.keep = "2": numeric covariates with at most this many distinct
#: values enter the grid at each of them.
COV_KEEP = 2


# --------------------------------------------------------------------------- transformations


@dataclass(frozen=True)
class Transform:
    """The scale the linear functions live on: emmeans' ``misc$tran``.

    Attributes
    ----------
    name : str
        The link or response transformation (``"logit"``, ``"log"``, ``"sqrt"``, ...).
    linkinv : callable
        From the linear-function scale to the response scale.
    mu_eta : callable
        The derivative of ``linkinv`` (for delta-method standard errors).
    label : str
        emmeans' inv.lbl, the name of back-transformed means: prob, rate or response.
    """

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


def model_transform(model: Any) -> Transform | None:
    """Return the scale of a model's linear functions, or None for the identity.

    The link of a glmer (None for identity), or the transformation of an lmer
    response written ``log(y)``, ``log2``, ``log10``, ``log1p`` or ``sqrt``
    (emmeans detects those).
    """
    family = getattr(model, "family", None)
    if family is not None:
        link = family.link
        if link.name == "identity":
            return None
        label = {"binomial": "prob", "poisson": "rate"}.get(family.name, "response")
        return Transform(link.name, link.linkinv, link.mu_eta, label)
    response = model.frame.parsed.response or ""
    match = re.fullmatch(r"\s*(?:np\.)?(log|log2|log10|log1p|sqrt)\((.+)\)\s*", response)
    if match is None:
        return None
    inv, deriv = _RESPONSE_TRANSFORMS[match.group(1)]
    return Transform(match.group(1), inv, deriv)


# --------------------------------------------------------------------------- reference grid


@dataclass
class ReferenceGrid:
    """emmeans' reference grid: every combination of the reference values.

    Attributes
    ----------
    levels : dict
        Variable -> its reference values, in the grid's order (first varies fastest).
    dims : list of int
        Number of reference values of every variable, in the order of ``levels``.
    numeric : set of str
        Variables whose grid values are numbers (emmeans ``.is.num``).
    X : ndarray, shape (G, p_all)
        The fixed-effects matrix of the grid rows, all formula columns.
    offset : ndarray, shape (G,)
        Offset of each grid row (the mean of the model's offset).
    weights : ndarray, shape (G,)
        Number of observations of each grid cell (emmeans counts observations:
        the data it recovers from an lmer or glmer carry no prior weights),
        computed on first use (only non-equal weighting needs it).
    grid : DataFrame
        The grid rows: one column per variable, factors typed as in the fitted data.
    counted : set of str
        The variables the cell weights count (factors and kept covariates).
    model : LinearMixedModel or GeneralizedLinearMixedModel
        The fitted model.
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
        """Number of reference values of every variable, in the order of ``levels``."""
        return [len(v) for v in self.levels.values()]

    @property
    def weights(self) -> np.ndarray:
        """Number of observations of each grid cell, computed on first use."""
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
    """Return reference values of every predictor, the numeric ones, and the counted ones.

    The counted variables are the factors and the kept covariates: what
    emmeans' weights count.
    """
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
    """Return the levels ``at`` asks of factor ``name`` (emmeans restricts the grid to them)."""
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
    """Return R's expand.grid of ``levels`` (first variable varying fastest).

    Factor columns are typed as in the fitted data so that the model's encoding
    applies.
    """
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
    """Return emmeans' ``.wgt.``: the number of observations in each grid cell.

    Cells are the combinations of the factors and kept covariates.
    """
    names = [n for n in grid.columns if n in counted]
    w = np.ones(len(data))
    if not names:
        return np.ones(len(grid))
    keys = data[names].astype(str).agg("\x1f".join, axis=1).to_numpy()
    totals = pd.Series(w).groupby(keys).sum()
    grid_keys = grid[names].astype(str).agg("\x1f".join, axis=1)
    return grid_keys.map(totals).fillna(0.0).to_numpy(dtype=float)


def reference_grid(model: Any, at: Mapping[str, Any] | None) -> ReferenceGrid:
    """Build emmeans' reference grid of a fitted model.

    Factors at their fitted levels, numeric covariates at their mean (both
    values when there are at most two), ``at`` overriding either; the offset
    at the mean of the model's total offset, as emmeans 1.8.

    Parameters
    ----------
    model : LinearMixedModel or GeneralizedLinearMixedModel
        A fitted model.
    at : dict, optional
        Reference values: numbers for a covariate, levels to restrict a factor to.
    """
    data = model.frame.data
    levels, numeric, counted = _reference_levels(model, data, at)
    grid = _expand_grid(levels, data)
    X = apply_spec(model.frame.fixed.model_spec, grid, "reference-grid")
    # emmeans 1.8 recovers the model's total offset (offset() terms and the
    # offset= argument) as a covariate ".offset." and reduces it to its mean
    total = model.frame.offset
    offset = np.full(len(grid), 0.0 if total is None else float(np.mean(total)))
    return ReferenceGrid(levels, numeric, X, offset, grid, counted, model)


def null_basis(model: Any) -> np.ndarray | None:
    """Return an orthonormal basis of the null space of the full fixed-effects matrix.

    As estimability::nonest.basis; None when no column was dropped.
    """
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


def estimable(L_all: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Return estimability::is.estble of every row of ``L_all`` (all formula columns)."""
    if basis is None:
        return np.ones(L_all.shape[0], dtype=bool)
    proj = L_all @ basis
    return np.sum(proj**2, axis=1) < ESTIMABILITY_TOL * np.sum(L_all**2, axis=1)


# --------------------------------------------------------------------------- specs and averaging


def parse_specs(specs: Any, by: Any) -> tuple[list[str], list[str]]:
    """Return the primary variables and the ``by`` variables of emmeans' specs.

    ``specs`` is a name, a list of names, or a formula text ``"~ A | B"``,
    ``"A * B"``; ``by`` names are added after those of the ``|`` part.
    """
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
    rg: ReferenceGrid, use: list[int], rest: list[int], weights: Any
) -> np.ndarray | None:
    """Return the weights of the averaged-over grid cells (one per ``rest`` combination).

    None for a per-mean ("cells", "flat") weighting.
    """
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


def marginal(
    rg: ReferenceGrid, facs: list[str], weights: Any
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Return the marginal means' combinations, linear functions and offsets.

    The combinations of ``facs`` (first fastest), their linear functions over
    all formula columns, and their offsets, averaged with ``weights``.
    """
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

