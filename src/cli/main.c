/*
 * The `gpfq` command: dispatches subcommands and holds the helpers they share.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* OpenBLAS extensions, declared here to avoid depending on openblas_config.h */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);

static const char usage[] =
    "usage: gpfq <command> [options]\n"
    "\n"
    "commands:\n"
    "  quantize  quantize a model with GPFQ (or MSQ), evaluate it and save it\n"
    "  sweep     run a grid of quantizations under MPI into one HDF5 results file\n"
    "  report    summarize a sweep results file (best per bits, failures, slowest)\n"
    "  merge     combine the results files of a sharded sweep\n"
    "  eval      evaluate a model's top-1/top-5 accuracy on a data set's test split\n"
    "  info      print a model file's layers, shapes and parameter counts\n"
    "  env       print the version, BLAS kernel and MPI ranks (run under mpirun to check MPI)\n"
    "  help      print this message\n"
    "  version   print the version\n"
    "\n"
    "Run 'gpfq <command> --help' for a command's options.\n";

int cli_fail(const char *cmd, const char *msg) {
    fflush(stdout);
    fprintf(stderr, "gpfq %s: error: %s\n", cmd, msg ? msg : gpfq_last_error());
    return EXIT_RUNTIME;
}

/* Under mpirun or srun every rank parses the command line: only rank 0 speaks. */
static int is_secondary_rank(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return strcmp(v, "0") != 0;
    }
    return 0;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    if (is_secondary_rank()) return EXIT_USAGE;
    va_list args;
    fflush(stdout);
    fprintf(stderr, "gpfq %s: ", cmd);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\nRun 'gpfq %s --help' for the options.\n", cmd);
    return EXIT_USAGE;
}

int cli_parse_size(const char *cmd, const char *flag, const char *text, long min, long max,
                   long *out) {
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || value < min || value > max) {
        cli_usage_error(cmd, "%s expects a whole number from %ld to %ld, got '%s'", flag, min, max,
                        text);
        return 0;
    }
    *out = value;
    return 1;
}

void cli_set_threads(int threads) {
    if (threads > 0) openblas_set_num_threads(threads);
}

int cli_blas_threads(void) {
    return openblas_get_num_threads();
}

gpfq_status cli_evaluate(const gpfq_model *model, const gpfq_dataset *data, gpfq_eval_options *o,
                         gpfq_eval_result *result) {
    const int threads = cli_blas_threads();
    o->workers = threads;
    if (threads > 1) openblas_set_num_threads(1);
    gpfq_status st = gpfq_evaluate_with(model, data, o, result);
    if (threads > 1) openblas_set_num_threads(threads);
    return st;
}

const char *cli_blas_core(void) {
    return openblas_get_corename();
}

void cli_human_count(double value, char *buf, size_t size) {
    if (value >= 1e6)
        snprintf(buf, size, "%.2fM", value / 1e6);
    else if (value >= 1e3)
        snprintf(buf, size, "%.1fk", value / 1e3);
    else
        snprintf(buf, size, "%.0f", value);
}

/*
 * OpenBLAS's idle threads spin (sched_yield) for 2^28 cycles after each threaded call before
 * they sleep, and the library reads how long only from the environment. On two cores that
 * spinning took a core from the direct convolution's threads of the forward pass after each
 * GEMM: resnet20 `quantize --reference --threads 2` took 2.4-2.75 s, 2.03-2.06 s with
 * OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles, then sleep). So the commands that compute set it,
 * unless it is set already to a value OpenBLAS takes. OpenBLAS has read its environment when it
 * loaded and started its threads then; its threaded builds export the functions that read it again,
 * stop the threads and start them with the new timeout. Where they are missing (an OpenBLAS build
 * without them: weak symbols, NULL then), the process starts over once instead, which costs a
 * second load of the shared libraries (30 ms); not under valgrind, whose tools follow no exec by
 * default. GPFQ_NO_REEXEC (any value) leaves OpenBLAS as it is.
 */
void openblas_read_env(void) __attribute__((weak));
int blas_thread_shutdown_(void) __attribute__((weak));
int blas_thread_init(void) __attribute__((weak));

/* Set as OpenBLAS reads it: an empty value, not a number or 0 or less gives its default,
 * 2^28. (OpenBLAS 0.3 reads no GOTO_THREAD_TIMEOUT.) */
static int timeout_set(const char *name) {
    const char *v = getenv(name);
    return v && atoi(v) > 0;
}

static void quiet_openblas_threads(char **argv) {
    if (timeout_set("OPENBLAS_THREAD_TIMEOUT") || getenv("GPFQ_NO_REEXEC")) return;
    if (openblas_read_env && blas_thread_shutdown_ && blas_thread_init) {
        if (setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) != 0) return;
        openblas_read_env();
        blas_thread_shutdown_();
        /* start them again at once: some OpenBLAS versions' openblas_set_num_threads would
         * otherwise add threads to a stopped pool that the next call starts again whole */
        blas_thread_init();
        return;
    }
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload")) return;
    /* the binary's own path, not /proc/self/exe: the process keeps its name (ps, pkill) */
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || (size_t)len >= sizeof self - 1) return;
    self[len] = '\0';
    if (setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) != 0) return;
    execv(self, argv); /* returns only on failure: go on as we are */
}

int main(int argc, char **argv) {
    static const char *const computing[] = {"quantize", "eval", "sweep", "env"};
    for (size_t i = 0; argc >= 2 && i < sizeof computing / sizeof computing[0]; i++)
        if (!strcmp(argv[1], computing[i])) quiet_openblas_threads(argv);
    gpfq_heap_setup();
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("gpfq %s\n", GPFQ_VERSION);
        return 0;
    }
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } commands[] = {{"eval", cmd_eval},         {"info", cmd_info},   {"env", cmd_env},
                    {"quantize", cmd_quantize}, {"sweep", cmd_sweep}, {"report", cmd_report},
                    {"merge", cmd_merge}};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "gpfq: unknown command '%s'\n\n%s", cmd, usage);
    return EXIT_USAGE;
}
