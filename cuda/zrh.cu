// ZRH stage (coders/zrh.py layout, docs/format.md): per non-zero state its zero run and its
// level, then each chunk's terminal run, with the tables of the previous level's context.
// Batches of tensors in one launch per kernel, chunks numbered globally (common.cuh hc_chunk);
// `coders` gives each tensor's coder: chunks of tensors coded otherwise are skipped.
//
//   hc_zrh_histogram   per tensor: run symbol counts, extra bits and sum of r >> k for every
//                      Rice k per run context, level counts per level context (the arrays of
//                      zrh.histograms, from which the planner picks the code)
//   hc_zrh_chunk_bits  one warp per chunk: its exact length in bits (the chunk table)
//   hc_zrh_write       one warp per chunk: 32 items at a time placed at offsets from a warp
//                      prefix sum into a shared-memory word buffer, stored as whole words
//   hc_zrh_decode_tables, hc_zrh_decode   a thread per chunk decodes its non-zeros into a
//                      zeroed int8 state buffer (states.cu hc_add_states then adds every
//                      state's value to the float64 accumulator: decode-and-sum)
//
// The encode kernels walk the lists of non-zero states (states.cu hc_list_count, a prefix
// sum, hc_list in mode HC_LIST_NONZERO: position in the chunk, level), made in parallel over
// the whole batch whatever the chunk size, and share common.cuh hc_run_walk (with SHS): a
// warp per chunk takes its non-zeros 32 at a time, each with its zero run and the previous
// level.
#include "common.cuh"

// Sum over the warp's 32 lanes (all active): the sm_80 instruction where there is one,
// shuffles on sm_75 (the oldest architecture CUDA 13 builds for).
__device__ __forceinline__ unsigned int hc_warp_add(unsigned int v) {
#if __CUDA_ARCH__ >= 800
    return __reduce_add_sync(0xffffffffu, v);
#else
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
#endif
}

#define HC_WARPS (HC_THREADS / 32)
#define HC_ZRH_WORDS 66    // per-warp word buffer: 31 carried bits + 32 items of <= 64 bits
#define HC_ZRH_PARAMS 8    // per tensor: mode, context mode, Rice k of the 4 run contexts, 0, 0

// Row of a tensor's histograms (u64): run counts [NCTX][RUN_ALPHABET], level counts
// [NLCTX][2s], extra bits [NCTX], sums of r >> k [NCTX][RICE_MAX_K + 1].
#define HC_HIST_RC 0
#define HC_HIST_LC (HC_ZRH_NCTX * HC_RUN_ALPHABET)
__device__ __forceinline__ int hc_hist_extra(int s) { return HC_HIST_LC + HC_ZRH_NLCTX * 2 * s; }
__device__ __forceinline__ int hc_hist_shifted(int s) { return hc_hist_extra(s) + HC_ZRH_NCTX; }
__device__ __forceinline__ int hc_hist_row(int s) {
    return hc_hist_shifted(s) + HC_ZRH_NCTX * (HC_RICE_MAX_K + 1);
}

__device__ __forceinline__ HcZrhCode hc_zrh_code(int t, int s, const int* zpar,
                                                 const unsigned int* rtab,
                                                 const unsigned int* ltab) {
    const int* p = zpar + t * HC_ZRH_PARAMS;
    HcZrhCode z;
    z.mode = p[0];
    z.ctxmode = p[1];
    z.s = s;
    z.ks = p + 2;
    z.rtab = rtab + (long long)t * HC_ZRH_NCTX * HC_RUN_ALPHABET;
    z.ltab = ltab + (long long)t * HC_ZRH_NLCTX * 2 * s;
    return z;
}

// Global chunk c of a ZRH kernel's launch: false if past the last chunk or another coder's;
// else its code, its non-zeros (entries [a, b) of the lists), its length n, its tensor t and
// first element.
struct HcZrhChunk {
    HcZrhCode z;
    long long a, b, n;
    int t;
    long long start;
};

__device__ __forceinline__ bool hc_zrh_chunk(long long c, const long long* nz_at,
                                             const long long* block_first,
                                             const long long* sizes, const int* clog2,
                                             const long long* chunk_first, int count, int s,
                                             const unsigned char* coders, const int* zpar,
                                             const unsigned int* rtab, const unsigned int* ltab,
                                             HcZrhChunk* out) {
    if (c >= chunk_first[count]) return false;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_ZRH) return false;
    out->z = hc_zrh_code(k.t, s, zpar, rtab, ltab);
    hc_chunk_entries(k.t, k.start, k.end, block_first, nz_at, &out->a, &out->b);
    out->n = k.end - k.start;
    out->t = k.t;
    out->start = k.start;
    return true;
}

// blockIdx.y = tensor; the block's warps take its chunks in turn and count into shared
// memory, then add the block's counts to the tensor's row of `hist` (hc_hist_row(s) u64).
extern "C" __global__ void hc_zrh_histogram(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2, int s,
    unsigned long long* __restrict__ hist) {
    __shared__ unsigned int rc[HC_ZRH_NCTX * HC_RUN_ALPHABET];
    __shared__ unsigned int lc[HC_ZRH_NLCTX * 2 * HC_MAX_LEVELS];
    __shared__ unsigned long long extra[HC_ZRH_NCTX];
    __shared__ unsigned long long shifted[HC_ZRH_NCTX * (HC_RICE_MAX_K + 1)];
    const int t = blockIdx.y, warp = threadIdx.x >> 5, a2 = 2 * s;
    for (int k = threadIdx.x; k < HC_ZRH_NCTX * HC_RUN_ALPHABET; k += blockDim.x) rc[k] = 0;
    for (int k = threadIdx.x; k < HC_ZRH_NLCTX * a2; k += blockDim.x) lc[k] = 0;
    for (int k = threadIdx.x; k < HC_ZRH_NCTX * (HC_RICE_MAX_K + 1); k += blockDim.x)
        shifted[k] = 0;
    if (threadIdx.x < HC_ZRH_NCTX) extra[threadIdx.x] = 0;
    __syncthreads();
    const long long n = sizes[t];
    const int lg = clog2[t];
    const long long chunks = (n + (1ll << lg) - 1) >> lg;
    // per item: its run symbol and level in shared counters; the sums of extra bits and of
    // r >> k over the warp's long runs per context reduced across the warp first (the runs
    // of one round lie in one chunk: their sum stays below 2^30)
    auto add = [&](bool ok, long long r, int v, int pv, long long) {
        int ctx = 0, lctx = 0, ne = 0;
        unsigned int ex;
        if (ok) {
            hc_zrh_contexts(pv, HC_ZRH_CTX_SIGN, &ctx, &lctx);
            atomicAdd(&rc[ctx * HC_RUN_ALPHABET + hc_run_sym(r, &ne, &ex)], 1u);
            if (v) atomicAdd(&lc[lctx * a2 + hc_level_sym(v, s)], 1u);
        }
        const bool long_run = ok && r >= HC_RUN_DIRECT;
        for (int c = 0; c < HC_ZRH_NCTX; ++c) {
            const bool mine = long_run && ctx == c;
            if (!__any_sync(0xffffffffu, mine)) continue;
            const unsigned int e = hc_warp_add(mine ? (unsigned int)ne : 0u);
            if ((threadIdx.x & 31) == 0) atomicAdd(&extra[c], (unsigned long long)e);
            for (int k = 0; k <= HC_RICE_MAX_K; ++k) {
                const unsigned int q = hc_warp_add(mine ? (unsigned int)(r >> k) : 0u);
                if ((threadIdx.x & 31) == k)
                    atomicAdd(&shifted[c * (HC_RICE_MAX_K + 1) + k], (unsigned long long)q);
            }
        }
    };
    for (long long j = blockIdx.x * (long long)HC_WARPS + warp; j < chunks;
         j += (long long)gridDim.x * HC_WARPS) {
        const long long start = j << lg, end = min(n, start + (1ll << lg));
        long long a, b;
        hc_chunk_entries(t, start, end, block_first, nz_at, &a, &b);
        hc_run_walk(pos, val, a, b, end - start, add);
    }
    __syncthreads();
    unsigned long long* row = hist + (long long)t * hc_hist_row(s);
    for (int k = threadIdx.x; k < HC_ZRH_NCTX * HC_RUN_ALPHABET; k += blockDim.x)
        if (rc[k]) atomicAdd(row + HC_HIST_RC + k, (unsigned long long)rc[k]);
    for (int k = threadIdx.x; k < HC_ZRH_NLCTX * a2; k += blockDim.x)
        if (lc[k]) atomicAdd(row + HC_HIST_LC + k, (unsigned long long)lc[k]);
    if (threadIdx.x < HC_ZRH_NCTX && extra[threadIdx.x])
        atomicAdd(row + hc_hist_extra(s) + threadIdx.x, extra[threadIdx.x]);
    for (int k = threadIdx.x; k < HC_ZRH_NCTX * (HC_RICE_MAX_K + 1); k += blockDim.x)
        if (shifted[k]) atomicAdd(row + hc_hist_shifted(s) + k, shifted[k]);
}

// zpar: HC_ZRH_PARAMS ints per tensor; rtab/ltab: the codes as code << 5 | length,
// HC_ZRH_NCTX x HC_RUN_ALPHABET and HC_ZRH_NLCTX x 2s entries per tensor. raw (exact top-k):
// every level is followed by HC_RAW_BITS more.
extern "C" __global__ void hc_zrh_chunk_bits(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const int* __restrict__ zpar,
    const unsigned int* __restrict__ rtab, const unsigned int* __restrict__ ltab, int raw,
    unsigned long long* __restrict__ chunk_bits) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    HcZrhChunk k;
    if (!hc_zrh_chunk(c, nz_at, block_first, sizes, clog2, chunk_first, count, s, coders, zpar,
                      rtab, ltab, &k))
        return;  // the same for the whole warp
    const HcZrhCode& z = k.z;
    const unsigned long long b = hc_run_items_bits(
        pos, val, k.a, k.b, k.n, raw ? HC_RAW_BITS : 0,
        [&](long long r, int v, int pv, uint64_t* code) {
            return hc_zrh_item(z, r, v, pv, code);
        });
    if (lane == 0) chunk_bits[c] = b;
}

// The writers (common.cuh hc_run_items_write: items of at most 64 bits through the warp's
// word buffer, longer Rice runs straight into the output); RAW (exact top-k): each level is
// followed by its raw magnitude (raw[offsets[t] + element], laid out like the states), so
// the buffer holds 31 carried bits + 32 items of <= 64 + 31 bits.
#define HC_ZRH_WORDS_RAW 97
template <bool RAW>
__device__ __forceinline__ void hc_zrh_write_chunk(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const int* __restrict__ zpar,
    const unsigned int* __restrict__ rtab, const unsigned int* __restrict__ ltab,
    const long long* __restrict__ offsets, const unsigned int* __restrict__ raw,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    const long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    HcZrhChunk k;
    if (!hc_zrh_chunk(c, nz_at, block_first, sizes, clog2, chunk_first, count, s, coders, zpar,
                      rtab, ltab, &k))
        return;
    const HcZrhCode& z = k.z;
    hc_run_items_write<RAW, RAW ? HC_ZRH_WORDS_RAW : HC_ZRH_WORDS>(
        pos, val, k.a, k.b, k.n, RAW ? raw + offsets[k.t] + k.start : nullptr, chunk_byte[c],
        out,
        [&](long long r, int v, int pv, uint64_t* code) { return hc_zrh_item(z, r, v, pv, code); },
        [&](long long r, int v, int pv, auto emit) { hc_zrh_item_pieces(z, r, v, pv, emit); });
}

extern "C" __global__ void hc_zrh_write(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const int* __restrict__ zpar,
    const unsigned int* __restrict__ rtab, const unsigned int* __restrict__ ltab,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    hc_zrh_write_chunk<false>(pos, val, nz_at, block_first, sizes, clog2, chunk_first, count, s,
                              coders, zpar, rtab, ltab, nullptr, nullptr, chunk_byte, out);
}

// Exact top-k: offsets[t] where tensor t's raw magnitudes start in raw (as its states).
extern "C" __global__ void hc_zrh_write_raw(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val,
    const long long* __restrict__ nz_at, const long long* __restrict__ block_first,
    const long long* __restrict__ sizes, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, int count, int s,
    const unsigned char* __restrict__ coders, const int* __restrict__ zpar,
    const unsigned int* __restrict__ rtab, const unsigned int* __restrict__ ltab,
    const long long* __restrict__ offsets, const unsigned int* __restrict__ raw,
    const unsigned long long* __restrict__ chunk_byte, unsigned int* __restrict__ out) {
    hc_zrh_write_chunk<true>(pos, val, nz_at, block_first, sizes, clog2, chunk_first, count, s,
                             coders, zpar, rtab, ltab, offsets, raw, chunk_byte, out);
}

// Decode tables of every tensor's HC_ZRH_ROWS codes (rows 0..3 runs over HC_RUN_ALPHABET,
// 4..11 levels over 2s), one block per row: entry symbol << 5 | length for the next bits[row]
// bits; bits[row] = 0: table[0] = the one symbol << 5, or -1 << 5 for an empty code.
// lengths/codes: HC_ZRH_NCTX rows of HC_RUN_ALPHABET then HC_ZRH_NLCTX rows of 2s per tensor.
extern "C" __global__ void hc_zrh_decode_tables(
    const unsigned char* __restrict__ lengths, const unsigned short* __restrict__ codes,
    const int* __restrict__ singles, const long long* __restrict__ table_at,
    const int* __restrict__ bits, int s, int* __restrict__ tables) {
    const int row = blockIdx.x % HC_ZRH_ROWS;
    const long long t = blockIdx.x / HC_ZRH_ROWS;
    const int per = HC_ZRH_NCTX * HC_RUN_ALPHABET + HC_ZRH_NLCTX * 2 * s;
    const long long first = t * per + (row < HC_ZRH_NCTX
                                           ? row * HC_RUN_ALPHABET
                                           : HC_ZRH_NCTX * HC_RUN_ALPHABET
                                                 + (row - HC_ZRH_NCTX) * 2 * s);
    const int alphabet = row < HC_ZRH_NCTX ? HC_RUN_ALPHABET : 2 * s;
    const int tb = bits[blockIdx.x];
    int* table = tables + table_at[blockIdx.x];
    if (tb == 0) {
        const int one = singles[blockIdx.x];
        if (threadIdx.x == 0) table[0] = one >= 0 ? one << 5 : -(1 << 5);
        return;
    }
    for (int j = threadIdx.x; j < (1 << tb); j += blockDim.x) table[j] = -(1 << 5);
    __syncthreads();
    for (int k = 0; k < alphabet; ++k) {
        const int ln = lengths[first + k];
        if (!ln || ln > tb) continue;
        const unsigned int code = codes[first + k];
        const unsigned int lo = code << (tb - ln), hi = (code + 1) << (tb - ln);
        for (unsigned int j = lo + threadIdx.x; j < hi; j += blockDim.x) table[j] = (k << 5) | ln;
    }
}

// One thread per chunk of the ZRH tensors: their non-zero states into `out` (zeroed, laid
// out like the accumulator: tensor t from state_at[t]), exact top-k's raw magnitudes into
// `raw_or_null` (laid out the same; null for other payloads). err[0] gets the first error
// code (common.cuh HC_ERR_*), err[1] the chunk.
extern "C" __global__ void hc_zrh_decode(
    const unsigned char* __restrict__ buf, unsigned long long nbytes,
    const unsigned long long* __restrict__ chunk_byte,
    const unsigned long long* __restrict__ chunk_bits, const int* __restrict__ clog2,
    const long long* __restrict__ chunk_first, const long long* __restrict__ sizes, int count,
    int s, const unsigned char* __restrict__ coders, const int* __restrict__ zpar,
    const int* __restrict__ tables, const long long* __restrict__ table_at,
    const int* __restrict__ bits, const long long* __restrict__ state_at,
    signed char* __restrict__ out, unsigned int* __restrict__ raw_or_null, int* err) {
    const long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    const int t = k.t;
    if (coders[t] != HC_CODER_ZRH) return;
    HcTable rows[HC_ZRH_ROWS];
    for (int r = 0; r < HC_ZRH_ROWS; ++r) {
        rows[r].table = tables + table_at[t * HC_ZRH_ROWS + r];
        rows[r].bits = bits[t * HC_ZRH_ROWS + r];
    }
    const int* p = zpar + t * HC_ZRH_PARAMS;
    signed char* o = out + state_at[t];
    int e;
    if (raw_or_null) {
        HcRawSink sink = {o, raw_or_null + state_at[t], false};
        e = sink.verdict(hc_zrh_decode_chunk<true>(buf, nbytes, chunk_byte[c], chunk_bits[c],
                                                   k.start, k.end, s, p[0], p[1], p + 2, rows,
                                                   rows + HC_ZRH_NCTX, sink.put()));
    } else {
        e = hc_zrh_decode_chunk(buf, nbytes, chunk_byte[c], chunk_bits[c], k.start, k.end, s,
                                p[0], p[1], p + 2, rows, rows + HC_ZRH_NCTX,
                                [o](long long i, int v) { o[i] = (signed char)v; });
    }
    if (e != HC_OK) hc_report(err, e, c);
}
