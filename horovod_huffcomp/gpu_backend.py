"""GPU backend: CuPy ``RawModule`` over ``cuda/*.cu``, byte-identical to the CPU backend.

Covered so far: quantizers ``qsgd`` (L2 and max norm) and ``terngrad``, coder ``huffman``,
float16/32/64 CuPy arrays or any CUDA ``__dlpack__`` producer (torch CUDA tensors), single
tensors and batches. ``api.encode``/``encode_many`` send CUDA inputs here when the options
are covered and copy them to the host for the CPU backend otherwise (see docs/gpu.md).

Encode of a batch (a model's gradients) runs every stage for all tensors at once, no
per-tensor launches, with one device-to-host copy of the small plan (scales, code lengths,
chunk sizes and chunk bit lengths) from which the host writes the headers, and one copy of
the packed data:

    absmax [+ sumsq] -> scales -> quantize -> histogram -> codes + chunk plan
    -> chunk bits -> (sync: plan to host) -> write -> (data to host)

Decode-and-sum (:func:`decode_sum`) parses the payloads' envelopes on the host (they are
untrusted: the same checks as the CPU backend), then decodes every chunk of every payload on
the device into one float64 accumulator, payload by payload in order, as
``exchange.reduce_mean`` sums; a bad chunk raises PayloadError, the device never faults.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

from . import payload
from .codebook import Code
from .errors import NonFiniteError, PayloadError
from .payload import CHUNK_LOG2_MAX, CHUNK_LOG2_MIN, DTYPES, MAX_CODE_LEN, MAX_NDIM, Section
from .quantizers import check_options

STAGES = ("quantize", "histogram", "codebook", "huffman")
COMPILE_OPTIONS = ("--fmad=false", "-std=c++17")
THREADS = 256
_SUFFIX = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32",
           np.dtype(np.float64): "f64"}


def cuda_dir() -> Path:
    """Where ``cuda/*.cu`` are: beside the package (source tree, editable install) or in
    ``<prefix>/share/horovod_huffcomp/cuda`` (wheel install)."""
    for d in (Path(__file__).resolve().parents[1] / "cuda",
              Path(sys.prefix) / "share" / "horovod_huffcomp" / "cuda"):
        if (d / "common.cuh").exists():
            return d
    raise FileNotFoundError("the CUDA sources (cuda/*.cu) of horovod_huffcomp are missing")


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether CuPy imports and sees a CUDA device (asked once per process)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device
        return False


def is_cuda_array(x) -> bool:
    """A CuPy array or a DLPack producer living on a CUDA device (torch CUDA tensors)."""
    if type(x).__module__.startswith("cupy"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None:
        return False
    try:
        return int(dev()[0]) == 2  # kDLCUDA
    except Exception:
        return False


def supports(quantizer: str, coder: str, elias_layout: str = "runlength") -> bool:
    """Whether the GPU backend encodes these options (else CUDA inputs go to the host)."""
    return quantizer in ("qsgd", "terngrad") and coder == "huffman"


def to_host(x) -> np.ndarray:
    """A CUDA array's values as a NumPy array (the fallback for options not covered)."""
    try:
        import cupy

        return cupy.asnumpy(x if isinstance(x, cupy.ndarray) else cupy.from_dlpack(x))
    except ImportError:
        if hasattr(x, "cpu"):  # a torch CUDA tensor without CuPy installed
            return x.detach().cpu().numpy()
        raise TypeError("a CUDA array needs CuPy (pip install horovod_huffcomp[gpu])") from None


@functools.lru_cache(maxsize=None)
def kernel(stage: str, name: str):
    """A kernel of ``cuda/<stage>.cu``, compiled once per process (CuPy caches the binary on
    disk too)."""
    return _module(str(cuda_dir()), stage).get_function(name)


@functools.lru_cache(maxsize=None)
def _module(d: str, stage: str):
    import cupy

    src = (Path(d) / f"{stage}.cu").read_text()
    return cupy.RawModule(code=src, options=COMPILE_OPTIONS + (f"-I{d}",))


def _as_device_flat(x):
    import cupy

    a = x if isinstance(x, cupy.ndarray) else cupy.from_dlpack(x)
    if a.dtype not in _SUFFIX:
        raise TypeError(f"unsupported dtype {a.dtype}; use float16, float32 or float64")
    if a.ndim > MAX_NDIM:
        raise ValueError(f"at most {MAX_NDIM} dimensions are supported, got {a.ndim}")
    return cupy.ascontiguousarray(a).reshape(-1), tuple(int(d) for d in a.shape)


def _grid(n_max: int) -> int:
    return int(max(1, min(4096, -(-n_max // (THREADS * 8)))))


def encode_sections(xs, *, quantizer, coder, levels, norm, seed, ratio=0.01, chunk_log2=None,
                    elias_layout="runlength", nonfinite="raise", streams=None,
                    prev: Section | None = None, profile: dict | None = None) -> list[Section]:
    """Sections of CUDA arrays ``xs`` (tensor i draws from stream ``streams[i]``, default i),
    the same as ``cpu_backend.encode_section`` gives for the same arrays on the host.
    ``profile``: a dict that receives each stage's device milliseconds (``bench gpu``)."""
    import cupy

    marks = []

    def mark(name):
        if profile is not None:
            ev = cupy.cuda.Event()
            ev.record()
            marks.append((name, ev))

    if not supports(quantizer, coder, elias_layout):
        raise NotImplementedError(f"the GPU backend does not cover {quantizer}/{coder} yet")
    s, norm = check_options(quantizer, levels, norm, ratio, nonfinite)
    if chunk_log2 is not None and not CHUNK_LOG2_MIN <= chunk_log2 <= CHUNK_LOG2_MAX:
        raise ValueError(f"chunk_log2 must be in [{CHUNK_LOG2_MIN}, {CHUNK_LOG2_MAX}]")
    flats, shapes = zip(*[_as_device_flat(x) for x in xs]) if xs else ((), ())
    count = len(flats)
    if count == 0:
        return []
    streams = list(range(count)) if streams is None else [int(v) for v in streams]
    sizes_h = np.array([f.size for f in flats], np.int64)
    sizes = cupy.asarray(sizes_h)
    alphabet = 2 * s + 1
    l2 = int(norm == "l2")
    u64 = cupy.uint64

    mark("start")
    # 1. scales: max|x| (+ the L2 fixed-point sum of squares), per dtype group, one launch each
    maxbits = cupy.zeros(count, u64)
    bad = cupy.zeros(count, cupy.int32)
    hi = cupy.zeros(count, u64)
    lo = cupy.zeros(count, u64)
    groups: dict = {}
    for i, f in enumerate(flats):
        groups.setdefault(f.dtype, []).append(i)
    for dt, idx in groups.items():
        sub = cupy.asarray(idx, cupy.int64)
        ptrs = cupy.asarray([flats[i].data.ptr for i in idx], u64)
        grid = (_grid(int(sizes_h[idx].max())), len(idx))
        m, b, h, lw = (cupy.zeros(len(idx), u64), cupy.zeros(len(idx), cupy.int32),
                       cupy.zeros(len(idx), u64), cupy.zeros(len(idx), u64))
        kernel("quantize", f"hc_absmax_{_SUFFIX[dt]}")(grid, (THREADS,), (ptrs, sizes[sub], m, b))
        if l2:
            kernel("quantize", f"hc_sumsq_{_SUFFIX[dt]}")(grid, (THREADS,),
                                                         (ptrs, sizes[sub], m, h, lw))
        maxbits[sub], bad[sub], hi[sub], lo[sub] = m, b, h, lw
    scales = cupy.zeros(count, cupy.float32)
    kernel("quantize", "hc_scales")((-(-count // 128),), (128,),
                                    (maxbits, bad, hi, lo, np.int32(l2), np.int32(count), scales))

    mark("scale")
    # 2. states (each tensor zero padded to a multiple of 8)
    padded = (sizes_h + 7) & ~7
    offsets_h = np.zeros(count + 1, np.int64)
    np.cumsum(padded, out=offsets_h[1:])
    offsets = cupy.asarray(offsets_h)
    states = cupy.zeros(int(offsets_h[-1]) or 8, cupy.int8)
    streams_d = cupy.asarray(streams, cupy.int64)
    for dt, idx in groups.items():
        sub = cupy.asarray(idx, cupy.int64)
        ptrs = cupy.asarray([flats[i].data.ptr for i in idx], u64)
        kernel("quantize", f"hc_quantize_{_SUFFIX[dt]}")(
            (_grid(int(sizes_h[idx].max())), len(idx)), (THREADS,),
            (ptrs, sizes[sub], scales[sub], np.int32(s), np.uint64(seed), streams_d[sub],
             offsets[sub], states))

    mark("quantize")
    # 3. histogram, codes, chunk plan: all on the device
    counts = cupy.zeros(count * alphabet, u64)
    kernel("histogram", "hc_histogram")((_grid(int(sizes_h.max())), count), (THREADS,),
                                        (states, offsets, sizes, np.int32(s), counts))
    lengths = cupy.zeros(count * alphabet, cupy.uint8)
    codes = cupy.zeros(count * alphabet, cupy.uint16)
    single = cupy.zeros(count, cupy.int32)
    bits = cupy.zeros(count, u64)
    one_per_tensor = ((-(-count // 64),), (64,))
    mark("histogram")
    kernel("codebook", "hc_build_codes")(*one_per_tensor, (counts, np.int32(alphabet),
                                                           np.int32(count), lengths, codes,
                                                           single, bits))
    clog2 = cupy.zeros(count, cupy.int32)
    nchunks = cupy.zeros(count, cupy.int64)
    kernel("codebook", "hc_chunk_plan")(*one_per_tensor, (
        counts, np.int32(alphabet), np.int32(s), sizes, np.int32(count),
        np.int32(chunk_log2 or 0), clog2, nchunks))
    chunk_first = cupy.zeros(count + 1, cupy.int64)
    cupy.cumsum(nchunks, out=chunk_first[1:])
    mark("codebook")
    min_log2 = chunk_log2 or 12  # auto never goes below CHUNK_LOG2_AUTO_MIN
    bound = int(sum(-(-int(n) // (1 << min_log2)) for n in sizes_h))
    chunk_bits = cupy.zeros(max(bound, 1), u64)
    if bound:
        kernel("huffman", "hc_huffman_chunk_bits")((-(-bound * 32 // THREADS),), (THREADS,), (
            states, offsets, sizes, clog2, chunk_first, np.int32(count), np.int32(s), lengths,
            chunk_bits))

    mark("chunk sizes")
    # 4. the one synchronisation: the plan to the host
    scales_h, bad_h, lengths_h, single_h, clog2_h, first_h = (
        scales.get(), bad.get(), lengths.get().reshape(count, alphabet), single.get(),
        clog2.get(), chunk_first.get())
    if nonfinite == "raise" and bad_h.any():
        raise NonFiniteError("input holds NaN or Inf; pass nonfinite='propagate' to encode a "
                             "NaN tensor")
    bits_h = chunk_bits[: int(first_h[-1])].get().astype(np.int64)
    nbytes = (bits_h + 7) >> 3
    chunk_byte_h = np.zeros(bits_h.size + 1, np.int64)
    np.cumsum(nbytes, out=chunk_byte_h[1:])
    total = int(chunk_byte_h[-1])
    mark("plan to host")

    # 5. write every chunk's bits into one zeroed buffer, then bring it over
    out = cupy.zeros(max(-(-total // 4), 1), cupy.uint32)
    if bits_h.size:
        kernel("huffman", "hc_huffman_write")((-(-bits_h.size * 32 // THREADS),), (THREADS,), (
            states, offsets, sizes, clog2, chunk_first, np.int32(count), np.int32(s), lengths,
            codes, cupy.asarray(chunk_byte_h[:-1].astype(np.uint64)), out))
    mark("write")
    data = out.view(cupy.uint8)[:total].get().tobytes()
    mark("data to host")
    if profile is not None:
        marks[-1][1].synchronize()
        for (_, a), (name, b) in zip(marks, marks[1:]):
            profile[name] = profile.get(name, 0.0) + cupy.cuda.get_elapsed_time(a, b)

    sections = []
    for t in range(count):
        code = (Code(np.zeros(alphabet, np.int64), single=int(single_h[t]))
                if single_h[t] >= 0 else Code(lengths_h[t].astype(np.int64)))
        cb = bytearray()
        code.serialize(cb)
        a, b = int(first_h[t]), int(first_h[t + 1])
        prev_cb = (prev.coder, prev.codebook) if prev is not None else None
        sec = Section(quantizer=quantizer, coder="huffman", dtype=flats[t].dtype,
                      shape=shapes[t], levels=s, scale=float(scales_h[t]),
                      chunk_log2=int(clog2_h[t]), norm=norm, raw=False, gap_layout=False,
                      reuse=prev_cb == ("huffman", bytes(cb)), codebook=bytes(cb),
                      chunk_bits=bits_h[a:b].copy(),
                      data=data[int(chunk_byte_h[a]): int(chunk_byte_h[b])])
        sections.append(sec)
        prev = sec
    return sections


def decode_sum(blobs, *, average: bool = False, max_elements: int = payload.DEFAULT_MAX_ELEMENTS,
               labels=None, bundle: bool | None = None):
    """Decode-and-sum on the device: the payloads (one per worker, each a tensor or a bundle
    of the same shapes) summed in float64 in order, as CuPy arrays (a list for bundles, or
    always with ``bundle=True``); ``average`` divides by their number. ``labels`` name the
    payloads in errors (default "payload i"). NotImplementedError if a section is not
    GPU-covered (huffman), before any result is returned."""
    labels = list(labels) if labels is not None else [f"payload {i}" for i in range(len(blobs))]
    parsed = _unpack_all(blobs, labels, max_elements)
    out = _sum_parsed(parsed, labels, average)
    return out if (parsed[0][0] if bundle is None else bundle) else out[0]


def decode(blob, *, max_elements: int = payload.DEFAULT_MAX_ELEMENTS, label: str = "payload"):
    """One payload's dequantized tensors on the device, each in its own dtype (always a list),
    as ``api.decode_many`` gives on the host."""
    parsed = _unpack_all([blob], [label], max_elements)
    sums = _sum_parsed(parsed, [label], average=False)
    return [a.astype(sec.dtype) for a, sec in zip(sums, parsed[0][1])]


def _unpack_all(blobs, labels, max_elements):
    """Every payload's (bundle flag, sections), validated as on the host; a PayloadError names
    the payload's label."""
    parsed = []
    for label, b in zip(labels, blobs):
        try:
            parsed.append(payload.unpack(b, max_elements))
        except PayloadError as e:
            raise PayloadError(f"{label}: {e}") from None
    if not parsed:
        raise ValueError("decode_sum needs at least one payload")
    return parsed


def _sum_parsed(parsed, labels, average: bool) -> list:
    """The float64 sum (mean with ``average``) of parsed payloads holding the same tensors,
    one CuPy array per tensor."""
    import cupy

    is_bundle, first = parsed[0]
    shapes = [sec.shape for sec in first]
    for label, (bd, secs) in zip(labels, parsed):
        if bd != is_bundle or [sec.shape for sec in secs] != shapes:
            raise PayloadError(f"{label} does not hold the tensors of {labels[0]}")
    for _, secs in parsed:
        for sec in secs:
            if sec.coder != "huffman" or sec.raw:
                raise NotImplementedError(f"the GPU decoder does not cover {sec.coder} yet")
    sizes_h = np.array([int(np.prod(sh, dtype=np.int64)) for sh in shapes], np.int64)
    offsets_h = np.zeros(len(shapes) + 1, np.int64)
    np.cumsum(sizes_h, out=offsets_h[1:])
    acc = cupy.zeros(int(offsets_h[-1]) or 1, cupy.float64)
    err = cupy.zeros(2, cupy.int32)
    sizes = cupy.asarray(sizes_h)
    acc_offsets = cupy.asarray(offsets_h[:-1])
    for label, (_, secs) in zip(labels, parsed):
        _decode_into(secs, sizes, acc_offsets, acc, err, label)
    out = []
    for t, sh in enumerate(shapes):
        a = acc[offsets_h[t]: offsets_h[t + 1]]
        if average:
            a = a / len(parsed)
        out.append(a.reshape(sh))
    return out


def _decode_into(secs, sizes, acc_offsets, acc, err, which: str) -> None:
    import cupy

    count = len(secs)
    s = secs[0].levels
    alphabet = 2 * s + 1
    lengths = np.zeros((count, alphabet), np.uint8)
    codes = np.zeros((count, alphabet), np.uint16)
    single = np.full(count, -1, np.int32)
    chunk_bits, chunk_byte, data = [], [], bytearray()
    for t, sec in enumerate(secs):
        code = Code.parse(payload.Reader(sec.codebook), alphabet, "huffman code")
        if sec.size and code.single < 0 and not code.lengths.any():
            raise PayloadError(f"{which}: huffman code is empty but the data needs it")
        lengths[t] = code.lengths
        codes[t] = code.codes
        single[t] = code.single
        nb = (sec.chunk_bits + 7) >> 3
        starts = len(data) + np.concatenate([[0], np.cumsum(nb)[:-1]]) if nb.size else nb
        if int(nb.sum()) != len(sec.data):
            raise PayloadError(f"{which}: chunk table and data length disagree")
        chunk_bits.append(sec.chunk_bits.astype(np.uint64))
        chunk_byte.append(np.asarray(starts, np.uint64))
        data += bytes(sec.data)
    first_h = np.zeros(count + 1, np.int64)
    np.cumsum([b.size for b in chunk_bits], out=first_h[1:])
    total_chunks = int(first_h[-1])
    if total_chunks == 0:
        return
    tables = cupy.empty(count << MAX_CODE_LEN, cupy.int32)
    tbits = cupy.zeros(count, cupy.int32)
    kernel("codebook", "hc_decode_tables")((count,), (THREADS,), (
        cupy.asarray(lengths.reshape(-1)), cupy.asarray(codes.reshape(-1)),
        cupy.asarray(single), np.int32(alphabet), tbits, tables))
    buf = cupy.asarray(np.frombuffer(bytes(data) or b"\0", np.uint8))
    dtypes = cupy.asarray([DTYPES[np.dtype(sec.dtype)] for sec in secs], cupy.int32)
    scales = cupy.asarray([sec.scale for sec in secs], cupy.float32)
    clog2 = cupy.asarray([sec.chunk_log2 for sec in secs], cupy.int32)
    kernel("huffman", "hc_huffman_decode_sum")((-(-total_chunks // 128),), (128,), (
        buf, np.uint64(len(data)), cupy.asarray(np.concatenate(chunk_byte)),
        cupy.asarray(np.concatenate(chunk_bits)), clog2, cupy.asarray(first_h), sizes,
        np.int32(count), np.int32(s), scales, tables, tbits, dtypes, acc_offsets, acc, err))
    e = err.get()
    if e[0]:
        messages = {1: "a chunk's codewords run past its bit length",
                    2: "a chunk ends before its bit length", 3: "a bit pattern with no codeword"}
        raise PayloadError(f"{which}: huffman data: {messages.get(int(e[0]), 'error')} "
                           f"(chunk {int(e[1])})")
