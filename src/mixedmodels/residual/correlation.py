"""nlme's serial residual correlation structures and their common interface.

Within a group i of n_i observations the residuals have correlation R_i;
the lme/gls engine whitens them with the lower Cholesky factor of R_i
(:meth:`CorrelationStructure.factor`) and adds its log-determinant
(:meth:`CorrelationStructure.log_det`) to the objective.

Parameters travel in nlme's unconstrained scale (``coef(cs,
unconstrained = TRUE)``), so optimisers search them without bounds;
:meth:`CorrelationStructure.natural` maps them to nlme's natural scale
(``coef(cs, unconstrained = FALSE)``: Phi, Theta, Rho, range, nugget).

Some parametrisations depend on the data (corCompSymm's lower bound
-1/(max group size - 1), corSymm's number of distinct positions, the
spatial structures' minimum distance): as nlme's ``Initialize``,
:meth:`CorrelationStructure.initialize` reads every group's positions once
and checks them before the structure is used.

Positions of one group are what the structure measures correlation on:
0-based integer order indices (``~ 1 | g``) or integer times (``~ t | g``)
for corCompSymm, corAR1, corARMA; 0-based indices into the general matrix
for corSymm; real times for corCAR1; coordinates (n x d) for the spatial
structures of :mod:`mixedmodels.residual.spatial`. A stack of groups of
equal size (one more leading axis) gives stacked matrices and factors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
from scipy.special import expit, logit

from mixedmodels.exceptions import DataError, ModelSpecError

__all__ = [
    "CorrelationStructure",
    "arma_autocorrelation",
    "corAR1",
    "corARMA",
    "corCAR1",
    "corCompSymm",
    "corSymm",
    "parse_correlation_form",
]


def parse_correlation_form(form: str) -> tuple[list[str], str | None]:
    """Split nlme's one-sided ``form`` into covariate names and grouping.

    ``"~ 1 | Subject"`` gives ``([], "Subject")``, ``"~ x + y"`` gives
    ``(["x", "y"], None)``.

    Raises
    ------
    ModelSpecError
        If ``form`` does not start with ``~``.
    """
    text = form.strip()
    if not text.startswith("~"):
        raise ModelSpecError(f"correlation form {form!r} must be one-sided, starting with '~' (as '~ 1 | Subject')")
    covariates, _, group = text[1:].partition("|")
    names = [name.strip() for name in covariates.split("+") if name.strip() not in ("", "1")]
    return names, (group.strip() or None)


def _as_value(value: float | Sequence[float] | None) -> np.ndarray | None:
    """Return ``value=`` as a 1-D float array, None when not given (nlme's numeric(0))."""
    if value is None:
        return None
    array = np.atleast_1d(np.asarray(value, dtype=float))
    return array if array.size else None


class CorrelationStructure(ABC):
    """The within-group correlation R_i of the residuals (nlme's ``corStruct``).

    Parameters
    ----------
    value : float or sequence of float, optional
        The starting (or, with ``fixed=True``, the fixed) parameters in
        nlme's natural scale; None for nlme's default.
    form : str
        nlme's one-sided formula: ``"~ 1 | Subject"``, ``"~ Time | Subject"``,
        ``"~ x + y"``.
    fixed : bool
        Whether the parameters stay at ``value`` during the fit.

    Attributes
    ----------
    form : str
        The formula text.
    covariates : list of str
        The covariate names of ``form`` (empty for ``~ 1``).
    group : str or None
        The grouping name of ``form``.
    fixed : bool
        Whether the parameters are fixed.
    """

    #: dimensions of one group's positions (a stack of groups has one more)
    position_ndim = 1

    def __init__(self, value: float | Sequence[float] | None = None, form: str = "~ 1", fixed: bool = False):
        self.form = form
        self.covariates, self.group = parse_correlation_form(form)
        self.fixed = bool(fixed)
        self.value = _as_value(value)
        self.initialized = False

    # --- what every structure says -------------------------------------------------

    @property
    @abstractmethod
    def n_params(self) -> int:
        """The number of parameters."""

    @property
    @abstractmethod
    def param_names(self) -> list[str]:
        """The parameters' names, nlme's (natural scale)."""

    @abstractmethod
    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Map natural-scale parameters to nlme's unconstrained scale."""

    @abstractmethod
    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Map nlme's unconstrained parameters to the natural scale."""

    @abstractmethod
    def default_value(self) -> np.ndarray:
        """Return nlme's default start in natural scale (after :meth:`initialize`)."""

    @abstractmethod
    def matrix(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Return R_i for one group's (or a stack of groups') positions.

        Parameters
        ----------
        params : ndarray
            The parameters in unconstrained scale.
        positions : ndarray
            One group's positions, or a stack of equal-size groups.

        Returns
        -------
        ndarray
            (n, n), or (m, n, n) for a stack of m groups.
        """

    # --- data-dependent set-up ----------------------------------------------------

    def initialize(self, positions: Sequence[np.ndarray]) -> CorrelationStructure:
        """Read every group's positions, check them and the start (nlme's ``Initialize``).

        Parameters
        ----------
        positions : sequence of ndarray
            One entry per group.

        Returns
        -------
        CorrelationStructure
            self, ready to use.
        """
        groups = [np.asarray(p, dtype=float) for p in positions]
        if not groups:
            raise DataError(f"{type(self).__name__}: no groups to initialize the structure on")
        self._read_groups(groups)
        self.initialized = True
        self.unconstrained(self.start_natural())  # checks value= against the parameter space
        return self

    def _read_groups(self, groups: list[np.ndarray]) -> None:
        """Record what the parametrisation needs from the data and check the positions."""

    def _require_initialized(self) -> None:
        if not self.initialized:
            raise ModelSpecError(
                f"{type(self).__name__} depends on the data: call initialize(positions) before using it"
            )

    def start_natural(self) -> np.ndarray:
        """Return the start in natural scale: ``value=`` if given, else nlme's default."""
        if self.value is None:
            return self.default_value()
        if self.value.size != self.n_params:
            raise ModelSpecError(
                f"initial value for {type(self).__name__} parameters of wrong dimension: "
                f"{self.value.size} given, {self.n_params} expected"
            )
        return self.value.copy()

    def start(self) -> np.ndarray:
        """Return the start in unconstrained scale (nlme's coef after ``Initialize``)."""
        return self.unconstrained(self.start_natural())

    # --- the factor the engine whitens with -----------------------------------------

    def factor(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Return the lower Cholesky factor L of R_i (R_i = L Lᵀ), stacked as :meth:`matrix`.

        Raises
        ------
        DataError
            If R_i is not positive definite (possible for the spatial
            structures whose shape is not a valid correlation for every
            metric and dimension, as corGaus with ``metric="maximum"``, or
            for a corCompSymm group larger than those it was initialized on).
        """
        try:
            return np.linalg.cholesky(self.matrix(params, positions))
        except np.linalg.LinAlgError:
            natural = dict(zip(self.param_names, np.round(self.natural(params), 6).tolist()))
            raise DataError(
                f"{type(self).__name__}: the correlation matrix of a group is not positive definite at {natural}"
            ) from None

    @staticmethod
    def log_det_of_factor(factor: np.ndarray) -> np.ndarray | float:
        """Return log det R_i from its Cholesky factor: 2 Σ log diag L (per stacked group)."""
        return 2.0 * np.log(np.diagonal(factor, axis1=-2, axis2=-1)).sum(axis=-1)

    def log_det(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray | float:
        """Return log det R_i for one group (a float) or a stack (an array)."""
        return self.log_det_of_factor(self.factor(params, positions))

    def __repr__(self) -> str:
        value = None if self.value is None else self.value.tolist()
        return f"{type(self).__name__}(value={value}, form={self.form!r}, fixed={self.fixed})"


def _check_unique(groups: list[np.ndarray], name: str) -> None:
    """Refuse a group whose positions repeat (nlme's message)."""
    for group in groups:
        if np.unique(group, axis=0).shape[0] != group.shape[0]:
            raise DataError(f'covariate must have unique values within groups for "{name}" objects')


def _check_integer(groups: list[np.ndarray], name: str) -> None:
    for group in groups:
        if not np.array_equal(group, np.round(group)):
            raise DataError(
                f"{name}: the covariate must be integer-valued (order or integer times), "
                f"got {group[group != np.round(group)][0]!r}; corCAR1 takes continuous times"
            )


def _lags(positions: np.ndarray) -> np.ndarray:
    """|t_i - t_j| for one group (n,) or a stack (m, n): shape (..., n, n)."""
    return np.abs(positions[..., :, None] - positions[..., None, :])


def _one_param(params: np.ndarray) -> float:
    return float(np.asarray(params, dtype=float).reshape(-1)[0])


class corCompSymm(CorrelationStructure):  # noqa: N801 - nlme's class name
    """Compound symmetry: every pair of a group has correlation Rho (nlme's ``corCompSymm``).

    Unconstrained: log((ρ - inf) / (1 - ρ)) with inf = -1/(max group size - 1),
    the smallest correlation that keeps the largest group positive definite.
    """

    def __init__(self, value: float | None = 0.0, form: str = "~ 1", fixed: bool = False):
        super().__init__(value, form, fixed)
        if self.value is not None and (self.value.size != 1 or abs(self.value[0]) >= 1):
            raise ModelSpecError(
                f'parameter in "corCompSymm" structure must be < 1 in absolute value, got {self.value.tolist()}'
            )

    @property
    def n_params(self) -> int:
        """One: Rho."""
        return 1

    @property
    def param_names(self) -> list[str]:
        """``["Rho"]``."""
        return ["Rho"]

    def _read_groups(self, groups: list[np.ndarray]) -> None:
        max_len = max(group.shape[0] for group in groups)
        # a design of single observations has no pair: any ρ in (-1, 1) is valid
        self.lower = -1.0 / (max_len - 1) if max_len > 1 else -1.0

    def default_value(self) -> np.ndarray:
        """Return nlme's default: 0."""
        return np.zeros(1)

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Map Rho to log((ρ - inf) / (1 - ρ))."""
        self._require_initialized()
        rho = np.asarray(natural, dtype=float).reshape(-1)
        if not self.lower < rho[0] < 1:
            raise ModelSpecError(
                f'initial value in "corCompSymm" must be greater than {self.lower:.6g} '
                f"(-1/(max group size - 1)) and less than 1, got {rho[0]:.6g}"
            )
        return np.log((rho - self.lower) / (1 - rho))

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Map u to Rho = (exp(u) + inf) / (exp(u) + 1)."""
        self._require_initialized()
        u = np.asarray(unconstrained, dtype=float).reshape(-1)
        share = expit(u)  # exp(u)/(1 + exp(u)), safe for large |u|
        return share + self.lower * (1 - share)

    def matrix(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """R_i = (1 - ρ) I + ρ 1 1ᵀ over the group's observations."""
        rho = self.natural(params)[0]
        positions = np.asarray(positions)
        n = positions.shape[-1]
        single = (1 - rho) * np.eye(n) + rho
        return np.broadcast_to(single, positions.shape[:-1] + (n, n)).copy()


def _ar_to_unconstrained(coefs: np.ndarray, sign: float, name: str) -> np.ndarray:
    """Map AR (MA) coefficients to the log-ratios of their partial autocorrelations.

    nlme's ARMA_transPar.

    The Durbin-Levinson recursion run backwards; a partial autocorrelation
    outside (-1, 1) means a non-stationary (or non-invertible) polynomial.
    """
    pars = coefs.astype(float).copy()
    for n in range(pars.size - 1, -1, -1):
        last = pars[n]
        if last * last >= 1:
            raise ModelSpecError(
                f"{name} coefficients {coefs.tolist()} are outside the parameter space "
                "(a partial autocorrelation is not below 1 in absolute value: not stationary or not invertible)"
            )
        head = pars[:n].copy()
        pars[:n] = (head + sign * last * head[::-1]) / (1 - last * last)
        pars[n] = np.log((1 + last) / (1 - last))
    return pars


def _ar_to_natural(unconstrained: np.ndarray, sign: float) -> np.ndarray:
    """Map back, as nlme's ARMA_untransPar: partial autocorrelations back to coefficients."""
    pars = np.tanh(np.asarray(unconstrained, dtype=float) / 2)  # (1 - e^-x)/(1 + e^-x)
    for i in range(1, pars.size):
        head = pars[:i].copy()
        pars[:i] = head + sign * pars[i] * head[::-1]
    return pars


def arma_autocorrelation(phi: np.ndarray, theta: np.ndarray, max_lag: int, nlme_compatible: bool = False) -> np.ndarray:
    """Return the autocorrelations ρ(0..max_lag) of the ARMA(p, q) process.

    e_t = Σ φ_j e_{t-j} + a_t + Σ θ_j a_{t-j} (nlme's sign convention): the
    first p + 1 autocovariances solve a linear system, the rest follow the
    AR recursion (as nlme's ARMA_corr and R's ``stats::ARMAacf``).

    With ``nlme_compatible``, the lags p+1..q of a model with q > p ≥ 1 are
    computed as nlme 3.1-162's ARMA_corr does: it reads the MA coefficient
    θ_j at ``pars[j - 1]`` (an AR coefficient or a shifted θ) instead of
    ``pars[p + j - 1]``, so its correlations there differ from
    ``ARMAacf``'s (for ARMA(1, 2) at lag 2, 0.2856 for 0.0461).
    """
    p, q = phi.size, theta.size
    n_psi = max(p, q + 1)
    psi = np.zeros(n_psi)  # MA(∞) weights ψ_0..ψ_{n_psi-1}
    psi[0] = 1.0
    for i in range(1, n_psi):
        psi[i] = (theta[i - 1] if i <= q else 0.0) + phi[: min(p, i)] @ psi[i - 1 :: -1][: min(p, i)]
    theta_full = np.concatenate([[1.0], theta])
    n_lags = max(max_lag, p, q) + 1
    # rhs_k = Σ_{j=k}^{q} θ_j ψ_{j-k}: the cross-covariance of e and a at lag k
    rhs = np.array([theta_full[k:] @ psi[: q + 1 - k] if k <= q else 0.0 for k in range(n_lags)])
    if nlme_compatible and p >= 1:
        coefs = np.concatenate([phi, theta])
        for k in range(p + 1, q + 1):
            rhs[k] = coefs[k - 1 : q] @ psi[: q + 1 - k]
    gamma = np.zeros(n_lags)
    lag_index = np.abs(np.arange(p + 1)[:, None] - np.arange(1, p + 1)[None, :])
    system = np.eye(p + 1)
    np.add.at(system, (np.repeat(np.arange(p + 1), p), lag_index.ravel()), -np.tile(phi, p + 1))
    gamma[: p + 1] = np.linalg.solve(system, rhs[: p + 1])
    for k in range(p + 1, n_lags):
        gamma[k] = phi @ gamma[k - 1 : k - p - 1 if k - p - 1 >= 0 else None : -1] + rhs[k]
    return gamma[: max_lag + 1] / gamma[0]


class corARMA(CorrelationStructure):  # noqa: N801 - nlme's class name
    """ARMA(p, q) correlation at integer lags (nlme's ``corARMA``).

    Parameters
    ----------
    value : sequence of float, optional
        Phi1..Phip, Theta1..Thetaq in natural scale; zeros by default.
    form : str
        ``"~ 1 | g"`` (order within group) or ``"~ t | g"`` (integer times).
    p, q : int
        Autoregressive and moving-average orders, not both 0.
    fixed : bool
        Whether the parameters stay at ``value``.
    nlme_compatible : bool
        Reproduce nlme 3.1-162's correlations at lags p+1..q when q > p ≥ 1
        (see :func:`arma_autocorrelation`); by default the ARMA process's
        true autocorrelations (R's ``ARMAacf``). Other orders are the same
        either way.
    """

    def __init__(
        self,
        value: Sequence[float] | None = None,
        form: str = "~ 1",
        p: int = 0,
        q: int = 0,
        fixed: bool = False,
        nlme_compatible: bool = False,
    ):
        for order, what in ((p, "autoregressive"), (q, "moving average")):
            if not (float(order) == int(order) and order >= 0):
                raise ModelSpecError(f"{what} order must be a non-negative integer, got {order!r}")
        if p == 0 and q == 0:
            raise ModelSpecError(
                "corARMA(p = 0, q = 0) has no parameters: give p > 0 or q > 0 "
                "(nlme returns corIdent(), no correlation, for p = q = 0: use no correlation structure)"
            )
        super().__init__(value, form, fixed)
        self.p, self.q = int(p), int(q)
        self.nlme_compatible = bool(nlme_compatible)
        if self.value is not None:
            if self.value.size != self.p + self.q:
                raise ModelSpecError(
                    f"initial value for parameter of wrong length: {self.value.size} given, p + q = {self.p + self.q}"
                )
            if np.max(np.abs(self.value)) >= 1:
                raise ModelSpecError(
                    f"parameters in ARMA structure must be < 1 in absolute value, got {self.value.tolist()}"
                )
            self.unconstrained(self.value)

    @property
    def n_params(self) -> int:
        """The sum of the orders, p + q."""
        return self.p + self.q

    @property
    def param_names(self) -> list[str]:
        """Phi1..Phip, Theta1..Thetaq."""
        return [f"Phi{i}" for i in range(1, self.p + 1)] + [f"Theta{i}" for i in range(1, self.q + 1)]

    def _read_groups(self, groups: list[np.ndarray]) -> None:
        _check_integer(groups, type(self).__name__)
        _check_unique(groups, type(self).__name__)

    def default_value(self) -> np.ndarray:
        """Return nlme's default: zeros."""
        return np.zeros(self.n_params)

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Map as nlme's ARMA_unconstCoef (log-ratios of partial autocorrelations)."""
        natural = np.asarray(natural, dtype=float).reshape(-1)
        return np.concatenate(
            [
                _ar_to_unconstrained(natural[: self.p], 1.0, "autoregressive"),
                _ar_to_unconstrained(natural[self.p :], -1.0, "moving average"),
            ]
        )

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Map as nlme's ARMA_constCoef."""
        unconstrained = np.asarray(unconstrained, dtype=float).reshape(-1)
        return np.concatenate(
            [_ar_to_natural(unconstrained[: self.p], -1.0), _ar_to_natural(unconstrained[self.p :], 1.0)]
        )

    def matrix(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """R_i[j, k] = ρ(|t_j - t_k|), the ARMA autocorrelation at the lag."""
        lags = _lags(np.asarray(positions, dtype=float)).astype(np.intp)
        coefs = self.natural(params)
        acf = arma_autocorrelation(
            coefs[: self.p], coefs[self.p :], int(lags.max(initial=0)), nlme_compatible=self.nlme_compatible
        )
        return acf[lags]


class corAR1(corARMA):  # noqa: N801 - nlme's class name
    """AR(1) correlation Phi^|lag| at integer lags (nlme's ``corAR1``).

    Unconstrained: log((1 + φ)/(1 - φ)).

    Parameters
    ----------
    value : float
        Phi in (-1, 1); 0 by default.
    form : str
        ``"~ 1 | g"`` (order within group) or ``"~ t | g"`` (integer times).
    fixed : bool
        Whether Phi stays at ``value``.
    """

    def __init__(self, value: float | None = 0.0, form: str = "~ 1", fixed: bool = False):
        value = _as_value(value)
        if value is not None and (value.size != 1 or abs(value[0]) >= 1):
            raise ModelSpecError(
                f"parameter in AR(1) structure must be between -1 and 1, got {value.tolist()}"
            )
        super().__init__(value, form, p=1, q=0, fixed=fixed)

    @property
    def param_names(self) -> list[str]:
        """``["Phi"]``."""
        return ["Phi"]

    def matrix(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """R_i[j, k] = φ^|t_j - t_k|."""
        phi = self.natural(params)[0]
        return phi ** _lags(np.asarray(positions, dtype=float))


class corCAR1(CorrelationStructure):  # noqa: N801 - nlme's class name
    """Continuous-time AR(1): Phi^|t_j - t_k| for real times (nlme's ``corCAR1``).

    Unconstrained: log(φ/(1 - φ)), φ in (0, 1).
    """

    def __init__(self, value: float | None = 0.2, form: str = "~ 1", fixed: bool = False):
        super().__init__(value, form, fixed)
        if self.value is not None:
            self.unconstrained(self.value)

    @property
    def n_params(self) -> int:
        """One: Phi."""
        return 1

    @property
    def param_names(self) -> list[str]:
        """``["Phi"]``."""
        return ["Phi"]

    def _read_groups(self, groups: list[np.ndarray]) -> None:
        # equal times give equal rows of R_i: a singular matrix
        _check_unique(groups, type(self).__name__)

    def default_value(self) -> np.ndarray:
        """Return nlme's default: 0.2."""
        return np.full(1, 0.2)

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Map Phi to log(φ/(1 - φ))."""
        phi = np.asarray(natural, dtype=float).reshape(-1)
        if phi.size != 1 or not 0 < phi[0] < 1:
            raise ModelSpecError(f"parameter in CAR(1) structure must be between 0 and 1, got {phi.tolist()}")
        return logit(phi)

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Map u to Phi = exp(u)/(1 + exp(u))."""
        return expit(np.asarray(unconstrained, dtype=float).reshape(-1))

    def matrix(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """R_i[j, k] = φ^|t_j - t_k|."""
        phi = self.natural(params)[0]
        return phi ** _lags(np.asarray(positions, dtype=float))


class corSymm(CorrelationStructure):  # noqa: N801 - nlme's class name
    """General correlation matrix of the positions 0..K-1 (nlme's ``corSymm``).

    The K(K-1)/2 correlations (lower triangle, column by column: cor(1,2),
    cor(1,3), ..., cor(2,3), ...) are parametrised by the angles of the
    spherical parametrisation of the upper Cholesky factor (Pinheiro and
    Bates 1996): unconstrained = log(a/(π - a)) per angle a.
    """

    def _read_groups(self, groups: list[np.ndarray]) -> None:
        _check_integer(groups, "corSymm")
        _check_unique(groups, "corSymm")
        used = np.unique(np.concatenate(groups))
        if used[0] < 0 or used.size != used[-1] + 1:
            raise DataError(
                'unique values of the covariate for "corSymm" objects must be a sequence of consecutive '
                f"integers from 0 (0-based positions), got {used.tolist()}"
            )
        self.size = int(used[-1]) + 1

    @property
    def n_params(self) -> int:
        """K(K-1)/2 for K distinct positions."""
        self._require_initialized()
        return self.size * (self.size - 1) // 2

    @property
    def param_names(self) -> list[str]:
        """``cor(j,k)`` for j < k, 1-based, in nlme's order."""
        rows, cols = np.triu_indices(self.size, 1)
        return [f"cor({j + 1},{k + 1})" for j, k in zip(rows, cols)]

    def default_value(self) -> np.ndarray:
        """Return nlme's default: all correlations 0 (unconstrained zeros: right angles)."""
        return self.natural(np.zeros(self.n_params))

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Angles of the upper Cholesky factor of the correlation matrix, as log(a/(π - a))."""
        self._require_initialized()
        natural = np.asarray(natural, dtype=float).reshape(-1)
        if natural.size != self.n_params:
            raise ModelSpecError(
                f'initial value for "corSymm" parameters of wrong dimension: {natural.size} given, '
                f"{self.n_params} expected"
            )
        if natural.size and np.max(np.abs(natural)) >= 1:
            raise ModelSpecError(f'initial values for "corSymm" must be between -1 and 1, got {natural.tolist()}')
        full = self._full(natural)
        if np.linalg.eigvalsh(full)[0] <= 0:
            raise ModelSpecError(
                'initial values for "corSymm" do not define a positive-definite correlation structure'
            )
        upper = np.linalg.cholesky(full).T
        angles = []
        for col in range(1, self.size):
            entries = upper[: col + 1, col]
            # the norm of the entries from row k down to the diagonal
            tails = np.sqrt(np.cumsum(entries[::-1] ** 2)[::-1])
            angles.append(np.arccos(np.clip(entries[:col] / tails[:col], -1.0, 1.0)))
        angle = np.concatenate(angles) if angles else np.zeros(0)
        return np.log(angle / (np.pi - angle))

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Return, as nlme's symm_fullCorr, the correlations from the angles."""
        self._require_initialized()
        full = self._from_angles(np.asarray(unconstrained, dtype=float).reshape(-1))
        return full[np.triu_indices(self.size, 1)]

    def _full(self, natural: np.ndarray) -> np.ndarray:
        full = np.eye(self.size)
        rows, cols = np.triu_indices(self.size, 1)
        full[rows, cols] = full[cols, rows] = natural
        return full

    def _from_angles(self, unconstrained: np.ndarray) -> np.ndarray:
        """K x K correlation matrix: Uᵀ U with U's column k a unit vector of k angles."""
        angle = np.pi * expit(unconstrained)
        upper = np.zeros((self.size, self.size))
        upper[0, 0] = 1.0
        start = 0
        for col in range(1, self.size):
            cos, sin = np.cos(angle[start : start + col]), np.sin(angle[start : start + col])
            running = np.concatenate([[1.0], np.cumprod(sin)])  # products of the sines before each row
            upper[:col, col] = running[:col] * cos
            upper[col, col] = running[col]
            start += col
        full = upper.T @ upper
        # unit diagonal and symmetry exactly, as nlme (which fills only the off-diagonal)
        rows, cols = np.triu_indices(self.size, 1)
        full[cols, rows] = full[rows, cols]
        np.fill_diagonal(full, 1.0)
        return full

    def matrix(self, params: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Return the rows and columns of the K x K matrix at the group's positions."""
        full = self._from_angles(np.asarray(params, dtype=float).reshape(-1))
        index = np.asarray(positions).astype(np.intp)
        return full[index[..., :, None], index[..., None, :]]
