"""Canonical, length-limited Huffman codebooks: construction, serialisation, decode tables.

Construction is deterministic (ties broken by symbol index) and uses integer arithmetic only,
so the GPU backend builds the very same code from the same counts:

1. symbols with a non-zero count are sorted by (count, symbol);
2. the two-queue Huffman method gives optimal lengths;
3. lengths above ``MAX_CODE_LEN`` are limited with the JPEG (Annex K.3) adjustment on the
   per-length counts, then handed back to the symbols sorted by (count desc, symbol asc);
4. canonical codes are assigned in (length, symbol) order, as in DEFLATE.

A single used symbol gets a zero-length code (it costs no bits); no used symbol gives an
empty code. Serialised form (byte aligned, see docs/format.md)::

    varint form
      0: empty code            1: single symbol, then varint symbol
      2: flat: every symbol of a power-of-two alphabet has length log2(alphabet)
      k >= 3: k - 1 symbols from varint lo, then for each one
              Elias-gamma(zigzag(len - previous len) + 1) bits, padded to a byte

A parsed code must be complete (Kraft sum exactly 1) with every length in 0..MAX_CODE_LEN.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import bits as B
from .errors import PayloadError
from .payload import MAX_CODE_LEN, Reader, byte_view, put_varint, read_varint


HUFFMAN_WORK = 9  # int64 scratch per symbol that huffman_lengths_into / code_sized_into need


@njit(cache=True)
def huffman_lengths(counts, max_len):
    """Code length of every symbol (0 for count 0) for int64 ``counts``."""
    lengths = np.empty(counts.shape[0], np.int64)
    huffman_lengths_into(counts, max_len, lengths, np.empty(HUFFMAN_WORK * counts.shape[0],
                                                            np.int64))
    return lengths


@njit(cache=True)
def huffman_lengths_into(counts, max_len, lengths, work):
    """:func:`huffman_lengths` into ``lengths``, with ``work`` (>= HUFFMAN_WORK int64 per
    symbol) as scratch: the planner builds ~20 codes per tensor, and the arrays each build
    allocated were ~20% of its time on small alphabets."""
    _lengths_of_used(counts, _used_symbols(counts, lengths, work), max_len, lengths, work)


@njit(inline="always", cache=True)
def _used_symbols(counts, lengths, work):
    """One pass over the alphabet: ``lengths`` zeroed, the used symbols (count > 0) listed
    in symbol order in ``work[:used]``; returns used."""
    used = 0
    for i in range(counts.shape[0]):
        lengths[i] = 0
        work[used] = i
        used += counts[i] > 0
    return used


@njit(cache=True)
def _lengths_of_used(counts, used, max_len, lengths, work):
    """:func:`huffman_lengths_into` once :func:`_used_symbols` has listed the ``used``
    symbols in ``work[:used]`` and zeroed ``lengths`` (the list is then overwritten)."""
    if used <= 1:
        return
    if used == 2:  # the tree of two leaves
        lengths[work[0]] = 1
        lengths[work[1]] = 1
        return
    syms = work[:used]
    w = work[used: 2 * used]
    keys = work[2 * used: 3 * used]
    parent = work[3 * used: 5 * used - 1]
    iw = work[5 * used: 6 * used - 1]
    depth = work[6 * used: 8 * used - 1]
    # sort by (count, symbol): syms are in symbol order, so any stable sort by count. A
    # counting sort when the counts are small, else a least-significant-digit radix sort,
    # a byte of the count a pass (numba's sort of packed keys took ~5 us for 200 symbols).
    top = 0
    for k in range(used):
        top = max(top, counts[syms[k]])
    if top <= 4 * used + 64:
        below = np.zeros(top + 2, np.int64)  # below[v]: symbols with a count < v
        for k in range(used):
            below[counts[syms[k]] + 1] += 1
        for v in range(1, top + 2):
            below[v] += below[v - 1]
        for k in range(used):
            c = counts[syms[k]]
            keys[below[c]] = syms[k]
            below[c] += 1
        for k in range(used):
            syms[k] = keys[k]
    else:
        below = np.empty(257, np.int64)
        src, dst, moved = syms, keys, 0
        for shift in range(0, B.bitlen(top), 8):
            below[:] = 0
            for k in range(used):
                below[((counts[src[k]] >> shift) & 255) + 1] += 1
            if below[((counts[src[0]] >> shift) & 255) + 1] == used:
                continue  # one digit for all: nothing moves
            for v in range(1, 257):
                below[v] += below[v - 1]
            for k in range(used):
                d = (counts[src[k]] >> shift) & 255
                dst[below[d]] = src[k]
                below[d] += 1
            src, dst, moved = dst, src, moved + 1
        if moved % 2:
            syms[:] = keys
    for k in range(used):
        w[k] = counts[syms[k]]
    # two-queue Huffman: leaves 0..used-1, internal nodes used..2*used-2
    li = 0
    ii = 0
    for node in range(used - 1):
        total = 0
        for t in range(2):
            # prefer the leaf on ties (deterministic, keeps depth low)
            if li < used and (ii >= node or w[li] <= iw[ii]):
                pick = li
                total += w[li]
                li += 1
            else:
                pick = used + ii
                total += iw[ii]
                ii += 1
            parent[pick] = used + node
        iw[node] = total
    depth[2 * used - 2] = 0
    for node in range(2 * used - 3, -1, -1):
        depth[node] = depth[parent[node]] + 1
    maxd = 0
    for i in range(used):
        if depth[i] > maxd:
            maxd = depth[i]
    if maxd <= max_len:
        for i in range(used):
            lengths[syms[i]] = depth[i]
        return
    # JPEG Annex K.3 length limiting on the count of codes per length
    bl = np.zeros(maxd + 2, np.int64)
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
    # hand lengths back: the most frequent symbols (end of syms) get the shortest codes
    pos = used - 1
    for ln in range(1, max_len + 1):
        for _ in range(bl[ln]):
            lengths[syms[pos]] = ln
            pos -= 1


@njit(cache=True)
def canonical_codes(lengths):
    """DEFLATE-style canonical codes for ``lengths`` (codes are right-aligned integers)."""
    codes = np.zeros(lengths.shape[0], np.int64)
    canonical_codes_into(lengths, codes)
    return codes


CANONICAL_WORK = MAX_CODE_LEN + 1  # :func:`canonical_codes_work`'s work array


@njit(cache=True)
def canonical_codes_into(lengths, codes):
    """:func:`canonical_codes` written into ``codes`` (as long as ``lengths``; 0 where a
    length is 0)."""
    canonical_codes_work(lengths, codes, np.empty(CANONICAL_WORK, np.int64))


@njit(cache=True)
def canonical_codes_work(lengths, codes, work):
    """:func:`canonical_codes_into` with the caller's ``work`` (CANONICAL_WORK int64s: the
    count of each length, then in place the next code of each length), for callers that
    build many codes."""
    work[:] = 0
    for i in range(lengths.shape[0]):
        work[lengths[i]] += 1
    code, below = 0, 0  # the codes of length ln follow those of ln - 1 (none of length 0)
    for ln in range(1, MAX_CODE_LEN + 1):
        code = (code + below) << 1
        below = work[ln]
        work[ln] = code
    for i in range(lengths.shape[0]):
        ln = lengths[i]
        if ln > 0:
            codes[i] = work[ln]
            work[ln] += 1
        else:
            codes[i] = 0


@njit(cache=True)
def packed_codes_work(lengths, out, work):
    """Each symbol's canonical codeword as code << 5 | length into ``out`` (0 where a length
    is 0; the writers' tables), with :func:`canonical_codes_work`'s ``work``."""
    canonical_codes_work(lengths, out, work)
    for i in range(lengths.shape[0]):
        out[i] = (out[i] << 5) | lengths[i]


PRIMARY_BITS = 10  # a two-level table's first lookup: 2**10 int32 entries, 4 KB
ONE_LEVEL_BYTES = 1 << 18  # a decoder's tables of one kind in one level: at most this size
LINK = 31  # an entry's length field when the entry leads on (lengths are <= MAX_CODE_LEN)


@njit(cache=True)
def table_primary(rows, tbits):
    """The first lookup's width for ``rows`` tables read by one decoder (ZRH's run tables,
    or its level tables) of codewords up to ``tbits`` bits: all of them (one level) while
    they take at most ONE_LEVEL_BYTES (half this machine's per-core L2), else PRIMARY_BITS.
    One level of 15-bit codewords takes 128 KB a table, and ZRH's 8 level tables at s = 127
    (1 MB) missed the cache at every lookup: two levels decoded the s = 32 and 127 bundles
    1.1-1.7x faster. Where the tables fit, one level is as fast (the second level's test
    per symbol is compiled away, see :func:`read_sym`); a single code's table (full
    Huffman) always does."""
    if rows * 4 << tbits <= ONE_LEVEL_BYTES:
        return tbits
    return min(tbits, PRIMARY_BITS)


@njit(cache=True)
def decode_table(lengths, codes, single, primary):
    """Lookup table of a code, and its width ``tbits`` (the longest codeword). The next
    ``p = min(tbits, primary)`` bits index the first ``2**p`` entries: entry = symbol << 5 |
    length for a codeword of at most p bits; where longer codewords start with those bits,
    entry = ``sub << 5 | LINK``, and the entry is ``table[sub + x]``, x the ``tbits - p``
    bits after the first p (a sub-table per such prefix). Bits that start no codeword:
    -1 << 5 (symbol -1, which every decoder rejects). A code of one symbol:
    ``table[0] = symbol << 5``, tbits 0 (an empty code: -1 << 5)."""
    if single >= 0:
        t = np.empty(1, np.int32)
        t[0] = single << 5
        return t, 0
    tbits = 0
    for i in range(lengths.shape[0]):
        if lengths[i] > tbits:
            tbits = lengths[i]
    p = min(tbits, primary)
    sub = np.zeros(1 << p if tbits > p else 0, np.int64)  # each prefix's sub-table (0: none)
    size = 1 << p
    for i in range(lengths.shape[0] if tbits > p else 0):
        ln = lengths[i]
        if ln > p:
            head = codes[i] >> (ln - p)
            if sub[head] == 0:
                sub[head] = size
                size += 1 << (tbits - p)
    t = np.full(size, -1 << 5, np.int32)
    for i in range(lengths.shape[0]):
        ln = lengths[i]
        if 0 < ln <= p:
            lo = codes[i] << (p - ln)
            t[lo: lo + (1 << (p - ln))] = (i << 5) | ln
        elif ln > p:
            head = codes[i] >> (ln - p)
            t[head] = (sub[head] << 5) | LINK
            lo = sub[head] + ((codes[i] & ((1 << (ln - p)) - 1)) << (tbits - ln))
            t[lo: lo + (1 << (tbits - ln))] = (i << 5) | ln
    return t, tbits


@njit(cache=True)
def decode_table_rows(lengths, singles):
    """:func:`decode_table` of every row of stacked codes (2-D ``lengths``, ``singles``),
    stacked and padded with the no-codeword entry: (tables, widths, the first lookup's
    width: :func:`table_primary` of them all)."""
    rows = lengths.shape[0]
    codes = canonical_code_rows(lengths)
    primary = table_primary(rows, lengths.max())
    tabs = []
    widths = np.zeros(rows, np.int64)
    for c in range(rows):
        t, widths[c] = decode_table(lengths[c], codes[c], singles[c], primary)
        tabs.append(t)
    size = 1
    for t in tabs:
        size = max(size, t.shape[0])
    table = np.full((rows, size), -1 << 5, np.int32)
    for c in range(rows):
        table[c, : tabs[c].shape[0]] = tabs[c]
    return table, widths, primary


@njit(inline="always", cache=True)
def read_sym(bb, table, tbits, primary, linked):
    """Decode one symbol from a filled streaming reader (``bits.fill``) with a
    :func:`decode_table` (made with this ``primary``): (symbol, length). ``linked``: whether
    any table the decoder reads has two levels; the decoders pass it as a constant to a
    loop compiled for each case (the test per symbol slowed short codes' loops by 10-20%)."""
    if tbits == 0:
        e = table[0]
    elif not linked:
        e = table[np.int64(B.top(bb, tbits))]
    else:
        e = table[np.int64(B.top(bb, min(tbits, primary)))]
        if e & 31 == LINK:
            x = np.int64(B.top(bb, tbits)) & ((1 << (tbits - primary)) - 1)
            e = table[(e >> 5) + x]
    return e >> 5, e & 31


@njit(inline="always", cache=True)
def get_sym(buf, bitpos, table, tbits):
    """Decode one symbol at ``bitpos`` with a one-level :func:`decode_table`: returns
    (symbol, bits consumed)."""
    if tbits == 0:
        e = table[0]
    else:
        e = table[np.int64(B.peek32(buf, bitpos) >> B.U64(32 - tbits))]
    return e >> 5, e & 31


FORM_EMPTY, FORM_SINGLE, FORM_FLAT = 0, 1, 2


# ---- the same code, as plain arrays, for planners that weigh many candidate codes in numba:
# a code is (lengths, single), single >= 0 for a one-symbol code (lengths then all zero)
@njit(cache=True)
def code_from_counts(counts):
    """(lengths, single) of :meth:`Code.from_counts`."""
    lengths = np.empty(counts.shape[0], np.int64)
    single = code_from_counts_into(counts, lengths, np.empty(HUFFMAN_WORK * counts.shape[0],
                                                             np.int64))
    return lengths, single


@njit(cache=True)
def code_from_counts_into(counts, lengths, work):
    """:func:`code_from_counts` into ``lengths`` (scratch ``work`` as for
    :func:`huffman_lengths_into`); returns single."""
    used = _used_symbols(counts, lengths, work)
    if used == 1:
        return work[0]
    _lengths_of_used(counts, used, MAX_CODE_LEN, lengths, work)
    return -1


@njit(cache=True)
def code_sized_into(counts, lengths, work):
    """:func:`code_from_counts_into` and, from the used symbols alone (not the alphabet
    again), the code's :func:`code_cost` and :func:`code_nbytes`: (single, data bits,
    codebook bytes). The planner weighs ~20 codes per tensor over up to 255 symbols, most
    of them unused in small tensors' context rows."""
    a = counts.shape[0]
    used = _used_symbols(counts, lengths, work)
    if used == 0:
        return -1, 0, 1
    if used == 1:
        return work[0], 0, 1 + varint_len(work[0])
    order = work[(HUFFMAN_WORK - 1) * a: (HUFFMAN_WORK - 1) * a + used]
    order[:] = work[:used]  # the used symbols in symbol order (the build sorts work's)
    _lengths_of_used(counts, used, MAX_CODE_LEN, lengths, work)
    bits, gbits, prev, same = 0, 0, 0, True
    for k in range(used):
        i = order[k]
        ln = lengths[i]
        bits += counts[i] * ln
        same = same and ln == lengths[order[0]]
        if k > 0 and i > order[k - 1] + 1:  # unused symbols between: lengths 0
            gbits += _gamma_bits(-prev) + (i - order[k - 1] - 2)  # to 0, then 0 -> 0 (1 bit)
            prev = 0
        gbits += _gamma_bits(ln - prev)
        prev = ln
    if used == a and a & (a - 1) == 0 and same:
        return -1, bits, 1
    lo, hi = order[0], order[used - 1]
    return -1, bits, varint_len(hi - lo + 2) + varint_len(lo) + (gbits + 7) // 8


@njit(cache=True)
def code_cost(counts, lengths, single):
    """Bits for symbols with these counts, -1 if one of them has no codeword."""
    bits = 0
    for i in range(counts.shape[0]):
        if counts[i] > 0:
            if single >= 0:
                if i != single:
                    return -1
            elif lengths[i] == 0:
                return -1
            else:
                bits += counts[i] * lengths[i]
    return bits


@njit(cache=True)
def varint_len(v):
    n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


@njit(cache=True)
def _form(lengths, single):
    """(form, lo, hi) of a code's serialisation (see the module docstring)."""
    if single >= 0:
        return FORM_SINGLE, single, single
    lo, hi, count, same = -1, -1, 0, True
    for i in range(lengths.shape[0]):
        if lengths[i] > 0:
            if lo < 0:
                lo = i
            elif lengths[i] != lengths[lo]:
                same = False
            hi = i
            count += 1
    if count == 0:
        return FORM_EMPTY, 0, 0
    a = lengths.shape[0]
    if count == a and a & (a - 1) == 0 and same:
        return FORM_FLAT, 0, 0
    return hi - lo + 2, lo, hi


_GAMMA_BITS = np.array([2 * (z + 1).bit_length() - 1 for z in range(32)], np.int64)


@njit(cache=True)
def code_nbytes(lengths, single):
    """Bytes of :meth:`Code.serialize` for this code."""
    form, lo, hi = _form(lengths, single)
    if form == FORM_SINGLE:
        return 1 + varint_len(single)
    if form < 3:
        return 1
    bits, prev = 0, 0
    for i in range(lo, hi + 1):
        bits += _gamma_bits(lengths[i] - prev)
        prev = lengths[i]
    return varint_len(form) + varint_len(lo) + (bits + 7) // 8


@njit(inline="always", cache=True)
def _gamma_bits(d):
    """Bits of a length difference d in a serialised code: Elias gamma of zigzag(d) + 1."""
    z = 2 * d if d >= 0 else -2 * d - 1
    return _GAMMA_BITS[z] if z < 32 else 2 * B.bitlen(z + 1) - 1


@njit(inline="always", cache=True)
def _put_varint(out, pos, v):
    while v >= 0x80:
        out[pos] = np.uint8((v & 0x7F) | 0x80)
        v >>= 7
        pos += 1
    out[pos] = np.uint8(v)
    return pos + 1


@njit(cache=True)
def put_code(out, pos, lengths, single):
    """:meth:`Code.serialize` into ``out`` at byte ``pos`` (room for
    :func:`code_nbytes`); returns the next byte."""
    form, lo, hi = _form(lengths, single)
    pos = _put_varint(out, pos, form)
    if form == FORM_SINGLE:
        return _put_varint(out, pos, single)
    if form < 3:
        return pos
    pos = _put_varint(out, pos, lo)
    acc, nacc, prev = B.U64(0), 0, 0
    for i in range(lo, hi + 1):
        d = lengths[i] - prev
        z = 2 * d if d >= 0 else -2 * d - 1
        if z < 32:  # gamma of z + 1 < 2^5 (any length difference of a code): z + 1 written
            # in its gamma's width, whose leading zeros are the gamma's
            pos, acc, nacc = B.put(out, pos, acc, nacc, z + 1, _GAMMA_BITS[z])
        else:
            pos, acc, nacc = B.put_gamma(out, pos, acc, nacc, z + 1)
        prev = lengths[i]
    return B.flush(out, pos, acc, nacc)


@njit(cache=True)
def put_code_rows(lengths, singles):
    """:meth:`Code.serialize` of every row of ``lengths`` (int64; row r the one-symbol code
    of ``singles[r]`` where that is >= 0): the codes' bytes one after another, and where
    each ends."""
    ends = np.empty(lengths.shape[0], np.int64)
    total = 0
    for r in range(lengths.shape[0]):
        total += code_nbytes(lengths[r], singles[r])
        ends[r] = total
    out = np.empty(total, np.uint8)
    pos = 0
    for r in range(lengths.shape[0]):
        pos = put_code(out, pos, lengths[r], singles[r])
    return out, ends


def code_rows_bytes(lengths, singles) -> list[bytes]:
    """:func:`put_code_rows` as one bytes object per row (sections' codebooks)."""
    out, ends = put_code_rows(np.ascontiguousarray(lengths, np.int64),
                              np.ascontiguousarray(singles, np.int64))
    data = out.tobytes()
    return [data[a:b] for a, b in zip([0] + ends[:-1].tolist(), ends.tolist())]


@njit(cache=True)
def canonical_code_rows(lengths):
    """:func:`canonical_codes` of every row of a 2-D array of code lengths."""
    out = np.empty_like(lengths)
    canonical_code_rows_into(lengths, out)
    return out


@njit(cache=True)
def packed_code_rows(lengths):
    """:func:`packed_codes_work` of every row of a 2-D array of code lengths, into a new
    uint32 array (the writers' and the GPU kernels' code << 5 | length tables)."""
    out = np.empty(lengths.shape, np.uint32)
    work = np.empty(CANONICAL_WORK, np.int64)
    for r in range(lengths.shape[0]):
        packed_codes_work(lengths[r], out[r], work)
    return out


@njit(cache=True)
def canonical_code_rows_into(lengths, out):
    """:func:`canonical_code_rows` written into ``out`` (lengths' shape)."""
    work = np.empty(CANONICAL_WORK, np.int64)
    for r in range(lengths.shape[0]):
        canonical_codes_work(lengths[r], out[r], work)


class Code:
    """A canonical Huffman code over symbols ``0..alphabet-1``."""

    __slots__ = ("lengths", "codes", "single", "table", "tbits")

    def __init__(self, lengths: np.ndarray, single: int = -1):
        self.lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        self.single = single
        if single >= 0:
            self.lengths = np.zeros_like(self.lengths)
        self.codes = canonical_codes(self.lengths)
        self.table = None
        self.tbits = 0

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "Code":
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        nz = np.flatnonzero(counts)
        if nz.size == 1:
            return cls(np.zeros(counts.size, np.int64), single=int(nz[0]))
        if nz.size > 1 << MAX_CODE_LEN:  # the length limit cannot make a prefix code
            raise ValueError(f"{nz.size} symbols used: a code of at most {MAX_CODE_LEN} bits "
                             f"has {1 << MAX_CODE_LEN} codewords")
        return cls(huffman_lengths(counts, MAX_CODE_LEN))

    @property
    def alphabet(self) -> int:
        return self.lengths.size

    def decoder(self):
        """(:func:`decode_table` in one level, its width): one table of at most 128 KB."""
        if self.table is None:
            self.table, self.tbits = decode_table(self.lengths, self.codes, self.single,
                                                  MAX_CODE_LEN)
        return self.table, self.tbits

    # ---------------------------------------------------------- serialisation
    def serialize(self, out: bytearray) -> None:
        if self.single >= 0:
            put_varint(out, FORM_SINGLE)
            put_varint(out, self.single)
            return
        nz = np.flatnonzero(self.lengths)
        if nz.size == 0:
            put_varint(out, FORM_EMPTY)
            return
        a = self.alphabet
        if nz.size == a and a & (a - 1) == 0 and (self.lengths == self.lengths[0]).all():
            put_varint(out, FORM_FLAT)
            return
        lo, hi = int(nz[0]), int(nz[-1])
        put_varint(out, hi - lo + 2)
        put_varint(out, lo)
        out += _pack_lengths(self.lengths[lo : hi + 1]).tobytes()

    @classmethod
    def of(cls, lengths: np.ndarray, codes: np.ndarray, single: int) -> "Code":
        """The code whose ``lengths`` (contiguous int64; zeros for a one-symbol code) and
        canonical ``codes`` a parser has already made (``section_scan``)."""
        code = object.__new__(cls)
        code.lengths, code.codes, code.single, code.table, code.tbits = (
            lengths, codes, single, None, 0)
        return code

    @classmethod
    def parse(cls, r: Reader, alphabet: int, what: str) -> "Code":
        lengths, singles = parse_codes(r, 1, alphabet, what)
        return cls(lengths[0], single=int(singles[0]))


# parse errors of parse_code_rows, and what they say
_TRUNCATED, _FORM, _SYMBOL, _FLAT, _LO, _LENGTHS, _ENDS, _KRAFT = range(1, 9)
_PARSE_ERRORS = {
    _TRUNCATED: "truncated",
    _FORM: "form out of range",
    _SYMBOL: "symbol out of range",
    _FLAT: "a flat code needs a power-of-two alphabet",
    _LO: "first symbol out of range",
    _LENGTHS: "code lengths are truncated or out of range",
    _ENDS: "code length range does not start and end on a symbol",
    _KRAFT: "code lengths do not form a complete prefix code",
}


def parse_codes(r: Reader, count: int, alphabet: int, what: str):
    """``count`` serialised codes one after the other (one numba call): (lengths, singles),
    a row each; raises PayloadError naming the failing code."""
    buf = byte_view(r.buf)
    lengths, singles, pos, err, row = parse_code_rows(buf, r.pos, r.end, count, alphabet)
    if err:
        which = f" {row + 1} of {count}" if count > 1 else ""
        raise PayloadError(f"{what}{which} at offset {pos}: {_PARSE_ERRORS[err]}")
    r.pos = pos
    return lengths, singles


@njit(cache=True)
def parse_code_rows(buf, pos, end, count, alphabet):
    """(lengths, singles, next byte, 0, 0), or (..., byte, error, failing row)."""
    lengths = np.zeros((count, alphabet), np.int64)
    singles = np.full(count, -1, np.int64)
    for row in range(count):
        start = pos
        form, pos, err = read_varint(buf, pos, end)
        if err:
            return lengths, singles, start, _TRUNCATED if err == -1 else _FORM, row
        if form > alphabet + 1:
            return lengths, singles, start, _FORM, row
        if form == FORM_EMPTY:
            continue
        if form == FORM_SINGLE:
            sym, pos, err = read_varint(buf, pos, end)
            if err:
                return lengths, singles, start, _TRUNCATED if err == -1 else _SYMBOL, row
            if sym > alphabet - 1:
                return lengths, singles, start, _SYMBOL, row
            singles[row] = sym
            continue
        if form == FORM_FLAT:
            if alphabet < 2 or alphabet & (alphabet - 1):
                return lengths, singles, start, _FLAT, row
            lengths[row, :] = B.bitlen(alphabet) - 1
            continue
        n = form - 1
        lo, pos, err = read_varint(buf, pos, end)
        if err:
            return lengths, singles, start, _TRUNCATED if err == -1 else _LO, row
        if lo > alphabet - n:
            return lengths, singles, start, _LO, row
        if pos + (n + 7) // 8 > end:  # each length costs at least one bit
            return lengths, singles, start, _TRUNCATED, row
        lens, nbits = _unpack_lengths(buf[pos:end], n)
        if nbits < 0:
            return lengths, singles, start, _LENGTHS, row
        pos += (nbits + 7) // 8
        if lens[0] == 0 or lens[n - 1] == 0:
            return lengths, singles, start, _ENDS, row
        kraft = 0
        for i in range(n):
            if lens[i] > 0:
                kraft += 1 << (MAX_CODE_LEN - lens[i])
            lengths[row, lo + i] = lens[i]
        if kraft != 1 << MAX_CODE_LEN:
            return lengths, singles, start, _KRAFT, row
    return lengths, singles, pos, 0, 0


@njit(cache=True)
def _pack_lengths(lengths):
    out = np.zeros(2 * lengths.shape[0] + 8, np.uint8)
    pos, acc, nacc = 0, B.U64(0), 0
    prev = 0
    for i in range(lengths.shape[0]):
        d = lengths[i] - prev
        z = 2 * d if d >= 0 else -2 * d - 1
        pos, acc, nacc = B.put_gamma(out, pos, acc, nacc, z + 1)
        prev = lengths[i]
    pos = B.flush(out, pos, acc, nacc)
    return out[:pos]


GAMMA_MAX_ZEROS = 4  # a length's gamma code holds z + 1 <= 2 MAX_CODE_LEN + 1 = 31


@njit(cache=True)
def _unpack_lengths(buf, count):
    """``count`` code lengths gamma-coded as zigzag differences (:func:`_pack_lengths`):
    (lengths, bits read), or (.., -1) for a code out of range or past the end of ``buf``.
    Each code is read from a 24-bit window: a valid one has at most GAMMA_MAX_ZEROS leading
    zeros (9 bits), so more zeros, like bits past the end, are an error at once."""
    lens = np.zeros(count, np.int64)
    nbytes = buf.shape[0]
    end = 8 * nbytes
    bitpos = 0
    prev = 0
    for i in range(count):
        byte = bitpos >> 3
        w = 0
        for j in range(3):  # the window, zeros past the end
            w = w << 8 | (np.int64(buf[byte + j]) if byte + j < nbytes else 0)
        w = (w << (bitpos & 7)) & 0xFFFFFF
        if w >> (23 - GAMMA_MAX_ZEROS) == 0:
            return lens, -1
        nb = 2 * (24 - B.bitlen(w)) + 1
        if bitpos + nb > end:
            return lens, -1
        z = (w >> (24 - nb)) - 1
        bitpos += nb
        if z > 2 * MAX_CODE_LEN:
            return lens, -1
        d = z // 2 if z % 2 == 0 else -(z + 1) // 2
        ln = prev + d
        if ln < 0 or ln > MAX_CODE_LEN:
            return lens, -1
        lens[i] = ln
        prev = ln
    return lens, bitpos
