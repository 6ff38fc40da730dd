"""Out-of-core benchmark: lmer on Parquet files with a local Dask cluster.

    python benchmarks/dask_bench.py                      # 100 million rows
    python benchmarks/dask_bench.py --rows 10_000_000    # a smaller run first

Simulates ``y = 1 + 0.5 x + b1[g1] + b2[g2] + e`` with two crossed grouping
factors (100,000 and 1,000 levels, every row's levels drawn uniformly, so
Z_g2'Z_g1 is as dense as it gets), writes it as Parquet files chunk by chunk
(never all in memory; reused when present), then fits
``y ~ x + (1 | g1) + (1 | g2)`` by ML with ``mixedmodels.lmer(path)`` on a
``distributed.LocalCluster``. Reports the rows per second of the two passes over
the data, the optimisation time (evaluations, seconds per evaluation), the
total, and the peak memory overall and per phase (resident set size of this
process plus its children, sampled every 100 ms with psutil; with
``--processes`` the workers are child processes; ``--memory-trace`` keeps the
samples).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

FORMULA = "y ~ x + (1 | g1) + (1 | g2)"


def simulate(directory: Path, rows: int, n1: int, n2: int, chunk: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    marker = directory / "_simulation.json"
    params = {"rows": rows, "n1": n1, "n2": n2, "chunk": chunk, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == params:
        print(f"reusing {directory} ({rows:,} rows)")
        return
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("part-*.parquet"):
        old.unlink()
    rng = np.random.default_rng(seed)
    b1 = rng.normal(0.0, 0.5, n1)
    b2 = rng.normal(0.0, 0.3, n2)
    t0 = time.perf_counter()
    nfiles = (rows + chunk - 1) // chunk
    for i in range(nfiles):
        m = min(chunk, rows - i * chunk)
        r = np.random.default_rng([seed, i])
        g1 = r.integers(0, n1, m, dtype=np.int32)
        g2 = r.integers(0, n2, m, dtype=np.int32)
        x = r.standard_normal(m)
        y = 1.0 + 0.5 * x + b1[g1] + b2[g2] + r.standard_normal(m)
        table = pa.table({"y": y, "x": x, "g1": g1, "g2": g2})
        pq.write_table(table, directory / f"part-{i:05d}.parquet", row_group_size=m)
        if (i + 1) % 10 == 0 or i + 1 == nfiles:
            print(f"  wrote {i + 1}/{nfiles} files ({time.perf_counter() - t0:.0f} s)", flush=True)
    marker.write_text(json.dumps(params))


class PeakMemory:
    """Peak RSS of this process plus all its children, sampled in a thread."""

    def __init__(self, interval: float = 0.1, children: bool = True):
        self.interval = interval
        self.children = children
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:
            self._proc = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True) if self.children else ():
            try:
                total += child.memory_info().rss
            except Exception:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._sample()
            self.samples.append((time.perf_counter(), rss))
            self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self._proc is not None:
            self.baseline = self._sample()
            self._thread.start()
        return self

    def peak_between(self, start: float, stop: float) -> int:
        return max((rss for t, rss in self.samples if start <= t <= stop), default=0)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._proc is not None:
            self._thread.join()


def write_trace(path: Path, samples: list[tuple[float, int]], phases: dict, t0: float) -> None:
    """The RSS samples as CSV, each with the phase it fell in."""
    lines = ["seconds,rss_gb,phase"]
    for t, rss in samples:
        if t < t0:
            continue
        phase = next((name for name, (a, b) in phases.items() if a <= t <= b), "")
        lines.append(f"{t - t0:.2f},{rss / 1e9:.3f},{phase}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=100_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="default /tmp/mixedmodels-<rows>")
    ap.add_argument("--n1", type=int, default=100_000, help="levels of g1")
    ap.add_argument("--n2", type=int, default=1_000, help="levels of g2")
    ap.add_argument("--chunk", type=lambda s: int(s.replace("_", "")), default=2_000_000,
                    help="rows per Parquet file (= per partition)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per worker")
    ap.add_argument("--processes", action="store_true", help="worker processes (default: threads)")
    ap.add_argument("--split-every", type=int, default=2)
    ap.add_argument("--blas-threads", default="auto",
                    help="BLAS threads of the optimisation (fit(threads=...)); default auto")
    ap.add_argument("--no-fit", action="store_true",
                    help="run the two passes and build the system, then time one objective "
                    "and one objective-with-gradient evaluation instead of the whole fit")
    ap.add_argument("--passes-only", action="store_true",
                    help="with --no-fit: stop after building the system (no evaluation)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--memory-trace", type=Path, default=None,
                    help="write the sampled RSS (seconds from the start, GB, phase) as CSV here")
    args = ap.parse_args(argv)
    if args.dir is None:
        args.dir = Path("/tmp/mixedmodels-100m") if args.rows == 100_000_000 else Path(
            f"/tmp/mixedmodels-{args.rows}"
        )

    print(f"simulating {args.rows:,} rows into {args.dir} ...", flush=True)
    t0 = time.perf_counter()
    simulate(args.dir, args.rows, args.n1, args.n2, args.chunk, args.seed)
    t_sim = time.perf_counter() - t0

    import distributed

    import mixedmodels as mm

    with distributed.LocalCluster(
        n_workers=args.workers,
        threads_per_worker=args.threads,
        processes=args.processes,
        dashboard_address=":0",
    ) as cluster, distributed.Client(cluster):
        with PeakMemory(children=args.processes) as mem:
            t0 = time.perf_counter()
            if args.no_fit or args.passes_only:
                from mixedmodels.models.lmm.dask import DaskLinearMixedModel

                m = DaskLinearMixedModel(
                    FORMULA, str(args.dir), reml=False, split_every=args.split_every
                )
                t_obj = t_grad = float("nan")
                if not args.passes_only:
                    theta = m.initial_theta()
                    t1 = time.perf_counter()
                    m.objective(theta)
                    t_obj = time.perf_counter() - t1
                    m.objective_gradient(theta)
                    t_grad = time.perf_counter() - t1 - t_obj
                m.timings["optimize"] = 0.0
            else:
                threads = args.blas_threads if args.blas_threads == "auto" else int(args.blas_threads)
                m = mm.lmer(
                    FORMULA, str(args.dir), reml=False, split_every=args.split_every, threads=threads
                )
            total = time.perf_counter() - t0
    fit_skipped = args.no_fit or args.passes_only
    rusage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rusage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    tm = m.timings
    if fit_skipped:  # what ran after the system was built
        m.phases["evaluations"] = (m.phases["system"][1], t0 + total)
    phases = {
        phase: round(mem.peak_between(start, stop) / 1e9, 2) for phase, (start, stop) in m.phases.items()
    }
    if args.memory_trace:
        write_trace(args.memory_trace, mem.samples, m.phases, t0)
    out = {
        "rows": m.nobs,
        "levels": m.ngroups,
        "cores": os.cpu_count(),
        "workers": args.workers,
        "blas_threads": args.blas_threads,
        "threads_per_worker": args.threads,
        "processes": args.processes,
        "partitions": len(list(args.dir.glob("part-*.parquet"))),
        "simulate_s": round(t_sim, 1),
        "levels_pass_s": round(tm["levels_pass"], 2),
        "levels_rows_per_s": round(m.nobs / tm["levels_pass"]),
        "accumulate_pass_s": round(tm["accumulate_pass"], 2),
        "accumulate_rows_per_s": round(m.nobs / tm["accumulate_pass"]),
        "system_s": round(tm["system"], 2),
        "optimize_s": round(tm["optimize"], 2),
        "evaluations": None if fit_skipped else m.optsum.evaluations,
        "optimizer_s": None if fit_skipped else round(m.optsum.elapsed, 2),
        "seconds_per_evaluation": None
        if fit_skipped
        else round(m.optsum.elapsed / max(m.optsum.evaluations, 1), 2),
        "total_s": round(total, 1),
        "peak_rss_gb_sampled": round(mem.peak / 1e9, 2) if mem.peak else None,
        "peak_rss_gb_by_phase": phases,
        "peak_rss_gb_self_getrusage": round(rusage_self / 1e9, 2),
        "peak_rss_gb_largest_child_getrusage": round(rusage_children / 1e9, 2),
        "python": sys.version.split()[0],
    }
    if args.no_fit or args.passes_only:
        out["one_objective_s"] = round(t_obj, 2)
        out["one_objective_gradient_s"] = round(t_grad, 2)
    else:
        out.update({
            "loglik": m.loglik,
            "fixef": m.fixef.round(5).to_dict(),
            "sd": m.varcorr.set_index("grp")["sdcor"].round(5).to_dict(),
        })
    for key, value in out.items():
        print(f"{key:>36}: {value}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
