/*
 * The results file (see results.h and docs/results-format.md).
 */
#define _GNU_SOURCE /* memfd_create */
#include "results.h"

#include "../core/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { CHUNK_ROWS = 64 };

struct sweep_results {
    char *path;
    hid_t file, results, layers;
    hid_t row_type, layer_type;
    size_t n_rows, n_layers;
    /* task ids present, with status, in row order */
    char (*ids)[17];
    int *status;
    size_t capacity;
    int written_off; /* see write_off() */
};

static hid_t string_type(size_t size) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, size);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    return t;
}

#define FIELD_STR(type, s, field)                                                                  \
    do {                                                                                           \
        hid_t st_ = string_type(sizeof(((s *)0)->field));                                          \
        H5Tinsert(type, #field, HOFFSET(s, field), st_);                                           \
        H5Tclose(st_);                                                                             \
    } while (0)
#define FIELD(type, s, field, h5type) H5Tinsert(type, #field, HOFFSET(s, field), h5type)

static hid_t make_row_type(void) {
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(sweep_row));
    FIELD_STR(t, sweep_row, task_id);
    FIELD_STR(t, sweep_row, method);
    FIELD(t, sweep_row, bits, H5T_NATIVE_INT32);
    FIELD(t, sweep_row, mlp_scalar, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, cnn_scalar, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, mlp_percentile, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, cnn_percentile, H5T_NATIVE_DOUBLE);
    FIELD_STR(t, sweep_row, regularizer);
    FIELD(t, sweep_row, reg_lambda, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, stochastic, H5T_NATIVE_INT32);
    FIELD(t, sweep_row, seed, H5T_NATIVE_INT64);
    FIELD(t, sweep_row, calib_images, H5T_NATIVE_INT64);
    FIELD_STR(t, sweep_row, calib_mode);
    FIELD(t, sweep_row, retain_rate, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, float_top1, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, float_top5, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, quant_top1, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, quant_top5, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, float_sparsity, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, quant_sparsity, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, quantize_seconds, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, eval_seconds, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, total_seconds, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_row, codes_hash, H5T_NATIVE_UINT64);
    FIELD(t, sweep_row, rank, H5T_NATIVE_INT32);
    FIELD_STR(t, sweep_row, host);
    FIELD_STR(t, sweep_row, status);
    FIELD_STR(t, sweep_row, message);
    FIELD(t, sweep_row, finished_at, H5T_NATIVE_DOUBLE);
    return t;
}

static hid_t make_layer_type(void) {
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(sweep_layer_row));
    FIELD_STR(t, sweep_layer_row, task_id);
    FIELD(t, sweep_layer_row, layer, H5T_NATIVE_INT32);
    FIELD_STR(t, sweep_layer_row, name);
    FIELD(t, sweep_layer_row, rows, H5T_NATIVE_INT64);
    FIELD(t, sweep_layer_row, cols, H5T_NATIVE_INT64);
    FIELD(t, sweep_layer_row, samples, H5T_NATIVE_INT64);
    FIELD(t, sweep_layer_row, delta, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_layer_row, error, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_layer_row, relative_error, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_layer_row, sparsity, H5T_NATIVE_DOUBLE);
    FIELD(t, sweep_layer_row, seconds, H5T_NATIVE_DOUBLE);
    return t;
}

static hid_t create_table(hid_t file, const char *name, hid_t type) {
    hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {CHUNK_ROWS};
    hid_t space = H5Screate_simple(1, dims, maxdims);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(plist, 1, chunk);
    hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    H5Pclose(plist);
    H5Sclose(space);
    return ds;
}

/* Rows of a table of `row_size`-byte rows. A corrupt file may give it another
 * rank (more dims than dims[] holds would be written, and a 2-D table read into
 * n rows overflows), rows of absurd size, or more rows than a buffer can count
 * bytes for. */
static gpfq_status table_rows(hid_t ds, const char *path, const char *name, size_t row_size,
                              size_t *rows) {
    hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
    hsize_t dims[1] = {0};
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (rank == 1) H5Sget_simple_extent_dims(space, dims, NULL);
    size_t file_row = type >= 0 ? H5Tget_size(type) : 0;
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    *rows = 0;
    if (rank != 1)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: /%s has rank %d; a table is 1-D", path, name, rank);
    /* a corrupt member size (2^29 bytes) makes HDF5 convert for minutes */
    if (file_row == 0 || file_row > 64 * row_size)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: /%s has %zu-byte rows; not a gpfq table", path, name,
                         file_row);
    if (dims[0] > SIZE_MAX / row_size)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: /%s claims %llu rows, too many to read", path, name,
                         (unsigned long long)dims[0]);
    *rows = (size_t)dims[0];
    return GPFQ_OK;
}

/* HDF5 copies fixed-size strings of the file's own type as they are, so a
 * corrupt file can fill a field to the end; callers compare and print them. */
#define TERMINATE(field) ((field)[sizeof(field) - 1] = '\0')

static void terminate_rows(void *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        sweep_row *r = (sweep_row *)rows + i;
        TERMINATE(r->task_id), TERMINATE(r->method), TERMINATE(r->regularizer);
        TERMINATE(r->calib_mode), TERMINATE(r->host), TERMINATE(r->status);
        TERMINATE(r->message);
    }
}

static gpfq_status write_rows(hid_t ds, hid_t type, size_t first, size_t count, const void *data,
                              size_t *n_rows) {
    if (first + count > *n_rows) {
        hsize_t extent[1] = {first + count};
        if (H5Dset_extent(ds, extent) < 0) return gpfq_fail(GPFQ_ERR_IO, "cannot grow a table");
        *n_rows = first + count;
    }
    hid_t space = H5Dget_space(ds);
    hsize_t start[1] = {first}, n[1] = {count};
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, n, NULL);
    hid_t mem = H5Screate_simple(1, n, NULL);
    herr_t err = H5Dwrite(ds, type, mem, space, H5P_DEFAULT, data);
    H5Sclose(mem);
    H5Sclose(space);
    return err < 0 ? gpfq_fail(GPFQ_ERR_IO, "cannot write a table row") : GPFQ_OK;
}

static void now_text(char *buf, size_t size) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Room in the index of saved tasks for one more. sweep_results_put takes it before it writes:
 * a row on disk is then always in the index, and a task reported as not saved is not. */
static gpfq_status reserve(sweep_results *r) {
    if (r->n_rows < r->capacity) return GPFQ_OK;
    size_t cap = r->capacity ? r->capacity * 2 : 256;
    void *ids = realloc(r->ids, cap * sizeof *r->ids);
    if (ids) r->ids = ids;
    int *st = ids ? realloc(r->status, cap * sizeof(int)) : NULL;
    if (!ids || !st)
        return gpfq_fail(GPFQ_ERR_NOMEM, "%s: out of memory for the index of %zu saved tasks",
                         r->path, r->n_rows + 1);
    r->status = st;
    r->capacity = cap;
    return GPFQ_OK;
}

static gpfq_status remember(sweep_results *r, const char *id, const char *status) {
    GPFQ_TRY(reserve(r));
    snprintf(r->ids[r->n_rows], 17, "%s", id);
    r->status[r->n_rows] = strcmp(status, "done") == 0 ? 1 : 2;
    return GPFQ_OK;
}

static gpfq_status read_all(hid_t ds, hid_t type, size_t n, sweep_row *rows) {
    if (n == 0) return GPFQ_OK;
    if (H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0)
        return gpfq_fail(GPFQ_ERR_FORMAT, "the results table cannot be read");
    terminate_rows(rows, n);
    return GPFQ_OK;
}

static gpfq_status check_context(hid_t file, const char *path, const char *context) {
    char *format = NULL, *have = NULL;
    gpfq_status st = gpfq_h5_attr_string(file, "gpfq_format", &format);
    if (st == GPFQ_ERR_NOMEM) return gpfq_fail_context(st, "%s: ", path);
    if (st != GPFQ_OK || strcmp(format, "gpfq-results") != 0) {
        free(format);
        return gpfq_fail(GPFQ_ERR_FORMAT,
                         "%s: not a gpfq results file; choose another --output or remove it", path);
    }
    free(format);
    if (context) {
        st = gpfq_h5_attr_string(file, "context", &have);
        if (st == GPFQ_OK && strcmp(have, context) != 0)
            st = gpfq_fail(GPFQ_ERR_ARG,
                           "%s: holds results of a different job (another model, data set or "
                           "calibration: %s); use another --output, or --fresh to start over",
                           path, have);
        free(have);
    }
    return st;
}

gpfq_status sweep_make_dirs(const char *dir) {
    char buf[4096];
    if ((size_t)snprintf(buf, sizeof buf, "%s", dir) >= sizeof buf)
        return gpfq_fail(GPFQ_ERR_IO, "path too long: %s", dir);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        struct stat sb;
        if (stat(buf, &sb) != 0 && mkdir(buf, 0777) != 0 && errno != EEXIST)
            return gpfq_fail(GPFQ_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
        if (stat(buf, &sb) == 0 && !S_ISDIR(sb.st_mode))
            return gpfq_fail(GPFQ_ERR_IO, "%s is not a directory", buf);
        *p = saved;
        if (saved == '\0') break;
    }
    return GPFQ_OK;
}

gpfq_status sweep_results_check(const char *path, const char *context) {
    gpfq_h5_quiet();
    struct stat sb;
    if (stat(path, &sb) == 0) {
        hid_t file;
        gpfq_status st = gpfq_h5_open_read(path, &file);
        if (st != GPFQ_OK && S_ISREG(sb.st_mode)) {
            char why[1024];
            snprintf(why, sizeof why, "%s", gpfq_last_error());
            return gpfq_fail(st,
                             "%s; move it away, or use --fresh to start over (the old file is "
                             "kept)",
                             why);
        }
        GPFQ_TRY(st);
        st = check_context(file, path, context);
        H5Fclose(file);
        GPFQ_TRY(st);
        if (access(path, W_OK) != 0)
            return gpfq_fail(GPFQ_ERR_IO, "%s: results file is not writable: %s", path,
                             strerror(errno));
        return GPFQ_OK;
    }
    /* the nearest existing ancestor must be a writable directory; the missing
     * directories are created with the file, so try the first one now (and
     * remove it again) to find out whether that can work */
    char copy[4096], missing[4096] = "";
    snprintf(copy, sizeof copy, "%s", path);
    char *dir = dirname(copy);
    while (stat(dir, &sb) != 0 && strcmp(dir, "/") != 0 && strcmp(dir, ".") != 0) {
        snprintf(missing, sizeof missing, "%s", dir);
        dir = dirname(dir);
    }
    int is_dir = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!is_dir || access(dir, W_OK) != 0)
        return gpfq_fail(GPFQ_ERR_IO,
                         "%s: cannot create the results file there: %s is %s; choose another "
                         "output",
                         path, dir, !is_dir ? "not a directory" : "not writable");
    if (missing[0]) {
        /* EEXIST: another process (a rank of this sweep, another job writing beside it)
         * created it meanwhile; it is then not ours to remove */
        if (mkdir(missing, 0777) == 0)
            rmdir(missing);
        else if (errno != EEXIST)
            return gpfq_fail(GPFQ_ERR_IO, "%s: cannot create directory %s: %s", path, missing,
                             strerror(errno));
    }
    return GPFQ_OK;
}

/* Lowers r->n_layers past the trailing /layers rows whose task is not in
 * /results (a task's layers are written before its row). Reads the task ids of
 * the last rows only: one task has at most MAX_LAYER_ROWS layers. */
enum { MAX_LAYER_ROWS = 256 };
static gpfq_status drop_orphan_layers(sweep_results *r) {
    size_t tail = r->n_layers < MAX_LAYER_ROWS ? r->n_layers : MAX_LAYER_ROWS;
    if (tail == 0) return GPFQ_OK;
    char ids[MAX_LAYER_ROWS][17];
    memset(ids, 0, sizeof ids);
    hid_t str = string_type(17), mem_type = H5Tcreate(H5T_COMPOUND, 17);
    H5Tinsert(mem_type, "task_id", 0, str);
    hsize_t start[1] = {r->n_layers - tail}, count[1] = {tail};
    hid_t space = H5Dget_space(r->layers), mem = H5Screate_simple(1, count, NULL);
    herr_t err = H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
    if (err >= 0) err = H5Dread(r->layers, mem_type, mem, space, H5P_DEFAULT, ids);
    H5Sclose(mem), H5Sclose(space), H5Tclose(mem_type), H5Tclose(str);
    if (err < 0) return gpfq_fail(GPFQ_ERR_FORMAT, "%s: the layers table cannot be read", r->path);
    while (tail > 0) {
        ids[tail - 1][16] = '\0';
        if (sweep_results_status(r, ids[tail - 1]) != 0) break;
        tail--;
        r->n_layers--;
    }
    return GPFQ_OK;
}

static gpfq_status open_existing(sweep_results *r, const char *context) {
    gpfq_status st = GPFQ_OK;
    r->file = H5Fopen(r->path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (r->file < 0)
        return gpfq_fail(GPFQ_ERR_FORMAT,
                         "%s: the results file cannot be opened for writing (truncated, corrupt "
                         "or read-only); move it away or use --fresh",
                         r->path);
    GPFQ_TRY(check_context(r->file, r->path, context));
    r->results = H5Dopen2(r->file, "results", H5P_DEFAULT);
    r->layers = H5Dopen2(r->file, "layers", H5P_DEFAULT);
    if (r->results < 0 || r->layers < 0)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: /results or /layers is missing", r->path);
    size_t n = 0;
    GPFQ_TRY(table_rows(r->results, r->path, "results", sizeof(sweep_row), &n));
    GPFQ_TRY(table_rows(r->layers, r->path, "layers", sizeof(sweep_layer_row), &r->n_layers));
    sweep_row *rows = n ? calloc(n, sizeof *rows) : NULL; /* calloc: n * size must not wrap */
    if (n && !rows) return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory");
    st = read_all(r->results, r->row_type, n, rows);
    /* A write cut short (a full disk, a kill during a flush) can leave a grown
     * extent on disk without its rows: at the end of /results a row without a
     * status, at the end of /layers rows of a task that /results does not hold.
     * They are not counted, so that the next rows overwrite them. */
    while (st == GPFQ_OK && n > 0 && strcmp(rows[n - 1].status, "done") != 0 &&
           strcmp(rows[n - 1].status, "failed") != 0)
        n--;
    for (size_t i = 0; st == GPFQ_OK && i < n; i++) {
        if ((st = remember(r, rows[i].task_id, rows[i].status)) == GPFQ_OK) r->n_rows++;
    }
    free(rows);
    if (st == GPFQ_OK) st = drop_orphan_layers(r);
    return st;
}

static gpfq_status create_new(sweep_results *r, const char *context, const char *job_text) {
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", r->path);
    GPFQ_TRY(sweep_make_dirs(dirname(copy)));
    r->file = H5Fcreate(r->path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (r->file < 0) return gpfq_fail(GPFQ_ERR_IO, "%s: cannot create the results file", r->path);
    char created[32];
    now_text(created, sizeof created);
    int version = 1;
    GPFQ_TRY(gpfq_h5_write_attr_string(r->file, "gpfq_format", "gpfq-results"));
    GPFQ_TRY(gpfq_h5_write_attr_ints(r->file, "format_version", &version, 1));
    GPFQ_TRY(gpfq_h5_write_attr_string(r->file, "gpfq_version", GPFQ_VERSION));
    GPFQ_TRY(gpfq_h5_write_attr_string(r->file, "context", context));
    GPFQ_TRY(gpfq_h5_write_attr_string(r->file, "job", job_text));
    GPFQ_TRY(gpfq_h5_write_attr_string(r->file, "created", created));
    r->results = create_table(r->file, "results", r->row_type);
    r->layers = create_table(r->file, "layers", r->layer_type);
    if (r->results < 0 || r->layers < 0)
        return gpfq_fail(GPFQ_ERR_IO, "%s: cannot create the tables", r->path);
    if (H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0)
        return gpfq_fail(GPFQ_ERR_IO, "%s: cannot flush (disk full?)", r->path);
    return GPFQ_OK;
}

gpfq_status sweep_results_open(const char *path, const char *context, const char *job_text,
                               int fresh, sweep_results **out) {
    gpfq_h5_quiet();
    *out = NULL;
    sweep_results *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return gpfq_fail(GPFQ_ERR_NOMEM, "%s: out of memory opening the results", path);
    }
    r->file = r->results = r->layers = H5I_INVALID_HID;
    r->row_type = make_row_type();
    r->layer_type = make_layer_type();
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    gpfq_status st = GPFQ_OK;
    if (exists && fresh) {
        char moved[4200], stamp[32];
        now_text(stamp, sizeof stamp);
        snprintf(moved, sizeof moved, "%s.old-%s", path, stamp);
        /* rename() replaces silently: two --fresh in one second must keep both */
        for (int k = 1; k < 1000 && stat(moved, &sb) == 0; k++)
            snprintf(moved, sizeof moved, "%s.old-%s.%d", path, stamp, k);
        if (rename(path, moved) != 0)
            st = gpfq_fail(GPFQ_ERR_IO, "--fresh: cannot move %s aside: %s", path, strerror(errno));
        else
            fprintf(stderr, "gpfq sweep: --fresh: moved the old results to %s\n", moved);
        exists = 0;
    }
    if (st == GPFQ_OK) st = exists ? open_existing(r, context) : create_new(r, context, job_text);
    if (st != GPFQ_OK) {
        sweep_results_close(r);
        return st;
    }
    *out = r;
    return GPFQ_OK;
}

int sweep_results_status(const sweep_results *r, const char *task_id) {
    for (size_t i = 0; i < r->n_rows; i++)
        if (strcmp(r->ids[i], task_id) == 0) return r->status[i];
    return 0;
}

size_t sweep_results_rows(const sweep_results *r) {
    return r->n_rows;
}

/* After a failed write nothing more may reach the file, and it must still
 * close: HDF5 1.10 frees a file whose H5Fclose fails (its final flush cannot
 * be written) but keeps its id, and crashes on it at MPI_Finalize. So the
 * file's descriptor is pointed at an anonymous memory file, which takes what
 * HDF5 still writes; the file on disk stays as the last good flush left it. */
static void write_off(sweep_results *r) {
    void *handle = NULL;
    if (r->written_off || H5Fget_vfd_handle(r->file, H5P_DEFAULT, &handle) < 0 || !handle) return;
    int sink = memfd_create("gpfq-results-discarded", 0);
    if (sink < 0) return;
    r->written_off = dup2(sink, *(int *)handle) >= 0;
    close(sink);
}

/* H5Fflush writes a table's grown extent even when its new chunk could not be
 * written; H5Dflush stops at the chunk, and write_off() keeps the rest off the
 * disk, so a failed write leaves no row of zeros behind. */
static int flush_table(sweep_results *r, hid_t table) {
    return H5Dflush(table) >= 0 && H5Fflush(r->file, H5F_SCOPE_GLOBAL) >= 0;
}

/* Rank 0 writes through the descriptor it opened, so a results file removed
 * during the sweep would take every result with it at exit, silently. Before
 * each write: when the file open has no name any more, its content (as of the
 * last flush, a complete file) is copied back to the path and the sweep stops;
 * when the path names another file (moved away, replaced), the sweep stops. */
static gpfq_status check_attached(sweep_results *r) {
    void *handle = NULL;
    struct stat open_sb, path_sb;
    if (r->written_off || H5Fget_vfd_handle(r->file, H5P_DEFAULT, &handle) < 0 || !handle)
        return GPFQ_OK;
    const int fd = *(int *)handle;
    if (fstat(fd, &open_sb) != 0) return GPFQ_OK;
    const int named = stat(r->path, &path_sb) == 0;
    if (open_sb.st_nlink > 0 && (named ? path_sb.st_ino == open_sb.st_ino : errno != ENOENT))
        return GPFQ_OK;
    if (open_sb.st_nlink > 0)
        return gpfq_fail(GPFQ_ERR_IO,
                         "%s was moved or replaced during the sweep; the results are in the "
                         "moved file: put it back and rerun to resume",
                         r->path);
    int out = open(r->path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    char buf[1 << 16];
    ssize_t n = 0;
    for (off_t at = 0; out >= 0 && (n = pread(fd, buf, sizeof buf, at)) > 0; at += n)
        if (write(out, buf, (size_t)n) != n) n = -1;
    if (out >= 0 && (close(out) != 0 || n != 0)) n = -1;
    if (out < 0 || n != 0)
        return gpfq_fail(GPFQ_ERR_IO,
                         "%s was removed during the sweep and cannot be written back; the "
                         "results written to it are lost",
                         r->path);
    return gpfq_fail(GPFQ_ERR_IO,
                     "%s was removed during the sweep; the %zu results it held are written "
                     "back to it; rerun to resume",
                     r->path, r->n_rows);
}

gpfq_status sweep_results_put(sweep_results *r, const sweep_row *row, const sweep_layer_row *layers,
                              int n_layers) {
    if (check_attached(r) != GPFQ_OK) {
        write_off(r);
        return GPFQ_ERR_IO;
    }
    size_t index = r->n_rows;
    for (size_t i = 0; i < r->n_rows; i++)
        if (strcmp(r->ids[i], row->task_id) == 0) index = i;
    size_t n = r->n_rows;
    if (index == r->n_rows) GPFQ_TRY(reserve(r)); /* nothing written yet */
    errno = 0;
    /* The layers first, flushed, then the row that records the task: HDF5
     * writes a grown extent even when the chunk behind it could not be written
     * (a full disk), so a row written with its layers could record a task as
     * done whose layer rows are zeros. This way a recorded task has its layers
     * on disk, and layer rows left by a failed write are dropped on resume. */
    gpfq_status st = GPFQ_OK;
    int flushed = 1;
    if (n_layers > 0) {
        st = write_rows(r->layers, r->layer_type, r->n_layers, (size_t)n_layers, layers,
                        &r->n_layers);
        flushed = st != GPFQ_OK || flush_table(r, r->layers);
    }
    if (st == GPFQ_OK && flushed) {
        st = write_rows(r->results, r->row_type, index, 1, row, &n);
        flushed = st != GPFQ_OK || flush_table(r, r->results);
    }
    if (!flushed || st != GPFQ_OK) {
        char what[128];
        snprintf(what, sizeof what, "%s", flushed ? gpfq_last_error() : "cannot flush the results");
        st = gpfq_fail(GPFQ_ERR_IO, "%s: %s: %s", r->path, what,
                       errno ? strerror(errno) : "disk full?");
        write_off(r);
        return st;
    }
    if (index == r->n_rows) {
        GPFQ_TRY(remember(r, row->task_id, row->status)); /* has its room: cannot fail */
        r->n_rows++;
    } else {
        r->status[index] = strcmp(row->status, "done") == 0 ? 1 : 2;
    }
    return GPFQ_OK;
}

static gpfq_status replace_attr_string(hid_t obj, const char *name, const char *value) {
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    return gpfq_h5_write_attr_string(obj, name, value);
}

gpfq_status sweep_results_provenance(sweep_results *r, int ranks, const char *hosts,
                                     const char *command) {
    char started[32];
    now_text(started, sizeof started);
    if (H5Aexists(r->file, "ranks") > 0) H5Adelete(r->file, "ranks");
    GPFQ_TRY(gpfq_h5_write_attr_ints(r->file, "ranks", &ranks, 1));
    GPFQ_TRY(replace_attr_string(r->file, "hosts", hosts));
    GPFQ_TRY(replace_attr_string(r->file, "started", started));
    GPFQ_TRY(replace_attr_string(r->file, "command", command));
    GPFQ_TRY(replace_attr_string(r->file, "gpfq_version", GPFQ_VERSION));
    if (H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0)
        return gpfq_fail(GPFQ_ERR_IO, "%s: cannot flush (disk full?)", r->path);
    return GPFQ_OK;
}

gpfq_status sweep_results_close(sweep_results *r) {
    if (!r) return GPFQ_OK;
    gpfq_status st = GPFQ_OK;
    if (r->file >= 0 && (st = check_attached(r)) != GPFQ_OK) write_off(r);
    if (r->results >= 0) H5Dclose(r->results);
    if (r->layers >= 0) H5Dclose(r->layers);
    if (r->file >= 0 && H5Fclose(r->file) < 0 && st == GPFQ_OK)
        st = gpfq_fail(GPFQ_ERR_IO, "%s: closing the results file failed", r->path);
    H5Tclose(r->row_type);
    H5Tclose(r->layer_type);
    free(r->ids), free(r->status), free(r->path), free(r);
    return st;
}

static void terminate_layer_rows(void *rows, size_t n) {
    sweep_layer_row *r = rows;
    for (size_t i = 0; i < n; i++) TERMINATE(r[i].task_id), TERMINATE(r[i].name);
}

/* One of the file's tables, whole: /NAME as rows of row_size bytes in the
 * memory type make_type() gives, string fields terminated by `terminate`. */
static gpfq_status read_table(const char *path, const char *name, size_t row_size,
                              hid_t (*make_type)(void), void (*terminate)(void *, size_t),
                              void **rows, size_t *count) {
    *rows = NULL;
    *count = 0;
    hid_t file;
    GPFQ_TRY(gpfq_h5_open_read(path, &file));
    gpfq_status st = check_context(file, path, NULL);
    hid_t ds = st == GPFQ_OK ? H5Dopen2(file, name, H5P_DEFAULT) : H5I_INVALID_HID;
    if (st == GPFQ_OK && ds < 0) st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: /%s is missing", path, name);
    size_t n = 0;
    if (st == GPFQ_OK) st = table_rows(ds, path, name, row_size, &n);
    if (st == GPFQ_OK) {
        hid_t type = make_type();
        *rows = calloc(n ? n : 1, row_size);
        if (!*rows)
            st = gpfq_fail(GPFQ_ERR_NOMEM, "out of memory");
        else if (n && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, *rows) < 0)
            st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: the %s table cannot be read", path, name);
        if (st == GPFQ_OK) {
            terminate(*rows, n);
            *count = n;
        }
        H5Tclose(type);
    }
    if (ds >= 0) H5Dclose(ds);
    H5Fclose(file);
    if (st != GPFQ_OK) {
        free(*rows);
        *rows = NULL;
    }
    return st;
}

const sweep_row *sweep_best_row(const sweep_row *rows, size_t n, const char *method, int bits) {
    const sweep_row *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(rows[i].status, "done") && !strcmp(rows[i].method, method) &&
            rows[i].bits == bits && (!best || rows[i].quant_top1 > best->quant_top1))
            best = &rows[i];
    return best;
}

gpfq_status sweep_results_read(const char *path, sweep_row **rows, size_t *count) {
    return read_table(path, "results", sizeof(sweep_row), make_row_type, terminate_rows,
                      (void **)rows, count);
}

gpfq_status sweep_results_read_layers(const char *path, sweep_layer_row **rows, size_t *count) {
    return read_table(path, "layers", sizeof(sweep_layer_row), make_layer_type,
                      terminate_layer_rows, (void **)rows, count);
}

gpfq_status sweep_results_attr(const char *path, const char *name, char **value) {
    hid_t file;
    GPFQ_TRY(gpfq_h5_open_read(path, &file));
    gpfq_status st = check_context(file, path, NULL);
    if (st == GPFQ_OK && (st = gpfq_h5_attr_string(file, name, value)) != GPFQ_OK)
        st = gpfq_fail_context(st, "%s: ", path);
    H5Fclose(file);
    return st;
}

gpfq_status sweep_results_set_attr(sweep_results *r, const char *name, const char *value) {
    GPFQ_TRY(replace_attr_string(r->file, name, value));
    if (H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0)
        return gpfq_fail(GPFQ_ERR_IO, "%s: cannot flush (disk full?)", r->path);
    return GPFQ_OK;
}
