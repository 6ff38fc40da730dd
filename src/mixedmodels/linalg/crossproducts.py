"""The cross-products of [Z X y] a linear mixed model's engine computes once.

Every product with the rows (Z_j'Z_i per pair of terms, Z_j'[X y], [X y]'[X y])
happens here, for one block of rows: :class:`CrossProducts` are sums over the
rows, so a data set's are the sum of its partitions' (what a distributed fit
accumulates). Everything after this step (:mod:`mixedmodels.linalg.augmented`)
works on arrays of the size of the random effects only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mixedmodels.support.threads import blas_threads, thin_product_threads

__all__ = [
    "CrossProducts",
    "TermData",
    "as_csc",
    "block_crossprod",
    "fill_rows",
    "stack_csc",
    "term_crossprod",
    "term_times",
    "term_times_cells",
]


@dataclass
class TermData:
    """What the engine needs of one random-effects term (weights already applied)."""

    codes: np.ndarray  # (n,) level index per observation
    z: np.ndarray  # (n, k) weighted model matrix
    nlevels: int

    @property
    def k(self) -> int:
        """Columns of the term's model matrix (random effects per level)."""
        return self.z.shape[1]

    @property
    def q(self) -> int:
        """Columns of the term's block of Z: levels × ``k``."""
        return self.k * self.nlevels

    def sparse(self) -> sp.csr_array:
        """Return Z for this term as an (n, ℓk) sparse matrix, level-major columns."""
        n, k = self.z.shape
        cols = (self.codes[:, None] * k + np.arange(k)[None, :]).ravel()
        rows = np.repeat(np.arange(n), k)
        return sp.csr_array((self.z.ravel(), (rows, cols)), shape=(n, self.q))


def block_crossprod(term: TermData) -> np.ndarray:
    """Return Z_j'Z_j as an (ℓ, k, k) stack of per-level blocks."""
    k = term.k
    out = np.empty((term.nlevels, k, k))
    for a in range(k):
        for b in range(a, k):
            s = np.bincount(term.codes, term.z[:, a] * term.z[:, b], minlength=term.nlevels)
            out[:, a, b] = s
            out[:, b, a] = s
    return out


def term_times_cells(
    term: TermData, cell: np.ndarray, E: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Return Z_j'[X y] for X = E[cell] (see ``FixedEffects.cells``), without X.

    The term's sums over (level, cell) pairs times E, and Z_j'y; one pass over
    the rows per column of the term instead of products with X's n x p entries.
    """
    ncells, p = E.shape
    k = term.k
    out = np.empty((term.nlevels, k, p + 1))
    index = term.codes.astype(np.intp, copy=False) * ncells + cell
    for a in range(k):
        z = term.z[:, a]
        sums = np.bincount(index, weights=z, minlength=term.nlevels * ncells)
        out[:, a, :p] = sums.reshape(term.nlevels, ncells) @ E
        out[:, a, p] = np.bincount(term.codes, weights=z * y, minlength=term.nlevels)
    return out.reshape(term.q, p + 1)


def term_times(term: TermData, X: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Return Z_j'[X y], (q_j, p + 1), or Z_j'X without ``y``.

    For each column a of the term, the (levels x n) matrix with z_a in row
    ``code`` of column i, built directly in CSC form (its column pointers are
    0..n: no sorting, ~8 bytes a row beyond the arrays it wraps) and multiplied
    into X (C order: 5x faster than Fortran) and y in one pass over the rows
    each -- the sums of per-column ``bincount``s, in the same order, 5-8x faster
    with many columns.
    """
    n, p = X.shape
    k = term.k
    m = p + (y is not None)
    out = np.empty((term.nlevels, k, m))
    indptr = np.arange(n + 1, dtype=np.int64)
    codes = term.codes.astype(np.int64, copy=False)
    for a in range(k):
        Zt = sp.csc_array((term.z[:, a], codes, indptr), shape=(term.nlevels, n))
        out[:, a, :p] = Zt @ X
        if y is not None:
            out[:, a, p] = Zt @ y
    return out.reshape(term.q, m)


def term_crossprod(ti: TermData, tj: TermData) -> sp.csc_array:
    """Return Z_i'Z_j, (q_i, q_j), in CSC (the column layout the engine keeps for B).

    For two scalar terms it is built straight from the level codes (duplicates
    summed), which is several times faster than a sparse matrix product.
    """
    if ti.k == 1 and tj.k == 1:
        values = ti.z[:, 0] * tj.z[:, 0]
        idx = np.int32 if max(ti.q, tj.q, len(values)) < 2**31 else np.int64
        rows, cols = ti.codes.astype(idx, copy=False), tj.codes.astype(idx, copy=False)
        coo = sp.coo_array((values, (rows, cols)), shape=(ti.q, tj.q))
        return _compact(sp.csc_array(coo))  # the conversion sums duplicates, sorts rows
    return _compact(sp.csc_array(ti.sparse().T @ tj.sparse()))


def _compact(a: sp.sparray) -> sp.sparray:
    """Return ``a`` with int32 index arrays where its sizes allow.

    scipy keeps int64 indices once an input had them, and sums of partial
    cross-products would carry 8 bytes per entry instead of 4.
    """
    if a.indices.dtype != np.int32 and max(a.nnz, *a.shape) < 2**31:
        a.indices = a.indices.astype(np.int32)
        a.indptr = a.indptr.astype(np.int32)
    return a


def as_csc(a: sp.sparray) -> sp.csc_array:
    """Return ``a`` as a canonical CSC array (no copy when it already is one)."""
    a = a if a.format == "csc" else sp.csc_array(a)
    a.sum_duplicates()  # sorts row indices too; a no-op on canonical input
    return a


def stack_csc(blocks: list[sp.sparray], ncols: int) -> sp.csc_array:
    """Return the blocks stacked vertically as one CSC array.

    It is built from their column pointers (scipy's vstack of CSC goes through
    COO: two more copies).
    """
    blocks = [as_csc(b) for b in blocks]
    if len(blocks) == 1:
        return _compact(blocks[0])
    nrows = sum(b.shape[0] for b in blocks)
    nnz = sum(b.nnz for b in blocks)
    idx = np.int32 if max(nrows, ncols, nnz) < 2**31 else np.int64
    counts = sum(np.diff(b.indptr).astype(np.int64) for b in blocks)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(idx)
    indices, data = np.empty(nnz, idx), np.empty(nnz)
    filled = indptr[:-1].copy()  # next free slot per column
    offset = 0
    for b in blocks:
        per_col = np.diff(b.indptr)
        # entry e of column j goes to filled[j] + (e - b.indptr[j])
        dest = np.repeat(filled - b.indptr[:-1], per_col) + np.arange(b.nnz)
        indices[dest] = b.indices + offset
        data[dest] = b.data
        filled += per_col
        offset += b.shape[0]
    return sp.csc_array((data, indices, indptr), shape=(nrows, ncols))


def fill_rows(Bt: np.ndarray, a: sp.csc_array, col0: int, entries: int = 1 << 22) -> None:
    """Set Bt[:, col0:col0 + q_i] = a' for a (q_i, q0) CSC block.

    A few million entries at a time: no second copy of the block in any format.
    """
    N = Bt.shape[1]
    flat = Bt.reshape(-1)
    bounds = np.searchsorted(a.indptr, np.arange(0, a.nnz + entries, entries), side="left")
    bounds = np.unique(np.clip(bounds, 0, a.shape[1]))
    for j0, j1 in zip(bounds[:-1], bounds[1:]):
        e0, e1 = a.indptr[j0], a.indptr[j1]
        cols = np.repeat(np.arange(j0, j1, dtype=np.int64), np.diff(a.indptr[j0 : j1 + 1]))
        flat[cols * N + col0 + a.indices[e0:e1]] = a.data[e0:e1]


@dataclass
class CrossProducts:
    """Every cross-product of [Z X y] the engine needs, and nothing of size n.

    Sums over rows, so they add: the cross-products of a data set are the sum of
    those of its row partitions (what a distributed fit accumulates).

    Attributes
    ----------
    shapes : list of (nlevels, k)
        The random-effects terms, largest first.
    A00 : ndarray (ℓ0, k0, k0)
        Z_0'Z_0 of the first term, one block per level.
    Axy0 : ndarray (p + 1, q0)
        [X y]'Z_0.
    A_re0 : list of sparse (q_i, q0)
        Z_i'Z_0 for the other terms, CSC (int32 indices where they fit): the
        system keeps them as B's storage without conversion.
    Arr : ndarray (Q1 + p + 1, Q1 + p + 1)
        [Z_1 .. Z_K X y]'[Z_1 .. Z_K X y], dense.
    """

    shapes: list[tuple[int, int]]
    A00: np.ndarray
    Axy0: np.ndarray
    A_re0: list[sp.csc_array]
    Arr: np.ndarray

    @classmethod
    def from_data(
        cls,
        terms: list[TermData],
        X: np.ndarray | None,
        y: np.ndarray,
        xtx: np.ndarray | None = None,
        cells: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> "CrossProducts":
        """Return the cross-products of one block of rows.

        The weights are already applied to the terms' z, X and y; X is best in
        C order. ``xtx`` is X'X when already computed. X and y stay apart:
        [X y] would be a copy of X's size. With ``cells`` (cell, E), unweighted,
        X = E[cell] is not needed (None): the products with it are sums over
        cells (see :func:`term_times_cells`).
        """
        t0, rest = terms[0], terms[1:]
        Q1 = sum(t.q for t in rest)
        p = X.shape[1] if cells is None else cells[1].shape[1]
        Arr = np.zeros((Q1 + p + 1, Q1 + p + 1))
        if cells is not None:
            cell, E = cells
            ncells = E.shape[0]
            xty = E.T @ np.bincount(cell, weights=y, minlength=ncells)
            if xtx is None:
                xtx = (E.T * np.bincount(cell, minlength=ncells)) @ E
            Arr[Q1:-1, Q1:-1] = xtx
            built: list[np.ndarray] = []

            def times(term: TermData) -> np.ndarray:
                if term.nlevels * ncells <= 2 * len(cell):  # the sums stay small
                    return term_times_cells(term, cell, E, y)
                if not built:  # a term of many levels: products with X after all
                    built.append(E[cell])
                return term_times(term, built[0], y)
        else:
            with blas_threads(thin_product_threads(p, len(y))):
                Arr[Q1:-1, Q1:-1] = X.T @ X if xtx is None else xtx
                xty = X.T @ y

            def times(term: TermData) -> np.ndarray:
                return term_times(term, X, y)
        Arr[-1, Q1:-1] = xty
        Arr[Q1:-1, -1] = xty
        Arr[-1, -1] = y @ y
        start = 0
        for i, ti in enumerate(rest):
            stop = start + ti.q
            Arr[start:stop, Q1:] = times(ti)
            Arr[Q1:, start:stop] = Arr[start:stop, Q1:].T
            inner = start
            for tj in rest[i:]:
                # written entry by entry: these blocks are sparse (diagonal for
                # a scalar term with itself), their dense copies as large as Arr
                block = term_crossprod(ti, tj).tocoo()
                Arr[start + block.row, inner + block.col] = block.data
                Arr[inner + block.col, start + block.row] = block.data
                inner += tj.q
            start = stop
        return cls(
            shapes=[(t.nlevels, t.k) for t in terms],
            A00=block_crossprod(t0),
            Axy0=np.ascontiguousarray(times(t0).T),
            A_re0=[term_crossprod(t, t0) for t in rest],
            Arr=Arr,
        )

    def __add__(self, other: "CrossProducts") -> "CrossProducts":
        if self.shapes != other.shapes:
            raise ValueError("cross-products of different models cannot be added")
        return CrossProducts(
            self.shapes,
            self.A00 + other.A00,
            self.Axy0 + other.Axy0,
            [a + b for a, b in zip(self.A_re0, other.A_re0)],
            self.Arr + other.Arr,
        )
