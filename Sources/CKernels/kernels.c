// Run-time dispatch between the portable, AVX2 (+FMA, F16C) and AVX-512 versions of the kernels in
// linear_body.h. The file is compiled for the baseline CPU; each version enables its instruction set with a
// function attribute, so one binary runs everywhere and uses what the CPU has.
#include "moepress_kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define MPK_X86 1
#include <immintrin.h>
#endif

// A per-thread scratch buffer of at least `floats` floats, 64-byte aligned, kept for the thread's life.
static float *mpk_scratch(size_t floats) {
    static _Thread_local float *buf = NULL;
    static _Thread_local size_t cap = 0;
    if (floats > cap) {
        free(buf);
        size_t bytes = (floats * 4 + 63) / 64 * 64;
        buf = aligned_alloc(64, bytes);
        if (!buf) abort();
        cap = bytes / 4;
    }
    return buf;
}

// ---------------------------------------------------------------------------------------------------------
// Portable: 16 lanes in an array, fmaf (correctly rounded, so identical to the hardware FMA).

typedef struct { float v[16]; } mpk_p16;

static inline mpk_p16 p_zero(void) { mpk_p16 r; for (int i = 0; i < 16; i++) r.v[i] = 0; return r; }
static inline mpk_p16 p_loadf(const float *p) { mpk_p16 r; memcpy(r.v, p, 64); return r; }
static inline mpk_p16 p_loadf_n(const float *p, long n) { mpk_p16 r = p_zero(); memcpy(r.v, p, (size_t)n * 4); return r; }
static inline float p_bf16(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline float p_f16(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, u;
    if (exp == 0x1F) {
        u = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {  // subnormal: normalise
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FF) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline mpk_p16 p_load_bf16(const uint16_t *p) { mpk_p16 r; for (int i = 0; i < 16; i++) r.v[i] = p_bf16(p[i]); return r; }
static inline mpk_p16 p_load_f16(const uint16_t *p) { mpk_p16 r; for (int i = 0; i < 16; i++) r.v[i] = p_f16(p[i]); return r; }
static inline mpk_p16 p_fma(mpk_p16 a, mpk_p16 b, mpk_p16 c) { for (int i = 0; i < 16; i++) c.v[i] = fmaf(a.v[i], b.v[i], c.v[i]); return c; }
static inline float p_hsum(mpk_p16 a) {
    float s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) s8[i] = a.v[i] + a.v[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}
static inline void p_storef(float *p, mpk_p16 a) { memcpy(p, a.v, 64); }

#define SUFFIX portable
#define TARGET
#define V mpk_p16
#define v_zero p_zero
#define v_loadf p_loadf
#define v_loadf_n p_loadf_n
#define v_load_bf16 p_load_bf16
#define v_load_f16 p_load_f16
#define v_fma p_fma
#define v_hsum p_hsum
#define v_storef p_storef
#define MAXMR 1
#define NR_ONE 1
#define NR_MANY 1
#include "linear_body.h"

#ifdef MPK_X86
// ---------------------------------------------------------------------------------------------------------
// AVX2 + FMA + F16C: a 16-lane vector is two ymm registers (lanes 0–7, 8–15).

#define T2 __attribute__((target("avx2,fma,f16c")))
typedef struct { __m256 lo, hi; } mpk_a16;

static inline T2 __m256i a_mask(long n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}
static inline T2 mpk_a16 a_zero(void) { mpk_a16 r = {_mm256_setzero_ps(), _mm256_setzero_ps()}; return r; }
static inline T2 mpk_a16 a_loadf(const float *p) { mpk_a16 r = {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; return r; }
static inline T2 mpk_a16 a_loadf_n(const float *p, long n) {
    mpk_a16 r = {_mm256_maskload_ps(p, a_mask(n)), n > 8 ? _mm256_maskload_ps(p + 8, a_mask(n - 8)) : _mm256_setzero_ps()};
    return r;
}
static inline T2 __m256 a_bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
static inline T2 mpk_a16 a_load_bf16(const uint16_t *p) { mpk_a16 r = {a_bf16x8(p), a_bf16x8(p + 8)}; return r; }
static inline T2 mpk_a16 a_load_f16(const uint16_t *p) {
    mpk_a16 r = {_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)))};
    return r;
}
static inline T2 mpk_a16 a_fma(mpk_a16 a, mpk_a16 b, mpk_a16 c) {
    mpk_a16 r = {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
    return r;
}
static inline T2 float a_hsum8(__m256 s8) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
static inline T2 float a_hsum(mpk_a16 a) { return a_hsum8(_mm256_add_ps(a.lo, a.hi)); }
static inline T2 void a_storef(float *p, mpk_a16 a) { _mm256_storeu_ps(p, a.lo); _mm256_storeu_ps(p + 8, a.hi); }

#define SUFFIX avx2
#define TARGET T2
#define V mpk_a16
#define v_zero a_zero
#define v_loadf a_loadf
#define v_loadf_n a_loadf_n
#define v_load_bf16 a_load_bf16
#define v_load_f16 a_load_f16
#define v_fma a_fma
#define v_hsum a_hsum
#define v_storef a_storef
#define MAXMR 2
#define NR_ONE 4
#define NR_MANY 2
#include "linear_body.h"

// ---------------------------------------------------------------------------------------------------------
// AVX-512 (F, BW, VL, DQ): a 16-lane vector is one zmm register.

#define T5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

static inline T5 __m512 z_zero(void) { return _mm512_setzero_ps(); }
static inline T5 __m512 z_loadf(const float *p) { return _mm512_loadu_ps(p); }
static inline T5 __m512 z_loadf_n(const float *p, long n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p); }
static inline T5 __m512 z_load_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline T5 __m512 z_load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline T5 __m512 z_fma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
static inline T5 float z_hsum(__m512 a) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
static inline T5 void z_storef(float *p, __m512 a) { _mm512_storeu_ps(p, a); }

#define SUFFIX avx512
#define TARGET T5
#define V __m512
#define v_zero z_zero
#define v_loadf z_loadf
#define v_loadf_n z_loadf_n
#define v_load_bf16 z_load_bf16
#define v_load_f16 z_load_f16
#define v_fma z_fma
#define v_hsum z_hsum
#define v_storef z_storef
#define MAXMR 4
#define NR_ONE 8
#define NR_MANY 4
#include "linear_body.h"
#endif

// ---------------------------------------------------------------------------------------------------------
// Dispatch.

static _Atomic int mpk_current = -1;

int mpk_isa_supported(int isa) {
    switch (isa) {
    case MPK_ISA_PORTABLE: return 1;
#ifdef MPK_X86
    case MPK_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case MPK_ISA_AVX512:
        __builtin_cpu_init();
        return mpk_isa_supported(MPK_ISA_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    default: return 0;
    }
}

int mpk_isa_best(void) {
    for (int isa = MPK_ISA_AVX512; isa > MPK_ISA_PORTABLE; isa--)
        if (mpk_isa_supported(isa)) return isa;
    return MPK_ISA_PORTABLE;
}

int mpk_isa(void) {
    int isa = atomic_load_explicit(&mpk_current, memory_order_relaxed);
    if (isa < 0) {
        isa = mpk_isa_best();
        atomic_store_explicit(&mpk_current, isa, memory_order_relaxed);
    }
    return isa;
}

int mpk_set_isa(int isa) {
    if (!mpk_isa_supported(isa)) return -1;
    atomic_store_explicit(&mpk_current, isa, memory_order_relaxed);
    return 0;
}

void mpk_linear(int wtype, const float *x, long m, long ldx, const void *w, long n, long ldw, long k, float *y, long ldy,
                int accumulate) {
    if (m <= 0 || n <= 0) return;
    switch (mpk_isa()) {
#ifdef MPK_X86
    case MPK_ISA_AVX512: linear_avx512(wtype, x, m, ldx, w, n, ldw, k, y, ldy, accumulate); return;
    case MPK_ISA_AVX2: linear_avx2(wtype, x, m, ldx, w, n, ldw, k, y, ldy, accumulate); return;
#endif
    default: linear_portable(wtype, x, m, ldx, w, n, ldw, k, y, ldy, accumulate); return;
    }
}

void mpk_to_f32(int wtype, const void *src, long count, float *dst) {
    if (count <= 0) return;
    switch (mpk_isa()) {
#ifdef MPK_X86
    case MPK_ISA_AVX512: widen_avx512(wtype, src, count, dst); return;
    case MPK_ISA_AVX2: widen_avx2(wtype, src, count, dst); return;
#endif
    default: widen_portable(wtype, src, count, dst); return;
    }
}

// FP4 (e2m1) codes as values: MXFP4's element type.
static const float mxfp4_values[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                       -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// 2^(e − 127) for a biased 8-bit exponent, as an f32 (e = 0 gives the subnormal 2^−127; 255 gives +inf, as
// transformers' ldexp does in bf16).
static inline float mxfp4_scale(uint8_t e) {
    union { uint32_t u; float f; } v;
    if (e == 0) v.u = 0x00400000u;
    else if (e == 255) v.u = 0x7f800000u;
    else v.u = (uint32_t)e << 23;
    return v.f;
}

static void mxfp4_portable(const uint8_t *blocks, const uint8_t *scales, long first, long count, float *dst) {
    for (long i = 0; i < count; i++) {
        const long j = first + i;
        const uint8_t b = blocks[j >> 1];
        const int code = (j & 1) ? (b >> 4) : (b & 0x0F);
        dst[i] = mxfp4_values[code] * mxfp4_scale(scales[j >> 5]);
    }
}

#ifdef MPK_X86
// Whole blocks of 32 at a time: the 16 code bytes split into nibbles (low = even element), the magnitude looked up
// in an 8-entry table by permute, the sign bit set from bit 3, times the block's power of two (exact, as above).
__attribute__((target("avx2,fma"))) static void mxfp4_avx2(const uint8_t *blocks, const uint8_t *scales, long first, long count,
                                                           float *dst) {
    long head = (32 - first % 32) % 32;
    if (head > count) head = count;
    mxfp4_portable(blocks, scales, first, head, dst);
    first += head; dst += head; count -= head;
    const __m256 mags = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    while (count >= 32) {
        const __m128i b = _mm_loadu_si128((const __m128i *)(blocks + (first >> 1)));
        const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
        const __m128i codes[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
        const __m256 scale = _mm256_set1_ps(mxfp4_scale(scales[first >> 5]));
        for (int h = 0; h < 2; h++) {
            for (int q = 0; q < 2; q++) {
                const __m256i c = _mm256_cvtepu8_epi32(q ? _mm_srli_si128(codes[h], 8) : codes[h]);
                const __m256 mag = _mm256_permutevar8x32_ps(mags, _mm256_and_si256(c, _mm256_set1_epi32(7)));
                const __m256 sign = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(8)), 28));
                _mm256_storeu_ps(dst + 16 * h + 8 * q, _mm256_mul_ps(_mm256_or_ps(mag, sign), scale));
            }
        }
        first += 32; dst += 32; count -= 32;
    }
    mxfp4_portable(blocks, scales, first, count, dst);
}
#endif

void mpk_mxfp4_to_f32(const uint8_t *blocks, const uint8_t *scales, long first, long count, float *dst) {
    if (count <= 0) return;
#ifdef MPK_X86
    if (mpk_isa() >= MPK_ISA_AVX2) { mxfp4_avx2(blocks, scales, first, count, dst); return; }
#endif
    mxfp4_portable(blocks, scales, first, count, dst);
}
