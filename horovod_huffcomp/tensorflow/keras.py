"""Keras side of the TensorFlow adapter: callbacks, and a path for Keras 3 users.

Callbacks (tf-keras under ``TF_USE_LEGACY_KERAS=1`` and Keras 3 alike; they subclass whichever
``tf.keras`` is):

* :class:`CompressionStats` puts ``bytes_sent``, ``compression_ratio``, ``encode_ms`` and
  ``decode_ms`` (per step) into ``logs``: the progress bar, ``History`` and TensorBoard show
  them. Put it before a TensorBoard callback in the list.
* :class:`CompressionWarmup` keeps compression off (Horovod's plain allreduce) for the first
  ``steps`` optimizer steps or ``epochs`` epochs, then switches it on.

tf-keras users keep Horovod's own ``horovod.tensorflow.keras.DistributedOptimizer(opt,
compression=...)`` and callbacks. Horovod's Keras layer does not work with Keras 3 (it calls
``Variable.ref()``, which Keras 3 variables lack), so for Keras 3 this module builds the same
thing on Horovod's TensorFlow collectives: :func:`DistributedOptimizer` and
:class:`BroadcastGlobalVariablesCallback`. Compile with ``jit_compile=False``: the codec runs
as a ``tf.numpy_function``, which XLA cannot compile.
"""
from __future__ import annotations

import tensorflow as tf

from . import HuffmanCompressor, _op_name, allreduce_gradients, variable_names

keras = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1, Keras 3 otherwise

__all__ = ["CompressionStats", "CompressionWarmup", "DistributedOptimizer",
           "BroadcastGlobalVariablesCallback"]


class CompressionStats(keras.callbacks.Callback):
    """Compression statistics of each step into ``logs`` (and their epoch mean at epoch end).

    ``bytes_sent``: this worker's bytes for the step's gradients (while compression is off,
    their float32 size); ``compression_ratio``: float32 bytes / bytes sent; ``encode_ms`` and
    ``decode_ms``: codec time of the step.
    """

    KEYS = ("bytes_sent", "compression_ratio", "encode_ms", "decode_ms")

    def __init__(self, compressor: HuffmanCompressor):
        super().__init__()
        self.compressor = compressor
        self._epoch: list[dict] = []

    def _step(self) -> dict:
        s = self.compressor.stats.take()
        if s["tensors"] == 0:  # compression off: gradients went as float32 through Horovod
            raw = sum(self.compressor.raw_bytes_per_step.values())
            return dict(bytes_sent=float(raw), compression_ratio=1.0, encode_ms=0.0,
                        decode_ms=0.0)
        return dict(bytes_sent=float(s["bytes_sent"]),
                    compression_ratio=float(s["compression_ratio"]),
                    encode_ms=1e3 * s["encode_s"], decode_ms=1e3 * s["decode_s"])

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        self._epoch.append(step)
        if logs is not None:
            logs.update(step)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = []

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._epoch:
            for k in self.KEYS:
                logs[k] = sum(s[k] for s in self._epoch) / len(self._epoch)


class CompressionWarmup(keras.callbacks.Callback):
    """Compression off for the first ``steps`` optimizer steps (or ``epochs`` epochs), on after.

    Flips ``compressor.enabled``, a ``tf.Variable`` read when each step runs: no retrace. Every
    worker runs the same number of steps, so all switch at the same step.
    """

    def __init__(self, compressor: HuffmanCompressor, steps: int | None = None,
                 epochs: int | None = None):
        super().__init__()
        if (steps is None) == (epochs is None):
            raise ValueError("CompressionWarmup needs exactly one of steps= or epochs=")
        self.compressor, self.steps, self.epochs = compressor, steps, epochs
        self._seen = 0

    def on_train_begin(self, logs=None):
        self._seen = 0
        if self.steps is not None:
            self.compressor.enabled.assign(self.steps <= 0)

    def on_epoch_begin(self, epoch, logs=None):
        if self.epochs is not None:
            self.compressor.enabled.assign(epoch >= self.epochs)

    def on_train_batch_begin(self, batch, logs=None):
        if self.steps is not None:
            self.compressor.enabled.assign(self._seen >= self.steps)

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1


def DistributedOptimizer(optimizer, compression: HuffmanCompressor | None = None):
    """Keras 3: a copy of ``optimizer`` that averages gradients over all Horovod workers before
    applying them, each gradient exchanged by :func:`allreduce_gradients` (encoded when
    ``compression`` is a HuffmanCompressor, sparse gradients included)."""
    base = type(optimizer)

    def apply(self, grads, trainable_variables=None):
        variables = (self._trainable_variables if trainable_variables is None
                     else list(trainable_variables))
        grads = allreduce_gradients(list(grads), variables, self._huffcomp_compression)
        return base.apply(self, grads, trainable_variables)

    cls = type(base.__name__, (base,), {"apply": apply, "__module__": __name__})
    opt = cls.from_config(optimizer.get_config())
    opt._huffcomp_compression = compression
    return opt


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """Copies the model's variables from ``root_rank`` to every worker when training begins
    (Horovod's TF broadcast, one collective per variable named after it). The model must be
    built (called once, or given an input shape)."""

    def __init__(self, root_rank: int = 0):
        super().__init__()
        self.root_rank = root_rank
        self._done = False

    def on_train_begin(self, logs=None):
        if self._done:
            return
        import horovod.tensorflow as hvd

        variables = list(self.model.variables)
        for v, name in zip(variables, variable_names(variables)):
            v.assign(hvd.broadcast(tf.convert_to_tensor(v), self.root_rank,
                                   name="huffcomp.broadcast." + _op_name(name)))
        self._done = True
