"""Encoders write chunk groups (one per thread) into bounded room and move them together;
decoders decode chunk groups in parallel. The bytes and the verdicts must not depend on the
number of groups or on serial/parallel mode."""
import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp.coders import chunks

from conftest import gradient_like


@pytest.fixture
def groups(monkeypatch):
    def use(k):
        monkeypatch.setattr(chunks, "_threads", lambda: k)
    yield use
    chunks.set_parallel(True)


def _payloads(seed):
    x = gradient_like(300_001, seed)
    sparse = x * (np.random.default_rng(seed).random(x.size) < 0.002)
    out = []
    for arr in (x, sparse):
        for q, kw in (("qsgd", dict(levels=32, norm="max")), ("qsgd", dict(levels=1)),
                      ("terngrad", {}), ("topk", dict(ratio=0.01))):
            for coder in ("auto", "huffman", "zrh"):
                out.append(hc.encode(arr, q, coder, seed=seed, chunk_log2=12, **kw))
    return out


def test_bytes_do_not_depend_on_grouping(groups):
    chunks.set_parallel(False)
    want = _payloads(1)
    chunks.set_parallel(True)
    for k in (1, 2, 3, 7, 1000):  # 1000 groups: more than chunks in the sparse tensors
        groups(k)
        assert _payloads(1) == want, k


def test_decode_verdicts_do_not_depend_on_grouping(groups):
    rng = np.random.default_rng(3)
    blobs = _payloads(2)
    mutated = []  # data bits flipped, checksum recomputed: the decoders must judge them
    for b in blobs[:12]:
        _, (sec,) = hc.payload.unpack(b)
        for _ in range(20):
            data = bytearray(sec.data)
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            sec2 = hc.payload.Section(**{**sec.__dict__, "data": bytes(data)})
            mutated.append(hc.payload.pack([sec2], bundle=False))

    def verdicts():
        out = []
        for b in blobs + mutated:
            try:
                out.append(hc.decode(b).tobytes())
            except hc.PayloadError as e:
                out.append(str(e))
        return out

    chunks.set_parallel(False)
    want = verdicts()
    chunks.set_parallel(True)
    assert sum(isinstance(v, str) for v in want) > 50
    for k in (2, 5):
        groups(k)
        assert verdicts() == want
