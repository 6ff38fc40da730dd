"""Families by name.

:func:`get_family` reads R's spellings (``"Gamma"``, ``"inverse.gaussian"``,
``"binomial(link = 'probit')"``) and finds every
:class:`~mixedmodels.families.family.Family` subclass defined (``FAMILIES``).
"""

from __future__ import annotations

import difflib
import re

from mixedmodels.exceptions import FamilyError
from mixedmodels.families.family import FAMILIES, Family, family_key
from mixedmodels.families.links import Link
from mixedmodels.families.numeric import quoted

__all__ = ["get_family"]


def get_family(family: str | Family | type[Family], link: str | Link | None = None) -> Family:
    """Return the family object for ``family``, with ``link`` overriding its link.

    Parameters
    ----------
    family : str, Family or Family subclass
        ``"binomial"``, ``"poisson"``, ``"Gamma"`` (or ``"gamma"``),
        ``"inverse.gaussian"`` (or ``"inverse_gaussian"``), ``"gaussian"``; or a
        family object or class.
    link : str or Link, optional
        The link (R's names, e.g. ``"probit"``, ``"1/mu^2"``); default: the
        family object's link, or the family's default link.

    Returns
    -------
    Family

    Raises
    ------
    FamilyError
        Unknown family name, or a link the family does not allow.

    Examples
    --------
    >>> get_family("binomial", link="probit")
    Binomial(link='probit')
    """
    if isinstance(family, Family):
        return family if link is None else type(family)(link)
    if isinstance(family, type) and issubclass(family, Family) and family is not Family:
        return family(link)
    choices = tuple(cls.name for cls in FAMILIES.values())
    if isinstance(family, str):
        call = _R_FAMILY_CALL.match(family)
        if call is not None:  # R's spelling: "binomial(link = 'probit')"
            return get_family(call["name"], _link_of_call(family, call["link"], link))
        key = family_key(family)
        if key in FAMILIES:
            return FAMILIES[key](link)
        if key in _UNAVAILABLE_FAMILIES:
            raise FamilyError(f"family {family!r}: {_UNAVAILABLE_FAMILIES[key]}")
        close = difflib.get_close_matches(family, choices, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FamilyError(f"unknown family {family!r}{hint}; choose one of {quoted(choices)}")
    foreign = type(family).__name__.lower()
    hint = (
        f" (a {type(family).__name__} of another package: pass its name, e.g. "
        f"family={foreign!r} with link=..., or mixedmodels.families.{FAMILIES[foreign].__name__}())"
        if foreign in FAMILIES else ""
    )
    raise FamilyError(
        f"family must be a name or a Family object, not {type(family).__name__}{hint}; "
        f"choose one of {quoted(choices)}"
    )


# R's family calls written as text: binomial(), binomial(link = "probit"), poisson(log)
_R_FAMILY_CALL = re.compile(
    r"^\s*(?P<name>[A-Za-z][\w.]*)\s*\(\s*(?:link\s*=\s*)?"
    r"(?P<quote>['\"]?)(?P<link>[^'\"()]*?)(?P=quote)\s*\)\s*$"
)

_QUASI = (
    "quasi-likelihood families have no likelihood, and lme4's glmer refuses them too; for "
    "overdispersion add an observation-level random effect, e.g. + (1 | obs) with one level "
    "of obs per row"
)
_UNAVAILABLE_FAMILIES = {
    "quasibinomial": _QUASI,
    "quasipoisson": _QUASI,
    "quasi": _QUASI,
    "negative_binomial": "negative binomial GLMMs (lme4's glmer.nb) are not available",
    "negbin": "negative binomial GLMMs (lme4's glmer.nb) are not available",
}


def _link_of_call(text: str, in_call: str, link: str | Link | None) -> str | Link | None:
    """Return the link of a family written as an R call, checked against ``link=``."""
    in_call = in_call.strip()
    if not in_call:
        return link
    if link is not None and str(getattr(link, "name", link)) != in_call:
        raise FamilyError(
            f"family {text!r} names the link {in_call!r} but link={link!r} was given too"
        )
    return in_call
