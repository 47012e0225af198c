"""The array form of codebooks that the numba planners use (``codebook.code_from_counts``,
``code_cost``, ``code_nbytes``, ``put_code``) must agree exactly with :class:`Code` (its
construction and serialisation) and with a plain NumPy cost: the ZRH planner weighs
candidate codes by these numbers, then serialises the winner with them."""
import numpy as np
import pytest

from horovod_huffcomp.codebook import (Code, code_cost, code_from_counts, code_nbytes,
                                       put_code)


def _counts(rng, t):
    a = int(rng.choice([2, 3, 8, 16, 70, 64, 255]))
    if t % 7 == 0:  # one symbol
        c = np.zeros(a, np.int64)
        c[rng.integers(a)] = 5
    elif t % 11 == 0:  # flat
        c = np.ones(a, np.int64)
    elif t % 13 == 0:  # empty
        c = np.zeros(a, np.int64)
    elif t % 17 == 0:  # Fibonacci counts: optimal lengths exceed the limit
        c = np.zeros(a, np.int64)
        f = [1, 1]
        while len(f) < min(a, 60):
            f.append(f[-1] + f[-2])
        c[: len(f)] = f[:a]
    else:
        c = (rng.random(a) < rng.random()) * rng.integers(1, 10 ** int(rng.integers(1, 7)), a)
    return c.astype(np.int64)


@pytest.mark.parametrize("seed", range(4))
def test_array_codes_match_code_objects(seed):
    rng = np.random.default_rng(seed)
    for t in range(500):
        c = _counts(rng, t)
        code = Code.from_counts(c)
        lengths, single = code_from_counts(c)
        assert single == code.single and np.array_equal(lengths, code.lengths)
        ref = bytearray()
        code.serialize(ref)
        assert code_nbytes(lengths, single) == len(ref)
        out = np.zeros(len(ref) + 16, np.uint8)
        assert bytes(out[: put_code(out, 0, lengths, single)]) == bytes(ref)
        other = c * (rng.random(c.size) < 0.5) + (rng.random(c.size) < 0.05)
        used = other > 0
        if code.single >= 0:  # a one-symbol code costs nothing and covers only its symbol
            covered = not used.any() or (used.sum() == 1 and bool(used[code.single]))
        else:
            covered = bool((code.lengths[used] > 0).all())
        want = int(np.dot(other, code.lengths)) if covered else -1
        assert code_cost(other.astype(np.int64), lengths, single) == want


def test_huffman_lengths_same_with_either_sort():
    """Counts too large to pack with their symbol take the stable-sort path: scaling every
    count by 2^40 changes no comparison of the two-queue method, so the lengths agree."""
    from horovod_huffcomp.codebook import huffman_lengths

    rng = np.random.default_rng(11)
    for alphabet in (17, 254, 5000):
        counts = rng.geometric(0.05, alphabet).astype(np.int64) * (rng.random(alphabet) < 0.8)
        counts[rng.integers(alphabet)] += 1  # at least one used symbol
        got = huffman_lengths(counts, 15)
        shift = 62 - int(counts.sum()).bit_length()  # node weights still fit in int64
        big = counts << shift
        assert int(big.max()).bit_length() + alphabet.bit_length() > 63  # the fallback runs
        np.testing.assert_array_equal(huffman_lengths(big, 15), got)
        assert (got > 0).sum() == ((counts > 0).sum() if (counts > 0).sum() > 1 else 0)
