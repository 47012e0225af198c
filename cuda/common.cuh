// Shared helpers of the GPU backend's kernels (issue #3): the counter-based generator, the
// stochastic rounding of one element, codebook construction and the bit layout of the payload
// (docs/format.md). Everything here is HC_HD: compiled for the device by the kernels in
// cuda/*.cu and for the host by cuda/host_check.cu, whose results tests/test_cuda_sources.py
// compares with the CPU backend byte for byte, so the per-element logic is checked on
// machines without a GPU.
#pragma once
#ifdef __CUDACC_RTC__  // NVRTC (CuPy's RawModule) has no C library headers; math is built in
#define INFINITY __int_as_float(0x7f800000)
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#else
#include <math.h>
#include <stdint.h>
#endif

#ifdef __CUDACC__
#define HC_HD __host__ __device__ inline
#else
#define HC_HD inline
#endif

#define HC_MAX_CODE_LEN 15
#define HC_ESCAPE_ENTRY (-2)  // a primary decode table's entry: a codeword longer than it
#define HC_MAX_LEVELS 127
#define HC_MAX_ALPHABET (2 * HC_MAX_LEVELS + 1)
// SHS (coders/shs.py): one code over the 2s non-zero levels and zero runs 1..HC_SHS_MAX_RUN
#define HC_SHS_MAX_RUN 200
#define HC_SHS_MAX_ALPHABET (2 * HC_MAX_LEVELS + HC_SHS_MAX_RUN)
#define HC_GOLDEN 0x9E3779B97F4A7C15ull
#define HC_INV24 (1.0 / 16777216.0)
// coders/chunks.py: default chunk size
#define HC_CHUNK_LOG2_AUTO_MIN 12
#define HC_CHUNK_LOG2_AUTO_MAX 24
#define HC_NZ_PER_CHUNK 512

// ----------------------------------------------------------------- rng.py
HC_HD uint64_t hc_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

HC_HD uint64_t hc_stream_key(uint64_t seed, uint64_t stream) {
    return hc_mix64(seed * HC_GOLDEN + stream);
}

HC_HD uint64_t hc_draw24(uint64_t key, uint64_t i) { return hc_mix64(key + i * HC_GOLDEN) >> 40; }

// SH's sample (coders/symbol.py): SAMPLE_SIZE positions of the stream rng.STREAM_SAMPLE of the
// seed; sample j's position in a tensor of n > 0 states: 48 random bits (two draws) mod n.
#define HC_SAMPLE_SIZE 1000
#define HC_STREAM_SAMPLE 0xFFFFFFFFull
HC_HD uint64_t hc_sample_position(uint64_t key, int j, uint64_t n) {
    return ((hc_draw24(key, 2 * (uint64_t)j) << 24) | hc_draw24(key, 2 * (uint64_t)j + 1)) % n;
}

// ----------------------------------------------------------------- float16, without cuda_fp16.h
// (NVRTC builds need no CUDA headers): exact widening, and the correctly rounded (nearest,
// ties to even) float16 value of a double, as NumPy's astype(float16).
HC_HD float hc_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, mant = h & 0x3FFu;
    int exp = (h >> 10) & 0x1F;
    uint32_t f;
    if (exp == 31) {
        f = sign | 0x7F800000u | (mant << 13);
    } else if (exp == 0 && mant == 0) {
        f = sign;
    } else {
        if (exp == 0) {  // subnormal: mant * 2^-24, normalised
            exp = 1;
            while (!(mant & 0x400u)) mant <<= 1, --exp;
            mant &= 0x3FFu;
        }
        f = sign | ((uint32_t)(exp + 112) << 23) | (mant << 13);
    }
    union { uint32_t u; float v; } c;
    c.u = f;
    return c.v;
}

HC_HD double hc_round_to_half(double v) {
    if (v != v || v == 0.0) return v;
    double a = fabs(v);
    if (a >= 65520.0) return v < 0 ? -INFINITY : INFINITY;  // past the last tie: overflow
    int e;
    frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
    int q = e - 1 < -14 ? -24 : e - 1 - 10;  // quantum: 10 fraction bits, subnormals 2^-24
    return ldexp(rint(ldexp(v, -q)), q);
}

// ----------------------------------------------------------------- quantizers.py
// Stochastic level of one element: a = |v| s / scale in float64, round up when u < a - floor(a).
// (Build with --fmad=false: no fused multiply-add may change a rounding.)
// hc_round_level takes a = |v| s / scale already divided (negative: v < 0).
HC_HD int hc_round_level(double a, bool negative, int s, uint64_t key, uint64_t i) {
    double lev = floor(a);
    if ((double)hc_draw24(key, i) * HC_INV24 < a - lev) lev += 1.0;
    int l = lev > (double)s ? s : (int)lev;
    return negative ? -l : l;
}

HC_HD int hc_round_state(double v, int s, double scale, uint64_t key, uint64_t i) {
    return hc_round_level(fabs(v) * (double)s / scale, v < 0, s, key, i);
}

// One element's term of the L2 scale: floor((|x| / m)^2 * 2^40), summed as two integers.
// hc_sumsq_of takes y = |x| / m already divided.
HC_HD uint64_t hc_sumsq_of(double y) { return (uint64_t)floor(y * y * 1099511627776.0); }

HC_HD uint64_t hc_sumsq_term(double x, double m) { return hc_sumsq_of(fabs(x) / m); }

// The GenNorm fit's first-moment term (gennorm.abs_moments_fixed): floor(y 2^40), y = |x| / m.
HC_HD uint64_t hc_abs_term(double y) { return (uint64_t)floor(y * 1099511627776.0); }

HC_HD double hc_sumsq_value(uint64_t hi, uint64_t lo) {
    return (double)hi * (1.0 / 1048576.0) + (double)lo * (1.0 / 1099511627776.0);
}

// The float32 scale: the float64 value rounded up (the smallest float32 >= v).
HC_HD float hc_round_up_f32(double v) {
#ifdef __CUDA_ARCH__
    return __double2float_ru(v);
#else
    float f = (float)v;
    if ((double)f < v) f = nextafterf(f, INFINITY);
    return f;
#endif
}

// ----------------------------------------------------------------- float_quantizer.py
// CO3's low-bit float formats, numbered as gpu_backend.FP_IDS numbers payload.FP_FORMATS
// (HC_FP_LINEAR: qsgd and terngrad). A format's largest code is the payload's levels s.
#define HC_FP_LINEAR 0
#define HC_FP_FP4 1
#define HC_FP_FP8 2
#define HC_FP_FP8_E5M2 3
#define HC_F32_MAX 3.4028234663852886e38

// value(k) of magnitude code k: k 2^(1 - bias - m) below 2^m (subnormals), else
// (2^m + k mod 2^m) 2^((k >> m) - bias - m). Exact.
HC_HD double hc_fp_value(int k, int mbits, int bias) {
    const int top = 1 << mbits;
    if (k < top) return ldexp((double)k, 1 - bias - mbits);
    return ldexp((double)(top + (k & (top - 1))), (k >> mbits) - bias - mbits);
}

// A format and what its rounding compares with: kmax its largest code (the payload's levels),
// vmax = value(kmax), the smallest normal value, the subnormals' unit 2^(bias + m - 1).
struct HcFp {
    int mbits, bias, kmax;
    double vmax, normal_min, sub_unit;
};

HC_HD HcFp hc_fp_format(int fmt, int kmax) {
    const int mbits = fmt == HC_FP_FP4 ? 1 : fmt == HC_FP_FP8 ? 3 : 2;
    const int bias = fmt == HC_FP_FP4 ? 1 : fmt == HC_FP_FP8 ? 10 : 15;
    return {mbits, bias, kmax, hc_fp_value(kmax, mbits, bias), ldexp(1.0, 1 - bias),
            ldexp(1.0, bias + mbits - 1)};
}

HC_HD uint64_t hc_double_bits(double v) {
#ifdef __CUDA_ARCH__
    return (uint64_t)__double_as_longlong(v);
#else
    union { double d; uint64_t u; } c;
    c.d = v;
    return c.u;
#endif
}

HC_HD uint32_t hc_float_bits(float v) {
    union { float f; uint32_t u; } c;
    c.f = v;
    return c.u;
}

HC_HD float hc_float_of_bits(uint32_t u) {
    union { float f; uint32_t u; } c;
    c.u = u;
    return c.f;
}

// The code nearest y >= 0 (ties to the even code), kmax from vmax on, as
// float_quantizer._round_to_format: a normal value's code is its float64 bits above the top m
// mantissa bits, rounded half to even on the rest, less the two biases' difference << m (a
// carry out of the mantissa steps the exponent); a subnormal's is y 2^(bias + m - 1) rounded
// half to even (an exact product: rint rounds it as the CPU's add-and-subtract of 2^52).
HC_HD int hc_fp_code(double y, const HcFp& f) {
    if (y >= f.vmax) return f.kmax;
    if (y < f.normal_min) return (int)rint(y * f.sub_unit);
    const int shift = 52 - f.mbits;
    const uint64_t b = hc_double_bits(y), half = 1ull << (shift - 1);
    uint64_t r = b >> shift;
    const uint64_t rem = b & ((1ull << shift) - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return (int)(r - ((uint64_t)(1023 - f.bias) << f.mbits));
}

// The float32 scale of a format's tensor with max |x| = m > 0 under the max norm (m maps to
// vmax): min(m / vmax, float32's largest) rounded up.
HC_HD float hc_fp_max_scale(double m, const HcFp& f) {
    const double v = m / f.vmax;
    return hc_round_up_f32(v < HC_F32_MAX ? v : HC_F32_MAX);
}

// ----------------------------------------------------------------- top-k (quantizers.py)
// The k entries of largest |x| (ties: lower index first; exact zeros never), found by radix
// select on keys: the bits of |x| in the tensor's float type (float32 for float16 and float32
// tensors, as the CPU compares them; float64), which order as the values do. MSB-first
// passes of 8 bits: a digit histogram of the keys matching the digits chosen so far
// (`prefix`), then hc_topk_digit.
HC_HD uint64_t hc_topk_key(double v, bool f64) {
    if (f64) return hc_double_bits(fabs(v));
    return hc_float_bits((float)fabs(v));
}

// Exact top-k (levels 0): a kept entry's state (its sign) and raw magnitude (|x| rounded to
// float32, its bits: quantizers.quantize's float32 view of |x|).
HC_HD int hc_topk_sign(double v) { return v < 0 ? -1 : 1; }
HC_HD uint32_t hc_raw_bits(double v) { return hc_float_bits((float)fabs(v)); }

// Whether a key agrees with `prefix` on the digits above bit `shift` + 8.
HC_HD bool hc_topk_matches(uint64_t key, uint64_t prefix, int shift) {
    const uint64_t high = shift + 8 >= 64 ? 0 : ~0ull << (shift + 8);
    return (key & high) == prefix;
}

// The digit holding the krem-th largest of the matching keys (digit histogram `hist`: 256
// counts); krem becomes its rank among the keys with that digit. After the last pass
// `prefix` is the k-th largest key t and krem the ties (keys == t) to keep, lowest index first.
HC_HD int hc_topk_digit(const unsigned long long* hist, long long& krem) {
    long long above = 0;
    for (int d = 255; d > 0; --d) {
        if (above + (long long)hist[d] >= krem) {
            krem -= above;
            return d;
        }
        above += (long long)hist[d];
    }
    krem -= above;
    return 0;
}

// Whether an entry of key `key` is kept, given the k-th largest key t and its tie rank among
// the entries equal to t (by index): above t, or one of the first `need` ties of a t > 0.
HC_HD bool hc_topk_keep(uint64_t key, uint64_t t, long long rank, long long need) {
    return key > t || (key == t && t != 0 && rank < need);
}

// ----------------------------------------------------------------- codebook.py
// Length-limited Huffman code lengths from counts, as codebook.huffman_lengths: symbols with
// a count sorted by (count, symbol), two-queue Huffman (a leaf wins ties), JPEG Annex K.3
// limiting of the per-length counts, lengths handed back by (count desc, symbol asc).
// One thread builds one code of n symbols in work arrays of n (syms, w, iw) and 2n (parent,
// depth) entries, HcHuffmanArrays<N> for n <= N: in shared memory on the device (codebook.cu;
// in a thread's local memory they would reserve their size for every thread the device can
// hold, gigabytes).
struct HcHuffmanWork {
    int* syms;
    int64_t* w;
    int64_t* iw;
    int* parent;
    int* depth;
};

template <int N>
struct HcHuffmanArrays {
    int64_t w[N], iw[N];
    int syms[N], parent[2 * N], depth[2 * N];
    HC_HD HcHuffmanWork work() { return {syms, w, iw, parent, depth}; }
};

HC_HD void hc_huffman_lengths_in(const int64_t* counts, int n, int max_len, uint8_t* lengths,
                                 HcHuffmanWork work) {
    int* syms = work.syms;
    int64_t *w = work.w, *iw = work.iw;
    int *parent = work.parent, *depth = work.depth;
    int used = 0;
    for (int i = 0; i < n; ++i) {
        lengths[i] = 0;
        if (counts[i] > 0) {  // insertion sort by count; equal counts keep symbol order
            int k = used++;
            while (k > 0 && counts[syms[k - 1]] > counts[i]) {
                syms[k] = syms[k - 1];
                --k;
            }
            syms[k] = i;
        }
    }
    if (used <= 1) return;
    for (int i = 0; i < used; ++i) w[i] = counts[syms[i]];
    int li = 0, ii = 0;
    for (int node = 0; node < used - 1; ++node) {
        int pick[2];
        for (int t = 0; t < 2; ++t) {
            if (li < used && (ii >= node || w[li] <= iw[ii])) pick[t] = li++;
            else pick[t] = used + ii++;
        }
        int64_t wa = pick[0] < used ? w[pick[0]] : iw[pick[0] - used];
        int64_t wb = pick[1] < used ? w[pick[1]] : iw[pick[1] - used];
        iw[node] = wa + wb;
        parent[pick[0]] = used + node;
        parent[pick[1]] = used + node;
    }
    depth[2 * used - 2] = 0;
    for (int node = 2 * used - 3; node >= 0; --node) depth[node] = depth[parent[node]] + 1;
    int maxd = 0;
    for (int i = 0; i < used; ++i) maxd = depth[i] > maxd ? depth[i] : maxd;
    if (maxd <= max_len) {
        for (int i = 0; i < used; ++i) lengths[syms[i]] = (uint8_t)depth[i];
        return;
    }
    int64_t* bl = iw;  // the per-length counts, 0..maxd < used: the tree's weights are done
    for (int i = 0; i <= maxd; ++i) bl[i] = 0;
    for (int i = 0; i < used; ++i) bl[depth[i]] += 1;
    for (int i = maxd; i > max_len; --i) {
        while (bl[i] > 0) {
            int j = i - 2;
            while (j > 1 && bl[j] == 0) --j;
            bl[i] -= 2;
            bl[i - 1] += 1;
            bl[j + 1] += 2;
            bl[j] -= 1;
        }
    }
    int pos = used - 1;
    for (int ln = 1; ln <= max_len; ++ln)
        for (int64_t k = 0; k < bl[ln]; ++k) lengths[syms[pos--]] = (uint8_t)ln;
}


// DEFLATE-style canonical codes (right-aligned), as codebook.canonical_codes.
HC_HD void hc_canonical_codes(const uint8_t* lengths, int n, uint16_t* codes) {
    int bl[HC_MAX_CODE_LEN + 1] = {0};
    for (int i = 0; i < n; ++i) bl[lengths[i]] += 1;
    bl[0] = 0;
    uint32_t next[HC_MAX_CODE_LEN + 2] = {0};
    uint32_t code = 0;
    for (int ln = 1; ln <= HC_MAX_CODE_LEN; ++ln) {
        code = (code + bl[ln - 1]) << 1;
        next[ln] = code;
    }
    for (int i = 0; i < n; ++i) codes[i] = lengths[i] ? (uint16_t)next[lengths[i]]++ : 0;
}

// The huffman code of one tensor's state counts (codebook.cu hc_build_codes): lengths and
// canonical codes (alphabet <= HC_MAX_ALPHABET each), `single` (the only used symbol of a
// one-symbol code, else -1); returns the bits of its states, sum of count * length.
struct HcCodeWork {
    int64_t counts[HC_MAX_ALPHABET];
    HcHuffmanArrays<HC_MAX_ALPHABET> huff;
};

HC_HD unsigned long long hc_states_code(const unsigned long long* counts, int alphabet,
                                        uint8_t* lengths, uint16_t* codes, int* single,
                                        HcCodeWork& work) {
    int used = 0, last = -1;
    for (int k = 0; k < alphabet; ++k) {
        work.counts[k] = (int64_t)counts[k];
        if (counts[k]) ++used, last = k;
    }
    hc_huffman_lengths_in(work.counts, alphabet, HC_MAX_CODE_LEN, lengths, work.huff.work());
    hc_canonical_codes(lengths, alphabet, codes);
    *single = used == 1 ? last : -1;
    unsigned long long bits = 0;
    for (int k = 0; k < alphabet; ++k) bits += counts[k] * lengths[k];
    return bits;
}

// ----------------------------------------------------------------- bits.py
// The stream as 32-bit words, MSB first: bit 31 of word 0 is the stream's first bit. Place
// codeword `code` (its low `len` bits, 1 <= len <= 32) at stream bit `rel`: or_word(word
// index, bits) ORs into at most two words (a plain OR on the host, a shared-memory atomicOr
// in the device's warp buffer).
template <class OrWord>
HC_HD void hc_place(uint64_t rel, uint32_t code, int len, OrWord or_word) {
    uint64_t v = (uint64_t)code << (64 - len - (int)(rel & 31));
    or_word(rel >> 5, (uint32_t)(v >> 32));
    if ((uint32_t)v) or_word((rel >> 5) + 1, (uint32_t)v);
}

// Such a word as it lies in memory: its bytes in stream order, read as a little-endian word.
HC_HD uint32_t hc_word_bytes(uint32_t w) {
    return (w >> 24) | ((w >> 8) & 0xFF00u) | ((w << 8) & 0xFF0000u) | (w << 24);
}

// Place a field of len <= 60 bits (four codewords of at most HC_MAX_CODE_LEN) at stream bit
// `rel`: its low `len` bits, MSB first, OR'd into the (at most three) words they cross;
// nothing for len = 0.
template <class OrWord>
HC_HD void hc_place_wide(uint64_t rel, uint64_t field, int len, OrWord or_word) {
    if (!len) return;
    const int r = (int)(rel & 31);
    const uint64_t v = field << (64 - len);  // the field's first bit at bit 63
    const uint64_t hi = v >> r;              // words rel >> 5 and the next
    or_word(rel >> 5, (uint32_t)(hi >> 32));
    if ((uint32_t)hi) or_word((rel >> 5) + 1, (uint32_t)hi);
    if (r + len > 64) or_word((rel >> 5) + 2, (uint32_t)((v << (64 - r)) >> 32));
}

// ----------------------------------------------------------------- the huffman writer
// hc_huffman_write4 reads the states four at a time (a little-endian word: state i + j in byte
// j) and looks codewords up in a per-warp table of entries codeword << 8 | length.
HC_HD uint32_t hc_huffman_entry(uint16_t code, uint8_t len) { return (uint32_t)code << 8 | len; }

// The first n (0..4) states of `four`: their codewords concatenated, MSB first, in the low
// *len (<= 4 x HC_MAX_CODE_LEN = 60) bits of the result.
HC_HD uint64_t hc_huffman_field4(uint32_t four, int n, const uint32_t* entry, int s, int* len) {
    uint64_t f = 0;
    int l = 0;
    for (int j = 0; j < 4; ++j) {
        if (j < n) {
            const uint32_t e = entry[(int)(signed char)(uint8_t)(four >> (8 * j)) + s];
            f = f << (e & 0xFFu) | (e >> 8);
            l += (int)(e & 0xFFu);
        }
    }
    *len = l;
    return f;
}

// Their bits in the chunk: codeword lengths, + `extra` for each non-zero state (exact
// top-k's raw magnitudes).
HC_HD unsigned int hc_huffman_bits4(uint32_t four, int n, const uint8_t* len, int s,
                                    unsigned int extra) {
    unsigned int b = 0;
    for (int j = 0; j < 4; ++j) {
        if (j < n) {
            const int v = (int)(signed char)(uint8_t)(four >> (8 * j));
            b += len[v + s] + (v ? extra : 0u);
        }
    }
    return b;
}

// Errors of a chunk decoder (bits.ERR_*): the chunk's bits end early / late / a bad codeword.
#define HC_OK 0
#define HC_ERR_OVERRUN 1
#define HC_ERR_UNDERRUN 2
#define HC_ERR_SYMBOL 3
#define HC_ERR_RAW 4  // a raw top-k magnitude that is Inf or NaN (cpu_backend.decode_states)

// Exact top-k (payload flag Q_RAW, levels 1): every non-zero state's codeword (or item) is
// followed by its magnitude's float32 bits without the sign, 31 bits MSB first.
#define HC_RAW_BITS 31
#define HC_RAW_LIMIT 0x7F800000u  // raw magnitudes at or above it are Inf or NaN
HC_HD uint32_t hc_raw_field(uint32_t raw) { return raw & 0x7FFFFFFFu; }  // chunks.put_raw

// A ZRH decode table row, in one level (the CPU's codebook.decode_table has two): entry =
// symbol << 5 | length for the next `bits` bits (bits = 0: table[0] is the one symbol, or
// -1 << 5 for an empty code).
struct HcTable {
    const int32_t* table;
    int bits;
};

// The stream reader of the chunk decoders: a 64-bit window with `have` unread bits at its
// top, refilled 4 bytes at a time (bytes past nbytes read as zero).
struct HcReader {
    const uint8_t* buf;
    uint64_t nbytes, next, win;
    int have;
    HC_HD void fill() {
        if (have < 32) {
            uint32_t w = 0;
            for (int k = 0; k < 4; ++k) w = (w << 8) | (next + k < nbytes ? buf[next + k] : 0u);
            win |= (uint64_t)w << (32 - have);
            next += 4;
            have += 32;
        }
    }
    HC_HD uint32_t top(int k) { return k ? (uint32_t)(win >> (64 - k)) : 0u; }  // k <= 32
    HC_HD void skip(int k) { win <<= k, have -= k; }  // k <= 32
    HC_HD int32_t sym(HcTable t) { return t.bits ? t.table[top(t.bits)] : t.table[0]; }
    // exact top-k's raw magnitude: the next HC_RAW_BITS bits (the float32's bits, sign dropped)
    HC_HD uint32_t raw() {
        fill();
        const uint32_t r = top(HC_RAW_BITS);
        skip(HC_RAW_BITS);
        return r;
    }
};

// Where the chunk decoders of exact top-k put a non-zero state and its raw magnitude (their
// put(i, state, raw)): states[i], raw[i]; a magnitude that is Inf or NaN turns a chunk that
// decoded cleanly into HC_ERR_RAW (verdict), as cpu_backend.decode_states rejects it after
// the section's bits.
struct HcRawSink {
    signed char* states;
    uint32_t* raw;
    bool bad;
    HC_HD void operator()(int64_t i, int v, uint32_t r) {
        states[i] = (signed char)v;
        raw[i] = r;
        bad |= r >= HC_RAW_LIMIT;
    }
    HC_HD int verdict(int e) const { return e == HC_OK && bad ? HC_ERR_RAW : e; }
    // the decoders take their put by value: this one puts through the sink itself
    HC_HD auto put() {
        return [this](int64_t i, int v, uint32_t r) { (*this)(i, v, r); };
    }
};

// ---- Huffman decoder of one tensor's code (huffman layout: one codeword per element,
// symbol = state + s, MSB first, canonical code assigned as hc_canonical_codes does; SHS's
// code over its levels and zero runs too).
// A record of HC_DEC_INTS ints: a primary table over the next pbits = min(tb, 10) bits
// (entry = symbol << 5 | length for codewords of at most pbits bits, else HC_ESCAPE_ENTRY;
// 4 KB, stays in L1) and, for the rare longer codewords, the canonical code's per-length
// limits: the L-bit prefix c of the stream is a codeword of length L when c < lim[L] (no
// shorter one matched), symbol sorted[off[L] + c]. No 2^15-entry table: a record per tensor
// *and worker* fits in memory for a fused decode of many payloads, and on an H100 the full
// table's scattered lookups made decoding 1.5-3x slower anyway. tb = 0: a code of one symbol
// (0 bits per element; e0 = symbol << 5) or none (e0 < 0).
#define HC_PRIMARY_BITS 10
#define HC_DEC_TB 1024
#define HC_DEC_PB 1025
#define HC_DEC_E0 1026
#define HC_DEC_LIM 1027                        // 16 ints, index = length
#define HC_DEC_OFF (HC_DEC_LIM + 16)           // 16 ints
#define HC_DEC_SORTED (HC_DEC_OFF + 16)        // HC_DEC_SYMBOLS uint16, in ints
#define HC_DEC_SYMBOLS HC_SHS_MAX_ALPHABET     // the largest alphabet a record decodes
#define HC_DEC_INTS 1312                       // >= HC_DEC_SORTED + 227, a multiple of 32

// The record's header (everything but the primary table) from a code's lengths; `single` >= 0:
// the code's only symbol. Returns pbits (0: no primary table to fill).
HC_HD int hc_decoder_header(const uint8_t* lengths, int n, int single, int32_t* dec) {
    int bl[HC_MAX_CODE_LEN + 1] = {0}, tb = 0;
    for (int i = 0; i < n; ++i) {
        bl[lengths[i]] += 1;
        tb = lengths[i] > tb ? lengths[i] : tb;
    }
    if (single >= 0 || tb == 0) {
        dec[HC_DEC_TB] = 0, dec[HC_DEC_PB] = 0;
        dec[HC_DEC_E0] = single >= 0 ? single << 5 : -(1 << 5);
        return 0;
    }
    bl[0] = 0;
    int first = 0, before = 0, at[HC_MAX_CODE_LEN + 1];
    dec[HC_DEC_LIM] = 0, dec[HC_DEC_OFF] = 0;
    for (int ln = 1; ln <= HC_MAX_CODE_LEN; ++ln) {
        first = (first + bl[ln - 1]) << 1;
        dec[HC_DEC_LIM + ln] = first + bl[ln];
        dec[HC_DEC_OFF + ln] = before - first;
        at[ln] = before;
        before += bl[ln];
    }
    uint16_t* sorted = (uint16_t*)(dec + HC_DEC_SORTED);
    for (int i = 0; i < n; ++i)
        if (lengths[i]) sorted[at[lengths[i]]++] = (uint16_t)i;
    const int pb = tb < HC_PRIMARY_BITS ? tb : HC_PRIMARY_BITS;
    dec[HC_DEC_TB] = tb, dec[HC_DEC_PB] = pb, dec[HC_DEC_E0] = -(1 << 5);
    return pb;
}

// Codeword at the top of `top_bits` (the next 15 bits of the stream, MSB first) among lengths
// lo..hi: symbol << 5 | length, or -1 << 5 when none (not for a complete code).
HC_HD int32_t hc_decoder_canonical(const int32_t* dec, uint32_t top_bits, int lo, int hi) {
    for (int ln = lo; ln <= hi; ++ln) {
        int32_t c = (int32_t)(top_bits >> (HC_MAX_CODE_LEN - ln));
        if (c < dec[HC_DEC_LIM + ln]) {
            int32_t k = dec[HC_DEC_OFF + ln] + c;
            if (k < 0 || k >= HC_DEC_SYMBOLS) break;
            return (int32_t)((const uint16_t*)(dec + HC_DEC_SORTED))[k] << 5 | ln;
        }
    }
    return -(1 << 5);
}

// Primary table entries j = from, from + step, ... < 2^pbits (after hc_decoder_header).
HC_HD void hc_decoder_primary(int32_t* dec, int pb, int from, int step) {
    for (int j = from; j < (1 << pb); j += step) {
        int32_t e = hc_decoder_canonical(dec, (uint32_t)j << (HC_MAX_CODE_LEN - pb), 1, pb);
        dec[j] = e >= 0 ? e : HC_ESCAPE_ENTRY;
    }
}

// Decode the next `m` elements of a chunk of the huffman layout that starts at byte
// `first_byte` and has exactly `nbits` bits, `*used` of which the elements before took (the
// decode resumes from any element: the fused decode-and-sum interleaves the payloads of many
// workers tile by tile). Calls put(j, symbol) for j = 0..m-1; returns an HC_ERR_* code. The
// caller checks `*used == nbits` after the chunk's last element. Reads bytes of buf only
// below nbytes (past it: zero) through HcReader's 64-bit window. RAW (exact top-k): a symbol
// other than `zero` (the state 0's) is followed by its raw magnitude: put(j, symbol, raw).
template <bool RAW = false, class Put>
HC_HD int hc_huffman_decode_run(const uint8_t* buf, uint64_t nbytes, uint64_t first_byte,
                                uint64_t nbits, uint64_t* used, int64_t m, const int32_t* dec,
                                Put put, int zero = 0) {
    const int tb = dec[HC_DEC_TB];
    if constexpr (!RAW) {
        if (!tb) {  // every element is the one symbol, 0 bits each
            const int32_t e0 = dec[HC_DEC_E0];
            if (m > 0 && e0 < 0) return HC_ERR_SYMBOL;
            for (int64_t j = 0; j < m; ++j) put(j, e0 >> 5);
            return HC_OK;
        }
    }
    const int pb = dec[HC_DEC_PB];
    uint64_t u = *used;
    const uint64_t bit = 8 * first_byte + u;
    HcReader rd = {buf, nbytes, bit >> 3, 0, 0};
    rd.fill();
    rd.skip((int)(bit & 7));
    int err = HC_OK;
    for (int64_t j = 0; j < m; ++j) {
        rd.fill();
        int32_t e;
        if (RAW && !tb) {  // a code of one symbol (or none): 0 bits per codeword
            e = dec[HC_DEC_E0];
        } else {
            e = dec[rd.top(pb)];
            if (e == HC_ESCAPE_ENTRY)
                e = hc_decoder_canonical(dec, rd.top(HC_MAX_CODE_LEN), pb + 1, tb);
        }
        if (e < 0) {
            err = HC_ERR_SYMBOL;
            break;
        }
        const int len = e & 31;
        u += len;
        if (u > nbits) {
            err = HC_ERR_OVERRUN;
            break;
        }
        rd.skip(len);
        if constexpr (RAW) {
            uint32_t r = 0;
            if ((e >> 5) != zero) {
                r = rd.raw();
                u += HC_RAW_BITS;
                if (u > nbits) {
                    err = HC_ERR_OVERRUN;
                    break;
                }
            }
            put(j, e >> 5, r);
        } else {
            put(j, e >> 5);
        }
    }
    *used = u;
    return err;
}

// A decoded state's value in the tensor's dtype (1 float16, 2 float32, 3 float64), as a
// double, as quantizers.dequantize gives it: state * scale / s (fmt HC_FP_LINEAR), or a float
// format's value(|state|) * scale, negated for a negative state; rounded to the dtype once.
HC_HD double hc_state_value(int state, double scale, int s, int dtype, int fmt) {
    double v;
    if (fmt == HC_FP_LINEAR) {
        v = (double)state * scale / (double)s;
    } else {
        const HcFp f = hc_fp_format(fmt, s);
        v = hc_fp_value(state < 0 ? -state : state, f.mbits, f.bias) * scale;
        if (state < 0) v = -v;
    }
    if (dtype == 1) return hc_round_to_half(v);
    if (dtype == 2) return (double)(float)v;
    return v;
}

#ifdef __CUDACC__
// The end of a round of a warp's chunk writer (zrh.cu, elias.cu): its items are placed in the
// warp's shared buffer `words` (WORDS words, word 0 = stream word base >> 5, from bit
// base & 31); the words every bit of which is now placed are stored whole into `out`, with
// atomicOr those at or before `shared_to` (which another chunk's writer may share), the last,
// partial word carried to words[0] and the rest zeroed. Returns the stream bit where the next
// round starts.
template <int WORDS>
__device__ __forceinline__ unsigned long long hc_store_round(unsigned int* words,
                                                            unsigned int* out,
                                                            unsigned long long base,
                                                            unsigned long long round,
                                                            unsigned long long shared_to,
                                                            int lane) {
    const unsigned long long w0 = base >> 5;  // the buffer's word 0
    base += round;
    const int done = (int)((base >> 5) - w0);  // words every bit of which is placed
    for (int w = lane; w < done; w += 32) {
        const unsigned int bytes = hc_word_bytes(words[w]);
        if (w0 + w <= shared_to) atomicOr(out + w0 + w, bytes);
        else out[w0 + w] = bytes;
    }
    const unsigned int carry = words[done];
    __syncwarp();
    for (int w = lane; w < WORDS; w += 32) words[w] = w ? 0u : carry;
    __syncwarp();
    return base;
}
#endif

// ----------------------------------------------------------------- batches of chunks
// Chunks of all tensors of a batch are numbered globally: tensor t owns chunks
// chunk_first[t] .. chunk_first[t + 1] - 1 of 2^clog2[t] elements.
#define HC_THREADS 256  // threads per block of the warp-per-chunk kernels (gpu_backend.THREADS)

struct HcChunk {
    int t;                 // tensor
    int64_t start, end;    // its elements [start, end)
};

// Global chunk c: its tensor (the last t with chunk_first[t] <= c) and element range.
// The tensor owning item c of a batch numbering (chunks, blocks): the last t with
// first[t] <= c.
HC_HD int hc_owner(long long c, const long long* first, int count) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (first[mid] <= c) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

HC_HD HcChunk hc_chunk(long long c, const long long* chunk_first, int count, const int* clog2,
                       const long long* sizes) {
    const int lo = hc_owner(c, chunk_first, count);
    HcChunk k;
    k.t = lo;
    k.start = (c - chunk_first[lo]) << clog2[lo];
    k.end = k.start + (1ll << clog2[lo]) < sizes[lo] ? k.start + (1ll << clog2[lo]) : sizes[lo];
    return k;
}

// ---- Decode-and-sum of the huffman tensors of several payloads (cuda/huffman.cu
// hc_huffman_decode_sum). Per payload: its bytes, each chunk's first byte and bit length, its
// chunk numbering (chunk_first: tensor t owns chunks chunk_first[t] ..).
struct HcPayload {
    const uint8_t* buf;
    uint64_t nbytes;
    const uint64_t* chunk_byte;
    const uint64_t* chunk_bits;
    const int64_t* chunk_first;
};

#define HC_DS_TILE 32  // elements a lane decodes per payload before the next payload

// First error of a payload (the first to be reported wins): err[0] its HC_ERR_* code,
// err[1] the chunk. Every decode kernel reports through it.
HC_HD void hc_report(int* err, int e, long long chunk) {
#ifdef __CUDA_ARCH__
    if (atomicCAS(err, 0, e) == 0) err[1] = (int)chunk;
#else
    if (err[0] == 0) err[0] = e, err[1] = (int)chunk;
#endif
}

// One lane's share of a tile: elements at .. at + m - 1 (m = min(32, n - at), none when
// n <= at) of chunk c of the launch's numbering (tensor t, whose first chunk is c0; n its
// elements) decoded from payloads 0 .. npay - 1 in turn and their values added into row[0 ..
// m - 1] (zeroed here first). Payload q's decoder is dec[(q * count + t) * HC_DEC_INTS] and
// its values values[(q * count + t) * (2s + 1) + symbol]; its chunk is
// pays[q].chunk_first[t] + c - c0 (the same chunk size in every payload). Bit positions
// between tiles: payload 0's in *used0, payload q's in resume[(q - 1) * total + c];
// ~0 marks a chunk that failed (err[2q], err[2q + 1]: hc_report). At the chunk's last element
// every payload's chunk must end on its last bit.
HC_HD void hc_decode_sum_tile(const HcPayload* pays, int npay, int64_t c, int64_t total, int t,
                              int64_t c0, int count, int s, const int32_t* dec,
                              const double* values, int at, int n, uint64_t* used0,
                              uint64_t* resume, int* err, double* row) {
    const int m = n - at <= 0 ? 0 : (n - at < HC_DS_TILE ? n - at : HC_DS_TILE);
    for (int j = 0; j < HC_DS_TILE; ++j) row[j] = 0.0;
    const int alphabet = 2 * s + 1;
    for (int q = 0; q < npay && m > 0; ++q) {
        const HcPayload P = pays[q];
        const int64_t cq = P.chunk_first[t] + (c - c0);
        uint64_t* slot = q ? resume + (int64_t)(q - 1) * total + c : used0;
        uint64_t used = at == 0 ? 0 : *slot;
        if (used == ~0ull) continue;
        const uint64_t nbits = P.chunk_bits[cq];
        const int64_t d = (int64_t)q * count + t;
        const double* value = values + d * alphabet;
        auto put = [row, value](int64_t j, int sym) { row[j] += value[sym]; };
        int e = hc_huffman_decode_run(P.buf, P.nbytes, P.chunk_byte[cq], nbits, &used, m,
                                      dec + d * HC_DEC_INTS, put);
        if (e == HC_OK && at + m == n && used != nbits) e = HC_ERR_UNDERRUN;
        if (e != HC_OK) {
            used = ~0ull;
            hc_report(err + 2 * q, e, cq);
        }
        if (q == 0 || at + m < n) *slot = used;
    }
}

// ---- Decode-and-sum through a symbol buffer (cuda/huffman.cu hc_huffman_decode_symbols,
// hc_sum_symbols; gpu_backend._by_symbols), for batches of too few chunks for a thread per
// chunk to fill the device. Payload q's row of the buffer starts at q * stride, tensor t's
// symbols (symbol = state + s < 256) at sym_offsets[t] in it: multiples of 8, as chunk starts
// are (2^8 elements at least), so a thread stores its chunk's symbols 8 at a time, the last
// word running into the tensor's padding. Thread g of npay * total decodes chunk c = g %
// total of payload q = g / total (tensors marked in `here`); errors reported as
// hc_decode_sum_tile reports them (the words after an error stay as they were: zeros).
HC_HD void hc_decode_symbols_chunk(const HcPayload* pays, int npay, int64_t g,
                                   const int* clog2, const long long* chunk_first,
                                   const long long* sizes, int count, const uint8_t* here,
                                   const int32_t* dec, const long long* sym_offsets,
                                   int64_t stride, uint8_t* symbols, int* err) {
    const long long total = chunk_first[count];
    if (g >= total * npay) return;
    const int q = (int)(g / total);
    const long long c = g - (long long)q * total;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (!here[k.t]) return;
    const HcPayload P = pays[q];
    const long long cq = P.chunk_first[k.t] + (c - chunk_first[k.t]);
    const uint64_t nbits = P.chunk_bits[cq];
    uint64_t* o = (uint64_t*)(symbols + (int64_t)q * stride + sym_offsets[k.t] + k.start);
    uint64_t word = 0, used = 0;
    const int64_t n = k.end - k.start;
    int e = hc_huffman_decode_run(P.buf, P.nbytes, P.chunk_byte[cq], nbits, &used, n,
                                  dec + ((int64_t)q * count + k.t) * HC_DEC_INTS,
                                  [o, &word](int64_t j, int sym) {
                                      word |= (uint64_t)sym << (8 * (j & 7));
                                      if ((j & 7) == 7) o[j >> 3] = word, word = 0;
                                  });
    if (e == HC_OK && used != nbits) e = HC_ERR_UNDERRUN;
    if (e != HC_OK) hc_report(err + 2 * q, e, cq);
    else if (n & 7) o[n >> 3] = word;
}

// Symbol sym_at of every row: its values from payloads 0 .. npay - 1 (tensor t) added in
// order from 0.0, as hc_decode_sum_tile's row adds them.
HC_HD double hc_sum_symbols_at(const uint8_t* symbols, int npay, int64_t stride,
                               int64_t sym_at, int t, int count, const double* values,
                               int alphabet) {
    double v = 0.0;
    for (int q = 0; q < npay; ++q)
        v += values[((int64_t)q * count + t) * alphabet + symbols[(int64_t)q * stride + sym_at]];
    return v;
}

// ----------------------------------------------------------------- coders/chunks.py, zrh.py
// ZRH (docs/format.md): per non-zero its zero run and its level, then the chunk's terminal
// run; run symbols 0..15 direct, longer runs in half-octave buckets with extra bits, or Rice
// codes; tables chosen by the previous level's context.
#define HC_CODER_HUFFMAN 1  // payload.CODERS ids
#define HC_CODER_SHS 3
#define HC_CODER_ZRH 5
#define HC_RUN_DIRECT 16
#define HC_RUN_ALPHABET 70
#define HC_RICE_MAX_K 24
#define HC_ZRH_NCTX 4   // run contexts
#define HC_ZRH_NLCTX 8  // level contexts with sign contexts
#define HC_ZRH_RICE 1   // zrh.MODE_RICE (0: Huffman run codes)
#define HC_ZRH_CTX_SIGN 2  // zrh.CTX_ONE 0, CTX_MAGNITUDE 1, CTX_SIGN 2
#define HC_ZRH_ROWS (HC_ZRH_NCTX + HC_ZRH_NLCTX)  // decode tables per tensor: runs, levels
#define HC_ERR_VALUE HC_ERR_SYMBOL  // bits.ERR_BAD_VALUE: a bad codeword or decoded value

HC_HD int hc_bitlen(uint64_t v) {
    int n = 0;
    while (v) v >>= 1, ++n;
    return n;
}

// Zero run r >= 0 -> its symbol; *ne extra bits, *ex their value (chunks.run_sym).
HC_HD int hc_run_sym(int64_t r, int* ne, uint32_t* ex) {
    if (r < HC_RUN_DIRECT) {
        *ne = 0, *ex = 0;
        return (int)r;
    }
    int64_t t = r - 8;
    int e = hc_bitlen((uint64_t)t) - 1;
    *ne = e - 1;
    *ex = (uint32_t)(t & ((1ll << (e - 1)) - 1));
    return HC_RUN_DIRECT + 2 * (e - 3) + (int)((t >> (e - 1)) & 1);
}

// The smallest run of a symbol; *ne its extra bit count (chunks.run_base).
HC_HD int64_t hc_run_base(int sym, int* ne) {
    if (sym < HC_RUN_DIRECT) {
        *ne = 0;
        return sym;
    }
    int e = (sym - HC_RUN_DIRECT) / 2 + 3, m = (sym - HC_RUN_DIRECT) & 1;
    *ne = e - 1;
    return ((1ll << e) | ((int64_t)m << (e - 1))) + 8;
}

HC_HD int hc_level_sym(int v, int s) { return v < 0 ? v + s : v + s - 1; }
HC_HD int hc_level_of(int sym, int s) { return sym < s ? sym - s : sym - s + 1; }

// (run context, level context) after level v, or at a chunk's start (v = 0): zrh.contexts.
HC_HD void hc_zrh_contexts(int v, int ctxmode, int* ctx, int* lctx) {
    if (ctxmode == 0) {
        *ctx = *lctx = 0;
        return;
    }
    int a = v < 0 ? -v : v;
    *ctx = a <= 1 ? 0 : a <= 3 ? 1 : a <= 7 ? 2 : 3;
    *lctx = ctxmode == HC_ZRH_CTX_SIGN && v < 0 ? *ctx + 4 : *ctx;
}

// One tensor's ZRH code for the writers: mode, context mode, Rice k per run context, run
// codes (HC_ZRH_NCTX rows of HC_RUN_ALPHABET) and level codes (HC_ZRH_NLCTX rows of 2s), each
// entry code << 5 | length (zrh._writer_tables).
struct HcZrhCode {
    int mode, ctxmode, s;
    const int* ks;
    const uint32_t* rtab;
    const uint32_t* ltab;
};

// The bits of one item: the zero run r before level v (v = 0: the chunk's terminal run),
// after previous level pv (0 at the chunk's start). Returns the bit count; when it is at most
// 64, *code holds them (right-aligned). Longer items are Rice runs with long unary parts,
// written by hc_zrh_item_pieces.
HC_HD uint64_t hc_zrh_item(const HcZrhCode& z, int64_t r, int v, int pv, uint64_t* code) {
    int ctx, lctx;
    hc_zrh_contexts(pv, z.ctxmode, &ctx, &lctx);
    uint64_t rlen, rcode;
    if (z.mode == HC_ZRH_RICE) {
        int k = z.ks[ctx];
        uint64_t q = (uint64_t)(r >> k);
        rlen = q + 1 + k;
        rcode = rlen <= 64 ? (((q ? ~0ull >> (64 - q) : 0ull) << (k + 1))
                              | (uint64_t)(r & ((1ll << k) - 1)))
                           : 0;
    } else {
        int ne;
        uint32_t ex;
        int sym = hc_run_sym(r, &ne, &ex);
        uint32_t e = z.rtab[ctx * HC_RUN_ALPHABET + sym];
        rlen = (e & 31) + ne;
        rcode = ((uint64_t)(e >> 5) << ne) | ex;
    }
    uint64_t ln = 0, lcode = 0;
    if (v) {
        uint32_t e = z.ltab[lctx * 2 * z.s + hc_level_sym(v, z.s)];
        ln = e & 31, lcode = e >> 5;
    }
    uint64_t len = rlen + ln;
    if (len <= 64) *code = (ln ? rcode << ln : rcode) | lcode;
    return len;
}

// An item too long for hc_zrh_item's 64 bits (a Rice run of > 64 - 1 - k - 15 ones) as
// pieces of at most 32 bits, in order: emit(bits, length).
template <class Emit>
HC_HD void hc_zrh_item_pieces(const HcZrhCode& z, int64_t r, int v, int pv, Emit emit) {
    int ctx, lctx;
    hc_zrh_contexts(pv, z.ctxmode, &ctx, &lctx);
    int k = z.ks[ctx];
    uint64_t q = (uint64_t)(r >> k);
    for (; q >= 32; q -= 32) emit(0xFFFFFFFFu, 32);
    if (q) emit((uint32_t)(~0ull >> (64 - q)), (int)q);
    emit(0u, 1);
    if (k) emit((uint32_t)(r & ((1ll << k) - 1)), k);
    if (v) {
        uint32_t e = z.ltab[lctx * 2 * z.s + hc_level_sym(v, z.s)];
        if (e & 31) emit(e >> 5, (int)(e & 31));
    }
}

// One ZRH chunk (zrh._decode_chunk, the same verdicts): calls put(i, level) per non-zero.
// runs/levels: the tensor's HC_ZRH_NCTX run and HC_ZRH_NLCTX level decode tables.
// RAW (exact top-k): each level is followed by its raw magnitude: put(i, level, raw).
template <bool RAW = false, class Put>
HC_HD int hc_zrh_decode_chunk(const uint8_t* buf, uint64_t nbytes, uint64_t first_byte,
                              uint64_t nbits, int64_t start, int64_t end, int s, int mode,
                              int ctxmode, const int* ks, const HcTable* runs,
                              const HcTable* levels, Put put) {
    HcReader rd = {buf, nbytes, first_byte, 0, 0};
    uint64_t bitpos = 0;
    int64_t i = start;
    int ctx = 0, lctx = 0;
    for (;;) {
        int64_t r;
        if (mode == HC_ZRH_RICE) {
            int64_t q = 0;
            for (;;) {
                if (bitpos >= nbits) return HC_ERR_OVERRUN;
                rd.fill();
                uint32_t w = rd.top(32);
                if (w == 0xFFFFFFFFu) {
                    q += 32;
                    rd.skip(32);
                    bitpos += 32;
                    if (q > (1ll << 30)) return HC_ERR_VALUE;
                    continue;
                }
                int ones = 32 - hc_bitlen(w ^ 0xFFFFFFFFu);
                q += ones;
                rd.skip(ones + 1);
                bitpos += ones + 1;
                break;
            }
            int k = ks[ctx];
            r = q << k;
            if (k) {
                rd.fill();
                r |= rd.top(k);
                rd.skip(k);
                bitpos += k;
            }
        } else {
            rd.fill();
            int32_t e = rd.sym(runs[ctx]);
            if (e < 0) return HC_ERR_VALUE;
            rd.skip(e & 31);
            bitpos += e & 31;
            int ne;
            r = hc_run_base(e >> 5, &ne);
            if (ne) {
                rd.fill();
                r += rd.top(ne);
                rd.skip(ne);
                bitpos += ne;
            }
        }
        i += r;
        if (i >= end) {
            if (i > end) return HC_ERR_VALUE;
            break;
        }
        rd.fill();
        int32_t e = rd.sym(levels[lctx]);
        if (e < 0) return HC_ERR_VALUE;
        rd.skip(e & 31);
        bitpos += e & 31;
        int v = hc_level_of(e >> 5, s);
        if constexpr (RAW) {
            put(i, v, rd.raw());
            bitpos += HC_RAW_BITS;
        } else {
            put(i, v);
        }
        if (bitpos > nbits) return HC_ERR_OVERRUN;
        hc_zrh_contexts(v, ctxmode, &ctx, &lctx);
        ++i;
    }
    if (bitpos != nbits) return bitpos > nbits ? HC_ERR_OVERRUN : HC_ERR_UNDERRUN;
    return HC_OK;
}

// ----------------------------------------------------------------- coders/shs.py
// SHS: one canonical code over symbols 0..2s-1, the non-zero levels (hc_level_sym), and
// 2s + r - 1, a zero run of r = 1..HC_SHS_MAX_RUN; a longer run is cut into runs of
// HC_SHS_MAX_RUN and the rest, every chunk's terminal run coded too. Walked as ZRH's items:
// per non-zero its zero run and its level, then the chunk's terminal run.

// A weight as shs.build_code turns it into an integer: round(w * 2^40), half to even, >= 1.
HC_HD int64_t hc_shs_weight(double w) {
    const double x = rint(w * 1099511627776.0);
    return x < 1.0 ? 1 : (int64_t)x;
}

// shs.build_code's integer weights of the 2s + HC_SHS_MAX_RUN symbols from SH's sampled
// counts (hc_sample_position; 2s + 1 counts, every one >= 1): level k its sampled probability,
// run r < MAX_RUN p0^r (1 - p0), run MAX_RUN p0^MAX_RUN, p0^r a running float64 product.
HC_HD void hc_shs_weights(const unsigned long long* counts, int s, int64_t* w) {
    unsigned long long sum = 0;
    for (int k = 0; k <= 2 * s; ++k) sum += counts[k];
    const double total = (double)sum, p0 = (double)counts[s] / total;
    for (int k = 0; k < 2 * s; ++k)
        w[k] = hc_shs_weight((double)counts[k < s ? k : k + 1] / total);
    double pr = 1.0;
    for (int r = 1; r <= HC_SHS_MAX_RUN; ++r) {
        pr *= p0;
        w[2 * s + r - 1] = hc_shs_weight(r < HC_SHS_MAX_RUN ? pr * (1.0 - p0) : pr);
    }
}

// SHS's code of one tensor from its sampled counts (codebook.cu hc_build_shs_codes): code
// lengths into `lengths` (2s + HC_SHS_MAX_RUN), canonical codes into work.codes.
struct HcShsWork {
    int64_t weights[HC_SHS_MAX_ALPHABET];
    HcHuffmanArrays<HC_SHS_MAX_ALPHABET> huff;
    uint16_t codes[HC_SHS_MAX_ALPHABET];
};

HC_HD void hc_shs_code(const unsigned long long* counts, int s, uint8_t* lengths,
                       HcShsWork& work) {
    const int a = 2 * s + HC_SHS_MAX_RUN;
    hc_shs_weights(counts, s, work.weights);
    hc_huffman_lengths_in(work.weights, a, HC_MAX_CODE_LEN, lengths, work.huff.work());
    hc_canonical_codes(lengths, a, work.codes);
}

// One tensor's SHS code for the writers: entries code << 5 | length, 2s + HC_SHS_MAX_RUN.
struct HcShsCode {
    int s;
    const uint32_t* tab;
};

// An item's codewords (code << 5 | length): the zero run r >= 0 before level v (v = 0: the
// chunk's terminal run) is q = r / MAX_RUN codewords of the longest run (`full`), then the
// rest's (`rest`, none for 0), then the level's (`level`, none for v = 0).
struct HcShsParts {
    uint32_t full, rest, level;
    int64_t q;
};

HC_HD HcShsParts hc_shs_parts(const HcShsCode& z, int64_t r, int v) {
    HcShsParts p;
    p.full = z.tab[2 * z.s + HC_SHS_MAX_RUN - 1];
    p.q = r / HC_SHS_MAX_RUN;
    const int m = (int)(r - p.q * HC_SHS_MAX_RUN);
    p.rest = m ? z.tab[2 * z.s + m - 1] : 0u;
    p.level = v ? z.tab[hc_level_sym(v, z.s)] : 0u;
    return p;
}

// The bits of an item (hc_zrh_item's shape): returns the bit count; when it is at most 64,
// *code holds them (right-aligned). pv (the previous level) is ZRH's; SHS has no contexts.
HC_HD uint64_t hc_shs_item(const HcShsCode& z, int64_t r, int v, int pv, uint64_t* code) {
    (void)pv;
    const HcShsParts p = hc_shs_parts(z, r, v);
    const uint64_t len = (uint64_t)p.q * (p.full & 31) + (p.rest & 31) + (p.level & 31);
    if (len <= 64) {
        uint64_t c = 0;
        for (int64_t k = 0; k < p.q; ++k) c = (c << (p.full & 31)) | (p.full >> 5);
        c = (c << (p.rest & 31)) | (p.rest >> 5);
        *code = (c << (p.level & 31)) | (p.level >> 5);
    }
    return len;
}

// An item longer than 64 bits (a run of many times MAX_RUN zeros) as pieces of at most 32
// bits, in order: emit(bits, length); the longest run's codeword packed as many times as
// whole codewords fit in 32 bits.
template <class Emit>
HC_HD void hc_shs_item_pieces(const HcShsCode& z, int64_t r, int v, int pv, Emit emit) {
    (void)pv;
    const HcShsParts p = hc_shs_parts(z, r, v);
    const int fl = (int)(p.full & 31), per = fl ? 32 / fl : 0;
    int64_t q = p.q;
    if (fl) {
        uint32_t pack = 0;
        for (int k = 0; k < per; ++k) pack = (pack << fl) | (p.full >> 5);
        for (; q >= per; q -= per) emit(pack, per * fl);
        for (; q > 0; --q) emit(p.full >> 5, fl);
    }
    if (p.rest & 31) emit(p.rest >> 5, (int)(p.rest & 31));
    if (p.level & 31) emit(p.level >> 5, (int)(p.level & 31));
}

// One SHS chunk (shs._decode, the same verdicts) through a decoder record over the
// 2s + MAX_RUN symbols (hc_decoder_header): calls put(i, level) per non-zero (the caller's
// buffer is zeroed). RAW (exact top-k): each level is followed by its raw magnitude:
// put(i, level, raw).
template <bool RAW = false, class Put>
HC_HD int hc_shs_decode_chunk(const uint8_t* buf, uint64_t nbytes, uint64_t first_byte,
                              uint64_t nbits, int64_t start, int64_t end, int s,
                              const int32_t* dec, Put put) {
    HcReader rd = {buf, nbytes, first_byte, 0, 0};
    const int tb = dec[HC_DEC_TB], pb = dec[HC_DEC_PB];
    uint64_t bitpos = 0;
    for (int64_t i = start; i < end;) {
        rd.fill();
        int32_t e = tb ? dec[rd.top(pb)] : dec[HC_DEC_E0];  // tb = 0: one symbol, 0 bits
        if (e == HC_ESCAPE_ENTRY)
            e = hc_decoder_canonical(dec, rd.top(HC_MAX_CODE_LEN), pb + 1, tb);
        if (e < 0) return HC_ERR_SYMBOL;
        const int len = e & 31, sym = e >> 5;
        rd.skip(len);
        bitpos += len;
        if (sym >= 2 * s) {  // a zero run: its zeros are in place
            i += sym - 2 * s + 1;
            if (i > end) return HC_ERR_VALUE;
        } else {
            if constexpr (RAW) {
                put(i, hc_level_of(sym, s), rd.raw());
                bitpos += HC_RAW_BITS;
            } else {
                put(i, hc_level_of(sym, s));
            }
            ++i;
        }
        if (bitpos > nbits) return HC_ERR_OVERRUN;
    }
    return bitpos != nbits ? HC_ERR_UNDERRUN : HC_OK;
}

// ---- RLH (coders/rlh.py): one codeword per run of equal states, over the tensor's distinct
// (value, run) pairs. Its code is decoded by its canonical limits (no table: a pair code has
// up to 2^15 symbols): a record of HC_RLH_DEC ints per tensor and the tensor's pairs in the
// code's canonical order (by length, then pair), each run << HC_RLH_VALUE_BITS | value + s,
// both made on the host from the parsed codebook (gpu_rlh.decoder).
#define HC_CODER_RLH 4       // payload.CODERS
#define HC_RLH_LIM 0         // + ln (1..15): first codeword of length ln + their count
#define HC_RLH_OFF 16        // + ln: the rank of codeword c of length ln is off[ln] + c
#define HC_RLH_TB 32         // the longest codeword; 0: a one-pair code (its codeword: 0 bits)
#define HC_RLH_DEC 33        // ints per tensor
#define HC_RLH_VALUE_BITS 8  // levels are at most 127: value + s < 2^8

// One RLH chunk (rlh._decode, the same verdicts in the same order): calls put(i, value) for
// the non-zero states of each run (the caller's buffer is zeroed); RAW (exact top-k): each
// non-zero state of a run is followed by its raw magnitude: put(i, value, raw). `pairs`
// holds `npairs` pairs; a run past the chunk's end is a bad value, never written.
template <bool RAW = false, class Put>
HC_HD int hc_rlh_decode_chunk(const uint8_t* buf, uint64_t nbytes, uint64_t first_byte,
                              uint64_t nbits, int64_t start, int64_t end, int s,
                              const int32_t* dec, const int64_t* pairs, int64_t npairs,
                              Put put) {
    HcReader rd = {buf, nbytes, first_byte, 0, 0};
    const int tb = dec[HC_RLH_TB];
    uint64_t bitpos = 0;
    for (int64_t i = start; i < end;) {
        int64_t k = 0;  // the pair's rank
        if (tb) {
            rd.fill();
            const uint32_t top = rd.top(HC_MAX_CODE_LEN);
            int len = 1;
            for (; len <= tb; ++len) {
                const int32_t c = (int32_t)(top >> (HC_MAX_CODE_LEN - len));
                if (c < dec[HC_RLH_LIM + len]) {
                    k = (int64_t)dec[HC_RLH_OFF + len] + c;
                    break;
                }
            }
            if (len > tb || k < 0 || k >= npairs) return HC_ERR_SYMBOL;  // complete codes: never
            rd.skip(len);
            bitpos += len;
        } else if (npairs < 1) {
            return HC_ERR_SYMBOL;
        }
        const int64_t p = pairs[k];
        const int v = (int)(p & ((1 << HC_RLH_VALUE_BITS) - 1)) - s;
        const int64_t r = p >> HC_RLH_VALUE_BITS;
        if (r > end - i) return HC_ERR_VALUE;
        if (v) {
            for (int64_t j = i; j < i + r; ++j) {
                if constexpr (RAW) {
                    put(j, v, rd.raw());
                    bitpos += HC_RAW_BITS;
                } else {
                    put(j, v);
                }
            }
        }
        i += r;
        if (bitpos > nbits) return HC_ERR_OVERRUN;
    }
    return bitpos != nbits ? HC_ERR_UNDERRUN : HC_OK;
}

// ----------------------------------------------------------------- lists of marked states
// The coders that walk marked states (ZRH and Elias' gap layout: the non-zeros; Elias'
// run-length layout: the last state of every run of equal states in a chunk) read them from
// ordered lists made over the whole batch (cuda/states.cu hc_list_count, hc_list): tensor t's
// states in blocks of HC_LIST_BLOCK, blocks numbered over the batch from block_first[t];
// at[b] the list entry where block b's marks start. Chunks are whole blocks (chunk sizes
// are 2^8 elements at least), so a chunk's entries follow from its first and end blocks.
#define HC_LIST_BLOCK 256  // states per block of the lists (8 per lane of a warp)
#define HC_LIST_NONZERO 0  // list modes: non-zero states
#define HC_LIST_RUN_END 1  // states whose successor in their chunk differs (or is none)

// The marks among 8 states e .. e + 7 of a tensor of n states (lo, hi: their bytes, state e
// in the low byte of lo; next: state e + 8, read only when e + 8 < n): bit j set when state
// e + j < n is marked in `mode`, chunks of 2^clog2 states.
HC_HD unsigned int hc_marks(uint32_t lo, uint32_t hi, int next, int64_t e, int64_t n, int clog2,
                            int mode) {
    unsigned int m = 0;
    for (int j = 0; j < 8 && e + j < n; ++j) {
        const int b = (signed char)((j < 4 ? lo >> (8 * j) : hi >> (8 * (j - 4))) & 0xFFu);
        if (mode == HC_LIST_NONZERO) {
            if (b) m |= 1u << j;
            continue;
        }
        const int64_t i = e + j;
        const int after = j == 7 ? next
                                 : (signed char)((j + 1 < 4 ? lo >> (8 * (j + 1))
                                                            : hi >> (8 * (j - 3))) & 0xFFu);
        if (i + 1 == n || ((i + 1) & ((1ll << clog2) - 1)) == 0 || after != b) m |= 1u << j;
    }
    return m;
}

// Entries [*a, *b) of a list: the chunk [start, end) of tensor t.
HC_HD void hc_chunk_entries(int t, int64_t start, int64_t end, const long long* block_first,
                            const long long* at, long long* a, long long* b) {
    *a = at[block_first[t] + start / HC_LIST_BLOCK];
    *b = at[block_first[t] + (end + HC_LIST_BLOCK - 1) / HC_LIST_BLOCK];
}

#ifdef __CUDACC__
// The items of a chunk of n states whose non-zeros are entries [a, b) of the lists (the
// coders that code zero runs: ZRH, SHS): calls visit(ok, r, v, pv, i) once per round, on
// every lane of the warp together (visit may use warp collectives); lanes with ok hold an
// item, in order: the zero run r before level v at position i of the chunk, after the
// previous level pv (0 at the chunk's start); the last round has the terminal run (v = 0,
// i = n) on lane 0.
template <class Visit>
__device__ __forceinline__ void hc_run_walk(const unsigned int* __restrict__ pos,
                                            const signed char* __restrict__ val, long long a,
                                            long long b, long long n, Visit visit) {
    const int lane = threadIdx.x & 31;
    for (long long j0 = a; j0 < b; j0 += 32) {
        const long long j = j0 + lane;
        const bool ok = j < b;
        long long r = 0, i = 0;
        int v = 0, pv = 0;
        if (ok) {
            i = pos[j];
            r = i - (j > a ? (long long)pos[j - 1] : -1ll) - 1;
            v = val[j];
            pv = j > a ? val[j - 1] : 0;
        }
        visit(ok, r, v, pv, i);
    }
    const long long last = b > a ? (long long)pos[b - 1] : -1ll;
    visit(lane == 0, n - last - 1, 0, b > a ? (int)val[b - 1] : 0, n);
}

// A chunk's length in bits, on lane 0 of the warp that walks it (hc_run_walk): the sum of
// its items' item(r, v, pv, &code) bit counts, + `extra` per level (exact top-k's raw
// magnitudes).
template <class Item>
__device__ __forceinline__ unsigned long long hc_run_items_bits(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val, long long a,
    long long b, long long n, unsigned int extra, Item item) {
    unsigned long long bits = 0;
    hc_run_walk(pos, val, a, b, n, [&](bool ok, long long r, int v, int pv, long long) {
        uint64_t code;
        if (ok) bits += item(r, v, pv, &code) + (v ? extra : 0);
    });
    for (int o = 16; o; o >>= 1) bits += __shfl_down_sync(0xffffffffu, bits, o);
    return bits;
}

// A warp writes a chunk's items (hc_run_walk) from stream byte `first_byte`, 32 at a time:
// items of at most 64 bits, item(r, v, pv, &code), are placed into the warp's shared word
// buffer (atomicOr there), completed words stored whole (hc_store_round); a round with a
// longer item (a Rice run of many ones, a run of many times SHS's longest run) flushes the
// buffer and places its bits, pieces(r, v, pv, emit), with atomicOr straight into the
// output. Words a chunk may share with another writer (its first word, words the slow path
// touched, its last partial word) are always ORed. RAW (exact top-k): each level is followed
// by its raw magnitude (mags[i], i the level's position in the chunk); WORDS: 31 carried bits
// + 32 items of <= 64 bits (+ HC_RAW_BITS).
template <bool RAW, int WORDS, class Item, class Pieces>
__device__ __forceinline__ void hc_run_items_write(
    const unsigned int* __restrict__ pos, const signed char* __restrict__ val, long long a,
    long long b, long long n, const unsigned int* __restrict__ mags,
    unsigned long long first_byte, unsigned int* __restrict__ out, Item item, Pieces pieces) {
    __shared__ unsigned int buffer[HC_THREADS / 32][WORDS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned int* words = buffer[warp];
    for (int w = lane; w < WORDS; w += 32) words[w] = 0;
    __syncwarp();
    unsigned long long base = 8ull * first_byte;   // stream bit where the next round starts
    unsigned long long shared_to = first_byte >> 2;  // words up to it: atomicOr
    auto or_shared = [words](unsigned long long w, unsigned int v) { atomicOr(words + w, v); };
    auto or_global = [out](unsigned long long w, unsigned int v) {
        atomicOr(out + w, hc_word_bytes(v));
    };
    auto place64 = [](unsigned long long rel, unsigned long long code, int len, auto or_word) {
        if (len > 32) {
            hc_place(rel, (unsigned int)(code >> 32), len - 32, or_word);
            hc_place(rel + len - 32, (unsigned int)code, 32, or_word);
        } else if (len) {
            hc_place(rel, (unsigned int)code, len, or_word);
        }
    };
    hc_run_walk(pos, val, a, b, n, [&](bool ok, long long r, int v, int pv, long long i) {
        uint64_t code = 0;
        const unsigned long long len = ok ? item(r, v, pv, &code) : 0;
        const unsigned long long all = len + (RAW && ok && v ? HC_RAW_BITS : 0);  // + raw
        unsigned long long incl = all;
        for (int o = 1; o < 32; o <<= 1) {
            unsigned long long u = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += u;
        }
        const unsigned long long round = __shfl_sync(0xffffffffu, incl, 31);
        if (!__any_sync(0xffffffffu, len > 64)) {
            place64((base & 31) + incl - all, code, (int)len, or_shared);
            if (RAW && all > len)
                hc_place((base & 31) + incl - all + len, hc_raw_field(mags[i]), HC_RAW_BITS,
                         or_shared);
            __syncwarp();
            base = hc_store_round<WORDS>(words, out, base, round, shared_to, lane);
            return;
        }
        if (lane == 0 && (base & 31)) or_global(base >> 5, words[0]);
        unsigned long long p = base + incl - all;
        if (len <= 64) {
            place64(p, code, (int)len, or_global);
            p += len;
        } else {
            pieces(r, v, pv, [&](unsigned int bits, int k) {
                hc_place(p, bits, k, or_global);
                p += k;
            });
        }
        if (RAW && all > len) hc_place(p, hc_raw_field(mags[i]), HC_RAW_BITS, or_global);
        base += round;
        shared_to = base >> 5;
        __syncwarp();
        for (int w = lane; w < WORDS; w += 32) words[w] = 0;
        __syncwarp();
    });
    if (lane == 0 && (base & 31)) or_global(base >> 5, words[0]);
}
#endif

// ----------------------------------------------------------------- coders/elias.py
// Elias gamma / delta / omega codes of v >= 1 (bits.py) in elias.py's two layouts, both a walk
// over a chunk's marked states, each with its distance d >= 1 from the previous mark (the
// first from one before the chunk start) and its state v:
//   run-length layout: marks are run ends (HC_LIST_RUN_END), item code(zigzag(v)), code(d);
//   gap layout: marks are non-zeros (HC_LIST_NONZERO), item code(d), sign bit, code(|v|).
// The writer codes d <= 2^30 (a chunk) and |v| <= 127: values below 2^31. The decoder reads
// what the CPU reads: values up to 2^41 (41-bit groups), with the same verdicts.
#define HC_CODER_ELIAS_GAMMA 6  // payload.CODERS: elias-gamma, elias-delta, elias-omega = 6..8
#define HC_ELIAS_GAMMA 0
#define HC_ELIAS_DELTA 1
#define HC_ELIAS_OMEGA 2

HC_HD uint32_t hc_zigzag(int v) { return v < 0 ? (uint32_t)(-2 * v) : (uint32_t)(2 * v + 1); }

HC_HD int hc_elias_len(int kind, uint64_t v) {
    int nb = hc_bitlen(v);
    if (kind == HC_ELIAS_GAMMA) return 2 * nb - 1;
    if (kind == HC_ELIAS_DELTA) return 2 * hc_bitlen((uint64_t)nb) - 1 + nb - 1;
    int len = 1;
    while (v > 1) {
        nb = hc_bitlen(v);
        len += nb;
        v = (uint64_t)(nb - 1);
    }
    return len;
}

// The code of 1 <= v < 2^32 as pieces in stream order: emit(bits, len), 1 <= len <= 32,
// bits < 2^len (bits = 0: zeros, which a zeroed buffer needs no placing for).
template <class Emit>
HC_HD void hc_elias_emit(int kind, uint64_t v, Emit emit) {
    const int nb = hc_bitlen(v);
    if (kind == HC_ELIAS_GAMMA) {
        if (nb > 1) emit(0u, nb - 1);
        emit((uint32_t)v, nb);
    } else if (kind == HC_ELIAS_DELTA) {
        const int lb = hc_bitlen((uint64_t)nb);
        if (lb > 1) emit(0u, lb - 1);
        emit((uint32_t)nb, lb);
        if (nb > 1) emit((uint32_t)(v & ((1ull << (nb - 1)) - 1)), nb - 1);
    } else {  // omega: groups v, bitlen(v) - 1, ... while > 1, emitted last first, then 0
        int k = 0;  // (each group recomputed from v: at most 4 of them, no array in memory)
        for (uint64_t g = v; g > 1; g = (uint64_t)(hc_bitlen(g) - 1)) ++k;
        while (k--) {
            uint64_t g = v;
            for (int i = 0; i < k; ++i) g = (uint64_t)(hc_bitlen(g) - 1);
            emit((uint32_t)g, hc_bitlen(g));
        }
        emit(0u, 1);
    }
}

HC_HD int hc_elias_item_len(int kind, int gap, int64_t d, int v) {
    if (gap) return hc_elias_len(kind, (uint64_t)d) + 1 + hc_elias_len(kind, v < 0 ? -v : v);
    return hc_elias_len(kind, hc_zigzag(v)) + hc_elias_len(kind, (uint64_t)d);
}

template <class Emit>
HC_HD void hc_elias_item(int kind, int gap, int64_t d, int v, Emit emit) {
    if (gap) {
        hc_elias_emit(kind, (uint64_t)d, emit);
        emit(v < 0 ? 1u : 0u, 1);
        hc_elias_emit(kind, (uint64_t)(v < 0 ? -v : v), emit);
    } else {
        hc_elias_emit(kind, hc_zigzag(v), emit);
        hc_elias_emit(kind, (uint64_t)d, emit);
    }
}

// The bits of the raw magnitudes (exact top-k) after an item: one per non-zero state it
// codes (the gap layout: its one state; the run-length layout: the d states of a run of a
// non-zero value).
HC_HD uint64_t hc_elias_raw_len(int gap, int64_t d, int v) {
    return v ? (uint64_t)HC_RAW_BITS * (gap ? 1 : d) : 0;
}

// The next k <= 41 bits of a reader, MSB first.
HC_HD uint64_t hc_take(HcReader& rd, int k) {
    uint64_t v = 0;
    if (k > 32) {
        rd.fill();
        v = rd.top(k - 32);
        rd.skip(k - 32);
        k = 32;
    }
    rd.fill();
    v = (v << k) | rd.top(k);
    rd.skip(k);
    return v;
}

// One Elias value at stream bit *bitpos of a chunk of `end` bits (bits.get_gamma, get_delta,
// get_omega, the same checks in the same order): HC_OK and *v, or the error.
HC_HD int hc_elias_gamma_get(HcReader& rd, uint64_t* bitpos, uint64_t end, int64_t* v) {
    int zeros = 0;
    for (;;) {
        if (*bitpos >= end) return HC_ERR_OVERRUN;
        rd.fill();
        const uint32_t w = rd.top(32);
        if (w == 0) {
            zeros += 32;
            rd.skip(32);
            *bitpos += 32;
            if (zeros > 40) return HC_ERR_VALUE;
            continue;
        }
        const int lz = 32 - hc_bitlen(w);
        zeros += lz;
        rd.skip(lz);
        *bitpos += lz;
        break;
    }
    if (zeros > 40) return HC_ERR_VALUE;
    const int nb = zeros + 1;
    if (*bitpos + nb > end) return HC_ERR_OVERRUN;
    *v = (int64_t)hc_take(rd, nb);
    *bitpos += nb;
    return HC_OK;
}

HC_HD int hc_elias_get(int kind, HcReader& rd, uint64_t* bitpos, uint64_t end, int64_t* v) {
    if (kind == HC_ELIAS_GAMMA) return hc_elias_gamma_get(rd, bitpos, end, v);
    if (kind == HC_ELIAS_DELTA) {
        int64_t nb;
        const int e = hc_elias_gamma_get(rd, bitpos, end, &nb);
        if (e != HC_OK) return e;
        if (nb > 41) return HC_ERR_VALUE;
        if (*bitpos + (uint64_t)(nb - 1) > end) return HC_ERR_OVERRUN;
        *v = (int64_t)((1ull << (nb - 1)) | hc_take(rd, (int)nb - 1));
        *bitpos += (uint64_t)(nb - 1);
        return HC_OK;
    }
    int64_t x = 1;
    for (;;) {
        if (*bitpos >= end) return HC_ERR_OVERRUN;
        rd.fill();
        if (rd.top(1) == 0) {
            rd.skip(1);
            *bitpos += 1;
            *v = x;
            return HC_OK;
        }
        const int64_t w = x + 1;  // a group of x + 1 bits, starting with the 1 just seen
        if (w > 41) return HC_ERR_VALUE;
        if (*bitpos + (uint64_t)w > end) return HC_ERR_OVERRUN;
        x = (int64_t)hc_take(rd, (int)w);
        *bitpos += (uint64_t)w;
    }
}

// One Elias chunk of either layout (elias._rl_decode / _gap_decode, the same verdicts):
// calls put(i, state) for its non-zero states (the caller's buffer is zeroed); RAW (exact
// top-k): put(i, state, raw), each non-zero state's raw magnitude read after its item (the
// run-length layout: a run's magnitudes one after another after the run's item).
template <bool RAW = false, class Put>
HC_HD int hc_elias_decode_chunk(const uint8_t* buf, uint64_t nbytes, uint64_t first_byte,
                                uint64_t nbits, int64_t start, int64_t end, int s, int kind,
                                int gap, Put put) {
    HcReader rd = {buf, nbytes, first_byte, 0, 0};
    uint64_t bitpos = 0;
    int64_t a, b;
    int e;
    if (!gap) {
        for (int64_t i = start; i < end; i += b) {
            if ((e = hc_elias_get(kind, rd, &bitpos, nbits, &a)) != HC_OK) return e;
            if ((e = hc_elias_get(kind, rd, &bitpos, nbits, &b)) != HC_OK) return e;
            const int64_t v = (a & 1) ? (a - 1) / 2 : -(a / 2);
            if (v < -s || v > s || i + b > end) return HC_ERR_VALUE;
            if (v)
                for (int64_t j = i; j < i + b; ++j) {
                    if constexpr (RAW) {
                        if (bitpos + HC_RAW_BITS > nbits) return HC_ERR_OVERRUN;
                        put(j, (int)v, rd.raw());
                        bitpos += HC_RAW_BITS;
                    } else {
                        put(j, (int)v);
                    }
                }
        }
        return bitpos != nbits ? HC_ERR_UNDERRUN : HC_OK;
    }
    int64_t i = start - 1;
    while (bitpos < nbits) {
        if ((e = hc_elias_get(kind, rd, &bitpos, nbits, &a)) != HC_OK) return e;
        i += a;
        if (i >= end || bitpos >= nbits) return HC_ERR_VALUE;
        rd.fill();
        const bool negative = rd.top(1) != 0;
        rd.skip(1);
        bitpos += 1;
        if ((e = hc_elias_get(kind, rd, &bitpos, nbits, &b)) != HC_OK) return e;
        if (b > s) return HC_ERR_VALUE;
        if constexpr (RAW) {
            if (bitpos + HC_RAW_BITS > nbits) return HC_ERR_OVERRUN;
            put(i, negative ? -(int)b : (int)b, rd.raw());
            bitpos += HC_RAW_BITS;
        } else {
            put(i, negative ? -(int)b : (int)b);
        }
    }
    return HC_OK;
}

// Which way a chunk decoder writes (its RAW template argument), for hc_decode_states.
template <bool RAW>
struct HcRaw {
    static constexpr bool value = RAW;
};

// A decode thread's chunk c: decode(HcRaw<RAW>(), put) runs the coder's chunk decoder with
// RAW = whether `raw` is given (exact top-k: states and raw magnitudes through an HcRawSink,
// whose verdict rejects an Inf/NaN magnitude; else put(i, v) stores states into o, zeroed),
// and reports its error.
template <class Decode>
HC_HD void hc_decode_states(long long c, signed char* o, uint32_t* raw, int* err,
                            Decode decode) {
    int e;
    if (raw) {
        HcRawSink sink = {o, raw, false};
        e = sink.verdict(decode(HcRaw<true>(), sink.put()));
    } else {
        e = decode(HcRaw<false>(), [o](int64_t i, int v) { o[i] = (signed char)v; });
    }
    if (e != HC_OK) hc_report(err, e, c);
}

// Thread c of cuda/elias.cu hc_elias_decode: chunk c (global numbering) of an Elias tensor
// (coders[t] = elias-gamma, -delta or -omega; gaps[t]: its layout) decoded into out from
// state_at[t] (zeroed), and with `raw` (exact top-k) the raw magnitudes into raw from
// state_at[t]; errors through hc_report.
HC_HD void hc_elias_decode_thread(long long c, const uint8_t* buf, uint64_t nbytes,
                                  const unsigned long long* chunk_byte,
                                  const unsigned long long* chunk_bits, const int* clog2,
                                  const long long* chunk_first, const long long* sizes,
                                  int count, int s,
                                  const uint8_t* coders, const uint8_t* gaps,
                                  const long long* state_at, signed char* out, uint32_t* raw,
                                  int* err) {
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    const int kind = (int)coders[k.t] - HC_CODER_ELIAS_GAMMA;
    if (kind < HC_ELIAS_GAMMA || kind > HC_ELIAS_OMEGA) return;  // another coder's tensor
    hc_decode_states(c, out + state_at[k.t], raw ? raw + state_at[k.t] : nullptr, err,
                     [&](auto tag, auto put) {
                         return hc_elias_decode_chunk<decltype(tag)::value>(
                             buf, nbytes, chunk_byte[c], chunk_bits[c], k.start, k.end, s,
                             kind, gaps[k.t], put);
                     });
}

// Thread c of cuda/shs.cu hc_shs_decode: chunk c (global numbering) of an SHS tensor
// (coders[t]; its decoder record dec[t * HC_DEC_INTS], levels s) decoded into out from
// state_at[t] (zeroed), and with `raw` (exact top-k) the raw magnitudes into raw from
// state_at[t]; errors through hc_report.
HC_HD void hc_shs_decode_thread(long long c, const uint8_t* buf, uint64_t nbytes,
                                const unsigned long long* chunk_byte,
                                const unsigned long long* chunk_bits, const int* clog2,
                                const long long* chunk_first, const long long* sizes,
                                int count, int s, const uint8_t* coders, const int32_t* dec,
                                const long long* state_at, signed char* out, uint32_t* raw,
                                int* err) {
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_SHS) return;  // another coder's tensor
    const int32_t* d = dec + (int64_t)k.t * HC_DEC_INTS;
    hc_decode_states(c, out + state_at[k.t], raw ? raw + state_at[k.t] : nullptr, err,
                     [&](auto tag, auto put) {
                         return hc_shs_decode_chunk<decltype(tag)::value>(
                             buf, nbytes, chunk_byte[c], chunk_bits[c], k.start, k.end, s, d,
                             put);
                     });
}

// Thread c of cuda/rlh.cu hc_rlh_decode: chunk c (global numbering) of an RLH tensor
// (coders[t]; its record dec[t * HC_RLH_DEC], its pairs pairs[pair_at[t] .. pair_at[t + 1]),
// levels s) decoded into out from state_at[t] (zeroed), and with `raw` (exact top-k) the raw
// magnitudes into raw from state_at[t]; errors through hc_report.
HC_HD void hc_rlh_decode_thread(long long c, const uint8_t* buf, uint64_t nbytes,
                                const unsigned long long* chunk_byte,
                                const unsigned long long* chunk_bits, const int* clog2,
                                const long long* chunk_first, const long long* sizes,
                                int count, int s, const uint8_t* coders, const int32_t* dec,
                                const long long* pair_at, const long long* pairs,
                                const long long* state_at, signed char* out, uint32_t* raw,
                                int* err) {
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_RLH) return;  // another coder's tensor
    const int32_t* d = dec + (int64_t)k.t * HC_RLH_DEC;
    const int64_t* pr = (const int64_t*)pairs + pair_at[k.t];
    const int64_t np = pair_at[k.t + 1] - pair_at[k.t];
    hc_decode_states(c, out + state_at[k.t], raw ? raw + state_at[k.t] : nullptr, err,
                     [&](auto tag, auto put) {
                         return hc_rlh_decode_chunk<decltype(tag)::value>(
                             buf, nbytes, chunk_byte[c], chunk_bits[c], k.start, k.end, s, d,
                             pr, np, put);
                     });
}

// Element i of tensor t's states (decoded by a coder other than huffman) added to the
// float64 accumulator as the host sums: acc += its value (zeros too).
HC_HD void hc_add_state_at(const signed char* states, long long at, long long i,
                           const double* value, double* acc) {
    acc[at + i] += value[states[at + i]];
}

// Exact top-k's huffman chunks (cuda/huffman.cu hc_huffman_decode_raw): thread c decodes
// chunk c (global numbering) of one payload's huffman tensor t (coders[t]; its decoder
// dec[t * HC_DEC_INTS], levels s) into the zeroed state buffer and the raw magnitudes beside
// it, both from state_at[t]; errors through hc_report.
HC_HD void hc_huffman_decode_raw_thread(long long c, const uint8_t* buf, uint64_t nbytes,
                                        const unsigned long long* chunk_byte,
                                        const unsigned long long* chunk_bits, const int* clog2,
                                        const long long* chunk_first, const long long* sizes,
                                        int count, int s, const uint8_t* coders,
                                        const int32_t* dec, const long long* state_at,
                                        signed char* out, uint32_t* raw, int* err) {
    if (c >= chunk_first[count]) return;
    const HcChunk k = hc_chunk(c, chunk_first, count, clog2, sizes);
    if (coders[k.t] != HC_CODER_HUFFMAN) return;  // another coder's tensor
    HcRawSink sink = {out + state_at[k.t] + k.start, raw + state_at[k.t] + k.start, false};
    uint64_t used = 0;
    int e = hc_huffman_decode_run<true>(
        buf, nbytes, chunk_byte[c], chunk_bits[c], &used, k.end - k.start,
        dec + (int64_t)k.t * HC_DEC_INTS,
        [&sink, s](int64_t j, int sym, uint32_t r) {
            if (sym != s) sink(j, sym - s, r);
        },
        s);
    if (e == HC_OK && used != chunk_bits[c]) e = HC_ERR_UNDERRUN;
    e = sink.verdict(e);
    if (e != HC_OK) hc_report(err, e, c);
}

// Exact top-k's value of a decoded state (its raw magnitude, read only for a non-zero state)
// in the tensor's dtype, as a double: sign(state) * float32(raw) (quantizers.dequantize);
// NaN for a NaN scale (a tensor that held NaN/Inf).
HC_HD double hc_raw_value(int state, uint32_t raw, float scale, int dtype) {
    if (scale != scale) return (double)hc_float_of_bits(0x7fc00000u);
    if (!state) return 0.0;
    double v = (double)hc_float_of_bits(raw);
    if (state < 0) v = -v;
    return dtype == 1 ? hc_round_to_half(v) : v;  // float32 and float64 hold it exactly
}

// Element i of tensor t (exact top-k, decoded into the state and raw buffers) added to the
// float64 accumulator as the host sums: acc += its value (zeros too).
HC_HD void hc_add_raw_state_at(const signed char* states, const uint32_t* raw, long long at,
                               long long i, float scale, int dtype, double* acc) {
    const int v = states[at + i];
    acc[at + i] += hc_raw_value(v, v ? raw[at + i] : 0u, scale, dtype);
}

// Element i of tensor t quantized in buckets of 2^blog2 (scales: the tensor's, one per
// bucket), its state from the state buffer (which[t] 1) or its huffman symbol (2), added to
// the accumulator: state * scale / s in its dtype (quantizers.dequantize with buckets).
HC_HD void hc_add_bucket_state_at(const signed char* states, const uint8_t* symbols, int t,
                                  long long i, const long long* state_at,
                                  const long long* sym_offsets, const uint8_t* which,
                                  const float* scales, int blog2, int s, int dtype,
                                  double* acc) {
    const int state = which[t] == 2 ? (int)symbols[sym_offsets[t] + i] - s
                                    : (int)states[state_at[t] + i];
    acc[state_at[t] + i] += hc_state_value(state, (double)scales[i >> blog2], s, dtype,
                                           HC_FP_LINEAR);
}
