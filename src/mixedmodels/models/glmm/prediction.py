"""What a fitted GLMM gives for its data and for new data.

That is residuals, predictions on the link or response scale, simulated
responses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, PredictionError
from mixedmodels.support.newdata import include_random

__all__ = ["GlmerPredictions"]


class GlmerPredictions:
    """The prediction part of a generalized linear mixed model.

    A mixin of :class:`~mixedmodels.models.glmm.model.GeneralizedLinearMixedModel`
    (not used by itself): it reads the fit's modes, engine and family. It
    gives the model :meth:`residuals`, :meth:`predict` and :meth:`simulate`.
    """

    def residuals(self, type: str = "deviance") -> pd.Series:
        """Return the residuals indexed like the data.

        ``type`` is ``"deviance"`` (R's default for glmer), ``"pearson"``,
        ``"response"`` (y - μ) or ``"working"``.
        """
        self.require_fit()
        e, m = self._engine, self._modes_final
        y, mu = e.y, m.mu
        if type == "deviance":
            r = np.sign(y - mu) * np.sqrt(np.maximum(self._dev_resids(), 0.0))
        elif type == "pearson":
            r = (y - mu) * np.sqrt(e.wt / self.family.variance(mu))
        elif type == "response":
            r = y - mu
        elif type == "working":
            r = (y - mu) / self.family.mu_eta(m.eta)
        else:
            raise DataError(
                f"residual type must be 'deviance', 'pearson', 'response' or 'working', not {type!r}"
            )
        return pd.Series(r, index=self.frame.data.index, name=f"{type}_residuals")

    def predict(
        self,
        newdata: Any = None,
        re_form: str | None = None,
        type: str = "link",
        new_levels: str = "population",
        interval: str = "none",
        level: float = 0.95,
    ) -> pd.Series | pd.DataFrame:
        """Predictions on the link (default, as R) or response scale.

        Parameters
        ----------
        newdata : DataFrame, optional
            New rows; None predicts the fitted data.
        re_form : None or "~0"
            None includes every random effect; ``"~0"`` gives population predictions.
        type : {"link", "response"}
        new_levels : {"population", "error", "nan"}
            What an unseen grouping level gets (zero random effects by default).
        interval : {"none", "confidence"}
            ``"confidence"``: a DataFrame ``fit, lower, upper`` with the
            uncertainty of the fixed effects (x'V_β x) on the link scale,
            mapped through the inverse link for ``type="response"``. Intervals
            for a new observation need the response distribution: use
            :meth:`simulate` (or :meth:`bootstrap`) for those.
        level : float
            Coverage of the intervals.
        """
        self.require_fit()
        if type not in ("link", "response"):
            raise PredictionError(f"type must be 'link' or 'response', not {type!r}")
        if interval not in ("none", "confidence"):
            raise PredictionError(
                f"interval must be 'none' or 'confidence' for a glmer fit, not {interval!r}: "
                "a prediction interval of a new observation needs the response distribution "
                "(see simulate())"
            )
        fr = self.frame
        if newdata is None:
            include_re = include_random(re_form)
            eta = self._modes_final.eta if include_re else self._engine.offset + fr.fixed.X @ self._beta
            index = fr.data.index
        else:
            eta, index = self._newdata_eta(newdata, re_form, new_levels)
        if interval == "confidence":
            from mixedmodels.inference.prediction import interval_frame, prediction_variance

            variance = prediction_variance(self, newdata, re_form, new_levels, residual=False)
            transform = self.family.linkinv if type == "response" else None
            return interval_frame(np.asarray(eta, float), variance, interval, level,
                                  transform=transform, re_form=re_form)
        values = eta if type == "link" else self.family.linkinv(eta)
        return pd.Series(np.asarray(values, float), index=index, name="predicted")

    def simulate(
        self, nsim: int = 1, seed: int | np.random.Generator | None = None, use_u: bool = False
    ) -> pd.DataFrame:
        """Return new responses from the fitted model, one column per simulation.

        Binomial: proportions of the trials, as R's ``simulate`` for a
        proportion response; counts for cbind are ``proportion × trials``.

        Parameters
        ----------
        nsim : int
        seed : int or Generator, optional
        use_u : bool
            Condition on the fitted random effects instead of drawing new ones.
        """
        self.require_fit()
        rng = np.random.default_rng(seed)
        fr, e = self.frame, self._engine
        base = e.offset + fr.fixed.X @ self._beta
        lams = self.lambdas(self.theta_vector)
        out = np.empty((fr.nobs, nsim))
        dispersion = self.sigma**2  # φ: 1 for the families without a scale
        for s in range(nsim):
            eta = base.copy()
            for term, lam, b in zip(fr.terms, lams, self.b):
                bb = b if use_u else rng.standard_normal((term.nlevels, term.k)) @ lam.T
                eta += np.einsum("nk,nk->n", term.z, bb[term.codes])
            out[:, s] = self.family.simulate(self.family.linkinv(eta), e.wt, dispersion, rng)
        cols = [f"sim_{i + 1}" for i in range(nsim)]
        return pd.DataFrame(out, index=fr.data.index, columns=cols)
