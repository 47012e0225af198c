"""The host side of the GPU decode-and-sum (``gpu_backend.decode_sum`` / ``decode`` and
``exchange.decode_mean(..., cuda=True)``), run without a GPU: CuPy is replaced by NumPy and
the device kernel launch (``_decode_into``) by the CPU decoder, so what is checked here is the
parsing, labelling, shape checks, coverage fallback and summation order around the kernels;
the kernels themselves are checked on a GPU by tests/test_gpu_backend.py."""
import sys
import types

import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import api, cpu_backend, exchange, gpu_backend

SHAPES = [(30, 7), (1,), (), (5001,)]


@pytest.fixture
def host_device(monkeypatch):
    fake = types.ModuleType("cupy")
    fake.zeros, fake.asarray, fake.ndarray = np.zeros, np.asarray, np.ndarray
    fake.float64, fake.int32 = np.float64, np.int32
    monkeypatch.setitem(sys.modules, "cupy", fake)

    def decode_add(blobs, parsed, labels, sizes, offsets, profile):
        acc = np.zeros(max(int(offsets[-1]), 1))
        for _, secs in parsed:
            for t, sec in enumerate(secs):
                v = cpu_backend.decode_section(sec).reshape(-1).astype(np.float64)
                acc[offsets[t]: offsets[t] + v.size] += v
        return acc, np.zeros((len(parsed), 2), np.int32)

    monkeypatch.setattr(gpu_backend, "_decode_add", decode_add)


def _blobs(coder="huffman", quantizer="qsgd", bucket=None):
    rng = np.random.default_rng(0)
    return [hc.encode_many([rng.standard_normal(sh).astype(np.float32) for sh in SHAPES],
                           quantizer, coder, 8 if quantizer == "qsgd" else None, seed=r,
                           bucket=bucket)
            for r in range(3)]


def test_decode_sum_and_decode(host_device):
    blobs = _blobs()
    per_rank = [hc.decode_many(b) for b in blobs]
    got = gpu_backend.decode_sum(blobs, average=True)
    for t in range(len(SHAPES)):
        assert np.array_equal(got[t], exchange.reduce_mean([p[t] for p in per_rank]))
    own = gpu_backend.decode(blobs[1])
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(own, per_rank[1]))
    single = hc.encode(np.ones(10, np.float32), "qsgd", "huffman", 4)
    assert gpu_backend.decode_sum([single]).shape == (10,)
    assert isinstance(gpu_backend.decode_sum([single], bundle=True), list)
    empty = hc.encode_many([], "qsgd", "huffman", 8)
    assert gpu_backend.decode_sum([empty, empty]) == [] == gpu_backend.decode(empty)


# not GPU-covered, host fallback: rlh and, while gpu_backend.NOT_YET_ON_DEVICE names them,
# CO3's float formats and QSGD's buckets
@pytest.mark.parametrize("coder,quantizer,bucket", [
    ("huffman", "qsgd", None), ("rlh", "qsgd", None), ("huffman", "fp4", None),
    ("huffman", "qsgd", 64)])
def test_exchange_decode_mean_on_the_device_path(host_device, coder, quantizer, bucket):
    blobs = _blobs(coder, quantizer, bucket)
    if (coder, quantizer, bucket) != ("huffman", "qsgd", None):
        with pytest.raises(NotImplementedError, match=f"{quantizer}/{coder}"):
            gpu_backend.decode_sum(blobs)
    per_rank = [hc.decode_many(b) for b in blobs]
    frames = exchange.split_frames(
        np.frombuffer(b"".join(exchange.frame(b) for b in blobs), np.uint8), 3)
    means, own = exchange.decode_mean(frames, SHAPES, rank=2, cuda=True)
    for t, m in enumerate(means):
        assert np.array_equal(m, exchange.reduce_mean([p[t] for p in per_rank]))
        assert np.array_equal(own[t], per_rank[2][t])
    with pytest.raises(hc.PayloadError, match="rank 0 does not hold"):
        exchange.decode_mean(frames, [(7, 30)] + SHAPES[1:], rank=0, cuda=True)


def test_own_payload_is_read_once(host_device, monkeypatch):
    """exchange.decode_mean on the device path: this rank's tensors come from the parse the
    decode-and-sum made (each payload's CRC and sections read once, not its own twice); when
    the encode already gave them (``mine``, a host encode of the same bytes), from there,
    with no second decode; a frame that differs from ``mine`` is decoded."""
    rng = np.random.default_rng(5)
    xs = [[rng.standard_normal(sh).astype(np.float16 if t == 1 else np.float32)
           for t, sh in enumerate(SHAPES)] for _ in range(3)]
    enc = [api.encode_dequantized(x, "qsgd", "huffman", 8, seed=r) for r, x in enumerate(xs)]
    blobs = [b for b, _ in enc]
    per_rank = [hc.decode_many(b) for b in blobs]
    frames = exchange.split_frames(
        np.frombuffer(b"".join(exchange.frame(b) for b in blobs), np.uint8), 3)
    reads, decodes = [], []
    unpack, decode_add = hc.payload.unpack, gpu_backend._decode_add
    monkeypatch.setattr(hc.payload, "unpack", lambda b, *a: reads.append(b) or unpack(b, *a))
    monkeypatch.setattr(gpu_backend, "_decode_add",
                        lambda blobs, *a: decodes.append(len(blobs)) or decode_add(blobs, *a))
    for mine, decoded in ((None, [3, 1]), (enc[1], [3]), ((blobs[0], enc[0][1]), [3, 1])):
        reads.clear(), decodes.clear()
        means, own = exchange.decode_mean(frames, SHAPES, rank=1, cuda=True, mine=mine)
        assert sorted(map(bytes, reads)) == sorted(blobs) and decodes == decoded
        for t, m in enumerate(means):
            assert np.array_equal(m, exchange.reduce_mean([p[t] for p in per_rank]))
            assert np.array_equal(own[t], per_rank[1][t]) and own[t].dtype == xs[1][t].dtype
    sums, own = gpu_backend.decode_sum(blobs, own=2)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(own, per_rank[2]))
    assert np.array_equal(sums[0], sum(p[0].astype(np.float64) for p in per_rank))
    single = hc.encode(np.ones(10, np.float32), "qsgd", "huffman", 4)
    sums, own = gpu_backend.decode_sum([single, single], own=0)
    assert sums.shape == (10,) and [a.shape for a in own] == [(10,)]


def test_errors_name_the_payload(host_device):
    blobs = _blobs()
    bad = bytearray(blobs[2])
    bad[20] ^= 1
    with pytest.raises(hc.PayloadError, match="^rank two: "):
        gpu_backend.decode_sum([blobs[0], bytes(bad)], labels=["rank one", "rank two"])
    other = hc.encode_many([np.ones(3, np.float32)], "qsgd", "huffman", 8)
    with pytest.raises(hc.PayloadError, match="payload 1 does not hold the tensors of payload 0"):
        gpu_backend.decode_sum([blobs[0], other])


@pytest.mark.parametrize("family,quantizer,coder,bucket", [
    ("elias", "qsgd", "elias-delta", None), ("float formats", "fp8", "huffman", None),
    ("float formats", "fp4", "auto", None), ("buckets", "qsgd", "huffman", 64),
    ("raw top-k", "topk", "auto", None), ("shs", "qsgd", "shs", None)])
def test_new_kernels_stay_on_the_host_until_they_ran_on_a_gpu(host_device, monkeypatch, family,
                                                              quantizer, coder, bucket):
    """While gpu_backend.NOT_YET_ON_DEVICE names a kernel family (docs/gpu.md), CUDA inputs
    that need it (coded with Elias or SHS, quantized to a float format, in QSGD's buckets or
    by exact top-k) are encoded on the host and such payloads decoded there
    (exchange.decode_mean falls back); taking that family off the set, and only that one,
    brings them to the device (exact top-k's encode needs "top-k" off too, SHS's "sample
    counts")."""
    assert family in gpu_backend.NOT_YET_ON_DEVICE
    assert not gpu_backend.supports(quantizer, coder, "gap", bucket)
    blobs = _blobs(coder, quantizer, bucket)
    if family in ("raw top-k", "shs"):
        assert family == "shs" or all(sec.raw for sec in hc.payload.unpack(blobs[0])[1])
        monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE", gpu_backend.NOT_YET_ON_DEVICE - {
            "top-k" if family == "raw top-k" else "sample counts"})
        assert not gpu_backend.supports(quantizer, coder, "gap", bucket)
    with pytest.raises(NotImplementedError, match=f"{quantizer}/"):
        gpu_backend.decode_sum(blobs)
    frames = exchange.split_frames(
        np.frombuffer(b"".join(exchange.frame(b) for b in blobs), np.uint8), 3)
    means, _ = exchange.decode_mean(frames, SHAPES, rank=0, cuda=True)
    per_rank = [hc.decode_many(b) for b in blobs]
    for t, m in enumerate(means):
        assert np.array_equal(m, exchange.reduce_mean([p[t] for p in per_rank]))
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE",
                        gpu_backend.NOT_YET_ON_DEVICE - {family})
    assert gpu_backend.supports(quantizer, coder, "gap", bucket)
    assert not gpu_backend.supports(quantizer, coder, "diagonal", bucket)
    assert gpu_backend.supports(quantizer, coder, "gap", bucket=64) == (bucket is not None)
    assert gpu_backend.decode_sum(blobs)[0].shape == SHAPES[0]



def test_rlh_waits_its_first_gpu_run(host_device, monkeypatch):
    """RLH on the device (encode: gpu_rlh; decode: cuda/rlh.cu) stays off while "rlh" is in
    NOT_YET_ON_DEVICE (its payloads decode on the host, exchange.decode_mean falls back),
    and with buckets or top-k while theirs are."""
    assert "rlh" in gpu_backend.NOT_YET_ON_DEVICE
    assert not gpu_backend.supports("qsgd", "rlh")
    blobs = _blobs("rlh")
    with pytest.raises(NotImplementedError, match="qsgd/rlh"):
        gpu_backend.decode_sum(blobs)
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE",
                        gpu_backend.NOT_YET_ON_DEVICE - {"rlh"})
    assert gpu_backend.supports("qsgd", "rlh") and gpu_backend.supports("terngrad", "rlh")
    assert not gpu_backend.supports("qsgd", "rlh", bucket=64)
    assert not gpu_backend.supports("topk", "rlh")
    per_rank = [hc.decode_many(b) for b in blobs]
    got = gpu_backend.decode_sum(blobs)
    for t in range(len(SHAPES)):
        assert np.array_equal(got[t], exchange.reduce_mean([p[t] for p in per_rank],
                                                           average=False))
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE", set())
    assert gpu_backend.supports("qsgd", "rlh", bucket=64) and gpu_backend.supports("topk", "rlh")


def test_sh_payloads_decode_on_the_device_before_its_encode_kernel_ran(host_device,
                                                                       monkeypatch):
    """SH's payloads are huffman's bits with another code: the device decodes them (kernels
    that have run on a GPU); its encode (hc_sample_counts) stays on the host while "sample
    counts" is in NOT_YET_ON_DEVICE."""
    assert "sample counts" in gpu_backend.NOT_YET_ON_DEVICE
    assert not gpu_backend.supports("qsgd", "sh")
    blobs = _blobs("sh")
    per_rank = [hc.decode_many(b) for b in blobs]
    got = gpu_backend.decode_sum(blobs)
    for t in range(len(SHAPES)):
        assert np.array_equal(got[t], exchange.reduce_mean([p[t] for p in per_rank],
                                                           average=False))
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE",
                        gpu_backend.NOT_YET_ON_DEVICE - {"sample counts"})
    assert gpu_backend.supports("qsgd", "sh") and not gpu_backend.supports("qsgd", "shs")


def test_quantized_topk_encode_waits_its_kernels_and_decodes_on_the_device(host_device,
                                                                          monkeypatch):
    """Quantized top-k's payloads decode as qsgd's (one scale per tensor): on the device;
    its encode (the selection kernels) stays on the host while "top-k" is in
    NOT_YET_ON_DEVICE, and exact top-k's (raw magnitudes) while "raw top-k" is too."""
    assert "top-k" in gpu_backend.NOT_YET_ON_DEVICE
    assert not gpu_backend.supports("topk", "auto", levels=8)
    rng = np.random.default_rng(3)
    blobs = [hc.encode_many([rng.standard_normal(sh).astype(np.float32) for sh in SHAPES],
                            "topk", "auto", 8, seed=r, ratio=0.1) for r in range(3)]
    got = gpu_backend.decode_sum(blobs)
    per_rank = [hc.decode_many(b) for b in blobs]
    for t in range(len(SHAPES)):
        assert np.array_equal(got[t], exchange.reduce_mean([p[t] for p in per_rank],
                                                           average=False))
    assert not gpu_backend.supports("topk", "auto")  # exact: "raw top-k" as well
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE",
                        gpu_backend.NOT_YET_ON_DEVICE - {"top-k"})
    assert gpu_backend.supports("topk", "auto", levels=8)
    assert not gpu_backend.supports("topk", "auto") and not gpu_backend.supports(
        "topk", "auto", levels=0)
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE", set())
    assert gpu_backend.supports("topk", "auto") and gpu_backend.supports("topk", "auto",
                                                                         levels=0)
