"""decode(encode(x)) equals the quantizer's dequantized values, exactly, for every case."""
import numpy as np
import pytest

import horovod_huffcomp as hc
from conftest import CODERS, QUANTIZER_CASES, expected, gradient_like


@pytest.mark.parametrize("quantizer,kw", QUANTIZER_CASES)
@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("n", [0, 1, 7, 4097])
def test_roundtrip_sizes(quantizer, kw, coder, n):
    x = gradient_like(n, seed=n)
    blob = hc.encode(x, quantizer, coder, seed=3, **kw)
    y = hc.decode(blob)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(y, expected(x, quantizer, kw, seed=3))


@pytest.mark.parametrize("coder,layout", [(c, "runlength") for c in CODERS]
                         + [(c, "gap") for c in CODERS if c.startswith("elias")])
def test_roundtrip_million(coder, layout):
    x = gradient_like(10**6, seed=7)
    for quantizer, kw in [("qsgd", dict(levels=16)), ("topk", dict(ratio=0.01))]:
        blob = hc.encode(x, quantizer, coder, elias_layout=layout, **kw)
        np.testing.assert_array_equal(hc.decode(blob), expected(x, quantizer, kw))


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 5), (0, 3), (1, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_shapes_and_dtypes(shape, dtype):
    x = gradient_like(int(np.prod(shape)), seed=1, dtype=dtype).reshape(shape)
    for coder in ("auto", "rlh", "elias-omega"):
        y = hc.decode(hc.encode(x, "qsgd", coder, levels=8, norm="max"))
        assert y.shape == shape and y.dtype == dtype
        np.testing.assert_array_equal(y, expected(x, "qsgd", dict(levels=8, norm="max")))


def test_non_contiguous_equals_contiguous_copy():
    base = gradient_like(60 * 40, seed=2).reshape(60, 40)
    views = [base.T, base[::2, 1::3], base[:, ::-1]]
    for v in views:
        assert not v.flags.c_contiguous
        assert hc.encode(v) == hc.encode(np.ascontiguousarray(v))
        np.testing.assert_array_equal(hc.decode(hc.encode(v)), expected(v, "qsgd", {}))


def test_topk_exact_keeps_values():
    x = gradient_like(5000, seed=4)
    y = hc.decode(hc.encode(x, "topk", ratio=0.01))
    kept = np.flatnonzero(y)
    assert kept.size == int(np.ceil(0.01 * x.size))
    np.testing.assert_array_equal(y[kept], x[kept])
    assert np.abs(x[kept]).min() >= np.sort(np.abs(x))[-kept.size]


def test_topk_ties_take_lower_index():
    x = np.array([1, 3, 3, 3, 2, 3], np.float32)
    y = hc.decode(hc.encode(x, "topk", ratio=0.5))
    np.testing.assert_array_equal(y, [0, 3, 3, 3, 0, 0])


def test_qsgd_is_unbiased():
    x = gradient_like(2000, seed=5).astype(np.float64)
    mean = np.mean([hc.decode(hc.encode(x, "qsgd", levels=2, seed=s)) for s in range(400)], 0)
    scale = np.linalg.norm(x)
    # each entry's rounding error has std <= scale / (2 s); 400 samples shrink it by 20
    assert np.max(np.abs(mean - x)) < 5 * scale / 4 / 20


def test_levels_bound_and_scale():
    x = gradient_like(3000, seed=6)
    for s, norm in [(1, "l2"), (5, "max"), (127, "max")]:
        info = hc.inspect(hc.encode(x, "qsgd", levels=s, norm=norm))
        ref = np.abs(x).max() if norm == "max" else np.linalg.norm(x.astype(np.float64))
        assert info["scale"] >= ref and info["scale"] <= ref * (1 + 1e-6)
        y = hc.decode(hc.encode(x, "qsgd", levels=s, norm=norm))
        assert np.abs(y).max() <= info["scale"] * (1 + 1e-6)


def test_bundle_roundtrip():
    xs = [gradient_like(n, seed=n) for n in (10, 0, 999)] + [np.float64(2.5)]
    out = hc.decode(hc.encode_many(xs, "qsgd", levels=4))
    assert isinstance(out, list) and len(out) == len(xs)
    for i, (x, y) in enumerate(zip(xs, out)):
        np.testing.assert_array_equal(y, expected(x, "qsgd", dict(levels=4), stream=i))
    assert hc.decode_many(hc.encode(xs[0]))[0].shape == (10,)


def test_nonfinite_rules():
    x = gradient_like(100)
    x[3] = np.nan
    with pytest.raises(hc.NonFiniteError, match="NaN or Inf"):
        hc.encode(x)
    x[3] = np.inf
    y = hc.decode(hc.encode(x, nonfinite="propagate"))
    assert np.isnan(y).all()


@pytest.mark.parametrize("quantizer,kw", [("qsgd", dict(norm="max")), ("qsgd", dict(norm="l2")),
                                         ("terngrad", {}), ("topk", {}),
                                         ("topk", dict(levels=8)),
                                         ("qsgd", dict(norm="l2", bucket=16))])
def test_scales_past_float32_range(quantizer, kw):
    """A finite tensor whose float32 scale would be Inf (float64 |x| above 3.4e38, or an L2
    norm above it) is refused as NaN/Inf input is (a payload with an Inf scale is not a valid
    payload: the decoder rejects it), or with nonfinite="propagate" encoded as a NaN tensor
    (for QSGD's buckets: the buckets whose scale is past the range)."""
    x = np.array([1e39, -3.0, 0.0, 1.0] * 8)
    with pytest.raises(hc.NonFiniteError, match="past float32's range"):
        hc.encode(x, quantizer, "huffman", ratio=0.5, **kw)
    y = hc.decode(hc.encode(x, quantizer, "huffman", ratio=0.5, nonfinite="propagate", **kw))
    assert np.isnan(y).all()
    if kw.get("bucket"):  # only the buckets past the range: NaN there
        x[16:] = 0.5
        y = hc.decode(hc.encode(x, quantizer, "huffman", nonfinite="propagate", **kw))
        assert np.isnan(y[:16]).all() and not np.isnan(y[16:]).any()
    elif kw.get("norm") == "l2":  # float32 values whose L2 norm passes float32's range
        big = np.full(100_000, 1e37, np.float32)
        with pytest.raises(hc.NonFiniteError, match="past float32's range"):
            hc.encode(big, quantizer, "huffman", **kw)
        assert np.isnan(hc.decode(hc.encode(big, quantizer, "huffman", nonfinite="propagate",
                                            **kw))).all()
    with pytest.raises(ValueError, match="finite float32"):
        hc.quantizers.quantize(np.ones(3), "qsgd", 8, "max", 0, scale=float("inf"))


def test_bad_arguments():
    x = gradient_like(10)
    with pytest.raises(ValueError, match="coder"):
        hc.encode(x, coder="lz4")
    with pytest.raises(ValueError, match="quantizer"):
        hc.encode(x, quantizer="sign")
    with pytest.raises(ValueError, match="levels"):
        hc.encode(x, levels=200)
    with pytest.raises(ValueError, match="terngrad"):
        hc.encode(x, "terngrad", levels=2)
    with pytest.raises(TypeError, match="dtype"):
        hc.encode(np.arange(5))
    with pytest.raises(ValueError, match="seed"):
        hc.encode(x, seed=-1)


def test_torch_tensor_through_dlpack():
    torch = pytest.importorskip("torch")
    t = torch.randn(33, 7)
    assert hc.encode(t) == hc.encode(t.numpy())


def test_zrh_sign_contexts_on_an_outer_product_gradient():
    """A fully connected layer's weight gradient (error x non-negative input): signs persist
    along rows, the planner picks ZRH's sign contexts (codebook head bit 5), and the payload
    decodes exactly; it is smaller than with magnitude contexts alone."""
    rng = np.random.default_rng(5)
    err = rng.standard_normal(256) * rng.exponential(1.0, 256)
    act = np.maximum(rng.standard_normal(512), 0)
    g = np.outer(err, act).astype(np.float32)
    kw = dict(levels=8, norm="max")
    blob = hc.encode(g, "qsgd", "zrh", seed=1, **kw)
    _, (sec,) = hc.payload.unpack(blob)
    assert sec.codebook[0] & 0x60 == 0x60  # four run contexts + sign level contexts
    np.testing.assert_array_equal(hc.decode(blob), expected(g, "qsgd", kw, seed=1))
    from horovod_huffcomp.coders import zrh
    from horovod_huffcomp.quantizers import quantize

    q = quantize(g.reshape(-1), "qsgd", 8, "max", 1, 0)
    rc, lc, extra, shifted = zrh.histograms(q.states, q.n, sec.chunk_log2, 8)
    merged = lc[:4] + lc[4:]
    without = zrh.plan(q, sec.chunk_log2, hist=(rc, np.concatenate([merged, 0 * merged]),
                                                 extra, shifted))
    with_sign = zrh.plan(q, sec.chunk_log2, hist=(rc, lc, extra, shifted))
    assert sum(with_sign[1:]) < 0.95 * sum(without[1:])


@pytest.mark.parametrize("quantizer,kw", QUANTIZER_CASES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_encode_dequantized_gives_what_decode_gives(quantizer, kw, dtype):
    """The adapters use these arrays for a worker's own payload instead of decoding it."""
    xs = [gradient_like(n, seed=n, dtype=dtype).reshape(shape)
          for n, shape in ((0, (0,)), (1, ()), (4097, (17, 241)), (30000, (30000,)))]
    xs.append(np.array([1.0, np.nan, 2.0], dtype))
    for coder in ("auto", "rlh"):
        blob, arrays = hc.api.encode_dequantized(xs, quantizer, coder, seed=5,
                                                 nonfinite="propagate", **kw)
        assert blob == hc.encode_many(xs, quantizer, coder, seed=5, nonfinite="propagate",
                                      **kw)
        for got, want in zip(arrays, hc.decode_many(blob)):
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        one, (arr,) = hc.api.encode_dequantized(xs[2:3], quantizer, coder, seed=5,
                                                bundle=False, **kw)
        assert one == hc.encode(xs[2], quantizer, coder, seed=5, **kw)
        np.testing.assert_array_equal(arr, hc.decode(one))


def test_decode_mean_uses_own_arrays_only_for_an_intact_own_frame():
    from horovod_huffcomp import exchange

    xs = [gradient_like(5000, seed=r).reshape(50, 100) for r in range(3)]
    mines = [hc.api.encode_dequantized([x], levels=8, seed=r) for r, x in enumerate(xs)]
    frames = [blob for blob, _ in mines]
    ref, ref_own = exchange.decode_mean(frames, [(50, 100)], rank=1)
    means, own = exchange.decode_mean(frames, [(50, 100)], rank=1, mine=mines[1])
    assert own[0] is mines[1][1][0]  # not decoded
    np.testing.assert_array_equal(means[0], ref[0])
    np.testing.assert_array_equal(own[0], ref_own[0])
    bad = frames[1][:-1] + bytes([frames[1][-1] ^ 1])  # the own frame came back corrupted
    with pytest.raises(hc.PayloadError, match="rank 1"):
        exchange.decode_mean([frames[0], bad, frames[2]], [(50, 100)], rank=1, mine=mines[1])
    # as the adapters pass them: memoryviews of the gathered buffer
    for own_frame, intact in ((frames[1], True), (bad, False)):
        gathered = np.frombuffer(b"".join(exchange.frame(f) for f in (
            frames[0], own_frame, frames[2])), np.uint8)
        views = exchange.split_frames(gathered, 3)
        assert exchange.same_bytes(views[1], frames[1]) == intact
        if intact:
            assert exchange.decode_mean(views, [(50, 100)], rank=1,
                                        mine=mines[1])[1][0] is mines[1][1][0]
        else:
            with pytest.raises(hc.PayloadError, match="rank 1"):
                exchange.decode_mean(views, [(50, 100)], rank=1, mine=mines[1])
    assert not exchange.same_bytes(memoryview(frames[1])[:-1], frames[1])
    assert exchange.same_bytes(b"", memoryview(b""))


def test_rlh_with_more_pairs_than_a_code_has_codewords():
    """Runs of 129 values x 1..260 states: 33,540 distinct (value, run) pairs, more than a
    15-bit code's 2^15 codewords. rlh cuts the runs (at most 2^15 // 129 = 254 states a
    piece) and the payload decodes; it used to write over-subscribed code lengths that every
    decoder rejected. Exact top-k keeps every non-zero with its raw magnitude."""
    from horovod_huffcomp.coders import rlh
    from horovod_huffcomp.coders.chunks import value_runs

    k, r = np.meshgrid(np.arange(-64, 65), np.arange(1, 261))
    x = np.repeat(k.ravel(), r.ravel()).astype(np.float32)
    q = hc.quantizers.quantize(x, "qsgd", 64, "max", 0)
    vals, runs, first = value_runs(q.states, q.n, 24)
    assert np.unique((vals + 64) * 1000 + runs).size > rlh.MAX_PAIRS
    pc = rlh.plan(q, 24)[0]
    assert pc.vals.size <= rlh.MAX_PAIRS and pc.runs.max() == rlh.MAX_PAIRS // 129
    for quantizer, levels in (("qsgd", 64), ("topk", 0)):
        blob = hc.encode(x, quantizer, "rlh", levels, "max", chunk_log2=24, ratio=1.0)
        np.testing.assert_array_equal(hc.decode(blob), x)
    # under the limit the runs stay whole: a gradient's payload lists its maximal runs
    g = gradient_like(100_000, seed=3)
    q = hc.quantizers.quantize(g, "qsgd", 4, "max", 0)
    vals, runs, _ = value_runs(q.states, q.n, 12)
    pc = rlh.plan(q, 12)[0]
    assert pc.runs.max() == runs.max() > 1 and pc.vals.size == np.unique(
        (vals + 4) * 10**6 + runs).size


def test_rlh_cut_runs():
    from horovod_huffcomp.coders.rlh import cut_runs

    vals = np.array([3, -1, 0, 2, 2], np.int64)
    runs = np.array([7, 2, 9, 3, 1], np.int64)
    first = np.array([0, 2, 5])  # two chunks
    cv, cr, cf = cut_runs(vals, runs, first, 3)
    assert cv.tolist() == [3, 3, 3, -1, 0, 0, 0, 2, 2]
    assert cr.tolist() == [3, 3, 1, 2, 3, 3, 3, 3, 1]
    assert cf.tolist() == [0, 4, 9]
    assert np.array_equal(np.repeat(cv, cr), np.repeat(vals, runs))
