"""The blocked system (first term block-diagonal, sparse rows, dense Schur
complement) and the one-dense-block system are two factorizations of the same
matrix: objective pieces, gradient pieces, solutions and conditional variances
must agree to rounding on every structure."""

import numpy as np
import pytest
import scipy.sparse as sp

import mixedmodels as mm
from mixedmodels.linalg.augmented import AugmentedSystem
from mixedmodels.linalg.crossproducts import TermData, fill_rows, stack_csc
from mixedmodels.linalg.dense import DenseSystem

MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
    ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (Days | DaysF)"),
    ("sleepstudy", "Reaction ~ Days + (Days | Subject) + (Days | DaysF)"),
    # nested: after the first term the second one's block stays diagonal
    ("sleepstudy", "Reaction ~ Days + (1 | Subject/DaysF) + (1 | DaysF)"),
    ("sleepstudy", "Reaction ~ Days + (Days | Subject/DaysF)"),
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


@pytest.mark.parametrize("path", ["operator", "kernels", "products", "dense_b"])
@pytest.mark.parametrize("name, formula", MODELS)
def test_blocked_and_dense_systems_agree(name, formula, path):
    """With the precomputed rank-update operator and, when it would be too large
    (limit 0 here), with the compiled loops (Numba) or scipy's sparse products;
    and with B's random-effects rows stored dense (BLAS updates), forced here."""
    model, terms, Xy, dense, lams = _systems(name, formula)
    blocked = AugmentedSystem.from_terms(
        terms,
        np.ascontiguousarray(Xy[:, :-1]),
        Xy[:, -1],
        max_update_nnz=30_000_000 if path == "operator" else 0,
        dense_b=path == "dense_b",
    )
    assert blocked.dense_b == (path == "dense_b")
    assert (blocked._update is None) == (path != "operator")
    if path == "kernels":
        assert blocked._use_kernels, "numba is in the [test] extra"
    if path == "products":
        blocked._use_kernels = False
    if path == "dense_b":
        assert not blocked._use_kernels and blocked._B_re is None
        blocked._dense.step = 5  # several chunks of levels, the last one partial
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


def test_dense_b_chosen_by_density():
    """B's random-effects rows are stored dense when most cells are nonzero
    (fully crossed plate x sample) and stay sparse for nested factors."""
    _, terms, Xy, _, _ = _systems("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)")
    assert AugmentedSystem.from_terms(terms, Xy[:, :-1], Xy[:, -1]).dense_b
    assert not AugmentedSystem.from_terms(terms, Xy[:, :-1], Xy[:, -1], max_dense_bytes=100).dense_b
    _, terms, Xy, _, _ = _systems("Pastes", "strength ~ 1 + (1 | batch/cask)")
    assert not AugmentedSystem.from_terms(terms, Xy[:, :-1], Xy[:, -1]).dense_b


def test_stacked_and_dense_copies_of_b():
    """B's one sparse copy (several terms stacked by column pointers, int32
    indices) and its dense transpose, filled a few entries at a time."""
    rng = np.random.default_rng(3)
    blocks = [
        sp.random_array((m, 40), density=0.3, format="csc", rng=rng) for m in (7, 1, 12)
    ]
    blocks[1] = sp.csc_array((1, 40))  # an empty block
    stacked = stack_csc(blocks, 40)
    expected = np.vstack([b.toarray() for b in blocks])
    np.testing.assert_array_equal(stacked.toarray(), expected)
    assert stacked.indices.dtype == np.int32 and stacked.has_canonical_format
    Bt = np.full((40, 25), np.nan)
    Bt[:, :20] = 0.0
    fill_rows(Bt, stacked, 0, entries=5)
    np.testing.assert_array_equal(Bt[:, :20], expected.T)
    assert np.isnan(Bt[:, 20:]).all()  # nothing written outside the block


@pytest.mark.parametrize(
    "name, formula, lead",
    [
        ("sleepstudy", "Reaction ~ Days + (1 | Subject/DaysF) + (1 | DaysF)", 18),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)", 10),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", 0),  # crossed
        ("sleepstudy", "Reaction ~ Days + (Days | Subject/DaysF)", 0),  # not scalar
    ],
)
def test_diagonal_lead_only_for_nested_scalar_terms(name, formula, lead):
    """The second term is eliminated by square roots only where its block stays
    diagonal; the factor and inverse sums then agree with the dense system
    (test_blocked_and_dense_systems_agree runs these models too)."""
    _, terms, Xy, _, _ = _systems(name, formula)
    assert AugmentedSystem.from_terms(terms, Xy[:, :-1], Xy[:, -1])._lead == lead


def test_compiled_update_operator_equals_numpy():
    """The scalar first term's update operator built in one compiled pass
    (Numba) has exactly the entries, positions and order of the numpy build,
    on a crossed design with weights (values not all 1) and empty levels."""
    from mixedmodels.linalg.kernels import lmm_kernels as _kernels
    from mixedmodels.linalg.rank_update import scalar_pairs

    rng = np.random.default_rng(11)
    n, l0, l1 = 3000, 400, 150
    codes0 = rng.integers(0, l0, n)
    codes0[codes0 == 7] = 8  # level 7 of the first term has no row
    codes1 = rng.integers(0, l1, n)
    w = rng.uniform(0.5, 2.0, n)
    t0 = TermData(codes0, w[:, None], l0)
    t1 = TermData(codes1, w[:, None], l1)
    Xy = np.column_stack([np.ones(n), rng.normal(size=n)]) * w[:, None]
    system = AugmentedSystem.from_terms([t0, t1], Xy[:, :-1], Xy[:, -1])
    B = system._B_re
    B.sort_indices()
    counts = np.diff(B.indptr).astype(np.int64)
    T_np, touched_np = scalar_pairs(B, counts, system.N)
    ptr, rank, value, touched_nb = _kernels.scalar_pairs(B, system.N)
    np.testing.assert_array_equal(touched_nb, touched_np)
    np.testing.assert_array_equal(ptr, T_np.indptr)
    np.testing.assert_array_equal(rank, T_np.indices)
    np.testing.assert_array_equal(value, T_np.data)
    assert rank.dtype == np.int32


def test_unit_operator_kept_as_its_pattern():
    """Unweighted rows whose first-term levels meet each other level at most
    once give B entries of 1, so every value of the operator is 1: it is kept as
    its pattern, without values, and applied by compiled loops whose results
    equal scipy's products with the explicit matrix of ones, bit for bit."""
    from mixedmodels.linalg.kernels import lmm_kernels as _kernels

    rng = np.random.default_rng(12)
    l0, l1 = 200, 80
    cells = rng.choice(l0 * l1, size=3000, replace=False)  # each pair at most once
    t0 = TermData(cells // l1, np.ones((3000, 1)), l0)
    t1 = TermData(cells % l1, np.ones((3000, 1)), l1)
    X = np.ones((3000, 1))
    system = AugmentedSystem.from_terms([t0, t1], X, rng.normal(size=3000), dense_b=False)
    up = system._update
    assert up.T is None and up.pattern is not None
    ptr, rank = up.pattern
    ones = sp.csc_array((np.ones(len(rank)), rank, ptr), shape=(len(up.positions), l0))
    c, w = rng.normal(size=l0), rng.normal(size=len(up.positions))
    np.testing.assert_array_equal(up.apply(c), ones @ c)
    np.testing.assert_array_equal(up.adjoint(w), ones.T @ w)
    _, _, value, _ = _kernels.scalar_pairs(system._B_re, system.N)
    assert value is None


def test_compiled_scatter_and_gather_equal_numpy(monkeypatch):
    """The Schur complement written at the operator's positions and the
    gradient's gather from S⁻¹ at them, by one compiled pass each, equal the
    numpy versions (a fancy-index scatter after a band clear, a gather times
    scales): three crossed scalar terms with weights, so positions span
    several blocks of terms."""

    rng = np.random.default_rng(5)
    n = 4000
    sizes = (300, 120, 40)
    codes = [rng.integers(0, m, n) for m in sizes]
    w = rng.uniform(0.5, 2.0, n)
    terms = [TermData(c, w[:, None], m) for c, m in zip(codes, sizes)]
    X = np.column_stack([np.ones(n), rng.normal(size=n)]) * w[:, None]
    system = AugmentedSystem.from_terms(terms, X, rng.normal(size=n) * w)
    assert system._update is not None and system.scalar_rest
    lams = [np.array([[t]]) for t in (0.7, 1.3, 0.4)]
    _, L00inv = system.first_term(lams[0])
    compiled = system._schur_operator(lams, L00inv).copy()
    f = system.factor(lams, keep=True)
    inv = system._lower_inverse(f.Lrr, system.Q1)
    H_compiled = system._gather_operator(inv, None, lams[1:])
    monkeypatch.setattr(system, "compiled", False)
    system._work = np.full_like(system.Arr, np.nan)  # what the band clear must overwrite
    plain = system._schur_operator(lams, L00inv)
    upper = np.triu(np.ones(plain.shape, dtype=bool))
    np.testing.assert_array_equal(compiled[upper], plain[upper])
    np.testing.assert_array_equal(system._gather_operator(inv, None, lams[1:]), H_compiled)


@pytest.mark.parametrize(
    "name, formula",
    [
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
    ],
)
def test_curvature_estimate_near_the_hessian_diagonal(name, formula):
    """The diagonal curvature that scales the L-BFGS-B search of all-scalar
    models is within a factor of two of the Hessian's diagonal (central
    differences of the analytic gradient) at the optimum: 14% high and 14% low
    on the crossed Penicillin terms, 78% high for the casks nested in batches
    (few levels, strongly coupled terms); 1-7% on InstEval's crossed terms.
    It is only a scaling: the search still ends where BOBYQA does."""
    data = mm.datasets.load(name)
    model = mm.LinearMixedModel(formula, data).fit()
    theta = model.theta.values
    _, _, parts = model._evaluate(theta)
    estimate = model.curvature_estimate(theta, parts)
    hessian = np.empty(len(theta))
    for i in range(len(theta)):
        h = np.zeros(len(theta))
        h[i] = 1e-5
        up = model.objective_gradient(theta + h)[1][i]
        down = model.objective_gradient(theta - h)[1][i]
        hessian[i] = (up - down) / 2e-5
    ratio = estimate / hessian
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    bobyqa = mm.LinearMixedModel(formula, data).fit(optimizer="bobyqa")
    assert model.reml_criterion <= bobyqa.reml_criterion + 1e-8
    np.testing.assert_allclose(model.theta.values, bobyqa.theta.values, rtol=1e-4)


def test_rank_check_gram_reused_by_the_cross_products():
    # the rank check's X'X goes into the cross-products instead of a second
    # product: the same Arr (to rounding), and the same fit
    from mixedmodels.linalg.crossproducts import CrossProducts

    d = mm.datasets.load("InstEval")
    m = mm.LinearMixedModel("y ~ 1 + service * dept + (1 | s) + (1 | d)", d, reml=False)
    fr = m.frame
    assert fr.fixed.gram is not None and fr.fixed.gram.shape == (28, 28)
    terms = [TermData(t.codes, t.z, t.nlevels) for t in fr.terms]
    with_gram = CrossProducts.from_data(terms, fr.fixed.X, fr.y, fr.fixed.gram).Arr
    without = CrossProducts.from_data(terms, fr.fixed.X, fr.y).Arr
    np.testing.assert_allclose(with_gram, without, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(m.system.Arr, with_gram)


def test_clone_without_a_fixed_column_drops_it_from_the_gram():
    # profile intervals of β refit the model without one column of X: the
    # rank check's X'X that the cross-products take must lose that row and
    # column too (it raised a shape error before)
    from mixedmodels.linalg.crossproducts import CrossProducts

    d = mm.datasets.load("InstEval").iloc[:20000]
    m = mm.LinearMixedModel("y ~ 1 + service * studage + (1 | s) + (1 | d)", d, reml=False)
    assert m.frame.fixed.gram is not None
    reduced = m.clone(drop_fixed=2)
    fr = reduced.frame
    assert fr.fixed.X.shape[1] == fr.fixed.gram.shape[0] == m.frame.fixed.X.shape[1] - 1
    terms = [TermData(t.codes, t.z, t.nlevels) for t in fr.terms]
    direct = CrossProducts.from_data(terms, np.ascontiguousarray(fr.fixed.X), fr.y).Arr
    np.testing.assert_allclose(reduced.system.Arr, direct, rtol=1e-12, atol=1e-9)


def test_single_precision_inverse_kept_for_the_operator_gather():
    """Above 500 rows the gradient's inverse is computed in single precision;
    where only the compiled gather reads it (update operator, scalar terms after
    the first) it stays float32 instead of being copied to double, and what the
    gradient takes from it is the same, bit for bit (ML and REML blocks)."""
    rng = np.random.default_rng(8)
    n, sizes = 8000, (700, 450, 120)
    codes = [rng.integers(0, m, n) for m in sizes]
    terms = [TermData(c, np.ones((n, 1)), m) for c, m in zip(codes, sizes)]
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    system = AugmentedSystem.from_terms(terms, X, rng.normal(size=n), dense_b=False)
    assert system._update is not None and system.scalar_rest and system.Q1 >= 500
    lams = [np.array([[t]]) for t in (0.6, 0.9, 0.3)]
    f = system.factor(lams, keep=True)
    for sub in (system.Q1, system.Q1 + 2):
        single = system._lower_inverse(f.Lrr, sub, keep_single=True)
        double = system._lower_inverse(f.Lrr, sub)
        assert single.dtype == np.float32 and double.dtype == np.float64
        low = np.tril(np.ones((sub, sub), dtype=bool))
        np.testing.assert_array_equal(single[low].astype(float), double[low])
        Minv = np.transpose(f.L00inv, (0, 2, 1)) @ f.L00inv
        np.testing.assert_array_equal(
            system._first_term_correction(single, f.lam, Minv, sub),
            system._first_term_correction(double, f.lam, Minv, sub),
        )
    # the second term's sum of diagonal entries, from the float32 inverse
    sums = system.inverse_block_sums(f, system.Q1)
    diag = np.diagonal(system._lower_inverse(f.Lrr, system.Q1))
    np.testing.assert_allclose(sums[1][0, 0], diag[:450].sum(), rtol=1e-15)
