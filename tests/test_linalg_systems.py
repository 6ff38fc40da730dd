"""The blocked system (first term block-diagonal, sparse rows, dense Schur
complement) and the one-dense-block system are two factorizations of the same
matrix: objective pieces, gradient pieces, solutions and conditional variances
must agree to rounding on every structure."""

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.linalg import AugmentedSystem, DenseSystem, TermData

MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
    ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (Days | DaysF)"),
    ("sleepstudy", "Reaction ~ Days + (Days | Subject) + (Days | DaysF)"),
    # wide X: the dense [X y] rows of the update next to the sparse ones
    ("sleepstudy", "Reaction ~ Days * DaysF + (1 | Subject:DaysF) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ Days * DaysF + (Days | Subject:DaysF) + (Days | Subject)"),
]


def _systems(name, formula):
    data = mm.datasets.load(name)
    if "DaysF" in formula:
        data["DaysF"] = (data["Days"] % 4).astype(str)
    model = mm.LinearMixedModel(formula, data)
    fr = model.frame
    terms = [TermData(t.codes, t.z, t.nlevels) for t in fr.terms]
    Xy = np.column_stack([fr.fixed.X, fr.y])
    theta = np.where(model.theta_lower == 0, 0.8, 0.3) + 0.05 * np.arange(len(model.theta_lower))
    return model, terms, Xy, DenseSystem(terms, Xy), model.lambdas(theta)


@pytest.mark.parametrize("path", ["operator", "kernels", "products"])
@pytest.mark.parametrize("name, formula", MODELS)
def test_blocked_and_dense_systems_agree(name, formula, path):
    """With the precomputed rank-update operator and, when it would be too large
    (limit 0 here), with the compiled loops (Numba) or scipy's sparse products."""
    model, terms, Xy, dense, lams = _systems(name, formula)
    blocked = AugmentedSystem.from_terms(
        terms, Xy, max_update_nnz=30_000_000 if path == "operator" else 0
    )
    assert (blocked._update is None) == (path != "operator")
    if path == "kernels":
        assert blocked._use_kernels, "numba is in the [test] extra"
    if path == "products":
        blocked._use_kernels = False
    fb, fd = blocked.factor(lams, keep=True), dense.factor(lams, keep=True)
    assert fb.logdet_re() == pytest.approx(fd.logdet_re(), rel=1e-12)
    assert fb.logdet_x() == pytest.approx(fd.logdet_x(), rel=1e-12)
    assert fb.pwrss() == pytest.approx(fd.pwrss(), rel=1e-12)
    np.testing.assert_allclose(np.abs(fb.LX()), np.abs(fd.LX()), rtol=1e-10)
    beta_b, u_b = fb.solve()
    beta_d, u_d = fd.solve()
    np.testing.assert_allclose(beta_b, beta_d, rtol=1e-10, atol=1e-12 * np.abs(beta_d).max())
    for a, b in zip(u_b, u_d):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    for a, b in zip(fb.condvar_u(), fd.condvar_u()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14)
    # the objective-only path (workspace, no rows below the first term)
    fo = blocked.factor(lams)
    beta_o, u_o = blocked.solve(fo)
    np.testing.assert_allclose(beta_o, beta_d, rtol=1e-10, atol=1e-12 * np.abs(beta_d).max())
    for a, b in zip(u_o, u_d):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    p = len(beta_d)
    for extra in (0, p):  # ML (M) and REML (Ω) blocks of the inverse
        sb = blocked.inverse_block_sums(fo, blocked.Q1 + extra)
        sd = dense.inverse_block_sums(fd, dense.Q1 + extra)
        for a, b in zip(sb, sd):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("name, formula", MODELS)
def test_analytic_gradient_matches_differences(name, formula, reml):
    data = mm.datasets.load(name)
    if "DaysF" in formula:
        data["DaysF"] = (data["Days"] % 4).astype(str)
    model = mm.LinearMixedModel(formula, data, reml=reml)
    theta = np.where(model.theta_lower == 0, 0.8, 0.3) + 0.05 * np.arange(len(model.theta_lower))
    _, grad = model.objective_gradient(theta)
    h = 1e-6
    numeric = [
        (model.objective(theta + h * e) - model.objective(theta - h * e)) / (2 * h)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-4)


def test_gradient_exact_at_a_singular_covariance():
    """The dense system's gradient needs no λ⁻¹: at λ11 = 0 it still matches
    central differences (the objective is smooth through the boundary)."""
    model = mm.LinearMixedModel("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
    theta = np.array([0.0, 0.1, 0.3])
    _, grad = model.objective_gradient(theta)
    h = 1e-6
    numeric = [
        (model.objective(theta + h * e) - model.objective(theta - h * e)) / (2 * h)
        for e in np.eye(3)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-4)
