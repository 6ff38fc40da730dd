"""Fit-time benchmark of mixedmodels against lme4, in one command.

    python benchmarks/run.py [--reps-sleepstudy 20] [--reps-insteval 3] [--no-r]

Problems
--------
sleepstudy  Reaction ~ Days + (Days | Subject), REML (180 rows)
InstEval    y ~ 1 + service + (1|s) + (1|d) + (1|dept), ML (73,421 rows,
            2,972 + 1,128 + 14 levels of three crossed grouping factors)

What is timed is the whole ``lmer()`` call on data already in memory (model
frame, design matrices, optimisation and the final estimates), repeated and
summarised by the median: after one untimed warm-up fit of sleepstudy, 20 fits
of sleepstudy and 3 of InstEval by default.  When ``Rscript`` with lme4 is on
the PATH, ``benchmarks/lme4_bench.R`` fits the same CSVs (the bundled files in
``src/mixedmodels/datasets/data/``, factor levels in the same order) the same
number of times in the same run.

Prints a table and writes ``benchmarks/results.json``.  Not part of the tests.
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
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_DIR = ROOT / "src" / "mixedmodels" / "datasets" / "data"
R_SCRIPT = HERE / "lme4_bench.R"

PROBLEMS = [
    {
        "problem": "sleepstudy",
        "dataset": "sleepstudy",
        "formula": "Reaction ~ Days + (Days | Subject)",
        "reml": True,
        "reps_key": "reps_sleepstudy",
    },
    {
        "problem": "InstEval",
        "dataset": "InstEval",
        "formula": "y ~ 1 + service + (1|s) + (1|d) + (1|dept)",
        "reml": False,
        "reps_key": "reps_insteval",
    },
]


def bench_ours(spec: dict, reps: int) -> dict:
    import warnings

    import mixedmodels as mm

    data = mm.datasets.load(spec["dataset"])
    times, model = [], None
    for _ in range(reps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            model = mm.lmer(spec["formula"], data, reml=spec["reml"])
            times.append(time.perf_counter() - t0)
    objective = model.reml_criterion if spec["reml"] else model.deviance
    return {
        "time": statistics.median(times),
        "min_time": min(times),
        "times": times,
        "evaluations": int(model.optsum.evaluations),
        "optimizer_time": float(model.optsum.elapsed),
        "objective": float(objective),
        "return_code": str(model.optsum.return_code),
        "fixef": {k: float(v) for k, v in model.fixef.items()},
    }


def r_available() -> tuple[bool, str]:
    rscript = shutil.which("Rscript")
    if rscript is None:
        return False, "Rscript not found on PATH"
    proc = subprocess.run(
        [rscript, "-e", "suppressPackageStartupMessages(library(lme4))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return False, "R package lme4 is not installed"
    return True, rscript


def bench_lme4(rscript: str, spec: dict, reps: int) -> dict:
    cmd = [
        rscript,
        str(R_SCRIPT),
        str(DATA_DIR / f"{spec['dataset']}.csv"),
        str(DATA_DIR / "metadata.json"),
        spec["dataset"],
        spec["formula"],
        "TRUE" if spec["reml"] else "FALSE",
        str(reps),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"lme4 benchmark failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def print_table(rows: list[dict]) -> None:
    header = [
        "problem", "ours time", "evals", "time/eval", "objective",
        "lme4 time", "lme4 evals", "lme4 objective", "ratio (lme4/ours)",
    ]
    lines = [header]
    for r in rows:
        ours, lme4 = r["mixedmodels"], r.get("lme4")
        lines.append([
            r["problem"],
            fmt_time(ours["time"]),
            str(ours["evaluations"]),
            fmt_time(ours["time"] / ours["evaluations"]),
            f"{ours['objective']:.4f}",
            fmt_time(lme4["time"]) if lme4 else "-",
            str(lme4["evaluations"]) if lme4 else "-",
            f"{lme4['objective']:.4f}" if lme4 else "-",
            f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


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
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "mixedmodels": mixedmodels.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "blas": blas,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps-sleepstudy", type=int, default=20)
    parser.add_argument("--reps-insteval", type=int, default=3)
    parser.add_argument("--no-r", action="store_true", help="skip lme4 even if R is available")
    parser.add_argument("--output", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)
    reps = {"reps_sleepstudy": args.reps_sleepstudy, "reps_insteval": args.reps_insteval}

    if args.no_r:
        have_r, rinfo = False, "skipped (--no-r)"
    else:
        have_r, rinfo = r_available()
    if not have_r:
        print(f"lme4 comparison skipped: {rinfo}", file=sys.stderr)

    load_start = _loadavg()
    if load_start is not None and load_start > 0.5 * (os.cpu_count() or 1):
        print(
            f"note: 1-minute load average is {load_start:.2f} on {os.cpu_count()} cores; "
            "other processes may slow both sides down",
            file=sys.stderr,
        )
    # untimed warm-up: imports, formula machinery, NLopt
    bench_ours(PROBLEMS[0], 1)

    rows = []
    for spec in PROBLEMS:
        n = reps[spec["reps_key"]]
        print(f"fitting {spec['problem']} x{n} with mixedmodels ...", file=sys.stderr, flush=True)
        row = {
            "problem": spec["problem"],
            "formula": spec["formula"],
            "method": "REML" if spec["reml"] else "ML",
            "reps": n,
            "mixedmodels": bench_ours(spec, n),
        }
        if have_r:
            print(f"fitting {spec['problem']} x{n} with lme4 ...", file=sys.stderr, flush=True)
            row["lme4"] = bench_lme4(rinfo, spec, n)
            row["ratio"] = row["lme4"]["time"] / row["mixedmodels"]["time"]
            row["objective_difference"] = row["mixedmodels"]["objective"] - row["lme4"]["objective"]
        rows.append(row)

    print()
    print_table(rows)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "timing": "median wall time of the whole lmer() call on in-memory data",
        "load_average_1min": {"start": load_start, "end": _loadavg()},
        "lme4": (rows[0].get("lme4") or {}).get("lme4_version") if have_r else None,
        "problems": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
