// Codebook stage: a block per tensor, whose first thread builds the canonical, length-limited
// (15 bits) Huffman code of its histogram (SHS: of its weights) in shared memory, exactly as
// codebook.Code.from_counts (cuda/common.cuh), and its cost in bits; for decoding, each
// payload's decoder records. No histogram or code leaves the device.
#include "common.cuh"

// counts: tensors x alphabet, one block per tensor (its thread 0 builds, in shared memory:
// common.cuh hc_states_code). Outputs per tensor: lengths and codes (alphabet each), `single`
// (the only used symbol of a one-symbol code, else -1) and `bits` = sum of count * length.
#define HC_CODE_THREADS 32
extern "C" __global__ void hc_build_codes(const unsigned long long* counts, int alphabet,
                                          unsigned char* lengths, unsigned short* codes,
                                          int* single, unsigned long long* bits) {
    __shared__ HcCodeWork work;
    const long long t = blockIdx.x;
    if (threadIdx.x == 0)
        bits[t] = hc_states_code(counts + t * alphabet, alphabet, lengths + t * alphabet,
                                 codes + t * alphabet, single + t, work);
}

// SHS's codes (coders/shs.py build_code), one block per tensor (its thread 0 builds, in shared
// memory): from SH's sampled counts (histogram.cu hc_sample_counts, 2s + 1 per tensor) the
// integer weights of the 2s + HC_SHS_MAX_RUN symbols (every one >= 1), their canonical,
// length-limited Huffman code. Outputs per tensor: the lengths (the codebook the host
// writes) and the writers' entries code << 5 | length.
extern "C" __global__ void hc_build_shs_codes(const unsigned long long* counts, int s,
                                              unsigned char* lengths, unsigned int* tab) {
    __shared__ HcShsWork work;
    const int a = 2 * s + HC_SHS_MAX_RUN;
    const long long t = blockIdx.x;
    uint8_t* len = lengths + t * a;
    if (threadIdx.x == 0) hc_shs_code(counts + t * (2 * s + 1), s, len, work);
    __syncthreads();
    for (int k = threadIdx.x; k < a; k += blockDim.x)
        tab[t * a + k] = (unsigned int)work.codes[k] << 5 | len[k];
}

// Chunk size of every tensor (coders/chunks.auto_chunk_log2 from the zero count, or `fixed`
// when > 0) and its number of chunks, one thread per tensor.
extern "C" __global__ void hc_chunk_plan(const unsigned long long* counts, int alphabet, int s,
                                         const long long* sizes, int count, int fixed,
                                         int* clog2, long long* nchunks) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= count) return;
    long long n = sizes[t];
    long long nnz = n - (long long)counts[(long long)t * alphabet + s];
    int k = fixed;
    if (k <= 0) {
        k = HC_CHUNK_LOG2_AUTO_MIN;
        while (k < HC_CHUNK_LOG2_AUTO_MAX && (nnz << k) < HC_NZ_PER_CHUNK * n) ++k;
    }
    clog2[t] = k;
    nchunks[t] = (n + (1ll << k) - 1) >> k;
}

// The decoders of one payload's huffman tensors (common.cuh hc_decoder_header /
// hc_decoder_primary: a record of HC_DEC_INTS ints per tensor), one block per tensor, and the
// value of every state of every tensor in its dtype: values[t][k] = value of state k - s
// (hc_state_value, for the payload's quantizer `fmt`: HC_FP_LINEAR or a float format; the
// other coders' states are added through it too).
extern "C" __global__ void hc_huffman_decoders(const unsigned char* lengths,
                                               const int* single, int alphabet, int fmt,
                                               const unsigned char* coders,
                                               const float* scales, const int* dtypes,
                                               int* dec, double* values) {
    __shared__ int pb;
    const int t = blockIdx.x, s = alphabet / 2;
    for (int k = threadIdx.x; k < alphabet; k += blockDim.x)
        values[(long long)t * alphabet + k] = hc_state_value(k - s, (double)scales[t], s, dtypes[t], fmt);
    if (coders[t] != HC_CODER_HUFFMAN) return;
    int* d = dec + (long long)t * HC_DEC_INTS;
    if (threadIdx.x == 0) pb = hc_decoder_header(lengths + (long long)t * alphabet, alphabet, single[t], d);
    __syncthreads();
    hc_decoder_primary(d, pb, threadIdx.x, blockDim.x);
}
