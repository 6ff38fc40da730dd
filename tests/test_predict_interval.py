"""Confidence and prediction intervals of lmer predictions, against the
variance components computed directly from the model's vcov, VarCorr,
conditional variances and sigma."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import assert_close, load_case
from mixedmodels.exceptions import PredictionError
from mixedmodels.inference.prediction import prediction_variance

Z975 = 1.959963984540054


@pytest.fixture(scope="module")
def fm1():
    return mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))


@pytest.fixture(scope="module")
def new():
    # a seen subject twice, then an unseen one
    return pd.DataFrame({"Days": [0.0, 5.0, 3.0], "Subject": ["308", "308", "NEW"]})


def _x(days):
    return np.column_stack([np.ones(len(days)), days])


def test_none_is_the_plain_prediction(fm1, new):
    plain = fm1.predict(new)
    assert isinstance(plain, pd.Series)
    out = fm1.predict(new, interval="confidence")
    assert list(out.columns) == ["fit", "lower", "upper"]
    assert_close(out["fit"], plain, rtol=0, what="fit")
    case = load_case("lmer_sleepstudy_reml")  # the fit column is lme4's predict()
    pn = case["predict_newdata"]
    rows = pd.DataFrame(pn["rows"])
    got = fm1.predict(rows, re_form="~0", interval="prediction")["fit"]
    assert_close(got, pn["re_form_NA"], rtol=1e-6, what="population fit vs lme4")


def test_confidence_is_fixed_effects_only(fm1, new):
    V = fm1.vcov.to_numpy()
    X = _x(new["Days"].to_numpy())
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, V, X))
    for re_form in (None, "~0"):
        out = fm1.predict(new, re_form=re_form, interval="confidence")
        assert_close(out["upper"] - out["fit"], Z975 * se, rtol=1e-12, what=f"half width {re_form}")
        assert_close(out["fit"] - out["lower"], Z975 * se, rtol=1e-12, what=f"half width {re_form}")
    assert "x'V_beta x" in out.attrs["components"]
    assert "residual" not in out.attrs["components"]
    assert out.attrs["interval"] == "confidence" and out.attrs["level"] == 0.95


def test_population_prediction_adds_new_group_and_residual(fm1, new):
    V = fm1.vcov.to_numpy()
    X = _x(new["Days"].to_numpy())
    Sigma = np.array([[fm1.varcorr.vcov[0], fm1.varcorr.vcov[2]],
                      [fm1.varcorr.vcov[2], fm1.varcorr.vcov[1]]])
    var = np.einsum("ij,jk,ik->i", X, V, X) + np.einsum("ij,jk,ik->i", X, Sigma, X) + fm1.sigma**2
    out = fm1.predict(new.drop(columns="Subject"), re_form="~0", interval="prediction", level=0.9)
    z = 1.6448536269514722
    assert_close(out["upper"] - out["fit"], z * np.sqrt(var), rtol=1e-12, what="population PI")
    assert "residual" in out.attrs["components"]
    assert out.attrs["re_form"].startswith("none")


def test_conditional_prediction_uses_postvar_for_seen_levels(fm1, new):
    V = fm1.vcov.to_numpy()
    X = _x(new["Days"].to_numpy())
    cond = fm1.ranef_condvar()["Subject"]
    level = list(fm1.ranef["Subject"].index).index("308")
    C = cond[level]
    Sigma = np.array([[fm1.varcorr.vcov[0], fm1.varcorr.vcov[2]],
                      [fm1.varcorr.vcov[2], fm1.varcorr.vcov[1]]])
    fixed = np.einsum("ij,jk,ik->i", X, V, X)
    random = np.array([X[0] @ C @ X[0], X[1] @ C @ X[1], X[2] @ Sigma @ X[2]])
    var = fixed + random + fm1.sigma**2
    out = fm1.predict(new, interval="prediction")
    assert_close(out["upper"] - out["fit"], Z975 * np.sqrt(var), rtol=1e-12, what="conditional PI")
    parts = prediction_variance(fm1, new)
    assert list(parts.columns) == ["fixed", "random", "residual"]
    assert_close(parts["random"], random, rtol=1e-12, what="random component")
    # the unseen level gets NaN with new_levels="nan" and an error with "error"
    nan = fm1.predict(new, interval="prediction", new_levels="nan")
    assert nan.iloc[2].isna().all() and nan.iloc[:2].notna().all().all()
    with pytest.raises(PredictionError):
        fm1.predict(new, interval="prediction", new_levels="error")


def test_fitted_rows_and_weights():
    d = mm.datasets.load("sleepstudy").copy()
    d["w"] = np.linspace(0.5, 2.0, len(d))
    m = mm.lmer("Reaction ~ Days + (1 | Subject)", d, weights="w")
    out = m.predict(interval="prediction")
    assert_close(out["fit"], m.fitted, rtol=0, what="fit")
    parts = prediction_variance(m)
    assert_close(parts["residual"], m.sigma**2 / d["w"].to_numpy(), rtol=1e-12, what="sigma^2 / w")
    assert_close(out["upper"] - out["fit"], Z975 * np.sqrt(parts.sum(axis=1)), rtol=1e-12, what="width")


def test_bad_interval(fm1):
    with pytest.raises(PredictionError, match="interval"):
        fm1.predict(interval="credible")
    with pytest.raises(PredictionError, match="level"):
        fm1.predict(interval="confidence", level=1.5)
