/*
 * Fuzzes the sweep job-file parser, sweep_job_load (YAML), and the command-line
 * grid overrides, sweep_job_override.
 *
 * The input is the job file, optionally followed by a line "#overrides" and
 * lines KEY=TEXT, applied in order as `gpfq sweep --bits 2,3` and friends apply
 * them (only grid keys reach sweep_job_override; other lines are skipped). A job
 * that loads and takes its overrides must have non-empty grid lists of finite
 * values within their limits, and (when the grid is small) expand into tasks
 * with 16-hex-digit ids. Nothing here touches the model or the data.
 */
#include "fuzz_common.h"

#include "sweep/job.h"

#include <math.h>

#define SEPARATOR "\n#overrides\n"

static const char *const grid_keys[] = {"method",     "bits",       "scalar",      "mlp_scalar",
                                        "cnn_scalar", "percentile", "regularizer", "lambda",
                                        "stochastic", "seed"};
enum { N_KEYS = sizeof grid_keys / sizeof grid_keys[0] };

static const sweep_list *list_of(const sweep_job *job, int k) {
    const sweep_list *lists[N_KEYS] = {
        &job->method,     &job->bits,        &job->scalar, &job->mlp_scalar, &job->cnn_scalar,
        &job->percentile, &job->regularizer, &job->lambda, &job->stochastic, &job->seed};
    return lists[k];
}

/* Applies the KEY=TEXT lines; returns the status of the first that fails. */
static gpfq_status apply_overrides(sweep_job *job, const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL, "out of memory");
    memcpy(text, data, size);
    text[size] = '\0';
    gpfq_status st = GPFQ_OK;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && st == GPFQ_OK;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = '\0';
        for (int k = 0; k < N_KEYS; k++)
            if (!strcmp(line, grid_keys[k])) st = sweep_job_override(job, line, eq + 1);
    }
    free(text);
    return st;
}

static void check_job(const sweep_job *job) {
    FUZZ_CHECK(job->model && job->output && job->dataset, "an accepted job lacks a field");
    FUZZ_CHECK(job->n_ignore == 0 || job->ignore, "ignore list");
    for (int i = 0; i < job->n_ignore; i++) FUZZ_CHECK(job->ignore[i], "ignore entry %d", i);
    double points = 1;
    for (int k = 0; k < N_KEYS; k++) {
        const sweep_list *l = list_of(job, k);
        /* scalar sets both mlp_scalar and cnn_scalar: either it or both of them */
        if (k == 2 && l->count == 0 && job->mlp_scalar.count && job->cnn_scalar.count) continue;
        if ((k == 3 || k == 4) && l->count == 0 && job->scalar.count) continue;
        FUZZ_CHECK(l->count >= 1 && l->count <= SWEEP_MAX_VALUES, "%s has %d values", grid_keys[k],
                   l->count);
        for (int i = 0; i < l->count; i++)
            FUZZ_CHECK(isfinite(l->values[i]), "%s value %d is %g", grid_keys[k], i, l->values[i]);
        points *= l->count;
    }
    if (points > 2000) return; /* expanding is quadratic in the grid; keep inputs fast */
    sweep_task *tasks = NULL;
    int n = 0;
    if (sweep_job_tasks(job, "model=0;data=fashion-mnist", &tasks, &n) == GPFQ_OK) {
        FUZZ_CHECK(n >= 1 && tasks, "no tasks");
        for (int i = 0; i < n; i++) {
            FUZZ_CHECK(strlen(tasks[i].id) == 16, "task id '%s'", tasks[i].id);
            FUZZ_CHECK(tasks[i].q.bits >= 1 && tasks[i].q.bits <= 16, "bits %d", tasks[i].q.bits);
        }
        free(tasks);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *parts[2];
    size_t sizes[2];
    const int n = fuzz_split(data, size, SEPARATOR, parts, sizes, 2);
    char path[512];
    fuzz_path(path, sizeof path, "job.yaml");
    fuzz_write(path, parts[0], sizes[0]);
    sweep_job job;
    gpfq_status st = sweep_job_load(path, &job);
    if (st == GPFQ_OK && n == 2) st = apply_overrides(&job, parts[1], sizes[1]);
    if (st == GPFQ_OK) check_job(&job);
    sweep_job_free(&job);
    remove(path);
    return 0;
}
