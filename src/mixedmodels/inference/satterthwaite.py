"""Satterthwaite's denominator degrees of freedom for linear mixed models.

As lmerTest 3.1-3 computes them.

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
    ``LinearMixedModel.criterion_pieces_gradient`` -- the σ row is closed
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg

from mixedmodels.exceptions import ConvergenceWarning, ModelSpecError
from mixedmodels.inference.ddf_checks import model_cache, require_lmm, thread_plan
from mixedmodels.inference.numderiv import numderiv_hessian, numderiv_jacobian

__all__ = [
    "SatterthwaiteInfo", "fstat_ddf", "hessian_method", "satterthwaite_df", "satterthwaite_info",
]

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
        f = m.system.factor(m.lambdas(theta))
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
    """Return lmerTest's variance-parameter covariance and vcov(β) Jacobian (cached on the model).

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
    require_lmm(model, "Satterthwaite's method")
    method = hessian_method(model, hessian)
    cache = model_cache(model)
    key = f"satterthwaite:{method}"
    if key in cache:
        return cache[key]
    from mixedmodels.support.threads import blas_threads

    everywhere, factorisations = thread_plan(model)
    system = model.system
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


def hessian_method(model: Any, hessian: str) -> str:
    """``"numderiv"`` or ``"gradient"`` for the ``hessian`` option."""
    key = str(hessian).strip().lower()
    if key not in ("auto", "numderiv", "gradient"):
        raise ModelSpecError(
            f"hessian {hessian!r} is not one of 'auto', 'numderiv', 'gradient' "
            "(Satterthwaite's variance-parameter Hessian)"
        )
    if key == "auto":
        k = len(model.theta_vector) + 1
        small = k <= NUMDERIV_MAX_VARPAR and model.nobs <= NUMDERIV_MAX_NOBS
        return "numderiv" if small else "gradient"
    return key


def _satterthwaite(model: Any) -> SatterthwaiteInfo:
    states = _ThetaStates(model)
    n = int(getattr(model, "n_eff", model.nobs))
    p = len(model.beta)
    reml = bool(model.reml)
    ntheta = len(model.theta_vector)

    def devfun_vp(varpar: np.ndarray) -> float:
        sigma2 = varpar[-1] ** 2
        ldl2, r2, ldx, _ = states.get(varpar[:-1])
        dev = ldl2 + r2 / sigma2 + n * np.log(2 * np.pi * sigma2)
        if reml:
            dev += ldx - p * np.log(2 * np.pi * sigma2)
        return dev

    def covbeta(varpar: np.ndarray) -> np.ndarray:
        return varpar[-1] ** 2 * states.get(varpar[:-1])[3]

    varpar = np.append(np.asarray(model.theta_vector, dtype=float), float(model.sigma))
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
    """``model.criterion_pieces_gradient`` at θ, guarded for the differences below.

    Raises the package's error where the system cannot be factorised; sets the
    gradient of a term to NaN where it would come from λ⁻¹ with |diag λ| <
    ``LAMBDA_DIAG_TOL`` (the blocked system's form loses about eps ℓ / |λ_dd|
    there, which the differences below would divide by their step again).
    """

    def __init__(self, model: Any):
        from mixedmodels.linalg.augmented import AugmentedSystem

        self.model = model
        self.guard = isinstance(model.system, AugmentedSystem)

    def __call__(self, theta: np.ndarray) -> Any:
        m = self.model
        pieces = m.criterion_pieces_gradient(theta, numeric=False)
        if pieces is None:
            raise ModelSpecError(
                "Satterthwaite's method: the model could not be factorised at a "
                f"perturbed θ = {np.round(theta, 6).tolist()}"
            )
        if self.guard:
            for lam, sl in zip(m.lambdas(theta), m.theta_slices):
                if np.min(np.abs(np.diag(lam))) < LAMBDA_DIAG_TOL:
                    pieces.d_logdet[sl] = np.nan
                    pieces.d_pwrss[sl] = np.nan
        return pieces


def _inv_crossprod(LX: np.ndarray) -> np.ndarray:
    """Return (L_X L_X')⁻¹ from the lower factor L_X."""
    p = LX.shape[0]
    Linv = linalg.solve_triangular(LX, np.eye(p), lower=True, check_finite=False)
    return Linv.T @ Linv


def _gradient_differences(
    model: Any, theta: np.ndarray, sigma: float, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return central differences along every θ_i with steps ``steps``.

    Of the gradient of ``devfun_vp`` in θ (row i: ∂g/∂θ_i, NaN where a gradient
    element was unavailable), of r² and of (R_X'R_X)⁻¹ (shape (k-1, p, p)).
    """
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
    """Return the symmetrised G and the mask of entries known from neither side.

    (G + G')/2 where both are known, the known one where only one is.
    """
    known = np.isfinite(G)
    both = known & known.T
    H = np.where(both, (np.where(known, G, 0.0) + np.where(known.T, G.T, 0.0)) / 2, np.nan)
    H = np.where(known & ~known.T, G, H)
    H = np.where(~known & known.T, G.T, H)
    return H, ~(known | known.T)


def _satterthwaite_gradient(model: Any) -> SatterthwaiteInfo:
    """Return lmerTest's quantities from the analytic gradient of ``devfun_vp``.

    The θ block of the Hessian from central differences of the gradient
    (Richardson-extrapolated from h and h/2 if ``GRADIENT_RICHARDSON``), the σ
    row in closed form, and the vcov(β) Jacobian from the same
    factorisations: O(k) factorisations in all.
    """
    theta = np.asarray(model.theta_vector, dtype=float)
    sigma = float(model.sigma)
    s2 = sigma**2
    ntheta = theta.size
    p = len(model.beta)
    n = int(getattr(model, "n_eff", model.nobs))
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
    """Fill the ``unknown`` entries of the θ block ``H`` in place with numDeriv's Hessian.

    The Hessian of ``devfun_vp`` over the θ elements involved (σ fixed): the
    blocked system's terms with a singular λ, 4 s² factorisations for s such
    elements.
    """
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
    """Return, per element of varpar = (θ, σ), the factor giving it for unit-scale columns.

    The random-effects columns' ``theta_scale``; 1 for σ.
    """
    return np.append(np.asarray(model.theta_scale, dtype=float), 1.0)


def _pinv_hessian(H: np.ndarray, ntheta: int, tol: float = 1e-8) -> np.ndarray:
    """Return 2 H⁻¹ over the eigenvalues above ``tol``.

    Warns as lmerTest does about negative and near-zero eigenvalues.
    """
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


def satterthwaite_df(info: SatterthwaiteInfo, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the variance l'Cl and the Satterthwaite df of every row l of ``L``."""
    C = info.vcov_beta
    var = np.einsum("kp,pq,kq->k", L, C, L)
    g = np.einsum("kp,ipq,kq->ki", L, info.jacobian, L)
    denom = np.einsum("ki,ij,kj->k", g, info.vcov_varpar, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = 2.0 * var**2 / denom
    return var, df


def fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """Return lmerTest's ``get_Fstat_ddf``: the df of an F built from q t-statistics."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - nu.size)

