"""``auto`` (the default coder) and ``zrh``: which code a tensor gets, and how it is written.

:func:`choose` weighs every ZRH candidate (``zrh._plan``: Huffman or Rice runs, 1, 4 or
4 + sign contexts, the previous section's code) against full Huffman over the states, each
by its exact size, from ZRH's histograms alone. Both backends decide with it: the GPU backend
counts the histograms on the device and calls :func:`plan`; the CPU backend calls
:func:`encode`.

On the CPU, every tensor's states are scanned once for their count of non-zeros and, when
sparse (under 1/16 non-zero on two threads: ``zrh.sparse_limit``), their positions
(``zrh.scan_nonzeros``), which the histograms and the writer then read instead of listing
each window's (``zrh._next_list``): the work left is per non-zero, so one thread does it.
A tensor is counted, planned and written in one numba call (:func:`_encode_tensor`; a dense
tensor of 2**16 elements or more by several threads, a chunk group each), and a bundle's
consecutive tensors in one call for them all (:func:`encode_run`, states read in place
from the bundle's arena; on several threads by ``lanes``, each phase of the run's work cut
into equal shares of all its tensors' chunks): the Python and dispatch around half a dozen
calls per tensor cost more than the coding for small and sparse tensors, and 80-370 us per
dense tensor.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..codebook import Code, canonical_codes, code_nbytes, packed_code_rows, put_code
from ..payload import Reader
from . import symbol, zrh
from .chunks import (RICE_MAX_K, RUN_ALPHABET, auto_chunk_log2, chunk_threads, group_rooms,
                     group_starts, join_groups, raw_values, with_kernels)

KIND_NONE, KIND_ZRH, KIND_HUFFMAN = -1, 0, 1
_NONE = np.zeros(0, np.int64)
_NO_CODEBOOK = np.zeros(0, np.uint8)

_RECENT_ZRH: dict = {}  # (codebook bytes, s) -> packed ZRH code, of the last sections coded


def _remember(cb: bytes, s: int, packed) -> bytes:
    if len(_RECENT_ZRH) >= 16:  # the oldest goes: a few threads code bundles at once at most
        try:
            del _RECENT_ZRH[next(iter(_RECENT_ZRH))]
        except (KeyError, StopIteration, RuntimeError):  # another thread changed it
            pass
    _RECENT_ZRH[(cb, s)] = packed
    return cb


def _prev_packed(prev, s: int):
    """The previous bundle section's ZRH code, packed (``zrh.pack_code``), if it was a ZRH
    section (usually the one this process just planned: kept, not parsed again)."""
    if prev is None or prev[0] != "zrh":
        return None
    packed = _RECENT_ZRH.get((prev[1], s))
    return packed if packed is not None else zrh.ZrhCode.parse(Reader(prev[1]), s, 1).packed


def _prev_args(prev, s: int) -> tuple:
    """:func:`choose`'s arguments for the previous section ``prev`` = (coder, codebook)."""
    if prev is not None and prev[0] == "zrh":
        return KIND_ZRH, _prev_packed(prev, s), _NO_CODEBOOK
    if prev is not None and prev[0] == "huffman":
        return KIND_HUFFMAN, _NONE, np.frombuffer(prev[1], np.uint8)
    return KIND_NONE, _NONE, _NO_CODEBOOK


@njit(cache=True)
def code_bytes(lengths, single):
    """``Code.serialize`` of (lengths, single) as an array."""
    out = np.zeros(code_nbytes(lengths, single), np.uint8)
    put_code(out, 0, lengths, single)
    return out


@njit(cache=True)
def choose(rc, lc, extra, shifted, n, s, raw_bits, auto, prev_kind, prev_code, prev_cb):
    """The code of a tensor from its ZRH histograms (``zrh.histograms``): (kind, choice,
    the ZRH code packed (``zrh.pack_code``), state code lengths, state code single).

    kind is KIND_ZRH (choice < 0: the previous section's code ``prev_code``, which costs no
    codebook bytes) or, only with ``auto``, KIND_HUFFMAN: full Huffman over the states, when
    its data and codebook bits (none if its codebook equals the previous section's
    ``prev_cb``) are no more than the best ZRH code's; weighed first, they cap the ZRH
    planner (``zrh._plan``), which then builds no code that cannot be cheaper. ``raw_bits``
    per non-zero (31 for exact top-k). In two steps: :func:`choose_alone`, which does not
    depend on the previous section, then :func:`choose_after`."""
    alone = choose_alone(rc, lc, extra, shifted, n, s, raw_bits, auto)
    if prev_kind == KIND_ZRH:
        p_mode, p_ks, p_rl, p_rs, p_ll, p_ls = zrh.unpack_code(prev_code, s)
    else:
        p_mode, p_ks, p_rl, p_rs, p_ll, p_ls = (-1, prev_code, lc[:1].copy(), prev_code,
                                                lc[:1].copy(), prev_code)
    choice, code = choose_after(alone, rc, lc, extra, raw_bits, auto, prev_kind, p_mode, p_ks,
                                p_rl, p_rs, p_ll, p_ls, prev_cb)
    hl, hs = alone[0], alone[1]
    if choice == -2:  # no ZRH code beats full Huffman
        return KIND_HUFFMAN, 0, prev_code, hl, hs
    if choice < 0:
        return KIND_ZRH, choice, prev_code, hl, hs
    return KIND_ZRH, choice, zrh.pack_code(*code), hl, hs


@njit(cache=True)
def choose_alone(rc, lc, extra, shifted, n, s, raw_bits, auto):
    """What :func:`choose` weighs that does not depend on the previous section: the
    full-Huffman alternative (lengths, single, data bits, codebook bytes; with ``auto``) and
    ``zrh._plan_alone`` below its cost, and the runs' Rice costs."""
    hl = np.zeros(2 * s + 1, np.int64)
    hs, hbits, hcb_bytes = -1, 0, 0
    cap = -1
    if auto:  # full Huffman first: ZRH codes that cannot beat it are not built
        counts, hl, hs, hbits, hcb_bytes = zrh.state_code(lc, n, s)
        hbits += raw_bits * (n - counts[s])
        cap = hbits + 8 * hcb_bytes
    rice = zrh.rice_costs(rc, shifted)
    return hl, hs, hbits, hcb_bytes, rice, zrh._plan_alone(rc, lc, extra, rice,
                                                           raw_bits * lc.sum(), cap)


@njit(inline="always", cache=True)
def choose_after(alone, rc, lc, extra, raw_bits, auto, prev_kind, p_mode, p_ks, p_rl, p_rs,
                 p_ll, p_ls, prev_cb):
    """:func:`choose` from :func:`choose_alone`'s result and the previous section: its
    kind, its ZRH code unpacked (``zrh.unpack_code``; read if ``prev_kind`` is KIND_ZRH),
    its Huffman codebook ``prev_cb`` (read if KIND_HUFFMAN). Returns (choice, the ZRH code
    (mode, ks, rl, rs, ll, ls)): choice -2 is full Huffman, -1 the previous code. Inlined,
    as are ``zrh._with_prev`` and ``zrh._cost_of``: it runs once a tensor in the serial part
    of ``lanes.encode_run``, where the calls (~15 arrays passed, each reference counted)
    took a third of its time. Not to be inlined into a ``prange`` body."""
    hl, hs, hbits, hcb_bytes, rice, best = alone
    cap = -1
    if auto:
        cap = hbits + 8 * hcb_bytes
        if prev_kind == KIND_HUFFMAN and prev_cb.shape[0] == hcb_bytes:
            if (code_bytes(hl, hs) == prev_cb).all():
                cap = hbits
    if prev_kind != KIND_ZRH:
        p_mode = -1
    choice, mode, ks, rl, rs, ll, ls, _, _ = zrh._with_prev(
        best, rc, lc, extra, rice, raw_bits * lc.sum(), p_mode, p_ks, p_rl, p_rs, p_ll, p_ls,
        cap)
    return choice, (mode, ks, rl, rs, ll, ls)


def plan(coder: str, hist, s: int, n: int, raw_bits: int, prev=None):
    """The code of a tensor coded with ``auto`` or ``zrh``, chosen from its ZRH histograms
    (``zrh.histograms``; the GPU backend counts the same arrays on the device):
    (coder, codebook bytes, code) with a ``Code`` for huffman, a ``zrh.ZrhCode`` for zrh.
    ``raw_bits`` per non-zero (31 for exact top-k); ``prev`` as in :func:`encode`."""
    rc, lc, extra, shifted = hist
    kind, choice, packed, hl, hs = choose(rc, lc, extra, shifted, n, s, raw_bits,
                                          coder == "auto", *_prev_args(prev, s))
    if kind == KIND_HUFFMAN:
        return "huffman", bytes(code_bytes(hl, hs)), Code(hl, int(hs))
    zc = zrh.ZrhCode.from_packed(packed, s)
    if choice < 0:
        return "zrh", prev[1], zc
    return "zrh", _remember(zc.to_bytes(), s, packed), zc


ZRH_PARAMS = 8  # per tensor: mode, context mode, Rice k of the NCTX run contexts, padding


@njit(cache=True)
def row_layout(s):
    """Where ``zrh.histograms``' four arrays lie when laid end to end in one row (run
    counts from 0, level counts, extra bits, sums of r >> k): their starts after the first,
    and the row's length. The GPU's ZRH histogram kernel counts into such rows."""
    lc_at = zrh.NCTX * RUN_ALPHABET
    extra_at = lc_at + zrh.NLCTX * 2 * s
    shifted_at = extra_at + zrh.NCTX
    return lc_at, extra_at, shifted_at, shifted_at + zrh.NCTX * (RICE_MAX_K + 1)


@njit(cache=True)
def plan_rows(hist, sizes, s, raw_bits, auto, prev_kind, prev_code, prev_cb):
    """:func:`plan` for a batch in one call: the codes of tensors whose ZRH histograms are
    the rows of ``hist`` (laid out as :func:`row_layout` says), in order, each section's
    previous section being the row before (the first's: ``_prev_args``). Returns, per row:
    kind (KIND_ZRH or KIND_HUFFMAN), whether it reuses the previous section's ZRH code (its
    codebook bytes are then the previous section's), codebook bytes
    (``cb[cb_at[t]:cb_at[t + 1]]``, none when reused), and the writers' tables as the GPU
    kernels read them: Huffman code lengths and codes; ZRH parameters (``ZRH_PARAMS``:
    mode, context mode, Rice ks), run and level codes as code << 5 | length; last, the
    packed ZRH code of the last row (or an empty array)."""
    count = hist.shape[0]
    alphabet = 2 * s + 1
    lc_at, extra_at, shifted_at, row = row_layout(s)
    kinds = np.empty(count, np.int8)
    reuse = np.zeros(count, np.bool_)
    cb_at = np.zeros(count + 1, np.int64)
    cb = np.empty(count * 64 + 64, np.uint8)
    lengths = np.zeros((count, alphabet), np.uint8)
    codes = np.zeros((count, alphabet), np.uint16)
    zpar = np.zeros((count, ZRH_PARAMS), np.int32)
    rtab = np.zeros((count, zrh.NCTX, RUN_ALPHABET), np.uint32)
    ltab = np.zeros((count, zrh.NLCTX, 2 * s), np.uint32)
    pk, pc, pcb = prev_kind, prev_code, prev_cb
    last = _NONE
    for t in range(count):
        h = hist[t]
        rc = h[:lc_at].reshape((zrh.NCTX, RUN_ALPHABET))
        lc = h[lc_at:extra_at].reshape((zrh.NLCTX, 2 * s))
        extra = h[extra_at:shifted_at]
        shifted = h[shifted_at:row].reshape((zrh.NCTX, RICE_MAX_K + 1))
        kind, choice, packed, hl, hs = choose(rc, lc, extra, shifted, sizes[t], s, raw_bits,
                                              auto, pk, pc, pcb)
        kinds[t] = kind
        if kind == KIND_HUFFMAN:
            out = code_bytes(hl, hs)
            if hs >= 0:  # a one-symbol code has no codewords (codebook.Code)
                hl = np.zeros_like(hl)
            lengths[t] = hl
            codes[t] = canonical_codes(hl)
            pk, pc, pcb = KIND_HUFFMAN, _NONE, out
            last = _NONE
        else:
            mode, ks, rl, rs, ll, ls = zrh.unpack_code(packed, s)
            out = _NO_CODEBOOK
            if choice < 0:
                reuse[t] = True
            else:
                out = zrh._serialize(mode, ks, rl, rs, ll, ls)
            rt, lt = zrh.packed_tables(mode, ks, rl, rs, ll)
            zpar[t, 0] = mode
            zpar[t, 1] = zrh.ctxmode_of(rl.shape[0], ll.shape[0])
            zpar[t, 2: 2 + ks.shape[0]] = ks
            rtab[t, : rt.shape[0]] = rt
            ltab[t, : lt.shape[0]] = lt
            pk, pc, pcb = KIND_ZRH, packed, _NO_CODEBOOK
            last = packed
        k = out.shape[0]
        if cb_at[t] + k > cb.shape[0]:
            grown = np.empty(2 * cb.shape[0] + k, np.uint8)
            grown[: cb_at[t]] = cb[: cb_at[t]]
            cb = grown
        cb[cb_at[t]: cb_at[t] + k] = out
        cb_at[t + 1] = cb_at[t] + k
    return kinds, reuse, cb[: cb_at[count]], cb_at, lengths, codes, zpar, rtab, ltab, last


def plan_many(coder: str, hist, sizes, s: int, raw_bits: int, prev=None):
    """:func:`plan_rows` for ``auto``/``zrh`` with ``prev`` = the previous section's
    (coder, codebook) or None: ([(coder, codebook bytes)] per row, then plan_rows' tables
    (lengths, codes, zpar, rtab, ltab))."""
    kinds, reuse, cb, cb_at, *tables, last = plan_rows(
        np.ascontiguousarray(hist, np.int64), np.ascontiguousarray(sizes, np.int64), s,
        raw_bits, coder == "auto", *_prev_args(prev, s))
    chosen = []
    for t in range(kinds.shape[0]):
        if kinds[t] == KIND_HUFFMAN:
            prev = ("huffman", cb[cb_at[t]: cb_at[t + 1]].tobytes())
        elif not reuse[t]:
            prev = ("zrh", cb[cb_at[t]: cb_at[t + 1]].tobytes())
        else:  # the previous section's code, so its very bytes
            prev = ("zrh", prev[1])
        chosen.append(prev)
    if last.size:
        _remember(chosen[-1][1], s, last)
    return chosen, tables


@njit(cache=True)
def _grown(a, need, used):
    """``a``, or if it is shorter than ``need``, a longer copy of its first ``used`` items."""
    if need <= a.shape[0]:
        return a
    b = np.empty(max(2 * a.shape[0], need), a.dtype)
    b[:used] = a[:used]
    return b


# chunk_parallel kernels: _encode_tensor's parallel twin calls their parallel forms for
# several chunk groups, and the serial forms for one (as its serial twin always does)
_histograms, _histograms_serial = zrh._histograms, zrh._histograms.serial
_zrh_write, _zrh_write_serial = zrh._write, zrh._write.serial
_symbol_write, _symbol_write_serial = symbol._write, symbol._write.serial


@with_kernels("_histograms", "_zrh_write", "_symbol_write")
def _encode_tensor(states, n, clog2, s, raw, raw_bits, auto, nnz, pos, threads, prev_kind,
                   prev_code, prev_cb, data, at):
    """Histograms, :func:`choose`, codebook and write of one tensor in one call, from its
    ``nnz`` non-zeros and, if they are sparse, their positions ``pos``
    (``zrh.scan_nonzeros``; read if it holds all ``nnz``, by one thread); the chunk groups
    of a dense tensor counted and written by ``threads`` threads (``chunks.group_count``),
    then moved together (``chunks.join_groups``). The data is written into ``data`` from
    byte ``at`` on (a longer copy of it if it is short of room): returns (kind, choice,
    packed ZRH code, codebook bytes, chunk bits, data, the data's end)."""
    listed = pos.shape[0] == nnz
    m = (n + (1 << clog2) - 1) >> clog2
    first = group_starts(n, m, 1 if listed else threads)
    groups = first.shape[0] - 1
    if groups > 1:
        rc, lc, extra, shifted = _histograms(states, n, clog2, s, first, pos, listed)
    else:
        rc, lc, extra, shifted = _histograms_serial(states, n, clog2, s, first, pos, listed)
    kind, choice, packed, hl, hs = choose(rc, lc, extra, shifted, n, s, raw_bits, auto,
                                          prev_kind, prev_code, prev_cb)
    chunk_bits = np.empty(m, np.int64)
    ends = np.zeros(groups, np.int64)
    if kind == KIND_ZRH:
        mode, ks, rl, rs, ll, ls = zrh.unpack_code(packed, s)
        cb = zrh._serialize(mode, ks, rl, rs, ll, ls)
        rcd, short, lt, per_elem, run_max, level_max = zrh._writer_tables(mode, ks, rl, rs, ll)
        base = at + group_rooms(n, clog2, first, per_elem, run_max + level_max + raw_bits,
                                nnz, run_max)
        out = _grown(data, base[groups], at)
        ctxmode = zrh.ctxmode_of(rl.shape[0], ll.shape[0])
        if groups > 1:
            _zrh_write(states, n, clog2, s, mode, ctxmode, ks, rl, rcd, short, lt, raw, pos,
                       listed, first, base, out, chunk_bits, ends)
        else:
            _zrh_write_serial(states, n, clog2, s, mode, ctxmode, ks, rl, rcd, short, lt,
                              raw, pos, listed, first, base, out, chunk_bits, ends)
    else:
        cb = code_bytes(hl, hs)
        table = packed_code_rows(hl.reshape(1, -1))[0]
        base = at + group_rooms(n, clog2, first, hl.max(), raw_bits, n, 0)
        out = _grown(data, base[groups], at)
        if groups > 1:
            _symbol_write(states, n, clog2, s, table, raw, first, base, out, chunk_bits, ends)
        else:
            _symbol_write_serial(states, n, clog2, s, table, raw, first, base, out,
                                 chunk_bits, ends)
    return kind, choice, packed, cb, chunk_bits, out, join_groups(out, base, ends)


@with_kernels("_encode_tensor")
def _encode_run(states, starts, sizes, fixed_clog2, s, auto, threads, prev_kind, prev_code,
                prev_cb):
    """:func:`_encode_tensor` of consecutive tensors of a bundle in one call (tensor t's
    ``sizes[t]`` states from ``states[starts[t]]``, 8-aligned and zero padded), each one's
    previous section being the one before it (the first's: ``_prev_args``), with its chunk
    size from its count of non-zeros (``auto_chunk_log2``) or ``fixed_clog2`` if >= 0.

    Returns, per tensor: kind, whether it reuses the previous ZRH code, chunk_log2, and its
    codebook bytes / chunk bits / data as slices ``[at[t]:at[t + 1]]`` of three arrays; last,
    the packed ZRH code of the last tensor if it is coded with ZRH (else empty)."""
    count = sizes.shape[0]
    kinds = np.empty(count, np.int8)
    reused = np.zeros(count, np.bool_)
    clog2s = np.empty(count, np.int64)
    cb_at = np.zeros(count + 1, np.int64)
    bits_at = np.zeros(count + 1, np.int64)
    data_at = np.zeros(count + 1, np.int64)
    cbs = np.empty(64 * count + 64, np.uint8)
    bits = np.empty(count + 16, np.int64)
    data = np.empty(max(sizes.sum(), 1 << 16), np.uint8)
    no_raw = np.zeros(0, np.uint32)
    pk, pc, pcb = prev_kind, prev_code, prev_cb
    last = _NONE
    for t in range(count):
        n = sizes[t]
        st = states[starts[t]: starts[t] + ((n + 7) & ~7)]
        nnz, pos = zrh.scan_nonzeros(st, n, threads)
        clog2 = auto_chunk_log2(n, nnz) if fixed_clog2 < 0 else fixed_clog2
        m = (n + (1 << clog2) - 1) >> clog2
        kind, choice, packed, cb, chunk_bits, data, end = _encode_tensor(
            st, n, clog2, s, no_raw, 0, auto, nnz, pos, threads, pk, pc, pcb, data,
            data_at[t])
        kinds[t] = kind
        clog2s[t] = clog2
        if kind == KIND_HUFFMAN:
            pk, pc, pcb = KIND_HUFFMAN, _NONE, cb
            last = _NONE
        else:
            reused[t] = choice < 0
            pk, pc, pcb = KIND_ZRH, packed, _NO_CODEBOOK
            last = packed
        k = 0 if reused[t] else cb.shape[0]
        cbs = _grown(cbs, cb_at[t] + k, cb_at[t])
        cbs[cb_at[t]: cb_at[t] + k] = cb[:k]
        cb_at[t + 1] = cb_at[t] + k
        bits = _grown(bits, bits_at[t] + m, bits_at[t])
        bits[bits_at[t]: bits_at[t] + m] = chunk_bits
        bits_at[t + 1] = bits_at[t] + m
        data_at[t + 1] = end
    return kinds, reused, clog2s, cbs, cb_at, bits, bits_at, data, data_at, last


def runs_together(q) -> bool:
    """Whether a tensor can be coded by :func:`encode_run`: it has no raw top-k
    magnitudes."""
    return q.raw is None


def encode_run(qs, coder: str, clog2: int | None, prev=None):
    """``auto`` or ``zrh`` coding of consecutive tensors of a bundle (all
    :func:`runs_together`, one s), each after the one before (``prev`` before the first, as
    in :func:`encode`), in one numba call: [(coder used, codebook bytes, chunk_bits, data,
    chunk_log2)] per tensor, the same as :func:`encode` of each in turn but for data, a
    read-only memoryview (not an array). States in one
    arena (``quantizers.arena_for``) are read in place, others copied together first. On
    several threads by ``lanes.encode_run`` (the run's work in phases, each cut into equal
    shares of all its tensors), on one by :func:`_encode_run`."""
    s = qs[0].levels
    sizes = np.array([q.n for q in qs], np.int64)
    arena = qs[0].arena
    if arena is not None and all(q.arena is arena for q in qs):
        states, starts = arena, np.array([q.at for q in qs], np.int64)
    else:
        lens = [q.states.shape[0] for q in qs]
        starts = np.zeros(len(qs), np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        states = np.concatenate([q.states for q in qs])
    threads = chunk_threads()
    args = (states, starts, sizes, -1 if clog2 is None else clog2, s, coder == "auto",
            threads, *_prev_args(prev, s))
    if threads > 1:
        from . import lanes  # compiled (and numba's threads started) only in parallel mode

        kinds, reused, clog2s, cbs, cb_at, bits, bits_at, data, data_from, data_to, last = (
            lanes.encode_run(*args))
        data_from, data_to = data_from.tolist(), data_to.tolist()
    else:
        kinds, reused, clog2s, cbs, cb_at, bits, bits_at, data, data_at, last = (
            _encode_run.serial(*args))
        data_from, data_to = data_at[:-1].tolist(), data_at[1:].tolist()
    out = []
    cb_at, bits_at = cb_at.tolist(), bits_at.tolist()
    kinds, reused, clog2s = kinds.tolist(), reused.tolist(), clog2s.tolist()
    cbs, view = cbs.tobytes(), data.data.toreadonly()  # sliced per tensor: no array views
    for t in range(len(qs)):
        cb = prev[1] if reused[t] else cbs[cb_at[t]: cb_at[t + 1]]
        used = "huffman" if kinds[t] == KIND_HUFFMAN else "zrh"
        out.append((used, cb, bits[bits_at[t]: bits_at[t + 1]],
                    view[data_from[t]: data_to[t]], clog2s[t]))
        prev = (used, cb)
    if last.size:
        _remember(prev[1], s, last)
    return out


def encode(q, coder: str, clog2: int, prev=None, scanned=None):
    """``auto`` or ``zrh`` coding of quantized states in one numba call
    (:func:`_encode_tensor`): (coder used, codebook bytes, chunk_bits, data); ``prev`` and
    ``scanned`` as in ``coders.encode``."""
    n, s = q.n, q.levels
    raw, raw_bits = raw_values(q)
    threads = chunk_threads()
    nnz, pos = zrh.scan_nonzeros(q.states, n, threads) if scanned is None else scanned
    kind, choice, packed, cb, chunk_bits, data, end = _encode_tensor(
        q.states, n, clog2, s, raw, raw_bits, coder == "auto", nnz, pos, threads,
        *_prev_args(prev, s), _NO_CODEBOOK, 0)
    data = data[:end]
    if kind == KIND_HUFFMAN:
        return "huffman", cb.tobytes(), chunk_bits, data
    if choice < 0:
        return "zrh", prev[1], chunk_bits, data
    return "zrh", _remember(cb.tobytes(), s, packed), chunk_bits, data
