"""Parametric bootstrap and refit timing of mixedmodels against lme4's bootMer.

    python benchmarks/bootstrap_bench.py [--nsim 1000] [--jobs 1,2] [--no-r]

Problem: sleepstudy, ``Reaction ~ Days + (Days | Subject)`` (REML, 180 rows).
Targets: a refit well under 3 ms; 1,000 bootstrap replicates in <= 3 s.

Prints the median time of one ``refit`` (to a simulated response), the time of
``m.bootstrap(nsim)`` for every ``--jobs`` value (with its failed/singular
counts), and, when ``Rscript`` with lme4 is installed, the elapsed time of one
``bootMer(fm, FUN, nsim, type = "parametric")`` call in R (the statistic is
lme4's confint one: the SD/correlation parameters, sigma and the fixed
effects) and the ratio. The machine's load is printed too: on a shared
machine timings are only comparable at equal load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

import mixedmodels as mm

FORMULA = "Reaction ~ Days + (Days | Subject)"

R_SCRIPT = r"""
suppressMessages(library(lme4))
fm <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
FUN <- function(x) c(getME(x, "theta"), sigma(x), fixef(x))
t <- system.time(b <- bootMer(fm, FUN, nsim = NSIM, seed = 1, type = "parametric"))
cat(sprintf("%.6f %d\n", t[["elapsed"]], sum(!complete.cases(b$t))))
"""


def refit_time(m, n: int = 200) -> float:
    """Median seconds of one refit to a simulated response."""
    Y = m.simulate(n, seed=99).to_numpy()
    m._curvature_inverse()  # shared by every refit (computed once by bootstrap too)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            t0 = time.perf_counter()
            m.refit(Y[:, i])
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def r_bootmer(nsim: int) -> tuple[float, int] | None:
    """(elapsed seconds, failed replicates) of lme4's bootMer, or None without R."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(R_SCRIPT.replace("NSIM", str(nsim)))
        path = fh.name
    try:
        out = subprocess.run(["Rscript", path], check=False, capture_output=True, text=True, timeout=3600)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        print("R failed:", out.stderr.strip()[-500:], file=sys.stderr)
        return None
    elapsed, failed = out.stdout.split()[-2:]
    return float(elapsed), int(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsim", type=int, default=1000)
    parser.add_argument("--jobs", default="1", help="comma-separated n_jobs values to time")
    parser.add_argument("--no-r", action="store_true", help="skip lme4's bootMer")
    args = parser.parse_args()

    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    m = mm.lmer(FORMULA, mm.datasets.load("sleepstudy"))
    m.bootstrap(nsim=5, seed=0)  # warm-up (imports, caches)
    print(f"refit: median {refit_time(m) * 1e3:.2f} ms (target: well under 3 ms)")

    ours = None
    for jobs in (int(j) for j in args.jobs.split(",")):
        t0 = time.perf_counter()
        b = m.bootstrap(nsim=args.nsim, seed=1, n_jobs=jobs)
        elapsed = time.perf_counter() - t0
        ours = elapsed if ours is None else min(ours, elapsed)
        print(
            f"bootstrap nsim={args.nsim} n_jobs={jobs}: {elapsed:.2f} s "
            f"({b.n_failed} failed, {b.n_singular} singular, {b.n_nonconverged} not converged)"
            f"{'  target <= 3 s: ' + ('met' if elapsed <= 3 else 'NOT met') if args.nsim == 1000 else ''}"
        )
    if args.no_r:
        return
    r = r_bootmer(args.nsim)
    if r is None:
        print("lme4 bootMer: not run (no Rscript with lme4)")
        return
    print(f"lme4 bootMer nsim={args.nsim}: {r[0]:.2f} s ({r[1]} failed); "
          f"ratio lme4 / ours = {r[0] / ours:.1f}x")


if __name__ == "__main__":
    main()
