"""Likelihood profiles and confidence intervals of lmer and glmer fits.

As lme4's ``profile.merMod`` / ``confint.merMod``.

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
the fitted θ (see :func:`profile_deviance_model`); zeta is measured from the
fit's deviance. lme4 minimises with the fit's optimizer (Nelder-Mead, whose
absolute tolerance is 1e-5 in the deviance); here BOBYQA to ~1e-9, so the
bounds agree with lme4's to about the accuracy of lme4's own minimisations
(where a profile has two branches, e.g. a slope SD at 0 or not, Nelder-Mead
can stay on the higher one and lme4's bound then differs from this one,
which is the lower deviance).
"""


from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError
from mixedmodels.inference.parameters import (
    check_names,
    parameter_names,
    sdcor_at,
    select_parameters,
    theta_from_sdcor,
    variance_parameters,
)
from mixedmodels.inference.profile_result import ProfileResult
from mixedmodels.support.progress import FitProgress

__all__ = ["ProfileProgress", "profile", "profile_deviance_model"]


# ---------------------------------------------------------------------------- profiling


class ProfileProgress(FitProgress):
    """Progress of a profile: the parameter being profiled and the points so far."""

    def __init__(self, total: int, **kwargs: Any):
        super().__init__("profile", **kwargs)
        self.total = total
        self.current = ""
        self.index = 0

    def text(self, now: float | None = None) -> str:
        """Return the progress line: the parameter being profiled, the points and the seconds."""
        points, _ = self._state
        elapsed = (self.clock() if now is None else now) - self.start
        return (
            f"profile: parameter {self.index} of {self.total} ({self.current}), "
            f"{points} points, {elapsed:.1f} s"
        )


def _ml_model(model: Any) -> Any:
    """Return the fit by maximum likelihood (lme4's ``refitML``).

    The model itself for ML fits, otherwise a copy refitted from the REML θ.
    """
    if not model.reml:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.clone(reml=False).fit(start=model.theta_vector)


class _Profiler:
    """lme4's profile.merMod for one lmer fit (see the module docstring)."""

    def __init__(self, model: Any, alphamax: float, maxpts: int, delta: float | None,
                 delta_cutoff: float, maxmult: float, devtol: float, names: str,
                 progress: ProfileProgress | None):
        self.model = _ml_model(model)
        m = self.model
        self._setup(m, names)
        self.opt = np.concatenate([sdcor_at(m, m.theta_vector, m.sigma), m.beta])
        self.base = m.fitted_objective  # the ML deviance
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
              maxmult: float, devtol: float, progress: ProfileProgress | None) -> None:
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
        """Return the ML deviance at [SDs and correlations, σ] with β profiled out.

        log|Λ'Z'ZΛ + I| - log|W| + r²/σ² + n log(2πσ²) (lme4's devfun2); inf
        where the values give no valid θ or factor.
        """
        m = self.model
        theta = theta_from_sdcor(m, values)
        if theta is None:
            return np.inf
        f = m.system.factor(m.lambdas(theta))
        if f is None:
            return np.inf
        sigma2 = values[-1] ** 2
        n = m.n_eff
        return float(
            f.logdet_re() - m.log_det_weights + f.pwrss() / sigma2 + n * math.log(2 * math.pi * sigma2)
        )

    def _beta_at(self, values: np.ndarray) -> np.ndarray:
        m = self.model
        f = m.system.factor(m.lambdas(theta_from_sdcor(m, values)))
        return m.system.solve(f)[0]

    def _minimise(self, w: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray] | None:
        """Minimise the deviance over the other parameters with parameter ``w`` at ``value``.

        The other parameters are the variance parameters (for glmer fits the
        fixed effects too). Returns (deviance, all those parameters), or None
        on failure.
        """
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
        """Return BOBYQA's initial steps for the parameters ``others`` from ``x0``.

        A tenth of the value, floored for unit-scale columns: an SD of a slope
        on a covariate in huge units is tiny.
        """
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
        """Return one row [zeta, all parameters] of the profile of variance parameter ``w``."""
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
        """Return every parameter at a profile point from the minimiser's values.

        The variance parameters, then β at them (β is profiled out).
        """
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
        """Extend the two starting rows as lme4's fillmat does.

        Rows are added until |zeta| passes the cutoff, a bound is reached or
        ``maxpts`` rows exist; rows without a finite zeta are dropped.
        """
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
        """Return the profile rows [zeta, all parameters] of variance parameter ``w``.

        Upwards from the estimate, then downwards unless the estimate is at the
        lower bound; the first step is 1 % of the estimate (1e-3 from 0).
        """
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
        """Return the profile rows of fixed effect ``j``.

        The model without column j and with β_j x_j moved to the response,
        fitted by ML at every β_j.
        """
        m = self.model
        m.require_rows("profiling a fixed effect")
        reduced = m.clone(drop_fixed=j)
        xj = m.frame.fixed.X[:, j]
        y = m.frame.y
        est, col = self.opt[self.nvp + j], 1 + self.nvp + j
        state = {"theta": m.theta_vector}

        def point(fw: float, _start: np.ndarray) -> np.ndarray:
            row = np.full(1 + self.nvp + self.p, np.nan)
            try:
                start = m.refit_start(state["theta"])
                fit = reduced.clone(y=y - fw * xj).fit(start=start)
            except (MixedModelsError, np.linalg.LinAlgError, FloatingPointError):
                self._tick()
                return row
            self._tick()
            state["theta"] = fit.theta_vector
            row[0] = self._zeta_row(est, fit.fitted_objective, fw)
            row[1 : 1 + self.nvp] = sdcor_at(fit, fit.theta_vector, fit.sigma)
            row[1 + self.nvp :] = np.insert(fit.beta, j, fw)
            return row

        first = point(est + self.delta * self.se[j], self.opt[: self.nvp])
        state["theta"] = m.theta_vector
        upper_rows = self._fill([self._opt_row(), first], col, -np.inf, np.inf, point)
        state["theta"] = m.theta_vector
        lower_rows = self._fill([first, self._opt_row()], col, -np.inf, np.inf, point)
        return upper_rows + lower_rows


def _check_glmer(model: Any) -> None:
    """Refuse the glmer fits that cannot be profiled.

    A profile needs a deviance over (θ, β) (not nagq = 0) and no scale
    parameter (lme4 refuses those too).
    """
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


def profile_deviance_model(model: Any) -> Any:
    """Return a shallow copy of a glmer fit whose ``objective`` is the deviance of lme4's profile.

    That is the deviance lme4's profile minimises, ``getME(fit, "devfun")``.

    lme4 builds that function afresh: one joint PIRLS (modes and β, the
    nAGQ = 0 step) at the *fitted* θ from ``mustart``, whose linear predictor
    starts every evaluation's PIRLS. The fit's own evaluations start from the
    end of its nAGQ = 0 stage instead; with lme4's PIRLS tolerance the two
    differ by ~1e-6 in the deviance, so the copy starts from lme4's.
    """
    return model.devfun_copy()


class _GlmerProfiler(_Profiler):
    """lme4's profile.merMod for a glmer fit.

    Every parameter, fixed effects included, is profiled the same way, the
    deviance minimised over all the other parameters (SDs, correlations and
    fixed effects) from the previous grid point; the first step is 1 % of the
    estimate for every parameter.
    """

    # lme4 stops ("not numerically consistent") when its profile deviance at
    # the estimates differs from the fit's by more than this (relative)
    DEVMATCHTOL = 1e-5

    def __init__(self, model: Any, alphamax: float, maxpts: int, delta: float | None,
                 delta_cutoff: float, maxmult: float, devtol: float, names: str,
                 progress: ProfileProgress | None):
        _check_glmer(model)
        self.model = m = model
        self.dev_model = profile_deviance_model(m)
        self._setup(m, names)
        self.opt = np.concatenate([sdcor_at(m, m.theta_vector, 1.0)[:-1], m.beta])
        self.base = float(m.deviance)
        self.nstart = self.nbounded = self.nvp + self.p
        self._grid(alphamax, maxpts, delta, delta_cutoff, maxmult, devtol, progress)
        self._check_base()

    def deviance(self, values: np.ndarray) -> float:
        """Return the Laplace (or quadrature) deviance at [SDs and correlations, β]."""
        theta = theta_from_sdcor(self.model, np.append(values[: self.nvp], 1.0))
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
        """Return BOBYQA's initial steps for the parameters ``others`` from ``x0``.

        A tenth of a standard error for the fixed effects, 5 % of the value
        (at least 0.01, floored for unit-scale columns) for SDs and
        correlations: from the previous grid point the other parameters move by
        a fraction of their uncertainty.
        """
        idx = np.asarray(others)
        se = np.concatenate([np.full(self.nvp, np.nan), self.se])[idx]
        m = self.model  # the floor for unit-scale columns of Z and X (see param_scale)
        unit = np.concatenate([[v.unit_scale(m) for v in self.vpars], m.param_scale[m.ntheta :]])
        relative = np.maximum(0.05 * np.abs(x0), 1e-2 / unit[idx])
        # no usable standard error (a Hessian not positive definite): relative steps
        usable = (idx >= self.nvp) & np.isfinite(se) & (se > 0)
        return np.where(usable, 0.1 * np.where(usable, se, 1.0), relative)

    def _all_parameters(self, values: np.ndarray) -> np.ndarray:
        """Return the minimiser's values, which for a glmer are every parameter (β included)."""
        return values

    def fixed_profile(self, j: int) -> list[np.ndarray]:
        """Return the profile rows of fixed effect ``j``, profiled as a variance parameter.

        For glmer fits lme4 profiles a fixed effect as a variance parameter.
        """
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
    """Profile the deviance of a fitted model (lme4's ``profile.merMod``).

    The ML deviance of an lmer fit, or the Laplace / quadrature deviance of a
    glmer fit.

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
    model.require_fit()
    check_names(names)
    if kind == "glmer":
        _check_glmer(model)  # before any work
    profiler = _GlmerProfiler if kind == "glmer" else _Profiler
    positions = select_parameters(model, which)
    monitor = ProfileProgress(len(positions)) if progress else None
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
    """Return the distinct rows in their first-seen order (NaN equal to NaN, as R's unique)."""
    seen: dict[tuple, np.ndarray] = {}
    for r in rows:
        key = tuple(np.where(np.isnan(r), np.inf, r).tolist()) + tuple(np.isnan(r).tolist())
        seen.setdefault(key, r)
    return np.array(list(seen.values()))
