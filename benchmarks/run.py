"""Fit-time and memory benchmark of mixedmodels against lme4, in one command.

    python benchmarks/run.py [--only NAME[,NAME]] [--no-r] [--r-large] [--quick]

Problems (``--only`` takes these names)
--------------------------------------
sleepstudy   Reaction ~ Days + (Days | Subject), REML; 180 rows
             target: <= 5 ms per whole lmer() call
insteval     y ~ 1 + service + (1|s) + (1|d) + (1|dept), ML; 73,421 rows
             target: >= 20x faster than lme4
insteval_wide  y ~ 1 + service * dept + (1|s) + (1|d), ML (28 fixed effects)
             target: >= 20x faster than lme4
maximal      y ~ 1 + A*B*C + (1 + A*B*C | subj) + (1 + A*B*C | item), REML;
             simulated 56 subjects x 32 items, 1,792 rows, two 8x8 covariances
             target: objective <= lme4's and >= 10x faster
crossed_1m   y ~ x + (1 + x | g1) + (1 | g2), REML; simulated 1,000,000 rows,
             20,000 x 1,000 crossed levels
             target: <= 20 s and <= 2 GB peak RSS
ratings_1m   y ~ 1 + (1|user) + (1|item), REML; simulated 1,000,000 ratings of
             3,706 items by 6,040 users, skewed counts
             target: <= 15 s and <= 2 GB peak RSS
nested       y ~ 1 + (1|A) + (1|A:B) + (1|A:B:C), REML; simulated 50,000 rows,
             50 / 1,000 / 10,000 levels
             target: not slower than lme4

Generalized linear mixed models (``glmer``; binomial, Laplace, nAGQ = 1):

cbpp         cbind(incidence, size - incidence) ~ period + (1 | herd); 56 rows
             target: >= 10x faster than lme4
verbagg      r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item);
             7,584 rows, 316 x 24 crossed levels; r2 is a factor (N, Y):
             both sides model P(Y)
             target: >= 30x faster than lme4
bernoulli_1m y ~ x + (1 | g1) + (1 | g2); simulated 1,000,000 binary responses,
             10,000 x 500 crossed levels
             target: <= 60 s and <= 3 GB peak RSS

For the glmer problems the objective is the deviance, -2 log-likelihood
(``glmer(...).deviance``; lme4: ``-2 * logLik(fit)``), and the ``met`` column's
note also says whether ours is <= lme4's + 1e-6 (when lme4 ran).  Evaluations:
ours count every stage (nAGQ = 0 over theta, then the Laplace deviance over
(theta, beta)); lme4's ``fit@optinfo$feval`` counts stage 2 only, so the table
shows lme4's as ``stage 1 + stage 2`` (stage 1 read by ``trace()`` on lme4's
``optimizeGlmer``; results.json has both).

How it measures
---------------
Every problem is fitted by mixedmodels in a fresh Python subprocess (this file
with ``--worker``): it imports mixedmodels, loads the data (bundled CSV via
``mixedmodels.datasets.load``, or the cached Parquet of a simulated set), makes
one untimed warm-up fit of sleepstudy (plus one ``glmer()`` of cbpp for the
glmer problems, and one of a small crossed binary model for glmer's stepwise
compiled path, and a load of the compiled loops, from Numba's cache, for the
problems that use them), records its RSS (the *baseline*), then times ``reps`` whole
``lmer()`` (or ``glmer()``) calls (model frame and design matrices from the
formula, optimisation, final estimates) and reports their median; the peak is
the process's ``ru_maxrss`` (absolute, baseline included).  ``setup`` is the
fit time minus the optimizer's own time (``optsum.elapsed``): formula handling,
design matrices, cross-products, starting values and the final estimates;
``time/eval`` is the optimizer time divided by the number of objective
evaluations.

lme4 (``benchmarks/lme4_bench.R``) fits the same CSV the same number of times
in a subprocess run under ``/usr/bin/time``, whose maximum resident set size is
lme4's peak (absolute, R itself and the data included); R's own heap high-water
mark during the fits is kept in results.json too.  lme4 is skipped for
crossed_1m, ratings_1m and bernoulli_1m unless ``--r-large`` is given (lme4
takes minutes on them: about 265 s on crossed_1m per the issue).

Simulated data (:mod:`simulate`) are drawn with a fixed seed and cached in
``benchmarks/.cache/`` as CSV (read by R, with data.table::fread when
installed) and Parquet (read by Python), so both fit identical numbers.

Prints a table and writes ``benchmarks/results.json`` (rewritten after every
problem, so an interrupted run keeps what it measured).  A failing or timed-out
fit, on either side, is reported in its row; the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_DIR = ROOT / "src" / "mixedmodels" / "datasets" / "data"
R_SCRIPT = HERE / "lme4_bench.R"
GB = 1e9

PROBLEMS = [
    {
        "name": "sleepstudy",
        "data": "bundled:sleepstudy",
        "formula": "Reaction ~ Days + (Days | Subject)",
        "reml": True,
        "reps": 50,
        "target": "<= 5 ms",
    },
    {
        "name": "insteval",
        "kernels": "sequential",  # the update operator's compiled build: warmed up first
        "data": "bundled:InstEval",
        "formula": "y ~ 1 + service + (1|s) + (1|d) + (1|dept)",
        "reml": False,
        "reps": 3,
        "target": ">= 20x lme4",
    },
    {
        "name": "insteval_wide",
        "kernels": "sequential",  # the update operator's compiled build: warmed up first
        "data": "bundled:InstEval",
        "formula": "y ~ 1 + service * dept + (1|s) + (1|d)",
        "reml": False,
        "reps": 3,
        "target": ">= 20x lme4",
    },
    {
        "name": "maximal",
        "data": "sim:maximal",
        "formula": "y ~ 1 + A*B*C + (1 + A*B*C | subj) + (1 + A*B*C | item)",
        "reml": True,
        "reps": 1,
        "target": "obj <= lme4, >= 10x lme4",
    },
    {
        "name": "crossed_1m",
        "data": "sim:crossed_1m",
        "formula": "y ~ x + (1 + x | g1) + (1 | g2)",
        "reml": True,
        "reps": 1,
        "r_large": True,
        "target": "<= 20 s, <= 2 GB",
    },
    {
        "name": "ratings_1m",
        "data": "sim:ratings_1m",
        "formula": "y ~ 1 + (1|user) + (1|item)",
        "reml": True,
        "reps": 1,
        "r_large": True,
        "target": "<= 15 s, <= 2 GB",
    },
    {
        "name": "nested",
        "kernels": "sequential",  # the update operator's compiled build: warmed up first
        "data": "sim:nested",
        "formula": "y ~ 1 + (1|A) + (1|A:B) + (1|A:B:C)",
        "reml": True,
        "reps": 3,
        "target": ">= 1x lme4",
    },
    # generalized linear mixed models: fitted by glmer() on both sides
    {
        "name": "cbpp",
        "kind": "glmer",
        "family": "binomial",
        "nagq": 1,
        "data": "bundled:cbpp",
        "formula": "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        "reps": 5,
        "min_ratio": 10,
        "target": ">= 10x lme4",
    },
    {
        "name": "verbagg",
        "kind": "glmer",
        "family": "binomial",
        "nagq": 1,
        "data": "bundled:VerbAgg",
        "formula": "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
        "reps": 3,
        "min_ratio": 30,
        "target": ">= 30x lme4",
    },
    {
        "name": "bernoulli_1m",
        "kind": "glmer",
        "family": "binomial",
        "nagq": 1,
        "data": "sim:bernoulli_1m",
        "formula": "y ~ x + (1 | g1) + (1 | g2)",
        "reps": 1,
        "r_large": True,
        "max_time": 60.0,
        "max_peak": 3 * GB,
        "target": "<= 60 s, <= 3 GB",
    },
]
BY_NAME = {p["name"]: p for p in PROBLEMS}


def is_glmer(spec: dict) -> bool:
    return spec.get("kind") == "glmer"


def method_label(spec: dict) -> str:
    if is_glmer(spec):
        nagq = spec.get("nagq", 1)
        return f"{spec['family']}, " + ("Laplace" if nagq == 1 else f"nAGQ = {nagq}")
    return "REML" if spec["reml"] else "ML"


# ---------------------------------------------------------------- worker side


def _rss_bytes(field: str = "VmRSS") -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _load(spec: dict, quick: bool):
    import pandas as pd

    import mixedmodels as mm

    kind, name = spec["data"].split(":", 1)
    if kind == "bundled":
        return mm.datasets.load(name)
    sys.path.insert(0, str(HERE))
    import simulate

    info = simulate.ensure_cached(name, quick)
    data = pd.read_parquet(info["parquet"])
    return data.rename(columns=spec.get("py_rename", {}))


def _small_crossed_binary():
    """800 Bernoulli rows over 100 x 70 crossed levels (a Schur block of 70
    rows: glmer's stepwise compiled path)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 800
    g1, g2 = rng.integers(0, 100, n), rng.integers(0, 70, n)
    x = rng.normal(size=n)
    eta = 0.5 * x + rng.normal(size=100)[g1] + 0.5 * rng.normal(size=70)[g2]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g1": g1.astype(str), "g2": g2.astype(str)})


def worker(name: str, reps: int, quick: bool, out: str) -> None:
    """Fit one problem ``reps`` times in this (fresh) process; write JSON to ``out``."""
    import warnings

    spec = BY_NAME[name]
    res: dict = {}
    try:
        import mixedmodels as mm

        t0 = time.perf_counter()
        data = _load(spec, quick)
        res["load_time"] = time.perf_counter() - t0
        glmm = is_glmer(spec)
        warm = mm.datasets.load("sleepstudy")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(5 if name == "sleepstudy" else 1):
                mm.lmer("Reaction ~ Days + (Days | Subject)", warm)
            if glmm:  # glmer's own code paths, as lme4_bench.R does
                from mixedmodels.linalg.kernels import glmm_kernels as _glmm_kernels

                _glmm_kernels.KERNELS.wait()  # compiled first if the cache lacks them
                mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                         mm.datasets.load("cbpp"), family="binomial")
                # and the stepwise compiled PIRLS of large Schur blocks (loaded
                # from Numba's cache; compiled there after a code change)
                mm.glmer("y ~ x + (1 | g1) + (1 | g2)", _small_crossed_binary(), family="binomial")
        del warm
        # the compiled loops too (Numba's cache) where the problem uses them: a
        # one-time cost per process, like R's lazy loading that lme4_bench.R
        # warms up; only there, as loading Numba adds ~125 MB to the baseline RSS
        from mixedmodels.linalg.kernels import lmm_kernels as _kernels

        if (spec.get("r_large") or spec.get("kernels")) and _kernels.available():
            _kernels.KERNELS.wait()
            _kernels.warm_up(parallel=spec.get("kernels") != "sequential")
        res["baseline_rss"] = _rss_bytes()
        res["peak_before_fit"] = _peak_bytes()
        formula = spec.get("py_formula", spec["formula"])
        times, model, caught = [], None, []
        for _ in range(reps):
            model = None
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                if glmm:
                    model = mm.glmer(formula, data, family=spec["family"], nagq=spec.get("nagq", 1))
                else:
                    model = mm.lmer(formula, data, reml=spec["reml"])
                times.append(time.perf_counter() - t0)
            caught = [f"{x.category.__name__}: {x.message}" for x in w]
        opt = model.optsum
        res.update({
            "time": statistics.median(times),
            "min_time": min(times),
            "times": times,
            "evaluations": int(opt.evaluations),
            "optimizer": str(opt.optimizer),
            "optimizer_time": float(opt.elapsed),
            "return_code": str(opt.return_code),
            "blas_threads": list(opt.blas_threads or ()),
            "objective": float(model.deviance if glmm or not spec["reml"] else model.reml_criterion),
            "theta": [float(t) for t in model.theta],
            "fixef": {k: float(v) for k, v in model.fixef.items()},
            "warnings": sorted(set(caught)),
            "nobs": int(len(model.fitted)) if hasattr(model, "fitted") else None,
        })
        if glmm:
            res.update({"family": spec["family"], "nagq": int(spec.get("nagq", 1)),
                        "loglik": float(model.loglik)})
    except BaseException as err:  # noqa: BLE001 - reported, never raised
        res["error"] = f"{type(err).__name__}: {err}"
        res["traceback"] = traceback.format_exc()[-4000:]
    res["peak_rss"] = _peak_bytes()
    Path(out).write_text(json.dumps(res) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- parent side


def run_ours(spec: dict, reps: int, quick: bool, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", spec["name"],
           "--worker-reps", str(reps), "--worker-out", out] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        os.unlink(out)
        return {"error": f"timed out after {timeout:.0f} s (subprocess killed)",
                "wall": time.perf_counter() - t0}
    try:
        res = json.loads(Path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        res = {"error": f"worker exited with code {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    finally:
        if os.path.exists(out):
            os.unlink(out)
    res["wall"] = time.perf_counter() - t0
    return res


def r_info() -> tuple[str | None, dict]:
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None, {"error": "Rscript not found on PATH"}
    code = (
        "suppressPackageStartupMessages(library(lme4));"
        "cat(R.version.string, '\\n', as.character(packageVersion('lme4')), '\\n',"
        " requireNamespace('data.table', quietly=TRUE), '\\n',"
        " extSoftVersion()[['BLAS']], '\\n', La_library(), '\\n', sep='')"
    )
    proc = subprocess.run([rscript, "-e", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None, {"error": "R package lme4 is not installed"}
    lines = proc.stdout.splitlines() + [""] * 5
    return rscript, {
        "r_version": lines[0], "lme4": lines[1], "data_table": lines[2] == "TRUE",
        "blas": lines[3] or None, "lapack": lines[4] or None,
    }


def run_lme4(rscript: str, spec: dict, reps: int, quick: bool, timeout: float) -> dict:
    kind, name = spec["data"].split(":", 1)
    if kind == "bundled":
        csv, meta = DATA_DIR / f"{name}.csv", DATA_DIR / "metadata.json"
    else:
        sys.path.insert(0, str(HERE))
        import simulate

        csv, meta = simulate.ensure_cached(name, quick)["csv"], "-"
    cmd = [rscript, str(R_SCRIPT), str(csv), str(meta), name, spec["formula"],
           "TRUE" if spec.get("reml") else "FALSE", str(reps)]
    if is_glmer(spec):
        cmd += [spec["family"], str(spec.get("nagq", 1))]
    gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as tmp:
        tfile = tmp.name
    if gnu_time:
        cmd = [gnu_time, "-f", "%M", "-o", tfile] + cmd
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        os.unlink(tfile)
        return {"error": f"timed out after {timeout:.0f} s (Rscript killed)"}
    try:
        if proc.returncode != 0:
            return {"error": f"Rscript exited with code {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if gnu_time:
            try:
                res["peak_rss"] = int(Path(tfile).read_text().strip().splitlines()[-1]) * 1024
            except (OSError, ValueError, IndexError):
                res["peak_rss"] = None
        return res
    except (ValueError, IndexError) as err:
        return {"error": f"could not parse lme4 output ({err}): {proc.stdout[-1000:]}"}
    finally:
        os.unlink(tfile)


def judge(spec: dict, ours: dict, lme4: dict | None) -> tuple[str, str]:
    """(met, note): met is 'yes', 'NO', 'n/a' or 'FAILED'."""
    if "error" in ours:
        return "FAILED", "our fit failed"
    name = spec["name"]
    have_r = lme4 is not None and "error" not in lme4
    ratio = lme4["time"] / ours["time"] if have_r else None
    if is_glmer(spec):
        return _judge_glmer(spec, ours, lme4 if have_r else None, ratio)
    if name == "sleepstudy":
        return ("yes" if ours["time"] <= 0.005 else "NO"), ""
    if name in ("crossed_1m", "ratings_1m"):
        limit = 20.0 if name == "crossed_1m" else 15.0
        ok = ours["time"] <= limit and ours["peak_rss"] <= 2 * GB
        return ("yes" if ok else "NO"), ""
    if not have_r:
        return "n/a", "needs lme4"
    if name in ("insteval", "insteval_wide"):
        return ("yes" if ratio >= 20 else "NO"), ""
    if name == "maximal":
        better = ours["objective"] <= lme4["objective"] + 1e-6
        ok = better and ratio >= 10
        return ("yes" if ok else "NO"), ("" if better else "objective worse than lme4's")
    if name == "nested":
        return ("yes" if ratio >= 1 else "NO"), ""
    return "n/a", ""


def _judge_glmer(spec: dict, ours: dict, lme4: dict | None, ratio: float | None) -> tuple[str, str]:
    """Targets from the spec (min_ratio, or max_time / max_peak); the note adds
    whether our deviance is <= lme4's + 1e-6 (only when lme4 ran)."""
    notes = []
    if lme4 is not None:
        diff = ours["objective"] - lme4["objective"]
        notes.append("obj <= lme4" if diff <= 1e-6 else f"obj > lme4 by {diff:.3g}")
    if "min_ratio" in spec:
        if ratio is None:
            return "n/a", "; ".join(["needs lme4"] + notes)
        met = ratio >= spec["min_ratio"]
    else:
        met = ours["time"] <= spec["max_time"] and ours["peak_rss"] <= spec["max_peak"]
    return ("yes" if met else "NO"), "; ".join(notes)


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_mem(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:,.0f} MB"


def table_lines(rows: list[dict]) -> list[list[str]]:
    header = [
        "problem", "model", "ours time", "setup", "evals", "time/eval", "peak RSS (base)",
        "objective", "lme4 time", "lme4 evals", "lme4 peak RSS", "lme4 objective",
        "ratio", "target", "met",
    ]
    lines = [header]
    for r in rows:
        ours, lme4 = r["mixedmodels"], r.get("lme4")
        model = f"{r['formula']} [{r['method']}]"
        if "error" in ours:
            o = ["FAILED", "-", "-", "-", f"{fmt_mem(ours.get('peak_rss'))} ({fmt_mem(ours.get('baseline_rss'))})", "-"]
        else:
            setup = ours["time"] - ours["optimizer_time"]
            per_eval = ours["optimizer_time"] / max(ours["evaluations"], 1)
            o = [fmt_time(ours["time"]), fmt_time(setup), str(ours["evaluations"]), fmt_time(per_eval),
                 f"{fmt_mem(ours['peak_rss'])} ({fmt_mem(ours['baseline_rss'])})", f"{ours['objective']:.4f}"]
        if lme4 is None:
            l4 = ["not run"] + ["-"] * 3
        elif "error" in lme4:
            l4 = ["FAILED", "-", "-", "-"]
        else:
            evals = str(lme4["evaluations"])
            if lme4.get("evaluations_stage1") is not None:  # glmer: stage 1 + stage 2
                evals = f"{lme4['evaluations_stage1']}+{evals}"
            l4 = [fmt_time(lme4["time"]), evals, fmt_mem(lme4.get("peak_rss")),
                  f"{lme4['objective']:.4f}"]
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        met = r["met"] + (f" ({r['note']})" if r.get("note") else "")
        lines.append([r["problem"], model] + o + l4 + [ratio, r["target"], met])
    return lines


def print_table(rows: list[dict], markdown: bool = False) -> None:
    lines = table_lines(rows)
    if markdown:
        print("| " + " | ".join(lines[0]) + " |")
        print("| " + " | ".join("---" if i < 2 else "---:" for i in range(len(lines[0]))) + " |")
        for line in lines[1:]:
            print("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |")
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        for side in ("mixedmodels", "lme4"):
            res = r.get(side) or {}
            if "error" in res:
                print(f"{r['problem']}: {side} error: {res['error'].strip().splitlines()[-1][:300]}")


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    import numpy
    import pandas
    import scipy

    import mixedmodels

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = None
    try:
        cfg = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{cfg.get('name')} {cfg.get('version')}"
    except Exception:  # noqa: BLE001, S110 - informational only
        pass
    blas_runtime = None
    try:
        import threadpoolctl

        blas_runtime = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "architecture")}
            for d in threadpoolctl.threadpool_info()
        ]
    except Exception:  # noqa: BLE001, S110 - informational only
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "python": platform.python_version(),
        "mixedmodels": mixedmodels.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "blas": blas,
        "blas_runtime": blas_runtime,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated problem names: " + ",".join(BY_NAME))
    parser.add_argument("--no-r", action="store_true", help="skip lme4 even if R is available")
    parser.add_argument("--r-large", action="store_true",
                        help="also run lme4 on crossed_1m, ratings_1m and bernoulli_1m (minutes each)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: smaller simulated sets, fewer repetitions (targets not meaningful)")
    for p in PROBLEMS:
        parser.add_argument(f"--reps-{p['name'].replace('_', '-')}", type=int, default=None,
                            help=f"timed fits of {p['name']} (default {p['reps']})")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds allowed for one problem on one side (default 1800)")
    parser.add_argument("--r-timeout", type=float, default=None,
                        help="seconds allowed for one lme4 problem (default: --timeout)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--output", default=str(HERE / "results.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-reps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.worker, args.worker_reps, args.quick, args.worker_out)
        return 0

    names = list(BY_NAME) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown problem(s) {unknown}; choose from {list(BY_NAME)}")

    rscript, rinfo = (None, {"error": "skipped (--no-r)"}) if args.no_r else r_info()
    if rscript is None:
        print(f"lme4 comparison skipped: {rinfo['error']}", file=sys.stderr)

    load_start = _loadavg()
    if load_start is not None and load_start > 0.5 * (os.cpu_count() or 1):
        print(f"note: 1-minute load average is {load_start:.2f} on {os.cpu_count()} cores; "
              "other processes may slow both sides down", file=sys.stderr)

    sys.path.insert(0, str(HERE))
    import simulate

    datasets = {}
    for name in names:
        kind, dname = BY_NAME[name]["data"].split(":", 1)
        if kind == "sim" and dname not in datasets:
            print(f"simulating / loading cached {dname} ...", file=sys.stderr, flush=True)
            datasets[dname] = simulate.ensure_cached(dname, args.quick)

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "r": rinfo,
        "quick": args.quick,
        "timing": "median wall time of the whole lmer() / glmer() call on in-memory data, after a warm-up fit",
        "memory": "peak_rss: the fitting process's maximum RSS (absolute, bytes); "
                  "baseline_rss: ours after imports, data load and warm-up; lme4: /usr/bin/time %M of Rscript",
        "simulated_data": datasets,
        "problems": [],
    }
    rows = result["problems"]
    for name in names:
        spec = BY_NAME[name]
        reps = getattr(args, f"reps_{name}") or (1 if args.quick and name != "sleepstudy" else spec["reps"])
        print(f"[{name}] mixedmodels x{reps} ...", file=sys.stderr, flush=True)
        ours = run_ours(spec, reps, args.quick, args.timeout)
        msg = ours.get("error") or f"{fmt_time(ours['time'])}, {ours['evaluations']} evals"
        print(f"[{name}]   -> {msg.strip().splitlines()[-1][:300]}", file=sys.stderr, flush=True)
        row = {
            "problem": name, "formula": spec["formula"], "method": method_label(spec),
            "reps": reps, "target": spec["target"], "mixedmodels": ours,
        }
        if "py_formula" in spec:
            row["python_formula"] = spec["py_formula"]
        if rscript and (not spec.get("r_large") or args.r_large):
            print(f"[{name}] lme4 x{reps} ...", file=sys.stderr, flush=True)
            lme4 = run_lme4(rscript, spec, reps, args.quick, args.r_timeout or args.timeout)
            msg = lme4.get("error") or f"{fmt_time(lme4['time'])}, {lme4['evaluations']} evals"
            print(f"[{name}]   -> {msg.strip().splitlines()[-1][:300]}", file=sys.stderr, flush=True)
            row["lme4"] = lme4
            if "error" not in lme4 and "error" not in ours:
                row["ratio"] = lme4["time"] / ours["time"]
                row["objective_difference"] = ours["objective"] - lme4["objective"]
        elif rscript:
            row["lme4_skipped"] = "large problem: pass --r-large"
        row["met"], row["note"] = judge(spec, ours, row.get("lme4"))
        if args.quick:
            row["note"] = (row["note"] + "; " if row["note"] else "") + "quick sizes"
        rows.append(row)
        result["load_average_1min"] = {"start": load_start, "end": _loadavg()}
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print()
    print_table(rows)
    if args.markdown:
        print()
        print_table(rows, markdown=True)
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
