"""Minimising the profiled objective over θ, with the optimizer's whole record kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = [
    "OptimizerRecord",
    "ThetaScaling",
    "bfgs",
    "minimize_theta",
    "minimize_theta_gradient",
]


@dataclass
class OptimizerRecord:
    """What the optimizer did: start and end, evaluations, return code, objective.

    Attributes
    ----------
    optimizer : str
        Name of the algorithm (``"L-BFGS-B"`` or ``"LN_BOBYQA"``).
    theta_start, theta_final : ndarray
        Initial and final θ.
    objective_start, objective_final : float
        The objective at those points.
    evaluations : int
        Number of objective evaluations (with the gradient, for L-BFGS-B).
    return_code : str
        The optimizer's stopping reason (e.g. ``"FTOL_REACHED"``, ``"CONVERGED"``).
    elapsed : float
        Seconds spent in the optimizer.
    history : list of (theta, objective)
        Only kept when asked for (``keep_history=True``).
    blas_threads : (int or None, int or None)
        BLAS threads the fit used throughout and inside the factorisations.
    converged : bool
        Whether ``return_code`` is a success code (property).
    """

    optimizer: str
    theta_start: np.ndarray
    theta_final: np.ndarray
    objective_start: float
    objective_final: float
    evaluations: int
    return_code: str
    elapsed: float
    history: list[tuple[np.ndarray, float]] = field(default_factory=list, repr=False)
    # BLAS threads of the fit: (throughout, inside the factorisations); None is
    # the library's default (see LinearMixedModel.fit's ``threads``)
    blas_threads: tuple[int | None, int | None] | None = None

    @property
    def converged(self) -> bool:
        """Whether the optimizer stopped on a success code.

        NLopt's ``SUCCESS``, ``FTOL_REACHED``, ``XTOL_REACHED`` and ``STOPVAL_REACHED``, or
        ``CONVERGED`` (L-BFGS-B); not an evaluation or time limit, nor a failure.
        """
        return self.return_code in {
            "SUCCESS",
            "FTOL_REACHED",
            "XTOL_REACHED",
            "STOPVAL_REACHED",
            "CONVERGED",
        }


@dataclass(frozen=True)
class ThetaScaling:
    """A search on x = θ × ``scale`` (positive, per element) instead of θ.

    The model supplies the scale (θ in units where every random-effects column
    is moderate, see ``RandomEffectsModel.theta_scale``); the optimizers stay
    generic. The bounds 0 and -inf are the same on both scales. With a scale of
    all ones every method hands back what it was given, at no cost.
    """

    scale: np.ndarray

    @property
    def identity(self) -> bool:
        """Whether the scale is all ones (then every method returns its argument)."""
        return bool(np.all(self.scale == 1.0))

    def to_search(self, theta: np.ndarray) -> np.ndarray:
        """Map θ to the search coordinates x = θ × ``scale``."""
        return np.asarray(theta, dtype=float) * self.scale

    def objective(self, objective: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], float]:
        """Wrap an objective of θ as one of the search coordinates x."""
        if self.identity:
            return objective
        return lambda x: objective(x / self.scale)

    def objective_gradient(
        self, objective_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]]
    ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
        """Wrap ``objective_gradient`` (value and gradient in θ) as one of x.

        The gradient is divided by ``scale`` (chain rule of x = θ × ``scale``).
        """
        if self.identity:
            return objective_gradient

        def scaled(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = objective_gradient(x / self.scale)
            return value, grad / self.scale

        return scaled

    def start_evaluation(self, start_evaluation: Callable | None) -> Callable | None:
        """Wrap ``start_evaluation`` (value, gradient, Hessian diagonal or None) as one of x."""
        if self.identity or start_evaluation is None:
            return start_evaluation

        def scaled(x: np.ndarray):
            value, grad, curvature = start_evaluation(x / self.scale)
            return value, grad / self.scale, None if curvature is None else curvature / self.scale**2

        return scaled

    def to_theta(self, record: "OptimizerRecord") -> "OptimizerRecord":
        """Return the record of a search on x, with every point mapped back to θ."""
        if self.identity:
            return record
        record.theta_start = record.theta_start / self.scale
        record.theta_final = record.theta_final / self.scale
        record.history = [(x / self.scale, value) for x, value in record.history]
        return record


_RETURN_CODES = {
    1: "SUCCESS",
    2: "STOPVAL_REACHED",
    3: "FTOL_REACHED",
    4: "XTOL_REACHED",
    5: "MAXEVAL_REACHED",
    6: "MAXTIME_REACHED",
    -1: "FAILURE",
    -2: "INVALID_ARGS",
    -3: "OUT_OF_MEMORY",
    -4: "ROUNDOFF_LIMITED",
    -5: "FORCED_STOP",
}


class _EvaluationLog:
    """Log of an optimizer's evaluations.

    Counts evaluations and keeps the start, the best point and (optionally) the whole history;
    calls ``callback(count, best)`` after each evaluation.
    """

    def __init__(self, keep_history: bool, callback: Callable[[int, float], None] | None):
        self.count = 0
        self.start_value = np.nan
        self.best_x: np.ndarray | None = None
        self.best_value = np.inf
        self.history: list[tuple[np.ndarray, float]] = []
        self._keep = keep_history
        self._callback = callback

    def record(self, x: np.ndarray, value: float) -> float:
        """Log one evaluation; returns the value with non-finite ones made huge."""
        self.count += 1
        if self.count == 1:
            self.start_value = value
        if not np.isfinite(value):
            value = 1e300
        if value < self.best_value:
            self.best_value, self.best_x = value, np.array(x, dtype=float)
        if self._keep:
            self.history.append((np.array(x, dtype=float), value))
        if self._callback is not None:
            self._callback(self.count, self.best_value)
        return value

    def result(self, name: str, start: np.ndarray, code: str, t0: float) -> OptimizerRecord:
        return OptimizerRecord(
            optimizer=name,
            theta_start=start,
            theta_final=start if self.best_x is None else self.best_x,
            objective_start=self.start_value,
            objective_final=self.best_value,
            evaluations=self.count,
            return_code=code,
            elapsed=time.perf_counter() - t0,
            history=self.history,
        )


def minimize_theta(
    objective: Callable[[np.ndarray], float],
    start: np.ndarray,
    lower: np.ndarray,
    *,
    ftol_rel: float = 1e-12,
    xtol_rel: float = 1e-8,
    maxeval: int = 100_000,
    keep_history: bool = False,
    callback: Callable[[int, float], None] | None = None,
    initial_step: np.ndarray | None = None,
) -> OptimizerRecord:
    """Minimise ``objective`` over θ >= ``lower`` with NLopt's BOBYQA.

    BOBYQA (Powell's derivative-free trust-region method on quadratic models) is
    lme4's default for ``lmer``. The stopping rule is relative: the objective
    changes by less than ``ftol_rel`` (1e-12 of a deviance of size n is far below
    the 1e-6 by which lme4's defaults can stop short) or θ by less than
    ``xtol_rel``.
    """
    import nlopt

    start = np.asarray(start, dtype=float)
    log = _EvaluationLog(keep_history, callback)
    t0 = time.perf_counter()
    opt = nlopt.opt(nlopt.LN_BOBYQA, len(start))
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf))
    opt.set_min_objective(lambda x, grad: log.record(x, float(objective(x))))
    opt.set_ftol_rel(ftol_rel)
    opt.set_xtol_rel(xtol_rel)
    opt.set_maxeval(maxeval)
    opt.set_initial_step(_initial_step(start) if initial_step is None else initial_step)
    try:
        opt.optimize(start)
        code = opt.last_optimize_result()
    except nlopt.RoundoffLimited:
        code = -4
    except (ValueError, RuntimeError):
        code = -1
    return log.result("LN_BOBYQA", start, _RETURN_CODES.get(code, str(code)), t0)


def _initial_step(x0: np.ndarray) -> np.ndarray:
    """Return the initial trust-region radius per coordinate (0.2 on the θ scale, as lme4)."""
    return np.maximum(0.2 * np.maximum(np.abs(x0), 1.0), 1e-4)


# Projected-gradient tolerance on curvature-scaled coordinates (see
# ``minimize_theta_gradient``): θ_t within about 1e-5 / sqrt(H_tt) of the optimum.
CURVATURE_GTOL = 1e-5


def minimize_theta_gradient(
    objective_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]],
    objective: Callable[[np.ndarray], float],
    start: np.ndarray,
    lower: np.ndarray,
    *,
    ftol_rel: float = 1e-12,
    gtol: float = 1e-4,
    first_step: float = 0.1,
    maxeval: int = 10_000,
    keep_history: bool = False,
    callback: Callable[[int, float], None] | None = None,
    start_evaluation: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray | None]]
    | None = None,
) -> OptimizerRecord:
    """Minimise over θ >= ``lower`` with L-BFGS-B and the analytic gradient.

    The profiled objective is even in each scalar θ, so its derivative is zero at
    θ = 0 whether or not that is a minimum: a coordinate that ends on its bound,
    or exactly on 0 without one, is checked by one evaluation a little off it,
    and the search resumes from there if that is lower. A search whose every
    step from its start failed is reported as not converged (code
    ``"FAILURE"``), never as an optimum at its start. L-BFGS-B needs three to
    four times fewer evaluations than BOBYQA; an evaluation with the gradient
    costs about two and a half without.

    Parameters
    ----------
    start_evaluation : callable, optional
        ``start_evaluation(θ) -> (value, gradient, curvature)`` for the first
        point, where ``curvature`` is None or estimates of the Hessian's
        diagonal there (all > 0). With estimates the search runs on
        x = θ √curvature: L-BFGS-B starts from a multiple of the identity, so
        on those coordinates its first steps are close to
        Newton steps instead of a fixed fraction of ‖θ‖, and its stopping rule
        on the projected gradient, |∂f/∂x_t| <= tol, puts θ_t within about
        tol / sqrt(H_tt) of the optimum and the objective within tol²/2 of its
        minimum, whatever the size of the data. tol is ``CURVATURE_GTOL`` or,
        on large data, ten times the rounding level of that gradient,
        sqrt(eps |f|) (below it line searches fail at the optimum).
    """
    from scipy.optimize import minimize

    start = np.asarray(start, dtype=float)
    log = _EvaluationLog(keep_history, callback)
    t0 = time.perf_counter()
    if start_evaluation is None:
        first, curvature = objective_gradient(start), None
    else:
        value, grad, curvature = start_evaluation(start)
        first = (value, grad)
    if curvature is None:
        # L-BFGS-B's first trial step has unit length; on θ / s it has length s
        # in θ, a tenth of the start's size: from moment starts, which are near
        # the optimum, a unit step overshoots and costs two evaluations to come
        # back. After the first step the method is invariant to the scaling.
        # Near the optimum the objective only resolves θ to about
        # sqrt(eps |f| / H), where the gradient is about sqrt(eps |f| H); with f
        # and the curvature H both growing like n, that is ~1e-7 |f|. A smaller
        # gtol cannot be met on large data: the search would end in failing line
        # searches (tens of evaluations at the optimum). 1e-7 |f| still puts θ
        # within ~1e-6 of it.
        s = first_step * max(float(np.linalg.norm(start)), 0.1)
        scale = np.full(start.shape, 1.0 / s)
        tol = max(gtol, 1e-7 * abs(first[0])) if np.isfinite(first[0]) else gtol
        gtol_x = tol * s
    else:
        root = np.sqrt(np.asarray(curvature, dtype=float))
        noise = np.sqrt(np.finfo(float).eps * abs(first[0])) if np.isfinite(first[0]) else 0.0
        # On x = c θ root the Hessian is about I / c², so the Newton step is
        # -c² ∂f/∂x, of length c ‖∂f/∂θ / root‖; L-BFGS-B's first trial step has
        # unit length along -∂f/∂x: the Newton step for c = 1 / ‖∂f/∂θ / root‖.
        c = 1.0 / max(float(np.linalg.norm(first[1] / root)), 1e-12)
        scale = root * c
        gtol_x = max(CURVATURE_GTOL, 10.0 * noise) / c
    x0 = start * scale
    pending = (x0, first)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal pending
        if pending is not None and np.array_equal(x, pending[0]):  # L-BFGS-B's first call
            value, grad = pending[1]
        else:
            value, grad = objective_gradient(x / scale)
        pending = None
        value = log.record(x / scale, value)
        return value, (grad / scale if value < 1e300 else np.zeros_like(x))

    def plain(x: np.ndarray) -> float:
        return log.record(x / scale, float(objective(x / scale)))

    bounds = [(lo * d if np.isfinite(lo) else None, None) for lo, d in zip(lower, scale)]
    options = {"ftol": ftol_rel, "gtol": gtol_x, "maxfun": maxeval, "maxls": 40}
    x, result, stalled = x0, None, False
    for _ in range(5):  # at most a few restarts off the boundary
        before = log.count
        result = minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        # every step from its start failed (a line search into non-finite
        # values): its "convergence" there is no optimum; the caller finishes
        # derivative-free
        stalled = np.array_equal(result.x, x) and log.count - before > 1
        if stalled:
            break
        escape = _off_boundary(plain, result.x, float(result.fun), lower * scale)
        # a zero gradient need not be a minimum: probe the coordinates where it
        # vanishes by symmetry (θ exactly 0 off a bound, which _off_boundary
        # covers: the objective is even there; a search only stays on 0 from a
        # start on it)
        on_zero = (result.x == 0) & ~np.isfinite(lower)
        if escape is None and on_zero.any():
            escape = _probe_coordinates(plain, result.x, float(result.fun), result.jac, scale, on_zero)
        if escape is None:
            break
        x = escape
    converged = result is not None and result.success and not stalled
    code = "CONVERGED" if converged else "FAILURE"
    return log.result("L-BFGS-B", start, code, t0)


# Step of the probes around a search's start: a hundredth of each θ (at least 1e-3)
PROBE_STEP = 1e-2


def _probe_coordinates(
    objective: Callable[[np.ndarray], float],
    x: np.ndarray,
    fx: float,
    grad: np.ndarray,
    scale: np.ndarray,
    which: np.ndarray,
) -> np.ndarray | None:
    """Return a point lower than ``x`` one step along a coordinate, if there is one.

    Only the coordinates ``which`` marks are tried.

    L-BFGS-B accepts its start when the gradient there is below its tolerance,
    which it is also at a saddle or a maximum (θ = 0 of a variance, where the
    objective is even) and along directions it barely depends on. One
    evaluation per coordinate, downhill by the gradient's sign (the side is
    immaterial where the gradient vanishes: the change is then quadratic),
    a step of ``PROBE_STEP`` of θ; lower means by more than the objective's
    rounding. Coordinates are x = θ × ``scale``.
    """
    theta = x / scale
    noise = 1e-10 * max(abs(fx), 1.0)
    for i in np.flatnonzero(which):
        trial = x.copy()
        sign = -1.0 if grad is not None and grad[i] > 0 else 1.0
        trial[i] += sign * PROBE_STEP * max(abs(theta[i]), 0.1) * scale[i]
        if objective(trial) < fx - noise:
            return trial
    return None


def _off_boundary(
    objective: Callable[[np.ndarray], float], x: np.ndarray, fx: float, lower: np.ndarray
) -> np.ndarray | None:
    """Return a point a little inside the bounds that is lower than ``x``, if there is one."""
    at_bound = np.flatnonzero(np.isfinite(lower) & (x <= lower + 1e-10))
    if at_bound.size == 0:
        return None
    trial = x.copy()
    trial[at_bound] = lower[at_bound] + 1e-3
    return trial if objective(trial) < fx else None


def bfgs(
    fg, x0: np.ndarray, hinv: np.ndarray, gtol: float = 1e-4, ftol_rel: float = 1e-12,
    maxeval: int = 200,
) -> dict[str, Any]:
    """Minimise by BFGS with a backtracking (Armijo) line search.

    The search starts from ``x0`` with the first inverse Hessian ``hinv``.
    Converged when the largest gradient component is below
    max(gtol, 1e-7 |f|) (the rule of ``minimize_theta_gradient``, whose search
    L-BFGS-B is too costly per iteration for the many tiny fits of a
    bootstrap) or when a full step lowers f by less than ``ftol_rel`` |f|.
    A direction that is not downhill restarts from ``hinv``.

    Parameters
    ----------
    fg : callable
        ``fg(x) -> (f, gradient)``; a non-finite f rejects the trial step.
    x0 : ndarray
        Start.
    hinv : ndarray
        Inverse Hessian to start from (and to restart from).
    gtol, ftol_rel : float
        Gradient and relative objective tolerances (see above).
    maxeval : int
        Most evaluations of ``fg``, the line searches' included.

    Returns
    -------
    dict
        ``x`` and ``f`` (the last accepted point and its value), ``f0`` (the
        value at ``x0``), ``evaluations`` and ``converged``.
    """
    x = x0.copy()
    f, g = fg(x)
    f0, evaluations = f, 1
    if not np.isfinite(f):
        return {"x": x, "f": f, "f0": f0, "evaluations": evaluations, "converged": False}
    tol = max(gtol, 1e-7 * abs(f))
    H = hinv.copy()
    while evaluations < maxeval:
        if abs(g).max() <= tol:
            return {"x": x, "f": f, "f0": f0, "evaluations": evaluations, "converged": True}
        d = -H @ g
        slope = float(g @ d)
        if not slope < 0:  # not a descent direction: restart from the seed
            H = hinv.copy()
            d = -H @ g
            slope = float(g @ d)
        step, accepted = 1.0, False
        while evaluations < maxeval and step > 1e-10:
            x_new = x + step * d
            f_new, g_new = fg(x_new)
            evaluations += 1
            if np.isfinite(f_new) and f_new <= f + 1e-4 * step * slope:
                accepted = True
                break
            # minimum of the quadratic through f, the slope and f_new, kept in [0.1, 0.5]
            denom = 2.0 * (f_new - f - step * slope) if np.isfinite(f_new) else 0.0
            trial = -slope * step * step / denom if denom > 0 else 0.5 * step
            step = min(max(trial, 0.1 * step), 0.5 * step)
        if not accepted:
            break
        s, yv = x_new - x, g_new - g
        small_change = f - f_new <= ftol_rel * max(abs(f), 1.0) and step == 1.0
        x, f, g = x_new, f_new, g_new
        sy = float(s @ yv)
        if sy > 1e-12 * np.sqrt(float(s @ s) * float(yv @ yv)):  # curvature condition
            rho = 1.0 / sy
            Hy = H @ yv
            H = H + ((sy + float(yv @ Hy)) * rho * rho) * (s[:, None] * s) - rho * (
                Hy[:, None] * s + s[:, None] * Hy
            )
        if small_change:
            return {"x": x, "f": f, "f0": f0, "evaluations": evaluations, "converged": True}
    return {"x": x, "f": f, "f0": f0, "evaluations": evaluations, "converged": False}
