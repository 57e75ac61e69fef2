/*
 * Alphabets and the scalar quantizers, exactly as the reference computes them
 * in float32 (including the tie rule: +1.5 steps round to 2, -1.5 to -1).
 */
#include "gpfq/quant.h"

#include "../core/clones.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int compare_floats(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* torch.quantile's default: linear interpolation between order statistics. */
static double quantile_sorted(const float *sorted, size_t n, double q) {
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - (double)lo);
}

/* The largest |w| of n floats, as the largest of their bit patterns without the sign: for
 * floats >= 0 the two orders agree, and an integer maximum vectorises (per CPU, GPFQ_CLONES)
 * where a float one would need -ffinite-math-only (mlp: 0.2 ms a quantize on the float one). A NaN
 * gives a NaN, which the caller refuses (a loaded model's weights are finite). */
GPFQ_CLONES static float max_abs(const float *w, size_t n) {
    uint32_t best = 0;
    for (size_t j = 0; j < n; j++) {
        uint32_t bits;
        memcpy(&bits, w + j, sizeof bits);
        bits &= 0x7fffffffu;
        best = bits > best ? bits : best;
    }
    float f;
    memcpy(&f, &best, sizeof f);
    return f;
}

gpfq_status gpfq_alphabet_make(const float *weight, size_t rows, size_t cols, int bits,
                               double scalar, double percentile, gpfq_quantizer kind,
                               double reg_lambda, uint64_t seed, gpfq_alphabet *out) {
    memset(out, 0, sizeof *out);
    if (bits < 1 || bits > 16)
        return gpfq_fail(GPFQ_ERR_ARG, "bits must be from 1 to 16, got %d", bits);
    if (!(scalar > 0)) return gpfq_fail(GPFQ_ERR_ARG, "the scalar must be > 0, got %g", scalar);
    if (!(percentile > 0 && percentile <= 1))
        return gpfq_fail(GPFQ_ERR_ARG, "the percentile must be in (0, 1], got %g", percentile);
    if (!(reg_lambda >= 0))
        return gpfq_fail(GPFQ_ERR_ARG, "lambda must be >= 0, got %g", reg_lambda);
    double sum = 0.0;
    if (percentile == 1.0) {
        for (size_t i = 0; i < rows; i++) sum += max_abs(weight + i * cols, cols);
    } else {
        float *row = gpfq_malloc(cols * sizeof(float), "a weight row");
        if (!row) return GPFQ_ERR_NOMEM;
        for (size_t i = 0; i < rows; i++) {
            for (size_t j = 0; j < cols; j++) row[j] = fabsf(weight[i * cols + j]);
            qsort(row, cols, sizeof(float), compare_floats);
            sum += quantile_sorted(row, cols, percentile);
        }
        free(row);
    }
    out->kind = kind;
    out->bits = bits;
    out->levels = 1 << (bits - 1);
    out->radius = (float)(sum / (double)rows);
    out->reg_lambda =
        (kind == GPFQ_QUANTIZER_L1 || kind == GPFQ_QUANTIZER_L0) ? (float)reg_lambda : 0.0f;
    out->seed = seed;
    double span = scalar * out->radius;
    if (kind == GPFQ_QUANTIZER_L0) span -= reg_lambda;
    out->delta = (float)(span / out->levels);
    if (kind == GPFQ_QUANTIZER_L0 && !(out->delta > 0.0f))
        return gpfq_fail(GPFQ_ERR_ARG,
                         "L0 lambda %g is not below scalar * radius = %g, so the step would be "
                         "%g; use a lambda below %g",
                         reg_lambda, scalar * out->radius, (double)out->delta,
                         scalar * out->radius);
    if (!(out->delta > 0.0f) || !isfinite(out->delta))
        return gpfq_fail(GPFQ_ERR_ARG,
                         "the alphabet step is %g (scalar * radius = %g): the layer's weights are "
                         "all zero or not finite",
                         (double)out->delta, scalar * out->radius);
    return GPFQ_OK;
}

static int nearest_code(float z, float delta, int levels) {
    float k = fabsf(floorf(z / delta + 0.5f));
    int code = k > (float)levels ? levels : (int)k;
    return z < 0.0f ? -code : (z > 0.0f ? code : 0);
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

double gpfq_uniform(uint64_t seed, uint64_t stream) {
    return (double)(splitmix64(seed ^ splitmix64(stream)) >> 11) * 0x1.0p-53;
}

int gpfq_quantize_code(const gpfq_alphabet *a, float z, uint64_t stream) {
    const float delta = a->delta, lambda = a->reg_lambda;
    const int levels = a->levels;
    if (!(z == z)) return 0; /* NaN: the driver reports it */
    switch (a->kind) {
    case GPFQ_QUANTIZER_NEAREST:
        return nearest_code(z, delta, levels);
    case GPFQ_QUANTIZER_L1: {
        float shrunk = fabsf(z) - lambda;
        if (shrunk <= 0.0f) return 0;
        return nearest_code(z < 0.0f ? -shrunk : shrunk, delta, levels);
    }
    case GPFQ_QUANTIZER_L0: {
        float mag = fabsf(z);
        if (mag <= lambda) return 0;
        float k = fabsf(floorf((mag - lambda) / delta + 0.5f));
        int code = (k > (float)levels ? levels : (int)k) + 1;
        return z < 0.0f ? -code : code;
    }
    case GPFQ_QUANTIZER_STOCHASTIC: {
        float p = z / delta;
        float lower = floorf(p);
        float frac = p - lower;
        double u = gpfq_uniform(a->seed, stream);
        float k = u < (double)frac ? lower + 1.0f : lower;
        if (k > (float)levels) k = (float)levels;
        if (k < (float)-levels) k = (float)-levels;
        return (int)k;
    }
    }
    return 0;
}

float gpfq_code_value(const gpfq_alphabet *a, int code) {
    if (a->kind != GPFQ_QUANTIZER_L0) {
        float mag = a->delta * (float)abs(code); /* the loader's formula, sign-symmetric */
        return code < 0 ? -mag : mag;
    }
    if (code == 0) return 0.0f;
    float mag = a->reg_lambda + a->delta * (float)(abs(code) - 1);
    return code < 0 ? -mag : mag;
}

/* The same rules over a row, written so that the compiler vectorises the common case
 * (nearest rounding) in the clone for the CPU at hand; every operation is a correctly
 * rounded float operation, so each clone gives the scalar function's codes bit for bit. */
GPFQ_CLONES
void gpfq_quantize_row(const gpfq_alphabet *a, const float *restrict z, size_t n, float norm,
                       uint64_t stream0, uint64_t step, int32_t *restrict codes,
                       float *restrict values) {
    if (norm == 0.0f) {
        for (size_t i = 0; i < n; i++) codes[i] = 0, values[i] = gpfq_code_value(a, 0);
        return;
    }
    if (a->kind != GPFQ_QUANTIZER_NEAREST) {
        for (size_t i = 0; i < n; i++) {
            codes[i] = gpfq_quantize_code(a, z[i] / norm, stream0 + i * step);
            values[i] = gpfq_code_value(a, codes[i]);
        }
        return;
    }
    const float delta = a->delta, levels = (float)a->levels;
    for (size_t i = 0; i < n; i++) {
        const float x = z[i] / norm;
        const float k = fabsf(floorf(x / delta + 0.5f));
        const int mag = (int)(k <= levels ? k : levels); /* NaN: levels, then sign 0 */
        const int sign = (x > 0.0f) - (x < 0.0f);
        codes[i] = sign * mag;
        values[i] = (float)sign * (delta * (float)(sign * sign * mag));
    }
}

GPFQ_CLONES
void gpfq_code_values(const gpfq_alphabet *a, const int32_t *codes, size_t n, float *values) {
    if (a->kind == GPFQ_QUANTIZER_L0) {
        for (size_t i = 0; i < n; i++) values[i] = gpfq_code_value(a, codes[i]);
        return;
    }
    const float delta = a->delta;
    for (size_t i = 0; i < n; i++) {
        const int sign = (codes[i] > 0) - (codes[i] < 0);
        values[i] = (float)sign * (delta * (float)(sign * codes[i]));
    }
}

void gpfq_msq_layer(const float *weight, size_t N, size_t d, const gpfq_alphabet *a,
                    int32_t *codes) {
    for (size_t i = 0; i < N * d; i++) codes[i] = (int32_t)gpfq_quantize_code(a, weight[i], i);
}

const char *gpfq_form_name(gpfq_form form) {
    switch (form) {
    case GPFQ_FORM_AUTO:
        return "auto";
    case GPFQ_FORM_GRAM:
        return "gram";
    case GPFQ_FORM_UBLOCK:
        return "ublock";
    case GPFQ_FORM_REF:
        return "ref";
    }
    return "unknown";
}
