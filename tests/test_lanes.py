"""``coders.lanes``: a bundle's run of tensors coded in phases, each cut into lanes of equal
estimated cost over all the tensors' chunks. The cut must cover every chunk once, in order,
each lane ending at the chunk boundary nearest its share; and the results must be those of
the tensor-after-tensor path (``auto._encode_run``) for any number of lanes."""
import numpy as np
import pytest

from horovod_huffcomp.coders import auto, lanes
from horovod_huffcomp.coders.chunks import auto_chunk_log2
from horovod_huffcomp.quantizers import arena_for, quantize

from conftest import gradient_like


def _cost(t, c, sizes, clog2s, cnz, cnz_at, w_elem, w_nz):
    return w_elem[t] * min(c << clog2s[t], sizes[t]) + w_nz[t] * cnz[cnz_at[t] + c]


@pytest.mark.parametrize("lanes_", [1, 2, 3, 5, 16])
def test_cut_covers_every_chunk_in_order_with_equal_shares(lanes_):
    rng = np.random.default_rng(lanes_)
    for trial in range(40):
        count = int(rng.integers(1, 12))
        sizes = rng.integers(0, 50_000, count) * (rng.random(count) < 0.8)
        clog2s = rng.integers(8, 14, count)
        cnz_at = np.zeros(count + 1, np.int64)
        parts = []
        for t in range(count):
            m = (int(sizes[t]) + (1 << int(clog2s[t])) - 1) >> int(clog2s[t])
            per = rng.integers(0, 1 << int(clog2s[t]), m)
            parts.append(np.concatenate([[0], np.cumsum(np.minimum(per, 1 << int(clog2s[t])))]))
            cnz_at[t + 1] = cnz_at[t] + m + 1
        cnz = np.concatenate(parts).astype(np.int64)
        w_elem = rng.integers(1, 12, count)
        w_nz = rng.integers(0, 40, count)
        pt, pc0, pc1, lane_at = lanes._cut(sizes.astype(np.int64), clog2s.astype(np.int64),
                                           cnz, cnz_at, w_elem.astype(np.int64),
                                           w_nz.astype(np.int64), lanes_)
        # every chunk of every tensor once, in order, no empty span
        want = [(t, c) for t in range(count) for c in range(cnz_at[t + 1] - cnz_at[t] - 1)]
        got = [(t, c) for t, a, b in zip(pt, pc0, pc1) for c in range(a, b)]
        assert got == want
        assert (pc1 > pc0).all()
        assert lane_at[0] == 0 and lane_at[-1] == pt.size and (np.diff(lane_at) >= 0).all()
        # each lane's cost is its share, give or take the costliest chunk
        total = sum(_cost(t, cnz_at[t + 1] - cnz_at[t] - 1, sizes, clog2s, cnz, cnz_at,
                          w_elem, w_nz) for t in range(count))
        chunk_max = max([_cost(t, c + 1, sizes, clog2s, cnz, cnz_at, w_elem, w_nz)
                         - _cost(t, c, sizes, clog2s, cnz, cnz_at, w_elem, w_nz)
                         for t, c in want] or [0])
        # every chunk boundary's cost so far, in order
        bounds = [0]
        for t in range(count):
            for c in range(1, cnz_at[t + 1] - cnz_at[t]):
                bounds.append(bounds[-1] - _cost(t, c - 1, sizes, clog2s, cnz, cnz_at,
                                                 w_elem, w_nz)
                              + _cost(t, c, sizes, clog2s, cnz, cnz_at, w_elem, w_nz))
        done = 0
        for j in range(lanes_):
            cost = sum(_cost(pt[p], pc1[p], sizes, clog2s, cnz, cnz_at, w_elem, w_nz)
                       - _cost(pt[p], pc0[p], sizes, clog2s, cnz, cnz_at, w_elem, w_nz)
                       for p in range(lane_at[j], lane_at[j + 1]))
            done += cost
            miss = abs(done * lanes_ - total * (j + 1))
            assert miss <= lanes_ * chunk_max, (trial, j)
            # and no chunk boundary is nearer the lane's share
            assert miss <= min(abs(b * lanes_ - total * (j + 1)) for b in bounds), (trial, j)


@pytest.mark.parametrize("lanes_", [1, 2, 3, 8])
def test_scan_gives_each_tensors_nonzeros_positions_and_chunk_counts(lanes_):
    """Phase 1 (blocks of 4096 states, lanes of equal blocks) against ``zrh.scan_nonzeros``
    of each tensor alone and NumPy's per-chunk counts, densities around the listing limit."""
    from horovod_huffcomp.coders import zrh

    rng = np.random.default_rng(10 + lanes_)
    kinds = set()
    for trial in range(30):
        count = int(rng.integers(1, 9))
        sizes = rng.integers(0, 40_000, count) * (rng.random(count) < 0.9)
        sizes[rng.random(count) < 0.3] //= 1000
        if trial % 3 == 0:
            sizes[:] = np.maximum(sizes, 60_000) * (sizes > 0)
        limit_share = 1 / (8 * lanes_)
        dens = rng.choice([0, limit_share * 0.9, limit_share * 1.1, 0.01, 0.5, 1.0], count)
        starts = np.zeros(count, np.int64)
        np.cumsum((sizes[:-1] + 7) // 8 * 8, out=starts[1:])
        states = np.zeros(int(starts[-1] + (sizes[-1] + 7) // 8 * 8) + 8, np.int8)
        for t in range(count):
            n = int(sizes[t])
            states[starts[t]: starts[t] + n] = (rng.integers(1, 128, n) * rng.choice([-1, 1], n)
                                                * (rng.random(n) < dens[t]))
        if trial % 3 == 0:  # sparse, but one block of 4096 states over 1/8 non-zero
            t = int(rng.integers(count))
            at = int(starts[t]) + int(rng.integers(0, max(int(sizes[t]) - 700, 0) + 1))
            states[at: at + min(700, int(sizes[t]))] = 5
            kinds.add("clump")
        clog2 = int(rng.choice([-1, 8, 11, 12, 13, 15]))
        nnzs, listed, positions, pos_at, clog2s, cnz, cnz_at = lanes._scan_run(
            states, starts, sizes.astype(np.int64), clog2, lanes_)
        for t in range(count):
            n = int(sizes[t])
            st = states[starts[t]: starts[t] + (n + 7) // 8 * 8]
            nnz, pos = zrh.scan_nonzeros(st, n, lanes_)
            assert nnzs[t] == nnz and listed[t] == (pos.shape[0] == nnz), (trial, t)
            assert (positions[pos_at[t]: pos_at[t + 1]] == pos).all()
            assert clog2s[t] == (auto_chunk_log2(n, nnz) if clog2 < 0 else clog2)
            size = 1 << int(clog2s[t])
            per = [np.count_nonzero(st[c: min(n, c + size)]) for c in range(0, n, size)]
            want = np.concatenate([[0], np.cumsum(per)])
            assert (cnz[cnz_at[t]: cnz_at[t + 1]] == want).all(), (trial, t)
            kinds.add((bool(listed[t]), nnz > 0))
    assert kinds == {(True, True), (True, False), (False, True), "clump"}


def _bundle(seed):
    rng = np.random.default_rng(seed)
    sizes = [3000, 256, 70_000, 10, 1, 0, 2048, 200_001, 64, 64, 65_536, 9000]
    dens = [0.05, 1, 0.3, 1, 1, 1, 0.002, 0.7, 1, 1, 0.9, 0.01]
    xs = [gradient_like(n, seed + i) * (rng.random(n) < d)
          for i, (n, d) in enumerate(zip(sizes, dens))]
    xs[9] = xs[8].copy()  # the same code twice: reused
    return xs


@pytest.mark.parametrize("lanes_", [1, 2, 3, 7])
def test_lanes_give_the_results_of_tensor_after_tensor(lanes_):
    from horovod_huffcomp.coders.chunks import set_parallel

    set_parallel(True)
    xs = _bundle(lanes_)
    for quant, s, norm in (("qsgd", 127, "max"), ("qsgd", 1, "l2"), ("terngrad", 1, "max"),
                           ("qsgd", 8, "max")):
        buf, at = arena_for(x.size for x in xs)
        qs = [quantize(x.astype(np.float32), quant, s, norm, 0, i, arena=(buf, at[i]))
              for i, x in enumerate(xs)]
        s_ = qs[0].levels
        starts = np.array([q.at for q in qs], np.int64)
        sizes = np.array([q.n for q in qs], np.int64)
        # previous sections: none, a ZRH code (reused by the first tensors), a Huffman code
        zrh_prev = auto._encode_run.serial(buf, starts[:1], sizes[:1], -1, s_, False, 1,
                                           *auto._prev_args(None, s_))[-1]
        for coder_auto in (True, False):
            for prev in ((auto.KIND_NONE, auto._NONE, auto._NO_CODEBOOK),
                         (auto.KIND_ZRH, zrh_prev, auto._NO_CODEBOOK),
                         (auto.KIND_HUFFMAN, auto._NONE,
                          auto.code_bytes(np.full(2 * s_ + 1, 8, np.int64), -1))):
                for clog2 in (-1, 9, 14):
                    a = auto._encode_run.serial(buf, starts, sizes, clog2, s_, coder_auto, 1,
                                                *prev)
                    b = lanes.encode_run(buf, starts, sizes, clog2, s_, coder_auto, lanes_,
                                         *prev)
                    kinds, reused, clog2s, cbs, cb_at, bits, bits_at, data, data_at, last = a
                    assert (b[0] == kinds).all() and (b[1] == reused).all()
                    assert (b[2] == clog2s).all() and (b[4] == cb_at).all()
                    assert (b[3][: cb_at[-1]] == cbs[: cb_at[-1]]).all()
                    assert (b[6] == bits_at).all()
                    assert (b[5][: bits_at[-1]] == bits[: bits_at[-1]]).all()
                    for t in range(len(qs)):
                        assert (b[7][b[8][t]: b[9][t]] == data[data_at[t]: data_at[t + 1]]).all()
                    assert b[10].shape == last.shape and (b[10] == last).all()
                    if prev[0] == auto.KIND_ZRH and coder_auto is False and clog2 == -1:
                        assert reused.any()
