"""The GPU backend's CUDA sources, checked on machines without a GPU.

* every ``cuda/*.cu`` compiles with nvcc for sm_75 and sm_90 (a syntax or type error, or an
  instruction the oldest architecture CUDA 13 builds for lacks, fails CI), its kernels
  without register spills or more than STACK_MAX bytes of stack a thread;
* the per-element logic the kernels share (``cuda/common.cuh``: generator, stochastic
  rounding, scales, codebook construction, the huffman chunk layout and its decoder) is built
  for the host (``tests/cuda_host_check.cu``, g++) and compared with the CPU backend byte for
  byte on real-looking and adversarial inputs.
"""
import ctypes
import math
import re
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import (codebook, exchange, float_quantizer, gennorm, gpu_backend, payload,
                              quantizers)
from horovod_huffcomp.codebook import Code
from horovod_huffcomp.coders import symbol
from horovod_huffcomp.coders.chunks import byte_offsets
from horovod_huffcomp.payload import MAX_CODE_LEN, Reader
from horovod_huffcomp.quantizers import quantize

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "cuda").glob("*.cu"))
STACK_MAX = 1024  # bytes of stack a kernel thread may keep
NVCC = shutil.which("nvcc") or (shutil.which("nvcc", path="/usr/local/cuda/bin"))
CXX = shutil.which("g++") or shutil.which("c++")


def test_sources_exist():
    names = {p.stem for p in SOURCES}
    assert set(gpu_backend.STAGES) == names
    assert (ROOT / "cuda" / "common.cuh").exists()


def test_sizes_match_the_launches():
    """The kernels size their per-warp shared buffers for the block size gpu_backend launches;
    gpu_backend sizes the primary decode tables as common.cuh fills them, and lays out the
    ZRH tables and histograms as zrh.cu reads them, with the CPU coder's constants."""
    import re

    from horovod_huffcomp import gpu_backend, payload
    from horovod_huffcomp.coders import chunks, elias, shs, zrh

    src = "".join((ROOT / "cuda" / f).read_text()
                  for f in ("common.cuh", "zrh.cu", "huffman.cu", "elias.cu", "codebook.cu"))

    def define(name):
        return int(re.search(rf"#define {name} (\d+)", src).group(1))

    assert define("HC_THREADS") == gpu_backend.THREADS
    assert define("HC_DEC_INTS") == gpu_backend.DEC_INTS
    # a record's sorted symbols (uint16) fit after its limits, for SHS's largest alphabet
    sorted_ints = -(-2 * shs.alphabet(payload.MAX_LEVELS) // 4)
    assert define("HC_DEC_LIM") + 32 + sorted_ints <= gpu_backend.DEC_INTS
    assert define("HC_DS_THREADS") == gpu_backend.DS_THREADS
    assert define("HC_ZRH_PARAMS") == gpu_backend.ZRH_PARAMS
    assert define("HC_LIST_BLOCK") == gpu_backend.LIST_BLOCK
    assert gpu_backend.LIST_BLOCK <= 1 << payload.CHUNK_LOG2_MIN  # chunks are whole blocks
    assert ((define("HC_LIST_NONZERO"), define("HC_LIST_RUN_END"))
            == (gpu_backend.LIST_NONZERO, gpu_backend.LIST_RUN_END))
    assert define("HC_CODER_HUFFMAN") == gpu_backend.CODER_IDS["huffman"]
    assert define("HC_CODER_ZRH") == gpu_backend.CODER_IDS["zrh"]
    assert define("HC_CODER_SHS") == gpu_backend.CODER_IDS["shs"]
    assert define("HC_SHS_MAX_RUN") == shs.MAX_RUN
    assert define("HC_CODE_THREADS") == gpu_backend.CODE_THREADS
    for name in gpu_backend.ELIAS:  # HC_CODER_ELIAS_GAMMA + HC_ELIAS_GAMMA / DELTA / OMEGA
        kind = define(f"HC_{name.upper().replace('-', '_')}")
        assert define("HC_CODER_ELIAS_GAMMA") + kind == gpu_backend.CODER_IDS[name]
        assert kind == elias.KINDS[name] == gpu_backend.ELIAS.index(name)
    for name, fmt in gpu_backend.FP_IDS.items():  # HC_FP_FP4 ...: the float formats' numbers
        assert define(f"HC_FP_{name.upper().replace('-', '_')}") == fmt > define("HC_FP_LINEAR")
    assert set(gpu_backend.FP_IDS) == set(payload.FP_FORMATS)
    assert define("HC_RAW_BITS") == payload.RAW_BITS  # exact top-k's magnitudes
    assert define("HC_RUN_DIRECT") == chunks.RUN_DIRECT
    assert define("HC_RUN_ALPHABET") == chunks.RUN_ALPHABET
    assert define("HC_RICE_MAX_K") == chunks.RICE_MAX_K
    assert (define("HC_ZRH_NCTX"), define("HC_ZRH_NLCTX")) == (zrh.NCTX, zrh.NLCTX)
    assert define("HC_ZRH_RICE") == zrh.MODE_RICE
    assert define("HC_ZRH_CTX_SIGN") == zrh.CTX_SIGN


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed: cannot compile cuda/*.cu")
@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])  # the oldest CUDA 13 builds for; H100
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_compiles(source, arch, tmp_path):
    """... and no kernel spills registers or keeps more than STACK_MAX bytes of stack: CUDA
    reserves the largest stack of the kernels run for every thread the device can hold
    (2048 x 132 on an H100: hc_build_codes' 11 KB of local work arrays took 3 GB)."""
    r = subprocess.run([NVCC, f"-arch={arch}", "--fmad=false", "-std=c++17", "-cubin",
                        "-Werror", "all-warnings", "-Xptxas", "-v",
                        "-o", str(tmp_path / "k.cubin"), str(source)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    frames = re.findall(r"Compiling entry function '(\w+)'.*?(\d+) bytes stack frame, "
                        r"(\d+) bytes spill stores", r.stdout + r.stderr, re.S)
    assert frames, r.stdout + r.stderr
    for name, stack, spills in frames:
        assert int(stack) <= STACK_MAX and int(spills) == 0, (name, stack, spills)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler for the host build of cuda/common.cuh")
    out = tmp_path_factory.mktemp("cuda_host") / "libhc_check.so"
    r = subprocess.run([CXX, "-x", "c++", "-std=c++17", "-O2", "-shared", "-fPIC",
                        "-ffp-contract=off", "-Wall", "-Werror", "-o", str(out),
                        str(ROOT / "tests" / "cuda_host_check.cu")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    L = ctypes.CDLL(str(out))
    P = ctypes.c_void_p
    L.hc_check_round.argtypes = [P, ctypes.c_longlong, ctypes.c_int, ctypes.c_double,
                                 ctypes.c_ulonglong, ctypes.c_ulonglong, P]
    L.hc_check_scale.argtypes = [P, ctypes.c_longlong, ctypes.c_int]
    L.hc_check_scale.restype = ctypes.c_float
    L.hc_check_code.argtypes = [P, ctypes.c_int, P, P, P]
    L.hc_check_code.restype = ctypes.c_ulonglong
    L.hc_check_fp_quantize.argtypes = [P, ctypes.c_longlong, ctypes.c_double, ctypes.c_int,
                                       ctypes.c_int, P]
    L.hc_check_fp_max_scale.argtypes = [ctypes.c_double, ctypes.c_int, ctypes.c_int]
    L.hc_check_fp_max_scale.restype = ctypes.c_float
    L.hc_check_moments.argtypes = [P, ctypes.c_longlong, ctypes.c_double, P]
    L.hc_check_sample_counts.argtypes = [P, ctypes.c_longlong, ctypes.c_int, ctypes.c_ulonglong,
                                         P]
    L.hc_check_topk.argtypes = [P, ctypes.c_longlong, ctypes.c_int, ctypes.c_longlong,
                                ctypes.c_int, ctypes.c_double, ctypes.c_ulonglong,
                                ctypes.c_ulonglong, P, P, P, P]
    L.hc_check_huffman_encode.argtypes = [P, ctypes.c_longlong, ctypes.c_int, ctypes.c_int, P,
                                          P, P, ctypes.c_int, P, P]
    L.hc_check_huffman_encode.restype = ctypes.c_longlong
    L.hc_check_half.argtypes = [P, ctypes.c_longlong, P]
    L.hc_check_round_half.argtypes = [P, ctypes.c_longlong, P]
    L.hc_check_huffman_decode.argtypes = [P, ctypes.c_ulonglong, P, ctypes.c_longlong,
                                          ctypes.c_int, ctypes.c_int, P, ctypes.c_int,
                                          ctypes.c_int, P]
    L.hc_check_zrh_encode.argtypes = [P, ctypes.c_longlong, ctypes.c_int, ctypes.c_int, P, P,
                                      P, P, P, P]
    L.hc_check_zrh_encode.restype = ctypes.c_longlong
    L.hc_check_zrh_decode.argtypes = [P, ctypes.c_ulonglong, P, ctypes.c_longlong, ctypes.c_int,
                                      ctypes.c_int, P, P, P, P, P]
    i32 = ctypes.c_int
    L.hc_check_huffman_decoders.argtypes = [i32, P, P, i32, i32, P, P, P, P, P]
    L.hc_check_decode_sum.argtypes = [ctypes.c_longlong, P, i32, P, P, P, i32, i32, P, P, P, P,
                                      P, i32, P, P]
    i64 = ctypes.c_longlong
    L.hc_check_decode_symbols.argtypes = [i64, P, i32, P, P, P, i32, P, P, P, i64, P, P]
    L.hc_check_sum_symbols.argtypes = [i64, P, i32, i64, P, P, P, P, i32, P, i32, P]
    L.hc_check_elias_encode.argtypes = [P, i64, i32, i32, i32, P, P, P]
    L.hc_check_elias_encode.restype = i64
    L.hc_check_elias_decode.argtypes = [P, ctypes.c_ulonglong, P, i64, i32, i32, i32, i32, P, P]
    L.hc_check_elias_decode_launch.argtypes = [i64, P, ctypes.c_ulonglong, P, P, P, P, P, i32,
                                               i32, P, P, P, P, P, P]
    L.hc_check_add_states.argtypes = [i64, P, P, P, P, P, i32, P, i32]
    L.hc_check_add_buckets.argtypes = [i64, P, P, P, P, P, P, P, P, i32, i32, P, P, i32]
    L.hc_check_huffman_decode_raw.argtypes = [i64, P, ctypes.c_ulonglong, P, P, P, P, P, i32,
                                              i32, P, P, P, P, P, P]
    L.hc_check_add_raw_states.argtypes = [i64, P, P, P, P, P, P, P, i32]
    L.hc_check_shs_code.argtypes = [P, i32, P, P]
    L.hc_check_shs_encode.argtypes = [P, i64, i32, i32, P, P, P, P]
    L.hc_check_shs_encode.restype = i64
    L.hc_check_shs_decoders.argtypes = [i64, P, P, i32, P, P, i32]
    L.hc_check_shs_decode_launch.argtypes = [i64, P, ctypes.c_ulonglong, P, P, P, P, P, i32,
                                             i32, P, P, P, P, P, P]
    L.hc_check_rlh_decode_launch.argtypes = [i64, P, ctypes.c_ulonglong, P, P, P, P, P, i32,
                                             i32, P, P, P, P, P, P, P, P]
    return L


def ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def gradient_like(rng, n, dtype):
    """Heavy-tailed values with exact zeros, like a gradient."""
    x = rng.standard_t(3, n) * 10.0 ** rng.uniform(-4, 0)
    x[rng.random(n) < 0.2] = 0
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("norm,levels", [("max", 1), ("max", 16), ("l2", 4), ("max", 127)])
def test_scale_and_rounding_match_cpu(lib, dtype, norm, levels):
    rng = np.random.default_rng(levels)
    for n in (1, 7, 4097, 100_000):
        x = gradient_like(rng, n, dtype)
        seed = int(rng.integers(0, 2**63))
        q = quantize(x, "qsgd", levels, norm, seed, stream=3)
        wide = x.astype(np.float64)
        scale = lib.hc_check_scale(ptr(wide), n, int(norm == "l2"))
        assert np.float32(scale) == np.float32(q.scale)
        out = np.zeros(n, np.int8)
        lib.hc_check_round(ptr(wide), n, levels, float(q.scale), seed, 3, ptr(out))
        assert np.array_equal(out, q.states[:n])


def format_edges(q: str) -> np.ndarray:
    """|x| / scale values where a float format's rounding decides: every code's value, the
    midpoints between neighbours (ties to even) and their float64 neighbours, past the
    largest value, and 0."""
    v = float_quantizer.values(q)
    mids = (v[:-1] + v[1:]) / 2
    edges = np.concatenate([v, mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf),
                            v * 1.25, [v[-1] * 2, v[1] / 3, 0.0]])
    return np.concatenate([edges, -edges])


@pytest.mark.parametrize("q", sorted(gpu_backend.FP_IDS))
def test_float_formats_match_cpu(lib, q):
    """CO3's float formats per element (quantize.cu's hc_quantize_fp, hc_scales and
    hc_moments through common.cuh): the CPU's codes at every tie and saturation and on
    gradients of every dtype, the CPU's max-norm scale, GenNorm moments' integer sums and
    the dequantized value of every state (hc_state_value through the decoders' host build)
    in every dtype, a NaN scale included."""
    fmt, s = gpu_backend.FP_IDS[q], payload.fp_levels(q)
    rng = np.random.default_rng(fmt)
    scale = 0.375
    x = format_edges(q) * scale
    want = np.zeros(x.size, np.int8)
    float_quantizer.quantize_into(x, q, scale, want)
    got = np.zeros(x.size, np.int8)
    lib.hc_check_fp_quantize(ptr(x), x.size, scale, fmt, s, ptr(got))
    assert np.array_equal(got, want)
    assert len(set(np.abs(want))) == s + 1  # every code reached
    for dtype in (np.float16, np.float32, np.float64):
        for n in (1, 9, 50_000):
            x = gradient_like(rng, n, dtype)
            x[0] = 1e-3  # not all zero
            wide = x.astype(np.float64)
            m = float(np.abs(wide).max())
            for norm in ("max", "gennorm") if q == "fp4" else ("max",):
                qz = quantize(x, q, None, norm, 0)
                if norm == "max":
                    assert lib.hc_check_fp_max_scale(m, fmt, s) == np.float32(qz.scale)
                got = np.zeros(n, np.int8)
                lib.hc_check_fp_quantize(ptr(wide), n, float(qz.scale), fmt, s, ptr(got))
                assert np.array_equal(got, qz.states[:n])
            sums = np.zeros(4, np.uint64)
            lib.hc_check_moments(ptr(wide), n, m, ptr(sums))
            assert tuple(int(v) for v in sums) == gennorm.abs_moments_ints(
                x.astype(np.float32) if dtype == np.float16 else x, m)
    states = np.arange(-s, s + 1, dtype=np.int8)
    for scale in (0.375, 3e-5, 2.5e38, np.nan):
        for dtype, code in ((np.float16, 1), (np.float32, 2), (np.float64, 3)):
            values = np.zeros(2 * s + 1)
            lib.hc_check_huffman_decoders(1, ptr(np.zeros(2 * s + 1, np.uint8)),
                                          ptr(np.full(1, -1, np.int32)), 2 * s + 1, fmt,
                                          ptr(np.zeros(1, np.uint8)),
                                          ptr(np.array([scale], np.float32)),
                                          ptr(np.array([code], np.int32)),
                                          ptr(np.zeros(gpu_backend.DEC_INTS, np.int32)),
                                          ptr(values))
            want = float_quantizer.dequantize(states, q, float(np.float32(scale)), dtype)
            if np.isnan(scale):
                want = quantizers.dequantize(states, s, float("nan"), None, dtype, q)
            assert np.array_equal(values.astype(dtype), want, equal_nan=True), (scale, dtype)
            assert np.array_equal(values, want.astype(np.float64), equal_nan=True)


def test_sample_counts_match_cpu(lib):
    """SH's sampled counts (histogram.cu hc_sample_counts' per-sample logic): the CPU's, for
    sizes from 1 (every sample at position 0) to past 2^24, seeds near 0 and 2^63."""
    rng = np.random.default_rng(8)
    for n in (0, 1, 2, 7, 1000, 100_003, (1 << 24) + 5):
        states = rng.integers(-8, 9, n).astype(np.int8)
        for seed in (0, 1, 12345, 2**63 - 1):
            got = np.zeros(17, np.uint64)
            lib.hc_check_sample_counts(ptr(states), n, 8, seed, ptr(got))
            assert np.array_equal(got, symbol.sample_counts(states, n, 8, seed)), (n, seed)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_topk_matches_cpu(lib, dtype):
    """Top-k (quantize.cu's radix select, tie ranking and rounding through common.cuh,
    passes run in turn on the host): the CPU's states and threshold on gradients with exact
    zeros, many ties (a few distinct values), all-equal and all-zero tensors, ratios from one
    entry to all, for every dtype's keys; exact top-k (levels 0) its signs and raw float32
    magnitudes too, and a NaN tensor's (scale NaN: none kept)."""
    rng = np.random.default_rng(9)
    cases = [gradient_like(rng, 5000, dtype), gradient_like(rng, 1, dtype),
             rng.choice([-2.0, -0.5, 0.0, 0.5, 1.0, 2.0], 3000).astype(dtype),
             np.full(700, 0.25, dtype), np.zeros(300, dtype), -np.ones(9, dtype)]
    for x in cases:
        n = x.size
        for ratio in (1e-4, 0.01, 0.3, 0.5, 1.0):
            k = min(math.ceil(ratio * n), n)
            for s in (0, 1, 8):
                q = quantize(x, "topk", s, None, 11, stream=2, ratio=ratio)
                ax = np.abs(x.astype(np.float32) if dtype == np.float16 else x)
                t = np.partition(ax, n - k)[n - k]
                keep = quantizers.topk_mask(ax, k)
                out = np.zeros(n, np.int8)
                raw = np.zeros(n, np.uint32)
                th, need = np.zeros(1, np.uint64), np.zeros(1, np.int64)
                lib.hc_check_topk(ptr(x.astype(np.float64)), n, int(dtype == np.float64), k, s,
                                  float(q.scale), 11, 2, ptr(out), ptr(raw), ptr(th),
                                  ptr(need))
                assert th[0] == ax.dtype.type(t).view(
                    np.uint64 if dtype == np.float64 else np.uint32), (n, ratio)
                assert int(need[0]) == k - int((ax > t).sum())
                assert int(((out != 0) & ~keep).sum()) == 0
                assert np.array_equal(out, q.states[:n]), (n, ratio, s)
                assert (q.raw is not None) == (s == 0)
                if s == 0:
                    assert np.array_equal(raw, q.raw), (n, ratio)
                    assert q.raw[keep].size == 0 or (q.raw[keep] > 0).all() or t == 0
    x = np.array([1.0, np.nan, -2.0], dtype)  # nonfinite="propagate": NaN scale, none kept
    q = quantize(x, "topk", 0, None, 11, ratio=1.0, nonfinite="propagate")
    out, raw = np.full(3, 5, np.int8), np.zeros(3, np.uint32)
    th, need = np.zeros(1, np.uint64), np.zeros(1, np.int64)
    lib.hc_check_topk(ptr(x.astype(np.float64)), 3, int(dtype == np.float64), 3, 0,
                      float(q.scale), 11, 0, ptr(out), ptr(raw), ptr(th), ptr(need))
    assert np.array_equal(out, q.states[:3]) and not out.any() and not raw.any()
    if dtype == np.float64:  # a scale past float32's range (Inf on the device): none kept
        x = np.array([1e39, -2.0, 3.0])
        q = quantize(x, "topk", 0, None, 11, ratio=1.0, nonfinite="propagate")
        assert np.isnan(q.scale) and not q.states.any()
        lib.hc_check_topk(ptr(x), 3, 1, 3, 0, float("inf"), 11, 0, ptr(out), ptr(raw),
                          ptr(th), ptr(need))
        assert not out.any()


def test_float16_conversions_match_numpy(lib):
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = np.zeros(bits.size, np.float32)
    lib.hc_check_half(ptr(bits), bits.size, ptr(got))
    want = bits.view(np.float16).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # NaN payloads too
    rng = np.random.default_rng(0)
    halves = np.unique(want[np.isfinite(want)].astype(np.float64))
    ties = halves[:-1] + np.diff(halves) / 2  # exactly halfway: ties to even
    v = np.concatenate([halves, ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf),
                        rng.standard_normal(100_000) * 10.0 ** rng.uniform(-9, 5, 100_000),
                        [65504.0, 65519.99, 65520.0, 1e300, -1e300, 2.0**-25, 2.0**-26,
                         3 * 2.0**-26, np.inf, -np.inf, np.nan, -0.0]])
    got = np.zeros(v.size)
    lib.hc_check_round_half(ptr(v), v.size, ptr(got))
    with np.errstate(over="ignore"):
        want = v.astype(np.float16).astype(np.float64)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def cpu_code(counts):
    counts = np.asarray(counts, np.int64)
    lengths = codebook.huffman_lengths(counts, MAX_CODE_LEN)
    return lengths, codebook.canonical_codes(lengths)


def host_code(lib, counts):
    """hc_build_codes' per-tensor logic (common.cuh hc_states_code): lengths, codes, the
    single used symbol (-1 for none or several) and the bits of the counted states."""
    counts = np.ascontiguousarray(counts, np.uint64)
    lengths = np.zeros(counts.size, np.uint8)
    codes = np.zeros(counts.size, np.uint16)
    single = np.zeros(1, np.int32)
    bits = lib.hc_check_code(ptr(counts), counts.size, ptr(lengths), ptr(codes), ptr(single))
    return lengths, codes, int(single[0]), bits


def test_codebook_matches_cpu(lib):
    rng = np.random.default_rng(0)
    cases = [[0] * 9, [5] + [0] * 8, [1, 1], [3, 3, 3, 3, 3],
             [int(v) for v in np.round(1.618 ** np.arange(40))],  # depth 39: length limiting
             [1] * 255, [2**40, 1, 1, 7] + [0] * 251]
    for _ in range(300):
        alphabet = int(rng.choice([3, 9, 33, 129, 255]))
        c = rng.geometric(rng.uniform(0.05, 0.9), alphabet) ** int(rng.integers(1, 4))
        c[rng.random(alphabet) < 0.3] = 0
        cases.append(c)
    for counts in cases:
        want_len, want_codes = cpu_code(counts)
        got_len, got_codes, single, bits = host_code(lib, counts)
        assert np.array_equal(got_len, want_len), counts
        assert np.array_equal(got_codes, want_codes), counts
        used = np.flatnonzero(counts)
        assert single == (used[0] if used.size == 1 else -1), counts
        assert bits == int(np.dot(np.asarray(counts, object), want_len.astype(object))), counts


def sections(blob):
    return payload.unpack(blob)[1]


def verdicts_differ(err, cpu_err, states, cpu) -> bool:
    """A device decoder's host build and the CPU decoder disagree: one fails and the other
    not, or both pass with different states."""
    return (err != 0) != (cpu_err != 0) or (err == 0 and not np.array_equal(states, cpu))


@pytest.mark.parametrize("wide", [0, 1], ids=["state-a-lane", "four-a-lane"])
@pytest.mark.parametrize("levels,norm", [(1, "l2"), (4, "max"), (16, "l2"), (127, "max")])
def test_huffman_layout_matches_cpu(lib, levels, norm, wide):
    """The huffman writers' placement (hc_huffman_write, hc_huffman_write4 with `wide`) and
    chunk bits give the CPU's section; the device decoder reads it back."""
    rng = np.random.default_rng(levels)
    for n, clog2 in ((1, None), (3, 8), (4097, None), (50_000, 8), (200_000, None)):
        x = gradient_like(rng, n, np.float32)
        blob = hc.encode(x, "qsgd", "huffman", levels, norm, seed=5, chunk_log2=clog2)
        (sec,) = sections(blob)
        code = Code.parse(Reader(sec.codebook), 2 * levels + 1, "code")
        q = quantize(x, "qsgd", levels, norm, 5)
        lengths = code.lengths.astype(np.uint8)
        codes = code.codes.astype(np.uint16)
        chunk_bits = np.zeros(sec.num_chunks, np.uint64)
        out = np.zeros(len(sec.data) + 16, np.uint8)
        nbytes = lib.hc_check_huffman_encode(ptr(q.states), n, levels, sec.chunk_log2,
                                             ptr(lengths), ptr(codes), None, wide,
                                             ptr(chunk_bits), ptr(out))
        assert np.array_equal(chunk_bits, sec.chunk_bits.astype(np.uint64))
        assert bytes(out[:nbytes]) == bytes(sec.data)
        data = np.frombuffer(bytes(sec.data), np.uint8).copy()
        for tile in (32, 5):  # the device decodes 32 elements per payload, then resumes
            states = np.zeros(max(n, 1), np.int8)
            err = lib.hc_check_huffman_decode(ptr(data), data.size, ptr(chunk_bits), n, levels,
                                              sec.chunk_log2, ptr(lengths), code.single, tile,
                                              ptr(states))
            assert err == 0 and np.array_equal(states[:n], q.states[:n])


def test_huffman_decoder_rejects_what_the_cpu_rejects(lib):
    """Bit flips in the data: the host build of the GPU decoder fails exactly when the CPU
    decoder does (a complete code decodes any bits, so only chunk lengths can betray a flip)
    and never reads outside the buffer (bytes past the end read as zero)."""
    rng = np.random.default_rng(1)
    x = gradient_like(rng, 3000, np.float32)
    blob = hc.encode(x, "qsgd", "huffman", 8, "max", seed=2, chunk_log2=8)
    (sec,) = sections(blob)
    code = Code.parse(Reader(sec.codebook), 17, "code")
    lengths = code.lengths.astype(np.uint8)
    chunk_bits = sec.chunk_bits.astype(np.uint64)
    disagreements = rejected = 0
    for _ in range(400):
        data = np.frombuffer(bytes(sec.data), np.uint8).copy()
        for _ in range(int(rng.integers(1, 4))):
            data[rng.integers(data.size)] ^= np.uint8(1 << int(rng.integers(8)))
        states = np.zeros(3000, np.int8)
        err = lib.hc_check_huffman_decode(ptr(data), data.size, ptr(chunk_bits), 3000, 8,
                                          sec.chunk_log2, ptr(lengths), -1, 32,
                                          ptr(states))
        cpu = np.zeros(3000, np.int8)
        cpu_err = symbol.decode(data, sec.chunk_bits, 3000, sec.chunk_log2, 8, code, cpu,
                                np.zeros(0, np.uint32))
        disagreements += verdicts_differ(err, cpu_err, states, cpu)
        rejected += err != 0
    assert disagreements == 0 and rejected > 100


def test_huffman_decoder_long_codewords(lib):
    """Codes with codewords up to 15 bits (the decoder's canonical path past its 10-bit
    primary table): random symbols written by the host writer, read back exactly for any
    resume point, and the same bits the CPU writer gives."""
    from horovod_huffcomp.coders import symbol

    rng = np.random.default_rng(11)
    s = 40
    fib = [1, 1]
    while len(fib) < 2 * s + 1:
        fib.append(fib[-1] + fib[-2])
    for trial in range(6):
        counts = np.array(fib, np.int64)[rng.permutation(2 * s + 1)]
        counts[rng.random(2 * s + 1) < 0.1 * trial] = 0
        counts[rng.integers(2 * s + 1)] += 1
        code = Code.from_counts(counts)
        lengths, codes = code.lengths.astype(np.uint8), code.codes.astype(np.uint16)
        assert trial > 0 or lengths.max() == 15
        used = np.flatnonzero(lengths)
        n = 3000
        states = (rng.choice(used, n) - s).astype(np.int8)
        written = []
        for wide in (0, 1):  # a codeword a lane; four a lane, fields of up to 60 bits
            chunk_bits = np.zeros(-(-n // 256), np.uint64)
            out = np.zeros(n * 2 + 16, np.uint8)
            nbytes = lib.hc_check_huffman_encode(ptr(states), n, s, 8, ptr(lengths),
                                                 ptr(codes), None, wide, ptr(chunk_bits),
                                                 ptr(out))
            written.append((chunk_bits.tolist(), out[:nbytes].tobytes()))
        assert written[0] == written[1]
        data = out[:nbytes].copy()
        for tile in (1, 7, 32, 256):
            got = np.zeros(n, np.int8)
            err = lib.hc_check_huffman_decode(ptr(data), data.size, ptr(chunk_bits), n, s, 8,
                                              ptr(lengths), -1, tile, ptr(got))
            assert err == 0 and np.array_equal(got, states)
        cpu = np.zeros(n, np.int8)
        assert symbol.decode(data, chunk_bits, n, 8, s, code, cpu, np.zeros(0, np.uint32)) == 0
        assert np.array_equal(cpu, states)


@pytest.fixture(params=["tiles", "symbols"])
def host_launches(lib, monkeypatch, request):
    """gpu_backend's decode-and-sum with CuPy replaced by NumPy and the launches of the
    huffman decode kernels by their host builds (tests/cuda_host_check.cu: the kernels'
    per-lane code from common.cuh, the warps' lanes run one after another): the host side,
    the kernels' indexing and the fused / per-payload split checked without a GPU, for both
    ways of summing the fused tensors (gpu_backend._by_symbols). Huffman, SHS and Elias
    payloads (the ZRH kernels are checked on a GPU)."""
    import sys

    from horovod_huffcomp import gpu_backend

    fake = types.ModuleType("cupy")
    fake.empty, fake.zeros, fake.asarray, fake.asnumpy = np.empty, np.zeros, np.asarray, np.asarray
    for name in ("float64", "int32", "uint64", "uint32", "uint8", "int8"):
        setattr(fake, name, getattr(np, name))
    monkeypatch.setitem(sys.modules, "cupy", fake)

    def upload(arrays, pinned_slot=None):
        specs = [(a.size, a.dtype) for a in arrays]
        offs, size = gpu_backend._layout(specs)
        host = np.full(size, 0xA5, np.uint8)  # poisoned: only what is copied may be read
        for o, a in zip(offs, arrays):
            host[o: o + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        return gpu_backend._carve(specs, host)[1]

    def launch(fn, first):
        def run(grid, block, args):
            fn(first(grid, block), *[a.ctypes.data if isinstance(a, np.ndarray) else int(a)
                                     for a in args])
        return run

    def threads(g, b):  # a kernel whose host build runs thread by thread
        return g[0] * b[0]

    def per_tensor(fn, axis):  # a host build that also takes the grid's tensor count
        return lambda grid, block, args: launch(fn, lambda g, b: 0)(grid, block,
                                                                    args + (grid[axis],))

    kernels = {"hc_huffman_decoders": launch(lib.hc_check_huffman_decoders, lambda g, b: g[0]),
               "hc_huffman_decode_sum": launch(lib.hc_check_decode_sum, threads),
               "hc_huffman_decode_symbols": launch(lib.hc_check_decode_symbols, threads),
               "hc_sum_symbols": launch(lib.hc_check_sum_symbols, threads),
               "hc_elias_decode": launch(lib.hc_check_elias_decode_launch, threads),
               "hc_add_states": per_tensor(lib.hc_check_add_states, 1),
               "hc_add_buckets": per_tensor(lib.hc_check_add_buckets, 1),
               "hc_huffman_decode_raw": launch(lib.hc_check_huffman_decode_raw, threads),
               "hc_add_raw_states": per_tensor(lib.hc_check_add_raw_states, 1),
               "hc_shs_decoders": per_tensor(lib.hc_check_shs_decoders, 0),
               "hc_shs_decode": launch(lib.hc_check_shs_decode_launch, threads),
               "hc_rlh_decode": launch(lib.hc_check_rlh_decode_launch, threads)}
    launched = []

    def kernel(stage, name):
        launched.append(name)
        return kernels[name]

    monkeypatch.setattr(gpu_backend, "SYMBOLS_MAX_CHUNKS",
                        0 if request.param == "tiles" else 1 << 40)
    monkeypatch.setattr(gpu_backend, "launched", launched, raising=False)
    monkeypatch.setattr(gpu_backend, "_upload", upload)
    monkeypatch.setattr(gpu_backend, "_address", lambda a: a.ctypes.data)
    monkeypatch.setattr(gpu_backend, "kernel", kernel)
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE", set())
    return gpu_backend


@pytest.mark.parametrize("levels,norm", [(8, "max"), (127, "max"), (1, "l2")])
def test_decode_sum_kernels_on_the_host(host_launches, levels, norm):
    """Payloads of 5 workers summed as exchange.reduce_mean sums them: all fused (the same
    chunks everywhere, 1-element to multi-tile chunks, float16/32/64), and mixed (a sparse
    tensor whose chunk size differs between workers, a worker with its own chunk size:
    those tensors decoded payload by payload, added into the accumulator)."""
    rng = np.random.default_rng(levels)
    shapes = [(), (1,), (300, 7), (9000,), (30_000,)]
    dtypes = [np.float32, np.float16, np.float64, np.float32, np.float32]
    blobs = {}
    for r in range(5):
        xs = [gradient_like(rng, int(np.prod(sh)), dt).reshape(sh)
              for sh, dt in zip(shapes, dtypes)]
        xs[4][rng.random(30_000) < (0.999 if r % 2 else 0.5)] = 0  # chunk size from density
        blobs[r] = hc.encode_many(xs, "qsgd", "huffman", levels, norm, seed=r)
        blobs[r, "own"] = hc.encode_many(xs, "qsgd", "huffman", levels, norm, seed=r,
                                         chunk_log2=8)
    assert len({sections(blobs[r])[4].chunk_log2 for r in range(5)}) == 2
    cases = [[blobs[r] for r in range(5)], [blobs[0], blobs[1, "own"], blobs[2]],
             [blobs[0], blobs[2]], [blobs[3]]]
    for case in cases:
        host_launches.launched.clear()
        got = host_launches.decode_sum(case, bundle=True)
        fused = any(len({sections(b)[t].chunk_log2 for b in case}) == 1
                    for t in range(len(shapes)))  # chunk sizes follow each worker's density
        assert (("hc_huffman_decode_symbols" in host_launches.launched)
                == (host_launches.SYMBOLS_MAX_CHUNKS > 0 and len(case) > 1 and fused))
        for t, want in enumerate(cpu_sums(case)):
            assert got[t].shape == shapes[t]
            assert np.array_equal(got[t], want), (t, len(case))


def cpu_sums(blobs) -> list:
    """The host's float64 rank-order sum of the payloads' decoded tensors (what a
    decode-and-sum must give)."""
    per_rank = [hc.decode_many(b) for b in blobs]
    return [exchange.reduce_mean(list(parts), average=False) for parts in zip(*per_rank)]


def assert_sums_as_on_the_cpu(host_launches, blobs, kernel: str, context,
                              equal_nan: bool = False) -> list:
    """The host builds' decode-and-sum of ``blobs`` launches ``kernel`` and gives
    :func:`cpu_sums`' values, tensor by tensor; returns the sums."""
    host_launches.launched.clear()
    got = host_launches.decode_sum(blobs, bundle=True)
    assert kernel in host_launches.launched, context
    for t, want in enumerate(cpu_sums(blobs)):
        assert np.array_equal(got[t], want, equal_nan=equal_nan), (context, t)
    return got


def three_workers(rng) -> list:
    """Three workers' gradients of one model: a float32 scalar, a float16 300 x 7 matrix, a
    float64 and a float32 vector (9,000 and 30,000 elements)."""
    shapes = [(), (300, 7), (9000,), (30_000,)]
    dtypes = [np.float32, np.float16, np.float64, np.float32]
    return [[gradient_like(rng, int(np.prod(sh)), dt).reshape(sh)
             for sh, dt in zip(shapes, dtypes)] for _ in range(3)]


def rejected_as_on_the_cpu(host_launches, blobs, bad, rng, coder) -> bool:
    """Payload ``bad`` of ``blobs`` with one bit of a random section's coded data flipped
    (checksum fixed), decoded and summed among the others: rejected, naming that payload and
    its coder, exactly when the CPU rejects it, else the CPU's sums. Whether it was."""
    is_bundle, secs = payload.unpack(blobs[bad])
    t = int(rng.choice([k for k, sec in enumerate(secs) if len(sec.data)]))
    data = bytearray(secs[t].data)
    data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    blobs = list(blobs)
    blobs[bad] = payload.pack([payload.Section(**{**sec.__dict__, "data": bytes(data)})
                               if k == t else sec for k, sec in enumerate(secs)],
                              bundle=is_bundle)
    try:
        want = cpu_sums(blobs)
    except hc.PayloadError:
        with pytest.raises(hc.PayloadError, match=f"^payload {bad}: {coder} data"):
            host_launches.decode_sum(blobs, bundle=True)
        return True
    got = host_launches.decode_sum(blobs, bundle=True)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, want))
    return False


def test_decode_sum_kernels_reject_what_the_cpu_rejects(host_launches):
    """One corrupted payload among three, fused: rejected exactly when the CPU rejects it,
    named in the error; accepted ones sum to the CPU's values."""
    rng = np.random.default_rng(3)
    blobs = [hc.encode(gradient_like(rng, 5000, np.float32), "qsgd", "huffman", 8, "max",
                       seed=r, chunk_log2=8) for r in range(3)]
    bundle, (sec,) = payload.unpack(blobs[1])
    rejected = 0
    for _ in range(150):
        data = bytearray(sec.data)
        for _ in range(int(rng.integers(1, 3))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        bad = payload.pack([payload.Section(**{**sec.__dict__, "data": bytes(data)})],
                           bundle=False)
        trio = [blobs[0], bad, blobs[2]]
        try:
            want = exchange.reduce_mean([hc.decode(b) for b in trio], average=False)
        except hc.PayloadError:
            rejected += 1
            with pytest.raises(hc.PayloadError, match="^payload 1: huffman data"):
                host_launches.decode_sum(trio)
            continue
        assert np.array_equal(host_launches.decode_sum(trio), want)
    assert rejected > 40


def zrh_tables(zc, s):
    """A ZrhCode as the host build of zrh.cu reads it: (zpar, rtab, ltab, decode tables,
    their widths), rows padded to HC_ZRH_NCTX / HC_ZRH_NLCTX as gpu_backend pads them."""
    from horovod_huffcomp import gpu_backend
    from horovod_huffcomp.codebook import decode_table
    from horovod_huffcomp.coders import zrh

    zpar = np.zeros(8, np.int32)
    zpar[0], zpar[1] = zc.mode, zc.ctxmode
    zpar[2: 2 + zc.ks.size] = zc.ks
    rt, lt = zrh.packed_tables(zc.mode, zc.ks, zc.rl, zc.rs, zc.ll)
    rtab = np.zeros((zrh.NCTX, 70), np.uint32)
    ltab = np.zeros((zrh.NLCTX, 2 * s), np.uint32)
    rtab[: rt.shape[0]], ltab[: lt.shape[0]] = rt, lt
    sec = types.SimpleNamespace(coder="zrh", codebook=zc.to_bytes(), levels=s, size=1,
                                chunk_log2=12)
    _, (_, lengths, codes, ones, want_widths) = gpu_backend._parse_code(sec, "payload")
    ends = np.cumsum([70] * zrh.NCTX + [2 * s] * zrh.NLCTX)  # the rows: runs, then levels
    tables = np.full((ends.size, 1 << 15), -(1 << 5), np.int32)
    widths = np.zeros(ends.size, np.int32)
    for r, (ln, cd) in enumerate(zip(np.split(lengths, ends[:-1]), np.split(codes, ends[:-1]))):
        # zrh.cu's tables have one level: a first lookup as wide as the longest code
        t, widths[r] = decode_table(ln.astype(np.int64), cd.astype(np.int64), int(ones[r]),
                                    MAX_CODE_LEN)
        tables[r, : t.size] = t
    assert ends[-1] == lengths.size and np.array_equal(widths, want_widths)
    return zpar, rtab.reshape(-1), ltab.reshape(-1), tables, widths


def sparse_like(rng, n, density):
    x = np.zeros(n, np.float32)
    k = max(1, int(n * density))
    x[rng.integers(0, n, k)] = rng.standard_normal(k) * 10.0 ** rng.uniform(-3, 1, k)
    x[: k // 3] = rng.standard_normal(k // 3)  # a dense patch
    return x


@pytest.mark.parametrize("levels,norm", [(1, "l2"), (4, "max"), (16, "l2"), (127, "max")])
def test_zrh_layout_matches_cpu(lib, levels, norm):
    """The device's ZRH items, placed one by one, give the CPU's bits, over Huffman and Rice
    run codes and every context mode the planner picks for these tensors (and a Rice code
    with k = 0 forced, whose long runs take the over-64-bit path); the host build of the
    device decoder reads them back."""
    from horovod_huffcomp.coders import zrh

    rng = np.random.default_rng(levels)
    seen = set()
    for n, clog2, density in ((1, None, 1.0), (4097, None, 0.7), (50_000, 8, 0.3),
                              (200_000, None, 0.01), (300_000, None, 1e-4), (60_000, 16, 0.002)):
        x = gradient_like(rng, n, np.float32) if density >= 0.3 else sparse_like(rng, n, density)
        q = quantize(x, "qsgd", levels, norm, 5)
        blob = hc.encode(x, "qsgd", "zrh", levels, norm, seed=5, chunk_log2=clog2)
        (sec,) = sections(blob)
        zc = zrh.ZrhCode.parse(Reader(sec.codebook), levels, n)
        rice = zrh.ZrhCode(zrh.MODE_RICE, [0], np.zeros((1, 70)), [-1], zc.ll[:1], zc.ls[:1])
        for code in (zc, rice):
            if code is rice and zc.ll.shape[0] != 1:
                continue  # the forced code takes the planner's one level code
            seen.add((code.mode, code.ctxmode))
            want_bits, want = zrh.encode(q, sec.chunk_log2, code)
            zpar, rtab, ltab, tables, widths = zrh_tables(code, levels)
            chunk_bits = np.zeros(want_bits.size, np.uint64)
            out = np.zeros(want.size + 16, np.uint8)
            nbytes = lib.hc_check_zrh_encode(ptr(q.states), n, levels, sec.chunk_log2,
                                             ptr(zpar), ptr(rtab), ptr(ltab), None,
                                             ptr(chunk_bits), ptr(out))
            assert np.array_equal(chunk_bits, want_bits.astype(np.uint64))
            assert bytes(out[:nbytes]) == want.tobytes()
            states = np.zeros(max(n, 1), np.int8)
            err = lib.hc_check_zrh_decode(ptr(want), want.size, ptr(chunk_bits), n, levels,
                                          sec.chunk_log2, ptr(zpar), ptr(tables), ptr(widths),
                                          ptr(states), None)
            assert err == 0 and np.array_equal(states[:n], q.states[:n])
    assert (zrh.MODE_RICE, 0) in seen


def test_zrh_decoder_rejects_what_the_cpu_rejects(lib):
    """Bit flips in ZRH data (Huffman and Rice run codes): the host build of the device
    decoder fails exactly when the CPU decoder does and otherwise gives its states."""
    from horovod_huffcomp.coders import zrh

    rng = np.random.default_rng(2)
    disagreements = rejected = 0
    for x, clog2 in ((gradient_like(rng, 3000, np.float32), 8),
                     (sparse_like(rng, 40_000, 0.01), 10), (sparse_like(rng, 5000, 0.002), 12)):
        n = x.size
        (sec,) = sections(hc.encode(x, "qsgd", "zrh", 8, "max", seed=2, chunk_log2=clog2))
        zc = zrh.ZrhCode.parse(Reader(sec.codebook), 8, n)
        zpar, _, _, tables, widths = zrh_tables(zc, 8)
        chunk_bits = sec.chunk_bits.astype(np.uint64)
        for _ in range(300):
            data = np.frombuffer(bytes(sec.data), np.uint8).copy()
            for _ in range(int(rng.integers(1, 4))):
                data[rng.integers(data.size)] ^= np.uint8(1 << int(rng.integers(8)))
            states = np.zeros(n, np.int8)
            err = lib.hc_check_zrh_decode(ptr(data), data.size, ptr(chunk_bits), n, 8,
                                          sec.chunk_log2, ptr(zpar), ptr(tables), ptr(widths),
                                          ptr(states), None)
            cpu = np.zeros(n, np.int8)
            cpu_err = zrh.decode(data, sec.chunk_bits, n, sec.chunk_log2, 8, zc, cpu,
                                 np.zeros(0, np.uint32))
            disagreements += verdicts_differ(err, cpu_err, states, cpu)
            rejected += err != 0
    assert disagreements == 0 and rejected > 100


ELIAS = [("elias-gamma", 0), ("elias-delta", 1), ("elias-omega", 2)]


def elias_inputs(rng):
    """(x, chunk_log2) cases for the Elias layouts: dense and sparse gradients, long runs of
    one value and gaps of up to 2^21 (codes of more than 32 bits, pieces over many words)."""
    long_runs = np.repeat(rng.standard_normal(12), rng.integers(1, 90_000, 12)).astype(np.float32)
    far = np.zeros(1 << 21, np.float32)
    far[[5, (1 << 20) + 3, (1 << 21) - 1]] = (1.0, -2.0, 0.5)
    return [(gradient_like(rng, 1, np.float32), None), (gradient_like(rng, 4097, np.float32), 8),
            (gradient_like(rng, 50_000, np.float64), None),
            (sparse_like(rng, 200_000, 0.01), None), (sparse_like(rng, 60_000, 0.002), 16),
            (long_runs, 20), (far, 21), (np.zeros(3000, np.float32), None)]


def padded_states(q):
    states = np.zeros(-(-max(q.n, 1) // 8) * 8 + 8, np.int8)
    states[: q.n] = q.states[: q.n]
    return states


@pytest.mark.parametrize("gap", [False, True], ids=["runlength", "gap"])
@pytest.mark.parametrize("coder,kind", ELIAS)
def test_elias_layout_matches_cpu(lib, coder, kind, gap):
    """The device's Elias chunks (marks from hc_marks, listed per block, items placed piece by
    piece from each mark's distance and state) give the CPU's bits and chunk table, for both
    layouts; the host build of the device decoder reads them back."""
    from horovod_huffcomp.coders import elias

    rng = np.random.default_rng(kind + 3 * gap)
    for x, fixed in elias_inputs(rng):
        for levels, norm in ((1, "l2"), (127, "max")):
            q = quantize(x, "qsgd", levels, norm, 7)
            n = q.n
            clog2 = fixed or sections(hc.encode(x, "qsgd", coder, levels, norm,
                                                seed=7))[0].chunk_log2  # encode's choice
            want_bits, want = elias.encode(q, clog2, kind, gap)
            chunk_bits = np.zeros(max(want_bits.size, 1), np.uint64)
            out = np.zeros(want.size + 16, np.uint8)
            nbytes = lib.hc_check_elias_encode(ptr(padded_states(q)), n, clog2, kind, int(gap),
                                               None, ptr(chunk_bits), ptr(out))
            assert nbytes == want.size
            assert np.array_equal(chunk_bits[: want_bits.size], want_bits.astype(np.uint64))
            assert bytes(out[:nbytes]) == want.tobytes()
            states = np.zeros(max(n, 1), np.int8)
            err = lib.hc_check_elias_decode(ptr(want), want.size, ptr(chunk_bits), n, clog2,
                                            levels, kind, int(gap), ptr(states), None)
            assert err == 0 and np.array_equal(states[:n], q.states[:n])


@pytest.mark.parametrize("gap", [False, True], ids=["runlength", "gap"])
@pytest.mark.parametrize("coder,kind", ELIAS)
def test_elias_decoder_rejects_what_the_cpu_rejects(lib, coder, kind, gap):
    """Bit flips and truncated chunk tables in Elias data: the host build of the device
    decoder fails exactly when the CPU decoder does and otherwise gives its states."""
    from horovod_huffcomp.coders import elias

    rng = np.random.default_rng(10 + kind + 3 * gap)
    disagreements = rejected = 0
    for x, clog2 in ((gradient_like(rng, 3000, np.float32), 8),
                     (sparse_like(rng, 40_000, 0.01), 10)):
        q = quantize(x, "qsgd", 8, "max", 2)
        n = q.n
        bits, data0 = elias.encode(q, clog2, kind, gap)
        for trial in range(200):
            data = data0.copy()
            chunk_bits = bits.copy()
            if trial % 4 == 3:  # a chunk's bit length off by a little
                chunk_bits[rng.integers(chunk_bits.size)] += int(rng.integers(-9, 9))
                chunk_bits = np.maximum(chunk_bits, 0)
            for _ in range(int(rng.integers(1, 4))):
                data[rng.integers(data.size)] ^= np.uint8(1 << int(rng.integers(8)))
            states = np.zeros(n, np.int8)
            ub = chunk_bits.astype(np.uint64)
            err = lib.hc_check_elias_decode(ptr(data), data.size, ptr(ub), n, clog2, 8, kind,
                                            int(gap), ptr(states), None)
            cpu = np.zeros(n, np.int8)
            cpu_err = elias.decode(data, chunk_bits, n, clog2, 8, kind, gap, cpu,
                                   np.zeros(0, np.uint32))
            disagreements += verdicts_differ(err, cpu_err, states, cpu)
            rejected += err != 0
    assert disagreements == 0 and rejected > 100


def test_elias_decode_sum_kernels_on_the_host(host_launches):
    """Elias payloads (every code, both layouts, beside huffman ones) summed by the host builds
    of hc_elias_decode and hc_add_states as exchange.reduce_mean sums them; a corrupted one
    rejected exactly when the CPU rejects it, named in the error."""
    rng = np.random.default_rng(4)
    shapes = [(), (300, 7), (9000,), (30_000,)]
    xs = []
    for r in range(3):
        xs.append([gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh) for sh in shapes])
        xs[r][3][rng.random(30_000) < 0.99] = 0  # sparse: long chunks, long zero runs
    for coders in (["elias-gamma"] * 3, ["elias-delta", "huffman", "elias-omega"]):
        for layout in ("runlength", "gap"):
            blobs = [hc.encode_many(x, "qsgd", c, 8, "max", seed=r, elias_layout=layout)
                     for r, (x, c) in enumerate(zip(xs, coders))]
            assert_sums_as_on_the_cpu(host_launches, blobs, "hc_elias_decode", (coders, layout))
    rejected = sum(rejected_as_on_the_cpu(host_launches, blobs, 2, rng, "elias-omega")
                   for _ in range(100))
    assert 20 < rejected < 80


def test_float_format_decode_sum_kernels_on_the_host(host_launches):
    """Payloads of CO3's float formats (every format; fp4 with its GenNorm scale and the max
    norm; huffman and Elias; float16/32/64; a NaN tensor) summed by the host builds of the
    decode kernels as exchange.reduce_mean sums them: each payload's values from its own
    format, a qsgd payload beside fp8 ones included."""
    rng = np.random.default_rng(5)
    shapes = [(), (300, 7), (9000,), (20_000,)]
    dtypes = [np.float32, np.float16, np.float64, np.float32]
    xs = [[gradient_like(rng, int(np.prod(sh)), dt).reshape(sh)
           for sh, dt in zip(shapes, dtypes)] for _ in range(3)]
    xs[1][2][7] = np.nan
    cases = [[("fp4", None, "huffman")] * 3, [("fp4", "max", "elias-gamma")] * 3,
             [("fp8", None, "huffman"), ("fp8", None, "elias-delta"), ("fp8", None, "huffman")],
             [("fp8-e5m2", None, "huffman")] * 3,
             [("fp8", None, "huffman"), ("qsgd", "max", "huffman"), ("fp8", None, "huffman")]]
    for case in cases:
        blobs = [hc.encode_many(x, q, c, 119 if q == "qsgd" else None, norm, seed=r,
                                nonfinite="propagate")
                 for r, (x, (q, norm, c)) in enumerate(zip(xs, case))]
        got = assert_sums_as_on_the_cpu(host_launches, blobs, "hc_huffman_decoders", case,
                                        equal_nan=True)
        assert np.isnan(got[2]).all() and not np.isnan(got[3]).any()


def test_bucket_decode_sum_kernels_on_the_host(host_launches):
    """Payloads of QSGD's buckets (16 to 2^12 elements, L2 and max norm, huffman and Elias,
    float16/32/64, a NaN tensor, a payload without buckets among them) summed by the host
    builds of the decode kernels as exchange.reduce_mean sums them: bucketed huffman tensors
    decoded into the symbol row, the others into the state buffer, each value with its
    bucket's scale; a corrupted bucketed payload rejected exactly when the CPU rejects it."""
    rng = np.random.default_rng(6)
    shapes = [(), (300, 7), (9000,), (20_000,)]
    dtypes = [np.float32, np.float16, np.float64, np.float32]
    xs = [[gradient_like(rng, int(np.prod(sh)), dt).reshape(sh)
           for sh, dt in zip(shapes, dtypes)] for _ in range(3)]
    xs[2][1][3, 4] = np.inf
    for bucket, norm, coders in ((16, "l2", ["huffman"] * 3),
                                 (512, "max", ["huffman", "elias-gamma", "huffman"]),
                                 (4096, "l2", ["elias-omega", "huffman", "huffman"]),
                                 (512, "l2", ["huffman", "huffman", None])):
        blobs = [hc.encode_many(x, "qsgd", c or "huffman", 8, norm, seed=r, nonfinite="propagate",
                                bucket=None if c is None else bucket)
                 for r, (x, c) in enumerate(zip(xs, coders))]
        host_launches.launched.clear()
        got = host_launches.decode_sum(blobs, bundle=True)
        # bucketed huffman tensors go through the symbol row, never the fused sum
        assert {"hc_add_buckets", "hc_huffman_decode_symbols"} <= set(host_launches.launched)
        assert ("hc_huffman_decode_sum" in host_launches.launched) == (coders[2] is None)
        for t, want in enumerate(cpu_sums(blobs)):
            assert np.array_equal(got[t], want, equal_nan=True), (bucket, coders, t)
        assert np.isnan(got[1]).all() and not np.isnan(got[2]).any()
    trio = [blobs[1], blobs[0], blobs[2]]
    assert sum(rejected_as_on_the_cpu(host_launches, trio, 1, rng, "huffman")
               for _ in range(40)) > 10


def test_sh_decode_sum_kernels_on_the_host(host_launches):
    """SH payloads decode as huffman's (their code from the codebook): summed with huffman
    ones in one fused launch when their chunks agree, by the host builds of the kernels as
    exchange.reduce_mean sums them; a corrupted one rejected as on the CPU, named sh."""
    rng = np.random.default_rng(7)
    shapes = [(), (300, 7), (9000,)]
    blobs = [hc.encode_many([gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh)
                             for sh in shapes], "qsgd", c, 8, "max", seed=r, chunk_log2=9)
             for r, c in enumerate(("sh", "huffman", "sh"))]
    host_launches.launched.clear()
    got = host_launches.decode_sum(blobs, bundle=True)
    assert ("hc_huffman_decode_symbols" if host_launches.SYMBOLS_MAX_CHUNKS
            else "hc_huffman_decode_sum") in host_launches.launched
    for t, want in enumerate(cpu_sums(blobs)):
        assert np.array_equal(got[t], want), t
    assert sum(rejected_as_on_the_cpu(host_launches, blobs, 2, rng, "sh")
               for _ in range(30)) > 5


# ---------------------------------------------------------------- SHS
def shs_tab(code) -> np.ndarray:
    """An SHS code as shs.cu's writers read it: code << 5 | length per symbol."""
    return (code.codes.astype(np.uint32) << 5) | code.lengths.astype(np.uint32)


def host_shs_decode(lib, data, chunk_bits, n, s, clog2, code, raw=None):
    """(HC_ERR_* of the first failing chunk or 0, states) of the host builds of
    hc_shs_decoders and hc_shs_decode's threads over one tensor's chunks; ``raw`` (exact
    top-k): a uint32 array that receives the magnitudes."""
    data = np.ascontiguousarray(data, np.uint8)
    chunk_bits = np.ascontiguousarray(chunk_bits, np.uint64)
    dec = np.zeros(gpu_backend.DEC_INTS, np.int32)
    coders = np.array([gpu_backend.CODER_IDS["shs"]], np.uint8)
    lib.hc_check_shs_decoders(1, ptr(code.lengths.astype(np.uint8)),
                              ptr(np.array([code.single], np.int32)), s, ptr(coders), ptr(dec),
                              1)
    starts = np.zeros(chunk_bits.size, np.uint64)
    np.cumsum((chunk_bits[:-1] + 7) // 8, out=starts[1:])
    states, err = np.zeros(max(n, 1), np.int8), np.zeros(2, np.int32)
    lib.hc_check_shs_decode_launch(
        chunk_bits.size, ptr(data), data.size, ptr(starts), ptr(chunk_bits),
        ptr(np.array([clog2], np.int32)), ptr(np.array([0, chunk_bits.size], np.int64)),
        ptr(np.array([n], np.int64)), 1, s, ptr(coders), ptr(dec), ptr(np.zeros(1, np.int64)),
        ptr(states), None if raw is None else ptr(raw), ptr(err))
    return int(err[0]), states[:n]


def shs_states(rng, n, s, density, runs=False):
    """States of levels s at about this density of non-zeros; ``runs``: zero runs of up to
    100,000 (items of many longest-run codewords: the writers' over-64-bit path)."""
    states = np.where(rng.random(n) < density,
                      rng.integers(1, s + 1, n) * rng.choice([-1, 1], n), 0).astype(np.int8)
    if runs:
        states[:] = 0
        at = np.cumsum(rng.integers(1, 100_000, max(1, n // 20_000)))
        states[at[at < n]] = rng.choice([-s, s], int((at < n).sum()))
    return states


def test_shs_code_matches_cpu(lib):
    """SHS's code on the device (hc_shs_code: weights from SH's sampled counts, a Huffman
    code over 2s + 200 symbols) is shs.build_code's, from all-zero to dense states, for
    levels 1 to 127 (length limiting on the largest alphabets)."""
    from horovod_huffcomp.coders import shs

    rng = np.random.default_rng(11)
    limited = 0
    for s in (1, 2, 7, 16, 28, 64, 127):
        for density in (0.0, 1e-3, 0.05, 0.5, 0.97, 1.0):
            n = int(rng.integers(1, 50_000))
            states = shs_states(rng, n, s, density)
            seed = int(rng.integers(1 << 40))
            want = shs.build_code(states, n, s, seed)
            counts = symbol.sample_counts(states, n, s, seed).astype(np.uint64)
            lengths = np.zeros(shs.alphabet(s), np.uint8)
            tab = np.zeros(shs.alphabet(s), np.uint32)
            lib.hc_check_shs_code(ptr(counts), s, ptr(lengths), ptr(tab))
            assert np.array_equal(lengths, want.lengths), (s, density)
            assert np.array_equal(tab, shs_tab(want)), (s, density)
            limited += int(want.lengths.max()) == MAX_CODE_LEN
    assert limited > 5


@pytest.mark.parametrize("levels", [1, 4, 16, 127])
def test_shs_layout_matches_cpu(lib, levels):
    """The device's SHS items (a non-zero's zero run in codewords of up to 200 zeros, then its
    level; each chunk's terminal run), placed one by one, give the CPU's chunk table and bits,
    long runs through the over-64-bit pieces too; the host build of the device decoder reads
    them back."""
    from horovod_huffcomp.coders import shs

    rng = np.random.default_rng(levels)
    for n, clog2, density, runs in ((1, 12, 1.0, False), (4097, 12, 0.7, False),
                                    (50_000, 8, 0.3, False), (200_000, 14, 0.01, False),
                                    (300_000, 18, 1e-4, False), (1_000_000, 20, 0, True),
                                    (5000, 12, 0.0, False)):
        states = shs_states(rng, n, levels, density, runs)
        q = types.SimpleNamespace(states=states, n=n, levels=levels, raw=None)
        code = shs.build_code(states, n, levels, 3)
        want_bits, want = shs.encode(q, clog2, code)
        chunk_bits = np.zeros(want_bits.size, np.uint64)
        out = np.zeros(want.size + 16, np.uint8)
        nbytes = lib.hc_check_shs_encode(ptr(states), n, levels, clog2, ptr(shs_tab(code)),
                                         None, ptr(chunk_bits), ptr(out))
        assert np.array_equal(chunk_bits, want_bits.astype(np.uint64)), (n, density)
        assert bytes(out[:nbytes]) == want.tobytes(), (n, density)
        err, got = host_shs_decode(lib, want, chunk_bits, n, levels, clog2, code)
        assert err == 0 and np.array_equal(got, states), (n, density)


def test_shs_decoder_rejects_what_the_cpu_rejects(lib):
    """Bit flips in SHS data and chunk tables off by a little: the host build of the device
    decoder fails exactly when the CPU decoder does, with its error (bits.ERR_* =
    -HC_ERR_*), and otherwise gives its states."""
    from horovod_huffcomp.coders import shs

    rng = np.random.default_rng(5)
    disagreements = rejected = 0
    for n, s, clog2, density in ((3000, 8, 8, 0.5), (40_000, 8, 10, 0.01), (5000, 1, 12, 0.002),
                                 (20_000, 127, 9, 0.3)):
        states = shs_states(rng, n, s, density)
        code = shs.build_code(states, n, s, 9)
        bits0, data0 = shs.encode(types.SimpleNamespace(states=states, n=n, levels=s, raw=None),
                                  clog2, code)
        for trial in range(200):
            data, bits = data0.copy(), bits0.copy()
            if trial % 4 == 3:
                bits[rng.integers(bits.size)] += int(rng.integers(-9, 9))
                bits = np.maximum(bits, 0)
            for _ in range(int(rng.integers(trial % 4 != 3, 4))):
                data[rng.integers(data.size)] ^= np.uint8(1 << int(rng.integers(8)))
            err, got = host_shs_decode(lib, data, bits, n, s, clog2, code)
            cpu = np.zeros(n, np.int8)
            cpu_err = shs.decode(data, bits, n, clog2, s, code, cpu, np.zeros(0, np.uint32))
            disagreements += err != -cpu_err or (err == 0 and not np.array_equal(got, cpu))
            rejected += err != 0
    assert disagreements == 0 and 200 < rejected < 780


def test_shs_decode_sum_kernels_on_the_host(host_launches):
    """SHS payloads of 3 workers (float16/32/64, sparse and dense tensors, qsgd and QSGD's
    buckets) decoded into states by the host builds of hc_shs_decoders and hc_shs_decode and
    summed as exchange.reduce_mean sums them, beside a huffman payload; a corrupted one
    rejected exactly when the CPU rejects it, named shs."""
    rng = np.random.default_rng(8)
    xs = three_workers(rng)
    for x in xs:
        x[3][rng.random(30_000) < 0.99] = 0
    for bucket in (None, 512):
        for coders in (["shs"] * 3, ["shs", "huffman", "shs"]):
            blobs = [hc.encode_many(x, "qsgd", c, 8, "max", seed=r, bucket=bucket)
                     for r, (x, c) in enumerate(zip(xs, coders))]
            assert_sums_as_on_the_cpu(host_launches, blobs, "hc_shs_decode", (bucket, coders))
    # a bundle whose sections mix coders (the format allows it): each kernel decodes its own
    mixed = [payload.unpack(hc.encode_many(xs[0], "qsgd", c, 8, "max", seed=0))[1]
             for c in ("shs", "huffman", "elias-gamma")]
    blob = payload.pack([payload.Section(**{**mixed[t % 3][t].__dict__, "reuse": False})
                         for t in range(len(xs[0]))], bundle=True)
    got = host_launches.decode_sum([blob, blobs[1]], bundle=True)
    for t, want in enumerate(cpu_sums([blob, blobs[1]])):
        assert np.array_equal(got[t], want), t
    blobs = [hc.encode_many(x, "qsgd", "shs", 8, "max", seed=r) for r, x in enumerate(xs)]
    assert sum(rejected_as_on_the_cpu(host_launches, blobs, 2, rng, "shs")
               for _ in range(40)) > 5


# ---------------------------------------------------------------- RLH
def host_rlh_decode(lib, data, bits, n, s, clog2, pc, raw=False):
    """One RLH tensor decoded by the host build of hc_rlh_decode's threads (its record and
    pairs from gpu_rlh.decoder): (HC_ERR_* of the first failing chunk or 0, states, raw)."""
    from horovod_huffcomp import gpu_rlh

    dec, pairs = gpu_rlh.decoder(pc, s)
    pairs = np.concatenate([pairs, [0]]).astype(np.int64)  # never read: a pointer to pass
    m = int(bits.size)
    chunk_byte = byte_offsets(bits)[:-1].astype(np.uint64)
    u64 = np.ascontiguousarray(bits, np.uint64)
    buf = np.concatenate([data, [0]]).astype(np.uint8)
    out = np.zeros(n + 1, np.int8)
    mags = np.zeros(n + 1, np.uint32)
    err = np.zeros(2, np.int32)
    clog2s, first = np.array([clog2], np.int32), np.array([0, m], np.int64)
    sizes, coders = np.array([n], np.int64), np.array([4], np.uint8)
    pair_at, at = np.array([0, pairs.size - 1], np.int64), np.zeros(1, np.int64)
    lib.hc_check_rlh_decode_launch(m, ptr(buf), data.size, ptr(chunk_byte), ptr(u64),
                                   ptr(clog2s), ptr(first), ptr(sizes), 1, s, ptr(coders),
                                   ptr(dec), ptr(pair_at), ptr(pairs), ptr(at), ptr(out),
                                   ptr(mags) if raw else None, ptr(err))
    return int(err[0]), out[:n], mags[:n]


def test_rlh_decoder_as_the_cpu(lib):
    """RLH chunks (maximal runs, runs cut at chunks and at 2^15 // V states, one-pair codes,
    exact top-k's raw magnitudes) decoded by the host build of the device decoder: the CPU's
    states and magnitudes; with bit flips and chunk tables off by a little, it fails exactly
    when the CPU decoder does, with its error (bits.ERR_* = -HC_ERR_*)."""
    from horovod_huffcomp.coders import rlh

    rng = np.random.default_rng(12)
    k, r = np.meshgrid(np.arange(-64, 65), np.arange(1, 261))
    cases = [(gradient_like(rng, 30_000, np.float32), 8, 10, "qsgd"),
             (np.repeat(rng.standard_normal(50), rng.integers(1, 900, 50)), 4, 9, "qsgd"),
             (np.zeros(5000), 4, 8, "qsgd"), (np.ones(700), 1, 12, "qsgd"),
             (np.repeat(k.ravel(), r.ravel()).astype(np.float32), 64, 24, "qsgd"),
             (gradient_like(rng, 20_000, np.float32), 0, 9, "topk"),
             (np.repeat(rng.standard_normal(40), rng.integers(1, 300, 40)), 0, 10, "topk")]
    disagreements = rejected = 0
    for x, levels, clog2, quantizer in cases:
        q = hc.quantizers.quantize(np.asarray(x, np.float32), quantizer, levels or None, "max",
                                   3, ratio=0.4)
        raw = q.raw is not None
        planned = rlh.plan(q, clog2)
        bits0, data0 = rlh.encode(q, clog2, planned)
        pc = planned[0]
        err, got, mags = host_rlh_decode(lib, data0, bits0, q.n, q.levels, clog2, pc, raw)
        assert err == 0 and np.array_equal(got, q.states[: q.n]), (levels, clog2)
        if raw:
            assert np.array_equal(np.where(got != 0, mags, 0), q.raw)
        for trial in range(60):
            data, bits = data0.copy(), bits0.copy()
            if trial % 4 == 3:
                bits[rng.integers(bits.size)] += int(rng.integers(-9, 9))
                bits = np.maximum(bits, 0)
            for _ in range(int(rng.integers(trial % 4 != 3, 4)) if data.size else 0):
                data[rng.integers(data.size)] ^= np.uint8(1 << int(rng.integers(8)))
            if byte_offsets(bits)[-1] > data.size:
                data = np.concatenate([data, np.zeros(byte_offsets(bits)[-1] - data.size,
                                                      np.uint8)])
            err, got, mags = host_rlh_decode(lib, data, bits, q.n, q.levels, clog2, pc, raw)
            cpu = np.zeros(q.n, np.int8)
            cpu_raw = np.zeros(q.n if raw else 0, np.uint32)
            cpu_err = rlh.decode(data, bits, q.n, clog2, pc, cpu, cpu_raw)
            same = err == -cpu_err and (err != 0 or np.array_equal(got, cpu))
            disagreements += not same
            rejected += err != 0
    assert disagreements == 0 and 50 < rejected < 400, (disagreements, rejected)


def test_rlh_decode_sum_kernels_on_the_host(host_launches):
    """RLH payloads of 3 workers (float16/32/64, runs, qsgd, QSGD's buckets, exact top-k)
    decoded by the host build of hc_rlh_decode and summed as exchange.reduce_mean sums them,
    beside huffman payloads; a corrupted one rejected exactly when the CPU rejects it,
    named rlh."""
    rng = np.random.default_rng(13)
    xs = three_workers(rng)
    for x in xs:
        x[3][:] = np.repeat(rng.standard_normal(60), 500)
    for kw in (dict(quantizer="qsgd", levels=8), dict(quantizer="qsgd", levels=4, bucket=512),
               dict(quantizer="topk", ratio=0.3)):
        for coders in (["rlh"] * 3, ["rlh", "huffman", "rlh"]):
            blobs = [hc.encode_many(x, coder=c, seed=r, **kw)
                     for r, (x, c) in enumerate(zip(xs, coders))]
            assert_sums_as_on_the_cpu(host_launches, blobs, "hc_rlh_decode", (kw, coders))
    blobs = [hc.encode_many(x, "qsgd", "rlh", 8, seed=r) for r, x in enumerate(xs)]
    assert sum(rejected_as_on_the_cpu(host_launches, blobs, 1, rng, "rlh")
               for _ in range(40)) > 5


# ---------------------------------------------------------------- exact top-k (raw magnitudes)
EXACT_CODERS = [("huffman", "runlength"), ("sh", "runlength"), ("shs", "runlength"),
                ("zrh", "runlength"),
                ("elias-gamma", "runlength"), ("elias-delta", "gap"), ("elias-omega", "gap"),
                ("elias-omega", "runlength")]
RAW_LIMIT = 0x7F800000  # raw magnitudes at or above it are Inf or NaN: rejected


def exact_topk_inputs(rng):
    """(x, ratio) for exact top-k: dense and sparse gradients of every dtype, runs of equal
    signs (the run-length layouts' runs of many raw magnitudes)."""
    runs = np.repeat(rng.standard_normal(20), rng.integers(1, 3000, 20)).astype(np.float32)
    return [(gradient_like(rng, 1, np.float32), 1.0), (gradient_like(rng, 50_000, np.float32),
                                                       0.01),
            (gradient_like(rng, 20_000, np.float64), 0.3), (gradient_like(rng, 9000, np.float16),
                                                           1.0),
            (sparse_like(rng, 200_000, 0.01), 0.001), (runs, 0.8)]


class ExactTopk:
    """One exact top-k section and the host builds of its coder's device encoder and decoder
    (huffman/sh: hc_huffman_decode_raw's threads; SHS: hc_shs_decode's; ZRH; Elias), with the
    CPU decoder beside."""

    def __init__(self, lib, x, ratio, coder, layout):
        from horovod_huffcomp.coders import elias, shs, zrh

        self.lib, self.coder, self.gap = lib, coder, layout == "gap"
        blob = hc.encode(x, "topk", coder, seed=5, ratio=ratio, elias_layout=layout)
        self.q = quantize(x, "topk", 0, None, 5, ratio=ratio)
        (self.sec,) = sections(blob)
        assert self.sec.raw and self.sec.levels == 1
        self.n, self.clog2 = self.q.n, self.sec.chunk_log2
        self.bits = self.sec.chunk_bits.astype(np.uint64)
        if coder in ("huffman", "sh"):
            self.code = Code.parse(Reader(self.sec.codebook), 3, "code")
        elif coder == "shs":
            self.code = Code.parse(Reader(self.sec.codebook), shs.alphabet(1), "code")
        elif coder == "zrh":
            self.code = zrh.ZrhCode.parse(Reader(self.sec.codebook), 1, self.n)
            self.tables = zrh_tables(self.code, 1)
        else:
            self.kind = elias.KINDS[coder]

    def encode(self):
        """The device encoder's (chunk bits, data) for the CPU's states and raw magnitudes."""
        q, lib = self.q, self.lib
        chunk_bits = np.zeros(max(self.bits.size, 1), np.uint64)
        out = np.zeros(len(self.sec.data) + 16, np.uint8)
        if self.coder in ("huffman", "sh"):
            nbytes = lib.hc_check_huffman_encode(
                ptr(q.states), self.n, 1, self.clog2, ptr(self.code.lengths.astype(np.uint8)),
                ptr(self.code.codes.astype(np.uint16)), ptr(q.raw), 0, ptr(chunk_bits),
                ptr(out))
        elif self.coder == "shs":
            nbytes = lib.hc_check_shs_encode(ptr(q.states), self.n, 1, self.clog2,
                                             ptr(shs_tab(self.code)), ptr(q.raw),
                                             ptr(chunk_bits), ptr(out))
        elif self.coder == "zrh":
            zpar, rtab, ltab = self.tables[:3]
            nbytes = lib.hc_check_zrh_encode(ptr(q.states), self.n, 1, self.clog2, ptr(zpar),
                                             ptr(rtab), ptr(ltab), ptr(q.raw), ptr(chunk_bits),
                                             ptr(out))
        else:
            nbytes = lib.hc_check_elias_encode(ptr(padded_states(q)), self.n, self.clog2,
                                               self.kind, int(self.gap), ptr(q.raw),
                                               ptr(chunk_bits), ptr(out))
        return chunk_bits[: self.bits.size], out[:nbytes]

    def decode(self, data, chunk_bits):
        """(error code, states, raw) of the host build of the device decoder."""
        lib, n = self.lib, self.n
        states, raw = np.zeros(max(n, 1), np.int8), np.zeros(max(n, 1), np.uint32)
        data = np.ascontiguousarray(data, np.uint8)
        if self.coder in ("huffman", "sh"):
            dec = np.zeros(gpu_backend.DEC_INTS, np.int32)
            lib.hc_check_huffman_decoders(1, ptr(self.code.lengths.astype(np.uint8)),
                                          ptr(np.array([self.code.single], np.int32)), 3, 0,
                                          ptr(np.ones(1, np.uint8)), ptr(np.ones(1, np.float32)),
                                          ptr(np.full(1, 2, np.int32)), ptr(dec),
                                          ptr(np.zeros(3)))
            starts = np.zeros(chunk_bits.size, np.uint64)
            np.cumsum((chunk_bits[:-1] + 7) // 8, out=starts[1:])
            err = np.zeros(2, np.int32)
            lib.hc_check_huffman_decode_raw(
                chunk_bits.size, ptr(data), data.size, ptr(starts), ptr(chunk_bits),
                ptr(np.array([self.clog2], np.int32)),
                ptr(np.array([0, chunk_bits.size], np.int64)), ptr(np.array([n], np.int64)), 1,
                1, ptr(np.ones(1, np.uint8)), ptr(dec), ptr(np.zeros(1, np.int64)), ptr(states),
                ptr(raw), ptr(err))
            e = int(err[0])
        elif self.coder == "shs":
            e, states[:n] = host_shs_decode(lib, data, chunk_bits, n, 1, self.clog2, self.code,
                                            raw)
        elif self.coder == "zrh":
            zpar, _, _, tables, widths = self.tables
            e = lib.hc_check_zrh_decode(ptr(data), data.size, ptr(chunk_bits), n, 1, self.clog2,
                                        ptr(zpar), ptr(tables), ptr(widths), ptr(states),
                                        ptr(raw))
        else:
            e = lib.hc_check_elias_decode(ptr(data), data.size, ptr(chunk_bits), n, self.clog2,
                                          1, self.kind, int(self.gap), ptr(states), ptr(raw))
        return e, states[:n], np.where(states[:n] != 0, raw[:n], 0)

    def cpu_decode(self, data, chunk_bits):
        """(fails, states, raw, the coder's error) of the CPU: its coder's verdict, then
        decode_states' check of the magnitudes."""
        from horovod_huffcomp.coders import elias, shs, zrh

        n = self.n
        states, raw = np.zeros(n, np.int8), np.zeros(n, np.uint32)
        bits = chunk_bits.astype(np.int64)
        if self.coder in ("huffman", "sh"):
            err = symbol.decode(data, bits, n, self.clog2, 1, self.code, states, raw)
        elif self.coder == "shs":
            err = shs.decode(data, bits, n, self.clog2, 1, self.code, states, raw)
        elif self.coder == "zrh":
            err = zrh.decode(data, bits, n, self.clog2, 1, self.code, states, raw)
        else:
            err = elias.decode(data, bits, n, self.clog2, 1, self.kind, self.gap, states, raw)
        return err != 0 or bool((raw >= RAW_LIMIT).any()), states, raw, err


@pytest.mark.parametrize("coder,layout", EXACT_CODERS)
def test_exact_topk_layouts_match_cpu(lib, coder, layout):
    """Exact top-k: each non-zero state's codeword (huffman, sh), ZRH item or Elias item
    followed by its raw float32 magnitude, as the device writers place them (the chunk table
    counting them), gives the CPU's bits; the host builds of the device decoders read back
    its states and magnitudes."""
    rng = np.random.default_rng(len(coder) + 7 * (layout == "gap"))
    for x, ratio in exact_topk_inputs(rng):
        t = ExactTopk(lib, x, ratio, coder, layout)
        chunk_bits, data = t.encode()
        assert np.array_equal(chunk_bits, t.bits), (x.size, ratio)
        assert data.tobytes() == bytes(t.sec.data), (x.size, ratio)
        err, states, raw = t.decode(data, chunk_bits)
        assert err == 0 and not t.cpu_decode(data, chunk_bits)[0], (x.size, ratio, err)
        assert np.array_equal(states, t.q.states[: t.n]) and np.array_equal(raw, t.q.raw)
        kept = np.flatnonzero(t.q.raw)
        for bad in (RAW_LIMIT, RAW_LIMIT + 1, RAW_LIMIT - 1):  # Inf, NaN, float32's largest
            t.q.raw[kept[len(kept) // 2]] = bad  # (the writers take any 31 bits)
            chunk_bits, data = t.encode()
            err, states, raw = t.decode(data, chunk_bits)
            assert (err == 4) == t.cpu_decode(data, chunk_bits)[0] == (bad >= RAW_LIMIT)


@pytest.mark.parametrize("coder,layout", EXACT_CODERS)
def test_exact_topk_decoders_reject_what_the_cpu_rejects(lib, coder, layout):
    """Bit flips in exact top-k data (codewords, items and raw magnitudes, one made Inf) and
    chunk tables off by a little: the host build of the device decoder fails exactly when
    the CPU does (its coder, or the Inf/NaN magnitude check after it) and otherwise gives
    its states and magnitudes."""
    rng = np.random.default_rng(20 + len(coder) + 7 * (layout == "gap"))
    disagreements = rejected = by_magnitude = 0
    for x, ratio in ((gradient_like(rng, 3000, np.float32), 0.3),
                     (sparse_like(rng, 40_000, 0.01), 0.005),
                     (gradient_like(rng, 5000, np.float32), 1.0)):  # chunks end on a kept one
        t = ExactTopk(lib, x, ratio, coder, layout)
        data0 = np.frombuffer(bytes(t.sec.data), np.uint8)
        for c in range(min(t.bits.size, 20)):  # each chunk cut short or run long a little
            for delta in (-1, -20, 3):
                chunk_bits = t.bits.astype(np.int64)
                chunk_bits[c] = max(chunk_bits[c] + delta, 0)
                err = t.decode(data0, chunk_bits.astype(np.uint64))[0]
                fails, _, _, cpu_err = t.cpu_decode(data0, chunk_bits)
                disagreements += not fails or err != -cpu_err
        for trial in range(150):
            data, chunk_bits = data0.copy(), t.bits.astype(np.int64)
            if trial % 5 == 4:  # a chunk's bit length off by a little
                chunk_bits[rng.integers(chunk_bits.size)] += int(rng.integers(-9, 9))
                chunk_bits = np.maximum(chunk_bits, 0)
            if trial % 7 == 6:  # a raw magnitude's exponent all ones (where one may lie)
                at = int(rng.integers(max(data.size - 2, 1)))
                data[at: at + 2] |= np.array([0x7F, 0x80], np.uint8)[: data.size - at]
            for _ in range(int(rng.integers(1, 4))):
                data[rng.integers(data.size)] ^= np.uint8(1 << int(rng.integers(8)))
            err, states, raw = t.decode(data, chunk_bits.astype(np.uint64))
            fails, cpu_states, cpu_raw, cpu_err = t.cpu_decode(data, chunk_bits)
            disagreements += (err != 0) != fails or (
                not fails and not (np.array_equal(states, cpu_states)
                                   and np.array_equal(raw, cpu_raw)))
            rejected += fails
            if fails and cpu_err == 0:  # the bits decode, a magnitude is Inf or NaN
                by_magnitude += 1
                disagreements += err != 4  # HC_ERR_RAW
            elif fails:  # the same error (bits.ERR_* = -HC_ERR_*)
                disagreements += err != -cpu_err
    assert disagreements == 0 and 30 < rejected < 430 and by_magnitude > 0


def test_exact_topk_decode_sum_kernels_on_the_host(host_launches):
    """Exact top-k payloads of 3 workers (huffman, sh, shs and Elias of both layouts,
    float16/32/64 tensors, a NaN tensor with nonfinite="propagate") decoded into states and raw
    magnitudes and summed by the host builds of hc_huffman_decode_raw, hc_shs_decode,
    hc_elias_decode and hc_add_raw_states as exchange.reduce_mean sums them; a corrupted one
    rejected exactly when the CPU rejects it, named in the error."""
    rng = np.random.default_rng(6)
    xs = three_workers(rng)
    xs[2][2][5] = np.nan
    for coders in (["huffman"] * 3, ["sh", "elias-gamma", "shs"],
                   ["elias-delta", "elias-omega", "elias-gamma"]):
        for layout in ("runlength", "gap"):
            blobs = [hc.encode_many(x, "topk", c, seed=r, ratio=0.05, elias_layout=layout,
                                    nonfinite="propagate")
                     for r, (x, c) in enumerate(zip(xs, coders))]
            assert_sums_as_on_the_cpu(host_launches, blobs, "hc_add_raw_states", (coders, layout),
                                      equal_nan=True)
    rejected = sum(rejected_as_on_the_cpu(host_launches, blobs, 1, rng, "elias-omega")
                   for _ in range(100))
    assert 5 < rejected < 95  # most flips land in raw magnitudes: other values, not errors
    bad = payload.unpack(blobs[0])[1]  # a raw top-k payload claiming other levels
    with pytest.raises(hc.PayloadError, match="^payload 0: raw top-k values need levels = 1"):
        host_launches.decode_sum([payload.pack(
            [payload.Section(**{**sec.__dict__, "levels": 2}) for sec in bad], bundle=True)]
            + blobs[1:])
