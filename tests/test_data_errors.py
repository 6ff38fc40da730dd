"""Data the formula cannot use as given: values its transforms make non-finite
(NaN rows are dropped and counted as missing rows are, infinite values are an
error naming the term), and inputs that used to end in a raw NumPy or pandas
exception (repeated column names, mixed-type grouping columns, dates and
durations as covariates, a constant response, Dask partitions that disagree).

Each case runs through the numpy path and the general pandas path of
``build_model_frame`` (``spec.frame.FAST_PATH``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.exceptions import DataError, MissingDataWarning
from mixedmodels.spec import frame as spec_frame


@pytest.fixture(scope="module")
def dated(sleep):
    days = pd.to_timedelta(sleep["Days"], unit="D")
    return sleep.assign(elapsed=days, date=pd.Timestamp("2024-03-01") + days)


@pytest.fixture(params=[True, False], ids=["numpy_path", "pandas_path"])
def fast_path(request, monkeypatch):
    monkeypatch.setattr(spec_frame, "FAST_PATH", request.param)
    return request.param


def _dropped_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, MissingDataWarning)]


def assert_same_fit(got, want):
    """The same model on the same rows: the same numbers."""
    assert got.nobs == want.nobs
    np.testing.assert_allclose(got.fixef, want.fixef, rtol=1e-12)
    np.testing.assert_allclose(got.theta, want.theta, rtol=1e-10, atol=1e-12)
    assert got.loglik == pytest.approx(want.loglik, rel=1e-12)


# ----------------------------------------------------------- non-finite values


def test_nan_response_rows_are_dropped_and_counted(sleep, fast_path):
    """log(Reaction - 300) is NaN where Reaction <= 300: those rows go, as R's
    na.omit drops them from the model frame (it was a fit of NaN estimates)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit = mm.lmer("log(Reaction - 300) ~ Days + (1|Subject)", sleep)
    subset = sleep[sleep["Reaction"] > 300]
    n_nan = len(sleep) - len(subset)
    assert n_nan == 102
    assert_same_fit(fit, mm.lmer("log(Reaction - 300) ~ Days + (1|Subject)", subset))
    assert fit.frame.n_dropped == n_nan
    messages = _dropped_warnings(record)
    assert len(messages) == 1 and messages[0].startswith(f"{n_nan} row(s)")
    assert "log(Reaction - 300)" in messages[0]
    assert list(fit.fitted.index) == list(subset.index)


def test_nan_rows_count_with_missing_rows(sleep, fast_path):
    data = sleep.copy()
    data.loc[data.index[:5], "Days"] = np.nan  # 5 missing rows ...
    data.loc[data.index[5:8], "Reaction"] = 250.0  # ... and 3 more that log() makes NaN
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit = mm.lmer("log(Reaction - 260) ~ Days + (1|Subject)", data)
    want = mm.lmer("log(Reaction - 260) ~ Days + (1|Subject)", data.dropna()[lambda d: d.Reaction > 260])
    assert_same_fit(fit, want)
    assert fit.frame.n_dropped == 5 + int((sleep.Reaction.iloc[8:] <= 260).sum()) + 3
    assert len(_dropped_warnings(record)) == 2


def test_nan_rows_refused_with_na_fail(sleep):
    with pytest.raises(DataError, match=r"102 row\(s\).*NaN.*log\(Reaction - 300\).*'fail'"):
        mm.lmer("log(Reaction - 300) ~ Days + (1|Subject)", sleep, na_action="fail")


def test_glmer_nan_and_infinite_transforms(cbpp, fast_path):
    formula = "cbind(incidence, size - incidence) ~ log(incidence) + (1|herd)"
    with pytest.raises(DataError, match=r"fixed-effects column 'log\(incidence\)' is infinite"):
        mm.glmer(formula, cbpp, family="binomial")
    data = cbpp.assign(shift=cbpp["incidence"] - 1)
    formula = "cbind(incidence, size - incidence) ~ sqrt(shift) + (1|herd)"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit = mm.glmer(formula, data, family="binomial")
    subset = data[data["shift"] >= 0]
    assert fit.frame.n_dropped == len(data) - len(subset) > 0
    assert "sqrt(shift)" in _dropped_warnings(record)[0]
    want = mm.glmer(formula, subset, family="binomial")
    np.testing.assert_allclose(fit.fixef, want.fixef, rtol=1e-10)
    assert fit.loglik == pytest.approx(want.loglik, rel=1e-12)


def test_offset_nan_and_infinite(cbpp, fast_path):
    data = cbpp.assign(exposure=cbpp["size"] - 2.0)  # sizes 2 give log(0), below 2 NaN
    formula = "incidence ~ period + offset(log(exposure)) + (1|herd)"
    with pytest.raises(DataError, match=r"offset 'log\(exposure\)' is infinite"):
        mm.glmer(formula, data, family="poisson")
    data = cbpp.assign(exposure=np.where(np.arange(len(cbpp)) % 7 == 0, -1.0, cbpp["size"]))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit = mm.glmer(formula, data, family="poisson")
    subset = data[data["exposure"] > 0]
    assert fit.frame.n_dropped == len(data) - len(subset) == 8
    assert "offset 'log(exposure)'" in _dropped_warnings(record)[0]
    want = mm.glmer(formula, subset, family="poisson")
    np.testing.assert_allclose(fit.fixef, want.fixef, rtol=1e-10)


def test_weights_array_with_nan_rows_and_formula_nan_rows(sleep, fast_path):
    """Weights given as an array follow the rows the formula keeps."""
    weights = np.linspace(0.5, 2.0, len(sleep))
    weights[3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDataWarning)
        fit = mm.lmer("log(Reaction - 300) ~ Days + (1|Subject)", sleep, weights=weights)
    keep = (sleep["Reaction"] > 300).to_numpy() & ~np.isnan(weights)
    want = mm.lmer("log(Reaction - 300) ~ Days + (1|Subject)", sleep[keep], weights=weights[keep])
    assert_same_fit(fit, want)
    with pytest.raises(DataError, match="weights.*infinite"):
        mm.lmer("Reaction ~ Days + (1|Subject)", sleep, weights=np.full(len(sleep), np.inf))


# ----------------------------------------------------------- raw exceptions


def test_repeated_column_name(sleep, fast_path):
    data = pd.concat([sleep, sleep[["Days"]]], axis=1)
    with pytest.raises(DataError, match="column 'Days' appears 2 times"):
        mm.lmer("Reaction ~ Days + (1|Subject)", data)
    extra = sleep[["Days"]].rename(columns={"Days": "x"})
    unused = pd.concat([sleep, extra, extra], axis=1)  # a repeated column the model does not use
    assert_same_fit(
        mm.lmer("Reaction ~ Days + (1|Subject)", unused),
        mm.lmer("Reaction ~ Days + (1|Subject)", sleep),
    )


@pytest.mark.parametrize(
    "formula", ["Reaction ~ Days + (1|g)", "Reaction ~ g + Days + (1|Subject)"]
)
def test_column_of_mixed_types(sleep, fast_path, formula):
    """A TypeError from sorting as a grouping factor; as a fixed factor 1 and
    "1" were two levels."""
    data = sleep.assign(g=pd.Series([1, "1", 1.0, 2] * 45, dtype=object))
    with pytest.raises(DataError, match="column 'g' mixes values of types float, int, str"):
        mm.lmer(formula, data)


@pytest.mark.parametrize(
    "formula, message",
    [  # log(Days) is -inf at Days = 0: as a fixed effect it was dropped as "rank deficient"
        ("Reaction ~ log(Days) + (1|Subject)", r"'log\(Days\)' is infinite in 18 row"),
        ("Reaction ~ Days + (log(Days)|Subject)", r"'log\(Days\)' of term \(log\(Days\) \| Subject\)"),
        ("log(Days) ~ Reaction + (1|Subject)", r"response 'log\(Days\)' is infinite"),
        # dates and durations as covariates (a raw TypeError, a ufunc message)
        ("Reaction ~ elapsed + (1|Subject)", r"column 'elapsed' holds durations.*total_seconds"),
        ("Reaction ~ date + (1|Subject)", r"column 'date' holds dates.*\.dt\.days"),
        ("Reaction ~ Days + (date|Subject)", r"column 'date' holds dates"),
    ],
)
def test_refused_with_the_term_named(dated, fast_path, formula, message):
    with pytest.raises(DataError, match=message):
        mm.lmer(formula, dated)


def test_date_as_grouping_factor(dated, fast_path):
    """A date as a grouping factor is a factor like any other."""
    by_date = mm.lmer("Reaction ~ 1 + (1|date)", dated)
    assert_same_fit(by_date, mm.lmer("Reaction ~ 1 + (1|Days)", dated))


def test_constant_response(sleep, fast_path):
    with pytest.raises(DataError, match=r"the response 'c' is constant \(every value is 3\)"):
        mm.lmer("c ~ Days + (1|Subject)", sleep.assign(c=3.0))
    data = sleep.assign(c=sleep["Days"] * 2.0)
    with pytest.raises(DataError, match="constant after the offset"):
        mm.lmer("c ~ 1 + (1|Subject)", data, offset=data["Days"] * 2.0)


# ----------------------------------------------------------- Dask


def test_dask_partition_without_a_used_column(sleep, tmp_path):
    pytest.importorskip("dask.dataframe")
    pytest.importorskip("pyarrow")
    sleep.iloc[:90].to_parquet(tmp_path / "a.parquet")
    sleep.iloc[90:].drop(columns="Days").to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"partition of the data lacks column\(s\).*Days"):
        mm.lmer("Reaction ~ Days + (1|Subject)", str(tmp_path))


def test_dask_grouping_of_numbers_and_text_across_partitions(sleep, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    subject = sleep["Subject"].astype(str)
    first = sleep.iloc[:90].assign(Subject=subject.iloc[:90].astype(int))
    second = sleep.iloc[90:].assign(Subject=subject.iloc[90:])
    data = dd.concat([dd.from_pandas(first, npartitions=1), dd.from_pandas(second, npartitions=1)])
    with pytest.raises(DataError, match="column 'Subject' holds numbers in some partitions and text"):
        mm.lmer("Reaction ~ Days + (1|Subject)", data)


@pytest.mark.parametrize(
    "formula, message",
    [  # were NaN estimates and a dropped "rank deficient" column, as in memory
        ("log(Reaction - 300) ~ Days + (1|Subject)", r"row\(s\) of a partition evaluate to NaN "
         r"\(in response 'log\(Reaction - 300\)'\).*filter them out"),
        ("Reaction ~ log(Days) + (1|Subject)", r"fixed-effects column 'log\(Days\)' is infinite"),
    ],
)
def test_dask_nonfinite_transforms(sleep, formula, message):
    dd = pytest.importorskip("dask.dataframe")
    with pytest.raises(DataError, match=message):
        mm.lmer(formula, dd.from_pandas(sleep, npartitions=2))
