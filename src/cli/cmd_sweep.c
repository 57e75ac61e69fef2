/*
 * `gpfq sweep`: option parsing; the work is in src/sweep.
 */
#include "cli.h"

#include "sweep/sweep.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char sweep_usage[] =
    "usage: mpirun -n N gpfq sweep [options] JOB.yaml\n"
    "       gpfq sweep --dry-run JOB.yaml\n"
    "\n"
    "Runs every task of a job file's grid (docs/sweep.md): GPFQ or MSQ quantization\n"
    "plus top-1/top-5 evaluation, on all MPI ranks, into one HDF5 results file.\n"
    "A rerun skips what the results file records as done.\n"
    "\n"
    "  --dry-run             print the task list and count, compute nothing\n"
    "  --output FILE         results file (overrides the job's output)\n"
    "  -b, --bits LIST       grid override, e.g. 2,3,4 or 2:8:1 (START:STOP:STEP)\n"
    "  -s, --scalar LIST     e.g. 1.0:2.0:0.05\n"
    "  -l, --lambda LIST     e.g. 0,0.01\n"
    "  -reg, --regularizer LIST  none, L1, L0\n"
    "  -p, --percentile LIST\n"
    "  --method LIST         gpfq, msq\n"
    "  --seed LIST\n"
    "  --retry-failed        rerun tasks recorded as failed\n"
    "  --fresh               start over: the old results file is moved aside (kept)\n"
    "  --threads N           BLAS threads per rank (default 1: one rank per core)\n"
    "  --grace SECONDS       after SIGTERM/SIGUSR1, how long running tasks may finish\n"
    "                        (default 60)\n"
    "  --shard I/N           run only shard I (0-based) of N: tasks are split by their\n"
    "                        id; each shard writes its own file (OUTPUT.shard-I-of-N.h5\n"
    "                        unless --output is given); gpfq merge combines them\n"
    "  --no-shared-cache     recompute the float activations in every task instead of\n"
    "                        once per node (for benchmarks)\n"
    "  -h, --help            this message\n"
    "\n"
    "Exit codes: 0 done (failed tasks are recorded, not fatal), 1 error, 2 bad input,\n"
    "3 stopped by SIGTERM/SIGUSR1/SIGINT (rerun to resume). Under mpirun, stop a sweep\n"
    "with SIGUSR1 to mpirun (forwarded to the ranks); mpirun kills ranks soon after a\n"
    "SIGTERM.\n";

int cmd_sweep(int argc, char **argv) {
    enum {
        O_DRY = 256,
        O_OUTPUT,
        O_BITS,
        O_SCALAR,
        O_LAMBDA,
        O_REG,
        O_PCT,
        O_METHOD,
        O_SEED,
        O_RETRY,
        O_FRESH,
        O_THREADS,
        O_GRACE,
        O_NO_CACHE,
        O_SHARD,
        O_HELP
    };
    static const struct option options[] = {{"dry-run", no_argument, NULL, O_DRY},
                                            {"output", required_argument, NULL, O_OUTPUT},
                                            {"b", required_argument, NULL, O_BITS},
                                            {"bits", required_argument, NULL, O_BITS},
                                            {"s", required_argument, NULL, O_SCALAR},
                                            {"scalar", required_argument, NULL, O_SCALAR},
                                            {"l", required_argument, NULL, O_LAMBDA},
                                            {"lambda", required_argument, NULL, O_LAMBDA},
                                            {"reg", required_argument, NULL, O_REG},
                                            {"regularizer", required_argument, NULL, O_REG},
                                            {"p", required_argument, NULL, O_PCT},
                                            {"percentile", required_argument, NULL, O_PCT},
                                            {"method", required_argument, NULL, O_METHOD},
                                            {"seed", required_argument, NULL, O_SEED},
                                            {"retry-failed", no_argument, NULL, O_RETRY},
                                            {"fresh", no_argument, NULL, O_FRESH},
                                            {"threads", required_argument, NULL, O_THREADS},
                                            {"grace", required_argument, NULL, O_GRACE},
                                            {"no-shared-cache", no_argument, NULL, O_NO_CACHE},
                                            {"shard", required_argument, NULL, O_SHARD},
                                            {"h", no_argument, NULL, O_HELP},
                                            {"help", no_argument, NULL, O_HELP},
                                            {NULL, 0, NULL, 0}};
    static char override_text[16][1100];
    sweep_args a = {.grace = 60};
    long value;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long_only(argc, argv, ":", options, NULL)) != -1) {
        const char *key = NULL;
        switch (opt) {
        case O_DRY:
            a.dry_run = 1;
            break;
        case O_OUTPUT:
            a.output = optarg;
            break;
        case O_BITS:
            key = "bits";
            break;
        case O_SCALAR:
            key = "scalar";
            break;
        case O_LAMBDA:
            key = "lambda";
            break;
        case O_REG:
            key = "regularizer";
            break;
        case O_PCT:
            key = "percentile";
            break;
        case O_METHOD:
            key = "method";
            break;
        case O_SEED:
            key = "seed";
            break;
        case O_RETRY:
            a.retry_failed = 1;
            break;
        case O_FRESH:
            a.fresh = 1;
            break;
        case O_THREADS:
            if (!cli_parse_size("sweep", "--threads", optarg, 1, 1024, &value)) return EXIT_USAGE;
            a.threads = (int)value;
            break;
        case O_GRACE:
            if (!cli_parse_size("sweep", "--grace", optarg, 0, 86400, &value)) return EXIT_USAGE;
            a.grace = (double)value;
            break;
        case O_NO_CACHE:
            a.no_shared_cache = 1;
            break;
        case O_SHARD: {
            int index = -1, count = 0;
            char extra;
            if (sscanf(optarg, "%d/%d%c", &index, &count, &extra) != 2 || count < 1 || index < 0 ||
                index >= count)
                return cli_usage_error("sweep",
                                       "--shard expects I/N with 0 <= I < N (e.g. "
                                       "$SLURM_ARRAY_TASK_ID/4), got '%s'",
                                       optarg);
            a.shard_index = index;
            a.shard_count = count;
            break;
        }
        case O_HELP:
            fputs(sweep_usage, stdout);
            return 0;
        case ':':
            return cli_usage_error("sweep", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("sweep", "unknown option '%s'", argv[optind - 1]);
        }
        if (key) {
            if (a.n_overrides == 16) return cli_usage_error("sweep", "too many grid overrides");
            snprintf(override_text[a.n_overrides], sizeof override_text[0], "%s=%.1000s", key,
                     optarg);
            a.overrides[a.n_overrides] = override_text[a.n_overrides];
            a.n_overrides++;
        }
    }
    if (optind != argc - 1) return cli_usage_error("sweep", "expects exactly one JOB.yaml");
    a.job_path = argv[optind];
    static char command[4096];
    for (int i = 0; i < argc && strlen(command) < sizeof command - 300; i++)
        snprintf(command + strlen(command), sizeof command - strlen(command), "%s%.256s",
                 i ? " " : "gpfq ", argv[i]);
    a.command = command;
    return sweep_main(&a);
}
