/*
 * Forward kernels. Tensors are float32, row-major; activations are NCHW.
 *
 * Every fast kernel has a plain `_ref` twin written as the textbook loop; the
 * tests hold the two together, and both against PyTorch.
 */
#ifndef GPFQ_OPS_H
#define GPFQ_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "gpfq/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Geometry of a 2-D convolution or pooling window. */
typedef struct {
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int dilation_h, dilation_w;
    int groups;
} gpfq_conv_geom;

/* Output extent of a window op along one axis; -1 if the window never fits. */
int gpfq_window_out(int in, int kernel, int stride, int pad, int dilation, int ceil_mode);

/* y (n, out) = x (n, in) W^T (W: (out, in)) + b (out, or NULL). */
void gpfq_linear(const float *x, const float *weight, const float *bias, size_t n, size_t in,
                 size_t out, float *y);
void gpfq_linear_ref(const float *x, const float *weight, const float *bias, size_t n, size_t in,
                     size_t out, float *y);

/* Scratch floats gpfq_conv2d needs for a batch of n images. */
size_t gpfq_conv2d_scratch(const gpfq_conv_geom *g, size_t n);
/* x (n, in_c, in_h, in_w), weight (out_c, in_c/groups, kh, kw), bias (out_c) or NULL,
 * y (n, out_c, out_h, out_w). A direct kernel where one fits (below), else im2col + sgemm;
 * 1x1 stride-1 unpadded convs skip im2col. `scratch` holds gpfq_conv2d_scratch() floats, or is
 * NULL: a call that needs it then allocates its own. GPFQ_ERR_NOMEM (with the message set) where
 * a buffer the call needed could not be allocated; y is then undefined. */
gpfq_status gpfq_conv2d(const gpfq_conv_geom *g, const float *x, const float *weight,
                        const float *bias, size_t n, float *y, float *scratch);
/* What a conv's outputs go through before they are stored when the BatchNorm (and the ReLU)
 * that only it feeds are folded into it: y = relu?((conv + bias) * scale + shift), the same
 * float operations as the separate ops, so the results are identical. */
typedef struct {
    const float *scale, *shift; /* per output channel (gpfq_batchnorm_fold), or NULL */
    const float *residual;      /* added next: a tensor of the output's shape, or NULL */
    int relu;                   /* then ReLU */
    /* then, when set, a 2x2 stride-2 max pool without padding (floor): y is then
     * (n, out_c, out_h / 2, out_w / 2), the result of gpfq_maxpool2d on the epilogue's output.
     * `unpooled` is room for that output, (n, out_c, out_h, out_w), where a kernel that cannot
     * pool (gpfq_conv_interleaved_fits says which can, and none with a residual) writes it
     * before pooling; NULL: such a kernel allocates it for the call (or the call returns
     * GPFQ_ERR_NOMEM). */
    int pool;
    float *unpooled;
} gpfq_conv_epilogue;
/* As gpfq_conv2d, then the epilogue (NULL: none) on every output. `packed` is the weights
 * as gpfq_conv2d_pack left them for a direct kernel, or NULL: packed on every call. */
gpfq_status gpfq_conv2d_fused(const gpfq_conv_geom *g, const float *x, const float *weight,
                              const float *packed, const float *bias,
                              const gpfq_conv_epilogue *epilogue, size_t n, float *y,
                              float *scratch);

/* The kernel gpfq_conv2d runs for the convolutions a direct kernel covers (no dilation or
 * groups, larger than 1x1; stride 1 with padding up to k - 1, or stride 2 with an odd kernel
 * and padding (k-1)/2); the others always take im2col + sgemm.
 * The default is the best the CPU supports, or GPFQ_CONV=im2col|avx2|avx512 from the
 * environment (read once); a kernel the CPU lacks falls back to the best it has. */
typedef enum {
    GPFQ_CONV_AUTO,
    GPFQ_CONV_IM2COL,
    GPFQ_CONV_AVX2,
    GPFQ_CONV_AVX512,
} gpfq_conv_kernel;
gpfq_conv_kernel gpfq_conv_get_kernel(void);
/* Sets the kernel for every later call (not thread-safe against running convs); returns the
 * previous one. */
gpfq_conv_kernel gpfq_conv_set_kernel(gpfq_conv_kernel kernel);
const char *gpfq_conv_kernel_name(gpfq_conv_kernel kernel);
/* 1 if gpfq_conv2d runs g with a direct kernel. */
int gpfq_conv_direct_fits(const gpfq_conv_geom *g);
/* Winograd for 3x3 stride-1 "same" convs on the AVX-512 kernel: F(4x4, 3x3), 36 products per
 * 4x4 outputs where the direct kernel does 144, or F(2x2, 3x3), 16 per 2x2 outputs against 36
 * (gpfq_conv_winograd_tile); rounded differently (within the tests' tolerance against the
 * double-accumulating reference). AUTO takes it where both channel
 * counts are at least GPFQ_WINOGRAD_MIN_CHANNELS (measured: bench/README.md), ALL for every
 * such conv (tests), OFF never. The default is AUTO, or GPFQ_WINOGRAD=off|auto|all from the
 * environment (read once). Packed weights depend on the mode and the kernel (their size
 * tells: gpfq_conv2d_packed_floats): pack them again after changing either. */
typedef enum {
    GPFQ_WINOGRAD_OFF,
    GPFQ_WINOGRAD_AUTO,
    GPFQ_WINOGRAD_ALL,
} gpfq_winograd_mode;
enum { GPFQ_WINOGRAD_MIN_CHANNELS = 32 };
gpfq_winograd_mode gpfq_conv_get_winograd(void);
/* Sets the mode for every later call (not thread-safe against running convs); returns the
 * previous one. */
gpfq_winograd_mode gpfq_conv_set_winograd(gpfq_winograd_mode mode);
const char *gpfq_winograd_mode_name(gpfq_winograd_mode mode);
/* 1 if gpfq_conv2d runs g with Winograd (on the AVX-512 kernel). */
int gpfq_conv_winograd_fits(const gpfq_conv_geom *g);
/* The output tile T of Winograd's F(T x T, 3x3) for g: 4 (the default: fewer products, and
 * on resnet18's convs 1.25-1.5x faster than 2, bench/README.md), 2 where set, 0 where
 * gpfq_conv_winograd_fits says no. */
int gpfq_conv_winograd_tile(const gpfq_conv_geom *g);
/* Sets T for every later Winograd conv (not thread-safe against running convs): 2 or 4, or 0
 * (and any other value) for the default; GPFQ_WINOGRAD_TILE=2|4 from the environment (read
 * once). Packed weights depend on it, as on the mode. Returns the previous setting. */
int gpfq_conv_set_winograd_tile(int tile);
/* The T Winograd convs take now: 4 or 2. */
int gpfq_conv_get_winograd_tile(void);
/* The image-interleaved direct kernel (AVX-512): 16 images side by side in the vectors, so
 * that no output is computed and dropped, as the flat planes' gaps are
 * (src/ops/conv_direct.c). The same sums in the same order as the direct kernel: the same
 * bits. AUTO takes it where a chunk of 16 images' padded input and output is at most 6 MB,
 * for stride-2 convs and for stride-1 convs where the flat layout computes 1.25x the outputs
 * or more; ALL wherever the direct kernel runs without Winograd and an output row has 3 or
 * more values (tests); OFF never. The default is AUTO, or GPFQ_INTERLEAVE=off|auto|all from
 * the environment (read once). The packed weights are the direct kernel's. */
typedef enum {
    GPFQ_INTERLEAVE_OFF,
    GPFQ_INTERLEAVE_AUTO,
    GPFQ_INTERLEAVE_ALL,
} gpfq_interleave_mode;
gpfq_interleave_mode gpfq_conv_get_interleave(void);
/* Sets the mode for every later call (not thread-safe against running convs); returns the
 * previous one. */
gpfq_interleave_mode gpfq_conv_set_interleave(gpfq_interleave_mode mode);
const char *gpfq_interleave_mode_name(gpfq_interleave_mode mode);
/* 1 if gpfq_conv2d runs g with the interleaved kernel; only that kernel pools in its epilogue. */
int gpfq_conv_interleaved_fits(const gpfq_conv_geom *g);
/* The direct kernel alone (g must fit); uses as many threads as BLAS is set to (at most one
 * per 50 MFLOP of the call) and buffers of its own. 0, or -1 if out of memory or if the
 * epilogue asks for a pool that this kernel cannot run (y then undefined).
 */
int gpfq_conv2d_direct(const gpfq_conv_geom *g, const float *x, const float *weight,
                       const float *packed, const float *bias, const gpfq_conv_epilogue *epilogue,
                       size_t n, float *y);
/* The direct kernels' order of the weights: gpfq_conv2d_packed_floats(g) floats (0 when no
 * direct kernel fits g), which a caller that runs the same weights many times keeps. */
size_t gpfq_conv2d_packed_floats(const gpfq_conv_geom *g);
void gpfq_conv2d_pack(const gpfq_conv_geom *g, const float *weight, float *packed);
void gpfq_conv2d_ref(const gpfq_conv_geom *g, const float *x, const float *weight,
                     const float *bias, size_t n, float *y);

/* Unfolds one image x (in_c, in_h, in_w), channels [c0, c0 + cg), into
 * col (cg*kh*kw, out_h*out_w); row r = (c*kh + i)*kw + j, zero outside the image. */
void gpfq_im2col(const gpfq_conv_geom *g, const float *x, int c0, int cg, float *col,
                 size_t col_stride);

/* y = (x - mean) / sqrt(var + eps) * gamma + beta per channel; x and y may alias. */
void gpfq_batchnorm2d(const float *x, const float *gamma, const float *beta, const float *mean,
                      const float *var, float eps, size_t n, int c, size_t hw, float *y);

/* scale[ch], shift[ch] of inference BatchNorm, y = x * scale + shift (PyTorch's folding). */
void gpfq_batchnorm_fold(const float *gamma, const float *beta, const float *mean, const float *var,
                         float eps, int c, float *scale, float *shift);
/* max(x, 0), NaN kept */
static inline float gpfq_relu1(float x) {
    return x > 0.0f ? x : (x != x ? x : 0.0f);
}
/* dst[k] = the epilogue of src[k] + bias for `count` outputs of one channel whose first is at
 * index `at` of the output tensor; src may be dst; e may be NULL (the bias only). Each step
 * is the float operation the unfused node does (gpfq_batchnorm2d's folded form, gpfq_add,
 * gpfq_relu), so the results are the same. */
static inline __attribute__((always_inline)) void
gpfq_epilogue_loop(const float *src, float bias, float *dst, size_t count, float alpha, float shift,
                   const float *res, int scale, int add, int relu) {
    for (size_t k = 0; k < count; k++) {
        float t = src[k] + bias;
        if (scale) t = t * alpha + shift;
        if (add) t = t + res[k];
        if (relu) t = gpfq_relu1(t);
        dst[k] = t;
    }
}
/* 1 where e's residual overlaps y[0 .. count): an Add writing over its other operand. The
 * kernels handle a residual that is y itself, element for element, and no other overlap. */
static inline int gpfq_residual_aliases(const gpfq_conv_epilogue *e, const float *y, size_t count) {
    if (!e || !e->residual) return 0;
    const uintptr_t r = (uintptr_t)e->residual, lo = (uintptr_t)y;
    const uintptr_t hi = lo + count * sizeof(float);
    return r + count * sizeof(float) > lo && r < hi;
}
static inline void gpfq_epilogue_run(const gpfq_conv_epilogue *e, int channel, float bias,
                                     const float *src, float *dst, size_t at, size_t count) {
    const int scale = e && e->scale, add = e && e->residual, relu = e && e->relu;
    const float alpha = scale ? e->scale[channel] : 1.0f;
    const float shift = scale ? e->shift[channel] : 0.0f;
    const float *res = add ? e->residual + at : NULL;
    /* one instantiation per combination: each loop is branch-free, and vectorised */
#define GPFQ_EPILOGUE_CASE(S, A, R)                                                                \
    case S * 4 + A * 2 + R:                                                                        \
        gpfq_epilogue_loop(src, bias, dst, count, alpha, shift, res, S, A, R);                     \
        return;
    switch (scale * 4 + add * 2 + relu) {
        GPFQ_EPILOGUE_CASE(0, 0, 0)
        GPFQ_EPILOGUE_CASE(0, 0, 1)
        GPFQ_EPILOGUE_CASE(0, 1, 0)
        GPFQ_EPILOGUE_CASE(0, 1, 1)
        GPFQ_EPILOGUE_CASE(1, 0, 0)
        GPFQ_EPILOGUE_CASE(1, 0, 1)
        GPFQ_EPILOGUE_CASE(1, 1, 0)
        GPFQ_EPILOGUE_CASE(1, 1, 1)
    }
#undef GPFQ_EPILOGUE_CASE
}
void gpfq_relu(const float *x, size_t count, float *y);
void gpfq_add(const float *a, const float *b, size_t count, float *y);

/* C = alpha op(A) op(B) + beta C, all row-major: op(A) is M x K (A itself, or A^T of a K x M
 * A when trans_a), op(B) K x N likewise; beta == 0 means C is not read. Runs gpfq's AVX-512
 * kernel (src/ops/gemm.c) where the CPU has it, else OpenBLAS's cblas_sgemm; single-threaded
 * on the AVX-512 kernel, whose results depend on the operands only. */
void gpfq_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A,
                size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* The triangular products of GPFQ's Gram form, on gpfq's kernel: gpfq_sgemm where part of the
 * work is known to be zero or is not wanted. `off` places the diagonal: element (i, j) of a
 * matrix is on or below it where j <= i + off (0: the main diagonal; a part of a larger
 * product passes its offset, e.g. -n1 for C's columns from n1 on).
 * - GPFQ_TRI_LOWER_A: op(A) (M x K) is zero above its diagonal (off >= 0), and those zeros are
 *   skipped in blocks, so they must be there. C is the full product, summed in gpfq_sgemm's
 *   order with trailing zero terms left out: for a finite B the same values (up to the sign of
 *   a zero sum; 0 x Inf would give NaN in the full product).
 * - GPFQ_TRI_LOWER_C: only C's elements on or below its diagonal are wanted. Those are
 *   gpfq_sgemm's bit for bit; whole 12 x 32 blocks above it are left as they were, and the
 *   rest of a block that straddles it gets its full-product values.
 * On OpenBLAS the full product runs, which satisfies both. */
typedef enum { GPFQ_TRI_NONE, GPFQ_TRI_LOWER_A, GPFQ_TRI_LOWER_C } gpfq_tri;
void gpfq_sgemm_tri(gpfq_tri tri, ptrdiff_t off, int trans_a, int trans_b, size_t M, size_t N,
                    size_t K, float alpha, const float *A, size_t lda, const float *B, size_t ldb,
                    float beta, float *C, size_t ldc);
/* The GEMM kernel: the default is AVX-512 where the CPU has it, or GPFQ_GEMM=openblas|avx512
 * from the environment (read once). */
typedef enum {
    GPFQ_GEMM_AUTO,
    GPFQ_GEMM_OPENBLAS,
    GPFQ_GEMM_AVX512,
} gpfq_gemm_kernel;
gpfq_gemm_kernel gpfq_gemm_get_kernel(void);
/* Sets the kernel for every later call (not thread-safe against running GEMMs); returns the
 * previous one. */
gpfq_gemm_kernel gpfq_gemm_set_kernel(gpfq_gemm_kernel kernel);
const char *gpfq_gemm_kernel_name(gpfq_gemm_kernel kernel);

/* dst (cols x rows) = src (rows x cols) transposed, for any 4-byte element (float, int32_t),
 * in square tiles so that neither side is walked with a stride of a whole row per element. */
void gpfq_transpose32(const void *src, size_t rows, size_t cols, void *dst);
/* The same with row strides: dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols;
 * nothing else of dst is written. */
void gpfq_transpose32_strided(const void *src, size_t lds, size_t rows, size_t cols, void *dst,
                              size_t ldd);

/* Pools: x (n, c, in_h, in_w) -> y (n, c, out_h, out_w); geom.out_c = in_c. */
void gpfq_maxpool2d(const gpfq_conv_geom *g, const float *x, size_t n, float *y);
void gpfq_avgpool2d(const gpfq_conv_geom *g, int count_include_pad, const float *x, size_t n,
                    float *y);
void gpfq_adaptive_avgpool2d(const float *x, size_t n, int c, int in_h, int in_w, int out_h,
                             int out_w, float *y);

#ifdef __cplusplus
}
#endif

#endif
