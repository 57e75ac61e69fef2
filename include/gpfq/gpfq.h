/*
 * gpfq: post-training quantization of neural networks with GPFQ.
 *
 * The umbrella header. A model is loaded from an HDF5 model file
 * (docs/model-format.md), run with a planned batched forward pass, and evaluated
 * on a data set:
 *
 *     gpfq_model *model;
 *     if (gpfq_model_load("data/models/lenet5_fashion.h5", &model) != GPFQ_OK) {
 *         fprintf(stderr, "%s\n", gpfq_last_error());
 *         return 1;
 *     }
 *     gpfq_dataset test;
 *     gpfq_dataset_open("fashion-mnist", NULL, GPFQ_SPLIT_TEST, &test);
 *     gpfq_eval_result r;
 *     gpfq_evaluate(model, &test, 256, 0, &r, NULL, NULL);
 *     printf("top-1 %.2f%%\n", 100.0 * r.top1 / r.images);
 *     gpfq_dataset_free(&test);
 *     gpfq_model_free(model);
 *
 * Every function that can fail returns a gpfq_status; gpfq_last_error() holds
 * the message (what, where, and what to do). The library knows nothing of MPI.
 */
#ifndef GPFQ_GPFQ_H
#define GPFQ_GPFQ_H

#include "gpfq/data.h"
#include "gpfq/eval.h"
#include "gpfq/forward.h"
#include "gpfq/model.h"
#include "gpfq/ops.h"
#include "gpfq/quant.h"
#include "gpfq/status.h"

#define GPFQ_VERSION "0.1.0"

#endif
