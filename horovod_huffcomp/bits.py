"""Bit packing primitives shared by every coder (numba, MSB-first).

A writer is the triple ``(pos, acc, nacc)``: ``pos`` is the next byte of ``out`` to write,
``acc`` holds ``nacc`` (< 32 between calls) pending bits left-aligned (see :func:`put`). Readers never hold
state: :func:`peek32` returns the 32 bits starting at a bit position, reading bytes past the
end of the buffer as zero, so a decoder can never read out of bounds; decoders compare their
bit position with the chunk's end after every symbol instead.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

U64 = np.uint64
ERR_OVERRUN = -1  # a decoder consumed more bits than its chunk holds
ERR_UNDERRUN = -2  # a chunk ended with bits left over (or an element count mismatch)
ERR_BAD_VALUE = -3  # a decoded value is outside its legal range
ERR_MESSAGES = {
    ERR_OVERRUN: "a chunk's bits ran out before its elements were decoded",
    ERR_UNDERRUN: "a chunk has bits left over after its elements were decoded",
    ERR_BAD_VALUE: "a decoded symbol or length is outside its legal range",
}


@njit(inline="always", cache=True)
def put(out, pos, acc, nacc, code, length):
    """Append the low ``length`` (<= 32) bits of ``code``.

    ``acc`` holds the ``nacc`` (< 32) pending bits left-aligned; four bytes are stored at a
    time, once 32 bits are pending.
    """
    if length > 0:
        acc |= U64(code) << U64(64 - nacc - length)
        nacc += length
        if nacc >= 32:
            p = U64(pos)  # unsigned: no negative-index wrap, the 4 stores merge into one
            out[p] = np.uint8(acc >> U64(56))
            out[p + U64(1)] = np.uint8((acc >> U64(48)) & U64(0xFF))
            out[p + U64(2)] = np.uint8((acc >> U64(40)) & U64(0xFF))
            out[p + U64(3)] = np.uint8((acc >> U64(32)) & U64(0xFF))
            pos += 4
            acc = acc << U64(32)
            nacc -= 32
    return pos, acc, nacc


# Branchless writing for the hot writers: ``add`` appends a codeword to the accumulator
# without storing, ``store8`` then stores all 8 accumulator bytes at ``pos`` and advances by the
# whole bytes pending (leaving < 8 bits). A writer may ``add`` while nacc stays <= 63 and mix
# them with :func:`put` (which keeps nacc < 32). ``store8`` writes up to 8 bytes past the final
# position (zeros: bits below nacc are clear), so its buffer needs STORE8_SLACK spare bytes.
STORE8_SLACK = 8


@njit(inline="always", cache=True)
def add(acc, nacc, code, length):
    """Append ``code`` < 2^length (length >= 0, nacc + length <= 63)."""
    return acc | ((U64(code) << U64(63 - nacc - length)) << U64(1)), nacc + length


@njit(inline="always", cache=True)
def store8(out, pos, acc, nacc):
    p = U64(pos)  # unsigned index: without a negative-index wrap per byte (a compare and a
    for k in range(8):  # select each), LLVM merges the 8 stores into one big-endian store
        out[p + U64(k)] = np.uint8((acc >> U64(56 - 8 * k)) & U64(0xFF))
    whole = nacc >> 3
    return pos + whole, acc << U64(8 * whole), nacc & 7


@njit(inline="always", cache=True)
def flush(out, pos, acc, nacc):
    """Store the pending bits, zero padded to a byte; returns the next byte position."""
    while nacc > 0:
        out[pos] = np.uint8(acc >> U64(56))
        acc = acc << U64(8)
        pos += 1
        nacc -= 8
    return pos


@njit(inline="always", cache=True)
def peek32(buf, bitpos):
    """The 32 bits of ``buf`` starting at ``bitpos`` (MSB first), as the low bits of a uint64."""
    nbytes = buf.shape[0]
    byte = bitpos >> 3
    w = U64(0)
    if (byte | (nbytes - 8 - byte)) >= 0:  # 0 <= byte <= nbytes - 8 (see fill)
        for i in range(8):
            w = (w << U64(8)) | U64(buf[U64(byte) + U64(i)])
    else:
        for i in range(8):
            w = w << U64(8)
            if 0 <= byte + i < nbytes:
                w |= U64(buf[byte + i])
    return ((w << U64(bitpos & 7)) >> U64(32)) & U64(0xFFFFFFFF)


# A streaming reader for the hot decoders: ``(byte, bb, bn)``, the next byte of the buffer to
# load, up to 64 bits left-aligned in ``bb`` and their count ``bn``. :func:`fill` tops it up
# to at least 57 bits (bytes outside the buffer read as zero, as in peek32), so a
# decoder may take up to 57 bits after one fill; it tracks its bit position itself to check
# chunk ends, exactly as with peek32.
@njit(inline="always", cache=True)
def reader_at(bitpos):
    """A reader positioned at ``bitpos``: call :func:`fill` then :func:`skip` bitpos & 7."""
    return bitpos >> 3, U64(0), 0


@njit(inline="always", cache=True)
def fill(buf, byte, bb, bn):
    nbytes = buf.shape[0]
    if (byte | (nbytes - 8 - byte)) >= 0:  # 0 <= byte <= nbytes - 8, in one test
        # one 8-byte big-endian load; the whole bytes that fit are consumed. The bits of a
        # partly fitting byte land below bit bn: they are the stream's own bits, which the
        # next fill ORs in again, so they may stay. Unsigned indices (in bounds: tested
        # above) spare a negative-index wrap per byte, so the 8 loads merge into one.
        w = U64(0)
        for k in range(8):
            w = (w << U64(8)) | U64(buf[U64(byte) + U64(k)])
        bb |= w >> U64(bn)
        whole = (64 - bn) >> 3
        return byte + whole, bb, bn + 8 * whole
    while bn <= 56:
        if 0 <= byte < nbytes:
            bb |= U64(buf[byte]) << U64(56 - bn)
        byte += 1
        bn += 8
    return byte, bb, bn


@njit(inline="always", cache=True)
def top(bb, k):
    """The next k (1..57) bits of a filled reader."""
    return bb >> U64(64 - k)


@njit(inline="always", cache=True)
def skip(bb, bn, k):
    """Consume k (0..57) bits."""
    return bb << U64(k), bn - k


@njit(inline="always", cache=True)
def bitlen(v):
    """Number of significant bits of v >= 0 (floor(log2 v) + 1; 0 for 0): the exponent of
    v as a float64, exact below 2**53 (a loop above)."""
    if v < (1 << 53):
        return math.frexp(np.float64(v))[1] if v > 0 else 0
    n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


# ---------------------------------------------------------------- Elias codes (v >= 1)
@njit(cache=True)
def gamma_len(v):
    return 2 * bitlen(v) - 1


@njit(cache=True)
def put_gamma(out, pos, acc, nacc, v):
    nb = bitlen(v)
    zeros = nb - 1
    while zeros > 32:
        pos, acc, nacc = put(out, pos, acc, nacc, 0, 32)
        zeros -= 32
    pos, acc, nacc = put(out, pos, acc, nacc, 0, zeros)
    if nb > 32:
        pos, acc, nacc = put(out, pos, acc, nacc, v >> 32, nb - 32)
        pos, acc, nacc = put(out, pos, acc, nacc, v & 0xFFFFFFFF, 32)
    else:
        pos, acc, nacc = put(out, pos, acc, nacc, v, nb)
    return pos, acc, nacc


@njit(cache=True)
def get_gamma(buf, bitpos, end):
    """Returns (value, new bitpos); value < 0 on error. Values are limited to 2^40."""
    zeros = 0
    while True:
        if bitpos >= end:
            return ERR_OVERRUN, bitpos
        w = peek32(buf, bitpos)
        if w == 0:
            zeros += 32
            bitpos += 32
            if zeros > 40:
                return ERR_BAD_VALUE, bitpos
            continue
        lz = 32 - bitlen(w)
        zeros += lz
        bitpos += lz
        break
    if zeros > 40:
        return ERR_BAD_VALUE, bitpos
    nb = zeros + 1
    if bitpos + nb > end:
        return ERR_OVERRUN, bitpos
    if nb <= 32:
        v = np.int64(peek32(buf, bitpos) >> U64(32 - nb))
    else:
        hi = np.int64(peek32(buf, bitpos))
        lo = np.int64(peek32(buf, bitpos + 32) >> U64(64 - nb))
        v = (hi << (nb - 32)) | lo
    return v, bitpos + nb


@njit(cache=True)
def delta_len(v):
    nb = bitlen(v)
    return gamma_len(nb) + nb - 1


@njit(cache=True)
def put_delta(out, pos, acc, nacc, v):
    nb = bitlen(v)
    pos, acc, nacc = put_gamma(out, pos, acc, nacc, nb)
    rest = nb - 1
    if rest > 32:
        pos, acc, nacc = put(out, pos, acc, nacc, (v >> 32) & ((1 << (rest - 32)) - 1), rest - 32)
        pos, acc, nacc = put(out, pos, acc, nacc, v & 0xFFFFFFFF, 32)
    elif rest > 0:
        pos, acc, nacc = put(out, pos, acc, nacc, v & ((1 << rest) - 1), rest)
    return pos, acc, nacc


@njit(cache=True)
def get_delta(buf, bitpos, end):
    nb, bitpos = get_gamma(buf, bitpos, end)
    if nb < 0:
        return nb, bitpos
    if nb > 41:
        return ERR_BAD_VALUE, bitpos
    rest = nb - 1
    if bitpos + rest > end:
        return ERR_OVERRUN, bitpos
    v = np.int64(1)
    if rest > 32:
        v = (v << 32) | np.int64(peek32(buf, bitpos))
        bitpos += 32
        rest -= 32
    if rest > 0:
        v = (v << rest) | np.int64(peek32(buf, bitpos) >> U64(32 - rest))
        bitpos += rest
    return v, bitpos


@njit(cache=True)
def omega_len(v):
    n = 1
    while v > 1:
        nb = bitlen(v)
        n += nb
        v = nb - 1
    return n


@njit(cache=True)
def put_omega(out, pos, acc, nacc, v):
    # groups are emitted in reverse order of their computation: collect them first
    groups = np.empty(8, np.int64)
    widths = np.empty(8, np.int64)
    k = 0
    while v > 1:
        nb = bitlen(v)
        groups[k] = v
        widths[k] = nb
        k += 1
        v = nb - 1
    for j in range(k - 1, -1, -1):
        g = groups[j]
        w = widths[j]
        if w > 32:
            pos, acc, nacc = put(out, pos, acc, nacc, g >> 32, w - 32)
            pos, acc, nacc = put(out, pos, acc, nacc, g & 0xFFFFFFFF, 32)
        else:
            pos, acc, nacc = put(out, pos, acc, nacc, g, w)
    pos, acc, nacc = put(out, pos, acc, nacc, 0, 1)
    return pos, acc, nacc


@njit(cache=True)
def get_omega(buf, bitpos, end):
    v = np.int64(1)
    while True:
        if bitpos >= end:
            return ERR_OVERRUN, bitpos
        if (peek32(buf, bitpos) >> U64(31)) == 0:
            return v, bitpos + 1
        # a group of v + 1 bits starting with the 1 just seen
        w = v + 1
        if w > 41:
            return ERR_BAD_VALUE, bitpos
        if bitpos + w > end:
            return ERR_OVERRUN, bitpos
        if w > 32:
            hi = np.int64(peek32(buf, bitpos))
            lo = np.int64(peek32(buf, bitpos + 32) >> U64(64 - w))
            v = (hi << (w - 32)) | lo
        else:
            v = np.int64(peek32(buf, bitpos) >> U64(32 - w))
        bitpos += w
