"""Datasets used in the examples, tests and R reference cases.

Every dataset is shipped as the CSV that R's ``write.csv`` produced (after the
reference case's ``data_prep``), plus ``data/metadata.json`` holding R's factor
levels, their order and orderedness, the source and a description.  Factor
columns are returned as :class:`pandas.Categorical` with R's level order (which
fixes reference levels and contrasts), even when the labels look numeric
(``sleepstudy.Subject`` is ``"308"``, ``"309"``, ...); ordered factors are
ordered categoricals.

Functions
---------
list()
    A :class:`pandas.DataFrame` with one row per dataset: ``name``, ``rows``,
    ``columns``, ``source``, ``description``.
names()
    The dataset names, as a list of str.
load(name)
    The dataset as a fresh :class:`pandas.DataFrame` (name matched
    case-insensitively).

Datasets
--------
cbpp
    Contagious bovine pleuropneumonia: new serological cases (incidence) of herd
    size in 15 zebu herds over 4 periods.
    56 rows x 4 columns. Source: R package lme4.
dietox
    Weekly weights of 72 pigs over 12 weeks under 3 doses each of vitamin E and
    copper in the feed (sorted by Pig, Time).
    861 rows x 8 columns. Source: R package geepack.
Dyestuff
    Yield of dyestuff (g of standard colour) from 5 preparations of each of 6
    batches of an intermediate product.
    30 rows x 2 columns. Source: R package lme4.
Dyestuff2
    Simulated data with the layout of Dyestuff (6 batches x 5) whose between-batch
    variance estimate is zero.
    30 rows x 2 columns. Source: R package lme4.
gamm4_sim
    Simulated additive data (Gu & Wahba 4-term truth, scale 2) with a 4-level random
    effect fac; f, f0-f3 are the true terms.
    400 rows x 11 columns. Source: simulated: set.seed(0); mgcv::gamSim(6, n = 400)
    (the gamm4 example).
grouseticks
    Ticks counted on red grouse chicks by brood, altitude (HEIGHT), year and
    location; sHEIGHT = scaled HEIGHT.
    403 rows x 8 columns. Source: R package lme4.
InstEval
    Lecture evaluations at ETH Zurich: 73421 ratings (1-5) of 1128 lecturers (d) by
    2972 students (s).
    73421 rows x 7 columns. Source: R package lme4.
Orange
    Trunk circumference (mm) of 5 orange trees at 7 ages (days since 1968-12-31).
    35 rows x 3 columns. Source: R package datasets (also in nlme as groupedData).
Orthodont
    Pituitary to pterygomaxillary fissure distance (mm) of 27 children (16 boys, 11
    girls) at ages 8, 10, 12, 14.
    108 rows x 4 columns. Source: R package nlme.
Ovary
    Number of large ovarian follicles in 11 mares, recorded over an oestrus cycle
    (Time scaled to the cycle).
    308 rows x 3 columns. Source: R package nlme.
Pastes
    Strength of a chemical paste: 2 assays of each of 3 casks from each of 10
    delivery batches (nested).
    60 rows x 4 columns. Source: R package lme4.
Penicillin
    Diameter (mm) of growth-inhibition zones of 6 penicillin samples, each assayed
    on each of 24 plates (crossed).
    144 rows x 3 columns. Source: R package lme4.
respiratory
    Respiratory illness trial: binary status of 111 patients at 2 centres, treatment
    vs placebo, 4 visits plus baseline.
    444 rows x 8 columns. Source: R package geepack.
Salamanders
    Salamander counts (7 species/life stages) in repeated surveys of 23 stream
    sites, mined or not by mountaintop removal.
    644 rows x 9 columns. Source: R package glmmTMB.
sleepstudy
    Reaction times in a sleep deprivation study: 18 subjects, days 0-9 of sleep
    restriction (3 h per night).
    180 rows x 3 columns. Source: R package lme4.
VerbAgg
    Verbal aggression questionnaire: 316 subjects' responses to 24 items (situation
    x behaviour x want/do).
    7584 rows x 9 columns. Source: R package lme4.
wine
    Bitterness of white wine: 9 judges rate 8 bottles (temperature x skin contact)
    on a 5-point ordinal scale.
    72 rows x 6 columns. Source: R package ordinal.

Examples
--------
>>> from mixedmodels import datasets
>>> sleep = datasets.load("sleepstudy")
>>> sleep.shape
(180, 3)
>>> sleep["Subject"].cat.categories[:3].tolist()
['308', '309', '310']
"""

from __future__ import annotations

import builtins
import functools
import json
from importlib import resources
from typing import Any

import pandas as pd

from mixedmodels.exceptions import DataError

__all__ = ["list", "load", "names"]

_PACKAGE = __name__


@functools.lru_cache(maxsize=1)
def _metadata() -> dict[str, dict[str, Any]]:
    text = resources.files(_PACKAGE).joinpath("data", "metadata.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _lookup() -> dict[str, str]:
    return {name.lower(): name for name in _metadata()}


def names() -> builtins.list[str]:
    """Names of the available datasets, sorted case-insensitively.

    Returns
    -------
    list of str
    """
    return sorted(_metadata(), key=str.lower)


def list() -> pd.DataFrame:  # noqa: A001 - deliberate: ``datasets.list()``
    """Table of the available datasets.

    Returns
    -------
    pandas.DataFrame
        One row per dataset, sorted by name case-insensitively, with columns
        ``name``, ``rows``, ``columns``, ``source`` and ``description``.
    """
    meta = _metadata()
    records = [
        {
            "name": name,
            "rows": int(meta[name]["rows"]),
            "columns": int(meta[name]["columns"]),
            "source": meta[name]["source"],
            "description": meta[name]["description"],
        }
        for name in names()
    ]
    return pd.DataFrame.from_records(
        records, columns=["name", "rows", "columns", "source", "description"]
    )


def _resolve(name: str) -> str:
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a str, got {type(name).__name__}")
    canonical = _lookup().get(name.lower())
    if canonical is None:
        raise DataError(
            f"unknown dataset {name!r}; available datasets: {', '.join(names())}"
        )
    return canonical


@functools.lru_cache(maxsize=None)
def _load_cached(name: str) -> pd.DataFrame:
    factors: dict[str, dict[str, Any]] = _metadata()[name]["factors"]
    path = resources.files(_PACKAGE).joinpath("data", f"{name}.csv")
    with resources.as_file(path) as csv_path:
        frame = pd.read_csv(csv_path, dtype={col: str for col in factors})
    for col, spec in factors.items():
        frame[col] = pd.Categorical(
            frame[col], categories=spec["levels"], ordered=bool(spec["ordered"])
        )
    for col in frame.columns:
        if col in factors or frame[col].dtype == bool:
            continue
        if not (pd.api.types.is_object_dtype(frame[col]) or pd.api.types.is_string_dtype(frame[col])):
            continue
        values = set(frame[col].dropna().unique())
        if values and values <= {True, False, "TRUE", "FALSE"}:
            # logical with NA: R's TRUE/FALSE -> nullable boolean
            frame[col] = frame[col].map({True: True, False: False, "TRUE": True, "FALSE": False}).astype("boolean")
        else:
            # character column without recorded levels: R's factor() default (sorted levels)
            frame[col] = pd.Categorical(frame[col], categories=sorted(values), ordered=False)
    return frame


def load(name: str) -> pd.DataFrame:
    """Load a dataset.

    Parameters
    ----------
    name : str
        Dataset name (see :func:`names`), matched case-insensitively.

    Returns
    -------
    pandas.DataFrame
        A fresh copy (safe to modify). Factor columns are categoricals with
        R's level order; ordered factors are ordered categoricals.

    Raises
    ------
    DataError
        If ``name`` is not a known dataset (the message lists the available ones).
    """
    return _load_cached(_resolve(name)).copy(deep=True)
