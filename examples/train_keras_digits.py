"""Data-parallel Keras training (model.fit) of a small CNN on scikit-learn's digits with
Horovod, exchanging horovod_huffcomp payloads instead of float32 gradients.

    horovodrun -np 2 -H localhost:2 --gloo python examples/train_keras_digits.py
    horovodrun -np 2 -H localhost:2 --gloo python examples/train_keras_digits.py --keras 3

``--keras 2`` (default): tf-keras (TF_USE_LEGACY_KERAS=1, set here) with Horovod's own
``horovod.tensorflow.keras.DistributedOptimizer(opt, compression=...)`` and callbacks.
``--keras 3``: Keras 3 with horovod_huffcomp.tensorflow.keras.DistributedOptimizer (Horovod's
Keras layer does not run on Keras 3). Both use our CompressionStats callback (bytes sent and
codec time in the progress bar / History) and, with ``--warmup-epochs``, CompressionWarmup.
``--compression none|fp16|huffman``; ``--json PATH`` writes the results for scripts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keras", choices=["2", "3"], default="2")
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
    ap.add_argument("--warmup-epochs", type=int, default=0,
                    help="epochs with compression off before switching it on")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32, help="per worker")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=0, help="model.fit verbosity on rank 0")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.quantizer == "qsgd":
        a.levels = 64 if a.levels is None else a.levels
        a.norm = "max" if a.norm is None else a.norm
    return a


def main(argv=None):
    a = parse(argv)
    # chosen before TensorFlow is imported: it decides what tf.keras is
    if a.keras == "2":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    else:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    import horovod.tensorflow as hvd
    from horovod_huffcomp.tensorflow import Compression
    from horovod_huffcomp.tensorflow import keras as hc_keras

    keras = tf.keras
    hvd.init()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(a.seed).permutation(len(y))
    test, train = perm[:360], perm[360:]
    xtr, ytr = x[train][hvd.rank()::hvd.size()], y[train][hvd.rank()::hvd.size()]

    keras.utils.set_random_seed(a.seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])

    compressor = None
    if a.compression == "huffman":
        compressor = Compression.huffman(quantizer=a.quantizer, levels=a.levels, norm=a.norm,
                                         coder=a.coder, error_feedback=a.error_feedback,
                                         gamma=a.gamma, seed=a.seed, bucket=a.bucket)
    opt = keras.optimizers.SGD(a.lr * hvd.size(), momentum=0.9)
    callbacks = []
    if a.keras == "2":
        import horovod.tensorflow.keras as hvd_keras

        compression = compressor or {"none": hvd.Compression.none,
                                     "fp16": hvd.Compression.fp16}[a.compression]
        opt = hvd_keras.DistributedOptimizer(opt, compression=compression)
        callbacks.append(hvd_keras.callbacks.BroadcastGlobalVariablesCallback(0))
    else:
        if a.compression == "fp16":
            sys.exit("--keras 3 supports --compression none or huffman")
        opt = hc_keras.DistributedOptimizer(opt, compression=compressor)
        callbacks.append(hc_keras.BroadcastGlobalVariablesCallback(0))
    if compressor is not None:
        if a.warmup_epochs:
            callbacks.append(hc_keras.CompressionWarmup(compressor, epochs=a.warmup_epochs))
        callbacks.append(hc_keras.CompressionStats(compressor))
    model.compile(optimizer=opt, metrics=["accuracy"], jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    t0 = time.perf_counter()
    history = model.fit(xtr, ytr, batch_size=a.batch, epochs=a.epochs, shuffle=True,
                        callbacks=callbacks, verbose=a.verbose if hvd.rank() == 0 else 0)
    elapsed = time.perf_counter() - t0
    steps = a.epochs * (len(ytr) // a.batch + (len(ytr) % a.batch > 0))
    raw_per_step = 4 * sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if compressor is not None:
        h = history.history
        sent_per_step = float(np.mean(h["bytes_sent"]))  # epoch means over equal epochs
        codec_s = sum((e + dd) * steps / a.epochs / 1e3
                      for e, dd in zip(h["encode_ms"], h["decode_ms"]))
    else:
        sent_per_step = raw_per_step / (2 if a.compression == "fp16" else 1)
        codec_s = 0.0
    _, acc = model.evaluate(x[test], y[test], verbose=0)
    flat = tf.concat([tf.reshape(tf.convert_to_tensor(v), [-1])
                      for v in model.trainable_variables], 0)
    gathered = hvd.allgather(flat[None], name="check_identical").numpy()
    identical = bool((gathered == gathered[0]).all())
    result = dict(keras=a.keras, compression=a.compression, quantizer=a.quantizer,
                  levels=a.levels, norm=a.norm, workers=hvd.size(), epochs=a.epochs,
                  steps=steps, accuracy=float(acc), bytes_sent_per_step=sent_per_step,
                  float32_bytes_per_step=raw_per_step, seconds=elapsed, codec_seconds=codec_s,
                  warmup_epochs=a.warmup_epochs, parameters_identical_on_all_ranks=identical)
    if hvd.rank() == 0:
        print(f"Keras {keras.__version__ if hasattr(keras, '__version__') else a.keras}, "
              f"{a.compression}: {hvd.size()} workers, {steps} steps, test accuracy "
              f"{100 * acc:.2f}%, {elapsed:.1f} s (encode + decode {codec_s:.1f} s)")
        print(f"bytes sent per step per worker: {sent_per_step:,.0f} "
              f"(float32 {raw_per_step:,}, fp16 {raw_per_step // 2:,}) -> "
              f"{raw_per_step / sent_per_step:.1f}x less than float32")
        print(f"parameters identical on all ranks: {identical}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
