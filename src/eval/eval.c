/*
 * Top-1 / top-5 evaluation over a data split.
 */
#include "gpfq/eval.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double gpfq_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int gpfq_label_rank(const float *logits, int num_classes, int label) {
    const float target = logits[label];
    int rank = 0;
    for (int k = 0; k < num_classes; k++)
        if (logits[k] > target || (logits[k] == target && k < label) || logits[k] != logits[k])
            rank++;
    return rank;
}

gpfq_status gpfq_eval_check(const gpfq_model *model, const gpfq_dataset *data) {
    const gpfq_shape s = model->input_shape;
    if (s.c != data->c || s.h != data->h || s.w != data->w)
        return gpfq_fail(GPFQ_ERR_ARG,
                         "the model takes %dx%dx%d images but the data set has %dx%dx%d; use "
                         "a model made for this data set",
                         s.c, s.h, s.w, data->c, data->h, data->w);
    if (model->num_classes < data->num_classes)
        return gpfq_fail(GPFQ_ERR_ARG, "the model has %d classes but the data set has %d",
                         model->num_classes, data->num_classes);
    return GPFQ_OK;
}

void gpfq_eval_options_default(gpfq_eval_options *o) {
    memset(o, 0, sizeof *o);
    o->batch = 256;
    o->workers = 1;
    o->parts = 1;
    o->what = "the model";
}

/* One worker's share: images [first, last). Workers keep their own error
 * message, since gpfq_fail's is per thread. */
typedef struct {
    const gpfq_model *model;
    const gpfq_dataset *data;
    const gpfq_eval_options *o;
    size_t first, last, total;
    pthread_mutex_t *lock;
    size_t *done;               /* images done by every worker, under lock */
    const gpfq_forward *packed; /* the packed conv weights the workers share, or NULL */
    gpfq_eval_result r;
    gpfq_status st;
    char message[1024];
} eval_part;

static void part_fail(eval_part *p, gpfq_status st) {
    p->st = st;
    snprintf(p->message, sizeof p->message, "%s", gpfq_last_error());
}

static void *eval_part_run(void *arg) {
    eval_part *p = arg;
    const gpfq_model *model = p->model;
    const int classes = model->num_classes;
    const size_t span = p->last - p->first;
    /* the forward pass runs a batch in slices anyway (gpfq/forward.h); batches of a slice
     * keep its buffers in cache, where a whole batch's would be faulted in and spill */
    const size_t slice = gpfq_forward_slice(model);
    size_t batch = p->o->batch < span ? p->o->batch : span;
    if (batch > slice) batch = slice;
    if (batch == 0) return NULL;
    p->r.batch = batch;
    gpfq_forward *fwd = NULL;
    gpfq_status st = gpfq_forward_create(model, batch, &fwd);
    if (st == GPFQ_OK && p->packed) gpfq_forward_share_packed(fwd, p->packed);
    float *input = st == GPFQ_OK
                       ? gpfq_malloc(batch * gpfq_shape_size(model->input_shape) * sizeof(float),
                                     "an input batch")
                       : NULL;
    if (st == GPFQ_OK && !input) st = GPFQ_ERR_NOMEM;
    if (st != GPFQ_OK) {
        part_fail(p, st);
        gpfq_forward_free(fwd);
        return NULL;
    }
    for (size_t first = p->first; first < p->last; first += batch) {
        const size_t count = p->last - first < batch ? p->last - first : batch;
        gpfq_dataset_batch(p->data, model->mean, model->std, first, NULL, count, input);
        const float *logits = NULL;
        if ((st = gpfq_forward_run(fwd, input, count, &logits)) != GPFQ_OK) {
            part_fail(p, st);
            break;
        }
        for (size_t i = 0; i < count; i++) {
            const float *l = logits + i * (size_t)classes;
            int finite = 1;
            for (int k = 0; k < classes; k++) finite &= isfinite(l[k]) != 0;
            if (!finite && p->o->require_finite) {
                p->st = GPFQ_ERR_NUMERIC;
                snprintf(p->message, sizeof p->message,
                         "%s's outputs are not finite (NaN or Inf) on test image %zu: its "
                         "numbers overflow",
                         p->o->what ? p->o->what : "the model", first + i);
                break;
            }
            p->r.nonfinite += !finite;
            const int rank = gpfq_label_rank(l, classes, p->data->labels[first + i]);
            p->r.top1 += rank < 1;
            p->r.top5 += rank < 5;
        }
        if (p->st != GPFQ_OK) break;
        p->r.images += count;
        if (p->o->progress) {
            pthread_mutex_lock(p->lock);
            *p->done += count;
            p->o->progress(p->o->progress_ctx, *p->done, p->total);
            pthread_mutex_unlock(p->lock);
        }
    }
    free(input);
    gpfq_forward_free(fwd);
    return NULL;
}

gpfq_status gpfq_evaluate_with(const gpfq_model *model, const gpfq_dataset *data,
                               const gpfq_eval_options *o, gpfq_eval_result *result) {
    GPFQ_TRY(gpfq_eval_check(model, data));
    if (o->batch == 0) return gpfq_fail(GPFQ_ERR_ARG, "the batch size must be at least 1");
    if (o->parts > 1 && (o->part < 0 || o->part >= o->parts))
        return gpfq_fail(GPFQ_ERR_ARG, "share %d of %d does not exist", o->part, o->parts);
    const size_t all = o->limit && o->limit < data->n ? o->limit : data->n;
    const size_t lo = o->parts > 1 ? all * (size_t)o->part / (size_t)o->parts : 0;
    const size_t total = (o->parts > 1 ? all * (size_t)(o->part + 1) / (size_t)o->parts : all) - lo;
    size_t workers = o->workers > 1 ? (size_t)o->workers : 1;
    if (workers > total) workers = total ? total : 1;
    eval_part *parts = gpfq_calloc(workers, sizeof *parts, "evaluation workers");
    pthread_t *threads = gpfq_calloc(workers, sizeof *threads, "evaluation workers");
    if (!parts || !threads) {
        free(parts);
        free(threads);
        return GPFQ_ERR_NOMEM;
    }
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    size_t done = 0;
    const double start = gpfq_now();
    /* the workers share one copy of the packed conv weights (a plan for one image holds it);
     * without memory for it, each packs its own */
    gpfq_forward *packed = NULL;
    if (workers > 1 && gpfq_forward_create(model, 1, &packed) == GPFQ_OK) gpfq_forward_pack(packed);
    size_t started = 0;
    for (size_t w = 0; w < workers; w++) {
        parts[w] = (eval_part){.model = model,
                               .data = data,
                               .o = o,
                               .first = lo + total * w / workers,
                               .last = lo + total * (w + 1) / workers,
                               .total = total,
                               .lock = &lock,
                               .done = &done,
                               .packed = packed};
        /* the calling thread takes the first part itself */
        if (w > 0 && pthread_create(&threads[w], NULL, eval_part_run, &parts[w]) != 0) break;
        started = w + 1;
    }
    if (started < workers) { /* no thread to spare: the rest runs here */
        for (size_t w = started; w < workers; w++) eval_part_run(&parts[w]);
    }
    eval_part_run(&parts[0]);
    for (size_t w = 1; w < started; w++) pthread_join(threads[w], NULL);
    gpfq_eval_result r = {0};
    gpfq_status st = GPFQ_OK;
    const eval_part *failed = NULL;
    for (size_t w = 0; w < workers; w++) {
        r.images += parts[w].r.images;
        r.top1 += parts[w].r.top1;
        r.top5 += parts[w].r.top5;
        r.nonfinite += parts[w].r.nonfinite;
        if (parts[w].r.batch > r.batch) r.batch = parts[w].r.batch;
        if (parts[w].st != GPFQ_OK && !failed) failed = &parts[w]; /* the lowest image first */
    }
    r.seconds = gpfq_now() - start;
    gpfq_forward_free(packed);
    if (failed) st = gpfq_fail(failed->st, "%s", failed->message);
    free(parts);
    free(threads);
    if (st == GPFQ_OK) *result = r;
    return st;
}

gpfq_status gpfq_evaluate(const gpfq_model *model, const gpfq_dataset *data, size_t batch,
                          size_t limit, gpfq_eval_result *result, gpfq_progress_fn progress,
                          void *progress_ctx) {
    gpfq_eval_options o;
    gpfq_eval_options_default(&o);
    o.batch = batch;
    o.limit = limit;
    o.progress = progress;
    o.progress_ctx = progress_ctx;
    return gpfq_evaluate_with(model, data, &o, result);
}
