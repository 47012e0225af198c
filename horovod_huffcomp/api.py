"""Public NumPy-level API: encode, encode_many, decode, decode_many, inspect."""
from __future__ import annotations

import dataclasses

import numpy as np

from . import cpu_backend, gpu_backend, payload
from .payload import DEFAULT_MAX_ELEMENTS
from .rng import seed_to_u64


def _options(quantizer, coder, levels, norm, seed, ratio, chunk_log2, elias_layout, nonfinite,
             bucket):
    from .coders import CODER_CHOICES

    if coder not in CODER_CHOICES:
        raise ValueError(f"unknown coder {coder!r}; choose from {CODER_CHOICES}")
    return dict(quantizer=quantizer, coder=coder, levels=levels, norm=norm,
                seed=seed_to_u64(seed), ratio=ratio, chunk_log2=chunk_log2,
                elias_layout=elias_layout, nonfinite=nonfinite, bucket=bucket)


def encode(x, quantizer: str = "qsgd", coder: str = "auto", levels: int | None = None,
           norm: str | None = None, seed: int = 0, *, ratio: float = 0.01,
           chunk_log2: int | None = None, elias_layout: str = "runlength",
           nonfinite: str = "raise", bucket: int | None = None) -> bytes:
    """Quantize and entropy-code one float array into a self-describing payload.

    x: a NumPy array (or anything array-like), or a CUDA array (CuPy, torch CUDA tensor,
        any __dlpack__ producer): encoded by the GPU backend where it covers the options
        (qsgd/terngrad with huffman, zrh or auto), else copied to the host; the bytes are
        the same.
    quantizer: "qsgd" (levels s, default 16; norm "l2" (default) or "max"), "terngrad",
        "topk" (ratio of entries kept; levels 0 = exact float32 values, s >= 1 =
        quantized), or CO3's low-bit floats "fp4" (E2M1; norm "gennorm" (default) or
        "max"), "fp8" (E4M3, bias 10) and "fp8-e5m2" (max-scaled).
    bucket: qsgd only: QSGD's buckets of this many elements (a power of two, 16 to 2^30),
        each with its own scale (the paper's d = 512); None (default): one scale per tensor.
    coder: "auto" (default: the smaller of huffman and zrh), "huffman", "sh", "shs", "rlh",
        "zrh", "elias-gamma", "elias-delta", "elias-omega" (elias_layout "runlength"/"gap").
    seed: stochastic rounding is a hash of (seed, element index): same seed, same bytes.
    """
    opts = _options(quantizer, coder, levels, norm, seed, ratio, chunk_log2, elias_layout,
                    nonfinite, bucket)
    return _encode([x], opts, bundle=False, values=None)


def encode_many(xs, quantizer: str = "qsgd", coder: str = "auto", levels: int | None = None,
                norm: str | None = None, seed: int = 0, **kw) -> bytes:
    """Encode several arrays (a model's gradients) into one bundle payload.

    Each array keeps its own scale; one header and one checksum serve them all, and a section
    whose codebook equals the previous one's (ZRH weighs reusing it) does not repeat it.
    Array i draws its random numbers from stream i of ``seed``.
    """
    return encode_dequantized(xs, quantizer, coder, levels, norm, seed, bundle=True,
                              values=False, **kw)[0]


def encode_dequantized(xs, quantizer: str = "qsgd", coder: str = "auto",
                       levels: int | None = None, norm: str | None = None, seed: int = 0, *,
                       bundle: bool = True, values: bool = True, **kw):
    """:func:`encode_many` (``bundle``; else :func:`encode` of the one array of ``xs``), and
    what decoding that payload gives (a list, one array per tensor), computed from the
    quantized states, without decoding: ``(payload, arrays)``. ``arrays`` is None where the
    GPU backend encoded. The framework adapters use it for a worker's own contribution."""
    opts = _options(quantizer, coder, levels, norm, seed, kw.pop("ratio", 0.01),
                    kw.pop("chunk_log2", None), kw.pop("elias_layout", "runlength"),
                    kw.pop("nonfinite", "raise"), kw.pop("bucket", None))
    if kw:
        raise TypeError(f"unexpected arguments {sorted(kw)}")
    xs = list(xs)
    if not bundle and len(xs) != 1:
        raise ValueError("a single-tensor payload holds exactly one array")
    out = [] if values else None
    blob = _encode(xs, opts, bundle, out)
    return blob, out if out is None or len(out) == len(xs) else None


def _encode(xs, opts, bundle: bool, values: list | None) -> bytes:
    """Sections of every array (GPU backend where it covers them all, else the CPU backend),
    packed; the CPU backend appends each array's dequantized values to ``values``."""
    on_gpu = [gpu_backend.is_cuda_array(x) for x in xs]
    if xs and all(on_gpu) and gpu_backend.supports(opts["quantizer"], opts["coder"],
                                                   opts["elias_layout"], opts["bucket"],
                                                   opts["levels"]):
        return payload.pack(gpu_backend.encode_sections(xs, transient=True, **opts),
                            bundle=bundle)
    xs = [gpu_backend.to_host(x) if g else x for x, g in zip(xs, on_gpu)]
    return payload.pack(cpu_backend.encode_sections(xs, values=values, **opts), bundle=bundle)


def decode(blob, *, max_elements: int = DEFAULT_MAX_ELEMENTS):
    """Dequantized array of a payload from :func:`encode` (a list for :func:`encode_many`).

    Raises PayloadError for anything malformed; refuses payloads that claim more than
    ``max_elements`` elements in all (an all-zero tensor codes to a few bytes, so a small
    payload may legitimately expand enormously).
    """
    bundle, sections = payload.unpack(blob, max_elements)
    out = [cpu_backend.decode_section(s) for s in sections]
    return out if bundle else out[0]


def decode_many(blob, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> list:
    """Like :func:`decode` but always returns a list."""
    out = decode(blob, max_elements=max_elements)
    return out if isinstance(out, list) else [out]


def _section_info(s: payload.Section, header_bytes: int) -> dict:
    return {
        "quantizer": s.quantizer,
        "levels": s.levels,
        "norm": s.norm,
        "raw_values": s.raw,
        "coder": s.coder,
        "elias_layout": ("gap" if s.gap_layout else "runlength") if s.coder.startswith("elias")
        else None,
        "dtype": np.dtype(s.dtype).name,
        "shape": s.shape,
        "size": s.size,
        "scale": float(np.max(s.scale)) if s.bucket_log2 else s.scale,  # buckets: largest
        "bucket_elements": 1 << s.bucket_log2 if s.bucket_log2 else None,
        "chunk_elements": 1 << s.chunk_log2,
        "num_chunks": s.num_chunks,
        "codebook_bytes": 0 if s.reuse else len(s.codebook),
        "codebook_reused": s.reuse,
        "data_bytes": len(s.data),
        "data_bits": int(s.chunk_bits.sum()),
        "header_bytes": header_bytes,
    }


def inspect(blob, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict:
    """Header fields of a payload (validated like decode, bits not decoded)."""
    bundle, sections = payload.unpack(blob, max_elements)
    total = len(blob)
    infos = []
    for s in sections:
        alone = dataclasses.replace(s, reuse=False)
        hdr = len(payload.pack([alone], bundle=False)) - len(s.codebook) - len(s.data)
        infos.append(_section_info(s, hdr))
    base = {"version": payload.VERSION, "bundle": bundle, "total_bytes": total}
    if not bundle:
        info = infos[0]
        info.update(base)
        info["bits_per_entry"] = 8 * total / info["size"] if info["size"] else float("nan")
        return info
    n = sum(i["size"] for i in infos)
    base.update(count=len(infos), sections=infos, size=n,
                bits_per_entry=8 * total / n if n else float("nan"))
    return base
