/*
 * Top-1 / top-5 evaluation over a data split.
 */
#include "gpfq/eval.h"

#include <stdlib.h>
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

gpfq_status gpfq_evaluate(const gpfq_model *model, const gpfq_dataset *data, size_t batch,
                          size_t limit, gpfq_eval_result *result, gpfq_progress_fn progress,
                          void *progress_ctx) {
    GPFQ_TRY(gpfq_eval_check(model, data));
    size_t total = limit && limit < data->n ? limit : data->n;
    if (batch == 0) return gpfq_fail(GPFQ_ERR_ARG, "the batch size must be at least 1");
    if (batch > total && total > 0) batch = total;
    gpfq_forward *fwd = NULL;
    GPFQ_TRY(gpfq_forward_create(model, batch, &fwd));
    const size_t image = gpfq_shape_size(model->input_shape);
    float *input = gpfq_malloc(batch * image * sizeof(float), "an input batch");
    if (!input) {
        gpfq_forward_free(fwd);
        return GPFQ_ERR_NOMEM;
    }
    gpfq_eval_result r = {0};
    double start = gpfq_now();
    gpfq_status st = GPFQ_OK;
    for (size_t first = 0; st == GPFQ_OK && first < total; first += batch) {
        size_t count = total - first < batch ? total - first : batch;
        gpfq_dataset_batch(data, model->mean, model->std, first, NULL, count, input);
        const float *logits = NULL;
        st = gpfq_forward_run(fwd, input, count, &logits);
        for (size_t i = 0; st == GPFQ_OK && i < count; i++) {
            int rank = gpfq_label_rank(logits + i * model->num_classes, model->num_classes,
                                       data->labels[first + i]);
            r.top1 += rank < 1;
            r.top5 += rank < 5;
        }
        r.images += count;
        if (progress) progress(progress_ctx, r.images, total);
    }
    r.seconds = gpfq_now() - start;
    free(input);
    gpfq_forward_free(fwd);
    if (st == GPFQ_OK) *result = r;
    return st;
}
