/*
 * 2-D convolution as im2col + GEMM (gpfq_sgemm).
 *
 * Small feature maps make one GEMM per image too thin to run BLAS well, so images
 * are unfolded side by side into one column matrix (a chunk of `images_per_gemm`
 * images at a time) and the product is scattered back to NCHW. A 1x1, stride-1,
 * unpadded conv needs no unfolding: the image already is the column matrix. The convs a
 * direct kernel covers (gpfq_conv_direct_fits) go to conv_direct.c; where one is short of memory
 * it falls back to this path, on the caller's scratch or, given none, on one of its own.
 */
#include "gpfq/ops.h"
#include "gpfq/status.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Aim for at least this many GEMM columns per product. */
enum { GPFQ_CONV_MIN_COLUMNS = 1024 };

int gpfq_window_out(int in, int kernel, int stride, int pad, int dilation, int ceil_mode) {
    long span = (long)dilation * (kernel - 1) + 1;
    long room = (long)in + 2L * pad - span;
    if (room < 0 || stride <= 0) return -1;
    long out = ceil_mode ? (room + stride - 1) / stride + 1 : room / stride + 1;
    /* PyTorch: with ceil_mode, the last window must start inside the input or left padding. */
    if (ceil_mode && (out - 1) * stride >= (long)in + pad) out--;
    /* a padding near INT_MAX (a corrupt model file) would wrap the size to a small one */
    if (out > INT_MAX) return -1;
    return (int)out;
}

static int is_pointwise(const gpfq_conv_geom *g) {
    return g->kernel_h == 1 && g->kernel_w == 1 && g->stride_h == 1 && g->stride_w == 1 &&
           g->pad_h == 0 && g->pad_w == 0 && g->groups == 1;
}

static size_t images_per_gemm(const gpfq_conv_geom *g, size_t n) {
    size_t pixels = (size_t)g->out_h * g->out_w;
    size_t per = (GPFQ_CONV_MIN_COLUMNS + pixels - 1) / pixels;
    if (per < 1) per = 1;
    return per < n ? per : n;
}

size_t gpfq_conv2d_scratch(const gpfq_conv_geom *g, size_t n) {
    if (is_pointwise(g) || n == 0) return 0;
    size_t chunk = images_per_gemm(g, n);
    size_t pixels = (size_t)g->out_h * g->out_w;
    size_t rows = (size_t)(g->in_c / g->groups) * g->kernel_h * g->kernel_w;
    size_t col = rows * pixels * chunk;
    /* a staging product (out_c/groups, chunk*pixels): for chunk > 1, and for a residual
     * that is the output itself (gpfq_conv2d_fused) */
    size_t staging = (size_t)(g->out_c / g->groups) * pixels * chunk;
    return col + staging;
}

void gpfq_im2col(const gpfq_conv_geom *g, const float *x, int c0, int cg, float *col,
                 size_t col_stride) {
    const int oh = g->out_h, ow = g->out_w, ih = g->in_h, iw = g->in_w;
    for (int c = 0; c < cg; c++) {
        const float *plane = x + (size_t)(c0 + c) * ih * iw;
        for (int ki = 0; ki < g->kernel_h; ki++) {
            for (int kj = 0; kj < g->kernel_w; kj++) {
                float *row = col + ((size_t)(c * g->kernel_h + ki) * g->kernel_w + kj) * col_stride;
                for (int oy = 0; oy < oh; oy++) {
                    int sy = oy * g->stride_h - g->pad_h + ki * g->dilation_h;
                    float *dst = row + (size_t)oy * ow;
                    if (sy < 0 || sy >= ih) {
                        memset(dst, 0, sizeof(float) * (size_t)ow);
                        continue;
                    }
                    const float *src = plane + (size_t)sy * iw;
                    const int sx0 = -g->pad_w + kj * g->dilation_w, sw = g->stride_w;
                    /* output columns whose source lies inside the row: [lo, hi) */
                    int lo = sx0 >= 0 ? 0 : (-sx0 + sw - 1) / sw;
                    int hi = iw - sx0 <= 0 ? 0 : (iw - sx0 + sw - 1) / sw;
                    if (hi > ow) hi = ow;
                    if (lo > hi) lo = hi;
                    for (int ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
                    if (sw == 1) {
                        memcpy(dst + lo, src + sx0 + lo, sizeof(float) * (size_t)(hi - lo));
                    } else {
                        for (int ox = lo; ox < hi; ox++) dst[ox] = src[sx0 + ox * sw];
                    }
                    for (int ox = hi; ox < ow; ox++) dst[ox] = 0.0f;
                }
            }
        }
    }
}

/* The bias, then the epilogue, in one pass over y (n, channels, pixels). */
static void finish(const float *bias, const gpfq_conv_epilogue *e, size_t n, int channels,
                   size_t pixels, float *y) {
    if (!bias && !e) return;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < channels; c++) {
            const size_t at = (i * channels + c) * pixels;
            /* no bias: -0, which adds nothing (+0 would turn -0 into +0) */
            gpfq_epilogue_run(e, c, bias ? bias[c] : -0.0f, y + at, y + at, at, pixels);
        }
}

/* A kernel's fallback path could not get the buffer it needed for this call. */
static gpfq_status out_of_memory(const gpfq_conv_geom *g, size_t floats) {
    return gpfq_fail(GPFQ_ERR_NOMEM,
                     "out of memory allocating %zu bytes for a %dx%d convolution (%d -> %d "
                     "channels, %dx%d input)",
                     floats * sizeof(float), g->kernel_h, g->kernel_w, g->in_c, g->out_c, g->in_h,
                     g->in_w);
}

gpfq_status gpfq_conv2d(const gpfq_conv_geom *g, const float *x, const float *weight,
                        const float *bias, size_t n, float *y, float *scratch) {
    return gpfq_conv2d_fused(g, x, weight, NULL, bias, NULL, n, y, scratch);
}

gpfq_status gpfq_conv2d_fused(const gpfq_conv_geom *g, const float *x, const float *weight,
                              const float *packed, const float *bias,
                              const gpfq_conv_epilogue *epilogue, size_t n, float *y,
                              float *scratch) {
    const size_t pixels = (size_t)g->out_h * g->out_w;
    const size_t in_size = (size_t)g->in_c * g->in_h * g->in_w;
    const size_t out_size = (size_t)g->out_c * pixels;
    const int cg = g->in_c / g->groups, og = g->out_c / g->groups;
    const int rows = cg * g->kernel_h * g->kernel_w;

    if (epilogue && epilogue->pool) {
        /* the direct kernel refuses a pool it cannot run (gpfq_conv2d_direct) */
        if (gpfq_conv_direct_fits(g) &&
            gpfq_conv2d_direct(g, x, weight, packed, bias, epilogue, n, y) == 0)
            return GPFQ_OK;
        /* a kernel that cannot pool: the output into `unpooled` (or, where the caller gave
         * none, expecting the direct kernel to pool, a buffer of this call's), then the pool */
        gpfq_conv_epilogue e = *epilogue;
        e.pool = 0;
        float *own = e.unpooled ? NULL : malloc(n * out_size * sizeof(float));
        if (!e.unpooled) e.unpooled = own;
        if (!e.unpooled) return out_of_memory(g, n * out_size);
        const gpfq_status st =
            gpfq_conv2d_fused(g, x, weight, packed, bias, &e, n, e.unpooled, scratch);
        if (st != GPFQ_OK) {
            free(own);
            return st;
        }
        const gpfq_conv_geom pg = {
            g->out_c, g->out_h, g->out_w, g->out_c, g->out_h / 2, g->out_w / 2, 2, 2, 2, 2, 0,
            0,        1,        1,        1};
        gpfq_maxpool2d(&pg, e.unpooled, n, y);
        free(own);
        return GPFQ_OK;
    }

    if (is_pointwise(g)) {
        /* the forward pass folds an Add only into direct-kernel convs, never a 1x1 one */
        GPFQ_ASSERT(!gpfq_residual_aliases(epilogue, y, n * out_size));
        for (size_t i = 0; i < n; i++)
            gpfq_sgemm(0, 0, (size_t)g->out_c, pixels, (size_t)g->in_c, 1.0f, weight,
                       (size_t)g->in_c, x + i * in_size, pixels, 0.0f, y + i * out_size, pixels);
        finish(bias, epilogue, n, g->out_c, pixels, y);
        return GPFQ_OK;
    }

    if (gpfq_conv_direct_fits(g) &&
        gpfq_conv2d_direct(g, x, weight, packed, bias, epilogue, n, y) == 0)
        return GPFQ_OK;

    /* where the residual is y itself (an Add writing over its other operand, which the
     * direct kernel handles, but it may have had no memory), the GEMM's outputs go through
     * the staging buffer and the epilogue on their way to y: each element's residual is read
     * before its output is written */
    const int alias = gpfq_residual_aliases(epilogue, y, n * out_size);
    GPFQ_ASSERT(!alias || epilogue->residual == y); /* the same elements, or none */
    const size_t chunk = images_per_gemm(g, n);
    /* no scratch from the caller (a plan expecting the direct kernel): one for this call */
    float *own = scratch ? NULL : malloc(gpfq_conv2d_scratch(g, n) * sizeof(float));
    if (!scratch) scratch = own;
    if (!scratch) return out_of_memory(g, gpfq_conv2d_scratch(g, n));
    float *col = scratch;
    float *staging = scratch + (size_t)rows * pixels * chunk;
    for (size_t first = 0; first < n; first += chunk) {
        size_t count = n - first < chunk ? n - first : chunk;
        size_t columns = count * pixels;
        for (int grp = 0; grp < g->groups; grp++) {
            for (size_t i = 0; i < count; i++)
                gpfq_im2col(g, x + (first + i) * in_size, grp * cg, cg, col + i * pixels, columns);
            const float *wg = weight + (size_t)grp * og * rows;
            if (count == 1 && !alias) {
                float *dst = y + first * out_size + (size_t)grp * og * pixels;
                gpfq_sgemm(0, 0, (size_t)og, pixels, (size_t)rows, 1.0f, wg, (size_t)rows, col,
                           pixels, 0.0f, dst, pixels);
                continue;
            }
            gpfq_sgemm(0, 0, (size_t)og, columns, (size_t)rows, 1.0f, wg, (size_t)rows, col,
                       columns, 0.0f, staging, columns);
            for (size_t i = 0; i < count; i++)
                for (int o = 0; o < og; o++) {
                    const int c = grp * og + o;
                    const size_t at = (first + i) * out_size + (size_t)c * pixels;
                    const float *src = staging + (size_t)o * columns + i * pixels;
                    if (alias)
                        gpfq_epilogue_run(epilogue, c, bias ? bias[c] : -0.0f, src, y + at, at,
                                          pixels);
                    else
                        memcpy(y + at, src, sizeof(float) * pixels);
                }
        }
    }
    if (!alias) finish(bias, epilogue, n, g->out_c, pixels, y);
    free(own);
    return GPFQ_OK;
}

void gpfq_conv2d_ref(const gpfq_conv_geom *g, const float *x, const float *weight,
                     const float *bias, size_t n, float *y) {
    const int cg = g->in_c / g->groups, og = g->out_c / g->groups;
    for (size_t i = 0; i < n; i++)
        for (int o = 0; o < g->out_c; o++) {
            int grp = o / og;
            for (int oy = 0; oy < g->out_h; oy++)
                for (int ox = 0; ox < g->out_w; ox++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int c = 0; c < cg; c++)
                        for (int ki = 0; ki < g->kernel_h; ki++)
                            for (int kj = 0; kj < g->kernel_w; kj++) {
                                int sy = oy * g->stride_h - g->pad_h + ki * g->dilation_h;
                                int sx = ox * g->stride_w - g->pad_w + kj * g->dilation_w;
                                if (sy < 0 || sy >= g->in_h || sx < 0 || sx >= g->in_w) continue;
                                size_t xi =
                                    ((i * g->in_c + grp * cg + c) * g->in_h + sy) * g->in_w + sx;
                                size_t wi =
                                    (((size_t)o * cg + c) * g->kernel_h + ki) * g->kernel_w + kj;
                                acc += (double)x[xi] * weight[wi];
                            }
                    y[((i * g->out_c + o) * g->out_h + oy) * g->out_w + ox] = (float)acc;
                }
        }
}
