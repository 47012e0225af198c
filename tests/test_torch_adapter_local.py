"""horovod_huffcomp.torch's compressor in one process, Horovod's collectives replaced by a
two-worker stand-in (rank 1's payloads are coded first by a host compressor of their own,
rank 0's allgather returns both frames): the whole path of a gradient through compress()
and decompress() — encode, error feedback, framing, split, decode-and-sum, the result back
as a tensor — on the host and, where CuPy sees a GPU, on the device, where it must give
the host's result bit for bit. The real 2-worker runs are in test_horovod_torch.py; this
one also runs where Horovod is not installed (the lent GPU image has torch and CuPy only)."""
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import horovod_huffcomp as hc  # noqa: E402
from horovod_huffcomp import exchange, gpu_backend  # noqa: E402


class TwoWorkers:
    """``horovod.torch`` as the compressor calls it: rank(), size(), allgather_async(),
    synchronize(). While ``rank`` is 1 an allgather only keeps its frame (rank 1's payload
    under that name); as rank 0 it returns rank 0's frame followed by rank 1's."""

    def __init__(self):
        self.rank_now = 1
        self.peer = {}
        self.gathered = []

    def module(self):
        m = types.ModuleType("horovod.torch")
        m.rank = lambda: self.rank_now
        m.size = lambda: 2
        m.allgather_async = self.allgather_async
        m.synchronize = lambda handle: handle
        return m

    def allgather_async(self, t, name):
        assert t.dtype == torch.uint8 and t.device.type == "cpu" and t.numel() > 4
        if self.rank_now == 1:
            self.peer[name] = t.clone()
            return t
        both = torch.cat([t, self.peer.pop(name)])
        self.gathered.append(both.numpy().copy())
        return both


@pytest.fixture
def workers(monkeypatch):
    w = TwoWorkers()
    pkg = types.ModuleType("horovod")
    pkg.torch = w.module()
    monkeypatch.setitem(sys.modules, "horovod", pkg)
    monkeypatch.setitem(sys.modules, "horovod.torch", pkg.torch)
    return w


def _gradients(steps, seed):
    """Gradient-like tensors: heavy-tailed values, a zero stretch, scaled step by step."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(20_000) * rng.exponential(1.0, 20_000)).astype(np.float32)
    base[3000:9000] = 0
    return [torch.from_numpy(base * (1.0 + 0.5 * k)).reshape(100, 200) for k in range(steps)]


def _run(workers, device, options, steps=3):
    """decompress(compress(g)) for ``steps`` steps of rank 0's gradients on ``device``, rank
    1's on the host: (results, what rank 0's allgathers returned)."""
    from horovod_huffcomp.torch import Compression

    rank0, rank1 = Compression.huffman(**options), Compression.huffman(**options)
    out = []
    workers.gathered = []
    for g0, g1 in zip(_gradients(steps, 0), _gradients(steps, 1)):
        workers.rank_now = 1
        rank1.compress(g1, name="layer.weight")
        workers.rank_now = 0
        x = g0.to(device)
        placeholder, ctx = rank0.compress(x, name="layer.weight")
        assert placeholder.numel() == 1 and placeholder.device == x.device
        y = rank0.decompress(placeholder, ctx)
        assert y.device == x.device and y.dtype == x.dtype and y.shape == x.shape
        out.append(y.cpu())
    return out, workers.gathered


OPTIONS = [dict(quantizer="qsgd", levels=16, norm="max", coder="auto"),
           dict(quantizer="qsgd", levels=4, norm="l2", coder="huffman", error_feedback=True),
           dict(quantizer="terngrad", coder="zrh", error_feedback=True, gamma=0.9),
           dict(quantizer="fp4", error_feedback=True, gamma=0.7)]  # CO3: host-coded anywhere
IDS = ["auto", "huffman-ef", "terngrad-zrh-ef", "fp4-ef"]


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_host_path_averages_the_gathered_payloads(workers, options):
    results, gathered = _run(workers, "cpu", options)
    for y, buf in zip(results, gathered):  # the mean of what the two payloads decode to
        frames = exchange.split_frames(buf, 2)
        want = (hc.decode(bytes(frames[0])).astype(np.float64)
                + hc.decode(bytes(frames[1])).astype(np.float64)) / 2
        assert np.array_equal(y.numpy(), want.astype(np.float32))


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_cuda_tensors_take_the_device_path_with_the_host_result(workers, options, monkeypatch):
    if not torch.cuda.is_available() or not gpu_backend.available():
        pytest.skip("no CUDA device for torch and CuPy: the device path is checked on a GPU")
    host, host_bytes = _run(workers, "cpu", options)
    calls = []
    real = gpu_backend.decode_sum

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gpu_backend, "decode_sum", counted)
    device, device_bytes = _run(workers, "cuda", options)
    assert calls, "the gathered payloads were not decoded on the device"
    for a, b in zip(host_bytes, device_bytes):  # rank 0's payload coded on the device
        assert np.array_equal(a, b)
    for a, b in zip(host, device):
        assert torch.equal(a, b)
