/* The conv patches GPFQ samples, unfolded as columns (see unfold.h). */
#include "unfold.h"

#include <string.h>

#include "../core/clones.h"

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

GPFQ_CLONES void gpfq_unfold_patches(const gpfq_conv_geom *g, const float *image, int c0, int cg,
                                     const uint32_t *offset, size_t keep, float *pad, float *dst,
                                     size_t m) {
    const size_t ih = (size_t)g->in_h, iw = (size_t)g->in_w, pw = gpfq_unfold_padded_w(g);
    const size_t kh = (size_t)g->kernel_h, kw = (size_t)g->kernel_w;
    for (int c = 0; c < cg; c++) {
        const float *plane = image + (size_t)(c0 + c) * ih * iw;
        for (size_t y = 0; y < ih; y++)
            memcpy(pad + (y + (size_t)g->pad_h) * pw + (size_t)g->pad_w, plane + y * iw,
                   iw * sizeof(float));
        for (size_t ki = 0; ki < kh; ki++) {
            const float *tap_row = pad + ki * (size_t)g->dilation_h * pw;
            float *rows = dst + ((size_t)c * kh + ki) * kw * m;
            if (g->dilation_w == 1 && kw == 3) {
                gather_taps3(tap_row, offset, keep, rows, m);
                continue;
            }
            if (g->dilation_w == 1 && kw == 5) {
                gather_taps5(tap_row, offset, keep, rows, m);
                continue;
            }
            for (size_t kj = 0; kj < kw; kj++) {
                const float *tap = tap_row + kj * (size_t)g->dilation_w;
                float *row = rows + kj * m;
                for (size_t j = 0; j < keep; j++) row[j] = tap[offset[j]];
            }
        }
    }
}
