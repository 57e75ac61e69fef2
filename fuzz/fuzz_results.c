/*
 * Fuzzes the results-file readers: sweep_results_read, sweep_results_read_layers
 * and sweep_results_attr (used by report and merge), sweep_results_check, and
 * sweep_results_open on an existing file (used to resume a sweep).
 *
 * The input is written to a scratch file. Rows and layer rows a reader returns
 * must have NUL-terminated text fields (callers compare and print them); every
 * HDF5 object a reader opened must be closed again.
 */
#include "fuzz_common.h"

#include "sweep/results.h"

#include <hdf5.h>

#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

static void check_row(const sweep_row *r, size_t i) {
    FUZZ_CHECK(TERMINATED(r->task_id) && TERMINATED(r->method) && TERMINATED(r->regularizer) &&
                   TERMINATED(r->calib_mode) && TERMINATED(r->host) && TERMINATED(r->status) &&
                   TERMINATED(r->message),
               "row %zu has a text field without a terminating NUL", i);
}

static void check_layer(const sweep_layer_row *r, size_t i) {
    FUZZ_CHECK(TERMINATED(r->task_id) && TERMINATED(r->name),
               "layer row %zu has a text field without a terminating NUL", i);
}

static void check_closed(const char *after) {
    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    FUZZ_CHECK(open == 0, "%zd HDF5 object(s) left open after %s", open, after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_path(path, sizeof path, "results.h5");
    fuzz_write(path, data, size);

    sweep_row *rows = NULL;
    size_t n = 0;
    if (sweep_results_read(path, &rows, &n) == GPFQ_OK) {
        FUZZ_CHECK(rows != NULL, "no row buffer");
        for (size_t i = 0; i < n; i++) check_row(&rows[i], i);
    } else {
        FUZZ_CHECK(rows == NULL && n == 0, "a failed read left rows");
    }
    check_closed("sweep_results_read");

    sweep_layer_row *layers = NULL;
    size_t n_layers = 0;
    if (sweep_results_read_layers(path, &layers, &n_layers) == GPFQ_OK) {
        FUZZ_CHECK(layers != NULL, "no layer buffer");
        for (size_t i = 0; i < n_layers; i++) check_layer(&layers[i], i);
    } else {
        FUZZ_CHECK(layers == NULL && n_layers == 0, "a failed read left layer rows");
    }
    check_closed("sweep_results_read_layers");
    free(layers);

    static const char *const attrs[] = {"context", "job", "hosts", "created"};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        char *value = NULL;
        if (sweep_results_attr(path, attrs[i], &value) == GPFQ_OK)
            FUZZ_CHECK(value != NULL, "attribute %s has no value", attrs[i]);
        free(value);
        check_closed("sweep_results_attr");
    }

    (void)sweep_results_check(path, NULL);
    check_closed("sweep_results_check");

    /* resuming: opens the file for writing and indexes its rows (may change the
     * scratch file, which is rewritten for every input anyway) */
    sweep_results *r = NULL;
    if (sweep_results_open(path, NULL, "", 0, &r) == GPFQ_OK) {
        for (size_t i = 0; i < n; i++) {
            int status = sweep_results_status(r, rows[i].task_id);
            FUZZ_CHECK(status >= 0 && status <= 2, "status %d", status);
        }
        (void)sweep_results_rows(r);
        (void)sweep_results_close(r);
    }
    check_closed("sweep_results_open");
    free(rows);
    remove(path);
    return 0;
}
