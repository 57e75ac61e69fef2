/*
 * `gpfq eval`: float (or quantized) top-1/top-5 of a model on a test split.
 */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char eval_usage[] =
    "usage: gpfq eval --model FILE [--dataset NAME] [--data-dir DIR] [--batch N]\n"
    "                 [--limit N] [--threads N]\n"
    "\n"
    "Evaluates a model file on the test split of a data set and prints top-1, top-5\n"
    "and images/s.\n"
    "\n"
    "  -m, --model FILE    model file (HDF5, see docs/model-format.md)\n"
    "  -d, --dataset NAME  fashion-mnist, mnist or cifar10 (default: the data set the\n"
    "                      model file names, else fashion-mnist)\n"
    "  -D, --data-dir DIR  directory of the data files (default for fashion-mnist:\n"
    "                      " GPFQ_FASHION_MNIST_DIR ")\n"
    "  -b, --batch N       images read per step (default 256); the forward pass runs\n"
    "                      them in slices sized to stay in cache\n"
    "  -n, --limit N       evaluate only the first N test images\n"
    "  -t, --threads N     threads, each evaluating a share of the images with\n"
    "                      single-threaded BLAS (default: OpenBLAS's thread count)\n"
    "  -h, --help          this message\n";

typedef struct {
    int tty;
    double last;
} progress_state;

static void show_progress(void *ctx, size_t done, size_t total) {
    progress_state *p = ctx;
    if (!p->tty) return;
    double now = gpfq_now();
    if (done < total && now - p->last < 0.2) return;
    p->last = now;
    fprintf(stderr, "\r  evaluating %zu/%zu images", done, total);
    if (done == total) fprintf(stderr, "\r%*s\r", 40, "");
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *dataset = NULL, *data_dir = NULL;
    long batch = 256, limit = 0, threads = 0;
    static const struct option options[] = {
        {"model", required_argument, NULL, 'm'},    {"dataset", required_argument, NULL, 'd'},
        {"data-dir", required_argument, NULL, 'D'}, {"batch", required_argument, NULL, 'b'},
        {"limit", required_argument, NULL, 'n'},    {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":m:d:D:b:n:t:h", options, NULL)) != -1) {
        switch (opt) {
        case 'm':
            model_path = optarg;
            break;
        case 'd':
            dataset = optarg;
            break;
        case 'D':
            data_dir = optarg;
            break;
        case 'b':
            if (!cli_parse_size("eval", "--batch", optarg, 1, 1 << 20, &batch)) return EXIT_USAGE;
            break;
        case 'n':
            if (!cli_parse_size("eval", "--limit", optarg, 1, 1L << 40, &limit)) return EXIT_USAGE;
            break;
        case 't':
            if (!cli_parse_size("eval", "--threads", optarg, 1, 1024, &threads)) return EXIT_USAGE;
            break;
        case 'h':
            fputs(eval_usage, stdout);
            return 0;
        case ':':
            return cli_usage_error("eval", "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("eval", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!model_path) return cli_usage_error("eval", "--model FILE is required");
    cli_set_threads((int)threads);

    gpfq_model *model = NULL;
    if (gpfq_model_load(model_path, &model) != GPFQ_OK) return cli_fail("eval", NULL);
    if (!dataset) dataset = model->dataset[0] ? model->dataset : "fashion-mnist";
    gpfq_dataset test;
    if (gpfq_dataset_open(dataset, data_dir, GPFQ_SPLIT_TEST, &test) != GPFQ_OK) {
        gpfq_model_free(model);
        return cli_fail("eval", NULL);
    }
    char params[32];
    cli_human_count((double)gpfq_model_param_count(model), params, sizeof params);
    printf("model    %s (%d nodes, %s parameters)\n", model_path, model->n_nodes, params);
    printf("data     %s test split, %zu images\n", gpfq_dataset_canonical(dataset), test.n);

    progress_state progress = {isatty(2), 0.0};
    gpfq_eval_result r;
    gpfq_eval_options o;
    gpfq_eval_options_default(&o);
    o.batch = (size_t)batch;
    o.limit = (size_t)limit;
    o.progress = show_progress;
    o.progress_ctx = &progress;
    gpfq_status st = cli_evaluate(model, &test, &o, &r);
    if (st != GPFQ_OK) {
        gpfq_dataset_free(&test);
        gpfq_model_free(model);
        return cli_fail("eval", NULL);
    }
    printf("top-1    %.2f%%  (%zu/%zu)\n", 100.0 * r.top1 / r.images, r.top1, r.images);
    printf("top-5    %.2f%%  (%zu/%zu)\n", 100.0 * r.top5 / r.images, r.top5, r.images);
    if (!isnan(model->float_top1))
        printf("recorded %.2f%% / %.2f%% top-1/top-5 in the model file\n",
               100.0 * model->float_top1, 100.0 * model->float_top5);
    char winograd[48] = "";
    if (gpfq_conv_get_kernel() == GPFQ_CONV_AVX512 && gpfq_conv_get_winograd() != GPFQ_WINOGRAD_OFF)
        snprintf(winograd, sizeof winograd, " + Winograd F(%dx%d) %s",
                 gpfq_conv_get_winograd_tile(), gpfq_conv_get_winograd_tile(),
                 gpfq_winograd_mode_name(gpfq_conv_get_winograd()));
    char interleave[32] = "";
    if (gpfq_conv_get_kernel() == GPFQ_CONV_AVX512 &&
        gpfq_conv_get_interleave() != GPFQ_INTERLEAVE_OFF)
        snprintf(interleave, sizeof interleave, " + interleaved %s",
                 gpfq_interleave_mode_name(gpfq_conv_get_interleave()));
    printf("speed    %.0f images/s (%.3f s, batch %ld in slices of %zu, %d thread%s, conv %s%s%s, "
           "GEMM %s, OpenBLAS %s kernel)\n",
           r.images / r.seconds, r.seconds, batch, r.batch, o.workers, o.workers == 1 ? "" : "s",
           gpfq_conv_kernel_name(gpfq_conv_get_kernel()), winograd, interleave,
           gpfq_gemm_kernel_name(gpfq_gemm_get_kernel()), cli_blas_core());
    gpfq_dataset_free(&test);
    gpfq_model_free(model);
    return 0;
}
