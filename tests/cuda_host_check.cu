// Host entry points over the HC_HD functions of cuda/common.cuh (the per-element logic of the
// GPU kernels), built by tests/test_cuda_sources.py with nvcc into a shared library and
// compared with the CPU backend byte for byte: checkable on machines without a GPU.
#include <string.h>
#include <vector>
#include "../cuda/common.cuh"

// The stream of a host writer as 32-bit words (hc_place's layout), grown on demand.
struct HostWords {
    std::vector<uint32_t> words = std::vector<uint32_t>(1, 0u);
    void put(uint64_t w, uint32_t v) {
        if (w >= words.size()) words.resize(w + 1, 0u);
        words[w] |= v;
    }
    // The first `bytes` bytes into out, as the device stores the words; returns bytes.
    long long store(unsigned long long bytes, unsigned char* out) {
        words.resize(bytes / 4 + 1, 0u);
        for (unsigned long long k = 0; k < bytes; ++k)
            out[k] = (uint8_t)(hc_word_bytes(words[k >> 2]) >> (8 * (k & 3)));
        return (long long)bytes;
    }
};

// Chunks of the coders that code zero runs (ZRH, SHS) written one item at a time (the
// device's warps place 32 items a round at warp prefix-sum offsets: the same items, the same
// bits): item(r, v, pv, &code), or pieces(r, v, pv, emit) for items over 64 bits, then with
// raw (exact top-k; null for none) a level's magnitude. Returns the data's byte count.
template <class Item, class Pieces>
static long long host_run_items_encode(const signed char* states, long long n, int clog2,
                                       const unsigned int* raw, unsigned long long* chunk_bits,
                                       unsigned char* out, Item item_code, Pieces pieces) {
    long long m = (n + (1ll << clog2) - 1) >> clog2;
    unsigned long long byte = 0;
    HostWords words;
    auto or_word = [&words](uint64_t w, uint32_t v) { words.put(w, v); };
    for (long long c = 0; c < m; ++c) {
        long long start = c << clog2, end = start + (1ll << clog2) < n ? start + (1ll << clog2) : n;
        uint64_t pos = 8 * byte, first = pos;
        long long prev = start - 1;
        int pv = 0;
        auto item = [&](long long r, int v, long long i) {
            uint64_t code = 0, len = item_code(r, v, pv, &code);
            if (len > 64) {
                pieces(r, v, pv, [&](uint32_t bits, int k) {
                    hc_place(pos, bits, k, or_word);
                    pos += k;
                });
            } else {
                if (len > 32) hc_place(pos, (uint32_t)(code >> 32), (int)len - 32, or_word);
                if (len) hc_place(pos + (len > 32 ? len - 32 : 0), (uint32_t)code,
                                  len > 32 ? 32 : (int)len, or_word);
                pos += len;
            }
            if (raw && v) {
                hc_place(pos, hc_raw_field(raw[i]), HC_RAW_BITS, or_word);
                pos += HC_RAW_BITS;
            }
        };
        for (long long i = start; i < end; ++i) {
            if (!states[i]) continue;
            item(i - prev - 1, states[i], i);
            prev = i;
            pv = states[i];
        }
        item(end - prev - 1, 0, end);
        chunk_bits[c] = pos - first;
        byte += (pos - first + 7) / 8;
    }
    return words.store(byte, out);
}

extern "C" {

void hc_check_half(const unsigned short* h, long long n, float* out) {
    for (long long i = 0; i < n; ++i) out[i] = hc_half_to_float(h[i]);
}

void hc_check_round_half(const double* v, long long n, double* out) {
    for (long long i = 0; i < n; ++i) out[i] = hc_round_to_half(v[i]);
}

void hc_check_round(const double* x, long long n, int s, double scale, unsigned long long seed,
                    unsigned long long stream, signed char* out) {
    uint64_t key = hc_stream_key(seed, stream);
    for (long long i = 0; i < n; ++i) out[i] = (signed char)hc_round_state(x[i], s, scale, key, i);
}

float hc_check_scale(const double* x, long long n, int l2) {
    double m = 0;
    for (long long i = 0; i < n; ++i) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    if (m == 0) return 0.0f;
    if (!l2) return hc_round_up_f32(m);
    uint64_t hi = 0, lo = 0;
    for (long long i = 0; i < n; ++i) {
        uint64_t t = hc_sumsq_term(x[i], m);
        hi += t >> 20;
        lo += t & 0xFFFFF;
    }
    return hc_round_up_f32(m * sqrt(hc_sumsq_value(hi, lo)));
}

// quantize.cu's float formats per element: states of x (a format `fmt`, largest code s) at
// this scale > 0 (hc_quantize_fp), the max-norm scale of x (hc_scales), and the GenNorm
// moments' integer sums hi1, lo1, hi2, lo2 (hc_moments) into sums.
void hc_check_fp_quantize(const double* x, long long n, double scale, int fmt, int s,
                          signed char* out) {
    const HcFp f = hc_fp_format(fmt, s);
    for (long long i = 0; i < n; ++i) {
        const int k = hc_fp_code(fabs(x[i]) / scale, f);
        out[i] = (signed char)(x[i] < 0 ? -k : k);
    }
}

float hc_check_fp_max_scale(double m, int fmt, int s) {
    return hc_fp_max_scale(m, hc_fp_format(fmt, s));
}

void hc_check_moments(const double* x, long long n, double m, unsigned long long* sums) {
    for (int k = 0; k < 4; ++k) sums[k] = 0;
    for (long long i = 0; i < n; ++i) {
        const double y = fabs(x[i]) / m;
        const uint64_t a = hc_abs_term(y), q = hc_sumsq_of(y);
        sums[0] += a >> 20, sums[1] += a & 0xFFFFF, sums[2] += q >> 20, sums[3] += q & 0xFFFFF;
    }
}

// histogram.cu hc_sample_counts of one tensor's states: SH's sampled counts.
void hc_check_sample_counts(const signed char* states, long long n, int s,
                            unsigned long long seed, unsigned long long* counts) {
    for (int k = 0; k < 2 * s + 1; ++k) counts[k] = 1;
    if (n == 0) return;
    const uint64_t key = hc_stream_key(seed, HC_STREAM_SAMPLE);
    for (int j = 0; j < HC_SAMPLE_SIZE; ++j) ++counts[states[hc_sample_position(key, j, n)] + s];
}

// quantize.cu's quantized top-k on one tensor, its passes in turn: the radix select
// (hc_topk_hist's histogram of matching keys, hc_topk_digit), the ties ranked by index and
// the kept entries rounded (hc_quantize_topk; s = 0, exact top-k: their signs, and their
// raw magnitudes into raw); the k-th largest key and the ties kept out.
void hc_check_topk(const double* x, long long n, int f64, long long k, int s, double scale,
                   unsigned long long seed, unsigned long long stream, signed char* out,
                   unsigned int* raw, unsigned long long* th_out, long long* need_out) {
    uint64_t prefix = 0;
    long long krem = k;
    for (int shift = f64 ? 56 : 24; shift >= 0 && krem > 0; shift -= 8) {
        unsigned long long hist[256] = {0};
        for (long long i = 0; i < n; ++i) {
            const uint64_t key = hc_topk_key(x[i], f64);
            if (hc_topk_matches(key, prefix, shift)) ++hist[(key >> shift) & 255];
        }
        prefix |= (uint64_t)hc_topk_digit(hist, krem) << shift;
    }
    *th_out = prefix;
    *need_out = krem;
    const uint64_t key = hc_stream_key(seed, stream);
    long long rank = 0;
    for (long long i = 0; i < n; ++i) {
        const uint64_t kx = hc_topk_key(x[i], f64);
        const bool kept = krem > 0 && hc_topk_keep(kx, prefix, rank, krem);
        rank += prefix != 0 && kx == prefix;
        if (!s) {  // a NaN or Inf scale (the host writes NaN for Inf) keeps none
            out[i] = (signed char)(kept && scale > 0 && !isinf(scale) ? hc_topk_sign(x[i]) : 0);
            if (out[i]) raw[i] = hc_raw_bits(x[i]);
            continue;
        }
        out[i] = (signed char)(kept && scale > 0 ? hc_round_state(x[i], s, scale, key, i) : 0);
    }
}

unsigned long long hc_check_code(const unsigned long long* counts, int n,
                                 unsigned char* lengths, unsigned short* codes, int* single) {
    static HcCodeWork work;
    return hc_states_code(counts, n, lengths, codes, single, work);
}

// The huffman layout of states[0:n] in chunks of 2^clog2: chunk_bits[m] and the data (each
// chunk from a byte boundary) into out (zeroed by the caller); returns the data bytes. The
// chunk bits as hc_huffman_chunk_bits4 counts them: states four at a time (one little-endian
// word; the device's state buffer is zero padded to a multiple of 8), and the data as
// hc_huffman_write places it (a codeword at a time), or with `wide` as hc_huffman_write4
// does: each four's codewords one field (hc_huffman_field4) placed at the stream bit where
// the fields before it end. raw (exact top-k; null for none): each non-zero state's codeword
// followed by its magnitude, as hc_huffman_write_raw places them.
long long hc_check_huffman_encode(const signed char* states, long long n, int s, int clog2,
                                  const unsigned char* lengths, const unsigned short* codes,
                                  const unsigned int* raw, int wide,
                                  unsigned long long* chunk_bits, unsigned char* out) {
    long long m = (n + (1ll << clog2) - 1) >> clog2;
    unsigned long long byte = 0;
    HostWords words;
    auto or_word = [&words](uint64_t w, uint32_t v) { words.put(w, v); };
    uint32_t entry[HC_MAX_ALPHABET];
    for (int a = 0; a < 2 * s + 1; ++a) entry[a] = hc_huffman_entry(codes[a], lengths[a]);
    const unsigned int extra = raw ? HC_RAW_BITS : 0;
    for (long long c = 0; c < m; ++c) {
        long long start = c << clog2, end = start + (1ll << clog2) < n ? start + (1ll << clog2) : n;
        uint64_t pos = 8 * byte, first = pos, bits = 0;
        for (long long i = start; i < end; i += 4) {
            uint32_t four = 0;  // states i .. i + 3 as the device reads them
            for (int j = 0; j < 4 && i + j < n; ++j)
                four |= (uint32_t)(uint8_t)states[i + j] << (8 * j);
            const int k = end - i < 4 ? (int)(end - i) : 4;
            bits += hc_huffman_bits4(four, k, lengths, s, extra);
            if (wide && !raw) {
                int len = 0;
                const uint64_t field = hc_huffman_field4(four, k, entry, s, &len);
                hc_place_wide(pos, field, len, or_word);
                pos += len;
                continue;
            }
            for (long long e = i; e < i + k; ++e) {
                int sym = states[e] + s;
                if (lengths[sym]) hc_place(pos, codes[sym], lengths[sym], or_word);
                pos += lengths[sym];
                if (raw && states[e]) {
                    hc_place(pos, hc_raw_field(raw[e]), HC_RAW_BITS, or_word);
                    pos += HC_RAW_BITS;
                }
            }
        }
        chunk_bits[c] = bits == pos - first ? bits : ~0ull;  // the two counts disagree: ~0
        byte += (pos - first + 7) / 8;
    }
    return words.store(byte, out);
}

// Decode that layout as the GPU's decode kernel does: a decoder record from the code lengths
// (hc_decoder_header / hc_decoder_primary), each chunk `tile` elements at a time, resuming
// from the bit count the previous tile left; returns an HC_ERR_* code.
int hc_check_huffman_decode(const unsigned char* buf, unsigned long long nbytes,
                            const unsigned long long* chunk_bits, long long n, int s, int clog2,
                            const unsigned char* lengths, int single, int tile,
                            signed char* states) {
    static int32_t dec[HC_DEC_INTS];
    int pb = hc_decoder_header(lengths, 2 * s + 1, single, dec);
    hc_decoder_primary(dec, pb, 0, 1);
    long long m = (n + (1ll << clog2) - 1) >> clog2;
    unsigned long long byte = 0;
    for (long long c = 0; c < m; ++c) {
        long long start = c << clog2, end = start + (1ll << clog2) < n ? start + (1ll << clog2) : n;
        uint64_t used = 0;
        for (long long at = start; at < end; at += tile) {
            long long run = end - at < tile ? end - at : tile;
            auto put = [states, at, s](long long j, int sym) { states[at + j] = (signed char)(sym - s); };
            int e = hc_huffman_decode_run(buf, nbytes, byte, chunk_bits[c], &used, run, dec, put);
            if (e) return e;
        }
        if (used != chunk_bits[c]) return HC_ERR_UNDERRUN;
        byte += (chunk_bits[c] + 7) / 8;
    }
    return 0;
}

// huffman.cu hc_huffman_decode_raw's threads 0 .. threads - 1, one after another.
void hc_check_huffman_decode_raw(long long threads, const unsigned char* buf,
                                 unsigned long long nbytes,
                                 const unsigned long long* chunk_byte,
                                 const unsigned long long* chunk_bits, const int* clog2,
                                 const long long* chunk_first, const long long* sizes,
                                 int count, int s, const unsigned char* coders, const int* dec,
                                 const long long* state_at, signed char* out,
                                 unsigned int* raw, int* err) {
    for (long long c = 0; c < threads; ++c)
        hc_huffman_decode_raw_thread(c, buf, nbytes, chunk_byte, chunk_bits, clog2,
                                     chunk_first, sizes, count, s, coders, dec, state_at, out,
                                     raw, err);
}

// states.cu hc_add_raw_states over every tensor (its blockIdx.y) and element.
void hc_check_add_raw_states(long long threads, const signed char* states,
                             const unsigned int* raw, const long long* sizes,
                             const long long* state_at, const float* scales, const int* dtypes,
                             double* acc, int count) {
    (void)threads;
    for (int t = 0; t < count; ++t)
        for (long long i = 0; i < sizes[t]; ++i)
            hc_add_raw_state_at(states, raw, state_at[t], i, scales[t], dtypes[t], acc);
}

// codebook.cu hc_huffman_decoders on the host: the blocks of the grid one after another.
void hc_check_huffman_decoders(int count, const unsigned char* lengths, const int* single,
                               int alphabet, int fmt, const unsigned char* coders,
                               const float* scales, const int* dtypes, int* dec,
                               double* values) {
    const int s = alphabet / 2;
    for (int t = 0; t < count; ++t) {
        for (int k = 0; k < alphabet; ++k)
            values[(long long)t * alphabet + k] = hc_state_value(k - s, (double)scales[t], s, dtypes[t], fmt);
        if (coders[t] != HC_CODER_HUFFMAN) continue;
        int* d = dec + (long long)t * HC_DEC_INTS;
        int pb = hc_decoder_header(lengths + (long long)t * alphabet, alphabet, single[t], d);
        hc_decoder_primary(d, pb, 0, 1);
    }
}

// huffman.cu hc_huffman_decode_sum on the host, for a grid of `threads` threads: each warp's
// 32 lanes one after another per tile (hc_decode_sum_tile), then the warp's transposed store.
void hc_check_decode_sum(long long threads, const HcPayload* pays, int npay, const int* clog2,
                         const long long* chunk_first, const long long* sizes, int count, int s,
                         const unsigned char* here, const int* dec, const double* values,
                         const long long* acc_offsets, double* acc, int accumulate,
                         unsigned long long* resume, int* err) {
    const long long total = chunk_first[count];
    static double tile[32][HC_DS_TILE + 1];
    for (long long w = 0; w < threads; w += 32) {
        int n[32], t[32], longest = 0;
        long long out0[32];
        uint64_t used0[32] = {0};
        for (int lane = 0; lane < 32; ++lane) {
            long long c = w + lane;
            HcChunk k = {0, 0, 0};
            if (c < total) k = hc_chunk(c, (const long long*)chunk_first, count, clog2,
                                        (const long long*)sizes);
            bool mine = c < total && here[k.t];
            t[lane] = k.t;
            n[lane] = mine ? (int)(k.end - k.start) : 0;
            out0[lane] = mine ? acc_offsets[k.t] + k.start : 0;
            longest = n[lane] > longest ? n[lane] : longest;
        }
        for (int at = 0; at < longest; at += HC_DS_TILE) {
            for (int lane = 0; lane < 32; ++lane) {
                long long c = w + lane;
                hc_decode_sum_tile(pays, npay, c, total, t[lane], chunk_first[t[lane]], count, s,
                                   dec, values, at, n[lane], used0 + lane, (uint64_t*)resume,
                                   err, tile[lane]);
            }
            for (int j = 0; j < 32; ++j)
                for (int lane = 0; lane < 32; ++lane)
                    if (at + lane < n[j]) {
                        double* a = acc + out0[j] + at + lane;
                        *a = accumulate ? *a + tile[j][lane] : tile[j][lane];
                    }
        }
    }
}

// huffman.cu hc_huffman_decode_symbols and hc_sum_symbols on the host: `threads` threads of
// the first one after another, then every element of the second's tensors.
void hc_check_decode_symbols(long long threads, const HcPayload* pays, int npay,
                             const int* clog2, const long long* chunk_first,
                             const long long* sizes, int count, const unsigned char* here,
                             const int* dec, const long long* sym_offsets, long long stride,
                             unsigned char* symbols, int* err) {
    for (long long g = 0; g < threads; ++g)
        hc_decode_symbols_chunk(pays, npay, g, clog2, chunk_first, sizes, count, here, dec,
                                sym_offsets, stride, symbols, err);
}

void hc_check_sum_symbols(long long threads, const unsigned char* symbols, int npay,
                          long long stride, const long long* sizes,
                          const long long* acc_offsets, const long long* sym_offsets,
                          const unsigned char* here, int count, const double* values, int s,
                          double* acc) {
    (void)threads;
    for (int t = 0; t < count; ++t)
        if (here[t])
            for (long long i = 0; i < sizes[t]; ++i)
                acc[acc_offsets[t] + i] = hc_sum_symbols_at(symbols, npay, stride,
                                                            sym_offsets[t] + i, t, count,
                                                            values, 2 * s + 1);
}

// ZRH's chunks (host_run_items_encode with hc_zrh_item, hc_zrh_item_pieces). zpar: mode,
// context mode, 4 Rice k; rtab/ltab as zrh.cu reads them.
long long hc_check_zrh_encode(const signed char* states, long long n, int s, int clog2,
                              const int* zpar, const unsigned int* rtab,
                              const unsigned int* ltab, const unsigned int* raw,
                              unsigned long long* chunk_bits, unsigned char* out) {
    HcZrhCode z = {zpar[0], zpar[1], s, zpar + 2, rtab, ltab};
    return host_run_items_encode(
        states, n, clog2, raw, chunk_bits, out,
        [&](int64_t r, int v, int pv, uint64_t* code) { return hc_zrh_item(z, r, v, pv, code); },
        [&](int64_t r, int v, int pv, auto emit) { hc_zrh_item_pieces(z, r, v, pv, emit); });
}

// codebook.cu hc_build_shs_codes for one tensor: SHS's code from SH's sampled counts
// (2s + 1): lengths and the writers' entries code << 5 | length (2s + HC_SHS_MAX_RUN each).
void hc_check_shs_code(const unsigned long long* counts, int s, unsigned char* lengths,
                       unsigned int* tab) {
    static HcShsWork work;
    hc_shs_code(counts, s, lengths, work);
    for (int k = 0; k < 2 * s + HC_SHS_MAX_RUN; ++k)
        tab[k] = (unsigned int)work.codes[k] << 5 | lengths[k];
}

// SHS's chunks (host_run_items_encode with hc_shs_item, hc_shs_item_pieces); tab: the code
// as shs.cu reads it.
long long hc_check_shs_encode(const signed char* states, long long n, int s, int clog2,
                              const unsigned int* tab, const unsigned int* raw,
                              unsigned long long* chunk_bits, unsigned char* out) {
    HcShsCode z = {s, tab};
    return host_run_items_encode(
        states, n, clog2, raw, chunk_bits, out,
        [&](int64_t r, int v, int pv, uint64_t* code) { return hc_shs_item(z, r, v, pv, code); },
        [&](int64_t r, int v, int pv, auto emit) { hc_shs_item_pieces(z, r, v, pv, emit); });
}

// shs.cu hc_shs_decoders on the host: the blocks of the grid one after another.
void hc_check_shs_decoders(long long threads, const unsigned char* lengths, const int* single,
                           int s, const unsigned char* coders, int* dec, int count) {
    (void)threads;
    const int a = 2 * s + HC_SHS_MAX_RUN;
    for (int t = 0; t < count; ++t) {
        if (coders[t] != HC_CODER_SHS) continue;
        int* d = dec + (long long)t * HC_DEC_INTS;
        hc_decoder_primary(d, hc_decoder_header(lengths + (long long)t * a, a, single[t], d), 0, 1);
    }
}

// shs.cu hc_shs_decode's threads 0 .. threads - 1, one after another.
void hc_check_shs_decode_launch(long long threads, const unsigned char* buf,
                                unsigned long long nbytes, const unsigned long long* chunk_byte,
                                const unsigned long long* chunk_bits, const int* clog2,
                                const long long* chunk_first, const long long* sizes,
                                int count, int s, const unsigned char* coders, const int* dec,
                                const long long* state_at, signed char* out,
                                unsigned int* raw, int* err) {
    for (long long c = 0; c < threads; ++c)
        hc_shs_decode_thread(c, buf, nbytes, chunk_byte, chunk_bits, clog2, chunk_first, sizes,
                             count, s, coders, dec, state_at, out, raw, err);
}

// cuda/rlh.cu hc_rlh_decode's threads 0 .. threads - 1, one after another.
void hc_check_rlh_decode_launch(long long threads, const unsigned char* buf,
                                unsigned long long nbytes, const unsigned long long* chunk_byte,
                                const unsigned long long* chunk_bits, const int* clog2,
                                const long long* chunk_first, const long long* sizes,
                                int count, int s, const unsigned char* coders, const int* dec,
                                const long long* pair_at, const long long* pairs,
                                const long long* state_at, signed char* out,
                                unsigned int* raw, int* err) {
    for (long long c = 0; c < threads; ++c)
        hc_rlh_decode_thread(c, buf, nbytes, chunk_byte, chunk_bits, clog2, chunk_first, sizes,
                             count, s, coders, dec, pair_at, pairs, state_at, out, raw, err);
}

// Decode ZRH chunks with hc_zrh_decode_chunk; tables: HC_ZRH_ROWS decode tables of
// 1 << HC_MAX_CODE_LEN entries (runs, then levels), bits: their widths. Returns the first
// chunk's HC_ERR_* code, 0 if none.
int hc_check_zrh_decode(const unsigned char* buf, unsigned long long nbytes,
                        const unsigned long long* chunk_bits, long long n, int s, int clog2,
                        const int* zpar, const int* tables, const int* bits,
                        signed char* states, unsigned int* raw) {
    HcTable rows[HC_ZRH_ROWS];
    for (int r = 0; r < HC_ZRH_ROWS; ++r)
        rows[r].table = tables + ((long long)r << HC_MAX_CODE_LEN), rows[r].bits = bits[r];
    long long m = (n + (1ll << clog2) - 1) >> clog2;
    unsigned long long byte = 0;
    auto put = [states](long long i, int v) { states[i] = (signed char)v; };
    for (long long c = 0; c < m; ++c) {
        long long start = c << clog2, end = start + (1ll << clog2) < n ? start + (1ll << clog2) : n;
        int e;
        if (raw) {  // exact top-k, as zrh.cu hc_zrh_decode decodes it
            HcRawSink sink = {states, raw, false};
            e = sink.verdict(hc_zrh_decode_chunk<true>(buf, nbytes, byte, chunk_bits[c], start,
                                                       end, s, zpar[0], zpar[1], zpar + 2, rows,
                                                       rows + HC_ZRH_NCTX, sink.put()));
        } else {
            e = hc_zrh_decode_chunk(buf, nbytes, byte, chunk_bits[c], start, end, s, zpar[0],
                                    zpar[1], zpar + 2, rows, rows + HC_ZRH_NCTX, put);
        }
        if (e) return e;
        byte += (chunk_bits[c] + 7) / 8;
    }
    return 0;
}

// Elias chunks of n states (states zero padded to a multiple of 8) as the device writes
// them: each block of HC_LIST_BLOCK states marked 8 states at a time by hc_marks (a warp's
// lanes in turn, as states.cu hc_list), the marks listed, then each chunk's entries
// (hc_chunk_entries) placed item by item (hc_elias_item). Returns the data bytes.
long long hc_check_elias_encode(const signed char* states, long long n, int clog2, int kind,
                                int gap, const unsigned int* raw,
                                unsigned long long* chunk_bits, unsigned char* out) {
    const long long blocks = (n + HC_LIST_BLOCK - 1) / HC_LIST_BLOCK;
    const long long block_first[2] = {0, blocks};
    std::vector<long long> at(blocks + 1, 0);
    std::vector<unsigned int> pos;
    std::vector<signed char> val;
    for (long long b = 0; b < blocks; ++b) {
        for (int lane = 0; lane < 32; ++lane) {
            const long long e = b * HC_LIST_BLOCK + 8 * lane;
            uint32_t lo = 0, hi = 0;
            if (e < n) memcpy(&lo, states + e, 4), memcpy(&hi, states + e + 4, 4);
            const int next = e + 8 < n ? states[e + 8] : 0;
            const long long chunk_start = (e >> clog2) << clog2;
            for (unsigned int m = hc_marks(lo, hi, next, e, n, clog2,
                                           gap ? HC_LIST_NONZERO : HC_LIST_RUN_END);
                 m; m &= m - 1) {
                const int bit = __builtin_ctz(m);
                pos.push_back((unsigned int)(e + bit - chunk_start));
                val.push_back(states[e + bit]);
            }
        }
        at[b + 1] = (long long)pos.size();
    }
    const long long m = (n + (1ll << clog2) - 1) >> clog2;
    unsigned long long byte = 0;
    HostWords words;
    auto or_word = [&words](uint64_t w, uint32_t v) { words.put(w, v); };
    for (long long c = 0; c < m; ++c) {
        const long long start = c << clog2;
        const long long end = start + (1ll << clog2) < n ? start + (1ll << clog2) : n;
        long long a, b;
        hc_chunk_entries(0, start, end, block_first, at.data(), &a, &b);
        uint64_t p = 8 * byte;
        const uint64_t first = p;
        for (long long j = a; j < b; ++j) {
            const long long d = (long long)pos[j] - (j > a ? (long long)pos[j - 1] : -1ll);
            const uint64_t len = hc_elias_item_len(kind, gap, d, val[j])
                                 + (raw ? hc_elias_raw_len(gap, d, val[j]) : 0);
            uint64_t rel = p;
            hc_elias_item(kind, gap, d, val[j], [&](uint32_t bits, int k) {
                if (bits) hc_place(rel, bits, k, or_word);
                rel += k;
            });
            if (raw && val[j])  // as hc_elias_write_raw: the magnitudes of the states coded
                for (long long e = gap ? pos[j] : pos[j] - d + 1; e <= (long long)pos[j]; ++e) {
                    hc_place(rel, hc_raw_field(raw[start + e]), HC_RAW_BITS, or_word);
                    rel += HC_RAW_BITS;
                }
            if (rel != p + len) return -1;  // the lengths the chunk table counts
            p = rel;
        }
        chunk_bits[c] = p - first;
        byte += (p - first + 7) / 8;
    }
    return words.store(byte, out);
}

// Decode Elias chunks of either layout with hc_elias_decode_chunk into states (zeroed), and
// with raw (exact top-k; null for none) the magnitudes into raw, as hc_elias_decode does.
// Returns the first failing chunk's HC_ERR_* code, 0 if none.
int hc_check_elias_decode(const unsigned char* buf, unsigned long long nbytes,
                          const unsigned long long* chunk_bits, long long n, int clog2, int s,
                          int kind, int gap, signed char* states, unsigned int* raw) {
    const long long m = (n + (1ll << clog2) - 1) >> clog2;
    unsigned long long byte = 0;
    auto put = [states](long long i, int v) { states[i] = (signed char)v; };
    for (long long c = 0; c < m; ++c) {
        const long long start = c << clog2;
        const long long end = start + (1ll << clog2) < n ? start + (1ll << clog2) : n;
        int e;
        if (raw) {
            HcRawSink sink = {states, raw, false};
            e = sink.verdict(hc_elias_decode_chunk<true>(buf, nbytes, byte, chunk_bits[c], start,
                                                         end, s, kind, gap, sink.put()));
        } else {
            e = hc_elias_decode_chunk(buf, nbytes, byte, chunk_bits[c], start, end, s, kind, gap,
                                      put);
        }
        if (e) return e;
        byte += (chunk_bits[c] + 7) / 8;
    }
    return 0;
}

// cuda/elias.cu hc_elias_decode's threads 0 .. threads - 1, one after another.
void hc_check_elias_decode_launch(long long threads, const unsigned char* buf,
                                  unsigned long long nbytes,
                                  const unsigned long long* chunk_byte,
                                  const unsigned long long* chunk_bits, const int* clog2,
                                  const long long* chunk_first, const long long* sizes,
                                  int count, int s, const unsigned char* coders,
                                  const unsigned char* gaps, const long long* state_at,
                                  signed char* out, unsigned int* raw, int* err) {
    for (long long c = 0; c < threads; ++c)
        hc_elias_decode_thread(c, buf, nbytes, chunk_byte, chunk_bits, clog2, chunk_first,
                               sizes, count, s, coders, gaps, state_at, out, raw, err);
}

// cuda/states.cu hc_add_states over every tensor (its blockIdx.y) and element.
void hc_check_add_states(long long threads, const signed char* states, const long long* sizes,
                         const long long* state_at, const unsigned char* add,
                         const double* values, int s, double* acc, int count) {
    (void)threads;
    for (int t = 0; t < count; ++t) {
        if (!add[t]) continue;
        for (long long i = 0; i < sizes[t]; ++i)
            hc_add_state_at(states, state_at[t], i, values + (long long)t * (2 * s + 1) + s,
                            acc);
    }
}

// states.cu hc_add_buckets on the host: the tensors of the grid's y dimension in turn.
void hc_check_add_buckets(long long threads, const signed char* states,
                          const unsigned char* symbols, const long long* sizes,
                          const long long* state_at, const long long* sym_offsets,
                          const unsigned char* which, const long long* scale_first,
                          const float* scales, int blog2, int s, const int* dtypes, double* acc,
                          int count) {
    (void)threads;
    for (int t = 0; t < count; ++t) {
        if (!which[t]) continue;
        for (long long i = 0; i < sizes[t]; ++i)
            hc_add_bucket_state_at(states, symbols, t, i, state_at, sym_offsets, which,
                                   scales + scale_first[t], blog2, s, dtypes[t], acc);
    }
}
}
