"""The rank update of the Schur complement as a precomputed sparse linear map.

:class:`RankUpdate` maps the first term's per-level blocks C_s to the touched
positions of B blockdiag(C_s) B' (see :mod:`mixedmodels.linalg.augmented`).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp

from mixedmodels.linalg.kernels import lmm_kernels as _kernels

__all__ = ["RankUpdate", "block_pairs", "scalar_pairs"]


def _pair_index(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return every pair (e, f), f <= e, of entries within the same level.

    The levels hold m[s] consecutive entries; the pairs come level by level and
    e-major.
    """
    total = int(m.sum())
    # int32 while it fits: these arrays are as long as the pairs, and halving
    # them halves the time of every pass below
    itype = np.int32 if max(total, int((m * (m + 1) // 2).sum())) < 2**31 else np.int64
    level_start = np.zeros(len(m), dtype=itype)
    np.cumsum(m[:-1], out=level_start[1:])
    reps = np.arange(total, dtype=itype) - np.repeat(level_start, m) + 1
    e = np.repeat(np.arange(total, dtype=itype), reps)
    pair_start = np.zeros(total, dtype=itype)
    np.cumsum(reps[:-1], out=pair_start[1:])
    f = np.repeat(np.repeat(level_start, m), reps) + (
        np.arange(len(e), dtype=itype) - np.repeat(pair_start, reps)
    )
    return e, f


def _positions(flat: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the touched flat positions in order and the rank of each pair's position among them.

    A mark and a running count: no sort.
    """
    mark = np.zeros(N * N, dtype=bool)
    mark[flat] = True
    return np.flatnonzero(mark), (np.cumsum(mark) - 1)[flat]


def scalar_pairs(B: sp.csc_array, m: np.ndarray, N: int):
    """Return the operator and touched positions for a scalar first term.

    B has one column per level, whose entries are already the level's rows in
    order (sorted CSC).
    """
    B.sort_indices()
    rows, vals = B.indices.astype(np.int64), B.data
    e, f = _pair_index(m)
    touched, position = _positions(rows[f] * N + rows[e], N)
    indptr = np.concatenate([[0], np.cumsum(m * (m + 1) // 2)])
    T = sp.csc_array((vals[e] * vals[f], position, indptr), shape=(len(touched), len(m)))
    return T, touched


def block_pairs(B: sp.csc_array, m: np.ndarray, k0: int, N: int):
    """Return the operator and touched positions for a first term of k0 > 1 columns per level."""
    nlev = len(m)
    coo = B.tocoo()
    level = coo.col // k0
    # entries grouped by level and sorted by row inside it: then every pair
    # (e, f) with f at or before e in its level has row(f) <= row(e)
    order = np.lexsort((coo.col, coo.row, level))
    rows, cols, vals = coo.row[order].astype(np.int64), coo.col[order] % k0, coo.data[order]
    e, f = _pair_index(m)
    # same row, two columns of the level: the pair stands for (a, b) and (b, a)
    weight = np.where((rows[e] == rows[f]) & (e != f), 2.0, 1.0)
    reps = np.bincount(e, minlength=len(rows)) if len(e) else np.zeros(len(rows), int)
    cidx = np.repeat(np.repeat(np.arange(nlev), m), reps) * k0 * k0 + cols[e] * k0 + cols[f]
    touched, position = _positions(rows[f] * N + rows[e], N)
    order = np.argsort(cidx, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cidx, minlength=nlev * k0 * k0))])
    values = vals[e] * vals[f] * weight
    T = sp.csc_array(
        (values[order], position[order], indptr), shape=(len(touched), nlev * k0 * k0)
    )
    return T, touched


class RankUpdate:
    """Sparse linear map from the first term's C_s blocks to the Schur-complement update.

    ``update[positions] = T @ vec(C)`` on the flattened N x N array.

    ``positions`` are the touched flat indices i N + j (i <= j), sorted. T is a
    CSC matrix, or only its pattern ``(ptr, rank)`` when every value is 1 (a
    scalar first term whose levels meet each other level once, unweighted:
    InstEval's students and lecturers); the compiled loops then apply it with
    no array of values as long as the pairs. What only some paths read (the
    rows, columns and blocks of the positions) is derived on first use.
    """

    def __init__(
        self,
        T: sp.csc_array | None,
        positions: np.ndarray,
        N: int,
        block_edges: np.ndarray,
        pattern: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.T = T
        self.pattern = pattern
        self.positions = positions
        self.N = N
        self._edges = block_edges  # first row of each block after the first

    def apply(self, c: np.ndarray) -> np.ndarray:
        """Return T c: the update at the positions."""
        if self.T is not None:
            return self.T @ c
        return _kernels.pattern_apply(*self.pattern, c, len(self.positions))

    def adjoint(self, w: np.ndarray) -> np.ndarray:
        """Return T'w: per entry of C, the weighted sum over its positions."""
        if self.T is not None:
            return self.T.T @ w
        return _kernels.pattern_adjoint(*self.pattern, w)

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """Row (<= column) of each position in the N x N array."""
        return self.positions // self.N

    @functools.cached_property
    def cols(self) -> np.ndarray:
        """Column (>= row) of each position in the N x N array."""
        return self.positions % self.N

    @functools.cached_property
    def row_block(self) -> np.ndarray:
        """Block (term after the first, or [X y]) of each position's row."""
        return np.searchsorted(self._edges, self.rows, side="right")

    @functools.cached_property
    def col_block(self) -> np.ndarray:
        """Block (term after the first, or [X y]) of each position's column."""
        return np.searchsorted(self._edges, self.cols, side="right")

    @property
    def nblocks(self) -> int:
        """Number of blocks: the terms after the first, and [X y]."""
        return len(self._edges) + 1

    @functools.cached_property
    def pair_code(self) -> np.ndarray:
        """The pair of blocks as one index into the outer product of per-block scales."""
        return self.row_block * self.nblocks + self.col_block

    @functools.cached_property
    def weight(self) -> np.ndarray:
        """Weight per position: 2 off the diagonal (it stands for two symmetric entries), else 1."""
        return np.where(self.rows == self.cols, 1.0, 2.0)

    def row_pointers(self, nrows: int) -> np.ndarray:
        """Return the first position of each of the leading ``nrows`` rows, ``nrows + 1`` long."""
        ptr = self.__dict__.get("_rowptr")
        if ptr is None or len(ptr) != nrows + 1:
            bounds = np.arange(nrows + 1, dtype=np.int64) * self.N
            ptr = self._rowptr = np.searchsorted(self.positions, bounds)
        return ptr

    def block_scales(self, scale: np.ndarray) -> np.ndarray:
        """Return scale[row_block] * scale[col_block] at every position (one gather)."""
        return np.outer(scale[: self.nblocks], scale[: self.nblocks]).ravel()[self.pair_code]

    def lower_entries(self, A: np.ndarray) -> np.ndarray:
        """Return A[cols, rows]: the lower triangle's entries at the transposed positions.

        By one gather from A's memory, C or Fortran order.
        """
        n = A.shape[0]
        if A.flags.f_contiguous:  # A.T is C-contiguous: A[c, r] = A.T[r, c]
            return A.T.ravel().take(self.rows * n + self.cols)
        return A[self.cols, self.rows]
