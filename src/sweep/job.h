/*
 * Sweep job files (YAML, docs/sweep.md): the model, data, calibration, output
 * and cache, and a grid of quantization parameters whose Cartesian product is
 * the task list. Every task has a stable id derived from its canonical
 * configuration, so reruns and grown grids know what is already done.
 */
#ifndef GPFQ_SWEEP_JOB_H
#define GPFQ_SWEEP_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "gpfq/gpfq.h"

enum { SWEEP_MAX_VALUES = 4096, SWEEP_ID_LEN = 17 };

typedef struct {
    double *values;
    int count;
    int line; /* where it was given, for messages (0: default) */
} sweep_list;

typedef struct {
    char *path;
    char *text; /* the job file as read, kept in the results' provenance */

    char *model;      /* name or path, as written */
    char *model_path; /* resolved */
    char *dataset;
    char *data_dir; /* NULL: the data set's default */

    gpfq_quant_options base; /* calibration and options; grid fields are overwritten per task */
    char **ignore;
    int n_ignore;

    char *output;
    char *cache; /* NULL: no cache file (activations still computed once per node) */
    size_t eval_batch;
    size_t eval_limit;

    /* the grid */
    sweep_list method; /* 0 gpfq, 1 msq */
    sweep_list bits;
    sweep_list scalar; /* sets both scalars when given */
    sweep_list mlp_scalar, cnn_scalar;
    sweep_list percentile;
    sweep_list regularizer; /* 0 none, 1 L1, 2 L0 */
    sweep_list lambda;
    sweep_list stochastic; /* 0, 1 */
    sweep_list seed;
} sweep_job;

typedef struct {
    char id[SWEEP_ID_LEN]; /* 16 hex digits of a hash of `canonical` */
    char canonical[512];
    gpfq_quant_options q;
} sweep_task;

/* Reads and checks a job file. Errors name the file, line and key. */
gpfq_status sweep_job_load(const char *path, sweep_job *job);
void sweep_job_free(sweep_job *job);

/* Command-line overrides: a list "2,3,4" or a range "1.0:2.0:0.05" for a grid
 * key (bits, scalar, lambda, ...). */
gpfq_status sweep_job_override(sweep_job *job, const char *key, const char *text);

/* A fingerprint of everything outside the grid that changes results: model file
 * contents, data set, calibration, options. Part of every task id. */
gpfq_status sweep_job_context(const sweep_job *job, char *out, size_t size);

/* Expands the grid into tasks (deduplicated: parameters a task ignores are
 * normalized away). *tasks is allocated. */
gpfq_status sweep_job_tasks(const sweep_job *job, const char *context, sweep_task **tasks,
                            int *count);

/* FNV-1a of a file's bytes. */
gpfq_status sweep_hash_file(const char *path, uint64_t *hash);
uint64_t sweep_hash_bytes(const void *data, size_t n, uint64_t seed);

#endif
