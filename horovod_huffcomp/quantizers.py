"""Lossy step: map a float tensor to integer states in [-s, s] (int8) and one float32 scale.

* ``qsgd``: scale = ||x||_2 (``norm="l2"``) or max|x| (``norm="max"``); state = sign(x) * level,
  level = floor(a) + [u < a - floor(a)] with a = |x| * s / scale and u a counter-based uniform
  (``rng.py``): unbiased stochastic rounding, E[state * scale / s] = x. With ``bucket`` = d
  (a power of two), QSGD's buckets: elements [b d, (b + 1) d) have their own scale, the norm
  of that bucket alone (the variance bound then grows with d instead of the tensor's size).
* ``terngrad``: QSGD with s = 1 and the max norm (states -1, 0, +1), as in the TernGrad paper.
* ``topk``: keeps the k = ceil(ratio * n) entries of largest |x| (ties: lower index first; exact
  zeros are never kept). ``levels=0`` (default) keeps their values exactly as float32 (raw
  31-bit magnitudes travel after each non-zero state); ``levels=s >= 1`` quantizes the kept
  values with QSGD's max norm over the kept entries.
* ``fp4``, ``fp8``, ``fp8-e5m2``: CO3's conversion to a low-bit float after scaling
  (``float_quantizer.py``): round to nearest, scale from a GenNorm fit (``norm="gennorm"``,
  fp4's default) or the max (``"max"``, the fp8 formats'); states are the signed codes.

Every step is defined so the GPU backend reproduces it bit for bit: max is order free, the
L2 norm is a sum of squares truncated to fixed point (2^-40 of max^2) and added as integers,
the float32 scale is the float64 value rounded *up*, the rounding arithmetic is float64.

Dequantized value: float64(state) * float64(scale) / s cast to the input dtype (raw top-k:
the stored float32 with the state's sign; float formats: the code's value times the
scale). Non-finite input, or a scale past float32's range (a float64 tensor with |x| above
3.4e38, or an L2 norm above it; for QSGD's buckets per bucket): ``nonfinite="raise"``
raises ``NonFiniteError``; ``"propagate"`` encodes scale = NaN (all states 0) so decode
returns NaN there (what AMP loss scalers look for to skip a step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import float_quantizer
from .errors import NonFiniteError
from .payload import (BUCKET_LOG2_MAX, BUCKET_LOG2_MIN, FP_FORMATS, MAX_LEVELS, fp_levels,
                      num_scales)
from .rng import draw24, stream_key

INV24 = 1.0 / (1 << 24)
F32_MAX = float(np.finfo(np.float32).max)
DEFAULT_LEVELS = {"qsgd": 16, "terngrad": 1, "topk": 0}
DEFAULT_LEVELS.update({q: fp_levels(q) for q in FP_FORMATS})
NONFINITE = "input holds NaN or Inf; pass nonfinite='propagate' to encode a NaN tensor"
OVERFLOW = ("a scale is past float32's range (max |x| or the L2 norm above 3.4e38); pass "
            "nonfinite='propagate' to encode a NaN tensor")


@dataclass
class Quantized:
    """States of one tensor (int8, zero padded to a multiple of 8) and how to map them back."""

    states: np.ndarray  # int8, len >= n, padding is zero
    n: int
    levels: int  # s: states lie in [-s, s]
    scale: float  # float32 value
    norm: str
    raw: np.ndarray | None  # uint32 magnitudes (len n) for exact top-k, else None
    arena: np.ndarray | None = None  # states is arena[at:at + len(states)] (a bundle's states
    at: int = 0  # in one buffer: :func:`arena_for`), or None
    bucket_log2: int = 0  # > 0: ``scale`` is a float32 array, one per bucket of 2^bucket_log2


@njit(cache=True)
def _sumsq_fixed(x, m):
    """Sum over i of floor((|x_i| / m)^2 * 2^40), exactly, as float64 of the sum times 2^-40."""
    hi = np.uint64(0)
    lo = np.uint64(0)
    for i in range(x.shape[0]):
        y = abs(np.float64(x[i])) / m
        t = np.uint64(math.floor(y * y * 1099511627776.0))
        hi += t >> np.uint64(20)
        lo += t & np.uint64(0xFFFFF)
    return np.float64(hi) * (1.0 / 1048576.0) + np.float64(lo) * (1.0 / 1099511627776.0)


@njit(cache=True)
def _stochastic_round(x, s, scale, key, keep, out, first=0):
    """out[i] = sign(x_i) * stochastic level of |x_i| * s / scale, where keep[i] (or keep
    empty); x_i is element ``first`` + i of its tensor (the uniform's counter)."""
    use_keep = keep.shape[0] > 0
    for i in range(x.shape[0]):
        if use_keep and not keep[i]:
            out[i] = 0
            continue
        v = np.float64(x[i])
        a = abs(v) * s / scale
        lev = math.floor(a)
        if np.float64(draw24(key, first + i)) * INV24 < a - lev:
            lev += 1
        if lev > s:
            lev = s
        out[i] = -np.int8(lev) if v < 0 else np.int8(lev)


@njit(cache=True)
def _finite_absmax(x):
    """(every entry finite, max |x|) in one pass, without temporaries."""
    m = 0.0
    finite = True
    for i in range(x.shape[0]):
        a = abs(np.float64(x[i]))
        if a > m:
            m = a
        if not a < np.inf:  # Inf or NaN
            finite = False
    return finite, m


@njit(cache=True)
def _round_up_f32_nb(v):
    """The least float32 value >= v (as float64)."""
    f = np.float32(v)
    if np.float64(f) < v:
        f = np.nextafter(f, np.float32(np.inf))
    return np.float64(f)


def _round_up_f32(v: float) -> float:
    return float(_round_up_f32_nb(float(v)))


def format_scale(v: float) -> float:
    """A float format's float32 scale from its float64 value v > 0: rounded up, at most
    float32's largest value (the GenNorm scale may pass float32's range: alpha / 0.0009)."""
    return _round_up_f32(min(v, F32_MAX))


@njit(cache=True)
def _scale_from_max(x, m, l2):
    """The tensor's own float32 scale given its max |x| = m: m rounded up to float32 (max
    norm), or the L2 norm from the exact fixed-point sum of squares rounded up; 0 for m = 0."""
    if m == 0.0:
        return 0.0
    if not l2:
        return _round_up_f32_nb(m)
    return _round_up_f32_nb(m * math.sqrt(_sumsq_fixed(x, m)))


@njit(cache=True)
def _bucket_scales(x, shift, l2, out):
    """out[b] = :func:`_scale_from_max` of bucket b (elements [b << shift, (b + 1) << shift)
    of x); returns whether every entry is finite."""
    finite = True
    size = 1 << shift
    for b in range(out.shape[0]):
        part = x[b * size: min((b + 1) * size, x.shape[0])]
        f, m = _finite_absmax(part)
        finite = finite and f
        out[b] = _scale_from_max(part, m, l2) if f else 0.0
    return finite


@njit(cache=True)
def _stochastic_round_buckets(x, s, scales, shift, key, out):
    """:func:`_stochastic_round` of each bucket of x with its own scale (bucket b: elements
    [b << shift, (b + 1) << shift)); buckets of scale 0 (all zero) keep out's zeros."""
    size = 1 << shift
    no_keep = np.zeros(0, np.bool_)
    for b in range(scales.shape[0]):
        lo = b * size
        hi = min(lo + size, x.shape[0])
        if scales[b] > 0:
            _stochastic_round(x[lo:hi], s, np.float64(scales[b]), key, no_keep, out[lo:hi],
                              lo)


@njit(cache=True)
def _absmax_and_scale(x, l2):
    """:func:`_finite_absmax` and :func:`_scale_from_max` (0 when not finite) in one call:
    small tensors paid more for the calls than for the work."""
    finite, m = _finite_absmax(x)
    return finite, m, _scale_from_max(x, m, l2) if finite else 0.0


def padded(n: int) -> int:
    """Length of a tensor's states array: n rounded up to a multiple of 8."""
    return (n + 7) & ~7


def arena_for(sizes) -> tuple[np.ndarray, list[int]]:
    """One zeroed buffer for the states of tensors of these sizes, and where each one's
    starts (8-aligned): :func:`quantize`'s ``arena``. The batch coder
    (``coders.auto.encode_run``) reads a bundle's states from it without copying them."""
    at = [0]
    for n in sizes:
        at.append(at[-1] + padded(n))
    return np.zeros(at[-1], np.int8), at[:-1]


def topk_mask(ax: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k largest |x| (ties by lower index), never selecting exact zeros."""
    n = ax.size
    keep = np.zeros(n, bool)
    if k <= 0 or n == 0:
        return keep
    k = min(k, n)
    t = np.partition(ax, n - k)[n - k]
    keep = ax > t
    need = k - int(keep.sum())
    if need > 0 and t > 0:
        ties = np.flatnonzero(ax == t)[:need]
        keep[ties] = True
    return keep


def check_options(quantizer: str, levels: int | None, norm: str | None, ratio: float = 0.01,
                  nonfinite: str = "raise") -> tuple[int, str]:
    """Validate a quantizer's options (ValueError naming the bad one); returns the levels s
    and the norm it really uses (terngrad and top-k: max; ``norm=None``: the quantizer's
    default, l2 for qsgd, gennorm for fp4, max for the fp8 formats)."""
    if quantizer not in DEFAULT_LEVELS:
        raise ValueError(f"unknown quantizer {quantizer!r}; choose from {sorted(DEFAULT_LEVELS)}")
    if nonfinite not in ("raise", "propagate"):
        raise ValueError(f"nonfinite must be 'raise' or 'propagate', got {nonfinite!r}")
    s = DEFAULT_LEVELS[quantizer] if levels is None else int(levels)
    if quantizer in FP_FORMATS:
        norms = ("gennorm", "max") if quantizer == "fp4" else ("max",)
        norm = norms[0] if norm is None else norm
        if norm not in norms:
            raise ValueError(f"{quantizer}'s scale is set by norm {' or '.join(norms)}, "
                             f"got {norm!r}")
        if s != DEFAULT_LEVELS[quantizer]:
            raise ValueError(f"{quantizer} has exactly {DEFAULT_LEVELS[quantizer]} levels "
                             f"(its largest code), got {s}")
        return s, norm
    norm = "l2" if norm is None else norm
    if norm not in ("l2", "max"):
        raise ValueError(f"norm must be 'l2' or 'max', got {norm!r}")
    if quantizer == "terngrad":
        if s != 1:
            raise ValueError("terngrad has exactly one level (states -1, 0, +1)")
        norm = "max"
    elif quantizer == "topk":
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"topk ratio must be in (0, 1], got {ratio}")
        if s < 0 or s > MAX_LEVELS:
            raise ValueError(f"topk levels must be 0 (exact) or 1..{MAX_LEVELS}, got {s}")
        norm = "max"
    elif not 1 <= s <= MAX_LEVELS:
        raise ValueError(f"qsgd levels must be in 1..{MAX_LEVELS}, got {s}")
    return s, norm


def bucket_log2_of(quantizer: str, bucket: int | None) -> int:
    """The payload's bucket field for the ``bucket`` option: 0 for None (one scale per
    tensor), else log2 of a power of two in [2^BUCKET_LOG2_MIN, 2^BUCKET_LOG2_MAX] (qsgd)."""
    if bucket is None:
        return 0
    if quantizer != "qsgd":
        raise ValueError(f"buckets are qsgd's option, not {quantizer}'s")
    b = int(bucket)
    if b != bucket or b <= 0 or b & (b - 1) or not (
            BUCKET_LOG2_MIN <= b.bit_length() - 1 <= BUCKET_LOG2_MAX):
        raise ValueError(f"bucket must be a power of two from {1 << BUCKET_LOG2_MIN} to "
                         f"2^{BUCKET_LOG2_MAX} elements (or None), got {bucket!r}")
    return b.bit_length() - 1


def quantize(
    x: np.ndarray,
    quantizer: str,
    levels: int | None,
    norm: str | None,
    seed: int,
    stream: int = 0,
    ratio: float = 0.01,
    nonfinite: str = "raise",
    scale: float | None = None,
    arena: tuple[np.ndarray, int] | None = None,
    bucket: int | None = None,
) -> Quantized:
    """Quantize a flat, contiguous float16/32/64 array (see module docstring).

    ``scale`` (qsgd and terngrad only) replaces the tensor's own scale with a given float32
    one, at least :func:`scale_of` this tensor: workers that agree on one (the maximum of
    theirs) quantize onto one grid, so their states sum exactly (``summable.py``).
    ``arena``: (buffer, at) from :func:`arena_for`: the states are written to the buffer's
    zeroed bytes from ``at`` on. ``bucket``: QSGD's bucket size (elements, a power of two),
    each bucket with its own scale (then ``Quantized.scale`` is their float32 array).
    """
    s, norm = check_options(quantizer, levels, norm, ratio, nonfinite)
    if scale is not None and quantizer not in ("qsgd", "terngrad"):
        raise ValueError(f"a shared scale applies to qsgd and terngrad, not {quantizer}")
    bucket_log2 = bucket_log2_of(quantizer, bucket)
    if bucket_log2 and scale is not None:
        raise ValueError("a shared scale is one per tensor: it does not go with buckets")

    if x.dtype == np.float16:  # numba has no float16; the widening is exact
        x = x.astype(np.float32)
    n = x.size
    if arena is None:
        states = np.zeros(padded(n), np.int8)
        kept = (None, 0)
    else:
        buf, at = arena
        states = buf[at: at + padded(n)]
        if states.size != padded(n):
            raise ValueError("the arena has no room for these states")
        kept = (buf, at)
    key = np.uint64(stream_key(np.uint64(seed), np.uint64(stream)))
    if bucket_log2:
        scales = np.empty(num_scales(n, bucket_log2), np.float32)
        if not _bucket_scales(x, bucket_log2, norm == "l2", scales):
            if nonfinite == "raise":
                raise NonFiniteError(NONFINITE)
            scales[:] = np.nan
            return Quantized(states, n, s, scales, norm, None, *kept, bucket_log2)
        over = scales == np.inf  # past float32's range: those buckets NaN
        if over.any():
            if nonfinite == "raise":
                raise NonFiniteError(OVERFLOW)
            scales[over] = np.nan
        _stochastic_round_buckets(x, s, scales, bucket_log2, key, states[:n])
        return Quantized(states, n, s, scales, norm, None, *kept, bucket_log2)
    own = 0.0
    if n == 0:
        finite, m = True, 0.0
    elif quantizer == "topk" or scale is not None or quantizer in FP_FORMATS:
        finite, m = _finite_absmax(x)
    else:
        finite, m, own = _absmax_and_scale(x, norm == "l2")
    if not finite:
        return _nan_tensor(states, n, s, quantizer, norm, kept, nonfinite, NONFINITE)
    if quantizer in FP_FORMATS:
        scale = format_scale(float_quantizer.scale_for(x, quantizer, norm, m)) if m > 0.0 else 0.0
        if scale > 0.0:
            float_quantizer.quantize_into(x, quantizer, scale, states[:n])
        return Quantized(states, n, s, scale, norm, None, *kept)
    no_keep = np.zeros(0, np.bool_)

    if quantizer == "topk":
        ax = np.abs(x)
        keep = topk_mask(ax, math.ceil(ratio * n))
        m = float(ax[keep].max()) if keep.any() else 0.0
        scale = _round_up_f32(m)
        if scale == math.inf:
            return _nan_tensor(states, n, s, quantizer, norm, kept, nonfinite, OVERFLOW)
        if s == 0:
            mags = np.zeros(n, np.uint32)
            mags[keep] = ax[keep].astype(np.float32).view(np.uint32)
            states[:n][keep] = np.where(x[keep] < 0, -1, 1)
            return Quantized(states, n, 1, scale, "max", mags, *kept)
        if scale > 0:
            _stochastic_round(x, s, scale, key, keep, states[:n])
        return Quantized(states, n, s, scale, "max", None, *kept)

    if scale is None:
        scale = own
        if scale == math.inf:
            return _nan_tensor(states, n, s, quantizer, norm, kept, nonfinite, OVERFLOW)
    elif not (np.float32(scale) == scale and m <= scale < math.inf):  # also rejects NaN
        raise ValueError(f"a shared scale must be a finite float32 value >= max|x| = {m}, "
                         f"got {scale}")
    if scale == 0.0:
        return Quantized(states, n, s, 0.0, norm, None, *kept)
    _stochastic_round(x, s, scale, key, no_keep, states[:n])
    return Quantized(states, n, s, scale, norm, None, *kept)


def _nan_tensor(states, n, s, quantizer, norm, kept, nonfinite, message) -> Quantized:
    """A tensor with no finite float32 scale (NaN/Inf input, or a scale past float32's range):
    NonFiniteError with ``nonfinite="raise"``, else all states 0 and scale NaN. Exact top-k
    keeps its raw flag (zero magnitudes), so such a tensor can share a bundle with others."""
    if nonfinite == "raise":
        raise NonFiniteError(message)
    raw = np.zeros(n, np.uint32) if quantizer == "topk" and s == 0 else None
    return Quantized(states, n, max(s, 1), float("nan"), norm, raw, *kept)


def scale_of(x: np.ndarray, quantizer: str, norm: str) -> float:
    """The float32 scale :func:`quantize` gives a flat qsgd/terngrad array (+inf if it holds
    NaN or Inf): what workers agree on, by maximum, before quantizing onto one grid."""
    if quantizer not in ("qsgd", "terngrad"):
        raise ValueError(f"a shared scale applies to qsgd and terngrad, not {quantizer!r}")
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    if x.size == 0:
        return 0.0
    if not np.isfinite(x).all():
        return math.inf
    return float(_scale_from_max(x, float(np.abs(x).max()),
                                 quantizer != "terngrad" and norm == "l2"))


def dequantize(
    states: np.ndarray, levels: int, scale, raw: np.ndarray | None, dtype,
    quantizer: str = "qsgd", bucket_log2: int = 0,
) -> np.ndarray:
    """Values of decoded states in ``dtype`` (flat); ``scale`` is the float32 scales' array
    with buckets (``bucket_log2`` > 0; a NaN scale makes its bucket NaN)."""
    dtype = np.dtype(dtype)
    if bucket_log2:
        scales = np.asarray(scale, np.float32)
        if dtype == np.float16:
            each = np.repeat(scales.astype(np.float64), 1 << bucket_log2)[: states.shape[0]]
            with np.errstate(over="ignore", invalid="ignore"):
                return (states.astype(np.float64) * each / levels).astype(dtype)
        out = np.empty(states.shape, dtype)
        _dequantize_buckets(states, scales, bucket_log2, float(levels), out)
        return out
    if math.isnan(scale):
        return np.full(states.shape, np.nan, dtype)
    if quantizer in FP_FORMATS:
        return float_quantizer.dequantize(states, quantizer, scale, dtype)
    if raw is not None:
        mags = raw.view(np.float32).astype(np.float64)
        return (np.sign(states) * mags).astype(dtype)
    if dtype == np.float16:
        with np.errstate(over="ignore"):  # a large scale may overflow float16: inf, as documented
            return (states.astype(np.float64) * float(scale) / levels).astype(dtype)
    out = np.empty(states.shape, dtype)
    _dequantize(states, float(scale), float(levels), out)
    return out


@njit(cache=True)
def _dequantize(states, scale, levels, out):
    """out[i] = float64(states[i]) * scale / levels, rounded to out's dtype once (the same
    operations, in the same order, as the NumPy expression of the float16 path)."""
    for i in range(states.shape[0]):
        out[i] = np.float64(states[i]) * scale / levels


@njit(cache=True)
def _dequantize_buckets(states, scales, shift, levels, out):
    """:func:`_dequantize` of each bucket (elements [b << shift, (b + 1) << shift)) with its
    own scale."""
    size = 1 << shift
    for b in range(scales.shape[0]):
        lo = b * size
        hi = min(lo + size, states.shape[0])
        _dequantize(states[lo:hi], np.float64(scales[b]), levels, out[lo:hi])
