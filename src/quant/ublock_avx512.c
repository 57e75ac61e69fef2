/*
 * The ublock form's passes on AVX-512 (see ublock.h for what a pass computes).
 *
 * Sums. A tile of 4 rows of Y_b against 4 rows of U, X_b or Y_b keeps 16 vector accumulators
 * in registers over a chunk's columns: per 16 columns, 8 loads feed 16 FMAs. At the chunk's
 * end the 16 accumulators are reduced together (a transpose-and-add tree, 15 adds) and added
 * to the tile's 4 x 4 sums.
 *
 * Update. A tile of 4 rows of U by 64 columns stays in registers while the loop runs over the
 * block's 2B rows of Xt and Yt: per row, 4 loads and 4 broadcasts feed 16 FMAs.
 */
#include "ublock.h"

#include <immintrin.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f")))

/* Element i of the result is the sum of the 16 elements of v[i]. */
AVX512 static inline __m512 sum16(const __m512 *v) {
    __m512 s[8], w[4], x[2];
    for (int i = 0; i < 8; i++) /* per 128-bit lane: v[2i] in elements 0, 2, v[2i+1] in 1, 3 */
        s[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) { /* per 128-bit lane: v[4i .. 4i+3] in elements 0..3 */
        const __m512d a = _mm512_castps_pd(s[2 * i]), b = _mm512_castps_pd(s[2 * i + 1]);
        w[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    for (int i = 0; i < 2; i++) /* lanes 0, 1: halves of w[2i]'s sums; 2, 3: of w[2i+1]'s */
        x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(x[0], x[1], 0x88),
                         _mm512_shuffle_f32x4(x[0], x[1], 0xdd));
}

/* out[r * ld + j] += a[r] . b[j] over n floats, for r, j < 4 */
AVX512 static void dot_tile(const float *const *a, const float *const *b, size_t n, float *out,
                            size_t ld) {
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 av[4], bv[4];
        for (int r = 0; r < 4; r++) av[r] = _mm512_loadu_ps(a[r] + k);
        for (int j = 0; j < 4; j++) bv[j] = _mm512_loadu_ps(b[j] + k);
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 4; j++)
                acc[4 * r + j] = _mm512_fmadd_ps(av[r], bv[j], acc[4 * r + j]);
    }
    if (k < n) { /* the last n - k < 16 columns; the masked-off lanes add 0 * 0 */
        const __mmask16 mask = (__mmask16)((1u << (n - k)) - 1);
        __m512 av[4], bv[4];
        for (int r = 0; r < 4; r++) av[r] = _mm512_maskz_loadu_ps(mask, a[r] + k);
        for (int j = 0; j < 4; j++) bv[j] = _mm512_maskz_loadu_ps(mask, b[j] + k);
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 4; j++)
                acc[4 * r + j] = _mm512_fmadd_ps(av[r], bv[j], acc[4 * r + j]);
    }
    const __m512 s = sum16(acc);
    _mm_storeu_ps(out, _mm_add_ps(_mm_loadu_ps(out), _mm512_extractf32x4_ps(s, 0)));
    _mm_storeu_ps(out + ld, _mm_add_ps(_mm_loadu_ps(out + ld), _mm512_extractf32x4_ps(s, 1)));
    _mm_storeu_ps(out + 2 * ld,
                  _mm_add_ps(_mm_loadu_ps(out + 2 * ld), _mm512_extractf32x4_ps(s, 2)));
    _mm_storeu_ps(out + 3 * ld,
                  _mm_add_ps(_mm_loadu_ps(out + 3 * ld), _mm512_extractf32x4_ps(s, 3)));
}

/* Rows u[0..3] (n floats each) += sum_s cw[s * ldc + r] x[s] - cq[s * ldc + r] y[s] over the B
 * rows x[s] = x + s * ldx (y alike); returns 0. With cq NULL, no y term. With u NULL (the reference
 * norm), the rows sum_s cw[s * ldc + r] x[s] are not stored: the sum of their squares is returned.
 */
AVX512 static double update_tile(float *const *u, const float *cw, const float *cq, size_t ldc,
                                 const float *x, const float *y, size_t ldx, size_t B, size_t n) {
    __m512 squares = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 64 <= n; k += 64) {
        __m512 acc[4][4];
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 4; j++)
                acc[r][j] = u ? _mm512_loadu_ps(u[r] + k + 16 * j) : _mm512_setzero_ps();
        for (size_t s = 0; s < B; s++) {
            const float *xs = x + s * ldx + k;
            __m512 xv[4];
            for (int j = 0; j < 4; j++) xv[j] = _mm512_loadu_ps(xs + 16 * j);
            for (int r = 0; r < 4; r++) {
                const __m512 c = _mm512_set1_ps(cw[s * ldc + r]);
                for (int j = 0; j < 4; j++) acc[r][j] = _mm512_fmadd_ps(xv[j], c, acc[r][j]);
            }
        }
        for (size_t s = 0; u && cq && s < B; s++) {
            const float *ys = y + s * ldx + k;
            __m512 yv[4];
            for (int j = 0; j < 4; j++) yv[j] = _mm512_loadu_ps(ys + 16 * j);
            for (int r = 0; r < 4; r++) {
                const __m512 c = _mm512_set1_ps(cq[s * ldc + r]);
                for (int j = 0; j < 4; j++) acc[r][j] = _mm512_fnmadd_ps(yv[j], c, acc[r][j]);
            }
        }
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 4; j++)
                if (u)
                    _mm512_storeu_ps(u[r] + k + 16 * j, acc[r][j]);
                else
                    squares = _mm512_fmadd_ps(acc[r][j], acc[r][j], squares);
    }
    for (; k < n; k += 16) { /* the last < 64 columns, 16 at a time, the same operations */
        const __mmask16 mask = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
        __m512 acc[4];
        for (int r = 0; r < 4; r++)
            acc[r] = u ? _mm512_maskz_loadu_ps(mask, u[r] + k) : _mm512_setzero_ps();
        for (size_t s = 0; s < B; s++) {
            const __m512 xv = _mm512_maskz_loadu_ps(mask, x + s * ldx + k);
            for (int r = 0; r < 4; r++)
                acc[r] = _mm512_fmadd_ps(xv, _mm512_set1_ps(cw[s * ldc + r]), acc[r]);
        }
        for (size_t s = 0; u && cq && s < B; s++) {
            const __m512 yv = _mm512_maskz_loadu_ps(mask, y + s * ldx + k);
            for (int r = 0; r < 4; r++)
                acc[r] = _mm512_fnmadd_ps(yv, _mm512_set1_ps(cq[s * ldc + r]), acc[r]);
        }
        for (int r = 0; r < 4; r++)
            if (u)
                _mm512_mask_storeu_ps(u[r] + k, mask, acc[r]);
            else
                squares = _mm512_fmadd_ps(acc[r], acc[r], squares);
    }
    return (double)_mm512_reduce_add_ps(squares);
}

/* The sum of squares of rows v[0..3] (n floats each), in update_tile's order, so that a norm
 * summed into V pass by pass is the one update_tile gives over all rows at once */
AVX512 static double square_tile(float *const *v, size_t n) {
    __m512 squares = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 64 <= n; k += 64)
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 4; j++) {
                const __m512 x = _mm512_loadu_ps(v[r] + k + 16 * j);
                squares = _mm512_fmadd_ps(x, x, squares);
            }
    for (; k < n; k += 16) {
        const __mmask16 mask = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
        for (int r = 0; r < 4; r++) {
            const __m512 x = _mm512_maskz_loadu_ps(mask, v[r] + k);
            squares = _mm512_fmadd_ps(x, x, squares);
        }
    }
    return (double)_mm512_reduce_add_ps(squares);
}

AVX512 void gpfq_ublock_gather_avx512(const gpfq_patches *src, const float *side, size_t t0,
                                      size_t b, size_t c, size_t n, float *dst, size_t ld) {
    const __m512i h = _mm512_set1_epi32(src->h), w = _mm512_set1_epi32(src->w);
    for (size_t i = 0; i < b; i++) {
        const __m512i off = _mm512_set1_epi32(src->off[t0 + i]);
        const __m512i dy = _mm512_set1_epi32(src->tap[t0 + i] >> 16);
        const __m512i dx = _mm512_set1_epi32((int16_t)(src->tap[t0 + i] & 0xffff));
        float *row = dst + i * ld;
        size_t k = 0;
        for (; src->inside && k + 16 <= n; k += 16) /* no padding: every tap lies inside */
            _mm512_storeu_ps(
                row + k,
                _mm512_i32gather_ps(_mm512_add_epi32(_mm512_loadu_si512(src->base + c + k), off),
                                    side, 4));
        for (; k < n; k += 16) {
            const __mmask16 live = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
            const __m512i corner = _mm512_maskz_loadu_epi32(live, src->corner + c + k);
            const __m512i y = _mm512_add_epi32(_mm512_srai_epi32(corner, 16), dy);
            const __m512i x =
                _mm512_add_epi32(_mm512_srai_epi32(_mm512_slli_epi32(corner, 16), 16), dx);
            /* unsigned compares: a tap above or left of the plane wraps past h or w */
            const __mmask16 in =
                live & _mm512_cmplt_epu32_mask(y, h) & _mm512_cmplt_epu32_mask(x, w);
            const __m512i at =
                _mm512_add_epi32(_mm512_maskz_loadu_epi32(live, src->base + c + k), off);
            _mm512_mask_storeu_ps(row + k, live,
                                  _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, at, side, 4));
        }
    }
}

/* Row i of the block whose row 0 is `rows` (ld floats a row), or the zero row past its b rows */
static const float *row_or_zero(const float *rows, size_t i, size_t b, size_t ld,
                                const float *zero) {
    return i < b ? rows + i * ld : zero;
}

void gpfq_ublock_lane_avx512(ublock_lane *l) {
    const size_t m = l->m, n4 = l->n4, ld = l->ld;
    const size_t col0 = l->src ? l->c0 : 0; /* the column at 0 of the rows' buffers */
    l->norm2 = 0.0;
    if (l->clear) {
        for (size_t i = 0; i < n4; i++)
            memset(l->U + i * m + l->c0, 0, (l->c1 - l->c0) * sizeof(float));
        if (l->V) memset(l->V, 0, n4 * ld * sizeof(float));
    }
    for (size_t c0 = l->c0; c0 < l->c1; c0 += UBLOCK_CHUNK) {
        const size_t n = l->c1 - c0 < UBLOCK_CHUNK ? l->c1 - c0 : UBLOCK_CHUNK, at = c0 - col0;
        for (size_t i = 0; l->nw && i < n4; i += 4)
            l->norm2 += update_tile(NULL, l->nw + i, NULL, n4, l->Xt + c0, NULL, m, l->nd, n);
        for (size_t i = 0; l->ub && i < n4; i += 4) {
            float *u[4];
            for (int r = 0; r < 4; r++) u[r] = l->U + (i + r) * m + c0;
            update_tile(u, l->cw + i, l->cq ? l->cq + i : NULL, n4, l->ux + at, l->uy + at, ld,
                        l->ub, n);
            if (!l->V) continue;
            for (int r = 0; r < 4; r++) u[r] = l->V + (i + r) * ld + at;
            update_tile(u, l->vw + i, NULL, n4, l->ux + at, NULL, ld, l->ub, n);
            if (l->last) l->norm2 += square_tile(u, n);
        }
        if (l->src && l->db) { /* after the update, which may read the same rows */
            gpfq_ublock_gather_avx512(l->src, l->src->x, l->dt0, l->db, c0, n, l->gx + at, ld);
            if (!l->same)
                gpfq_ublock_gather_avx512(l->src, l->src->y, l->dt0, l->db, c0, n, l->gy + at, ld);
        }
        for (size_t r = 0; l->db && r < l->b4; r += 4) {
            const float *a[4], *b[4];
            for (int k = 0; k < 4; k++) a[k] = row_or_zero(l->sy + at, r + k, l->db, ld, l->zero);
            for (size_t i = 0; l->with_p && i < n4; i += 4) {
                for (int k = 0; k < 4; k++) b[k] = l->U + (i + k) * m + c0;
                dot_tile(a, b, n, l->P + r * n4 + i, n4);
            }
            for (size_t s = 0; s <= r; s += 4) {
                for (int k = 0; k < 4; k++)
                    b[k] = row_or_zero(l->sx + at, s + k, l->db, ld, l->zero);
                dot_tile(a, b, n, l->G + r * l->b4 + s, l->b4);
                if (l->same) continue; /* H would be G: the caller takes G's sums */
                for (int k = 0; k < 4; k++)
                    b[k] = row_or_zero(l->sy + at, s + k, l->db, ld, l->zero);
                dot_tile(a, b, n, l->H + r * l->b4 + s, l->b4);
            }
        }
    }
}
