"""The payload layout: the documented worked example, inspect fields, bundle codebook reuse."""
import re
from pathlib import Path

import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import payload
from horovod_huffcomp.fuzz import fix_crc
from conftest import expected, gradient_like

DOC = Path(__file__).resolve().parents[1] / "docs" / "format.md"


def test_worked_example_in_docs_matches_encoder():
    m = re.search(r"<!-- worked-example: ([0-9a-f ]+) -->", DOC.read_text())
    documented = bytes.fromhex(m.group(1))
    x = np.array([0.5, -0.25, 0, 0, 0, 0, 0, 1.0], np.float32)
    assert hc.encode(x, "qsgd", "huffman", levels=2, norm="max", seed=0) == documented
    np.testing.assert_array_equal(hc.decode(documented), [0.5, 0, 0, 0, 0, 0, 0, 1.0])


def test_inspect_fields():
    x = gradient_like(50000, seed=3).reshape(100, 500)
    blob = hc.encode(x, "qsgd", "auto", levels=4, norm="l2")
    info = hc.inspect(blob)
    assert info["quantizer"] == "qsgd" and info["levels"] == 4 and info["norm"] == "l2"
    assert info["coder"] in ("huffman", "zrh") and info["shape"] == (100, 500)
    assert info["dtype"] == "float32" and info["size"] == 50000 and info["version"] == hc.FORMAT_VERSION == 2
    assert info["total_bytes"] == len(blob)
    assert info["data_bytes"] * 8 >= info["data_bits"] > 0
    assert info["num_chunks"] == -(-50000 // info["chunk_elements"])
    assert info["header_bytes"] + info["codebook_bytes"] + info["data_bytes"] == len(blob)
    b = hc.inspect(hc.encode_many([x, x[0]], "terngrad", "elias-delta", elias_layout="gap"))
    assert b["bundle"] and b["count"] == 2 and b["sections"][1]["shape"] == (500,)
    assert b["sections"][0]["elias_layout"] == "gap"


def test_small_tensors_in_a_bundle_reuse_codebooks():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(256).astype(np.float32) for _ in range(12)]
    blob = hc.encode_many(xs, "qsgd", "auto", levels=1)
    info = hc.inspect(blob)
    assert any(s["codebook_reused"] for s in info["sections"])
    assert len(blob) < sum(len(hc.encode(x, "qsgd", levels=1)) for x in xs)
    for i, (x, y) in enumerate(zip(xs, hc.decode(blob))):
        np.testing.assert_array_equal(y, expected(x, "qsgd", dict(levels=1), stream=i))


def test_reuse_without_a_previous_section_is_rejected():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(256).astype(np.float32) for _ in range(6)]
    blob = hc.encode_many(xs, "qsgd", "zrh", levels=1)
    bundle, secs = payload.unpack(blob)
    reused = [i for i, s in enumerate(secs) if s.reuse]
    assert reused
    # flip the first section's coder byte to claim reuse: nothing before it to reuse
    b = bytearray(blob)
    first_a = 7  # magic 2, version, flags, q, levels, count -> section 0 starts at 7
    assert b[first_a] & 0x0F == payload.CODERS["zrh"]
    b[first_a] |= payload.A_REUSE
    fix_crc(b)
    with pytest.raises(hc.PayloadError, match="reuses a codebook"):
        hc.decode(bytes(b))


def test_many_smallest_sections_parse():
    # all-zero scalars: 0 data bits, codebook reused -> 7-byte sections, the smallest possible
    blob = hc.encode_many([np.float32(0.0)] * 200, "qsgd", "huffman", levels=1)
    assert len(blob) < 8 * 200
    out = hc.decode(blob)
    assert len(out) == 200 and all(a.shape == () and a == 0 for a in out)


def test_payload_readers_see_one_array_type():
    """Gathered buffers are writable, bytes are not: the readers' views must type alike, or
    numba compiles every payload kernel a second time (inside the first training step)."""
    import numba

    from horovod_huffcomp.payload import byte_view

    gathered = np.frombuffer(b"\x01\x02\x03" * 2, np.uint8).copy()
    views = [byte_view(b"\x01\x02\x03"), byte_view(memoryview(gathered)[3:]),
             byte_view(bytearray(b"\x01\x02\x03"))]
    assert len({numba.typeof(v) for v in views}) == 1
    assert all(v.tobytes() == b"\x01\x02\x03" for v in views)


def test_checksums_of_many_payloads_on_threads():
    """payload.body_crcs (the GPU decode-and-sum's checksums, on threads for megabytes of
    several payloads) gives what unpack computes itself, and unpack trusts only that value."""
    import zlib

    rng = np.random.default_rng(1)
    blobs = [hc.encode(rng.standard_normal(n).astype(np.float32), "qsgd", "huffman", 16,
                       seed=n) for n in (3_000_000, 5, 1_000_000)]
    blobs += [bytearray(blobs[1]), memoryview(blobs[2]), b"HC", 7]
    crcs = payload.body_crcs(blobs)
    assert crcs[:5] == [zlib.crc32(bytes(memoryview(b).cast("B"))[:-4]) for b in blobs[:5]]
    assert crcs[5:] == [None, None]
    assert payload.body_crcs(blobs[1:2]) == crcs[1:2]  # one payload: no threads
    for b, c in zip(blobs[:5], crcs):
        assert payload.unpack(b, body_crc=c)[1][0].size == payload.unpack(b)[1][0].size
    with pytest.raises(hc.PayloadError, match="checksum mismatch"):
        payload.unpack(blobs[0], body_crc=crcs[0] ^ 1)


def test_codebooks_are_parsed_once(monkeypatch):
    """unpack keeps each codebook's parsed code on its section; decoding uses it while the
    section still holds that codebook, and parses a replaced one afresh."""
    from horovod_huffcomp import coders

    rng = np.random.default_rng(2)
    xs = [rng.standard_normal(n).astype(np.float32) for n in (5000, 300, 300)]
    blob = hc.encode_many(xs, "qsgd", "huffman", 16, seed=1)
    calls = []
    real = coders.parse_codebook
    monkeypatch.setattr(coders, "parse_codebook", lambda *a: calls.append(a) or real(*a))
    _, secs = payload.unpack(blob)
    parsed = len(calls)
    assert parsed == 0  # the section scanner reads huffman codebooks itself
    assert all(sec.parsed[2].lengths.any() for sec in secs)
    states, raw = np.zeros(5000, np.int8), np.zeros(0, np.uint32)
    coders.decode(secs[0], states, raw)
    assert len(calls) == parsed
    other = payload.unpack(hc.encode(xs[1], "qsgd", "huffman", 16, seed=9))[1][0]
    swapped = payload.Section(**{**secs[1].__dict__, "codebook": other.codebook})
    before = len(calls)
    assert coders.section_code(swapped) is not secs[1].parsed[2]
    assert len(calls) == before + 1
    # a section reusing the previous codebook is checked for its own size: an empty code
    # parsed for a 0-element tensor does not pass for the next one's elements
    empty = hc.encode_many([np.zeros(0, np.float32), np.ones(5, np.float32)], "qsgd",
                           "huffman", 4, seed=0)
    _, (first, second) = payload.unpack(empty)
    crafted = payload.pack([first, payload.Section(**{**second.__dict__, "reuse": True,
                                                      "codebook": first.codebook,
                                                      "parsed": first.parsed})], bundle=True)
    with pytest.raises(hc.PayloadError, match="huffman code is empty"):
        hc.decode_many(crafted)
    with pytest.raises(hc.PayloadError, match="trailing"):
        coders.section_code(payload.Section(**{**secs[1].__dict__,
                                               "codebook": other.codebook + b"\0"}))


def sections_equal(a, b) -> bool:
    """Two readers' sections hold the same fields, codebooks and parsed codes."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if k == "parsed":
            if (x is None) != (y is None) or x is not None and (x[:2] != y[:2] or (
                    x[2] is None) != (y[2] is None)):
                return False
            code, other = (x[2], y[2]) if x is not None else (None, None)
            if hasattr(code, "codes") and not (
                    np.array_equal(code.lengths, other.lengths)
                    and np.array_equal(code.codes, other.codes) and code.single == other.single):
                return False
            if hasattr(code, "ks") and not (code.mode == other.mode and all(
                    np.array_equal(getattr(code, f), getattr(other, f))
                    and getattr(code, f).dtype == getattr(other, f).dtype
                    for f in ("ks", "rl", "rs", "ll", "ls"))):
                return False
        elif isinstance(x, (np.ndarray, float)) or isinstance(y, (np.ndarray, float)):
            if not np.array_equal(x, y, equal_nan=True) or np.asarray(x).dtype != np.asarray(
                    y).dtype:
                return False
        elif isinstance(x, memoryview) or isinstance(y, memoryview):
            if bytes(x) != bytes(y):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def test_section_scanner_reads_as_the_reference_reader():
    """payload.unpack reads sections with section_scan.scan (numba), leaving to
    payload._read_section only what it does not read (RLH codebooks, errors). Against every
    section read by _read_section, the reference, 6,000 mutants of every coder's payloads
    (bundles, buckets, codebook reuse, raw top-k, empty tensors, CRCs fixed or not) give the
    same sections (ZRH's codes included), or the same PayloadError message."""
    from horovod_huffcomp import fuzz, section_scan

    rng = np.random.default_rng(11)
    seeds = fuzz.seed_payloads(rng)
    xs = [gradient_like(n, seed=n) for n in (3000, 40, 1, 0, 700)]
    seeds += [hc.encode_many(xs, "qsgd", c, 16, seed=2) for c in ("huffman", "sh", "shs",
                                                                     "auto", "zrh", "rlh")]
    seeds.append(hc.encode_many(xs, "topk", "shs", ratio=0.3))
    # ZRH with a Huffman run code (runs of 4 zeros), and with run and sign contexts (an
    # outer-product gradient: signs persist along rows)
    periodic = np.zeros(20000, np.float32)
    periodic[::5] = rng.standard_normal(4000)
    outer = np.outer(rng.standard_normal(256) * rng.exponential(1.0, 256),
                     np.maximum(rng.standard_normal(512), 0)).astype(np.float32)
    seeds += [hc.encode_many([periodic, outer, periodic[:999]], "qsgd", "zrh", 8, "max")]
    modes = [sec.parsed[2].mode * 4 + (sec.codebook[0] >> 5) for sec in payload.unpack(
        seeds[-1])[1]]
    assert modes[:2] == [0, 3], modes  # Huffman runs, one context; contexts and signs

    def unpack(blob):
        try:
            return payload.unpack(blob, max_elements=fuzz.MAX_ELEMENTS)
        except hc.PayloadError as e:
            return str(e)

    def unpack_both(blob):
        with section_scan.reference_reader():
            ref = unpack(blob)
        return unpack(blob), ref

    outcomes = {"same sections": 0, "same error": 0}
    for i in range(6000):
        blob = seeds[i % len(seeds)] if i < len(seeds) else fuzz.mutate(
            seeds[int(rng.integers(len(seeds)))], rng)
        fast, ref = unpack_both(blob)
        if isinstance(ref, str):
            assert fast == ref, (i, fast, ref)
            outcomes["same error"] += 1
            continue
        assert not isinstance(fast, str), (i, fast)
        assert fast[0] == ref[0] and len(fast[1]) == len(ref[1]), i
        for a, b in zip(fast[1], ref[1]):
            assert sections_equal(a.__dict__, b.__dict__), (i, a, b)
        outcomes["same sections"] += 1
    assert min(outcomes.values()) > 500, outcomes


def test_code_lengths_reader_matches_the_gamma_reader():
    """codebook._unpack_lengths reads each length's gamma code from a 24-bit window; the
    generic bit reader (bits.get_gamma) gives the same lengths and verdicts on packed,
    bit-flipped, cut and random buffers."""
    from numba import njit

    from horovod_huffcomp import bits as B, codebook

    @njit
    def by_get_gamma(buf, count):
        lens, end, bitpos, prev = np.zeros(count, np.int64), 8 * buf.shape[0], 0, 0
        for i in range(count):
            z, bitpos = B.get_gamma(buf, bitpos, end)
            if z < 1 or z > 2 * payload.MAX_CODE_LEN + 1:
                return lens, -1
            z -= 1
            ln = prev + (z // 2 if z % 2 == 0 else -(z + 1) // 2)
            if ln < 0 or ln > payload.MAX_CODE_LEN:
                return lens, -1
            lens[i], prev = ln, ln
        return lens, bitpos

    rng = np.random.default_rng(4)
    valid = 0
    for t in range(30000):
        if t % 2:
            lengths = rng.integers(0, 16, int(rng.integers(1, 60)))
            buf = codebook._pack_lengths(lengths).copy()
            if rng.random() < 0.5 and buf.size:
                buf[rng.integers(buf.size)] ^= 1 << int(rng.integers(8))
            if rng.random() < 0.3:
                buf = buf[: int(rng.integers(buf.size + 1))]
            count = max(0, lengths.size + int(rng.integers(-2, 3)))
        else:
            buf = rng.integers(0, 256, int(rng.integers(0, 12))).astype(np.uint8)
            buf &= np.uint8(rng.integers(0, 256))
            count = int(rng.integers(0, 40))
        want, got = by_get_gamma(buf, count), codebook._unpack_lengths(buf, count)
        assert got[1] == want[1], (buf, count)
        if want[1] >= 0:
            assert np.array_equal(got[0], want[0]), (buf, count)
            valid += 1
    assert valid > 3000
