"""The payload layout, version 2: the one place that defines it.

Both backends (the CPU one, and the GPU one of issue #3) and ``docs/format.md`` follow it.
A payload is::

    magic "HC" | version u8 | flags u8 | q u8 | levels varint | [bucket u8, if q bit 6]
    | [count varint, if bundle] | section ... | crc32 u32le

    flags     bit 0: bundle (several tensors; decode returns a list)
    q         bits 0-3 quantizer id, bit 4 norm (0 = l2, or gennorm for the float formats;
              1 = max), bit 5 raw float32 magnitudes (top-k only), bit 6 buckets (qsgd only)
    levels    s >= 1: states lie in [-s, s] (a float format's: its largest code, FP_FORMATS)
    bucket    log2 of the elements per bucket (BUCKET_LOG2_MIN..BUCKET_LOG2_MAX): QSGD's
              buckets, each quantized with its own scale

the quantizer fields are shared by every section; each section (one tensor) is::

    a u8      bits 0-3 coder id, bits 4-5 dtype code, bit 6 Elias gap layout, bit 7 reuse:
              no codebook field, the previous section's codebook applies (same coder)
    b u8      bits 0-4 log2 of the elements per chunk (CHUNK_LOG2_MIN..CHUNK_LOG2_MAX),
              bits 5-7 ndim (0..7)
    shape     ndim varints
    scale     f32le; with buckets, one f32le per bucket: max(1, ceil(elements / bucket))
    codebook  [unless reuse] the coder's codebook (see ``coders``), which delimits itself
    chunks    one varint per chunk: the chunk's length in bits
    data      each chunk's bits, MSB first, starting on a byte boundary

Varints are unsigned LEB128 (7 bits a byte, low group first), at most 10 bytes. The CRC-32 is
zlib's (IEEE 802.3 polynomial) over every byte before it.

Everything here treats its input as untrusted: a read past the end, a value out of range or a
mismatch raises :class:`PayloadError` saying which field failed.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from .crc import crc32, crc32_many
from .errors import PayloadError

MAGIC = b"HC"
VERSION = 2
FLAG_BUNDLE = 0x01

# Quantizers (q byte, bits 0-3).
QUANTIZERS = {"qsgd": 1, "terngrad": 2, "topk": 3, "fp4": 4, "fp8": 5, "fp8-e5m2": 6}
QUANTIZER_NAMES = {v: k for k, v in QUANTIZERS.items()}
Q_NORM_MAX = 0x10
Q_RAW = 0x20
Q_BUCKETS = 0x40
BUCKET_LOG2_MIN = 4
BUCKET_LOG2_MAX = 30

# Low-bit float formats (CO3): name -> (exponent bits, mantissa bits, exponent bias). The
# top exponent field is reserved (no Inf/NaN codes), so the non-negative values are the
# codes k = 0 .. fp_levels(): a state is sign * k, k the code of |value| as an unsigned
# float (exponent field << mantissa bits | mantissa); value(k) in ``float_quantizer.py``.
FP_FORMATS = {"fp4": (2, 1, 1), "fp8": (4, 3, 10), "fp8-e5m2": (5, 2, 15)}


def fp_levels(quantizer: str) -> int:
    """The largest code of a float format: the payload's levels field (5, 119, 123)."""
    ebits, mbits, _ = FP_FORMATS[quantizer]
    return (((1 << ebits) - 1) << mbits) - 1

# Coders (c byte, bits 0-3).
CODERS = {
    "huffman": 1,
    "sh": 2,
    "shs": 3,
    "rlh": 4,
    "zrh": 5,
    "elias-gamma": 6,
    "elias-delta": 7,
    "elias-omega": 8,
}
CODER_NAMES = {v: k for k, v in CODERS.items()}
A_GAP_LAYOUT = 0x40
A_REUSE = 0x80

# Input dtypes (d byte, bits 0-3). Output of decode has the same dtype.
DTYPES = {np.dtype(np.float16): 1, np.dtype(np.float32): 2, np.dtype(np.float64): 3}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

MAX_NDIM = 7
MAX_LEVELS = 127  # states are int8
CHUNK_LOG2_MIN = 8
CHUNK_LOG2_MAX = 30
MAX_CODE_LEN = 15  # every Huffman code in a payload is length-limited to this
RAW_BITS = 31  # raw float32 magnitude (sign bit dropped) after each non-zero state
DEFAULT_MAX_ELEMENTS = 1 << 32
# coder and chunk bytes, scale, and one byte of shape (ndim >= 1) or of chunk table (ndim 0:
# one element, one chunk); a section reusing its codebook and coding in 0 bits is that small
MIN_SECTION_BYTES = 7


@dataclass
class Section:
    """One tensor: its header fields, codebook, chunk table and bits."""

    quantizer: str
    coder: str
    dtype: np.dtype
    shape: tuple
    levels: int
    scale: float | np.ndarray  # float32 value; with buckets a float32 array, one per bucket
    chunk_log2: int
    norm: str = "l2"
    raw: bool = False
    gap_layout: bool = False
    reuse: bool = False  # codebook equals the previous section's and is not repeated
    codebook: bytes = b""
    chunk_bits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    data: bytes | memoryview = b""
    offset: int = -1  # where ``data`` starts in the payload it was read from (-1: not read)
    bucket_log2: int = 0  # 0: one scale for the tensor; else log2 of its buckets' elements
    # (codebook, (coder, levels, size, chunk_log2) it was checked for, its parsed code) as
    # :func:`unpack` read it: decoders use the code while the section still matches
    # (``coders.section_code``), so a codebook is parsed once
    parsed: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def num_chunks(self) -> int:
        return num_chunks(self.size, self.chunk_log2)


def num_chunks(n: int, chunk_log2: int) -> int:
    return (n + (1 << chunk_log2) - 1) >> chunk_log2


def num_scales(n: int, bucket_log2: int) -> int:
    """How many scales a section of n elements carries: one, or one per bucket (at least one)."""
    return max(1, (n + (1 << bucket_log2) - 1) >> bucket_log2) if bucket_log2 else 1


# ---------------------------------------------------------------- varints
def put_varint(out: bytearray, v: int) -> None:
    if v < 0:
        raise ValueError("varint of a negative number")
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def varint_bytes(values: np.ndarray) -> bytes:
    """LEB128 of every value of a non-negative integer array, concatenated."""
    out, ok = _put_varints(np.ascontiguousarray(values, dtype=np.int64))
    if not ok:
        raise ValueError("varint of a negative number")
    return out.tobytes()


@njit(cache=True)
def _put_varints(values):
    """(the varints of ``values``, whether none is negative)."""
    out = np.empty(10 * values.shape[0], np.uint8)
    pos = 0
    for i in range(values.shape[0]):
        v = values[i]
        if v < 0:
            return out[:0], False
        while v >= 0x80:
            out[pos] = np.uint8((v & 0x7F) | 0x80)
            v >>= 7
            pos += 1
        out[pos] = np.uint8(v)
        pos += 1
    return out[:pos], True


VARINT_TRUNCATED, VARINT_TOO_LONG, VARINT_RANGE = -1, -2, -3


@njit(inline="always", cache=True)
def read_varint(buf, pos, end):
    """One varint of ``buf[pos:end]``: (value, next byte, 0), or (0, pos, VARINT_*) when it is
    truncated, longer than 10 bytes or >= 2^63."""
    v = np.uint64(0)
    big = False
    for k in range(10):
        if pos + k >= end:
            return 0, pos, VARINT_TRUNCATED
        b = np.uint64(buf[pos + k])
        if k == 9 and (b & np.uint64(0x7F)) > np.uint64(0):
            big = True
        elif k < 9:
            v |= (b & np.uint64(0x7F)) << np.uint64(7 * k)
        if b < np.uint64(0x80):
            if big:
                return 0, pos, VARINT_RANGE
            return np.int64(v), pos + k + 1, 0
    return 0, pos, VARINT_TOO_LONG


@njit(cache=True)
def read_varints(buf, pos, end, count, limit):
    """``count`` varints of ``buf[pos:end]``, each <= ``limit``: (values, next byte, 0) or
    (values, byte where the failing one starts, VARINT_* error)."""
    out = np.zeros(count, np.int64)
    for i in range(count):
        v, nxt, err = read_varint(buf, pos, end)
        if err == 0 and v > limit:
            err = VARINT_RANGE
        if err != 0:
            return out, pos, err
        out[i] = v
        pos = nxt
    return out, pos, 0


def byte_view(buf) -> np.ndarray:
    """A read-only uint8 array over a bytes-like object, whether the object is writable
    (a gathered buffer) or not (bytes): the numba kernels that read payloads then see one
    array type and are compiled (and cached) once."""
    a = np.frombuffer(buf, np.uint8)
    a.flags.writeable = False
    return a


class Reader:
    """Bounds-checked cursor over an untrusted byte string."""

    def __init__(self, buf: bytes | memoryview, pos: int = 0, end: int | None = None):
        self.buf = memoryview(buf)
        self.pos = pos
        self.end = len(self.buf) if end is None else end

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise PayloadError(
                f"truncated payload: {what} needs {n} bytes at offset {self.pos}, "
                f"{self.end - self.pos} left"
            )

    def u8(self, what: str) -> int:
        self.need(1, what)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def bytes(self, n: int, what: str) -> memoryview:
        self.need(n, what)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def f32(self, what: str) -> float:
        return struct.unpack("<f", self.bytes(4, what))[0]

    def varint(self, what: str, limit: int = (1 << 63) - 1) -> int:
        v = 0
        for i in range(10):
            b = self.u8(what)
            v |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if v > limit:
                    raise PayloadError(f"{what} = {v} is out of range (max {limit})")
                return v
        raise PayloadError(f"{what}: varint longer than 10 bytes at offset {self.pos}")

    def varints(self, count: int, what: str, limit: int) -> np.ndarray:
        buf = byte_view(self.buf)
        out, pos, err = read_varints(buf, self.pos, self.end, count, limit)
        if err == VARINT_TRUNCATED:
            raise PayloadError(f"truncated payload: {what} needs 1 bytes at offset {pos}, "
                               f"{self.end - pos} left")
        if err == VARINT_TOO_LONG:
            raise PayloadError(f"{what}: varint longer than 10 bytes at offset {pos}")
        if err == VARINT_RANGE:
            v, _, big = read_varint(buf, pos, self.end)
            shown = ">= 2^63" if big else f"{v}"
            raise PayloadError(f"{what} = {shown} is out of range (max {limit})")
        self.pos = pos
        return out


# ---------------------------------------------------------------- writing
def _section_header(s: Section, out: bytearray) -> None:
    """A section's bytes before its coded data (header, codebook, chunk table)."""
    out.append(CODERS[s.coder] | (DTYPES[np.dtype(s.dtype)] << 4)
               | (A_GAP_LAYOUT if s.gap_layout else 0) | (A_REUSE if s.reuse else 0))
    out.append(s.chunk_log2 | (len(s.shape) << 5))
    for d in s.shape:
        put_varint(out, int(d))
    if s.bucket_log2:
        scales = np.asarray(s.scale, "<f4")
        if scales.shape != (num_scales(s.size, s.bucket_log2),):
            raise ValueError(f"a section of {s.size} elements in buckets of "
                             f"{1 << s.bucket_log2} needs {num_scales(s.size, s.bucket_log2)}"
                             f" scales, got shape {scales.shape}")
        out += scales.tobytes()
    else:
        out += struct.pack("<f", s.scale)
    if not s.reuse:
        out += s.codebook
    out += varint_bytes(s.chunk_bits)


JOIN_BYTES = 1 << 16  # coded data at least this long is joined, not appended (one copy)


def pack(sections: list[Section], bundle: bool) -> bytes:
    """Serialise sections into one payload (with magic, version, flags and CRC).

    Every section must share the quantizer fields (quantizer, norm, raw, levels). Large coded
    data is copied once, into the payload (the CRC runs over the parts before they are
    joined).
    """
    if not bundle and len(sections) != 1:
        raise ValueError("a non-bundle payload holds exactly one section")
    first = sections[0] if sections else Section("qsgd", "huffman", np.float32, (), 1, 0.0, 12)
    qkey = (first.quantizer, first.norm, first.raw, first.levels, first.bucket_log2)
    if any((t.quantizer, t.norm, t.raw, t.levels, t.bucket_log2) != qkey for t in sections):
        raise ValueError("sections of one payload must share quantizer, norm, levels and "
                         "buckets")
    if first.bucket_log2 and not (first.quantizer == "qsgd"
                                  and BUCKET_LOG2_MIN <= first.bucket_log2 <= BUCKET_LOG2_MAX):
        raise ValueError(f"buckets of 2^{first.bucket_log2} elements: qsgd's only, 2^"
                         f"{BUCKET_LOG2_MIN} to 2^{BUCKET_LOG2_MAX}")
    out = bytearray(MAGIC)
    out.append(VERSION)
    out.append(FLAG_BUNDLE if bundle else 0)
    out.append(QUANTIZERS[first.quantizer] | (Q_NORM_MAX if first.norm == "max" else 0)
               | (Q_RAW if first.raw else 0) | (Q_BUCKETS if first.bucket_log2 else 0))
    put_varint(out, first.levels)
    if first.bucket_log2:
        out.append(first.bucket_log2)
    if bundle:
        put_varint(out, len(sections))
    parts = [out]
    for i, t in enumerate(sections):
        if t.reuse and (i == 0 or sections[i - 1].coder != t.coder
                        or sections[i - 1].codebook != t.codebook):
            raise ValueError("a reusing section needs the same coder and codebook before it")
        _section_header(t, out)
        if len(t.data) < JOIN_BYTES:
            out += t.data
        else:
            out = bytearray()
            parts += [t.data, out]
    parts.append(struct.pack("<I", crc32(*parts)))  # on threads if megabytes (crc.py)
    return b"".join(parts)


# ---------------------------------------------------------------- reading
def _read_section(r: Reader, qfields: dict, max_elements: int, prev: Section | None) -> Section:
    a = r.u8("coder byte")
    b = r.u8("chunk byte")
    if (a & 0x0F) not in CODER_NAMES:
        raise PayloadError(f"unknown coder byte 0x{a:02x}")
    coder = CODER_NAMES[a & 0x0F]
    reuse = bool(a & A_REUSE)
    if reuse and (prev is None or prev.coder != coder):
        raise PayloadError("a section reuses a codebook but no previous section of its coder")
    if ((a >> 4) & 0x03) not in DTYPE_NAMES:
        raise PayloadError(f"unknown dtype code {(a >> 4) & 0x03}")
    chunk_log2, ndim = b & 0x1F, b >> 5
    if not CHUNK_LOG2_MIN <= chunk_log2 <= CHUNK_LOG2_MAX:
        raise PayloadError(f"chunk log2 {chunk_log2} outside [{CHUNK_LOG2_MIN}, {CHUNK_LOG2_MAX}]")
    shape = tuple(int(r.varint("shape", 1 << 48)) for _ in range(ndim))
    n = 1
    for dim in shape:
        n *= dim
    if n > max_elements:
        raise PayloadError(f"shape {shape} has {n} elements, more than max_elements={max_elements}")
    if qfields["bucket_log2"]:
        k = num_scales(n, qfields["bucket_log2"])
        scale = np.frombuffer(r.bytes(4 * k, "bucket scales"), "<f4").astype(np.float32)
        bad = np.flatnonzero((scale < 0) | (scale == np.inf))
        if bad.size:
            raise PayloadError(f"bucket {bad[0]}'s scale {scale[bad[0]]} is neither a finite "
                               "value >= 0 nor NaN")
    else:
        scale = r.f32("scale")
        if scale < 0 or scale == float("inf"):
            raise PayloadError(f"scale {scale} is neither a finite value >= 0 nor NaN")
    if reuse:
        codebook, parsed = prev.codebook, prev.parsed
    else:  # no length field: the codebook delimits itself, read it to find its end
        from .coders import parse_codebook  # (coders build on this module)

        start = r.pos
        code = parse_codebook(coder, r, qfields["levels"], n, chunk_log2)
        codebook = bytes(r.buf[start : r.pos])
        parsed = (codebook, (coder, qfields["levels"], n, chunk_log2), code)
    m = num_chunks(n, chunk_log2)
    # each chunk costs at least one byte of chunk table: a lying shape cannot make us loop long
    r.need(m, "chunk table")
    max_bits = 8 * (r.end - r.pos)
    chunk_bits = r.varints(m, "chunk bit length", max_bits)
    nbytes = int(((chunk_bits + 7) >> 3).sum())
    offset = r.pos
    data = r.bytes(nbytes, "coded data")
    return Section(
        coder=coder,
        dtype=DTYPE_NAMES[(a >> 4) & 0x03],
        shape=shape,
        scale=scale,
        chunk_log2=chunk_log2,
        gap_layout=bool(a & A_GAP_LAYOUT),
        reuse=reuse,
        codebook=codebook,
        chunk_bits=chunk_bits,
        data=data,
        offset=offset,
        parsed=parsed,
        **qfields,
    )


def _bytes_view(blob) -> memoryview | None:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        return None
    return memoryview(blob).cast("B") if isinstance(blob, memoryview) else memoryview(blob)


def body_crcs(blobs) -> list:
    """Each payload's CRC-32 over all but its last 4 bytes, what :func:`unpack` checks (None
    for one shorter than 8 bytes or not bytes-like), for ``unpack(blob, body_crc=...)``: the
    pieces of all of them on threads when there are megabytes (crc.py), as a decode-and-sum
    of many workers' payloads needs."""
    views = [_bytes_view(b) for b in blobs]
    at = [k for k, v in enumerate(views) if v is not None and len(v) >= 8]
    out = [None] * len(views)
    for k, c in zip(at, crc32_many([views[k][:-4] for k in at])):
        out[k] = c
    return out


def unpack(blob, max_elements: int = DEFAULT_MAX_ELEMENTS,
           body_crc: int | None = None) -> tuple[bool, list[Section]]:
    """Parse and verify a payload's envelope; returns (is_bundle, sections). ``body_crc``:
    the payload's :func:`body_crcs` entry if computed already."""
    buf = _bytes_view(blob)
    if buf is None:
        raise PayloadError(f"payload must be bytes-like, not {type(blob).__name__}")
    if len(buf) < 8:
        raise PayloadError(f"payload of {len(buf)} bytes is shorter than the 8-byte minimum")
    if bytes(buf[:2]) != MAGIC:
        raise PayloadError(f"bad magic {bytes(buf[:2])!r}, expected {MAGIC!r}")
    if buf[2] != VERSION:
        raise PayloadError(f"unsupported payload version {buf[2]} (this build reads {VERSION})")
    body_end = len(buf) - 4
    (crc,) = struct.unpack("<I", buf[body_end:])
    actual = crc32(buf[:body_end]) if body_crc is None else body_crc
    if crc != actual:
        raise PayloadError(f"checksum mismatch: stored 0x{crc:08x}, computed 0x{actual:08x}")
    r = Reader(buf, 3, body_end)
    flags = r.u8("flags")
    if flags & ~FLAG_BUNDLE:
        raise PayloadError(f"unknown flags 0x{flags:02x}")
    bundle = bool(flags & FLAG_BUNDLE)
    q = r.u8("quantizer byte")
    if (q & 0x0F) not in QUANTIZER_NAMES or q & 0x80:
        raise PayloadError(f"unknown quantizer byte 0x{q:02x}")
    quantizer = QUANTIZER_NAMES[q & 0x0F]
    if q & Q_RAW and quantizer != "topk":
        raise PayloadError(f"raw float32 values are top-k's, not {quantizer}'s")
    if q & Q_BUCKETS and quantizer != "qsgd":
        raise PayloadError(f"buckets are qsgd's, not {quantizer}'s")
    levels = r.varint("levels", MAX_LEVELS)
    if levels < 1:
        raise PayloadError("levels must be >= 1")
    if quantizer in FP_FORMATS and levels != fp_levels(quantizer):
        raise PayloadError(f"{quantizer} has levels {fp_levels(quantizer)}, not {levels}")
    bucket_log2 = r.u8("bucket") if q & Q_BUCKETS else 0
    if q & Q_BUCKETS and not BUCKET_LOG2_MIN <= bucket_log2 <= BUCKET_LOG2_MAX:
        raise PayloadError(f"bucket log2 {bucket_log2} outside [{BUCKET_LOG2_MIN}, "
                           f"{BUCKET_LOG2_MAX}]")
    norm = "max" if q & Q_NORM_MAX else "gennorm" if quantizer in FP_FORMATS else "l2"
    qfields = dict(quantizer=quantizer, levels=levels, norm=norm, raw=bool(q & Q_RAW),
                   bucket_log2=bucket_log2)
    # a section takes at least MIN_SECTION_BYTES: bounds the count before we loop on it
    count = r.varint("section count", (r.end - r.pos) // MIN_SECTION_BYTES) if bundle else 1
    from .section_scan import read_sections  # (it builds on this module)

    sections = read_sections(r, qfields, count, max_elements)
    if r.pos != r.end:
        raise PayloadError(f"{r.end - r.pos} trailing bytes after the last section")
    return bundle, sections
