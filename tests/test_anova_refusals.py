"""mixedmodels.anova refuses comparisons whose likelihood-ratio test means
nothing (lme4's anova.merMod checks the dataset size and the data object;
here also the response distribution), and keeps the legitimate ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedmodels as mm
from mixedmodels.exceptions import ModelSpecError

SLEEP_INT = "Reaction ~ Days + (1 | Subject)"
SLEEP_FULL = "Reaction ~ Days + (Days | Subject)"


# refit and convergence warnings are not what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def sleep() -> pd.DataFrame:
    return mm.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def gaussian_and_gamma(sleep):
    lmm = mm.lmer(SLEEP_INT, sleep)
    gamma = mm.glmer(SLEEP_INT, sleep, family="Gamma")
    return lmm, gamma


def test_anova_refuses_lmer_against_gamma_glmer(gaussian_and_gamma):
    # on main: chi-square 0 on 1 df, p = 1, without a word
    lmm, gamma = gaussian_and_gamma
    with pytest.raises(ModelSpecError, match=r"'lin' \(gaussian family, lmer\).*'gam' "
                       r"\(Gamma family, glmer\).*not nested"):
        mm.anova(lmm, gamma, names=["lin", "gam"])


def test_anova_refuses_glmers_of_different_families():
    cb = mm.datasets.load("cbpp")
    # the same response, another family
    gamma = mm.glmer("size ~ period + (1 | herd)", cb, family="Gamma")
    pois_size = mm.glmer("size ~ period + (1 | herd)", cb, family="poisson")
    with pytest.raises(ModelSpecError, match="poisson family.*Gamma family"):
        mm.anova(pois_size, gamma)


def test_information_criteria_still_compare_families(gaussian_and_gamma):
    # AIC of different distributions of the same response is a valid comparison
    lmm, gamma = gaussian_and_gamma
    table = mm.compare(lmm, gamma, names=["lin", "gam"], refit=True)
    assert table.loc["gam", "aic"] == pytest.approx(gamma.aic, rel=1e-14)


def test_gamma_glmer_counts_its_scale_parameter(gaussian_and_gamma):
    # lme4's npar.merMod: length(beta) + length(theta) + useSc, useSc TRUE for
    # the Gamma family: 2 + 1 + 1 (main counted 3, so AIC was 2 too small)
    _, gamma = gaussian_and_gamma
    assert gamma.n_params == 4
    assert gamma.aic == pytest.approx(-2 * gamma.loglik + 8, rel=1e-14)
    assert gamma.df_residual == 180 - 4


def test_anova_refuses_models_fitted_to_different_data(sleep):
    # same rows, same response, but a covariate with other values: lme4
    # refuses models fitted to different data objects
    other = sleep.assign(Days=sleep["Days"] * 2.0)
    m0 = mm.lmer(SLEEP_INT, sleep, reml=False)
    m1 = mm.lmer(SLEEP_FULL, other, reml=False)
    with pytest.raises(ModelSpecError, match="different data: column 'Days'"):
        mm.anova(m0, m1)


def test_anova_refuses_different_responses_and_sizes(sleep):
    m0 = mm.lmer(SLEEP_INT, sleep, reml=False)
    shifted = mm.lmer(SLEEP_INT, sleep.assign(Reaction=sleep["Reaction"] + 1.0), reml=False)
    with pytest.raises(ModelSpecError, match="different responses"):
        mm.anova(m0, shifted)
    fewer = mm.lmer(SLEEP_INT, sleep.iloc[:100], reml=False)
    with pytest.raises(ModelSpecError, match="same size of dataset"):
        mm.anova(m0, fewer)


def test_legitimate_comparisons_unchanged(sleep):
    # nested REML fits refitted by ML, the same data in another copy, and glmer vs glmer
    copy = sleep.copy()
    m0, m1 = mm.lmer(SLEEP_INT, sleep), mm.lmer(SLEEP_FULL, copy)
    table = mm.anova(m0, m1)
    ml0, ml1 = mm.lmer(SLEEP_INT, sleep, reml=False), mm.lmer(SLEEP_FULL, sleep, reml=False)
    chisq = 2 * (ml1.loglik - ml0.loglik)
    assert table["chisq"].iloc[1] == pytest.approx(chisq, rel=1e-6)
    assert table["p_value"].iloc[1] == pytest.approx(stats.chi2.sf(chisq, 2), rel=1e-5)
    cb = mm.datasets.load("cbpp")
    g0 = mm.glmer("cbind(incidence, size - incidence) ~ 1 + (1 | herd)", cb)
    g1 = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cb)
    # lme4 1.1-31: Chisq 25.6099375959153 on 3 df
    assert mm.anova(g0, g1)["chisq"].iloc[1] == pytest.approx(25.6099375959153, rel=1e-5)
    assert np.isfinite(mm.anova(g0, g1)["p_value"].iloc[1])
