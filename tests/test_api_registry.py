"""The registry of model kinds (mixedmodels.api): what mm.<kind> and the CLI use."""

import pytest

import mixedmodels as mm
from mixedmodels import api


def test_every_registered_kind_loads_its_function_and_class():
    for kind in api.KINDS.values():
        assert getattr(mm, kind.name) is kind.function()
        assert getattr(mm, kind.class_name) is kind.cls()
        assert kind.name in dir(mm) and kind.class_name in dir(mm)


def test_fit_by_kind_is_the_kind_function(sleep):
    by_kind = api.fit("lmer", "Reaction ~ Days + (Days | Subject)", sleep)
    direct = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert isinstance(by_kind, mm.LinearMixedModel)
    assert by_kind.loglik == direct.loglik
    # lme4's REML log-likelihood (tests/reference/cases/lmer_sleepstudy_reml.json)
    assert by_kind.loglik == pytest.approx(-871.814135979976, rel=1e-9)


def test_unknown_and_duplicate_kinds_are_refused():
    with pytest.raises(mm.ArgumentError, match="unknown model kind 'lme'; the kinds are: glmer, gls, lmer"):
        api.model_kind("lme")
    with pytest.raises(mm.ArgumentError, match="'lmer' is registered already"):
        api.register(api.KINDS["lmer"])


def test_unknown_package_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'lme'"):
        mm.lme  # noqa: B018


def test_the_package_exports_every_exception_and_warning_it_defines():
    import inspect

    from mixedmodels import exceptions

    defined = {
        name for name, obj in vars(exceptions).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == exceptions.__name__
    }
    assert defined == set(exceptions.__all__)
    assert defined <= set(mm.__all__)
