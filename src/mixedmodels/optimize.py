"""Minimising the profiled objective over θ, with the optimizer's whole record kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["OptimizerRecord", "minimize_theta"]


@dataclass
class OptimizerRecord:
    """What the optimizer did: start and end, evaluations, return code, objective.

    Attributes
    ----------
    optimizer : str
        Name of the algorithm (``"LN_BOBYQA"``).
    theta_start, theta_final : ndarray
        Initial and final θ.
    objective_start, objective_final : float
        The objective at those points.
    evaluations : int
        Number of objective evaluations.
    return_code : str
        NLopt's return code name (e.g. ``"FTOL_REACHED"``).
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
        return self.return_code in {"SUCCESS", "FTOL_REACHED", "XTOL_REACHED", "STOPVAL_REACHED"}


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
