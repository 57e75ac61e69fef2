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
    size_t top1; /* correct at rank 1 */
    size_t top5; /* correct within the 5 largest logits (all of them when fewer classes) */
    double seconds;
} gpfq_eval_result;

/* Progress callback: images done so far out of total. */
typedef void (*gpfq_progress_fn)(void *ctx, size_t done, size_t total);

/* Checks that the data fits the model (image shape, classes). */
gpfq_status gpfq_eval_check(const gpfq_model *model, const gpfq_dataset *data);

/* Evaluates the first `limit` images (0: all) in batches of `batch`. */
gpfq_status gpfq_evaluate(const gpfq_model *model, const gpfq_dataset *data, size_t batch,
                          size_t limit, gpfq_eval_result *result, gpfq_progress_fn progress,
                          void *progress_ctx);

/* Rank of the true class among the logits: the number of classes with a larger
 * logit, ties counted by lower class index first (as torch.topk orders them). */
int gpfq_label_rank(const float *logits, int num_classes, int label);

/* Seconds on a monotonic clock. */
double gpfq_now(void);

#ifdef __cplusplus
}
#endif

#endif
