"""BLAS threads: limiting them, and how busy the machine is right now."""

from __future__ import annotations

import contextlib
import functools
import os
import time

__all__ = ["blas_threads", "current_load"]


def blas_threads(count: int | None):
    """A context limiting BLAS threads to ``count`` (None: leave as is)."""
    if count is None:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=count, user_api="blas")


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
