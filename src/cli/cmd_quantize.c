/*
 * `gpfq quantize`: one GPFQ (or MSQ) run of a model on a data set, with the
 * research code's flags (-ds -model -b -bs -s -reg -l -sq -p -rr) and long names.
 * Prints per-layer progress, float and quantized top-1/top-5, sparsity and times;
 * saves the quantized model and appends a CSV row in the research code's format.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char quantize_usage[] =
    "usage: gpfq quantize -model NAME|FILE [-ds NAME] [-b BITS] [-bs N] [-s SCALAR]\n"
    "                     [-reg L0|L1 -l LAMBDA] [-sq] [-p PERCENTILE] [-rr RATE]\n"
    "                     [--seed N] [--out FILE] [--log FILE] [options]\n"
    "\n"
    "Quantizes every Linear and Conv2d layer of a model with GPFQ, evaluates the float\n"
    "and the quantized model on the test split, and saves the quantized model.\n"
    "\n"
    "  -model, --model NAME|FILE   a shipped model name (mlp, lenet5, resnet20,\n"
    "                              resnet18: data/models/NAME_fashion.h5 for\n"
    "                              fashion-mnist) or a model file\n"
    "  -ds, --dataset NAME         fashion-mnist (default), mnist or cifar10\n"
    "  --data-dir DIR              data directory (default for fashion-mnist:\n"
    "                              " GPFQ_FASHION_MNIST_DIR ")\n"
    "  -b, --bits N                bits per weight, 1..16 (default 4)\n"
    "  -bs, --batch-size N         calibration images (default 256; more than the\n"
    "                              training set has: all of them, with a warning)\n"
    "  -s, --scalar C              alphabet scalar for every layer (default 1.16)\n"
    "  --mlp-scalar C              alphabet scalar of Linear layers\n"
    "  --cnn-scalar C              alphabet scalar of Conv2d layers\n"
    "  -p, --percentile P          quantile of |W| rows for the radius, in (0, 1]\n"
    "                              (default 1: the row maxima); also --mlp-percentile,\n"
    "                              --cnn-percentile\n"
    "  -reg, --regularizer R       none (default), L1 (soft threshold) or L0 (hard)\n"
    "  -l, --lambda X              regularizer threshold (default 0)\n"
    "  -sq, --stochastic           stochastic rounding instead of nearest\n"
    "  -rr, --retain-rate P        share of conv patches kept per image (default 0.25)\n"
    "  --seed N                    seed of every random choice (default 0)\n"
    "  --method gpfq|msq           GPFQ (default) or data-free rounding (MSQ)\n"
    "  --calibration shared|per-layer\n"
    "                              one calibration set for all layers (default), or a\n"
    "                              fresh batch per layer as the reference does\n"
    "  --unfold layer|kernel       unfold conv inputs with the layer's stride (default)\n"
    "                              or with stride = kernel (the reference)\n"
    "  --replacement               draw conv patches with replacement (the reference)\n"
    "  --reference                 all of the reference's choices: per-layer,\n"
    "                              kernel unfolding, replacement\n"
    "  --fold-bn                   fold BatchNorm into the preceding conv first\n"
    "  --bias-correction           add the mean layer error to the bias\n"
    "  --keep-last-float           leave the last layer in float\n"
    "  --ignore A,B                node names to leave in float\n"
    "  --out FILE                  quantized model file (default:\n"
    "                              MODEL_gpfqBITS.h5 in the current directory)\n"
    "  --no-save                   do not save the quantized model\n"
    "  --log FILE                  append a CSV row (research code's columns)\n"
    "  --eval-batch N              images read per step in evaluation (default 256)\n"
    "  --limit N                   evaluate only the first N test images\n"
    "  --threads N                 threads: BLAS threads while quantizing, worker\n"
    "                              threads in evaluation (default: OpenBLAS's count)\n"
    "  --form auto|gram|ublock|ref GPFQ layer algorithm (default auto: the cheaper)\n"
    "  -h, --help                  this message\n"
    "\n"
    "example (the research code's line, with a shipped model):\n"
    "  gpfq quantize -ds fashion-mnist -model lenet5 -b 4 -bs 256 -s 1.16\n";

enum {
    OPT_MODEL = 256,
    OPT_DATASET,
    OPT_DATA_DIR,
    OPT_BITS,
    OPT_BATCH,
    OPT_SCALAR,
    OPT_MLP_SCALAR,
    OPT_CNN_SCALAR,
    OPT_PERCENTILE,
    OPT_MLP_PERCENTILE,
    OPT_CNN_PERCENTILE,
    OPT_REG,
    OPT_LAMBDA,
    OPT_STOCHASTIC,
    OPT_RETAIN,
    OPT_SEED,
    OPT_METHOD,
    OPT_CALIB,
    OPT_UNFOLD,
    OPT_REPLACEMENT,
    OPT_REFERENCE,
    OPT_FOLD_BN,
    OPT_BIAS_CORRECTION,
    OPT_KEEP_LAST,
    OPT_IGNORE,
    OPT_OUT,
    OPT_NO_SAVE,
    OPT_LOG,
    OPT_EVAL_BATCH,
    OPT_LIMIT,
    OPT_THREADS,
    OPT_FORM,
    OPT_HELP,
};

static const struct option quantize_options[] = {
    {"model", required_argument, NULL, OPT_MODEL},
    {"ds", required_argument, NULL, OPT_DATASET},
    {"dataset", required_argument, NULL, OPT_DATASET},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"b", required_argument, NULL, OPT_BITS},
    {"bits", required_argument, NULL, OPT_BITS},
    {"bs", required_argument, NULL, OPT_BATCH},
    {"batch-size", required_argument, NULL, OPT_BATCH},
    {"s", required_argument, NULL, OPT_SCALAR},
    {"scalar", required_argument, NULL, OPT_SCALAR},
    {"mlp-scalar", required_argument, NULL, OPT_MLP_SCALAR},
    {"cnn-scalar", required_argument, NULL, OPT_CNN_SCALAR},
    {"p", required_argument, NULL, OPT_PERCENTILE},
    {"percentile", required_argument, NULL, OPT_PERCENTILE},
    {"mlp-percentile", required_argument, NULL, OPT_MLP_PERCENTILE},
    {"cnn-percentile", required_argument, NULL, OPT_CNN_PERCENTILE},
    {"reg", required_argument, NULL, OPT_REG},
    {"regularizer", required_argument, NULL, OPT_REG},
    {"l", required_argument, NULL, OPT_LAMBDA},
    {"lambda", required_argument, NULL, OPT_LAMBDA},
    {"sq", no_argument, NULL, OPT_STOCHASTIC},
    {"stochastic", no_argument, NULL, OPT_STOCHASTIC},
    {"rr", required_argument, NULL, OPT_RETAIN},
    {"retain-rate", required_argument, NULL, OPT_RETAIN},
    {"seed", required_argument, NULL, OPT_SEED},
    {"method", required_argument, NULL, OPT_METHOD},
    {"calibration", required_argument, NULL, OPT_CALIB},
    {"unfold", required_argument, NULL, OPT_UNFOLD},
    {"replacement", no_argument, NULL, OPT_REPLACEMENT},
    {"reference", no_argument, NULL, OPT_REFERENCE},
    {"fold-bn", no_argument, NULL, OPT_FOLD_BN},
    {"bias-correction", no_argument, NULL, OPT_BIAS_CORRECTION},
    {"keep-last-float", no_argument, NULL, OPT_KEEP_LAST},
    {"ignore", required_argument, NULL, OPT_IGNORE},
    {"out", required_argument, NULL, OPT_OUT},
    {"no-save", no_argument, NULL, OPT_NO_SAVE},
    {"log", required_argument, NULL, OPT_LOG},
    {"eval-batch", required_argument, NULL, OPT_EVAL_BATCH},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"form", required_argument, NULL, OPT_FORM},
    {"h", no_argument, NULL, OPT_HELP},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

typedef struct {
    gpfq_quant_options q;
    const char *model_arg, *dataset, *data_dir, *out, *log;
    char *ignore_text;
    const char *ignore[64];
    int no_save;
    long eval_batch, limit, threads;
    int scalar_set, mlp_scalar_set, cnn_scalar_set;
} quantize_args;

static int parse_double(const char *flag, const char *text, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(v)) {
        cli_usage_error("quantize", "%s expects a number, got '%s'", flag, text);
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_choice(const char *flag, const char *text, const char *const *names, int count,
                        int *out) {
    for (int i = 0; i < count; i++)
        if (strcasecmp(text, names[i]) == 0) {
            *out = i;
            return 1;
        }
    char list[256] = "";
    for (int i = 0; i < count; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
    cli_usage_error("quantize", "%s must be one of %s, got '%s'", flag, list, text);
    return 0;
}

/* Parses and checks every flag; returns 0 to go on, else an exit code. */
static int parse_args(int argc, char **argv, quantize_args *a) {
    memset(a, 0, sizeof *a);
    gpfq_quant_options_default(&a->q);
    a->eval_batch = 256;
    int reg = 0, opt;
    double lambda = 0.0;
    long value;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long_only(argc, argv, ":", quantize_options, NULL)) != -1) {
        const char *flag = argv[optind - 1];
        int ok = 1, choice;
        switch (opt) {
        case OPT_MODEL:
            a->model_arg = optarg;
            break;
        case OPT_DATASET:
            a->dataset = optarg;
            break;
        case OPT_DATA_DIR:
            a->data_dir = optarg;
            break;
        case OPT_BITS:
            ok = cli_parse_size("quantize", "-b/--bits", optarg, 1, 16, &value);
            a->q.bits = (int)value;
            break;
        case OPT_BATCH:
            ok = cli_parse_size("quantize", "-bs/--batch-size", optarg, 1, 1 << 20, &value);
            a->q.calib_images = (size_t)value;
            break;
        case OPT_SCALAR:
            ok = parse_double("-s/--scalar", optarg, &a->q.mlp_scalar);
            a->q.cnn_scalar = a->q.mlp_scalar;
            a->scalar_set = 1;
            break;
        case OPT_MLP_SCALAR:
            ok = parse_double("--mlp-scalar", optarg, &a->q.mlp_scalar);
            break;
        case OPT_CNN_SCALAR:
            ok = parse_double("--cnn-scalar", optarg, &a->q.cnn_scalar);
            break;
        case OPT_PERCENTILE:
            ok = parse_double("-p/--percentile", optarg, &a->q.mlp_percentile);
            a->q.cnn_percentile = a->q.mlp_percentile;
            break;
        case OPT_MLP_PERCENTILE:
            ok = parse_double("--mlp-percentile", optarg, &a->q.mlp_percentile);
            break;
        case OPT_CNN_PERCENTILE:
            ok = parse_double("--cnn-percentile", optarg, &a->q.cnn_percentile);
            break;
        case OPT_REG: {
            static const char *const regs[] = {"none", "L1", "L0"};
            ok = parse_choice("-reg/--regularizer", optarg, regs, 3, &reg);
            break;
        }
        case OPT_LAMBDA:
            ok = parse_double("-l/--lambda", optarg, &lambda);
            break;
        case OPT_STOCHASTIC:
            a->q.quantizer = GPFQ_QUANTIZER_STOCHASTIC;
            break;
        case OPT_RETAIN:
            ok = parse_double("-rr/--retain-rate", optarg, &a->q.retain_rate);
            break;
        case OPT_SEED:
            ok = cli_parse_size("quantize", "--seed", optarg, 0, LONG_MAX, &value);
            a->q.seed = a->q.calib_seed = (uint64_t)value;
            break;
        case OPT_METHOD: {
            static const char *const methods[] = {"gpfq", "msq"};
            ok = parse_choice("--method", optarg, methods, 2, &choice);
            a->q.method = choice ? GPFQ_METHOD_MSQ : GPFQ_METHOD_GPFQ;
            break;
        }
        case OPT_CALIB: {
            static const char *const modes[] = {"shared", "per-layer"};
            ok = parse_choice("--calibration", optarg, modes, 2, &choice);
            a->q.calib_mode = choice ? GPFQ_CALIB_PER_LAYER : GPFQ_CALIB_SHARED;
            break;
        }
        case OPT_UNFOLD: {
            static const char *const unfolds[] = {"layer", "kernel"};
            ok = parse_choice("--unfold", optarg, unfolds, 2, &a->q.unfold_stride_kernel);
            break;
        }
        case OPT_REPLACEMENT:
            a->q.with_replacement = 1;
            break;
        case OPT_REFERENCE:
            a->q.calib_mode = GPFQ_CALIB_PER_LAYER;
            a->q.unfold_stride_kernel = 1;
            a->q.with_replacement = 1;
            break;
        case OPT_FOLD_BN:
            a->q.fold_batchnorm = 1;
            break;
        case OPT_BIAS_CORRECTION:
            a->q.bias_correction = 1;
            break;
        case OPT_KEEP_LAST:
            a->q.keep_last_float = 1;
            break;
        case OPT_IGNORE: {
            a->ignore_text = optarg;
            char *save = NULL;
            for (char *tok = strtok_r(optarg, ",", &save); tok && a->q.n_ignore < 64;
                 tok = strtok_r(NULL, ",", &save))
                a->ignore[a->q.n_ignore++] = tok;
            a->q.ignore = a->ignore;
            break;
        }
        case OPT_OUT:
            a->out = optarg;
            break;
        case OPT_NO_SAVE:
            a->no_save = 1;
            break;
        case OPT_LOG:
            a->log = optarg;
            break;
        case OPT_EVAL_BATCH:
            ok = cli_parse_size("quantize", "--eval-batch", optarg, 1, 1 << 20, &a->eval_batch);
            break;
        case OPT_LIMIT:
            ok = cli_parse_size("quantize", "--limit", optarg, 1, LONG_MAX, &a->limit);
            break;
        case OPT_THREADS:
            ok = cli_parse_size("quantize", "--threads", optarg, 1, 1024, &a->threads);
            break;
        case OPT_FORM: {
            static const char *const forms[] = {"auto", "gram", "ublock", "ref"};
            ok = parse_choice("--form", optarg, forms, 4, &choice);
            a->q.form = (gpfq_form)choice;
            break;
        }
        case OPT_HELP:
            fputs(quantize_usage, stdout);
            return -1;
        case ':':
            return cli_usage_error("quantize", "option '%s' needs a value", flag);
        default:
            return cli_usage_error("quantize", "unknown option '%s'", flag);
        }
        if (!ok) return EXIT_USAGE;
    }
    if (optind < argc) return cli_usage_error("quantize", "unexpected argument '%s'", argv[optind]);
    if (!a->model_arg) return cli_usage_error("quantize", "-model NAME|FILE is required");
    if (!a->dataset) a->dataset = "fashion-mnist";
    if (!gpfq_dataset_canonical(a->dataset))
        return cli_usage_error("quantize",
                               "-ds/--dataset: unknown data set '%s'; known: fashion-mnist, "
                               "mnist, cifar10",
                               a->dataset);
    if (lambda < 0) return cli_usage_error("quantize", "-l/--lambda must be >= 0, got %g", lambda);
    if (reg && a->q.quantizer == GPFQ_QUANTIZER_STOCHASTIC)
        return cli_usage_error("quantize",
                               "-sq (stochastic rounding) takes no regularizer; drop -reg or -sq");
    if (!reg && lambda > 0)
        return cli_usage_error("quantize", "-l/--lambda %g needs -reg L1 or -reg L0", lambda);
    if (reg) a->q.quantizer = reg == 1 ? GPFQ_QUANTIZER_L1 : GPFQ_QUANTIZER_L0;
    a->q.reg_lambda = lambda;
    if (!(a->q.mlp_scalar > 0) || !(a->q.cnn_scalar > 0))
        return cli_usage_error("quantize",
                               "-s/--scalar (--mlp-scalar, --cnn-scalar) must be > 0, got %g/%g",
                               a->q.mlp_scalar, a->q.cnn_scalar);
    if (!(a->q.mlp_percentile > 0 && a->q.mlp_percentile <= 1) ||
        !(a->q.cnn_percentile > 0 && a->q.cnn_percentile <= 1))
        return cli_usage_error("quantize", "-p/--percentile must be in (0, 1], got %g/%g",
                               a->q.mlp_percentile, a->q.cnn_percentile);
    if (!(a->q.retain_rate > 0 && a->q.retain_rate <= 1))
        return cli_usage_error("quantize", "-rr/--retain-rate must be in (0, 1], got %g",
                               a->q.retain_rate);
    if (gpfq_quant_options_check(&a->q) != GPFQ_OK)
        return cli_usage_error("quantize", "%s", gpfq_last_error());
    return 0;
}

static void print_layer(void *ctx, const gpfq_layer_report *r, int index, int total) {
    (void)ctx;
    if (r->skipped) {
        printf("  [%d/%d] %-22s kept in float\n", index + 1, total, r->name);
    } else {
        char err[64] = "";
        if (!isnan(r->relative_error))
            snprintf(err, sizeof err, "  rel.err %.4f  m %zu", r->relative_error, r->samples);
        printf("  [%d/%d] %-22s %4zux%-5zu delta %.3g  zeros %5.1f%%%s  %.2f s\n", index + 1, total,
               r->name, r->rows, r->cols, r->delta, 100 * r->sparsity, err, r->seconds);
    }
    fflush(stdout);
}

static int evaluate(const char *what, const gpfq_model *m, const gpfq_dataset *test,
                    const quantize_args *a, gpfq_eval_result *r) {
    gpfq_eval_options o;
    gpfq_eval_options_default(&o);
    o.batch = (size_t)a->eval_batch;
    o.limit = (size_t)a->limit;
    if (cli_evaluate(m, test, &o, r) != GPFQ_OK) return cli_fail("quantize", NULL);
    printf("%-9s top-1 %6.2f%%  top-5 %6.2f%%  (%zu images, %.2f s)\n", what,
           100.0 * r->top1 / r->images, 100.0 * r->top5 / r->images, r->images, r->seconds);
    return 0;
}

static const char *regularizer_name(gpfq_quantizer q) {
    return q == GPFQ_QUANTIZER_L1 ? "L1" : q == GPFQ_QUANTIZER_L0 ? "L0" : "None";
}

static int append_log(const quantize_args *a, const char *model_name, const gpfq_eval_result *f,
                      const gpfq_eval_result *q, double float_sparsity, double q_sparsity) {
    struct stat sb;
    int fresh = stat(a->log, &sb) != 0 || sb.st_size == 0;
    FILE *log = fopen(a->log, "a");
    if (!log) {
        fprintf(stderr, "gpfq quantize: error: cannot append to log %s: %s\n", a->log,
                strerror(errno));
        return EXIT_RUNTIME;
    }
    if (fresh)
        fputs("Model Name,Dataset,Quantization Batch Size,Original Top1 Accuracy,"
              "Quantized Top1 Accuracy,Original Top5 Accuracy,Quantized Top5 Accuracy,Bits,"
              "MLP_Alphabet_Scalar,CNN_Alphabet_Scalar,MLP_Percentile,CNN_Percentile,"
              "Stochastic Quantization,Regularizer,Lambda,Original Sparsity,Quantized Sparsity,"
              "Retain_rate,Fusion,Seed\n",
              log);
    const gpfq_quant_options *o = &a->q;
    fprintf(log, "%s,%s,%zu,%.4f,%.4f,%.4f,%.4f,%d,%g,%g,%g,%g,%s,%s,%g,%.6f,%.6f,%g,%s,%llu\n",
            model_name, gpfq_dataset_canonical(a->dataset), o->calib_images,
            (double)f->top1 / f->images, (double)q->top1 / q->images, (double)f->top5 / f->images,
            (double)q->top5 / q->images, o->bits, o->mlp_scalar, o->cnn_scalar, o->mlp_percentile,
            o->cnn_percentile, o->quantizer == GPFQ_QUANTIZER_STOCHASTIC ? "True" : "False",
            regularizer_name(o->quantizer), o->reg_lambda, float_sparsity, q_sparsity,
            o->retain_rate, o->fold_batchnorm ? "True" : "False", (unsigned long long)o->seed);
    if (fclose(log) != 0) {
        fprintf(stderr, "gpfq quantize: error: writing log %s failed: %s\n", a->log,
                strerror(errno));
        return EXIT_RUNTIME;
    }
    return 0;
}

/* Every layer's alphabet, before any work: an L0 lambda too large for a layer
 * is a bad value, reported with the layer's name. */
static int check_alphabets(const gpfq_model *m, const gpfq_quant_options *o) {
    for (int i = 0; i < o->n_ignore; i++)
        if (gpfq_model_find(m, o->ignore[i]) < 0)
            return cli_usage_error("quantize", "--ignore names '%s', which is not a node of %s",
                                   o->ignore[i], "the model (see gpfq info)");
    for (int i = 0; i < m->n_nodes; i++) {
        const gpfq_node *node = &m->nodes[i];
        if (!gpfq_node_is_quantizable(node)) continue;
        const int linear = node->op == GPFQ_OP_LINEAR;
        size_t rows = (size_t)node->weight_dims[0];
        gpfq_alphabet al;
        if (gpfq_alphabet_make(node->weight, rows, node->weight_count / rows, o->bits,
                               linear ? o->mlp_scalar : o->cnn_scalar,
                               linear ? o->mlp_percentile : o->cnn_percentile, o->quantizer,
                               o->reg_lambda, 0, &al) != GPFQ_OK)
            return cli_usage_error("quantize", "layer '%s': %s", node->name, gpfq_last_error());
    }
    return 0;
}

static void model_stem(const char *path, char *out, size_t size) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, size, "%.200s", base);
    size_t len = strlen(out);
    if (len > 3 && strcmp(out + len - 3, ".h5") == 0) out[len - 3] = '\0';
}

static char *quantization_json(const quantize_args *a, const char *model_path) {
    const gpfq_quant_options *o = &a->q;
    char *json = malloc(3072);
    if (!json) return NULL;
    snprintf(
        json, 3072,
        "{\"method\": \"%s\", \"bits\": %d, \"mlp_scalar\": %g, \"cnn_scalar\": %g, "
        "\"mlp_percentile\": %g, \"cnn_percentile\": %g, \"quantizer\": \"%s\", "
        "\"reg_lambda\": %g, \"calib_images\": %zu, \"calibration\": \"%s\", "
        "\"retain_rate\": %g, \"replacement\": %s, \"unfold\": \"%s\", \"fold_bn\": %s, "
        "\"bias_correction\": %s, \"keep_last_float\": %s, \"seed\": %llu, "
        "\"float_model\": \"%.2000s\", \"gpfq_version\": \"%s\"}",
        o->method == GPFQ_METHOD_MSQ ? "msq" : "gpfq", o->bits, o->mlp_scalar, o->cnn_scalar,
        o->mlp_percentile, o->cnn_percentile,
        o->quantizer == GPFQ_QUANTIZER_STOCHASTIC ? "stochastic" : regularizer_name(o->quantizer),
        o->reg_lambda, o->calib_images, o->calib_mode == GPFQ_CALIB_SHARED ? "shared" : "per-layer",
        o->retain_rate, o->with_replacement ? "true" : "false",
        o->unfold_stride_kernel ? "kernel" : "layer", o->fold_batchnorm ? "true" : "false",
        o->bias_correction ? "true" : "false", o->keep_last_float ? "true" : "false",
        (unsigned long long)o->seed, model_path, GPFQ_VERSION);
    return json;
}

int cmd_quantize(int argc, char **argv) {
    quantize_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    char model_path[PATH_MAX];
    if (gpfq_model_resolve(a.model_arg, a.dataset, model_path, sizeof model_path) != GPFQ_OK)
        return cli_usage_error("quantize", "%s", gpfq_last_error());
    cli_set_threads((int)a.threads);

    gpfq_model *model = NULL;
    if (gpfq_model_load(model_path, &model) != GPFQ_OK) return cli_fail("quantize", NULL);
    gpfq_dataset train = {0}, test = {0};
    gpfq_quant_result res = {0};
    char out_path[PATH_MAX] = "", stem[256];
    model_stem(model_path, stem, sizeof stem);
    if (!a.no_save) {
        if (a.out)
            snprintf(out_path, sizeof out_path, "%s", a.out);
        else
            snprintf(out_path, sizeof out_path, "%s_%s%d.h5", stem,
                     a.q.method == GPFQ_METHOD_MSQ ? "msq" : "gpfq", a.q.bits);
    }
    rc = check_alphabets(model, &a.q);
    if (!rc && (gpfq_dataset_open(a.dataset, a.data_dir, GPFQ_SPLIT_TEST, &test) != GPFQ_OK ||
                gpfq_eval_check(model, &test) != GPFQ_OK))
        rc = cli_fail("quantize", NULL);
    if (!rc && a.q.method == GPFQ_METHOD_GPFQ &&
        gpfq_dataset_open(a.dataset, a.data_dir, GPFQ_SPLIT_TRAIN, &train) != GPFQ_OK)
        rc = cli_fail("quantize", NULL);
    if (rc) goto done;

    printf("model     %s (%s, %zu parameters)\n", model_path, stem, gpfq_model_param_count(model));
    printf("config    %s, %d bits, scalar %g/%g (mlp/cnn), %s%s, bs %zu, %s calibration, "
           "retain %g, seed %llu\n",
           a.q.method == GPFQ_METHOD_MSQ ? "MSQ" : "GPFQ", a.q.bits, a.q.mlp_scalar, a.q.cnn_scalar,
           a.q.quantizer == GPFQ_QUANTIZER_STOCHASTIC ? "stochastic"
                                                      : regularizer_name(a.q.quantizer),
           a.q.reg_lambda > 0 ? " lambda" : "", a.q.calib_images,
           a.q.calib_mode == GPFQ_CALIB_SHARED ? "shared" : "per-layer", a.q.retain_rate,
           (unsigned long long)a.q.seed);
    if (a.q.method == GPFQ_METHOD_GPFQ && gpfq_calib_count(&a.q, &train) < a.q.calib_images) {
        fflush(stdout); /* after the config line, also where stdout is a pipe */
        fprintf(stderr,
                "gpfq quantize: warning: -bs %zu is more than the %zu training images; all of "
                "them calibrate\n",
                a.q.calib_images, gpfq_calib_count(&a.q, &train));
    }
    gpfq_eval_result float_eval, quant_eval;
    if ((rc = evaluate("float", model, &test, &a, &float_eval))) goto done;
    printf("quantizing\n");
    if (gpfq_quantize_model(model, a.q.method == GPFQ_METHOD_GPFQ ? &train : NULL, &a.q, &res,
                            print_layer, NULL) != GPFQ_OK) {
        rc = cli_fail("quantize", NULL);
        goto done;
    }
    printf("quantized %d layers in %.4f s", res.n_layers, res.seconds);
    if (a.q.method == GPFQ_METHOD_GPFQ) /* the draws and passes that make the layers' inputs */
        printf(" (forward passes %.4f s)", res.pass_seconds);
    printf("\n");
    if ((rc = evaluate("quantized", res.model, &test, &a, &quant_eval))) goto done;
    double fs = gpfq_model_sparsity(model), qs = gpfq_model_sparsity(res.model);
    printf("sparsity  float %.2f%%, quantized %.2f%%\n", 100 * fs, 100 * qs);
    printf("drop      top-1 %+.2f points\n", 100.0 * ((double)quant_eval.top1 / quant_eval.images -
                                                      (double)float_eval.top1 / float_eval.images));
    if (out_path[0]) {
        free(res.model->quantization);
        res.model->quantization = quantization_json(&a, model_path);
        if (!res.model->quantization) {
            gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the settings saved with the model");
            rc = cli_fail("quantize", NULL);
            goto done;
        }
        if (gpfq_model_save(res.model, out_path, (const int32_t *const *)res.codes) != GPFQ_OK) {
            rc = cli_fail("quantize", NULL);
            goto done;
        }
        printf("saved     %s\n", out_path);
    }
    if (a.log) {
        /* the name the user gave (lenet5), as the sweep's analysis names it; a path's stem */
        int is_path = strchr(a.model_arg, '/') || strstr(a.model_arg, ".h5");
        rc = append_log(&a, is_path ? stem : a.model_arg, &float_eval, &quant_eval, fs, qs);
        if (!rc) printf("logged    %s\n", a.log);
    }
done:
    gpfq_quant_result_free(&res);
    gpfq_dataset_free(&train);
    gpfq_dataset_free(&test);
    gpfq_model_free(model);
    return rc;
}
