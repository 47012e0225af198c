import numpy as np
import pytest

QUANTIZER_CASES = [
    ("qsgd", dict(levels=16, norm="l2")),
    ("qsgd", dict(levels=1, norm="l2")),
    ("qsgd", dict(levels=127, norm="max")),
    ("qsgd", dict(levels=16, norm="l2", bucket=512)),  # QSGD's buckets: a scale per bucket
    ("qsgd", dict(levels=3, norm="max", bucket=16)),
    ("terngrad", {}),
    ("topk", dict(ratio=0.05)),
    ("topk", dict(ratio=0.2, levels=8)),
    ("fp4", {}),
    ("fp4", dict(norm="max")),
    ("fp8", {}),
    ("fp8-e5m2", {}),
]
CODERS = ["auto", "huffman", "sh", "shs", "rlh", "zrh", "elias-gamma", "elias-delta",
          "elias-omega"]


def gradient_like(n, seed=0, dtype=np.float32):
    """Heavy-tailed, partly exactly-zero values, like real gradients."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * rng.exponential(1.0, n) ** 2
    x[rng.random(n) < 0.2] = 0.0
    return x.astype(dtype)


def expected(x, quantizer, kw, seed=0, stream=0):
    """What decode must return: the quantizer's own dequantized values."""
    from horovod_huffcomp.quantizers import dequantize, quantize

    x = np.asarray(x)
    flat = np.ascontiguousarray(x).reshape(-1)
    q = quantize(flat, quantizer, kw.get("levels"), kw.get("norm"), seed, stream,
                 kw.get("ratio", 0.01), bucket=kw.get("bucket"))
    return dequantize(q.states[: q.n], q.levels, q.scale, q.raw, flat.dtype,
                      quantizer, q.bucket_log2).reshape(x.shape)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
