// SHS stage (coders/shs.py layout, docs/format.md): sample Huffman for sparse states, one
// code over the 2s non-zero levels and zero runs of 1..HC_SHS_MAX_RUN (codebook.cu
// hc_build_shs_codes builds it from SH's sampled counts). Batches of tensors in one launch
// per kernel, chunks numbered globally (common.cuh hc_chunk); `coders` gives each tensor's
// coder: chunks of tensors coded otherwise are skipped.
//
//   hc_shs_chunk_bits  one warp per chunk: its exact length in bits (the chunk table)
//   hc_shs_write       one warp per chunk: 32 items at a time (a non-zero's zero run and its
//                      level, then the chunk's terminal run: common.cuh hc_run_walk over the
//                      lists of non-zero states, as ZRH's writer) placed through a shared
//                      word buffer (common.cuh hc_run_items_write)
//   hc_shs_decoders, hc_shs_decode   a decoder record per tensor (common.cuh
//                      hc_decoder_header over the 2s + HC_SHS_MAX_RUN symbols), then a thread
//                      per chunk decodes its non-zeros into a zeroed int8 state buffer
//                      (states.cu hc_add_states adds every state's value: decode-and-sum)
#include "common.cuh"

#define HC_SHS_WORDS 66      // per-warp word buffer: 31 carried bits + 32 items of <= 64 bits
#define HC_SHS_WORDS_RAW 97  // exact top-k: + HC_RAW_BITS per item

// Global chunk c of an SHS launch: false if past the last chunk or another coder's; else its
// code (tab: 2s + HC_SHS_MAX_RUN entries per tensor), its non-zeros (entries [a, b) of the
// lists), its length n, its tensor t and first element.
struct HcShsChunk {
    HcShsCode z;
    long long a, b, n;
    int t;
    long long start;
};

__device__ __forceinline__ bool hc_shs_chunk(long long c, const long long* nz_at,
                                             const long long* block_first,
                                             const long long* sizes, const int* clog2,
                                             const long long* chunk_first, int count, int s,
                                             const unsigned char* coders,
                                             const unsigned int* tab, HcShsChunk* out) {
    if (c >= chunk_first[count]) return false;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_SHS) return false;
    out->z.s = s;
    out->z.tab = tab + (long long)k.t * (2 * s + HC_SHS_MAX_RUN);
    hc_chunk_entries(k.t, k.start, k.end, block_first, nz_at, &out->a, &out->b);
    out->n = k.end - k.start;
    out->t = k.t;
    out->start = k.start;
    return true;
}

// raw (exact top-k): every level is followed by HC_RAW_BITS more.
extern "C" __global__ void hc_shs_chunk_bits(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned int* __restrict__ tab, int raw,
    unsigned long long* __restrict__ chunk_bits) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    HcShsChunk k;
    if (!hc_shs_chunk(c, nz_at, block_first, sizes, clog2, chunk_first, count, s, coders, tab,
                      &k))
        return;  // the same for the whole warp
    const HcShsCode& z = k.z;
    const unsigned long long b = hc_run_items_bits(
        pos, val, k.a, k.b, k.n, raw ? HC_RAW_BITS : 0,
        [&](long long r, int v, int pv, uint64_t* code) {
            return hc_shs_item(z, r, v, pv, code);
        });
    if ((threadIdx.x & 31) == 0) chunk_bits[c] = b;
}

// RAW (exact top-k): each level is followed by its raw magnitude (raw[offsets[t] + element],
// laid out like the states).
template <bool RAW>
__device__ __forceinline__ void hc_shs_write_chunk(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned int* __restrict__ tab,
    const long long* __restrict__ offsets, const unsigned int* __restrict__ raw,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    HcShsChunk k;
    if (!hc_shs_chunk(c, nz_at, block_first, sizes, clog2, chunk_first, count, s, coders, tab,
                      &k))
        return;
    const HcShsCode& z = k.z;
    hc_run_items_write<RAW, RAW ? HC_SHS_WORDS_RAW : HC_SHS_WORDS>(
        pos, val, k.a, k.b, k.n, RAW ? raw + offsets[k.t] + k.start : nullptr, chunk_byte[c],
        out,
        [&](long long r, int v, int pv, uint64_t* code) { return hc_shs_item(z, r, v, pv, code); },
        [&](long long r, int v, int pv, auto emit) { hc_shs_item_pieces(z, r, v, pv, emit); });
}

extern "C" __global__ void hc_shs_write(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned int* __restrict__ tab,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    hc_shs_write_chunk<false>(pos, val, nz_at, block_first, sizes, clog2, chunk_first, count, s,
                              coders, tab, nullptr, nullptr, chunk_byte, out);
}

// Exact top-k: offsets[t] where tensor t's raw magnitudes start in raw (as its states).
extern "C" __global__ void hc_shs_write_raw(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned int* __restrict__ tab,
    const long long* __restrict__ offsets, const unsigned int* __restrict__ raw,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    hc_shs_write_chunk<true>(pos, val, nz_at, block_first, sizes, clog2, chunk_first, count, s,
                             coders, tab, offsets, raw, chunk_byte, out);
}

// The decoder records of one payload's SHS tensors (HC_DEC_INTS ints per tensor, as
// codebook.cu hc_huffman_decoders makes huffman's), one block per tensor: lengths and single
// (the one symbol of a one-symbol code, else -1) of 2s + HC_SHS_MAX_RUN symbols per tensor.
extern "C" __global__ void hc_shs_decoders(const unsigned char* lengths, const int* single,
                                           int s, const unsigned char* coders, int* dec) {
    __shared__ int pb;
    const int t = blockIdx.x, a = 2 * s + HC_SHS_MAX_RUN;
    if (coders[t] != HC_CODER_SHS) return;
    int* d = dec + (long long)t * HC_DEC_INTS;
    if (threadIdx.x == 0) pb = hc_decoder_header(lengths + (long long)t * a, a, single[t], d);
    __syncthreads();
    hc_decoder_primary(d, pb, threadIdx.x, blockDim.x);
}

// One thread per chunk of the SHS tensors: their non-zero states into `out` (zeroed, laid
// out like the accumulator: tensor t from state_at[t]), exact top-k's raw magnitudes into
// `raw_or_null` (laid out the same; null for other payloads). err[0] gets the first error
// code (common.cuh HC_ERR_*), err[1] the chunk (common.cuh hc_shs_decode_thread).
extern "C" __global__ void hc_shs_decode(
    const unsigned char* __restrict__ buf, unsigned long long nbytes,
    const unsigned long long* __restrict__ chunk_byte,
    const unsigned long long* __restrict__ chunk_bits, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, const long long* __restrict__ sizes, int count,
    int s, const unsigned char* __restrict__ coders, const int* __restrict__ dec,
    const long long* __restrict__ state_at, signed char* __restrict__ out,
    unsigned int* __restrict__ raw_or_null, int* err) {
    hc_shs_decode_thread(blockIdx.x * (long long)blockDim.x + threadIdx.x, buf, nbytes,
                         chunk_byte, chunk_bits, clog2, chunk_first, sizes, count, s, coders,
                         dec, state_at, out, raw_or_null, err);
}
