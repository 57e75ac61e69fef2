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
#include "gpfq_check.h"

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

/* ---- the runs: one per k, the k-th allocation failing ---- */

/* A kind of run: `run` does it once; `outcome`, after a run that returned GPFQ_OK, frees what
 * it made and says whether its results are those of a run without a failure. Where
 * `must_match`, a fallback's results must be; otherwise they are only counted. */
typedef struct {
    const char *what;
    gpfq_status (*run)(void *ctx);
    int (*outcome)(void *ctx);
    int must_match;
    long min_allocations; /* fewer than this many: the run is not what the test means */
    void *ctx;
} trial;

/* Runs t with its k-th allocation failing for k = 0, 1, ... until a run meets no failure. Each
 * run must end with GPFQ_ERR_NOMEM and a message, or finish on a fallback. */
static void fail_each(const trial *t) {
    int failed = 0, same = 0, other = 0;
    long k = 0;
    for (;; k++) {
        gpfq_clear_error();
        fail_in(k);
        const gpfq_status st = t->run(t->ctx);
        const int met = failure_met();
        fail_in(-1);
        if (!met) { /* the run makes fewer than k + 1 allocations */
            CHECK(st == GPFQ_OK, "%s without a failure: %s", t->what, gpfq_last_error());
            if (st == GPFQ_OK) t->outcome(t->ctx);
            break;
        }
        if (st == GPFQ_OK) {
            const int match = t->outcome(t->ctx);
            match ? same++ : other++;
            if (t->must_match)
                CHECK(match, "%s, allocation %ld failing: the fallback changed the results",
                      t->what, k);
        } else {
            failed++;
            CHECK(st == GPFQ_ERR_NOMEM && has_message(),
                  "%s, allocation %ld failing: status %d, message '%s'", t->what, k, (int)st,
                  gpfq_last_error());
        }
    }
    printf("%s: %ld allocations; a failure of %d of them ends it with GPFQ_ERR_NOMEM, %d take a "
           "fallback with the same results, %d with other results\n",
           t->what, k, failed, same, other);
    CHECK(failed > 0 && k >= t->min_allocations, "%s: %ld allocations, %d failed runs", t->what, k,
          failed);
}

/* ---- 2. a forward pass ---- */

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

typedef struct {
    const gpfq_model *m;
    const float *x;
    size_t n, classes;
    const float *want;
    float *got;
} forward_trial;

static gpfq_status forward_run(void *ctx) {
    forward_trial *f = ctx;
    memset(f->got, 0, f->n * f->classes * sizeof(float));
    return forward(f->m, f->x, f->n, f->got, f->classes);
}

static int forward_outcome(void *ctx) {
    const forward_trial *f = ctx;
    return check_excess(f->got, f->want, f->n * f->classes, 1e-4, 1e-4, &max_abs) <= 0;
}

static void test_forward(const gpfq_model *m) {
    const size_t n = 40, in = gpfq_shape_size(m->input_shape);
    const size_t classes = gpfq_shape_size(m->nodes[m->n_nodes - 1].out_shape);
    unsigned long long state = 11;
    float *x = malloc(n * in * 4), *want = malloc(n * classes * 4), *got = malloc(n * classes * 4);
    for (size_t i = 0; i < n * in; i++) x[i] = (float)check_rand(&state);
    CHECK(forward(m, x, n, want, classes) == GPFQ_OK, "%s", gpfq_last_error());
    forward_trial f = {m, x, n, classes, want, got};
    fail_each(&(trial){"forward pass", forward_run, forward_outcome, 1, 5, &f});
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

typedef struct {
    const gpfq_model *m;
    const gpfq_dataset *train;
    const gpfq_quant_options *o;
    uint64_t hash;
    gpfq_quant_result r;
} quantize_trial;

static gpfq_status quantize_run(void *ctx) {
    quantize_trial *q = ctx;
    return gpfq_quantize_model(q->m, q->train, q->o, &q->r, NULL, NULL);
}

static int quantize_outcome(void *ctx) {
    quantize_trial *q = ctx;
    const int same = gpfq_codes_hash(&q->r) == q->hash;
    gpfq_quant_result_free(&q->r);
    return same;
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
    quantize_trial q = {m, &train, &o, 0, {0}};
    CHECK(quantize_run(&q) == GPFQ_OK, "%s", gpfq_last_error());
    q.hash = gpfq_codes_hash(&q.r);
    gpfq_quant_result_free(&q.r);
    /* a fallback onto OpenBLAS may round a product differently, and codes can follow: the
     * codes are counted, not compared */
    fail_each(&(trial){reference ? "quantization (--reference)" : "quantization", quantize_run,
                       quantize_outcome, 0, 21, &q});
    gpfq_dataset_free(&train);
}

/* ---- 4. an evaluation on two workers ---- */

typedef struct {
    const gpfq_model *m;
    const gpfq_dataset *test;
    const gpfq_eval_options *o;
    gpfq_eval_result want, r;
} evaluate_trial;

static gpfq_status evaluate_run(void *ctx) {
    evaluate_trial *e = ctx;
    return gpfq_evaluate_with(e->m, e->test, e->o, &e->r);
}

/* a fallback's rounding may move an image whose two best logits are a hair apart */
static int evaluate_outcome(void *ctx) {
    const evaluate_trial *e = ctx;
    return e->r.images == e->want.images && labs((long)e->r.top1 - (long)e->want.top1) <= 1 &&
           labs((long)e->r.top5 - (long)e->want.top5) <= 1;
}

static void test_evaluate(const gpfq_model *m) {
    gpfq_dataset test = random_data(m, 64, 9);
    gpfq_eval_options o;
    gpfq_eval_options_default(&o);
    o.workers = 2;
    o.batch = 16;
    evaluate_trial e = {.m = m, .test = &test, .o = &o};
    CHECK(gpfq_evaluate_with(m, &test, &o, &e.want) == GPFQ_OK, "%s", gpfq_last_error());
    fail_each(&(trial){"evaluation", evaluate_run, evaluate_outcome, 1, 0, &e});
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
            gpfq_model *m = load_fixture(argv[1], models[k]);
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
