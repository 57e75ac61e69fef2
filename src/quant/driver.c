/*
 * The network driver: quantizes every Linear and Conv2d in network order.
 *
 * Two node-by-node executors ("steppers") run the float and the partly
 * quantized network over the same calibration images; before layer j they hold
 * the layer's input in both networks (X and Y), and once layer j is quantized
 * both advance past it. In the shared calibration mode one pair of steppers
 * walks the whole network once; in the per-layer mode (the reference's) a fresh
 * batch is drawn and both networks are re-run for every layer.
 */
#include "gpfq/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpfq/eval.h"
#include "gpfq/forward.h"
#include "gpfq/ops.h"

#include "../core/clones.h"
#include "../core/helper.h"
#include "sample.h"
#include "unfold.h"

int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);

/* ---- random streams: every draw is a function of (seed, purpose, index) ---- */

enum { STREAM_IMAGES = 1, STREAM_PATCHES = 2, STREAM_ROUNDING = 3 };

static uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t x = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL + (a << 6) + (a >> 2));
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* ---- options ---- */

void gpfq_quant_options_default(gpfq_quant_options *o) {
    memset(o, 0, sizeof *o);
    o->method = GPFQ_METHOD_GPFQ;
    o->bits = 4;
    o->mlp_scalar = o->cnn_scalar = 1.16;
    o->mlp_percentile = o->cnn_percentile = 1.0;
    o->quantizer = GPFQ_QUANTIZER_NEAREST;
    o->calib_images = 256;
    o->calib_mode = GPFQ_CALIB_SHARED;
    o->retain_rate = 0.25;
    o->form = GPFQ_FORM_AUTO;
}

gpfq_status gpfq_quant_options_check(const gpfq_quant_options *o) {
    if (o->bits < 1 || o->bits > 16)
        return gpfq_fail(GPFQ_ERR_ARG, "bits must be from 1 to 16, got %d", o->bits);
    if (!(o->mlp_scalar > 0) || !(o->cnn_scalar > 0))
        return gpfq_fail(GPFQ_ERR_ARG, "the alphabet scalar must be > 0, got %g (mlp) / %g (cnn)",
                         o->mlp_scalar, o->cnn_scalar);
    if (!(o->mlp_percentile > 0 && o->mlp_percentile <= 1) ||
        !(o->cnn_percentile > 0 && o->cnn_percentile <= 1))
        return gpfq_fail(GPFQ_ERR_ARG, "the percentile must be in (0, 1], got %g (mlp) / %g (cnn)",
                         o->mlp_percentile, o->cnn_percentile);
    if (!(o->reg_lambda >= 0) || !isfinite(o->reg_lambda))
        return gpfq_fail(GPFQ_ERR_ARG, "lambda must be >= 0, got %g", o->reg_lambda);
    if (o->calib_images < 1)
        return gpfq_fail(GPFQ_ERR_ARG, "the calibration batch size must be at least 1");
    if (!(o->retain_rate > 0 && o->retain_rate <= 1))
        return gpfq_fail(GPFQ_ERR_ARG, "the retain rate must be in (0, 1], got %g", o->retain_rate);
    return GPFQ_OK;
}

int gpfq_node_is_quantizable(const gpfq_node *node) {
    return node->op == GPFQ_OP_LINEAR || node->op == GPFQ_OP_CONV2D;
}

double gpfq_model_sparsity(const gpfq_model *model) {
    size_t zeros = 0, total = 0;
    for (int i = 0; i < model->n_nodes; i++) {
        const gpfq_node *node = &model->nodes[i];
        if (!gpfq_node_is_quantizable(node)) continue;
        for (size_t k = 0; k < node->weight_count; k++) zeros += node->weight[k] == 0.0f;
        total += node->weight_count;
        if (node->bias) {
            for (int k = 0; k < node->out_shape.c; k++) zeros += node->bias[k] == 0.0f;
            total += (size_t)node->out_shape.c;
        }
    }
    return total ? (double)zeros / (double)total : 0.0;
}

/* ---- the node-by-node executor ---- */

/* Walks a model over one calibration batch, one layer at a time, on a planned
 * forward pass (gpfq/forward.h). The plan is made once and kept across batches:
 * per-layer calibration restarts it on a fresh batch for every layer, and fresh
 * buffers every time would cost page faults that outweigh the small GEMMs. */
typedef struct {
    gpfq_forward *fwd;
    const gpfq_model *model;
    const float *input; /* (n, C, H, W) */
    size_t n;
    int next; /* first node not yet computed */
    /* a Linear node whose ||W Xt||^2 (its output less its bias) norm2 becomes once it has run;
     * -1: none asked, or given */
    int norm_node;
    double norm2;
} stepper;

static void stepper_free(stepper *s) {
    gpfq_forward_free(s->fwd);
    memset(s, 0, sizeof *s);
}

/* Starts a pass on input (n images); plans on first use. */
static gpfq_status stepper_start(stepper *s, const gpfq_model *m, const float *input, size_t n) {
    if (!s->fwd) GPFQ_TRY(gpfq_forward_create(m, n, &s->fwd));
    s->model = m;
    s->input = input;
    s->n = n;
    s->next = 0;
    s->norm_node = -1;
    return GPFQ_OK;
}

static const float *stepper_value(const stepper *s, int node) {
    return node < 0 ? s->input : gpfq_forward_output(s->fwd, node);
}

/* sum over the n images of ||output - bias||^2: a Linear layer's ||W Xt||^2 */
static double linear_norm2(const gpfq_node *node, const float *out, size_t n) {
    const size_t N = (size_t)node->weight_dims[0];
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += gpfq_sum_squares(out + i * N, node->bias, N);
    return sum;
}

/* linear_norm2 as the sum of its two halves of the images, in the order linear_outputs adds
 * them: the float pass's norm and a sweep task's are then the same bits */
static double linear_norm2_halves(const gpfq_node *node, const float *out, size_t n) {
    const size_t N = (size_t)node->weight_dims[0];
    return linear_norm2(node, out, n / 2) + linear_norm2(node, out + n / 2 * N, n - n / 2);
}

/* Computes nodes next .. upto-1; on the way, norm_node's norm2 (its output before a ReLU over
 * it, which runs in place, reaches it). */
static gpfq_status stepper_advance(stepper *s, int upto) {
    if (upto <= s->next) return GPFQ_OK;
    if (s->norm_node >= s->next && s->norm_node < upto) {
        GPFQ_TRY(gpfq_forward_range(s->fwd, s->input, s->n, s->next, s->norm_node + 1));
        s->norm2 = linear_norm2_halves(&s->model->nodes[s->norm_node],
                                       gpfq_forward_output(s->fwd, s->norm_node), s->n);
        s->next = s->norm_node + 1;
        s->norm_node = -1;
        if (upto <= s->next) return GPFQ_OK;
    }
    GPFQ_TRY(gpfq_forward_range(s->fwd, s->input, s->n, s->next, upto));
    s->next = upto;
    return GPFQ_OK;
}

typedef struct {
    stepper *s;
    int upto;
    gpfq_status st;
    char message[1024]; /* gpfq_fail's message is per thread */
} advance_job;

static void advance_run(void *arg) {
    advance_job *a = arg;
    a->st = stepper_advance(a->s, a->upto);
    if (a->st != GPFQ_OK) snprintf(a->message, sizeof a->message, "%s", gpfq_last_error());
}

/* Advances the float stepper (when there is one) and the quantized one to node upto. The two
 * passes are independent and cost the same, so with two or more BLAS threads they run at once,
 * each on one thread with single-threaded kernels: no threads are started and joined per conv
 * or GEMM, and each pass's slices stay in its own core's cache. The values are the same either
 * way: no kernel's results depend on its thread count. */
static gpfq_status advance_both(stepper *fs, stepper *qs, int upto) {
    const int threads = openblas_get_num_threads();
    if (!fs->fwd || threads < 2 || fs->next >= upto || qs->next >= upto) {
        if (fs->fwd) GPFQ_TRY(stepper_advance(fs, upto));
        return stepper_advance(qs, upto);
    }
    /* the buffers from this thread's heap, where the layers' freed buffers lie */
    GPFQ_TRY(gpfq_forward_reserve(fs->fwd, fs->next, upto));
    GPFQ_TRY(gpfq_forward_reserve(qs->fwd, qs->next, upto));
    advance_job jobs[2] = {{.s = fs, .upto = upto}, {.s = qs, .upto = upto}};
    openblas_set_num_threads(1);
    gpfq_helper_pair(advance_run, &jobs[0], &jobs[1], 1);
    openblas_set_num_threads(threads);
    for (int k = 0; k < 2; k++)
        if (jobs[k].st != GPFQ_OK) return gpfq_fail(jobs[k].st, "%s", jobs[k].message);
    return GPFQ_OK;
}

/* ---- layer matrices ---- */

typedef struct {
    size_t groups;
    size_t rows_per_group; /* N / groups */
    size_t d;              /* inputs per neuron */
    size_t m;              /* calibration columns */
    const float *Xt, *Yt;  /* (groups, d, m), in the layer_store; with rows, X and Y (m, d) */
    int rows;              /* a Linear layer's inputs as the networks hold them, not copied */
} layer_data;

/* Xt and Yt of the current layer, kept from layer to layer: fresh buffers of
 * tens of MB per layer would cost as much in page faults as filling them. */
typedef struct {
    float *x, *y;
    size_t capacity; /* floats each */
} layer_store;

static void layer_store_free(layer_store *s) {
    free(s->x);
    free(s->y);
    memset(s, 0, sizeof *s);
}

static gpfq_status layer_store_reserve(layer_store *s, size_t floats) {
    if (floats <= s->capacity) return GPFQ_OK;
    layer_store_free(s);
    s->x = gpfq_malloc(floats * sizeof(float), "layer inputs X");
    s->y = gpfq_malloc(floats * sizeof(float), "layer inputs Y");
    if (!s->x || !s->y) {
        layer_store_free(s);
        return GPFQ_ERR_NOMEM;
    }
    s->capacity = floats;
    return GPFQ_OK;
}

/* Conv unfolding geometry: the layer's padding and dilation, its own stride or
 * (reference) a stride equal to the kernel. */
static gpfq_conv_geom unfold_geom(const gpfq_node *node, int stride_kernel) {
    gpfq_conv_geom g = {
        .in_c = node->in_shape.c,
        .in_h = node->in_shape.h,
        .in_w = node->in_shape.w,
        .out_c = node->out_shape.c,
        .kernel_h = node->kernel[0],
        .kernel_w = node->kernel[1],
        .stride_h = stride_kernel ? node->kernel[0] : node->stride[0],
        .stride_w = stride_kernel ? node->kernel[1] : node->stride[1],
        .pad_h = node->padding[0],
        .pad_w = node->padding[1],
        .dilation_h = node->dilation[0],
        .dilation_w = node->dilation[1],
        .groups = node->groups,
    };
    g.out_h = gpfq_window_out(g.in_h, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, 0);
    g.out_w = gpfq_window_out(g.in_w, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, 0);
    return g;
}

/* One side's unfolded patches, X from the float inputs or Y from the quantized ones, for images
 * [first, last): offset holds each image's `keep` patch corners in the padded plane */
typedef struct {
    const gpfq_conv_geom *g;
    const float *src;
    float *dst;
    const uint32_t *offset; /* (n, keep) */
    size_t first, last, keep, groups, d, m;
    gpfq_status st;
} unfold_job;

static void unfold_side(void *arg) {
    unfold_job *u = arg;
    const size_t image = (size_t)u->g->in_c * u->g->in_h * u->g->in_w;
    const int cg = u->g->in_c / (int)u->groups;
    float *pad = calloc(gpfq_unfold_padded_h(u->g) * gpfq_unfold_padded_w(u->g), sizeof(float));
    if (!pad) {
        u->st = GPFQ_ERR_NOMEM;
        return;
    }
    for (size_t i = u->first; i < u->last; i++)
        for (size_t grp = 0; grp < u->groups; grp++)
            gpfq_unfold_patches(u->g, u->src + i * image, (int)grp * cg, cg,
                                u->offset + i * u->keep, u->keep, pad,
                                u->dst + grp * u->d * u->m + i * u->keep, u->m);
    free(pad);
}

/* dst (cols x ldd) = the rows x cols src transposed, into dst's first rows columns */
typedef struct {
    const float *src;
    size_t rows, cols;
    float *dst;
    size_t ldd;
} transpose_job;

static void transpose_run(void *arg) {
    const transpose_job *t = arg;
    gpfq_transpose32_strided(t->src, t->cols, t->rows, t->cols, t->dst, t->ldd);
}

/* The patches of images [first, last): offset[i keep + j] is the corner of image i's patch j */
typedef struct {
    size_t patches, keep, first, last;
    int replacement;
    uint64_t key;
    const uint32_t *corner;
    uint32_t *offset;
    gpfq_status st;
} draw_job;

static void draw_patches(void *arg) {
    draw_job *d = arg;
    size_t *picked = malloc(d->keep * sizeof(size_t));
    size_t *pool = malloc(gpfq_sample_scratch(d->patches, d->keep) * sizeof(size_t));
    if (!picked || !pool) {
        free(picked), free(pool);
        d->st = GPFQ_ERR_NOMEM;
        return;
    }
    for (size_t i = d->first; i < d->last; i++) {
        gpfq_sample_indices(mix(d->key, i), d->patches, d->keep, d->replacement, picked, pool);
        for (size_t j = 0; j < d->keep; j++) d->offset[i * d->keep + j] = d->corner[picked[j]];
    }
    free(picked), free(pool);
}

/* A conv layer's patches: the unfolding geometry, the patches kept per image and, once drawn,
 * each image's `keep` patch corners in the padded plane (offset, (n, keep)). */
typedef struct {
    gpfq_conv_geom g;
    size_t keep, groups, d, m;
    uint32_t *offset;
} conv_patches;

static gpfq_status conv_patches_plan(const gpfq_node *node, size_t n, const gpfq_quant_options *o,
                                     conv_patches *p) {
    memset(p, 0, sizeof *p);
    p->g = unfold_geom(node, o->unfold_stride_kernel);
    const gpfq_conv_geom *g = &p->g;
    if (g->out_h < 1 || g->out_w < 1)
        return gpfq_fail(GPFQ_ERR_ARG, "layer '%s': the kernel does not fit its input", node->name);
    if (gpfq_unfold_padded_h(g) * gpfq_unfold_padded_w(g) > UINT32_MAX)
        return gpfq_fail(GPFQ_ERR_ARG, "layer '%s': an input plane of %d x %d is too large",
                         node->name, g->in_h, g->in_w);
    const size_t patches = (size_t)g->out_h * g->out_w;
    p->keep = (size_t)(o->retain_rate * (double)patches + 1.0);
    if (!o->with_replacement && p->keep > patches) p->keep = patches;
    p->groups = (size_t)g->groups;
    p->d = (size_t)(g->in_c / g->groups) * g->kernel_h * g->kernel_w;
    p->m = n * p->keep;
    return GPFQ_OK;
}

/* Draws p->offset (freed by the caller): each image's draw of `keep` patches, from its own
 * stream (the halves of the images are drawn on two threads). */
static gpfq_status conv_patches_draw(const gpfq_node *node, int layer, size_t n,
                                     const gpfq_quant_options *o, conv_patches *p) {
    const gpfq_conv_geom *g = &p->g;
    const size_t patches = (size_t)g->out_h * g->out_w;
    const size_t corners = n * p->keep > 0 ? n * p->keep : 1;
    uint32_t *corner = malloc(patches * sizeof(uint32_t));
    p->offset = malloc(corners * sizeof(uint32_t));
    draw_job draws[2] = {{.patches = patches,
                          .keep = p->keep,
                          .replacement = o->with_replacement,
                          .key = mix(mix(o->seed, STREAM_PATCHES), (uint64_t)layer),
                          .corner = corner,
                          .offset = p->offset,
                          .last = n / 2}};
    draws[1] = draws[0];
    draws[1].first = n / 2, draws[1].last = n;
    if (corner && p->offset) {
        for (size_t q = 0; q < patches; q++)
            corner[q] =
                (uint32_t)(q / (size_t)g->out_w * (size_t)g->stride_h * gpfq_unfold_padded_w(g) +
                           q % (size_t)g->out_w * (size_t)g->stride_w);
        gpfq_helper_pair(draw_patches, &draws[0], &draws[1], openblas_get_num_threads() > 1);
    }
    free(corner);
    if (!corner || !p->offset || draws[0].st != GPFQ_OK || draws[1].st != GPFQ_OK) {
        free(p->offset);
        p->offset = NULL;
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory drawing the patches of layer '%s'",
                         node->name);
    }
    return GPFQ_OK;
}

/* 1 where both networks hold the same inputs of a node (a first layer's images) */
static int same_inputs(const gpfq_node *node, const float *x, const float *y, size_t n) {
    return x == y || memcmp(x, y, n * gpfq_shape_size(node->in_shape) * sizeof(float)) == 0;
}

static gpfq_status build_layer_data(const gpfq_node *node, int layer, const float *x,
                                    const float *y, size_t n, const gpfq_quant_options *o,
                                    layer_store *store, layer_data *L) {
    memset(L, 0, sizeof *L);
    const size_t N = (size_t)node->weight_dims[0];
    /* Where both sides hold the same values (a first layer's images, also behind a Flatten or
     * a pool, which each network computes into a buffer of its own), X serves as Y: unfolded
     * once, and the forms take H from G. The comparison stops at the first difference, which
     * after a quantized layer comes within the first values. */
    if (same_inputs(node, x, y, n)) y = x;
    if (node->op == GPFQ_OP_LINEAR) {
        L->groups = 1;
        L->rows_per_group = N;
        L->d = (size_t)node->weight_dims[1];
        L->m = n;
        /* ublock on GEMMs reads them where they are: no transposed copies to touch */
        if (gpfq_layer_reads_rows(N, L->d, n, o->form, o->block)) {
            L->rows = 1;
            L->Xt = x;
            L->Yt = y;
            return GPFQ_OK;
        }
        GPFQ_TRY(layer_store_reserve(store, L->d * n));
        L->Xt = store->x;
        L->Yt = y == x ? store->x : store->y;
        /* X and Y on the two threads, or X's two halves of the images where X is Y */
        const size_t half = L->Yt == L->Xt ? n / 2 : n;
        transpose_job t[2] = {{x, half, L->d, store->x, n}, {y, n, L->d, store->y, n}};
        if (L->Yt == L->Xt)
            t[1] = (transpose_job){x + half * L->d, n - half, L->d, store->x + half, n};
        gpfq_helper_pair(transpose_run, &t[0], &t[1], openblas_get_num_threads() > 1);
        return GPFQ_OK;
    }
    conv_patches p;
    GPFQ_TRY(conv_patches_plan(node, n, o, &p));
    L->groups = p.groups;
    L->rows_per_group = N / L->groups;
    L->d = p.d;
    L->m = p.m;
    GPFQ_TRY(layer_store_reserve(store, L->groups * L->d * L->m));
    L->Xt = store->x;
    L->Yt = y == x ? store->x : store->y;
    GPFQ_TRY(conv_patches_draw(node, layer, n, o, &p));
    /* X and Y are the same work on different inputs; with two or more threads they are
     * unfolded at once (the copy is bound by its scattered stores, not by arithmetic). Where
     * both sides read the same values (a first layer's images), X is Y, and the two threads
     * unfold half of the images each. */
    unfold_job jobs[2];
    for (int side = 0; side < 2; side++)
        jobs[side] = (unfold_job){&p.g,
                                  side ? y : x,
                                  side && L->Yt != L->Xt ? store->y : store->x,
                                  p.offset,
                                  0,
                                  n,
                                  p.keep,
                                  L->groups,
                                  L->d,
                                  L->m,
                                  GPFQ_OK};
    if (L->Yt == L->Xt) jobs[0].last = jobs[1].first = n / 2;
    gpfq_helper_pair(unfold_side, &jobs[0], &jobs[1], openblas_get_num_threads() > 1);
    free(p.offset);
    if (jobs[0].st != GPFQ_OK || jobs[1].st != GPFQ_OK)
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory unfolding the patches of layer '%s'",
                         node->name);
    return GPFQ_OK;
}

/* ---- a conv layer whose inputs are the same in both networks, from its Gram matrix ---- */

/* patches (columns) per product of gram_side: 200 kB of lenet5's conv1, in the L2 cache */
#define GRAM_CHUNK_COLUMNS 2048

/* The Gram matrix of the patches of images [first, last) into G's lower triangle (G zeroed by
 * the caller), a chunk of images at a time, and each input's sum over them into sums (d). */
typedef struct {
    const conv_patches *p;
    const float *src;
    size_t first, last;
    float *G;
    double *sums;
    gpfq_status st;
} gram_job;

static void gram_side(void *arg) {
    gram_job *j = arg;
    const conv_patches *p = j->p;
    const size_t image = (size_t)p->g.in_c * p->g.in_h * p->g.in_w;
    const size_t per = p->keep < GRAM_CHUNK_COLUMNS ? GRAM_CHUNK_COLUMNS / p->keep : 1;
    const size_t cols = per * p->keep;
    float *buf = malloc(p->d * cols * sizeof(float));
    float *pad = calloc(gpfq_unfold_padded_h(&p->g) * gpfq_unfold_padded_w(&p->g), sizeof(float));
    if (!buf || !pad) {
        free(buf), free(pad);
        j->st = GPFQ_ERR_NOMEM;
        return;
    }
    for (size_t i0 = j->first; i0 < j->last; i0 += per) {
        const size_t k = j->last - i0 < per ? j->last - i0 : per, kc = k * p->keep;
        for (size_t i = i0; i < i0 + k; i++)
            gpfq_unfold_patches(&p->g, j->src + i * image, 0, p->g.in_c, p->offset + i * p->keep,
                                p->keep, pad, buf + (i - i0) * p->keep, cols);
        gpfq_sgemm_tri(GPFQ_TRI_LOWER_C, 0, 0, 1, p->d, p->d, kc, 1.0f, buf, cols, buf, cols, 1.0f,
                       j->G, p->d);
        if (j->sums)
            for (size_t t = 0; t < p->d; t++)
                for (size_t c = 0; c < kc; c++) j->sums[t] += buf[t * cols + c];
    }
    free(buf), free(pad);
}

/* G = Xt Xt^T of an ungrouped conv's patches, never all held: each half of the images summed
 * on its own (on two threads where the GEMMs run on gpfq's kernel, which has no threads of its
 * own), then the halves added, so G does not depend on the thread count. With means (d),
 * also each input's mean over the m patches. */
static gpfq_status patches_gram(const gpfq_node *node, int layer, const float *x, size_t n,
                                const gpfq_quant_options *o, conv_patches *p, float *G,
                                double *means) {
    GPFQ_TRY(conv_patches_draw(node, layer, n, o, p));
    const size_t d = p->d;
    float *G1 = calloc(d * d, sizeof(float));
    double *sums = means ? calloc(2 * d, sizeof(double)) : NULL;
    if (!G1 || (means && !sums)) {
        free(G1), free(sums), free(p->offset);
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the Gram matrix of layer '%s'",
                         node->name);
    }
    memset(G, 0, d * d * sizeof(float));
    gram_job jobs[2] = {{p, x, 0, n / 2, G, sums, GPFQ_OK},
                        {p, x, n / 2, n, G1, sums ? sums + d : NULL, GPFQ_OK}};
    gpfq_helper_pair(gram_side, &jobs[0], &jobs[1],
                     openblas_get_num_threads() > 1 && gpfq_gemm_get_kernel() == GPFQ_GEMM_AVX512);
    free(p->offset);
    p->offset = NULL;
    gpfq_status st = jobs[0].st != GPFQ_OK ? jobs[0].st : jobs[1].st;
    if (st == GPFQ_OK) {
        for (size_t t = 0; t < d; t++)
            for (size_t s = 0; s <= t; s++) G[t * d + s] += G1[t * d + s];
        for (size_t t = 0; means && t < d; t++) means[t] = (sums[t] + sums[d + t]) / (double)p->m;
    }
    free(G1), free(sums);
    if (st != GPFQ_OK)
        return gpfq_fail(st, "out of memory unfolding the patches of layer '%s'", node->name);
    return GPFQ_OK;
}

/* bias[r] += sum_t weight[r, t] mx[t] - quantized[r, t] my[t] for rows r of [row0, row0 + rows) */
static void shift_bias(float *bias, const float *weight, const float *quantized, size_t row0,
                       size_t rows, size_t d, const double *mx, const double *my) {
    for (size_t row = row0; row < row0 + rows; row++) {
        double shift = 0;
        for (size_t t = 0; t < d; t++)
            shift += weight[row * d + t] * mx[t] - quantized[row * d + t] * my[t];
        bias[row] += (float)shift;
    }
}

/* A bias of N zeros for a quantized node that has none, for the bias correction to shift */
static gpfq_status own_bias(gpfq_node *qnode, size_t N) {
    if (!qnode->bias && !(qnode->bias = gpfq_calloc(N, sizeof(float), "a bias")))
        return GPFQ_ERR_NOMEM;
    return GPFQ_OK;
}

/* bias += mean over columns of (W Xt - Q Yt), per neuron of each group */
static gpfq_status correct_bias(gpfq_node *qnode, const float *weight, const layer_data *L) {
    const size_t N = L->groups * L->rows_per_group;
    GPFQ_TRY(own_bias(qnode, N));
    double *mx = calloc(L->d, sizeof(double)), *my = calloc(L->d, sizeof(double));
    if (!mx || !my) {
        free(mx), free(my);
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for bias correction");
    }
    for (size_t grp = 0; grp < L->groups; grp++) {
        const float *xt = L->Xt + grp * L->d * L->m, *yt = L->Yt + grp * L->d * L->m;
        /* each input's sum over the columns in column order, either layout */
        memset(mx, 0, L->d * sizeof(double));
        memset(my, 0, L->d * sizeof(double));
        if (L->rows)
            for (size_t k = 0; k < L->m; k++)
                for (size_t t = 0; t < L->d; t++)
                    mx[t] += xt[k * L->d + t], my[t] += yt[k * L->d + t];
        else
            for (size_t t = 0; t < L->d; t++)
                for (size_t k = 0; k < L->m; k++)
                    mx[t] += xt[t * L->m + k], my[t] += yt[t * L->m + k];
        for (size_t t = 0; t < L->d; t++) {
            mx[t] /= (double)L->m;
            my[t] /= (double)L->m;
        }
        shift_bias(qnode->bias, weight, qnode->weight, grp * L->rows_per_group, L->rows_per_group,
                   L->d, mx, my);
    }
    free(mx), free(my);
    return GPFQ_OK;
}

/* ---- BatchNorm folding ---- */

static int count_readers(const gpfq_model *m, int node) {
    int readers = 0;
    for (int i = 0; i < m->n_nodes; i++)
        for (int k = 0; k < m->nodes[i].n_inputs; k++) readers += m->nodes[i].inputs[k] == node;
    return readers;
}

/* 1 where node i is a BatchNorm whose input is a conv read by nothing else */
static int foldable(const gpfq_model *m, int i) {
    const gpfq_node *bn = &m->nodes[i];
    const int src = bn->inputs[0];
    return bn->op == GPFQ_OP_BATCHNORM2D && src >= 0 && m->nodes[src].op == GPFQ_OP_CONV2D &&
           count_readers(m, src) == 1;
}

/* Folds every foldable BatchNorm into its conv; the BatchNorm becomes an identity. */
static gpfq_status fold_batchnorm(gpfq_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        if (!foldable(m, i)) continue;
        gpfq_node *bn = &m->nodes[i];
        gpfq_node *conv = &m->nodes[bn->inputs[0]];
        const int channels = conv->out_shape.c;
        const size_t per = conv->weight_count / (size_t)channels;
        if (!conv->bias && !(conv->bias = gpfq_calloc((size_t)channels, sizeof(float), "a bias")))
            return GPFQ_ERR_NOMEM;
        for (int c = 0; c < channels; c++) {
            float alpha = bn->weight[c] / sqrtf(bn->running_var[c] + bn->eps);
            for (size_t k = 0; k < per; k++) conv->weight[(size_t)c * per + k] *= alpha;
            conv->bias[c] = bn->bias[c] + (conv->bias[c] - bn->running_mean[c]) * alpha;
        }
        free(bn->weight), free(bn->bias), free(bn->running_mean), free(bn->running_var);
        bn->weight = bn->bias = bn->running_mean = bn->running_var = NULL;
        bn->weight_count = 0;
        bn->weight_rank = 0;
        bn->op = GPFQ_OP_IDENTITY;
    }
    return GPFQ_OK;
}

/* The float model the driver runs: *out is model itself, or where fold asks and there is a
 * BatchNorm to fold, *owned, a clone with them folded (a clone of a model without any would be
 * a copy of all its weights to make and first-touch: mlp's 2.2 MB). */
static gpfq_status float_model(const gpfq_model *model, int fold, const gpfq_model **out,
                               gpfq_model **owned) {
    *out = model;
    *owned = NULL;
    int any = 0;
    for (int i = 0; fold && !any && i < model->n_nodes; i++) any = foldable(model, i);
    if (!any) return GPFQ_OK;
    GPFQ_TRY(gpfq_model_clone(model, owned));
    const gpfq_status st = fold_batchnorm(*owned);
    if (st != GPFQ_OK) {
        gpfq_model_free(*owned);
        *owned = NULL;
        return st;
    }
    *out = *owned;
    return GPFQ_OK;
}

/* ---- the driver ---- */

static int is_ignored(const gpfq_quant_options *o, const char *name) {
    for (int i = 0; i < o->n_ignore; i++)
        if (strcmp(o->ignore[i], name) == 0) return 1;
    return 0;
}

void gpfq_quant_result_free(gpfq_quant_result *r) {
    if (r->codes && r->model)
        for (int i = 0; i < r->model->n_nodes; i++) free(r->codes[i]);
    free(r->codes);
    free(r->layers);
    gpfq_model_free(r->model);
    memset(r, 0, sizeof *r);
}

uint64_t gpfq_codes_hash(const gpfq_quant_result *r) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over every code and step */
    for (int i = 0; i < r->model->n_nodes; i++) {
        const gpfq_node *node = &r->model->nodes[i];
        if (!r->codes[i]) continue;
        const unsigned char *bytes = (const unsigned char *)r->codes[i];
        for (size_t k = 0; k < node->weight_count * sizeof(int32_t); k++)
            h = (h ^ bytes[k]) * 1099511628211ULL;
        const unsigned char *step = (const unsigned char *)&node->weight_step;
        for (size_t k = 0; k < sizeof(float); k++) h = (h ^ step[k]) * 1099511628211ULL;
    }
    return h;
}

typedef struct {
    const gpfq_model *fmodel; /* float (BatchNorm folded when asked) */
    gpfq_model *qmodel;       /* being quantized */
    const gpfq_dataset *train;
    const gpfq_quant_options *o;
    gpfq_float_input_fn source; /* cached float inputs, or NULL */
    void *source_ctx;
    size_t n;        /* calibration images per batch */
    size_t *indices; /* (n) */
    size_t *pool;    /* (gpfq_sample_scratch(train->n, n)) */
    float *images;   /* (n, C, H, W) */
    layer_store store;
    float *residual; /* a Linear layer's W Xt - Q Yt (N x n), kept from layer to layer */
    size_t residual_floats;
    double pass_seconds; /* image draws and forward passes to the layers' inputs */
} driver;

/* the draw's indices, its sampling scratch and its n images (freed by the caller) */
static gpfq_status draw_buffers(driver *dr) {
    dr->indices = malloc(dr->n * sizeof(size_t));
    dr->pool = malloc(gpfq_sample_scratch(dr->train->n, dr->n) * sizeof(size_t));
    dr->images = malloc(dr->n * gpfq_shape_size(dr->fmodel->input_shape) * sizeof(float));
    if (!dr->indices || !dr->pool || !dr->images)
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for %zu calibration images", dr->n);
    return GPFQ_OK;
}

/* images [first, first + count) of the driver's draw */
typedef struct {
    const driver *dr;
    size_t first, count;
} batch_job;

static void batch_run(void *arg) {
    const batch_job *b = arg;
    const driver *dr = b->dr;
    gpfq_dataset_batch(dr->train, dr->fmodel->mean, dr->fmodel->std, 0, dr->indices + b->first,
                       b->count, dr->images + b->first * gpfq_shape_size(dr->fmodel->input_shape));
}

/* the draw, then its images read and normalised on both threads, half each */
static void draw_images(driver *dr, uint64_t stream) {
    gpfq_sample_indices(mix(mix(dr->o->calib_seed, STREAM_IMAGES), stream), dr->train->n, dr->n, 0,
                        dr->indices, dr->pool);
    batch_job halves[2] = {{dr, 0, dr->n / 2}, {dr, dr->n / 2, dr->n - dr->n / 2}};
    gpfq_helper_pair(batch_run, &halves[0], &halves[1], openblas_get_num_threads() > 1);
}

/* The zero codes among n, and in *nonfinite whether any of the n values is Inf or NaN (an
 * exponent of all ones): one pass, on the bit patterns, vectorised per CPU. */
GPFQ_CLONES static size_t count_zeros(const int32_t *codes, const float *values, size_t n,
                                      uint32_t *nonfinite) {
    size_t zeros = 0;
    uint32_t bad = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t bits;
        memcpy(&bits, values + k, sizeof bits);
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
        zeros += codes[k] == 0;
    }
    *nonfinite = bad;
    return zeros;
}

/* 1 where an ungrouped conv with X = Y is quantized from its patches' Gram matrix alone, with
 * the patches' plan in *p */
static int gram_only(const gpfq_node *node, size_t n, const gpfq_quant_options *o,
                     conv_patches *p) {
    return node->op == GPFQ_OP_CONV2D && node->groups == 1 &&
           conv_patches_plan(node, n, o, p) == GPFQ_OK &&
           gpfq_layer_gram_only((size_t)node->weight_dims[0], p->d, p->m, o->form, o->block);
}

/* GPFQ of a conv whose networks read the same inputs x, from the Gram matrix of its patches
 * (planned in p; gpfq_gpfq_layer_gram), with the bias correction from the patches' means */
static gpfq_status quantize_from_gram(driver *dr, const gpfq_node *fnode, gpfq_node *qnode,
                                      int layer, const float *x, conv_patches p,
                                      const gpfq_alphabet *a, int32_t *codes,
                                      gpfq_layer_report *rep) {
    const gpfq_quant_options *o = dr->o;
    const size_t N = (size_t)fnode->weight_dims[0];
    float *G = gpfq_malloc(p.d * p.d * sizeof(float), "the Gram matrix G");
    double *means = o->bias_correction ? malloc(p.d * sizeof(double)) : NULL;
    if (!G || (o->bias_correction && !means)) {
        free(G), free(means);
        return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the Gram matrix of layer '%s'",
                         fnode->name);
    }
    gpfq_layer_stats stats;
    gpfq_status st = patches_gram(fnode, layer, x, dr->n, o, &p, G, means);
    if (st == GPFQ_OK)
        st = gpfq_gpfq_layer_gram(fnode->weight, N, p.d, G, p.m, a, o->block, codes, qnode->weight,
                                  &stats);
    if (st == GPFQ_OK && o->bias_correction) st = own_bias(qnode, N);
    if (st == GPFQ_OK && o->bias_correction)
        shift_bias(qnode->bias, fnode->weight, qnode->weight, 0, N, p.d, means, means);
    free(G), free(means);
    GPFQ_TRY(st);
    rep->samples = p.m;
    rep->error = stats.error;
    rep->relative_error = stats.relative_error;
    return GPFQ_OK;
}

/* A group's squared error and squared reference norm (from its relative error) into the layer's
 * sums, and the layer's error and relative error from them: the report is the same number
 * whichever path quantized the layer. */
static void add_group(const gpfq_layer_stats *s, double *err2, double *ref2) {
    *err2 += s->error * s->error;
    const double ref = isnan(s->relative_error) ? NAN
                       : s->relative_error > 0  ? s->error / s->relative_error
                                                : 0;
    *ref2 += ref * ref;
}

static void report_errors(gpfq_layer_report *rep, double err2, double ref2) {
    rep->error = sqrt(err2);
    rep->relative_error = isnan(ref2) ? NAN : ref2 > 0 ? sqrt(err2 / ref2) : 0.0;
}

/* ---- a conv layer from its patches gathered as the GPFQ passes go ---- */

/* 1 where the patches of p are gathered, not unfolded: ungrouped, without padding, planes under
 * 32768 and inputs under 2^31 floats (the indices gpfq_patches holds). A gather reads each tap
 * on its own, where the unfolding copies a plane into a zero-bordered one and loads a kernel
 * row's taps at once: on resnet20's padded 3x3 convs the gathers were 15% of the quantize's
 * samples against the unfolding's 3.7%, and its quantize 7% slower (docs/performance-notes.md). */
static int patches_fit(const conv_patches *p, size_t n) {
    const gpfq_conv_geom *g = &p->g;
    return p->groups == 1 && g->pad_h == 0 && g->pad_w == 0 && g->in_h < 32768 && g->in_w < 32768 &&
           n * (size_t)g->in_c * g->in_h * g->in_w < (size_t)INT32_MAX;
}

/* The patches of p (drawn) as gpfq_gpfq_layer_patches reads them: each column's first tap and
 * corner, each row's tap */
static void describe_patches(const conv_patches *p, const float *x, const float *y, int32_t *base,
                             int32_t *corner, int32_t *off, int32_t *tap, gpfq_patches *P) {
    const gpfq_conv_geom *g = &p->g;
    const size_t pw = gpfq_unfold_padded_w(g), plane = (size_t)g->in_h * g->in_w;
    for (size_t k = 0; k < p->m; k++) {
        const size_t image = k / p->keep;
        const int y0 = (int)(p->offset[k] / pw) - g->pad_h,
                  x0 = (int)(p->offset[k] % pw) - g->pad_w;
        base[k] = (int32_t)((int64_t)image * g->in_c * (int64_t)plane + (int64_t)y0 * g->in_w + x0);
        corner[k] = (int32_t)((uint32_t)y0 << 16 | ((uint32_t)x0 & 0xffffu));
    }
    size_t t = 0;
    for (int c = 0; c < g->in_c; c++)
        for (int ky = 0; ky < g->kernel_h; ky++)
            for (int kx = 0; kx < g->kernel_w; kx++, t++) {
                const int dy = ky * g->dilation_h, dx = kx * g->dilation_w;
                off[t] = (int32_t)((size_t)c * plane + (size_t)dy * g->in_w + (size_t)dx);
                tap[t] = (int32_t)((uint32_t)dy << 16 | (uint32_t)dx);
            }
    *P = (gpfq_patches){x, y, base, corner, off, tap, g->in_h, g->in_w, !g->pad_h && !g->pad_w};
}

/* mean[t] = row t of the patches of one side over their m columns, summed in column order (as
 * correct_bias sums the unfolded rows) */
static void patch_means(const gpfq_patches *P, const float *side, size_t d, size_t m,
                        double *mean) {
    for (size_t t = 0; t < d; t++) {
        const int dy = P->tap[t] >> 16, dx = (int16_t)(P->tap[t] & 0xffff);
        double sum = 0.0;
        for (size_t k = 0; k < m; k++) {
            const int yy = (P->corner[k] >> 16) + dy, xx = (int16_t)(P->corner[k] & 0xffff) + dx;
            sum +=
                yy >= 0 && yy < P->h && xx >= 0 && xx < P->w ? side[P->base[k] + P->off[t]] : 0.0f;
        }
        mean[t] = sum / (double)m;
    }
}

/* 1 where an ungrouped conv runs ublock on gpfq's own kernels on its patches gathered as the
 * passes go, with the patches' plan in *p */
static int gathers(const gpfq_node *node, size_t n, const gpfq_quant_options *o, conv_patches *p) {
    return node->op == GPFQ_OP_CONV2D && node->groups == 1 &&
           conv_patches_plan(node, n, o, p) == GPFQ_OK && patches_fit(p, n) &&
           gpfq_layer_gathers((size_t)node->weight_dims[0], p->d, p->m, o->form, o->block);
}

/* GPFQ of an ungrouped conv whose form is ublock on gpfq's own kernels, on its patches gathered
 * a block of rows at a time (planned in p; gpfq_gpfq_layer_patches) */
static gpfq_status quantize_gathered(driver *dr, const gpfq_node *fnode, gpfq_node *qnode,
                                     int layer, const float *x, const float *y, conv_patches p,
                                     const gpfq_alphabet *a, int32_t *codes,
                                     gpfq_layer_report *rep) {
    const gpfq_quant_options *o = dr->o;
    const size_t N = (size_t)fnode->weight_dims[0];
    if (same_inputs(fnode, x, y, dr->n)) y = x;
    GPFQ_TRY(conv_patches_draw(fnode, layer, dr->n, o, &p));
    int32_t *cols = gpfq_malloc(2 * p.m * sizeof(int32_t), "the patches' corners");
    int32_t *rows = gpfq_malloc(2 * p.d * sizeof(int32_t), "the patches' taps");
    double *means =
        o->bias_correction ? gpfq_malloc(2 * p.d * sizeof(double), "the patches' means") : NULL;
    gpfq_status st = cols && rows && (means || !o->bias_correction) ? GPFQ_OK : GPFQ_ERR_NOMEM;
    gpfq_patches P;
    gpfq_layer_stats stats;
    if (st == GPFQ_OK) describe_patches(&p, x, y, cols, cols + p.m, rows, rows + p.d, &P);
    free(p.offset);
    if (st == GPFQ_OK)
        st = gpfq_gpfq_layer_patches(fnode->weight, N, p.d, &P, p.m, a, o->form, o->block, codes,
                                     qnode->weight, &stats);
    if (st == GPFQ_OK && o->bias_correction) st = own_bias(qnode, N);
    if (st == GPFQ_OK && o->bias_correction) {
        patch_means(&P, x, p.d, p.m, means);
        patch_means(&P, y, p.d, p.m, means + p.d);
        shift_bias(qnode->bias, fnode->weight, qnode->weight, 0, N, p.d, means, means + p.d);
    }
    free(cols), free(rows), free(means);
    if (st != GPFQ_OK)
        return gpfq_fail_context(st, "layer '%s', its gathered patches: ", fnode->name);
    rep->samples = p.m;
    double err2 = 0, ref2 = 0;
    add_group(&stats, &err2, &ref2);
    report_errors(rep, err2, ref2);
    return GPFQ_OK;
}

/* With norm_later, a Linear layer's ||W Xt|| is left to the caller where it would cost a
 * product (rep->relative_error NaN until then), and its residual W Xt - Q Yt goes to
 * dr->residual where the form holds it (*residual 1). */
static gpfq_status quantize_node(driver *dr, int j, int layer, const float *x, const float *y,
                                 int norm_later, gpfq_quant_result *res, gpfq_layer_report *rep,
                                 int *residual) {
    const gpfq_quant_options *o = dr->o;
    const gpfq_node *fnode = &dr->fmodel->nodes[j];
    gpfq_node *qnode = &dr->qmodel->nodes[j];
    const int linear = fnode->op == GPFQ_OP_LINEAR;
    const size_t N = (size_t)fnode->weight_dims[0];
    const size_t d_all = fnode->weight_count / N;
    gpfq_alphabet a;
    gpfq_status made =
        gpfq_alphabet_make(fnode->weight, N, d_all, o->bits, linear ? o->mlp_scalar : o->cnn_scalar,
                           linear ? o->mlp_percentile : o->cnn_percentile, o->quantizer,
                           o->reg_lambda, mix(mix(o->seed, STREAM_ROUNDING), (uint64_t)layer), &a);
    if (made != GPFQ_OK) return gpfq_fail_context(made, "layer '%s': ", fnode->name);
    int32_t *codes = gpfq_malloc(fnode->weight_count * sizeof(int32_t), "codes");
    if (!codes) return GPFQ_ERR_NOMEM;
    res->codes[j] = codes;
    rep->delta = a.delta;
    rep->rows = N;
    rep->cols = d_all;
    *residual = 0;
    const int no_norm = norm_later && linear && o->method == GPFQ_METHOD_GPFQ;
    conv_patches patches; /* a conv quantized from G alone: its patches' plan */
    const double start = gpfq_now();
    if (o->method == GPFQ_METHOD_MSQ) {
        gpfq_msq_layer(fnode->weight, N, d_all, &a, codes);
        for (size_t k = 0; k < fnode->weight_count; k++)
            qnode->weight[k] = gpfq_code_value(&a, codes[k]);
        rep->error = rep->relative_error = NAN;
    } else if (gram_only(fnode, dr->n, o, &patches) && same_inputs(fnode, x, y, dr->n)) {
        GPFQ_TRY(quantize_from_gram(dr, fnode, qnode, layer, x, patches, &a, codes, rep));
    } else if (gathers(fnode, dr->n, o, &patches)) {
        GPFQ_TRY(quantize_gathered(dr, fnode, qnode, layer, x, y, patches, &a, codes, rep));
    } else {
        layer_data L;
        GPFQ_TRY(build_layer_data(fnode, layer, x, y, dr->n, o, &dr->store, &L));
        rep->samples = L.m;
        /* a buffer for the residual where the form gives it: ublock on GEMMs, the form that
         * reads the rows (its own kernels do not fill one) */
        float *R = NULL;
        if (no_norm && L.rows) {
            if (N * dr->n > dr->residual_floats) {
                free(dr->residual);
                dr->residual_floats = 0;
                if (!(dr->residual = gpfq_malloc(N * dr->n * sizeof(float), "a layer's residual")))
                    return GPFQ_ERR_NOMEM;
                dr->residual_floats = N * dr->n;
            }
            R = dr->residual;
        }
        double err2 = 0, ref2 = 0;
        gpfq_status st = GPFQ_OK;
        for (size_t grp = 0; st == GPFQ_OK && grp < L.groups; grp++) {
            const size_t offset = grp * L.rows_per_group * L.d;
            gpfq_layer_stats stats;
            const float *xt = L.Xt + grp * L.d * L.m, *yt = L.Yt + grp * L.d * L.m;
            st = L.rows ? gpfq_gpfq_layer_rows(fnode->weight + offset, L.rows_per_group, L.d, xt,
                                               yt, L.m, &a, o->form, o->block, codes + offset,
                                               qnode->weight + offset, R, &stats, !no_norm)
                 : no_norm
                     ? gpfq_gpfq_layer_no_norm(fnode->weight + offset, L.rows_per_group, L.d, xt,
                                               yt, L.m, &a, o->form, o->block, codes + offset,
                                               qnode->weight + offset, R, &stats)
                     : gpfq_gpfq_layer(fnode->weight + offset, L.rows_per_group, L.d, xt, yt, L.m,
                                       &a, o->form, o->block, codes + offset,
                                       qnode->weight + offset, &stats);
            *residual = stats.residual; /* only ever 1 where R was given */
            add_group(&stats, &err2, &ref2);
        }
        if (st == GPFQ_OK && o->bias_correction) st = correct_bias(qnode, fnode->weight, &L);
        GPFQ_TRY(st);
        report_errors(rep, err2, ref2);
    }
    rep->seconds = gpfq_now() - start;
    uint32_t nonfinite = 0;
    const size_t zeros = count_zeros(codes, qnode->weight, fnode->weight_count, &nonfinite);
    rep->sparsity = (double)zeros / (double)fnode->weight_count;
    qnode->quantized = 1;
    qnode->weight_step = a.delta;
    qnode->weight_offset = a.kind == GPFQ_QUANTIZER_L0 ? a.reg_lambda : 0.0f;
    if (nonfinite)
        return gpfq_fail(GPFQ_ERR_NUMERIC, "layer '%s': quantized weights are not finite",
                         fnode->name);
    if (!isfinite(rep->error) && o->method == GPFQ_METHOD_GPFQ)
        return gpfq_fail(GPFQ_ERR_NUMERIC,
                         "layer '%s': the quantization error is not finite (NaN or Inf in the "
                         "activations?)",
                         fnode->name);
    return GPFQ_OK;
}

/* ---- a Linear layer's outputs, from its residual ---- */

/* error / sqrt(norm2), as the product's norm would give it */
static double relative_to(double error, double norm2) {
    return norm2 > 0 ? error / sqrt(norm2) : norm2 == 0 ? 0.0 : NAN;
}

/* Half of the images of a Linear layer's outputs in shared calibration: the float output
 * F = x W^T + fb (the float pass's own, gpfq_linear as the plan runs it: a GEMM's rows do not
 * depend on each other), its share of ||W Xt||^2, and where the residual R = W Xt - Q Yt is
 * given (N x n), the quantized output Q y + qb = F + (qb - fb) - R without the product the
 * quantized pass would run. The float product, alone now, runs on both threads: mlp's quantize
 * from 4.9-5.1 to 4.0-4.3 ms (in one process, best of 100, three pairs). */
typedef struct {
    const gpfq_node *fnode;
    const float *x;     /* (n, d) */
    float *F;           /* (n, N) */
    float *out;         /* (n, N) the quantized output, or NULL; may be F */
    const float *R;     /* (N, n), or NULL */
    const float *shift; /* (N) qb - fb */
    size_t n, first, count;
    double norm2;
} linear_job;

static void linear_run(void *arg) {
    linear_job *l = arg;
    l->norm2 = 0.0;
    if (!l->count) return;
    const size_t N = (size_t)l->fnode->weight_dims[0], d = (size_t)l->fnode->weight_dims[1];
    float *F = l->F + l->first * N;
    gpfq_linear(l->x + l->first * d, l->fnode->weight, l->fnode->bias, l->count, d, N, F);
    l->norm2 = linear_norm2(l->fnode, F, l->count);
    if (!l->out) return;
    /* R is read along its rows, 16 images at a time */
    for (size_t i0 = l->first; i0 < l->first + l->count; i0 += 16) {
        const size_t i1 = i0 + 16 < l->first + l->count ? i0 + 16 : l->first + l->count;
        for (size_t o = 0; o < N; o++)
            for (size_t i = i0; i < i1; i++)
                l->out[i * N + o] = l->F[i * N + o] + l->shift[o] - l->R[o * l->n + i];
    }
}

/* Layer j's float output into F and, with R, its quantized output into out (either may be a
 * plan's buffer for node j); returns ||W Xt||^2. The images are split in two halves, on the two
 * threads where there are two: the values do not depend on it. */
static gpfq_status linear_outputs(const driver *dr, int j, const float *x, float *F, float *out,
                                  const float *R, double *norm2) {
    const gpfq_node *fnode = &dr->fmodel->nodes[j], *qnode = &dr->qmodel->nodes[j];
    const size_t N = (size_t)fnode->weight_dims[0];
    float *shift = R ? calloc(N, sizeof(float)) : NULL;
    if (R && !shift) return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for layer '%s'", fnode->name);
    for (size_t o = 0; shift && o < N; o++)
        shift[o] = (qnode->bias ? qnode->bias[o] : 0.0f) - (fnode->bias ? fnode->bias[o] : 0.0f);
    const size_t half = dr->n / 2;
    linear_job jobs[2] = {{.fnode = fnode,
                           .x = x,
                           .F = F,
                           .out = R ? out : NULL,
                           .R = R,
                           .shift = shift,
                           .n = dr->n}};
    jobs[1] = jobs[0];
    jobs[0].count = jobs[1].first = half;
    jobs[1].count = dr->n - half;
    gpfq_helper_pair(linear_run, &jobs[0], &jobs[1], openblas_get_num_threads() > 1);
    free(shift);
    *norm2 = jobs[0].norm2 + jobs[1].norm2;
    return GPFQ_OK;
}

/* With one calibration set, the images are freed once both passes are past their last reader,
 * for the next layers' buffers to take (lenet5: 0.8 MB, which conv2's GPFQ then reuses). */
static void release_images(driver *dr, stepper *fs, stepper *qs) {
    if (!dr->images || dr->o->calib_mode != GPFQ_CALIB_SHARED || !qs->fwd) return;
    const int end = gpfq_forward_input_readers_end(qs->fwd);
    if (qs->next < end || (fs->fwd && fs->next < end)) return;
    free(dr->images);
    dr->images = NULL;
    fs->input = qs->input = NULL;
}

/* One past the last node a node reads: the nodes before it hold all of its ancestors. */
static int inputs_end(const gpfq_node *node) {
    int end = 0;
    for (int k = 0; k < node->n_inputs; k++)
        if (node->inputs[k] + 1 > end) end = node->inputs[k] + 1;
    return end;
}

static gpfq_status run_layers(driver *dr, gpfq_quant_result *res, gpfq_layer_fn on_layer,
                              void *ctx) {
    const gpfq_quant_options *o = dr->o;
    const gpfq_model *fm = dr->fmodel;
    const int need_data = o->method == GPFQ_METHOD_GPFQ;
    const int run_float = need_data && !dr->source;
    stepper fs = {.norm_node = -1}, qs = {.norm_node = -1};
    gpfq_status st = GPFQ_OK;
    if (need_data && o->calib_mode == GPFQ_CALIB_SHARED) {
        const double t = gpfq_now();
        draw_images(dr, 0);
        if (run_float) st = stepper_start(&fs, fm, dr->images, dr->n);
        if (st == GPFQ_OK) st = stepper_start(&qs, dr->qmodel, dr->images, dr->n);
        dr->pass_seconds += gpfq_now() - t;
    }
    /* A Linear layer's ||W Xt|| is its float output less its bias, which the float pass computes
     * on its way to the next layer: with one calibration set, it comes from that output instead
     * of a product of its own (mlp: 0.5 of 5.5 ms). Where the layer's GPFQ ends with its
     * residual, both outputs are made at once (linear_outputs); else the layer's report waits
     * for the float pass (pending), or with cached float inputs, the float output is made for
     * the norm alone (as costly as the product, and the same values as with the residual). */
    const int norm_later = need_data && o->calib_mode == GPFQ_CALIB_SHARED;
    int pending = -1;
    for (int layer = 0; st == GPFQ_OK && layer <= res->n_layers; layer++) {
        if (pending >= 0) { /* reported once the float pass has run its layer */
            gpfq_layer_report *p = &res->layers[pending];
            const double t = gpfq_now();
            st = layer < res->n_layers ? advance_both(&fs, &qs, res->layers[layer].node)
                                       : stepper_advance(&fs, p->node + 1);
            if (layer < res->n_layers) dr->pass_seconds += gpfq_now() - t; /* not the norm's */
            if (st != GPFQ_OK) break;
            p->relative_error = relative_to(p->error, fs.norm2);
            if (on_layer) on_layer(ctx, p, pending, res->n_layers);
            pending = -1;
        }
        if (layer == res->n_layers) break;
        gpfq_layer_report *rep = &res->layers[layer];
        const int j = rep->node;
        const gpfq_node *node = &fm->nodes[j];
        if (!rep->skipped) {
            const float *x = NULL, *y = NULL;
            const double t = gpfq_now();
            if (need_data && o->calib_mode == GPFQ_CALIB_PER_LAYER) {
                draw_images(dr, (uint64_t)layer + 1);
                if (run_float) st = stepper_start(&fs, fm, dr->images, dr->n);
                if (st == GPFQ_OK) st = stepper_start(&qs, dr->qmodel, dr->images, dr->n);
            }
            /* A fresh pass stops after the layer's last input: the nodes after it are none of
             * its ancestors (a shortcut conv's pass skips its block's two convs), and nothing
             * reads them before the next layer's pass starts over. */
            const int upto = o->calib_mode == GPFQ_CALIB_PER_LAYER ? inputs_end(node) : j;
            if (st == GPFQ_OK && need_data) st = advance_both(&fs, &qs, upto);
            if (need_data) dr->pass_seconds += gpfq_now() - t;
            release_images(dr, &fs, &qs);
            if (st == GPFQ_OK && need_data) {
                x = run_float ? stepper_value(&fs, node->inputs[0])
                              : dr->source(dr->source_ctx, layer, j, dr->n);
                y = stepper_value(&qs, node->inputs[0]);
                if (!x)
                    st = gpfq_fail(GPFQ_ERR_STATE, "no cached float inputs for layer '%s'",
                                   node->name);
            }
            int residual = 0;
            if (st == GPFQ_OK)
                st = quantize_node(dr, j, layer, x, y, norm_later, res, rep, &residual);
            if (st == GPFQ_OK && qs.fwd) gpfq_forward_weights_changed(qs.fwd, j);
            if (st == GPFQ_OK && norm_later && node->op == GPFQ_OP_LINEAR &&
                isnan(rep->relative_error)) {
                if (run_float && !residual) {
                    pending = layer;
                    fs.norm_node = j;
                    continue;
                }
                float *out = gpfq_forward_output_buffer(qs.fwd, j);
                float *F = run_float ? gpfq_forward_output_buffer(fs.fwd, j) : out;
                double norm2 = NAN;
                const double t_out = gpfq_now();
                st = F && out
                         ? linear_outputs(dr, j, x, F, out, residual ? dr->residual : NULL, &norm2)
                         : gpfq_fail(GPFQ_ERR_NOMEM, "out of memory for the outputs of layer '%s'",
                                     node->name); /* a Linear node always has a buffer */
                /* with the residual, these are the layer's outputs the passes then skip */
                if (residual) dr->pass_seconds += gpfq_now() - t_out;
                rep->relative_error = relative_to(rep->error, norm2);
                if (st == GPFQ_OK && residual) { /* both passes are past the layer */
                    qs.next = j + 1;
                    if (run_float) fs.next = j + 1;
                }
            }
        }
        if (st == GPFQ_OK && on_layer) on_layer(ctx, rep, layer, res->n_layers);
    }
    stepper_free(&fs);
    stepper_free(&qs);
    return st;
}

size_t gpfq_calib_count(const gpfq_quant_options *o, const gpfq_dataset *train) {
    return train && o->calib_images > train->n ? train->n : o->calib_images;
}

gpfq_status gpfq_float_inputs(const gpfq_model *model, const gpfq_dataset *train,
                              const gpfq_quant_options *o, gpfq_float_sink_fn sink, void *ctx) {
    GPFQ_TRY(gpfq_quant_options_check(o));
    GPFQ_TRY(gpfq_eval_check(model, train));
    const gpfq_model *fmodel;
    gpfq_model *folded;
    GPFQ_TRY(float_model(model, o->fold_batchnorm, &fmodel, &folded));
    driver dr = {.fmodel = fmodel, .train = train, .o = o, .n = gpfq_calib_count(o, train)};
    gpfq_status st = draw_buffers(&dr);
    stepper fs = {.norm_node = -1};
    if (st == GPFQ_OK && o->calib_mode == GPFQ_CALIB_SHARED) {
        draw_images(&dr, 0);
        st = stepper_start(&fs, fmodel, dr.images, dr.n);
    }
    int layer = 0;
    for (int j = 0; st == GPFQ_OK && j < fmodel->n_nodes; j++) {
        const gpfq_node *node = &fmodel->nodes[j];
        if (!gpfq_node_is_quantizable(node)) continue;
        if (o->calib_mode == GPFQ_CALIB_PER_LAYER) {
            draw_images(&dr, (uint64_t)layer + 1);
            st = stepper_start(&fs, fmodel, dr.images, dr.n);
        }
        if (st == GPFQ_OK) st = stepper_advance(&fs, j);
        if (st == GPFQ_OK) sink(ctx, layer, j, stepper_value(&fs, node->inputs[0]), dr.n);
        layer++;
    }
    stepper_free(&fs);
    free(dr.indices), free(dr.pool), free(dr.images);
    gpfq_model_free(folded);
    return st;
}

gpfq_status gpfq_quantize_model(const gpfq_model *model, const gpfq_dataset *train,
                                const gpfq_quant_options *o, gpfq_quant_result *result,
                                gpfq_layer_fn on_layer, void *ctx) {
    return gpfq_quantize_model_with(model, train, o, NULL, NULL, result, on_layer, ctx);
}

gpfq_status gpfq_quantize_model_with(const gpfq_model *model, const gpfq_dataset *train,
                                     const gpfq_quant_options *o, gpfq_float_input_fn source,
                                     void *source_ctx, gpfq_quant_result *result,
                                     gpfq_layer_fn on_layer, void *ctx) {
    memset(result, 0, sizeof *result);
    GPFQ_TRY(gpfq_quant_options_check(o));
    const double start = gpfq_now();
    if (o->method == GPFQ_METHOD_GPFQ) GPFQ_TRY(gpfq_eval_check(model, train));
    for (int i = 0; i < o->n_ignore; i++)
        if (gpfq_model_find(model, o->ignore[i]) < 0)
            return gpfq_fail(GPFQ_ERR_ARG, "--ignore names '%s', which is not a node of the model",
                             o->ignore[i]);
    const gpfq_model *fmodel;
    gpfq_model *folded;
    GPFQ_TRY(float_model(model, o->fold_batchnorm, &fmodel, &folded));
    gpfq_status st = gpfq_model_clone(fmodel, &result->model);
    driver dr = {.fmodel = fmodel,
                 .qmodel = result->model,
                 .train = train,
                 .o = o,
                 .source = source,
                 .source_ctx = source_ctx,
                 .n = gpfq_calib_count(o, train)};
    if (st == GPFQ_OK) {
        result->codes = gpfq_calloc((size_t)model->n_nodes, sizeof(int32_t *), "codes");
        result->layers = gpfq_calloc((size_t)model->n_nodes, sizeof(gpfq_layer_report), "reports");
        if (o->method == GPFQ_METHOD_GPFQ) {
            st = draw_buffers(&dr);
        }
        if (!result->codes || !result->layers) st = GPFQ_ERR_NOMEM;
    }
    int last = -1;
    for (int i = 0; st == GPFQ_OK && i < fmodel->n_nodes; i++) {
        if (!gpfq_node_is_quantizable(&fmodel->nodes[i])) continue;
        gpfq_layer_report *rep = &result->layers[result->n_layers++];
        rep->node = last = i;
        snprintf(rep->name, sizeof rep->name, "%s", fmodel->nodes[i].name);
        rep->skipped = is_ignored(o, rep->name);
        rep->error = rep->relative_error = rep->delta = NAN;
    }
    if (st == GPFQ_OK && last >= 0 && o->keep_last_float)
        result->layers[result->n_layers - 1].skipped = 1;
    if (st == GPFQ_OK) st = run_layers(&dr, result, on_layer, ctx);
    layer_store_free(&dr.store);
    free(dr.indices), free(dr.pool), free(dr.images), free(dr.residual);
    gpfq_model_free(folded);
    if (st != GPFQ_OK) {
        gpfq_quant_result_free(result);
        return st;
    }
    result->seconds = gpfq_now() - start;
    result->pass_seconds = dr.pass_seconds;
    return GPFQ_OK;
}
