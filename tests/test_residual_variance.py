"""nlme's variance functions against nlme 3.1-162 on Orthodont (tests/reference/nlme_structures/variance.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixedmodels.exceptions import DataError, ModelSpecError
from mixedmodels.residual.variance import (
    VarianceFunction,
    varComb,
    varConstPower,
    varExp,
    varFixed,
    varIdent,
    varPower,
)

REFERENCE = json.loads((Path(__file__).parent / "reference" / "nlme_structures" / "variance.json").read_text())
AGE = np.array(REFERENCE["data"]["age"], dtype=float)
SEX = np.array(REFERENCE["data"]["Sex"])
CLASSES = {c.__name__: c for c in (varIdent, varPower, varExp, varConstPower, varFixed)}


def build(case: dict) -> VarianceFunction:
    """Return the Python twin of a stored nlme case, initialized on Orthodont."""
    if case["class"] == "varComb":
        vf = varComb(*[build_single(c) for c in case["components"]])
        return vf.initialize([strata_of(c) for c in vf.components])
    vf = build_single(case)
    return vf.initialize(strata_of(vf))


def build_single(case: dict) -> VarianceFunction:
    cls = CLASSES[case["class"]]
    if cls is varFixed:
        return varFixed(case["form"])
    if cls is varConstPower:
        return varConstPower(const=case.get("const"), power=case.get("power"), form=case["form"], fixed=case.get("fixed"))
    return cls(value=case.get("value"), form=case["form"], fixed=case.get("fixed"))


def strata_of(vf: VarianceFunction):
    return SEX if vf.strata_name == "Sex" else None


def inputs(vf: VarianceFunction):
    """Return the (covariate, strata) the model would pass."""
    if isinstance(vf, varComb):
        return [inputs(c)[0] for c in vf.components], [inputs(c)[1] for c in vf.components]
    return (AGE if vf.covariate_name == "age" else None), strata_of(vf)


CASES = sorted(REFERENCE["cases"])


@pytest.mark.parametrize("name", CASES)
def test_parameters_match_nlme(name):
    case = REFERENCE["cases"][name]
    vf = build(case)
    assert vf.n_params == len(case["unconstrained"])
    assert vf.param_names == case["natural_names"]
    np.testing.assert_allclose(vf.start(), case["unconstrained"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(vf.natural(vf.start()), case["natural"], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", CASES)
def test_weights_and_log_det_match_nlme(name):
    case = REFERENCE["cases"][name]
    vf = build(case)
    covariate, strata = inputs(vf)
    weights = vf.weights(vf.start(), covariate, strata)
    np.testing.assert_allclose(weights, case["weights"], rtol=1e-10)
    assert vf.log_det(vf.start(), covariate, strata) == pytest.approx(case["loglik"], rel=1e-10, abs=1e-12)
    assert (weights > 0).all()


@pytest.mark.parametrize("name", CASES)
def test_natural_inverts_unconstrained(name):
    vf = build(REFERENCE["cases"][name])
    rng = np.random.default_rng(16)
    theta = rng.normal(size=vf.n_params)
    np.testing.assert_allclose(vf.unconstrained(vf.natural(theta)), theta, rtol=1e-12, atol=1e-15)
    natural = vf.natural(theta)
    np.testing.assert_allclose(vf.natural(vf.unconstrained(natural)), natural, rtol=1e-12)


def test_first_varident_stratum_has_weight_one():
    vf = varIdent(form="~ 1 | Sex").initialize(SEX)
    assert vf.order[0] == SEX[0] == "Male"
    weights = vf.weights(np.array([0.4]), None, SEX)
    assert (weights[SEX == "Male"] == 1.0).all()
    np.testing.assert_allclose(weights[SEX == "Female"], np.exp(-0.4), rtol=1e-15)


def test_varident_reference_is_the_stratum_not_named_in_value():
    vf = varIdent({"a": 2.0, "c": 3.0}, form="~ 1 | g").initialize(["a", "b", "c", "a"])
    assert vf.order == ["b", "a", "c"]
    assert vf.param_names == ["a", "c"]
    np.testing.assert_allclose(vf.weights(vf.start(), None, ["a", "b", "c", "a"]), [0.5, 1.0, 1 / 3, 0.5], rtol=1e-15)


def test_varident_refuses_stratum_unseen_in_fit():
    vf = varIdent(form="~ 1 | Sex").initialize(SEX)
    with pytest.raises(DataError, match=r"'Other'.*known strata: 'Male', 'Female'"):
        vf.weights(np.zeros(1), None, ["Male", "Other"])


@pytest.mark.parametrize(
    "make, culprit",
    [
        (lambda: varIdent(form="~ 1 | Sex", fixed={"Female": 0.0}), "Female"),
        (lambda: varIdent(form="~ 1 | Sex", fixed={"Female": -1.0}), "Female"),
        (lambda: varIdent(-2.0, form="~ 1 | Sex"), "-2.0"),
        (lambda: varConstPower(const=0.0, form="~ age"), "const"),
        (lambda: varConstPower(form="~ age", fixed={"const": -1.0}), "const"),
        (lambda: varConstPower(form="~ age", fixed={"slope": 1.0}), "slope"),
        (lambda: varPower(form="~ 1 | Sex"), "covariate"),
    ],
)
def test_refuses_values_outside_the_parameter_space(make, culprit):
    with pytest.raises(ModelSpecError, match=culprit):
        make()


@pytest.mark.parametrize(
    "vf",
    [
        varIdent(form="~ 1 | Sex", fixed={"Girl": 0.8}),
        varIdent({"Girl": 0.8, "Boy": 1.2}, form="~ 1 | Sex"),
        varPower({"Male": 0.3, "Girl": 0.5}, form="~ age | Sex"),
        varExp(form="~ age | Sex", fixed={"Girl": 0.5}),
    ],
)
def test_refuses_unknown_stratum_names(vf):
    with pytest.raises(ModelSpecError, match="Girl"):
        vf.initialize(SEX)


def test_varident_cannot_fix_every_stratum():
    with pytest.raises(ModelSpecError, match="all strata"):
        varIdent(form="~ 1 | Sex", fixed={"Male": 1.0, "Female": 2.0}).initialize(SEX)


def test_varpower_takes_absolute_covariate_and_refuses_zero():
    vf = varPower(form="~ x").initialize()
    np.testing.assert_allclose(vf.weights(np.array([-0.5]), np.array([-4.0, 4.0])), [2.0, 2.0], rtol=1e-15)
    np.testing.assert_array_equal(vf.weights(np.array([0.0]), np.array([0.0, 2.0])), [1.0, 1.0])
    with pytest.raises(DataError, match=r"'x' is 0 in 1 rows"):
        vf.weights(np.array([-0.5]), np.array([0.0, 2.0]))


def test_fitted_covariate_is_passed_by_the_caller():
    vf = varPower().initialize()
    assert vf.covariate_name == "fitted(.)"
    fitted = np.array([1.0, 4.0, 9.0])
    np.testing.assert_allclose(vf.weights(np.array([0.5]), fitted), [1.0, 0.5, 1 / 3], rtol=1e-15)


def test_varcomb_is_the_product_of_its_components():
    ident = varIdent({"Female": 0.7}, form="~ 1 | Sex")
    power = varPower(0.6, form="~ age")
    comb = varComb(ident, power).initialize([SEX, None])
    theta = np.array([0.2, -0.3])
    np.testing.assert_allclose(
        comb.weights(theta, [None, AGE], [SEX, None]),
        ident.weights(theta[:1], None, SEX) * power.weights(theta[1:], AGE),
        rtol=1e-15,
    )


def test_stratified_value_is_repeated_when_single_and_must_cover_free_strata_when_several():
    groups = ["a", "b", "c", "a"]
    one = varPower({"b": 0.5}, form="~ x | g").initialize(groups)
    np.testing.assert_array_equal(one.start(), [0.5, 0.5, 0.5])
    several = varPower({"a": 0.5, "b": 0.2}, form="~ x | g")
    with pytest.raises(ModelSpecError, match=r"misses 'c'"):
        several.initialize(groups)
    fixed_c = varPower({"a": 0.5, "b": 0.2}, form="~ x | g", fixed={"c": 1.0}).initialize(groups)
    np.testing.assert_allclose(fixed_c.weights(fixed_c.start(), np.full(4, 4.0), groups), 4.0 ** -np.array([0.5, 0.2, 1.0, 0.5]))


def test_varconstpower_refuses_zero_covariate_with_negative_power():
    vf = varConstPower(form="~ x").initialize()
    np.testing.assert_allclose(vf.weights(np.array([np.log(2.0), 0.0]), np.array([0.0, 3.0])), [1 / 3, 1 / 3])
    with pytest.raises(DataError, match=r"'x' is 0 in 1 rows"):
        vf.weights(np.array([0.0, -1.0]), np.array([0.0, 3.0]))
