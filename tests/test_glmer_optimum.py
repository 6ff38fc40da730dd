"""glmer's default fit reaches lme4's optimum, or a lower one, in the same deviance (issue 14).

With lme4's PIRLS tolerance (1e-7) the Laplace deviance at (θ, β) carries an
offset of the order of the square root of the tolerance (its log-determinant
is taken at the weights of PIRLS's last step's start, not at the modes). The
offset grows from zero near the nAGQ = 0 stage's end, where every evaluation
starts, and falls back to almost zero where PIRLS needs one step more: the
deviance is a sawtooth over the Laplace approximation, and Newton used to stop
at the bottom of a raised tooth.

The two data sets (tests/reference/data/glmer_plateau_*.csv) are simulated
logistic designs of mlmRev's Contraception shape; R's numbers come from
tests/reference/r/glmer_optimum.R (R 4.2.2, lme4 1.1-31), whose output is
quoted below.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import REFERENCE_DIR
from mixedmodels.exceptions import ConvergenceWarning

FORMULA = "use ~ age + I(age^2) + urban + livch + (1|district)"
FIXEF_NAMES = ["(Intercept)", "age", "I(age^2)", "urbanY", "livch1", "livch2", "livch3+"]
OBJ_SLACK = 1e-6
SE_RTOL = 2e-3

# glmer(use ~ age + I(age^2) + urban + livch + (1 | district), d, family = binomial)
# on glmer_plateau_lower.csv, lme4 1.1-31: Nelder-Mead ends on the lower tooth
# (main's Newton stopped 0.0273 above it, at 936.7843529)
LOWER_R = {
    "deviance": 936.7570579704,
    "theta": 2.40062566863,
    "fixef": [-2.74871789673, 0.0165872578306, -0.00610895433933, 0.867766652005,
              0.164432804534, 0.118397244789, 0.229641201778],
    "se": [0.50449363, 0.012147594, 0.0011888779, 0.20689617, 0.26747378, 0.27829621, 0.22116251],
}
# on glmer_plateau_edge.csv, lme4 1.1-31 default: Nelder-Mead ends at the edge of
# a lower tooth, 1230.3704437434, and says "Model failed to converge with
# max|grad| = 0.0854278" (its SEs, 0.00083, come from a Hessian across the edge);
# main stopped at 1230.3929943. With control = glmerControl(tolPwrss = 1e-12):
EDGE_R_DEFAULT_DEVIANCE = 1230.3704437434
EDGE_R_TIGHT = {
    "deviance": 1230.3687240029,
    "theta": 1.3223248394,
    "fixef": [-1.85129441321, -8.89772974206e-05, -0.00586510260186, 0.43466564959,
              0.608371730434, 0.388991387297, 0.291158670961],
    "se": [0.24797643, 0.0096616975, 0.0010386944, 0.16241032, 0.23008456, 0.24728966, 0.20247181],
}


def _plateau_data(name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / "data" / f"{name}.csv", dtype={"livch": str})


def _fit(data: pd.DataFrame, **kwargs) -> tuple[mm.GeneralizedLinearMixedModel, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = mm.glmer(FORMULA, data, family="binomial", **kwargs)
    return model, [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def _assert_estimates(model, ref) -> None:
    """θ and SEs relative; β in standard errors (1e-3 SE): R's own default and
    tight fits place livch2 1e-4 apart, the deviance does not fix it better."""
    assert list(model.fixef.index) == FIXEF_NAMES
    assert model.theta.iloc[0] == pytest.approx(ref["theta"], rel=1e-4)
    se = np.asarray(ref["se"])
    np.testing.assert_allclose(model.se.to_numpy(), se, rtol=SE_RTOL)
    np.testing.assert_allclose(model.fixef.to_numpy() / se, np.asarray(ref["fixef"]) / se, atol=1e-3)


@pytest.fixture(scope="module")
def lower_fit():
    return _fit(_plateau_data("glmer_plateau_lower"))


@pytest.fixture(scope="module")
def edge_fit():
    return _fit(_plateau_data("glmer_plateau_edge"))


def test_goes_on_past_a_raised_tooth_to_lme4s_optimum(lower_fit):
    model, conv_warnings = lower_fit
    assert model.deviance <= LOWER_R["deviance"] + OBJ_SLACK
    assert not model.pirls_converged  # lme4's deviance, which has its minimum there
    assert "restarted past" in model.optsum.optimizer
    assert not conv_warnings and model.convergence.ok
    _assert_estimates(model, LOWER_R)


def test_no_minimum_at_lme4s_tolerance_gives_the_converged_fit(edge_fit):
    model, conv_warnings = edge_fit
    # below lme4's default (an edge point) and its own tight-tolerance fit
    assert model.deviance <= EDGE_R_DEFAULT_DEVIANCE + OBJ_SLACK
    assert model.deviance <= EDGE_R_TIGHT["deviance"] + OBJ_SLACK
    assert model.pirls_converged
    assert "PIRLS to convergence" in model.optsum.optimizer
    assert not conv_warnings and model.convergence.ok
    _assert_estimates(model, EDGE_R_TIGHT)


def test_the_deviance_reported_is_the_fits_objective_at_its_estimates(lower_fit, edge_fit):
    for model, _ in (lower_fit, edge_fit):
        params = np.concatenate([model.theta.to_numpy(), model.fixef.to_numpy()])
        assert model.objective(params) == pytest.approx(model.deviance, abs=1e-9)


def test_plateau_offset_is_what_the_converged_modes_remove(lower_fit):
    """The fit's deviance at lme4's tolerance against the one at converged
    modes: 0.027 apart at main's stopping point (on a raised tooth, 936.78435),
    4e-5 where the fit ends (PIRLS took one step more there)."""
    model, _ = lower_fit
    mains_stop = np.array([2.3778627213, -2.725282824, 0.0165599545, -0.0060994501,
                           0.8664481232, 0.1639292263, 0.1180808777, 0.2291888926])
    assert model.objective(mains_stop) == pytest.approx(936.7843528989, abs=1e-6)
    assert model.objective(mains_stop) - model.objective_converged(mains_stop) > 0.02
    at_optimum = np.concatenate([model.theta.to_numpy(), model.fixef.to_numpy()])
    assert abs(model.deviance - model.objective_converged(at_optimum)) < 1e-4
    assert model.deviance < model.objective(mains_stop) - 0.027


def test_reference_fits_keep_lme4s_deviance():
    """Where lme4's deviance has its minimum, the fit stays on it (the SEs
    then are lme4's, computed from that deviance's Hessian)."""
    cbpp = mm.datasets.load("cbpp")
    model = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
                     family="binomial")
    assert not model.pirls_converged
    assert model.optsum.optimizer.endswith("then Newton (deriv12)")
    params = np.concatenate([model.theta.to_numpy(), model.fixef.to_numpy()])
    # the offset lme4's tolerance leaves there (kept, as lme4 keeps it)
    assert model.deviance - model.objective_converged(params) == pytest.approx(5.6e-4, abs=5e-5)


def _contraception_like(seed: int) -> pd.DataFrame:
    """Logistic, ~1,700 rows, ~60 districts of unequal sizes, age (quadratic),
    a binary and a four-level factor, random-intercept SD 0.5-1."""
    rng = np.random.default_rng(seed)
    n, groups = int(rng.integers(1600, 1950)), int(rng.integers(55, 65))
    sd, intercept = rng.uniform(0.5, 1.0), rng.uniform(-2.0, 0.5)
    size = rng.gamma(rng.uniform(0.5, 3.0), 1.0, groups)
    district = rng.choice(groups, n, p=size / size.sum())
    age = np.round(rng.uniform(-14, 20, n), 1)
    urban = rng.random(n) < rng.uniform(0.2, 0.5)
    livch = rng.choice(4, n, p=[0.27, 0.19, 0.17, 0.37])
    effect = np.concatenate([[0.0], rng.normal(0.7, 0.4, 3)])
    eta = (intercept + 0.005 * age - 0.004 * age**2 + 0.7 * urban + effect[livch]
           + rng.normal(0.0, sd, groups)[district])
    use = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    return pd.DataFrame({
        "use": use, "age": age, "urban": np.where(urban, "Y", "N"),
        "livch": np.array(["0", "1", "2", "3+"])[livch], "district": [f"d{g:02d}" for g in district],
    })


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_simulated_designs_reach_the_best_point(seed):
    """The default is within 1e-6 of the optimum of a fit at converged modes,
    both in its own deviance."""
    data = _contraception_like(seed)
    model, conv_warnings = _fit(data)
    tight, _ = _fit(data, pirls_tol=1e-10)
    tight_point = np.concatenate([tight.theta.to_numpy(), tight.fixef.to_numpy()])
    assert model.deviance <= model.objective(tight_point) + OBJ_SLACK
    assert not conv_warnings


@pytest.mark.parametrize("name", ["glmer_plateau_lower", "glmer_plateau_edge"])
def test_numpy_steps_take_the_same_way(monkeypatch, name):
    """Without the compiled PIRLS steps the same plateau is left the same way."""
    data = _plateau_data(name)
    compiled, _ = _fit(data)
    monkeypatch.setenv("MIXEDMODELS_NUMBA", "0")
    plain, _ = _fit(data)
    assert plain._engine.compiled is None
    assert plain.pirls_converged is compiled.pirls_converged
    assert plain.optsum.optimizer == compiled.optsum.optimizer
    assert plain.deviance == pytest.approx(compiled.deviance, abs=1e-8)
    np.testing.assert_allclose(plain.se, compiled.se, rtol=1e-5)
