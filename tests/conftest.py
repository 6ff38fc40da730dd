"""Session-wide setup and the datasets most test modules share."""

import pytest

import mixedmodels as mm


@pytest.fixture(autouse=True, scope="session")
def _compiled_kernels_ready():
    """Every test sees the compiled path where Numba is installed: on a fresh
    clone the kernels are compiled once here (~20 s) instead of the first fits
    running on the numpy path while they compile (see ``mixedmodels.linalg.kernels.loader``)."""
    from mixedmodels.linalg import kernels

    kernels.wait()


@pytest.fixture(scope="module")
def sleep():
    """lme4's sleepstudy (a fresh frame per test module)."""
    return mm.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def cbpp():
    """lme4's cbpp (a fresh frame per test module)."""
    return mm.datasets.load("cbpp")
