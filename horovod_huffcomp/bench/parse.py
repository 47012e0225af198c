"""``python -m horovod_huffcomp.bench parse``: the host's parse of a payload
(``payload.unpack``, its CRC given) by the section scanner (``section_scan``, numba) and by
the reference reader (``payload._read_section``, Python, a section at a time), side by side
in one run, on a ResNet-50-shaped bundle (161 float32 tensors, 25.6M parameters, 30% exact
zeros): what every worker's payload costs the host before a decode-and-sum, every step."""
from __future__ import annotations

import argparse
import time

import numpy as np

from .. import api, payload, section_scan
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


if __name__ == "__main__":
    main()
