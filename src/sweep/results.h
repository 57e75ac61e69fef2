/*
 * The results file (docs/results-format.md): one HDF5 file per sweep, written
 * only by rank 0. A results table (/results) with one row per task and a
 * per-layer table (/layers), both chunked, extendible 1-D datasets of compound
 * type, flushed after every appended result so that a killed sweep keeps every
 * result it reported. Provenance is kept as attributes on the root.
 */
#ifndef GPFQ_SWEEP_RESULTS_H
#define GPFQ_SWEEP_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "gpfq/gpfq.h"

enum { ROW_TEXT = 16, ROW_HOST = 64, ROW_MESSAGE = 256, ROW_LAYER_NAME = 64 };

typedef struct {
    char task_id[17];
    char method[8];
    int32_t bits;
    double mlp_scalar, cnn_scalar;
    double mlp_percentile, cnn_percentile;
    char regularizer[8];
    double reg_lambda;
    int32_t stochastic;
    int64_t seed;
    int64_t calib_images;
    char calib_mode[ROW_TEXT];
    double retain_rate;
    double float_top1, float_top5; /* fractions */
    double quant_top1, quant_top5;
    double float_sparsity, quant_sparsity;
    double quantize_seconds, eval_seconds, total_seconds;
    uint64_t codes_hash;
    int32_t rank;
    char host[ROW_HOST];
    char status[8]; /* "done" or "failed" */
    char message[ROW_MESSAGE];
    double finished_at; /* seconds since the epoch */
} sweep_row;

typedef struct {
    char task_id[17];
    int32_t layer;
    char name[ROW_LAYER_NAME];
    int64_t rows, cols, samples;
    double delta, error, relative_error, sparsity, seconds;
} sweep_layer_row;

typedef struct sweep_results sweep_results;

/* Opens (or creates) a results file for a job. An existing file must come from
 * the same job context (model, data, calibration); its rows tell what is done.
 * With `fresh`, an existing file is moved to PATH.old-<time> first (and said so). */
gpfq_status sweep_results_open(const char *path, const char *context, const char *job_text,
                               int fresh, sweep_results **out);

/* Checks, without changing anything, that `path` can be written by this job:
 * it does not exist and its directory is writable, or it is a results file of the
 * same context. */
gpfq_status sweep_results_check(const char *path, const char *context);

/* Status of a task in the file: 0 absent, 1 done, 2 failed. */
int sweep_results_status(const sweep_results *r, const char *task_id);
size_t sweep_results_rows(const sweep_results *r);

/* Appends (or, for a task already present, overwrites) a row and its layers, then
 * flushes the file. */
gpfq_status sweep_results_put(sweep_results *r, const sweep_row *row, const sweep_layer_row *layers,
                              int n_layers);

/* Provenance written at every start. */
gpfq_status sweep_results_provenance(sweep_results *r, int ranks, const char *hosts,
                                     const char *command);

gpfq_status sweep_results_close(sweep_results *r);

/* mkdir -p */
gpfq_status sweep_make_dirs(const char *dir);

/* Reads every row of a results file (for reports and tests). */
gpfq_status sweep_results_read(const char *path, sweep_row **rows, size_t *count);

/* The finished row of `method` ("gpfq" or "msq") at `bits` with the best quantized top-1
 * (the first of equals), or NULL. */
const sweep_row *sweep_best_row(const sweep_row *rows, size_t n, const char *method, int bits);

/* Reads every layer row of a results file. */
gpfq_status sweep_results_read_layers(const char *path, sweep_layer_row **rows, size_t *count);

/* Reads a string attribute of a results file's root (e.g. "context", "job"). */
gpfq_status sweep_results_attr(const char *path, const char *name, char **value);

/* Adds a string attribute to the root (replacing one of the same name). */
gpfq_status sweep_results_set_attr(sweep_results *r, const char *name, const char *value);

#endif
