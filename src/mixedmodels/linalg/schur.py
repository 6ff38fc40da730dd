"""The Schur complement step of :class:`~mixedmodels.linalg.augmented.AugmentedSystem`.

After the first term is eliminated level by level, what remains over the
other terms and [X y] is the dense S = Λ_r'(A_rr - B blockdiag(C_s) B')Λ_r + I.
:class:`SchurComplement` forms it in the system's reused workspace by the path
the system chose when it stored B: the precomputed operator, compiled loops,
BLAS on a dense B, or sparse products (the fallback).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mixedmodels.linalg.below import RowsBelow
from mixedmodels.linalg.kernels import lmm_kernels as _kernels

__all__ = ["SchurComplement"]


def _zero_upper_rows(S: np.ndarray, rows: int, block: int = 64) -> None:
    """Zero S[i, j] for i < ``rows`` and i <= j < ``rows`` (C order), in bands of rows.

    That is the upper triangle of the leading block, about half of the memory a
    full clear would write (LAPACK reads no other entry).
    """
    for i0 in range(0, rows, block):
        S[i0 : min(i0 + block, rows), i0:rows] = 0.0


def _update_weights(lam0: np.ndarray, L00inv: np.ndarray) -> np.ndarray:
    """Return C_s = λ0 M_s⁻¹ λ0' per level of the first term (the update is B blockdiag(C) B')."""
    return lam0 @ np.transpose(L00inv, (0, 2, 1)) @ L00inv @ lam0.T


def _blockdiag_csr(blocks: np.ndarray) -> sp.csr_array:
    nl, k, _ = blocks.shape
    bsr = sp.bsr_array((blocks, np.arange(nl), np.arange(nl + 1)), shape=(nl * k, nl * k))
    return bsr.tocsr()


class SchurComplement:
    """The Schur complement and the factor's rows below the first term.

    One part of :class:`~mixedmodels.linalg.augmented.AugmentedSystem` (its
    base class), kept apart because each way of forming S is a page of its own.

    It reads the state the system's constructor sets (``Arr``, ``Axy0``,
    ``N``, ``Q1``, ``p``, ``k0``, ``rest_sizes``, ``scalar_rest``,
    ``compiled``, ``_below``, ``_dense``, ``_B_re``, ``_update``,
    ``_block_bounds``, the workspaces ``_work`` and ``_acc``) and its scaling
    helpers (``_row_scale``, ``_scalar_row_scale``, ``_scale_rest``).
    """

    def _xy_update(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the [X y] columns of the rank update B blockdiag(C) B'.

        As the rows of the other terms, (Q1, p + 1), and the [X y] block,
        (p + 1, p + 1).
        """
        k0, m = self.k0, self.p + 1
        CB = np.einsum("lab,mlb->lam", C, self.Axy0.reshape(m, -1, k0)).reshape(-1, m)
        cross = self._B_re @ CB if self.Q1 else np.zeros((0, m))
        return np.asarray(cross), self.Axy0 @ CB

    def _rows_below(self, lams: list[np.ndarray], L00inv: np.ndarray):
        """Return L[re, 0] = Λ_r'B_re blockdiag(F_s) and L[xy, 0] = B_xy blockdiag(F_s).

        F_s = λ0 L00_s⁻ᵀ; L[re, 0] comes as a :class:`RowsBelow` (not formed),
        None without other terms.
        """
        F = lams[0] @ np.transpose(L00inv, (0, 2, 1))  # (ℓ0, k0, k0)
        rows = RowsBelow(self._below, F, self._block_bounds[:-1], lams[1:]) if self.Q1 else None
        return rows, self._xy_rows(F)

    def _xy_rows(self, F: np.ndarray) -> np.ndarray:
        """Return L[xy, 0] = B_xy blockdiag(F_s), (p + 1, q0)."""
        m = self.p + 1
        return np.einsum("mla,lab->mlb", self.Axy0.reshape(m, -1, self.k0), F).reshape(m, -1)

    def _sparse_rows(self, lams: list[np.ndarray], F: np.ndarray) -> sp.sparray:
        """Return Λ_r'B_re blockdiag(F_s), formed from B's single sparse copy.

        By scaled entries when every λ is a scalar, sparse products with block
        diagonals otherwise.
        """
        B = self._B_re
        if self.scalar_rest and self.k0 == 1:
            scale = np.array([lam[0, 0] for lam in lams] + [1.0])
            out = B.copy()
            out.data *= self._row_scale(scale)[out.indices]
            out.data *= np.repeat(F[:, 0, 0], np.diff(out.indptr))
            return out
        blocks = [np.repeat(lam.T[None], q // k, 0) for lam, (q, k) in zip(lams, self.rest_sizes)]
        left = sp.block_diag([_blockdiag_csr(b) for b in blocks], format="csr")  # Λ_r'
        return sp.csr_array(left @ B @ _blockdiag_csr(F))

    def _schur_operator(self, lams: list[np.ndarray], L00inv: np.ndarray) -> np.ndarray:
        """Return Λ_r'(A_rr - B C B')Λ_r + I by the precomputed operator.

        The update comes from the operator (random-effects block) and dense
        products ([X y] columns).

        Only the upper triangle (C order) is correct, which is all LAPACK reads.
        """
        C = _update_weights(lams[0], L00inv)
        update = self._update.apply(C.ravel())
        cross, xy = self._xy_update(C)
        S = self._workspace()
        if self.scalar_rest:
            self._scaled_upper_blocks(S, lams[1:], update, cross, xy)
            return self._plus_identity(S)
        np.copyto(S, self.Arr)
        S.ravel()[self._update.positions] -= update
        Q1 = self.Q1
        S[:Q1, Q1:] -= cross
        S[Q1:, Q1:] -= xy
        return self._finish_general(S, lams[1:])

    def _workspace(self) -> np.ndarray:
        if self._work is None:
            self._work = np.empty_like(self.Arr)
        return self._work

    def _finish_general(self, S: np.ndarray, lams: list[np.ndarray]) -> np.ndarray:
        """Turn A_rr - update (upper triangle valid) into Λ_r'(...)Λ_r + I, any Λ_r."""
        lower = np.tri(self.N, k=-1, dtype=bool)
        np.copyto(S, S.T, where=lower)
        self._scale_rest(S, lams)
        return self._plus_identity(S)

    def _plus_identity(self, S: np.ndarray) -> np.ndarray:
        idx = np.arange(self.Q1)
        S[idx, idx] += 1.0
        return S

    def _scaled_upper_blocks(
        self,
        S: np.ndarray,
        lams: list[np.ndarray],
        update: np.ndarray,
        cross: np.ndarray,
        xy: np.ndarray,
    ) -> None:
        """Write S = Λ_r'(A_rr - update)Λ_r on the upper triangle, for scalar later terms.

        Every term after the first is scalar: Λ_r is one scalar per block.

        The random-effects block of A_rr is as sparse as the update (every
        nonzero of it is a position the operator touches): that block is
        cleared and written at those positions only; the [X y] columns are dense.
        """
        scale = np.array([lam[0, 0] for lam in lams] + [1.0])
        up = self._update
        Q1 = self.Q1
        arr = self._arr_at_positions()
        row_scale = self._row_scale(scale)
        if arr is not None and self.compiled:  # one compiled pass, no temporaries
            _kernels.scatter_upper(S, Q1, up.row_pointers(Q1), up.positions, arr, update, row_scale)
        elif arr is not None:
            _zero_upper_rows(S, Q1)
            S.ravel()[up.positions] = (arr - update) * up.block_scales(scale)
        else:  # some nonzero of A_rr outside the pattern: write blocks
            _zero_upper_rows(S, Q1)
            for i, (r0, r1) in enumerate(self._block_bounds[:-1]):
                for j in range(i, len(scale) - 1):
                    c0, c1 = self._block_bounds[j]
                    np.multiply(self.Arr[r0:r1, c0:c1], scale[i] * scale[j], out=S[r0:r1, c0:c1])
            S.ravel()[up.positions] -= update * up.block_scales(scale)
        S[:Q1, Q1:] = (self.Arr[:Q1, Q1:] - cross) * row_scale[:, None]
        S[Q1:, Q1:] = self.Arr[Q1:, Q1:] - xy

    def _arr_at_positions(self) -> np.ndarray | None:
        """Return A_rr at the operator's positions (computed once).

        None if A_rr's random-effects block has a nonzero elsewhere (then it is
        written block by block).
        """
        if not hasattr(self, "_arr_pos_values"):
            Q1, up = self.Q1, self._update
            values = self.Arr.ravel()[up.positions]
            # the block is symmetric: its upper triangle from the total count,
            # counted over whole rows (contiguous: 8x faster than the block view)
            rows = self.Arr[:Q1]
            total = np.count_nonzero(rows) - np.count_nonzero(rows[:, Q1:])
            inside = (total + np.count_nonzero(np.diagonal(rows))) // 2
            self._arr_pos_values = values if np.count_nonzero(values) == inside else None
        return self._arr_pos_values

    def _schur_kernel(self, lams: list[np.ndarray], L00inv: np.ndarray) -> np.ndarray:
        """Return Λ_r'(A_rr - B C B')Λ_r + I by a compiled loop over B's pattern.

        The update is accumulated without a pair list: for models too large for
        the operator. With scalar terms after the first, one more compiled pass scales and
        finishes the upper triangle, which is all LAPACK reads.
        """
        C = _update_weights(lams[0], L00inv)
        if self._acc is None:  # kept: fresh pages of large arrays are slow
            self._acc = _kernels.accumulators(C.shape[0], self.N)
        acc = _kernels.rank_update(self._B_re, self.k0, C, self.N, self._acc)
        cross, xy = self._xy_update(C)  # the dense [X y] rows of B: dense products
        Q1 = self.Q1
        acc[0, :Q1, Q1:] += cross
        acc[0, Q1:, Q1:] += xy
        S = self._workspace()
        if self.scalar_rest:
            _kernels.finish_scalar(self.Arr, acc, self._scalar_row_scale(lams[1:]), self.Q1, S)
            return S
        np.subtract(self.Arr, acc.sum(axis=0), out=S)
        acc.fill(0.0)
        return self._finish_general(S, lams[1:])

    def _schur_dense(self, lams: list[np.ndarray], L00inv: np.ndarray) -> np.ndarray:
        """Return Λ_r'(A_rr - B C B')Λ_r + I with B dense.

        A_rr is copied into the workspace and the update subtracted by syrk over
        chunks of B blockdiag(F_s), F_s F_s' = C_s (F_s = λ0 L00_s⁻ᵀ: no square
        root of C, and C_s = 0 is no special case).
        """
        S = self._workspace()
        np.copyto(S, self.Arr)
        F = lams[0] @ np.transpose(L00inv, (0, 2, 1))
        self._dense.subtract_update(S, F)
        if self.scalar_rest:
            sc = self._scalar_row_scale(lams[1:])
            S *= sc[:, None]
            S *= sc[None, :]
            return self._plus_identity(S)
        return self._finish_general(S, lams[1:])

    def _schur_products(self, lams: list[np.ndarray], L00inv: np.ndarray) -> np.ndarray:
        """Return Λ_r'A_rr Λ_r + I - L_r0 L_r0' from explicit sparse products.

        The fallback without the update operator and without Numba.
        """
        F = lams[0] @ np.transpose(L00inv, (0, 2, 1))
        Lre0 = self._sparse_rows(lams[1:], F) if self.Q1 else None
        Lxy0 = self._xy_rows(F)
        S = self._scale_rest(self.Arr.copy(), lams[1:])
        Q1 = self.Q1
        if Lre0 is not None:
            S[:Q1, :Q1] -= (Lre0 @ Lre0.T).toarray()
            cross = np.asarray(Lre0 @ Lxy0.T)  # (Q1, p+1)
            S[:Q1, Q1:] -= cross
            S[Q1:, :Q1] -= cross.T
        S[Q1:, Q1:] -= Lxy0 @ Lxy0.T
        idx = np.arange(Q1)
        S[idx, idx] += 1.0
        return S
