"""nlme's ``gls``: generalised least squares with residual structures.

Within a group i the residuals have covariance σ² V_i, V_i = A_i R_i A_i
with A_i = diag(1 / w) (``w`` nlme's ``varWeights`` of the variance
function) and R_i the correlation structure's matrix. The rows of group i
are whitened by L_i⁻¹ diag(w) (R_i = L_i L_iᵀ); β is the least-squares fit
of the whitened data and σ is profiled out, as nlme's ``glsEstimate``:

- ML: ``-N/2 (log 2π + 1 + log(RSS/N)) + Σ log w - Σ_i log det L_i``;
- REML: ``-(N-p)/2 (log 2π + 1 + log(RSS/(N-p))) + Σ log w - Σ_i log det L_i
  - Σ log |diag R_X|`` (R_X of the QR of the whitened X).

The structures' unconstrained parameters (correlation first, then
variance, as nlme's) are optimised jointly from nlme's starts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.linalg import solve_triangular

from mixedmodels.exceptions import ArgumentError, DataError, ModelSpecError
from mixedmodels.report.results import MixedModelResults
from mixedmodels.residual import CorrelationStructure, VarianceFunction
from mixedmodels.spec.checks import check_columns, used_columns
from mixedmodels.spec.coding import factor_contrasts
from mixedmodels.spec.columns import drop_missing_rows, drop_unused_categories
from mixedmodels.spec.fixed import build_fixed
from mixedmodels.spec.formula import parse_formula
from mixedmodels.spec.guard import CONSTANTS
from mixedmodels.spec.levels import factor_codes, to_pandas
from mixedmodels.spec.response import response_values

__all__ = ["GeneralizedLeastSquares", "gls"]


def _columns_of(expression: str | None) -> list[str]:
    """Return the column names of a ``+``-separated expression (``"cx + cy"``)."""
    if expression is None:
        return []
    return [name.strip() for name in expression.split("+") if name.strip() not in ("", "1")]


class GeneralizedLeastSquares(MixedModelResults):
    """A ``gls`` fit: nlme's generalised least squares (REML or ML).

    Parameters
    ----------
    formula : str
        The fixed-effects formula, ``"distance ~ age * Sex"`` (no random terms).
    data : DataFrame
        The data.
    correlation : CorrelationStructure, optional
        nlme's ``correlation=`` (``corCompSymm(form="~ 1 | Subject")`` ...);
        None for independent residuals.
    weights : VarianceFunction, optional
        nlme's ``weights=`` (``varIdent(form="~ 1 | Sex")`` ...); None for
        equal variances.
    method : {"REML", "ML"}
        The criterion maximised (nlme's default REML).

    Attributes
    ----------
    correlation_params : Series
        The correlation parameters in nlme's natural scale and names.
    variance_params : Series
        The variance function's parameters in nlme's natural scale and names.
    """

    model_kind = "gls"

    def __init__(
        self,
        formula: str,
        data: Any,
        correlation: CorrelationStructure | None = None,
        weights: VarianceFunction | None = None,
        method: str = "REML",
    ):
        if method not in ("REML", "ML"):
            raise ArgumentError(f"method must be 'REML' or 'ML', not {method!r}")
        if correlation is not None and not isinstance(correlation, CorrelationStructure):
            raise ArgumentError("correlation= must be a correlation structure (corAR1(), corCompSymm(...), ...)")
        if weights is not None and not isinstance(weights, VarianceFunction):
            raise ArgumentError("weights= must be a variance function (varIdent(...), varPower(), ...)")
        if weights is not None and weights.covariate_name and "fitted(" in weights.covariate_name:
            raise ModelSpecError("gls: variance functions of fitted(.) are not supported yet")
        self.formula = formula
        self.method = method
        self.correlation = correlation
        self.variance = weights
        self.parsed = parse_formula(formula)
        if self.parsed.random:
            raise ModelSpecError(f"gls takes no random-effects terms; {formula!r} has some (use lme)")
        self._setup(to_pandas(data))

    # ------------------------------------------------------------------ data
    def _setup(self, data: pd.DataFrame) -> None:
        cor, var = self.correlation, self.variance
        extra_columns = set()
        if cor is not None:
            extra_columns |= set(cor.covariates) | set(_columns_of(cor.group))
        if var is not None:
            extra_columns |= set(_columns_of(var.covariate_name)) | set(_columns_of(var.strata_name))
        used = {c for c in used_columns(self.parsed) if c in data.columns or c not in CONSTANTS}
        check_columns(used, data, self.formula)  # names the column, points at it, suggests a close one
        missing = sorted(c for c in extra_columns if c not in data.columns)
        if missing:
            raise DataError(
                f"gls: column(s) {', '.join(map(repr, missing))} of the correlation or variance "
                "structure's form not in the data"
            )
        columns = sorted(used | extra_columns)
        frame, _, n_dropped, _ = drop_missing_rows(data, columns, {})
        if len(frame) == 0:
            raise DataError("no complete rows remain after dropping rows with missing values")
        frame = drop_unused_categories(frame, columns)
        self.data = frame
        self.n_dropped_rows = n_dropped
        codings = factor_contrasts(frame, columns, None)
        self.fixed = build_fixed(self.parsed, frame, codings)
        self.X = np.asarray(self.fixed.X, dtype=float)
        self.y = np.asarray(response_values(self.parsed, frame), dtype=float)
        n = len(self.y)
        # groups of the correlation structure, ordered by the grouping factor's levels
        if cor is not None and cor.group is not None:
            names = _columns_of(cor.group)
            if len(names) != 1:
                raise ModelSpecError(f"gls: one grouping factor in the correlation form, not {cor.group!r}")
            codes, _ = factor_codes(frame[names[0]])  # R's level order, as the random-effects groups
            order = np.argsort(codes, kind="stable")
            bounds = np.flatnonzero(np.diff(codes[order])) + 1
            self.groups = np.split(order, bounds)
        else:
            self.groups = [np.arange(n)]
        self.positions: list[np.ndarray] = []
        if cor is not None:
            for idx in self.groups:
                if cor.covariates:
                    values = frame[cor.covariates].to_numpy(dtype=float)[idx]
                    pos = values[:, 0] if cor.position_ndim == 1 else values
                else:
                    pos = np.arange(len(idx), dtype=float)
                    if cor.position_ndim != 1:
                        raise ModelSpecError(f"{type(cor).__name__} needs covariates in its form (as '~ x + y')")
                self.positions.append(pos)
            cor.initialize(self.positions)
        self.strata = None
        self.var_covariate = None
        if var is not None:
            if var.strata_name is not None:
                self.strata = frame[var.strata_name].astype(str).to_numpy()
            if var.covariate_name is not None:
                self.var_covariate = frame[var.covariate_name].to_numpy(dtype=float)
            var.initialize(self.strata)

    # ------------------------------------------------------------------ criterion
    def _split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self._n_cor
        return params[:k], params[k:]

    @property
    def _n_cor(self) -> int:
        cor = self.correlation
        return 0 if cor is None or cor.fixed else cor.n_params

    def _whiten(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Return the whitened X and y and Σ log w - Σ_i log det L_i."""
        cor_params, var_params = self._split(params)
        n = len(self.y)
        if self.variance is not None:
            w = self.variance.weights(var_params, self.var_covariate, self.strata)
        else:
            w = np.ones(n)
        log_det = float(np.sum(np.log(w)))
        Xw = self.X * w[:, None]
        yw = self.y * w
        if self.correlation is None:
            return Xw, yw, log_det
        cp = cor_params if not self.correlation.fixed else self.correlation.start()
        Xt = np.empty_like(Xw)
        yt = np.empty_like(yw)
        for idx, pos in zip(self.groups, self.positions):
            L = self.correlation.factor(cp, pos)
            Xt[idx] = solve_triangular(L, Xw[idx], lower=True)
            yt[idx] = solve_triangular(L, yw[idx], lower=True)
            log_det -= float(np.log(np.diag(L)).sum())
        return Xt, yt, log_det

    def _criterion(self, params: np.ndarray) -> dict[str, Any]:
        Xt, yt, log_det = self._whiten(params)
        n, p = Xt.shape
        q, r = np.linalg.qr(Xt)
        beta = solve_triangular(r, q.T @ yt)
        rss = float(np.sum((yt - Xt @ beta) ** 2))
        if self.method == "ML":
            df = n
            loglik = -n / 2 * (math.log(2 * math.pi) + 1 + math.log(rss / n)) + log_det
        else:
            df = n - p
            loglik = (
                -df / 2 * (math.log(2 * math.pi) + 1 + math.log(rss / df))
                + log_det
                - float(np.log(np.abs(np.diag(r))).sum())
            )
        return {"loglik": loglik, "beta": beta, "r": r, "sigma2": rss / df}

    def _objective(self, params: np.ndarray) -> float:
        try:
            value = -self._criterion(params)["loglik"]
        except (DataError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf
        return value if np.isfinite(value) else np.inf

    def start(self) -> np.ndarray:
        """Return nlme's start of the free parameters (unconstrained scale)."""
        parts = []
        if self._n_cor:
            parts.append(np.asarray(self.correlation.start(), dtype=float))
        if self.variance is not None:
            parts.append(np.asarray(self.variance.start(), dtype=float))
        return np.concatenate(parts) if parts else np.zeros(0)

    # ------------------------------------------------------------------ fit
    def fit(self) -> GeneralizedLeastSquares:
        """Maximise the REML or ML log-likelihood over the structures' parameters."""
        x0 = self.start()
        if x0.size:
            with np.errstate(all="ignore"):
                best = optimize.minimize(self._objective, x0, method="BFGS", options={"gtol": 1e-8})
                again = optimize.minimize(self._objective, best.x, method="Nelder-Mead",
                                          options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
                if again.fun < best.fun:
                    best = again
                polish = optimize.minimize(self._objective, best.x, method="BFGS", options={"gtol": 1e-9})
                if polish.fun <= best.fun:
                    best = polish
            if not np.isfinite(best.fun):
                raise DataError("gls: the log-likelihood is not finite at any point the optimiser tried")
            self.params = np.asarray(best.x, dtype=float)
            self.optimizer_result = best
        else:
            self.params = x0
            self.optimizer_result = None
        state = self._criterion(self.params)
        self.beta = state["beta"]
        self.sigma = math.sqrt(state["sigma2"])
        self.loglik = state["loglik"]
        rinv = solve_triangular(state["r"], np.eye(len(self.beta)))
        names = self.fixed.names
        self.vcov = pd.DataFrame(state["sigma2"] * rinv @ rinv.T, index=names, columns=names)
        self._fitted = True
        return self

    # ------------------------------------------------------------------ results
    @property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates, named as in R."""
        self.require_fit()
        return pd.Series(self.beta, index=self.fixed.names, name="fixef")

    @property
    def nobs(self) -> int:
        """Number of observations used."""
        return len(self.y)

    @property
    def n_dropped(self) -> int:
        """Number of rows dropped for missing values."""
        return self.n_dropped_rows

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of groups of the correlation structure (empty without grouping)."""
        cor = self.correlation
        return {cor.group: len(self.groups)} if cor is not None and cor.group else {}

    @property
    def n_params(self) -> int:
        """Parameters counted by nlme's logLik df: β, the free structure parameters and σ."""
        return len(self.beta) + len(self.params) + 1

    @property
    def deviance(self) -> float:
        """-2 loglik."""
        return -2.0 * self.loglik

    @property
    def bic(self) -> float:
        """Schwarz's criterion as nlme's: ``-2 loglik + log(N - p) df`` for REML, ``log(N)`` for ML."""
        self.require_fit()
        n = self.nobs - (len(self.beta) if self.method == "REML" else 0)
        return -2.0 * self.loglik + math.log(n) * self.n_params

    @property
    def df_residual(self) -> int:
        """Residual degrees of freedom, nlme's denominator df for gls: N - p."""
        return self.nobs - len(self.beta)

    @property
    def fitted(self) -> np.ndarray:
        """Fitted values X β, in the rows' order (nlme's ``fitted``)."""
        self.require_fit()
        return self.X @ self.beta

    @property
    def residuals(self) -> np.ndarray:
        """Response residuals y - X β (nlme's ``residuals(type = "response")``)."""
        return self.y - self.fitted

    @property
    def correlation_params(self) -> pd.Series:
        """Correlation parameters, natural scale, nlme's names."""
        self.require_fit()
        cor = self.correlation
        if cor is None:
            return pd.Series(dtype=float, name="correlation")
        u = self.params[: self._n_cor] if not cor.fixed else cor.start()
        return pd.Series(cor.natural(u), index=cor.param_names, name="correlation")

    @property
    def variance_params(self) -> pd.Series:
        """Variance-function parameters, natural scale, nlme's names."""
        self.require_fit()
        var = self.variance
        if var is None:
            return pd.Series(dtype=float, name="variance")
        u = self.params[self._n_cor:]
        return pd.Series(var.natural(u), index=var.param_names, name="variance")

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """Return nlme's ``summary(fit)$tTable``: estimate, SE, t and p on N - p df.

        Parameters
        ----------
        ddf : None
            Accepted for the shared protocol; gls has one rule (N - p).
        """
        if ddf is not None:
            raise ArgumentError("gls has one denominator df (N - p); ddf= is not taken")
        self.require_fit()
        se = self.se
        t = self.fixef / se
        p = 2 * stats.t.sf(np.abs(t), self.df_residual)
        return pd.DataFrame({"estimate": self.fixef, "se": se, "t": t, "p": p})

    def summary(self, ddf: str | None = None, correlation: bool | None = None) -> str:  # type: ignore[override]
        """Return a short text summary (nlme's layout is not reproduced yet)."""
        self.require_fit()
        lines = [
            f"Generalized least squares fit by {self.method}",
            f"  Model: {self.formula}",
            f"  N = {self.nobs}, logLik = {self.loglik:.6g}, AIC = {self.aic:.6g}, BIC = {self.bic:.6g}",
        ]
        if self.correlation is not None:
            lines.append(f"Correlation {type(self.correlation).__name__}({self.correlation.form}):")
            lines.append(self.correlation_params.to_string())
        if self.variance is not None:
            lines.append(f"Variance function {type(self.variance).__name__}({self.variance.form}):")
            lines.append(self.variance_params.to_string())
        lines.append("Coefficients:")
        lines.append(self.coef_table().to_string())
        lines.append(f"Residual standard error: {self.sigma:.6g} on {self.df_residual} degrees of freedom")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary() if self._fitted else f"gls({self.formula!r}), not fitted"

    def __repr__(self) -> str:
        return f"<GeneralizedLeastSquares {self.formula!r} ({self.method}){'' if self._fitted else ', not fitted'}>"

    def _repr_html_(self) -> str:
        return "<pre>" + str(self) + "</pre>"


def gls(
    formula: str,
    data: Any,
    correlation: CorrelationStructure | None = None,
    weights: VarianceFunction | None = None,
    method: str = "REML",
) -> GeneralizedLeastSquares:
    """Fit nlme's ``gls`` (generalised least squares with residual structures).

    Parameters
    ----------
    formula : str
        ``"response ~ fixed effects"``.
    data : DataFrame
        The data.
    correlation : CorrelationStructure, optional
        A correlation structure (``corCompSymm(form="~ 1 | Subject")`` ...).
    weights : VarianceFunction, optional
        A variance function (``varIdent(form="~ 1 | Sex")`` ...).
    method : {"REML", "ML"}
        The criterion.

    Returns
    -------
    GeneralizedLeastSquares
        The fitted model.
    """
    return GeneralizedLeastSquares(formula, data, correlation=correlation, weights=weights, method=method).fit()
