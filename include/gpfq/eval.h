/*
 * Evaluation: a batched forward pass over a data split, counting top-1 and
 * top-5 hits.
 */
#ifndef GPFQ_EVAL_H
#define GPFQ_EVAL_H

#include <stddef.h>

#include "gpfq/data.h"
#include "gpfq/forward.h"
#include "gpfq/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t images;
    size_t top1;      /* correct at rank 1 */
    size_t top5;      /* correct within the 5 largest logits (all of them when fewer classes) */
    size_t nonfinite; /* images with a NaN or Inf logit (counted as misses) */
    double seconds;
    /* images per forward pass: the options' batch, at most the model's slice
     * (gpfq_forward_slice) and a worker's share of the images */
    size_t batch;
} gpfq_eval_result;

/* Progress callback: images done so far out of total. With several workers it
 * is called from their threads, one call at a time. */
typedef void (*gpfq_progress_fn)(void *ctx, size_t done, size_t total);

typedef struct {
    size_t batch; /* images per forward pass (default 256) */
    size_t limit; /* the first `limit` images; 0 (default): all */
    /* Threads sharing the images, each running its own forward pass on a
     * contiguous part of them (default 1: the calling thread). Every op then
     * runs in parallel, not only the GEMMs; keep BLAS at one thread when > 1. */
    int workers;
    /* Only share `part` (0-based) of `parts` of those images, a contiguous range: processes
     * that each take one share add up their counts to the whole (default 0 of 1: all). */
    int part, parts;
    /* Fail with GPFQ_ERR_NUMERIC at the first image whose logits are not finite,
     * naming `what` (default 0: such images count as misses and in nonfinite). */
    int require_finite;
    const char *what;
    gpfq_progress_fn progress;
    void *progress_ctx;
} gpfq_eval_options;

void gpfq_eval_options_default(gpfq_eval_options *o);

/* Checks that the data fits the model (image shape, classes). */
gpfq_status gpfq_eval_check(const gpfq_model *model, const gpfq_dataset *data);

/* Evaluates the first `limit` images (0: all) in batches of `batch`. */
gpfq_status gpfq_evaluate(const gpfq_model *model, const gpfq_dataset *data, size_t batch,
                          size_t limit, gpfq_eval_result *result, gpfq_progress_fn progress,
                          void *progress_ctx);

/* The same with every option; the counts do not depend on the number of workers. */
gpfq_status gpfq_evaluate_with(const gpfq_model *model, const gpfq_dataset *data,
                               const gpfq_eval_options *o, gpfq_eval_result *result);

/* Rank of the true class among the logits: the number of classes with a larger
 * logit, ties counted by lower class index first (as torch.topk orders them). */
int gpfq_label_rank(const float *logits, int num_classes, int label);

/* Seconds on a monotonic clock. */
double gpfq_now(void);

#ifdef __cplusplus
}
#endif

#endif
