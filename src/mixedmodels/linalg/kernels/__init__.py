"""Numba kernels of the linear-algebra layer and the loader that makes them ready.

See ``loader`` for when they are used: ``lmm_kernels``/``lmm_numba`` for lmer's
blocked system, ``glmm_kernels``/``glmm_numba`` for glmer's PIRLS steps.
"""

from __future__ import annotations

__all__ = ["wait"]


def wait() -> bool:
    """Block until the kernel sets of the lmer and glmer engines are ready.

    For a process that wants the compiled path from its first fit, and for
    benchmarks.

    Returns
    -------
    bool
        Whether the compiled path is in use (False without Numba or with
        ``MIXEDMODELS_NUMBA=0``).
    """
    from mixedmodels.linalg.kernels import glmm_kernels, lmm_kernels, loader

    sets = [glmm_kernels.KERNELS, lmm_kernels.KERNELS] + loader.kernel_sets()
    return all([kernel_set.wait() for kernel_set in dict.fromkeys(sets)])
