"""Nakagawa R² and ICC against performance 0.10.2 / insight 0.19.0 (R 4.2.2,
lme4 1.1-31): the reference JSON and literals from

    r <- performance::r2_nakagawa(m); i <- performance::icc(m)
    c(r$R2_conditional, r$R2_marginal, i$ICC_adjusted, i$ICC_unadjusted)

for the models named in each case."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import mixedmodels as mm
from _reference import assert_close, load_case
from mixedmodels.exceptions import FamilyError, ModelSpecError, SingularFitWarning
from mixedmodels.inference.r2 import variance_components


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _values(model) -> list[float]:
    r, i = _quiet(mm.r2, model), _quiet(mm.icc, model)
    return [r["conditional"], r["marginal"], i["icc_adjusted"], i["icc_unadjusted"]]


def test_sleepstudy_reml_reference():
    case = load_case("lmer_sleepstudy_reml")
    m = mm.lmer(case["formula"], mm.datasets.load("sleepstudy"))
    r, i = mm.r2(m), mm.icc(m)
    assert list(r.index) == ["conditional", "marginal"]
    assert list(i.index) == ["icc_adjusted", "icc_unadjusted"]
    ref_r2, ref_icc = case["r2_nakagawa"], case["icc"]
    assert_close(r, [ref_r2["conditional"], ref_r2["marginal"]], rtol=1e-4, what="r2")
    assert_close(i, [ref_icc["ICC_adjusted"], ref_icc["ICC_unadjusted"]], rtol=1e-4, what="icc")


LMER_CASES = {
    # (formula, dataset, reml): R's (conditional, marginal, icc_adjusted, icc_unadjusted)
    "sleep_ml": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", False,
                 [0.792758573300399, 0.28761588940202, 0.709087522283953, 0.505142683898379]),
    "sleep_intercept": ("Reaction ~ Days + (1 | Subject)", "sleepstudy", True,
                        [0.704255452354521, 0.279885636748625, 0.589308917113987, 0.424369815605896]),
    "sleep_slope_only": ("Reaction ~ Days + (0 + Days | Subject)", "sleepstudy", True,
                         [0.741165787519802, 0.27940611883067, 0.640804315379171, 0.461759668689132]),
    "penicillin_crossed": ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", True,
                           [0.936339750388465, 0.0, 0.936339750388465, 0.936339750388465]),
    "pastes_nested": ("strength ~ 1 + (1 | batch/cask)", "Pastes", True,
                      [0.937041377030154, 0.0, 0.937041377030154, 0.937041377030154]),
}


@pytest.mark.parametrize("case", sorted(LMER_CASES))
def test_lmer_against_performance(case):
    formula, data, reml, expected = LMER_CASES[case]
    m = mm.lmer(formula, mm.datasets.load(data), reml=reml)
    assert_close(_values(m), expected, rtol=1e-4, atol=1e-12, what=case)


def test_uncorrelated_terms_count_every_term():
    # performance 0.10.2 gives 0.70157447800012 / 0.415027125750315 here: it keeps
    # only the first term of each grouping factor (VarCorr indexed by "Subject"
    # misses "Subject.1"). Every term counts here; R's pieces, from
    # v <- insight::get_variance(m), s = lme4::sleepstudy:
    # var.random = v$var.intercept + v$var.slope * mean(s$Days^2)
    m = mm.lmer("Reaction ~ Days + (Days || Subject)", mm.datasets.load("sleepstudy"))
    v = variance_components(m)
    assert_close(v[["var_fixed", "var_random", "var_residual"]],
                 [908.953362623099, 1649.5328705573, 653.583500654207], rtol=1e-4)
    assert_close(_values(m)[:3], [0.796522630324731, 0.28298058197447, 0.716217769616911],
                 rtol=1e-4)


CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.mark.parametrize(
    "link, expected",
    [
        ("logit", [0.187213542538988, 0.0853631687142505, 0.111356081824916, 0.101850373824738]),
        ("probit", [0.171155562650233, 0.076471027813744, 0.102524704354801, 0.0946845348364892]),
        ("cloglog", [0.281900148618563, 0.131618033352624, 0.173059921829266, 0.150282115265939]),
    ],
)
def test_glmer_binomial_links(link, expected):
    # R: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial(link))
    m = _quiet(mm.glmer, CBPP, mm.datasets.load("cbpp"), link=link)
    assert_close(_values(m), expected, rtol=1e-4, what=link)


def test_glmer_observation_level_effect_is_dispersion():
    # R: cbpp$obs <- factor(seq_len(nrow(cbpp)));
    # glmer(cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs), cbpp, binomial)
    cb = mm.datasets.load("cbpp")
    cb["obs"] = [str(i) for i in range(len(cb))]
    m = _quiet(mm.glmer, CBPP + " + (1 | obs)", cb)
    v = variance_components(m)
    assert_close(v["var_distribution"], math.pi**2 / 3, rtol=1e-15)
    assert_close(v[["var_fixed", "var_random", "var_dispersion"]],
                 [0.4853853592651037, 0.0338399101640077, 0.7940045278268884], rtol=1e-3)
    assert_close(_values(m), [0.112799092528035, 0.105447541318042, 0.00821813314428132,
                              0.00735155120999254], rtol=1e-3)


GROUSE = "TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | LOCATION)"


def test_glmer_poisson_log_lognormal():
    # R: glmer(TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | LOCATION), grouseticks, poisson);
    # the null model TICKS ~ (1 | BROOD) + (1 | LOCATION) has intercept 0.526081688819753
    m = _quiet(mm.glmer, GROUSE, mm.datasets.load("grouseticks"), family="poisson")
    with pytest.warns(mm.MixedModelsWarning, match="mu of 1.7 is too close to zero"):
        v = variance_components(m)
    assert_close(v["var_distribution"], math.log1p(math.exp(-0.526081688819753)), rtol=1e-4)
    assert_close(_values(m), [0.851007608426732, 0.555148318126632, 0.665074006361336,
                              0.295859290300099], rtol=1e-4)


def test_glmer_poisson_sqrt():
    m = _quiet(mm.glmer, GROUSE, mm.datasets.load("grouseticks"), family="poisson", link="sqrt")
    assert variance_components(m)["var_distribution"] == 0.25
    assert_close(_values(m), [0.91358923656356, 0.455497381914637, 0.841303309540941,
                              0.458091854648923], rtol=1e-4)


def test_glmer_gamma_log():
    # R: glmer(Reaction ~ Days + (1 | Subject), sleepstudy, Gamma(link = "log"))
    # (R's fit warns max|grad| 0.0022; sigma 0.10540814019902)
    m = _quiet(mm.glmer, "Reaction ~ Days + (1 | Subject)", mm.datasets.load("sleepstudy"),
               family="Gamma", link="log")
    v = variance_components(m)
    assert_close(v["var_distribution"], m.sigma**2, rtol=1e-15)
    assert_close(_values(m), [0.578510256281366, 0.359723904458505, 0.341706262886213,
                              0.21878635182286], rtol=1e-4)


def test_singular_fit_has_no_random_variance():
    # R: performance gives Conditional R2 NA, Marginal R2 0 and ICC NA for Dyestuff2
    m = _quiet(mm.lmer, "Yield ~ 1 + (1 | Batch)", mm.datasets.load("Dyestuff2"))
    with pytest.warns(SingularFitWarning, match="cannot compute"):
        r = mm.r2(m)
    assert np.isnan(r["conditional"]) and abs(r["marginal"]) < 1e-20
    with pytest.warns(SingularFitWarning):
        i = mm.icc(m)
    assert i.isna().all()


def test_decomposition_identities():
    m = mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
    v = variance_components(m)
    f, r, e = v["var_fixed"], v["var_random"], v["var_residual"]
    assert v["var_residual"] == v["var_distribution"] == pytest.approx(m.sigma**2, rel=1e-14)
    assert f == pytest.approx(np.var(m.frame.fixed.X @ m.beta, ddof=1), rel=1e-14)
    assert mm.r2(m)["conditional"] == pytest.approx((f + r) / (f + r + e), rel=1e-14)
    assert mm.icc(m)["icc_adjusted"] == pytest.approx(r / (r + e), rel=1e-14)
    # Johnson's random-slope variance: mean over rows of x_i' Σ x_i
    S = m.covariances()[0]
    X = m.frame.fixed.X
    assert r == pytest.approx(np.mean(np.einsum("ij,jk,ik->i", X, S, X)), rel=1e-12)


def test_bad_inputs():
    with pytest.raises(ModelSpecError, match="fitted lmer or glmer model"):
        mm.r2("not a model")
    m = _quiet(mm.glmer, CBPP, mm.datasets.load("cbpp"), link="cauchit")
    with pytest.raises(FamilyError, match="cauchit"):
        mm.r2(m)
