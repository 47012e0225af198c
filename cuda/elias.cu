// Elias stage (coders/elias.py: gamma, delta and omega codes, run-length and gap layouts;
// common.cuh "coders/elias.py"), the baselines timed beside Huffman on the device. Every
// tensor of a launch has the same code `kind` and layout `gap` (a batch is coded with one
// coder); chunks numbered globally (common.cuh hc_chunk).
//
//   hc_elias_chunk_bits  one warp per chunk: its exact length in bits (the chunk table)
//   hc_elias_write       one warp per chunk: 32 items at a time placed at offsets from a warp
//                        prefix sum into a shared-memory word buffer, completed words stored
//                        whole (atomicOr only for the two words a chunk may share)
//   hc_elias_decode      a thread per chunk decodes its non-zero states into a zeroed int8
//                        state buffer; states.cu hc_add_states adds every state's value
//
// The encode kernels walk a list of the chunk's marks (states.cu hc_list: run ends for the
// run-length layout, non-zeros for the gap layout), each with its distance from the
// previous mark: a chunk costs its runs or non-zeros, not its length.
#include "common.cuh"

// Per-warp word buffer: 31 carried bits + 32 items of at most 76 bits (run-length layout:
// zigzag(v) <= 255 in <= 15 bits, a run <= 2^30 in <= 61; gap layout <= 61 + 1 + 13).
#define HC_ELIAS_WORDS 80

// A chunk's items, 32 at a time: calls visit(ok, d, v, p) once per round on every lane
// together (visit may use warp collectives); lanes with ok hold entry j of [a, b): its
// distance d from the previous entry (from one before the chunk start for the first), its
// state v and its position p in the chunk.
template <class Visit>
__device__ __forceinline__ void hc_elias_walk(const unsigned int* __restrict__ pos,
                                              const signed char* __restrict__ val, long long a,
                                              long long b, Visit visit) {
    const int lane = threadIdx.x & 31;
    for (long long j0 = a; j0 < b; j0 += 32) {
        const long long j = j0 + lane;
        const bool ok = j < b;
        long long d = 0, p = 0;
        int v = 0;
        if (ok) {
            p = pos[j];
            d = p - (j > a ? (long long)pos[j - 1] : -1ll);
            v = val[j];
        }
        visit(ok, d, v, p);
    }
}

// Global chunk c of a launch: false past the last chunk; else its list entries [*a, *b).
__device__ __forceinline__ bool hc_elias_chunk(long long c, const long long* at,
                                               const long long* block_first,
                                               const long long* sizes, const int* clog2,
                                               const long long* chunk_first, int count,
                                               long long* a, long long* b) {
    if (c >= chunk_first[count]) return false;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    hc_chunk_entries(k.t, k.start, k.end, block_first, at, a, b);
    return true;
}

// raw (exact top-k): each item followed by its raw magnitudes (common.cuh
// hc_elias_raw_len).
extern "C" __global__ void hc_elias_chunk_bits(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int kind, int gap, int raw,
    unsigned long long* __restrict__ chunk_bits) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    long long a, b;
    if (!hc_elias_chunk(c, at, block_first, sizes, clog2, chunk_first, count, &a, &b))
        return;  // the same for the whole warp
    unsigned long long bits = 0;
    hc_elias_walk(pos, val, a, b, [&](bool ok, long long d, int v, long long) {
        if (ok) bits += hc_elias_item_len(kind, gap, d, v) + (raw ? hc_elias_raw_len(gap, d, v)
                                                                  : 0);
    });
    for (int o = 16; o; o >>= 1) bits += __shfl_down_sync(0xffffffffu, bits, o);
    if ((threadIdx.x & 31) == 0) chunk_bits[c] = bits;
}

// RAW (exact top-k): each item followed by its raw magnitudes (raw[offsets[t] + element],
// laid out like the states). Items of at most HC_ELIAS_RAW_FAST bits go through a buffer
// of 31 carried bits + 32 such items; a round with a longer one (a run-length item of a run
// of several non-zero states) flushes the buffer and places its bits with atomicOr straight
// into the output (as zrh.cu's writer places long Rice runs).
#define HC_ELIAS_RAW_FAST (76 + HC_RAW_BITS)
#define HC_ELIAS_WORDS_RAW 110
template <bool RAW>
__device__ __forceinline__ void hc_elias_write_chunk(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int kind, int gap,
    const long long* __restrict__ offsets, const unsigned int* __restrict__ raw,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    constexpr int WORDS = RAW ? HC_ELIAS_WORDS_RAW : HC_ELIAS_WORDS;
    __shared__ unsigned int buffer[HC_THREADS / 32][WORDS];
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    long long a, b;
    if (!hc_elias_chunk(c, at, block_first, sizes, clog2, chunk_first, count, &a, &b)) return;
    const unsigned int* mags = nullptr;
    if (RAW) {
        const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
        mags = raw + offsets[k.t] + k.start;
    }
    unsigned int* words = buffer[threadIdx.x >> 5];
    for (int w = lane; w < WORDS; w += 32) words[w] = 0;
    __syncwarp();
    const unsigned long long first_word = chunk_byte[c] >> 2;  // may hold the previous chunk's
    unsigned long long base = 8ull * chunk_byte[c];  // stream bit where the next round starts
    unsigned long long shared_to = first_word;  // words up to it: atomicOr
    auto or_shared = [words](unsigned long long w, unsigned int v) { atomicOr(words + w, v); };
    auto or_global = [out](unsigned long long w, unsigned int v) {
        atomicOr(out + w, hc_word_bytes(v));
    };
    // an item's bits from stream bit rel on: its code, then its raw magnitudes (entry j, the
    // last state it codes at position pj of the chunk)
    auto place = [&](unsigned long long rel, long long d, int v, long long pj, auto or_word) {
        hc_elias_item(kind, gap, d, v, [&](unsigned int bits, int k) {
            if (bits) hc_place(rel, bits, k, or_word);
            rel += k;
        });
        if (RAW && v)
            for (long long e = gap ? pj : pj - d + 1; e <= pj; ++e, rel += HC_RAW_BITS)
                hc_place(rel, hc_raw_field(mags[e]), HC_RAW_BITS, or_word);
    };
    hc_elias_walk(pos, val, a, b, [&](bool ok, long long d, int v, long long pj) {
        const unsigned long long len =
            ok ? hc_elias_item_len(kind, gap, d, v) + (RAW ? hc_elias_raw_len(gap, d, v) : 0)
               : 0;
        unsigned long long incl = len;  // inclusive warp prefix sum of the item lengths
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned long long u = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += u;
        }
        const unsigned long long round = __shfl_sync(0xffffffffu, incl, 31);
        if (!RAW || !__any_sync(0xffffffffu, len > HC_ELIAS_RAW_FAST)) {
            if (ok) place((base & 31) + incl - len, d, v, pj, or_shared);
            __syncwarp();
            base = hc_store_round<WORDS>(words, out, base, round, shared_to, lane);
            return;
        }
        if (lane == 0 && (base & 31)) or_global(base >> 5, words[0]);
        if (ok) place(base + incl - len, d, v, pj, or_global);
        base += round;
        shared_to = base >> 5;
        __syncwarp();
        for (int w = lane; w < WORDS; w += 32) words[w] = 0;
        __syncwarp();
    });
    if (lane == 0 && (base & 31)) atomicOr(out + (base >> 5), hc_word_bytes(words[0]));
}

extern "C" __global__ void hc_elias_write(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int kind, int gap,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    hc_elias_write_chunk<false>(pos, val, at, block_first, sizes, clog2, chunk_first, count,
                                kind, gap, nullptr, nullptr, chunk_byte, out);
}

// Exact top-k: offsets[t] where tensor t's raw magnitudes start in raw (as its states).
extern "C" __global__ void hc_elias_write_raw(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int kind, int gap,
    const long long* __restrict__ offsets, const unsigned int* __restrict__ raw,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    hc_elias_write_chunk<true>(pos, val, at, block_first, sizes, clog2, chunk_first, count, kind,
                               gap, offsets, raw, chunk_byte, out);
}

// One thread per chunk of the Elias tensors (coders[t] = elias-gamma, -delta or -omega,
// gaps[t] its layout): their non-zero states into `out` (zeroed, laid out like the
// accumulator: tensor t from state_at[t]), exact top-k's raw magnitudes into `raw_or_null`
// (laid out the same; null for other payloads); err[0] gets the first error code, err[1] the
// chunk (common.cuh hc_elias_decode_thread).
extern "C" __global__ void hc_elias_decode(
    const unsigned char* __restrict__ buf, unsigned long long nbytes,
    const unsigned long long* __restrict__ chunk_byte,
    const unsigned long long* __restrict__ chunk_bits, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, const long long* __restrict__ sizes, int count,
    int s, const unsigned char* __restrict__ coders, const unsigned char* __restrict__ gaps,
    const long long* __restrict__ state_at, signed char* __restrict__ out,
    unsigned int* __restrict__ raw_or_null, int* err) {
    hc_elias_decode_thread(blockIdx.x * (long long)blockDim.x + threadIdx.x, buf, nbytes,
                           chunk_byte, chunk_bits, clog2, chunk_first, sizes, count, s, coders,
                           gaps, state_at, out, raw_or_null, err);
}
