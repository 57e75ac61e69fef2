/*
 * Linear layer: one sgemm, then the bias.
 */
#include "gpfq/ops.h"

void gpfq_linear(const float *x, const float *weight, const float *bias, size_t n, size_t in,
                 size_t out, float *y) {
    gpfq_sgemm(0, 1, n, out, in, 1.0f, x, in, weight, in, 0.0f, y, out);
    if (!bias) return;
    for (size_t i = 0; i < n; i++) {
        float *row = y + i * out;
        for (size_t o = 0; o < out; o++) row[o] += bias[o];
    }
}

void gpfq_linear_ref(const float *x, const float *weight, const float *bias, size_t n, size_t in,
                     size_t out, float *y) {
    for (size_t i = 0; i < n; i++) {
        for (size_t o = 0; o < out; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (size_t k = 0; k < in; k++) acc += (double)x[i * in + k] * weight[o * in + k];
            y[i * out + o] = (float)acc;
        }
    }
}
