/*
 * Single-precision GEMM on gpfq's own AVX-512 kernel, or on OpenBLAS; and a transpose.
 *
 * OpenBLAS picks its kernel when it is loaded, and OPENBLAS_CORETYPE can force an older one:
 * with Haswell's (AVX2) on an AVX-512 CPU, a 256 x 500 x 784 product ran at 124 GFLOP/s on
 * one core here, where this file's kernel runs at about 210. The layout is the usual one for
 * such kernels: C is computed in blocks of MR x NR = 12 x 32 (24 accumulators of 16 floats),
 * over K in steps of KC; op(B) is packed per KC x NC panel into strips of NR columns, op(A)
 * per MC x KC block into strips of MR rows, k-major, zero-padded, so that the kernel always
 * runs whole blocks and masks only its stores.
 *
 * Every element of C is summed in the same order (k ascending within a KC step, the steps in
 * order) whatever its place in a block, and nothing depends on a thread count: the results
 * are a function of the operands alone.
 */
#include "gpfq/ops.h"
#include "gpfq/status.h"

#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MR = 12, NR = 32, KC = 256, MC = 96, NC = 1024 };

static gpfq_gemm_kernel chosen = GPFQ_GEMM_AUTO;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static gpfq_gemm_kernel best_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? GPFQ_GEMM_AVX512 : GPFQ_GEMM_OPENBLAS;
}

static void choose_from_env(void) {
    const char *v = getenv("GPFQ_GEMM");
    gpfq_gemm_kernel best = best_supported();
    chosen = best;
    if (!v || !*v || strcmp(v, "auto") == 0) return;
    if (strcmp(v, "openblas") == 0) {
        chosen = GPFQ_GEMM_OPENBLAS;
    } else if (strcmp(v, "avx512") == 0) {
        if (best != GPFQ_GEMM_AVX512)
            fprintf(stderr, "gpfq: warning: GPFQ_GEMM=avx512: this CPU lacks it; using %s\n",
                    gpfq_gemm_kernel_name(chosen));
    } else {
        fprintf(stderr, "gpfq: warning: GPFQ_GEMM='%s' is not auto, openblas or avx512; using %s\n",
                v, gpfq_gemm_kernel_name(chosen));
    }
}

gpfq_gemm_kernel gpfq_gemm_get_kernel(void) {
    pthread_once(&chosen_once, choose_from_env);
    return chosen;
}

gpfq_gemm_kernel gpfq_gemm_set_kernel(gpfq_gemm_kernel kernel) {
    gpfq_gemm_kernel before = gpfq_gemm_get_kernel();
    gpfq_gemm_kernel best = best_supported();
    chosen = kernel == GPFQ_GEMM_AUTO || kernel > best ? best : kernel;
    return before;
}

const char *gpfq_gemm_kernel_name(gpfq_gemm_kernel kernel) {
    switch (kernel) {
    case GPFQ_GEMM_OPENBLAS:
        return "openblas";
    case GPFQ_GEMM_AVX512:
        return "avx512";
    default:
        return "auto";
    }
}

/* The two masks of a row of w <= 32 floats. */
static inline void row_masks(size_t w, __mmask16 *m0, __mmask16 *m1) {
    *m0 = w >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << w) - 1);
    *m1 = w >= 32 ? (__mmask16)0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
}

/* r[i] (16 rows of 16) becomes its transpose. */
__attribute__((target("avx512f"), always_inline)) static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    /* r[4 i + q], 128-bit lane L: column 4 L + q of rows 4 i .. 4 i + 3 */
    for (int q = 0; q < 4; q++) {
        t[q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x88);          /* lanes 0, 2 */
        t[4 + q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xDD);      /* lanes 1, 3 */
        t[8 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x88); /* lanes 0, 2 */
        t[12 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xDD);
    }
    /* t[q] lanes: col q (rows 0-3), col 8+q (rows 0-3), col q (rows 4-7), col 8+q (rows 4-7) */
    for (int q = 0; q < 4; q++) {
        r[q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88);
        r[8 + q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0xDD);
        r[4 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0x88);
        r[12 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0xDD);
    }
}

/* Writes the transpose of the h x w (<= 16 x 16) block at src (row stride lds) into rows of
 * `width` floats at dst (stride ldd): dst[c * ldd + r] = src[r * lds + c] for r < h, c < w;
 * rows c < w get zeros past h up to `width` (<= 16). */
__attribute__((target("avx512f"))) static void transpose_block(const float *src, size_t lds,
                                                               size_t h, size_t w, float *dst,
                                                               size_t ldd, size_t width) {
    __m512 r[16];
    const __mmask16 cols = w >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << w) - 1);
    for (size_t i = 0; i < 16; i++)
        r[i] = i < h ? _mm512_maskz_loadu_ps(cols, src + i * lds) : _mm512_setzero_ps();
    transpose16(r);
    const __mmask16 out = width >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << width) - 1);
    for (size_t c = 0; c < w; c++) _mm512_mask_storeu_ps(dst + c * ldd, out, r[c]);
}

/* op(B)[k0 .. k0+kc, j0 .. j0+nc] into strips of NR columns: strip s holds kc rows of NR. */
__attribute__((target("avx512f"))) static void pack_b(int trans, const float *B, size_t ldb,
                                                      size_t k0, size_t kc, size_t j0, size_t nc,
                                                      float *Bp) {
    for (size_t js = 0; js < nc; js += NR) {
        const size_t w = nc - js < NR ? nc - js : NR;
        float *dst = Bp + js * kc;
        if (!trans) { /* B is K x N: rows of op(B) are rows of B */
            __mmask16 m0, m1;
            row_masks(w, &m0, &m1);
            for (size_t k = 0; k < kc; k++) {
                const float *src = B + (k0 + k) * ldb + j0 + js;
                _mm512_storeu_ps(dst + k * NR, _mm512_maskz_loadu_ps(m0, src));
                /* (src + 16 may lie past B's end when the strip is narrower: not formed then) */
                _mm512_storeu_ps(dst + k * NR + 16,
                                 m1 ? _mm512_maskz_loadu_ps(m1, src + 16) : _mm512_setzero_ps());
            }
            continue;
        }
        /* B is N x K: column j of op(B) is row j of B; 16 x 16 blocks, transposed */
        for (size_t half = 0; half < NR; half += 16) {
            const size_t h = w > half ? (w - half < 16 ? w - half : 16) : 0;
            for (size_t k = 0; k < kc; k += 16) {
                const size_t kw = kc - k < 16 ? kc - k : 16;
                if (h == 0) {
                    for (size_t c = 0; c < kw; c++)
                        _mm512_storeu_ps(dst + (k + c) * NR + half, _mm512_setzero_ps());
                    continue;
                }
                transpose_block(B + (j0 + js + half) * ldb + k0 + k, ldb, h, kw,
                                dst + k * NR + half, NR, 16);
            }
        }
    }
}

/* op(A)[i0 .. i0+mc, k0 .. k0+kc] into strips of MR rows: strip s holds kc columns of MR. */
__attribute__((target("avx512f"))) static void pack_a(int trans, const float *A, size_t lda,
                                                      size_t i0, size_t mc, size_t k0, size_t kc,
                                                      float *Ap) {
    for (size_t is = 0; is < mc; is += MR) {
        const size_t h = mc - is < MR ? mc - is : MR;
        float *dst = Ap + is * kc;
        if (trans) { /* A is K x M: column k of the strip is part of row k of A */
            const __mmask16 m = (__mmask16)((1u << h) - 1);
            for (size_t k = 0; k < kc; k++) {
                const __m512 v = _mm512_maskz_loadu_ps(m, A + (k0 + k) * lda + i0 + is);
                _mm512_mask_storeu_ps(dst + k * MR, (__mmask16)((1u << MR) - 1), v);
            }
            continue;
        }
        /* A is M x K: h rows of kc, transposed 16 columns at a time */
        for (size_t k = 0; k < kc; k += 16) {
            const size_t kw = kc - k < 16 ? kc - k : 16;
            transpose_block(A + (i0 + is) * lda + k0 + k, lda, h, kw, dst + k * MR, MR, MR);
        }
    }
}

/* C (h x w of a 12 x 32 block, stride ldc) = alpha Ap Bp + beta C; beta 0: C is not read. */
__attribute__((target("avx512f"))) static void kernel_12x32(size_t kc, const float *Ap,
                                                            const float *Bp, float *C, size_t ldc,
                                                            size_t h, size_t w, float alpha,
                                                            float beta) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    __m512 c60 = c00, c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00;
    __m512 c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;
    for (size_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_loadu_ps(Bp + k * NR), b1 = _mm512_loadu_ps(Bp + k * NR + 16);
        const float *a = Ap + k * MR;
        __m512 x;
#define ROW(i, lo, hi)                                                                             \
    x = _mm512_set1_ps(a[i]);                                                                      \
    lo = _mm512_fmadd_ps(x, b0, lo);                                                               \
    hi = _mm512_fmadd_ps(x, b1, hi);
        ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21) ROW(3, c30, c31);
        ROW(4, c40, c41) ROW(5, c50, c51) ROW(6, c60, c61) ROW(7, c70, c71);
        ROW(8, c80, c81) ROW(9, c90, c91) ROW(10, ca0, ca1) ROW(11, cb0, cb1);
#undef ROW
    }
    const __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                               {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71},
                               {c80, c81}, {c90, c91}, {ca0, ca1}, {cb0, cb1}};
    __mmask16 m0, m1;
    row_masks(w, &m0, &m1);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (size_t r = 0; r < h; r++) {
        float *row = C + r * ldc;
        __m512 lo = _mm512_mul_ps(va, acc[r][0]), hi = _mm512_mul_ps(va, acc[r][1]);
        if (beta != 0.0f) lo = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), lo);
        _mm512_mask_storeu_ps(row, m0, lo);
        if (!m1) continue; /* row + 16 may lie past C's end */
        if (beta != 0.0f) hi = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), hi);
        _mm512_mask_storeu_ps(row + 16, m1, hi);
    }
}

__attribute__((target("avx512f"))) static void
transpose_avx512(const float *src, size_t lds, size_t rows, size_t cols, float *dst, size_t ldd) {
    for (size_t i0 = 0; i0 < rows; i0 += 16) {
        const size_t h = rows - i0 < 16 ? rows - i0 : 16;
        for (size_t j0 = 0; j0 < cols; j0 += 16)
            transpose_block(src + i0 * lds + j0, lds, h, cols - j0 < 16 ? cols - j0 : 16,
                            dst + j0 * ldd + i0, ldd, h);
    }
}

/* Moves 4-byte elements as floats: loads, shuffles and stores keep every bit pattern. */
void gpfq_transpose32_strided(const void *src, size_t lds, size_t rows, size_t cols, void *dst,
                              size_t ldd) {
    if (__builtin_cpu_supports("avx512f")) {
        transpose_avx512(src, lds, rows, cols, dst, ldd);
        return;
    }
    enum { TILE = 16 }; /* 16 rows of 64 bytes each side: one cache line per row */
    const uint32_t *s = src;
    uint32_t *d = dst;
    for (size_t i0 = 0; i0 < rows; i0 += TILE) {
        const size_t i1 = rows - i0 < TILE ? rows : i0 + TILE;
        for (size_t j0 = 0; j0 < cols; j0 += TILE) {
            const size_t j1 = cols - j0 < TILE ? cols : j0 + TILE;
            for (size_t j = j0; j < j1; j++)
                for (size_t i = i0; i < i1; i++) d[j * ldd + i] = s[i * lds + j];
        }
    }
}

void gpfq_transpose32(const void *src, size_t rows, size_t cols, void *dst) {
    gpfq_transpose32_strided(src, cols, rows, cols, dst, rows);
}

static void scale_c(size_t M, size_t N, float beta, float *C, size_t ldc) {
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

/* The part of a product a gpfq_sgemm_tri computes, in global row/column terms (see ops.h). */
typedef struct {
    gpfq_tri tri;
    ptrdiff_t off;
} tri_part;

static int gemm_avx512(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                       const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                       size_t ldc, tri_part t) {
    const size_t kc_max = K < KC ? K : KC;
    const size_t nc_max = (N < NC ? N : NC) + NR;
    float *Ap = aligned_alloc(64, ((MC * kc_max * sizeof(float)) + 63) / 64 * 64);
    float *Bp = aligned_alloc(64, ((nc_max * kc_max * sizeof(float)) + 63) / 64 * 64);
    if (!Ap || !Bp) {
        free(Ap), free(Bp);
        return 0;
    }
    for (size_t j0 = 0; j0 < N; j0 += NC) {
        const size_t nc = N - j0 < NC ? N - j0 : NC;
        for (size_t k0 = 0; k0 < K; k0 += KC) {
            const size_t kc = K - k0 < KC ? K - k0 : KC;
            const float b = k0 ? 1.0f : beta;
            pack_b(trans_b, B, ldb, k0, kc, j0, nc, Bp);
            for (size_t i0 = 0; i0 < M; i0 += MC) {
                const size_t mc = M - i0 < MC ? M - i0 : MC;
                /* lower A: rows up to i0 + mc - 1 reach column i0 + mc - 1 + off at most */
                if (t.tri == GPFQ_TRI_LOWER_A && (ptrdiff_t)k0 > (ptrdiff_t)(i0 + mc - 1) + t.off)
                    continue;
                /* lower C: no column of this panel at or below the block's last row's diagonal */
                if (t.tri == GPFQ_TRI_LOWER_C && (ptrdiff_t)j0 > (ptrdiff_t)(i0 + mc - 1) + t.off)
                    continue;
                pack_a(trans_a, A, lda, i0, mc, k0, kc, Ap);
                for (size_t js = 0; js < nc; js += NR)
                    for (size_t is = 0; is < mc; is += MR) {
                        const size_t h = mc - is < MR ? mc - is : MR;
                        const ptrdiff_t last = (ptrdiff_t)(i0 + is + h - 1) + t.off;
                        size_t k = kc;
                        if (t.tri == GPFQ_TRI_LOWER_C && (ptrdiff_t)(j0 + js) > last) continue;
                        if (t.tri == GPFQ_TRI_LOWER_A) { /* the strip's A is zero past `last` */
                            if ((ptrdiff_t)k0 > last) continue;
                            if (last + 1 - (ptrdiff_t)k0 < (ptrdiff_t)kc)
                                k = (size_t)(last + 1 - (ptrdiff_t)k0);
                        }
                        kernel_12x32(k, Ap + is * kc, Bp + js * kc, C + (i0 + is) * ldc + j0 + js,
                                     ldc, h, nc - js < NR ? nc - js : NR, alpha, b);
                    }
            }
        }
    }
    free(Ap), free(Bp);
    return 1;
}

static void sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                  const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                  size_t ldc, tri_part t) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    if (gpfq_gemm_get_kernel() == GPFQ_GEMM_AVX512 &&
        gemm_avx512(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, t))
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                (int)ldb, beta, C, (int)ldc);
}

void gpfq_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A,
                size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
          (tri_part){GPFQ_TRI_NONE, 0});
}

void gpfq_sgemm_tri(gpfq_tri tri, ptrdiff_t off, int trans_a, int trans_b, size_t M, size_t N,
                    size_t K, float alpha, const float *A, size_t lda, const float *B, size_t ldb,
                    float beta, float *C, size_t ldc) {
    GPFQ_ASSERT(tri != GPFQ_TRI_LOWER_A || off >= 0);
    sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, (tri_part){tri, off});
}
