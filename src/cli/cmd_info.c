/*
 * `gpfq info`: what a model file holds, layer by layer; with --check, a forward
 * pass compared against the PyTorch logits stored in the file.
 */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char info_usage[] =
    "usage: gpfq info [--check] FILE\n"
    "\n"
    "Prints a model file's metadata and its nodes: op, inputs, output shape and\n"
    "parameter count.\n"
    "\n"
    "  -c, --check   run the batch stored in the file's /check group and compare the\n"
    "                logits with the stored ones (max abs and relative error)\n"
    "  -h, --help    this message\n";

static void shape_text(gpfq_shape s, char *buf, size_t size) {
    if (s.flat)
        snprintf(buf, size, "%d", s.c);
    else
        snprintf(buf, size, "%dx%dx%d", s.c, s.h, s.w);
}

static void print_nodes(const gpfq_model *m) {
    printf("%4s  %-28s %-19s %-24s %-12s %10s\n", "#", "name", "op", "inputs", "output", "params");
    for (int i = 0; i < m->n_nodes; i++) {
        const gpfq_node *n = &m->nodes[i];
        char inputs[2 * GPFQ_NAME_MAX + 8] = "", shape[48];
        for (int k = 0; k < n->n_inputs; k++) {
            if (k) strcat(inputs, ",");
            strcat(inputs, n->inputs[k] < 0 ? "input" : m->nodes[n->inputs[k]].name);
        }
        shape_text(n->out_shape, shape, sizeof shape);
        char op[40];
        snprintf(op, sizeof op, "%s%s", gpfq_op_name(n->op), n->quantized ? " (q)" : "");
        printf("%4d  %-28s %-19s %-24s %-12s %10zu\n", i, n->name, op, inputs, shape,
               gpfq_node_param_count(n));
    }
}

static int run_check(const char *path, const gpfq_model *m) {
    float *input = NULL, *expected = NULL;
    size_t n = 0;
    if (gpfq_model_load_check(path, m, &input, &expected, &n) != GPFQ_OK)
        return cli_fail("info", NULL);
    gpfq_forward *fwd = NULL;
    const float *logits = NULL;
    if (gpfq_forward_create(m, n, &fwd) != GPFQ_OK ||
        gpfq_forward_run(fwd, input, n, &logits) != GPFQ_OK) {
        free(input);
        free(expected);
        gpfq_forward_free(fwd);
        return cli_fail("info", NULL);
    }
    double max_abs = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n * (size_t)m->num_classes; i++) {
        double d = fabs((double)logits[i] - expected[i]);
        if (!(d <= max_abs)) max_abs = d;
        if (fabs(expected[i]) > max_ref) max_ref = fabs(expected[i]);
    }
    printf("check    %zu images: max abs error %.3g, relative to max |logit| %.3g\n", n, max_abs,
           max_ref > 0 ? max_abs / max_ref : max_abs);
    free(input);
    free(expected);
    gpfq_forward_free(fwd);
    return 0;
}

int cmd_info(int argc, char **argv) {
    int check = 0, opt;
    static const struct option options[] = {
        {"check", no_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "ch", options, NULL)) != -1) {
        if (opt == 'c')
            check = 1;
        else if (opt == 'h') {
            fputs(info_usage, stdout);
            return 0;
        } else
            return cli_usage_error("info", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind != argc - 1) return cli_usage_error("info", "expects exactly one model FILE");
    const char *path = argv[optind];
    gpfq_model *m = NULL;
    if (gpfq_model_load(path, &m) != GPFQ_OK) return cli_fail("info", NULL);
    printf("file     %s\n", path);
    printf("input    %dx%dx%d, %d classes, mean", m->input_shape.c, m->input_shape.h,
           m->input_shape.w, m->num_classes);
    for (int c = 0; c < m->input_shape.c; c++) printf(" %.4g", m->mean[c]);
    printf(", std");
    for (int c = 0; c < m->input_shape.c; c++) printf(" %.4g", m->std[c]);
    printf("\n");
    if (m->dataset[0]) printf("dataset  %s\n", m->dataset);
    if (m->source[0]) printf("source   %s\n", m->source);
    if (!isnan(m->float_top1))
        printf("float    top-1 %.2f%%, top-5 %.2f%%\n", 100 * m->float_top1, 100 * m->float_top5);
    if (m->recipe[0]) printf("recipe   %s\n", m->recipe);
    if (m->quantization[0]) printf("quantized %s\n", m->quantization);
    print_nodes(m);
    char total[32];
    cli_human_count((double)gpfq_model_param_count(m), total, sizeof total);
    printf("total    %d nodes, %zu parameters (%s)\n", m->n_nodes, gpfq_model_param_count(m),
           total);
    int rc = check ? run_check(path, m) : 0;
    gpfq_model_free(m);
    return rc;
}
