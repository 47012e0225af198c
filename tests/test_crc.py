"""crc.py: the payload's CRC-32 cut into pieces on threads equals zlib.crc32 of the whole."""
import zlib

import numpy as np
import pytest

from horovod_huffcomp import crc


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of a few bytes, threads for any size: every boundary case in small buffers."""
    monkeypatch.setattr(crc, "PIECE", 7)
    monkeypatch.setattr(crc, "THREADED_MIN", 0)
    monkeypatch.setattr(crc.os, "cpu_count", lambda: 4)


def test_combine_is_zlibs():
    rng = np.random.default_rng(0)
    for la, lb in ((0, 0), (0, 5), (5, 0), (1, 1), (3, 1000), (4096, 77), (100_000, 65_537)):
        a, b = rng.bytes(la), rng.bytes(lb)
        assert crc.combine(zlib.crc32(a), zlib.crc32(b), lb) == zlib.crc32(a + b)


def test_multiply_by_one_and_shift_of_zero_bytes():
    rng = np.random.default_rng(1)
    for v in rng.integers(0, 2**32, 20, dtype=np.uint64):
        assert crc.multiply(1 << 31, int(v)) == int(v) == crc.multiply(int(v), 1 << 31)
    assert crc.shift(0) == 1 << 31


def test_pieces_cover_the_bytes_in_order(small_pieces):
    parts = [memoryview(bytes(range(k, k + n))) for k, n in ((0, 3), (50, 0), (100, 20))]
    pieces = crc._pieces(parts, 7)
    assert [sum(len(s) for s in p) for p in pieces] == [2, 7, 7, 7]
    assert b"".join(bytes(s) for p in pieces for s in p) == b"".join(bytes(p) for p in parts)


def test_threaded_crc_equals_zlib(small_pieces):
    rng = np.random.default_rng(2)
    for sizes in ([0], [1], [6], [7], [8], [14], [15], [0, 0, 0], [3, 0, 11], [7, 7],
                  [1, 1, 1, 1, 1, 1, 1, 1], [100, 3, 250]):
        parts = [rng.bytes(n) for n in sizes]
        assert crc.crc32(*parts) == zlib.crc32(b"".join(parts))
    blobs = [rng.bytes(n) for n in (0, 5, 64, 1000)] + [[rng.bytes(9), b"", rng.bytes(30)]]
    want = [zlib.crc32(b if isinstance(b, bytes) else b"".join(b)) for b in blobs]
    assert crc.crc32_many(blobs) == want


def test_large_buffers_at_the_default_piece_size():
    """Megabytes of float32 data given as NumPy arrays and memoryviews, a piece boundary
    inside a part, and a first piece of one byte."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(3 << 20).astype(np.float32)  # 12 MiB
    head = rng.bytes(1 + 5 * crc.PIECE // 3)
    want = zlib.crc32(head + x.tobytes())
    assert crc.crc32(head, x) == want
    assert crc.crc32(memoryview(head), memoryview(x)) == want
    one_more = rng.bytes(8 * crc.PIECE + 1)
    assert crc.crc32_many([one_more, [head, x]]) == [zlib.crc32(one_more), want]


def test_a_forked_child_gets_its_own_threads():
    """A process forked after the pool started (a data loader's worker) has none of its
    threads: its CRCs must still come back, not wait forever on the parent's pool."""
    import multiprocessing

    data = np.random.default_rng(4).bytes(2 * crc.THREADED_MIN)
    assert crc.crc32(data) == zlib.crc32(data)  # the parent's pool is running
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(crc.crc32, (data,)).get(timeout=60) == zlib.crc32(data)
