"""GLM families and link functions, computed as R's ``stats::family`` objects.

``glmer``'s deviance and log-likelihood are built from these, so every function
follows R's code (``src/library/stats/R/family.R``, ``.../src/family.c`` and the
``nmath`` densities) rather than a textbook formula: the logit link's ±30
thresholds, the probit and cauchit clamps at the ``DBL_EPSILON`` quantiles, the
``y log(y/mu)`` convention at ``y = 0``, the binomial AIC's rounding of the
number of trials, and Catherine Loader's saddle-point log-densities that R's
``dbinom``, ``dpois`` and ``dgamma`` use (accurate for huge counts, where
``log(y!)`` minus ``y log(mu)`` would cancel catastrophically).

>>> fam = get_family("binomial")            # binomial(link = "logit")
>>> float(fam.linkinv(-40.0))               # clamped as R's C code does
2.2204460492503126e-16
>>> get_family("poisson", link="sqrt")
Poisson(link='sqrt')

All functions are vectorised over numpy arrays and return float arrays (or
numpy floats for scalar input); they emit no floating-point warnings but, like
R, return ``inf``/``nan`` where R does.
"""

from __future__ import annotations

import abc
import difflib
import math
import re
import warnings
from typing import Any, ClassVar, NamedTuple

import numpy as np
from scipy import special

from mixedmodels.exceptions import FamilyError, NonIntegerResponseWarning

__all__ = [
    "FamilyError",
    "NonIntegerResponseWarning",
    "Link",
    "LogitLink",
    "ProbitLink",
    "CloglogLink",
    "CauchitLink",
    "LogLink",
    "IdentityLink",
    "InverseLink",
    "SqrtLink",
    "InverseSquareLink",
    "make_link",
    "FamilyInit",
    "Family",
    "Binomial",
    "Poisson",
    "Gamma",
    "InverseGaussian",
    "Gaussian",
    "get_family",
]

DBL_EPSILON = float(np.finfo(float).eps)  # .Machine$double.eps
DBL_MIN = float(np.finfo(float).tiny)  # .Machine$double.xmin
_INVEPS = 1.0 / DBL_EPSILON
_M_2PI = 6.283185307179586476925286766559
_M_LN_2PI = 1.837877066409345483560659472811
_M_LN_SQRT_2PI = 0.918938533204672741780329736406
_M_1_SQRT_2PI = 0.398942280401432677939946059934


def _f(x: Any) -> np.ndarray:
    """``x`` as a float array (a copy only when needed)."""
    return np.asarray(x, dtype=float)


def _quote_all(names) -> str:
    return ", ".join(repr(n) for n in names)


# ---------------------------------------------------------------------------
# Links (R's make.link)
# ---------------------------------------------------------------------------


class Link(abc.ABC):
    """A link function ``eta = g(mu)``, as R's ``make.link(name)``.

    Attributes
    ----------
    name : str
        R's name of the link (``"logit"``, ``"1/mu^2"``, ...).

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

    @abc.abstractmethod
    def linkfun(self, mu: Any) -> np.ndarray:
        ...

    @abc.abstractmethod
    def linkinv(self, eta: Any) -> np.ndarray:
        ...

    @abc.abstractmethod
    def mu_eta(self, eta: Any) -> np.ndarray:
        ...

    def valideta(self, eta: Any) -> bool:
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
    """

    name = "logit"

    def linkfun(self, mu):
        mu = _f(mu)
        bad = (mu < 0) | (mu > 1)
        if np.any(bad):
            raise FamilyError(f"logit link: value {mu[bad].flat[0]:g} out of range (0, 1)")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(mu / (1 - mu))

    def linkinv(self, eta):
        eta = _f(eta)
        tmp = np.where(
            eta < -30.0, DBL_EPSILON, np.where(eta > 30.0, _INVEPS, np.exp(np.clip(eta, -30.0, 30.0)))
        )
        return tmp / (1 + tmp)

    def mu_eta(self, eta):
        eta = _f(eta)
        e = np.exp(np.clip(eta, -30.0, 30.0))
        opexp = 1 + e
        return np.where((eta > 30.0) | (eta < -30.0), DBL_EPSILON, e / (opexp * opexp))


def _dnorm(x: np.ndarray) -> np.ndarray:
    return _M_1_SQRT_2PI * np.exp(-0.5 * x * x)


class ProbitLink(Link):
    """``qnorm(mu)``; ``linkinv`` clamps ``eta`` to ``±-qnorm(DBL_EPSILON)`` (~8.13).

    scipy's ``ndtr``/``ndtri`` stand for R's ``pnorm``/``qnorm`` (they differ
    in the last digit or two, far below any tolerance of a fit).
    """

    name = "probit"
    thresh: ClassVar[float] = 8.125890664701906  # R's -qnorm(.Machine$double.eps)

    def linkfun(self, mu):
        return special.ndtri(_f(mu))

    def linkinv(self, eta):
        return special.ndtr(np.clip(_f(eta), -self.thresh, self.thresh))

    def mu_eta(self, eta):
        return np.maximum(_dnorm(_f(eta)), DBL_EPSILON)


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
    """``qcauchy(mu)``; ``linkinv`` clamps ``eta`` to ``±-qcauchy(DBL_EPSILON)``."""

    name = "cauchit"
    thresh: ClassVar[float] = 1.0 / math.tan(math.pi * DBL_EPSILON)  # -qcauchy(eps) = 1/tanpi(eps)

    def linkfun(self, mu):
        return _qcauchy(_f(mu))

    def linkinv(self, eta):
        return _pcauchy(np.clip(_f(eta), -self.thresh, self.thresh))

    def mu_eta(self, eta):
        eta = _f(eta)
        return np.maximum(1.0 / (np.pi * (1.0 + eta * eta)), DBL_EPSILON)


class CloglogLink(Link):
    """``log(-log(1 - mu))``; ``linkinv`` kept in [eps, 1 - eps], ``mu_eta`` >= eps."""

    name = "cloglog"

    def linkfun(self, mu):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(-np.log(1 - _f(mu)))

    def linkinv(self, eta):
        with np.errstate(over="ignore"):
            mu = -np.expm1(-np.exp(_f(eta)))
        return np.maximum(np.minimum(mu, 1 - DBL_EPSILON), DBL_EPSILON)

    def mu_eta(self, eta):
        eta = np.minimum(_f(eta), 700.0)
        e = np.exp(eta)
        return np.maximum(e * np.exp(-e), DBL_EPSILON)


class LogLink(Link):
    """``log(mu)``; ``linkinv`` and ``mu_eta`` are ``max(exp(eta), DBL_EPSILON)``."""

    name = "log"

    def linkfun(self, mu):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(_f(mu))

    def linkinv(self, eta):
        with np.errstate(over="ignore"):
            return np.maximum(np.exp(_f(eta)), DBL_EPSILON)

    def mu_eta(self, eta):
        with np.errstate(over="ignore"):
            return np.maximum(np.exp(_f(eta)), DBL_EPSILON)


class IdentityLink(Link):
    """``mu`` itself."""

    name = "identity"

    def linkfun(self, mu):
        return _f(mu).copy()

    def linkinv(self, eta):
        return _f(eta).copy()

    def mu_eta(self, eta):
        return np.ones_like(_f(eta))


class InverseLink(Link):
    """``1/mu``; ``eta`` must be finite and non-zero."""

    name = "inverse"

    def linkfun(self, mu):
        with np.errstate(divide="ignore"):
            return 1 / _f(mu)

    def linkinv(self, eta):
        with np.errstate(divide="ignore"):
            return 1 / _f(eta)

    def mu_eta(self, eta):
        eta = _f(eta)
        with np.errstate(divide="ignore"):
            return -1 / (eta * eta)

    def valideta(self, eta):
        eta = _f(eta)
        return bool(np.all(np.isfinite(eta)) and np.all(eta != 0))


class SqrtLink(Link):
    """``sqrt(mu)``; ``eta`` must be finite and positive."""

    name = "sqrt"

    def linkfun(self, mu):
        with np.errstate(invalid="ignore"):
            return np.sqrt(_f(mu))

    def linkinv(self, eta):
        eta = _f(eta)
        return eta * eta

    def mu_eta(self, eta):
        return 2 * _f(eta)

    def valideta(self, eta):
        eta = _f(eta)
        return bool(np.all(np.isfinite(eta)) and np.all(eta > 0))


class InverseSquareLink(Link):
    """``1/mu^2`` (the inverse Gaussian's canonical link); ``eta`` finite and positive."""

    name = "1/mu^2"

    def linkfun(self, mu):
        mu = _f(mu)
        with np.errstate(divide="ignore"):
            return 1 / (mu * mu)

    def linkinv(self, eta):
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1 / np.sqrt(_f(eta))

    def mu_eta(self, eta):
        with np.errstate(divide="ignore", invalid="ignore"):
            return -1 / (2 * _f(eta) ** 1.5)

    def valideta(self, eta):
        eta = _f(eta)
        return bool(np.all(np.isfinite(eta)) and np.all(eta > 0))


_LINKS: dict[str, type[Link]] = {
    cls.name: cls
    for cls in (
        LogitLink,
        ProbitLink,
        CauchitLink,
        CloglogLink,
        IdentityLink,
        LogLink,
        SqrtLink,
        InverseSquareLink,
        InverseLink,
    )
}


def make_link(link: str | Link) -> Link:
    """The link called ``link`` (R's ``make.link``); a :class:`Link` is returned as is.

    Raises
    ------
    FamilyError
        If the name is not one of R's links.
    """
    if isinstance(link, Link):
        return link
    if isinstance(link, str) and link in _LINKS:
        return _LINKS[link]()
    raise FamilyError(f"link {link!r} not recognised; available links are {_quote_all(_LINKS)}")


# ---------------------------------------------------------------------------
# R's log-densities (nmath: Loader's saddle-point algorithm)
# ---------------------------------------------------------------------------

# stirlerr(n) for n = 0, 0.5, ..., 15 (nmath/stirlerr.c; the n = 0 entry is a placeholder)
_SFERR_HALVES = np.array(
    [
        0.0,
        0.1534264097200273452913848,
        0.0810614667953272582196702,
        0.0548141210519176538961390,
        0.0413406959554092940938221,
        0.03316287351993628748511048,
        0.02767792568499833914878929,
        0.02374616365629749597132920,
        0.02079067210376509311152277,
        0.01848845053267318523077934,
        0.01664469118982119216319487,
        0.01513497322191737887351255,
        0.01387612882307074799874573,
        0.01281046524292022692424986,
        0.01189670994589177009505572,
        0.01110455975820691732662991,
        0.010411265261972096497478567,
        0.009799416126158803298389475,
        0.009255462182712732917728637,
        0.008768700134139385462952823,
        0.008330563433362871256469318,
        0.007934114564314020547248100,
        0.007573675487951840794972024,
        0.007244554301320383179543912,
        0.006942840107209529865664152,
        0.006665247032707682442354394,
        0.006408994188004207068439631,
        0.006171712263039457647532867,
        0.005951370112758847735624416,
        0.005746216513010115682023589,
        0.005554733551962801371038690,
    ]
)


def _stirlerr(n: np.ndarray) -> np.ndarray:
    """``log(n!) - log(sqrt(2 pi n) (n/e)^n)`` as R's nmath ``stirlerr`` (``n >= 0``)."""
    S0, S1, S2, S3, S4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    n = _f(n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        nn = n * n
        big = np.where(
            n > 500,
            (S0 - S1 / nn) / n,
            np.where(
                n > 80,
                (S0 - (S1 - S2 / nn) / nn) / n,
                np.where(
                    n > 35,
                    (S0 - (S1 - (S2 - S3 / nn) / nn) / nn) / n,
                    (S0 - (S1 - (S2 - (S3 - S4 / nn) / nn) / nn) / nn) / n,
                ),
            ),
        )
        twice = n + n
        half_int = (n <= 15) & (twice == np.floor(twice)) & (twice >= 0)
        table = _SFERR_HALVES[np.where(half_int, twice, 0).astype(np.intp)]
        small = special.gammaln(n + 1.0) - (n + 0.5) * np.log(n) + n - _M_LN_SQRT_2PI
    return np.where(n <= 15, np.where(half_int, table, small), big)


def _bd0(x: np.ndarray, np_: np.ndarray) -> np.ndarray:
    """``x log(x/np) + np - x`` without cancellation, as R's nmath ``bd0``."""
    x, np_ = np.broadcast_arrays(_f(x), _f(np_))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.array(x * np.log(x / np_) + np_ - x, dtype=float)
        series = np.abs(x - np_) < 0.1 * (x + np_)
        if np.any(series):
            xs, ms = x[series], np_[series]
            v = (xs - ms) / (xs + ms)
            s = (xs - ms) * v
            ej = np.where(np.abs(s) < DBL_MIN, 0.0, 2 * xs * v)  # R returns s at once there
            v = v * v
            # R stops each element at the first term that leaves s unchanged;
            # the later terms are smaller still (v < 0.01) and leave it
            # unchanged too, so all elements iterate together until none moves
            for j in range(1, 1000):
                ej *= v
                s_new = s + ej / (2 * j + 1)
                if np.array_equal(s_new, s):
                    break
                s = s_new
            out[series] = s
        bad = ~np.isfinite(x) | ~np.isfinite(np_) | (np_ == 0)
    return np.where(bad, np.nan, out)


def _nonint(x: np.ndarray) -> np.ndarray:
    """R's ``R_nonint``: ``x`` is not a whole number up to a relative 1e-7."""
    return np.abs(x - np.rint(x)) > 1e-7 * np.maximum(1.0, np.abs(x))


def _dpois_raw_log(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """R's ``dpois_raw(x, lambda, log = TRUE)`` (``x`` need not be a whole number)."""
    x, lam = np.broadcast_arrays(_f(x), _f(lam))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tiny_lam = -lam + x * np.log(lam) - special.gammaln(x + 1)
        main = -0.5 * np.log(_M_2PI * x) + (-_stirlerr(x) - _bd0(x, lam))
    return np.select(
        [
            np.isnan(x) | np.isnan(lam),
            lam == 0,
            ~np.isfinite(lam),
            x < 0,
            x <= lam * DBL_MIN,
            (lam < x * DBL_MIN) & ~np.isfinite(x),
            lam < x * DBL_MIN,
        ],
        [x + lam, np.where(x == 0, 0.0, -np.inf), -np.inf, -np.inf, -lam, -np.inf, tiny_lam],
        main,
    )


def _dpois_log(x: Any, lam: Any) -> np.ndarray:
    """R's ``dpois(x, lambda, log = TRUE)``: ``-inf`` for a non-integer ``x``."""
    x, lam = np.broadcast_arrays(_f(x), _f(lam))
    with np.errstate(invalid="ignore"):
        raw = _dpois_raw_log(np.rint(x), lam)
        return np.select(
            [np.isnan(x) | np.isnan(lam), lam < 0, _nonint(x), (x < 0) | ~np.isfinite(x)],
            [x + lam, np.nan, -np.inf, -np.inf],
            raw,
        )


def _dbinom_log(x: Any, n: Any, p: Any) -> np.ndarray:
    """R's ``dbinom(x, size = n, prob = p, log = TRUE)`` (Loader's algorithm)."""
    x, n, p = np.broadcast_arrays(_f(x), _f(n), _f(p))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bad_arg = (p < 0) | (p > 1) | (n < 0) | _nonint(n)
        n = np.rint(n)
        xr = np.rint(x)
        q = 1 - p
        lc = _stirlerr(n) - _stirlerr(xr) - _stirlerr(n - xr) - _bd0(xr, n * p) - _bd0(n - xr, n * q)
        lf = _M_LN_2PI + np.log(xr) + np.log1p(-xr / n)
        general = lc - 0.5 * lf
        at_zero = np.where(n == 0, 0.0, np.where(p > q, n * np.log(q), n * np.log1p(-p)))
        at_n = np.where(p > q, n * np.log1p(-q), n * np.log(p))
        return np.select(
            [
                np.isnan(x) | np.isnan(n) | np.isnan(p),
                bad_arg,
                _nonint(x),
                (x < 0) | ~np.isfinite(x),
                p == 0,
                q == 0,
                xr == 0,
                xr == n,
                (xr < 0) | (xr > n),
                ~np.isfinite(n),
            ],
            [
                x + n + p,
                np.nan,
                -np.inf,
                -np.inf,
                np.where(xr == 0, 0.0, -np.inf),
                np.where(xr == n, 0.0, -np.inf),
                at_zero,
                at_n,
                -np.inf,
                -np.inf,
            ],
            general,
        )


def _dgamma_log(x: Any, shape: Any, scale: Any) -> np.ndarray:
    """R's ``dgamma(x, shape, scale = scale, log = TRUE)``."""
    x, shape, scale = np.broadcast_arrays(_f(x), _f(shape), _f(scale))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xs = x / scale
        ratio = shape / x
        log_ratio = np.where(np.isfinite(ratio), np.log(ratio), np.log(shape) - np.log(x))
        below_one = _dpois_raw_log(shape, xs) + log_ratio
        above_one = _dpois_raw_log(shape - 1, xs) - np.log(scale)
        at_zero = np.where(shape < 1, np.inf, np.where(shape > 1, -np.inf, -np.log(scale)))
        return np.select(
            [
                np.isnan(x) | np.isnan(shape) | np.isnan(scale),
                (shape < 0) | (scale <= 0),
                x < 0,
                shape == 0,
                x == 0,
                shape < 1,
            ],
            [x + shape + scale, np.nan, -np.inf, np.where(x == 0, np.inf, -np.inf), at_zero, below_one],
            above_one,
        )


# ---------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------


class FamilyInit(NamedTuple):
    """What R's ``family$initialize`` leaves behind.

    Attributes
    ----------
    y : numpy.ndarray
        The response as the fit uses it (binomial: proportions, ``0`` where the weight is 0).
    n : numpy.ndarray
        R's ``n``: the binomial number of trials of a two-column response, else ones.
    weights : numpy.ndarray
        Prior weights (binomial two-column response: times the number of trials).
    mustart : numpy.ndarray
        Starting values of ``mu``.
    """

    y: np.ndarray
    n: np.ndarray
    weights: np.ndarray
    mustart: np.ndarray


def _weights_like(y: np.ndarray, weights: Any) -> np.ndarray:
    if weights is None:
        return np.ones_like(y)
    w = _f(weights)
    if w.ndim == 0:
        return np.full_like(y, float(w))
    if w.shape != y.shape:
        raise FamilyError(f"prior weights have shape {w.shape} but the response has shape {y.shape}")
    return w


def _example(values: np.ndarray) -> str:
    """``"3 values, e.g. -1"`` for an error message."""
    k = values.size
    return f"{k} value{'s' if k != 1 else ''}, e.g. {values.flat[0]:g}"


class Family(abc.ABC):
    """An exponential family with a link, as R's ``family`` objects.

    Parameters
    ----------
    link : str or Link, optional
        One of the family's :attr:`links` (R's names); the default is
        :attr:`default_link`.

    Attributes
    ----------
    name : str
        R's ``family$family``: ``"binomial"``, ``"poisson"``, ``"Gamma"``,
        ``"inverse.gaussian"`` or ``"gaussian"``.
    link : Link
        The link; its R name is ``link.name``.
    links : tuple of str
        The links R's family accepts by name (its ``okLinks``).
    default_link : str
        R's default link.
    dispersion_is_fixed : bool
        True where the dispersion is 1 (binomial, Poisson), False where it is
        estimated.

    Raises
    ------
    FamilyError
        If ``link`` is not one of :attr:`links`.
    """

    name: ClassVar[str] = ""
    links: ClassVar[tuple[str, ...]] = ()
    default_link: ClassVar[str] = ""
    dispersion_is_fixed: ClassVar[bool] = False

    def __init__(self, link: str | Link | None = None):
        if link is None:
            link = self.default_link
        link_name = link.name if isinstance(link, Link) else link
        if not isinstance(link_name, str) or link_name not in self.links:
            raise FamilyError(
                f"link {link_name!r} is not available for the {self.name} family; "
                f"available links are {_quote_all(self.links)}"
            )
        self.link: Link = make_link(link)

    # -- the link, delegated -------------------------------------------------

    def linkfun(self, mu: Any) -> np.ndarray:
        """``eta = g(mu)``."""
        return self.link.linkfun(mu)

    def linkinv(self, eta: Any) -> np.ndarray:
        """``mu = g^{-1}(eta)``."""
        return self.link.linkinv(eta)

    def mu_eta(self, eta: Any) -> np.ndarray:
        """``d mu / d eta``."""
        return self.link.mu_eta(eta)

    def valideta(self, eta: Any) -> bool:
        """Whether ``eta`` is valid for the link (R's ``family$valideta``)."""
        return self.link.valideta(eta)

    # -- the family ------------------------------------------------------------

    @abc.abstractmethod
    def variance(self, mu: Any) -> np.ndarray:
        """The variance function ``V(mu)``."""
        ...

    def valid_mu(self, mu: Any) -> bool:
        """Whether ``mu`` is valid for the family (R's ``family$validmu``)."""
        return True

    @abc.abstractmethod
    def dev_resids(self, y: Any, mu: Any, wt: Any = None) -> np.ndarray:
        """R's ``family$dev.resids``: prior weights times the unit deviances.

        Parameters
        ----------
        y, mu : array-like
            Response and mean.
        wt : array-like, optional
            Prior weights (default 1).

        Returns
        -------
        numpy.ndarray
            The squared deviance residuals; their sum is the deviance.
        """
        ...

    def deviance(self, y: Any, mu: Any, wt: Any = None) -> float:
        """``sum(dev_resids(y, mu, wt))``."""
        return float(np.sum(self.dev_resids(y, mu, wt)))

    @abc.abstractmethod
    def aic(self, y: Any, n: Any, mu: Any, wt: Any, dev: float) -> float:
        """R's ``family$aic``: ``-2 log-likelihood`` (+2 for an estimated dispersion).

        Parameters
        ----------
        y, mu : array-like
            Response and mean.
        n : array-like or None
            R's ``n`` from the initialization (binomial trials; else ones).
            None means ones.
        wt : array-like or None
            Prior weights (None: ones).
        dev : float
            The deviance, ``sum(dev_resids(y, mu, wt))``; used by the families
            with an estimated dispersion.

        Returns
        -------
        float
            ``-2 log L`` at the maximum-likelihood dispersion ``dev / sum(wt)``
            (Gaussian: ``dev / nobs``), plus 2 for that dispersion where R adds
            it. R's ``glm`` adds ``2 * rank`` to get the AIC.
        """
        ...

    def mustart(self, y: Any, wt: Any = None) -> np.ndarray:
        """Starting values of ``mu``, as R's ``family$initialize``."""
        return _f(y).copy()

    def validate_response(self, y: Any, weights: Any = None, column_name: str = "y") -> None:
        """Check the response as R's ``family$initialize`` does.

        Parameters
        ----------
        y : array-like
            The response.
        weights : array-like, optional
            Prior weights.
        column_name : str
            Name of the response, for the messages.

        Raises
        ------
        FamilyError
            If a value is outside the family's support (or non-finite), or the
            weights are negative or non-finite.

        Warns
        -----
        NonIntegerResponseWarning
            Non-integer counts (Poisson) or numbers of successes (binomial).
        """
        y = _f(y)
        w = _weights_like(y, weights)
        bad_w = ~np.isfinite(w) | (w < 0)
        if np.any(bad_w):
            raise FamilyError(
                f"prior weights for response {column_name!r} must be finite and non-negative; "
                f"{_example(w[bad_w])}"
            )
        self._check_response(y, w, column_name)

    def _check_response(self, y: np.ndarray, w: np.ndarray, column_name: str) -> None:
        bad = ~np.isfinite(y)
        if np.any(bad):
            raise FamilyError(
                f"the {self.name} family needs a finite response; {column_name!r} has {_example(y[bad])}"
            )

    def initialize(self, y: Any, weights: Any = None, column_name: str = "y") -> FamilyInit:
        """R's ``family$initialize`` for a vector response: validate, then start.

        Returns
        -------
        FamilyInit
            ``(y, n, weights, mustart)`` with ``n`` all ones.
        """
        self.validate_response(y, weights, column_name)
        y = _f(y).copy()
        w = _weights_like(y, weights).copy()
        return FamilyInit(y, np.ones_like(y), w, self.mustart(y, w))

    # -- dunder --------------------------------------------------------------

    def __repr__(self) -> str:
        return f"{type(self).__name__}(link={self.link.name!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.link == self.link  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.link.name))


def _y_log_y(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``y log(y/mu)``, 0 at ``y = 0`` (R's ``y_log_y`` in ``family.c``)."""
    return np.where(y != 0, y * np.log(y / mu), 0.0)


class Binomial(Family):
    """R's ``binomial(link = "logit")``: ``y`` a proportion, the weights the trials.

    A 0/1 response has weights 1; a proportion of successes out of ``m``
    trials has weight ``m`` (see :meth:`initialize_counts` for R's
    ``cbind(successes, failures)``).
    """

    name = "binomial"
    links = ("logit", "probit", "cloglog", "cauchit", "log")
    default_link = "logit"
    dispersion_is_fixed = True

    def variance(self, mu):
        mu = _f(mu)
        return mu * (1 - mu)

    def valid_mu(self, mu):
        mu = _f(mu)
        return bool(np.all(np.isfinite(mu)) and np.all((mu > 0) & (mu < 1)))

    def dev_resids(self, y, mu, wt=None):
        y, mu = _f(y), _f(mu)
        wt = 1.0 if wt is None else _f(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * wt * (_y_log_y(y, mu) + _y_log_y(1 - y, 1 - mu))

    def aic(self, y, n, mu, wt, dev):
        y, mu = _f(y), _f(mu)
        n = np.ones_like(y) if n is None else _f(n)
        wt = np.ones_like(y) if wt is None else _f(wt)
        m = n if np.any(n > 1) else wt
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(m > 0, wt / m, 0.0)
            return float(-2 * np.sum(share * _dbinom_log(np.rint(m * y), np.rint(m), mu)))

    def mustart(self, y, wt=None):
        y = _f(y)
        wt = np.ones_like(y) if wt is None else _f(wt)
        return (wt * y + 0.5) / (wt + 1)

    def _check_response(self, y, w, column_name):
        y = np.where(w == 0, 0.0, y)  # R: y[weights == 0] <- 0
        bad = ~((y >= 0) & (y <= 1))
        if np.any(bad):
            raise FamilyError(
                f"the binomial family needs response {column_name!r} in [0, 1] (0/1 outcomes, "
                f"or proportions of successes with the numbers of trials as weights); "
                f"{_example(y[bad])}"
            )
        m = w * y
        nonint = np.abs(m - np.rint(m)) > 0.001
        if np.any(nonint):
            i = int(np.flatnonzero(nonint.ravel())[0])
            warnings.warn(
                f"non-integer #successes in a binomial glm: response {column_name!r} times the "
                f"weights is not a whole number at {int(nonint.sum())} observation(s), "
                f"e.g. {y.flat[i]:g} * {w.flat[i]:g} = {m.flat[i]:g}",
                NonIntegerResponseWarning,
                stacklevel=3,
            )

    def initialize(self, y, weights=None, column_name="y"):
        """R's ``binomInitialize`` for a vector response (0/1 or proportions).

        Returns
        -------
        FamilyInit
            ``y`` with 0 where the weight is 0, ``n`` ones, the weights, and
            ``mustart = (weights * y + 0.5) / (weights + 1)``.
        """
        self.validate_response(y, weights, column_name)
        y = _f(y)
        w = _weights_like(y, weights).copy()
        y = np.where(w == 0, 0.0, y)
        return FamilyInit(y, np.ones_like(y), w, self.mustart(y, w))

    def initialize_counts(
        self,
        successes: Any,
        failures: Any,
        weights: Any = None,
        column_name: str = "cbind(successes, failures)",
    ) -> FamilyInit:
        """R's ``binomInitialize`` for a two-column ``cbind(successes, failures)`` response.

        Parameters
        ----------
        successes, failures : array-like
            Counts per observation.
        weights : array-like, optional
            Prior weights (default 1); multiplied by the numbers of trials.
        column_name : str
            Name of the response, for the messages.

        Returns
        -------
        FamilyInit
            ``y = successes / n`` (0 where ``n = 0``), ``n = successes + failures``,
            ``weights * n`` and ``mustart = (n * y + 0.5) / (n + 1)``.

        Raises
        ------
        FamilyError
            Negative or non-finite counts (R does not check these), bad weights.

        Warns
        -----
        NonIntegerResponseWarning
            Non-integer counts (R's "non-integer counts in a binomial glm!").
        """
        s, f = np.broadcast_arrays(_f(successes), _f(failures))
        counts = np.concatenate([s.ravel(), f.ravel()])
        bad = ~np.isfinite(counts) | (counts < 0)
        if np.any(bad):
            raise FamilyError(
                f"the binomial family needs non-negative finite counts in {column_name!r}; "
                f"{_example(counts[bad])}"
            )
        nonint = np.abs(counts - np.rint(counts)) > 0.001
        if np.any(nonint):
            warnings.warn(
                f"non-integer counts in a binomial glm: {column_name!r} has {_example(counts[nonint])}",
                NonIntegerResponseWarning,
                stacklevel=2,
            )
        n = s + f
        w = _weights_like(n, weights)
        bad_w = ~np.isfinite(w) | (w < 0)
        if np.any(bad_w):
            raise FamilyError(
                f"prior weights for response {column_name!r} must be finite and non-negative; "
                f"{_example(w[bad_w])}"
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(n == 0, 0.0, s / n)
        return FamilyInit(y, n, w * n, (n * y + 0.5) / (n + 1))


class Poisson(Family):
    """R's ``poisson(link = "log")``."""

    name = "poisson"
    links = ("log", "identity", "sqrt")
    default_link = "log"
    dispersion_is_fixed = True

    def variance(self, mu):
        return _f(mu).copy()

    def valid_mu(self, mu):
        mu = _f(mu)
        return bool(np.all(np.isfinite(mu)) and np.all(mu > 0))

    def dev_resids(self, y, mu, wt=None):
        y, mu = _f(y), _f(mu)
        wt = 1.0 if wt is None else _f(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(y > 0, wt * (y * np.log(y / mu) - (y - mu)), mu * wt)
        return 2 * r

    def aic(self, y, n, mu, wt, dev):
        y = _f(y)
        wt = np.ones_like(y) if wt is None else _f(wt)
        with np.errstate(invalid="ignore"):
            return float(-2 * np.sum(_dpois_log(y, mu) * wt))

    def mustart(self, y, wt=None):
        return _f(y) + 0.1

    def _check_response(self, y, w, column_name):
        super()._check_response(y, w, column_name)
        neg = y < 0
        if np.any(neg):
            raise FamilyError(
                f"negative values not allowed for the Poisson family: response {column_name!r} has "
                f"{_example(y[neg])}"
            )
        nonint = _nonint(y)
        if np.any(nonint):
            warnings.warn(
                f"non-integer counts in response {column_name!r} for the Poisson family "
                f"({_example(y[nonint])}); R's dpois() gives them zero probability, so the "
                f"log-likelihood is -Inf",
                NonIntegerResponseWarning,
                stacklevel=3,
            )


class Gamma(Family):
    """R's ``Gamma(link = "inverse")``; the dispersion is estimated."""

    name = "Gamma"
    links = ("inverse", "log", "identity")
    default_link = "inverse"
    dispersion_is_fixed = False

    def variance(self, mu):
        mu = _f(mu)
        return mu * mu

    def valid_mu(self, mu):
        mu = _f(mu)
        return bool(np.all(np.isfinite(mu)) and np.all(mu > 0))

    def dev_resids(self, y, mu, wt=None):
        y, mu = _f(y), _f(mu)
        wt = 1.0 if wt is None else _f(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -2 * wt * (np.log(np.where(y == 0, 1.0, y / mu)) - (y - mu) / mu)

    def aic(self, y, n, mu, wt, dev):
        y, mu = _f(y), _f(mu)
        wt = np.ones_like(y) if wt is None else _f(wt)
        disp = dev / np.sum(wt)
        with np.errstate(invalid="ignore"):
            return float(-2 * np.sum(_dgamma_log(y, 1 / disp, mu * disp) * wt) + 2)

    def _check_response(self, y, w, column_name):
        super()._check_response(y, w, column_name)
        _require_positive(y, f"non-positive values not allowed for the Gamma family: response {column_name!r}")


def _require_positive(y: np.ndarray, message: str) -> None:
    """FamilyError(``message`` + " has <examples>") if any y <= 0 (R's messages)."""
    bad = y <= 0
    if np.any(bad):
        raise FamilyError(f"{message} has {_example(y[bad])}")


class InverseGaussian(Family):
    """R's ``inverse.gaussian(link = "1/mu^2")``; the dispersion is estimated."""

    name = "inverse.gaussian"
    links = ("inverse", "log", "identity", "1/mu^2")
    default_link = "1/mu^2"
    dispersion_is_fixed = False

    def variance(self, mu):
        mu = _f(mu)
        return mu**3

    def dev_resids(self, y, mu, wt=None):
        y, mu = _f(y), _f(mu)
        wt = 1.0 if wt is None else _f(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return wt * ((y - mu) ** 2) / (y * mu**2)

    def aic(self, y, n, mu, wt, dev):
        y = _f(y)
        wt = np.ones_like(y) if wt is None else _f(wt)
        sw = np.sum(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(sw * (1 + np.log(dev / sw * 2 * np.pi)) + 3 * np.sum(np.log(y) * wt) + 2)

    def _check_response(self, y, w, column_name):
        super()._check_response(y, w, column_name)
        _require_positive(
            y, f"positive values only are allowed for the inverse.gaussian family: response {column_name!r}"
        )


class Gaussian(Family):
    """R's ``gaussian(link = "identity")``; the dispersion is estimated."""

    name = "gaussian"
    links = ("inverse", "log", "identity")
    default_link = "identity"
    dispersion_is_fixed = False

    def variance(self, mu):
        return np.ones_like(_f(mu))

    def dev_resids(self, y, mu, wt=None):
        y, mu = _f(y), _f(mu)
        wt = 1.0 if wt is None else _f(wt)
        return wt * ((y - mu) ** 2)

    def aic(self, y, n, mu, wt, dev):
        y = _f(y)
        wt = np.ones_like(y) if wt is None else _f(wt)
        nobs = y.size
        with np.errstate(divide="ignore"):
            return float(nobs * (np.log(dev / nobs * 2 * np.pi) + 1) + 2 - np.sum(np.log(wt)))

    def mustart(self, y, wt=None):
        """``y``; as R, a log link needs ``y > 0`` and an inverse link ``y != 0``."""
        y = _f(y)
        if (self.link.name == "inverse" and np.any(y == 0)) or (self.link.name == "log" and np.any(y <= 0)):
            raise FamilyError(
                f"cannot find valid starting values for the gaussian family with the "
                f"{self.link.name} link: the response has values outside the link's domain"
            )
        return y.copy()


_FAMILIES: dict[str, type[Family]] = {
    "binomial": Binomial,
    "poisson": Poisson,
    "gamma": Gamma,
    "inverse_gaussian": InverseGaussian,
    "gaussian": Gaussian,
}


def get_family(family: str | Family | type[Family], link: str | Link | None = None) -> Family:
    """The family object for ``family``, with ``link`` overriding its link.

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
    choices = ("binomial", "poisson", "Gamma", "inverse.gaussian", "gaussian")
    if isinstance(family, str):
        call = _R_FAMILY_CALL.match(family)
        if call is not None:  # R's spelling: "binomial(link = 'probit')"
            return get_family(call["name"], _link_of_call(family, call["link"], link))
        key = family.strip().lower().replace(".", "_").replace("-", "_")
        if key in _FAMILIES:
            return _FAMILIES[key](link)
        if key in _UNAVAILABLE_FAMILIES:
            raise FamilyError(f"family {family!r}: {_UNAVAILABLE_FAMILIES[key]}")
        close = difflib.get_close_matches(family, choices, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FamilyError(f"unknown family {family!r}{hint}; choose one of {_quote_all(choices)}")
    foreign = type(family).__name__.lower()
    hint = (
        f" (a {type(family).__name__} of another package: pass its name, e.g. "
        f"family={foreign!r} with link=..., or mixedmodels.families.{_FAMILIES[foreign].__name__}())"
        if foreign in _FAMILIES else ""
    )
    raise FamilyError(
        f"family must be a name or a Family object, not {type(family).__name__}{hint}; "
        f"choose one of {_quote_all(choices)}"
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
    """The link of a family written as an R call, checked against ``link=``."""
    in_call = in_call.strip()
    if not in_call:
        return link
    if link is not None and str(getattr(link, "name", link)) != in_call:
        raise FamilyError(
            f"family {text!r} names the link {in_call!r} but link={link!r} was given too"
        )
    return in_call
