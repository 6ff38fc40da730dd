"""The fixed-effects model matrix (:class:`FixedEffects`).

It is built from the fixed part of the formula, its aliased columns found
(R's ``qr()`` rank test, cheaper tests first) and dropped, and kept as cells
for a large factorial design.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mixedmodels.exceptions import RankDeficiencyWarning
from mixedmodels.spec.coding import r_names, rewrite_factor_calls, with_contrasts
from mixedmodels.spec.columns import ArrayColumns
from mixedmodels.spec.formula import ParsedFormula
from mixedmodels.spec.matrix import SimpleSpec, model_matrix
from mixedmodels.support.threads import blas_threads, thin_product_threads

# Relative tolerance of the rank test of X (lme4: rankMatrix(tol = 1e-7)).
RANK_TOL = 1e-7


class FixedEffects:
    """The fixed-effects model matrix after rank-deficiency checks.

    Attributes
    ----------
    X : ndarray, shape (n, p)
        The full-rank matrix actually fitted. With ``cells`` it is built on
        first use.
    names : list of str
        R-style names of the kept columns.
    all_names : list of str
        Names of every column the formula produced; dropped ones show as NaN.
    kept : ndarray of int
        Positions of ``names`` within ``all_names``.
    model_spec : formulaic ModelSpec
        Re-applies the fixed part (stateful transforms included) to new data.
    gram : ndarray or None
        X'X when the rank check computed it (None otherwise).
    cells : (ndarray, ndarray) or None
        For a matrix of factors only (their treatment dummies and
        interactions): each row's cell, the combination of its levels, and the
        matrix's row for every cell, so that X = E[cell]. Products with X are
        then sums over far fewer cells than rows (``linalg.term_times_cells``).
    p : int
        The number of columns of X (known without building it).
    """

    def __init__(
        self,
        X: np.ndarray | None,
        names: list[str],
        all_names: list[str],
        kept: np.ndarray,
        model_spec: Any,
        gram: np.ndarray | None = None,
        cells: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        if X is None and cells is None:
            raise ValueError("FixedEffects needs X or its cells")
        self._X = X
        self.names = names
        self.all_names = all_names
        self.kept = kept
        self.model_spec = model_spec
        self.gram = gram
        self.cells = cells

    @property
    def X(self) -> np.ndarray:
        """The full-rank matrix fitted, built from ``cells`` on first use.

        Setting it drops ``cells``.
        """
        if self._X is None:
            cell, E = self.cells
            self._X = E[cell]
        return self._X

    @X.setter
    def X(self, value: np.ndarray) -> None:
        self._X = value
        self.cells = None

    @property
    def p(self) -> int:
        """The number of columns of X (without building it)."""
        return self.cells[1].shape[1] if self._X is None else self._X.shape[1]

    def dot(self, beta: np.ndarray) -> np.ndarray:
        """Return X β, from the cells when X is kept as them (X is not built)."""
        if self._X is None:
            cell, E = self.cells
            return (E @ beta)[cell]
        return self._X @ beta

    def __repr__(self) -> str:
        return f"FixedEffects(names={self.names!r})"


def full_rank_columns(X: np.ndarray, tol: float = RANK_TOL) -> np.ndarray:
    """Return the positions of a maximal set of linearly independent columns, earliest first.

    Mirrors R's ``qr()`` with limited pivoting: a column is dropped only if it is
    (numerically) a combination of the columns kept before it.
    """
    return _rank_and_gram(X, tol)[0]


def _rank_and_gram(X: np.ndarray, tol: float = RANK_TOL) -> tuple[np.ndarray, np.ndarray | None]:
    """Return :func:`full_rank_columns`, and X'X when the check computed it.

    X'X comes with every column kept: the engine's cross-products take it
    instead of recomputing.
    """
    if X.shape[1] == 0:
        return np.arange(0), None
    quick = _few_columns_rank(X, tol)
    if quick is not None:
        return quick, None
    quick, gram = _well_conditioned_rank(X)
    if quick is not None:
        return quick, gram
    R = np.linalg.qr(X, mode="r")
    norms = np.linalg.norm(R, axis=0)
    kept: list[int] = []
    for j in range(R.shape[1]):
        col = R[:, j]
        if kept:
            basis = R[:, kept]
            coef, *_ = np.linalg.lstsq(basis, col, rcond=None)
            resid = col - basis @ coef
        else:
            resid = col
        if norms[j] > 0 and np.linalg.norm(resid) > tol * norms[j]:
            kept.append(j)
    return np.asarray(kept, dtype=np.int64), None


# Squared column norms in this range: no under- or overflow on the way.
_SAFE_SQUARES = (1e-200, 1e200)


def _few_columns_rank(X: np.ndarray, tol: float) -> np.ndarray | None:
    """Return :func:`full_rank_columns` of one or two non-zero columns without a QR.

    That covers most small models: an intercept and at most one covariate.
    ``None`` where the QR must decide.

    In exact arithmetic the test there compares the distance of the second
    column from the first's span with ``tol`` times its norm, and neither
    changes under the QR's rotation; computed here and there, they differ by
    rounding of order ``n * eps`` of the norm, so a test closer to its threshold
    than a wide bound on that is left to the QR.
    """
    n, p = X.shape
    if p > 2:
        return None
    with np.errstate(all="ignore"):  # extreme scales fail the range test: QR
        squares = [float(X[:, j] @ X[:, j]) for j in range(p)]
    if not all(_SAFE_SQUARES[0] < sq < _SAFE_SQUARES[1] for sq in squares):
        return None
    if p == 1:  # R is the 1 x 1 (+-|x|): kept, as x is not zero
        return np.zeros(1, dtype=np.int64)
    x0, x1 = X[:, 0], X[:, 1]
    norm1 = float(np.sqrt(squares[1]))
    resid = float(np.linalg.norm(x1 - (x0 @ x1) / squares[0] * x0))
    margin = (1e-10 + 100 * n * np.finfo(float).eps) * norm1
    if abs(resid - tol * norm1) <= margin:
        return None
    return np.arange(2 if resid > tol * norm1 else 1, dtype=np.int64)


# The Gram test below certifies full rank when every column keeps at least this
# fraction of its norm away from the span of the columns before it.
_GRAM_MIN_RATIO = 1e-3


def _well_conditioned_rank(X: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Return all columns and X'X, when X'X shows them clearly independent; else ``None``s.

    The diagonal of the Cholesky factor of X'X scaled to unit diagonal is, for
    each column, its distance from the span of the columns before it relative to
    its norm: the quantity the QR test compares with ``tol``. From the Gram
    matrix it carries rounding of order eps x the condition number, so it only
    decides when every ratio is far above ``tol`` (at least 1e-3); near-collinear
    or dependent columns are left to the QR. For long X this costs one X'X
    instead of a QR of X.
    """
    n, p = X.shape
    if n < 4 * p:  # short: the QR is as cheap
        return None, None
    with np.errstate(all="ignore"), blas_threads(thin_product_threads(p, n)):
        G = X.T @ X
    return _gram_rank(G)


def _gram_rank(G: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Return all columns and ``G`` when the Gram matrix ``G`` shows them clearly independent.

    Else ``None``s. ``G`` is X'X; see ``_well_conditioned_rank``.
    """
    p = G.shape[0]
    with np.errstate(all="ignore"):
        d = np.sqrt(np.diagonal(G))
        if not (np.all(np.isfinite(G)) and np.all(d > 0)):
            return None, None
        try:
            L = np.linalg.cholesky(G / np.outer(d, d))
        except np.linalg.LinAlgError:
            return None, None
    if not np.all(np.diagonal(L) >= _GRAM_MIN_RATIO):
        return None, None
    return np.arange(p, dtype=np.int64), G


def build_fixed(
    parsed: ParsedFormula,
    data: pd.DataFrame | ArrayColumns,
    contrasts: Mapping[str, str] | None = None,
) -> FixedEffects:
    """Return the fixed-effects matrix with aliased columns dropped (and a warning naming them)."""
    rhs = with_contrasts(rewrite_factor_calls(parsed.fixed), contrasts or {})
    by_cells = _fixed_by_cells(rhs, data)
    if by_cells is not None:
        return by_cells
    mm = model_matrix(rhs, data, "fixed-effects")
    X = np.asarray(mm, dtype=float)
    all_names = r_names(mm)
    if not isinstance(mm.model_spec, SimpleSpec) and not np.isfinite(X).all():
        # an error or a frame without the NaN rows follows (build_model_frame):
        # a rank test would take NaN or Inf columns for aliased ones
        return FixedEffects(X, all_names, all_names, np.arange(X.shape[1]), mm.model_spec)
    kept, gram = _rank_and_gram(X)
    warn_rank_deficient(all_names, kept, stacklevel=5)
    return FixedEffects(
        # formulaic's matrices are in Fortran order: kept so (a C copy of a long
        # matrix costs a transposition; numpy and BLAS take either order)
        X=X if len(kept) == X.shape[1] else X[:, kept],
        names=[all_names[i] for i in kept],
        all_names=all_names,
        kept=kept,
        model_spec=mm.model_spec,
        gram=gram,
    )


def warn_rank_deficient(all_names: Sequence[str], kept: np.ndarray, stacklevel: int) -> None:
    """Warn, as lme4, that the fixed-effects columns not in ``kept`` are aliased and dropped.

    Nothing when every column is kept. In memory and for partitioned data
    alike; ``stacklevel`` as for :func:`warnings.warn`.
    """
    if len(kept) == len(all_names):
        return
    keep = set(kept.tolist())
    dropped = [name for i, name in enumerate(all_names) if i not in keep]
    warnings.warn(
        "fixed-effect model matrix is rank deficient so dropping "
        f"{len(dropped)} column(s): {', '.join(dropped)}",
        RankDeficiencyWarning,
        stacklevel=stacklevel,
    )


def _fixed_by_cells(rhs: str, data: pd.DataFrame | ArrayColumns) -> FixedEffects | None:
    """Return the fixed effects of a matrix of factors only, kept as its cells.

    The cells (see ``FixedEffects.cells``) are kept when the Gram test shows
    every column independent: X'X = E' diag(counts) E without X. None where
    that does not apply (then X is built and checked as usual).
    """
    if not isinstance(data, ArrayColumns):
        return None
    if data.nrows < SimpleSpec.MIN_CELL_ROWS:
        return None
    simple = SimpleSpec.parse(rhs, data)
    if simple is None or len(simple.column_names) <= 2:
        return None
    cells = simple.cells(data)
    if cells is None or data.nrows < 4 * len(simple.column_names):
        return None
    cell, E = cells
    counts = np.bincount(cell, minlength=E.shape[0])
    kept, gram = _gram_rank((E.T * counts) @ E)
    if kept is None:
        return None
    names = simple.r_names()
    return FixedEffects(None, names, names, kept, simple, gram=gram, cells=cells)
