"""Refits of a linear mixed model to other responses, simulation, design-sharing copies.

Refits to other responses are lme4's ``refit``; with the responses
simulated from a fit and the copies that share its design, they are what a
parametric bootstrap, a profile or a likelihood-ratio test runs many times.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError
from mixedmodels.linalg.dense import DenseSystem
from mixedmodels.models.base import SINGULAR_TOL
from mixedmodels.models.lmm.engine import SmallDenseEvaluator, response_crossproducts
from mixedmodels.optim.minimize import OptimizerRecord, ThetaScaling, bfgs
from mixedmodels.spec.frame import ModelFrame
from mixedmodels.support.threads import blas_threads

if TYPE_CHECKING:  # the model imports this module
    from mixedmodels.models.lmm.model import LinearMixedModel

__all__ = ["Refitting"]


class Refitting:
    """Refits, simulation and design-sharing copies of a linear mixed model.

    A base class of :class:`~mixedmodels.models.lmm.model.LinearMixedModel`
    (not used by itself); it gives the model :meth:`refit` and
    :meth:`simulate`.
    """

    def refit(self, newresp: Any, **fit_kwargs: Any) -> "LinearMixedModel":
        """Return the same model fitted to another response (lme4's ``refit``).

        Nothing is parsed or rebuilt: the new model shares the formula, the
        model frame (but for the response), the random-effects design and the
        factor's pattern; only the response column of the augmented system
        ([Z X y]'y) is recomputed, and the optimizer starts from this fit's θ.
        This model is left untouched.

        Parameters
        ----------
        newresp : array-like or None
            One value per row used in the fit (``nobs``), on the scale of the
            response (offsets and prior weights apply as in the original fit);
            None refits the same response.
        **fit_kwargs
            Passed to :meth:`fit` (``start`` defaults to this fit's θ).

        Returns
        -------
        LinearMixedModel
            A new fitted model.

        Examples
        --------
        >>> import mixedmodels as mm
        >>> m = mm.lmer("Reaction ~ Days + (Days | Subject)", mm.datasets.load("sleepstudy"))
        >>> m2 = m.refit(m.simulate(seed=1).iloc[:, 0])
        >>> m2.fixef.index.tolist() == m.fixef.index.tolist()
        True
        """
        self.require_fit()
        self.require_rows("refit")
        if newresp is None:  # lme4's refit(object): the same response again
            newresp = self.frame.y
        y = _new_response(newresp, self.frame.nobs, self.frame.response_name)
        new = self.clone(y=y)
        start = self.refit_start()
        if not fit_kwargs and new._fast is not None and start is self.theta_vector:
            return new._fit_seeded(self.theta_vector, self._curvature_inverse())
        fit_kwargs.setdefault("start", start)
        return new.fit(**fit_kwargs)

    def prepare_refits(self) -> None:
        """Compute what many refits share, once (e.g. before a bootstrap forks its workers).

        That is the starting curvature of the seeded search.
        """
        system = self.system
        small = isinstance(system, DenseSystem) and system.N <= SmallDenseEvaluator.MAX_SIZE
        if small and self.refit_start() is self.theta_vector:
            self._curvature_inverse()

    def require_rows(self, what: str) -> None:
        """Raise a DataError naming ``what`` unless the model frame holds the rows.

        A fit from partitions (Dask or Parquet) keeps only their cross-products.

        Parameters
        ----------
        what : str
            The operation asked for, named in the error.

        Raises
        ------
        DataError
            If the model was fitted from partitions.
        """
        if len(self.frame.y) != self.frame.nobs:
            raise DataError(
                f"{what} needs the rows of the data in memory; this model was fitted from "
                "partitions (Dask or Parquet): fit it with a pandas DataFrame instead"
            )

    def refit_start(self, theta: np.ndarray | None = None) -> np.ndarray:
        """Return θ to start a refit from: this fit's (or ``theta``), moved off zero.

        Zero diagonal elements of λ are moved to 0.1 (for unit-scale columns,
        see ``theta_scale``). The objective is even in those elements, so a
        gradient search started exactly at zero never leaves it even when the
        new optimum is away from the boundary.

        Parameters
        ----------
        theta : ndarray, optional
            θ to move; this fit's ``theta_vector`` by default.

        Returns
        -------
        ndarray
            The starting θ: the same array when nothing is moved.
        """
        theta = self.theta_vector if theta is None else theta
        scale = self.theta_scale  # both rules on θ for unit-scale columns
        at_zero = (self.theta_lower == 0) & (np.abs(theta) * scale < SINGULAR_TOL)
        if not at_zero.any():
            return theta
        return np.where(at_zero, 0.1 / scale, theta)

    def _curvature_inverse(self) -> np.ndarray:
        """Return the inverse Hessian of the objective in θ here, made positive definite.

        It comes from central differences of the analytic gradient, and is
        the starting curvature of refits (see ``_fit_seeded``). Cached.
        """
        cache = self._cache
        if "refit_hinv" not in cache:
            theta = self.theta_vector
            fg = self.objective_gradient
            m = len(theta)
            H = np.empty((m, m))
            scale = self.theta_scale  # steps for unit-scale columns
            for i in range(m):
                h = 1e-4 * max(abs(theta[i]) * scale[i], 0.1) / scale[i]
                e = np.zeros(m)
                e[i] = h
                H[:, i] = (fg(theta + e)[1] - fg(theta - e)[1]) / (2 * h)
            # made positive definite on θ for unit-scale columns (the floor is
            # relative to the largest eigenvalue), then back to θ
            H = 0.5 * (H + H.T) / np.outer(scale, scale)
            vals, vecs = np.linalg.eigh(H) if np.all(np.isfinite(H)) else (np.ones(m), np.eye(m))
            floor = 1e-3 * max(float(np.max(np.abs(vals))), 1e-8)
            vals = np.maximum(np.abs(vals), floor)
            cache["refit_hinv"] = ((vecs / vals) @ vecs.T) / np.outer(scale, scale)
        return cache["refit_hinv"]

    def _fit_seeded(self, start: np.ndarray, hinv: np.ndarray) -> "LinearMixedModel":
        """Fit by a quasi-Newton search (BFGS) from ``start``, first inverse Hessian ``hinv``.

        ``hinv`` is the curvature at a neighbouring optimum: a refit to a
        response drawn near the original one then needs four to eight
        evaluations instead of about twelve. A search that does not converge
        is finished by the default fit from where it stopped.
        """
        with blas_threads(1):  # one thread: these blocks are small (see fit)
            return self._fit_seeded_now(np.asarray(start, dtype=float), hinv)

    def _fit_seeded_now(self, start: np.ndarray, hinv: np.ndarray) -> "LinearMixedModel":
        t0 = time.perf_counter()
        scaling = ThetaScaling(self.theta_scale)  # the search on unit-scale columns' θ
        result = bfgs(
            scaling.objective_gradient(self.objective_gradient),
            scaling.to_search(start),
            hinv * np.outer(self.theta_scale, self.theta_scale),
        )
        result["x"] = result["x"] / self.theta_scale
        if not result["converged"]:
            self._fit(result["x"], "lbfgsb", 1e-12, 100_000, False, None)
            self.optsum.evaluations += result["evaluations"]
            self.optsum.theta_start = start
            self.optsum.blas_threads = (1, None)
            return self
        record = OptimizerRecord(
            optimizer="BFGS (seeded)",
            theta_start=start,
            theta_final=result["x"],
            objective_start=result["f0"],
            objective_final=result["f"],
            evaluations=result["evaluations"],
            return_code="CONVERGED",
            elapsed=time.perf_counter() - t0,
            blas_threads=(1, None),
        )
        self._set_optimum(record)
        return self

    def clone(
        self,
        y: np.ndarray | None = None,
        reml: bool | None = None,
        drop_fixed: int | None = None,
    ) -> "LinearMixedModel":
        """Return an unfitted copy sharing the design.

        It has the response ``y`` (only the response column of the system
        recomputed), another criterion (``reml``) or no fixed-effects column
        ``drop_fixed`` (system rebuilt).
        """
        new = object.__new__(type(self))
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k not in _FIT_STATE})
        frame = self.frame
        if y is not None or drop_fixed is not None:
            frame = _copy_frame(frame)
            if y is not None:
                frame.__dict__["y"] = y
        if drop_fixed is not None:
            fixed = copy.copy(frame.fixed)
            keep = [j for j in range(fixed.X.shape[1]) if j != drop_fixed]
            fixed.X = np.ascontiguousarray(fixed.X[:, keep])
            fixed.names = [fixed.names[j] for j in keep]
            if fixed.gram is not None:  # the rank check's X'X, taken by the cross-products
                fixed.gram = fixed.gram[np.ix_(keep, keep)]
            frame.__dict__["fixed"] = fixed
        new.frame = frame
        if reml is not None:
            new.reml = bool(reml)
        if drop_fixed is not None:
            new._setup_engine()
        elif y is not None:
            new.system = self.system.with_response(response_crossproducts(frame))
        else:
            new.system = self.system.copy()
        new._fast = SmallDenseEvaluator.create(new)
        if new._fast is not None and drop_fixed is None:
            self.__dict__.setdefault("_fast_pattern", new._fast.pattern)  # for the next clones
        new._fitted = False
        return new

    def simulate(
        self, nsim: int = 1, seed: int | np.random.Generator | None = None, use_u: bool = False
    ) -> pd.DataFrame:
        """Return new responses from the fitted model, one column per simulation.

        Parameters
        ----------
        nsim : int
            Number of simulated response vectors.
        seed : int or Generator, optional
            Random seed for reproducibility.
        use_u : bool, default False
            Condition on the fitted random effects (True) or draw new ones (False,
            lme4's default ``re.form = NA``).
        """
        self.require_fit()
        self.require_rows("simulate")
        rng = np.random.default_rng(seed)
        fr = self.frame
        n = fr.nobs
        base = fr.fixed.X @ self._beta + (0 if fr.offset is None else fr.offset)
        out = np.empty((n, nsim))
        lams = self.lambdas(self.theta_vector)
        w = np.ones(n) if fr.weights is None else fr.weights
        for s in range(nsim):
            eta = base.copy()
            for term, lam, b in zip(fr.terms, lams, self.b):
                if use_u:
                    bb = b
                else:
                    bb = self._sigma * rng.standard_normal((term.nlevels, term.k)) @ lam.T
                eta += np.einsum("nk,nk->n", term.z, bb[term.codes])
            out[:, s] = eta + self._sigma * rng.standard_normal(n) / np.sqrt(w)
        cols = [f"sim_{i + 1}" for i in range(nsim)]
        return pd.DataFrame(out, index=fr.data.index, columns=cols)


# What a fit sets; a clone made for a refit starts without it.
_FIT_STATE = frozenset(
    {"optsum", "theta_vector", "fitted_factor", "_beta", "_u", "_sigma", "fitted_objective", "_cache", "_fitted"}
)


def _new_response(newresp: Any, nobs: int, name: str) -> np.ndarray:
    """Return a refit's response as a float vector of the fit's length, checked."""
    if isinstance(newresp, pd.DataFrame):
        if newresp.shape[1] != 1:
            raise DataError(
                f"refit needs one response column for {name!r}, got a DataFrame with "
                f"{newresp.shape[1]} columns"
            )
        newresp = newresp.iloc[:, 0]
    try:
        y = np.asarray(newresp, dtype=float)
    except (TypeError, ValueError) as err:
        raise DataError(f"the new response for {name!r} is not numeric: {err}") from err
    if y.ndim == 2 and 1 in y.shape:
        y = y.ravel()
    if y.shape != (nobs,):
        raise DataError(
            f"refit needs one response value per row used in the fit ({nobs}), "
            f"got an array of shape {y.shape} for {name!r}"
        )
    if not np.all(np.isfinite(y)):
        raise DataError(f"the new response for {name!r} has missing or infinite values")
    return y


def _copy_frame(frame: ModelFrame) -> ModelFrame:
    """Return a shallow copy of a model frame that leaves a deferred ``data`` deferred.

    ``copy.copy`` would build it through ``__getstate__``.
    """
    new = object.__new__(type(frame))
    new.__dict__.update(frame.__dict__)
    return new
