"""Memory a fitted model keeps, and the size of its pickle.

    python benchmarks/memory.py

For each model: the model frame's and the fitted model's retained memory,
measured by ``tracemalloc`` (numpy reports its buffers to it) as what stays
allocated after a fit (a first, untraced fit of the same model warms the
process's caches and compiled kernels; the data are loaded before), and the
pickle's size. The README's memory claims come from this script; the bounds
(a fitted model <= 5x its frame, InstEval's pickle <= 10 MB) are asserted by
tests/test_memory_pickle.py with an independent measure (the arrays reachable
from the object).
"""

from __future__ import annotations

import gc
import pickle
import tracemalloc

import mixedmodels as mm

MODELS = [
    ("InstEval", "lmer", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)", {"reml": False}),
    ("sleepstudy", "lmer", "Reaction ~ Days + (Days | Subject)", {}),
    ("VerbAgg", "glmer", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
     {"family": "binomial"}),
    ("cbpp", "glmer", "cbind(incidence, size - incidence) ~ period + (1 | herd)",
     {"family": "binomial"}),
]


def retained(make):
    """(object, bytes still allocated by making it, once it is made)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    obj = make()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return obj, after - before


def main() -> None:
    print(f"{'data':<11} {'model':<6} {'frame MB':>9} {'fitted MB':>10} {'ratio':>6} {'pickle MB':>10}")
    for name, kind, formula, options in MODELS:
        data = mm.datasets.load(name)
        fit = getattr(mm, kind)
        fit(formula, data, **options)  # warm-up: caches and compiled kernels are not the model's
        model, fitted = retained(lambda: fit(formula, data, **options))
        frame_bytes = pickle.dumps(model.frame)
        _, frame = retained(lambda: pickle.loads(frame_bytes))  # a copy of the frame alone
        size = len(pickle.dumps(model))
        print(f"{name:<11} {kind:<6} {frame / 1e6:9.2f} {fitted / 1e6:10.2f} "
              f"{fitted / max(frame, 1):6.1f} {size / 1e6:10.2f}")


if __name__ == "__main__":
    main()
