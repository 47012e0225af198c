"""Every kernel launch of the GPU backend against the kernel's C signature, without a GPU.

``gpu_backend.encode_sections`` and ``decode_sum`` run with CuPy replaced by NumPy arrays and
every launch replaced by a check of its arguments against the ``extern "C"`` signature parsed
from ``cuda/<stage>.cu``: as many arguments as parameters, an array for every pointer and a
NumPy scalar of the parameter's exact type for every value (CuPy passes a scalar as its own
type: an int64 where the kernel reads an int would misplace every later argument; a pointer
named ``*_or_null`` may be ``np.uint64(0)``, the null pointer), and grid
and block sizes within CUDA's limits. Only the chunk plan is computed (as ``hc_chunk_plan``
does for dense tensors), so the encode reaches its write stage; the values are not checked
here (tests/test_gpu_backend.py does that on a GPU, tests/test_cuda_sources.py the kernels'
logic on the host)."""
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import horovod_huffcomp as hc
from horovod_huffcomp import gpu_backend
from horovod_huffcomp.quantizers import quantize

ROOT = Path(__file__).resolve().parents[1]
SCALARS = {"int": np.int32, "long long": np.int64, "unsigned long long": np.uint64,
           "double": np.float64, "float": np.float32}


def signatures() -> dict:
    """{(stage, kernel): [parameter type, None for a pointer, or "null" for a pointer that
    may be null (named *_or_null)]} of every cuda/*.cu."""
    out = {}
    for path in (ROOT / "cuda").glob("*.cu"):
        text = path.read_text().replace("\\\n", "\n")
        suffixes = re.findall(r"^HC_INSTANCES\((\w+),", text, re.M)  # quantize.cu's dtypes
        for name, params in re.findall(r'extern "C" __global__ void\s+(?:__launch_bounds__'
                                       r'\(\w+\)\s+)?([\w#]+)\((.*?)\)\s*\{', text, re.S):
            kinds = []
            for p in params.split(","):
                p = re.sub(r"\b(const|__restrict__)\b", " ", p).strip()
                kinds.append(("null" if p.endswith("_or_null") else None) if "*" in p
                             else " ".join(p.split()[:-1]))
            for suf in suffixes if "##SUF" in name else [""]:
                out[path.stem, name.replace("##SUF", suf)] = kinds
    return out


class DeviceArray(np.ndarray):
    """A NumPy array with the few CuPy array methods the backend calls."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def get(self, out=None):
        out[...] = self
        return out

    def set(self, host):
        self[...] = np.asarray(host).reshape(self.shape)


@pytest.fixture
def checked_launches(monkeypatch):
    sigs = signatures()
    launched = []

    def dev(a, dtype=None):
        return np.asarray(a, dtype).view(DeviceArray)

    fake = types.ModuleType("cupy")
    fake.ndarray = DeviceArray
    for name in ("int8", "uint8", "int32", "uint32", "int64", "uint64", "float64", "float32"):
        setattr(fake, name, getattr(np, name))

    def empty(shape, dtype=np.float64):  # poisoned: 0x5A bytes
        return dev(np.full(np.dtype(dtype).itemsize * int(np.prod(shape)), 0x5A, np.uint8)
                   .view(dtype).reshape(shape))

    fake.empty = empty
    fake.zeros = lambda *a, **k: dev(np.zeros(*a, **k))
    fake.full = lambda *a, **k: dev(np.full(*a, **k))
    fake.asarray = dev
    fake.asnumpy = np.asarray
    # what gpu_rlh calls (array operations CuPy has as NumPy has them)
    for name in ("cumsum", "flatnonzero", "searchsorted", "unique", "concatenate", "minimum",
                 "where", "arange"):
        setattr(fake, name, getattr(np, name))
    fake.ascontiguousarray = lambda a: dev(np.ascontiguousarray(a))
    fake.from_dlpack = lambda a: dev(np.from_dlpack(a))
    fake.cuda = types.SimpleNamespace(
        alloc_pinned_memory=lambda n: bytearray(n),
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(scatter_add=np.add.at))

    def kernel(stage, name):
        params = sigs.get((stage, name))
        assert params is not None, f"no kernel {name} in cuda/{stage}.cu"

        def launch(grid, block, args):
            assert 1 <= len(grid) <= 3 and all(int(g) >= 1 for g in grid), (name, grid)
            assert int(grid[0]) < 2**31 and all(int(g) <= 65535 for g in grid[1:]), (name, grid)
            assert 1 <= int(np.prod(block)) <= 1024, (name, block)
            assert len(args) == len(params), (name, len(args), len(params))
            for k, (a, p) in enumerate(zip(args, params)):
                if p == "null" and type(a) is np.uint64:
                    assert int(a) == 0, (name, k)
                elif p is None or p == "null":
                    assert isinstance(a, np.ndarray), (name, k, type(a))
                else:
                    assert type(a) is SCALARS[p], (name, k, p, type(a))
            launched.append(name)
            if name == "hc_chunk_plan":  # 4096-element chunks (dense tensors)
                sizes, count, clog2, nchunks = args[3], int(args[4]), args[6], args[7]
                clog2[:count] = 12
                nchunks[:count] = -(-sizes[:count] // 4096)
        return launch

    monkeypatch.setattr(gpu_backend, "kernel", kernel)
    monkeypatch.setattr(gpu_backend, "NOT_YET_ON_DEVICE", set())
    return launched


def test_signatures_are_parsed():
    sigs = signatures()
    assert len(sigs) > 20
    assert sigs["elias", "hc_elias_write"][-4:] == ["int", "int", None, None]
    assert sigs["huffman", "hc_huffman_decode_sum"][1] == "int"
    assert sigs["zrh", "hc_zrh_decode"][-2:] == ["null", None]  # raw_or_null, err


@pytest.mark.parametrize("coder,layout", [("huffman", "runlength"), ("sh", "runlength"),
                                          ("shs", "runlength"), ("zrh", "runlength"),
                                          ("auto", "runlength"), ("elias-gamma", "runlength"),
                                          ("elias-omega", "gap")])
def test_encode_launches(checked_launches, coder, layout):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(n).astype(dt) for n, dt in
          ((5000, np.float32), (1, np.float16), (10_000, np.float64))]
    for norm in ("max", "l2"):
        checked_launches.clear()
        secs = gpu_backend.encode_sections(
            [x.view(DeviceArray) for x in xs], quantizer="qsgd", coder=coder, levels=8,
            norm=norm, seed=1, elias_layout=layout)
        used = {sec.coder for sec in secs}
        assert used <= ({"huffman", "zrh"} if coder == "auto" else {coder})
        assert all(sec.gap_layout == (layout == "gap") for sec in secs)
        writes = {f"hc_{'elias' if c in gpu_backend.ELIAS else c}_write"
                  for c in {"huffman" if c == "sh" else c for c in used}}
        assert writes | {"hc_quantize_f16", "hc_histogram"} <= set(checked_launches)
        if coder not in ("huffman", "sh"):
            assert {"hc_list_count", "hc_list"} <= set(checked_launches)
        assert ("hc_sample_counts" in checked_launches) == (coder in ("sh", "shs"))
        assert ("hc_build_shs_codes" in checked_launches) == (coder == "shs")


@pytest.mark.parametrize("raw", [False, True], ids=["qsgd", "exact-topk"])
def test_wide_huffman_launches(checked_launches, monkeypatch, raw):
    """gpu_backend.WIDE: huffman's chunk bits and writer four states a lane (the signatures
    of hc_huffman_chunk_bits4 and hc_huffman_write4); exact top-k keeps its writer."""
    monkeypatch.setattr(gpu_backend, "WIDE", True)
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(n).astype(np.float32).view(DeviceArray) for n in (5000, 3)]
    opts = dict(quantizer="topk", levels=None, ratio=0.1) if raw else dict(
        quantizer="qsgd", levels=8)
    gpu_backend.encode_sections(xs, coder="huffman", norm="max", seed=1, **opts)
    assert "hc_huffman_chunk_bits4" in checked_launches
    assert "hc_huffman_chunk_bits" not in checked_launches
    writes = {"hc_huffman_write4", "hc_huffman_write", "hc_huffman_write_raw"}
    assert writes & set(checked_launches) == {
        "hc_huffman_write_raw" if raw else "hc_huffman_write4"}


@pytest.mark.parametrize("quantizer,norm,coder", [("fp4", "gennorm", "huffman"),
                                                   ("fp4", "max", "auto"),
                                                   ("fp8", "max", "elias-delta"),
                                                   ("fp8-e5m2", "max", "huffman")])
def test_float_format_launches(checked_launches, quantizer, norm, coder):
    """CO3's float formats: their quantize kernels (and fp4's GenNorm moments), the sections'
    fields, and their payloads' decode (the decoders told the format)."""
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal(n).astype(dt) for n, dt in
          ((5000, np.float32), (3, np.float16), (700, np.float64))]
    secs = gpu_backend.encode_sections([x.view(DeviceArray) for x in xs], quantizer=quantizer,
                                       coder=coder, levels=None, norm=norm, seed=1)
    assert {(sec.quantizer, sec.norm, sec.levels) for sec in secs} == {
        (quantizer, norm, hc.payload.fp_levels(quantizer))}
    suffixes = ("f16", "f32", "f64")
    assert {f"hc_quantize_fp_{s}" for s in suffixes} <= set(checked_launches)
    assert not {f"hc_quantize_{s}" for s in suffixes} & set(checked_launches)
    assert ({f"hc_moments_{s}" for s in suffixes} <= set(checked_launches)) == (
        norm == "gennorm")
    checked_launches.clear()
    gpu_backend.decode_sum([hc.encode_many(xs, quantizer, coder, norm=norm, seed=r)
                            for r in range(2)])
    assert "hc_huffman_decoders" in checked_launches


@pytest.mark.parametrize("norm,coder", [("l2", "huffman"), ("max", "auto"),
                                        ("l2", "elias-gamma")])
def test_bucket_launches(checked_launches, norm, coder):
    """QSGD's buckets: their scale and quantize kernels, the sections' per-bucket scales, and
    their payloads' decode (symbols or states, then hc_add_buckets)."""
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(n).astype(dt) for n, dt in
          ((5000, np.float32), (3, np.float16), (700, np.float64), (0, np.float32))]
    secs = gpu_backend.encode_sections([x.view(DeviceArray) for x in xs], quantizer="qsgd",
                                       coder=coder, levels=8, norm=norm, seed=1, bucket=64)
    assert [sec.scale.size for sec in secs] == [79, 1, 11, 1]
    assert all(sec.bucket_log2 == 6 for sec in secs)
    suffixes = ("f16", "f32", "f64")
    kinds = ("absmax", "quantize") + (("sumsq",) if norm == "l2" else ())
    assert {f"hc_{k}_buckets_{s}" for k in kinds for s in suffixes} <= set(checked_launches)
    assert not {f"hc_{k}_{s}" for k in kinds for s in suffixes} & set(checked_launches)
    checked_launches.clear()
    gpu_backend.decode_sum([hc.encode_many(xs, "qsgd", coder, 8, norm, seed=r, bucket=64)
                            for r in range(2)])
    assert "hc_add_buckets" in checked_launches


def test_topk_launches(checked_launches):
    """Quantized top-k: the radix select's passes (4 on float32 keys, 8 on float64), the
    ties, the rounding, for each dtype group."""
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(n).astype(dt) for n, dt in
          ((5000, np.float32), (3, np.float16), (700, np.float64), (0, np.float32))]
    secs = gpu_backend.encode_sections([x.view(DeviceArray) for x in xs], quantizer="topk",
                                       coder="auto", levels=4, norm=None, seed=1, ratio=0.05)
    assert {(sec.quantizer, sec.levels, sec.norm, sec.raw) for sec in secs} == {
        ("topk", 4, "max", False)}
    assert checked_launches.count("hc_topk_hist_f64") == 8
    assert checked_launches.count("hc_topk_hist_f32") == checked_launches.count(
        "hc_topk_hist_f16") == 4
    assert checked_launches.count("hc_topk_pick") == 16
    assert {f"hc_{k}_{s}" for k in ("topk_ties", "quantize_topk")
            for s in ("f16", "f32", "f64")} <= set(checked_launches)
    assert gpu_backend.supports("topk", "auto") and gpu_backend.supports("topk", "auto",
                                                                         levels=1)


@pytest.mark.parametrize("coder,layout", [("auto", "runlength"), ("zrh", "runlength"),
                                          ("huffman", "runlength"), ("sh", "runlength"),
                                          ("shs", "runlength"), ("elias-delta", "runlength"),
                                          ("elias-gamma", "gap"), ("rlh", "runlength")])
def test_exact_topk_launches(checked_launches, coder, layout):
    """Exact top-k (levels 0): the selection writes signs and raw magnitudes, the sections
    say raw with levels 1, every coder writes through its _raw writer; its payloads decode
    into states and raw magnitudes (every coder's decoder given the raw buffer), then
    hc_add_raw_states adds them."""
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal(n).astype(dt) for n, dt in
          ((5000, np.float32), (3, np.float16), (700, np.float64), (0, np.float32))]
    secs = gpu_backend.encode_sections([x.view(DeviceArray) for x in xs], quantizer="topk",
                                       coder=coder, levels=None, norm=None, seed=1, ratio=0.05,
                                       elias_layout=layout)
    assert {(sec.quantizer, sec.levels, sec.norm, sec.raw) for sec in secs} == {
        ("topk", 1, "max", True)}
    used = {"huffman" if sec.coder == "sh" else sec.coder for sec in secs}
    writes = {f"hc_{'elias' if c in gpu_backend.ELIAS else c}_write" for c in used
              if c != "rlh"}  # (rlh: gpu_rlh's array operations, no writer kernel)
    assert {w + "_raw" for w in writes} <= set(checked_launches)
    assert not writes & set(checked_launches)
    checked_launches.clear()
    blobs = [hc.encode_many(xs, "topk", coder, seed=r, ratio=0.05, elias_layout=layout)
             for r in range(2)]
    gpu_backend.decode_sum(blobs)
    assert "hc_add_raw_states" in checked_launches
    assert not {"hc_huffman_decode_sum", "hc_huffman_decode_symbols",
                "hc_add_states"} & set(checked_launches)
    decoders = {"huffman": "hc_huffman_decode_raw", "sh": "hc_huffman_decode_raw",
                "zrh": "hc_zrh_decode", "shs": "hc_shs_decode", "rlh": "hc_rlh_decode"}
    assert {decoders.get(sec.coder, "hc_elias_decode") for b in blobs
            for sec in hc.payload.unpack(b)[1] if sec.size} <= set(checked_launches)


def _emulations(arrays: dict, captured: dict) -> dict:
    """NumPy stand-ins for the quantize stage's kernels of quantized top-k and QSGD's
    buckets, reading their arguments as the kernels do (blockIdx.y kernels: tensor = position
    within the launch's slices; scale- and block-numbered ones: absolute positions) and
    computing what each kernel's code computes, the rounding by the CPU's function."""
    from horovod_huffcomp import quantizers, rng
    from horovod_huffcomp.coders import shs, symbol

    mask64 = (1 << 64) - 1

    def values(ptrs, t):
        return arrays[int(ptrs[t])].astype(np.float64)

    def keys(v, f64):
        a = np.abs(v)
        return (a.view(np.uint64) if f64 else a.astype(np.float32).view(np.uint32)
                .astype(np.uint64))

    def absmax(grid, args):
        ptrs, sizes, maxbits, bad = args
        for t in range(grid[1]):
            v = np.abs(values(ptrs, t))
            bad[t] |= int(not np.isfinite(v).all())
            maxbits[t] = np.array(v.max() if v.size else 0.0).view(np.uint64)

    def scales(grid, args):
        maxbits, bad, hi, lo, l2, fmt, _, first, count, out = args
        assert int(fmt) == 0
        for j in range(int(first[count])):
            t = int(np.searchsorted(first[: count + 1], j, "right")) - 1
            m = float(maxbits[j: j + 1].view(np.float64)[0])
            sq = float(hi[j]) * 2.0**-20 + float(lo[j]) * 2.0**-40
            out[j] = (np.nan if bad[t] else 0.0 if not m else
                      quantizers._round_up_f32(m * np.sqrt(sq) if l2 else m))

    def buckets(ptrs, sizes, first, blog2, t):
        v = values(ptrs, t)
        for b in range(max(1, -(-v.size >> int(blog2)))):
            lo = b << int(blog2)
            yield first[t] + b, lo, v[lo: lo + (1 << int(blog2))]

    def absmax_buckets(grid, args):
        ptrs, sizes, first, blog2, maxbits, bad = args
        for t in range(grid[1]):
            for j, _, v in buckets(ptrs, sizes, first, blog2, t):
                bad[t] |= int(not np.isfinite(v).all())
                maxbits[j] = np.array(np.abs(v).max() if v.size else 0.0).view(np.uint64)

    def sumsq_buckets(grid, args):
        ptrs, sizes, first, blog2, maxbits, hi, lo = args
        for t in range(grid[1]):
            for j, _, v in buckets(ptrs, sizes, first, blog2, t):
                m = float(maxbits[j: j + 1].view(np.float64)[0])
                if m:
                    terms = np.floor((np.abs(v) / m) ** 2 * 2.0**40).astype(np.uint64)
                    hi[j] += (terms >> np.uint64(20)).sum()
                    lo[j] += (terms & np.uint64(0xFFFFF)).sum()

    def quantize_buckets(grid, args):
        ptrs, sizes, first, blog2, scale, s, seed, streams, offsets, states = args
        for t in range(grid[1]):
            key = np.uint64(rng.stream_key(np.uint64(seed), np.uint64(streams[t])))
            for j, lo, v in buckets(ptrs, sizes, first, blog2, t):
                out = np.zeros(v.size, np.int8)
                if scale[j] > 0 and np.isfinite(scale[j]):
                    quantizers._stochastic_round(v, int(s), float(scale[j]), key,
                                                 np.zeros(0, np.bool_), out, lo)
                states[offsets[t] + lo: offsets[t] + lo + v.size] = out
        captured["states"] = states

    def hist(grid, args, f64):
        ptrs, sizes, prefix, krem, shift, rows = args
        high = 0 if shift + 8 >= 64 else (mask64 << int(shift + 8)) & mask64
        for t in range(grid[1]):
            if krem[t] <= 0:
                continue
            k = keys(values(ptrs, t), f64)
            k = k[(k & np.uint64(high)) == prefix[t]]
            np.add.at(rows, t * 256 + ((k >> np.uint64(shift)) & np.uint64(255)).astype(int), 1)

    def pick(grid, args):
        rows, prefix, krem, shift, count = args
        for t in range(int(count)):
            if krem[t] <= 0:
                continue
            above = 0
            for d in range(255, -1, -1):
                if above + int(rows[t * 256 + d]) >= krem[t] or d == 0:
                    krem[t] -= above
                    prefix[t] |= np.uint64(d << int(shift))
                    break
                above += int(rows[t * 256 + d])

    def blocks(args, f64):
        ptrs, sizes, first, count, b0, b1, prefix = args[:7]
        for b in range(int(b0), int(b1)):
            t = int(np.searchsorted(first[: count + 1], b, "right")) - 1
            lo = (b - int(first[t])) * 256
            k = keys(values(ptrs, t)[lo: lo + 256], f64)
            yield b, t, lo, k, (k == prefix[t]) & (prefix[t] != 0)

    def ties(grid, args, f64):
        for b, _, _, _, tie in blocks(args, f64):
            args[-1][b] = tie.sum()

    def quantize(grid, args, f64):
        (ptrs, sizes, first, count, b0, b1, prefix, need, tie_at, scale, s, seed, streams,
         offsets, states, raw) = args
        assert (int(s) == 0) == isinstance(raw, np.ndarray)  # exact top-k: raw magnitudes
        for b, t, lo, k, tie in blocks(args, f64):
            rank = tie_at[b] - tie_at[first[t]] + np.cumsum(tie) - tie
            keep = (k > prefix[t]) | (tie & (rank < need[t]))
            x = values(ptrs, t)[lo: lo + 256]
            out = np.zeros(x.size, np.int8)
            key = np.uint64(rng.stream_key(np.uint64(seed), np.uint64(streams[t])))
            if int(s) == 0 and 0 < scale[t] < np.inf:
                out[keep] = np.where(x[keep] < 0, -1, 1)
                at = offsets[t] + lo + np.flatnonzero(keep)
                raw[at] = np.abs(x[keep]).astype(np.float32).view(np.uint32)
                captured["raw"] = raw
            elif int(s) and scale[t] > 0 and np.isfinite(scale[t]):
                quantizers._stochastic_round(x, int(s), float(scale[t]), key, keep, out, lo)
            states[offsets[t] + lo: offsets[t] + lo + x.size] = out
        captured["states"] = states

    # SHS: its code from the sampled counts, its chunk table and bits, by the CPU coder's
    # functions over the captured states (and raw magnitudes), placed as the kernels place
    # them (a tensor's chunks from chunk_first[t], its bytes from chunk_byte)
    def tensors(sizes, count):
        at = np.concatenate([[0], np.cumsum((np.asarray(sizes[:count]) + 7) & ~7)])
        for t in range(int(count)):
            yield t, captured["states"][at[t]: at[t] + sizes[t]], int(at[t])

    def sample_counts(grid, args):
        states, offsets, sizes, s, seed, counts = args
        a = 2 * int(s) + 1
        for t in range(grid[0]):
            st = states[offsets[t]: offsets[t] + sizes[t]]
            counts[t * a: (t + 1) * a] = symbol.sample_counts(st, st.size, int(s), int(seed))

    def shs_codes(grid, args):
        counts, s, lengths, tab = args
        a, c = shs.alphabet(int(s)), 2 * int(s) + 1
        for t in range(grid[0]):
            code = shs.code_of_counts(counts[t * c: (t + 1) * c].astype(np.int64), int(s))
            lengths[t * a: (t + 1) * a] = code.lengths
            tab[t * a: (t + 1) * a] = (code.codes.astype(np.uint32) << 5) | code.lengths

    def shs_chunk_bits(grid, args):
        _, _, _, _, sizes, clog2, first, count, s, _, tab, raw, bits = args
        a = shs.alphabet(int(s))
        for t, st, _ in tensors(sizes, count):
            lens = (tab[t * a: (t + 1) * a] & 31).astype(np.int64)
            bits[first[t]: first[t + 1]] = shs._sizes(st, st.size, int(clog2[t]), int(s), lens,
                                                      31 if int(raw) else 0)

    def shs_write(grid, args):
        (_, _, _, _, sizes, clog2, first, count, s, _, tab), chunk_byte, out = (
            args[:11], args[-2], args[-1])
        a = shs.alphabet(int(s))
        for t, st, at in tensors(sizes, count):
            lens = (tab[t * a: (t + 1) * a] & 31).astype(np.int64)
            codes = (tab[t * a: (t + 1) * a] >> 5).astype(np.int64)
            raw = (np.where(st != 0, captured["raw"][at: at + st.size], 0) if len(args) == 15
                   else np.zeros(0, np.uint32))
            m = int(first[t + 1] - first[t])
            bits = shs._sizes(st, st.size, int(clog2[t]), int(s), lens, 31 if raw.size else 0)
            offsets = np.concatenate([chunk_byte[first[t]: first[t + 1]],
                                      [int(chunk_byte[first[t] + m - 1]) + (bits[-1] + 7) // 8]
                                      if m else []]).astype(np.int64)
            view = out.view(np.uint8)
            part = np.zeros(view.size, np.uint8)
            shs._write(st, st.size, int(clog2[t]), int(s), lens, codes, raw, offsets, part)
            view |= part

    out = {"hc_scales": scales, "hc_topk_pick": pick, "hc_sample_counts": sample_counts,
           "hc_build_shs_codes": shs_codes, "hc_shs_chunk_bits": shs_chunk_bits,
           "hc_shs_write": shs_write, "hc_shs_write_raw": shs_write}
    for suf, f64 in (("f16", False), ("f32", False), ("f64", True)):
        out[f"hc_absmax_{suf}"] = absmax
        out[f"hc_absmax_buckets_{suf}"] = absmax_buckets
        out[f"hc_sumsq_buckets_{suf}"] = sumsq_buckets
        out[f"hc_quantize_buckets_{suf}"] = quantize_buckets
        for name, fn in (("topk_hist", hist), ("topk_ties", ties), ("quantize_topk", quantize)):
            out[f"hc_{name}_{suf}"] = (lambda fn, f64: lambda g, a: fn(g, a, f64))(fn, f64)
    return out


def _emulate(monkeypatch, xs) -> dict:
    """The checked launches (fixture ``checked_launches``) of the kernels :func:`_emulations`
    has followed by their emulation over the arrays ``xs``; returns the dict the emulations
    capture the states and raw magnitudes in."""
    captured = {}
    emulate = _emulations({x.ctypes.data: x for x in xs}, captured)
    checking = gpu_backend.kernel

    def kernel(stage, name):
        launch = checking(stage, name)

        def run(grid, block, args):
            launch(grid, block, args)
            if name in emulate:
                emulate[name](grid, args)
        return run

    monkeypatch.setattr(gpu_backend, "kernel", kernel)
    return captured


@pytest.mark.parametrize("quantizer", ["topk", "qsgd-buckets"])
def test_states_through_emulated_kernels(checked_launches, monkeypatch, quantizer):
    """gpu_backend's orchestration of top-k, quantized and exact (passes and their shifts per
    dtype group, the slices each launch gets, the ties' prefix sum, the per-block launches,
    exact top-k's raw magnitudes beside the states) and of
    QSGD's buckets (per-bucket scales through scale_first, L2 and max norms) with their
    kernels emulated in NumPy as they read their arguments: the CPU's states and scales, for
    tensors of every dtype in one batch, many ties, zeros, one element, block boundaries."""
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal(5000).astype(np.float32),
          rng.choice([-1.0, 0.0, 0.5, 1.0], 3000).astype(np.float64),
          rng.standard_normal(1).astype(np.float16), np.zeros(700, np.float32),
          rng.choice([-2.0, 2.0, 0.25], 513).astype(np.float16)]
    captured = _emulate(monkeypatch, xs)
    settings = ([dict(ratio=r, levels=s) for r, s in ((0.01, 8), (0.3, 1), (1.0, 127),
                                                      (0.01, 0), (0.5, 0))]
                if quantizer == "topk" else
                [dict(levels=s, norm=norm, bucket=b) for s, norm, b in (
                    (8, "l2", 16), (4, "max", 64), (127, "l2", 1024))])
    q_name = "topk" if quantizer == "topk" else "qsgd"
    order = sorted(range(len(xs)), key=lambda i: gpu_backend._SUFFIX[xs[i].dtype])
    for kw in settings:
        kw = dict(dict(norm=None, ratio=0.01, bucket=None), **kw)
        secs = gpu_backend.encode_sections([x.view(DeviceArray) for x in xs], quantizer=q_name,
                                           coder="huffman", seed=7, **kw)
        at = 0
        for i in order:
            q = quantize(xs[i], q_name, kw["levels"], kw["norm"], 7, stream=i,
                         ratio=kw["ratio"], bucket=kw["bucket"])
            got = captured["states"][at: at + xs[i].size]
            assert np.array_equal(got, q.states[: xs[i].size]), (kw, i)
            if q.raw is not None:  # exact top-k: the kept entries' raw magnitudes
                mags = captured["raw"][at: at + xs[i].size]
                assert np.array_equal(np.where(got != 0, mags, 0), q.raw), (kw, i)
            assert np.array_equal(np.float32(secs[i].scale), np.float32(q.scale)), (kw, i)
            at += (xs[i].size + 7) & ~7


def test_shs_encode_through_emulated_kernels(checked_launches, monkeypatch):
    """gpu_backend's SHS encode (sampled counts, the codes' lengths in the plan the host
    writes the codebooks from, the chunk table, the writer's bytes, the sections) with its
    kernels emulated by the CPU coder's functions over the states the emulated quantize
    kernels leave (QSGD's buckets, exact top-k): the CPU backend's payload, byte for byte."""
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal(5000).astype(np.float32), np.zeros(700, np.float32),
          rng.standard_normal(1).astype(np.float16), rng.standard_normal(9000)]
    xs[3][rng.random(9000) < 0.97] = 0
    _emulate(monkeypatch, xs)
    for kw in (dict(quantizer="qsgd", levels=8, norm="max", bucket=64),
               dict(quantizer="qsgd", levels=127, norm="l2", bucket=16),
               dict(quantizer="topk", levels=0, norm=None, ratio=0.05)):
        kw = dict(dict(bucket=None, ratio=0.01), **kw)
        secs = gpu_backend.encode_sections([x.view(DeviceArray) for x in xs], coder="shs",
                                           seed=7, chunk_log2=12, **kw)
        want = hc.encode_many(xs, coder="shs", seed=7, chunk_log2=12, **kw)
        assert hc.payload.pack(secs, True) == want, kw


def test_rlh_encode_through_emulated_kernels(checked_launches, monkeypatch):
    """gpu_backend's RLH encode (the plan to the host, gpu_rlh's runs, codes and placed
    codewords over the states the emulated quantize kernels leave: QSGD's buckets, exact
    top-k's signs and raw magnitudes): the CPU backend's payload, byte for byte; no writer
    kernel launched."""
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal(5000).astype(np.float32), np.zeros(700, np.float32),
          rng.standard_normal(1).astype(np.float16),
          np.repeat(rng.standard_normal(30), 300).astype(np.float64)]
    _emulate(monkeypatch, xs)
    for kw in (dict(quantizer="qsgd", levels=8, norm="max", bucket=64),
               dict(quantizer="qsgd", levels=2, norm="l2", bucket=1024),
               dict(quantizer="topk", levels=0, norm=None, ratio=0.3)):
        kw = dict(dict(bucket=None, ratio=0.01), **kw)
        checked_launches.clear()
        secs = gpu_backend.encode_sections([x.view(DeviceArray) for x in xs], coder="rlh",
                                           seed=7, chunk_log2=12, **kw)
        want = hc.encode_many(xs, coder="rlh", seed=7, chunk_log2=12, **kw)
        assert hc.payload.pack(secs, True) == want, kw
        assert not [k for k in checked_launches if k.endswith(("_write", "_write_raw"))]


def test_decode_launches(checked_launches, monkeypatch):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(n).astype(np.float32) for n in (5000, 1, 30_000)]
    xs[2][rng.random(30_000) < 0.995] = 0
    blobs = [hc.encode_many(xs, "qsgd", c, 8, "max", seed=r, elias_layout=layout)
             for r, (c, layout) in enumerate([("huffman", "runlength"), ("sh", "runlength"),
                                              ("auto", "runlength"), ("elias-delta", "gap"),
                                              ("shs", "runlength"), ("rlh", "runlength")])]
    for limit in (0, 1 << 40):  # the tiles, the symbol buffer (gpu_backend._by_symbols)
        monkeypatch.setattr(gpu_backend, "SYMBOLS_MAX_CHUNKS", limit)
        checked_launches.clear()
        gpu_backend.decode_sum(blobs[:2])  # huffman everywhere: fused
        assert ("hc_huffman_decode_symbols" in checked_launches) == bool(limit)
        checked_launches.clear()
        empty = hc.encode_many([], "qsgd", "huffman", 8)  # no tensors: nothing launched
        checked_launches.clear()
        assert gpu_backend.decode_sum([empty, empty]) == [] and not checked_launches
        gpu_backend.decode_sum(blobs)  # huffman, ZRH, Elias, SHS, RLH tensors payload by payload
        assert {"hc_huffman_decoders", "hc_huffman_decode_sum", "hc_zrh_decode_tables",
                "hc_zrh_decode", "hc_elias_decode", "hc_shs_decoders", "hc_shs_decode",
                "hc_rlh_decode", "hc_add_states"} <= set(checked_launches)


def test_scales_past_float32_range():
    """Scales the device made Inf (past float32's range; the quantize kernels left those
    states 0) become NaN in the sections, as the CPU backend writes them, or raise
    NonFiniteError; tensors that held NaN/Inf raise first."""
    scales = np.array([1.0, np.inf, 0.0, np.nan], np.float32)
    gpu_backend._check_finite(np.zeros(4, np.int32), "propagate", scales)
    assert np.array_equal(scales, [1.0, np.nan, 0.0, np.nan], equal_nan=True)
    with pytest.raises(hc.NonFiniteError, match="past float32's range"):
        gpu_backend._check_finite(np.zeros(4, np.int32), "raise",
                                  np.array([np.inf], np.float32))
    with pytest.raises(hc.NonFiniteError, match="NaN or Inf"):
        gpu_backend._check_finite(np.array([0, 1], np.int32), "raise",
                                  np.array([np.inf, np.nan], np.float32))
