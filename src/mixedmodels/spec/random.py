"""Random-effects terms ``(expr | group)`` (:class:`ReTerm`, :func:`build_term`).

Grouping codes and levels, the term's model matrix, its θ (the relative
covariance factor λ) and the checks of its size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from mixedmodels.covariance import CovarianceStructure, Unstructured
from mixedmodels.exceptions import FormulaError, ModelSpecError
from mixedmodels.spec.coding import r_names, rewrite_factor_calls, with_contrasts
from mixedmodels.spec.columns import ArrayColumns, dtype_of
from mixedmodels.spec.formula import RandomTermSpec
from mixedmodels.spec.levels import factor_codes, interaction_codes, level_kind, level_labels
from mixedmodels.spec.matrix import model_matrix

# Columns of a model matrix whose root mean square lies in this range are
# searched as they are (lme4's parametrisation, and its singularity rule);
# others at unit root mean square (see search_scales).
MODERATE_COLUMN_SCALE = (0.1, 10.0)


def search_scales(matrix: np.ndarray) -> np.ndarray:
    """Return the factor by which searches divide each column of ``matrix`` (read-only).

    Per column, it is its root mean square where that lies outside
    ``MODERATE_COLUMN_SCALE``, else 1: the factor by which searches and finite
    differences divide a column so that their steps and rules do not depend on
    the units of a covariate. Columns in moderate units keep lme4's own scale
    (and its numbers); the others are all brought to unit root mean square, so
    a fit is the same whatever their units.
    """
    low, high = MODERATE_COLUMN_SCALE
    scales = np.ones(matrix.shape[1])
    if matrix.shape[0] > 0:
        rms = np.sqrt(np.einsum("nk,nk->k", matrix, matrix) / matrix.shape[0])
        if not low <= rms.min(initial=1.0) <= rms.max(initial=1.0) <= high:
            usable = np.isfinite(rms) & (rms > 0)
            scales = np.where(usable & ((rms < low) | (rms > high)), rms, 1.0)
    scales.setflags(write=False)
    return scales


@dataclass
class ReTerm:
    """One random-effects term ``(expr | group)``.

    Attributes
    ----------
    spec : RandomTermSpec
        The parsed term.
    codes : ndarray of int, shape (n,)
        Level index of every observation.
    levels : list of str
        Level labels of the grouping factor, in R's order.
    z : ndarray, shape (n, k)
        The term's model matrix (unweighted).
    cnames : list of str
        Column names of ``z`` in R's spelling.
    model_spec : formulaic ModelSpec
        Re-applies the term's left side to new data.
    group_dtypes : tuple
        The dtype of every grouping column: their :func:`level_kind` tells
        how new data are matched to the levels (empty: as text levels).
    covariance : CovarianceStructure
        How the term's θ parametrises the covariance of one level's random
        effects (default: lme4's :class:`~mixedmodels.covariance.Unstructured`);
        the θ methods below delegate to it.
    name : str
        The grouping factor's name (``g`` or ``g1:g2``, as lme4 names it).
    k : int
        The number of columns of ``z`` (random effects per level).
    nlevels : int
        The number of levels.
    nranef : int
        The number of random effects, ``k * nlevels``.
    ntheta : int
        The length of the term's slice of θ.
    column_scales : numpy.ndarray
        Per column of ``z``, the factor by which the searches divide it.
    """

    spec: RandomTermSpec
    codes: np.ndarray
    levels: list[str]
    z: np.ndarray
    cnames: list[str]
    model_spec: Any = field(repr=False)
    group_dtypes: tuple = ()
    covariance: CovarianceStructure | None = None

    def __post_init__(self) -> None:
        if self.covariance is None:
            self.covariance = Unstructured(self.z.shape[1])

    def level_positions(self, newdata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return where each row of ``newdata`` falls among the levels, and its label.

        Positions are -1 for unseen or missing levels (see
        :func:`match_levels`); the labels are ``"NA"`` where missing.
        """
        kinds = [level_kind(d) for d in self.group_dtypes] or [None] * len(self.spec.group)
        parts = [level_labels(newdata[g], k) for g, k in zip(self.spec.group, kinds)]
        if len(parts) == 1:
            labels = parts[0]
        else:
            labels = np.array(
                [None if None in row else ":".join(row) for row in zip(*parts)], dtype=object
            )
        positions = pd.Index(self.levels).get_indexer(labels)
        return positions, np.where(pd.isna(labels), "NA", labels)

    @property
    def name(self) -> str:
        """The grouping factor's name (``g`` or ``g1:g2``, as lme4 names it)."""
        return self.spec.group_name

    @property
    def k(self) -> int:
        """The number of columns of ``z`` (random effects per level)."""
        return self.z.shape[1]

    @property
    def nlevels(self) -> int:
        """The number of levels of the grouping factor."""
        return len(self.levels)

    @property
    def nranef(self) -> int:
        """The number of random effects, ``k * nlevels``."""
        return self.k * self.nlevels

    @property
    def ntheta(self) -> int:
        """The length of the term's slice of θ."""
        return self.covariance.ntheta

    def theta_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the row and column of each θ element in λ (see the covariance structure)."""
        return self.covariance.theta_rows_cols()

    def theta_lower(self) -> np.ndarray:
        """Return the lower bound of each θ element (0 or -inf), from the covariance structure."""
        return self.covariance.lower_bounds()

    def theta_start(self) -> np.ndarray:
        """Return the structure's start (lme4's λ = I), for the unit-scale columns.

        See ``theta_scale``.
        """
        return self.covariance.start() / self.theta_scale()

    @functools.cached_property
    def column_scales(self) -> np.ndarray:
        """Per column of ``z``, the factor by which the searches divide it (``search_scales``).

        Multiplying a column of ``z`` by c divides row r of λ, hence the θ
        elements in it, by c: the same model in other units. Searches,
        boundary snapping and the singularity rule run on θ for the scaled
        columns (see ``theta_scale``), so they give the same fit whatever the
        units of a covariate outside the moderate range.
        """
        return search_scales(self.z)  # ones for a Dask term (no rows here)

    def theta_scale(self) -> np.ndarray:
        """Return, per θ element, the factor giving θ in unit-scale columns.

        θ × ``theta_scale()`` is θ for ``z / column_scales``.
        """
        return self.covariance.theta_scale(self.column_scales)

    def lam(self, theta: np.ndarray) -> np.ndarray:
        """Return the k x k relative covariance factor λ for this θ slice."""
        return self.covariance.factor(theta)

    def theta_names(self) -> list[str]:
        """Return lme4's names of θ, e.g. ``Subject.(Intercept)``, ``Subject.Days.(Intercept)``."""
        return self.covariance.theta_names(self.name, self.cnames)


def build_term(
    spec: RandomTermSpec,
    data: pd.DataFrame | ArrayColumns,
    contrasts: Mapping[str, str] | None = None,
    residual: bool = True,
) -> ReTerm:
    """Build one random-effects term: grouping codes, levels and its model matrix.

    ``residual`` says the model has a residual (lmer; see ``check_term_size``).
    """
    if isinstance(data, ArrayColumns):
        codes, levels = data.factor(spec.group)
    elif len(spec.group) == 1:
        codes, levels = factor_codes(data[spec.group[0]])
    else:
        codes, levels = interaction_codes([data[g] for g in spec.group])
    mm = model_matrix(
        with_contrasts(rewrite_factor_calls(spec.expr), contrasts or {}),
        data,
        f"random-effects term {spec.text}",
    )
    z = np.ascontiguousarray(np.asarray(mm, dtype=float))
    if z.shape[1] == 0:
        raise FormulaError(f"random-effects term {spec.text} has no columns")
    cnames = r_names(mm)
    dtypes = tuple(dtype_of(data, g) for g in spec.group)
    term = ReTerm(spec, codes, levels, z, cnames, mm.model_spec, dtypes)
    check_term_size(term, len(codes), residual)
    return term


def check_term_size(term: ReTerm, n: int, residual: bool = True) -> None:
    """Check that a term's grouping factor has a size the model can estimate.

    It needs at least two levels; with a residual (lmer), fewer levels and
    random effects than observations (glmer allows as many, as lme4: an
    observation-level random effect models overdispersion). A
    :class:`ModelSpecError` otherwise.
    """
    if term.nlevels < 2:
        raise ModelSpecError(
            f"grouping factor {term.name!r} of term {term.spec.text} has "
            f"{term.nlevels} level: it needs at least 2"
        )
    if not residual:
        return
    if term.nlevels >= n:
        raise ModelSpecError(
            f"grouping factor {term.name!r} has {term.nlevels} levels for {n} observations: "
            "the number of levels must be smaller than the number of observations "
            "(the random effects would be confounded with the residual)"
        )
    if term.nranef >= n:
        raise ModelSpecError(
            f"term {term.spec.text} has {term.nranef} random effects for {n} observations: "
            "the model is unidentifiable"
        )


def order_terms(terms: list[ReTerm]) -> list[ReTerm]:
    """Return the terms in decreasing number of random effects (stable), as MixedModels.jl.

    The largest term becomes the block-diagonal leading block of L, eliminated
    at no cost, and the dense remainder is as small as it can be.
    """
    return sorted(terms, key=lambda t: -t.nranef)
