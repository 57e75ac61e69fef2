/*
 * Quantization: alphabets, scalar quantizers, GPFQ for one layer, and the
 * network driver (quantize every Linear and Conv2d in order).
 *
 * Notation for one layer (see docs/gpfq.md): W is N x d (N neurons or output
 * channels, d inputs; a conv weight O x C/g x kh x kw is viewed as O x (C/g*kh*kw)).
 * X and Y are the layer's inputs in the float network and in the network whose
 * earlier layers are already quantized, stored TRANSPOSED as Xt, Yt: d x m
 * (rows are input coordinates, columns are the m calibration rows: images for a
 * Linear layer, image patches for a conv).
 */
#ifndef GPFQ_QUANT_H
#define GPFQ_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "gpfq/data.h"
#include "gpfq/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GPFQ_QUANTIZER_NEAREST,    /* MSQ rounding to the nearest level */
    GPFQ_QUANTIZER_L1,         /* soft threshold by lambda, then nearest */
    GPFQ_QUANTIZER_L0,         /* hard threshold: levels +-(lambda + k delta) */
    GPFQ_QUANTIZER_STOCHASTIC, /* unbiased random rounding, seeded */
} gpfq_quantizer;

/* The levels of one layer. Integer codes c in [-levels, levels] (L0: |c| <= levels + 1). */
typedef struct {
    gpfq_quantizer kind;
    int bits;
    int levels;       /* K = 2^(bits-1) */
    float delta;      /* step */
    float reg_lambda; /* threshold for L1/L0; 0 otherwise */
    float radius;     /* mean over rows of the percentile of |W[i,:]| */
    uint64_t seed;    /* stochastic rounding: the stream of this layer */
} gpfq_alphabet;

/* Builds a layer's alphabet from its weights W (rows x cols): K = 2^(bits-1),
 * rad = mean over rows of the `percentile` quantile (in (0, 1], linear
 * interpolation as torch.quantile) of |W[i,:]|, delta = scalar * rad / K, or
 * (scalar * rad - lambda) / K for L0. Fails when delta would not be positive. */
gpfq_status gpfq_alphabet_make(const float *weight, size_t rows, size_t cols, int bits,
                               double scalar, double percentile, gpfq_quantizer kind,
                               double reg_lambda, uint64_t seed, gpfq_alphabet *out);

/* The code of real value z. `stream` and `index` pick the random number for
 * stochastic rounding (counter-based, so any evaluation order draws the same). */
int gpfq_quantize_code(const gpfq_alphabet *a, float z, uint64_t stream);
/* The real value of a code. */
float gpfq_code_value(const gpfq_alphabet *a, int code);
/* gpfq_quantize_code of z[i] / norm for i < n (every code 0 when norm is 0), element
 * i drawing from stream stream0 + i * step, and the codes' values; vectorised. */
void gpfq_quantize_row(const gpfq_alphabet *a, const float *z, size_t n, float norm,
                       uint64_t stream0, uint64_t step, int32_t *codes, float *values);
/* values[i] = gpfq_code_value(a, codes[i]) for i < n; vectorised. */
void gpfq_code_values(const gpfq_alphabet *a, const int32_t *codes, size_t n, float *values);

/* Counter-based uniform in [0, 1) for (seed, stream). */
double gpfq_uniform(uint64_t seed, uint64_t stream);

/* Which algorithm quantizes a layer. */
typedef enum {
    GPFQ_FORM_AUTO,   /* the cheaper of GRAM and UBLOCK by a flop count */
    GPFQ_FORM_GRAM,   /* G = Y^T X, H = Y^T Y, blocked: O(m d^2 + N d^2) */
    GPFQ_FORM_UBLOCK, /* the U form blocked into GEMMs: O(N m d) */
    GPFQ_FORM_REF,    /* the plain U-form loop, rank-1 updates */
} gpfq_form;

const char *gpfq_form_name(gpfq_form form);

typedef struct {
    double error;          /* ||X W^T - Y Q^T||_F */
    double relative_error; /* error / ||X W^T||_F */
    double seconds;
    gpfq_form form; /* the form that ran */
    int residual;   /* 1: gpfq_gpfq_layer_no_norm or _rows wrote the residual */
} gpfq_layer_stats;

/* The form gpfq_gpfq_layer runs on an N x d layer with m columns, given form (GPFQ_FORM_AUTO:
 * the cheaper by its cost model) and block (0: the default). */
gpfq_form gpfq_layer_form(size_t N, size_t d, size_t m, gpfq_form form, size_t block);
/* GPFQ for one layer: weight (N, d), Xt and Yt (d, m). Writes codes (N, d) and,
 * when `quantized` is not NULL, their values (N, d). `block` is the column
 * block size of the fast forms (0: default). Stochastic rounding draws from
 * stream (row * d + column) of the alphabet's seed. */
gpfq_status gpfq_gpfq_layer(const float *weight, size_t N, size_t d, const float *Xt,
                            const float *Yt, size_t m, const gpfq_alphabet *a, gpfq_form form,
                            size_t block, int32_t *codes, float *quantized,
                            gpfq_layer_stats *stats);

/* gpfq_gpfq_layer for a caller that has ||W Xt|| from elsewhere (the float network computes
 * W Xt + bias for a Linear layer anyway): stats->relative_error is NaN where the form would
 * spend a product of its own on the norm (ublock, unless on its own AVX-512 kernels, m >= 2048,
 * with N <= 64), else as above; the codes, values and error are gpfq_gpfq_layer's. Where the
 * form ends holding the residual R = W Xt - Q Yt (ublock on GEMMs: not on its own kernels) and
 * `residual` and stats are given, R (N x m) is written there and stats->residual is 1: Q Yt
 * is then W Xt - R without a product (the driver's quantized pass over a Linear layer). */
gpfq_status gpfq_gpfq_layer_no_norm(const float *weight, size_t N, size_t d, const float *Xt,
                                    const float *Yt, size_t m, const gpfq_alphabet *a,
                                    gpfq_form form, size_t block, int32_t *codes, float *quantized,
                                    float *residual, gpfq_layer_stats *stats);

/* 1 where the form gpfq_gpfq_layer resolves for these arguments is ublock on GEMMs, which reads
 * a Linear layer's inputs as a network holds them (gpfq_gpfq_layer_rows). */
int gpfq_layer_reads_rows(size_t N, size_t d, size_t m, gpfq_form form, size_t block);
/* gpfq_gpfq_layer (want_norm 1) or gpfq_gpfq_layer_no_norm (want_norm 0) on X and Y (m, d), one
 * row per image, as a network holds a Linear layer's inputs, instead of Xt and Yt: no transposed
 * copies (mlp's: 1.3 MB a quantize, memory a fresh process must first touch). Only where
 * gpfq_layer_reads_rows says so; elsewhere GPFQ_ERR_ARG. The codes, values, error and residual
 * are those of the call on Xt and Yt, to the bit on gpfq's GEMM kernel. */
gpfq_status gpfq_gpfq_layer_rows(const float *weight, size_t N, size_t d, const float *X,
                                 const float *Y, size_t m, const gpfq_alphabet *a, gpfq_form form,
                                 size_t block, int32_t *codes, float *quantized, float *residual,
                                 gpfq_layer_stats *stats, int want_norm);

/* GPFQ for a layer whose two networks read the same inputs (X = Y: a first layer's images), from
 * their Gram matrix alone: G = Xt Xt^T (d x d, lower triangle read), summed by the caller over
 * the m columns without holding them all (a first conv's patches: lenet5's 5 MB, resnet20's
 * 1.8 MB). The gram form with H = G; stats->error and ->relative_error from the quadratic
 * forms of G (in double), not from products with X. `block` as in gpfq_gpfq_layer. */
gpfq_status gpfq_gpfq_layer_gram(const float *weight, size_t N, size_t d, const float *G, size_t m,
                                 const gpfq_alphabet *a, size_t block, int32_t *codes,
                                 float *quantized, gpfq_layer_stats *stats);
/* 1 where, for a layer with X = Y, gpfq_gpfq_layer_gram costs less than what gpfq_gpfq_layer runs
 * (form GPFQ_FORM_AUTO only: a form asked for is run as asked). */
int gpfq_layer_gram_only(size_t N, size_t d, size_t m, gpfq_form form, size_t block);

/* A conv layer's drawn patches, described instead of unfolded: column k of Xt (Yt) is patch k
 * of the float (quantized) network's inputs x (y), (images, C, H, W), and row t one of its taps.
 * Element (t, k) is x[base[k] + off[t]] where the tap lies inside the plane, else 0 (padding):
 * with the patch's corner at (y0, x0) (from -pad) and the tap at (dy, dx) from it, inside means
 * 0 <= y0 + dy < h and 0 <= x0 + dx < w. corner[k] packs y0 << 16 | (x0 & 0xffff), tap[t]
 * dy << 16 | dx (each of y0, x0, dy, dx in [-32768, 32767]; base + off below 2^31). Where x is
 * y, both networks read the same inputs (X = Y). */
typedef struct {
    const float *x, *y;
    const int32_t *base, *corner; /* (m) */
    const int32_t *off, *tap;     /* (d) */
    int h, w;
    int inside; /* 1: every tap lies inside the planes (no padding): whole vectors skip the test */
} gpfq_patches;

/* 1 where gpfq_gpfq_layer on these arguments runs the ublock form on gpfq's own kernels, which
 * gpfq_gpfq_layer_patches can run on patches it gathers as it goes. */
int gpfq_layer_gathers(size_t N, size_t d, size_t m, gpfq_form form, size_t block);
/* gpfq_gpfq_layer on the patches P describes, gathered a block of rows and a chunk of columns at a
 * time into buffers of 2 x block rows, X's and Y's (and V = W Xt, N rows, for the reference norm),
 * never unfolded whole (lenet5's conv2: 8 MB of Xt and Yt a fresh process would first have to
 * touch). Only where gpfq_layer_gathers says so; elsewhere GPFQ_ERR_ARG. The codes and values are
 * those of gpfq_gpfq_layer on the unfolded patches, to the bit; stats->error too, and
 * ->relative_error up to the order of its sums. */
gpfq_status gpfq_gpfq_layer_patches(const float *weight, size_t N, size_t d, const gpfq_patches *P,
                                    size_t m, const gpfq_alphabet *a, gpfq_form form, size_t block,
                                    int32_t *codes, float *quantized, gpfq_layer_stats *stats);

/* sum over k < n of (v[k] - sub[k])^2 in double (sub NULL: of v[k]^2), in a fixed order. */
double gpfq_sum_squares(const float *v, const float *sub, size_t n);

/* The plain U-form loop (the reference implementation's). */
void gpfq_gpfq_layer_ref(const float *weight, size_t N, size_t d, const float *Xt, const float *Yt,
                         size_t m, const gpfq_alphabet *a, int32_t *codes);

/* MSQ: every weight to its level, no data. */
void gpfq_msq_layer(const float *weight, size_t N, size_t d, const gpfq_alphabet *a,
                    int32_t *codes);

/* ||W Xt - Q Yt||_F and ||W Xt||_F over the m columns (Q: quantized values).
 * With quantized and error NULL, only the reference norm. */
gpfq_status gpfq_layer_error(const float *weight, const float *quantized, size_t N, size_t d,
                             const float *Xt, const float *Yt, size_t m, double *error,
                             double *reference_norm);

/* ---- the network driver ---- */

typedef enum { GPFQ_METHOD_GPFQ, GPFQ_METHOD_MSQ } gpfq_method;

typedef enum {
    GPFQ_CALIB_SHARED,    /* one calibration set; quantized activations advance layer by layer */
    GPFQ_CALIB_PER_LAYER, /* a fresh batch per layer, both networks re-run (the reference) */
} gpfq_calib_mode;

typedef struct {
    gpfq_method method;
    int bits;
    double mlp_scalar, cnn_scalar;         /* alphabet scalars of Linear and Conv2d layers */
    double mlp_percentile, cnn_percentile; /* in (0, 1] */
    gpfq_quantizer quantizer;
    double reg_lambda;
    size_t calib_images; /* bs: images per calibration batch */
    gpfq_calib_mode calib_mode;
    double retain_rate;        /* share of conv patches kept per image */
    int with_replacement;      /* draw patch indices with replacement (the reference) */
    int unfold_stride_kernel;  /* unfold conv inputs with stride = kernel (the reference) */
    int fold_batchnorm;        /* fold BatchNorm into the preceding conv first */
    int bias_correction;       /* add mean(X W^T - Y Q^T) to the bias */
    int keep_last_float;       /* leave the last quantizable layer in float */
    const char *const *ignore; /* node names to leave in float */
    int n_ignore;
    uint64_t seed;       /* patch sampling and stochastic rounding */
    uint64_t calib_seed; /* which training images calibrate */
    gpfq_form form;
    size_t block;
} gpfq_quant_options;

/* The defaults (documented in docs/gpfq.md): GPFQ, 4 bits, scalar 1.16,
 * percentile 1, nearest, bs 256, shared calibration, retain 0.25 without
 * replacement, the layer's own stride, seed 0. */
void gpfq_quant_options_default(gpfq_quant_options *o);

/* Checks an options set; the message names the option. */
gpfq_status gpfq_quant_options_check(const gpfq_quant_options *o);

typedef struct {
    int node;
    char name[GPFQ_NAME_MAX];
    size_t rows, cols; /* N, d */
    size_t samples;    /* m */
    double delta;
    double error, relative_error;
    double sparsity; /* share of zero codes */
    double seconds;
    int skipped; /* left in float */
} gpfq_layer_report;

typedef struct {
    gpfq_model *model;         /* the quantized model (weights replaced by code values) */
    int32_t **codes;           /* (n_nodes), codes of each quantized node or NULL */
    gpfq_layer_report *layers; /* (n_layers) */
    int n_layers;
    double seconds;
    /* of seconds, the image draws and the forward passes that make the layers' inputs (with
     * per-layer calibration, both networks from the input for every layer); not the passes
     * made for a layer's error alone, nor cached float inputs (a sweep's) */
    double pass_seconds;
} gpfq_quant_result;

typedef void (*gpfq_layer_fn)(void *ctx, const gpfq_layer_report *layer, int index, int total);

/* Quantizes every Linear and Conv2d of `model` (which is not modified) with
 * calibration images drawn from `train`. */
gpfq_status gpfq_quantize_model(const gpfq_model *model, const gpfq_dataset *train,
                                const gpfq_quant_options *o, gpfq_quant_result *result,
                                gpfq_layer_fn on_layer, void *ctx);

/* The float network's inputs to its quantizable layers on the calibration
 * images, which do not depend on the quantization parameters: a sweep computes
 * them once (gpfq_float_inputs) and hands them to every task. `layer` counts the
 * quantizable layers in order; the data is (n, in_shape of the node). */
typedef const float *(*gpfq_float_input_fn)(void *ctx, int layer, int node, size_t n);
typedef void (*gpfq_float_sink_fn)(void *ctx, int layer, int node, const float *data, size_t n);

/* Like gpfq_quantize_model, reading X from `source` instead of running the float
 * network (source may be NULL). */
gpfq_status gpfq_quantize_model_with(const gpfq_model *model, const gpfq_dataset *train,
                                     const gpfq_quant_options *o, gpfq_float_input_fn source,
                                     void *source_ctx, gpfq_quant_result *result,
                                     gpfq_layer_fn on_layer, void *ctx);

/* Runs the float network over the calibration images of `o` (calib_images,
 * calib_mode, calib_seed, fold_batchnorm) and hands each quantizable layer's
 * input to `sink`. */
gpfq_status gpfq_float_inputs(const gpfq_model *model, const gpfq_dataset *train,
                              const gpfq_quant_options *o, gpfq_float_sink_fn sink, void *ctx);

/* Number of calibration images a run of `o` uses on `train`. */
size_t gpfq_calib_count(const gpfq_quant_options *o, const gpfq_dataset *train);

void gpfq_quant_result_free(gpfq_quant_result *r);

/* Share of zeros among all Linear/Conv2d weights and biases (the reference's sparsity). */
double gpfq_model_sparsity(const gpfq_model *model);

/* A hash of all codes of a result (for comparing runs). */
uint64_t gpfq_codes_hash(const gpfq_quant_result *r);

int gpfq_node_is_quantizable(const gpfq_node *node);

#ifdef __cplusplus
}
#endif

#endif
