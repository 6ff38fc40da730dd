"""Link functions, as R's ``make.link``.

They have the same clamps as R's C code (``family.c``), e.g. the logit link's
±30 thresholds and the probit and cauchit clamps at the ``DBL_EPSILON``
quantiles.

A new link is a subclass of :class:`Link` (``name``, ``linkfun``, ``linkinv``,
``mu_eta``; ``kernel_code`` where the compiled GLMM steps implement it),
and :func:`make_link` finds it by its name (``LINKS``, filled as the
classes are defined).
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import numpy as np
from scipy import special

from mixedmodels.exceptions import FamilyError
from mixedmodels.families.numeric import DBL_EPSILON, as_float, quoted

__all__ = [
    "LINKS",
    "CauchitLink",
    "CloglogLink",
    "IdentityLink",
    "InverseLink",
    "InverseSquareLink",
    "Link",
    "LogLink",
    "LogitLink",
    "ProbitLink",
    "SqrtLink",
    "make_link",
]

# every link by its R name (what make_link looks up): a subclass of Link with
# a name enters it when it is defined
LINKS: dict[str, type["Link"]] = {}

_INVEPS = 1.0 / DBL_EPSILON
_M_1_SQRT_2PI = 0.398942280401432677939946059934


class Link(abc.ABC):
    """A link function ``eta = g(mu)``, as R's ``make.link(name)``.

    Attributes
    ----------
    name : str
        R's name of the link (``"logit"``, ``"1/mu^2"``, ...).
    kernel_code : int or None
        The number by which the compiled GLMM steps
        (:mod:`mixedmodels.linalg.kernels.glmm_numba`) know the link, or None
        where they do not implement it (the engine then takes the numpy path).

    Methods
    -------
    linkfun(mu)
        ``g(mu)``.
    linkinv(eta)
        ``g^{-1}(eta)``, clamped as R clamps it.
    mu_eta(eta)
        ``d mu / d eta`` (R's ``mu.eta``).
    valideta(eta)
        Whether ``eta`` is in the link's domain (R's ``valideta``).
    """

    name: ClassVar[str] = ""
    kernel_code: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):  # a subclass that keeps its parent's name does not replace it
            LINKS[cls.name] = cls

    @abc.abstractmethod
    def linkfun(self, mu: Any) -> np.ndarray:
        """Return ``eta = g(mu)``.

        Parameters
        ----------
        mu : array-like
            Means.

        Returns
        -------
        numpy.ndarray
            The linear predictor, as floats.
        """
        ...

    @abc.abstractmethod
    def linkinv(self, eta: Any) -> np.ndarray:
        """Return ``mu = g^{-1}(eta)``, clamped as R clamps it.

        Parameters
        ----------
        eta : array-like
            Linear predictor.

        Returns
        -------
        numpy.ndarray
            The means, as floats.
        """
        ...

    @abc.abstractmethod
    def mu_eta(self, eta: Any) -> np.ndarray:
        """Return ``d mu / d eta`` at ``eta`` (R's ``mu.eta``), clamped as R clamps it."""
        ...

    def valideta(self, eta: Any) -> bool:
        """Return whether ``eta`` is in the link's domain (R's ``valideta``): always here."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Link) and type(other) is type(self) and other.name == self.name

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name))


class LogitLink(Link):
    """``log(mu / (1 - mu))``; inverse and derivative as R's C code (``family.c``).

    ``linkinv`` uses ``exp(eta)`` replaced by ``DBL_EPSILON`` below ``eta = -30`` and
    by ``1/DBL_EPSILON`` above 30, so ``mu`` stays inside (0, 1); ``mu_eta`` is
    ``DBL_EPSILON`` outside [-30, 30].

    Attributes
    ----------
    name : str
        ``"logit"``.
    kernel_code : int
        0, this link's number in the compiled GLMM steps.
    """

    name = "logit"
    kernel_code = 0

    def linkfun(self, mu):
        """Return ``log(mu / (1 - mu))``; a FamilyError for ``mu`` outside [0, 1]."""
        mu = as_float(mu)
        bad = (mu < 0) | (mu > 1)
        if np.any(bad):
            raise FamilyError(f"logit link: value {mu[bad].flat[0]:g} out of range (0, 1)")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(mu / (1 - mu))

    def linkinv(self, eta):
        """Return ``exp(eta) / (1 + exp(eta))``, ``exp(eta)`` clamped outside [-30, 30]."""
        eta = as_float(eta)
        tmp = np.where(
            eta < -30.0, DBL_EPSILON, np.where(eta > 30.0, _INVEPS, np.exp(np.clip(eta, -30.0, 30.0)))
        )
        return tmp / (1 + tmp)

    def mu_eta(self, eta):
        """Return ``exp(eta) / (1 + exp(eta))²``; ``DBL_EPSILON`` outside [-30, 30]."""
        eta = as_float(eta)
        e = np.exp(np.clip(eta, -30.0, 30.0))
        opexp = 1 + e
        return np.where((eta > 30.0) | (eta < -30.0), DBL_EPSILON, e / (opexp * opexp))


def _dnorm(x: np.ndarray) -> np.ndarray:
    return _M_1_SQRT_2PI * np.exp(-0.5 * x * x)


class ProbitLink(Link):
    """``qnorm(mu)``; ``linkinv`` clamps ``eta`` to ``±-qnorm(DBL_EPSILON)`` (~8.13).

    scipy's ``ndtr``/``ndtri`` stand for R's ``pnorm``/``qnorm`` (they differ
    in the last digit or two, far below any tolerance of a fit).

    Attributes
    ----------
    name : str
        ``"probit"``.
    kernel_code : int
        2, this link's number in the compiled GLMM steps.
    thresh : float
        R's ``-qnorm(.Machine$double.eps)``, where ``linkinv`` clamps ``eta``.
    """

    name = "probit"
    kernel_code = 2
    thresh: ClassVar[float] = 8.125890664701906  # R's -qnorm(.Machine$double.eps)

    def linkfun(self, mu):
        """Return ``qnorm(mu)`` (scipy's ``ndtri``)."""
        return special.ndtri(as_float(mu))

    def linkinv(self, eta):
        """Return ``pnorm(eta)`` (scipy's ``ndtr``), ``eta`` clamped to ±``thresh``."""
        return special.ndtr(np.clip(as_float(eta), -self.thresh, self.thresh))

    def mu_eta(self, eta):
        """Return ``dnorm(eta)``, at least ``DBL_EPSILON``."""
        return np.maximum(_dnorm(as_float(eta)), DBL_EPSILON)


def _tanpi_half(p: np.ndarray) -> np.ndarray:
    """R's ``tanpi(p)`` for ``p`` in (0, 0.5)."""
    return np.where(p == 0.25, 1.0, np.tan(np.pi * p))


def _qcauchy(p: np.ndarray) -> np.ndarray:
    """R's ``qcauchy(p)`` (nmath: ``-1/tanpi(p)`` on the smaller tail)."""
    upper = p > 0.5
    pp = np.where(upper, 1 - p, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.where(upper, 1.0, -1.0) / _tanpi_half(pp)
    val = np.where(pp == 0.5, 0.0, val)
    val = np.where(pp == 0.0, np.where(upper, np.inf, -np.inf), val)
    return np.where((p < 0) | (p > 1), np.nan, val)


def _pcauchy(x: np.ndarray) -> np.ndarray:
    """R's ``pcauchy(x)`` (``atan(1/x)`` in the tails, no cancellation)."""
    with np.errstate(divide="ignore"):
        y = np.arctan(1 / x) / np.pi
    tails = np.where(x > 0, 0.5 - y + 0.5, -y)
    return np.where(np.abs(x) > 1, tails, 0.5 + np.arctan(x) / np.pi)


class CauchitLink(Link):
    """``qcauchy(mu)``; ``linkinv`` clamps ``eta`` to ``±-qcauchy(DBL_EPSILON)``.

    Attributes
    ----------
    name : str
        ``"cauchit"``.
    kernel_code : None
        None: the compiled GLMM steps do not implement this link.
    thresh : float
        ``-qcauchy(DBL_EPSILON)`` = ``1/tanpi(DBL_EPSILON)``, where ``linkinv`` clamps ``eta``.
    """

    name = "cauchit"
    thresh: ClassVar[float] = 1.0 / math.tan(math.pi * DBL_EPSILON)  # -qcauchy(eps) = 1/tanpi(eps)

    def linkfun(self, mu):
        """Return ``qcauchy(mu)``, computed as R's nmath does."""
        return _qcauchy(as_float(mu))

    def linkinv(self, eta):
        """Return ``pcauchy(eta)``, ``eta`` clamped to ±``thresh``."""
        return _pcauchy(np.clip(as_float(eta), -self.thresh, self.thresh))

    def mu_eta(self, eta):
        """Return ``1 / (π (1 + eta²))``, at least ``DBL_EPSILON``."""
        eta = as_float(eta)
        return np.maximum(1.0 / (np.pi * (1.0 + eta * eta)), DBL_EPSILON)


class CloglogLink(Link):
    """``log(-log(1 - mu))``; ``linkinv`` kept in [eps, 1 - eps], ``mu_eta`` >= eps.

    Attributes
    ----------
    name : str
        ``"cloglog"``.
    kernel_code : int
        3, this link's number in the compiled GLMM steps.
    """

    name = "cloglog"
    kernel_code = 3

    def linkfun(self, mu):
        """Return ``log(-log(1 - mu))``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(-np.log(1 - as_float(mu)))

    def linkinv(self, eta):
        """Return ``1 - exp(-exp(eta))``, kept in [``DBL_EPSILON``, 1 - ``DBL_EPSILON``]."""
        with np.errstate(over="ignore"):
            mu = -np.expm1(-np.exp(as_float(eta)))
        return np.maximum(np.minimum(mu, 1 - DBL_EPSILON), DBL_EPSILON)

    def mu_eta(self, eta):
        """Return ``exp(eta) exp(-exp(eta))`` (``eta`` capped at 700), at least ``DBL_EPSILON``."""
        eta = np.minimum(as_float(eta), 700.0)
        e = np.exp(eta)
        return np.maximum(e * np.exp(-e), DBL_EPSILON)


class LogLink(Link):
    """``log(mu)``; ``linkinv`` and ``mu_eta`` are ``max(exp(eta), DBL_EPSILON)``.

    Attributes
    ----------
    name : str
        ``"log"``.
    kernel_code : int
        1, this link's number in the compiled GLMM steps.
    """

    name = "log"
    kernel_code = 1

    def linkfun(self, mu):
        """Return ``log(mu)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(as_float(mu))

    def linkinv(self, eta):
        """Return ``max(exp(eta), DBL_EPSILON)``."""
        with np.errstate(over="ignore"):
            return np.maximum(np.exp(as_float(eta)), DBL_EPSILON)

    def mu_eta(self, eta):
        """Return ``max(exp(eta), DBL_EPSILON)``."""
        with np.errstate(over="ignore"):
            return np.maximum(np.exp(as_float(eta)), DBL_EPSILON)


class IdentityLink(Link):
    """``mu`` itself.

    Attributes
    ----------
    name : str
        ``"identity"``.
    kernel_code : None
        None: the compiled GLMM steps do not implement this link.
    """

    name = "identity"

    def linkfun(self, mu):
        """Return a copy of ``mu``."""
        return as_float(mu).copy()

    def linkinv(self, eta):
        """Return a copy of ``eta``."""
        return as_float(eta).copy()

    def mu_eta(self, eta):
        """Return ones shaped as ``eta``."""
        return np.ones_like(as_float(eta))


class InverseLink(Link):
    """``1/mu``; ``eta`` must be finite and non-zero.

    Attributes
    ----------
    name : str
        ``"inverse"``.
    kernel_code : None
        None: the compiled GLMM steps do not implement this link.
    """

    name = "inverse"

    def linkfun(self, mu):
        """Return ``1/mu``."""
        with np.errstate(divide="ignore"):
            return 1 / as_float(mu)

    def linkinv(self, eta):
        """Return ``1/eta``."""
        with np.errstate(divide="ignore"):
            return 1 / as_float(eta)

    def mu_eta(self, eta):
        """Return ``-1/eta²``."""
        eta = as_float(eta)
        with np.errstate(divide="ignore"):
            return -1 / (eta * eta)

    def valideta(self, eta):
        """Return whether every ``eta`` is finite and non-zero."""
        eta = as_float(eta)
        return bool(np.all(np.isfinite(eta)) and np.all(eta != 0))


class SqrtLink(Link):
    """``sqrt(mu)``; ``eta`` must be finite and positive.

    Attributes
    ----------
    name : str
        ``"sqrt"``.
    kernel_code : None
        None: the compiled GLMM steps do not implement this link.
    """

    name = "sqrt"

    def linkfun(self, mu):
        """Return ``sqrt(mu)``."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(as_float(mu))

    def linkinv(self, eta):
        """Return ``eta²``."""
        eta = as_float(eta)
        return eta * eta

    def mu_eta(self, eta):
        """Return ``2 eta``."""
        return 2 * as_float(eta)

    def valideta(self, eta):
        """Return whether every ``eta`` is finite and positive."""
        eta = as_float(eta)
        return bool(np.all(np.isfinite(eta)) and np.all(eta > 0))


class InverseSquareLink(Link):
    """``1/mu^2`` (the inverse Gaussian's canonical link); ``eta`` finite and positive.

    Attributes
    ----------
    name : str
        ``"1/mu^2"``.
    kernel_code : None
        None: the compiled GLMM steps do not implement this link.
    """

    name = "1/mu^2"

    def linkfun(self, mu):
        """Return ``1/mu²``."""
        mu = as_float(mu)
        with np.errstate(divide="ignore"):
            return 1 / (mu * mu)

    def linkinv(self, eta):
        """Return ``1/sqrt(eta)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1 / np.sqrt(as_float(eta))

    def mu_eta(self, eta):
        """Return ``-1 / (2 eta^1.5)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return -1 / (2 * as_float(eta) ** 1.5)

    def valideta(self, eta):
        """Return whether every ``eta`` is finite and positive."""
        eta = as_float(eta)
        return bool(np.all(np.isfinite(eta)) and np.all(eta > 0))


def make_link(link: str | Link) -> Link:
    """Return the link called ``link`` (R's ``make.link``); a :class:`Link` is returned as is.

    Raises
    ------
    FamilyError
        If the name is not one of R's links.
    """
    if isinstance(link, Link):
        return link
    if isinstance(link, str) and link in LINKS:
        return LINKS[link]()
    raise FamilyError(f"link {link!r} not recognised; available links are {quoted(LINKS)}")
