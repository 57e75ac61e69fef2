/*
 * first_quantize: a model's quantize (the defaults) run R times in one process after the float
 * evaluation, as `gpfq quantize` runs them, with the time and the page faults of each run. The
 * first run is the figure of a fresh process (bench/run.sh's), the later ones reuse the memory
 * the first touched. --reference runs the reference's options instead (`gpfq quantize
 * --reference`).
 *
 *     OPENBLAS_THREAD_TIMEOUT=4 build/bench/first_quantize MODEL.h5 [--runs R] [--reference]
 *
 * R defaults to 3. Fashion-MNIST is read as gpfq reads it (README). OPENBLAS_THREAD_TIMEOUT=4
 * (which the gpfq command sets for itself) keeps OpenBLAS's idle threads from spinning.
 */
#include "gpfq/gpfq.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static long minor_faults(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}

int main(int argc, char **argv) {
    int runs = 3, reference = 0, bad = argc < 2;
    for (int i = 2; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--reference"))
            reference = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            bad = (runs = atoi(argv[++i])) < 1;
        else
            bad = 1;
    }
    if (bad) {
        fprintf(stderr, "usage: first_quantize MODEL.h5 [--runs R] [--reference]   (R >= 1)\n");
        return 2;
    }
    if (!getenv("OPENBLAS_THREAD_TIMEOUT"))
        fprintf(stderr, "first_quantize: OPENBLAS_THREAD_TIMEOUT is not set: OpenBLAS's idle "
                        "threads spin, unlike under the gpfq command\n");
    gpfq_heap_setup();
    gpfq_model *m = NULL;
    gpfq_dataset train, test;
    if (gpfq_model_load(argv[1], &m) != GPFQ_OK ||
        gpfq_dataset_open("fashion-mnist", NULL, GPFQ_SPLIT_TRAIN, &train) != GPFQ_OK ||
        gpfq_dataset_open("fashion-mnist", NULL, GPFQ_SPLIT_TEST, &test) != GPFQ_OK) {
        fprintf(stderr, "first_quantize: %s\n", gpfq_last_error());
        return 1;
    }
    /* the float evaluation first, one worker per thread on one BLAS thread each, as the CLI */
    gpfq_eval_options eo;
    gpfq_eval_options_default(&eo);
    eo.workers = 2;
    gpfq_eval_result er;
    openblas_set_num_threads(1);
    long faults = minor_faults();
    double t = gpfq_now();
    if (gpfq_evaluate_with(m, &test, &eo, &er) != GPFQ_OK) {
        fprintf(stderr, "first_quantize: %s\n", gpfq_last_error());
        return 1;
    }
    printf("float evaluation   %8.2f ms  %6ld page faults  (%zu images)\n", (gpfq_now() - t) * 1e3,
           minor_faults() - faults, er.images);
    openblas_set_num_threads(2);
    gpfq_quant_options o;
    gpfq_quant_options_default(&o);
    if (reference) { /* gpfq quantize --reference (src/cli/cmd_quantize.c, OPT_REFERENCE) */
        o.calib_mode = GPFQ_CALIB_PER_LAYER;
        o.unfold_stride_kernel = 1;
        o.with_replacement = 1;
    }
    for (int r = 0; r < runs; r++) {
        gpfq_quant_result res;
        faults = minor_faults();
        t = gpfq_now();
        if (gpfq_quantize_model(m, &train, &o, &res, NULL, NULL) != GPFQ_OK) {
            fprintf(stderr, "first_quantize: %s\n", gpfq_last_error());
            return 1;
        }
        printf("quantize, run %-3d  %8.2f ms  %6ld page faults\n", r + 1, (gpfq_now() - t) * 1e3,
               minor_faults() - faults);
        gpfq_quant_result_free(&res);
    }
    gpfq_dataset_free(&train);
    gpfq_dataset_free(&test);
    gpfq_model_free(m);
    return 0;
}
