"""QSGD's buckets: each run of ``bucket`` elements quantized with its own scale."""
import math
import struct

import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import fuzz, payload, quantizers
from horovod_huffcomp.rng import draw24, stream_key
from conftest import CODERS, gradient_like


def f32_up(v: float) -> float:
    """The least float32 value >= v, built independently of the package's helper."""
    f = np.float32(v)
    return float(f if float(f) >= v else np.nextafter(f, np.float32(np.inf)))


def reference_states(x, s, norm, bucket, seed, stream=0):
    """QSGD's buckets written out element by element: bucket b's scale is its max (max norm)
    or ||x_b||_2 rounded up to float32 (scale_of of that bucket alone), the uniform of element
    i is the tensor's stream's draw i, whatever the bucket."""
    key = np.uint64(stream_key(np.uint64(seed), np.uint64(stream)))  # (an int from Python)
    n = x.size
    scales = []
    out = np.zeros(n, np.int8)
    for lo in range(0, max(n, 1), bucket):
        part = x[lo: lo + bucket]
        if norm == "max":
            sc = f32_up(float(np.abs(part).max())) if part.size else 0.0
        else:
            sc = quantizers.scale_of(part, "qsgd", "l2")
        scales.append(sc)
        for j, v in enumerate(part.astype(np.float64)):
            if sc == 0:
                continue
            a = abs(v) * s / sc
            lev = math.floor(a)
            if draw24(key, lo + j) / 2.0 ** 24 < a - lev:
                lev += 1
            out[lo + j] = -min(lev, s) if v < 0 else min(lev, s)
    return out, np.array(scales, np.float32)


@pytest.mark.parametrize("n,bucket,norm,s", [(1000, 16, "max", 4), (1000, 64, "l2", 16),
                                              (4099, 512, "l2", 3), (5, 16, "max", 127),
                                              (0, 32, "l2", 8)])
def test_states_and_scales_match_a_reference(n, bucket, norm, s):
    x = gradient_like(n, seed=n) * np.repeat(np.geomspace(1e-3, 10, 64), -(-n // 64))[:n]
    x = x.astype(np.float32)
    q = quantizers.quantize(x, "qsgd", s, norm, 9, stream=2, bucket=bucket)
    states, scales = reference_states(x, s, norm, bucket, 9, stream=2)
    assert q.bucket_log2 == bucket.bit_length() - 1
    np.testing.assert_array_equal(q.scale, scales)
    np.testing.assert_array_equal(q.states[:n], states)
    assert not q.states[n:].any()
    # a payload decodes to state * (its bucket's scale) / s, in float64 then rounded once
    y = hc.decode(hc.encode(x, "qsgd", "auto", s, norm, seed=9, bucket=bucket))
    states, scales = reference_states(x, s, norm, bucket, 9)
    each = np.repeat(scales.astype(np.float64), bucket)[:n]
    np.testing.assert_array_equal(y, (states * each / s).astype(np.float32))


@pytest.mark.parametrize("norm", ["l2", "max"])
def test_one_bucket_covering_the_tensor_is_the_unbucketed_quantizer(norm):
    x = gradient_like(3000, seed=4)
    plain = quantizers.quantize(x, "qsgd", 16, norm, 5)
    one = quantizers.quantize(x, "qsgd", 16, norm, 5, bucket=4096)
    np.testing.assert_array_equal(one.states, plain.states)
    assert one.scale.tolist() == [plain.scale]
    for coder in ("auto", "rlh", "elias-delta"):
        a = hc.encode(x, "qsgd", coder, 16, norm, seed=5)
        b = hc.encode(x, "qsgd", coder, 16, norm, seed=5, bucket=4096)
        np.testing.assert_array_equal(hc.decode(a), hc.decode(b))
        assert len(b) == len(a) + 1  # the bucket byte (one scale either way)


def test_buckets_are_unbiased_and_cut_the_variance():
    """E[decode] = x; and QSGD's L2 scale grows as the square root of the elements it covers,
    so on 2^16 entries buckets of 256 cut the error's variance by about 16x (sqrt(2^16 /
    256)): what makes s = 16 with the L2 norm train (docs/benchmarks.md)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(1 << 16) * np.repeat(np.geomspace(0.1, 1, 16), 4096))
    x = x.astype(np.float32)
    mean = {None: np.zeros(x.size), 256: np.zeros(x.size)}
    mse = {None: 0.0, 256: 0.0}
    trials = 100
    for seed in range(trials):
        for b in mean:
            y = hc.decode(hc.encode(x, "qsgd", "auto", 4, "l2", seed=seed, bucket=b))
            mean[b] += y / trials
            mse[b] += float(np.mean((y - x.astype(np.float64)) ** 2)) / trials
    for b, m in mean.items():
        # the mean of 100 draws: within 6 standard errors of x, entry by entry (each draw's
        # error is at most the entry's rounding step, scale / s, with standard deviation at
        # most half of it)
        q = quantizers.quantize(x, "qsgd", 4, "l2", 0, bucket=b)
        step = (np.repeat(q.scale, 256) if b else np.full(x.size, q.scale)) / 4
        assert np.all(np.abs(m - x) <= 6 * 0.5 * step / math.sqrt(trials))
    assert mse[256] < mse[None] / 8


@pytest.mark.parametrize("coder", CODERS)
def test_bundles_of_every_coder_round_trip(coder):
    xs = [gradient_like(n, seed=n).reshape(shape)
          for n, shape in ((0, (0,)), (1, ()), (4097, (17, 241)), (30000, (30000,)))]
    blob = hc.encode_many(xs, "qsgd", coder, 8, "l2", seed=1, bucket=128)
    info = hc.inspect(blob)
    assert [s["bucket_elements"] for s in info["sections"]] == [128] * 4
    for i, (x, y, sec) in enumerate(zip(xs, hc.decode_many(blob), info["sections"])):
        q = quantizers.quantize(x.reshape(-1), "qsgd", 8, "l2", 1, stream=i, bucket=128)
        want = quantizers.dequantize(q.states[: q.n], 8, q.scale, None, x.dtype, "qsgd",
                                     q.bucket_log2)
        np.testing.assert_array_equal(y.reshape(-1), want)
        assert sec["scale"] == float(np.max(q.scale))


def test_payload_layout():
    x = np.arange(40, dtype=np.float32) - 20  # buckets of 16: 3 scales
    blob = hc.encode(x, "qsgd", "huffman", 8, "max", bucket=16)
    assert blob[4] == payload.QUANTIZERS["qsgd"] | payload.Q_NORM_MAX | payload.Q_BUCKETS
    assert blob[5] == 8 and blob[6] == 4  # levels, log2 of the bucket
    # section: coder byte, chunk byte, one shape varint (40), then three float32 scales
    assert struct.unpack("<3f", blob[10:22]) == (20.0, 11.0, 19.0)


def test_nonfinite():
    x = gradient_like(100, seed=1)
    x[70] = np.inf
    with pytest.raises(hc.NonFiniteError):
        hc.encode(x, "qsgd", bucket=16)
    y = hc.decode(hc.encode(x, "qsgd", bucket=16, nonfinite="propagate"))
    assert np.isnan(y).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_a_nan_scale_makes_its_bucket_nan_only(dtype):
    """The decoder reads each scale as given: a NaN one (what no encoder writes alone) spoils
    its bucket only; every other bucket decodes as usual."""
    x = gradient_like(100, seed=2, dtype=dtype)
    blob = bytearray(hc.encode(x, "qsgd", "huffman", 8, "max", bucket=32))
    good = hc.decode(bytes(blob))
    at = 10 + 4  # past coder, chunk and shape bytes and the first scale
    blob[at: at + 4] = struct.pack("<f", np.nan)
    fuzz.fix_crc(blob)
    y = hc.decode(bytes(blob))
    assert y.dtype == dtype
    assert np.isnan(y[32:64]).all()
    np.testing.assert_array_equal(np.delete(y, np.s_[32:64]), np.delete(good, np.s_[32:64]))


def test_malformed_bucket_fields_are_rejected():
    x = gradient_like(100, seed=3)
    blob = hc.encode(x, "qsgd", "huffman", 8, "max", bucket=32)

    def mutated(i, v):
        b = bytearray(blob)
        b[i] = v
        fuzz.fix_crc(b)
        return bytes(b)

    for log2 in (0, 3, 31, 255):
        with pytest.raises(hc.PayloadError, match="bucket log2"):
            hc.decode(mutated(6, log2))
    with pytest.raises(hc.PayloadError, match="buckets are qsgd's"):
        hc.decode(mutated(4, payload.QUANTIZERS["terngrad"] | payload.Q_BUCKETS))
    with pytest.raises(hc.PayloadError, match="unknown quantizer byte"):
        hc.decode(mutated(4, blob[4] | 0x80))
    for bad in (-1.0, np.inf):
        b = bytearray(blob)
        b[14:18] = struct.pack("<f", bad)
        fuzz.fix_crc(b)
        with pytest.raises(hc.PayloadError, match="bucket 1's scale"):
            hc.decode(bytes(b))
    for k in range(len(blob)):
        with pytest.raises(hc.PayloadError):
            hc.decode(blob[:k])


def test_mutants_decode_or_raise():
    rng = np.random.default_rng(3)
    x = gradient_like(700, seed=5)
    blob = hc.encode_many([x, x[:40]], "qsgd", "zrh", 6, "l2", bucket=64)
    for _ in range(2000):
        b = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(b) - 4))
            b[i] ^= 1 << int(rng.integers(0, 8))
        fuzz.fix_crc(b)
        try:
            out = hc.decode_many(bytes(b), max_elements=1 << 16)
        except hc.PayloadError:
            continue
        assert sum(o.size for o in out) <= 1 << 16


def test_option_errors():
    x = gradient_like(100)
    for bad in (8, 100, 0, -16, 1 << 31, 512.5, 3):
        with pytest.raises(ValueError, match="power of two"):
            hc.encode(x, "qsgd", bucket=bad)
    for q in ("terngrad", "topk", "fp4"):
        with pytest.raises(ValueError, match="qsgd's option"):
            hc.encode(x, q, bucket=512)
    with pytest.raises(ValueError, match="does not go with buckets"):
        quantizers.quantize(x, "qsgd", 8, "max", 0, scale=100.0, bucket=16)
    from horovod_huffcomp import summable

    with pytest.raises(ValueError, match="buckets"):
        summable.check_options(dict(quantizer="qsgd", levels=8, norm="max", bucket=512))
    with pytest.raises(ValueError, match="share quantizer, norm, levels and buckets"):
        a = payload.unpack(hc.encode(x, "qsgd", "huffman", 8, bucket=16))[1][0]
        b = payload.unpack(hc.encode(x, "qsgd", "huffman", 8, bucket=32))[1][0]
        payload.pack([a, b], bundle=True)
    a.scale = a.scale[:-1]
    with pytest.raises(ValueError, match="needs 7 scales"):
        payload.pack([a], bundle=False)
