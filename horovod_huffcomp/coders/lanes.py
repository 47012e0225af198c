"""A bundle's run of ``auto``/``zrh`` tensors coded by a fixed set of lanes, one per thread.

``auto._encode_run`` codes tensor after tensor, each dense one by its threads (a chunk group
each, the same number of chunks each) and each small or sparse one by one thread, with the
planner in between. On 2 threads that ran a transformer bundle only 1.3x faster than one
thread: chunk groups with equal chunks hold unequal work (the non-zeros of a 768 x 256
attention weight fell 20k in one half, 69k in the other), one thread idles through the
small tensors, and every tensor forks and joins twice. Here the run is coded in phases
instead, each phase's work cut into ``lanes`` contiguous spans of equal estimated cost over
all tensors' chunks (a span may hold the end of a tensor, several whole ones and the start
of another), one lane per thread:

1. count the non-zeros, list their positions when sparse (as ``zrh.scan_nonzeros``) and
   count them per chunk, in one read of the states in blocks of 4096, lanes of equal
   blocks;
2. histograms (``zrh._histogram_group``), lanes cut by ``HIST_NZ`` x non-zeros + elements;
3. the planner: each tensor alone (``auto.choose_alone``, its Huffman tables and its own
   ZRH writer tables), tensors dealt to lanes largest first; then, tensor after tensor,
   whether it takes the previous tensor's ZRH code instead (``auto.choose_after``: cheap,
   serial) and the codebook bytes;
4. the bits (``zrh._write_group``, ``symbol._write_group``), lanes cut again by each
   tensor's code: ``ZRH_NZ`` x non-zeros + elements for ZRH, ``HUFFMAN_ELEM`` x elements for
   full Huffman; then every span's bytes moved together.

Chunks are coded on their own and byte aligned and histograms are sums, so the bytes are
those of ``auto._encode_run`` whatever the cut (tests/test_chunk_groups.py compares them).
Only the parallel mode uses it: compiling it starts numba's threading layer.
"""
from __future__ import annotations

import numpy as np
from collections import namedtuple

from numba import njit, prange

from . import auto, symbol, zrh
from ..codebook import CANONICAL_WORK, packed_codes_work
from .chunks import (CHUNK_LOG2_AUTO_MIN, RICE_MAX_K, RUN_ALPHABET, RUN_DIRECT,
                     auto_chunk_log2, count_nonzero, join_groups, room)

# cost weights of a non-zero / an element against an element's 1, measured on the
# transformer's dense tensors (2 threads): histograms ~4.6 ns per non-zero and ~0.3 per
# element; the ZRH writer ~8.5 ns per non-zero; the Huffman writer ~2.9 ns per element
HIST_NZ = 16
ZRH_NZ = 32
HUFFMAN_ELEM = 10
BLOCK_LOG2 = CHUNK_LOG2_AUTO_MIN  # the scan's blocks: 4096 states


@njit(cache=True)
def _chunk_nonzeros(st, n, clog2, nnz, pos, listed, cnz):
    """Non-zeros before each chunk boundary into ``cnz`` (m + 1 values): from the listed
    positions, or counted chunk by chunk (``count_nonzero``)."""
    m = cnz.shape[0] - 1
    cnz[0] = 0
    for c in range(m):
        start = np.int64(c) << clog2
        end = min(n, start + (1 << clog2))
        if listed:
            cnz[c + 1] = np.searchsorted(pos[:nnz], end)
        else:
            cnz[c + 1] = cnz[c] + count_nonzero(st[start:], end - start)


@njit(cache=True)
def _cut(sizes, clog2s, cnz, cnz_at, w_elem, w_nz, lanes):
    """Spans of (tensor, first chunk, end chunk) in order, and the first span of each lane
    (``lanes`` + 1 values). Tensor t's chunks cost ``w_elem[t]`` per element + ``w_nz[t]``
    per non-zero (``cnz``: :func:`_chunk_nonzeros` of every tensor, tensor t's from
    ``cnz_at[t]``); lane j ends at the chunk boundary whose cost so far is nearest to
    (j + 1) / lanes of the whole."""
    count = sizes.shape[0]
    done = np.zeros(count + 1, np.int64)  # cost of the tensors before tensor t
    for t in range(count):
        done[t + 1] = done[t] + _cost(sizes, clog2s, cnz, cnz_at, w_elem, w_nz, t, -1)
    cut_t = np.full(lanes - 1, count, np.int64)  # lane j + 1 starts at chunk cut_c[j] of cut_t[j]
    cut_c = np.zeros(lanes - 1, np.int64)
    t = 0
    for j in range(lanes - 1):
        goal = done[count] * (j + 1)  # costs below are scaled by lanes
        while t < count and lanes * done[t + 1] < goal:
            t += 1
        if t == count:
            break
        lo, hi = 0, cnz_at[t + 1] - cnz_at[t] - 1  # the first chunk end reaching the goal
        while lo < hi:
            mid = (lo + hi) // 2
            if lanes * (done[t] + _cost(sizes, clog2s, cnz, cnz_at, w_elem, w_nz, t, mid)) >= goal:
                hi = mid
            else:
                lo = mid + 1
        if lo > 0 and (goal - lanes * (done[t] + _cost(sizes, clog2s, cnz, cnz_at, w_elem,
                                                       w_nz, t, lo - 1))
                       < lanes * (done[t] + _cost(sizes, clog2s, cnz, cnz_at, w_elem, w_nz,
                                                  t, lo)) - goal):
            lo -= 1
        cut_t[j], cut_c[j] = t, lo
    cap = count + lanes
    pt = np.empty(cap, np.int64)
    pc0 = np.empty(cap, np.int64)
    pc1 = np.empty(cap, np.int64)
    lane_at = np.zeros(lanes + 1, np.int64)
    p, j = 0, 0
    for t in range(count):
        m = cnz_at[t + 1] - cnz_at[t] - 1
        c = 0
        while c < m:
            while j < lanes - 1 and (cut_t[j] < t or (cut_t[j] == t and cut_c[j] <= c)):
                j += 1
                lane_at[j] = p
            c1 = m
            if j < lanes - 1 and cut_t[j] == t:
                c1 = cut_c[j]
            pt[p], pc0[p], pc1[p] = t, c, c1
            p += 1
            c = c1
    for k in range(j + 1, lanes + 1):
        lane_at[k] = p
    return pt[:p], pc0[:p], pc1[:p], lane_at


@njit(inline="always", cache=True)
def _cost(sizes, clog2s, cnz, cnz_at, w_elem, w_nz, t, c):
    """Cost of tensor t's chunks before chunk c (all of them: c = -1)."""
    if c < 0:
        c = cnz_at[t + 1] - cnz_at[t] - 1
    return w_elem[t] * min(np.int64(c) << clog2s[t], sizes[t]) + w_nz[t] * cnz[cnz_at[t] + c]


@njit(cache=True)
def encode_run(states, starts, sizes, fixed_clog2, s, auto_, lanes, prev_kind, prev_code,
               prev_cb):
    """``auto._encode_run`` (same arguments, ``lanes`` for its threads) in the phases of
    the module docstring. Same results, but for tensor t's data: ``data[data_from[t]:
    data_to[t]]``. Only the lanes' loops are compiled parallel: numba's
    parallel lowering would also turn each array operation of the rest into a parallel
    loop, with a launch of the threads each."""
    count = sizes.shape[0]
    a2 = 2 * s
    # 1. non-zeros: count, positions of sparse tensors, per chunk
    nnzs, listed, positions, pos_at, clog2s, cnz, cnz_at = _scan_run(states, starts, sizes,
                                                                    fixed_clog2, lanes)
    # 2. histograms, a row per span
    ones = np.ones(count, np.int64)
    pt, pc0, pc1, lane_at = _cut(sizes, clog2s, cnz, cnz_at, ones, HIST_NZ * ones, lanes)
    spans = pt.shape[0]
    rc = np.zeros((spans, zrh.NCTX * RUN_ALPHABET), np.int64)  # span p's histograms: row p
    lc = np.zeros((spans, zrh.NLCTX * a2), np.int64)
    shifted = np.zeros((spans, zrh.NCTX, RICE_MAX_K + 1), np.int64)
    extra = np.zeros((spans, zrh.NCTX), np.int64)
    lsym, rbase, lbase = zrh.value_tables(s, zrh.CTX_SIGN, RUN_ALPHABET, a2)
    _histogram_spans(states, starts, sizes, clog2s, positions, pos_at, listed, pt, pc0, pc1,
                     lane_at, lsym, rbase, lbase, rc, lc, extra, shifted)
    # 3. the planner: what does not depend on the section before, tensor by tensor on the
    # lanes (with the writers' tables of both outcomes), then the choices in order
    span_at = np.zeros(count + 1, np.int64)
    for p in range(spans):
        span_at[pt[p] + 1] = p + 1
    for t in range(count):
        span_at[t + 1] = max(span_at[t + 1], span_at[t])
    plan = _new_plans(count, s)
    order, order_at = _deal(nnzs, a2, lanes)
    _plan_tensors(order, order_at, span_at, rc, lc, extra, shifted, sizes, s, auto_, plan)
    kinds = np.empty(count, np.int8)
    reused = np.zeros(count, np.bool_)
    rows = np.arange(count)  # the writer's row of each tensor's code (count: ``prev_code``'s)
    cb_at = np.zeros(count + 1, np.int64)
    cbs = np.empty(64 * count + 64, np.uint8)
    bits_at = np.zeros(count + 1, np.int64)
    for t in range(count):
        bits_at[t + 1] = bits_at[t] + cnz_at[t + 1] - cnz_at[t] - 1
    w_elem = np.ones(count, np.int64)
    w_nz = np.zeros(count, np.int64)
    per_elem = np.zeros(count, np.int64)  # the rooms' bounds (``chunks.room``)
    per_nz = np.zeros(count, np.int64)
    per_chunk = np.zeros(count, np.int64)
    pk, pcb = prev_kind, prev_cb
    if prev_kind == auto.KIND_ZRH:
        p_mode, p_ks, p_rl, p_rs, p_ll, p_ls = zrh.unpack_code(prev_code, s)
        _zrh_row(plan, count, p_mode, p_ks, p_rl, p_rs, p_ll)
    else:
        p_mode, p_ks, p_rl, p_rs, p_ll, p_ls = (-1, prev_code,
                                                np.zeros((1, RUN_ALPHABET), np.int64),
                                                prev_code, np.zeros((1, a2), np.int64),
                                                prev_code)
    p_row = count
    for t in range(count):
        nctx, nlctx = plan.nctx[t], plan.nlctx[t]
        best = (plan.b_choice[t], plan.b_mode[t], plan.b_ks[t, :nctx], plan.b_rl[t, :nctx],
                plan.b_rs[t, :nctx], plan.b_ll[t, :nlctx], plan.b_ls[t, :nlctx],
                plan.b_bits[t], plan.b_cb[t])
        alone = (plan.hl[t], plan.hs[t], plan.hbits[t], plan.hcb_bytes[t], plan.rice[t], best)
        choice, code = auto.choose_after(
            alone, plan.rc[t].reshape(zrh.NCTX, RUN_ALPHABET), plan.lc[t].reshape(zrh.NLCTX, a2),
            plan.extra[t], 0, auto_, pk,
            p_mode, p_ks, p_rl, p_rs, p_ll, p_ls, pcb)
        if choice == -2:
            kinds[t] = auto.KIND_HUFFMAN
            cb = auto.code_bytes(plan.hl[t], plan.hs[t])
            per_elem[t] = plan.h_per_elem[t]
            w_elem[t] = HUFFMAN_ELEM
            pk, pcb = auto.KIND_HUFFMAN, cb
        else:
            kinds[t] = auto.KIND_ZRH
            if choice < 0:
                reused[t] = True
                rows[t] = p_row
                cb = auto._NO_CODEBOOK
            else:
                p_mode, p_ks, p_rl, p_rs, p_ll, p_ls = code
                cb = zrh._serialize(p_mode, p_ks, p_rl, p_rs, p_ll, p_ls)
            r = rows[t]
            per_elem[t], per_nz[t], per_chunk[t] = (plan.z_per_elem[r], plan.z_per_nz[r],
                                                    plan.z_per_chunk[r])
            w_nz[t] = ZRH_NZ
            pk, pcb, p_row = auto.KIND_ZRH, auto._NO_CODEBOOK, r
        k = 0 if reused[t] else cb.shape[0]
        cbs = auto._grown(cbs, cb_at[t] + k, cb_at[t])
        cbs[cb_at[t]: cb_at[t] + k] = cb[:k]
        cb_at[t + 1] = cb_at[t] + k
    last = auto._NONE
    if count > 0 and kinds[count - 1] == auto.KIND_ZRH:
        last = zrh.pack_code(p_mode, p_ks, p_rl, p_rs, p_ll, p_ls)
    # 4. the bits, spans cut again by each tensor's code, then moved together
    pt, pc0, pc1, lane_at = _cut(sizes, clog2s, cnz, cnz_at, w_elem, w_nz, lanes)
    spans = pt.shape[0]
    base = np.zeros(spans + 1, np.int64)
    for p in range(spans):
        t = pt[p]
        c0, c1 = pc0[p], pc1[p]
        elems = min(c1 << clog2s[t], sizes[t]) - (c0 << clog2s[t])
        nz = cnz[cnz_at[t] + c1] - cnz[cnz_at[t] + c0]
        base[p + 1] = base[p] + room(elems, c1 - c0, per_elem[t], per_nz[t], nz, per_chunk[t])
    data = np.empty(max(base[spans], 1 << 16), np.uint8)
    bits = np.empty(bits_at[count], np.int64)
    ends = np.zeros(spans, np.int64)
    lsyms, rbases, lbases = _value_modes(s)
    _write_spans(states, starts, sizes, clog2s, s, positions, pos_at, listed, pt, pc0, pc1,
                 lane_at, kinds, rows, plan.modes, plan.ctxms, plan.kss, plan.rls, plan.rcds,
                 lsyms, rbases, lbases, plan.shorts, plan.lts, plan.tables, base, data, bits,
                 bits_at, ends)
    data_from = np.zeros(count, np.int64)
    data_to = np.zeros(count, np.int64)
    p = 0
    while p < spans:  # each tensor's spans moved together (not the tensors: a tensor's
        t, q = pt[p], p + 1  # room left over is a long gap, copied in long blocks)
        while q < spans and pt[q] == t:
            q += 1
        data_from[t] = base[p]
        data_to[t] = join_groups(data, base[p: q + 1], ends[p: q])
        p = q
    return kinds, reused, clog2s, cbs, cb_at, bits, bits_at, data, data_from, data_to, last


@njit(cache=True)
def _scan_run(states, starts, sizes, fixed_clog2, lanes):
    """Phase 1: every tensor's count of non-zeros, whether its positions are listed (at most
    ``zrh.sparse_limit`` of them, as ``zrh.scan_nonzeros`` lists them), the listed positions
    (tensor t's: ``positions[pos_at[t]:pos_at[t + 1]]``), its chunk size and its non-zeros
    before each chunk boundary (``cnz[cnz_at[t]:cnz_at[t + 1]]``). The states are read once,
    in blocks of 2**BLOCK_LOG2 (the smallest automatic chunk), an equal share of the blocks
    per lane (:func:`_scan_blocks`); chunks of 2**BLOCK_LOG2 or more are counted from the
    blocks' counts."""
    count = sizes.shape[0]
    block = 1 << BLOCK_LOG2
    block_at = np.zeros(count + 1, np.int64)
    limits = np.zeros(count, np.int64)
    for t in range(count):
        block_at[t + 1] = block_at[t] + ((sizes[t] + block - 1) >> BLOCK_LOG2)
        limits[t] = max(zrh.sparse_limit(sizes[t], lanes), 0)
    nb = block_at[count]
    block_t = np.empty(nb, np.int64)
    for t in range(count):
        block_t[block_at[t]: block_at[t + 1]] = t
    lane_blk = np.zeros(lanes + 1, np.int64)
    lane_base = np.zeros(lanes + 1, np.int64)  # each lane's room in ``scratch``
    for j in range(lanes):
        lane_blk[j + 1] = (j + 1) * nb // lanes
        room_, part_t, part_n = 0, -1, 0
        for blk in range(lane_blk[j], lane_blk[j + 1]):
            t = block_t[blk]
            if t != part_t:
                if part_t >= 0:
                    room_ += min(part_n, limits[part_t])
                part_t, part_n = t, 0
            part_n += min(sizes[t] - ((blk - block_at[t]) << BLOCK_LOG2), block)
        if part_t >= 0:
            room_ += min(part_n, limits[part_t])
        lane_base[j + 1] = lane_base[j] + room_ + block + 8  # a block listed, then dropped
    bcnt = np.empty(nb, np.int64)
    bstart = np.empty(nb, np.int64)
    blisted = np.empty(nb, np.bool_)
    scratch = np.empty(lane_base[lanes], np.int64)
    _scan_blocks(states, starts, sizes, limits, block_t, block_at, lane_blk, lane_base, bcnt,
                 bstart, blisted, scratch)
    nnzs = np.zeros(count, np.int64)
    listed = np.zeros(count, np.bool_)
    clog2s = np.zeros(count, np.int64)
    pos_at = np.zeros(count + 1, np.int64)
    cnz_at = np.zeros(count + 1, np.int64)
    for t in range(count):
        nnzs[t] = bcnt[block_at[t]: block_at[t + 1]].sum()
        listed[t] = nnzs[t] <= limits[t]
        pos_at[t + 1] = pos_at[t] + (nnzs[t] if listed[t] else 0)
        n = sizes[t]
        clog2s[t] = auto_chunk_log2(n, nnzs[t]) if fixed_clog2 < 0 else fixed_clog2
        cnz_at[t + 1] = cnz_at[t] + ((n + (1 << clog2s[t]) - 1) >> clog2s[t]) + 1
    positions = np.empty(pos_at[count], np.int64)
    cnz = np.empty(cnz_at[count], np.int64)
    for t in range(count):
        if listed[t]:
            p = pos_at[t]
            for blk in range(block_at[t], block_at[t + 1]):
                c = bcnt[blk]
                if blisted[blk]:
                    positions[p: p + c] = scratch[bstart[blk]: bstart[blk] + c]
                elif c > 0:  # a block over 1/8 non-zeros in a tensor within its limit
                    b0 = (blk - block_at[t]) << BLOCK_LOG2
                    m = min(sizes[t] - b0, block)
                    _list_block(states[starts[t] + b0: starts[t] + b0 + ((m + 7) & ~7)], m, b0,
                                positions, p, p + m)
                p += c
        n = sizes[t]
        tc = cnz[cnz_at[t]: cnz_at[t + 1]]
        if clog2s[t] >= BLOCK_LOG2:
            per = 1 << (clog2s[t] - BLOCK_LOG2)
            tc[0] = 0
            for c in range(tc.shape[0] - 1):
                b0 = block_at[t] + c * per
                tc[c + 1] = tc[c] + bcnt[b0: min(b0 + per, block_at[t + 1])].sum()
        else:  # a chunk size below the blocks' (``chunk_log2`` given)
            _chunk_nonzeros(states[starts[t]: starts[t] + ((n + 7) & ~7)], n, clog2s[t],
                            nnzs[t], positions[pos_at[t]: pos_at[t + 1]], listed[t], tc)
    return nnzs, listed, positions, pos_at, clog2s, cnz, cnz_at


@njit(cache=True, parallel=True)
def _scan_blocks(states, starts, sizes, limits, block_t, block_at, lane_blk, lane_base, bcnt,
                 bstart, blisted, scratch):
    """Each lane's blocks counted and, while the tensor's non-zeros in the lane are at most
    its limit, listed (positions in the tensor) into the lane's room of ``scratch``: block
    b's ``bcnt[b]`` positions from ``bstart[b]`` if ``blisted[b]``. A block is listed
    while counted (:func:`_list_block`: zero words skipped 8 at a time), until one of the
    tensor's blocks in the lane holds over 1/8 non-zeros; from then on each block is
    counted first (``count_nonzero``, every word) and listed only if within the limit. So
    a tensor within its limit has all its blocks listed but those over 1/8
    (:func:`_scan_run` lists them)."""
    block = 1 << BLOCK_LOG2
    for j in prange(lane_blk.shape[0] - 1):
        k = lane_base[j]
        part_t, part_k, dense = -1, 0, False
        for blk in range(lane_blk[j], lane_blk[j + 1]):
            t = block_t[blk]
            if t != part_t:
                part_t, part_k, dense = t, 0, False
            b0 = (blk - block_at[t]) << BLOCK_LOG2
            m = min(sizes[t] - b0, block)
            st = states[starts[t] + b0: starts[t] + b0 + ((m + 7) & ~7)]
            bstart[blk] = k
            blisted[blk] = False
            if part_k > limits[t]:  # more than the tensor's limit: counted only
                bcnt[blk] = count_nonzero(st, m)
                continue
            if not dense:
                end = _list_block(st, m, b0, scratch, k, k + (m >> 3))
                if end >= 0:
                    c = end - k
                    bcnt[blk] = c
                    if part_k + c <= limits[t]:
                        blisted[blk] = True
                        k = end
                        part_k += c
                    else:
                        part_k = limits[t] + 1
                    continue
                dense = True
            c = count_nonzero(st, m)
            bcnt[blk] = c
            part_k += c
            if part_k <= limits[t] and c <= m >> 3:
                _list_block(st, m, b0, scratch, k, k + m)
                blisted[blk] = True
                k += c


@njit(cache=True)
def _list_block(st, m, at, pos, k, cap):
    """The positions (from ``at``) of the non-zero states among the first m of ``st`` (zero
    padded to a multiple of 8) into ``pos`` from k on, 64 states skipped at a time when all
    zero (``zrh._scan``'s loop); returns the new k, or -1 as soon as it passes ``cap``
    (up to 8 positions past it written)."""
    words = st.view(np.uint64)
    nw = (m + 7) >> 3
    b = 0
    while b + 8 <= nw:
        x = (words[b] | words[b + 1] | words[b + 2] | words[b + 3] | words[b + 4] |
             words[b + 5] | words[b + 6] | words[b + 7])
        if x != 0:
            for w in range(b, b + 8):
                k = zrh._list_word(words[w], at + (w << 3), pos, k)
                if k > cap:
                    return -1
        b += 8
    while b < nw:
        k = zrh._list_word(words[b], at + (b << 3), pos, k)
        if k > cap:
            return -1
        b += 1
    return k


@njit(cache=True, parallel=True)
def _histogram_spans(states, starts, sizes, clog2s, positions, pos_at, listed, pt, pc0, pc1,
                     lane_at, lsym, rbase, lbase, rc, lc, extra, shifted):
    """Each lane's spans counted (``zrh._histogram_group``), span p into row p."""
    for j in prange(lane_at.shape[0] - 1):
        for p in range(lane_at[j], lane_at[j + 1]):
            t = pt[p]
            n = sizes[t]
            zrh._histogram_group(states[starts[t]: starts[t] + ((n + 7) & ~7)], n, clog2s[t],
                                 pc0[p], pc1[p], positions[pos_at[t]: pos_at[t + 1]],
                                 listed[t], lsym, rbase, lbase, rc[p], lc[p], extra[p],
                                 shifted[p])


@njit(cache=True, parallel=True)
def _write_spans(states, starts, sizes, clog2s, s, positions, pos_at, listed, pt, pc0, pc1,
                 lane_at, kinds, rows, modes, ctxms, kss, rls, rcds, lsyms, rbases, lbases,
                 shorts, lts, tables, base, data, bits, bits_at, ends):
    """Each lane's spans written from their rooms' starts ``base``, their ends into
    ``ends``: ``zrh._write_group`` with the tables of row ``rows[t]`` (the value tables of
    its context mode: :func:`_value_modes`) or ``symbol._write_group`` by the tensor's
    kind."""
    for j in prange(lane_at.shape[0] - 1):
        for p in range(lane_at[j], lane_at[j + 1]):
            t = pt[p]
            n = sizes[t]
            st = states[starts[t]: starts[t] + ((n + 7) & ~7)]
            chunk_bits = bits[bits_at[t]: bits_at[t + 1]]
            if kinds[t] == auto.KIND_ZRH:
                r = rows[t]
                v = ctxms[r]
                ends[p] = zrh._write_group(st, n, clog2s[t], modes[r], kss[r], rls[r], rcds[r],
                                           lsyms[v], rbases[v], lbases[v], shorts[r], lts[r],
                                           None, positions[pos_at[t]: pos_at[t + 1]],
                                           listed[t], pc0[p], pc1[p], base[p], data,
                                           chunk_bits)
            else:
                ends[p] = symbol._write_group(st, n, clog2s[t], s, tables[t], pc0[p], pc1[p],
                                              base[p], data, chunk_bits)



# the planner's arrays (``_new_plans``): per tensor, ``auto.choose_alone``'s results
# (``zrh._plan_alone``'s code padded to NCTX / NLCTX rows, its sizes nctx / nlctx), the
# tensor's histograms, the full-Huffman writer's table; per row (a tensor's own ZRH code,
# row ``count``: the section before the run's), the ZRH writer's tables and context mode
Plans = namedtuple("Plans", [
    "hl", "hs", "hbits", "hcb_bytes", "rice", "b_choice", "b_mode", "nctx", "nlctx", "b_ks",
    "b_rl", "b_rs", "b_ll", "b_ls", "b_bits", "b_cb", "rc", "lc", "extra", "tables",
    "h_per_elem", "modes", "ctxms", "kss", "rls", "rcds", "shorts", "lts", "z_per_elem",
    "z_per_nz", "z_per_chunk"])


@njit(cache=True)
def _new_plans(count, s):
    a2 = 2 * s
    rows = count + 1
    return Plans(
        np.zeros((count, a2 + 1), np.int64), np.zeros(count, np.int64),
        np.zeros(count, np.int64), np.zeros(count, np.int64),
        np.zeros((count, zrh.NCTX, RICE_MAX_K + 1), np.int64), np.zeros(count, np.int64),
        np.zeros(count, np.int64), np.zeros(count, np.int64), np.zeros(count, np.int64),
        np.zeros((count, zrh.NCTX), np.int64), np.zeros((count, zrh.NCTX, RUN_ALPHABET), np.int64),
        np.zeros((count, zrh.NCTX), np.int64), np.zeros((count, zrh.NLCTX, a2), np.int64),
        np.zeros((count, zrh.NLCTX), np.int64), np.zeros(count, np.int64),
        np.zeros(count, np.int64), np.zeros((count, zrh.NCTX * RUN_ALPHABET), np.int64),
        np.zeros((count, zrh.NLCTX * a2), np.int64), np.zeros((count, zrh.NCTX), np.int64),
        np.zeros((count, a2 + 1), np.uint32), np.zeros(count, np.int64),
        np.zeros(rows, np.int64), np.zeros(rows, np.int64), np.zeros((rows, zrh.NCTX), np.int64),
        np.zeros((rows, zrh.NCTX, RUN_ALPHABET), np.int64),
        np.zeros((rows, zrh.NCTX, RUN_ALPHABET), np.int64),
        np.zeros((rows, zrh.NCTX * RUN_DIRECT), np.uint64),
        np.zeros((rows, zrh.NLCTX * a2), np.uint32), np.zeros(rows, np.int64),
        np.zeros(rows, np.int64), np.zeros(rows, np.int64))


@njit(cache=True)
def _deal(nnzs, a2, lanes):
    """Tensors dealt to the lanes for planning, the costliest first to the least loaded
    lane (cost: 4 x 2s + non-zeros up to 8 x 2s; at s = 127 the planner took 20-45 us for
    a tensor of 256 states, 75-120 us for one of 2**16 to 2**18): the tensors of lane j are
    ``order[order_at[j]:order_at[j + 1]]``."""
    count = nnzs.shape[0]
    cost = np.empty(count, np.int64)
    for t in range(count):
        cost[t] = 4 * a2 + min(nnzs[t], 8 * a2)
    load = np.zeros(lanes, np.int64)
    lane_of = np.empty(count, np.int64)
    for t in np.argsort(-cost, kind="mergesort"):
        j = np.argmin(load)
        lane_of[t] = j
        load[j] += cost[t]
    order_at = np.zeros(lanes + 1, np.int64)
    for t in range(count):
        order_at[lane_of[t] + 1] += 1
    for j in range(lanes):
        order_at[j + 1] += order_at[j]
    order = np.empty(count, np.int64)
    fill = order_at[:lanes].copy()
    for t in range(count):
        order[fill[lane_of[t]]] = t
        fill[lane_of[t]] += 1
    return order, order_at


@njit(cache=True, parallel=True)
def _plan_tensors(order, order_at, span_at, rc, lc, extra, shifted, sizes, s, auto_, plan):
    """:func:`_plan_lane` of each lane's tensors (:func:`_deal`)."""
    for j in prange(order_at.shape[0] - 1):
        _plan_lane(order[order_at[j]: order_at[j + 1]], span_at, rc, lc, extra, shifted,
                   sizes, s, auto_, plan)


@njit(cache=True)
def _plan_lane(tensors, span_at, rc, lc, extra, shifted, sizes, s, auto_, plan):
    """For each of these tensors: its histograms added up from its spans' rows,
    ``auto.choose_alone`` of them, and the writers' tables of both its full-Huffman code
    and the ZRH code found. One call a lane, not a tensor: a call passing ``plan`` (31
    arrays, each reference counted) took ~0.4 us. (Inlined into the prange body instead,
    numba's parallel lowering miscompiled it: wrong bytes.)"""
    a2 = 2 * s
    h_shifted = np.empty(zrh.NCTX * (RICE_MAX_K + 1), np.int64)
    work = np.empty(CANONICAL_WORK, np.int64)
    for t in tensors:
        h_shifted[:] = 0
        for p in range(span_at[t], span_at[t + 1]):
            zrh.add_into(plan.rc[t], rc[p])
            zrh.add_into(plan.lc[t], lc[p])
            zrh.add_into(plan.extra[t], extra[p])
            zrh.add_into(h_shifted, shifted[p].reshape(-1))
        hl, hs, hbits, hcb_bytes, rice, best = auto.choose_alone(
            plan.rc[t].reshape(zrh.NCTX, RUN_ALPHABET), plan.lc[t].reshape(zrh.NLCTX, a2),
            plan.extra[t], h_shifted.reshape(zrh.NCTX, RICE_MAX_K + 1), sizes[t], s, 0, auto_)
        plan.hl[t] = hl
        plan.hs[t], plan.hbits[t], plan.hcb_bytes[t] = hs, hbits, hcb_bytes
        plan.rice[t] = rice
        choice, mode, ks, rl, rs, ll, ls, bits, cb = best
        nctx, nlctx = rl.shape[0], ll.shape[0]
        plan.b_choice[t], plan.b_mode[t], plan.nctx[t], plan.nlctx[t] = (choice, mode, nctx,
                                                                          nlctx)
        plan.b_ks[t, :nctx] = ks
        plan.b_rl[t, :nctx] = rl
        plan.b_rs[t, :nctx] = rs
        plan.b_ll[t, :nlctx] = ll
        plan.b_ls[t, :nlctx] = ls
        plan.b_bits[t], plan.b_cb[t] = bits, cb
        if auto_:
            packed_codes_work(hl, plan.tables[t], work)
            plan.h_per_elem[t] = hl.max()
        if bits >= 0:
            _zrh_row(plan, t, mode, ks, rl, rs, ll)


@njit(inline="always", cache=True)
def _zrh_row(plan, r, mode, ks, rl, rs, ll):
    """The ZRH writer's tables of a code into row r (``zrh._write``'s, padded), written in
    place (``zrh._writer_rows``). Inlined: a call passing ``plan`` costs ~0.4 us."""
    nctx = rl.shape[0]
    plan.modes[r] = mode
    plan.ctxms[r] = zrh.ctxmode_of(nctx, ll.shape[0])
    plan.kss[r, :nctx] = ks
    plan.rls[r, :nctx] = rl
    per_elem, run_max, level_max = zrh._writer_rows(mode, ks, rl, rs, ll, plan.rcds[r, :nctx],
                                                    plan.shorts[r], plan.lts[r])
    plan.z_per_elem[r], plan.z_per_nz[r], plan.z_per_chunk[r] = (per_elem, run_max + level_max,
                                                                 run_max)


@njit(cache=True)
def _value_modes(s):
    """``zrh.value_tables`` of each context mode (row = the mode), as the writer reads
    them."""
    lsyms = np.empty((3, 256), np.int64)
    rbases = np.empty((3, 256), np.int64)
    lbases = np.empty((3, 256), np.int64)
    for v in range(3):
        lsyms[v], rbases[v], lbases[v] = zrh.value_tables(s, v, RUN_DIRECT, 2 * s)
    return lsyms, rbases, lbases
