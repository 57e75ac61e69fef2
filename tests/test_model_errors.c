/*
 * The model loader on broken files: each case starts from a valid fixture,
 * breaks one field with the HDF5 API, and checks the status and that the message
 * names the file, the node and the field. Then save/load round trips, float and
 * quantized (integer codes plus a step).
 */
#include "check.h"

#include "core/h5util.h"
#include "gpfq/gpfq.h"

#include <unistd.h>

static char valid[512];
static char broken[512];

static void copy_file(const char *from, const char *to, long limit) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    int ch;
    long n = 0;
    while ((limit < 0 || n < limit) && (ch = fgetc(in)) != EOF) fputc(ch, out), n++;
    fclose(in);
    fclose(out);
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

typedef void (*mutation)(hid_t file);

static void expect_load_error(mutation mutate, gpfq_status want, const char *needle1,
                              const char *needle2) {
    copy_file(valid, broken, -1);
    if (mutate) {
        hid_t f = H5Fopen(broken, H5F_ACC_RDWR, H5P_DEFAULT);
        mutate(f);
        H5Fclose(f);
    }
    gpfq_model *m = NULL;
    gpfq_status st = gpfq_model_load(broken, &m);
    CHECK(st == want && m == NULL, "status %d, expected %d (%s)", st, want, gpfq_last_error());
    CHECK_CONTAINS(gpfq_last_error(), broken);
    if (needle1) CHECK_CONTAINS(gpfq_last_error(), needle1);
    if (needle2) CHECK_CONTAINS(gpfq_last_error(), needle2);
    gpfq_model_free(m);
}

static void set_string(hid_t file, const char *group, const char *attr, const char *value) {
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    H5Adelete(g, attr);
    gpfq_h5_write_attr_string(g, attr, value);
    H5Gclose(g);
}

static void unknown_op(hid_t f) {
    set_string(f, "/nodes/0001", "op", "gelu");
}
static void unknown_input(hid_t f) {
    set_string(f, "/nodes/0003", "inputs", "nosuch");
}
static void later_input(hid_t f) {
    set_string(f, "/nodes/0003", "inputs", "fc3");
}
static void too_many_inputs(hid_t f) {
    set_string(f, "/nodes/0001", "inputs", "conv1,conv1");
}
static void duplicate_name(hid_t f) {
    set_string(f, "/nodes/0004", "name", "conv2");
}
static void wrong_format(hid_t f) {
    set_string(f, "/", "gpfq_format", "keras");
}

static void replace_weight(hid_t f, const char *group, const hsize_t *dims, int rank, int as_int,
                           float fill) {
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    H5Ldelete(g, "weight", H5P_DEFAULT);
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    float *w = calloc(n, sizeof(float));
    for (size_t i = 0; i < n; i++) w[i] = fill;
    if (as_int) {
        int32_t *s = calloc(n, sizeof(int32_t));
        hid_t space = H5Screate_simple(rank, dims, NULL);
        hid_t ds =
            H5Dcreate2(g, "weight", H5T_STD_I16LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_SHORT, H5S_ALL, H5S_ALL, H5P_DEFAULT, s);
        H5Dclose(ds), H5Sclose(space), free(s);
    } else {
        gpfq_h5_write_floats(g, "weight", w, rank, dims);
    }
    free(w);
    H5Gclose(g);
}

static void conv_shape(hid_t f) {
    hsize_t dims[4] = {8, 3, 5, 5};
    replace_weight(f, "/nodes/0003", dims, 4, 0, 0.1f);
}
static void conv_dtype(hid_t f) {
    hsize_t dims[4] = {8, 4, 5, 5};
    replace_weight(f, "/nodes/0003", dims, 4, 1, 0.0f);
}
static void linear_nan(hid_t f) {
    hsize_t dims[2] = {32, 200};
    replace_weight(f, "/nodes/0007", dims, 2, 0, NAN);
}
static void linear_rank(hid_t f) {
    hsize_t dims[1] = {32};
    replace_weight(f, "/nodes/0007", dims, 1, 0, 0.0f);
}
static void missing_name(hid_t f) {
    hid_t g = H5Gopen2(f, "/nodes/0002", H5P_DEFAULT);
    H5Adelete(g, "name");
    H5Gclose(g);
}
static void bad_classes(hid_t f) {
    int seven = 7;
    H5Adelete(f, "num_classes");
    gpfq_h5_write_attr_ints(f, "num_classes", &seven, 1);
}
static void bad_stride(hid_t f) {
    int stride[2] = {0, 1};
    hid_t g = H5Gopen2(f, "/nodes/0000", H5P_DEFAULT);
    H5Adelete(g, "stride");
    gpfq_h5_write_attr_ints(g, "stride", stride, 2);
    H5Gclose(g);
}
static void bad_groups(hid_t f) {
    int groups = 3;
    hid_t g = H5Gopen2(f, "/nodes/0003", H5P_DEFAULT);
    H5Adelete(g, "groups");
    gpfq_h5_write_attr_ints(g, "groups", &groups, 1);
    H5Gclose(g);
}
static void no_nodes(hid_t f) {
    H5Ldelete(f, "nodes", H5P_DEFAULT);
}
static void missing_node(hid_t f) {
    H5Ldelete(f, "/nodes/0005", H5P_DEFAULT);
}

static void test_errors(void) {
    expect_load_error(unknown_op, GPFQ_ERR_FORMAT, "node 1 'relu'", "attribute 'op' is 'gelu'");
    expect_load_error(unknown_input, GPFQ_ERR_FORMAT, "node 3 'conv2'",
                      "names 'nosuch', which is not an earlier node");
    expect_load_error(later_input, GPFQ_ERR_FORMAT, "node 3 'conv2'", "not an earlier node");
    expect_load_error(too_many_inputs, GPFQ_ERR_FORMAT, "node 1 'relu'", "this op takes 1");
    expect_load_error(duplicate_name, GPFQ_ERR_FORMAT, "node 4 'conv2'", "repeats");
    expect_load_error(wrong_format, GPFQ_ERR_FORMAT, "gpfq_format", NULL);
    expect_load_error(conv_shape, GPFQ_ERR_FORMAT, "node 3 'conv2'",
                      "dataset 'weight' has shape 8x3x5x5 but the input shape 4x14x14 requires "
                      "8x4x5x5");
    expect_load_error(conv_dtype, GPFQ_ERR_FORMAT, "node 3 'conv2'",
                      "dataset 'weight' must hold floating-point values");
    expect_load_error(linear_nan, GPFQ_ERR_FORMAT, "node 7 'fc1'", "non-finite");
    expect_load_error(linear_rank, GPFQ_ERR_FORMAT, "node 7 'fc1'", "must be 2-D");
    expect_load_error(missing_name, GPFQ_ERR_FORMAT, "node 2", "attribute 'name' is missing");
    expect_load_error(bad_classes, GPFQ_ERR_FORMAT, "'num_classes' is 7", "fc3");
    expect_load_error(bad_stride, GPFQ_ERR_FORMAT, "node 0 'conv1'", "attribute 'stride' is 0,1");
    expect_load_error(bad_groups, GPFQ_ERR_FORMAT, "node 3 'conv2'", "'groups' = 3");
    expect_load_error(no_nodes, GPFQ_ERR_FORMAT, "group '/nodes' is missing", NULL);
    expect_load_error(missing_node, GPFQ_ERR_FORMAT, "'/nodes/0005' is missing", NULL);

    /* not HDF5 at all, and a truncated HDF5 file */
    FILE *f = fopen(broken, "w");
    fputs("this is a text file\n", f);
    fclose(f);
    gpfq_model *m = NULL;
    CHECK(gpfq_model_load(broken, &m) == GPFQ_ERR_FORMAT, "text file: %s", gpfq_last_error());
    CHECK_CONTAINS(gpfq_last_error(), "not an HDF5 file");
    long size = file_size(valid);
    const long cuts[] = {100, 2000, size / 2, size - 500};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        copy_file(valid, broken, cuts[i]);
        gpfq_status st = gpfq_model_load(broken, &m);
        CHECK(st == GPFQ_ERR_FORMAT && m == NULL, "truncated at %ld: status %d (%s)", cuts[i], st,
              gpfq_last_error());
        CHECK_CONTAINS(gpfq_last_error(), broken);
    }
    CHECK(gpfq_model_load("/nonexistent/model.h5", &m) == GPFQ_ERR_IO, "missing file");
    CHECK_CONTAINS(gpfq_last_error(), "No such file");
}

static void logits_of(const gpfq_model *m, const float *input, size_t n, float *out) {
    gpfq_forward *fwd = NULL;
    const float *logits = NULL;
    gpfq_forward_create(m, n, &fwd);
    gpfq_forward_run(fwd, input, n, &logits);
    memcpy(out, logits, n * (size_t)m->num_classes * sizeof(float));
    gpfq_forward_free(fwd);
}

static void test_round_trip(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/model_resnet_small.h5", dir);
    gpfq_model *m = NULL, *back = NULL;
    CHECK(gpfq_model_load(path, &m) == GPFQ_OK, "%s", gpfq_last_error());
    if (!m) return;
    float *input, *expected;
    size_t n;
    gpfq_model_load_check(path, m, &input, &expected, &n);
    float *a = malloc(n * m->num_classes * sizeof(float)), *b = malloc(n * m->num_classes * 4);
    logits_of(m, input, n, a);

    CHECK(gpfq_model_save(m, broken, NULL) == GPFQ_OK, "save: %s", gpfq_last_error());
    CHECK(gpfq_model_load(broken, &back) == GPFQ_OK, "reload: %s", gpfq_last_error());
    if (back) {
        logits_of(back, input, n, b);
        CHECK(memcmp(a, b, n * m->num_classes * sizeof(float)) == 0, "float round trip");
        CHECK(strcmp(back->source, m->source) == 0 && back->n_nodes == m->n_nodes, "metadata");
        gpfq_model_free(back);
    }

    /* quantize the first conv by hand to codes in -3..3 with step 0.05 */
    const int32_t *codes[64] = {0};
    gpfq_node *conv = &m->nodes[0];
    int32_t *c0 = malloc(conv->weight_count * sizeof(int32_t));
    for (size_t i = 0; i < conv->weight_count; i++) c0[i] = (int32_t)((int)(i % 7) - 3);
    codes[0] = c0;
    conv->quantized = 1;
    conv->weight_step = 0.05f;
    conv->weight_offset = 0.0f;
    CHECK(gpfq_model_save(m, broken, codes) == GPFQ_OK, "save codes: %s", gpfq_last_error());
    CHECK(gpfq_model_load(broken, &back) == GPFQ_OK, "reload codes: %s", gpfq_last_error());
    if (back) {
        int same = back->nodes[0].quantized;
        for (size_t i = 0; i < conv->weight_count; i++)
            same = same && back->nodes[0].weight[i] == (float)c0[i] * 0.05f;
        CHECK(same, "codes * step give the weights back");
        gpfq_model_free(back);
    }
    /* the L0 alphabet: code k != 0 means sign(k) * (offset + step * (|k| - 1)) */
    conv->weight_offset = 0.02f;
    gpfq_model_save(m, broken, codes);
    CHECK(gpfq_model_load(broken, &back) == GPFQ_OK, "reload L0 codes: %s", gpfq_last_error());
    if (back) {
        CHECK(back->nodes[0].weight[0] == -(0.02f + 0.05f * 2.0f) &&
                  back->nodes[0].weight[3] == 0.0f && back->nodes[0].weight[4] == 0.02f,
              "L0 codes decode");
        gpfq_model_free(back);
    }
    free(c0), free(a), free(b), free(input), free(expected);
    gpfq_model_free(m);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/fixtures";
    gpfq_h5_quiet();
    snprintf(valid, sizeof valid, "%s/model_lenet_small.h5", dir);
    snprintf(broken, sizeof broken, "/tmp/gpfq_broken_%d.h5", (int)getpid());
    test_errors();
    test_round_trip(dir);
    remove(broken);
    return check_report("test_model_errors");
}
