"""Property tests (hypothesis) on the lossless coders and the codebook builder."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from horovod_huffcomp import coders, payload
from horovod_huffcomp.codebook import Code, huffman_lengths
from horovod_huffcomp.cpu_backend import decode_states
from horovod_huffcomp.payload import MAX_CODE_LEN
from horovod_huffcomp.quantizers import Quantized
from conftest import CODERS


@st.composite
def state_arrays(draw):
    s = draw(st.sampled_from([1, 2, 7, 64, 127]))
    n = draw(st.integers(0, 3000))
    p0 = draw(st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    v = rng.integers(-s, s + 1, n)
    v[rng.random(n) < p0] = 0
    if n and draw(st.booleans()):  # long structured runs
        a = int(rng.integers(0, n))
        v[a : a + int(rng.integers(0, n))] = int(rng.integers(-s, s + 1))
    states = np.zeros((n + 7) & ~7, np.int8)
    states[:n] = v
    raw = None
    if s == 1 and draw(st.booleans()):
        raw = np.where(states[:n] != 0, rng.integers(0, 0x7F800000, n), 0).astype(np.uint32)
    return Quantized(states, n, s, 1.0, "max", raw)


@settings(max_examples=150, deadline=None)
@given(q=state_arrays(), coder=st.sampled_from(CODERS), clog2=st.integers(8, 14),
       gap=st.booleans())
def test_coders_are_lossless(q, coder, clog2, gap):
    gap = gap and coder.startswith("elias")
    used, cb, bits, data = coders.encode(q, coder, clog2, seed=0, gap_layout=gap)
    sec = payload.Section(quantizer="topk" if q.raw is not None else "qsgd", coder=used,
                          dtype=np.float32, shape=(q.n,), levels=q.levels, scale=1.0,
                          chunk_log2=clog2, norm="max", raw=q.raw is not None, gap_layout=gap,
                          codebook=cb, chunk_bits=bits, data=data.tobytes())
    _, (parsed,) = payload.unpack(payload.pack([sec], bundle=False))
    states, raw = decode_states(parsed)
    np.testing.assert_array_equal(states, q.states[: q.n])
    if q.raw is not None:
        np.testing.assert_array_equal(raw[states != 0], q.raw[: q.n][states != 0])
    if coder == "auto":  # auto is never worse than its candidates (exact bits, before padding)
        for other in ("huffman", "zrh"):
            o = coders.encode(q, other, clog2, seed=0)
            assert 8 * len(cb) + bits.sum() <= 8 * len(o[1]) + o[2].sum()


@settings(max_examples=200, deadline=None)
@given(counts=hnp.arrays(np.int64, st.integers(1, 300), elements=st.integers(0, 10**9)))
def test_huffman_lengths_are_complete_and_limited(counts):
    lengths = huffman_lengths(counts, MAX_CODE_LEN)
    used = counts > 0
    assert (lengths[~used] == 0).all()
    if used.sum() >= 2:
        assert lengths[used].min() >= 1 and lengths.max() <= MAX_CODE_LEN
        assert np.sum(2.0 ** -lengths[used]) == 1.0  # complete prefix code
        # a strictly more frequent symbol never gets a longer code
        c, ln = counts[used], lengths[used]
        assert not ((c[:, None] > c[None, :]) & (ln[:, None] > ln[None, :])).any()


def test_huffman_is_optimal_when_unconstrained():
    counts = np.array([45, 13, 12, 16, 9, 5], np.int64)  # the textbook example
    lengths = huffman_lengths(counts, MAX_CODE_LEN)
    assert int(np.dot(counts, lengths)) == 224


def test_length_limit_on_fibonacci_counts():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman_lengths(np.array(fib, np.int64), MAX_CODE_LEN)
    assert lengths.max() == MAX_CODE_LEN and np.sum(2.0 ** -lengths) == 1.0


@settings(max_examples=100, deadline=None)
@given(counts=hnp.arrays(np.int64, st.integers(1, 256), elements=st.integers(0, 1000)))
def test_codebook_serialisation_round_trips(counts):
    code = Code.from_counts(counts)
    out = bytearray()
    code.serialize(out)
    back = Code.parse(payload.Reader(bytes(out)), counts.size, "code")
    np.testing.assert_array_equal(back.lengths, code.lengths)
    assert back.single == code.single
