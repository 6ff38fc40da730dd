"""glmer's ``start`` takes θ and the fixed effects, and ``nagq0_init_step=False``
skips the nAGQ = 0 stage, as lme4's ``start = list(theta=, fixef=)`` and
``glmerControl(nAGQ0initStep = FALSE)`` (issue 14).

The quadrature deviance (nAGQ = 25) of cbpp does not depend on where PIRLS
starts (its modes are found group by group to rounding), so fits of it from
different starts or routes reach the same optimum to the optimizer's
precision. The Laplace deviance at lme4's PIRLS tolerance (1e-7) moves by
~5e-4 with PIRLS's starting η (lme4's does too: every evaluation starts from
its stage's η), so the Laplace fit without the nAGQ = 0 stage is compared
with lme4's fit without it (numbers from tests/reference/r/glmer_issue14.R).
"""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.exceptions import ModelSpecError

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
FIXEF_NAMES = ["(Intercept)", "period2", "period3", "period4"]



@pytest.fixture(scope="module")
def agq(cbpp):
    return mm.glmer(CBPP, cbpp, family="binomial", nagq=25)


def _same_optimum(m, ref, rtol=1e-6):
    assert m.deviance == pytest.approx(ref.deviance, abs=1e-8)
    np.testing.assert_allclose(m.theta, ref.theta, rtol=rtol)
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=rtol)


def test_start_at_the_optimum_stays_there_in_few_evaluations(cbpp, agq):
    start = {"theta": agq.theta.to_numpy(), "fixef": agq.fixef.to_numpy()}
    m = mm.glmer(CBPP, cbpp, family="binomial", nagq=25, start=start, nagq0_init_step=False)
    _same_optimum(m, agq)
    # one Newton derivative set (2k + k(k-1)/2 = 20 probes for k = 5) and the
    # evaluations at the start and of the last step; no nAGQ = 0 stage
    assert m.optsum.evaluations <= 25 < agq.optsum.evaluations
    assert "nAGQ = 0" not in m.optsum.optimizer


def test_skipping_the_nagq0_stage_reaches_the_same_optimum(cbpp, agq):
    m = mm.glmer(CBPP, cbpp, family="binomial", nagq=25, nagq0_init_step=False)
    _same_optimum(m, agq)
    assert m.optsum.optimizer == "Newton (deriv12)"


# lme4 1.1-31 (R 4.2.2): glmer(cbind(incidence, size - incidence) ~ period + (1 | herd),
#   data = cbpp, family = binomial, control = glmerControl(nAGQ0initStep = FALSE))
# from tests/reference/r/glmer_issue14.R (429 evaluations)
LME4_NO_INIT_STEP = {
    "deviance": 184.052582525406,
    "theta": [0.642255121457804],
    "fixef": [-1.39853065233, -0.992330999047016, -1.12867574774136, -1.58032650960908],
    "se": [0.232470716725183, 0.306641669154377, 0.32663727633736, 0.427436305139802],
}


def test_skipping_the_nagq0_stage_laplace_matches_lme4(cbpp):
    ref = LME4_NO_INIT_STEP
    m = mm.glmer(CBPP, cbpp, family="binomial", nagq0_init_step=False)
    assert "nAGQ = 0" not in m.optsum.optimizer
    # the same deviance function as lme4's (PIRLS starting from the η of PIRLS
    # over u alone at the start θ and β = 0, as lme4 does without the stage) ...
    at_r = m.objective(np.concatenate([ref["theta"], ref["fixef"]]))
    assert at_r == pytest.approx(ref["deviance"], abs=1e-9)
    # ... and its optimum, never worse than lme4's
    assert m.deviance <= ref["deviance"] + 1e-9
    np.testing.assert_allclose(m.fixef, ref["fixef"], rtol=1e-4)
    np.testing.assert_allclose(m.theta, ref["theta"], rtol=1e-4)
    np.testing.assert_allclose(m.se, ref["se"], rtol=2e-3)


def test_fixef_start_with_the_nagq0_stage(cbpp, agq):
    # lme4's updateStart: θ from the nAGQ = 0 stage, β from start['fixef']
    m = mm.glmer(CBPP, cbpp, family="binomial", nagq=25,
                 start={"fixef": [-1.0, -1.0, -1.0, -1.0]})
    _same_optimum(m, agq)
    assert m.optsum.optimizer.startswith("LN_BOBYQA (nAGQ = 0), then")


def test_start_forms_agree(cbpp):
    theta, beta = [0.7], [-1.4, -1.0, -1.1, -1.6]
    plain = mm.GeneralizedLinearMixedModel(CBPP, cbpp, nagq=25).fit(start=np.array(theta))
    keyed = mm.GeneralizedLinearMixedModel(CBPP, cbpp, nagq=25).fit(start={"theta": theta})
    assert plain.deviance == keyed.deviance
    np.testing.assert_array_equal(plain.fixef, keyed.fixef)
    by_list = mm.GeneralizedLinearMixedModel(CBPP, cbpp, nagq=25).fit(
        start={"theta": theta, "fixef": beta}, nagq0_init_step=False)
    by_name = mm.GeneralizedLinearMixedModel(CBPP, cbpp, nagq=25).fit(
        start={"theta": theta, "fixef": dict(zip(reversed(FIXEF_NAMES), reversed(beta)))},
        nagq0_init_step=False)
    assert by_list.deviance == by_name.deviance
    np.testing.assert_array_equal(by_list.fixef, by_name.fixef)


@pytest.mark.parametrize(
    "start, message",
    [
        ([0.5, 0.5], r"start \(θ\) needs 1 finite number\(s\), for \['herd.\(Intercept\)'\]"),
        ({"theta": [[0.5]]}, r"start\['theta'\] needs 1 finite number"),
        ({"theta": [np.nan]}, r"start\['theta'\] needs 1 finite number"),
        ({"fixef": [0.0, 0.0]}, r"start\['fixef'\] needs 4 finite number\(s\), for "
                                r"\['\(Intercept\)', 'period2', 'period3', 'period4'\]"),
        ({"fixef": {"(Intercept)": 0.0, "period9": 0.0}}, r"needs the 4 fixed effects"),
        ({"fixef": "abc"}, r"start\['fixef'\] needs 4 finite number"),
        ({"beta": [0.0] * 4}, r"keys 'theta' and 'fixef'.*\['beta'\]"),
    ],
)
def test_bad_starts_are_refused_naming_what_is_expected(cbpp, start, message):
    model = mm.GeneralizedLinearMixedModel(CBPP, cbpp)
    with pytest.raises(ModelSpecError, match=message):
        model.fit(start=start)


def test_fixef_start_needs_a_deviance_over_beta(cbpp):
    with pytest.raises(ModelSpecError, match="nagq >= 1"):
        mm.glmer(CBPP, cbpp, family="binomial", nagq=0, start={"fixef": [0.0] * 4})
