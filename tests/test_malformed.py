"""Untrusted payloads: every malformation raises PayloadError with a useful message."""
import dataclasses
import struct
import zlib

import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import fuzz, payload
from conftest import CODERS, gradient_like


def recrc(b: bytearray) -> bytes:
    fuzz.fix_crc(b)
    return bytes(b)


@pytest.fixture(scope="module")
def blobs():
    x = gradient_like(3000, seed=11)
    out = [hc.encode(x, "qsgd", c, levels=16) for c in CODERS]
    out.append(hc.encode(x, "topk", "zrh", ratio=0.05))
    out.append(hc.encode_many([x, x[:10]], "terngrad"))
    out.append(hc.encode_many([x, x[:10]], "fp4", "zrh"))
    out.append(hc.encode(x, "fp8", "huffman"))
    out.append(hc.encode_many([x, x[:10]], "qsgd", "zrh", bucket=256))
    return out


def test_every_truncation_is_rejected(blobs):
    for blob in blobs:
        for k in range(len(blob)):
            with pytest.raises(hc.PayloadError):
                hc.decode(blob[:k])


def test_every_single_bit_flip_is_rejected(blobs):
    blob = blobs[0]
    for i in range(len(blob)):
        for bit in range(8):
            b = bytearray(blob)
            b[i] ^= 1 << bit
            with pytest.raises(hc.PayloadError):
                hc.decode(bytes(b))


def test_messages_say_what_is_wrong(blobs):
    blob = blobs[0]
    with pytest.raises(hc.PayloadError, match="magic"):
        hc.decode(b"XX" + blob[2:])
    with pytest.raises(hc.PayloadError, match="version"):
        hc.decode(blob[:2] + b"\x09" + blob[3:])
    with pytest.raises(hc.PayloadError, match="checksum"):
        hc.decode(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(hc.PayloadError, match="shorter"):
        hc.decode(b"HC")
    with pytest.raises(hc.PayloadError, match="bytes-like"):
        hc.decode("HC not bytes")
    with pytest.raises(hc.PayloadError, match="trailing"):
        hc.decode(recrc(bytearray(blob[:-4] + b"\x00\x00\x00\x00\x00")))


def test_length_lies_behind_a_valid_checksum():
    x = gradient_like(5000, seed=3)
    blob = bytearray(hc.encode(x, "qsgd", "zrh", levels=4))
    # header: magic 2, version, flags, q, levels varint (1 byte), then a, b, shape varint
    shape_at = 8
    assert blob[shape_at] & 0x80  # 5000 takes two varint bytes
    for lie in (b"\x87\x27", b"\xff\x7f", b"\x01\x00"):
        b = bytearray(blob)
        b[shape_at:shape_at + 2] = lie
        with pytest.raises(hc.PayloadError):
            hc.decode(recrc(b))
    # a chunk bit length larger than the data
    info = hc.inspect(bytes(blob))
    assert info["num_chunks"] >= 1
    with pytest.raises(hc.PayloadError):
        hc.decode(recrc(bytearray(blob[:-5]) + blob[-4:]))


def test_max_elements_guards_memory():
    blob = hc.encode(np.zeros(1 << 16, np.float32))  # an all-zero tensor: a few bytes
    assert len(blob) < 40
    assert hc.decode(blob).shape == (1 << 16,)
    with pytest.raises(hc.PayloadError, match="max_elements"):
        hc.decode(blob, max_elements=1000)
    with pytest.raises(hc.PayloadError, match="max_elements"):
        hc.inspect(blob, max_elements=1000)


def test_random_bytes_with_valid_header_and_crc(rng):
    for _ in range(2000):
        b = bytearray(b"HC" + bytes([hc.FORMAT_VERSION])
                      + rng.integers(0, 256, int(rng.integers(1, 80)), dtype=np.uint8).tobytes())
        b += b"\0\0\0\0"
        try:
            hc.decode(recrc(b), max_elements=1 << 20)
        except hc.PayloadError:
            pass


def test_fuzz_ten_thousand_mutants():
    stats = fuzz.run(12000, seed=2024)
    assert stats["cases"] == 12000
    assert stats["rejected"] > stats["cases"] // 2  # most mutants are caught
    assert stats["decoded"] > 0  # and some CRC-fixed mutants still parse: the decoders ran


def test_crc_covers_everything(blobs):
    blob = blobs[3]
    body = blob[:-4]
    assert struct.unpack("<I", blob[-4:])[0] == zlib.crc32(body) & 0xFFFFFFFF
    assert payload.unpack(blob)[1][0].coder == hc.inspect(blob)["coder"]


def test_zrh_sign_contexts_need_four_contexts():
    x = np.outer(np.random.default_rng(1).standard_normal(64), np.arange(64.0)).astype(
        np.float32)
    blob = hc.encode(x, "qsgd", "zrh", 8, "max")
    _, (sec,) = hc.payload.unpack(blob)
    assert sec.codebook[0] & 0x60 == 0x60
    bad = dataclasses.replace(sec, codebook=bytes([sec.codebook[0] & ~0x40]) + sec.codebook[1:])
    with pytest.raises(hc.PayloadError, match="zrh codebook head"):
        hc.decode(hc.payload.pack([bad], bundle=False))


def test_bit_readers_stay_inside_the_buffer():
    """The decoders' bit readers (bits.fill, bits.peek32) read bytes outside the buffer as
    zero, at positions before it as well as past its end: their 8-byte fast path is taken
    only when all 8 bytes are inside (an unsigned test once let a position 1-7 bytes before
    the buffer through and read there)."""
    from horovod_huffcomp import bits as B

    buf = np.arange(1, 17, dtype=np.uint8)
    padded = np.concatenate([np.zeros(16, np.uint8), buf, np.zeros(16, np.uint8)])
    for byte in range(-12, 21):
        _, bb, bn = B.fill(buf, byte, np.uint64(0), 0)
        want = int.from_bytes(padded[16 + byte: 16 + byte + bn // 8].tobytes(), "big")
        assert int(bb) >> (64 - bn) == want, byte
        for shift in (0, 3):
            got = int(B.peek32(buf, 8 * byte + shift))
            window = int.from_bytes(padded[16 + byte: 16 + byte + 5].tobytes(), "big")
            assert got == (window >> (8 - shift)) & 0xFFFFFFFF, (byte, shift)
