"""Cold start: the first fit after ``pip install``, and the first fit of later processes.

Creates a fresh virtual environment, installs the package into it with pip
(``SOURCE[fast]``: the extra is empty where Numba is a core dependency, and
adds Numba to older versions, so both are measured with their compiled
path), then for each repetition

1. deletes the package's ``__pycache__`` (bytecode and Numba's cache: the
   state right after an install),
2. runs one process that fits the model once (the first fit after install),
3. waits until no process of the package is compiling kernels any more,
4. runs ``--later`` further processes, each fitting the model once.

Each process reports the seconds of ``import mixedmodels``, of its first fit
(data loading excluded) and whether the fit ran on the compiled path; the
process's wall time is measured from outside. Medians over the repetitions
are printed as a Markdown table (and written as JSON with ``--json``).

Examples
--------
python benchmarks/cold_start.py                              # this checkout
python benchmarks/cold_start.py --source /work/main --label main
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "lmer sleepstudy": (
        "sleepstudy", "mm.lmer('Reaction ~ Days + (Days | Subject)', data)",
        "getattr(m.system, 'compiled', None)",  # None: no kernels in this model
    ),
    "lmer InstEval": (
        "InstEval", "mm.lmer('y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)', data, reml=False)",
        "getattr(m.system, 'compiled', None)",  # rebuilt after the fit here: as at the fit
    ),
    "glmer cbpp": (
        "cbpp", "mm.glmer('cbind(incidence, size - incidence) ~ period + (1 | herd)', data, family='binomial')",
        "m._engine._compiled is not None",
    ),
}

PROCESS = """
import json, time
t0 = time.perf_counter()
import mixedmodels as mm
t1 = time.perf_counter()
data = mm.datasets.load({dataset!r})
t2 = time.perf_counter()
m = {call}
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "fit": t3 - t2, "compiled": {compiled}}}))
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def install(source: Path, venv: Path) -> Path:
    """A fresh venv at ``venv`` with ``source`` installed; its python."""
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", f"{source}[fast]"])
    return python


def package_dir(python: Path) -> Path:
    out = run([str(python), "-c", "import importlib.util as u; print(u.find_spec('mixedmodels').origin)"],
              cwd=tempfile.gettempdir())
    return Path(out.stdout.strip()).parent


def fresh_install_state(pkg: Path) -> None:
    """Remove the package's bytecode and Numba cache (as right after pip install)."""
    for cache in pkg.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def one_process(python: Path, model: str) -> dict:
    dataset, call, compiled = MODELS[model]
    code = PROCESS.format(dataset=dataset, call=call, compiled=compiled)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR")}
    t0 = time.perf_counter()
    out = run([str(python), "-c", code], cwd=tempfile.gettempdir(), env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - t0
    return result


def wait_for_compilers(timeout: float = 600.0) -> None:
    """Until no ``compile_set`` process (kernels compiled in the background) runs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["pgrep", "-f", "mixedmodels.linalg.kernels.loader import compile_set"],
                             capture_output=True, text=True)
        if not out.stdout.strip():
            return
        time.sleep(0.5)


def measure(python: Path, models: list[str], repeats: int, later: int) -> dict:
    pkg = package_dir(python)
    rows: dict = {m: {"first": [], "later": []} for m in models}
    for _ in range(repeats):
        for model in models:
            fresh_install_state(pkg)
            rows[model]["first"].append(one_process(python, model))
            wait_for_compilers()
            for _ in range(later):
                rows[model]["later"].append(one_process(python, model))
    return rows


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(label: str, rows: dict) -> str:
    lines = [
        "| version | model | first fit after install | its process (wall) | first fit, later processes | their wall | compiled path (first / later) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, r in rows.items():
        paths = "{} / {}".format(*[sorted({str(x["compiled"]) for x in r[k]}) for k in ("first", "later")])
        lines.append(
            f"| {label} | {model} | {median(r['first'], 'fit'):.2f} s | {median(r['first'], 'wall'):.2f} s "
            f"| {median(r['later'], 'fit'):.2f} s | {median(r['later'], 'wall'):.2f} s | {paths} |"
        )
    return "\n".join(lines)


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=here, help="the checkout to install (default: this one)")
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "mixedmodels-cold-start")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--later", type=int, default=3, help="later processes per repetition")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t0 = time.perf_counter()
    python = install(args.source.resolve(), args.venv)
    print(f"installed {args.source} into {args.venv} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rows = measure(python, args.models, args.repeats, args.later)
    print(table(args.label, rows))
    if args.json:
        args.json.write_text(json.dumps({"label": args.label, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
