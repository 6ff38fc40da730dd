"""Exact restricted likelihood-ratio test for one variance component.

As RLRsim's ``exactRLRT`` (Scheipl, Greven & Küchenhoff 2008, Comput. Stat.
Data Anal. 52: 3283).

Under H0 (the variance of one random-effects term is zero) the restricted LRT
statistic has the finite-sample distribution of Crainiceanu & Ruppert (2004,
J. R. Stat. Soc. B 66: 165), which depends on the design only through the
eigenvalues μ of Z'(I - P_X)Z (Z the tested term's matrix): with
independent χ²₁ variables w_s, s = 1..K, and a χ²_{n-p-K} variable w₀,

    RLRT = sup_λ≥0  (n - p) log(1 + N(λ)/D(λ)) - Σ log(1 + λ μ_s),
    N(λ) = Σ λμ_s/(1 + λμ_s) w_s,   D(λ) = Σ w_s/(1 + λμ_s) + w₀,

the supremum taken, as RLRsim does, over a grid of λ (0 and 199 values
log-spaced from e⁻¹⁰ to e⁸) up to its first local maximum. The simulation is
vectorised over draws; it uses numpy's random generator, so the p-value
agrees with R's within Monte Carlo error, not digit for digit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsWarning, ModelSpecError
from mixedmodels.inference.lrt import check_same_rows
from mixedmodels.inference.protocol import is_linear, is_mixed_model

__all__ = ["RLRTResult", "residual_eigenvalues", "rlrt", "rlrt_null_sample"]

# floats per intermediate array of the simulation (16 MB): draws are simulated
# in chunks of _CHUNK_FLOATS / max(grid length, number of eigenvalues)
_CHUNK_FLOATS = 2_000_000


@dataclass(frozen=True)
class RLRTResult:
    """Result of :func:`rlrt`, the exact restricted likelihood-ratio test.

    ``str()`` gives a one-line report of the test.

    Attributes
    ----------
    statistic : float
        The restricted likelihood-ratio statistic, 2 (REML loglik alt - null), >= 0.
    p_value : float
        Share of the simulated null distribution above the statistic (1 without
        simulation when the statistic is 0). When no simulated value exceeds
        the statistic the share is 0, which is not the p-value: ``p_value`` is
        then the resolution of the simulation, ``1 / nsim``, an upper bound
        (``p_is_bound`` True; printed ``p < 1/nsim``). RLRsim reports 0 there.
    nsim : int
        Number of simulated values (0 when the statistic is 0).
    sample : ndarray
        The simulated null distribution (empty when ``nsim`` is 0).
    p_is_bound : bool
        True when the p-value is below ``1 / nsim`` and ``p_value`` holds that bound.
    p_text : str
        The p-value as printed: ``"< 1e-04"`` for a bound, else its value.
    """

    statistic: float
    p_value: float
    nsim: int
    sample: np.ndarray = field(repr=False, compare=False)
    p_is_bound: bool = False

    @property
    def p_text(self) -> str:
        """The p-value as printed: ``"< 1e-04"`` for a bound, else its value."""
        if self.p_is_bound:
            return f"< {self.p_value:.3g}"
        return f"{self.p_value:.4g}"

    def __str__(self) -> str:
        if self.nsim == 0:
            return f"exact restricted LRT: RLRT = {self.statistic:.4g}, p-value = 1 (no simulation)"
        if self.p_is_bound:
            detail = f"none of {self.nsim} simulated values exceeds the statistic"
            return f"exact restricted LRT: RLRT = {self.statistic:.4g}, p-value {self.p_text} ({detail})"
        return (
            f"exact restricted LRT: RLRT = {self.statistic:.4g}, p-value = {self.p_text} "
            f"({self.nsim} simulated values)"
        )

    def to_series(self) -> pd.Series:
        """Return ``statistic``, ``p_value`` and ``nsim`` as a Series.

        ``attrs["p_is_bound"]`` says whether ``p_value`` is the upper bound ``1 / nsim``.
        """
        out = pd.Series(
            {"statistic": self.statistic, "p_value": self.p_value, "nsim": float(self.nsim)},
            name="rlrt",
        )
        out.attrs["p_is_bound"] = self.p_is_bound
        return out


# ---------------------------------------------------------------------------- checks


def _require_lmm(model: Any, role: str) -> None:
    if not (is_mixed_model(model) and is_linear(model)):
        kind = getattr(model, "model_kind", type(model).__name__)
        raise ModelSpecError(
            f"rlrt needs linear mixed models (lmer fits): {role} is a {kind} model; "
            "the exact restricted LRT is not defined for GLMMs"
        )
    model.require_fit()
    if model.frame.weights is not None:
        raise ModelSpecError(
            f"rlrt does not support prior weights ({role} was fitted with weights), "
            "as RLRsim's exactRLRT"
        )


def _same_fixed(a: Any, b: Any, name_a: str, name_b: str) -> None:
    fa, fb = a.frame.fixed, b.frame.fixed
    if fa.names != fb.names or fa.X.shape != fb.X.shape or not np.array_equal(fa.X, fb.X):
        raise ModelSpecError(
            f"the fixed effects of {name_a} and {name_b} are not identical: REML-based "
            "inference is not appropriate (restricted likelihoods of different fixed "
            "effects are not comparable)"
        )


def _reml_loglik(model: Any, role: str) -> float:
    """Return the REML log-likelihood of ``model``.

    For an ML fit, the REML criterion at the ML estimates (as lme4's
    ``logLik(fit, REML = TRUE)``), with a warning.
    """
    if model.reml:
        return model.loglik
    warnings.warn(
        f"{role} was fitted by ML: using the restricted likelihood evaluated at the ML "
        "estimates; refit with reml=True for exact results",
        MixedModelsWarning,
        stacklevel=4,
    )
    return -0.5 * model.profiled_criterion(model.fitted_factor, True)


def _scalar_term(model: Any, role: str):
    """Return the single scalar random-effects term of ``model``."""
    terms = model.frame.terms
    if len(terms) != 1 or terms[0].k != 1:
        texts = ", ".join(t.spec.text for t in terms)
        raise ModelSpecError(
            f"{role} must have exactly one random-effects term with one column (a single "
            f"variance component), not {texts}; exactRLRT tests one variance"
        )
    return terms[0]


def _tested_term(m_alt: Any, m_null: Any):
    """Return the term of ``m_alt`` that ``m_null`` lacks (when m_slope is not given)."""
    null_keys = {(t.spec.expr, t.spec.group) for t in m_null.frame.terms}
    extra = [t for t in m_alt.frame.terms if (t.spec.expr, t.spec.group) not in null_keys]
    if len(extra) != 1 or extra[0].k != 1:
        found = ", ".join(t.spec.text for t in extra) or "none"
        raise ModelSpecError(
            "cannot tell which single variance component m_alt adds to m_null (terms of "
            f"m_alt not in m_null: {found}): give m_slope, the model with only the tested "
            "random effect"
        )
    return extra[0]


# ---------------------------------------------------------------------------- statistic


def _y(model: Any) -> np.ndarray:
    fr = model.frame
    return fr.y if fr.offset is None else fr.y - fr.offset


def _null_lm_reml(model: Any) -> float:
    """Return twice the REML log-likelihood of the linear model without random effects.

    RLRsim's ``reml.H0``.
    """
    X, y = model.frame.fixed.X, _y(model)
    n, p = X.shape
    Q, R = np.linalg.qr(X)
    resid = y - Q @ (Q.T @ y)
    rss = float(resid @ resid)
    logdet = 2.0 * float(np.sum(np.log(np.abs(np.diag(R)))))
    nmp = n - p
    return -(nmp * np.log(2 * np.pi) + nmp * np.log(rss) + logdet + nmp - nmp * np.log(nmp))


def residual_eigenvalues(X: np.ndarray, term: Any) -> np.ndarray:
    """Return μ, the eigenvalues of Z'(I - P_X)Z for a scalar term.

    Largest first, scaled to a maximum of 1 (RLRsim's squared singular values
    of the residualised Z). Only q x q and q x p matrices are formed.
    """
    Q, _ = np.linalg.qr(X)
    z, codes, q = term.z[:, 0], term.codes, term.nlevels
    ztz = np.bincount(codes, z * z, minlength=q)
    ztq = np.stack([np.bincount(codes, z * Q[:, j], minlength=q) for j in range(Q.shape[1])], 1)
    M = np.diag(ztz) - ztq @ ztq.T
    mu = np.clip(np.linalg.eigvalsh(M)[::-1], 0.0, None)[: min(q, X.shape[0])]
    if not mu[0] > 0:
        raise ModelSpecError(
            f"the random-effects term {term.spec.text} lies in the span of the fixed effects: "
            "its variance cannot be tested"
        )
    return mu / mu[0]


def rlrt_null_sample(
    mu: np.ndarray,
    n: int,
    p: int,
    nsim: int,
    rng: np.random.Generator,
    log_grid_hi: float = 8.0,
    log_grid_lo: float = -10.0,
    gridlength: int = 200,
) -> np.ndarray:
    """Draw from the null distribution of the RLRT statistic.

    As RLRsim's ``RLRTSim`` with ``lambda0 = 0``, for eigenvalues ``mu`` of a
    design with ``n`` observations and ``p`` fixed effects: ``nsim`` draws from
    ``rng``, the supremum over a grid of ``gridlength`` values of λ (0, then
    log-spaced from exp(``log_grid_lo``) to exp(``log_grid_hi``)).
    """
    mu = np.asarray(mu, dtype=float)
    k = mu.size
    lam = np.concatenate([[0.0], np.exp(np.linspace(log_grid_lo, log_grid_hi, gridlength - 1))])
    lm = np.outer(lam, mu)  # (g, k)
    fN = (lm / (1.0 + lm)).T  # (k, g)
    fD = (1.0 / (1.0 + lm)).T
    penalty = np.log1p(lm).sum(axis=1)  # (g,)
    df_k = max(n - p - k, 0)
    n0 = n - p
    out = np.empty(nsim)
    chunk = max(1, _CHUNK_FLOATS // max(k, gridlength))
    for start in range(0, nsim, chunk):
        m = min(chunk, nsim - start)
        chi_k = rng.chisquare(df_k, m) if df_k > 0 else np.zeros(m)
        chi1 = rng.chisquare(1.0, (m, k))
        N = chi1 @ fN
        D = chi1 @ fD + chi_k[:, None]
        LR = n0 * np.log1p(N / D) - penalty
        out[start : start + m] = _first_local_max(LR)
    return out


def _first_local_max(LR: np.ndarray) -> np.ndarray:
    """Return, per row, the value where the grid search of RLRsim stops.

    It moves along λ while the statistic does not decrease (starting from 0 at
    λ = 0); negative values become 0.
    """
    drops = np.diff(LR, axis=1) < 0
    stop = np.where(drops.any(axis=1), drops.argmax(axis=1), LR.shape[1] - 1)
    return np.maximum(LR[np.arange(LR.shape[0]), stop], 0.0)


# ---------------------------------------------------------------------------- test


def rlrt(
    m_alt: Any,
    m_null: Any = None,
    m_slope: Any = None,
    nsim: int = 10_000,
    seed: int | np.random.Generator | None = None,
) -> RLRTResult:
    """Test that one variance component is zero by the exact restricted likelihood ratio.

    As RLRsim's ``exactRLRT(m = m_slope, mA = m_alt, m0 = m_null)``.

    Parameters
    ----------
    m_alt : LinearMixedModel
        The model with the tested variance component (a REML fit). Alone, it
        must have a single scalar random-effects term, tested against the
        linear model without random effects (RLRsim's ``exactRLRT(m)``).
    m_null : LinearMixedModel, optional
        m_alt without the tested term: same fixed effects, one parameter fewer.
    m_slope : LinearMixedModel, optional
        A model with only the tested random effect (RLRsim's ``m``), whose
        design gives the null distribution. By default that term is taken from
        m_alt: the one term m_null does not have.
    nsim : int, default 10000
        Number of draws from the null distribution.
    seed : int or numpy Generator, optional
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    RLRTResult
        ``statistic`` (2 × the REML log-likelihood difference, at least 0),
        ``p_value`` (share of draws above the statistic; when no draw is
        above, the bound ``1 / nsim`` with ``p_is_bound`` True), ``nsim``.

    Raises
    ------
    ModelSpecError
        For glmer models, models with different fixed effects or rows, null
        models that drop more than one parameter, or a tested term that is not
        a single scalar random effect.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> m = mm.lmer("Yield ~ 1 + (1 | Batch)", mm.datasets.load("Dyestuff"))
    >>> round(mm.rlrt(m, seed=1).statistic, 3)
    6.369
    """
    if not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ModelSpecError(f"nsim must be a positive integer, not {nsim!r}")
    _require_lmm(m_alt, "m_alt")
    if m_null is None:
        if m_slope is not None:
            raise ModelSpecError("m_slope is only used together with m_null")
        term = _scalar_term(m_alt, "m_alt (given without m_null)")
        statistic = max(0.0, 2.0 * _reml_loglik(m_alt, "m_alt") - _null_lm_reml(m_alt))
    else:
        _require_lmm(m_null, "m_null")
        check_same_rows([m_alt, m_null], ["m_alt", "m_null"])
        _same_fixed(m_alt, m_null, "m_alt", "m_null")
        extra = m_alt.n_params - m_null.n_params
        if extra != 1:
            raise ModelSpecError(
                f"m_alt has {m_alt.n_params} parameters and m_null {m_null.n_params}: the null "
                "model must drop exactly one variance (random effects not independent, or "
                "covariances set to 0 under H0); exactRLRT tests a single variance"
            )
        if m_slope is None:
            term = _tested_term(m_alt, m_null)
        else:
            _require_lmm(m_slope, "m_slope")
            check_same_rows([m_alt, m_slope], ["m_alt", "m_slope"])
            _same_fixed(m_alt, m_slope, "m_alt", "m_slope")
            term = _scalar_term(m_slope, "m_slope")
        diff = _reml_loglik(m_alt, "m_alt") - _reml_loglik(m_null, "m_null")
        statistic = max(0.0, 2.0 * diff)
    if statistic == 0.0:
        return RLRTResult(0.0, 1.0, 0, np.empty(0))
    X = m_alt.frame.fixed.X
    mu = residual_eigenvalues(X, term)
    rng = np.random.default_rng(seed)
    sample = rlrt_null_sample(mu, X.shape[0], X.shape[1], int(nsim), rng)
    if np.quantile(sample, 0.9) == 0:
        warnings.warn(
            f"null distribution has mass {np.mean(sample == 0):.3g} at zero",
            MixedModelsWarning,
            stacklevel=2,
        )
    return _result(float(statistic), sample)


def _result(statistic: float, sample: np.ndarray) -> RLRTResult:
    """Return the test's result from the statistic and the simulated null sample.

    The p-value is the share of the sample above the statistic, or when there
    is none the bound 1 / nsim.
    """
    exceed = int(np.count_nonzero(statistic < sample))
    if exceed == 0:
        return RLRTResult(statistic, 1.0 / sample.size, sample.size, sample, p_is_bound=True)
    return RLRTResult(statistic, exceed / sample.size, sample.size, sample)
