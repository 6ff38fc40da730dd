"""BLAS threads: limiting them, and how busy the machine is right now."""

from __future__ import annotations

import contextlib
import functools
import os
import time

__all__ = ["blas_threads", "current_load", "thin_product_threads"]


def blas_threads(count: int | None):
    """A context limiting BLAS threads to ``count`` (None: leave as is)."""
    if count is None:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=count, user_api="blas")


# Products over the rows of the data with at most this many columns (X'X, X'y)
# are bound by memory, not arithmetic: a second BLAS thread gains little, and it
# may wait long for a core. numpy and scipy each load their own OpenBLAS, whose
# workers spin for a while after a call, so after a factorisation in one a
# two-thread call in the other competes with the spinning worker: on 2 cores a
# 73,421 x 28 X'X took 4-6 ms on one thread and up to 78 ms on two.
THIN_COLUMNS = 64


# Below this many entries a product runs on one thread anyway (no limit set:
# setting one costs ~20 us, a tenth of a small model's whole fit).
SMALL_PRODUCT = 100_000


def thin_product_threads(ncols: int, nrows: int) -> int | None:
    """BLAS threads for a product over the data's ``nrows`` rows with ``ncols``
    columns: one for thin ones (see ``THIN_COLUMNS``), the library's default
    (no limit) otherwise and for small ones."""
    return 1 if ncols <= THIN_COLUMNS and nrows * ncols >= SMALL_PRODUCT else None


@functools.cache
def _thread_controller():
    """threadpoolctl's view of the loaded BLAS libraries; finding them reads
    /proc/self/maps, so it is done once per process."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def current_load(samples: int = 2, interval: float = 3e-4) -> float | None:
    """How many cores are busy now, this process counted as one: on Linux the
    kernel's count of runnable threads (/proc/loadavg) less this process's own
    (its BLAS threads spin for a while after each call), the least of a few
    readings ``interval`` seconds apart (a busy process shows in every reading,
    a passing one rarely in two; the default sleeps 0.3 ms, where three
    readings a millisecond apart slept 2 ms, a tenth of a 20 ms fit); elsewhere
    the 1-minute load average, which lags by a minute; None if neither is
    available."""
    try:
        counts = []
        for i in range(samples):
            if i:
                time.sleep(interval)
            with open("/proc/loadavg") as fh:
                running = int(fh.read().split()[3].split("/")[0])
            counts.append(max(running - _own_running_threads(), 0) + 1)
        return float(min(counts))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _own_running_threads() -> int:
    """Threads of this process in the running state (Linux /proc)."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):  # the thread ended meanwhile
            continue
        count += state == "R"
    return count
