"""SHS, sample Huffman for sparse states (Gajjala et al.), as the paper defines it.

Symbols: the 2s non-zero levels (0..2s-1) and "zero run of length r" for r = 1..K (2s+r-1),
K = 200; longer runs are cut into pieces of K. The code comes from a sample (as SH: S = 1000
positions, every state starts at count 1): non-zero level v weighs its sampled probability,
run r < K weighs p0^r (1 - p0) and run K weighs p0^K, with p0 the sampled zero probability.
Weights are turned into integers (round(w * 2^40), at least 1) for the integer Huffman build;
p0^r is a running float64 product, so every backend gets the same weights. Every zero is coded
(trailing runs too); the code lengths travel in the codebook.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import bits as B
from ..codebook import Code, get_sym
from .chunks import byte_offsets, get_raw, level_of, level_sym, put_raw, raw_values, write_chunks
from .symbol import sample_counts

MAX_RUN = 200


def alphabet(s: int) -> int:
    return 2 * s + MAX_RUN


def build_code(states, n, s, seed) -> Code:
    return code_of_counts(sample_counts(states, n, s, seed), s)


def code_of_counts(counts, s) -> Code:
    """The code of SH's sampled counts (2s + 1, every one >= 1)."""
    total = float(counts.sum())
    p0 = counts[s] / total
    w = np.empty(alphabet(s), np.float64)
    nz = np.delete(counts, s)
    w[: 2 * s] = nz / total
    pr = 1.0
    for r in range(1, MAX_RUN + 1):
        pr *= p0
        w[2 * s + r - 1] = pr * (1.0 - p0) if r < MAX_RUN else pr
    weights = np.maximum(np.round(w * 2.0**40), 1).astype(np.int64)
    return Code.from_counts(weights)


@njit(cache=True)
def _sizes(states, n, clog2, s, lens, rawbits):
    m = (n + (1 << clog2) - 1) >> clog2
    out = np.zeros(m, np.int64)
    base = 2 * s - 1
    for c in range(m):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        b = 0
        run = 0
        for i in range(start, end + 1):
            v = states[i] if i < end else 1
            if v == 0:
                run += 1
                if run == MAX_RUN:
                    b += lens[base + MAX_RUN]
                    run = 0
                continue
            if run > 0:
                b += lens[base + run]
                run = 0
            if i < end:
                b += lens[level_sym(np.int64(v), s)] + rawbits
        out[c] = b
    return out


@njit(cache=True)
def _write(states, n, clog2, s, lens, codes, raw, offsets, out):
    rawbits = raw.shape[0] > 0
    base = 2 * s - 1
    for c in range(offsets.shape[0] - 1):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        pos, acc, nacc = offsets[c], B.U64(0), 0
        run = 0
        for i in range(start, end + 1):
            v = states[i] if i < end else 1
            if v == 0:
                run += 1
                if run == MAX_RUN:
                    pos, acc, nacc = B.put(out, pos, acc, nacc, codes[base + MAX_RUN],
                                           lens[base + MAX_RUN])
                    run = 0
                continue
            if run > 0:
                pos, acc, nacc = B.put(out, pos, acc, nacc, codes[base + run], lens[base + run])
                run = 0
            if i < end:
                ls = level_sym(np.int64(v), s)
                pos, acc, nacc = B.put(out, pos, acc, nacc, codes[ls], lens[ls])
                if rawbits:
                    pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, i)
        B.flush(out, pos, acc, nacc)


@njit(cache=True)
def _decode(buf, offsets, chunk_bits, n, clog2, s, table, tbits, states, raw):
    rawbits = raw.shape[0] > 0
    for c in range(chunk_bits.shape[0]):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        bitpos = 8 * offsets[c]
        stop = bitpos + chunk_bits[c]
        i = start
        while i < end:
            sym, ln = get_sym(buf, bitpos, table, tbits)
            bitpos += ln
            if sym >= 2 * s:
                i += sym - 2 * s + 1  # zeros already in place
                if i > end:
                    return B.ERR_BAD_VALUE
            else:
                states[i] = level_of(sym, s)
                if rawbits:
                    raw[i] = get_raw(buf, bitpos)
                    bitpos += 31
                i += 1
            if bitpos > stop:
                return B.ERR_OVERRUN
        if bitpos != stop:
            return B.ERR_UNDERRUN
    return 0


def encode(q, clog2: int, code: Code):
    raw, rawbits = raw_values(q)
    chunk_bits = _sizes(q.states, q.n, clog2, q.levels, code.lengths, rawbits)
    return write_chunks(chunk_bits, lambda offsets, out: _write(
        q.states, q.n, clog2, q.levels, code.lengths, code.codes, raw, offsets, out))


def decode(buf, chunk_bits, n, clog2, s, code: Code, states, raw):
    table, tbits = code.decoder()
    return _decode(buf, byte_offsets(chunk_bits), chunk_bits, n, clog2, s, table, tbits,
                   states, raw)
