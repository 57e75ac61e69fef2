/*
 * Fuzzes the model-file loader, gpfq_model_load (HDF5), and the /check reader.
 *
 * The input is written to a scratch file and loaded. A model the loader accepts
 * must also: clone, run a forward pass (when it is small enough to run quickly),
 * and survive a save and a reload. Every HDF5 object the loader opened must be
 * closed again.
 */
#include "fuzz_common.h"

#include "gpfq/gpfq.h"

#include <hdf5.h>

/* Floats of activations and scratch a batch-1 forward pass would touch, or
 * SIZE_MAX beyond any sensible budget. */
static size_t forward_floats(const gpfq_model *m) {
    size_t total = gpfq_shape_size(m->input_shape);
    for (int i = 0; i < m->n_nodes; i++) {
        const gpfq_node *node = &m->nodes[i];
        size_t out = gpfq_shape_size(node->out_shape), scratch = gpfq_node_scratch(node, 1);
        if (out > ((size_t)1 << 32) || scratch > ((size_t)1 << 32)) return SIZE_MAX;
        total += out + scratch;
        if (total > ((size_t)1 << 32)) return SIZE_MAX;
    }
    return total;
}

static void run_forward(const gpfq_model *m, const float *input, size_t n) {
    /* skip models whose pass would be slow: estimate the inner-loop steps */
    if (forward_floats(m) > ((size_t)1 << 20)) return;
    double work = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const gpfq_node *node = &m->nodes[i];
        const gpfq_shape in = node->in_shape, out = node->out_shape;
        double positions = (double)out.h * out.w, window = 1;
        if (node->op == GPFQ_OP_MAXPOOL2D || node->op == GPFQ_OP_AVGPOOL2D)
            window = (double)node->kernel[0] * node->kernel[1];
        if (node->op == GPFQ_OP_ADAPTIVE_AVGPOOL2D)
            window = ((double)in.h / out.h + 2) * ((double)in.w / out.w + 2);
        work += (double)gpfq_shape_size(in) + (double)gpfq_shape_size(out) * window;
        if (node->weight) work += (double)node->weight_count * positions;
    }
    if (work > 2e7) return;
    gpfq_forward *fwd = NULL;
    gpfq_status st = gpfq_forward_create(m, n, &fwd);
    FUZZ_CHECK(st == GPFQ_OK, "forward plan of an accepted model: %s", gpfq_last_error());
    size_t in = gpfq_shape_size(m->input_shape);
    float *zeros = NULL;
    if (!input) {
        zeros = calloc(in * n, sizeof(float));
        FUZZ_CHECK(zeros != NULL, "out of memory");
        input = zeros;
    }
    const float *logits = NULL;
    st = gpfq_forward_run(fwd, input, n, &logits);
    FUZZ_CHECK(st == GPFQ_OK || st == GPFQ_ERR_NUMERIC, "forward run: %s", gpfq_last_error());
    free(zeros);
    gpfq_forward_free(fwd);
}

static void round_trip(const gpfq_model *m) {
    char path[512];
    fuzz_path(path, sizeof path, "model-saved.h5");
    gpfq_status st = gpfq_model_save(m, path, NULL);
    FUZZ_CHECK(st == GPFQ_OK, "saving an accepted model: %s", gpfq_last_error());
    gpfq_model *again = NULL;
    st = gpfq_model_load(path, &again);
    FUZZ_CHECK(st == GPFQ_OK, "reloading a saved model: %s", gpfq_last_error());
    FUZZ_CHECK(again->n_nodes == m->n_nodes &&
                   gpfq_model_param_count(again) == gpfq_model_param_count(m),
               "the reloaded model differs");
    gpfq_model_free(again);
    remove(path);
}

/* What gpfq_model_validate promises: every node has a positive shape whose size
 * fits an int (the ops index with int sizes), and flat shapes are C x 1 x 1. */
static void check_shapes(const gpfq_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        const gpfq_node *node = &m->nodes[i];
        const gpfq_shape s = node->out_shape;
        FUZZ_CHECK(s.c >= 1 && s.h >= 1 && s.w >= 1 && gpfq_shape_size(s) <= 0x7fffffff,
                   "node %d '%s' has output shape %dx%dx%d", i, node->name, s.c, s.h, s.w);
        FUZZ_CHECK(!s.flat || (s.h == 1 && s.w == 1), "node %d has a flat shape %dx%dx%d", i, s.c,
                   s.h, s.w);
        for (int k = 0; k < node->n_inputs; k++)
            FUZZ_CHECK(node->inputs[k] == GPFQ_GRAPH_INPUT ||
                           (node->inputs[k] >= 0 && node->inputs[k] < i),
                       "node %d input %d is %d", i, k, node->inputs[k]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_path(path, sizeof path, "model.h5");
    fuzz_write(path, data, size);
    gpfq_model *m = NULL;
    if (gpfq_model_load(path, &m) == GPFQ_OK) {
        FUZZ_CHECK(m->n_nodes >= 1 && m->source && m->dataset && m->recipe && m->quantization,
                   "an accepted model lacks fields");
        check_shapes(m);
        gpfq_model *copy = NULL;
        FUZZ_CHECK(gpfq_model_clone(m, &copy) == GPFQ_OK, "clone: %s", gpfq_last_error());
        gpfq_model_free(copy);

        float *input = NULL, *expected = NULL;
        size_t n = 0;
        if (gpfq_model_load_check(path, m, &input, &expected, &n) == GPFQ_OK) {
            FUZZ_CHECK(n >= 1 && input && expected, "an accepted /check group is empty");
            run_forward(m, input, n < 4 ? n : 4);
            free(input);
            free(expected);
        } else {
            FUZZ_CHECK(!input && !expected, "a rejected /check group left buffers");
            run_forward(m, NULL, 1);
        }
        round_trip(m);
        gpfq_model_free(m);
    } else {
        FUZZ_CHECK(m == NULL, "a failed load returned a model");
    }
    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    FUZZ_CHECK(open == 0, "%zd HDF5 object(s) left open", open);
    remove(path);
    return 0;
}
