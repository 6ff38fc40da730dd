"""The Numba kernels of :mod:`mixedmodels.linalg.kernels.glmm_kernels`.

Imported only when Numba is installed and a model uses them. Module-level
functions, so that Numba's on-disk cache finds them again in the next process
(functions defined inside another function are recompiled every time).
"""

import math

import numba
import numpy as np

EPS = float(np.finfo(float).eps)
INVEPS = 1.0 / EPS
PROBIT_THRESH = 8.125890664701906  # R's -qnorm(.Machine$double.eps)
INV_SQRT_2PI = 0.3989422804014327
LOG_EPS = math.log(EPS)  # below it the log link's μ is clamped to EPS


@numba.njit(cache=True, nogil=True, inline="always")
def linkinv(eta, link):
    """Return μ = g⁻¹(η) for the link coded ``link`` (logit 0, log 1, probit 2, cloglog 3).

    With R's clamps (``family.c``): the logit's η beyond ±30, the log's μ at
    least ε, the probit's η within ±``PROBIT_THRESH``, the cloglog's μ within
    [ε, 1 - ε].
    """
    if link == 0:  # logit
        if eta < -30.0:
            t = EPS
        elif eta > 30.0:
            t = INVEPS
        else:
            t = math.exp(eta)
        return t / (1.0 + t)
    if link == 1:  # log
        return max(math.exp(eta), EPS)
    if link == 2:  # probit: pnorm, η clamped
        e = min(max(eta, -PROBIT_THRESH), PROBIT_THRESH)
        return 0.5 * math.erfc(-e / math.sqrt(2.0))
    mu = -math.expm1(-math.exp(eta))  # cloglog
    return max(min(mu, 1.0 - EPS), EPS)


@numba.njit(cache=True, nogil=True, inline="always")
def mu_eta(eta, mu, link):
    """Return dμ/dη at η, given μ = linkinv(η).

    For the logit and log links it comes from μ (μ(1 - μ) and μ, equal to R's
    exp-based formulas up to rounding), saving an exp per row.
    """
    if link == 0:
        if eta > 30.0 or eta < -30.0:
            return EPS
        return mu * (1.0 - mu)
    if link == 1:
        return mu
    if link == 2:
        return max(INV_SQRT_2PI * math.exp(-0.5 * eta * eta), EPS)
    e = min(eta, 700.0)
    return max(math.exp(e) * math.exp(-math.exp(e)), EPS)


@numba.njit(cache=True, nogil=True, inline="always")
def xlogy(x, y):
    """Return x log y, 0 for x = 0 (R's ``y_log_y`` convention)."""
    return 0.0 if x == 0.0 else x * math.log(y)


@numba.njit(cache=True, nogil=True, inline="always")
def variance(mu, fam):
    """Return the variance function at μ for the family coded ``fam`` (binomial 0, Poisson 1)."""
    return mu * (1.0 - mu) if fam == 0 else mu


@numba.njit(cache=True, nogil=True, inline="always")
def deviance_part(y, mu, wt, fam):
    """Return the μ-dependent part of a row's deviance (the caller adds the saturated part)."""
    if fam == 0:
        return -2.0 * wt * (xlogy(y, mu) + xlogy(1.0 - y, 1.0 - mu))
    return -2.0 * wt * (xlogy(y, mu) - mu)


@numba.njit(cache=True, nogil=True)
def assemble(codes, zv, lam, offs, X, XT, eta, mu, y, wt, offset, link, fam, l0, Q1, downdate=True):
    """Return the PWLS system at the working weights of (η, μ), the first term eliminated.

    The first term's levels are eliminated level by level.

    ``XT`` is X' in C order (p x n), for X'WX (see :func:`weighted_gram`).
    Returns L0 (ℓ0: the first term's diagonal factor), R (ℓ0 x m: the rows
    L0⁻¹B̃ below it), S (m x m: the Schur complement, upper triangle),
    y0 (ℓ0) and yr (m): the right-hand side after the forward sweep.
    With ``downdate=False`` S is returned before R'R is taken off it (the
    caller does that, see :func:`sparse_downdate`).
    """
    L0, c0, R, S, yr = weighted_sums(codes, zv, lam, offs, X, XT, eta, mu, y, wt, offset, link, fam, l0, Q1)
    return eliminate(L0, c0, R, S, yr, Q1, downdate)


@numba.njit(cache=True, nogil=True)
def weighted_sums(codes, zv, lam, offs, X, XT, eta, mu, y, wt, offset, link, fam, l0, Q1):
    """Return the sums of the PWLS system at the working weights of (η, μ), before elimination.

    That is before the first term's levels are eliminated: (L0, c0, R, S, yr)
    with L0 the first term's diagonal of Λ'Z'WZΛ (without the identity), c0
    and yr the right-hand side, R the first term's rows of the off-diagonal
    block and S the rest (upper triangle; the X block whole).
    """
    n = y.shape[0]
    p = X.shape[1]
    m = Q1 + p
    w = np.empty(n)
    wz = np.empty(n)
    for i in range(n):
        if (fam == 0 and link == 0 and -30.0 <= eta[i] <= 30.0) or (fam == 1 and link == 1):
            # canonical link: dμ/dη = V(μ), so w = wt dμ/dη and w (y - μ)/(dμ/dη)
            # = wt (y - μ): no division
            w[i] = wt[i] * mu_eta(eta[i], mu[i], link)
            wz[i] = w[i] * (eta[i] - offset[i]) + wt[i] * (y[i] - mu[i])
        else:
            d = mu_eta(eta[i], mu[i], link)
            w[i] = wt[i] * d * d / variance(mu[i], fam)
            wz[i] = w[i] * (eta[i] - offset[i] + (y[i] - mu[i]) / d)
    L0 = np.zeros(l0)
    c0 = np.zeros(l0)
    S = np.zeros((m, m))
    yr = np.zeros(m)
    if p:
        weighted_gram(XT, w, wz, S, yr, Q1)
    R = _accumulate_rows(codes, zv, lam, offs, w, wz, X, l0, Q1, L0, c0, S, yr)
    return L0, c0, R, S, yr


@numba.njit(cache=True, nogil=True)
def scaled_sums(unit, lam, offs, Q1, beta, joint):
    """Return :func:`weighted_sums` at λ from ``unit``, its result at unit λ.

    ``unit`` is taken with X and the same weights: every sum is a product of
    the weights with at most two λ's, so this costs O(ℓ0 m) instead of a pass
    over the rows. Fixed β
    (``joint`` False): the system without X, its right-hand side at the
    offset plus Xβ (the working response's η - offset loses Xβ, and the
    unit sums hold Z'WX).
    """
    L0u, c0u, Ru, Su, yru = unit
    l0 = L0u.shape[0]
    m_unit = Su.shape[0]
    T = offs.shape[0]
    sc = np.ones(m_unit)  # λ of each Schur column's term (1 for X's columns)
    for t in range(1, T):
        end = offs[t + 1] if t + 1 < T else Q1
        for c in range(offs[t], end):
            sc[c] = lam[t]
    m = m_unit if joint else Q1
    lam0 = lam[0]
    L0 = L0u * (lam0 * lam0)
    c0 = np.empty(l0)
    R = np.empty((l0, m))
    for s in range(l0):
        t = c0u[s]
        if not joint:
            for j in range(beta.shape[0]):
                t -= Ru[s, Q1 + j] * beta[j]
        c0[s] = lam0 * t
        for c in range(m):
            R[s, c] = (lam0 * sc[c]) * Ru[s, c]
    S = np.empty((m, m))
    yr = np.empty(m)
    for a in range(m):
        t = yru[a]
        if not joint:
            for j in range(beta.shape[0]):
                t -= Su[a, Q1 + j] * beta[j]
        yr[a] = sc[a] * t
        for b in range(m):
            S[a, b] = (sc[a] * sc[b]) * Su[a, b]
    return L0, c0, R, S, yr


@numba.njit(cache=True, nogil=True)
def eliminate(L0, c0, R, S, yr, Q1, downdate):
    """Eliminate the first term's levels from :func:`weighted_sums`' system, in place.

    L0 becomes its diagonal factor, R scaled by it, y0 the forward sweep,
    S and yr the Schur complement's (S's downdate left to the caller when
    ``downdate`` is False). Returns (L0, R, S, y0, yr).
    """
    l0, m = R.shape
    y0 = np.empty(l0)
    nnz = 0
    for s in range(l0):
        L0[s] = math.sqrt(L0[s] + 1.0)
        y0[s] = c0[s] / L0[s]
        inv = 1.0 / L0[s]
        for c in range(m):
            if R[s, c] != 0.0:
                R[s, c] *= inv
                nnz += 1
    for c in range(Q1):
        S[c, c] += 1.0
    yr -= np.dot(y0, R)
    if not downdate:
        return L0, R, S, y0, yr
    if nnz > 0.25 * l0 * m:  # dense enough for BLAS
        S -= np.dot(R.T, R)
        return L0, R, S, y0, yr
    sparse_downdate(R, S)
    return L0, R, S, y0, yr


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def weighted_gram(XT, w, wz, S, yr, Q1):
    """Add X'WX (both triangles) and X'Wz into S's and yr's last p rows.

    From X' (p x n, C order): contiguous columns whose products the compiler
    may vectorise (reassociating only these sums), twice as fast as a BLAS
    call on a handful of columns (tall, thin products are BLAS's worst case).
    """
    p, n = XT.shape
    for j in range(p):
        a = XT[j]
        for k in range(j, p):
            b = XT[k]
            t = 0.0
            for i in range(n):
                t += w[i] * a[i] * b[i]
            S[Q1 + j, Q1 + k] = t
            S[Q1 + k, Q1 + j] = t
        t = 0.0
        for i in range(n):
            t += wz[i] * a[i]
        yr[Q1 + j] = t


@numba.njit(cache=True, nogil=True)
def _accumulate_rows(codes, zv, lam, offs, w, wz, X, l0, Q1, L0, c0, S, yr):
    """Add the rows' sums into L0, c0, S and yr, and return them for R, a new (ℓ0 x m) array."""
    R = np.zeros((l0, Q1 + X.shape[1]))
    if codes.shape[0] == 2:
        _accumulate_two(codes, zv, lam, offs[1], w, wz, X, Q1, L0, c0, S, yr, R)
    else:
        _accumulate_general(codes, zv, lam, offs, w, wz, X, Q1, L0, c0, S, yr, R)
    return R


@numba.njit(cache=True, nogil=True)
def _accumulate_two(codes, zv, lam, off1, w, wz, X, Q1, L0, c0, S, yr, R):
    """Add the rows' sums as :func:`_accumulate_general` does, for two terms (the common case).

    In a loop without the general one's index arrays. Rows sorted by a term
    (as data usually are) make that term's sums chains of dependent
    read-modify-writes of the same entries: for a term whose level mostly stays
    the same from row to row, the sums run in registers (and a small array for
    X's columns) and are added when the level changes (VerbAgg, sorted by item:
    35% less time).
    """
    n = w.shape[0]
    p = X.shape[1]
    lam0, lam1 = lam[0], lam[1]
    codes0, codes1 = codes[0], codes[1]
    zv0, zv1 = zv[0], zv[1]
    # (without X columns the first term's running sums cost no more than the
    # direct update even when its level changes every row: measured faster)
    run0 = p == 0 or _mostly_repeated(codes0)
    run1 = _mostly_repeated(codes1)
    s_prev, l0_run, c0_run = -1, 0.0, 0.0
    r_run = np.zeros(p)  # R[s, Q1 + j] of the current first-term level
    a_prev, yr_run, d_run = -1, 0.0, 0.0
    x_run = np.zeros(p)  # S[ia, Q1 + j] of the current second-term level
    for i in range(n):
        s = codes0[i]
        ia = off1 + codes1[i]
        a0 = zv0[i] * lam0
        va = zv1[i] * lam1
        wi = w[i]
        wzi = wz[i]
        wa0 = wi * a0
        wva = wi * va
        R[s, ia] += wa0 * va
        if run0:
            if s != s_prev:
                if s_prev >= 0:
                    _flush(L0[s_prev:], l0_run, c0[s_prev:], c0_run, R[s_prev], Q1, r_run)
                s_prev, l0_run, c0_run = s, 0.0, 0.0
            l0_run += wa0 * a0
            c0_run += wzi * a0
            for j in range(p):
                r_run[j] += wa0 * X[i, j]
        else:
            L0[s] += wa0 * a0
            c0[s] += wzi * a0
            for j in range(p):
                R[s, Q1 + j] += wa0 * X[i, j]
        if run1:
            if ia != a_prev:
                if a_prev >= 0:
                    _flush(S[a_prev, a_prev:], d_run, yr[a_prev:], yr_run, S[a_prev], Q1, x_run)
                a_prev, yr_run, d_run = ia, 0.0, 0.0
            yr_run += wzi * va
            d_run += wva * va
            for j in range(p):
                x_run[j] += wva * X[i, j]
        else:
            yr[ia] += wzi * va
            S[ia, ia] += wva * va
            for j in range(p):
                S[ia, Q1 + j] += wva * X[i, j]
    if s_prev >= 0:
        _flush(L0[s_prev:], l0_run, c0[s_prev:], c0_run, R[s_prev], Q1, r_run)
    if a_prev >= 0:
        _flush(S[a_prev, a_prev:], d_run, yr[a_prev:], yr_run, S[a_prev], Q1, x_run)


@numba.njit(cache=True, nogil=True)
def _mostly_repeated(codes):
    """Return whether most of the first 1,024 rows repeat the previous row's level."""
    m = min(codes.shape[0], 1025)
    same = 0
    for i in range(1, m):
        if codes[i] == codes[i - 1]:
            same += 1
    return 2 * same > m - 1


@numba.njit(cache=True, nogil=True, inline="always")
def _flush(diag, d, vec, v, row, Q1, run):
    """Add a level's running sums to its entries.

    ``d`` to its diagonal entry ``diag[0]``, ``v`` to its right-hand side
    ``vec[0]`` (one-element views) and ``run`` to X's columns of its ``row``
    (``run`` then reset).
    """
    diag[0] += d
    vec[0] += v
    for j in range(run.shape[0]):
        row[Q1 + j] += run[j]
        run[j] = 0.0


@numba.njit(cache=True, nogil=True)
def _accumulate_general(codes, zv, lam, offs, w, wz, X, Q1, L0, c0, S, yr, R):
    """Add the rows' sums for any number of terms.

    Per row, to its first-term level's L0, c0 and row of R, and to the Schur
    block's entries of its other terms' levels.
    """
    n = w.shape[0]
    T = codes.shape[0]
    p = X.shape[1]
    idx = np.empty(T, np.int64)
    val = np.empty(T)
    for i in range(n):
        s = codes[0, i]
        a0 = zv[0, i] * lam[0]
        wi = w[i]
        L0[s] += wi * a0 * a0
        c0[s] += wz[i] * a0
        wa0 = wi * a0
        for j in range(p):
            R[s, Q1 + j] += wa0 * X[i, j]
        for t in range(1, T):  # column indices increase with t
            ia = offs[t] + codes[t, i]
            va = zv[t, i] * lam[t]
            idx[t] = ia
            val[t] = va
            R[s, ia] += wi * a0 * va
            yr[ia] += wz[i] * va
            wva = wi * va
            for j in range(p):
                S[ia, Q1 + j] += wva * X[i, j]
            for b in range(1, t + 1):
                S[idx[b], ia] += wva * val[b]


@numba.njit(cache=True, nogil=True)
def sparse_downdate(R, S):
    """Compute S -= R'R on S's upper triangle, from each row's nonzeros only."""
    l0, m = R.shape
    nz = np.empty(m, np.int64)
    for s in range(l0):
        cnt = 0
        for c in range(m):
            if R[s, c] != 0.0:
                nz[cnt] = c
                cnt += 1
        for a in range(cnt):
            ca = nz[a]
            ra = R[s, ca]
            for b in range(a, cnt):
                S[ca, nz[b]] -= ra * R[s, nz[b]]


# rows whose log(1 + exp(η)) are multiplied before one log is taken: each
# factor is below 1 + e³⁰ ≈ 1.1e13 (|η| <= 30 on that path), so 16 of them stay
# below 1e209, far from overflow, and the product's rounding (16 ulp) is that
# of summing 16 logs
LOG_BATCH = 16


@numba.njit(cache=True, nogil=True)
def update(codes, zv, lam, ubase, X, u, b, offset, y, wt, link, fam, eta, mu):
    """Write η = offset + ZΛu + Xb and μ into ``eta``/``mu``; return the deviance's μ part.

    The returned value is the μ-dependent part of the deviance (see
    :func:`deviance_part`).
    """
    n = y.shape[0]
    T = codes.shape[0]
    p = X.shape[1]
    for i in range(n):
        e = offset[i]
        for t in range(T):
            e += zv[t, i] * lam[t] * u[ubase[t] + codes[t, i]]
        for j in range(p):
            e += X[i, j] * b[j]
        eta[i] = e
    if fam == 0 and link == 0:
        return _logit_deviance(eta, y, wt, mu)
    if fam == 1 and link == 1:
        return _log_deviance(eta, y, wt, mu)
    dev = 0.0
    for i in range(n):
        m_i = linkinv(eta[i], link)
        mu[i] = m_i
        dev += deviance_part(y[i], m_i, wt[i], fam)
    return dev


@numba.njit(cache=True, nogil=True)
def _logit_deviance(eta, y, wt, mu):
    """Write μ = logit⁻¹(η) into ``mu``; return the binomial deviance's μ-dependent part.

    With t = exp(η), log μ = η - log(1 + t) and log(1 - μ) = -log(1 + t), so
    y log μ + (1 - y) log(1 - μ) = yη - log(1 + t): no branch on y (R's
    y_log_y has one). Rows of unit weight take Σ log(1 + t) as the log of
    products of LOG_BATCH factors (a log costs more than the exp and the
    division together); |η| > 30 as R's clamped logit.
    """
    exp_into(eta, mu, -30.0, 30.0)  # t, then μ in place
    dev = 0.0
    prod = 1.0
    batched = 0
    for i in range(eta.shape[0]):
        e = eta[i]
        if -30.0 <= e <= 30.0:
            t = mu[i]
            s = 1.0 + t
            mu[i] = t / s
            if wt[i] == 1.0:
                dev -= 2.0 * y[i] * e
                prod *= s
                batched += 1
                if batched == LOG_BATCH:
                    dev += 2.0 * math.log(prod)
                    prod = 1.0
                    batched = 0
            else:
                dev += -2.0 * wt[i] * (y[i] * e - math.log(s))  # t >= 9e-14: log1p not needed
        else:
            m_i = linkinv(e, 0)
            mu[i] = m_i
            dev += deviance_part(y[i], m_i, wt[i], 0)
    if batched:
        dev += 2.0 * math.log(prod)
    return dev


@numba.njit(cache=True, nogil=True)
def _log_deviance(eta, y, wt, mu):
    """Write μ = exp(η) into ``mu``; return the Poisson deviance's μ-dependent part.

    log μ = η: no log at all (below R's clamp at ε, and far up, as
    ``linkinv``).
    """
    exp_into(eta, mu, LOG_EPS, EXP_MAX)
    dev = 0.0
    for i in range(eta.shape[0]):
        e = eta[i]
        if LOG_EPS < e <= EXP_MAX:
            dev += -2.0 * wt[i] * (y[i] * e - mu[i])
        else:
            m_i = linkinv(e, 1)
            mu[i] = m_i
            dev += deviance_part(y[i], m_i, wt[i], 1)
    return dev


# exp by Cody and Waite's reduction x = n log 2 + r, |r| <= log(2)/2, and
# r's Taylor polynomial to degree 13 (truncation below 2e-16 relative): within
# 1 ulp of libm's exp, and branch-free, so the compiler vectorises it (3x
# faster than a call per element)
LN2_HI = 6.93147180369123816490e-01  # trailing zero bits: n LN2_HI is exact
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
ROUND = 6755399441055744.0  # 1.5 * 2**52: adding and subtracting it rounds to an integer
EXP_MAX = 709.0  # n <= 1023: 2**n is a normal number


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def exp_into(x, out, lo, hi):
    """Compute out = exp(x) for x in [lo, hi], lo >= -708 and hi <= EXP_MAX.

    x is clamped to the interval: callers use other formulas outside.
    """
    n = x.shape[0]
    scale_bits = np.empty(n, dtype=np.int64)
    for i in range(n):
        xi = min(max(x[i], lo), hi)
        k = (xi * INV_LN2 + ROUND) - ROUND
        r = (xi - k * LN2_HI) - k * LN2_LO
        q = 1.0 / 6227020800.0
        q = q * r + 1.0 / 479001600.0
        q = q * r + 1.0 / 39916800.0
        q = q * r + 1.0 / 3628800.0
        q = q * r + 1.0 / 362880.0
        q = q * r + 1.0 / 40320.0
        q = q * r + 1.0 / 5040.0
        q = q * r + 1.0 / 720.0
        q = q * r + 1.0 / 120.0
        q = q * r + 1.0 / 24.0
        q = q * r + 1.0 / 6.0
        q = q * r + 0.5
        q = q * r + 1.0
        out[i] = q * r + 1.0
        scale_bits[i] = (np.int64(k) + 1023) << 52  # 2**k's bits
    scale = scale_bits.view(np.float64)
    for i in range(n):
        out[i] *= scale[i]


@numba.njit(cache=True, nogil=True)
def cholesky_upper_stored(S):
    """Return (L, ok): the lower Cholesky factor of the matrix whose upper triangle ``S`` holds.

    The symmetric matrix is stored as ``assemble`` leaves it; ok is False where
    it is not positive definite (LAPACK's dpotrf info > 0). Column by column:
    for the small Schur blocks the fused PIRLS uses (<= 64 rows), not worth a
    LAPACK call.
    """
    m = S.shape[0]
    L = np.zeros((m, m))
    for j in range(m):
        s = S[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            return L, False
        d = math.sqrt(s)
        L[j, j] = d
        for i in range(j + 1, m):
            t = S[j, i]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / d
    return L, True


@numba.njit(cache=True, nogil=True)
def cholesky_solve(L, b):
    """Return x with L L' x = b."""
    m = L.shape[0]
    x = b.copy()
    for i in range(m):
        t = x[i]
        for k in range(i):
            t -= L[i, k] * x[k]
        x[i] = t / L[i, i]
    for i in range(m - 1, -1, -1):
        t = x[i]
        for k in range(i + 1, m):
            t -= L[k, i] * x[k]
        x[i] = t / L[i, i]
    return x


@numba.njit(cache=True, nogil=True)
def pirls(codes, zv, lam, offs, ubase, X, XT, y, wt, offset, eta0, mu0, link, fam, l0, Q1,
          tol, maxit, max_halvings, dev_saturated, unit, beta):
    """Run the whole PIRLS loop of ``models.glmm.engine.Engine.pirls`` in one call.

    That is lme4's pwrssUpdate, for small Schur blocks: the same steps, tests
    and step halving.

    Returns (status, u, b, eta, mu, pdev, iterations, L0, R, LS, ldl2); status
    0 ok, 1 system not positive definite, 2 non-finite deviance, 3 step
    halving failed; ldl2 = 2 Σ log diag of the factor's random-effects rows
    (``BlockedFactor.ldL2``, summed in its order). ``eta0``/``mu0`` are never
    written to. ``unit``: :func:`weighted_sums` at (η0, μ0) with unit λ, X and
    the model's offset, for the first step (see :func:`scaled_sums`; empty
    arrays: assemble it), with ``beta`` the fixed β that ``offset`` holds.
    """
    n = y.shape[0]
    p = X.shape[1]
    m = Q1 + p
    q = l0 + Q1
    eta, mu = eta0, mu0
    old = np.inf
    u_prev, b_prev = np.zeros(q), np.zeros(p)
    u, b = np.zeros(q), np.zeros(p)
    L0, R, LS = np.ones(l0), np.zeros((l0, m)), np.zeros((m, m))
    pdev = np.inf
    status = 0
    it = 0
    while it < maxit:
        it += 1
        if it == 1 and unit[0].shape[0] == l0:  # the start's sums at unit λ are given
            L0, c0, R, S, yr = scaled_sums(unit, lam, offs, Q1, beta, p > 0)
            L0, R, S, y0, yr = eliminate(L0, c0, R, S, yr, Q1, True)
        else:
            L0, R, S, y0, yr = assemble(codes, zv, lam, offs, X, XT, eta, mu, y, wt, offset, link, fam, l0, Q1)
        LS, ok = cholesky_upper_stored(S)
        if not ok:
            status = 1
            break
        x = cholesky_solve(LS, yr)
        u = np.empty(q)
        u[:l0] = (y0 - np.dot(R, x)) / L0 if m else y0 / L0
        u[l0:] = x[:Q1]
        b = x[Q1:].copy()
        eta, mu = np.empty(n), np.empty(n)
        dev = update(codes, zv, lam, ubase, X, u, b, offset, y, wt, link, fam, eta, mu)
        pdev = (dev + dev_saturated) + np.dot(u, u)  # summed as models.glmm.engine.Engine._update
        if abs(old - pdev) < tol * abs(pdev):
            break
        halvings = 0
        while (not np.isfinite(pdev) or pdev > old) and halvings < max_halvings:
            u = 0.5 * (u_prev + u)
            b = 0.5 * (b_prev + b)
            eta, mu = np.empty(n), np.empty(n)
            dev = update(codes, zv, lam, ubase, X, u, b, offset, y, wt, link, fam, eta, mu)
            pdev = (dev + dev_saturated) + np.dot(u, u)
            halvings += 1
        if not np.isfinite(pdev):
            status = 2
            break
        if pdev - old > tol:
            status = 3
            break
        old = pdev
        u_prev, b_prev = u, b
    d0 = 0.0
    for s in range(l0):
        d0 += math.log(L0[s])
    d1 = 0.0
    for c in range(min(Q1, LS.shape[0])):
        d1 += math.log(LS[c, c])
    return status, u, b, eta, mu, pdev, it, L0, R, LS, 2.0 * (d0 + d1)
