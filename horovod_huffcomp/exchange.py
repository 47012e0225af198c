"""Framework-agnostic pieces of an encoded-gradient exchange (allgather + decode-and-sum).

A Huffman bitstream cannot go through a sum-allreduce, so every worker allgathers its
payload; the gathered buffer is the workers' *frames* back to back, rank order. A frame is a
4-byte little-endian payload length followed by the payload. Every receiver decodes all
frames (the payloads are untrusted: a bad one raises PayloadError naming the rank) and sums
them in float64 in rank order, so all workers compute bit-identical results.
"""
from __future__ import annotations

import hashlib
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import api
from .errors import PayloadError

FRAME_HEADER = 4


def frame(blob: bytes) -> bytes:
    return struct.pack("<I", len(blob)) + blob


def split_frames(buf, count: int) -> list[memoryview]:
    """The ``count`` payloads of a gathered buffer; PayloadError if it does not hold exactly
    ``count`` well-formed frames."""
    view = memoryview(buf).cast("B")
    out, pos = [], 0
    for rank in range(count):
        if pos + FRAME_HEADER > len(view):
            raise PayloadError(f"gathered buffer ends before rank {rank}'s frame header")
        (n,) = struct.unpack_from("<I", view, pos)
        pos += FRAME_HEADER
        if pos + n > len(view):
            raise PayloadError(f"rank {rank}'s frame claims {n} bytes, "
                               f"{len(view) - pos} are left")
        out.append(view[pos : pos + n])
        pos += n
    if pos != len(view):
        raise PayloadError(f"{len(view) - pos} bytes after the last of {count} frames")
    return out


def same_bytes(a, b) -> bool:
    """Whether two bytes-like objects hold the same bytes, at memcmp speed (a memoryview's
    ``==`` compares item by item: ~15x slower, 7 ms for a 10 MB payload)."""
    return len(a) == len(b) and bytes(a) == bytes(b)


def decode_from(rank: int, frame, max_elements: int, many: bool = False):
    """Decode one rank's payload (a list of arrays when ``many``); a PayloadError names the
    rank."""
    try:
        if many:
            return api.decode_many(frame, max_elements=max_elements)
        return api.decode(frame, max_elements=max_elements)
    except PayloadError as e:
        raise PayloadError(f"payload from rank {rank}: {e}") from None


def reduce_mean(arrays, average: bool = True) -> np.ndarray:
    """Sum in float64, rank order, then divide by the count when averaging."""
    total = np.zeros(arrays[0].shape, np.float64)
    for a in arrays:
        total += a
    if average:
        total /= len(arrays)
    return total


def decode_mean(frames, shapes, *, rank: int, average: bool = True, cuda: bool = False,
                mine=None):
    """Decode-and-sum of every rank's payload, each holding tensors of ``shapes`` (a bundle:
    one per shape): ``(means, own)``, float64 means in rank order and this rank's own
    dequantized tensors, lists in ``shapes``'s order.

    ``mine``: ``(payload, arrays)`` from ``api.encode_dequantized`` on this rank. When the
    gathered frame of this rank holds exactly that payload, its arrays stand for decoding it
    (the same values: the coding is lossless), which saves 1/N of the decoding; a frame that
    differs (corrupted on the way) is decoded like any other.

    ``cuda``: the gradients live on a GPU. The payloads are then decoded and summed on the
    device (``gpu_backend.decode_sum``, results as CuPy arrays) where the GPU decoder covers
    every section, else on the host and the results copied to the device. Same values
    either way: both backends decode exactly and sum in float64 in rank order.
    """
    shapes = [tuple(s) for s in shapes]
    limit = max(sum(int(np.prod(s)) for s in shapes), 1)
    known = mine is not None and mine[1] is not None and same_bytes(frames[rank], mine[0])
    if cuda:
        from . import gpu_backend

        labels = [f"payload from rank {r}" for r in range(len(frames))]
        try:  # this rank's payload decoded alone from the same parse, unless known
            means = gpu_backend.decode_sum(frames, average=average, max_elements=limit,
                                           labels=labels, bundle=True,
                                           own=None if known else rank)
        except NotImplementedError:  # a coder the GPU decoder does not cover yet
            pass
        else:
            if known:
                import cupy

                own = [cupy.asarray(a) for a in mine[1]]
            else:
                means, own = means
            _check_shapes(0, [m.shape for m in means], shapes)
            return means, own
    per_rank = []
    for r, f in enumerate(frames):
        if r == rank and known:
            arrays = mine[1]
        else:
            arrays = decode_from(r, f, limit, many=True)
        _check_shapes(r, [a.shape for a in arrays], shapes)
        per_rank.append(arrays)
    means = [reduce_mean([a[j] for a in per_rank], average) for j in range(len(shapes))]
    own = per_rank[rank]
    if cuda:
        import cupy

        means, own = [cupy.asarray(m) for m in means], [cupy.asarray(a) for a in own]
    return means, own


def _check_shapes(rank: int, got, want) -> None:
    if [tuple(s) for s in got] != want:
        what = f"a tensor of shape {want[0]}" if len(want) == 1 else \
            f"the {len(want)} tensors expected ({want[:3]}...)"
        raise PayloadError(f"payload from rank {rank} does not hold {what}")


def step_seed(seed: int, rank: int, name: str, step: int) -> int:
    """Stochastic-rounding seed of one tensor at one step on one rank: independent noise
    across ranks and steps, reproducible run after run."""
    h = hashlib.blake2b(f"{seed}/{rank}/{name}/{step}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def compile_kernels() -> None:
    """Fill numba's on-disk cache with the kernels a training job calls, serial and parallel
    variants (``scripts/install.sh`` runs it, so that a first job does not compile)."""
    from . import summable
    from .coders.chunks import set_parallel

    for parallel in (False, True):
        set_parallel(parallel)
        warm_up("qsgd", "auto", 16, "max", 0.01)
        warm_up("topk", "auto", 0, "max", 0.01)
        warm_up("fp4", "auto", None, None, 0.01)  # CO3's float formats: their own kernels
        warm_up("qsgd", "auto", 16, "l2", 0.01, bucket=512)  # QSGD's buckets: theirs
        summable.warm_up(dict(quantizer="qsgd", coder="auto", levels=16, norm="max",
                              ratio=0.01))
    set_parallel(True)


def warm_up(quantizer="qsgd", coder="auto", levels=None, norm=None, ratio=0.01,
            bucket=None) -> None:
    """Validate the options (a bad one raises here, not in the first step) and run the codec
    once on a dense, a sparse and a small tensor: numba compiles the kernels on their first
    call (seconds, then cached on disk), which would otherwise land in the first training
    step and in the codec time the statistics report."""
    rng = np.random.default_rng(0)
    dense = rng.standard_normal(1 << 16).astype(np.float32)
    xs = [dense, dense * (rng.random(dense.size) < 0.002), dense[:100]]
    # "auto" picks per tensor: run both of its coders on both kinds of tensor
    for c in (coder,) if coder != "auto" else ("auto", "zrh", "huffman"):
        blob, arrays = api.encode_dequantized(xs, quantizer, c, levels, norm, ratio=ratio,
                                              nonfinite="propagate", bucket=bucket)
        gathered = np.frombuffer(frame(blob) * 2, np.uint8).copy()  # as an allgather gives
        decode_mean(split_frames(gathered, 2), [x.shape for x in xs], rank=1,
                    mine=(blob, arrays))


class CompressorState:
    """What every framework's compressor keeps, whatever the framework: the encode options,
    the exchange ``mode`` ("allgather": every worker's payload to every worker;
    "reduce_scatter": shared scale, see ``summable.py``), a stochastic-rounding seed per
    (name, step), error feedback, statistics and this worker's own dequantized tensors
    (``last_dequantized``)."""

    def __init__(self, quantizer: str = "qsgd", coder: str = "auto", levels: int | None = None,
                 norm: str | None = None, ratio: float = 0.01, seed: int = 0,
                 error_feedback: bool = False, gamma: float = 1.0, average: bool = True,
                 mode: str = "allgather", bucket: int | None = None):
        # before any kernel runs: a parallel kernel would start numba's OpenMP team, which
        # also resets the framework's OpenMP thread count in this process
        share_cores_between_local_ranks()
        warm_up(quantizer, coder, levels, norm, ratio, bucket)
        self.options = dict(quantizer=quantizer, coder=coder, levels=levels, norm=norm,
                            ratio=ratio, bucket=bucket)
        from . import summable

        if mode not in summable.MODES:
            raise ValueError(f"mode must be one of {summable.MODES}, got {mode!r}")
        if mode == "reduce_scatter":
            summable.check_options(self.options)
            summable.warm_up(self.options)
        self.mode = mode
        self.seed = seed
        self.average = average
        self.memory = ErrorFeedback(gamma) if error_feedback else None
        self.stats = Stats()
        self.last_dequantized: dict[str, np.ndarray] = {}  # own contribution, per name
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()
        self._fault_rank = None  # fault injection for tests: this rank corrupts its payloads

    def next_seed(self, key: str, rank: int) -> int:
        """The seed of ``key``'s next step on ``rank`` (see :func:`step_seed`)."""
        with self._lock:
            step = self._steps[key] = self._steps.get(key, -1) + 1
        return step_seed(self.seed, rank, key, step)

    def framed(self, blob: bytes, rank: int) -> bytes:
        """The frame of a payload this worker sends."""
        if self._fault_rank == rank:
            blob = blob[:-1] + bytes([blob[-1] ^ 0xFF])
        return frame(blob)

    def encode_framed(self, name: str, x: np.ndarray, rank: int):
        """Error feedback applied, encoded, framed: (what was encoded, the frame, ``mine``
        for :func:`decode_mean`)."""
        if self.memory is not None:
            x = self.memory.apply(name, x)
        blob, arrays = api.encode_dequantized([x], seed=self.next_seed(name, rank),
                                              bundle=False, nonfinite="propagate",
                                              **self.options)
        return x, self.framed(blob, rank), (blob, arrays)

    def encode_many_framed(self, key: str, xs: list, rank: int):
        """A bundle of ``xs`` (error feedback already applied), framed: (the frame, ``mine``
        for :func:`decode_mean`)."""
        blob, arrays = api.encode_dequantized(xs, seed=self.next_seed(key, rank),
                                              nonfinite="propagate", **self.options)
        return self.framed(blob, rank), (blob, arrays)

    def record(self, name: str, sent: np.ndarray, own: np.ndarray) -> None:
        """After decoding: keep this worker's dequantized tensor, update the residual."""
        self.last_dequantized[name] = own
        if self.memory is not None:
            self.memory.update(name, sent, own)


@dataclass
class Stats:
    """What crossed the wire, accumulated until :meth:`take`."""

    bytes_sent: int = 0  # this worker's frames
    bytes_received: int = 0  # the other workers' frames
    raw_bytes: int = 0  # what the same gradients weigh as float32
    tensors: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    history: list = field(default_factory=list)

    def add(self, sent: int, received: int, numel: int, encode_s: float, decode_s: float,
            tensors: int = 1):
        self.bytes_sent += sent
        self.bytes_received += received
        self.raw_bytes += 4 * numel
        self.tensors += tensors
        self.encode_s += encode_s
        self.decode_s += decode_s

    def take(self) -> dict:
        """The counters since the last call (e.g. one training step), then reset them."""
        out = {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "raw_bytes": self.raw_bytes,
            "compression_ratio": self.raw_bytes / self.bytes_sent if self.bytes_sent else 0.0,
            "tensors": self.tensors,
            "encode_s": self.encode_s,
            "decode_s": self.decode_s,
        }
        self.history.append(out)
        self.bytes_sent = self.bytes_received = self.raw_bytes = self.tensors = 0
        self.encode_s = self.decode_s = 0.0
        return out


class ErrorFeedback:
    """Residual memory (CO3's decay γ): t = g + γ e, send Q(t), keep e = t - deq(Q(t))."""

    def __init__(self, gamma: float = 1.0):
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"error feedback gamma must be in [0, 1], got {gamma}")
        self.gamma = gamma
        self.residual: dict[str, np.ndarray] = {}

    def apply(self, name: str, g: np.ndarray) -> np.ndarray:
        e = self.residual.get(name)
        if e is None or e.shape != g.shape:
            return g
        return (g.astype(np.float64) + self.gamma * e).astype(g.dtype)

    def update(self, name: str, sent: np.ndarray, dequantized: np.ndarray) -> None:
        self.residual[name] = sent.astype(np.float64) - dequantized.astype(np.float64)


def share_cores_between_local_ranks() -> None:
    """Give the codec's kernels cores / local ranks threads each.

    Horovod starts one process per worker on a host. numba's parallel kernels would start an
    OpenMP team per core in each, and that team also sets the OpenMP thread count torch uses
    in the process: a 2-rank job on 2 cores ran 14x slower here. With one core per rank the
    serial kernels run and numba's threading layer is never started.
    """
    import os

    from .coders.chunks import set_parallel

    local = int(os.environ.get("HOROVOD_LOCAL_SIZE") or os.environ.get(
        "OMPI_COMM_WORLD_LOCAL_SIZE") or 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // max(local, 1))
    if threads == 1:
        set_parallel(False)
    else:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
