"""``python -m horovod_huffcomp.bench parse``: the host's parse of a payload
(``payload.unpack``, its CRC given) by the section scanner (``section_scan``, numba) and by
the reference reader (``payload._read_section``, Python, a section at a time), side by side
in one run, on a ResNet-50-shaped bundle (161 float32 tensors, 25.6M parameters, 30% exact
zeros): what every worker's payload costs the host before a decode-and-sum, every step.
Then the payloads' CRC-32 (every encode's ``payload.pack``, every decode's
``payload.body_crcs``): zlib on one thread, a thread per payload, and ``crc.py``'s pieces
on threads. Last, the host part of the GPU backend's decode-and-sum of 1, 2 and 4 workers'
payloads (``gpu_backend.decode_sum``, no device needed for it): their CRCs, their parse and
their decode plans (``gpu_backend._decode_plan``: what the kernels are given)."""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import time
import zlib

import numpy as np

from .. import api, crc, gpu_backend, payload, section_scan
from .gpu import resnet50_gradients

CASES = [("qsgd", 16, "huffman"), ("qsgd", 16, "auto"), ("qsgd", 16, "zrh"),
         ("qsgd", 16, "shs"), ("qsgd", 16, "elias-gamma"), ("topk", 1, "auto")]


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m horovod_huffcomp.bench parse")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    xs = resnet50_gradients()
    print(f"ResNet-50-shaped bundle: {len(xs)} tensors, {sum(x.size for x in xs):,} "
          f"parameters; median of {args.repeat} calls of payload.unpack (CRC given)")
    print("| quantizer | coder | payload MB | sections read by Python | reference ms | "
          "scanner ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for quantizer, levels, coder in CASES:
        kw = dict(ratio=0.01) if quantizer == "topk" else dict(norm="max")
        blob = api.encode_many(xs, quantizer, coder, levels, seed=0, **kw)
        crc = payload.body_crcs([blob])[0]
        fast = _median_ms(lambda: payload.unpack(blob, body_crc=crc), args.repeat)
        with section_scan.reference_reader():
            ref = _median_ms(lambda: payload.unpack(blob, body_crc=crc), args.repeat)
        own = sum(sec.coder == "rlh" and not sec.reuse
                  for sec in payload.unpack(blob, body_crc=crc)[1])
        print(f"| {quantizer} | {coder} | {len(blob) / 1e6:.1f} | {own} | {ref:.2f} | "
              f"{fast:.2f} | {ref / fast:.1f}x |")
    crc_table(xs, args.repeat)
    decode_host_table(xs, args.repeat)


def crc_table(xs, repeat: int) -> None:
    """The CRC of 1 and of 4 workers' huffman payloads of the bundle, three ways."""
    blobs = [memoryview(api.encode_many(xs, "qsgd", "huffman", 16, "max", seed=r))
             for r in range(4)]
    pool = concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1))
    print(f"\nCRC-32 of the huffman payloads ({len(blobs[0]) / 1e6:.1f} MB each), "
          f"{os.cpu_count()} CPUs, median of {repeat} calls")
    print("| payloads | zlib, one thread (ms) | a thread per payload (ms) | "
          "pieces on threads (ms) | speed-up over one thread |")
    print("|---|---|---|---|---|")
    for k in (1, 4):
        some = blobs[:k]
        want = [zlib.crc32(b) for b in some]
        assert crc.crc32_many(some) == want
        one = _median_ms(lambda: [zlib.crc32(b) for b in some], repeat)
        each = _median_ms(lambda: list(pool.map(zlib.crc32, some)), repeat)
        pieces = _median_ms(lambda: crc.crc32_many(some), repeat)
        print(f"| {k} | {one:.2f} | {each:.2f} | {pieces:.2f} | {one / pieces:.1f}x |")
    pool.shutdown()


def decode_host_table(xs, repeat: int) -> None:
    """The host's work in a GPU decode-and-sum of k workers' payloads of the bundle."""
    print(f"\nHost part of a GPU decode-and-sum (gpu_backend.decode_sum) of k workers' "
          f"payloads, QSGD max s = 16, {os.cpu_count()} CPUs, median of {repeat} calls")
    print("| coder | k | CRCs (ms) | parse, CRC given (ms) | decode plans (ms) | "
          "host total (ms) |")
    print("|---|---|---|---|---|---|")
    for coder in ("huffman", "auto"):
        blobs = [api.encode_many(xs, "qsgd", coder, 16, "max", seed=r) for r in range(4)]
        for k in (1, 2, 4):
            some = blobs[:k]
            crcs = payload.body_crcs(some)
            parsed = [payload.unpack(b, body_crc=c) for b, c in zip(some, crcs)]

            def plans():
                seen: dict = {}  # as one decode_sum call caches codebooks
                return [gpu_backend._decode_plan(b, secs, "payload", seen)
                        for b, (_, secs) in zip(some, parsed)]

            ms = [_median_ms(lambda: payload.body_crcs(some), repeat),
                  _median_ms(lambda: [payload.unpack(b, body_crc=c)
                                      for b, c in zip(some, crcs)], repeat),
                  _median_ms(plans, repeat)]
            print(f"| {coder} | {k} | " + " | ".join(f"{v:.2f}" for v in ms)
                  + f" | {sum(ms):.2f} |")


if __name__ == "__main__":
    main()
