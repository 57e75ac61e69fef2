/*
 * Shared pieces of the `gpfq` command: subcommand entry points, exit codes and
 * option-value parsing with messages that name the flag.
 */
#ifndef GPFQ_CLI_H
#define GPFQ_CLI_H

#include <stddef.h>

#include "gpfq/gpfq.h"

/* Exit codes: 0 success, 1 a runtime failure (bad file, bad data, numerics),
 * 2 a usage error (unknown flag, bad value). */
enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_env(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_merge(int argc, char **argv);

/* Prints "gpfq <cmd>: <message>" (with gpfq_last_error() when msg is NULL) to stderr
 * and returns EXIT_RUNTIME. */
int cli_fail(const char *cmd, const char *msg);

/* Prints a usage error with a hint to --help and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses a whole number in [min, max]; on failure prints a usage error naming
 * `flag` and returns 0. */
int cli_parse_size(const char *cmd, const char *flag, const char *text, long min, long max,
                   long *out);

/* Sets the BLAS thread count (0 leaves OpenBLAS's default). */
void cli_set_threads(int threads);
int cli_blas_threads(void);
const char *cli_blas_core(void);

/* Evaluates with one worker thread per BLAS thread (o->workers is set here),
 * BLAS single-threaded meanwhile: every op of the forward pass then runs in
 * parallel, not only the GEMMs. */
gpfq_status cli_evaluate(const gpfq_model *model, const gpfq_dataset *data, gpfq_eval_options *o,
                         gpfq_eval_result *result);

/* "12.3k" style counts. */
void cli_human_count(double value, char *buf, size_t size);

#endif
