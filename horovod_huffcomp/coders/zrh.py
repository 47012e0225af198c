"""ZRH, zero-run Huffman: this project's coder for sparse and skewed states.

Each non-zero state is coded as (zero run before it, its level); a chunk ends with its
*terminal run*, the zeros after its last non-zero (the decoder knows the chunk's length, so a
run reaching the chunk's end closes it). Levels use canonical Huffman codes over the 2s
non-zero levels. Runs use whichever costs fewer bits, exactly counted:

* Huffman: canonical codes over run symbols (``chunks.run_sym``: runs 0..15 directly, longer
  runs in half-octave buckets followed by their extra bits);
* Rice(k): ``r >> k`` in unary (ones closed by a zero), then the low k bits of r; a byte of
  codebook, worth it for small or very sparse tensors where a table costs more than it saves.

Contexts: with ``nctx = 4``, the run before a non-zero and its level are coded with the
tables of context c = bucket of the previous non-zero's |level| in the chunk (|v| <= 1 or
chunk start: 0, 2..3: 1, 4..7: 2, >= 8: 3): gradients come in patches of large and small
values, so the previous level predicts the next. With ``nctx = 1`` there is one table each.

Codebook::

    head u8    bit 7 Rice, bit 6 four contexts, bits 0-4 Rice k (single context)
    [Rice, four contexts: 4 x k u8] [Huffman: nctx run codes] nctx level codes

The planner weighs Huffman/Rice x 1/4 contexts (and, in a bundle, the previous section's
code, which costs no bytes) by their exact size. The cost per non-zero is about the entropy of
its run and level, so the payload follows the entropy of the states even when nearly all are
zero (where one codeword per entry costs >= 1 bit per entry).
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
    chunk_parallel,
    get_raw,
    level_of,
    level_sym,
    next_nonzero,
    put_raw,
    raw_values,
    run_base,
    run_sym,
    write_chunks,
    byte_offsets,
)

MODE_HUFFMAN, MODE_RICE = 0, 1
HEAD_RICE, HEAD_CTX = 0x80, 0x40
NCTX = 4


@njit(inline="always", cache=True)
def level_ctx(v):
    a = abs(v)
    if a <= 1:
        return 0
    if a <= 3:
        return 1
    if a <= 7:
        return 2
    return 3


@njit(cache=True)
def histograms(states, n, clog2, s):
    """Per context (of the previous level): run symbol counts, level counts, extra bits, and
    the sum of (r >> k) over runs >= RUN_DIRECT for every Rice k."""
    words = states.view(np.uint64)
    rc = np.zeros((NCTX, RUN_ALPHABET), np.int64)
    lc = np.zeros((NCTX, 2 * s), np.int64)
    shifted = np.zeros((NCTX, RICE_MAX_K + 1), np.int64)
    extra = np.zeros(NCTX, np.int64)
    m = (n + (1 << clog2) - 1) >> clog2
    for c in range(m):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        prev = start
        ctx = 0
        i = next_nonzero(states, words, start, end)
        while True:
            r = i - prev
            sym, ne, _ = run_sym(r)
            rc[ctx, sym] += 1
            extra[ctx] += ne
            if r >= RUN_DIRECT:
                for k in range(RICE_MAX_K + 1):
                    shifted[ctx, k] += r >> k
            if i >= end:
                break
            v = np.int64(states[i])
            lc[ctx, level_sym(v, s)] += 1
            ctx = level_ctx(v)
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
    return rc, lc, extra, shifted


def state_counts_from_levels(lc: np.ndarray, n: int, s: int) -> np.ndarray:
    """The states' histogram (index state + s) from ZRH's level counts: no extra pass."""
    levels = lc.sum(0)
    counts = np.zeros(2 * s + 1, np.int64)
    counts[:s] = levels[:s]
    counts[s + 1 :] = levels[s:]
    counts[s] = n - levels.sum()
    return counts


def rice_costs(rc: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """Exact bits of Rice(k) for every k (last axis) over the runs counted in (rc, shifted)."""
    runs = rc.sum(-1, keepdims=True)
    direct = np.arange(RUN_DIRECT)
    ks = np.arange(RICE_MAX_K + 1)
    short = (rc[..., None, :RUN_DIRECT] * (direct[None, :] >> ks[:, None])).sum(-1)
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


@chunk_parallel
def _sizes(states, n, clog2, s, mode, nctx, ks, rlens, llens, rawbits):
    words = states.view(np.uint64)
    m = (n + (1 << clog2) - 1) >> clog2
    out = np.zeros(m, np.int64)
    for c in prange(m):
        start = np.int64(c) << clog2
        end = min(n, start + (1 << clog2))
        prev = start
        ctx = 0
        b = 0
        i = next_nonzero(states, words, start, end)
        while True:
            b += _run_bits(i - prev, mode, ks[ctx], rlens[ctx])
            if i >= end:
                break
            v = np.int64(states[i])
            b += llens[ctx, level_sym(v, s)] + rawbits
            if nctx > 1:
                ctx = level_ctx(v)
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
        out[c] = b
    return out


@chunk_parallel
def _write(states, n, clog2, s, mode, nctx, ks, rlens, rcodes, llens, lcodes, raw, offsets,
           out):
    words = states.view(np.uint64)
    rawbits = raw.shape[0] > 0
    for c in prange(offsets.shape[0] - 1):
        start = np.int64(c) << clog2
        end = min(n, start + (1 << clog2))
        pos, acc, nacc = offsets[c], B.U64(0), 0
        prev = start
        ctx = 0
        i = next_nonzero(states, words, start, end)
        while True:
            pos, acc, nacc = _put_run(out, pos, acc, nacc, i - prev, mode, ks[ctx], rlens[ctx],
                                      rcodes[ctx])
            if i >= end:
                break
            v = np.int64(states[i])
            ls = level_sym(v, s)
            pos, acc, nacc = B.put(out, pos, acc, nacc, lcodes[ctx, ls], llens[ctx, ls])
            if rawbits:
                pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, i)
            if nctx > 1:
                ctx = level_ctx(v)
            prev = i + 1
            i = next_nonzero(states, words, i + 1, end)
        B.flush(out, pos, acc, nacc)


@njit(cache=True)
def _decode(buf, offsets, chunk_bits, n, clog2, s, mode, nctx, ks, rt, rtb, lt, ltb, states,
            raw):
    rawbits = raw.shape[0] > 0
    for c in range(chunk_bits.shape[0]):
        start = c << clog2
        end = min(n, start + (1 << clog2))
        bitpos = 8 * offsets[c]
        stop = bitpos + chunk_bits[c]
        i = start
        ctx = 0
        while True:
            r, bitpos = _get_run(buf, bitpos, stop, mode, ks[ctx], rt[ctx], rtb[ctx])
            if r < 0:
                return r
            i += r
            if i >= end:
                if i > end:
                    return B.ERR_BAD_VALUE
                break
            ls, ln = get_sym(buf, bitpos, lt[ctx], ltb[ctx])
            if ls < 0:
                return B.ERR_BAD_VALUE
            bitpos += ln
            v = level_of(ls, s)
            states[i] = v
            if rawbits:
                raw[i] = get_raw(buf, bitpos)
                bitpos += 31
            if bitpos > stop:
                return B.ERR_OVERRUN
            if nctx > 1:
                ctx = level_ctx(v)
            i += 1
        if bitpos != stop:
            return B.ERR_OVERRUN if bitpos > stop else B.ERR_UNDERRUN
    return 0


def _empty_run_code() -> Code:
    return Code(np.zeros(RUN_ALPHABET, np.int64))


class ZrhCode:
    """Run mode, contexts, and per context: Rice k or run code, and level code."""

    def __init__(self, mode: int, ks, rcodes: list, lcodes: list):
        self.mode = mode
        self.ks = np.asarray(ks, np.int64)
        self.rcodes, self.lcodes = rcodes, lcodes

    @property
    def nctx(self) -> int:
        return len(self.lcodes)

    def serialize(self, out: bytearray) -> None:
        ctx = self.nctx > 1
        head = (HEAD_CTX if ctx else 0) | (HEAD_RICE if self.mode == MODE_RICE else 0)
        if self.mode == MODE_RICE and not ctx:
            head |= int(self.ks[0])
        out.append(head)
        if self.mode == MODE_RICE and ctx:
            out += bytes(int(k) for k in self.ks)
        if self.mode == MODE_HUFFMAN:
            for rc in self.rcodes:
                rc.serialize(out)
        for lc in self.lcodes:
            lc.serialize(out)

    def nbytes(self) -> int:
        out = bytearray()
        self.serialize(out)
        return len(out)

    @classmethod
    def parse(cls, r: Reader, s: int, n: int) -> "ZrhCode":
        head = r.u8("zrh codebook head")
        nctx = NCTX if head & HEAD_CTX else 1
        mode = MODE_RICE if head & HEAD_RICE else MODE_HUFFMAN
        if head & 0x1F and (mode != MODE_RICE or nctx > 1) or head & 0x20:
            raise PayloadError(f"bad zrh codebook head 0x{head:02x}")
        if mode == MODE_RICE:
            ks = [head & 0x1F] if nctx == 1 else list(r.bytes(nctx, "zrh Rice parameters"))
            if max(ks) > RICE_MAX_K:
                raise PayloadError(f"zrh Rice parameter {max(ks)} exceeds {RICE_MAX_K}")
            rcodes = [_empty_run_code() for _ in range(nctx)]
        else:
            ks = [0] * nctx
            rcodes = [Code.parse(r, RUN_ALPHABET, "zrh run code") for _ in range(nctx)]
            if n and rcodes[0].single < 0 and not rcodes[0].lengths.any():
                raise PayloadError("zrh run code is empty")
        lcodes = [Code.parse(r, 2 * s, "zrh level code") for _ in range(nctx)]
        return cls(mode, ks, rcodes, lcodes)

    def cost(self, rc, lc, extra, shifted, rice) -> int | None:
        """Data bits for these per-context histograms, None if a symbol has no codeword."""
        if self.nctx == 1:
            rc, lc, extra = rc.sum(0, keepdims=True), lc.sum(0, keepdims=True), extra.sum()
            rice = rice.sum(0, keepdims=True)
        bits = 0
        for c in range(self.nctx):
            if not self.lcodes[c].covers(lc[c]):
                return None
            bits += self.lcodes[c].cost(lc[c])
            if self.mode == MODE_RICE:
                bits += int(rice[c, self.ks[c]])
            elif self.rcodes[c].covers(rc[c]):
                bits += self.rcodes[c].cost(rc[c])
            else:
                return None
        return bits + (int(np.sum(extra)) if self.mode == MODE_HUFFMAN else 0)

    def tables(self):
        """Stacked arrays for the kernels: ks, run lengths/codes, level lengths/codes."""
        rl = np.stack([c.lengths for c in self.rcodes])
        rcd = np.stack([c.codes for c in self.rcodes])
        ll = np.stack([c.lengths for c in self.lcodes])
        lcd = np.stack([c.codes for c in self.lcodes])
        return self.ks, rl, rcd, ll, lcd


def _stack_decoders(codes):
    tabs = [c.decoder() for c in codes]
    width = max(t.size for t, _ in tabs)
    out = np.full((len(tabs), width), -1 << 5, np.int64)
    for i, (t, _) in enumerate(tabs):
        out[i, : t.size] = t
    return out, np.array([tb for _, tb in tabs], np.int64)


def plan(q, clog2: int, prev: ZrhCode | None = None, hist=None):
    """Cheapest ZRH code for these states: (ZrhCode, data bits, codebook bits).

    Candidates: Huffman or the best Rice parameters, with 1 or 4 contexts, and ``prev`` (the
    previous bundle section's code, which costs no codebook bytes) when it has a codeword for
    every symbol present. Codebook bits count the codebook and its length varint.
    """
    rc, lc, extra, shifted = hist if hist is not None else histograms(q.states, q.n, clog2,
                                                                         q.levels)
    rice = rice_costs(rc, shifted)
    rawbits = 31 * int(lc.sum()) if q.raw is not None else 0
    candidates = []
    for ctx in (False, True):
        r_, l_, s_ = (rc, lc, rice) if ctx else (rc.sum(0, keepdims=True),
                                                 lc.sum(0, keepdims=True),
                                                 rice.sum(0, keepdims=True))
        lcodes = [Code.from_counts(x) for x in l_]
        candidates.append(ZrhCode(MODE_HUFFMAN, [0] * len(l_),
                                  [Code.from_counts(x) for x in r_], lcodes))
        candidates.append(ZrhCode(MODE_RICE, np.argmin(s_, -1),
                                  [_empty_run_code() for _ in l_], lcodes))
    best = None
    for zc in candidates:
        bits = zc.cost(rc, lc, extra, shifted, rice) + rawbits
        cb = 8 * (zc.nbytes() + 1)
        if best is None or bits + cb < best[1] + best[2]:
            best = (zc, bits, cb)
    if prev is not None:
        bits = prev.cost(rc, lc, extra, shifted, rice)
        if bits is not None and bits + rawbits <= best[1] + best[2]:
            best = (prev, bits + rawbits, 0)
    return best


def encode(q, clog2: int, zc: ZrhCode):
    raw, rawbits = raw_values(q)
    s = q.levels
    ks, rl, rcd, ll, lcd = zc.tables()
    chunk_bits = _sizes(q.states, q.n, clog2, s, zc.mode, zc.nctx, ks, rl, ll, rawbits)
    return write_chunks(chunk_bits, lambda offsets, out: _write(
        q.states, q.n, clog2, s, zc.mode, zc.nctx, ks, rl, rcd, ll, lcd, raw, offsets, out))


def decode(buf, chunk_bits, n, clog2, s, zc: ZrhCode, states, raw):
    rt, rtb = _stack_decoders(zc.rcodes)
    lt, ltb = _stack_decoders(zc.lcodes)
    return _decode(buf, byte_offsets(chunk_bits), chunk_bits, n, clog2, s, zc.mode, zc.nctx,
                   zc.ks, rt, rtb, lt, ltb, states, raw)
