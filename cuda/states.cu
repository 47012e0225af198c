// Kernels over the int8 state buffer that several coders share (batches of tensors, one
// launch each):
//
//   hc_list_count, hc_list  the marked states of every tensor in order (common.cuh lists:
//                           non-zeros for ZRH and Elias' gap layout, run ends for Elias'
//                           run-length layout): their position in their chunk and state,
//                           made in parallel over the batch whatever the chunk size (sparse
//                           tensors have chunks of up to 2^24 states), so the coders' warps
//                           walk a chunk's marks, not its length
//   hc_add_states           decode-and-sum of the coders decoded into a state buffer (ZRH,
//                           Elias): every state's value added to the float64 accumulator
//   hc_add_buckets          the same for tensors quantized in QSGD's buckets (their states in
//                           the state buffer, or huffman symbols in a symbol buffer), each
//                           value with its bucket's scale
#include "common.cuh"

// A warp per block of HC_LIST_BLOCK states, numbered over the batch: tensor t owns blocks
// block_first[t] .. block_first[t + 1] - 1; each lane reads 8 states (zero past n) and marks
// them (common.cuh hc_marks; a lane's next state is the next lane's first, or read).
struct HcBlock {
    int t;
    long long first;     // the block's first element in its tensor
    unsigned int marks;  // of this lane's 8 states
};

__device__ __forceinline__ HcBlock hc_block(long long b, const long long* block_first, int count,
                                            const signed char* states, const long long* offsets,
                                            const long long* sizes, const int* clog2,
                                            int mode) {
    const int lane = threadIdx.x & 31;
    HcBlock k;
    k.t = hc_owner(b, block_first, count);
    k.first = (b - block_first[k.t]) * HC_LIST_BLOCK;
    const long long e = k.first + 8 * lane, n = sizes[k.t];
    const signed char* x = states + offsets[k.t];
    const uint2 w = e < n ? *reinterpret_cast<const uint2*>(x + e) : make_uint2(0u, 0u);
    int next = __shfl_down_sync(0xffffffffu, (int)(signed char)(w.x & 0xFFu), 1);
    if (lane == 31 && e + 8 < n) next = x[e + 8];
    k.marks = hc_marks(w.x, w.y, next, e, n, clog2[k.t], mode);
    return k;
}

// Marked states per block (counts[b]); the host turns them into `at`, their prefix sum.
extern "C" __global__ void hc_list_count(const signed char* __restrict__ states,
                                         const long long* __restrict__ offsets,
                                         const long long* __restrict__ sizes,
                                         const int* __restrict__ clog2,
                                         const long long* __restrict__ block_first, int count,
                                         int mode, unsigned int* __restrict__ counts) {
    const long long b = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    if (b >= block_first[count]) return;  // b is the same for the whole warp
    const HcBlock k = hc_block(b, block_first, count, states, offsets, sizes, clog2, mode);
    unsigned int c = __popc(k.marks);
    for (int o = 16; o; o >>= 1) c += __shfl_down_sync(0xffffffffu, c, o);
    if ((threadIdx.x & 31) == 0) counts[b] = c;
}

// The marked states of every tensor in order, from at[b] for block b: their position in
// their chunk (pos; chunks are at most 2^30 states) and their state (val).
extern "C" __global__ void hc_list(const signed char* __restrict__ states,
                                   const long long* __restrict__ offsets,
                                   const long long* __restrict__ sizes,
                                   const int* __restrict__ clog2,
                                   const long long* __restrict__ block_first, int count, int mode,
                                   const long long* __restrict__ at,
                                   unsigned int* __restrict__ pos,
                                   signed char* __restrict__ val) {
    const long long b = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (b >= block_first[count]) return;
    const HcBlock k = hc_block(b, block_first, count, states, offsets, sizes, clog2, mode);
    const int cnt = __popc(k.marks);
    int incl = cnt;
    for (int o = 1; o < 32; o <<= 1) {
        const int u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += u;
    }
    long long j = at[b] + incl - cnt;
    const long long e = k.first + 8 * lane;
    const long long chunk_start = (e >> clog2[k.t]) << clog2[k.t];
    const signed char* x = states + offsets[k.t];
    for (unsigned int m = k.marks; m; m &= m - 1, ++j) {
        const int bit = __ffs(m) - 1;
        pos[j] = (unsigned int)(e + bit - chunk_start);
        val[j] = x[e + bit];
    }
}

// acc[state_at[t] + i] += values[t][state + s] for every element of the tensors in `add`
// (blockIdx.y = tensor; those decoded into the state buffer with one scale): zeros too, as the
// host's float64 sum adds them.
extern "C" __global__ void hc_add_states(const signed char* __restrict__ states,
                                         const long long* __restrict__ sizes,
                                         const long long* __restrict__ state_at,
                                         const unsigned char* __restrict__ add,
                                         const double* __restrict__ values, int s,
                                         double* __restrict__ acc) {
    const int t = blockIdx.y;
    if (!add[t]) return;
    const long long n = sizes[t], at = state_at[t];
    const double* value = values + (long long)t * (2 * s + 1) + s;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        hc_add_state_at(states, at, i, value, acc);
}

// The tensors quantized in buckets of 2^blog2 (blockIdx.y = tensor; which[t]: 0 not one, 1 its
// states in the state buffer at state_at[t], 2 its huffman symbols in the symbol buffer at
// sym_offsets[t]): acc[state_at[t] + i] += element i's value with its bucket's scale
// (hc_add_bucket_state_at).
extern "C" __global__ void hc_add_buckets(const signed char* __restrict__ states,
                                          const unsigned char* __restrict__ symbols,
                                          const long long* __restrict__ sizes,
                                          const long long* __restrict__ state_at,
                                          const long long* __restrict__ sym_offsets,
                                          const unsigned char* __restrict__ which,
                                          const long long* __restrict__ scale_first,
                                          const float* __restrict__ scales, int blog2, int s,
                                          const int* __restrict__ dtypes,
                                          double* __restrict__ acc) {
    const int t = blockIdx.y;
    if (!which[t]) return;
    const long long n = sizes[t];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        hc_add_bucket_state_at(states, symbols, t, i, state_at, sym_offsets, which,
                               scales + scale_first[t], blog2, s, dtypes[t], acc);
}

// Exact top-k (every tensor of the payload, decoded into the state buffer and the raw
// magnitudes beside it, both at state_at[t]): acc[state_at[t] + i] += sign(state) *
// float32(raw) in the tensor's dtype (hc_raw_value; NaN for a NaN scale), zeros too.
extern "C" __global__ void hc_add_raw_states(const signed char* __restrict__ states,
                                             const unsigned int* __restrict__ raw,
                                             const long long* __restrict__ sizes,
                                             const long long* __restrict__ state_at,
                                             const float* __restrict__ scales,
                                             const int* __restrict__ dtypes,
                                             double* __restrict__ acc) {
    const int t = blockIdx.y;
    const long long n = sizes[t], at = state_at[t];
    const float scale = scales[t];
    const int dtype = dtypes[t];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        hc_add_raw_state_at(states, raw, at, i, scale, dtype, acc);
}
