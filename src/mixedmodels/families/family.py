"""The family interface.

What a GLM family is (R's ``family`` object) and what the GLMM engine asks of
it.

A new family is a subclass of :class:`Family`: R's functions (``variance``,
``dev_resids``, ``aic``, ``mustart``, the response checks) and the answers
the engine reads instead of comparing names (``dispersion_is_fixed``,
``counts_trials``, ``kernel_code``, :meth:`Family.deviance_at`,
:meth:`Family.saturated_aic`, :meth:`Family.simulate`). Defining the class
registers it by name for :func:`mixedmodels.families.get_family`.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np

from mixedmodels.exceptions import FamilyError
from mixedmodels.families.links import Link, make_link
from mixedmodels.families.numeric import as_float, quoted

__all__ = [
    "FAMILIES",
    "Family",
    "FamilyInit",
    "SplitDeviance",
    "checked_weights",
    "describe_values",
    "family_key",
    "require_positive",
    "weights_like",
]

# every family by its key (family_key of its R name): a subclass of Family
# with a name enters it when it is defined
FAMILIES: dict[str, type["Family"]] = {}


def family_key(name: str) -> str:
    """Return a family name as looked up: lower case, ``.`` and ``-`` as ``_``.

    For example ``"Gamma"`` -> ``"gamma"``, ``"inverse.gaussian"`` ->
    ``"inverse_gaussian"``.
    """
    return name.strip().lower().replace(".", "_").replace("-", "_")


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


class SplitDeviance(NamedTuple):
    """The deviance of one response (and prior weights) as a function of μ.

    Called with μ it returns ``constant + varying(mu)``, the μ-free part
    computed once.

    Attributes
    ----------
    constant : float
        The part that does not depend on μ (0 where the family does not split).
    varying : callable
        μ -> the rest of the deviance.
    """

    constant: float
    varying: Callable[[np.ndarray], float]

    def __call__(self, mu: np.ndarray) -> float:
        """Return the deviance at ``mu``."""
        return self.constant + self.varying(mu)


def weights_like(y: np.ndarray, weights: Any) -> np.ndarray:
    """Return prior ``weights`` as an array shaped as ``y`` (ones for None)."""
    if weights is None:
        return np.ones_like(y)
    w = as_float(weights)
    if w.ndim == 0:
        return np.full_like(y, float(w))
    if w.shape != y.shape:
        raise FamilyError(f"prior weights have shape {w.shape} but the response has shape {y.shape}")
    return w


def checked_weights(y: np.ndarray, weights: Any, column_name: str) -> np.ndarray:
    """Return :func:`weights_like`; raise a FamilyError for negative or non-finite weights."""
    w = weights_like(y, weights)
    bad = ~np.isfinite(w) | (w < 0)
    if np.any(bad):
        raise FamilyError(
            f"prior weights for response {column_name!r} must be finite and non-negative; "
            f"{describe_values(w[bad])}"
        )
    return w


def describe_values(values: np.ndarray) -> str:
    """Return ``"3 values, e.g. -1"`` for an error message."""
    k = values.size
    return f"{k} value{'s' if k != 1 else ''}, e.g. {values.flat[0]:g}"


def require_positive(y: np.ndarray, message: str) -> None:
    """Raise FamilyError(``message`` + " has <examples>") if any y <= 0 (R's messages)."""
    bad = y <= 0
    if np.any(bad):
        raise FamilyError(f"{message} has {describe_values(y[bad])}")


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
    counts_trials : bool
        True where the response is a proportion of trials (binomial): a
        two-column ``cbind(successes, failures)`` response is allowed, the
        prior weights are the numbers of trials, and the data can be
        separated.
    constant_variance : bool
        True where ``V(mu) = 1`` (Gaussian): the residual variance is
        additive, not a function of the mean.
    kernel_code : int or None
        The number by which the compiled GLMM steps
        (:mod:`mixedmodels.linalg.kernels.glmm_numba`) know the variance
        function, or None where they do not implement it (numpy path).
    is_linear : bool
        Whether a GLMM of this family and link is the linear mixed model
        (Gaussian family, identity link).

    Raises
    ------
    FamilyError
        If ``link`` is not one of :attr:`links`.
    """

    name: ClassVar[str] = ""
    links: ClassVar[tuple[str, ...]] = ()
    default_link: ClassVar[str] = ""
    dispersion_is_fixed: ClassVar[bool] = False
    counts_trials: ClassVar[bool] = False
    constant_variance: ClassVar[bool] = False
    kernel_code: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):  # a subclass that keeps its parent's name does not replace it
            FAMILIES[family_key(cls.name)] = cls

    def __init__(self, link: str | Link | None = None):
        if link is None:
            link = self.default_link
        link_name = link.name if isinstance(link, Link) else link
        if not isinstance(link_name, str) or link_name not in self.links:
            raise FamilyError(
                f"link {link_name!r} is not available for the {self.name} family; "
                f"available links are {quoted(self.links)}"
            )
        self.link: Link = make_link(link)

    # -- the link, delegated -------------------------------------------------

    def linkfun(self, mu: Any) -> np.ndarray:
        """Return ``eta = g(mu)``, the link's :meth:`Link.linkfun`."""
        return self.link.linkfun(mu)

    def linkinv(self, eta: Any) -> np.ndarray:
        """Return ``mu = g^{-1}(eta)``, the link's :meth:`Link.linkinv`."""
        return self.link.linkinv(eta)

    def mu_eta(self, eta: Any) -> np.ndarray:
        """Return ``d mu / d eta``, the link's :meth:`Link.mu_eta`."""
        return self.link.mu_eta(eta)

    def valideta(self, eta: Any) -> bool:
        """Return whether ``eta`` is valid for the link (R's ``family$valideta``)."""
        return self.link.valideta(eta)

    # -- the family ------------------------------------------------------------

    @abc.abstractmethod
    def variance(self, mu: Any) -> np.ndarray:
        """Return the variance function ``V(mu)``."""
        ...

    def valid_mu(self, mu: Any) -> bool:
        """Return whether ``mu`` is valid for the family (R's ``family$validmu``); always here."""
        return True

    @abc.abstractmethod
    def dev_resids(self, y: Any, mu: Any, wt: Any = None) -> np.ndarray:
        """Return R's ``family$dev.resids``: prior weights times the unit deviances.

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
        """Return the deviance, ``sum(dev_resids(y, mu, wt))``."""
        return float(np.sum(self.dev_resids(y, mu, wt)))

    @abc.abstractmethod
    def aic(self, y: Any, n: Any, mu: Any, wt: Any, dev: float) -> float:
        """Return R's ``family$aic``: ``-2 log-likelihood`` (+2 for an estimated dispersion).

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
        """Return starting values of ``mu``, as R's ``family$initialize``: ``y`` itself here."""
        return as_float(y).copy()

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
        y = as_float(y)
        w = checked_weights(y, weights, column_name)
        self._check_response(y, w, column_name)

    def _check_response(self, y: np.ndarray, w: np.ndarray, column_name: str) -> None:
        bad = ~np.isfinite(y)
        if np.any(bad):
            raise FamilyError(
                f"the {self.name} family needs a finite response; {column_name!r} has {describe_values(y[bad])}"
            )

    def initialize(self, y: Any, weights: Any = None, column_name: str = "y") -> FamilyInit:
        """Validate a vector response and start the fit, as R's ``family$initialize``.

        Returns
        -------
        FamilyInit
            ``(y, n, weights, mustart)`` with ``n`` all ones.
        """
        self.validate_response(y, weights, column_name)
        y = as_float(y).copy()
        w = weights_like(y, weights).copy()
        return FamilyInit(y, np.ones_like(y), w, self.mustart(y, w))

    # -- what the GLMM engine asks ---------------------------------------------

    @property
    def is_linear(self) -> bool:
        """Whether a GLMM of this family and link is the linear mixed model.

        That is the Gaussian family with the identity link; glmer hands it to
        lmer, as lme4 does. False here.
        """
        return False

    def response_for_fit(self, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Return the (validated) response as the fit uses it: ``y`` itself here.

        The binomial family sets 0 where the weight is 0, as R's ``initialize``.
        """
        return y

    def deviance_at(self, y: np.ndarray, wt: np.ndarray) -> SplitDeviance:
        """Return the deviance of response ``y`` with prior weights ``wt`` as a function of μ.

        Here it is the sum of :meth:`dev_resids`, nothing computed ahead
        (binomial and Poisson split off the μ-free part).
        """
        return SplitDeviance(0.0, lambda mu: float(np.sum(self.dev_resids(y, mu, wt))))

    def saturated_aic(self, y: np.ndarray, n: np.ndarray, wt: np.ndarray) -> float | None:
        """Return ``aic - deviance`` where it is the same at every μ, else None.

        For a family with a fixed dispersion it is -2 × the saturated
        log-likelihood: R's value (its densities) at :meth:`reference_mu`, or
        :meth:`continuous_saturated_aic` where that is not finite. None for
        families with an estimated dispersion (it depends on μ there).
        """
        if not self.dispersion_is_fixed:
            return None
        mu = self.reference_mu(y, wt)
        dev = float(np.sum(self.dev_resids(y, mu, wt)))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(self.aic(y, n, mu, wt, dev)) - dev
        if np.isfinite(value):
            return value
        return self.continuous_saturated_aic(y, n, wt)

    def reference_mu(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """Return a μ inside the family's support for :meth:`saturated_aic`.

        :meth:`saturated_aic` takes ``aic - deviance`` there; it is
        :meth:`mustart` here.
        """
        return self.mustart(y, wt)

    def continuous_saturated_aic(self, y: np.ndarray, n: np.ndarray, wt: np.ndarray) -> float | None:
        """Return :meth:`saturated_aic` where R's densities are zero (non-whole counts).

        That is the continuous extension with log Γ in place of factorials, so
        that the likelihood stays finite. None here: the engine then takes
        ``aic`` at every μ.
        """
        return None

    def simulate(
        self, mu: np.ndarray, weights: np.ndarray, dispersion: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Draw responses from the family with means ``mu``.

        Parameters
        ----------
        mu : numpy.ndarray
            The means.
        weights : numpy.ndarray
            Prior weights (binomial: the numbers of trials).
        dispersion : float
            φ (lme4's ``sigma`` squared; 1 where it is fixed), divided by the
            prior weights per observation.
        rng : numpy.random.Generator
            The random number generator.

        Returns
        -------
        numpy.ndarray
            One response per mean, on the scale the fit uses (binomial:
            proportions of the trials).
        """
        raise FamilyError(f"simulating responses is not available for the {self.name} family")

    # -- dunder --------------------------------------------------------------

    def __repr__(self) -> str:
        return f"{type(self).__name__}(link={self.link.name!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.link == self.link  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.link.name))
