"""The shared-scale reduce-scatter exchange (summable.py), its N ranks simulated in one process
(summable.simulate: the collectives are array shuffles), so every rank count and failure path
is reachable without Horovod; tests/hvd/torch_checks.py runs it under horovodrun."""
import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import exchange, summable
from horovod_huffcomp.quantizers import scale_of


def simulate(xs_per_rank, mutate=None, **options):
    """One round on len(xs_per_rank) simulated ranks: (outputs, states)."""
    average = options.pop("average", True)
    states = [exchange.CompressorState(mode="reduce_scatter", average=average, **options)
              for _ in xs_per_rank]
    names = [f"t{i}" for i in range(len(xs_per_rank[0]))]
    return summable.simulate(states, xs_per_rank, names, mutate=mutate), states


def grads(n, rng, sizes=((33, 7), (5,), (1,), ())):
    return [[(rng.standard_normal(s) * (1 + r)).astype(np.float32) for s in sizes]
            for r in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("quantizer,levels,norm", [("qsgd", 8, "max"), ("qsgd", 4, "l2"),
                                                   ("terngrad", None, "l2")])
def test_exact_integer_sum_identical_on_every_rank(n, quantizer, levels, norm):
    rng = np.random.default_rng(n)
    xs = grads(n, rng)
    outs, states = simulate(xs, quantizer=quantizer, levels=levels, norm=norm)
    s = levels or 1
    for t in range(len(xs[0])):
        for r in range(1, n):
            assert np.array_equal(outs[0][t], outs[r][t])
        scale = max(scale_of(x[t].reshape(-1), quantizer, norm) for x in xs)
        total = 0
        for r in range(n):
            mine = states[r].last_dequantized[f"t{t}"].astype(np.float64) * s / scale
            assert np.abs(mine - np.rint(mine)).max() < 1e-4
            assert np.abs(np.rint(mine)).max() <= s
            total = total + np.rint(mine)
        assert np.array_equal(outs[0][t], total * scale / s / n)
        assert outs[0][t].shape == xs[0][t].shape
    st = states[0].stats.take()
    assert st["tensors"] == len(xs[0]) and st["raw_bytes"] == 4 * sum(x.size for x in xs[0])
    assert (st["bytes_sent"] > 0) == (n > 1) and (st["bytes_received"] > 0) == (n > 1)


def test_unbiased_mean():
    rng = np.random.default_rng(1)
    xs = [[rng.standard_normal(20000).astype(np.float32)] for _ in range(3)]
    outs, _ = simulate(xs, quantizer="qsgd", levels=16, norm="max")
    err = outs[0][0] - np.mean([x[0] for x in xs], axis=0)
    assert abs(err.mean()) < 3 * err.std() / np.sqrt(err.size)


def test_sum_zero_and_nonfinite_tensors():
    xs = [[np.full(3, 2.0 ** r, np.float32), np.zeros(4, np.float32),
           np.array([1.0, np.inf if r == 1 else 0.0], np.float32)] for r in range(3)]
    outs, _ = simulate(xs, quantizer="qsgd", levels=4, norm="max", average=False)
    assert np.array_equal(outs[0][0], [7.0, 7.0, 7.0])  # 1 + 2 + 4, on the grid of scale 4
    assert np.array_equal(outs[2][1], np.zeros(4))  # all-zero everywhere: no bits needed
    assert np.isnan(outs[1][2]).all()  # a worker's Inf: NaN everywhere, as AMP expects
    outs, states = simulate([[np.zeros(5, np.float32)]] * 2, quantizer="qsgd")
    assert np.array_equal(outs[1][0], np.zeros(5))
    assert states[0].stats.take()["bytes_sent"] == 0  # nothing to send: no collective ran


def test_error_feedback_residual():
    xs = [[np.linspace(-1, 1, 101, dtype=np.float32)] for _ in range(2)]
    _, states = simulate(xs, quantizer="terngrad", error_feedback=True)
    own = states[0].last_dequantized["t0"]
    assert np.allclose(states[0].memory.residual["t0"], xs[0][0] - own)


def test_corrupt_frame_reaches_every_rank_as_one_error():
    def flip(r, j, part):  # rank 1 corrupts only what it sends to rank 2
        if (r, j) == (1, 2):
            part = part.copy()
            part[-1] ^= 0xFF
        return part

    outs, _ = simulate(grads(3, np.random.default_rng(0)), mutate=flip, quantizer="qsgd",
                          levels=4)
    for o in outs:
        assert isinstance(o, hc.PayloadError)
        assert "rank 2: payload from rank 1: checksum mismatch" in str(o)


def test_wrong_scale_or_shape_is_rejected():
    rng = np.random.default_rng(0)
    xs = [[rng.standard_normal(64).astype(np.float32)] for _ in range(2)]
    other = exchange.CompressorState(mode="reduce_scatter", quantizer="qsgd", levels=4)
    liar = summable.ShardedRound(other, "g", ["t0"], [xs[1][0] * 3], 1, 2)
    bad_buf, bad_splits = liar.encode(liar.local_scales)  # its own scale, not the shared one

    def swap(r, j, part):
        if r == 1:
            off = sum(bad_splits[:j])
            return bad_buf[off: off + bad_splits[j]]
        return part

    outs, _ = simulate(xs, mutate=swap, quantizer="qsgd", levels=4)
    assert all(isinstance(o, hc.PayloadError) and "shared scale" in str(o) for o in outs)
    # a frame cut short: the splits no longer hold whole frames
    outs, _ = simulate(xs, mutate=lambda r, j, p: p[:-3] if r == 0 else p,
                          quantizer="qsgd", levels=4)
    assert all(isinstance(o, hc.PayloadError) and "rank 0" in str(o) for o in outs)


def test_limits():
    with pytest.raises(ValueError, match="levels \\* workers"):
        summable.ShardedRound(exchange.CompressorState(mode="reduce_scatter", levels=16),
                              "g", ["a"], [np.ones(3, np.float32)], 0, 8)
    with pytest.raises(ValueError, match="qsgd' or 'terngrad"):
        exchange.CompressorState(mode="reduce_scatter", quantizer="topk")
    with pytest.raises(ValueError, match="qsgd' or 'terngrad.*'fp4'"):  # codes do not add
        exchange.CompressorState(mode="reduce_scatter", quantizer="fp4")
    with pytest.raises(ValueError, match="mode"):
        exchange.CompressorState(mode="ring")
    assert summable.shard_bounds(5, 3) == [(0, 1), (1, 3), (3, 5)]
    assert summable.shard_bounds(1, 3) == [(0, 0), (0, 0), (0, 1)]


def test_reduced_shard_is_a_plain_payload_of_the_mean():
    """Rank j's reduced shard decodes with hc.decode to the mean of its elements."""
    rng = np.random.default_rng(3)
    xs = [[rng.standard_normal(1000).astype(np.float32)] for _ in range(2)]
    states = [exchange.CompressorState(mode="reduce_scatter", levels=8) for _ in range(2)]
    rounds = [summable.ShardedRound(states[r], "g", ["t"], xs[r], r, 2) for r in range(2)]
    shared = np.maximum(rounds[0].local_scales, rounds[1].local_scales)
    sent = [r.encode(shared) for r in rounds]
    recv = np.concatenate([sent[r][0][: sent[r][1][0]] for r in range(2)])
    frame = rounds[0].reduce(recv, [sent[0][1][0], sent[1][1][0]])
    (mean,) = hc.decode_many(frame[exchange.FRAME_HEADER:].tobytes())
    assert hc.inspect(frame[exchange.FRAME_HEADER:].tobytes())["sections"][0]["levels"] == 16
    outs = [r.finish(np.concatenate([frame, rounds[1].reduce(
        np.concatenate([sent[r][0][sent[r][1][0]:] for r in range(2)]),
        [sent[0][1][1], sent[1][1][1]])])) for r in rounds]
    assert np.array_equal(mean, outs[0][0][:500].astype(np.float32))


def test_reduce_scatter_state_warms_its_own_path_up(monkeypatch):
    """A reduce-scatter compressor runs one simulated round when made (so numba compiles
    the shards' and sums' codes before the first step), on a state of its own: the
    compressor's seeds and statistics are untouched. Levels too high for two ranks' sum
    warm up on one rank; unsupported options fail before any round."""
    rounds = []
    real = summable.simulate

    def counted(states, xs_per_rank, names, key="sim", mutate=None):
        outs = real(states, xs_per_rank, names, key, mutate)
        rounds.append((len(states), [type(o).__name__ for o in outs]))
        return outs

    monkeypatch.setattr(summable, "simulate", counted)
    st = exchange.CompressorState("qsgd", levels=8, norm="max", mode="reduce_scatter")
    assert rounds == [(2, ["list", "list"])]
    assert st.stats.take()["bytes_sent"] == 0 and st._steps == {}
    assert st.next_seed("t", 0) == exchange.step_seed(0, 0, "t", 0)
    exchange.CompressorState("qsgd", levels=100, norm="max", mode="reduce_scatter")
    assert rounds[-1] == (1, ["list"])
    exchange.CompressorState("qsgd", levels=8, norm="max", mode="allgather")
    assert len(rounds) == 2
    with pytest.raises(ValueError, match="reduce_scatter"):
        exchange.CompressorState("topk", mode="reduce_scatter")
    assert len(rounds) == 2
