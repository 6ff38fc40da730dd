"""Fits do not depend on the units of the covariates.

Multiplying a covariate by c is the same model in other units: the
log-likelihood is unchanged (the REML criterion gains 2 log c for each fixed
column so multiplied, from log|X'V⁻¹X|, exactly as in lme4), the estimate of
its coefficient is divided by c, and so are its standard error and the
standard deviation of its random slope; correlations are unchanged. Before
the searches ran on θ for unit-scale columns, ``(Days | Subject)`` with Days
× 1e12 stopped at its start (log-likelihood 496 short), × 1e-6 ended 4.8 short
and × 1e4 ... 1e6 warned of a singular fit that is not.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixedmodels as mm

SCALES = [1e-9, 1e-6, 1e-3, 1.0, 1e3, 1e4, 1e5, 1e6, 1e9, 1e12]
FORMULA = "Reaction ~ Days + (Days | Subject)"


def fit_without_warnings(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a SingularFitWarning (or any other) fails the test
        return mm.lmer(formula, data, **kwargs)


@pytest.fixture(scope="module")
def sleep():
    return mm.datasets.load("sleepstudy")


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_lmer_random_slope_fit_is_free_of_the_covariates_units(sleep, reml):
    base = fit_without_warnings(FORMULA, sleep, reml=reml)
    base_vc = base.varcorr["sdcor"].to_numpy(float)  # sd(Intercept), sd(Days), cor, σ
    for c in SCALES:
        data = sleep.assign(Days=sleep["Days"] * c)
        m = fit_without_warnings(FORMULA, data, reml=reml)
        shift = np.log(c) if reml else 0.0  # REML: log|X'V⁻¹X| / 2 with one column × c
        assert m.loglik + shift == pytest.approx(base.loglik, abs=1e-6), c
        np.testing.assert_allclose(m.fixef["Days"] * c, base.fixef["Days"], rtol=1e-9, err_msg=str(c))
        np.testing.assert_allclose(
            m.fixef["(Intercept)"], base.fixef["(Intercept)"], rtol=1e-9, err_msg=str(c)
        )
        np.testing.assert_allclose(m.se.to_numpy() * [1, c], base.se.to_numpy(), rtol=1e-4, err_msg=str(c))
        vc = m.varcorr["sdcor"].to_numpy(float)
        np.testing.assert_allclose(vc * [1, c, 1, 1], base_vc, rtol=1e-4, atol=1e-6, err_msg=str(c))
        assert m.sigma == pytest.approx(base.sigma, rel=1e-6), c
        assert not m.is_singular
        theta = m.theta.to_numpy() * [1, c, c]  # rows of λ for Days divided by c
        np.testing.assert_allclose(theta, base.theta.to_numpy(), rtol=1e-4, atol=1e-6, err_msg=str(c))
        ranef = m.ranef["Subject"].to_numpy() * [1, c]
        np.testing.assert_allclose(ranef, base.ranef["Subject"].to_numpy(), rtol=1e-4, atol=1e-4)


def test_lmer_slope_only_term_in_tiny_and_huge_units(sleep):
    """A scalar term on a covariate: θ itself carries the units."""
    formula = "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"
    base = fit_without_warnings(formula, sleep, reml=False)
    for c in (1e-9, 1e12):
        m = fit_without_warnings(formula, sleep.assign(Days=sleep["Days"] * c), reml=False)
        assert m.loglik == pytest.approx(base.loglik, abs=1e-6), c
        np.testing.assert_allclose(m.theta.to_numpy() * [1, c], base.theta.to_numpy(), rtol=1e-4)


def test_singularity_rule_reads_unit_scale_theta(sleep):
    """A true zero slope variance is still found and reported, in any units."""
    rng = np.random.default_rng(3)
    data = sleep.assign(x=rng.normal(size=len(sleep)))
    data["y"] = data["Reaction"] + 0.0 * data["x"]
    for c in (1.0, 1e6):
        d = data.assign(x=data["x"] * c)
        with pytest.warns(mm.SingularFitWarning):
            m = mm.lmer("y ~ x + (x | Subject)", d)
        assert m.is_singular


@pytest.mark.parametrize("c", [1e-5, 1e5, 1e12])
def test_glmer_covariate_in_huge_or_tiny_units(c):
    """grouseticks with HEIGHT × c: was a raw LinAlgError ("Eigenvalues did
    not converge": lme4's Hessian step 1e-4 on a β of a covariate in huge
    units overflowed the linear predictor). The search and the finite
    differences now run on unit-scale columns: the same optimum; the
    standard error comes from a finite-difference Hessian of a column nearly
    collinear with the intercept, so agrees to its accuracy."""
    g = mm.datasets.load("grouseticks")
    formula = "TICKS ~ YEAR + HEIGHT + (1 | BROOD)"
    base = mm.glmer(formula, g, family="poisson")
    m = mm.glmer(formula, g.assign(HEIGHT=g["HEIGHT"] * c), family="poisson")
    assert m.loglik == pytest.approx(base.loglik, abs=1e-6)
    np.testing.assert_allclose(m.fixef["HEIGHT"] * c, base.fixef["HEIGHT"], rtol=1e-6)
    np.testing.assert_allclose(m.theta.to_numpy(), base.theta.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(m.se["HEIGHT"] * c, base.se["HEIGHT"], rtol=1e-2)
    assert not m.convergence.messages
