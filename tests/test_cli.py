"""The command-line interface: ``mixedmodels fit`` / ``datasets`` / ``--version``."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

import mixedmodels
from mixedmodels.cli import main

FORMULA = "Reaction ~ Days + (Days | Subject)"

# lme4 1.1-31 (the reference cases tests/reference/cases/lmer_sleepstudy*.json)
LME4_INTERCEPT = 251.405104848485
LME4_REML_CRITERION = 1743.62827
LME4_ML_DEVIANCE = 1751.93934480795


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_text(capsys):
    code, out, err = run(capsys, "fit", FORMULA, "--data", "sleepstudy")
    assert code == 0
    assert "Linear mixed model fit by REML" in out
    assert "Subject" in out
    assert "Traceback" not in err


def test_fit_json_reml(capsys):
    code, out, _ = run(capsys, "fit", FORMULA, "--data", "sleepstudy", "--format", "json")
    assert code == 0
    res = json.loads(out)
    assert res["method"] == "REML"
    assert res["formula"] == FORMULA
    assert res["nobs"] == 180
    assert res["ngroups"] == {"Subject": 18}
    assert res["fixef"]["(Intercept)"] == pytest.approx(LME4_INTERCEPT, rel=1e-6)
    assert res["reml_criterion"] == pytest.approx(LME4_REML_CRITERION, abs=1e-3)
    assert res["vcov"]["names"] == ["(Intercept)", "Days"]
    assert len(res["vcov"]["matrix"]) == 2 and len(res["vcov"]["matrix"][0]) == 2
    assert list(res["theta"]) == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    rows = res["varcorr"]
    assert [r["grp"] for r in rows] == ["Subject", "Subject", "Subject", "Residual"]
    assert rows[0]["var2"] is None and rows[3]["var1"] is None
    assert rows[2]["var2"] == "Days"
    assert res["sigma"] == pytest.approx(rows[3]["sdcor"])
    assert res["is_singular"] is False
    assert res["optimizer"]["evaluations"] > 0
    assert isinstance(res["optimizer"]["return_code"], str)
    for key in ("loglik", "aic", "bic", "deviance", "se"):
        assert key in res


def test_fit_json_ml(capsys):
    code, out, _ = run(
        capsys, "fit", FORMULA, "--data", "SleepStudy", "--ml", "--format", "json"
    )
    assert code == 0
    res = json.loads(out)
    assert res["method"] == "ML"
    assert "reml_criterion" not in res
    assert res["deviance"] == pytest.approx(LME4_ML_DEVIANCE, abs=1e-3)
    assert res["loglik"] == pytest.approx(-LME4_ML_DEVIANCE / 2, abs=1e-3)


def test_fit_csv(capsys):
    code, out, _ = run(capsys, "fit", FORMULA, "--data", "sleepstudy", "--format", "csv")
    assert code == 0
    table = pd.read_csv(io.StringIO(out))
    assert {"effect", "term", "estimate", "std_error", "conf_low", "conf_high"} <= set(table.columns)
    assert list(table["effect"]) == ["fixed"] * 2 + ["ran_pars"] * 4
    fixed = table[table["effect"] == "fixed"].set_index("term")
    assert fixed.loc["(Intercept)", "estimate"] == pytest.approx(LME4_INTERCEPT, rel=1e-6)
    assert (fixed["conf_low"] < fixed["estimate"]).all()
    assert "sd__Observation" in set(table["term"])


def test_fit_csv_path_and_output_file(capsys, tmp_path):
    path = tmp_path / "sleep.csv"
    mixedmodels.datasets.load("sleepstudy").to_csv(path, index=False)
    out_file = tmp_path / "fit.json"
    code, out, _ = run(
        capsys, "fit", FORMULA, "--data", str(path), "--format", "json", "--output", str(out_file)
    )
    assert code == 0
    assert out == ""
    res = json.loads(out_file.read_text())
    assert res["fixef"]["(Intercept)"] == pytest.approx(LME4_INTERCEPT, rel=1e-6)
    assert res["reml_criterion"] == pytest.approx(LME4_REML_CRITERION, abs=1e-3)


def test_fit_parquet_path(capsys, tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "sleep.parquet"
    mixedmodels.datasets.load("sleepstudy").to_parquet(path)
    code, out, _ = run(capsys, "fit", FORMULA, "--data", str(path), "--format", "json")
    assert code == 0
    assert json.loads(out)["reml_criterion"] == pytest.approx(LME4_REML_CRITERION, abs=1e-3)


def test_fit_parquet_directory(capsys, tmp_path):
    """A directory of Parquet files is one data set (it was "unknown dataset")."""
    pytest.importorskip("pyarrow")
    sleep = mixedmodels.datasets.load("sleepstudy")
    sleep.iloc[:90].to_parquet(tmp_path / "part0.parquet")
    sleep.iloc[90:].to_parquet(tmp_path / "part1.parquet")
    code, out, _ = run(capsys, "fit", FORMULA, "--data", str(tmp_path), "--format", "json")
    assert code == 0
    assert json.loads(out)["reml_criterion"] == pytest.approx(LME4_REML_CRITERION, abs=1e-3)


def test_directory_without_parquet_files_is_an_error(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("no data here")
    code, out, err = run(capsys, "fit", FORMULA, "--data", str(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("error:") and "is a directory without .parquet files" in err
    assert str(tmp_path) in err and "unknown dataset" not in err


def test_fit_weights(capsys, tmp_path):
    data = mixedmodels.datasets.load("sleepstudy")
    data["w"] = 1.0
    path = tmp_path / "sleep_w.csv"
    data.to_csv(path, index=False)
    code, out, _ = run(
        capsys, "fit", FORMULA, "--data", str(path), "--weights", "w", "--format", "json"
    )
    assert code == 0
    assert json.loads(out)["reml_criterion"] == pytest.approx(LME4_REML_CRITERION, abs=1e-3)


def test_misspelled_column_is_an_error(capsys):
    code, out, err = run(capsys, "fit", "Reaction ~ Dayz + (Days | Subject)", "--data", "sleepstudy")
    assert code == 2
    assert out == ""
    assert err.startswith("error:")
    assert "Dayz" in err
    assert "Traceback" not in err


def test_missing_weights_column_is_an_error(capsys):
    code, _, err = run(capsys, "fit", FORMULA, "--data", "sleepstudy", "--weights", "nope")
    assert code == 2
    assert err.startswith("error:")


def test_unknown_dataset_is_an_error(capsys):
    code, out, err = run(capsys, "fit", FORMULA, "--data", "no_such_dataset")
    assert code == 2
    assert out == ""
    assert err.startswith("error:")
    assert "sleepstudy" in err  # the message lists the available datasets


def test_missing_file_is_an_error(capsys, tmp_path):
    code, _, err = run(capsys, "fit", FORMULA, "--data", str(tmp_path / "absent.csv"))
    assert code == 2
    assert err.startswith("error:")


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", FORMULA])  # --data is required
    assert exc.value.code == 2
    assert main([]) == 2
    capsys.readouterr()


def test_datasets(capsys):
    code, out, _ = run(capsys, "datasets")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "rows", "columns"]
    sleep = [line for line in lines if line.startswith("sleepstudy ")]
    assert len(sleep) == 1
    assert sleep[0].split()[1:3] == ["180", "3"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"mixedmodels {mixedmodels.__version__}"


def test_python_dash_m_entry_point(tmp_path):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-m", "mixedmodels", "fit", FORMULA, "--data", "sleepstudy", "--format", "json"],
        capture_output=True,
        check=False,
        text=True,
        cwd=tmp_path,  # not the repo: the installed package must be found
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert math.isclose(res["fixef"]["(Intercept)"], LME4_INTERCEPT, rel_tol=1e-6)

    bad = subprocess.run(
        [sys.executable, "-m", "mixedmodels", "fit", FORMULA, "--data", "no_such_dataset"],
        capture_output=True,
        check=False,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error:")
    assert "Traceback" not in bad.stderr


def test_cli_import_is_light():
    code = (
        "import sys, mixedmodels.cli; "
        "heavy = [m for m in ('numpy', 'pandas', 'scipy', 'formulaic', 'nlopt') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


# lme4 1.1-31, glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
# binomial) (the reference case glmer_cbpp_laplace)
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def test_fit_glmm_json(capsys):
    code, out, err = run(capsys, "fit", CBPP, "--data", "cbpp", "--family", "binomial",
                         "--format", "json")
    assert code == 0 and err == ""
    d = json.loads(out)
    assert d["method"] == "Laplace" and d["family"] == "binomial" and d["link"] == "logit"
    assert d["loglik"] == pytest.approx(-92.0265663895303, abs=1e-3)
    assert d["fixef"]["(Intercept)"] == pytest.approx(-1.39834286447115, rel=1e-4)
    assert d["deviance_conditional"] == pytest.approx(73.4742835742572, abs=1e-3)
    assert "reml_criterion" not in d


def test_fit_glmm_text_and_quadrature(capsys):
    code, out, _ = run(capsys, "fit", CBPP, "--data", "cbpp", "--family", "binomial", "--nagq", "25")
    assert code == 0
    assert "Adaptive Gauss-Hermite Quadrature, nAGQ = 25" in out and "Pr(>|z|)" in out


def test_glmm_options_need_a_family(capsys):
    code, _, err = run(capsys, "fit", FORMULA, "--data", "sleepstudy", "--nagq", "3")
    assert code == 2 and "--family" in err
    code, _, err = run(capsys, "fit", FORMULA, "--data", "sleepstudy", "--family", "poison")
    assert code == 2 and "did you mean 'poisson'" in err


def test_fit_text_with_kenward_roger(capsys):
    code, out, err = run(capsys, "fit", FORMULA, "--data", "sleepstudy", "--ddf", "kenward-roger")
    assert code == 0, err
    assert "t-tests use Kenward-Roger's method" in out
    # lmerTest / pbkrtest (reference case lmer_sleepstudy_reml): df 17 for both effects
    assert "17.000" in out
    code, out, _ = run(capsys, "fit", FORMULA, "--data", "sleepstudy", "--ddf", "lme4")
    assert code == 0 and "t value" in out and " df " not in out


def test_ddf_for_a_glmm_is_an_input_error(capsys):
    code, out, err = run(capsys, "fit", "cbind(incidence, size - incidence) ~ period + (1 | herd)",
                         "--data", "cbpp", "--family", "binomial", "--ddf", "satterthwaite")
    assert code == 2
    assert err.startswith("error:") and "Traceback" not in err
