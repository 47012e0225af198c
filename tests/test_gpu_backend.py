"""The GPU backend against the CPU backend (issue #3). Runs where CuPy sees a CUDA device;
skips with the reason everywhere else (CI has no GPU: tests/test_cuda_sources.py compiles the
kernels and checks their per-element logic on the host there)."""
import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import exchange, gpu_backend

if not gpu_backend.available():
    pytest.skip("no CUDA device visible to CuPy (or CuPy not installed): GPU backend tests "
                "need a GPU", allow_module_level=True)

import cupy  # noqa: E402

CASES = [("qsgd", 16, "l2"), ("qsgd", 4, "max"), ("qsgd", 1, "l2"), ("qsgd", 127, "max"),
         ("terngrad", None, "l2")]
SIZES = [0, 1, 7, 4097, 65_537, 1_000_003]
CODERS = ["huffman", "zrh", "auto"]
ELIAS = [(c, layout) for c in gpu_backend.ELIAS for layout in gpu_backend.ELIAS_LAYOUTS]


FORMATS = [("fp4", "gennorm"), ("fp4", "max"), ("fp8", "max"), ("fp8-e5m2", "max")]


@pytest.fixture(autouse=True)
def new_kernels_on_device(monkeypatch):
    """The kernels of gpu_backend.NOT_YET_ON_DEVICE (Elias, float formats, buckets, SH's
    sampled counts, top-k quantized and exact, SHS) are checked here before they are on by
    default."""
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE", set())


def gradient_like(rng, n, dtype):
    x = rng.standard_t(3, n) * 10.0 ** rng.uniform(-4, 0)
    x[rng.random(n) < 0.3] = 0
    return x.astype(dtype)


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("quantizer,levels,norm", CASES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_encode_is_byte_identical(quantizer, levels, norm, dtype, coder):
    rng = np.random.default_rng(levels or 0)
    for n in SIZES:
        x = gradient_like(rng, n, dtype)
        for shape in ((n,), (1, n, 1)):
            want = hc.encode(x.reshape(shape), quantizer, coder, levels, norm, seed=n)
            got = hc.encode(cupy.asarray(x.reshape(shape)), quantizer, coder, levels, norm,
                            seed=n)
            assert got == want, (n, shape)


@pytest.mark.parametrize("coder", ["huffman", "auto", "sh"])
def test_wide_huffman_writer_is_byte_identical(monkeypatch, coder):
    """gpu_backend.WIDE (hc_huffman_chunk_bits4, hc_huffman_write4: four states a lane) before
    it is on by default: every quantizer setting, sizes around the four-state words and the
    128-state rounds, fixed 256-state chunks, a batch of mixed dtypes, codes with codewords
    of 15 bits (fields of 60)."""
    monkeypatch.setattr(gpu_backend, "WIDE", True)
    rng = np.random.default_rng(31)
    for quantizer, levels, norm in CASES:
        for n in SIZES + [3, 127, 129, 255, 257, 4095]:
            x = gradient_like(rng, n, np.float32)
            for clog2 in (None, 8):
                want = hc.encode(x, quantizer, coder, levels, norm, seed=n, chunk_log2=clog2)
                got = hc.encode(cupy.asarray(x), quantizer, coder, levels, norm, seed=n,
                                chunk_log2=clog2)
                assert got == want, (quantizer, levels, n, clog2)
    fib = np.array([1, 1] + [0] * 79, np.float64)  # state counts along a Fibonacci sequence:
    for k in range(2, 81):                         # codewords of up to 15 bits
        fib[k] = fib[k - 1] + fib[k - 2]
    x = np.repeat((np.arange(81) - 40) / 40, np.minimum(fib, 5000).astype(int))
    x = rng.permutation(x).astype(np.float32)
    xs = [x, gradient_like(rng, 70_001, np.float16), gradient_like(rng, 1_000, np.float64)]
    for r in range(3):
        assert hc.encode_many([cupy.asarray(v) for v in xs], "qsgd", coder, 40, "max",
                              seed=r) == hc.encode_many(xs, "qsgd", coder, 40, "max", seed=r)


def sparse_like(rng, n, density, dtype=np.float32):
    """Mostly zeros, non-zeros in patches (what top-k-like or L2-QSGD states look like)."""
    x = np.zeros(n, dtype)
    k = max(1, int(n * density))
    at = np.sort(rng.integers(0, n, k))
    at[: k // 2] = np.clip(at[0] + np.arange(k // 2), 0, n - 1)  # half of them in one patch
    x[at] = (rng.standard_normal(k) * 10.0 ** rng.uniform(-3, 1, k)).astype(dtype)
    return x


@pytest.mark.parametrize("levels,norm", [(16, "l2"), (127, "max"), (3, "max")])
def test_quantize_division_across_the_float64_range(levels, norm):
    """The device divides by a tensor's scale through its reciprocal with an exact check
    (cuda/quantize.cu hc_div_try) and divides outright where the check cannot vouch: float64
    values from subnormal to 1e30, in every position of a group of 8, take both ways; the
    states must equal the CPU's divisions byte for byte."""
    rng = np.random.default_rng(11)
    for trial in range(4):
        n = 8 * 4099 + trial
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-320, 31, n)
        x[rng.random(n) < 0.2] = 0.0
        x[rng.integers(0, n, 50)] = 5e-324  # the smallest subnormal
        want = hc.encode(x, "qsgd", "huffman", levels, norm, seed=trial)
        assert hc.encode(cupy.asarray(x), "qsgd", "huffman", levels, norm, seed=trial) == want


@pytest.mark.parametrize("coder", CODERS)
def test_sparse_chunks_and_fixed_chunk_size(coder):
    x = np.zeros(3_000_000, np.float32)
    x[::5000] = 1.0  # sparse: auto chunk grows
    rng = np.random.default_rng(11)
    for y in (x, sparse_like(rng, 3_000_000, 1e-4), sparse_like(rng, 200_000, 0.02)):
        for clog2 in (None, 8, 20):
            for s, norm in ((8, "max"), (1, "l2"), (64, "l2")):
                want = hc.encode(y, "qsgd", coder, s, norm, seed=1, chunk_log2=clog2)
                assert hc.encode(cupy.asarray(y), "qsgd", coder, s, norm, seed=1,
                                 chunk_log2=clog2) == want, (clog2, s, norm)


@pytest.mark.parametrize("coder", CODERS)
def test_batch_is_byte_identical_with_mixed_dtypes_and_reuse(coder):
    rng = np.random.default_rng(0)
    xs = [gradient_like(rng, n, dt) for n, dt in
          [(4096, np.float32), (1, np.float32), (33, np.float16), (0, np.float32),
           (100_000, np.float64), (4096, np.float32)]]
    xs.append(np.zeros(10, np.float32))
    xs.append(np.zeros(10, np.float32))  # same one-symbol code as the previous: reused
    sparse = sparse_like(rng, 50_000, 0.001)
    xs += [sparse, sparse.copy(), sparse_like(rng, 70_000, 0.002, np.float16)]  # ZRH reuse
    for q, s, norm in CASES:
        want = hc.encode_many(xs, q, coder, s, norm, seed=9)
        got = hc.encode_many([cupy.asarray(x) for x in xs], q, coder, s, norm, seed=9)
        assert got == want


@pytest.mark.parametrize("coder,layout", ELIAS)
def test_elias_is_byte_identical(coder, layout):
    """The Elias baselines on the device: every quantizer setting and size, float16/32,
    sparse tensors with grown and fixed chunks (runs and gaps of up to 2^20 states: codes of
    more than 32 bits), one value throughout (one run per chunk), batches (empty codebooks
    marked reused)."""
    rng = np.random.default_rng(21)
    for quantizer, levels, norm in CASES:
        for n in SIZES:
            for dtype in (np.float32, np.float16):
                x = gradient_like(rng, n, dtype)
                want = hc.encode(x, quantizer, coder, levels, norm, seed=n, elias_layout=layout)
                assert hc.encode(cupy.asarray(x), quantizer, coder, levels, norm, seed=n,
                                 elias_layout=layout) == want, (quantizer, levels, n, dtype)
    x = np.zeros(3_000_000, np.float32)
    x[::5000] = 1.0
    for y in (x, sparse_like(rng, 3_000_000, 1e-5), np.full(2_000_000, 0.5, np.float32)):
        for clog2 in (None, 8, 20, 21):
            want = hc.encode(y, "qsgd", coder, 8, "max", seed=1, chunk_log2=clog2,
                             elias_layout=layout)
            assert hc.encode(cupy.asarray(y), "qsgd", coder, 8, "max", seed=1,
                             chunk_log2=clog2, elias_layout=layout) == want, clog2
    xs = [gradient_like(rng, k, np.float32) for k in (4096, 1, 0, 70_001)]
    xs.append(sparse_like(rng, 50_000, 0.001, np.float16))
    want = hc.encode_many(xs, "qsgd", coder, 16, "l2", seed=9, elias_layout=layout)
    assert hc.encode_many([cupy.asarray(x) for x in xs], "qsgd", coder, 16, "l2", seed=9,
                          elias_layout=layout) == want


@pytest.mark.parametrize("coder", ["huffman", "auto", "elias-gamma"])
@pytest.mark.parametrize("quantizer,norm", FORMATS)
def test_float_formats_are_byte_identical(quantizer, norm, coder):
    """CO3's float formats on the device (hc_quantize_fp; fp4's GenNorm moments summed there,
    fitted on the host): every size and dtype, values across float64's range (the division's
    exact and fallback paths, subnormal codes), a GenNorm scale past float32's range
    (clamped), a NaN tensor, batches of mixed dtypes."""
    rng = np.random.default_rng(23)
    for n in SIZES:
        for dtype in (np.float16, np.float32, np.float64):
            x = gradient_like(rng, n, dtype)
            want = hc.encode(x, quantizer, coder, norm=norm, seed=n)
            assert hc.encode(cupy.asarray(x), quantizer, coder, norm=norm, seed=n) == want, (
                n, dtype)
    base = gradient_like(rng, 20_000, np.float64)
    for factor in (1e-300, 1e-30, 1e30, 1e36, 1e300):
        x = base * factor
        want = hc.encode(x, quantizer, coder, norm=norm)
        assert hc.encode(cupy.asarray(x), quantizer, coder, norm=norm) == want, factor
    x = gradient_like(rng, 5000, np.float32)
    x[17] = np.nan
    want = hc.encode(x, quantizer, coder, norm=norm, nonfinite="propagate")
    assert hc.encode(cupy.asarray(x), quantizer, coder, norm=norm,
                     nonfinite="propagate") == want
    with pytest.raises(hc.NonFiniteError):
        hc.encode(cupy.asarray(x), quantizer, coder, norm=norm)
    xs = [gradient_like(rng, k, dt) for k, dt in (
        (4096, np.float32), (1, np.float16), (0, np.float32), (70_001, np.float64))]
    xs.append(sparse_like(rng, 50_000, 0.001, np.float16))
    want = hc.encode_many(xs, quantizer, coder, norm=norm, seed=9)
    assert hc.encode_many([cupy.asarray(x) for x in xs], quantizer, coder, norm=norm,
                          seed=9) == want


@pytest.mark.parametrize("coder", ["huffman", "auto", "elias-gamma"])
@pytest.mark.parametrize("norm", ["l2", "max"])
def test_buckets_are_byte_identical(norm, coder):
    """QSGD's buckets on the device (per-bucket max and sum of squares reduced across the
    lanes sharing a bucket, rounding with each bucket's scale): buckets of 16 elements (two
    lanes) to 2^20 (many warps), every size and dtype, a NaN tensor, batches."""
    rng = np.random.default_rng(25)
    for bucket in (16, 64, 512, 4096, 1 << 20):
        for n in SIZES:
            for dtype in (np.float16, np.float32, np.float64):
                x = gradient_like(rng, n, dtype)
                want = hc.encode(x, "qsgd", coder, 8, norm, seed=n, bucket=bucket)
                assert hc.encode(cupy.asarray(x), "qsgd", coder, 8, norm, seed=n,
                                 bucket=bucket) == want, (bucket, n, dtype)
    x = gradient_like(rng, 5000, np.float32)
    x[4321] = -np.inf
    want = hc.encode(x, "qsgd", coder, 16, norm, bucket=64, nonfinite="propagate")
    assert hc.encode(cupy.asarray(x), "qsgd", coder, 16, norm, bucket=64,
                     nonfinite="propagate") == want
    xs = [gradient_like(rng, k, dt) for k, dt in (
        (4096, np.float32), (1, np.float16), (0, np.float32), (70_001, np.float64))]
    xs.append(sparse_like(rng, 50_000, 0.001, np.float16))
    want = hc.encode_many(xs, "qsgd", coder, 127, norm, seed=9, bucket=256)
    assert hc.encode_many([cupy.asarray(x) for x in xs], "qsgd", coder, 127, norm, seed=9,
                          bucket=256) == want


def test_sh_is_byte_identical():
    """SH on the device (hc_sample_counts: the 1000 sampled positions of the seed's sample
    stream, counts from 1; then the huffman kernels): every quantizer setting and size,
    float16/32, sparse tensors with grown and fixed chunks, batches (one seed for all their
    tensors, codebooks reused), and its payloads decode-and-summed as huffman's are, beside
    huffman ones."""
    rng = np.random.default_rng(27)
    for quantizer, levels, norm in CASES:
        for n in SIZES:
            for dtype in (np.float32, np.float16):
                x = gradient_like(rng, n, dtype)
                want = hc.encode(x, quantizer, "sh", levels, norm, seed=n + 5)
                assert hc.encode(cupy.asarray(x), quantizer, "sh", levels, norm,
                                 seed=n + 5) == want, (quantizer, levels, n, dtype)
    y = sparse_like(rng, 3_000_000, 1e-4)
    for clog2 in (None, 8, 20):
        want = hc.encode(y, "qsgd", "sh", 8, "max", seed=1, chunk_log2=clog2)
        assert hc.encode(cupy.asarray(y), "qsgd", "sh", 8, "max", seed=1,
                         chunk_log2=clog2) == want, clog2
    shapes = [(4096,), (1,), (0,), (70_001,), (10,), (10,)]
    blobs = []
    for r in range(3):
        xs = [gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh) for sh in shapes]
        xs[-1] = xs[-2] = np.zeros(10, np.float32)  # equal codes: the second one reused
        want = hc.encode_many(xs, "qsgd", ("sh", "sh", "huffman")[r], 16, "l2", seed=9 + r)
        assert hc.encode_many([cupy.asarray(x) for x in xs], "qsgd", ("sh", "sh", "huffman")[r],
                              16, "l2", seed=9 + r) == want
        blobs.append(want)
    assert_sums_as_cpu(blobs, (1, 3))


def test_shs_is_byte_identical():
    """SHS on the device (its code from SH's sampled counts, hc_build_shs_codes; the zero
    runs and levels of the lists of non-zeros, shs.cu): every quantizer setting and size,
    float32/16, sparse tensors with grown and fixed chunks (runs of many times 200 zeros:
    the writer's path straight to global memory), QSGD's buckets, batches of shs beside
    huffman payloads; their decode-and-sum the host's (corrupted ones:
    test_decode_rejects_corruption_without_faulting)."""
    rng = np.random.default_rng(30)
    for quantizer, levels, norm in CASES:
        for n in SIZES:
            for dtype in (np.float32, np.float16):
                x = gradient_like(rng, n, dtype)
                want = hc.encode(x, quantizer, "shs", levels, norm, seed=n + 5)
                assert hc.encode(cupy.asarray(x), quantizer, "shs", levels, norm,
                                 seed=n + 5) == want, (quantizer, levels, n, dtype)
    y = sparse_like(rng, 3_000_000, 1e-5)
    for clog2 in (None, 8, 20, 24):
        want = hc.encode(y, "qsgd", "shs", 8, "max", seed=1, chunk_log2=clog2)
        assert hc.encode(cupy.asarray(y), "qsgd", "shs", 8, "max", seed=1,
                         chunk_log2=clog2) == want, clog2
        assert np.array_equal(cupy.asnumpy(gpu_backend.decode_sum([want])),
                              hc.decode(want).astype(np.float64))
    shapes = [(4096,), (1,), (0,), (70_001,), (10,), (200_000,)]
    for bucket in (None, 512):
        blobs = []
        for r in range(3):
            xs = [gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh) for sh in shapes]
            xs[-1] = sparse_like(rng, 200_000, 0.003)
            coder = ("shs", "huffman", "shs")[r]
            want = hc.encode_many(xs, "qsgd", coder, 16, "l2", seed=9 + r, bucket=bucket)
            assert hc.encode_many([cupy.asarray(x) for x in xs], "qsgd", coder, 16, "l2",
                                  seed=9 + r, bucket=bucket) == want, (bucket, r)
            blobs.append(want)
        assert_sums_as_cpu(blobs, (1, 3), bucket)


@pytest.mark.parametrize("coder", ["huffman", "auto", "elias-gamma"])
def test_quantized_topk_is_byte_identical(coder):
    """Quantized top-k on the device (radix select per tensor, ties by index, rounding of the
    kept entries): every size and dtype, ratios from one entry to all, many ties (a few
    distinct values), all-zero and all-equal tensors, a NaN tensor, batches of mixed
    dtypes; and its payloads decode-and-summed as the host sums them."""
    rng = np.random.default_rng(28)
    for n in SIZES:
        for dtype in (np.float16, np.float32, np.float64):
            x = gradient_like(rng, n, dtype)
            for ratio in (1e-5, 0.01, 0.5, 1.0):
                want = hc.encode(x, "topk", coder, 8, seed=n, ratio=ratio)
                assert hc.encode(cupy.asarray(x), "topk", coder, 8, seed=n,
                                 ratio=ratio) == want, (n, dtype, ratio)
    for x in (rng.choice([-2.0, -0.5, 0.0, 0.5, 1.0], 100_000).astype(np.float32),
              np.zeros(5000, np.float32), np.full(4097, 0.25, np.float64)):
        for ratio in (0.001, 0.3):
            want = hc.encode(x, "topk", coder, 1, seed=3, ratio=ratio)
            assert hc.encode(cupy.asarray(x), "topk", coder, 1, seed=3, ratio=ratio) == want
    x = gradient_like(rng, 5000, np.float32)
    x[9] = np.nan
    want = hc.encode(x, "topk", coder, 4, ratio=0.1, nonfinite="propagate")
    assert hc.encode(cupy.asarray(x), "topk", coder, 4, ratio=0.1,
                     nonfinite="propagate") == want
    xs = [gradient_like(rng, k, dt) for k, dt in (
        (4096, np.float32), (1, np.float16), (0, np.float32), (70_001, np.float64))]
    blobs = [hc.encode_many(xs, "topk", coder, 16, seed=r, ratio=0.02) for r in range(3)]
    for r in range(3):
        assert hc.encode_many([cupy.asarray(x) for x in xs], "topk", coder, 16, seed=r,
                              ratio=0.02) == blobs[r]
    assert_sums_as_cpu(blobs, (1, 3))


@pytest.mark.parametrize("coder,layout", [("huffman", "runlength"), ("sh", "runlength"),
                                          ("shs", "runlength"), ("auto", "runlength"),
                                          ("zrh", "runlength"), ("elias-gamma", "runlength"),
                                          ("elias-delta", "gap")])
def test_exact_topk_is_byte_identical(coder, layout):
    """Exact top-k (the default levels 0) on the device: the kept entries' signs and their
    raw float32 magnitudes after each non-zero's codeword or item (the writers' _raw
    kernels): every size and dtype, ratios from one entry to all, runs of equal signs (long
    run-length items of many magnitudes), a NaN tensor, batches of mixed dtypes; and its
    payloads decode-and-summed as the host sums them, a corrupted one rejected as the CPU
    rejects it without faulting the device."""
    rng = np.random.default_rng(29)
    for n in SIZES:
        for dtype in (np.float16, np.float32, np.float64):
            x = gradient_like(rng, n, dtype)
            for ratio in (1e-5, 0.01, 0.5, 1.0):
                want = hc.encode(x, "topk", coder, seed=n, ratio=ratio, elias_layout=layout)
                assert hc.encode(cupy.asarray(x), "topk", coder, seed=n, ratio=ratio,
                                 elias_layout=layout) == want, (n, dtype, ratio)
    runs = np.repeat(rng.standard_normal(40), rng.integers(1, 30_000, 40)).astype(np.float32)
    assert (hc.encode(cupy.asarray(runs), "topk", coder, ratio=0.9, elias_layout=layout)
            == hc.encode(runs, "topk", coder, ratio=0.9, elias_layout=layout))
    x = gradient_like(rng, 5000, np.float32)
    x[9] = np.nan
    want = hc.encode(x, "topk", coder, ratio=0.1, nonfinite="propagate", elias_layout=layout)
    assert hc.encode(cupy.asarray(x), "topk", coder, ratio=0.1, nonfinite="propagate",
                     elias_layout=layout) == want
    xs = [gradient_like(rng, k, dt) for k, dt in (
        (4096, np.float32), (1, np.float16), (0, np.float32), (70_001, np.float64))]
    xs.append(sparse_like(rng, 200_000, 0.01))
    blobs = [hc.encode_many(xs, "topk", coder, seed=r, ratio=0.02, elias_layout=layout)
             for r in range(3)]
    for r in range(3):
        assert hc.encode_many([cupy.asarray(x) for x in xs], "topk", coder, seed=r,
                              ratio=0.02, elias_layout=layout) == blobs[r]
    assert_sums_as_cpu(blobs, (1, 3))
    assert rejected_as_on_the_cpu(blobs, rng, 100, "") > 3
    cupy.cuda.Device().synchronize()  # the device is still healthy


def rejected_as_on_the_cpu(blobs, rng, trials: int, what: str) -> int:
    """``trials`` times one bit of a random section of payload 1 (a bundle) flipped, then
    decode-and-summed between payloads 0 and 2: rejected, naming payload 1 (and ``what``),
    exactly when the CPU rejects it, else the CPU's sums. How many were rejected."""
    bundle, secs = hc.payload.unpack(blobs[1])
    rejected = 0
    for _ in range(trials):
        t = int(rng.choice([j for j, sec in enumerate(secs) if len(sec.data)]))
        data = bytearray(secs[t].data)
        data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        bad = hc.payload.pack([hc.payload.Section(**{**sec.__dict__, "data": bytes(data)})
                               if j == t else sec for j, sec in enumerate(secs)], bundle=True)
        trio = [blobs[0], bad, blobs[2]]
        try:
            want = [exchange.reduce_mean(list(p), average=False)
                    for p in zip(*[hc.decode_many(b) for b in trio])]
        except hc.PayloadError:
            rejected += 1
            with pytest.raises(hc.PayloadError, match=f"^payload 1: {what}"):
                gpu_backend.decode_sum(trio)
            continue
        got = gpu_backend.decode_sum(trio)
        assert all(np.array_equal(cupy.asnumpy(g), w, equal_nan=True)
                   for g, w in zip(got, want))
    return rejected


def test_zrh_rice_runs_longer_than_a_word(monkeypatch):
    """A Rice code with k = 0 forced on a tensor with long zero runs: items of thousands of
    bits take the writer's slow path (straight to global memory)."""
    from horovod_huffcomp.coders import auto, zrh
    from horovod_huffcomp.coders.chunks import RUN_ALPHABET

    def rice(s):
        return zrh.ZrhCode(zrh.MODE_RICE, [0], np.zeros((1, RUN_ALPHABET)), [-1],
                           np.full((1, 2 * s), int(np.log2(2 * s))), [-1])

    def rice_encode(q, coder, clog2, prev=None, scanned=None):  # the CPU backend's path
        zc = rice(q.levels)
        return ("zrh", zc.to_bytes()) + zrh.encode(q, clog2, zc,
                                                   None if scanned is None else scanned[0])

    def rice_plan_many(coder, hist, sizes, s, raw_bits, prev=None):  # the GPU backend's
        zc, count = rice(s), len(sizes)
        rt, lt = zrh.packed_tables(zc.mode, zc.ks, zc.rl, zc.rs, zc.ll)
        zpar = np.zeros((count, auto.ZRH_PARAMS), np.int32)
        zpar[:, 0], zpar[:, 1], zpar[:, 2] = zc.mode, zc.ctxmode, zc.ks[0]
        rtab = np.zeros((count, zrh.NCTX, RUN_ALPHABET), np.uint32)
        ltab = np.zeros((count, zrh.NLCTX, 2 * s), np.uint32)
        rtab[:, :1], ltab[:, :1] = rt, lt
        huffman = np.zeros((count, 2 * s + 1), np.uint8)
        return [("zrh", zc.to_bytes())] * count, (huffman, huffman.astype(np.uint16), zpar,
                                                  rtab, ltab)

    monkeypatch.setattr(auto, "encode", rice_encode)
    monkeypatch.setattr(auto, "runs_together", lambda q: False)  # the CPU: tensor by tensor
    monkeypatch.setattr(auto, "plan_many", rice_plan_many)
    rng = np.random.default_rng(4)
    x = np.zeros(300_000, np.float32)
    x[rng.integers(0, 300_000, 40)] = 1.0
    x[1000:1400] = rng.standard_normal(400)
    for clog2 in (None, 12, 16):
        want = hc.encode(x, "qsgd", "zrh", 4, "max", seed=3, chunk_log2=clog2)
        got = hc.encode(cupy.asarray(x), "qsgd", "zrh", 4, "max", seed=3, chunk_log2=clog2)
        assert rice(4).to_bytes() in want  # the forced code, not the planner's choice
        assert got == want
        assert np.array_equal(cupy.asnumpy(gpu_backend.decode_sum([want])),
                              hc.decode(want).astype(np.float64))


def test_payloads_outlive_the_staging_buffer():
    """The packed data passes through a reused page-locked buffer: a payload must not change
    when later encodes (larger, from other threads) reuse or regrow it."""
    import threading

    rng = np.random.default_rng(3)
    xs = [gradient_like(rng, n, np.float32) for n in (70_000, 3_000_000, 50_000)]
    want = [hc.encode(x, "qsgd", "huffman", 16, "max", seed=2) for x in xs]
    got = [hc.encode(cupy.asarray(x), "qsgd", "huffman", 16, "max", seed=2) for x in xs]
    other = []
    t = threading.Thread(target=lambda: other.append(
        hc.encode(cupy.asarray(xs[1]), "qsgd", "huffman", 16, "max", seed=2)))
    t.start()
    t.join()
    assert got == want and other == want[1:2]


def test_torch_cuda_tensors_through_dlpack():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    x = torch.randn(10_000, device="cuda")
    assert hc.encode(x, "qsgd", "huffman", 8, seed=3) == hc.encode(x.cpu().numpy(), "qsgd",
                                                                   "huffman", 8, seed=3)


def test_nonfinite():
    x = np.array([1.0, np.nan, 2.0], np.float32)
    with pytest.raises(hc.NonFiniteError):
        hc.encode(cupy.asarray(x), "qsgd", "huffman")
    assert (hc.encode(cupy.asarray(x), "qsgd", "huffman", nonfinite="propagate")
            == hc.encode(x, "qsgd", "huffman", nonfinite="propagate"))
    # finite, but a scale past float32's range: refused, or a NaN tensor (a bucket)
    big = np.array([1e39, -3.0, 0.0, 1.0] * 8)
    for kw in (dict(quantizer="qsgd"), dict(quantizer="topk"), dict(quantizer="topk", levels=4),
               dict(quantizer="qsgd", norm="l2", bucket=16), dict(coder="zrh")):
        with pytest.raises(hc.NonFiniteError, match="past float32's range"):
            hc.encode(cupy.asarray(big), ratio=0.5, **kw)
        assert (hc.encode(cupy.asarray(big), ratio=0.5, nonfinite="propagate", **kw)
                == hc.encode(big, ratio=0.5, nonfinite="propagate", **kw)), kw


def test_rlh_is_byte_identical():
    """RLH on the device (gpu_rlh over CuPy): every size and dtype, long runs cut at chunks,
    exact top-k's raw magnitudes after its runs, buckets, a float format, batches; a tensor
    with more pairs than a 15-bit code has codewords (its runs cut). Its payloads
    decode-and-summed on the device (cuda/rlh.cu) as the host sums them, corrupted ones
    rejected as the CPU rejects them without faulting the device."""
    rng = np.random.default_rng(31)
    for n in SIZES:
        for dtype in (np.float16, np.float32, np.float64):
            x = gradient_like(rng, n, dtype)
            for kw in (dict(levels=8), dict(levels=1, norm="l2"), dict(quantizer="topk"),
                       dict(quantizer="topk", ratio=0.5), dict(quantizer="fp8"),
                       dict(bucket=512), dict(levels=4, chunk_log2=9)):
                assert gpu_backend.supports(kw.get("quantizer", "qsgd"), "rlh",
                                            bucket=kw.get("bucket"), levels=kw.get("levels"))
                assert (hc.encode(cupy.asarray(x), coder="rlh", seed=n, **kw)
                        == hc.encode(x, coder="rlh", seed=n, **kw)), (n, dtype, kw)
    runs = np.repeat(rng.standard_normal(40), rng.integers(1, 30_000, 40)).astype(np.float32)
    xs = [runs, gradient_like(rng, 70_001, np.float32), np.zeros(0, np.float32),
          np.ones(9, np.float16)]
    for kw in (dict(levels=4), dict(quantizer="topk", ratio=0.9)):
        assert (hc.encode_many([cupy.asarray(x) for x in xs], coder="rlh", seed=3, **kw)
                == hc.encode_many(xs, coder="rlh", seed=3, **kw)), kw
    k, r = np.meshgrid(np.arange(-64, 65), np.arange(1, 261))
    many = np.repeat(k.ravel(), r.ravel()).astype(np.float32)  # 33,540 distinct pairs
    for kw in (dict(levels=64, norm="max"), dict(quantizer="topk", ratio=1.0)):
        assert (hc.encode(cupy.asarray(many), coder="rlh", chunk_log2=24, **kw)
                == hc.encode(many, coder="rlh", chunk_log2=24, **kw)), kw
    for kw in (dict(levels=8), dict(levels=4, bucket=512), dict(quantizer="topk", ratio=0.3)):
        blobs = [hc.encode_many(xs, coder="rlh", seed=r, **kw) for r in range(3)]
        assert_sums_as_cpu(blobs, (1, 3))
        assert rejected_as_on_the_cpu(blobs, rng, 60, "rlh data") > 3, kw
    cupy.cuda.Device().synchronize()  # the device is still healthy


@pytest.fixture(params=["tiles", "symbols"])
def decode_path(request, monkeypatch):
    """Both ways the huffman tensors of several payloads are summed (gpu_backend._by_symbols):
    a thread per chunk over every payload, or a symbol buffer then a sum per element."""
    monkeypatch.setattr(gpu_backend, "SYMBOLS_MAX_CHUNKS",
                        0 if request.param == "tiles" else 1 << 40)
    launched, kernel = [], gpu_backend.kernel

    def recording(stage, name):
        launched.append(name)
        return kernel(stage, name)

    monkeypatch.setattr(gpu_backend, "kernel", recording)
    return request.param, launched


def assert_sums_as_cpu(blobs, counts, *label):
    """``decode_sum`` of the first n payloads, for each n in ``counts``, equal tensor by
    tensor to the host's float64 rank-order sum of their decoded values."""
    per_rank = [hc.decode_many(b) for b in blobs]
    for n in counts:
        got = gpu_backend.decode_sum(blobs[:n], bundle=True)
        for t, parts in enumerate(zip(*per_rank[:n])):
            want = exchange.reduce_mean(list(parts), average=False)
            assert np.array_equal(cupy.asnumpy(got[t]), want), label + (n, t)


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("workers", [1, 2, 5])
def test_decode_sum_matches_cpu_reduce(workers, coder, decode_path):
    rng = np.random.default_rng(workers)
    shapes = [(300, 7), (1,), (), (70_001,), (200_000,)]
    blobs = []
    for r in range(workers):
        xs = [gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh) for sh in shapes]
        xs[-1] = sparse_like(rng, 200_000, 0.003)
        blobs.append(hc.encode_many(xs, "qsgd", coder, 16, "l2", seed=r))
    got = gpu_backend.decode_sum(blobs, average=True)
    path, launched = decode_path
    if coder == "huffman" and workers > 1:
        assert ("hc_huffman_decode_symbols" in launched) == (path == "symbols")
    per_rank = [hc.decode_many(b) for b in blobs]
    for t in range(len(shapes)):
        want = exchange.reduce_mean([p[t] for p in per_rank])
        assert np.array_equal(cupy.asnumpy(got[t]), want)


@pytest.mark.parametrize("coder,layout", ELIAS)
def test_elias_decode_sum_matches_cpu_reduce(coder, layout, decode_path):
    """Elias payloads of 3 workers (and beside them a huffman and an auto one) decoded into
    the state buffer and summed as the host sums them."""
    rng = np.random.default_rng(22)
    shapes = [(300, 7), (1,), (), (70_001,), (200_000,)]
    blobs = []
    for r in range(5):
        xs = [gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh) for sh in shapes]
        xs[-1] = sparse_like(rng, 200_000, 0.003)
        c = coder if r < 3 else ("huffman", "auto")[r - 3]
        blobs.append(hc.encode_many([cupy.asarray(x) for x in xs], "qsgd", c, 16, "l2", seed=r,
                                    elias_layout=layout))
    assert_sums_as_cpu(blobs, (1, 3, 5))


def _ranks(coders, **opts):
    return [dict(opts, coder=c) for c in coders]


@pytest.mark.parametrize("ranks", [
    *[_ranks(("huffman", "huffman", "auto", "elias-delta"), quantizer=q, norm=norm)
      for q, norm in FORMATS],
    [*_ranks(("huffman", "auto", "elias-delta"), quantizer="qsgd", levels=16, norm="l2",
             bucket=512), dict(quantizer="qsgd", levels=16, norm="l2", coder="huffman")]])
def test_new_quantizers_decode_sum_matches_cpu_reduce(ranks, decode_path):
    """Payloads of 4 workers quantized to a float format (decoded with the format's values),
    or in QSGD's buckets (decoded payload by payload, summed with each bucket's scale; a
    payload without buckets among them); huffman, auto and Elias; float16/32/64: summed as
    the host sums them."""
    rng = np.random.default_rng(24)
    shapes = [(300, 7), (1,), (), (70_001,), (200_000,)]
    dtypes = [np.float32, np.float16, np.float64, np.float32, np.float32]
    blobs = []
    for r, opts in enumerate(ranks):
        xs = [gradient_like(rng, int(np.prod(sh)), dt).reshape(sh)
              for sh, dt in zip(shapes, dtypes)]
        xs[-1] = sparse_like(rng, 200_000, 0.003)
        blobs.append(hc.encode_many([cupy.asarray(x) for x in xs], seed=r, **opts))
    assert_sums_as_cpu(blobs, (1, 2, 4))


def test_decode_sum_of_payloads_coded_differently(decode_path):
    """Tensors every payload codes with huffman in the same chunks are summed by one launch
    over all payloads, the others payload by payload: mixed here (chunk sizes, huffman vs
    ZRH per tensor, a tensor whose chunk size differs between ranks) in one sum."""
    rng = np.random.default_rng(9)
    shapes = [(5000,), (70_001,), (3, 1000), (40_000,)]
    blobs = []
    for r in range(4):
        xs = [gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh) for sh in shapes]
        xs[3] = sparse_like(rng, 40_000, 0.002 if r % 2 else 0.2)  # chunk size follows density
        coder, clog2 = [("huffman", None), ("huffman", None), ("auto", None), ("huffman", 9)][r]
        blobs.append(hc.encode_many(xs, "qsgd", coder, 8, "max", seed=r, chunk_log2=clog2))
    # 2: tensor 3 alone (chunk sizes differ); 3, 4: ZRH, other chunks
    assert_sums_as_cpu(blobs, (2, 3, 4))


def test_decode_sum_names_the_one_bad_payload(decode_path):
    """Corrupted chunks in one of several payloads summed by one launch: rejected exactly when
    the CPU rejects that payload, the error names it, otherwise the sum is the CPU's."""
    rng = np.random.default_rng(6)
    xs = [gradient_like(rng, 20_000, np.float32) for _ in range(3)]
    blobs = [hc.encode(x, "qsgd", "huffman", 8, "max", seed=r, chunk_log2=8)
             for r, x in enumerate(xs)]
    bundle, (sec,) = hc.payload.unpack(blobs[1])
    rejected = 0
    for _ in range(100):
        data = bytearray(sec.data)
        data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        bad = hc.payload.pack([hc.payload.Section(**{**sec.__dict__, "data": bytes(data)})],
                              bundle=False)
        try:
            cpu = hc.decode(bad)
        except hc.PayloadError:
            cpu = None
        trio = [blobs[0], bad, blobs[2]]
        if cpu is None:
            rejected += 1
            with pytest.raises(hc.PayloadError, match="^payload 1: huffman data"):
                gpu_backend.decode_sum(trio)
        else:
            want = exchange.reduce_mean([hc.decode(b) for b in trio], average=False)
            assert np.array_equal(cupy.asnumpy(gpu_backend.decode_sum(trio)), want)
    assert rejected > 20
    cupy.cuda.Device().synchronize()


@pytest.mark.parametrize("coder,sparse,layout", [
    ("huffman", False, None), ("zrh", False, None), ("zrh", True, None), ("shs", False, None),
    ("shs", True, None),
    ("elias-gamma", False, "runlength"), ("elias-delta", True, "gap"),
    ("elias-omega", False, "gap")])
def test_decode_rejects_corruption_without_faulting(coder, sparse, layout):
    rng = np.random.default_rng(5)
    x = sparse_like(rng, 50_000, 0.01) if sparse else gradient_like(rng, 50_000, np.float32)
    blob = hc.encode(x, "qsgd", coder, 8, "max", seed=1, chunk_log2=8,
                     elias_layout=layout or "runlength")
    bundle, (sec,) = hc.payload.unpack(blob)
    rejected = 0
    for k in range(300):
        data = bytearray(sec.data)
        data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        sec2 = hc.payload.Section(**{**sec.__dict__, "data": bytes(data)})
        mutated = hc.payload.pack([sec2], bundle=False)
        try:
            cpu = hc.decode(mutated)
        except hc.PayloadError:
            cpu = None
        try:
            gpu = cupy.asnumpy(gpu_backend.decode_sum([mutated]))
        except hc.PayloadError:
            gpu = None
        assert (cpu is None) == (gpu is None)
        if cpu is not None:
            assert np.array_equal(gpu, cpu.astype(np.float64))
        rejected += cpu is None
    assert rejected > 50
    cupy.cuda.Device().synchronize()  # the device is still healthy


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("n", [2**20 + 3, 2**26 + 1])
def test_large_tensors(n, coder):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    want = hc.encode(x, "qsgd", coder, 16, "max", seed=4)
    assert hc.encode(cupy.asarray(x), "qsgd", coder, 16, "max", seed=4) == want
    assert np.array_equal(cupy.asnumpy(gpu_backend.decode_sum([want])),
                          hc.decode(want).astype(np.float64))


@pytest.mark.parametrize("model", ["mlp", "cnn", "transformer"])
def test_real_gradients(model):
    """Gradients of small models trained on digits (bench.gradients, 4 workers' mini-batches):
    each worker's bundle byte-identical on the device for every coder and two quantizer
    settings, and their decode-and-sum the CPU's rank-order sum."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from horovod_huffcomp.bench.gradients import worker_gradients

    workers = [[g for _, g in grads] for grads in worker_gradients(model, 4, steps=5)]
    for coder in CODERS + ["elias-gamma", "sh", "shs", "rlh"]:
        for s, norm in ((16, "max"), (4, "l2")):
            blobs = [hc.encode_many(xs, "qsgd", coder, s, norm, seed=r)
                     for r, xs in enumerate(workers)]
            for r, xs in enumerate(workers):
                assert hc.encode_many([cupy.asarray(x) for x in xs], "qsgd", coder, s, norm,
                                      seed=r) == blobs[r], (coder, s, r)
            got = gpu_backend.decode_sum(blobs, bundle=True)
            per_rank = [hc.decode_many(b) for b in blobs]
            for t, sums in enumerate(got):
                want = exchange.reduce_mean([p[t] for p in per_rank], average=False)
                assert np.array_equal(cupy.asnumpy(sums), want), (coder, s, t)


def test_poisoned_device_buffers(monkeypatch, decode_path):
    """Every buffer taken uninitialised (cupy.empty) comes filled with 0xFF bytes (NaN for
    floats, -1 for integers): the payloads and sums stay the CPU's, so every element they
    come from was written."""
    real_empty = cupy.empty

    def poisoned(*args, **kwargs):
        a = real_empty(*args, **kwargs)
        if a.nbytes:
            a.data.memset(0xFF, a.nbytes)
        return a

    monkeypatch.setattr(cupy, "empty", poisoned)
    rng = np.random.default_rng(12)
    shapes = [(1,), (7,), (300, 7), (4097,), (70_001,)]
    for coder in CODERS + ["elias-delta"]:
        blobs = []
        for r in range(3):
            xs = [gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh) for sh in shapes]
            xs[-1] = sparse_like(rng, 70_001, 0.01)
            blobs.append(hc.encode_many(xs, "qsgd", coder, 8, "max", seed=r))
            assert hc.encode_many([cupy.asarray(x) for x in xs], "qsgd", coder, 8, "max",
                                  seed=r) == blobs[-1]
        assert_sums_as_cpu(blobs, (1, 3), coder)


@pytest.mark.parametrize("coder", ["huffman", "auto"])
def test_two_to_the_28_elements(coder):
    """The largest size the issue names: 2^28 float32 entries (1 GiB), one tensor."""
    rng = np.random.default_rng(28)
    x = rng.standard_normal(2**28, dtype=np.float32)
    x[: 2**27] *= rng.random(2**27, dtype=np.float32) < 0.01  # a sparse half for ZRH
    want = hc.encode(x, "qsgd", coder, 8, "l2", seed=5)
    assert hc.encode(cupy.asarray(x), "qsgd", coder, 8, "l2", seed=5) == want
    assert np.array_equal(cupy.asnumpy(gpu_backend.decode_sum([want])),
                          hc.decode(want).astype(np.float64))


@pytest.mark.parametrize("coder", ["huffman", "auto", "rlh"])
def test_exchange_of_device_gradients(coder):
    """What the adapters do with CUDA gradients: encode on the device (or on the host where
    the GPU backend does not cover the coder), decode-and-sum with error feedback kept on
    the device; the same numbers as the host path."""
    rng = np.random.default_rng(7)
    shapes = [(64, 33), (5,), (4097,)]
    xs = [[gradient_like(rng, int(np.prod(sh)), np.float32).reshape(sh) for sh in shapes]
          for _ in range(3)]
    states = {dev: [exchange.CompressorState(coder=coder, levels=8, error_feedback=True)
                    for _ in range(3)] for dev in ("host", "cuda")}
    for _step in range(2):  # the second step applies the residual of the first
        results = {}
        for dev, ranks in states.items():
            frames = []
            for r, st in enumerate(ranks):
                arrs = [cupy.asarray(x) if dev == "cuda" else x for x in xs[r]]
                if st.memory is not None:
                    arrs = [st.memory.apply(f"t{j}", a) for j, a in enumerate(arrs)]
                blob = hc.encode_many(arrs, "qsgd", coder, 8, "l2", seed=st.next_seed("g", r))
                frames.append(exchange.frame(blob))
                ranks[r]._sent = arrs
            gathered = np.frombuffer(b"".join(frames), np.uint8)
            split = exchange.split_frames(gathered, 3)
            out = []
            for r, st in enumerate(ranks):
                means, own = exchange.decode_mean(split, shapes, rank=r, cuda=dev == "cuda")
                for j, (a, o) in enumerate(zip(st._sent, own)):
                    st.record(f"t{j}", a, o)
                out.append(means)
            results[dev] = out
        for r in range(3):
            for m_host, m_dev in zip(results["host"][r], results["cuda"][r]):
                assert isinstance(m_dev, cupy.ndarray)
                assert np.array_equal(cupy.asnumpy(m_dev), m_host)
            for j in range(len(shapes)):
                e_dev = states["cuda"][r].memory.residual[f"t{j}"]
                assert isinstance(e_dev, cupy.ndarray)
                assert np.array_equal(cupy.asnumpy(e_dev),
                                      states["host"][r].memory.residual[f"t{j}"])


def test_exchange_names_the_bad_rank_on_the_device():
    x = np.ones(1000, np.float32)
    blobs = [hc.encode_many([x], "qsgd", "huffman", 4, seed=r) for r in range(2)]
    bad = bytearray(blobs[1])
    bad[len(bad) // 2] ^= 0x10
    frames = [exchange.frame(blobs[0]), exchange.frame(bytes(bad))]
    split = exchange.split_frames(np.frombuffer(b"".join(frames), np.uint8), 2)
    with pytest.raises(hc.PayloadError, match="rank 1"):
        exchange.decode_mean(split, [(1000,)], rank=0, cuda=True)
