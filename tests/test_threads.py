"""The BLAS thread policy of fit(threads="auto")."""

import os
import subprocess
import sys
import time

import pytest

from mixedmodels.lmm import _THREADED_BLOCK, _auto_blas_threads, _current_load


def test_small_blocks_use_one_thread_whatever_the_load():
    assert _auto_blas_threads(_THREADED_BLOCK - 1, 0.0) == 1
    assert _auto_blas_threads(10, None) == 1


def test_large_blocks_use_the_idle_cores():
    cores = os.cpu_count() or 1
    # an idle machine (or only this process busy): the library default, all cores
    assert _auto_blas_threads(_THREADED_BLOCK, 0.0) is None
    assert _auto_blas_threads(_THREADED_BLOCK, 1.0) is None
    assert _auto_blas_threads(_THREADED_BLOCK, None) is None
    # every core busy with other work: one thread, never none
    assert _auto_blas_threads(_THREADED_BLOCK, cores + 1.0) == 1
    assert _auto_blas_threads(_THREADED_BLOCK, 10.0 * cores) == 1
    if cores >= 2:  # one core busy elsewhere: one fewer thread than cores
        assert _auto_blas_threads(5000, 2.0) == cores - 1


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
