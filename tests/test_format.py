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
    assert parsed == sum(not sec.reuse for sec in secs)
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
