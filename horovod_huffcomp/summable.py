"""Shared-scale ("summable") exchange: a reduce-scatter of encoded shards, then an allgather.

The allgather exchange (``exchange.py``) makes every worker receive N - 1 payloads. When the
workers first agree on one quantization scale per tensor, their states lie on one grid and
their integer sum is exact, so the sum can be formed piecewise and coded again:

1. each worker computes its tensors' own scales (``quantizers.scale_of``); a max-allreduce of
   those few floats gives the shared scales S;
2. each quantizes with S and splits every tensor into N contiguous shards; shard j of every
   tensor (one bundle payload) goes to rank j by one alltoall;
3. rank j decodes the N payloads of its shard, sums their states as integers (exact: the sum
   lies in [-N s, N s]) and codes the sum as one payload (levels N s, scale S, so a plain
   ``hc.decode`` of it returns the mean);
4. an allgather of those reduced shards; every worker decodes the N of them into the whole
   average (or sum): float64(sum of states) * S / s / N, the same bits on every rank.

A worker sends and receives about (N - 1)/N of one payload in step 2 and (N - 1)/N of one
payload of the sum in step 3, about 2 (N - 1)/N payloads whatever N is; the allgather exchange
moves N - 1. Payload states are int8, so N s <= 127 (e.g. s = 16 up to 7 workers, s = 4 up
to 31, TernGrad up to 127). qsgd and terngrad only: top-k picks different entries per worker.

A rank that finds a bad payload in step 3 sends an *error frame* (``ERROR_MAGIC`` and the
message) instead of its reduced shard, so every rank raises the same PayloadError after
step 4 instead of waiting for it.

Framework adapters drive a :class:`ShardedRound` through the three collectives, with names
derived from the tensors (never from call order): ``local_scales`` -> max-allreduce ->
``encode(shared)`` -> alltoall -> ``reduce(received)`` -> allgather -> ``finish(gathered)``.
:func:`run` does it with blocking collectives.
"""
from __future__ import annotations

import math

import numpy as np

from . import exchange, payload
from .cpu_backend import as_flat, code_section, decode_states
from .errors import PayloadError
from .payload import MAX_LEVELS
from . import quantizers
from .quantizers import Quantized, quantize, scale_of

MODES = ("allgather", "reduce_scatter")
ERROR_MAGIC = b"HCERR"  # an error frame: version byte 'E' is no payload version


def check_options(options: dict) -> tuple[int, str]:
    """The levels s and norm of a reduce-scatter exchange's options (ValueError if
    unsupported)."""
    q = options["quantizer"]
    if q not in ("qsgd", "terngrad"):
        raise ValueError("the reduce_scatter exchange needs quantizer 'qsgd' or 'terngrad' "
                         f"(one grid for all workers), not {q!r}")
    if options.get("bucket") is not None:
        raise ValueError("the reduce_scatter exchange shares one scale per tensor: it does "
                         "not take QSGD's buckets (use the allgather exchange)")
    return quantizers.check_options(q, options["levels"], options["norm"])


def check_size(levels: int, size: int) -> None:
    if levels * size > MAX_LEVELS:
        raise ValueError(
            f"the reduce_scatter exchange sums {size} workers' states in [-{levels}, {levels}]:"
            f" levels * workers must be <= {MAX_LEVELS} (payload states are int8); use "
            f"levels <= {MAX_LEVELS // size} or the allgather exchange")


def shard_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """Rank j owns elements [j n // N, (j + 1) n // N) of a flat tensor of n elements."""
    return [(j * n // size, (j + 1) * n // size) for j in range(size)]


def _shard(q: Quantized, lo: int, hi: int) -> Quantized:
    states = np.zeros((hi - lo + 7) & ~7, np.int8)  # the coders want zero padding to 8
    states[: hi - lo] = q.states[lo:hi]
    return Quantized(states, hi - lo, q.levels, q.scale, q.norm, None)


class ShardedRound:
    """One shared-scale exchange of a group of tensors (a single tensor for the
    per-parameter compressor) on one rank; see the module docstring for the protocol.

    ``state`` is the adapter's :class:`exchange.CompressorState`: its options, seed, error
    feedback (applied here to ``xs``, updated in :meth:`finish`), statistics and fault
    injection.
    """

    def __init__(self, state, key: str, names: list[str], xs: list[np.ndarray], rank: int,
                 size: int):
        self.levels, self.norm = check_options(state.options)
        check_size(self.levels, size)
        self.state, self.key, self.names = state, key, names
        self.rank, self.size = rank, size
        self.quantizer = state.options["quantizer"]
        with exchange.Timer() as t:
            if state.memory is not None:
                xs = [state.memory.apply(n, x) for n, x in zip(names, xs)]
            self.xs = xs
            self.flat = [as_flat(x)[0] for x in xs]
            self.local_scales = np.array(
                [scale_of(f, self.quantizer, self.norm) for f in self.flat], np.float32)
        self.encode_s, self.decode_s = t.s, 0.0
        self.sent = self.received = 0

    # ------------------------------------------------------------------ step 2
    def encode(self, shared) -> tuple[np.ndarray, list[int]]:
        """Quantize with the shared scales; the alltoall buffer (one frame per destination
        rank, rank order) and its splits, both empty when no tensor needs bits (then
        :attr:`exchanges` is False on every rank and steps 2-4 are skipped)."""
        shared = np.asarray(shared, np.float32).reshape(-1)
        if shared.shape != self.local_scales.shape or (shared < self.local_scales).any():
            raise RuntimeError(f"{self.key}: the max-allreduce of the scales returned "
                               f"{shared}, not a maximum of {self.local_scales}")
        self.shared = shared
        # tensors whose shared scale is 0 (all zero everywhere) or not finite (some worker
        # has NaN/Inf: every rank returns NaN) need no bits; every rank sees the same
        self.active = [i for i, s in enumerate(shared) if 0 < s < math.inf]
        if not self.exchanges:
            return np.zeros(0, np.uint8), []
        with exchange.Timer() as t:
            seed = self.state.next_seed(self.key, self.rank)
            self.seed = seed
            qs = {}
            for i in self.active:
                qs[i] = quantize(self.flat[i], self.quantizer, self.levels, self.norm, seed,
                                 stream=i, scale=float(shared[i]))
            frames = []
            for lo_hi in zip(*[shard_bounds(self.flat[i].size, self.size)
                               for i in self.active]):
                sections = []
                for (lo, hi), i in zip(lo_hi, self.active):
                    sections.append(self._section(_shard(qs[i], lo, hi), i, sections))
                blob = payload.pack(sections, bundle=True)
                frames.append(self.state.framed(blob, self.rank))
            self.own = {i: qs[i].states[: qs[i].n] for i in self.active}
            buf = np.frombuffer(b"".join(frames), np.uint8)
        self.encode_s += t.s
        self.sent += sum(len(f) for j, f in enumerate(frames) if j != self.rank)
        return buf, [len(f) for f in frames]

    @property
    def exchanges(self) -> bool:
        """Whether steps 2-4 run (False when no tensor needs bits: the same on all ranks)."""
        return bool(self.active)

    def _section(self, q: Quantized, i: int, sections: list) -> payload.Section:
        return code_section(q, self.quantizer, self.flat[i].dtype, (q.n,),
                            self.state.options["coder"], None, self.seed,
                            prev=sections[-1] if sections else None)

    # ------------------------------------------------------------------ step 3
    def reduce(self, received, splits) -> np.ndarray:
        """This rank's shard: decode the N payloads, sum exactly, code the sum; the frame
        to allgather (an error frame if a payload was bad)."""
        received = np.asarray(received, np.uint8)
        try:
            with exchange.Timer() as t:
                splits = [int(v) for v in np.asarray(splits).reshape(-1)]
                if len(splits) != self.size or sum(splits) != received.size or min(splits) < 0:
                    raise PayloadError(f"alltoall delivered {received.size} bytes in splits "
                                       f"{splits}")
                frames = exchange.split_frames(received, self.size)
                for r, f in enumerate(frames):
                    if len(f) + exchange.FRAME_HEADER != splits[r]:
                        raise PayloadError(f"rank {r}'s frame does not fill its split")
                bounds = [shard_bounds(self.flat[i].size, self.size)[self.rank]
                          for i in self.active]
                total = None
                for r, f in enumerate(frames):
                    states = self._states(r, f, self.levels, bounds)
                    total = ([s.astype(np.int16) for s in states] if total is None
                             else [a + s for a, s in zip(total, states)])
                sections = []
                for (lo, hi), i, tot in zip(bounds, self.active, total):
                    states = np.zeros((hi - lo + 7) & ~7, np.int8)
                    if tot.size and np.abs(tot).max() > self.levels * self.size:
                        raise PayloadError(f"{self.names[i]}: a summed state exceeds "
                                           f"{self.levels * self.size}")
                    states[: hi - lo] = tot  # |tot| <= N s <= 127 (check_size)
                    q = Quantized(states, hi - lo, self.levels * self.size,
                                  float(self.shared[i]), self.norm, None)
                    sections.append(self._section(q, i, sections))
                out = self.state.framed(payload.pack(sections, bundle=True), self.rank)
            self.decode_s += t.s
            self.received += received.size - splits[self.rank]
        except PayloadError as e:
            out = exchange.frame(ERROR_MAGIC + f"rank {self.rank}: {e}".encode())
        if self.size > 1:  # the allgather takes it to the others
            self.sent += len(out)
        return np.frombuffer(out, np.uint8)

    def _states(self, r: int, f, levels: int, bounds) -> list[np.ndarray]:
        """The states of every active tensor's shard in rank r's payload, validated against
        what this round expects (levels, shared scale, shard length)."""
        n = sum(hi - lo for lo, hi in bounds)
        try:
            _, sections = payload.unpack(f, max(n, 1))
        except PayloadError as e:
            raise PayloadError(f"payload from rank {r}: {e}") from None
        if len(sections) != len(bounds):
            raise PayloadError(f"payload from rank {r} holds {len(sections)} tensors, "
                               f"expected {len(bounds)}")
        out = []
        for sec, (lo, hi), i in zip(sections, bounds, self.active):
            if (sec.quantizer, sec.norm, sec.raw, sec.levels) != (
                    self.quantizer, self.norm, False, levels):
                raise PayloadError(f"payload from rank {r} is not {self.quantizer} with "
                                   f"{levels} levels")
            if sec.shape != (hi - lo,) or np.float32(sec.scale) != self.shared[i]:
                raise PayloadError(f"payload from rank {r}: {self.names[i]}'s shard has shape "
                                   f"{sec.shape} and scale {sec.scale}, expected "
                                   f"{(hi - lo,)} and the shared scale {self.shared[i]}")
            try:
                out.append(decode_states(sec)[0][: hi - lo])
            except PayloadError as e:
                raise PayloadError(f"payload from rank {r}: {e}") from None
        return out

    # ------------------------------------------------------------------ step 4
    def finish(self, gathered) -> list[np.ndarray]:
        """Every rank's reduced shard -> the averaged (or summed) tensors, float64, shaped
        like ``xs``; updates error feedback, ``last_dequantized`` and the statistics."""
        out = []
        with exchange.Timer() as t:
            if self.exchanges:
                frames = exchange.split_frames(np.asarray(gathered, np.uint8), self.size)
                for f in frames:
                    if bytes(f[: len(ERROR_MAGIC)]) == ERROR_MAGIC:
                        raise PayloadError(bytes(f[len(ERROR_MAGIC):]).decode(errors="replace"))
                sums = {i: np.zeros(self.flat[i].size, np.int16) for i in self.active}
                for r, f in enumerate(frames):
                    bounds = [shard_bounds(self.flat[i].size, self.size)[r] for i in self.active]
                    for (lo, hi), i, st in zip(bounds, self.active,
                                               self._states(r, f, self.levels * self.size,
                                                            bounds)):
                        sums[i][lo:hi] = st
                own_frame = len(frames[self.rank]) + exchange.FRAME_HEADER
                self.received += len(gathered) - own_frame
            divisor = self.size if self.state.average else 1
            for i, x in enumerate(self.xs):
                s = float(self.shared[i])
                if i in self.active:
                    mean = sums[i].astype(np.float64) * s / self.levels / divisor
                    own = self.own[i].astype(np.float64) * s / self.levels
                elif s == 0.0:
                    mean = own = np.zeros(self.flat[i].size)
                else:
                    mean = own = np.full(self.flat[i].size, np.nan)
                shape = np.shape(x)
                out.append(mean.reshape(shape))
                self.state.record(self.names[i], x, own.astype(self.flat[i].dtype).reshape(shape))
        self.decode_s += t.s
        self.state.stats.add(self.sent, self.received, sum(f.size for f in self.flat),
                             self.encode_s, self.decode_s, tensors=len(self.xs))
        return out


def run(round_: ShardedRound, allreduce_max, alltoall, allgather) -> list[np.ndarray]:
    """A whole round with blocking collectives: ``allreduce_max(float32 array)``,
    ``alltoall(uint8 array, splits) -> (uint8 array, received splits)``,
    ``allgather(uint8 array) -> uint8 array``."""
    buf, splits = round_.encode(allreduce_max(round_.local_scales))
    if round_.exchanges:
        frame = round_.reduce(*alltoall(buf, splits))
        return round_.finish(allgather(frame))
    return round_.finish(None)


def simulate(states, xs_per_rank, names, key: str = "sim", mutate=None) -> list:
    """One round with every rank played by this process (collectives as array shuffles): for
    tests and ``bench exchange``. ``states[r]`` is rank r's CompressorState; ``mutate(r, j,
    frame)`` may replace what rank r sends rank j by alltoall. Returns each rank's
    :meth:`ShardedRound.finish` result, or the PayloadError it raised."""
    n = len(states)
    rounds = [ShardedRound(states[r], key, names, xs_per_rank[r], r, n) for r in range(n)]
    shared = np.max([r.local_scales for r in rounds], axis=0)
    sent = [r.encode(shared) for r in rounds]
    gathered = None
    if rounds[0].exchanges:
        reduced = []
        for j in range(n):
            parts = []
            for r, (buf, splits) in enumerate(sent):
                off = sum(splits[:j])
                part = buf[off: off + splits[j]]
                parts.append(part if mutate is None else mutate(r, j, part))
            reduced.append(rounds[j].reduce(np.concatenate(parts), [p.size for p in parts]))
        gathered = np.concatenate(reduced)
    outs = []
    for r in rounds:
        try:
            outs.append(r.finish(gathered))
        except PayloadError as e:
            outs.append(e)
    return outs


class _WarmUpState:
    """The part of an ``exchange.CompressorState`` that a round reads, for :func:`warm_up`:
    the adapter's own state (seeds, statistics, error feedback) is left untouched."""

    def __init__(self, options: dict):
        self.options, self.memory, self.average = options, None, True
        self.stats = exchange.Stats()

    def next_seed(self, key: str, rank: int) -> int:
        return rank

    def framed(self, blob: bytes, rank: int) -> bytes:
        return exchange.frame(blob)

    def record(self, name: str, sent, own) -> None:
        pass


def warm_up(options: dict) -> None:
    """One simulated round of two ranks (one if levels x 2 is over the int8 states' range)
    on a dense, a sparse and a small tensor, as ``exchange.warm_up`` does for the allgather
    exchange: numba compiles what this exchange adds (codes of single shards, of the sums at
    levels N s, their decode) before the first training step instead of in it."""
    levels, _ = check_options(options)
    size = 2 if 2 * levels <= MAX_LEVELS else 1
    rng = np.random.default_rng(0)
    dense = rng.standard_normal(1 << 16).astype(np.float32)
    xs = [dense, dense * (rng.random(dense.size) < 0.002), dense[:100]]
    per_rank = [[x * (1.0 + 0.5 * r) for x in xs] for r in range(size)]
    for out in simulate([_WarmUpState(options)] * size, per_rank, ["dense", "sparse", "small"],
                        key="warm-up"):
        if isinstance(out, Exception):
            raise out
