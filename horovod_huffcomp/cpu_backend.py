"""CPU backend: NumPy + numba kernels for quantize -> code -> bits and back."""
from __future__ import annotations

import numpy as np

from . import coders
from .coders import auto
from .coders.chunks import auto_chunk_log2, chunk_threads
from .coders.zrh import scan_nonzeros
from .errors import PayloadError
from .payload import CHUNK_LOG2_MAX, CHUNK_LOG2_MIN, DTYPES, MAX_NDIM, Section
from .quantizers import arena_for, dequantize, quantize


def as_flat(x) -> tuple[np.ndarray, tuple]:
    """A C-contiguous flat float view/copy of any array-like (NumPy, DLPack producers)."""
    if not isinstance(x, np.ndarray):
        x = np.from_dlpack(x) if hasattr(x, "__dlpack__") else np.asarray(x)
    if x.dtype not in DTYPES:
        raise TypeError(f"unsupported dtype {x.dtype}; use float16, float32 or float64")
    if x.ndim > MAX_NDIM:
        raise ValueError(f"at most {MAX_NDIM} dimensions are supported, got {x.ndim}")
    return np.ascontiguousarray(x).reshape(-1), tuple(int(d) for d in x.shape)


def encode_sections(xs, *, quantizer, coder, levels, norm, seed, ratio, chunk_log2,
                    elias_layout, nonfinite, bucket=None, prev: Section | None = None,
                    values: list | None = None) -> list[Section]:
    """The sections of a bundle's arrays (array i draws stream i of ``seed``); ``prev``: the
    section before the first (codebook reuse). ``values``: a list to append each array's
    dequantized values to (what decoding its section gives, without decoding it)."""
    if elias_layout not in ("runlength", "gap"):
        raise ValueError(f"elias_layout must be 'runlength' or 'gap', got {elias_layout!r}")
    gap = elias_layout == "gap" and coder.startswith("elias")
    flats = [as_flat(x) for x in xs]
    arena, at = arena_for(flat.size for flat, _ in flats)
    qs, dtypes, shapes = [], [], []
    for i, (flat, shape) in enumerate(flats):
        q = quantize(flat, quantizer, levels, norm, seed, i, ratio, nonfinite,
                     arena=(arena, at[i]), bucket=bucket)
        qs.append(q)
        dtypes.append(flat.dtype)
        shapes.append(shape)
        if values is not None:
            values.append(dequantize(q.states[: q.n], q.levels, q.scale, q.raw,
                                     flat.dtype, quantizer, q.bucket_log2).reshape(shape))
    return code_sections(qs, quantizer, dtypes, shapes, coder, chunk_log2, seed, gap, prev)


def _section(q, quantizer, dtype, shape, gap, prev, used, codebook, chunk_bits, data,
             chunk_log2) -> Section:
    """A coded tensor's section; its data a read-only memoryview of the coder's bytes (not
    a copy: ``payload.pack`` copies it once, into the payload)."""
    reuse = prev is not None and prev.codebook == codebook and prev.coder == used
    # positional (Section's field order): a bundle of small tensors makes many of them
    return Section(quantizer, used, dtype, shape, q.levels, q.scale, chunk_log2, q.norm,
                   q.raw is not None, gap, reuse, codebook, chunk_bits, data, -1,
                   q.bucket_log2)


def _check_chunk_log2(chunk_log2) -> None:
    if chunk_log2 is not None and not CHUNK_LOG2_MIN <= chunk_log2 <= CHUNK_LOG2_MAX:
        raise ValueError(f"chunk_log2 must be in [{CHUNK_LOG2_MIN}, {CHUNK_LOG2_MAX}]")


def code_sections(qs, quantizer: str, dtypes, shapes, coder: str, chunk_log2, seed: int,
                  gap: bool = False, prev: Section | None = None) -> list[Section]:
    """:func:`code_section` of a bundle's tensors in turn, each after the one before. With
    ``auto``/``zrh``, runs of tensors are coded in one call each (``auto.encode_run``): all
    but exact top-k (raw magnitudes)."""
    _check_chunk_log2(chunk_log2)
    out = []
    i, count = 0, len(qs)
    runs = coder in ("auto", "zrh")
    while i < count:
        j = i
        if runs:
            s = qs[i].levels
            while j < count and auto.runs_together(qs[j]) and qs[j].levels == s:
                j += 1
        if j > i:
            for c in auto.encode_run(qs[i:j], coder, chunk_log2,
                                     None if prev is None else (prev.coder, prev.codebook)):
                prev = _section(qs[i], quantizer, dtypes[i], shapes[i], gap, prev, *c)
                out.append(prev)
                i += 1
            continue
        prev = code_section(qs[i], quantizer, dtypes[i], shapes[i], coder, chunk_log2, seed,
                            gap, prev)
        out.append(prev)
        i += 1
    return out


def code_section(q, quantizer: str, dtype, shape: tuple, coder: str, chunk_log2, seed: int,
                 gap: bool = False, prev: Section | None = None, scanned=None) -> Section:
    """The lossless step: quantized states -> a section (chunking, codebook, bits).
    ``scanned``: the states' ``zrh.scan_nonzeros`` if the caller has it."""
    _check_chunk_log2(chunk_log2)
    if scanned is None:
        scanned = scan_nonzeros(q.states, q.n, chunk_threads())
    if chunk_log2 is None:
        chunk_log2 = auto_chunk_log2(q.n, scanned[0])
    prev_cb = (prev.coder, prev.codebook) if prev is not None else None
    used, codebook, chunk_bits, data = coders.encode(q, coder, chunk_log2, seed, gap, prev_cb,
                                                     scanned)
    return _section(q, quantizer, dtype, shape, gap, prev, used, codebook, chunk_bits,
                    data.data.toreadonly(), chunk_log2)


def decode_states(sec: Section) -> tuple[np.ndarray, np.ndarray | None]:
    n = sec.size
    states = np.zeros(n, np.int8)
    raw = np.zeros(n if sec.raw else 0, np.uint32)
    if sec.raw and sec.levels != 1:
        raise PayloadError("raw top-k values need levels = 1")
    coders.decode(sec, states, raw)
    if sec.raw and (raw >= 0x7F800000).any():  # raw magnitudes are finite float32 bits
        raise PayloadError("a raw top-k magnitude is Inf or NaN")
    return states, (raw if sec.raw else None)


def decode_section(sec: Section) -> np.ndarray:
    states, raw = decode_states(sec)
    return dequantize(states, sec.levels, sec.scale, raw, sec.dtype, sec.quantizer,
                      sec.bucket_log2).reshape(sec.shape)
