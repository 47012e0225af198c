"""Quantize-kernel variants on a GPU, timed side by side and checked byte for byte against
the reference arithmetic (a float64 division per element, as the CPU backend computes).
A development tool for issue #3: ``python scripts/quantize_variants.py [--mb 1024]`` on a
machine with CuPy and a CUDA GPU.

  division      the reference: |x| s / scale divided per element (the backend before
                hc_div_try), full groups of 8 without per-element bounds tests
  backend       cuda/quantize.cu hc_quantize_f32, what the GPU backend runs: the division
                by the tensor's scale as a product with 1 / scale, one Markstein correction
                and an exact check (hc_div_try) that divides the rare value it cannot vouch
                for (hc_div_fixed)
  deferred      the same, the fallback divisions done after the group's unrolled loop
  unchecked     the product and the correction without the check (not proven exact)
  no-divide     |x| * (s / scale): NOT the payload's arithmetic, timing only
  no-hash       the division without the stochastic draw: NOT the payload's, timing only
  copy-like     read the floats, write one byte each: the memory floor of the stage

Inputs: gradient-like (30% exact zeros), every finite float32 bit pattern, and values a few
ulps either side of level boundaries. Prints a table: ms (CUDA events, median, gradient-like
input), GB/s of float32 input, bytes differing from the reference on each input.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

VARIANTS = r'''
#include "quantize.cu"

template <int V>
__device__ __forceinline__ unsigned hc_q_variant(double v, int s, double scale, double inv,
                                                 double rcp, uint64_t h) {
    double a;
    if (V == 2) {
        double x = fabs(v) * (double)s;
        double q = x * rcp;
        a = fma(fma(-q, scale, x), rcp, q);
    } else if (V == 3) {
        a = fabs(v) * inv;
    } else {
        a = fabs(v) * (double)s / scale;
    }
    double lev = floor(a);
    if (V != 4) {
        unsigned d = (unsigned)(hc_mix64(h) >> 40);
        if ((double)d * HC_INV24 < a - lev) lev += 1.0;
    }
    int l = lev > (double)s ? s : (int)lev;
    return (unsigned char)(v < 0 ? -l : l);
}

template <int V>
__device__ void hc_quantize_v(const unsigned long long* ptrs, const long long* sizes,
                              const float* scales, int s, unsigned long long seed,
                              const long long* streams, const long long* state_offsets,
                              signed char* states) {
    const int t = blockIdx.y;
    const float* x = reinterpret_cast<const float*>(ptrs[t]);
    const long long n = sizes[t];
    const double scale = (double)scales[t], inv = (double)s / scale, rcp = 1.0 / scale;
    const uint64_t key = hc_stream_key(seed, (uint64_t)streams[t]);
    unsigned long long* words = reinterpret_cast<unsigned long long*>(states + state_offsets[t]);
    const bool zero = !(scale > 0.0) || isinf(scale);
    const bool wide = hc_wide(x);
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g << 3 < n;
         g += (long long)gridDim.x * blockDim.x) {
        const long long i0 = g << 3;
        unsigned long long word = 0;
        if (V == 5) {
            if (wide && i0 + 8 <= n) {
                const float4* p = reinterpret_cast<const float4*>(x + i0);
                float4 a = __ldg(p), b = __ldg(p + 1);
                float f[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
                for (int k = 0; k < 8; ++k)
                    word |= (unsigned long long)(unsigned char)(signed char)(f[k] * 1e3f)
                            << (8 * k);
            }
        } else if (V == 6 && !zero) {
            double v[8], q[8];
            hc_load8(x, i0, n, wide, v);
            unsigned redo = 0;
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                bool exact;
                q[k] = hc_div_try(fabs(v[k]) * (double)s, scale, rcp, exact);
                redo |= exact ? 0u : 1u << k;
            }
            if (redo) {
#pragma unroll
                for (int k = 0; k < 8; ++k)
                    if (redo >> k & 1) q[k] = fabs(v[k]) * (double)s / scale;
            }
            const int m = n - i0 < 8 ? (int)(n - i0) : 8;
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                if (k >= m) break;
                word |= (unsigned long long)(unsigned char)hc_round_level(q[k], v[k] < 0, s, key,
                                                                          i0 + k)
                        << (8 * k);
            }
        } else if (!zero) {
            double v[8];
            hc_load8(x, i0, n, wide, v);
            uint64_t h = key + (uint64_t)i0 * HC_GOLDEN;
            if (i0 + 8 <= n) {
#pragma unroll
                for (int k = 0; k < 8; ++k, h += HC_GOLDEN)
                    word |= (unsigned long long)hc_q_variant<V>(v[k], s, scale, inv, rcp, h)
                            << (8 * k);
            } else {
                for (int k = 0; k < 8; ++k, h += HC_GOLDEN)
                    if (i0 + k < n)
                        word |= (unsigned long long)hc_q_variant<V>(v[k], s, scale, inv, rcp, h)
                                << (8 * k);
            }
        }
        words[g] = word;
    }
}

#define HC_V(N)                                                                                \
    extern "C" __global__ void hc_quantize_v##N(                                               \
        const unsigned long long* p, const long long* n, const float* scales, int s,           \
        unsigned long long seed, const long long* streams, const long long* offsets,           \
        signed char* states) {                                                                 \
        hc_quantize_v<N>(p, n, scales, s, seed, streams, offsets, states);                     \
    }
HC_V(1)
HC_V(2)
HC_V(3)
HC_V(4)
HC_V(5)
HC_V(6)
'''

NAMES = [("division", "hc_quantize_v1"), ("backend", "hc_quantize_f32"),
         ("deferred", "hc_quantize_v6"),
         ("unchecked", "hc_quantize_v2"), ("no-divide", "hc_quantize_v3"),
         ("no-hash", "hc_quantize_v4"), ("copy-like", "hc_quantize_v5")]


def main():
    import cupy

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--levels", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    cuda = Path(__file__).resolve().parent.parent / "cuda"
    mod = cupy.RawModule(code=VARIANTS, options=("--fmad=false", "-std=c++17", f"-I{cuda}"))
    n = a.mb << 18
    rng = cupy.random.default_rng(0)
    inputs = []
    for kind in ("gradients", "every float", "boundaries"):
        if kind == "gradients":  # 30% exact zeros
            x = rng.standard_normal(n, dtype=cupy.float32) * 1e-3
            x[rng.random(n) < 0.3] = 0
        elif kind == "every float":  # exponents across the whole range
            bits = rng.integers(0, 1 << 32, n, dtype=cupy.uint64).astype(cupy.uint32)
            x = bits.view(cupy.float32)
            x[~cupy.isfinite(x)] = 1.0
        else:  # k / s of a scale, nudged by up to 3 ulps: a on either side of an integer
            top = cupy.float32(0.7)
            x = (rng.integers(0, a.levels + 1, n).astype(cupy.float32) / a.levels) * top
            x = (x.view(cupy.int32) + rng.integers(-3, 4, n).astype(cupy.int32)).view(
                cupy.float32)
            x[0] = top
        inputs.append(x)
    threads = 256
    grid = (max(1, min(4096, -(-n // (threads * 8)))), 1)
    rows = []
    ref = {}
    for name, fn in NAMES:
        k = mod.get_function(fn)
        diffs = []
        ms = []
        for j, x in enumerate(inputs):
            scale = float(cupy.abs(x).max())
            scale = float(cupy.float32(scale))  # the backend's float32 scale (not rounded up)
            ptrs = cupy.asarray([x.data.ptr], cupy.uint64)
            sizes = cupy.asarray([n], cupy.int64)
            scales = cupy.asarray([scale], cupy.float32)
            streams = cupy.asarray([5], cupy.int64)
            offs = cupy.asarray([0, n], cupy.int64)
            out = cupy.full(n, 0x55, cupy.int8)
            args = (ptrs, sizes, scales, cupy.int32(a.levels), cupy.uint64(7), streams, offs, out)
            k(grid, (threads,), args)
            if fn == "hc_quantize_v1":
                ref[j] = out.copy()
            diffs.append(int((out != ref[j]).sum()))
            if j == 0:
                for _ in range(3):
                    k(grid, (threads,), args)
                times = []
                for _ in range(a.repeat):
                    e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
                    e0.record()
                    k(grid, (threads,), args)
                    e1.record()
                    e1.synchronize()
                    times.append(cupy.cuda.get_elapsed_time(e0, e1))
                ms.append(statistics.median(times))
        rows.append((name, ms[0], 4 * n / ms[0] / 1e6, diffs))
    print(f"\n{cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, {a.mb} MB float32, "
          f"QSGD s = {a.levels}")
    print("| variant | ms | GB/s of input | bytes != division (gradients, every float, "
          "boundaries) |")
    print("|---|---|---|---|")
    for name, ms, gbs, d in rows:
        print(f"| {name} | {ms:.3f} | {gbs:.0f} | {', '.join(map(str, d))} |")


if __name__ == "__main__":
    main()
