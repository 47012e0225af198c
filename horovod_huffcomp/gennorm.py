"""Generalized normal (GenNorm) fit of a tensor's entries, by moment matching.

Model (``../shared/REFERENCE.md`` section 2): density proportional to exp(-(|x| / alpha)^beta),
centred at 0 (gradients are; the quantizers that use the fit are symmetric). beta = 2 is the
normal distribution, 1 the Laplace; gradients of real layers fit 0.3-2.1, most below 1.

Estimate: the moment ratio (E|x|)^2 / E[x^2] = G(2/b)^2 / (G(1/b) G(3/b)) (G = Gamma) grows
with beta from 0 to 3/4; beta solves it by bisection on log beta within [BETA_MIN, BETA_MAX]
(a ratio outside that range takes the nearer end), then alpha = E|x| G(1/b) / G(2/b).

The two moments come from :func:`abs_moments_fixed`: sums of |x| / m and (x / m)^2 (m =
max |x|) truncated to fixed point (2^-40) and added as integers, so they do not depend on
the order of the additions: a GPU kernel reproduces them exactly and the fit (plain Python
floats from there) gives the same numbers on both backends.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

BETA_MIN = 0.1
BETA_MAX = 4.0
FIXED = 1099511627776.0  # 2^40
_HI = 1048576.0  # 2^20


@njit(cache=True)
def abs_moments_ints(x, m):
    """The integer sums behind :func:`abs_moments_fixed`: (hi1, lo1, hi2, lo2), the sums of
    floor(|x_i| / m * 2^40) and floor((x_i / m)^2 * 2^40) split in 20-bit halves (no overflow
    below 2^43 elements); what the GPU's ``hc_moments`` kernels add up."""
    hi1 = np.uint64(0)
    lo1 = np.uint64(0)
    hi2 = np.uint64(0)
    lo2 = np.uint64(0)
    for i in range(x.shape[0]):
        y = abs(np.float64(x[i])) / m
        t = np.uint64(math.floor(y * FIXED))
        hi1 += t >> np.uint64(20)
        lo1 += t & np.uint64(0xFFFFF)
        t = np.uint64(math.floor(y * y * FIXED))
        hi2 += t >> np.uint64(20)
        lo2 += t & np.uint64(0xFFFFF)
    return hi1, lo1, hi2, lo2


def fixed_sum(hi: int, lo: int) -> float:
    """A fixed-point sum's value from its halves: hi 2^-20 + lo 2^-40 (one rounding)."""
    return float(hi) * (1.0 / _HI) + float(lo) * (1.0 / FIXED)


def abs_moments_fixed(x, m) -> tuple[float, float]:
    """(sum of floor(|x_i| / m * 2^40), sum of floor((x_i / m)^2 * 2^40)), each times 2^-40,
    exact."""
    hi1, lo1, hi2, lo2 = abs_moments_ints(x, m)
    return fixed_sum(hi1, lo1), fixed_sum(hi2, lo2)


def moment_ratio(beta: float) -> float:
    """(E|x|)^2 / E[x^2] of a GenNorm of shape ``beta``."""
    return math.exp(2.0 * math.lgamma(2.0 / beta) - math.lgamma(1.0 / beta)
                    - math.lgamma(3.0 / beta))


def fit_moments(mean_abs: float, mean_sq: float) -> tuple[float, float]:
    """(alpha, beta) of the GenNorm with these E|x| and E[x^2] (both > 0)."""
    ratio = mean_abs * mean_abs / mean_sq
    lo, hi = math.log(BETA_MIN), math.log(BETA_MAX)
    if ratio <= moment_ratio(BETA_MIN):
        beta = BETA_MIN
    elif ratio >= moment_ratio(BETA_MAX):
        beta = BETA_MAX
    else:
        for _ in range(60):  # 60 halvings of a log-width < 4: far below float64's resolution
            mid = 0.5 * (lo + hi)
            if moment_ratio(math.exp(mid)) < ratio:
                lo = mid
            else:
                hi = mid
        beta = math.exp(0.5 * (lo + hi))
    alpha = mean_abs * math.exp(math.lgamma(1.0 / beta) - math.lgamma(2.0 / beta))
    return alpha, beta


def fit(x: np.ndarray, m: float | None = None) -> tuple[float, float]:
    """(alpha, beta) of a flat finite float array with a non-zero entry; ``m`` its max |x|
    if known."""
    if m is None:
        m = float(np.abs(x).max())
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    s1, s2 = abs_moments_fixed(x, m)  # the largest entry adds exactly 1 to each: neither is 0
    return fit_sums(s1, s2, x.size, m)


def fit_sums(s1: float, s2: float, n: int, m: float) -> tuple[float, float]:
    """(alpha, beta) of n entries of max |x| = m from :func:`abs_moments_fixed`'s sums (the
    GPU backend fits from the sums its kernels add up, through here: the same numbers)."""
    alpha, beta = fit_moments(s1 / n, s2 / n)
    return alpha * m, beta
