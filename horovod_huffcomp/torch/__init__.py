"""PyTorch + Horovod adapter: compressors that send encoded bytes.

    import horovod.torch as hvd
    from horovod_huffcomp.torch import Compression
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                   compression=Compression.huffman(quantizer="qsgd", levels=16))

Horovod sums whatever ``compress()`` returns, and a Huffman bitstream cannot be summed. So
``compress()`` encodes the gradient, starts an ``allgather`` of the payload under a name
derived from the parameter (``huffcomp.<parameter name>``, never from call order) and hands
Horovod a one-element placeholder to allreduce; ``decompress()`` waits for the allgather,
decodes every worker's payload and returns their average. The bytes that cross the wire are
the encoded ones (plus one 4-byte length per payload and Horovod's placeholder).
"""
from __future__ import annotations

import contextlib
import sys
import zlib

import numpy as np
import torch

from .. import exchange, gpu_backend, summable
from ..errors import PayloadError

__all__ = ["Compression", "DistributedOptimizer", "HuffmanCompressor", "PayloadError"]


def _parameter_name_from_caller() -> str | None:
    """The name Horovod's optimizer gives the parameter whose gradient is being compressed.

    Horovod passes compress() nothing but the tensor; its optimizer's frame (or the
    comprehension frame of its grouped path) holds the parameter ``p`` and ``self`` with
    ``_parameter_names``: we read the name there.
    """
    f = sys._getframe(2)
    for _ in range(4):
        if f is None:
            return None
        loc = f.f_locals
        owner, p = loc.get("self"), loc.get("p")
        names = getattr(owner, "_parameter_names", None)
        if isinstance(names, dict) and p is not None and p in names:
            return names[p]
        f = f.f_back
    return None


class HuffmanCompressor(exchange.CompressorState):
    """A Horovod compressor exchanging horovod_huffcomp payloads (see the module docstring).

    Options are :func:`horovod_huffcomp.encode`'s, plus ``error_feedback`` (residual memory,
    ``gamma`` its decay as in CO3), ``average`` (False sums, for ``op=hvd.Sum``) and ``mode``:
    "allgather" (default) or "reduce_scatter" (shared scales, encoded shards reduce-scattered
    by alltoall and summed exactly, then allgathered; ``summable.py``, for many workers).
    ``stats`` counts bytes sent/received, their float32 equivalent and codec time;
    ``stats.take()`` returns and resets them (call it once per step).
    """

    def compress(self, tensor: torch.Tensor, name: str | None = None):
        import horovod.torch as hvd

        name = name or _parameter_name_from_caller()
        if name is None:
            raise RuntimeError(
                "HuffmanCompressor could not tell which parameter it is compressing: use it "
                "through hvd.DistributedOptimizer, or call compress(tensor, name=...)")
        placeholder = torch.zeros(1, dtype=tensor.dtype, device=tensor.device)
        if self.mode == "reduce_scatter":
            round_ = summable.ShardedRound(self, name, [name], [_numpy(tensor)], hvd.rank(),
                                           hvd.size())
            handle = _allreduce_max(round_)
            return placeholder, (round_, handle, tensor.dtype, tensor.device)
        with exchange.Timer() as t:
            x, framed, mine = self.encode_framed(name, _codec_array(tensor), hvd.rank())
        handle = hvd.allgather_async(torch.frombuffer(bytearray(framed), dtype=torch.uint8),
                                     name=f"huffcomp.{name}")
        ctx = (handle, name, x, tuple(tensor.shape), tensor.dtype, tensor.device, len(framed),
               t.s, mine)
        return placeholder, ctx

    def decompress(self, tensor: torch.Tensor, ctx):
        import horovod.torch as hvd

        if self.mode == "reduce_scatter":
            round_, handle, dtype, device = ctx
            (mean,) = _finish_rounds([(round_, handle)])[0]
            return torch.from_numpy(mean).to(dtype=dtype, device=device)
        handle, name, sent, shape, dtype, device, nbytes, enc_s, mine = ctx
        gathered = hvd.synchronize(handle).numpy()
        with exchange.Timer() as t:
            frames = exchange.split_frames(gathered, hvd.size())
            (mean,), (own,) = exchange.decode_mean(frames, [shape], rank=hvd.rank(),
                                                   average=self.average,
                                                   cuda=not isinstance(sent, np.ndarray),
                                                   mine=mine)
        self.record(name, sent, own)
        self.stats.add(nbytes, gathered.size - nbytes, int(np.prod(shape)), enc_s, t.s)
        return _to_torch(mean, dtype, device).reshape(shape)


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy()


def _codec_array(t: torch.Tensor):
    """A gradient as the codec takes it: a CUDA tensor as a CuPy array sharing its memory
    (DLPack: the GPU backend encodes it, and error feedback stays on the device) when CuPy
    sees a GPU, anything else as a NumPy array on the host."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    if t.is_cuda and gpu_backend.available():
        import cupy

        return cupy.from_dlpack(t)
    return t.cpu().numpy()


def _to_torch(a, dtype, device) -> torch.Tensor:
    """A decoded result (NumPy, or CuPy from the GPU decoder) as a tensor of dtype on device."""
    t = torch.from_numpy(a) if isinstance(a, np.ndarray) else torch.from_dlpack(a)
    return t.to(dtype=dtype, device=device)


def _allreduce_max(round_: summable.ShardedRound):
    """Step 1 of a shared-scale round: the max-allreduce of its tensors' scales, started."""
    import horovod.torch as hvd

    return hvd.allreduce_async(torch.from_numpy(round_.local_scales),
                               name=f"huffcomp.scale.{round_.key}", op=hvd.Max)


def _finish_rounds(pending) -> list[list[np.ndarray]]:
    """Steps 2-4 of shared-scale rounds whose scale allreduces are in flight, pipelined: every
    round's alltoall is started before any is waited for, and so is every allgather."""
    import horovod.torch as hvd

    def name(r, what):
        return f"huffcomp.{what}.{r.key}"

    a2a = []
    for r, handle in pending:
        buf, splits = r.encode(hvd.synchronize(handle).numpy())
        a2a.append(hvd.alltoall_async(torch.from_numpy(buf.copy()),
                                      splits=torch.tensor(splits, dtype=torch.int32),
                                      name=name(r, "rs")) if r.exchanges else None)
    gathers = []
    for (r, _), h in zip(pending, a2a):
        if h is not None:
            received, splits = hvd.synchronize(h)
            frame = r.reduce(received.numpy(), splits.numpy())
            h = hvd.allgather_async(torch.from_numpy(frame.copy()), name=name(r, "ag"))
        gathers.append(h)
    return [r.finish(hvd.synchronize(h).numpy() if h is not None else None)
            for (r, _), h in zip(pending, gathers)]


class Compression:
    """Horovod-style namespace: ``Compression.huffman(...)`` builds a HuffmanCompressor."""

    @staticmethod
    def huffman(**options) -> HuffmanCompressor:
        return HuffmanCompressor(**options)


class _GroupedDistributedOptimizer(torch.optim.Optimizer):
    """Methods of the optimizer class built by :func:`DistributedOptimizer` (it subclasses the
    wrapped optimizer's class, as Horovod's does)."""

    def __init__(self, params, named_parameters, compression, backward_passes_per_step, op,
                 num_groups, groups):
        import horovod.torch as hvd

        super(self.__class__, self).__init__(params)
        if op not in (hvd.Average, hvd.Sum):
            raise ValueError("horovod_huffcomp's DistributedOptimizer supports op=hvd.Average "
                             "or hvd.Sum")
        self._compression = compression
        self._compression.average = op == hvd.Average
        self._passes = backward_passes_per_step
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        if named_parameters is not None:
            named = list(named_parameters)
            names = {p: n for n, p in named}
            missing = [p for p in params if p not in names]
            if missing:
                raise ValueError(f"{len(missing)} optimized parameters are not in "
                                 "named_parameters")
        else:  # structural names: the same on every worker
            names = {p: f"param.{i}" for i, p in enumerate(params)}
        self._names = names
        if groups is not None:
            by_name = {n: p for p, n in names.items()}
            order = [[by_name[n] if isinstance(n, str) else n for n in g] for g in groups]
            grouped = {p for g in order for p in g}
            order += [[p] for p in params if p not in grouped]
        else:
            k = max(1, min(num_groups, len(params)))
            bounds = np.linspace(0, len(params), k + 1).round().astype(int)
            order = [params[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self._groups = []
        for g in order:
            label = "|".join(names[p] for p in g)
            key = f"group.{len(g)}.{zlib.crc32(label.encode()):08x}"
            self._groups.append((key, g))
        self._group_of = {p: i for i, (_, g) in enumerate(self._groups) for p in g}
        self._counts: dict = {}
        self._ready = [0] * len(self._groups)
        self._handles: dict[int, tuple] = {}
        self._skip_sync = False
        self._hooks = [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]

    def _on_grad(self, p):
        c = self._counts[p] = self._counts.get(p, 0) + 1
        if c == self._passes:
            i = self._group_of[p]
            self._ready[i] += 1
            if self._ready[i] == len(self._groups[i][1]):
                self._launch(i)

    def _launch(self, i):
        import horovod.torch as hvd

        key, params = self._groups[i]
        comp = self._compression
        rank = hvd.rank()
        names = [self._names[p] for p in params]
        if comp.mode == "reduce_scatter":  # shared-scale rounds run on the host
            xs = [np.zeros(tuple(p.shape), np.float32) if p.grad is None else _numpy(p.grad)
                  for p in params]
            xs = [x / self._passes if self._passes > 1 else x for x in xs]
            round_ = summable.ShardedRound(comp, key, names, xs, rank, hvd.size())
            self._handles[i] = (round_, _allreduce_max(round_))
            return
        xs = [_codec_array(torch.zeros_like(p) if p.grad is None else p.grad) for p in params]
        xs = [x / self._passes if self._passes > 1 else x for x in xs]
        with exchange.Timer() as t:
            if comp.memory is not None:
                xs = [comp.memory.apply(n, x) for n, x in zip(names, xs)]
            framed, mine = comp.encode_many_framed(key, xs, rank)
        handle = hvd.allgather_async(torch.frombuffer(bytearray(framed), dtype=torch.uint8),
                                     name=f"huffcomp.{key}")
        self._handles[i] = (handle, xs, len(framed), t.s, mine)

    def synchronize(self):
        """Exchange every group not yet launched by the backward hooks (gradients a worker
        did not produce count as zeros), wait for all, decode and write the averages into
        ``.grad``."""
        for i in range(len(self._groups)):
            if i not in self._handles:
                self._launch(i)
        try:
            if self._compression.mode == "reduce_scatter":
                results = _finish_rounds([self._handles[i] for i in range(len(self._groups))])
            else:
                results = [self._gathered(i) for i in range(len(self._groups))]
            for (_, params), means in zip(self._groups, results):
                for p, mean in zip(params, means):
                    out = _to_torch(mean, p.dtype, p.device)
                    if p.grad is None:
                        p.grad = out.reshape(p.shape)
                    else:
                        p.grad.copy_(out.reshape(p.shape))
        finally:
            self._handles.clear()
            self._counts.clear()
            self._ready = [0] * len(self._groups)

    def _gathered(self, i) -> list[np.ndarray]:
        """Allgather exchange: wait for group i's payloads, decode every rank's, average."""
        import horovod.torch as hvd

        _, params = self._groups[i]
        comp = self._compression
        size, rank = hvd.size(), hvd.rank()
        handle, xs, nbytes, enc_s, mine = self._handles[i]
        gathered = hvd.synchronize(handle).numpy()
        with exchange.Timer() as t:
            total = sum(x.size for x in xs)
            means, own = exchange.decode_mean(exchange.split_frames(gathered, size),
                                              [x.shape for x in xs], rank=rank,
                                              average=comp.average,
                                              cuda=not isinstance(xs[0], np.ndarray),
                                              mine=mine)
            for j, p in enumerate(params):
                comp.record(self._names[p], xs[j], own[j])
        comp.stats.add(nbytes, gathered.size - nbytes, total, enc_s, t.s, tensors=len(params))
        return means

    @contextlib.contextmanager
    def skip_synchronize(self):
        """``with opt.skip_synchronize(): opt.step()`` after an explicit ``synchronize()``."""
        self._skip_sync = True
        try:
            yield
        finally:
            self._skip_sync = False

    def step(self, closure=None):
        if not self._skip_sync:
            self.synchronize()
        return super(self.__class__, self).step(closure)

    def zero_grad(self, *args, **kwargs):
        if self._handles:
            raise AssertionError("optimizer.zero_grad() was called after loss.backward() but "
                                 "before optimizer.step() or optimizer.synchronize()")
        return super(self.__class__, self).zero_grad(*args, **kwargs)


def DistributedOptimizer(optimizer, named_parameters=None,
                         compression: HuffmanCompressor | None = None,
                         backward_passes_per_step: int = 1, op=None, num_groups: int = 1,
                         groups=None):
    """Horovod's ``DistributedOptimizer`` signature, exchanging whole groups of gradients.

    Parameters are split into ``num_groups`` groups (registration order) or the given
    ``groups`` (lists of parameters or names; the rest one per group). When a group's
    gradients are all accumulated (a backward hook), they are encoded into one bundle payload
    (one header and checksum, codebooks reused between tensors) and sent with one allgather,
    named after the group's parameter names; ``step()`` / ``synchronize()`` wait, decode and
    average. ``compression`` is a :class:`HuffmanCompressor` (its options, error feedback,
    seed and ``stats``); default ``HuffmanCompressor()``.
    """
    import horovod.torch as hvd

    compression = compression or HuffmanCompressor()
    if not isinstance(compression, HuffmanCompressor):
        raise TypeError("compression must be a horovod_huffcomp HuffmanCompressor "
                        "(Compression.huffman(...)); use horovod.torch.DistributedOptimizer "
                        "for Horovod's own compressors")
    cls = type(optimizer.__class__.__name__, (optimizer.__class__,),
               dict(_GroupedDistributedOptimizer.__dict__))
    return cls(optimizer.param_groups, named_parameters, compression,
               backward_passes_per_step, hvd.Average if op is None else op, num_groups,
               groups)
