"""A formula string never executes code (issue 14), and the formula text issues
fixed with it: comments, Unicode names, ``Q("...")`` grouping factors and
integer columns inside ``I()``.

Every injection test uses a payload that would create a file in a fresh
temporary directory, or set an attribute of :mod:`builtins`, and checks that
the call raises a FormulaError *and* that the side effect did not happen.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.cli import main
from mixedmodels.exceptions import FormulaError
from mixedmodels.spec.formula import parse_formula
from mixedmodels.spec.guard import FUNCTIONS, check_expression


def touch(path) -> str:
    """Python code that creates the file ``path`` (through os.system)."""
    return f"__import__('os').system('touch {path}')"


def refused(fit, formula, *args, target=None, **kwargs) -> FormulaError:
    """``fit(formula, ...)`` raises a FormulaError, and ``target`` was not created."""
    with pytest.raises(FormulaError) as info:
        fit(formula, *args, **kwargs)
    if target is not None:
        assert not target.exists(), f"{formula!r} ran its payload"
    return info.value


# --------------------------------------------------------------------------- lmer


LMER_INJECTIONS = [
    "Reaction ~ Days + I({p}) + (1 | Subject)",
    "Reaction ~ Days + I(eval(\"{p}\")) + (1 | Subject)",
    "Reaction ~ Days + I(exec(\"{p}\")) + (1 | Subject)",
    "Reaction ~ Days + C({p}) + (1 | Subject)",
    "Reaction ~ Days + scale({p}) + (1 | Subject)",
    "Reaction ~ Days + factor({p}) + (1 | Subject)",
    "Reaction ~ Days + offset({p}) + (1 | Subject)",
    "Reaction ~ Days + log(Days + 1 + ({p})) + (1 | Subject)",
    "I({p}) ~ Days + (1 | Subject)",
    "log(Reaction + ({p})) ~ Days + (1 | Subject)",
    "{p} ~ Days + (1 | Subject)",
    "Reaction ~ Days + (1 + I({p}) | Subject)",
    "Reaction ~ Days + (1 | Subject) + (0 + log({p}) | Subject)",
    "Reaction ~ Days + np.log({p}) + (1 | Subject)",
    "Reaction ~ Days + I([{p} for _ in [0]]) + (1 | Subject)",
    "Reaction ~ Days + I((lambda: {p})()) + (1 | Subject)",
    "Reaction ~ Days + I(Days.__class__.__init__.__globals__) + (1 | Subject)",
    "Reaction ~ Days + C(Days, levels={p}) + (1 | Subject)",
    "Reaction ~ Days + poly(Days, degree={p}) + (1 | Subject)",
    "Reaction ~ Days + C(Days, contr.sum({p})) + (1 | Subject)",
    # strings that a tokenizer without escapes or triple quotes would cut elsewhere
    'Reaction ~ Days + Q("a\\") + I({p}) + Q(\\"b") + (1 | Subject)',
    'Reaction ~ Days + Q("""a") + I({p}) + Q("b""") + (1 | Subject)',
]


@pytest.mark.parametrize("template", LMER_INJECTIONS)
def test_lmer_injection_is_refused_and_runs_nothing(template, sleep, tmp_path):
    target = tmp_path / "pwned"
    refused(mm.lmer, template.format(p=touch(target)), sleep, target=target)


def test_grouping_side_takes_names_only(sleep, tmp_path):
    target = tmp_path / "pwned"
    err = refused(mm.lmer, f"Reaction ~ Days + (1 | {touch(target)})", sleep, target=target)
    assert "grouping factor must be a variable name" in str(err)


@pytest.mark.parametrize(
    "payload",
    [
        "I(exec('import builtins; builtins.MM_PWNED = 1'))",
        "I(setattr(__import__('builtins'), 'MM_PWNED', 1))",
        "I(globals().update(MM_PWNED=1))",
        "I((MM_PWNED := 1))",
    ],
)
def test_payload_setting_a_global_is_refused(payload, sleep):
    refused(mm.lmer, f"Reaction ~ Days + {payload} + (1 | Subject)", sleep)
    assert not hasattr(builtins, "MM_PWNED")
    assert "MM_PWNED" not in globals()


def test_error_points_at_the_offending_text(sleep, tmp_path):
    formula = f"Reaction ~ Days + I({touch(tmp_path / 'x')}) + (1 | Subject)"
    err = refused(mm.lmer, formula, sleep)
    assert err.formula == formula
    assert formula[err.position :].startswith("__import__")
    assert "not allowed in a formula" in str(err)
    err = refused(mm.lmer, "Reaction ~ Days + I(Days[0]) + (1 | Subject)", sleep)
    assert "subscripts" in str(err) and err.position == formula.index("I(") + 2


def test_caret_of_a_multiline_formula_is_under_its_line(sleep):
    err = refused(mm.lmer, 'Reaction ~ Days  # slope\n + I(open("x")) + (1 | Subject)', sleep)
    assert str(err).endswith('\n   + I(open("x")) + (1 | Subject)\n       ^')


@pytest.mark.parametrize(
    "formula, what",
    [
        ("y ~ (1 | g) + .", "'.' (all other columns) is not supported"),
        ("y ~ {x + 1} + (1 | g)", "'{' is not formula syntax"),
        ("y ~ x == 1 + (1 | g)", "'==' is not formula syntax"),
        ("y ~ 'x' + (1 | g)", "a string is not a term"),
        ("y ~ x; import os", "';' is not formula syntax"),
    ],
)
def test_what_is_not_formula_syntax_is_named(formula, what):
    with pytest.raises(FormulaError, match=re.escape(what)) as info:
        parse_formula(formula)
    assert formula[info.value.position] in ".{=';"


def test_backticked_callee_is_named_as_written():
    with pytest.raises(FormulaError, match="calling '`eval`' is not allowed"):
        check_expression('`eval`("1")')


@pytest.mark.parametrize(
    "expr, what",
    [
        ("x.__class__", "attribute access"),
        ("Days.values", None),
        ("x[0]", "subscripts"),
        ("(lambda: 1)()", "calling"),
        ("[i for i in x]", "comprehensions"),
        ("__builtins__", "dunder"),
        ("log(*x)", "starred"),
        ("scale(x, **opts)", "**keyword"),
        ("getattr(x, 'y')", "calling 'getattr'"),
        ("np.random.seed(1)", "calling 'np.random.seed'"),
        ("np.log(x, out=x)", "no argument 'out'"),
        ("log(x, x)", "at most 1"),
        ("I('text')", "a string"),
        ("I(f'{x}')", "f-strings"),
        ("I(x if y else z)", "conditional"),
        ("I(x in y)", "comparison In"),
        ("hashed(x, 3)", "calling 'hashed'"),
        ("Q(x)", "quoted column name"),
        ("I(np)", "the module 'np'"),
        (r'Q("a\") + I(1) + Q(\"b")', "backslashes"),
        ('C(f, levels=["""a"""])', "triple-quoted strings"),
        ("I(x; y)", "not a valid expression"),
    ],
)
def test_each_kind_of_disallowed_node_is_named(expr, what):
    with pytest.raises(FormulaError, match=re.escape(what or "column")) as info:
        if what is None:
            # a dotted name is an R-style column name: refused by the data check
            mm.lmer(f"Reaction ~ {expr} + (1 | Subject)", mm.datasets.load("sleepstudy"))
        check_expression(expr)
    assert info.value.position is not None


# --------------------------------------------------------------------------- glmer


@pytest.mark.parametrize(
    "template",
    [
        "cbind(incidence, {p}) ~ period + (1 | herd)",
        "cbind(incidence, no = {p}) ~ period + (1 | herd)",
        "{p} ~ period + (1 | herd)",
        "cbind(incidence, size - incidence) ~ period + I({p}) + (1 | herd)",
        "cbind(incidence, size - incidence) ~ period + offset({p}) + (1 | herd)",
        "cbind(incidence, size - incidence) ~ period + (1 | herd) + (0 + I({p}) | herd)",
    ],
)
def test_glmer_injection_is_refused_and_runs_nothing(template, cbpp, tmp_path):
    target = tmp_path / "pwned"
    refused(mm.glmer, template.format(p=touch(target)), cbpp, family="binomial", target=target)


def test_dask_injection_is_refused_and_runs_nothing(sleep, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    target = tmp_path / "pwned"
    formula = f"Reaction ~ Days + I({touch(target)}) + (1 | Subject)"
    refused(mm.lmer, formula, dd.from_pandas(sleep, npartitions=2), target=target)


def test_integer_columns_in_dask_partitions(sleep):
    dd = pytest.importorskip("dask.dataframe")
    data = small_integers(sleep, np.int8)
    fit = mm.lmer("Reaction ~ I(x * x) + (1 | Subject)", dd.from_pandas(data, npartitions=3))
    ref = mm.lmer("Reaction ~ I(xf * xf) + (1 | Subject)", data)
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-9)


# --------------------------------------------------------------------------- predict


def test_predict_newdata_evaluates_nothing_outside_the_allow_list(sleep, tmp_path):
    """Even a fitted model whose formula parts were replaced after the fit
    (a tampered pickle, an edited object) checks them before evaluating new data."""
    fit = mm.lmer("Reaction ~ Days + offset(Days) + (1 | Subject)", sleep)
    target = tmp_path / "pwned"
    fit.frame.parsed = dataclasses.replace(fit.frame.parsed, offsets=(touch(target),))
    with pytest.raises(FormulaError):
        fit.predict(newdata=sleep.head(3))
    assert not target.exists()


# --------------------------------------------------------------------------- CLI


def test_cli_refuses_an_injection(capsys, tmp_path):
    target = tmp_path / "pwned"
    code = main(["fit", f"Reaction ~ Days + I({touch(target)}) + (1 | Subject)",
                 "--data", "sleepstudy"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "not allowed in a formula" in err and "Traceback" not in err
    assert not target.exists()


def test_cli_subprocess_refuses_an_injection(tmp_path):
    target = tmp_path / "pwned"
    done = subprocess.run(
        [sys.executable, "-m", "mixedmodels", "fit",
         f"Reaction ~ Days + C({touch(target)}) + (1 | Subject)", "--data", "sleepstudy"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert "not allowed in a formula" in done.stderr
    assert not target.exists()


# --------------------------------------------------------------------------- what stays allowed


@pytest.mark.parametrize(
    "expr",
    [
        "I(Days ** 2)", "log(Reaction)", "log1p(x)", "log2(x)", "log10(x)", "exp(x)",
        "expm1(x)", "sqrt(x)", "abs(x)", "sin(x)", "cos(x)", "tan(x)", "I(pi * x)",
        "np.log(x)", "np.maximum(a, 1)", "I(np.pi * x)", "C(f)", "C(f, contr.sum)",
        "C(f, levels=['a~b', 'c'])", "C(f, Treatment('b'))", "C(x, levels=None)",
        "factor(x)", "poly(x, 2)", "poly(x, degree=3, raw=True)", "scale(x)",
        "scale(x, center=False)", "center(x)", "bs(x, df=4)", "Q('my column')",
        "log(`my col` + 1)", "-y / 100 + 2 * x - 1", "I(a | b)", "I(x > 2)",
        "I((x >= 1) & (x < 3))", "I(not x)", "my.var", "réaction * 2",
    ],
)
def test_allowed_expressions_pass(expr):
    check_expression(expr)


def test_documented_function_list_matches_the_docs():
    from pathlib import Path

    docs = (Path(__file__).parents[1] / "docs" / "formulas.md").read_text()
    for name in FUNCTIONS:
        assert f"`{name}(" in docs, name


def test_columns_named_like_functions_still_work(sleep):
    data = sleep.rename(columns={"Days": "log", "Subject": "C"})
    a = mm.lmer("Reaction ~ Days + log(Days + 1) + (1 | Subject)", sleep)
    b = mm.lmer("Reaction ~ log + log(log + 1) + (1 | C)", data)
    np.testing.assert_array_equal(a.fixef.to_numpy(), b.fixef.to_numpy())


def test_dotted_and_module_like_column_names_are_columns(sleep):
    """R-style dotted names, and names such as pd or sys (blood pressure, anyone),
    are data columns; only np and contr (the modules formulas use) are not."""
    plain = mm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    for name in ("sys.bp", "pd", "sys", "my.days"):
        data = sleep.rename(columns={"Days": name})
        fit = mm.lmer(f"Reaction ~ {name} + (1 | Subject)", data)
        # dotted names take formulaic's path: the same numbers to rounding
        np.testing.assert_allclose(fit.fixef.to_numpy(), plain.fixef.to_numpy(), rtol=1e-12)
        assert list(fit.fixef.index) == ["(Intercept)", name]


def test_a_bare_function_name_is_a_column_not_the_function(sleep):
    with pytest.raises(FormulaError, match="column 'log' named in the formula is not in the data"):
        mm.lmer("Reaction ~ Days + I(log) + (1 | Subject)", sleep)


# --------------------------------------------------------------------------- formula text


def test_comments_are_stripped_as_r_does(sleep):
    plain = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    commented = mm.lmer(
        "Reaction ~ Days  # the slope\n  + (Days | Subject)  # per subject (a '#' is fine)", sleep
    )
    assert commented.loglik == plain.loglik
    np.testing.assert_array_equal(commented.theta.to_numpy(), plain.theta.to_numpy())
    assert parse_formula("y ~ x # + z\n + w").fixed == "x + w"
    assert parse_formula("y ~ `a#b` + (1 | g)").fixed == "`a#b`"


def test_unicode_column_names(sleep):
    plain = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    renamed = sleep.rename(columns={"Reaction": "réaction", "Days": "jours", "Subject": "sujet"})
    fit = mm.lmer("réaction ~ jours + (jours | sujet)", renamed)
    np.testing.assert_array_equal(fit.fixef.to_numpy(), plain.fixef.to_numpy())
    np.testing.assert_array_equal(fit.theta.to_numpy(), plain.theta.to_numpy())
    assert fit.loglik == plain.loglik
    assert list(fit.fixef.index) == ["(Intercept)", "jours"]
    for lhs, rhs in (("log(réaction)", "I(jours ** 2) + sqrt(jours)"), ("réaction", "factor(jours)")):
        fit = mm.lmer(f"{lhs} ~ {rhs} + (1 | sujet)", renamed)
        ref = mm.lmer(
            f"{lhs} ~ {rhs} + (1 | sujet)".replace("réaction", "Reaction")
            .replace("jours", "Days").replace("sujet", "Subject"),
            sleep,
        )
        np.testing.assert_array_equal(fit.fixef.to_numpy(), ref.fixef.to_numpy())
        assert [n.replace("jours", "Days") for n in fit.fixef.index] == list(ref.fixef.index)


def test_q_on_the_grouping_side(sleep):
    renamed = sleep.rename(columns={"Subject": "my group"})
    quoted = mm.lmer('Reaction ~ Days + (Days | Q("my group"))', renamed)
    backticked = mm.lmer("Reaction ~ Days + (Days | `my group`)", renamed)
    plain = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    for fit in (quoted, backticked):
        np.testing.assert_array_equal(fit.fixef.to_numpy(), plain.fixef.to_numpy())
        np.testing.assert_array_equal(fit.theta.to_numpy(), plain.theta.to_numpy())
    assert parse_formula("y ~ (1 | Q('a b'):g)").random[0].group == ("a b", "g")


# --------------------------------------------------------------------------- integers in I()


def small_integers(sleep: pd.DataFrame, dtype) -> pd.DataFrame:
    """sleepstudy with x = 10 * Days + 30 (30 ... 120) of ``dtype`` and as floats."""
    x = 10 * sleep["Days"] + 30
    return sleep.assign(x=x.astype(dtype), xf=x.astype(float))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint8, np.uint16, "Int32"])
def test_integer_columns_do_not_wrap_around_in_i(dtype, sleep):
    data = small_integers(sleep, dtype)
    fit = mm.lmer("Reaction ~ I(x * x) + I(x - 100) + (1 | Subject)", data)
    ref = mm.lmer("Reaction ~ I(xf * xf) + I(xf - 100) + (1 | Subject)", data)
    X = fit.frame.fixed.X
    np.testing.assert_array_equal(X[:, 1], data["xf"].to_numpy() ** 2)
    assert X[:, 1].max() == 14400.0 and X[:, 2].min() == -70.0
    np.testing.assert_array_equal(fit.fixef.to_numpy(), ref.fixef.to_numpy())
    assert fit.loglik == ref.loglik
    pred = fit.predict(newdata=data.head(20))
    np.testing.assert_array_equal(pred, ref.predict(newdata=data.head(20)))


def test_int8_times_int8_is_ten_thousand(sleep):
    data = sleep.assign(x=np.where(sleep["Days"] > 4, 100, 3).astype(np.int8))
    fit = mm.lmer("Reaction ~ I(x * x) + (1 | Subject)", data)
    assert set(np.unique(fit.frame.fixed.X[:, 1])) == {9.0, 10000.0}


def test_int64_products_past_its_range_do_not_wrap(sleep):
    """(4e10)^2 = 1.6e21 is past int64's 9.2e18: computed as doubles, as R does."""
    big = (sleep["Days"].astype(np.int64) + 1) * 4_000_000_000
    fit = mm.lmer("Reaction ~ I(b * b / 1e19) + (1 | Subject)", sleep.assign(b=big))
    np.testing.assert_allclose(
        fit.frame.fixed.X[:, 1], big.to_numpy(dtype=float) ** 2 / 1e19, rtol=1e-15
    )


def test_integer_factor_keeps_its_level_labels(sleep):
    """A small-integer column used as a factor and in arithmetic: the factor's
    labels stay 1, 2, 3 (not 1.0 ...) and the product does not wrap around."""
    k = (sleep["Days"] % 3 + 1).astype(np.int8)
    data = sleep.assign(k=k, d=sleep["Days"].astype(np.int8))
    wide = data.assign(k=k.astype(np.int64), d=sleep["Days"].astype(float))
    formula = "Reaction ~ factor(k) + I(k * d * 20) + (1 | Subject)"
    fit, ref = mm.lmer(formula, data), mm.lmer(formula, wide)
    assert list(fit.fixef.index) == ["(Intercept)", "factor(k)2", "factor(k)3", "I(k * d * 20)"]
    assert fit.frame.fixed.X[:, 3].max() == 3 * 8 * 20  # int8 would wrap to -32
    np.testing.assert_array_equal(fit.fixef.to_numpy(), ref.fixef.to_numpy())


def test_string_in_a_comparison_is_data(sleep):
    """R's I(group == "treated"): a string compared with a column is allowed
    (and only there: a string's methods are still calls outside the list)."""
    fit = mm.lmer('Reaction ~ Days + I(Subject == "308") + (1 | Subject)', sleep)
    flag = (sleep["Subject"].astype(str) == "308").astype(float)
    ref = mm.lmer("Reaction ~ Days + t + (1 | Subject)", sleep.assign(t=flag))
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-12)
    with pytest.raises(FormulaError, match="upper"):
        mm.lmer('Reaction ~ Days + I(Subject == "308".upper()) + (1 | Subject)', sleep)


def test_a_stored_spec_is_checked_before_new_data(sleep, tmp_path):
    """The fitted formulaic spec is evaluated again on new data: a spec swapped
    for one that calls outside the allow-list is refused and runs nothing."""
    from formulaic import Formula

    fit = mm.lmer("Reaction ~ Days + log(Days + 1) + (1 | Subject)", sleep)
    target = tmp_path / "pwned"
    spec = fit.frame.fixed.model_spec
    fit.frame.fixed.model_spec = spec.update(
        formula=Formula(f"Days + I(__import__('os').system('touch {target}'))")
    )
    with pytest.raises(FormulaError):
        fit.predict(sleep.head(3))
    assert not target.exists()
