"""Deterministic simulated data sets for the benchmark (the ``sim:`` problems).

Each generator takes a ``quick`` flag (smaller sizes, for a smoke run) and
returns a pandas DataFrame; :func:`ensure_cached` writes it once to
``benchmarks/.cache/<name>[-quick].csv`` (read by R) and ``.parquet`` (read by
Python), so that both languages fit the very same numbers.  Everything is drawn
from ``numpy.random.default_rng`` with a fixed seed, in fixed-size chunks for the
large sets, so a file can be regenerated bit for bit.

Grouping factors are stored as integer codes (1-based); lme4 turns them into
factors itself, and so does mixedmodels.  Nested labels (``B`` within ``A``,
``C`` within ``B``) restart at 1 under every parent, so the formula must say
``A:B`` / ``A:B:C``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
SEED = 20240611
CHUNK = 250_000
# bump when a generator changes, so stale caches are rebuilt
VERSION = 1


def _random_correlation(rng: np.random.Generator, k: int, rank: int, jitter: float) -> np.ndarray:
    """A full-rank k x k correlation matrix with moderate, mixed-sign correlations."""
    w = rng.normal(size=(k, rank)) * 0.6
    s = w @ w.T + np.diag(jitter + rng.uniform(0.2, 0.6, size=k))
    d = 1 / np.sqrt(np.diag(s))
    return s * d[:, None] * d[None, :]


def maximal(quick: bool = False) -> tuple[pd.DataFrame, dict]:
    """56 subjects x 32 items, each pair seen once; A, B, C (+-1) in a Latin square.

    Condition of (subject s, item i) is (s + i) mod 8, whose three bits give A,
    B, C: every subject sees every condition 4 times and every item 7 times
    (counterbalanced, within-subject and within-item).  Response-time-like
    scale: intercept 600 ms; the 8 random effects per subject and per item have
    SDs (100, 30, 25, 20, 15, 12, 10, 8) and (50, 20, 15, 12, 10, 8, 6, 5) and
    random full-rank correlation matrices; residual SD 150.
    """
    rng = np.random.default_rng(SEED + 4)
    n_subj, n_item = (24, 16) if quick else (56, 32)
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    cond = (subj + item) % 8
    a = np.where(cond & 4, 1.0, -1.0)
    b = np.where(cond & 2, 1.0, -1.0)
    c = np.where(cond & 1, 1.0, -1.0)
    X = np.column_stack([np.ones_like(a), a, b, c, a * b, a * c, b * c, a * b * c])
    beta = np.array([600.0, 25.0, 15.0, 10.0, 8.0, 0.0, 5.0, 3.0])
    sd_s = np.array([100.0, 30, 25, 20, 15, 12, 10, 8])
    sd_i = np.array([50.0, 20, 15, 12, 10, 8, 6, 5])
    cov_s = _random_correlation(rng, 8, 3, 0.3) * np.outer(sd_s, sd_s)
    cov_i = _random_correlation(rng, 8, 3, 0.3) * np.outer(sd_i, sd_i)
    bs = rng.multivariate_normal(np.zeros(8), cov_s, size=n_subj)
    bi = rng.multivariate_normal(np.zeros(8), cov_i, size=n_item)
    y = X @ beta + np.einsum("nk,nk->n", X, bs[subj]) + np.einsum("nk,nk->n", X, bi[item])
    y = y + rng.normal(scale=150.0, size=len(y))
    df = pd.DataFrame({
        "subj": subj + 1, "item": item + 1, "A": a, "B": b, "C": c, "y": np.round(y, 6),
    })
    info = {"subjects": n_subj, "items": n_item, "rows": len(df),
            "sd_subj": sd_s.tolist(), "sd_item": sd_i.tolist(), "sigma": 150.0}
    return df, info


def crossed_1m(quick: bool = False) -> tuple[pd.DataFrame, dict]:
    """1,000,000 rows, g1 (20,000 levels) crossed with g2 (1,000 levels), uniform.

    y = 10 + 2 x + (u0 + u1 x)[g1] + v[g2] + e with sd(u0, u1) = (1, 0.5),
    corr 0.3, sd(v) = 0.7, sd(e) = 1; x ~ N(0, 1).  Drawn in chunks of 250,000.
    """
    n, n1, n2 = (100_000, 2_000, 100) if quick else (1_000_000, 20_000, 1_000)
    rng = np.random.default_rng(SEED + 5)
    cov = np.array([[1.0, 0.3 * 0.5], [0.3 * 0.5, 0.25]])
    u = rng.multivariate_normal([0.0, 0.0], cov, size=n1)
    v = rng.normal(scale=0.7, size=n2)
    parts = []
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        g1 = rng.integers(0, n1, size=m)
        g2 = rng.integers(0, n2, size=m)
        x = rng.normal(size=m)
        y = 10 + 2 * x + u[g1, 0] + u[g1, 1] * x + v[g2] + rng.normal(size=m)
        parts.append(pd.DataFrame({
            "g1": (g1 + 1).astype(np.int32), "g2": (g2 + 1).astype(np.int32),
            "x": np.round(x, 6), "y": np.round(y, 6),
        }))
    df = pd.concat(parts, ignore_index=True)
    info = {"rows": n, "g1_levels": int(df.g1.nunique()), "g2_levels": int(df.g2.nunique())}
    return df, info


def ratings_1m(quick: bool = False) -> tuple[pd.DataFrame, dict]:
    """MovieLens-1M-shaped ratings: 6,040 users x 3,706 items, 1,000,000 rows.

    Every user rates at least 20 items; the remaining ratings go to users in
    proportion to lognormal(0, 1.1) activity weights.  Items are drawn with
    Zipf-like popularity (weight 1 / (rank + 10)^1.1), so a few items have
    thousands of ratings and many have a handful; (user, item) pairs may repeat.
    y = 3.6 + user effect (sd 0.45) + item effect (sd 0.55) + noise (sd 0.9),
    rounded and clipped to the 1-5 scale.
    """
    n, nu, ni = (100_000, 1_000, 600) if quick else (1_000_000, 6_040, 3_706)
    rng = np.random.default_rng(SEED + 6)
    wu = rng.lognormal(0.0, 1.1, size=nu)
    counts = 20 + rng.multinomial(n - 20 * nu, wu / wu.sum())
    user = np.repeat(np.arange(nu), counts)
    rng.shuffle(user)
    wi = 1.0 / (rng.permutation(ni) + 10.0) ** 1.1
    wi /= wi.sum()
    ue = rng.normal(scale=0.45, size=nu)
    ie = rng.normal(scale=0.55, size=ni)
    parts = []
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        uu = user[start:start + m]
        it = rng.choice(ni, size=m, p=wi)
        y = np.clip(np.rint(3.6 + ue[uu] + ie[it] + rng.normal(scale=0.9, size=m)), 1, 5)
        parts.append(pd.DataFrame({
            "user": (uu + 1).astype(np.int32), "item": (it + 1).astype(np.int32), "y": y,
        }))
    df = pd.concat(parts, ignore_index=True)
    per_user = df.user.value_counts()
    per_item = df.item.value_counts()
    info = {
        "rows": n, "users": int(per_user.size), "items": int(per_item.size),
        "per_user_min_median_max": [int(per_user.min()), int(per_user.median()), int(per_user.max())],
        "per_item_min_median_max": [int(per_item.min()), int(per_item.median()), int(per_item.max())],
    }
    return df, info


def nested(quick: bool = False) -> tuple[pd.DataFrame, dict]:
    """50 A x 20 B per A x 10 C per B (10,000 cells), 5 observations per cell.

    50 + 1,000 + 10,000 levels of (1|A), (1|A:B), (1|A:B:C); 50,000 rows.
    Effects with SDs 1.0, 0.7, 0.5; residual SD 1.
    """
    na, nb, nc, reps = (10, 10, 5, 4) if quick else (50, 20, 10, 5)
    rng = np.random.default_rng(SEED + 7)
    a = np.repeat(np.arange(na), nb * nc * reps)
    b = np.tile(np.repeat(np.arange(nb), nc * reps), na)
    c = np.tile(np.repeat(np.arange(nc), reps), na * nb)
    ea = rng.normal(scale=1.0, size=na)
    eb = rng.normal(scale=0.7, size=(na, nb))
    ec = rng.normal(scale=0.5, size=(na, nb, nc))
    y = 5 + ea[a] + eb[a, b] + ec[a, b, c] + rng.normal(size=len(a))
    df = pd.DataFrame({"A": a + 1, "B": b + 1, "C": c + 1, "y": np.round(y, 6)})
    info = {"rows": len(df), "A": na, "A:B": na * nb, "A:B:C": na * nb * nc, "per_cell": reps}
    return df, info


def bernoulli_1m(quick: bool = False) -> tuple[pd.DataFrame, dict]:
    """1,000,000 binary responses, g1 (10,000 levels) crossed with g2 (500 levels).

    Uniform assignment to both factors; x ~ N(0, 1) (rounded to 6 decimals, and
    the rounded value is the one used); y ~ Bernoulli(plogis(-0.5 + 0.8 x +
    b1[g1] + b2[g2])) with b1 ~ N(0, 0.6^2), b2 ~ N(0, 0.4^2).  Drawn in chunks
    of 250,000.  Quick: 50,000 rows, 1,000 x 100 levels.
    """
    n, n1, n2 = (50_000, 1_000, 100) if quick else (1_000_000, 10_000, 500)
    rng = np.random.default_rng(SEED + 8)
    b1 = rng.normal(scale=0.6, size=n1)
    b2 = rng.normal(scale=0.4, size=n2)
    parts = []
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        g1 = rng.integers(0, n1, size=m)
        g2 = rng.integers(0, n2, size=m)
        x = np.round(rng.normal(size=m), 6)
        eta = -0.5 + 0.8 * x + b1[g1] + b2[g2]
        y = rng.uniform(size=m) < 1.0 / (1.0 + np.exp(-eta))
        parts.append(pd.DataFrame({
            "g1": (g1 + 1).astype(np.int32), "g2": (g2 + 1).astype(np.int32),
            "x": x, "y": y.astype(np.int8),
        }))
    df = pd.concat(parts, ignore_index=True)
    info = {"rows": n, "g1_levels": int(df.g1.nunique()), "g2_levels": int(df.g2.nunique()),
            "mean_y": round(float(df.y.mean()), 6),
            "beta": [-0.5, 0.8], "sd_g1": 0.6, "sd_g2": 0.4}
    return df, info


GENERATORS = {
    "maximal": maximal,
    "crossed_1m": crossed_1m,
    "ratings_1m": ratings_1m,
    "nested": nested,
    "bernoulli_1m": bernoulli_1m,
}


def ensure_cached(name: str, quick: bool = False) -> dict:
    """Write ``.cache/<name>.csv`` and ``.parquet`` once; return their paths and info."""
    stem = f"{name}-quick" if quick else name
    csv, parquet, meta = (CACHE / f"{stem}.{ext}" for ext in ("csv", "parquet", "json"))
    if meta.exists() and csv.exists() and parquet.exists():
        info = json.loads(meta.read_text(encoding="utf-8"))
        if info.get("version") == VERSION and info.get("seed") == SEED:
            return info
    CACHE.mkdir(exist_ok=True)
    df, info = GENERATORS[name](quick)
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    info.update({"version": VERSION, "seed": SEED, "csv": str(csv), "parquet": str(parquet)})
    meta.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


if __name__ == "__main__":
    import sys

    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    for name in names or list(GENERATORS):
        print(name, ensure_cached(name, quick="--quick" in sys.argv))
