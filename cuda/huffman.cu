// Huffman stage (coders/symbol.py layout: one codeword per element, symbol = state + s), for a
// batch of tensors in one launch per kernel. Chunks of all tensors are numbered globally:
// tensor t owns chunks chunk_first[t] .. chunk_first[t + 1] - 1 of 2^clog2[t] elements.
//
//   hc_huffman_chunk_bits  one warp per chunk: its exact length in bits (the chunk table)
//   hc_huffman_write       one warp per chunk: lanes place 32 codewords at a time at offsets
//                          from a warp prefix sum, ORed into the zeroed output (atomicOr on
//                          32-bit words: neighbouring codewords share bytes)
//   hc_huffman_decode_sum  one thread per chunk: decode, dequantize, cast to the tensor's
//                          dtype and add to a float64 accumulator (decode-and-sum: one launch
//                          per worker's payload, in rank order, sums like exchange.reduce_mean)
#include "common.cuh"

struct HcChunk {
    int t;                // tensor
    long long start, end;  // its elements [start, end)
};

// Global chunk c: its tensor (the last t with chunk_first[t] <= c) and element range.
__device__ __forceinline__ HcChunk hc_chunk(long long c, const long long* chunk_first,
                                            int count, const int* clog2,
                                            const long long* sizes) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (chunk_first[mid] <= c) lo = mid;
        else hi = mid - 1;
    }
    HcChunk k;
    k.t = lo;
    k.start = (c - chunk_first[lo]) << clog2[lo];
    k.end = min(sizes[lo], k.start + (1ll << clog2[lo]));
    return k;
}

extern "C" __global__ void hc_huffman_chunk_bits(
    const signed char* states, const long long* offsets, const long long* sizes,
    const int* clog2, const long long* chunk_first, int count, int s,
    const unsigned char* lengths, unsigned long long* chunk_bits) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    const unsigned char* len = lengths + (long long)k.t * (2 * s + 1);
    const signed char* x = states + offsets[k.t];
    const long long start = k.start, end = k.end;
    unsigned long long b = 0;
    for (long long i = start + lane; i < end; i += 32) b += len[x[i] + s];
    for (int o = 16; o; o >>= 1) b += __shfl_down_sync(0xffffffffu, b, o);
    if (lane == 0) chunk_bits[c] = b;
}

extern "C" __global__ void hc_huffman_write(
    const signed char* states, const long long* offsets, const long long* sizes,
    const int* clog2, const long long* chunk_first, int count, int s,
    const unsigned char* lengths, const unsigned short* codes,
    const unsigned long long* chunk_byte, unsigned int* out) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    const unsigned char* len = lengths + (long long)k.t * (2 * s + 1);
    const unsigned short* code = codes + (long long)k.t * (2 * s + 1);
    const signed char* x = states + offsets[k.t];
    const long long start = k.start, end = k.end;
    unsigned long long base = 8ull * chunk_byte[c];
    auto or_byte = [out](unsigned long long byte, unsigned char v) {
        atomicOr(out + (byte >> 2), (unsigned int)v << (8 * (byte & 3)));
    };
    for (long long i0 = start; i0 < end; i0 += 32) {
        const long long i = i0 + lane;
        int sym = i < end ? x[i] + s : 0;
        unsigned int l = i < end ? len[sym] : 0;
        unsigned int incl = l;  // inclusive warp prefix sum of the codeword lengths
        for (int o = 1; o < 32; o <<= 1) {
            unsigned int u = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += u;
        }
        if (l) hc_emit(base + incl - l, code[sym], (int)l, or_byte);
        base += __shfl_sync(0xffffffffu, incl, 31);
    }
}

__device__ __forceinline__ double hc_cast(double v, int dtype) {
    if (dtype == 1) return hc_round_to_half(v);
    if (dtype == 2) return (double)(float)v;
    return v;
}

// Decode one payload's sections of the batch. Per chunk: chunk_byte (its first byte in buf)
// and chunk_bits; per tensor: scale, decode table (stride 1 << 15) and tbits, dtype code
// (1 float16, 2 float32, 3 float64, as the payload), accumulator offset. err[0] gets the
// first error code (common.cuh HC_ERR_*), err[1] the chunk.
extern "C" __global__ void hc_huffman_decode_sum(
    const unsigned char* buf, unsigned long long nbytes, const unsigned long long* chunk_byte,
    const unsigned long long* chunk_bits, const int* clog2, const long long* chunk_first,
    const long long* sizes, int count, int s, const float* scales, const int* tables,
    const int* tbits, const int* dtypes, const long long* acc_offsets, double* acc, int* err) {
    const long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    const int t = k.t;
    const double scale = (double)scales[t];
    const int dtype = dtypes[t];
    double* a = acc + acc_offsets[t];
    auto put = [=](long long i, int state) {
        a[i] += hc_cast((double)state * scale / (double)s, dtype);
    };
    int e = hc_huffman_decode_chunk(buf, nbytes, chunk_byte[c], chunk_bits[c], k.start, k.end, s,
                                    tables + ((long long)t << HC_MAX_CODE_LEN), tbits[t], put);
    if (e != HC_OK && atomicCAS(err, 0, e) == 0) err[1] = (int)c;
}
