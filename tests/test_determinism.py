"""Same input and seed give the same bytes, in this process and in a fresh one."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import horovod_huffcomp as hc
from conftest import CODERS, QUANTIZER_CASES, gradient_like


@pytest.mark.parametrize("quantizer,kw", QUANTIZER_CASES)
def test_same_seed_same_bytes(quantizer, kw):
    x = gradient_like(20000, seed=9)
    for coder in CODERS:
        a = hc.encode(x, quantizer, coder, seed=42, **kw)
        assert a == hc.encode(x.copy(), quantizer, coder, seed=42, **kw)


def test_seed_changes_stochastic_rounding():
    x = gradient_like(20000, seed=9)
    assert hc.encode(x, seed=1) != hc.encode(x, seed=2)
    assert hc.encode(x, "topk") == hc.encode(x, "topk", seed=5)  # exact top-k draws nothing


def digest() -> str:
    """SHA-256 over payloads of several quantizers and coders (run here and in a subprocess)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(50000) * rng.exponential(1, 50000) ** 2).astype(np.float32)
    h = hashlib.sha256()
    for coder in ("auto", "shs", "rlh", "elias-omega"):
        for q, kw in (("qsgd", dict(levels=4)), ("terngrad", {}), ("topk", dict(ratio=0.02))):
            h.update(hc.encode(x, q, coder, seed=7, **kw))
    return h.hexdigest()


def test_fresh_process_gives_identical_payloads():
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "from test_determinism import digest; print(digest())")
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(2)}
    assert runs == {digest()}


def test_serial_and_parallel_kernels_give_the_same_bytes():
    from horovod_huffcomp.coders.chunks import set_parallel

    x = gradient_like(300_000, seed=12)
    cases = (("qsgd", "auto", 4, "l2"), ("qsgd", "huffman", 127, "max"), ("qsgd", "zrh", 32, "max"))
    out = []
    try:
        for parallel in (True, False):
            set_parallel(parallel)
            out.append([hc.encode(x, q, c, levels=lv, norm=nm) for q, c, lv, nm in cases])
    finally:
        set_parallel(True)
    assert out[0] == out[1]
