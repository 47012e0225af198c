"""RLH on the GPU backend. Its encode: a batch's runs, pair codes and bitstreams in array
operations that NumPy and CuPy share (``xp``), so the host runs the very code the device runs
(tests/test_gpu_rlh.py checks it against ``coders.rlh`` on every CI run). Its decode: the
kernel ``cuda/rlh.cu`` reads each tensor's code through :func:`decoder`'s arrays.

RLH codes (value, run length) pairs, and its codebook lists the pairs a tensor uses
(``coders.rlh.PairCode``): the host has to see them. So the device finds the runs and their
distinct pairs with their counts, the host builds each tensor's code from those counts (the
CPU backend's ``Code.from_counts``: the same code, byte for byte) and writes the codebooks,
and the device places every codeword::

    states -> run starts (a change of value, a chunk's first state) -> runs, pair keys
    -> sorted distinct keys + counts -> (sync: pairs to host; codes built; lengths up)
    -> each run's codeword and bits -> chunk bits -> (sync) -> codewords placed

Every run's place in the stream is a prefix sum of the runs' bit lengths; the fields never
overlap, so they are added into zeroed 32-bit words (an atomic add of disjoint bits is their
OR). Exact top-k's raw magnitudes (31 bits after a non-zero run's codeword, one per state)
are placed the same way. A tensor whose runs form more than ``rlh.MAX_PAIRS`` pairs has its
runs cut into pieces of at most ``MAX_PAIRS // V`` states (V its distinct values), as
``rlh.plan`` cuts them.
"""
from __future__ import annotations

import types

import numpy as np

from .coders.rlh import MAX_PAIRS, PairCode
from .codebook import Code

RUN_BITS = 31  # a pair key: tensor << KEY_TENSOR | (value + s) << RUN_BITS | run
KEY_TENSOR = 40  # (value + s) < 2^9: levels are at most 127
RAW_BITS = 31  # exact top-k: a raw magnitude's bits after a non-zero run's codeword
# cuda/common.cuh HC_RLH_*: a tensor's decoder record
DEC_LIM, DEC_OFF, DEC_TB, DEC_INTS, VALUE_BITS = 0, 16, 32, 33, 8


def plan(xp, states, offsets_h, sizes_h, clog2_h, first_h, s: int, raw: bool):
    """The runs of a batch's states and their codes: ``states`` the device's padded buffer
    (tensor t's ``sizes_h[t]`` states from ``offsets_h[t]``), ``clog2_h``/``first_h`` each
    tensor's chunk size and first chunk. Returns the plan :func:`write` takes, with
    ``codebooks`` (each tensor's bytes) and ``chunk_bits`` (host int64) set."""
    offsets_h = np.asarray(offsets_h, np.int64)
    sizes_h = np.asarray(sizes_h, np.int64)
    clog2_h = np.asarray(clog2_h, np.int64)
    first_h = np.asarray(first_h, np.int64)
    count, total = sizes_h.size, int(offsets_h[-1])
    x = states[:total]
    flags = _run_starts(xp, x, offsets_h, sizes_h, clog2_h, first_h)
    dev = types.SimpleNamespace(offsets=xp.asarray(offsets_h), sizes=xp.asarray(sizes_h),
                                clog2=xp.asarray(clog2_h), first=xp.asarray(first_h))
    runs, uniq_h, inv, counts_h, at = _pairs(xp, flags, x, dev, s, count)
    cut = []
    for t in range(count):
        if at[t + 1] - at[t] > MAX_PAIRS:  # more pairs than a 15-bit code has codewords
            values = np.unique((uniq_h[at[t]: at[t + 1]] >> RUN_BITS) & 511).size
            cut.append((t, MAX_PAIRS // values))
    if cut:
        for t, most in cut:
            _cut_runs(xp, flags[offsets_h[t]: offsets_h[t] + sizes_h[t]], most)
        runs, uniq_h, inv, counts_h, at = _pairs(xp, flags, x, dev, s, count)
    # the host: each tensor's code over its pairs (sorted by value, then run: the keys' order)
    codebooks = []
    lengths_h = np.zeros(uniq_h.size, np.uint8)
    codes_h = np.zeros(uniq_h.size, np.uint32)
    for t in range(count):
        a, b = int(at[t]), int(at[t + 1])
        code = Code.from_counts(counts_h[a:b])
        keys = uniq_h[a:b]
        out = bytearray()
        PairCode(((keys >> RUN_BITS) & 511) - s, keys & ((1 << RUN_BITS) - 1),
                 code).serialize(out, s)
        codebooks.append(bytes(out))
        lengths_h[a:b] = code.lengths
        codes_h[a:b] = code.codes
    runs.length = xp.asarray(lengths_h)[inv].astype(xp.int64)
    runs.code = xp.asarray(codes_h)[inv]
    bits = runs.length
    if raw:
        bits = bits + xp.where(runs.value != 0, RAW_BITS * runs.run, 0)
    # each chunk's runs: the runs are in stream order, each chunk's first is a run start
    nchunks = int(first_h[-1])
    runs.chunk_first = xp.searchsorted(runs.chunk, xp.arange(nchunks, dtype=xp.int64))
    runs.bit_at = xp.zeros(bits.size + 1, xp.int64)  # bits before each run, in the batch
    xp.cumsum(bits, out=runs.bit_at[1:])
    ends = xp.concatenate([runs.chunk_first[1:], xp.asarray([bits.size], xp.int64)])
    chunk_bits = runs.bit_at[ends] - runs.bit_at[runs.chunk_first]
    return types.SimpleNamespace(runs=runs, codebooks=codebooks, raw=raw, x=x,
                                 chunk_bits=_host(xp, chunk_bits).astype(np.int64))


def write(xp, planned, chunk_byte_h, out, mags=None) -> None:
    """Every run's codeword (and exact top-k's raw magnitudes, ``mags`` laid out as the
    states) into ``out``: zeroed uint32 words whose bytes, in memory order, are the stream,
    chunk c from byte ``chunk_byte_h[c]``."""
    runs = planned.runs
    if runs.start.size == 0:
        return
    chunk_byte = xp.asarray(np.asarray(chunk_byte_h, np.int64))
    # each run's first bit: its chunk's first bit, then the bits of the chunk's runs before it
    at = (8 * chunk_byte[runs.chunk] + runs.bit_at[:-1]
          - runs.bit_at[runs.chunk_first[runs.chunk]])
    words = xp.zeros(out.size + 1, xp.uint32)  # big-endian words; one spare for the last
    coded = runs.length > 0  # a one-pair code's codewords have no bits
    _place(xp, words, at[coded], runs.code[coded], runs.length[coded])
    if planned.raw:
        nz = xp.flatnonzero(planned.x)
        k = xp.searchsorted(runs.start, nz, side="right") - 1  # each non-zero state's run
        inside = nz - runs.start[k] < runs.run[k]  # not the padding after a tensor
        nz, k = nz[inside], k[inside]
        _place(xp, words, at[k] + runs.length[k] + RAW_BITS * (nz - runs.start[k]),
               mags[nz] & xp.uint32(0x7FFFFFFF), xp.full(nz.size, RAW_BITS, xp.int64))
    w = words[: out.size]
    out[...] = (((w & xp.uint32(0xFF)) << xp.uint32(24))
                | ((w & xp.uint32(0xFF00)) << xp.uint32(8))
                | ((w >> xp.uint32(8)) & xp.uint32(0xFF00)) | (w >> xp.uint32(24)))


def decoder(pc: PairCode, s: int) -> tuple[np.ndarray, np.ndarray]:
    """What ``cuda/rlh.cu`` decodes a tensor's RLH code with: its record (common.cuh
    HC_RLH_*: per codeword length ln the canonical code's limit, first code of length ln plus
    their count, and the offset that turns a codeword into its rank; the longest length, 0
    for a one-pair code) and its pairs in rank order (by length, then pair), each
    ``run << VALUE_BITS | value + s``."""
    lengths, single = pc.code.lengths, pc.code.single
    dec = np.zeros(DEC_INTS, np.int32)
    if single >= 0:  # one pair, no bits
        order = np.array([single], np.int64)
    else:
        order = np.flatnonzero(lengths)
        order = order[np.argsort(lengths[order], kind="stable")]
        counts = np.bincount(lengths[order], minlength=16)
        first = before = 0
        for ln in range(1, 16):
            first = (first + (counts[ln - 1] if ln > 1 else 0)) << 1
            dec[DEC_LIM + ln] = first + counts[ln]
            dec[DEC_OFF + ln] = before - first
            before += counts[ln]
        dec[DEC_TB] = int(lengths.max()) if lengths.size else 0
    pairs = (pc.runs[order].astype(np.int64) << VALUE_BITS) | (pc.vals[order] + s)
    return dec, pairs


def _run_starts(xp, x, offsets_h, sizes_h, clog2_h, first_h):
    """True where a run starts: a state unlike the one before, or a chunk's first state;
    False on the padding after each tensor's states."""
    flags = xp.zeros(x.size, bool)
    if x.size:
        flags[1:] = x[1:] != x[:-1]
    padded = offsets_h[1:] - offsets_h[:-1]
    pads = _ranges(offsets_h[:-1] + sizes_h, padded - sizes_h)
    chunks = first_h[1:] - first_h[:-1]
    within = _ranges(np.zeros_like(chunks), chunks)  # each chunk's number in its tensor
    starts = np.repeat(offsets_h[:-1], chunks) + (within << np.repeat(clog2_h, chunks))
    if pads.size:
        flags[xp.asarray(pads)] = False
    if starts.size:
        flags[xp.asarray(starts)] = True
    return flags


def _ranges(starts, lengths) -> np.ndarray:
    """The positions ``starts[i] .. starts[i] + lengths[i] - 1``, one range after another."""
    idx = np.arange(int(lengths.sum()), dtype=np.int64)
    first = np.cumsum(lengths) - lengths
    return idx - np.repeat(first, lengths) + np.repeat(starts, lengths)


def _runs(xp, flags, x, dev, s: int):
    """The runs flagged in ``flags``: start, tensor, value, length, chunk and pair key."""
    start = xp.flatnonzero(flags)
    t = xp.searchsorted(dev.offsets[1:], start, side="right")
    nxt = xp.concatenate([start[1:], xp.asarray([x.size], xp.int64)])
    run = xp.minimum(nxt, dev.offsets[t] + dev.sizes[t]) - start
    value = x[start].astype(xp.int64)
    chunk = dev.first[t] + ((start - dev.offsets[t]) >> dev.clog2[t])
    key = (t << KEY_TENSOR) | ((value + s) << RUN_BITS) | run
    return types.SimpleNamespace(start=start, value=value, run=run, chunk=chunk, key=key)


def _pairs(xp, flags, x, dev, s: int, count: int):
    """The runs flagged in ``flags`` (:func:`_runs`), their distinct pair keys (host), each
    run's index among them (device), the keys' counts (host) and where each tensor's keys
    start among them (host, ``count + 1``)."""
    runs = _runs(xp, flags, x, dev, s)
    if runs.key.size == 0:
        uniq_h = counts_h = np.zeros(0, np.int64)
        inv = xp.zeros(0, xp.int64)
    else:
        uniq, inv, counts = xp.unique(runs.key, return_inverse=True, return_counts=True)
        uniq_h, inv, counts_h = _host(xp, uniq), inv.reshape(-1), _host(xp, counts)
    at = np.searchsorted(uniq_h >> KEY_TENSOR, np.arange(count + 1))
    return runs, uniq_h, inv, counts_h, at


def _cut_runs(xp, flags, most: int) -> None:
    """One tensor's run starts (a view of the batch's): every run cut into pieces of at most
    ``most`` states (``rlh.cut_runs``: pieces of ``most``, then the rest)."""
    starts = xp.flatnonzero(flags)
    run_of = xp.cumsum(flags, dtype=xp.int64) - 1  # each state's run
    into = xp.arange(flags.size, dtype=xp.int64) - starts[run_of]
    flags |= into % most == 0


def _place(xp, words, at, value, length) -> None:
    """Fields ``value`` of ``length`` (1..31) bits at stream bits ``at``, added into
    big-endian 32-bit ``words`` (the fields are disjoint: the sum is their OR)."""
    if at.size == 0:
        return
    w = at >> 5
    shift = (64 - (at & 31) - length).astype(xp.uint64)  # 2..63: the field in 64 bits
    v = value.astype(xp.uint64) << shift
    _scatter_add(xp, words, w, (v >> xp.uint64(32)).astype(xp.uint32))
    _scatter_add(xp, words, w + 1, (v & xp.uint64(0xFFFFFFFF)).astype(xp.uint32))


def _scatter_add(xp, a, idx, v) -> None:
    if xp is np:
        np.add.at(a, idx, v)
    else:
        import cupyx

        cupyx.scatter_add(a, idx, v)


def _host(xp, a) -> np.ndarray:
    return a if xp is np else xp.asnumpy(a)
