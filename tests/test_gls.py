"""gls (nlme::gls) against nlme 3.1-162 on the stored reference cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedmodels as mm
from tests._reference import REFERENCE_DIR, load_case

CASES = {
    "gls_orthodont_varident": dict(
        formula="distance ~ age * Sex",
        weights=lambda: mm.varIdent(form="~ 1 | Sex"),
        correlation=lambda: mm.corCompSymm(form="~ 1 | Subject"),
    ),
    "gls_ovary_arma11": dict(
        formula="follicles ~ sin(2 * pi * Time) + cos(2 * pi * Time)",
        weights=lambda: None,
        correlation=lambda: mm.corARMA(p=1, q=1, form="~ 1 | Mare"),
    ),
    "gls_spatial_gaus": dict(
        formula="y ~ x",
        weights=lambda: None,
        correlation=lambda: mm.corGaus(form="~ cx + cy", nugget=True),
    ),
}


def case_data(case: dict) -> pd.DataFrame:
    """The case's CSV with its factors' levels in R's order."""
    data = pd.read_csv(REFERENCE_DIR / "data" / case["data"])
    for name, factor in (case.get("factors") or {}).items():
        data[name] = pd.Categorical(data[name].astype(str), categories=factor["levels"], ordered=factor["ordered"])
    return data


_FITS: dict[str, tuple[dict, mm.GeneralizedLeastSquares]] = {}


def fitted(case_id: str) -> tuple[dict, mm.GeneralizedLeastSquares]:
    if case_id not in _FITS:
        case = load_case(case_id)
        spec = CASES[case_id]
        model = mm.gls(spec["formula"], case_data(case), weights=spec["weights"](),
                       correlation=spec["correlation"](), method=case["method"])
        _FITS[case_id] = (case, model)
    return _FITS[case_id]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_gls_matches_nlme(case_id):
    case, m = fitted(case_id)
    names = list(case["fixef"])
    assert list(m.fixef.index) == names
    np.testing.assert_allclose(m.fixef.to_numpy(), [case["fixef"][n] for n in names], rtol=1e-4)
    np.testing.assert_allclose(m.se.to_numpy(), [case["se"][n] for n in names], rtol=2e-3)
    assert list(m.vcov.index) == case["vcov"]["names"]
    np.testing.assert_allclose(m.vcov.to_numpy(), np.array(case["vcov"]["matrix"]), rtol=2e-3, atol=1e-8)
    assert m.sigma == pytest.approx(case["sigma"], rel=2e-3)
    assert m.loglik == pytest.approx(case["loglik"], rel=1e-6)
    # never below nlme's optimum (beyond rounding of the last digits)
    assert m.loglik >= case["loglik"] - 1e-9 * abs(case["loglik"])
    assert m.nobs == case["nobs"]
    assert m.n_params == case["df"]
    assert m.aic == pytest.approx(case["aic"], rel=1e-6)
    assert m.bic == pytest.approx(case["bic"], rel=1e-6)
    cor = case.get("cor_params") or {}
    assert list(m.correlation_params.index) == list(cor)
    np.testing.assert_allclose(m.correlation_params.to_numpy(), list(cor.values()), rtol=2e-3)
    var = case.get("var_params") or {}
    assert list(m.variance_params.index) == list(var)
    np.testing.assert_allclose(m.variance_params.to_numpy(), list(var.values()), rtol=2e-3)
    table = m.coef_table()
    for row in case["ttable"]:
        got = table.loc[row["term"]]
        assert got["estimate"] == pytest.approx(row["estimate"], rel=1e-4)
        assert got["se"] == pytest.approx(row["se"], rel=2e-3)
        assert got["t"] == pytest.approx(row["t"], rel=2e-3)
        # p is a function of t and nlme's df (N - p): the same function as nlme's
        # (exact on nlme's own t), evaluated at our t (compared above)
        df = case["nobs"] - len(case["ttable"])
        assert row["p"] == pytest.approx(2 * stats.t.sf(abs(row["t"]), df), rel=1e-9)
        assert got["p"] == pytest.approx(2 * stats.t.sf(abs(got["t"]), df), rel=1e-12)
    head = len(case["fitted_head"])
    np.testing.assert_allclose(m.fitted[:head], case["fitted_head"], rtol=1e-4)
    np.testing.assert_allclose(m.residuals[:head], case["residuals_head"], rtol=1e-4, atol=1e-6)
    text = m.summary()
    assert "Generalized least squares fit by " + case["method"] in text


def test_bundled_orthodont_gives_the_same_fit():
    case, reference = fitted("gls_orthodont_varident")
    m = mm.gls("distance ~ age * Sex", mm.datasets.load("Orthodont"),
               weights=mm.varIdent(form="~ 1 | Sex"), correlation=mm.corCompSymm(form="~ 1 | Subject"))
    assert m.loglik == pytest.approx(reference.loglik, rel=1e-10)


def test_ml_fit_profiles_sigma_over_n_and_uses_log_n_in_bic():
    data = mm.datasets.load("Orthodont")
    ml = mm.gls("distance ~ age * Sex", data, correlation=mm.corCompSymm(form="~ 1 | Subject"), method="ML")
    reml = mm.gls("distance ~ age * Sex", data, correlation=mm.corCompSymm(form="~ 1 | Subject"))
    assert ml.method == "ML" and ml.sigma < reml.sigma
    assert ml.bic == pytest.approx(-2 * ml.loglik + np.log(ml.nobs) * ml.n_params)


def test_gls_refuses_bad_input():
    data = mm.datasets.load("Orthodont")
    with pytest.raises(mm.ModelSpecError, match="no random-effects terms"):
        mm.gls("distance ~ age + (1 | Subject)", data)
    with pytest.raises(mm.ArgumentError, match="method must be"):
        mm.gls("distance ~ age", data, method="reml")
    with pytest.raises(mm.ArgumentError, match="correlation= must be"):
        mm.gls("distance ~ age", data, correlation="corAR1")
    with pytest.raises(mm.DataError, match="'Patient'"):
        mm.gls("distance ~ age", data, correlation=mm.corCompSymm(form="~ 1 | Patient"))
