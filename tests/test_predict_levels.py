"""Factors met again in new data: their values are matched to the fitted levels
by one rule (``spec.levels.match_levels``, R's ``factor(new, levels = fitted)``:
values compare as text, numbers written as R writes them), for fixed factors
(formulaic's and the simple spec's) and grouping factors alike. A value of
another type that names a fitted level is that level; one that names none is
an error naming it, never NaN dummies or a silent population prediction."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.exceptions import PredictionError


@pytest.fixture(scope="module")
def factor_days(sleep):
    return mm.lmer("Reaction ~ factor(Days) + (1|Subject)", sleep)


@pytest.fixture(scope="module")
def cbpp_fit():
    cbpp = mm.datasets.load("cbpp")
    return mm.glmer("cbind(incidence, size - incidence) ~ period + (1|herd)", cbpp, family="binomial")


def _predict_quietly(model, newdata, **kwargs):
    """Predictions, with any warning an error (formulaic's cast-to-NaN warning was
    the only sign of the wrong answer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return model.predict(newdata, **kwargs).to_numpy()


def test_factor_of_integers_predicted_from_strings(factor_days):
    typed = pd.DataFrame({"Days": [0, 1, 2, 9], "Subject": ["308"] * 4})
    text = typed.assign(Days=["0", "1", "2", "9"])
    floats = typed.assign(Days=[0.0, 1.0, 2.0, 9.0])
    want = _predict_quietly(factor_days, typed, re_form="~0")
    assert len(set(want)) == 4  # four different levels, not the reference four times
    np.testing.assert_array_equal(_predict_quietly(factor_days, text, re_form="~0"), want)
    np.testing.assert_array_equal(_predict_quietly(factor_days, floats, re_form="~0"), want)
    np.testing.assert_array_equal(
        _predict_quietly(factor_days, text), _predict_quietly(factor_days, typed)
    )


def test_factor_of_integers_refuses_an_unseen_level(factor_days):
    for bad in (["0", "12"], ["0", "x"], [0, 1.5]):
        newdata = pd.DataFrame({"Days": bad, "Subject": ["308"] * 2})
        with pytest.raises(PredictionError, match=r"'Days'.*\[.(12|x|1\.5).\].*not seen"):
            factor_days.predict(newdata, re_form="~0")


def test_missing_factor_value_gives_a_missing_prediction(factor_days):
    newdata = pd.DataFrame({"Days": ["1", None], "Subject": ["308"] * 2})
    got = factor_days.predict(newdata, re_form="~0").to_numpy()
    assert np.isfinite(got[0]) and np.isnan(got[1])


def test_categorical_of_text_predicted_from_integers(cbpp_fit):
    text = pd.DataFrame({"period": ["1", "2", "4"], "herd": ["1", "1", "3"]})
    want = _predict_quietly(cbpp_fit, text)
    assert len(set(want)) == 3
    for other in (
        text.assign(period=[1, 2, 4]),
        text.assign(period=[1.0, 2.0, 4.0]),
        text.assign(period=[1, 2, 4], herd=[1, 1, 3]),
    ):
        np.testing.assert_array_equal(_predict_quietly(cbpp_fit, other), want)
    with pytest.raises(PredictionError, match=r"'period'.*\['5'\].*not seen"):
        cbpp_fit.predict(text.assign(period=[1, 2, 5]))


def test_simple_spec_factor_of_text_predicted_from_numbers(sleep):
    data = sleep.assign(Half=np.where(sleep["Days"] < 5, "0", "1"))
    fit = mm.lmer("Reaction ~ Half + Days + (1|Subject)", data)
    text = pd.DataFrame({"Half": ["0", "1"], "Days": [3, 7], "Subject": ["308", "308"]})
    want = _predict_quietly(fit, text)
    np.testing.assert_array_equal(_predict_quietly(fit, text.assign(Half=[0, 1])), want)
    with pytest.raises(PredictionError, match=r"'Half'.*\['2'\].*not seen"):
        fit.predict(text.assign(Half=[0, 2]))


def test_grouping_factor_of_text_predicted_from_floats(sleep):
    """A float 308.0 (an integer column after a merge with missing values) is
    subject "308", not an unseen level predicted at the population mean."""
    fit = mm.lmer("Reaction ~ Days + (Days|Subject)", sleep)
    text = pd.DataFrame({"Days": [1, 5], "Subject": ["308", "372"]})
    want = _predict_quietly(fit, text, new_levels="error")
    for other in ([308, 372], [308.0, 372.0]):
        got = _predict_quietly(fit, text.assign(Subject=other), new_levels="error")
        np.testing.assert_array_equal(got, want)
    with pytest.raises(PredictionError, match=r"\['999'\].*'Subject'"):
        fit.predict(text.assign(Subject=[308, 999]), new_levels="error")


def test_grouping_factor_of_integers_predicted_from_text(sleep):
    data = sleep.assign(Subject=sleep["Subject"].astype(int))
    fit = mm.lmer("Reaction ~ Days + (1|Subject)", data)
    ints = pd.DataFrame({"Days": [1, 5], "Subject": [308, 372]})
    want = _predict_quietly(fit, ints, new_levels="error")
    for other in (["308", "372"], [308.0, 372.0]):
        got = _predict_quietly(fit, ints.assign(Subject=other), new_levels="error")
        np.testing.assert_array_equal(got, want)
    interval = fit.predict(ints.assign(Subject=["308", "372"]), interval="prediction")
    np.testing.assert_array_equal(
        interval.to_numpy(), fit.predict(ints, interval="prediction").to_numpy()
    )


def test_newdata_with_a_repeated_used_column(sleep, factor_days):
    """It was "could not broadcast input array from shape (3,1,2)"."""
    fit = mm.lmer("Reaction ~ Days + (1|Subject)", sleep)
    newdata = pd.concat([sleep.head(3), sleep.head(3)[["Days"]]], axis=1)
    for model in (fit, factor_days):
        with pytest.raises(PredictionError, match="newdata column 'Days' appears 2 times"):
            model.predict(newdata)
        with pytest.raises(PredictionError, match="newdata column 'Days' appears 2 times"):
            model.predict(newdata, interval="confidence")
    unused = pd.concat([sleep.head(3), sleep.head(3)[["Reaction"]]], axis=1)  # not used by predict
    np.testing.assert_array_equal(
        _predict_quietly(fit, unused), _predict_quietly(fit, sleep.head(3))
    )
