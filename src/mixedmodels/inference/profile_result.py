"""The result of a likelihood profile (lme4's ``thpr``) and its splines.

The splines turn the profile's points into confidence bounds: R's
``interpSpline`` of zeta against the parameter and its piecewise inverse
``backSpline`` (see :mod:`mixedmodels.inference.profile` for how the points
are computed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import MixedModelsError
from mixedmodels.inference.parameters import check_level, interval_frame

__all__ = ["PolySpline", "ProfileResult", "back_spline", "forward_spline"]


# ---------------------------------------------------------------------------- splines


@dataclass
class PolySpline:
    """A piecewise cubic as R's ``polySpline``.

    On (knots[i], knots[i+1]] the polynomial Σ_d coef[i, d] (x - knots[i])^d;
    NaN outside the knots.

    Attributes
    ----------
    knots : ndarray
        The increasing knots.
    coef : ndarray, shape (len(knots), 4)
        The polynomials' coefficients, constant term first.
    """

    knots: np.ndarray
    coef: np.ndarray  # (nk, 4)

    def __call__(self, x: Any) -> np.ndarray:
        """Evaluate the spline at ``x`` (NaN outside the knots)."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        k = self.knots
        i = np.searchsorted(k, x, side="left") - 1  # right-closed intervals, as R's cut()
        i = np.where(x == k[0], 0, i)
        inside = (i >= 0) & (i < len(k) - 1) & np.isfinite(x)
        j = np.clip(i, 0, len(k) - 1)
        dx = x - k[j]
        c = self.coef[j]
        y = ((c[:, 3] * dx + c[:, 2]) * dx + c[:, 1]) * dx + c[:, 0]
        return np.where(inside, y, np.nan)


def forward_spline(x: np.ndarray, zeta: np.ndarray):
    """Return R's ``interpSpline(zeta ~ x)``: the natural interpolating cubic spline.

    A scipy ``CubicSpline``; linear beyond the knots, as R's npolySpline.
    """
    from scipy.interpolate import CubicSpline

    return CubicSpline(x, zeta, bc_type="natural", extrapolate=True)


def back_spline(x: np.ndarray, zeta: np.ndarray) -> PolySpline:
    """Return R's ``backSpline`` of ``interpSpline(zeta ~ x)``: x as a function of zeta.

    Cubic on each interval between knots with the values and the reciprocal
    slopes of the forward spline at both ends, quadratic on the first and last
    intervals (linear where the quadratic would bend the wrong way). Raises
    ``ValueError`` when zeta is not monotone at the knots.
    """
    x = np.asarray(x, dtype=float)
    zeta = np.asarray(zeta, dtype=float)
    nk = len(x)
    kdiff = np.diff(x)
    if np.any(kdiff <= 0):
        raise ValueError("knot positions must be strictly increasing")
    slope = forward_spline(x, zeta)(x, 1)
    adiff = np.diff(zeta)
    if np.all(adiff < 0):
        reverse = True
    elif np.all(adiff > 0):
        reverse = False
    else:
        raise ValueError("spline must be monotone")
    b = np.zeros((nk, 4))
    b[:, 0] = x
    b[:, 1] = 1.0 / slope
    for i in range(nk - 1):
        a = np.array([[adiff[i] ** 2, adiff[i] ** 3], [2 * adiff[i], 3 * adiff[i] ** 2]])
        rhs = np.array([kdiff[i] - adiff[i] * b[i, 1], b[i + 1, 1] - b[i, 1]])
        b[i, 2:4] = np.linalg.solve(a, rhs)
    b[nk - 1, 1:4] = np.nan
    last = nk - 2
    if nk > 2:
        b[0, 3] = b[last, 3] = 0.0
        a = np.array([[adiff[0], adiff[0] ** 2], [1.0, 2 * adiff[0]]])
        b[0, 1:3] = np.linalg.solve(a, np.array([kdiff[0], 1.0 / slope[1]]))
        b[last, 2] = (kdiff[last] - adiff[last] * b[last, 1]) / adiff[last] ** 2
    if b[0, 2] > 0:
        b[0, 2] = 0.0
        b[0, 1] = kdiff[0] / adiff[0]
    if b[last, 2] < 0:
        b[last, 2] = 0.0
        b[last, 1] = kdiff[last] / adiff[last]
    if reverse:
        return PolySpline(zeta[::-1].copy(), b[::-1].copy())
    return PolySpline(zeta.copy(), b)



# ---------------------------------------------------------------------------- result


@dataclass
class ProfileResult:
    """The profiles of a fit: lme4's ``thpr`` object.

    Attributes
    ----------
    table : DataFrame
        One row per evaluated point: ``parameter`` (the profiled one),
        ``value`` (its value), ``zeta`` (signed root of the ML deviance
        increase), then the values of every parameter there (the profiled one
        included), named as ``names``.
    names : {"lme4", "readable"}
        The naming of the parameters.
    estimates : Series
        The ML estimates (zeta = 0).
    bounds : dict of str to (float, float)
        The bounds of the variance parameters (0 and inf for SDs and σ, ±1 for
        correlations; a glmer's fixed effects too, ±inf): the interval ends
        where the inverse spline is undefined.
    parameters : list of str
        The profiled parameters, in lme4's order.
    """

    table: pd.DataFrame
    names: str
    estimates: pd.Series
    bounds: dict[str, tuple[float, float]] = field(repr=False)
    _back: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def parameters(self) -> list[str]:
        """The profiled parameters, in lme4's order."""
        return list(dict.fromkeys(self.table["parameter"]))

    def points(self, parameter: str) -> pd.DataFrame:
        """Return the (value, zeta) points of one parameter's profile, by value."""
        if parameter not in self.parameters:
            raise MixedModelsError(
                f"{parameter!r} was not profiled; the profiled parameters are "
                + ", ".join(self.parameters)
            )
        rows = self.table[self.table["parameter"] == parameter]
        return rows[["value", "zeta"]].reset_index(drop=True)

    def _inverse(self, parameter: str):
        if parameter not in self._back:
            pts = self.points(parameter).dropna()
            try:
                self._back[parameter] = back_spline(pts["value"].to_numpy(), pts["zeta"].to_numpy())
            except (ValueError, np.linalg.LinAlgError):
                self._back[parameter] = None
        return self._back[parameter]

    def confint(
        self, level: float = 0.95, parm: Any = None, non_mono_tol: float = 1e-2
    ) -> pd.DataFrame:
        """Return profile confidence intervals (lme4's ``confint.thpr``).

        The inverse spline at ∓z; where it is undefined, the parameter's bound
        (0 for SDs, ±1 for correlations). A profile whose spline cannot be
        inverted falls back to linear interpolation of the points, with a
        warning (NaN if the points decrease by more than ``non_mono_tol``).
        ``parm`` selects parameters by name (default all profiled ones).
        """
        check_level(level)
        wanted = None if parm is None else set(_as_list(parm))
        names = [p for p in self.parameters if wanted is None or p in wanted]
        z = NormalDist().inv_cdf((1 - level) / 2)
        lower, upper = [], []
        for name in names:
            lo, hi = self._bounds_for(name, np.array([z, -z]), non_mono_tol)
            lower.append(lo)
            upper.append(hi)
        return interval_frame(names, lower, upper, level, "profile")

    def _bounds_for(self, name: str, zeta: np.ndarray, non_mono_tol: float) -> tuple[float, float]:
        spline = self._inverse(name)
        if spline is not None:
            p = spline(zeta)
        else:
            pts = self.points(name).dropna()
            if pts.empty:
                warnings.warn(f"bad profile for {name}", stacklevel=3)
                return np.nan, np.nan
            if np.min(np.diff(pts["zeta"].to_numpy())) < -non_mono_tol:
                warnings.warn(f"non-monotonic profile for {name}", stacklevel=3)
                return np.nan, np.nan
            warnings.warn(
                f"bad spline fit for {name}: falling back to linear interpolation", stacklevel=3
            )
            p = np.interp(zeta, pts["zeta"], pts["value"], left=np.nan, right=np.nan)
        lo_bound, hi_bound = self.bounds.get(name, (np.nan, np.nan))
        lo = lo_bound if np.isnan(p[0]) else p[0]
        hi = hi_bound if np.isnan(p[1]) else p[1]
        return float(lo), float(hi)

    def plot(self, parameters: Sequence[str] | None = None, levels=(0.5, 0.8, 0.9, 0.95, 0.99),
             absolute: bool = False, ax=None):
        """Plot the profiles' zeta (lme4's ``xyplot`` of a profile), one panel per parameter.

        Each panel shows the interpolating spline, the evaluated points and the
        horizontal lines of the ``levels`` confidence bounds (|zeta| with
        ``absolute``); ``ax`` gives the axes to draw on. Needs matplotlib.

        Returns the matplotlib figure.
        """
        import matplotlib.pyplot as plt

        names = self.parameters if parameters is None else list(parameters)
        if ax is None:
            ncol = min(3, len(names))
            nrow = math.ceil(len(names) / ncol)
            fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow), squeeze=False)
            axes = axes.ravel()
        else:
            axes = np.atleast_1d(ax).ravel()
            fig = axes[0].figure
        cuts = [NormalDist().inv_cdf(0.5 + c / 2) for c in levels]
        for axis, name in zip(axes, names):
            pts = self.points(name).dropna()
            x, zeta = pts["value"].to_numpy(), pts["zeta"].to_numpy()
            grid = np.linspace(x.min(), x.max(), 201) if len(x) > 1 else x
            curve = forward_spline(x, zeta)(grid) if len(x) >= 3 else np.interp(grid, x, zeta)
            axis.plot(grid, np.abs(curve) if absolute else curve, color="C0")
            axis.plot(x, np.abs(zeta) if absolute else zeta, "+", color="C0")
            for c in cuts:
                for sign in ((1,) if absolute else (-1, 1)):
                    axis.axhline(sign * c, color="0.7", lw=0.6)
            axis.set_title(name, fontsize=9)
            axis.set_ylabel("|ζ|" if absolute else "ζ")
        for axis in axes[len(names):]:
            axis.set_visible(False)
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        return (
            f"<ProfileResult: {len(self.parameters)} parameters, {len(self.table)} points; "
            "use .confint(), .table, .plot()>"
        )


def _as_list(parm: Any) -> list:
    return [parm] if isinstance(parm, str) else list(parm)

