/* The conv patches GPFQ samples, unfolded as columns (see unfold.h). */
#include "unfold.h"

#include <immintrin.h>
#include <string.h>

#include "../core/clones.h"
#include "gpfq/ops.h"

size_t gpfq_unfold_padded_w(const gpfq_conv_geom *g) {
    return (size_t)g->in_w + 2 * (size_t)g->pad_w;
}
size_t gpfq_unfold_padded_h(const gpfq_conv_geom *g) {
    return (size_t)g->in_h + 2 * (size_t)g->pad_h;
}

/* One kernel row's taps of every kept patch for the common widths 3 and 5: each corner read
 * once for all of the row's taps, the kw rows written side by side (lenet5's 5-wide rows 1.4-1.8x
 * and resnet20's 3-wide rows at 8x8 1.3x faster than a pass per tap; where the rows are long
 * the stores bound both, resnet20's 32x32: 1.04x). */
static inline void gather_taps3(const float *tap_row, const uint32_t *offset, size_t keep,
                                float *rows, size_t m) {
    float *r0 = rows, *r1 = rows + m, *r2 = rows + 2 * m;
    for (size_t j = 0; j < keep; j++) {
        const float *t = tap_row + offset[j];
        r0[j] = t[0], r1[j] = t[1], r2[j] = t[2];
    }
}

static inline void gather_taps5(const float *tap_row, const uint32_t *offset, size_t keep,
                                float *rows, size_t m) {
    float *r0 = rows, *r1 = rows + m, *r2 = rows + 2 * m, *r3 = rows + 3 * m, *r4 = rows + 4 * m;
    for (size_t j = 0; j < keep; j++) {
        const float *t = tap_row + offset[j];
        r0[j] = t[0], r1[j] = t[1], r2[j] = t[2], r3[j] = t[3], r4[j] = t[4];
    }
}

/* All kw taps of a kernel row, kw rows of dst at once, on AVX-512: per 16 patches and up to 4
 * taps, each patch's taps are one masked load, 16 of them fill 4 vectors (vector a's lane L
 * holds patch 4L + a), and a transpose within the 128-bit lanes leaves tap k of the 16 patches,
 * in order, in vector k: one 64-byte store per row where the scalar loops made 16 scalar ones.
 * Only the taps' own floats are read. 256 images, a quarter of the patches kept, one side
 * (build/bench/unfold_rows, three runs): resnet20's first stage (16x28x28) 3.9-4.1 ms on the
 * scalar loops, 2.0-2.1 ms here, its second 2.0-2.3 and 1.0-1.1 ms, lenet5's conv1 0.27-0.30
 * and 0.16-0.18 ms. Fewer than 16 patches an image (resnet20's 7x7 planes keep 13) take the
 * scalar loops. */
#define AVX512VL __attribute__((target("avx512f,avx512vl")))

/* Taps [0, kw) (dw apart) of patches [j0, j1) by the scalar loops. */
static inline void gather_taps(const float *tap_row, const uint32_t *offset, size_t j0, size_t j1,
                               size_t kw, size_t dw, float *rows, size_t m) {
    if (dw == 1 && kw == 3) {
        gather_taps3(tap_row, offset + j0, j1 - j0, rows + j0, m);
    } else if (dw == 1 && kw == 5) {
        gather_taps5(tap_row, offset + j0, j1 - j0, rows + j0, m);
    } else {
        for (size_t k = 0; k < kw; k++) {
            const float *tap = tap_row + k * dw;
            float *row = rows + k * m;
            for (size_t j = j0; j < j1; j++) row[j] = tap[offset[j]];
        }
    }
}

AVX512VL static inline __attribute__((always_inline)) void gather_row16(const float *tap_row,
                                                                        const uint32_t *offset,
                                                                        size_t keep, size_t kw,
                                                                        float *rows, size_t m) {
    size_t j = 0;
    for (; j + 16 <= keep; j += 16) {
        for (size_t q = 0; q < kw; q += 4) {
            const size_t w = kw - q < 4 ? kw - q : 4;
            const __mmask8 mask = (__mmask8)((1u << w) - 1);
            const float *t = tap_row + q;
            __m512 z[4];
            for (int a = 0; a < 4; a++) {
                __m512 v = _mm512_castps128_ps512(_mm_maskz_loadu_ps(mask, t + offset[j + a]));
                v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(mask, t + offset[j + 4 + a]), 1);
                v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(mask, t + offset[j + 8 + a]), 2);
                z[a] = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(mask, t + offset[j + 12 + a]), 3);
            }
            /* per lane: t0 = z0.0 z1.0 z0.1 z1.1, t1 = z0.2 z1.2 z0.3 z1.3, t2 and t3 of z2, z3 */
            const __m512d t0 = _mm512_castps_pd(_mm512_unpacklo_ps(z[0], z[1]));
            const __m512d t1 = _mm512_castps_pd(_mm512_unpackhi_ps(z[0], z[1]));
            const __m512d t2 = _mm512_castps_pd(_mm512_unpacklo_ps(z[2], z[3]));
            const __m512d t3 = _mm512_castps_pd(_mm512_unpackhi_ps(z[2], z[3]));
            const __m512 x[4] = {_mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)),
                                 _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2)),
                                 _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3)),
                                 _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3))};
            for (size_t k = 0; k < w; k++) _mm512_storeu_ps(rows + (q + k) * m + j, x[k]);
        }
    }
    gather_taps(tap_row, offset, j, keep, kw, 1, rows, m);
}

AVX512VL static void gather_row_avx512(const float *tap_row, const uint32_t *offset, size_t keep,
                                       size_t kw, float *rows, size_t m) {
    if (kw == 3)
        gather_row16(tap_row, offset, keep, 3, rows, m);
    else if (kw == 5)
        gather_row16(tap_row, offset, keep, 5, rows, m);
    else
        gather_row16(tap_row, offset, keep, kw, rows, m);
}

/* 1 where the kernel rows take gather_row_avx512: the AVX-512 conv kernel is in use (the CPU
 * has it and GPFQ_CONV does not ask for less) and the CPU has the 128-bit masked loads. */
static int unfold_avx512(void) {
    return gpfq_conv_get_kernel() == GPFQ_CONV_AVX512 && __builtin_cpu_supports("avx512vl");
}

GPFQ_CLONES void gpfq_unfold_patches(const gpfq_conv_geom *g, const float *image, int c0, int cg,
                                     const uint32_t *offset, size_t keep, float *pad, float *dst,
                                     size_t m) {
    const size_t ih = (size_t)g->in_h, iw = (size_t)g->in_w, pw = gpfq_unfold_padded_w(g);
    const size_t kh = (size_t)g->kernel_h, kw = (size_t)g->kernel_w;
    const int vector = g->dilation_w == 1 && keep >= 16 && unfold_avx512();
    for (int c = 0; c < cg; c++) {
        const float *plane = image + (size_t)(c0 + c) * ih * iw;
        for (size_t y = 0; y < ih; y++)
            memcpy(pad + (y + (size_t)g->pad_h) * pw + (size_t)g->pad_w, plane + y * iw,
                   iw * sizeof(float));
        for (size_t ki = 0; ki < kh; ki++) {
            const float *tap_row = pad + ki * (size_t)g->dilation_h * pw;
            float *rows = dst + ((size_t)c * kh + ki) * kw * m;
            if (vector)
                gather_row_avx512(tap_row, offset, keep, kw, rows, m);
            else
                gather_taps(tap_row, offset, 0, keep, kw, (size_t)g->dilation_w, rows, m);
        }
    }
}
