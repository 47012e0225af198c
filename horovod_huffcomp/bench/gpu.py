"""``bench gpu``: throughput of the GPU backend (issue #3), next to the device's copy bandwidth.

For float32 tensors of 1 MB to 1 GB and a batch shaped like ResNet-50's gradients (161
tensors, 25.6M parameters), in one run:

* device-to-device copy bandwidth (bytes read + written, a large ``cupy.copyto``): the ceiling;
* a plain CuPy baseline: max-norm scale, then quantize + int8 cast (no entropy coding);
* quantize + encode (default QSGD max norm s = 16, huffman; ``--coders`` takes one or more
  of huffman, sh, shs, zrh, auto, rlh and the Elias baselines, measured one after another in
  the same run; ``--quantizer`` (qsgd, terngrad, topk with ``--ratio`` and ``--levels``: 0 exact,
  the kept values' raw float32 magnitudes, or >= 1 quantized; or a float format: fp4, fp8,
  fp8-e5m2), ``--bucket``,
  ``--elias-layout``, ``--levels``, ``--norm`` for other settings): device time of the
  kernels (CUDA events around the stages, median of repeats, inputs rotated so small sizes
  do not sit in L2; for zrh / auto without the copy of the histograms to the host and the
  choice of codes there; for rlh with them: its pairs' copy and the codes built on the host)
  and
  end to end (``hc.encode`` of a CuPy array: plus the plan and data copies to the host, the
  headers and the CRC), as GB/s of float32 input;
* huffman, sh and auto twice by default, huffman's chunk bits and writer a state a lane
  and four states a lane (``gpu_backend.WIDE``; ``--huffman-writer`` one or four for one);
* decode-and-sum of 4 workers' payloads (``gpu_backend.decode_sum``), as GB/s of float32
  output: device time of the decode kernels
  (tables + decode-and-add, after the one upload) and end to end (host parsing, the
  upload, the kernels);
* bits per entry of the payload against the order-0 entropy of the states.

Targets from the issue (H100): quantize+encode >= 1 TB/s, decode-and-sum >= 500 GB/s.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

SIZES_MB = (1, 16, 256, 1024)
LEVELS = 16


def resnet50_shapes() -> list[tuple]:
    """Parameter shapes of torchvision's ResNet-50 (conv, batch-norm weight and bias, fc)."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            cout = 4 * width
            shapes += [(width, cin, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (cout, width, 1, 1), (cout,), (cout,)]
            if b == 0:
                shapes += [(cout, cin, 1, 1), (cout,), (cout,)]
            cin = cout
    return shapes + [(1000, 2048), (1000,)]


def resnet50_gradients(xp=np) -> list:
    """Float32 gradients of ResNet-50's shapes (normal, scale 1e-3, 30% exact zeros, seed
    0) as ``xp`` arrays: NumPy, or CuPy (its Generator has the same calls)."""
    rng = xp.random.default_rng(0)
    xs = []
    for shape in resnet50_shapes():
        x = rng.standard_normal(int(np.prod(shape)), dtype=xp.float32) * 1e-3
        x[rng.random(x.size) < 0.3] = 0
        xs.append(x.reshape(shape))
    return xs


def median_ms(fn, repeat: int) -> float:
    import cupy

    times = []
    for _ in range(repeat):
        a, b = cupy.cuda.Event(), cupy.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(cupy.cuda.get_elapsed_time(a, b))
    return statistics.median(times)


def wall_ms(fn, repeat: int) -> float:
    import cupy

    times = []
    for _ in range(repeat):
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        fn()
        cupy.cuda.Device().synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def copy_bandwidth(repeat: int, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy, GB/s of bytes read plus written."""
    import cupy

    src = cupy.ones(nbytes // 4, cupy.float32)
    dst = cupy.empty_like(src)
    return 2 * nbytes / median_ms(lambda: cupy.copyto(dst, src), repeat) / 1e6


def entropy_bits(states: np.ndarray) -> float:
    _, c = np.unique(states, return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def main(argv=None):
    import cupy

    import horovod_huffcomp as hc
    from horovod_huffcomp import gpu_backend
    from horovod_huffcomp.quantizers import check_options, quantize

    ap = argparse.ArgumentParser(prog="horovod-huffcomp-bench gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=list(SIZES_MB))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--coders", "--coder", dest="coder", nargs="+", default=["huffman"],
                    choices=("huffman", "sh", "shs", "zrh", "auto", "rlh") + gpu_backend.ELIAS)
    ap.add_argument("--elias-layout", default="runlength", choices=gpu_backend.ELIAS_LAYOUTS)
    ap.add_argument("--quantizer", default="qsgd",
                    choices=("qsgd", "terngrad", "topk") + tuple(gpu_backend.FP_IDS))
    ap.add_argument("--ratio", type=float, default=0.01, help="top-k's kept fraction")
    ap.add_argument("--levels", type=int, default=LEVELS, help="QSGD s (default %(default)s)")
    ap.add_argument("--bucket", type=int, default=None, help="QSGD's bucket size (elements)")
    ap.add_argument("--norm", default=None, choices=("max", "l2", "gennorm"),
                    help="default: max (fp4: gennorm)")
    ap.add_argument("--huffman-writer", default="both", choices=("one", "four", "both"),
                    help="huffman's chunk bits and writer a state a lane, four (gpu_backend."
                         "WIDE), or both side by side (default)")
    a = ap.parse_args(argv)
    levels = a.levels if a.quantizer in ("qsgd", "topk") else None
    levels, norm = check_options(a.quantizer, levels, a.norm or (
        "gennorm" if a.quantizer == "fp4" else "max"), a.ratio)
    # time the kernels not yet on by default too (docs/gpu.md)
    gpu_backend.NOT_YET_ON_DEVICE = set()
    if not gpu_backend.available():
        raise SystemExit("bench gpu needs a CUDA device visible to CuPy")
    dev = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"].decode()
    rng = cupy.random.default_rng(0)

    copy_gbs = copy_bandwidth(a.repeat)

    def gradient(n):
        x = rng.standard_normal(n, dtype=cupy.float32) * 1e-3
        x[rng.random(n) < 0.3] = 0  # exact zeros, as gradients have
        return x

    rows = []

    def measure(label, xs, coder_label, coder):
        nbytes = sum(x.nbytes for x in xs)
        sets = [xs] + [[gradient(x.size).reshape(x.shape) for x in xs]
                       for _ in range(2 if nbytes < (256 << 20) else 0)]
        k = [0]

        def pick():
            k[0] = (k[0] + 1) % len(sets)
            return sets[k[0]]

        def baseline():
            for x in pick():
                scale = cupy.abs(x).max()
                cupy.rint(x * (max(levels, 1) / scale)).astype(cupy.int8)

        opts = dict(quantizer=a.quantizer, coder=coder, levels=levels, norm=norm, seed=1,
                    elias_layout=a.elias_layout, bucket=a.bucket, ratio=a.ratio)
        hc.encode_many(xs, **opts)  # warm-up: module compilation
        base_ms = median_ms(baseline, a.repeat)
        profs = []
        for _ in range(a.repeat):
            prof: dict = {}
            gpu_backend.encode_sections(pick(), chunk_log2=None, nonfinite="raise",
                                        profile=prof, **opts)
            profs.append(prof)
        stages = {s: statistics.median(p[s] for p in profs) for s in profs[0]}
        device_ms = sum(v for s, v in stages.items() if not s.endswith(("to host", "on host")))
        enc_ms = wall_ms(lambda: hc.encode_many(pick(), **opts), a.repeat)
        blobs = [hc.encode_many(sets[0], **dict(opts, seed=r)) for r in range(a.workers)]
        gpu_backend.decode_sum(blobs)
        dec_ms = wall_ms(lambda: gpu_backend.decode_sum(blobs), a.repeat)
        dprofs = []
        for _ in range(a.repeat):
            prof = {}
            gpu_backend.decode_sum(blobs, profile=prof)
            dprofs.append(prof)
        dstages = {s: statistics.median(p[s] for p in dprofs) for s in dprofs[0]}
        bits = 8 * len(blobs[0]) / sum(x.size for x in xs)
        h = None
        if nbytes <= (64 << 20):
            host = [cupy.asnumpy(x).reshape(-1) for x in sets[0]]
            st = np.concatenate([quantize(x, a.quantizer, levels, norm, 1, i, a.ratio,
                                          bucket=a.bucket).states[: x.size]
                                 for i, x in enumerate(host)])
            h = entropy_bits(st)
        rows.append(dict(label=label, coder=coder_label, mb=nbytes / 2**20,
                         base=nbytes / base_ms / 1e6,
                         device=nbytes / device_ms / 1e6, e2e=nbytes / enc_ms / 1e6,
                         dec=a.workers * nbytes / dec_ms / 1e6,
                         dec_device=a.workers * nbytes / dstages["decode"] / 1e6, bits=bits,
                         h=h, stages=stages))
        r = rows[-1]
        print(f"{label}, {coder_label}: encode device {r['device']:.0f} GB/s, end to end "
              f"{r['e2e']:.1f} GB/s, decode-and-sum device {r['dec_device']:.0f} GB/s, end to "
              f"end {r['dec']:.1f} GB/s; encode stages (ms) "
              + ", ".join(f"{s} {v:.3f}" for s, v in stages.items()) + "; decode stages (ms) "
              + ", ".join(f"{s} {v:.3f}" for s, v in dstages.items()), flush=True)

    writers = {"one": [False], "four": [True], "both": [False, True]}[a.huffman_writer]
    for coder in a.coder:
        for wide in writers if coder in ("huffman", "sh", "auto") else [False]:
            gpu_backend.WIDE = wide
            label = f"{coder}, 4 states a lane" if wide else coder
            for mb in a.sizes_mb:
                measure(f"{mb} MB", [gradient(mb << 18)], label, coder)
            measure("ResNet-50 batch", [gradient(int(np.prod(s))).reshape(s)
                                        for s in resnet50_shapes()], label, coder)

    print(f"\n{name}, {time.strftime('%Y-%m-%d')}; device-to-device copy {copy_gbs:,.0f} GB/s "
          f"(read + write); {a.quantizer} {norm} norm s = {levels}"
          f"{'' if a.bucket is None else f' in buckets of {a.bucket}'}; Elias layout "
          f"{a.elias_layout}; "
          f"decode-and-sum of {a.workers} payloads\n")
    print("| input | coder | MB | CuPy quantize + int8 (GB/s) | quantize + encode, device "
          "(GB/s) | "
          "encode end to end (GB/s) | decode-and-sum, device (GB/s out) | decode-and-sum end "
          "to end (GB/s out) | bits/entry | entropy | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        h = f"{r['h']:.3f} | {r['bits'] / r['h']:.3f}" if r["h"] else "- | -"
        print(f"| {r['label']} | {r['coder']} | {r['mb']:.0f} | {r['base']:.0f} | "
              f"{r['device']:.0f} | {r['e2e']:.1f} | {r['dec_device']:.0f} | {r['dec']:.1f} | "
              f"{r['bits']:.3f} | {h} |")
    return rows


if __name__ == "__main__":
    main()
