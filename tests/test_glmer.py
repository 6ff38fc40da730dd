"""glmer beyond the reference cases: response forms, offsets, bad input,
the exact Laplace mode, predictions, simulation, summaries."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.exceptions import (
    DataError,
    FamilyError,
    NonIntegerResponseWarning,
    SeparationWarning,
)
from mixedmodels.models.glmm.engine import gauss_hermite
from mixedmodels.models.glmm.separation import separated_columns

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"



@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return mm.glmer(CBPP, cbpp, family="binomial")


@pytest.fixture(scope="module")
def ticks():
    return mm.datasets.load("grouseticks")


def _same_fit(a, b, rtol=1e-9):
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=rtol)
    np.testing.assert_allclose(a.theta, b.theta, rtol=rtol)
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=rtol)


# ---------------------------------------------------------------------------- responses


def test_proportion_with_trials_as_weights_is_cbind(cbpp, cbpp_fit):
    data = cbpp.assign(prop=cbpp.incidence / cbpp["size"])
    fit = mm.glmer("prop ~ period + (1 | herd)", data, weights="size")
    _same_fit(fit, cbpp_fit)


def test_factor_bool_and_numeric_binary_responses_agree():
    data = mm.datasets.load("VerbAgg").iloc[::4].reset_index(drop=True)
    f = "{} ~ Anger + btype + (1 | id)"
    by_factor = mm.glmer(f.format("r2"), data)
    by_bool = mm.glmer(f.format("yes"), data.assign(yes=data.r2 == "Y"))
    by_number = mm.glmer(f.format("yes"), data.assign(yes=(data.r2 == "Y").astype(float)))
    _same_fit(by_factor, by_bool)
    _same_fit(by_factor, by_number)
    assert by_factor.frame.response_levels == ("N", "Y")


def test_cbind_and_bernoulli_rows_give_the_same_estimates(cbpp, cbpp_fit):
    """One row per animal: the same likelihood up to the binomial coefficients."""
    rows = []
    for r in cbpp.itertuples(index=False):
        rows += [(r.herd, r.period, 1.0)] * int(r.incidence)
        rows += [(r.herd, r.period, 0.0)] * int(r.size - r.incidence)
    long = pd.DataFrame(rows, columns=["herd", "period", "y"])
    long["period"] = pd.Categorical(long.period, categories=cbpp.period.cat.categories)
    fit = mm.glmer("y ~ period + (1 | herd)", long, pirls_tol=1e-12)
    exact = mm.glmer(CBPP, cbpp, pirls_tol=1e-12)
    np.testing.assert_allclose(fit.fixef, exact.fixef, rtol=1e-5)
    np.testing.assert_allclose(fit.theta, exact.theta, rtol=1e-5)
    choose = sum(math.log(math.comb(int(s), int(k))) for s, k in zip(cbpp["size"], cbpp.incidence))
    np.testing.assert_allclose(fit.loglik + choose, exact.loglik, atol=1e-6)


# ---------------------------------------------------------------------------- offsets


def test_offset_in_formula_equals_offset_argument(ticks):
    data = ticks.assign(exposure=np.linspace(0.5, 2.0, len(ticks)))
    a = mm.glmer("TICKS ~ YEAR + offset(log(exposure)) + (1 | BROOD)", data, family="poisson")
    b = mm.glmer("TICKS ~ YEAR + (1 | BROOD)", data, family="poisson", offset=np.log(data.exposure))
    _same_fit(a, b)
    # the offset moves predictions of new rows one for one
    nd = data.iloc[:3].copy()
    shift = a.predict(nd.assign(exposure=nd.exposure * np.e)) - a.predict(nd)
    np.testing.assert_allclose(shift, 1.0, rtol=1e-12)


# ---------------------------------------------------------------------------- exactness


def test_tight_pirls_gives_the_exact_laplace_optimum(cbpp):
    """lme4 1.1-31 with glmerControl(tolPwrss = 1e-10) (R 4.2.2): the Laplace
    deviance at fully converged modes (lme4's default tolerance leaves its
    factor at the weights of the last-but-one PIRLS step)."""
    fit = mm.glmer(CBPP, cbpp, pirls_tol=1e-10)
    assert fit.deviance == pytest.approx(184.052563749016, abs=1e-6)
    np.testing.assert_allclose(
        fit.fixef, [-1.3985320430, -0.9923158809, -1.1286641475, -1.5803155986], rtol=1e-4
    )
    assert fit.theta.iloc[0] == pytest.approx(0.6422698853, abs=1e-3)
    np.testing.assert_allclose(fit.se, [0.23247338, 0.30664156, 0.32663752, 0.42743764], rtol=2e-3)


def test_gauss_hermite_rule_integrates_normal_moments():
    z, w = gauss_hermite(25)
    assert w.sum() == pytest.approx(1.0)
    assert np.sum(w * z**2) == pytest.approx(1.0)
    assert np.sum(w * z**4) == pytest.approx(3.0)
    assert z[12] == 0.0 and np.all(z + z[::-1] == 0)


def test_one_node_quadrature_is_laplace(cbpp, cbpp_fit):
    m = mm.GeneralizedLinearMixedModel(CBPP, cbpp, nagq=1)
    m.fit(check_convergence=False)
    x = np.concatenate([cbpp_fit.theta.to_numpy(), cbpp_fit.fixef.to_numpy()])
    z, w = gauss_hermite(1)
    modes = m._modes(x[:1], x[1:])
    assert m._engine.quadrature(modes, m.lambdas(x[:1]), z, w) == pytest.approx(
        m._engine.laplace(modes), abs=1e-10
    )


def test_nagq_zero_matches_lme4(cbpp):
    """lme4 1.1-31: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd),
    cbpp, binomial, nAGQ = 0): one stage over θ, β from PIRLS, vcov from it."""
    fit = mm.glmer(CBPP, cbpp, nagq=0)
    assert fit.method == "nAGQ = 0"
    assert fit.convergence is None
    np.testing.assert_allclose(
        fit.fixef, [-1.360475727626, -0.976173236094, -1.111072783643, -1.559675683773], rtol=1e-4
    )
    assert fit.theta.iloc[0] == pytest.approx(0.641838555349, abs=1e-3)
    assert fit.loglik == pytest.approx(-92.0543465012, abs=1e-3)
    np.testing.assert_allclose(fit.se, [0.2275790229, 0.3032861750, 0.3235103690, 0.4244519095], rtol=2e-3)


# ---------------------------------------------------------------------------- bad input


def test_binomial_response_outside_unit_interval_names_column(cbpp):
    data = cbpp.assign(p=cbpp.incidence / cbpp["size"] * 3)
    with pytest.raises(FamilyError, match="'p'"):
        mm.glmer("p ~ period + (1 | herd)", data)


def test_trials_below_successes(cbpp):
    with pytest.raises(FamilyError, match="cbind"):
        mm.glmer("cbind(incidence, size - incidence - 20) ~ period + (1 | herd)", cbpp)


def test_negative_counts(ticks):
    data = ticks.copy()
    data.loc[0, "TICKS"] = -2
    with pytest.raises(FamilyError, match="'TICKS'"):
        mm.glmer("TICKS ~ YEAR + (1 | BROOD)", data, family="poisson")


def test_non_integer_counts_warn_and_stay_finite(ticks):
    data = ticks.assign(TICKS=ticks.TICKS + 0.5)
    with pytest.warns(NonIntegerResponseWarning):
        fit = mm.glmer("TICKS ~ YEAR + (1 | BROOD)", data, family="poisson")
    assert np.isfinite(fit.loglik) and np.all(np.isfinite(fit.se))


def test_huge_counts_do_not_overflow(ticks):
    data = ticks.assign(TICKS=ticks.TICKS * 10**7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mm.glmer("TICKS ~ YEAR + (1 | BROOD)", data, family="poisson")
    assert np.isfinite(fit.loglik) and np.all(np.isfinite(fit.se))
    # the intercept's score equation holds: fitted and observed totals agree
    total = data.TICKS.sum()
    assert abs(total - fit.fitted.sum()) < 1e-6 * total


def test_complete_separation_warns_with_the_term():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"g": rng.integers(0, 20, 400).astype(str), "x": rng.standard_normal(400)})
    data["y"] = (data.x > 0).astype(float)
    with pytest.warns(SeparationWarning, match="fixed effect\\(s\\) x:") as record:
        fit = mm.glmer("y ~ x + (1 | g)", data)
    # the warning names the caller's line, not one inside the package
    assert {w.filename for w in record if w.category is SeparationWarning} == {__file__}
    assert np.all(np.isfinite(fit.fixef)) and np.isfinite(fit.loglik)


def test_separation_check_sees_none_in_real_data(cbpp_fit):
    X, y = cbpp_fit.frame.fixed.X, cbpp_fit.response
    assert separated_columns(X, y, cbpp_fit.frame.fixed.names) == []


def test_quadrature_needs_one_scalar_term(ticks):
    with pytest.raises(DataError, match="single scalar random-effects term"):
        mm.glmer("TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", ticks, family="poisson", nagq=5)


@pytest.mark.parametrize("family, link", [("poisson", "logit"), ("binomial", "inverse"), ("poison", None)])
def test_unsupported_family_link(ticks, family, link):
    with pytest.raises(FamilyError):
        mm.glmer("TICKS ~ YEAR + (1 | BROOD)", ticks, family=family, link=link)


def test_cbind_needs_binomial(cbpp):
    with pytest.raises(FamilyError, match="binomial"):
        mm.glmer(CBPP, cbpp, family="poisson")


# ---------------------------------------------------------------------------- results


def test_residual_types(cbpp_fit):
    m = cbpp_fit
    y, mu = m.response, m.fitted.to_numpy()
    np.testing.assert_allclose(m.residuals("response"), y - mu)
    np.testing.assert_allclose(np.sum(m.residuals("deviance") ** 2), m.deviance_conditional)
    w = m._engine.wt
    np.testing.assert_allclose(m.residuals("pearson"), (y - mu) * np.sqrt(w / (mu * (1 - mu))))
    eta = m.predict().to_numpy()
    np.testing.assert_allclose(m.residuals("working"), (y - mu) / (mu * (1 - mu)), rtol=1e-10)
    np.testing.assert_allclose(m.predict(type="response"), 1 / (1 + np.exp(-eta)), rtol=1e-12)
    with pytest.raises(DataError):
        m.residuals("studentized")


def test_simulate_is_reproducible_and_valid(cbpp_fit):
    a = cbpp_fit.simulate(nsim=3, seed=5)
    b = cbpp_fit.simulate(nsim=3, seed=5)
    pd.testing.assert_frame_equal(a, b)
    trials = cbpp_fit._engine.wt
    counts = a.to_numpy() * trials[:, None]
    assert np.allclose(counts, np.round(counts)) and a.to_numpy().min() >= 0 and a.to_numpy().max() <= 1
    # conditional on the modes, the mean of many draws approaches the fitted means
    many = cbpp_fit.simulate(nsim=4000, seed=1, use_u=True).to_numpy().mean(axis=1)
    np.testing.assert_allclose(many, cbpp_fit.fitted, atol=0.02)


def test_summary_layout(cbpp_fit):
    text = str(cbpp_fit.summary())
    assert text.splitlines()[0] == (
        "Generalized linear mixed model fit by maximum likelihood (Laplace Approximation)"
    )  # without R's class name ['glmerMod']
    assert " Family: binomial  ( logit )" in text
    assert "z value Pr(>|z|)" in text and "1.47e-09 ***" in text
    assert "Residual" not in text
    table = cbpp_fit.coef_table()
    assert list(table.columns) == ["estimate", "se", "z", "p_value"]
    pd.testing.assert_frame_equal(cbpp_fit.coef_table(ddf="asymptotic"), table)
    with pytest.raises(mm.ModelSpecError):
        cbpp_fit.coef_table(ddf="satterthwaite")


def test_convergence_record(cbpp_fit):
    conv = cbpp_fit.convergence
    assert conv.ok and conv.scaled_gradient < 2e-3
    assert conv.hessian.shape == (5, 5) and np.all(conv.hessian_eigenvalues > 0)


def test_tidy_and_glance(cbpp_fit):
    fixed = cbpp_fit.tidy()
    assert list(fixed.columns[:5]) == ["effect", "term", "estimate", "std_error", "statistic"]
    np.testing.assert_allclose(fixed["statistic"], cbpp_fit.coef_table()["z"])
    np.testing.assert_allclose(fixed["p_value"], cbpp_fit.coef_table()["p_value"])
    pars = cbpp_fit.tidy("ran_pars")
    assert list(pars.term) == ["sd__(Intercept)"]  # no residual row for the binomial family
    row = cbpp_fit.glance().iloc[0]
    assert row["loglik"] == pytest.approx(cbpp_fit.loglik) and row["sigma"] == 1.0


def test_gaussian_identity_is_lmer():
    sleep = mm.datasets.load("sleepstudy")
    with pytest.warns(UserWarning, match="lmer"):
        m = mm.glmer("Reaction ~ Days + (Days | Subject)", sleep, family="gaussian")
    assert isinstance(m, mm.LinearMixedModel)
    assert m.reml_criterion == pytest.approx(1743.6283, abs=1e-3)


def test_offset_shown_in_summary(ticks):
    data = ticks.assign(exposure=np.linspace(0.5, 2.0, len(ticks)))
    a = mm.glmer("TICKS ~ YEAR + offset(log(exposure)) + (1 | BROOD)", data, family="poisson")
    assert " Offset: offset(log(exposure))" in str(a.summary())
    b = mm.glmer("TICKS ~ YEAR + (1 | BROOD)", data, family="poisson", offset=np.log(data.exposure))
    assert " Offset: given (offset=)" in str(b.summary())


def test_lmer_residual_types():
    sleep = mm.datasets.load("sleepstudy")
    m = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep, weights=np.linspace(1, 2, len(sleep)))
    r = m.residuals()
    np.testing.assert_allclose(r, sleep.Reaction - m.fitted)
    np.testing.assert_allclose(m.residuals("pearson"), r * np.sqrt(np.linspace(1, 2, len(sleep))))
    with pytest.raises(DataError):
        m.residuals("studentized")


def test_newton_and_derivative_free_searches_agree(cbpp, cbpp_fit):
    """The default Newton steps (with lme4's deriv12 derivatives) and the
    BOBYQA search (the fallback, and the route without the derivative check)
    reach the same optimum."""
    assert cbpp_fit.optsum.optimizer.endswith("Newton (deriv12)")
    m = mm.GeneralizedLinearMixedModel(CBPP, cbpp).fit(check_convergence=False)
    assert "BOBYQA twice" in m.optsum.optimizer
    assert m.deviance == pytest.approx(cbpp_fit.deviance, abs=1e-6)
    np.testing.assert_allclose(m.fixef, cbpp_fit.fixef, rtol=1e-4)


def test_start_values(cbpp, cbpp_fit):
    # another start gives another PIRLS starting point for every evaluation
    # (as in lme4), so the same optimum only to lme4's PIRLS tolerance
    m = mm.GeneralizedLinearMixedModel(CBPP, cbpp).fit(start={"theta": [0.3]})
    assert m.deviance == pytest.approx(cbpp_fit.deviance, abs=1e-3)
    np.testing.assert_allclose(m.fixef, cbpp_fit.fixef, rtol=1e-4)
    # (wrong starts: tests/test_glmer_start.py)
    with pytest.raises(mm.ModelSpecError, match="'theta' and 'fixef'"):
        mm.GeneralizedLinearMixedModel(CBPP, cbpp).fit(start={"bet": [0, 0, 0, 0]})
    with pytest.raises(mm.ModelSpecError, match=r"needs 1 finite number\(s\)"):
        mm.GeneralizedLinearMixedModel(CBPP, cbpp).fit(start={"theta": [0.3, 0.1]})


def test_refit_equals_a_fresh_fit_to_the_new_response(cbpp, cbpp_fit):
    sims = cbpp_fit.simulate(2, seed=11)
    refitted = cbpp_fit.refit(sims["sim_1"])  # starts from cbpp_fit's θ: the same
    # optimum within the optimizer's tolerance, not to the last digit
    data = cbpp.copy()
    data["inc2"] = np.rint(sims["sim_1"] * data["size"]).astype(int)
    fresh = mm.glmer("cbind(inc2, size - inc2) ~ period + (1 | herd)", data, family="binomial")
    assert refitted.deviance == pytest.approx(fresh.deviance, abs=1e-5)
    np.testing.assert_allclose(refitted.fixef, fresh.fixef, rtol=1e-4)
    np.testing.assert_allclose(refitted.theta, fresh.theta, rtol=1e-4)
    # the (successes, failures) form is the same response
    counts = np.column_stack([data["inc2"], data["size"] - data["inc2"]])
    assert cbpp_fit.refit(counts).deviance == pytest.approx(refitted.deviance, abs=1e-9)


def test_refit_leaves_the_model_untouched_and_checks_the_length(cbpp_fit):
    before = (cbpp_fit.deviance, cbpp_fit.fixef.copy(), cbpp_fit.response.copy())
    cbpp_fit.refit(cbpp_fit.simulate(1, seed=3)["sim_1"])
    assert cbpp_fit.deviance == before[0]
    pd.testing.assert_series_equal(cbpp_fit.fixef, before[1])
    np.testing.assert_array_equal(cbpp_fit.response, before[2])
    with pytest.raises(DataError, match="one response value per row"):
        cbpp_fit.refit(np.zeros(5))


def test_wald_intervals_are_lme4s(cbpp_fit):
    # lme4: confint(fit, method = "Wald"): fixef ± qnorm(0.975) se, NA for .sig01
    from _reference import load_case

    case = load_case("glmer_cbpp_laplace")
    ci = cbpp_fit.confint(method="wald")
    assert list(ci.index) == [".sig01", *case["fixef"]]
    assert ci.loc[".sig01"].isna().all()
    z = 1.959963984540054
    for name, est in case["fixef"].items():
        se = case["se"][name]
        # SEs agree with lme4's to 2e-3 (the issue's tolerance): the bounds to that times z·se
        assert ci.loc[name, "lower"] == pytest.approx(est - z * se, abs=2e-3 * z * se + 1e-4 * abs(est))
        assert ci.loc[name, "upper"] == pytest.approx(est + z * se, abs=2e-3 * z * se + 1e-4 * abs(est))


def test_confidence_interval_of_predictions_is_the_fixed_effects_delta(cbpp, cbpp_fit):
    new = cbpp.head(4)
    ci = cbpp_fit.predict(new, re_form="~0", interval="confidence", level=0.9)
    X = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]], dtype=float)
    eta = X @ cbpp_fit.fixef.to_numpy()
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, cbpp_fit.vcov.to_numpy(), X))
    z = 1.6448536269514722
    np.testing.assert_allclose(ci["fit"], eta, rtol=1e-12)
    np.testing.assert_allclose(ci["lower"], eta - z * se, rtol=1e-12)
    resp = cbpp_fit.predict(new, re_form="~0", interval="confidence", level=0.9, type="response")
    np.testing.assert_allclose(resp["upper"], 1 / (1 + np.exp(-(eta + z * se))), rtol=1e-12)
    with pytest.raises(mm.PredictionError, match="response distribution"):
        cbpp_fit.predict(new, interval="prediction")
