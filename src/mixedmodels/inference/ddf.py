"""Denominator degrees of freedom for linear mixed models: Satterthwaite's
method as lmerTest 3.1-3 computes it and Kenward-Roger's as pbkrtest 0.5.2
does, for single contrasts (t tests) and joint hypotheses (F tests).

Satterthwaite (lmerTest ``as_lmerModLT``, ``contest1D``, ``contestMD``)
    The variance parameters are ``varpar = (θ, σ)``. Their covariance is
    ``A = 2 H⁻¹`` (Moore-Penrose inverse over eigenvalues above 1e-8), with H
    the Hessian of lmerTest's ``devfun_vp`` -- the ML deviance, or the REML
    criterion, as a function of varpar with β profiled out::

        d(θ, σ) = log|L_θ|² + r²_θ / σ² + n log(2πσ²)
                  [+ log|R_X,θ|² - p log(2πσ²) for REML]

    H comes from numDeriv's ``hessian`` (Richardson extrapolation, d = 0.1,
    eps = 1e-4, r = 4, v = 2) and the Jacobian of vcov(β)(varpar) =
    σ² (R_X'R_X)⁻¹ (R_X at θ) from numDeriv's ``jacobian`` (d = 1e-4): both
    are reproduced step for step (bit for bit on test functions), so the
    numbers agree with lmerTest's to rounding.
    A contrast l gets ``df = 2 (l'Cl)² / (g'Ag)`` with ``g_i = l'(∂C/∂varpar_i)l``;
    a joint test of k rows the eigen-decomposition of L C L' and lmerTest's
    ``get_Fstat_ddf`` combination of the k t-statistics' df.
    Only the p x p vcov at perturbed θ is needed: one factorisation of the
    model's blocked system per distinct θ, cached across the Hessian and the
    Jacobian (σ enters the deviance in closed form).

    numDeriv's Hessian costs about 4k² factorisations for k = len(θ) + 1
    variance parameters (minutes for two 8 x 8 covariance terms, k = 73), so
    it is used up to ``NUMDERIV_MAX_VARPAR`` = 6 (every lmerTest reference
    case: their numbers are kept exact) and ``NUMDERIV_MAX_NOBS`` rows. Above,
    the θ block of H is the
    symmetrised central difference (step 1e-4 max(|θ_i|, 1)) of the analytic
    gradient of ``devfun_vp`` -- ``∂logdet/∂θ + (∂r²/∂θ) / σ²`` from
    ``LinearMixedModel._criterion_pieces_gradient`` -- the σ row is closed
    form (∂²d/∂θ∂σ = -2 (∂r²/∂θ) / σ³, ∂²d/∂σ² = 6r²/σ⁴ - 2ν/σ²), and the
    Jacobian of vcov(β) comes from the same 2(k - 1) + 1 factorisations
    (∂/∂σ = 2σ (R_X'R_X)⁻¹). Measured against the numDeriv path (k = 4..73):
    df agree to <= 3e-7 relative, 1.2e-5 on a singular 8 x 8 REML fit with θ
    elements ~1e-6, where numDeriv's relative steps (1e-7) are the noisy side
    (ours is stable to 1e-7 over steps 1e-5..1e-4 and a Richardson step).
    The blocked system's gradient divides by λ: for a term with |diag λ| below
    ``LAMBDA_DIAG_TOL`` at some evaluation point, the missing entries come
    from the symmetric entry, else from numDeriv's second differences over
    those θ elements only.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import linalg, stats

from mixedmodels.exceptions import ConvergenceWarning, ModelSpecError

__all__ = [
    "contrast_df",
    "kenward_roger_vcov",
    "f_test",
    "normalise_ddf",
    "satterthwaite_info",
    "kenward_roger_info",
    "numderiv_hessian",
    "numderiv_jacobian",
]

# numDeriv's zero.tol: sqrt(.Machine$double.eps / 7e-7)
_ZERO_TOL = float(np.sqrt(np.finfo(float).eps / 7e-7))

# Satterthwaite's Hessian of devfun_vp: numDeriv's (lmerTest's numbers to
# rounding, ~4k² factorisations) for at most this many variance parameters
# k = len(θ) + 1, differences of the analytic gradient (2(k - 1) factorisations,
# 4(k - 1) with the Richardson step) above.
NUMDERIV_MAX_VARPAR = 6
# ... and at most this many observations: numDeriv's ~4k² factorisations of a
# million-row model's system take a minute (a summary() should not)
NUMDERIV_MAX_NOBS = 100_000
# Step of those differences: GRADIENT_STEP max(|θ_i|, 1).
GRADIENT_STEP = 1e-4
# Whether they are Richardson-extrapolated from steps h and h/2.
GRADIENT_RICHARDSON = False
# The blocked system's gradient divides by λ: where a term's |diag λ| is below
# this, its θ block comes from numDeriv's second differences instead.
LAMBDA_DIAG_TOL = 1e-5

# Largest number of random effects for which Kenward-Roger's q x q matrices
# (a handful of dense q x q arrays) are built.
KR_MAX_RANEF = 8000

_DDF_NAMES = {
    "satterthwaite": "satterthwaite",
    "kenward-roger": "kenward-roger",
    "kenwardroger": "kenward-roger",
    "kr": "kenward-roger",
    "asymptotic": "asymptotic",
}


def normalise_ddf(ddf: str | None, default: str = "satterthwaite") -> str:
    """``"satterthwaite"``, ``"kenward-roger"`` or ``"asymptotic"`` for any of
    the accepted spellings (case-insensitive; ``"KR"``, ``"Kenward-Roger"``)."""
    if ddf is None:
        return default
    key = str(ddf).strip().lower().replace("_", "-").replace(" ", "-")
    method = _DDF_NAMES.get(key) or _DDF_NAMES.get(key.replace("-", ""))
    if method is None:
        raise ModelSpecError(
            f"ddf {ddf!r} is not one of 'satterthwaite', 'kenward-roger' (or 'KR'), 'asymptotic'"
        )
    return method


# ---------------------------------------------------------------------------- numDeriv


def numderiv_hessian(
    func: Callable[[np.ndarray], float],
    x: np.ndarray,
    d: float = 0.1,
    eps: float = 1e-4,
    r: int = 4,
) -> np.ndarray:
    """numDeriv's ``hessian(func, x)`` (method "Richardson", v = 2): ``genD``'s
    central second differences at steps h, h/2, ..., h/2^(r-1) with
    h = |d x| + eps (|x| < zero.tol), Richardson-extrapolated, the
    off-diagonal ones corrected by the diagonal, exactly as numDeriv orders
    the arithmetic."""
    x = np.asarray(x, dtype=float)
    n = x.size
    f0 = float(func(x))
    h0 = np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)
    hdiag = np.empty(n)
    for i in range(n):
        approx = np.empty(r)
        h = h0.copy()
        for k in range(r):
            f1 = float(func(_shift(x, h, (i,), +1)))
            f2 = float(func(_shift(x, h, (i,), -1)))
            approx[k] = (f1 - 2 * f0 + f2) / h[i] ** 2
            h = h / 2
        hdiag[i] = _richardson(approx)
    H = np.diag(hdiag)
    for i in range(n):
        for j in range(i):
            approx = np.empty(r)
            h = h0.copy()
            for k in range(r):
                f1 = float(func(_shift(x, h, (i, j), +1)))
                f2 = float(func(_shift(x, h, (i, j), -1)))
                approx[k] = (
                    f1 - 2 * f0 + f2 - hdiag[i] * h[i] ** 2 - hdiag[j] * h[j] ** 2
                ) / (2 * h[i] * h[j])
                h = h / 2
            H[i, j] = H[j, i] = _richardson(approx)
    return H


def numderiv_jacobian(
    func: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    d: float = 1e-4,
    eps: float = 1e-4,
    r: int = 4,
) -> np.ndarray:
    """numDeriv's ``jacobian(func, x)`` (method "Richardson"): (len f, len x)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    h = np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)
    cols: list[list[np.ndarray]] = [[] for _ in range(n)]
    for _ in range(r):
        for i in range(n):
            f1 = np.asarray(func(_shift(x, h, (i,), +1)), dtype=float).ravel()
            f2 = np.asarray(func(_shift(x, h, (i,), -1)), dtype=float).ravel()
            cols[i].append((f1 - f2) / (2 * h[i]))
        h = h / 2
    return np.column_stack([_richardson(np.array(c)) for c in cols])


def _shift(x: np.ndarray, h: np.ndarray, idx: tuple[int, ...], sign: int) -> np.ndarray:
    """x with h added (sign +1) or subtracted at the positions ``idx``."""
    out = x.copy()
    for i in idx:
        out[i] = x[i] + h[i] if sign > 0 else x[i] - h[i]
    return out


def _richardson(approx: np.ndarray) -> Any:
    """numDeriv's in-place Richardson table over the first axis (v = 2)."""
    a = np.array(approx, dtype=float, copy=True)
    r = a.shape[0]
    for m in range(1, r):
        for k in range(r - m):
            a[k] = (a[k + 1] * 4.0**m - a[k]) / (4.0**m - 1)
    return a[0]


# ---------------------------------------------------------------------------- model checks


def _require_lmm(model: Any, what: str) -> None:
    model._require_fit()
    if getattr(model, "model_kind", None) != "lmer" or not hasattr(model, "_system"):
        raise ModelSpecError(
            f"{what} is defined for linear mixed models (lmer fits), not for a "
            f"{getattr(model, 'model_kind', type(model).__name__)} model: use "
            "ddf='asymptotic' (z tests) or likelihood-ratio tests (mixedmodels.anova)"
        )


def _cache(model: Any) -> dict:
    cache = getattr(model, "_cache", None)
    if cache is None:
        cache = {}
        model._cache = cache
    return cache


def _thread_plan(model: Any) -> tuple[Any, Any]:
    """The BLAS threads the fit would use (one thread for small dense blocks:
    OpenBLAS threads spinning on busy cores cost far more than they save)."""
    plan = getattr(model, "_blas_thread_plan", None)
    if plan is None:
        return 1, None
    try:
        return plan("auto")
    except Exception:  # noqa: BLE001 - a thread plan is an optimisation only
        return 1, None


# ---------------------------------------------------------------------------- Satterthwaite


@dataclass
class SatterthwaiteInfo:
    """What lmerTest stores in an ``lmerModLmerTest`` object.

    Attributes
    ----------
    varpar : ndarray
        (θ, σ) at the fit.
    hessian : ndarray
        Hessian of ``devfun_vp`` at ``varpar``.
    vcov_varpar : ndarray
        2 H⁻¹ (Moore-Penrose, eigenvalues > 1e-8).
    jacobian : ndarray, shape (k, p, p)
        ∂ vcov(β) / ∂ varpar_i.
    vcov_beta : ndarray
        vcov(β) at the fit.
    """

    varpar: np.ndarray
    hessian: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: np.ndarray
    vcov_beta: np.ndarray


class _ThetaStates:
    """log|L|², r², log|R_X|² and (R_X'R_X)⁻¹ per θ, one factorisation each."""

    def __init__(self, model: Any):
        self.model = model
        self.states: dict[bytes, tuple[float, float, float, np.ndarray]] = {}

    def get(self, theta: np.ndarray) -> tuple[float, float, float, np.ndarray]:
        key = np.ascontiguousarray(theta, dtype=float).tobytes()
        state = self.states.get(key)
        if state is None:
            state = self._compute(np.asarray(theta, dtype=float))
            self.states[key] = state
        return state

    def _compute(self, theta: np.ndarray) -> tuple[float, float, float, np.ndarray]:
        m = self.model
        f = m._system.factor(m.lambdas(theta))
        if f is None:
            raise ModelSpecError(
                "Satterthwaite's method: the model could not be factorised at a "
                f"perturbed θ = {np.round(theta, 6).tolist()}"
            )
        # read everything now: the factor's dense block is reused by the next call
        LX = np.array(f.LX(), dtype=float)
        p = LX.shape[0]
        Linv = linalg.solve_triangular(LX, np.eye(p), lower=True, check_finite=False)
        return f.logdet_re(), f.pwrss(), f.logdet_x(), Linv.T @ Linv


def satterthwaite_info(model: Any, hessian: str = "auto") -> SatterthwaiteInfo:
    """lmerTest's variance-parameter covariance and vcov(β) Jacobian (cached
    on the model).

    Parameters
    ----------
    model : LinearMixedModel
        A fitted lmer model.
    hessian : {"auto", "numderiv", "gradient"}
        ``"numderiv"``: lmerTest's numDeriv Hessian and Jacobian, step for step
        (about 4k² + 8k factorisations for k variance parameters);
        ``"gradient"``: central differences of the analytic gradient of
        ``devfun_vp`` and of vcov(β) (2(k - 1) factorisations); ``"auto"``:
        numDeriv up to ``NUMDERIV_MAX_VARPAR`` variance parameters, the
        gradient above.
    """
    _require_lmm(model, "Satterthwaite's method")
    method = _hessian_method(model, hessian)
    cache = _cache(model)
    key = f"satterthwaite:{method}"
    if key in cache:
        return cache[key]
    from mixedmodels.support.threads import blas_threads

    everywhere, factorisations = _thread_plan(model)
    system = model._system
    old = getattr(system, "lapack_threads", None)
    system.lapack_threads = factorisations
    try:
        with blas_threads(everywhere):
            if method == "numderiv":
                info = _satterthwaite(model)
            else:
                info = _satterthwaite_gradient(model)
    finally:
        system.lapack_threads = old
    cache[key] = info
    return info


def _hessian_method(model: Any, hessian: str) -> str:
    """``"numderiv"`` or ``"gradient"`` for the ``hessian`` option."""
    key = str(hessian).strip().lower()
    if key not in ("auto", "numderiv", "gradient"):
        raise ModelSpecError(
            f"hessian {hessian!r} is not one of 'auto', 'numderiv', 'gradient' "
            "(Satterthwaite's variance-parameter Hessian)"
        )
    if key == "auto":
        k = len(model._theta) + 1
        small = k <= NUMDERIV_MAX_VARPAR and model.nobs <= NUMDERIV_MAX_NOBS
        return "numderiv" if small else "gradient"
    return key


def _satterthwaite(model: Any) -> SatterthwaiteInfo:
    states = _ThetaStates(model)
    n = int(getattr(model, "_n_eff", model.nobs))
    p = len(model.beta)
    reml = bool(model.reml)
    ntheta = len(model._theta)

    def devfun_vp(varpar: np.ndarray) -> float:
        sigma2 = varpar[-1] ** 2
        ldl2, r2, ldx, _ = states.get(varpar[:-1])
        dev = ldl2 + r2 / sigma2 + n * np.log(2 * np.pi * sigma2)
        if reml:
            dev += ldx - p * np.log(2 * np.pi * sigma2)
        return dev

    def covbeta(varpar: np.ndarray) -> np.ndarray:
        return varpar[-1] ** 2 * states.get(varpar[:-1])[3]

    varpar = np.append(np.asarray(model._theta, dtype=float), float(model.sigma))
    # numDeriv's steps (relative, absolute near 0) on θ for unit-scale
    # random-effects columns, u = varpar D: free of the covariates' units
    # (D = 1, lmerTest's numbers, where the columns are moderate)
    D = _varpar_scale(model)
    H_u = numderiv_hessian(lambda u: devfun_vp(u / D), varpar * D)
    H = H_u * np.outer(D, D)
    vcov_varpar = _pinv_hessian(H_u, ntheta) / np.outer(D, D)
    J = numderiv_jacobian(lambda u: covbeta(u / D), varpar * D) * D  # (p*p, k)
    jac = np.stack([J[:, i].reshape(p, p) for i in range(J.shape[1])])
    vcov_beta = np.asarray(model.vcov, dtype=float)
    return SatterthwaiteInfo(varpar, H, vcov_varpar, jac, vcov_beta)


# ---------------------------------------------------------------------------- gradient Hessian


class _Pieces:
    """``model._criterion_pieces_gradient`` at θ, raising the package's error
    where the system cannot be factorised, with the gradient of a term set to
    NaN where it would come from λ⁻¹ with |diag λ| < ``LAMBDA_DIAG_TOL`` (the
    blocked system's form loses about eps ℓ / |λ_dd| there, which the
    differences below would divide by their step again)."""

    def __init__(self, model: Any):
        from mixedmodels.linalg.augmented import AugmentedSystem

        self.model = model
        self.guard = isinstance(model._system, AugmentedSystem)

    def __call__(self, theta: np.ndarray) -> Any:
        m = self.model
        pieces = m._criterion_pieces_gradient(theta, numeric=False)
        if pieces is None:
            raise ModelSpecError(
                "Satterthwaite's method: the model could not be factorised at a "
                f"perturbed θ = {np.round(theta, 6).tolist()}"
            )
        if self.guard:
            for lam, sl in zip(m.lambdas(theta), m._theta_slices):
                if np.min(np.abs(np.diag(lam))) < LAMBDA_DIAG_TOL:
                    pieces.d_logdet[sl] = np.nan
                    pieces.d_pwrss[sl] = np.nan
        return pieces


def _inv_crossprod(LX: np.ndarray) -> np.ndarray:
    """(L_X L_X')⁻¹ from the lower factor L_X."""
    p = LX.shape[0]
    Linv = linalg.solve_triangular(LX, np.eye(p), lower=True, check_finite=False)
    return Linv.T @ Linv


def _gradient_differences(
    model: Any, theta: np.ndarray, sigma: float, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central differences along every θ_i with steps ``steps``: of the
    gradient of ``devfun_vp`` in θ (row i: ∂g/∂θ_i, NaN where a gradient
    element was unavailable), of r² and of (R_X'R_X)⁻¹ (shape (k-1, p, p))."""
    pieces = _Pieces(model)
    ntheta = theta.size
    s2 = sigma**2
    G = np.empty((ntheta, ntheta))
    dr2 = np.empty(ntheta)
    dC: list[np.ndarray] = []
    for i, h in enumerate(steps):
        x = theta.copy()
        x[i] = theta[i] + h
        up = pieces(x)
        x[i] = theta[i] - h
        dn = pieces(x)
        G[i] = ((up.d_logdet - dn.d_logdet) + (up.d_pwrss - dn.d_pwrss) / s2) / (2 * h)
        dr2[i] = (up.pwrss - dn.pwrss) / (2 * h)
        dC.append((_inv_crossprod(up.LX) - _inv_crossprod(dn.LX)) / (2 * h))
    return G, dr2, np.stack(dC) if dC else np.zeros((0,) + (len(model.beta),) * 2)


def _symmetrise(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(G + G')/2 where both are known, the known one where only one is; and
    the mask of entries known from neither."""
    known = np.isfinite(G)
    both = known & known.T
    H = np.where(both, (np.where(known, G, 0.0) + np.where(known.T, G.T, 0.0)) / 2, np.nan)
    H = np.where(known & ~known.T, G, H)
    H = np.where(~known & known.T, G.T, H)
    return H, ~(known | known.T)


def _satterthwaite_gradient(model: Any) -> SatterthwaiteInfo:
    """lmerTest's quantities with the θ block of the Hessian from central
    differences of the analytic gradient of ``devfun_vp`` (Richardson-
    extrapolated from h and h/2 if ``GRADIENT_RICHARDSON``), the σ row in
    closed form, and the vcov(β) Jacobian from the same factorisations:
    O(k) factorisations in all."""
    theta = np.asarray(model._theta, dtype=float)
    sigma = float(model.sigma)
    s2 = sigma**2
    ntheta = theta.size
    p = len(model.beta)
    n = int(getattr(model, "_n_eff", model.nobs))
    nu = n - p if model.reml else n
    center = _Pieces(model)(theta)
    scale = np.asarray(model.theta_scale, dtype=float)  # steps for unit-scale columns
    steps = GRADIENT_STEP * np.maximum(np.abs(theta) * scale, 1.0) / scale
    G, dr2, dC = _gradient_differences(model, theta, sigma, steps)
    if GRADIENT_RICHARDSON:
        G2, dr2_2, dC2 = _gradient_differences(model, theta, sigma, steps / 2)
        G, dr2, dC = (4 * G2 - G) / 3, (4 * dr2_2 - dr2) / 3, (4 * dC2 - dC) / 3
    Htt, unknown = _symmetrise(G)
    if unknown.any():
        _fill_numderiv(model, theta, sigma, Htt, unknown)
    d_r2 = np.where(np.isfinite(center.d_pwrss), center.d_pwrss, dr2)
    H = np.empty((ntheta + 1, ntheta + 1))
    H[:ntheta, :ntheta] = Htt
    H[:ntheta, -1] = H[-1, :ntheta] = -2.0 * d_r2 / sigma**3
    H[-1, -1] = 6.0 * center.pwrss / s2**2 - 2.0 * nu / s2
    D = _varpar_scale(model)  # the pseudo-inverse's cutoff on unit-scale columns
    vcov_varpar = _pinv_hessian(H / np.outer(D, D), ntheta) / np.outer(D, D)
    C0 = _inv_crossprod(center.LX)
    jac = np.concatenate([s2 * dC, (2.0 * sigma * C0)[None]], axis=0)
    vcov_beta = np.asarray(model.vcov, dtype=float)
    varpar = np.append(theta, sigma)
    return SatterthwaiteInfo(varpar, H, vcov_varpar, jac, vcov_beta)


def _fill_numderiv(
    model: Any, theta: np.ndarray, sigma: float, H: np.ndarray, unknown: np.ndarray
) -> None:
    """Fill the ``unknown`` entries of the θ block ``H`` in place with numDeriv's
    Hessian of ``devfun_vp`` over the θ elements involved (σ fixed): the
    blocked system's terms with a singular λ, 4 s² factorisations for s such
    elements."""
    idx = np.flatnonzero(unknown.any(axis=1))
    states = _ThetaStates(model)
    s2 = sigma**2
    reml = bool(model.reml)

    def dev(sub: np.ndarray) -> float:
        x = theta.copy()
        x[idx] = sub
        ldl2, r2, ldx, _ = states.get(x)
        return ldl2 + r2 / s2 + (ldx if reml else 0.0)

    Hs = numderiv_hessian(dev, theta[idx])
    block = unknown[np.ix_(idx, idx)]
    sub = H[np.ix_(idx, idx)]
    sub[block] = Hs[block]
    H[np.ix_(idx, idx)] = sub


def _varpar_scale(model: Any) -> np.ndarray:
    """Per element of varpar = (θ, σ), the factor giving it for unit-scale
    random-effects columns (``theta_scale``; 1 for σ)."""
    return np.append(np.asarray(model.theta_scale, dtype=float), 1.0)


def _pinv_hessian(H: np.ndarray, ntheta: int, tol: float = 1e-8) -> np.ndarray:
    """2 H⁻¹ over the eigenvalues above ``tol``, warning as lmerTest does about
    negative and near-zero eigenvalues."""
    from mixedmodels.support.warnings import warn_caller

    values, vectors = np.linalg.eigh((H + H.T) / 2)
    neg = values < -tol
    zero = (values > -tol) & (values < tol)
    if neg.any():
        word = "eigenvalues" if neg.sum() > 1 else "eigenvalue"
        vals = " ".join(f"{v:.1e}" for v in np.sort(values[neg])[::-1])
        warn_caller(
            f"Model failed to converge with {int(neg.sum())} negative {word}: {vals}",
            ConvergenceWarning,
        )
    if zero.any():
        word = "eigenvalues" if zero.sum() > 1 else "eigenvalue"
        vals = " ".join(f"{v:.1e}" for v in np.sort(values[zero])[::-1])
        warn_caller(
            f"Model may not have converged with {int(zero.sum())} {word} close to zero: {vals}",
            ConvergenceWarning,
        )
    pos = values > tol
    V = vectors[:, pos]
    return 2.0 * (V / values[pos]) @ V.T


def _satterthwaite_df(info: SatterthwaiteInfo, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance l'Cl and Satterthwaite df of every row l of ``L``."""
    C = info.vcov_beta
    var = np.einsum("kp,pq,kq->k", L, C, L)
    g = np.einsum("kp,ipq,kq->ki", L, info.jacobian, L)
    denom = np.einsum("ki,ij,kj->k", g, info.vcov_varpar, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = 2.0 * var**2 / denom
    return var, df


def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: the df of an F built from q t-statistics."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - nu.size)


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
    """The model itself if fitted by REML, else a REML refit (pbkrtest's
    ``update(object, REML = TRUE)``) on the same design, started at its θ."""
    if model.reml:
        return model
    cache = _cache(model)
    if "reml_refit" not in cache:
        twin = copy.copy(model)
        twin.reml = True
        twin._cache = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin.fit(start=np.asarray(model._theta, dtype=float))
        cache["reml_refit"] = twin
    return cache["reml_refit"]


def kenward_roger_info(model: Any) -> KenwardRogerInfo:
    """pbkrtest's ``vcovAdj`` of the REML fit (cached on the model)."""
    _require_lmm(model, "Kenward-Roger's method")
    reml = _reml_version(model)
    cache = _cache(reml)
    if "kenward_roger" not in cache:
        cache["kenward_roger"] = _kenward_roger(reml)
    return cache["kenward_roger"]


def kenward_roger_vcov(model: Any) -> np.ndarray:
    """The Kenward-Roger adjusted covariance of the fixed effects, pbkrtest's
    ``vcovAdj`` (p x p, ``model.fixef`` order). An ML fit is refitted by REML
    first, as pbkrtest does."""
    return kenward_roger_info(model).vcov_adj.copy()


@dataclass
class _KRParam:
    """One variance parameter: term index and the (a, b) element of its
    covariance matrix (a == b for a variance), or the residual (term -1)."""

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
    lams = model.lambdas(model._theta)
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
    """The (row, column) entries of E_i = e_a e_b' + e_b e_a' (or e_a e_a')."""
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
    """Q_ij = F_t'S_i K S_j F_u and tr(G_i V⁻¹ G_j V⁻¹) = tr(S_i K S_j K') for
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
    """pbkrtest's ``vcovAdj_internal`` from the P_i, Q_ij and traces.

    pbkrtest inverts the information I_E of the covariance parameters γ, or
    pseudo-inverts it when an eigenvalue is below 1e-10 in absolute value: a
    rule that depends on the units of γ (a slope variance on a covariate in
    tiny units has an information ~1e-24). It is applied to the information
    of γ × ``gamma_scale`` (γ for unit-scale random-effects columns; all ones,
    pbkrtest's own rule, where the columns are moderate)."""
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
    """pbkrtest's A1 and A2 of Θ (Lb_ddf, .KR_adjust)."""
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
    """pbkrtest's ``Lb_ddf(L, V0, Vadj)`` (q = number of rows of L)."""
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
    """pbkrtest's ``force_full_rank``: an orthonormal basis of the row space
    when L has dependent rows."""
    q = _rank(L)
    if q < L.shape[0]:
        Qm, _ = np.linalg.qr(L.T)
        return Qm[:, :q].T
    return L


# ---------------------------------------------------------------------------- contract API


def _as_contrasts(model: Any, L: Any) -> np.ndarray:
    p = len(model.beta)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.ndim != 2 or L.shape[1] != p:
        raise ModelSpecError(
            f"contrast matrix L must have {p} columns (one per fixed effect of "
            f"{list(model.fixef.index)}), not shape {np.shape(L)}"
        )
    return L


def _t_pvalue(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    t, df = np.broadcast_arrays(np.asarray(t, dtype=float), np.asarray(df, dtype=float))
    out = np.full(t.shape, np.nan)
    ok = np.isfinite(t) & ~np.isnan(df) & (df > 0)
    inf = ok & np.isinf(df)
    fin = ok & ~np.isinf(df)
    out[fin] = 2 * stats.t.sf(np.abs(t[fin]), df[fin])
    out[inf] = 2 * stats.norm.sf(np.abs(t[inf]))
    return out


def contrast_df(model: Any, L: np.ndarray, ddf: str = "satterthwaite") -> pd.DataFrame:
    """t tests of single contrasts l'β, lmerTest's ``contest1D``.

    Parameters
    ----------
    model : LinearMixedModel
        A fitted model (``"asymptotic"`` also accepts GLMMs).
    L : array-like, shape (k, p)
        One contrast per row over the fixed effects in ``model.fixef`` order.
    ddf : {"satterthwaite", "kenward-roger", "asymptotic"}
        Satterthwaite (lmerTest), Kenward-Roger (pbkrtest ``vcovAdj`` for the
        standard error, ``Lb_ddf`` for the df; an ML fit uses the adjusted
        covariance of its REML refit, as pbkrtest does), or df = inf with
        normal p-values.

    Returns
    -------
    DataFrame
        Columns ``estimate, se, df, t, p_value``, index 0..k-1.
    """
    method = normalise_ddf(ddf)
    model._require_fit()
    L = _as_contrasts(model, L)
    beta = np.asarray(model.beta, dtype=float)
    est = L @ beta
    if method == "satterthwaite":
        var, df = _satterthwaite_df(satterthwaite_info(model), L)
    elif method == "kenward-roger":
        info = kenward_roger_info(model)
        V0 = np.asarray(model.vcov, dtype=float)
        var = np.einsum("kp,pq,kq->k", L, info.vcov_adj, L)
        df = np.array([_lb_ddf(info, row, V0) for row in L])
    else:
        V = np.asarray(model.vcov, dtype=float)
        var = np.einsum("kp,pq,kq->k", L, V, L)
        df = np.full(L.shape[0], np.inf)
    se = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = est / se
    out = pd.DataFrame(
        {"estimate": est, "se": se, "df": df, "t": t, "p_value": _t_pvalue(t, df)},
        index=pd.RangeIndex(L.shape[0]),
    )
    out.index.name = "contrast"
    return out


def f_test(model: Any, L: np.ndarray, ddf: str = "satterthwaite") -> dict:
    """Joint F test of the k rows of ``L`` (H0: Lβ = 0).

    Satterthwaite follows lmerTest's ``contestMD`` (the eigen-decomposition of
    L C L', rows beyond its rank dropped, ``get_Fstat_ddf``); Kenward-Roger
    follows ``contestMD``'s use of pbkrtest's ``KRmodcomp`` (F scaled by
    ``F.scaling``, the mean square from the unscaled Wald statistic with the
    adjusted covariance); ``"asymptotic"`` gives the Wald F with den_df = inf
    (a χ²_k / k test).

    Returns
    -------
    dict
        ``sum_sq, mean_sq, num_df, den_df, F, p_value``; sums of squares are
        lmerTest's ``F σ² num_df``.
    """
    method = normalise_ddf(ddf)
    model._require_fit()
    L = _as_contrasts(model, L)
    if L.shape[0] == 0:
        return _f_row(np.nan, np.nan, np.nan, np.nan, 1.0, np.nan)
    sigma = float(model.sigma) if getattr(model, "has_residual", True) else 1.0
    if method == "kenward-roger":
        return _f_kenward_roger(model, L, sigma)
    beta = np.asarray(model.beta, dtype=float)
    V = np.asarray(model.vcov, dtype=float)
    if method == "satterthwaite":
        info = satterthwaite_info(model)
        V = info.vcov_beta
    if L.shape[0] > 1:
        d, P = np.linalg.eigh(L @ V @ L.T)
        order = np.argsort(d)[::-1]
        d, P = d[order], P[:, order]
        pos = d > max(np.sqrt(np.finfo(float).eps) * d[0], 0)
        qr = int(pos.sum())
        if qr == 0:
            return _f_row(np.nan, np.nan, np.nan, np.nan, sigma, np.nan)
        PtL = (P.T @ L)[:qr]
        d = d[:qr]
    else:
        PtL, d = L, np.einsum("kp,pq,kq->k", L, V, L)
        qr = 1
    t2 = (PtL @ beta) ** 2 / d
    F = float(np.mean(t2))
    if method == "satterthwaite":
        _, nu = _satterthwaite_df(info, PtL)
        den = _fstat_ddf(nu)
    else:
        den = np.inf
    return _f_row(F, qr, den, F, sigma, _f_pvalue(F, qr, den))


def _f_kenward_roger(model: Any, L: np.ndarray, sigma: float) -> dict:
    """lmerTest's KR branch of ``contestMD``: pbkrtest ``KRmodcomp(model, L)``."""
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
    F = scaling * FU
    return _f_row(FU, q, den, F, float(reml.sigma), _f_pvalue(F, q, den))


def _f_pvalue(F: float, num: float, den: float) -> float:
    if not np.isfinite(F) or not num > 0:
        return float("nan")
    if np.isinf(den):
        return float(stats.chi2.sf(F * num, num))
    return float(stats.f.sf(F, num, den))


def _f_row(F_unscaled: float, num: float, den: float, F: float, sigma: float, p: float) -> dict:
    mean_sq = F_unscaled * sigma**2
    return {
        "sum_sq": mean_sq * num,
        "mean_sq": mean_sq,
        "num_df": num,
        "den_df": den,
        "F": F,
        "p_value": p,
    }
