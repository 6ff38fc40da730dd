"""Session-wide setup."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _compiled_kernels_ready():
    """Every test sees the compiled path where Numba is installed: on a fresh
    clone the kernels are compiled once here (~20 s) instead of the first fits
    running on the numpy path while they compile (see ``mixedmodels._compiled``)."""
    from mixedmodels import _compiled

    _compiled.wait()
