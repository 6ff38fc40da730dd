"""tidy(conf_int=True) for every kind of effect: profile intervals by default
for the variance parameters (main ignored conf_int there), against lme4's
confint(profile(fit)) for sleepstudy."""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
from _reference import assert_close, load_case
from mixedmodels.exceptions import ModelSpecError


@pytest.fixture(scope="module")
def fm1():
    return mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))


def _reference_bounds(names: list[str]) -> np.ndarray:
    rows = {r["term"]: (r["lower"], r["upper"]) for r in load_case("lmer_sleepstudy_reml")["profile_ci"]}
    return np.array([rows[n] for n in names])


def test_ran_pars_profile_intervals_match_lme4(fm1):
    out = fm1.tidy("ran_pars", conf_int=True)
    assert out["term"].tolist() == [
        "sd__(Intercept)", "sd__Days", "cor__(Intercept).Days", "sd__Observation"
    ]
    assert out.attrs["conf_method"] == "profile"
    expected = _reference_bounds([".sig01", ".sig03", ".sig02", ".sigma"])
    got = out[["conf_low", "conf_high"]].to_numpy()
    assert_close(got, expected, rtol=1e-4, what="tidy ran_pars profile CI")
    # the estimates lie inside their intervals
    assert np.all((got[:, 0] < out["estimate"]) & (out["estimate"] < got[:, 1]))


def test_fixed_profile_intervals_on_request(fm1):
    out = fm1.tidy("fixed", conf_int=True, conf_method="profile")
    got = out[["conf_low", "conf_high"]].to_numpy()
    assert_close(got, _reference_bounds(["(Intercept)", "Days"]), rtol=1e-4, what="fixed profile CI")
    wald = fm1.tidy("fixed", conf_int=True)  # Wald by default, as broom.mixed
    assert_close(wald["conf_high"] - wald["estimate"], 1.959963984540054 * wald["std_error"],
                 rtol=1e-12)


def test_ran_pars_bootstrap_intervals(fm1):
    out = fm1.tidy("ran_pars", conf_int=True, conf_method="boot", nsim=20, seed=1)
    ci = fm1.confint(parm="theta_", method="boot", nsim=20, seed=1)
    order = [".sig01", ".sig03", ".sig02", ".sigma"]
    np.testing.assert_array_equal(out["conf_low"].to_numpy(), ci.loc[order, "lower"].to_numpy())
    np.testing.assert_array_equal(out["conf_high"].to_numpy(), ci.loc[order, "upper"].to_numpy())


def test_interval_requests_that_cannot_be_met(fm1):
    with pytest.raises(ModelSpecError, match="no Wald intervals.*profile"):
        fm1.tidy("ran_pars", conf_int=True, conf_method="Wald")
    with pytest.raises(ModelSpecError, match="only Wald intervals.*conditional modes"):
        fm1.tidy("ran_vals", conf_int=True, conf_method="profile")
    with pytest.raises(ModelSpecError, match="conf_method must be"):
        fm1.tidy("fixed", conf_int=True, conf_method="exact")
    with pytest.raises(ModelSpecError, match="bootstrap intervals"):
        fm1.tidy("ran_pars", conf_int=True, nsim=100)
    with pytest.raises(ModelSpecError, match="only used with conf_int=True"):
        fm1.tidy("ran_pars", nsim=100)


def test_profile_refused_by_the_model_points_at_tidy_options():
    sleep = mm.datasets.load("sleepstudy")
    gamma = mm.glmer("Reaction ~ Days + (1 | Subject)", sleep, family="Gamma")
    with pytest.raises(ModelSpecError, match="scale parameter.*in tidy: conf_method='boot'"):
        gamma.tidy("ran_pars", conf_int=True)
