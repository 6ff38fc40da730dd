"""The gradient's inverse of a large dense block is taken in single precision
when its residual says it is accurate, in double precision otherwise; the
objective itself never is. Gradients stay those of the objective."""

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import lapack

import mixedmodels as mm
from mixedmodels.linalg import factor as linalg
from mixedmodels.linalg.factor import inverse_from_factor


def _factor(eigenvalues: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues),) * 2))
    return np.linalg.cholesky((Q * eigenvalues) @ Q.T)


def _double(L: np.ndarray) -> np.ndarray:
    inv, info = lapack.dpotri(np.array(L, order="F"), lower=1)
    assert info == 0
    return np.tril(inv)


def test_single_precision_inverse_of_a_well_conditioned_factor():
    L = _factor(np.linspace(1.0, 50.0, 600))
    single, double = np.tril(inverse_from_factor(L)), _double(L)
    assert not np.array_equal(single, double)  # the single-precision route was taken
    np.testing.assert_allclose(single, double, rtol=0, atol=1e-6 * np.abs(double).max())


def test_ill_conditioned_factor_falls_back_to_double_precision():
    L = _factor(np.logspace(0, 9, 600))
    np.testing.assert_array_equal(np.tril(inverse_from_factor(L)), _double(L))


@pytest.mark.parametrize("eigen_max", [50.0, 1e9])  # single precision kept / refused
def test_inverse_of_the_leading_block_of_a_larger_factor(eigen_max):
    """``sub=``: the inverse of L[:sub, :sub] read from the whole factor (the
    engine's dense block with its [X y] rows after the random effects), whose
    upper triangle holds unrelated numbers, equals that of the block alone."""
    L = _factor(np.geomspace(1.0, eigen_max, 620))
    sub = 600
    garbage = np.asfortranarray(L + np.triu(np.full(L.shape, 7.5), 1))
    expected = np.tril(inverse_from_factor(np.array(L[:sub, :sub])))
    np.testing.assert_array_equal(np.tril(inverse_from_factor(garbage, sub=sub)), expected)
    np.testing.assert_allclose(expected, _double(L[:sub, :sub]), rtol=0, atol=1e-6 * np.abs(expected).max())


def test_small_factors_stay_in_double_precision():
    L = _factor(np.linspace(1.0, 5.0, 50))
    np.testing.assert_array_equal(np.tril(inverse_from_factor(L)), _double(L))


def _differences(model, theta, h=1e-6):
    return np.array(
        [
            (model.objective(theta + h * e) - model.objective(theta - h * e)) / (2 * h)
            for e in np.eye(len(theta))
        ]
    )


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize(
    "name, formula",
    [
        ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
    ],
)
def test_gradient_with_every_inverse_in_single_precision(monkeypatch, name, formula, reml):
    monkeypatch.setattr(linalg, "SINGLE_PRECISION_INVERSE_ROWS", 1)
    model = mm.LinearMixedModel(formula, mm.datasets.load(name), reml=reml)
    theta = np.where(model.theta_lower == 0, 0.8, 0.3) + 0.05 * np.arange(len(model.theta_lower))
    _, grad = model.objective_gradient(theta)
    np.testing.assert_allclose(grad, _differences(model, theta), rtol=1e-5, atol=1e-4)


def test_gradient_of_a_large_crossed_model():
    """A 560-row dense block (single precision by default) with a wide X."""
    rng = np.random.default_rng(7)
    n = 8000
    g1, g2 = rng.integers(0, 900, n), rng.integers(0, 550, n)
    x = rng.standard_normal(n)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, 900)[g1] + rng.normal(0, 0.4, 550)[g2] + rng.standard_normal(n)
    data = pd.DataFrame({"y": y, "x": x, "f": rng.integers(0, 8, n).astype(str), "g1": g1, "g2": g2})
    for reml in (True, False):
        model = mm.LinearMixedModel("y ~ x * f + (1 | g1) + (1 | g2)", data, reml=reml)
        assert model.system.dense_size >= linalg.SINGLE_PRECISION_INVERSE_ROWS
        for theta in (np.array([0.6, 0.4]), np.array([1.5, 0.05])):
            _, grad = model.objective_gradient(theta)
            np.testing.assert_allclose(grad, _differences(model, theta), rtol=1e-5, atol=1e-3)
