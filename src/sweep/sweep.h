/*
 * `gpfq sweep`: the MPI parameter sweep (docs/sweep.md). Rank 0 validates the
 * job, owns the results file and hands tasks to ranks as they free up; every
 * rank, rank 0 included, computes tasks. The float activations on the
 * calibration images are computed once per node and shared by its ranks.
 */
#ifndef GPFQ_SWEEP_H
#define GPFQ_SWEEP_H

typedef struct {
    const char *job_path;
    const char *output;        /* overrides the job's output */
    const char *overrides[16]; /* "key=value" grid overrides */
    int n_overrides;
    int dry_run;
    int retry_failed;
    int fresh;
    int threads;         /* BLAS threads per rank (default 1) */
    int no_shared_cache; /* recompute float activations in every task (for benchmarks) */
    int shard_index;     /* with shard_count > 0: run only the tasks of shard index/count */
    int shard_count;
    double grace;        /* seconds running tasks get after SIGTERM/SIGUSR1 */
    const char *command; /* the command line, for provenance */
} sweep_args;

/* Runs the sweep; returns the process exit code (0 done, 1 error, 2 bad input,
 * 3 stopped by a signal: a rerun resumes). Calls MPI_Init and MPI_Finalize. */
int sweep_main(const sweep_args *args);

/* Combines shard results files (same job) into `out`: every task once (a done
 * row wins over a failed one), layers kept, provenance of every input kept. */
int merge_main(const char *out, const char *const *inputs, int n_inputs);

#endif
