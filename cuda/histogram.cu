// Histogram stage: counts of every state (symbol = state + s) of every tensor of a batch,
// in one launch (blockIdx.y = tensor). Each block counts into shared memory, then adds its
// counts to the tensor's row of `counts` (tensors x (2s + 1)); the codebook kernel reads them
// on the device, the host never sees the histogram.
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
