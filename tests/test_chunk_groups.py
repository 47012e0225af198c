"""Encoders write chunk groups (one per thread) into bounded room and move them together;
decoders decode chunk groups in parallel. The bytes and the verdicts must not depend on the
number of groups or on serial/parallel mode."""
import subprocess
import sys

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


_THREADING_PROBE = """
import sys, numpy as np, numba.np.ufunc.parallel as P
import horovod_huffcomp as hc
from horovod_huffcomp.coders import chunks
chunks.set_parallel(sys.argv[1] == "parallel")
rng = np.random.default_rng(0)
xs = [rng.standard_normal(n).astype(np.float32) for n in (300, 200_000, 70_000, 5)]
for coder in ("auto", "zrh", "huffman"):
    for kw in (dict(levels=127, norm="max"), dict(levels=1)):
        ys = hc.decode_many(hc.encode_many(xs, "qsgd", coder, **kw))
        assert [y.shape for y in ys] == [x.shape for x in xs]
print(P._is_initialized)
"""


def test_serial_mode_never_starts_the_threading_layer():
    """Horovod workers with a core each run the serial kernels (``set_parallel(False)``,
    ``exchange.share_cores_between_local_ranks``): coding and decoding a bundle with dense
    tensors of 2**16 elements and more must not start numba's threading layer, whose
    OpenMP team would raise torch's thread count. A compiled function that calls a parallel
    kernel starts it when loaded, so the one-call coders have serial twins
    (``chunks.with_kernels``). The parallel mode must start it (the probe can tell)."""
    for mode, started in (("serial", "False"), ("parallel", "True")):
        r = subprocess.run([sys.executable, "-c", _THREADING_PROBE, mode], capture_output=True,
                           text=True, timeout=1200)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.split()[-1] == started, (mode, r.stdout)


def _reference_zrh(states, n, clog2, s, zc, raw):
    """ZRH as the module docstring of ``coders/zrh.py`` and docs/format.md state it, in
    plain Python over every state: (histograms as ``zrh.histograms`` returns them,
    chunk bit counts, data bytes) for the code ``zc``."""
    from horovod_huffcomp.codebook import canonical_codes
    from horovod_huffcomp.coders import zrh

    direct, alphabet, kmax = chunks.RUN_DIRECT, chunks.RUN_ALPHABET, chunks.RICE_MAX_K
    rc = np.zeros((zrh.NCTX, alphabet), np.int64)
    lc = np.zeros((zrh.NLCTX, 2 * s), np.int64)
    extra = np.zeros(zrh.NCTX, np.int64)
    shifted = np.zeros((zrh.NCTX, kmax + 1), np.int64)
    rcodes = [canonical_codes(row) for row in zc.rl]
    lcodes = [canonical_codes(row) for row in zc.ll]

    def bucket(v):
        return 0 if abs(v) <= 1 else 1 if abs(v) <= 3 else 2 if abs(v) <= 7 else 3

    def run_symbol(r):  # runs 0..15, then half-octave buckets and their extra bits
        if r < direct:
            return r, 0, 0
        t = r - 8
        e = t.bit_length() - 1
        return direct + 2 * (e - 3) + ((t >> (e - 1)) & 1), e - 1, t & ((1 << (e - 1)) - 1)

    def bits_of(code, length):
        return format(int(code), f"0{length}b") if length else ""

    def run(out, r, hctx, cctx):
        sym, ne, ex = run_symbol(r)
        rc[hctx, sym] += 1
        if r >= direct:
            extra[hctx] += ne
            shifted[hctx] += [r >> j for j in range(kmax + 1)]
        if zc.mode == zrh.MODE_RICE:
            k = int(zc.ks[cctx])
            out.append("1" * (r >> k) + "0" + bits_of(r & ((1 << k) - 1), k))
        else:
            out.append(bits_of(rcodes[cctx][sym], zc.rl[cctx, sym]) + bits_of(ex, ne))

    chunk_bits, data = [], bytearray()
    for start in range(0, n, 1 << clog2):
        end = min(n, start + (1 << clog2))
        out, prev, hctx, hlctx, cctx, clctx = [], start, 0, 0, 0, 0
        for i in range(start, end):
            v = int(states[i])
            if v == 0:
                continue
            run(out, i - prev, hctx, cctx)
            sym = v + s if v < 0 else v + s - 1
            lc[hlctx, sym] += 1
            out.append(bits_of(lcodes[clctx][sym], zc.ll[clctx, sym]))
            if raw is not None:
                out.append(bits_of(raw[i] & 0x7FFFFFFF, 31))
            b = bucket(v)  # the contexts the histograms count, then the code's
            hctx, hlctx = b, b + 4 * (v < 0)
            cctx = b if zc.nctx > 1 else 0
            clctx = {1: 0, zrh.NCTX: b, zrh.NLCTX: b + 4 * (v < 0)}[zc.ll.shape[0]]
            prev = i + 1
        run(out, end - prev, hctx, cctx)
        text = "".join(out)
        chunk_bits.append(len(text))
        text += "0" * (-len(text) % 8)
        data += bytes(int(text[j:j + 8], 2) for j in range(0, len(text), 8))
    return (rc, lc, extra, shifted), np.array(chunk_bits), np.frombuffer(bytes(data), np.uint8)


@pytest.mark.parametrize("mode", ["huffman", "rice"])
@pytest.mark.parametrize("ctx", ["one", "magnitude", "sign"])
@pytest.mark.parametrize("raw", [False, True])
def test_zrh_kernels_against_a_plain_reference(groups, mode, ctx, raw):
    """ZRH's histograms and writer (non-zeros listed window by window, or read from the
    list of all non-zero positions; 1 or 3 chunk groups) against a plain Python coding of
    every state: dense and sparse stretches, runs across windows and chunks, a chunk
    without a non-zero, chunks ending on a long run and on exactly RUN_DIRECT zeros, runs
    long enough for Rice codes of 40 bits."""
    from horovod_huffcomp.codebook import code_from_counts
    from horovod_huffcomp.coders import zrh
    from horovod_huffcomp.quantizers import Quantized

    rng = np.random.default_rng(len(mode) * 7 + len(ctx) + raw)
    n, s, clog2 = 50_001, 1 if raw else 9, 14  # chunks of 4 windows
    states = np.zeros((n + 7) & ~7, np.int8)
    states[:n] = rng.integers(-s, s + 1, n)
    states[20_000:40_000] *= rng.random(20_000) < 0.01  # a sparse stretch
    for start in rng.integers(0, n - 300, 40):  # long zero runs
        states[start:start + rng.integers(16, 300)] = 0
    states[zrh.WINDOW - 30:zrh.WINDOW + 30] = 0  # a run across a window boundary
    states[(1 << clog2) - 40:(1 << clog2)] = 0  # a chunk ending on a long run
    states[2 * (1 << clog2) - 16:2 * (1 << clog2)] = 0  # ... on exactly RUN_DIRECT zeros
    states[3 * (1 << clog2):n] = 0  # the last chunk without a non-zero
    rawv = rng.integers(1, 1 << 32, n, dtype=np.uint64).astype(np.uint32) if raw else None
    q = Quantized(states, n, s, 1.0, "max", rawv)
    rows = {"one": 1, "magnitude": zrh.NCTX, "sign": zrh.NLCTX}[ctx]
    nctx = 1 if ctx == "one" else zrh.NCTX
    # skewed level counts: codewords up to 15 bits
    ll = np.stack([code_from_counts(1 + (rng.permutation(2 * s) ** 6))[0] for _ in range(rows)])
    assert s == 1 or ll.max() >= 12
    if mode == "huffman":
        rl = np.stack([code_from_counts(rng.integers(1, 50, chunks.RUN_ALPHABET))[0]
                       for _ in range(nctx)])
        zc = zrh.ZrhCode(zrh.MODE_HUFFMAN, np.zeros(nctx), rl, np.full(nctx, -1), ll,
                         np.full(rows, -1))
    else:  # large k: a Rice run of up to 40 bits and a 15-bit level after a long run
        zc = zrh.ZrhCode(zrh.MODE_RICE, rng.integers(0, 4, nctx) + [0, 21][len(ctx) % 2],
                         np.zeros((nctx, chunks.RUN_ALPHABET)), np.full(nctx, -1), ll,
                         np.full(rows, -1))
    hist, want_bits, want_data = _reference_zrh(states, n, clog2, s, zc, rawv)
    nnz = chunks.count_nonzero(states, n)
    pos = zrh.nonzero_positions(states, n, nnz)
    for k in (1, 3):
        groups(k)
        for listed in (None, pos):
            for a, b in zip(zrh.histograms(states, n, clog2, s, listed), hist):
                assert np.array_equal(a, b), (k, listed is None)
            got_bits, got_data = zrh.encode(q, clog2, zc, nnz, pos=listed)
            assert np.array_equal(got_bits, want_bits) and np.array_equal(got_data, want_data)
    out, outraw = np.zeros(n, np.int8), np.zeros(n if raw else 0, np.uint32)
    assert zrh.decode(want_data, want_bits, n, clog2, s, zc, out, outraw) == 0
    assert np.array_equal(out, states[:n])
    if raw:
        nz = states[:n] != 0
        assert np.array_equal(outraw[nz], rawv[nz] & 0x7FFFFFFF)


def _sparse_states(rng, n, s, density):
    states = np.zeros((n + 7) & ~7, np.int8)
    nz = rng.random(n) < density
    states[:n] = np.where(nz, rng.integers(-s, s + 1, n), 0)
    return states


@pytest.mark.parametrize("density", [0.0, 0.001, 0.0075, 0.0081, 0.05, 0.06, 0.065, 0.12,
                                     0.13, 0.3, 1.0])
def test_nonzero_count_and_positions(density):
    """The branch-free count (eight bytes a word) and the one-pass scan (count, and the
    positions while there are few enough: 64-state blocks skipped when zero, trailing zero
    bits within a word) against NumPy, around the sparse limits of 1, 2 and 16 threads
    (1/8, 1/16, 1/128) too."""
    from horovod_huffcomp.coders import zrh

    rng = np.random.default_rng(int(density * 10000))
    for n in (0, 1, 7, 8, 9, 63, 64, 65, 127, 129, 4097, 100_003):
        states = _sparse_states(rng, n, 127, density)
        states[: n // 3][states[: n // 3] != 0] = -128  # a byte with only its top bit set
        want = np.flatnonzero(states[:n])
        nnz = chunks.count_nonzero(states, n)
        assert nnz == want.size, n
        assert np.array_equal(zrh.nonzero_positions(states, n, nnz), want)
        for threads in (1, 2, 16):
            k, pos = zrh.scan_nonzeros(states, n, threads)
            assert k == nnz
            listed = n > 0 and 8 * threads * nnz < n
            assert np.array_equal(pos, want if listed else want[:0]), (n, threads)
    with pytest.raises(ValueError):
        zrh.nonzero_positions(states, n, nnz + 1)
    with pytest.raises(ValueError):
        zrh.nonzero_positions(states, n, max(nnz - 1, 0) if nnz else 1)


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("raw", [False, True])
def test_listed_zrh_kernels_match_windowed(groups, k, raw):
    """ZRH's histograms and writer read from the list of all non-zero positions give what
    listing them window by window gives, whatever the chunk groups."""
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
    windowed = zrh.histograms(states, n, clog2, s)
    listed = zrh.histograms(states, n, clog2, s, pos)
    for a, b in zip(windowed, listed):
        assert np.array_equal(a, b)
    zc = zrh.plan_from(windowed, 31 if raw else 0)[0]
    want = zrh.encode(q, clog2, zc, nnz)
    got = zrh.encode(q, clog2, zc, nnz, pos=pos)
    assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])


def test_one_call_path_matches_the_planned_path():
    """``auto.encode``'s one numba call (``auto._encode_tensor``: sparse, single-group and
    multi-group tensors) against histograms, ``auto.plan`` and the writers called one by
    one, along a bundle's chain of codebooks."""
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
                got = auto.encode(q, coder, clog2, prev, zrh.scan_nonzeros(q.states, q.n, 2))
                assert got[:2] == (used, cb), (coder, quant, i)
                assert got[:2] == auto.encode(q, coder, clog2, prev)[:2]
                assert np.array_equal(got[2], rest[0]) and np.array_equal(got[3], rest[1])
                if used == "zrh":
                    zc = zrh.ZrhCode.from_packed(code.packed, q.levels)
                    assert zc.to_bytes() == code.to_bytes()
                prev = (used, cb)


def test_batch_planner_matches_the_per_tensor_planner():
    """``auto.plan_many`` (the GPU backend's one call for a batch's codes) against
    ``auto.plan`` tensor by tensor along the same chain of previous sections: the same
    (coder, codebook) per tensor, reused codes included, and the writers' tables the GPU
    kernels read (Huffman lengths and codes; ZRH mode, contexts, Rice ks, run and level
    codes)."""
    from horovod_huffcomp.codebook import Code
    from horovod_huffcomp.coders import auto, symbol, zrh
    from horovod_huffcomp.quantizers import quantize

    rng = np.random.default_rng(7)
    tensors = [gradient_like(n, i) * (rng.random(n) < d)
               for i, (n, d) in enumerate([(3000, 0.05), (3000, 0.05), (256, 1), (70_000, 0.01),
                                           (70_000, 0.01), (10, 1), (200_000, 0.001), (1, 1),
                                           (0, 1), (500, 1), (500, 1)])]
    tensors += [np.full(64, 0.5), np.full(64, 0.5)]  # the same Huffman code twice
    seen = set()
    for coder in ("auto", "zrh"):
        for quant, s, norm in (("qsgd", 1, "l2"), ("qsgd", 16, "max"), ("terngrad", 1, "max")):
            qs = [quantize(x.astype(np.float32), quant, s, norm, 0, i, 0.05)
                  for i, x in enumerate(tensors)]
            hists, sizes = [], []
            for q in qs:
                clog2 = chunks.auto_chunk_log2(q.n, chunks.count_nonzero(q.states, q.n))
                hists.append(np.concatenate([a.ravel() for a in zrh.histograms(
                    q.states, q.n, clog2, q.levels)]))
                sizes.append(q.n)
            assert hists[0].size == auto.row_layout(s)[-1]
            for first_prev in (None, "zrh", "huffman"):
                prev = None
                if first_prev == "zrh":  # a code the first tensor may reuse
                    prev = auto.plan("zrh", zrh.histograms(qs[0].states, qs[0].n, 12, s), s,
                                     qs[0].n, 0)[:2]
                elif first_prev == "huffman":
                    cb = bytearray()
                    Code.from_counts(symbol.state_counts(qs[0].states, qs[0].n, s)).serialize(cb)
                    prev = ("huffman", bytes(cb))
                chosen, (lengths, codes, zpar, rtab, ltab) = auto.plan_many(
                    coder, np.array(hists), sizes, s, 0, prev)
                for t, q in enumerate(qs):
                    used, cb, code = auto.plan(coder, zrh.histograms(
                        q.states, q.n, chunks.auto_chunk_log2(
                            q.n, chunks.count_nonzero(q.states, q.n)), s), s, q.n, 0, prev)
                    assert chosen[t] == (used, cb), (coder, quant, first_prev, t)
                    seen.add((used, chosen[t][1] == (prev or (None, None))[1]))
                    if used == "huffman":
                        assert np.array_equal(lengths[t], code.lengths)
                        assert np.array_equal(codes[t], code.codes)
                    else:
                        rt, lt = zrh.packed_tables(code.mode, code.ks, code.rl, code.rs,
                                                   code.ll)
                        assert list(zpar[t, :2 + code.ks.size]) == (
                            [code.mode, code.ctxmode] + list(code.ks))
                        assert not zpar[t, 2 + code.ks.size:].any()
                        assert np.array_equal(rtab[t, :rt.shape[0]], rt)
                        assert np.array_equal(ltab[t, :lt.shape[0]], lt)
                        assert not rtab[t, rt.shape[0]:].any() and not ltab[t, lt.shape[0]:].any()
                    prev = (used, cb)
    # every kind of choice was made: huffman and zrh, each with and without reuse
    assert seen == {("huffman", False), ("huffman", True), ("zrh", False), ("zrh", True)}


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("arena", [True, False])
def test_runs_of_tensors_match_tensor_by_tensor(parallel, arena, request):
    """``cpu_backend.code_sections`` codes runs of tensors in one numba call
    (``auto.encode_run``): the same sections (coder, codebook, reuse flag, chunk size, chunk
    bits, data) as ``code_section`` of each in turn, for auto and zrh, chunk sizes auto and
    fixed, each first previous section (none, a reusable ZRH code, a Huffman code), states
    in one arena or apart, large dense tensors (chunk groups written in parallel) in the
    runs, runs broken by exact top-k (raw magnitudes)."""
    from horovod_huffcomp import cpu_backend
    from horovod_huffcomp.codebook import Code
    from horovod_huffcomp.coders import auto, symbol, zrh
    from horovod_huffcomp.payload import Section
    from horovod_huffcomp.quantizers import quantize

    from horovod_huffcomp.quantizers import arena_for

    chunks.set_parallel(parallel)
    request.addfinalizer(lambda: chunks.set_parallel(True))
    rng = np.random.default_rng(11)
    shapes = [(3000,), (3000,), (16, 16), (10,), (70_000,), (1,), (0,), (500,), (500,),
              (64,), (64,), (2048,), (65_535,), (200_000,), (7, 9), (70_000,)]
    tensors = [gradient_like(int(np.prod(sh)), i).reshape(sh) * (rng.random(sh) < d)
               for i, (sh, d) in enumerate(zip(shapes, [0.05, 0.05, 1, 1, 0.01, 1, 1, 1, 1,
                                                        1, 1, 0.002, 0.3, 0.001, 1, 1]))]
    tensors[9] = tensors[10] = np.full(64, 0.5)  # the same Huffman code twice
    seen = set()
    for coder in ("auto", "zrh"):
        for quant, s, norm in (("qsgd", 1, "l2"), ("qsgd", 16, "max"), ("terngrad", 1, "max"),
                               ("qsgd", 127, "max")):
            buf, at = arena_for(x.size for x in tensors)
            qs = [quantize(x.astype(np.float32).ravel(), quant, s, norm, 0, i,
                           arena=(buf, at[i]) if arena else None)
                  for i, x in enumerate(tensors)]
            dts = [np.dtype(np.float32)] * len(qs)
            shs = [x.shape for x in tensors]
            for first_prev in (None, "zrh", "huffman"):
                prev = None
                if first_prev == "zrh":
                    cb = auto.plan("zrh", zrh.histograms(qs[1].states, qs[1].n, 12, s), s,
                                   qs[1].n, 0)[1]
                    prev = Section("qsgd", "zrh", dts[0], (1,), s, 1.0, 12, codebook=cb)
                elif first_prev == "huffman":
                    cb = bytearray()
                    Code.from_counts(symbol.state_counts(qs[2].states, qs[2].n, s)).serialize(cb)
                    prev = Section("qsgd", "huffman", dts[0], (1,), s, 1.0, 12,
                                   codebook=bytes(cb))
                for clog2 in (None, 12):
                    got = cpu_backend.code_sections(qs, quant, dts, shs, coder, clog2, 0,
                                                    prev=prev)
                    p = prev
                    for t, q in enumerate(qs):
                        want = cpu_backend.code_section(q, quant, dts[t], shs[t], coder, clog2,
                                                        0, prev=p)
                        g = got[t]
                        assert (g.coder, g.codebook, g.reuse, g.chunk_log2, g.shape, g.data) == (
                            want.coder, want.codebook, want.reuse, want.chunk_log2, want.shape,
                            want.data), (coder, quant, first_prev, clog2, t)
                        assert np.array_equal(g.chunk_bits, want.chunk_bits)
                        seen.add((g.coder, g.reuse))
                        p = want
    assert seen == {("huffman", False), ("huffman", True), ("zrh", False), ("zrh", True)}
    # exact top-k has raw magnitudes: such tensors are coded one by one, around the runs
    qs = [quantize(x.astype(np.float32).ravel(), "topk", 0, "max", 0, i, 0.1)
          for i, x in enumerate(tensors[:4])]
    got = cpu_backend.code_sections(qs, "topk", [np.dtype(np.float32)] * 4,
                                    [x.shape for x in tensors[:4]], "auto", None, 0)
    p = None
    for t, q in enumerate(qs):
        p = cpu_backend.code_section(q, "topk", np.dtype(np.float32), tensors[t].shape, "auto",
                                     None, 0, prev=p)
        assert (got[t].codebook, got[t].data) == (p.codebook, p.data)


@pytest.mark.parametrize("s", [1, 8, 127])
def test_capped_planner_chooses_as_uncapped(s):
    """``auto.choose`` weighs full Huffman first and lets it cap the ZRH planner, which then
    skips candidates whose lower bounds reach it (``zrh._rows_bound``: entropy, codebook
    bits). The choice must be the one of weighing every candidate: the best ZRH code (no
    cap) against full Huffman, Huffman winning ties; a ZRH choice with the very same code.
    Small and large tensors, sparse to dense, each previous section kind."""
    from horovod_huffcomp.coders import auto, zrh
    from horovod_huffcomp.quantizers import quantize

    rng = np.random.default_rng(s)
    none = np.zeros(0, np.int64), np.zeros(0, np.uint8)
    kinds = set()
    last_packed = last_huffman = None  # the previous tensor's codes (from t = 1)
    for t in range(60):
        n = int(rng.choice([10, 256, 3000, 40_000]))
        if t % 3 == 0:
            q = quantize(gradient_like(n, seed=t), "qsgd", s, "max", t, 0)
            states = q.states
        else:
            states = _sparse_states(rng, n, s, float(rng.choice([0.002, 0.05, 0.4, 0.9])))
        rc, lc, extra, shifted = zrh.histograms(states, n, 12, s)
        prevs = [(auto.KIND_NONE,) + none]
        if t:  # the sections before: the last tensor's ZRH code and its full Huffman code
            prevs += [(auto.KIND_ZRH, last_packed, none[1]),
                      (auto.KIND_HUFFMAN, none[0], last_huffman)]
        for pk, pc, pcb in prevs:
            got = auto.choose(rc, lc, extra, shifted, n, s, 0, True, pk, pc, pcb)
            choice, packed, zbits, zcb = zrh.plan_packed(rc, lc, extra, shifted, 0, s,
                                                         pk == auto.KIND_ZRH, pc, -1)
            counts, hl, hs, hbits, hcb = zrh.state_code(lc, n, s)
            hcb_bits = 8 * hcb
            if pk == auto.KIND_HUFFMAN and np.array_equal(auto.code_bytes(hl, hs), pcb):
                hcb_bits = 0
            if zbits + zcb < hbits + hcb_bits:
                assert got[0] == auto.KIND_ZRH and got[1] == choice, t
                assert np.array_equal(got[2], packed), t
            else:
                assert got[0] == auto.KIND_HUFFMAN, t
            kinds.add((got[0], got[1] < 0))
        last_packed = zrh.plan_packed(rc, lc, extra, shifted, 0, s, False, none[0], -1)[1]
        last_huffman = auto.code_bytes(*zrh.state_code(lc, n, s)[1:3])
    assert (auto.KIND_ZRH, False) in kinds and (auto.KIND_HUFFMAN, False) in kinds


@pytest.mark.parametrize("s", [1, 8, 127])
def test_code_cost_of_histogram_rows(s):
    """``zrh._cost_of`` costs a code of fewer rows than the histograms (1 or 4 run rows of
    NCTX, 1, 4 or 8 level rows of NLCTX) row by row, histogram row c with the code's row
    c % rows, no merged copy made. It must equal the cost of the merged counts (as
    ``zrh._level_rows`` merges them), -1 exactly when a symbol present has no codeword:
    codes built from this tensor's merged counts, from another tensor's (symbols without
    codewords) and Rice codes of every k."""
    from horovod_huffcomp.codebook import code_from_counts
    from horovod_huffcomp.coders import zrh
    from horovod_huffcomp.coders.chunks import RICE_MAX_K

    def merged(h, rows):
        return np.stack([h[c::rows].sum(0) for c in range(rows)])

    def reference(counts, lengths, single):
        used = counts > 0
        if single >= 0:
            return -1 if used[np.arange(used.size) != single].any() else 0
        return -1 if (used & (lengths == 0)).any() else int((counts * lengths).sum())

    def codes_of(h):
        built = [code_from_counts(row) for row in h]
        return (np.stack([b[0] for b in built]), np.array([b[1] for b in built], np.int64))

    rng = np.random.default_rng(s)
    hists = []
    for t in range(24):
        n = int(rng.choice([10, 256, 3000, 40_000]))
        states = _sparse_states(rng, n, s, float(rng.choice([0.002, 0.05, 0.4, 0.9])))
        hists.append(zrh.histograms(states, n, 12, s))
    seen = set()
    for t, (rc, lc, extra, shifted) in enumerate(hists):
        rice = zrh.rice_costs(rc, shifted)
        for src in (t, (t + 1) % len(hists)):  # own counts, then another tensor's
            orc, olc = hists[src][0], hists[src][1]
            for nctx in (1, zrh.NCTX):
                for nl in (1, zrh.NCTX, zrh.NLCTX):
                    if nl < nctx:
                        continue
                    ll, ls = codes_of(merged(olc, nl))
                    rl, rs = codes_of(merged(orc, nctx))
                    lbits = [reference(row, ll[j], ls[j])
                             for j, row in enumerate(merged(lc, nl))]
                    rbits = [reference(row, rl[j], rs[j])
                             for j, row in enumerate(merged(rc, nctx))]
                    want = -1 if -1 in lbits + rbits else sum(lbits + rbits) + int(extra.sum())
                    got = zrh._cost_of(zrh.MODE_HUFFMAN, np.zeros(nctx, np.int64), rl, rs, ll,
                                       ls, rc, lc, extra, rice)
                    assert got == want, (s, t, src, nctx, nl)
                    ks = rng.integers(0, RICE_MAX_K + 1, nctx)
                    kbits = merged(rice, nctx)[np.arange(nctx), ks]
                    want = -1 if -1 in lbits else sum(lbits) + int(kbits.sum())
                    got = zrh._cost_of(zrh.MODE_RICE, ks, np.zeros_like(rl),
                                       np.full(nctx, -1, np.int64), ll, ls, rc, lc, extra, rice)
                    assert got == want, (s, t, src, nctx, nl, "rice")
                    seen.add(want < 0)
    assert seen == {True, False}


def test_gpu_tables_are_the_cpu_writers_codes():
    """``zrh.packed_tables`` (what the GPU kernels read) holds, row for row, the codes the
    CPU writer's tables hold (``zrh._writer_tables``): run codes and level codes as
    code << 5 | length, for Huffman and Rice run modes, 1 or NCTX run rows, 1 to NLCTX level
    rows over small and large alphabets."""
    from horovod_huffcomp.codebook import huffman_lengths
    from horovod_huffcomp.coders import zrh

    rng = np.random.default_rng(0)
    for t in range(100):
        nctx, nl = [(1, 1), (zrh.NCTX, zrh.NCTX), (zrh.NCTX, zrh.NLCTX)][t % 3]
        la = int(rng.choice([2, 8, 254]))
        rl = np.stack([huffman_lengths((rng.random(chunks.RUN_ALPHABET) < rng.random())
                                       * rng.integers(1, 1000, chunks.RUN_ALPHABET), 15)
                       for _ in range(nctx)])
        ll = np.stack([huffman_lengths((rng.random(la) < rng.random())
                                       * rng.integers(1, 1000, la), 15) for _ in range(nl)])
        ks, rs = rng.integers(0, 5, nctx), np.full(nctx, -1)
        for mode in (zrh.MODE_HUFFMAN, zrh.MODE_RICE):
            rt, lt = zrh.packed_tables(mode, ks, rl, rs, ll)
            rcd, _, lt_cpu, _, _, _ = zrh._writer_tables(mode, ks, rl, rs, ll)
            assert rt.dtype == lt.dtype == np.uint32 and lt.shape == ll.shape
            np.testing.assert_array_equal(rt >> 5, rcd)
            np.testing.assert_array_equal(rt & 31, rl)
            np.testing.assert_array_equal(lt.ravel(), lt_cpu)
