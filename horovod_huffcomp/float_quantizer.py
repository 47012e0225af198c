"""CO3's lossy step: conversion to a low-bit float after scaling (``quantizers`` dispatches).

Formats (``payload.FP_FORMATS``; the top exponent field is reserved, no Inf/NaN codes):

* ``fp4``: E2M1, bias 1: 0, 0.5, 1, 1.5, 2, 3 (11 values with the signs; states -5..5);
* ``fp8``: E4M3, bias 10: 2^-12 .. 30 (239 values; states -119..119);
* ``fp8-e5m2``: E5M2, bias 15: 2^-16 .. 57344 (247 values; states -123..123).

A state is sign * k with k the code of the magnitude as an unsigned float (exponent field <<
mantissa bits | mantissa), so codes grow with values: value(k) = k * 2^(1 - bias - m) for k
< 2^m (subnormals), else (2^m + k mod 2^m) * 2^(k >> m - bias - m).

Quantize: y = |x| / scale in float64, rounded to the nearest value, ties to the even code
(round half to even of the mantissa, as IEEE conversions do); above the largest value: the
largest (saturation). Deterministic, biased as any rounding is: CO3 corrects it with error
feedback (the adapters' ``error_feedback=True, gamma=0.7``). Dequantized value: float64
value(k) * float64(scale), negated for negative states, cast to the input dtype once.

The scale (the section's float32 ``scale``: what one unit of the format is worth):

* ``norm="gennorm"`` (fp4's default, CO3's rule): fit a GenNorm (``gennorm.py``) to the
  tensor, then scale = alpha / max(P(beta), 0.0009) with CO3's fit P(beta) = 0.46 - 2.85 b +
  5.37 b^2 - 2.85 b^3 + 0.52 b^4, evaluated at beta clamped to [0.35, 2.5] (the polynomial has
  its minimum at 0.35 and grows fast past 2.5, outside the shapes it was fitted on);
* ``norm="max"`` (the fp8 formats'; fp4's option): max|x| maps to the largest value.

Either is rounded up to float32 (at most float32's largest finite value); 0 for an all-zero
tensor (all states 0).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import gennorm
from .payload import FP_FORMATS, fp_levels

P_BETA_MIN = 0.35
P_BETA_MAX = 2.5
P_FLOOR = 0.0009


def values(quantizer: str) -> np.ndarray:
    """value(k) for k = 0 .. fp_levels(quantizer), float64, increasing."""
    _, mbits, bias = FP_FORMATS[quantizer]
    k = np.arange(fp_levels(quantizer) + 1)
    sub = k < (1 << mbits)
    mant = np.where(sub, k, (1 << mbits) + (k & ((1 << mbits) - 1))).astype(np.float64)
    exp = np.where(sub, 1, k >> mbits) - bias - mbits
    return np.ldexp(mant, exp)


_VALUES = {q: values(q) for q in FP_FORMATS}


def _signed(v: np.ndarray) -> np.ndarray:
    """value of every int8 state, at state + 128 (NaN past the format's codes: decoders never
    give such states, and no int8 can index outside the table)."""
    t = np.full(256, np.nan)
    t[128 - (v.size - 1): 128 + v.size] = np.concatenate([-v[:0:-1], v])
    return t


_SIGNED = {q: _signed(v) for q, v in _VALUES.items()}


def co3_p(beta: float) -> float:
    """CO3's fp4 scale factor P(beta) (floored at 0.0009), beta clamped to its range."""
    b = min(max(beta, P_BETA_MIN), P_BETA_MAX)
    return max(0.46 + b * (-2.85 + b * (5.37 + b * (-2.85 + b * 0.52))), P_FLOOR)


def scale_for(x: np.ndarray, quantizer: str, norm: str, m: float) -> float:
    """The scale of a flat finite array with max |x| = m > 0 (module docstring), in float64:
    ``quantizers.quantize`` rounds it up to float32."""
    if norm == "max":
        return m / _VALUES[quantizer][-1]
    return fit_scale(*gennorm.fit(x, m))


def fit_scale(alpha: float, beta: float) -> float:
    """CO3's scale of a GenNorm fit: alpha / P(beta)."""
    return alpha / co3_p(beta)


def quantize_into(x: np.ndarray, quantizer: str, scale: float, out: np.ndarray) -> None:
    """States of a flat finite array (``x.size`` of them) into the int8 array ``out``."""
    _, mbits, bias = FP_FORMATS[quantizer]
    table = _VALUES[quantizer]
    _round_to_format(x, float(scale), mbits, bias, table.size - 1, float(table[-1]), out)


@njit(cache=True)
def _round_to_format(x, scale, mbits, bias, kmax, vmax, out):
    """out[i] = sign(x_i) * the code nearest |x_i| / scale (ties to even, saturating).

    Normal values: a float64's bits above its top m mantissa bits are (exponent field << m |
    mantissa), so the code is those bits, rounded half to even on the rest, less the two
    exponent biases' difference << m (a carry out of the mantissa steps the exponent, as it
    should). Subnormal codes: y * 2^(bias + m - 1) rounded half to even by adding and taking
    off 2^52 (float64's default rounding)."""
    smallest_normal = math.ldexp(1.0, 1 - bias)
    sub_unit = math.ldexp(1.0, bias + mbits - 1)
    shift = np.uint64(52 - mbits)
    low = (np.uint64(1) << shift) - np.uint64(1)
    half = np.uint64(1) << np.uint64(51 - mbits)
    offset = np.uint64((1023 - bias) << mbits)
    cell = np.empty(1, np.float64)
    cell_bits = cell.view(np.uint64)
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        y = abs(v) / scale
        cell[0] = y
        b = cell_bits[0]
        r = b >> shift
        rem = b & low
        if rem > half or (rem == half and (r & np.uint64(1)) != np.uint64(0)):
            r += np.uint64(1)
        k = np.int64(r - offset)
        if y < smallest_normal:
            k = np.int64((y * sub_unit + 4503599627370496.0) - 4503599627370496.0)
        if y >= vmax:
            k = kmax
        out[i] = -np.int8(k) if v < 0 else np.int8(k)


def dequantize(states: np.ndarray, quantizer: str, scale: float, dtype) -> np.ndarray:
    """Values of decoded states (flat) in ``dtype``: value(|state|) * scale, negated for a
    negative state ((-v) * scale is -(v * scale) exactly, so one signed table serves)."""
    dtype = np.dtype(dtype)
    table = _SIGNED[quantizer]
    if dtype == np.float16:  # numba has no float16: the same float64 steps in NumPy
        with np.errstate(over="ignore"):
            return (table[states.astype(np.int64) + 128] * float(scale)).astype(dtype)
    out = np.empty(states.shape, dtype)
    _from_table(states, table, float(scale), out)
    return out


@njit(cache=True)
def _from_table(states, table, scale, out):
    """out[i] = table[states[i] + 128] * scale: int8 states, a 256-entry table."""
    for i in range(states.shape[0]):
        out[i] = table[np.int64(states[i]) + 128] * scale
