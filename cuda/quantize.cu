// Quantize stage (quantizers.py on the GPU), batched: every kernel takes a list of tensors
// (device pointers and sizes) and runs over all of them in one launch, blockIdx.y = tensor.
//
//   hc_absmax_*    per tensor max|x| (as the bits of a double: non-negative doubles order
//                  like their bits, so atomicMax on them is a max) and a non-finite flag
//   hc_sumsq_*     the L2 scale's fixed-point sum of squares, two integer sums (order free)
//   hc_scales      the float32 scale of every tensor (0, NaN for non-finite input)
//   hc_quantize_*  stochastic rounding into int8 states (zero padded to a multiple of 8),
//                  key = mix64(seed * G + streams[t])
//
// Suffixes: _f16 (float16 as its bits), _f32, _f64. Build with --fmad=false.
#include "common.cuh"

__device__ __forceinline__ double hc_load(const float* p, int64_t i) { return (double)p[i]; }
__device__ __forceinline__ double hc_load(const double* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double hc_load(const unsigned short* p, int64_t i) {
    return (double)hc_half_to_float(p[i]);
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

template <class T>
__device__ void hc_absmax(const unsigned long long* ptrs, const long long* sizes,
                          unsigned long long* maxbits, int* nonfinite) {
    const int t = blockIdx.y;
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    unsigned long long m = 0;
    int bad = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        double a = fabs(hc_load(x, i));
        if (!isfinite(a)) bad = 1;
        else m = max(m, (unsigned long long)__double_as_longlong(a));
    }
    m = hc_warp_max(m);
    bad = __any_sync(0xffffffffu, bad);
    if ((threadIdx.x & 31) == 0) {
        if (m) atomicMax(maxbits + t, m);
        if (bad) atomicOr(nonfinite + t, 1);
    }
}

template <class T>
__device__ void hc_sumsq(const unsigned long long* ptrs, const long long* sizes,
                         const unsigned long long* maxbits, unsigned long long* hi,
                         unsigned long long* lo) {
    const int t = blockIdx.y;
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const double m = __longlong_as_double((long long)maxbits[t]);
    if (m == 0.0 || !isfinite(m)) return;
    unsigned long long h = 0, l = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        unsigned long long term = hc_sumsq_term(hc_load(x, i), m);
        h += term >> 20;
        l += term & 0xFFFFFull;
    }
    h = hc_warp_sum(h);
    l = hc_warp_sum(l);
    if ((threadIdx.x & 31) == 0) {
        atomicAdd(hi + t, h);
        atomicAdd(lo + t, l);
    }
}

template <class T>
__device__ void hc_quantize(const unsigned long long* ptrs, const long long* sizes,
                            const float* scales, int s, unsigned long long seed,
                            const long long* streams, const long long* state_offsets,
                            signed char* states) {
    const int t = blockIdx.y;
    const T* x = reinterpret_cast<const T*>(ptrs[t]);
    const long long n = sizes[t];
    const double scale = (double)scales[t];
    const uint64_t key = hc_stream_key(seed, (uint64_t)streams[t]);
    signed char* out = states + state_offsets[t];
    const bool zero = !(scale > 0.0) || isinf(scale);  // 0: all zero; NaN: decode gives NaN
    const long long padded = (n + 7) & ~7ll;  // coders read zero padding to a multiple of 8
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < padded;
         i += (long long)gridDim.x * blockDim.x) {
        out[i] = (i < n && !zero) ? (signed char)hc_round_state(hc_load(x, i), s, scale, key, i)
                                  : 0;
    }
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
        hc_sumsq<T>(p, n, m, hi, lo);                                                          \
    }                                                                                          \
    extern "C" __global__ void hc_quantize_##SUF(                                              \
        const unsigned long long* p, const long long* n, const float* scales, int s,           \
        unsigned long long seed, const long long* streams, const long long* offsets,           \
        signed char* states) {                                                                 \
        hc_quantize<T>(p, n, scales, s, seed, streams, offsets, states);                       \
    }

HC_INSTANCES(f16, unsigned short)
HC_INSTANCES(f32, float)
HC_INSTANCES(f64, double)

// One thread per tensor: scale = round_up_f32(m) (max norm) or round_up_f32(m sqrt(S)) (L2);
// 0 for an all-zero tensor, NaN when it holds NaN/Inf (nonfinite="propagate").
extern "C" __global__ void hc_scales(const unsigned long long* maxbits, const int* nonfinite,
                                     const unsigned long long* hi, const unsigned long long* lo,
                                     int l2, int count, float* scales) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= count) return;
    double m = __longlong_as_double((long long)maxbits[t]);
    if (nonfinite[t]) scales[t] = __int_as_float(0x7fc00000);
    else if (m == 0.0) scales[t] = 0.0f;
    else if (!l2) scales[t] = hc_round_up_f32(m);
    else scales[t] = hc_round_up_f32(m * sqrt(hc_sumsq_value(hi[t], lo[t])));
}
