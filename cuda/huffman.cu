// Huffman stage (coders/symbol.py layout: one codeword per element, symbol = state + s), for a
// batch of tensors in one launch per kernel, chunks numbered globally (common.cuh hc_chunk);
// `coders` gives each tensor's coder: chunks of tensors coded otherwise (zrh.cu) are skipped.
//
//   hc_huffman_chunk_bits  one warp per chunk: its exact length in bits (the chunk table)
//   hc_huffman_write       one warp per chunk: lanes place 32 codewords at a time at offsets
//                          from a warp prefix sum into a shared-memory word buffer, completed
//                          words stored whole into the zeroed output (atomicOr only for the
//                          two words a chunk may share with its neighbours)
//   hc_huffman_chunk_bits4, hc_huffman_write4   the same with four states a lane (one word
//                          read; a lane's four codewords concatenated into one field), 128
//                          a round: to replace the two above once run on a device
//   hc_huffman_decode_sum  one thread per chunk, a warp's 32 chunks a tile of 32 elements at
//                          a time: decode the tile from every worker's payload in rank order
//                          into a float64 tile in shared memory (each state's value already
//                          in the tensor's dtype), then store it coalesced (decode-and-sum:
//                          one launch for all workers, sums like exchange.reduce_mean)
//   hc_huffman_decode_raw  exact top-k: one thread per chunk of one payload decodes it into
//                          a zeroed state buffer and the raw magnitudes beside it (states.cu
//                          hc_add_raw_states then adds their values)
//   hc_huffman_decode_symbols, hc_sum_symbols   the same sum for batches of few chunks
//                          (gpu_backend.SYMBOLS_MAX_CHUNKS): one thread per chunk of every
//                          payload decodes it into that payload's row of a symbol buffer,
//                          then each element's values are added in rank order
#include "common.cuh"

// raw (exact top-k): every non-zero state's codeword is followed by HC_RAW_BITS more. FOUR
// (hc_huffman_chunk_bits4, with hc_huffman_write4 awaiting its first device run,
// gpu_backend.WIDE): each lane reads four states as one word (chunks start at multiples of
// 256 states, tensors at multiples of 8 in the state buffer, their padding inside it).
template <bool FOUR>
__device__ __forceinline__ void hc_huffman_chunk_bits_warp(
    const signed char* states, const long long* offsets, const long long* sizes,
    const int* clog2, const long long* chunk_first, int count, int s,
    const unsigned char* coders, const unsigned char* lengths, int raw,
    unsigned long long* chunk_bits) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_HUFFMAN) return;  // another coder's tensor
    const unsigned char* len = lengths + (long long)k.t * (2 * s + 1);
    const signed char* x = states + offsets[k.t];
    const unsigned int* x4 = (const unsigned int*)x;
    const long long start = k.start, end = k.end;
    unsigned long long b = 0;
    const unsigned int extra = raw ? HC_RAW_BITS : 0;
    if (FOUR) {
        for (long long i = start + 4 * lane; i < end; i += 128)
            b += hc_huffman_bits4(x4[i >> 2], end - i < 4 ? (int)(end - i) : 4, len, s, extra);
    } else {
        for (long long i = start + lane; i < end; i += 32)
            b += len[x[i] + s] + (x[i] ? extra : 0);
    }
    for (int o = 16; o; o >>= 1) b += __shfl_down_sync(0xffffffffu, b, o);
    if (lane == 0) chunk_bits[c] = b;
}

extern "C" __global__ void hc_huffman_chunk_bits(
    const signed char* states, const long long* offsets, const long long* sizes,
    const int* clog2, const long long* chunk_first, int count, int s,
    const unsigned char* coders, const unsigned char* lengths, int raw,
    unsigned long long* chunk_bits) {
    hc_huffman_chunk_bits_warp<false>(states, offsets, sizes, clog2, chunk_first, count, s,
                                      coders, lengths, raw, chunk_bits);
}

extern "C" __global__ void hc_huffman_chunk_bits4(
    const signed char* states, const long long* offsets, const long long* sizes,
    const int* clog2, const long long* chunk_first, int count, int s,
    const unsigned char* coders, const unsigned char* lengths, int raw,
    unsigned long long* chunk_bits) {
    hc_huffman_chunk_bits_warp<true>(states, offsets, sizes, clog2, chunk_first, count, s,
                                     coders, lengths, raw, chunk_bits);
}

// Lanes place their codewords into a per-warp buffer of 32-bit words in shared memory (at
// most 31 carried bits + 32 x 15 bits = 17 words; RAW, exact top-k, each non-zero state's
// codeword followed by its raw magnitude: 31 + 32 x (15 + 31) bits = 47 words), then store
// the words this step completed with plain stores; only a chunk's first word (shared with the
// previous chunk's last bytes) and its last, partial word go to global memory with atomicOr.
#define HC_WARP_WORDS 18
#define HC_WARP_WORDS_RAW 48
template <bool RAW>
__device__ __forceinline__ void hc_huffman_write_chunk(
    const signed char* __restrict__ states, const long long* __restrict__ offsets,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned char* __restrict__ lengths,
    const unsigned short* __restrict__ codes, const unsigned int* __restrict__ raw,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    constexpr int WORDS = RAW ? HC_WARP_WORDS_RAW : HC_WARP_WORDS;
    __shared__ unsigned int buffer[HC_THREADS / 32][WORDS];
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
    for (int w = lane; w < WORDS; w += 32) words[w] = 0;
    __syncwarp();
    auto or_word = [words](unsigned long long w, unsigned int v) { atomicOr(words + w, v); };
    for (long long i0 = start; i0 < end; i0 += 32) {
        const long long i = i0 + lane;
        int sym = i < end ? x[i] + s : 0;
        const unsigned int cl = i < end ? len[sym] : 0;  // the codeword's length
        const unsigned int l = cl + (RAW && i < end && sym != s ? HC_RAW_BITS : 0);
        unsigned int incl = l;  // inclusive warp prefix sum of the items' lengths
        for (int o = 1; o < 32; o <<= 1) {
            unsigned int u = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += u;
        }
        const unsigned long long w0 = base >> 5;  // the buffer's word 0
        if (cl) hc_place((base & 31) + incl - l, code[sym], (int)cl, or_word);
        if (RAW && l > cl)
            hc_place((base & 31) + incl - l + cl, hc_raw_field(raw[offsets[k.t] + i]),
                     HC_RAW_BITS, or_word);
        __syncwarp();
        base += __shfl_sync(0xffffffffu, incl, 31);
        const int done = (int)((base >> 5) - w0);  // words every bit of which is placed
        for (int w = lane; w < done; w += 32) {  // (without raw magnitudes: done < 32)
            unsigned int v = hc_word_bytes(words[w]);
            if (w0 + w == first_word) atomicOr(out + first_word, v);
            else out[w0 + w] = v;
            if (!RAW) break;
        }
        unsigned int carry = words[done];
        __syncwarp();
        for (int w = lane; w < WORDS; w += 32) words[w] = w ? 0u : carry;
        __syncwarp();
    }
    if (lane == 0 && (base & 31)) atomicOr(out + (base >> 5), hc_word_bytes(words[0]));
}

extern "C" __global__ void hc_huffman_write(
    const signed char* __restrict__ states, const long long* __restrict__ offsets,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned char* __restrict__ lengths,
    const unsigned short* __restrict__ codes, const unsigned long long* __restrict__ chunk_byte,
    unsigned int* __restrict__ out) {
    hc_huffman_write_chunk<false>(states, offsets, sizes, clog2, chunk_first, count, s, coders,
                                  lengths, codes, nullptr, chunk_byte, out);
}

// Exact top-k: raw holds each non-zero state's magnitude bits, laid out like the states.
extern "C" __global__ void hc_huffman_write_raw(
    const signed char* __restrict__ states, const long long* __restrict__ offsets,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned char* __restrict__ lengths,
    const unsigned short* __restrict__ codes, const unsigned int* __restrict__ raw,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    hc_huffman_write_chunk<true>(states, offsets, sizes, clog2, chunk_first, count, s, coders,
                                 lengths, codes, raw, chunk_byte, out);
}

// A warp writes a chunk 128 states a round: each lane reads four states as one word and
// concatenates their codewords (hc_huffman_field4, from the warp's copy of the tensor's code
// in shared memory: entries codeword << 8 | length), places that field of <= 60 bits at its
// warp prefix-sum offset into a per-warp buffer of 32-bit words in shared memory (atomicOr
// there; 31 carried bits + 32 x 60 bits = 61 words), then the words the round completed are
// stored whole (hc_store_round); only a chunk's first word (shared with the previous chunk's
// last bytes) and its last, partial word go to global memory with atomicOr. (hc_huffman_write
// places a state a lane, 32 a round.)
#define HC_WRITE_WORDS 64
extern "C" __global__ void hc_huffman_write4(
    const signed char* __restrict__ states, const long long* __restrict__ offsets,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const unsigned char* __restrict__ lengths,
    const unsigned short* __restrict__ codes, const unsigned long long* __restrict__ chunk_byte,
    unsigned int* __restrict__ out) {
    __shared__ unsigned int buffer[HC_THREADS / 32][HC_WRITE_WORDS];
    __shared__ unsigned int table[HC_THREADS / 32][HC_MAX_ALPHABET];
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (c >= chunk_first[count]) return;  // c is the same for the whole warp
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_HUFFMAN) return;
    unsigned int* words = buffer[threadIdx.x >> 5];
    unsigned int* entry = table[threadIdx.x >> 5];
    const int alphabet = 2 * s + 1;
    for (int a = lane; a < alphabet; a += 32)
        entry[a] = hc_huffman_entry(codes[(long long)k.t * alphabet + a],
                                    lengths[(long long)k.t * alphabet + a]);
    for (int w = lane; w < HC_WRITE_WORDS; w += 32) words[w] = 0;
    __syncwarp();
    const unsigned int* x4 = (const unsigned int*)(states + offsets[k.t]);
    const long long start = k.start, end = k.end;
    const unsigned long long shared_to = chunk_byte[c] >> 2;  // the chunk's first word
    unsigned long long base = 8ull * chunk_byte[c];  // stream bit where this round starts
    auto or_word = [words](unsigned long long w, unsigned int v) { atomicOr(words + w, v); };
    for (long long i0 = start; i0 < end; i0 += 128) {
        const long long i = i0 + 4 * lane;
        int len = 0;
        const unsigned long long field =
            i < end ? hc_huffman_field4(x4[i >> 2], end - i < 4 ? (int)(end - i) : 4, entry, s,
                                        &len)
                    : 0;
        unsigned int incl = len;  // inclusive warp prefix sum of the fields' lengths
        for (int o = 1; o < 32; o <<= 1) {
            unsigned int u = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += u;
        }
        hc_place_wide((base & 31) + incl - len, field, len, or_word);
        __syncwarp();
        base = hc_store_round<HC_WRITE_WORDS>(words, out, base,
                                              __shfl_sync(0xffffffffu, incl, 31), shared_to,
                                              lane);
    }
    if (lane == 0 && (base & 31)) atomicOr(out + (base >> 5), hc_word_bytes(words[0]));
}

// Decode-and-sum of `npay` payloads (workers) of the same tensors (common.cuh
// hc_decode_sum_tile: what is decoded where). One thread per chunk (a chunk's bits are one
// sequential stream); a warp takes 32 neighbouring chunks a tile of 32 elements at a time:
// each lane decodes its chunk's next 32 elements of payload 0, 1, ... in turn, adding their
// values into its row of a float64 tile in shared memory (the host's rank-order sum, from
// 0.0); then the warp stores the tile transposed, 32 consecutive elements of one chunk per
// store (coalesced), into acc (`accumulate`: acc + tile, for the per-payload launches of
// tensors that cannot be fused). Every accumulator element is written once per launch, not
// read and written once per payload by scattered stores. tests/cuda_host_check.cu
// hc_check_decode_sum runs this loop on the host.
#define HC_DS_THREADS 128  // threads per block of hc_huffman_decode_sum (gpu_backend)

extern "C" __global__ void __launch_bounds__(HC_DS_THREADS) hc_huffman_decode_sum(
    const HcPayload* __restrict__ pays, int npay, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, const long long* __restrict__ sizes, int count,
    int s, const unsigned char* __restrict__ here, const int* __restrict__ dec,
    const double* __restrict__ values, const long long* __restrict__ acc_offsets,
    double* __restrict__ acc, int accumulate, uint64_t* __restrict__ resume,
    int* err) {
    __shared__ double tiles[HC_DS_THREADS / 32][32][HC_DS_TILE + 1];
    const long long total = chunk_first[count];
    const long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31;
    double* row = tiles[threadIdx.x >> 5][lane];
    HcChunk k = {0, 0, 0};
    if (c < total) k = hc_chunk(c, chunk_first, count, clog2, sizes);
    const bool mine = c < total && here[k.t];
    const int n = mine ? (int)(k.end - k.start) : 0;  // chunks hold at most 2^30 elements
    const long long out0 = mine ? acc_offsets[k.t] + k.start : 0;
    int longest = n;  // the warp's longest chunk (shuffles: __reduce_max_sync needs sm_80)
    for (int o = 16; o; o >>= 1) {
        const int other = __shfl_xor_sync(0xffffffffu, longest, o);
        longest = other > longest ? other : longest;
    }
    uint64_t used0 = 0;  // payload 0's position stays in a register
    for (int at = 0; at < longest; at += HC_DS_TILE) {
        hc_decode_sum_tile(pays, npay, c, total, k.t, chunk_first[k.t], count, s, dec, values,
                           at, n, &used0, resume, err, row);
        __syncwarp();
        for (int j = 0; j < 32; ++j) {  // chunk of lane j: its elements at .. at + 31
            const int nj = __shfl_sync(0xffffffffu, n, j);
            const long long oj = __shfl_sync(0xffffffffu, out0, j);
            if (at + lane < nj) {
                const double v = tiles[threadIdx.x >> 5][j][lane];
                double* a = acc + oj + at + lane;
                *a = accumulate ? *a + v : v;
            }
        }
        __syncwarp();
    }
}

// Decode-and-sum when the batch has too few chunks for a thread per chunk to fill the device
// (hc_huffman_decode_sum's threads each decode every payload of their chunk in turn): a
// thread per (payload, chunk) decodes it into a symbol buffer (common.cuh
// hc_decode_symbols_chunk), then hc_sum_symbols adds each element's values from 0.0 in
// payload order into acc (the same float64 sum as the tiles'). Only the tensors in `here`.
extern "C" __global__ void __launch_bounds__(HC_DS_THREADS) hc_huffman_decode_symbols(
    const HcPayload* __restrict__ pays, int npay, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, const long long* __restrict__ sizes, int count,
    const unsigned char* __restrict__ here, const int* __restrict__ dec,
    const long long* __restrict__ sym_offsets, long long stride,
    unsigned char* __restrict__ symbols, int* err) {
    hc_decode_symbols_chunk(pays, npay, blockIdx.x * (long long)blockDim.x + threadIdx.x,
                            clog2, chunk_first, sizes, count, here, dec, sym_offsets, stride,
                            symbols, err);
}

// acc[acc_offsets[t] + i] = hc_sum_symbols_at(sym_offsets[t] + i) for every element of the
// tensors in `here` (blockIdx.y = tensor).
extern "C" __global__ void hc_sum_symbols(
    const unsigned char* __restrict__ symbols, int npay, long long stride,
    const long long* __restrict__ sizes, const long long* __restrict__ acc_offsets,
    const long long* __restrict__ sym_offsets, const unsigned char* __restrict__ here,
    int count, const double* __restrict__ values, int s, double* __restrict__ acc) {
    const int t = blockIdx.y;
    if (!here[t]) return;
    const long long n = sizes[t], at = acc_offsets[t], from = sym_offsets[t];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        acc[at + i] = hc_sum_symbols_at(symbols, npay, stride, from + i, t, count, values,
                                        2 * s + 1);
}

// Exact top-k (common.cuh hc_huffman_decode_raw_thread): the huffman tensors' chunks of one
// payload, a thread each, into `out` and `raw` (zeroed / written where states are non-zero,
// laid out like the accumulator from state_at[t]).
extern "C" __global__ void hc_huffman_decode_raw(
    const unsigned char* __restrict__ buf, unsigned long long nbytes,
    const unsigned long long* __restrict__ chunk_byte,
    const unsigned long long* __restrict__ chunk_bits, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, const long long* __restrict__ sizes, int count,
    int s, const unsigned char* __restrict__ coders, const int* __restrict__ dec,
    const long long* __restrict__ state_at, signed char* __restrict__ out,
    unsigned int* __restrict__ raw, int* err) {
    hc_huffman_decode_raw_thread(blockIdx.x * (long long)blockDim.x + threadIdx.x, buf, nbytes,
                                 chunk_byte, chunk_bits, clog2, chunk_first, sizes, count, s,
                                 coders, dec, state_at, out, raw, err);
}
