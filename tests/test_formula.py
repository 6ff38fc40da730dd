"""Tests of :mod:`mixedmodels.spec.formula`."""

from __future__ import annotations

import pytest

from mixedmodels.exceptions import FormulaError
from mixedmodels.spec.formula import (
    ParsedFormula,
    RandomTermSpec,
    parse_formula,
    require_random,
    variables_in,
)


def spec(expr, group, correlated=True):
    """RandomTermSpec with the lme4-style name and text derived from ``group``."""
    name = ":".join(group)
    return RandomTermSpec(expr, tuple(group), name, correlated, f"({expr} | {name})")


# ---------------------------------------------------------------------------
# Successful parses
# ---------------------------------------------------------------------------


def test_sleepstudy():
    text = "Reaction ~ Days + (Days | Subject)"
    assert parse_formula(text) == ParsedFormula(
        text=text,
        response="Reaction",
        fixed="Days",
        offsets=(),
        random=(spec("Days", ["Subject"]),),
    )


def test_double_bar_sleepstudy():
    p = parse_formula("Reaction ~ Days + (Days || Subject)")
    assert p.fixed == "Days"
    assert p.random == (
        spec("1", ["Subject"], correlated=False),
        spec("0 + Days", ["Subject"], correlated=False),
    )
    assert [t.text for t in p.random] == ["(1 | Subject)", "(0 + Days | Subject)"]


def test_double_bar_several_terms_and_no_intercept():
    p = parse_formula("y ~ x + (1 + x + z || g)")
    assert [t.expr for t in p.random] == ["1", "0 + x", "0 + z"]
    assert all(not t.correlated for t in p.random)
    p = parse_formula("y ~ x + (0 + x + z || g)")
    assert [t.expr for t in p.random] == ["0 + x", "0 + z"]
    p = parse_formula("y ~ x + (-1 + x || g)")
    assert [t.expr for t in p.random] == ["0 + x"]


def test_double_bar_expands_interactions_like_term_labels():
    p = parse_formula("y ~ (x*z || g)")
    assert [t.expr for t in p.random] == ["1", "0 + x", "0 + z", "0 + x:z"]


def test_crossed():
    p = parse_formula("diameter ~ 1 + (1|plate) + (1|sample)")
    assert p.fixed == "1"
    assert p.random == (spec("1", ["plate"]), spec("1", ["sample"]))


def test_nested_batch_cask():
    p = parse_formula("strength ~ (1 | batch/cask)")
    assert p.fixed == "1"
    assert p.random == (
        RandomTermSpec("1", ("cask", "batch"), "cask:batch", True, "(1 | cask:batch)"),
        RandomTermSpec("1", ("batch",), "batch", True, "(1 | batch)"),
    )


def test_nested_three_levels():
    p = parse_formula("y ~ (1 | a/b/c)")
    assert [t.group_name for t in p.random] == ["c:b:a", "b:a", "a"]
    assert [t.group for t in p.random] == [("c", "b", "a"), ("b", "a"), ("a",)]


def test_nested_with_interaction_level():
    # ':' binds tighter than '/', as in R: (g:h)/k
    p = parse_formula("y ~ (x | g:h/k)")
    assert [t.group_name for t in p.random] == ["k:g:h", "g:h"]


def test_nested_double_bar():
    p = parse_formula("y ~ (x || a/b)")
    assert [t.text for t in p.random] == [
        "(1 | b:a)",
        "(1 | a)",
        "(0 + x | b:a)",
        "(0 + x | a)",
    ]


def test_interaction_group():
    p = parse_formula("y ~ (1|a:b)")
    assert p.random == (RandomTermSpec("1", ("a", "b"), "a:b", True, "(1 | a:b)"),)


def test_no_intercept_zero_in_both_parts():
    p = parse_formula("y ~ 0 + x + (0 + x | g)")
    assert p.fixed == "0 + x"
    assert p.random == (spec("0 + x", ["g"]),)


def test_no_intercept_minus_one_in_both_parts():
    p = parse_formula("y ~ x - 1 + (-1 + x | g)")
    assert p.fixed == "x - 1"
    assert p.random == (spec("0 + x", ["g"]),)
    p = parse_formula("y ~ -1 + x + (x - 1 | g)")
    assert p.fixed == "-1 + x"
    assert p.random[0].expr == "0 + x"


def test_only_zero_remains():
    assert parse_formula("y ~ 0 + (1|g)").fixed == "0"
    assert parse_formula("y ~ (1|g)").fixed == "1"


def test_random_expr_normalised():
    p = parse_formula("y ~ (1+x|g) + (x + 1 | h) + (x+z | k)")
    assert [t.expr for t in p.random] == ["1 + x", "1 + x", "x + z"]
    assert p.random[0].text == "(1 + x | g)"


def test_functions_kept_verbatim():
    p = parse_formula("y ~ np.log(x) + I(x**2) + C(f) + scale(z) + (1 | g)")
    assert p.fixed == "np.log(x) + I(x**2) + C(f) + scale(z)"
    assert p.random == (spec("1", ["g"]),)


def test_non_random_parentheses_stay():
    p = parse_formula("y ~ (a + b):c + I(x + 1) + I(a | b) + (1 | g)")
    assert p.fixed == "(a + b):c + I(x + 1) + I(a | b)"
    assert len(p.random) == 1


def test_products_kept():
    assert parse_formula("y ~ x1 * x2 + (1 | g)").fixed == "x1 * x2"


def test_offset():
    p = parse_formula("y ~ x + offset(np.log(t)) + (1 | g) + offset(z)")
    assert p.fixed == "x"
    assert p.offsets == ("np.log(t)", "z")


def test_offset_only_fixed_part():
    p = parse_formula("y ~ offset(z) + (1|g)")
    assert p.fixed == "1"
    assert p.offsets == ("z",)


def test_multiline():
    text = """Reaction ~ 1 + Days +
        (1 + Days ||
         Subject)"""
    p = parse_formula(text)
    assert p.text == text
    assert p.response == "Reaction"
    assert p.fixed == "1 + Days"
    assert [t.text for t in p.random] == ["(1 | Subject)", "(0 + Days | Subject)"]


def test_one_sided_and_complex_response():
    assert parse_formula("~ x + (1|g)").response is None
    p = parse_formula("np.log(y + 1) ~ x + (1|g)")
    assert p.response == "np.log(y + 1)"


def test_backticked_group():
    p = parse_formula("y ~ x + (1 | `my group`)")
    assert p.random == (
        RandomTermSpec("1", ("my group",), "my group", True, "(1 | `my group`)"),
    )


def test_tilde_inside_string_or_parentheses_is_not_top_level():
    p = parse_formula("y ~ C(f, levels=['a~b']) + (1|g)")
    assert p.fixed == "C(f, levels=['a~b'])"


def test_no_random_is_not_a_parse_error():
    p = parse_formula("y ~ x")
    assert p.random == ()
    with pytest.raises(FormulaError, match=r"no random-effects term like \(1 \| group\)"):
        require_random(p)
    q = parse_formula("y ~ x + (1|g)")
    assert require_random(q) is q


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, position",
    [
        ("y ~ x + (1 | g", 8),  # unbalanced '('
        ("y ~ x) + (1|g)", 5),  # unbalanced ')'
        ("y ~ ( | g)", 6),  # empty left side: points at the bar
        ("y ~ (1 | )", 7),  # empty grouping side: points at the bar
        ("y ~ x + 1 | g", 10),  # bar outside parentheses
        ("y ~ x ~ z + (1|g)", 6),  # two tildes: the second one
        ("y ~ x +", 6),  # trailing operator
        ("y ~ (1 | g):x", 4),  # random term not added with '+'
        ("y ~ x - (1|g)", 6),  # subtracted random term
        ("y ~ (1 | g | h)", 11),  # two bars
        ("y ~ (1 | g + h)", 11),  # bad grouping side
        ("y ~ (0 | g)", 5),  # no columns at all
        ("(a | b) ~ x", 3),  # bar in the response
        ("y ~ `x + (1|g)", 4),  # unterminated backtick
        ("y ~ [x) + (1|g)", 6),  # mismatched brackets
        ("y ~ ", 4),  # empty right-hand side
    ],
)
def test_errors_with_position(text, position):
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert isinstance(info.value, ValueError)
    assert info.value.position == position
    assert info.value.formula == text
    assert "^" in str(info.value)


def test_no_tilde():
    with pytest.raises(FormulaError) as info:
        parse_formula("y + x")
    assert isinstance(info.value, ValueError)
    assert info.value.position is None


def test_multiline_error_position():
    text = "y ~ x +\n  (1 + x |\n g"
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert info.value.position == text.index("(")


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_or_non_string(bad):
    with pytest.raises(FormulaError):
        parse_formula(bad)


# ---------------------------------------------------------------------------
# variables_in
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("np.log(x) + I(z**2) + C(f)", {"x", "z", "f"}),
        ("Reaction ~ Days + (Days | Subject)", {"Reaction", "Days", "Subject"}),
        ("y ~ `weird name` + x", {"y", "weird name", "x"}),
        ("scale(a) + center(b) + sqrt(c) + exp(d) + log(e)", set("abcde")),
        ("poly(x, degree=2) + offset(np.log(t))", {"x", "t"}),
        ("np.pi * w + numpy.sqrt(v) + 2.5e-3", {"w", "v"}),
        ("strength ~ (1 | batch/cask)", {"strength", "batch", "cask"}),
        ("C(f, levels=['a', 'b'])", {"f"}),
        ("Q('a b') + x.1", {"a b", "x.1"}),
        ("1", set()),
    ],
)
def test_variables_in(expr, expected):
    assert variables_in(expr) == expected
