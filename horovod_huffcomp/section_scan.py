"""A payload's sections read in one numba call: ``payload.unpack``'s fast path.

``payload._read_section`` reads one section field by field in Python (~13 us a section: a
ResNet-50 bundle of 161 sections took 2 ms to parse, for every worker's payload of every
step). :func:`scan` walks the same layout (``payload``'s docstring) in numba from section k
on, with the same checks, and fills arrays (header fields, shapes, the codebooks of the
``codebook.Code`` format: huffman, sh and shs, with their canonical codes, every chunk bit
length, and ZRH's codebooks as ``zrh.ZrhCode.parse`` reads them); :func:`read_sections`
makes the ``payload.Section`` objects from them. A section the scanner does not read to the
end (an RLH codebook, parsed by its Python class, or anything it finds wrong) is left to
``payload._read_section``, from its first byte: a payload is accepted or rejected, with its
message, exactly as that reader decides (tests/test_format.py checks that both readers
agree on thousands of corrupted payloads).
"""
from __future__ import annotations

import contextlib
import struct

import numpy as np
from numba import njit

from .codebook import CANONICAL_WORK, Code, canonical_codes_work, parse_code_rows
from .coders import shs, zrh
from .coders.chunks import RICE_MAX_K, RUN_ALPHABET
from .payload import (A_GAP_LAYOUT, A_REUSE, CHUNK_LOG2_MAX, CHUNK_LOG2_MIN, CODER_NAMES, CODERS,
                      DTYPE_NAMES, MAX_NDIM, Section, _read_section, byte_view, read_varint)

DONE, PYTHON = 0, 1  # scan's status: every section read, or section k left to Python
# hdr columns: coder byte, chunk byte, ndim, elements, scales' byte, codebook start and
# end, first chunk in chunk_bits, chunks, data's byte, data bytes
A, B, NDIM, N, SCALE, CB_START, CB_END, FIRST, M, DATA, NBYTES = range(11)
HDR = 11
_MAX_DIM = 1 << 48
_HUFFMAN, _SH, _SHS = CODERS["huffman"], CODERS["sh"], CODERS["shs"]
_CODE_FORMAT = max(_HUFFMAN, _SH, _SHS)  # coder ids 1..3 have codebook.Code codebooks
_RLH, _ZRH = CODERS["rlh"], CODERS["zrh"]  # RLH's codebook: parsed by its Python class
_LAST_CODER = max(CODERS.values())


@njit(inline="always", cache=True)
def _bad_scale(buf, p):
    """The little-endian float32 at p is negative (not -0.0, not NaN) or +Inf: a scale
    ``payload._read_section`` refuses."""
    u = (np.uint32(buf[p]) | np.uint32(buf[p + 1]) << np.uint32(8)
         | np.uint32(buf[p + 2]) << np.uint32(16) | np.uint32(buf[p + 3]) << np.uint32(24))
    nan = (u & np.uint32(0x7F800000)) == np.uint32(0x7F800000) and (
        u & np.uint32(0x007FFFFF)) != np.uint32(0)
    if nan:
        return False
    return u == np.uint32(0x7F800000) or (u > np.uint32(0x80000000))


@njit(cache=True)
def scan(buf, pos, end, k, count, s, bucket_log2, budget, prev_coder, hdr, shapes, lengths,
         codes, singles, zhead, zrl, zrs, zll, zls, chunk_bits, used):
    """Sections k.. of a payload from byte ``pos`` (``end``: the CRC's first byte):
    ``hdr[k]`` (the columns above), ``shapes[k]``, for a codebook of the Code format its
    lengths, canonical codes and single symbol (``lengths[k]``, ``codes[k]``,
    ``singles[k]``), for a ZRH codebook ``zhead[k]`` (mode, run and level contexts, then the
    Rice parameters) and its codes' rows (``zrl``, ``zrs``, ``zll``, ``zls``: ZrhCode's
    rl, rs, ll, ls), its chunk bit lengths appended to ``chunk_bits`` from ``used`` (the
    array grows when full). ``budget``: elements the payload may still hold;
    ``prev_coder``: the previous section's coder id (-1: none). Returns (status, k, pos,
    budget, chunk_bits, used): DONE with pos after the last section, or PYTHON with section k
    (from pos) left to ``payload._read_section``."""
    alpha_h, alpha_shs = 2 * s + 1, 2 * s + shs.MAX_RUN
    work = np.empty(CANONICAL_WORK, np.int64)
    while k < count:
        start = pos
        if end - pos < 2:
            return PYTHON, k, start, budget, chunk_bits, used
        a, b = np.int64(buf[pos]), np.int64(buf[pos + 1])
        pos += 2
        coder, reuse = a & 0x0F, (a & A_REUSE) != 0
        clog2, ndim = b & 0x1F, b >> 5
        if (coder < 1 or coder > _LAST_CODER or (reuse and coder != prev_coder)
                or (a >> 4) & 0x03 == 0 or clog2 < CHUNK_LOG2_MIN or clog2 > CHUNK_LOG2_MAX
                or (not reuse and coder == _RLH)):
            return PYTHON, k, start, budget, chunk_bits, used
        n = 1
        for d in range(ndim):
            v, pos, err = read_varint(buf, pos, end)
            if err != 0 or v > _MAX_DIM:
                return PYTHON, k, start, budget, chunk_bits, used
            shapes[k, d] = v
            n = 0 if v == 0 else n
        for d in range(ndim if n else 0):  # n = the product, unless it passes the budget
            if n > budget // shapes[k, d]:
                return PYTHON, k, start, budget, chunk_bits, used
            n *= shapes[k, d]
        if n > budget:
            return PYTHON, k, start, budget, chunk_bits, used
        nscales = 1
        if bucket_log2:
            nscales = max(1, (n + (1 << bucket_log2) - 1) >> bucket_log2)
        if nscales > (end - pos) // 4:
            return PYTHON, k, start, budget, chunk_bits, used
        for i in range(nscales):
            if _bad_scale(buf, pos + 4 * i):
                return PYTHON, k, start, budget, chunk_bits, used
        hdr[k, SCALE] = pos
        pos += 4 * nscales
        hdr[k, CB_START] = pos
        if not reuse and coder <= _CODE_FORMAT:
            alpha = alpha_shs if coder == _SHS else alpha_h
            rows, ones, pos, err, _ = parse_code_rows(buf, pos, end, 1, alpha)
            if err != 0:
                return PYTHON, k, start, budget, chunk_bits, used
            if n and ones[0] < 0 and not np.any(rows[0]):  # coders._require
                return PYTHON, k, start, budget, chunk_bits, used
            lengths[k, :alpha] = rows[0]
            canonical_codes_work(rows[0], codes[k, :alpha], work)
            singles[k] = ones[0]
        elif not reuse and coder == _ZRH:
            pos = _scan_zrh(buf, pos, end, k, s, n, zhead, zrl, zrs, zll, zls)
            if pos < 0:
                return PYTHON, k, start, budget, chunk_bits, used
        hdr[k, CB_END] = pos
        m = (n + (1 << clog2) - 1) >> clog2
        if m > end - pos:  # a chunk costs at least one byte of chunk table
            return PYTHON, k, start, budget, chunk_bits, used
        max_bits = 8 * (end - pos)
        if used + m > chunk_bits.shape[0]:
            grown = np.empty(max(2 * chunk_bits.shape[0], used + m), np.int64)
            grown[:used] = chunk_bits[:used]
            chunk_bits = grown
        nbytes = 0
        for i in range(m):
            v, pos, err = read_varint(buf, pos, end)
            if err != 0 or v > max_bits:
                return PYTHON, k, start, budget, chunk_bits, used
            chunk_bits[used + i] = v
            nbytes += (v + 7) >> 3
        if nbytes > end - pos:
            return PYTHON, k, start, budget, chunk_bits, used
        hdr[k, A], hdr[k, B], hdr[k, NDIM], hdr[k, N] = a, b, ndim, n
        hdr[k, FIRST], hdr[k, M], hdr[k, DATA], hdr[k, NBYTES] = used, m, pos, nbytes
        used += m
        pos += nbytes
        budget -= n
        prev_coder = coder
        k += 1
    return DONE, k, pos, budget, chunk_bits, used


@contextlib.contextmanager
def reference_reader():
    """Within it, :func:`read_sections` leaves every section to ``payload._read_section``
    (what the scanner is checked and timed against: tests, ``bench parse``)."""
    global _reference
    _reference = True
    try:
        yield
    finally:
        _reference = False


_reference = False


@njit(cache=True)
def _scan_zrh(buf, pos, end, k, s, n, zhead, zrl, zrs, zll, zls):
    """A ZRH codebook at pos into row k, with zrh.ZrhCode.parse's checks: the byte after it,
    or -1 for one that parse refuses."""
    if pos >= end:
        return -1
    head = np.int64(buf[pos])
    pos += 1
    nctx = zrh.NCTX if head & zrh.HEAD_CTX else 1
    nlctx = zrh.NLCTX if head & zrh.HEAD_SIGN else nctx
    rice = (head & zrh.HEAD_RICE) != 0
    if (head & 0x1F and (not rice or nctx > 1)
            or head & zrh.HEAD_SIGN and not head & zrh.HEAD_CTX):
        return -1
    zhead[k, 0], zhead[k, 1], zhead[k, 2] = (zrh.MODE_RICE if rice else zrh.MODE_HUFFMAN,
                                             nctx, nlctx)
    zhead[k, 3:] = 0
    zrs[k, :] = -1
    zrl[k, :, :] = 0
    if rice:
        if nctx == 1:
            zhead[k, 3] = head & 0x1F
        else:
            if end - pos < nctx:
                return -1
            for c in range(nctx):
                zhead[k, 3 + c] = buf[pos + c]
            pos += nctx
        if zhead[k, 3: 3 + nctx].max() > RICE_MAX_K:
            return -1
    else:
        rows, ones, pos, err, _ = parse_code_rows(buf, pos, end, nctx, RUN_ALPHABET)
        if err != 0 or (n and ones[0] < 0 and not np.any(rows[0])):
            return -1
        zrl[k, :nctx] = rows
        zrs[k, :nctx] = ones
    rows, ones, pos, err, _ = parse_code_rows(buf, pos, end, nlctx, 2 * s)
    if err != 0:
        return -1
    zll[k, :nlctx] = rows
    zls[k, :nlctx] = ones
    return pos


def read_sections(r, qfields: dict, count: int, max_elements: int) -> list:
    """``count`` sections from ``r`` (a payload.Reader at the first), as ``count`` calls of
    ``payload._read_section`` would read them, their errors included; ``r`` then stands
    after the last."""
    if _reference:
        sections = []
        for _ in range(count):
            sections.append(_read_section(r, qfields, max_elements,
                                          sections[-1] if sections else None))
            max_elements -= sections[-1].size
        return sections
    s, blog2 = qfields["levels"], qfields["bucket_log2"]
    buf = byte_view(r.buf)
    width = shs.alphabet(s)
    hdr = np.zeros((count, HDR), np.int64)
    shapes = np.zeros((count, MAX_NDIM), np.int64)
    lengths = np.zeros((count, width), np.int64)
    codes = np.zeros((count, width), np.int64)
    singles = np.full(count, -1, np.int64)
    zrows = (np.zeros((count, 3 + zrh.NCTX), np.int64),  # ZRH codebooks: zhead ..., zls
             np.zeros((count, zrh.NCTX, RUN_ALPHABET), np.int64),
             np.full((count, zrh.NCTX), -1, np.int64),
             np.zeros((count, zrh.NLCTX, 2 * s), np.int64), np.full((count, zrh.NLCTX), -1,
                                                                    np.int64))
    chunk_bits = np.empty(max(16, 4 * count), np.int64)
    sections, k, pos, budget, prev, used = [], 0, r.pos, max_elements, -1, 0
    while k < count:
        status, stop, pos, budget, chunk_bits, used = scan(
            buf, pos, r.end, k, count, s, blog2, budget, prev, hdr, shapes, lengths, codes,
            singles, *zrows, chunk_bits, used)
        _make_sections(r.buf, sections, k, stop, hdr, shapes, lengths, codes, singles, zrows,
                       chunk_bits, qfields)
        if status == DONE:
            break
        r.pos = pos  # section `stop` by the reference reader: its codebook, or its error
        sec = _read_section(r, qfields, budget, sections[-1] if sections else None)
        sections.append(sec)
        budget -= sec.size
        prev, k, pos = CODERS[sec.coder], stop + 1, r.pos
    r.pos = pos
    return sections


def _make_sections(view, out, first, stop, hdr, shapes, lengths, codes, singles, zrows,
                   chunk_bits, qfields):
    """payload.Section objects of the scanned rows first..stop-1 (arrays as read_sections
    holds them), appended to ``out``."""
    s, blog2 = qfields["levels"], qfields["bucket_log2"]
    for k, h, shape, single in zip(range(first, stop), hdr[first:stop].tolist(),
                                   shapes[first:stop].tolist(), singles[first:stop].tolist()):
        a, n, clog2 = h[A], h[N], h[B] & 0x1F
        coder = CODER_NAMES[a & 0x0F]
        if blog2:
            nscales = max(1, (n + (1 << blog2) - 1) >> blog2)
            scale = np.frombuffer(view, "<f4", nscales, h[SCALE]).astype(np.float32)
        else:
            scale = struct.unpack_from("<f", view, h[SCALE])[0]
        if a & A_REUSE:
            codebook, parsed = out[-1].codebook, out[-1].parsed
        else:
            codebook = bytes(view[h[CB_START]: h[CB_END]])
            code = None
            if (a & 0x0F) <= _CODE_FORMAT:
                alpha = 2 * s + shs.MAX_RUN if a & 0x0F == _SHS else 2 * s + 1
                code = Code.of(lengths[k, :alpha], codes[k, :alpha], single)
            elif a & 0x0F == _ZRH:
                zhead, zrl, zrs, zll, zls = zrows
                mode, nctx, nlctx = zhead[k, :3].tolist()
                code = zrh.ZrhCode(mode, zhead[k, 3: 3 + nctx], zrl[k, :nctx], zrs[k, :nctx],
                                   zll[k, :nlctx], zls[k, :nlctx])
            parsed = (codebook, (coder, s, n, clog2), code)
        out.append(Section(
            coder=coder, dtype=DTYPE_NAMES[(a >> 4) & 0x03], shape=tuple(shape[:h[NDIM]]),
            scale=scale, chunk_log2=clog2, gap_layout=bool(a & A_GAP_LAYOUT),
            reuse=bool(a & A_REUSE), codebook=codebook,
            chunk_bits=chunk_bits[h[FIRST]: h[FIRST] + h[M]],
            data=view[h[DATA]: h[DATA] + h[NBYTES]], offset=h[DATA], parsed=parsed,
            **qfields))
