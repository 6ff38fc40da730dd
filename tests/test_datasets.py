"""Tests of :mod:`mixedmodels.datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from _reference import CASES_DIR as REFERENCE_CASES
from mixedmodels import datasets
from mixedmodels.exceptions import DataError

DATA_DIR = Path(datasets.__file__).parent / "data"
CSV_NAMES = sorted((p.stem for p in DATA_DIR.glob("*.csv")), key=str.lower)


def test_names_match_shipped_csvs():
    assert datasets.names() == CSV_NAMES
    assert len(CSV_NAMES) == 17


def test_list_has_one_row_per_csv():
    table = datasets.list()
    assert isinstance(table, pd.DataFrame)
    assert table.columns.tolist() == ["name", "rows", "columns", "source", "description"]
    assert table["name"].tolist() == CSV_NAMES
    assert table["description"].str.len().min() > 10
    assert table["source"].str.len().min() > 3


@pytest.mark.parametrize("name", CSV_NAMES)
def test_every_dataset_loads(name):
    df = datasets.load(name)
    row = datasets.list().set_index("name").loc[name]
    assert df.shape == (row["rows"], row["columns"])
    meta = json.loads((DATA_DIR / "metadata.json").read_text())[name]
    for col, spec in meta["factors"].items():
        assert isinstance(df[col].dtype, pd.CategoricalDtype), col
        assert df[col].cat.categories.tolist() == spec["levels"]
        assert df[col].cat.ordered == spec["ordered"]
        # every CSV value is one of the levels (no silent NaN from a mismatch)
        raw = pd.read_csv(DATA_DIR / f"{name}.csv", dtype=str, usecols=[col])[col]
        assert df[col].isna().sum() == raw.isna().sum()
    # no plain string/object columns remain
    for col in df.columns:
        assert not pd.api.types.is_object_dtype(df[col].dtype), col
        assert not (
            pd.api.types.is_string_dtype(df[col].dtype)
            and not isinstance(df[col].dtype, pd.CategoricalDtype)
        ), col


def test_sleepstudy():
    df = datasets.load("sleepstudy")
    assert df.shape == (180, 3)
    subj = df["Subject"]
    assert isinstance(subj.dtype, pd.CategoricalDtype)
    assert not subj.cat.ordered
    expected = ["308", "309", "310", "330", "331", "332", "333", "334", "335",
                "337", "349", "350", "351", "352", "369", "370", "371", "372"]
    assert subj.cat.categories.tolist() == expected
    assert pd.api.types.is_integer_dtype(df["Days"])
    assert sorted(df["Days"].unique().tolist()) == list(range(10))
    assert pd.api.types.is_float_dtype(df["Reaction"])
    assert df.loc[0, "Reaction"] == pytest.approx(249.56)


def test_insteval():
    df = datasets.load("InstEval")
    assert len(df) == 73421
    n_levels = {"s": 2972, "d": 1128, "dept": 14, "service": 2, "studage": 4, "lectage": 6}
    for col, n in n_levels.items():
        assert isinstance(df[col].dtype, pd.CategoricalDtype), col
        assert len(df[col].cat.categories) == n, col
        assert df[col].notna().all(), col
    assert df["service"].cat.categories.tolist() == ["0", "1"]
    assert df["s"].cat.categories[:5].tolist() == ["1", "2", "3", "4", "5"]
    assert df["d"].cat.categories[:5].tolist() == ["1", "6", "7", "8", "12"]
    assert df["dept"].cat.categories[:3].tolist() == ["15", "5", "10"]
    assert df["studage"].cat.ordered and df["lectage"].cat.ordered
    assert not df["s"].cat.ordered


def test_pastes_levels():
    df = datasets.load("Pastes")
    assert df["cask"].cat.categories.tolist() == ["a", "b", "c"]
    assert df["batch"].cat.categories.tolist() == list("ABCDEFGHIJ")
    assert len(df["sample"].cat.categories) == 30
    assert df["sample"].cat.categories[:4].tolist() == ["A:a", "A:b", "A:c", "B:a"]


def test_cbpp_levels():
    df = datasets.load("cbpp")
    assert df["herd"].cat.categories.tolist() == [str(i) for i in range(1, 16)]
    assert df["period"].cat.categories.tolist() == ["1", "2", "3", "4"]
    assert pd.api.types.is_integer_dtype(df["incidence"])
    assert pd.api.types.is_integer_dtype(df["size"])


def test_nonalphabetical_and_ordered_levels():
    sal = datasets.load("Salamanders")
    assert sal["mined"].cat.categories.tolist() == ["yes", "no"]
    assert sal["site"].cat.ordered
    orth = datasets.load("Orthodont")
    assert orth["Subject"].cat.ordered
    assert orth["Subject"].cat.categories[:3].tolist() == ["M16", "M05", "M02"]
    assert orth["Sex"].cat.categories.tolist() == ["Male", "Female"]
    wine = datasets.load("wine")
    assert wine["rating"].cat.ordered
    assert wine["rating"].cat.categories.tolist() == ["1", "2", "3", "4", "5"]
    assert datasets.load("Orange")["Tree"].cat.categories.tolist() == ["3", "1", "5", "2", "4"]


def test_dietox_missing_feed_kept():
    df = datasets.load("dietox")
    assert len(df) == 861
    assert df["Feed"].isna().sum() == 72
    assert df["Cu"].cat.categories.tolist() == ["Cu000", "Cu035", "Cu175"]


def test_case_insensitive_lookup():
    a = datasets.load("SLEEPSTUDY")
    b = datasets.load("sleepstudy")
    pd.testing.assert_frame_equal(a, b)
    assert len(datasets.load("insteval")) == 73421


@pytest.mark.parametrize("bad", ["no_such_data", "", "sleepstudy.csv", "metadata"])
def test_unknown_name_raises(bad):
    with pytest.raises(DataError) as info:
        datasets.load(bad)
    assert isinstance(info.value, ValueError)
    assert "sleepstudy" in str(info.value) and "InstEval" in str(info.value)
    with pytest.raises(ValueError):
        datasets.load(bad)


def test_load_returns_independent_copies():
    a = datasets.load("sleepstudy")
    a.loc[0, "Reaction"] = -1.0
    a["Subject"] = a["Subject"].cat.rename_categories(lambda s: "x" + s)
    a["extra"] = 1
    b = datasets.load("sleepstudy")
    assert b.loc[0, "Reaction"] == pytest.approx(249.56)
    assert b["Subject"].cat.categories[0] == "308"
    assert "extra" not in b.columns
    assert a is not b


def test_builtin_list_not_shadowed_for_callers():
    # the module-level ``list`` is the dataset table, but names() still returns a real list
    assert isinstance(datasets.names(), list)
    assert datasets.list is not list


def test_levels_agree_with_reference_cases():
    paths = sorted(REFERENCE_CASES.glob("*.json"))
    assert paths, f"no reference cases under {REFERENCE_CASES}"
    for path in paths:
        case = json.loads(path.read_text())
        if not case.get("factors"):
            continue  # no levels to agree on (gls_spatial_gaus's simulated data is not bundled)
        df = datasets.load(Path(case["data"]).stem)
        for col, spec in (case.get("factors") or {}).items():
            cats = df[col].cat.categories.tolist()
            assert len(cats) == spec["n_levels"]
            assert df[col].cat.ordered == spec["ordered"]
            if spec.get("levels") is not None:
                assert cats == spec["levels"]
            else:
                head = spec["levels_head"]
                assert cats[: len(head)] == head


def test_module_docstring_lists_every_dataset():
    doc = datasets.__doc__
    for name in CSV_NAMES:
        assert f"\n{name}\n" in doc
