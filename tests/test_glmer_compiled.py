"""The compiled PIRLS steps (Numba) give the numpy path's numbers.

Every model here is fitted twice, once with the compiled steps and once with
``MIXEDMODELS_NUMBA=0`` (the numpy path), and the two must
agree to rounding: same deviance, estimates and modes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.models.glmm import compiled as glmm_compiled
from mixedmodels.models.glmm import optimizer as glmm_optimizer

pytest.importorskip("numba")  # the compiled path needs the [fast] extra


def _both(monkeypatch, formula, data, **kw):
    compiled = mm.glmer(formula, data, **kw)
    assert compiled._engine.compiled is not None
    with monkeypatch.context() as mp:
        mp.setenv("MIXEDMODELS_NUMBA", "0")
        plain = mm.glmer(formula, data, **kw)
    assert plain._engine.compiled is None
    return compiled, plain


def _same(a, b, rtol=1e-7):
    assert a.deviance == pytest.approx(b.deviance, abs=1e-8)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=rtol, atol=1e-10)
    np.testing.assert_allclose(a.theta, b.theta, rtol=rtol, atol=1e-10)
    np.testing.assert_allclose(a.fitted, b.fitted, rtol=1e-7)


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_binomial_links(monkeypatch, link):
    cbpp = mm.datasets.load("cbpp")
    a, b = _both(monkeypatch, "cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
                 family="binomial", link=link)
    _same(a, b)


def test_poisson_three_crossed_terms(monkeypatch):
    ticks = mm.datasets.load("grouseticks")
    a, b = _both(monkeypatch, "TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
                 ticks, family="poisson")
    _same(a, b, rtol=1e-6)


def test_covariate_term_weights_zero_rows_and_nagq0(monkeypatch):
    rng = np.random.default_rng(5)
    n = 600
    d = pd.DataFrame({
        "g": rng.integers(0, 40, n).astype(str),
        "h": rng.integers(0, 7, n).astype(str),
        "x": rng.normal(size=n),
    })
    eta = -0.3 + 0.8 * d["x"] + rng.normal(size=40)[d["g"].astype(int)]
    d["y"] = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    w = np.where(np.arange(n) % 50 == 0, 0.0, 1.0)  # rows with zero prior weight
    for nagq in (0, 1):
        a, b = _both(monkeypatch, "y ~ x + (1 | g) + (0 + x | h)", d, family="binomial",
                     weights=w, nagq=nagq)
        _same(a, b, rtol=1e-6)


def test_single_term_without_fixed_effects(monkeypatch):
    cbpp = mm.datasets.load("cbpp")
    a, b = _both(monkeypatch, "cbind(incidence, size - incidence) ~ 0 + (1 | herd)", cbpp,
                 family="binomial", nagq=5)
    _same(a, b)


def test_probes_on_worker_threads_give_the_same_fit(monkeypatch):
    ticks = mm.datasets.load("grouseticks")
    formula = "TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)"
    monkeypatch.setattr(glmm_optimizer, "PARALLEL_PROBE_SECONDS", 0.0)  # share out whatever the speed
    one = mm.GeneralizedLinearMixedModel(formula, ticks, family="poisson").fit(threads=1)
    two = mm.GeneralizedLinearMixedModel(formula, ticks, family="poisson").fit(threads=2)
    assert one._workers == 1 and two._workers == 2
    assert two.deviance == one.deviance
    np.testing.assert_array_equal(two.fixef, one.fixef)
    np.testing.assert_array_equal(two.vcov, one.vcov)
    assert two.optsum.evaluations == one.optsum.evaluations


@pytest.mark.parametrize("nagq", [0, 1])
def test_fused_loop_equals_the_stepwise_compiled_path(monkeypatch, nagq):
    # small Schur blocks run the whole PIRLS loop in one compiled call; larger
    # ones step by step with LAPACK: the same numbers
    verbagg = mm.datasets.load("VerbAgg")
    formula = "r2 ~ btype + (1 | id) + (1 | item)"  # Schur block: 24 items + 3
    fused = mm.glmer(formula, verbagg, family="binomial", nagq=nagq)
    assert fused._engine.compiled.fused(True)
    monkeypatch.setattr(glmm_compiled, "FUSED_MAX_BLOCK", 0)
    stepwise = mm.glmer(formula, verbagg, family="binomial", nagq=nagq)
    assert not stepwise._engine.compiled.fused(True)
    _same(fused, stepwise, rtol=1e-6)


@pytest.mark.parametrize("joint", [True, False])
def test_first_step_system_rescaled_from_unit_sums(joint):
    # every sum of the PWLS system is the weights times at most two λ's (and,
    # for a fixed β, its right-hand side is linear in β): the first step's
    # system from the sums at unit λ equals the one assembled over the rows
    from mixedmodels.linalg.kernels import glmm_numba as K

    ticks = mm.datasets.load("grouseticks")
    m = mm.GeneralizedLinearMixedModel(
        "TICKS ~ YEAR + sHEIGHT + (1 | BROOD) + (0 + sHEIGHT | INDEX) + (1 | LOCATION)", ticks,
        family="poisson",
    )
    e, c = m._engine, m._engine.compiled
    rng = np.random.default_rng(3)
    eta = np.log(e.y + 0.5) + 0.1 * rng.normal(size=len(e.y))
    mu = np.exp(eta)
    lam = np.array([0.7, 1.9, 0.3])
    beta = rng.normal(size=c.X.shape[1])
    unit = c.unit_sums(e, eta, mu)
    scaled = K.scaled_sums(unit, lam, c.offs, c.Q1, beta, joint)
    X, XT = (c.X, c.XT) if joint else (c.no_x, c.no_xt)
    offset = e.offset if joint else e.offset + c.X @ beta
    direct = K.weighted_sums(c.codes, c.zv, lam, c.offs, X, XT, eta, mu, e.y, e.wt, offset,
                             c.link, c.fam, c.l0, c.Q1)
    names = ["L0", "c0", "R", "S", "yr"]
    for name, got, want in zip(names, scaled, direct):
        if name == "S":  # the random-effects part is kept as its upper triangle
            got, want = np.triu(got), np.triu(want)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max(), err_msg=name)


def test_vectorised_exp_within_one_ulp_of_libm():
    from mixedmodels.linalg.kernels import glmm_numba as K

    rng = np.random.default_rng(11)
    x = np.concatenate([rng.uniform(-708, 709, 100_000), rng.uniform(-30, 30, 100_000),
                        [0.0, -708.0, 709.0, 1e-300, -1e-300, np.log(2) / 2, -np.log(2) / 2]])
    out = np.empty_like(x)
    K.exp_into(x, out, -708.0, 709.0)
    want = np.exp(x)
    assert np.max(np.abs(out - want) / np.spacing(want)) <= 1.0
    # outside [lo, hi] the argument is clamped (callers handle those rows)
    K.exp_into(np.array([-50.0, 50.0]), out[:2], -30.0, 30.0)
    np.testing.assert_allclose(out[:2], np.exp([-30.0, 30.0]), rtol=3e-16)


@pytest.mark.parametrize("order", ["item", "id", "shuffled"])
def test_system_sums_do_not_depend_on_the_row_order(order):
    # rows sorted by a term take that term's sums in running registers; the
    # sums are the same whatever the order (to rounding)
    from mixedmodels.linalg.kernels import glmm_numba as K

    verbagg = mm.datasets.load("VerbAgg")
    rng = np.random.default_rng(2)
    rows = {"item": np.lexsort((verbagg["id"], verbagg["item"])),
            "id": np.lexsort((verbagg["item"], verbagg["id"])),
            "shuffled": rng.permutation(len(verbagg))}[order]

    def sums(perm):
        data = verbagg.iloc[perm].reset_index(drop=True)
        m = mm.GeneralizedLinearMixedModel("r2 ~ Anger + btype + (1 | id) + (1 | item)", data,
                                           family="binomial")
        e, c = m._engine, m._engine.compiled
        eta = 0.3 * np.sin(perm) + c.X @ [0.2, 0.05, -1.0, -2.0]  # each row's own η
        mu = 1 / (1 + np.exp(-eta))
        lam = np.array([1.3, 0.5])
        out = {}
        for joint in (True, False):
            X, XT = (c.X, c.XT) if joint else (c.no_x, c.no_xt)
            out[joint] = K.weighted_sums(c.codes, c.zv, lam, c.offs, X, XT, eta, mu, e.y, e.wt,
                                         e.offset, c.link, c.fam, c.l0, c.Q1)
        return out

    base, other = sums(np.arange(len(verbagg))), sums(rows)
    for joint in (True, False):
        for name, a, b in zip(["L0", "c0", "R", "S", "yr"], base[joint], other[joint]):
            if name == "S":
                a, b = np.triu(a), np.triu(b)
            np.testing.assert_allclose(b, a, rtol=1e-11, atol=1e-11 * np.abs(a).max(), err_msg=name)
