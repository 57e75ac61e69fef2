/*
 * conv_kernels: every conv kernel gpfq has, on every distinct conv of the given models, in
 * GFLOP/s next to a cblas_sgemm 1024^3 measured in the same run at the same thread count,
 * and next to the FMA peak of the cores (a loop of independent FMAs, no memory traffic).
 *
 *     build/bench/conv_kernels [--threads 1,2] [--images 64] [MODEL.h5 ...]
 *     build/bench/conv_kernels --fma-peak [--threads 2]
 *
 * --fma-peak prints only the FMA peak of the given thread counts (best of 3 loops, AVX-512
 * where the CPU has it, else AVX2), one line each, for bench/run.sh's floors.
 *
 * Default models: data/models/{lenet5,resnet20,resnet18}_fashion.h5. Random inputs; the
 * kernels' outputs are compared with each other (max relative difference printed) so that a
 * fast wrong kernel shows. Best of 5 timed calls after one untimed call.
 */
#include "gpfq/gpfq.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t n, unsigned *seed) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; v && i < n; i++) v[i] = (float)rand_r(seed) / RAND_MAX - 0.5f;
    return v;
}

static double sgemm_peak(int n) {
    unsigned seed = 1;
    float *a = random_floats((size_t)n * n, &seed), *b = random_floats((size_t)n * n, &seed);
    float *c = malloc((size_t)n * n * sizeof(float));
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        double t = now() - t0;
        if (r > 0 && t < best) best = t;
    }
    free(a), free(b), free(c);
    return 2.0 * n * (double)n * n / best * 1e-9;
}

/* The FMA peak of one core: CHAINS independent chains of FMAs (as many as the registers
 * hold), no memory. */
#define FMA_LOOP(NAME, TARGET, VEC, P, WIDTH, CHAINS)                                              \
    __attribute__((target(TARGET))) static double NAME(long iterations) {                          \
        VEC acc[CHAINS], a = P##_set1_ps(0.999f), b = P##_set1_ps(1e-4f);                          \
        for (int i = 0; i < (CHAINS); i++) acc[i] = P##_set1_ps((float)i);                         \
        for (long it = 0; it < iterations; it++) {                                                 \
            _Pragma("GCC unroll 24") for (int i = 0; i < (CHAINS); i++) acc[i] =                   \
                P##_fmadd_ps(acc[i], a, b);                                                        \
        }                                                                                          \
        float sink[WIDTH];                                                                         \
        VEC sum = acc[0];                                                                          \
        for (int i = 1; i < (CHAINS); i++) sum = P##_add_ps(sum, acc[i]);                          \
        P##_storeu_ps(sink, sum);                                                                  \
        return sink[0];                                                                            \
    }
FMA_LOOP(fma_loop_avx512, "avx512f", __m512, _mm512, 16, 24)
FMA_LOOP(fma_loop_avx2, "avx2,fma", __m256, _mm256, 8, 12)

typedef struct {
    long iterations;
    int avx512;
    double sink;
} fma_job;

static void *fma_thread(void *arg) {
    fma_job *j = arg;
    j->sink = j->avx512 ? fma_loop_avx512(j->iterations) : fma_loop_avx2(j->iterations);
    return NULL;
}

/* GFLOP/s of `threads` cores running fma_loop at once; 0 if the CPU has no AVX2. */
static double fma_peak(int threads, int avx512) {
    if (avx512 ? !__builtin_cpu_supports("avx512f") : !__builtin_cpu_supports("fma")) return 0;
    const long iterations = 20000000;
    pthread_t ids[64];
    fma_job jobs[64];
    double t0 = now();
    for (int t = 0; t < threads; t++) {
        jobs[t] = (fma_job){iterations, avx512, 0};
        pthread_create(&ids[t], NULL, fma_thread, &jobs[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    double seconds = now() - t0;
    return 2.0 * (avx512 ? 24 * 16 : 12 * 8) * (double)iterations * threads / seconds * 1e-9;
}

static int same_geom(const gpfq_conv_geom *a, const gpfq_conv_geom *b) {
    return memcmp(a, b, sizeof *a) == 0;
}

static void bench_conv(const char *model, const gpfq_conv_geom *g, size_t n, double peak) {
    unsigned seed = 7;
    size_t xs = n * g->in_c * g->in_h * g->in_w, ys = n * g->out_c * g->out_h * g->out_w;
    size_t ws = (size_t)g->out_c * g->in_c * g->kernel_h * g->kernel_w;
    float *x = random_floats(xs, &seed), *w = random_floats(ws, &seed);
    float *y = malloc(ys * sizeof(float)), *y0 = malloc(ys * sizeof(float));
    float *scratch = malloc((gpfq_conv2d_scratch(g, n) + 1) * sizeof(float));
    double flops = 2.0 * n * g->out_c * g->out_h * g->out_w * g->in_c * g->kernel_h * g->kernel_w;
    printf("%-9s %4d->%-4d %3dx%-3d k%dx%d s%d p%d ", model, g->in_c, g->out_c, g->in_h, g->in_w,
           g->kernel_h, g->kernel_w, g->stride_h, g->pad_h);
    /* the last three columns: the interleaved kernel (16 images per vector), and Winograd
     * F(2x2, 3x3) and F(4x4, 3x3), all on AVX-512, their GFLOP/s counted as the direct
     * kernel's flops over their time. The direct kernels run on weights packed beforehand, as a
     * forward plan keeps them. */
    enum { CONFIGS = 6 };
    const gpfq_conv_kernel kernels[CONFIGS] = {GPFQ_CONV_IM2COL, GPFQ_CONV_AVX2,
                                               GPFQ_CONV_AVX512, GPFQ_CONV_AVX512,
                                               GPFQ_CONV_AVX512, GPFQ_CONV_AVX512};
    const gpfq_winograd_mode modes[CONFIGS] = {GPFQ_WINOGRAD_OFF, GPFQ_WINOGRAD_OFF,
                                               GPFQ_WINOGRAD_OFF, GPFQ_WINOGRAD_OFF,
                                               GPFQ_WINOGRAD_ALL, GPFQ_WINOGRAD_ALL};
    const gpfq_interleave_mode interleaved[CONFIGS] = {GPFQ_INTERLEAVE_OFF, GPFQ_INTERLEAVE_OFF,
                                                       GPFQ_INTERLEAVE_OFF, GPFQ_INTERLEAVE_ALL,
                                                       GPFQ_INTERLEAVE_OFF, GPFQ_INTERLEAVE_OFF};
    const int tiles[CONFIGS] = {0, 0, 0, 0, 2, 4};
    const gpfq_winograd_mode initial = gpfq_conv_get_winograd();
    const gpfq_interleave_mode initial_il = gpfq_conv_get_interleave();
    const int initial_tile = gpfq_conv_set_winograd_tile(0);
    for (int k = 0; k < CONFIGS; k++) {
        gpfq_conv_set_kernel(kernels[k]);
        gpfq_conv_set_winograd(modes[k]);
        gpfq_conv_set_interleave(interleaved[k]);
        gpfq_conv_set_winograd_tile(tiles[k]);
        if (gpfq_conv_get_kernel() != kernels[k] ||
            (kernels[k] != GPFQ_CONV_IM2COL && !gpfq_conv_direct_fits(g)) ||
            (modes[k] == GPFQ_WINOGRAD_ALL && !gpfq_conv_winograd_fits(g)) ||
            (interleaved[k] == GPFQ_INTERLEAVE_ALL && !gpfq_conv_interleaved_fits(g))) {
            printf(" %16s", "-");
            continue;
        }
        float *out = k == 0 ? y0 : y;
        const size_t packed_floats = k == 0 ? 0 : gpfq_conv2d_packed_floats(g);
        float *packed = packed_floats ? malloc(packed_floats * sizeof(float)) : NULL;
        if (packed) gpfq_conv2d_pack(g, w, packed);
        if (gpfq_conv2d_fused(g, x, w, packed, NULL, NULL, n, out, scratch) != GPFQ_OK) {
            fprintf(stderr, "conv_kernels: %s\n", gpfq_last_error());
            exit(1);
        }
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            gpfq_conv2d_fused(g, x, w, packed, NULL, NULL, n, out, scratch);
            double t = now() - t0;
            if (t < best) best = t;
        }
        free(packed);
        double diff = 0, scale = 0;
        for (size_t i = 0; k > 0 && i < ys; i++) {
            diff = fmax(diff, fabs((double)y[i] - y0[i]));
            scale = fmax(scale, fabs((double)y0[i]));
        }
        if (k > 0 && diff > 1e-4 * scale) printf(" (DIFFERS: %.2g)", diff / scale);
        printf(" %7.1f (%4.0f%%)", flops / best * 1e-9, 100.0 * flops / best * 1e-9 / peak);
    }
    gpfq_conv_set_winograd(initial);
    gpfq_conv_set_interleave(initial_il);
    gpfq_conv_set_winograd_tile(initial_tile);
    printf("\n");
    free(x), free(w), free(y), free(y0), free(scratch);
}

int main(int argc, char **argv) {
    int threads[8] = {1, 2}, n_threads = 2;
    size_t images = 64;
    const char *defaults[] = {"data/models/lenet5_fashion.h5", "data/models/resnet20_fashion.h5",
                              "data/models/resnet18_fashion.h5"};
    const char *models[16];
    int n_models = 0, peak_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fma-peak") == 0) {
            peak_only = 1;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            n_threads = 0;
            for (char *p = argv[++i]; *p && n_threads < 8; p++) {
                threads[n_threads++] = (int)strtol(p, &p, 10);
                if (!*p) break;
            }
        } else if (strcmp(argv[i], "--images") == 0 && i + 1 < argc) {
            images = (size_t)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--help") == 0 || argv[i][0] == '-') {
            fprintf(stderr, "usage: conv_kernels [--threads 1,2] [--images 64] [MODEL.h5 ...]\n"
                            "       conv_kernels --fma-peak [--threads 2]\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        } else if (n_models < 16) {
            models[n_models++] = argv[i];
        }
    }
    if (peak_only) {
        const int avx512 = __builtin_cpu_supports("avx512f");
        for (int t = 0; t < n_threads; t++) {
            double best = 0;
            for (int r = 0; r < 3; r++) {
                double g = fma_peak(threads[t], avx512);
                if (g > best) best = g;
            }
            printf("fma peak %d threads %.1f GFLOP/s (%s)\n", threads[t], best,
                   avx512 ? "AVX-512" : "AVX2");
        }
        return 0;
    }
    if (n_models == 0)
        for (int i = 0; i < 3; i++) models[n_models++] = defaults[i];

    printf("conv kernels, %zu random images per call, best of 5; OpenBLAS %s kernel; default "
           "conv kernel: %s\n",
           images, openblas_get_corename(), gpfq_conv_kernel_name(gpfq_conv_get_kernel()));
    for (int t = 0; t < n_threads; t++) {
        openblas_set_num_threads(threads[t]);
        double peak = sgemm_peak(1024);
        printf("\n-- threads %d: cblas_sgemm 1024^3 %.1f GFLOP/s; FMA peak AVX2 %.1f, AVX-512 "
               "%.1f GFLOP/s; GFLOP/s (%% of the sgemm) --\n",
               threads[t], peak, fma_peak(threads[t], 0), fma_peak(threads[t], 1));
        printf("%-9s %-28s %16s %16s %16s %16s %16s %16s\n", "model", "conv", "im2col+sgemm",
               "direct AVX2", "direct AVX-512", "interleaved", "Winograd F(2x2)",
               "Winograd F(4x4)");
        for (int mi = 0; mi < n_models; mi++) {
            gpfq_model *m = NULL;
            if (gpfq_model_load(models[mi], &m) != GPFQ_OK) {
                fprintf(stderr, "conv_kernels: %s\n", gpfq_last_error());
                return 1;
            }
            const char *base = strrchr(models[mi], '/') ? strrchr(models[mi], '/') + 1 : models[mi];
            char name[16];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(base, "_."), base);
            gpfq_conv_geom seen[64];
            int n_seen = 0;
            for (int i = 0; i < m->n_nodes; i++) {
                const gpfq_node *node = &m->nodes[i];
                if (node->op != GPFQ_OP_CONV2D) continue;
                gpfq_conv_geom g = {node->in_shape.c,  node->in_shape.h,  node->in_shape.w,
                                    node->out_shape.c, node->out_shape.h, node->out_shape.w,
                                    node->kernel[0],   node->kernel[1],   node->stride[0],
                                    node->stride[1],   node->padding[0],  node->padding[1],
                                    node->dilation[0], node->dilation[1], node->groups};
                int known = 0;
                for (int s = 0; s < n_seen; s++) known |= same_geom(&seen[s], &g);
                if (known || n_seen == 64) continue;
                seen[n_seen++] = g;
                bench_conv(name, &g, images, peak);
            }
            gpfq_model_free(m);
        }
    }
    return 0;
}
