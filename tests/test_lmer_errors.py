"""Bad input to lmer raises our own exception classes (all ValueErrors) with
messages that name the offending column, term or level."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.exceptions import (
    DataError,
    FormulaError,
    MixedModelsError,
    ModelSpecError,
)

F = "Reaction ~ Days + (Days | Subject)"



def raises(cls, formula, data, match, **kwargs):
    """Assert lmer raises ``cls`` (a MixedModelsError and ValueError) matching ``match``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(cls, match=match) as info:
            mm.lmer(formula, data, **kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MixedModelsError)
    return info.value


# ---------------------------------------------------------------------------- formula


def test_misspelled_fixed_column(sleep):
    err = raises(FormulaError, "Reaction ~ Dayz + (Days | Subject)", sleep, match=r"'Dayz'.*did you mean 'Days'")
    assert err.position == "Reaction ~ Dayz".index("Dayz")


def test_misspelled_column_in_random_term(sleep):
    raises(FormulaError, "Reaction ~ Days + (Dayz | Subject)", sleep, match="'Dayz'")


def test_misspelled_column_inside_function(sleep):
    raises(FormulaError, "Reaction ~ np.log1p(Dayz) + (1 | Subject)", sleep, match="'Dayz'")


def test_misspelled_response(sleep):
    raises(FormulaError, "Reactio ~ Days + (1 | Subject)", sleep, match="'Reactio'")


def test_missing_grouping_column(sleep):
    err = raises(FormulaError, "Reaction ~ Days + (Days | Patient)", sleep, match="'Patient'.*not in the data")
    assert err.position == F.replace("Subject", "Patient").index("Patient")


def test_missing_nested_grouping_column(sleep):
    raises(FormulaError, "Reaction ~ Days + (1 | Subject/visit)", sleep, match="'visit'")


def test_missing_column_polars(sleep):
    pl = pytest.importorskip("polars")
    raises(FormulaError, "Reaction ~ Days + (1 | Subjekt)", pl.from_pandas(sleep), match="'Subjekt'")


@pytest.mark.parametrize(
    "formula, position",
    [
        ("Reaction ~ Days + (Days | Subject", len("Reaction ~ Days + ")),
        ("Reaction ~ (Days + (Days | Subject)", len("Reaction ~ ")),
        ("Reaction ~ Days + (Days | Subject))", len("Reaction ~ Days + (Days | Subject)")),
    ],
)
def test_unbalanced_parenthesis(sleep, formula, position):
    err = raises(FormulaError, formula, sleep, match=r"unmatched '[()]'")
    assert err.position == position
    assert err.formula == formula
    assert "^" in str(err)


def test_no_random_effect_term(sleep):
    raises(FormulaError, "Reaction ~ Days", sleep, match=r"no random-effects term")


def test_random_term_not_added(sleep):
    raises(FormulaError, "Reaction ~ Days + (1 | Subject):Days", sleep, match="must be added with")


def test_unknown_function(sleep):
    raises(FormulaError, "Reaction ~ foo(Days) + (1 | Subject)", sleep, match="foo")


# ---------------------------------------------------------------------------- model specification


def test_grouping_factor_with_one_level(sleep):
    raises(ModelSpecError, "Reaction ~ Days + (1 | g)", sleep.assign(g="only"), match=r"'g'.*1 level")


def test_grouping_factor_one_level_after_dropping_na(sleep):
    g = np.where(np.arange(len(sleep)) < 10, "a", None)
    raises(ModelSpecError, "Reaction ~ Days + (1 | g)", sleep.assign(g=g), match=r"'g'.*1 level")


def test_one_level_per_observation(sleep):
    raises(
        ModelSpecError,
        "Reaction ~ Days + (1 | obs)",
        sleep.assign(obs=np.arange(len(sleep))),
        match=r"'obs' has 180 levels for 180 observations",
    )


def test_too_many_random_effects(sleep):
    raises(
        ModelSpecError,
        "Reaction ~ Days + (Days | pair)",
        sleep.assign(pair=np.arange(len(sleep)) // 2),
        match=r"\(Days \| pair\).*unidentifiable",
    )


# ---------------------------------------------------------------------------- data


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_predictor(sleep, value):
    data = sleep.assign(Days=sleep["Days"].astype(float))
    data.loc[7, "Days"] = value
    raises(DataError, F, data, match=r"'Days'.*infinite")


def test_infinite_response(sleep):
    data = sleep.copy()
    data.loc[0, "Reaction"] = np.inf
    raises(DataError, F, data, match=r"'Reaction'.*infinite")


def test_infinite_in_unused_column_is_fine(sleep):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = mm.lmer(F, sleep.assign(unused=np.inf))
    assert m.nobs == len(sleep)


def test_empty_data(sleep):
    raises(DataError, F, sleep.iloc[:0], match=r"empty")


def test_no_complete_rows(sleep):
    raises(DataError, F, sleep.assign(Reaction=np.nan), match=r"no complete rows")


def test_not_a_dataframe():
    raises(DataError, F, [[1, 2, 3]], match=r"pandas or polars DataFrame")


@pytest.mark.parametrize("kind", ["category", "str", "bool"])
def test_non_numeric_response(sleep, kind):
    if kind == "category":
        data, lhs = sleep, "Subject"
    elif kind == "str":
        data, lhs = sleep.assign(R=sleep["Reaction"].astype(str)), "R"
    else:
        data, lhs = sleep.assign(R=sleep["Reaction"] > 300), "R"
    raises(DataError, f"{lhs} ~ Days + (1 | Subject)", data, match=rf"response column '{lhs}' is not numeric")


# ---------------------------------------------------------------------------- weights


def test_negative_weights_array(sleep):
    w = np.ones(len(sleep))
    w[5] = -1.0
    raises(DataError, F, sleep, match=r"weights.*non-negative.*row 5", weights=w)


def test_negative_weights_column(sleep):
    w = np.ones(len(sleep))
    w[[5, 9]] = -0.5
    raises(DataError, F, sleep.assign(w=w), match=r"weights column 'w'.*2 negative", weights="w")


def test_all_zero_weights(sleep):
    raises(DataError, F, sleep, match=r"weights are all zero", weights=np.zeros(len(sleep)))


def test_weights_wrong_length(sleep):
    raises(DataError, F, sleep, match=r"weights has length 10.*180 rows", weights=np.ones(10))


def test_weights_column_missing(sleep):
    raises(DataError, F, sleep, match=r"weights column 'ww' is not in the data", weights="ww")


def test_weights_column_not_numeric(sleep):
    raises(DataError, F, sleep.assign(w="a"), match=r"weights column 'w' is not numeric", weights="w")


# ---------------------------------------------------------------------------- na_action


def test_na_action_fail(sleep):
    data = sleep.copy()
    data.loc[[3, 4], "Reaction"] = np.nan
    raises(DataError, F, data, match=r"2 row\(s\).*'Reaction'.*na_action='fail'", na_action="fail")


def test_na_action_fail_names_weights(sleep):
    w = np.where(np.arange(len(sleep)) == 3, np.nan, 1.0)
    raises(DataError, F, sleep, match=r"1 row\(s\).*'weights'", na_action="fail", weights=w)


def test_na_action_fail_without_missing_values_fits(sleep):
    m = mm.lmer(F, sleep, na_action="fail")
    assert m.nobs == len(sleep)


def test_na_action_invalid(sleep):
    raises(DataError, F, sleep, match=r"na_action must be 'omit' or 'fail', not 'drop'", na_action="drop")


def test_parenthesised_random_term_combined_with_operator(sleep):
    raises(FormulaError, "Reaction ~ Days + ((1 | Subject)):Days", sleep, match="must be added with")


def test_parenthesised_random_terms_subtracted(sleep):
    raises(
        FormulaError,
        "Reaction ~ Days - ((1 | Subject) + (0 + Days | Subject))",
        sleep,
        match="cannot be subtracted",
    )
