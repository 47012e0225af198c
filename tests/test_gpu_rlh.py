"""RLH's batch encode (``gpu_rlh``: array operations NumPy and CuPy share) run with NumPy
against the CPU backend's ``coders.rlh``: the same codebooks, chunk tables and bytes, from a
state buffer laid out as the GPU backend lays it out (each tensor padded with zeros to a
multiple of 8 states). The device runs the same functions with CuPy
(tests/test_gpu_backend.py)."""
import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import cpu_backend, gpu_rlh
from horovod_huffcomp.coders import rlh
from horovod_huffcomp.coders.chunks import auto_chunk_log2, byte_offsets
from horovod_huffcomp.quantizers import quantize


def gradient_like(rng, n):
    x = rng.standard_t(3, n) * 10.0 ** rng.uniform(-4, 0)
    x[rng.random(n) < 0.3] = 0
    return x.astype(np.float32)


def encode_batch(qs, clog2s):
    """What the GPU backend's rlh path gives for these quantized tensors: (codebooks, chunk
    bits, data bytes) per tensor, from gpu_rlh over one padded state buffer."""
    sizes = np.array([q.n for q in qs], np.int64)
    offsets = np.zeros(len(qs) + 1, np.int64)
    np.cumsum((sizes + 7) & ~7, out=offsets[1:])
    states = np.full(int(offsets[-1]) or 8, 0x55, np.int8)  # padding: not states, not read
    raw = qs[0].raw is not None
    mags = np.full(states.size, 0xFFFFFFFF, np.uint32)  # read only where a state is non-zero
    for t, q in enumerate(qs):
        states[offsets[t]: offsets[t] + q.n] = q.states[: q.n]
        if raw:
            mags[offsets[t]: offsets[t] + q.n] = q.raw
    clog2s = np.asarray(clog2s, np.int64)
    first = np.zeros(len(qs) + 1, np.int64)
    np.cumsum(-(-sizes // (1 << clog2s)), out=first[1:])
    planned = gpu_rlh.plan(np, states, offsets, sizes, clog2s, first, qs[0].levels, raw)
    bits = planned.chunk_bits
    assert bits.size == first[-1]
    chunk_byte = byte_offsets(bits)
    out = np.zeros(max(-(-int(chunk_byte[-1]) // 4), 1), np.uint32)
    gpu_rlh.write(np, planned, chunk_byte[:-1], out, mags if raw else None)
    data = out.view(np.uint8)[: int(chunk_byte[-1])].tobytes()
    return [(planned.codebooks[t], bits[first[t]: first[t + 1]],
             data[chunk_byte[first[t]]: chunk_byte[first[t + 1]]]) for t in range(len(qs))]


def assert_as_cpu(xs, quantizer="qsgd", levels=8, norm="l2", chunk_log2=None, ratio=0.01):
    qs = [quantize(x, quantizer, levels, norm, 7, i, ratio) for i, x in enumerate(xs)]
    clog2s = [chunk_log2 or auto_chunk_log2(q.n, int(np.count_nonzero(q.states[: q.n])))
              for q in qs]
    got = encode_batch(qs, clog2s)
    for t, (q, clog2) in enumerate(zip(qs, clog2s)):
        sec = cpu_backend.code_section(q, quantizer, np.float32, (q.n,), "rlh", clog2, 7)
        assert sec.coder == "rlh" and sec.chunk_log2 == clog2
        codebook, bits, data = got[t]
        assert codebook == sec.codebook, t
        np.testing.assert_array_equal(bits, sec.chunk_bits)
        assert data == bytes(sec.data), t
    return qs


@pytest.mark.parametrize("levels,norm", [(1, "l2"), (4, "max"), (16, "l2"), (127, "max")])
def test_batches_as_the_cpu_backend(levels, norm):
    rng = np.random.default_rng(levels)
    sizes = [0, 1, 7, 8, 4097, 65_537, 200_003]
    xs = [gradient_like(rng, n) for n in sizes]
    assert_as_cpu(xs, "qsgd", levels, norm)
    assert_as_cpu(xs[::-1], "qsgd", levels, norm, chunk_log2=10)
    for n in sizes:  # each alone
        assert_as_cpu([gradient_like(rng, n)], "qsgd", levels, norm)


def test_runs_across_chunks_and_tensors():
    """Runs longer than a chunk (cut at every chunk's first state), tensors that end and begin
    with the same state (no run spans two tensors), all-zero and constant tensors."""
    rng = np.random.default_rng(1)
    long_runs = np.repeat(rng.standard_normal(30), rng.integers(1, 9000, 30)).astype(np.float32)
    xs = [long_runs, np.zeros(5000, np.float32), np.ones(4099, np.float32), long_runs[::-1],
          np.zeros(3, np.float32), np.full(1, -2.0, np.float32)]
    for clog2 in (None, 8, 12, 16):
        assert_as_cpu(xs, "qsgd", 4, "max", chunk_log2=clog2)
    assert_as_cpu([np.zeros(0, np.float32)] * 3, "qsgd", 4, "max")
    assert_as_cpu(xs, "terngrad", None, "l2")


@pytest.mark.parametrize("ratio", [1e-5, 0.01, 0.5, 1.0])
def test_exact_topk_raw_magnitudes(ratio):
    """Exact top-k: every non-zero run's codeword followed by its states' 31-bit magnitudes
    (runs of equal signs: many magnitudes after one codeword)."""
    rng = np.random.default_rng(2)
    runs = np.repeat(rng.standard_normal(40), rng.integers(1, 3000, 40)).astype(np.float32)
    xs = [gradient_like(rng, n) for n in (1, 7, 4097, 70_001)] + [runs]
    assert_as_cpu(xs, "topk", None, None, ratio=ratio)
    assert_as_cpu(xs, "topk", None, None, ratio=ratio, chunk_log2=9)


def test_quantized_topk_and_float_formats():
    rng = np.random.default_rng(3)
    xs = [gradient_like(rng, n) for n in (10, 4096, 50_001)]
    assert_as_cpu(xs, "topk", 4, None, ratio=0.05)
    assert_as_cpu(xs, "fp8", None, "max")
    assert_as_cpu(xs, "fp4", None, "gennorm")


def test_more_pairs_than_a_code_has_codewords():
    """Runs of 129 values x 1..260 states (33,540 pairs, more than 2^15): that tensor's runs
    are cut into pieces of at most 2^15 // 129 states, as rlh.plan cuts them; its neighbours
    in the batch keep their maximal runs."""
    k, r = np.meshgrid(np.arange(-64, 65), np.arange(1, 261))
    x = np.repeat(k.ravel(), r.ravel()).astype(np.float32)
    rng = np.random.default_rng(4)
    xs = [gradient_like(rng, 9000), x, gradient_like(rng, 5000)]
    qs = assert_as_cpu(xs, "qsgd", 64, "max", chunk_log2=24)
    pc = rlh.plan(qs[1], 24)[0]
    assert pc.vals.size <= rlh.MAX_PAIRS and pc.runs.max() == rlh.MAX_PAIRS // 129
    assert_as_cpu([x], "topk", None, None, ratio=1.0, chunk_log2=24)


def test_payload_from_the_batch_decodes():
    """The bytes placed by gpu_rlh, packed as sections, decode on the host to the tensors."""
    rng = np.random.default_rng(5)
    xs = [gradient_like(rng, n) for n in (33, 4097, 10_000)]
    want = hc.encode_many(xs, "qsgd", "rlh", 8, seed=7)
    _, secs = hc.payload.unpack(want)
    qs = [quantize(x, "qsgd", 8, "l2", 7, i) for i, x in enumerate(xs)]
    got = encode_batch(qs, [sec.chunk_log2 for sec in secs])
    blob = hc.payload.pack([hc.payload.Section(**{**sec.__dict__, "data": data})
                            for sec, (_, _, data) in zip(secs, got)], bundle=True)
    assert blob == want
    for a, b in zip(hc.decode_many(blob), hc.decode_many(want)):
        np.testing.assert_array_equal(a, b)
