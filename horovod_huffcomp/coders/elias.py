"""Elias gamma / delta / omega baselines, in two layouts (no codebook).

* run-length layout (the Huffman paper's reference code): every maximal run of equal states in
  a chunk is ``code(zigzag(v)), code(run)`` with zigzag v < 0 -> -2v, v >= 0 -> 2v + 1;
* gap layout (QSGD / BytePS): every non-zero is ``code(gap), sign bit, code(|v|)``, the gap
  counted from the previous non-zero of the chunk (the first from one before the chunk start);
  zeros after the last non-zero are implicit, the chunk's bit length ends it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import bits as B
from .chunks import byte_offsets, get_raw, next_nonzero, put_raw, raw_values, value_runs, write_chunks

GAMMA, DELTA, OMEGA = 0, 1, 2
KINDS = {"elias-gamma": GAMMA, "elias-delta": DELTA, "elias-omega": OMEGA}


@njit(cache=True)
def _len(kind, v):
    if kind == GAMMA:
        return B.gamma_len(v)
    if kind == DELTA:
        return B.delta_len(v)
    return B.omega_len(v)


@njit(cache=True)
def _put(kind, out, pos, acc, nacc, v):
    if kind == GAMMA:
        return B.put_gamma(out, pos, acc, nacc, v)
    if kind == DELTA:
        return B.put_delta(out, pos, acc, nacc, v)
    return B.put_omega(out, pos, acc, nacc, v)


@njit(cache=True)
def _get(kind, buf, bitpos, end):
    if kind == GAMMA:
        return B.get_gamma(buf, bitpos, end)
    if kind == DELTA:
        return B.get_delta(buf, bitpos, end)
    return B.get_omega(buf, bitpos, end)


@njit(cache=True)
def _zz(v):
    return -2 * v if v < 0 else 2 * v + 1


# ---------------------------------------------------------------- run-length layout
@njit(cache=True)
def _rl_sizes(kind, first, vals, runs, rawbits):
    m = first.shape[0] - 1
    out = np.zeros(m, np.int64)
    for c in range(m):
        b = 0
        for k in range(first[c], first[c + 1]):
            b += _len(kind, _zz(vals[k])) + _len(kind, runs[k])
            if vals[k] != 0:
                b += rawbits * runs[k]
        out[c] = b
    return out


@njit(cache=True)
def _rl_write(kind, first, vals, runs, raw, clog2, offsets, out):
    rawbits = raw.shape[0] > 0
    for c in range(first.shape[0] - 1):
        pos, acc, nacc = offsets[c], B.U64(0), 0
        i = c << clog2
        for k in range(first[c], first[c + 1]):
            pos, acc, nacc = _put(kind, out, pos, acc, nacc, _zz(vals[k]))
            pos, acc, nacc = _put(kind, out, pos, acc, nacc, runs[k])
            if rawbits and vals[k] != 0:
                for j in range(i, i + runs[k]):
                    pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, j)
            i += runs[k]
        B.flush(out, pos, acc, nacc)


@njit(cache=True)
def _rl_decode(kind, buf, offsets, chunk_bits, n, clog2, s, states, raw):
    rawbits = raw.shape[0] > 0
    for c in range(chunk_bits.shape[0]):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        bitpos = 8 * offsets[c]
        stop = bitpos + chunk_bits[c]
        i = start
        while i < end:
            z, bitpos = _get(kind, buf, bitpos, stop)
            if z < 0:
                return z
            r, bitpos = _get(kind, buf, bitpos, stop)
            if r < 0:
                return r
            v = (z - 1) // 2 if z % 2 == 1 else -(z // 2)
            if v < -s or v > s or i + r > end:
                return B.ERR_BAD_VALUE
            for j in range(i, i + r):
                states[j] = v
                if rawbits and v != 0:
                    if bitpos + 31 > stop:
                        return B.ERR_OVERRUN
                    raw[j] = get_raw(buf, bitpos)
                    bitpos += 31
            i += r
        if bitpos != stop:
            return B.ERR_UNDERRUN
    return 0


# ---------------------------------------------------------------- gap layout
@njit(cache=True)
def _gap_sizes(kind, states, n, clog2, rawbits):
    words = states.view(np.uint64)
    m = (n + (1 << clog2) - 1) >> clog2
    out = np.zeros(m, np.int64)
    for c in range(m):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        prev = start - 1
        b = 0
        i = next_nonzero(states, words, start, end)
        while i < end:
            v = np.int64(states[i])
            b += _len(kind, i - prev) + 1 + _len(kind, abs(v)) + rawbits
            prev = i
            i = next_nonzero(states, words, i + 1, end)
        out[c] = b
    return out


@njit(cache=True)
def _gap_write(kind, states, n, clog2, raw, offsets, out):
    words = states.view(np.uint64)
    rawbits = raw.shape[0] > 0
    for c in range(offsets.shape[0] - 1):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        pos, acc, nacc = offsets[c], B.U64(0), 0
        prev = start - 1
        i = next_nonzero(states, words, start, end)
        while i < end:
            v = np.int64(states[i])
            pos, acc, nacc = _put(kind, out, pos, acc, nacc, i - prev)
            pos, acc, nacc = B.put(out, pos, acc, nacc, 1 if v < 0 else 0, 1)
            pos, acc, nacc = _put(kind, out, pos, acc, nacc, abs(v))
            if rawbits:
                pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, i)
            prev = i
            i = next_nonzero(states, words, i + 1, end)
        B.flush(out, pos, acc, nacc)


@njit(cache=True)
def _gap_decode(kind, buf, offsets, chunk_bits, n, clog2, s, states, raw):
    rawbits = raw.shape[0] > 0
    for c in range(chunk_bits.shape[0]):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        bitpos = 8 * offsets[c]
        stop = bitpos + chunk_bits[c]
        i = start - 1
        while bitpos < stop:
            g, bitpos = _get(kind, buf, bitpos, stop)
            if g < 0:
                return g
            i += g
            if i >= end or bitpos >= stop:
                return B.ERR_BAD_VALUE
            neg = (B.peek32(buf, bitpos) >> B.U64(31)) != 0
            bitpos += 1
            a, bitpos = _get(kind, buf, bitpos, stop)
            if a < 0:
                return a
            if a > s:
                return B.ERR_BAD_VALUE
            states[i] = -a if neg else a
            if rawbits:
                if bitpos + 31 > stop:
                    return B.ERR_OVERRUN
                raw[i] = get_raw(buf, bitpos)
                bitpos += 31
    return 0


def encode(q, clog2: int, kind: int, gap: bool):
    raw, rawbits = raw_values(q)
    if gap:
        return write_chunks(_gap_sizes(kind, q.states, q.n, clog2, rawbits),
                            lambda offsets, out: _gap_write(kind, q.states, q.n, clog2, raw,
                                                            offsets, out))
    vals, runs, first = value_runs(q.states, q.n, clog2)
    return write_chunks(_rl_sizes(kind, first, vals, runs, rawbits),
                        lambda offsets, out: _rl_write(kind, first, vals, runs, raw, clog2,
                                                       offsets, out))


def decode(buf, chunk_bits, n, clog2, s, kind, gap, states, raw):
    fn = _gap_decode if gap else _rl_decode
    return fn(kind, buf, byte_offsets(chunk_bits), chunk_bits, n, clog2, s, states, raw)
