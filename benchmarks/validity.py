"""Statistical validity of the inference functions (Monte Carlo, fixed seed).

    python benchmarks/validity.py [--datasets N] [--profile-datasets P]
        [--boot-datasets M] [--nboot B] [--seed S] [--jobs J] [--quick]

Design: ``SUBJECTS`` subjects x ``ITEMS`` items, fully crossed, with a fixed
pattern of ``MISSING`` missing cells (the same for every dataset: without it
the design is balanced, where Kenward-Roger and Satterthwaite coincide
exactly and the comparison would say nothing). The condition ``cond`` is
between items (half the items at -0.5, half at +0.5) and within subjects; its
true effect is 0. The model, fitted by REML::

    y ~ cond + (1 + cond | subject) + (1 | item)

with true subject intercept SD 0.7, subject slope SD 0.6, their correlation
0.3, item intercept SD 0.5 and residual SD 1 (few singular fits).

1. Type-I error: Satterthwaite and Kenward-Roger t tests of ``cond`` (and the
   asymptotic z test, for reference) over ``--datasets`` simulated datasets:
   rejection rates at 0.05 and 0.01 with binomial Monte Carlo SEs and
   Clopper-Pearson 95% intervals.
2. Coverage of 95% intervals of the item intercept SD (``sd_(Intercept)|item``,
   lme4's ``.sig04``): likelihood-profile intervals over ``--profile-datasets``
   datasets and parametric-bootstrap percentile intervals (``--nboot``
   replicates) over ``--boot-datasets`` datasets; the bootstrap coverage of
   every other parameter is reported too (it costs nothing more). The
   coverage to expect of such intervals with 16 items, two of whose fixed
   effects are estimated at the item level, comes from a closed-form one-way
   analogue (``analytic_reference``): about 0.91 for the percentile bootstrap
   and for the ML profile lme4 uses (0.95 for a REML profile).

Every dataset is refitted from one template fit (``template.refit(y)``: only
the response changes). Dataset i's response is drawn from
``SeedSequence(seed, spawn_key=(i,))`` and its bootstrap from
``SeedSequence(seed, spawn_key=(i, 1))``, so results depend on ``--seed``
only, not on ``--jobs`` nor on the number of datasets (the first datasets of
a larger run are those of a smaller one, and the three parts share them).
Failed fits, NaN p-values or intervals and singular fits are counted, never
dropped silently. Writes ``benchmarks/validity_results.json``.
"""

from __future__ import annotations

import os

# One BLAS thread per process: the workers are the parallelism, and these
# blocks are far too small for threaded BLAS (set before numpy is imported).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

import mixedmodels as mm

SUBJECTS, ITEMS = 24, 16
MISSING = 0.10  # fraction of subject x item cells missing (fixed pattern)
DESIGN_SEED = 20_240_905  # the design (missing cells) does not change with --seed
TRUE = {
    "sd_(Intercept)|subject": 0.7,
    "cor_cond.(Intercept)|subject": 0.3,
    "sd_cond|subject": 0.6,
    "sd_(Intercept)|item": 0.5,
    "sigma": 1.0,
    "(Intercept)": 0.0,
    "cond": 0.0,
}
FORMULA = "y ~ cond + (1 + cond | subject) + (1 | item)"
TARGET = "sd_(Intercept)|item"  # the variance component whose coverage is judged
TESTED = "cond"
TYPE1_RANGE = (0.04, 0.06)
COVERAGE_RANGE = (0.93, 0.97)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "validity_results.json")


# ---------------------------------------------------------------------------- design and data


def _set_design_size(subjects: int, items: int, target: str) -> None:
    """Another design size (--subjects, --items) or judged component (--target) for the run."""
    global SUBJECTS, ITEMS, TARGET
    SUBJECTS, ITEMS, TARGET = subjects, items, target


def make_design() -> pd.DataFrame:
    """The crossed design with its fixed pattern of missing cells."""
    subj = np.repeat(np.arange(SUBJECTS), ITEMS)
    item = np.tile(np.arange(ITEMS), SUBJECTS)
    rng = np.random.default_rng(DESIGN_SEED)
    keep = np.ones(subj.size, dtype=bool)
    keep[rng.choice(subj.size, round(MISSING * subj.size), replace=False)] = False
    subj, item = subj[keep], item[keep]
    return pd.DataFrame(
        {
            "cond": np.where(item < ITEMS // 2, -0.5, 0.5),
            "subject": [f"s{i:02d}" for i in subj],
            "item": [f"i{i:02d}" for i in item],
            "_s": subj,
            "_i": item,
        }
    )


def simulate(design: pd.DataFrame, seed: int, i: int) -> np.ndarray:
    """Dataset ``i``'s response from the true model (null ``cond`` effect)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
    s0, s1 = TRUE["sd_(Intercept)|subject"], TRUE["sd_cond|subject"]
    rho = TRUE["cor_cond.(Intercept)|subject"]
    chol = np.linalg.cholesky(np.array([[s0 * s0, rho * s0 * s1], [rho * s0 * s1, s1 * s1]]))
    b = rng.standard_normal((SUBJECTS, 2)) @ chol.T
    c = TRUE["sd_(Intercept)|item"] * rng.standard_normal(ITEMS)
    e = TRUE["sigma"] * rng.standard_normal(len(design))
    s, it, x = design["_s"].to_numpy(), design["_i"].to_numpy(), design["cond"].to_numpy()
    return TRUE["(Intercept)"] + TRUE["cond"] * x + b[s, 0] + b[s, 1] * x + c[it] + e


# ---------------------------------------------------------------------------- per-dataset work

# Set in the parent before the worker processes fork (inherited, not pickled).
_STATE: dict[str, Any] = {}


def _refit(i: int):
    """Dataset ``i``'s REML fit, its status and the warnings it raised."""
    y = simulate(_STATE["design"], _STATE["seed"], i)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = _STATE["template"].refit(y)
    return fit, [w.category.__name__ for w in caught]


def _fit_status(fit) -> dict:
    return {
        "singular": bool(fit.is_singular),
        "singular_terms": fit._singular_terms(),
        "converged": bool(fit.optsum.converged),
        "theta": [float(v) for v in fit.theta_vector],
        "sigma": float(fit.sigma),
    }


def type1_task(i: int) -> dict:
    """p-values of the null effect by Satterthwaite, Kenward-Roger and z."""
    out: dict[str, Any] = {"i": i}
    try:
        fit, warns = _refit(i)
    except Exception as err:  # noqa: BLE001 - a failed fit is counted, not fatal
        return {**out, "fit_error": f"{type(err).__name__}: {err}"}
    out.update(_fit_status(fit), fit_warnings=warns)
    for key, ddf in (("sat", "satterthwaite"), ("kr", "kenward-roger"), ("z", "asymptotic")):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                row = fit.coef_table(ddf=ddf).loc[TESTED]
            out[key] = {
                "p": float(row["p_value"]),
                "df": float(row["df"]),
                "se": float(row["se"]),
                "t": float(row["t"]),
                "warnings": [w.category.__name__ for w in caught],
            }
        except Exception as err:  # noqa: BLE001
            out[key] = {"error": f"{type(err).__name__}: {err}"}
    return out


def profile_task(i: int) -> dict:
    """The 95% profile interval of the target variance component."""
    out: dict[str, Any] = {"i": i}
    t0 = time.perf_counter()
    try:
        fit, warns = _refit(i)
        out.update(_fit_status(fit), fit_warnings=warns)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ci = fit.confint(parm=TARGET, method="profile", names="readable")
        out["lower"], out["upper"] = (float(v) for v in ci.loc[TARGET, ["lower", "upper"]])
        out["warnings"] = [str(w.message)[:120] for w in caught]
        group = TARGET.split("|")[-1]  # noqa: F841 - read by the query's @group
        out["estimate"] = float(fit.varcorr.query("grp == @group")["sdcor"].iloc[0])  # REML
    except Exception as err:  # noqa: BLE001
        out["error"] = f"{type(err).__name__}: {err}"
    out["seconds"] = time.perf_counter() - t0
    return out


def boot_task(i: int) -> dict:
    """Percentile intervals of every parameter from a parametric bootstrap."""
    out: dict[str, Any] = {"i": i}
    t0 = time.perf_counter()
    try:
        fit, warns = _refit(i)
        out.update(_fit_status(fit), fit_warnings=warns)
        rng = np.random.default_rng(np.random.SeedSequence(_STATE["seed"], spawn_key=(i, 1)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            boot = fit.bootstrap(_STATE["nboot"], seed=rng, n_jobs=1)
            ci = boot.confint("percentile", level=0.95, names="readable")
        out["intervals"] = {
            name: [float(ci.loc[name, "lower"]), float(ci.loc[name, "upper"])] for name in ci.index
        }
        out["n_failed"] = boot.n_failed
        out["n_singular"] = boot.n_singular
        out["n_nonconverged"] = boot.n_nonconverged
        out["warnings"] = [str(w.message)[:120] for w in caught]
    except Exception as err:  # noqa: BLE001
        out["error"] = f"{type(err).__name__}: {err}"
    out["seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------- running


class Progress:
    """One line on standard error, rewritten: done / total, elapsed, ETA."""

    def __init__(self, label: str, total: int, interval: float = 1.0):
        self.label, self.total, self.interval = label, total, interval
        self.start = time.perf_counter()
        self._last = -np.inf
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self._last < (self.interval if self.tty else 30.0):
            return
        self._last = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else float("nan")
        line = f"{self.label}: {done}/{self.total}, {elapsed:.0f} s elapsed, ETA {eta:.0f} s"
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        if done >= self.total and self.tty:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_tasks(task: Callable[[int], dict], n: int, jobs: int, label: str) -> tuple[list[dict], float]:
    """``task(i)`` for i < n on ``jobs`` forked processes, in index order, and the seconds."""
    progress = Progress(label, n)
    t0 = time.perf_counter()
    results: list[dict] = []
    if jobs <= 1 or n < 2:
        for i in range(n):
            results.append(task(i))
            progress(len(results))
    else:
        ctx = mp.get_context("fork")
        chunk = max(1, min(20, n // (jobs * 8) or 1))
        with ctx.Pool(jobs) as pool:
            for res in pool.imap(task, range(n), chunksize=chunk):
                results.append(res)
                progress(len(results))
    return results, time.perf_counter() - t0


# ---------------------------------------------------------------------------- summaries


def binomial(k: int, n: int) -> dict:
    """Proportion, binomial Monte Carlo SE and Clopper-Pearson 95% interval."""
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "mc_se": None, "ci95": [None, None]}
    p = k / n
    lo = 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))
    return {"k": int(k), "n": int(n), "rate": p, "mc_se": float(np.sqrt(p * (1 - p) / n)), "ci95": [lo, hi]}


def summarise_type1(rows: list[dict]) -> dict:
    fitted = [r for r in rows if "fit_error" not in r]
    out: dict[str, Any] = {
        "datasets": len(rows),
        "fit_errors": len(rows) - len(fitted),
        "singular_fits": sum(r["singular"] for r in fitted),
        "singular_terms": dict(Counter(t for r in fitted for t in r["singular_terms"])),
        "nonconverged_fits": sum(not r["converged"] for r in fitted),
        "fit_warnings": dict(Counter(w for r in fitted for w in r["fit_warnings"])),
        "methods": {},
    }
    for key, name in (("sat", "satterthwaite"), ("kr", "kenward-roger"), ("z", "asymptotic (z)")):
        res = [r[key] for r in fitted]
        ok = [x for x in res if "error" not in x and np.isfinite(x["p"])]
        p = np.array([x["p"] for x in ok])
        nonsing = np.array([x["p"] for r, x in zip(fitted, res) if not r["singular"] and x in ok])
        df = np.array([x["df"] for x in ok])
        m: dict[str, Any] = {
            "errors": sum("error" in x for x in res),
            "nan_p": sum("error" not in x and not np.isfinite(x["p"]) for x in res),
            "warnings": dict(Counter(w for x in res if "error" not in x for w in x["warnings"])),
            "error_messages": sorted({x["error"] for x in res if "error" in x})[:5],
        }
        for alpha in (0.05, 0.01):
            b = binomial(int(np.sum(p < alpha)), p.size)
            if alpha == 0.05 and b["rate"] is not None:
                b["in_expected_range"] = TYPE1_RANGE[0] <= b["rate"] <= TYPE1_RANGE[1]
                b["expected_range"] = list(TYPE1_RANGE)
            m[f"alpha_{alpha}"] = b
            m[f"alpha_{alpha}_nonsingular"] = binomial(int(np.sum(nonsing < alpha)), nonsing.size)
        if df.size and np.isfinite(df).any():
            m["df"] = {"mean": float(np.mean(df)), "median": float(np.median(df)),
                       "min": float(np.min(df)), "max": float(np.max(df))}
        # uniformity of the null p-values beyond one threshold
        if p.size > 10:
            ks = stats.kstest(p, "uniform")
            m["ks_uniform"] = {"statistic": float(ks.statistic), "p_value": float(ks.pvalue)}
        out["methods"][name] = m
    sat = {r["i"]: r["sat"] for r in fitted if "error" not in r["sat"]}
    kr = {r["i"]: r["kr"] for r in fitted if "error" not in r["kr"]}
    both = sorted(set(sat) & set(kr))
    if both:
        out["satterthwaite_vs_kr"] = {
            "max_abs_p_difference": float(max(abs(sat[i]["p"] - kr[i]["p"]) for i in both)),
            "mean_df_ratio_kr_over_sat": float(np.mean([kr[i]["df"] / sat[i]["df"] for i in both])),
            "mean_se_ratio_kr_over_sat": float(np.mean([kr[i]["se"] / sat[i]["se"] for i in both])),
            "decisions_differ_at_0.05": int(sum((sat[i]["p"] < 0.05) != (kr[i]["p"] < 0.05) for i in both)),
        }
    return out


def coverage(intervals: list[tuple[float, float]], truth: float) -> dict:
    """Coverage of ``truth`` (NaN intervals counted apart), misses by side, widths."""
    arr = np.array(intervals, dtype=float).reshape(-1, 2)
    ok = np.all(np.isfinite(arr), axis=1)
    good = arr[ok]
    covered = (good[:, 0] <= truth) & (truth <= good[:, 1])
    out = binomial(int(covered.sum()), int(ok.sum()))
    out.update(
        nan_intervals=int((~ok).sum()),
        miss_low=int(np.sum(good[:, 1] < truth)),  # interval wholly below the truth
        miss_high=int(np.sum(good[:, 0] > truth)),  # wholly above
        lower_at_zero=int(np.sum(good[:, 0] <= 0.0)),
        mean_width=float(np.mean(good[:, 1] - good[:, 0])) if good.size else None,
        expected_range=list(COVERAGE_RANGE),
    )
    if out["rate"] is not None:
        out["in_expected_range"] = COVERAGE_RANGE[0] <= out["rate"] <= COVERAGE_RANGE[1]
    return out


def summarise_profile(rows: list[dict]) -> dict:
    good = [r for r in rows if "error" not in r]
    ints = [(r["lower"], r["upper"]) for r in good]
    est = np.array([r["estimate"] for r in good])
    return {
        "parameter": TARGET,
        "true_value": TRUE[TARGET],
        "datasets": len(rows),
        "errors": len(rows) - len(good),
        "error_messages": sorted({r["error"] for r in rows if "error" in r})[:5],
        "singular_fits": sum(r["singular"] for r in good),
        "singular_terms": dict(Counter(t for r in good for t in r["singular_terms"])),
        "warnings": dict(Counter(w for r in good for w in r["warnings"])),
        "coverage": coverage(ints, TRUE[TARGET]),
        "mean_estimate_reml": float(est.mean()) if est.size else None,
        "seconds_per_dataset": float(np.mean([r["seconds"] for r in rows])),
    }


def summarise_boot(rows: list[dict], nboot: int) -> dict:
    good = [r for r in rows if "error" not in r]
    names = list(TRUE)
    per = {
        name: coverage([r["intervals"].get(name, [np.nan, np.nan]) for r in good], TRUE[name])
        for name in names
    }
    return {
        "parameter": TARGET,
        "true_value": TRUE[TARGET],
        "datasets": len(rows),
        "nboot": nboot,
        "interval": "percentile",
        "errors": len(rows) - len(good),
        "error_messages": sorted({r["error"] for r in rows if "error" in r})[:5],
        "singular_fits": sum(r["singular"] for r in good),
        "singular_terms": dict(Counter(t for r in good for t in r["singular_terms"])),
        "replicates_failed": int(sum(r["n_failed"] for r in good)),
        "replicates_singular": int(sum(r["n_singular"] for r in good)),
        "replicates_nonconverged": int(sum(r["n_nonconverged"] for r in good)),
        "warnings": dict(Counter(w for r in good for w in r["warnings"])),
        "coverage": per[TARGET],
        "coverage_all_parameters": per,
        "seconds_per_dataset": float(np.mean([r["seconds"] for r in rows])),
    }


def analytic_reference(levels: int = ITEMS, fixed_between: int = 2, level: float = 0.95) -> dict:
    """Coverage to expect of the item-SD intervals, from the balanced one-way
    analogue: the item means' sum of squares S ~ λ χ²_k, λ = n σ_item² + σ²,
    with k = levels - fixed_between (the intercept and ``cond`` are estimated
    at the item level), σ² treated as known and the boundary ignored.

    * Percentile bootstrap of the REML estimate λ̂ = S/k: the interval
      [λ̂ c_lo, λ̂ c_hi] (c = χ²_k quantiles / k) covers λ iff λ̂/λ lies in
      [1/c_hi, 1/c_lo]; the exact interval would be [λ̂/c_hi, λ̂/c_lo].
    * Likelihood profile: the deviance g log λ + S/λ, with g = k (REML) or
      g = levels (ML, which lme4 and this package profile); covers iff
      g (u - 1 - log u) <= χ²_1(level), u = S/(g λ).
    """
    from scipy import optimize

    k = levels - fixed_between
    alpha = 1 - level
    c_lo, c_hi = stats.chi2.ppf([alpha / 2, 1 - alpha / 2], k) / k
    cut = stats.chi2.ppf(level, 1)
    out: dict[str, Any] = {
        "assumptions": f"balanced one-way analogue, item-level df k = {levels} - {fixed_between}, "
                       "residual variance known, boundary ignored",
        "percentile_bootstrap": {
            "coverage": float(stats.chi2.cdf(k / c_lo, k) - stats.chi2.cdf(k / c_hi, k)),
            "p_interval_below_truth": float(stats.chi2.cdf(k / c_hi, k)),
        },
    }
    for label, g in (("profile_ml", levels), ("profile_reml", k)):
        def f(u: float, g: int = g) -> float:
            return g * (u - 1 - np.log(u)) - cut

        lo, hi = optimize.brentq(f, 1e-9, 1.0), optimize.brentq(f, 1.0, 100.0)
        out[label] = {
            "coverage": float(stats.chi2.cdf(hi * g, k) - stats.chi2.cdf(lo * g, k)),
            "p_interval_below_truth": float(stats.chi2.cdf(lo * g, k)),
        }
    return out


def check_refits(design: pd.DataFrame, seed: int, n: int) -> dict:
    """REML criterion of ``template.refit(y)`` against a fresh fit, first n datasets:
    the refit shortcut must reach the same optimum."""
    diffs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            y = simulate(design, seed, i)
            fresh = mm.lmer(FORMULA, design.assign(y=y))
            diffs.append(_STATE["template"].refit(y).reml_criterion - fresh.reml_criterion)
    d = np.array(diffs)
    return {"datasets": n, "max_refit_minus_fresh": float(d.max()) if n else None,
            "min_refit_minus_fresh": float(d.min()) if n else None}


# ---------------------------------------------------------------------------- report


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    import scipy

    return {
        "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
        "load_average_at_end": load, "python": platform.python_version(),
        "mixedmodels": getattr(mm, "__version__", None), "numpy": np.__version__,
        "scipy": scipy.__version__, "pandas": pd.__version__,
    }


def _fmt(b: dict) -> str:
    if b.get("rate") is None:
        return "n/a"
    lo, hi = b["ci95"]
    return f"{b['rate']:.4f} ({b['mc_se']:.4f})  [{lo:.4f}, {hi:.4f}]  n={b['n']}"


def print_report(res: dict) -> None:
    s = res["settings"]
    print(f"\nDesign: {s['design']}; model {s['formula']} (REML); seed {s['seed']}")
    if "type1" in res:
        t = res["type1"]
        print(f"\nType-I error of the null '{TESTED}' effect over {t['datasets']} datasets "
              f"({t['singular_fits']} singular, {t['fit_errors']} failed fits)")
        print(f"{'method':<16} {'alpha=0.05: rate (MC SE) [95% CI]':<48} {'in 0.04-0.06':<13} "
              f"{'alpha=0.01: rate (MC SE)':<26} mean df")
        for name, m in t["methods"].items():
            a5, a1 = m["alpha_0.05"], m["alpha_0.01"]
            inr = a5.get("in_expected_range")
            rate1 = "n/a" if a1["rate"] is None else f"{a1['rate']:.4f} ({a1['mc_se']:.4f})"
            df = m.get("df", {}).get("mean")
            print(f"{name:<16} {_fmt(a5):<48} {inr!s:<13} {rate1:<26} "
                  f"{'inf' if df is None or not np.isfinite(df) else f'{df:.2f}'}")
    for key, label in (("profile", "profile"), ("bootstrap", "bootstrap percentile")):
        if key not in res:
            continue
        c = res[key]
        cov = c["coverage"]
        extra = f", {c['nboot']} replicates each" if key == "bootstrap" else ""
        print(f"\nCoverage of 95% {label} intervals of {c['parameter']} (true {c['true_value']}) "
              f"over {c['datasets']} datasets{extra}")
        print(f"  coverage (MC SE) [95% CI]: {_fmt(cov)}; in 0.93-0.97: {cov.get('in_expected_range')}")
        print(f"  misses: interval below truth {cov['miss_low']}, above truth {cov['miss_high']}; "
              f"NaN intervals {cov['nan_intervals']}; errors {c['errors']}; "
              f"singular fits {c['singular_fits']}; mean width {cov['mean_width']:.4f}")
        if key == "bootstrap":
            print(f"  replicates: {c['replicates_failed']} failed, {c['replicates_singular']} singular, "
                  f"{c['replicates_nonconverged']} not converged")
            for name, cv in c["coverage_all_parameters"].items():
                if name != TARGET:
                    print(f"    {name:<30} {_fmt(cv)}")
    ref = res.get("analytic_reference")
    if ref:
        print(f"\nExpected coverage of the item-SD intervals in the one-way analogue ({ref['assumptions']}):")
        for name in ("percentile_bootstrap", "profile_ml", "profile_reml"):
            print(f"  {name:<22} {ref[name]['coverage']:.4f} "
                  f"(interval below the truth {ref[name]['p_interval_below_truth']:.4f})")
    print(f"\nElapsed: {res['elapsed_seconds']}")


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=5000, help="datasets for the type-I error")
    ap.add_argument("--profile-datasets", type=int, default=1000)
    ap.add_argument("--boot-datasets", type=int, default=500)
    ap.add_argument("--nboot", type=int, default=1000, help="bootstrap replicates per dataset")
    ap.add_argument("--seed", type=int, default=20240905)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (over datasets)")
    ap.add_argument("--check-fits", type=int, default=20,
                    help="datasets whose refit is checked against a fresh fit")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 200 / 50 / 20 datasets, 200 bootstrap replicates")
    ap.add_argument("--subjects", type=int, default=SUBJECTS, help="subjects of the design")
    ap.add_argument("--items", type=int, default=ITEMS,
                    help="items of the design (the SD whose intervals are checked has this many groups)")
    ap.add_argument("--target", default=TARGET, choices=[k for k in TRUE if k.startswith("sd_")],
                    help="the variance component whose interval coverage is judged")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    _set_design_size(args.subjects, args.items, args.target)
    if args.quick:
        args.datasets, args.profile_datasets = min(args.datasets, 200), min(args.profile_datasets, 50)
        args.boot_datasets, args.nboot = min(args.boot_datasets, 20), min(args.nboot, 200)
        args.check_fits = min(args.check_fits, 5)

    t_all = time.perf_counter()
    design = make_design()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        template = mm.lmer(FORMULA, design.assign(y=simulate(design, args.seed, 0)))
    template.prepare_refits()  # the refits' shared starting curvature, before forking
    _STATE.update(design=design, seed=args.seed, template=template, nboot=args.nboot)

    res: dict[str, Any] = {
        "settings": {
            "design": f"{SUBJECTS} subjects x {ITEMS} items crossed, {len(design)} observations "
                      f"({MISSING:.0%} of cells missing, fixed pattern, design seed {DESIGN_SEED}); "
                      "cond between items (+-0.5), within subjects",
            "formula": FORMULA, "reml": True, "true_values": TRUE, "tested_effect": TESTED,
            "seed": args.seed, "datasets": args.datasets, "profile_datasets": args.profile_datasets,
            "boot_datasets": args.boot_datasets, "nboot": args.nboot, "jobs": args.jobs,
            "quick": args.quick, "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        },
        "elapsed_seconds": {},
    }
    if TARGET == "sd_(Intercept)|item":  # the closed form is the item SD's
        res["analytic_reference"] = analytic_reference(ITEMS)
    t0 = time.perf_counter()
    res["refit_check"] = check_refits(design, args.seed, args.check_fits)
    res["elapsed_seconds"]["refit_check"] = round(time.perf_counter() - t0, 1)
    if args.datasets > 0:
        rows, sec = run_tasks(type1_task, args.datasets, args.jobs, "type-I")
        res["type1"] = summarise_type1(rows)
        res["elapsed_seconds"]["type1"] = round(sec, 1)
        write_results(res, args.out)
    if args.profile_datasets > 0:
        rows, sec = run_tasks(profile_task, args.profile_datasets, args.jobs, "profile")
        res["profile"] = summarise_profile(rows)
        res["elapsed_seconds"]["profile"] = round(sec, 1)
        write_results(res, args.out)
    if args.boot_datasets > 0:
        rows, sec = run_tasks(boot_task, args.boot_datasets, args.jobs, "bootstrap")
        res["bootstrap"] = summarise_boot(rows, args.nboot)
        res["elapsed_seconds"]["bootstrap"] = round(sec, 1)
        write_results(res, args.out)
    res["elapsed_seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    res["complete"] = True
    write_results(res, args.out)
    print_report(res)
    print(f"wrote {args.out}")
    return 0


def write_results(res: dict, path: str) -> None:
    """The results so far as JSON (after every part: a long run stopped
    midway keeps what it finished, marked ``"complete": false``)."""
    res["machine"] = machine_info()
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"complete": False, **res}, fh, indent=2, default=float)
        fh.write("\n")


if __name__ == "__main__":
    sys.exit(main())
