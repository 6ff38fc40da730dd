"""Numba kernels of the linear-algebra layer and the loader that makes them ready (see loader)."""
