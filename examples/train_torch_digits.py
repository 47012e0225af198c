"""Data-parallel training of a small CNN on scikit-learn's digits with Horovod, exchanging
horovod_huffcomp payloads instead of float32 gradients.

    horovodrun -np 2 -H localhost:2 --gloo python examples/train_torch_digits.py

Each worker trains on its shard of the training split; rank 0 prints test accuracy, and the
bytes sent per step against what float32 (and Horovod's fp16) gradients would weigh.
``--compression none|fp16|huffman``, ``--grouped`` (our DistributedOptimizer), ``--mode
allgather|reduce_scatter`` (the exchange); ``--json PATH`` writes the results for scripts.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

import horovod.torch as hvd
from horovod_huffcomp.torch import Compression
from horovod_huffcomp.torch import DistributedOptimizer as GroupedDistributedOptimizer


def digits(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:360], perm[360:]
    return x[train], y[train], x[test], y[test]


def model():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, 10))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compression", choices=["none", "fp16", "huffman"], default="huffman")
    ap.add_argument("--quantizer", default="qsgd")
    ap.add_argument("--levels", type=int, default=None,
                    help="quantizer levels (default: 64 for qsgd, the quantizer's own otherwise)")
    ap.add_argument("--norm", default=None,
                    help="scale rule (default: max for qsgd, the quantizer's own otherwise)")
    ap.add_argument("--bucket", type=int, default=None,
                    help="qsgd: QSGD's buckets of this many elements (a power of two, e.g. "
                         "512), each with its own scale (default: one scale per tensor)")
    ap.add_argument("--coder", default="auto")
    ap.add_argument("--error-feedback", action="store_true")
    ap.add_argument("--gamma", type=float, default=1.0,
                    help="error feedback's decay (CO3: 0.7)")
    ap.add_argument("--grouped", action="store_true",
                    help="horovod_huffcomp.torch.DistributedOptimizer: one bundle payload and "
                         "one allgather per step instead of one per parameter")
    ap.add_argument("--mode", choices=["allgather", "reduce_scatter"], default="allgather",
                    help="exchange: every worker's payload to every worker, or shared scales "
                         "+ reduce-scatter of encoded shards + allgather of their sums "
                         "(levels * workers <= 127)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32, help="per worker")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    if a.quantizer == "qsgd":
        a.levels = 64 if a.levels is None else a.levels
        a.norm = "max" if a.norm is None else a.norm
    hvd.init()
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits(a.seed)
    xtr, ytr = xtr[hvd.rank()::hvd.size()], ytr[hvd.rank()::hvd.size()]
    net = model()
    compression = {
        "none": hvd.Compression.none,
        "fp16": hvd.Compression.fp16,
        "huffman": None,
    }[a.compression]
    if compression is None:
        compression = Compression.huffman(quantizer=a.quantizer, levels=a.levels, norm=a.norm,
                                          coder=a.coder, error_feedback=a.error_feedback,
                                          gamma=a.gamma, seed=a.seed, mode=a.mode,
                                          bucket=a.bucket)
    opt = torch.optim.SGD(net.parameters(), lr=a.lr * hvd.size(), momentum=0.9)
    if a.grouped and a.compression == "huffman":
        opt = GroupedDistributedOptimizer(opt, named_parameters=net.named_parameters(),
                                          compression=compression)
    else:
        opt = hvd.DistributedOptimizer(opt, named_parameters=net.named_parameters(),
                                       compression=compression)
    hvd.broadcast_parameters(net.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)

    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(a.seed + hvd.rank())
    raw_per_step = 4 * sum(p.numel() for p in net.parameters())
    steps, sent, received, codec_s, t0 = 0, 0, 0, 0.0, time.perf_counter()
    for epoch in range(a.epochs):
        net.train()
        perm = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr) - a.batch + 1, a.batch):
            idx = perm[i : i + a.batch]
            opt.zero_grad()
            loss = loss_fn(net(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            steps += 1
            if a.compression == "huffman":
                st = compression.stats.take()
                sent += st["bytes_sent"]
                received += st["bytes_received"]
                codec_s += st["encode_s"] + st["decode_s"]
    elapsed = time.perf_counter() - t0
    ring = 2 * (hvd.size() - 1) / hvd.size()  # what a ring allreduce moves per worker
    if a.compression == "none":
        sent, received = raw_per_step * steps, ring * raw_per_step * steps
    elif a.compression == "fp16":
        sent, received = raw_per_step // 2 * steps, ring * raw_per_step // 2 * steps
    net.eval()
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    params = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    gathered = hvd.allgather(params.unsqueeze(0))
    identical = bool((gathered == gathered[0]).all())
    result = dict(compression=a.compression, grouped=a.grouped, mode=a.mode,
                  quantizer=a.quantizer, levels=a.levels,
                  norm=a.norm, workers=hvd.size(), epochs=a.epochs, steps=steps,
                  accuracy=acc, bytes_sent_per_step=sent / steps,
                  bytes_received_per_step=received / steps,
                  float32_bytes_per_step=raw_per_step, seconds=elapsed, codec_seconds=codec_s,
                  parameters_identical_on_all_ranks=identical)
    if hvd.rank() == 0:
        print(f"{a.compression}: {hvd.size()} workers, {steps} steps, test accuracy "
              f"{100 * acc:.2f}%, {elapsed:.1f} s (encode + decode {codec_s:.1f} s)")
        print(f"bytes sent per step per worker: {sent / steps:,.0f} "
              f"(float32 {raw_per_step:,}, fp16 {raw_per_step // 2:,}) -> "
              f"{raw_per_step * steps / sent:.1f}x less than float32")
        print(f"parameters identical on all ranks: {identical}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
