/*
 * Pooling: max, average (with PyTorch's padding and ceil_mode rules), and
 * adaptive average with PyTorch's uneven window bounds.
 */
#include "gpfq/ops.h"

#include <float.h>
#include <math.h>

/* Windows that never leave the input (no padding, no ceil_mode overhang): no
 * bounds checks in the inner loop. */
static int windows_inside(const gpfq_conv_geom *g) {
    return g->pad_h == 0 && g->pad_w == 0 &&
           (g->out_h - 1) * g->stride_h + (g->kernel_h - 1) * g->dilation_h < g->in_h &&
           (g->out_w - 1) * g->stride_w + (g->kernel_w - 1) * g->dilation_w < g->in_w;
}

static void maxpool_inside(const gpfq_conv_geom *g, const float *x, size_t planes, float *y) {
    const int iw = g->in_w, kh = g->kernel_h, kw = g->kernel_w;
    const int dh = g->dilation_h * iw, dw = g->dilation_w;
    for (size_t p = 0; p < planes; p++) {
        const float *src = x + p * g->in_h * iw;
        float *dst = y + p * g->out_h * g->out_w;
        for (int oy = 0; oy < g->out_h; oy++) {
            const float *row = src + oy * g->stride_h * iw;
            for (int ox = 0; ox < g->out_w; ox++) {
                const float *w = row + ox * g->stride_w;
                float best = w[0];
                int nan = 0;
                for (int ki = 0; ki < kh; ki++)
                    for (int kj = 0; kj < kw; kj++) {
                        float v = w[ki * dh + kj * dw];
                        nan |= v != v;
                        best = v > best ? v : best;
                    }
                dst[oy * g->out_w + ox] = nan ? NAN : best; /* NaN propagates, as in torch */
            }
        }
    }
}

/* The common 2x2, stride-2 window (LeNet): the loop of maxpool_inside with its bounds
 * known, in the same order, so the results are the same. */
static void maxpool_2x2(const gpfq_conv_geom *g, const float *x, size_t planes, float *y) {
    const int iw = g->in_w, ow = g->out_w;
    for (size_t p = 0; p < planes; p++) {
        const float *src = x + p * g->in_h * iw;
        float *dst = y + p * g->out_h * ow;
        for (int oy = 0; oy < g->out_h; oy++) {
            const float *r0 = src + 2 * oy * iw, *r1 = r0 + iw;
            float *out = dst + oy * ow;
            for (int ox = 0; ox < ow; ox++) {
                float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
                float best = a;
                best = b > best ? b : best;
                best = c > best ? c : best;
                best = d > best ? d : best;
                int nan = (a != a) | (b != b) | (c != c) | (d != d);
                out[ox] = nan ? NAN : best;
            }
        }
    }
}

void gpfq_maxpool2d(const gpfq_conv_geom *g, const float *x, size_t n, float *y) {
    const size_t planes = n * (size_t)g->in_c;
    if (windows_inside(g) && g->kernel_h == 2 && g->kernel_w == 2 && g->stride_h == 2 &&
        g->stride_w == 2 && g->dilation_h == 1 && g->dilation_w == 1) {
        maxpool_2x2(g, x, planes, y);
        return;
    }
    if (windows_inside(g)) {
        maxpool_inside(g, x, planes, y);
        return;
    }
    for (size_t p = 0; p < planes; p++) {
        const float *src = x + p * g->in_h * g->in_w;
        float *dst = y + p * g->out_h * g->out_w;
        for (int oy = 0; oy < g->out_h; oy++)
            for (int ox = 0; ox < g->out_w; ox++) {
                float best = -FLT_MAX;
                int seen = 0;
                for (int ki = 0; ki < g->kernel_h; ki++) {
                    int sy = oy * g->stride_h - g->pad_h + ki * g->dilation_h;
                    if (sy < 0 || sy >= g->in_h) continue;
                    for (int kj = 0; kj < g->kernel_w; kj++) {
                        int sx = ox * g->stride_w - g->pad_w + kj * g->dilation_w;
                        if (sx < 0 || sx >= g->in_w) continue;
                        float v = src[sy * g->in_w + sx];
                        /* NaN propagates, as in PyTorch */
                        if (!seen || v > best || v != v) best = v;
                        seen = 1;
                    }
                }
                dst[oy * g->out_w + ox] = best;
            }
    }
}

static int min_int(int a, int b) {
    return a < b ? a : b;
}
static int max_int(int a, int b) {
    return a > b ? a : b;
}

void gpfq_avgpool2d(const gpfq_conv_geom *g, int count_include_pad, const float *x, size_t n,
                    float *y) {
    const size_t planes = n * (size_t)g->in_c;
    for (size_t p = 0; p < planes; p++) {
        const float *src = x + p * g->in_h * g->in_w;
        float *dst = y + p * g->out_h * g->out_w;
        for (int oy = 0; oy < g->out_h; oy++)
            for (int ox = 0; ox < g->out_w; ox++) {
                /* PyTorch's divisor: the window clipped to the padded input, or to the input */
                int y0 = oy * g->stride_h - g->pad_h, x0 = ox * g->stride_w - g->pad_w;
                int y1 = min_int(y0 + g->kernel_h, g->in_h + g->pad_h);
                int x1 = min_int(x0 + g->kernel_w, g->in_w + g->pad_w);
                int padded_area = (y1 - y0) * (x1 - x0);
                y0 = max_int(y0, 0);
                x0 = max_int(x0, 0);
                y1 = min_int(y1, g->in_h);
                x1 = min_int(x1, g->in_w);
                float sum = 0.0f;
                for (int sy = y0; sy < y1; sy++)
                    for (int sx = x0; sx < x1; sx++) sum += src[sy * g->in_w + sx];
                int divisor = count_include_pad ? padded_area : (y1 - y0) * (x1 - x0);
                dst[oy * g->out_w + ox] = divisor > 0 ? sum / (float)divisor : 0.0f;
            }
    }
}

void gpfq_adaptive_avgpool2d(const float *x, size_t n, int c, int in_h, int in_w, int out_h,
                             int out_w, float *y) {
    const size_t planes = n * (size_t)c;
    for (size_t p = 0; p < planes; p++) {
        const float *src = x + p * in_h * in_w;
        float *dst = y + p * out_h * out_w;
        for (int oy = 0; oy < out_h; oy++) {
            int y0 = (oy * in_h) / out_h, y1 = ((oy + 1) * in_h + out_h - 1) / out_h;
            for (int ox = 0; ox < out_w; ox++) {
                int x0 = (ox * in_w) / out_w, x1 = ((ox + 1) * in_w + out_w - 1) / out_w;
                float sum = 0.0f;
                for (int sy = y0; sy < y1; sy++)
                    for (int sx = x0; sx < x1; sx++) sum += src[sy * in_w + sx];
                dst[oy * out_w + ox] = sum / (float)((y1 - y0) * (x1 - x0));
            }
        }
    }
}
