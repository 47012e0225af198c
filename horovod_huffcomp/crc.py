"""The payload's CRC-32 (zlib's) of megabytes, on threads.

A payload's checksum covers all of it (docs/format.md), so every encode and every decode
runs zlib's CRC over the whole coded data: one core at 2-8 GB/s (zlib builds differ), which
for a ResNet-50 gradient payload was the largest host cost of an encode on the GPU
(docs/benchmarks.md). CRC-32 is linear, so the bytes can be cut into pieces whose CRCs are
computed at once on a thread pool (zlib releases the GIL) and joined after:

    crc(A + B) = crc(A) * x^(8 len(B)) + crc(B)      (polynomials over GF(2) mod CRC-32's)

Every piece but a buffer's first has the same size (about two pieces a thread, at least PIECE
bytes), so one constant x^(8 size) joins them all. The
arithmetic follows zlib's ``crc32_combine`` (reflected bit order: bit 31 is x^0); the result
is ``zlib.crc32`` of the concatenation, bit for bit (tests/test_crc.py).
"""
from __future__ import annotations

import concurrent.futures
import functools
import os
import zlib

POLY = 0xEDB88320  # CRC-32's polynomial, reflected
PIECE = 1 << 20  # the least bytes a task; every piece but a buffer's first has the same size
ALIGN = 1 << 16  # piece sizes are multiples of it
THREADED_MIN = 4 << 20  # fewer bytes in all: one zlib call each (threads would cost more)

_pool = None  # (pid, executor)


def multiply(a: int, b: int) -> int:
    """a * b mod CRC-32's polynomial, both in reflected order (zlib's multmodp)."""
    m, p = 1 << 31, 0
    while a:
        if a & m:
            p ^= b
            a ^= m
        m >>= 1
        b = (b >> 1) ^ POLY if b & 1 else b >> 1
    return p


@functools.lru_cache(maxsize=64)
def shift(n: int) -> int:
    """x^(8n) mod the polynomial: what a CRC is multiplied by when n bytes follow it."""
    power, p = 1 << 23, 1 << 31  # x^8 (bit 31 - k is x^k); the product so far, x^0
    while n:
        if n & 1:
            p = multiply(power, p)
        n >>= 1
        power = multiply(power, power)
    return p


def combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """zlib.crc32(A + B) from zlib.crc32(A), zlib.crc32(B) and len(B)."""
    return multiply(shift(len_b), crc_a) ^ crc_b


def _pieces(parts: list[memoryview], size: int) -> list[list[memoryview]]:
    """The concatenation of ``parts`` cut into pieces, each a list of slices of the parts:
    the first piece the remainder (1 to ``size`` bytes), every other piece ``size`` bytes."""
    total = sum(len(p) for p in parts)
    first = total - (max(total - 1, 0) // size) * size
    out, cur, room = [], [], first
    for part in parts:
        at = 0
        while at < len(part):
            take = min(room, len(part) - at)
            cur.append(part[at: at + take])
            at += take
            room -= take
            if not room:
                out.append(cur)
                cur, room = [], size
    return out or [[]]  # (the pieces end exactly at the last byte)


def _piece_crc(piece: list[memoryview]) -> int:
    crc = 0
    for seg in piece:
        crc = zlib.crc32(seg, crc)
    return crc


def _join(crcs, size: int) -> int:
    """The CRC of the pieces' concatenation (the first of any length, the others ``size``
    bytes) from their CRCs."""
    return functools.reduce(lambda crc, c: combine(crc, c, size), crcs)


def _views(parts) -> list[memoryview]:
    return [memoryview(p).cast("B") for p in parts]


def crc32_many(buffers) -> list[int]:
    """zlib.crc32 of each buffer, a buffer given as one bytes-like object or a list of them
    (their concatenation); the pieces of all of them on one thread pool when there are
    THREADED_MIN bytes or more in all."""
    global _pool
    lists = [_views(b if isinstance(b, (list, tuple)) else [b]) for b in buffers]
    total = sum(len(p) for parts in lists for p in parts)
    threads = min(8, os.cpu_count() or 1)
    if total < THREADED_MIN or threads < 2:
        return [_piece_crc(parts) & 0xFFFFFFFF for parts in lists]
    if _pool is None or _pool[0] != os.getpid():  # (a forked child has none of its threads)
        _pool = os.getpid(), concurrent.futures.ThreadPoolExecutor(threads,
                                                                   thread_name_prefix="hc-crc")
    # about two tasks a thread (a task costs ~15 us), sizes in steps of 64 KiB: few distinct
    # sizes, so shift(size) (~90 us) is mostly cached
    size = max(PIECE, -(-total // (2 * threads * ALIGN)) * ALIGN)
    cut = [_pieces(parts, size) for parts in lists]
    crcs = iter(_pool[1].map(_piece_crc, [piece for pieces in cut for piece in pieces]))
    return [_join([next(crcs) for _ in pieces], size) & 0xFFFFFFFF for pieces in cut]


def crc32(*parts) -> int:
    """zlib.crc32 of the concatenation of ``parts`` (bytes-like), on threads if large."""
    return crc32_many([list(parts)])[0]
