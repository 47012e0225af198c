"""CPU backend: NumPy + numba kernels for quantize -> code -> bits and back."""
from __future__ import annotations

import numpy as np

from . import coders
from .coders.chunks import auto_chunk_log2, count_nonzero
from .errors import PayloadError
from .payload import CHUNK_LOG2_MAX, CHUNK_LOG2_MIN, DTYPES, MAX_NDIM, Section
from .quantizers import dequantize, quantize


def as_flat(x) -> tuple[np.ndarray, tuple]:
    """A C-contiguous flat float view/copy of any array-like (NumPy, DLPack producers)."""
    if not isinstance(x, np.ndarray):
        x = np.from_dlpack(x) if hasattr(x, "__dlpack__") else np.asarray(x)
    if x.dtype not in DTYPES:
        raise TypeError(f"unsupported dtype {x.dtype}; use float16, float32 or float64")
    if x.ndim > MAX_NDIM:
        raise ValueError(f"at most {MAX_NDIM} dimensions are supported, got {x.ndim}")
    return np.ascontiguousarray(x).reshape(-1), tuple(int(d) for d in x.shape)


def encode_section(x, *, quantizer, coder, levels, norm, seed, ratio, chunk_log2,
                   elias_layout, nonfinite, stream, prev: Section | None = None,
                   values: list | None = None) -> Section:
    """One tensor's section; ``prev`` is the bundle's previous section (codebook reuse).
    ``values``: a list to append the tensor's dequantized values to (what decoding the
    section gives, without decoding it)."""
    flat, shape = as_flat(x)
    q = quantize(flat, quantizer, levels, norm, seed, stream, ratio, nonfinite)
    if elias_layout not in ("runlength", "gap"):
        raise ValueError(f"elias_layout must be 'runlength' or 'gap', got {elias_layout!r}")
    gap = elias_layout == "gap" and coder.startswith("elias")
    sec = code_section(q, quantizer, flat.dtype, shape, coder, chunk_log2, seed, gap, prev)
    if values is not None:
        values.append(dequantize(q.states[: q.n], q.levels, q.scale, q.raw,
                                 flat.dtype).reshape(shape))
    return sec


def code_section(q, quantizer: str, dtype, shape: tuple, coder: str, chunk_log2, seed: int,
                 gap: bool = False, prev: Section | None = None) -> Section:
    """The lossless step: quantized states -> a section (chunking, codebook, bits)."""
    nnz = count_nonzero(q.states, q.n)
    if chunk_log2 is None:
        chunk_log2 = auto_chunk_log2(q.n, nnz)
    elif not CHUNK_LOG2_MIN <= chunk_log2 <= CHUNK_LOG2_MAX:
        raise ValueError(f"chunk_log2 must be in [{CHUNK_LOG2_MIN}, {CHUNK_LOG2_MAX}]")
    prev_cb = (prev.coder, prev.codebook) if prev is not None else None
    used, codebook, chunk_bits, data = coders.encode(q, coder, chunk_log2, seed, gap, prev_cb,
                                                     nnz)
    return Section(
        quantizer=quantizer, coder=used, dtype=dtype, shape=shape, levels=q.levels,
        scale=q.scale, chunk_log2=chunk_log2, norm=q.norm, raw=q.raw is not None,
        gap_layout=gap, reuse=prev_cb == (used, codebook), codebook=codebook,
        chunk_bits=chunk_bits, data=data.tobytes(),
    )


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
    return dequantize(states, sec.levels, sec.scale, raw, sec.dtype).reshape(sec.shape)
