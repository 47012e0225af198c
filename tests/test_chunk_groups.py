"""Encoders write chunk groups (one per thread) into bounded room and move them together;
decoders decode chunk groups in parallel. The bytes and the verdicts must not depend on the
number of groups or on serial/parallel mode."""
import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp.coders import chunks

from conftest import gradient_like


@pytest.fixture
def groups(monkeypatch):
    def use(k):
        monkeypatch.setattr(chunks, "_threads", lambda: k)
    yield use
    chunks.set_parallel(True)


def _payloads(seed):
    x = gradient_like(300_001, seed)
    sparse = x * (np.random.default_rng(seed).random(x.size) < 0.002)
    out = []
    for arr in (x, sparse):
        for q, kw in (("qsgd", dict(levels=32, norm="max")), ("qsgd", dict(levels=1)),
                      ("terngrad", {}), ("topk", dict(ratio=0.01))):
            for coder in ("auto", "huffman", "zrh"):
                out.append(hc.encode(arr, q, coder, seed=seed, chunk_log2=12, **kw))
    return out


def test_bytes_do_not_depend_on_grouping(groups):
    chunks.set_parallel(False)
    want = _payloads(1)
    chunks.set_parallel(True)
    for k in (1, 2, 3, 7, 1000):  # 1000 groups: more than chunks in the sparse tensors
        groups(k)
        assert _payloads(1) == want, k


def test_decode_verdicts_do_not_depend_on_grouping(groups):
    rng = np.random.default_rng(3)
    blobs = _payloads(2)
    mutated = []  # data bits flipped, checksum recomputed: the decoders must judge them
    for b in blobs[:12]:
        _, (sec,) = hc.payload.unpack(b)
        for _ in range(20):
            data = bytearray(sec.data)
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            sec2 = hc.payload.Section(**{**sec.__dict__, "data": bytes(data)})
            mutated.append(hc.payload.pack([sec2], bundle=False))

    def verdicts():
        out = []
        for b in blobs + mutated:
            try:
                out.append(hc.decode(b).tobytes())
            except hc.PayloadError as e:
                out.append(str(e))
        return out

    chunks.set_parallel(False)
    want = verdicts()
    chunks.set_parallel(True)
    assert sum(isinstance(v, str) for v in want) > 50
    for k in (2, 5):
        groups(k)
        assert verdicts() == want


@pytest.mark.parametrize("mode", ["huffman", "rice"])
@pytest.mark.parametrize("ctx", ["one", "magnitude", "sign"])
def test_dense_zrh_writer_writes_the_same_bits(mode, ctx):
    """ZRH's branchless writer for mostly non-zero states (``_write_dense``) against the
    run-by-run one: same bytes, with long runs inside chunks and at their ends."""
    from horovod_huffcomp.codebook import code_from_counts
    from horovod_huffcomp.coders import zrh
    from horovod_huffcomp.quantizers import Quantized

    rng = np.random.default_rng(len(mode) * 7 + len(ctx))
    n, s, clog2 = 40_000, 9, 10
    states = np.zeros((n + 7) & ~7, np.int8)
    states[:n] = rng.integers(-s, s + 1, n)
    for start in rng.integers(0, n - 200, 40):  # long zero runs
        states[start:start + rng.integers(16, 200)] = 0
    states[(1 << clog2) - 40:(1 << clog2)] = 0  # a chunk ending on a long run
    states[2 * (1 << clog2) - 16:2 * (1 << clog2)] = 0  # ... on exactly RUN_DIRECT zeros
    q = Quantized(states, n, s, 1.0, "max", None)
    rows = {"one": 1, "magnitude": zrh.NCTX, "sign": zrh.NLCTX}[ctx]
    nctx = 1 if ctx == "one" else zrh.NCTX
    # skewed level counts: codewords up to 15 bits
    ll = np.stack([code_from_counts(1 + (rng.permutation(2 * s) ** 6))[0] for _ in range(rows)])
    assert ll.max() >= 12
    if mode == "huffman":
        rl = np.stack([code_from_counts(rng.integers(1, 50, chunks.RUN_ALPHABET))[0]
                       for _ in range(nctx)])
        zc = zrh.ZrhCode(zrh.MODE_HUFFMAN, np.zeros(nctx), rl, np.full(nctx, -1), ll,
                         np.full(rows, -1))
    else:  # large k: a Rice run of up to 40 bits and a 15-bit level after a long run
        zc = zrh.ZrhCode(zrh.MODE_RICE, rng.integers(0, 4, nctx) + [0, 21][len(ctx) % 2],
                         np.zeros((nctx, chunks.RUN_ALPHABET)), np.full(nctx, -1), ll,
                         np.full(rows, -1))
    assert np.count_nonzero(states) >= 0.6 * n  # encode picks the dense writer
    dense = zrh.encode(q, clog2, zc, int(np.count_nonzero(states)))
    sparse = zrh.encode(q, clog2, zc, n, dense=False)
    assert np.array_equal(dense[0], sparse[0]) and np.array_equal(dense[1], sparse[1])
    out = np.zeros(n, np.int8)
    assert zrh.decode(dense[1], dense[0], n, clog2, s, zc, out, np.zeros(0, np.uint32)) == 0
    assert np.array_equal(out, states[:n])
