"""Dask / Parquet fits (mixedmodels.models.lmm.dask) equal the in-memory fits.

A local distributed cluster (two single-threaded workers, in-process) is active
for the whole module, so the map-reduce runs through the distributed scheduler.
"""

from __future__ import annotations

import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import mixedmodels as mm  # noqa: E402
from mixedmodels.data.dask import DaskUnsupportedError  # noqa: E402
from mixedmodels.models.lmm.dask import DaskLinearMixedModel  # noqa: E402

SLEEP = "Reaction ~ Days + (Days | Subject)"
INST = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)"


@pytest.fixture(scope="module", autouse=True)
def client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as c:
        yield c



@pytest.fixture(scope="module")
def inst():
    return mm.datasets.load("InstEval")


@pytest.fixture(scope="module")
def inst_fits(inst):
    mem = mm.lmer(INST, inst, reml=False)
    dsk = mm.lmer(INST, dd.from_pandas(inst, npartitions=6), reml=False)
    return mem, dsk


def assert_same_fit(a, b, rtol=1e-6):
    """b (Dask) equals a (in memory). Dask fits start from one-way ANOVA moments
    of the accumulated sums, in-memory fits from backfitted ones, so a is
    refitted from b's start first: the same search on the same sums must end
    at the same point."""
    if not np.array_equal(a.optsum.theta_start, b.optsum.theta_start):
        a.fit(start=b.optsum.theta_start)
    assert b.nobs == a.nobs
    assert b.ngroups == a.ngroups
    assert b.loglik == pytest.approx(a.loglik, rel=1e-8)
    assert b.deviance == pytest.approx(a.deviance, rel=1e-8)
    assert b.aic == pytest.approx(a.aic, rel=1e-8)
    assert b.bic == pytest.approx(a.bic, rel=1e-8)
    if a.reml:
        assert b.reml_criterion == pytest.approx(a.reml_criterion, rel=1e-8)
    assert list(b.fixef.index) == list(a.fixef.index)
    np.testing.assert_allclose(b.fixef, a.fixef, rtol=rtol, atol=1e-8)
    assert list(b.theta.index) == list(a.theta.index)
    np.testing.assert_allclose(b.theta, a.theta, rtol=1e-4, atol=1e-6)
    assert b.sigma == pytest.approx(a.sigma, rel=1e-6)
    np.testing.assert_allclose(b.vcov, a.vcov, rtol=1e-4)
    np.testing.assert_allclose(b.varcorr["sdcor"], a.varcorr["sdcor"], rtol=1e-4)
    assert b.is_singular == a.is_singular
    for g in a.ranef:
        assert list(b.ranef[g].index) == list(a.ranef[g].index)
        np.testing.assert_allclose(b.ranef[g], a.ranef[g], rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(b.ranef_condsd[g], a.ranef_condsd[g], rtol=1e-3)


def test_sleepstudy_reml(sleep):
    mem = mm.lmer(SLEEP, sleep)
    dsk = mm.lmer(SLEEP, dd.from_pandas(sleep, npartitions=5))
    assert isinstance(dsk, DaskLinearMixedModel)
    assert_same_fit(mem, dsk)
    # the summary's scaled residuals (exact quantiles from extra passes) and tables
    assert str(dsk.summary()) == str(mem.summary())
    pd.testing.assert_frame_equal(dsk.tidy(), mem.tidy(), rtol=1e-6)
    pd.testing.assert_frame_equal(dsk.glance(), mem.glance(), rtol=1e-6)
    assert len(dsk.tidy("ran_vals")) == len(mem.tidy("ran_vals"))


def test_insteval_ml(inst_fits):
    mem, dsk = inst_fits
    assert_same_fit(mem, dsk)
    assert dsk.frame.fixed.names == ["(Intercept)", "service1"]


def test_row_level_outputs_are_lazy(inst_fits, inst):
    mem, dsk = inst_fits
    fitted = dsk.fitted
    assert type(fitted).__module__.split(".")[0] == "dask"
    np.testing.assert_allclose(fitted.compute().sort_index(), mem.fitted, rtol=1e-5)
    np.testing.assert_allclose(dsk.residuals().compute().sort_index(), mem.residuals(), atol=1e-4)
    pop = dsk.predict(re_form="~0").compute().sort_index()
    np.testing.assert_allclose(pop, mem.predict(re_form="~0"), rtol=1e-5)
    new = inst.iloc[:50]
    np.testing.assert_allclose(dsk.predict(new), mem.predict(new), rtol=1e-5)
    lazy_new = dsk.predict(dd.from_pandas(new, npartitions=2)).compute()
    np.testing.assert_allclose(lazy_new, mem.predict(new), rtol=1e-5)
    with pytest.raises(DaskUnsupportedError, match="simulate"):
        dsk.simulate()


def test_parquet_directory_and_file(tmp_path, sleep, inst, inst_fits):
    mem = mm.lmer(SLEEP, sleep)
    d = tmp_path / "sleep"
    dd.from_pandas(sleep, npartitions=3).to_parquet(d)
    for path in (d, str(d)):
        m = mm.lmer(SLEEP, path)
        assert_same_fit(mem, m)
    assert m.data_name == str(d)
    single = tmp_path / "sleep.parquet"
    sleep.to_parquet(single)
    assert_same_fit(mem, mm.lmer(SLEEP, single))

    di = tmp_path / "inst"
    dd.from_pandas(inst, npartitions=4).to_parquet(di)
    assert_same_fit(inst_fits[0], mm.lmer(INST, str(di), reml=False))


def test_missing_rows_dropped_and_counted(sleep):
    data = sleep.copy()
    data.loc[[3, 40, 41, 100], "Reaction"] = np.nan
    data.loc[[7, 150], "Subject"] = np.nan
    with pytest.warns(mm.MissingDataWarning, match="6 row"):
        mem = mm.lmer(SLEEP, data)
    with pytest.warns(mm.MissingDataWarning, match="6 row"):
        dsk = mm.lmer(SLEEP, dd.from_pandas(data, npartitions=4))
    assert dsk.nobs == 174 and dsk.n_dropped == 6
    assert_same_fit(mem, dsk)
    assert len(dsk.fitted.compute()) == 174
    with pytest.raises(mm.DataError, match="na_action='fail'"):
        mm.lmer(SLEEP, dd.from_pandas(data, npartitions=4), na_action="fail")


def test_levels_only_in_some_partitions(sleep):
    # sorted by subject: every subject lives in one or two of the partitions;
    # string and integer grouping columns take the sorted / numeric level orders
    data = sleep.sort_values("Subject").reset_index(drop=True)
    data["subj_str"] = "s" + data["Subject"].astype(str)
    data["subj_int"] = data["Subject"].astype(int)
    for col in ("Subject", "subj_str", "subj_int"):
        f = f"Reaction ~ Days + (Days | {col})"
        mem = mm.lmer(f, data)
        dsk = mm.lmer(f, dd.from_pandas(data, npartitions=6, sort=False))
        assert_same_fit(mem, dsk)
        assert list(dsk.ranef[col].index) == list(mem.ranef[col].index)


def test_nested_grouping_interaction_and_string_factor():
    pastes = mm.datasets.load("Pastes")
    f = "strength ~ 1 + (1 | batch/cask)"
    mem = mm.lmer(f, pastes)
    dsk = mm.lmer(f, dd.from_pandas(pastes, npartitions=4))
    assert_same_fit(mem, dsk)
    data = mm.datasets.load("sleepstudy").copy()
    data["grp"] = np.where(data["Days"] < 4, "early", np.where(data["Days"] < 7, "mid", "late"))
    f = "Reaction ~ grp + (1 | Subject)"
    assert_same_fit(mm.lmer(f, data), mm.lmer(f, dd.from_pandas(data, npartitions=3)))


def test_crossed_factors_dense_b():
    """Fully crossed factors (every plate meets every sample): the accumulated
    system stores B's random-effects rows dense and updates by BLAS; the fit,
    conditional variances included, equals the in-memory one (one dense block)."""
    pen = mm.datasets.load("Penicillin")
    f = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    mem = mm.lmer(f, pen)
    dsk = mm.lmer(f, dd.from_pandas(pen, npartitions=3))
    assert dsk.system.dense_b
    assert_same_fit(mem, dsk)
    ml = mm.lmer(f, dd.from_pandas(pen, npartitions=3), reml=False)
    assert_same_fit(mm.lmer(f, pen, reml=False), ml)


def test_weights_offset_and_rank_deficiency(sleep):
    data = sleep.copy()
    rng = np.random.default_rng(1)
    data["w"] = rng.uniform(0.5, 2.0, len(data))
    data["o"] = rng.normal(0, 5, len(data))
    data["Days2"] = 2.0 * data["Days"]
    f = "Reaction ~ Days + Days2 + (Days | Subject)"
    with pytest.warns(mm.RankDeficiencyWarning, match="Days2"):
        mem = mm.lmer(f, data, weights="w", offset="o")
    with pytest.warns(mm.RankDeficiencyWarning, match="Days2"):
        dsk = mm.lmer(f, dd.from_pandas(data, npartitions=4), weights="w", offset="o")
    assert_same_fit(mem, dsk)
    assert dsk.frame.fixed.all_names == mem.frame.fixed.all_names
    np.testing.assert_allclose(dsk.fitted.compute(), mem.fitted, rtol=1e-6)


def test_unsupported_and_bad_input(sleep, tmp_path):
    ddf = dd.from_pandas(sleep, npartitions=2)
    with pytest.raises(DaskUnsupportedError, match="stateful"):
        mm.lmer("Reaction ~ scale(Days) + (1 | Subject)", ddf)
    with pytest.raises(DaskUnsupportedError, match="column name"):
        mm.lmer(SLEEP, ddf, weights=np.ones(len(sleep)))
    with pytest.raises(mm.FormulaError, match="Reactoin"):
        mm.lmer("Reactoin ~ Days + (1 | Subject)", ddf)
    with pytest.raises(mm.DataError, match="does not exist"):
        mm.lmer(SLEEP, str(tmp_path / "nothing"))
    csv = tmp_path / "x.csv"
    sleep.to_csv(csv)
    with pytest.raises(mm.DataError, match="not a Parquet file"):
        mm.lmer(SLEEP, csv)


def test_partition_work_pickles(sleep):
    """What travels to workers of a multi-machine cluster must pickle."""
    ddf = dd.from_pandas(sleep, npartitions=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = mm.lmer(SLEEP, ddf)
    plan = pickle.loads(pickle.dumps(m.frame.plan))
    part = sleep.iloc[:20]
    np.testing.assert_array_equal(plan.encode(part)["X"], m.frame.plan.encode(part)["X"])
    fn = pickle.loads(pickle.dumps(m._row_function("fitted")))
    np.testing.assert_allclose(fn(part), m.fitted.compute().iloc[:20])


def test_logical_columns_coded_as_in_memory(sleep):
    """A logical predictor is a 0/1 column in memory (formulaic's rule); the
    Dask specification is built by the same functions, so it is one there too
    (it was a factor, ``bTrue``)."""
    data = sleep.assign(b=sleep["Days"] > 4)
    f = "Reaction ~ b * Days + (1 | Subject)"
    mem = mm.lmer(f, data)
    dsk = mm.lmer(f, dd.from_pandas(data, npartitions=3))
    assert list(dsk.fixef.index) == list(mem.fixef.index) == ["(Intercept)", "b", "Days", "b:Days"]
    assert_same_fit(mem, dsk)


def test_model_pickles_and_estimator_rows(sleep):
    """A fitted Dask model pickles; its estimator (the model of the
    cross-products) says which methods need the rows."""
    dsk = mm.lmer(SLEEP, dd.from_pandas(sleep, npartitions=2))
    back = pickle.loads(pickle.dumps(dsk))
    pd.testing.assert_series_equal(back.fixef, dsk.fixef)
    assert isinstance(dsk.estimator, mm.LinearMixedModel)
    assert not isinstance(dsk, mm.LinearMixedModel)  # composition, not a disabled subclass
    with pytest.raises(mm.DataError, match="fitted needs the rows"):
        dsk.estimator.fitted  # noqa: B018
    with pytest.raises(mm.DataError, match="simulate needs the rows"):
        dsk.estimator.simulate()


@pytest.mark.parametrize("formula, call", [
    ("Reaction ~ C(Days + 1) + (1 | Subject)", "C(Days + 1)"),
    ("Reaction ~ Days + (factor(Days > 4) | Subject)", "factor(Days > 4)"),
])
def test_factor_of_an_expression_is_refused_on_partitions(formula, call):
    """The levels pass collects columns' levels: C()/factor() of an expression
    would be coded from the sample frame alone (it raised numpy's broadcast
    error, after formulaic's cast-to-NaN warning)."""
    sleep = mm.datasets.load("sleepstudy").sort_values("Days")  # partitions see other days
    with pytest.raises(DaskUnsupportedError, match=rf"^{re.escape(call)}: on Dask or Parquet data"):
        mm.lmer(formula, dd.from_pandas(sleep, npartitions=3))


def test_factor_of_a_column_matches_memory_on_partitions():
    sleep = mm.datasets.load("sleepstudy").sort_values("Days")
    formula = "Reaction ~ factor(Days) + (1 | Subject)"
    mem = mm.lmer(formula, sleep)
    dsk = mm.lmer(formula, dd.from_pandas(sleep, npartitions=3))
    assert list(dsk.fixef.index) == list(mem.fixef.index)
    np.testing.assert_allclose(dsk.fixef, mem.fixef, rtol=1e-6)
