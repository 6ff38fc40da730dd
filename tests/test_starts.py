"""Starting values of θ: moment estimates that land near lme4's optimum."""

import numpy as np

import mixedmodels as mm
from _reference import load_case
from mixedmodels.models.lmm.starts import one_way_ratio


def _theta(case_id):
    return np.array(list(load_case(case_id)["theta"].values()))


def test_two_stage_start_is_the_reml_optimum_on_balanced_data():
    """sleepstudy is balanced (every subject on days 0-9): the two-stage moment
    estimate of the 2 x 2 covariance is the REML estimate itself."""
    m = mm.LinearMixedModel("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
    np.testing.assert_allclose(m.initial_theta(), _theta("lmer_sleepstudy_reml"), rtol=1e-5, atol=1e-6)


def test_backfitted_start_improves_on_one_way_anova_for_crossed_terms():
    """Penicillin's plate and sample are crossed: each term's ANOVA from the
    residuals less the other's shrunken means lands within 10% of lme4's θ,
    closer than the plain one-way estimates (whose within-group variance holds
    the other factor's effects)."""
    data = mm.datasets.load("Penicillin")
    m = mm.LinearMixedModel("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    ref = _theta("lmer_penicillin")
    start = m.initial_theta()
    resid = m.frame.y - m.frame.y.mean()
    plain = np.array([one_way_ratio(resid, t.codes, t.nlevels, False) for t in m.frame.terms])
    np.testing.assert_allclose(start, ref, rtol=0.1)
    assert np.all(np.abs(start - ref) < np.abs(plain - ref))


def test_ml_start_is_the_one_way_ml_estimate():
    """An ML fit starts from each grouping's one-way ML ratio (Newton steps on
    its profiled deviance from the ANOVA one): on the balanced one-way
    Dyestuff that is the optimum itself, where the ANOVA start (the REML
    estimate) is 11% off, and the search ends at its first point."""
    data = mm.datasets.load("Dyestuff")
    ml = mm.LinearMixedModel("Yield ~ 1 + (1 | Batch)", data, reml=False)
    start = ml.initial_theta()
    ml.fit()
    np.testing.assert_allclose(start, ml.theta.values, rtol=1e-6)
    assert ml.optsum.evaluations == 1
    reml = mm.LinearMixedModel("Yield ~ 1 + (1 | Batch)", data)
    assert abs(reml.initial_theta()[0] / start[0] - 1) > 0.1
