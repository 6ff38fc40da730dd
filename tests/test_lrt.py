"""Likelihood-ratio tests (anova), information criteria (compare) and drop1
against lme4 1.1-31 (the reference JSON and literals computed with R 4.2.2)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import assert_close, load_case
from mixedmodels.exceptions import ModelSpecError, RefitWarning
from mixedmodels.inference.lrt import (
    drop_scope,
    fixed_term_labels,
    ml_fit,
    refit_fixed,
)

SLEEP_FULL = "Reaction ~ Days + (Days | Subject)"
SLEEP_INT = "Reaction ~ Days + (1 | Subject)"
SLEEP_ZC = "Reaction ~ Days + (Days || Subject)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
CBPP0 = "cbind(incidence, size - incidence) ~ 1 + (1 | herd)"


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def sleep() -> pd.DataFrame:
    d = mm.datasets.load("sleepstudy")
    d["g"] = np.where(d["Days"] >= 5, "late", "early")
    return d


@pytest.fixture(scope="module")
def sleep_reml(sleep):
    return {
        "int": mm.lmer(SLEEP_INT, sleep),
        "zc": mm.lmer(SLEEP_ZC, sleep),
        "full": mm.lmer(SLEEP_FULL, sleep),
    }


@pytest.fixture(scope="module")
def cbpp_fits():
    cb = mm.datasets.load("cbpp")
    return _quiet(mm.glmer, CBPP0, cb), _quiet(mm.glmer, CBPP, cb)


COLUMNS = {"AIC": "aic", "BIC": "bic", "logLik": "loglik", "deviance": "deviance"}


def _check_against_rows(table: pd.DataFrame, rows: list[dict]) -> None:
    assert list(table.index) == [r["term"] for r in rows]
    assert table["npar"].tolist() == [r["npar"] for r in rows]
    for r_key, key in COLUMNS.items():
        assert_close(table[key], [r[r_key] for r in rows], atol=1e-3, what=key)
    tested = table.iloc[1:]
    assert np.isnan(table["chisq"].iloc[0]) and np.isnan(table["p_value"].iloc[0])
    assert_close(tested["chisq"], [r["Chisq"] for r in rows[1:]], rtol=1e-3, what="chisq")
    assert_close(tested["df"], [r["Df"] for r in rows[1:]], what="df")
    assert_close(tested["p_value"], [r["p"] for r in rows[1:]], rtol=1e-3, what="p")


# ------------------------------------------------------------------------- anova


def test_anova_ml_fits_match_reference(sleep):
    case = load_case("lmer_sleepstudy_ml")
    m1 = mm.lmer(SLEEP_FULL, sleep, reml=False)
    m0 = mm.lmer(SLEEP_INT, sleep, reml=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RefitWarning)  # ML fits: no refit, no warning
        table = mm.anova(m0, m1)
    _check_against_rows(table, case["anova_lrt"]["rows"])
    assert list(table.columns) == [
        "npar", "aic", "bic", "loglik", "deviance", "chisq", "df", "p_value"
    ]


def test_anova_refits_reml_fits_by_ml_on_copies(sleep_reml):
    case = load_case("lmer_sleepstudy_ml")
    m0, m1 = sleep_reml["int"], sleep_reml["full"]
    before = [(m.reml, m.loglik, m.theta.to_numpy().copy()) for m in (m0, m1)]
    with pytest.warns(RefitWarning, match="refitting model"):
        table = mm.anova(m1, m0, names=["m1", "m0"])  # sorted by npar whatever the order
    _check_against_rows(table, case["anova_lrt"]["rows"])
    for m, (reml, loglik, theta) in zip((m0, m1), before):
        assert m.reml is reml is True
        assert m.loglik == loglik
        np.testing.assert_array_equal(m.theta.to_numpy(), theta)


def test_anova_three_models(sleep_reml):
    # R: anova(m0, m2, m1) with m0 = (1 | Subject), m2 = (Days || Subject),
    # m1 = (Days | Subject), all REML fits (refitted with ML by lme4)
    m = sleep_reml
    table = _quiet(mm.anova, m["int"], m["full"], m["zc"], names=["m0", "m1", "m2"])
    assert list(table.index) == ["m0", "m2", "m1"]
    assert table["npar"].tolist() == [4, 5, 6]
    assert_close(table["aic"], [1802.07864300523, 1762.00325513988, 1763.93934446321], atol=1e-3)
    assert_close(table["chisq"].iloc[1:], [42.0753878653429183, 0.0639106766734585], rtol=1e-3)
    assert_close(table["p_value"].iloc[1:], [8.78215848528891e-11, 8.00418431994874e-01], rtol=1e-3)


def test_anova_refit_false_uses_reml_loglik(sleep_reml):
    m0, m1 = sleep_reml["int"], sleep_reml["full"]
    table = mm.anova(m0, m1, refit=False)
    assert_close(table["loglik"], [m0.loglik, m1.loglik], rtol=1e-14)
    assert_close(table["chisq"].iloc[1], 2 * (m1.loglik - m0.loglik), rtol=1e-12)


def test_anova_glmer_laplace(cbpp_fits):
    # R: anova(g0, g1) for glmer(cbind(incidence, size - incidence) ~ 1 / period + (1 | herd), cbpp, binomial)
    g0, g1 = cbpp_fits
    rows = [
        {"term": "m0", "npar": 2, "AIC": 213.663070374976, "BIC": 217.713773756446,
         "logLik": -104.8315351874879, "deviance": 209.663070374976},
        {"term": "m1", "npar": 5, "AIC": 194.053132779061, "BIC": 204.179891232736,
         "logLik": -92.0265663895303, "deviance": 184.053132779061,
         "Chisq": 25.6099375959153, "Df": 3, "p": 1.15100648909655e-05},
    ]
    _check_against_rows(mm.anova(g0, g1), rows)


def test_anova_glmer_quadrature_chisq():
    # R (nAGQ = 25): Chisq 25.5510057753273 on 3 df, p 1.18415773142491e-05. The
    # log-likelihoods themselves differ from lme4's by the saturated constant
    # lme4 drops for quadrature fits (see mixedmodels.models.glmm.model), which cancels here.
    cb = mm.datasets.load("cbpp")
    a0 = _quiet(mm.glmer, CBPP0, cb, nagq=25)
    a1 = _quiet(mm.glmer, CBPP, cb, nagq=25)
    table = mm.anova(a0, a1)
    assert_close(table["chisq"].iloc[1], 25.5510057753273, rtol=1e-3)
    assert_close(table["p_value"].iloc[1], 1.18415773142491e-05, rtol=1e-3)


def test_anova_refuses_different_numbers_of_rows(sleep):
    m_all = mm.lmer(SLEEP_INT, sleep, reml=False)
    m_part = mm.lmer(SLEEP_INT, sleep.iloc[:170], reml=False)
    with pytest.raises(ModelSpecError, match=r"'small'.*170|170.*'small'"):
        mm.anova(m_all, m_part, names=["all", "small"])


def test_anova_refuses_different_rows_after_na_removal(sleep):
    d = sleep.copy()
    d["x"] = d["Days"] * 1.0
    d["w"] = d["Days"] * 2.0
    d.loc[0, "x"] = np.nan
    d.loc[1, "w"] = np.nan
    ma = _quiet(mm.lmer, "Reaction ~ Days + x + (1 | Subject)", d, reml=False)
    mb = _quiet(mm.lmer, "Reaction ~ Days + w + (1 | Subject)", d, reml=False)
    assert ma.nobs == mb.nobs == 179
    with pytest.raises(ModelSpecError, match="'ma' and 'mb'.*different rows"):
        mm.anova(ma, mb, names=["ma", "mb"])


def test_anova_refuses_different_responses(sleep):
    d = sleep.assign(logR=np.log(sleep["Reaction"]))
    ma = mm.lmer(SLEEP_INT, d, reml=False)
    mb = mm.lmer("logR ~ Days + (1 | Subject)", d, reml=False)
    with pytest.raises(ModelSpecError, match="different responses"):
        mm.anova(ma, mb)


def test_anova_bad_arguments(sleep_reml):
    m0, m1 = sleep_reml["int"], sleep_reml["full"]
    with pytest.raises(ModelSpecError, match="at least 2"):
        mm.anova(m0)
    with pytest.raises(ModelSpecError, match="3 names given for 2 models"):
        mm.anova(m0, m1, names=["a", "b", "c"])
    with pytest.raises(ModelSpecError, match="unique"):
        mm.anova(m0, m1, names=["a", "a"])
    with pytest.raises(ModelSpecError, match="'m1' is a DataFrame"):
        mm.anova(m0, pd.DataFrame())


# ------------------------------------------------------------------------- compare


def test_compare_criteria_and_weights(sleep):
    case = load_case("lmer_sleepstudy_ml")
    m0 = mm.lmer(SLEEP_INT, sleep, reml=False)
    m1 = mm.lmer(SLEEP_FULL, sleep, reml=False)
    table = mm.compare(m0, m1, names=["int", "slope"])
    rows = case["anova_lrt"]["rows"]
    assert_close(table["aic"], [r["AIC"] for r in rows], atol=1e-3)
    assert_close(table["bic"], [r["BIC"] for r in rows], atol=1e-3)
    k, n = np.array([4.0, 6.0]), 180
    # MuMIn::AICc: AIC + 2k(k + 1) / (n - k - 1)
    assert_close(table["aicc"], np.array([r["AIC"] for r in rows]) + 2 * k * (k + 1) / (n - k - 1),
                 atol=1e-3)
    for crit in ("aic", "aicc", "bic"):
        delta = table[f"delta_{crit}"]
        assert delta.min() == 0.0
        assert_close(delta, table[crit] - table[crit].min(), atol=1e-12)
        w = np.exp(-delta / 2)
        assert_close(table[f"weight_{crit}"], w / w.sum(), rtol=1e-12)
        assert math.isclose(table[f"weight_{crit}"].sum(), 1.0)
    assert table.index.tolist() == ["int", "slope"]


def test_compare_warns_for_reml_fits_with_different_fixed_effects(sleep):
    m0 = mm.lmer("Reaction ~ 1 + (1 | Subject)", sleep)
    m1 = mm.lmer(SLEEP_INT, sleep)
    with pytest.warns(mm.MixedModelsWarning, match="refit=True"):
        mm.compare(m0, m1)
    refitted = mm.compare(m0, m1, refit=True)
    ml = mm.lmer(SLEEP_INT, sleep, reml=False)
    assert_close(refitted["aic"].iloc[1], ml.aic, atol=1e-6)


# ------------------------------------------------------------------------- drop1


def test_drop_scope_respects_marginality():
    a, b, c = frozenset("a"), frozenset("b"), frozenset("c")
    terms = [("a", a), ("b", b), ("c", c), ("a:b", a | b)]
    assert drop_scope(terms) == ["c", "a:b"]
    assert drop_scope([("a", a), ("b", b)]) == ["a", "b"]


def test_drop1_interaction_only_term_in_scope(sleep):
    # R: drop1(lmer(Reaction ~ Days * g + (Days | Subject), s), test = "Chisq"),
    # s$g <- factor(ifelse(s$Days >= 5, "late", "early"))
    m = mm.lmer("Reaction ~ Days * g + (Days | Subject)", sleep)
    theta = m.theta.to_numpy().copy()
    table = m.drop1(test="Chisq")
    assert table.index.tolist() == ["<none>", "Days:g"]
    assert_close(table["aic"], [1766.38615567722, 1765.36752561977], atol=1e-3)
    assert_close(table["npar"].iloc[1:], [1.0])
    assert_close(table["lrt"].iloc[1:], [0.981369942549236], rtol=1e-3)
    assert_close(table["p_value"].iloc[1:], [0.321860823302212], rtol=1e-3)
    assert m.reml and np.array_equal(m.theta.to_numpy(), theta)  # untouched


def test_drop1_main_effects(sleep):
    # R: drop1(lmer(Reaction ~ Days + g + (Days | Subject), s), test = "Chisq")
    m = mm.lmer("Reaction ~ Days + g + (Days | Subject)", sleep)
    table = m.drop1("Chisq")
    assert table.index.tolist() == ["<none>", "Days", "g"]
    assert_close(table["aic"], [1765.36752561977, 1782.11782992618, 1763.93934446321], atol=1e-3)
    assert_close(table["lrt"].iloc[1:], [18.750304306413909, 0.571818843439587], rtol=1e-3)
    assert_close(table["p_value"].iloc[1:], [1.48999579943764e-05, 4.49537060369675e-01], rtol=1e-3)
    plain = m.drop1()
    assert list(plain.columns) == ["npar", "aic"]
    assert_close(plain["aic"], table["aic"], rtol=1e-10)


def test_drop1_glmer(cbpp_fits):
    # R: drop1(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial), test = "Chisq")
    _, g1 = cbpp_fits
    table = _quiet(g1.drop1, test="Chisq")
    assert table.index.tolist() == ["<none>", "period"]
    assert_close(table["npar"].iloc[1:], [3.0])
    assert_close(table["aic"], [194.053132779061, 213.663070374976], atol=1e-3)
    assert_close(table["lrt"].iloc[1:], [25.6099375959153], rtol=1e-3)
    assert_close(table["p_value"].iloc[1:], [1.15100648909655e-05], rtol=1e-3)


def test_drop1_keeps_weights_offset_and_contrasts(sleep):
    d = sleep.copy()
    rng = np.random.default_rng(3)
    d["w"] = rng.uniform(0.5, 2.0, len(d))
    d["off"] = rng.normal(0, 5, len(d))
    full = "Reaction ~ Days + g + offset(off) + (Days | Subject)"
    m = mm.lmer(full, d, weights="w", contrasts={"g": "contr.sum"})
    table = m.drop1()
    direct = mm.lmer("Reaction ~ g + offset(off) + (Days | Subject)", d, weights="w",
                     contrasts={"g": "contr.sum"}, reml=False)
    assert_close(table.loc["Days", "aic"], direct.aic, atol=1e-6)
    reduced = refit_fixed(m, ["g"], True)
    assert reduced.frame.fixed.names == ["(Intercept)", "g1"]  # sum coding kept
    np.testing.assert_allclose(reduced.frame.offset, m.frame.offset)
    np.testing.assert_allclose(reduced.frame.weights, m.frame.weights)


def test_fixed_term_labels(sleep):
    m = mm.lmer("Reaction ~ 0 + Days * g + (1 | Subject)", sleep)
    intercept, terms = fixed_term_labels(m)
    assert not intercept
    assert [t for t, _ in terms] == ["Days", "g", "Days:g"]


def test_drop1_bad_test(sleep_reml):
    with pytest.raises(ModelSpecError, match="test must be"):
        sleep_reml["int"].drop1(test="F")


def test_ml_refit_of_a_refitted_model(sleep_reml):
    # a model from m.refit() carries evaluators built for its criterion: the ML
    # copy must optimise the ML deviance all the same
    m = sleep_reml["full"]
    y = m.simulate(seed=5).iloc[:, 0].to_numpy()
    r = _quiet(m.refit, y)
    ml = ml_fit(r)
    direct = mm.lmer(SLEEP_FULL, m.frame.data.assign(Reaction=y), reml=False)
    assert r.reml and not ml.reml
    assert_close(ml.deviance, direct.deviance, atol=1e-6)
