// Quantize stage (quantizers.py on the GPU), batched: every kernel takes a list of tensors
// (device pointers and sizes) and runs over all of them in one launch, blockIdx.y = tensor.
//
//   hc_absmax_*    per tensor max|x| (as the bits of a double: non-negative doubles order
//                  like their bits, so atomicMax on them is a max) and a non-finite flag
//   hc_sumsq_*     the L2 scale's fixed-point sum of squares, two integer sums (order free)
//   hc_moments_*   that and the fixed-point sum of |x| / m: the GenNorm fit's moments (fp4)
//   hc_scales      the float32 scale of every tensor or bucket (0, NaN for non-finite input)
//   hc_quantize_*  stochastic rounding into int8 states (zero padded to a multiple of 8),
//                  key = mix64(seed * G + streams[t])
//   hc_quantize_fp_*  CO3's float formats: the code nearest |x| / scale, signed
//   hc_*_buckets_*    QSGD's buckets: max, sum of squares and rounding per bucket
//   hc_topk_*, hc_quantize_topk_*  quantized top-k: radix select, ties, rounding
//
// Suffixes: _f16 (float16 as its bits), _f32, _f64. Build with --fmad=false.
#include "common.cuh"

// Eight consecutive values x[i0 .. i0 + 7] (i0 a multiple of 8) as doubles; those at or past
// n read as 0. `wide`: x is 16-byte aligned, so a full group loads as 16-byte vectors (every
// thread of the quantize stage moves 8 values at a time: more bytes in flight per thread).
__device__ __forceinline__ void hc_load8(const float* x, long long i0, long long n, bool wide,
                                         double v[8]) {
    if (wide && i0 + 8 <= n) {
        const float4* p = reinterpret_cast<const float4*>(x + i0);
        float4 a = __ldg(p), b = __ldg(p + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
        v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        return;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = i0 + k < n ? (double)x[i0 + k] : 0.0;
}
__device__ __forceinline__ void hc_load8(const double* x, long long i0, long long n, bool wide,
                                         double v[8]) {
    if (wide && i0 + 8 <= n) {
        const double2* p = reinterpret_cast<const double2*>(x + i0);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            double2 a = __ldg(p + k);
            v[2 * k] = a.x, v[2 * k + 1] = a.y;
        }
        return;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = i0 + k < n ? x[i0 + k] : 0.0;
}
__device__ __forceinline__ void hc_load8(const unsigned short* x, long long i0, long long n,
                                         bool wide, double v[8]) {
    if (wide && i0 + 8 <= n) {
        uint4 a = __ldg(reinterpret_cast<const uint4*>(x + i0));
        const unsigned int w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            v[2 * k] = (double)hc_half_to_float((unsigned short)(w[k] & 0xFFFFu));
            v[2 * k + 1] = (double)hc_half_to_float((unsigned short)(w[k] >> 16));
        }
        return;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k)
        v[k] = i0 + k < n ? (double)hc_half_to_float(x[i0 + k]) : 0.0;
}

// x / b correctly rounded, as the division gives it, for a divisor b > 0 fixed per tensor
// (the scale) and y = 1 / b computed once: q = x y, corrected once with the exact residual
// x - q b (Markstein), and `exact` only when q is provably the nearest double: strictly
// closer to x / b than its neighbour on the side of x / b (both residuals are exact: no
// underflow in the range allowed). Otherwise (a tie, x or q out of that range: rare)
// hc_div_fixed divides. A float64 division per element made the quantize stage 1.5x slower
// (scripts/quantize_variants.py: 1.33 -> 0.88 ms on 1 GB; the product and correction alone,
// unproven, 0.53 ms; the divisions kept out of the unrolled loop, 0.99 ms: more registers).
__device__ __forceinline__ double hc_div_try(double x, double b, double y, bool& exact) {
    double q = x * y;
    q = fma(fma(-q, b, x), y, q);  // x == 0: q = +0, as x / b
    const double r = fma(-q, b, x);
    const double q2 = __longlong_as_double(__double_as_longlong(q) + (r > 0.0 ? 1 : -1));
    exact = x == 0.0 || (x >= 0x1p-900 && x <= 0x1p900 && q >= 0x1p-900 && q <= 0x1p900 &&
                         (r == 0.0 || fabs(r) < fabs(fma(-q2, b, x))));
    return q;
}

__device__ __forceinline__ double hc_div_fixed(double x, double b, double y) {
    bool exact;
    const double q = hc_div_try(x, b, y, exact);
    return exact ? q : x / b;
}

template <class T>
__device__ __forceinline__ bool hc_wide(const T* x) {
    return (reinterpret_cast<unsigned long long>(x) & 15) == 0;
}

__device__ __forceinline__ unsigned long long hc_warp_max(unsigned long long v) {
    for (int o = 16; o; o >>= 1) {
        unsigned long long u = __shfl_down_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}

__device__ __forceinline__ unsigned long long hc_warp_sum(unsigned long long v) {
    for (int o = 16; o; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// The largest |v[k]| of 8 values into m (as the bits of a non-negative double), `bad` set if
// one is NaN or Inf.
__device__ __forceinline__ void hc_max8(const double v[8], unsigned long long& m, int& bad) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const double a = fabs(v[k]);
        if (!isfinite(a)) bad = 1;
        else m = max(m, (unsigned long long)__double_as_longlong(a));
    }
}

// A fixed-point term added to a sum kept as two integers: its bits above 2^20 and below.
__device__ __forceinline__ void hc_fixed_add(unsigned long long term, unsigned long long& hi,
                                             unsigned long long& lo) {
    hi += term >> 20;
    lo += term & 0xFFFFFull;
}

template <class T>
__device__ void hc_absmax(const unsigned long long* ptrs, const long long* sizes,
                          unsigned long long* maxbits, int* nonfinite) {
    const int t = blockIdx.y;
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const bool wide = hc_wide(x);
    unsigned long long m = 0;
    int bad = 0;
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g << 3 < n;
         g += (long long)gridDim.x * blockDim.x) {
        double v[8];
        hc_load8(x, g << 3, n, wide, v);  // past n: 0, which changes no max
        hc_max8(v, m, bad);
    }
    m = hc_warp_max(m);
    bad = __any_sync(0xffffffffu, bad);
    if ((threadIdx.x & 31) == 0) {
        if (m) atomicMax(maxbits + t, m);
        if (bad) atomicOr(nonfinite + t, 1);
    }
}

// The fixed-point sums of (|x| / m)^2 (hi, lo) and, with MOMENTS, of |x| / m (hi1, lo1: the
// GenNorm fit's first moment, gennorm.abs_moments_fixed), order free.
template <class T, bool MOMENTS>
__device__ void hc_sumsq(const unsigned long long* ptrs, const long long* sizes,
                         const unsigned long long* maxbits, unsigned long long* hi,
                         unsigned long long* lo, unsigned long long* hi1 = nullptr,
                         unsigned long long* lo1 = nullptr) {
    const int t = blockIdx.y;
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const double m = __longlong_as_double((long long)maxbits[t]);
    if (m == 0.0 || !isfinite(m)) return;
    const double rm = 1.0 / m;
    const bool wide = hc_wide(x);
    unsigned long long h = 0, l = 0, h1 = 0, l1 = 0;
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g << 3 < n;
         g += (long long)gridDim.x * blockDim.x) {
        double v[8];
        hc_load8(x, g << 3, n, wide, v);  // past n: 0, whose term is 0
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const double y = hc_div_fixed(fabs(v[k]), m, rm);
            hc_fixed_add(hc_sumsq_of(y), h, l);
            if (MOMENTS) hc_fixed_add(hc_abs_term(y), h1, l1);
        }
    }
    h = hc_warp_sum(h);
    l = hc_warp_sum(l);
    if (MOMENTS) {
        h1 = hc_warp_sum(h1);
        l1 = hc_warp_sum(l1);
    }
    if ((threadIdx.x & 31) == 0) {
        atomicAdd(hi + t, h);
        atomicAdd(lo + t, l);
        if (MOMENTS) {
            atomicAdd(hi1 + t, h1);
            atomicAdd(lo1 + t, l1);
        }
    }
}

// The states of every tensor, 8 at a time (one 8-byte store; coders read zero padding to a
// multiple of 8, state_offsets are multiples of 8): state(v, i) of element i of value v, or
// zeros where `zero` (scale 0: an all-zero tensor; NaN: decode gives NaN).
template <class T, class F>
__device__ __forceinline__ void hc_states8(const T* x, long long n, bool zero,
                                           signed char* out, F state) {
    unsigned long long* words = reinterpret_cast<unsigned long long*>(out);
    const bool wide = hc_wide(x);
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g << 3 < n;
         g += (long long)gridDim.x * blockDim.x) {
        const long long i0 = g << 3;
        unsigned long long word = 0;
        if (!zero) {
            double v[8];
            hc_load8(x, i0, n, wide, v);
            const int m = n - i0 < 8 ? (int)(n - i0) : 8;
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                if (k >= m) break;
                word |= (unsigned long long)(unsigned char)state(v[k], i0 + k) << (8 * k);
            }
        }
        words[g] = word;
    }
}

// qsgd / terngrad: stochastic rounding, key = mix64(seed * G + streams[t]).
template <class T>
__device__ void hc_quantize(const unsigned long long* ptrs, const long long* sizes,
                            const float* scales, int s, unsigned long long seed,
                            const long long* streams, const long long* state_offsets,
                            signed char* states) {
    const int t = blockIdx.y;
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const double scale = (double)scales[t], rscale = 1.0 / scale;
    const uint64_t key = hc_stream_key(seed, (uint64_t)streams[t]);
    signed char* out = states + state_offsets[t];
    hc_states8(x, n, !(scale > 0.0) || isinf(scale), out, [&](double v, long long i) {
        const double a = hc_div_fixed(fabs(v) * (double)s, scale, rscale);
        return hc_round_level(a, v < 0, s, key, i);
    });
}

// A float format `fmt` (HC_FP_*; s its largest code): the code nearest |x| / scale, signed.
template <class T>
__device__ void hc_quantize_fp(const unsigned long long* ptrs, const long long* sizes,
                               const float* scales, int fmt, int s,
                               const long long* state_offsets, signed char* states) {
    const int t = blockIdx.y;
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const double scale = (double)scales[t], rscale = 1.0 / scale;
    const HcFp f = hc_fp_format(fmt, s);
    signed char* out = states + state_offsets[t];
    hc_states8(x, n, !(scale > 0.0) || isinf(scale), out, [&](double v, long long) {
        const int k = hc_fp_code(hc_div_fixed(fabs(v), scale, rscale), f);
        return v < 0 ? -k : k;
    });
}

// QSGD's buckets (buckets of 2^blog2 >= 16 elements, so a thread's 8 values lie in one;
// bucket b of tensor t is entry first[t] + b of the per-bucket arrays). A warp's lanes hold 32
// consecutive groups of 8 (a warp's first group is a multiple of 32), so the lanes sharing a
// bucket are aligned runs of `width` = min(32, 2^blog2 / 8): xor shuffles within such a run
// reduce its values, its first lane adds them up for the bucket. The loops run warp-uniformly
// (lanes past n load zeros) so that every lane takes part in the shuffles.
__device__ __forceinline__ int hc_bucket_lanes(int blog2) {
    return blog2 >= 8 ? 32 : 1 << (blog2 - 3);
}

template <class T>
__device__ void hc_absmax_buckets(const unsigned long long* ptrs, const long long* sizes,
                                  const long long* first, int blog2,
                                  unsigned long long* maxbits, int* nonfinite) {
    const int t = blockIdx.y, lane = threadIdx.x & 31, width = hc_bucket_lanes(blog2);
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const bool wide = hc_wide(x);
    unsigned long long* mb = maxbits + first[t];
    int bad = 0;
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; (g - lane) << 3 < n;
         g += (long long)gridDim.x * blockDim.x) {
        double v[8];
        hc_load8(x, g << 3, n, wide, v);  // past n: 0, which changes no max
        unsigned long long m = 0;
        hc_max8(v, m, bad);
        for (int o = width >> 1; o; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
        if ((lane & (width - 1)) == 0 && m) atomicMax(mb + ((g << 3) >> blog2), m);
    }
    bad = __any_sync(0xffffffffu, bad);
    if (lane == 0 && bad) atomicOr(nonfinite + t, 1);
}

template <class T>
__device__ void hc_sumsq_buckets(const unsigned long long* ptrs, const long long* sizes,
                                 const long long* first, int blog2,
                                 const unsigned long long* maxbits, unsigned long long* hi,
                                 unsigned long long* lo) {
    const int t = blockIdx.y, lane = threadIdx.x & 31, width = hc_bucket_lanes(blog2);
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t], at = first[t];
    const bool wide = hc_wide(x);
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; (g - lane) << 3 < n;
         g += (long long)gridDim.x * blockDim.x) {
        const long long b = (g << 3) >> blog2;
        const double m = (g << 3) < n ? __longlong_as_double((long long)maxbits[at + b]) : 0.0;
        unsigned long long h = 0, l = 0;
        if (m > 0.0 && isfinite(m)) {
            const double rm = 1.0 / m;
            double v[8];
            hc_load8(x, g << 3, n, wide, v);  // past n: 0, whose term is 0
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                hc_fixed_add(hc_sumsq_of(hc_div_fixed(fabs(v[k]), m, rm)), h, l);
            }
        }
        for (int o = width >> 1; o; o >>= 1) {
            h += __shfl_xor_sync(0xffffffffu, h, o);
            l += __shfl_xor_sync(0xffffffffu, l, o);
        }
        if ((lane & (width - 1)) == 0 && (h | l)) {
            atomicAdd(hi + at + b, h);
            atomicAdd(lo + at + b, l);
        }
    }
}

// Stochastic rounding with each bucket's own scale (scales[first[t] + b]; 0 or NaN: zeros).
template <class T>
__device__ void hc_quantize_buckets(const unsigned long long* ptrs, const long long* sizes,
                                    const long long* first, int blog2, const float* scales,
                                    int s, unsigned long long seed, const long long* streams,
                                    const long long* state_offsets, signed char* states) {
    const int t = blockIdx.y;
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const float* sc = scales + first[t];
    const uint64_t key = hc_stream_key(seed, (uint64_t)streams[t]);
    signed char* out = states + state_offsets[t];
    long long cur = -1;  // the bucket whose scale is at hand (a group of 8 lies in one)
    double scale = 0.0, rscale = 0.0;
    hc_states8(x, n, false, out, [&](double v, long long i) {
        if (i >> blog2 != cur) {
            cur = i >> blog2;
            scale = (double)sc[cur];
            rscale = 1.0 / scale;
        }
        if (!(scale > 0.0) || isinf(scale)) return 0;
        const double a = hc_div_fixed(fabs(v) * (double)s, scale, rscale);
        return hc_round_level(a, v < 0, s, key, i);
    });
}

// Quantized top-k (levels >= 1; quantizers.topk_mask, then QSGD's max norm on the kept
// entries): per tensor a radix select of the k-th largest key (common.cuh top-k), the ties'
// ranks by index, then stochastic rounding of the kept entries. krem[t] starts at k; prefix[t]
// at 0. hc_topk_hist: one pass's digit histogram (bits shift .. shift + 7) of the keys that
// match the digits chosen so far, into hist (tensors x 256; shared counters per block).
template <class T>
__device__ void hc_topk_hist(const unsigned long long* ptrs, const long long* sizes,
                             const unsigned long long* prefix, const long long* krem,
                             int shift, unsigned long long* hist) {
    __shared__ unsigned int local[256];
    const int t = blockIdx.y;
    if (krem[t] <= 0) return;  // k = 0: nothing to select (the whole block returns)
    for (int k = threadIdx.x; k < 256; k += blockDim.x) local[k] = 0;
    __syncthreads();
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const bool wide = hc_wide(x), f64 = sizeof(T) == 8;
    const uint64_t pre = prefix[t];
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g << 3 < n;
         g += (long long)gridDim.x * blockDim.x) {
        double v[8];
        hc_load8(x, g << 3, n, wide, v);
        const int m = n - (g << 3) < 8 ? (int)(n - (g << 3)) : 8;
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            if (k >= m) break;
            const uint64_t key = hc_topk_key(v[k], f64);
            if (hc_topk_matches(key, pre, shift)) atomicAdd(local + ((key >> shift) & 255), 1u);
        }
    }
    __syncthreads();
    for (int k = threadIdx.x; k < 256; k += blockDim.x)
        if (local[k]) atomicAdd(hist + (long long)t * 256 + k, (unsigned long long)local[k]);
}

// A warp per block of 256 elements, blocks b0 .. b1 - 1 of the batch's numbering (tensor t's
// from block_first[t]): lane l takes elements 8l .. 8l + 7 of the block; their values, keys
// and how many tie (equal the selected k-th largest key, when it is not 0).
struct HcTopkLane {
    int t;
    long long n, i0;
    uint64_t th;
    double v[8];
    uint64_t keys[8];
    int ties;
};

template <class T>
__device__ __forceinline__ HcTopkLane hc_topk_lane(const unsigned long long* ptrs,
                                                   const long long* sizes,
                                                   const long long* block_first, int count,
                                                   long long b, int lane,
                                                   const unsigned long long* prefix) {
    HcTopkLane L;
    L.t = hc_owner(b, block_first, count);
    const T* x = reinterpret_cast<const T*>(ptrs[L.t]);
    L.n = sizes[L.t];
    L.i0 = ((b - block_first[L.t]) << 8) + 8 * lane;
    L.th = prefix[L.t];
    hc_load8(x, L.i0, L.n, hc_wide(x), L.v);
    L.ties = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        L.keys[k] = hc_topk_key(L.v[k], sizeof(T) == 8);
        L.ties += L.i0 + k < L.n && L.th != 0 && L.keys[k] == L.th;
    }
    return L;
}

// Each block's ties.
template <class T>
__device__ void hc_topk_ties(const unsigned long long* ptrs, const long long* sizes,
                             const long long* block_first, int count, long long b0, long long b1,
                             const unsigned long long* prefix, unsigned int* ties) {
    const long long b = b0 + ((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (b >= b1) return;  // warp-uniform
    unsigned int c = hc_topk_lane<T>(ptrs, sizes, block_first, count, b, lane, prefix).ties;
    for (int o = 16; o; o >>= 1) c += __shfl_down_sync(0xffffffffu, c, o);
    if (lane == 0) ties[b] = c;
}

// The states of blocks b0 .. b1 - 1: each lane's ties ranked after those of its tensor's
// blocks before (tie_at: the ties' exclusive prefix sum over the batch's blocks) and of the
// lanes before it; kept entries (hc_topk_keep) rounded stochastically with the tensor's
// scale, the others 0 (all of them for a scale that is NaN, a tensor that held NaN/Inf, or
// Inf, past float32's range: the host writes NaN for it). s = 0, exact top-k: a kept entry's
// state is its sign and its magnitude's float32 bits go to raw_or_null (from
// state_offsets[t], as the states; null when s > 0).
template <class T>
__device__ void hc_quantize_topk(const unsigned long long* ptrs, const long long* sizes,
                                 const long long* block_first, int count, long long b0,
                                 long long b1, const unsigned long long* prefix,
                                 const long long* need, const long long* tie_at,
                                 const float* scales, int s, unsigned long long seed,
                                 const long long* streams, const long long* state_offsets,
                                 signed char* states, unsigned int* raw_or_null) {
    const long long b = b0 + ((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (b >= b1) return;  // warp-uniform
    const HcTopkLane L = hc_topk_lane<T>(ptrs, sizes, block_first, count, b, lane, prefix);
    const int t = L.t;
    const long long n = L.n, i0 = L.i0;
    const uint64_t th = L.th;
    const double scale = (double)scales[t], rscale = 1.0 / scale;
    const bool zero = !(scale > 0.0) || isinf(scale);  // also the host's NaN for Inf
    const uint64_t key = hc_stream_key(seed, (uint64_t)streams[t]);
    const int m = n - i0 < 0 ? 0 : n - i0 < 8 ? (int)(n - i0) : 8;
    const int c = L.ties;
    int incl = c;
    for (int o = 1; o < 32; o <<= 1) {
        const int u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += u;
    }
    if (m == 0) return;
    long long rank = tie_at[b] - tie_at[block_first[t]] + incl - c;
    unsigned long long word = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        if (k >= m) break;
        const bool kept = hc_topk_keep(L.keys[k], th, rank, need[t]);
        rank += th != 0 && L.keys[k] == th;
        if (kept && !zero && !s) {
            word |= (unsigned long long)(unsigned char)hc_topk_sign(L.v[k]) << (8 * k);
            raw_or_null[state_offsets[t] + i0 + k] = hc_raw_bits(L.v[k]);
        } else if (kept && !zero) {
            const double a = hc_div_fixed(fabs(L.v[k]) * (double)s, scale, rscale);
            const int level = hc_round_level(a, L.v[k] < 0, s, key, i0 + k);
            word |= (unsigned long long)(unsigned char)level << (8 * k);
        }
    }
    reinterpret_cast<unsigned long long*>(states + state_offsets[t])[i0 >> 3] = word;
}

#define HC_INSTANCES(SUF, T)                                                                   \
    extern "C" __global__ void hc_absmax_##SUF(const unsigned long long* p,                    \
                                               const long long* n, unsigned long long* m,      \
                                               int* bad) {                                     \
        hc_absmax<T>(p, n, m, bad);                                                            \
    }                                                                                          \
    extern "C" __global__ void hc_sumsq_##SUF(const unsigned long long* p, const long long* n, \
                                              const unsigned long long* m,                     \
                                              unsigned long long* hi, unsigned long long* lo) {  \
        hc_sumsq<T, false>(p, n, m, hi, lo);                                                   \
    }                                                                                          \
    extern "C" __global__ void hc_moments_##SUF(const unsigned long long* p,                   \
                                                const long long* n,                            \
                                                const unsigned long long* m,                   \
                                                unsigned long long* hi, unsigned long long* lo, \
                                                unsigned long long* hi1,                       \
                                                unsigned long long* lo1) {                     \
        hc_sumsq<T, true>(p, n, m, hi, lo, hi1, lo1);                                          \
    }                                                                                          \
    extern "C" __global__ void hc_quantize_##SUF(                                              \
        const unsigned long long* p, const long long* n, const float* scales, int s,           \
        unsigned long long seed, const long long* streams, const long long* offsets,           \
        signed char* states) {                                                                 \
        hc_quantize<T>(p, n, scales, s, seed, streams, offsets, states);                       \
    }                                                                                          \
    extern "C" __global__ void hc_quantize_fp_##SUF(                                           \
        const unsigned long long* p, const long long* n, const float* scales, int fmt, int s,  \
        const long long* offsets, signed char* states) {                                       \
        hc_quantize_fp<T>(p, n, scales, fmt, s, offsets, states);                              \
    }                                                                                          \
    extern "C" __global__ void hc_absmax_buckets_##SUF(                                        \
        const unsigned long long* p, const long long* n, const long long* first, int blog2,    \
        unsigned long long* m, int* bad) {                                                     \
        hc_absmax_buckets<T>(p, n, first, blog2, m, bad);                                      \
    }                                                                                          \
    extern "C" __global__ void hc_sumsq_buckets_##SUF(                                         \
        const unsigned long long* p, const long long* n, const long long* first, int blog2,    \
        const unsigned long long* m, unsigned long long* hi, unsigned long long* lo) {         \
        hc_sumsq_buckets<T>(p, n, first, blog2, m, hi, lo);                                    \
    }                                                                                          \
    extern "C" __global__ void hc_quantize_buckets_##SUF(                                      \
        const unsigned long long* p, const long long* n, const long long* first, int blog2,    \
        const float* scales, int s, unsigned long long seed, const long long* streams,         \
        const long long* offsets, signed char* states) {                                       \
        hc_quantize_buckets<T>(p, n, first, blog2, scales, s, seed, streams, offsets, states);  \
    }                                                                                          \
    extern "C" __global__ void hc_topk_hist_##SUF(                                             \
        const unsigned long long* p, const long long* n, const unsigned long long* prefix,     \
        const long long* krem, int shift, unsigned long long* hist) {                          \
        hc_topk_hist<T>(p, n, prefix, krem, shift, hist);                                      \
    }                                                                                          \
    extern "C" __global__ void hc_topk_ties_##SUF(                                             \
        const unsigned long long* p, const long long* n, const long long* block_first,         \
        int count, long long b0, long long b1, const unsigned long long* prefix,               \
        unsigned int* ties) {                                                                  \
        hc_topk_ties<T>(p, n, block_first, count, b0, b1, prefix, ties);                       \
    }                                                                                          \
    extern "C" __global__ void hc_quantize_topk_##SUF(                                         \
        const unsigned long long* p, const long long* n, const long long* block_first,         \
        int count, long long b0, long long b1, const unsigned long long* prefix,               \
        const long long* need, const long long* tie_at, const float* scales, int s,            \
        unsigned long long seed, const long long* streams, const long long* offsets,           \
        signed char* states, unsigned int* raw_or_null) {                                      \
        hc_quantize_topk<T>(p, n, block_first, count, b0, b1, prefix, need, tie_at, scales, s, \
                            seed, streams, offsets, states, raw_or_null);                      \
    }

HC_INSTANCES(f16, unsigned short)
HC_INSTANCES(f32, float)
HC_INSTANCES(f64, double)

// One thread per scale: entry j of tensor t = the last with first[t] <= j (first: one entry
// per tensor, or QSGD's buckets: first[t] + b is bucket b's). round_up_f32(m) (max norm) or
// round_up_f32(m sqrt(S)) (L2); a float format `fmt` (HC_FP_*, s its largest code) under the
// max norm: hc_fp_max_scale (the GenNorm norm's scale is fitted on the host from hc_moments'
// sums); 0 for all zeros, NaN for every scale of a tensor holding NaN/Inf
// (nonfinite="propagate").
extern "C" __global__ void hc_scales(const unsigned long long* maxbits, const int* nonfinite,
                                     const unsigned long long* hi, const unsigned long long* lo,
                                     int l2, int fmt, int s, const long long* first, int count,
                                     float* scales) {
    const long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (j >= first[count]) return;
    const double m = __longlong_as_double((long long)maxbits[j]);
    if (nonfinite[hc_owner(j, first, count)]) scales[j] = __int_as_float(0x7fc00000);
    else if (m == 0.0) scales[j] = 0.0f;
    else if (fmt != HC_FP_LINEAR) scales[j] = hc_fp_max_scale(m, hc_fp_format(fmt, s));
    else if (!l2) scales[j] = hc_round_up_f32(m);
    else scales[j] = hc_round_up_f32(m * sqrt(hc_sumsq_value(hi[j], lo[j])));
}

// One thread per tensor: a radix-select pass's digit (common.cuh hc_topk_digit) appended to
// prefix[t] at bit `shift`; krem[t] becomes the rank left among the keys with that digit.
extern "C" __global__ void hc_topk_pick(const unsigned long long* hist,
                                        unsigned long long* prefix, long long* krem, int shift,
                                        int count) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= count || krem[t] <= 0) return;
    long long r = krem[t];
    const int d = hc_topk_digit(hist + (long long)t * 256, r);
    krem[t] = r;
    prefix[t] |= (unsigned long long)d << shift;
}
