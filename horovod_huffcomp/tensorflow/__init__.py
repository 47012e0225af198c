"""TensorFlow + Horovod adapter: compressors that send encoded bytes, eager and in tf.function.

    import horovod.tensorflow as hvd
    from horovod_huffcomp.tensorflow import Compression
    compression = Compression.huffman(quantizer="qsgd", levels=16)
    tape = hvd.DistributedGradientTape(tape, compression=compression)
    # or hvd.DistributedOptimizer(opt, compression=compression), or with tf-keras
    # horovod.tensorflow.keras.DistributedOptimizer(opt, compression=compression)

Horovod sums whatever ``compress()`` returns, and a Huffman bitstream cannot be summed. So
``compress()`` adds to the graph: encode (a ``tf.numpy_function`` around the CPU backend),
an ``allgather`` of the framed payload named ``huffcomp.<variable name>`` (the name comes from
the variable the gradient belongs to, never from call order), and hands Horovod a one-element
placeholder to allreduce. ``decompress()`` decodes every worker's payload and returns their
average (float64 sum in rank order, so every worker gets bit-identical values).

``compressor.enabled`` is a ``tf.Variable``: while False the gradient goes through Horovod's
own allreduce unchanged (the warm-up schedule of :class:`keras.CompressionWarmup`); it is read
when the step runs, so switching needs no retrace.

Sparse gradients (``tf.IndexedSlices``, e.g. from ``Embedding``): Horovod's own allreduce
never passes them to a compressor (it allgathers values and indices raw). With
``sparse_as_dense=True`` they are densified and compressed; :func:`allreduce_gradients` and
:func:`DistributedGradientTape` of this module encode their values and allgather the indices.
"""
from __future__ import annotations

import functools
import re
import sys

import numpy as np
import tensorflow as tf

from .. import exchange
from ..errors import PayloadError

__all__ = ["Compression", "HuffmanCompressor", "PayloadError", "DistributedGradientTape",
           "allreduce_gradients", "variable_names"]

_NOT_IN_OP_NAME = re.compile(r"[^A-Za-z0-9_.\-]")


def _op_name(name: str) -> str:
    """A collective name usable as a TensorFlow op name: ``/`` becomes ``.`` (Horovod's
    ``ignore_name_scope`` keeps only what follows the last ``/``), other characters TF
    refuses become ``_``."""
    return _NOT_IN_OP_NAME.sub("_", name.replace("/", "."))


def variable_names(variables) -> list[str]:
    """Stable names of variables: Keras 3's ``path``, else ``name`` without ``:0``; a name that
    repeats gets ``.2``, ``.3``... in list order."""
    out, seen = [], {}
    for v in variables:
        base = getattr(v, "path", None) or getattr(v, "name", None) or "var"
        base = base[:-2] if base.endswith(":0") else base
        k = seen[base] = seen.get(base, 0) + 1
        out.append(base if k == 1 else f"{base}.{k}")
    return out


def _name_from_caller(tensor) -> str | None:
    """The variable name of the gradient being compressed, read off Horovod's frames.

    Horovod passes compress() nothing but the tensor. Its ``allreduce_grads(grads, vars)``
    (tape, optimizers, Keras) holds the gradients and their variables: the gradient that *is*
    ``tensor`` gives the variable. Failing that, the ``name`` given to ``hvd.allreduce``.
    """
    f = sys._getframe(2)
    given = None
    while f is not None:
        loc = f.f_locals
        vs, gs = loc.get("vars"), loc.get("grads")
        if isinstance(vs, (list, tuple)) and isinstance(gs, (list, tuple)) and len(vs) == len(gs):
            for k, g in enumerate(gs):
                if g is tensor:
                    return variable_names(vs)[k]
        # inside tf.function, autograph runs Horovod's allreduce as "tf__allreduce"
        if given is None and f.f_code.co_name.removeprefix("tf__") in ("allreduce",
                                                                      "grouped_allreduce"):
            n = loc.get("name")
            given = n if isinstance(n, str) and n else None
        f = f.f_back
    return given


class HuffmanCompressor(exchange.CompressorState):
    """A Horovod TensorFlow compressor exchanging horovod_huffcomp payloads (module docstring).

    Options are :func:`horovod_huffcomp.encode`'s, plus ``error_feedback`` (residual memory,
    ``gamma`` its decay as in CO3) and ``average`` (False sums, for ``op=hvd.Sum``).
    ``stats.take()`` returns and resets bytes sent/received, float32-equivalent bytes and
    codec time; ``last_dequantized[name]`` is this worker's own dequantized gradient.
    """

    def __init__(self, quantizer: str = "qsgd", coder: str = "auto", levels: int | None = None,
                 norm: str | None = None, ratio: float = 0.01, seed: int = 0,
                 error_feedback: bool = False, gamma: float = 1.0, average: bool = True,
                 enabled: bool = True, bucket: int | None = None):
        super().__init__(quantizer, coder, levels, norm, ratio, seed, error_feedback, gamma,
                         average, bucket=bucket)
        self.enabled = tf.Variable(enabled, trainable=False, name="huffcomp_enabled",
                                   dtype=tf.bool)
        self.raw_bytes_per_step: dict[str, int] = {}  # float32 bytes per name, seen at trace
        self._pending: dict[str, tuple] = {}

    # -- the graph side --------------------------------------------------------------------
    # The codec runs in tf.numpy_function(stateful=False): inside tf.function, stateful ops
    # run in program order, which would make every tensor's encode wait for the previous
    # tensor's allgather and decode. Each call is a distinct function (no merging) whose
    # output is consumed, so it still runs exactly once per step; the order that matters
    # (encode -> allgather -> decode of one tensor) is carried by the data.
    def compress(self, tensor, name: str | None = None):
        import horovod.tensorflow as hvd

        name = name or _name_from_caller(tensor)
        if name is None and not tf.executing_eagerly():
            name = tensor.name.split(":")[0]
        if name is None:
            raise RuntimeError(
                "HuffmanCompressor could not tell which variable it is compressing: use it "
                "through hvd.DistributedGradientTape / DistributedOptimizer, or pass a name to "
                "hvd.allreduce(..., name=...)")
        if tensor.shape.is_fully_defined():
            self.raw_bytes_per_step[name] = 4 * int(tensor.shape.num_elements())
        src = tf.cast(tensor, tf.float32) if tensor.dtype == tf.bfloat16 else tensor
        enabled = tf.convert_to_tensor(self.enabled)

        def encoded():
            payload = tf.numpy_function(functools.partial(self._encode, name), [src],
                                        tf.uint8, stateful=False, name="huffcomp_encode")
            payload = tf.reshape(payload, [-1])
            gathered = hvd.allgather(payload, name="huffcomp." + _op_name(name),
                                     ignore_name_scope=True)
            return tf.zeros([1], tensor.dtype), gathered

        def raw():
            return tf.reshape(tensor, [-1]), tf.zeros([0], tf.uint8)

        to_reduce, gathered = tf.cond(enabled, encoded, raw)
        return to_reduce, (enabled, gathered, tensor, name)

    def decompress(self, reduced, ctx):
        enabled, gathered, tensor, name = ctx

        def decoded():
            with tf.control_dependencies([reduced]):
                mean = tf.numpy_function(functools.partial(self._decode, name), [gathered],
                                         tf.float64, stateful=False, name="huffcomp_decode")
            return tf.reshape(tf.cast(mean, tensor.dtype), [-1])

        flat = tf.cond(enabled, decoded, lambda: tf.reshape(reduced, [-1]))
        out = tf.reshape(flat, tf.shape(tensor))
        out.set_shape(tensor.shape)
        return out

    # -- the Python side (runs when the step runs) -----------------------------------------
    def _encode(self, name: str, x: np.ndarray) -> np.ndarray:
        import horovod.tensorflow as hvd

        with exchange.Timer() as t:
            if self.memory is not None:
                # x may share TensorFlow's buffer, which can be reused once this callback
                # returns; the residual is computed at decode time: keep a copy
                x = np.array(x)
            x, framed, mine = self.encode_framed(name, x, hvd.rank())
        self._pending[name] = (x, len(framed), t.s, mine)
        return np.frombuffer(framed, np.uint8)

    def _decode(self, name: str, gathered: np.ndarray) -> np.ndarray:
        import horovod.tensorflow as hvd

        sent, nbytes, enc_s, mine = self._pending.pop(name)
        with exchange.Timer() as t:
            frames = exchange.split_frames(gathered, hvd.size())
            (mean,), (own,) = exchange.decode_mean(frames, [sent.shape], rank=hvd.rank(),
                                                   average=self.average, mine=mine)
        self.record(name, sent, own)
        with self._lock:
            self.stats.add(nbytes, gathered.size - nbytes, sent.size, enc_s, t.s)
        return mean

    # -- sparse gradients ------------------------------------------------------------------
    def allreduce_indexed_slices(self, slices: tf.IndexedSlices, name: str):
        """Average of every worker's ``tf.IndexedSlices``: each worker's values are encoded
        (rows may differ in number between workers), indices allgathered raw; the result holds
        every worker's rows, values divided by the worker count when averaging (as Horovod's
        own sparse allreduce)."""
        import horovod.tensorflow as hvd

        values = tf.cast(slices.values, tf.float32) if slices.values.dtype == tf.bfloat16 \
            else slices.values
        payload = tf.numpy_function(functools.partial(self._encode, name), [values], tf.uint8,
                                    stateful=False, name="huffcomp_encode")
        gathered = hvd.allgather(tf.reshape(payload, [-1]),
                                 name="huffcomp." + _op_name(name) + ".values",
                                 ignore_name_scope=True)
        indices = hvd.allgather(slices.indices, name="huffcomp." + _op_name(name) + ".indices",
                                ignore_name_scope=True)
        rows = tf.numpy_function(functools.partial(self._decode_rows, name),
                                 [gathered, indices], tf.float64, stateful=False,
                                 name="huffcomp_decode")
        rows = tf.reshape(tf.cast(rows, slices.values.dtype),
                          tf.concat([[-1], tf.shape(slices.values)[1:]], 0))
        return tf.IndexedSlices(rows, indices, dense_shape=slices.dense_shape)

    def _decode_rows(self, name: str, gathered: np.ndarray, indices: np.ndarray) -> np.ndarray:
        import horovod.tensorflow as hvd

        sent, nbytes, enc_s, _ = self._pending.pop(name)
        size = hvd.size()
        row = int(np.prod(sent.shape[1:]))
        limit = max(len(indices) * row, 1)  # all workers' rows together
        with exchange.Timer() as t:
            arrays = []
            for rank, f in enumerate(exchange.split_frames(gathered, size)):
                a = exchange.decode_from(rank, f, limit)
                if isinstance(a, list) or a.shape[1:] != sent.shape[1:]:
                    raise PayloadError(f"payload from rank {rank} does not hold rows of shape "
                                       f"{sent.shape[1:]}")
                arrays.append(a)
            if sum(len(a) for a in arrays) != len(indices):
                raise PayloadError(f"the workers' payloads hold {sum(len(a) for a in arrays)} "
                                   f"rows for {len(indices)} gathered indices")
            rows = np.concatenate(arrays).astype(np.float64)
            if self.average:
                rows /= size
        self.record(name, sent, arrays[hvd.rank()])
        with self._lock:
            self.stats.add(nbytes, gathered.size - nbytes, sent.size, enc_s, t.s)
        return rows


class Compression:
    """Horovod-style namespace: ``Compression.huffman(...)`` builds a HuffmanCompressor."""

    @staticmethod
    def huffman(**options) -> HuffmanCompressor:
        return HuffmanCompressor(**options)


def allreduce_gradients(grads, variables, compression: HuffmanCompressor | None = None):
    """Average gradients over all workers, each named after its variable: dense ones through
    ``hvd.allreduce(..., compression=compression)``, ``tf.IndexedSlices`` through
    :meth:`HuffmanCompressor.allreduce_indexed_slices` (Horovod's raw allgather without a
    compressor). ``None`` gradients stay None. Eager or inside ``tf.function``."""
    import horovod.tensorflow as hvd

    # the locals ``grads`` and ``vars`` are what HuffmanCompressor.compress looks for to name
    # a gradient after its variable, as in Horovod's allreduce_grads
    grads, vars = list(grads), list(variables)  # noqa: A001
    names = variable_names(vars)
    out = []
    for g, name in zip(grads, names):
        if g is None:
            out.append(None)
        elif isinstance(g, tf.IndexedSlices):
            if isinstance(compression, HuffmanCompressor):
                out.append(compression.allreduce_indexed_slices(g, name))
            else:
                out.append(hvd.allreduce(g, op=hvd.Average, name=_op_name(name),
                                         ignore_name_scope=True))
        else:
            kw = {"compression": compression} if compression is not None else {}
            out.append(hvd.allreduce(g, op=hvd.Average, name=_op_name(name),
                                     ignore_name_scope=True, **kw))
    return out


class DistributedGradientTape:
    """``tape = DistributedGradientTape(tape, compression)``: ``tape.gradient(target, sources)``
    returns gradients averaged over all workers by :func:`allreduce_gradients`, sparse ones
    encoded too (Horovod's own tape sends ``tf.IndexedSlices`` raw)."""

    def __init__(self, tape: tf.GradientTape, compression: HuffmanCompressor | None = None):
        self._tape = tape
        self.compression = compression

    def gradient(self, target, sources, output_gradients=None):
        grads = self._tape.gradient(target, sources, output_gradients)
        return allreduce_gradients(grads, sources, self.compression)

    def __getattr__(self, attr):
        return getattr(self._tape, attr)
