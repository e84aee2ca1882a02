// The batch-invariant product y = x · Wᵀ for one instruction set. kernels.c includes this file once per
// instruction set, after defining (this file undefines them at its end):
//   SUFFIX            name suffix of the functions defined here
//   TARGET            the function attribute that enables the instruction set
//   V                 a 16-lane f32 vector
//   v_zero() v_loadf(p) v_loadf_n(p, n) v_load_bf16(p) v_load_f16(p) v_fma(a, b, c) v_hsum(v)
//                     (v_loadf_n: the first n < 16 floats, the other lanes zero; v_fma: a·b + c, one rounding;
//                     v_hsum: the fixed pairwise tree of moepress_kernels.h)
//   MAXMR             most rows of x in one tile
//   NR_ONE            W rows per tile when x has one row (decode)
//   NR_MANY           W rows per tile otherwise
// Every tile computes each output as the same sequence of operations, so the tiling below (which depends
// on m, n and the instruction set) never changes a result.

#define CAT2_(a, b) a##_##b
#define CAT_(a, b) CAT2_(a, b)
#define FN(name) CAT_(name, SUFFIX)
#define ALWAYS static inline __attribute__((always_inline)) TARGET

// Sixteen weights starting at element `off` of a row, widened to f32.
ALWAYS V FN(load_w)(const int wt, const void *w, long off) {
    if (wt == MPK_BF16) return v_load_bf16((const uint16_t *)w + off);
    if (wt == MPK_F16) return v_load_f16((const uint16_t *)w + off);
    return v_loadf((const float *)w + off);
}

// The first n < 16 weights at `off`, the rest zero.
ALWAYS V FN(load_w_n)(const int wt, const void *w, long off, long n) {
    if (wt == MPK_F32) return v_loadf_n((const float *)w + off, n);
    uint16_t tmp[16] = {0};
    memcpy(tmp, (const uint16_t *)w + off, (size_t)n * 2);
    return wt == MPK_BF16 ? v_load_bf16(tmp) : v_load_f16(tmp);
}

ALWAYS const void *FN(wrow)(const int wt, const void *w, long row, long ldw) {
    return (const char *)w + (size_t)row * (size_t)ldw * (wt == MPK_F32 ? 4 : 2);
}

// An MR × NR block of outputs: rows x[0..MR) against weight rows w[0..NR).
ALWAYS void FN(tile)(const int wt, const int MR, const int NR, const float *x, long ldx, const void *w, long ldw, long k,
                     float *y, long ldy, int accumulate) {
    V acc[MAXMR][NR_ONE > NR_MANY ? NR_ONE : NR_MANY];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NR; c++) acc[r][c] = v_zero();
    const void *wr[NR_ONE > NR_MANY ? NR_ONE : NR_MANY];
    for (int c = 0; c < NR; c++) wr[c] = FN(wrow)(wt, w, c, ldw);
    const long steps = k / 16, tail = k % 16;
    for (long s = 0; s < steps; s++) {
        V xv[MAXMR];
        for (int r = 0; r < MR; r++) xv[r] = v_loadf(x + r * ldx + 16 * s);
        for (int c = 0; c < NR; c++) {
            const V wv = FN(load_w)(wt, wr[c], 16 * s);
            for (int r = 0; r < MR; r++) acc[r][c] = v_fma(xv[r], wv, acc[r][c]);
        }
    }
    if (tail) {
        V xv[MAXMR];
        for (int r = 0; r < MR; r++) xv[r] = v_loadf_n(x + r * ldx + 16 * steps, tail);
        for (int c = 0; c < NR; c++) {
            const V wv = FN(load_w_n)(wt, wr[c], 16 * steps, tail);
            for (int r = 0; r < MR; r++) acc[r][c] = v_fma(xv[r], wv, acc[r][c]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NR; c++) {
            const float s = v_hsum(acc[r][c]);
            float *p = y + r * ldy + c;
            *p = accumulate ? *p + s : s;
        }
}

// Rows x[0..MR) against every weight row, NR at a time, then one at a time.
ALWAYS void FN(cols)(const int wt, const int MR, const int NR, const float *x, long ldx, const void *w, long n, long ldw,
                     long k, float *y, long ldy, int accumulate) {
    long j = 0;
    for (; j + NR <= n; j += NR) FN(tile)(wt, MR, NR, x, ldx, FN(wrow)(wt, w, j, ldw), ldw, k, y + j, ldy, accumulate);
    for (; j < n; j++) FN(tile)(wt, MR, 1, x, ldx, FN(wrow)(wt, w, j, ldw), ldw, k, y + j, ldy, accumulate);
}

// All m rows (in blocks of up to MAXMR) against weight rows w[0..n).
ALWAYS void FN(rows)(const int wt, const float *x, long m, long ldx, const void *w, long n, long ldw, long k, float *y,
                     long ldy, int accumulate) {
    for (long i = 0; i < m;) {
        const long mr = m - i >= MAXMR ? MAXMR : m - i;
        const float *xi = x + i * ldx;
        float *yi = y + i * ldy;
        switch (mr) {
        case 1: FN(cols)(wt, 1, NR_ONE, xi, ldx, w, n, ldw, k, yi, ldy, accumulate); break;
#if MAXMR >= 2
        case 2: FN(cols)(wt, 2, NR_MANY, xi, ldx, w, n, ldw, k, yi, ldy, accumulate); break;
#endif
#if MAXMR >= 3
        case 3: FN(cols)(wt, 3, NR_MANY, xi, ldx, w, n, ldw, k, yi, ldy, accumulate); break;
#endif
#if MAXMR >= 4
        case 4: FN(cols)(wt, 4, NR_MANY, xi, ldx, w, n, ldw, k, yi, ldy, accumulate); break;
#endif
        default: break;
        }
        i += mr;
    }
}

static TARGET void FN(widen)(const int wt, const void *src, long count, float *dst) {
    long i = 0;
    if (wt == MPK_BF16) {
        for (; i + 16 <= count; i += 16) v_storef(dst + i, v_load_bf16((const uint16_t *)src + i));
    } else if (wt == MPK_F16) {
        for (; i + 16 <= count; i += 16) v_storef(dst + i, v_load_f16((const uint16_t *)src + i));
    } else {
        memcpy(dst, src, (size_t)count * 4);
        return;
    }
    if (i < count) {
        float tmp[16];
        v_storef(tmp, FN(load_w_n)(wt, src, i, count - i));
        memcpy(dst + i, tmp, (size_t)(count - i) * 4);
    }
}

// Few rows (decode, lightly used experts): weights widened in registers, each read once per block of
// MAXMR rows. More rows: blocks of weight rows are widened once into an f32 panel (k padded with zeros
// to a multiple of 16; exact, so the arithmetic is unchanged) that every block of rows then reuses.
static TARGET void FN(linear)(int wt, const float *x, long m, long ldx, const void *w, long n, long ldw, long k,
                              float *y, long ldy, int accumulate) {
    if (m <= MAXMR) {
        switch (wt) {
        case MPK_BF16: FN(rows)(MPK_BF16, x, m, ldx, w, n, ldw, k, y, ldy, accumulate); break;
        case MPK_F16: FN(rows)(MPK_F16, x, m, ldx, w, n, ldw, k, y, ldy, accumulate); break;
        default: FN(rows)(MPK_F32, x, m, ldx, w, n, ldw, k, y, ldy, accumulate); break;
        }
        return;
    }
    const long kp = (k + 15) / 16 * 16;
    long nb = (256 * 1024) / (kp * 4);
    nb = nb / NR_MANY * NR_MANY;
    if (nb < NR_MANY) nb = NR_MANY;
    if (nb > 64) nb = 64;
    float *panel = mpk_scratch((size_t)(nb * kp));
    for (long j0 = 0; j0 < n; j0 += nb) {
        const long rows = n - j0 < nb ? n - j0 : nb;
        for (long r = 0; r < rows; r++) {
            float *dst = panel + r * kp;
            FN(widen)(wt, FN(wrow)(wt, w, j0 + r, ldw), k, dst);
            for (long t = k; t < kp; t++) dst[t] = 0;
        }
        FN(rows)(MPK_F32, x, m, ldx, panel, rows, kp, k, y + j0, ldy, accumulate);
    }
}

#undef FN
#undef ALWAYS
#undef CAT_
#undef CAT2_
// The instruction set's parameters, so the next inclusion defines its own.
#undef SUFFIX
#undef TARGET
#undef V
#undef v_zero
#undef v_loadf
#undef v_loadf_n
#undef v_load_bf16
#undef v_load_f16
#undef v_fma
#undef v_hsum
#undef v_storef
#undef MAXMR
#undef NR_ONE
#undef NR_MANY
