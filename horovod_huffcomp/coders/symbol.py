"""One codeword per entry: full Huffman (``huffman``) and sample Huffman (``sh``).

Symbols are states + s (0..2s). ``huffman`` builds the code from the exact histogram; ``sh``
(Gajjala et al.) from the states at S = 1000 pseudo-random positions (``rng.STREAM_SAMPLE``)
plus a starting count of 1 for every state, so every state has a codeword. Both serialise
the code lengths (one table); the bits are the same for both.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import bits as B
from ..codebook import Code, read_sym
from ..rng import STREAM_SAMPLE, draw24, stream_key
from .chunks import (byte_offsets, chunk_groups, chunk_parallel, put_raw, raw_values,
                     write_one_pass)

SAMPLE_SIZE = 1000


@njit(cache=True)
def _state_counts(states, n, s):
    counts = np.zeros(2 * s + 1, np.int64)
    for i in range(n):
        counts[states[i] + s] += 1
    return counts


def state_counts(states: np.ndarray, n: int, s: int) -> np.ndarray:
    """Exact histogram of the states (index = state + s)."""
    return _state_counts(states, n, s)


@njit(cache=True)
def _sample_counts(states, n, s, seed, size):
    key = stream_key(np.uint64(seed), np.uint64(STREAM_SAMPLE))
    counts = np.ones(2 * s + 1, np.int64)
    for j in range(size):
        # 48 random bits for the position: two draws
        r = (draw24(key, 2 * j) << np.uint64(24)) | draw24(key, 2 * j + 1)
        counts[states[np.int64(r % np.uint64(n))] + s] += 1
    return counts


def sample_counts(states: np.ndarray, n: int, s: int, seed: int) -> np.ndarray:
    """SH's sampled histogram: 1 + occurrences of each state at SAMPLE_SIZE random positions."""
    if n == 0:
        return np.ones(2 * s + 1, np.int64)
    return _sample_counts(states, n, s, seed, SAMPLE_SIZE)


@chunk_parallel
def _write(states, n, clog2, s, table, raw, first, base, out, chunk_bits, ends):
    """One pass: group g's chunks one after the other from byte base[g] (write_one_pass).
    ``table[state + s]`` = code << 5 | length."""
    rawbits = raw.shape[0] > 0
    for g in prange(first.shape[0] - 1):
        if not rawbits:
            ends[g] = _write_group(states, n, clog2, s, table, first[g], first[g + 1],
                                   base[g], out, chunk_bits)
            continue
        pos = base[g]
        for c in range(first[g], first[g + 1]):
            start = np.int64(c) << clog2
            end = min(n, start + (1 << clog2))
            cstart, acc, nacc = pos, B.U64(0), 0
            for i in range(start, end):
                v = states[i]
                e = table[np.uint64(np.int64(v) + s)]
                pos, acc, nacc = B.put(out, pos, acc, nacc, e >> 5, e & 31)
                if v != 0:
                    pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, i)
            chunk_bits[c] = 8 * (pos - cstart) + nacc
            pos = B.flush(out, pos, acc, nacc)
        ends[g] = pos


@njit(cache=True)
def _write_group(states, n, clog2, s, table, c0, c1, pos, out, chunk_bits):
    """Chunks c0..c1-1 (no raw magnitudes) from byte ``pos`` of ``out``; returns the end
    byte. Three codewords (<= 45 bits) are added to the accumulator between stores, without
    a branch on the pending bit count."""
    for c in range(c0, c1):
        start = np.int64(c) << clog2
        end = min(n, start + (1 << clog2))
        cstart, acc, nacc = pos, B.U64(0), 0
        i = start
        while i + 3 <= end:
            for k in range(3):
                e = table[np.uint64(np.int64(states[i + k]) + s)]
                acc, nacc = B.add(acc, nacc, e >> 5, e & 31)
            pos, acc, nacc = B.store8(out, pos, acc, nacc)
            i += 3
        while i < end:
            e = table[np.uint64(np.int64(states[i]) + s)]
            acc, nacc = B.add(acc, nacc, e >> 5, e & 31)
            pos, acc, nacc = B.store8(out, pos, acc, nacc)
            i += 1
        chunk_bits[c] = 8 * (pos - cstart) + nacc
        pos = B.flush(out, pos, acc, nacc)
    return pos


@chunk_parallel
def _decode(buf, offsets, chunk_bits, n, clog2, s, table, tbits, states, raw, first):
    """Chunk groups (``chunk_groups``) decoded by their threads; the error of the first bad
    chunk, 0 if none."""
    rawbits = raw.shape[0] > 0
    groups = first.shape[0] - 1
    errs = np.zeros(groups, np.int64)
    for g in prange(groups):
        for c in range(first[g], first[g + 1]):
            start = c << clog2
            end = min(n, start + (1 << clog2))
            bitpos = 8 * offsets[c]
            stop = bitpos + chunk_bits[c]
            byte, bb, bn = B.reader_at(bitpos)
            for i in range(start, end):
                if bn < 32:
                    byte, bb, bn = B.fill(buf, byte, bb, bn)
                sym, ln = read_sym(bb, table, tbits, tbits, False)
                bb, bn = B.skip(bb, bn, ln)
                bitpos += ln
                v = sym - s
                states[i] = v
                if rawbits and v != 0:
                    if bn < 32:
                        byte, bb, bn = B.fill(buf, byte, bb, bn)
                    raw[i] = np.uint32(B.top(bb, 31))
                    bb, bn = B.skip(bb, bn, 31)
                    bitpos += 31
                if bitpos > stop:
                    errs[g] = B.ERR_OVERRUN
                    break
            if errs[g] == 0 and bitpos != stop:
                errs[g] = B.ERR_UNDERRUN
            if errs[g] != 0:
                break
    for g in range(groups):
        if errs[g] != 0:
            return errs[g]
    return 0


def encode(q, clog2: int, code: Code):
    """(chunk_bits, data) in one pass over the states."""
    raw, rawbits = raw_values(q)
    table = ((code.codes << 5) | code.lengths).astype(np.uint32)
    return write_one_pass(q.n, clog2, int(code.lengths.max()), rawbits, q.n, 0, _write,
                          (q.states, q.n, clog2, q.levels, table, raw))


def decode(buf, chunk_bits, n, clog2, s, code: Code, states, raw):
    table, tbits = code.decoder()
    first = np.array(chunk_groups(n, chunk_bits.shape[0]), np.int64)
    return (_decode if first.size > 2 else _decode.serial)(
        buf, byte_offsets(chunk_bits), chunk_bits, n, clog2, s, table, tbits, states, raw, first)
