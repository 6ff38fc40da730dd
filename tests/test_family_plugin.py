"""A family plugs in by defining a class: glmer asks it, never its name."""

from __future__ import annotations

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.families import Poisson, get_family
from mixedmodels.families.family import FAMILIES

TICKS = "TICKS ~ YEAR + sHEIGHT + (1 | BROOD)"


@pytest.fixture
def counts_family():
    """A Poisson family under another name, without compiled steps."""

    class Counts(Poisson):
        name = "counts.test"
        kernel_code = None

    yield Counts
    FAMILIES.pop("counts_test")


def test_a_defined_family_is_found_by_name(counts_family):
    assert isinstance(get_family("counts.test"), counts_family)
    assert isinstance(get_family("counts_test", link="sqrt"), counts_family)


def test_glmer_fits_a_defined_family_as_the_one_it_extends(counts_family):
    ticks = mm.datasets.load("grouseticks")
    ours = mm.glmer(TICKS, ticks, family="counts.test")
    ref = mm.glmer(TICKS, ticks, family="poisson")
    assert ours._engine.compiled is None  # no kernel_code: the numpy steps
    assert ours.deviance == pytest.approx(ref.deviance, abs=1e-7)
    np.testing.assert_allclose(ours.fixef, ref.fixef, rtol=1e-6)
    assert ours.summary_title()[1].startswith(" Family: counts.test")


def test_a_subclass_without_a_name_of_its_own_replaces_nothing():
    class Tweaked(Poisson):
        pass

    assert type(get_family("poisson")) is Poisson
