"""Minimising the profiled objective over θ, with the optimizer's whole record kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["OptimizerRecord", "minimize_theta", "minimize_theta_gradient"]


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

    @property
    def converged(self) -> bool:
        return self.return_code in {
            "SUCCESS",
            "FTOL_REACHED",
            "XTOL_REACHED",
            "STOPVAL_REACHED",
            "CONVERGED",
        }


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
    best: dict = {"x": start.copy(), "f": np.inf}
    count = [0]
    history: list[tuple[np.ndarray, float]] = []

    def wrapped(x: np.ndarray, grad: np.ndarray) -> float:
        value = float(objective(x))
        count[0] += 1
        if count[0] == 1:
            best["start"] = value
        if not np.isfinite(value):
            value = 1e300
        if value < best["f"]:
            best["f"], best["x"] = value, x.copy()
        if keep_history:
            history.append((x.copy(), value))
        if callback is not None:
            callback(count[0], best["f"])
        return value

    t0 = time.perf_counter()
    opt = nlopt.opt(nlopt.LN_BOBYQA, len(start))
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf))
    opt.set_min_objective(wrapped)
    opt.set_ftol_rel(ftol_rel)
    opt.set_xtol_rel(xtol_rel)
    opt.set_maxeval(maxeval)
    opt.set_initial_step(_initial_step(start))
    try:
        opt.optimize(start)
        code = opt.last_optimize_result()
    except nlopt.RoundoffLimited:
        code = -4
    except (ValueError, RuntimeError):
        code = -1
    f_start = best.get("start", np.nan)
    return OptimizerRecord(
        optimizer="LN_BOBYQA",
        theta_start=start,
        theta_final=best["x"],
        objective_start=f_start,
        objective_final=best["f"],
        evaluations=count[0],
        return_code=_RETURN_CODES.get(code, str(code)),
        elapsed=time.perf_counter() - t0,
        history=history,
    )


def _initial_step(x0: np.ndarray) -> np.ndarray:
    """Initial trust-region radius per coordinate (0.2 on the θ scale, as lme4)."""
    return np.maximum(0.2 * np.maximum(np.abs(x0), 1.0), 1e-4)


def minimize_theta_gradient(
    objective_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]],
    objective: Callable[[np.ndarray], float],
    start: np.ndarray,
    lower: np.ndarray,
    *,
    ftol_rel: float = 1e-12,
    gtol: float = 1e-4,
    maxeval: int = 10_000,
    keep_history: bool = False,
) -> OptimizerRecord:
    """Minimise over θ >= ``lower`` with L-BFGS-B and the analytic gradient.

    The profiled objective is even in each scalar θ, so its derivative is zero at
    θ = 0 whether or not that is a minimum: a coordinate that ends on its bound is
    checked by one evaluation a little inside, and the search resumes from there
    if that is lower. L-BFGS-B needs three to four times fewer evaluations than
    BOBYQA; an evaluation with the gradient costs about two and a half without.
    """
    from scipy.optimize import minimize

    start = np.asarray(start, dtype=float)
    count = [0]
    history: list[tuple[np.ndarray, float]] = []
    first: list[float] = []

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = objective_gradient(x)
        count[0] += 1
        if not first:
            first.append(value)
        if keep_history:
            history.append((x.copy(), value))
        if not np.isfinite(value):
            return 1e300, np.zeros_like(x)
        return value, grad

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    options = {"ftol": ftol_rel, "gtol": gtol, "maxfun": maxeval, "maxls": 40}
    t0 = time.perf_counter()
    x, fx = start, np.inf
    result = None
    for _ in range(5):  # at most a few restarts off the boundary
        result = minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        x, fx = result.x, float(result.fun)
        escape = _off_boundary(objective, x, fx, lower)
        if escape is None:
            break
        count[0] += 1
        x = escape
    return OptimizerRecord(
        optimizer="L-BFGS-B",
        theta_start=start,
        theta_final=np.asarray(x, dtype=float),
        objective_start=first[0] if first else np.nan,
        objective_final=fx,
        evaluations=count[0],
        return_code="CONVERGED" if result is not None and result.success else "FAILURE",
        elapsed=time.perf_counter() - t0,
        history=history,
    )


def _off_boundary(
    objective: Callable[[np.ndarray], float], x: np.ndarray, fx: float, lower: np.ndarray
) -> np.ndarray | None:
    """A point a little inside the bounds that is lower than ``x``, if there is one."""
    at_bound = np.flatnonzero(np.isfinite(lower) & (x <= lower + 1e-10))
    if at_bound.size == 0:
        return None
    trial = x.copy()
    trial[at_bound] = lower[at_bound] + 1e-3
    return trial if objective(trial) < fx else None
