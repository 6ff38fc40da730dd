"""Denominator degrees of freedom (Satterthwaite as lmerTest 3.1-3, Kenward-Roger
as pbkrtest 0.5.2): coefficient tables, the contract functions of
``mixedmodels.inference.ddf`` and the printed lmerTest summary.

R numbers are literals computed with R 4.2.2, lme4 1.1-31, lmerTest 3.1-3,
pbkrtest 0.5.2 (the R code is in the comments). Tolerances: df and p 1e-3
relative, t and F 1e-4 relative (estimates and SEs 1e-4 relative): our optimum
and lme4's differ in the 6th digit of θ, which moves these numbers by up to a
few 1e-5 (a p-value of 1e-74 by ~6e-4, relative).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import assert_close, load_case
from mixedmodels.exceptions import ModelSpecError
from mixedmodels.inference import kenward_roger as krmod
from mixedmodels.inference import numderiv
from mixedmodels.inference import satterthwaite as satmod
from mixedmodels.inference.ddf import contrast_df, f_test
from mixedmodels.inference.kenward_roger import kenward_roger_vcov
from mixedmodels.report.results import MixedModelResults

DF_RTOL = 1e-3
P_RTOL = 1e-3
T_RTOL = 1e-4
COEF_COLUMNS = ["estimate", "se", "df", "t", "p_value"]


def fit(formula: str, data: pd.DataFrame, **kwargs) -> mm.LinearMixedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mm.lmer(formula, data, **kwargs)


def assert_coef_table(table: pd.DataFrame, ref: dict[str, list[float]], what: str) -> None:
    """``ref``: term -> [estimate, se, df, t, p] (R's column order)."""
    R = np.array([ref[name] for name in table.index])
    assert list(table.columns) == COEF_COLUMNS
    assert_close(table["estimate"], R[:, 0], rtol=T_RTOL, atol=1e-10, what=f"{what} estimate")
    assert_close(table["se"], R[:, 1], rtol=T_RTOL, what=f"{what} se")
    assert_close(table["df"], R[:, 2], rtol=DF_RTOL, what=f"{what} df")
    assert_close(table["t"], R[:, 3], rtol=T_RTOL, what=f"{what} t")
    assert_close(table["p_value"], R[:, 4], rtol=P_RTOL, what=f"{what} p")



@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return fit("Reaction ~ Days + (Days | Subject)", sleep)


@pytest.fixture(scope="module")
def sleep_ml(sleep):
    return fit("Reaction ~ Days + (Days | Subject)", sleep, reml=False)


@pytest.fixture(scope="module")
def dietox_fit():
    return fit("Weight ~ Evit * Cu + Time + (1 + Time | Pig)", mm.datasets.load("dietox"))


@pytest.fixture(scope="module")
def grouse_ml():
    return fit(
        "log(TICKS + 1) ~ YEAR * cHEIGHT + (1 | BROOD) + (1 | LOCATION)",
        mm.datasets.load("grouseticks"),
        reml=False,
    )


# ---------------------------------------------------------------------------- public reference case


def _reference_rows(rows: list[dict]) -> dict[str, list[float]]:
    return {r["term"]: [r["estimate"], r["se"], r["df"], r["t"], r["p"]] for r in rows}


def test_sleepstudy_satterthwaite_matches_reference(sleep_fit):
    case = load_case("lmer_sleepstudy_reml")
    table = sleep_fit.coef_table(ddf="satterthwaite")
    assert list(table.index) == ["(Intercept)", "Days"]
    assert table.index.name == "term"
    assert_coef_table(table, _reference_rows(case["satterthwaite"]), "Satterthwaite")
    # Satterthwaite is the default of an lmer fit
    pd.testing.assert_frame_equal(sleep_fit.coef_table(), table)


def test_sleepstudy_kenward_roger_matches_reference(sleep_fit):
    case = load_case("lmer_sleepstudy_reml")
    table = sleep_fit.coef_table(ddf="kenward-roger")
    assert_coef_table(table, _reference_rows(case["kenward_roger"]), "Kenward-Roger")


def test_sleepstudy_anova_type3_matches_reference(sleep_fit):
    ref = load_case("lmer_sleepstudy_reml")["anova_type3_satterthwaite"]
    table = sleep_fit.anova(type=3, ddf="satterthwaite")
    assert list(table.index) == [r["term"] for r in ref]
    assert list(table.columns) == ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p_value"]
    R = pd.DataFrame(ref).set_index("term")
    assert_close(table["sum_sq"], R["sum_sq"], rtol=T_RTOL, what="sum_sq")
    assert_close(table["mean_sq"], R["mean_sq"], rtol=T_RTOL, what="mean_sq")
    assert_close(table["num_df"], R["num_df"], rtol=0, what="num_df")
    assert_close(table["den_df"], R["den_df"], rtol=DF_RTOL, what="den_df")
    assert_close(table["F"], R["F"], rtol=T_RTOL, what="F")
    assert_close(table["p_value"], R["p"], rtol=P_RTOL, what="p")


def test_kenward_roger_vcov_sleepstudy(sleep_fit):
    # R: m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
    #    as.matrix(pbkrtest::vcovAdj(m))   (a balanced design: no adjustment)
    R = np.array([[46.57512004878947, -1.45108841663252], [-1.45108841663252, 2.38946562320699]])
    V = kenward_roger_vcov(sleep_fit)
    assert V.shape == (2, 2)
    assert_close(V, R, rtol=1e-4, what="vcovAdj")
    np.testing.assert_allclose(V, V.T, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- other designs vs R


# R (lmerTest 3.1-3, pbkrtest 0.5.2):
#   dx <- read.csv("dietox.csv", stringsAsFactors = TRUE); dx$Pig <- factor(dx$Pig)
#   m4 <- lmer(Weight ~ Evit * Cu + Time + (1 + Time | Pig), data = dx)
#   summary(m4)$coefficients; summary(m4, ddf = "Kenward-Roger")$coefficients
DIETOX_SATT = {
    "(Intercept)": [15.51618947852087, 1.8147910578562176, 62.9955481539916, 8.549848981981366, 3.9162505822909e-12],
    "EvitEvit100": [0.350527243282401, 2.485618569463557, 63.0577267086972, 0.141022137341873, 0.888301998081604],
    "EvitEvit200": [-1.225987273615826, 2.4856185694635533, 63.0577266466909, -0.493232263661604, 0.623561889490743],
    "CuCu035": [-1.365146810658107, 2.4849473398586914, 62.9902731260855, -0.549366495120873, 0.584696396427467],
    "CuCu175": [0.780677352576568, 2.4849473398586794, 62.9902730883771, 0.314162533770621, 0.754435746685388],
    "Time": [6.938975815405484, 0.0798370003548437, 71.0636581484876, 86.91428516307593, 6.69253652853099e-74],
    "EvitEvit100:CuCu035": [1.429341547368758, 3.455661837613707, 63.0251841886122, 0.413623095816512, 0.680554264540193],
    "EvitEvit200:CuCu035": [2.148507964113462, 3.4090197204852926, 63.0261455899214, 0.63024216351779, 0.53081465403477],
    "EvitEvit100:CuCu175": [1.533631678680274, 3.4561441887629507, 63.0600254483394, 0.443740652854302, 0.658748992684802],
    "EvitEvit200:CuCu175": [1.327276254503379, 3.455661837613695, 63.0251841387853, 0.384087424312307, 0.702206466269778],
}
DIETOX_KR = {
    "(Intercept)": [15.51618947852087, 1.840646720050934, 62.9564406026792, 8.42974879942823, 6.36920476932979e-12],
    "EvitEvit100": [0.350527243282401, 2.52474462008709, 63.0190537055157, 0.138836712629695, 0.890021901084827],
    "EvitEvit200": [-1.225987273615826, 2.524744620087087, 63.0190537055157, -0.485588627008754, 0.628942905827154],
    "CuCu035": [-1.365146810658107, 2.5241403775112903, 62.9515151675187, -0.540836327020802, 0.590529074421197],
    "CuCu175": [0.780677352576568, 2.5241403775112783, 62.9515151675199, 0.309284443738542, 0.758126548236986],
    "Time": [6.938975815405484, 0.0798371369549539, 70.9978409903444, 86.91413645407437, 7.55984379784107e-74],
    "EvitEvit100:CuCu035": [1.429341547368758, 3.510109361878578, 62.9864708618202, 0.407207126618923, 0.685236469020262],
    "EvitEvit200:CuCu035": [2.148507964113462, 3.462730833433252, 62.9874335415958, 0.620466350826133, 0.537189395207131],
    "EvitEvit100:CuCu175": [1.533631678680274, 3.510543597890602, 63.0213538302878, 0.436864444470023, 0.663702893417288],
    "EvitEvit200:CuCu175": [1.327276254503379, 3.5101093618785666, 62.986470861821, 0.378129601578293, 0.70660571535291],
}


def test_dietox_correlated_slopes_satterthwaite(dietox_fit):
    assert_coef_table(dietox_fit.coef_table(), DIETOX_SATT, "dietox Satterthwaite")


def test_dietox_correlated_slopes_kenward_roger(dietox_fit):
    assert_coef_table(dietox_fit.coef_table(ddf="KR"), DIETOX_KR, "dietox Kenward-Roger")


# R: g <- lme4::grouseticks
#    m3 <- lmer(log(TICKS + 1) ~ YEAR * cHEIGHT + (1 | BROOD) + (1 | LOCATION), data = g,
#               REML = FALSE)
#    summary(m3)$coefficients        (Satterthwaite with the ML deviance)
GROUSE_ML_SATT = {
    "(Intercept)": [1.0497331302035406, 0.11748885707835642, 108.9871649537634, 8.934746292607526, 1.14359224919013e-14],
    "YEAR96": [0.7691237298498622, 0.151039600287378, 114.7537678989936, 5.09219918740831, 1.40135892026203e-06],
    "YEAR97": [-0.5462625610820564, 0.1521186668394899, 107.8778338291396, -3.591029111887056, 0.00049741273165131],
    "cHEIGHT": [-0.01821469632290545, 0.00339386420959601, 103.0144162201653, -5.366949058069011, 4.96201985468082e-07],
    "YEAR96:cHEIGHT": [0.00328298770677339, 0.00433432458361491, 113.6161839070283, 0.757439283431634, 0.450354777899963],
    "YEAR97:cHEIGHT": [0.01122603635485972, 0.00435680789041809, 97.6439819503487, 2.57666544801048, 0.0114726102829299],
}


def test_ml_fit_satterthwaite(grouse_ml):
    assert_coef_table(grouse_ml.coef_table(), GROUSE_ML_SATT, "grouseticks ML Satterthwaite")


def test_nested_and_singular_fits():
    # R: m <- lmer(strength ~ 1 + (1 | batch/cask), Pastes)
    #    summary(m)$coefficients; summary(m, ddf = "Kenward-Roger")$coefficients
    pastes = fit("strength ~ 1 + (1 | batch/cask)", mm.datasets.load("Pastes"))
    satt = pastes.coef_table()
    assert_close(satt["df"], [8.99999754463259], rtol=DF_RTOL, what="Pastes df")
    assert_close(satt["t"], [88.7220799437411], rtol=T_RTOL, what="Pastes t")
    assert_close(satt["p_value"], [1.48784721703534e-14], rtol=P_RTOL, what="Pastes p")
    kr = pastes.coef_table(ddf="kenward-roger")
    assert_close(kr["df"], [8.99999999999937], rtol=DF_RTOL, what="Pastes KR df")
    assert_close(kr["p_value"], [1.48783647493475e-14], rtol=P_RTOL, what="Pastes KR p")
    # R: m <- lmer(Yield ~ 1 + (1 | Batch), Dyestuff2)   (singular: θ = 0)
    #    summary(m)$coefficients  -> df 28.9999999994202, p 3.318292749197e-09
    dye2 = fit("Yield ~ 1 + (1 | Batch)", mm.datasets.load("Dyestuff2"))
    table = dye2.coef_table()
    assert_close(table["df"], [28.9999999994202], rtol=DF_RTOL, what="Dyestuff2 df")
    assert_close(table["p_value"], [3.318292749197e-09], rtol=P_RTOL, what="Dyestuff2 p")


# ---------------------------------------------------------------------------- contract API


def test_contrast_df_contract(sleep_fit):
    L = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 5.0]])
    table = contrast_df(sleep_fit, L)
    assert list(table.columns) == COEF_COLUMNS
    assert list(table.index) == [0, 1, 2]
    coef = sleep_fit.coef_table()
    np.testing.assert_allclose(table.iloc[:2].to_numpy(), coef.to_numpy(), rtol=1e-12)
    beta, V = sleep_fit.fixef.to_numpy(), sleep_fit.vcov.to_numpy()
    assert table.loc[2, "estimate"] == pytest.approx(beta[0] + 5 * beta[1], rel=1e-12)
    assert table.loc[2, "se"] == pytest.approx(np.sqrt(L[2] @ V @ L[2]), rel=1e-12)
    # the names lmerTest / pbkrtest / emmeans use are accepted
    for name in ("Satterthwaite", "SATTERTHWAITE"):
        pd.testing.assert_frame_equal(contrast_df(sleep_fit, L, name), table)
    kr = contrast_df(sleep_fit, L, "kenward-roger")
    for name in ("Kenward-Roger", "KR", "kr", "kenward_roger"):
        pd.testing.assert_frame_equal(contrast_df(sleep_fit, L, name), kr)
    Vadj = kenward_roger_vcov(sleep_fit)
    np.testing.assert_allclose(kr["se"], np.sqrt(np.einsum("ij,jk,ik->i", L, Vadj, L)), rtol=1e-12)


def test_contrast_df_asymptotic(sleep_fit):
    from scipy import stats

    table = contrast_df(sleep_fit, np.eye(2), "asymptotic")
    assert np.all(np.isinf(table["df"]))
    np.testing.assert_allclose(table["se"], sleep_fit.se, rtol=1e-12)
    np.testing.assert_allclose(table["p_value"], 2 * stats.norm.sf(np.abs(table["t"])), rtol=1e-12)


def test_contrast_df_bad_input(sleep_fit):
    with pytest.raises(ModelSpecError, match="2 columns"):
        contrast_df(sleep_fit, np.ones((1, 3)))
    with pytest.raises(ModelSpecError, match="ddf"):
        contrast_df(sleep_fit, np.eye(2), "containment")


def test_f_test_one_row_is_t_squared(sleep_fit):
    L = np.array([[0.0, 1.0]])
    one = contrast_df(sleep_fit, L).iloc[0]
    res = f_test(sleep_fit, L)
    assert set(res) == {"sum_sq", "mean_sq", "num_df", "den_df", "F", "p_value"}
    assert res["F"] == pytest.approx(one["t"] ** 2, rel=1e-12)
    assert res["den_df"] == pytest.approx(one["df"], rel=1e-12)
    assert res["p_value"] == pytest.approx(one["p_value"], rel=1e-9)
    assert res["mean_sq"] == pytest.approx(res["F"] * sleep_fit.sigma**2, rel=1e-12)
    assert res["sum_sq"] == pytest.approx(res["mean_sq"], rel=1e-12)


def test_f_test_joint_and_rank_deficient(sleep_fit):
    # two rows: lmerTest's eigen-decomposition; F is the Wald statistic / 2
    L = np.eye(2)
    res = f_test(sleep_fit, L)
    beta, V = sleep_fit.fixef.to_numpy(), sleep_fit.vcov.to_numpy()
    assert res["num_df"] == 2
    assert res["F"] == pytest.approx(beta @ np.linalg.solve(V, beta) / 2, rel=1e-10)
    assert 2 < res["den_df"] < 18
    # a dependent third row changes nothing (dropped as lmerTest does)
    dep = f_test(sleep_fit, np.vstack([L, [1.0, 1.0]]))
    assert dep["num_df"] == 2
    assert dep["F"] == pytest.approx(res["F"], rel=1e-8)
    kr = f_test(sleep_fit, np.vstack([L, [1.0, 1.0]]), "KR")
    assert kr["num_df"] == 2 and np.isfinite(kr["F"])
    asym = f_test(sleep_fit, L, "asymptotic")
    assert np.isinf(asym["den_df"]) and asym["F"] == pytest.approx(res["F"], rel=1e-10)


def test_kenward_roger_needs_reml(sleep_ml, sleep_fit):
    with pytest.raises(ModelSpecError, match="REML"):
        sleep_ml.coef_table(ddf="kenward-roger")
    with pytest.raises(ModelSpecError, match="REML"):
        sleep_ml.anova(ddf="kenward-roger")
    # pbkrtest's vcovAdj refits an ML model by REML first
    np.testing.assert_allclose(kenward_roger_vcov(sleep_ml), kenward_roger_vcov(sleep_fit), rtol=1e-5)
    assert not sleep_ml.reml  # the model itself is untouched


def test_glmm_only_asymptotic():
    cbpp = mm.datasets.load("cbpp")
    g = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    base = MixedModelResults.coef_table(g, ddf="asymptotic")
    assert list(base.columns) == ["estimate", "se", "z", "p_value"]
    np.testing.assert_allclose(base["se"], g.se, rtol=1e-12)
    for method in ("satterthwaite", "kenward-roger"):
        with pytest.raises(ModelSpecError, match="linear mixed models"):
            MixedModelResults.coef_table(g, ddf=method)
        with pytest.raises(ModelSpecError, match="linear mixed models"):
            contrast_df(g, np.eye(4), method)
    with pytest.raises(ModelSpecError, match="likelihood-ratio"):
        g.anova()
    asym = contrast_df(g, np.eye(4), "asymptotic")
    np.testing.assert_allclose(asym["p_value"], base["p_value"], rtol=1e-10)
    assert "z value Pr(>|z|)" in str(g.summary())


def test_aliased_column_is_nan_row(sleep):
    data = sleep.assign(x2=2 * sleep["Days"])
    m = fit("Reaction ~ Days + x2 + (Days | Subject)", data)
    table = m.coef_table()
    assert list(table.index) == ["(Intercept)", "Days", "x2"]
    assert table.loc["x2"].isna().all()
    assert table.loc[["(Intercept)", "Days"]].notna().all().all()


# ---------------------------------------------------------------------------- numerical derivatives


def test_numderiv_reproduces_numDeriv():
    # R: f <- function(x) 3*x[1]^2*x[2] + x[2]^3 - 2*x[1]*x[3] + x[3]^2
    #    numDeriv::hessian(f, c(1.5, -0.7, 0))      (a zero coordinate: step eps)
    #    g <- function(x) exp(x[1]) * sin(x[2]) + log(1 + x[1]^2 * x[2]^2)
    #    numDeriv::hessian(g, c(0.3, 1.2))
    #    numDeriv::jacobian(function(x) c(exp(x[1])*x[2], sin(x[1]*x[2])), c(0.3, 1.2))
    def f(x):
        return 3 * x[0] ** 2 * x[1] + x[1] ** 3 - 2 * x[0] * x[2] + x[2] ** 2

    def g(x):
        return np.exp(x[0]) * np.sin(x[1]) + np.log(1 + x[0] ** 2 * x[1] ** 2)

    Hf = [
        [-4.1999999999989344, 9.0000000000019487, -2.0000000008421037],
        [9.0000000000019487, -4.1999999999990996, -2.9047549058558095e-13],
        [-2.0000000008421037, -2.9047549058558095e-13, 2.0000028924234581],
    ]
    Hg = [[3.2226662662492842, 1.6176618483437146], [1.6176618483437146, -1.1353371006318371]]
    Jh = [[1.6198305691581327, 1.34985880758623744], [1.1230761884264031, 0.28076904710660078]]
    np.testing.assert_allclose(numderiv.numderiv_hessian(f, np.array([1.5, -0.7, 0.0])), Hf, rtol=1e-13)
    np.testing.assert_allclose(numderiv.numderiv_hessian(g, np.array([0.3, 1.2])), Hg, rtol=1e-13)
    J = numderiv.numderiv_jacobian(
        lambda x: np.array([np.exp(x[0]) * x[1], np.sin(x[0] * x[1])]), np.array([0.3, 1.2])
    )
    np.testing.assert_allclose(J, Jh, rtol=1e-13)


# ---------------------------------------------------------------------------- Kenward-Roger algebra


def _dense_vcov_adj(m) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """pbkrtest's vcovAdj with dense n x n matrices (tests only, small n), on
    the √w-scaled design (the residual G is then the identity)."""
    fr = m.frame
    w = np.ones(fr.nobs) if fr.weights is None else fr.weights
    sw = np.sqrt(w)
    X = fr.fixed.X * sw[:, None]
    G, gam = [], []
    for term, cov in zip(fr.terms, m.covariances()):
        Z = np.zeros((fr.nobs, term.nlevels * term.k))
        for c in range(term.k):
            Z[np.arange(fr.nobs), term.codes * term.k + c] = term.z[:, c] * sw
        for a in range(term.k):
            for b in range(a, term.k):
                E = np.zeros((term.k, term.k))
                E[a, b] = E[b, a] = 1.0
                G.append(Z @ np.kron(np.eye(term.nlevels), E) @ Z.T)
                gam.append(cov[a, b])
    G.append(np.eye(fr.nobs))
    gam.append(m.sigma**2)
    Sigma = sum(g * Gi for g, Gi in zip(gam, G))
    Si = np.linalg.inv(Sigma)
    Phi = m.vcov.to_numpy()
    H = [Gi @ Si for Gi in G]
    O = [h @ X for h in H]
    T = Si @ X
    P = [-(o.T @ T) for o in O]
    Q = {(i, j): O[i].T @ Si @ O[j] for i in range(len(G)) for j in range(len(G))}
    k = len(G)
    IE2 = np.array(
        [
            [
                np.sum(H[i].T * H[j]) - 2 * np.sum(Phi * Q[i, j]) + np.sum((Phi @ P[i]) * (P[j] @ Phi))
                for j in range(k)
            ]
            for i in range(k)
        ]
    )
    W = 2 * np.linalg.inv(IE2)
    U = sum(W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j]) for i in range(k) for j in range(k))
    return Phi + 2 * Phi @ U @ Phi, P, W


@pytest.mark.parametrize("weighted", [False, True])
def test_kenward_roger_woodbury_equals_dense_algebra(sleep, weighted):
    # correlated random slopes, a second crossed term, optional prior weights
    data = sleep.assign(week=(sleep["Days"] // 3).astype(str))
    w = np.linspace(0.5, 2.0, len(data)) if weighted else None
    m = fit("Reaction ~ Days + (Days | Subject) + (1 | week)", data, weights=w)
    dense, P, W = _dense_vcov_adj(m)
    np.testing.assert_allclose(kenward_roger_vcov(m), dense, rtol=1e-8, atol=1e-10)
    info = krmod.kenward_roger_info(m)
    np.testing.assert_allclose(info.W, W, rtol=1e-7)
    for ours, theirs in zip(info.P, P):
        np.testing.assert_allclose(ours, (theirs + theirs.T) / 2, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------------- Hessian from the gradient
#
# Above NUMDERIV_MAX_VARPAR variance parameters the Hessian of devfun_vp comes
# from central differences of its analytic gradient (O(k) factorisations, not
# numDeriv's ~4k²). Measured agreement of the df with the numDeriv path on the
# models below: <= 3e-7 relative (the tolerance here is 1e-4; lmerTest's own
# Hessian is only good to ~1e-7 on these models).

GRADIENT_DF_RTOL = 1e-4


@pytest.fixture(scope="module")
def crossed_data() -> pd.DataFrame:
    """30 subjects x 20 items, random slopes of x (subjects) and z (items)."""
    rng = np.random.default_rng(7)
    ns, ni = 30, 20
    subj = np.repeat(np.arange(ns), ni)
    item = np.tile(np.arange(ni), ns)
    x = rng.normal(size=subj.size)
    z = rng.integers(0, 2, subj.size).astype(float)
    y = (
        2 + x + 0.5 * z
        + rng.normal(size=ns)[subj] + 0.5 * rng.normal(size=ns)[subj] * x
        + 0.7 * rng.normal(size=ni)[item] + 0.4 * rng.normal(size=ni)[item] * z
        + rng.normal(size=subj.size)
    )
    return pd.DataFrame({"subj": subj, "item": item, "x": x, "z": z, "y": y})


def _blocked_fit(formula: str, data: pd.DataFrame, **kwargs) -> mm.LinearMixedModel:
    """A fit through the blocked system (whose gradient divides by λ), however small."""
    import mixedmodels.models.lmm.engine as lmm

    old = lmm.DENSE_LIMIT
    lmm.DENSE_LIMIT = 0
    try:
        m = fit(formula, data, **kwargs)
        m.system  # noqa: B018 - the blocked engine, released after the fit, rebuilt under the limit
    finally:
        lmm.DENSE_LIMIT = old
    assert type(m.system).__name__ == "AugmentedSystem"
    return m


def _fresh_info(m: mm.LinearMixedModel, hessian: str) -> satmod.SatterthwaiteInfo:
    m._cache = {}
    with warnings.catch_warnings():
        # the crossed 3x3 ML fit is singular: lmerTest's warning about a
        # slightly negative Hessian eigenvalue (-1.4e-4), from either path
        warnings.simplefilter("ignore", mm.exceptions.ConvergenceWarning)
        return satmod.satterthwaite_info(m, hessian)


def _assert_gradient_matches_numderiv(m: mm.LinearMixedModel, what: str) -> None:
    exact = _fresh_info(m, "numderiv")
    fast = _fresh_info(m, "gradient")
    p = len(m.beta)
    rng = np.random.default_rng(3)
    L = np.vstack([np.eye(p), rng.normal(size=(3, p))])
    df_exact = satmod.satterthwaite_df(exact, L)[1]
    df_fast = satmod.satterthwaite_df(fast, L)[1]
    assert_close(df_fast, df_exact, rtol=GRADIENT_DF_RTOL, what=f"{what} df")
    # numDeriv's Jacobian step is 1e-4 |x|: below |x| ~ 1e-3 it is rounding
    # noise (4e-3 relative at dietox's θ5 = -5.4e-5, where ours is stable to
    # 1e-7 over steps 1e-3..1e-6), so those columns are not compared
    cols = (np.abs(exact.varpar) >= 1e-3) | (exact.varpar == 0)
    scale = np.max(np.abs(exact.jacobian))
    np.testing.assert_allclose(
        fast.jacobian[cols], exact.jacobian[cols], rtol=0, atol=1e-5 * scale
    )
    np.testing.assert_allclose(fast.vcov_beta, exact.vcov_beta, rtol=1e-12)
    np.testing.assert_array_equal(fast.varpar, exact.varpar)
    np.testing.assert_allclose(fast.hessian, fast.hessian.T, rtol=0, atol=0)


def test_criterion_pieces_gradient_matches_differences(sleep, crossed_data):
    models = [
        fit("Reaction ~ Days + (1 + Days + I(Days^2) | Subject)", sleep),
        fit("Reaction ~ Days + (1 + Days + I(Days^2) | Subject)", sleep, reml=False),
        _blocked_fit("y ~ x + z + (1 + x | subj) + (1 + z | item)", crossed_data),
    ]
    for m in models:
        n, p = m.n_eff, len(m.beta)
        nu = n - p if m.reml else n
        for theta in (m.theta_vector, 1.2 * m.theta_vector + 0.05):
            pc = m.criterion_pieces_gradient(theta)
            # the profiled gradient is assembled from the same two pieces
            _, grad = m.objective_gradient(theta)
            np.testing.assert_allclose(
                pc.d_logdet + nu * pc.d_pwrss / pc.pwrss, grad, rtol=1e-9, atol=1e-9
            )
            f = m.system.factor(m.lambdas(theta))
            ld = f.logdet_re() + (f.logdet_x() if m.reml else 0.0)
            assert pc.logdet == pytest.approx(ld, rel=1e-13)
            assert pc.pwrss == pytest.approx(f.pwrss(), rel=1e-13)
            np.testing.assert_allclose(pc.LX, f.LX(), rtol=1e-13)
            fd = np.array([_central(m, theta, i) for i in range(theta.size)])
            np.testing.assert_allclose(pc.d_logdet, fd[:, 0], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(pc.d_pwrss, fd[:, 1], rtol=1e-6, atol=1e-6 * pc.pwrss)


def _central(m: mm.LinearMixedModel, theta: np.ndarray, i: int) -> tuple[float, float]:
    """Richardson-extrapolated central differences of (logdet, pwrss) in θ_i."""
    def pieces(h: float) -> np.ndarray:
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        a, b = m.criterion_pieces_gradient(up), m.criterion_pieces_gradient(dn)
        return np.array([a.logdet - b.logdet, a.pwrss - b.pwrss]) / (2 * h)

    h = 1e-3 * max(1.0, abs(theta[i]))
    return tuple((4 * pieces(h / 2) - pieces(h)) / 3)


def test_criterion_pieces_singular_lambda_in_blocked_system(crossed_data):
    m = _blocked_fit("y ~ x + z + (1 + x | subj) + (1 + z | item)", crossed_data)
    theta = m.theta_vector.copy()
    theta[5] = 0.0  # item's λ singular: the blocked gradient has no λ⁻¹ form there
    exact = m.criterion_pieces_gradient(theta)
    bare = m.criterion_pieces_gradient(theta, numeric=False)
    assert np.all(np.isnan(bare.d_logdet[3:])) and np.all(np.isnan(bare.d_pwrss[3:]))
    np.testing.assert_array_equal(bare.d_logdet[:3], exact.d_logdet[:3])
    fd = np.array([_central(m, theta, i) for i in range(theta.size)])
    np.testing.assert_allclose(exact.d_logdet, fd[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exact.d_pwrss, fd[:, 1], rtol=1e-5, atol=1e-6 * exact.pwrss)


def test_gradient_hessian_matches_numderiv(sleep, crossed_data):
    dietox = mm.datasets.load("dietox")
    cases = {
        "sleepstudy (k=4)": fit("Reaction ~ Days + (Days | Subject)", sleep),
        "sleepstudy 3x3 (k=7)": fit("Reaction ~ Days + (1 + Days + I(Days^2) | Subject)", sleep),
        # singular: θ on the boundary (λ33 = 0)
        # Tx = Time XOR 2: what I(Time^2) computed before ^ became R's power;
        # kept because it gives a fit on the boundary
        "dietox 3x3 (k=7)": fit(
            "Weight ~ Evit * Cu + Time + (1 + Time + Tx | Pig)",
            dietox.assign(Tx=np.bitwise_xor(dietox["Time"].to_numpy(), 2)),
        ),
        "crossed slopes (k=7)": fit(
            "y ~ x + z + (1 + x | subj) + (1 + z | item)", crossed_data
        ),
        "crossed 3x3 ML (k=13)": fit(
            "y ~ x * z + (1 + x + z | subj) + (1 + x + z | item)", crossed_data, reml=False
        ),
        "crossed slopes, blocked (k=7)": _blocked_fit(
            "y ~ x + z + (1 + x | subj) + (1 + z | item)", crossed_data
        ),
    }
    assert cases["dietox 3x3 (k=7)"].theta_vector[-1] == 0.0
    for what, m in cases.items():
        _assert_gradient_matches_numderiv(m, what)


def test_gradient_hessian_blocks_from_numderiv(crossed_data, monkeypatch):
    # a term whose λ has a diagonal below LAMBDA_DIAG_TOL gets its θ block from
    # numDeriv's second differences (here: item's, 0.12, then both terms')
    m = _blocked_fit("y ~ x + z + (1 + x | subj) + (1 + z | item)", crossed_data)
    exact = _fresh_info(m, "numderiv")
    for tol in (0.3, 0.9):
        monkeypatch.setattr(satmod, "LAMBDA_DIAG_TOL", tol)
        fast = _fresh_info(m, "gradient")
        np.testing.assert_allclose(fast.hessian, exact.hessian, rtol=1e-6, atol=1e-6)
        df = satmod.satterthwaite_df(fast, np.eye(3))[1]
        assert_close(df, satmod.satterthwaite_df(exact, np.eye(3))[1], rtol=1e-6, what="df")


def test_gradient_hessian_factorisation_count(crossed_data):
    m = fit("y ~ x * z + (1 + x + z | subj) + (1 + x + z | item)", crossed_data, reml=False)
    calls = []
    factor = m.system.factor

    def counting(*args, **kwargs):
        calls.append(1)
        return factor(*args, **kwargs)

    m.system.factor = counting
    try:
        _fresh_info(m, "gradient")
    finally:
        del m.system.factor
    # the centre and θ ± h e_i: O(k), where numDeriv needs about 4k² (676 here)
    assert len(calls) == 2 * len(m.theta_vector) + 1


def test_hessian_method_choice(sleep, sleep_fit):
    assert satmod.NUMDERIV_MAX_VARPAR == 6
    small = _fresh_info(sleep_fit, "auto")  # k = 4: lmerTest's numDeriv, bit for bit
    np.testing.assert_array_equal(small.hessian, _fresh_info(sleep_fit, "numderiv").hessian)
    big = fit("Reaction ~ Days + (1 + Days + I(Days^2) | Subject)", sleep)  # k = 7
    np.testing.assert_array_equal(
        _fresh_info(big, "auto").hessian, _fresh_info(big, "gradient").hessian
    )
    # the default coefficient table is the cached "auto" result
    table = big.coef_table()
    info = satmod.satterthwaite_info(big)
    assert info is satmod.satterthwaite_info(big, "gradient")
    np.testing.assert_allclose(
        table["df"], satmod.satterthwaite_df(info, np.eye(len(big.beta)))[1], rtol=1e-12
    )
    with pytest.raises(ModelSpecError, match="hessian"):
        satmod.satterthwaite_info(sleep_fit, "bfgs")


def test_large_models_take_the_gradient_path(sleep_fit, monkeypatch):
    # a million-row model's ~4k² numDeriv factorisations would take a minute
    assert satmod.hessian_method(sleep_fit, "auto") == "numderiv"
    monkeypatch.setattr(satmod, "NUMDERIV_MAX_NOBS", sleep_fit.nobs - 1)
    assert satmod.hessian_method(sleep_fit, "auto") == "gradient"
    assert satmod.hessian_method(sleep_fit, "numderiv") == "numderiv"


def test_kenward_roger_two_vector_terms_equals_dense_algebra(crossed_data):
    # per pair of terms (T Gram matrix, B_i products): two 2 x 2 terms and the
    # cross pairs between them, against pbkrtest's n x n algebra
    m = fit("y ~ x + z + (1 + x | subj) + (1 + z | item)", crossed_data)
    dense, P, W = _dense_vcov_adj(m)
    info = krmod.kenward_roger_info(m)
    np.testing.assert_allclose(info.vcov_adj, dense, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(info.W, W, rtol=1e-7)
    for ours, theirs in zip(info.P, P):
        np.testing.assert_allclose(ours, (theirs + theirs.T) / 2, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------------- printing


def test_summary_prints_lmertest_layout(sleep_fit, sleep_ml):
    text = str(sleep_fit.summary())
    lines = text.splitlines()
    assert lines[0] == (
        "Linear mixed model fit by REML. t-tests use Satterthwaite's method"
    )
    # as lmerTest prints it (the estimates' 6th digit is lme4's optimum)
    assert "            Estimate Std. Error      df t value Pr(>|t|)" in lines
    assert "(Intercept)  251.405      6.825  17.000  36.838  < 2e-16 ***" in lines
    assert "Days          10.467      1.546  17.000   6.771 3.26e-06 ***" in lines
    assert "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1" in lines
    kr = str(sleep_fit.summary(ddf="KR")).splitlines()
    assert kr[0] == "Linear mixed model fit by REML. t-tests use Kenward-Roger's method"
    lme4 = str(sleep_fit.summary(ddf="lme4"))
    assert lme4.splitlines()[0] == "Linear mixed model fit by REML"  # no R class names
    assert "            Estimate Std. Error t value" in lme4.splitlines()
    ml = str(sleep_ml.summary()).splitlines()
    assert ml[0] == (
        "Linear mixed model fit by maximum likelihood. t-tests use Satterthwaite's method"
    )
    summ = sleep_fit.summary()
    assert summ.ddf == "satterthwaite"
    pd.testing.assert_frame_equal(summ.coefficients, sleep_fit.coef_table())


def test_tidy_has_df_and_p(sleep_fit):
    tidy = sleep_fit.tidy()
    table = sleep_fit.coef_table()
    assert list(tidy.columns) == [
        "effect", "term", "estimate", "std_error", "statistic", "df", "p_value"
    ]
    np.testing.assert_allclose(tidy["df"], table["df"], rtol=1e-12)
    np.testing.assert_allclose(tidy["p_value"], table["p_value"], rtol=1e-12)
    kr = sleep_fit.tidy(ddf="KR", conf_int=True)
    np.testing.assert_allclose(kr["std_error"], sleep_fit.coef_table("KR")["se"], rtol=1e-12)
    assert {"conf_low", "conf_high"} <= set(kr.columns)


def test_p_value_formatting_as_r():
    from mixedmodels.report.format import format_pvalues

    # R: format.pval(c(1.47e-9, 0.00107, 4.75e-4, 1.82e-4), digits = 3)
    assert format_pvalues(np.array([1.47e-9, 0.00107, 4.75e-4, 1.82e-4])) == [
        "1.47e-09", "0.001070", "0.000475", "0.000182"
    ]
    # R: format.pval(c(0.0123, 1e-20, 0.5), digits = 3); format.pval(c(3.26e-6, 1e-20), 3)
    assert format_pvalues(np.array([0.0123, 1e-20, 0.5])) == ["0.0123", "<2e-16", "0.5000"]
    assert format_pvalues(np.array([3.26e-6, 1e-20])) == ["3.26e-06", "< 2e-16"]
