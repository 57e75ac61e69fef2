/*
 * The model graph: op names, shape inference and validation, copies and frees.
 * The HDF5 reader and writer live in model_h5.c.
 */
#include "gpfq/model.h"
#include "gpfq/ops.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[GPFQ_OP_COUNT] = {
    [GPFQ_OP_LINEAR] = "linear",
    [GPFQ_OP_CONV2D] = "conv2d",
    [GPFQ_OP_BATCHNORM2D] = "batchnorm2d",
    [GPFQ_OP_RELU] = "relu",
    [GPFQ_OP_MAXPOOL2D] = "maxpool2d",
    [GPFQ_OP_AVGPOOL2D] = "avgpool2d",
    [GPFQ_OP_ADAPTIVE_AVGPOOL2D] = "adaptive_avgpool2d",
    [GPFQ_OP_FLATTEN] = "flatten",
    [GPFQ_OP_ADD] = "add",
    [GPFQ_OP_IDENTITY] = "identity",
    [GPFQ_OP_DROPOUT] = "dropout",
};

const char *gpfq_op_name(gpfq_op op) {
    return (op >= 0 && op < GPFQ_OP_COUNT) ? op_names[op] : "unknown";
}

gpfq_op gpfq_op_from_name(const char *name) {
    for (int i = 0; i < GPFQ_OP_COUNT; i++)
        if (strcmp(op_names[i], name) == 0) return (gpfq_op)i;
    return GPFQ_OP_COUNT;
}

size_t gpfq_shape_size(gpfq_shape s) {
    return (size_t)s.c * s.h * s.w;
}

size_t gpfq_node_param_count(const gpfq_node *node) {
    size_t count = node->weight ? node->weight_count : 0;
    if (node->bias) count += (size_t)node->out_shape.c;
    return count;
}

size_t gpfq_model_param_count(const gpfq_model *model) {
    size_t total = 0;
    for (int i = 0; i < model->n_nodes; i++) total += gpfq_node_param_count(&model->nodes[i]);
    return total;
}

int gpfq_model_find(const gpfq_model *model, const char *name) {
    for (int i = 0; i < model->n_nodes; i++)
        if (strcmp(model->nodes[i].name, name) == 0) return i;
    return -1;
}

static int expected_inputs(gpfq_op op) {
    return op == GPFQ_OP_ADD ? 2 : 1;
}

static gpfq_status node_fail(const char *where, int index, const gpfq_node *node,
                             const char *what) {
    return gpfq_fail(GPFQ_ERR_FORMAT, "%s: node %d '%s' (%s): %s", where, index, node->name,
                     gpfq_op_name(node->op), what);
}

static void dims_text(const int *dims, int rank, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? "x%d" : "%d", dims[i]);
}

/* Checks that the weight dataset has exactly the expected dims. */
static gpfq_status check_weight_dims(const char *where, int index, const gpfq_node *node,
                                     const int *want, int rank) {
    int ok = node->weight && node->weight_rank == rank;
    for (int i = 0; ok && i < rank; i++) ok = node->weight_dims[i] == want[i];
    if (ok) return GPFQ_OK;
    char have[64], expect[64], msg[256];
    dims_text(want, rank, expect, sizeof expect);
    if (!node->weight) {
        snprintf(msg, sizeof msg, "dataset 'weight' is missing (expects %s)", expect);
    } else {
        dims_text(node->weight_dims, node->weight_rank, have, sizeof have);
        snprintf(msg, sizeof msg,
                 "dataset 'weight' has shape %s but the input shape %dx%dx%d requires %s", have,
                 node->in_shape.c, node->in_shape.h, node->in_shape.w, expect);
    }
    return node_fail(where, index, node, msg);
}

static gpfq_status check_pair(const char *where, int index, const gpfq_node *node,
                              const char *field, const int *v, int min) {
    if (v[0] >= min && v[1] >= min) return GPFQ_OK;
    char msg[160];
    snprintf(msg, sizeof msg, "attribute '%s' is %d,%d; both must be >= %d", field, v[0], v[1],
             min);
    return node_fail(where, index, node, msg);
}

static gpfq_status infer_window(const char *where, int index, gpfq_node *node, int dilate) {
    const gpfq_shape in = node->in_shape;
    GPFQ_TRY(check_pair(where, index, node, "kernel", node->kernel, 1));
    GPFQ_TRY(check_pair(where, index, node, "stride", node->stride, 1));
    GPFQ_TRY(check_pair(where, index, node, "padding", node->padding, 0));
    GPFQ_TRY(check_pair(where, index, node, "dilation", node->dilation, 1));
    if (!dilate && (node->dilation[0] != 1 || node->dilation[1] != 1))
        return node_fail(where, index, node, "attribute 'dilation' must be 1 for this op");
    int ceil_mode = node->op == GPFQ_OP_CONV2D ? 0 : node->ceil_mode;
    if (node->op != GPFQ_OP_CONV2D &&
        (node->padding[0] * 2 > node->kernel[0] || node->padding[1] * 2 > node->kernel[1]))
        return node_fail(where, index, node,
                         "attribute 'padding' must be at most half of 'kernel' for pooling");
    int oh = gpfq_window_out(in.h, node->kernel[0], node->stride[0], node->padding[0],
                             node->dilation[0], ceil_mode);
    int ow = gpfq_window_out(in.w, node->kernel[1], node->stride[1], node->padding[1],
                             node->dilation[1], ceil_mode);
    if (oh < 1 || ow < 1) {
        char msg[200];
        snprintf(msg, sizeof msg, "a %dx%d window does not fit the %dx%d input (padding %d,%d)",
                 node->kernel[0], node->kernel[1], in.h, in.w, node->padding[0], node->padding[1]);
        return node_fail(where, index, node, msg);
    }
    node->out_shape = (gpfq_shape){in.c, oh, ow, 0};
    return GPFQ_OK;
}

static gpfq_status require_image(const char *where, int index, const gpfq_node *node) {
    if (!node->in_shape.flat) return GPFQ_OK;
    return node_fail(where, index, node, "needs an image-shaped (C x H x W) input, got a flat one");
}

static gpfq_status infer_node(const char *where, int index, gpfq_node *node) {
    const gpfq_shape in = node->in_shape;
    char msg[256];
    switch (node->op) {
    case GPFQ_OP_LINEAR: {
        if (!node->weight || node->weight_rank != 2)
            return node_fail(where, index, node, "dataset 'weight' must be 2-D (out, in)");
        int want[2] = {node->weight_dims[0], (int)gpfq_shape_size(in)};
        GPFQ_TRY(check_weight_dims(where, index, node, want, 2));
        node->out_shape = (gpfq_shape){node->weight_dims[0], 1, 1, 1};
        return GPFQ_OK;
    }
    case GPFQ_OP_CONV2D: {
        GPFQ_TRY(require_image(where, index, node));
        if (node->groups < 1 || in.c % node->groups != 0) {
            snprintf(msg, sizeof msg,
                     "attribute 'groups' = %d does not divide the %d input channels", node->groups,
                     in.c);
            return node_fail(where, index, node, msg);
        }
        if (!node->weight || node->weight_rank != 4)
            return node_fail(where, index, node,
                             "dataset 'weight' must be 4-D (out, in/groups, kh, kw)");
        int out_c = node->weight_dims[0];
        if (out_c % node->groups != 0) {
            snprintf(msg, sizeof msg,
                     "attribute 'groups' = %d does not divide the %d output channels", node->groups,
                     out_c);
            return node_fail(where, index, node, msg);
        }
        node->kernel[0] = node->weight_dims[2];
        node->kernel[1] = node->weight_dims[3];
        int want[4] = {out_c, in.c / node->groups, node->kernel[0], node->kernel[1]};
        GPFQ_TRY(check_weight_dims(where, index, node, want, 4));
        GPFQ_TRY(infer_window(where, index, node, 1));
        node->out_shape.c = out_c;
        return GPFQ_OK;
    }
    case GPFQ_OP_BATCHNORM2D:
        GPFQ_TRY(require_image(where, index, node));
        if (!node->weight || node->weight_rank != 1 || node->weight_dims[0] != in.c ||
            !node->running_mean || !node->running_var) {
            snprintf(msg, sizeof msg,
                     "datasets 'weight', 'bias', 'running_mean', 'running_var' must each hold %d "
                     "values (one per input channel)",
                     in.c);
            return node_fail(where, index, node, msg);
        }
        if (!(node->eps > 0.0f))
            return node_fail(where, index, node, "attribute 'eps' must be > 0");
        node->out_shape = in;
        return GPFQ_OK;
    case GPFQ_OP_MAXPOOL2D:
        GPFQ_TRY(require_image(where, index, node));
        return infer_window(where, index, node, 1);
    case GPFQ_OP_AVGPOOL2D:
        GPFQ_TRY(require_image(where, index, node));
        return infer_window(where, index, node, 0);
    case GPFQ_OP_ADAPTIVE_AVGPOOL2D:
        GPFQ_TRY(require_image(where, index, node));
        if (node->output_size[0] < 1 || node->output_size[1] < 1)
            return node_fail(where, index, node, "attribute 'output_size' must be >= 1");
        node->out_shape = (gpfq_shape){in.c, node->output_size[0], node->output_size[1], 0};
        return GPFQ_OK;
    case GPFQ_OP_FLATTEN:
        node->out_shape = (gpfq_shape){(int)gpfq_shape_size(in), 1, 1, 1};
        return GPFQ_OK;
    case GPFQ_OP_ADD:
    case GPFQ_OP_RELU:
    case GPFQ_OP_IDENTITY:
    case GPFQ_OP_DROPOUT:
        node->out_shape = in;
        return GPFQ_OK;
    case GPFQ_OP_COUNT:
        break;
    }
    return node_fail(where, index, node, "unknown op");
}

gpfq_status gpfq_model_validate(gpfq_model *model, const char *where) {
    const gpfq_shape in = model->input_shape;
    if (in.c < 1 || in.h < 1 || in.w < 1)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: attribute 'input_shape' must be 3 positive sizes",
                         where);
    if (model->num_classes < 1)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: attribute 'num_classes' must be >= 1", where);
    if (model->n_nodes < 1) return gpfq_fail(GPFQ_ERR_FORMAT, "%s: the model has no nodes", where);
    /* per-image sizes must fit an int (flatten's output size is one), here and
     * after every node below: a corrupt file's huge output_size would wrap them */
    if (gpfq_shape_size(in) > INT_MAX)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: attribute 'input_shape' (%dx%dx%d) is too large",
                         where, in.c, in.h, in.w);
    for (int c = 0; c < in.c; c++)
        if (!(model->std[c] > 0.0f) || !isfinite(model->mean[c]))
            return gpfq_fail(GPFQ_ERR_FORMAT,
                             "%s: normalization for channel %d is mean %g, std %g; std must be > 0",
                             where, c, model->mean[c], model->std[c]);

    for (int i = 0; i < model->n_nodes; i++) {
        gpfq_node *node = &model->nodes[i];
        if (node->op < 0 || node->op >= GPFQ_OP_COUNT)
            return node_fail(where, i, node, "unknown op");
        if (node->name[0] == '\0' || strcmp(node->name, "input") == 0)
            return node_fail(where, i, node, "attribute 'name' must be non-empty and not 'input'");
        for (int j = 0; j < i; j++)
            if (strcmp(model->nodes[j].name, node->name) == 0)
                return node_fail(where, i, node, "attribute 'name' repeats an earlier node's name");
        if (node->n_inputs != expected_inputs(node->op)) {
            char msg[128];
            snprintf(msg, sizeof msg, "attribute 'inputs' names %d node(s); this op takes %d",
                     node->n_inputs, expected_inputs(node->op));
            return node_fail(where, i, node, msg);
        }
        for (int k = 0; k < node->n_inputs; k++) {
            int src = node->inputs[k];
            if (src != GPFQ_GRAPH_INPUT && (src < 0 || src >= i))
                return node_fail(where, i, node, "attribute 'inputs' refers to a later node");
        }
        int src = node->inputs[0];
        node->in_shape = src == GPFQ_GRAPH_INPUT ? in : model->nodes[src].out_shape;
        if (node->op == GPFQ_OP_ADD) {
            int other = node->inputs[1];
            gpfq_shape b = other == GPFQ_GRAPH_INPUT ? in : model->nodes[other].out_shape;
            if (b.c != node->in_shape.c || b.h != node->in_shape.h || b.w != node->in_shape.w) {
                char msg[200];
                snprintf(msg, sizeof msg,
                         "its inputs have different shapes (%dx%dx%d and %dx%dx%d)",
                         node->in_shape.c, node->in_shape.h, node->in_shape.w, b.c, b.h, b.w);
                return node_fail(where, i, node, msg);
            }
        }
        if (node->bias && node->op != GPFQ_OP_LINEAR && node->op != GPFQ_OP_CONV2D &&
            node->op != GPFQ_OP_BATCHNORM2D)
            return node_fail(where, i, node, "has a 'bias' but this op takes none");
        GPFQ_TRY(infer_node(where, i, node));
        if (gpfq_shape_size(node->out_shape) > INT_MAX) {
            char msg[128];
            snprintf(msg, sizeof msg, "its output of %dx%dx%d values per image is too large",
                     node->out_shape.c, node->out_shape.h, node->out_shape.w);
            return node_fail(where, i, node, msg);
        }
    }
    const gpfq_node *last = &model->nodes[model->n_nodes - 1];
    if (gpfq_shape_size(last->out_shape) != (size_t)model->num_classes)
        return gpfq_fail(
            GPFQ_ERR_FORMAT,
            "%s: the last node '%s' yields %zu values per image but 'num_classes' is %d", where,
            last->name, gpfq_shape_size(last->out_shape), model->num_classes);
    return GPFQ_OK;
}

static void node_free(gpfq_node *node) {
    free(node->weight);
    free(node->bias);
    free(node->running_mean);
    free(node->running_var);
}

void gpfq_model_free(gpfq_model *model) {
    if (!model) return;
    for (int i = 0; i < model->n_nodes; i++) node_free(&model->nodes[i]);
    free(model->nodes);
    free(model->mean);
    free(model->std);
    free(model->source);
    free(model->dataset);
    free(model->recipe);
    free(model->quantization);
    free(model);
}

static int dup_floats(const float *src, size_t count, float **dst) {
    *dst = NULL;
    if (!src) return 1;
    *dst = gpfq_malloc(count * sizeof(float), "a model copy");
    if (!*dst) return 0;
    memcpy(*dst, src, count * sizeof(float));
    return 1;
}

static int dup_string(const char *src, char **dst) {
    *dst = strdup(src ? src : "");
    if (!*dst) gpfq_fail(GPFQ_ERR_NOMEM, "out of memory copying a model");
    return *dst != NULL;
}

gpfq_status gpfq_model_clone(const gpfq_model *model, gpfq_model **out) {
    *out = NULL;
    gpfq_model *copy = gpfq_calloc(1, sizeof *copy, "a model copy");
    if (!copy) return GPFQ_ERR_NOMEM;
    *copy = *model;
    copy->nodes = NULL;
    copy->n_nodes = 0;
    copy->mean = copy->std = NULL;
    copy->source = copy->dataset = copy->recipe = copy->quantization = NULL;
    int ok =
        (copy->nodes = gpfq_calloc((size_t)model->n_nodes, sizeof(gpfq_node), "nodes")) != NULL;
    for (int i = 0; ok && i < model->n_nodes; i++) {
        const gpfq_node *src = &model->nodes[i];
        gpfq_node *dst = &copy->nodes[i];
        *dst = *src;
        dst->weight = dst->bias = dst->running_mean = dst->running_var = NULL;
        copy->n_nodes = i + 1;
        size_t channels = (size_t)src->out_shape.c;
        ok = dup_floats(src->weight, src->weight_count, &dst->weight) &&
             dup_floats(src->bias, channels, &dst->bias) &&
             dup_floats(src->running_mean, channels, &dst->running_mean) &&
             dup_floats(src->running_var, channels, &dst->running_var);
    }
    size_t c = (size_t)model->input_shape.c;
    ok = ok && dup_floats(model->mean, c, &copy->mean) && dup_floats(model->std, c, &copy->std) &&
         dup_string(model->source, &copy->source) && dup_string(model->dataset, &copy->dataset) &&
         dup_string(model->recipe, &copy->recipe) &&
         dup_string(model->quantization, &copy->quantization);
    if (!ok) {
        gpfq_model_free(copy);
        return GPFQ_ERR_NOMEM;
    }
    *out = copy;
    return GPFQ_OK;
}
