"""rlrt when no simulated value exceeds the statistic: the p-value is below
the simulation's resolution, reported as the bound 1/nsim (never p = 0)."""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm


@pytest.fixture(scope="module")
def sleep_models():
    s = mm.datasets.load("sleepstudy")
    alt = mm.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", s)
    null = mm.lmer("Reaction ~ Days + (1 | Subject)", s)
    return alt, null


def test_p_below_resolution_is_reported_as_a_bound(sleep_models):
    # RLRsim: RLRT 42.796, 0 of 10000 simulated values above it (main: p = 0.0)
    res = mm.rlrt(*sleep_models, nsim=2000, seed=1)
    assert not np.any(res.sample > res.statistic)
    assert res.p_is_bound
    assert res.p_value == 1 / 2000
    assert res.p_text == "< 0.0005"
    assert "p-value < 0.0005" in str(res)
    assert "none of 2000 simulated values" in str(res)
    series = res.to_series()
    assert series["p_value"] == 1 / 2000 and series.attrs["p_is_bound"] is True


def test_p_within_resolution_is_the_share_above():
    # R: exactRLRT(lmer(Yield ~ 1 + (1|Batch), Dyestuff)): RLRT 6.369, p about 0.005
    m = mm.lmer("Yield ~ 1 + (1 | Batch)", mm.datasets.load("Dyestuff"))
    res = mm.rlrt(m, nsim=4000, seed=3)
    exceed = int(np.count_nonzero(res.sample > res.statistic))
    assert exceed > 0
    assert not res.p_is_bound
    assert res.p_value == exceed / 4000
    assert f"p-value = {res.p_value:.4g} (4000 simulated values)" in str(res)
    assert res.to_series().attrs["p_is_bound"] is False
