"""Generalized linear mixed models: lme4's ``glmer``.

lme4's Laplace approximation of -2 log L at (θ, β) is

    aic(y, μ̃) + ‖ũ‖² + log det(Λ'Z'WZΛ + I),

with R's ``family$aic`` (-2 × the conditional log-likelihood, constants
included) at the conditional modes ũ that PIRLS finds
(:mod:`mixedmodels.models.glmm.engine`), so numbers compare with R directly.
``nagq = 0`` lets PIRLS find β together with u (one optimisation over θ);
``nagq = 1`` (Laplace) optimises (θ, β) after that stage, as lme4 does by
default (:mod:`mixedmodels.models.glmm.optimizer`); ``nagq > 1`` replaces
the Laplace approximation by adaptive Gauss-Hermite quadrature, for a single
scalar random-effects term.
"""

from __future__ import annotations

import copy
import functools
import inspect
import warnings
from typing import Any, Callable, Mapping

import numpy as np

from mixedmodels.exceptions import (
    ConvergenceWarning,
    DataError,
    FamilyError,
    SeparationWarning,
)
from mixedmodels.families import Family, get_family
from mixedmodels.models.base import RandomEffectsModel, consecutive_slices
from mixedmodels.models.glmm.derivatives import ConvergenceCheck, FiniteDifferences
from mixedmodels.models.glmm.engine import Engine, gauss_hermite
from mixedmodels.models.glmm.modes import Modes, PirlsError
from mixedmodels.models.glmm.optimizer import FitStages
from mixedmodels.models.glmm.prediction import GlmerPredictions
from mixedmodels.models.glmm.results import GlmerResults
from mixedmodels.models.glmm.separation import separating_effects
from mixedmodels.optim.minimize import OptimizerRecord
from mixedmodels.spec.formula import parse_formula, require_random
from mixedmodels.spec.frame import build_model_frame
from mixedmodels.spec.random import search_scales
from mixedmodels.support.arguments import check_na_action, r_argument_hints
from mixedmodels.support.progress import FitProgress
from mixedmodels.support.threads import auto_thread_plan, blas_threads
from mixedmodels.support.warnings import warn_caller

__all__ = ["GeneralizedLinearMixedModel", "glmer", "ConvergenceCheck"]

# PIRLS tolerance of the converged modes (see GeneralizedLinearMixedModel._modes)
CONVERGED_PIRLS_TOL = 1e-10


class GeneralizedLinearMixedModel(FitStages, FiniteDifferences, GlmerResults, GlmerPredictions, RandomEffectsModel):
    """A generalized linear mixed model (lme4's ``glmer``).

    This class holds the model (its frame, family, engine) and the objectives
    of the fit over θ and (θ, β); the fit's stages
    (:class:`~mixedmodels.models.glmm.optimizer.FitStages`), the
    finite-difference derivatives
    (:class:`~mixedmodels.models.glmm.derivatives.FiniteDifferences`), the
    results (:class:`~mixedmodels.models.glmm.results.GlmerResults`) and the
    predictions (:class:`~mixedmodels.models.glmm.prediction.GlmerPredictions`)
    are mixins of their own modules, working on the same state.

    Parameters
    ----------
    formula : str
        lme4 formula; the response may be numeric, bool, a factor (first level
        = failure) or ``cbind(successes, failures)`` for the binomial family.
    data : DataFrame
        The data (pandas, or anything :func:`mixedmodels.spec.levels.to_pandas` takes).
    family : str or Family
        ``"binomial"``, ``"poisson"``, ``"gamma"``, ``"inverse_gaussian"``,
        ``"gaussian"`` or a :mod:`mixedmodels.families` object.
    link : str, optional
        Overrides the family's default link.
    nagq : int
        0: PIRLS estimates β with the modes (fast, approximate); 1: Laplace
        (default); > 1: adaptive Gauss-Hermite quadrature with that many
        nodes (one scalar random-effects term only).
    weights, offset : column name or array, optional
        Prior weights (binomial: numbers of trials of a proportion response)
        and an offset added to the linear predictor (also ``offset(...)`` in
        the formula).
    contrasts, na_action
        As for :class:`mixedmodels.LinearMixedModel`.

    Attributes
    ----------
    formula : str
        The formula as given.
    family : Family
        The family, with its link (``family.link``).
    nagq : int
        Quadrature nodes: 0, 1 (Laplace) or more (adaptive Gauss-Hermite).
    method : str
        The approximation: ``"nAGQ = 0"``, ``"Laplace"`` or ``"AGQ-<nagq>"``.
    model_kind : str
        ``"glmer"``, the name of the kind in :data:`mixedmodels.api.KINDS`.
    data_name : str or None
        Shown as "Data:" in summaries when set.
    frame : ModelFrame
        The model frame: the rows used (``frame.data``), the response
        ``frame.y``, the fixed-effects design ``frame.fixed``, the
        random-effects terms ``frame.terms``, the weights and the offset.
    weights_given, offset_given : bool
        Whether prior weights and an offset argument were given.
    nobs : int
        Number of observations used (after dropping incomplete rows).
    n_dropped : int
        Number of rows dropped for missing values.
    ngroups : dict of str to int
        Number of levels of every grouping factor.
    ntheta : int
        Number of θ elements.
    optsum : OptimizerRecord
        What the optimizer did (its name says which stages ran; evaluations,
        return code, time); set by :meth:`fit`.
    convergence : ConvergenceCheck or None
        lme4's ``checkConv`` at the optimum (finite-difference gradient and
        Hessian, warnings); None with ``check_convergence=False`` or nagq = 0.
    pirls_converged : bool
        Whether the deviance is taken at converged PIRLS modes (see :meth:`fit`).
    pirls_tol : float
        The PIRLS tolerance of the fit.
    separated : list of str
        Fixed effects that separate binomial data (empty when none).
    fixef : Series
        Fixed-effects estimates, named as in R (aliased columns dropped).
    beta : ndarray
        The same as an array.
    se : Series
        Standard errors of the fixed effects.
    vcov : DataFrame
        Covariance matrix of the fixed-effects estimates.
    theta : Series
        θ, the relative covariance parameters, with lme4's names.
    sigma : float
        The residual scale as lme4's ``sigma`` (1 for binomial and Poisson).
    has_residual : bool
        Whether the family has a scale (Gamma, inverse Gaussian, Gaussian).
    varcorr : DataFrame
        Variance components as lme4's ``as.data.frame(VarCorr(fit))``.
    b : list of ndarray
        Conditional modes of the random effects per term, (levels, k) arrays.
    ranef : dict of str to DataFrame
        Conditional modes per grouping factor, as lme4's ``ranef``.
    ranef_condsd : dict of str to DataFrame
        Their conditional standard deviations, laid out as ``ranef``.
    loglik : float
        Log-likelihood (the Laplace or quadrature approximation).
    deviance : float
        -2 × log-likelihood, the ``deviance`` of lme4's summary table.
    deviance_conditional : float
        Σ squared deviance residuals at the modes: R's ``deviance(fit)``.
    aic, bic : float
        Information criteria from ``loglik`` and ``n_params``.
    n_params : int
        Number of parameters: fixed effects, θ and, with a scale, σ.
    df_residual : int
        ``nobs - n_params``.
    fitted : Series
        Fitted means μ (response scale), conditional on the random effects.
    linear_predictor : Series
        The linear predictor η at the fit, conditional on the random effects.
    response : ndarray
        The response as the fit uses it (binomial: proportions).
    is_singular : bool
        Whether the fit is on the boundary (lme4's ``isSingular``).
    theta_lower, theta_scale : ndarray
        Lower bounds of θ, and the factors giving θ for unit-scale columns.
    theta_vector, theta_slices, fitted_objective
        θ as an array, each term's slice of it, the deviance at the optimum
        (see :class:`~mixedmodels.models.base.RandomEffectsModel`).
    param_scale : ndarray
        The factors giving (θ, β) for unit-scale columns of Z and X.

    Notes
    -----
    Results raise :class:`~mixedmodels.report.results.NotFittedError` before
    :meth:`fit`. The inference methods (``confint``, ``profile``,
    ``bootstrap``, ``drop1``) and the results protocol (``summary``,
    ``tidy``, ``coef_table`` ...) come from
    :class:`~mixedmodels.models.base.RandomEffectsModel`.
    """

    model_kind = "glmer"
    #: Whether the fit's deviance is taken at converged PIRLS modes rather than
    #: where PIRLS stops at ``pirls_tol`` (set by :meth:`fit` where that
    #: tolerance left the deviance without a minimum near the optimum).
    pirls_converged: bool = False

    @r_argument_hints()
    def __init__(
        self,
        formula: str,
        data: Any,
        family: str | Family = "binomial",
        link: str | None = None,
        nagq: int = 1,
        weights: Any = None,
        offset: Any = None,
        contrasts: Mapping[str, str] | None = None,
        na_action: str = "omit",
    ):
        check_na_action(na_action)
        self.family = get_family(family, link)
        self.nagq = _check_nagq(nagq)
        # the quadrature rule, once (not at every evaluation of the deviance)
        self._rule = gauss_hermite(self.nagq) if self.nagq > 1 else None
        self.formula = formula
        self.data_name: str | None = None
        parsed = require_random(parse_formula(formula))
        self.frame = build_model_frame(
            parsed, data, weights=weights, offset=offset, na_action=na_action,
            contrasts=contrasts, glm_response=True,
        )
        fr = self.frame
        if self.nagq > 1 and not (len(fr.terms) == 1 and fr.terms[0].k == 1):
            raise DataError(
                f"nagq = {self.nagq} (adaptive Gauss-Hermite quadrature) needs a single scalar "
                "random-effects term such as (1 | group); this model has "
                + ", ".join(t.spec.text for t in fr.terms)
                + ". Use nagq = 1 (Laplace) or 0."
            )
        self._init = self._initialize_response()
        offset_arr = np.zeros(fr.nobs) if fr.offset is None else np.asarray(fr.offset, float)
        self._engine = Engine(fr, self.family, self._init.y, self._init.n, self._init.weights, offset_arr)
        self.theta_slices = consecutive_slices([t.ntheta for t in fr.terms])
        self.weights_given = weights is not None
        self.offset_given = offset is not None
        self._fitted = False
        # the nAGQ = 0 stage's best point: (deviance, θ, PIRLS modes)
        self._stage0_best: tuple[float, np.ndarray | None, Modes | None] = (np.inf, None, None)

    def _initialize_response(self):
        fr, fam = self.frame, self.family
        name = fr.response_name
        y = np.asarray(fr.y, dtype=float)
        if y.ndim == 2:
            if not fam.counts_trials:
                raise FamilyError(
                    f"a two-column response {name!r} (cbind) is only meaningful for the "
                    f"binomial family, not {fam.name}"
                )
            return fam.initialize_counts(y[:, 0], y[:, 1], fr.weights, column_name=name)
        return fam.initialize(y, fr.weights, column_name=name)

    # ------------------------------------------------------------------ parameters

    @functools.cached_property
    def ntheta(self) -> int:
        """Number of θ elements (all terms)."""
        return int(sum(t.ntheta for t in self.frame.terms))

    # ------------------------------------------------------------------ objectives

    def _modes(
        self, theta: np.ndarray, beta: np.ndarray | None, converged: bool | None = None,
        eta_start: np.ndarray | None = None,
    ) -> Modes:
        """Return PIRLS's modes at θ, to the fit's tolerance.

        With ``beta`` None β is found with u (the nAGQ = 0 stage). PIRLS
        starts from the stage's starting linear predictor, as lme4 starts
        every evaluation (or from ``eta_start``).

        ``converged`` (default: the fit's ``pirls_converged``): to the modes
        themselves, with the last step's factor at their weights: once more
        from where PIRLS stopped, to ``CONVERGED_PIRLS_TOL`` (its first step is
        then a step from the modes). From ``eta_start`` (which must then be
        near the modes, e.g. theirs at a nearby point) that run alone.
        """
        e = self._engine
        converged = self.pirls_converged if converged is None else converged
        # the compiled steps take λ of scalar terms as numbers: θ itself
        lams = e.scalar_lambdas(theta) if e.compiled is not None else self.lambdas(np.asarray(theta, float))
        offset = e.offset if beta is None else e.fixed_offset(beta)
        if eta_start is None:
            # β given: the first step's system from sums kept for the stage's start
            modes = e.pirls(lams, self._eta_start, offset, beta is None, self.pirls_tol, beta)
            if not converged:
                return modes
            eta_start = modes.eta
        tol = min(CONVERGED_PIRLS_TOL, self.pirls_tol) if converged else self.pirls_tol
        return e.pirls(lams, eta_start, offset, beta is None, tol)

    def _deviance_at(self, modes: Modes, theta: np.ndarray) -> float:
        if self.nagq > 1:
            z, w = self._rule
            return self._engine.quadrature(modes, self.lambdas(theta), z, w)
        return self._engine.laplace(modes)

    def objective_theta(self, theta: np.ndarray) -> float:
        """Return the nAGQ = 0 deviance at θ (β found by PIRLS with the modes)."""
        try:
            modes = self._modes(theta, None)
        except PirlsError:
            return np.inf
        value = self._engine.laplace(modes)
        if value < self._stage0_best[0]:  # the stage's end is its best point: kept
            self._stage0_best = (value, np.array(theta, float), modes)
        return value

    @property
    def param_scale(self) -> np.ndarray:
        """Per element of (θ, β), the factor giving it for unit-scale columns of Z and X.

        That is :attr:`theta_scale`, then ``spec.random.search_scales`` of X;
        all ones unless a column is in tiny or huge units.
        """
        scale = self.__dict__.get("_param_scale")
        if scale is None:
            scale = np.concatenate([self.theta_scale, search_scales(self.frame.fixed.X)])
            self._param_scale = scale
        return scale

    def objective(self, params: np.ndarray) -> float:
        """Return the deviance (Laplace or quadrature) at (θ, β)."""
        return self._deviance_or_inf(params, None)[0]

    def objective_converged(self, params: np.ndarray, eta_start: np.ndarray | None = None) -> float:
        """Return the deviance at (θ, β) at the converged modes (see :meth:`_modes`).

        That is the Laplace or quadrature approximation itself, without the
        offset that PIRLS's tolerance leaves (see :meth:`_leave_plateau`). A
        start ``eta_start`` must be near the modes (for instance theirs at a
        nearby point).
        """
        return self._deviance_or_inf(params, True, eta_start)[0]

    def _deviance_or_inf(
        self, params: np.ndarray, converged: bool | None, eta_start: np.ndarray | None = None
    ) -> tuple[float, Modes | None]:
        """Return the deviance at (θ, β) and PIRLS's modes, or (inf, None) where PIRLS fails.

        See :meth:`_modes` for the arguments.
        """
        params = np.asarray(params, float)
        theta, beta = params[: self.ntheta], params[self.ntheta :]
        try:
            modes = self._modes(theta, beta, converged, eta_start)
        except PirlsError:
            return np.inf, None
        return self._deviance_at(modes, theta), modes

    # ------------------------------------------------------------------ fitting

    def initial_theta(self) -> np.ndarray:
        """Return lme4's starting θ: λ = I for every term (of the unit-scale columns)."""
        return np.concatenate([t.theta_start() for t in self.frame.terms])

    @r_argument_hints()
    def fit(
        self,
        start: Mapping[str, Any] | Any = None,
        *,
        nagq0_init_step: bool = True,
        pirls_tol: float = 1e-7,
        maxeval: int = 100_000,
        keep_history: bool = False,
        check_convergence: bool = True,
        threads: int | str = "auto",
        progress: bool = False,
    ) -> "GeneralizedLinearMixedModel":
        """Estimate θ and β as lme4's ``glmer``; returns self.

        First the nAGQ = 0 stage over θ (BOBYQA), then (nagq >= 1) the
        Laplace or quadrature deviance over (θ, β) from there: Newton steps
        with lme4's finite-difference gradient and Hessian (``deriv12``), whose
        last Hessian gives the standard errors; BOBYQA where Newton cannot be
        trusted (a Hessian not positive definite, a variance at zero, no
        descent) or without the check.

        Parameters
        ----------
        start : dict or array-like, optional
            As lme4's ``start``: ``{"theta": ..., "fixef": ...}`` (either key
            may be left out; ``fixef`` an array in the order of the fixed
            effects or a mapping by their names), or an array of θ. θ starts
            the nAGQ = 0 stage; ``fixef`` (nagq >= 1) replaces that stage's β
            at the start of the Laplace / quadrature stage.
        nagq0_init_step : bool
            lme4's ``nAGQ0initStep``: False skips the nAGQ = 0 stage, and the
            Laplace / quadrature fit starts from the given start (θ default:
            lme4's; β default: PIRLS with β free at that θ, the GLM fit when
            θ = 0). Every PIRLS then starts, as lme4's, from the linear
            predictor of PIRLS over u alone at the start θ with β = 0.
        pirls_tol : float
            PIRLS convergence tolerance (lme4's ``tolPwrss``, default 1e-7,
            which with lme4's way of iterating gives lme4's numbers; 1e-10 or
            below gives the Laplace approximation at the exact modes, which
            can differ from lme4's by ~1e-3 in the deviance and ~1% in SEs).
            Where the offset this tolerance leaves in the deviance makes it a
            sawtooth whose teeth hide the optimum, the fit goes on past them,
            or at converged modes (``pirls_converged``; the optimizer's name
            in ``optsum`` says so).
        maxeval : int
            Maximum number of deviance evaluations per stage.
        keep_history : bool
            Keep every point evaluated in ``optsum.history``.
        check_convergence : bool
            Compute the finite-difference gradient and Hessian at the optimum
            (they also give the standard errors, as lme4's default). False:
            BOBYQA only, and standard errors from the PIRLS system.
        threads : int or "auto"
            Threads: for BLAS (see ``_blas_threads``; one with the compiled
            PIRLS steps) and, with the compiled steps and evaluations slower
            than 0.5 ms, for the finite-difference probes of the Newton stage
            ("auto": the idle cores).
        progress : bool
            Show evaluations (all stages), deviance and elapsed time while the
            fit runs for more than a second.
        """
        self._threads, self._workers = threads, 1  # workers: decided after stage 0
        self.pirls_converged = False  # until the (θ, β) stage finds it needs them
        # compiled steps leave BLAS little (and its threads would compete with
        # the probes' worker threads): one BLAS thread then
        everywhere = 1 if self._engine.compiled is not None else self._blas_threads(threads)
        monitor = FitProgress(f"glmer {self.formula}") if progress else None
        self._callback = None if monitor is None else _counting(monitor)
        try:
            with blas_threads(everywhere):
                self._fit(self._parse_start(start), bool(nagq0_init_step), float(pirls_tol),
                          maxeval, keep_history, check_convergence)
        finally:
            if monitor is not None:
                monitor.close()
        self.optsum.blas_threads = (everywhere, None)
        return self

    def refit(self, newresp: Any, **fit_kwargs: Any) -> "GeneralizedLinearMixedModel":
        """Return the same model fitted to another response (lme4's ``refit``).

        The design, the blocked system and the formula handling are reused;
        only the response changes, and the fit starts from this fit's θ. This
        model is left untouched.

        Parameters
        ----------
        newresp : array-like
            One value per row used in the fit, on the scale :meth:`simulate`
            returns (binomial: proportions of the trials; Poisson: counts), or
            for the binomial family an (n, 2) array of successes and failures.
        **fit_kwargs
            Passed to :meth:`fit` (default: this fit's ``pirls_tol``).

        Returns
        -------
        GeneralizedLinearMixedModel
            A new fitted model.
        """
        self.require_fit()
        e = self._engine
        y = np.asarray(newresp, dtype=float)
        name = self.frame.response_name
        if y.shape not in ((len(e.y),), (len(e.y), 2)):
            raise DataError(
                f"refit needs one response value per row used in the fit ({len(e.y)}), "
                f"got an array of shape {y.shape} for {name!r}"
            )
        if y.ndim == 2:
            init = self.family.initialize_counts(y[:, 0], y[:, 1], self.frame.weights, column_name=name)
            y, n, wt = init.y, init.n, init.weights
        else:
            self.family.validate_response(y, e.wt, column_name=name)
            n, wt = e.n, e.wt
            y = self.family.response_for_fit(y, wt)
        new = copy.copy(self)
        new._init = self._init._replace(y=y, n=n, weights=wt, mustart=self.family.mustart(y, wt))
        new._engine = e.with_response(y, n, wt)
        new._fitted = False
        fit_kwargs.setdefault("pirls_tol", self.pirls_tol)
        start = dict(fit_kwargs.pop("start", None) or {"theta": self.theta_vector})
        return new.fit(start, **fit_kwargs)

    def _blas_threads(self, threads: int | str) -> int | None:
        """Return the BLAS threads for the fit, chosen as for lmer.

        :func:`~mixedmodels.support.threads.auto_thread_plan` decides from the
        size only, never from the machine's load: one for dense blocks under
        2,000 rows (idle OpenBLAS workers spinning between the many small
        products of PIRLS made a grouseticks fit six times slower), every core
        above.
        """
        if threads != "auto":
            return int(threads)
        everywhere, inside = auto_thread_plan(self._engine.system.m)
        return everywhere if inside is None else inside

    def _warn_separation(self) -> None:
        """Find the fixed effects that separate the data, and warn if there are any.

        Run after the fit: only when some fitted probability is within 1e-6
        of 0 or 1 (what separation drives them to) is the linear program over
        the rows run. Sets ``separated``.
        """
        e = self._engine
        names = separating_effects(
            self.family, self._modes_final.mu, self.frame.fixed.X, e.y, e.wt, self.frame.fixed.names
        )
        self.separated: list[str] = names
        if names:
            warn_caller(
                "the data are (quasi-)completely separated by fixed effect(s) "
                + ", ".join(names)
                + ": their estimates are infinite in truth, the ones reported are only as "
                "large as the optimizer went, and their standard errors are meaningless; "
                "consider removing or recoding them (or a penalised fit)",
                SeparationWarning,
            )

    def _set_optimum(
        self, theta, beta, record: OptimizerRecord, check: bool, derivs=None
    ) -> None:
        theta = self._canonical_theta(np.asarray(theta, float))
        modes = self._modes(theta, None if beta is None else np.asarray(beta, float))
        self.theta_vector, self._modes_final = theta, modes
        self._beta = modes.beta if beta is None else np.asarray(beta, float)
        self._u = [modes.u[a:b].reshape(-1, k) for (a, b), k in zip(self._engine.bounds, self._engine.ks)]
        self.fitted_objective = self._engine.laplace(modes) if beta is None else self._deviance_at(modes, theta)
        self.optsum = record
        self._cache: dict[str, Any] = {}
        self.convergence: ConvergenceCheck | None = None
        if check:
            self.convergence = self._check_convergence(derivs)
        self._fitted = True
        self._warn_separation()
        if self.convergence is not None and self.convergence.messages:
            warn_caller("; ".join(self.convergence.messages), ConvergenceWarning)
        self._warn_if_singular()

    # ------------------------------------------------------------------ derivatives

def _counting(monitor: FitProgress):
    """Return the optimizers' callback for a fit of several stages, counting across them."""
    count = [0]

    def callback(_: int, best: float) -> None:
        count[0] += 1
        monitor(count[0], best)

    return callback


def _check_nagq(nagq: Any) -> int:
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or nagq < 0 or nagq > 100:
        raise DataError(f"nagq must be an integer from 0 to 100, not {nagq!r}")
    return int(nagq)


# glmer's arguments are the model's (one definition: the constructor's
# signature), then the options of its fit
MODEL_SIGNATURE = inspect.signature(GeneralizedLinearMixedModel.__init__)


def _with_model_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``func(*args, **kwargs)`` the model's arguments and ``**fit_kwargs`` as signature.

    It is then shown (``help``, IDEs) and checked (:func:`r_argument_hints`)
    with them.
    """
    model = [p for name, p in MODEL_SIGNATURE.parameters.items() if name != "self"]
    fit = inspect.Parameter("fit_kwargs", inspect.Parameter.VAR_KEYWORD, annotation="Any")
    func.__signature__ = MODEL_SIGNATURE.replace(  # type: ignore[attr-defined]
        parameters=[*model, fit], return_annotation="GeneralizedLinearMixedModel"
    )
    return func


def _split_arguments(args: tuple, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (the model's arguments, defaults filled in; the fit's options) of a glmer call."""
    names = MODEL_SIGNATURE.parameters
    model_kwargs = {k: v for k, v in kwargs.items() if k in names}
    fit_kwargs = {k: v for k, v in kwargs.items() if k not in names}
    bound = MODEL_SIGNATURE.bind(None, *args, **model_kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    del arguments["self"]
    return arguments, fit_kwargs


@r_argument_hints(GeneralizedLinearMixedModel.fit)
@_with_model_arguments
def glmer(*args: Any, **kwargs: Any) -> GeneralizedLinearMixedModel:
    """Fit a generalized linear mixed model, as lme4's ``glmer``.

    Parameters are those of :class:`GeneralizedLinearMixedModel`; ``fit_kwargs``
    go to :meth:`GeneralizedLinearMixedModel.fit`. As in lme4, the Gaussian
    family with the identity link is fitted by :func:`mixedmodels.lmer`
    (with a warning), and that model is returned.

    Examples
    --------
    >>> import mixedmodels as mm
    >>> m = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...              mm.datasets.load("cbpp"), family="binomial")
    >>> round(m.loglik, 2)
    -92.03
    """
    arguments, fit_kwargs = _split_arguments(args, kwargs)
    fam = get_family(arguments["family"], arguments["link"])
    if fam.is_linear:
        # lme4 hands this case to lmer (with a deprecation warning): the
        # Gaussian GLMM with the identity link is the linear mixed model
        warnings.warn(
            "glmer with the Gaussian family and identity link is the linear mixed model: "
            "fitting it with lmer (REML, as lme4 does); call mixedmodels.lmer directly",
            UserWarning,
            stacklevel=2,
        )
        from mixedmodels.models.lmm.entry import lmer

        # the fit options go along (lmer names any it does not take)
        lmer_arguments = {k: arguments[k] for k in ("weights", "offset", "contrasts", "na_action")}
        return lmer(arguments["formula"], arguments["data"], **lmer_arguments, **fit_kwargs)
    model = GeneralizedLinearMixedModel(**{**arguments, "family": fam, "link": None})
    return model.fit(**fit_kwargs)
