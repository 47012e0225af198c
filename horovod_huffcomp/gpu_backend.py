"""GPU backend: CuPy ``RawModule`` over ``cuda/*.cu``, byte-identical to the CPU backend.

Covered so far: quantizers ``qsgd`` (L2 and max norm, one scale per tensor or QSGD's
buckets), ``terngrad``, top-k (exact: raw float32 magnitudes in the bitstream, or its kept
values quantized, ``levels`` >= 1) and CO3's float formats
(``fp4``, ``fp8``, ``fp8-e5m2``; max norm and fp4's GenNorm fit), coders ``huffman``, ``sh``,
``shs``, ``zrh``, ``auto``, ``rlh`` (its encode: :mod:`gpu_rlh`) and the Elias baselines
(gamma, delta, omega; both layouts),
float16/32/64 CuPy arrays or any CUDA ``__dlpack__`` producer (torch CUDA tensors), single
tensors and batches (kernel families not yet run on a GPU wait in ``NOT_YET_ON_DEVICE``).
``api.encode``/``encode_many`` send CUDA inputs here when the options are covered and copy
them to the host for the CPU backend otherwise (see docs/gpu.md).

Encode of a batch (a model's gradients) runs every stage for all tensors at once, no
per-tensor launches, with one device-to-host copy of the small plan (scales, code lengths,
chunk sizes and chunk bit lengths) from which the host writes the headers, and one copy of
the packed data:

    absmax [+ sumsq] -> scales -> quantize -> histogram -> codes + chunk plan
    -> chunk bits -> (sync: plan to host) -> write -> (data to host)

(``rlh``: the plan to the host, then the runs' distinct pairs for the codes there, then
the chunk sizes, :mod:`gpu_rlh`; ``shs``: its code from SH's sampled counts, and the lists
of non-zeros its chunks walk;
the Elias baselines: lists of run ends or non-zeros in place of the codes, no codebook;
fp4's GenNorm scale: the moments' sums to the host, the fit there, the scales back: one
synchronisation more, :func:`_gennorm_scales`)

``zrh`` / ``auto`` choose each tensor's code on the host from histograms counted on the
device (one more synchronisation; see :func:`_plan_sparse`):

    ... -> histogram + chunk plan -> non-zero lists -> ZRH histograms -> (sync: histograms
    to host; codes chosen; tables up) -> chunk bits -> (sync) -> write -> (data to host)

Decode-and-sum (:func:`decode_sum`) parses the payloads' envelopes on the host (they are
untrusted: the same checks as the CPU backend), then decodes every chunk of every payload on
the device into one float64 accumulator, in payload order per element, as
``exchange.reduce_mean`` sums: tensors every payload codes with huffman in the same chunks
by one launch over all payloads (each element written once), the others payload by payload;
a bad chunk raises PayloadError, the device never faults. The decoder dequantizes with one
scale per tensor (state * scale / s, or a float format's code value times the scale), per
bucket (those tensors payload by payload, :func:`_decode_add`), or from exact top-k's raw
magnitudes (decoded beside the states, then added). Payloads of the families in
``NOT_YET_ON_DEVICE`` are decoded on the host (NotImplementedError here;
``exchange.decode_mean`` falls back).
"""
from __future__ import annotations

import functools
import hashlib
import math
import sys
import threading
import types
from pathlib import Path

import numpy as np

from . import coders, float_quantizer, gennorm, gpu_rlh, payload
from .codebook import code_rows_bytes
from .coders import auto, shs, zrh
from .coders.chunks import RUN_ALPHABET
from .coders.zrh import NCTX, NLCTX
from .errors import NonFiniteError, PayloadError
from .payload import CHUNK_LOG2_MAX, CHUNK_LOG2_MIN, DTYPES, MAX_NDIM, Section
from .quantizers import NONFINITE, OVERFLOW, bucket_log2_of, check_options, format_scale

STAGES = ("quantize", "histogram", "codebook", "states", "huffman", "zrh", "shs", "elias",
          "rlh")
ELIAS = ("elias-gamma", "elias-delta", "elias-omega")  # common.cuh HC_ELIAS_*: their order
ELIAS_LAYOUTS = ("runlength", "gap")
FP_IDS = {"fp4": 1, "fp8": 2, "fp8-e5m2": 3}  # common.cuh HC_FP_* (0: HC_FP_LINEAR)
# Kernel families built and checked on the host but not yet run on a GPU (docs/gpu.md): until
# their GPU tests have passed there, CUDA inputs that need one are encoded on the host and
# payloads that need one are decoded there, as before they were written. "elias": the Elias
# baselines (elias.cu); "float formats": CO3's fp4 / fp8 / fp8-e5m2 (hc_quantize_fp_*,
# hc_moments_*); "buckets": QSGD's buckets (hc_*_buckets_*, hc_add_buckets); "sample
# counts": SH's sampled histogram (histogram.cu hc_sample_counts: its encode; SH's payloads
# decode as huffman's); "top-k": top-k's selection (hc_topk_*, hc_quantize_topk_*: its
# encode; quantized top-k's payloads decode as qsgd's); "raw top-k": exact top-k's raw
# magnitudes in the bitstreams (the writers' _raw kernels, the decoders' raw outputs,
# hc_add_raw_states); "shs": SHS's code, writers and decoder (codebook.cu hc_build_shs_codes,
# shs.cu; its encode also needs "sample counts"); "rlh": RLH's encode (gpu_rlh: CuPy array
# operations, run on the host with NumPy by tests/test_gpu_rlh.py) and decoder (rlh.cu).
# The GPU tests, scripts/gpu_sanitize.py and `bench gpu` empty it.
NOT_YET_ON_DEVICE = {"elias", "float formats", "buckets", "sample counts", "top-k",
                     "raw top-k", "shs", "rlh"}
# huffman's chunk bits and writer four states a lane (huffman.cu hc_huffman_chunk_bits4,
# hc_huffman_write4; the writer of exact top-k stays one state a lane): written without a GPU,
# on once a device has run them (tests/test_gpu_backend.py turns it on for its own test,
# `bench gpu` times both, scripts/gpu_sanitize.py runs both).
WIDE = False
CODER_IDS = {c: payload.CODERS[c] for c in ("huffman", "shs", "zrh", "rlh") + ELIAS}  # HC_CODER_*
_KERNEL_CODER = {"sh": "huffman"}  # coders the kernels treat as another: sh's bits are huffman's
ZRH_PARAMS = auto.ZRH_PARAMS  # cuda/zrh.cu HC_ZRH_PARAMS
LIST_BLOCK = 256  # cuda/common.cuh HC_LIST_BLOCK
LIST_NONZERO, LIST_RUN_END = 0, 1  # cuda/common.cuh HC_LIST_*: what a list holds
CODE_THREADS = 32  # cuda/codebook.cu HC_CODE_THREADS
ZRH_ROWS = NCTX + NLCTX  # decode tables per ZRH tensor (cuda/common.cuh HC_ZRH_ROWS)
COMPILE_OPTIONS = ("--fmad=false", "-std=c++17")
THREADS = 256  # cuda/huffman.cu HC_THREADS
DEC_INTS = 1312  # cuda/common.cuh HC_DEC_INTS: a huffman (or SHS) decoder record
DS_THREADS = 128  # cuda/huffman.cu HC_DS_THREADS
# decode-and-sum through a symbol buffer up to this many chunks and buffer bytes (_by_symbols)
SYMBOLS_MAX_CHUNKS = 1 << 16
SYMBOLS_MAX_BYTES = 1 << 30
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


def supports(quantizer: str, coder: str, elias_layout: str = "runlength",
             bucket: int | None = None, levels: int | None = None) -> bool:
    """Whether the GPU backend encodes these options (else CUDA inputs go to the host):
    qsgd/terngrad with one scale per tensor, QSGD's buckets, a float format, or top-k (exact,
    ``levels`` 0 or None, or its kept values quantized), coded with huffman, sh, shs, zrh,
    auto, rlh, or an Elias code (either layout); none of the kernel families in
    ``NOT_YET_ON_DEVICE``."""
    raw = quantizer == "topk" and not levels
    return ((quantizer in ("qsgd", "terngrad", "topk") or quantizer in FP_IDS)
            and (bucket is None or quantizer == "qsgd")
            and (coder in ("huffman", "sh", "shs", "zrh", "auto", "rlh") or coder in ELIAS)
            and elias_layout in ELIAS_LAYOUTS
            and not _families(quantizer, coder, bucket is not None, raw=raw)
            & NOT_YET_ON_DEVICE)


def _kernel_coder(coder: str) -> str:
    """The coder whose kernels run a coder's bits (``_KERNEL_CODER``; itself for most)."""
    return _KERNEL_CODER.get(coder, coder)


def _families(quantizer: str, coder: str, buckets: bool, encode: bool = True,
              raw: bool = False) -> set:
    """The kernel families (``NOT_YET_ON_DEVICE``'s names) that encoding (or decoding) these
    options needs (``raw``: exact top-k's raw magnitudes)."""
    return {name for name, needed in (("elias", coder in ELIAS),
                                      ("float formats", quantizer in FP_IDS),
                                      ("buckets", buckets),
                                      ("sample counts", encode and coder in ("sh", "shs")),
                                      ("shs", coder == "shs"),
                                      ("rlh", coder == "rlh"),
                                      ("top-k", encode and quantizer == "topk"),
                                      ("raw top-k", raw)) if needed}


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
    # CuPy's on-disk cache keys a binary by this text and the options, not by the headers it
    # includes: name the header's hash in the text, so a changed common.cuh recompiles
    header = hashlib.sha256((Path(d) / "common.cuh").read_bytes()).hexdigest()
    return cupy.RawModule(code=f"// common.cuh sha256 {header}\n{src}",
                          options=COMPILE_OPTIONS + (f"-I{d}",))


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
                    elias_layout="runlength", nonfinite="raise", bucket=None, streams=None,
                    prev: Section | None = None, profile: dict | None = None,
                    transient: bool = False) -> list[Section]:
    """Sections of CUDA arrays ``xs`` (tensor i draws from stream ``streams[i]``, default i),
    the same as ``cpu_backend.encode_sections`` gives for the same arrays on the host.
    ``profile``: a dict that receives each stage's device milliseconds (``bench gpu``).
    ``transient``: the sections' data view this thread's page-locked staging buffer instead
    of a copy of it, valid until the thread's next encode (``api`` packs them at once: one
    copy of the payload's data fewer)."""
    import cupy

    mark = _Stages(profile)

    if elias_layout not in ELIAS_LAYOUTS:
        raise ValueError(f"elias_layout must be 'runlength' or 'gap', got {elias_layout!r}")
    if not supports(quantizer, coder, elias_layout, bucket, levels):
        raise NotImplementedError(f"the GPU backend does not cover {quantizer}/{coder}"
                                  f"{'' if bucket is None else ' in buckets'} yet")
    s, norm = check_options(quantizer, levels, norm, ratio, nonfinite)
    # exact top-k: states are the kept entries' signs (levels 1 in the payload), their raw
    # float32 magnitudes written beside the states and after each non-zero's codeword
    raw = quantizer == "topk" and s == 0
    qs, s = s, (1 if raw else s)  # the quantize stage's levels (0: exact), the coders'
    blog2 = bucket_log2_of(quantizer, bucket)
    gap = elias_layout == "gap" and coder in ELIAS
    if chunk_log2 is not None and not CHUNK_LOG2_MIN <= chunk_log2 <= CHUNK_LOG2_MAX:
        raise ValueError(f"chunk_log2 must be in [{CHUNK_LOG2_MIN}, {CHUNK_LOG2_MAX}]")
    flats, shapes = zip(*[_as_device_flat(x) for x in xs]) if xs else ((), ())
    count = len(flats)
    if count == 0:
        return []
    streams = list(range(count)) if streams is None else [int(v) for v in streams]
    # the device works on the tensors grouped by dtype (one launch per group and kernel of the
    # quantize stage): position j holds tensor order[j]; sections come back in input order
    order = sorted(range(count), key=lambda t: _SUFFIX[flats[t].dtype])
    sizes_h = np.array([flats[t].size for t in order], np.int64)
    padded = (sizes_h + 7) & ~7  # each tensor's states zero padded to a multiple of 8
    offsets_h = np.zeros(count + 1, np.int64)
    np.cumsum(padded, out=offsets_h[1:])
    alphabet = 2 * s + 1
    # the code's alphabet: the states', or SHS's levels and zero runs
    code_alphabet = shs.alphabet(s) if coder == "shs" else alphabet
    sampled = coder in ("sh", "shs")  # codes from SH's sampled counts
    l2 = int(norm == "l2")
    fmt = np.int32(FP_IDS.get(quantizer, 0))
    # the scales: one per tensor, or per bucket (tensor position j's from scale_first_h[j])
    scale_first_h = np.zeros(count + 1, np.int64)
    np.cumsum([payload.num_scales(int(n), blog2) for n in sizes_h], out=scale_first_h[1:])
    nsc = int(scale_first_h[-1])
    min_log2 = chunk_log2 or 12  # auto never goes below CHUNK_LOG2_AUTO_MIN
    bound = max(int(sum(-(-int(n) // (1 << min_log2)) for n in sizes_h)), 1)
    # every small input in one upload, every small output in one zeroed buffer
    ptrs, sizes, streams_d, offsets, scale_first = _upload([
        np.array([flats[t].data.ptr for t in order], np.uint64), sizes_h,
        np.array([streams[t] for t in order], np.int64), offsets_h, scale_first_h])
    sparse = coder in ("auto", "zrh")  # ZRH histograms, codes chosen on the host
    plan_specs = [(nsc, np.float32), (count, np.int32), (count, np.int32), (count + 1, np.int64),
                  (count * hist_layout(s)[-1] if sparse else 0, np.uint64), (count, np.int32),
                  (bound, np.uint64), (count * code_alphabet, np.uint8)]
    plan_h, plan = _carve(plan_specs)
    scales, bad, clog2, chunk_first, hist, single, chunk_bits, lengths = plan
    _, (maxbits, hi, lo, hi1, lo1, counts, sample_counts, codes, tab, bits, nchunks) = _carve(
        [(nsc, np.uint64)] * 3 + [(count, np.uint64)] * 2 + [
            (count * alphabet, np.uint64), (count * alphabet if sampled else 0, np.uint64),
            (count * alphabet, np.uint16), (count * code_alphabet if coder == "shs" else 0,
                                            np.uint32), (count, np.uint64), (count, np.int64)])
    groups = []  # (dtype suffix, first position, end position)
    for j, t in enumerate(order):
        suf = _SUFFIX[flats[t].dtype]
        if groups and groups[-1][0] == suf:
            groups[-1][2] = j + 1
        else:
            groups.append([suf, j, j + 1])

    mark("start")
    # 1. scales: max|x| (+ the L2 fixed-point sum of squares, or the GenNorm fit's moments),
    # per tensor or bucket, per dtype group, one launch each
    for suf, a, b in groups:
        grid = (_grid(int(sizes_h[a:b].max())), b - a)
        if blog2:
            head = (ptrs[a:], sizes[a:], scale_first[a:], np.int32(blog2))
            kernel("quantize", f"hc_absmax_buckets_{suf}")(grid, (THREADS,),
                                                           head + (maxbits, bad[a:]))
            if l2:
                kernel("quantize", f"hc_sumsq_buckets_{suf}")(grid, (THREADS,),
                                                              head + (maxbits, hi, lo))
            continue
        kernel("quantize", f"hc_absmax_{suf}")(grid, (THREADS,),
                                               (ptrs[a:], sizes[a:], maxbits[a:], bad[a:]))
        if l2:
            kernel("quantize", f"hc_sumsq_{suf}")(grid, (THREADS,), (
                ptrs[a:], sizes[a:], maxbits[a:], hi[a:], lo[a:]))
        elif norm == "gennorm":
            kernel("quantize", f"hc_moments_{suf}")(grid, (THREADS,), (
                ptrs[a:], sizes[a:], maxbits[a:], hi[a:], lo[a:], hi1[a:], lo1[a:]))
    kernel("quantize", "hc_scales")((-(-nsc // 128),), (128,), (
        maxbits, bad, hi, lo, np.int32(l2), fmt, np.int32(qs), scale_first, np.int32(count),
        scales))
    if norm == "gennorm":
        _gennorm_scales(sizes_h, maxbits, bad, hi, lo, hi1, lo1, nonfinite, scales)

    mark("scale")
    # 2. states (the kernel writes every byte, padding included)
    states = cupy.empty(int(offsets_h[-1]) or 8, cupy.int8)
    # raw magnitudes: written where a state is non-zero, read only there
    mags = cupy.empty(int(offsets_h[-1]) or 1, cupy.uint32) if raw else None
    if quantizer == "topk":
        _topk_states(groups, sizes_h, ptrs, sizes, streams_d, offsets, scales, qs, seed, ratio,
                     states, mags)
    for suf, a, b in groups if quantizer != "topk" else ():
        grid = (_grid(int(sizes_h[a:b].max())), b - a)
        if fmt:
            kernel("quantize", f"hc_quantize_fp_{suf}")(grid, (THREADS,), (
                ptrs[a:], sizes[a:], scales[a:], fmt, np.int32(s), offsets[a:], states))
        elif blog2:
            kernel("quantize", f"hc_quantize_buckets_{suf}")(grid, (THREADS,), (
                ptrs[a:], sizes[a:], scale_first[a:], np.int32(blog2), scales, np.int32(s),
                np.uint64(seed), streams_d[a:], offsets[a:], states))
        else:
            kernel("quantize", f"hc_quantize_{suf}")(grid, (THREADS,), (
                ptrs[a:], sizes[a:], scales[a:], np.int32(s), np.uint64(seed), streams_d[a:],
                offsets[a:], states))

    mark("quantize")
    # 3. state counts (their zeros fix the chunk sizes) and the chunk plan, on the device
    kernel("histogram", "hc_histogram")((_grid(int(sizes_h.max())), count), (THREADS,),
                                        (states, offsets, sizes, np.int32(s), counts))
    one_per_tensor = ((-(-count // 64),), (64,))
    mark("histogram")
    kernel("codebook", "hc_chunk_plan")(*one_per_tensor, (
        counts, np.int32(alphabet), np.int32(s), sizes, np.int32(count),
        np.int32(chunk_log2 or 0), clog2, nchunks))
    cupy.cumsum(nchunks, out=chunk_first[1:])
    dev = types.SimpleNamespace(states=states, offsets=offsets, sizes=sizes, sizes_h=sizes_h,
                                clog2=clog2, chunk_first=chunk_first, chunk_bits=chunk_bits,
                                hist=hist, count=count, s=s, bound=bound, raw=mags,
                                chunks_max=-(-int(sizes_h.max()) // (1 << min_log2)))
    if coder == "rlh":
        # 4. RLH (gpu_rlh): the plan to the host, then the runs' pairs for the codes there,
        # then the chunk sizes (two synchronisations more than huffman)
        scales_h, _, clog2_h, first_h = _plan_to_host(plan_h, plan_specs[:4], nonfinite)
        runs = gpu_rlh.plan(cupy, states, offsets_h, sizes_h, clog2_h, first_h, s, raw)
        chosen = [(coder, codebook) for codebook in runs.codebooks]
        bits_h, used = runs.chunk_bits, (coder,)
        mark("rlh codes")
    elif not sparse:
        # 4. huffman: codes on the device (sh: from sampled counts, the same bit layout);
        # SHS: its code from sampled counts, and the lists of non-zeros its chunks walk;
        # Elias: the lists of marks its chunks walk. Chunk sizes, then the one
        # synchronisation: the plan to the host in one copy
        kind = _kernel_coder(coder)
        dev.coders = cupy.full(count, CODER_IDS[kind], cupy.uint8)
        if sampled:
            kernel("histogram", "hc_sample_counts")((count,), (THREADS,), (
                states, offsets, sizes, np.int32(s), np.uint64(seed), sample_counts))
        if kind == "huffman":
            kernel("codebook", "hc_build_codes")((count,), (CODE_THREADS,), (
                sample_counts if coder == "sh" else counts, np.int32(alphabet), lengths, codes,
                single, bits))
            mark("codebook")
            dev.lengths, dev.codes = lengths, codes
        elif kind == "shs":
            kernel("codebook", "hc_build_shs_codes")((count,), (CODE_THREADS,), (
                sample_counts, np.int32(s), lengths, tab))
            mark("codebook")
            dev.tab = tab
            _lists(dev, LIST_NONZERO)
            mark("lists")
        else:
            dev.kind, dev.gap = np.int32(ELIAS.index(coder)), np.int32(gap)
            _lists(dev, LIST_NONZERO if gap else LIST_RUN_END)
            mark("lists")
        _chunk_bits(dev, (kind,))
        mark("chunk sizes")
        scales_h, _, clog2_h, first_h, _, single_h, bits_h, lengths_h = _plan_to_host(
            plan_h, plan_specs, nonfinite)
        lengths_h = lengths_h.reshape(count, code_alphabet)
        if kind in ("huffman", "shs"):  # SHS: every symbol weighs >= 1, never one symbol
            chosen = [(coder, cb) for cb in code_rows_bytes(
                lengths_h, single_h if kind == "huffman" else np.full(count, -1))]
        else:
            chosen = [(coder, b"")] * count  # Elias: no codebook
        used = (kind,)
    else:
        scales_h, clog2_h, first_h, bits_h, chosen, used = _plan_sparse(
            dev, coder, order, prev, plan_h, plan_specs, nonfinite, mark)
    bits_h = bits_h[: int(first_h[-1])].astype(np.int64)
    nbytes = (bits_h + 7) >> 3
    chunk_byte_h = np.zeros(bits_h.size + 1, np.int64)
    np.cumsum(nbytes, out=chunk_byte_h[1:])
    total = int(chunk_byte_h[-1])
    mark("plan to host")

    # 5. write every chunk's bits into one zeroed buffer, then bring it over (through pinned
    # memory: one DMA, then one host copy into the bytes the sections slice)
    out = cupy.zeros(max(-(-total // 4), 1), cupy.uint32)
    if coder == "rlh":  # every run's codeword placed at its bit (gpu_rlh)
        gpu_rlh.write(cupy, runs, chunk_byte_h[:-1], out, mags)
    elif bits_h.size:
        (chunk_byte,) = _upload([chunk_byte_h[:-1].astype(np.uint64)])
        grid = _warps(bits_h.size)  # a warp per chunk
        head = (states, offsets, sizes, clog2, chunk_first, np.int32(count), np.int32(s),
                dev.coders)
        # exact top-k: the writers' _raw kernels, the raw magnitudes laid out as the states
        suffix, mags_at = ("_raw", (offsets, mags)) if raw else ("", ())
        if "huffman" in used:
            kernel("huffman", "hc_huffman_write" + (suffix or ("4" if WIDE else "")))(
                *grid, head + (dev.lengths, dev.codes) + mags_at[1:] + (chunk_byte, out))
        if "zrh" in used:
            kernel("zrh", "hc_zrh_write" + suffix)(*grid, _zrh_head(dev) + (
                dev.zpar, dev.rtab, dev.ltab) + mags_at + (chunk_byte, out))
        if "shs" in used:
            kernel("shs", "hc_shs_write" + suffix)(*grid, _zrh_head(dev) + (
                dev.tab,) + mags_at + (chunk_byte, out))
        if coder in ELIAS:
            kernel("elias", "hc_elias_write" + suffix)(*grid, _elias_head(dev) + mags_at + (
                chunk_byte, out))
    mark("write")
    staged = _pinned(total, 1)
    out.view(cupy.uint8)[:total].get(out=staged)
    data = memoryview(staged) if transient else memoryview(staged.tobytes())
    mark("data to host")
    mark.add_to_profile()

    sections = [None] * count
    for j, t in enumerate(order):
        a, b = int(first_h[j]), int(first_h[j + 1])
        scale = (scales_h[scale_first_h[j]: scale_first_h[j + 1]].copy() if blog2
                 else float(scales_h[j]))
        sections[t] = Section(quantizer=quantizer, coder=chosen[j][0], dtype=flats[t].dtype,
                              shape=shapes[t], levels=s, scale=scale, bucket_log2=blog2,
                              chunk_log2=int(clog2_h[j]), norm=norm, raw=raw,
                              gap_layout=gap, codebook=chosen[j][1],
                              chunk_bits=bits_h[a:b].copy(),
                              data=data[int(chunk_byte_h[a]): int(chunk_byte_h[b])])
    for sec in sections:  # a codebook equal to the previous section's is not repeated
        sec.reuse = prev is not None and (prev.coder, prev.codebook) == (sec.coder, sec.codebook)
        prev = sec
    return sections


def _topk_states(groups, sizes_h, ptrs, sizes, streams_d, offsets, scales, s, seed, ratio,
                 states, mags=None) -> None:
    """Top-k's states: per tensor the k = ceil(ratio n)-th largest key by radix select
    (8-bit passes, MSB first: hc_topk_hist, hc_topk_pick; 4 passes on float32 keys, 8 on
    float64), each 256-element block's ties, their prefix sum, then the kept entries rounded
    (hc_quantize_topk), as ``quantizers.quantize`` keeps and rounds them; exact top-k (s = 0):
    their signs, and their float32 magnitudes into ``mags`` (laid out as the states)."""
    import cupy

    count = sizes_h.size
    ks = np.array([min(math.ceil(ratio * int(n)), int(n)) for n in sizes_h], np.int64)
    first = np.zeros(count + 1, np.int64)
    np.cumsum(-(-sizes_h // 256), out=first[1:])
    total = int(first[-1])
    krem, block_first = _upload([ks, first])
    prefix = cupy.zeros(count, cupy.uint64)
    ties = cupy.zeros(max(total, 1), cupy.uint32)
    tie_at = cupy.zeros(total + 1, cupy.int64)
    hist = cupy.empty(count * 256, cupy.uint64)  # a row per tensor, zeroed for each pass
    head = (np.int32(count),)
    for suf, a, b in groups:
        grid = (_grid(int(sizes_h[a:b].max())), b - a)
        rows = hist[a * 256: b * 256]
        for shift in range(56 if suf == "f64" else 24, -1, -8):
            rows.fill(0)
            kernel("quantize", f"hc_topk_hist_{suf}")(grid, (THREADS,), (
                ptrs[a:], sizes[a:], prefix[a:], krem[a:], np.int32(shift), rows))
            kernel("quantize", "hc_topk_pick")((-(-(b - a) // 64),), (64,), (
                rows, prefix[a:], krem[a:], np.int32(shift), np.int32(b - a)))
        if first[b] > first[a]:
            kernel("quantize", f"hc_topk_ties_{suf}")(*_warps(first[b] - first[a]), (
                ptrs, sizes, block_first) + head + (np.int64(first[a]), np.int64(first[b]),
                                                    prefix, ties))
    if total:
        cupy.cumsum(ties[:total], out=tie_at[1:])
    for suf, a, b in groups:
        if first[b] > first[a]:
            kernel("quantize", f"hc_quantize_topk_{suf}")(*_warps(first[b] - first[a]), (
                ptrs, sizes, block_first) + head + (
                np.int64(first[a]), np.int64(first[b]), prefix, krem, tie_at, scales,
                np.int32(s), np.uint64(seed), streams_d, offsets, states,
                np.uint64(0) if mags is None else mags))


def _warps(items: int) -> tuple:
    """A launch of one warp per item."""
    return (max(1, -(-int(items) * 32 // THREADS)),), (THREADS,)


def _gennorm_scales(sizes_h, maxbits, bad, hi, lo, hi1, lo1, nonfinite, scales) -> None:
    """fp4's GenNorm scales (``norm="gennorm"``): the moments' integer sums the device added
    up (hc_moments) brought to the host (one synchronisation more), each tensor's GenNorm
    fitted there as the CPU backend fits it (``gennorm.fit_sums``: lgamma is the host's) and
    the float32 scales sent back into ``scales``."""
    import cupy

    maxbits_h, bad_h, hi_h, lo_h, hi1_h, lo1_h = (cupy.asnumpy(a) for a in (
        maxbits, bad, hi, lo, hi1, lo1))
    _check_finite(bad_h, nonfinite)
    out = np.zeros(sizes_h.size, np.float32)
    for j, n in enumerate(sizes_h):
        m = float(maxbits_h[j:j + 1].view(np.float64)[0])
        if bad_h[j]:
            out[j] = np.nan
        elif m > 0.0:
            alpha, beta = gennorm.fit_sums(gennorm.fixed_sum(int(hi1_h[j]), int(lo1_h[j])),
                                           gennorm.fixed_sum(int(hi_h[j]), int(lo_h[j])),
                                           int(n), m)
            out[j] = format_scale(float_quantizer.fit_scale(alpha, beta))
    scales.set(out)


def _plan_to_host(plan_h, specs, nonfinite: str) -> list:
    """The plan's first ``len(specs)`` arrays (scales and non-finite flags first) in one copy
    into this thread's page-locked slot 0, checked by :func:`_check_finite`: their views."""
    size = _layout(specs)[1]
    host = _pinned(size, 0)
    plan_h[:size].get(out=host)
    views = _carve(specs, host)[1]
    _check_finite(views[1], nonfinite, views[0])
    return views


def _check_finite(bad_h, nonfinite: str, scales_h=None) -> None:
    """NonFiniteError for tensors that held NaN/Inf (``bad_h``) or, in ``scales_h``, a scale
    past float32's range (Inf: the quantize kernels left those states 0) with
    ``nonfinite="raise"``; else such scales become NaN, as the CPU backend writes them."""
    if nonfinite == "raise" and bad_h.any():
        raise NonFiniteError(NONFINITE)
    if scales_h is None:
        return
    over = scales_h == np.inf
    if over.any():
        if nonfinite == "raise":
            raise NonFiniteError(OVERFLOW)
        scales_h[over] = np.nan


def _chunk_bits(dev, used) -> None:
    """Every chunk's exact bit length (``dev.chunk_bits``), by the kernels of the coders in
    ``used`` (each skips the other coders' tensors)."""
    grid = _warps(dev.bound)  # a warp per chunk
    head = (dev.states, dev.offsets, dev.sizes, dev.clog2, dev.chunk_first, np.int32(dev.count),
            np.int32(dev.s), dev.coders)
    raw = np.int32(dev.raw is not None)  # exact top-k: raw magnitudes after the non-zeros
    if "huffman" in used:
        kernel("huffman", "hc_huffman_chunk_bits" + ("4" if WIDE else ""))(
            *grid, head + (dev.lengths, raw, dev.chunk_bits))
    if "zrh" in used:
        kernel("zrh", "hc_zrh_chunk_bits")(*grid, _zrh_head(dev) + (
            dev.zpar, dev.rtab, dev.ltab, raw, dev.chunk_bits))
    if "shs" in used:
        kernel("shs", "hc_shs_chunk_bits")(*grid, _zrh_head(dev) + (dev.tab, raw,
                                                                     dev.chunk_bits))
    if set(used) & set(ELIAS):
        kernel("elias", "hc_elias_chunk_bits")(*grid, _elias_head(dev) + (raw, dev.chunk_bits))


def _zrh_head(dev) -> tuple:
    """The leading arguments of the ZRH and SHS chunk kernels (cuda/zrh.cu, cuda/shs.cu)."""
    return (dev.pos, dev.val, dev.nz_at, dev.block_first, dev.sizes, dev.clog2, dev.chunk_first,
            np.int32(dev.count), np.int32(dev.s), dev.coders)


def _elias_head(dev) -> tuple:
    """The leading arguments of the Elias encode kernels (cuda/elias.cu)."""
    return (dev.pos, dev.val, dev.nz_at, dev.block_first, dev.sizes, dev.clog2, dev.chunk_first,
            np.int32(dev.count), dev.kind, dev.gap)


def _lists(dev, mode: int) -> None:
    """The marked states of every tensor in order (``mode``: LIST_NONZERO, the non-zeros, for
    ZRH, SHS and Elias' gap layout; LIST_RUN_END, the last state of every run of equal states in a
    chunk, for Elias' run-length layout): ``dev.pos`` their position in their chunk,
    ``dev.val`` their state, ``dev.nz_at`` where each block of LIST_BLOCK states starts in
    them; made in parallel over the batch (cuda/states.cu hc_list_count, hc_list). The coders'
    chunk kernels walk these, not the states, so a sparse tensor's long chunks cost their
    marks, not their length."""
    import cupy

    blocks = -(-dev.sizes_h // LIST_BLOCK)
    first = np.zeros(dev.count + 1, np.int64)
    np.cumsum(blocks, out=first[1:])
    total = int(first[-1])
    (dev.block_first,) = _upload([first])
    dev.nz_at = cupy.zeros(total + 1, cupy.int64)
    counts = cupy.empty(max(total, 1), cupy.uint32)
    grid = _warps(total)  # a warp per block
    head = (dev.states, dev.offsets, dev.sizes, dev.clog2, dev.block_first,
            np.int32(dev.count), np.int32(mode))
    kernel("states", "hc_list_count")(*grid, head + (counts,))
    if total:
        cupy.cumsum(counts[:total], out=dev.nz_at[1:])
    room = max(int(dev.sizes_h.sum()), 1)  # at most every state (no sync to learn how many)
    dev.pos = cupy.empty(room, cupy.uint32)
    dev.val = cupy.empty(room, cupy.int8)
    kernel("states", "hc_list")(*grid, head + (dev.nz_at, dev.pos, dev.val))


def hist_layout(s: int) -> tuple[int, ...]:
    """Where ``zrh.histograms``' arrays lie in a tensor's row of ``hc_zrh_histogram``
    (cuda/zrh.cu): run counts, level counts, extra bits, sums of r >> k; the row length."""
    return tuple(int(v) for v in auto.row_layout(s))


def _plan_sparse(dev, coder, order, prev, plan_h, plan_specs, nonfinite, mark):
    """``auto`` / ``zrh``: the ZRH histograms counted on the device and brought to the host
    with the scales, chunk sizes and non-finite flags (one copy of the plan's first five
    arrays); the codes chosen there in one numba call (``coders.auto.plan_many``: per tensor
    what ``auto.plan`` chooses on the CPU, in input order, since a section may reuse the
    previous one's code); their tables uploaded in one copy; the chunks' bit lengths
    counted on the device and brought back.
    Returns (scales, clog2, chunk_first, chunk_bits, [(coder, codebook)] per position, the
    coders used)."""

    count, s = dev.count, dev.s
    row = hist_layout(s)[-1]
    _lists(dev, LIST_NONZERO)
    mark("non-zero lists")
    warps = THREADS // 32  # a block's warps take a tensor's chunks in turn
    kernel("zrh", "hc_zrh_histogram")((max(1, min(1024, -(-dev.chunks_max // warps))), count),
                                      (THREADS,),
                                      (dev.pos, dev.val, dev.nz_at, dev.block_first, dev.sizes,
                                       dev.clog2, np.int32(s), dev.hist))
    mark("zrh histogram")
    scales_h, _, clog2_h, first_h, hist_h = _plan_to_host(plan_h, plan_specs[:5], nonfinite)
    # the codes in input order (a section may reuse the previous one's code), in one call
    by_pos = np.asarray(order)
    inv = np.argsort(by_pos)  # position of each tensor
    hist_h = hist_h.reshape(count, row)[inv]
    chosen, tables = auto.plan_many(coder, hist_h, dev.sizes_h[inv], s,
                                    0 if dev.raw is None else payload.RAW_BITS,
                                    (prev.coder, prev.codebook) if prev is not None else None)
    chosen = [chosen[t] for t in order]  # by position from here on
    lengths, codes, zpar, rtab, ltab = (a[by_pos] for a in tables)
    coders_h = np.array([CODER_IDS[c] for c, _ in chosen], np.uint8)
    used = {c for c, _ in chosen}
    (dev.coders, dev.lengths, dev.codes, dev.zpar, dev.rtab, dev.ltab) = _upload(
        [coders_h, lengths.reshape(-1), codes.reshape(-1), zpar.reshape(-1), rtab.reshape(-1),
         ltab.reshape(-1)])
    mark("codes on host")
    _chunk_bits(dev, used)
    mark("chunk sizes")
    bits_h = _pinned(int(first_h[-1]) * 8, 1).view(np.uint64)
    if bits_h.size:
        dev.chunk_bits[: bits_h.size].get(out=bits_h)
    return scales_h.copy(), clog2_h.copy(), first_h.copy(), bits_h, chosen, used


def decode_sum(blobs, *, average: bool = False, max_elements: int = payload.DEFAULT_MAX_ELEMENTS,
               labels=None, bundle: bool | None = None, profile: dict | None = None,
               own: int | None = None):
    """Decode-and-sum on the device: the payloads (one per worker, each a tensor or a bundle
    of the same shapes) summed in float64 in order, as CuPy arrays (a list for bundles, or
    always with ``bundle=True``); ``average`` divides by their number. ``labels`` name the
    payloads in errors (default "payload i"). NotImplementedError if a section is not
    GPU-covered (huffman, sh, shs, zrh, Elias), before any result is returned. ``profile``: a dict
    that receives the device milliseconds of the upload and of the decode kernels (``bench
    gpu``). ``own``: also payload ``own`` decoded alone, as :func:`decode` gives it, from the
    same parse (each payload's CRC and sections read once): ``(sums, own's tensors)``, the
    tensors always a list (a worker's own contribution, for error feedback)."""
    labels = list(labels) if labels is not None else [f"payload {i}" for i in range(len(blobs))]
    parsed = _unpack_all(blobs, labels, max_elements)
    out = _sum_parsed(blobs, parsed, labels, average, profile)
    out = out if (parsed[0][0] if bundle is None else bundle) else out[0]
    if own is None:
        return out
    return out, _decoded(blobs[own], parsed[own], labels[own])


def _decoded(blob, parsed, label) -> list:
    """One parsed payload's tensors on the device, each in its own dtype."""
    sums = _sum_parsed([blob], [parsed], [label], average=False)
    return [a.astype(sec.dtype) for a, sec in zip(sums, parsed[1])]


def decode(blob, *, max_elements: int = payload.DEFAULT_MAX_ELEMENTS, label: str = "payload"):
    """One payload's dequantized tensors on the device, each in its own dtype (always a list),
    as ``api.decode_many`` gives on the host."""
    return _decoded(blob, _unpack_all([blob], [label], max_elements)[0], label)


def _unpack_all(blobs, labels, max_elements):
    """Every payload's (bundle flag, sections), validated as on the host; a PayloadError names
    the payload's label."""
    parsed = []
    crcs = payload.body_crcs(blobs)  # on threads: several workers' payloads of megabytes
    for label, b, crc in zip(labels, blobs, crcs):
        try:
            parsed.append(payload.unpack(b, max_elements, crc))
        except PayloadError as e:
            raise PayloadError(f"{label}: {e}") from None
    if not parsed:
        raise ValueError("decode_sum needs at least one payload")
    return parsed


def _sum_parsed(blobs, parsed, labels, average: bool, profile: dict | None = None) -> list:
    """The float64 sum (mean with ``average``) of parsed payloads holding the same tensors,
    one CuPy array per tensor. Every payload's bytes and decode plan go to the device in one
    copy; then every payload's decoders, one decode-and-sum launch over all payloads for the
    tensors they all code alike, the rest per payload in order on one stream
    (:func:`_decode_add`); one synchronisation at the end reads every payload's error flag."""
    is_bundle, first = parsed[0]
    shapes = [sec.shape for sec in first]
    for label, (bd, secs) in zip(labels, parsed):
        if bd != is_bundle or [sec.shape for sec in secs] != shapes:
            raise PayloadError(f"{label} does not hold the tensors of {labels[0]}")
    for _, secs in parsed:
        for sec in secs:
            if (_kernel_coder(sec.coder) not in CODER_IDS
                    or NOT_YET_ON_DEVICE & _families(sec.quantizer, sec.coder,
                                                     sec.bucket_log2 > 0, encode=False,
                                                     raw=sec.raw)):
                raise NotImplementedError(
                    f"the GPU decoder does not cover {sec.quantizer}/{sec.coder}"
                    f"{' in buckets' if sec.bucket_log2 else ''} yet")
    for label, (_, secs) in zip(labels, parsed):
        if secs and secs[0].raw and secs[0].levels != 1:  # cpu_backend.decode_states
            raise PayloadError(f"{label}: raw top-k values need levels = 1")
    if not shapes:  # empty bundles: nothing to decode
        return []
    sizes_h = np.array([int(np.prod(sh, dtype=np.int64)) for sh in shapes], np.int64)
    offsets_h = np.zeros(len(shapes) + 1, np.int64)
    np.cumsum(sizes_h, out=offsets_h[1:])
    acc, e = _decode_add(blobs, parsed, labels, sizes_h, offsets_h, profile)
    for label, (_, secs), (code, chunk) in zip(labels, parsed, e):
        if code:
            messages = {1: "a chunk's codewords run past its bit length",
                        2: "a chunk ends before its bit length",
                        3: "a bit pattern with no codeword, or a value or run out of range",
                        4: "a raw top-k magnitude is Inf or NaN"}
            bounds = np.cumsum([sec.chunk_bits.size for sec in secs])
            coder = secs[min(int(np.searchsorted(bounds, int(chunk), "right")), len(secs) - 1)]
            raise PayloadError(f"{label}: {coder.coder} data: "
                               f"{messages.get(int(code), 'error')} (chunk {int(chunk)})")
    out = []
    for t, sh in enumerate(shapes):
        a = acc[offsets_h[t]: offsets_h[t + 1]]
        if average:
            a = a / len(parsed)
        out.append(a.reshape(sh))
    return out


def _decode_add(blobs, parsed, labels, sizes_h, offsets_h, profile):
    """The device part of :func:`_sum_parsed`: every payload decoded and added in order into
    one float64 accumulator; returns it and each payload's (error code, chunk) (0: none).
    Tensors that every payload codes with huffman in chunks of the same size are decoded and
    summed over all payloads by one launch (``fused``); the others payload by payload: huffman
    ones by the same kernel adding into the accumulator, SHS, ZRH and Elias ones decoded into
    a zeroed int8 state buffer, then every state's value added. Exact top-k's payloads (raw
    magnitudes) decode every tensor into that buffer and the raw magnitudes beside it, then
    ``hc_add_raw_states`` adds their values."""
    import cupy

    count, npay = sizes_h.size, len(parsed)
    codes_seen: dict = {}
    plans = [_decode_plan(b, secs, label, codes_seen)
             for b, (_, secs), label in zip(blobs, parsed, labels)]
    s = plans[0][0][0]
    huff = np.array([[_kernel_coder(sec.coder) == "huffman" for sec in secs]
                     for _, secs in parsed])
    clog2s = np.array([[sec.chunk_log2 for sec in secs] for _, secs in parsed], np.int32)
    # QSGD's buckets: decoded payload by payload into a state or symbol buffer, then added
    # with each bucket's scale (hc_add_buckets)
    buckets = np.array([[sec.bucket_log2 > 0 for sec in secs] for _, secs in parsed])
    raws = np.array([[pl[0][7]] * count for pl in plans], bool).reshape(npay, count)
    same_s = all(pl[0][0] == s for pl in plans)
    fused = (huff.all(axis=0) & (clog2s == clog2s[0]).all(axis=0) & ~buckets.any(axis=0)
             & ~raws.any(axis=0) & same_s)
    alone = (huff & ~fused & ~buckets & ~raws).astype(np.uint8)  # payload by payload
    add = (~huff & ~buckets & ~raws).astype(np.uint8)  # states added with their values
    which = np.where(buckets, np.where(huff, 2, 1), 0).astype(np.uint8)  # hc_add_buckets
    sym_here = (which == 2).astype(np.uint8)  # bucketed huffman tensors: into symbols
    padded = (sizes_h + 7) & ~7  # the symbol buffer's rows (cuda/common.cuh)
    sym_offsets_h = np.zeros(count, np.int64)
    np.cumsum(padded[:-1], out=sym_offsets_h[1:])
    arrays = [sizes_h, offsets_h[:-1], fused.astype(np.uint8), alone.reshape(-1),
              sym_offsets_h, add.reshape(-1), which.reshape(-1), sym_here.reshape(-1)]
    for pl in plans:
        arrays += pl[1:]
    per = len(plans[0]) - 1
    mark = _Stages(profile)

    mark("start")
    (sizes, acc_offsets, fused_d, alone_d, sym_offsets, add_d, which_d, sym_here_d,
     *rest) = _upload(arrays, pinned_slot=2)
    mark("upload")
    alphabets = [2 * pl[0][0] + 1 for pl in plans]
    acc = (cupy.empty if fused.all() else cupy.zeros)(int(offsets_h[-1]) or 1, cupy.float64)
    err = cupy.zeros(2 * npay, cupy.int32)
    dec = cupy.empty(npay * count * DEC_INTS, cupy.int32)
    values = cupy.empty(count * sum(alphabets), cupy.float64)
    value_at = np.concatenate([[0], np.cumsum(alphabets) * count])
    refs = np.zeros((npay, 5), np.uint64)  # cuda/huffman.cu HcPayload, one per payload
    for p, pl in enumerate(plans):
        buf, lengths, single, chunk_byte, chunk_bits, _, first_d, dtypes, scales, coders_d = \
            rest[per * p: per * p + 10]
        refs[p] = (_address(buf), buf.size, _address(chunk_byte), _address(chunk_bits),
                   _address(first_d))
        if pl[0][1]:
            kernel("codebook", "hc_huffman_decoders")((count,), (DS_THREADS,), (
                lengths, single, np.int32(alphabets[p]), np.int32(pl[0][5]), coders_d, scales,
                dtypes, dec[p * count * DEC_INTS:], values[int(value_at[p]):]))
    refs_d = cupy.asarray(refs)
    clog2_0, first_0 = rest[5], rest[6]
    total_0 = plans[0][0][1]
    resume = cupy.empty(max((npay - 1) * total_0, 1), cupy.uint64)  # positions between tiles
    stride = int(padded.sum())
    if fused.any() and total_0:
        if _by_symbols(npay, total_0, stride):
            symbols = cupy.zeros(npay * stride, cupy.uint8)  # failed chunks' rows stay valid
            kernel("huffman", "hc_huffman_decode_symbols")(
                (-(-npay * total_0 // DS_THREADS),), (DS_THREADS,), (
                    refs_d, np.int32(npay), clog2_0, first_0, sizes, np.int32(count),
                    fused_d, dec, sym_offsets, np.int64(stride), symbols, err))
            kernel("huffman", "hc_sum_symbols")((_grid(int(sizes_h[fused].max())), count),
                                                (THREADS,), (
                symbols, np.int32(npay), np.int64(stride), sizes, acc_offsets, sym_offsets,
                fused_d, np.int32(count), values, np.int32(s), acc))
        else:
            kernel("huffman", "hc_huffman_decode_sum")(
                (-(-total_0 // DS_THREADS),), (DS_THREADS,), (
                    refs_d, np.int32(npay), clog2_0, first_0, sizes, np.int32(count),
                    np.int32(s), fused_d, dec, values, acc_offsets, acc, np.int32(0), resume,
                    err))
    states = ztables = bsyms = raw = None
    for p, pl in enumerate(plans):
        (buf, lengths, single, chunk_byte, chunk_bits, clog2, first_d, dtypes, scales,
         coders_d, zpar, zlengths, zcodes, zsingles, table_at, zbits, gaps, bscales,
         bfirst, slengths, ssingle, rdec, pair_at, pairs) = rest[per * p: per * p + per]
        (sp, total_chunks, has_zrh, has_elias, table_size, _, blog2, is_raw, has_shs,
         has_rlh) = pl[0]
        if total_chunks == 0:
            continue
        chunk_grid = ((-(-total_chunks // DS_THREADS),), (DS_THREADS,))
        vals = values[int(value_at[p]):]
        if alone[p].any():
            kernel("huffman", "hc_huffman_decode_sum")(*chunk_grid, (
                refs_d[p:], np.int32(1), clog2, first_d, sizes, np.int32(count), np.int32(sp),
                alone_d[p * count:], dec[p * count * DEC_INTS:], vals, acc_offsets, acc,
                np.int32(1), resume, err[2 * p:]))
        if sym_here[p].any():  # bucketed huffman tensors: their symbols into one row
            if bsyms is None:
                bsyms = cupy.zeros(stride, cupy.uint8)
            kernel("huffman", "hc_huffman_decode_symbols")(*chunk_grid, (
                refs_d[p:], np.int32(1), clog2, first_d, sizes, np.int32(count),
                sym_here_d[p * count:], dec[p * count * DEC_INTS:], sym_offsets,
                np.int64(stride), bsyms, err[2 * p:]))
        if has_zrh or has_elias or has_shs or has_rlh or is_raw:
            # the other coders' tensors (exact top-k: all): decoded into a zeroed state
            # buffer, then the values of those with one scale added (the bucketed ones below)
            if states is None:
                states = cupy.zeros(acc.size, cupy.int8)
            else:
                states.fill(0)
            if is_raw and raw is None:  # written wherever a state is non-zero, read there
                raw = cupy.empty(acc.size, cupy.uint32)
            raw_out = raw if is_raw else np.uint64(0)  # a null pointer: no raw magnitudes
            if is_raw and huff[p].any():
                kernel("huffman", "hc_huffman_decode_raw")(*chunk_grid, (
                    buf, np.uint64(buf.size), chunk_byte, chunk_bits, clog2, first_d, sizes,
                    np.int32(count), np.int32(sp), coders_d, dec[p * count * DEC_INTS:],
                    acc_offsets, states, raw, err[2 * p:]))
            if has_zrh:
                if ztables is None or ztables.size < table_size:
                    ztables = cupy.empty(table_size, cupy.int32)
                kernel("zrh", "hc_zrh_decode_tables")((count * ZRH_ROWS,), (128,), (
                    zlengths, zcodes, zsingles, table_at, zbits, np.int32(sp), ztables))
                kernel("zrh", "hc_zrh_decode")(*chunk_grid, (
                    buf, np.uint64(buf.size), chunk_byte, chunk_bits, clog2, first_d, sizes,
                    np.int32(count), np.int32(sp), coders_d, zpar, ztables, table_at, zbits,
                    acc_offsets, states, raw_out, err[2 * p:]))
            if has_shs:
                pdec = dec[p * count * DEC_INTS:]
                kernel("shs", "hc_shs_decoders")((count,), (DS_THREADS,), (
                    slengths, ssingle, np.int32(sp), coders_d, pdec))
                kernel("shs", "hc_shs_decode")(*chunk_grid, (
                    buf, np.uint64(buf.size), chunk_byte, chunk_bits, clog2, first_d, sizes,
                    np.int32(count), np.int32(sp), coders_d, pdec, acc_offsets, states,
                    raw_out, err[2 * p:]))
            if has_elias:
                kernel("elias", "hc_elias_decode")(*chunk_grid, (
                    buf, np.uint64(buf.size), chunk_byte, chunk_bits, clog2, first_d, sizes,
                    np.int32(count), np.int32(sp), coders_d, gaps, acc_offsets, states,
                    raw_out, err[2 * p:]))
            if has_rlh:
                kernel("rlh", "hc_rlh_decode")(*chunk_grid, (
                    buf, np.uint64(buf.size), chunk_byte, chunk_bits, clog2, first_d, sizes,
                    np.int32(count), np.int32(sp), coders_d, rdec, pair_at, pairs,
                    acc_offsets, states, raw_out, err[2 * p:]))
            if is_raw:
                kernel("states", "hc_add_raw_states")((_grid(int(sizes_h.max())), count),
                                                      (THREADS,), (
                    states, raw, sizes, acc_offsets, scales, dtypes, acc))
            if add[p].any():
                kernel("states", "hc_add_states")((_grid(int(sizes_h.max())), count),
                                                  (THREADS,), (
                    states, sizes, acc_offsets, add_d[p * count:], vals, np.int32(sp), acc))
        if which[p].any():
            none = cupy.zeros(1, cupy.int8)  # a buffer this payload's tensors do not use
            kernel("states", "hc_add_buckets")((_grid(int(sizes_h.max())), count), (THREADS,), (
                none if states is None else states, none if bsyms is None else bsyms, sizes,
                acc_offsets, sym_offsets, which_d[p * count:], bfirst, bscales,
                np.int32(blog2), np.int32(sp), dtypes, acc))
    mark("decode")
    e = cupy.asnumpy(err).reshape(-1, 2)
    mark.add_to_profile()
    return acc, e


def _by_symbols(npay: int, chunks: int, stride: int) -> bool:
    """Whether the tensors every payload codes alike are decode-and-summed through a symbol
    buffer (a thread per chunk of each payload, then a sum per element) rather than by
    ``hc_huffman_decode_sum`` (a thread per chunk, decoding every payload in turn): for
    several payloads of few chunks, where a thread per chunk leaves the device idle, and a
    buffer (``npay`` rows of ``stride`` bytes) of at most ``SYMBOLS_MAX_BYTES``."""
    return (npay > 1 and chunks <= SYMBOLS_MAX_CHUNKS
            and npay * stride <= SYMBOLS_MAX_BYTES)


def _address(a) -> int:
    """A device array's address (a kernel's pointer argument inside a struct)."""
    return a.data.ptr


def _decode_plan(blob, secs, which: str, codes_seen: dict) -> list:
    """What the device needs to decode one payload: ``[(levels, chunks, any ZRH section,
    any Elias section, ZRH table entries, the quantizer's HC_FP_* number, log2 of QSGD's
    buckets or 0, exact top-k's raw flag, any SHS section, any RLH section), payload bytes,
    lengths, single,
    chunk_byte, chunk_bits, clog2, chunk_first, dtypes, scales (0 for a bucketed tensor),
    coders, ZRH parameters, ZRH code lengths, codes and singles (HC_ZRH_ROWS rows per
    tensor: runs, then levels), ZRH table offsets and widths, Elias layouts (1: gap), the
    bucket scales of all tensors one after another, where each tensor's start in them, SHS
    code lengths (2s + shs.MAX_RUN per tensor, none without SHS sections) and singles, RLH
    decoder records (``gpu_rlh.decoder``, HC_RLH_DEC ints per tensor), where each tensor's
    pairs start (and their end), the pairs]``
    (chunk_byte: each chunk's first byte in the payload). ``codes_seen`` caches parsed
    codebooks by their bytes (reused sections and other workers often repeat them)."""
    count = len(secs)
    s = secs[0].levels
    alphabet = 2 * s + 1
    lengths = np.zeros((count, alphabet), np.uint8)
    single = np.full(count, -1, np.int32)
    gaps = np.zeros(count, np.uint8)
    zper = NCTX * RUN_ALPHABET + NLCTX * 2 * s
    zpar = np.zeros((count, ZRH_PARAMS), np.int32)
    zlengths = np.zeros((count, zper), np.uint8)
    zcodes = np.zeros((count, zper), np.uint16)
    zsingles = np.full((count, ZRH_ROWS), -1, np.int32)
    zbits = np.zeros((count, ZRH_ROWS), np.int32)
    ids = []  # each section's HC_CODER_*
    huff, hcodes, zrows, ztabs, shs_rows = [], [], [], [], []  # sections by coder, their codes
    rdec, rpairs = np.zeros((count, gpu_rlh.DEC_INTS), np.int32), {}
    for t, sec in enumerate(secs):
        c = sec.coder
        key = (c, alphabet, sec.codebook)
        code = codes_seen.get(key)
        if code is None:
            code = codes_seen[key] = _parse_code(sec, which)
        ids.append(CODER_IDS[_KERNEL_CODER.get(c, c)])
        if c in ("huffman", "sh"):
            huff.append(t)
            hcodes.append(code)
        elif c == "zrh":
            zrows.append(t)
            ztabs.append(code[1])
        elif c == "shs":
            shs_rows.append((t, code))
        elif c == "rlh":
            rdec[t], rpairs[t] = code
        elif sec.gap_layout:  # Elias
            gaps[t] = 1
    coders_h = np.array(ids, np.uint8)
    if huff:  # (unpack refused an empty code for elements to decode, as for SHS below)
        lengths[huff] = [code.lengths for code in hcodes]
        single[huff] = [code.single for code in hcodes]
    if zrows:
        for dst, src in zip((zpar, zlengths, zcodes, zsingles, zbits), zip(*ztabs)):
            dst[zrows] = src
    # SHS's code lengths: only for a payload that has SHS sections (its tables are wide)
    slengths = np.zeros((count, shs.alphabet(s) if shs_rows else 0), np.uint8)
    ssingle = np.full(count, -1, np.int32)
    for t, code in shs_rows:  # (unpack refused an empty code for elements to decode)
        slengths[t], ssingle[t] = code.lengths, code.single
    # every chunk's first byte in the payload: one pass over all sections' chunk tables
    nchunks = np.array([sec.chunk_bits.size for sec in secs], np.int64)
    first = np.zeros(count + 1, np.int64)
    np.cumsum(nchunks, out=first[1:])
    chunk_bits = (np.concatenate([sec.chunk_bits for sec in secs]) if count
                  else np.zeros(0, np.int64)).astype(np.int64)
    ends = np.zeros(chunk_bits.size + 1, np.int64)
    np.cumsum((chunk_bits + 7) >> 3, out=ends[1:])  # each chunk's end, bytes from the first
    offsets = np.array([sec.offset for sec in secs], np.int64)
    if (offsets < 0).any() or not np.array_equal(ends[first[1:]] - ends[first[:-1]],
                                                 [len(sec.data) for sec in secs]):
        raise PayloadError(f"{which}: chunk table and data length disagree")
    chunk_byte = (ends[:-1] + np.repeat(offsets - ends[first[:-1]], nchunks)).astype(np.uint64)
    table_at = np.zeros(count * ZRH_ROWS + 1, np.int64)
    np.cumsum(1 << zbits.reshape(-1).astype(np.int64), out=table_at[1:])
    body = np.frombuffer(blob, np.uint8)[: secs[-1].offset + len(secs[-1].data) if secs else 0]
    blog2 = secs[0].bucket_log2 if secs else 0  # a payload's quantizer fields are shared
    bscales = [np.asarray(sec.scale, np.float32).reshape(-1) for sec in secs] if blog2 else []
    bfirst = np.zeros(count + 1, np.int64)
    if blog2:
        np.cumsum([b.size for b in bscales], out=bfirst[1:])
    pair_at = np.zeros(count + 1, np.int64)
    if rpairs:
        np.cumsum([rpairs[t].size if t in rpairs else 0 for t in range(count)],
                  out=pair_at[1:])
    return [(s, int(first[-1]), bool((coders_h == CODER_IDS["zrh"]).any()),
             bool(np.isin(coders_h, [CODER_IDS[c] for c in ELIAS]).any()), int(table_at[-1]),
             FP_IDS.get(secs[0].quantizer, 0) if secs else 0, blog2,
             bool(secs and secs[0].raw), bool((coders_h == CODER_IDS["shs"]).any()),
             bool((coders_h == CODER_IDS["rlh"]).any())),
            body, lengths.reshape(-1), single, chunk_byte,
            chunk_bits.astype(np.uint64), np.array([sec.chunk_log2 for sec in secs], np.int32),
            first, np.array([DTYPES[np.dtype(sec.dtype)] for sec in secs], np.int32),
            np.zeros(count, np.float32) if blog2 else np.array([sec.scale for sec in secs],
                                                               np.float32), coders_h,
            zpar.reshape(-1), zlengths.reshape(-1), zcodes.reshape(-1), zsingles.reshape(-1),
            table_at[:-1], zbits.reshape(-1), gaps,
            np.concatenate(bscales + [np.zeros(1, np.float32)]), bfirst, slengths.reshape(-1),
            ssingle, rdec.reshape(-1), pair_at,
            np.concatenate(list(rpairs.values()) + [np.zeros(1, np.int64)])]


def _parse_code(sec, which: str):
    """A section's codebook as the device decoder needs it: a huffman ``Code``; for ZRH
    (ZrhCode, (parameters, code lengths, canonical codes, singles, table widths) of its
    HC_ZRH_ROWS rows: ``coders.zrh.decoder_rows``); for RLH its decoder record and pairs
    (``gpu_rlh.decoder``)."""
    try:
        code = coders.section_code(sec)
    except PayloadError as e:
        raise PayloadError(f"{which}: {e}") from None
    if sec.coder == "rlh":
        return gpu_rlh.decoder(code, sec.levels)
    if sec.coder != "zrh":
        return code  # a huffman Code; None for Elias (no codebook)
    zpar = np.zeros(ZRH_PARAMS, np.int32)  # mode, context mode, the run contexts' Rice k
    zpar[0], zpar[1] = code.mode, code.ctxmode
    zpar[2: 2 + code.ks.size] = code.ks
    return code, (zpar,) + zrh.decoder_rows(code.rl, code.rs, code.ll, code.ls, NCTX, NLCTX)


# ---------------------------------------------------------------- profiling
class _Stages:
    """CUDA events between the stages of a call (``bench gpu``); nothing without a profile.
    ``mark(name)`` closes the stage ``name``; :meth:`add_to_profile` adds each stage's
    device milliseconds to the profile dict."""

    def __init__(self, profile: dict | None):
        self.profile, self.marks = profile, []

    def __call__(self, name: str) -> None:
        if self.profile is not None:
            import cupy

            ev = cupy.cuda.Event()
            ev.record()
            self.marks.append((name, ev))

    def add_to_profile(self) -> None:
        if self.profile is None or not self.marks:
            return
        import cupy

        self.marks[-1][1].synchronize()
        for (_, a), (name, b) in zip(self.marks, self.marks[1:]):
            self.profile[name] = (self.profile.get(name, 0.0)
                                  + cupy.cuda.get_elapsed_time(a, b))


# ---------------------------------------------------------------- small buffers
def _layout(specs) -> tuple[list[int], int]:
    """Byte offsets of arrays ``(count, dtype)`` placed one after another, 8-byte aligned,
    and the total size."""
    offs, pos = [], 0
    for n, dt in specs:
        offs.append(pos)
        pos += -(-int(n) * np.dtype(dt).itemsize // 8) * 8
    return offs, max(pos, 8)


def _carve(specs, buf=None):
    """Arrays ``(count, dtype)`` as views of one uint8 buffer: ``buf`` (host or device, laid
    out by :func:`_layout`) or a new zeroed device buffer (one allocation, one memset).
    Returns ``(buffer, views)``."""
    offs, size = _layout(specs)
    if buf is None:
        import cupy

        buf = cupy.zeros(size, cupy.uint8)
    return buf, [buf[o: o + int(n) * np.dtype(dt).itemsize].view(dt)
                 for o, (n, dt) in zip(offs, specs)]


def _upload(arrays, pinned_slot: int | None = None) -> list:
    """Host arrays as device arrays, in one copy (staged in page-locked memory with
    ``pinned_slot``, for large uploads)."""
    import cupy

    specs = [(a.size, a.dtype) for a in arrays]
    offs, size = _layout(specs)
    host = np.zeros(size, np.uint8) if pinned_slot is None else _pinned(size, pinned_slot)
    for o, a in zip(offs, arrays):
        host[o: o + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    dev = cupy.empty(size, cupy.uint8)
    dev.set(host)
    if pinned_slot is not None:  # the staging buffer is reused by the next call
        cupy.cuda.get_current_stream().synchronize()
    return _carve(specs, dev)[1]


_local = threading.local()


def _pinned(nbytes: int, slot: int) -> np.ndarray:
    """``nbytes`` of page-locked host memory (DMA at full link speed, where pageable memory
    is staged by the driver), reused per thread and slot; grows geometrically."""
    import cupy

    bufs = _local.__dict__.setdefault("pinned", {})
    arr = bufs.get(slot)
    if arr is None or arr.size < nbytes:
        cap = max(nbytes, 1 << 20, 0 if arr is None else arr.size * 3 // 2)
        arr = bufs[slot] = np.frombuffer(cupy.cuda.alloc_pinned_memory(cap), np.uint8, cap)
    return arr[:nbytes]
