"""Malformed payloads through the GPU decoder under compute-sanitizer (scripts/gpu_check.sh
sanitize): `compute-sanitizer --tool memcheck python3 scripts/gpu_sanitize.py` must report no
error while every corrupted payload is rejected with PayloadError or decoded as the CPU
decodes it. Covers huffman (tiles and symbol-buffer sums), ZRH and Elias chunks, a float
format's, QSGD's buckets' and exact top-k's payloads (raw magnitudes), and the encode kernels
on random inputs (qsgd, in buckets too, top-k quantized and exact, the float formats;
huffman's chunk bits and writer a state a lane and four, gpu_backend.WIDE).
Needs a CUDA device visible to CuPy."""
import sys

import cupy
import numpy as np

import horovod_huffcomp as hc
from horovod_huffcomp import exchange, gpu_backend, payload


def mutants(blob, rng, count):
    """``count`` copies of a one-tensor payload with 1-3 bits of its coded data flipped, its
    checksum fixed (what a buggy or hostile sender could produce)."""
    _, (sec,) = payload.unpack(blob)
    for _ in range(count):
        data = bytearray(sec.data)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        yield payload.pack([payload.Section(**{**sec.__dict__, "data": bytes(data)})],
                           bundle=False)


def main(count: int = 60) -> None:
    # the newest kernels too
    gpu_backend.NOT_YET_ON_DEVICE = set()
    rng = np.random.default_rng(0)
    dense = rng.standard_t(3, 20_000).astype(np.float32)
    sparse = np.zeros(50_000, np.float32)
    sparse[rng.integers(0, 50_000, 400)] = rng.standard_normal(400)
    rejected = accepted = 0
    for q, coder, x, layout, bucket in (("qsgd", "huffman", dense, "runlength", None),
                                        ("qsgd", "zrh", sparse, "runlength", None),
                                        ("qsgd", "zrh", dense, "runlength", None),
                                        ("qsgd", "shs", sparse, "runlength", None),
                                        ("qsgd", "shs", dense, "runlength", None),
                                        ("qsgd", "elias-gamma", dense, "runlength", None),
                                        ("qsgd", "elias-omega", sparse, "gap", None),
                                        ("fp8", "huffman", dense, "runlength", None),
                                        ("qsgd", "huffman", dense, "runlength", 64),
                                        ("qsgd", "zrh", sparse, "runlength", 512),
                                        ("topk", "huffman", dense, "runlength", None),
                                        ("topk", "zrh", sparse, "runlength", None),
                                        ("topk", "shs", sparse, "runlength", None),
                                        ("topk", "elias-delta", dense, "runlength", None),
                                        ("qsgd", "rlh", sparse, "runlength", None),
                                        ("qsgd", "rlh", dense, "runlength", 64),
                                        ("topk", "rlh", dense, "runlength", None)):
        good = [hc.encode(x, q, coder, 8 if q == "qsgd" else None,
                          None if q == "topk" else "max", seed=r, chunk_log2=8,
                          elias_layout=layout, bucket=bucket, ratio=0.3) for r in range(2)]
        for path in ("tiles", "symbols"):
            gpu_backend.SYMBOLS_MAX_CHUNKS = 0 if path == "tiles" else 1 << 40
            for bad in mutants(good[1], rng, count):
                trio = [good[0], bad, good[0]]
                try:
                    want = exchange.reduce_mean([hc.decode(b) for b in trio], average=False)
                except hc.PayloadError:
                    want = None
                try:
                    got = cupy.asnumpy(gpu_backend.decode_sum(trio))
                except hc.PayloadError:
                    got = None
                assert (want is None) == (got is None), (q, coder, path)
                if want is None:
                    rejected += 1
                else:
                    accepted += 1
                    assert np.array_equal(got, want), (q, coder, path)
    for n, wide in ((1, False), (7, True), (4097, False), (4097, True), (100_003, False),
                    (100_003, True)):  # huffman's writers a state a lane and four (WIDE)
        gpu_backend.WIDE = wide
        for q, s, norm, coder in (("qsgd", 16, "l2", "huffman"), ("qsgd", 16, "l2", "sh"),
                                  ("qsgd", 16, "l2", "zrh"), ("qsgd", 16, "l2", "shs"),
                                  ("qsgd", 16, "l2", "auto"), ("qsgd", 16, "l2", "elias-delta"),
                                  ("fp4", None, "gennorm", "auto"),
                                  ("fp8-e5m2", None, "max", "huffman"),
                                  ("topk", 8, None, "auto"), ("topk", None, None, "auto"),
                                  ("topk", None, None, "elias-gamma"),
                                  ("topk", None, None, "shs"), ("qsgd", 16, "l2", "rlh"),
                                  ("topk", None, None, "rlh")):
            x = rng.standard_normal(n).astype(np.float32)
            x[rng.random(n) < 0.9] = 0
            for bucket in (None, 16) if q == "qsgd" else (None,):
                kw = dict(seed=n, bucket=bucket, ratio=0.05)
                assert hc.encode(cupy.asarray(x), q, coder, s, norm, **kw) == hc.encode(
                    x, q, coder, s, norm, **kw)
    cupy.cuda.Device().synchronize()
    print(f"malformed payloads: {rejected} rejected, {accepted} decoded as the CPU decodes "
          "them; encodes byte-identical")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
