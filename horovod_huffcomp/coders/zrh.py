"""ZRH, zero-run Huffman: this project's coder for sparse and skewed states.

Each non-zero state is coded as (zero run before it, its level); a chunk ends with its
*terminal run*, the zeros after its last non-zero (the decoder knows the chunk's length, so a
run reaching the chunk's end closes it). Levels use canonical Huffman codes over the 2s
non-zero levels. Runs use whichever costs fewer bits, exactly counted:

* Huffman: canonical codes over run symbols (``chunks.run_sym``: runs 0..15 directly, longer
  runs in half-octave buckets followed by their extra bits);
* Rice(k): ``r >> k`` in unary (ones closed by a zero), then the low k bits of r; a byte of
  codebook, worth it for small or very sparse tensors where a table costs more than it saves.

Contexts: with four contexts, the run before a non-zero and its level are coded with the
tables of context c = bucket of the previous non-zero's |level| in the chunk (|v| <= 1 or
chunk start: 0, 2..3: 1, 4..7: 2, >= 8: 3): gradients come in patches of large and small
values, so the previous level predicts the next. With sign contexts the level's table is
c + 4 when the previous level is negative (eight level tables): a fully connected layer's
gradient is an outer product with a non-negative input, so signs persist along a row. With
one context there is one table each.

Codebook::

    head u8    bit 7 Rice, bit 6 four contexts, bit 5 sign contexts (with bit 6),
               bits 0-4 Rice k (single context)
    [Rice, four contexts: 4 x k u8] [Huffman: 1 or 4 run codes] 1, 4 or 8 level codes

The planner weighs Huffman/Rice x 1/4/4+sign contexts (and, in a bundle, the previous
section's code, which costs no bytes) by their exact size. The cost per non-zero is about the entropy of
its run and level, so the payload follows the entropy of the states even when nearly all are
zero (where one codeword per entry costs >= 1 bit per entry).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from .. import bits as B
from ..codebook import (CANONICAL_WORK, HUFFMAN_WORK, canonical_code_rows_into,
                        canonical_codes_work, code_cost, code_nbytes, code_sized_into,
                        decode_table_rows, packed_code_rows, packed_codes_work, parse_codes,
                        put_code, read_sym, varint_len)
from ..errors import PayloadError
from ..payload import Reader
from .chunks import (
    RICE_MAX_K,
    RUN_ALPHABET,
    RUN_DIRECT,
    chunk_groups,
    chunk_parallel,
    count_nonzero,
    level_of,
    level_sym,
    put_raw,
    raw_values,
    run_base,
    run_sym,
    write_one_pass,
    byte_offsets,
)

MODE_HUFFMAN, MODE_RICE = 0, 1
HEAD_RICE, HEAD_CTX, HEAD_SIGN = 0x80, 0x40, 0x20
NCTX = 4  # run contexts (previous level's magnitude bucket)
NLCTX = 8  # level contexts with HEAD_SIGN: magnitude bucket + 4 if the previous level < 0
CTX_ONE, CTX_MAGNITUDE, CTX_SIGN = 0, 1, 2  # context modes of the kernels


# the context a level v in [-128, 127] sets, at index v + 128 (see the module docstring)
CTX_OF = np.array([0 if abs(v) <= 1 else 1 if abs(v) <= 3 else 2 if abs(v) <= 7 else 3
                   for v in range(-128, 128)], np.int64)


@njit(inline="always", cache=True)
def contexts(v, ctxmode):
    """(run context, level context) after the non-zero level v (see the module docstring):
    the one place writers, histograms and the decoder take them from."""
    if ctxmode == CTX_ONE:
        return np.int64(0), np.int64(0)
    ctx = CTX_OF[np.uint64(v + 128)]
    return ctx, ctx + 4 if ctxmode == CTX_SIGN and v < 0 else ctx


def histograms(states, n: int, clog2: int, s: int, pos=None):
    """Per run context (the previous level's magnitude bucket): run symbol counts, extra bits
    and the sum of (r >> k) over runs >= RUN_DIRECT for every Rice k; level counts per level
    context (bucket + 4 if the previous level is negative, NLCTX rows). One pass, chunk groups
    counted by their own threads (as ``write_one_pass``) then added. ``pos``: the positions
    of the non-zero states (:func:`nonzero_positions`), read instead of listing each chunk's
    (:func:`_next_list`)."""
    m = (n + (1 << clog2) - 1) >> clog2
    first = np.array(chunk_groups(n, m) if m else [0, 0], np.int64)
    kernel = _histograms if first.size > 2 else _histograms.serial
    listed = pos is not None
    return kernel(states, n, clog2, s, first, pos if listed else NO_POSITIONS, listed)


NO_POSITIONS = np.zeros(0, np.int64)


@njit(inline="always", cache=True)
def _list_word(v, at, pos, k):
    """The non-zero bytes of 8-byte word v (states from ``at``) listed into pos from k on;
    returns the new count."""
    while v != 0:
        tz = trailing_zeros(v) >> B.U64(3)
        pos[k] = at + np.int64(tz)
        k += 1
        v &= ~(B.U64(0xFF) << (tz << B.U64(3)))
    return k


@njit(cache=True)
def _scan(states, n, limit):
    """Count of the non-zero states among the first n (int8, zero padded to a multiple of
    8), and their positions in order while there are at most ``limit`` of them (else an
    empty array; the rest of the states are then only counted, ``chunks.count_nonzero``).
    One pass: 64 states at a time are skipped when all zero, the non-zero bytes of a word
    found by counting trailing zero bits, so the cost is the memory read plus one step per
    non-zero."""
    words = states.view(np.uint64)
    nw = (n + 7) >> 3
    pos = np.empty(max(limit, 0) + 64, np.int64)
    k = 0
    b = 0
    while b + 8 <= nw:
        x = (words[b] | words[b + 1] | words[b + 2] | words[b + 3] | words[b + 4] |
             words[b + 5] | words[b + 6] | words[b + 7])
        if x != 0:
            for j in range(b, b + 8):
                k = _list_word(words[j], j << 3, pos, k)
            if k > limit:
                rest = (b + 8) << 3
                return k + count_nonzero(states[rest:], max(n - rest, 0)), pos[:0]
        b += 8
    while b < nw:
        k = _list_word(words[b], b << 3, pos, k)
        if k > limit:
            rest = (b + 1) << 3
            return k + count_nonzero(states[rest:], max(n - rest, 0)), pos[:0]
        b += 1
    return k, pos[:k]


@njit(cache=True)
def nonzero_positions(states, n, nnz):
    """The positions of the ``nnz`` non-zero states, in order (:func:`_scan`)."""
    k, pos = _scan(states, n, nnz)
    if k != nnz:
        raise ValueError("nonzero_positions: nnz is not the count of non-zero states")
    return pos


SPARSE_PER_THREAD = 8


@njit(cache=True)
def sparse_limit(n, threads):
    """The most non-zeros among n states whose positions :func:`scan_nonzeros` lists
    (fewer than n / (8 x threads)): the coders then read the list and do the work per
    non-zero in one thread, in one call for a run of tensors (``auto.encode_run``); denser
    tensors' chunk groups are written by ``threads`` threads, each listing its windows.
    (Measured on 2 threads, whole bundles against 1/128 for any thread count: 0.6x the
    time where the big tensors are 1-4% non-zero, 0.78x at 2-8% (TernGrad). Limits of 1/8
    to 1/2 did better still on some bundles on 2 threads, but would keep big tensors from
    the parallel writers of a many-core host.)"""
    return (n - 1) // (SPARSE_PER_THREAD * max(threads, 1))


@njit(cache=True)
def scan_nonzeros(states, n, threads):
    """(count of non-zero states, their positions if sparse (at most
    :func:`sparse_limit` of them) else an empty array) in one pass. The coders tell a listed
    tensor by its count of positions: all of its non-zeros."""
    return _scan(states, n, sparse_limit(n, threads))


WINDOW = 1 << 12  # states listed at a time by the kernels (:func:`_next_list`)


@njit(inline="always", cache=True)
def _list_nonzeros(states, words, start, end, buf):
    """The positions of the non-zero states in [start, end) (start a multiple of 8) into
    ``buf`` (room for end - start + 8); returns their count. Without a branch per state:
    every position is stored, and the count moves past it only if its state is non-zero;
    all-zero 8-byte words are skipped."""
    k = 0
    wend = end >> 3
    for w in range(start >> 3, wend):
        if words[np.uint64(w)] != 0:
            i = w << 3
            for b in range(8):
                buf[np.uint64(k)] = i + b
                k += np.int64(states[np.uint64(i + b)] != 0)
    for i in range(max(start, wend << 3), end):
        buf[k] = i
        k += np.int64(states[i] != 0)
    return k


@njit(inline="always", cache=True)
def _next_list(states, words, pos, k, start, end, listed, buf):
    """The non-zero positions of the next window of a chunk, from ``start`` to its ``end``:
    (array, first index, stop index, window end). With ``listed`` the window is the rest
    of the chunk and its positions those of ``pos`` from index k on
    (:func:`nonzero_positions`); else ``WINDOW`` states, listed into ``buf``
    (:func:`_list_nonzeros`). The kernels go through a chunk window by window, then
    through the non-zeros one after the other: a run is the distance to the previous one,
    so no branch depends on whether a state is zero (on the benchmark's gradients
    1.5-4x faster than jumping to each next non-zero from 1% to 55% non-zero)."""
    if listed:
        stop = k
        while stop < pos.shape[0] and pos[stop] < end:
            stop += 1
        return pos, k, stop, end
    wend = min(end, start + WINDOW)
    return buf, 0, _list_nonzeros(states, words, start, wend, buf), wend


@njit(inline="always", cache=True)
def first_listed(pos, start, listed):
    """List index of the first position >= start (0 when not ``listed``)."""
    return np.searchsorted(pos, start) if listed else 0


@njit(cache=True)
def value_tables(s, ctxmode, run_stride, level_stride):
    """Per state v, at index v + 128: its level symbol, and the offsets of the run and
    level tables of the contexts it sets (context x ``run_stride``, level context x
    ``level_stride``): what the kernels look up per non-zero (zero's row: unused)."""
    lsym = np.zeros(256, np.int64)
    rbase = np.zeros(256, np.int64)
    lbase = np.zeros(256, np.int64)
    for v in range(-s, s + 1):
        if v != 0:
            ctx, lctx = contexts(v, ctxmode)
            lsym[v + 128] = level_sym(v, s)
            rbase[v + 128] = ctx * run_stride
            lbase[v + 128] = lctx * level_stride
    return lsym, rbase, lbase


@njit(inline="always", cache=True)
def _count_long_run(rc, extra, shifted, rb, r):
    """A run >= RUN_DIRECT into the histograms of the run context whose row starts at rc[rb]."""
    ctx = rb // RUN_ALPHABET
    sym, ne, _ = run_sym(r)
    rc[rb + sym] += 1
    extra[ctx] += ne
    for j in range(min(B.bitlen(r), RICE_MAX_K + 1)):  # r >> j = 0 beyond
        shifted[ctx, j] += r >> j


@njit(inline="always", cache=True)
def _count_long_runs(rc, extra, shifted, noted, count):
    """The long runs noted by :func:`_histograms` (r << 16 | offset of the run context's
    row) counted into the histograms."""
    for j in range(count):
        x = noted[j]
        _count_long_run(rc, extra, shifted, x & 0xFFFF, x >> 16)


@chunk_parallel
def _histograms(states, n, clog2, s, first, pos, listed):
    """Group g's chunks counted by :func:`_histogram_group` into row g, the rows then
    added."""
    a2 = 2 * s
    lsym, rbase, lbase = value_tables(s, CTX_SIGN, RUN_ALPHABET, a2)
    groups = first.shape[0] - 1
    rc = np.zeros((groups, NCTX * RUN_ALPHABET), np.int64)  # context * alphabet + symbol
    lc = np.zeros((groups, NLCTX * a2), np.int64)  # level context * 2s + level symbol
    shifted = np.zeros((groups, NCTX, RICE_MAX_K + 1), np.int64)
    extra = np.zeros((groups, NCTX), np.int64)
    for g in prange(groups):
        _histogram_group(states, n, clog2, first[g], first[g + 1], pos, listed, lsym, rbase,
                         lbase, rc[g], lc[g], extra[g], shifted[g])
    return (_sum_groups(rc).reshape(NCTX, RUN_ALPHABET), _sum_groups(lc).reshape(NLCTX, a2),
            _sum_groups(extra), _sum_groups(shifted.reshape(groups, -1)).reshape(NCTX, -1))


@njit(cache=True)
def _histogram_group(states, n, clog2, c0, c1, pos, listed, lsym, rbase, lbase, grc, glc,
                     gextra, gshifted):
    """Chunks c0..c1-1 counted, non-zero after non-zero; a long run (>= RUN_DIRECT, rare in
    dense states) is only noted in the loop and counted after each ``WINDOW`` non-zeros.
    Counting its bucket, extra bits and Rice sums inside the loop (a short run's count stays
    inline: one helper for both ran 5x slower) left the loop's own values fewer registers:
    1.2-1.35x the time on states 16-80% non-zero. A function of its own, not the body of
    the kernels' ``prange``: numba's parallel lowering of the same loop ran up to 1.4x
    slower on one thread than this (1.0-1.4x on the transformer's dense tensors)."""
    words = states.view(np.uint64)
    buf = np.empty(0 if listed else WINDOW + 8, np.int64)
    noted = np.empty(WINDOW, np.int64)
    k = first_listed(pos, np.int64(c0) << clog2, listed)
    for c in range(c0, c1):
        start = np.int64(c) << clog2
        end = min(n, start + (1 << clog2))
        rb, lb, prev = np.int64(0), np.int64(0), start - 1  # table offsets of the contexts
        w = start
        while w < end:
            at, k0, k, wend = _next_list(states, words, pos, k, w, end, listed, buf)
            for t0 in range(k0, k, WINDOW):
                nl = 0
                for t in range(t0, min(k, t0 + WINDOW)):
                    i = at[np.uint64(t)]
                    r = i - prev - 1
                    if r < RUN_DIRECT:
                        grc[np.uint64(rb + r)] += 1
                    else:
                        noted[np.uint64(nl)] = (r << 16) | rb
                        nl += 1
                    u = np.uint64(np.int64(states[np.uint64(i)]) + 128)
                    glc[np.uint64(lb + lsym[u])] += 1
                    rb, lb, prev = rbase[u], lbase[u], i
                _count_long_runs(grc, gextra, gshifted, noted, nl)
            w = wend
        r = end - prev - 1  # the terminal run
        if r < RUN_DIRECT:
            grc[np.uint64(rb + r)] += 1
        else:
            _count_long_run(grc, gextra, gshifted, rb, r)


@njit(inline="always", cache=True)
def _sum_groups(a):
    """The rows of a 2-D array added (numba's sum over an axis costs microseconds)."""
    out = a[0].copy()
    for g in range(1, a.shape[0]):
        add_into(out, a[g])
    return out


@njit(inline="always", cache=True)
def add_into(dst, src):
    """dst += src for 1-D arrays, in a scalar loop: an array statement costs ~25 ns in views
    and dispatch, more than a short row's additions (~0.3 us of a tensor's planning)."""
    for i in range(dst.shape[0]):
        dst[i] += src[i]


@njit(cache=True)
def state_code(lc, n, s):
    """The full-Huffman alternative, from ZRH's level counts (no extra pass): the states'
    counts (index state + s), their code (lengths, single), its data bits and codebook
    bytes."""
    counts = np.zeros(2 * s + 1, np.int64)
    for c in range(lc.shape[0]):  # levels -s..-1 are symbols 0..s-1, 1..s are s+1..2s
        for j in range(s):
            counts[j] += lc[c, j]
        for j in range(s, 2 * s):
            counts[j + 1] += lc[c, j]
    nz = 0
    for j in range(2 * s + 1):
        nz += counts[j]
    counts[s] = n - nz
    lengths = np.empty(2 * s + 1, np.int64)
    single, bits, nbytes = code_sized_into(counts, lengths,
                                           np.empty(HUFFMAN_WORK * (2 * s + 1), np.int64))
    return counts, lengths, single, bits, nbytes


@njit(cache=True)
def rice_costs(rc, shifted):
    """Exact bits of Rice(k) for every k (last axis) over the runs counted in (rc, shifted)."""
    out = shifted.copy()
    for c in range(rc.shape[0]):
        runs = 0
        for sym in range(rc.shape[1]):
            runs += rc[c, sym]
        for k in range(RICE_MAX_K + 1):
            b = runs * (1 + k)
            for r in range(RUN_DIRECT):
                b += rc[c, r] * (r >> k)
            out[c, k] += b
    return out


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
def _read_run(buf, byte, bb, bn, bitpos, stop, mode, k, rt, rtb, rp, linked):
    """One run from a streaming reader: (run, byte, bb, bn, bitpos); run < 0 on error.
    ``rp``, ``linked``: the table's first lookup's width and ``codebook.read_sym``'s flag."""
    if mode == MODE_RICE:
        q = 0
        while True:
            if bitpos >= stop:
                return B.ERR_OVERRUN, byte, bb, bn, bitpos
            if bn < 33:
                byte, bb, bn = B.fill(buf, byte, bb, bn)
            w = B.top(bb, 32)
            if w == B.U64(0xFFFFFFFF):
                q += 32
                bb, bn = B.skip(bb, bn, 32)
                bitpos += 32
                if q > (1 << 30):
                    return B.ERR_BAD_VALUE, byte, bb, bn, bitpos
                continue
            ones = 32 - B.bitlen(w ^ B.U64(0xFFFFFFFF))
            q += ones
            bb, bn = B.skip(bb, bn, ones + 1)
            bitpos += ones + 1
            break
        r = q << k
        if k > 0:
            if bn < 32:
                byte, bb, bn = B.fill(buf, byte, bb, bn)
            r |= np.int64(B.top(bb, k))
            bb, bn = B.skip(bb, bn, k)
            bitpos += k
        return r, byte, bb, bn, bitpos
    if bn < 32:
        byte, bb, bn = B.fill(buf, byte, bb, bn)
    sym, ln = read_sym(bb, rt, rtb, rp, linked)
    if sym < 0:
        return B.ERR_BAD_VALUE, byte, bb, bn, bitpos
    bb, bn = B.skip(bb, bn, ln)
    bitpos += ln
    r, ne = run_base(sym)
    if ne > 0:
        if bn < 32:
            byte, bb, bn = B.fill(buf, byte, bb, bn)
        r += np.int64(B.top(bb, ne))
        bb, bn = B.skip(bb, bn, ne)
        bitpos += ne
    return r, byte, bb, bn, bitpos


@njit(cache=True)
def _short_runs(mode, ks, rl, rcd, short):
    """Per run context, the codeword of each run < RUN_DIRECT as code << 6 | length, into
    ``short`` (context c's from c x RUN_DIRECT; Huffman: run code lengths ``rl`` and codes
    ``rcd``; Rice: at most 15 ones, the closing 0 and k <= 24 bits, <= 40)."""
    for c in range(rl.shape[0]):
        for r in range(RUN_DIRECT):
            if mode == MODE_HUFFMAN:
                short[c * RUN_DIRECT + r] = (B.U64(rcd[c, r]) << B.U64(6)) | B.U64(rl[c, r])
            else:
                k = ks[c]
                q = r >> k
                code = (((1 << q) - 1) << (k + 1)) | (r & ((1 << k) - 1))
                short[c * RUN_DIRECT + r] = B.U64((code << 6) | (q + 1 + k))


@chunk_parallel
def _write(states, n, clog2, s, mode, ctxmode, ks, rlens, rcodes, short, lt, raw, pos_nz,
           listed, first, base, out, chunk_bits, ends):
    """One pass: group g's chunks one after the other from byte base[g] (write_one_pass),
    by :func:`_write_group`, with :func:`_writer_tables`' tables."""
    lsym, rbase, lbase = value_tables(s, ctxmode, RUN_DIRECT, 2 * s)
    for g in prange(first.shape[0] - 1):
        if raw.shape[0] > 0:
            ends[g] = _write_group(states, n, clog2, mode, ks, rlens, rcodes, lsym, rbase,
                                   lbase, short, lt, raw, pos_nz, listed, first[g],
                                   first[g + 1], base[g], out, chunk_bits)
        else:
            ends[g] = _write_group(states, n, clog2, mode, ks, rlens, rcodes, lsym, rbase,
                                   lbase, short, lt, None, pos_nz, listed, first[g],
                                   first[g + 1], base[g], out, chunk_bits)


@njit(cache=True)
def _write_group(states, n, clog2, mode, ks, rlens, rcodes, lsym, rbase, lbase, short, lt,
                 raw, pos_nz, listed, c0, c1, pos, out, chunk_bits):
    """Chunks c0..c1-1 from byte ``pos`` of ``out``, non-zero after non-zero
    (:func:`_next_list`; ``pos_nz`` read when ``listed``); returns the end byte. A short
    run (< RUN_DIRECT) and its level are one add of <= 55 bits (``bits.add``, ``store8``);
    a long run, the terminal run and raw values go through ``bits.put``.

    ``raw`` None (no raw magnitudes) compiles a loop without their branch: 0.85-0.9x the
    time of the same loop in the prange body with that branch, 0.76x as a serial kernel
    (transformer tensors 45-75% non-zero)."""
    words = states.view(np.uint64)
    buf = np.empty(0 if listed else WINDOW + 8, np.int64)
    k = first_listed(pos_nz, np.int64(c0) << clog2, listed)
    for c in range(c0, c1):
        start = np.int64(c) << clog2
        end = min(n, start + (1 << clog2))
        cstart, acc, nacc = pos, B.U64(0), 0
        rb, lb, prev = np.int64(0), np.int64(0), start - 1  # table offsets of the contexts
        w = start
        while w < end:
            at, k0, k, wend = _next_list(states, words, pos_nz, k, w, end, listed, buf)
            for t in range(k0, k):
                i = at[np.uint64(t)]
                r = i - prev - 1
                u = np.uint64(np.int64(states[np.uint64(i)]) + 128)
                le = B.U64(lt[np.uint64(lb + lsym[u])])
                ln = le & B.U64(31)
                if r < RUN_DIRECT:  # nacc < 8 here: the sum stays <= 63
                    re = short[np.uint64(rb + r)]
                    acc, nacc = B.add(acc, nacc, ((re >> B.U64(6)) << ln) | (le >> B.U64(5)),
                                      np.int64((re & B.U64(63)) + ln))
                else:
                    ctx = rb // RUN_DIRECT
                    pos, acc, nacc = _put_run(out, pos, acc, nacc, r, mode, ks[ctx],
                                              rlens[ctx], rcodes[ctx])
                    pos, acc, nacc = B.put(out, pos, acc, nacc, le >> B.U64(5),
                                           np.int64(ln))
                if raw is not None:
                    pos, acc, nacc = B.store8(out, pos, acc, nacc)
                    pos, acc, nacc = put_raw(out, pos, acc, nacc, raw, i)
                pos, acc, nacc = B.store8(out, pos, acc, nacc)  # back to < 8 pending
                rb, lb, prev = rbase[u], lbase[u], i
            w = wend
        ctx = rb // RUN_DIRECT  # the terminal run
        pos, acc, nacc = _put_run(out, pos, acc, nacc, end - prev - 1, mode, ks[ctx],
                                  rlens[ctx], rcodes[ctx])
        chunk_bits[c] = 8 * (pos - cstart) + nacc
        pos = B.flush(out, pos, acc, nacc)
    return pos


@chunk_parallel
def _decode(buf, offsets, chunk_bits, n, clog2, s, mode, ctxmode, ks, rt, rtb, rp, lt, ltb,
            lp, states, raw, first):
    """Chunk groups (``chunk_groups``) decoded by their threads; the error of the first bad
    chunk, 0 if none."""
    groups = first.shape[0] - 1
    errs = np.zeros(groups, np.int64)
    linked = rtb.max() > rp or ltb.max() > lp
    for g in prange(groups):
        for c in range(first[g], first[g + 1]):
            if linked:
                err = _decode_chunk(buf, offsets[c], chunk_bits[c], n, clog2, s, mode, ctxmode,
                                    ks, rt, rtb, rp, lt, ltb, lp, states, raw, c, True)
            else:
                err = _decode_chunk(buf, offsets[c], chunk_bits[c], n, clog2, s, mode, ctxmode,
                                    ks, rt, rtb, rp, lt, ltb, lp, states, raw, c, False)
            if err != 0:
                errs[g] = err
                break
    for g in range(groups):
        if errs[g] != 0:
            return errs[g]
    return 0


@njit(inline="always", cache=True)
def _decode_chunk(buf, offset, nbits, n, clog2, s, mode, ctxmode, ks, rt, rtb, rp, lt, ltb,
                  lp, states, raw, c, linked):
    """Chunk c's non-zero states (and raw values) written into ``states``; ``rp``, ``lp``:
    the run and level tables' first lookups' widths, ``linked`` as in
    ``codebook.read_sym``."""
    rawbits = raw.shape[0] > 0
    start = c << clog2
    end = min(n, start + (1 << clog2))
    bitpos = 8 * offset
    stop = bitpos + nbits
    byte, bb, bn = B.reader_at(bitpos)
    i = start
    ctx = 0
    lctx = 0
    while True:
        r, byte, bb, bn, bitpos = _read_run(buf, byte, bb, bn, bitpos, stop, mode, ks[ctx],
                                            rt[ctx], rtb[ctx], rp, linked)
        if r < 0:
            return r
        i += r
        if i >= end:
            if i > end:
                return B.ERR_BAD_VALUE
            break
        if bn < 32:
            byte, bb, bn = B.fill(buf, byte, bb, bn)
        ls, ln = read_sym(bb, lt[lctx], ltb[lctx], lp, linked)
        if ls < 0:
            return B.ERR_BAD_VALUE
        bb, bn = B.skip(bb, bn, ln)
        bitpos += ln
        v = level_of(ls, s)
        states[i] = v
        if rawbits:
            if bn < 32:
                byte, bb, bn = B.fill(buf, byte, bb, bn)
            raw[i] = np.uint32(B.top(bb, 31))
            bb, bn = B.skip(bb, bn, 31)
            bitpos += 31
        if bitpos > stop:
            return B.ERR_OVERRUN
        ctx, lctx = contexts(v, ctxmode)
        i += 1
    if bitpos != stop:
        return B.ERR_OVERRUN if bitpos > stop else B.ERR_UNDERRUN
    return 0


class ZrhCode:
    """Run mode, contexts, and per context: Rice k or run code, and level code. Codes are
    stacked arrays, one row per context: ``rl``/``ll`` code lengths, ``rs``/``ls`` the
    symbol of a one-symbol code or -1 (``codebook``'s (lengths, single) form). Run contexts
    1 or NCTX; level contexts the same, or NLCTX (sign contexts)."""

    def __init__(self, mode: int, ks, rl, rs, ll, ls):
        self.mode = int(mode)
        self.ks = np.ascontiguousarray(ks, np.int64)
        self.rl, self.rs = np.ascontiguousarray(rl, np.int64), np.ascontiguousarray(rs, np.int64)
        self.ll, self.ls = np.ascontiguousarray(ll, np.int64), np.ascontiguousarray(ls, np.int64)

    @property
    def nctx(self) -> int:
        """Run contexts."""
        return self.rl.shape[0]

    @property
    def ctxmode(self) -> int:
        return ctxmode_of(self.nctx, self.ll.shape[0])

    def to_bytes(self) -> bytes:
        return _serialize(self.mode, self.ks, self.rl, self.rs, self.ll, self.ls).tobytes()

    def serialize(self, out: bytearray) -> None:
        out += self.to_bytes()

    def nbytes(self) -> int:
        return len(self.to_bytes())

    @classmethod
    def parse(cls, r: Reader, s: int, n: int) -> "ZrhCode":
        head = r.u8("zrh codebook head")
        nctx = NCTX if head & HEAD_CTX else 1
        nlctx = NLCTX if head & HEAD_SIGN else nctx
        mode = MODE_RICE if head & HEAD_RICE else MODE_HUFFMAN
        if (head & 0x1F and (mode != MODE_RICE or nctx > 1)
                or head & HEAD_SIGN and not head & HEAD_CTX):
            raise PayloadError(f"bad zrh codebook head 0x{head:02x}")
        if mode == MODE_RICE:
            ks = [head & 0x1F] if nctx == 1 else list(r.bytes(nctx, "zrh Rice parameters"))
            if max(ks) > RICE_MAX_K:
                raise PayloadError(f"zrh Rice parameter {max(ks)} exceeds {RICE_MAX_K}")
            rl, rs = np.zeros((nctx, RUN_ALPHABET), np.int64), np.full(nctx, -1, np.int64)
        else:
            ks = [0] * nctx
            rl, rs = parse_codes(r, nctx, RUN_ALPHABET, "zrh run code")
            if n and rs[0] < 0 and not rl[0].any():
                raise PayloadError("zrh run code is empty")
        ll, ls = parse_codes(r, nlctx, 2 * s, "zrh level code")
        return cls(mode, ks, rl, rs, ll, ls)

    @property
    def packed(self) -> np.ndarray:
        """The code as one int64 array (:func:`pack_code`), as the CPU's one-call path
        takes and gives it."""
        return pack_code(self.mode, self.ks, self.rl, self.rs, self.ll, self.ls)

    @classmethod
    def from_packed(cls, packed: np.ndarray, s: int) -> "ZrhCode":
        return cls(*unpack_code(packed, s))

    def decoders(self):
        """Decode tables stacked per context (rows padded with the no-codeword entry), their
        widths and first lookups' widths (``codebook.decode_table_rows``): run tables, run
        widths, run primary, level tables, level widths, level primary."""
        return decode_table_rows(self.rl, self.rs) + decode_table_rows(self.ll, self.ls)


@njit(cache=True)
def pack_code(mode, ks, rl, rs, ll, ls):
    """A ZRH code as one int64 array: mode, run contexts, level contexts, ks, rs, ls, then
    the rows of rl and of ll."""
    nctx, nlctx = rl.shape[0], ll.shape[0]
    out = np.empty(3 + 2 * nctx + nlctx + rl.size + ll.size, np.int64)
    out[0], out[1], out[2] = mode, nctx, nlctx
    p = 3
    out[p : p + nctx] = ks
    out[p + nctx : p + 2 * nctx] = rs
    out[p + 2 * nctx : p + 2 * nctx + nlctx] = ls
    p += 2 * nctx + nlctx
    for c in range(nctx):
        out[p : p + RUN_ALPHABET] = rl[c]
        p += RUN_ALPHABET
    for c in range(nlctx):
        out[p : p + ll.shape[1]] = ll[c]
        p += ll.shape[1]
    return out


@njit(cache=True)
def unpack_code(packed, s):
    """(mode, ks, rl, rs, ll, ls) of :func:`pack_code`'s array, for states in [-s, s]."""
    nctx, nlctx = packed[1], packed[2]
    p = 3
    ks = packed[p : p + nctx].copy()
    rs = packed[p + nctx : p + 2 * nctx].copy()
    ls = packed[p + 2 * nctx : p + 2 * nctx + nlctx].copy()
    p += 2 * nctx + nlctx
    rl = packed[p : p + nctx * RUN_ALPHABET].copy().reshape(nctx, RUN_ALPHABET)
    p += nctx * RUN_ALPHABET
    ll = packed[p : p + nlctx * 2 * s].copy().reshape(nlctx, 2 * s)
    return packed[0], ks, rl, rs, ll, ls


@njit(cache=True)
def _serialize(mode, ks, rl, rs, ll, ls):
    nctx = rl.shape[0]
    size = 1 + nctx
    for c in range(nctx):
        if mode == MODE_HUFFMAN:
            size += code_nbytes(rl[c], rs[c])
    for c in range(ll.shape[0]):
        size += code_nbytes(ll[c], ls[c])
    out = np.zeros(size, np.uint8)
    head = HEAD_CTX if nctx > 1 else 0
    if ll.shape[0] == NLCTX:
        head |= HEAD_SIGN
    if mode == MODE_RICE:
        head |= HEAD_RICE
        if nctx == 1:
            head |= ks[0]
    out[0] = head
    pos = 1
    if mode == MODE_RICE and nctx > 1:
        for c in range(nctx):
            out[pos] = ks[c]
            pos += 1
    if mode == MODE_HUFFMAN:
        for c in range(nctx):
            pos = put_code(out, pos, rl[c], rs[c])
    for c in range(ll.shape[0]):
        pos = put_code(out, pos, ll[c], ls[c])
    return out[:pos]


@njit(cache=True)
def _sum_rows(a):
    """:func:`_sum_groups` as a 1-row array."""
    return _sum_groups(a).reshape(1, a.shape[1])


@njit(cache=True)
def _codes_of(counts, work):
    """(lengths, singles, bits, bytes) of the Huffman codes of every row of ``counts``;
    ``work``: at least HUFFMAN_WORK int64s per column."""
    rows = counts.shape[0]
    lengths = np.empty(counts.shape, np.int64)
    singles = np.empty(rows, np.int64)
    bits, nbytes = 0, 0
    for c in range(rows):
        singles[c], b, nb = code_sized_into(counts[c], lengths[c], work)
        bits += b
        nbytes += nb
    return lengths, singles, bits, nbytes


# c * log2(c) for the counts of a row, below 4096 looked up (the entropy bound is taken
# for ~20 rows of up to 254 symbols per tensor)
_CLOG2C = np.array([0.0] + [c * np.log2(c) for c in range(1, 4096)], np.float64)


@njit(inline="always", cache=True)
def _clog2c(c):
    return _CLOG2C[c] if c < 4096 else c * np.log2(c)


@njit(cache=True)
def _rows_bound(counts):
    """Lower bounds of (data bits, codebook bytes) of the codes :func:`_codes_of` builds for
    the rows of ``counts``, from the counts alone (no code built). Data: a row of two or
    more symbols spends at least its entropy (T log2 T - sum c log2 c, less a margin for
    rounding) and at least a bit per symbol. Codebook (``codebook.code_nbytes``): its form
    and first symbol varints and, from its first to its last used symbol, a bit per length
    and two more at each change between used and unused (the length's difference is then
    non-zero: its gamma code takes >= 3 bits): 2 x blocks - 1 changes for its blocks of
    used symbols, the first symbol's length counting as one. One symbol or none: exact."""
    bits, nbytes = 0, 0
    a = counts.shape[1]
    for c in range(counts.shape[0]):
        used, lo, hi, total, blocks, was = 0, -1, -1, 0, 0, False
        clogc = 0.0
        for i in range(a):
            k = counts[c, i]
            if k > 0:
                used += 1
                total += k
                clogc += _clog2c(k)
                if lo < 0:
                    lo = i
                hi = i
                blocks += not was
            was = k > 0
        if used == 0:
            nbytes += 1
        elif used == 1:
            nbytes += 1 + varint_len(lo)
        else:
            h = _clog2c(total) - clogc
            bits += max(total, np.int64(h - 1e-9 * h - 1.0))
            if used == a:  # possibly the one-byte flat form
                nbytes += 1
            else:
                nbytes += (varint_len(hi - lo + 2) + varint_len(lo)
                           + (hi - lo + 1 + 2 * (2 * blocks - 1) + 7) // 8)
    return bits, nbytes


@njit(cache=True)
def _level_rows(lc, rows):
    """Level counts (NLCTX rows: bucket + 4 if negative) merged to 1, NCTX or NLCTX rows."""
    if rows == NLCTX:
        return lc
    if rows == 1:
        return _sum_rows(lc)
    out = np.empty((NCTX, lc.shape[1]), lc.dtype)
    for c in range(NCTX):
        for j in range(lc.shape[1]):
            out[c, j] = lc[c, j] + lc[c + NCTX, j]
    return out


@njit(inline="always", cache=True)
def _cost_of(mode, ks, rl, rs, ll, ls, rc, lc, extra, rice):
    """Data bits of a code for these histograms (as :func:`histograms` gives them: NCTX
    run rows, NLCTX level rows), -1 if a symbol present has no codeword. A code of fewer
    rows codes row c of the histograms with its row c % rows (:func:`_level_rows` merges
    them so): each histogram row is costed with that row, no merged copy made (costs are
    sums over the counts)."""
    nctx, nl = rl.shape[0], ll.shape[0]
    bits = 0
    for c in range(lc.shape[0]):
        b = code_cost(lc[c], ll[c % nl], ls[c % nl])
        if b < 0:
            return -1
        bits += b
    for c in range(rc.shape[0]):
        if mode == MODE_RICE:
            bits += rice[c, ks[c % nctx]]
        else:
            b = code_cost(rc[c], rl[c % nctx], rs[c % nctx])
            if b < 0:
                return -1
            bits += b
    if mode == MODE_HUFFMAN:
        bits += extra.sum()
    return bits


@njit(cache=True)
def _plan(rc, lc, extra, shifted, rawbits, prev_mode, prev_ks, prev_rl, prev_rs, prev_ll,
          prev_ls, cap):
    """The cheapest code (see :func:`plan`): (choice, mode, ks, rl, rs, ll, ls, data bits,
    codebook bits); choice -1 is the previous code (``prev_mode`` < 0: none).

    With ``cap`` >= 0 (the bits of ``auto``'s full-Huffman alternative, which wins ties), a
    code is sought only among those of fewer bits than ``cap``: a context mode whose lower
    bounds (:func:`_rows_bound`) reach it is not built, and if none is cheaper, choice is
    -2 (data bits -1). The result is the same as without ``cap`` whenever that is cheaper
    than ``cap``. In two steps: :func:`_plan_alone`, which does not depend on the previous
    code, then :func:`_with_prev`."""
    rice = rice_costs(rc, shifted)
    return _with_prev(_plan_alone(rc, lc, extra, rice, rawbits, cap), rc, lc, extra, rice,
                      rawbits, prev_mode, prev_ks, prev_rl, prev_rs, prev_ll, prev_ls, cap)


@njit(cache=True)
def _plan_alone(rc, lc, extra, rice, rawbits, cap):
    """The cheapest code of the context modes (Huffman or Rice runs, 1, 4 or 4 + sign
    contexts) of fewer bits than ``cap`` (if >= 0), the first of them on a tie, as
    :func:`_plan`'s tuple (data bits -1: none). A mode is skipped when its codes' lower
    bounds reach the best so far or ``cap``, so the code found is the first cheapest of all
    whenever that is cheaper than ``cap``: with a lower cap, the same code if still below
    it, else none (:func:`_with_prev`)."""
    best = (0, 0, np.zeros(1, np.int64), rc[:1], np.zeros(1, np.int64), lc[:1],
            np.zeros(1, np.int64), -1, 0)
    runs_ctx = -1  # the contexts of the run codes rl, rs built so far (1 or NCTX)
    rl, rs, rbits, rbytes = rc[:1], np.zeros(1, np.int64), 0, 0
    bound_ctx, hb_bits, hb_bytes = -1, 0, 0  # the contexts of the run rows' bounds taken
    work = np.empty(HUFFMAN_WORK * max(rc.shape[1], lc.shape[1]), np.int64)  # _codes_of's
    esum = extra.sum()
    for ctx in range(3):  # one context, magnitude contexts, magnitude + sign level contexts
        if ctx == 0:
            r_, l_, s_ = _sum_rows(rc), _sum_rows(lc), _sum_rows(rice)
        else:
            r_, l_, s_ = rc, _level_rows(lc, NCTX if ctx == 1 else NLCTX), rice
        nctx = r_.shape[0]
        if ctx < 2:  # the sign contexts change only the level codes: same ks as before
            ks = np.zeros(nctx, np.int64)
            kdata = rawbits
            for c in range(nctx):
                ks[c] = np.argmin(s_[c])
                kdata += s_[c, ks[c]]
        limit = best[7] + best[8] if best[7] >= 0 else -1
        if cap >= 0 and (limit < 0 or cap < limit):
            limit = cap
        if limit >= 0:  # skip a context mode neither of whose codes can be cheaper
            lb_bits, lb_bytes = _rows_bound(l_)
            if runs_ctx == nctx:
                hb_bits, hb_bytes = rbits, rbytes
            elif bound_ctx != nctx:  # else the run rows' bounds of the mode before
                hb_bits, hb_bytes = _rows_bound(r_)
                bound_ctx = nctx
            hbound = lb_bits + hb_bits + esum + rawbits + 8 * (1 + lb_bytes + hb_bytes)
            kbound = lb_bits + kdata + 8 * (1 + (nctx if nctx > 1 else 0) + lb_bytes)
            if hbound >= limit and kbound >= limit:
                continue
        ll, ls, lbits, lbytes = _codes_of(l_, work)
        if runs_ctx != nctx:  # the sign contexts change only the level codes
            rl, rs, rbits, rbytes = _codes_of(r_, work)
            runs_ctx = nctx
        hbits = lbits + rbits + esum + rawbits
        hcb = 8 * (1 + lbytes + rbytes)
        if _cheaper(hbits + hcb, best[7], best[8], cap):
            best = (2 * ctx, MODE_HUFFMAN, np.zeros(nctx, np.int64), rl, rs, ll, ls, hbits,
                    hcb)
        kbits = lbits + kdata
        kcb = 8 * (1 + (nctx if nctx > 1 else 0) + lbytes)
        if _cheaper(kbits + kcb, best[7], best[8], cap):
            best = (2 * ctx + 1, MODE_RICE, ks, np.zeros_like(rl), np.full(nctx, -1, np.int64),
                    ll, ls, kbits, kcb)
    return best


@njit(inline="always", cache=True)
def _with_prev(best, rc, lc, extra, rice, rawbits, prev_mode, prev_ks, prev_rl, prev_rs,
               prev_ll, prev_ls, cap):
    """:func:`_plan` from :func:`_plan_alone`'s ``best`` (found with this ``cap`` or a
    higher one): kept if cheaper than ``cap``, then the previous code weighed."""
    if best[7] >= 0 and cap >= 0 and best[7] + best[8] >= cap:
        best = (best[0], best[1], best[2], best[3], best[4], best[5], best[6], np.int64(-1),
                best[8])
    if prev_mode >= 0:
        bits = _cost_of(prev_mode, prev_ks, prev_rl, prev_rs, prev_ll, prev_ls, rc, lc, extra,
                        rice)
        if bits >= 0 and (bits + rawbits <= best[7] + best[8] if best[7] >= 0
                          else cap < 0 or bits + rawbits < cap):
            best = (-1, prev_mode, prev_ks, prev_rl, prev_rs, prev_ll, prev_ls, bits + rawbits,
                    0)
    if best[7] < 0:  # none cheaper than cap
        return -2, best[1], best[2], best[3], best[4], best[5], best[6], best[7], best[8]
    return best


@njit(inline="always", cache=True)
def _cheaper(total, best_bits, best_cb, cap):
    """Whether a code of ``total`` bits replaces :func:`_plan`'s best so far (none:
    ``best_bits`` < 0, then it must be cheaper than ``cap`` if that is >= 0)."""
    if best_bits >= 0:
        return total < best_bits + best_cb
    return cap < 0 or total < cap


def plan(q, clog2: int, prev: ZrhCode | None = None, hist=None):
    """Cheapest ZRH code for these states: (ZrhCode, data bits, codebook bits).

    Candidates: Huffman or the best Rice parameters, with 1 context, 4 magnitude contexts, or
    4 magnitude contexts for runs and 8 magnitude x sign contexts for levels, and ``prev`` (the
    previous bundle section's code, which costs no codebook bytes) when it has a codeword for
    every symbol present. Codebook bits count the codebook's bytes. All are
    weighed in one numba call from the histograms (:func:`plan_from`).
    """
    if hist is None:
        hist = histograms(q.states, q.n, clog2, q.levels)
    return plan_from(hist, 31 if q.raw is not None else 0, prev)


def plan_from(hist, raw_bits: int, prev: ZrhCode | None = None):
    """:func:`plan` from the histograms alone (:func:`histograms`' four arrays, however they
    were counted: the GPU backend counts them on the device); ``raw_bits`` per non-zero."""
    rc, lc, extra, shifted = hist
    s = lc.shape[1] // 2
    choice, packed, bits, cb = plan_packed(rc, lc, extra, shifted, raw_bits * int(lc.sum()), s,
                                           prev is not None,
                                           NO_POSITIONS if prev is None else prev.packed)
    zc = prev if choice < 0 else ZrhCode.from_packed(packed, s)
    return zc, int(bits), int(cb)


@njit(cache=True)
def plan_packed(rc, lc, extra, shifted, rawbits, s, has_prev, prev_code, cap=-1):
    """:func:`_plan` with the previous code packed (:func:`pack_code`; ignored without
    ``has_prev``): (choice, the chosen code packed, data bits, codebook bits); ``cap`` as
    in :func:`_plan` (choice -2: none cheaper)."""
    if has_prev:
        p_mode, p_ks, p_rl, p_rs, p_ll, p_ls = unpack_code(prev_code, s)
    else:
        p_mode, p_ks, p_rl, p_rs, p_ll, p_ls = (-1, prev_code, lc[:1].copy(), prev_code,
                                                lc[:1].copy(), prev_code)
    choice, mode, ks, rl, rs, ll, ls, bits, cb = _plan(rc, lc, extra, shifted, rawbits, p_mode,
                                                      p_ks, p_rl, p_rs, p_ll, p_ls, cap)
    if choice < 0:
        return choice, prev_code, bits, cb
    return choice, pack_code(mode, ks, rl, rs, ll, ls), bits, cb


@njit(cache=True)
def _writer_tables(mode, ks, rl, rs, ll):
    """What the writers need, in one call (:func:`_writer_rows` into new arrays): run codes,
    the short runs' codewords, level codes as code << 5 | length (row after row), and bounds
    on the bits of an element and of a run and a level."""
    rcd = np.empty_like(rl)
    short = np.empty(rl.shape[0] * RUN_DIRECT, np.uint64)
    lt = np.empty(ll.size, np.uint32)
    per_elem, run_max, level_max = _writer_rows(mode, ks, rl, rs, ll, rcd, short, lt)
    return rcd, short, lt, per_elem, run_max, level_max


@njit(cache=True)
def packed_tables(mode, ks, rl, rs, ll):
    """Run and level codes as code << 5 | length, rows as rl's and ll's: the tables the GPU
    kernels read (built as :func:`_writer_rows` builds the CPU writer's)."""
    return packed_code_rows(rl), packed_code_rows(ll)


@njit(cache=True)
def decoder_rows(rl, rs, ll, ls, run_rows, level_rows):
    """The code as the GPU decoder reads it (cuda/zrh.cu): ``run_rows`` run rows, then
    ``level_rows`` level rows, those the code does not use empty. Returns flat code lengths
    (uint8) and canonical codes (uint16), row after row, and per row the one-symbol code's
    symbol or -1 and the decode table's width (the longest code; 0 for a one-symbol row, whose
    lengths are all 0)."""
    a_run, a_lvl = rl.shape[1], ll.shape[1]
    lengths = np.zeros(run_rows * a_run + level_rows * a_lvl, np.uint8)
    codes = np.zeros(lengths.size, np.uint16)
    singles = np.full(run_rows + level_rows, -1, np.int32)
    widths = np.zeros(run_rows + level_rows, np.int32)
    work = np.empty(CANONICAL_WORK, np.int64)
    code = np.empty(max(a_run, a_lvl), np.int64)
    at = 0
    for r in range(run_rows + level_rows):
        run = r < run_rows
        c, a = (r, a_run) if run else (r - run_rows, a_lvl)
        rows, ones = (rl, rs) if run else (ll, ls)
        if c < rows.shape[0]:
            canonical_codes_work(rows[c], code[:a], work)
            singles[r] = ones[c]
            for i in range(a):
                lengths[at + i], codes[at + i] = rows[c, i], code[i]
                widths[r] = max(widths[r], rows[c, i])
        at += a
    return lengths, codes, singles, widths


@njit(cache=True)
def _writer_rows(mode, ks, rl, rs, ll, rcd, short, lt):
    """:func:`_writer_tables` into the caller's arrays ``rcd`` (rl's shape), ``short`` and
    ``lt`` (at least rl.shape[0] x RUN_DIRECT and ll.size long): returns the bounds."""
    canonical_code_rows_into(rl, rcd)
    _short_runs(mode, ks, rl, rcd, short)
    a = ll.shape[1]
    work = np.empty(CANONICAL_WORK, np.int64)
    for c in range(ll.shape[0]):
        packed_codes_work(ll[c], lt[c * a: (c + 1) * a], work)
    if mode == MODE_RICE:
        per_elem, run_max = 1, 1 + ks.max()
    else:
        top = rs.max()  # the longest run symbol with a codeword
        for c in range(rl.shape[0]):
            for sym in range(rl.shape[1]):
                if rl[c, sym] > 0:
                    top = max(top, sym)
        per_elem, run_max = 0, rl.max() + run_base(max(top, 0))[1]
    return per_elem, run_max, ll.max()


def encode(q, clog2: int, zc: ZrhCode, nonzeros: int | None = None, pos=None):
    """(chunk_bits, data) in one pass over the states; ``nonzeros`` (if known) bounds the
    scratch room; ``pos`` (:func:`nonzero_positions`) is read instead of listing each
    chunk's non-zero states."""
    raw, rawbits = raw_values(q)
    s = q.levels
    ks, rl = zc.ks, zc.rl
    rcd, short, lt, per_elem, run_max, level_max = _writer_tables(zc.mode, ks, rl, zc.rs,
                                                                  zc.ll)
    per_nz = run_max + level_max + rawbits
    nz = q.n if nonzeros is None else nonzeros
    listed = pos is not None
    return write_one_pass(q.n, clog2, per_elem, per_nz, nz, run_max, _write,
                          (q.states, q.n, clog2, s, zc.mode, zc.ctxmode, ks, rl, rcd, short,
                           lt, raw, pos if listed else NO_POSITIONS, listed))


@njit(cache=True)
def ctxmode_of(nctx, nlctx):
    """The context mode of a code with nctx run and nlctx level contexts."""
    if nlctx == NLCTX:
        return CTX_SIGN
    return CTX_MAGNITUDE if nctx > 1 else CTX_ONE


def decode(buf, chunk_bits, n, clog2, s, zc: ZrhCode, states, raw):
    rt, rtb, rp, lt, ltb, lp = zc.decoders()
    first = np.array(chunk_groups(n, chunk_bits.shape[0]), np.int64)
    return (_decode if first.size > 2 else _decode.serial)(
        buf, byte_offsets(chunk_bits), chunk_bits, n, clog2, s, zc.mode, zc.ctxmode, zc.ks, rt,
        rtb, rp, lt, ltb, lp, states, raw, first)
