/*
 * The sweep runner (see sweep.h).
 *
 * Rank 0's main thread is the master: it talks MPI, writes the results file and
 * prints progress, and sleeps with a growing back-off while nothing arrives
 * (Open MPI's receive would otherwise spin a core). A worker thread on rank 0
 * computes tasks like every other rank; only the main thread calls MPI
 * (MPI_THREAD_FUNNELED) and HDF5.
 */
#include "sweep.h"

#include "../core/h5util.h"
#include "job.h"
#include "results.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void openblas_set_num_threads(int num_threads);

enum { TAG_READY = 1, TAG_RESULT = 2, TAG_TASK = 3, TAG_STOP = 4 };
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_BAD_INPUT = 2, EXIT_STOPPED = 3 };
enum { MAX_LAYERS = 256 };
/* a rank's share of what rank 0 gathers: its host's name, or its two memory figures */
enum { GATHER_SLOT = MPI_MAX_PROCESSOR_NAME };
_Static_assert(GATHER_SLOT >= 2 * sizeof(long), "a slot holds two memory figures");

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* What a worker sends back: the row and its layers, as one message. */
typedef struct {
    int task;
    int n_layers;
    int no_memory; /* failed for want of memory: not recorded, so that a rerun retries it */
    sweep_row row;
    sweep_layer_row layers[MAX_LAYERS];
} task_result;

/* Everything a rank needs to run tasks. */
typedef struct {
    sweep_job job;
    gpfq_model *model;
    gpfq_dataset train, test;
    sweep_task *tasks;
    int n_tasks;
    char context[1024];
    int rank, size;
    char host[MPI_MAX_PROCESSOR_NAME];
    double float_top1, float_top5, float_sparsity;
    /* the shared float inputs: per quantizable layer, an offset into `cache` */
    float *cache;
    size_t cache_offsets[MAX_LAYERS];
    int cache_ready;
    MPI_Win cache_win;
    MPI_Comm node_comm;
} sweep_state;

static double wall_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- running one task ---- */

static const float *cached_input(void *ctx, int layer, int node, size_t n) {
    const sweep_state *s = ctx;
    (void)node, (void)n;
    return s->cache_ready && layer < MAX_LAYERS ? s->cache + s->cache_offsets[layer] : NULL;
}

static void fill_config(const sweep_task *t, sweep_row *row) {
    const gpfq_quant_options *q = &t->q;
    snprintf(row->task_id, sizeof row->task_id, "%s", t->id);
    snprintf(row->method, sizeof row->method, "%s", q->method == GPFQ_METHOD_MSQ ? "msq" : "gpfq");
    row->bits = q->bits;
    row->mlp_scalar = q->mlp_scalar;
    row->cnn_scalar = q->cnn_scalar;
    row->mlp_percentile = q->mlp_percentile;
    row->cnn_percentile = q->cnn_percentile;
    snprintf(row->regularizer, sizeof row->regularizer, "%s",
             q->quantizer == GPFQ_QUANTIZER_L1   ? "L1"
             : q->quantizer == GPFQ_QUANTIZER_L0 ? "L0"
                                                 : "none");
    row->reg_lambda = q->reg_lambda;
    row->stochastic = q->quantizer == GPFQ_QUANTIZER_STOCHASTIC;
    row->seed = (int64_t)q->seed;
    row->calib_images = (int64_t)q->calib_images;
    snprintf(row->calib_mode, sizeof row->calib_mode, "%s",
             q->calib_mode == GPFQ_CALIB_SHARED ? "shared" : "per-layer");
    row->retain_rate = q->retain_rate;
}

/* Evaluates share `part` of `parts` of the test images (see gpfq_eval_options). The sweep
 * fails a model whose logits are not finite: its accuracy would be recorded as done and
 * meaningless. */
static gpfq_status evaluate_checked(const gpfq_model *model, const gpfq_dataset *data, size_t batch,
                                    size_t limit, int part, int parts, gpfq_eval_result *result,
                                    const char *what) {
    gpfq_eval_options o;
    gpfq_eval_options_default(&o);
    o.batch = batch;
    o.limit = limit;
    o.part = part;
    o.parts = parts;
    o.require_finite = 1;
    o.what = what;
    return gpfq_evaluate_with(model, data, &o, result);
}

static void run_task(sweep_state *s, int index, task_result *out) {
    const sweep_task *t = &s->tasks[index];
    memset(out, 0, sizeof *out);
    out->task = index;
    sweep_row *row = &out->row;
    fill_config(t, row);
    row->rank = s->rank;
    snprintf(row->host, sizeof row->host, "%.63s", s->host);
    row->float_top1 = s->float_top1;
    row->float_top5 = s->float_top5;
    row->float_sparsity = s->float_sparsity;
    row->quant_top1 = row->quant_top5 = row->quant_sparsity = NAN;
    const double start = gpfq_now();
    gpfq_quant_result res;
    gpfq_status st = gpfq_quantize_model_with(
        s->model, &s->train, &t->q, s->cache_ready ? cached_input : NULL, s, &res, NULL, NULL);
    row->quantize_seconds = gpfq_now() - start;
    if (st == GPFQ_OK) {
        gpfq_eval_result ev;
        double eval_start = gpfq_now();
        st = evaluate_checked(res.model, &s->test, s->job.eval_batch, s->job.eval_limit, 0, 1, &ev,
                              "the quantized model");
        row->eval_seconds = gpfq_now() - eval_start;
        if (st == GPFQ_OK) {
            row->quant_top1 = (double)ev.top1 / (double)ev.images;
            row->quant_top5 = (double)ev.top5 / (double)ev.images;
            row->quant_sparsity = gpfq_model_sparsity(res.model);
            row->codes_hash = gpfq_codes_hash(&res);
        }
        for (int l = 0; l < res.n_layers && l < MAX_LAYERS; l++) {
            const gpfq_layer_report *r = &res.layers[l];
            sweep_layer_row *lr = &out->layers[out->n_layers++];
            snprintf(lr->task_id, sizeof lr->task_id, "%s", t->id);
            lr->layer = l;
            snprintf(lr->name, sizeof lr->name, "%.63s", r->name);
            lr->rows = (int64_t)r->rows;
            lr->cols = (int64_t)r->cols;
            lr->samples = (int64_t)r->samples;
            lr->delta = r->delta;
            lr->error = r->error;
            lr->relative_error = r->relative_error;
            lr->sparsity = r->sparsity;
            lr->seconds = r->seconds;
        }
        gpfq_quant_result_free(&res);
    }
    row->total_seconds = gpfq_now() - start;
    row->finished_at = wall_clock();
    snprintf(row->status, sizeof row->status, "%s", st == GPFQ_OK ? "done" : "failed");
    if (st != GPFQ_OK) {
        snprintf(row->message, sizeof row->message, "%s", gpfq_last_error());
        out->n_layers = 0;
    }
    out->no_memory = st == GPFQ_ERR_NOMEM;
}

/* ---- rank 0's local worker thread ---- */

typedef struct {
    sweep_state *s;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int task; /* assigned task, -1 none */
    int busy;
    int has_result;
    int quit;
    task_result result;
} local_worker;

static void *local_worker_main(void *arg) {
    local_worker *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->task < 0 && !w->quit) pthread_cond_wait(&w->wake, &w->lock);
        if (w->quit) break;
        int task = w->task;
        w->task = -1;
        pthread_mutex_unlock(&w->lock);
        task_result r; /* about 40 kB: on the thread's stack, where it cannot fail */
        run_task(w->s, task, &r);
        pthread_mutex_lock(&w->lock);
        w->result = r;
        w->has_result = 1;
        w->busy = 0;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ---- progress ---- */

typedef struct {
    int total, done, failed, unsaved, no_memory, tty;
    double start;
    double last_draw;
} progress;

static void fmt_duration(double seconds, char *buf, size_t size) {
    if (!(seconds >= 0) || seconds > 1e7)
        snprintf(buf, size, "?");
    else if (seconds < 60)
        snprintf(buf, size, "%.0fs", seconds);
    else if (seconds < 3600)
        snprintf(buf, size, "%dm%02ds", (int)seconds / 60, (int)seconds % 60);
    else
        snprintf(buf, size, "%dh%02dm", (int)seconds / 3600, ((int)seconds % 3600) / 60);
}

static void report_result(progress *p, const task_result *r) {
    const sweep_row *row = &r->row;
    const char *unrecorded = r->no_memory ? "; not recorded: a rerun retries it" : "";
    if (strcmp(row->status, "done") == 0)
        p->done++;
    else
        p->failed++;
    p->no_memory += r->no_memory;
    int finished = p->done + p->failed;
    double elapsed = gpfq_now() - p->start;
    double rate = elapsed > 0 ? finished / elapsed * 60.0 : 0;
    char eta[32];
    fmt_duration(rate > 0 ? (p->total - finished) / rate * 60.0 : -1, eta, sizeof eta);
    if (p->tty) {
        int width = 30, filled = p->total ? width * finished / p->total : width;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r[%s] %d/%d  failed %d  %.1f tasks/min  ETA %s   ", bar, finished,
                p->total, p->failed, rate, eta);
        if (finished == p->total) fputc('\n', stderr);
        if (strcmp(row->status, "done") != 0)
            fprintf(stderr, "\n  task %s failed: %s%s\n", row->task_id, row->message, unrecorded);
        fflush(stderr);
        return;
    }
    if (strcmp(row->status, "done") == 0)
        printf("[%d/%d] %s %-4s b%d s%g %s%s -> top-1 %.2f%% top-5 %.2f%% (%.1f s, rank %d)  "
               "%.1f tasks/min, ETA %s\n",
               finished, p->total, row->task_id, row->method, row->bits, row->mlp_scalar,
               row->stochastic ? "stochastic" : row->regularizer, row->reg_lambda > 0 ? "" : "",
               100 * row->quant_top1, 100 * row->quant_top5, row->total_seconds, row->rank, rate,
               eta);
    else
        printf("[%d/%d] %s FAILED: %s (rank %d)%s\n", finished, p->total, row->task_id,
               row->message, row->rank, unrecorded);
    fflush(stdout);
}

/* ---- set-up ---- */

static int all_agree(int ok) {
    int all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all;
}

static gpfq_status load_job(sweep_state *s, const sweep_args *a) {
    GPFQ_TRY(sweep_job_load(a->job_path, &s->job));
    for (int i = 0; i < a->n_overrides; i++) {
        char key[64];
        const char *eq = strchr(a->overrides[i], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - a->overrides[i]), a->overrides[i]);
        GPFQ_TRY(sweep_job_override(&s->job, key, eq + 1));
    }
    if (a->output) {
        free(s->job.output);
        if (!(s->job.output = strdup(a->output)))
            return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the output's name");
    }
    char path[4096];
    if (gpfq_model_resolve(s->job.model, s->job.dataset, path, sizeof path) != GPFQ_OK)
        return gpfq_fail_context(GPFQ_ERR_ARG, "%s: model: ", a->job_path);
    if (!(s->job.model_path = strdup(path)))
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the model's path");
    gpfq_status st = gpfq_model_load(path, &s->model);
    if (st != GPFQ_OK) return gpfq_fail_context(st, "%s: model: ", a->job_path);
    GPFQ_TRY(sweep_job_context(&s->job, s->context, sizeof s->context));
    GPFQ_TRY(sweep_job_tasks(&s->job, s->context, &s->tasks, &s->n_tasks));
    if (a->shard_count > 0) {
        /* by the task id's hash, so a task stays in its shard when the grid grows */
        int kept = 0;
        for (int i = 0; i < s->n_tasks; i++)
            if (strtoull(s->tasks[i].id, NULL, 16) % (uint64_t)a->shard_count ==
                (uint64_t)a->shard_index)
                s->tasks[kept++] = s->tasks[i];
        s->n_tasks = kept;
        if (!a->output) {
            char sharded[4200];
            const char *dot = strrchr(s->job.output, '.');
            int stem =
                dot && !strchr(dot, '/') ? (int)(dot - s->job.output) : (int)strlen(s->job.output);
            snprintf(sharded, sizeof sharded, "%.*s.shard-%d-of-%d%s", stem, s->job.output,
                     a->shard_index, a->shard_count, s->job.output + stem);
            free(s->job.output);
            if (!(s->job.output = strdup(sharded)))
                return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the output's name");
        }
    }
    return GPFQ_OK;
}

static int needs_gpfq(const sweep_state *s, const int *pending, int n_pending) {
    for (int i = 0; i < n_pending; i++)
        if (s->tasks[pending[i]].q.method == GPFQ_METHOD_GPFQ) return 1;
    return 0;
}

static int needs_gpfq_any(const sweep_state *s) {
    for (int i = 0; i < s->n_tasks; i++)
        if (s->tasks[i].q.method == GPFQ_METHOD_GPFQ) return 1;
    return 0;
}

static gpfq_status load_data(sweep_state *s, int need_train) {
    GPFQ_TRY(gpfq_dataset_open(s->job.dataset, s->job.data_dir, GPFQ_SPLIT_TEST, &s->test));
    GPFQ_TRY(gpfq_eval_check(s->model, &s->test));
    if (need_train)
        GPFQ_TRY(gpfq_dataset_open(s->job.dataset, s->job.data_dir, GPFQ_SPLIT_TRAIN, &s->train));
    return GPFQ_OK;
}

/* ---- the shared float-activation cache ---- */

typedef struct {
    sweep_state *s;
    size_t offset;
} cache_fill;

static void cache_sink(void *ctx, int layer, int node, const float *data, size_t n) {
    cache_fill *f = ctx;
    size_t floats = n * gpfq_shape_size(f->s->model->nodes[node].in_shape);
    f->s->cache_offsets[layer] = f->offset;
    memcpy(f->s->cache + f->offset, data, floats * sizeof(float));
    f->offset += floats;
}

static size_t cache_floats(const sweep_state *s, size_t *offsets, int *n_layers) {
    size_t n = gpfq_calib_count(&s->job.base, &s->train), total = 0;
    int layer = 0;
    for (int i = 0; i < s->model->n_nodes && layer < MAX_LAYERS; i++) {
        if (!gpfq_node_is_quantizable(&s->model->nodes[i])) continue;
        offsets[layer++] = total;
        total += n * gpfq_shape_size(s->model->nodes[i].in_shape);
    }
    *n_layers = layer;
    return total;
}

/* Loads the cache file into the window when it matches the job; returns 1 when
 * loaded, 0 when absent, -1 (error set) when stale or unreadable. */
static int cache_file_load(sweep_state *s, size_t floats) {
    struct stat sb;
    if (!s->job.cache || stat(s->job.cache, &sb) != 0) return 0;
    hid_t file;
    if (gpfq_h5_open_read(s->job.cache, &file) != GPFQ_OK) return -1;
    char *key = NULL;
    int rc = -1;
    if (gpfq_h5_attr_string(file, "context", &key) != GPFQ_OK || strcmp(key, s->context) != 0) {
        gpfq_fail(GPFQ_ERR_ARG,
                  "cache %s is stale: it was made for another model, data set or calibration "
                  "(%s); delete it or point cache: elsewhere",
                  s->job.cache, key ? key : "no key");
    } else {
        hid_t ds = H5Dopen2(file, "activations", H5P_DEFAULT);
        hid_t space = ds >= 0 ? H5Dget_space(ds) : H5I_INVALID_HID;
        hssize_t have = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
        if (have != (hssize_t)floats)
            gpfq_fail(GPFQ_ERR_FORMAT, "cache %s holds %lld values, expected %zu; delete it",
                      s->job.cache, (long long)have, floats);
        else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->cache) < 0)
            gpfq_fail(GPFQ_ERR_FORMAT, "cache %s cannot be read; delete it", s->job.cache);
        else
            rc = 1;
        if (space >= 0) H5Sclose(space);
        if (ds >= 0) H5Dclose(ds);
    }
    free(key);
    H5Fclose(file);
    return rc;
}

static gpfq_status cache_file_save(const sweep_state *s, size_t floats) {
    char tmp[4200], dir[4200];
    snprintf(dir, sizeof dir, "%s", s->job.cache);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        GPFQ_TRY(sweep_make_dirs(dir));
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", s->job.cache);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return gpfq_fail(GPFQ_ERR_IO, "cannot create the cache %s", tmp);
    hsize_t dims[1] = {floats};
    gpfq_status st = gpfq_h5_write_attr_string(file, "context", s->context);
    if (st == GPFQ_OK) st = gpfq_h5_write_floats(file, "activations", s->cache, 1, dims);
    if (H5Fclose(file) < 0 && st == GPFQ_OK) st = gpfq_fail(GPFQ_ERR_IO, "writing %s failed", tmp);
    if (st == GPFQ_OK && rename(tmp, s->job.cache) != 0)
        st = gpfq_fail(GPFQ_ERR_IO, "cannot rename %s: %s", tmp, strerror(errno));
    if (st != GPFQ_OK) remove(tmp);
    return st;
}

/* Node leaders compute (or load) the float inputs into a shared window; every
 * rank of the node then reads them. Returns 0 on success on every rank. */
static int build_cache(sweep_state *s, int verbose) {
    int node_rank = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &s->node_comm);
    MPI_Comm_rank(s->node_comm, &node_rank);
    int n_layers = 0;
    size_t floats = cache_floats(s, s->cache_offsets, &n_layers);
    MPI_Aint bytes = node_rank == 0 ? (MPI_Aint)(floats * sizeof(float)) : 0;
    void *base = NULL;
    int rc = MPI_Win_allocate_shared(bytes, sizeof(float), MPI_INFO_NULL, s->node_comm, &base,
                                     &s->cache_win);
    int ok = rc == MPI_SUCCESS;
    if (ok && node_rank != 0) {
        MPI_Aint size;
        int unit;
        MPI_Win_shared_query(s->cache_win, 0, &size, &unit, &base);
    }
    s->cache = base;
    const char *source = "computed";
    double start = gpfq_now();
    if (ok && node_rank == 0) {
        int loaded = cache_file_load(s, floats);
        if (loaded < 0)
            ok = 0;
        else if (loaded)
            source = "loaded from the cache file";
        else {
            cache_fill fill = {s, 0};
            ok = gpfq_float_inputs(s->model, &s->train, &s->job.base, cache_sink, &fill) == GPFQ_OK;
            if (ok && s->job.cache && s->rank == 0) ok = cache_file_save(s, floats) == GPFQ_OK;
            if (ok && s->job.cache) source = "computed and saved to the cache file";
        }
    }
    ok = all_agree(ok);
    MPI_Barrier(s->node_comm);
    s->cache_ready = ok;
    if (ok && verbose)
        printf("cache     float inputs of %d layers, %.1f MB per node, %s in %.2f s\n", n_layers,
               floats * 4.0 / 1e6, source, gpfq_now() - start);
    return ok ? 0 : -1;
}

/* ---- master and workers ---- */

/* Writes a result and reports it. After a failed write (a full disk, a file made
 * immutable; *write_failed 1) or no memory to write with (2) nothing more is written, and
 * results that still arrive are reported as not saved: no progress line claims a result the
 * file lacks. */
static void save_result(sweep_results *res, progress *p, const task_result *r, int *write_failed) {
    const gpfq_status st = *write_failed || r->no_memory
                               ? GPFQ_OK
                               : sweep_results_put(res, &r->row, r->layers, r->n_layers);
    if (st != GPFQ_OK) {
        *write_failed = st == GPFQ_ERR_NOMEM ? 2 : 1;
        fprintf(stderr, "gpfq sweep: error: %s\n", gpfq_last_error());
    }
    if (!*write_failed) {
        report_result(p, r);
        return;
    }
    p->unsaved++;
    fprintf(stderr, "gpfq sweep: task %s finished, but its result is not saved\n", r->row.task_id);
}

static void dispatch_local(local_worker *w, int task) {
    pthread_mutex_lock(&w->lock);
    w->task = task;
    w->busy = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

static int master_loop(sweep_state *s, sweep_results *res, const int *pending, int n_pending,
                       double grace, int *write_failed, int *no_memory) {
    task_result msg_room, *msg = &msg_room;
    local_worker w = {.s = s, .task = -1};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.wake, NULL);
    pthread_t thread;
    /* Without a thread for rank 0's worker the other ranks take every task; alone, rank 0 runs
     * them itself between its looks at signals and results (a signal then waits for the running
     * task: there is no grace period to cut it short). */
    const int rc = pthread_create(&thread, NULL, local_worker_main, &w);
    const int local_thread = rc == 0, local_inline = rc != 0 && s->size == 1;
    if (rc != 0)
        fprintf(stderr, "gpfq sweep: warning: cannot start rank 0's worker thread (%s); %s\n",
                strerror(rc),
                local_inline ? "rank 0 runs the tasks itself" : "the other ranks run the tasks");
    progress p = {.total = n_pending, .tty = isatty(2), .start = gpfq_now()};
    int next = 0, remote_busy = 0, remote_alive = s->size - 1;
    double stop_at = 0, backoff = 0.001;
    int stopping = 0;
    for (;;) {
        if (stop_signal && !stopping) {
            stopping = 1;
            stop_at = gpfq_now() + grace;
            fprintf(stderr,
                    "\ngpfq sweep: received signal %d: no new tasks; waiting up to %.0f s for "
                    "the running ones\n",
                    (int)stop_signal, grace);
        }
        int activity = 0;
        /* the local worker */
        pthread_mutex_lock(&w.lock);
        int local_done = w.has_result;
        if (local_done) {
            *msg = w.result;
            w.has_result = 0;
        }
        int local_busy = w.busy;
        pthread_mutex_unlock(&w.lock);
        if (local_done) {
            activity = 1;
            save_result(res, &p, msg, write_failed);
        }
        if (!local_busy && !stopping && !*write_failed && next < n_pending) {
            if (local_thread) {
                dispatch_local(&w, pending[next++]);
                local_busy = 1;
                activity = 1;
            } else if (local_inline) {
                run_task(s, pending[next++], msg);
                save_result(res, &p, msg, write_failed);
                continue; /* a signal during the task is seen before the loop can end */
            }
        }
        /* remote workers */
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status);
        if (flag) {
            activity = 1;
            int source = status.MPI_SOURCE;
            MPI_Recv(msg, (int)sizeof *msg, MPI_BYTE, source, status.MPI_TAG, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
            if (status.MPI_TAG == TAG_RESULT) {
                remote_busy--;
                save_result(res, &p, msg, write_failed);
            }
            if (!stopping && !*write_failed && next < n_pending) {
                int task = pending[next++];
                MPI_Send(&task, 1, MPI_INT, source, TAG_TASK, MPI_COMM_WORLD);
                remote_busy++;
            } else {
                int none = -1;
                MPI_Send(&none, 1, MPI_INT, source, TAG_STOP, MPI_COMM_WORLD);
                remote_alive--;
            }
        }
        const int queue_over = next >= n_pending || stopping || *write_failed;
        if (!local_busy && remote_alive == 0 && remote_busy <= 0 && queue_over) {
            if (stopping) fprintf(stderr, "gpfq sweep: no task was left running; none is lost\n");
            break;
        }
        if (stopping && gpfq_now() > stop_at) {
            fprintf(stderr, "gpfq sweep: grace period over; %d task(s) still running are lost\n",
                    remote_busy + local_busy);
            break;
        }
        if (activity)
            backoff = 0.001;
        else {
            struct timespec ts = {0, (long)(backoff * 1e9)};
            nanosleep(&ts, NULL);
            backoff = backoff * 2 > 0.05 ? 0.05 : backoff * 2;
        }
    }
    pthread_mutex_lock(&w.lock);
    w.quit = 1;
    int abandoned = w.busy;
    pthread_cond_signal(&w.wake);
    pthread_mutex_unlock(&w.lock);
    if (local_thread && !abandoned) pthread_join(thread, NULL);
    double elapsed = gpfq_now() - p.start;
    char took[32];
    fmt_duration(elapsed, took, sizeof took);
    char unsaved[96] = "";
    if (p.no_memory)
        snprintf(unsaved, sizeof unsaved, " (%d of them out of memory, not recorded)", p.no_memory);
    if (p.unsaved)
        snprintf(unsaved + strlen(unsaved), sizeof unsaved - strlen(unsaved), ", %d not saved",
                 p.unsaved);
    printf("finished  %d done, %d failed%s of %d pending tasks in %s (%.1f tasks/min)\n", p.done,
           p.failed, unsaved, n_pending, took,
           elapsed > 0 ? (p.done + p.failed) / elapsed * 60 : 0);
    *no_memory = p.no_memory;
    return stopping ? (abandoned || remote_busy > 0 ? -2 : -1) : 0;
}

static void worker_loop(sweep_state *s) {
    task_result r;
    int task = -1;
    MPI_Send(&task, 1, MPI_INT, 0, TAG_READY, MPI_COMM_WORLD);
    for (;;) {
        MPI_Status status;
        /* workers block here between tasks only for as long as rank 0 takes to
         * answer, which it does at once */
        MPI_Recv(&task, 1, MPI_INT, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &status);
        if (status.MPI_TAG == TAG_STOP || task < 0) break;
        run_task(s, task, &r);
        MPI_Send(&r, (int)sizeof r, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
    }
}

/* ---- memory ---- */

/* Peak RSS (kB) and current PSS (kB, shared pages split among the processes
 * mapping them: the shared cache counts once per node). */
static void memory_usage(long *peak_rss, long *pss) {
    *peak_rss = *pss = -1;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", peak_rss) == 1) break;
    if (f) fclose(f);
    f = fopen("/proc/self/smaps_rollup", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %ld kB", pss) == 1) break;
    if (f) fclose(f);
}

/* all: rank 0's room for every rank's two figures (NULL on the others) */
static void report_memory(const sweep_state *s, long *all) {
    long mine[2];
    memory_usage(&mine[0], &mine[1]);
    MPI_Gather(mine, 2, MPI_LONG, all, 2, MPI_LONG, 0, MPI_COMM_WORLD);
    if (s->rank != 0) return;
    printf("memory    peak RSS / PSS per rank (MB):");
    for (int r = 0; r < s->size; r++)
        printf(" r%d %.0f/%.0f", r, all[2 * r] / 1024.0, all[2 * r + 1] / 1024.0);
    printf("\n");
}

/* ---- summary ---- */

static void print_summary(const char *path) {
    sweep_row *rows = NULL;
    size_t n = 0;
    if (sweep_results_read(path, &rows, &n) != GPFQ_OK || n == 0) {
        free(rows);
        return;
    }
    printf("\nbest quantized top-1 per method and bits (%s):\n", path);
    printf("  %-6s %4s %10s %10s %8s %9s\n", "method", "bits", "scalar", "top-1", "drop", "top-5");
    for (int method = 0; method < 2; method++) {
        const char *name = method ? "msq" : "gpfq";
        for (int bits = 1; bits <= 16; bits++) {
            const sweep_row *best = sweep_best_row(rows, n, name, bits);
            if (best)
                printf("  %-6s %4d %10g %9.2f%% %+7.2f %8.2f%%\n", name, bits, best->mlp_scalar,
                       100 * best->quant_top1, 100 * (best->quant_top1 - best->float_top1),
                       100 * best->quant_top5);
        }
    }
    printf("  float top-1 %.2f%%, top-5 %.2f%%\n", 100 * rows[0].float_top1,
           100 * rows[0].float_top5);
    free(rows);
}

static void dry_run(const sweep_state *s) {
    printf("%d tasks (model %s, %s, output %s)\n", s->n_tasks, s->job.model_path, s->job.dataset,
           s->job.output);
    printf("%-16s %-5s %4s %10s %10s %6s %-10s %8s %6s\n", "task", "method", "bits", "mlp_scalar",
           "cnn_scalar", "pct", "quantizer", "lambda", "seed");
    for (int i = 0; i < s->n_tasks; i++) {
        const gpfq_quant_options *q = &s->tasks[i].q;
        const char *quantizer = q->quantizer == GPFQ_QUANTIZER_L1           ? "L1"
                                : q->quantizer == GPFQ_QUANTIZER_L0         ? "L0"
                                : q->quantizer == GPFQ_QUANTIZER_STOCHASTIC ? "stochastic"
                                                                            : "nearest";
        printf("%-16s %-5s %4d %10g %10g %6g %-10s %8g %6llu\n", s->tasks[i].id,
               q->method == GPFQ_METHOD_MSQ ? "msq" : "gpfq", q->bits, q->mlp_scalar, q->cnn_scalar,
               q->mlp_percentile, quantizer, q->reg_lambda, (unsigned long long)q->seed);
    }
}

static void free_state(sweep_state *s) {
    gpfq_dataset_free(&s->train);
    gpfq_dataset_free(&s->test);
    gpfq_model_free(s->model);
    free(s->tasks);
    sweep_job_free(&s->job);
}

/* The output check. --fresh moves the file aside (kept) and starts over, so it
 * takes a results file of another job and a file HDF5 cannot open (one cut
 * short, as a full disk or a failed copy leaves it): the plain check refuses
 * both, telling the user to use --fresh. */
static gpfq_status check_output(const char *path, const char *context, int fresh) {
    struct stat sb;
    hid_t file;
    if (!fresh || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return sweep_results_check(path, context);
    if (gpfq_h5_open_read(path, &file) != GPFQ_OK) return GPFQ_OK;
    H5Fclose(file);
    return sweep_results_check(path, NULL); /* still refuses what is not a results file */
}

/* Prints the error once (rank 0) and makes every rank agree on failure. */
static int fail_everywhere(sweep_state *s, int ok, int code) {
    if (!ok && s->rank == 0) fprintf(stderr, "gpfq sweep: error: %s\n", gpfq_last_error());
    if (!all_agree(ok)) return code;
    return 0;
}

/* The same for a failure any rank may have met alone (out of memory): each failing rank says
 * why. */
static int fail_anywhere(sweep_state *s, int ok, int code) {
    if (!ok && s->rank != 0)
        fprintf(stderr, "gpfq sweep: rank %d on %s: error: %s\n", s->rank, s->host,
                gpfq_last_error());
    return fail_everywhere(s, ok, code);
}

int sweep_main(const sweep_args *a) {
    int provided = 0;
    /* Open MPI's ob1 messaging unless the user picked one (mpirun --mca pml ..., or the
     * environment): the sweep sends a few small messages per task, and the default's
     * UCX start-up alone took 0.2 s of every run on a single node (docs/sweep.md) */
    setenv("OMPI_MCA_pml", "ob1", 0);
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "gpfq sweep: error: MPI_Init failed\n");
        return EXIT_ERROR;
    }
    sweep_state state = {0}, *s = &state;
    MPI_Comm_rank(MPI_COMM_WORLD, &s->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &s->size);
    int len = 0;
    MPI_Get_processor_name(s->host, &len);
    install_signals();
    gpfq_h5_quiet();
    openblas_set_num_threads(a->threads > 0 ? a->threads : 1);
    int code = EXIT_OK;

    /* rank 0 validates everything first; the others follow only if it passed */
    int ok = s->rank == 0 ? load_job(s, a) == GPFQ_OK : 1;
    if ((code = fail_everywhere(s, ok, EXIT_BAD_INPUT))) goto out;
    if (s->rank != 0 && load_job(s, a) != GPFQ_OK) {
        fprintf(stderr, "gpfq sweep: rank %d on %s: error: %s\n", s->rank, s->host,
                gpfq_last_error());
        ok = 0;
    }
    if ((code = fail_everywhere(s, ok, EXIT_BAD_INPUT))) goto out;
    if (a->dry_run) {
        if (s->rank == 0) dry_run(s);
        goto out;
    }
    if (s->n_tasks == 0) { /* only an empty shard gets here: nothing to do is success */
        if (s->rank == 0)
            printf("sweep     shard %d/%d of %s has no tasks (the grid is smaller than the "
                   "shards); nothing to do\n",
                   a->shard_index, a->shard_count, a->job_path);
        goto out;
    }
    ok = s->rank == 0 ? check_output(s->job.output, s->context, a->fresh) == GPFQ_OK : 1;
    if ((code = fail_everywhere(s, ok, EXIT_BAD_INPUT))) goto out;
    /* the data, before the results file is touched, every rank at once (decompressing
     * takes a fraction of a second); the training split only when a GPFQ task exists.
     * An error is printed by rank 0, or by the others only when rank 0 had none. */
    const int any_gpfq = needs_gpfq_any(s);
    ok = load_data(s, any_gpfq) == GPFQ_OK;
    int ok0 = ok;
    MPI_Bcast(&ok0, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok && s->rank != 0 && ok0)
        fprintf(stderr, "gpfq sweep: rank %d on %s: error: %s\n", s->rank, s->host,
                gpfq_last_error());
    if ((code = fail_everywhere(s, ok, EXIT_ERROR))) goto out;
    if (s->rank == 0 && any_gpfq &&
        gpfq_calib_count(&s->job.base, &s->train) < s->job.base.calib_images)
        fprintf(stderr,
                "gpfq sweep: warning: %s: images %zu is more than the %zu training images; all "
                "of them calibrate\n",
                a->job_path, s->job.base.calib_images, gpfq_calib_count(&s->job.base, &s->train));

    /* what is left to do: decided from the results table. The run's room is taken first, so
     * that no rank runs out of it once the file is open: the pending tasks' list, and rank 0's
     * for what the ranks gather (their hosts, then their memory figures). */
    sweep_results *res = NULL;
    int *pending = malloc(sizeof(int) * (size_t)s->n_tasks), n_pending = 0, skipped_failed = 0;
    char *gathered = s->rank == 0 ? malloc((size_t)s->size * GATHER_SLOT) : NULL;
    ok = pending && (gathered || s->rank != 0);
    if (!ok)
        gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the list of %d tasks and the ranks' reports",
                  s->n_tasks);
    if ((code = fail_anywhere(s, ok, EXIT_ERROR))) goto out_res;
    if (s->rank == 0) {
        ok = sweep_results_open(s->job.output, s->context, s->job.text, a->fresh, &res) == GPFQ_OK;
        for (int i = 0; ok && i < s->n_tasks; i++) {
            int st = sweep_results_status(res, s->tasks[i].id);
            if (st == 2 && !a->retry_failed) skipped_failed++;
            if (st == 0 || (st == 2 && a->retry_failed)) pending[n_pending++] = i;
        }
    }
    if ((code = fail_everywhere(s, ok, EXIT_ERROR))) goto out_res;
    MPI_Bcast(&n_pending, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(pending, n_pending, MPI_INT, 0, MPI_COMM_WORLD);
    if (s->rank == 0) {
        printf("sweep     %s: %d tasks, %d already done, %d to run on %d rank(s)%s\n", a->job_path,
               s->n_tasks, s->n_tasks - n_pending - skipped_failed, n_pending, s->size,
               a->retry_failed ? " (retrying failed ones)" : "");
        if (skipped_failed)
            printf("          %d failed task(s) are kept as failed; --retry-failed reruns them\n",
                   skipped_failed);
        printf("results   %s\n", s->job.output);
        fflush(stdout);
    }
    if (n_pending == 0) {
        if (s->rank == 0) print_summary(s->job.output);
        goto out_res;
    }
    const int gpfq = needs_gpfq(s, pending, n_pending);

    /* float accuracy once, shared with every row: each rank evaluates a share of the test
     * images and the counts are summed */
    {
        gpfq_eval_result ev = {0};
        const double start = gpfq_now();
        gpfq_status st = evaluate_checked(s->model, &s->test, s->job.eval_batch, s->job.eval_limit,
                                          s->rank, s->size, &ev, "the float model");
        /* per rank: failed, outputs not finite; then images, top-1 and top-5 hits */
        int flags[2] = {st != GPFQ_OK && st != GPFQ_ERR_NUMERIC, st == GPFQ_ERR_NUMERIC}, any[2];
        unsigned long long counts[3] = {ev.images, ev.top1, ev.top5}, sums[3];
        MPI_Allreduce(flags, any, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(counts, sums, 3, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        /* the lowest rank with an error explains it */
        int mine = st != GPFQ_OK ? s->rank : s->size, first;
        MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (any[0]) {
            if (s->rank == first) fprintf(stderr, "gpfq sweep: error: %s\n", gpfq_last_error());
            code = EXIT_ERROR;
            goto out_res;
        }
        s->float_sparsity = gpfq_model_sparsity(s->model);
        if (any[1]) { /* the tasks will fail and say why */
            if (s->rank == first)
                fprintf(stderr, "gpfq sweep: warning: %s; its accuracy is recorded as NaN\n",
                        gpfq_last_error());
            s->float_top1 = s->float_top5 = NAN;
        } else {
            s->float_top1 = (double)sums[1] / (double)sums[0];
            s->float_top5 = (double)sums[2] / (double)sums[0];
            if (s->rank == 0)
                printf("float     top-1 %.2f%%, top-5 %.2f%% (%llu images on %d rank(s), %.2f s)\n",
                       100 * s->float_top1, 100 * s->float_top5, sums[0], s->size,
                       gpfq_now() - start);
        }
    }

    if (gpfq && !a->no_shared_cache && build_cache(s, s->rank == 0) != 0) {
        if (s->rank == 0) fprintf(stderr, "gpfq sweep: error: %s\n", gpfq_last_error());
        code = EXIT_ERROR;
        goto out_res;
    }
    if (s->rank == 0) {
        char hosts[4096] = "";
        MPI_Gather(s->host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, gathered, MPI_MAX_PROCESSOR_NAME,
                   MPI_CHAR, 0, MPI_COMM_WORLD);
        for (int r = 0; r < s->size && strlen(hosts) < sizeof hosts - 200; r++)
            snprintf(hosts + strlen(hosts), sizeof hosts - strlen(hosts), "%s%s", r ? "," : "",
                     gathered + (size_t)r * GATHER_SLOT);
        sweep_results_provenance(res, s->size, hosts, a->command);
        int write_failed = 0, no_memory = 0;
        int stopped = master_loop(s, res, pending, n_pending, a->grace, &write_failed, &no_memory);
        if (write_failed == 2) {
            fprintf(stderr,
                    "gpfq sweep: stopped early: no result after that error is saved. Once "
                    "memory allows (fewer ranks on a node, or a node with more), rerun the same "
                    "command to resume.\n");
            code = EXIT_ERROR;
        } else if (write_failed) {
            fprintf(stderr,
                    "gpfq sweep: stopped early: no result after that error is saved. Once "
                    "%s can be written (make room, or copy it somewhere writable and use "
                    "--output), rerun to resume.\n",
                    s->job.output);
            code = EXIT_ERROR;
        } else if (stopped) {
            fprintf(stderr,
                    "gpfq sweep: stopped early; every finished result is in %s. Rerun the same "
                    "command to resume.\n",
                    s->job.output);
            code = EXIT_STOPPED;
        } else {
            print_summary(s->job.output);
            if (no_memory) {
                fprintf(stderr,
                        "gpfq sweep: %d task(s) ran out of memory and are not recorded. Once "
                        "memory allows (fewer ranks on a node, or a node with more), rerun the "
                        "same command to run them.\n",
                        no_memory);
                code = EXIT_ERROR;
            }
        }
        if (stopped == -2) {
            sweep_results_close(res);
            res = NULL;
            fflush(NULL);
            MPI_Abort(MPI_COMM_WORLD, EXIT_STOPPED);
        }
    } else {
        MPI_Gather(s->host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, NULL, 0, MPI_CHAR, 0, MPI_COMM_WORLD);
        worker_loop(s);
    }
    report_memory(s, (long *)(void *)gathered);
    if (s->cache_ready) MPI_Win_free(&s->cache_win);
out_res:
    if (res && sweep_results_close(res) != GPFQ_OK) {
        fprintf(stderr, "gpfq sweep: error: %s\n", gpfq_last_error());
        code = EXIT_ERROR;
    }
    free(pending), free(gathered);
out:
    free_state(s);
    MPI_Finalize();
    return code;
}
