/*
 * GPFQ and its quantizers.
 *
 * - The scalar quantizers against their formulas, tie rule included.
 * - The fast forms (gram, ublock) against the plain U-form _ref on random layers,
 *   Linear- and conv-shaped, several sizes and blocks, all four quantizers. With
 *   small-integer data and a power-of-two step every float operation is exact,
 *   so the codes must be identical. With real-valued data they may differ only
 *   where float rounding moves an argument across a rounding boundary: at most
 *   2% of rows may differ, and the layer errors agree to 1e-3 (relative). ublock
 *   runs on both its paths: gpfq's AVX-512 kernels (where the CPU has them, for
 *   m >= 2048) and OpenBLAS; the kernels give the same bits at 1 and 2 threads.
 * - The network driver on a small CNN: same seed, same codes; ref and fast forms
 *   agree; MSQ matches the nearest rounding of every weight.
 * - The helper thread (core/helper.h): the shared one, a second caller's own, pairs.
 * - The unfolded conv patches (quant/unfold.h) against gpfq_im2col's columns.
 */
#include "gpfq_check.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/helper.h"
#include "gpfq/gpfq.h"
#include "quant/sample.h"
#include "quant/ublock.h"
#include "quant/unfold.h"

int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);

static gpfq_alphabet alphabet(gpfq_quantizer kind, int bits, float delta, float lambda) {
    gpfq_alphabet a = {.kind = kind,
                       .bits = bits,
                       .levels = 1 << (bits - 1),
                       .delta = delta,
                       .reg_lambda = lambda,
                       .seed = 1234};
    return a;
}

static void test_quantizers(void) {
    gpfq_alphabet a = alphabet(GPFQ_QUANTIZER_NEAREST, 3, 1.0f, 0.0f); /* K = 4 */
    CHECK(gpfq_quantize_code(&a, 1.5f, 0) == 2, "+1.5 rounds to 2");
    CHECK(gpfq_quantize_code(&a, -1.5f, 0) == -1, "-1.5 rounds to -1 (the reference's tie rule)");
    CHECK(gpfq_quantize_code(&a, -1.6f, 0) == -2, "-1.6");
    CHECK(gpfq_quantize_code(&a, 0.49f, 0) == 0 && gpfq_quantize_code(&a, -0.5f, 0) == 0, "zero");
    CHECK(gpfq_quantize_code(&a, 9.0f, 0) == 4 && gpfq_quantize_code(&a, -9.0f, 0) == -4, "clip");
    a = alphabet(GPFQ_QUANTIZER_L1, 3, 1.0f, 0.7f);
    CHECK(gpfq_quantize_code(&a, 0.69f, 0) == 0 && gpfq_quantize_code(&a, -1.1f, 0) == 0,
          "L1 shrinks by lambda first");
    CHECK(gpfq_quantize_code(&a, 2.3f, 0) == 2 && gpfq_quantize_code(&a, -2.3f, 0) == -2, "L1");
    a = alphabet(GPFQ_QUANTIZER_L0, 3, 1.0f, 0.7f);
    CHECK(gpfq_quantize_code(&a, 0.7f, 0) == 0 && gpfq_quantize_code(&a, -0.7f, 0) == 0,
          "L0 zeroes |z| <= lambda");
    CHECK(gpfq_quantize_code(&a, 0.75f, 0) == 1 && gpfq_code_value(&a, 1) == 0.7f,
          "L0 keeps lambda as the smallest level");
    CHECK(gpfq_quantize_code(&a, -2.3f, 0) == -3 && gpfq_code_value(&a, -3) == -2.7f,
          "L0: -(lambda + 2 delta)");
    CHECK(gpfq_quantize_code(&a, 99.0f, 0) == 5 && gpfq_code_value(&a, 5) == 4.7f, "L0 clip");
    a = alphabet(GPFQ_QUANTIZER_STOCHASTIC, 3, 1.0f, 0.0f);
    double mean = 0;
    int outside = 0;
    for (int i = 0; i < 20000; i++) {
        int c = gpfq_quantize_code(&a, 1.3f, (uint64_t)i);
        outside += c != 1 && c != 2;
        mean += c;
    }
    mean /= 20000;
    CHECK(outside == 0 && fabs(mean - 1.3) < 0.02, "stochastic rounding is unbiased: mean %g",
          mean);
    CHECK(gpfq_quantize_code(&a, 1.3f, 77) == gpfq_quantize_code(&a, 1.3f, 77), "seeded");
    CHECK(gpfq_quantize_code(&a, 7.5f, 3) == 4 && gpfq_quantize_code(&a, -7.5f, 3) == -4,
          "stochastic clip");

    /* alphabet: rad = mean of row maxima (percentile 1) or torch.quantile's interpolation */
    const float w[2 * 5] = {0.1f, -0.4f, 0.2f, 0.3f, 0.0f, 1.0f, 0.5f, -0.25f, 0.75f, 0.0f};
    gpfq_alphabet b;
    CHECK(gpfq_alphabet_make(w, 2, 5, 4, 1.16, 1.0, GPFQ_QUANTIZER_NEAREST, 0, 0, &b) == GPFQ_OK,
          "%s", gpfq_last_error());
    CHECK(fabsf(b.radius - 0.7f) < 1e-7f && b.levels == 8 &&
              fabsf(b.delta - 1.16f * 0.7f / 8) < 1e-7f,
          "rad %g delta %g", b.radius, b.delta);
    /* row 0 sorted |w|: 0 .1 .2 .3 .4 -> q(0.9) at pos 3.6 = .36; row 1: 0 .25 .5 .75 1 -> .9 */
    gpfq_alphabet_make(w, 2, 5, 4, 1.0, 0.9, GPFQ_QUANTIZER_NEAREST, 0, 0, &b);
    CHECK(fabsf(b.radius - 0.63f) < 1e-6f, "percentile radius %g", b.radius);
    gpfq_alphabet_make(w, 2, 5, 2, 2.0, 1.0, GPFQ_QUANTIZER_L0, 0.2, 0, &b);
    CHECK(fabsf(b.delta - (2.0f * 0.7f - 0.2f) / 2) < 1e-7f, "L0 step (C rad - lambda) / K");
    CHECK(gpfq_alphabet_make(w, 2, 5, 2, 1.0, 1.0, GPFQ_QUANTIZER_L0, 0.7, 0, &b) == GPFQ_ERR_ARG,
          "L0 lambda >= C rad is refused");
    CHECK_CONTAINS(gpfq_last_error(), "use a lambda below");
    /* the row maxima on vectors: rows of 37 and 1000 floats, the largest |w| negative, at the
     * first, a middle and the last place, among -0 and subnormals; a NaN weight is refused */
    enum { LONG = 1000 };
    float *rows = malloc(3 * LONG * sizeof(float));
    for (size_t cols = 37; cols <= LONG; cols += LONG - 37) {
        const size_t at[3] = {0, cols / 2 + 1, cols - 1};
        double want = 0.0;
        for (int r = 0; r < 3; r++) {
            for (size_t j = 0; j < cols; j++)
                rows[r * cols + j] = j % 3 == 0 ? -0.0f : (j % 3 == 1 ? 1e-40f : 0.5f - 0.25f * r);
            rows[r * cols + at[r]] = -2.0f - (float)r;
            want += 2.0 + r;
        }
        CHECK(gpfq_alphabet_make(rows, 3, cols, 4, 1.0, 1.0, GPFQ_QUANTIZER_NEAREST, 0, 0, &b) ==
                      GPFQ_OK &&
                  b.radius == (float)(want / 3),
              "rows of %zu: radius %.9g, want %.9g", cols, b.radius, want / 3);
        rows[cols + cols / 3] = NAN;
        CHECK(gpfq_alphabet_make(rows, 3, cols, 4, 1.0, 1.0, GPFQ_QUANTIZER_NEAREST, 0, 0, &b) ==
                  GPFQ_ERR_ARG,
              "rows of %zu with a NaN weight: not refused", cols);
    }
    free(rows);
}

/* The vectorised row quantizer gives the scalar rule's codes and values bit for bit:
 * every quantizer, ties at half steps, +-0, NaN, values past the last level, norm 0,
 * and a row length that is not a multiple of any vector width. */
static void test_quantize_row(void) {
    enum { N = 203 };
    float z[N], values[N], v2[N];
    int32_t codes[N];
    unsigned long long state = 7;
    for (int i = 0; i < N; i++) {
        float r = check_rand(&state);                             /* in [-1, 1) */
        z[i] = i % 3 == 0 ? floorf(r * 20.0f) * 0.5f : r * 12.0f; /* every third a tie */
    }
    z[5] = 0.0f, z[6] = -0.0f, z[7] = NAN, z[8] = 1e30f, z[9] = -1e30f;
    const gpfq_quantizer kinds[4] = {GPFQ_QUANTIZER_NEAREST, GPFQ_QUANTIZER_L1, GPFQ_QUANTIZER_L0,
                                     GPFQ_QUANTIZER_STOCHASTIC};
    const float norms[3] = {1.0f, 0.37f, 0.0f};
    for (int k = 0; k < 4; k++)
        for (int n = 0; n < 3; n++) {
            gpfq_alphabet a = alphabet(kinds[k], 3, 0.5f, 0.3f);
            gpfq_quantize_row(&a, z, N, norms[n], 11, 5, codes, values);
            int bad = 0;
            for (int i = 0; i < N; i++) {
                int code =
                    norms[n] == 0.0f ? 0 : gpfq_quantize_code(&a, z[i] / norms[n], 11 + 5 * i);
                float value = gpfq_code_value(&a, code);
                bad += codes[i] != code || memcmp(&values[i], &value, sizeof value) != 0;
            }
            CHECK(bad == 0, "kind %d norm %g: %d of %d codes or values differ", k, norms[n], bad,
                  N);
            gpfq_code_values(&a, codes, N, v2);
            CHECK(memcmp(v2, values, sizeof values) == 0, "kind %d: gpfq_code_values", k);
        }
}

/* Fills with small integers (exact) or uniform reals. */
static void fill(float *v, size_t n, int exact, float scale, unsigned long long *state) {
    for (size_t i = 0; i < n; i++) {
        float r = check_rand(state);
        v[i] = exact ? floorf(r * 3.5f + 0.5f) : r * scale;
    }
}

/* W (N x d) and Xt (d x m) uniform, Yt = Xt + noise times uniform */
static void random_layer(float *W, float *Xt, float *Yt, size_t N, size_t d, size_t m, float noise,
                         unsigned long long *state) {
    for (size_t k = 0; k < N * d; k++) W[k] = check_rand(state);
    for (size_t k = 0; k < d * m; k++) {
        Xt[k] = check_rand(state);
        Yt[k] = Xt[k] + noise * check_rand(state);
    }
}

/* With same, Yt is Xt (a first layer): ublock then advances U by one product, (W - Q) X. With
 * same = 2, Yt is Xt but for its last row, doubled: inputs that agree for all but the last
 * column of the layer must not be taken as the same. */
static void compare_forms_with(size_t N, size_t d, size_t m, gpfq_quantizer kind, int exact,
                               size_t block, int same, unsigned long long *state) {
    float *W = malloc(N * d * 4), *Xt = malloc(d * m * 4), *Yt = malloc(d * m * 4);
    fill(W, N * d, 0, 1.0f, state);
    if (exact)
        for (size_t i = 0; i < N * d; i++) W[i] = floorf(W[i] * 8.0f) / 8.0f;
    fill(Xt, d * m, exact, 1.0f, state);
    fill(Yt, d * m, exact, 1.0f, state);
    for (size_t i = 0; i < d * m; i++) Yt[i] = exact ? Yt[i] : 0.9f * Xt[i] + 0.1f * Yt[i];
    if (m > 3)
        for (size_t k = 0; k < m; k++) Yt[2 * m + k] = 0.0f; /* a dead input: ||Y[:,t]|| = 0 */
    if (same) memcpy(Yt, Xt, d * m * 4);
    if (same == 2)
        for (size_t k = 0; k < m; k++) Yt[(d - 1) * m + k] = 2.0f * Xt[(d - 1) * m + k];
    gpfq_alphabet a;
    if (exact) {
        a = alphabet(kind, 4, 0.25f,
                     kind == GPFQ_QUANTIZER_L1 || kind == GPFQ_QUANTIZER_L0 ? 0.125f : 0.0f);
    } else {
        gpfq_alphabet_make(W, N, d, 3, 1.16, 1.0, kind, 0.05, 99, &a);
    }
    int32_t *ref = malloc(N * d * sizeof(int32_t)), *fast = malloc(N * d * sizeof(int32_t));
    float *qref = malloc(N * d * 4), *qfast = malloc(N * d * 4);
    gpfq_layer_stats sref, sfast;
    CHECK(gpfq_gpfq_layer(W, N, d, Xt, Yt, m, &a, GPFQ_FORM_REF, block, ref, qref, &sref) ==
              GPFQ_OK,
          "%s", gpfq_last_error());
    if (same == 2) { /* the plain loop on Xt and Yt as they are, outside gpfq_gpfq_layer */
        int32_t *plain = malloc(N * d * sizeof(int32_t));
        gpfq_gpfq_layer_ref(W, N, d, Xt, Yt, m, &a, plain);
        CHECK(!memcmp(plain, ref, N * d * sizeof(int32_t)),
              "N%zu d%zu m%zu: inputs differing in their last row taken as the same", N, d, m);
        free(plain);
    }
    /* ublock on gpfq's AVX-512 kernels where the CPU has them (m >= 2048), and on OpenBLAS */
    const gpfq_form forms[3] = {GPFQ_FORM_GRAM, GPFQ_FORM_UBLOCK, GPFQ_FORM_UBLOCK};
    for (int f = 0; f < 3; f++) {
        const gpfq_conv_kernel kernel =
            gpfq_conv_set_kernel(f == 2 ? GPFQ_CONV_IM2COL : GPFQ_CONV_AUTO);
        gpfq_gpfq_layer(W, N, d, Xt, Yt, m, &a, forms[f], block, fast, qfast, &sfast);
        gpfq_conv_set_kernel(kernel);
        size_t rows_differing = 0;
        for (size_t i = 0; i < N; i++)
            rows_differing += memcmp(ref + i * d, fast + i * d, d * sizeof(int32_t)) != 0;
        const char *what = exact ? "exact" : "real";
        if (exact)
            CHECK(rows_differing == 0, "%s %s N%zu d%zu m%zu kind %d block %zu: %zu rows differ",
                  gpfq_form_name(forms[f]), what, N, d, m, kind, block, rows_differing);
        else
            CHECK(rows_differing * 50 <= N, "%s %s N%zu d%zu m%zu kind %d: %zu of %zu rows differ",
                  gpfq_form_name(forms[f]), what, N, d, m, kind, rows_differing, N);
        double rel = fabs(sfast.error - sref.error) / (sref.error > 0 ? sref.error : 1);
        CHECK(rel <= (exact ? 1e-6 : 1e-3), "%s N%zu d%zu m%zu kind %d: errors %g vs %g",
              gpfq_form_name(forms[f]), N, d, m, kind, sfast.error, sref.error);
        /* the reference norm ||W X||: from ublock's own kernels where they ran (the other
         * forms take gpfq_layer_error's, as ref does) */
        const int own_norm =
            f == 1 && m >= 2048 && N <= 64 && gpfq_conv_get_kernel() == GPFQ_CONV_AVX512;
        const double norm_ref = sref.error / sref.relative_error,
                     norm_fast = sfast.error / sfast.relative_error;
        CHECK(!own_norm || sref.error == 0 || fabs(norm_fast - norm_ref) <= 1e-5 * norm_ref,
              "%s N%zu d%zu m%zu kind %d: ||W X|| %.9g vs %.9g", gpfq_form_name(forms[f]), N, d, m,
              kind, norm_fast, norm_ref);
    }
    /* GPFQ should beat rounding each weight on its own (MSQ) on the same data */
    int32_t *msq = malloc(N * d * sizeof(int32_t));
    float *qmsq = malloc(N * d * 4);
    gpfq_msq_layer(W, N, d, &a, msq);
    for (size_t i = 0; i < N * d; i++) qmsq[i] = gpfq_code_value(&a, msq[i]);
    double err_msq, norm;
    gpfq_layer_error(W, qmsq, N, d, Xt, Yt, m, &err_msq, &norm);
    if (!exact && kind == GPFQ_QUANTIZER_NEAREST)
        CHECK(sref.error < err_msq, "GPFQ error %g is not below MSQ's %g", sref.error, err_msq);
    free(W), free(Xt), free(Yt), free(ref), free(fast), free(qref), free(qfast), free(msq),
        free(qmsq);
}

static void compare_forms(size_t N, size_t d, size_t m, gpfq_quantizer kind, int exact,
                          size_t block, unsigned long long *state) {
    compare_forms_with(N, d, m, kind, exact, block, 0, state);
}

static void test_forms(void) {
    unsigned long long state = 7;
    const gpfq_quantizer kinds[4] = {GPFQ_QUANTIZER_NEAREST, GPFQ_QUANTIZER_L1, GPFQ_QUANTIZER_L0,
                                     GPFQ_QUANTIZER_STOCHASTIC};
    /* N, d, m: Linear-shaped (m = images) and conv-shaped (d = C k k, m = patches) */
    const size_t shapes[][3] = {{10, 20, 50}, {32, 64, 90}, {6, 25, 100}, {16, 54, 97}, {3, 9, 7}};
    const size_t blocks[] = {0, 1, 8, 13};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int k = 0; k < 4; k++) {
            compare_forms(shapes[s][0], shapes[s][1], shapes[s][2], kinds[k], 1,
                          blocks[(s + k) % 4], &state);
            compare_forms(shapes[s][0], shapes[s][1], shapes[s][2], kinds[k], 0, 0, &state);
        }
    compare_forms(120, 150, 512, GPFQ_QUANTIZER_NEAREST, 0, 0, &state);
    compare_forms(64, 576, 600, GPFQ_QUANTIZER_L0, 0, 64, &state);
    /* long enough for ublock's own kernels: several chunks, a short last vector, N and the
     * block not multiples of 4 */
    compare_forms(10, 37, 2500, GPFQ_QUANTIZER_NEAREST, 1, 13, &state);
    compare_forms(16, 40, 4100, GPFQ_QUANTIZER_L1, 1, 8, &state);
    compare_forms(10, 37, 2500, GPFQ_QUANTIZER_NEAREST, 0, 13, &state);
    compare_forms(16, 144, 5003, GPFQ_QUANTIZER_NEAREST, 0, 0, &state);
    /* the same inputs on both sides, on OpenBLAS's path and on ublock's own kernels, the last
     * block short; exact data: the same codes as ref's */
    compare_forms_with(30, 70, 200, GPFQ_QUANTIZER_NEAREST, 1, 16, 1, &state);
    compare_forms_with(30, 70, 200, GPFQ_QUANTIZER_L1, 0, 0, 1, &state);
    compare_forms_with(150, 300, 256, GPFQ_QUANTIZER_STOCHASTIC, 0, 0, 1, &state);
    compare_forms_with(10, 37, 2500, GPFQ_QUANTIZER_NEAREST, 1, 13, 1, &state);
    compare_forms_with(6, 25, 4100, GPFQ_QUANTIZER_NEAREST, 0, 0, 1, &state);
    compare_forms_with(30, 70, 200, GPFQ_QUANTIZER_NEAREST, 1, 16, 2, &state);
    compare_forms_with(10, 37, 2500, GPFQ_QUANTIZER_NEAREST, 1, 13, 2, &state);
    /* the cost model, layer error included: on ublock's own kernels lenet5's conv1 (6 x 25,
     * m = 50432) is ublock's (twice gram's speed there), resnet20's conv1 (16 x 9) stays gram's;
     * below 2048 columns (a Linear layer) the same 6 x 25 layer is gram's */
    if (gpfq_conv_get_kernel() == GPFQ_CONV_AVX512)
        CHECK(gpfq_layer_form(6, 25, 50432, GPFQ_FORM_AUTO, 0) == GPFQ_FORM_UBLOCK &&
                  gpfq_layer_form(16, 9, 50432, GPFQ_FORM_AUTO, 0) == GPFQ_FORM_GRAM &&
                  gpfq_layer_form(6, 25, 256, GPFQ_FORM_AUTO, 0) == GPFQ_FORM_GRAM,
              "auto forms: %d %d %d, expected ublock, gram, gram",
              (int)gpfq_layer_form(6, 25, 50432, GPFQ_FORM_AUTO, 0),
              (int)gpfq_layer_form(16, 9, 50432, GPFQ_FORM_AUTO, 0),
              (int)gpfq_layer_form(6, 25, 256, GPFQ_FORM_AUTO, 0));
}

/* A layer gives the same codes and error bit for bit at one and two threads: ublock's own
 * kernels sum fixed ranges of columns whatever runs them, gpfq_sgemm sums each element in
 * the same order however the forms split their products between two threads (by columns
 * where N >= 64, else by rows), and a block's sweep splits its neurons (N B^2 >= 2.6e5), each
 * with its own rounding stream. */
static void check_threads_with(const char *what, size_t N, size_t d, size_t m, gpfq_form form,
                               size_t block, gpfq_quantizer quantizer, unsigned long long seed,
                               int same) {
    unsigned long long state = seed;
    float *W = malloc(N * d * 4), *Xt = malloc(d * m * 4), *Yt = malloc(d * m * 4);
    fill(W, N * d, 0, 1.0f, &state);
    fill(Xt, d * m, 0, 1.0f, &state);
    fill(Yt, d * m, 0, 1.0f, &state);
    if (same) memcpy(Yt, Xt, d * m * 4); /* a first layer: ublock's one product, W_b - Q_b */
    gpfq_alphabet a;
    gpfq_alphabet_make(W, N, d, 4, 1.16, 1.0, quantizer, 0, 1, &a);
    int32_t *codes[2] = {malloc(N * d * 4), malloc(N * d * 4)};
    gpfq_layer_stats stats[2];
    const int threads = openblas_get_num_threads();
    for (int k = 0; k < 2; k++) {
        openblas_set_num_threads(k + 1);
        CHECK(openblas_get_num_threads() == k + 1, "%s: asked for %d BLAS threads, have %d", what,
              k + 1, openblas_get_num_threads());
        CHECK(gpfq_gpfq_layer(W, N, d, Xt, Yt, m, &a, form, block, codes[k], NULL, &stats[k]) ==
                  GPFQ_OK,
              "%s: %s", what, gpfq_last_error());
    }
    openblas_set_num_threads(threads);
    CHECK(memcmp(codes[0], codes[1], N * d * 4) == 0, "%s: codes differ between 1 and 2 threads",
          what);
    CHECK(stats[0].error == stats[1].error, "%s: error %.17g at 1 thread, %.17g at 2", what,
          stats[0].error, stats[1].error);
    CHECK(stats[0].relative_error == stats[1].relative_error,
          "%s: relative error %.17g at 1 thread, %.17g at 2", what, stats[0].relative_error,
          stats[1].relative_error);
    free(W), free(Xt), free(Yt), free(codes[0]), free(codes[1]);
}

static void check_threads(const char *what, size_t N, size_t d, size_t m, gpfq_form form,
                          size_t block, gpfq_quantizer quantizer, unsigned long long seed) {
    check_threads_with(what, N, d, m, form, block, quantizer, seed, 0);
}

static void test_threads(void) {
    const gpfq_conv_kernel before = gpfq_conv_set_kernel(GPFQ_CONV_AVX512);
    const gpfq_gemm_kernel gemm_before = gpfq_gemm_set_kernel(GPFQ_GEMM_AVX512);
    if (gpfq_conv_get_kernel() != GPFQ_CONV_AVX512 || gpfq_gemm_get_kernel() != GPFQ_GEMM_AVX512) {
        /* OpenBLAS may round by thread count */
        printf("test_gpfq: no AVX-512 here: thread-count invariance not tested\n");
        gpfq_conv_set_kernel(before);
        gpfq_gemm_set_kernel(gemm_before);
        return;
    }
    const gpfq_quantizer nearest = GPFQ_QUANTIZER_NEAREST;
    check_threads("ublock, own kernels", 21, 70, 4133, GPFQ_FORM_UBLOCK, 16, nearest, 11);
    /* block 64: the sweeps split too (130 x 64^2) */
    check_threads("ublock on gpfq_sgemm, N >= 64 (columns split)", 130, 300, 256, GPFQ_FORM_UBLOCK,
                  0, nearest, 12);
    /* block 32: P (32 x 40 x 1024) splits its rows at 24 */
    check_threads("ublock on gpfq_sgemm, N < 64 (rows split)", 40, 300, 1024, GPFQ_FORM_UBLOCK, 0,
                  nearest, 13);
    check_threads("gram on gpfq_sgemm", 70, 150, 1000, GPFQ_FORM_GRAM, 0, nearest, 14);
    /* N < 64: G and H split by columns, the triangular P = tril(G) Wt by rows, each half with
     * its own diagonal offset */
    check_threads("gram on gpfq_sgemm, N < 64 (P's rows split)", 40, 200, 300, GPFQ_FORM_GRAM, 0,
                  nearest, 17);
    /* split sweeps draw each weight's stream (203 = 112 + 91 neurons) */
    check_threads("ublock, stochastic, sweeps split", 203, 200, 256, GPFQ_FORM_UBLOCK, 0,
                  GPFQ_QUANTIZER_STOCHASTIC, 15);
    check_threads_with("ublock, X is Y, sweeps split", 203, 200, 256, GPFQ_FORM_UBLOCK, 0,
                       GPFQ_QUANTIZER_STOCHASTIC, 17, 1);
    check_threads("gram, stochastic, sweeps split", 203, 130, 600, GPFQ_FORM_GRAM, 0,
                  GPFQ_QUANTIZER_STOCHASTIC, 16);
    gpfq_conv_set_kernel(before);
    gpfq_gemm_set_kernel(gemm_before);
}

/* Where Xt is Yt (a first layer: both sides read the images), the forms take H from G instead
 * of computing the same product again: the codes, error and relative error must be those of
 * the same values in a separate copy of Xt, bit for bit. */
static void check_same_inputs(const char *what, size_t N, size_t d, size_t m, gpfq_form form,
                              unsigned long long seed) {
    unsigned long long state = seed;
    float *W = malloc(N * d * 4), *Xt = malloc(d * m * 4), *copy = malloc(d * m * 4);
    fill(W, N * d, 0, 1.0f, &state);
    fill(Xt, d * m, 0, 1.0f, &state);
    memcpy(copy, Xt, d * m * 4);
    gpfq_alphabet a;
    gpfq_alphabet_make(W, N, d, 3, 1.16, 1.0, GPFQ_QUANTIZER_NEAREST, 0, 1, &a);
    int32_t *codes[2] = {malloc(N * d * 4), malloc(N * d * 4)};
    gpfq_layer_stats stats[2];
    for (int k = 0; k < 2; k++)
        CHECK(gpfq_gpfq_layer(W, N, d, Xt, k ? copy : Xt, m, &a, form, 0, codes[k], NULL,
                              &stats[k]) == GPFQ_OK,
              "%s: %s", what, gpfq_last_error());
    CHECK(memcmp(codes[0], codes[1], N * d * 4) == 0, "%s: Yt = Xt gives other codes than a copy",
          what);
    CHECK(stats[0].error == stats[1].error && stats[0].relative_error == stats[1].relative_error,
          "%s: error %.17g / %.17g with Yt = Xt, %.17g / %.17g with a copy", what, stats[0].error,
          stats[0].relative_error, stats[1].error, stats[1].relative_error);
    free(W), free(Xt), free(copy), free(codes[0]), free(codes[1]);
}

static void test_same_inputs(void) {
    check_same_inputs("gram", 20, 60, 700, GPFQ_FORM_GRAM, 21);
    check_same_inputs("ublock, m < 2048", 30, 70, 500, GPFQ_FORM_UBLOCK, 22);
    check_same_inputs("ublock, m >= 2048 (gpfq's own kernels where the CPU has AVX-512)", 6, 25,
                      5000, GPFQ_FORM_UBLOCK, 23);
    check_same_inputs("auto, lenet5's conv1 shape", 6, 25, 50432, GPFQ_FORM_AUTO, 24);
}

/* gpfq_gpfq_layer_gram on G = Xt Xt^T summed as the gram form sums it (C's lower triangle on
 * gpfq_sgemm_tri): the codes and values of gpfq_gpfq_layer's gram form on Yt = Xt, to the bit on
 * gpfq's GEMM kernel (on OpenBLAS that form's H comes from ssyrk, not G: at most 2% of rows may
 * differ); the error and relative error, from G's quadratic forms, within 1e-4 of the product's
 * (gpfq_layer_error). A layer whose X is all zeros has error 0 and relative error 0. */
static void check_gram_only(const char *what, size_t N, size_t d, size_t m, size_t block,
                            gpfq_quantizer kind, int zero, unsigned long long seed) {
    unsigned long long state = seed;
    float *W = malloc(N * d * 4), *Xt = malloc(d * m * 4), *G = malloc(d * d * 4);
    float *values[2] = {malloc(N * d * 4), malloc(N * d * 4)};
    int32_t *codes[2] = {malloc(N * d * 4), malloc(N * d * 4)};
    fill(W, N * d, 0, 1.0f, &state);
    fill(Xt, d * m, 0, 1.0f, &state);
    if (zero) memset(Xt, 0, d * m * 4);
    for (size_t k = 0; k < d * d; k++) G[k] = NAN; /* above the diagonal: not to be read */
    gpfq_sgemm_tri(GPFQ_TRI_LOWER_C, 0, 0, 1, d, d, m, 1.0f, Xt, m, Xt, m, 0.0f, G, d);
    for (size_t t = 0; t < d; t++)
        for (size_t s = t + 1; s < d; s++) G[t * d + s] = NAN;
    gpfq_alphabet a;
    gpfq_alphabet_make(W, N, d, 3, 1.16, 1.0, kind, 0.05, 5, &a);
    gpfq_layer_stats stats[2];
    CHECK(gpfq_gpfq_layer(W, N, d, Xt, Xt, m, &a, GPFQ_FORM_GRAM, block, codes[0], values[0],
                          &stats[0]) == GPFQ_OK &&
              gpfq_gpfq_layer_gram(W, N, d, G, m, &a, block, codes[1], values[1], &stats[1]) ==
                  GPFQ_OK,
          "%s: %s", what, gpfq_last_error());
    size_t rows_differing = 0;
    for (size_t i = 0; i < N; i++)
        rows_differing += memcmp(codes[0] + i * d, codes[1] + i * d, d * 4) != 0;
    const int own = gpfq_gemm_get_kernel() == GPFQ_GEMM_AVX512;
    CHECK(own ? rows_differing == 0 && !memcmp(values[0], values[1], N * d * 4)
              : rows_differing * 50 <= N,
          "%s: %zu of %zu rows' codes differ from the gram form's on Xt", what, rows_differing, N);
    int ok = 1;
    for (size_t k = 0; k < N * d; k++) ok &= values[1][k] == gpfq_code_value(&a, codes[1][k]);
    CHECK(ok && stats[1].form == GPFQ_FORM_GRAM && stats[1].residual == 0,
          "%s: values, form %d, residual %d", what, stats[1].form, stats[1].residual);
    double error, norm;
    gpfq_layer_error(W, values[1], N, d, Xt, Xt, m, &error, &norm);
    const double want = norm > 0 ? error / norm : 0.0;
    CHECK(zero ? stats[1].error == 0.0 && stats[1].relative_error == 0.0
               : fabs(stats[1].error - error) <= 1e-4 * error &&
                     fabs(stats[1].relative_error - want) <= 1e-4 * want,
          "%s: error %.9g, relative %.9g from G; %.9g, %.9g from the product", what, stats[1].error,
          stats[1].relative_error, error, want);
    free(W), free(Xt), free(G), free(values[0]), free(values[1]), free(codes[0]), free(codes[1]);
}

static void test_gram_only(void) {
    check_gram_only("lenet5's conv1 shape, 6 x 25", 6, 25, 5000, 0, GPFQ_QUANTIZER_NEAREST, 0, 31);
    check_gram_only("resnet18's conv1 shape, 64 x 9", 64, 9, 3000, 0, GPFQ_QUANTIZER_NEAREST, 0,
                    32);
    check_gram_only("blocks of 8, d = 75", 13, 75, 900, 8, GPFQ_QUANTIZER_NEAREST, 0, 33);
    check_gram_only("stochastic", 9, 40, 700, 0, GPFQ_QUANTIZER_STOCHASTIC, 0, 34);
    check_gram_only("L0", 7, 30, 600, 16, GPFQ_QUANTIZER_L0, 0, 35);
    check_gram_only("one column", 3, 12, 1, 0, GPFQ_QUANTIZER_NEAREST, 0, 36);
    check_gram_only("inputs all zero", 5, 20, 300, 0, GPFQ_QUANTIZER_NEAREST, 1, 37);
    { /* a G that is not finite (NaN among the inputs) gives an error that is not finite */
        float W[6] = {0.5f, -0.25f, 1.0f, 0.75f, -1.0f, 0.125f},
              G[9] = {1, 0, 0, NAN, 2, 0, 0, 0, 3};
        float values[6];
        int32_t codes[6];
        gpfq_alphabet a = alphabet(GPFQ_QUANTIZER_NEAREST, 3, 0.25f, 0.0f);
        gpfq_layer_stats st;
        CHECK(gpfq_gpfq_layer_gram(W, 2, 3, G, 10, &a, 0, codes, values, &st) == GPFQ_OK &&
                  isnan(st.error) && isnan(st.relative_error),
              "G with a NaN: error %g, relative %g", st.error, st.relative_error);
    }
    /* the driver's choice: G alone for a first conv where it costs less, never for a form asked */
    CHECK(gpfq_layer_gram_only(6, 25, 50432, GPFQ_FORM_AUTO, 0) &&
              gpfq_layer_gram_only(16, 9, 50432, GPFQ_FORM_AUTO, 0) &&
              gpfq_layer_gram_only(4, 25, 12608, GPFQ_FORM_AUTO, 0) &&
              !gpfq_layer_gram_only(16, 150, 6656, GPFQ_FORM_AUTO, 0) &&
              !gpfq_layer_gram_only(6, 25, 50432, GPFQ_FORM_UBLOCK, 0) &&
              !gpfq_layer_gram_only(6, 25, 50432, GPFQ_FORM_GRAM, 0),
          "which layers are quantized from G alone");
}

/* count floats that end where an inaccessible page begins, zeroed: a read or a write past them
 * faults (the vector loads and stores must stay inside the plane and dst) */
static float *guarded_floats(size_t count, void **base, size_t *len) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = count * sizeof(float);
    *len = (bytes + page - 1) / page * page + page;
    char *mem = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || mprotect(mem + *len - page, page, PROT_NONE) != 0) return NULL;
    *base = mem;
    return (float *)(mem + *len - page - bytes);
}

/* The patches the driver unfolds, bit for bit against gpfq_im2col's columns (a separate
 * unfolding, checked against torch in test_ops): the AVX-512 rows, the 3- and 5-wide rows'
 * own loops and the general one, strides, padding, dilation, groups, non-square kernels and
 * planes, patches drawn more than once, in a dst wider than the patches (its other columns
 * untouched). The plane and dst end at an inaccessible page, and the last patch is always
 * drawn: its last tap is the plane's last float where the padding fits the kernel exactly. */
static void check_unfold(int in_c, int h, int kh, int kw, int stride, int pad, int dil_h, int dil_w,
                         int groups, size_t keep, unsigned long long seed) {
    gpfq_conv_geom g = {.in_c = in_c,
                        .in_h = h,
                        .in_w = h + 3,
                        .out_c = groups,
                        .kernel_h = kh,
                        .kernel_w = kw,
                        .stride_h = stride,
                        .stride_w = stride,
                        .pad_h = pad,
                        .pad_w = pad + 1,
                        .dilation_h = dil_h,
                        .dilation_w = dil_w,
                        .groups = groups};
    g.out_h = gpfq_window_out(g.in_h, kh, stride, g.pad_h, dil_h, 0);
    g.out_w = gpfq_window_out(g.in_w, kw, stride, g.pad_w, dil_w, 0);
    const int cg = in_c / groups;
    const size_t P = (size_t)g.out_h * g.out_w, d = (size_t)cg * kh * kw;
    if (!keep) keep = P / 3 + 2;
    const size_t m = keep + 5, pw = gpfq_unfold_padded_w(&g);
    unsigned long long state = seed;
    void *dst_base = NULL, *plane_base = NULL;
    size_t dst_len = 0, plane_len = 0;
    float *image = malloc((size_t)in_c * g.in_h * g.in_w * 4), *col = malloc(d * P * 4);
    float *dst = guarded_floats(d * m, &dst_base, &dst_len);
    float *plane = guarded_floats(gpfq_unfold_padded_h(&g) * pw, &plane_base, &plane_len);
    size_t *patch = malloc(keep * sizeof(size_t));
    uint32_t *offset = malloc(keep * 4);
    CHECK(dst && plane, "unfold: no guarded buffers");
    if (!dst || !plane) {
        free(image), free(col), free(patch), free(offset);
        return;
    }
    fill(image, (size_t)in_c * g.in_h * g.in_w, 0, 1.0f, &state);
    for (size_t j = 0; j < keep; j++) {
        patch[j] = j + 1 == keep
                       ? P - 1
                       : (size_t)(check_rand(&state) * 0.5f * (float)P + 0.5f * (float)P) % P;
        offset[j] = (uint32_t)(patch[j] / (size_t)g.out_w * (size_t)stride * pw +
                               patch[j] % (size_t)g.out_w * (size_t)stride);
    }
    int bad = 0;
    for (int grp = 0; grp < groups; grp++) {
        memset(dst, 0xff, d * m * 4); /* NaN: a column the unfolding does not write stays so */
        gpfq_im2col(&g, image, grp * cg, cg, col, P);
        gpfq_unfold_patches(&g, image, grp * cg, cg, offset, keep, plane, dst, m);
        for (size_t t = 0; t < d; t++) {
            for (size_t j = 0; j < keep; j++)
                bad += memcmp(&dst[t * m + j], &col[t * P + patch[j]], 4) != 0;
            for (size_t j = keep; j < m; j++) bad += !isnan(dst[t * m + j]);
        }
    }
    CHECK(bad == 0,
          "unfold %dx%d of %d channels (%d groups) at %d, stride %d, pad %d, dilation %dx%d, "
          "%zu patches, %s rows: %d values differ from im2col's",
          kh, kw, in_c, groups, h, stride, pad, dil_h, dil_w, keep,
          gpfq_conv_kernel_name(gpfq_conv_get_kernel()), bad);
    free(image), free(col), free(patch), free(offset);
    munmap(dst_base, dst_len), munmap(plane_base, plane_len);
}

static void test_unfold_cases(void) {
    check_unfold(3, 12, 3, 3, 1, 1, 1, 1, 1, 0, 31); /* resnet20's 3x3 */
    check_unfold(4, 9, 3, 3, 2, 1, 1, 1, 1, 0, 32);  /* stride 2 */
    check_unfold(2, 14, 5, 5, 1, 2, 1, 1, 1, 0, 33); /* lenet5's 5x5 with padding */
    check_unfold(3, 11, 5, 5, 1, 0, 1, 1, 1, 0, 34); /* without */
    check_unfold(4, 10, 3, 5, 1, 1, 1, 1, 2, 0, 35); /* 3x5 in two groups */
    check_unfold(2, 10, 5, 3, 2, 2, 1, 1, 1, 0, 36); /* 5x3 */
    check_unfold(3, 13, 3, 3, 1, 2, 2, 2, 1, 0, 37); /* dilation 2: the general loop */
    check_unfold(3, 13, 3, 3, 1, 2, 2, 1, 1, 0, 43); /* dilated rows, undilated taps */
    check_unfold(5, 8, 1, 1, 1, 0, 1, 1, 1, 0, 38);  /* 1x1 */
    check_unfold(2, 16, 7, 7, 2, 3, 1, 1, 1, 0, 39); /* 7x7 stride 2 */
    check_unfold(6, 9, 3, 3, 3, 1, 1, 1, 6, 0, 40); /* depthwise, stride = kernel (the reference) */
    check_unfold(2, 12, 4, 4, 1, 1, 1, 1, 1, 0, 41);  /* 4 wide: one full set of 4 taps */
    check_unfold(1, 10, 2, 8, 1, 0, 1, 1, 1, 0, 42);  /* 8 wide: two */
    check_unfold(2, 11, 2, 2, 1, 0, 1, 1, 1, 0, 44);  /* 2 wide */
    check_unfold(1, 12, 3, 9, 1, 4, 1, 1, 1, 0, 45);  /* 9 wide: 4 + 4 + 1 taps */
    check_unfold(2, 12, 3, 3, 1, 1, 1, 1, 1, 16, 46); /* one vector, no tail */
    check_unfold(2, 12, 3, 3, 1, 1, 1, 1, 1, 32, 47); /* two */
}

/* Each case on the AVX-512 rows (16 patches at a time, the rest by the scalar loops) and on the
 * scalar loops alone (where the CPU lacks AVX-512, both runs take them). */
static void test_unfold(void) {
    const gpfq_conv_kernel before = gpfq_conv_get_kernel();
    for (int k = 0; k < 2; k++) {
        gpfq_conv_set_kernel(k ? GPFQ_CONV_AVX2 : GPFQ_CONV_AVX512);
        test_unfold_cases();
    }
    gpfq_conv_set_kernel(before);
}

typedef struct {
    pthread_t ran_on;
    int runs;
} helper_probe;

static void probe(void *arg) {
    helper_probe *p = arg;
    p->ran_on = pthread_self();
    p->runs++;
}

static void nap(long us) {
    struct timespec t = {0, us * 1000};
    nanosleep(&t, NULL);
}

/* a slow job: the caller's wait outlasts its spin and sleeps until woken */
static void slow_probe(void *arg) {
    nap(3000);
    probe(arg);
}

static atomic_int shared_holders, shared_overlaps;

/* One of two threads taking helpers over and over: the shared one never has two holders. */
static void *helper_user(void *arg) {
    (void)arg;
    for (int k = 0; k < 300; k++) {
        gpfq_helper *h = gpfq_helper_acquire();
        if (!h) continue;
        const int shared = gpfq_helper_is_shared(h);
        if (shared && atomic_fetch_add(&shared_holders, 1) != 0)
            atomic_fetch_add(&shared_overlaps, 1);
        helper_probe p = {0};
        gpfq_helper_post(h, probe, &p);
        gpfq_helper_wait(h);
        if (shared) atomic_fetch_sub(&shared_holders, 1);
        gpfq_helper_release(h);
        if (p.runs != 1) atomic_fetch_add(&shared_overlaps, 1000);
    }
    return NULL;
}

/* The shared helper goes to one caller at a time; a second caller gets a thread of its own; a
 * released shared helper is handed out again; pairs run one side on another thread; jobs posted
 * to a sleeping helper run, a caller asleep in its wait is woken, and two threads taking
 * helpers at once never share one. */
static void test_helper(void) {
    gpfq_helper *a = gpfq_helper_acquire(), *b = gpfq_helper_acquire();
    CHECK(a && b && a != b, "two callers, two helpers (%p, %p)", (void *)a, (void *)b);
    CHECK(gpfq_helper_is_shared(a) && !gpfq_helper_is_shared(b),
          "the first caller holds the shared helper, the second one of its own");
    if (!a || !b) {
        gpfq_helper_release(b);
        gpfq_helper_release(a);
        return;
    }
    helper_probe pa = {0}, pb = {0};
    for (int k = 0; k < 3; k++) {
        if (k == 1) nap(2000); /* both helpers gone to sleep: a post must wake them */
        gpfq_helper_post(a, k == 2 ? slow_probe : probe, &pa);
        gpfq_helper_post(b, k == 2 ? slow_probe : probe, &pb);
        gpfq_helper_wait(a); /* k == 2: asleep in the wait, woken by the helper */
        gpfq_helper_wait(b);
    }
    CHECK(pa.runs == 3 && pb.runs == 3, "every job ran once (%d, %d)", pa.runs, pb.runs);
    CHECK(!pthread_equal(pa.ran_on, pthread_self()) && !pthread_equal(pb.ran_on, pthread_self()) &&
              !pthread_equal(pa.ran_on, pb.ran_on),
          "the jobs ran on two other threads");
    nap(2000); /* b's thread asleep when it is stopped */
    gpfq_helper_release(b);
    gpfq_helper_release(a);
    gpfq_helper *again = gpfq_helper_acquire();
    CHECK(gpfq_helper_is_shared(again), "the released shared helper is handed out again");
    gpfq_helper_release(again);
    helper_probe x = {0}, y = {0};
    gpfq_helper_pair(probe, &x, &y, 1);
    CHECK(x.runs == 1 && y.runs == 1 && !pthread_equal(x.ran_on, pthread_self()) &&
              pthread_equal(y.ran_on, pthread_self()),
          "a pair runs its first job on the helper, its second here");
    gpfq_helper_pair(probe, &x, &y, 0);
    CHECK(x.runs == 2 && y.runs == 2 && pthread_equal(x.ran_on, pthread_self()),
          "an unparallel pair runs both here");
    pthread_t users[2];
    int started = 0;
    for (int k = 0; k < 2; k++) started += pthread_create(&users[k], NULL, helper_user, NULL) == 0;
    for (int k = 0; k < started; k++) pthread_join(users[k], NULL);
    CHECK(started == 2 && atomic_load(&shared_overlaps) == 0,
          "two threads taking helpers at once: %d overlaps or lost jobs",
          atomic_load(&shared_overlaps));
}

typedef struct {
    const gpfq_model *model;
    float *data[16];
} float_cache;

static void cache_sink(void *ctx, int layer, int node, const float *data, size_t n) {
    float_cache *c = ctx;
    size_t bytes = n * gpfq_shape_size(c->model->nodes[node].in_shape) * sizeof(float);
    c->data[layer] = malloc(bytes);
    memcpy(c->data[layer], data, bytes);
}

static const float *cache_source(void *ctx, int layer, int node, size_t n) {
    (void)node, (void)n;
    return ((float_cache *)ctx)->data[layer];
}

/* The float inputs computed once and handed in give the same codes as running
 * the float network inside every quantization. */
static void test_cached_inputs(const gpfq_model *m, const gpfq_dataset *train,
                               gpfq_calib_mode mode) {
    gpfq_quant_options o;
    gpfq_quant_options_default(&o);
    o.calib_images = 40;
    o.calib_mode = mode;
    o.calib_seed = 5;
    float_cache cache = {m, {0}};
    CHECK(gpfq_float_inputs(m, train, &o, cache_sink, &cache) == GPFQ_OK, "%s", gpfq_last_error());
    gpfq_quant_result a, b;
    gpfq_quantize_model(m, train, &o, &a, NULL, NULL);
    CHECK(gpfq_quantize_model_with(m, train, &o, cache_source, &cache, &b, NULL, NULL) == GPFQ_OK,
          "%s", gpfq_last_error());
    /* on OpenBLAS a product may round differently for another number of images (README) */
    CHECK(gpfq_codes_hash(&a) == gpfq_codes_hash(&b) || gpfq_gemm_get_kernel() != GPFQ_GEMM_AVX512,
          "cached float inputs change the codes (mode %d)", mode);
    gpfq_quant_result_free(&a);
    gpfq_quant_result_free(&b);
    for (int i = 0; i < 16; i++) free(cache.data[i]);
}

/* The in-block sweep's AVX-512 rows (up to 8 vectors of a row in registers, masked at the end)
 * against its plain loop: the same codes, values and error to the bit, for every width of a
 * thread's share of the neurons from 1 to 300, past two chunks of 128, on ublock (blocks of 32 and
 * 64: the split between threads from N = 64) and gram (blocks of 128). */
static void test_sweep_rows(void) {
    const size_t Ns[] = {1,  2,  7,   15,  16,  17,  31,  33,  63,
                         64, 65, 100, 127, 129, 130, 200, 257, 300};
    const gpfq_form forms[] = {GPFQ_FORM_UBLOCK, GPFQ_FORM_GRAM};
    const size_t d = 70, m = 50;
    int bad = 0, runs = 0;
    for (size_t c = 0; c < sizeof Ns / sizeof *Ns; c++)
        for (size_t f = 0; f < 2; f++) {
            const size_t N = Ns[c];
            float *W = malloc(N * d * 4), *Xt = malloc(d * m * 4), *Yt = malloc(d * m * 4);
            float *qa = malloc(N * d * 4), *qb = malloc(N * d * 4);
            int32_t *ca = malloc(N * d * 4), *cb = malloc(N * d * 4);
            unsigned long long state = 100 + c;
            random_layer(W, Xt, Yt, N, d, m, 0.1f, &state);
            gpfq_alphabet a;
            gpfq_alphabet_make(W, N, d, 3, 1.16, 1.0, GPFQ_QUANTIZER_NEAREST, 0, 0, &a);
            gpfq_layer_stats sa, sb;
            gpfq_sweep_allow_avx512(0);
            int ok = gpfq_gpfq_layer(W, N, d, Xt, Yt, m, &a, forms[f], 0, ca, qa, &sa) == GPFQ_OK;
            gpfq_sweep_allow_avx512(1);
            ok &= gpfq_gpfq_layer(W, N, d, Xt, Yt, m, &a, forms[f], 0, cb, qb, &sb) == GPFQ_OK;
            ok &= !memcmp(ca, cb, N * d * 4) && !memcmp(qa, qb, N * d * 4) && sa.error == sb.error;
            if (!ok && !bad++)
                fprintf(stderr, "sweep rows: %s N %zu differs\n", gpfq_form_name(forms[f]), N);
            runs++;
            free(W), free(Xt), free(Yt), free(qa), free(qb), free(ca), free(cb);
        }
    CHECK(bad == 0,
          "the in-block sweep's AVX-512 rows and its plain loop differ in %d of %d layers", bad,
          runs);
}

/* gpfq_gpfq_layer_no_norm: the codes, values and error of gpfq_gpfq_layer, and the relative
 * error too where the form gives ||W Xt|| without a product of its own (gram and ref compute
 * the error from W Xt; ublock's own kernels for N <= 64, m >= 2048); NaN where it would take one
 * (ublock below m = 2048, or N > 64). The residual W Xt - Q Yt where ublock runs on GEMMs (not
 * on its own kernels, m >= 2048), against a sum in double to 1e-5 of its largest value; else
 * none, and the buffer untouched. */
static void test_no_norm(void) {
    const struct {
        size_t N, d, m;
        gpfq_form form;
        int nan; /* -1: NaN unless on the AVX-512 kernels */
    } cases[] = {{20, 30, 50, GPFQ_FORM_UBLOCK, 1},
                 {20, 30, 50, GPFQ_FORM_GRAM, 0},
                 {20, 30, 50, GPFQ_FORM_REF, 0},
                 {80, 24, 2100, GPFQ_FORM_UBLOCK, 1},
                 {12, 24, 2100, GPFQ_FORM_UBLOCK, -1}};
    const int own = gpfq_conv_get_kernel() == GPFQ_CONV_AVX512;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const size_t N = cases[c].N, d = cases[c].d, m = cases[c].m;
        float *W = malloc(N * d * 4), *Xt = malloc(d * m * 4), *Yt = malloc(d * m * 4);
        float *qa = malloc(N * d * 4), *qb = malloc(N * d * 4), *R = malloc(N * m * 4);
        int32_t *ca = malloc(N * d * 4), *cb = malloc(N * d * 4);
        for (size_t k = 0; k < N * m; k++) R[k] = -7.0f;
        unsigned long long state = 11 + c;
        random_layer(W, Xt, Yt, N, d, m, 0.05f, &state);
        gpfq_alphabet a;
        gpfq_alphabet_make(W, N, d, 4, 1.16, 1.0, GPFQ_QUANTIZER_NEAREST, 0, 0, &a);
        gpfq_layer_stats sa, sb;
        const int ran =
            gpfq_gpfq_layer(W, N, d, Xt, Yt, m, &a, cases[c].form, 0, ca, qa, &sa) == GPFQ_OK &&
            gpfq_gpfq_layer_no_norm(W, N, d, Xt, Yt, m, &a, cases[c].form, 0, cb, qb, R, &sb) ==
                GPFQ_OK;
        const int want_nan = cases[c].nan < 0 ? !own : cases[c].nan;
        CHECK(ran && !memcmp(ca, cb, N * d * 4) && !memcmp(qa, qb, N * d * 4) &&
                  sa.error == sb.error && isfinite(sa.relative_error) &&
                  (want_nan ? isnan(sb.relative_error) : sb.relative_error == sa.relative_error),
              "no_norm, %s N %zu d %zu m %zu: relative error %g against %g (NaN expected: %d), "
              "error %g against %g",
              gpfq_form_name(cases[c].form), N, d, m, sb.relative_error, sa.relative_error,
              want_nan, sb.error, sa.error);
        const int want_residual = cases[c].form == GPFQ_FORM_UBLOCK && !(own && m >= 2048);
        double worst = 0.0, largest = 0.0;
        for (size_t i = 0; i < N; i++)
            for (size_t k = 0; k < m; k++) {
                double r = 0.0;
                for (size_t t = 0; t < d; t++)
                    r += (double)W[i * d + t] * Xt[t * m + k] -
                         (double)qb[i * d + t] * Yt[t * m + k];
                const double off = want_residual ? fabs(R[i * m + k] - r) : R[i * m + k] != -7.0f;
                if (!(off <= worst)) worst = off;
                if (fabs(r) > largest) largest = fabs(r);
            }
        CHECK(ran && sb.residual == want_residual && worst <= (want_residual ? 1e-5 * largest : 0),
              "no_norm, %s N %zu d %zu m %zu: residual %d (expected %d), off by %g (largest %g)",
              gpfq_form_name(cases[c].form), N, d, m, sb.residual, want_residual, worst, largest);
        free(W), free(Xt), free(Yt), free(qa), free(qb), free(R), free(ca), free(cb);
    }
}

/* A Linear layer's inputs as the network holds them, X and Y (m, d), read by ublock on GEMMs
 * with the other transpose flag: the same codes, values, error, relative error and residual
 * as gpfq_gpfq_layer and gpfq_gpfq_layer_no_norm on Xt and Yt, to the bit on gpfq's GEMM kernel
 * (OpenBLAS may round a product read the other way differently: there the error to 1e-4); a
 * form that does not read rows is refused, the codes untouched. */
static void test_rows(void) {
    const struct {
        size_t N, d, m, block;
        gpfq_form form;
        int same; /* Y is X */
    } cases[] = {{20, 30, 50, 0, GPFQ_FORM_UBLOCK, 0},  {20, 30, 50, 0, GPFQ_FORM_UBLOCK, 1},
                 {80, 200, 41, 0, GPFQ_FORM_AUTO, 0},   {80, 200, 41, 0, GPFQ_FORM_AUTO, 1},
                 {500, 150, 256, 0, GPFQ_FORM_AUTO, 0}, {300, 129, 257, 48, GPFQ_FORM_UBLOCK, 0},
                 {7, 5, 3, 0, GPFQ_FORM_UBLOCK, 0},     {20, 30, 50, 0, GPFQ_FORM_GRAM, 0},
                 {20, 30, 50, 0, GPFQ_FORM_REF, 0},     {12, 24, 2100, 0, GPFQ_FORM_UBLOCK, 0},
                 {12, 24, 8300, 0, GPFQ_FORM_UBLOCK, 0}};
    const int exact = gpfq_gemm_get_kernel() == GPFQ_GEMM_AVX512;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const size_t N = cases[c].N, d = cases[c].d, m = cases[c].m, block = cases[c].block;
        /* past 8192 columns, without ublock's own kernels: the norm's product in chunks */
        const gpfq_conv_kernel kernel =
            gpfq_conv_set_kernel(m > 8192 ? GPFQ_CONV_IM2COL : gpfq_conv_get_kernel());
        const int own = gpfq_conv_get_kernel() == GPFQ_CONV_AVX512;
        const gpfq_form form = cases[c].form;
        float *W = malloc(N * d * 4), *Xt = malloc(d * m * 4), *Yt = malloc(d * m * 4);
        float *X = malloc(m * d * 4), *Y = malloc(m * d * 4);
        unsigned long long state = 23 + c;
        random_layer(W, Xt, Yt, N, d, m, 0.05f, &state);
        if (cases[c].same) memcpy(Yt, Xt, d * m * 4);
        gpfq_transpose32(Xt, d, m, X);
        gpfq_transpose32(Yt, d, m, Y);
        gpfq_alphabet a;
        gpfq_alphabet_make(W, N, d, 3, 1.16, 1.0, GPFQ_QUANTIZER_NEAREST, 0, 0, &a);
        const int reads = gpfq_layer_reads_rows(N, d, m, form, block);
        const int want_reads =
            gpfq_layer_form(N, d, m, form, block) == GPFQ_FORM_UBLOCK && !(own && m >= 2048);
        CHECK(reads == want_reads, "rows, %s N %zu d %zu m %zu: reads rows %d, expected %d",
              gpfq_form_name(form), N, d, m, reads, want_reads);
        for (int norm = 0; norm < 2; norm++) {
            int32_t *ca = malloc(N * d * 4), *cb = malloc(N * d * 4);
            float *qa = malloc(N * d * 4), *qb = malloc(N * d * 4);
            float *ra = malloc(N * m * 4), *rb = malloc(N * m * 4);
            for (size_t k = 0; k < N * d; k++) cb[k] = -99;
            gpfq_layer_stats sa, sb;
            const gpfq_status st =
                gpfq_gpfq_layer_rows(W, N, d, X, cases[c].same ? X : Y, m, &a, form, block, cb, qb,
                                     norm ? NULL : rb, &sb, norm);
            if (!reads) {
                int untouched = 1;
                for (size_t k = 0; k < N * d; k++) untouched &= cb[k] == -99;
                CHECK(st == GPFQ_ERR_ARG && untouched &&
                          strstr(gpfq_last_error(), "ublock form on GEMMs only") &&
                          strstr(gpfq_last_error(), "gpfq_gpfq_layer"),
                      "rows, %s N %zu d %zu m %zu: status %d, codes untouched %d, message '%s'",
                      gpfq_form_name(form), N, d, m, st, untouched, gpfq_last_error());
            } else {
                const gpfq_status sta =
                    norm ? gpfq_gpfq_layer(W, N, d, Xt, Yt, m, &a, form, block, ca, qa, &sa)
                         : gpfq_gpfq_layer_no_norm(W, N, d, Xt, Yt, m, &a, form, block, ca, qa, ra,
                                                   &sa);
                const int ok = st == GPFQ_OK && sta == GPFQ_OK;
                const int same = ok && !memcmp(ca, cb, N * d * 4) && !memcmp(qa, qb, N * d * 4) &&
                                 sa.error == sb.error &&
                                 (norm ? sa.relative_error == sb.relative_error
                                       : isnan(sa.relative_error) && isnan(sb.relative_error)) &&
                                 sa.residual == sb.residual && sb.residual == !norm &&
                                 (norm || !memcmp(ra, rb, N * m * 4));
                const double off = ok ? fabs(sa.error - sb.error) / sa.error : INFINITY;
                CHECK(exact ? same : off <= 1e-4,
                      "rows, %s N %zu d %zu m %zu block %zu, Y %s X, norm %d: status %d / %d, "
                      "error %.17g against %.17g, relative %.17g against %.17g, residual %d / %d",
                      gpfq_form_name(form), N, d, m, block, cases[c].same ? "is" : "is not", norm,
                      st, sta, sb.error, sa.error, sb.relative_error, sa.relative_error,
                      sb.residual, sa.residual);
            }
            free(ca), free(cb), free(qa), free(qb), free(ra), free(rb);
        }
        gpfq_conv_set_kernel(kernel);
        free(W), free(Xt), free(Yt), free(X), free(Y);
    }
}

typedef struct {
    int calls, in_order, finite;
} report_log;

static void log_report(void *ctx, const gpfq_layer_report *layer, int index, int total) {
    report_log *l = ctx;
    (void)total;
    l->in_order &= index == l->calls++;
    l->finite &= layer->skipped || isfinite(layer->relative_error);
}

/* ||X W^T - Y Q^T||_F and ||X W^T||_F of a Linear layer in double: X, Y (n, d); W, Q (N, d) */
static void linear_errors_ref(const float *W, const float *Q, const float *X, const float *Y,
                              size_t n, size_t N, size_t d, double *error, double *norm) {
    double e2 = 0.0, r2 = 0.0;
    for (size_t i = 0; i < n; i++)
        for (size_t o = 0; o < N; o++) {
            double wx = 0.0, qy = 0.0;
            for (size_t k = 0; k < d; k++) {
                wx += (double)W[o * d + k] * X[i * d + k];
                qy += (double)Q[o * d + k] * Y[i * d + k];
            }
            e2 += (wx - qy) * (wx - qy);
            r2 += wx * wx;
        }
    *error = sqrt(e2);
    *norm = sqrt(r2);
}

/* With one calibration set, a Linear layer's ||W Xt|| comes from its float output, and where
 * its GPFQ ends with the residual R = W Xt - Q Yt, the quantized network's output over it is
 * the float one less R, without a product: with the float network at hand (the float pass's
 * output) and with cached float inputs (a sweep's tasks), which must give the same codes and
 * reports to the bit. Against a reference in double on the float network's inputs X and the
 * quantized result's own inputs Y (each network run plainly, gpfq_float_inputs): each layer's
 * error and relative error to 1e-4, so a quantized pass that strayed from Q Yt (a bias shift
 * lost, R's sign or layout) shows in the next layer. Every report is handed over once, in
 * order, and complete: a report without the residual waits for the pass to the next layer
 * (also one left in float), or after the last layer for a pass of its own. */
static void test_deferred_norms(const gpfq_model *m, const gpfq_dataset *train, const char *ignore,
                                gpfq_form form, int bias_correction, size_t images) {
    gpfq_quant_options o;
    gpfq_quant_options_default(&o);
    o.calib_images = images;
    o.form = form;
    o.bias_correction = bias_correction;
    o.ignore = &ignore;
    o.n_ignore = ignore != NULL;
    float_cache xs = {m, {0}}, ys = {m, {0}};
    gpfq_quant_result a, b;
    report_log la = {0, 1, 1}, lb = {0, 1, 1};
    const int ran =
        gpfq_float_inputs(m, train, &o, cache_sink, &xs) == GPFQ_OK &&
        gpfq_quantize_model(m, train, &o, &a, log_report, &la) == GPFQ_OK &&
        gpfq_quantize_model_with(m, train, &o, cache_source, &xs, &b, log_report, &lb) == GPFQ_OK &&
        gpfq_float_inputs(a.model, train, &o, cache_sink, &ys) == GPFQ_OK;
    CHECK(ran, "%s", gpfq_last_error());
    if (ran) {
        CHECK(la.calls == a.n_layers && la.in_order && la.finite && lb.calls == b.n_layers &&
                  lb.in_order && lb.finite,
              "reports handed over %d / %d times for %d layers, in order %d / %d, complete %d / %d",
              la.calls, lb.calls, a.n_layers, la.in_order, lb.in_order, la.finite, lb.finite);
        int same = gpfq_codes_hash(&a) == gpfq_codes_hash(&b), skipped = 0;
        double worst = 0.0;
        for (int l = 0; l < a.n_layers; l++) {
            const gpfq_layer_report *r = &a.layers[l];
            same &= r->error == b.layers[l].error || (isnan(r->error) && r->skipped);
            same &= r->relative_error == b.layers[l].relative_error || r->skipped;
            skipped += r->skipped;
            if (r->skipped) continue;
            if ((double)images * r->rows * r->cols > 2e8) continue; /* the double sums' time */
            const gpfq_node *fnode = &m->nodes[r->node];
            double error, norm;
            linear_errors_ref(fnode->weight, a.model->nodes[r->node].weight, xs.data[l], ys.data[l],
                              images, r->rows, r->cols, &error, &norm);
            const double de = fabs(r->error - error) / error;
            const double dr = fabs(r->relative_error - error / norm) / (error / norm);
            if (!(de <= worst)) worst = de;
            if (!(dr <= worst)) worst = dr;
            if (bias_correction) { /* qb = fb + W mean(X) - Q mean(Y), the means over the images */
                const float *Q = a.model->nodes[r->node].weight;
                const float *fb = fnode->bias, *qb = a.model->nodes[r->node].bias;
                for (size_t row = 0; row < r->rows; row++) {
                    double want = fb ? fb[row] : 0.0, size = fabs(want);
                    for (size_t i = 0; i < images; i++)
                        for (size_t k = 0; k < r->cols; k++) {
                            const double wx = (double)fnode->weight[row * r->cols + k] *
                                              xs.data[l][i * r->cols + k] / (double)images;
                            const double qy = (double)Q[row * r->cols + k] *
                                              ys.data[l][i * r->cols + k] / (double)images;
                            want += wx - qy;
                            size += fabs(wx) + fabs(qy);
                        }
                    const double db =
                        qb ? fabs(qb[row] - want) / (size > 0 ? size : 1.0) : INFINITY;
                    if (!(db <= worst)) worst = db;
                }
            }
        }
        /* on OpenBLAS a product may round differently for another number of images (README) */
        CHECK(same || gpfq_gemm_get_kernel() != GPFQ_GEMM_AVX512,
              "%s, bias correction %d, %zu images: the float pass and the cached inputs disagree",
              gpfq_form_name(form), bias_correction, images);
        CHECK(worst <= 1e-4 && skipped == (ignore != NULL),
              "%s, bias correction %d, %s ignored, %zu images: errors and relative errors differ "
              "from the reference in double by %g (relative; allowed 1e-4), %d layers left in "
              "float",
              gpfq_form_name(form), bias_correction, ignore ? ignore : "nothing", images, worst,
              skipped);
        gpfq_quant_result_free(&a);
        gpfq_quant_result_free(&b);
    }
    for (int i = 0; i < 16; i++) free(xs.data[i]), free(ys.data[i]);
}

/* A network's first Linear layer, quantized by the driver (X is Y there: the same images on
 * both sides), against gpfq_gpfq_layer on its float inputs transposed here (nearest rounding:
 * the alphabet's seed does not matter). */
static void test_first_linear(const gpfq_model *m, const gpfq_dataset *train) {
    gpfq_quant_options o;
    gpfq_quant_options_default(&o);
    o.calib_images = 40;
    float_cache cache = {m, {0}};
    gpfq_quant_result r;
    const int ran = gpfq_float_inputs(m, train, &o, cache_sink, &cache) == GPFQ_OK &&
                    gpfq_quantize_model(m, train, &o, &r, NULL, NULL) == GPFQ_OK;
    CHECK(ran, "%s", gpfq_last_error());
    if (!ran) { /* no result to compare with */
        for (int i = 0; i < 16; i++) free(cache.data[i]);
        return;
    }
    const int j = r.layers[0].node;
    const gpfq_node *node = &m->nodes[j];
    const size_t N = (size_t)node->weight_dims[0], d = (size_t)node->weight_dims[1], n = 40;
    float *Xt = malloc(d * n * 4);
    int32_t *codes = malloc(N * d * 4);
    for (size_t i = 0; i < n; i++)
        for (size_t t = 0; t < d; t++) Xt[t * n + i] = cache.data[0][i * d + t];
    gpfq_alphabet a;
    gpfq_alphabet_make(node->weight, N, d, o.bits, o.mlp_scalar, o.mlp_percentile,
                       GPFQ_QUANTIZER_NEAREST, 0, 0, &a);
    CHECK(node->op == GPFQ_OP_LINEAR &&
              gpfq_gpfq_layer(node->weight, N, d, Xt, Xt, n, &a, o.form, o.block, codes, NULL,
                              NULL) == GPFQ_OK &&
              memcmp(codes, r.codes[j], N * d * 4) == 0,
          "the first Linear layer's codes (%zu x %zu) differ from GPFQ on its float inputs", N, d);
    free(Xt), free(codes);
    for (int i = 0; i < 16; i++) free(cache.data[i]);
    gpfq_quant_result_free(&r);
}

/* A first conv (X is Y: the images on both sides) where the driver quantizes from its patches'
 * Gram matrix, summed chunk by chunk and never all held (gpfq_layer_gram_only), against the gram
 * form on the unfolded patches (--form gram): the same codes but for at most 2% (the sums' order
 * differs), error and relative error to 1e-4, the corrected bias's shift to 1e-4; and,
 * on gpfq's GEMM kernel, the same codes, error and bias bits at one BLAS thread as at two. */
static void test_first_conv(const gpfq_model *m, const gpfq_dataset *train) {
    const gpfq_node *conv = &m->nodes[0];
    gpfq_quant_options o;
    gpfq_quant_options_default(&o);
    o.calib_images = 64;
    o.bias_correction = 1;
    gpfq_quant_result a, b, c;
    const int threads = openblas_get_num_threads();
    int ran = gpfq_quantize_model(m, train, &o, &a, NULL, NULL) == GPFQ_OK;
    openblas_set_num_threads(threads > 1 ? 1 : 2);
    ran = ran && gpfq_quantize_model(m, train, &o, &c, NULL, NULL) == GPFQ_OK;
    openblas_set_num_threads(threads);
    o.form = GPFQ_FORM_GRAM;
    ran = ran && gpfq_quantize_model(m, train, &o, &b, NULL, NULL) == GPFQ_OK;
    CHECK(ran, "%s", gpfq_last_error());
    if (!ran) return;
    const size_t N = (size_t)conv->weight_dims[0], d = conv->weight_count / N;
    CHECK(conv->op == GPFQ_OP_CONV2D && a.layers[0].node == 0 &&
              gpfq_layer_gram_only(N, d, a.layers[0].samples, GPFQ_FORM_AUTO, 0),
          "the fixture's conv1 is quantized from G alone (%zu x %zu, m %zu)", N, d,
          a.layers[0].samples);
    size_t differ = 0;
    for (size_t k = 0; k < N * d; k++) differ += a.codes[0][k] != b.codes[0][k];
    const gpfq_layer_report *ra = &a.layers[0], *rb = &b.layers[0];
    CHECK(differ * 50 <= N * d && fabs(ra->error - rb->error) <= 1e-4 * rb->error &&
              fabs(ra->relative_error - rb->relative_error) <= 1e-4 * rb->relative_error &&
              ra->samples == rb->samples,
          "conv1 from G: %zu of %zu codes differ, error %.9g / %.9g, relative %.9g / %.9g", differ,
          N * d, ra->error, rb->error, ra->relative_error, rb->relative_error);
    /* the shift (W - Q) mean(X) is small where Q is near W: measured against itself, with two
     * float ulps of the bias for its rounding */
    double worst = 0.0;
    for (size_t r = 0; r < N; r++) {
        const double qb = b.model->nodes[0].bias[r], fb = conv->bias ? conv->bias[r] : 0.0;
        const double db = fabs(a.model->nodes[0].bias[r] - qb) /
                          (1e-4 * fabs(qb - fb) + ldexp(fabs(qb), -22) + 1e-30);
        if (!(db <= worst)) worst = db;
    }
    CHECK(differ > 0 || worst <= 1.0,
          "conv1's corrected bias from G differs by %g times 1e-4 of its shift", worst);
    /* on OpenBLAS a product may round differently at another thread count (README) */
    CHECK((gpfq_codes_hash(&a) == gpfq_codes_hash(&c) && ra->error == c.layers[0].error &&
           !memcmp(a.model->nodes[0].bias, c.model->nodes[0].bias, N * 4)) ||
              gpfq_gemm_get_kernel() != GPFQ_GEMM_AVX512,
          "conv1 from G at %d and %d BLAS threads: other codes, error or bias", threads,
          threads > 1 ? 1 : 2);
    gpfq_quant_result_free(&a);
    gpfq_quant_result_free(&b);
    gpfq_quant_result_free(&c);
}

/* The draws without replacement: the same indices as a partial Fisher-Yates over a pool of
 * 0 .. n-1 written out (the table that stands in for a large pool must not change a draw), all
 * distinct and below n; from 1 of 1 to 256 of 60000 (the images) and k = n. */
static void test_sampling(void) {
    const size_t cases[][2] = {{1, 1},    {5, 5},     {7, 3},       {784, 197}, {784, 784},
                               {100, 40}, {3000, 10}, {60000, 256}, {60000, 1}, {1 << 20, 999}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const size_t n = cases[c][0], k = cases[c][1];
        for (uint64_t key = 1; key <= 3; key++) {
            size_t *pool = malloc(n * sizeof(size_t)), *want = malloc(k * sizeof(size_t));
            size_t *got = malloc(k * sizeof(size_t));
            size_t *scratch = malloc(gpfq_sample_scratch(n, k) * sizeof(size_t));
            for (size_t i = 0; i < n; i++) pool[i] = i;
            for (size_t i = 0; i < k; i++) {
                const size_t j = i + (size_t)(gpfq_uniform(key, i) * (double)(n - i)) % (n - i);
                const size_t tmp = pool[i];
                pool[i] = pool[j], pool[j] = tmp;
                want[i] = pool[i];
            }
            gpfq_sample_indices(key, n, k, 0, got, scratch);
            int distinct = 1;
            unsigned char *seen = calloc(n, 1);
            for (size_t i = 0; i < k; i++) {
                distinct &= got[i] < n && !seen[got[i] < n ? got[i] : 0];
                if (got[i] < n) seen[got[i]] = 1;
            }
            CHECK(!memcmp(got, want, k * sizeof(size_t)) && distinct,
                  "%zu of %zu, key %llu: other indices than the pool's, or repeated", k, n,
                  (unsigned long long)key);
            free(pool), free(want), free(got), free(scratch), free(seen);
        }
    }
    CHECK(gpfq_sample_scratch(60000, 256) < 60000 / 4,
          "256 of 60000 take %zu words of scratch, not a small table",
          gpfq_sample_scratch(60000, 256));
}

/* A Flatten of the input (the shipped MLP's first node) is the input itself: the plan copies
 * nothing and never writes over the caller's images, and the logits are those of the nodes run
 * one by one, each into a buffer of its own. */
static void test_flatten_alias(const char *fixtures) {
    gpfq_model *m = load_fixture(fixtures, "../../data/models/mlp_fashion.h5");
    if (!m) return;
    enum { IMAGES = 8 };
    const size_t in = gpfq_shape_size(m->input_shape);
    float *input = malloc(IMAGES * in * 4), *copy = malloc(IMAGES * in * 4);
    unsigned long long state = 9;
    fill(input, IMAGES * in, 0, 1.0f, &state);
    memcpy(copy, input, IMAGES * in * 4);
    gpfq_forward *fwd = NULL;
    const float *logits = NULL;
    CHECK(m->nodes[0].op == GPFQ_OP_FLATTEN && gpfq_forward_create(m, IMAGES, &fwd) == GPFQ_OK &&
              gpfq_forward_run(fwd, input, IMAGES, &logits) == GPFQ_OK,
          "%s", gpfq_last_error());
    if (logits) {
        CHECK(gpfq_forward_output(fwd, 0) == input, "the Flatten of the input is not the input");
        CHECK(!memcmp(input, copy, IMAGES * in * 4), "a pass wrote over its input");
        /* node by node, each output in its own buffer */
        float *value[16] = {NULL};
        for (int i = 0; i < m->n_nodes && i < 16; i++) {
            const gpfq_node *node = &m->nodes[i];
            const float *inputs[GPFQ_MAX_INPUTS] = {node->inputs[0] < 0 ? copy
                                                                        : value[node->inputs[0]]};
            value[i] = malloc(IMAGES * gpfq_shape_size(node->out_shape) * 4);
            float *scratch = malloc((gpfq_node_scratch(node, IMAGES) + 1) * 4);
            CHECK_OK(gpfq_node_forward(node, inputs, IMAGES, value[i], scratch));
            free(scratch);
        }
        const size_t count = IMAGES * (size_t)m->num_classes;
        double worst = 0;
        for (size_t k = 0; k < count; k++) {
            const double want = value[m->n_nodes - 1][k];
            const double err = fabs(logits[k] - want) / (fabs(want) > 1 ? fabs(want) : 1);
            worst = err > worst ? err : worst;
        }
        CHECK(worst <= 1e-5, "logits of the plan and of the nodes one by one differ by %g", worst);
        for (int i = 0; i < 16; i++) free(value[i]);
    }
    gpfq_forward_free(fwd);
    free(input), free(copy);
    gpfq_model_free(m);
}

/* node i's parameters in a and b are the same (op, weights, bias, BatchNorm statistics) */
static int same_node(const gpfq_node *a, const gpfq_node *b) {
    const size_t out = a->op == GPFQ_OP_BATCHNORM2D ? a->weight_count
                       : a->weight_rank > 0         ? (size_t)a->weight_dims[0]
                                                    : 0;
    if (a->op != b->op || a->weight_count != b->weight_count || !a->bias != !b->bias ||
        !a->running_mean != !b->running_mean)
        return 0;
    return (!a->weight_count || !memcmp(a->weight, b->weight, a->weight_count * 4)) &&
           (!a->bias || !memcmp(a->bias, b->bias, out * 4)) &&
           (!a->running_mean || (!memcmp(a->running_mean, b->running_mean, out * 4) &&
                                 !memcmp(a->running_var, b->running_var, out * 4)));
}

/* --fold-bn: a model's BatchNorms after a conv are folded into a copy, the caller's model is
 * left as it was; without a BatchNorm to fold the float model is the caller's own, and the
 * codes are those without folding. */
static void test_fold_batchnorm(const char *fixtures) {
    const char *names[2] = {"model_resnet_small.h5", "model_lenet_small.h5"};
    for (int k = 0; k < 2; k++) {
        gpfq_model *m = load_fixture(fixtures, names[k]),
                   *pristine = load_fixture(fixtures, names[k]);
        if (!m || !pristine) {
            gpfq_model_free(m), gpfq_model_free(pristine);
            continue;
        }
        /* 40 random images of the model's shape */
        const gpfq_shape in = m->input_shape;
        gpfq_dataset train = {.n = 40, .c = in.c, .h = in.h, .w = in.w, .num_classes = 10};
        const size_t bytes = 40 * gpfq_shape_size(in);
        train.images = malloc(bytes);
        train.labels = calloc(40, 1);
        unsigned long long state = 5;
        for (size_t i = 0; i < bytes; i++)
            train.images[i] = (uint8_t)((check_rand(&state) + 1) * 127);
        gpfq_quant_options o;
        gpfq_quant_options_default(&o);
        o.calib_images = 32;
        gpfq_quant_result plain, folded;
        const int ran = gpfq_quantize_model(m, &train, &o, &plain, NULL, NULL) == GPFQ_OK &&
                        (o.fold_batchnorm = 1,
                         gpfq_quantize_model(m, &train, &o, &folded, NULL, NULL) == GPFQ_OK);
        gpfq_dataset_free(&train);
        CHECK(ran, "%s: %s", names[k], gpfq_last_error());
        if (!ran) {
            gpfq_model_free(m), gpfq_model_free(pristine);
            continue;
        }
        int unchanged = m->n_nodes == pristine->n_nodes, bn_before = 0, bn_after = 0;
        for (int i = 0; unchanged && i < m->n_nodes; i++)
            unchanged = same_node(&m->nodes[i], &pristine->nodes[i]);
        for (int i = 0; i < m->n_nodes; i++) {
            bn_before += m->nodes[i].op == GPFQ_OP_BATCHNORM2D;
            bn_after += folded.model->nodes[i].op == GPFQ_OP_BATCHNORM2D;
        }
        CHECK(unchanged, "%s: quantizing with --fold-bn changed the caller's model", names[k]);
        if (bn_before)
            CHECK(bn_after < bn_before, "%s: %d BatchNorms before folding, %d after", names[k],
                  bn_before, bn_after);
        else
            CHECK(gpfq_codes_hash(&plain) == gpfq_codes_hash(&folded),
                  "%s has no BatchNorm: folding changed the codes", names[k]);
        gpfq_quant_result_free(&plain);
        gpfq_quant_result_free(&folded);
        gpfq_model_free(m), gpfq_model_free(pristine);
    }
}

/* a synthetic training set of n 28 x 28 images */
static gpfq_dataset synthetic_train(size_t n, unsigned long long state) {
    gpfq_dataset train = {.n = n, .c = 1, .h = 28, .w = 28, .num_classes = 10};
    train.images = malloc(n * 784);
    train.labels = malloc(n);
    for (size_t i = 0; i < n * 784; i++)
        train.images[i] = (uint8_t)((check_rand(&state) + 1) * 127);
    for (size_t i = 0; i < n; i++) train.labels[i] = (uint8_t)(i % 10);
    return train;
}

/* n random images of shape in, labels 0 (gpfq_dataset_free frees them) */
static gpfq_dataset random_images(gpfq_shape in, size_t n, unsigned long long state) {
    gpfq_dataset train = {.n = n, .c = in.c, .h = in.h, .w = in.w, .num_classes = 10};
    train.images = malloc(n * gpfq_shape_size(in));
    train.labels = calloc(n, 1);
    for (size_t k = 0; k < n * gpfq_shape_size(in); k++)
        train.images[k] = (uint8_t)((check_rand(&state) + 1) * 127);
    return train;
}

/* Later convs, whose two inputs differ, are never quantized from X's Gram matrix alone, also
 * where the rule for G alone would hold: resnet_small with auto against the gram form on the
 * held patches, each layer's relative error within 1e-3. */
static void test_later_convs(const char *fixtures) {
    gpfq_model *m = load_fixture(fixtures, "model_resnet_small.h5");
    if (!m) return;
    gpfq_dataset train = random_images(m->input_shape, 48, 9);
    gpfq_quant_options o;
    gpfq_quant_options_default(&o);
    o.calib_images = 32;
    gpfq_quant_result ra, rg;
    const int ran = gpfq_quantize_model(m, &train, &o, &ra, NULL, NULL) == GPFQ_OK;
    o.form = GPFQ_FORM_GRAM;
    CHECK(ran && gpfq_quantize_model(m, &train, &o, &rg, NULL, NULL) == GPFQ_OK, "%s",
          gpfq_last_error());
    if (ran) {
        int qualify = 0;
        for (int l = 1; l < ra.n_layers; l++) {
            const gpfq_layer_report *x = &ra.layers[l], *y = &rg.layers[l];
            qualify += m->nodes[x->node].op == GPFQ_OP_CONV2D &&
                       gpfq_layer_gram_only(x->rows, x->cols, x->samples, GPFQ_FORM_AUTO, 0);
            CHECK(fabs(x->relative_error - y->relative_error) < 1e-3,
                  "resnet_small layer %d: auto %g vs gram %g", l, x->relative_error,
                  y->relative_error);
        }
        CHECK(qualify > 0, "no later conv of resnet_small fits the rule for G alone");
        gpfq_quant_result_free(&ra);
        gpfq_quant_result_free(&rg);
    }
    /* a batch per layer: the downsample conv's pass stops after its input, before its block's
     * two convs; the cached float inputs come from the pass over every node before the layer */
    test_cached_inputs(m, &train, GPFQ_CALIB_PER_LAYER);
    gpfq_dataset_free(&train);
    gpfq_model_free(m);
}

/* gpfq_gpfq_layer_patches against gpfq_gpfq_layer on the same patches unfolded by plain loops:
 * the same codes, values and error to the bit, the relative error to 1e-6 (to the bit where
 * N <= 64, whose held norm sums in the same order); padded, strided and dilated convs, X = Y, a
 * last lane and a last block shorter than the rest; below 2048 columns, GPFQ_ERR_ARG. */
static void test_gathered(void) {
    /* C, H, W, kernel, stride, pad, dilation, N, images, keep, same */
    const int cases[][11] = {{6, 14, 14, 5, 1, 0, 1, 16, 100, 26, 0},
                             {3, 12, 11, 3, 1, 1, 1, 8, 40, 60, 0},
                             {4, 9, 9, 3, 2, 1, 1, 20, 300, 9, 1},
                             {2, 13, 13, 3, 1, 2, 2, 70, 90, 33, 0},
                             {5, 7, 7, 1, 1, 0, 1, 12, 700, 5, 0}};
    unsigned long long state = 77;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int C = cases[c][0], H = cases[c][1], W = cases[c][2], k = cases[c][3];
        const int stride = cases[c][4], pad = cases[c][5], dil = cases[c][6];
        const size_t N = (size_t)cases[c][7], n = (size_t)cases[c][8], keep = (size_t)cases[c][9];
        const int oh = (H + 2 * pad - dil * (k - 1) - 1) / stride + 1;
        const int ow = (W + 2 * pad - dil * (k - 1) - 1) / stride + 1;
        const size_t d = (size_t)C * k * k, m = n * keep, image = (size_t)C * H * W;
        float *x = malloc(n * image * sizeof(float)), *y = malloc(n * image * sizeof(float));
        for (size_t i = 0; i < n * image; i++)
            x[i] = (float)check_rand(&state), y[i] = x[i] + 0.1f * (float)check_rand(&state);
        if (cases[c][10]) memcpy(y, x, n * image * sizeof(float));
        const float *ys = cases[c][10] ? x : y;
        int32_t *base = malloc(m * 4), *corner = malloc(m * 4), *off = malloc(d * 4),
                *tap = malloc(d * 4);
        float *Xt = malloc(d * m * sizeof(float)), *Yt = malloc(d * m * sizeof(float));
        for (size_t j = 0; j < m; j++) {
            const size_t i = j / keep,
                         q = (size_t)((check_rand(&state) + 1) * 0.5 * oh * ow) % (size_t)(oh * ow);
            const int y0 = (int)(q / (size_t)ow) * stride - pad,
                      x0 = (int)(q % (size_t)ow) * stride - pad;
            base[j] = (int32_t)(i * image) + y0 * W + x0;
            corner[j] = (int32_t)((uint32_t)y0 << 16 | ((uint32_t)x0 & 0xffffu));
            size_t t = 0;
            for (int ch = 0; ch < C; ch++)
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++, t++) {
                        const int yy = y0 + ky * dil, xx = x0 + kx * dil;
                        const int in = yy >= 0 && yy < H && xx >= 0 && xx < W;
                        const size_t at = i * image + ((size_t)ch * H + (size_t)(in ? yy : 0)) * W +
                                          (size_t)(in ? xx : 0);
                        Xt[t * m + j] = in ? x[at] : 0.0f;
                        Yt[t * m + j] = in ? ys[at] : 0.0f;
                        if (j == 0) {
                            off[t] = (int32_t)(((size_t)ch * H + (size_t)(ky * dil)) * W +
                                               (size_t)(kx * dil));
                            tap[t] = (int32_t)((uint32_t)(ky * dil) << 16 | (uint32_t)(kx * dil));
                        }
                    }
        }
        const gpfq_patches P = {x, ys, base, corner, off, tap, H, W, pad == 0};
        float *wgt = malloc(N * d * sizeof(float));
        for (size_t i = 0; i < N * d; i++) wgt[i] = 0.3f * (float)check_rand(&state);
        const gpfq_alphabet a = alphabet(GPFQ_QUANTIZER_NEAREST, 3, 0.2f, 0.0f);
        int32_t *c1 = malloc(N * d * 4), *c2 = malloc(N * d * 4);
        float *v1 = malloc(N * d * sizeof(float)), *v2 = malloc(N * d * sizeof(float));
        gpfq_layer_stats s1, s2;
        const int gathers = gpfq_layer_gathers(N, d, m, GPFQ_FORM_UBLOCK, 0);
        const gpfq_status held = gpfq_gpfq_layer(wgt, N, d, Xt, cases[c][10] ? Xt : Yt, m, &a,
                                                 GPFQ_FORM_UBLOCK, 0, c1, v1, &s1);
        const gpfq_status got =
            gpfq_gpfq_layer_patches(wgt, N, d, &P, m, &a, GPFQ_FORM_UBLOCK, 0, c2, v2, &s2);
        if (!gathers) {
            CHECK(got == GPFQ_ERR_ARG && gpfq_conv_get_kernel() != GPFQ_CONV_AVX512,
                  "case %zu: not gathered (%d) where the AVX-512 kernels run", c, got);
        } else {
            CHECK(held == GPFQ_OK && got == GPFQ_OK && !memcmp(c1, c2, N * d * 4) &&
                      !memcmp(v1, v2, N * d * sizeof(float)) && s1.error == s2.error &&
                      fabs(s1.relative_error - s2.relative_error) <= 1e-6 * s1.relative_error &&
                      (N > 64 || s1.relative_error == s2.relative_error),
                  "case %zu (N %zu, d %zu, m %zu): gathered codes, values or errors differ "
                  "(error %.9g / %.9g, relative %.9g / %.9g)",
                  c, N, d, m, s1.error, s2.error, s1.relative_error, s2.relative_error);
            const gpfq_status few =
                gpfq_gpfq_layer_patches(wgt, N, d, &P, 2000, &a, GPFQ_FORM_UBLOCK, 0, c2, v2, NULL);
            CHECK(few == GPFQ_ERR_ARG, "case %zu: 2000 columns gathered (%d)", c, few);
        }
        free(x), free(y), free(base), free(corner), free(off), free(tap), free(Xt), free(Yt);
        free(wgt), free(c1), free(c2), free(v1), free(v2);
    }
}

/* lenet5's conv2 (unpadded, ublock on gpfq's kernels) through the driver, its patches gathered
 * against unfolded, with the defaults and with the reference's unfolding (stride = kernel: m =
 * 2048 from 1024 images): the driver takes the path once per run, and the codes, errors and
 * corrected biases are the same to the bit. */
static void test_gathered_driver(const char *fixtures) {
    gpfq_model *m = load_fixture(fixtures, "../../data/models/lenet5_fashion.h5");
    if (!m) return;
    gpfq_dataset train = random_images(m->input_shape, 1100, 5);
    const int own = gpfq_conv_get_kernel() == GPFQ_CONV_AVX512;
    for (int variant = 0; variant < 2; variant++) {
        gpfq_quant_options o;
        gpfq_quant_options_default(&o);
        o.bias_correction = 1;
        if (variant) o.unfold_stride_kernel = 1, o.calib_images = 1024;
        gpfq_quant_result rg, ru;
        const size_t calls0 = gpfq_layer_patches_calls();
        const int ran = gpfq_quantize_model(m, &train, &o, &rg, NULL, NULL) == GPFQ_OK;
        const size_t calls1 = gpfq_layer_patches_calls();
        gpfq_layer_gather_allow(0);
        const int ran2 = gpfq_quantize_model(m, &train, &o, &ru, NULL, NULL) == GPFQ_OK;
        gpfq_layer_gather_allow(1);
        CHECK(ran && ran2, "%s", gpfq_last_error());
        CHECK(calls1 - calls0 == (size_t)own && gpfq_layer_patches_calls() == calls1,
              "lenet5, variant %d: the driver gathered %zu layers, %zu with gathering off", variant,
              calls1 - calls0, gpfq_layer_patches_calls() - calls1);
        if (!ran || !ran2) continue;
        int same = 1;
        for (int l = 0; l < rg.n_layers; l++) {
            const gpfq_layer_report *g = &rg.layers[l], *u = &ru.layers[l];
            const gpfq_node *a = &rg.model->nodes[g->node], *b = &ru.model->nodes[g->node];
            same &= g->error == u->error && g->relative_error == u->relative_error &&
                    g->samples == u->samples && !a->bias == !b->bias &&
                    (!a->bias || !memcmp(a->bias, b->bias, (size_t)a->weight_dims[0] * 4));
        }
        CHECK(same && gpfq_codes_hash(&rg) == gpfq_codes_hash(&ru),
              "lenet5, variant %d, gathered against unfolded: other codes, bias or errors (conv2 "
              "%.17g / %.17g, relative %.17g / %.17g)",
              variant, rg.layers[1].error, ru.layers[1].error, rg.layers[1].relative_error,
              ru.layers[1].relative_error);
        gpfq_quant_result_free(&rg);
        gpfq_quant_result_free(&ru);
    }
    gpfq_dataset_free(&train);
    gpfq_model_free(m);
}

static void test_driver(const char *fixtures) {
    gpfq_model *m = load_fixture(fixtures, "model_lenet_small.h5");
    if (!m) return;
    gpfq_dataset train = synthetic_train(300, 3);

    gpfq_quant_options o;
    gpfq_quant_options_default(&o);
    o.calib_images = 64;
    o.bits = 3;
    gpfq_quant_result a, b, c;
    CHECK(gpfq_quantize_model(m, &train, &o, &a, NULL, NULL) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(gpfq_quantize_model(m, &train, &o, &b, NULL, NULL) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(a.n_layers == 5 && gpfq_codes_hash(&a) == gpfq_codes_hash(&b),
          "same seed, same codes (%d layers)", a.n_layers);
    o.seed = 1;
    gpfq_quantize_model(m, &train, &o, &c, NULL, NULL);
    CHECK(gpfq_codes_hash(&a) != gpfq_codes_hash(&c), "another seed draws other images");
    gpfq_quant_result_free(&c);
    o.seed = 0;
    o.form = GPFQ_FORM_REF;
    gpfq_quantize_model(m, &train, &o, &c, NULL, NULL);
    for (int l = 0; l < a.n_layers; l++)
        CHECK(fabs(a.layers[l].relative_error - c.layers[l].relative_error) < 1e-3,
              "layer %d: fast %g vs ref %g", l, a.layers[l].relative_error,
              c.layers[l].relative_error);
    /* every weight is its code times the layer's step */
    for (int l = 0; l < a.n_layers; l++) {
        const gpfq_node *node = &a.model->nodes[a.layers[l].node];
        int ok = node->quantized;
        for (size_t k = 0; ok && k < node->weight_count; k++)
            ok = node->weight[k] == (float)a.codes[a.layers[l].node][k] * node->weight_step;
        CHECK(ok, "layer %d weights are codes * step", l);
    }
    gpfq_quant_result_free(&b);
    gpfq_quant_result_free(&c);

    /* per-layer calibration, reference unfolding, bias correction, keep-last, ignore */
    o.form = GPFQ_FORM_AUTO;
    o.calib_mode = GPFQ_CALIB_PER_LAYER;
    o.unfold_stride_kernel = 1;
    o.with_replacement = 1;
    o.bias_correction = 1;
    o.keep_last_float = 1;
    const char *ignore[] = {"conv2"};
    o.ignore = ignore;
    o.n_ignore = 1;
    CHECK(gpfq_quantize_model(m, &train, &o, &b, NULL, NULL) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(b.layers[1].skipped && b.layers[4].skipped && !b.layers[0].skipped, "skips");
    /* the draws and passes are part of the quantize's time: with one calibration set (a) and with
     * a batch per layer (b) */
    CHECK(a.pass_seconds > 0 && a.pass_seconds <= a.seconds && b.pass_seconds > 0 &&
              b.pass_seconds <= b.seconds,
          "forward passes %g of %g s (shared), %g of %g s (per layer)", a.pass_seconds, a.seconds,
          b.pass_seconds, b.seconds);
    CHECK(memcmp(b.model->nodes[3].weight, m->nodes[3].weight, m->nodes[3].weight_count * 4) == 0,
          "an ignored layer keeps its float weights");
    gpfq_quant_result_free(&b);
    /* an alphabet that cannot be made names its layer */
    gpfq_quant_options l0 = o;
    l0.ignore = NULL;
    l0.n_ignore = 0;
    l0.quantizer = GPFQ_QUANTIZER_L0;
    l0.reg_lambda = 100.0;
    CHECK(gpfq_quantize_model(m, &train, &l0, &b, NULL, NULL) == GPFQ_ERR_ARG, "L0 lambda 100");
    CHECK_CONTAINS(gpfq_last_error(), "layer 'conv1': L0 lambda 100 is not below");
    const char *bad[] = {"nosuch"};
    o.ignore = bad;
    CHECK(gpfq_quantize_model(m, &train, &o, &b, NULL, NULL) == GPFQ_ERR_ARG, "unknown ignore");
    CHECK_CONTAINS(gpfq_last_error(), "'nosuch'");

    /* MSQ needs no data and rounds each weight on its own */
    gpfq_quant_options_default(&o);
    o.method = GPFQ_METHOD_MSQ;
    CHECK(gpfq_quantize_model(m, NULL, &o, &b, NULL, NULL) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(b.pass_seconds == 0, "MSQ makes no forward pass (%g s)", b.pass_seconds);
    const gpfq_node *fc1 = &b.model->nodes[7];
    gpfq_alphabet al;
    gpfq_alphabet_make(m->nodes[7].weight, 32, 200, 4, 1.16, 1.0, GPFQ_QUANTIZER_NEAREST, 0, 0,
                       &al);
    CHECK(fc1->weight_step == al.delta &&
              fc1->weight[5] ==
                  gpfq_code_value(&al, gpfq_quantize_code(&al, m->nodes[7].weight[5], 0)),
          "MSQ rounds to the nearest level");
    gpfq_quant_result_free(&b);
    gpfq_quant_result_free(&a);
    test_cached_inputs(m, &train, GPFQ_CALIB_SHARED);
    test_cached_inputs(m, &train, GPFQ_CALIB_PER_LAYER);
    test_first_conv(m, &train);
    /* a Linear first layer (the shipped MLP): there too X is Y without cached inputs */
    gpfq_model *mlp = load_fixture(fixtures, "../../data/models/mlp_fashion.h5");
    if (mlp) {
        test_cached_inputs(mlp, &train, GPFQ_CALIB_SHARED);
        test_first_linear(mlp, &train);
        test_deferred_norms(mlp, &train, NULL, GPFQ_FORM_UBLOCK, 0, 40);
        test_deferred_norms(mlp, &train, "fc2", GPFQ_FORM_UBLOCK, 0, 40);
        test_deferred_norms(mlp, &train, NULL, GPFQ_FORM_UBLOCK, 1, 41);
        test_deferred_norms(mlp, &train, NULL, GPFQ_FORM_GRAM, 0, 1);
        /* m >= 2048: ublock on its own kernels, no residual (where the CPU has them) */
        gpfq_dataset big = synthetic_train(2100, 4);
        test_deferred_norms(mlp, &big, NULL, GPFQ_FORM_UBLOCK, 0, 2100);
        gpfq_dataset_free(&big);
    }
    gpfq_model_free(mlp);
    gpfq_dataset_free(&train);
    gpfq_model_free(m);
}

/* Evaluation workers and the stoppable forward pass. */
/* lenet5's plan allocates a buffer when a pass first writes it, and none for conv1's and conv2's
 * unpooled outputs where the kernel pools them: a range that stops inside a conv's folded nodes,
 * and a hooked pass after a plain one, still find room for them, with the plain pass's values. */
typedef struct {
    const float *want;
    size_t floats;
    int seen, same;
} conv1_hook;

static void on_node(void *ctx, int index, const float *output, size_t n) {
    conv1_hook *h = ctx;
    (void)n;
    if (index != 0) return;
    h->seen = 1;
    h->same = memcmp(output, h->want, h->floats * sizeof(float)) == 0;
}

static void test_plan_buffers(const char *fixtures) {
    gpfq_model *m = load_fixture(fixtures, "../../data/models/lenet5_fashion.h5");
    if (!m) return;
    enum { N = 20 };
    const size_t in = gpfq_shape_size(m->input_shape),
                 out1 = gpfq_shape_size(m->nodes[0].out_shape);
    const size_t classes = (size_t)m->num_classes;
    float *x = malloc(N * in * sizeof(float)), *conv1 = malloc(N * out1 * sizeof(float));
    float *scratch = malloc((gpfq_node_scratch(&m->nodes[0], N) + 1) * sizeof(float));
    float *logits = malloc(N * classes * sizeof(float));
    unsigned long long state = 11;
    for (size_t i = 0; i < N * in; i++) x[i] = check_rand(&state);
    const float *inputs[2] = {x, NULL};
    /* conv1 alone, outside a plan */
    CHECK_OK(gpfq_node_forward(&m->nodes[0], inputs, N, conv1, scratch));
    gpfq_forward *plain = NULL, *cut = NULL;
    const float *out = NULL;
    CHECK(gpfq_forward_create(m, N, &plain) == GPFQ_OK &&
              gpfq_forward_create(m, N, &cut) == GPFQ_OK,
          "%s", gpfq_last_error());
    CHECK(gpfq_forward_fused(plain) >= 4, "lenet5: %d nodes folded into its convs, 4 expected",
          gpfq_forward_fused(plain));
    const gpfq_conv_geom g1 = {1, 28, 28, 6, 28, 28, 5, 5, 1, 1, 2, 2, 1, 1, 1};
    if (!gpfq_conv_interleaved_fits(&g1))
        printf("test_gpfq: no interleaved kernel on this CPU: plans keep conv1's unpooled "
               "outputs, the slim buffers are not exercised\n");
    CHECK(gpfq_forward_run(plain, x, N, &out) == GPFQ_OK, "%s", gpfq_last_error());
    memcpy(logits, out, N * classes * sizeof(float));
    /* conv1 alone (its ReLU and pool left to the next range), then the rest */
    CHECK(gpfq_forward_range(cut, x, N, 0, 1) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(memcmp(gpfq_forward_output(cut, 0), conv1, N * out1 * sizeof(float)) == 0,
          "a range that ends at conv1: its unpooled outputs as conv1 alone gives them");
    CHECK(gpfq_forward_range(cut, x, N, 1, m->n_nodes) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(memcmp(gpfq_forward_output(cut, m->n_nodes - 1), logits, N * classes * sizeof(float)) ==
              0,
          "conv1 alone, then the rest: the whole pass's logits");
    /* a hooked pass on the plan that ran without hooks: each node's own output, the same logits */
    conv1_hook h = {conv1, N * out1, 0, 0};
    CHECK(gpfq_forward_run_hooked(plain, x, N, &out, on_node, &h) == GPFQ_OK, "%s",
          gpfq_last_error());
    CHECK(h.seen && h.same, "a hooked pass after a plain one: conv1's outputs seen %d, the same %d",
          h.seen, h.same);
    CHECK(memcmp(out, logits, N * classes * sizeof(float)) == 0,
          "a hooked pass after a plain one: the same logits");
    /* the buffer of conv1's ReLU, asked for before any pass: room for its unpooled values */
    gpfq_forward *fresh = NULL;
    CHECK(gpfq_forward_create(m, N, &fresh) == GPFQ_OK, "%s", gpfq_last_error());
    float *relu1 = gpfq_forward_output_buffer(fresh, 1);
    CHECK(relu1 != NULL, "%s", gpfq_last_error());
    if (relu1) memcpy(relu1, conv1, N * out1 * sizeof(float)); /* out of bounds if too small */
    gpfq_forward_free(fresh);
    /* a kernel that does not pool after the plan was made (the interleaved kernel turned off):
     * the conv makes room for its unpooled values itself, the logits are the same bits (the
     * direct kernels agree, test_ops) */
    CHECK(gpfq_forward_create(m, N, &fresh) == GPFQ_OK, "%s", gpfq_last_error());
    const gpfq_interleave_mode mode = gpfq_conv_set_interleave(GPFQ_INTERLEAVE_OFF);
    CHECK(gpfq_forward_run(fresh, x, N, &out) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(memcmp(out, logits, N * classes * sizeof(float)) == 0,
          "the interleaved kernel off after the plan was made: the same logits");
    gpfq_conv_set_interleave(mode);
    gpfq_forward_free(fresh);
    gpfq_forward_free(plain);
    gpfq_forward_free(cut);
    free(x), free(conv1), free(scratch), free(logits);
    gpfq_model_free(m);
}

static void test_eval_and_ranges(const char *fixtures) {
    gpfq_model *m = load_fixture(fixtures, "model_lenet_small.h5");
    if (!m) return;
    gpfq_dataset data = {.n = 203, .c = 1, .h = 28, .w = 28, .num_classes = 10};
    data.images = malloc(data.n * 784);
    data.labels = malloc(data.n);
    unsigned long long state = 5;
    for (size_t i = 0; i < data.n * 784; i++)
        data.images[i] = (uint8_t)((check_rand(&state) + 1) * 127);
    for (size_t i = 0; i < data.n; i++) data.labels[i] = (uint8_t)(i * 7 % 10);

    /* the counts do not depend on how the images are shared out */
    gpfq_eval_options o;
    gpfq_eval_options_default(&o);
    o.batch = 32;
    gpfq_eval_result one, r;
    CHECK(gpfq_evaluate_with(m, &data, &o, &one) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(one.images == 203 && one.nonfinite == 0, "%zu images", one.images);
    const size_t slice = gpfq_forward_slice(m);
    CHECK(one.batch == (slice < 32 ? slice : 32),
          "batches of %zu images, not the smaller of 32 and %zu", one.batch, slice);
    const int workers[] = {2, 3, 7, 500};
    for (int k = 0; k < 4; k++) {
        o.workers = workers[k];
        CHECK(gpfq_evaluate_with(m, &data, &o, &r) == GPFQ_OK, "%s", gpfq_last_error());
        CHECK(r.images == one.images && r.top1 == one.top1 && r.top5 == one.top5,
              "%d workers: %zu/%zu/%zu vs %zu/%zu/%zu", workers[k], r.images, r.top1, r.top5,
              one.images, one.top1, one.top5);
    }
    CHECK(r.batch == 1, "500 workers on 203 images: batches of %zu images, not 1", r.batch);

    /* a pass run in pieces equals one run */
    gpfq_forward *whole = NULL, *pieces = NULL;
    CHECK(gpfq_forward_create(m, 8, &whole) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(gpfq_forward_create(m, 8, &pieces) == GPFQ_OK, "%s", gpfq_last_error());
    float input[8 * 784];
    gpfq_dataset_batch(&data, m->mean, m->std, 0, NULL, 8, input);
    const float *logits = NULL;
    gpfq_forward_run(whole, input, 8, &logits);
    int ok = 1;
    for (int cut = 0; cut <= m->n_nodes; cut++) {
        ok &= gpfq_forward_range(pieces, input, 8, 0, cut) == GPFQ_OK;
        ok &= gpfq_forward_range(pieces, input, 8, cut, m->n_nodes) == GPFQ_OK;
        ok &= memcmp(gpfq_forward_output(pieces, m->n_nodes - 1), logits,
                     8 * (size_t)m->num_classes * sizeof(float)) == 0;
    }
    CHECK(ok, "a pass cut after any node gives the same logits");

    /* a plan on another plan's packed weights gives the same logits; an owner that has not
     * packed leaves the plan to pack its own */
    gpfq_forward *owner = NULL, *borrower = NULL;
    CHECK(gpfq_forward_create(m, 1, &owner) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(gpfq_forward_create(m, 8, &borrower) == GPFQ_OK, "%s", gpfq_last_error());
    gpfq_forward_share_packed(borrower, owner);
    const float *shared_logits = NULL;
    CHECK(gpfq_forward_run(borrower, input, 8, &shared_logits) == GPFQ_OK, "%s", gpfq_last_error());
    const size_t own_bytes = gpfq_forward_bytes(borrower);
    CHECK(memcmp(shared_logits, logits, 8 * (size_t)m->num_classes * sizeof(float)) == 0,
          "an unpacked owner: the same logits");
    gpfq_forward_free(borrower);
    CHECK(gpfq_forward_create(m, 8, &borrower) == GPFQ_OK, "%s", gpfq_last_error());
    gpfq_forward_pack(owner);
    gpfq_forward_share_packed(borrower, owner);
    CHECK(gpfq_forward_run(borrower, input, 8, &shared_logits) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(memcmp(shared_logits, logits, 8 * (size_t)m->num_classes * sizeof(float)) == 0,
          "shared packed weights: the same logits");
    CHECK(gpfq_forward_bytes(borrower) < own_bytes,
          "a plan on shared packed weights holds none of its own: %zu bytes, %zu packing its own",
          gpfq_forward_bytes(borrower), own_bytes);
    /* new weights for the borrower end the sharing: it packs its own again */
    gpfq_forward_weights_changed(borrower, -1);
    CHECK(gpfq_forward_run(borrower, input, 8, &shared_logits) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(gpfq_forward_bytes(borrower) == own_bytes,
          "after new weights the plan packs its own: %zu bytes, %zu expected",
          gpfq_forward_bytes(borrower), own_bytes);
    gpfq_forward_free(borrower);
    gpfq_forward_free(owner);
    CHECK(gpfq_forward_range(pieces, input, 8, 2, 1) == GPFQ_ERR_ARG, "a backwards range");
    gpfq_forward_free(whole);
    gpfq_forward_free(pieces);

    /* non-finite logits: counted, or an error naming the first such image */
    m->nodes[m->n_nodes - 1].weight[0] = NAN;
    o.workers = 3;
    CHECK(gpfq_evaluate_with(m, &data, &o, &r) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(r.nonfinite == 203, "%zu images with a NaN logit", r.nonfinite);
    o.require_finite = 1;
    o.what = "the test model";
    CHECK(gpfq_evaluate_with(m, &data, &o, &r) == GPFQ_ERR_NUMERIC, "NaN logits fail");
    CHECK_CONTAINS(gpfq_last_error(), "the test model's outputs are not finite");
    CHECK_CONTAINS(gpfq_last_error(), "on test image 0:");
    gpfq_dataset_free(&data);
    gpfq_model_free(m);
}

/* gpfq_sum_squares against one running sum in long double, for every length around its 16
 * side-by-side sums and a long one, with and without the subtrahend; to 1e-12 relative (the
 * same double additions in another order: about n / 16 * 2^-53 apart at most). */
static void test_sum_squares(void) {
    enum { LONG = 100003 };
    float *v = malloc(LONG * sizeof(float)), *b = malloc(LONG * sizeof(float));
    uint64_t state = 7;
    for (size_t k = 0; k < LONG; k++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        v[k] = (float)((double)(state >> 40) / (double)(1 << 24) - 0.5) * 3.0f;
        b[k] = (float)(k % 7) * 0.125f - 0.3f;
    }
    double worst = 0.0;
    int zero_ok = gpfq_sum_squares(v, NULL, 0) == 0.0 && gpfq_sum_squares(v, b, 0) == 0.0;
    const size_t lengths[] = {1, 2, 15, 16, 17, 31, 32, 33, 47, 1000, LONG};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
        for (int with = 0; with < 2; with++) {
            const size_t n = lengths[i];
            long double want = 0.0L;
            for (size_t k = 0; k < n; k++) {
                const long double t = (long double)v[k] - (with ? (long double)b[k] : 0.0L);
                want += t * t;
            }
            const double got = gpfq_sum_squares(v, with ? b : NULL, n);
            const double rel = fabs((double)(((long double)got - want) / want));
            if (!(rel <= worst)) worst = rel;
        }
    CHECK(zero_ok && worst <= 1e-12,
          "gpfq_sum_squares is %g (relative) from one long double sum; of nothing %d", worst,
          zero_ok);
    free(v), free(b);
}

int main(int argc, char **argv) {
    /* glibc fills what malloc returns with a non-zero byte: a buffer the library reads before it
     * writes (ublock's lanes zero U and V themselves) then changes results, whatever pages the
     * heap happens to hand out (fresh ones are zero) */
    mallopt(M_PERTURB, 165);
    test_quantizers();
    test_quantize_row();
    test_forms();
    test_threads();
    test_same_inputs();
    test_gram_only();
    test_helper();
    test_unfold();
    test_driver(argc > 1 ? argv[1] : "tests/fixtures");
    test_eval_and_ranges(argc > 1 ? argv[1] : "tests/fixtures");
    test_plan_buffers(argc > 1 ? argv[1] : "tests/fixtures");
    test_fold_batchnorm(argc > 1 ? argv[1] : "tests/fixtures");
    test_later_convs(argc > 1 ? argv[1] : "tests/fixtures");
    test_gathered();
    test_gathered_driver(argc > 1 ? argv[1] : "tests/fixtures");
    test_flatten_alias(argc > 1 ? argv[1] : "tests/fixtures");
    test_sampling();
    test_sum_squares();
    test_no_norm();
    test_rows();
    test_sweep_rows();
    return check_report("test_gpfq");
}
