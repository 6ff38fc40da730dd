"""glmer with other families and links than the reference cases', against
lme4 1.1-31 (R 4.2.2) on a simulated data set (the same numbers are drawn
here): Gamma and inverse Gaussian with a log link (families with a scale:
lme4's sigma, and the random effects' variances scaled by sigma²) and Poisson
with a square-root link. R's calls::

    d <- read.csv("gam.csv", stringsAsFactors = TRUE)
    glmer(y ~ x + (1 | g) + (1 | h), d, family = Gamma(link = "log"))
    glmer(y ~ x + (1 | g) + (1 | h), d, family = inverse.gaussian(link = "log"))
    glmer(round(y) ~ x + (1 | g) + (1 | h), d, family = poisson(link = "sqrt"))
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import assert_close


def _data() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 600
    g, h, x = rng.integers(0, 30, n), rng.integers(0, 8, n), rng.standard_normal(n)
    b, c = rng.normal(0, 0.4, 30), rng.normal(0, 0.2, 8)
    mu = np.exp(1 + 0.3 * x + b[g] + c[h])
    y = rng.gamma(4, mu / 4)
    return pd.DataFrame({
        "y": y, "yr": np.round(y), "x": x,
        "g": "g" + pd.Series(g).astype(str), "h": "h" + pd.Series(h).astype(str),
    })


R = {
    ("gamma", "log", "y"): dict(
        deviance=2174.0130740635, fixef=[1.0891505516, 0.3280187142],
        theta=[0.4811518333, 0.2224855196], sigma=0.5187798655, se=[0.107972010, 0.021026319],
        vcov=[0.062306092, 0.013322009, 0.269132549], condsd=[0.110587, 0.104884, 0.113038],
    ),
    ("inverse_gaussian", "log", "y"): dict(
        deviance=2270.6534259774, fixef=[1.1354914708, 0.3370385369],
        theta=[0.6718911285, 0.3229119761], sigma=0.3216348293, se=[0.128725125, 0.024658836],
        vcov=[0.046700761, 0.010786845, 0.103448963], condsd=[0.0983493, 0.1125054, 0.1050025],
    ),
    ("poisson", "sqrt", "yr"): dict(
        deviance=2365.5733822349, fixef=[1.7970931958, 0.2783526811],
        theta=[0.3008945897, 0.1356719731], sigma=1.0, se=[0.075859682, 0.020764589],
        vcov=[0.090537554, 0.018406884], condsd=[0.112091, 0.106150, 0.114692],
    ),
}


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.mark.parametrize("family, link, response", list(R))
def test_against_lme4(data, family, link, response):
    ref = R[(family, link, response)]
    m = mm.glmer(f"{response} ~ x + (1 | g) + (1 | h)", data, family=family, link=link)
    assert m.deviance <= ref["deviance"] + 1e-6
    assert_close(m.deviance, ref["deviance"], atol=1e-3, what="deviance")
    assert_close(m.fixef, ref["fixef"], rtol=1e-4, what="fixef")
    assert_close(m.theta, ref["theta"], atol=1e-3, what="theta")
    assert_close(m.sigma, ref["sigma"], rtol=2e-3, what="sigma")
    assert_close(m.se, ref["se"], rtol=2e-3, what="se")
    assert_close(m.varcorr["vcov"], ref["vcov"], rtol=4e-3, what="varcorr vcov")
    assert ("Residual" in set(m.varcorr["grp"])) is (family != "poisson")
    assert_close(m.ranef_condsd["g"].iloc[:3, 0], ref["condsd"], rtol=2e-3, what="condsd")
    assert m.convergence.ok


@pytest.fixture(scope="module")
def grouse():
    return mm.datasets.load("grouseticks")


def test_poisson_quadrature_against_lme4(grouse):
    """lme4 1.1-31: glmer(TICKS ~ YEAR + sHEIGHT + (1 | BROOD), grouseticks,
    poisson, nAGQ = 10). lme4's log-likelihood (-523.455) lacks the saturated
    part (as for binomial counts, lme4 issue 161); ours is on the Laplace
    fit's scale (lme4's nAGQ = 1 gives -989.0377)."""
    m = mm.glmer("TICKS ~ YEAR + sHEIGHT + (1 | BROOD)", grouse, family="poisson", nagq=10)
    assert_close(m.fixef, [0.509916678, 1.134954165, -1.000702608, -0.857365497], rtol=1e-4, what="fixef")
    assert_close(m.theta, [0.954083021], atol=1e-3, what="theta")
    assert_close(m.se, [0.1872029, 0.2432727, 0.2706943, 0.1086318], rtol=2e-3, what="se")
    laplace = -989.03774607
    assert laplace < m.loglik < laplace + 0.5


def test_vector_first_term_against_lme4(grouse):
    """A correlated slope term first (63 locations x 2 = 126 random effects,
    more than BROOD's 118): lme4 1.1-31 stops with max|grad| 0.005 at deviance
    1973.70097943; the estimates agree to 1e-3 standard errors and ours is no
    worse."""
    m = mm.glmer("TICKS ~ YEAR + sHEIGHT + (1 + sHEIGHT | LOCATION) + (1 | BROOD)", grouse,
                 family="poisson")
    assert m.deviance <= 1973.70097943 + 1e-6
    se = np.array([0.191361, 0.241954, 0.260353, 0.148152])
    assert_close(m.fixef / se, np.array([0.40323185, 1.25027850, -0.88778660, -0.90369552]) / se,
                 atol=1e-3, what="fixef / se")
    assert_close(m.se, se, rtol=2e-3, what="se")
    assert_close(m.ranef_condsd["BROOD"].iloc[:3, 0], [0.599062, 0.663651, 0.408542], rtol=2e-3,
                 what="BROOD condsd")


@pytest.mark.parametrize("family", ["gamma", "inverse_gaussian"])
def test_simulate_families_with_a_scale(data, family):
    """Draws conditional on the modes have the fitted means and the family's
    variance φ V(μ) with φ = σ² (moments over many draws)."""
    m = mm.glmer("y ~ x + (1 | g) + (1 | h)", data, family=family, link="log")
    sims = m.simulate(nsim=3000, seed=2, use_u=True).to_numpy()
    mu = m.fitted.to_numpy()
    power = 2 if family == "gamma" else 3
    # 3,000 draws per row: the averages over the 600 rows have standard errors
    # near 0.002 (means) and 0.01 (variances)
    assert (sims.mean(axis=1) / mu).mean() == pytest.approx(1.0, abs=0.01)
    ratio = sims.var(axis=1).mean() / (m.sigma**2 * (mu**power)).mean()
    assert ratio == pytest.approx(1.0, abs=0.03)


# lme4 1.1-31: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
# binomial(link = ...)): -2 logLik, fixef, theta, SEs
CBPP_LINKS = {
    "probit": (185.24248514, [-0.83547493, -0.52803274, -0.61685430, -0.79957260], 0.33798935,
               [0.126233, 0.160588, 0.169458, 0.204681]),
    "cloglog": (183.60412933, [-1.52594546, -0.91638990, -1.03522008, -1.48368125], 0.58672620,
                [0.210923, 0.284890, 0.306311, 0.409046]),
    "cauchit": (181.60281047, [-1.66110003, -2.29687046, -2.37536176, -5.10128219], 1.14044606,
                [0.446479, 0.955137, 1.106724, 2.569617]),
}


@pytest.mark.parametrize("link", list(CBPP_LINKS))
def test_binomial_links_against_lme4(link):
    deviance, fixef, theta, se = CBPP_LINKS[link]
    m = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                 mm.datasets.load("cbpp"), family="binomial", link=link)
    assert m.deviance <= deviance + 1e-6
    assert_close(m.deviance, deviance, atol=1e-3, what="deviance")
    assert_close(m.fixef, fixef, rtol=1e-4, what="fixef")
    assert_close(m.theta, [theta], atol=1e-3, what="theta")
    assert_close(m.se, se, rtol=2e-3, what="se")
