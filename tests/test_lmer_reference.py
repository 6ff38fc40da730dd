"""lmer fits against lme4's results on every public ``kind == "lmer"`` reference case.

Each case is fitted once per module (module-scoped, parametrised fixture).  Where
a case has ``converged_refit`` (R's default fit stopped short of the optimum), the
refit's numbers are the reference for every quantity it holds.

Tolerances (from the issue): fixef 1e-4 relative; SEs, SDs and correlations 2e-3
relative; sigma, theta, loglik / REML criterion / deviance, AIC, BIC 1e-3
absolute; and our objective never worse than R's best by more than 1e-6.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from _reference import (
    EXPECTED_LMER_CASES,
    MISSING,
    assert_close,
    case_ids,
    dataset_stem,
    is_missing,
    load_case,
    r_objective,
    ref_value,
    require_reference_dir,
    varcorr_key,
)
from mixedmodels.exceptions import SingularFitWarning

CASES = case_ids("lmer")

FIXEF_RTOL = 1e-4
SD_RTOL = 2e-3  # SEs, SDs, correlations
VAR_RTOL = 2 * SD_RTOL  # variances / vcov entries: squares of SDs
ABS_TOL = 1e-3  # sigma, theta, loglik, deviance, REML criterion, AIC, BIC
OBJ_SLACK = 1e-6
FITTED_RTOL = 1e-4


class Fit:
    def __init__(self, case, model, caught):
        self.case = case
        self.model = model
        self.warnings = caught


@pytest.fixture(scope="module", params=CASES)
def fit(request):
    case_id = request.param
    if case_id == MISSING:
        require_reference_dir()
    case = load_case(case_id)
    data = mm.datasets.load(dataset_stem(case))
    reml = case["method"] == "REML"
    assert case["method"] in ("REML", "ML"), case["method"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = mm.lmer(case["formula"], data, reml=reml)
    return Fit(case, model, list(caught))


def test_reference_cases_present():
    require_reference_dir()
    missing = EXPECTED_LMER_CASES - set(CASES)
    assert not missing, f"reference lmer cases missing: {sorted(missing)}"


# ---------------------------------------------------------------------------- fixed effects


def test_fixef(fit):
    ref = pd.Series(ref_value(fit.case, "fixef"), dtype=float)
    ours = fit.model.fixef
    assert list(ours.index) == list(ref.index)
    assert_close(ours, ref, rtol=FIXEF_RTOL, what="fixef")


def test_se(fit):
    ref = pd.Series(ref_value(fit.case, "se"), dtype=float)
    ours = fit.model.se
    assert list(ours.index) == list(ref.index)
    assert_close(ours, ref, rtol=SD_RTOL, what="se")


def test_vcov(fit):
    ref = ref_value(fit.case, "vcov")
    V = np.asarray(ref["matrix"], dtype=float)
    ours = fit.model.vcov
    assert list(ours.index) == ref["names"]
    assert list(ours.columns) == ref["names"]
    sd = np.sqrt(np.diag(V))
    # variances: twice the SE tolerance; covariances: relative to sd_i * sd_j
    diff = np.abs(ours.to_numpy() - V)
    assert np.all(diff <= VAR_RTOL * np.outer(sd, sd)), f"vcov: ours\n{ours}\nR\n{V}"


# ---------------------------------------------------------------------------- variance components


def _varcorr_rows(case):
    return {varcorr_key(r["grp"], r["var1"], r["var2"]): r for r in ref_value(case, "varcorr")}


def test_varcorr_rows(fit):
    ours = fit.model.varcorr
    assert list(ours.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    our_keys = [varcorr_key(*r) for r in ours[["grp", "var1", "var2"]].itertuples(index=False)]
    ref_keys = [varcorr_key(r["grp"], r["var1"], r["var2"]) for r in ref_value(fit.case, "varcorr")]
    assert sorted(our_keys) == sorted(ref_keys)


def test_varcorr_sdcor(fit):
    ref = _varcorr_rows(fit.case)
    for row in fit.model.varcorr.itertuples(index=False):
        key = varcorr_key(row.grp, row.var1, row.var2)
        want = ref[key]["sdcor"]
        if is_missing(row.var2):  # a standard deviation
            # R's sd of a singular term is exactly 0: allow 1e-3 absolute there
            assert_close(row.sdcor, want, rtol=SD_RTOL, atol=ABS_TOL if want == 0 else 0, what=f"sd {key}")
        else:  # a correlation
            assert_close(row.sdcor, want, rtol=SD_RTOL, what=f"correlation {key}")


def test_varcorr_vcov(fit):
    ref = _varcorr_rows(fit.case)
    sds = {
        (k[0], k[1]): r["sdcor"] for k, r in ref.items() if k[2] == ""
    }
    for row in fit.model.varcorr.itertuples(index=False):
        key = varcorr_key(row.grp, row.var1, row.var2)
        want = ref[key]["vcov"]
        if key[2] == "":
            scale = ref[key]["sdcor"] ** 2
        else:
            scale = sds[(key[0], key[1])] * sds[(key[0], key[2])]
        assert abs(row.vcov - want) <= VAR_RTOL * scale + (ABS_TOL**2 if scale == 0 else 0), (
            f"varcorr vcov {key}: ours {row.vcov!r}, R {want!r}"
        )


def test_sigma(fit):
    assert_close(fit.model.sigma, ref_value(fit.case, "sigma"), atol=ABS_TOL, what="sigma")


def test_theta(fit):
    ref = pd.Series(ref_value(fit.case, "theta"), dtype=float)
    ours = fit.model.theta
    assert sorted(ours.index) == sorted(ref.index)
    assert_close(ours[ref.index], ref, atol=ABS_TOL, what="theta")


# ---------------------------------------------------------------------------- likelihood


def test_loglik(fit):
    assert_close(fit.model.loglik, ref_value(fit.case, "loglik"), atol=ABS_TOL, what="loglik")


def test_objective(fit):
    case, m = fit.case, fit.model
    if case["method"] == "REML":
        ours = m.reml_criterion
        assert_close(ours, ref_value(case, "reml_criterion"), atol=ABS_TOL, what="reml_criterion")
    else:
        ours = m.deviance
        assert_close(ours, ref_value(case, "deviance"), atol=ABS_TOL, what="deviance")
        assert np.isnan(m.reml_criterion)
    best = r_objective(case)
    assert ours <= best + OBJ_SLACK, f"our objective {ours!r} is worse than R's best {best!r}"


def test_aic_bic(fit):
    assert_close(fit.model.aic, ref_value(fit.case, "aic"), atol=ABS_TOL, what="aic")
    assert_close(fit.model.bic, ref_value(fit.case, "bic"), atol=ABS_TOL, what="bic")


def test_df(fit):
    assert fit.model.n_params == fit.case["df"]


# ---------------------------------------------------------------------------- structure


def test_nobs(fit):
    assert fit.model.nobs == fit.case["nobs"]
    assert fit.model.n_dropped == 0


def test_ngroups(fit):
    assert fit.model.ngroups == fit.case["ngroups"]


def test_is_singular(fit):
    assert fit.model.is_singular is bool(fit.case["singular"])
    warned = any(issubclass(w.category, SingularFitWarning) for w in fit.warnings)
    assert warned is bool(fit.case["singular"])


def test_method(fit):
    assert fit.model.method == fit.case["method"]


# ---------------------------------------------------------------------------- random effects


def _compare_per_level(ours: dict[str, pd.DataFrame], ref: dict, what: str) -> None:
    assert set(ref) <= set(ours), f"{what}: groups {sorted(ref)} vs ours {sorted(ours)}"
    for group, block in ref.items():
        frame = ours[group]
        assert list(frame.columns) == block["columns"], f"{what} {group} columns"
        levels = [str(lv) for lv in block["levels"]]
        missing = [lv for lv in levels if lv not in frame.index]
        assert not missing, f"{what} {group}: levels {missing[:5]} not in ours"
        values = np.asarray(block["values"], dtype=float)
        got = frame.loc[levels, block["columns"]].to_numpy(dtype=float)
        scale = np.max(np.abs(values), axis=0, keepdims=True)
        assert_close(got, values, rtol=SD_RTOL, atol=ABS_TOL * scale, what=f"{what} {group}")


def test_ranef(fit):
    _compare_per_level(fit.model.ranef, ref_value(fit.case, "ranef"), "ranef")


def test_ranef_levels_in_r_order(fit):
    for group, block in ref_value(fit.case, "ranef").items():
        ours = [str(x) for x in fit.model.ranef[group].index]
        levels = [str(lv) for lv in block["levels"]]
        assert ours[: len(levels)] == levels, group
        assert len(ours) == fit.case["ngroups"][group]


def test_ranef_condsd(fit):
    _compare_per_level(fit.model.ranef_condsd, ref_value(fit.case, "ranef_condsd"), "ranef_condsd")


def test_ranef_condvar_consistent(fit):
    condsd = fit.model.ranef_condsd
    for label, cv in fit.model.ranef_condvar().items():
        assert cv.ndim == 3 and cv.shape[1] == cv.shape[2]
        assert np.all(np.diagonal(cv, axis1=1, axis2=2) >= 0)
    # the diagonal of condvar is condsd^2 (single-term groups)
    for label, cv in fit.model.ranef_condvar().items():
        if label in condsd and condsd[label].shape[1] == cv.shape[1]:
            assert_close(np.sqrt(np.diagonal(cv, axis1=1, axis2=2)), condsd[label].to_numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------- fitted values


def test_fitted_head(fit):
    ref = np.asarray(ref_value(fit.case, "fitted_head"), dtype=float)
    got = fit.model.fitted.to_numpy()[: len(ref)]
    assert_close(got, ref, rtol=FITTED_RTOL, what="fitted_head")


def test_residuals_head(fit):
    ref = np.asarray(ref_value(fit.case, "residuals_head"), dtype=float)
    fitted_scale = np.max(np.abs(np.asarray(ref_value(fit.case, "fitted_head"), dtype=float)))
    got = fit.model.residuals().to_numpy()[: len(ref)]
    assert_close(got, ref, rtol=FITTED_RTOL, atol=FITTED_RTOL * fitted_scale, what="residuals_head")


def test_fitted_plus_residuals_is_response(fit):
    m = fit.model
    y = m.frame.y
    assert_close(m.fitted.to_numpy() + m.residuals().to_numpy(), y, rtol=1e-12, atol=1e-9)


def _newdata(case) -> pd.DataFrame:
    return pd.DataFrame(case["predict_newdata"]["rows"])


def test_predict_population(fit):
    nd = _newdata(fit.case)
    ref = np.asarray(fit.case["predict_newdata"]["re_form_NA"], dtype=float)
    got = fit.model.predict(nd, re_form="~0")
    assert list(got.index) == list(nd.index)
    assert_close(got.to_numpy(), ref, rtol=FITTED_RTOL, what="predict re_form=~0")


def test_predict_with_random_effects(fit):
    nd = _newdata(fit.case)
    ref = np.asarray(fit.case["predict_newdata"]["with_re"], dtype=float)
    got = fit.model.predict(nd)
    assert_close(got.to_numpy(), ref, rtol=FITTED_RTOL, what="predict with_re")
    assert list(got.index) == list(nd.index)


# ---------------------------------------------------------------------------- outputs


def test_summary_tidy_glance(fit):
    m = fit.model
    text = str(m.summary())
    assert ("REML" in text) is (fit.case["method"] == "REML")
    tidy = m.tidy()
    assert list(tidy["term"]) == list(m.fixef.index)
    assert_close(tidy["estimate"], m.fixef.to_numpy(), rtol=1e-12)
    ran = m.tidy("ran_pars")
    assert len(ran) == len(m.varcorr)
    g = m.glance()
    assert g.loc[0, "nobs"] == fit.case["nobs"]
    assert g.loc[0, "loglik"] == pytest.approx(m.loglik, rel=1e-12)


def test_simulate_shape(fit):
    sim = fit.model.simulate(nsim=2, seed=3)
    assert sim.shape == (fit.case["nobs"], 2)
    assert np.isfinite(sim.to_numpy()).all()
