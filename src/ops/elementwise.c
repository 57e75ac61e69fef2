/*
 * Element-wise ops: inference BatchNorm, ReLU and the residual add.
 */
#include "gpfq/ops.h"

#include <math.h>

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
