"""Lossless step: states -> (coder, codebook bytes, chunk bit lengths, data) and back.

Codebook bytes per coder (all tables are ``codebook.Code`` serialisations):

=============  ====================================================================
huffman, sh    one code over states + s (alphabet 2s + 1)
shs            one code over 2s levels + MAX_RUN zero runs
zrh            ``zrh.ZrhCode``: run mode, run code or Rice k, level code (2s)
rlh            pair list + code over pairs (``rlh.PairCode``)
elias-*        empty
=============  ====================================================================

``auto`` (the default) picks, per tensor, whichever of ``huffman`` and ``zrh`` gives the
smaller payload: both costs are computed exactly from histograms before any bit is written.
"""
from __future__ import annotations

import numpy as np

from .. import bits as B
from ..codebook import Code
from ..errors import PayloadError
from ..payload import CODERS, Reader, byte_view
from . import elias, rlh, shs, symbol, zrh

CODER_CHOICES = tuple(CODERS) + ("auto",)


def _codebook_bytes(*codes) -> bytes:
    out = bytearray()
    for c in codes:
        c.serialize(out)
    return bytes(out)


_RECENT_ZRH: dict = {}  # (codebook bytes, s) -> ZrhCode, of the last few sections coded


def _prev_zrh(prev, s: int):
    """The previous bundle section's ZRH code, if it was a ZRH section (usually the one this
    process just planned: kept, not parsed again)."""
    if prev is None or prev[0] != "zrh":
        return None
    zc = _RECENT_ZRH.get((prev[1], s))
    return zc if zc is not None else zrh.ZrhCode.parse(Reader(prev[1]), s, 1)


def _zrh_section(zc, s: int) -> bytes:
    cb = zc.to_bytes()
    if len(_RECENT_ZRH) >= 16:  # a handful of threads code bundles at once at most
        _RECENT_ZRH.clear()
    _RECENT_ZRH[(cb, s)] = zc
    return cb


def plan(coder: str, hist, s: int, n: int, raw_bits: int, prev=None):
    """The code of a tensor coded with ``auto`` or ``zrh``, chosen from its ZRH histograms
    (``zrh.histograms``; the GPU backend counts the same arrays on the device):
    (coder, codebook bytes, code) with a ``Code`` for huffman, a ``zrh.ZrhCode`` for zrh.
    ``raw_bits`` per non-zero (31 for exact top-k); ``prev`` as in :func:`encode`."""
    if coder == "zrh":
        zc, _, _ = zrh.plan_from(hist, raw_bits, _prev_zrh(prev, s))
        return "zrh", _zrh_section(zc, s), zc
    counts, lengths, single, hbits, hcb_bytes = zrh.state_code(hist[1], n, s)
    hbits += raw_bits * (n - int(counts[s]))
    hcode = hcb = None
    hcb_bits = 8 * hcb_bytes
    if prev is not None and prev[0] == "huffman" and len(prev[1]) == hcb_bytes:
        hcode = Code(lengths, single)  # same size as the previous codebook: compare
        hcb = _codebook_bytes(hcode)
        hcb_bits = 0 if prev[1] == hcb else hcb_bits
    zc, zbits, zcb_bits = zrh.plan_from(hist, raw_bits, _prev_zrh(prev, s))
    if zbits + zcb_bits < hbits + hcb_bits:
        return "zrh", _zrh_section(zc, s), zc
    if hcode is None:
        hcode = Code(lengths, single)
        hcb = _codebook_bytes(hcode)
    return "huffman", hcb, hcode


def encode(q, coder: str, clog2: int, seed: int, gap_layout: bool = False, prev=None):
    """Returns (coder actually used, codebook bytes, chunk_bits, data uint8 array).

    ``prev`` is (coder, codebook bytes) of the previous section of a bundle: a codebook equal
    to it is not repeated in the payload, so ZRH also weighs reusing it.
    """
    s, n = q.levels, q.n
    if coder in ("auto", "zrh"):
        hist = zrh.histograms(q.states, n, clog2, s)
        used, cb, code = plan(coder, hist, s, n, 31 if q.raw is not None else 0, prev)
        if used == "zrh":
            return (used, cb) + zrh.encode(q, clog2, code, int(hist[1].sum()))
        return (used, cb) + symbol.encode(q, clog2, code)
    if coder in ("huffman", "sh"):
        if coder == "huffman":
            code = Code.from_counts(symbol.state_counts(q.states, n, s))
        else:
            code = Code.from_counts(symbol.sample_counts(q.states, n, s, seed))
        return (coder, _codebook_bytes(code)) + symbol.encode(q, clog2, code)
    if coder == "shs":
        code = shs.build_code(q.states, n, s, seed)
        return (coder, _codebook_bytes(code)) + shs.encode(q, clog2, code)
    if coder == "rlh":
        planned = rlh.plan(q, clog2)
        out = bytearray()
        planned[0].serialize(out, s)
        return (coder, bytes(out)) + rlh.encode(q, clog2, planned)
    if coder in elias.KINDS:
        return (coder, b"") + elias.encode(q, clog2, elias.KINDS[coder], gap_layout)
    raise ValueError(f"unknown coder {coder!r}; choose from {CODER_CHOICES}")


def _check(err: int, coder: str) -> None:
    if err != 0:
        raise PayloadError(f"{coder} data: {B.ERR_MESSAGES.get(err, f'error {err}')}")


def _require(code: Code, what: str) -> None:
    if code.single < 0 and not code.lengths.any():
        raise PayloadError(f"{what} is empty but the data needs it")


def parse_codebook(coder: str, r: Reader, s: int, n: int, clog2: int):
    """Read a section's codebook at ``r`` (it delimits itself: the payload stores no length)
    and check it can code n elements: a Code, ZrhCode, PairCode, or None (Elias)."""
    if coder in ("huffman", "sh", "shs"):
        alphabet = shs.alphabet(s) if coder == "shs" else 2 * s + 1
        code = Code.parse(r, alphabet, f"{coder} code")
        if n:
            _require(code, f"{coder} code")
        return code
    if coder == "zrh":
        return zrh.ZrhCode.parse(r, s, n)
    if coder == "rlh":
        return rlh.PairCode.parse(r, s, clog2, n)
    return None


def decode(sec, states: np.ndarray, raw: np.ndarray) -> None:
    """Decode a parsed section's bits into ``states`` (int8, len n) and ``raw`` (uint32)."""
    s, n, clog2, coder = sec.levels, sec.size, sec.chunk_log2, sec.coder
    r = Reader(sec.codebook)
    buf = byte_view(sec.data)
    bits = sec.chunk_bits
    code = parse_codebook(coder, r, s, n, clog2)
    if r.pos != r.end:
        raise PayloadError(f"{coder} codebook has {r.end - r.pos} unexpected trailing bytes")
    if coder in ("huffman", "sh"):
        err = symbol.decode(buf, bits, n, clog2, s, code, states, raw)
    elif coder == "shs":
        err = shs.decode(buf, bits, n, clog2, s, code, states, raw)
    elif coder == "zrh":
        err = zrh.decode(buf, bits, n, clog2, s, code, states, raw)
    elif coder == "rlh":
        err = rlh.decode(buf, bits, n, clog2, code, states, raw)
    else:
        err = elias.decode(buf, bits, n, clog2, s, elias.KINDS[coder], sec.gap_layout, states,
                           raw)
    _check(err, coder)
