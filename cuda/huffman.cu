// Huffman stage (coders/symbol.py layout: one codeword per element, symbol = state + s), for a
// batch of tensors in one launch per kernel, chunks numbered globally (common.cuh hc_chunk);
// `coders` gives each tensor's coder: chunks of tensors coded otherwise (zrh.cu) are skipped.
//
//   hc_huffman_chunk_bits  one warp per chunk: its exact length in bits (the chunk table)
//   hc_huffman_write       one warp per chunk: lanes place 32 codewords at a time at offsets
//                          from a warp prefix sum into a shared-memory word buffer, completed
//                          words stored whole into the zeroed output (atomicOr only for the
//                          two words a chunk may share with its neighbours)
//   hc_huffman_decode_sum  one thread per chunk: decode, look up the state's value (already
//                          in the tensor's dtype) and add it to a float64 accumulator
//                          (decode-and-sum: one launch per worker's payload, in rank order,
//                          sums like exchange.reduce_mean)
#include "common.cuh"

extern "C" __global__ void hc_huffman_chunk_bits(
    const signed char* states, const long long* offsets, const long long* sizes,
    const int* clog2, const long long* chunk_first, int count, int s,
    const unsigned char* coders, const unsigned char* lengths, unsigned long long* chunk_bits) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_HUFFMAN) return;  // another coder's tensor
    const unsigned char* len = lengths + (long long)k.t * (2 * s + 1);
    const signed char* x = states + offsets[k.t];
    const long long start = k.start, end = k.end;
    unsigned long long b = 0;
    for (long long i = start + lane; i < end; i += 32) b += len[x[i] + s];
    for (int o = 16; o; o >>= 1) b += __shfl_down_sync(0xffffffffu, b, o);
    if (lane == 0) chunk_bits[c] = b;
}

// Lanes place their codewords into a per-warp buffer of 32-bit words in shared memory (at
// most 31 carried bits + 32 x 15 bits = 17 words), then store the words this step completed
// with plain stores; only a chunk's first word (shared with the previous chunk's last bytes)
// and its last, partial word go to global memory with atomicOr.
#define HC_WARP_WORDS 18
extern "C" __global__ void hc_huffman_write(
    const signed char* __restrict__ states, const long long* __restrict__ offsets,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned char* __restrict__ lengths,
    const unsigned short* __restrict__ codes, const unsigned long long* __restrict__ chunk_byte,
    unsigned int* __restrict__ out) {
    __shared__ unsigned int buffer[HC_THREADS / 32][HC_WARP_WORDS];
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (c >= chunk_first[count]) return;  // c is the same for the whole warp
    unsigned int* words = buffer[threadIdx.x >> 5];
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_HUFFMAN) return;
    const unsigned char* len = lengths + (long long)k.t * (2 * s + 1);
    const unsigned short* code = codes + (long long)k.t * (2 * s + 1);
    const signed char* x = states + offsets[k.t];
    const long long start = k.start, end = k.end;
    const unsigned long long first_word = chunk_byte[c] >> 2;
    unsigned long long base = 8ull * chunk_byte[c];  // stream bit where this step starts
    if (lane < HC_WARP_WORDS) words[lane] = 0;
    __syncwarp();
    auto or_word = [words](unsigned long long w, unsigned int v) { atomicOr(words + w, v); };
    for (long long i0 = start; i0 < end; i0 += 32) {
        const long long i = i0 + lane;
        int sym = i < end ? x[i] + s : 0;
        unsigned int l = i < end ? len[sym] : 0;
        unsigned int incl = l;  // inclusive warp prefix sum of the codeword lengths
        for (int o = 1; o < 32; o <<= 1) {
            unsigned int u = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += u;
        }
        const unsigned long long w0 = base >> 5;  // the buffer's word 0
        if (l) hc_place((base & 31) + incl - l, code[sym], (int)l, or_word);
        __syncwarp();
        base += __shfl_sync(0xffffffffu, incl, 31);
        const int done = (int)((base >> 5) - w0);  // words every bit of which is placed
        if (lane < done) {
            unsigned int v = hc_word_bytes(words[lane]);
            if (w0 + lane == first_word) atomicOr(out + first_word, v);
            else out[w0 + lane] = v;
        }
        unsigned int carry = words[done];
        __syncwarp();
        if (lane < HC_WARP_WORDS) words[lane] = lane ? 0u : carry;
        __syncwarp();
    }
    if (lane == 0 && (base & 31)) atomicOr(out + (base >> 5), hc_word_bytes(words[0]));
}

// Decode one payload's sections of the batch. Per chunk: chunk_byte (its first byte in buf)
// and chunk_bits; per tensor: decode table (stride 1 << 15) and tbits, its primary table
// (stride 1 << HC_PRIMARY_BITS) and pbits, the value of every
// state in the tensor's dtype (values, stride 2s + 1: codebook.cu hc_decode_tables),
// accumulator offset. err[0] gets the first error code (common.cuh HC_ERR_*), err[1] the
// chunk.
extern "C" __global__ void hc_huffman_decode_sum(
    const unsigned char* __restrict__ buf, unsigned long long nbytes,
    const unsigned long long* __restrict__ chunk_byte,
    const unsigned long long* __restrict__ chunk_bits, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, const long long* __restrict__ sizes, int count,
    int s, const unsigned char* __restrict__ coders, const int* __restrict__ tables,
    const int* __restrict__ tbits,
    const int* __restrict__ prims, const int* __restrict__ pbits,
    const double* __restrict__ values, const long long* __restrict__ acc_offsets,
    double* __restrict__ acc, int* err) {
    const long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    const int t = k.t;
    if (coders[t] != HC_CODER_HUFFMAN) return;
    const double* value = values + (long long)t * (2 * s + 1) + s;
    double* a = acc + acc_offsets[t];
    auto put = [=](long long i, int state) { a[i] += value[state]; };
    int e = hc_huffman_decode_chunk(buf, nbytes, chunk_byte[c], chunk_bits[c], k.start, k.end, s,
                                    tables + ((long long)t << HC_MAX_CODE_LEN), tbits[t],
                                    prims + ((long long)t << HC_PRIMARY_BITS), pbits[t], put);
    if (e != HC_OK && atomicCAS(err, 0, e) == 0) err[1] = (int)c;
}
