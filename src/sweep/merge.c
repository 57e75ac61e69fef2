/*
 * `gpfq merge`: shard results files of one job into one file.
 */
#include "sweep.h"

#include "../core/h5util.h"
#include "results.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    sweep_row *rows;
    size_t n_rows;
    sweep_layer_row *layers;
    size_t n_layers;
} shard_data;

static int fail(const char *what) {
    fprintf(stderr, "gpfq merge: error: %s\n", what ? what : gpfq_last_error());
    return 1;
}

/* Layers of one task, appended to a temporary list. */
static int task_layers(const shard_data *d, const char *task_id, sweep_layer_row *out) {
    int n = 0;
    for (size_t i = 0; i < d->n_layers; i++)
        if (!strcmp(d->layers[i].task_id, task_id) && n < 1024) out[n++] = d->layers[i];
    return n;
}

int merge_main(const char *out, const char *const *inputs, int n_inputs) {
    gpfq_h5_quiet();
    struct stat sb;
    if (stat(out, &sb) == 0) {
        fprintf(stderr,
                "gpfq merge: error: %s exists; merge writes a new file (remove it or "
                "choose another name)\n",
                out);
        return 2;
    }
    char *context = NULL, *job = NULL;
    if (sweep_results_attr(inputs[0], "context", &context) != GPFQ_OK ||
        sweep_results_attr(inputs[0], "job", &job) != GPFQ_OK)
        return fail(NULL);
    shard_data *data = calloc((size_t)n_inputs, sizeof *data);
    char provenance[8192] = "";
    int rc = 0;
    for (int i = 0; i < n_inputs && !rc; i++) {
        char *other = NULL, *hosts = NULL;
        if (sweep_results_attr(inputs[i], "context", &other) != GPFQ_OK) {
            rc = fail(NULL);
            break;
        }
        if (strcmp(other, context) != 0) {
            fprintf(stderr,
                    "gpfq merge: error: %s comes from a different job than %s (model, data set "
                    "or calibration differ); merge only shards of one job\n",
                    inputs[i], inputs[0]);
            rc = 2;
        }
        free(other);
        if (!rc &&
            (sweep_results_read(inputs[i], &data[i].rows, &data[i].n_rows) != GPFQ_OK ||
             sweep_results_read_layers(inputs[i], &data[i].layers, &data[i].n_layers) != GPFQ_OK))
            rc = fail(NULL);
        if (!rc && sweep_results_attr(inputs[i], "hosts", &hosts) != GPFQ_OK) hosts = strdup("?");
        if (!rc)
            snprintf(provenance + strlen(provenance), sizeof provenance - strlen(provenance),
                     "%s%s (%zu rows; hosts %s)", i ? "; " : "", inputs[i], data[i].n_rows,
                     hosts ? hosts : "?");
        free(hosts);
    }
    sweep_results *res = NULL;
    if (!rc && sweep_results_open(out, context, job, 0, &res) != GPFQ_OK) rc = fail(NULL);
    sweep_layer_row *layers = malloc(1024 * sizeof *layers);
    size_t written = 0, duplicates = 0;
    /* done rows first, then failed ones for tasks no input finished */
    for (int pass = 0; pass < 2 && !rc; pass++)
        for (int i = 0; i < n_inputs && !rc; i++)
            for (size_t k = 0; k < data[i].n_rows && !rc; k++) {
                const sweep_row *row = &data[i].rows[k];
                int done = !strcmp(row->status, "done");
                if (done != (pass == 0)) continue;
                if (sweep_results_status(res, row->task_id)) {
                    duplicates++;
                    continue;
                }
                int n = task_layers(&data[i], row->task_id, layers);
                if (sweep_results_put(res, row, layers, n) != GPFQ_OK) rc = fail(NULL);
                written++;
            }
    if (!rc && sweep_results_set_attr(res, "merged_from", provenance) != GPFQ_OK) rc = fail(NULL);
    if (res && sweep_results_close(res) != GPFQ_OK && !rc) rc = fail(NULL);
    if (rc && res) remove(out);
    if (!rc)
        printf("merged    %d file(s) into %s: %zu tasks, %zu duplicate row(s) dropped\n", n_inputs,
               out, written, duplicates);
    for (int i = 0; i < n_inputs; i++) free(data[i].rows), free(data[i].layers);
    free(data), free(layers), free(context), free(job);
    return rc;
}
