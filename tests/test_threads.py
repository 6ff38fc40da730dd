"""The BLAS thread policy of fit(threads="auto")."""

import os

from mixedmodels.support.threads import THREADED_BLOCK, auto_thread_plan


def test_blocks_under_2000_rows_use_one_thread_on_any_machine():
    # InstEval's 1,160-row block: two threads in LAPACK were 6% faster idle,
    # 16x slower on a busy machine
    assert auto_thread_plan(THREADED_BLOCK - 1, 8) == (1, None)
    assert auto_thread_plan(10) == (1, None)


def test_large_blocks_use_every_core_throughout():
    assert auto_thread_plan(THREADED_BLOCK, 4) == (None, None)
    assert auto_thread_plan(10 * THREADED_BLOCK, 1) == (1, None)
    assert auto_thread_plan(10 * THREADED_BLOCK) == ((None, None) if (os.cpu_count() or 1) > 1 else (1, None))


def test_the_fit_records_its_threads():
    import mixedmodels as mm

    sleep = mm.datasets.load("sleepstudy")
    assert mm.lmer("Reaction ~ Days + (Days | Subject)", sleep).optsum.blas_threads == (1, None)
    explicit = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep, threads=2)
    assert explicit.optsum.blas_threads == (2, None)
