"""lmer's gradient search never stops short at a point where the gradient
vanishes without a minimum there.

Two ways it did (each test fails on the code before the check):

- a scalar term whose grouping factor is aliased with a fixed-effects factor
  (the same partition): the REML criterion does not depend on its θ, its
  curvature estimate was ~1e-31, the scaled search's first step went to θ ~
  1e15, and L-BFGS-B reported convergence at its start, 1e-3 to 1e-2 above
  the optimum BOBYQA finds;
- a start with θ exactly 0 (the objective is even in a diagonal element of
  λ, so its derivative is exactly 0 there): accepted as the optimum.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm


@pytest.fixture(scope="module")
def aliased():
    """y with a fixed factor f, f2 the same partition under other labels,
    crossed factors g and h; fixed seed."""
    rng = np.random.default_rng(42)
    n_f, n_g, n_h, reps = 6, 15, 10, 4
    f, g, _ = np.meshgrid(np.arange(n_f), np.arange(n_g), np.arange(reps), indexing="ij")
    f, g = f.ravel(), g.ravel()
    h = rng.integers(0, n_h, f.size)
    y = (
        rng.normal(0, 1, n_f)[f]
        + rng.normal(0, 0.7, n_g)[g]
        + rng.normal(0, 0.5, n_h)[h]
        + rng.normal(0, 1, f.size)
    )
    return pd.DataFrame(
        {
            "f": [f"F{i}" for i in f],
            "f2": [f"L{i}" for i in f],
            "g": [f"G{i}" for i in g],
            "h": [f"H{i}" for i in h],
            "y": y,
        }
    )


def fit(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mm.SingularFitWarning)
        return mm.lmer(formula, data, **kwargs)


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(
    "formula", ["y ~ f + (1 | f2) + (1 | g)", "y ~ f + (1 | f2) + (1 | g) + (1 | h)"]
)
def test_aliased_scalar_term_reaches_the_derivative_free_optimum(aliased, formula, reml):
    ours = fit(formula, aliased, reml=reml)
    bobyqa = fit(formula, aliased, reml=reml, optimizer="bobyqa")
    assert ours.fitted_objective <= bobyqa.fitted_objective + 1e-6
    assert ours.optsum.converged
    # the other terms' variances are identified: they agree with BOBYQA's
    other = [name for name in ours.theta.index if not name.startswith("f2")]
    np.testing.assert_allclose(ours.theta[other], bobyqa.theta[other], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "formula, start",
    [
        ("Reaction ~ Days + (1 | Subject)", [0.0]),
        ("Reaction ~ Days + (Days | Subject)", [0.0, 0.0, 0.0]),
        ("Reaction ~ Days + (Days | Subject)", [1.0, 0.0, 0.0]),
    ],
)
def test_start_on_zero_variance_is_not_taken_for_the_optimum(formula, start):
    sleep = mm.datasets.load("sleepstudy")
    ours = mm.LinearMixedModel(formula, sleep).fit(start=np.array(start))
    bobyqa = fit(formula, sleep, optimizer="bobyqa")
    assert ours.fitted_objective <= bobyqa.fitted_objective + 1e-6
    assert not ours.is_singular


@pytest.mark.parametrize(
    "name, formula, data, kwargs, evaluations",
    [
        ("sleepstudy REML", "Reaction ~ Days + (Days | Subject)", "sleepstudy", {}, 1),
        ("sleepstudy ML", "Reaction ~ Days + (Days | Subject)", "sleepstudy", {"reml": False}, 11),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", {}, 5),
        (
            "InstEval ML",
            "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)",
            "InstEval",
            {"reml": False},
            6,
        ),
    ],
)
def test_check_costs_no_evaluations_on_ordinary_fits(name, formula, data, kwargs, evaluations):
    """The probes run only at exact zeros or after failed first steps: the
    reference fits take as many evaluations as before the check."""
    m = mm.lmer(formula, mm.datasets.load(data), **kwargs)
    assert m.optsum.evaluations == evaluations, name


def test_search_whose_every_step_fails_is_not_reported_converged():
    """A degenerate scaling (here a curvature estimate of 1e-31, as an aliased
    term gave) sends every trial step into non-finite values: L-BFGS-B then
    reported convergence at its start."""
    from mixedmodels.optim.minimize import minimize_theta_gradient

    def value_gradient(x):
        if np.any(np.abs(x) > 1e6):
            return np.inf, np.zeros(2)
        return float((x[0] - 1.0) ** 2 + 1e-3 * x[1] ** 2), np.array([2 * (x[0] - 1.0), 2e-3 * x[1]])

    def start_evaluation(x):
        return (*value_gradient(x), np.array([2.0, 1e-31]))

    record = minimize_theta_gradient(
        value_gradient,
        lambda x: value_gradient(x)[0],
        np.array([0.5, 0.05]),
        np.full(2, -np.inf),
        start_evaluation=start_evaluation,
    )
    assert not record.converged


def test_lmer_finishes_a_stalled_search_derivative_free(aliased, monkeypatch):
    """With the aliased term's degenerate curvature estimate forced back in,
    the stalled gradient search is finished by BOBYQA: the optimum is reached
    all the same."""
    formula = "y ~ f + (1 | f2) + (1 | g) + (1 | h)"
    bobyqa = fit(formula, aliased, optimizer="bobyqa")
    aliased_term = np.array([name.startswith("f2") for name in bobyqa.theta.index])

    def degenerate(self, theta, parts):
        return np.where(aliased_term, 1e-31, 50.0)

    monkeypatch.setattr(mm.LinearMixedModel, "curvature_estimate", degenerate)
    ours = fit(formula, aliased)
    assert ours.fitted_objective <= bobyqa.fitted_objective + 1e-6
    assert "BOBYQA" in ours.optsum.optimizer
