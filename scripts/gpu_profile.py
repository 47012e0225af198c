"""Where the host time of the GPU backend goes (scripts/gpu_check.sh profile): cProfile of
``hc.encode_many`` and ``gpu_backend.decode_sum`` (4 payloads) on a batch shaped like
ResNet-50's gradients, after a warm-up; wall milliseconds, then the top functions by own time.
Needs a CUDA device visible to CuPy."""
import cProfile
import pstats
import sys
import time

import cupy
import numpy as np

import horovod_huffcomp as hc
from horovod_huffcomp import gpu_backend
from horovod_huffcomp.bench.gpu import resnet50_gradients, resnet50_shapes


def main(coder: str = "huffman") -> None:
    xs = resnet50_gradients(cupy)
    opts = dict(quantizer="qsgd", coder=coder, levels=16, norm="max")
    blobs = [hc.encode_many(xs, seed=r, **opts) for r in range(4)]
    for name, fn in (("encode_many", lambda: hc.encode_many(xs, seed=1, **opts)),
                     ("decode_sum x4", lambda: gpu_backend.decode_sum(blobs))):
        for _ in range(3):
            fn()
        cupy.cuda.Device().synchronize()
        t = time.perf_counter()
        for _ in range(10):
            fn()
        cupy.cuda.Device().synchronize()
        print(f"{name} ({coder}): {(time.perf_counter() - t) * 100:.2f} ms per call, wall")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(10):
            fn()
        cupy.cuda.Device().synchronize()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(22)


def paths() -> None:
    """Decode-and-sum of 4 payloads, device milliseconds of the decode kernels, by the two
    ways gpu_backend sums huffman tensors (tiles: a thread per chunk over every payload;
    symbols: a thread per chunk of each payload, then a sum per element)."""
    import statistics

    rng = cupy.random.default_rng(1)

    def grad(n):
        x = rng.standard_normal(n, dtype=cupy.float32) * 1e-3
        x[rng.random(n) < 0.3] = 0
        return x

    batches = [(f"{mb} MB", [grad(mb << 18)]) for mb in (1, 16, 64, 256, 1024)]
    batches.append(("ResNet-50", [grad(int(np.prod(s))).reshape(s) for s in resnet50_shapes()]))
    print("| batch | chunks | tiles (ms) | symbols (ms) | tiles / symbols |")
    print("|---|---|---|---|---|")
    for label, xs in batches:
        blobs = [hc.encode_many(xs, "qsgd", "huffman", 16, "max", seed=r) for r in range(4)]
        chunks = sum(-(-x.size // 4096) for x in xs)
        ms = {}
        for path, limit in (("tiles", 0), ("symbols", 1 << 40)):
            gpu_backend.SYMBOLS_MAX_CHUNKS, gpu_backend.SYMBOLS_MAX_BYTES = limit, 1 << 40
            want = gpu_backend.decode_sum(blobs, bundle=True)
            times = []
            for _ in range(7):
                prof: dict = {}
                got = gpu_backend.decode_sum(blobs, bundle=True, profile=prof)
                times.append(prof["decode"])
            assert all(bool((a == b).all()) for a, b in zip(got, want))
            ms[path] = statistics.median(times)
        print(f"| {label} | {chunks} | {ms['tiles']:.3f} | {ms['symbols']:.3f} | "
              f"{ms['tiles'] / ms['symbols']:.2f} |", flush=True)
        del blobs


if __name__ == "__main__":
    if sys.argv[1:] == ["paths"]:
        paths()
    else:
        main(*sys.argv[1:])
