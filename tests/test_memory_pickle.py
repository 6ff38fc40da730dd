"""A fitted model keeps what results and inference need: the blocked engine
is dropped after the fit and left out of pickles, the factor is left out of
pickles, and both are rebuilt from the model frame when a method needs them."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm

INSTEVAL = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)"


def _array_bytes(obj) -> int:
    """Bytes of the numpy arrays, sparse matrices and pandas objects reachable
    from ``obj`` through attributes and containers, each buffer counted once."""
    seen: set[int] = set()
    total, stack = 0, [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            base = o
            while isinstance(base.base, np.ndarray):
                base = base.base
            if base is o or id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
        elif isinstance(o, (pd.DataFrame, pd.Series)):
            total += int(np.sum(o.memory_usage(deep=True)))
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif not isinstance(o, type) and isinstance(getattr(o, "__dict__", None), dict):
            stack.extend(vars(o).values())  # objects, sparse matrices included
    return total


@pytest.fixture(scope="module")
def insteval():
    return mm.datasets.load("InstEval")


@pytest.fixture(scope="module")
def insteval_fit(insteval):
    return mm.lmer(INSTEVAL, insteval, reml=False)


def test_a_fitted_insteval_model_holds_at_most_five_times_its_frame(insteval_fit):
    frame = _array_bytes(insteval_fit.frame)
    assert frame > 1e6  # 73,421 rows: the measure sees the data
    assert _array_bytes(insteval_fit) <= 5 * frame  # was ~10x: 51 MB for a 5 MB frame


def test_insteval_pickles_to_at_most_10_mb(insteval_fit):
    assert len(pickle.dumps(insteval_fit)) <= 10e6  # was 53 MB


def test_every_method_works_after_unpickling(insteval, insteval_fit):
    m = insteval_fit
    r = pickle.loads(pickle.dumps(m))
    assert str(r.summary()) == str(m.summary())
    np.testing.assert_array_equal(r.fixef, m.fixef)
    np.testing.assert_allclose(r.vcov.to_numpy(), m.vcov.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(r.confint(method="Wald").to_numpy(), m.confint(method="Wald").to_numpy(), rtol=1e-12)
    for name in ("s", "d", "dept"):
        np.testing.assert_array_equal(r.ranef[name].to_numpy(), m.ranef[name].to_numpy())
        np.testing.assert_allclose(r.ranef_condsd[name].to_numpy(), m.ranef_condsd[name].to_numpy(), rtol=1e-10)
    new = insteval.head(50)
    np.testing.assert_array_equal(r.predict(new), m.predict(new))
    np.testing.assert_allclose(
        r.coef_table(ddf="satterthwaite").to_numpy(), m.coef_table(ddf="satterthwaite").to_numpy(), rtol=1e-8
    )
    # refit on a new response: the same as refitting the original
    y = np.asarray(m.fitted) + np.asarray(m.residuals())[::-1]
    np.testing.assert_allclose(r.refit(y).theta, m.refit(y).theta, rtol=1e-10)
    null = mm.lmer("y ~ 1 + (1 | s) + (1 | d) + (1 | dept)", insteval, reml=False)
    np.testing.assert_allclose(
        mm.anova(null, r).to_numpy(dtype=float), mm.anova(null, m).to_numpy(dtype=float), rtol=1e-10
    )
    # lme4's deviance (reference case lmer_insteval_ml)
    assert r.deviance == pytest.approx(237721.768775888, rel=1e-9)


def test_profile_and_refit_after_unpickling_a_small_model():
    sleep = mm.datasets.load("sleepstudy")
    m = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    r = pickle.loads(pickle.dumps(m))
    assert "system" not in r.__dict__ and "fitted_factor" not in r.__dict__
    np.testing.assert_allclose(
        r.confint(method="profile").to_numpy(), m.confint(method="profile").to_numpy(), rtol=1e-8
    )
    np.testing.assert_allclose(r.refit(sleep["Reaction"] * 2.0).fixef, 2.0 * m.fixef, rtol=1e-6)
