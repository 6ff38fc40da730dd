"""Parametric bootstrap (lme4's bootMer): invariants, interval arithmetic
(against boot's own functions) and the accounting of failed and singular refits."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import assert_close
from mixedmodels.exceptions import MixedModelsError, SingularFitWarning
from mixedmodels.inference.bootstrap import (
    bootstrap,
    norm_inter,
    percentile_interval,
    shortest_interval,
)

SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def fm1():
    return mm.lmer(SLEEP, mm.datasets.load("sleepstudy"))


@pytest.fixture(scope="module")
def boot1(fm1):
    return fm1.bootstrap(nsim=60, seed=123)


def test_layout(boot1, fm1):
    reps = boot1.replicates
    assert reps.shape == (60, 9)
    assert reps.index.name == "replicate"
    assert list(reps.columns) == [
        "theta_Subject.(Intercept)",
        "theta_Subject.Days.(Intercept)",
        "theta_Subject.Days",
        "sigma",
        "(Intercept)",
        "Days",
        "sd_(Intercept)|Subject",
        "cor_Days.(Intercept)|Subject",
        "sd_Days|Subject",
    ]
    assert_close(boot1.original["sigma"], fm1.sigma, rtol=0, what="t0 sigma")
    vc = fm1.varcorr
    assert_close(
        boot1.original[["sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "sd_Days|Subject"]],
        vc["sdcor"].to_numpy()[[0, 2, 1]],
        rtol=1e-12,
        what="t0 sd/cor",
    )
    assert list(boot1.status.columns) == ["failed", "singular", "converged", "message"]
    assert boot1.n_failed == 0
    assert boot1.n_singular == int(boot1.status["singular"].sum())


def test_replicate_is_the_refit_of_its_simulation(boot1, fm1):
    # all responses come from one Generator(seed), column i for replicate i
    Y = fm1.simulate(60, seed=123).to_numpy()
    for i in (0, 37):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = fm1.refit(Y[:, i])
        row = boot1.replicates.iloc[i]
        assert_close(row[["(Intercept)", "Days"]], r.fixef, rtol=1e-12, what="beta")
        assert_close(row["sigma"], r.sigma, rtol=1e-12, what="sigma")
        assert_close(row.iloc[:3], r.theta, rtol=1e-12, what="theta")
        assert bool(boot1.status["singular"].iloc[i]) == r.is_singular


def test_same_seed_same_result_other_seed_other_result(fm1, boot1):
    again = fm1.bootstrap(nsim=60, seed=123)
    pd.testing.assert_frame_equal(again.replicates, boot1.replicates)
    other = fm1.bootstrap(nsim=60, seed=124)
    assert not np.allclose(other.replicates.to_numpy(), boot1.replicates.to_numpy())


def test_n_jobs_does_not_change_the_result(fm1, boot1):
    two = fm1.bootstrap(nsim=60, seed=123, n_jobs=2)
    assert two.n_jobs == 2
    pd.testing.assert_frame_equal(two.replicates, boot1.replicates)
    pd.testing.assert_frame_equal(two.status, boot1.status)


def test_generator_seed(fm1):
    a = fm1.bootstrap(nsim=5, seed=np.random.default_rng(7))
    b = fm1.bootstrap(nsim=5, seed=np.random.default_rng(7))
    pd.testing.assert_frame_equal(a.replicates, b.replicates)


def test_norm_inter_matches_boot():
    # R: boot:::norm.inter(sqrt(1:199), c(0.025, 0.975)); boot:::norm.inter(log(1:50), c(0.05, 0.95))
    #    boot:::norm.inter(log(1:50), c(0.025, 0.975))      # boot 1.3-28.1
    assert_close(norm_inter(np.sqrt(np.arange(1, 200)), np.array([0.025, 0.975])),
                 [2.23606797749979, 13.96424004376894], rtol=1e-13, what="integer rank")
    assert_close(norm_inter(np.log(np.arange(1, 51)), np.array([0.05, 0.95])),
                 [0.932118119852739, 3.879667808705617], rtol=1e-13, what="interpolated")
    assert_close(percentile_interval(np.log(np.arange(50, 0, -1)), 0.95),
                 [0.233957354026026, 3.905204003518118], rtol=1e-13, what="percentile")
    # non-finite values are left out, as boot.ci does
    assert_close(percentile_interval(np.r_[np.sqrt(np.arange(1, 200)), np.nan, np.inf], 0.95),
                 [2.23606797749979, 13.96424004376894], rtol=1e-13, what="NaN dropped")


def test_shortest_interval():
    t = np.array([0.0, 1.0, 1.1, 1.2, 1.3, 5.0, 9.0, 1.4, 1.5, 1.6])
    # 8 of 10 values: the windows of 8 sorted values are [0, 1.6], [1, 5], [1.1, 9]
    assert shortest_interval(t, 0.8) == (0.0, 1.6)
    assert shortest_interval(t, 0.5) == (1.0, 1.4)


def test_confint_methods(boot1):
    reps = boot1.parameters("lme4")
    t0 = boot1.original[boot1._readable_names].to_numpy()
    perc = boot1.confint()  # lme4's default boot.type = "perc"
    assert list(perc.index) == [".sig01", ".sig02", ".sig03", ".sigma", "(Intercept)", "Days"]
    for j, name in enumerate(perc.index):
        assert_close(perc.loc[name], percentile_interval(reps[name].to_numpy()), rtol=0, what=name)
    basic = boot1.confint("basic")
    assert_close(basic["lower"], 2 * t0 - perc["upper"].to_numpy(), rtol=1e-12, what="basic lower")
    assert_close(basic["upper"], 2 * t0 - perc["lower"].to_numpy(), rtol=1e-12, what="basic upper")
    norm = boot1.confint("norm", level=0.9)
    z = 1.6448536269514722
    center = 2 * t0 - reps.mean().to_numpy()
    sd = reps.std(ddof=1).to_numpy()
    assert_close(norm["lower"], center - z * sd, rtol=1e-10, what="normal lower")
    assert_close(norm["upper"], center + z * sd, rtol=1e-10, what="normal upper")
    short = boot1.confint("shortest", parm="beta_", names="readable")
    assert list(short.index) == ["(Intercept)", "Days"]
    width = (short["upper"] - short["lower"]).to_numpy()
    assert np.all(width <= (perc["upper"] - perc["lower"]).to_numpy()[4:] + 1e-12)
    with pytest.raises(MixedModelsError, match="interval method"):
        boot1.confint("bca")


def test_model_confint_boot(fm1, boot1):
    ci = fm1.confint(method="boot", nsim=60, seed=123)
    pd.testing.assert_frame_equal(ci, boot1.confint(), check_like=False)
    ci2 = fm1.confint(method="boot", nsim=60, seed=123, boot_type="basic", parm=[".sigma"])
    assert list(ci2.index) == [".sigma"]


def test_failed_and_singular_replicates_are_counted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        m = mm.lmer("Yield ~ 1 + (1|Batch)", mm.datasets.load("Dyestuff2"))
    real_refit = m.refit
    threshold = float(np.median(m.frame.y))

    def flaky(y, **kw):  # fails for about half the simulated responses
        if y[0] > threshold:
            raise FloatingPointError("simulated failure")
        return real_refit(y, **kw)

    m.refit = flaky
    with pytest.warns(UserWarning, match="bootstrap refits failed"):
        b = bootstrap(m, nsim=40, seed=5)
    Y = m.simulate(40, seed=5).to_numpy()
    expected_failed = Y[0] > threshold
    assert b.n_failed == int(expected_failed.sum()) > 0
    assert np.array_equal(b.status["failed"].to_numpy(), expected_failed)
    assert b.replicates[expected_failed].isna().all().all()
    assert not b.replicates[~expected_failed].isna().any().any()
    assert all("simulated failure" in msg for _, msg in b.errors)
    # Dyestuff2 has no between-batch variance: many refits are singular, not all
    assert 0 < b.n_singular < (~expected_failed).sum()
    ci = b.confint()  # failures are left out
    assert np.isfinite(ci.to_numpy()).all()


def test_use_u_keeps_the_random_effects(fm1):
    b = fm1.bootstrap(nsim=30, seed=3, use_u=True)
    # with the modes fixed the fixed effects vary by the residual noise only
    b0 = fm1.bootstrap(nsim=30, seed=3)
    assert b.replicates["(Intercept)"].std() < 0.5 * b0.replicates["(Intercept)"].std()


def test_bad_arguments(fm1):
    with pytest.raises(MixedModelsError, match="nsim"):
        fm1.bootstrap(nsim=0)
    with pytest.raises(MixedModelsError, match="n_jobs"):
        fm1.bootstrap(nsim=2, n_jobs=-3)


def test_glmer_bootstrap():
    d = mm.datasets.load("cbpp")
    g = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    assert hasattr(type(g), "refit")
    b = bootstrap(g, nsim=12, seed=9)
    # binomial: no residual SD
    assert list(b.replicates.columns) == [
        "theta_herd.(Intercept)", "(Intercept)", "period2", "period3", "period4", "sd_(Intercept)|herd"
    ]
    assert b.n_failed == 0
    assert_close(b.replicates["sd_(Intercept)|herd"], b.replicates["theta_herd.(Intercept)"].abs(),
                 rtol=1e-12, what="glmer sd = theta")
    ci = b.confint()
    assert list(ci.index) == [".sig01", "(Intercept)", "period2", "period3", "period4"]
    assert (ci["lower"] <= ci["upper"]).all()
