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
