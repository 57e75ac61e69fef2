/*
 * Every op and the small whole models against PyTorch: each fixture under
 * tests/fixtures is a model file whose /check group holds a batch and the
 * logits torch computed (tools/make_fixtures.py). Then the fast kernels against
 * their _ref twins on random geometries, and the planned forward pass against a
 * naive node-by-node pass with one buffer per node.
 *
 * Tolerances: |gpfq - torch| <= 1e-5 + 1e-5 |torch| per value (float32 sums of
 * at most a few thousand terms, both sides single precision), and the same
 * against the double-accumulating _ref kernels.
 */
#include "gpfq_check.h"

#include <dirent.h>
#include <stdint.h>

static const double FIXTURE_ATOL = 1e-5, FIXTURE_RTOL = 1e-5;
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static const double REF_ATOL = 1e-5, REF_RTOL = 1e-5;

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* The forward pass without planning: one buffer per node, nothing in place. */
static float *naive_forward(const gpfq_model *m, const float *input, size_t n) {
    float **outs = calloc((size_t)m->n_nodes, sizeof(float *));
    for (int i = 0; i < m->n_nodes; i++) {
        const gpfq_node *node = &m->nodes[i];
        const float *ins[2] = {NULL, NULL};
        for (int k = 0; k < node->n_inputs; k++)
            ins[k] = node->inputs[k] < 0 ? input : outs[node->inputs[k]];
        outs[i] = malloc(n * gpfq_shape_size(node->out_shape) * sizeof(float));
        size_t scratch_n = gpfq_node_scratch(node, n);
        float *scratch = scratch_n ? malloc(scratch_n * sizeof(float)) : NULL;
        CHECK_OK(gpfq_node_forward(node, ins, n, outs[i], scratch));
        free(scratch);
    }
    float *result = outs[m->n_nodes - 1];
    for (int i = 0; i < m->n_nodes - 1; i++) free(outs[i]);
    free(outs);
    return result;
}

enum { GPFQ_MAX_NODES_TESTED = 256 };

static void check_fixture(const char *path) {
    gpfq_model *m = NULL;
    gpfq_status st = gpfq_model_load(path, &m);
    CHECK(st == GPFQ_OK, "%s: %s", path, gpfq_last_error());
    if (st != GPFQ_OK) return;
    float *input = NULL, *expected = NULL;
    size_t n = 0;
    st = gpfq_model_load_check(path, m, &input, &expected, &n);
    CHECK(st == GPFQ_OK, "%s: %s", path, gpfq_last_error());
    if (st == GPFQ_OK) {
        gpfq_forward *fwd = NULL;
        const float *logits = NULL;
        CHECK(gpfq_forward_create(m, n, &fwd) == GPFQ_OK, "%s", gpfq_last_error());
        CHECK(gpfq_forward_run(fwd, input, n, &logits) == GPFQ_OK, "%s", gpfq_last_error());
        size_t count = n * (size_t)m->num_classes;
        double max_abs;
        double excess = check_excess(logits, expected, count, FIXTURE_ATOL, FIXTURE_RTOL, &max_abs);
        CHECK(excess <= 0, "%s: max abs error %.3g against torch exceeds the tolerance", path,
              max_abs);
        /* the same predictions as torch on every image */
        for (size_t i = 0; i < n; i++)
            CHECK(argmax(logits + i * m->num_classes, m->num_classes) ==
                      argmax(expected + i * m->num_classes, m->num_classes),
                  "%s: image %zu predicts a different class than torch", path, i);
        /* planning (buffer reuse, in-place ops, aliases, conv+BatchNorm+ReLU folding)
         * changes nothing */
        float *naive = naive_forward(m, input, n);
        CHECK(memcmp(naive, logits, count * sizeof(float)) == 0,
              "%s: planned and naive forward passes differ (%d nodes folded into convs)", path,
              gpfq_forward_fused(fwd));
        if ((strstr(path, "resnet") || strstr(path, "lenet")) &&
            gpfq_conv_get_kernel() != GPFQ_CONV_IM2COL)
            CHECK(gpfq_forward_fused(fwd) > 0, "%s: no BatchNorm or ReLU folded into a conv", path);
        /* model_resnet_small: conv1 + bn + relu, layer1_conv1 + bn + relu, layer1_conv2 + bn +
         * the residual add + relu, layer2_conv1 + bn + relu, layer2_conv2 + bn (its add comes
         * after the downsample's nodes): 10 nodes folded */
        if (strstr(path, "model_resnet_small") && gpfq_conv_get_kernel() != GPFQ_CONV_IM2COL)
            CHECK(gpfq_forward_fused(fwd) == 10, "%s: %d nodes folded into convs, expected 10",
                  path, gpfq_forward_fused(fwd));
        /* a plan run in slices computes what separate passes over each slice's images do, bit
         * for bit, a last short slice included (BLAS's GEMMs may round differently for another
         * number of images, so the reference is per slice too) */
        const size_t slices[] = {1, 2, 3, n > 1 ? n - 1 : 1};
        const size_t image = gpfq_shape_size(m->input_shape);
        float *per_slice = malloc(count * sizeof(float));
        for (size_t k = 0; k < sizeof slices / sizeof slices[0]; k++) {
            for (size_t first = 0; first < n; first += slices[k]) {
                const size_t len = n - first < slices[k] ? n - first : slices[k];
                float *part = naive_forward(m, input + first * image, len);
                memcpy(per_slice + first * m->num_classes, part,
                       len * m->num_classes * sizeof(float));
                free(part);
            }
            gpfq_forward *sliced = NULL;
            const float *out = NULL;
            CHECK(gpfq_forward_create(m, n, &sliced) == GPFQ_OK, "%s", gpfq_last_error());
            gpfq_forward_set_slice(sliced, slices[k]);
            CHECK(gpfq_forward_run(sliced, input, n, &out) == GPFQ_OK, "%s", gpfq_last_error());
            CHECK(memcmp(per_slice, out, count * sizeof(float)) == 0,
                  "%s: a pass in slices of %zu images differs from passes over each slice", path,
                  slices[k]);
            gpfq_forward_free(sliced);
        }
        free(per_slice);
        /* a plan keeps its convs' packed weights: after new weights and
         * gpfq_forward_weights_changed it computes what a fresh plan does */
        float *saved[GPFQ_MAX_NODES_TESTED] = {NULL};
        for (int i = 0; i < m->n_nodes && i < GPFQ_MAX_NODES_TESTED; i++) {
            gpfq_node *node = &m->nodes[i];
            if (node->op != GPFQ_OP_CONV2D) continue;
            saved[i] = malloc(node->weight_count * sizeof(float));
            memcpy(saved[i], node->weight, node->weight_count * sizeof(float));
            for (size_t w = 0; w < node->weight_count; w++)
                node->weight[w] *= w % 3 ? 1.25f : -0.5f;
        }
        gpfq_forward_weights_changed(fwd, -1);
        CHECK(gpfq_forward_run(fwd, input, n, &logits) == GPFQ_OK, "%s", gpfq_last_error());
        float *renewed = naive_forward(m, input, n);
        CHECK(memcmp(renewed, logits, count * sizeof(float)) == 0,
              "%s: a plan run after its weights changed differs from a fresh pass", path);
        free(renewed);
        for (int i = 0; i < m->n_nodes && i < GPFQ_MAX_NODES_TESTED; i++)
            if (saved[i]) {
                memcpy(m->nodes[i].weight, saved[i], m->nodes[i].weight_count * sizeof(float));
                free(saved[i]);
            }
        gpfq_forward_weights_changed(fwd, -1);
        CHECK(gpfq_forward_run(fwd, input, n, &logits) == GPFQ_OK, "%s", gpfq_last_error());
        CHECK(memcmp(naive, logits, count * sizeof(float)) == 0,
              "%s: a plan run after its weights came back differs from a fresh pass", path);
        /* packed weights whose format changed with the Winograd mode or tile are packed
         * again, without gpfq_forward_weights_changed */
        if (gpfq_conv_get_kernel() == GPFQ_CONV_AVX512) {
            const gpfq_winograd_mode mode = gpfq_conv_get_winograd();
            gpfq_conv_set_winograd(mode == GPFQ_WINOGRAD_ALL ? GPFQ_WINOGRAD_OFF
                                                             : GPFQ_WINOGRAD_ALL);
            float *switched = naive_forward(m, input, n);
            CHECK(gpfq_forward_run(fwd, input, n, &logits) == GPFQ_OK, "%s", gpfq_last_error());
            CHECK(memcmp(switched, logits, count * sizeof(float)) == 0,
                  "%s: a plan run after the Winograd mode changed differs from a fresh pass", path);
            free(switched);
            const int tile =
                gpfq_conv_set_winograd_tile(gpfq_conv_get_winograd_tile() == 4 ? 2 : 4);
            switched = naive_forward(m, input, n);
            CHECK(gpfq_forward_run(fwd, input, n, &logits) == GPFQ_OK, "%s", gpfq_last_error());
            CHECK(memcmp(switched, logits, count * sizeof(float)) == 0,
                  "%s: a plan run after the Winograd tile changed differs from a fresh pass", path);
            free(switched);
            gpfq_conv_set_winograd_tile(tile);
            gpfq_conv_set_winograd(mode);
        }
        free(naive);
        /* a batch of one gives the same logits as the full batch */
        gpfq_forward *single = NULL;
        CHECK(gpfq_forward_create(m, 1, &single) == GPFQ_OK, "%s", gpfq_last_error());
        const float *one = NULL;
        gpfq_forward_run(single, input, 1, &one);
        excess = check_excess(one, expected, (size_t)m->num_classes, FIXTURE_ATOL, FIXTURE_RTOL,
                              &max_abs);
        CHECK(excess <= 0, "%s: batch of one: max abs error %.3g", path, max_abs);
        gpfq_forward_free(single);
        gpfq_forward_free(fwd);
        printf("  %-40s %zu images, max abs error %.2g\n", strrchr(path, '/') + 1, n, max_abs);
    }
    free(input);
    free(expected);
    gpfq_model_free(m);
}

static int fixture_count(const char *dir) {
    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot open fixtures directory %s", dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".h5") != 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        check_fixture(path);
        count++;
    }
    closedir(d);
    return count;
}

static void fill(float *v, size_t n, unsigned long long *state) {
    for (size_t i = 0; i < n; i++) v[i] = check_rand(state);
}

static void check_conv_against_ref(gpfq_conv_geom g, size_t n, unsigned long long *state) {
    g.out_h = gpfq_window_out(g.in_h, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, 0);
    g.out_w = gpfq_window_out(g.in_w, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, 0);
    size_t xs = n * g.in_c * g.in_h * g.in_w, ys = n * g.out_c * g.out_h * g.out_w;
    size_t ws = (size_t)g.out_c * (g.in_c / g.groups) * g.kernel_h * g.kernel_w;
    float *x = malloc(xs * 4), *w = malloc(ws * 4), *b = malloc(g.out_c * 4);
    float *y = malloc(ys * 4), *yr = malloc(ys * 4);
    size_t scratch_n = gpfq_conv2d_scratch(&g, n);
    float *scratch = malloc((scratch_n + 1) * 4);
    fill(x, xs, state);
    fill(w, ws, state);
    fill(b, g.out_c, state);
    CHECK_OK(gpfq_conv2d(&g, x, w, b, n, y, scratch));
    gpfq_conv2d_ref(&g, x, w, b, n, yr);
    double max_abs;
    double excess =
        check_excess(y, yr, ys, REF_ATOL * g.in_c * g.kernel_h * g.kernel_w, REF_RTOL, &max_abs);
    CHECK(excess <= 0, "conv %dx%dx%d->%d k%dx%d s%d p%d d%d g%d n%zu (%s%s): max abs error %.3g",
          g.in_c, g.in_h, g.in_w, g.out_c, g.kernel_h, g.kernel_w, g.stride_h, g.pad_h,
          g.dilation_h, g.groups, n, gpfq_conv_kernel_name(gpfq_conv_get_kernel()),
          !gpfq_conv_direct_fits(&g)    ? ", not direct"
          : gpfq_conv_winograd_fits(&g) ? ", Winograd"
                                        : "",
          max_abs);
    /* without a scratch from the caller (a plan expecting a direct kernel), the conv makes one:
     * the same bits */
    CHECK_OK(gpfq_conv2d(&g, x, w, b, n, yr, NULL));
    CHECK(memcmp(y, yr, ys * 4) == 0,
          "conv %dx%dx%d->%d k%dx%d s%d g%d n%zu: no scratch given, other values", g.in_c, g.in_h,
          g.in_w, g.out_c, g.kernel_h, g.kernel_w, g.stride_h, g.groups, n);
    free(x), free(w), free(b), free(y), free(yr), free(scratch);
}

/* Winograd F(2x2, 3x3) and F(4x4, 3x3) where the CPU has AVX-512: which convs take it, then
 * the same tolerance against the reference as the direct kernels, for both tile sizes */
static void check_winograd(unsigned long long *state) {
    const gpfq_conv_kernel kernel = gpfq_conv_set_kernel(GPFQ_CONV_AVX512);
    if (gpfq_conv_get_kernel() != GPFQ_CONV_AVX512) {
        printf("test_ops: AVX-512 not supported by this CPU, Winograd skipped\n");
        gpfq_conv_set_kernel(kernel);
        return;
    }
    const gpfq_winograd_mode mode = gpfq_conv_set_winograd(GPFQ_WINOGRAD_AUTO);
    const int big = GPFQ_WINOGRAD_MIN_CHANNELS;
    const gpfq_conv_geom wide = {big, 7, 7, big, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const gpfq_conv_geom narrow = {big - 1, 7, 7, big, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const gpfq_conv_geom down = {big, 8, 8, big, 4, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1};
    const gpfq_conv_geom valid = {big, 8, 8, big, 6, 6, 3, 3, 1, 1, 0, 0, 1, 1, 1};
    const gpfq_conv_geom five = {big, 8, 8, big, 8, 8, 5, 5, 1, 1, 2, 2, 1, 1, 1};
    CHECK(gpfq_conv_winograd_fits(&wide) && !gpfq_conv_winograd_fits(&narrow) &&
              !gpfq_conv_winograd_fits(&down) && !gpfq_conv_winograd_fits(&valid) &&
              !gpfq_conv_winograd_fits(&five),
          "auto: Winograd for 3x3 stride-1 \"same\" convs with %d channels in and out only", big);
    gpfq_conv_set_winograd(GPFQ_WINOGRAD_OFF);
    CHECK(!gpfq_conv_winograd_fits(&wide), "off: no Winograd");
    CHECK(gpfq_conv2d_packed_floats(&wide) == (size_t)big * big * 9,
          "off: 9 packed weights per channel pair");
    gpfq_conv_set_winograd(GPFQ_WINOGRAD_ALL);
    CHECK(gpfq_conv_winograd_fits(&narrow) && !gpfq_conv_winograd_fits(&down),
          "all: Winograd for every 3x3 stride-1 \"same\" conv, and for no other");
    const int tile = gpfq_conv_set_winograd_tile(0);
    CHECK(gpfq_conv_winograd_tile(&wide) == 4 && gpfq_conv_winograd_tile(&down) == 0 &&
              gpfq_conv2d_packed_floats(&wide) == (size_t)big * big * 36,
          "auto tile: F(4x4, 3x3), 36 packed weights per channel pair");
    gpfq_conv_set_winograd_tile(2);
    CHECK(gpfq_conv_winograd_tile(&wide) == 2 &&
              gpfq_conv2d_packed_floats(&wide) == (size_t)big * big * 16,
          "tile 2: F(2x2, 3x3), 16 packed weights per channel pair");
    /* in_c,in_h,in_w, out_c,oh,ow, kh,kw, sh,sw, ph,pw, dh,dw, groups */
    const gpfq_conv_geom cases[] = {
        {3, 9, 9, 4, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* odd size: the last tiles half out */
        {5, 8, 6, 7, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* out_c not a multiple of 4 */
        {2, 1, 1, 3, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* 1x1 image: one tile, all padding */
        {1, 1, 40, 2, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* one row of 20 tiles: two vectors */
        {3, 5, 70, 4, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* rows of 35 tiles, 70 outputs */
        {100, 4, 4, 12, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* in_c in two slices of the products */
        {16, 28, 28, 32, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* many blocks of tiles per image */
        {64, 7, 7, 64, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* resnet's 7x7 stage */
        {192, 4, 5, 190, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* 2.3 MB of transformed weights */
        {2, 11, 13, 3, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* sizes 4k + 3 and 4k + 1 */
        {4, 6, 10, 5, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* sizes 4k + 2 */
    };
    for (int t = 2; t <= 4; t += 2) {
        gpfq_conv_set_winograd_tile(t);
        printf("test_ops: Winograd F(%dx%d, 3x3) against the reference\n", t, t);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            check_conv_against_ref(cases[i], 1, state);
            check_conv_against_ref(cases[i], 5, state);
            check_conv_against_ref(cases[i], 70, state);
        }
        /* chunks of images shared by two threads, a last one cut short */
        int threads = openblas_get_num_threads();
        openblas_set_num_threads(2);
        check_conv_against_ref(cases[6], 13, state);
        openblas_set_num_threads(threads);
    }
    gpfq_conv_set_winograd_tile(tile);
    gpfq_conv_set_winograd(mode);
    gpfq_conv_set_kernel(kernel);
}

/* The interleaved kernel where the CPU has AVX-512: which convs take it; then, on every
 * geometry of `cases` plus four stride-2 ones and for 1 to 70 images, the same bits as the
 * direct kernel, and three epilogues (BatchNorm scale and shift with ReLU; none, without a
 * bias; ReLU alone), each followed by a 2x2 max pool, the same bits as the separate ops, on
 * inputs with a few NaNs and zeros of both signs; the pool also where the kernel cannot pool
 * (into `unpooled`, then gpfq_maxpool2d). */
static void check_interleaved(const gpfq_conv_geom *cases, size_t n_cases,
                              unsigned long long *state) {
    const gpfq_conv_kernel kernel = gpfq_conv_set_kernel(GPFQ_CONV_AVX512);
    if (gpfq_conv_get_kernel() != GPFQ_CONV_AVX512) {
        printf("test_ops: AVX-512 not supported by this CPU, interleaved kernel skipped\n");
        gpfq_conv_set_kernel(kernel);
        return;
    }
    const gpfq_interleave_mode mode = gpfq_conv_set_interleave(GPFQ_INTERLEAVE_AUTO);
    /* in_c,in_h,in_w, out_c,oh,ow, kh,kw, sh,sw, ph,pw, dh,dw, groups */
    const gpfq_conv_geom lenet1 = {1, 28, 28, 6, 28, 28, 5, 5, 1, 1, 2, 2, 1, 1, 1};
    const gpfq_conv_geom lenet2 = {6, 14, 14, 16, 10, 10, 5, 5, 1, 1, 0, 0, 1, 1, 1};
    const gpfq_conv_geom resnet = {16, 32, 32, 16, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const gpfq_conv_geom wino = {64, 8, 8, 64, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const gpfq_conv_geom down = {32, 14, 14, 64, 7, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1};
    const gpfq_conv_geom huge = {64, 224, 224, 64, 112, 112, 3, 3, 2, 2, 1, 1, 1, 1, 1};
    CHECK(gpfq_conv_interleaved_fits(&lenet1) && gpfq_conv_interleaved_fits(&lenet2) &&
              gpfq_conv_interleaved_fits(&down) && !gpfq_conv_interleaved_fits(&resnet) &&
              !gpfq_conv_interleaved_fits(&wino) && !gpfq_conv_interleaved_fits(&huge),
          "auto: interleaved for LeNet-5's convs and stride-2 convs, not for 32x32 stride-1 "
          "planes, Winograd's convs or 224x224 planes");
    gpfq_conv_set_interleave(GPFQ_INTERLEAVE_OFF);
    CHECK(!gpfq_conv_interleaved_fits(&lenet2), "off: no interleaved kernel");
    static const size_t counts[] = {1, 5, 16, 17, 70};
    /* stride 2 (the direct cases are stride 1): odd and even sizes, 3x3 and 5x5, out_c past a
     * block */
    static const gpfq_conv_geom strided[] = {
        {3, 9, 9, 5, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {4, 10, 8, 6, 0, 0, 5, 5, 2, 2, 2, 2, 1, 1, 1},
        {6, 7, 12, 9, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {16, 14, 14, 32, 0, 0, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    };
    const size_t n_strided = sizeof strided / sizeof strided[0];
    size_t compared = 0;
    for (size_t k = 0; k < n_cases + n_strided; k++) {
        gpfq_conv_geom g = k < n_cases ? cases[k] : strided[k - n_cases];
        g.out_h = gpfq_window_out(g.in_h, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, 0);
        g.out_w = gpfq_window_out(g.in_w, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, 0);
        gpfq_conv_set_interleave(GPFQ_INTERLEAVE_ALL);
        const int fits = gpfq_conv_interleaved_fits(&g);
        const int direct = gpfq_conv_direct_fits(&g) && !gpfq_conv_winograd_fits(&g);
        CHECK(fits == (direct && g.out_w >= 3),
              "all: interleaved for conv case %zu is %d, expected %d (direct, a row of 3 or more)",
              k, fits, direct && g.out_w >= 3);
        if (k >= n_cases) CHECK(fits, "all: no interleaved kernel for stride-2 case %zu", k);
        if (!fits) continue;
        for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
            const size_t n = counts[ci];
            const size_t xs = n * g.in_c * g.in_h * g.in_w, ys = n * g.out_c * g.out_h * g.out_w;
            const size_t ws = (size_t)g.out_c * g.in_c * g.kernel_h * g.kernel_w;
            const size_t pixels = (size_t)g.out_h * g.out_w;
            float *x = malloc(xs * 4), *w = malloc(ws * 4), *b = malloc(g.out_c * 8);
            float *y_il = malloc(ys * 4), *y_flat = malloc(ys * 4), *unpooled = malloc(ys * 4);
            float *p_il = malloc(ys * 4), *p_sep = malloc(ys * 4), *p_fall = malloc(ys * 4);
            float *scratch = malloc((gpfq_conv2d_scratch(&g, n) + 1) * 4);
            fill(x, xs, state);
            fill(w, ws, state);
            fill(b, 2 * (size_t)g.out_c, state);
            for (size_t i = 0; i < xs; i += 997) x[i] = i % 2 ? NAN : -0.0f; /* a few */
            float *scale = b + g.out_c, shift[256];
            for (int c = 0; c < g.out_c && c < 256; c++) shift[c] = 0.25f * (float)(c % 5) - 0.5f;
            /* the plain conv: interleaved against the direct kernel */
            CHECK_OK(gpfq_conv2d(&g, x, w, b, n, y_il, scratch));
            gpfq_conv_set_interleave(GPFQ_INTERLEAVE_OFF);
            CHECK_OK(gpfq_conv2d(&g, x, w, b, n, y_flat, scratch));
            CHECK(memcmp(y_il, y_flat, ys * 4) == 0,
                  "conv case %zu, %zu images: interleaved and direct kernels differ", k, n);
            /* epilogues, fused, against the separate ops, pooled to floor(out/2) when the
             * output has 2 or more rows and columns: BatchNorm and ReLU after the bias; none,
             * and no bias (the pool then sees negative values); ReLU alone */
            const int pool = g.out_h >= 2 && g.out_w >= 2;
            const gpfq_conv_geom pg = {g.out_c,     g.out_h, g.out_w, g.out_c, g.out_h / 2,
                                       g.out_w / 2, 2,       2,       2,       2,
                                       0,           0,       1,       1,       1};
            const size_t ps = pool ? n * g.out_c * pg.out_h * pg.out_w : ys;
            for (int v = 0; v < 3; v++) {
                const int with_scale = v == 0, relu = v != 1;
                const float *bias = v == 1 ? NULL : b;
                gpfq_conv_epilogue e = {with_scale ? scale : NULL,
                                        with_scale ? shift : NULL,
                                        NULL,
                                        relu,
                                        pool,
                                        unpooled};
                gpfq_conv_set_interleave(GPFQ_INTERLEAVE_OFF);
                /* no pooling kernel, and no room for the unpooled outputs given: the conv
                 * makes its own */
                gpfq_conv_epilogue bare = e;
                bare.unpooled = NULL;
                CHECK_OK(gpfq_conv2d_fused(&g, x, w, NULL, bias, &bare, n, p_fall, NULL));
                memcpy(p_il, p_fall, ps * 4);
                /* no pooling */
                CHECK_OK(gpfq_conv2d_fused(&g, x, w, NULL, bias, &e, n, p_fall, scratch));
                CHECK(memcmp(p_il, p_fall, ps * 4) == 0,
                      "conv case %zu, %zu images, epilogue %d: no room for the unpooled outputs "
                      "given, other values",
                      k, n, v);
                CHECK_OK(gpfq_conv2d(&g, x, w, bias, n, y_flat, scratch));
                for (size_t i = 0; i < n; i++)
                    for (int c = 0; c < g.out_c; c++) {
                        float *o = y_flat + (i * g.out_c + c) * pixels;
                        for (size_t p = 0; p < pixels; p++) {
                            volatile float t = o[p]; /* rounded: no contraction */
                            if (with_scale) t = t * scale[c];
                            if (with_scale) t = t + shift[c];
                            o[p] = relu ? gpfq_relu1(t) : t;
                        }
                    }
                if (pool)
                    gpfq_maxpool2d(&pg, y_flat, n, p_sep);
                else
                    memcpy(p_sep, y_flat, ys * 4);
                gpfq_conv_set_interleave(GPFQ_INTERLEAVE_ALL);
                CHECK_OK(gpfq_conv2d_fused(&g, x, w, NULL, bias, &e, n, p_il, scratch));
                CHECK(memcmp(p_il, p_sep, ps * 4) == 0 && memcmp(p_fall, p_sep, ps * 4) == 0,
                      "conv case %zu, %zu images, epilogue %d%s: the interleaved kernel (%d) or "
                      "the direct one then the pool (%d) differs from the separate ops",
                      k, n, v, pool ? " and pool" : "", memcmp(p_il, p_sep, ps * 4) != 0,
                      memcmp(p_fall, p_sep, ps * 4) != 0);
            }
            compared++;
            free(x), free(w), free(b), free(y_il), free(y_flat), free(unpooled);
            free(p_il), free(p_sep), free(p_fall), free(scratch);
        }
    }
    CHECK(compared >= 40, "only %zu interleaved cases compared", compared);
    /* chunks shared by two threads: against the reference */
    gpfq_conv_set_interleave(GPFQ_INTERLEAVE_ALL);
    const gpfq_conv_geom wide = {64, 28, 28, 8, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const gpfq_conv_geom wide2 = {64, 28, 28, 8, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1};
    const int threads = openblas_get_num_threads();
    openblas_set_num_threads(2);
    check_conv_against_ref(wide, 37, state);
    check_conv_against_ref(wide2, 28, state);
    openblas_set_num_threads(threads);
    gpfq_conv_set_interleave(mode);
    gpfq_conv_set_kernel(kernel);
}

static void check_kernels(void) {
    unsigned long long state = 42;
    /* in_c,in_h,in_w, out_c,oh,ow, kh,kw, sh,sw, ph,pw, dh,dw, groups */
    const gpfq_conv_geom cases[] = {
        {3, 9, 9, 4, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* padded 3x3 */
        {4, 7, 6, 6, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1},     /* 1x1 fast path */
        {4, 8, 8, 6, 0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 1},     /* 1x1 strided */
        {6, 11, 10, 6, 0, 0, 3, 5, 2, 1, 1, 2, 1, 1, 3},   /* groups, asymmetric */
        {4, 12, 12, 8, 0, 0, 3, 3, 1, 1, 2, 2, 2, 2, 4},   /* dilation, depthwise-ish */
        {16, 28, 28, 32, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* one image per GEMM */
        {64, 4, 4, 64, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* many images per GEMM */
        {5, 9, 7, 7, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* out_c not a multiple of 4 */
        {3, 6, 5, 5, 0, 0, 5, 5, 1, 1, 2, 2, 1, 1, 1},     /* 5x5 "same" */
        {3, 5, 9, 6, 0, 0, 3, 5, 1, 1, 1, 2, 1, 1, 1},     /* rectangular kernel */
        {2, 1, 1, 3, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* 1x1 image, all padding */
        {1, 1, 40, 2, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* one row */
        {3, 8, 8, 4, 0, 0, 3, 3, 1, 1, 0, 0, 1, 1, 1},     /* 3x3 unpadded */
        {6, 14, 14, 16, 0, 0, 5, 5, 1, 1, 0, 0, 1, 1, 1},  /* LeNet-5's conv2 */
        {3, 6, 6, 4, 0, 0, 3, 3, 1, 1, 2, 2, 1, 1, 1},     /* padding k - 1: output grows */
        {4, 7, 7, 5, 0, 0, 2, 2, 1, 1, 0, 1, 1, 1, 1},     /* even kernel, asymmetric padding */
        {3, 8, 9, 4, 0, 0, 3, 5, 1, 1, 0, 2, 1, 1, 1},     /* rectangular, padding in w only */
        {3, 8, 8, 4, 0, 0, 3, 3, 1, 1, 3, 3, 1, 1, 1},     /* padding k: not direct */
    };
    /* every kernel this CPU has; the direct ones must take the stride-1 "same" cases */
    const gpfq_conv_kernel kernels[] = {GPFQ_CONV_IM2COL, GPFQ_CONV_AVX2, GPFQ_CONV_AVX512};
    gpfq_conv_kernel initial = gpfq_conv_get_kernel();
    for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
        gpfq_conv_set_kernel(kernels[k]);
        if (gpfq_conv_get_kernel() != kernels[k]) {
            printf("test_ops: %s not supported by this CPU, skipped\n",
                   gpfq_conv_kernel_name(kernels[k]));
            continue;
        }
        const gpfq_conv_geom same = {3, 9, 9, 4, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1};
        const gpfq_conv_geom down = {3, 9, 9, 4, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1};
        CHECK(gpfq_conv_direct_fits(&same) == (kernels[k] != GPFQ_CONV_IM2COL) &&
                  gpfq_conv_direct_fits(&down) == (kernels[k] != GPFQ_CONV_IM2COL),
              "%s: direct kernel taken for padded 3x3 convs, stride 1 and 2: %d %d",
              gpfq_conv_kernel_name(kernels[k]), gpfq_conv_direct_fits(&same),
              gpfq_conv_direct_fits(&down));
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            check_conv_against_ref(cases[i], 1, &state);
            check_conv_against_ref(cases[i], 5, &state);
            check_conv_against_ref(cases[i], 70, &state);
        }
        /* several chunks of images shared by two threads (calls of 50+ MFLOP), a last chunk
         * cut short */
        const gpfq_conv_geom wide = {64, 28, 28, 8, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1};
        const gpfq_conv_geom wide2 = {64, 28, 28, 8, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1};
        int threads = openblas_get_num_threads();
        openblas_set_num_threads(2);
        check_conv_against_ref(wide, 7, &state);
        check_conv_against_ref(wide2, 28, &state);
        openblas_set_num_threads(threads);
    }
    gpfq_conv_set_kernel(initial);
    check_winograd(&state);
    check_interleaved(cases, sizeof cases / sizeof cases[0], &state);
    const size_t n = 37, in = 300, out = 23;
    float *x = malloc(n * in * 4), *w = malloc(out * in * 4), *b = malloc(out * 4);
    float *y = malloc(n * out * 4), *yr = malloc(n * out * 4);
    fill(x, n * in, &state);
    fill(w, out * in, &state);
    fill(b, out, &state);
    gpfq_linear(x, w, b, n, in, out, y);
    gpfq_linear_ref(x, w, b, n, in, out, yr);
    double max_abs;
    CHECK(check_excess(y, yr, n * out, REF_ATOL * in, REF_RTOL, &max_abs) <= 0,
          "linear: max abs error %.3g", max_abs);
    free(x), free(w), free(b), free(y), free(yr);
}

/* The tiled transpose against the plain double loop, on shapes that are and are not
 * multiples of its tile, with one element of each matrix checked for every position. */
static void check_transpose(void) {
    static const size_t shapes[][2] = {{1, 1},   {1, 37},    {37, 1},  {16, 16},
                                       {17, 33}, {256, 784}, {15, 48}, {100, 3}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const size_t rows = shapes[k][0], cols = shapes[k][1];
        int32_t *src = malloc(rows * cols * sizeof(int32_t));
        int32_t *dst = malloc(rows * cols * sizeof(int32_t));
        for (size_t i = 0; i < rows * cols; i++) src[i] = (int32_t)(i * 2654435761u);
        memset(dst, 0xff, rows * cols * sizeof(int32_t));
        gpfq_transpose32(src, rows, cols, dst);
        size_t wrong = 0;
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) wrong += dst[j * rows + i] != src[i * cols + j];
        CHECK(wrong == 0, "transpose %zu x %zu: %zu elements misplaced", rows, cols, wrong);
        /* strided: rows of lds >= cols into rows of ldd >= rows; the rest of dst untouched */
        const size_t lds = cols + 3, ldd = rows + 5;
        int32_t *s2 = malloc(rows * lds * sizeof(int32_t)), *d2 = malloc(cols * ldd * 4);
        for (size_t i = 0; i < rows * lds; i++) s2[i] = (int32_t)(i * 40503u + 7);
        memset(d2, 0xff, cols * ldd * sizeof(int32_t));
        gpfq_transpose32_strided(s2, lds, rows, cols, d2, ldd);
        wrong = 0;
        size_t touched = 0;
        for (size_t j = 0; j < cols; j++)
            for (size_t i = 0; i < ldd; i++)
                if (i < rows)
                    wrong += d2[j * ldd + i] != s2[i * lds + j];
                else
                    touched += d2[j * ldd + i] != -1;
        CHECK(wrong == 0 && touched == 0,
              "strided transpose %zu x %zu: %zu elements misplaced, %zu padding written", rows,
              cols, wrong, touched);
        free(src), free(dst), free(s2), free(d2);
    }
}

/* gpfq_sgemm on each kernel the CPU has, every transpose combination, against a double
 * loop: shapes below one block, at a block's edges (MR 12, NR 32, KC 256, MC 96, NC 1024) and
 * past them, with leading dimensions larger than a row, several alpha and beta; beta == 0 must
 * not read C, which is filled with NaN first. Tolerance: REF_ATOL * K + REF_RTOL * |ref|, the
 * conv tests' (gemm.c's kernel rounds at least as well as a float dot product). */
static void check_gemm(unsigned long long *state) {
    static const size_t shapes[][3] = {
        {1, 1, 1},     {12, 32, 1},   {13, 33, 17},    {11, 31, 255}, {12, 32, 256},  {25, 65, 257},
        {97, 70, 300}, {5, 1025, 40}, {256, 500, 784}, {200, 16, 9},  {128, 128, 64}, {3, 7, 600}};
    static const float ab[][2] = {{1.0f, 0.0f}, {-1.0f, 1.0f}, {0.5f, -2.0f}};
    const gpfq_gemm_kernel initial = gpfq_gemm_get_kernel();
    const gpfq_gemm_kernel kernels[] = {GPFQ_GEMM_OPENBLAS, GPFQ_GEMM_AVX512};
    int checked_avx512 = 0;
    for (size_t kk = 0; kk < 2; kk++) {
        gpfq_gemm_set_kernel(kernels[kk]);
        if (gpfq_gemm_get_kernel() != kernels[kk]) continue; /* the CPU lacks it */
        checked_avx512 |= kernels[kk] == GPFQ_GEMM_AVX512;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const size_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++) {
                    const size_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
                    float *A = malloc((ta ? K : M) * lda * 4), *B = malloc((tb ? N : K) * ldb * 4);
                    float *C = malloc(M * ldc * 4), *C0 = malloc(M * ldc * 4);
                    float *R = malloc(M * N * 4);
                    fill(A, (ta ? K : M) * lda, state);
                    fill(B, (tb ? N : K) * ldb, state);
                    fill(C0, M * ldc, state);
                    const size_t k = si % 3;
                    const float alpha = ab[k][0], beta = ab[k][1];
                    for (size_t i = 0; i < M; i++)
                        for (size_t j = 0; j < N; j++) {
                            double acc = 0.0;
                            for (size_t p = 0; p < K; p++)
                                acc += (double)(ta ? A[p * lda + i] : A[i * lda + p]) *
                                       (tb ? B[j * ldb + p] : B[p * ldb + j]);
                            R[i * N + j] =
                                (float)(alpha * acc + (beta != 0.0f ? beta * C0[i * ldc + j] : 0));
                        }
                    memcpy(C, C0, M * ldc * 4);
                    if (beta == 0.0f)
                        for (size_t i = 0; i < M * ldc; i++) C[i] = NAN;
                    gpfq_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                    double worst = 0.0, max_abs = 0.0;
                    size_t pad_changed = 0;
                    for (size_t i = 0; i < M; i++) {
                        double e = check_excess(C + i * ldc, R + i * N, N, REF_ATOL * (double)K,
                                                REF_RTOL, &max_abs);
                        if (!(e <= worst)) worst = e;
                        for (size_t j = N; j < ldc; j++)
                            pad_changed += beta != 0.0f
                                               ? memcmp(&C[i * ldc + j], &C0[i * ldc + j], 4) != 0
                                               : C[i * ldc + j] == C[i * ldc + j]; /* not NaN */
                    }
                    CHECK(worst <= 0 && pad_changed == 0,
                          "sgemm (%s) %zu x %zu x %zu trans %d%d alpha %g beta %g: excess %.3g, "
                          "%zu elements past N written",
                          gpfq_gemm_kernel_name(kernels[kk]), M, N, K, ta, tb, alpha, beta, worst,
                          pad_changed);
                    free(A), free(B), free(C), free(C0), free(R);
                }
        }
    }
    gpfq_gemm_set_kernel(initial);
    printf("test_ops: sgemm against the reference, %s\n",
           checked_avx512 ? "OpenBLAS and the AVX-512 kernel" : "OpenBLAS only (no AVX-512)");
}

/* The 2x2 stride-2 max pool (maxpool_2x2, its own loop) bit for bit against a plain loop with
 * PyTorch's rules (NaN wins; among equal values, -0 and +0, the first in row order), on odd and
 * even widths, with NaNs and signed zeros: it pins the rules down for any rewrite of the loop. */
static void check_maxpool_2x2(unsigned long long *state) {
    static const int widths[] = {2, 3, 15, 16, 17, 31, 32, 33, 34, 40, 65};
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        const int iw = widths[wi], ih = 6, c = 3;
        gpfq_conv_geom g = {c, ih, iw, c, ih / 2, iw / 2, 2, 2, 2, 2, 0, 0, 1, 1, 1};
        const size_t n = 2, in = n * c * ih * iw, out = n * c * g.out_h * g.out_w;
        float *x = malloc(in * 4), *y = malloc(out * 4), *r = malloc(out * 4);
        fill(x, in, state);
        for (size_t i = 0; i < in; i++) { /* some zeros of both signs, some NaNs */
            const unsigned pick = (unsigned)(check_rand(state) * 1000.0 + 1000.0) % 16;
            if (pick == 0) x[i] = 0.0f;
            if (pick == 1) x[i] = -0.0f;
            if (pick == 2 && i % 7 == 0) x[i] = NAN;
        }
        gpfq_maxpool2d(&g, x, n, y);
        for (size_t p = 0; p < n * c; p++)
            for (int oy = 0; oy < g.out_h; oy++)
                for (int ox = 0; ox < g.out_w; ox++) {
                    const float *w = x + p * ih * iw + 2 * oy * iw + 2 * ox;
                    const float v[4] = {w[0], w[1], w[iw], w[iw + 1]};
                    float best = v[0];
                    int nan = 0;
                    for (int k = 0; k < 4; k++) {
                        nan |= v[k] != v[k];
                        best = v[k] > best ? v[k] : best;
                    }
                    r[p * g.out_h * g.out_w + oy * g.out_w + ox] = nan ? NAN : best;
                }
        size_t wrong = 0;
        for (size_t i = 0; i < out; i++)
            wrong += !(memcmp(&y[i], &r[i], 4) == 0 || (y[i] != y[i] && r[i] != r[i]));
        CHECK(wrong == 0, "maxpool 2x2 on width %d: %zu outputs differ from the plain loop", iw,
              wrong);
        free(x), free(y), free(r);
    }
}

/* A conv that quadruples its values before a fused pool (1 -> 16 channels at 8x8, pooled to
 * 16 x 4 x 4 = 256 floats per image from 64), reading a buffer of the plan (a ReLU's output):
 * the pool's buffer must not be the conv's input, which a chunk's pooled outputs would
 * otherwise overwrite before the next chunk reads it. In memory: relu, conv, relu, maxpool,
 * flatten, linear. */
static gpfq_model *expanding_model(unsigned long long *state) {
    gpfq_model *m = calloc(1, sizeof *m);
    m->n_nodes = 6;
    m->nodes = calloc(6, sizeof(gpfq_node));
    m->input_shape = (gpfq_shape){1, 8, 8, 0};
    m->num_classes = 10;
    m->mean = malloc(sizeof(float)), m->std = malloc(sizeof(float));
    m->mean[0] = 0.0f, m->std[0] = 1.0f;
    m->source = strdup(""), m->dataset = strdup(""), m->recipe = strdup("");
    m->quantization = strdup("");
    m->float_top1 = m->float_top5 = NAN;
    static const char *names[] = {"relu0", "conv", "relu1", "pool", "flatten", "fc"};
    static const gpfq_op ops[] = {GPFQ_OP_RELU,      GPFQ_OP_CONV2D,  GPFQ_OP_RELU,
                                  GPFQ_OP_MAXPOOL2D, GPFQ_OP_FLATTEN, GPFQ_OP_LINEAR};
    for (int i = 0; i < 6; i++) {
        gpfq_node *node = &m->nodes[i];
        snprintf(node->name, sizeof node->name, "%s", names[i]);
        node->op = ops[i];
        node->n_inputs = 1;
        node->inputs[0] = i - 1; /* the first: GPFQ_GRAPH_INPUT */
        for (int a = 0; a < 2; a++) node->kernel[a] = node->stride[a] = node->dilation[a] = 1;
    }
    gpfq_node *conv = &m->nodes[1], *pool = &m->nodes[3], *fc = &m->nodes[5];
    conv->kernel[0] = conv->kernel[1] = 3;
    conv->padding[0] = conv->padding[1] = 1;
    conv->groups = 1;
    conv->weight_count = 16 * 9;
    conv->weight_rank = 4;
    conv->weight_dims[0] = 16, conv->weight_dims[1] = 1;
    conv->weight_dims[2] = conv->weight_dims[3] = 3;
    conv->weight = malloc(conv->weight_count * sizeof(float));
    conv->bias = malloc(16 * sizeof(float));
    fill(conv->weight, conv->weight_count, state);
    fill(conv->bias, 16, state);
    pool->kernel[0] = pool->kernel[1] = pool->stride[0] = pool->stride[1] = 2;
    fc->weight_count = 10 * 256;
    fc->weight_rank = 2;
    fc->weight_dims[0] = 10, fc->weight_dims[1] = 256;
    fc->weight = malloc(fc->weight_count * sizeof(float));
    fc->bias = malloc(10 * sizeof(float));
    fill(fc->weight, fc->weight_count, state);
    fill(fc->bias, 10, state);
    if (gpfq_model_validate(m, "expanding model") != GPFQ_OK) {
        CHECK(0, "%s", gpfq_last_error());
        gpfq_model_free(m);
        return NULL;
    }
    return m;
}

/* A fused 2x2 max pool writes its own buffer while its conv still reads the conv's input, so
 * the plan must not give the two the same buffer (LeNet's pool2 could have had conv2's
 * input). Against the naive pass bit for bit, on each interleave mode (the pool in the
 * interleaved kernel, or the conv into its own buffer and then the pool): LeNet's fixture in
 * one call of 320 images, so that conv2 runs on two threads (conv1 + ReLU + pool1 and conv2 +
 * ReLU + pool2 folded), and a conv that quadruples its values, whose pooled chunks would
 * overwrite later chunks' input even on one thread. */
static void check_fused_pool(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model_lenet_small.h5", dir);
    unsigned long long state = 11;
    gpfq_model *models[2] = {NULL, expanding_model(&state)};
    if (gpfq_model_load(path, &models[0]) != GPFQ_OK) CHECK(0, "%s: %s", path, gpfq_last_error());
    const int threads = openblas_get_num_threads();
    openblas_set_num_threads(2);
    const gpfq_interleave_mode mode = gpfq_conv_get_interleave();
    for (int mi = 0; mi < 2; mi++) {
        gpfq_model *m = models[mi];
        if (!m) continue;
        const char *what = mi ? "the expanding model" : path;
        const size_t n = mi ? 70 : 320, image = gpfq_shape_size(m->input_shape);
        const size_t count = n * (size_t)m->num_classes;
        float *input = malloc(n * image * sizeof(float));
        fill(input, n * image, &state);
        float *naive = naive_forward(m, input, n);
        const gpfq_interleave_mode modes[] = {GPFQ_INTERLEAVE_AUTO, GPFQ_INTERLEAVE_ALL,
                                              GPFQ_INTERLEAVE_OFF};
        for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
            gpfq_conv_set_interleave(modes[k]);
            gpfq_forward *fwd = NULL;
            const float *logits = NULL;
            CHECK(gpfq_forward_create(m, n, &fwd) == GPFQ_OK, "%s", gpfq_last_error());
            gpfq_forward_set_slice(fwd, n);
            CHECK(gpfq_forward_run(fwd, input, n, &logits) == GPFQ_OK, "%s", gpfq_last_error());
            CHECK(memcmp(naive, logits, count * sizeof(float)) == 0,
                  "%s, interleave %s, %zu images: planned and naive passes differ", what,
                  gpfq_interleave_mode_name(modes[k]), n);
            const int expect = mi ? 2 : 4;
            if (gpfq_conv_get_kernel() != GPFQ_CONV_IM2COL)
                CHECK(gpfq_forward_fused(fwd) == expect,
                      "%s: %d nodes folded into convs, expected %d", what, gpfq_forward_fused(fwd),
                      expect);
            gpfq_forward_free(fwd);
        }
        free(naive), free(input);
        gpfq_model_free(m);
    }
    gpfq_conv_set_interleave(mode);
    openblas_set_num_threads(threads);
}

/* gpfq_malloc's large buffers: plain heap memory by default, 2 MB-aligned (offered for huge
 * pages) once gpfq_heap_setup has read GPFQ_HUGEPAGES=1; either way writable and freed alike.
 * Runs last: it changes the process's malloc settings. */
static void check_huge_pages(void) {
    const size_t big = (size_t)5 << 20, huge = (size_t)2 << 20;
    CHECK(!gpfq_huge_pages(), "huge pages on before gpfq_heap_setup");
    setenv("GPFQ_HUGEPAGES", "1", 1);
    gpfq_heap_setup();
    CHECK(gpfq_huge_pages(), "GPFQ_HUGEPAGES=1 did not turn huge pages on");
    unsigned char *a = gpfq_malloc(big, "a test buffer"), *b = gpfq_malloc(1000, "a small one");
    CHECK(a && (uintptr_t)a % huge == 0, "a 5 MB buffer at %p, not on a 2 MB boundary", (void *)a);
    if (a) {
        memset(a, 7, big);
        CHECK(a[0] == 7 && a[big - 1] == 7, "a huge-page buffer does not keep what was written");
    }
    CHECK(b != NULL, "a small buffer failed with huge pages on");
    free(a), free(b);
}

/* A conv with a residual Add folded in, where the residual is the output buffer itself (the
 * forward pass lets an Add write over its other operand): bit for bit what the same kernel
 * gives with the residual in a buffer of its own, on every path (the flat direct kernel, the
 * interleaved one, which hands such a conv to the flat one, Winograd, AVX2, im2col). */
static void check_residual_alias(unsigned long long *state) {
    static const gpfq_conv_geom geoms[] = {
        {16, 12, 12, 16, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {32, 8, 8, 32, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {16, 9, 9, 24, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    };
    static const struct {
        gpfq_conv_kernel kernel;
        gpfq_winograd_mode wino;
        gpfq_interleave_mode il;
        const char *name;
    } paths[] = {
        {GPFQ_CONV_AVX512, GPFQ_WINOGRAD_OFF, GPFQ_INTERLEAVE_OFF, "flat AVX-512"},
        {GPFQ_CONV_AVX512, GPFQ_WINOGRAD_OFF, GPFQ_INTERLEAVE_ALL, "interleaved"},
        {GPFQ_CONV_AVX512, GPFQ_WINOGRAD_ALL, GPFQ_INTERLEAVE_OFF, "Winograd"},
        {GPFQ_CONV_AVX2, GPFQ_WINOGRAD_OFF, GPFQ_INTERLEAVE_OFF, "flat AVX2"},
        {GPFQ_CONV_IM2COL, GPFQ_WINOGRAD_OFF, GPFQ_INTERLEAVE_OFF, "im2col"},
    };
    const gpfq_conv_kernel kernel = gpfq_conv_get_kernel();
    const gpfq_winograd_mode wino = gpfq_conv_get_winograd();
    const gpfq_interleave_mode il = gpfq_conv_get_interleave();
    static const size_t counts[] = {19, 1}; /* 1: im2col's one-image GEMM */
    for (size_t ni = 0; ni < 2; ni++)
        for (size_t gi = 0; gi < sizeof geoms / sizeof geoms[0]; gi++)
            for (size_t pi = 0; pi < sizeof paths / sizeof paths[0]; pi++) {
                const size_t n = counts[ni];
                const gpfq_conv_geom *g = &geoms[gi];
                gpfq_conv_set_kernel(paths[pi].kernel);
                if (gpfq_conv_get_kernel() != paths[pi].kernel) continue; /* the CPU lacks it */
                gpfq_conv_set_winograd(paths[pi].wino);
                gpfq_conv_set_interleave(paths[pi].il);
                const size_t xs = n * g->in_c * g->in_h * g->in_w;
                const size_t ys = n * g->out_c * g->out_h * g->out_w;
                const size_t ws = (size_t)g->out_c * g->in_c * g->kernel_h * g->kernel_w;
                float *x = malloc(xs * 4), *w = malloc(ws * 4), *b = malloc(g->out_c * 12);
                float *r = malloc(ys * 4), *want = malloc(ys * 4), *got = malloc(ys * 4);
                float *scratch = malloc((gpfq_conv2d_scratch(g, n) + 1) * 4);
                fill(x, xs, state);
                fill(w, ws, state);
                fill(b, 3 * (size_t)g->out_c, state);
                fill(r, ys, state);
                gpfq_conv_epilogue e = {b + g->out_c, b + 2 * g->out_c, r, 1, 0, NULL};
                CHECK_OK(gpfq_conv2d_fused(g, x, w, NULL, b, &e, n, want, scratch));
                memcpy(got, r, ys * 4);
                e.residual = got;
                CHECK_OK(gpfq_conv2d_fused(g, x, w, NULL, b, &e, n, got, scratch));
                CHECK(memcmp(got, want, ys * 4) == 0,
                      "%s, conv %d->%d on %dx%d, stride %d, %zu images: the output over its own "
                      "residual differs from a separate one's",
                      paths[pi].name, g->in_c, g->out_c, g->in_h, g->in_w, g->stride_h, n);
                free(x), free(w), free(b), free(r), free(want), free(got), free(scratch);
            }
    gpfq_conv_set_kernel(kernel);
    gpfq_conv_set_winograd(wino);
    gpfq_conv_set_interleave(il);
}

/* gpfq_sgemm_tri against gpfq_sgemm on the same operands: a lower A (zero above its diagonal
 * + off) gives C's values (a zero's sign aside), a lower C its elements on and below the
 * diagonal bit for bit; shapes across the kernel's KC = 256 and MC = 96 steps, the offsets
 * pair_sgemm_tri passes to each half, both transpositions, beta 0 and 1. */
static void check_gemm_tri(unsigned long long *state) {
    static const size_t shapes[][3] = {
        {150, 70, 300}, {784, 64, 784}, {40, 200, 13}, {300, 300, 257}, {100, 1100, 300}};
    static const ptrdiff_t offs[] = {0, 13, -32, 96};
    const gpfq_gemm_kernel initial = gpfq_gemm_get_kernel();
    const gpfq_gemm_kernel kernels[] = {GPFQ_GEMM_OPENBLAS, GPFQ_GEMM_AVX512};
    for (size_t kk = 0; kk < 2; kk++) {
        gpfq_gemm_set_kernel(kernels[kk]);
        if (gpfq_gemm_get_kernel() != kernels[kk]) continue;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (size_t oi = 0; oi < sizeof offs / sizeof offs[0]; oi++)
                for (int t = 0; t < 2; t++) {
                    const size_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                    const ptrdiff_t off = offs[oi];
                    const float beta = t ? 1.0f : 0.0f;
                    const size_t lda = (t ? M : K) + 1, ldb = (t ? K : N) + 3, ldc = N + 2;
                    float *A = malloc((t ? K : M) * lda * 4), *B = malloc((t ? N : K) * ldb * 4);
                    float *C0 = malloc(M * ldc * 4), *C = malloc(M * ldc * 4);
                    float *F = malloc(M * ldc * 4);
                    fill(A, (t ? K : M) * lda, state);
                    fill(B, (t ? N : K) * ldb, state);
                    fill(C0, M * ldc, state);
                    /* full product, then the lower-C one over a copy of C0 */
                    memcpy(F, C0, M * ldc * 4);
                    gpfq_sgemm(t, t, M, N, K, 1.0f, A, lda, B, ldb, beta, F, ldc);
                    size_t wrong = 0;
                    if (off <= 0 || off < (ptrdiff_t)N) {
                        memcpy(C, C0, M * ldc * 4);
                        gpfq_sgemm_tri(GPFQ_TRI_LOWER_C, off, t, t, M, N, K, 1.0f, A, lda, B, ldb,
                                       beta, C, ldc);
                        /* below: gpfq_sgemm's bits; above: C0 or the full product's value;
                         * the padding past N: C0 */
                        size_t stray = 0;
                        for (size_t i = 0; i < M; i++)
                            for (size_t j = 0; j < ldc; j++) {
                                const float *c = &C[i * ldc + j];
                                if (j >= N)
                                    stray += memcmp(c, &C0[i * ldc + j], 4) != 0;
                                else if ((ptrdiff_t)j <= (ptrdiff_t)i + off)
                                    wrong += memcmp(c, &F[i * ldc + j], 4) != 0;
                                else
                                    stray += memcmp(c, &C0[i * ldc + j], 4) != 0 &&
                                             memcmp(c, &F[i * ldc + j], 4) != 0;
                            }
                        CHECK(wrong == 0 && stray == 0,
                              "%s lower C %zu x %zu x %zu, off %td, trans %d, beta %g: %zu of "
                              "the lower elements differ from gpfq_sgemm's, %zu others written "
                              "otherwise",
                              gpfq_gemm_kernel_name(kernels[kk]), M, N, K, off, t, beta, wrong,
                              stray);
                    }
                    if (off >= 0 && M <= K) {
                        /* op(A) zero above its diagonal + off, then both products */
                        for (size_t i = 0; i < M; i++)
                            for (size_t p = 0; p < K; p++)
                                if ((ptrdiff_t)p > (ptrdiff_t)i + off)
                                    A[t ? p * lda + i : i * lda + p] = 0.0f;
                        memcpy(F, C0, M * ldc * 4);
                        gpfq_sgemm(t, t, M, N, K, 1.0f, A, lda, B, ldb, beta, F, ldc);
                        memcpy(C, C0, M * ldc * 4);
                        gpfq_sgemm_tri(GPFQ_TRI_LOWER_A, off, t, t, M, N, K, 1.0f, A, lda, B, ldb,
                                       beta, C, ldc);
                        wrong = 0;
                        for (size_t i = 0; i < M; i++)
                            for (size_t j = 0; j < ldc; j++)
                                wrong += j < N ? !(C[i * ldc + j] == F[i * ldc + j])
                                               : memcmp(&C[i * ldc + j], &C0[i * ldc + j], 4) != 0;
                        CHECK(wrong == 0,
                              "%s lower A %zu x %zu x %zu, off %td, trans %d, beta %g: %zu "
                              "elements differ from gpfq_sgemm's",
                              gpfq_gemm_kernel_name(kernels[kk]), M, N, K, off, t, beta, wrong);
                    }
                    free(A), free(B), free(C0), free(C), free(F);
                }
    }
    gpfq_gemm_set_kernel(initial);
}

/* A thread's kept conv buffer: the same one again for a call of the same or a smaller size,
 * 64-byte aligned, a larger one for a larger call; a nested call gets one of its own. */
static void check_work_buffers(void) {
    float *a = gpfq_work_take(GPFQ_WORK_CONV, 1000);
    CHECK(a && (uintptr_t)a % 64 == 0, "a kept buffer, 64-byte aligned: %p", (void *)a);
    float *nested = gpfq_work_take(GPFQ_WORK_CONV, 100);
    CHECK(nested && nested != a, "a nested call: a buffer of its own");
    for (int i = 0; i < 250; i++) a[i] = (float)i, nested[i % 25] = -1.0f;
    gpfq_work_give(GPFQ_WORK_CONV, nested);
    gpfq_work_give(GPFQ_WORK_CONV, a);
    float *again = gpfq_work_take(GPFQ_WORK_CONV, 800);
    CHECK(again == a && again[249] == 249.0f, "a smaller call: the same buffer, its contents kept");
    gpfq_work_give(GPFQ_WORK_CONV, again);
    float *grown = gpfq_work_take(GPFQ_WORK_CONV, 1 << 20);
    CHECK(grown && (uintptr_t)grown % 64 == 0, "a larger call: a buffer of 1 MB");
    memset(grown, 0, 1 << 20);
    gpfq_work_give(GPFQ_WORK_CONV, grown);
    CHECK(gpfq_work_take(GPFQ_WORK_CONV, 4096) == grown, "after it, the grown buffer");
    gpfq_work_give(GPFQ_WORK_CONV, grown);
}

int main(int argc, char **argv) {
    check_work_buffers();
    check_transpose();
    unsigned long long pool_state = 5;
    check_maxpool_2x2(&pool_state);
    unsigned long long gemm_state = 7;
    check_gemm(&gemm_state);
    check_gemm_tri(&gemm_state);
    check_residual_alias(&gemm_state);
    const char *dir = argc > 1 ? argv[1] : "tests/fixtures";
    int fixtures = fixture_count(dir);
    check_fused_pool(dir);
    CHECK(fixtures >= 30, "expected at least 30 fixtures in %s, found %d", dir, fixtures);
    /* again with Winograd for every 3x3 stride-1 conv: against torch, and the folded epilogue
     * and the slices bit for bit against the plain passes */
    if (gpfq_conv_get_kernel() == GPFQ_CONV_AVX512) {
        gpfq_winograd_mode mode = gpfq_conv_set_winograd(GPFQ_WINOGRAD_ALL);
        const int tile = gpfq_conv_set_winograd_tile(0);
        for (int t = 4; t >= 2; t -= 2) {
            gpfq_conv_set_winograd_tile(t);
            printf("test_ops: the fixtures again, Winograd F(%dx%d, 3x3) for every 3x3 stride-1 "
                   "conv\n",
                   t, t);
            fixture_count(dir);
        }
        gpfq_conv_set_winograd_tile(tile);
        gpfq_conv_set_winograd(mode);
        /* and with the interleaved kernel for every conv it can run (its pool fused) */
        const gpfq_interleave_mode il = gpfq_conv_set_interleave(GPFQ_INTERLEAVE_ALL);
        printf("test_ops: the fixtures again, the interleaved kernel for every direct conv\n");
        fixture_count(dir);
        gpfq_conv_set_interleave(il);
    }
    check_kernels();
    check_huge_pages();
    return check_report("test_ops");
}
