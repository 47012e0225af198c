"""Pieces every coder shares: chunking, symbol maps, run extraction, raw magnitudes.

A tensor of n states is cut into chunks of C = 2**chunk_log2 elements; each chunk is coded on
its own (runs never cross a chunk boundary) and starts on a byte boundary, so chunks can be
encoded and decoded in parallel. ``chunk_bits[c]`` is chunk c's exact length in bits.
"""
from __future__ import annotations

import types

import numpy as np
from numba import njit

from .. import bits as B

U64 = B.U64

# zero-run symbols of ZRH: runs 0..15 directly, then two buckets per octave with extra bits
RUN_DIRECT = 16
RUN_ALPHABET = 70  # covers runs up to 2**30
RICE_MAX_K = 24
CHUNK_LOG2_AUTO_MIN = 12
CHUNK_LOG2_AUTO_MAX = 24
NZ_PER_CHUNK = 512
PARALLEL_MIN_LOG2 = 16  # tensors below 2**16 elements are written by one thread


_PARALLEL = [True]


def set_parallel(enabled: bool) -> None:
    """Use the chunk-parallel kernels (default) or their serial twins. The serial ones never
    start numba's threading layer, whose OpenMP team also raises the OpenMP thread count of
    torch in the same process: processes sharing a host's cores (Horovod workers, see
    ``exchange.share_cores_between_local_ranks``) must not start it."""
    _PARALLEL[0] = bool(enabled)


def chunk_parallel(fn):
    """Compile a kernel whose ``prange`` runs over chunks twice: parallel, and serial (prange
    acts as range); :func:`set_parallel` picks which one calls use. numba's parallel
    lowering compiles the ``prange`` body itself, which can run a hot loop slower than a
    plain function does: the ZRH kernels' bodies call a function per chunk group
    (``zrh._histogram_group``, ``zrh._write_group``); time both forms when writing one."""
    serial_fn = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                   fn.__defaults__, fn.__closure__)
    serial_fn.__qualname__ = fn.__qualname__ + "_serial"
    par = njit(cache=True, parallel=True)(fn)
    ser = njit(cache=True)(serial_fn)

    def call(*args):
        return (par if _PARALLEL[0] else ser)(*args)

    call.parallel, call.serial = par, ser
    call.__name__, call.__doc__ = fn.__name__, fn.__doc__
    return call


def with_kernels(*names):
    """Compile a function that calls :func:`chunk_parallel` kernels (or other such
    functions) twice: with the global ``names`` bound to their parallel forms, and to their
    serial forms; :func:`set_parallel` picks which one calls use. A compiled function that
    calls a parallel kernel starts numba's threading layer when it is loaded, even if that
    call is never made, so serial mode needs a twin that names none. The twins are
    compiled on first use, when the module's globals are all defined."""
    def wrap(fn):
        twins = {}

        def twin(form):
            if form not in twins:
                env = dict(fn.__globals__)
                env.update({name: getattr(env[name], form) for name in names})
                f = types.FunctionType(fn.__code__, env, f"{fn.__name__}_{form}",
                                       fn.__defaults__, fn.__closure__)
                f.__qualname__ = f"{fn.__qualname__}_{form}"
                twins[form] = njit(cache=True)(f)
            return twins[form]

        class Twins:
            __doc__ = fn.__doc__
            __name__ = fn.__name__
            parallel = property(lambda self: twin("parallel"))
            serial = property(lambda self: twin("serial"))

            def __call__(self, *args):
                return twin("parallel" if _PARALLEL[0] else "serial")(*args)

        return Twins()
    return wrap


@njit(cache=True)
def auto_chunk_log2(n, nnz):
    """Default chunk size from integer counts only (reproducible on any backend).

    Dense tensors get 4096-element chunks; sparse ones grow chunks until about NZ_PER_CHUNK
    non-zeros fall in each, so the chunk table stays a small fraction of the payload.
    """
    k = CHUNK_LOG2_AUTO_MIN
    while k < CHUNK_LOG2_AUTO_MAX and (nnz << k) < NZ_PER_CHUNK * n:
        k += 1
    return k


def byte_offsets(chunk_bits: np.ndarray) -> np.ndarray:
    """Start byte of every chunk and, last, the total byte count (len = chunks + 1)."""
    off = np.zeros(chunk_bits.size + 1, np.int64)
    np.cumsum((chunk_bits + 7) >> 3, out=off[1:])
    return off


def write_chunks(chunk_bits: np.ndarray, write) -> tuple[np.ndarray, np.ndarray]:
    """Run ``write(offsets, out)`` over a zeroed buffer sized for these chunks; returns
    (chunk_bits, the data bytes)."""
    offsets = byte_offsets(chunk_bits)
    out = np.zeros(offsets[-1], np.uint8)
    write(offsets, out)
    return chunk_bits, out


def write_one_pass(n: int, clog2: int, bits_per_element: int, bits_per_nonzero: int,
                   nonzeros: int, bits_per_chunk: int, kernel, args: tuple):
    """Chunks written in one pass, with no sizing pass first: (chunk_bits, data bytes).

    The chunks are split into one contiguous group per thread; ``kernel(*args, first, base,
    out, chunk_bits, ends)`` (a :func:`chunk_parallel` kernel, its prange over groups) writes
    group g's chunks one after the other from byte ``base[g]`` of ``out``, records each
    chunk's exact bits and the group's end byte. Group g's room is an upper bound on its bytes
    (``bits_per_element`` per element + ``bits_per_nonzero`` per non-zero, at most
    ``nonzeros`` of them, + ``bits_per_chunk`` per chunk, whole bytes per chunk, and the
    slack of ``bits.store8``, which stores up to 8 bytes past a writer's end); the groups
    are then moved together. Chunks are byte aligned: the bytes are the same whatever the
    grouping. A single group (small tensors, serial mode) runs the serial kernel.
    """
    m = (n + (1 << clog2) - 1) >> clog2
    if m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    first = group_starts(n, m, chunk_threads())
    groups = len(first) - 1
    base = group_rooms(n, clog2, first, bits_per_element, bits_per_nonzero, nonzeros,
                       bits_per_chunk)
    out = np.empty(base[-1], np.uint8)
    chunk_bits = np.empty(m, np.int64)
    ends = np.empty(groups, np.int64)
    (kernel if groups > 1 else kernel.serial)(*args, first, base, out, chunk_bits, ends)
    return chunk_bits, out[: join_groups(out, base, ends)]


@njit(cache=True)
def group_rooms(n, clog2, first, bits_per_element, bits_per_nonzero, nonzeros,
                bits_per_chunk):
    """Where each chunk group's room starts in a writer's output (:func:`write_one_pass`),
    and last, the room's end."""
    groups = first.shape[0] - 1
    base = np.zeros(groups + 1, np.int64)
    for g in range(groups):
        elems = min(first[g + 1] << clog2, n) - min(first[g] << clog2, n)
        base[g + 1] = base[g] + room(elems, first[g + 1] - first[g], bits_per_element,
                                     bits_per_nonzero, nonzeros, bits_per_chunk)
    return base


@njit(cache=True)
def join_groups(out, base, ends):
    """The chunk groups' bytes moved together (:func:`_compact`); returns their end."""
    for g in range(ends.shape[0]):
        if ends[g] > base[g + 1]:  # cannot happen: the room is an upper bound
            raise AssertionError("a chunk group overran its room")
    return ends[0] if ends.shape[0] == 1 else _compact(out, base, ends)


@njit(cache=True)
def room(elems, chunks, bits_per_element, bits_per_nonzero, nonzeros, bits_per_chunk):
    """Bytes a group of ``chunks`` chunks holding ``elems`` elements may take
    (:func:`write_one_pass`): the codes' bound, each chunk's byte padding, and the slack of
    ``bits.store8``."""
    return (elems * bits_per_element + min(elems, nonzeros) * bits_per_nonzero +
            chunks * (bits_per_chunk + 15)) // 8 + 8 + B.STORE8_SLACK


def chunk_threads() -> int:
    """Threads that write a tensor's chunk groups: numba's, 1 in serial mode."""
    return _threads() if _PARALLEL[0] else 1


@njit(cache=True)
def group_count(n, m, threads):
    """How many groups ``threads`` threads write the m chunks of n elements in: one per
    thread, one below 2**PARALLEL_MIN_LOG2 elements."""
    return 1 if n >> PARALLEL_MIN_LOG2 == 0 else max(1, min(m, threads))


def chunk_groups(n: int, m: int) -> list[int]:
    """First chunk of each thread's contiguous group of the m chunks of n elements, and m
    (:func:`group_count`; one group in serial mode)."""
    groups = group_count(n, m, chunk_threads())
    return [g * m // groups for g in range(groups + 1)]


@njit(cache=True)
def group_starts(n, m, threads):
    """:func:`chunk_groups` as an array, for ``threads`` threads."""
    groups = group_count(n, m, threads)
    first = np.empty(groups + 1, np.int64)
    for g in range(groups + 1):
        first[g] = g * m // groups
    return first


def _threads() -> int:
    import numba

    return numba.get_num_threads()


@njit(cache=True)
def _compact(out, base, ends):
    """Move the groups' bytes together (forward copies: destinations precede sources), in
    blocks no longer than the gap so that no block overlaps itself (a slice copy each,
    rather than a byte at a time)."""
    pos = ends[0]
    for g in range(1, ends.shape[0]):
        j, gap = base[g], base[g] - pos
        if gap == 0:
            pos = ends[g]
            continue
        while j < ends[g]:
            k = min(gap, ends[g] - j)
            out[pos: pos + k] = out[j: j + k]
            pos += k
            j += k
    return pos


def raw_values(q) -> tuple[np.ndarray, int]:
    """(raw magnitudes or an empty array, raw bits per non-zero) of quantized states."""
    if q.raw is None:
        return np.zeros(0, np.uint32), 0
    return q.raw, 31


@njit(inline="always", cache=True)
def level_sym(v, s):
    """Non-zero state v in [-s, s] \\ {0} -> 0..2s-1."""
    return v + s if v < 0 else v + s - 1


@njit(inline="always", cache=True)
def level_of(sym, s):
    return sym - s if sym < s else sym - s + 1


@njit(inline="always", cache=True)
def run_sym(r):
    """Zero run r >= 0 -> (symbol, extra bit count, extra bits)."""
    if r < RUN_DIRECT:
        return r, 0, 0
    t = r - 8
    e = B.bitlen(t) - 1
    m = (t >> (e - 1)) & 1
    return RUN_DIRECT + 2 * (e - 3) + m, e - 1, t & ((1 << (e - 1)) - 1)


@njit(inline="always", cache=True)
def run_base(sym):
    """(smallest run of the symbol, its extra bit count)."""
    if sym < RUN_DIRECT:
        return sym, 0
    e = (sym - RUN_DIRECT) // 2 + 3
    m = (sym - RUN_DIRECT) & 1
    return ((1 << e) | (m << (e - 1))) + 8, e - 1


@njit(cache=True)
def next_nonzero(states, words, i, end):
    """Index of the first non-zero state in [i, end), or end (skips zero words 8 at a time,
    32 at a time where four are zero)."""
    while i < end:
        if (i & 7) == 0 and words[i >> 3] == 0:
            w = i >> 3
            if i + 32 <= end and (words[w + 1] | words[w + 2] | words[w + 3]) == 0:
                i += 32
            else:
                i += 8
            continue
        if states[i] != 0:
            return i
        i += 1
    return end


@njit(cache=True)
def count_nonzero(states, n):
    """Non-zero states among the first n (int8, zero padded to a multiple of 8): eight at a
    time, each 64-bit word's zero bytes flagged without a branch (faster than NumPy's)."""
    words = states.view(np.uint64)
    low7 = U64(0x7F7F7F7F7F7F7F7F)
    zeros = 0
    for w in range(n >> 3):
        x = words[w]
        z = ~(((x & low7) + low7) | x | low7)  # the top bit of each zero byte
        zeros += np.int64(((z >> U64(7)) * U64(0x0101010101010101)) >> U64(56))
    k = 8 * (n >> 3) - zeros
    for i in range(n & ~7, n):
        k += np.int64(states[i] != 0)
    return k


@njit(cache=True)
def value_runs(states, n, clog2):
    """Runs of equal states inside each chunk: (values, run lengths, first pair of each chunk)."""
    m = (n + (1 << clog2) - 1) >> clog2
    vals = np.empty(n, np.int64)
    runs = np.empty(n, np.int64)
    first = np.zeros(m + 1, np.int64)
    k = 0
    for c in range(m):
        first[c] = k
        start = c << clog2
        end = min(n, start + (1 << clog2))
        i = start
        while i < end:
            v = states[i]
            j = i + 1
            while j < end and states[j] == v:
                j += 1
            vals[k] = v
            runs[k] = j - i
            k += 1
            i = j
    first[m] = k
    return vals[:k], runs[:k], first


@njit(inline="always", cache=True)
def put_raw(out, pos, acc, nacc, raw, i):
    return B.put(out, pos, acc, nacc, raw[i] & 0x7FFFFFFF, 31)


@njit(inline="always", cache=True)
def get_raw(buf, bitpos):
    return np.uint32(B.peek32(buf, bitpos) >> B.U64(1))
