"""CO3's low-bit float quantizers (fp4 E2M1, fp8 E4M3 bias 10, fp8 E5M2) and the GenNorm fit."""
import math

import numpy as np
import pytest

import horovod_huffcomp as hc
from conftest import gradient_like
from horovod_huffcomp import float_quantizer as fq
from horovod_huffcomp import fuzz, gennorm
from horovod_huffcomp.payload import FP_FORMATS, fp_levels

FORMATS = list(FP_FORMATS)


def _by_fields(ebits, mbits, bias):
    """Every non-negative value of the format, from its (exponent, mantissa) fields, the top
    exponent reserved: built independently of the code formula."""
    out = set()
    for e in range((1 << ebits) - 1):
        for m in range(1 << mbits):
            frac = m / (1 << mbits)
            out.add(frac * 2.0 ** (1 - bias) if e == 0 else (1 + frac) * 2.0 ** (e - bias))
    return np.array(sorted(out))


def test_value_tables():
    np.testing.assert_array_equal(fq.values("fp4"), [0, 0.5, 1, 1.5, 2, 3])
    assert fp_levels("fp4") == 5 and fp_levels("fp8") == 119 and fp_levels("fp8-e5m2") == 123
    e4m3 = fq.values("fp8")
    assert 2 * e4m3.size - 1 == 239 and e4m3[-1] == 30 and e4m3[1] == 2.0 ** -12
    e5m2 = fq.values("fp8-e5m2")
    assert e5m2[-1] == 57344 and e5m2[1] == 2.0 ** -16
    for q, fields in FP_FORMATS.items():
        np.testing.assert_array_equal(fq.values(q), _by_fields(*fields))


def _nearest_code(y, table):
    """Brute force: the code of the value nearest y, ties to the even code."""
    d = np.abs(table - y)
    best = np.flatnonzero(d == d.min())
    return int(best[0] if best.size == 1 else best[best % 2 == 0][0])


@pytest.mark.parametrize("q", FORMATS)
def test_rounding_is_nearest_ties_to_even_saturating(q):
    table = fq.values(q)
    rng = np.random.default_rng(5)
    mids = (table[1:] + table[:-1]) / 2
    ys = np.concatenate([
        table, mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf),
        2.0 ** rng.uniform(math.log2(table[1]) - 4, math.log2(table[-1]) + 2, 3000),
        [table[-1] * 1.01, table[-1] * 1e6, table[1] / 2, table[1] / 3, 0.0],
    ])
    for scale in (1.0, 0.375):
        x = ys * scale * np.where(rng.random(ys.size) < 0.5, -1.0, 1.0)
        out = np.zeros(x.size, np.int8)
        fq.quantize_into(x, q, scale, out)
        want = [_nearest_code(abs(v) / scale, table) for v in x]
        np.testing.assert_array_equal(np.abs(out.astype(int)), want)
        assert ((out < 0) == ((x < 0) & (out != 0))).all()


def test_co3_scale_factor():
    assert fq.co3_p(1.0) == pytest.approx(0.65)
    assert fq.co3_p(2.0) == pytest.approx(1.76)
    assert fq.co3_p(0.1) == fq.co3_p(fq.P_BETA_MIN)
    assert fq.co3_p(9.0) == fq.co3_p(fq.P_BETA_MAX)
    assert all(fq.co3_p(b) >= fq.P_FLOOR for b in np.linspace(0, 3, 61))


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_gennorm_fit_recovers_the_shape(beta):
    rng = np.random.default_rng(int(beta * 10))
    alpha = 3e-3
    mags = alpha * rng.gamma(1 / beta, 1.0, 400_000) ** (1 / beta)
    x = (mags * np.where(rng.random(mags.size) < 0.5, -1, 1)).astype(np.float32)
    a, b = gennorm.fit(x)
    assert b == pytest.approx(beta, rel=0.04)
    assert a == pytest.approx(alpha, rel=0.06)
    # the moment sums do not depend on the order of the entries (what a GPU reproduces)
    m = float(np.abs(x).max())
    assert gennorm.abs_moments_fixed(x, m) == gennorm.abs_moments_fixed(x[::-1].copy(), m)
    s1, s2 = gennorm.abs_moments_fixed(x, m)
    assert s1 == pytest.approx(np.abs(x / m).sum(), rel=1e-6)
    assert s2 == pytest.approx(((x / m).astype(np.float64) ** 2).sum(), rel=1e-6)


def test_scales():
    x = gradient_like(5000, seed=9)
    m = float(np.abs(x).max())
    for q in FORMATS:
        info = hc.inspect(hc.encode(x, q, norm="max"))
        assert info["scale"] == np.float32(info["scale"])
        assert info["scale"] >= m / fq.values(q)[-1] > np.nextafter(np.float32(info["scale"]), 0)
        y = hc.decode(hc.encode(x, q, norm="max"))
        assert np.abs(y).max() == pytest.approx(m, rel=0.07)  # the max keeps the top code
    alpha, beta = gennorm.fit(x)
    info = hc.inspect(hc.encode(x, "fp4"))
    assert info["norm"] == "gennorm"
    want = np.float32(alpha / fq.co3_p(beta))
    assert info["scale"] in (float(want), float(np.nextafter(want, np.float32(np.inf))))
    assert info["scale"] >= alpha / fq.co3_p(beta)


@pytest.mark.parametrize("q", FORMATS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_decode_is_the_code_value_times_the_scale(q, dtype):
    x = gradient_like(3000, seed=4, dtype=dtype).reshape(3, 1000, 1)[:, :, 0][:, ::-1]
    blob = hc.encode(x, q, "auto", seed=1)
    y = hc.decode(blob)
    assert y.shape == x.shape and y.dtype == dtype
    scale = hc.inspect(blob)["scale"]
    flat = np.ascontiguousarray(x).reshape(-1).astype(np.float64)
    codes = np.array([_nearest_code(abs(v) / scale, fq.values(q)) for v in flat])
    want = (np.sign(flat) * fq.values(q)[codes] * scale).astype(dtype)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(y.reshape(-1), want)
    assert hc.encode(x, q, "auto", seed=1) == blob and hc.encode(x, q, "auto", seed=2) == blob


def test_special_tensors():
    assert not hc.decode(hc.encode(np.zeros(100, np.float32), "fp4")).any()
    assert hc.inspect(hc.encode(np.zeros(100, np.float32), "fp8"))["scale"] == 0.0
    x = np.ones(50, np.float32)  # one entry value: the ratio is 1, beta the fit's top end
    np.testing.assert_array_equal(hc.decode(hc.encode(x, "fp4", norm="max")), x)
    assert hc.decode(hc.encode(np.float32([2.5]), "fp8")) == 2.5
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(hc.NonFiniteError):
        hc.encode(bad, "fp4")
    assert np.isnan(hc.decode(hc.encode(bad, "fp4", nonfinite="propagate"))).all()
    huge = np.float32([3e38, -1e38, 1.0])  # the GenNorm scale would overflow float32
    y = hc.decode(hc.encode(huge, "fp4"))
    assert np.isfinite(y).all() and y[0] > 1e38 and y[1] < 0
    xs = [gradient_like(300, seed=s) for s in range(3)] + [np.zeros(0, np.float32)]
    got = hc.decode(hc.encode_many(xs, "fp4", coder="zrh"))
    for a, b in zip(got, xs):
        np.testing.assert_array_equal(a, hc.decode(hc.encode(b, "fp4", coder="zrh")))


def test_options_are_checked():
    x = gradient_like(100)
    with pytest.raises(ValueError, match="exactly 5 levels"):
        hc.encode(x, "fp4", levels=4)
    hc.encode(x, "fp8", levels=119)
    with pytest.raises(ValueError, match="norm max"):
        hc.encode(x, "fp8", norm="gennorm")
    with pytest.raises(ValueError, match="gennorm or max"):
        hc.encode(x, "fp4", norm="l2")
    from horovod_huffcomp.quantizers import quantize
    with pytest.raises(ValueError, match="shared scale"):
        quantize(x, "fp4", None, None, 0, scale=1.0)


def _recrc(blob: bytes) -> bytes:
    b = bytearray(blob)
    fuzz.fix_crc(b)
    return bytes(b)


def test_payload_fields_are_checked():
    blob = hc.encode(gradient_like(500), "fp4", "huffman")
    assert blob[4] == 4 and blob[5] == 5  # quantizer byte (gennorm: bit 4 clear), levels
    with pytest.raises(hc.PayloadError, match="fp4 has levels 5, not 6"):
        hc.decode(_recrc(blob[:5] + b"\x06" + blob[6:]))
    with pytest.raises(hc.PayloadError, match="raw float32 values are top-k's"):
        hc.decode(_recrc(blob[:4] + bytes([blob[4] | 0x20]) + blob[5:]))
    assert hc.inspect(_recrc(blob[:4] + bytes([blob[4] | 0x10]) + blob[5:]))["norm"] == "max"


def test_mutated_payloads_decode_to_codes_or_raise():
    """CRC-fixed mutants of float-format payloads: a PayloadError, or values of the format's
    codes (the decoders keep states within [-levels, levels]; a state past them would read
    the table's NaN sentinels)."""
    from horovod_huffcomp import payload

    rng = np.random.default_rng(3)
    x = gradient_like(700, seed=5)
    blobs = [hc.encode_many([x, x[:50]], q, c) for q in FORMATS
             for c in ("huffman", "zrh", "rlh", "shs", "elias-gamma")]
    decoded = 0
    for _ in range(3000):
        bad = fuzz.mutate(blobs[int(rng.integers(len(blobs)))], rng)
        try:
            _, secs = payload.unpack(bad, 1 << 16)
            ys = hc.decode_many(bad, max_elements=1 << 16)
        except hc.PayloadError:
            continue
        decoded += 1
        for sec, y in zip(secs, ys):
            if math.isfinite(sec.scale):
                assert not np.isnan(y).any(), sec
    assert decoded > 50
