/*
 * Allocation failures. This test links with -Wl,--wrap for malloc, calloc, realloc,
 * aligned_alloc and posix_memalign, so that every allocation the library makes goes through the
 * wrappers below, which fail one chosen call. A call that meets the failure must either return
 * GPFQ_ERR_NOMEM with a message, or take its fallback (a GEMM whose packs it could not get runs
 * on OpenBLAS, a direct conv kernel without its buffer on im2col) and give the same result.
 * Nothing may abort. Under AddressSanitizer (scripts/test.sh's second pass), nothing may leak or
 * touch freed memory on the way out.
 *
 *  1. A conv on im2col, or one that must pool after a kernel that cannot, given no scratch and
 *     no room for its unpooled outputs: the buffers it makes for the call.
 *  2. A forward pass of a model (plan, buffers, packed weights, the kernels' buffers)
 *     with its k-th allocation failing, for every k.
 *  3. gpfq_quantize_model on the same model, with its k-th allocation failing, for every k,
 *     with the defaults and with the reference's options.
 *  4. gpfq_evaluate_with on two workers, with its k-th allocation failing, for every k.
 * Both models: model_lenet_small (pooling convs, Linear layers) and model_resnet_small
 * (BatchNorm, residual Adds).
 *
 *     test_alloc_failures FIXTURES_DIR
 */
#include "check.h"
#include "gpfq/gpfq.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- the wrappers: call number `fail_at` (counted from 0 over all threads) fails, and in the
 * sticky mode every call after it too, as memory that has run out stays out. With helper
 * threads allocating at the same time, which allocation is the k-th may vary from run to run.
 * What they hand out is filled with 0xff bytes (NaN as floats), so that a buffer read before
 * it is written shows, where a freed block could have held the last run's right values. ---- */

void *__real_malloc(size_t bytes);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *p, size_t bytes);
void *__real_aligned_alloc(size_t align, size_t bytes);
int __real_posix_memalign(void **p, size_t align, size_t bytes);

static atomic_long calls;
static atomic_long fail_at = LONG_MAX;
static atomic_int sticky;

static int failing(void) {
    const long call = atomic_fetch_add(&calls, 1), at = atomic_load(&fail_at);
    return atomic_load(&sticky) ? call >= at : call == at;
}

static void *poisoned(void *p, size_t bytes) {
    if (p) memset(p, 0xff, bytes);
    return p;
}

void *__wrap_malloc(size_t bytes) {
    return failing() ? NULL : poisoned(__real_malloc(bytes), bytes);
}
void *__wrap_calloc(size_t count, size_t size) {
    return failing() ? NULL : __real_calloc(count, size);
}
void *__wrap_realloc(void *p, size_t bytes) {
    return failing() ? NULL : __real_realloc(p, bytes);
}
void *__wrap_aligned_alloc(size_t align, size_t bytes) {
    return failing() ? NULL : poisoned(__real_aligned_alloc(align, bytes), bytes);
}
int __wrap_posix_memalign(void **p, size_t align, size_t bytes) {
    if (failing()) return ENOMEM;
    const int st = __real_posix_memalign(p, align, bytes);
    if (st == 0) poisoned(*p, bytes);
    return st;
}
/* strdup allocates inside libc, out of the wrappers' reach: the copy is made here */
char *__wrap_strdup(const char *s) {
    const size_t bytes = strlen(s) + 1;
    char *p = failing() ? NULL : __real_malloc(bytes);
    return p ? memcpy(p, s, bytes) : NULL;
}

/* The k-th allocation from now fails (k >= 0), or none (k < 0). */
static void fail_in(long k) {
    atomic_store(&fail_at, k < 0 ? LONG_MAX : atomic_load(&calls) + k);
}

/* Whether the failure armed by fail_in has been met. */
static int failure_met(void) {
    return atomic_load(&calls) > atomic_load(&fail_at);
}

static double max_abs; /* check_excess's largest difference, unused */

/* The message says what failed (errors are cleared before each call: it is the call's). */
static int has_message(void) {
    return strstr(gpfq_last_error(), "out of memory") != NULL;
}

/* ---- 1. a conv's buffers for the call ---- */

static void test_conv_fallbacks(void) {
    const gpfq_conv_geom g = {4, 10, 10, 8, 10, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const size_t n = 3, in = 4 * 100, out = 8 * 100;
    unsigned long long state = 7;
    float *x = malloc(n * in * 4), *w = malloc(8 * 36 * 4), *b = malloc(8 * 4);
    float *y = malloc(n * out * 4), *want = malloc(n * out * 4);
    float *pooled = malloc(n * out / 4 * 4), *pooled_want = malloc(n * out / 4 * 4);
    for (size_t i = 0; i < n * in; i++) x[i] = (float)check_rand(&state);
    for (size_t i = 0; i < 8 * 36; i++) w[i] = (float)check_rand(&state);
    for (int i = 0; i < 8; i++) b[i] = (float)check_rand(&state);
    const gpfq_conv_kernel before = gpfq_conv_set_kernel(GPFQ_CONV_IM2COL);

    gpfq_conv2d_ref(&g, x, w, b, n, want);
    const gpfq_conv_geom pg = {8, 10, 10, 8, 5, 5, 2, 2, 2, 2, 0, 0, 1, 1, 1};
    gpfq_maxpool2d(&pg, want, n, pooled_want);

    /* im2col without a scratch: its own, or out of memory */
    gpfq_clear_error();
    fail_in(0);
    const gpfq_status st = gpfq_conv2d(&g, x, w, b, n, y, NULL);
    CHECK(failure_met() && st == GPFQ_ERR_NOMEM && has_message(),
          "a conv on im2col without scratch or memory for one: status %d, '%s'", (int)st,
          gpfq_last_error());
    CHECK_CONTAINS(gpfq_last_error(), "3x3 convolution");
    fail_in(-1);
    CHECK(gpfq_conv2d(&g, x, w, b, n, y, NULL) == GPFQ_OK &&
              check_excess(y, want, n * out, 1e-5, 1e-5, &max_abs) <= 0,
          "a conv on im2col with a scratch of its own differs from the reference");

    /* a pool after a kernel that cannot pool, without room for the unpooled outputs: the first
     * allocation is that room, the second the im2col scratch */
    const gpfq_conv_epilogue e = {.pool = 1};
    for (long k = 0; k < 2; k++) {
        gpfq_clear_error();
        fail_in(k);
        const gpfq_status sp = gpfq_conv2d_fused(&g, x, w, NULL, b, &e, n, pooled, NULL);
        CHECK(failure_met() && sp == GPFQ_ERR_NOMEM && has_message(),
              "a pooled conv, allocation %ld failing: status %d, '%s'", k, (int)sp,
              gpfq_last_error());
    }
    fail_in(-1);
    CHECK(gpfq_conv2d_fused(&g, x, w, NULL, b, &e, n, pooled, NULL) == GPFQ_OK &&
              check_excess(pooled, pooled_want, n * out / 4, 1e-5, 1e-5, &max_abs) <= 0,
          "a pooled conv with buffers of its own differs from the reference");

    gpfq_conv_set_kernel(before);
    free(x), free(w), free(b), free(y), free(want), free(pooled), free(pooled_want);
}

/* ---- 2. a forward pass ---- */

static gpfq_model *load(const char *fixtures, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fixtures, name);
    gpfq_model *m = NULL;
    CHECK(gpfq_model_load(path, &m) == GPFQ_OK, "%s", gpfq_last_error());
    return m;
}

/* A plan for n images of `input` and a pass over them; the logits copied to `logits`. */
static gpfq_status forward(const gpfq_model *m, const float *input, size_t n, float *logits,
                           size_t classes) {
    gpfq_forward *fwd = NULL;
    GPFQ_TRY(gpfq_forward_create(m, n, &fwd));
    const float *out = NULL;
    const gpfq_status st = gpfq_forward_run(fwd, input, n, &out);
    if (st == GPFQ_OK) memcpy(logits, out, n * classes * sizeof(float));
    gpfq_forward_free(fwd);
    return st;
}

static void test_forward(const gpfq_model *m) {
    const size_t n = 40, in = gpfq_shape_size(m->input_shape);
    const size_t classes = gpfq_shape_size(m->nodes[m->n_nodes - 1].out_shape);
    unsigned long long state = 11;
    float *x = malloc(n * in * 4), *want = malloc(n * classes * 4), *got = malloc(n * classes * 4);
    for (size_t i = 0; i < n * in; i++) x[i] = (float)check_rand(&state);
    CHECK(forward(m, x, n, want, classes) == GPFQ_OK, "%s", gpfq_last_error());

    int failed = 0, fell_back = 0;
    long k = 0;
    for (;; k++) {
        gpfq_clear_error();
        memset(got, 0, n * classes * 4);
        fail_in(k);
        const gpfq_status st = forward(m, x, n, got, classes);
        const int met = failure_met();
        fail_in(-1);
        if (!met) { /* the pass makes fewer than k + 1 allocations */
            CHECK(st == GPFQ_OK, "a pass without a failure: %s", gpfq_last_error());
            break;
        }
        if (st == GPFQ_OK) {
            fell_back++;
            CHECK(check_excess(got, want, n * classes, 1e-4, 1e-4, &max_abs) <= 0,
                  "allocation %ld failing, the pass's fallback changed the logits", k);
        } else {
            failed++;
            CHECK(st == GPFQ_ERR_NOMEM && has_message(),
                  "allocation %ld failing: status %d, message '%s'", k, (int)st, gpfq_last_error());
        }
    }
    printf("forward pass: %ld allocations; a failure of %d of them ends the pass with "
           "GPFQ_ERR_NOMEM, %d take a fallback\n",
           k, failed, fell_back);
    CHECK(failed > 0 && k > 4, "%ld allocations, %d failed passes", k, failed);
    free(x), free(want), free(got);
}

/* ---- 3. a quantization ---- */

/* n random images of the model's input shape, labels 0..9 in turn */
static gpfq_dataset random_data(const gpfq_model *m, size_t n, unsigned long long state) {
    const size_t size = gpfq_shape_size(m->input_shape);
    gpfq_dataset data = {.n = n,
                         .c = m->input_shape.c,
                         .h = m->input_shape.h,
                         .w = m->input_shape.w,
                         .num_classes = 10};
    data.images = malloc(n * size);
    data.labels = malloc(n);
    for (size_t i = 0; i < n * size; i++)
        data.images[i] = (uint8_t)((check_rand(&state) + 1) * 127);
    for (size_t i = 0; i < n; i++) data.labels[i] = (uint8_t)(i % 10);
    return data;
}

static void test_quantize(const gpfq_model *m, int reference) {
    gpfq_dataset train = random_data(m, 64, 5);
    gpfq_quant_options o;
    gpfq_quant_options_default(&o);
    o.calib_images = 16;
    o.bits = 3;
    if (reference) { /* --reference */
        o.calib_mode = GPFQ_CALIB_PER_LAYER;
        o.with_replacement = 1;
        o.unfold_stride_kernel = 1;
    }
    gpfq_quant_result want;
    CHECK(gpfq_quantize_model(m, &train, &o, &want, NULL, NULL) == GPFQ_OK, "%s",
          gpfq_last_error());
    const uint64_t hash = gpfq_codes_hash(&want);
    gpfq_quant_result_free(&want);

    int failed = 0, same = 0, other = 0;
    long k = 0;
    for (;; k++) {
        gpfq_clear_error();
        gpfq_quant_result r;
        fail_in(k);
        const gpfq_status st = gpfq_quantize_model(m, &train, &o, &r, NULL, NULL);
        const int met = failure_met();
        fail_in(-1);
        if (!met) { /* the quantization makes fewer than k + 1 allocations */
            CHECK(st == GPFQ_OK, "a quantization without a failure: %s", gpfq_last_error());
            if (st == GPFQ_OK) gpfq_quant_result_free(&r);
            break;
        }
        if (st == GPFQ_OK) {
            /* a fallback onto OpenBLAS may round a product differently, and codes can follow */
            if (gpfq_codes_hash(&r) == hash)
                same++;
            else
                other++;
            gpfq_quant_result_free(&r);
        } else {
            failed++;
            CHECK(st == GPFQ_ERR_NOMEM && has_message(),
                  "allocation %ld failing: status %d, message '%s'", k, (int)st, gpfq_last_error());
        }
    }
    printf("quantization%s: %ld allocations; a failure of %d of them ends it with GPFQ_ERR_NOMEM, "
           "%d take a fallback with the same codes, %d with other codes\n",
           reference ? " (--reference)" : "", k, failed, same, other);
    CHECK(failed > 0 && k > 20, "%ld allocations, %d failed quantizations", k, failed);
    gpfq_dataset_free(&train);
}

/* ---- 4. an evaluation on two workers ---- */

static void test_evaluate(const gpfq_model *m) {
    gpfq_dataset test = random_data(m, 64, 9);
    gpfq_eval_options o;
    gpfq_eval_options_default(&o);
    o.workers = 2;
    o.batch = 16;
    gpfq_eval_result want, r;
    CHECK(gpfq_evaluate_with(m, &test, &o, &want) == GPFQ_OK, "%s", gpfq_last_error());
    int failed = 0, fell_back = 0;
    long k = 0;
    for (;; k++) {
        gpfq_clear_error();
        fail_in(k);
        const gpfq_status st = gpfq_evaluate_with(m, &test, &o, &r);
        const int met = failure_met();
        fail_in(-1);
        if (!met) {
            CHECK(st == GPFQ_OK, "an evaluation without a failure: %s", gpfq_last_error());
            break;
        }
        if (st == GPFQ_OK) {
            fell_back++;
            /* a fallback's rounding may move an image whose two best logits are a hair apart */
            CHECK(r.images == want.images && labs((long)r.top1 - (long)want.top1) <= 1 &&
                      labs((long)r.top5 - (long)want.top5) <= 1,
                  "allocation %ld failing: top-1 %zu, top-5 %zu of %zu against %zu, %zu", k, r.top1,
                  r.top5, r.images, want.top1, want.top5);
        } else {
            failed++;
            CHECK(st == GPFQ_ERR_NOMEM && has_message(),
                  "allocation %ld failing: status %d, message '%s'", k, (int)st, gpfq_last_error());
        }
    }
    printf("evaluation: %ld allocations; a failure of %d of them ends it with GPFQ_ERR_NOMEM, "
           "%d take a fallback\n",
           k, failed, fell_back);
    CHECK(failed > 0, "%ld allocations, %d failed evaluations", k, failed);
    gpfq_dataset_free(&test);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_alloc_failures FIXTURES_DIR\n");
        return 2;
    }
    const char *models[] = {"model_lenet_small.h5", "model_resnet_small.h5"};
    for (int mode = 0; mode < 2; mode++) {
        atomic_store(&sticky, mode);
        printf("%s\n",
               mode ? "every allocation from the k-th on fails" : "the k-th allocation fails");
        test_conv_fallbacks();
        for (int k = 0; k < 2; k++) {
            gpfq_model *m = load(argv[1], models[k]);
            if (!m) continue;
            printf("%s\n", models[k]);
            test_forward(m);
            test_quantize(m, 0);
            test_quantize(m, 1);
            test_evaluate(m);
            gpfq_model_free(m);
        }
    }
    return check_report("test_alloc_failures");
}
