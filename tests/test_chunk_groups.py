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


def _sparse_states(rng, n, s, density):
    states = np.zeros((n + 7) & ~7, np.int8)
    nz = rng.random(n) < density
    states[:n] = np.where(nz, rng.integers(-s, s + 1, n), 0)
    return states


@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.3, 1.0])
def test_nonzero_count_and_positions(density):
    """The branch-free count (eight bytes a word) and both scans for the non-zero positions
    (zero words skipped below 1/8 non-zero, branch-free above) against NumPy."""
    from horovod_huffcomp.coders import zrh

    rng = np.random.default_rng(int(density * 1000))
    for n in (0, 1, 7, 8, 9, 63, 64, 65, 4097, 100_003):
        states = _sparse_states(rng, n, 127, density)
        states[: n // 3][states[: n // 3] != 0] = -128  # a byte with only its top bit set
        nnz = chunks.count_nonzero(states, n)
        assert nnz == np.count_nonzero(states[:n]), n
        assert np.array_equal(zrh.nonzero_positions(states, n, nnz), np.flatnonzero(states[:n]))
    with pytest.raises(ValueError):
        zrh.nonzero_positions(states, n, nnz + 1)


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("raw", [False, True])
def test_listed_zrh_kernels_match_scanning(groups, k, raw):
    """ZRH's histograms and writer read from the non-zero positions give what scanning the
    states gives, whatever the chunk groups."""
    from horovod_huffcomp.coders import zrh
    from horovod_huffcomp.quantizers import Quantized

    groups(k)
    rng = np.random.default_rng(k + 10 * raw)
    n, s, clog2 = 300_001, 1 if raw else 8, 12
    states = _sparse_states(rng, n, s, 0.01)
    states[5000:90_000] = 0  # chunks with no non-zero, a run across many chunks
    rawv = rng.integers(1, 1 << 31, n).astype(np.uint32) if raw else None
    q = Quantized(states, n, s, 1.0, "max", rawv)
    nnz = chunks.count_nonzero(states, n)
    pos = zrh.nonzero_positions(states, n, nnz)
    scanned = zrh.histograms(states, n, clog2, s)
    listed = zrh.histograms(states, n, clog2, s, pos)
    for a, b in zip(scanned, listed):
        assert np.array_equal(a, b)
    zc = zrh.plan_from(scanned, 31 if raw else 0)[0]
    want = zrh.encode(q, clog2, zc, nnz)
    got = zrh.encode(q, clog2, zc, nnz, pos=pos)
    assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])


def test_one_call_path_matches_the_planned_path():
    """``auto.encode``'s one numba call (sparse or single-group tensors) against histograms,
    ``auto.plan`` and the writers called one by one, along a bundle's chain of codebooks."""
    from horovod_huffcomp.coders import auto, symbol, zrh
    from horovod_huffcomp.quantizers import quantize

    rng = np.random.default_rng(4)
    tensors = [gradient_like(n, i) * (rng.random(n) < d)
               for i, (n, d) in enumerate([(256, 1), (3000, 0.05), (3000, 0.05), (70_000, 0.01),
                                           (70_000, 1), (500, 1), (200_000, 0.001), (10, 1)])]
    for coder in ("auto", "zrh"):
        for quant, s, norm in (("qsgd", 1, "l2"), ("qsgd", 16, "max"), ("topk", 1, "max")):
            prev = None
            for i, x in enumerate(tensors):
                q = quantize(x.astype(np.float32), quant, s, norm, 0, i, 0.05)
                nnz = chunks.count_nonzero(q.states, q.n)
                clog2 = chunks.auto_chunk_log2(q.n, nnz)
                raw_bits = 0 if q.raw is None else 31
                used, cb, code = auto.plan(coder, zrh.histograms(q.states, q.n, clog2, q.levels),
                                           q.levels, q.n, raw_bits, prev)
                rest = (zrh.encode(q, clog2, code, nnz) if used == "zrh"
                        else symbol.encode(q, clog2, code))
                got = auto.encode(q, coder, clog2, prev, nnz)
                assert got[:2] == (used, cb), (coder, quant, i)
                assert np.array_equal(got[2], rest[0]) and np.array_equal(got[3], rest[1])
                if used == "zrh":
                    zc = zrh.ZrhCode.from_packed(code.packed, q.levels)
                    assert zc.to_bytes() == code.to_bytes()
                prev = (used, cb)
