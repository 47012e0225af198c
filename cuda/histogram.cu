// Histogram stage: counts of every state (symbol = state + s) of every tensor of a batch,
// in one launch (blockIdx.y = tensor). Each block counts into shared memory, then adds its
// counts to the tensor's row of `counts` (tensors x (2s + 1)); the codebook kernel reads them
// on the device, the host never sees the histogram. And SH's sampled counts
// (hc_sample_counts).
#include "common.cuh"

extern "C" __global__ void hc_histogram(const signed char* states, const long long* offsets,
                                        const long long* sizes, int s,
                                        unsigned long long* counts) {
    // a row per warp (fewer threads on one shared counter), summed at the end; each thread
    // reads 8 states at a time as one word (offsets are multiples of 8)
    __shared__ unsigned int local[HC_THREADS / 32][HC_MAX_ALPHABET];
    const int t = blockIdx.y, alphabet = 2 * s + 1;
    for (int k = threadIdx.x; k < (HC_THREADS / 32) * HC_MAX_ALPHABET; k += blockDim.x)
        (&local[0][0])[k] = 0;
    __syncthreads();
    unsigned int* row = local[threadIdx.x >> 5] + s;
    const unsigned long long* x = reinterpret_cast<const unsigned long long*>(states + offsets[t]);
    const long long n = sizes[t];
    for (long long g = blockIdx.x * (long long)blockDim.x + threadIdx.x; g << 3 < n;
         g += (long long)gridDim.x * blockDim.x) {
        const unsigned long long w = x[g];
        const int m = n - (g << 3) < 8 ? (int)(n - (g << 3)) : 8;
#pragma unroll
        for (int k = 0; k < 8; ++k)
            if (k < m) atomicAdd(row + (signed char)(w >> (8 * k)), 1u);
    }
    __syncthreads();
    for (int k = threadIdx.x; k < alphabet; k += blockDim.x) {
        unsigned long long sum = 0;
        for (int r = 0; r < HC_THREADS / 32; ++r) sum += local[r][k];
        if (sum) atomicAdd(counts + (long long)t * alphabet + k, sum);
    }
}

// SH's code counts (coders/symbol.py sample_counts): 1 for every state, plus its occurrences at
// HC_SAMPLE_SIZE sampled positions (hc_sample_position; none in an empty tensor), into the
// zeroed `counts` (tensors x (2s + 1)); one block per tensor.
extern "C" __global__ void hc_sample_counts(const signed char* states, const long long* offsets,
                                            const long long* sizes, int s,
                                            unsigned long long seed,
                                            unsigned long long* counts) {
    const int t = blockIdx.x, alphabet = 2 * s + 1;
    const long long n = sizes[t];
    unsigned long long* row = counts + (long long)t * alphabet;
    for (int k = threadIdx.x; k < alphabet; k += blockDim.x) atomicAdd(row + k, 1ull);
    if (n == 0) return;
    const uint64_t key = hc_stream_key(seed, HC_STREAM_SAMPLE);
    const signed char* x = states + offsets[t];
    for (int j = threadIdx.x; j < HC_SAMPLE_SIZE; j += blockDim.x)
        atomicAdd(row + (x[hc_sample_position(key, j, (uint64_t)n)] + s), 1ull);
}
