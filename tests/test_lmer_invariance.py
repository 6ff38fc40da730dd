"""Exact invariances of lmer fits: things that must not change the answer.

These need no reference numbers: each compares two fits of ours (on small
datasets: sleepstudy, Penicillin, Pastes), so tolerances are tight.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.exceptions import (
    MissingDataWarning,
    PredictionError,
    RankDeficiencyWarning,
)

SLEEP_FORMULA = "Reaction ~ Days + (Days | Subject)"
TIGHT = 1e-6


def fit_quiet(formula, data, **kwargs):
    """Fit and fail on any warning (so unexpected warnings are caught)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return mm.lmer(formula, data, **kwargs)


def assert_same_fit(a, b, rtol=TIGHT, theta_atol=1e-6, check_names=True):
    """Two fits agree in fixef, loglik, sigma, theta and varcorr."""
    if check_names:
        assert list(a.fixef.index) == list(b.fixef.index)
        assert list(a.theta.index) == list(b.theta.index)
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=rtol, err_msg="fixef")
    np.testing.assert_allclose(a.se.to_numpy(), b.se.to_numpy(), rtol=1e-5, err_msg="se")
    assert a.loglik == pytest.approx(b.loglik, rel=rtol, abs=1e-8), "loglik"
    assert a.sigma == pytest.approx(b.sigma, rel=1e-5), "sigma"
    np.testing.assert_allclose(a.theta.to_numpy(), b.theta.to_numpy(), rtol=1e-5, atol=theta_atol, err_msg="theta")
    va, vb = a.varcorr, b.varcorr
    is_sd = va["var2"].isna().to_numpy()
    assert list(vb["var2"].isna()) == list(is_sd)
    np.testing.assert_allclose(
        va["sdcor"].to_numpy(dtype=float)[is_sd],
        vb["sdcor"].to_numpy(dtype=float)[is_sd],
        rtol=1e-5,
        atol=1e-8,
        err_msg="varcorr standard deviations",
    )
    # correlations: absolute (the optimizer's stopping rule, ftol_rel = 1e-12 on the
    # objective, leaves ~1e-6 in theta, hence a few 1e-6 in a correlation)
    np.testing.assert_allclose(
        va["sdcor"].to_numpy(dtype=float)[~is_sd],
        vb["sdcor"].to_numpy(dtype=float)[~is_sd],
        atol=1e-5,
        err_msg="varcorr correlations",
    )
    assert a.nobs == b.nobs
    assert sorted(a.ngroups.values()) == sorted(b.ngroups.values())


def assert_same_ranef(a, b, rtol=1e-5):
    """Conditional modes identical by level label (in whatever order)."""
    assert set(a.ranef) == set(b.ranef)
    for group, ra in a.ranef.items():
        rb = b.ranef[group]
        ia = ra.index.map(str)
        ib = rb.index.map(str)
        assert sorted(ia) == sorted(ib), group
        ra2 = ra.set_axis(ia)
        rb2 = rb.set_axis(ib).loc[ia]
        scale = np.abs(ra2.to_numpy()).max()
        np.testing.assert_allclose(ra2.to_numpy(), rb2.to_numpy(), rtol=rtol, atol=1e-6 * scale, err_msg=group)



@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return fit_quiet(SLEEP_FORMULA, sleep)


@pytest.fixture(scope="module")
def sleep_fit_ml(sleep):
    return fit_quiet(SLEEP_FORMULA, sleep, reml=False)


@pytest.fixture(scope="module")
def penicillin():
    return mm.datasets.load("Penicillin")


@pytest.fixture(scope="module")
def pastes():
    return mm.datasets.load("Pastes")


# ---------------------------------------------------------------------------- row order


@pytest.mark.parametrize("reml", [True, False])
def test_row_permutation(sleep, sleep_fit, sleep_fit_ml, reml):
    base = sleep_fit if reml else sleep_fit_ml
    perm = np.random.default_rng(42).permutation(len(sleep))
    shuffled = sleep.iloc[perm]
    m = fit_quiet(SLEEP_FORMULA, shuffled, reml=reml)
    assert_same_fit(m, base)
    assert_same_ranef(m, base)
    # fitted values and residuals stay attached to their row labels
    assert list(m.fitted.index) == list(shuffled.index)
    pd.testing.assert_series_equal(
        m.fitted.sort_index(), base.fitted.sort_index(), check_exact=False, rtol=1e-6
    )
    pd.testing.assert_series_equal(
        m.residuals().sort_index(), base.residuals().sort_index(), check_exact=False, rtol=1e-4, atol=1e-6
    )


def test_row_permutation_crossed(penicillin):
    f = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    a = fit_quiet(f, penicillin)
    perm = np.random.default_rng(7).permutation(len(penicillin))
    b = fit_quiet(f, penicillin.iloc[perm])
    assert_same_fit(a, b)
    assert_same_ranef(a, b)


# ---------------------------------------------------------------------------- term order


def test_random_term_order_crossed(penicillin):
    a = fit_quiet("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin)
    b = fit_quiet("diameter ~ 1 + (1 | sample) + (1 | plate)", penicillin)
    assert_same_fit(a, b)
    assert_same_ranef(a, b)
    assert a.ngroups == b.ngroups


def test_random_term_order_nested(pastes):
    a = fit_quiet("strength ~ 1 + (1 | batch) + (1 | batch:cask)", pastes)
    b = fit_quiet("strength ~ 1 + (1 | batch:cask) + (1 | batch)", pastes)
    assert_same_fit(a, b)
    assert_same_ranef(a, b)


def test_slash_equals_explicit_nesting(pastes):
    nested = fit_quiet("strength ~ 1 + (1 | batch/cask)", pastes)
    explicit = fit_quiet("strength ~ 1 + (1 | batch) + (1 | batch:cask)", pastes)
    # names differ (lme4 calls the nested factor 'cask:batch'), the fit does not
    assert nested.ngroups == {"cask:batch": 30, "batch": 10}
    assert explicit.ngroups == {"batch:cask": 30, "batch": 10}
    assert_same_fit(nested, explicit, check_names=False)
    # The two spellings order the interaction levels differently, so rounding
    # differs and BOBYQA stops at a slightly different θ on the flat optimum:
    # the criterion agrees to 1e-12 relative, θ and the modes only to what that
    # determines (about sqrt(1e-12) relative), hence the estimate tolerance 1e-4.
    assert nested.reml_criterion == pytest.approx(explicit.reml_criterion, rel=1e-12)
    np.testing.assert_allclose(
        np.sort(nested.ranef["cask:batch"].to_numpy().ravel()),
        np.sort(explicit.ranef["batch:cask"].to_numpy().ravel()),
        rtol=1e-4,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        nested.ranef["batch"].to_numpy(), explicit.ranef["batch"].to_numpy(), rtol=1e-4, atol=1e-8
    )


# ---------------------------------------------------------------------------- factor coding


def test_relevel_grouping_factor(sleep, sleep_fit):
    data = sleep.copy()
    data["Subject"] = data["Subject"].cat.reorder_categories(list(data["Subject"].cat.categories[::-1]))
    m = fit_quiet(SLEEP_FORMULA, data)
    assert_same_fit(m, sleep_fit)
    assert_same_ranef(m, sleep_fit)
    # the levels follow the categorical's (reversed) order
    assert list(m.ranef["Subject"].index) == list(data["Subject"].cat.categories)


def test_integer_vs_string_grouping_codes(sleep, sleep_fit):
    as_int = sleep.assign(Subject=sleep["Subject"].astype(str).astype(int))
    as_str = sleep.assign(Subject=sleep["Subject"].astype(str))
    as_obj = sleep.assign(Subject=sleep["Subject"].astype(str).astype(object))
    m_int = fit_quiet(SLEEP_FORMULA, as_int)
    m_str = fit_quiet(SLEEP_FORMULA, as_str)
    m_obj = fit_quiet(SLEEP_FORMULA, as_obj)
    for m in (m_int, m_str, m_obj):
        assert_same_fit(m, sleep_fit)
        assert_same_ranef(m, sleep_fit)
        assert m.ngroups == {"Subject": 18}


def test_integer_grouping_levels_sorted_numerically():
    rng = np.random.default_rng(0)
    g = np.repeat([2, 10, 1, 33], 6)
    data = pd.DataFrame({"y": rng.normal(size=24) + g, "g": g})
    m = fit_quiet("y ~ 1 + (1 | g)", data)
    assert list(m.ranef["g"].index) == ["1", "2", "10", "33"]


# ---------------------------------------------------------------------------- missing values


def test_nan_in_unused_column_changes_nothing(sleep, sleep_fit):
    data = sleep.assign(unused=np.where(np.arange(len(sleep)) % 7 == 0, np.nan, 1.0))
    m = fit_quiet(SLEEP_FORMULA, data)  # fails on any warning
    assert m.nobs == len(sleep)
    assert m.n_dropped == 0
    assert_same_fit(m, sleep_fit, rtol=1e-12, theta_atol=1e-12)


def test_nan_in_used_column_drops_rows(sleep):
    data = sleep.copy()
    data.loc[[3, 50, 51], "Reaction"] = np.nan
    data.loc[100, "Days"] = np.nan
    with pytest.warns(MissingDataWarning, match=r"\b4 row"):
        m = mm.lmer(SLEEP_FORMULA, data)
    assert m.nobs == len(sleep) - 4
    assert m.n_dropped == 4
    ref = fit_quiet(SLEEP_FORMULA, data.dropna())
    assert_same_fit(m, ref, rtol=1e-10, theta_atol=1e-10)
    dropped = {3, 50, 51, 100}
    assert dropped.isdisjoint(m.fitted.index)
    assert list(m.fitted.index) == [i for i in data.index if i not in dropped]
    assert list(m.residuals().index) == list(m.fitted.index)


def test_nan_in_grouping_column_drops_rows(sleep):
    data = sleep.copy()
    data.loc[[0, 1], "Subject"] = np.nan
    with pytest.warns(MissingDataWarning, match=r"\b2 row"):
        m = mm.lmer(SLEEP_FORMULA, data)
    assert m.nobs == len(sleep) - 2
    assert m.n_dropped == 2


# ---------------------------------------------------------------------------- scale of y


@pytest.mark.parametrize("reml", [True, False])
def test_scaling_response(sleep, sleep_fit, sleep_fit_ml, reml):
    base = sleep_fit if reml else sleep_fit_ml
    c = 3.7
    m = fit_quiet(SLEEP_FORMULA, sleep.assign(Reaction=sleep["Reaction"] * c), reml=reml)
    n, p = base.nobs, len(base.fixef)
    shift = -(n - p) * np.log(c) if reml else -n * np.log(c)
    assert m.loglik == pytest.approx(base.loglik + shift, abs=1e-5)
    np.testing.assert_allclose(m.fixef.to_numpy(), c * base.fixef.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(m.se.to_numpy(), c * base.se.to_numpy(), rtol=1e-4)
    assert m.sigma == pytest.approx(c * base.sigma, rel=1e-5)
    np.testing.assert_allclose(m.theta.to_numpy(), base.theta.to_numpy(), atol=1e-5)


# ---------------------------------------------------------------------------- caller's data


def test_caller_dataframe_not_modified(sleep):
    data = sleep.copy()
    data["Subject"] = data["Subject"].cat.add_categories(["unused_level"])
    data.loc[5, "Reaction"] = np.nan
    data["w"] = 1.0
    data["unused"] = "x"
    before = copy.deepcopy(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDataWarning)
        m = mm.lmer("Reaction ~ scale(Days) + (Days | Subject)", data, weights="w")
    m.fitted, m.residuals(), m.ranef, m.varcorr, m.summary(), m.tidy("ran_vals")
    m.predict(data.dropna())
    m.simulate(nsim=1, seed=0)
    pd.testing.assert_frame_equal(data, before, check_exact=True)
    assert list(data.dtypes) == list(before.dtypes)
    assert list(data["Subject"].cat.categories) == list(before["Subject"].cat.categories)


# ---------------------------------------------------------------------------- polars


def test_polars_input(sleep, sleep_fit):
    pl = pytest.importorskip("polars")
    m = fit_quiet(SLEEP_FORMULA, pl.from_pandas(sleep))
    assert_same_fit(m, sleep_fit)
    assert_same_ranef(m, sleep_fit)


def test_polars_string_grouping(sleep, sleep_fit):
    pl = pytest.importorskip("polars")
    frame = pl.from_pandas(sleep.assign(Subject=sleep["Subject"].astype(str)))
    m = fit_quiet(SLEEP_FORMULA, frame)
    assert_same_fit(m, sleep_fit)
    assert_same_ranef(m, sleep_fit)


# ---------------------------------------------------------------------------- weights


def test_unit_weights_equal_no_weights(sleep, sleep_fit):
    m = fit_quiet(SLEEP_FORMULA, sleep, weights=np.ones(len(sleep)))
    assert_same_fit(m, sleep_fit, rtol=1e-10, theta_atol=1e-10)


def test_weights_by_name_equal_weights_array(sleep):
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(sleep))
    by_name = fit_quiet(SLEEP_FORMULA, sleep.assign(w=w), weights="w")
    by_array = fit_quiet(SLEEP_FORMULA, sleep, weights=w)
    assert_same_fit(by_name, by_array, rtol=1e-12, theta_atol=1e-12)
    # and weights really matter
    unweighted = fit_quiet(SLEEP_FORMULA, sleep)
    assert abs(by_name.loglik - unweighted.loglik) > 1e-3


# ---------------------------------------------------------------------------- rank deficiency


def test_rank_deficient_column_dropped(sleep, sleep_fit):
    data = sleep.assign(x2=2 * sleep["Days"])
    with pytest.warns(RankDeficiencyWarning, match="x2"):
        m = mm.lmer("Reaction ~ Days + x2 + (Days | Subject)", data)
    assert m.loglik == pytest.approx(sleep_fit.loglik, abs=1e-6)
    assert list(m.fixef.index) == ["(Intercept)", "Days"]
    np.testing.assert_allclose(m.fixef.to_numpy(), sleep_fit.fixef.to_numpy(), rtol=1e-6)
    table = m.coef_table()
    assert list(table.index) == ["(Intercept)", "Days", "x2"]
    assert table.loc["x2"].isna().all()
    assert table.loc[["(Intercept)", "Days"]].notna().all().all()
    tidy = m.tidy().set_index("term")
    assert np.isnan(tidy.loc["x2", "estimate"])
    assert np.isnan(tidy.loc["x2", "std_error"])


# ---------------------------------------------------------------------------- prediction


def test_predict_population_without_grouping_column(sleep, sleep_fit):
    nd = pd.DataFrame({"Days": [0.0, 4.5, 9.0]})
    pred = sleep_fit.predict(nd, re_form="~0")
    b = sleep_fit.fixef
    np.testing.assert_allclose(pred.to_numpy(), b["(Intercept)"] + b["Days"] * nd["Days"].to_numpy(), rtol=1e-12)
    with pytest.raises(PredictionError, match="Subject"):
        sleep_fit.predict(nd)


def test_predict_training_rows_equal_fitted(sleep, sleep_fit):
    sub = sleep.iloc[[5, 17, 100, 179]]
    np.testing.assert_allclose(
        sleep_fit.predict(sub).to_numpy(), sleep_fit.fitted.loc[sub.index].to_numpy(), rtol=1e-10
    )


def test_predict_new_levels(sleep_fit):
    nd = pd.DataFrame({"Days": [1.0, 2.0], "Subject": ["308", "999"]})
    with pytest.raises(PredictionError, match="999"):
        sleep_fit.predict(nd, new_levels="error")
    nan_pred = sleep_fit.predict(nd, new_levels="nan")
    assert np.isfinite(nan_pred.iloc[0]) and np.isnan(nan_pred.iloc[1])
    pop = sleep_fit.predict(nd, new_levels="population")
    assert pop.iloc[1] == pytest.approx(sleep_fit.predict(nd, re_form="~0").iloc[1], rel=1e-12)
    assert pop.iloc[0] == pytest.approx(nan_pred.iloc[0], rel=1e-12)


def test_predict_unseen_fixed_factor_level(pastes):
    m = fit_quiet("strength ~ cask + (1 | batch)", pastes)
    nd = pd.DataFrame({"cask": ["a", "zz"], "batch": ["A", "A"]})
    with pytest.raises(PredictionError, match="zz"):
        m.predict(nd)
    with pytest.raises(PredictionError, match="cask"):
        m.predict(nd, re_form="~0")


# ---------------------------------------------------------------------------- simulate


def test_simulate_reproducible(sleep_fit):
    a = sleep_fit.simulate(nsim=3, seed=1)
    b = sleep_fit.simulate(nsim=3, seed=1)
    assert a.shape == (sleep_fit.nobs, 3)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.index) == list(sleep_fit.fitted.index)
    c = sleep_fit.simulate(nsim=3, seed=2)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_simulate_means_near_fitted(sleep_fit):
    nsim = 400
    sims = sleep_fit.simulate(nsim=nsim, seed=11, use_u=True)
    # conditional on u: each row is fitted + N(0, sigma^2)
    dev = sims.mean(axis=1).to_numpy() - sleep_fit.fitted.to_numpy()
    assert np.max(np.abs(dev)) < 5 * sleep_fit.sigma / np.sqrt(nsim)
    # unconditional: column means scatter around the mean of the population predictions
    sims = sleep_fit.simulate(nsim=50, seed=12)
    pop_mean = sleep_fit.predict(re_form="~0").mean()
    assert abs(sims.to_numpy().mean() - pop_mean) < 15.0
    sd = sims.to_numpy().std()
    assert 0.5 * sleep_fit.sigma < sd < 4 * sleep_fit.sigma + 50


# ---------------------------------------------------------------------------- stateful transforms


def test_scale_transform_reuses_training_statistics(sleep):
    m = fit_quiet("Reaction ~ scale(Days) + (1 | Subject)", sleep)
    sub = sleep.iloc[[0, 1, 2, 60, 61]]  # Days 0, 1, 2, 0, 1: a different mean/sd
    np.testing.assert_allclose(m.predict(sub).to_numpy(), m.fitted.loc[sub.index].to_numpy(), rtol=1e-10)
    plain = fit_quiet("Reaction ~ Days + (1 | Subject)", sleep)
    np.testing.assert_allclose(m.fitted.to_numpy(), plain.fitted.to_numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------- formula spellings


def test_double_bar_equals_expanded_terms(sleep):
    double = fit_quiet("Reaction ~ Days + (Days || Subject)", sleep)
    explicit = fit_quiet("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", sleep)
    # the form R prints for the expanded formula: a parenthesised sum of terms
    printed = fit_quiet("Reaction ~ Days + ((1 | Subject) + (0 + Days | Subject))", sleep)
    for m in (explicit, printed):
        assert_same_fit(m, double, rtol=1e-10, theta_atol=1e-10)
        assert list(m.varcorr["grp"]) == ["Subject", "Subject.1", "Residual"]
