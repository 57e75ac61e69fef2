/*
 * The planned forward pass (see gpfq/forward.h): buffer assignment by liveness,
 * then one dispatch per node into the kernels of src/ops.
 */
#include "gpfq/forward.h"
#include "gpfq/ops.h"

#include <stdlib.h>
#include <string.h>

struct gpfq_forward {
    const gpfq_model *model;
    size_t max_batch;
    size_t micro_batch; /* images per slice of a pass (see run_range) */
    int n_buffers;
    float **buffers;       /* (n_buffers) NULL until a pass writes it, then buffer_have[b] floats */
    size_t *buffer_floats; /* per image, for any pass */
    size_t *slim_floats;   /* per image, for a pass without hooks: no conv's unpooled outputs */
    size_t *buffer_have;   /* floats allocated in buffers[b] */
    int *node_buffer;      /* (n_nodes) buffer holding each node's output; -1: the pass's input */
    int *node_inplace;     /* (n_nodes) 1 when the node writes over its input */
    int *node_fused;       /* (n_nodes) for a conv: the nodes after it it runs too (0..3) */
    int *node_pools; /* (n_nodes) 1 for a conv whose kernel pools its folded nodes' outputs itself
                      * (decided when the plan is made: its buffer is sized without them) */
    float *fold;     /* scale and shift of a folded BatchNorm: 2 * fold_channels */
    int fold_channels;
    float *scratch; /* (max over conv nodes of gpfq_node_scratch) */
    size_t scratch_floats;
    float **packed;      /* (n_nodes) a direct-kernel conv's packed weights, made on first use */
    int *packed_ok;      /* (n_nodes) 1 while packed[i] holds node i's current weights */
    size_t *packed_size; /* (n_nodes) floats in packed[i]: its format (direct or Winograd) */
    size_t packed_floats;
    const gpfq_forward *shared; /* a plan whose packed weights this one reads, or NULL */
    const float *input;         /* the last pass's input */
};

/* Floats per image of the value node `index` produces (-1: the model's input). */
static size_t value_floats(const gpfq_model *m, int index) {
    return gpfq_shape_size(index >= 0 ? m->nodes[index].out_shape : m->input_shape);
}

/* Where the value of node `index` lies (-1: the model's input): a buffer, or the pass's input
 * itself for the input and for a Flatten (or other alias) of it. */
static const float *value_at(const gpfq_forward *fwd, const float *input, int index) {
    return index < 0 || fwd->node_buffer[index] < 0 ? input : fwd->buffers[fwd->node_buffer[index]];
}

static gpfq_conv_geom node_geom(const gpfq_node *node) {
    gpfq_conv_geom g = {
        .in_c = node->in_shape.c,
        .in_h = node->in_shape.h,
        .in_w = node->in_shape.w,
        .out_c = node->out_shape.c,
        .out_h = node->out_shape.h,
        .out_w = node->out_shape.w,
        .kernel_h = node->kernel[0],
        .kernel_w = node->kernel[1],
        .stride_h = node->stride[0],
        .stride_w = node->stride[1],
        .pad_h = node->padding[0],
        .pad_w = node->padding[1],
        .dilation_h = node->dilation[0],
        .dilation_w = node->dilation[1],
        .groups = node->groups,
    };
    return g;
}

size_t gpfq_node_scratch(const gpfq_node *node, size_t n) {
    if (node->op != GPFQ_OP_CONV2D) return 0;
    gpfq_conv_geom g = node_geom(node);
    return gpfq_conv2d_scratch(&g, n);
}

gpfq_status gpfq_node_forward(const gpfq_node *node, const float *const *inputs, size_t n,
                              float *output, float *scratch) {
    const float *x = inputs[0];
    const size_t in_count = n * gpfq_shape_size(node->in_shape);
    gpfq_conv_geom g = node_geom(node);
    switch (node->op) {
    case GPFQ_OP_LINEAR:
        gpfq_linear(x, node->weight, node->bias, n, gpfq_shape_size(node->in_shape),
                    (size_t)node->out_shape.c, output);
        return GPFQ_OK;
    case GPFQ_OP_CONV2D:
        return gpfq_conv2d(&g, x, node->weight, node->bias, n, output, scratch);
    case GPFQ_OP_BATCHNORM2D:
        gpfq_batchnorm2d(x, node->weight, node->bias, node->running_mean, node->running_var,
                         node->eps, n, node->in_shape.c,
                         (size_t)node->in_shape.h * node->in_shape.w, output);
        return GPFQ_OK;
    case GPFQ_OP_RELU:
        gpfq_relu(x, in_count, output);
        return GPFQ_OK;
    case GPFQ_OP_MAXPOOL2D:
        gpfq_maxpool2d(&g, x, n, output);
        return GPFQ_OK;
    case GPFQ_OP_AVGPOOL2D:
        gpfq_avgpool2d(&g, node->count_include_pad, x, n, output);
        return GPFQ_OK;
    case GPFQ_OP_ADAPTIVE_AVGPOOL2D:
        gpfq_adaptive_avgpool2d(x, n, node->in_shape.c, node->in_shape.h, node->in_shape.w,
                                node->out_shape.h, node->out_shape.w, output);
        return GPFQ_OK;
    case GPFQ_OP_ADD:
        gpfq_add(x, inputs[1], in_count, output);
        return GPFQ_OK;
    case GPFQ_OP_FLATTEN:
    case GPFQ_OP_IDENTITY:
    case GPFQ_OP_DROPOUT:
        if (output != x) memmove(output, x, in_count * sizeof(float));
        return GPFQ_OK;
    case GPFQ_OP_COUNT:
        break;
    }
    GPFQ_ASSERT(!"unknown op");
    return GPFQ_ERR_STATE;
}

static int is_alias(gpfq_op op) {
    return op == GPFQ_OP_FLATTEN || op == GPFQ_OP_IDENTITY || op == GPFQ_OP_DROPOUT;
}

static int can_run_inplace(gpfq_op op) {
    return op == GPFQ_OP_RELU || op == GPFQ_OP_BATCHNORM2D || op == GPFQ_OP_ADD;
}

static void plan_fusion(gpfq_forward *fwd, const int *readers);

/* The buffer of the input of the conv that value `node` comes from through in-place BatchNorm
 * and ReLU nodes, else -1. */
static int chain_input_buffer(const gpfq_forward *fwd, int node) {
    const gpfq_model *m = fwd->model;
    int j = node;
    while (j >= 0 && fwd->node_inplace[j] &&
           (m->nodes[j].op == GPFQ_OP_RELU || m->nodes[j].op == GPFQ_OP_BATCHNORM2D))
        j = m->nodes[j].inputs[0];
    if (j < 0 || m->nodes[j].op != GPFQ_OP_CONV2D || m->nodes[j].inputs[0] < 0) return -1;
    return fwd->node_buffer[m->nodes[j].inputs[0]];
}

/* For a max pool whose input comes from a conv through in-place BatchNorm and ReLU nodes only
 * (one that plan_fusion may fold into the conv), the buffer of that conv's input, else -1:
 * folded, the pool writes while the conv still reads, so it must not take that buffer. */
static int conv_input_buffer(const gpfq_forward *fwd, int pool) {
    return chain_input_buffer(fwd, fwd->model->nodes[pool].inputs[0]);
}

/* Assigns buffers by simulating the pass: pending[b] counts reads still to come. */
static gpfq_status plan_buffers(gpfq_forward *fwd) {
    const gpfq_model *m = fwd->model;
    const int n = m->n_nodes;
    int *readers = calloc((size_t)n, sizeof(int));
    int *pending = calloc((size_t)n + 1, sizeof(int));
    fwd->node_buffer = calloc((size_t)n, sizeof(int));
    fwd->node_inplace = calloc((size_t)n, sizeof(int));
    fwd->buffer_floats = calloc((size_t)n + 1, sizeof(size_t));
    if (!readers || !pending || !fwd->node_buffer || !fwd->node_inplace || !fwd->buffer_floats) {
        free(readers);
        free(pending);
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory planning a forward pass");
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < m->nodes[i].n_inputs; k++)
            if (m->nodes[i].inputs[k] >= 0) readers[m->nodes[i].inputs[k]]++;
    readers[n - 1]++; /* the logits stay alive after the pass */

    int n_buffers = 0;
    for (int i = 0; i < n; i++) {
        const gpfq_node *node = &m->nodes[i];
        int src = node->inputs[0];
        int src_buf = src >= 0 ? fwd->node_buffer[src] : -1;
        int buf = -1;
        const int other = node->op == GPFQ_OP_ADD ? node->inputs[1] : -1;
        const int other_buf = other >= 0 ? fwd->node_buffer[other] : -1;
        if (is_alias(node->op)) {
            /* the value itself; for the input or an alias of it, -1: a Flatten of the input
             * (an MLP's first node) is the input, no copy and no buffer to first-touch (a batch
             * of 256 Fashion-MNIST images: 0.8 MB) */
            buf = src_buf;
            fwd->node_inplace[i] = 1;
        } else if (other_buf >= 0 && other_buf != src_buf && pending[other_buf] == 1 &&
                   other_buf != chain_input_buffer(fwd, src)) {
            /* an Add over its second operand (a ResNet block's input, read last here): where
             * the conv before it runs with the Add folded in (plan_fusion), the conv's own
             * buffer is never written, and a ResNet's plan first-touches one first-stage
             * buffer less. Not where that conv reads the same buffer (a block whose branch
             * is one conv): a fused conv never writes over its own input. */
            buf = other_buf;
            fwd->node_inplace[i] = 1;
        } else if (can_run_inplace(node->op) && src_buf >= 0 && pending[src_buf] == 1 &&
                   !(node->op == GPFQ_OP_ADD && node->inputs[1] == src)) {
            buf = src_buf;
            fwd->node_inplace[i] = 1;
        } else {
            const int avoid = node->op == GPFQ_OP_MAXPOOL2D ? conv_input_buffer(fwd, i) : -1;
            for (int b = 0; b < n_buffers && buf < 0; b++)
                if (pending[b] == 0 && b != avoid) buf = b;
            if (buf < 0) buf = n_buffers++;
        }
        for (int k = 0; k < node->n_inputs; k++)
            if (node->inputs[k] >= 0 && fwd->node_buffer[node->inputs[k]] >= 0)
                pending[fwd->node_buffer[node->inputs[k]]]--;
        fwd->node_buffer[i] = buf;
        if (buf < 0) continue;
        pending[buf] += readers[i];
        size_t need = gpfq_shape_size(node->out_shape);
        if (need > fwd->buffer_floats[buf]) fwd->buffer_floats[buf] = need;
    }
    fwd->n_buffers = n_buffers;
    fwd->node_fused = calloc((size_t)n, sizeof(int));
    if (!fwd->node_fused) {
        free(readers);
        free(pending);
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory planning a forward pass");
    }
    plan_fusion(fwd, readers);
    free(readers);
    free(pending);
    return GPFQ_OK;
}

static int pools_itself(const gpfq_forward *fwd, int i, int fused);

/* The buffers' sizes for a pass without hooks, where a conv that pools its own outputs
 * (pools_itself) writes none to its buffer: lenet5's first buffer holds conv1's 6 x 28 x 28
 * unpooled values in a hooked pass, and otherwise only fc1's 120. */
static gpfq_status plan_slim(gpfq_forward *fwd) {
    const gpfq_model *m = fwd->model;
    fwd->slim_floats = calloc((size_t)fwd->n_buffers + 1, sizeof(size_t));
    fwd->buffer_have = calloc((size_t)fwd->n_buffers + 1, sizeof(size_t));
    fwd->node_pools = calloc((size_t)m->n_nodes + 1, sizeof(int));
    if (!fwd->slim_floats || !fwd->buffer_have || !fwd->node_pools)
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory planning a forward pass");
    for (int i = 0; i < m->n_nodes; i++) {
        const int fused = fwd->node_fused[i];
        fwd->node_pools[i] = fused && pools_itself(fwd, i, fused);
        if (fwd->node_pools[i]) {
            i += fused - 1; /* the conv and the in-place nodes on its buffer: not written */
            continue;
        }
        const int b = fwd->node_buffer[i];
        const size_t need = gpfq_shape_size(m->nodes[i].out_shape);
        if (b >= 0 && need > fwd->slim_floats[b]) fwd->slim_floats[b] = need;
    }
    return GPFQ_OK;
}

/* A slice's widest value stays within SLICE_BYTES, about an L2 cache, so that a conv's output
 * is still there when the next node reads it, in whole chunks of the interleaved conv
 * kernel's 16 images (lenet5: 55 -> 48, resnet20: 20 -> 16); but every conv gets at least
 * SLICE_PIXELS output pixels per channel, or its per-call costs and its kernel's partly used
 * pixel blocks would outweigh that (resnet18's 4x4 convs: 32 images). Measured on the shipped
 * ResNets: resnet20 (20 images) ran 10% faster than whole batches of 256, resnet18 (32
 * images) 5-10%; resnet20 at 16 images runs as fast as at 20, within the runs' 5% noise. */
enum { SLICE_BYTES = 1 << 20, SLICE_PIXELS = 512 };

size_t gpfq_forward_slice(const gpfq_model *model) {
    size_t widest = 1, least = 0;
    for (int i = 0; i < model->n_nodes; i++) {
        const gpfq_node *node = &model->nodes[i];
        if (value_floats(model, i) > widest) widest = value_floats(model, i);
        if (node->op == GPFQ_OP_CONV2D) {
            const size_t pixels = (size_t)node->out_shape.h * node->out_shape.w;
            const size_t images = (SLICE_PIXELS + pixels - 1) / pixels;
            if (images > least) least = images;
        }
    }
    size_t images = SLICE_BYTES / (widest * sizeof(float));
    if (images >= 16) images -= images % 16;
    return images > least ? images : least > 0 ? least : 1;
}

gpfq_status gpfq_forward_create(const gpfq_model *model, size_t max_batch, gpfq_forward **out) {
    *out = NULL;
    if (max_batch == 0) return gpfq_fail(GPFQ_ERR_ARG, "the batch size must be at least 1");
    gpfq_forward *fwd = gpfq_calloc(1, sizeof *fwd, "a forward pass");
    if (!fwd) return GPFQ_ERR_NOMEM;
    fwd->model = model;
    fwd->max_batch = max_batch;
    gpfq_status st = plan_buffers(fwd);
    if (st == GPFQ_OK) st = plan_slim(fwd);
    fwd->micro_batch = gpfq_forward_slice(model);
    if (fwd->micro_batch > max_batch) fwd->micro_batch = max_batch;
    if (st == GPFQ_OK &&
        !(fwd->buffers = gpfq_calloc((size_t)fwd->n_buffers, sizeof(float *), "buffers")))
        st = GPFQ_ERR_NOMEM;
    size_t floats;
    for (int b = 0; st == GPFQ_OK && b < fwd->n_buffers; b++)
        if (!gpfq_mul_size(fwd->buffer_floats[b], max_batch, &floats)) st = GPFQ_ERR_ARG;
    for (int i = 0; st == GPFQ_OK && i < model->n_nodes; i++) {
        size_t need = gpfq_node_scratch(&model->nodes[i], max_batch);
        if (need > fwd->scratch_floats) fwd->scratch_floats = need;
    }
    if (st == GPFQ_OK && fwd->fold_channels &&
        !(fwd->fold = gpfq_malloc(2 * (size_t)fwd->fold_channels * sizeof(float), "BatchNorm")))
        st = GPFQ_ERR_NOMEM;
    if (st == GPFQ_OK &&
        (!(fwd->packed = gpfq_calloc((size_t)model->n_nodes, sizeof(float *), "packed weights")) ||
         !(fwd->packed_ok = gpfq_calloc((size_t)model->n_nodes, sizeof(int), "packed weights")) ||
         !(fwd->packed_size =
               gpfq_calloc((size_t)model->n_nodes, sizeof(size_t), "packed weights"))))
        st = GPFQ_ERR_NOMEM;
    if (st != GPFQ_OK) {
        gpfq_forward_free(fwd);
        return st;
    }
    *out = fwd;
    return GPFQ_OK;
}

void gpfq_forward_free(gpfq_forward *fwd) {
    if (!fwd) return;
    for (int b = 0; fwd->buffers && b < fwd->n_buffers; b++) free(fwd->buffers[b]);
    free(fwd->buffers);
    free(fwd->buffer_floats);
    free(fwd->slim_floats);
    free(fwd->node_pools);
    free(fwd->buffer_have);
    free(fwd->node_buffer);
    free(fwd->node_inplace);
    free(fwd->node_fused);
    free(fwd->fold);
    free(fwd->scratch);
    for (int i = 0; fwd->packed && i < fwd->model->n_nodes; i++) free(fwd->packed[i]);
    free(fwd->packed);
    free(fwd->packed_ok);
    free(fwd->packed_size);
    free(fwd);
}

int gpfq_forward_fused(const gpfq_forward *fwd) {
    int total = 0;
    for (int i = 0; i < fwd->model->n_nodes; i++) total += fwd->node_fused[i];
    return total;
}

void gpfq_forward_set_slice(gpfq_forward *fwd, size_t images) {
    fwd->micro_batch = images ? images : 1;
}

void gpfq_forward_weights_changed(gpfq_forward *fwd, int index) {
    fwd->shared = NULL; /* the owner's copies may be of the old weights */
    for (int i = 0; i < fwd->model->n_nodes; i++)
        if (index < 0 || i == index) fwd->packed_ok[i] = 0;
}

size_t gpfq_forward_bytes(const gpfq_forward *fwd) {
    size_t total = fwd->scratch_floats + fwd->packed_floats;
    for (int b = 0; b < fwd->n_buffers; b++) total += fwd->buffer_floats[b] * fwd->max_batch;
    return total * sizeof(float);
}

/*
 * A direct-kernel conv runs the nodes that follow it on each chunk while it is in cache,
 * instead of a pass over the batch each: a BatchNorm, then a residual Add (the conv's value
 * as its first operand), then a ReLU, each optional, in that order, each the only reader of
 * the node before it and running in place; then, without an Add, a 2x2 stride-2 max pool.
 * The in-place nodes' outputs are the conv's buffer, or from an Add on, the buffer of the
 * Add's other operand (plan_buffers), which the conv's epilogue then reads and writes; the
 * conv's buffer is then never written. With a pool, the pool's buffer gets the values it
 * would have; the conv's holds the unpooled outputs (gpfq_conv_epilogue) or nothing of use,
 * which no other node reads.
 */
static int folds_into(const gpfq_forward *fwd, const int *readers, int node, gpfq_op op) {
    const gpfq_model *m = fwd->model;
    return node < m->n_nodes && m->nodes[node].op == op && m->nodes[node].inputs[0] == node - 1 &&
           readers[node - 1] == 1 && fwd->node_inplace[node];
}

/* A 2x2 stride-2 max pool (floor) of node - 1's output, its only reader: the epilogue's pool. */
static int pool_folds_into(const gpfq_forward *fwd, const int *readers, int node) {
    const gpfq_model *m = fwd->model;
    if (node >= m->n_nodes) return 0;
    const gpfq_node *p = &m->nodes[node], *before = &m->nodes[node - 1];
    return p->op == GPFQ_OP_MAXPOOL2D && p->inputs[0] == node - 1 && readers[node - 1] == 1 &&
           p->kernel[0] == 2 && p->kernel[1] == 2 && p->stride[0] == 2 && p->stride[1] == 2 &&
           p->padding[0] == 0 && p->padding[1] == 0 && p->dilation[0] == 1 && p->dilation[1] == 1 &&
           p->out_shape.c == before->out_shape.c && p->out_shape.h == before->out_shape.h / 2 &&
           p->out_shape.w == before->out_shape.w / 2;
}

static void plan_fusion(gpfq_forward *fwd, const int *readers) {
    const gpfq_model *m = fwd->model;
    for (int i = 0; i < m->n_nodes; i++) {
        const gpfq_node *conv = &m->nodes[i];
        if (conv->op != GPFQ_OP_CONV2D) continue;
        gpfq_conv_geom g = node_geom(conv);
        if (!gpfq_conv_direct_fits(&g)) continue;
        int next = i + 1, add = 0;
        if (folds_into(fwd, readers, next, GPFQ_OP_BATCHNORM2D)) next++;
        if (folds_into(fwd, readers, next, GPFQ_OP_ADD)) next++, add = 1;
        if (folds_into(fwd, readers, next, GPFQ_OP_RELU)) next++;
        /* the pool writes its own buffer; the conv's is room for the unpooled outputs where
         * the conv's kernel cannot pool (gpfq_conv_epilogue) */
        if (!add && pool_folds_into(fwd, readers, next)) next++;
        fwd->node_fused[i] = next - i - 1;
        if (conv->out_shape.c > fwd->fold_channels) fwd->fold_channels = conv->out_shape.c;
    }
}

/* The epilogue of conv node i and the `fused` nodes after it, on the slice of images from
 * `first` on. */
static gpfq_conv_epilogue plan_epilogue(gpfq_forward *fwd, int i, int fused, const float *input,
                                        size_t first) {
    const gpfq_model *m = fwd->model;
    gpfq_conv_epilogue e = {0};
    for (int k = i + 1; k <= i + fused; k++) {
        const gpfq_node *node = &m->nodes[k];
        if (node->op == GPFQ_OP_BATCHNORM2D) {
            const int c = node->in_shape.c;
            e.scale = fwd->fold, e.shift = fwd->fold + c;
            gpfq_batchnorm_fold(node->weight, node->bias, node->running_mean, node->running_var,
                                node->eps, c, fwd->fold, fwd->fold + c);
        } else if (node->op == GPFQ_OP_ADD) {
            const int other = node->inputs[1];
            e.residual = value_at(fwd, input, other) + first * value_floats(m, other);
        } else if (node->op == GPFQ_OP_RELU) {
            e.relu = 1;
        } else if (node->op == GPFQ_OP_MAXPOOL2D) {
            e.pool = 1;
            /* none where the kernel pools (reserve): gpfq_conv2d_fused makes one if it must */
            e.unpooled = fwd->node_pools[i]
                             ? NULL
                             : fwd->buffers[fwd->node_buffer[i]] + first * value_floats(m, i);
        }
    }
    return e;
}

/* Conv node i's weights in the direct kernels' order, packed on first use and again when the
 * kernel, the Winograd mode or its tile changed their format (size); NULL when no direct
 * kernel runs it (or no memory: the conv then packs them itself). */
static const float *packed_weights(gpfq_forward *fwd, int i, const gpfq_conv_geom *g) {
    const size_t floats = gpfq_conv2d_packed_floats(g);
    if (fwd->packed_ok[i] && fwd->packed_size[i] == floats) return fwd->packed[i];
    const gpfq_forward *sh = fwd->shared;
    if (sh && sh->packed_ok[i] && sh->packed_size[i] == floats) return sh->packed[i];
    if (!floats) return NULL;
    if (fwd->packed[i] && fwd->packed_size[i] != floats) {
        free(fwd->packed[i]);
        fwd->packed[i] = NULL;
        fwd->packed_floats -= fwd->packed_size[i];
    }
    if (!fwd->packed[i]) {
        fwd->packed[i] = gpfq_malloc(floats * sizeof(float), "packed weights");
        if (!fwd->packed[i]) return NULL;
        fwd->packed_size[i] = floats;
        fwd->packed_floats += floats;
    }
    gpfq_conv2d_pack(g, fwd->model->nodes[i].weight, fwd->packed[i]);
    fwd->packed_ok[i] = 1;
    return fwd->packed[i];
}

void gpfq_forward_pack(gpfq_forward *fwd) {
    for (int i = 0; i < fwd->model->n_nodes; i++)
        if (fwd->model->nodes[i].op == GPFQ_OP_CONV2D) {
            const gpfq_conv_geom g = node_geom(&fwd->model->nodes[i]);
            packed_weights(fwd, i, &g);
        }
}

void gpfq_forward_share_packed(gpfq_forward *fwd, const gpfq_forward *owner) {
    fwd->shared = owner && owner->model == fwd->model ? owner : NULL;
}

/* 1 where conv i, run with the `fused` nodes after it, writes nothing to its own buffer: they end
 * in a 2x2 max pool, which the interleaved kernel runs itself (a conv that cannot pool after all
 * writes its outputs to a buffer it makes for the call, gpfq_conv2d_fused). */
static int pools_itself(const gpfq_forward *fwd, int i, int fused) {
    const gpfq_model *m = fwd->model;
    if (m->nodes[i + fused].op != GPFQ_OP_MAXPOOL2D) return 0;
    for (int k = i + 1; k < i + fused; k++)
        if (m->nodes[k].op == GPFQ_OP_ADD) return 0;
    const gpfq_conv_geom g = node_geom(&m->nodes[i]);
    return gpfq_conv_interleaved_fits(&g);
}

/* 1 where a conv runs as im2col + GEMM (gpfq_conv2d_fused), on the plan's scratch; the convs on a
 * direct kernel get none, and a direct kernel short of memory falls back on a scratch of its own */
static int needs_scratch(const gpfq_node *node) {
    if (gpfq_node_scratch(node, 1) == 0) return 0;
    const gpfq_conv_geom g = node_geom(node);
    return !gpfq_conv_direct_fits(&g);
}

/* Node `node`'s buffer, at its slim size and at least the node's own output. A slim buffer grows,
 * its values kept, where a node writes a value the slim size left out: a conv's unpooled outputs
 * in a hooked pass or a range that stops inside its folded nodes, the ReLU after it where a range
 * starts there or a caller asks for its buffer (gpfq_forward_output_buffer).
 * gpfq_forward_create checked buffer_floats[b] * max_batch, the largest, for overflow. */
static gpfq_status allocate(gpfq_forward *fwd, int node) {
    const int b = fwd->node_buffer[node];
    if (b < 0) return GPFQ_OK;
    size_t per_image = fwd->slim_floats[b];
    if (per_image < value_floats(fwd->model, node)) per_image = value_floats(fwd->model, node);
    const size_t floats = per_image * fwd->max_batch;
    if (fwd->buffers[b] && fwd->buffer_have[b] >= floats) return GPFQ_OK;
    float *p = fwd->buffers[b] ? realloc(fwd->buffers[b], floats * sizeof(float))
                               : gpfq_malloc((floats ? floats : 1) * sizeof(float), "activations");
    if (!p)
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory allocating %zu bytes for activations",
                         floats * sizeof(float));
    fwd->buffers[b] = p;
    fwd->buffer_have[b] = floats;
    return GPFQ_OK;
}

/*
 * A buffer is allocated when a pass first reaches a node that writes it, not when the plan is
 * made: memory freed in between (the quantization driver's per-layer buffers, its calibration
 * images once no node reads them) is then there to take, where buffers made up front would
 * each be first-touched in turn (lenet5's conv2 outputs came as fresh pages while conv2's GPFQ
 * buffers lay freed). A conv that pools its own outputs gets no buffer for the unpooled ones
 * (lenet5: 4.8 MB per network, never written, which took freed memory from the buffers after).
 * The nodes folded into a conv are run as run_slice runs them.
 */
static gpfq_status reserve(gpfq_forward *fwd, int from, int upto, int hooked) {
    const gpfq_model *m = fwd->model;
    for (int i = from < 0 ? 0 : from; i < upto && i < m->n_nodes; i++) {
        int fused = hooked || m->nodes[i].op != GPFQ_OP_CONV2D ? 0 : fwd->node_fused[i];
        if (i + fused >= upto) fused = 0; /* the conv runs alone (run_slice) */
        if (!fused || !fwd->node_pools[i]) GPFQ_TRY(allocate(fwd, i));
        if (needs_scratch(&m->nodes[i]) && !fwd->scratch &&
            !(fwd->scratch = gpfq_malloc(fwd->scratch_floats * sizeof(float), "conv scratch")))
            return GPFQ_ERR_NOMEM;
        if (fused) GPFQ_TRY(allocate(fwd, i + fused));
        i += fused;
    }
    return GPFQ_OK;
}

gpfq_status gpfq_forward_reserve(gpfq_forward *fwd, int from, int upto) {
    return reserve(fwd, from, upto, 0);
}

/* Runs nodes [from, upto) on images first .. first + n - 1 of the batch: each value's slice
 * starts `first` images into its buffer. */
static gpfq_status run_slice(gpfq_forward *fwd, const float *input, size_t first, size_t n,
                             int from, int upto, gpfq_node_hook hook, void *ctx) {
    const gpfq_model *m = fwd->model;
    for (int i = from; i < upto; i++) {
        const gpfq_node *node = &m->nodes[i];
        const float *inputs[GPFQ_MAX_INPUTS] = {NULL, NULL};
        for (int k = 0; k < node->n_inputs; k++) {
            const int src = node->inputs[k];
            inputs[k] = value_at(fwd, input, src) + first * value_floats(m, src);
        }
        /* (an alias of the input writes nothing: its output is the input) */
        float *output = (float *)value_at(fwd, input, i) + first * value_floats(m, i);
        if (node->op == GPFQ_OP_CONV2D) {
            int fused = hook ? 0 : fwd->node_fused[i]; /* a hook sees every node's own output */
            if (i + fused >= upto) fused = 0;
            /* the last fused node's buffer: the conv's own but after a pool */
            output = fwd->buffers[fwd->node_buffer[i + fused]] + first * value_floats(m, i + fused);
            gpfq_conv_geom g = node_geom(node);
            gpfq_conv_epilogue e = plan_epilogue(fwd, i, fused, input, first);
            GPFQ_TRY(gpfq_conv2d_fused(&g, inputs[0], node->weight, packed_weights(fwd, i, &g),
                                       node->bias, fused ? &e : NULL, n, output, fwd->scratch));
            if (hook) hook(ctx, i, output, n);
            i += fused;
            continue;
        }
        if (!(is_alias(node->op) && fwd->node_inplace[i]))
            GPFQ_TRY(gpfq_node_forward(node, inputs, n, output, fwd->scratch));
        if (hook) hook(ctx, i, output, n);
    }
    return GPFQ_OK;
}

/*
 * Every op works image by image, so a pass over n images can run as slices of micro_batch
 * images, each through every node of the range before the next: a slice's activations stay
 * in cache from the node that writes them to the node that reads them, where a whole batch's
 * go out to memory and back (resnet20: 12.8 MB per conv at 256 images). The slice depends on
 * the model only, not on the thread count: a GEMM may round differently for another number of
 * images, and the values must not change with --threads. A hook sees whole nodes, so a hooked
 * pass runs the batch at once.
 */
static gpfq_status run_range(gpfq_forward *fwd, const float *input, size_t n, int from, int upto,
                             gpfq_node_hook hook, void *ctx) {
    if (n > fwd->max_batch)
        return gpfq_fail(GPFQ_ERR_ARG, "batch of %zu images exceeds the planned %zu", n,
                         fwd->max_batch);
    const gpfq_model *m = fwd->model;
    if (from < 0 || upto > m->n_nodes || from > upto)
        return gpfq_fail(GPFQ_ERR_ARG, "nodes %d..%d are not a range of the model's %d nodes", from,
                         upto, m->n_nodes);
    GPFQ_TRY(reserve(fwd, from, upto, hook != NULL));
    const size_t step = hook ? n : fwd->micro_batch;
    fwd->input = input;
    for (size_t first = 0; first < n; first += step)
        GPFQ_TRY(run_slice(fwd, input, first, n - first < step ? n - first : step, from, upto, hook,
                           ctx));
    return GPFQ_OK;
}

gpfq_status gpfq_forward_run_hooked(gpfq_forward *fwd, const float *input, size_t n,
                                    const float **logits, gpfq_node_hook hook, void *ctx) {
    GPFQ_TRY(run_range(fwd, input, n, 0, fwd->model->n_nodes, hook, ctx));
    *logits = gpfq_forward_output(fwd, fwd->model->n_nodes - 1);
    return GPFQ_OK;
}

gpfq_status gpfq_forward_run(gpfq_forward *fwd, const float *input, size_t n,
                             const float **logits) {
    return gpfq_forward_run_hooked(fwd, input, n, logits, NULL, NULL);
}

gpfq_status gpfq_forward_range(gpfq_forward *fwd, const float *input, size_t n, int from,
                               int upto) {
    return run_range(fwd, input, n, from, upto, NULL, NULL);
}

int gpfq_forward_input_readers_end(const gpfq_forward *fwd) {
    const gpfq_model *m = fwd->model;
    int end = 0;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_inputs; k++) {
            const int src = m->nodes[i].inputs[k];
            if (src < 0 || fwd->node_buffer[src] < 0) end = i + 1;
        }
    return end;
}

const float *gpfq_forward_output(const gpfq_forward *fwd, int index) {
    return value_at(fwd, fwd->input, index);
}

float *gpfq_forward_output_buffer(gpfq_forward *fwd, int index) {
    if (index < 0 || index >= fwd->model->n_nodes || fwd->node_buffer[index] < 0) return NULL;
    if (gpfq_forward_reserve(fwd, index, index + 1) != GPFQ_OK) return NULL;
    return fwd->buffers[fwd->node_buffer[index]];
}
