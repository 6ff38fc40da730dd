"""The gradient step of :class:`~mixedmodels.linalg.augmented.AugmentedSystem`.

Per term, the sum over levels of the diagonal blocks of the inverse of the
system's leading part, from which the analytic gradient of the profiled
criterion follows (``gradient_parts``).
"""

from __future__ import annotations

import numpy as np

from mixedmodels.linalg.factor import Factor, inverse_from_factor
from mixedmodels.linalg.kernels import lmm_kernels as _kernels
from mixedmodels.support.threads import blas_threads

__all__ = ["InverseBlockSums"]


class InverseBlockSums:
    """The gradient's parts of a factor.

    One part of :class:`~mixedmodels.linalg.augmented.AugmentedSystem` (its
    base class), kept apart because the gather of the first term's blocks has
    one path per storage of B.

    It reads the state the system's constructor sets (``Axy0``, ``N``,
    ``Q1``, ``k0``, ``rest_sizes``, ``scalar_rest``, ``compiled``,
    ``lapack_threads``, ``_dense``, ``_B_re``, ``_update``, ``_use_kernels``,
    ``_lead``, ``_block_bounds``) and its scaling helpers (``_row_scale``,
    ``_scalar_row_scale``, ``_scale_rest``).
    """

    def gradient_parts(
        self, f: Factor, sub: int, beta: np.ndarray, us: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Return per term K (∂ log det = 2 K[c, r]) and R (∂ r² = -2 R[r, c]).

        The derivatives are by the θ element at (r, c) of λ; None where λ is
        singular (this form divides by λ).
        """
        sums = self.inverse_block_sums(f, sub)
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for lam, B, U in zip(f.lam, sums, us):
            if np.min(np.abs(np.diag(lam))) < 1e-7:
                out.append(None)
                continue
            lam_inv = np.linalg.inv(lam)
            K = (U.shape[0] * np.eye(lam.shape[0]) - B) @ lam_inv
            out.append((K, lam_inv.T @ (U.T @ U)))
        return out

    def inverse_block_sums(self, f: Factor, sub: int) -> list[np.ndarray]:
        """Return per term the sum over levels of the diagonal k x k blocks of the inverse.

        The inverse is that of the leading part of the system through the first
        ``sub`` rows of the dense block: ``sub = Q1`` gives M = Λ'Z'ZΛ + I (the ML
        gradient), ``sub = Q1 + p`` the random-effects block of Ω⁻¹ with X included
        (REML). The first term's blocks are M_s⁻¹ + M_s⁻¹λ0'H_sλ0 M_s⁻¹ with
        H_s = B_s'PB_s, P = Λ_r S⁻¹Λ_r'; only their sum over s is needed (see
        ``_first_term_correction``); the other terms' blocks are read off S⁻¹
        directly.
        """
        # single precision kept where compiled loops alone read it (the
        # operator's gather, scalar terms after the first)
        single = self.compiled and self._update is not None and self.scalar_rest and not self._lead
        inv = self._lower_inverse(f.Lrr, sub, keep_single=single)  # lower triangle of S_sub⁻¹
        Minv = np.transpose(f.L00inv, (0, 2, 1)) @ f.L00inv  # (ℓ0, k0, k0)
        first = Minv.sum(axis=0)
        if sub:
            first = first + self._first_term_correction(inv, f.lam, Minv, sub)
        sums = [first]
        for (start, stop), (q, k) in zip(self._block_bounds, self.rest_sizes):
            block = inv[start:stop, start:stop].reshape(q // k, k, q // k, k)
            per_level = np.einsum("lalb->lab", block).astype(float, copy=False)
            lower = np.tril(per_level.sum(axis=0))
            sums.append(lower + np.tril(lower, -1).T)
        return sums

    def _lower_inverse(self, Lrr: np.ndarray, sub: int, keep_single: bool = False) -> np.ndarray:
        """Return (L L')⁻¹ of the leading ``sub`` rows of the dense factor.

        Its lower triangle, or (with a diagonal lead) the entries the gradient
        reads; ``keep_single``: see ``inverse_from_factor``.
        """
        if sub == 0:
            return np.zeros((0, 0))
        if self._lead:
            return self._inverse_diagonal_lead(Lrr, sub)
        with blas_threads(self.lapack_threads):
            return inverse_from_factor(Lrr, sub=sub, keep_single=keep_single)

    def _inverse_diagonal_lead(self, Lrr: np.ndarray, sub: int) -> np.ndarray:
        """Return S_sub⁻¹ for a factor with a diagonal lead D^½ and L21 below it.

        With W = (L22 L22')⁻¹ of the rows after it,

            S⁻¹ = [D⁻¹ + D^-½ L21'W L21 D^-½    -D^-½ L21'W]
                  [-W L21 D^-½                   W         ].

        The leading block's off-diagonal entries are left zero: its term is
        scalar and its rows never meet in a level of the first term, so neither
        the gather nor the block sums read them. Both triangles are filled.
        """
        q = self._lead
        root = np.diagonal(Lrr)[: min(q, sub)]
        inv = np.zeros((sub, sub))
        if sub <= q:
            inv.ravel()[:: sub + 1] = 1.0 / root**2
            return inv
        L21 = Lrr[q:sub, :q]
        with blas_threads(self.lapack_threads):
            W = inverse_from_factor(Lrr[q:sub, q:sub])
        W = np.tril(W) + np.tril(W, -1).T
        WL = W @ L21
        inv[q:, q:] = W
        inv[q:, :q] = -WL / root
        inv[:q, q:] = inv[q:, :q].T
        inv.ravel()[: q * (sub + 1) : sub + 1] = (1.0 + np.einsum("aj,aj->j", L21, WL)) / root**2
        return inv

    def _first_term_correction(
        self, inv: np.ndarray, lams: list[np.ndarray], Minv: np.ndarray, sub: int
    ) -> np.ndarray:
        """Return Σ_s M_s⁻¹λ0'H_sλ0 M_s⁻¹ = Σ_s V_s'PV_s with V_s = B_s λ0 M_s⁻¹, (k0, k0).

        Only this weighted sum of the H_s enters the gradient. With B dense it is
        taken directly by BLAS (:meth:`DenseBelow.weighted_trace`); otherwise the
        H_s are gathered level by level and weighted.
        """
        lam0 = lams[0]
        if self._dense is not None:
            P = self._full_p(inv, lams[1:], sub)[:sub, :sub]
            return self._dense.weighted_trace(P, lam0 @ Minv, sub)
        H = self._gather_first_term(inv, lams[1:], sub)
        left = Minv @ lam0.T  # (ℓ0, k0, k0): M_s⁻¹λ0'
        return (left @ H @ np.transpose(left, (0, 2, 1))).sum(axis=0)

    def _full_p(self, inv: np.ndarray, lams: list[np.ndarray], sub: int) -> np.ndarray:
        """Return P = Λ_r S_sub⁻¹ Λ_r' as a full symmetric N x N array (zero beyond ``sub``).

        It is built from the lower triangle of S_sub⁻¹.
        """
        P = np.zeros((self.N, self.N))
        P[:sub, :sub] = np.tril(inv) + np.tril(inv, -1).T
        return self._scale_rest(P, [lam.T for lam in lams])

    def _gather_first_term(self, inv: np.ndarray, lams: list[np.ndarray], sub: int) -> np.ndarray:
        """Return H_s = B_s'PB_s for every level s of the first term, (ℓ0, k0, k0).

        Through B's random-effects rows (update operator's adjoint, compiled
        loops or sparse products), plus its dense X rows for REML.
        """
        Q1 = self.Q1
        # with one scalar per term after the first, P is read off S⁻¹ and the scales
        P = None if self.scalar_rest else self._full_p(inv, lams, sub)
        if self._update is not None:
            H = self._gather_operator(inv, P, lams)
        else:
            H = self._gather_re_rows(inv, P, lams, sub)
        if sub > Q1:  # REML: the X rows of P
            if P is None:
                scale = np.array([lam[0, 0] for lam in lams] + [1.0])
                P_rx, P_xx = self._x_blocks_scalar(inv, scale, sub)
            else:
                P_rx, P_xx = P[:Q1, Q1:sub], P[Q1:sub, Q1:sub]
            H += self._gather_x_rows(P_rx, P_xx)
        return 0.5 * (H + np.transpose(H, (0, 2, 1)))

    def _gather_operator(
        self, inv: np.ndarray, P: np.ndarray | None, lams: list[np.ndarray]
    ) -> np.ndarray:
        """Return the random-effects part of H_s by the adjoint of the update operator."""
        up = self._update
        if P is None:
            # positions are upper (row <= col); S⁻¹ is symmetric, read its lower triangle
            scale = np.array([lam[0, 0] for lam in lams] + [1.0])
            if inv.flags.f_contiguous and self.compiled:  # one compiled pass
                Q1 = self.Q1
                weighted = _kernels.gather_lower(
                    inv, Q1, up.row_pointers(Q1), up.positions, self.N, self._row_scale(scale)
                )
            else:
                weighted = up.lower_entries(inv) * up.block_scales(scale) * up.weight
        else:
            weighted = P[up.rows, up.cols] * up.weight
        return up.adjoint(weighted).reshape(-1, self.k0, self.k0)

    def _x_blocks_scalar(self, inv: np.ndarray, scale: np.ndarray, sub: int):
        """Return P's X columns, (Q1, p) and (p, p), when Λ_r is one scalar per term.

        They are read from the lower triangle of S⁻¹.
        """
        Q1 = self.Q1
        P_rx = inv[Q1:sub, :Q1].T * self._row_scale(scale)[:, None]
        low = inv[Q1:sub, Q1:sub]
        return P_rx, np.tril(low) + np.tril(low, -1).T

    def _gather_re_rows(
        self, inv: np.ndarray, P: np.ndarray | None, lams: list[np.ndarray], sub: int
    ) -> np.ndarray:
        """Return the random-effects part of H_s (P's leading Q1 x Q1 block).

        By the compiled loops or, without them, sparse products.
        """
        Q1 = self.Q1
        if self._use_kernels:
            if P is None:  # P from the lower triangle of S⁻¹ and the scales
                sc = self._scalar_row_scale(lams)
                return _kernels.gather_blocks(self._B_re, self.k0, inv.T, sc, min(sub, Q1))
            return _kernels.gather_blocks(self._B_re, self.k0, P, np.ones(self.N), Q1)
        if P is None:
            P = self._full_p(inv, lams, sub)
        return self._gather_by_products(P[:Q1, :Q1])

    def _gather_x_rows(self, P_rx: np.ndarray, P_xx: np.ndarray) -> np.ndarray:
        """Return the part of B_s'PB_s through B's dense X rows.

        That is B_re,s'P_rx B_x,s (and its transpose, added by the caller's
        symmetrisation, hence twice here) + B_x,s'P_xx B_x,s.
        """
        k0, p = self.k0, P_xx.shape[0]
        Bx = self.Axy0[:p].reshape(p, -1, k0)  # (p, ℓ, k0)
        W = np.asarray(self._B_re.T @ P_rx).reshape(-1, k0, p) if self.Q1 else 0.0
        cross = np.einsum("lam,mlb->lab", W, Bx) if self.Q1 else 0.0
        PB = np.einsum("mn,nlb->mlb", P_xx, Bx)
        return 2.0 * cross + np.einsum("mla,mlb->lab", Bx, PB)

    def _gather_by_products(self, P: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Return H_s = B_re,s'P B_re,s level by level, in chunks (P: Q1 x Q1).

        The path when neither the update operator nor the compiled loops exist.
        """
        k0 = self.k0
        B = self._B_re
        nlev = B.shape[1] // k0
        out = np.empty((nlev, k0, k0))
        for s0 in range(0, nlev, chunk):
            s1 = min(s0 + chunk, nlev)
            Bc = B[:, s0 * k0 : s1 * k0]
            Hc = np.asarray(Bc.T @ (Bc.T @ P).T)  # (c k0, c k0) dense
            Hc = Hc.reshape(s1 - s0, k0, s1 - s0, k0)
            out[s0:s1] = np.einsum("lalb->lab", Hc)
        return out
