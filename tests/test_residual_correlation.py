"""nlme's residual correlation structures against nlme 3.1-162's own numbers.

The references (tests/reference/nlme_structures/correlation.json) are
``coef(Initialize(cs, data), unconstrained = TRUE/FALSE)`` and
``corMatrix(cs)`` of one or two groups, written by make.R beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixedmodels.exceptions import DataError, ModelSpecError
from mixedmodels.residual import (
    CorrelationStructure,
    corAR1,
    corARMA,
    corCAR1,
    corCompSymm,
    corExp,
    corGaus,
    corLin,
    corRatio,
    corSpher,
    corSymm,
    spatial,
)
from mixedmodels.residual import correlation as serial

REFERENCE = Path(__file__).resolve().parent / "reference" / "nlme_structures" / "correlation.json"
CASES = json.loads(REFERENCE.read_text())["cases"]
CLASSES = {name: getattr(serial, name, None) or getattr(spatial, name) for name in {c["class"][0] for c in CASES.values()}}
RTOL, ATOL = 1e-10, 1e-15  # relative, with a floor for nlme's cos(π/2) = 6e-17 "zeros"


def _arguments(case: dict) -> dict:
    """The constructor's arguments: R's length-one vectors unboxed, value kept a vector."""
    args = case["args"] or {}
    return {key: (val if key == "value" else val[0]) for key, val in args.items()}


def _nlme_arma_bug(case: dict) -> bool:
    """Whether nlme's ARMA correlations depart from the process's (q > p >= 1)."""
    args = _arguments(case)
    return case["class"][0] == "corARMA" and args["q"] > args["p"] >= 1


def _structure(case: dict, **extra) -> tuple[CorrelationStructure, list[np.ndarray]]:
    positions = [np.asarray(group, dtype=float) for group in case["positions"]]
    structure = CLASSES[case["class"][0]](**_arguments(case), **extra)
    return structure.initialize(positions), positions


@pytest.mark.parametrize("name", sorted(CASES))
def test_start_and_natural_values_are_nlmes(name):
    structure, _ = _structure(CASES[name])
    start = structure.start()
    np.testing.assert_allclose(start, CASES[name]["unconstrained"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(structure.natural(start), CASES[name]["natural"], rtol=RTOL, atol=ATOL)
    assert len(structure.param_names) == structure.n_params == len(start)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matrices_are_nlmes_corMatrix(name):
    case = CASES[name]
    structure, positions = _structure(case, **({"nlme_compatible": True} if _nlme_arma_bug(case) else {}))
    for group, expected in zip(positions, case["matrices"]):
        np.testing.assert_allclose(structure.matrix(structure.start(), group), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(n for n in CASES if "arma_acf" in CASES[n]))
def test_arma_correlations_are_the_process_autocorrelations(name):
    structure, _ = _structure(CASES[name])
    lags = np.arange(10.0)
    first_row = structure.matrix(structure.start(), lags)[0]
    np.testing.assert_allclose(first_row, CASES[name]["arma_acf"], rtol=RTOL, atol=ATOL)


def test_nlme_arma_departs_from_the_process_only_where_q_exceeds_p():
    case = CASES["arma12_ovary"]
    fixed, _ = _structure(case)
    compatible, _ = _structure(case, nlme_compatible=True)
    lags = np.arange(10.0)
    true_acf = fixed.matrix(fixed.start(), lags)[0]
    nlme_acf = compatible.matrix(compatible.start(), lags)[0]
    np.testing.assert_array_equal(true_acf[:2], nlme_acf[:2])  # lags 0..p agree
    assert abs(nlme_acf[2] - 0.285570175438596) < 1e-12 and abs(true_acf[2] - 0.0460964912280703) < 1e-12


#: the Gaussian and rational shapes are not valid correlations with the maximum metric in 2-D:
#: nlme's corMatrix of these cases has a negative eigenvalue
NOT_POSITIVE_DEFINITE = {"corGaus_maximum", "corRatio_maximum"}


@pytest.mark.parametrize("name", sorted(NOT_POSITIVE_DEFINITE))
def test_a_matrix_that_is_not_positive_definite_is_a_clear_error(name):
    structure, positions = _structure(CASES[name])
    assert np.linalg.eigvalsh(np.asarray(CASES[name]["matrices"][0]))[0] < 0
    with pytest.raises(DataError, match="not positive definite at {'range': 1.8}"):
        structure.factor(structure.start(), positions[0])


@pytest.mark.parametrize("name", sorted(set(CASES) - NOT_POSITIVE_DEFINITE))
def test_matrix_factor_and_log_det_invariants(name):
    structure, positions = _structure(CASES[name])
    trials = [structure.start()]
    if not isinstance(structure, spatial.SpatialCorrelation):
        # positive definite everywhere by their parametrisation (the spatial shapes are not
        # valid correlations for every metric: corGaus with "maximum" fails at some ranges)
        trials.append(structure.start() + np.random.default_rng(16).normal(scale=0.5, size=structure.n_params))
    for params in trials:
        for group in positions:
            matrix = structure.matrix(params, group)
            n = matrix.shape[0]
            np.testing.assert_array_equal(np.diag(matrix), np.ones(n))
            np.testing.assert_array_equal(matrix, matrix.T)
            factor = structure.factor(params, group)
            np.testing.assert_array_equal(factor, np.tril(factor))
            np.testing.assert_allclose(factor @ factor.T, matrix, rtol=0, atol=1e-12)
            sign, logdet = np.linalg.slogdet(matrix)
            assert sign == 1.0  # positive definite
            np.testing.assert_allclose(structure.log_det(params, group), logdet, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_parametrisation_round_trips(name):
    structure, _ = _structure(CASES[name])
    natural = np.asarray(CASES[name]["natural"])
    np.testing.assert_allclose(structure.natural(structure.unconstrained(natural)), natural, rtol=1e-12, atol=1e-15)
    unconstrained = np.random.default_rng(7).normal(size=structure.n_params)
    np.testing.assert_allclose(
        structure.unconstrained(structure.natural(unconstrained)), unconstrained, rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("name", ["ar1_orthodont", "arma11_ovary", "compsymm_orthodont", "symm_orthodont"])
def test_stacked_groups_give_each_groups_matrix(name):
    structure, positions = _structure(CASES[name])
    stack = np.stack([group for group in positions if group.size == positions[0].size])
    assert stack.shape[0] >= 2
    params = structure.start()
    np.testing.assert_array_equal(structure.matrix(params, stack), [structure.matrix(params, g) for g in stack])
    np.testing.assert_allclose(structure.log_det(params, stack), [structure.log_det(params, g) for g in stack])


def test_stacked_spatial_groups():
    structure = corGaus(1.2, form="~ x + y | g").initialize([np.array([[0, 0], [1, 0], [0, 2.0]])])
    stack = np.array([[[0, 0], [1, 0], [0, 2.0]], [[1, 1], [3, 1], [2, 2.5]]])
    params = structure.start()
    np.testing.assert_array_equal(structure.matrix(params, stack), [structure.matrix(params, g) for g in stack])


def test_names_and_forms():
    assert corARMA(p=2, q=1).param_names == ["Phi1", "Phi2", "Theta1"]
    assert corAR1().param_names == corCAR1().param_names == ["Phi"]
    assert corCompSymm().param_names == ["Rho"]
    assert corExp(nugget=True).param_names == ["range", "nugget"]
    assert corSymm().initialize([np.arange(3.0)]).param_names == ["cor(1,2)", "cor(1,3)", "cor(2,3)"]
    structure = corCAR1(form="~ Time | Subject")
    assert (structure.covariates, structure.group) == (["Time"], "Subject")
    assert (corSpher(form="~ x + y").covariates, corSpher(form="~ x + y").group) == (["x", "y"], None)
    assert (corAR1(form="~ 1 | Mare").covariates, corAR1(form="~ 1 | Mare").group) == ([], "Mare")


def test_arma_without_orders_is_refused():
    with pytest.raises(ModelSpecError, match=r"p = 0, q = 0"):
        corARMA(p=0, q=0)
    with pytest.raises(ModelSpecError, match="non-negative integer"):
        corARMA(p=-1, q=1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: corAR1(1.0), "between -1 and 1"),
        (lambda: corAR1(-1.2), "between -1 and 1"),
        (lambda: corARMA([1.0, 0.2], p=1, q=1), "must be < 1 in absolute value"),
        (lambda: corARMA([0.6, 0.5], p=2), "outside the parameter space"),  # not stationary
        (lambda: corARMA([0.3], p=1, q=1), "wrong length"),
        (lambda: corCompSymm(1.0), "must be < 1 in absolute value"),
        (lambda: corCAR1(0.0), "between 0 and 1"),
        (lambda: corCAR1(1.0), "between 0 and 1"),
        (lambda: corExp(-1.0), "'range' must be > 0"),
        (lambda: corExp([1.0, 1.0], nugget=True), "nugget ratio must be between 0 and 1"),
        (lambda: corExp(1.0, metric="minkowski"), "metric must be one of"),
        (lambda: corAR1(form="Subject"), "one-sided"),
    ],
)
def test_values_outside_the_parameter_space_are_refused(make, message):
    with pytest.raises(ModelSpecError, match=message):
        make()


def test_compound_symmetry_lower_bound_depends_on_the_group_size():
    groups = [np.arange(4.0), np.arange(2.0)]
    with pytest.raises(ModelSpecError, match=r"greater than -0\.333333"):
        corCompSymm(-0.34, form="~ 1 | g").initialize(groups)
    structure = corCompSymm(-0.33, form="~ 1 | g").initialize(groups)
    assert -1 / 3 < structure.natural(np.array([-20.0]))[0] < -1 / 3 + 1e-8
    with pytest.raises(ModelSpecError, match="initialize"):
        corCompSymm().start()


def test_corsymm_values_and_positions_are_checked():
    with pytest.raises(ModelSpecError, match="positive-definite"):
        corSymm([0.9, -0.9, 0.9]).initialize([np.arange(3.0)])
    with pytest.raises(ModelSpecError, match="wrong dimension"):
        corSymm([0.1, 0.2]).initialize([np.arange(3.0)])
    with pytest.raises(DataError, match="consecutive integers"):
        corSymm().initialize([np.array([0.0, 2.0])])


@pytest.mark.parametrize("structure", [corAR1(), corARMA(p=1, q=1), corSymm(), corCAR1()])
def test_repeated_positions_within_a_group_are_refused(structure):
    with pytest.raises(DataError, match="covariate must have unique values within groups"):
        structure.initialize([np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 1.0])])


def test_non_integer_times_are_refused_by_the_integer_lag_structures():
    with pytest.raises(DataError, match="integer-valued"):
        corAR1().initialize([np.array([0.0, 0.5, 1.0])])


@pytest.mark.parametrize("make", [corExp, corGaus, corLin, corRatio, corSpher])
def test_zero_distance_needs_a_nugget(make):
    coords = [np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])]
    with pytest.raises(DataError, match="distance 0"):
        make(form="~ x + y").initialize(coords)
    structure = make(1.5, form="~ x + y", nugget=True).initialize(coords)
    matrix = structure.matrix(structure.start(), coords[0])
    assert matrix[1, 2] == pytest.approx(0.9)  # 1 - nugget at distance 0
    assert np.linalg.slogdet(matrix)[0] == 1.0


def test_range_below_the_minimum_distance_is_reset_as_nlme():
    coords = [np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])]
    with pytest.warns(UserWarning, match="1.1 \\* min"):
        structure = corSpher(1.0, form="~ x + y").initialize(coords)
    np.testing.assert_allclose(structure.natural(structure.start()), [2.2], rtol=1e-14)
