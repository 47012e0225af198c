"""The array form of codebooks that the numba planners use (``codebook.code_from_counts``,
``code_cost``, ``code_nbytes``, ``code_sized_into``, ``put_code``, ``code_rows_bytes``) must
agree exactly with :class:`Code` (its
construction and serialisation) and with a plain NumPy cost: the ZRH planner weighs
candidate codes by these numbers, then serialises the winner with them."""
import numpy as np
import pytest

from horovod_huffcomp.codebook import (HUFFMAN_WORK, Code, code_cost, code_from_counts,
                                       code_nbytes, code_rows_bytes, code_sized_into, put_code)


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


@pytest.mark.parametrize("alphabet", [2, 33, 232])
def test_code_rows_serialise_as_code_objects(alphabet):
    """The GPU encode's codebooks (code lengths the device built, a row per tensor) in one
    call: each row's bytes are its Code's serialisation (one-symbol, flat, empty, codes at
    the length limit among them)."""
    rng = np.random.default_rng(alphabet)
    codes = []
    for t in range(300):
        c = _counts(rng, t)[:alphabet]
        codes.append(Code.from_counts(np.pad(c, (0, alphabet - c.size))))
    want = []
    for code in codes:
        want.append(bytearray())
        code.serialize(want[-1])
    lengths = np.array([code.lengths for code in codes], np.uint8)  # as the device gives them
    singles = np.array([code.single for code in codes], np.int32)
    assert code_rows_bytes(lengths, singles) == [bytes(w) for w in want]
    assert {w[0] for w in want} >= {0, 1}  # empty and one-symbol codes among them
    assert max(code.lengths.max() for code in codes) >= min(alphabet - 1, 15)
    assert code_rows_bytes(np.zeros((0, alphabet), np.uint8), np.zeros(0, np.int32)) == []


@pytest.mark.parametrize("seed", range(4))
def test_array_codes_match_code_objects(seed):
    rng = np.random.default_rng(seed)
    work = np.full(HUFFMAN_WORK * 255, 12345, np.int64)  # reused dirty, as the planner does
    for t in range(500):
        c = _counts(rng, t)
        code = Code.from_counts(c)
        lengths, single = code_from_counts(c)
        assert single == code.single and np.array_equal(lengths, code.lengths)
        ref = bytearray()
        code.serialize(ref)
        assert code_nbytes(lengths, single) == len(ref)
        sized = np.full(c.size, 7, np.int64)
        # the planner's one call: the same code, its cost and its serialised size
        assert code_sized_into(c, sized, work) == (code.single, int(np.dot(c, lengths)),
                                                   len(ref)), t
        assert np.array_equal(sized, lengths)
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


def _reference_lengths(counts, max_len):
    """The documented construction (codebook module docstring) in plain Python: symbols
    sorted by (count, symbol), two-queue Huffman (a leaf first on ties), JPEG Annex K.3
    limiting, lengths handed back by (count desc, symbol asc)."""
    syms = sorted((int(c), i) for i, c in enumerate(counts) if c > 0)
    lengths = [0] * len(counts)
    if len(syms) < 2:
        return lengths
    leaves = [c for c, _ in syms]
    used, internal, parent = len(syms), [], {}
    li = ii = 0
    for node in range(used - 1):
        total = 0
        for _ in range(2):
            if li < used and (ii >= node or leaves[li] <= internal[ii]):
                pick, total, li = li, total + leaves[li], li + 1
            else:
                pick, total, ii = used + ii, total + internal[ii], ii + 1
            parent[pick] = used + node
        internal.append(total)
    depth = {2 * used - 2: 0}
    for node in range(2 * used - 3, -1, -1):
        depth[node] = depth[parent[node]] + 1
    maxd = max(depth[i] for i in range(used))
    if maxd <= max_len:
        for i, (_, sym) in enumerate(syms):
            lengths[sym] = depth[i]
        return lengths
    bl = [0] * (maxd + 2)
    for i in range(used):
        bl[depth[i]] += 1
    for i in range(maxd, max_len, -1):
        while bl[i] > 0:
            j = i - 2
            while j > 1 and bl[j] == 0:
                j -= 1
            bl[i] -= 2
            bl[i - 1] += 1
            bl[j + 1] += 2
            bl[j] -= 1
    pos = used - 1
    for ln in range(1, max_len + 1):
        for _ in range(bl[ln]):
            lengths[syms[pos][1]] = ln
            pos -= 1
    return lengths


def test_huffman_lengths_match_the_documented_construction():
    """Both sorts (counting sort for small counts, radix sort a byte of the count a pass
    for larger ones, up to 8 passes) order symbols by (count, symbol) exactly: many ties,
    counts from 1 to 2^60, over the length limit or not."""
    from horovod_huffcomp.codebook import huffman_lengths

    rng = np.random.default_rng(5)
    for t in range(300):
        alphabet = int(rng.choice([3, 17, 70, 254, 1000]))
        top = 1 << int(rng.integers(1, 61))
        counts = rng.integers(1, min(top, 1 << 62) + 1, alphabet, dtype=np.int64)
        if t % 3 == 0:  # ties: few distinct counts
            counts = rng.choice(counts[:4], alphabet)
        counts *= rng.random(alphabet) < 0.7
        counts = np.minimum(counts, (1 << 62) // alphabet)  # node weights fit in int64
        got = huffman_lengths(counts.astype(np.int64), 15)
        assert got.tolist() == _reference_lengths(counts, 15), t


def test_huffman_lengths_same_with_either_sort():
    """Counts too large for the counting sort take the radix sort (here six passes or
    more): scaling every count by 2^k changes no comparison of the two-queue method, so
    the lengths agree."""
    from horovod_huffcomp.codebook import huffman_lengths

    rng = np.random.default_rng(11)
    for alphabet in (17, 254, 5000):
        counts = rng.geometric(0.05, alphabet).astype(np.int64) * (rng.random(alphabet) < 0.8)
        counts[rng.integers(alphabet)] += 1  # at least one used symbol
        got = huffman_lengths(counts, 15)
        shift = 62 - int(counts.sum()).bit_length()  # node weights still fit in int64
        big = counts << shift
        assert int(big.max()).bit_length() > 40  # six radix passes or more
        np.testing.assert_array_equal(huffman_lengths(big, 15), got)
        assert (got > 0).sum() == ((counts > 0).sum() if (counts > 0).sum() > 1 else 0)


def test_canonical_codes_follow_the_definition():
    """Canonical codes (DEFLATE's): codewords of one length are consecutive in symbol
    order, each length's first follows the last of the length before, shifted; 0 for
    unused symbols. ``canonical_codes_work`` reuses a dirty work array (as the planner
    does), ``packed_codes_work`` packs code << 5 | length into the writers' uint32 rows."""
    from horovod_huffcomp.codebook import (CANONICAL_WORK, canonical_code_rows,
                                           canonical_codes, canonical_codes_work,
                                           huffman_lengths, packed_codes_work)

    rng = np.random.default_rng(3)
    work = np.full(CANONICAL_WORK, -7, np.int64)
    for t in range(200):
        c = _counts(rng, t)
        ln = huffman_lengths(c, 15)
        want, code, prev_len = np.zeros_like(ln), 0, 0
        for sym in sorted(np.flatnonzero(ln).tolist(), key=lambda i: (ln[i], i)):
            code <<= int(ln[sym]) - prev_len
            want[sym], prev_len = code, int(ln[sym])
            code += 1
        np.testing.assert_array_equal(canonical_codes(ln), want)
        got = np.full(ln.size, 99, np.int64)
        canonical_codes_work(ln, got, work)
        np.testing.assert_array_equal(got, want)
        packed = np.full(ln.size, 7, np.uint32)
        packed_codes_work(ln, packed, work)
        np.testing.assert_array_equal(packed, (want << 5) | ln)
        rows = np.stack([ln, ln[::-1]])
        np.testing.assert_array_equal(canonical_code_rows(rows),
                                      np.stack([want, canonical_codes(ln[::-1].copy())]))


def test_decode_tables_read_every_codeword_in_one_or_two_levels():
    """``decode_table`` at every first-lookup width: each codeword, followed by any bits,
    reads back as its symbol and length through ``read_sym`` (the linked form, and the
    plain one and ``get_sym`` where the table has one level); bits that start no codeword
    of an incomplete code read as symbol -1, length 0."""
    from horovod_huffcomp.codebook import (PRIMARY_BITS, canonical_codes, decode_table,
                                           get_sym, read_sym, table_primary)

    rng = np.random.default_rng(23)
    cases = [_counts(rng, t) for t in range(60)]
    cases += [np.array([1 << (40 - k) for k in range(40)], np.int64)]  # 15-bit codewords
    cases += [rng.geometric(0.02, 255).astype(np.int64)]
    longest = 0
    for counts in cases:
        if counts.sum() == 0:
            continue
        code = Code.from_counts(counts)
        ln, cd = code.lengths, code.codes
        tbits = int(ln.max())
        longest = max(longest, tbits)
        for primary in sorted({tbits, PRIMARY_BITS, 6, 1}):
            t, width = decode_table(ln, cd, code.single, primary)
            assert width == (0 if code.single >= 0 else tbits)
            if code.single >= 0:
                assert t.tolist() == [code.single << 5]
                continue
            if primary < tbits:  # two levels: smaller than the one-level table
                assert t.size < 1 << tbits or primary == 1
            for sym in np.flatnonzero(ln):
                n = int(ln[sym])
                for _ in range(3):
                    bb = np.uint64((int(cd[sym]) << (64 - n))
                                   | int(rng.integers(0, 1 << (64 - n), dtype=np.uint64)))
                    want = (sym, n)
                    assert read_sym(bb, t, width, primary, True) == want
                    if primary >= tbits:
                        assert read_sym(bb, t, width, primary, False) == want
                        buf = np.frombuffer(int(bb).to_bytes(8, "big") + bytes(8), np.uint8)
                        assert get_sym(buf, 0, t, width) == want
    assert longest == 15
    # an incomplete code: lengths 1 and 3 (0, 100): 101 and 11 start no codeword
    ln = np.array([1, 3], np.int64)
    for primary in (1, 2, 3):
        t, width = decode_table(ln, canonical_codes(ln), -1, primary)
        for top3, want in ((0b000, (0, 1)), (0b011, (0, 1)), (0b100, (1, 3)),
                           (0b101, (-1, 0)), (0b110, (-1, 0)), (0b111, (-1, 0))):
            assert read_sym(np.uint64(top3 << 61), t, width, primary, True) == want
    assert table_primary(8, 15) == PRIMARY_BITS and table_primary(4, 12) == 12


def test_wide_codes_decode_through_two_level_tables():
    """max-norm s = 127 states of a tensor whose scale changes every 64 entries (the
    previous level's context pays, as in real gradients): ZRH's 4 level codes reach 15
    bits, so its decoder takes two-level tables (the linked loop), and the states come back
    exact; so do the one-level tables of s = 4 and the full-Huffman code's one table."""
    import horovod_huffcomp as hc
    from horovod_huffcomp.coders import parse_codebook
    from horovod_huffcomp.cpu_backend import decode_states
    from horovod_huffcomp.payload import Reader, unpack
    from horovod_huffcomp.quantizers import quantize

    rng = np.random.default_rng(4)
    n = 1 << 18
    x = (rng.standard_normal(n) * np.repeat(10.0 ** rng.uniform(-3, 0, n // 64), 64))
    x = x.astype(np.float32)
    for levels, coder, two_level in ((127, "huffman", False), (127, "zrh", True),
                                     (4, "zrh", False)):
        blob = hc.encode(x, quantizer="qsgd", coder=coder, levels=levels, norm="max", seed=1)
        _, (sec,) = unpack(blob)
        code = parse_codebook(coder, Reader(sec.codebook), levels, sec.size, sec.chunk_log2)
        if coder == "huffman":
            linked = code.decoder()[0].size < 1 << code.decoder()[1]
        else:
            _, rtb, rp, _, ltb, lp = code.decoders()
            linked = rtb.max() > rp or ltb.max() > lp
        assert linked == two_level, (levels, coder)
        q = quantize(x, "qsgd", levels, "max", 1, 0)
        np.testing.assert_array_equal(decode_states(sec)[0], q.states[: q.n])
