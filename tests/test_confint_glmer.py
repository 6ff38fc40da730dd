"""Likelihood profiles and profile confidence intervals of glmer fits against
lme4 1.1-31 (``profile.merMod`` / ``confint.merMod`` for GLMMs).

For a GLMM lme4 profiles every parameter (random-effect SDs and the fixed
effects) by minimising the Laplace deviance over all the others; the bounds
below were computed in R 4.2.2 with the code in the comments. lme4 minimises
with Nelder-Mead (absolute tolerance 1e-5 in the deviance), ours with BOBYQA
to ~1e-9, so the comparisons use the issue's tolerance, 1e-3 relative.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import assert_close
from mixedmodels.exceptions import MixedModelsError
from mixedmodels.inference.profile import profile, profile_deviance_model

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
RTOL = 1e-3


def _glmer(formula, data, family, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mm.glmer(formula, data, family=family, **kwargs)



@pytest.fixture(scope="module")
def gm1(cbpp):
    return _glmer(CBPP, cbpp, "binomial")


@pytest.fixture(scope="module")
def gm1_profile(gm1):
    return profile(gm1)


@pytest.fixture(scope="module")
def grouseticks():
    return mm.datasets.load("grouseticks")


# ---------------------------------------------------------------------------- cbpp


# R: library(lme4)  # 1.1-31
#    gm1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
#    print(confint(gm1), digits = 15)              # method = "profile", level = 0.95
#    print(confint(gm1, level = 0.9), digits = 15)
CBPP_R_95 = pd.DataFrame(
    {
        "lower": [0.346073203325377, -1.90121195487134, -1.61678325565436, -1.80102436562705,
                  -2.50075056300818],
        "upper": [1.09997464823781, -0.947754005963396, -0.407763067760264, -0.511536071274935,
                  -0.800755315285063],
    },
    index=[".sig01", "(Intercept)", "period2", "period3", "period4"],
)
CBPP_R_90 = pd.DataFrame(
    {
        "lower": [0.388922295571823, -1.811650126826206, -1.512825859202705, -1.688052982347398,
                  -2.340031352675733],
        "upper": [1.007637683940781, -1.022508737062595, -0.499854313379352, -0.608064371904338,
                  -0.919320331832010],
    },
    index=[".sig01", "(Intercept)", "period2", "period3", "period4"],
)


def test_cbpp_confint_matches_lme4(gm1):
    ci = gm1.confint()  # default method "profile", as lme4
    assert list(ci.index) == list(CBPP_R_95.index)
    assert ci.index.name == "parameter"
    assert list(ci.columns) == ["lower", "upper"]
    assert ci.attrs["method"] == "profile"
    assert_close(ci.to_numpy(), CBPP_R_95.to_numpy(), rtol=RTOL, what="cbpp profile CI 95%")


def test_cbpp_profile_level(gm1_profile):
    ci = gm1_profile.confint(level=0.9)
    assert_close(ci.to_numpy(), CBPP_R_90.to_numpy(), rtol=RTOL, what="cbpp profile CI 90%")


def test_cbpp_profile_points_are_profiled_deviances(gm1, gm1_profile):
    """Every row of the table: zeta² is the deviance at its parameters less
    the fit's, and the profiled parameter sits at the row's value."""
    dev = profile_deviance_model(gm1)
    table = gm1_profile.table
    names = list(gm1_profile.estimates.index)
    assert names == [".sig01", "(Intercept)", "period2", "period3", "period4"]
    for _, row in table[table["zeta"] != 0].iterrows():  # all but the estimates
        params = row[names].to_numpy(dtype=float)
        assert params[names.index(row["parameter"])] == row["value"]
        theta, beta = params[:1], params[1:]  # one scalar term: θ is the SD
        increase = dev.objective(np.concatenate([theta, beta])) - gm1.deviance
        assert increase >= -1e-9
        assert abs(np.sign(row["zeta"]) * np.sqrt(max(increase, 1e-9)) - row["zeta"]) < 1e-6


def test_cbpp_profile_is_a_minimum(gm1, gm1_profile):
    """At a profile point, moving any other parameter does not lower the
    deviance: the points are minima over the other parameters."""
    dev = profile_deviance_model(gm1)
    rows = gm1_profile.table[gm1_profile.table["parameter"] == "period2"]
    row = rows.iloc[np.argmax(rows["zeta"].to_numpy())]  # the far upper end
    names = list(gm1_profile.estimates.index)
    x = row[names].to_numpy(dtype=float)
    f0 = dev.objective(x)
    for j in (0, 1, 3, 4):
        for h in (-1e-3, 1e-3):
            y = x.copy()
            y[j] += h
            assert dev.objective(y) >= f0 - 1e-7


def test_cbpp_profile_shape(gm1, gm1_profile):
    pr = gm1_profile
    assert pr.parameters == [".sig01", "(Intercept)", "period2", "period3", "period4"]
    assert_close(pr.estimates.to_numpy(), np.r_[gm1.theta_vector, gm1.beta], rtol=1e-12, what="estimates")
    for name in pr.parameters:
        pts = pr.points(name)
        zeta = pts["zeta"].to_numpy()
        assert np.all(np.diff(pts["value"]) > 0)
        assert np.all(np.diff(zeta) > 0), name  # monotone profile
        assert np.any(pts["value"] == pr.estimates[name]) and zeta[pts["value"] == pr.estimates[name]] == 0
        # lme4's grid: out to the cutoff sqrt(qchisq(0.99, 5)) on both sides
        # (or the SD's bound 0)
        assert zeta.max() > 3.8838
        assert zeta.min() < -3.8838 or pts["value"].min() == 0


def test_cbpp_selection_and_readable_names(gm1):
    ci = gm1.confint(parm=["period2", "sd_(Intercept)|herd"], names="readable")
    assert list(ci.index) == ["sd_(Intercept)|herd", "period2"]
    assert_close(ci.to_numpy(), CBPP_R_95.loc[[".sig01", "period2"]].to_numpy(), rtol=RTOL,
                 what="selected cbpp CI")


def test_wald_still_available(gm1):
    ci = gm1.confint(method="Wald")
    assert ci.iloc[0].isna().all()
    se, est = gm1.se.to_numpy(), gm1.fixef.to_numpy()
    assert_close(ci["lower"].iloc[1:], est - 1.959963984540054 * se, rtol=1e-12, what="Wald")


# ---------------------------------------------------------------------------- grouseticks


# R: g <- grouseticks; g$sHEIGHT <- as.numeric(scale(g$HEIGHT))
#    gm <- glmer(TICKS ~ YEAR + sHEIGHT + (1 | BROOD), g, poisson)
#    print(confint(gm), digits = 15)
GROUSE_R = pd.DataFrame(
    {
        "lower": [0.801598099432462, 0.128306126157804, 0.663500203179622, -1.53769516780711,
                  -1.07598147570314],
        "upper": [1.13711727342921, 0.866920403025227, 1.62453077987532, -0.470210162584113,
                  -0.647292325761132],
    },
    index=[".sig01", "(Intercept)", "YEAR96", "YEAR97", "sHEIGHT"],
)


def test_grouseticks_poisson_matches_lme4(grouseticks):
    gm = _glmer("TICKS ~ YEAR + sHEIGHT + (1 | BROOD)", grouseticks, "poisson")
    ci = gm.confint()
    assert list(ci.index) == list(GROUSE_R.index)
    assert_close(ci.to_numpy(), GROUSE_R.to_numpy(), rtol=RTOL, what="grouseticks profile CI")


# R: gm <- glmer(TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | LOCATION), g, poisson)
#    print(confint(gm), digits = 15)
# (.sig02, the LOCATION SD, has its profile end at 0 before zeta reaches -1.96:
# its lower bound is the bound 0)
GROUSE2_R = pd.DataFrame(
    {
        "lower": [0.56880354616076, 0.0, 0.0744183840324377, 0.715340796052587,
                  -1.4868143973074, -1.10055458382605],
        "upper": [1.06698367084759, 0.916970760626306, 0.834398172826787, 1.62881857683637,
                  -0.475366788337364, -0.60023838148597],
    },
    index=[".sig01", ".sig02", "(Intercept)", "YEAR96", "YEAR97", "sHEIGHT"],
)


def test_grouseticks_two_terms_matches_lme4(grouseticks):
    gm = _glmer("TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | LOCATION)", grouseticks, "poisson")
    pr = profile(gm)
    ci = pr.confint()
    assert list(ci.index) == list(GROUSE2_R.index)
    assert ci.loc[".sig02", "lower"] == 0.0
    assert pr.points(".sig02")["value"].min() == 0.0  # the profile reached the bound
    assert_close(ci.to_numpy(), GROUSE2_R.to_numpy(), rtol=RTOL, what="grouseticks 2-term CI")


# ---------------------------------------------------------------------------- quadrature


def test_cbpp_agq_profile_matches_lme4(cbpp):
    # R: gm25 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
    #                  binomial, nAGQ = 25)
    #    print(confint(gm25, parm = c(1, 3)), digits = 15)   # .sig01, period2
    # (lme4's AGQ deviance lacks the saturated log-likelihood ours has: a
    # constant, which zeta does not see)
    gm25 = _glmer(CBPP, cbpp, "binomial", nagq=25)
    ci = gm25.confint(parm=[".sig01", "period2"])
    expected = np.array([[0.348801742668052, 1.11129746607699],
                         [-1.61608366037513, -0.406610820800073]])
    assert_close(ci.to_numpy(), expected, rtol=RTOL, what="cbpp nAGQ = 25 profile CI")


# ---------------------------------------------------------------------------- errors


def test_nagq0_fit_is_refused(cbpp):
    g0 = _glmer(CBPP, cbpp, "binomial", nagq=0)
    with pytest.raises(MixedModelsError, match="nagq = 0"):
        g0.confint()
    with pytest.raises(MixedModelsError, match="nagq = 0"):
        profile(g0)


def test_family_with_scale_is_refused(grouseticks):
    d = grouseticks.assign(y=grouseticks["TICKS"] + 1.0)
    g = _glmer("y ~ sHEIGHT + (1 | BROOD)", d, "gamma")
    with pytest.raises(MixedModelsError, match="scale parameter"):
        g.confint(method="profile")
    # the other methods still work
    assert g.confint(method="Wald").shape[1] == 2
