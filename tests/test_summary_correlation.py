"""The "Correlation of Fixed Effects" block of summaries, as lme4's
print.summary.merMod prints it: columns named by R's ``abbreviate(names, 6)``,
rows by ``abbreviate(names, 11)``, the values rounded to 3 decimals and
formatted jointly, printed as R prints a character matrix."""

from __future__ import annotations

import warnings

import numpy as np

import mixedmodels as mm
from mixedmodels.report.abbreviate import abbreviate

STATES = [
    "Alabama", "Alaska", "Massachusetts", "Mississippi", "Missouri", "New Hampshire",
    "New Jersey", "North Carolina", "Rhode Island", "West Virginia", "Iowa", "Utah",
]
# R: abbreviate(state.name)[c(1, 2, 21, 24, 25, 29, 30, 33, 39, 48, 15, 44)]
STATES_R = [
    "Albm", "Alsk", "Mssc", "Msss", "Mssr", "NwHm", "NwJr", "NrtC", "RhdI", "WstV", "Iowa", "Utah",
]


def test_abbreviate_matches_r():
    assert abbreviate(STATES) == STATES_R
    # lme4's headers for cbpp and for an interaction
    assert abbreviate(["(Intercept)", "period2", "period3", "period4"], 6) == [
        "(Intr)", "perid2", "perid3", "perid4"
    ]
    # R: abbreviate(c("(Intercept)", "Days", "Days:TreatmentB", "TreatmentB"), 6)
    assert abbreviate(["(Intercept)", "Days", "Days:TreatmentB", "TreatmentB"], 6) == [
        "(Intr)", "Days", "Dys:TB", "TrtmnB"
    ]
    # names that collide are abbreviated again, one character longer each time
    assert abbreviate(["abcdefghijk", "abcdefghijz"], 4) == ["abcdfghjk", "abcdfghjz"]
    # short names and minlength 11 (the row names) are unchanged
    assert abbreviate(["(Intercept)", "x"], 11) == ["(Intercept)", "x"]
    assert abbreviate(["abc"], 0) == [""]


def _correlation_block(model) -> list[str]:
    text = str(model.summary())
    lines = text.split("Correlation of Fixed Effects:\n", 1)[1].splitlines()
    return lines


def test_glmer_cbpp_header_as_lme4():
    # lme4 1.1-31, summary(glmer(cbind(incidence, size - incidence) ~ period +
    # (1 | herd), cbpp, binomial)); the values are those of the reference vcov
    cb = mm.datasets.load("cbpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cb)
    assert _correlation_block(g)[:4] == [
        "        (Intr) perid2 perid3",
        "period2 -0.363",
        "period3 -0.340  0.280",
        "period4 -0.260  0.213  0.198",
    ]


def test_lmer_header_and_left_alignment():
    sleep = mm.datasets.load("sleepstudy")
    m = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert _correlation_block(m)[:2] == ["     (Intr)", "Days -0.138"]
    # a one-letter name is left-aligned in a column as wide as the values
    d = sleep.assign(x=sleep["Days"] * 0.5 + np.sin(np.arange(len(sleep))))
    m2 = mm.lmer("Reaction ~ x + (1 | Subject)", d)
    block = _correlation_block(m2)
    assert block[0] == "  (Intr)"
    assert block[1].startswith("x -0.") or block[1].startswith("x  0.")


def _model_with_covariates(names: list[str]):
    """sleepstudy's intercept model with Days and random normal covariates ``names``."""
    sleep = mm.datasets.load("sleepstudy")
    rng = np.random.default_rng(1)
    d = sleep.assign(**{n: rng.normal(size=len(sleep)) for n in names})
    return mm.lmer("Reaction ~ " + " + ".join(["Days", *names]) + " + (1 | Subject)", d)


def test_wide_matrix_in_blocks_of_80_characters():
    # R prints a character matrix in blocks of columns: the row labels (11
    # wide here) and the columns (6 wide, 1 apart) while the width stays < 80
    m = _model_with_covariates([f"covariate_number_{k}" for k in range(10)])
    block = _correlation_block(m)
    p = 12
    first = block[0].split()
    # 11 + 9 * 7 = 74; a tenth column would reach 81
    assert first == ["(Intr)", "Days"] + [f"cvr__{k}" for k in range(7)]
    assert block[1].startswith("Days        -0.")
    second = block[p]  # after the header and the 11 rows of the first block
    assert second.split() == ["cvr__7", "cvr__8"]
    assert block[p - 1].startswith("cvrt_nmbr_9")
    assert max(len(line) for line in block[: 2 * p]) < 80


def test_correlation_shown_by_default_up_to_twelve_fixed_effects():
    # lme4: getOption("lme4.summary.cor.max") is 12; above, a note instead
    m = _model_with_covariates([f"z{k}" for k in range(11)])
    text = str(m.summary())
    assert "Correlation of Fixed Effects" not in text
    assert "Correlation matrix not shown by default, as p = 13 > 12." in text
    assert "Correlation of Fixed Effects" in str(m.summary(correlation=True))
    small = _model_with_covariates([])
    assert "Correlation" not in str(small.summary(correlation=False))
