/*
 * `gpfq report`: a sweep's results in the terminal, without Python: counts of
 * done and failed tasks, the best configuration per method and bit width, the
 * failures and the slowest tasks. --follow re-reads the file while a sweep
 * writes it.
 */
#include "cli.h"

#include "sweep/results.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char report_usage[] =
    "usage: gpfq report [--follow [--every SECONDS]] [--top N] RESULTS.h5\n"
    "\n"
    "Summarizes a sweep's results file: done and failed counts, the best quantized\n"
    "top-1 per method and bits (with its scalar and regularizer, and the drop from\n"
    "float), failed tasks with their messages, and the slowest tasks.\n"
    "\n"
    "  --follow            re-read the file while a sweep writes it; stop with Ctrl-C\n"
    "  --every SECONDS     how often --follow re-reads (default 5)\n"
    "  --top N             how many slowest tasks and failures to list (default 5)\n"
    "  -h, --help          this message\n";

static int by_seconds_desc(const void *a, const void *b) {
    double x = ((const sweep_row *)a)->total_seconds, y = ((const sweep_row *)b)->total_seconds;
    return (x < y) - (x > y);
}

static void print_best(const sweep_row *rows, size_t n) {
    printf("best quantized top-1 per method and bits:\n");
    printf("  %-6s %4s %9s %9s %-10s %8s %8s %8s %8s %9s\n", "method", "bits", "mlp_s", "cnn_s",
           "quantizer", "lambda", "top-1", "drop", "top-5", "sparsity");
    for (int method = 0; method < 2; method++) {
        const char *name = method ? "msq" : "gpfq";
        for (int bits = 1; bits <= 16; bits++) {
            const sweep_row *best = sweep_best_row(rows, n, name, bits);
            if (!best) continue;
            printf("  %-6s %4d %9g %9g %-10s %8g %7.2f%% %+8.2f %7.2f%% %8.2f%%\n", name, bits,
                   best->mlp_scalar, best->cnn_scalar,
                   best->stochastic ? "stochastic" : best->regularizer, best->reg_lambda,
                   100 * best->quant_top1, 100 * (best->quant_top1 - best->float_top1),
                   100 * best->quant_top5, 100 * best->quant_sparsity);
        }
    }
}

static int report_once(const char *path, int top) {
    sweep_row *rows = NULL;
    size_t n = 0;
    if (sweep_results_read(path, &rows, &n) != GPFQ_OK) return cli_fail("report", NULL);
    size_t done = 0, failed = 0;
    double busy = 0, first = INFINITY, last = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(rows[i].status, "done"))
            done++;
        else
            failed++;
        busy += rows[i].total_seconds;
        if (rows[i].finished_at > last) last = rows[i].finished_at;
        if (rows[i].finished_at - rows[i].total_seconds < first)
            first = rows[i].finished_at - rows[i].total_seconds;
    }
    printf("results  %s: %zu task(s), %zu done, %zu failed\n", path, n, done, failed);
    if (n == 0) {
        free(rows);
        return 0;
    }
    printf("float    top-1 %.2f%%, top-5 %.2f%%\n", 100 * rows[0].float_top1,
           100 * rows[0].float_top5);
    printf("time     %.1f task-seconds, %.1f s from the first start to the last result\n", busy,
           last - first);
    print_best(rows, n);
    if (failed) {
        printf("failed tasks:\n");
        int shown = 0;
        for (size_t i = 0; i < n && shown < top; i++)
            if (strcmp(rows[i].status, "done")) {
                printf("  %s %s b%d s%g: %s\n", rows[i].task_id, rows[i].method, rows[i].bits,
                       rows[i].mlp_scalar, rows[i].message);
                shown++;
            }
    }
    qsort(rows, n, sizeof *rows, by_seconds_desc);
    printf("slowest tasks:\n");
    for (size_t i = 0; i < n && (int)i < top; i++)
        printf("  %s %-4s b%-2d s%-6g %7.2f s (quantize %.2f, eval %.2f) rank %d on %s\n",
               rows[i].task_id, rows[i].method, rows[i].bits, rows[i].mlp_scalar,
               rows[i].total_seconds, rows[i].quantize_seconds, rows[i].eval_seconds, rows[i].rank,
               rows[i].host);
    free(rows);
    return 0;
}

int cmd_report(int argc, char **argv) {
    enum { O_FOLLOW = 256, O_EVERY, O_TOP, O_HELP };
    static const struct option options[] = {
        {"follow", no_argument, NULL, O_FOLLOW}, {"every", required_argument, NULL, O_EVERY},
        {"top", required_argument, NULL, O_TOP}, {"help", no_argument, NULL, O_HELP},
        {"h", no_argument, NULL, O_HELP},        {NULL, 0, NULL, 0}};
    long follow = 0, every = 5, top = 5;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long_only(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case O_FOLLOW:
            follow = 1;
            break;
        case O_EVERY:
            if (!cli_parse_size("report", "--every", optarg, 1, 3600, &every)) return EXIT_USAGE;
            break;
        case O_TOP:
            if (!cli_parse_size("report", "--top", optarg, 0, 100000, &top)) return EXIT_USAGE;
            break;
        case O_HELP:
            fputs(report_usage, stdout);
            return 0;
        case ':':
            return cli_usage_error("report", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("report", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("report", "expects exactly one RESULTS.h5");
    const char *path = argv[optind];
    if (!follow) return report_once(path, (int)top);
    /* a running sweep holds the file open for writing; HDF5's file locks would
     * refuse a second opener. Rows are flushed whole, so reading is safe between
     * flushes, and a read that races a flush is simply retried. */
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 1);
    for (;;) {
        printf("\033[H\033[2J");
        time_t now = time(NULL);
        printf("gpfq report --follow (every %ld s): %s", every, ctime(&now));
        if (report_once(path, (int)top) != 0) fprintf(stderr, "(retrying)\n");
        fflush(stdout);
        struct timespec ts = {every, 0};
        nanosleep(&ts, NULL);
    }
}
