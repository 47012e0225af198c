"""ZRH, zero-run Huffman: this project's coder for sparse and skewed states.

Each non-zero state is coded as (zero run before it, its level); a chunk ends with its
*terminal run*, the zeros after its last non-zero (the decoder knows the chunk's length, so a
run reaching the chunk's end closes it). Levels use a canonical Huffman code over the 2s
non-zero levels. Runs use whichever costs fewer bits, exactly counted:

* mode 0, Huffman: a canonical code over run symbols (``chunks.run_sym``: runs 0..15 directly,
  longer runs in half-octave buckets followed by their extra bits);
* mode 1, Rice(k): ``r >> k`` in unary (ones closed by a zero), then the low k bits of r.
  One byte of codebook: worth it for small or very sparse tensors, where a table would cost
  more than it saves.

Codebook: run byte (0: a run code follows; 0x80 | k: Rice(k)) | [run code] | level code. The cost per non-zero is
about the entropy of its run and its level, so the payload follows the order-0 entropy of the
states even when nearly all are zero (where one codeword per entry costs >= 1 bit per entry).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import bits as B
from ..codebook import Code, get_sym
from ..errors import PayloadError
from ..payload import Reader
from .chunks import (
    RICE_MAX_K,
    RUN_ALPHABET,
    RUN_DIRECT,
    byte_offsets,
    get_raw,
    level_of,
    level_sym,
    next_nonzero,
    put_raw,
    raw_values,
    run_base,
    run_sym,
    write_chunks,
)

MODE_HUFFMAN, MODE_RICE = 0, 1
RICE_FLAG = 0x80


@njit(cache=True)
def histograms(states, n, clog2, s):
    """Run symbol counts, level counts, total extra bits, and sum of (r >> k) over long runs."""
    words = states.view(np.uint64)
    rc = np.zeros(RUN_ALPHABET, np.int64)
    lc = np.zeros(2 * s, np.int64)
    shifted = np.zeros(RICE_MAX_K + 1, np.int64)
    extra = 0
    m = (n + (1 << clog2) - 1) >> clog2
    for c in range(m):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        prev = start
        i = next_nonzero(states, words, start, end)
        while True:
            r = i - prev
            sym, ne, _ = run_sym(r)
            rc[sym] += 1
            extra += ne
            if r >= RUN_DIRECT:
                for k in range(RICE_MAX_K + 1):
                    shifted[k] += r >> k
            if i >= end:
                break
            lc[level_sym(np.int64(states[i]), s)] += 1
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
    return rc, lc, extra, shifted


def rice_costs(rc: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """Exact bits of Rice(k) for every k over the runs counted in (rc, shifted)."""
    runs = int(rc.sum())
    direct = np.arange(RUN_DIRECT)
    ks = np.arange(RICE_MAX_K + 1)
    short = (rc[:RUN_DIRECT][None, :] * (direct[None, :] >> ks[:, None])).sum(1)
    return short + shifted + runs * (1 + ks)


@njit(inline="always", cache=True)
def _run_bits(r, mode, k, rlens):
    if mode == MODE_RICE:
        return (r >> k) + 1 + k
    sym, ne, _ = run_sym(r)
    return rlens[sym] + ne


@njit(inline="always", cache=True)
def _put_run(out, pos, acc, nacc, r, mode, k, rlens, rcodes):
    if mode == MODE_RICE:
        q = r >> k
        while q >= 32:
            pos, acc, nacc = B.put(out, pos, acc, nacc, 0xFFFFFFFF, 32)
            q -= 32
        pos, acc, nacc = B.put(out, pos, acc, nacc, ((1 << q) - 1) << 1, q + 1)
        if k > 0:
            pos, acc, nacc = B.put(out, pos, acc, nacc, r & ((1 << k) - 1), k)
        return pos, acc, nacc
    sym, ne, ex = run_sym(r)
    pos, acc, nacc = B.put(out, pos, acc, nacc, rcodes[sym], rlens[sym])
    if ne > 0:
        pos, acc, nacc = B.put(out, pos, acc, nacc, ex, ne)
    return pos, acc, nacc


@njit(inline="always", cache=True)
def _get_run(buf, bitpos, stop, mode, k, rt, rtb):
    """(run, new bitpos); run < 0 on error."""
    if mode == MODE_RICE:
        q = 0
        while True:
            if bitpos >= stop:
                return B.ERR_OVERRUN, bitpos
            w = B.peek32(buf, bitpos)
            if w == B.U64(0xFFFFFFFF):
                q += 32
                bitpos += 32
                if q > (1 << 30):
                    return B.ERR_BAD_VALUE, bitpos
                continue
            ones = 32 - B.bitlen(w ^ B.U64(0xFFFFFFFF))
            q += ones
            bitpos += ones + 1
            break
        r = q << k
        if k > 0:
            r |= np.int64(B.peek32(buf, bitpos) >> B.U64(32 - k))
            bitpos += k
        return r, bitpos
    sym, ln = get_sym(buf, bitpos, rt, rtb)
    if sym < 0:
        return B.ERR_BAD_VALUE, bitpos
    bitpos += ln
    r, ne = run_base(sym)
    if ne > 0:
        r += np.int64(B.peek32(buf, bitpos) >> B.U64(32 - ne))
        bitpos += ne
    return r, bitpos


@njit(cache=True, parallel=True)
def _sizes(states, n, clog2, s, mode, k, rlens, llens, rawbits):
    words = states.view(np.uint64)
    m = (n + (1 << clog2) - 1) >> clog2
    out = np.zeros(m, np.int64)
    for c in prange(m):
        start = np.int64(c) << clog2
        end = min(n, start + (1 << clog2))
        prev = start
        b = 0
        i = next_nonzero(states, words, start, end)
        while True:
            b += _run_bits(i - prev, mode, k, rlens)
            if i >= end:
                break
            b += llens[level_sym(np.int64(states[i]), s)] + rawbits
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
        out[c] = b
    return out


@njit(cache=True, parallel=True)
def _write(states, n, clog2, s, mode, k, rlens, rcodes, llens, lcodes, raw, offsets, out):
    words = states.view(np.uint64)
    rawbits = raw.shape[0] > 0
    for c in prange(offsets.shape[0] - 1):
        start = np.int64(c) << clog2
        end = min(n, start + (1 << clog2))
        pos, acc, nacc = offsets[c], B.U64(0), 0
        prev = start
        i = next_nonzero(states, words, start, end)
        while True:
            pos, acc, nacc = _put_run(out, pos, acc, nacc, i - prev, mode, k, rlens, rcodes)
            if i >= end:
                break
            ls = level_sym(np.int64(states[i]), s)
            pos, acc, nacc = B.put(out, pos, acc, nacc, lcodes[ls], llens[ls])
            if rawbits:
                pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, i)
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
        B.flush(out, pos, acc, nacc)


@njit(cache=True)
def _decode(buf, offsets, chunk_bits, n, clog2, s, mode, k, rt, rtb, lt, ltb, states, raw):
    rawbits = raw.shape[0] > 0
    for c in range(chunk_bits.shape[0]):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        bitpos = 8 * offsets[c]
        stop = bitpos + chunk_bits[c]
        i = start
        while True:
            r, bitpos = _get_run(buf, bitpos, stop, mode, k, rt, rtb)
            if r < 0:
                return r
            i += r
            if i >= end:
                if i > end:
                    return B.ERR_BAD_VALUE
                break
            ls, ln = get_sym(buf, bitpos, lt, ltb)
            if ls < 0:
                return B.ERR_BAD_VALUE
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


class ZrhCode:
    def __init__(self, mode: int, k: int, rcode: Code, lcode: Code):
        self.mode, self.k, self.rcode, self.lcode = mode, k, rcode, lcode

    def serialize(self, out: bytearray) -> None:
        if self.mode == MODE_RICE:
            out.append(RICE_FLAG | self.k)
        else:
            out.append(0)
            self.rcode.serialize(out)
        self.lcode.serialize(out)

    def nbytes(self) -> int:
        out = bytearray()
        self.serialize(out)
        return len(out)

    @classmethod
    def parse(cls, r: Reader, s: int, n: int) -> "ZrhCode":
        head = r.u8("zrh run mode")
        if head & RICE_FLAG:
            mode, k = MODE_RICE, head & 0x7F
            if k > RICE_MAX_K:
                raise PayloadError(f"zrh Rice parameter {k} exceeds {RICE_MAX_K}")
            rcode = Code(np.zeros(RUN_ALPHABET, np.int64))
        elif head == 0:
            mode, k = MODE_HUFFMAN, 0
            rcode = Code.parse(r, RUN_ALPHABET, "zrh run code")
            if n and rcode.single < 0 and not rcode.lengths.any():
                raise PayloadError("zrh run code is empty")
        else:
            raise PayloadError(f"unknown zrh run mode byte 0x{head:02x}")
        lcode = Code.parse(r, 2 * s, "zrh level code")
        return cls(mode, k, rcode, lcode)


def plan(q, clog2: int, prev: ZrhCode | None = None):
    """Cheapest ZRH code for these states: (ZrhCode, data bits, codebook bits).

    Candidates: a Huffman run table, the best Rice parameter, and ``prev`` (the previous
    bundle section's code, which costs no codebook bytes) when it has a codeword for every
    symbol present. Codebook bits count the codebook and its length varint.
    """
    rc, lc, extra, shifted = histograms(q.states, q.n, clog2, q.levels)
    rawbits = 31 * int(lc.sum()) if q.raw is not None else 0
    rice = rice_costs(rc, shifted)
    lcode = Code.from_counts(lc)
    level_bits = lcode.cost(lc) + rawbits
    k = int(np.argmin(rice))
    own = [(ZrhCode(MODE_HUFFMAN, 0, Code.from_counts(rc), lcode), None),
           (ZrhCode(MODE_RICE, k, Code(np.zeros(RUN_ALPHABET, np.int64)), lcode), int(rice[k]))]
    best = None
    for zc, run_bits in own:
        if run_bits is None:
            run_bits = zc.rcode.cost(rc) + extra
        cb = 8 * (zc.nbytes() + 1)
        if best is None or run_bits + level_bits + cb < best[1] + best[2]:
            best = (zc, run_bits + level_bits, cb)
    if prev is not None and prev.lcode.covers(lc):
        if prev.mode == MODE_RICE:
            run_bits = int(rice[prev.k])
        elif prev.rcode.covers(rc):
            run_bits = prev.rcode.cost(rc) + extra
        else:
            run_bits = None
        if run_bits is not None:
            bits = run_bits + prev.lcode.cost(lc) + rawbits
            if bits <= best[1] + best[2]:
                best = (prev, bits, 0)
    return best


def encode(q, clog2: int, zc: ZrhCode):
    raw, rawbits = raw_values(q)
    s = q.levels
    r, lc = zc.rcode, zc.lcode
    chunk_bits = _sizes(q.states, q.n, clog2, s, zc.mode, zc.k, r.lengths, lc.lengths, rawbits)
    return write_chunks(chunk_bits, lambda offsets, out: _write(
        q.states, q.n, clog2, s, zc.mode, zc.k, r.lengths, r.codes, lc.lengths, lc.codes, raw,
        offsets, out))


def decode(buf, chunk_bits, n, clog2, s, zc: ZrhCode, states, raw):
    rt, rtb = zc.rcode.decoder()
    lt, ltb = zc.lcode.decoder()
    return _decode(buf, byte_offsets(chunk_bits), chunk_bits, n, clog2, s, zc.mode, zc.k,
                   rt, rtb, lt, ltb, states, raw)
