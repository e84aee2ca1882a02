#ifndef MOEPRESS_KERNELS_H
#define MOEPRESS_KERNELS_H
// MoEPress's own numeric kernels: products with weights read in the dtype they are stored in (bf16, f16),
// which no BLAS offers, with run-time dispatch between instruction sets.
//
// Every output element is computed the same way whatever the number of rows, the instruction set or the
// split of the work across threads ("batch invariance"): sixteen partial sums, lane l taking the products
// of k ≡ l (mod 16), accumulated with fused multiply-adds in increasing k (a zero-padded last step when k
// is not a multiple of 16), then added pairwise in a fixed tree (lanes i + i⊕8, then i + i⊕4, i + i⊕2,
// i + i⊕1). So a token's logits do not depend on which other tokens share its batch, and the AVX2,
// AVX-512 and portable paths agree to the last bit.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Storage types of weight matrices.
enum { MPK_F32 = 0, MPK_F16 = 1, MPK_BF16 = 2 };

/// Instruction sets, in increasing order.
enum { MPK_ISA_PORTABLE = 0, MPK_ISA_AVX2 = 1, MPK_ISA_AVX512 = 2 };

/// Whether this CPU (and OS) can run `isa`.
int mpk_isa_supported(int isa);
/// The best instruction set this machine supports.
int mpk_isa_best(void);
/// The instruction set in use (the best supported unless set).
int mpk_isa(void);
/// Uses `isa` from now on; returns 0, or -1 (and changes nothing) when the machine cannot run it.
int mpk_set_isa(int isa);

/// y[i·ldy + j] = (accumulate ? y[i·ldy + j] : 0) + Σ_k x[i·ldx + k] · w[j·ldw + k], for i < m, j < n.
/// x is f32 [m, k]; w is [n, k] in `wtype` (ldw in elements). Single-threaded: callers split n.
void mpk_linear(int wtype, const float *x, long m, long ldx, const void *w, long n, long ldw, long k,
                float *y, long ldy, int accumulate);

/// dst[i] = src[i] widened to f32, for `count` elements of `wtype` (exact).
void mpk_to_f32(int wtype, const void *src, long count, float *dst);

/// dst[i] = element first + i of one MXFP4 row (OCP microscaling FP4, as gpt-oss stores its experts): element j
/// is the FP4 code in the low (j even) or high (j odd) nibble of blocks[j / 2], times 2^(scales[j / 32] − 127).
/// Exact in f32.
void mpk_mxfp4_to_f32(const uint8_t *blocks, const uint8_t *scales, long first, long count, float *dst);

#ifdef __cplusplus
}
#endif
#endif
