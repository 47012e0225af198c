// Codebook stage: one thread per tensor builds the canonical, length-limited (15 bits) Huffman
// code of its histogram, exactly as codebook.Code.from_counts (cuda/common.cuh), and its cost
// in bits; then the decode tables. No histogram or code leaves the device.
#include "common.cuh"

// counts: tensors x alphabet. Outputs per tensor: lengths and codes (alphabet each), `single`
// (the only used symbol of a one-symbol code, else -1) and `bits` = sum of count * length.
extern "C" __global__ void hc_build_codes(const unsigned long long* counts, int alphabet,
                                          int count, unsigned char* lengths,
                                          unsigned short* codes, int* single,
                                          unsigned long long* bits) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= count) return;
    int64_t c[HC_MAX_ALPHABET];
    int used = 0, last = -1;
    for (int k = 0; k < alphabet; ++k) {
        c[k] = (int64_t)counts[(long long)t * alphabet + k];
        if (c[k]) ++used, last = k;
    }
    uint8_t* len = lengths + (long long)t * alphabet;
    hc_huffman_lengths(c, alphabet, HC_MAX_CODE_LEN, len);
    hc_canonical_codes(len, alphabet, codes + (long long)t * alphabet);
    single[t] = used == 1 ? last : -1;
    unsigned long long b = 0;
    for (int k = 0; k < alphabet; ++k) b += (unsigned long long)c[k] * len[k];
    bits[t] = b;
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

// Decode tables (common.cuh hc_decode_table), one block per tensor, table stride 1 << 15,
// and their primary tables (hc_primary_table, stride 1 << HC_PRIMARY_BITS, pbits[t] bits).
// tbits[t] = longest code length (0 for a one-symbol code: table[0] = symbol << 5), and
// values[t][k] = the value of state k - s in the tensor's dtype (hc_state_value).
extern "C" __global__ void hc_decode_tables(const unsigned char* lengths,
                                            const unsigned short* codes, const int* single,
                                            int alphabet, const float* scales,
                                            const int* dtypes, int* tbits, int* tables,
                                            int* pbits, int* prims, double* values) {
    const int t = blockIdx.x, s = alphabet / 2;
    const unsigned char* len = lengths + (long long)t * alphabet;
    const unsigned short* code = codes + (long long)t * alphabet;
    int* table = tables + ((long long)t << HC_MAX_CODE_LEN);
    for (int k = threadIdx.x; k < alphabet; k += blockDim.x)
        values[(long long)t * alphabet + k] = hc_state_value(k - s, (double)scales[t], s, dtypes[t]);
    int tb = 0;
    for (int k = 0; k < alphabet; ++k) tb = len[k] > tb ? len[k] : tb;
    if (single[t] >= 0) {
        if (threadIdx.x == 0) table[0] = single[t] << 5, tbits[t] = 0;
        return;
    }
    if (threadIdx.x == 0) tbits[t] = tb;
    for (int j = threadIdx.x; j < (1 << tb); j += blockDim.x) table[j] = -(1 << 5);
    __syncthreads();
    for (int k = 0; k < alphabet; ++k) {
        int ln = len[k];
        if (!ln) continue;
        unsigned lo = (unsigned)code[k] << (tb - ln), hi = (unsigned)(code[k] + 1) << (tb - ln);
        for (unsigned j = lo + threadIdx.x; j < hi; j += blockDim.x) table[j] = (k << 5) | ln;
    }
    __syncthreads();
    const int pb = tb < HC_PRIMARY_BITS ? tb : HC_PRIMARY_BITS;
    int* prim = prims + ((long long)t << HC_PRIMARY_BITS);
    if (threadIdx.x == 0) pbits[t] = pb;
    for (int j = threadIdx.x; j < (1 << pb); j += blockDim.x)
        prim[j] = hc_primary_entry(table, tb, pb, j);
}
