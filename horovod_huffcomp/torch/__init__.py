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

import sys

import numpy as np
import torch

from .. import api, exchange
from ..errors import PayloadError

__all__ = ["Compression", "HuffmanCompressor", "PayloadError"]


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


class HuffmanCompressor:
    """A Horovod compressor exchanging horovod_huffcomp payloads (see the module docstring).

    Options are :func:`horovod_huffcomp.encode`'s, plus ``error_feedback`` (residual memory,
    ``gamma`` its decay as in CO3) and ``average`` (False sums, for ``op=hvd.Sum``).
    ``stats`` counts bytes sent/received, their float32 equivalent and codec time;
    ``stats.take()`` returns and resets them (call it once per step).
    """

    def __init__(self, quantizer: str = "qsgd", coder: str = "auto", levels: int | None = None,
                 norm: str = "l2", ratio: float = 0.01, seed: int = 0,
                 error_feedback: bool = False, gamma: float = 1.0, average: bool = True):
        # before any kernel runs: a parallel kernel would start numba's OpenMP team, which
        # also resets torch's OpenMP thread count in this process
        exchange.share_cores_between_local_ranks()
        api.encode(np.zeros(1, np.float32), quantizer, coder, levels, norm, ratio=ratio)
        self.options = dict(quantizer=quantizer, coder=coder, levels=levels, norm=norm,
                            ratio=ratio)
        self.seed = seed
        self.average = average
        self.memory = exchange.ErrorFeedback(gamma) if error_feedback else None
        self.stats = exchange.Stats()
        self._steps: dict[str, int] = {}
        self.last_dequantized: dict[str, np.ndarray] = {}  # own contribution, per name
        self._fault_rank = None  # fault injection for tests: this rank corrupts its payloads

    def compress(self, tensor: torch.Tensor, name: str | None = None):
        import horovod.torch as hvd

        name = name or _parameter_name_from_caller()
        if name is None:
            raise RuntimeError(
                "HuffmanCompressor could not tell which parameter it is compressing: use it "
                "through hvd.DistributedOptimizer, or call compress(tensor, name=...)")
        step = self._steps[name] = self._steps.get(name, -1) + 1
        rank = hvd.rank()
        with exchange.Timer() as t:
            x = tensor.detach()
            if x.dtype == torch.bfloat16:
                x = x.float()
            x = x.cpu().numpy()
            if self.memory is not None:
                x = self.memory.apply(name, x)
            blob = api.encode(x, seed=exchange.step_seed(self.seed, rank, name, step),
                              nonfinite="propagate", **self.options)
            if self._fault_rank == rank:
                blob = blob[:-1] + bytes([blob[-1] ^ 0xFF])
            framed = exchange.frame(blob)
        handle = hvd.allgather_async(torch.frombuffer(bytearray(framed), dtype=torch.uint8),
                                     name=f"huffcomp.{name}")
        ctx = (handle, name, x, tuple(tensor.shape), tensor.dtype, tensor.device, len(framed),
               t.s)
        return torch.zeros(1, dtype=tensor.dtype, device=tensor.device), ctx

    def decompress(self, tensor: torch.Tensor, ctx):
        import horovod.torch as hvd

        handle, name, sent, shape, dtype, device, nbytes, enc_s = ctx
        gathered = hvd.synchronize(handle).numpy()
        with exchange.Timer() as t:
            frames = exchange.split_frames(gathered, hvd.size())
            arrays = exchange.decode_frames(frames, shape)
            mean = exchange.reduce_mean(arrays, self.average)
        own = arrays[hvd.rank()]
        self.last_dequantized[name] = own
        if self.memory is not None:
            self.memory.update(name, sent, own)
        self.stats.add(nbytes, gathered.size - nbytes, int(np.prod(shape)), enc_s, t.s)
        return torch.from_numpy(mean).to(dtype=dtype, device=device).reshape(shape)


class Compression:
    """Horovod-style namespace: ``Compression.huffman(...)`` builds a HuffmanCompressor."""

    @staticmethod
    def huffman(**options) -> HuffmanCompressor:
        return HuffmanCompressor(**options)
