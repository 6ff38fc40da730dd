"""Kenward-Roger's adjusted covariance and denominator degrees of freedom for linear mixed models.

As pbkrtest 0.5.2 computes them.

Kenward-Roger (pbkrtest ``vcovAdj``, ``Lb_ddf``, ``KRmodcomp``)
    With V = Σ_i γ_i G_i (G_i = Z_j E_i Z_j' for every element of every
    term's covariance matrix, and I for the residual), pbkrtest forms the
    n x n matrices V⁻¹, G_i V⁻¹, ... Here everything goes through the sparse Z
    (n x q) and the Woodbury form V = σ²(I + UU'), U = ZΛ, M = U'U + I = LL'::

        (I - U M⁻¹ U')ᵏ = I - U R_k U',  R_1 = M⁻¹, R_{k+1} = M⁻¹ + R_k M⁻¹

    so that X'V⁻ᵏX, Z'V⁻ᵏX, Z'V⁻¹Z and the traces tr(G_i V⁻¹ G_j V⁻¹) are q x q
    and p x p algebra (with tr(V⁻²) = σ⁻⁴(n - q + tr M⁻²)). The adjusted
    covariance Φ_A = Φ + 2Φ U Φ, the P_i, Q_ij and W = 2 I_E⁻¹ are pbkrtest's.
    Prior weights are applied as in the fit (rows of X and Z scaled by √w; the
    residual G is then I), where pbkrtest would ignore them.
    No factorisation per parameter: one q x q Cholesky, then per pair of terms
    (t, u) one (k_t k_u)² Gram matrix for all the traces and one p x q_u
    product per parameter for the Q_ij (``_kr_term_pairs``), so two 8 x 8
    terms (73 parameters, q = 704) take ~2 s, not the ~20 s of k² q x q
    products; the q x q dense matrices limit it to ``KR_MAX_RANEF`` effects.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import linalg

from mixedmodels.exceptions import ModelSpecError
from mixedmodels.inference.ddf_checks import model_cache, require_lmm

__all__ = [
    "KenwardRogerInfo", "kenward_roger_contrasts", "kenward_roger_f", "kenward_roger_info",
    "kenward_roger_vcov",
]

# Largest number of random effects for which Kenward-Roger's q x q matrices
# (a handful of dense q x q arrays) are built.
KR_MAX_RANEF = 8000


# ---------------------------------------------------------------------------- Kenward-Roger


@dataclass
class KenwardRogerInfo:
    """pbkrtest's ``vcovAdj`` result: Φ, Φ_A and the attributes P and W.

    Attributes
    ----------
    vcov : ndarray
        Φ, the unadjusted covariance of β̂ (of the REML fit).
    vcov_adj : ndarray
        Φ_A = Φ + 2 Φ U Φ.
    P : list of ndarray
        P_i = -X'V⁻¹G_iV⁻¹X per variance parameter (residual last).
    W : ndarray
        2 I_E⁻¹, the covariance of the variance parameters.
    """

    vcov: np.ndarray
    vcov_adj: np.ndarray
    P: list[np.ndarray]
    W: np.ndarray


def _reml_version(model: Any) -> Any:
    """Return the model itself if fitted by REML, else a REML refit of it.

    The refit is pbkrtest's ``update(object, REML = TRUE)``: the same design,
    started at the model's θ.
    """
    if model.reml:
        return model
    cache = model_cache(model)
    if "reml_refit" not in cache:
        twin = copy.copy(model)
        twin.reml = True
        twin.reset_inference_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin.fit(start=np.asarray(model.theta_vector, dtype=float))
        cache["reml_refit"] = twin
    return cache["reml_refit"]


def kenward_roger_info(model: Any) -> KenwardRogerInfo:
    """Return pbkrtest's ``vcovAdj`` of the REML fit (cached on the model)."""
    require_lmm(model, "Kenward-Roger's method")
    reml = _reml_version(model)
    cache = model_cache(reml)
    if "kenward_roger" not in cache:
        cache["kenward_roger"] = _kenward_roger(reml)
    return cache["kenward_roger"]


def kenward_roger_vcov(model: Any) -> np.ndarray:
    """Return the Kenward-Roger adjusted covariance of the fixed effects, pbkrtest's ``vcovAdj``.

    A p x p array in ``model.fixef`` order. An ML fit is refitted by REML
    first, as pbkrtest does.
    """
    return kenward_roger_info(model).vcov_adj.copy()


@dataclass
class _KRParam:
    """One variance parameter of the Kenward-Roger computation.

    Term index and the (a, b) element of its covariance matrix (a == b for a
    variance), or the residual (term -1).
    """

    term: int
    a: int = 0
    b: int = 0


def _weighted_terms(model: Any) -> tuple[list, np.ndarray]:
    """Random-effects terms and X with rows scaled by √weights, as in the fit."""
    from mixedmodels.linalg.crossproducts import TermData

    fr = model.frame
    X = np.asarray(fr.fixed.X, dtype=float)
    if X.shape[0] != fr.nobs:
        raise ModelSpecError(
            "Kenward-Roger's method needs the fixed-effects matrix in memory "
            "(not available for Dask / Parquet fits): use ddf='satterthwaite'"
        )
    sqrtw = None if fr.weights is None else np.sqrt(fr.weights)
    terms = []
    for term in fr.terms:
        z = term.z if sqrtw is None else term.z * sqrtw[:, None]
        terms.append(TermData(term.codes, z, term.nlevels))
    if sqrtw is not None:
        X = X * sqrtw[:, None]
    return terms, X


def _kenward_roger(model: Any) -> KenwardRogerInfo:
    terms, X = _weighted_terms(model)
    q = sum(t.q for t in terms)
    if q > KR_MAX_RANEF:
        raise ModelSpecError(
            f"Kenward-Roger's method builds q x q matrices and the model has q = {q} "
            f"random effects (limit {KR_MAX_RANEF}): use ddf='satterthwaite'"
        )
    n = X.shape[0]
    sigma2 = float(model.sigma) ** 2
    lams = model.lambdas(model.theta_vector)
    Z = sp.hstack([t.sparse() for t in terms], format="csc")
    Lam = sp.block_diag([sp.kron(sp.eye(t.nlevels), lam) for t, lam in zip(terms, lams)], format="csc")
    A = (Z.T @ Z).toarray()
    Bx = Z.T @ X  # q x p
    LamT_A = np.asarray(Lam.T @ A)  # Λ'A, q x q dense
    M = np.asarray(Lam.T @ LamT_A.T) + np.eye(q)  # Λ'AΛ + I
    Lc = linalg.cholesky((M + M.T) / 2, lower=True, check_finite=False)
    W = linalg.solve_triangular(Lc, np.asarray(LamT_A), lower=True, check_finite=False)
    Y = linalg.solve_triangular(Lc, W, lower=True, trans="T", check_finite=False)
    T1 = linalg.solve_triangular(Lc, np.asarray(Lam.T @ Bx), lower=True, check_finite=False)
    T2 = linalg.solve_triangular(Lc, T1, lower=True, trans="T", check_finite=False)
    T3 = linalg.solve_triangular(Lc, T2, lower=True, check_finite=False)
    C = X.T @ X
    K1 = (A - W.T @ W) / sigma2  # Z'V⁻¹Z
    # per-level diagonal blocks of Z'V⁻²Z = σ⁻⁴(A - W'W - Y'Y): column dot products
    k2_diag = (np.einsum("ij,ij->j", W, W), np.einsum("ij,ij->j", Y, Y))
    F1 = (Bx - W.T @ T1) / sigma2  # Z'V⁻¹X
    F2 = (Bx - W.T @ T1 - Y.T @ T2) / sigma2**2  # Z'V⁻²X
    XV2X = (C - T1.T @ T1 - T2.T @ T2) / sigma2**2
    XV3X = (C - T1.T @ T1 - T2.T @ T2 - T3.T @ T3) / sigma2**3
    Minv = linalg.cho_solve((Lc, True), np.eye(q), check_finite=False)
    tr_v2 = (n - q + float(np.sum(Minv * Minv))) / sigma2**2
    del Minv

    edges = np.cumsum([0] + [t.q for t in terms])
    params = [
        _KRParam(j, a, b)
        for j, t in enumerate(terms)
        for a in range(t.k)
        for b in range(a, t.k)
    ] + [_KRParam(-1)]
    blocks = [slice(int(edges[j]), int(edges[j + 1])) for j in range(len(terms))]
    ks = [t.k for t in terms]

    def s_rows(par: _KRParam, Mrows: np.ndarray) -> np.ndarray:
        """E_i ⊗ I applied to the rows of term ``par.term`` of a (q_j, m) matrix."""
        k = ks[par.term]
        R = Mrows.reshape(-1, k, Mrows.shape[1])
        out = np.zeros_like(R)
        out[:, par.a] = R[:, par.b]
        if par.a != par.b:
            out[:, par.b] = R[:, par.a]
        return out.reshape(Mrows.shape)

    def k2_trace(par: _KRParam) -> float:
        """tr(G_i V⁻²) = tr(E_i-blocks of Z'V⁻²Z)."""
        sl, k = blocks[par.term], ks[par.term]
        idx = np.arange(sl.start, sl.stop).reshape(-1, k)
        ia, ib = idx[:, par.a], idx[:, par.b]
        if par.a == par.b:
            val = A[ia, ia].sum() - k2_diag[0][ia].sum() - k2_diag[1][ia].sum()
            return val / sigma2**2
        val = A[ia, ib].sum() - np.einsum("ij,ij->", W[:, ia], W[:, ib]) - np.einsum(
            "ij,ij->", Y[:, ia], Y[:, ib]
        )
        return 2.0 * val / sigma2**2

    SF1 = [None if par.term < 0 else s_rows(par, F1[blocks[par.term]]) for par in params]
    npar = len(params)
    P: list[np.ndarray] = []
    for i, par in enumerate(params):
        if par.term < 0:
            P.append(-XV2X)
        else:
            P.append(-(F1[blocks[par.term]].T @ SF1[i]))
    Q: dict[tuple[int, int], np.ndarray] = {}
    Ktrace = np.empty((npar, npar))
    for i, pi in enumerate(params):
        if pi.term < 0:  # both residual
            Q[i, i] = XV3X
            Ktrace[i, i] = tr_v2
            continue
        Q[i, npar - 1] = SF1[i].T @ F2[blocks[pi.term]]
        Ktrace[i, npar - 1] = Ktrace[npar - 1, i] = k2_trace(pi)
    _kr_term_pairs(params, blocks, ks, K1, F1, SF1, Q, Ktrace)
    Phi = np.asarray(model.vcov, dtype=float)
    # γ of (a, b) in term j, for unit-scale columns: γ s_a s_b (see _vcov_adj)
    scales = [model.frame.terms[j].column_scales for j in range(len(terms))]
    gamma_scale = np.array(
        [1.0 if par.term < 0 else scales[par.term][par.a] * scales[par.term][par.b] for par in params]
    )
    return _vcov_adj(Phi, P, Q, Ktrace, gamma_scale)


def _kr_pairs(par: _KRParam) -> list[tuple[int, int]]:
    """Return the (row, column) entries of E_i = e_a e_b' + e_b e_a' (or e_a e_a')."""
    return [(par.a, par.a)] if par.a == par.b else [(par.a, par.b), (par.b, par.a)]


def _kr_term_pairs(
    params: list[_KRParam],
    blocks: list[slice],
    ks: list[int],
    K1: np.ndarray,
    F1: np.ndarray,
    SF1: list,
    Q: dict[tuple[int, int], np.ndarray],
    Ktrace: np.ndarray,
) -> None:
    """Fill in Q_ij and the traces tr(G_i V⁻¹ G_j V⁻¹) of every pair of term parameters.

    Q_ij = F_t'S_i K S_j F_u and tr(G_i V⁻¹ G_j V⁻¹) = tr(S_i K S_j K') for
    every pair of covariance parameters of terms t <= u, in place (K the
    (t, u) block of Z'V⁻¹Z, S_i = I ⊗ E_i, F = Z'V⁻¹X).

    Per pair of terms, not per pair of parameters: with K as (ℓ_t, k_t, ℓ_u,
    k_u), the traces are sums of entries of T[β,γ,α,δ] = Σ_lm K[lβmγ]K[lαmδ]
    (one (k_t k_u)² Gram matrix), and Q_ij = Σ_(γ,δ)∈E_j B_i[γ,δ] with
    B_i[γ,δ] = Σ_m (F_t'S_iK)[:, mγ] F_u[mδ, :] (one p x q_u product per i):
    O(k q_t q_u p + (k_t k_u)² ℓ_t ℓ_u) instead of k² products of q x q blocks.
    """
    p = F1.shape[1]
    by_term: dict[int, list[int]] = {}
    for i, par in enumerate(params):
        if par.term >= 0:
            by_term.setdefault(par.term, []).append(i)
    terms = sorted(by_term)
    for t in terms:
        for u in (u for u in terms if u >= t):
            K = K1[blocks[t], blocks[u]]
            kt, ku = ks[t], ks[u]
            lt, lu = K.shape[0] // kt, K.shape[1] // ku
            Kp = K.reshape(lt, kt, lu, ku).transpose(1, 3, 0, 2).reshape(kt * ku, lt * lu)
            T = (Kp @ Kp.T).reshape(kt, ku, kt, ku)  # T[β, γ, α, δ]
            Fu = F1[blocks[u]].reshape(lu, ku, p)
            for i in by_term[t]:
                A = (SF1[i].T @ K).reshape(p, lu, ku)
                B = np.einsum("xmg,mdy->gdxy", A, Fu)
                left = _kr_pairs(params[i])
                for j in by_term[u]:
                    if j < i:
                        continue
                    right = _kr_pairs(params[j])
                    Q[i, j] = sum(B[g, d] for g, d in right)
                    Ktrace[i, j] = Ktrace[j, i] = float(
                        sum(T[b, g, a, d] for a, b in left for g, d in right)
                    )


def _vcov_adj(
    Phi: np.ndarray,
    P: list[np.ndarray],
    Q: dict[tuple[int, int], np.ndarray],
    Ktrace: np.ndarray,
    gamma_scale: np.ndarray | None = None,
) -> KenwardRogerInfo:
    """Return pbkrtest's ``vcovAdj_internal`` from the P_i, Q_ij and traces.

    pbkrtest inverts the information I_E of the covariance parameters γ, or
    pseudo-inverts it when an eigenvalue is below 1e-10 in absolute value: a
    rule that depends on the units of γ (a slope variance on a covariate in
    tiny units has an information ~1e-24). It is applied to the information
    of γ × ``gamma_scale`` (γ for unit-scale random-effects columns; all ones,
    pbkrtest's own rule, where the columns are moderate).
    """
    npar = len(P)
    P = [(Pi + Pi.T) / 2 for Pi in P]  # forceSymmetric
    IE2 = np.empty((npar, npar))
    for i in range(npar):
        PhiPi = Phi @ P[i]
        for j in range(i, npar):
            IE2[i, j] = IE2[j, i] = (
                Ktrace[i, j] - 2 * np.sum(Phi * Q[i, j]) + np.sum(PhiPi * (P[j] @ Phi))
            )
    a = np.ones(npar) if gamma_scale is None else np.asarray(gamma_scale, dtype=float)
    IE2 = IE2 / np.outer(a, a)  # the information of γ a
    eig = np.linalg.eigvalsh((IE2 + IE2.T) / 2)
    if np.min(np.abs(eig)) > 1e-10:
        W = 2 * np.linalg.inv(IE2)
    else:
        W = 2 * np.linalg.pinv(IE2)
    W = (W + W.T) / 2 / np.outer(a, a)  # back to the covariance of γ
    p = Phi.shape[0]
    U = np.zeros((p, p))
    for i in range(npar - 1):
        for j in range(i + 1, npar):
            U += W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j])
    U = U + U.T
    for i in range(npar):
        U += W[i, i] * (Q[i, i] - P[i] @ Phi @ P[i])
    PhiA = Phi + 2 * Phi @ U @ Phi
    return KenwardRogerInfo(Phi, PhiA, P, W)


def _kr_a1_a2(info: KenwardRogerInfo, Theta: np.ndarray, V0: np.ndarray) -> tuple[float, float]:
    """Return pbkrtest's A1 and A2 of Θ (Lb_ddf, .KR_adjust)."""
    ThetaV0 = Theta @ V0
    u = [ThetaV0 @ Pi @ V0 for Pi in info.P]
    W = info.W
    A1 = A2 = 0.0
    n = len(u)
    for i in range(n):
        for j in range(i, n):
            e = 1.0 if i == j else 2.0
            A1 += e * W[i, j] * (np.trace(u[i]) * np.trace(u[j]))
            A2 += e * W[i, j] * np.sum(u[i] * u[j].T)
    return A1, A2


def _kr_ddf(A1: float, A2: float, q: int) -> tuple[float, float]:
    """Kenward-Roger's denominator df and F scaling (pbkrtest's formulas)."""
    B = (1 / (2 * q)) * (A1 + 6 * A2)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c1 = g / (3 * q + 2 * (1 - g))
    c2 = (q - g) / (3 * q + 2 * (1 - g))
    c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
    V0 = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    x = 1 - A2 / q
    ratio = 1.0 if (abs(x) < 1e-14 and abs(V1) < 1e-14) else x / V1
    rho = 1 / q * ratio**2 * V0 / V2
    df2 = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
    return df2, scaling


def _lb_ddf(info: KenwardRogerInfo, L: np.ndarray, V0: np.ndarray) -> float:
    """Return pbkrtest's ``Lb_ddf(L, V0, Vadj)`` (q = number of rows of L)."""
    L = np.atleast_2d(L)
    Theta = L.T @ np.linalg.solve(L @ V0 @ L.T, L)
    A1, A2 = _kr_a1_a2(info, Theta, V0)
    return _kr_ddf(A1, A2, L.shape[0])[0]


def _rank(L: np.ndarray) -> int:
    """Matrix::rankMatrix (tolNorm2): singular values above max(dim) eps σ_max."""
    if L.size == 0:
        return 0
    s = np.linalg.svd(L, compute_uv=False)
    return int(np.sum(s > max(L.shape) * np.finfo(float).eps * s[0]))


def _force_full_rank(L: np.ndarray) -> np.ndarray:
    """Return pbkrtest's ``force_full_rank`` of L.

    An orthonormal basis of the row space when L has dependent rows, else L.
    """
    q = _rank(L)
    if q < L.shape[0]:
        Qm, _ = np.linalg.qr(L.T)
        return Qm[:, :q].T
    return L



def kenward_roger_contrasts(model: Any, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the variances of the contrasts ``L β`` and their denominator df.

    The variances under the adjusted covariance (pbkrtest ``vcovAdj``), the
    df by ``Lb_ddf``.
    """
    info = kenward_roger_info(model)
    V0 = np.asarray(model.vcov, dtype=float)
    var = np.einsum("kp,pq,kq->k", L, info.vcov_adj, L)
    df = np.array([_lb_ddf(info, row, V0) for row in L])
    return var, df


def kenward_roger_f(model: Any, L: np.ndarray) -> tuple[float, int, float, float, float]:
    """Return lmerTest's KR branch of ``contestMD``: pbkrtest ``KRmodcomp(model, L)``.

    Returns
    -------
    tuple
        (unscaled F, numerator df, denominator df, scaled F, σ of the REML fit).
    """
    info = kenward_roger_info(model)
    reml = _reml_version(model)
    L = _force_full_rank(L)
    q = _rank(L)
    Phi = info.vcov
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    A1, A2 = _kr_a1_a2(info, Theta, Phi)
    den, scaling = _kr_ddf(A1, A2, q)
    Lb = L @ np.asarray(reml.beta, dtype=float)
    wald = float(Lb @ np.linalg.solve(L @ info.vcov_adj @ L.T, Lb))
    FU = wald / q
    return FU, q, den, scaling * FU, float(reml.sigma)
