"""Confidence intervals (Wald, profile) and refit of lmer fits against lme4.

Profile bounds come from lme4's grid and spline interpolation (reproduced in
mixedmodels.inference.profile); the tolerance 1e-4 relative is ten times
tighter than required: ours agree with lme4 1.1-31 to about 1e-6.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import assert_close, load_case
from mixedmodels.exceptions import DataError, MixedModelsError, SingularFitWarning
from mixedmodels.inference.parameters import parameter_names
from mixedmodels.inference.profile_result import back_spline
from mixedmodels.models.lmm import engine as lmm_engine

SLEEP = "Reaction ~ Days + (Days | Subject)"



@pytest.fixture(scope="module")
def fm1(sleep):
    return mm.lmer(SLEEP, sleep)


def _ci_rows(case_rows):
    terms = [r["term"] for r in case_rows]
    values = np.array(
        [[np.nan if r["lower"] is None else r["lower"], np.nan if r["upper"] is None else r["upper"]]
         for r in case_rows]
    )
    return terms, values


# ---------------------------------------------------------------------------- Wald


def test_wald_matches_lme4_reference(fm1):
    case = load_case("lmer_sleepstudy_reml")
    terms, expected = _ci_rows(case["wald_ci"])
    ci = fm1.confint(method="Wald")
    assert list(ci.index) == terms
    assert list(ci.columns) == ["lower", "upper"]
    assert ci.index.name == "parameter"
    assert ci.iloc[:4].isna().all().all()  # variance parameters: NaN, as lme4
    # R stopped a little short of the optimum (optimum_check): se differs by ~1e-6
    assert_close(ci.to_numpy(), expected, rtol=1e-6, what="Wald CI")


def test_wald_level_and_selection(fm1):
    ci = fm1.confint(method="wald", level=0.9, parm="beta_")
    z = 1.6448536269514722
    se, est = fm1.se.to_numpy(), fm1.fixef.to_numpy()
    assert list(ci.index) == ["(Intercept)", "Days"]
    assert_close(ci["lower"], est - z * se, rtol=1e-12, what="lower")
    assert_close(ci["upper"], est + z * se, rtol=1e-12, what="upper")
    assert ci.attrs["level"] == 0.9


def test_readable_names(fm1):
    assert parameter_names(fm1, "readable") == [
        "sd_(Intercept)|Subject",
        "cor_Days.(Intercept)|Subject",
        "sd_Days|Subject",
        "sigma",
        "(Intercept)",
        "Days",
    ]
    ci = fm1.confint(method="wald", names="readable", parm=["Days", ".sig02"])
    assert list(ci.index) == ["cor_Days.(Intercept)|Subject", "Days"]


def test_bad_arguments_raise(fm1):
    with pytest.raises(MixedModelsError, match="unknown parameter"):
        fm1.confint(method="wald", parm="Nope")
    with pytest.raises(MixedModelsError, match="method"):
        fm1.confint(method="bayes")
    with pytest.raises(MixedModelsError, match="level"):
        fm1.confint(method="wald", level=95)


# ---------------------------------------------------------------------------- profile


@pytest.fixture(scope="module")
def prof1(fm1):
    return fm1.profile()


def test_profile_matches_lme4_reference(prof1):
    case = load_case("lmer_sleepstudy_reml")
    terms, expected = _ci_rows(case["profile_ci"])
    ci = prof1.confint()
    assert list(ci.index) == terms
    assert_close(ci.to_numpy(), expected, rtol=1e-4, what="profile CI (sleepstudy REML)")


def test_profile_table_layout(prof1, fm1):
    table = prof1.table
    assert list(table.columns[:3]) == ["parameter", "value", "zeta"]
    assert list(table.columns[3:]) == parameter_names(fm1)
    # lme4 1.1-31 evaluates 21, 19, 20, 19, 19, 19 points:
    # table(profile(lmer(Reaction ~ Days + (Days | Subject), sleepstudy))$.par)
    counts = table.groupby("parameter", sort=False).size()
    assert counts.to_dict() == {
        ".sig01": 21, ".sig02": 19, ".sig03": 20, ".sigma": 19, "(Intercept)": 19, "Days": 19
    }
    for name in prof1.parameters:
        pts = prof1.points(name)
        assert np.all(np.diff(pts["value"]) > 0)
        assert np.all(np.diff(pts["zeta"]) > 0)  # a regular profile is increasing
        at_zero = pts[pts["zeta"] == 0]["value"]
        assert_close(at_zero, [prof1.estimates[name]], rtol=1e-12, what=f"{name} at zeta 0")
    # the profiled parameter's own column equals "value"
    rows = table[table["parameter"] == "Days"]
    assert_close(rows["Days"], rows["value"], rtol=0, what="Days column")


def test_profile_other_level(prof1):
    # R: fm1 <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
    #    confint(profile(fm1), level = 0.8)   # lme4 1.1-31
    ci = prof1.confint(level=0.8, parm=[".sigma", "Days", ".sig02"])
    assert list(ci.index) == [".sig02", ".sigma", "Days"]
    expected = np.array([
        [-0.309158761664015, 0.488492813434652],
        [23.774422492705426, 27.653117273586982],
        [8.497335220707367, 12.437236706766248],
    ])
    assert_close(ci.to_numpy(), expected, rtol=1e-4, what="80% profile CI")


# R: library(lme4)
#    fm <- lmer(Reaction ~ Days + (Days|Subject), sleepstudy, REML = FALSE); confint(fm)
#    confint(lmer(Yield ~ 1 + (1|Batch), Dyestuff))
#    confint(lmer(diameter ~ 1 + (1|plate) + (1|sample), Penicillin))
#    confint(lmer(Yield ~ 1 + (1|Batch), Dyestuff2))          # singular fit
#    confint(lmer(strength ~ 1 + (1 | batch/cask), Pastes))
#    confint(lmer(Reaction ~ Days + (Days||Subject), sleepstudy))
R_PROFILE = {
    "ml": (
        "sleepstudy", SLEEP, False,
        [[14.381434353822927, 37.716012146423402], [-0.481500444282952, 0.684986206248892],
         [3.801164737738647, 8.753366735391655], [22.898266215012615, 28.857997322745934],
         [237.680695469372694, 265.129514691758288], [7.358653295307233, 13.575918741498098]],
    ),
    "dyestuff": (
        "Dyestuff", "Yield ~ 1 + (1|Batch)", True,
        [[12.198535213114, 84.0630467107707], [38.229984882571, 67.6576962448221],
         [1486.451499968833, 1568.5484943681231]],
    ),
    "penicillin": (
        "Penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", True,
        [[0.633565966937209, 1.18210399143218], [1.095789188180464, 3.55629163683995],
         [0.485845400184026, 0.62945347845447], [21.266627383623696, 24.67781761617379]],
    ),
    "dyestuff2_singular": (
        "Dyestuff2", "Yield ~ 1 + (1|Batch)", True,
        [[0.0, 2.08404348901022], [2.89283102010220, 4.81583255245072],
         [4.31210021673831, 7.01909234683741]],
    ),
    "pastes_nested": (
        "Pastes", "strength ~ 1 + (1 | batch/cask)", True,
        [[2.157933708229311, 4.05358894410538], [0.0, 2.94659109690393],
         [0.652023359343391, 1.08544810372768], [58.663650378658105, 61.44301636842368]],
    ),
    "zerocorr": (
        "sleepstudy", "Reaction ~ Days + (Days || Subject)", True,
        [[15.25864667770453, 37.78647090039916], [3.96407385583658, 8.76915916200372],
         [22.88055464832789, 28.78759759458461], [237.57214801075611, 265.23806175886705],
         [7.33406682884986, 13.60050510661767]],
    ),
}


@pytest.mark.parametrize("key", sorted(R_PROFILE))
def test_profile_matches_lme4(key):
    data, formula, reml, expected = R_PROFILE[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        m = mm.lmer(formula, mm.datasets.load(data), reml=reml)
    ci = m.confint()  # method = "profile" by default, as lme4
    assert_close(ci.to_numpy(), np.array(expected), rtol=1e-4, atol=1e-9, what=f"profile CI {key}")


def test_profile_weighted_fit():
    # R: ss <- sleepstudy; ss$w <- seq(0.5, 2, length.out = nrow(ss))
    #    confint(lmer(Reaction ~ Days + (1|Subject), ss, weights = w))
    # lme4 1.1-31 gives .sig01 [25.4715481840675, 52.6494743944997] and .sigma
    # [29.0039796614963, 36.0887598155156], but for the fixed effects it warns
    # "non-monotonic profile" and returns [248.909, 250.492] and [11.043, 11.101]:
    # its fixed-effect profile moves β_j x_j into an unweighted offset of a
    # weighted fit. Ours profiles the weighted model, whose intervals are close
    # to the Wald ones, as for unweighted fits.
    d = mm.datasets.load("sleepstudy").copy()
    d["w"] = np.linspace(0.5, 2.0, len(d))
    m = mm.lmer("Reaction ~ Days + (1|Subject)", d, weights="w")
    ci = m.confint()
    assert_close(ci.iloc[:2].to_numpy(),
                 [[25.4715481840675, 52.6494743944997], [29.0039796614963, 36.0887598155156]],
                 rtol=1e-4, what="weighted variance parameters")
    wald = m.confint(method="wald")
    assert_close(ci.iloc[2:].to_numpy(), wald.iloc[2:].to_numpy(), rtol=2e-3,
                 what="weighted fixed effects near Wald")
    prof = m.profile(which="beta_")
    for name in prof.parameters:
        assert np.all(np.diff(prof.points(name)["zeta"]) > 0)


def test_profile_which_and_names(fm1):
    pr = fm1.profile(which=["Days", ".sigma"], names="readable")
    assert pr.parameters == ["sigma", "Days"]
    ci = pr.confint()
    case = load_case("lmer_sleepstudy_reml")
    _, expected = _ci_rows(case["profile_ci"])
    assert_close(ci.to_numpy(), expected[[3, 5]], rtol=1e-4, what="selected profile CI")


def test_profile_rejects_nagq0_glmer():
    # glmer profiles are tests/test_confint_glmer.py; the nAGQ = 0 fit has no Laplace deviance to profile
    d = mm.datasets.load("cbpp")
    g = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial", nagq=0)
    from mixedmodels.inference.profile import profile

    with pytest.raises(MixedModelsError, match="nagq"):
        profile(g)


def test_back_spline_matches_r():
    # R: library(splines); x <- c(0,0.5,1.2,2,3.1,4); z <- c(-2.4,-1.5,-0.6,0.2,1.3,2.2)
    #    predict(backSpline(interpSpline(x, z)), c(-2.3, -qnorm(.975), -0.1, qnorm(.975), 2.25))$y
    b = back_spline(np.array([0, 0.5, 1.2, 2, 3.1, 4]), np.array([-2.4, -1.5, -0.6, 0.2, 1.3, 2.2]))
    got = b(np.array([-2.3, -1.959963984540054, -0.1, 1.959963984540054, 2.25]))
    expected = [0.0555555555555556, 0.2444644530333033, 1.6924769157783550, 3.7589348862848349, np.nan]
    assert_close(got, expected, rtol=1e-12, what="backSpline")


def test_profile_plot_needs_matplotlib_only_when_called(prof1):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = prof1.plot(parameters=[".sig01", "Days"])
    assert len([a for a in fig.axes if a.get_visible()]) == 2


# ---------------------------------------------------------------------------- refit


def test_refit_same_response_reproduces_fit(fm1):
    r = fm1.refit(fm1.frame.y)
    assert r is not fm1
    assert_close(r.theta, fm1.theta, rtol=1e-6, atol=1e-7, what="theta")
    assert_close(r.fixef, fm1.fixef, rtol=1e-9, what="fixef")
    assert_close(r.sigma, fm1.sigma, rtol=1e-8, what="sigma")
    assert_close(r.reml_criterion, fm1.reml_criterion, rtol=1e-12, what="REML criterion")
    again = fm1.refit(None)  # lme4's refit(object): the same response
    assert_close(again.reml_criterion, fm1.reml_criterion, rtol=1e-12, what="refit(None)")


@pytest.mark.parametrize("dense_limit", [lmm_engine.DENSE_LIMIT, 0])
@pytest.mark.parametrize("reml", [True, False])
def test_refit_equals_fresh_fit(sleep, monkeypatch, dense_limit, reml):
    # dense_limit 0 forces the blocked system (large models), whose response
    # row and column are replaced in place of the dense one's
    monkeypatch.setattr(lmm_engine, "DENSE_LIMIT", dense_limit)
    m = mm.lmer(SLEEP, sleep, reml=reml)
    y = np.asarray(m.simulate(seed=11).iloc[:, 0])
    before = (m.theta.copy(), m.fixef.copy(), m.sigma, m.frame.y.copy())
    r = m.refit(y)
    fresh = mm.lmer(SLEEP, sleep.assign(Reaction=y), reml=reml)
    # both stop within the optimizers' tolerance of the same optimum
    assert r.loglik >= fresh.loglik - 1e-9
    assert_close(r.loglik, fresh.loglik, rtol=1e-10, what="loglik")
    assert_close(r.theta, fresh.theta, rtol=1e-5, atol=1e-6, what="theta")
    assert_close(r.fixef, fresh.fixef, rtol=1e-6, what="fixef")
    assert_close(r.sigma, fresh.sigma, rtol=1e-6, what="sigma")
    V = fresh.vcov.to_numpy()
    assert_close(r.vcov, V, atol=1e-5 * np.abs(V).max(), what="vcov")
    assert_close(r.fitted, fresh.fitted, rtol=1e-6, what="fitted")
    # the original is untouched
    assert_close(m.theta, before[0], rtol=0, what="original theta")
    assert_close(m.fixef, before[1], rtol=0, what="original fixef")
    assert m.sigma == before[2]
    assert np.array_equal(m.frame.y, before[3])


def test_refit_crossed_blocked_system(monkeypatch):
    # two crossed factors meeting in every pair: the blocked system keeps the
    # rows below the first term dense (DenseBelow), whose response column the
    # refit replaces too
    monkeypatch.setattr(lmm_engine, "DENSE_LIMIT", 0)
    d = mm.datasets.load("Penicillin")
    formula = "diameter ~ 1 + (1|plate) + (1|sample)"
    m = mm.lmer(formula, d)
    assert type(m.system._below).__name__ == "DenseBelow"
    y = np.asarray(m.simulate(seed=4).iloc[:, 0])
    r = m.refit(y)
    fresh = mm.lmer(formula, d.assign(diameter=y))
    assert_close(r.loglik, fresh.loglik, rtol=1e-10, what="loglik")
    assert_close(r.theta, fresh.theta, rtol=1e-4, what="theta")
    assert_close(r.fixef, fresh.fixef, rtol=1e-6, what="fixef")
    assert_close(m.refit(m.frame.y).loglik, m.loglik, rtol=1e-12, what="same response")


def test_refit_weights_offset_and_singular_start():
    d = mm.datasets.load("sleepstudy").copy()
    d["w"] = np.linspace(0.5, 2.0, len(d))
    d["off"] = 0.1 * d["Days"]
    m = mm.lmer("Reaction ~ Days + offset(off) + (1 | Subject)", d, weights="w")
    y = np.asarray(m.simulate(seed=3).iloc[:, 0])
    r = m.refit(y)
    fresh = mm.lmer("Reaction ~ Days + offset(off) + (1 | Subject)", d.assign(Reaction=y), weights="w")
    assert_close(r.theta, fresh.theta, rtol=1e-5, what="theta (weights, offset)")
    assert_close(r.fixef, fresh.fixef, rtol=1e-7, what="fixef (weights, offset)")
    # a singular fit (θ = 0) refitted to a response with a between-batch
    # variance must leave the boundary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        d2 = mm.datasets.load("Dyestuff2")
        s = mm.lmer("Yield ~ 1 + (1|Batch)", d2)
    assert s.theta.iloc[0] == 0
    batch_shift = pd.factorize(d2["Batch"])[0] * 2.0
    y2 = d2["Yield"].to_numpy() + batch_shift
    r2 = s.refit(y2)
    fresh2 = mm.lmer("Yield ~ 1 + (1|Batch)", d2.assign(Yield=y2))
    assert r2.theta.iloc[0] > 0.5
    assert_close(r2.theta, fresh2.theta, rtol=1e-5, what="theta after a singular start")


def test_refit_bad_response(fm1):
    with pytest.raises(DataError, match="one response value per row"):
        fm1.refit(np.ones(10))
    with pytest.raises(DataError, match="missing or infinite"):
        fm1.refit(np.r_[np.nan, np.ones(179)])
    with pytest.raises(DataError, match="not numeric"):
        fm1.refit(["a"] * 180)


def test_fast_gradient_equals_general():
    # the refit copies' evaluator against the general analytic gradient,
    # inside the parameter space and on its boundary
    for data, formula in [("sleepstudy", SLEEP), ("Penicillin", "diameter ~ 1 + (1|plate) + (1|sample)")]:
        for reml in (True, False):
            m = mm.lmer(formula, mm.datasets.load(data), reml=reml)
            c = m.clone(y=m.frame.y)
            assert c._fast is not None
            rng = np.random.default_rng(1)
            for theta in [m.theta_vector, np.abs(rng.normal(size=m.theta_vector.size)), np.where(m.theta_lower == 0, 0.0, 0.3)]:
                v1, g1 = m._objective_gradient(theta)
                v2, g2 = c.objective_gradient(theta)
                assert_close(v2, v1, rtol=1e-12, what="objective")
                assert_close(g2, g1, rtol=1e-8, atol=1e-8, what="gradient")


def test_generic_confint_for_glmer():
    # what glmer's confint delegates to: Wald (profile: tests/test_confint_glmer.py)
    from mixedmodels.inference.confint import confint

    d = mm.datasets.load("cbpp")
    g = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    ci = confint(g, method="Wald")
    assert list(ci.index) == [".sig01", "(Intercept)", "period2", "period3", "period4"]
    se, est = g.se.to_numpy(), g.fixef.to_numpy()
    assert_close(ci["upper"].iloc[1:], est + 1.959963984540054 * se, rtol=1e-12, what="glmer Wald")


def test_progress_texts():
    import io

    from mixedmodels.inference.bootstrap import BootProgress
    from mixedmodels.inference.profile import ProfileProgress

    clock = iter([0.0, 2.0, 2.5, 3.0, 3.5]).__next__
    stream = io.StringIO()
    p = ProfileProgress(6, stream=stream, clock=clock, notebook=False)
    p.index, p.current = 2, ".sig02"
    p(25, float("nan"))
    assert "profile: parameter 2 of 6 (.sig02), 25 points, 2.0 s" in stream.getvalue()
    stream = io.StringIO()
    b = BootProgress(1000, stream=stream, clock=iter([0.0, 1.5]).__next__, notebook=False)
    b(250, float("nan"))
    assert "bootstrap: 250 of 1000 replicates, 1.5 s" in stream.getvalue()
