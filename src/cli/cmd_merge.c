/*
 * `gpfq merge`: combine shard results files (gpfq sweep --shard) into one.
 */
#include "cli.h"

#include "sweep/sweep.h"

#include <stdio.h>
#include <string.h>

static const char merge_usage[] =
    "usage: gpfq merge OUT.h5 SHARD.h5 [SHARD.h5 ...]\n"
    "\n"
    "Combines the results files of one job's shards (gpfq sweep --shard I/N) into a new\n"
    "file: every task once (a done row wins over a failed one), the per-layer rows,\n"
    "and each input's provenance in the attribute 'merged_from'. Refuses files that\n"
    "come from different jobs, and an OUT that exists.\n";

int cmd_merge(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(merge_usage, stdout);
        return 0;
    }
    if (argc < 3) return cli_usage_error("merge", "expects OUT.h5 and at least one SHARD.h5");
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-') return cli_usage_error("merge", "unknown option '%s'", argv[i]);
    return merge_main(argv[1], (const char *const *)argv + 2, argc - 2);
}
