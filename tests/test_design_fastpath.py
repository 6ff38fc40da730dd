"""The numpy path of ``build_model_frame`` against the general (pandas) path.

``build_model_frame`` reads the used columns once into numpy arrays and builds
intercepts, plain numeric columns and grouping codes from them. With
``spec_frame.FAST_PATH = False`` every model goes through pandas frames and the
model-matrix code (SimpleSpec or formulaic) alone, as before the numpy path
existed; both must give identical frames, warnings and errors.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.exceptions import MixedModelsError
from mixedmodels.spec import columns as spec_columns
from mixedmodels.spec import frame as spec_frame
from mixedmodels.spec.fixed import RANK_TOL, full_rank_columns
from mixedmodels.spec.formula import parse_formula
from mixedmodels.spec.frame import build_model_frame
from mixedmodels.spec.levels import category_codes
from mixedmodels.spec.matrix import SimpleSpec
from mixedmodels.spec.newdata import apply_spec


@pytest.fixture(scope="module")
def datasets(sleep):
    return {
        "sleepstudy": sleep,
        "Dyestuff": mm.datasets.load("Dyestuff"),
        "Penicillin": mm.datasets.load("Penicillin"),
        "Pastes": mm.datasets.load("Pastes"),
    }


def build(path, formula, data, **kwargs):
    """The frame (or the error) and the warnings of one path: ``fast``,
    ``general`` (pandas frames) or ``formulaic`` (general, no SimpleSpec)."""
    fast, parse = spec_frame.FAST_PATH, SimpleSpec.parse
    spec_frame.FAST_PATH = path == "fast"
    if path == "formulaic":
        SimpleSpec.parse = classmethod(lambda cls, rhs, data: None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = build_model_frame(parse_formula(formula), data, **kwargs)
            except MixedModelsError as err:
                result = err
    finally:
        spec_frame.FAST_PATH, SimpleSpec.parse = fast, parse
    return result, [(w.category, str(w.message), w.filename, w.lineno) for w in caught]


def assert_same_frame(a, b, same_specs=True):
    """Every array, name and level of two model frames is identical."""
    np.testing.assert_array_equal(a.y, b.y)
    assert a.y.dtype == b.y.dtype
    np.testing.assert_array_equal(a.fixed.X, b.fixed.X)
    assert a.fixed.names == b.fixed.names
    assert a.fixed.all_names == b.fixed.all_names
    np.testing.assert_array_equal(a.fixed.kept, b.fixed.kept)
    if same_specs:
        assert type(a.fixed.model_spec) is type(b.fixed.model_spec)
    assert len(a.terms) == len(b.terms)
    for s, t in zip(a.terms, b.terms):
        assert s.spec == t.spec
        np.testing.assert_array_equal(s.codes, t.codes)
        assert s.codes.dtype == t.codes.dtype == np.int64
        assert s.levels == t.levels
        np.testing.assert_array_equal(s.z, t.z)
        assert s.z.flags.c_contiguous and t.z.flags.c_contiguous
        assert s.cnames == t.cnames
        assert s.theta_names() == t.theta_names()
    for name in ("weights", "offset"):
        u, v = getattr(a, name), getattr(b, name)
        assert (u is None) == (v is None), name
        if u is not None:
            np.testing.assert_array_equal(u, v)
    assert a.n_dropped == b.n_dropped
    assert a.response_name == b.response_name
    pd.testing.assert_frame_equal(a.data, b.data)
    for col in a.data.columns:
        if isinstance(a.data[col].dtype, pd.CategoricalDtype):
            assert list(a.data[col].cat.categories) == list(b.data[col].cat.categories)


def assert_paths_agree(formula, data, formulaic=True, **kwargs):
    """The fast path equals the general path (and formulaic, if ``formulaic``):
    frames or errors, and warnings (with the line they are attributed to)."""
    polars = not isinstance(data, pd.DataFrame)
    before = data.clone() if polars else data.copy(deep=True)
    paths = ["fast", "general"] + (["formulaic"] if formulaic else [])
    results = {path: build(path, formula, data, **kwargs) for path in paths}
    if polars:  # the caller's data untouched
        assert data.equals(before)
    else:
        pd.testing.assert_frame_equal(data, before)
    fast, fast_warnings = results.pop("fast")
    for path, (other, other_warnings) in results.items():
        assert fast_warnings == other_warnings, path
        if isinstance(fast, Exception) or isinstance(other, Exception):
            assert type(fast) is type(other) and str(fast) == str(other), path
        else:
            assert_same_frame(fast, other, same_specs=path == "general")
    return fast


CASES = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("sleepstudy", "Reaction ~ Days + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)"),
    ("sleepstudy", "Reaction ~ 1 + Days + (0 + Days | Subject) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ 0 + Days + (1 | Subject)"),
    ("sleepstudy", "log(Reaction) ~ Days + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ Days + I(Days**2) + (Days | Subject)"),
    ("sleepstudy", "Reaction ~ Days + offset(Days) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ Days + I(2 * Days) + (1 | Subject)"),  # rank deficient
    ("sleepstudy", "Reaction ~ Days + offset(log(Days + 1)) + (1 | Subject)"),
    ("sleepstudy", "-Reaction / 100 + 2 * Days - 1 ~ Days + (1 | Subject)"),
    ("sleepstudy", "sqrt(Reaction) - exp(-Days) ~ Days + (1 | Subject)"),
    ("Dyestuff", "Yield ~ 1 + (1 | Batch)"),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
    ("Pastes", "strength ~ 1 + (1 | cask:batch)"),
]


@pytest.mark.parametrize("name, formula", CASES)
def test_bundled_datasets(datasets, name, formula):
    assert_paths_agree(formula, datasets[name])


def with_missing(sleep):
    data = sleep.copy()
    data.loc[[3, 50], "Reaction"] = np.nan
    data["Days"] = data["Days"].astype(float)
    data.loc[[7, 50, 90], "Days"] = np.nan
    data.loc[[120], "Subject"] = np.nan
    data["other"] = np.nan  # not used: must not drop rows
    return data


@pytest.mark.parametrize("formula", [CASES[0][1], CASES[1][1], CASES[5][1]])
def test_missing_rows(sleep, formula):
    frame = assert_paths_agree(formula, with_missing(sleep))
    assert frame.n_dropped == 5
    assert list(frame.data.index[:8]) == [0, 1, 2, 4, 5, 6, 8, 9]


def test_missing_rows_fail(sleep):
    assert_paths_agree(CASES[0][1], with_missing(sleep), na_action="fail")


def test_grouping_factor_as_strings(sleep):
    for dtype in (str, object):
        data = sleep.assign(Subject=sleep["Subject"].astype(str).astype(dtype))
        assert_paths_agree(CASES[0][1], data)
        data.loc[[0, 5], "Subject"] = None
        assert_paths_agree(CASES[0][1], data)


def test_grouping_factor_as_numbers(sleep):
    """Integer codes sort as numbers (R's factor()), not as strings."""
    data = sleep.assign(Subject=sleep["Subject"].astype(int) % 1000 - 300)
    frame = assert_paths_agree(CASES[0][1], data)
    assert frame.terms[0].levels[:3] == ["8", "9", "10"]
    floats = sleep.assign(Subject=sleep["Subject"].astype(float) / 10)
    assert_paths_agree(CASES[1][1], floats)


def test_categorical_with_unused_levels(sleep):
    cats = ["999", *reversed(sleep["Subject"].cat.categories), "000"]
    data = sleep.assign(Subject=sleep["Subject"].cat.set_categories(cats))
    frame = assert_paths_agree(CASES[0][1], data)
    assert frame.terms[0].levels == [c for c in cats if c not in ("999", "000")]
    assert list(frame.data["Subject"].cat.categories) == frame.terms[0].levels
    # a level left unused only by dropping incomplete rows
    data = data.copy()
    data.loc[data["Subject"] == "308", "Reaction"] = np.nan
    frame = assert_paths_agree(CASES[0][1], data)
    assert "308" not in frame.terms[0].levels


def test_ordered_and_factor_fixed_effects(sleep):
    """A factor in the fixed part goes through formulaic, the terms need not."""
    data = sleep.assign(
        week=pd.Categorical(np.where(sleep["Days"] < 5, "early", "late"), ordered=True),
        grp=np.where(sleep["Days"] % 2 == 0, "even", "odd"),
    )
    assert_paths_agree("Reaction ~ Days + week + grp + (Days | Subject)", data)
    assert_paths_agree(
        "Reaction ~ Days + grp + (1 | Subject)", data, contrasts={"grp": "contr.sum"}
    )


def factor_data(sleep):
    """sleepstudy with factors of every kind SimpleSpec encodes: an unordered
    categorical with an unused category and categories out of sorted order,
    strings, and integer-valued categories."""
    days = sleep["Days"].to_numpy()
    return sleep.assign(
        phase=pd.Categorical(
            np.where(days < 3, "b", np.where(days < 7, "a", "c")), categories=["c", "zz", "b", "a"]
        ),
        grp=np.where(days % 2 == 0, "even", "odd"),
        block=pd.Categorical(days // 4 * 10),
        Days2=days.astype(float) ** 2,
    )


@pytest.mark.parametrize(
    "formula",
    [
        "Reaction ~ phase + (1 | Subject)",
        "Reaction ~ Days + grp + phase + (Days | Subject)",
        "Reaction ~ 1 + block + Days + (1 | Subject)",
        "Reaction ~ grp + (1 + grp | Subject)",  # a factor in a random term too
        "Reaction ~ 0 + phase + (1 | Subject)",  # no intercept: formulaic's full coding
        "Reaction ~ phase * grp + (1 | Subject)",
        "Reaction ~ grp * phase + Days + (Days | Subject)",
        "Reaction ~ Days * phase + (1 | Subject)",
        "Reaction ~ phase + Days + Days:phase + (1 | Subject)",
        "Reaction ~ Days + Days:Days2 + (1 | Subject)",  # numbers only in an interaction
        "Reaction ~ phase + Days:phase + (1 | Subject)",  # formulaic: phase coded fully there
        "Reaction ~ phase + phase:grp + (1 | Subject)",  # and grp
    ],
)
def test_factor_fixed_effects_match_formulaic(sleep, formula):
    """Unordered factors in treatment coding are built without formulaic, with
    its columns, names and levels (the formulaic path is the reference)."""
    frame = assert_paths_agree(formula, factor_data(sleep))
    simple = "0 +" not in formula and "phase + Days:phase" not in formula and "phase:grp" not in formula
    assert isinstance(frame.fixed.model_spec, SimpleSpec) == simple


def test_factor_spec_serves_inference_and_newdata(sleep):
    """The simple factor spec gives formulaic's anova terms, emmeans, levels
    and predictions on new data, and the same error for an unseen level."""
    data = factor_data(sleep)
    formula = "Reaction ~ Days * phase + grp + (Days | Subject)"
    fits = {}
    for path in ("simple", "formulaic"):
        parse = SimpleSpec.parse
        if path == "formulaic":
            SimpleSpec.parse = classmethod(lambda cls, rhs, data: None)
        try:
            fits[path] = mm.lmer(formula, data)
        finally:
            SimpleSpec.parse = parse
    a, b = fits["simple"], fits["formulaic"]
    assert isinstance(a.frame.fixed.model_spec, SimpleSpec)
    assert not isinstance(b.frame.fixed.model_spec, SimpleSpec)
    pd.testing.assert_series_equal(a.fixef, b.fixef)
    pd.testing.assert_frame_equal(a.anova(type=3), b.anova(type=3))
    pd.testing.assert_frame_equal(a.anova(type=1), b.anova(type=1))
    pd.testing.assert_frame_equal(mm.emmeans(a, "phase").table, mm.emmeans(b, "phase").table)
    pd.testing.assert_frame_equal(
        mm.emmeans(a, "grp", by="phase").table, mm.emmeans(b, "grp", by="phase").table
    )
    new = pd.DataFrame({"Days": [0.0, 4.0, 9.0], "grp": ["odd", "even", "odd"],
                        "phase": ["a", "b", "c"], "Subject": ["308", "309", "999"]})
    pd.testing.assert_series_equal(a.predict(new), b.predict(new))
    pd.testing.assert_series_equal(a.predict(new, re_form="~0"), b.predict(new, re_form="~0"))
    bad = new.assign(phase=["a", "b", "d"])
    messages = []
    for fit in (a, b):
        with pytest.raises(MixedModelsError) as err:
            fit.predict(bad)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "'d'" in messages[0]


def test_weights_and_offsets(sleep):
    rng = np.random.default_rng(0)
    data = sleep.assign(w=rng.uniform(0.5, 2, len(sleep)), o=rng.normal(size=len(sleep)))
    for kwargs in (
        {"weights": "w"},
        {"weights": data["w"].to_numpy()},
        {"offset": "o"},
        {"offset": data["o"].to_numpy(), "weights": "w"},
    ):
        assert_paths_agree(CASES[0][1], data, **kwargs)
    missing = data.copy()
    missing.loc[[4, 9], "w"] = np.nan
    missing.loc[[11], "o"] = np.nan
    frame = assert_paths_agree(CASES[0][1], missing, weights="w", offset="o")
    assert frame.n_dropped == 3


@pytest.mark.parametrize(
    "change, kwargs",
    [
        (lambda d: d.assign(w=-d["Days"] + 3.0), {"weights": "w"}),
        (lambda d: d.assign(w=np.zeros(len(d))), {"weights": "w"}),
        (lambda d: d.assign(w=d["Days"] > 3), {"weights": "w"}),
        (lambda d: d.assign(Reaction=d["Reaction"].where(d["Days"] != 4, np.inf)), {}),
        (lambda d: d.assign(o=np.where(d["Days"] == 2, -np.inf, 0.0)), {"offset": "o"}),
        (lambda d: d.assign(Reaction=d["Reaction"] > 250), {}),
        (lambda d: d.assign(Reaction=d["Subject"]), {}),
        (lambda d: d, {"contrasts": {"Days": "contr.bogus"}}),
        (lambda d: d, {"contrasts": {"nope": "contr.sum"}}),
        (lambda d: d.iloc[:15], {}),
        (lambda d: d.iloc[:10], {}),
    ],
)
def test_errors_agree(sleep, change, kwargs):
    data = change(sleep.copy())
    data.index = data.index + 1000  # row labels in messages
    assert_paths_agree(CASES[0][1], data, **kwargs)


def test_duplicate_column_names(sleep):
    data = pd.concat([sleep, sleep[["Days"]]], axis=1)
    with pytest.raises(Exception) as fast:
        build_model_frame(parse_formula(CASES[0][1]), data)
    spec_frame.FAST_PATH = False
    try:
        with pytest.raises(Exception) as general:
            build_model_frame(parse_formula(CASES[0][1]), data)
    finally:
        spec_frame.FAST_PATH = True
    assert type(fast.value) is type(general.value)


def test_polars_input(sleep):
    pl = pytest.importorskip("polars")
    data = pl.from_pandas(with_missing(sleep))
    frame = assert_paths_agree(CASES[0][1], data, formulaic=False)
    assert frame.n_dropped == 5
    data = data.with_columns(pl.col("Subject").cast(pl.Utf8), pl.col("Days").cast(pl.Float32))
    assert_paths_agree(CASES[0][1], data, formulaic=False)


def test_without_copy_on_write(sleep, monkeypatch):
    """Where pandas does not copy on write, the frame is built during the call."""
    monkeypatch.setattr(spec_columns, "COPY_ON_WRITE", False)
    data = with_missing(sleep)
    frame = assert_paths_agree(CASES[0][1], data, formulaic=False)
    assert isinstance(frame.__dict__["_data"], pd.DataFrame)


@pytest.mark.filterwarnings("ignore::mixedmodels.MissingDataWarning")
def test_deferred_data_is_a_snapshot(sleep):
    """The frame of the used rows is built on first access, from the data as
    they were at the call; pickles and copies hold it, not the caller's frame."""
    data = with_missing(sleep)
    frame = build_model_frame(parse_formula(CASES[0][1]), data)
    expected, _ = build("general", CASES[0][1], data)
    data.loc[0, "Days"] = 99.0
    data["Reaction"] = 0.0
    data.index = data.index + 5
    pd.testing.assert_frame_equal(frame.data, expected.data)
    again = build_model_frame(parse_formula(CASES[0][1]), sleep)
    copied = pickle.loads(pickle.dumps(again))
    assert "other" not in copied.data.columns
    pd.testing.assert_frame_equal(copied.data, again.data)
    pd.testing.assert_frame_equal(copy.deepcopy(again).data, again.data)


@pytest.mark.filterwarnings("ignore::mixedmodels.MissingDataWarning")
def test_fit_results_unchanged(sleep):
    """A whole fit through either path gives the same numbers."""
    fits = []
    for fast in (True, False):
        spec_frame.FAST_PATH = fast
        try:
            fits.append(mm.lmer(CASES[0][1], with_missing(sleep)))
        finally:
            spec_frame.FAST_PATH = True
    a, b = fits
    assert a.frame.n_dropped == 5
    np.testing.assert_array_equal(a.fixef.to_numpy(), b.fixef.to_numpy())
    np.testing.assert_array_equal(a.theta.to_numpy(), b.theta.to_numpy())
    pd.testing.assert_series_equal(a.fitted, b.fitted)


def reference_rank(X, tol=RANK_TOL):
    """full_rank_columns as it was: QR, then least squares on every column."""
    R = np.linalg.qr(X, mode="r")
    norms = np.linalg.norm(R, axis=0)
    kept = []
    for j in range(R.shape[1]):
        col = R[:, j]
        resid = col
        if kept:
            coef, *_ = np.linalg.lstsq(R[:, kept], col, rcond=None)
            resid = col - R[:, kept] @ coef
        if norms[j] > 0 and np.linalg.norm(resid) > tol * norms[j]:
            kept.append(j)
    return np.asarray(kept, dtype=np.int64)


def test_rank_of_one_or_two_columns():
    """The QR-free test of one or two columns decides as the QR does, also
    next to its threshold and at extreme scales."""
    rng = np.random.default_rng(1)
    with np.errstate(all="ignore"):
        for _ in range(3000):
            n, p = int(rng.integers(2, 40)), int(rng.integers(1, 3))
            X = rng.normal(size=(n, p))
            X[:, 0] = 1.0 if rng.random() < 0.5 else X[:, 0]
            if p == 2:
                scale = 10.0 ** rng.uniform(-8.5, -6)  # around the 1e-7 threshold
                X[:, 1] = 3 * X[:, 0] + scale * rng.normal(size=n)
            if rng.random() < 0.1:
                X[:, rng.integers(p)] = 0.0
            X *= 10.0 ** rng.choice([0, 0, 0, -150, 150, -99, 99])
            np.testing.assert_array_equal(full_rank_columns(X), reference_rank(X))


def test_rank_of_long_matrices_through_the_gram_matrix():
    """For long X the X'X test decides only clearly independent columns, as the
    QR would; dependent, near-dependent and badly scaled ones go to the QR."""
    rng = np.random.default_rng(3)
    with np.errstate(all="ignore"):
        for _ in range(400):
            p = int(rng.integers(3, 12))
            n = int(rng.integers(4 * p, 400))
            X = rng.normal(size=(n, p))
            X[:, 0] = 1.0
            kind = rng.integers(4)
            j = int(rng.integers(1, p))
            if kind == 1:  # an exact combination of earlier columns
                X[:, j] = X[:, :j] @ rng.normal(size=j)
            elif kind == 2:  # near the 1e-7 threshold
                X[:, j] = X[:, :j] @ rng.normal(size=j) + 10.0 ** rng.uniform(-9, -5) * rng.normal(size=n)
            elif kind == 3:  # dummy columns that sum to the intercept
                groups = rng.integers(0, p - 1, n)
                X[:, 1:] = np.eye(p - 1)[groups]
            X *= 10.0 ** rng.choice([0, 0, -100, 100])
            np.testing.assert_array_equal(full_rank_columns(X), reference_rank(X))


def test_category_codes_match_pandas():
    """Codes and levels of a categorical, unused categories dropped, as pandas'
    remove_unused_categories gives them (missing values stay -1)."""
    rng = np.random.default_rng(2)
    for _ in range(200):
        k = int(rng.integers(1, 140))  # int8 and int16 codes
        cats = [f"l{i}" for i in rng.permutation(k)]
        values = rng.choice(cats + [None], size=int(rng.integers(1, 60)))
        cat = pd.Categorical(values, categories=cats, ordered=bool(rng.integers(2)))
        expected = pd.Series(cat).cat.remove_unused_categories()
        codes, levels = category_codes(cat.codes, cat.categories)
        assert codes.dtype == np.int64
        np.testing.assert_array_equal(codes, expected.cat.codes.to_numpy())
        assert levels == [str(c) for c in expected.cat.categories]


@pytest.mark.parametrize("lhs", ["cbind(incidence, size - incidence)", "cbind(incidence, size - incidence + 0)",
                                 "incidence / size", "log1p(incidence) / sqrt(size)"])
def test_glm_response_arithmetic(lhs):
    cbpp = mm.datasets.load("cbpp")
    assert_paths_agree(f"{lhs} ~ period + (1 | herd)", cbpp, glm_response=True)


def test_factor_terms_on_newdata_with_a_missing_level(sleep):
    """Terms of factors are written as their ones: on new data a missing level
    gives NaN in exactly the columns of the terms holding that factor (as the
    product of its dummy columns would), the other rows formulaic's matrix."""
    data = factor_data(sleep)
    m = mm.LinearMixedModel("Reaction ~ Days + phase * grp + (1 | Subject)", data)
    spec = m.frame.fixed.model_spec
    assert isinstance(spec, SimpleSpec)
    new = data.head(4).astype({"phase": object, "grp": object})
    new.loc[new.index[1], "phase"] = np.nan
    new.loc[new.index[2], "grp"] = np.nan
    X = np.asarray(spec.get_model_matrix(new, na_action="ignore").values)
    names = m.frame.fixed.names
    holds = {f: np.array([f in name for name in names]) for f in ("phase", "grp")}
    np.testing.assert_array_equal(np.isnan(X[1]), holds["phase"])
    np.testing.assert_array_equal(np.isnan(X[2]), holds["grp"])
    reference, _ = build("formulaic", "Reaction ~ Days + phase * grp + (1 | Subject)", data)
    want = apply_spec(reference.fixed.model_spec, new.iloc[[0, 3]], "fixed-effects")
    np.testing.assert_array_equal(X[[0, 3]], want)


@pytest.mark.parametrize("rows", [None, 8000])
def test_factor_only_fixed_effects_kept_as_cells(monkeypatch, rows):
    """A fixed part of factors only (main effects and their interaction) is
    kept as its cells: the fit never builds X, its cross-products are sums over
    (level, cell) pairs (all InstEval rows) or, where a term has too many
    levels for that (8,000 rows), products with X built from the cells; the
    same X on demand, the same Gram matrix and the same fit as with X."""
    d = mm.datasets.load("InstEval")
    d = d if rows is None else d.iloc[:rows]
    f = "y ~ 1 + service * dept + (1 | s) + (1 | d)"
    # one BLAS thread for both fits: the threads move the optimum by ~3e-9
    m = mm.lmer(f, d, reml=False, threads=1)
    fx = m.frame.fixed
    assert fx.cells is not None and fx._X is None
    # cells need at least MIN_CELL_ROWS rows: with more than any data, X is built
    monkeypatch.setattr(SimpleSpec, "MIN_CELL_ROWS", 10**18)
    ref = mm.lmer(f, d, reml=False, threads=1)
    assert ref.frame.fixed.cells is None
    assert fx.names == ref.frame.fixed.names and fx.p == ref.frame.fixed.X.shape[1]
    np.testing.assert_array_equal(fx.X, ref.frame.fixed.X)
    np.testing.assert_allclose(fx.gram, ref.frame.fixed.gram, rtol=1e-13)
    np.testing.assert_allclose(m.system.Arr, ref.system.Arr, rtol=1e-12, atol=1e-9)
    assert m.deviance == pytest.approx(ref.deviance, rel=1e-12)
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=1e-9)


def test_cells_only_for_factors_and_few_cells(monkeypatch):
    d = mm.datasets.load("InstEval").iloc[:8000].copy()
    d["x"] = np.linspace(0, 1, len(d))

    def cells(formula):
        return mm.LinearMixedModel(formula, d).frame.fixed.cells

    assert cells("y ~ 1 + service * dept + (1 | s)") is not None
    assert cells("y ~ 1 + service * x + (1 | s)") is None
    # more cells than that fraction of the rows (28 of 8,000 here): X as usual
    monkeypatch.setattr(SimpleSpec, "MAX_CELLS_PER_ROW", 27 / 8000)
    assert cells("y ~ 1 + service * dept + (1 | s)") is None


def test_factor_calls_give_each_call_and_its_first_argument():
    from mixedmodels.spec.matrix import factor_calls

    assert factor_calls("C(x + 1) + factor(`a b`) + C(f, contr.sum) + log(z) + C(g(h, 2))") == [
        ("C(x + 1)", "x + 1"),
        ("factor(`a b`)", "`a b`"),
        ("C(f, contr.sum)", "f"),
        ("C(g(h, 2))", "g(h, 2)"),
    ]
