"""Parametric bootstrap of mixed models.

As lme4's ``bootMer`` (type "parametric") and ``confint(fit, method = "boot")``.

New responses are simulated from the fitted model (``model.simulate``: new
random effects and new residuals, or with ``use_u=True`` the fitted random
effects kept) and the model is refitted to each (``model.refit``: the same
design, the optimizer started from the original θ). Any model with those two
methods can be bootstrapped (lmer and glmer fits).

Every simulated response is drawn first, from one ``numpy`` Generator seeded
with ``seed``, and every refit starts from the original estimates, so the
replicates do not depend on ``n_jobs`` nor on the order in which they are
computed. ``n_jobs > 1`` runs the refits in worker *processes* (forked where
the platform allows, so that the model is not pickled): a refit of a small
model is thousands of small numpy calls, Python work that holds the GIL, so
threads would not run them in parallel.

Refits that raise are kept as NaN rows and counted (``n_failed``, with the
messages in ``errors``); singular and non-converged refits are kept and
counted (``n_singular``, ``n_nonconverged``): nothing is hidden.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError
from mixedmodels.inference.parameters import (
    check_level,
    has_residual_sd,
    interval_frame,
    parameter_names,
    sdcor_from_covariances,
    variance_parameters,
)
from mixedmodels.support.progress import FitProgress

__all__ = [
    "BootProgress", "BootstrapResult", "bootstrap", "norm_inter", "percentile_interval",
    "shortest_interval",
]

_METHODS = {
    "percentile": "percentile",
    "perc": "percentile",
    "basic": "basic",
    "normal": "normal",
    "norm": "normal",
    "shortest": "shortest",
}


# ---------------------------------------------------------------------------- statistics


def _columns(model: Any) -> tuple[list[str], list[str], list[str]]:
    """Return the (θ, fixed-effect, SD/correlation) column names of the replicate table.

    ``sigma`` sits between θ and the fixed effects when the model has a
    residual SD.
    """
    theta = [f"theta_{n}" for t in model.frame.terms for n in t.theta_names()]
    fixed = list(model.frame.fixed.names)
    sdcor = [v.readable for v in variance_parameters(model) if v.kind != "sigma"]
    return theta, fixed, sdcor


def _statistics(fit: Any) -> np.ndarray:
    """[θ, (σ), β, SDs and correlations] of one fit."""
    parts = [np.asarray(fit.theta_vector, dtype=float)]
    if has_residual_sd(fit):
        parts.append(np.array([fit.sigma]))
    parts.append(np.asarray(fit.beta, dtype=float))
    parts.append(sdcor_from_covariances(fit, fit.covariances()))
    return np.concatenate(parts)


def _refit_block(model: Any, Y: np.ndarray) -> tuple[np.ndarray, list[tuple[bool, bool, str]]]:
    """Refit ``model`` to every column of ``Y``.

    Returns the statistics (NaN rows for failures) and (singular, converged,
    error message) per column.
    """
    width = len(_statistics(model))
    out = np.full((Y.shape[1], width), np.nan)
    status: list[tuple[bool, bool, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular / convergence warnings are counted instead
        for i in range(Y.shape[1]):
            try:
                fit = model.refit(Y[:, i])
                out[i] = _statistics(fit)
                optsum = getattr(fit, "optsum", None)
                converged = bool(getattr(optsum, "converged", True))
                status.append((bool(fit.is_singular), converged, ""))
            except Exception as err:  # noqa: BLE001 - a failed replicate is data, as bootMer's NA
                status.append((False, False, f"{type(err).__name__}: {err}"))
    return out, status


# worker processes: the model is set once per process
_WORKER_MODEL: Any = None


def _worker_init(model: Any) -> None:
    global _WORKER_MODEL
    _WORKER_MODEL = model
    try:  # one BLAS thread per worker: the workers are the parallelism
        from mixedmodels.support.threads import thread_controller

        thread_controller().limit(limits=1, user_api="blas")
    except Exception:  # noqa: BLE001 - threadpoolctl missing or failing: leave as is
        pass


def _worker_run(start: int, Y: np.ndarray):
    return start, _refit_block(_WORKER_MODEL, Y)


# ---------------------------------------------------------------------------- intervals


def norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Return the quantiles of the finite ``t`` at ``alpha`` as boot's ``norm.inter``.

    Interpolation on the normal quantile scale between the order statistics
    next to (R + 1) alpha (the extreme ones when that falls outside).
    """
    t = np.sort(t[np.isfinite(t)])
    R = len(t)
    if R == 0:
        return np.full(len(alpha), np.nan)
    rk = (R + 1) * np.asarray(alpha, dtype=float)
    k = np.trunc(rk).astype(int)
    out = np.empty(len(rk))
    nd = NormalDist()
    for i, (r, kk) in enumerate(zip(rk, k)):
        if kk <= 0:
            out[i] = t[0]
        elif kk >= R:
            out[i] = t[-1]
        elif kk == r:
            out[i] = t[kk - 1]
        else:
            q1 = nd.inv_cdf(kk / (R + 1))
            q2 = nd.inv_cdf((kk + 1) / (R + 1))
            w = (nd.inv_cdf(alpha[i]) - q1) / (q2 - q1)
            out[i] = t[kk - 1] + w * (t[kk] - t[kk - 1])
    return out


def percentile_interval(t: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Return boot's percentile interval (``boot.ci(type = "perc")``) of the finite ``t``."""
    lo, hi = norm_inter(np.asarray(t, dtype=float), np.array([(1 - level) / 2, (1 + level) / 2]))
    return float(lo), float(hi)


def shortest_interval(t: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Return the shortest interval between two order statistics of the finite ``t``.

    The interval holds ceil(level × R) of the R finite values.
    """
    t = np.sort(np.asarray(t, dtype=float)[np.isfinite(t)])
    R = len(t)
    if R == 0:
        return np.nan, np.nan
    m = min(max(int(math.ceil(level * R)), 1), R)
    widths = t[m - 1 :] - t[: R - m + 1]
    i = int(np.argmin(widths))
    return float(t[i]), float(t[i + m - 1])


def _interval(method: str, t: np.ndarray, t0: float, level: float) -> tuple[float, float]:
    finite = t[np.isfinite(t)]
    if len(finite) == 0:
        return np.nan, np.nan
    if method == "percentile":
        return percentile_interval(finite, level)
    if method == "shortest":
        return shortest_interval(finite, level)
    if method == "basic":
        hi_q, lo_q = norm_inter(finite, np.array([(1 + level) / 2, (1 - level) / 2]))
        return float(2 * t0 - hi_q), float(2 * t0 - lo_q)
    # normal: boot's norm.ci, bias-corrected
    if len(finite) < 2:
        return np.nan, np.nan
    bias = float(np.mean(finite)) - t0
    merr = float(np.std(finite, ddof=1)) * NormalDist().inv_cdf((1 + level) / 2)
    return t0 - bias - merr, t0 - bias + merr


# ---------------------------------------------------------------------------- result


@dataclass
class BootstrapResult:
    """A parametric bootstrap of a fitted model (lme4's ``bootMer`` object).

    Attributes
    ----------
    replicates : DataFrame
        One row per replicate (index ``replicate``): θ (``theta_<name>``), the
        residual SD ``sigma`` (models with one), the fixed effects, and the
        random-effect SDs and correlations (``sd_(Intercept)|Subject``,
        ``cor_Days.(Intercept)|Subject``); NaN rows for failed refits.
    original : Series
        The same statistics of the fitted model (boot's ``t0``).
    status : DataFrame
        Per replicate: ``failed``, ``singular``, ``converged`` and the error
        ``message`` of a failed refit.
    nsim : int
        Number of replicates.
    seed : int, Generator or None
        The ``seed`` the responses were drawn with.
    use_u : bool
        Whether the fitted random effects were kept in the simulations.
    n_jobs : int
        Number of worker processes used.
    elapsed : float
        Seconds the bootstrap took.
    n_failed : int
        Refits that raised (NaN rows).
    n_singular : int
        Refits that ended on the boundary (a zero variance or |correlation| = 1).
    n_nonconverged : int
        Refits whose optimizer did not report convergence (failures excluded).
    errors : list of (int, str)
        (replicate, message) of every failed refit.
    """

    replicates: pd.DataFrame
    original: pd.Series
    status: pd.DataFrame
    nsim: int
    seed: Any
    use_u: bool
    n_jobs: int
    elapsed: float
    _lme4_names: list[str] = field(repr=False, default_factory=list)
    _readable_names: list[str] = field(repr=False, default_factory=list)

    @property
    def n_failed(self) -> int:
        """Refits that raised (NaN rows)."""
        return int(self.status["failed"].sum())

    @property
    def n_singular(self) -> int:
        """Refits that ended on the boundary (a zero variance or |correlation| = 1)."""
        return int(self.status["singular"].sum())

    @property
    def n_nonconverged(self) -> int:
        """Refits whose optimizer did not report convergence (failures excluded)."""
        return int((~self.status["converged"] & ~self.status["failed"]).sum())

    @property
    def errors(self) -> list[tuple[int, str]]:
        """(replicate, message) of every failed refit."""
        failed = self.status[self.status["failed"]]
        return list(zip(failed.index.tolist(), failed["message"].tolist()))

    def parameters(self, names: str = "lme4") -> pd.DataFrame:
        """Return the replicates of lme4's confint parameters.

        SDs and correlations in θ order, σ, fixed effects; columns named as lme4
        (``.sig01``..., ``names="lme4"``) or readably (``names="readable"``).
        """
        cols = self._readable_names
        out = self.replicates[cols].copy()
        if names == "lme4":
            out.columns = self._lme4_names
        elif names != "readable":
            raise MixedModelsError(f"names must be 'lme4' or 'readable', not {names!r}")
        return out

    def confint(
        self, method: str = "percentile", level: float = 0.95, parm: Any = None, names: str = "lme4"
    ) -> pd.DataFrame:
        """Bootstrap confidence intervals (lme4's ``confint(bootMer)``).

        Parameters
        ----------
        method : {"percentile", "basic", "normal", "shortest"}
            boot's percentile interval (lme4's default ``"perc"``), the basic
            interval 2 t0 - percentile bounds, the bias-corrected normal
            interval (``"norm"``), or the shortest interval holding ``level``
            of the replicates. Non-finite replicates are left out, as boot does.
        level : float
            Coverage of the intervals.
        parm : None, str, int or list
            Parameters (names in either style, positions, ``"theta_"``/``"beta_"``);
            None: all.
        names : {"lme4", "readable"}
            Row names: lme4's (``.sig01``, ``.sigma``, fixed effects) or readable ones.

        Returns
        -------
        DataFrame
            Columns ``lower`` and ``upper``, indexed by ``parameter``; ``attrs``
            hold ``level``, ``method`` (e.g. "boot (percentile)"), ``nsim``,
            ``n_failed`` and ``n_singular``.
        """
        check_level(level)
        key = _METHODS.get(str(method).lower())
        if key is None:
            raise MixedModelsError(
                f"bootstrap interval method must be one of {sorted(set(_METHODS))}, not {method!r}"
            )
        table = self.parameters("readable")
        t0 = self.original[self._readable_names].to_numpy()
        labels = self._lme4_names if names == "lme4" else self._readable_names
        positions = self._select(parm)
        lower, upper = [], []
        for i in positions:
            lo, hi = _interval(key, table.iloc[:, i].to_numpy(), float(t0[i]), level)
            lower.append(lo)
            upper.append(hi)
        out = interval_frame([labels[i] for i in positions], lower, upper, level, f"boot ({key})")
        out.attrs.update(nsim=self.nsim, n_failed=self.n_failed, n_singular=self.n_singular)
        return out

    def _select(self, parm: Any) -> list[int]:
        if parm is None:
            return list(range(len(self._lme4_names)))
        items = [parm] if isinstance(parm, (str, int, np.integer)) else list(parm)
        nvp = sum(1 for n in self._lme4_names if n.startswith("."))
        out: list[int] = []
        for item in items:
            if isinstance(item, (int, np.integer)):
                out.append(int(item))
            elif item == "theta_":
                out.extend(range(nvp))
            elif item == "beta_":
                out.extend(range(nvp, len(self._lme4_names)))
            elif item in self._lme4_names:
                out.append(self._lme4_names.index(item))
            elif item in self._readable_names:
                out.append(self._readable_names.index(item))
            else:
                raise MixedModelsError(
                    f"unknown parameter {item!r}: the parameters are {', '.join(self._lme4_names)}"
                )
        return sorted(set(out))

    def summary(self) -> pd.DataFrame:
        """Return boot's print: the original estimate, the bias and the standard error.

        One row per statistic; the bias is the mean of the replicates less the
        original estimate.
        """
        reps = self.replicates
        return pd.DataFrame(
            {
                "original": self.original,
                "bias": reps.mean() - self.original,
                "std_error": reps.std(ddof=1),
            }
        )

    def __repr__(self) -> str:
        return (
            f"<BootstrapResult: {self.nsim} parametric replicates ({self.n_failed} failed, "
            f"{self.n_singular} singular, {self.n_nonconverged} not converged), "
            f"{self.elapsed:.1f} s>"
        )


class BootProgress(FitProgress):
    """Progress of a bootstrap: replicates done of the total."""

    def __init__(self, total: int, **kwargs: Any):
        super().__init__("bootstrap", **kwargs)
        self.total = total

    def text(self, now: float | None = None) -> str:
        """Return the progress line: replicates done of the total, and the seconds elapsed."""
        done, _ = self._state
        elapsed = (self.clock() if now is None else now) - self.start
        return f"bootstrap: {done} of {self.total} replicates, {elapsed:.1f} s"


# ---------------------------------------------------------------------------- driver


def bootstrap(
    model: Any,
    nsim: int = 1000,
    seed: int | np.random.Generator | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    use_u: bool = False,
) -> BootstrapResult:
    """Parametric bootstrap of a fitted model (lme4's ``bootMer(type = "parametric")``).

    Parameters
    ----------
    model : LinearMixedModel or GeneralizedLinearMixedModel
        A fitted model with ``simulate`` and ``refit``.
    nsim : int
        Number of replicates.
    seed : int or Generator, optional
        Seeds the one Generator all responses are drawn from.
    n_jobs : int
        Worker processes for the refits (-1: one per core). The result does
        not depend on it.
    progress : bool
        Show the replicates done.
    use_u : bool
        Keep the fitted random effects in the simulations (lme4's
        ``use.u = TRUE``) instead of drawing new ones.

    Returns
    -------
    BootstrapResult
    """
    for needed in ("simulate", "refit"):
        if not callable(getattr(model, needed, None)):
            raise MixedModelsError(
                f"{type(model).__name__} has no {needed}(): it cannot be bootstrapped"
            )
    model.require_fit()
    nsim = int(nsim)
    if nsim < 1:
        raise MixedModelsError(f"nsim must be a positive number of replicates, not {nsim}")
    jobs = _jobs(n_jobs, nsim)
    t0 = time.perf_counter()
    Y = np.asarray(model.simulate(nsim, seed=seed, use_u=use_u), dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    _prepare(model)
    monitor = BootProgress(nsim) if progress else None
    try:
        values, status = _run(model, Y, jobs, monitor)
    finally:
        if monitor is not None:
            monitor.close()
    return _result(model, values, status, nsim, seed, use_u, jobs, time.perf_counter() - t0)


def _jobs(n_jobs: int, nsim: int) -> int:
    n = int(n_jobs)
    if n == -1 or n == 0:
        n = os.cpu_count() or 1
    if n < 1:
        raise MixedModelsError(f"n_jobs must be a positive number of processes or -1, not {n_jobs}")
    return max(1, min(n, nsim))


def _prepare(model: Any) -> None:
    """Compute what every refit shares once, before any worker starts."""
    prepare = getattr(model, "prepare_refits", None)
    if callable(prepare):
        prepare()


def _run(model: Any, Y: np.ndarray, jobs: int, monitor) -> tuple[np.ndarray, list]:
    nsim = Y.shape[1]
    if jobs == 1:
        values, status = [], []
        step = max(1, min(50, nsim // 20 or 1))
        for start in range(0, nsim, step):
            v, s = _refit_block(model, Y[:, start : start + step])
            values.append(v)
            status.extend(s)
            if monitor is not None:
                monitor(len(status), float("nan"))
        return np.vstack(values), status
    return _run_parallel(model, Y, jobs, monitor)


def _run_parallel(model: Any, Y: np.ndarray, jobs: int, monitor) -> tuple[np.ndarray, list]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    nsim = Y.shape[1]
    methods = mp.get_all_start_methods()
    context = mp.get_context("fork" if "fork" in methods else None)
    chunks = max(jobs * 4, 1)
    edges = np.linspace(0, nsim, min(chunks, nsim) + 1).astype(int)
    blocks: dict[int, tuple[np.ndarray, list]] = {}
    done = 0
    pool = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_worker_init, initargs=(model,)
    )
    with pool as ex:
        futures = [
            ex.submit(_worker_run, int(a), Y[:, a:b])
            for a, b in zip(edges[:-1], edges[1:])
            if b > a
        ]
        for fut in as_completed(futures):
            start, (v, s) = fut.result()
            blocks[start] = (v, s)
            done += len(s)
            if monitor is not None:
                monitor(done, float("nan"))
    values, status = [], []
    for start in sorted(blocks):
        values.append(blocks[start][0])
        status.extend(blocks[start][1])
    return np.vstack(values), status


def _result(model, values, status, nsim, seed, use_u, jobs, elapsed) -> BootstrapResult:
    theta_cols, fixed_cols, sdcor_cols = _columns(model)
    scale = ["sigma"] if has_residual_sd(model) else []
    columns = theta_cols + scale + fixed_cols + sdcor_cols
    index = pd.RangeIndex(nsim, name="replicate")
    replicates = pd.DataFrame(values, index=index, columns=columns)
    original = pd.Series(_statistics(model), index=columns, name="original")
    status_frame = pd.DataFrame(
        {
            "failed": [bool(s[2]) for s in status],
            "singular": [s[0] for s in status],
            "converged": [s[1] for s in status],
            "message": [s[2] for s in status],
        },
        index=index,
    )
    lme4 = parameter_names(model, "lme4")
    readable = parameter_names(model, "readable")
    result = BootstrapResult(
        replicates=replicates,
        original=original,
        status=status_frame,
        nsim=nsim,
        seed=seed,
        use_u=use_u,
        n_jobs=jobs,
        elapsed=elapsed,
        _lme4_names=lme4,
        _readable_names=readable,
    )
    if result.n_failed:
        warnings.warn(
            f"{result.n_failed} of {nsim} bootstrap refits failed (NaN rows; see .errors)",
            stacklevel=3,
        )
    return result
