"""Stale numba caches are dropped when any source of the package changes."""
from horovod_huffcomp import _numba_cache as nc


def test_changed_sources_clear_the_numba_cache():
    nc.ensure_fresh()
    assert nc.STAMP.read_text() == nc.sources_digest()
    fake = nc.STAMP.parent / "fake_kernel.py.nbi"
    fake.write_bytes(b"stale")
    nc.ensure_fresh()  # sources unchanged: the cache stays
    assert fake.exists()
    nc.STAMP.write_text("a digest of other sources")
    nc.ensure_fresh()
    assert not fake.exists()
    assert nc.STAMP.read_text() == nc.sources_digest()
