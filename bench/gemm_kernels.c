/*
 * gemm_kernels: gpfq_sgemm's AVX-512 kernel against OpenBLAS's cblas_sgemm (with whichever
 * kernel OpenBLAS loaded: OPENBLAS_CORETYPE decides) on the GEMM shapes gpfq runs, one
 * thread each, in GFLOP/s, with the largest difference between the two results relative to
 * the largest result (a fast wrong kernel shows).
 *
 *     build/bench/gemm_kernels [--repeat R]
 *
 * Best of R timed calls (default 7) after one untimed call, the two kernels alternating.
 */
#include "bench_args.h"
#include "gpfq/gpfq.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);

typedef struct {
    const char *what;
    size_t M, N, K;
    int ta, tb;
} shape;

static const shape SHAPES[] = {
    {"mlp fc1 forward, x W^T", 256, 500, 784, 0, 1},
    {"mlp fc2 forward, x W^T", 256, 300, 500, 0, 1},
    {"lenet5 fc1 forward, x W^T", 256, 120, 400, 0, 1},
    {"ublock P = Yb U^T (mlp fc1)", 128, 500, 256, 0, 1},
    {"ublock U += Wb^T Xb (mlp fc1)", 500, 256, 128, 1, 0},
    {"layer error W Xt (mlp fc1)", 500, 256, 784, 0, 0},
    {"gram G = Yt Xt^T (lenet5 conv2)", 150, 150, 6656, 0, 1},
    {"square", 1024, 1024, 1024, 0, 0},
};

static float *random_floats(size_t n, unsigned *seed) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; v && i < n; i++) v[i] = (float)rand_r(seed) / RAND_MAX - 0.5f;
    return v;
}

int main(int argc, char **argv) {
    int repeat;
    const int done = bench_repeat_arg(argc, argv, "gemm_kernels", &repeat);
    if (done >= 0) return done;
    gpfq_gemm_set_kernel(GPFQ_GEMM_AVX512);
    if (gpfq_gemm_get_kernel() != GPFQ_GEMM_AVX512) {
        printf("gemm_kernels: this CPU has no AVX-512: gpfq_sgemm runs OpenBLAS, nothing to "
               "compare\n");
        return 0;
    }
    openblas_set_num_threads(1);
    printf("one thread; OpenBLAS %s kernel (OPENBLAS_CORETYPE=%s); best of %d calls\n",
           openblas_get_corename(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)", repeat);
    printf("%-34s %18s %13s %13s %7s %9s\n", "product", "M x N x K", "OpenBLAS", "gpfq", "ratio",
           "max diff");
    unsigned seed = 1;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        const shape *p = &SHAPES[s];
        const size_t a_rows = p->ta ? p->K : p->M, a_cols = p->ta ? p->M : p->K;
        const size_t b_rows = p->tb ? p->N : p->K, b_cols = p->tb ? p->K : p->N;
        float *A = random_floats(a_rows * a_cols, &seed),
              *B = random_floats(b_rows * b_cols, &seed);
        float *C0 = calloc(p->M * p->N, sizeof(float)), *C1 = calloc(p->M * p->N, sizeof(float));
        if (!A || !B || !C0 || !C1) {
            fprintf(stderr, "gemm_kernels: out of memory\n");
            return 1;
        }
        double best[2] = {1e30, 1e30};
        for (int r = 0; r <= repeat; r++)
            for (int k = 0; k < 2; k++) {
                const double t0 = gpfq_now();
                if (k == 0)
                    cblas_sgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans,
                                p->tb ? CblasTrans : CblasNoTrans, (int)p->M, (int)p->N, (int)p->K,
                                1.0f, A, (int)a_cols, B, (int)b_cols, 0.0f, C0, (int)p->N);
                else
                    gpfq_sgemm(p->ta, p->tb, p->M, p->N, p->K, 1.0f, A, a_cols, B, b_cols, 0.0f, C1,
                               p->N);
                const double t = gpfq_now() - t0;
                if (r > 0 && t < best[k]) best[k] = t;
            }
        double diff = 0.0, scale = 0.0;
        for (size_t i = 0; i < p->M * p->N; i++) {
            diff = fmax(diff, fabs((double)C1[i] - C0[i]));
            scale = fmax(scale, fabs((double)C0[i]));
        }
        const double flops = 2.0 * (double)p->M * (double)p->N * (double)p->K;
        char dims[48];
        snprintf(dims, sizeof dims, "%zu x %zu x %zu", p->M, p->N, p->K);
        printf("%-34s %18s %7.1f GF/s %7.1f GF/s %6.2fx %9.1e\n", p->what, dims,
               flops / best[0] * 1e-9, flops / best[1] * 1e-9, best[0] / best[1],
               scale > 0 ? diff / scale : diff);
        free(A), free(B), free(C0), free(C1);
    }
    return 0;
}
