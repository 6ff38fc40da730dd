"""BLAS threads: how many a fit uses, and limiting them.

The plan depends on the problem's size and the machine's core count only,
never on how busy the machine is at the moment: the number of threads in a
factorisation changes the order of its sums, so a plan read from the load
made the same fit give different last digits in different processes.
"""

from __future__ import annotations

import contextlib
import functools
import os

__all__ = [
    "THREADED_BLOCK", "auto_thread_plan", "blas_threads", "thin_product_threads", "thread_controller",
]


def blas_threads(count: int | None):
    """Return a context limiting BLAS threads to ``count`` (None: leave as is)."""
    if count is None:
        return contextlib.nullcontext()
    return thread_controller().limit(limits=count, user_api="blas")


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
    """Return the BLAS threads for a product over ``nrows`` rows and ``ncols`` columns.

    One for thin products (see ``THIN_COLUMNS``), None (the library's default,
    no limit) otherwise and for small ones.
    """
    return 1 if ncols <= THIN_COLUMNS and nrows * ncols >= SMALL_PRODUCT else None


@functools.cache
def thread_controller():
    """Return threadpoolctl's view of the loaded BLAS libraries.

    Finding them reads /proc/self/maps, so it is done once per process.
    """
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# Dense blocks of the factor from this many rows get every core.
THREADED_BLOCK = 2000


def auto_thread_plan(block_size: int, cores: int | None = None) -> tuple[int | None, int | None]:
    """Return the threads for the whole fit and inside the dense factorisations.

    The pair (threads for the whole fit, threads inside the dense
    factorisations) is for a dense block of ``block_size`` rows on ``cores``
    cores (default: the machine's); None means the library default. A function
    of these two only, so that the same call on the same machine gives
    bit-identical results.

    Below 2,000 rows one thread throughout. Two threads inside the Cholesky
    factorisation and its inverse made InstEval's 1,160-row block 6% faster
    on an idle machine (335 vs 355 ms on 2 cores) and 16 times slower with
    the cores busy elsewhere (7.0 vs 0.44 s: idle OpenBLAS workers spin
    against the busy cores); two threads throughout made a 1,157-row fit 3x
    slower even when idle. From 2,000 rows (a 3,706-row block: evaluations
    1.3x faster) every core throughout; ``threads=1`` is the choice for such
    fits on a busy machine.
    """
    cores = (os.cpu_count() or 1) if cores is None else cores
    if block_size < THREADED_BLOCK or cores == 1:
        return 1, None
    return None, None
