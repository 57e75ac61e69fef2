/*
 * The `--repeat R` argument of the kernel benchmarks (bench/gemm_kernels.c, bench/unfold_rows.c).
 */
#ifndef GPFQ_BENCH_ARGS_H
#define GPFQ_BENCH_ARGS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads `[--repeat R]` into *repeat (default 7, at least 1). Returns -1 to go on, else the
 * exit status: 0 after --help, 2 for anything else, with the usage line printed. */
static inline int bench_repeat_arg(int argc, char **argv, const char *program, int *repeat) {
    *repeat = 7;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            *repeat = atoi(argv[++i]);
        } else {
            printf("usage: %s [--repeat R]\n", program);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (*repeat < 1) *repeat = 1;
    return -1;
}

#endif
