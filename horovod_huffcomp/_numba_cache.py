"""Keep numba's on-disk cache consistent with the package's sources.

numba's ``cache=True`` checks only the file that defines a function, while our kernels inline
helpers from other modules: an edit to ``bits.py`` would leave stale machine code for
``coders/zrh.py`` in ``__pycache__``. At import, a hash of every package module that uses
numba is compared with the one stored beside the cache; on a mismatch the package's numba
cache files are deleted, so the kernels are compiled afresh once.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
STAMP = ROOT / "__pycache__" / "numba_sources.sha256"


def sources_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(ROOT.rglob("*.py")):
        src = p.read_bytes()
        if b"from numba import" in src:
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(src)
    return h.hexdigest()


def ensure_fresh() -> None:
    try:
        digest = sources_digest()
        if STAMP.exists() and STAMP.read_text() == digest:
            return
        for cache_file in list(ROOT.rglob("*.nbi")) + list(ROOT.rglob("*.nbc")):
            cache_file.unlink(missing_ok=True)
        STAMP.parent.mkdir(exist_ok=True)
        STAMP.write_text(digest)
    except OSError:  # a read-only install: numba then caches elsewhere or not at all
        pass
