/*
 * Element-wise ops: inference BatchNorm, ReLU, the residual add, and a transpose.
 */
#include "gpfq/ops.h"

#include <math.h>
#include <stdint.h>

/* the same folding PyTorch's CPU kernel does: y = x * scale + shift */
static void fold_channel(const float *gamma, const float *beta, const float *mean, const float *var,
                         float eps, int ch, float *scale, float *shift) {
    float inv_std = 1.0f / sqrtf(var[ch] + eps);
    *scale = gamma ? gamma[ch] * inv_std : inv_std;
    *shift = (beta ? beta[ch] : 0.0f) - mean[ch] * *scale;
}

void gpfq_batchnorm_fold(const float *gamma, const float *beta, const float *mean, const float *var,
                         float eps, int c, float *scale, float *shift) {
    for (int ch = 0; ch < c; ch++)
        fold_channel(gamma, beta, mean, var, eps, ch, &scale[ch], &shift[ch]);
}

void gpfq_batchnorm2d(const float *x, const float *gamma, const float *beta, const float *mean,
                      const float *var, float eps, size_t n, int c, size_t hw, float *y) {
    for (int ch = 0; ch < c; ch++) {
        float alpha, shift;
        fold_channel(gamma, beta, mean, var, eps, ch, &alpha, &shift);
        for (size_t i = 0; i < n; i++) {
            const float *src = x + (i * c + ch) * hw;
            float *dst = y + (i * c + ch) * hw;
            for (size_t k = 0; k < hw; k++) dst[k] = src[k] * alpha + shift;
        }
    }
}

void gpfq_relu(const float *x, size_t count, float *y) {
    for (size_t i = 0; i < count; i++) y[i] = gpfq_relu1(x[i]);
}

void gpfq_add(const float *a, const float *b, size_t count, float *y) {
    for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
}

void gpfq_transpose32(const void *src, size_t rows, size_t cols, void *dst) {
    enum { TILE = 16 }; /* 16 rows of 64 bytes each side: one cache line per row */
    const uint32_t *s = src;
    uint32_t *d = dst;
    for (size_t i0 = 0; i0 < rows; i0 += TILE) {
        const size_t i1 = rows - i0 < TILE ? rows : i0 + TILE;
        for (size_t j0 = 0; j0 < cols; j0 += TILE) {
            const size_t j1 = cols - j0 < TILE ? cols : j0 + TILE;
            for (size_t j = j0; j < j1; j++)
                for (size_t i = i0; i < i1; i++) d[j * rows + i] = s[i * cols + j];
        }
    }
}
