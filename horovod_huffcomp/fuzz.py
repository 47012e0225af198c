"""Fuzzing the decoder: mutated, truncated and random payloads must raise PayloadError or
decode to arrays, never crash, hang or read out of bounds.

``python -m horovod_huffcomp.fuzz --cases 1000000`` (also ``horovod-huffcomp-fuzz``) runs the
long campaign; the test suite runs 10,000+ cases. Half of the mutants get their CRC fixed up
so the parser and the bit decoders behind the checksum are exercised too.
"""
from __future__ import annotations

import argparse
import struct
import time
import zlib

import numpy as np

from . import api, payload
from .errors import PayloadError

MAX_ELEMENTS = 1 << 20  # mutated shapes may claim huge tensors: keep decoding cheap


def seed_payloads(rng: np.random.Generator) -> list[bytes]:
    """A varied corpus: every coder, quantizer, several sizes, a bundle."""
    out = []
    sizes = [0, 1, 7, 300, 5000]
    for coder in ("auto", "huffman", "sh", "shs", "rlh", "zrh", "elias-gamma", "elias-delta",
                  "elias-omega"):
        for size in sizes:
            x = (rng.standard_normal(size) * rng.exponential(1, size) ** 2).astype(np.float32)
            out.append(api.encode(x, "qsgd", coder, levels=int(rng.integers(1, 128)),
                                  norm=("l2", "max")[size % 2], seed=size))
            out.append(api.encode(x, "topk", coder, ratio=0.05, seed=1))
            out.append(api.encode(x, ("fp4", "fp8", "fp8-e5m2")[size % 3], coder))
        x = rng.standard_normal((20, 30)).astype(np.float16)
        out.append(api.encode(x, "terngrad", coder, elias_layout="gap"))
        out.append(api.encode_many([x, x[0], np.float64(3.0)], "qsgd", coder, levels=3))
        out.append(api.encode_many([x, x[0]], "qsgd", coder, levels=5, bucket=16))
    return out


def fix_crc(b: bytearray) -> None:
    if len(b) >= 8:
        b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)


def mutate(blob: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(blob)
    kind = int(rng.integers(0, 6))
    if kind == 0 and b:  # flip 1..8 bits
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, len(b)))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # truncate
        b = b[: int(rng.integers(0, len(b) + 1))]
    elif kind == 2 and b:  # overwrite a byte range with random bytes
        i = int(rng.integers(0, len(b)))
        j = min(len(b), i + int(rng.integers(1, 9)))
        b[i:j] = rng.integers(0, 256, j - i, dtype=np.uint8).tobytes()
    elif kind == 3:  # extend
        b += rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    elif kind == 4 and len(b) > 8:  # set a header byte to an extreme
        i = int(rng.integers(0, min(len(b), 24)))
        b[i] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF]))
    else:  # pure random bytes with a valid magic/version
        b = bytearray(b"HC" + bytes([payload.VERSION])) + rng.integers(
            0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
    if rng.random() < 0.5:
        fix_crc(b)
    return bytes(b)


def run(cases: int, seed: int = 0, report_every: int = 0) -> dict:
    """Decode ``cases`` mutants; returns counts. Any exception but PayloadError propagates."""
    rng = np.random.default_rng(seed)
    corpus = seed_payloads(rng)
    for blob in corpus:  # compiles the kernels, so that slowest_s times decoding alone
        api.decode(blob, max_elements=MAX_ELEMENTS)
    stats = {"cases": 0, "rejected": 0, "decoded": 0, "slowest_s": 0.0}
    t_start = time.perf_counter()
    for k in range(cases):
        blob = mutate(corpus[int(rng.integers(0, len(corpus)))], rng)
        t0 = time.perf_counter()
        try:
            api.decode(blob, max_elements=MAX_ELEMENTS)
            api.inspect(blob, max_elements=MAX_ELEMENTS)
            stats["decoded"] += 1
        except PayloadError:
            stats["rejected"] += 1
        stats["slowest_s"] = max(stats["slowest_s"], time.perf_counter() - t0)
        stats["cases"] += 1
        if report_every and (k + 1) % report_every == 0:
            rate = (k + 1) / (time.perf_counter() - t_start)
            print(f"{k + 1} cases, {stats['rejected']} rejected, {rate:.0f}/s", flush=True)
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(prog="horovod-huffcomp-fuzz", description=__doc__)
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    stats = run(a.cases, a.seed, report_every=max(1, a.cases // 20))
    print(stats)


if __name__ == "__main__":
    main()
