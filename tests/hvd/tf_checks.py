"""Run under ``horovodrun -np 2 --gloo`` with TF_USE_LEGACY_KERAS=1: checks of
horovod_huffcomp.tensorflow (eager, tf.function, Horovod's tape and optimizers, sparse
gradients, warm-up, model.fit with our callbacks), results as JSON written by rank 0 to
argv[1]. Driven by tests/test_horovod_tensorflow.py."""
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import horovod.tensorflow as hvd  # noqa: E402
import horovod.tensorflow.keras as hvd_keras  # noqa: E402
from horovod_huffcomp.tensorflow import Compression, DistributedGradientTape  # noqa: E402
from horovod_huffcomp.tensorflow.keras import CompressionStats, CompressionWarmup  # noqa: E402

keras = tf.keras
hvd.init()
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)
out = {"keras": getattr(keras, "__version__", None) or tf.keras.__name__}


def mean_of_dequantized(comp, name, tag):
    """Every rank's own dequantized gradient, averaged as the compressor does (float64, rank
    order)."""
    own = tf.constant(comp.last_dequantized[name].astype(np.float64))
    g = hvd.allgather(own[None], name=f"check.{tag}").numpy()
    return (g[0] + g[1]) / 2


def same_on_all_ranks(variables, tag):
    flat = tf.concat([tf.reshape(tf.convert_to_tensor(v), [-1]) for v in variables], 0)
    g = hvd.allgather(flat[None], name=f"same.{tag}").numpy()
    return bool(np.array_equal(g[0], g[1]))


def batch(step, n=16):
    rng = np.random.default_rng(1000 * step + hvd.rank())  # different data per rank
    return (rng.standard_normal((n, 20)).astype(np.float32),
            rng.integers(0, 5, n).astype(np.int64))


def mlp():
    tf.keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Dense(64, activation="relu"), keras.layers.Dense(5)])
    m.build((None, 20))
    return m


loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# 1. eager hvd.allreduce with a name: the exact mean of both ranks' dequantized tensors
comp = Compression.huffman(quantizer="qsgd", levels=4)
x = tf.constant(np.random.default_rng(hvd.rank()).standard_normal((33, 7)).astype(np.float32))
y = hvd.allreduce(x, compression=comp, name="eager_direct")
out["eager_exact"] = bool(np.array_equal(
    y.numpy(), mean_of_dequantized(comp, "eager_direct", "eager").astype(np.float32)))
out["eager_shape"] = list(y.shape)

# 2. Horovod's DistributedGradientTape in eager mode (Horovod traces its own tf.function):
#    collectives named after the variables, exact mean
comp = Compression.huffman(quantizer="qsgd", levels=8, norm="max")
model = mlp()
xb, yb = batch(0)
with tf.GradientTape() as tape:
    loss = loss_fn(yb, model(xb))
tape = hvd.DistributedGradientTape(tape, compression=comp)
grads = tape.gradient(loss, model.trainable_variables)
names = [v.name[:-2] for v in model.trainable_variables]
out["tape_names"] = sorted(comp.last_dequantized)
out["tape_exact"] = all(
    np.array_equal(g.numpy(), mean_of_dequantized(comp, n, f"tape{i}").astype(np.float32))
    for i, (g, n) in enumerate(zip(grads, names)))
out["tape_stats"] = comp.stats.take()

# 2b. Horovod's grouped path (num_groups): one grouped allreduce of the placeholders
comp = Compression.huffman(quantizer="qsgd", levels=8)
model = mlp()


@tf.function
def grouped_grads(xb, yb):
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb))
    return hvd.DistributedGradientTape(tape, compression=comp, num_groups=1).gradient(
        loss, model.trainable_variables)


grads = grouped_grads(*batch(1))
gnames = [v.name[:-2] for v in model.trainable_variables]
out["grouped_tape_exact"] = sorted(comp.last_dequantized) == sorted(gnames) and all(
    np.array_equal(g.numpy(), mean_of_dequantized(comp, n, f"gtape{i}").astype(np.float32))
    for i, (g, n) in enumerate(zip(grads, gnames)))


# 3. inside a user tf.function, 50 steps: weights bit-identical on both ranks
def train(comp, steps=50, lr=0.1):
    model = mlp()
    opt = keras.optimizers.SGD(lr, momentum=0.9)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb))
        tape = hvd.DistributedGradientTape(tape, compression=comp)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for s in range(steps):
        step(*batch(s))
    return model


out["identical_50"] = same_on_all_ranks(
    train(Compression.huffman(quantizer="qsgd", levels=16)).variables, "i50")
out["identical_50_ef"] = same_on_all_ranks(
    train(Compression.huffman(quantizer="terngrad", error_feedback=True, gamma=0.7)).variables,
    "i50ef")
out["identical_50_topk"] = same_on_all_ranks(
    train(Compression.huffman(quantizer="topk", ratio=0.05)).variables, "i50topk")
out["identical_50_fp4"] = same_on_all_ranks(  # CO3: fp4, GenNorm scale, decaying EF
    train(Compression.huffman(quantizer="fp4", error_feedback=True, gamma=0.7)).variables,
    "i50fp4")
out["identical_50_bucket"] = same_on_all_ranks(  # QSGD's buckets: a scale per 64 elements
    train(Compression.huffman(quantizer="qsgd", levels=16, bucket=64)).variables, "i50bucket")

# 3b. error feedback keeps the right residual: after one tf.function step, residual +
#     own dequantized gradient = this worker's gradient
comp = Compression.huffman(quantizer="terngrad", error_feedback=True)
model = mlp()
xb, yb = batch(0)


@tf.function
def ef_step(xb, yb):
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb))
    grads = hvd.DistributedGradientTape(tape, compression=comp).gradient(
        loss, model.trainable_variables)
    with tf.control_dependencies([g for g in grads]):
        return tf.identity(loss)


ef_step(xb, yb)
with tf.GradientTape() as tape:
    loss = loss_fn(yb, model(xb))
local = tape.gradient(loss, model.trainable_variables)
out["ef_residual_right"] = all(
    np.allclose(comp.memory.residual[v.name[:-2]] + comp.last_dequantized[v.name[:-2]],
                g.numpy(), rtol=1e-5, atol=1e-7)
    for v, g in zip(model.trainable_variables, local))

# 4. hvd.DistributedOptimizer around a Keras optimizer, custom tf.function loop (Horovod's
#    Keras optimizer reduces in compute_gradients / minimize, not in apply_gradients)
comp = Compression.huffman(quantizer="qsgd", levels=16)
model = mlp()
opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1), compression=comp)


@tf.function
def opt_step(xb, yb):
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb))
    opt.minimize(loss, model.trainable_variables, tape=tape)


for s in range(5):
    opt_step(*batch(s))
out["optimizer_identical"] = same_on_all_ranks(model.variables, "opt")
out["optimizer_tensors"] = comp.stats.take()["tensors"]

# 5. warm-up: while disabled, Horovod's plain allreduce (float32 average, nothing encoded)
comp = Compression.huffman(quantizer="qsgd", levels=2, enabled=False)


@tf.function
def reduce_fn(t):
    return hvd.allreduce(t, compression=comp, name="warm")


x = tf.constant(np.random.default_rng(7 + hvd.rank()).standard_normal(50).astype(np.float32))
plain = hvd.allreduce(x, name="plain").numpy()
off = reduce_fn(x).numpy()
off_tensors = comp.stats.take()["tensors"]
comp.enabled.assign(True)
on = reduce_fn(x).numpy()
out["warmup_off_is_plain"] = bool(np.array_equal(off, plain)) and off_tensors == 0
out["warmup_on_encoded"] = comp.stats.take()["tensors"] == 1 and bool(
    np.array_equal(on, mean_of_dequantized(comp, "warm", "warm").astype(np.float32)))

# 6. sparse gradients (Embedding): our tape encodes IndexedSlices values; Horovod's tape
#    with sparse_as_dense=True compresses them dense
def embed_model():
    tf.keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Embedding(50, 8), keras.layers.GlobalAveragePooling1D(),
                          keras.layers.Dense(5)])
    m.build((None, 6))
    return m


def ids(step):
    rng = np.random.default_rng(500 + 10 * step + hvd.rank())
    return rng.integers(0, 50, (16, 6)), rng.integers(0, 5, 16)


comp = Compression.huffman(quantizer="qsgd", levels=16)
model = embed_model()
xb, yb = ids(0)
with tf.GradientTape() as tape:
    loss = loss_fn(yb, model(xb))
grads = DistributedGradientTape(tape, compression=comp).gradient(loss, model.trainable_variables)
emb = grads[0]
out["sparse_is_slices"] = isinstance(emb, tf.IndexedSlices)
own = comp.last_dequantized[model.trainable_variables[0].name[:-2]]
all_rows = hvd.allgather(tf.constant(own.astype(np.float64)), name="check.rows").numpy()
out["sparse_exact"] = bool(np.array_equal(emb.values.numpy(), (all_rows / 2).astype(np.float32)))
all_idx = hvd.allgather(tf.constant(xb.reshape(-1)), name="check.idx").numpy()
out["sparse_indices"] = bool(np.array_equal(np.sort(emb.indices.numpy()), np.sort(all_idx)))
out["sparse_dense_exact"] = all(
    np.array_equal(g.numpy(), mean_of_dequantized(comp, v.name[:-2], f"sd{i}").astype(np.float32))
    for i, (g, v) in enumerate(zip(grads[1:], model.trainable_variables[1:])))


def train_embed(tape_factory, steps=20):
    model = embed_model()
    opt = keras.optimizers.SGD(0.5)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb))
        grads = tape_factory(tape).gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for s in range(steps):
        step(*ids(s))
    return model


comp = Compression.huffman(quantizer="qsgd", levels=16)
out["sparse_ours_identical"] = same_on_all_ranks(
    train_embed(lambda t: DistributedGradientTape(t, comp)).variables, "sp1")
comp2 = Compression.huffman(quantizer="qsgd", levels=16)
out["sparse_as_dense_identical"] = same_on_all_ranks(train_embed(
    lambda t: hvd.DistributedGradientTape(t, compression=comp2, sparse_as_dense=True)
).variables, "sp2")
out["sparse_as_dense_tensors"] = comp2.stats.take()["tensors"]

# 7. model.fit with horovod.tensorflow.keras and our callbacks (warm-up of 3 steps)
comp = Compression.huffman(quantizer="qsgd", levels=16)
model = mlp()
model.compile(optimizer=hvd_keras.DistributedOptimizer(keras.optimizers.SGD(0.1),
                                                       compression=comp),
              loss=loss_fn)
xs, ys = batch(99, n=160)
history = model.fit(xs, ys, batch_size=16, epochs=2, verbose=0, shuffle=False,
                    callbacks=[hvd_keras.callbacks.BroadcastGlobalVariablesCallback(0),
                               CompressionWarmup(comp, steps=3), CompressionStats(comp)])
h = history.history
out["fit_logs"] = {k: [float(v) for v in h[k]] for k in sorted(h)}
out["fit_identical"] = same_on_all_ranks(model.variables, "fit")

# 8. a corrupted payload from rank 1: a clear error on every rank, no hang
comp = Compression.huffman(quantizer="qsgd", levels=8)
comp._fault_rank = 1
try:
    hvd.allreduce(x, compression=comp, name="corrupt")
    err = None
except Exception as e:  # noqa: BLE001 - TF wraps the callback's PayloadError
    err = f"{type(e).__name__}: {e}"
out["corrupt_errors_all_ranks"] = hvd.allgather_object(err)


@tf.function
def corrupt_fn(t):
    return hvd.allreduce(t, compression=comp, name="corrupt_graph")


try:
    corrupt_fn(x)
    err = None
except Exception as e:  # noqa: BLE001
    err = f"{type(e).__name__}: {e}"
out["corrupt_errors_graph_all_ranks"] = hvd.allgather_object(err)

if hvd.rank() == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
