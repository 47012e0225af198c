"""RLH, run-length Huffman (Gajjala et al.): one Huffman code over (value, run length) pairs.

Every maximal run of equal states inside a chunk becomes one pair symbol. The pair alphabet
depends on the data, so the codebook lists it: pair count P, then for each pair sorted by
(value, run) the varints ``value - previous value`` and ``run`` (``run - previous run`` when
the value repeats), then the code lengths over symbols 0..P-1 (``codebook.Code``).

A 15-bit prefix code has at most 2^15 codewords (``MAX_PAIRS``): a tensor whose runs form
more distinct pairs has its runs cut into pieces of at most ``MAX_PAIRS // V`` states (V its
distinct values), which leaves at most MAX_PAIRS pairs; the decoder reads any sequence of
pairs, maximal runs or not.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import bits as B
from ..codebook import Code, get_sym
from ..errors import PayloadError
from ..payload import MAX_CODE_LEN, Reader, put_varint, varint_bytes
from .chunks import byte_offsets, get_raw, put_raw, raw_values, value_runs, write_chunks


MAX_PAIRS = 1 << MAX_CODE_LEN


class PairCode:
    def __init__(self, vals: np.ndarray, runs: np.ndarray, code: Code):
        self.vals, self.runs, self.code = vals, runs, code

    def serialize(self, out: bytearray, s: int) -> None:
        put_varint(out, self.vals.size)
        vidx = self.vals + s
        dv = np.diff(vidx, prepend=0)
        dr = np.where(dv == 0, np.diff(self.runs, prepend=0), self.runs)
        out += varint_bytes(np.stack([dv, dr], 1).ravel())
        self.code.serialize(out)

    @classmethod
    def parse(cls, r: Reader, s: int, clog2: int, n: int) -> "PairCode":
        count = r.varint("RLH pair count", (r.end - r.pos) // 2)
        if count == 0:
            if n:
                raise PayloadError("RLH codebook lists no pair")
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, Code.parse(r, 0, "RLH code"))
        d = r.varints(2 * count, "RLH pair", 1 << clog2).reshape(count, 2)
        vidx = np.cumsum(d[:, 0])
        runs = d[:, 1].copy()
        same = np.zeros(count, bool)
        same[1:] = d[1:, 0] == 0
        # runs restart at each new value: cumulative sum inside groups of equal value
        group = np.cumsum(~same) - 1
        starts = np.flatnonzero(~same)
        csum = np.cumsum(runs)
        runs = csum - np.concatenate(([0], csum[starts[1:] - 1]))[group]
        if vidx[-1] > 2 * s or (runs < 1).any() or (runs > 1 << clog2).any():
            raise PayloadError("RLH pair list holds a value or run out of range")
        if count > 1 and not np.all((d[1:, 0] > 0) | (d[1:, 1] > 0)):
            raise PayloadError("RLH pair list is not strictly increasing")
        code = Code.parse(r, count, "RLH code")
        return cls(vidx - s, runs, code)


def cut_runs(vals, runs, first, most: int):
    """The runs cut into pieces of at most ``most`` states (a run of r: r // most pieces of
    ``most``, then the rest if any), the chunks' first pairs moved along."""
    pieces = -(-runs // most)
    end = np.cumsum(pieces)
    cut_vals = np.repeat(vals, pieces)
    cut_runs = np.full(cut_vals.size, most, np.int64)
    cut_runs[end - 1] = runs - (pieces - 1) * most
    return cut_vals, cut_runs, np.concatenate(([0], end))[first]


def _pairs(vals, runs, levels: int):
    """The distinct (value, run) keys sorted, each run's index among them, their counts."""
    return np.unique((vals + levels) * (1 << 31) + runs, return_inverse=True,
                     return_counts=True)


def plan(q, clog2: int):
    vals, runs, first = value_runs(q.states, q.n, clog2)
    uniq, inv, counts = _pairs(vals, runs, q.levels)
    if uniq.size > MAX_PAIRS:  # more pairs than a 15-bit code has codewords
        vals, runs, first = cut_runs(vals, runs, first, MAX_PAIRS // np.unique(vals).size)
        uniq, inv, counts = _pairs(vals, runs, q.levels)
    pc = PairCode(uniq // (1 << 31) - q.levels, uniq % (1 << 31), Code.from_counts(counts))
    return pc, inv.astype(np.int64), first, vals, runs


@njit(cache=True)
def _sizes(first, syms, vals, runs, lens, rawbits):
    m = first.shape[0] - 1
    out = np.zeros(m, np.int64)
    for c in range(m):
        b = 0
        for k in range(first[c], first[c + 1]):
            b += lens[syms[k]]
            if vals[k] != 0:
                b += rawbits * runs[k]
        out[c] = b
    return out


@njit(cache=True)
def _write(first, syms, vals, runs, lens, codes, raw, clog2, offsets, out):
    rawbits = raw.shape[0] > 0
    for c in range(first.shape[0] - 1):
        pos, acc, nacc = offsets[c], B.U64(0), 0
        i = c << clog2
        for k in range(first[c], first[c + 1]):
            pos, acc, nacc = B.put(out, pos, acc, nacc, codes[syms[k]], lens[syms[k]])
            if rawbits and vals[k] != 0:
                for j in range(i, i + runs[k]):
                    pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, j)
            i += runs[k]
        B.flush(out, pos, acc, nacc)


@njit(cache=True)
def _decode(buf, offsets, chunk_bits, n, clog2, pvals, pruns, table, tbits, states, raw):
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
            v = pvals[sym]
            r = pruns[sym]
            if i + r > end:
                return B.ERR_BAD_VALUE
            for j in range(i, i + r):
                states[j] = v
                if rawbits and v != 0:
                    raw[j] = get_raw(buf, bitpos)
                    bitpos += 31
            i += r
            if bitpos > stop:
                return B.ERR_OVERRUN
        if bitpos != stop:
            return B.ERR_UNDERRUN
    return 0


def encode(q, clog2: int, planned):
    pc, syms, first, vals, runs = planned
    raw, rawbits = raw_values(q)
    chunk_bits = _sizes(first, syms, vals, runs, pc.code.lengths, rawbits)
    return write_chunks(chunk_bits, lambda offsets, out: _write(
        first, syms, vals, runs, pc.code.lengths, pc.code.codes, raw, clog2, offsets, out))


def decode(buf, chunk_bits, n, clog2, pc: PairCode, states, raw):
    table, tbits = pc.code.decoder()
    return _decode(buf, byte_offsets(chunk_bits), chunk_bits, n, clog2, pc.vals, pc.runs,
                   table, tbits, states, raw)
