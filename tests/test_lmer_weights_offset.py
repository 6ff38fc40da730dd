"""Prior weights and offsets against lme4 1.1-31.

The expected numbers come from R (lme4 1.1-31, R 4.2.2) on the bundled sleepstudy:

    d$w <- (d$Days %% 3) + 0.5
    m1 <- lmer(Reaction ~ Days + (Days|Subject), d, weights = w)
    m2 <- lmer(Reaction ~ Days + (Days|Subject), d, weights = w, REML = FALSE,
               offset = Days * 2)
"""

import numpy as np
import pytest

import mixedmodels as mm


@pytest.fixture(scope="module")
def sleep():
    d = mm.datasets.load("sleepstudy")
    d["w"] = (d["Days"] % 3) + 0.5
    return d


def test_weights_reml_match_lme4(sleep):
    m = mm.lmer("Reaction ~ Days + (Days|Subject)", sleep, weights="w")
    np.testing.assert_allclose(m.fixef, [249.3458335657, 10.7691980116], rtol=1e-6)
    assert m.reml_criterion == pytest.approx(1739.9121022119, abs=1e-6)
    assert m.sigma == pytest.approx(25.9523842000, rel=1e-5)
    np.testing.assert_allclose(m.theta, [1.0528520691, -0.0446739677, 0.2599965175], atol=1e-4)


@pytest.mark.parametrize("how", ["argument", "formula"])
def test_weights_offset_ml_match_lme4(sleep, how):
    if how == "argument":
        m = mm.lmer("Reaction ~ Days + (Days|Subject)", sleep, weights="w", reml=False,
                    offset=sleep["Days"] * 2)
    else:
        m = mm.lmer("Reaction ~ Days + offset(Days * 2) + (Days|Subject)", sleep,
                    weights="w", reml=False)
    np.testing.assert_allclose(m.fixef, [249.3458335657, 8.7691980116], rtol=1e-6)
    assert m.deviance == pytest.approx(1748.4989668489, abs=1e-6)
    assert m.sigma == pytest.approx(25.9524653235, rel=1e-5)
    np.testing.assert_allclose(m.theta, [1.0152755870, -0.0411498096, 0.2519125226], atol=1e-4)
    np.testing.assert_allclose(m.fitted[:3], [246.0387970546, 267.1346363409, 288.2304756272],
                               rtol=1e-5)


def test_formula_offset_is_used_in_prediction(sleep):
    m = mm.lmer("Reaction ~ Days + offset(Days * 2) + (Days|Subject)", sleep, weights="w",
                reml=False)
    np.testing.assert_allclose(m.predict(sleep.iloc[:3]), m.fitted[:3], rtol=1e-10)


def test_r_factor_and_contrast_names():
    """Column names follow R's model.matrix: label as written, then the level."""
    d = mm.datasets.load("Orthodont")
    m = mm.lmer("distance ~ factor(age) + (1|Subject)", d)
    assert list(m.fixef.index) == ["(Intercept)", "factor(age)10", "factor(age)12", "factor(age)14"]
    m = mm.lmer("distance ~ age * Sex + (1|Subject)", d, contrasts={"Sex": "contr.sum"})
    assert list(m.fixef.index) == ["(Intercept)", "age", "Sex1", "age:Sex1"]
    ie = mm.datasets.load("InstEval").iloc[:3000]
    m = mm.lmer("y ~ studage + service + (1|s)", ie)  # ordered factor: contr.poly
    assert list(m.fixef.index) == ["(Intercept)", "studage.L", "studage.Q", "studage.C", "service1"]


def test_ordered_factors_use_polynomial_contrasts_as_lme4():
    """lme4 1.1-31 on the first 20,000 rows of InstEval (studage, lectage ordered):

        lmer(y ~ studage + lectage + service + (1|s) + (1|d), ie[1:20000, ], REML = FALSE)
    """
    ie = mm.datasets.load("InstEval").iloc[:20000]
    m = mm.lmer("y ~ studage + lectage + service + (1|s) + (1|d)", ie, reml=False)
    expected = {
        "(Intercept)": 3.2418126927, "studage.L": 0.0549825599, "studage.Q": 0.0339670966,
        "studage.C": -0.0133577556, "lectage.L": -0.1910150743, "lectage.Q": 0.0174829235,
        "lectage.C": -0.0117831027, "lectage^4": 0.0010899319, "lectage^5": -0.0324852036,
        "service1": -0.0409504953,
    }
    assert list(m.fixef.index) == list(expected)
    np.testing.assert_allclose(m.fixef.to_numpy(), list(expected.values()), rtol=1e-4, atol=1e-6)
    assert m.deviance <= 65444.6801528 + 1e-6
    assert m.deviance == pytest.approx(65444.6801528, abs=1e-3)
