"""Likelihood profiles and confidence intervals of lmer and glmer fits, as
lme4's ``profile.merMod`` / ``confint.merMod``.

The profiled parameters are lme4's: the standard deviations and correlations
of every random-effects term in θ order (``.sig01, .sig02, ...``: for
``(Days | Subject)`` the intercept SD, the correlation, the slope SD), the
residual SD ``.sigma``, then the fixed effects. For every parameter the
*ML* deviance (lme4 profiles the ML deviance also for REML fits: it refits
by ML first) is minimised over all the others at a grid of values, and the
signed square root of its increase over the optimum is the profile
``zeta``. Confidence bounds are where zeta crosses the normal quantiles.

Grid and interpolation follow lme4 exactly, because the bounds depend on
them (by more than 1e-3 relative for the coarse grid lme4 uses): the first
step is 1 % of the estimate (variance parameters) or ``delta`` standard
errors (fixed effects); each further step aims at a zeta increase of
``delta = sqrt(qchisq(1 - alphamax, nptot)) / 8`` by the secant of the last
two points, capped at ``maxmult`` times the last step, until |zeta| passes
that cutoff or a bound is hit; then a natural interpolating cubic spline of
zeta against the parameter (R's ``interpSpline``) is inverted piecewise
(R's ``backSpline``: cubic Hermite segments, quadratic or linear at the
ends), and the inverse evaluated at ±z. Where the inverse is undefined (the
profile ends at a bound before reaching z) the bound is the interval's end:
0 for a standard deviation, ±1 for a correlation.

The minimisations themselves are exact up to the optimizer tolerances
(BOBYQA from the previous grid point, as lme4), so the numbers agree with
lme4's to the accuracy of its own optimizer (about 1e-6 relative).

glmer fits (Laplace or adaptive quadrature; lme4's GLMM branch): there is no
``.sigma`` (families with a scale are refused, as lme4 refuses them) and
nothing is profiled out analytically: for every parameter, the fixed effects
included, the deviance is minimised over *all* the other parameters (SDs,
correlations and fixed effects) at each grid point, starting from the
previous point's values, and the first step is 1 % of the estimate for the
fixed effects too. The deviance is lme4's ``getME(fit, "devfun")``, whose
PIRLS starts every evaluation from the linear predictor of one joint PIRLS at
the fitted θ (see :func:`_profile_deviance_model`); zeta is measured from the
fit's deviance. lme4 minimises with the fit's optimizer (Nelder-Mead, whose
absolute tolerance is 1e-5 in the deviance); here BOBYQA to ~1e-9, so the
bounds agree with lme4's to about the accuracy of lme4's own minimisations
(where a profile has two branches, e.g. a slope SD at 0 or not, Nelder-Mead
can stay on the higher one and lme4's bound then differs from this one,
which is the lower deviance).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError
from mixedmodels.support.progress import FitProgress

__all__ = [
    "ProfileResult",
    "VarianceParameter",
    "back_spline",
    "confint",
    "parameter_names",
    "profile",
    "sdcor_from_covariances",
    "select_parameters",
    "variance_parameters",
    "wald_confint",
]


# ---------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class VarianceParameter:
    """One standard deviation or correlation of a random-effects term (or the
    residual SD): where it sits in θ and its two names."""

    term: int  # index in frame.terms; -1 for the residual SD
    row: int
    col: int
    lme4: str  # .sig01, ..., .sigma
    readable: str  # sd_(Intercept)|Subject, cor_Days.(Intercept)|Subject, sigma

    def unit_scale(self, model: Any) -> float:
        """The factor giving this parameter for unit-scale random-effects
        columns (an SD of column r times its scale, see
        ``ReTerm.column_scales``; 1 for correlations and σ)."""
        if self.kind != "sd":
            return 1.0
        return float(model.frame.terms[self.term].column_scales[self.row])

    @property
    def kind(self) -> str:
        if self.term < 0:
            return "sigma"
        return "sd" if self.row == self.col else "cor"

    @property
    def lower(self) -> float:
        return -1.0 if self.kind == "cor" else 0.0

    @property
    def upper(self) -> float:
        return 1.0 if self.kind == "cor" else math.inf


def _has_scale(model: Any) -> bool:
    """lme4's useSc: a residual SD (lmer, and glmer families with a scale)."""
    return bool(getattr(model, "has_residual", True))


def variance_parameters(model: Any) -> list[VarianceParameter]:
    """lme4's variance parameters of ``model`` in its order (θ order within
    every term, terms in the fit's order, then the residual SD)."""
    out: list[VarianceParameter] = []
    for j, term in enumerate(model.frame.terms):
        rows, cols = term.theta_rows_cols()
        for r, c in zip(rows, cols):
            if r == c:
                readable = f"sd_{term.cnames[r]}|{term.name}"
            else:
                readable = f"cor_{term.cnames[r]}.{term.cnames[c]}|{term.name}"
            out.append(VarianceParameter(j, int(r), int(c), f".sig{len(out) + 1:02d}", readable))
    if _has_scale(model):
        out.append(VarianceParameter(-1, 0, 0, ".sigma", "sigma"))
    return out


def parameter_names(model: Any, names: str = "lme4") -> list[str]:
    """Names of all the parameters of ``confint`` / ``profile``: the variance
    parameters (``names="lme4"``: ``.sig01``, ...; ``"readable"``:
    ``sd_(Intercept)|Subject``, ...) then the fixed effects."""
    style = _check_names(names)
    return [getattr(v, style) for v in variance_parameters(model)] + list(model.frame.fixed.names)


def _check_names(names: str) -> str:
    if names not in ("lme4", "readable"):
        raise MixedModelsError(f"names must be 'lme4' or 'readable', not {names!r}")
    return names


def sdcor_from_covariances(model: Any, covariances: Sequence[np.ndarray]) -> np.ndarray:
    """The SDs and correlations of every term, in θ order, from the terms'
    covariance matrices (a correlation with a zero SD is NaN)."""
    out = []
    for term, cov in zip(model.frame.terms, covariances):
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        rows, cols = term.theta_rows_cols()
        for r, c in zip(rows, cols):
            if r == c:
                out.append(sd[r])
            else:
                denom = sd[r] * sd[c]
                out.append(cov[r, c] / denom if denom > 0 else np.nan)
    return np.asarray(out, dtype=float)


def _sdcor(model: Any, theta: np.ndarray, sigma: float) -> np.ndarray:
    """[SDs and correlations, σ] of an lmer fit at (θ, σ)."""
    covs = [sigma**2 * lam @ lam.T for lam in model.lambdas(theta)]
    return np.append(sdcor_from_covariances(model, covs), sigma)


def _theta_from_sdcor(model: Any, values: np.ndarray) -> np.ndarray | None:
    """θ for [SDs and correlations, σ] (lme4's convProfParToPar): λ_j is the
    Cholesky factor of the term's covariance over σ². None when a term's
    correlations do not form a positive semi-definite matrix or σ <= 0."""
    sigma = values[-1]
    if not sigma > 0:
        return None
    parts, pos = [], 0
    for term in model.frame.terms:
        k = term.k
        rows, cols = term.theta_rows_cols()
        sd = np.zeros(k)
        R = np.eye(k)
        for r, c in zip(rows, cols):
            v = values[pos]
            pos += 1
            if r == c:
                sd[r] = v
            else:
                R[r, c] = R[c, r] = v
        L = _semidefinite_cholesky(R)
        if L is None:
            return None
        lam = (sd[:, None] * L) / sigma
        parts.append(lam[rows, cols])
    return np.concatenate(parts)


def _semidefinite_cholesky(R: np.ndarray, tol: float = 1e-10) -> np.ndarray | None:
    """Lower Cholesky factor of a correlation matrix that may be singular
    (|correlation| = 1: zero pivots allowed); None if it is not PSD."""
    k = R.shape[0]
    L = np.zeros((k, k))
    for j in range(k):
        d = R[j, j] - L[j, :j] @ L[j, :j]
        if d < -tol:
            return None
        d = math.sqrt(max(d, 0.0))
        L[j, j] = d
        for i in range(j + 1, k):
            num = R[i, j] - L[i, :j] @ L[j, :j]
            if d > 0:
                L[i, j] = num / d
            elif abs(num) > 1e-8:
                return None
    return L


def select_parameters(model: Any, parm: Any) -> list[int]:
    """Positions (in :func:`parameter_names` order) selected by ``parm``: None
    (all), a name or list of names in either naming style, integer positions
    (0-based), or lme4's ``"theta_"`` (variance parameters) / ``"beta_"``
    (fixed effects)."""
    lme4 = parameter_names(model, "lme4")
    readable = parameter_names(model, "readable")
    nvp = len(variance_parameters(model))
    total = len(lme4)
    if parm is None:
        return list(range(total))
    items = [parm] if isinstance(parm, (str, int, np.integer)) else list(parm)
    chosen: list[int] = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < total:
                raise MixedModelsError(
                    f"parameter position {item} is out of range: the model has {total} "
                    f"parameters ({', '.join(lme4)})"
                )
            chosen.append(int(item))
        elif item == "theta_":
            chosen.extend(range(nvp))
        elif item == "beta_":
            chosen.extend(range(nvp, total))
        elif item in lme4:
            chosen.append(lme4.index(item))
        elif item in readable:
            chosen.append(readable.index(item))
        else:
            raise MixedModelsError(
                f"unknown parameter {item!r}: the parameters are {', '.join(lme4)} "
                f"(or {', '.join(readable[:nvp])}), 'theta_' or 'beta_'"
            )
    return sorted(set(chosen))


# ---------------------------------------------------------------------------- confint


def confint(
    model: Any,
    parm: Any = None,
    method: str = "profile",
    level: float = 0.95,
    nsim: int = 500,
    seed: Any = None,
    names: str = "lme4",
    boot_type: str = "perc",
    **kwargs: Any,
) -> pd.DataFrame:
    """Confidence intervals of a fitted model's parameters (lme4's
    ``confint.merMod``); the implementation of the models' ``confint``
    methods (see :meth:`mixedmodels.LinearMixedModel.confint`).

    ``method`` is ``"profile"`` (lmer fits and glmer fits with nagq >= 1 and
    no scale parameter), ``"wald"`` or ``"boot"``;
    ``kwargs`` go to :func:`profile` or to
    :func:`mixedmodels.inference.bootstrap.bootstrap` (``n_jobs``,
    ``progress``, ``use_u``).
    """
    model._require_fit()
    _check_level(level)
    _check_names(names)
    key = str(method).lower()
    if key == "wald":
        return wald_confint(model, parm, level, names)
    if key == "profile":
        return profile(model, parm, names=names, **kwargs).confint(level)
    if key == "boot":
        from mixedmodels.inference.bootstrap import bootstrap

        boot = bootstrap(model, nsim=nsim, seed=seed, **kwargs)
        return boot.confint(boot_type, level, parm=parm, names=names)
    raise MixedModelsError(f"method must be 'profile', 'wald' or 'boot', not {method!r}")


# ---------------------------------------------------------------------------- Wald


def wald_confint(
    model: Any, parm: Any = None, level: float = 0.95, names: str = "lme4"
) -> pd.DataFrame:
    """Wald intervals β ± z se for the fixed effects; NaN rows for the
    variance parameters (lme4's ``confint(fit, method = "Wald")``)."""
    _check_level(level)
    positions = select_parameters(model, parm)
    labels = parameter_names(model, names)
    nvp = len(variance_parameters(model))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    beta = np.asarray(model.fixef, dtype=float)
    se = np.asarray(model.se, dtype=float)
    lower = np.full(len(labels), np.nan)
    upper = np.full(len(labels), np.nan)
    lower[nvp:] = beta - z * se
    upper[nvp:] = beta + z * se
    chosen = [labels[i] for i in positions]
    return _interval_frame(chosen, lower[positions], upper[positions], level, "Wald")


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise MixedModelsError(f"level must be strictly between 0 and 1, not {level!r}")


def _interval_frame(labels, lower, upper, level: float, method: str) -> pd.DataFrame:
    out = pd.DataFrame(
        {"lower": np.asarray(lower, dtype=float), "upper": np.asarray(upper, dtype=float)},
        index=pd.Index(labels, name="parameter"),
    )
    out.attrs["level"] = level
    out.attrs["method"] = method
    return out


# ---------------------------------------------------------------------------- splines


@dataclass
class _PolySpline:
    """A piecewise cubic as R's ``polySpline``: on (knots[i], knots[i+1]] the
    polynomial Σ_d coef[i, d] (x - knots[i])^d; NaN outside the knots."""

    knots: np.ndarray
    coef: np.ndarray  # (nk, 4)

    def __call__(self, x: Any) -> np.ndarray:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        k = self.knots
        i = np.searchsorted(k, x, side="left") - 1  # right-closed intervals, as R's cut()
        i = np.where(x == k[0], 0, i)
        inside = (i >= 0) & (i < len(k) - 1) & np.isfinite(x)
        j = np.clip(i, 0, len(k) - 1)
        dx = x - k[j]
        c = self.coef[j]
        y = ((c[:, 3] * dx + c[:, 2]) * dx + c[:, 1]) * dx + c[:, 0]
        return np.where(inside, y, np.nan)


def forward_spline(x: np.ndarray, zeta: np.ndarray):
    """R's ``interpSpline(zeta ~ x)``: the natural interpolating cubic spline
    (a scipy ``CubicSpline``; linear beyond the knots, as R's npolySpline)."""
    from scipy.interpolate import CubicSpline

    return CubicSpline(x, zeta, bc_type="natural", extrapolate=True)


def back_spline(x: np.ndarray, zeta: np.ndarray) -> _PolySpline:
    """R's ``backSpline`` of ``interpSpline(zeta ~ x)``: the inverse, x as a
    function of zeta, cubic on each interval between knots with the values and
    the reciprocal slopes of the forward spline at both ends, quadratic on the
    first and last intervals (linear where the quadratic would bend the wrong
    way). Raises ``ValueError`` when zeta is not monotone at the knots."""
    x = np.asarray(x, dtype=float)
    zeta = np.asarray(zeta, dtype=float)
    nk = len(x)
    kdiff = np.diff(x)
    if np.any(kdiff <= 0):
        raise ValueError("knot positions must be strictly increasing")
    slope = forward_spline(x, zeta)(x, 1)
    adiff = np.diff(zeta)
    if np.all(adiff < 0):
        reverse = True
    elif np.all(adiff > 0):
        reverse = False
    else:
        raise ValueError("spline must be monotone")
    b = np.zeros((nk, 4))
    b[:, 0] = x
    b[:, 1] = 1.0 / slope
    for i in range(nk - 1):
        a = np.array([[adiff[i] ** 2, adiff[i] ** 3], [2 * adiff[i], 3 * adiff[i] ** 2]])
        rhs = np.array([kdiff[i] - adiff[i] * b[i, 1], b[i + 1, 1] - b[i, 1]])
        b[i, 2:4] = np.linalg.solve(a, rhs)
    b[nk - 1, 1:4] = np.nan
    last = nk - 2
    if nk > 2:
        b[0, 3] = b[last, 3] = 0.0
        a = np.array([[adiff[0], adiff[0] ** 2], [1.0, 2 * adiff[0]]])
        b[0, 1:3] = np.linalg.solve(a, np.array([kdiff[0], 1.0 / slope[1]]))
        b[last, 2] = (kdiff[last] - adiff[last] * b[last, 1]) / adiff[last] ** 2
    if b[0, 2] > 0:
        b[0, 2] = 0.0
        b[0, 1] = kdiff[0] / adiff[0]
    if b[last, 2] < 0:
        b[last, 2] = 0.0
        b[last, 1] = kdiff[last] / adiff[last]
    if reverse:
        return _PolySpline(zeta[::-1].copy(), b[::-1].copy())
    return _PolySpline(zeta.copy(), b)


# ---------------------------------------------------------------------------- result


@dataclass
class ProfileResult:
    """The profiles of a fit: lme4's ``thpr`` object.

    Attributes
    ----------
    table : DataFrame
        One row per evaluated point: ``parameter`` (the profiled one),
        ``value`` (its value), ``zeta`` (signed root of the ML deviance
        increase), then the values of every parameter there (the profiled one
        included), named as ``names``.
    names : {"lme4", "readable"}
        The naming of the parameters.
    estimates : Series
        The ML estimates (zeta = 0).
    """

    table: pd.DataFrame
    names: str
    estimates: pd.Series
    bounds: dict[str, tuple[float, float]] = field(repr=False)
    _back: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def parameters(self) -> list[str]:
        """The profiled parameters, in lme4's order."""
        return list(dict.fromkeys(self.table["parameter"]))

    def points(self, parameter: str) -> pd.DataFrame:
        """The (value, zeta) points of one parameter's profile, by value."""
        if parameter not in self.parameters:
            raise MixedModelsError(
                f"{parameter!r} was not profiled; the profiled parameters are "
                + ", ".join(self.parameters)
            )
        rows = self.table[self.table["parameter"] == parameter]
        return rows[["value", "zeta"]].reset_index(drop=True)

    def _inverse(self, parameter: str):
        if parameter not in self._back:
            pts = self.points(parameter).dropna()
            try:
                self._back[parameter] = back_spline(pts["value"].to_numpy(), pts["zeta"].to_numpy())
            except (ValueError, np.linalg.LinAlgError):
                self._back[parameter] = None
        return self._back[parameter]

    def confint(
        self, level: float = 0.95, parm: Any = None, non_mono_tol: float = 1e-2
    ) -> pd.DataFrame:
        """Profile confidence intervals (lme4's ``confint.thpr``): the inverse
        spline at ∓z; where it is undefined, the parameter's bound (0 for SDs,
        ±1 for correlations). A profile whose spline cannot be inverted falls
        back to linear interpolation of the points, with a warning (NaN if the
        points decrease by more than ``non_mono_tol``)."""
        _check_level(level)
        wanted = None if parm is None else set(_as_list(parm))
        names = [p for p in self.parameters if wanted is None or p in wanted]
        z = NormalDist().inv_cdf((1 - level) / 2)
        lower, upper = [], []
        for name in names:
            lo, hi = self._bounds_for(name, np.array([z, -z]), non_mono_tol)
            lower.append(lo)
            upper.append(hi)
        return _interval_frame(names, lower, upper, level, "profile")

    def _bounds_for(self, name: str, zeta: np.ndarray, non_mono_tol: float) -> tuple[float, float]:
        spline = self._inverse(name)
        if spline is not None:
            p = spline(zeta)
        else:
            pts = self.points(name).dropna()
            if pts.empty:
                warnings.warn(f"bad profile for {name}", stacklevel=3)
                return np.nan, np.nan
            if np.min(np.diff(pts["zeta"].to_numpy())) < -non_mono_tol:
                warnings.warn(f"non-monotonic profile for {name}", stacklevel=3)
                return np.nan, np.nan
            warnings.warn(
                f"bad spline fit for {name}: falling back to linear interpolation", stacklevel=3
            )
            p = np.interp(zeta, pts["zeta"], pts["value"], left=np.nan, right=np.nan)
        lo_bound, hi_bound = self.bounds.get(name, (np.nan, np.nan))
        lo = lo_bound if np.isnan(p[0]) else p[0]
        hi = hi_bound if np.isnan(p[1]) else p[1]
        return float(lo), float(hi)

    def plot(self, parameters: Sequence[str] | None = None, levels=(0.5, 0.8, 0.9, 0.95, 0.99),
             absolute: bool = False, ax=None):
        """Profile zeta plots (lme4's ``xyplot`` of a profile), one panel per
        parameter: the interpolating spline, the evaluated points and the
        horizontal lines of the ``levels`` confidence bounds. Needs matplotlib.

        Returns the matplotlib figure.
        """
        import matplotlib.pyplot as plt

        names = self.parameters if parameters is None else list(parameters)
        if ax is None:
            ncol = min(3, len(names))
            nrow = math.ceil(len(names) / ncol)
            fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow), squeeze=False)
            axes = axes.ravel()
        else:
            axes = np.atleast_1d(ax).ravel()
            fig = axes[0].figure
        cuts = [NormalDist().inv_cdf(0.5 + c / 2) for c in levels]
        for axis, name in zip(axes, names):
            pts = self.points(name).dropna()
            x, zeta = pts["value"].to_numpy(), pts["zeta"].to_numpy()
            grid = np.linspace(x.min(), x.max(), 201) if len(x) > 1 else x
            curve = forward_spline(x, zeta)(grid) if len(x) >= 3 else np.interp(grid, x, zeta)
            axis.plot(grid, np.abs(curve) if absolute else curve, color="C0")
            axis.plot(x, np.abs(zeta) if absolute else zeta, "+", color="C0")
            for c in cuts:
                for sign in ((1,) if absolute else (-1, 1)):
                    axis.axhline(sign * c, color="0.7", lw=0.6)
            axis.set_title(name, fontsize=9)
            axis.set_ylabel("|ζ|" if absolute else "ζ")
        for axis in axes[len(names):]:
            axis.set_visible(False)
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        return (
            f"<ProfileResult: {len(self.parameters)} parameters, {len(self.table)} points; "
            "use .confint(), .table, .plot()>"
        )


def _as_list(parm: Any) -> list:
    return [parm] if isinstance(parm, str) else list(parm)


# ---------------------------------------------------------------------------- profiling


class _ProfileProgress(FitProgress):
    """Progress of a profile: the parameter being profiled and the points so far."""

    def __init__(self, total: int, **kwargs: Any):
        super().__init__("profile", **kwargs)
        self.total = total
        self.current = ""
        self.index = 0

    def text(self, now: float | None = None) -> str:
        points, _ = self._state
        elapsed = (self.clock() if now is None else now) - self.start
        return (
            f"profile: parameter {self.index} of {self.total} ({self.current}), "
            f"{points} points, {elapsed:.1f} s"
        )


def _ml_model(model: Any) -> Any:
    """The fit by maximum likelihood (lme4's ``refitML``): the model itself for
    ML fits, otherwise a copy refitted from the REML θ."""
    if not model.reml:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model._clone(reml=False).fit(start=model._theta)


class _Profiler:
    """lme4's profile.merMod for one lmer fit (see the module docstring)."""

    def __init__(self, model: Any, alphamax: float, maxpts: int, delta: float | None,
                 delta_cutoff: float, maxmult: float, devtol: float, names: str,
                 progress: _ProfileProgress | None):
        self.model = _ml_model(model)
        m = self.model
        self._setup(m, names)
        self.opt = np.concatenate([_sdcor(m, m._theta, m.sigma), m.beta])
        self.base = m._objective  # the ML deviance
        # the minimisation at a point runs over the variance parameters only
        # (β is profiled out), and only they have bounds in lme4's result
        self.nstart = self.nbounded = self.nvp
        self._grid(alphamax, maxpts, delta, delta_cutoff, maxmult, devtol, progress)

    def _setup(self, m: Any, names: str) -> None:
        self.vpars = variance_parameters(m)
        self.nvp = len(self.vpars)
        self.p = len(m.beta)
        self.names = parameter_names(m, names)
        self.style = names
        self.se = np.asarray(m.se, dtype=float)
        self.lower = np.array([v.lower for v in self.vpars] + [-np.inf] * self.p)
        self.upper = np.array([v.upper for v in self.vpars] + [np.inf] * self.p)

    def _grid(self, alphamax: float, maxpts: int, delta: float | None, delta_cutoff: float,
              maxmult: float, devtol: float, progress: _ProfileProgress | None) -> None:
        """lme4's grid controls: the cutoff sqrt(qchisq(1 - alphamax, nptot)) and the zeta step."""
        from scipy.stats import chi2

        nptot = self.nvp + self.p
        self.cutoff = math.sqrt(chi2.ppf(1 - alphamax, nptot))
        self.delta = self.cutoff * delta_cutoff if delta is None else float(delta)
        self.maxpts = maxpts
        self.maxmult = maxmult
        self.devtol = devtol
        self.progress = progress
        self.points = 0
        self.notes: list[str] = []

    # -- deviance in the SD/correlation scale (lme4's devfun2) -------------------------

    def deviance(self, values: np.ndarray) -> float:
        """ML deviance at [SDs and correlations, σ] with β profiled out:
        log|Λ'Z'ZΛ + I| - log|W| + r²/σ² + n log(2πσ²) (lme4's devfun2)."""
        m = self.model
        theta = _theta_from_sdcor(m, values)
        if theta is None:
            return np.inf
        f = m._system.factor(m.lambdas(theta))
        if f is None:
            return np.inf
        sigma2 = values[-1] ** 2
        n = m._n_eff
        return float(
            f.logdet_re() - m._ldW + f.pwrss() / sigma2 + n * math.log(2 * math.pi * sigma2)
        )

    def _beta_at(self, values: np.ndarray) -> np.ndarray:
        m = self.model
        f = m._system.factor(m.lambdas(_theta_from_sdcor(m, values)))
        return m._system.solve(f)[0]

    def _minimise(self, w: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray] | None:
        """min over the other parameters of the point (the variance
        parameters; for glmer fits the fixed effects too) with parameter ``w``
        at ``value``: (deviance, all those parameters); None on failure."""
        import nlopt

        nvp = self.nstart
        others = [i for i in range(nvp) if i != w]
        full = np.empty(nvp)
        full[w] = value

        best = [np.inf, None]

        def objective(x: np.ndarray, grad: np.ndarray) -> float:
            full[others] = x
            dev = self.deviance(full)
            if dev < best[0]:
                best[0], best[1] = dev, x.copy()
            return dev if np.isfinite(dev) else 1e300

        if not others:
            dev = objective(np.empty(0), np.empty(0))
            return (dev, full.copy()) if dev < 1e300 else None
        lo, hi = self.lower[others], self.upper[others]
        x0 = np.clip(np.asarray(start, dtype=float), lo, hi)
        opt = nlopt.opt(nlopt.LN_BOBYQA, len(others))
        opt.set_lower_bounds(lo)
        opt.set_upper_bounds(np.where(np.isfinite(hi), hi, 1e300))
        opt.set_min_objective(objective)
        self._tolerances(opt)
        span = np.where(np.isfinite(hi), hi - lo, np.inf)
        step = np.minimum(self._initial_step(others, x0), 0.25 * span)
        opt.set_initial_step(step)
        try:
            opt.optimize(x0)
        except nlopt.RoundoffLimited:
            pass  # a flat objective (a bound): the best point is the answer
        except (ValueError, RuntimeError):
            return None
        if not best[0] < 1e300:
            return None
        full[others] = best[1]
        return float(best[0]), full.copy()

    def _tolerances(self, opt: Any) -> None:
        opt.set_ftol_abs(1e-11)
        opt.set_xtol_rel(1e-10)
        opt.set_maxeval(20_000)

    def _initial_step(self, others: list[int], x0: np.ndarray) -> np.ndarray:
        """BOBYQA's initial steps for the parameters ``others`` from ``x0``
        (the floor for unit-scale columns: an SD of a slope on a covariate in
        huge units is tiny)."""
        scale = np.array([self.vpars[i].unit_scale(self.model) for i in others])
        return np.maximum(0.1 * np.abs(x0), 1e-2 / scale)

    def _zeta_row(self, pw: float, dev: float, x: float) -> float:
        devdiff = dev - self.base
        if devdiff < -self.devtol:
            raise MixedModelsError(
                f"profiling detected a lower deviance than the fit's ({abs(devdiff):.3g} "
                "lower): the fit had not converged; refit from the profile's parameters"
            )
        if devdiff <= 0:
            devdiff = self.devtol
        return float(np.sign(x - pw) * math.sqrt(devdiff))

    def _variance_point(self, w: int, x: float, start: np.ndarray) -> np.ndarray:
        """One row [zeta, all parameters] of the profile of variance parameter ``w``."""
        row = np.full(1 + self.nvp + self.p, np.nan)
        res = self._minimise(w, x, start)
        self._tick()
        if res is None:
            warnings.warn("NAs detected in profiling", stacklevel=4)
            return row
        dev, values = res
        row[0] = self._zeta_row(self.opt[w], dev, x)
        row[1:] = self._all_parameters(values)
        return row

    def _all_parameters(self, values: np.ndarray) -> np.ndarray:
        """Every parameter at a profile point from the minimiser's values:
        the variance parameters, then β at them (β is profiled out)."""
        return np.concatenate([values, self._beta_at(values)])

    def _tick(self) -> None:
        self.points += 1
        if self.progress is not None:
            self.progress(self.points, float("nan"))

    # -- lme4's grid ------------------------------------------------------------------

    def _next(self, mat: list[np.ndarray], col: int, lower: float, upper: float,
              minstep: float = 1e-6) -> float:
        (z1, p1), (z2, p2) = [(r[0], r[col]) for r in mat[-2:]]
        num = p2 - p1
        denom = z2 - z1
        if not np.isfinite(denom) or denom == 0:
            self.notes.append("last two rows have identical or NA zeta values: using minstep")
            step = minstep
        else:
            step = self.delta * num / denom
            if step < 0:
                self.notes.append("unexpected decrease in profile: using minstep")
                step = minstep
            elif abs(step) > abs(self.maxmult * num):
                step = math.copysign(abs(self.maxmult * num), step)
        return float(min(upper, max(lower, p2 + np.sign(num) * step)))

    def _fill(
        self, mat: list[np.ndarray], col: int, lower: float, upper: float, point
    ) -> list[np.ndarray]:
        """lme4's fillmat: extend the two starting rows until |zeta| passes
        the cutoff, a bound is reached or ``maxpts`` rows exist."""
        while len(mat) < self.maxpts:
            last = mat[-1]
            if not (np.isfinite(last[col]) and lower < last[col] < upper):
                break
            if not (np.isfinite(last[0]) and abs(last[0]) <= self.cutoff):
                break
            x = self._next(mat, col, lower, upper)
            mat.append(point(x, last[1 : 1 + self.nstart]))  # lme4's startmethod "prev"
        return [r for r in mat if np.isfinite(r[0])]

    def _opt_row(self) -> np.ndarray:
        return np.concatenate([[0.0], self.opt])

    def variance_profile(self, w: int) -> list[np.ndarray]:
        pw = self.opt[w]
        lowcut, upcut = self.lower[w], self.upper[w]

        def point(x: float, start: np.ndarray) -> np.ndarray:
            return self._variance_point(w, x, np.delete(start, w))

        shift = 1e-3 if pw == 0 else pw * 1.01
        first = point(shift, self.opt[: self.nstart])
        upper_rows = self._fill([self._opt_row(), first], 1 + w, lowcut, upcut, point)
        if pw > lowcut:
            lower_rows = self._fill([first, self._opt_row()], 1 + w, lowcut, upcut, point)
        else:
            lower_rows = [first, self._opt_row()]
        return upper_rows + lower_rows

    def fixed_profile(self, j: int) -> list[np.ndarray]:
        """Profile of fixed effect ``j``: the model without column j and with
        β_j x_j moved to the response, fitted by ML at every β_j."""
        m = self.model
        m._require_rows("profiling a fixed effect")
        reduced = m._clone(drop_fixed=j)
        xj = m.frame.fixed.X[:, j]
        y = m.frame.y
        est, col = self.opt[self.nvp + j], 1 + self.nvp + j
        state = {"theta": m._theta}

        def point(fw: float, _start: np.ndarray) -> np.ndarray:
            row = np.full(1 + self.nvp + self.p, np.nan)
            try:
                start = m._refit_start(state["theta"])
                fit = reduced._clone(y=y - fw * xj).fit(start=start)
            except (MixedModelsError, np.linalg.LinAlgError, FloatingPointError):
                self._tick()
                return row
            self._tick()
            state["theta"] = fit._theta
            row[0] = self._zeta_row(est, fit._objective, fw)
            row[1 : 1 + self.nvp] = _sdcor(fit, fit._theta, fit.sigma)
            row[1 + self.nvp :] = np.insert(fit.beta, j, fw)
            return row

        first = point(est + self.delta * self.se[j], self.opt[: self.nvp])
        state["theta"] = m._theta
        upper_rows = self._fill([self._opt_row(), first], col, -np.inf, np.inf, point)
        state["theta"] = m._theta
        lower_rows = self._fill([first, self._opt_row()], col, -np.inf, np.inf, point)
        return upper_rows + lower_rows


def _check_glmer(model: Any) -> None:
    """The glmer fits that can be profiled: a deviance over (θ, β) (not
    nagq = 0) and no scale parameter (lme4 refuses those too)."""
    if getattr(model, "nagq", 1) == 0:
        raise MixedModelsError(
            "profile needs the Laplace or quadrature deviance of a glmer fit over (θ, β); "
            "this is an nagq = 0 fit (β found by PIRLS with the modes). Refit with nagq=1 "
            "or use confint(method='Wald') or method='boot'"
        )
    if model.has_residual:
        raise MixedModelsError(
            f"profile cannot handle the {model.family.name} family: glmer families with a "
            "scale parameter cannot be profiled (neither by lme4); use confint(method='Wald') "
            "or method='boot'"
        )


def _profile_deviance_model(model: Any) -> Any:
    """A shallow copy of a glmer fit whose ``objective`` is the deviance lme4's
    profile minimises (``getME(fit, "devfun")``).

    lme4 builds that function afresh: one joint PIRLS (modes and β, the
    nAGQ = 0 step) at the *fitted* θ from ``mustart``, whose linear predictor
    starts every evaluation's PIRLS. The fit's own evaluations start from the
    end of its nAGQ = 0 stage instead; with lme4's PIRLS tolerance the two
    differ by ~1e-6 in the deviance, so the copy starts from lme4's."""
    dev = copy.copy(model)
    e = model._engine
    dev._eta_start = e.offset + model.family.linkfun(model._init.mustart)
    dev._eta_start = dev._modes(model._theta, None).eta
    return dev


class _GlmerProfiler(_Profiler):
    """lme4's profile.merMod for a glmer fit: every parameter, fixed effects
    included, is profiled the same way, the deviance minimised over all the
    other parameters (SDs, correlations and fixed effects) from the previous
    grid point; the first step is 1 % of the estimate for every parameter."""

    # lme4 stops ("not numerically consistent") when its profile deviance at
    # the estimates differs from the fit's by more than this (relative)
    DEVMATCHTOL = 1e-5

    def __init__(self, model: Any, alphamax: float, maxpts: int, delta: float | None,
                 delta_cutoff: float, maxmult: float, devtol: float, names: str,
                 progress: _ProfileProgress | None):
        _check_glmer(model)
        self.model = m = model
        self.dev_model = _profile_deviance_model(m)
        self._setup(m, names)
        self.opt = np.concatenate([_sdcor(m, m._theta, 1.0)[:-1], m.beta])
        self.base = float(m.deviance)
        self.nstart = self.nbounded = self.nvp + self.p
        self._grid(alphamax, maxpts, delta, delta_cutoff, maxmult, devtol, progress)
        self._check_base()

    def deviance(self, values: np.ndarray) -> float:
        """The Laplace (or quadrature) deviance at [SDs and correlations, β]."""
        theta = _theta_from_sdcor(self.model, np.append(values[: self.nvp], 1.0))
        if theta is None:
            return np.inf
        try:
            dev = self.dev_model.objective(np.concatenate([theta, values[self.nvp :]]))
        except (MixedModelsError, ValueError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf  # PIRLS failed there (the engine's own errors are caught inside)
        return float(dev) if np.isfinite(dev) else np.inf

    def _check_base(self) -> None:
        at_opt = self.deviance(self.opt)
        if not abs(at_opt / self.base - 1) <= self.DEVMATCHTOL:
            raise MixedModelsError(
                f"the profile deviance at the estimates ({at_opt:.10g}) does not match the "
                f"fit's ({self.base:.10g}): the fit has not converged; refit it"
            )

    def _tolerances(self, opt: Any) -> None:
        # PIRLS stops at a relative change of 1e-7, so the deviance is only
        # smooth to ~1e-8: tighter tolerances would only chase that noise
        opt.set_ftol_abs(1e-9)
        opt.set_xtol_rel(1e-8)
        opt.set_maxeval(5_000)

    def _initial_step(self, others: list[int], x0: np.ndarray) -> np.ndarray:
        """A tenth of a standard error for the fixed effects, 5 % of the value
        (at least 0.01) for SDs and correlations: from the previous grid point
        the other parameters move by a fraction of their uncertainty."""
        idx = np.asarray(others)
        se = np.concatenate([np.full(self.nvp, np.nan), self.se])[idx]
        m = self.model  # the floor for unit-scale columns of Z and X (see param_scale)
        unit = np.concatenate([[v.unit_scale(m) for v in self.vpars], m.param_scale[m.ntheta :]])
        relative = np.maximum(0.05 * np.abs(x0), 1e-2 / unit[idx])
        # no usable standard error (a Hessian not positive definite): relative steps
        usable = (idx >= self.nvp) & np.isfinite(se) & (se > 0)
        return np.where(usable, 0.1 * np.where(usable, se, 1.0), relative)

    def _all_parameters(self, values: np.ndarray) -> np.ndarray:
        """The minimiser's values are already every parameter (β included)."""
        return values

    def fixed_profile(self, j: int) -> list[np.ndarray]:
        """For glmer fits lme4 profiles a fixed effect as a variance parameter."""
        return self.variance_profile(self.nvp + j)


def profile(
    model: Any,
    which: Any = None,
    *,
    alphamax: float = 0.01,
    maxpts: int = 100,
    delta: float | None = None,
    delta_cutoff: float = 1 / 8,
    maxmult: float = 10.0,
    devtol: float = 1e-9,
    names: str = "lme4",
    progress: bool = False,
) -> ProfileResult:
    """Profile the ML deviance of an lmer fit, or the Laplace / quadrature
    deviance of a glmer fit (lme4's ``profile.merMod``).

    Parameters
    ----------
    model : LinearMixedModel or GeneralizedLinearMixedModel
        A fitted lmer model (a REML fit is refitted by ML first, as lme4 does)
        or glmer model (nagq >= 1, a family without a scale parameter:
        binomial, Poisson; others raise :class:`MixedModelsError`).
    which : None, str, int or list
        Parameters to profile (see :func:`select_parameters`): default all.
    alphamax, maxpts, delta, delta_cutoff, maxmult, devtol
        lme4's grid controls: the profile extends to
        |zeta| > sqrt(qchisq(1 - alphamax, nptot)) in steps of ``delta`` in zeta
        (default cutoff × ``delta_cutoff``), at most ``maxpts`` points per
        direction, each step at most ``maxmult`` times the previous one.
    names : {"lme4", "readable"}
        ``.sig01``-style or ``sd_(Intercept)|Subject``-style names.
    progress : bool
        Show the parameter being profiled and the points done.

    Returns
    -------
    ProfileResult
    """
    kind = getattr(model, "model_kind", "")
    if kind not in ("lmer", "glmer"):
        raise MixedModelsError(
            f"profile is implemented for lmer and glmer fits, not for {type(model).__name__}; "
            "use confint(method='Wald') or method='boot'"
        )
    model._require_fit()
    _check_names(names)
    if kind == "glmer":
        _check_glmer(model)  # before any work
    profiler = _GlmerProfiler if kind == "glmer" else _Profiler
    positions = select_parameters(model, which)
    monitor = _ProfileProgress(len(positions)) if progress else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prof = profiler(model, alphamax, maxpts, delta, delta_cutoff, maxmult, devtol,
                            names, monitor)
        return _run(prof, positions, monitor)
    finally:
        if monitor is not None:
            monitor.close()


def _run(prof: _Profiler, positions: list[int], monitor) -> ProfileResult:
    frames = []
    for count, pos in enumerate(positions, start=1):
        name = prof.names[pos]
        if monitor is not None:
            monitor.index, monitor.current = count, name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if pos < prof.nvp:
                rows = prof.variance_profile(pos)
            else:
                rows = prof.fixed_profile(pos - prof.nvp)
        mat = _unique_rows(rows)  # lme4: unique(rbind(upper, lower))
        mat = mat[np.argsort(mat[:, 1 + pos], kind="stable")]
        frame = pd.DataFrame(mat[:, 1:], columns=prof.names)
        frame.insert(0, "zeta", mat[:, 0])
        frame.insert(0, "value", mat[:, 1 + pos])
        frame.insert(0, "parameter", name)
        frames.append(frame)
    for note in dict.fromkeys(prof.notes):
        warnings.warn(note, stacklevel=3)
    table = pd.concat(frames, ignore_index=True)
    bounds = {prof.names[i]: (prof.lower[i], prof.upper[i]) for i in range(prof.nbounded)}
    estimates = pd.Series(prof.opt, index=prof.names, name="estimate")
    return ProfileResult(table=table, names=prof.style, estimates=estimates, bounds=bounds)


def _unique_rows(rows: list[np.ndarray]) -> np.ndarray:
    """The distinct rows in their first-seen order (NaN equal to NaN, as R's unique)."""
    seen: dict[tuple, np.ndarray] = {}
    for r in rows:
        key = tuple(np.where(np.isnan(r), np.inf, r).tolist()) + tuple(np.isnan(r).tolist())
        seen.setdefault(key, r)
    return np.array(list(seen.values()))
