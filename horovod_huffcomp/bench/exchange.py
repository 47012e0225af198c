"""``bench exchange``: what one worker moves per step, allgather against reduce-scatter, N = 2..32.

N data-parallel workers are simulated in this process on real gradients (a model trained on
digits for a few steps, then one mini-batch per worker, ``gradients.worker_gradients``):

* float32 ring allreduce: 2 (N - 1)/N x the raw gradient (what Horovod's own allreduce moves);
* allgather exchange: every worker's bundle payload (``encode_many``, own scales) reaches every
  other worker, so a worker receives the N - 1 other payloads;
* reduce-scatter exchange (``summable.py``): shared scales, shards by alltoall, exact integer
  sum, reduced shards by allgather; bytes received counted by the round itself.

Bytes are measured (payload sizes), the codec time is this process's CPU time per worker
(encode + decode of one step); no wall-clock link is simulated. Levels: s = min(16, 127 // N)
so the reduce-scatter sum fits the int8 states, the same s for both exchanges.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .. import api, exchange, summable
from .gradients import worker_gradients


def measure(grads, quantizer: str, levels: int | None) -> dict:
    n = len(grads)
    names = [name for name, _ in grads[0]]
    xs = [[g for _, g in worker] for worker in grads]
    raw = 4 * sum(x.size for x in xs[0])
    opts = dict(quantizer=quantizer, levels=levels, norm="max")
    # allgather: a worker encodes its bundle once and decodes all N payloads
    t0 = time.process_time()
    blobs = [api.encode_many(x, seed=r, **opts) for r, x in enumerate(xs)]
    t1 = time.process_time()
    for b in blobs:
        api.decode_many(b)
    ag_codec = (t1 - t0) / n + (time.process_time() - t1)
    frames = [len(b) + exchange.FRAME_HEADER for b in blobs]
    ag_received = np.mean([sum(frames) - f for f in frames])
    # reduce-scatter
    states = [exchange.CompressorState(mode="reduce_scatter", **opts) for _ in range(n)]
    summable.simulate(states, xs, names)
    st = [s.stats.take() for s in states]
    return dict(raw=raw, ring=2 * (n - 1) / n * raw, ag_received=ag_received,
                ag_codec_s=ag_codec,
                rs_received=np.mean([s["bytes_received"] for s in st]),
                rs_codec_s=np.mean([s["encode_s"] + s["decode_s"] for s in st]))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="horovod-huffcomp-bench exchange", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cnn", choices=["mlp", "cnn", "transformer"])
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    ap.add_argument("--steps", type=int, default=20, help="training steps before measuring")
    a = ap.parse_args(argv)
    grads = worker_gradients(a.model, max(a.workers), a.steps)
    measure(grads[:2], "qsgd", 4)  # compile the kernels before anything is timed
    configs = [("qsgd max", None), ("terngrad", 1)]
    print(f"{a.model}: {sum(g.size for _, g in grads[0]):,} parameters, "
          f"{a.steps} training steps, date {time.strftime('%Y-%m-%d')}\n")
    print("| N | quantizer | s | float32 ring allreduce (B) | allgather (B) | "
          "reduce-scatter (B) | allgather / reduce-scatter | codec ms, allgather | "
          "codec ms, reduce-scatter |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in a.workers:
        for label, fixed in configs:
            s = fixed or min(16, summable.MAX_LEVELS // n)
            quantizer = "terngrad" if label == "terngrad" else "qsgd"
            m = measure(grads[:n], quantizer, s)
            m.update(workers=n, quantizer=label, levels=s)
            rows.append(m)
            print(f"| {n} | {label} | {s} | {m['ring']:,.0f} | {m['ag_received']:,.0f} | "
                  f"{m['rs_received']:,.0f} | {m['ag_received'] / m['rs_received']:.2f}x | "
                  f"{1e3 * m['ag_codec_s']:.1f} | {1e3 * m['rs_codec_s']:.1f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
