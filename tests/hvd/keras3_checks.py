"""Run under ``horovodrun -np 2 --gloo`` with Keras 3 (TF_USE_LEGACY_KERAS unset): the Keras 3
path of horovod_huffcomp.tensorflow.keras (our DistributedOptimizer and broadcast callback on
Horovod's TF collectives). Results as JSON written by rank 0 to argv[1]."""
import json
import os
import sys

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import horovod.tensorflow as hvd  # noqa: E402
from horovod_huffcomp.tensorflow import Compression  # noqa: E402
from horovod_huffcomp.tensorflow.keras import (  # noqa: E402
    BroadcastGlobalVariablesCallback, CompressionStats, DistributedOptimizer)

hvd.init()
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)
out = {"keras": keras.__version__}


def same_on_all_ranks(variables, tag):
    flat = tf.concat([tf.reshape(tf.convert_to_tensor(v), [-1]) for v in variables], 0)
    g = hvd.allgather(flat[None], name=f"same.{tag}").numpy()
    return bool(np.array_equal(g[0], g[1]))


rng = np.random.default_rng(hvd.rank())  # different data on each rank
x = rng.integers(0, 40, (128, 6))
y = (x.sum(1) % 3).astype(np.int64)

keras.utils.set_random_seed(hvd.rank())  # different initial weights: the broadcast must fix it
model = keras.Sequential([keras.Input((6,)), keras.layers.Embedding(40, 8),
                          keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(3)])
comp = Compression.huffman(quantizer="qsgd", levels=16)
opt = DistributedOptimizer(keras.optimizers.Adam(0.01), compression=comp)
model.compile(optimizer=opt, jit_compile=False,
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False,
                    callbacks=[BroadcastGlobalVariablesCallback(0), CompressionStats(comp)])
out["fit_logs"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
out["identical"] = same_on_all_ranks(model.trainable_variables, "fit")
out["names"] = sorted(comp.last_dequantized)
out["optimizer_class"] = type(model.optimizer).__name__

if hvd.rank() == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
