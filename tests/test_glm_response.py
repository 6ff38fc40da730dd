"""Model frames of GLM responses (``build_model_frame(..., glm_response=True)``).

As in R's glm / glmer the response may be numeric, logical (0/1), a factor (0 for
the first level, 1 for every other) or ``cbind(successes, failures)`` (an (n, 2)
array). The numpy fast path and the general pandas path must agree.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.exceptions import (
    DataError,
    FormulaError,
    MissingDataWarning,
    MixedModelsError,
)
from mixedmodels.spec import frame as spec_frame
from mixedmodels.spec.formula import parse_formula
from mixedmodels.spec.frame import build_model_frame
from mixedmodels.spec.response import cbind_arguments

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"



@pytest.fixture(scope="module")
def verbagg():
    return mm.datasets.load("VerbAgg")


def small(y, n=12):
    """A hand-made frame: response ``y``, a covariate and 3 groups."""
    return pd.DataFrame({"y": y, "x": np.arange(n, dtype=float), "g": list("abc") * (n // 3)})


def frame(formula, data, fast=True, **kwargs):
    """The model frame (or the package's error) of one path, and its warnings."""
    saved = spec_frame.FAST_PATH
    spec_frame.FAST_PATH = fast
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                parsed = parse_formula(formula)
                result = build_model_frame(parsed, data, glm_response=True, **kwargs)
            except MixedModelsError as err:
                result = err
    finally:
        spec_frame.FAST_PATH = saved
    return result, [(w.category, str(w.message)) for w in caught]


def both_paths(formula, data, **kwargs):
    """The frame of the fast path, checked equal to the general path's (or the
    same error), with the caller's data untouched."""
    before = data.copy(deep=True)
    fast, fast_warnings = frame(formula, data, fast=True, **kwargs)
    general, general_warnings = frame(formula, data, fast=False, **kwargs)
    pd.testing.assert_frame_equal(data, before)
    assert fast_warnings == general_warnings
    if isinstance(fast, Exception) or isinstance(general, Exception):
        assert type(fast) is type(general) and str(fast) == str(general)
        return fast
    np.testing.assert_array_equal(fast.y, general.y)
    assert fast.y.dtype == general.y.dtype == np.float64
    assert fast.y.shape == general.y.shape
    assert fast.response_levels == general.response_levels
    assert fast.n_dropped == general.n_dropped
    assert fast.nobs == general.nobs == fast.y.shape[0]
    np.testing.assert_array_equal(fast.fixed.X, general.fixed.X)
    assert fast.fixed.names == general.fixed.names
    for s, t in zip(fast.terms, general.terms, strict=True):
        np.testing.assert_array_equal(s.codes, t.codes)
        assert s.levels == t.levels
    pd.testing.assert_frame_equal(fast.data, general.data)
    return fast


# --------------------------------------------------------------------------- cbind


def test_cbind_cbpp(cbpp):
    fr = both_paths(CBPP, cbpp)
    assert fr.y.shape == (56, 2) and fr.nobs == 56
    np.testing.assert_array_equal(fr.y[:, 0], cbpp["incidence"].to_numpy(dtype=float))
    np.testing.assert_array_equal(fr.y[:, 1], (cbpp["size"] - cbpp["incidence"]).to_numpy(float))
    assert fr.response_levels is None
    assert fr.n_dropped == 0
    assert fr.fixed.names == ["(Intercept)", "period2", "period3", "period4"]
    assert fr.terms[0].nlevels == 15


def test_cbind_of_columns_and_calls(cbpp):
    """Commas inside calls do not split the arguments; named arguments are R's."""
    fr = both_paths("cbind(np.maximum(incidence, 1), no = size - incidence) ~ 1 + (1 | herd)", cbpp)
    np.testing.assert_array_equal(fr.y[:, 0], np.maximum(cbpp["incidence"], 1).to_numpy(float))
    np.testing.assert_array_equal(fr.y[:, 1], (cbpp["size"] - cbpp["incidence"]).to_numpy(float))
    fr = both_paths("cbind(incidence, size) ~ period + (1 | herd)", cbpp)
    np.testing.assert_array_equal(fr.y, cbpp[["incidence", "size"]].to_numpy(float))


def test_cbind_arguments_split():
    assert cbind_arguments("cbind(a, b)") == ("a", "b")
    assert cbind_arguments("cbind(pmax(a, b), n - pmax(a, b))") == ("pmax(a, b)", "n - pmax(a, b)")
    assert cbind_arguments("cbind(`s 1`, f(x, y = 2)[0])") == ("`s 1`", "f(x, y = 2)[0]")
    assert cbind_arguments("y") is None
    assert cbind_arguments("log(y)") is None
    assert cbind_arguments("cbind") is None  # a column named cbind


@pytest.mark.parametrize(
    "lhs, count",
    [("cbind(incidence)", 1), ("cbind(incidence, size, period)", 3), ("cbind()", 0)],
)
def test_cbind_needs_two_arguments(cbpp, lhs, count):
    err = both_paths(f"{lhs} ~ 1 + (1 | herd)", cbpp)
    assert isinstance(err, FormulaError)
    assert f"has {count} argument(s): it needs exactly 2" in str(err)
    assert lhs in str(err)


def test_cbind_not_the_whole_side(cbpp):
    err = both_paths("log(cbind(incidence, size)) ~ 1 + (1 | herd)", cbpp)
    assert isinstance(err, FormulaError) and "whole left-hand side" in str(err)
    err = both_paths("cbind(incidence, ) ~ 1 + (1 | herd)", cbpp)
    assert isinstance(err, FormulaError) and "empty argument" in str(err)


def test_cbind_factor_argument(cbpp):
    err = both_paths("cbind(incidence, period) ~ 1 + (1 | herd)", cbpp)
    assert isinstance(err, DataError)
    assert "'period'" in str(err) and "not numeric or logical" in str(err)


def test_cbind_missing_value_drops_the_row(cbpp):
    data = cbpp.copy()
    data["size"] = data["size"].astype(float)
    data.loc[5, "size"] = np.nan  # only inside the second argument's expression
    fr = both_paths(CBPP, data)
    assert fr.n_dropped == 1 and fr.nobs == 55 and fr.y.shape == (55, 2)
    keep = data.index != 5
    np.testing.assert_array_equal(fr.y[:, 0], cbpp["incidence"][keep].to_numpy(float))
    np.testing.assert_array_equal(
        fr.y[:, 1], (cbpp["size"] - cbpp["incidence"])[keep].to_numpy(float)
    )
    assert 5 not in fr.data.index
    _, caught = frame(CBPP, data)
    assert [c for c, _ in caught] == [MissingDataWarning]
    err = both_paths(CBPP, data, na_action="fail")
    assert isinstance(err, DataError) and "'size'" in str(err)


def test_lmer_rejects_cbind(cbpp):
    for fast in (True, False):
        saved = spec_frame.FAST_PATH
        spec_frame.FAST_PATH = fast
        try:
            with pytest.raises(FormulaError, match="cbind responses are for glmer"):
                build_model_frame(parse_formula(CBPP), cbpp)
        finally:
            spec_frame.FAST_PATH = saved
    with pytest.raises(FormulaError, match="cbind responses are for glmer"):
        mm.lmer(CBPP, cbpp)


# --------------------------------------------------------------------------- factors


def test_verbagg_categorical(verbagg):
    fr = both_paths("r2 ~ Anger + Gender + btype + (1 | id) + (1 | item)", verbagg)
    assert fr.response_levels == ("N", "Y")
    assert fr.y.shape == (len(verbagg),)
    np.testing.assert_array_equal(fr.y, (verbagg["r2"] == "Y").to_numpy(dtype=float))
    assert 0 < fr.y.mean() < 1


def test_string_response_sorted_levels():
    values = ["b", "a", "a", "b"] * 3
    for dtype in (object, str, "string"):
        data = small(pd.Series(values, dtype=dtype))
        fr = both_paths("y ~ x + (1 | g)", data)
        assert fr.response_levels == ("a", "b")
        np.testing.assert_array_equal(fr.y, [1.0, 0.0, 0.0, 1.0] * 3)


def test_categorical_keeps_category_order():
    """The first category is the failure, even if it is not alphabetically first."""
    cat = pd.Categorical(["yes", "no", "no", "yes"] * 3, categories=["yes", "no"])
    fr = both_paths("y ~ x + (1 | g)", small(cat))
    assert fr.response_levels == ("yes", "no")
    np.testing.assert_array_equal(fr.y, [0.0, 1.0, 1.0, 0.0] * 3)


def test_factor_unused_levels_dropped():
    """Unused categories (also those left unused by dropping rows) do not count,
    as R's model.frame(drop.unused.levels = TRUE)."""
    cat = pd.Categorical(["no", "yes", "maybe"] * 4, categories=["none", "no", "yes", "maybe"])
    data = small(cat)
    fr = both_paths("y ~ x + (1 | g)", data)
    assert fr.response_levels == ("no", "yes", "maybe")
    np.testing.assert_array_equal(fr.y, [0.0, 1.0, 1.0] * 4)
    data.loc[data["y"] == "no", "x"] = np.nan
    fr = both_paths("y ~ x + (1 | g)", data)
    assert fr.n_dropped == 4 and fr.response_levels == ("yes", "maybe")
    np.testing.assert_array_equal(fr.y, [0.0, 1.0] * 4)


def test_factor_missing_values_dropped():
    data = small(pd.Categorical(["a", "b", None, "b"] * 3))
    fr = both_paths("y ~ x + (1 | g)", data)
    assert fr.n_dropped == 3 and fr.nobs == 9
    np.testing.assert_array_equal(fr.y, [0.0, 1.0, 1.0] * 3)
    data = small(["a", "b", None, "b"] * 3)
    fr = both_paths("y ~ x + (1 | g)", data)
    assert fr.n_dropped == 3 and fr.response_levels == ("a", "b")


def test_one_level_factor_is_an_error():
    for y in (["only"] * 12, pd.Categorical(["only"] * 12, categories=["only", "never"])):
        err = both_paths("y ~ x + (1 | g)", small(y))
        assert isinstance(err, DataError)
        assert "'y'" in str(err) and "single level ('only')" in str(err)
    data = small(["only"] * 12).rename(columns={"y": "answer"})
    err = both_paths("answer ~ x + (1 | g)", data)
    assert isinstance(err, DataError) and "response column 'answer'" in str(err)


# --------------------------------------------------------------------------- numbers


def test_bool_response():
    values = [True, False, False, True] * 3
    fr = both_paths("y ~ x + (1 | g)", small(values))
    assert fr.response_levels is None and fr.y.dtype == np.float64
    np.testing.assert_array_equal(fr.y, np.asarray(values, dtype=float))
    nullable = small(pd.array([True, None, False, True] * 3, dtype="boolean"))
    fr = both_paths("y ~ x + (1 | g)", nullable)
    assert fr.n_dropped == 3
    np.testing.assert_array_equal(fr.y, [1.0, 0.0, 1.0] * 3)


def test_numeric_response_and_expression():
    counts = np.array([0, 3, 1, 7] * 3)
    for y in (counts, counts.astype(float), pd.array(counts, dtype="Int64")):
        fr = both_paths("y ~ x + (1 | g)", small(y))
        assert fr.response_levels is None
        np.testing.assert_array_equal(fr.y, counts.astype(float))
    fr = both_paths("I(y / 10) ~ x + (1 | g)", small(counts))
    np.testing.assert_allclose(fr.y, counts / 10)
    fr = both_paths("`a b` ~ x + (1 | g)", small(counts).rename(columns={"y": "a b"}))
    np.testing.assert_array_equal(fr.y, counts.astype(float))


def test_response_not_copied_from_callers_memory():
    data = small(np.arange(12, dtype=float))
    for fast in (True, False):
        fr, _ = frame("y ~ x + (1 | g)", data, fast=fast)
        fr.y[:] = -1
        assert data["y"].tolist() == list(range(12))


def test_bad_response_dtype():
    data = small(pd.date_range("2024-01-01", periods=12))
    err = both_paths("y ~ x + (1 | g)", data)
    assert isinstance(err, DataError) and "'y'" in str(err)
    assert "not numeric, logical or a factor" in str(err)
    err = both_paths("y ~ x + (1 | g)", small(pd.Series(["a", 1, "b", 2] * 3, dtype=object)))
    assert isinstance(err, DataError) and "response column 'y'" in str(err)


def test_lmer_mode_unchanged(cbpp):
    """Without glm_response, factor and logical responses stay errors."""
    for y in (["a", "b"] * 6, [True, False] * 6):
        with pytest.raises(DataError, match="response column 'y' is not numeric"):
            build_model_frame(parse_formula("y ~ x + (1 | g)"), small(y))
    fr = build_model_frame(parse_formula("incidence ~ period + (1 | herd)"), cbpp)
    assert fr.response_levels is None and fr.y.shape == (56,)
