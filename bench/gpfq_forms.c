/*
 * Benchmark of the GPFQ layer forms (not a test: it checks nothing but that
 * the runs succeed).
 *
 * Part 1: for each model, one gpfq_quantize_model() run per form (auto, gram,
 * ublock, ref) with the defaults of the research code's Fashion-MNIST line
 * (bs 256, 4 bits, scalar 1.16, retain rate 0.25, shared calibration). Per
 * layer: N x d, m, the seconds of the layer's GPFQ in each form, the speedup of
 * each fast form over ref, the form auto ran, and how much of a fast form's
 * time went to BLAS. Per model: the whole gpfq_quantize_model() time. An
 * untimed auto run comes first, so that every timed run finds the memory it
 * needs already touched.
 *
 * Part 2: GFLOP/s of the two Gram products of the gram form (the sgemm
 * G = Yt Xt^T, d x m by m x d, and the ssyrk H = Yt Yt^T) at the (d, m) of every
 * conv layer met in part 1, against a 2048^3 sgemm measured in the same run.
 *
 * How the layer GPFQ is timed. The driver calls gpfq_gpfq_layer() (or, for a
 * Linear layer whose reference norm the float pass gives, gpfq_gpfq_layer_no_norm(), or on a
 * Linear layer's inputs as the networks hold them, gpfq_gpfq_layer_rows(), or on a first conv's
 * Gram matrix alone, gpfq_gpfq_layer_gram()) once per layer (per group); this program is linked
 * with -Wl,--wrap=gpfq_gpfq_layer,--wrap=gpfq_gpfq_layer_no_norm,--wrap=gpfq_gpfq_layer_rows,
 * --wrap=gpfq_gpfq_layer_gram,--wrap=gpfq_sgemm,--wrap=gpfq_sgemm_tri,--wrap=cblas_sgemm,--wrap=cblas_ssyrk,
 * --wrap=cblas_strmm so that those calls come here first. The wrapper times the
 * real gpfq_gpfq_layer() with stats = NULL (the GPFQ proper: transposes, the
 * form, the code values; not the layer error), then computes the error with the
 * public gpfq_layer_error() outside the timed span and fills the stats the
 * driver reads. GEMM calls made inside the timed span (gpfq_sgemm and
 * gpfq_sgemm_tri, the latter by the part it computes, and the BLAS routines when
 * gpfq runs them on OpenBLAS) are counted, their flops on every thread (a layer
 * splits its products between two), their time on the thread that called
 * gpfq_gpfq_layer() only. The form auto ran is the library's own choice,
 * gpfq_layer_form(). The driver's other path for a conv, its patches gathered inside ublock's
 * passes (gpfq_gpfq_layer_patches), is turned off here (gpfq_layer_gather_allow), so that every
 * form is timed on the same unfolded patches.
 *
 * The ref guard (--max-ref-seconds S): before a ref layer, the ref loop runs on
 * the first k and 2k columns, k = ceil(d/32) (the loop's cost per column does
 * not depend on the column; the smaller of the two runs scaled to d columns);
 * when that predicts more than S seconds, the layer is quantized with the auto
 * form instead and the ref time shown is the prediction, marked '~'.
 */
#include <cblas.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "gpfq/gpfq.h"
#include "quant/ublock.h"

#ifndef GPFQ_BENCH_SOURCE_DIR
#define GPFQ_BENCH_SOURCE_DIR "."
#endif
#ifndef GPFQ_BENCH_EXPORT_DIR
#define GPFQ_BENCH_EXPORT_DIR "/tmp"
#endif

#define TORCH_TUNABLES                                                                             \
    "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"

enum { N_FORMS = 4, MAX_LAYERS = 128, MAX_THREADS = 4, PROBE_PARTS = 32 };

/* Order of the columns: ref first, then the fast forms. */
static const gpfq_form FORMS[N_FORMS] = {GPFQ_FORM_REF, GPFQ_FORM_GRAM, GPFQ_FORM_UBLOCK,
                                         GPFQ_FORM_AUTO};

/* ---- the wrappers ---- */

gpfq_status __real_gpfq_gpfq_layer(const float *weight, size_t N, size_t d, const float *Xt,
                                   const float *Yt, size_t m, const gpfq_alphabet *a,
                                   gpfq_form form, size_t block, int32_t *codes, float *quantized,
                                   gpfq_layer_stats *stats);
gpfq_status __wrap_gpfq_gpfq_layer(const float *weight, size_t N, size_t d, const float *Xt,
                                   const float *Yt, size_t m, const gpfq_alphabet *a,
                                   gpfq_form form, size_t block, int32_t *codes, float *quantized,
                                   gpfq_layer_stats *stats);
void __real_gpfq_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                       const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                       size_t ldc);
void __wrap_gpfq_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                       const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                       size_t ldc);
void __real_gpfq_sgemm_tri(gpfq_tri tri, ptrdiff_t off, int trans_a, int trans_b, size_t M,
                           size_t N, size_t K, float alpha, const float *A, size_t lda,
                           const float *B, size_t ldb, float beta, float *C, size_t ldc);
void __wrap_gpfq_sgemm_tri(gpfq_tri tri, ptrdiff_t off, int trans_a, int trans_b, size_t M,
                           size_t N, size_t K, float alpha, const float *A, size_t lda,
                           const float *B, size_t ldb, float beta, float *C, size_t ldc);
void __real_cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                        blasint M, blasint N, blasint K, float alpha, const float *A, blasint lda,
                        const float *B, blasint ldb, float beta, float *C, blasint ldc);
void __wrap_cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                        blasint M, blasint N, blasint K, float alpha, const float *A, blasint lda,
                        const float *B, blasint ldb, float beta, float *C, blasint ldc);
void __real_cblas_ssyrk(enum CBLAS_ORDER order, enum CBLAS_UPLO uplo, enum CBLAS_TRANSPOSE trans,
                        blasint N, blasint K, float alpha, const float *A, blasint lda, float beta,
                        float *C, blasint ldc);
void __wrap_cblas_ssyrk(enum CBLAS_ORDER order, enum CBLAS_UPLO uplo, enum CBLAS_TRANSPOSE trans,
                        blasint N, blasint K, float alpha, const float *A, blasint lda, float beta,
                        float *C, blasint ldc);
void __real_cblas_strmm(enum CBLAS_ORDER order, enum CBLAS_SIDE side, enum CBLAS_UPLO uplo,
                        enum CBLAS_TRANSPOSE ta, enum CBLAS_DIAG diag, blasint M, blasint N,
                        float alpha, const float *A, blasint lda, float *B, blasint ldb);
void __wrap_cblas_strmm(enum CBLAS_ORDER order, enum CBLAS_SIDE side, enum CBLAS_UPLO uplo,
                        enum CBLAS_TRANSPOSE ta, enum CBLAS_DIAG diag, blasint M, blasint N,
                        float alpha, const float *A, blasint lda, float *B, blasint ldb);

/* What the wrapper saw for the layer being quantized (summed over groups). */
typedef struct {
    int calls;      /* gpfq_gpfq_layer calls (groups) */
    size_t N, d, m; /* of one group */
    double seconds; /* the GPFQ proper (or the ref prediction when est) */
    double blas_seconds, blas_flops;
    double kind_seconds[3], kind_flops[3]; /* sgemm, ssyrk, strmm */
    int blas_calls;
    long faults;             /* minor page faults inside the timed span */
    gpfq_form ran;           /* observed */
    int est;                 /* ref predicted, not run (the layer ran `ran` instead) */
    double stand_in_seconds; /* time of the form that ran instead of ref */
    double probe_seconds;    /* the ref guard's probe */
    int gram_only;           /* from G alone (gpfq_gpfq_layer_gram): G's sums not timed */
} layer_obs;

static struct {
    int active;
    int in_gpfq;        /* inside the timed span: account BLAS */
    pthread_t main;     /* the thread that called gpfq_gpfq_layer() */
    pthread_mutex_t mu; /* the counters, for GEMMs on two threads */
    double max_ref_seconds;
    layer_obs cur;
} W = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The clock of every figure but the whole-run total: wall time, or with
 * --clock cpu the CPU time of the calling thread (meaningful at one BLAS thread
 * only, where OpenBLAS computes in the calling thread; it leaves out the time
 * the thread waits for a CPU when other processes compete). */
static int use_cpu_clock;

static double bench_now(void) {
    if (!use_cpu_clock) return gpfq_now();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double blas_start(void) {
    return W.in_gpfq ? bench_now() : 0.0;
}

/* A GEMM on the helper thread adds its flops, not its time (which overlaps the caller's). */
static int on_main_thread(void) {
    return pthread_equal(pthread_self(), W.main);
}

enum { K_SGEMM, K_SSYRK, K_STRMM };
static const char *const KIND_NAMES[3] = {"sgemm", "ssyrk", "strmm"};

static void blas_stop(double start, double flops, int kind) {
    if (!W.in_gpfq) return;
    const double t = on_main_thread() ? bench_now() - start : 0.0;
    pthread_mutex_lock(&W.mu);
    W.cur.blas_seconds += t;
    W.cur.blas_flops += flops;
    W.cur.kind_seconds[kind] += t;
    W.cur.kind_flops[kind] += flops;
    W.cur.blas_calls++;
    pthread_mutex_unlock(&W.mu);
}

/* Set while gpfq_sgemm runs on this thread: its fallback's cblas_sgemm (GPFQ_GEMM=openblas, or a
 * CPU without AVX-512) is wrapped too, and must not be counted a second time. */
static _Thread_local int in_gpfq_sgemm;

void __wrap_gpfq_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                       const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                       size_t ldc) {
    double t = blas_start();
    in_gpfq_sgemm = 1;
    __real_gpfq_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    in_gpfq_sgemm = 0;
    blas_stop(t, 2.0 * (double)M * (double)N * (double)K, K_SGEMM);
}

/* The flops of a triangular product's part on or below its diagonal (row i: columns, or terms
 * of A's row, up to i + off), about what gpfq's kernel computes (it rounds the part out to
 * its 12 x 32 blocks); on OpenBLAS, which runs the full product, the full product's. */
void __wrap_gpfq_sgemm_tri(gpfq_tri tri, ptrdiff_t off, int trans_a, int trans_b, size_t M,
                           size_t N, size_t K, float alpha, const float *A, size_t lda,
                           const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    const gpfq_tri part = gpfq_gemm_get_kernel() == GPFQ_GEMM_AVX512 ? tri : GPFQ_TRI_NONE;
    const size_t width = part == GPFQ_TRI_LOWER_A ? K : N;
    double flops = 0.0;
    for (size_t i = 0; i < M; i++) {
        const ptrdiff_t reach = part == GPFQ_TRI_NONE ? (ptrdiff_t)width : (ptrdiff_t)i + off + 1;
        const size_t n = reach <= 0 ? 0 : (size_t)reach < width ? (size_t)reach : width;
        flops += 2.0 * (double)n * (double)(part == GPFQ_TRI_LOWER_A ? N : K);
    }
    double t = blas_start();
    in_gpfq_sgemm = 1;
    __real_gpfq_sgemm_tri(tri, off, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    in_gpfq_sgemm = 0;
    blas_stop(t, flops, K_SGEMM);
}

void __wrap_cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                        blasint M, blasint N, blasint K, float alpha, const float *A, blasint lda,
                        const float *B, blasint ldb, float beta, float *C, blasint ldc) {
    if (in_gpfq_sgemm) { /* counted by __wrap_gpfq_sgemm */
        __real_cblas_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    double t = blas_start();
    __real_cblas_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    blas_stop(t, 2.0 * M * N * K, K_SGEMM);
}

void __wrap_cblas_ssyrk(enum CBLAS_ORDER order, enum CBLAS_UPLO uplo, enum CBLAS_TRANSPOSE trans,
                        blasint N, blasint K, float alpha, const float *A, blasint lda, float beta,
                        float *C, blasint ldc) {
    double t = blas_start();
    __real_cblas_ssyrk(order, uplo, trans, N, K, alpha, A, lda, beta, C, ldc);
    blas_stop(t, (double)N * (N + 1) * K, K_SSYRK);
}

void __wrap_cblas_strmm(enum CBLAS_ORDER order, enum CBLAS_SIDE side, enum CBLAS_UPLO uplo,
                        enum CBLAS_TRANSPOSE ta, enum CBLAS_DIAG diag, blasint M, blasint N,
                        float alpha, const float *A, blasint lda, float *B, blasint ldb) {
    double t = blas_start();
    __real_cblas_strmm(order, side, uplo, ta, diag, M, N, alpha, A, lda, B, ldb);
    double k = side == CblasLeft ? M : N; /* the triangle's order */
    blas_stop(t, k * k * (side == CblasLeft ? N : M), K_STRMM);
}

/* Seconds of ref on the first k columns. */
static double ref_columns(const float *weight, size_t N, size_t d, const float *Xt, const float *Yt,
                          size_t m, const gpfq_alphabet *a, size_t k) {
    float *wk = malloc(N * k * sizeof(float));
    int32_t *ck = malloc(N * k * sizeof(int32_t));
    GPFQ_ASSERT(wk && ck);
    for (size_t i = 0; i < N; i++) memcpy(wk + i * k, weight + i * d, k * sizeof(float));
    double t = bench_now();
    gpfq_gpfq_layer_ref(wk, N, k, Xt, Yt, m, a, ck);
    t = bench_now() - t;
    free(wk), free(ck);
    return t;
}

/* Predicts ref on all d columns from runs on k and 2k columns: the loop costs the
 * same per column, so each run scaled to d is an upper bound (it includes the
 * fixed cost of allocating U, and any preemption); the smaller one is taken. */
static double probe_ref(const float *weight, size_t N, size_t d, const float *Xt, const float *Yt,
                        size_t m, const gpfq_alphabet *a, size_t k) {
    double t1 = ref_columns(weight, N, d, Xt, Yt, m, a, k) * (double)d / (double)k;
    double t2 = ref_columns(weight, N, d, Xt, Yt, m, a, 2 * k) * (double)d / (double)(2 * k);
    return t1 < t2 ? t1 : t2;
}

gpfq_status __real_gpfq_gpfq_layer_rows(const float *weight, size_t N, size_t d, const float *X,
                                        const float *Y, size_t m, const gpfq_alphabet *a,
                                        gpfq_form form, size_t block, int32_t *codes,
                                        float *quantized, float *residual, gpfq_layer_stats *stats,
                                        int want_norm);

/* The current layer's observation, counted as a call of an N x d layer on m columns */
static layer_obs *observe(size_t N, size_t d, size_t m) {
    layer_obs *o = &W.cur;
    o->calls++;
    o->N = N, o->d = d, o->m = m;
    return o;
}

/* A timed span on this thread: BLAS calls inside it are accounted, and its page faults added to
 * o's. span_start gives the start time, span_end the seconds since. */
static double span_start(struct rusage *ru0) {
    getrusage(RUSAGE_SELF, ru0);
    W.main = pthread_self();
    W.in_gpfq = 1;
    return bench_now();
}

static double span_end(layer_obs *o, double t0, const struct rusage *ru0) {
    const double t = bench_now() - t0;
    W.in_gpfq = 0;
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    o->faults += ru1.ru_minflt - ru0->ru_minflt;
    return t;
}

/* The wrappers' timed call: the real gpfq_gpfq_layer, or with rows gpfq_gpfq_layer_rows on X and
 * Y (m, d), without stats; the stats then from gpfq_layer_error (on transposed copies of X and
 * Y, made outside the timed span). */
static gpfq_status timed_layer(const float *weight, size_t N, size_t d, const float *Xt,
                               const float *Yt, size_t m, int rows, const gpfq_alphabet *a,
                               gpfq_form form, size_t block, int32_t *codes, float *quantized,
                               gpfq_layer_stats *stats) {
    layer_obs *o = observe(N, d, m);
    double predicted = -1.0;
    if (form == GPFQ_FORM_REF && W.max_ref_seconds > 0) {
        size_t k = (d + PROBE_PARTS - 1) / PROBE_PARTS;
        if (2 * k < d) {
            double t0 = bench_now();
            predicted = probe_ref(weight, N, d, Xt, Yt, m, a, k);
            o->probe_seconds += bench_now() - t0;
            if (predicted > W.max_ref_seconds) {
                form = GPFQ_FORM_AUTO;
                o->est = 1;
            }
        }
    }
    float *values = quantized ? quantized : malloc(N * d * sizeof(float));
    if (!values) return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for quantized weights");
    struct rusage ru0;
    const double t0 = span_start(&ru0);
    gpfq_status st =
        rows ? __real_gpfq_gpfq_layer_rows(weight, N, d, Xt, Yt, m, a, form, block, codes, values,
                                           NULL, NULL, 0)
             : __real_gpfq_gpfq_layer(weight, N, d, Xt, Yt, m, a, form, block, codes, values, NULL);
    const double t = span_end(o, t0, &ru0);
    const gpfq_form ran = gpfq_layer_form(N, d, m, form, block);
    o->ran = ran;
    if (o->est) {
        o->stand_in_seconds += t;
        o->seconds += predicted;
    } else {
        o->seconds += t;
    }
    if (st == GPFQ_OK && stats) {
        double ref = 0.0;
        stats->form = ran;
        stats->seconds = t;
        stats->residual = 0;
        float *xt = rows ? malloc(d * m * sizeof(float)) : NULL;
        float *yt = rows && Yt != Xt ? malloc(d * m * sizeof(float)) : NULL;
        if (rows && (!xt || (Yt != Xt && !yt))) {
            st = gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for transposed inputs");
        } else if (rows) {
            gpfq_transpose32(Xt, m, d, xt);
            if (yt) gpfq_transpose32(Yt, m, d, yt);
            st = gpfq_layer_error(weight, values, N, d, xt, yt ? yt : xt, m, &stats->error, &ref);
        } else {
            st = gpfq_layer_error(weight, values, N, d, Xt, Yt, m, &stats->error, &ref);
        }
        free(xt), free(yt);
        stats->relative_error = ref > 0 ? stats->error / ref : 0.0;
    }
    if (!quantized) free(values);
    return st;
}

gpfq_status __wrap_gpfq_gpfq_layer(const float *weight, size_t N, size_t d, const float *Xt,
                                   const float *Yt, size_t m, const gpfq_alphabet *a,
                                   gpfq_form form, size_t block, int32_t *codes, float *quantized,
                                   gpfq_layer_stats *stats) {
    if (!W.active)
        return __real_gpfq_gpfq_layer(weight, N, d, Xt, Yt, m, a, form, block, codes, quantized,
                                      stats);
    return timed_layer(weight, N, d, Xt, Yt, m, 0, a, form, block, codes, quantized, stats);
}

/* The same as gpfq_gpfq_layer here: the wrapper computes the whole stats itself, outside the
 * timed span, so the driver has the norm and does not wait for the float pass. */
gpfq_status __wrap_gpfq_gpfq_layer_no_norm(const float *weight, size_t N, size_t d, const float *Xt,
                                           const float *Yt, size_t m, const gpfq_alphabet *a,
                                           gpfq_form form, size_t block, int32_t *codes,
                                           float *quantized, float *residual,
                                           gpfq_layer_stats *stats);
gpfq_status __real_gpfq_gpfq_layer_no_norm(const float *weight, size_t N, size_t d, const float *Xt,
                                           const float *Yt, size_t m, const gpfq_alphabet *a,
                                           gpfq_form form, size_t block, int32_t *codes,
                                           float *quantized, float *residual,
                                           gpfq_layer_stats *stats);
gpfq_status __wrap_gpfq_gpfq_layer_no_norm(const float *weight, size_t N, size_t d, const float *Xt,
                                           const float *Yt, size_t m, const gpfq_alphabet *a,
                                           gpfq_form form, size_t block, int32_t *codes,
                                           float *quantized, float *residual,
                                           gpfq_layer_stats *stats) {
    if (!W.active) /* the untimed warm-up: as the driver runs it */
        return __real_gpfq_gpfq_layer_no_norm(weight, N, d, Xt, Yt, m, a, form, block, codes,
                                              quantized, residual, stats);
    return __wrap_gpfq_gpfq_layer(weight, N, d, Xt, Yt, m, a, form, block, codes, quantized, stats);
}

/* The same, on a Linear layer's inputs as the networks hold them: the real call is timed. */
gpfq_status __wrap_gpfq_gpfq_layer_rows(const float *weight, size_t N, size_t d, const float *X,
                                        const float *Y, size_t m, const gpfq_alphabet *a,
                                        gpfq_form form, size_t block, int32_t *codes,
                                        float *quantized, float *residual, gpfq_layer_stats *stats,
                                        int want_norm);
gpfq_status __wrap_gpfq_gpfq_layer_rows(const float *weight, size_t N, size_t d, const float *X,
                                        const float *Y, size_t m, const gpfq_alphabet *a,
                                        gpfq_form form, size_t block, int32_t *codes,
                                        float *quantized, float *residual, gpfq_layer_stats *stats,
                                        int want_norm) {
    if (!W.active)
        return __real_gpfq_gpfq_layer_rows(weight, N, d, X, Y, m, a, form, block, codes, quantized,
                                           residual, stats, want_norm);
    return timed_layer(weight, N, d, X, Y, m, 1, a, form, block, codes, quantized, stats);
}

/* A first conv quantized from its patches' Gram matrix alone (auto only): the real call is timed,
 * stats and all (the error from G costs N d^2). G's sums ran before it in the driver, with the
 * patches' unfolding, which no form's span includes. */
gpfq_status __real_gpfq_gpfq_layer_gram(const float *weight, size_t N, size_t d, const float *G,
                                        size_t m, const gpfq_alphabet *a, size_t block,
                                        int32_t *codes, float *quantized, gpfq_layer_stats *stats);
gpfq_status __wrap_gpfq_gpfq_layer_gram(const float *weight, size_t N, size_t d, const float *G,
                                        size_t m, const gpfq_alphabet *a, size_t block,
                                        int32_t *codes, float *quantized, gpfq_layer_stats *stats);
gpfq_status __wrap_gpfq_gpfq_layer_gram(const float *weight, size_t N, size_t d, const float *G,
                                        size_t m, const gpfq_alphabet *a, size_t block,
                                        int32_t *codes, float *quantized, gpfq_layer_stats *stats) {
    if (!W.active)
        return __real_gpfq_gpfq_layer_gram(weight, N, d, G, m, a, block, codes, quantized, stats);
    layer_obs *o = observe(N, d, m);
    struct rusage ru0;
    const double t0 = span_start(&ru0);
    const gpfq_status st =
        __real_gpfq_gpfq_layer_gram(weight, N, d, G, m, a, block, codes, quantized, stats);
    const double t = span_end(o, t0, &ru0);
    o->ran = GPFQ_FORM_GRAM;
    o->gram_only = 1;
    o->seconds += t;
    return st;
}

/* ---- part 1: the forms on the models ---- */

typedef struct {
    char name[GPFQ_NAME_MAX];
    int conv;
    size_t N, d, m, groups;
    layer_obs obs[MAX_THREADS][N_FORMS];
    double report_seconds[MAX_THREADS][N_FORMS]; /* gpfq_layer_report.seconds */
    double code_agree[MAX_THREADS][N_FORMS];     /* share of codes equal to auto's */
} layer_row;

typedef struct {
    const gpfq_model *model;
    layer_row *rows;
    int t, f;
} run_ctx;

static void on_layer(void *ctx, const gpfq_layer_report *rep, int index, int total) {
    run_ctx *c = ctx;
    if (index >= MAX_LAYERS) {
        fprintf(stderr, "gpfq_forms: more than %d quantizable layers\n", MAX_LAYERS);
        exit(1);
    }
    layer_row *row = &c->rows[index];
    const gpfq_node *node = &c->model->nodes[rep->node];
    snprintf(row->name, sizeof row->name, "%s", rep->name);
    row->conv = node->op == GPFQ_OP_CONV2D;
    row->groups = W.cur.calls ? (size_t)W.cur.calls : 1;
    row->N = rep->rows, row->d = W.cur.d, row->m = rep->samples;
    row->obs[c->t][c->f] = W.cur;
    row->report_seconds[c->t][c->f] = rep->seconds;
    memset(&W.cur, 0, sizeof W.cur);
    (void)total;
}

typedef struct {
    int ran;
    double seconds;        /* gpfq_quantize_model */
    double gpfq_seconds;   /* sum over layers of the GPFQ proper */
    double est_correction; /* ref only: predicted - stand-in time of the skipped layers,
                              less the guard's probes */
    int n_est;
    uint64_t hash;
} model_run;

static const char *form_name(gpfq_form f) {
    return gpfq_form_name(f);
}

/* Share of codes of `r` equal to those of `base`, per layer. */
static void compare_codes(const gpfq_quant_result *base, const gpfq_quant_result *r,
                          layer_row *rows, int t, int f) {
    for (int l = 0; l < r->n_layers; l++) {
        int node = r->layers[l].node;
        const int32_t *x = base->codes[node], *y = r->codes[node];
        size_t n = r->model->nodes[node].weight_count, same = 0;
        if (!x || !y) continue;
        for (size_t k = 0; k < n; k++) same += x[k] == y[k];
        rows[l].code_agree[t][f] = (double)same / (double)n;
    }
}

static int file_exists(const char *path) {
    return access(path, R_OK) == 0;
}

/* The shipped model, or a random-weight one of the same architecture. */
static int model_path(const char *name, const char *model_dir, const char *export_dir,
                      const char *python, char *out, size_t cap, int *random_weights) {
    snprintf(out, cap, "%s/%s_fashion.h5", model_dir, name);
    *random_weights = 0;
    if (file_exists(out)) return 0;
    *random_weights = 1;
    snprintf(out, cap, "%s/%s_random.h5", export_dir, name);
    if (file_exists(out)) return 0;
    if (strchr(out, '\'') || strchr(python, '\'')) {
        fprintf(stderr, "gpfq_forms: a quote in a path: %s\n", out);
        return -1;
    }
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && GLIBC_TUNABLES=" TORCH_TUNABLES " '%s' '%s/tools/export_torch.py' "
             "--arch '%s' --seed 0 --out '%s' >/dev/null",
             export_dir, python, GPFQ_BENCH_SOURCE_DIR, name, out);
    fprintf(stderr, "gpfq_forms: %s/%s_fashion.h5 missing; exporting a random-weight %s\n",
            model_dir, name, name);
    if (system(cmd) != 0 || !file_exists(out)) {
        fprintf(stderr, "gpfq_forms: export failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

static void fmt_seconds(char *buf, size_t cap, double s, int est) {
    if (s < 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%s%.4f", est ? "~" : "", s);
}

static void fmt_ratio(char *buf, size_t cap, double num, double den, int est) {
    if (num <= 0 || den <= 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%s%.1fx", est ? "~" : "", num / den);
}

typedef struct {
    int threads[MAX_THREADS];
    int n_threads;
    int forms_on[N_FORMS];
    size_t bs;
    double max_ref_seconds;
    int repeat;
    size_t block; /* 0: the library's default */
} bench_cfg;

/* One model: every form at every thread count (ref at the first only). */
static int bench_model(const char *name, const char *path, int random_weights,
                       const gpfq_dataset *train, const bench_cfg *cfg, layer_row **rows_out,
                       int *n_rows_out) {
    gpfq_model *model = NULL;
    if (gpfq_model_load(path, &model) != GPFQ_OK) {
        fprintf(stderr, "gpfq_forms: %s\n", gpfq_last_error());
        return -1;
    }
    layer_row *rows = calloc(MAX_LAYERS, sizeof(layer_row));
    model_run runs[MAX_THREADS][N_FORMS];
    memset(runs, 0, sizeof runs);
    int n_layers = 0;
    double cold_seconds = 0;
    {
        /* untimed: first touch of the memory every run needs, at the first thread count */
        openblas_set_num_threads(cfg->threads[0]);
        gpfq_quant_options o;
        gpfq_quant_options_default(&o);
        o.calib_images = cfg->bs;
        o.block = cfg->block;
        gpfq_quant_result res;
        if (gpfq_quantize_model(model, train, &o, &res, NULL, NULL) != GPFQ_OK) {
            fprintf(stderr, "gpfq_forms: %s: %s\n", name, gpfq_last_error());
            gpfq_model_free(model);
            free(rows);
            return -1;
        }
        cold_seconds = res.seconds;
        gpfq_quant_result_free(&res);
    }
    for (int t = 0; t < cfg->n_threads; t++) {
        openblas_set_num_threads(cfg->threads[t]);
        gpfq_quant_result base;
        memset(&base, 0, sizeof base);
        /* auto first: its codes are the baseline; ref last */
        const int order[N_FORMS] = {3, 1, 2, 0};
        for (int oi = 0; oi < N_FORMS; oi++) {
            const int f = order[oi];
            if (!cfg->forms_on[f] && f != 3) continue;
            if (FORMS[f] == GPFQ_FORM_REF && t > 0) continue;
            gpfq_quant_options o;
            gpfq_quant_options_default(&o);
            o.bits = 4;
            o.mlp_scalar = o.cnn_scalar = 1.16;
            o.calib_images = cfg->bs;
            o.retain_rate = 0.25;
            o.form = FORMS[f];
            o.block = cfg->block;
            model_run *mr = &runs[t][f];
            for (int rep = 0; rep < cfg->repeat; rep++) {
                layer_row tmp[MAX_LAYERS];
                memset(tmp, 0, sizeof tmp);
                run_ctx ctx = {.model = model, .rows = tmp, .t = t, .f = f};
                gpfq_quant_result res;
                memset(&W.cur, 0, sizeof W.cur);
                W.active = 1;
                double t_run = bench_now();
                gpfq_status st = gpfq_quantize_model(model, train, &o, &res, on_layer, &ctx);
                t_run = bench_now() - t_run;
                W.active = 0;
                if (st != GPFQ_OK) {
                    fprintf(stderr, "gpfq_forms: %s, form %s: %s\n", name, form_name(FORMS[f]),
                            gpfq_last_error());
                    gpfq_model_free(model);
                    free(rows);
                    return -1;
                }
                n_layers = res.n_layers;
                double gsum = 0, corr = 0;
                int nest = 0;
                for (int l = 0; l < n_layers; l++) {
                    layer_obs *ob = &tmp[l].obs[t][f];
                    if (ob->calls == 0) {
                        fprintf(stderr,
                                "gpfq_forms: layer %s was quantized without a call to "
                                "gpfq_gpfq_layer; the wrapper no longer sees the driver\n",
                                tmp[l].name);
                        exit(1);
                    }
                    gsum += ob->seconds;
                    if (ob->est) corr += ob->seconds - ob->stand_in_seconds, nest++;
                    corr -= ob->probe_seconds;
                }
                /* keep the best (smallest whole-model time) repetition */
                if (!mr->ran || t_run < mr->seconds) {
                    mr->ran = 1;
                    mr->seconds = t_run;
                    mr->gpfq_seconds = gsum;
                    mr->est_correction = corr;
                    mr->n_est = nest;
                    mr->hash = gpfq_codes_hash(&res);
                    for (int l = 0; l < n_layers; l++) {
                        if (t == 0 && f == 3) {
                            memcpy(rows[l].name, tmp[l].name, sizeof rows[l].name);
                            rows[l].conv = tmp[l].conv;
                            rows[l].N = tmp[l].N, rows[l].d = tmp[l].d, rows[l].m = tmp[l].m;
                            rows[l].groups = tmp[l].groups;
                        }
                        rows[l].obs[t][f] = tmp[l].obs[t][f];
                        rows[l].report_seconds[t][f] = tmp[l].report_seconds[t][f];
                    }
                }
                if (f == 3 && rep == 0) {
                    base = res;
                } else {
                    if (rep == 0) compare_codes(&base, &res, rows, t, f);
                    gpfq_quant_result_free(&res);
                }
            }
        }
        gpfq_quant_result_free(&base);
    }

    /* ---- print ---- */
    const char *fast[3] = {"gram", "ublock", "auto"};
    printf("\n== %s: %s (%s weights), %d layers; untimed warm-up run (auto, %d thread%s): "
           "%.3f s ==\n",
           name, path, random_weights ? "random" : "trained", n_layers, cfg->threads[0],
           cfg->threads[0] == 1 ? "" : "s", cold_seconds);
    for (int t = 0; t < cfg->n_threads; t++) {
        printf(
            "\n-- %s, BLAS threads %d (ref: single-threaded C loop, measured at %d thread%s) --\n",
            name, cfg->threads[t], cfg->threads[0], cfg->threads[0] == 1 ? "" : "s");
        printf("%-22s %11s %7s %10s %9s %9s %9s %8s %8s %8s %6s %6s %6s %6s\n", "layer", "N x d",
               "m", "ref s", "gram s", "ublock s", "auto s", "gram", "ublock", "auto",
               "auto=", "blas%g", "blas%u", "agree");
        int gram_only = 0;
        for (int l = 0; l < n_layers; l++) {
            layer_row *r = &rows[l];
            char nd[32], cell[N_FORMS][24], sp[3][24];
            snprintf(nd, sizeof nd, "%zux%zu", r->N, r->d);
            if (r->groups > 1) snprintf(nd, sizeof nd, "%zux%zu/g%zu", r->N, r->d, r->groups);
            const layer_obs *ref = &r->obs[0][0];
            const double ref_s = runs[0][0].ran ? ref->seconds : -1;
            for (int f = 0; f < N_FORMS; f++) {
                const layer_obs *ob = f == 0 ? ref : &r->obs[t][f];
                int ran = f == 0 ? runs[0][0].ran : runs[t][f].ran;
                fmt_seconds(cell[f], sizeof cell[f], ran ? ob->seconds : -1, ob->est);
            }
            for (int k = 0; k < 3; k++) {
                const layer_obs *ob = &r->obs[t][k + 1];
                fmt_ratio(sp[k], sizeof sp[k], ref_s, runs[t][k + 1].ran ? ob->seconds : -1,
                          ref->est);
            }
            double bg = r->obs[t][1].seconds > 0
                            ? 100.0 * r->obs[t][1].blas_seconds / r->obs[t][1].seconds
                            : 0,
                   bu = r->obs[t][2].seconds > 0
                            ? 100.0 * r->obs[t][2].blas_seconds / r->obs[t][2].seconds
                            : 0;
            double agree = 1.0;
            for (int f = 0; f < 3; f++)
                if (runs[t][f].ran && r->code_agree[t][f] < agree && !(f == 0 && t > 0))
                    agree = r->code_agree[t][f];
            char ran[16];
            snprintf(ran, sizeof ran, "%s%s", form_name(r->obs[t][3].ran),
                     r->obs[t][3].gram_only ? "*" : "");
            gram_only |= r->obs[t][3].gram_only;
            printf("%-22s %11s %7zu %10s %9s %9s %9s %8s %8s %8s %6s %6.0f %6.0f %5.1f%%\n",
                   r->name, nd, r->m, cell[0], cell[1], cell[2], cell[3], sp[0], sp[1], sp[2], ran,
                   bg, bu, 100.0 * agree);
        }
        if (gram_only)
            printf("  *: auto quantized the layer from its patches' Gram matrix alone "
                   "(gpfq_gpfq_layer_gram); G's sums run in the driver with the unfolding, "
                   "outside auto's time\n");
        /* whole model */
        printf("%-22s %11s %7s", "sum of layer GPFQ", "", "");
        for (int f = 0; f < N_FORMS; f++) {
            const model_run *mr = f == 0 ? &runs[0][0] : &runs[t][f];
            char c[24];
            fmt_seconds(c, sizeof c, mr->ran ? mr->gpfq_seconds : -1, f == 0 && mr->n_est);
            printf(" %*s", f == 0 ? 10 : 9, c);
        }
        for (int k = 0; k < 3; k++) {
            char c[24];
            fmt_ratio(c, sizeof c, runs[0][0].ran ? runs[0][0].gpfq_seconds : -1,
                      runs[t][k + 1].ran ? runs[t][k + 1].gpfq_seconds : -1, runs[0][0].n_est);
            printf(" %8s", c);
        }
        printf("\n%-22s %11s %7s", "whole model (quantize)", "", "");
        double ref_whole = runs[0][0].ran ? runs[0][0].seconds + runs[0][0].est_correction : -1;
        for (int f = 0; f < N_FORMS; f++) {
            const model_run *mr = f == 0 ? &runs[0][0] : &runs[t][f];
            char c[24];
            fmt_seconds(c, sizeof c, mr->ran ? (f == 0 ? ref_whole : mr->seconds) : -1,
                        f == 0 && mr->n_est);
            printf(" %*s", f == 0 ? 10 : 9, c);
        }
        for (int k = 0; k < 3; k++) {
            char c[24];
            fmt_ratio(c, sizeof c, ref_whole, runs[t][k + 1].ran ? runs[t][k + 1].seconds : -1,
                      runs[0][0].n_est);
            printf(" %8s", c);
        }
        printf("\n");
        if (runs[0][0].n_est && t == 0)
            printf("  ~: ref not run on %d layer%s (predicted > --max-ref-seconds %g from runs "
                   "on the first 1/%d and 2/%d of the columns); ref whole model = measured run "
                   "with auto on those layers + (predicted ref - auto) of those layers\n",
                   runs[0][0].n_est, runs[0][0].n_est == 1 ? "" : "s", cfg->max_ref_seconds,
                   PROBE_PARTS, PROBE_PARTS);
        /* what else the layer report's seconds hold, and the fast forms' BLAS rate */
        double rep_auto = 0, gpfq_auto = 0;
        for (int l = 0; l < n_layers; l++)
            rep_auto += rows[l].report_seconds[t][3], gpfq_auto += rows[l].obs[t][3].seconds;
        if (!use_cpu_clock)
            printf("  auto: layer reports %.4f s (GPFQ %.4f s + patches, layer error: %.4f s); "
                   "forward passes and the rest of quantize: %.4f s\n",
                   rep_auto, gpfq_auto, rep_auto - gpfq_auto, runs[t][3].seconds - rep_auto);
        printf("  minor page faults inside the layer GPFQ:");
        for (int f = 0; f < N_FORMS; f++) {
            const int tt = f == 0 ? 0 : t;
            if (!runs[tt][f].ran) continue;
            long faults = 0;
            for (int l = 0; l < n_layers; l++) faults += rows[l].obs[tt][f].faults;
            printf(" %s %ld", form_name(FORMS[f]), faults);
        }
        printf("\n");
        for (int k = 0; k < 2; k++) {
            double bs = 0, bf = 0, all = 0, ks[3] = {0, 0, 0}, kf[3] = {0, 0, 0};
            for (int l = 0; l < n_layers; l++) {
                const layer_obs *ob = &rows[l].obs[t][k + 1];
                bs += ob->blas_seconds, bf += ob->blas_flops, all += ob->seconds;
                for (int q = 0; q < 3; q++)
                    ks[q] += ob->kind_seconds[q], kf[q] += ob->kind_flops[q];
            }
            if (!runs[t][k + 1].ran || all <= 0) continue;
            printf("  %-6s: BLAS %.4f s of %.4f s (%.0f%%) at %.1f GFLOP/s (", fast[k], bs, all,
                   100 * bs / all, bs > 0 ? bf / bs * 1e-9 : 0.0);
            for (int q = 0, first = 1; q < 3; q++)
                if (ks[q] > 0)
                    printf("%s%s %.4f s at %.1f", first ? "" : "; ", KIND_NAMES[q], ks[q],
                           kf[q] / ks[q] * 1e-9),
                        first = 0;
            printf("); outside BLAS %.4f s\n", all - bs);
        }
        if (runs[0][0].ran && t == 0) {
            double el = 0, s = 0;
            for (int l = 0; l < n_layers; l++) {
                if (rows[l].obs[0][0].est) continue;
                el += (double)rows[l].N * rows[l].d * rows[l].m;
                s += rows[l].obs[0][0].seconds;
            }
            if (s > 0)
                printf("  ref   : %.3f ns per (neuron, column, sample) step, %.2f G steps/s "
                       "(layers run)\n",
                       1e9 * s / el, el / s * 1e-9);
        }
        for (int f = 1; f < N_FORMS; f++)
            if (runs[t][f].ran && runs[t][3].ran && runs[t][f].hash != runs[t][3].hash)
                printf("  note: %s codes differ from auto's in some layer (see 'agree'; float "
                       "rounding at ties, then different Y downstream)\n",
                       form_name(FORMS[f]));
    }
    *rows_out = rows;
    *n_rows_out = n_layers;
    gpfq_model_free(model);
    return 0;
}

/* ---- part 2: Gram products against the sgemm peak ---- */

static void fill_random(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(gpfq_uniform(seed, i) - 0.5);
}

/* Best seconds of `fn` over repetitions: at least 3 and at least `min_total` seconds. */
typedef void (*kernel_fn)(void *);
static double best_of(kernel_fn fn, void *arg, double min_total) {
    fn(arg); /* warm-up */
    double best = 1e300, total = 0;
    for (int r = 0; r < 3 || (total < min_total && r < 1000); r++) {
        double t = bench_now();
        fn(arg);
        t = bench_now() - t;
        total += t;
        if (t < best) best = t;
    }
    return best;
}

typedef struct {
    int d, m;
    float *X, *Y, *C;
} gram_args;

static void run_sgemm_gram(void *p) {
    gram_args *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->d, g->d, g->m, 1.0f, g->Y, g->m, g->X,
                g->m, 0.0f, g->C, g->d);
}

static void run_own_gram(void *p) {
    gram_args *g = p;
    gpfq_sgemm(0, 1, (size_t)g->d, (size_t)g->d, (size_t)g->m, 1.0f, g->Y, (size_t)g->m, g->X,
               (size_t)g->m, 0.0f, g->C, (size_t)g->d);
}

static void run_ssyrk_gram(void *p) {
    gram_args *g = p;
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, g->d, g->m, 1.0f, g->Y, g->m, 0.0f, g->C,
                g->d);
}

typedef struct {
    int n;
    float *A, *B, *C;
} square_args;

static void run_sgemm_square(void *p) {
    square_args *s = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->n, s->n, 1.0f, s->A, s->n, s->B,
                s->n, 0.0f, s->C, s->n);
}

typedef struct {
    size_t n;
    float *a, *b;
} axpy_args;

static void run_axpy(void *p) {
    axpy_args *x = p;
    for (size_t i = 0; i < x->n; i++) x->a[i] += 0.5f * x->b[i];
}

typedef struct {
    int d, m;
    char layers[256];
} gram_size;

static void bench_gram(const gram_size *sizes, int n_sizes, const bench_cfg *cfg, int peak_n) {
    printf("\n== Gram products of the gram form at the conv layer sizes ==\n");
    printf("G = Yt Xt^T: cblas_sgemm(RowMajor, NoTrans, Trans, d, d, m), 2 d^2 m flops;\n"
           "H = Yt Yt^T: cblas_ssyrk(RowMajor, Lower, NoTrans, d, m), d(d+1) m flops;\n"
           "random data, best of >= 3 runs; peak: cblas_sgemm %d^3 (NoTrans, NoTrans).\n"
           "own: G on gpfq_sgemm, one thread, %s kernel (the gram form splits it over two).\n",
           peak_n, gpfq_gemm_kernel_name(gpfq_gemm_get_kernel()));
    size_t max_dm = (size_t)peak_n * peak_n, max_dd = max_dm;
    for (int i = 0; i < n_sizes; i++) {
        size_t dm = (size_t)sizes[i].d * sizes[i].m, dd = (size_t)sizes[i].d * sizes[i].d;
        if (dm > max_dm) max_dm = dm;
        if (dd > max_dd) max_dd = dd;
    }
    float *X = malloc(max_dm * sizeof(float)), *Y = malloc(max_dm * sizeof(float));
    float *C = malloc(max_dd * sizeof(float));
    GPFQ_ASSERT(X && Y && C);
    fill_random(X, max_dm, 1);
    fill_random(Y, max_dm, 2);
    memset(C, 0, max_dd * sizeof(float));
    for (int t = 0; t < cfg->n_threads; t++) {
        openblas_set_num_threads(cfg->threads[t]);
        square_args sq = {peak_n, X, Y, C};
        double pt = best_of(run_sgemm_square, &sq, 1.0);
        double peak = 2.0 * peak_n * peak_n * (double)peak_n / pt * 1e-9;
        printf("\n-- BLAS threads %d: sgemm %d^3 peak %.1f GFLOP/s (%.4f s) --\n",
               openblas_get_num_threads(), peak_n, peak, pt);
        printf("%6s %7s %10s %9s %6s %10s %9s %6s %10s %9s %6s  %s\n", "d", "m", "sgemm s",
               "GFLOP/s", "%peak", "ssyrk s", "GFLOP/s", "%peak", "own s", "GFLOP/s", "%peak",
               "layers");
        double sum_flops = 0, sum_s = 0;
        for (int i = 0; i < n_sizes; i++) {
            gram_args g = {sizes[i].d, sizes[i].m, X, Y, C};
            double ts = best_of(run_sgemm_gram, &g, 0.3);
            double th = best_of(run_ssyrk_gram, &g, 0.3);
            double to = best_of(run_own_gram, &g, 0.3);
            double fs = 2.0 * g.d * g.d * (double)g.m, fh = (double)g.d * (g.d + 1) * (double)g.m;
            sum_flops += fs + fh, sum_s += ts + th;
            printf("%6d %7d %10.5f %9.1f %5.0f%% %10.5f %9.1f %5.0f%% %10.5f %9.1f %5.0f%%  %s\n",
                   g.d, g.m, ts, fs / ts * 1e-9, 100 * fs / ts * 1e-9 / peak, th, fh / th * 1e-9,
                   100 * fh / th * 1e-9 / peak, to, fs / to * 1e-9, 100 * fs / to * 1e-9 / peak,
                   sizes[i].layers);
        }
        if (sum_s > 0)
            printf("%6s %7s %10.5f %9.1f %5.0f%%  (both products, all sizes, flop-weighted)\n",
                   "all", "", sum_s, sum_flops / sum_s * 1e-9,
                   100 * sum_flops / sum_s * 1e-9 / peak);
    }
    /* memory bandwidth, for the ref form's reading */
    axpy_args ax = {max_dm < ((size_t)64 << 20) ? ((size_t)64 << 20) : max_dm, NULL, NULL};
    ax.a = calloc(ax.n, sizeof(float)), ax.b = calloc(ax.n, sizeof(float));
    GPFQ_ASSERT(ax.a && ax.b);
    double ta = best_of(run_axpy, &ax, 0.5);
    printf("\nmemory: a += 0.5 b over 2 x %.0f MB, one thread: %.1f GB/s (12 bytes per element)\n",
           ax.n * 4.0 / 1e6, 12.0 * ax.n / ta * 1e-9);
    free(ax.a), free(ax.b);
    free(X), free(Y), free(C);
}

/* ---- main ---- */

static const char usage[] =
    "usage: gpfq_forms [--models mlp,lenet5,resnet20,resnet18] [--forms ref,gram,ublock]\n"
    "                  [--threads 1,2] [--max-ref-seconds S] [--bs N] [--repeat R]\n"
    "                  [--clock wall|cpu] [--block B] [--no-gram] [--peak-n N] [--model-dir DIR]\n"
    "                  [--export-dir DIR] [--python PATH] [--data-dir DIR]\n"
    "\n"
    "Times the GPFQ layer forms (ref, gram, ublock, auto) on the layers of each model\n"
    "with bs 256, 4 bits, scalar 1.16, retain rate 0.25, and the Gram products at the\n"
    "conv layer sizes against a square sgemm. See bench/README.md.\n"
    "\n"
    "  --models LIST         models (default mlp,lenet5,resnet20,resnet18):\n"
    "                        MODEL_DIR/NAME_fashion.h5, else a random-weight model\n"
    "                        exported with tools/export_torch.py into EXPORT_DIR\n"
    "  --forms LIST          forms besides auto (default ref,gram,ublock)\n"
    "  --threads LIST        BLAS thread counts (default 1); ref runs at the first\n"
    "  --max-ref-seconds S   predict ref from its first 1/32 and 2/32 of the columns;\n"
    "                        skip it on a layer predicted above S seconds\n"
    "                        (default 0: never skip)\n"
    "  --bs N                calibration images (default 256)\n"
    "  --repeat R            quantize runs per form, the fastest kept (default 1)\n"
    "  --clock wall|cpu      wall time (default), or the CPU time of the calling\n"
    "                        thread (--threads 1 only): for a machine with other load\n"
    "  --block B             column block of the fast forms (default 0: the\n"
    "                        library's, 128)\n"
    "  --no-gram             skip part 2 (Gram products)\n"
    "  --peak-n N            size of the square sgemm (default 2048)\n";

static int parse_list(const char *s, char items[][32], int cap) {
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n < cap;
         tok = strtok_r(NULL, ",", &save))
        snprintf(items[n++], 32, "%s", tok);
    return n;
}

int main(int argc, char **argv) {
    gpfq_heap_setup();          /* as the gpfq command does */
    gpfq_layer_gather_allow(0); /* every form on unfolded patches (above) */
    char models[8][32];
    int n_models = parse_list("mlp,lenet5,resnet20,resnet18", models, 8);
    bench_cfg cfg = {
        .threads = {1}, .n_threads = 1, .forms_on = {1, 1, 1, 1}, .bs = 256, .repeat = 1};
    int do_gram = 1, peak_n = 2048;
    const char *model_dir = GPFQ_BENCH_SOURCE_DIR "/data/models";
    const char *export_dir = GPFQ_BENCH_EXPORT_DIR;
    const char *python = "/usr/bin/python3", *data_dir = NULL;
    enum {
        O_MODELS = 256,
        O_FORMS,
        O_THREADS,
        O_MAXREF,
        O_BS,
        O_REPEAT,
        O_NOGRAM,
        O_PEAK,
        O_MDIR,
        O_EDIR,
        O_PY,
        O_DDIR,
        O_BLOCK,
        O_CLOCK
    };
    static const struct option opts[] = {
        {"models", required_argument, NULL, O_MODELS},
        {"forms", required_argument, NULL, O_FORMS},
        {"threads", required_argument, NULL, O_THREADS},
        {"max-ref-seconds", required_argument, NULL, O_MAXREF},
        {"bs", required_argument, NULL, O_BS},
        {"repeat", required_argument, NULL, O_REPEAT},
        {"block", required_argument, NULL, O_BLOCK},
        {"clock", required_argument, NULL, O_CLOCK},
        {"no-gram", no_argument, NULL, O_NOGRAM},
        {"peak-n", required_argument, NULL, O_PEAK},
        {"model-dir", required_argument, NULL, O_MDIR},
        {"export-dir", required_argument, NULL, O_EDIR},
        {"python", required_argument, NULL, O_PY},
        {"data-dir", required_argument, NULL, O_DDIR},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char items[8][32];
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODELS:
            n_models = parse_list(optarg, models, 8);
            break;
        case O_FORMS: {
            int n = parse_list(optarg, items, 8);
            cfg.forms_on[0] = cfg.forms_on[1] = cfg.forms_on[2] = 0;
            for (int i = 0; i < n; i++) {
                int k = strcmp(items[i], "ref") == 0      ? 0
                        : strcmp(items[i], "gram") == 0   ? 1
                        : strcmp(items[i], "ublock") == 0 ? 2
                        : strcmp(items[i], "auto") == 0   ? 3
                                                          : -1;
                if (k < 0) {
                    fprintf(stderr, "gpfq_forms: unknown form '%s'\n", items[i]);
                    return 2;
                }
                cfg.forms_on[k] = 1;
            }
            break;
        }
        case O_THREADS: {
            int n = parse_list(optarg, items, MAX_THREADS);
            for (int i = 0; i < n; i++) {
                cfg.threads[i] = atoi(items[i]);
                if (cfg.threads[i] < 1) {
                    fprintf(stderr, "gpfq_forms: bad thread count '%s'\n", items[i]);
                    return 2;
                }
            }
            cfg.n_threads = n;
            break;
        }
        case O_MAXREF:
            cfg.max_ref_seconds = atof(optarg);
            break;
        case O_BS:
            cfg.bs = (size_t)atol(optarg);
            break;
        case O_REPEAT:
            cfg.repeat = atoi(optarg) > 0 ? atoi(optarg) : 1;
            break;
        case O_CLOCK:
            if (strcmp(optarg, "cpu") != 0 && strcmp(optarg, "wall") != 0) {
                fprintf(stderr, "gpfq_forms: --clock is wall or cpu\n");
                return 2;
            }
            use_cpu_clock = strcmp(optarg, "cpu") == 0;
            break;
        case O_BLOCK:
            cfg.block = (size_t)atol(optarg);
            break;
        case O_NOGRAM:
            do_gram = 0;
            break;
        case O_PEAK:
            peak_n = atoi(optarg);
            break;
        case O_MDIR:
            model_dir = optarg;
            break;
        case O_EDIR:
            export_dir = optarg;
            break;
        case O_PY:
            python = optarg;
            break;
        case O_DDIR:
            data_dir = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (cfg.bs < 1 || peak_n < 64) {
        fputs(usage, stderr);
        return 2;
    }
    for (int t = 0; t < cfg.n_threads; t++)
        if (use_cpu_clock && cfg.threads[t] != 1) {
            fprintf(stderr, "gpfq_forms: --clock cpu needs --threads 1 (it times the calling "
                            "thread only)\n");
            return 2;
        }
    W.max_ref_seconds = cfg.max_ref_seconds;

    /* the setting */
    struct utsname un;
    uname(&un);
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    const char *nthreads = getenv("OPENBLAS_NUM_THREADS");
    printf("gpfq_forms: %s %s, %ld CPUs, load average %.2f %.2f %.2f at start\n", un.sysname,
           un.release, sysconf(_SC_NPROCESSORS_ONLN), load[0], load[1], load[2]);
    printf("OpenBLAS: %s; kernel %s; OPENBLAS_CORETYPE=%s; OPENBLAS_NUM_THREADS=%s; "
           "default threads %d\n",
           openblas_get_config(), openblas_get_corename(), coretype ? coretype : "(unset)",
           nthreads ? nthreads : "(unset)", openblas_get_num_threads());
    printf("quantize: GPFQ, bs %zu, 4 bits, scalar 1.16, percentile 1, nearest, retain rate "
           "0.25, shared calibration, seed 0; block %s; ref guard %s\n",
           cfg.bs, cfg.block ? "set" : "default (128)", cfg.max_ref_seconds > 0 ? "on" : "off");
    if (cfg.block) printf("block: %zu\n", cfg.block);
    printf("clock: %s\n", use_cpu_clock ? "CPU time of the calling thread (all figures but the "
                                          "warm-up run, the layer reports and the total)"
                                        : "wall");
    if (cfg.max_ref_seconds > 0) printf("ref guard: %.0f s per layer\n", cfg.max_ref_seconds);
    printf("columns: seconds of the layer's GPFQ per form (not the patches, not the layer "
           "error); speedup over ref; the form auto ran; share of gram/ublock time in BLAS; "
           "lowest share of codes equal to auto's\n");
    fflush(stdout);

    const double start = gpfq_now();
    gpfq_dataset train;
    if (gpfq_dataset_open("fashion-mnist", data_dir, GPFQ_SPLIT_TRAIN, &train) != GPFQ_OK) {
        fprintf(stderr, "gpfq_forms: %s\n", gpfq_last_error());
        return 1;
    }
    /* warm up BLAS threads and the allocator */
    {
        square_args sq = {256, calloc(65536, 4), calloc(65536, 4), calloc(65536, 4)};
        for (int t = 0; t < cfg.n_threads; t++) {
            openblas_set_num_threads(cfg.threads[t]);
            run_sgemm_square(&sq);
        }
        free(sq.A), free(sq.B), free(sq.C);
    }
    gram_size sizes[256];
    int n_sizes = 0;
    for (int i = 0; i < n_models; i++) {
        char path[1024];
        int random_weights;
        if (model_path(models[i], model_dir, export_dir, python, path, sizeof path,
                       &random_weights) != 0)
            return 1;
        layer_row *rows = NULL;
        int n_rows = 0;
        if (bench_model(models[i], path, random_weights, &train, &cfg, &rows, &n_rows) != 0)
            return 1;
        fflush(stdout);
        for (int l = 0; l < n_rows; l++) {
            if (!rows[l].conv) continue;
            int k = 0;
            while (k < n_sizes && !(sizes[k].d == (int)rows[l].d && sizes[k].m == (int)rows[l].m))
                k++;
            if (k == n_sizes && n_sizes < 256) {
                sizes[n_sizes].d = (int)rows[l].d, sizes[n_sizes].m = (int)rows[l].m;
                sizes[n_sizes].layers[0] = '\0';
                n_sizes++;
            }
            if (k < n_sizes) {
                size_t len = strlen(sizes[k].layers);
                snprintf(sizes[k].layers + len, sizeof sizes[k].layers - len, "%s%s:%s",
                         len ? " " : "", models[i], rows[l].name);
            }
        }
        free(rows);
    }
    gpfq_dataset_free(&train);
    if (do_gram) bench_gram(sizes, n_sizes, &cfg, peak_n);
    getloadavg(load, 3);
    printf("\ntotal %.1f s; load average %.2f %.2f %.2f at end\n", gpfq_now() - start, load[0],
           load[1], load[2]);
    return 0;
}
