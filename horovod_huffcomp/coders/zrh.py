"""ZRH, zero-run Huffman: this project's coder for sparse and skewed states.

Each non-zero state is coded as (zero run before it, its level); two canonical Huffman codes
built from exact histograms, one over run symbols (``chunks.run_sym``: runs 0..15 directly,
longer runs in half-octave buckets followed by their extra bits, plus an end-of-chunk symbol),
one over the 2s non-zero levels. After the last non-zero of a chunk comes the end-of-chunk
symbol; the zeros after it are implicit. Cost per non-zero is about the entropy of the run and
of the level, so the payload follows the order-0 entropy of the states even when nearly all
of them are zero, where any one-codeword-per-entry code pays at least 1 bit per entry.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import bits as B
from ..codebook import Code, get_sym
from .chunks import (
    RUN_ALPHABET,
    RUN_EOB,
    byte_offsets,
    get_raw,
    level_of,
    level_sym,
    next_nonzero,
    put_raw,
    run_base,
    run_sym,
)


@njit(cache=True)
def histograms(states, n, clog2, s):
    """(run symbol counts, level symbol counts, extra bits total) with this chunking."""
    words = states.view(np.uint64)
    rc = np.zeros(RUN_ALPHABET, np.int64)
    lc = np.zeros(2 * s, np.int64)
    extra = 0
    m = (n + (1 << clog2) - 1) >> clog2
    for c in range(m):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        prev = start
        i = next_nonzero(states, words, start, end)
        while i < end:
            sym, ne, _ = run_sym(i - prev)
            rc[sym] += 1
            extra += ne
            lc[level_sym(np.int64(states[i]), s)] += 1
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
        rc[RUN_EOB] += 1
    return rc, lc, extra


@njit(cache=True)
def _sizes(states, n, clog2, s, rlens, llens, rawbits):
    words = states.view(np.uint64)
    m = (n + (1 << clog2) - 1) >> clog2
    out = np.zeros(m, np.int64)
    for c in range(m):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        prev = start
        b = rlens[RUN_EOB]
        i = next_nonzero(states, words, start, end)
        while i < end:
            sym, ne, _ = run_sym(i - prev)
            b += rlens[sym] + ne + llens[level_sym(np.int64(states[i]), s)] + rawbits
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
        out[c] = b
    return out


@njit(cache=True)
def _write(states, n, clog2, s, rlens, rcodes, llens, lcodes, raw, offsets, out):
    words = states.view(np.uint64)
    rawbits = raw.shape[0] > 0
    for c in range(offsets.shape[0] - 1):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        pos, acc, nacc = offsets[c], B.U64(0), 0
        prev = start
        i = next_nonzero(states, words, start, end)
        while i < end:
            sym, ne, ex = run_sym(i - prev)
            pos, acc, nacc = B.put(out, pos, acc, nacc, rcodes[sym], rlens[sym])
            if ne > 0:
                pos, acc, nacc = B.put(out, pos, acc, nacc, ex, ne)
            ls = level_sym(np.int64(states[i]), s)
            pos, acc, nacc = B.put(out, pos, acc, nacc, lcodes[ls], llens[ls])
            if rawbits:
                pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, i)
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
        pos, acc, nacc = B.put(out, pos, acc, nacc, rcodes[RUN_EOB], rlens[RUN_EOB])
        B.flush(out, pos, acc, nacc)


@njit(cache=True)
def _decode(buf, offsets, chunk_bits, n, clog2, s, rt, rtb, lt, ltb, states, raw):
    rawbits = raw.shape[0] > 0
    for c in range(chunk_bits.shape[0]):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        bitpos = 8 * offsets[c]
        stop = bitpos + chunk_bits[c]
        i = start
        while True:
            sym, ln = get_sym(buf, bitpos, rt, rtb)
            bitpos += ln
            if sym == RUN_EOB:
                break
            r, ne = run_base(sym)
            if ne > 0:
                r += np.int64(B.peek32(buf, bitpos) >> B.U64(32 - ne))
                bitpos += ne
            i += r
            if i >= end:
                return B.ERR_BAD_VALUE
            ls, ln = get_sym(buf, bitpos, lt, ltb)
            bitpos += ln
            states[i] = level_of(ls, s)
            if rawbits:
                raw[i] = get_raw(buf, bitpos)
                bitpos += 31
            if bitpos > stop:
                return B.ERR_OVERRUN
            i += 1
        if bitpos != stop:
            return B.ERR_OVERRUN if bitpos > stop else B.ERR_UNDERRUN
    return 0


def plan(q, clog2: int):
    """Codes for these states; returns (run code, level code, exact payload bits of the data)."""
    rc, lc, extra = histograms(q.states, q.n, clog2, q.levels)
    rcode, lcode = Code.from_counts(rc), Code.from_counts(lc)
    rawbits = 31 * int(lc.sum()) if q.raw is not None else 0
    bits = rcode.cost(rc) + lcode.cost(lc) + extra + rawbits
    return rcode, lcode, bits


def encode(q, clog2: int, rcode: Code, lcode: Code):
    rawbits = 31 if q.raw is not None else 0
    s = q.levels
    chunk_bits = _sizes(q.states, q.n, clog2, s, rcode.lengths, lcode.lengths, rawbits)
    offsets = byte_offsets(chunk_bits)
    out = np.zeros(offsets[-1], np.uint8)
    raw = q.raw if q.raw is not None else np.zeros(0, np.uint32)
    _write(q.states, q.n, clog2, s, rcode.lengths, rcode.codes, lcode.lengths, lcode.codes,
           raw, offsets, out)
    return chunk_bits, out


def decode(buf, chunk_bits, n, clog2, s, rcode: Code, lcode: Code, states, raw):
    rt, rtb = rcode.decoder()
    lt, ltb = lcode.decoder()
    return _decode(buf, byte_offsets(chunk_bits), chunk_bits, n, clog2, s, rt, rtb, lt, ltb,
                   states, raw)
