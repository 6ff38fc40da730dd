"""Hints for arguments spelled as in R.

Users coming from lme4 write ``REML=FALSE``, ``nAGQ=``, ``na.action=``,
``control=glmerControl(...)``. Python would answer with a bare
``TypeError: unexpected keyword argument``; :func:`r_argument_hints` wraps the
entry points (:func:`mixedmodels.lmer`, :func:`mixedmodels.glmer`, the model
classes and their ``fit``) so that an unknown argument raises
:class:`~mixedmodels.exceptions.ArgumentError` (a ``TypeError`` and a
:class:`~mixedmodels.exceptions.ModelSpecError`) saying what to write instead.
The hints are data (:data:`R_ARGUMENTS`, :data:`CONTROL_EQUIVALENTS`), read
against the arguments the called function accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from mixedmodels.exceptions import ArgumentError, DataError, ModelSpecError

__all__ = [
    "CONTROL_EQUIVALENTS",
    "R_ARGUMENTS",
    "R_VALUES",
    "check_na_action",
    "check_optimizer",
    "option_values",
    "r_argument_hints",
    "takes_options",
    "unknown_argument_message",
]

F = TypeVar("F", bound=Callable[..., Any])

# lme4 / R arguments without a same-named counterpart: what to do instead
R_ARGUMENTS: dict[str, str] = {
    "control": "",  # built from CONTROL_EQUIVALENTS for the function called
    "verbose": "progress=True shows the evaluations while a fit runs",
    "subset": "select the rows before fitting, e.g. data[data['Days'] > 2] or data.query(...)",
    "family": "a linear mixed model has no family (as lme4's lmer): use mixedmodels.glmer(..., "
              "family=...) for other families",
    "REML": "GLMMs are fitted by maximum likelihood (Laplace or adaptive Gauss-Hermite "
            "quadrature, nagq=), as lme4's glmer; REML is for lmer",
    "optimizer": "glmer's optimisation is fixed (BOBYQA over θ, then Newton steps with lme4's "
                 "finite-difference derivatives over (θ, β), BOBYQA where those cannot be trusted)",
    "method": "lme4's old method= argument: the Laplace approximation is nagq=1 (default), "
              "adaptive Gauss-Hermite quadrature nagq > 1",
    "devFunOnly": "the objective is available as model.objective(theta) on an unfitted model "
                  "(mixedmodels.LinearMixedModel(...))",
    "mustart": "starting means are not supported; start= takes θ and fixef",
    "etastart": "starting linear predictors are not supported; start= takes θ and fixef",
}

# R's values of arguments that have a counterpart here, by our argument name
R_VALUES: dict[str, dict[str, Any]] = {
    "na_action": {"na.omit": "omit", "na.exclude": "omit", "na.fail": "fail"},
    "reml": {"TRUE": True, "FALSE": False, "T": True, "F": False},
}


def _value_name(value: Any) -> str:
    """How a value reads in R: a string as it is, a function by its name."""
    return str(getattr(value, "__name__", value))


# (lmerControl / glmerControl option, the argument here that does the same)
CONTROL_EQUIVALENTS: tuple[tuple[str, str], ...] = (
    ("optimizer", "optimizer"),
    ("optCtrl = list(maxfun = n)", "maxeval"),
    ("optCtrl = list(ftol_rel = x)", "ftol_rel"),
    ("tolPwrss", "pirls_tol"),
    ("calc.derivs / check.conv.grad", "check_convergence"),
)

# lme4's optimizer names and what comes closest here
R_OPTIMIZERS: dict[str, str] = {
    "nloptwrap": "lme4's nloptwrap runs NLopt's BOBYQA: use optimizer='bobyqa'",
    "Nelder_Mead": "Nelder-Mead is not available",
    "nlminbwrap": "nlminb is not available",
    "optimx": "optimx is not available",
    "nmkbw": "Nelder-Mead (dfoptim) is not available",
}


def _normalised(name: str) -> str:
    """Return a name without case, dots and underscores.

    So ``na.action`` and ``na_action``, ``nAGQ`` and ``nagq`` compare equal.
    """
    return name.lower().replace(".", "").replace("_", "")


def _control_hint(accepted: Collection[str]) -> str:
    pairs = [f"{r} -> {ours}=" for r, ours in CONTROL_EQUIVALENTS if ours in accepted]
    text = "there is no control object: its options are arguments here"
    if pairs:
        text += " (" + "; ".join(pairs) + ")"
    return text + "; lme4's check.* options are warnings here (filter them with the warnings module)"


def unknown_argument_message(
    function: str, name: str, value: Any, accepted: Collection[str]
) -> str:
    """Return the error message for an argument that ``function`` does not accept.

    The message for argument ``name`` (given ``value``) says what comes closest:
    the same name spelled our way (with R's value translated), our equivalent of
    an lme4 control option or R argument, a close match, or else the list of the
    arguments ``function`` accepts (``accepted``).
    """
    head = f"{function}() has no argument {name!r}"
    same = [a for a in accepted if _normalised(a) == _normalised(name)]
    if same:
        value = R_VALUES.get(same[0], {}).get(_value_name(value), value)
        shown = repr(value) if len(repr(value)) <= 40 else "..."
        return (
            f"{head}: did you mean {same[0]}={shown}? (arguments are spelled in lower "
            "case with underscores here)"
        )
    if name == "control":
        return f"{head}: {_control_hint(accepted)}"
    if name in R_ARGUMENTS:
        return f"{head}: {R_ARGUMENTS[name]}"
    close = difflib.get_close_matches(name, sorted(accepted), n=1, cutoff=0.7)
    if close:
        return f"{head}: did you mean {close[0]}=?"
    return f"{head}; its arguments are {', '.join(sorted(accepted))}"


def _parameters(func: Callable[..., Any]) -> set[str]:
    return {
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }


def r_argument_hints(
    *forwards_to: Callable[..., Any], also: Collection[str] = ()
) -> Callable[[F], F]:
    """Decorate an entry point so that an unknown keyword argument gets a hint.

    The call raises :class:`ArgumentError` with the message of
    :func:`unknown_argument_message`.

    Parameters
    ----------
    *forwards_to : callable
        Functions the decorated one passes its ``**kwargs`` to (``lmer``
        forwards to ``LinearMixedModel.fit``): their arguments are accepted too.
    also : collection of str
        Further accepted names (arguments of a function the call may be
        handed to that cannot be imported here).
    """

    def decorate(func: F) -> F:
        accepted = frozenset(
            _parameters(func).union(*(_parameters(f) for f in forwards_to), also)
        )
        name = func.__qualname__.replace(".__init__", "")

        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            for key in kwargs:
                if key not in accepted:
                    raise ArgumentError(unknown_argument_message(name, key, kwargs[key], accepted))
            return func(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorate


def check_optimizer(optimizer: Any, available: dict[str, str]) -> str:
    """Return ``optimizer`` if it is one of ``available`` (name -> description).

    Otherwise raise a :class:`ModelSpecError` listing them, with what comes
    closest to an lme4 optimizer name.
    """
    if isinstance(optimizer, str) and optimizer in available:
        return optimizer
    listing = "; ".join(f"{k!r} ({v})" for k, v in available.items())
    hint = R_OPTIMIZERS.get(str(optimizer), "")
    head = f"unknown optimizer {optimizer!r}" + (f": {hint}" if hint else "")
    raise ModelSpecError(f"{head}. The optimizers are {listing}")


def check_na_action(na_action: Any) -> str:
    """Return ``na_action`` if it is "omit" or "fail", else raise a :class:`DataError`.

    R's ``na.omit`` / ``na.fail`` spellings get a hint.
    """
    if na_action in ("omit", "fail"):
        return na_action
    ours = R_VALUES["na_action"].get(_value_name(na_action))
    hint = f" (R's {na_action!r} is na_action={ours!r} here)" if ours else ""
    raise DataError(f"na_action must be 'omit' or 'fail', not {na_action!r}{hint}")


def option_values(options: Any) -> dict[str, Any]:
    """Return the fields of an options dataclass as keyword arguments.

    The values are the fields themselves, not copies (``dataclasses.asdict``
    would copy arrays).
    """
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def takes_options(options_type: type) -> Callable[[F], F]:
    """Decorate a function whose parameter ``options`` stands for a dataclass's fields.

    Callers pass the fields of the dataclass ``options_type`` as arguments, by
    keyword or by position, as if the function's signature listed them in place
    of ``options`` (with their defaults and annotations); the function receives
    one ``options_type`` instance.

    This is how the entry points of one model kind (``lmer``,
    ``LinearMixedModel``, the Dask entry) share one definition of their
    arguments. :func:`inspect.signature`, ``help()`` and
    :func:`r_argument_hints` (applied above this decorator) see the fields.
    """
    fields = [
        inspect.Parameter(
            f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=f.type
        )
        for f in dataclasses.fields(options_type)
    ]
    names = [f.name for f in fields]

    def decorate(func: F) -> F:
        inner = inspect.signature(func)
        params = []
        for p in inner.parameters.values():
            params.extend(fields if p.name == "options" else [p])
        public = inner.replace(parameters=params)
        positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            # by hand, not Signature.bind (3x slower: lmer passes through two of these)
            if len(args) > len(positional) or any(n in kwargs for n in positional[: len(args)]):
                public.bind(*args, **kwargs)  # raises the TypeError Python would
            given = dict(zip(positional, args), **kwargs)
            options = options_type(**{n: given.pop(n) for n in names if n in given})
            return func(**given, options=options)

        call.__signature__ = public  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate

