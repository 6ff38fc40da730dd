"""lme4 habits get a hint, not a bare TypeError: R's argument names, control
objects, optimizer names, na.action values and family calls written as text."""

from __future__ import annotations

import pytest

import mixedmodels as mm
from mixedmodels.exceptions import ArgumentError, DataError, FamilyError, ModelSpecError
from mixedmodels.families import get_family
from mixedmodels.support.arguments import unknown_argument_message

SLEEP = "Reaction ~ Days + (1 | Subject)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"




def test_argument_error_is_both_a_type_error_and_a_model_spec_error():
    assert issubclass(ArgumentError, TypeError)
    assert issubclass(ArgumentError, ModelSpecError)
    assert issubclass(ArgumentError, ValueError)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d: mm.lmer(SLEEP, d, REML=False), r"lmer\(\) has no argument 'REML': did you mean reml=False\?"),
        (lambda d: mm.LinearMixedModel(SLEEP, d, REML=False), r"LinearMixedModel\(\) .*reml=False"),
        (lambda d: mm.lmer(SLEEP, d, **{"na.action": "na.omit"}), r"did you mean na_action='omit'"),
        (lambda d: mm.lmer(SLEEP, d, REML="FALSE"), r"did you mean reml=False\?"),
        (lambda d: mm.lmer(SLEEP, d, verbose=1), r"progress=True"),
        (lambda d: mm.lmer(SLEEP, d, subset="Days > 2"), r"select the rows before fitting"),
        (lambda d: mm.lmer(SLEEP, d, family="poisson"), r"mixedmodels.glmer"),
        (lambda d: mm.lmer(SLEEP, d, optimiser="bobyqa"), r"did you mean optimizer="),
        (lambda d: mm.LinearMixedModel(SLEEP, d).fit(maxfun=10), r"fit\(\) has no argument 'maxfun'"),
    ],
)
def test_lmer_r_argument_names(sleep, call, message):
    # on main: TypeError "got an unexpected keyword argument ..."
    with pytest.raises(ArgumentError, match=message):
        call(sleep)


def test_lmer_control_lists_the_equivalent_arguments(sleep):
    with pytest.raises(TypeError) as info:  # except TypeError keeps working
        mm.lmer(SLEEP, sleep, control={"optimizer": "bobyqa"})
    text = str(info.value)
    for piece in ("no control object", "optimizer -> optimizer=", "maxfun = n) -> maxeval=",
                  "ftol_rel="):
        assert piece in text
    assert "pirls_tol" not in text  # a glmer option: not offered for lmer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nAGQ": 5}, r"glmer\(\) has no argument 'nAGQ': did you mean nagq=5\?"),
        ({"REML": False}, r"maximum likelihood.*REML is for lmer"),
        ({"control": None}, r"tolPwrss -> pirls_tol=.*check_convergence="),
        ({"optimizer": "bobyqa"}, r"glmer's optimisation is fixed"),
    ],
)
def test_glmer_r_argument_names(cbpp, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        mm.glmer(CBPP, cbpp, **kwargs)


def test_model_classes_and_fit_methods_hint(cbpp, sleep):
    with pytest.raises(ArgumentError, match=r"GeneralizedLinearMixedModel\(\) .*nagq=1"):
        mm.GeneralizedLinearMixedModel(CBPP, cbpp, nAGQ=1)
    model = mm.GeneralizedLinearMixedModel(CBPP, cbpp)
    with pytest.raises(ArgumentError, match=r"GeneralizedLinearMixedModel.fit\(\) .*pirls_tol"):
        model.fit(tolPwrss=1e-8)


def test_unknown_name_without_hint_lists_the_arguments():
    text = unknown_argument_message("f", "zzz", 1, {"alpha", "beta"})
    assert text == "f() has no argument 'zzz'; its arguments are alpha, beta"


def test_optimizer_names_of_lme4(sleep):
    model = mm.LinearMixedModel(SLEEP, sleep)
    with pytest.raises(ModelSpecError, match=r"'Nelder_Mead': Nelder-Mead is not available.*"
                       r"'lbfgsb'.*'bobyqa'"):
        model.fit(optimizer="Nelder_Mead")
    with pytest.raises(ModelSpecError, match="nloptwrap runs NLopt's BOBYQA: use optimizer='bobyqa'"):
        model.fit(optimizer="nloptwrap")


def test_na_action_in_r_spelling(sleep):
    with pytest.raises(DataError, match=r"R's 'na.omit' is na_action='omit'"):
        mm.lmer(SLEEP, sleep, na_action="na.omit")


def test_family_written_as_an_r_call(cbpp):
    assert get_family("binomial(link = 'probit')") == get_family("binomial", "probit")
    assert get_family('Gamma(link = "log")') == get_family("Gamma", "log")
    assert get_family("poisson()") == get_family("poisson")
    fit = mm.glmer(CBPP, cbpp, family="binomial(link = 'probit')")
    ref = mm.glmer(CBPP, cbpp, family="binomial", link="probit")
    assert fit.loglik == ref.loglik
    with pytest.raises(FamilyError, match="names the link 'probit' but link='logit'"):
        get_family("binomial(link='probit')", "logit")


def test_families_lme4_does_not_fit_either():
    with pytest.raises(FamilyError, match="quasi-likelihood.*observation-level random effect"):
        get_family("quasibinomial")
    with pytest.raises(FamilyError, match="glmer.nb"):
        get_family("negative.binomial")


def test_family_object_of_another_package():
    class Binomial:  # e.g. statsmodels.genmod.families.Binomial()
        pass

    with pytest.raises(FamilyError, match=r"family='binomial' with link=.*families.Binomial\(\)"):
        get_family(Binomial())


def test_gaussian_glmer_passes_its_fit_options_to_lmer(sleep):
    # lme4 hands glmer(family = gaussian) to lmer; main dropped the fit options silently
    with pytest.warns(UserWarning, match="fitting it with lmer"):
        m = mm.glmer(SLEEP, sleep, family="gaussian", keep_history=True)
    assert len(m.optsum.history) > 0  # kept only when asked for
    with pytest.warns(UserWarning), pytest.raises(ArgumentError, match="lmer\\(\\) has no argument 'pirls_tol'"):
        mm.glmer(SLEEP, sleep, family="gaussian", pirls_tol=1e-9)
