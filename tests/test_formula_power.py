"""``^`` means what it means in R: a power inside calls and on the response,
formula power between terms.  formulaic reads ``^`` in Python code as
exclusive or, so ``I(Days^2)`` silently fitted ``Days XOR 2`` before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.spec.formula import parse_formula

# R 4.2.2, lme4 1.1-31:
#   m <- lmer(Reaction ~ Days + I(Days^2) + (1 | Subject), sleepstudy)
#   fixef(m); REMLcrit(m)
R_FIXEF = [255.449372777778, 7.434085012626, 0.337022327441]
R_REMLCRIT = 1785.79527203



def test_power_inside_i_is_rs_power(sleep):
    m = mm.lmer("Reaction ~ Days + I(Days^2) + (1 | Subject)", sleep)
    assert list(m.fixef.index) == ["(Intercept)", "Days", "I(Days^2)"]
    np.testing.assert_allclose(m.fixef.to_numpy(), R_FIXEF, rtol=1e-9)
    assert m.reml_criterion == pytest.approx(R_REMLCRIT, rel=1e-10)
    pythonic = mm.lmer("Reaction ~ Days + I(Days ** 2) + (1 | Subject)", sleep)
    np.testing.assert_array_equal(m.fixef.to_numpy(), pythonic.fixef.to_numpy())


def test_power_in_random_term_and_new_data(sleep):
    m = mm.lmer("Reaction ~ Days + (1 + I(Days^2) | Subject)", sleep)
    assert list(m.varcorr["var1"].iloc[:2]) == ["(Intercept)", "I(Days^2)"]
    squared = sleep.assign(D2=sleep["Days"].astype(float) ** 2)
    plain = mm.lmer("Reaction ~ Days + (1 + D2 | Subject)", squared)
    assert m.reml_criterion == pytest.approx(plain.reml_criterion, rel=1e-10)
    new = pd.DataFrame({"Days": [0, 3, 9], "Subject": ["308", "309", "310"]})
    np.testing.assert_allclose(
        m.predict(new), plain.predict(new.assign(D2=new["Days"] ** 2.0)), rtol=1e-8
    )


def test_power_on_the_response(sleep):
    m = mm.lmer("log(Reaction^2) ~ Days + (1 | Subject)", sleep)
    logged = sleep.assign(ly=2 * np.log(sleep["Reaction"]))
    plain = mm.lmer("ly ~ Days + (1 | Subject)", logged)
    np.testing.assert_allclose(m.fixef.to_numpy(), plain.fixef.to_numpy(), rtol=1e-10)


def test_caret_between_terms_stays_formula_power():
    parsed = parse_formula("y ~ (a + b + c)^2 + I((a + b)^2) + (1 | g)")
    assert parsed.fixed == "(a + b + c)^2 + I((a + b)**2)"
    assert parse_formula("y^2 ~ x + (1 | g)").response == "y**2"
