/*
 * The model: a graph of nodes in topological order, each naming its inputs,
 * loaded from (and saved to) the HDF5 model file described in docs/model-format.md.
 *
 * Every node knows the per-image shape of its input and output once
 * gpfq_model_validate() (called by the loader) has run.
 */
#ifndef GPFQ_MODEL_H
#define GPFQ_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gpfq/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GPFQ_OP_LINEAR,
    GPFQ_OP_CONV2D,
    GPFQ_OP_BATCHNORM2D,
    GPFQ_OP_RELU,
    GPFQ_OP_MAXPOOL2D,
    GPFQ_OP_AVGPOOL2D,
    GPFQ_OP_ADAPTIVE_AVGPOOL2D,
    GPFQ_OP_FLATTEN,
    GPFQ_OP_ADD,
    GPFQ_OP_IDENTITY,
    GPFQ_OP_DROPOUT,
    GPFQ_OP_COUNT
} gpfq_op;

/* The graph input, as an input index of a node. */
#define GPFQ_GRAPH_INPUT (-1)
#define GPFQ_NAME_MAX 128
#define GPFQ_MAX_INPUTS 2

/* Per-image shape. Image-like tensors are C x H x W; flat ones (after flatten or
 * linear) have flat = 1, c = features and h = w = 1. */
typedef struct {
    int c, h, w;
    int flat;
} gpfq_shape;

typedef struct {
    char name[GPFQ_NAME_MAX];
    gpfq_op op;
    int n_inputs;
    int inputs[GPFQ_MAX_INPUTS]; /* node indices, or GPFQ_GRAPH_INPUT */

    gpfq_shape in_shape;  /* shape of inputs[0], per image */
    gpfq_shape out_shape; /* per image */

    /* conv2d and pools; [0] is the height, [1] the width */
    int kernel[2];
    int stride[2];
    int padding[2];
    int dilation[2];
    int groups;            /* conv2d */
    int ceil_mode;         /* pools */
    int count_include_pad; /* avgpool2d */
    int output_size[2];    /* adaptive_avgpool2d */
    float eps;             /* batchnorm2d */

    /* Parameters. linear: weight (out, in); conv2d: weight (O, C/groups, kh, kw);
     * batchnorm2d: weight = gamma (C), bias = beta (C). bias is NULL when absent. */
    float *weight;
    size_t weight_count;
    int weight_rank;
    int weight_dims[4];
    float *bias;         /* (out) or NULL */
    float *running_mean; /* (C), batchnorm2d only */
    float *running_var;  /* (C), batchnorm2d only */

    /* Set when the weight came from integer codes (a quantized model). */
    int quantized;
    float weight_step;
    float weight_offset;
} gpfq_node;

typedef struct {
    int n_nodes;
    gpfq_node *nodes; /* (n_nodes), topological order; the last one is the output */

    gpfq_shape input_shape; /* C x H x W of one image */
    int num_classes;
    float *mean; /* (C) normalization */
    float *std;  /* (C) */

    char *source;       /* provenance, never NULL after loading ("" when unknown) */
    char *dataset;      /* "" when unknown */
    char *recipe;       /* JSON or "" */
    char *quantization; /* JSON or "" */
    double float_top1;  /* NaN when unknown */
    double float_top5;
} gpfq_model;

const char *gpfq_op_name(gpfq_op op);
/* Returns GPFQ_OP_COUNT for an unknown name. */
gpfq_op gpfq_op_from_name(const char *name);

/* Loads and validates a model file. On error *out is NULL and the message names
 * the file, the node and the field at fault. */
gpfq_status gpfq_model_load(const char *path, gpfq_model **out);

/* Writes a model file (float weights, or codes for nodes marked quantized when
 * `codes` is given for them: codes[i] is NULL or (weight_count) int16 codes of node i). */
gpfq_status gpfq_model_save(const gpfq_model *model, const char *path, const int32_t *const *codes);

/* Infers shapes and checks every node; sets in_shape/out_shape. */
gpfq_status gpfq_model_validate(gpfq_model *model, const char *where);

/* A deep copy (weights included). */
gpfq_status gpfq_model_clone(const gpfq_model *model, gpfq_model **out);

void gpfq_model_free(gpfq_model *model);

size_t gpfq_shape_size(gpfq_shape s);
size_t gpfq_node_param_count(const gpfq_node *node);
size_t gpfq_model_param_count(const gpfq_model *model);

/* Finds a model: a shipped name (mlp, lenet5, resnet20, resnet18) resolves to
 * NAME_SUFFIX.h5 (SUFFIX: "fashion" for fashion-mnist, else the data set name)
 * in $GPFQ_MODEL_DIR, in data/models next to the binary's source tree, or in
 * ./data/models. Anything containing '/' or ending in .h5 is taken as a path. */
gpfq_status gpfq_model_resolve(const char *arg, const char *dataset, char *out, size_t size);

/* Reads the optional /check group of a model file: input (n, C, H, W) and the
 * expected logits (n, num_classes) as PyTorch computed them. */
gpfq_status gpfq_model_load_check(const char *path, const gpfq_model *model, float **input,
                                  float **expected, size_t *n);

/* Index of the node named `name`, or -1. */
int gpfq_model_find(const gpfq_model *model, const char *name);

#ifdef __cplusplus
}
#endif

#endif
