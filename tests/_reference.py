"""Access to the R reference results for the tests.

The tests read the copies kept in the repository (``tests/reference``: the
numbers are R's, the files are data), so a fresh clone passes on its own.
``tests/reference/sync.py`` refreshes them from the shared reference folder and
``tests/reference/make.R`` regenerates them from R (see tests/reference/README.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
CASES_DIR = REFERENCE_DIR / "cases"

#: The public lmer cases the issue lists; all must be present.
EXPECTED_LMER_CASES = {
    "lmer_sleepstudy_reml",
    "lmer_sleepstudy_ml",
    "lmer_sleepstudy_zerocorr",
    "lmer_dyestuff",
    "lmer_dyestuff2_singular",
    "lmer_penicillin",
    "lmer_pastes_nested",
    "lmer_insteval_ml",
}

MISSING = "reference-directory-missing"


def require_reference_dir() -> None:
    """Fail (never skip) when the reference directory is absent."""
    if not CASES_DIR.is_dir():
        pytest.fail(
            f"R reference directory not found at {REFERENCE_DIR} "
            "(tests/reference of the repository)",
            pytrace=False,
        )


def load_case(case_id: str) -> dict[str, Any]:
    require_reference_dir()
    return json.loads((CASES_DIR / f"{case_id}.json").read_text())


def case_ids(kind: str) -> list[str]:
    """Ids of the public cases of ``kind``; a placeholder id (whose tests fail)
    when the reference directory is absent."""
    if not CASES_DIR.is_dir():
        return [MISSING]
    out = []
    for path in sorted(CASES_DIR.glob("*.json")):
        case = json.loads(path.read_text())
        if case.get("kind") == kind and case.get("visibility") == "public":
            out.append(case["id"])
    return out


def ref_value(case: dict[str, Any], key: str) -> Any:
    """A reference quantity: from ``converged_refit`` (the better optimum R found
    on tighter refits) when the case has one and it holds ``key``, otherwise from
    the default fit."""
    refit = case.get("converged_refit") or {}
    return refit[key] if key in refit else case[key]


def has_refit(case: dict[str, Any], key: str) -> bool:
    return key in (case.get("converged_refit") or {})


def dataset_stem(case: dict[str, Any]) -> str:
    return Path(case["data"]).stem


def r_objective(case: dict[str, Any]) -> float:
    """The best objective R reached (deviance for ML, REML criterion for REML):
    the default fit, its tight refits and the converged refit."""
    key = "reml_criterion" if case["method"] == "REML" else "deviance"
    values = [case[key]]
    check = case.get("optimum_check") or {}
    values += [v for v in (check.get("objective_refits") or {}).values() if v is not None]
    if case.get("converged_refit"):
        values.append(case["converged_refit"]["objective"])
    return min(values)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def varcorr_key(grp: Any, var1: Any, var2: Any) -> tuple[str, str, str]:
    """Row key of a varcorr table; None and NaN both mean "no such variable"."""
    return tuple("" if is_missing(v) else str(v) for v in (grp, var1, var2))


def assert_close(actual, desired, *, rtol=0.0, atol=0.0, what=""):
    """Assert |actual - desired| <= atol + rtol * |desired| elementwise (``atol``
    may be an array); the message lists the worst offenders with both values."""
    a = np.asarray(actual, dtype=float)
    d = np.asarray(desired, dtype=float)
    assert a.shape == d.shape, f"{what}: shape {a.shape} vs reference {d.shape}"
    bound = np.broadcast_to(np.asarray(atol, dtype=float) + rtol * np.abs(d), d.shape)
    err = np.abs(a - d)
    bad = ~(err <= bound) | (np.isnan(a) != np.isnan(d))
    bad &= ~(np.isnan(a) & np.isnan(d))
    if bad.any():
        idx = np.argwhere(bad)[:5]
        lines = [
            f"  at {tuple(int(j) for j in i)}: ours {a[tuple(i)]!r}, R {d[tuple(i)]!r}, "
            f"|diff| {err[tuple(i)]:.3g} > allowed {bound[tuple(i)]:.3g}"
            for i in idx
        ]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values differ beyond tolerance "
            f"(rtol={rtol})\n" + "\n".join(lines)
        )
