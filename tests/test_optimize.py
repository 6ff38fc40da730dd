"""The optimizer's record: evaluations and time are those of the search."""

import time

import mixedmodels as mm


def test_every_evaluation_is_done_and_counted_once():
    """L-BFGS-B's first point is the one evaluated to set the gradient
    tolerance: it is reused, not computed twice, and counted once."""
    model = mm.LinearMixedModel("diameter ~ 1 + (1|plate) + (1|sample)", mm.datasets.load("Penicillin"))
    calls = []
    evaluate = model._evaluate  # every evaluation with the gradient passes here
    model._evaluate = lambda theta: calls.append(1) or evaluate(theta)
    model.fit()
    assert len(calls) == model.optsum.evaluations > 1


def test_optimizer_time_includes_its_first_evaluation():
    model = mm.LinearMixedModel("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
    evaluate = model.objective_gradient

    def slow(theta):
        time.sleep(0.05)
        return evaluate(theta)

    model.objective_gradient = slow
    model.fit()
    assert model.optsum.elapsed >= 0.05 * model.optsum.evaluations
