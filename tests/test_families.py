"""GLM families and links (mixedmodels.families) against R's stats::family.

Reference numbers marked "R:" were produced once with R 4.2.2 by the R
expression in the comment and pasted here as literals; the tests never call R.
Other expectations are computed independently in the test (hand formulas,
scipy.stats log-densities, finite differences).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

import mixedmodels as mm
from mixedmodels.exceptions import MixedModelsError, MixedModelsWarning
from mixedmodels.families import (
    Binomial,
    CauchitLink,
    CloglogLink,
    FamilyError,
    Gamma,
    Gaussian,
    IdentityLink,
    InverseGaussian,
    InverseLink,
    InverseSquareLink,
    LogitLink,
    LogLink,
    NonIntegerResponseWarning,
    Poisson,
    ProbitLink,
    SqrtLink,
    get_family,
    make_link,
)
from mixedmodels.families.densities import dbinom_log, dgamma_log, dpois_log

EPS = np.finfo(float).eps  # .Machine$double.eps = 2.220446049250313e-16
ONE_MINUS_EPS = 0.99999999999999978  # R prints 1 - .Machine$double.eps so


def assert_within_ulps(actual, desired, maxulp: int = 4) -> None:
    """``actual`` equals R's printed ``desired`` to a few units in the last
    place: libm's exp, log and erfc may differ by an ulp between platforms and
    numpy releases, so a comparison at the ulp level is a platform check, not
    a correctness one."""
    np.testing.assert_array_max_ulp(np.asarray(actual, dtype=float), np.asarray(desired, dtype=float), maxulp)


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """No RuntimeWarning (overflow, log(0) ...) may escape the families."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------------------
# links
# ---------------------------------------------------------------------------

UNIT_LINKS = ["logit", "probit", "cloglog", "cauchit"]
POSITIVE_LINKS = ["log", "identity", "inverse", "sqrt", "1/mu^2"]


@pytest.mark.parametrize("name", UNIT_LINKS + POSITIVE_LINKS)
def test_linkinv_inverts_linkfun(name):
    link = make_link(name)
    assert link.name == name
    mu = np.array([0.001, 0.05, 0.3, 0.5, 0.77, 0.95, 0.999])
    if name in POSITIVE_LINKS:
        mu = np.concatenate([mu, [1.0, 3.5, 120.0, 1e6]])
    np.testing.assert_allclose(link.linkinv(link.linkfun(mu)), mu, rtol=1e-13)


@pytest.mark.parametrize("name", UNIT_LINKS + POSITIVE_LINKS)
def test_mu_eta_is_the_derivative_of_linkinv(name):
    link = make_link(name)
    # interior points: away from the clamps, and positive eta where the link needs it
    eta = (
        np.array([-3.0, -1.2, -0.4, 0.3, 0.9, 2.5])
        if name in UNIT_LINKS + ["log", "identity"]
        else np.array([0.2, 0.5, 1.0, 2.0, 4.0])
    )
    h = 1e-6
    numeric = (link.linkinv(eta + h) - link.linkinv(eta - h)) / (2 * h)
    np.testing.assert_allclose(link.mu_eta(eta), numeric, rtol=1e-7, atol=1e-9)


def test_logit_values_and_clamps():
    link = LogitLink()
    np.testing.assert_allclose(link.linkfun([0.25, 0.5, 0.9]), [np.log(1 / 3), 0.0, np.log(9.0)], rtol=1e-15)
    eta = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(link.linkinv(eta), 1 / (1 + np.exp(-eta)), rtol=1e-15)
    # below eta = -30 exp(eta) is replaced by DBL_EPSILON: mu = eps / (1 + eps)
    # R: binomial()$linkinv(c(-40, -30, 40))
    assert link.linkinv(-40.0) == 2.2204460492503126e-16
    assert link.linkinv(-40.0) == EPS / (1 + EPS)
    assert link.linkinv(-30.0) == 9.3576229688393001e-14
    assert (
        link.linkinv(-30.5) == EPS / (1 + EPS) and link.linkinv(30.5) == ONE_MINUS_EPS
    )  # thresholds are ±30
    assert link.mu_eta(-30.5) == EPS and link.mu_eta(30.5) == EPS
    assert link.linkinv(40.0) == ONE_MINUS_EPS
    assert link.linkinv(-1e308) == link.linkinv(-40.0)
    assert link.linkinv(1e308) == ONE_MINUS_EPS
    # R: binomial()$mu.eta(c(-40, -30, 0, 30, 40))
    np.testing.assert_array_equal(
        link.mu_eta([-40.0, -30.0, 0.0, 30.0, 40.0]),
        [EPS, 9.3576229688384254e-14, 0.25, 9.3576229688384229e-14, EPS],
    )
    assert link.valideta([-1e9, 0.0, 1e9])
    with pytest.raises(FamilyError, match=r"logit link: value 1\.5 out of range \(0, 1\)"):
        link.linkfun([0.5, 1.5])


def test_probit_values_and_clamps():
    link = ProbitLink()
    assert link.thresh == 8.125890664701906  # R: -qnorm(.Machine$double.eps)
    # R: binomial("probit")$linkinv(c(-40, -8.2, -6, -1, 0.3, 2, 40)); scipy's ndtr
    # differs from R's pnorm in the last digit or two
    np.testing.assert_allclose(
        link.linkinv([-40.0, -8.2, -6.0, -1.0, 0.3, 2.0, 40.0]),
        [
            2.2204460492503284e-16,
            2.2204460492503284e-16,
            9.8658764503769809e-10,
            0.15865525393145705,
            0.61791142218895267,
            0.97724986805182079,
            ONE_MINUS_EPS,
        ],
        rtol=1e-13,
    )
    eta = np.linspace(-7.5, 7.5, 61)
    np.testing.assert_allclose(link.linkinv(eta), stats.norm.cdf(eta), rtol=1e-13)
    # R: binomial("probit")$mu.eta(c(-40, -6, 0, 5.5, 40))
    assert_within_ulps(
        link.mu_eta([-40.0, -6.0, 0.0, 5.5, 40.0]),
        [EPS, 6.0758828498232861e-09, 0.3989422804014327, 1.0769760042543276e-07, EPS]
    )
    # R: qnorm(c(0.975, 0.4538954892195761, 1e-10, 0.999))
    np.testing.assert_allclose(
        link.linkfun([0.975, 0.4538954892195761, 1e-10, 0.999]),
        [1.9599639845400536, -0.11582532589225024, -6.3613409024040557, 3.0902323061678132],
        rtol=1e-13,
    )
    np.testing.assert_array_equal(link.linkfun([0.0, 1.0]), [-np.inf, np.inf])


def test_cloglog_values_and_clamps():
    link = CloglogLink()
    mu = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(link.linkfun(mu), np.log(-np.log(1 - mu)), rtol=1e-15)
    eta = np.array([-2.0, 0.0, 1.0])
    np.testing.assert_allclose(link.linkinv(eta), 1 - np.exp(-np.exp(eta)), rtol=1e-15)
    # R: binomial("cloglog")$linkinv(c(-40, -36, -2, 0, 1, 3.6, 5))
    assert_within_ulps(
        link.linkinv([-40.0, -36.0, -2.0, 0.0, 1.0, 3.6, 5.0, 1000.0]),
        [
            EPS,
            2.3195228302435691e-16,
            0.12657698150688337,
            0.63212055882855767,
            0.93401196415468746,
            ONE_MINUS_EPS,
            ONE_MINUS_EPS,
            ONE_MINUS_EPS,
        ]
    )
    # R: binomial("cloglog")$mu.eta(c(-800, -40, 0, 1, 3.6, 800)); eta is capped at 700
    assert_within_ulps(
        link.mu_eta([-800.0, -40.0, 0.0, 1.0, 3.6, 800.0]),
        [EPS, EPS, 0.36787944117144233, 0.1793740787340172, 4.6671189365803402e-15, EPS]
    )


def test_cauchit_values_and_clamps():
    link = CauchitLink()
    assert link.thresh == pytest.approx(1433540284805664.8, rel=1e-15)  # R: -qcauchy(.Machine$double.eps)
    # R: binomial("cauchit")$linkinv(c(-1e20, -5, 0.3, 5, 1e20))
    assert_within_ulps(
        link.linkinv([-1e20, -5.0, 0.3, 5.0, 1e20]),
        [EPS, 0.062832958189001198, 0.59277357907774231, 0.93716704181099875, ONE_MINUS_EPS]
    )
    np.testing.assert_allclose(link.linkinv([-5.0, 0.3, 5.0]), stats.cauchy.cdf([-5.0, 0.3, 5.0]), rtol=1e-14)
    # R: binomial("cauchit")$mu.eta(c(-1e20, 0, 2))
    assert_within_ulps(
        link.mu_eta([-1e20, 0.0, 2.0]), [EPS, 0.31830988618379069, 0.063661977236758135]
    )
    # R: qcauchy(c(0.75, 0.25, 0.1, 0.9))
    assert_within_ulps(
        link.linkfun([0.75, 0.25, 0.1, 0.9]), [1.0, -1.0, -3.0776835371752540, 3.0776835371752544]
    )


def test_log_and_other_links():
    log = LogLink()
    # R: poisson()$linkinv(c(-800, -36, 0, 2)); poisson()$mu.eta(c(-800, 2))
    assert_within_ulps(
        log.linkinv([-800.0, -36.0, 0.0, 2.0]),
        [EPS, 2.3195228302435696e-16, 1.0, 7.3890560989306504]
    )
    assert_within_ulps(log.mu_eta([-800.0, 2.0]), [EPS, 7.3890560989306504])
    assert log.linkinv(800.0) == np.inf  # as R, without an overflow warning
    assert log.linkfun(0.0) == -np.inf

    np.testing.assert_array_equal(IdentityLink().mu_eta([1.0, -2.0]), [1.0, 1.0])
    np.testing.assert_allclose(InverseLink().mu_eta([2.0, -0.5]), [-0.25, -4.0])
    np.testing.assert_allclose(SqrtLink().linkinv([3.0]), [9.0])
    np.testing.assert_allclose(SqrtLink().mu_eta([3.0]), [6.0])
    inv2 = InverseSquareLink()
    assert inv2.name == "1/mu^2"
    np.testing.assert_allclose(inv2.linkfun([0.5, 2.0]), [4.0, 0.25])
    np.testing.assert_allclose(inv2.linkinv([4.0, 0.25]), [0.5, 2.0])
    np.testing.assert_allclose(inv2.mu_eta([4.0]), [-1 / (2 * 8.0)])


def test_valideta():
    assert not SqrtLink().valideta([1.0, 0.0])
    assert SqrtLink().valideta([1.0, 0.1])
    assert not InverseLink().valideta([1.0, 0.0])
    assert InverseLink().valideta([-1.0, 2.0])
    assert not InverseLink().valideta([1.0, np.inf])
    assert not InverseSquareLink().valideta([-1.0])
    assert InverseSquareLink().valideta([0.3])
    for name in ["logit", "probit", "cloglog", "cauchit", "log", "identity"]:
        assert make_link(name).valideta([-1e6, 0.0, 1e6])


def test_make_link():
    assert make_link("logit") == LogitLink()
    link = ProbitLink()
    assert make_link(link) is link
    with pytest.raises(
        FamilyError, match=r"link 'logt' not recognised; available links are 'logit'.*'1/mu\^2'"
    ):
        make_link("logt")


# ---------------------------------------------------------------------------
# family objects
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name", "default", "links", "fixed"),
    [
        (Binomial, "binomial", "logit", ("logit", "probit", "cloglog", "cauchit", "log"), True),
        (Poisson, "poisson", "log", ("log", "identity", "sqrt"), True),
        (Gamma, "Gamma", "inverse", ("inverse", "log", "identity"), False),
        (InverseGaussian, "inverse.gaussian", "1/mu^2", ("inverse", "log", "identity", "1/mu^2"), False),
        (Gaussian, "gaussian", "identity", ("inverse", "log", "identity"), False),
    ],
)
def test_family_attributes(cls, name, default, links, fixed):
    fam = cls()
    assert fam.name == name
    assert fam.link.name == default
    assert fam.dispersion_is_fixed is fixed
    assert set(fam.links) == set(links)
    assert repr(fam) == f"{cls.__name__}(link={default!r})"
    for link in links:
        assert cls(link).link.name == link
        assert cls(make_link(link)).link == make_link(link)
    assert cls() == cls(default) and hash(cls()) == hash(cls(default))


@pytest.mark.parametrize(
    ("cls", "link", "family_name"),
    [
        (Binomial, "identity", "binomial"),
        (Poisson, "logit", "poisson"),
        (Gamma, "sqrt", "Gamma"),
        (InverseGaussian, "probit", "inverse.gaussian"),
        (Gaussian, "cloglog", "gaussian"),
    ],
)
def test_unsupported_link_is_an_error_naming_family_and_links(cls, link, family_name):
    with pytest.raises(FamilyError) as err:
        cls(link)
    msg = str(err.value)
    assert f"link {link!r} is not available for the {family_name} family" in msg
    for allowed in cls.links:
        assert repr(allowed) in msg


def test_errors_and_warnings_classes():
    assert issubclass(FamilyError, MixedModelsError) and issubclass(FamilyError, ValueError)
    assert issubclass(NonIntegerResponseWarning, UserWarning)
    assert issubclass(NonIntegerResponseWarning, MixedModelsWarning)


def test_get_family():
    assert get_family("binomial") == Binomial("logit")
    assert get_family("binomial", link="probit") == Binomial("probit")
    assert get_family("poisson", "sqrt") == Poisson("sqrt")
    assert get_family("Gamma") == Gamma() == get_family("gamma")
    assert get_family("Gamma", "log").link.name == "log"
    assert get_family("inverse.gaussian") == InverseGaussian() == get_family("inverse_gaussian")
    assert get_family("gaussian") == Gaussian()
    fam = Poisson("identity")
    assert get_family(fam) is fam
    assert get_family(fam, link="log") == Poisson("log")
    assert get_family(Binomial, link="cloglog") == Binomial("cloglog")
    assert get_family("binomial", link=LogLink()) == Binomial("log")
    with pytest.raises(
        FamilyError, match=r"unknown family 'binomal' \(did you mean 'binomial'\?\); choose one of"
    ):
        get_family("binomal")
    with pytest.raises(FamilyError, match=r"'binomial', 'poisson', 'Gamma', 'inverse.gaussian', 'gaussian'"):
        get_family("tweedie")
    with pytest.raises(FamilyError, match="not available for the poisson family"):
        get_family("poisson", link="logit")
    with pytest.raises(FamilyError, match="family must be a name or a Family object"):
        get_family(3)


def test_variance_functions():
    mu = np.array([0.2, 0.5, 3.0])
    np.testing.assert_allclose(Binomial().variance(mu[:2]), [0.16, 0.25])
    np.testing.assert_allclose(Poisson().variance(mu), mu)
    np.testing.assert_allclose(Gamma().variance(mu), mu**2)
    np.testing.assert_allclose(InverseGaussian().variance(mu), mu**3)
    np.testing.assert_array_equal(Gaussian().variance(mu), [1.0, 1.0, 1.0])


def test_valid_mu():
    assert Binomial().valid_mu([0.1, 0.9])
    assert not Binomial().valid_mu([0.0, 0.5])
    assert not Binomial().valid_mu([0.5, 1.0])
    assert not Binomial().valid_mu([0.5, np.nan])
    assert Poisson().valid_mu([1e-300, 5.0])
    assert not Poisson().valid_mu([0.0])
    assert not Poisson().valid_mu([np.inf])
    assert Gamma().valid_mu([2.0]) and not Gamma().valid_mu([-2.0])
    assert InverseGaussian().valid_mu([-1.0])  # R: validmu <- function(mu) TRUE
    assert Gaussian().valid_mu([-1.0])


# ---------------------------------------------------------------------------
# deviance residuals
# ---------------------------------------------------------------------------


def test_binomial_dev_resids_hand_formulas():
    fam = Binomial()
    y = np.array([0.25, 0.0, 1.0, 0.0, 1.0])
    mu = np.array([0.4, 0.3, 0.3, 1e-12, 1 - 1e-12])
    wt = np.array([4.0, 2.0, 3.0, 1.0, 1.0])
    expected = [
        2 * 4 * (0.25 * np.log(0.25 / 0.4) + 0.75 * np.log(0.75 / 0.6)),
        -2 * 2 * np.log(0.7),  # y = 0: only the (1 - y) term
        -2 * 3 * np.log(0.3),  # y = 1: only the y term
        2 * np.log(1 / (1 - 1e-12)),  # R's y log(y/mu) with 1 - y = 1, 1 - mu rounded
        2 * np.log(1 / (1 - 1e-12)),
    ]
    np.testing.assert_allclose(fam.dev_resids(y, mu, wt), expected, rtol=1e-12)
    # R: binomial()$dev.resids(c(0, 1, 0.5), c(0, 1, 1), c(1, 1, 1)) -> 0, 0, Inf
    np.testing.assert_array_equal(
        fam.dev_resids([0.0, 1.0, 0.5], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]), [0, 0, np.inf]
    )
    # default weights are 1
    np.testing.assert_allclose(fam.dev_resids([1.0], [0.5]), [-2 * np.log(0.5)])


def test_poisson_dev_resids_hand_formulas():
    fam = Poisson()
    y = np.array([0.0, 3.0, 7.0])
    mu = np.array([2.5, 3.0, 4.2])
    wt = np.array([2.0, 1.0, 0.5])
    expected = [2 * 2 * 2.5, 0.0, 2 * 0.5 * (7 * np.log(7 / 4.2) - (7 - 4.2))]
    np.testing.assert_allclose(fam.dev_resids(y, mu, wt), expected, rtol=1e-13, atol=1e-300)
    # a huge count: no overflow, R's formula (value ~ (y - mu)^2 / mu = 1)
    d = fam.dev_resids([1e12], [1e12 + 1e6], [1.0])
    assert np.isfinite(d[0]) and d[0] == pytest.approx(1.0, rel=1e-3)


def test_gamma_ig_gaussian_dev_resids_hand_formulas():
    y = np.array([0.5, 2.0, 3.0])
    mu = np.array([1.0, 2.0, 1.5])
    wt = np.array([1.0, 3.0, 2.0])
    np.testing.assert_allclose(
        Gamma().dev_resids(y, mu, wt), -2 * wt * (np.log(y / mu) - (y - mu) / mu), rtol=1e-14, atol=1e-300
    )
    # R's Gamma convention at y = 0: log(1) - (0 - mu)/mu = 1  ->  -2 wt
    np.testing.assert_allclose(Gamma().dev_resids([0.0], [2.0], [1.5]), [-3.0])
    np.testing.assert_allclose(
        InverseGaussian().dev_resids(y, mu, wt), wt * (y - mu) ** 2 / (y * mu**2), rtol=1e-14
    )
    np.testing.assert_allclose(Gaussian().dev_resids(y, mu, wt), wt * (y - mu) ** 2, rtol=1e-14)


# R: y <- c(0, 0.25, 0.5, 1, 1, 0.2); wt <- c(1, 4, 2, 1, 3, 5); mu <- c(0.1, 0.3, 0.45, 0.9, 0.999, 0.2)
#    d <- binomial()$dev.resids(y, mu, wt); binomial()$aic(y, rep(1, 6), mu, wt, sum(d))
# and likewise for the other families with the inputs below.
R_CASES = {
    "binomial": dict(
        fam=Binomial(),
        y=[0, 0.25, 0.5, 1, 1, 0.2],
        mu=[0.1, 0.3, 0.45, 0.9, 0.999, 0.2],
        wt=[1, 4, 2, 1, 3, 5],
        dev=[
            0.2107210313156527,
            0.049314115333799313,
            0.020100671707002915,
            0.2107210313156527,
            0.0060030020015017314,
            0.0,
        ],
        aic=5.3943950580178637,
    ),
    # R: poisson(); y <- c(0, 1, 3, 10, 1e12); mu <- c(0.5, 1.2, 2.5, 9, 1e12 + 1e6); wt <- c(1, 2, 1, 0.5, 1)
    "poisson": dict(
        fam=Poisson(),
        y=[0, 1, 3, 10, 1e12],
        mu=[0.5, 1.2, 2.5, 9, 1e12 + 1e6],
        wt=[1, 2, 1, 0.5, 1],
        dev=[1.0, 0.070713772824181453, 0.093929340763727609, 0.053605156578263591, 0.99989957874640822],
        aic=40.757552635420581,
    ),
    # R: Gamma(); y <- c(0.5, 1.2, 3, 10); mu <- c(0.7, 1, 2.5, 12); wt <- c(1, 2, 1, 3)
    "Gamma": dict(
        fam=Gamma(),
        y=[0.5, 1.2, 3, 10],
        mu=[0.7, 1, 2.5, 12],
        wt=[1, 2, 1, 3],
        dev=[0.1015159018138545, 0.070713772824181453, 0.035356886412090838, 0.093929340763727609],
        aic=15.25721731381908,
    ),
    # R: inverse.gaussian(), same y, mu, wt
    "inverse.gaussian": dict(
        fam=InverseGaussian(),
        y=[0.5, 1.2, 3, 10],
        mu=[0.7, 1, 2.5, 12],
        wt=[1, 2, 1, 3],
        dev=[0.16326530612244891, 0.066666666666666638, 0.013333333333333334, 0.0083333333333333332],
        aic=21.617917791340517,
    ),
    # R: gaussian(); y <- c(-1, 0.5, 2, 3.5); mu <- c(-0.5, 0.7, 1.5, 4); wt <- c(1, 2, 1, 0.5)
    "gaussian": dict(
        fam=Gaussian(),
        y=[-1, 0.5, 2, 3.5],
        mu=[-0.5, 0.7, 1.5, 4],
        wt=[1, 2, 1, 0.5],
        dev=[0.25, 0.07999999999999996, 0.25, 0.125],
        aic=6.4081009164783458,
    ),
}


@pytest.mark.parametrize("case", list(R_CASES))
def test_dev_resids_and_aic_match_r(case):
    c = R_CASES[case]
    fam, y, mu, wt = c["fam"], np.array(c["y"], float), np.array(c["mu"], float), np.array(c["wt"], float)
    dev = fam.dev_resids(y, mu, wt)
    np.testing.assert_allclose(dev, c["dev"], rtol=1e-14, atol=0)
    assert fam.deviance(y, mu, wt) == pytest.approx(sum(c["dev"]), rel=1e-14)
    aic = fam.aic(y, np.ones_like(y), mu, wt, float(dev.sum()))
    assert isinstance(aic, float)
    assert aic == pytest.approx(c["aic"], rel=1e-14)


# ---------------------------------------------------------------------------
# AIC against log-densities computed independently with scipy.stats
# ---------------------------------------------------------------------------


def test_binomial_aic_is_minus_twice_the_loglik():
    fam = Binomial("probit")
    y = np.array([0.0, 1.0, 0.4, 0.75, 1 / 3])
    wt = np.array([1.0, 1.0, 5.0, 4.0, 3.0])  # numbers of trials
    mu = np.array([0.2, 0.6, 0.35, 0.8, 0.5])
    ll = stats.binom.logpmf(np.round(wt * y), wt, mu)
    assert fam.aic(y, None, mu, wt, np.nan) == pytest.approx(-2 * ll.sum(), rel=1e-13)
    # R rounds m * y half to even: 5 * 0.5 = 2.5 successes count as 2.
    # R: binomial()$aic(0.5, 1, 0.4, 5, 0) == -2 * dbinom(2, 5, 0.4, log = TRUE)
    assert fam.aic(np.array([0.5]), None, np.array([0.4]), np.array([5.0]), 0.0) == pytest.approx(
        2.124946484104473, rel=1e-14
    )
    assert 2.124946484104473 == pytest.approx(-2 * stats.binom.logpmf(2, 5, 0.4), rel=1e-13)
    # zero weights contribute nothing (R: ifelse(m > 0, wt/m, 0))
    assert fam.aic(
        np.array([0.0, 1.0]), None, np.array([0.3, 0.3]), np.array([0.0, 1.0]), 0.0
    ) == pytest.approx(-2 * np.log(0.3), rel=1e-14)
    # mu exactly 0 / 1 where y agrees: R gives -0
    assert fam.aic(np.array([0.0, 1.0]), None, np.array([0.0, 1.0]), np.array([1.0, 1.0]), 0.0) == 0.0


def test_binomial_aic_with_trials_uses_n_over_weights():
    fam = Binomial()
    # R: s <- c(2, 0, 5, 3); f <- c(3, 4, 0, 7); w0 <- c(1, 2, 1, 0.5); n <- s + f; y <- s/n;
    #    mu <- c(0.35, 0.1, 0.8, 0.3); d <- binomial()$dev.resids(y, mu, w0 * n)
    #    binomial()$aic(y, n, mu, w0 * n, sum(d))
    init = fam.initialize_counts([2, 0, 5, 3], [3, 4, 0, 7], [1, 2, 1, 0.5])
    mu = np.array([0.35, 0.1, 0.8, 0.3])
    d = fam.dev_resids(init.y, mu, init.weights)
    np.testing.assert_allclose(
        d, [0.053869324456872134, 1.6857682505252216, 2.2314355131420975, 0.0], rtol=1e-14
    )
    assert fam.aic(init.y, init.n, mu, init.weights, d.sum()) == pytest.approx(7.4171708499955518, rel=1e-14)
    # = -2 sum(w0 * log dbinom(s, n, mu))
    ll = stats.binom.logpmf([2, 0, 5, 3], [5, 4, 5, 10], mu) * np.array([1, 2, 1, 0.5])
    assert 7.4171708499955518 == pytest.approx(-2 * ll.sum(), rel=1e-13)


def test_poisson_aic_is_minus_twice_the_loglik():
    fam = Poisson()
    y = np.array([0.0, 1.0, 4.0, 12.0, 250.0])
    mu = np.array([0.3, 1.7, 3.2, 15.0, 240.0])
    wt = np.array([1.0, 2.0, 1.0, 0.5, 3.0])
    assert fam.aic(y, None, mu, wt, 0.0) == pytest.approx(
        -2 * np.sum(stats.poisson.logpmf(y, mu) * wt), rel=1e-13
    )


def test_poisson_aic_huge_counts_stay_accurate():
    # R: dpois(1e12, 1e12 + 1e6, log = TRUE); log(y!) - y log(mu) would cancel to ~1e-3 here
    assert dpois_log(1e12, 1e12 + 1e6) == pytest.approx(-15.234448757835947, rel=1e-14)
    # normal approximation: -log(2 pi mu)/2 - (y - mu)^2 / (2 mu)
    assert dpois_log(1e12, 1e12 + 1e6) == pytest.approx(-0.5 * np.log(2 * np.pi * 1e12) - 0.5, rel=1e-6)
    aic = Poisson().aic(np.array([1e12, 3e15]), None, np.array([1e12 + 1e6, 3e15]), np.ones(2), 0.0)
    assert np.isfinite(aic)
    assert aic == pytest.approx(np.log(2 * np.pi * 1e12) + 1 + np.log(2 * np.pi * 3e15), rel=1e-6)


def test_poisson_aic_non_integer_counts_is_infinite_as_r():
    # R: poisson()$aic(c(1.5, 2), 1, c(1, 2), c(1, 1), 0) -> Inf (dpois of a non-integer is 0)
    assert Poisson().aic(np.array([1.5, 2.0]), None, np.array([1.0, 2.0]), np.ones(2), 0.0) == np.inf


def test_gamma_aic_is_minus_twice_the_loglik_at_the_ml_dispersion():
    fam = Gamma("log")
    y = np.array([0.4, 1.3, 2.2, 5.0, 0.9])
    mu = np.array([0.6, 1.1, 2.5, 4.0, 1.2])
    wt = np.array([1.0, 2.0, 1.0, 3.0, 1.0])
    dev = fam.deviance(y, mu, wt)
    disp = dev / wt.sum()
    expected = -2 * np.sum(stats.gamma.logpdf(y, a=1 / disp, scale=mu * disp) * wt) + 2
    assert fam.aic(y, None, mu, wt, dev) == pytest.approx(expected, rel=1e-13)


def test_inverse_gaussian_aic_is_minus_twice_the_loglik_at_the_ml_dispersion():
    fam = InverseGaussian()
    y = np.array([0.4, 1.3, 2.2, 5.0, 0.9])
    mu = np.array([0.6, 1.1, 2.5, 4.0, 1.2])
    dev = fam.deviance(y, mu)
    lam = y.size / dev  # shape parameter = 1 / dispersion
    # scipy's invgauss(m / lam, scale=lam) has mean m and shape lam
    expected = -2 * np.sum(stats.invgauss.logpdf(y, mu / lam, scale=lam)) + 2
    assert fam.aic(y, None, mu, np.ones_like(y), dev) == pytest.approx(expected, rel=1e-13)


def test_gaussian_aic_is_minus_twice_the_loglik_at_the_ml_variance():
    fam = Gaussian()
    y = np.array([-1.0, 0.3, 2.2, 5.0, 0.9])
    mu = np.array([-0.6, 1.1, 2.5, 4.0, 1.2])
    wt = np.array([1.0, 2.0, 1.0, 3.0, 0.5])
    dev = fam.deviance(y, mu, wt)
    sigma2 = dev / y.size
    expected = -2 * np.sum(stats.norm.logpdf(y, mu, np.sqrt(sigma2 / wt))) + 2
    assert fam.aic(y, None, mu, wt, dev) == pytest.approx(expected, rel=1e-13)
    # R: gaussian()$aic(c(1, 2, 3), 1, c(1.5, 2, 2.5), c(1, 0, 1), 0.5) -> Inf (a zero weight)
    assert (
        fam.aic(np.array([1.0, 2.0, 3.0]), None, np.array([1.5, 2.0, 2.5]), np.array([1.0, 0.0, 1.0]), 0.5)
        == np.inf
    )


def test_cbpp_glm_deviance_and_aic_match_r():
    # R: g <- glm(cbind(incidence, size - incidence) ~ period, binomial, data = lme4::cbpp)
    #    deviance(g) = 114.10169144085565; AIC(g) = 206.05839897872673
    # The fitted values of this saturated-in-period model are the per-period proportions.
    cbpp = mm.datasets.load("cbpp")
    fam = Binomial()
    inc = cbpp["incidence"].to_numpy(float)
    size = cbpp["size"].to_numpy(float)
    init = fam.initialize_counts(inc, size - inc, column_name="cbind(incidence, size - incidence)")
    period = cbpp["period"].astype(str).to_numpy()
    mu = np.empty_like(inc)
    for p in np.unique(period):
        mu[period == p] = inc[period == p].sum() / size[period == p].sum()
    dev = fam.deviance(init.y, mu, init.weights)
    assert dev == pytest.approx(114.10169144085565, rel=1e-12)
    assert fam.aic(init.y, init.n, mu, init.weights, dev) + 2 * 4 == pytest.approx(
        206.05839897872673, rel=1e-12
    )


# ---------------------------------------------------------------------------
# R's log-densities (Loader's algorithm) against scipy.stats and R
# ---------------------------------------------------------------------------


def test_log_densities_agree_with_scipy():
    x = np.arange(0, 60.0)
    for lam in (0.2, 3.5, 17.0, 42.0):
        np.testing.assert_allclose(dpois_log(x, lam), stats.poisson.logpmf(x, lam), rtol=1e-12)
    for n, p in ((1, 0.3), (12, 0.05), (40, 0.5), (75, 0.93)):
        k = np.arange(0, n + 1.0)
        np.testing.assert_allclose(dbinom_log(k, n, p), stats.binom.logpmf(k, n, p), rtol=1e-12)
    xg = np.array([0.05, 0.5, 1.0, 2.7, 9.0, 30.0])
    for shape, scale in ((0.4, 2.0), (1.0, 0.5), (3.3, 1.5), (250.0, 0.01)):
        np.testing.assert_allclose(
            dgamma_log(xg, shape, scale), stats.gamma.logpdf(xg, shape, scale=scale), rtol=1e-12
        )


def test_log_densities_match_r_and_its_edge_cases():
    # R: dpois(0:5, 2.5, log = TRUE)
    np.testing.assert_allclose(
        dpois_log(np.arange(6.0), 2.5),
        [
            -2.5,
            -1.5837092681258449,
            -1.3605657168116352,
            -1.5428872736055899,
            -2.0128909028513253,
            -2.7060380834112707,
        ],
        rtol=1e-15,
    )
    # R: dbinom(0:5, 5, 0.3, log = TRUE)
    np.testing.assert_allclose(
        dbinom_log(np.arange(6.0), 5, 0.3),
        [
            -1.7833747196936622,
            -1.0212346676467652,
            -1.1753853474740232,
            -2.0226832078612271,
            -3.5631282488083755,
            -6.0198640216296804,
        ],
        rtol=1e-15,
    )
    assert dpois_log(1.5, 1.0) == -np.inf  # non-integer x
    assert dpois_log(1 + 5e-8, 1.0) == pytest.approx(-1.0, rel=1e-15)  # within R's 1e-7 tolerance
    assert dpois_log(0.0, 0.0) == 0.0 and dpois_log(1.0, 0.0) == -np.inf
    assert np.isnan(dpois_log(1.0, -1.0))
    assert dbinom_log(3.0, 2.0, 0.5) == -np.inf
    assert dbinom_log(0.0, 4.0, 0.0) == 0.0 and dbinom_log(4.0, 4.0, 1.0) == 0.0
    assert dgamma_log(0.0, 1.0, 2.0) == pytest.approx(-np.log(2.0))
    assert dgamma_log(0.0, 0.5, 2.0) == np.inf and dgamma_log(0.0, 2.0, 2.0) == -np.inf


# ---------------------------------------------------------------------------
# initialization and response checks
# ---------------------------------------------------------------------------


def test_mustart_as_r_initialize():
    y = np.array([0, 0.25, 0.5, 1, 1, 0.2])
    wt = np.array([1, 4, 2, 1, 3, 5.0])
    # R: (wt * y + 0.5) / (wt + 1)
    np.testing.assert_allclose(Binomial().mustart(y, wt), [0.25, 0.3, 0.5, 0.75, 0.875, 0.25], rtol=1e-15)
    np.testing.assert_allclose(Poisson().mustart([0.0, 3.0]), [0.1, 3.1])
    np.testing.assert_array_equal(Gamma().mustart([0.5, 3.0]), [0.5, 3.0])
    np.testing.assert_array_equal(InverseGaussian().mustart([0.5, 3.0]), [0.5, 3.0])
    np.testing.assert_array_equal(Gaussian().mustart([-0.5, 0.0]), [-0.5, 0.0])
    with pytest.raises(
        FamilyError, match="cannot find valid starting values for the gaussian family with the log"
    ):
        Gaussian("log").mustart([1.0, 0.0])
    with pytest.raises(FamilyError, match="inverse link"):
        Gaussian("inverse").mustart([1.0, 0.0])


def test_binomial_initialize_zero_weights():
    # R: y[weights == 0] <- 0 before checking 0 <= y <= 1
    init = Binomial().initialize([0.5, 7.0, 1.0], [2.0, 0.0, 1.0], column_name="p")
    np.testing.assert_array_equal(init.y, [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(init.n, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(init.weights, [2.0, 0.0, 1.0])
    np.testing.assert_allclose(init.mustart, [1.5 / 3, 0.5, 0.75])


def test_initialize_counts():
    init = Binomial().initialize_counts([3, 0, 0], [1, 5, 0], column_name="cbind(s, f)")
    np.testing.assert_array_equal(init.n, [4.0, 5.0, 0.0])
    np.testing.assert_array_equal(init.y, [0.75, 0.0, 0.0])  # n = 0 -> y = 0
    np.testing.assert_array_equal(init.weights, [4.0, 5.0, 0.0])
    np.testing.assert_allclose(init.mustart, [3.5 / 5, 0.5 / 6, 0.5])
    with pytest.raises(FamilyError, match=r"non-negative finite counts in 'cbind\(s, f\)'; 1 value, e.g. -1"):
        Binomial().initialize_counts([3, -1], [1, 2], column_name="cbind(s, f)")
    with pytest.warns(
        NonIntegerResponseWarning, match=r"non-integer counts in a binomial glm: 'cbind\(s, f\)'"
    ):
        Binomial().initialize_counts([2.5, 1], [1, 2], column_name="cbind(s, f)")


@pytest.mark.parametrize(
    ("fam", "y", "pattern"),
    [
        (
            Binomial(),
            [0.0, 1.5, 1.0],
            r"binomial family needs response 'infected' in \[0, 1\].*1 value, e\.g\. 1\.5",
        ),
        (Binomial(), [0.0, -1.0, 2.0], r"'infected'.*2 values, e\.g\. -1"),
        (Binomial(), [0.0, np.nan], r"binomial family needs response 'infected' in \[0, 1\].*e\.g\. nan"),
        (
            Poisson(),
            [0.0, -2.0, 3.0],
            r"negative values not allowed for the Poisson family: response 'infected'",
        ),
        (
            Poisson(),
            [1.0, np.inf],
            r"poisson family needs a finite response; 'infected' has 1 value, e\.g\. inf",
        ),
        (Gamma(), [1.0, 0.0], r"non-positive values not allowed for the Gamma family: response 'infected'"),
        (
            InverseGaussian(),
            [1.0, -0.5],
            r"positive values only are allowed for the inverse\.gaussian family",
        ),
        (Gaussian(), [1.0, np.nan], r"gaussian family needs a finite response; 'infected'"),
    ],
)
def test_validate_response_errors_name_the_column(fam, y, pattern):
    with pytest.raises(FamilyError, match=pattern):
        fam.validate_response(np.array(y), None, "infected")
    with pytest.raises(FamilyError, match=pattern):
        fam.initialize(np.array(y), None, "infected")


def test_validate_response_weights():
    with pytest.raises(FamilyError, match=r"prior weights for response 'y' must be finite and non-negative"):
        Poisson().validate_response([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(
        FamilyError, match=r"prior weights have shape \(3,\) but the response has shape \(2,\)"
    ):
        Poisson().validate_response([1.0, 2.0], [1.0, 1.0, 1.0])


def test_non_integer_responses_warn():
    with pytest.warns(
        NonIntegerResponseWarning, match=r"non-integer #successes in a binomial glm: response 'prop'"
    ):
        Binomial().validate_response([0.3, 1.0], [1.0, 1.0], "prop")
    with pytest.warns(NonIntegerResponseWarning, match=r"e\.g\. 0\.3 \* 4 = 1\.2"):
        Binomial().validate_response([0.25, 0.3], [4.0, 4.0], "prop")
    with pytest.warns(
        NonIntegerResponseWarning, match=r"non-integer counts in response 'count' for the Poisson"
    ):
        Poisson().validate_response([1.0, 2.5], None, "count")
    # whole numbers of successes and counts: silent (warnings are errors in this module)
    Binomial().validate_response([0.25, 0.5, 1.0, 0.0], [4.0, 2.0, 1.0, 3.0], "prop")
    Binomial().validate_response([1 / 3], [3.0], "prop")  # 3 * (1/3) within R's 0.001
    Poisson().validate_response([0.0, 1.0, 1e12], None, "count")
    Gamma().validate_response([0.3, 2.5], None, "time")
