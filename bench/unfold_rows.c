/*
 * unfold_rows: the unfolding of the conv patches GPFQ samples (src/quant/unfold.c) on the
 * shipped models' conv geometries, 256 images, a quarter of each image's patches kept (the
 * defaults, counted as the driver counts them), on the AVX-512 rows against the scalar loops, one
 * thread, in ms per side (one of X and Y) and GB/s of patches written. The two results must be the
 * same bits.
 *
 *     build/bench/unfold_rows [--repeat R]
 *
 * Best of R timed passes (default 7) after one untimed one, the two paths alternating.
 */
#include "bench_args.h"
#include "gpfq/gpfq.h"
#include "quant/unfold.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *what;
    int c, hw, k, pad;
} geometry;

static const geometry GEOMETRIES[] = {
    {"lenet5 conv1, 1x28x28, 5x5", 1, 28, 5, 2},
    {"lenet5 conv2, 6x14x14, 5x5", 6, 14, 5, 0},
    {"resnet20 stage 1, 16x28x28, 3x3", 16, 28, 3, 1},
    {"resnet20 stage 2, 32x14x14, 3x3", 32, 14, 3, 1},
    {"resnet20 stage 3, 64x7x7, 3x3", 64, 7, 3, 1},
};

enum { IMAGES = 256 };

static double run(const gpfq_conv_geom *g, const float *images, const uint32_t *offset, size_t keep,
                  float *pad, float *dst, size_t m) {
    const size_t image = (size_t)g->in_c * g->in_h * g->in_w;
    const double t = gpfq_now();
    for (size_t i = 0; i < IMAGES; i++)
        gpfq_unfold_patches(g, images + i * image, 0, g->in_c, offset + i * keep, keep, pad,
                            dst + i * keep, m);
    return gpfq_now() - t;
}

int main(int argc, char **argv) {
    int repeat;
    const int done = bench_repeat_arg(argc, argv, "unfold_rows", &repeat);
    if (done >= 0) return done;
    if (gpfq_conv_set_kernel(GPFQ_CONV_AVX512), gpfq_conv_get_kernel() != GPFQ_CONV_AVX512) {
        printf("unfold_rows: this CPU has no AVX-512: the scalar loops only, nothing to "
               "compare\n");
        return 0;
    }
    printf("%-34s %6s %5s %9s %9s %7s %6s\n", "geometry (256 images)", "keep", "d", "scalar ms",
           "avx512 ms", "ratio", "GB/s");
    unsigned seed = 1;
    int bad = 0;
    for (size_t s = 0; s < sizeof GEOMETRIES / sizeof *GEOMETRIES; s++) {
        const geometry *e = &GEOMETRIES[s];
        gpfq_conv_geom g = {.in_c = e->c,
                            .in_h = e->hw,
                            .in_w = e->hw,
                            .out_c = 1,
                            .kernel_h = e->k,
                            .kernel_w = e->k,
                            .stride_h = 1,
                            .stride_w = 1,
                            .pad_h = e->pad,
                            .pad_w = e->pad,
                            .dilation_h = 1,
                            .dilation_w = 1,
                            .groups = 1};
        g.out_h = gpfq_window_out(g.in_h, g.kernel_h, 1, g.pad_h, 1, 0);
        g.out_w = gpfq_window_out(g.in_w, g.kernel_w, 1, g.pad_w, 1, 0);
        const size_t P = (size_t)g.out_h * g.out_w;
        size_t keep = (size_t)(0.25 * (double)P + 1.0); /* as the driver keeps them */
        if (keep > P) keep = P;
        const size_t m = IMAGES * keep;
        const size_t d = (size_t)e->c * e->k * e->k, pw = gpfq_unfold_padded_w(&g);
        const size_t image = (size_t)e->c * e->hw * e->hw;
        float *images = malloc(IMAGES * image * sizeof(float));
        float *pad = calloc(gpfq_unfold_padded_h(&g) * pw, sizeof(float));
        float *a = malloc(d * m * sizeof(float)), *b = malloc(d * m * sizeof(float));
        uint32_t *offset = malloc(m * sizeof(uint32_t)), *pool = malloc(P * sizeof(uint32_t));
        if (!images || !pad || !a || !b || !offset || !pool) return 1;
        for (size_t i = 0; i < IMAGES * image; i++) images[i] = (float)rand_r(&seed) / RAND_MAX;
        for (size_t i = 0; i < IMAGES; i++) { /* a draw without replacement, as the driver's */
            for (size_t p = 0; p < P; p++) pool[p] = (uint32_t)p;
            for (size_t j = 0; j < keep; j++) {
                const size_t r = j + (size_t)rand_r(&seed) % (P - j);
                const uint32_t t = pool[j];
                pool[j] = pool[r], pool[r] = t;
                offset[i * keep + j] = (uint32_t)(pool[j] / g.out_w * pw + pool[j] % g.out_w);
            }
        }
        double best[2] = {1e30, 1e30};
        for (int r = 0; r <= repeat; r++)
            for (int v = 0; v < 2; v++) {
                gpfq_conv_set_kernel(v ? GPFQ_CONV_AVX512 : GPFQ_CONV_AVX2);
                const double t = run(&g, images, offset, keep, pad, v ? b : a, m);
                if (r > 0 && t < best[v]) best[v] = t;
            }
        const int same = memcmp(a, b, d * m * sizeof(float)) == 0;
        bad += !same;
        printf("%-34s %6zu %5zu %9.3f %9.3f %6.2fx %6.1f%s\n", e->what, keep, d, best[0] * 1e3,
               best[1] * 1e3, best[0] / best[1], (double)d * m * sizeof(float) / best[1] / 1e9,
               same ? "" : "  DIFFERENT");
        free(images), free(pad), free(a), free(b), free(offset), free(pool);
    }
    printf("ratio = scalar / avx512, each the best of %d; GB/s of the avx512 rows\n", repeat);
    return bad ? 1 : 0;
}
