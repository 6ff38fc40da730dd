"""The BLAS thread policy of fit(threads="auto")."""

import os
import subprocess
import sys
import time

import pytest

from mixedmodels._threads import current_load as _current_load
from mixedmodels.lmm import _FACTOR_THREADED_BLOCK, _THREADED_BLOCK, _auto_thread_plan


def test_small_blocks_use_one_thread_whatever_the_load():
    assert _auto_thread_plan(_FACTOR_THREADED_BLOCK - 1, 0.0) == (1, None)
    assert _auto_thread_plan(10, None) == (1, None)


def test_middle_blocks_use_the_idle_cores_in_the_factorisations_only():
    cores = os.cpu_count() or 1
    size = _FACTOR_THREADED_BLOCK
    # idle machine: one thread for the fit, every core inside LAPACK
    assert _auto_thread_plan(size, 1.0) == (1, cores if cores > 1 else None)
    assert _auto_thread_plan(size, None) == (1, cores if cores > 1 else None)
    # every core busy elsewhere: one thread everywhere
    assert _auto_thread_plan(size, cores + 1.0) == (1, None)


def test_large_blocks_use_the_idle_cores_throughout():
    cores = os.cpu_count() or 1
    # an idle machine (or only this process busy): the library default, all cores
    assert _auto_thread_plan(_THREADED_BLOCK, 0.0) == (None, None)
    assert _auto_thread_plan(_THREADED_BLOCK, 1.0) == (None, None)
    assert _auto_thread_plan(_THREADED_BLOCK, None) == (None, None)
    # every core busy with other work: one thread, never none
    assert _auto_thread_plan(_THREADED_BLOCK, cores + 1.0) == (1, None)
    assert _auto_thread_plan(_THREADED_BLOCK, 10.0 * cores) == (1, None)
    if cores >= 2:  # one core busy elsewhere: one fewer thread than cores
        assert _auto_thread_plan(5000, 2.0) == (cores - 1, None)


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="reads Linux's /proc")
def test_current_load_counts_a_busy_process():
    """A process spinning on a core is in every reading of the load."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert _current_load() >= 2.0
    finally:
        busy.kill()
        busy.wait()


def test_the_fit_records_its_threads():
    import mixedmodels as mm

    sleep = mm.datasets.load("sleepstudy")
    assert mm.lmer("Reaction ~ Days + (Days | Subject)", sleep).optsum.blas_threads == (1, None)
    explicit = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep, threads=2)
    assert explicit.optsum.blas_threads == (2, None)
