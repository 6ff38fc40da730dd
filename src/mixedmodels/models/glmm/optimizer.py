"""The stages of a glmer fit, as lme4's.

First the nAGQ = 0 stage (BOBYQA over θ, β found with the modes), then the
Laplace or quadrature deviance over (θ, β): Newton steps with lme4's
finite-difference derivatives, past the plateaus that PIRLS's tolerance
leaves, or BOBYQA where Newton cannot be trusted.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular

from mixedmodels.exceptions import ModelSpecError
from mixedmodels.models.glmm.derivatives import HESSIAN_STEP
from mixedmodels.models.glmm.modes import Modes, PirlsError
from mixedmodels.optim.minimize import OptimizerRecord, ThetaScaling, minimize_theta

if TYPE_CHECKING:  # the model imports this module
    from mixedmodels.models.glmm.model import GeneralizedLinearMixedModel

__all__ = [
    "NEWTON_DECREMENT",
    "NEWTON_DECREMENT_REL",
    "NEWTON_MAXIT",
    "PARALLEL_PROBE_SECONDS",
    "PLATEAU_ESCAPES",
    "PLATEAU_OFFSET",
    "POLISH_STEP",
    "STAGE_TWO_BETA_STEP",
    "STAGE_TWO_THETA_STEP",
    "FitStages",
    "after_stage_zero",
]

# Initial trust-region radius of the second (θ, β) search, relative to the scale.
POLISH_STEP = 1e-3
# Newton on (θ, β): at most this many steps, stopping when g'H⁻¹g (twice the
# decrease still to come) is below 1e-7 or, for large deviances, 1e-12 of it.
NEWTON_MAXIT = 8
NEWTON_DECREMENT = 1e-7
NEWTON_DECREMENT_REL = 1e-12
# offset of the fit's deviance from that one below which Newton's optimum is
# kept without a look beyond (see FitStages._leave_plateau)
PLATEAU_OFFSET = 1e-7
# restarts of Newton past such plateaus, at most
PLATEAU_ESCAPES = 3
# Initial trust region of the (θ, β) search: for θ, and per standard error of β.
STAGE_TWO_THETA_STEP = 0.02
STAGE_TWO_BETA_STEP = 0.2
# the finite-difference probes go to worker threads only when an evaluation
# takes longer than this (cbpp's 0.1 ms evaluations were slower on threads)
PARALLEL_PROBE_SECONDS = 5e-4
# the evaluation counter of the second stage (whose probes may run on threads)
COUNT_LOCK = threading.Lock()


class FitStages:
    """The optimisation part of a generalized linear mixed model: the fit's stages.

    A mixin of :class:`~mixedmodels.models.glmm.model.GeneralizedLinearMixedModel`
    (not used by itself; ``fit`` itself is the model's): it drives the
    model's ``_modes``, ``objective`` and ``_derivatives`` and ends in its
    ``_set_optimum``.
    """

    def _derivative_workers(self, threads: int | str) -> int:
        """Return the number of threads for the finite-difference probes.

        More than one only with compiled PIRLS steps (numpy's small operations
        would hold the GIL), and then every core, or ``threads`` when given.
        """
        if self._engine.compiled is None:
            return 1
        if threads != "auto":
            return max(int(threads), 1)
        return os.cpu_count() or 1

    def _parse_start(self, start: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (θ, β or None) from ``start`` (see :meth:`fit`), checked against the model.

        A ModelSpecError names the expected lengths and names.
        """
        theta_names = [n for t in self.frame.terms for n in t.theta_names()]
        if start is None:
            return self.initial_theta(), None
        if not isinstance(start, Mapping):
            return self._start_vector(start, "start (θ)", theta_names), None
        unknown = sorted(set(start) - {"theta", "fixef"})
        if unknown:
            raise ModelSpecError(
                f"start takes the keys 'theta' and 'fixef' (as lme4's start=list(theta=, "
                f"fixef=)), not {unknown}"
            )
        theta = self.initial_theta()
        if start.get("theta") is not None:
            theta = self._start_vector(start["theta"], "start['theta']", theta_names)
        beta = start.get("fixef")
        if beta is None:
            return theta, None
        if self.nagq == 0:
            raise ModelSpecError(
                "start['fixef'] needs nagq >= 1: with nagq = 0 the fixed effects are "
                "estimated with the modes, not searched from a start"
            )
        names = list(self.frame.fixed.names)
        if isinstance(beta, Mapping) or isinstance(beta, pd.Series):
            beta = dict(beta)
            if set(beta) != set(names):
                raise ModelSpecError(
                    f"start['fixef'] needs the {len(names)} fixed effects {names}; got the names "
                    f"{list(beta)}"
                )
            beta = [beta[n] for n in names]
        return theta, self._start_vector(beta, "start['fixef']", names)

    @staticmethod
    def _start_vector(values: Any, what: str, names: list[str]) -> np.ndarray:
        """Return ``values`` as a finite float vector of len(names), else raise ModelSpecError."""
        try:
            v = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            v = None
        if v is None or v.ndim != 1 or len(v) != len(names) or not np.all(np.isfinite(v)):
            raise ModelSpecError(
                f"{what} needs {len(names)} finite number(s), for {names}; got {values!r}"
            )
        return v

    def devfun_copy(self) -> "GeneralizedLinearMixedModel":
        """Return a shallow copy whose ``objective`` is lme4's ``getME(fit, "devfun")``.

        lme4 builds that function afresh: one joint PIRLS (modes and β, the
        nAGQ = 0 step) at the *fitted* θ from ``mustart``, whose linear
        predictor starts every evaluation's PIRLS. The fit's own evaluations
        start from the end of its nAGQ = 0 stage instead; with lme4's PIRLS
        tolerance the two differ by ~1e-6 in the deviance, so the profile
        (:mod:`mixedmodels.inference.profile`) works on this copy.
        """
        self.require_fit()
        dev = copy.copy(self)
        dev._eta_start = self._engine.offset + self.family.linkfun(self._init.mustart)
        dev._eta_start = dev._modes(self.theta_vector, None).eta
        return dev

    def _fit(self, start, nagq0_init_step, pirls_tol, maxeval, keep_history,
             check_convergence) -> None:
        self.pirls_tol = pirls_tol
        e = self._engine
        theta0, beta_start = start
        self._eta_start = e.offset + self.family.linkfun(self._init.mustart)
        stage0 = None
        theta = self._theta_stage0 = theta0
        if nagq0_init_step or self.nagq == 0:
            # lme4: one joint PIRLS at θ0 from mustart; its η starts every evaluation
            self._eta_start = self._modes(theta0, None).eta
            theta, modes0, stage0 = self._stage_zero(theta0, maxeval, keep_history)
            if self.nagq == 0:
                self._set_optimum(theta, None, stage0, check=False)
                return
            self._eta_start = modes0.eta
        else:
            # lme4 without that stage: PIRLS over u alone at θ0 and β = 0 from
            # mustart; its η starts every evaluation (the deviance then is
            # lme4's function, which depends on that η at PIRLS's tolerance)
            t0 = time.perf_counter()
            self._eta_start = self._modes(theta0, np.zeros(e.p)).eta
            # β's default start: PIRLS with β free at θ0 (lme4 starts from 0)
            modes0 = self._modes(theta0, None)
            if time.perf_counter() - t0 >= 2 * PARALLEL_PROBE_SECONDS:
                self._workers = self._derivative_workers(self._threads)
        # lme4's updateStart: the stage's θ, and start['fixef'] over its β
        params0 = np.concatenate([theta, modes0.beta if beta_start is None else beta_start])
        self._newton_evaluations = 0
        newton, params0 = (
            self._newton_past_plateaus(params0) if check_convergence else (None, params0)
        )
        if newton is not None:
            params, record, derivs = newton
            self._set_optimum(params[: self.ntheta], params[self.ntheta :],
                              after_stage_zero(record, stage0), check=True, derivs=derivs)
            return
        record = self._bobyqa_stage(params0, modes0, maxeval, keep_history)
        record.evaluations += self._newton_evaluations
        record = after_stage_zero(record, stage0)
        params = record.theta_final
        self._set_optimum(params[: self.ntheta], params[self.ntheta :], record,
                          check=check_convergence)

    def _stage_zero(self, theta0: np.ndarray, maxeval: int, keep_history: bool):
        """Run the nAGQ = 0 stage: BOBYQA over θ from ``theta0`` (β found with the modes).

        Returns (θ, PIRLS modes there, record).
        """
        self._stage0_best = (np.inf, None, None)
        scaling = ThetaScaling(self.theta_scale)  # θ for unit-scale columns (see lmer)
        stage0 = scaling.to_theta(minimize_theta(
            scaling.objective(self.objective_theta), scaling.to_search(theta0), self.theta_lower,
            ftol_rel=1e-10, maxeval=maxeval, keep_history=keep_history, callback=self._callback,
        ))
        theta = self._theta_stage0 = stage0.theta_final
        if stage0.elapsed >= PARALLEL_PROBE_SECONDS * max(stage0.evaluations, 1):
            self._workers = self._derivative_workers(self._threads)  # else too quick to share
        _, best_theta, modes0 = self._stage0_best
        if best_theta is None or not np.array_equal(best_theta, theta):
            modes0 = self._modes(theta, None)
        return theta, modes0, stage0

    def _newton(self, x0: np.ndarray):
        """Run Newton's method on the deviance over (θ, β) from ``x0``.

        ``x0`` is the nAGQ = 0 stage's end; the steps use lme4's
        finite-difference gradient and Hessian (``deriv12``) and a
        backtracking line search. Near the optimum (where that stage
        leaves it) it converges in two or three steps, and the last ``deriv12``
        is the one the standard errors and the convergence check need.
        Returns (x, record, (g, H)), or None where it cannot be trusted (a
        Hessian not positive definite, a bound reached, no descent): the
        derivative-free search takes over (``_newton_evaluations`` keeps the
        count spent).
        """
        t0 = time.perf_counter()
        first = self._newton_evaluations
        f = self._counted(self.objective)
        lower = self._params_lower()
        x, fx = x0, f(x0)
        f_start = fx
        for _ in range(NEWTON_MAXIT):
            g, H = self._derivatives(x, fx, f)
            Hs = 0.5 * (H + H.T)
            try:
                c = np.linalg.cholesky(Hs)
            except np.linalg.LinAlgError:
                return None
            step = -np.linalg.solve(c.T, np.linalg.solve(c, g))
            decrement = float(-(g @ step))  # g'H⁻¹g: twice the predicted decrease
            if decrement < max(NEWTON_DECREMENT, NEWTON_DECREMENT_REL * abs(fx)):
                # the last step too (one evaluation; g and H are kept from here)
                trial = x + step
                if np.all(trial >= lower):
                    f_trial = f(trial)
                    if f_trial <= fx:
                        x, fx = trial, f_trial
                record = OptimizerRecord(
                    "Newton (deriv12)", x0, x, f_start, fx, self._newton_evaluations - first,
                    "CONVERGED", time.perf_counter() - t0,
                )
                return x, record, (g, H)
            t = 1.0
            while t >= 1.0 / 64:
                trial = x + t * step
                if np.all(trial >= lower):
                    f_trial = f(trial)
                    if f_trial <= fx - 1e-4 * t * decrement:
                        break
                t /= 2
            else:
                return None
            x, fx = trial, f_trial
        return None

    def _counted(self, objective):
        """Return ``objective`` counting its evaluations (see :meth:`_count`)."""

        def f(x: np.ndarray) -> float:
            value = objective(x)
            self._count(value)
            return value

        return f

    def _count(self, value: float) -> None:
        """Count one more evaluation of the second stage, of deviance ``value``.

        The count is ``_newton_evaluations``; the best value so far goes to the
        progress callback. Under a lock: the probes of ``_derivatives`` may run
        on threads.
        """
        with COUNT_LOCK:
            self._newton_evaluations += 1
            self._stage_best = min(self._stage_best, value)
            if self._callback is not None:
                self._callback(self._newton_evaluations, self._stage_best)

    def _params_lower(self) -> np.ndarray:
        """Return the lower bounds of (θ, β)."""
        return np.concatenate([self.theta_lower, np.full(self._engine.p, -np.inf)])

    def _newton_past_plateaus(self, x0: np.ndarray):
        """Run ``_newton`` from ``x0``, and again while it stops on a raised plateau.

        ``x0`` is the nAGQ = 0 stage's end. While ``_leave_plateau`` finds
        Newton stopped on a raised plateau of the deviance, it runs again from
        a lower point or with PIRLS run to convergence. Returns (Newton's
        result or None, the point the derivative-free search is to start from
        when it is None).
        """
        t0 = time.perf_counter()
        self._stage_best = np.inf
        newton = self._newton(x0)
        if newton is None:
            return None, x0
        first = newton[1]
        for escape in range(1, PLATEAU_ESCAPES + 1):
            x, record, (_, H) = newton
            way = self._leave_plateau(x0, x, record.objective_final, H)
            if way is None:
                break
            beyond, converge = way
            if converge:  # from here on, the deviance at converged modes
                self.pirls_converged = True
            newton = self._newton(beyond)
            if newton is None:  # the derivative-free search goes on from there
                return None, beyond
            newton[1].optimizer = (
                "Newton (deriv12), with PIRLS to convergence past a plateau of the inexact PIRLS"
                if converge else
                f"Newton (deriv12), restarted past {escape} plateau(s) of the inexact PIRLS"
            )
        record = newton[1]
        record.theta_start, record.objective_start = first.theta_start, first.objective_start
        record.evaluations = self._newton_evaluations  # with the plateau checks
        record.elapsed = time.perf_counter() - t0
        return newton, x0

    def _leave_plateau(
        self, x0: np.ndarray, x: np.ndarray, fx: float, H: np.ndarray
    ) -> tuple[np.ndarray, bool] | None:
        """Return where to go from Newton's optimum ``x`` when it lies on a raised plateau.

        ``x`` (deviance ``fx``, Hessian ``H``) is what Newton found from
        ``x0``. The answer is (a lower point, False), or (the optimum of the
        Laplace approximation, True) where PIRLS must be run to convergence
        for the deviance to have a minimum near; None where ``x`` stands.

        PIRLS stops at the fit's tolerance (lme4's 1e-7), and the Laplace
        deviance uses the factor of its last step, taken at the weights that
        step started from: the deviance carries an offset of the order of the
        square root of the tolerance, growing from zero near ``x0`` (every
        evaluation starts from the modes there, as lme4's) to the point where
        PIRLS needs one step more, where it falls back to almost zero. The
        deviance is a sawtooth over the Laplace approximation, and Newton
        can stop at the bottom of a raised tooth above a lower one (0.027 in
        a simulated logistic model with 35 groups, where lme4's Nelder-Mead
        went on).

        The offset at ``x`` (the deviance at converged modes, one more PIRLS
        run from where the fit's stopped) tells whether that can be: below
        ``PLATEAU_OFFSET`` (or negative: a lowered tooth), no. Otherwise the
        next tooth is lower than ``fx`` only where it begins before the
        Laplace deviance has risen by the offset; it begins first away from
        ``x0``, so one PIRLS run there (at that rise along x - x0) tells, by
        its number of steps. Where it does,
        one Newton step on the converged deviance (its gradient by forward
        differences, ``H`` as its Hessian) gives the optimum x* of the Laplace
        approximation: where the fit's deviance is lower there than at ``x``,
        Newton goes on from x*; otherwise the deviance has no minimum near,
        only the lower tooth's edge (where lme4's Nelder-Mead stops, with a
        degenerate Hessian), and the fit goes on at converged modes.
        """
        if self.pirls_converged:
            return None
        theta, beta = x[: self.ntheta], x[self.ntheta :]
        try:
            fit_modes = self._modes(theta, beta)
            modes = self._modes(theta, beta, True, fit_modes.eta)
        except PirlsError:
            return None
        f_exact = self._deviance_at(modes, theta)
        self._count(f_exact)
        offset = fx - f_exact
        if offset <= PLATEAU_OFFSET:  # the other teeth (offset ~0) are higher
            return None
        lower = self._params_lower()
        away = x - x0
        rise = 0.5 * float(away @ H @ away)  # the Laplace deviance's rise along x - x0
        if not rise > 0:
            return None
        ray = np.maximum(x + np.sqrt(offset / rise) * away, lower)
        try:
            ray_modes = self._modes(ray[: self.ntheta], ray[self.ntheta :])
        except PirlsError:
            return None
        self._count(self._deviance_at(ray_modes, ray[: self.ntheta]))
        if ray_modes.iterations <= fit_modes.iterations:
            return None  # no other tooth within reach
        # the probes start from the modes at x: they converge in fewer steps
        exact = self._counted(functools.partial(self.objective_converged, eta_start=modes.eta))
        h = HESSIAN_STEP / self.param_scale  # as _derivatives: for unit-scale columns
        probes = [self._shifted(x, {j: h[j]}) for j in range(len(x))]
        g = (self._evaluate_all(exact, probes) - f_exact) / h
        try:
            c = np.linalg.cholesky(0.5 * (H + H.T))
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(g)):
            return None
        best = np.maximum(x - np.linalg.solve(c.T, np.linalg.solve(c, g)), lower)
        return best, not self._counted(self.objective)(best) < fx - NEWTON_DECREMENT

    def _bobyqa_stage(self, params0: np.ndarray, modes0: Modes, maxeval: int, keep_history: bool):
        """Run the derivative-free search over (θ, β) and return its record.

        BOBYQA from the nAGQ = 0 stage's end, then once more from its own end
        with a small trust region (BOBYQA can stop early in the flat valleys
        GLMMs have).
        """
        lower = np.concatenate([self.theta_lower, np.full(self._engine.p, -np.inf)])
        # on (θ, β) for unit-scale columns of Z and X: steps free of the units
        scaling = ThetaScaling(self.param_scale)
        objective = scaling.objective(self.objective)
        first = scaling.to_theta(minimize_theta(
            objective, scaling.to_search(params0), lower, ftol_rel=1e-12, maxeval=maxeval,
            keep_history=keep_history,
            initial_step=self._stage_two_step(modes0, scaling.scale),
            callback=self._callback,
        ))
        x1 = scaling.to_search(first.theta_final)
        polish = scaling.to_theta(minimize_theta(
            objective, x1, lower, ftol_rel=1e-12, maxeval=maxeval,
            keep_history=keep_history, initial_step=POLISH_STEP * _scale(x1),
            callback=self._callback,
        ))
        if polish.objective_final <= first.objective_final:
            polish.theta_start, polish.objective_start = first.theta_start, first.objective_start
            polish.evaluations += first.evaluations
            polish.elapsed += first.elapsed
            polish.optimizer = f"{polish.optimizer} twice"
            return polish
        first.evaluations += polish.evaluations
        first.optimizer = f"{first.optimizer} twice"
        return first

    def _stage_two_step(self, modes0: Modes, scale: np.ndarray) -> np.ndarray:
        """Return BOBYQA's initial trust region over (θ, β) × ``scale``, as lme4's steps.

        ``scale`` gives the search's coordinates (see ``param_scale``). As
        lme4's Nelder-Mead steps: 0.02 for θ (of unit-scale columns), a fifth
        of each β's standard error from the nAGQ = 0 stage's PIRLS system.
        """
        e = self._engine
        w, z = e.working(modes0.eta, modes0.mu, e.offset)
        theta = self._theta_stage0
        _, _, factor = e.solve(self.lambdas(theta), w, z, True)
        Linv = solve_triangular(factor.RX(), np.eye(e.p), lower=True)
        se = np.sqrt(np.einsum("ij,ij->j", Linv, Linv))
        beta_step = STAGE_TWO_BETA_STEP * np.minimum(se * scale[self.ntheta :], 10.0)
        return np.concatenate([np.full(self.ntheta, STAGE_TWO_THETA_STEP), beta_step])


def after_stage_zero(record: OptimizerRecord, stage0: OptimizerRecord | None) -> OptimizerRecord:
    """Return ``record`` of the (θ, β) stage counting the nAGQ = 0 stage before it (if any)."""
    if stage0 is not None:
        record.evaluations += stage0.evaluations
        record.elapsed += stage0.elapsed
        record.optimizer = f"{stage0.optimizer} (nAGQ = 0), then {record.optimizer}"
    return record


def _scale(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(x), 1.0)
