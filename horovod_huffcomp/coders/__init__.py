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
smaller payload: both costs are computed exactly from histograms before any bit is written
(``auto.py``).
"""
from __future__ import annotations

import numpy as np

from .. import bits as B
from ..codebook import Code
from ..errors import PayloadError
from ..payload import CODERS, Reader, byte_view
from . import auto, elias, rlh, shs, symbol, zrh

CODER_CHOICES = tuple(CODERS) + ("auto",)


def _codebook_bytes(*codes) -> bytes:
    out = bytearray()
    for c in codes:
        c.serialize(out)
    return bytes(out)


def encode(q, coder: str, clog2: int, seed: int, gap_layout: bool = False, prev=None,
           scanned=None):
    """Returns (coder actually used, codebook bytes, chunk_bits, data uint8 array).

    ``prev`` is (coder, codebook bytes) of the previous section of a bundle: a codebook equal
    to it is not repeated in the payload, so ZRH also weighs reusing it. ``scanned``: the
    states' ``zrh.scan_nonzeros``, if the caller has it.
    """
    s, n = q.levels, q.n
    if coder in ("auto", "zrh"):
        return auto.encode(q, coder, clog2, prev, scanned)
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


def section_code(sec):
    """A section's parsed codebook: the one ``payload.unpack`` parsed while reading it, if
    the section still holds that codebook object and was checked for this section's coder,
    levels, size and chunk size (a section reusing the previous one's codebook is checked
    again for its own), else parsed from ``sec.codebook`` (exactly one codebook)."""
    parsed = getattr(sec, "parsed", None)  # (any object with a section's fields will do)
    key = (sec.coder, sec.levels, sec.size, sec.chunk_log2)
    if parsed is not None and parsed[0] is sec.codebook and parsed[1] == key:
        return parsed[2]
    r = Reader(sec.codebook)
    code = parse_codebook(sec.coder, r, sec.levels, sec.size, sec.chunk_log2)
    if r.pos != r.end:
        raise PayloadError(f"{sec.coder} codebook has {r.end - r.pos} unexpected trailing "
                           "bytes")
    return code


def decode(sec, states: np.ndarray, raw: np.ndarray) -> None:
    """Decode a parsed section's bits into ``states`` (int8, len n) and ``raw`` (uint32)."""
    s, n, clog2, coder = sec.levels, sec.size, sec.chunk_log2, sec.coder
    buf = byte_view(sec.data)
    bits = sec.chunk_bits
    code = section_code(sec)
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
