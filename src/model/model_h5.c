/*
 * Reading and writing model files (docs/model-format.md). The reader fills a
 * gpfq_model and hands it to gpfq_model_validate(), so that every error names the
 * file, the node and the field at fault.
 */
#include "gpfq/model.h"

#include "../core/h5util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *path;
    int index;
    const char *name;
} node_where;

static gpfq_status at_node(gpfq_status st, const node_where *w) {
    return gpfq_fail_context(st, "%s: node %d '%s': ", w->path, w->index, w->name);
}

/* Optional int[2] attribute with a default. */
static gpfq_status read_pair(hid_t g, const char *attr, int *out, int dflt0, int dflt1) {
    out[0] = dflt0;
    out[1] = dflt1;
    if (!gpfq_h5_has_attr(g, attr)) return GPFQ_OK;
    return gpfq_h5_attr_ints(g, attr, out, 2);
}

static gpfq_status read_int(hid_t g, const char *attr, int *out, int dflt) {
    *out = dflt;
    if (!gpfq_h5_has_attr(g, attr)) return GPFQ_OK;
    return gpfq_h5_attr_ints(g, attr, out, 1);
}

/* Reads a per-channel parameter vector that must hold `count` values. */
static gpfq_status read_vector(hid_t g, const char *name, size_t count, float **out) {
    size_t n = 0;
    GPFQ_TRY(gpfq_h5_read_floats(g, name, out, &n));
    if (n != count)
        return gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' holds %zu values, expected %zu", name, n,
                         count);
    for (size_t i = 0; i < n; i++)
        if (!isfinite((*out)[i]))
            return gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' holds a non-finite value at %zu", name,
                             i);
    return GPFQ_OK;
}

static gpfq_status codes_to_weight(hid_t g, gpfq_node *node) {
    int32_t *codes = NULL;
    size_t n = 0;
    double step = 0.0, offset = 0.0;
    GPFQ_TRY(gpfq_h5_read_ints(g, "weight_codes", &codes, &n));
    gpfq_status st = gpfq_h5_attr_doubles(g, "weight_step", &step, 1);
    if (st == GPFQ_OK && gpfq_h5_has_attr(g, "weight_offset"))
        st = gpfq_h5_attr_doubles(g, "weight_offset", &offset, 1);
    if (st == GPFQ_OK && (!(step > 0.0) || !isfinite(step) || !(offset >= 0.0)))
        st = gpfq_fail(GPFQ_ERR_FORMAT,
                       "attribute 'weight_step' must be > 0 and 'weight_offset' >= 0");
    if (st == GPFQ_OK && !(node->weight = gpfq_malloc(n * sizeof(float), "weights")))
        st = GPFQ_ERR_NOMEM;
    if (st == GPFQ_OK) {
        /* in float, as the quantizer computes its levels */
        const float fstep = (float)step, foffset = (float)offset;
        for (size_t i = 0; st == GPFQ_OK && i < n; i++) {
            int32_t c = codes[i];
            /* in 64 bits: a corrupt code of INT32_MIN has no int32 magnitude */
            int64_t level = c < 0 ? -(int64_t)c : c;
            float mag = foffset > 0.0f ? (c == 0 ? 0.0f : foffset + fstep * (float)(level - 1))
                                       : fstep * (float)level;
            node->weight[i] = c < 0 ? -mag : mag;
            /* a step or offset finite as a double can overflow float (1e304 -> inf, and
             * 0 * inf is NaN); float weights are checked the same way in read_weight */
            if (!isfinite(node->weight[i]))
                st = gpfq_fail(GPFQ_ERR_FORMAT,
                               "dataset 'weight_codes': code %d at flat index %zu gives a "
                               "non-finite weight (weight_step %g, weight_offset %g)",
                               (int)c, i, step, offset);
        }
    }
    if (st == GPFQ_OK) {
        node->weight_count = n;
        node->quantized = 1;
        node->weight_step = (float)step;
        node->weight_offset = (float)offset;
    }
    free(codes);
    return st;
}

static gpfq_status read_weight(hid_t g, gpfq_node *node) {
    const char *name = gpfq_h5_has_link(g, "weight_codes") ? "weight_codes" : "weight";
    hsize_t dims[4];
    int rank = 0;
    GPFQ_TRY(gpfq_h5_dataset_dims(g, name, &rank, dims, 4));
    node->weight_rank = rank;
    for (int i = 0; i < rank; i++) {
        if (dims[i] == 0 || dims[i] > (hsize_t)1 << 30)
            return gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' has an empty or huge dimension", name);
        node->weight_dims[i] = (int)dims[i];
    }
    if (strcmp(name, "weight_codes") == 0) return codes_to_weight(g, node);
    GPFQ_TRY(gpfq_h5_read_floats(g, "weight", &node->weight, &node->weight_count));
    for (size_t i = 0; i < node->weight_count; i++)
        if (!isfinite(node->weight[i]))
            return gpfq_fail(GPFQ_ERR_FORMAT,
                             "dataset 'weight' holds a non-finite value at flat index %zu", i);
    return GPFQ_OK;
}

/* Splits "a,b" and resolves names against earlier nodes. */
static gpfq_status resolve_inputs(const gpfq_model *model, int index, const char *text,
                                  gpfq_node *node) {
    char buf[2 * GPFQ_NAME_MAX + 8];
    if (strlen(text) >= sizeof buf)
        return gpfq_fail(GPFQ_ERR_FORMAT, "attribute 'inputs' is too long: '%.60s...'", text);
    strcpy(buf, text);
    node->n_inputs = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        size_t len = strlen(tok);
        while (len && tok[len - 1] == ' ') tok[--len] = '\0';
        if (node->n_inputs == GPFQ_MAX_INPUTS)
            return gpfq_fail(GPFQ_ERR_FORMAT, "attribute 'inputs' ('%s') names too many nodes",
                             text);
        int src = GPFQ_GRAPH_INPUT;
        if (strcmp(tok, "input") != 0) {
            src = -2;
            for (int j = 0; j < index; j++)
                if (strcmp(model->nodes[j].name, tok) == 0) src = j;
            if (src == -2)
                return gpfq_fail(GPFQ_ERR_FORMAT,
                                 "attribute 'inputs' names '%s', which is not an earlier node",
                                 tok);
        }
        node->inputs[node->n_inputs++] = src;
    }
    return GPFQ_OK;
}

static gpfq_status read_node_fields(hid_t g, gpfq_model *model, int index, gpfq_node *node) {
    char *name = NULL, *op = NULL, *inputs = NULL;
    gpfq_status st = gpfq_h5_attr_string(g, "name", &name);
    if (st == GPFQ_OK && strlen(name) >= GPFQ_NAME_MAX)
        st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute 'name' is longer than %d bytes",
                       GPFQ_NAME_MAX - 1);
    if (st == GPFQ_OK) strcpy(node->name, name);
    for (int j = 0; st == GPFQ_OK && j < index; j++)
        if (strcmp(model->nodes[j].name, node->name) == 0)
            st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute 'name' repeats the name of node %d", j);
    if (st == GPFQ_OK) st = gpfq_h5_attr_string(g, "op", &op);
    if (st == GPFQ_OK && (node->op = gpfq_op_from_name(op)) == GPFQ_OP_COUNT)
        st = gpfq_fail(GPFQ_ERR_FORMAT,
                       "attribute 'op' is '%s', not a known op (linear, conv2d, batchnorm2d, relu, "
                       "maxpool2d, avgpool2d, adaptive_avgpool2d, flatten, add, identity, dropout)",
                       op);
    if (st == GPFQ_OK) st = gpfq_h5_attr_string(g, "inputs", &inputs);
    if (st == GPFQ_OK) st = resolve_inputs(model, index, inputs, node);
    free(name);
    free(op);
    free(inputs);
    GPFQ_TRY(st);

    node->groups = 1;
    node->eps = 1e-5f;
    node->count_include_pad = 1;
    int pool = node->op == GPFQ_OP_MAXPOOL2D || node->op == GPFQ_OP_AVGPOOL2D;
    switch (node->op) {
    case GPFQ_OP_LINEAR:
        GPFQ_TRY(read_weight(g, node));
        if (gpfq_h5_has_link(g, "bias"))
            GPFQ_TRY(read_vector(g, "bias", (size_t)node->weight_dims[0], &node->bias));
        return GPFQ_OK;
    case GPFQ_OP_CONV2D:
        GPFQ_TRY(read_weight(g, node));
        GPFQ_TRY(read_pair(g, "stride", node->stride, 1, 1));
        GPFQ_TRY(read_pair(g, "padding", node->padding, 0, 0));
        GPFQ_TRY(read_pair(g, "dilation", node->dilation, 1, 1));
        GPFQ_TRY(read_int(g, "groups", &node->groups, 1));
        if (node->weight_rank >= 1 && gpfq_h5_has_link(g, "bias"))
            GPFQ_TRY(read_vector(g, "bias", (size_t)node->weight_dims[0], &node->bias));
        return GPFQ_OK;
    case GPFQ_OP_BATCHNORM2D: {
        GPFQ_TRY(read_weight(g, node));
        size_t c = node->weight_count;
        GPFQ_TRY(read_vector(g, "bias", c, &node->bias));
        GPFQ_TRY(read_vector(g, "running_mean", c, &node->running_mean));
        GPFQ_TRY(read_vector(g, "running_var", c, &node->running_var));
        for (size_t i = 0; i < c; i++)
            if (node->running_var[i] < 0.0f)
                return gpfq_fail(GPFQ_ERR_FORMAT, "dataset 'running_var' is negative at %zu", i);
        if (gpfq_h5_has_attr(g, "eps")) {
            double eps = 0.0;
            GPFQ_TRY(gpfq_h5_attr_doubles(g, "eps", &eps, 1));
            node->eps = (float)eps;
        }
        return GPFQ_OK;
    }
    case GPFQ_OP_ADAPTIVE_AVGPOOL2D:
        return gpfq_h5_attr_ints(g, "output_size", node->output_size, 2);
    default:
        break;
    }
    if (pool) {
        GPFQ_TRY(gpfq_h5_attr_ints(g, "kernel", node->kernel, 2));
        GPFQ_TRY(read_pair(g, "stride", node->stride, node->kernel[0], node->kernel[1]));
        GPFQ_TRY(read_pair(g, "padding", node->padding, 0, 0));
        GPFQ_TRY(read_pair(g, "dilation", node->dilation, 1, 1));
        GPFQ_TRY(read_int(g, "ceil_mode", &node->ceil_mode, 0));
        GPFQ_TRY(read_int(g, "count_include_pad", &node->count_include_pad, 1));
    }
    return GPFQ_OK;
}

static gpfq_status read_nodes(hid_t file, const char *path, gpfq_model *model) {
    hid_t nodes = H5Gopen2(file, "nodes", H5P_DEFAULT);
    if (nodes < 0)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: group '/nodes' is missing; not a gpfq model file?",
                         path);
    int count = 0;
    gpfq_status st = gpfq_h5_attr_ints(nodes, "count", &count, 1);
    if (st != GPFQ_OK) st = gpfq_fail_context(st, "%s: /nodes: ", path);
    if (st == GPFQ_OK && (count < 1 || count > 100000))
        st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: /nodes: attribute 'count' is %d", path, count);
    if (st == GPFQ_OK && !(model->nodes = gpfq_calloc((size_t)count, sizeof(gpfq_node), "nodes")))
        st = GPFQ_ERR_NOMEM;
    for (int i = 0; st == GPFQ_OK && i < count; i++) {
        char key[16];
        snprintf(key, sizeof key, "%04d", i);
        model->n_nodes = i + 1;
        hid_t g = H5Gopen2(nodes, key, H5P_DEFAULT);
        if (g < 0) {
            st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: group '/nodes/%s' is missing (count is %d)", path,
                           key, count);
            break;
        }
        st = read_node_fields(g, model, i, &model->nodes[i]);
        H5Gclose(g);
        if (st != GPFQ_OK) {
            node_where w = {path, i, model->nodes[i].name[0] ? model->nodes[i].name : key};
            st = at_node(st, &w);
        }
    }
    H5Gclose(nodes);
    return st;
}

static gpfq_status read_optional_string(hid_t file, const char *name, char **out) {
    if (gpfq_h5_has_attr(file, name)) return gpfq_h5_attr_string(file, name, out);
    *out = strdup("");
    return *out ? GPFQ_OK : gpfq_fail(GPFQ_ERR_NOMEM, "out of memory");
}

static gpfq_status read_root(hid_t file, gpfq_model *model) {
    char *format = NULL;
    GPFQ_TRY(gpfq_h5_attr_string(file, "gpfq_format", &format));
    int ok = strcmp(format, "gpfq-model") == 0;
    free(format);
    if (!ok) return gpfq_fail(GPFQ_ERR_FORMAT, "attribute 'gpfq_format' is not 'gpfq-model'");
    int version = 0, shape[3];
    GPFQ_TRY(gpfq_h5_attr_ints(file, "format_version", &version, 1));
    if (version != 1)
        return gpfq_fail(GPFQ_ERR_FORMAT,
                         "attribute 'format_version' is %d; this gpfq reads version 1", version);
    GPFQ_TRY(gpfq_h5_attr_ints(file, "input_shape", shape, 3));
    model->input_shape = (gpfq_shape){shape[0], shape[1], shape[2], 0};
    if (shape[0] < 1 || shape[0] > 4096 || shape[1] < 1 || shape[2] < 1 || shape[1] > 65536 ||
        shape[2] > 65536)
        return gpfq_fail(GPFQ_ERR_FORMAT, "attribute 'input_shape' is %dx%dx%d", shape[0], shape[1],
                         shape[2]);
    GPFQ_TRY(gpfq_h5_attr_ints(file, "num_classes", &model->num_classes, 1));
    double stats[4096];
    model->mean = gpfq_calloc((size_t)shape[0], sizeof(float), "mean");
    model->std = gpfq_calloc((size_t)shape[0], sizeof(float), "std");
    if (!model->mean || !model->std) return GPFQ_ERR_NOMEM;
    GPFQ_TRY(gpfq_h5_attr_doubles(file, "mean", stats, shape[0]));
    for (int c = 0; c < shape[0]; c++) model->mean[c] = (float)stats[c];
    GPFQ_TRY(gpfq_h5_attr_doubles(file, "std", stats, shape[0]));
    for (int c = 0; c < shape[0]; c++) model->std[c] = (float)stats[c];
    model->float_top1 = model->float_top5 = NAN;
    if (gpfq_h5_has_attr(file, "float_top1"))
        GPFQ_TRY(gpfq_h5_attr_doubles(file, "float_top1", &model->float_top1, 1));
    if (gpfq_h5_has_attr(file, "float_top5"))
        GPFQ_TRY(gpfq_h5_attr_doubles(file, "float_top5", &model->float_top5, 1));
    GPFQ_TRY(read_optional_string(file, "source", &model->source));
    GPFQ_TRY(read_optional_string(file, "dataset", &model->dataset));
    GPFQ_TRY(read_optional_string(file, "recipe", &model->recipe));
    GPFQ_TRY(read_optional_string(file, "quantization", &model->quantization));
    return GPFQ_OK;
}

gpfq_status gpfq_model_load(const char *path, gpfq_model **out) {
    *out = NULL;
    hid_t file;
    GPFQ_TRY(gpfq_h5_open_read(path, &file));
    gpfq_model *model = gpfq_calloc(1, sizeof *model, "a model");
    if (!model) {
        H5Fclose(file);
        return GPFQ_ERR_NOMEM;
    }
    gpfq_status st = read_root(file, model);
    if (st != GPFQ_OK) st = gpfq_fail_context(st, "%s: ", path);
    if (st == GPFQ_OK) st = read_nodes(file, path, model);
    H5Fclose(file);
    if (st == GPFQ_OK) st = gpfq_model_validate(model, path);
    if (st != GPFQ_OK) {
        gpfq_model_free(model);
        return st;
    }
    *out = model;
    return GPFQ_OK;
}

static gpfq_status write_node(hid_t g, const gpfq_model *model, const gpfq_node *node,
                              const int32_t *codes) {
    char inputs[2 * GPFQ_NAME_MAX + 8] = "";
    for (int k = 0; k < node->n_inputs; k++) {
        int src = node->inputs[k];
        if (k) strcat(inputs, ",");
        strcat(inputs, src == GPFQ_GRAPH_INPUT ? "input" : model->nodes[src].name);
    }
    GPFQ_TRY(gpfq_h5_write_attr_string(g, "name", node->name));
    GPFQ_TRY(gpfq_h5_write_attr_string(g, "op", gpfq_op_name(node->op)));
    GPFQ_TRY(gpfq_h5_write_attr_string(g, "inputs", inputs));
    hsize_t dims[4];
    for (int i = 0; i < node->weight_rank; i++) dims[i] = (hsize_t)node->weight_dims[i];
    hsize_t channels[1] = {(hsize_t)node->out_shape.c};
    switch (node->op) {
    case GPFQ_OP_CONV2D:
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "stride", node->stride, 2));
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "padding", node->padding, 2));
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "dilation", node->dilation, 2));
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "groups", &node->groups, 1));
        /* fall through */
    case GPFQ_OP_LINEAR:
        if (codes) {
            double step = node->weight_step, offset = node->weight_offset;
            GPFQ_TRY(gpfq_h5_write_ints(g, "weight_codes", codes, node->weight_rank, dims));
            GPFQ_TRY(gpfq_h5_write_attr_doubles(g, "weight_step", &step, 1));
            GPFQ_TRY(gpfq_h5_write_attr_doubles(g, "weight_offset", &offset, 1));
        } else {
            GPFQ_TRY(gpfq_h5_write_floats(g, "weight", node->weight, node->weight_rank, dims));
        }
        if (node->bias) GPFQ_TRY(gpfq_h5_write_floats(g, "bias", node->bias, 1, channels));
        return GPFQ_OK;
    case GPFQ_OP_BATCHNORM2D: {
        double eps = node->eps;
        GPFQ_TRY(gpfq_h5_write_floats(g, "weight", node->weight, 1, channels));
        GPFQ_TRY(gpfq_h5_write_floats(g, "bias", node->bias, 1, channels));
        GPFQ_TRY(gpfq_h5_write_floats(g, "running_mean", node->running_mean, 1, channels));
        GPFQ_TRY(gpfq_h5_write_floats(g, "running_var", node->running_var, 1, channels));
        return gpfq_h5_write_attr_doubles(g, "eps", &eps, 1);
    }
    case GPFQ_OP_MAXPOOL2D:
    case GPFQ_OP_AVGPOOL2D:
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "kernel", node->kernel, 2));
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "stride", node->stride, 2));
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "padding", node->padding, 2));
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "dilation", node->dilation, 2));
        GPFQ_TRY(gpfq_h5_write_attr_ints(g, "ceil_mode", &node->ceil_mode, 1));
        return gpfq_h5_write_attr_ints(g, "count_include_pad", &node->count_include_pad, 1);
    case GPFQ_OP_ADAPTIVE_AVGPOOL2D:
        return gpfq_h5_write_attr_ints(g, "output_size", node->output_size, 2);
    default:
        return GPFQ_OK;
    }
}

static gpfq_status write_model(hid_t file, const gpfq_model *model, const int32_t *const *codes) {
    int version = 1;
    int shape[3] = {model->input_shape.c, model->input_shape.h, model->input_shape.w};
    GPFQ_TRY(gpfq_h5_write_attr_string(file, "gpfq_format", "gpfq-model"));
    GPFQ_TRY(gpfq_h5_write_attr_ints(file, "format_version", &version, 1));
    GPFQ_TRY(gpfq_h5_write_attr_ints(file, "input_shape", shape, 3));
    GPFQ_TRY(gpfq_h5_write_attr_ints(file, "num_classes", &model->num_classes, 1));
    GPFQ_TRY(gpfq_h5_write_attr_floats(file, "mean", model->mean, shape[0]));
    GPFQ_TRY(gpfq_h5_write_attr_floats(file, "std", model->std, shape[0]));
    GPFQ_TRY(gpfq_h5_write_attr_doubles(file, "float_top1", &model->float_top1, 1));
    GPFQ_TRY(gpfq_h5_write_attr_doubles(file, "float_top5", &model->float_top5, 1));
    GPFQ_TRY(gpfq_h5_write_attr_string(file, "source", model->source));
    GPFQ_TRY(gpfq_h5_write_attr_string(file, "dataset", model->dataset));
    GPFQ_TRY(gpfq_h5_write_attr_string(file, "recipe", model->recipe));
    if (model->quantization && model->quantization[0])
        GPFQ_TRY(gpfq_h5_write_attr_string(file, "quantization", model->quantization));
    hid_t nodes = H5Gcreate2(file, "nodes", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (nodes < 0) return gpfq_fail(GPFQ_ERR_IO, "cannot create group '/nodes'");
    gpfq_status st = gpfq_h5_write_attr_ints(nodes, "count", &model->n_nodes, 1);
    for (int i = 0; st == GPFQ_OK && i < model->n_nodes; i++) {
        char key[16];
        snprintf(key, sizeof key, "%04d", i);
        hid_t g = H5Gcreate2(nodes, key, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) {
            st = gpfq_fail(GPFQ_ERR_IO, "cannot create group '/nodes/%s'", key);
            break;
        }
        st = write_node(g, model, &model->nodes[i], codes ? codes[i] : NULL);
        H5Gclose(g);
    }
    H5Gclose(nodes);
    return st;
}

gpfq_status gpfq_model_save(const gpfq_model *model, const char *path,
                            const int32_t *const *codes) {
    gpfq_h5_quiet();
    /* write to a temporary name and rename, so a crash never leaves half a model */
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return gpfq_fail(GPFQ_ERR_ARG, "output path is too long: %s", path);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0)
        return gpfq_fail(GPFQ_ERR_IO, "%s: cannot create the file (is the directory writable?)",
                         tmp);
    gpfq_status st = write_model(file, model, codes);
    if (H5Fclose(file) < 0 && st == GPFQ_OK)
        st = gpfq_fail(GPFQ_ERR_IO, "%s: cannot finish writing (disk full?)", tmp);
    if (st == GPFQ_OK && rename(tmp, path) != 0)
        st = gpfq_fail(GPFQ_ERR_IO, "cannot rename %s to %s", tmp, path);
    if (st != GPFQ_OK) {
        remove(tmp);
        return gpfq_fail_context(st, "%s: ", path);
    }
    return GPFQ_OK;
}

gpfq_status gpfq_model_load_check(const char *path, const gpfq_model *model, float **input,
                                  float **expected, size_t *n) {
    *input = *expected = NULL;
    *n = 0;
    hid_t file;
    GPFQ_TRY(gpfq_h5_open_read(path, &file));
    gpfq_status st = GPFQ_OK;
    hid_t check = H5Gopen2(file, "check", H5P_DEFAULT);
    if (check < 0) st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: has no /check group", path);
    size_t in_count = 0, out_count = 0;
    if (st == GPFQ_OK) st = gpfq_h5_read_floats(check, "input", input, &in_count);
    if (st == GPFQ_OK) st = gpfq_h5_read_floats(check, "output", expected, &out_count);
    size_t image = gpfq_shape_size(model->input_shape);
    if (st == GPFQ_OK && (in_count % image != 0 || in_count == 0 ||
                          out_count != in_count / image * (size_t)model->num_classes))
        st = gpfq_fail(GPFQ_ERR_FORMAT,
                       "%s: /check holds %zu input and %zu output values, which do not fit "
                       "the model's shapes",
                       path, in_count, out_count);
    if (check >= 0) H5Gclose(check);
    H5Fclose(file);
    if (st != GPFQ_OK) {
        free(*input);
        free(*expected);
        *input = *expected = NULL;
        return st;
    }
    *n = in_count / image;
    return GPFQ_OK;
}
