/*
 * Job files: YAML read with libyaml's document API (which keeps line numbers),
 * checked key by key, and expanded into tasks with stable ids.
 */
#include "job.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

typedef struct {
    const char *path;
    yaml_document_t *doc;
} parse_ctx;

static int line_of(const yaml_node_t *node) {
    return node ? (int)node->start_mark.line + 1 : 0;
}

static gpfq_status job_fail(const parse_ctx *c, const yaml_node_t *node, const char *key,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static gpfq_status job_fail(const parse_ctx *c, const yaml_node_t *node, const char *key,
                            const char *fmt, ...) {
    char msg[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(msg, sizeof msg, fmt, args);
    va_end(args);
    return gpfq_fail(GPFQ_ERR_ARG, "%s:%d: %s: %s", c->path, line_of(node), key, msg);
}

static const char *scalar_text(const yaml_node_t *node) {
    return node && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value : NULL;
}

static gpfq_status get_string(const parse_ctx *c, const yaml_node_t *node, const char *key,
                              char **out) {
    const char *text = scalar_text(node);
    if (!text || !*text) return job_fail(c, node, key, "expects a text value");
    free(*out);
    *out = strdup(text);
    return *out ? GPFQ_OK : job_fail(c, node, key, "out of memory for the text");
}

static int parse_number(const char *text, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static gpfq_status get_number(const parse_ctx *c, const yaml_node_t *node, const char *key,
                              double min, double max, int whole, double *out) {
    const char *text = scalar_text(node);
    double v;
    if (!text || !parse_number(text, &v))
        return job_fail(c, node, key, "expects a number, got '%s'", text ? text : "(not a scalar)");
    if (v < min || v > max || (whole && v != floor(v)))
        return job_fail(c, node, key, "expects %s from %g to %g, got %s",
                        whole ? "a whole number" : "a number", min, max, text);
    *out = v;
    return GPFQ_OK;
}

static gpfq_status get_bool(const parse_ctx *c, const yaml_node_t *node, const char *key,
                            int *out) {
    const char *text = scalar_text(node);
    if (text && (!strcasecmp(text, "true") || !strcasecmp(text, "yes") || !strcmp(text, "1")))
        *out = 1;
    else if (text && (!strcasecmp(text, "false") || !strcasecmp(text, "no") || !strcmp(text, "0")))
        *out = 0;
    else
        return job_fail(c, node, key, "expects true or false, got '%s'", text ? text : "?");
    return GPFQ_OK;
}

/* ---- grid values ---- */

static double tidy(double v) {
    return round(v * 1e9) / 1e9;
}

static gpfq_status list_push(sweep_list *l, double v) {
    if (l->count >= SWEEP_MAX_VALUES)
        return gpfq_fail(GPFQ_ERR_ARG, "more than %d values", SWEEP_MAX_VALUES);
    double *grown = realloc(l->values, (size_t)(l->count + 1) * sizeof(double));
    if (!grown) return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the values");
    l->values = grown;
    for (int i = 0; i < l->count; i++)
        if (l->values[i] == v) return GPFQ_OK; /* a repeated value adds nothing */
    l->values[l->count++] = tidy(v);
    return GPFQ_OK;
}

/* Values from start to stop (inclusive, within rounding) by step. */
static gpfq_status push_range(sweep_list *l, double start, double stop, double step,
                              const char **why) {
    if (!(step > 0)) {
        *why = "step must be > 0";
        return GPFQ_ERR_ARG;
    }
    if (stop < start) {
        *why = "the range is empty (stop < start)";
        return GPFQ_ERR_ARG;
    }
    double count = floor((stop - start) / step + 1e-9) + 1;
    if (count > SWEEP_MAX_VALUES) {
        *why = "the range has too many points";
        return GPFQ_ERR_ARG;
    }
    for (int i = 0; i < (int)count; i++) GPFQ_TRY(list_push(l, start + i * step));
    return GPFQ_OK;
}

/* Names of enumerated grid keys. */
static int enum_value(const char *key, const char *text, double *out) {
    static const struct {
        const char *key, *name;
        double value;
    } names[] = {
        {"method", "gpfq", 0},      {"method", "msq", 1},     {"regularizer", "none", 0},
        {"regularizer", "L1", 1},   {"regularizer", "L0", 2}, {"stochastic", "true", 1},
        {"stochastic", "false", 0}, {"stochastic", "yes", 1}, {"stochastic", "no", 0},
        {"regularizer", "null", 0},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(names[i].key, key) && !strcasecmp(names[i].name, text)) {
            *out = names[i].value;
            return 1;
        }
    return 0;
}

typedef struct {
    const char *key;
    double min, max;
    int whole;
    int is_enum;
    const char *choices;
} grid_key;

static const grid_key grid_keys[] = {
    {"method", 0, 1, 1, 1, "gpfq, msq"},         {"bits", 1, 16, 1, 0, NULL},
    {"scalar", 1e-9, 1e6, 0, 0, NULL},           {"mlp_scalar", 1e-9, 1e6, 0, 0, NULL},
    {"cnn_scalar", 1e-9, 1e6, 0, 0, NULL},       {"percentile", 1e-9, 1, 0, 0, NULL},
    {"regularizer", 0, 2, 1, 1, "none, L1, L0"}, {"lambda", 0, 1e6, 0, 0, NULL},
    {"stochastic", 0, 1, 1, 1, "true, false"},   {"seed", 0, 9007199254740992.0, 1, 0, NULL},
};

static sweep_list *grid_list(sweep_job *job, const char *key) {
    if (!strcmp(key, "method")) return &job->method;
    if (!strcmp(key, "bits")) return &job->bits;
    if (!strcmp(key, "scalar")) return &job->scalar;
    if (!strcmp(key, "mlp_scalar")) return &job->mlp_scalar;
    if (!strcmp(key, "cnn_scalar")) return &job->cnn_scalar;
    if (!strcmp(key, "percentile")) return &job->percentile;
    if (!strcmp(key, "regularizer")) return &job->regularizer;
    if (!strcmp(key, "lambda")) return &job->lambda;
    if (!strcmp(key, "stochastic")) return &job->stochastic;
    if (!strcmp(key, "seed")) return &job->seed;
    return NULL;
}

static const grid_key *find_grid_key(const char *key) {
    for (size_t i = 0; i < sizeof grid_keys / sizeof grid_keys[0]; i++)
        if (!strcmp(grid_keys[i].key, key)) return &grid_keys[i];
    return NULL;
}

static gpfq_status grid_value(const parse_ctx *c, const yaml_node_t *node, const grid_key *k,
                              double *out) {
    const char *text = scalar_text(node);
    if (k->is_enum) {
        if (text && enum_value(k->key, text, out)) return GPFQ_OK;
        return job_fail(c, node, k->key, "expects one of %s, got '%s'", k->choices,
                        text ? text : "(not a scalar)");
    }
    return get_number(c, node, k->key, k->min, k->max, k->whole, out);
}

/* list_push for a value of the job file: a failure names the file, the line and the key */
static gpfq_status grid_push(const parse_ctx *c, const yaml_node_t *node, const grid_key *k,
                             sweep_list *l, double v) {
    return list_push(l, v) == GPFQ_OK ? GPFQ_OK
                                      : job_fail(c, node, k->key, "%s", gpfq_last_error());
}

static gpfq_status parse_grid_entry(const parse_ctx *c, const yaml_node_t *node, const grid_key *k,
                                    sweep_list *l) {
    free(l->values);
    l->values = NULL;
    l->count = 0;
    l->line = line_of(node);
    double v;
    if (node->type == YAML_SCALAR_NODE) {
        GPFQ_TRY(grid_value(c, node, k, &v));
        return grid_push(c, node, k, l, v);
    }
    if (node->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; it++) {
            GPFQ_TRY(grid_value(c, yaml_document_get_node(c->doc, *it), k, &v));
            GPFQ_TRY(grid_push(c, node, k, l, v));
        }
        if (l->count == 0) return job_fail(c, node, k->key, "the list is empty");
        return GPFQ_OK;
    }
    /* a range {start, stop, step} */
    if (k->is_enum) return job_fail(c, node, k->key, "expects a value or a list, not a mapping");
    double start = NAN, stop = NAN, step = NAN;
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
         p++) {
        yaml_node_t *key = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(c->doc, p->value);
        const char *name = scalar_text(key);
        double *slot = !name                    ? NULL
                       : !strcmp(name, "start") ? &start
                       : !strcmp(name, "stop")  ? &stop
                       : !strcmp(name, "step")  ? &step
                                                : NULL;
        if (!slot)
            return job_fail(c, key, k->key, "unknown range key '%s' (use start, stop, step)",
                            name ? name : "?");
        GPFQ_TRY(get_number(c, val, name, -1e9, 1e9, 0, slot));
    }
    if (isnan(start) || isnan(stop) || isnan(step))
        return job_fail(c, node, k->key, "a range needs start, stop and step");
    const char *why = NULL;
    gpfq_status st = push_range(l, start, stop, step, &why);
    if (st != GPFQ_OK) return job_fail(c, node, k->key, "%s", why ? why : gpfq_last_error());
    for (int i = 0; i < l->count; i++)
        if (l->values[i] < k->min || l->values[i] > k->max ||
            (k->whole && l->values[i] != floor(l->values[i])))
            return job_fail(c, node, k->key, "the range reaches %g, outside %g..%g%s", l->values[i],
                            k->min, k->max, k->whole ? " (whole numbers)" : "");
    return GPFQ_OK;
}

/* ---- sections ---- */

typedef gpfq_status (*section_fn)(const parse_ctx *c, const char *key, yaml_node_t *value,
                                  sweep_job *job);

static gpfq_status for_each_pair(const parse_ctx *c, yaml_node_t *map, const char *section,
                                 section_fn fn, sweep_job *job) {
    if (map->type != YAML_MAPPING_NODE)
        return job_fail(c, map, section, "expects a mapping of keys to values");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *key = yaml_document_get_node(c->doc, p->key);
        const char *name = scalar_text(key);
        if (!name) return job_fail(c, key, section, "keys must be plain words");
        gpfq_status st = fn(c, name, yaml_document_get_node(c->doc, p->value), job);
        if (st == GPFQ_ERR_STATE) /* unknown key */
            return job_fail(c, key, name, "unknown key in %s", section);
        GPFQ_TRY(st);
    }
    return GPFQ_OK;
}

static gpfq_status dataset_key(const parse_ctx *c, const char *key, yaml_node_t *v, sweep_job *j) {
    if (!strcmp(key, "name")) {
        GPFQ_TRY(get_string(c, v, key, &j->dataset));
        if (!gpfq_dataset_canonical(j->dataset))
            return job_fail(c, v, key,
                            "unknown data set '%s'; known: fashion-mnist, mnist, cifar10",
                            j->dataset);
        return GPFQ_OK;
    }
    if (!strcmp(key, "data_dir")) return get_string(c, v, key, &j->data_dir);
    return GPFQ_ERR_STATE;
}

static gpfq_status calibration_key(const parse_ctx *c, const char *key, yaml_node_t *v,
                                   sweep_job *j) {
    double x;
    gpfq_quant_options *o = &j->base;
    if (!strcmp(key, "images")) {
        GPFQ_TRY(get_number(c, v, key, 1, 1 << 20, 1, &x));
        o->calib_images = (size_t)x;
    } else if (!strcmp(key, "retain_rate")) {
        GPFQ_TRY(get_number(c, v, key, 1e-9, 1, 0, &o->retain_rate));
    } else if (!strcmp(key, "seed")) {
        GPFQ_TRY(get_number(c, v, key, 0, 9007199254740992.0, 1, &x));
        o->calib_seed = (uint64_t)x;
    } else if (!strcmp(key, "replacement")) {
        return get_bool(c, v, key, &o->with_replacement);
    } else if (!strcmp(key, "mode")) {
        const char *t = scalar_text(v);
        if (t && !strcmp(t, "shared"))
            o->calib_mode = GPFQ_CALIB_SHARED;
        else if (t && !strcmp(t, "per-layer"))
            o->calib_mode = GPFQ_CALIB_PER_LAYER;
        else
            return job_fail(c, v, key, "expects shared or per-layer, got '%s'", t ? t : "?");
    } else if (!strcmp(key, "unfold")) {
        const char *t = scalar_text(v);
        if (t && !strcmp(t, "layer"))
            o->unfold_stride_kernel = 0;
        else if (t && !strcmp(t, "kernel"))
            o->unfold_stride_kernel = 1;
        else
            return job_fail(c, v, key, "expects layer or kernel, got '%s'", t ? t : "?");
    } else {
        return GPFQ_ERR_STATE;
    }
    return GPFQ_OK;
}

static gpfq_status eval_key(const parse_ctx *c, const char *key, yaml_node_t *v, sweep_job *j) {
    double x;
    if (!strcmp(key, "batch")) {
        GPFQ_TRY(get_number(c, v, key, 1, 1 << 20, 1, &x));
        j->eval_batch = (size_t)x;
    } else if (!strcmp(key, "limit")) {
        GPFQ_TRY(get_number(c, v, key, 0, 1e12, 1, &x));
        j->eval_limit = (size_t)x;
    } else {
        return GPFQ_ERR_STATE;
    }
    return GPFQ_OK;
}

static gpfq_status options_key(const parse_ctx *c, const char *key, yaml_node_t *v, sweep_job *j) {
    if (!strcmp(key, "fold_bn")) return get_bool(c, v, key, &j->base.fold_batchnorm);
    if (!strcmp(key, "bias_correction")) return get_bool(c, v, key, &j->base.bias_correction);
    if (!strcmp(key, "keep_last_float")) return get_bool(c, v, key, &j->base.keep_last_float);
    if (!strcmp(key, "form")) {
        const char *t = scalar_text(v);
        static const char *const forms[] = {"auto", "gram", "ublock", "ref"};
        for (int i = 0; t && i < 4; i++)
            if (!strcmp(t, forms[i])) {
                j->base.form = (gpfq_form)i;
                return GPFQ_OK;
            }
        return job_fail(c, v, key, "expects auto, gram, ublock or ref");
    }
    if (!strcmp(key, "ignore")) {
        /* a repeated key replaces the list: free the one given before */
        for (int i = 0; i < j->n_ignore; i++) free(j->ignore[i]);
        free(j->ignore);
        j->ignore = NULL;
        j->n_ignore = 0;
        if (v->type == YAML_SCALAR_NODE) {
            if (!(j->ignore = calloc(1, sizeof(char *))))
                return job_fail(c, v, key, "out of memory for the list");
            j->n_ignore = 1;
            return get_string(c, v, key, &j->ignore[0]);
        }
        if (v->type != YAML_SEQUENCE_NODE) return job_fail(c, v, key, "expects a list of names");
        int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
        if (!(j->ignore = calloc((size_t)n + 1, sizeof(char *))))
            return job_fail(c, v, key, "out of memory for the list");
        for (int i = 0; i < n; i++) {
            GPFQ_TRY(get_string(c, yaml_document_get_node(c->doc, v->data.sequence.items.start[i]),
                                key, &j->ignore[i]));
            j->n_ignore = i + 1;
        }
        return GPFQ_OK;
    }
    return GPFQ_ERR_STATE;
}

static gpfq_status grid_key_fn(const parse_ctx *c, const char *key, yaml_node_t *v, sweep_job *j) {
    const grid_key *k = find_grid_key(key);
    if (!k) return GPFQ_ERR_STATE;
    return parse_grid_entry(c, v, k, grid_list(j, key));
}

static gpfq_status top_key(const parse_ctx *c, const char *key, yaml_node_t *v, sweep_job *j) {
    if (!strcmp(key, "model")) return get_string(c, v, key, &j->model);
    if (!strcmp(key, "output")) return get_string(c, v, key, &j->output);
    if (!strcmp(key, "cache")) return get_string(c, v, key, &j->cache);
    if (!strcmp(key, "dataset")) {
        if (v->type == YAML_SCALAR_NODE) return dataset_key(c, "name", v, j);
        return for_each_pair(c, v, "dataset", dataset_key, j);
    }
    if (!strcmp(key, "calibration")) return for_each_pair(c, v, "calibration", calibration_key, j);
    if (!strcmp(key, "eval")) return for_each_pair(c, v, "eval", eval_key, j);
    if (!strcmp(key, "options")) return for_each_pair(c, v, "options", options_key, j);
    if (!strcmp(key, "grid")) return for_each_pair(c, v, "grid", grid_key_fn, j);
    return GPFQ_ERR_STATE;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        gpfq_fail(GPFQ_ERR_IO, "%s: cannot open the job file: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    size_t got;
    while (text && (got = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) {
            char *grown = cap < (1 << 24) ? realloc(text, cap *= 2) : NULL;
            if (!grown) free(text);
            text = grown;
        }
    }
    fclose(f);
    if (!text) {
        gpfq_fail(GPFQ_ERR_FORMAT, "%s: the job file is too large or memory ran out", path);
        return NULL;
    }
    text[len] = '\0';
    return text;
}

static gpfq_status set_default(sweep_list *l, double v) {
    if (l->count) return GPFQ_OK;
    return list_push(l, v);
}

gpfq_status sweep_job_load(const char *path, sweep_job *job) {
    memset(job, 0, sizeof *job);
    gpfq_quant_options_default(&job->base);
    job->eval_batch = 256;
    if (!(job->path = strdup(path)))
        return gpfq_fail(GPFQ_ERR_NOMEM, "%s: out of memory for its name", path);
    if (!(job->text = read_text(path))) return GPFQ_ERR_IO;
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return gpfq_fail(GPFQ_ERR_NOMEM, "libyaml init failed");
    yaml_parser_set_input_string(&parser, (const unsigned char *)job->text, strlen(job->text));
    if (!yaml_parser_load(&parser, &doc)) {
        gpfq_status st = gpfq_fail(
            GPFQ_ERR_ARG, "%s:%d: not valid YAML: %s %s", path, (int)parser.problem_mark.line + 1,
            parser.problem ? parser.problem : "parse error", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return st;
    }
    parse_ctx c = {path, &doc};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    gpfq_status st = root ? for_each_pair(&c, root, "the job file", top_key, job)
                          : gpfq_fail(GPFQ_ERR_ARG, "%s: the job file is empty", path);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    GPFQ_TRY(st);
    if (!job->model)
        return gpfq_fail(GPFQ_ERR_ARG, "%s: model: missing (a shipped name or a file)", path);
    if (!job->output)
        return gpfq_fail(GPFQ_ERR_ARG, "%s: output: missing (the results file, e.g. results.h5)",
                         path);
    if (!job->dataset && !(job->dataset = strdup("fashion-mnist"))) return GPFQ_ERR_NOMEM;
    GPFQ_TRY(set_default(&job->method, 0));
    GPFQ_TRY(set_default(&job->bits, 4));
    GPFQ_TRY(set_default(&job->percentile, 1));
    GPFQ_TRY(set_default(&job->regularizer, 0));
    GPFQ_TRY(set_default(&job->lambda, 0));
    GPFQ_TRY(set_default(&job->stochastic, 0));
    GPFQ_TRY(set_default(&job->seed, 0));
    if (job->scalar.count && (job->mlp_scalar.count || job->cnn_scalar.count))
        return gpfq_fail(GPFQ_ERR_ARG,
                         "%s:%d: scalar: give either scalar or mlp_scalar/cnn_scalar, not both",
                         path, job->scalar.line);
    if (!job->scalar.count && !job->mlp_scalar.count && !job->cnn_scalar.count)
        GPFQ_TRY(set_default(&job->scalar, 1.16));
    GPFQ_TRY(set_default(&job->mlp_scalar, 1.16));
    GPFQ_TRY(set_default(&job->cnn_scalar, 1.16));
    job->base.ignore = (const char *const *)job->ignore;
    job->base.n_ignore = job->n_ignore;
    return GPFQ_OK;
}

void sweep_job_free(sweep_job *job) {
    sweep_list *lists[] = {&job->method,     &job->bits,       &job->scalar,      &job->mlp_scalar,
                           &job->cnn_scalar, &job->percentile, &job->regularizer, &job->lambda,
                           &job->stochastic, &job->seed};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) free(lists[i]->values);
    for (int i = 0; i < job->n_ignore; i++) free(job->ignore[i]);
    free(job->ignore);
    free(job->path), free(job->text), free(job->model), free(job->model_path), free(job->dataset);
    free(job->data_dir), free(job->output), free(job->cache);
    memset(job, 0, sizeof *job);
}

gpfq_status sweep_job_override(sweep_job *job, const char *key, const char *text) {
    const grid_key *k = find_grid_key(key);
    GPFQ_ASSERT(k != NULL);
    sweep_list *l = grid_list(job, key);
    free(l->values);
    l->values = NULL;
    l->count = 0;
    l->line = 0;
    if (!strcmp(key, "scalar")) job->mlp_scalar.count = job->cnn_scalar.count = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", text);
    double a, b, s;
    char *c1 = strchr(buf, ':');
    if (c1 && !k->is_enum) {
        char *c2 = strchr(c1 + 1, ':');
        *c1 = '\0';
        if (c2) *c2 = '\0';
        if (!c2 || !parse_number(buf, &a) || !parse_number(c1 + 1, &b) || !parse_number(c2 + 1, &s))
            return gpfq_fail(GPFQ_ERR_ARG, "%s: a range is START:STOP:STEP, got '%s'", key, text);
        const char *why = NULL;
        gpfq_status st = push_range(l, a, b, s, &why);
        if (st != GPFQ_OK)
            return why ? gpfq_fail(st, "%s '%s': %s", key, text, why)
                       : gpfq_fail_context(st, "%s '%s': ", key, text);
    } else {
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            double v;
            if (!(k->is_enum ? enum_value(key, tok, &v) : parse_number(tok, &v)))
                return gpfq_fail(GPFQ_ERR_ARG, "%s: '%s' is not a valid value%s%s", key, tok,
                                 k->is_enum ? "; use " : "", k->is_enum ? k->choices : "");
            const gpfq_status pushed = list_push(l, v);
            if (pushed != GPFQ_OK) return gpfq_fail_context(pushed, "%s: ", key);
        }
    }
    if (l->count == 0) return gpfq_fail(GPFQ_ERR_ARG, "%s: no values in '%s'", key, text);
    for (int i = 0; i < l->count; i++)
        if (l->values[i] < k->min || l->values[i] > k->max ||
            (k->whole && l->values[i] != floor(l->values[i])))
            return gpfq_fail(GPFQ_ERR_ARG, "%s: %g is outside %g..%g%s", key, l->values[i], k->min,
                             k->max, k->whole ? " (whole numbers)" : "");
    return GPFQ_OK;
}

uint64_t sweep_hash_bytes(const void *data, size_t n, uint64_t seed) {
    uint64_t h = seed ? seed : 1469598103934665603ULL;
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

gpfq_status sweep_hash_file(const char *path, uint64_t *hash) {
    FILE *f = fopen(path, "rb");
    if (!f) return gpfq_fail(GPFQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char buf[1 << 16];
    size_t got;
    uint64_t h = 0;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) h = sweep_hash_bytes(buf, got, h);
    int bad = ferror(f);
    fclose(f);
    if (bad) return gpfq_fail(GPFQ_ERR_IO, "%s: read error", path);
    *hash = h;
    return GPFQ_OK;
}

gpfq_status sweep_job_context(const sweep_job *job, char *out, size_t size) {
    uint64_t model_hash;
    GPFQ_TRY(sweep_hash_file(job->model_path, &model_hash));
    const gpfq_quant_options *o = &job->base;
    int used =
        snprintf(out, size,
                 "model=%016llx;data=%s;calib=%zu,%s,%llu;retain=%.9g;repl=%d;unfold=%s;"
                 "fold_bn=%d;bias_corr=%d;keep_last=%d;eval_limit=%zu;ignore=",
                 (unsigned long long)model_hash, gpfq_dataset_canonical(job->dataset),
                 o->calib_images, o->calib_mode == GPFQ_CALIB_SHARED ? "shared" : "per-layer",
                 (unsigned long long)o->calib_seed, o->retain_rate, o->with_replacement,
                 o->unfold_stride_kernel ? "kernel" : "layer", o->fold_batchnorm,
                 o->bias_correction, o->keep_last_float, job->eval_limit);
    for (int i = 0; i < job->n_ignore && used > 0 && (size_t)used < size; i++)
        used += snprintf(out + used, size - (size_t)used, "%s%s", i ? "," : "", job->ignore[i]);
    if (used < 0 || (size_t)used >= size) return gpfq_fail(GPFQ_ERR_ARG, "job context too long");
    return GPFQ_OK;
}

static const char *quantizer_name(gpfq_quantizer q) {
    switch (q) {
    case GPFQ_QUANTIZER_NEAREST:
        return "nearest";
    case GPFQ_QUANTIZER_L1:
        return "L1";
    case GPFQ_QUANTIZER_L0:
        return "L0";
    case GPFQ_QUANTIZER_STOCHASTIC:
        return "stochastic";
    }
    return "?";
}

/* Fills one task from one grid point; returns 0 when the point is invalid
 * (stochastic with a regularizer) and should be skipped. */
static int make_task(const sweep_job *job, const char *context, const double *v, sweep_task *t) {
    enum { METHOD, BITS, MLP, CNN, PCT, REG, LAMBDA, STOCH, SEED };
    gpfq_quant_options q = job->base;
    q.method = v[METHOD] ? GPFQ_METHOD_MSQ : GPFQ_METHOD_GPFQ;
    q.bits = (int)v[BITS];
    q.mlp_scalar = v[MLP];
    q.cnn_scalar = v[CNN];
    q.mlp_percentile = q.cnn_percentile = v[PCT];
    int reg = (int)v[REG];
    if (v[STOCH] && reg) return 0;
    q.quantizer = v[STOCH]   ? GPFQ_QUANTIZER_STOCHASTIC
                  : reg == 1 ? GPFQ_QUANTIZER_L1
                  : reg == 2 ? GPFQ_QUANTIZER_L0
                             : GPFQ_QUANTIZER_NEAREST;
    q.reg_lambda = reg ? v[LAMBDA] : 0.0; /* lambda means nothing without a regularizer */
    /* the seed drives patch sampling and stochastic rounding; MSQ without
     * stochastic rounding uses neither */
    q.seed = (q.method == GPFQ_METHOD_MSQ && !v[STOCH]) ? 0 : (uint64_t)v[SEED];
    snprintf(t->canonical, sizeof t->canonical,
             "%s;method=%s;bits=%d;mlp_scalar=%.9g;cnn_scalar=%.9g;percentile=%.9g;"
             "quantizer=%s;lambda=%.9g;seed=%llu",
             context, q.method == GPFQ_METHOD_MSQ ? "msq" : "gpfq", q.bits, q.mlp_scalar,
             q.cnn_scalar, q.mlp_percentile, quantizer_name(q.quantizer), q.reg_lambda,
             (unsigned long long)q.seed);
    snprintf(t->id, sizeof t->id, "%016llx",
             (unsigned long long)sweep_hash_bytes(t->canonical, strlen(t->canonical), 0));
    t->q = q;
    return 1;
}

gpfq_status sweep_job_tasks(const sweep_job *job, const char *context, sweep_task **tasks,
                            int *count) {
    const sweep_list *scalar_mlp = job->scalar.count ? &job->scalar : &job->mlp_scalar;
    const sweep_list *scalar_cnn = job->scalar.count ? NULL : &job->cnn_scalar;
    const sweep_list *dims[] = {&job->method, &job->bits,       scalar_mlp,
                                scalar_cnn,   &job->percentile, &job->regularizer,
                                &job->lambda, &job->stochastic, &job->seed};
    enum { N_DIMS = 9 };
    double total = 1;
    for (int i = 0; i < N_DIMS; i++) total *= dims[i] ? dims[i]->count : 1;
    if (total > 20000)
        return gpfq_fail(GPFQ_ERR_ARG, "the grid has %.0f points; at most 20000 per job", total);
    sweep_task *list = calloc((size_t)total, sizeof(sweep_task));
    if (!list) return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for %.0f tasks", total);
    int n = 0, idx[N_DIMS] = {0};
    for (long p = 0; p < (long)total; p++) {
        double v[N_DIMS];
        for (int i = 0; i < N_DIMS; i++)
            v[i] = dims[i] ? dims[i]->values[idx[i]] : v[2]; /* cnn = mlp when one scalar */
        sweep_task t;
        if (make_task(job, context, v, &t)) {
            int dup = 0;
            for (int k = 0; k < n && !dup; k++) dup = strcmp(list[k].id, t.id) == 0;
            if (!dup) list[n++] = t;
        }
        for (int i = N_DIMS - 1; i >= 0; i--) { /* odometer, last dimension fastest */
            int size = dims[i] ? dims[i]->count : 1;
            if (++idx[i] < size) break;
            idx[i] = 0;
        }
    }
    if (n == 0) {
        free(list);
        return gpfq_fail(GPFQ_ERR_ARG, "the grid yields no valid task (stochastic rounding takes "
                                       "no regularizer)");
    }
    *tasks = list;
    *count = n;
    return GPFQ_OK;
}
