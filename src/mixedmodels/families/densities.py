"""R's log-densities, as nmath computes them (Catherine Loader's saddle-point algorithm).

They are accurate for huge counts, where ``log(y!)`` minus ``y log(mu)`` would
cancel catastrophically. The families' ``aic`` is built from these.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from mixedmodels.families.numeric import DBL_MIN, as_float, non_integer

__all__ = ["dbinom_log", "dgamma_log", "dpois_log"]

_M_2PI = 6.283185307179586476925286766559
_M_LN_2PI = 1.837877066409345483560659472811
_M_LN_SQRT_2PI = 0.918938533204672741780329736406

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
    n = as_float(n)
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
    x, np_ = np.broadcast_arrays(as_float(x), as_float(np_))
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


def _dpois_raw_log(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """R's ``dpois_raw(x, lambda, log = TRUE)`` (``x`` need not be a whole number)."""
    x, lam = np.broadcast_arrays(as_float(x), as_float(lam))
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


def dpois_log(x: Any, lam: Any) -> np.ndarray:
    """R's ``dpois(x, lambda, log = TRUE)``: ``-inf`` for a non-integer ``x``."""
    x, lam = np.broadcast_arrays(as_float(x), as_float(lam))
    with np.errstate(invalid="ignore"):
        raw = _dpois_raw_log(np.rint(x), lam)
        return np.select(
            [np.isnan(x) | np.isnan(lam), lam < 0, non_integer(x), (x < 0) | ~np.isfinite(x)],
            [x + lam, np.nan, -np.inf, -np.inf],
            raw,
        )


def dbinom_log(x: Any, n: Any, p: Any) -> np.ndarray:
    """R's ``dbinom(x, size = n, prob = p, log = TRUE)`` (Loader's algorithm)."""
    x, n, p = np.broadcast_arrays(as_float(x), as_float(n), as_float(p))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bad_arg = (p < 0) | (p > 1) | (n < 0) | non_integer(n)
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
                non_integer(x),
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


def dgamma_log(x: Any, shape: Any, scale: Any) -> np.ndarray:
    """R's ``dgamma(x, shape, scale = scale, log = TRUE)``."""
    x, shape, scale = np.broadcast_arrays(as_float(x), as_float(shape), as_float(scale))
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
