"""Exact restricted LRT against RLRsim 3.1-8 (R 4.2.2, lme4 1.1-31): the
reference JSON and literals. The statistic is deterministic; p-values are
simulated (different generators), so they are compared within 4 Monte Carlo
standard errors of both simulations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

import mixedmodels as mm
from _reference import assert_close, load_case
from mixedmodels.exceptions import ModelSpecError
from mixedmodels.inference.rlrt import RLRTResult, residual_eigenvalues, rlrt_null_sample


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _assert_p_close(p: float, nsim: int, p_r: float, nsim_r: int) -> None:
    var = p_r * (1 - p_r)
    se = math.sqrt(var / nsim + var / nsim_r)
    assert abs(p - p_r) <= 4 * se, f"p {p} vs R {p_r} (4 SE = {4 * se:.4g})"


@pytest.fixture(scope="module")
def sleep_models():
    s = mm.datasets.load("sleepstudy")
    return {
        "alt": mm.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", s),
        "null": mm.lmer("Reaction ~ Days + (1 | Subject)", s),
        "slope": mm.lmer("Reaction ~ Days + (0 + Days | Subject)", s),
        "data": s,
    }


def test_sleepstudy_slope_reference(sleep_models):
    ref = load_case("lmer_sleepstudy_reml")["rlrt_slope"]
    m = sleep_models
    res = mm.rlrt(m["alt"], m["null"], m["slope"], nsim=ref["nsim"], seed=1)
    assert isinstance(res, RLRTResult)
    assert_close(res.statistic, ref["statistic"], rtol=1e-4, what="statistic")
    assert res.nsim == 10000 and res.sample.shape == (10000,)
    # R: 0 of 10000 simulated values exceed the statistic
    assert res.p_value < 1e-3
    # the tested term taken from m_alt gives the same null distribution
    again = mm.rlrt(m["alt"], m["null"], nsim=10000, seed=1)
    assert again.statistic == res.statistic
    np.testing.assert_array_equal(again.sample, res.sample)
    s = res.to_series()
    assert list(s.index) == ["statistic", "p_value", "nsim"]


def test_pastes_batch_nontrivial_p():
    # R: set.seed(1); exactRLRT(m = lmer(strength ~ 1 + (1|batch), Pastes),
    #    mA = lmer(strength ~ 1 + (1|batch) + (1|sample), Pastes),
    #    m0 = lmer(strength ~ 1 + (1|sample), Pastes), nsim = 100000)
    # -> RLRT 0.65765592687319, p 0.17828
    P = mm.datasets.load("Pastes")
    alt = mm.lmer("strength ~ 1 + (1 | batch) + (1 | sample)", P)
    null = mm.lmer("strength ~ 1 + (1 | sample)", P)
    slope = mm.lmer("strength ~ 1 + (1 | batch)", P)
    res = mm.rlrt(alt, null, slope, nsim=10000, seed=20240601)
    assert_close(res.statistic, 0.65765592687319, rtol=1e-4)
    _assert_p_close(res.p_value, 10000, 0.17828, 100000)


def test_single_random_effect_against_linear_model():
    # R: set.seed(1); exactRLRT(lmer(Yield ~ 1 + (1|Batch), Dyestuff), nsim = 100000)
    # -> RLRT 6.3689553136212, p 0.00463
    m = mm.lmer("Yield ~ 1 + (1 | Batch)", mm.datasets.load("Dyestuff"))
    res = mm.rlrt(m, nsim=10000, seed=7)
    assert_close(res.statistic, 6.3689553136212, rtol=1e-4)
    _assert_p_close(res.p_value, 10000, 0.00463, 100000)


def test_singular_fit_mass_at_zero():
    # R: set.seed(1); exactRLRT(lmer(Yield ~ 1 + (1|Batch), Dyestuff2))
    # -> RLRT 5.7e-14 (zero up to rounding), p 0.4384 (nsim 10000): the share of
    # the null distribution above zero
    m = _quiet(mm.lmer, "Yield ~ 1 + (1 | Batch)", mm.datasets.load("Dyestuff2"))
    res = mm.rlrt(m, nsim=10000, seed=3)
    assert res.statistic < 1e-9
    _assert_p_close(res.p_value, 10000, 0.4384, 10000)


def test_eigenvalues_balanced_one_way():
    # Z'(I - P_1)Z = 5 I - (25/30) 11' for 6 batches of 5: eigenvalues 5 (x5) and 0
    m = mm.lmer("Yield ~ 1 + (1 | Batch)", mm.datasets.load("Dyestuff"))
    mu = residual_eigenvalues(m.frame.fixed.X, m.frame.terms[0])
    np.testing.assert_allclose(mu, [1, 1, 1, 1, 1, 0], atol=1e-12)


def test_null_sample_point_mass_at_zero():
    # The statistic is 0 when the restricted likelihood decreases at λ = 0:
    # (n - p) Σ μ_s w_s / (Σ w_s + w_0) <= Σ μ_s. With μ = (1, 1, 1, 1, 1, 0),
    # n = 30, p = 1 that is 29 B <= 5 for B ~ Beta(5/2, 24/2).
    rng = np.random.default_rng(0)
    mu = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    nsim = 20000
    sample = rlrt_null_sample(mu, 30, 1, nsim, rng)
    assert np.all(sample >= 0)
    exact = stats.beta.cdf(5 / 29, 2.5, 12)
    se = math.sqrt(exact * (1 - exact) / nsim)
    assert abs(np.mean(sample == 0) - exact) <= 4 * se
    same = rlrt_null_sample(mu, 30, 1, nsim, np.random.default_rng(0))
    np.testing.assert_array_equal(sample, same)


def test_seed_reproducible(sleep_models):
    m = sleep_models
    a = mm.rlrt(m["alt"], m["null"], nsim=500, seed=11)
    b = mm.rlrt(m["alt"], m["null"], nsim=500, seed=11)
    np.testing.assert_array_equal(a.sample, b.sample)


def test_errors(sleep_models):
    m, s = sleep_models, sleep_models["data"]
    cb = mm.datasets.load("cbpp")
    # an unfitted glmer model: refused for its kind before anything else
    g = mm.GeneralizedLinearMixedModel("cbind(incidence, size - incidence) ~ period + (1 | herd)", cb)
    with pytest.raises(ModelSpecError, match="glmer"):
        mm.rlrt(g)
    other_fixed = mm.lmer("Reaction ~ 1 + (1 | Subject)", s)
    with pytest.raises(ModelSpecError, match="fixed effects .* not identical"):
        mm.rlrt(m["alt"], other_fixed)
    with pytest.raises(ModelSpecError, match="exactly one random-effects term"):
        mm.rlrt(m["alt"])
    correlated = mm.lmer("Reaction ~ Days + (Days | Subject)", s)
    with pytest.raises(ModelSpecError, match="exactly one variance"):
        mm.rlrt(correlated, m["null"])
    with pytest.raises(ModelSpecError, match="only used together with m_null"):
        mm.rlrt(m["slope"], m_slope=m["slope"])
    with pytest.raises(ModelSpecError, match="nsim"):
        mm.rlrt(m["slope"], nsim=0)


def test_ml_fit_warns_and_uses_reml_criterion(sleep_models):
    s = sleep_models["data"]
    ml = mm.lmer("Reaction ~ Days + (0 + Days | Subject)", s, reml=False)
    with pytest.warns(mm.MixedModelsWarning, match="fitted by ML"):
        res = mm.rlrt(ml, nsim=100, seed=1)
    # lme4's REML criterion at the ML estimates: no larger than the REML optimum
    assert -2 * sleep_models["slope"].loglik <= ml.profiled_criterion(ml.fitted_factor, True)
    assert res.statistic > 0
