// Histogram stage: counts of every state (symbol = state + s) of every tensor of a batch,
// in one launch (blockIdx.y = tensor). Each block counts into shared memory, then adds its
// counts to the tensor's row of `counts` (tensors x (2s + 1)); the codebook kernel reads them
// on the device, the host never sees the histogram.
#include "common.cuh"

extern "C" __global__ void hc_histogram(const signed char* states, const long long* offsets,
                                        const long long* sizes, int s,
                                        unsigned long long* counts) {
    __shared__ unsigned int local[HC_MAX_ALPHABET];
    const int t = blockIdx.y, alphabet = 2 * s + 1;
    for (int k = threadIdx.x; k < alphabet; k += blockDim.x) local[k] = 0;
    __syncthreads();
    const signed char* x = states + offsets[t];
    const long long n = sizes[t];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        atomicAdd(&local[x[i] + s], 1u);
    __syncthreads();
    for (int k = threadIdx.x; k < alphabet; k += blockDim.x)
        if (local[k]) atomicAdd(counts + (long long)t * alphabet + k, (unsigned long long)local[k]);
}
