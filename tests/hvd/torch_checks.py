"""Run under ``horovodrun -np 2 --gloo``: checks of horovod_huffcomp.torch, results as JSON
(written by rank 0 to argv[1]). Driven by tests/test_horovod_torch.py."""
import json
import sys

import numpy as np
import torch
from torch import nn

import horovod.torch as hvd
import horovod_huffcomp as hc
from horovod_huffcomp.quantizers import scale_of
from horovod_huffcomp.torch import Compression
from horovod_huffcomp.torch import DistributedOptimizer as GroupedOptimizer

hvd.init()
torch.manual_seed(0)
torch.set_num_threads(1)
out = {}


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))
        self.unused = nn.Linear(3, 3)  # never gets a gradient: sent as zeros, on every rank

    def forward(self, x):
        return self.body(x)


def make(compression, grouped=False, **kw):
    """Net and distributed SGD: Horovod's optimizer with our compressor, or (grouped) ours,
    around a net with an unused parameter."""
    torch.manual_seed(0)
    net = WithUnused() if grouped else nn.Sequential(nn.Linear(20, 64), nn.ReLU(),
                                                     nn.Linear(64, 5))
    wrap = GroupedOptimizer if grouped else hvd.DistributedOptimizer
    opt = wrap(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
               named_parameters=net.named_parameters(), compression=compression, **kw)
    hvd.broadcast_parameters(net.state_dict(), root_rank=0)
    return net, opt


def batch(step):
    g = torch.Generator().manual_seed(1000 * step + hvd.rank())  # different data per rank
    return torch.randn(16, 20, generator=g), torch.randint(0, 5, (16,), generator=g)


def backward(net, opt, step):
    x, y = batch(step)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()


# 1. the averaged gradient is exactly the mean of every rank's dequantized gradient
def exact_over_3_steps(comp, net, opt, tag):
    exact = True
    for step in range(3):
        backward(net, opt, step)
        opt.synchronize()
        for name, p in net.named_parameters():
            if name.startswith("unused"):  # no gradient anywhere: zeros
                exact &= bool(torch.equal(p.grad, torch.zeros_like(p)))
                continue
            own = torch.from_numpy(comp.last_dequantized[name].astype(np.float64))
            all_ = hvd.allgather(own.unsqueeze(0), name=f"{tag}.{name}.{step}")
            mean = (all_[0] + all_[1]) / 2  # float64 sum in rank order, as the compressor does
            exact &= bool(torch.equal(p.grad, mean.to(p.grad.dtype)))
        with opt.skip_synchronize():
            opt.step()
    return exact


comp = Compression.huffman(quantizer="qsgd", levels=4, norm="l2")
out["exact_mean"] = exact_over_3_steps(comp, *make(comp), "check")
stats = comp.stats.take()
out["stats"] = stats


# 2. fifty steps: parameters bit-identical on both ranks (with and without error feedback)
def identical_after(compression, steps=50, **kw):
    net, opt = make(compression, **kw)
    for step in range(steps):
        backward(net, opt, step)
        opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    g = hvd.allgather(flat.unsqueeze(0))
    return bool(torch.equal(g[0], g[1]))


out["identical_50"] = identical_after(Compression.huffman(quantizer="qsgd", levels=16))
out["identical_50_ef"] = identical_after(
    Compression.huffman(quantizer="terngrad", error_feedback=True, gamma=0.7))
out["identical_50_topk"] = identical_after(Compression.huffman(quantizer="topk", ratio=0.05))
# CO3: fp4 with the GenNorm scale, error feedback with decay 0.7
comp = Compression.huffman(quantizer="fp4", error_feedback=True, gamma=0.7)
out["exact_mean_fp4"] = exact_over_3_steps(comp, *make(comp), "check_fp4")
out["identical_50_fp4"] = identical_after(
    Compression.huffman(quantizer="fp4", error_feedback=True, gamma=0.7), grouped=True)
# QSGD's buckets (a scale per 64 elements), per parameter and grouped
comp = Compression.huffman(quantizer="qsgd", levels=16, norm="l2", bucket=64)
out["exact_mean_bucket"] = exact_over_3_steps(comp, *make(comp), "check_bucket")
out["identical_50_bucket"] = identical_after(
    Compression.huffman(quantizer="qsgd", levels=16, bucket=64, error_feedback=True),
    grouped=True)

# 3. a corrupted payload from rank 1 raises a clear error on every rank, no hang
def corrupt_errors(mode="allgather", **kw):
    comp = Compression.huffman(quantizer="qsgd", levels=8, mode=mode)
    net, opt = make(comp, **kw)
    comp._fault_rank = 1
    try:
        backward(net, opt, 0)
        opt.synchronize()
        err = None
    except hc.PayloadError as e:
        err = str(e)
    return hvd.allgather_object(err)


out["corrupt_errors_all_ranks"] = corrupt_errors()

# 4. grouped DistributedOptimizer: exact mean, identical weights, one collective per group
comp = Compression.huffman(quantizer="qsgd", levels=4, norm="l2")
net, opt = make(comp, grouped=True, num_groups=2)
out["grouped_is_sgd"] = isinstance(opt, torch.optim.SGD) and type(opt).__name__ == "SGD"
out["grouped_exact_mean"] = exact_over_3_steps(comp, net, opt, "gcheck")
out["grouped_stats"] = comp.stats.take()

out["grouped_identical_50"] = identical_after(
    Compression.huffman(quantizer="qsgd", levels=16), grouped=True)
out["grouped_identical_50_ef_2passes"] = identical_after(
    Compression.huffman(quantizer="terngrad", error_feedback=True), grouped=True,
    num_groups=3, backward_passes_per_step=2)

out["grouped_corrupt_errors_all_ranks"] = corrupt_errors(grouped=True)

# 5. shared-scale reduce-scatter exchange (per-parameter compressor and grouped optimizer):
# the result is the documented exact integer sum, float64(sum of states) * S / s / N, with S the
# max over ranks of every rank's own scale
def rs_exact_over_3_steps(grouped, levels=8, norm="max", **kw):
    comp = Compression.huffman(quantizer="qsgd", levels=levels, norm=norm,
                               mode="reduce_scatter")
    net, opt = make(comp, grouped=grouped, **kw)
    exact, integral = True, True
    for step in range(3):
        backward(net, opt, step)
        raw = {n: p.grad.detach().numpy().reshape(-1).copy() for n, p in net.named_parameters()
               if p.grad is not None}
        opt.synchronize()
        for name, p in net.named_parameters():
            own = raw.get(name, np.zeros(p.numel(), np.float32))
            scale = hvd.allreduce(torch.tensor([scale_of(own, "qsgd", norm)]),
                                  op=hvd.Max, name=f"rs.{grouped}.{name}.{step}.s").item()
            if scale == 0:
                exact &= bool(torch.equal(p.grad, torch.zeros_like(p)))
                continue
            mine = comp.last_dequantized[name].astype(np.float64).reshape(-1) * levels / scale
            states = np.rint(mine)
            integral &= bool(np.abs(mine - states).max() < 1e-4)
            total = hvd.allreduce(torch.from_numpy(states), op=hvd.Sum,
                                  name=f"rs.{grouped}.{name}.{step}.t").numpy()
            want = (total * scale / levels / hvd.size()).astype(np.float32)
            exact &= bool(np.array_equal(p.grad.numpy().reshape(-1), want))
        with opt.skip_synchronize():
            opt.step()
    return exact and integral, comp.stats.take()


out["rs_exact"], out["rs_stats"] = rs_exact_over_3_steps(False)
out["rs_grouped_exact"], out["rs_grouped_stats"] = rs_exact_over_3_steps(
    True, levels=16, norm="l2", num_groups=2)
out["rs_identical_50"] = identical_after(
    Compression.huffman(quantizer="qsgd", levels=16, mode="reduce_scatter"))
out["rs_grouped_identical_50_ef"] = identical_after(
    Compression.huffman(quantizer="terngrad", error_feedback=True, mode="reduce_scatter"),
    grouped=True, num_groups=3)
out["rs_corrupt_errors_all_ranks"] = corrupt_errors(mode="reduce_scatter")
out["rs_grouped_corrupt_errors_all_ranks"] = corrupt_errors(grouped=True, num_groups=2,
                                                            mode="reduce_scatter")

if hvd.rank() == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
