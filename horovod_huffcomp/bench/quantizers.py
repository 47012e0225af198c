"""``bench quantizers``: what each lossy step costs in bits and in error, side by side.

On the real gradients of ``gradients.py`` (each model's tensors as one bundle, the default
coder), for every quantizer setting: bits per entry of the whole payload (headers, scales,
codebooks and checksum included), the relative error ||deq - g||^2 / ||g||^2 averaged over
``--seeds`` stochastic-rounding seeds (the variance the optimizer sees; deterministic
quantizers give the same error every seed) and its bias ||mean deq - g||^2 / ||g||^2 (zero in
expectation for the unbiased ones), and the time to quantize and encode. QSGD's buckets
(``bucket``) trade a float32 scale per bucket for a smaller error: this table is where to
read the trade.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from .. import api
from .gradients import MODELS, model_gradients

# (label, encode options)
SETTINGS = (
    [(f"qsgd l2 s={s}", dict(quantizer="qsgd", levels=s, norm="l2")) for s in (4, 16)]
    + [(f"qsgd l2 s={s} bucket {b}", dict(quantizer="qsgd", levels=s, norm="l2", bucket=b))
       for s in (4, 16) for b in (4096, 512, 128)]
    + [(f"qsgd max s={s}", dict(quantizer="qsgd", levels=s, norm="max")) for s in (8, 64)]
    + [(f"qsgd max s=8 bucket {b}", dict(quantizer="qsgd", levels=8, norm="max", bucket=b))
       for b in (4096, 512)]
    + [("terngrad", dict(quantizer="terngrad")),
       ("fp4 gennorm (CO3)", dict(quantizer="fp4")),
       ("fp8 E4M3", dict(quantizer="fp8"))]
)


def run(models=MODELS, seeds=5, steps=20, repeat=3, settings=SETTINGS):
    rows = []
    for m in models:
        grads = [g for _, g in model_gradients(m, steps=steps)]
        ref = [g.astype(np.float64) for g in grads]
        norm2 = sum(float(np.sum(r * r)) for r in ref)
        n = sum(g.size for g in grads)
        for label, opts in settings:
            err, mean = 0.0, [np.zeros(g.size) for g in grads]
            for seed in range(seeds):
                blob = api.encode_many(grads, seed=seed, **opts)
                if seed == 0:  # (other seeds' payloads differ by a few bytes)
                    bits = 8 * len(blob) / n
                for k, (d, r) in enumerate(zip(api.decode_many(blob), ref)):
                    e = d.astype(np.float64) - r
                    err += float(np.sum(e * e)) / seeds
                    mean[k] += d.reshape(-1) / seeds
            bias = sum(float(np.sum((mu - r.reshape(-1)) ** 2)) for mu, r in zip(mean, ref))
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                api.encode_many(grads, seed=0, **opts)
                best = min(best, time.perf_counter() - t0)
            rows.append(dict(model=m, setting=label, n=n, bits=bits, err=err / norm2,
                             bias=bias / norm2, enc=n / best / 1e6))
    return rows


def markdown(rows) -> str:
    lines = ["| model | quantizer | bits/entry | float32 / this | error ‖q−g‖²/‖g‖² | "
             "bias ‖E q−g‖²/‖g‖² | quantize+encode Melem/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['setting']} | {r['bits']:.3f} | "
                     f"{32 / r['bits']:.1f}× | {r['err']:.4g} | {r['bias']:.2g} | "
                     f"{r['enc']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="horovod-huffcomp-bench quantizers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--seeds", type=int, default=5, help="stochastic-rounding seeds averaged")
    ap.add_argument("--steps", type=int, default=20, help="training steps before the gradient")
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions (best is kept)")
    a = ap.parse_args(argv)
    rows = run(a.models, a.seeds, a.steps, a.repeat)
    print(f"\nmachine: {platform.processor() or platform.machine()}, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"date {time.strftime('%Y-%m-%d')}, {a.seeds} seeds\n")
    print(markdown(rows))
    return rows
