/*
 * Direct convolution, no dilation or groups, kernels larger than 1x1: stride 1 with any
 * padding up to k - 1, and stride 2 with odd kernels and "same" padding (k-1)/2: every conv
 * of a ResNet or a LeNet but the 1x1 ones, which are GEMMs.
 *
 * im2col + sgemm writes, packs and reads a patch matrix nine times the size of the input;
 * with 16-64 output channels the GEMM does too little work per patch to hide that traffic.
 * Here the input is copied once into a padded buffer and the kernel reads it in place.
 *
 * Layout. Each channel of a chunk of images is laid out as one flat plane: rows of W values
 * followed by P = pad_w zeros, each image followed by R = pad_h zero rows, so image i, row y,
 * column x sits at lead + i*S + y*Wp + x with Wp = W + P and S = (H + R)*Wp. The zero gap after
 * a row is also the left padding of the next, and the zero rows after an image the top padding
 * of the next. Output q = i*S + y*Wp + x then reads tap (ki, kj) at q + ki*Wp + kj: the whole
 * chunk is one 1-D convolution, vectorised along q. Outputs at gap positions are computed and
 * dropped (7% of the work at 28x28, 23% at 7x7). With less padding than (k-1)/2 (a "valid"
 * conv) the layout is the same and fewer outputs per row are kept. Stride 2: see `layout`.
 *
 * Kernel. A block of 4 output channels by PX consecutive q (96 with AVX-512, or 64 where that
 * wastes much less of a chunk's last block; 24 with AVX2)
 * stays in registers while the loop runs over input channels and taps: per tap, PX/width
 * unaligned loads and 4 broadcasts feed 4*PX/width FMAs.
 *
 * Threads. As many as BLAS is set to (openblas_get_num_threads), at most one per 50 MFLOP
 * of the call, each on its own chunks of images with its own buffers, so the evaluation's workers
 * (BLAS at one thread) each run it single-threaded and the calibration pass (BLAS at --threads)
 * uses every thread.
 */
#include "gpfq/ops.h"
#include "gpfq/status.h"

#include "../core/clones.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int openblas_get_num_threads(void);

enum {
    CO_BLOCK = 4,
    MAX_TAPS = 64,                  /* kernels up to 7x7 (and 5x11, ...) */
    CHUNK_BYTES = 768 * 1024,       /* padded input and staged output of a chunk: most of an L2 */
    WINO_MAX_POINTS = 36,           /* Winograd's transformed tile: 4x4 for F(2x2), 6x6 F(4x4) */
    WINO_PLANE_BYTES = 1536 * 1024, /* a Winograd chunk's phase planes */
};

/* A block of tiles is WINO_NV vectors; the products keep WINO_CO output channels by a block in
 * registers (24 of the 32), per input channel WINO_NV loads and WINO_CO broadcasts for 24 FMAs.
 * Blocks of 48 tiles rather than the direct kernel's 96 pixels: a slice of resnet18 has 128
 * tiles at 4x4 with F(2x2), which blocks of 96 would round up to 192; with F(4x4) it has 32,
 * and a block's products run on its used vectors only. */
enum { WINO_LANES = 16, WINO_NV = 3, WINO_PX = WINO_NV * WINO_LANES, WINO_CO = 8, WINO_KC = 64 };

/* Per block, each channel's share of the phase planes, the residual and the output is a few
 * short pieces, and the next channel's lie a plane away: too short a stream for the hardware
 * prefetchers, so the transforms ask for channel c + WINO_AHEAD's lines while on channel c
 * (without it, the first load of a channel had a quarter of the input transform's time and
 * the residual's load a third of the output transform's). The 16 or 36 points of V and M lie
 * WINO_SKEW floats more than a whole point apart: a point is in_c (out_c) x 48 floats, a
 * multiple of 4 kB, the L1's set stride, at 64 channels or a multiple of 64, so the 16 rows a
 * transform reads or writes at once fell in one set of the 12-way L1 (at 32 in two). */
enum { WINO_AHEAD = 4, WINO_SKEW = 16 };

static gpfq_conv_kernel chosen = GPFQ_CONV_AUTO;
static gpfq_winograd_mode winograd = GPFQ_WINOGRAD_AUTO;
static int winograd_tile = 0; /* 0: the rule in gpfq_conv_winograd_tile */
static gpfq_interleave_mode interleave = GPFQ_INTERLEAVE_AUTO;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static gpfq_conv_kernel best_supported(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return GPFQ_CONV_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GPFQ_CONV_AVX2;
    return GPFQ_CONV_IM2COL;
}

static gpfq_conv_kernel clamp_to_cpu(gpfq_conv_kernel k) {
    gpfq_conv_kernel best = best_supported();
    if (k == GPFQ_CONV_AUTO || k > best) return best;
    return k;
}

static void choose_from_env(void) {
    const char *v = getenv("GPFQ_CONV");
    gpfq_conv_kernel k = GPFQ_CONV_AUTO;
    if (v && strcmp(v, "im2col") == 0) k = GPFQ_CONV_IM2COL;
    if (v && strcmp(v, "avx2") == 0) k = GPFQ_CONV_AVX2;
    if (v && strcmp(v, "avx512") == 0) k = GPFQ_CONV_AVX512;
    chosen = clamp_to_cpu(k);
    if (v && *v && k == GPFQ_CONV_AUTO && strcmp(v, "auto") != 0)
        fprintf(stderr,
                "gpfq: warning: GPFQ_CONV='%s' is not auto, im2col, avx2 or avx512; using %s\n", v,
                gpfq_conv_kernel_name(chosen));
    else if (k != GPFQ_CONV_AUTO && chosen != k)
        fprintf(stderr, "gpfq: warning: GPFQ_CONV=%s: this CPU lacks it; using %s\n", v,
                gpfq_conv_kernel_name(chosen));
    const char *tv = getenv("GPFQ_WINOGRAD_TILE");
    if (tv && (strcmp(tv, "2") == 0 || strcmp(tv, "4") == 0))
        winograd_tile = tv[0] - '0';
    else if (tv && *tv && strcmp(tv, "auto") != 0)
        fprintf(stderr, "gpfq: warning: GPFQ_WINOGRAD_TILE='%s' is not 2, 4 or auto; using auto\n",
                tv);
    const char *iv = getenv("GPFQ_INTERLEAVE");
    if (iv && strcmp(iv, "off") == 0)
        interleave = GPFQ_INTERLEAVE_OFF;
    else if (iv && strcmp(iv, "all") == 0)
        interleave = GPFQ_INTERLEAVE_ALL;
    else if (iv && *iv && strcmp(iv, "auto") != 0)
        fprintf(stderr, "gpfq: warning: GPFQ_INTERLEAVE='%s' is not off, auto or all; using auto\n",
                iv);
    const char *wv = getenv("GPFQ_WINOGRAD");
    if (!wv || !*wv || strcmp(wv, "auto") == 0) return;
    if (strcmp(wv, "off") == 0)
        winograd = GPFQ_WINOGRAD_OFF;
    else if (strcmp(wv, "all") == 0)
        winograd = GPFQ_WINOGRAD_ALL;
    else
        fprintf(stderr, "gpfq: warning: GPFQ_WINOGRAD='%s' is not off, auto or all; using auto\n",
                wv);
}

gpfq_conv_kernel gpfq_conv_get_kernel(void) {
    pthread_once(&chosen_once, choose_from_env);
    return chosen;
}

gpfq_conv_kernel gpfq_conv_set_kernel(gpfq_conv_kernel k) {
    gpfq_conv_kernel old = gpfq_conv_get_kernel();
    chosen = clamp_to_cpu(k);
    return old;
}

gpfq_winograd_mode gpfq_conv_get_winograd(void) {
    pthread_once(&chosen_once, choose_from_env);
    return winograd;
}

gpfq_winograd_mode gpfq_conv_set_winograd(gpfq_winograd_mode mode) {
    gpfq_winograd_mode old = gpfq_conv_get_winograd();
    winograd = mode;
    return old;
}

gpfq_interleave_mode gpfq_conv_get_interleave(void) {
    pthread_once(&chosen_once, choose_from_env);
    return interleave;
}

gpfq_interleave_mode gpfq_conv_set_interleave(gpfq_interleave_mode mode) {
    gpfq_interleave_mode old = gpfq_conv_get_interleave();
    interleave = mode;
    return old;
}

const char *gpfq_interleave_mode_name(gpfq_interleave_mode mode) {
    return mode == GPFQ_INTERLEAVE_OFF ? "off" : mode == GPFQ_INTERLEAVE_ALL ? "all" : "auto";
}

int gpfq_conv_set_winograd_tile(int tile) {
    pthread_once(&chosen_once, choose_from_env);
    const int old = winograd_tile;
    winograd_tile = tile == 2 || tile == 4 ? tile : 0;
    return old;
}

const char *gpfq_winograd_mode_name(gpfq_winograd_mode mode) {
    return mode == GPFQ_WINOGRAD_OFF ? "off" : mode == GPFQ_WINOGRAD_ALL ? "all" : "auto";
}

const char *gpfq_conv_kernel_name(gpfq_conv_kernel k) {
    switch (k) {
    case GPFQ_CONV_IM2COL:
        return "im2col+sgemm";
    case GPFQ_CONV_AVX2:
        return "direct AVX2";
    case GPFQ_CONV_AVX512:
        return "direct AVX-512";
    default:
        return "auto";
    }
}

int gpfq_conv_direct_fits(const gpfq_conv_geom *g) {
    if (gpfq_conv_get_kernel() == GPFQ_CONV_IM2COL || g->groups != 1 || g->dilation_h != 1 ||
        g->dilation_w != 1 || g->kernel_h * g->kernel_w > MAX_TAPS || g->stride_h != g->stride_w)
        return 0;
    /* 1x1 convs are GEMMs (after a subsample when strided); one tap per channel is too little
     * work per register block to beat that */
    if (g->kernel_h * g->kernel_w == 1) return 0;
    if (g->stride_h == 1) /* any padding up to k - 1 */
        return g->pad_h < g->kernel_h && g->pad_w < g->kernel_w &&
               g->out_h == g->in_h + 2 * g->pad_h - g->kernel_h + 1 &&
               g->out_w == g->in_w + 2 * g->pad_w - g->kernel_w + 1;
    /* stride 2: odd kernels with "same" padding */
    return g->stride_h == 2 && g->kernel_h % 2 == 1 && g->kernel_w % 2 == 1 &&
           g->pad_h == g->kernel_h / 2 && g->pad_w == g->kernel_w / 2 &&
           g->out_h == (g->in_h + 1) / 2 && g->out_w == (g->in_w + 1) / 2;
}

int gpfq_conv_winograd_fits(const gpfq_conv_geom *g) {
    const gpfq_winograd_mode mode = gpfq_conv_get_winograd();
    if (mode == GPFQ_WINOGRAD_OFF || gpfq_conv_get_kernel() != GPFQ_CONV_AVX512 ||
        !gpfq_conv_direct_fits(g) || g->kernel_h != 3 || g->kernel_w != 3 || g->stride_h != 1 ||
        g->pad_h != 1 || g->pad_w != 1)
        return 0;
    return mode == GPFQ_WINOGRAD_ALL ||
           (g->in_c >= GPFQ_WINOGRAD_MIN_CHANNELS && g->out_c >= GPFQ_WINOGRAD_MIN_CHANNELS);
}

int gpfq_conv_get_winograd_tile(void) {
    pthread_once(&chosen_once, choose_from_env);
    return winograd_tile ? winograd_tile : 4;
}

int gpfq_conv_winograd_tile(const gpfq_conv_geom *g) {
    return gpfq_conv_winograd_fits(g) ? gpfq_conv_get_winograd_tile() : 0;
}

/*
 * Geometry of one chunk's flat planes. A stride-2 conv reads its input as four phase planes per
 * channel (even/odd rows by even/odd columns), each laid out on the output's grid: tap (ki, kj)
 * reads phase ((ki - pad_h) mod 2, (kj - pad_w) mod 2) shifted by floor((ki - pad_h) / 2) rows
 * and floor((kj - pad_w) / 2) columns, a stride-1 read within that plane. Stride 1 is the case
 * of one phase with shifts ki - pad_h.
 */
typedef struct {
    const gpfq_conv_geom *g;
    int stride;
    size_t wp, image_stride, lead;
    size_t images;   /* per chunk */
    size_t q_blocks; /* pixel blocks per chunk */
    size_t px;       /* outputs per pixel block */
    size_t q_len;    /* q_blocks * px */
    size_t phase;    /* floats per phase plane */
    size_t plane;    /* floats per input channel: stride^2 phase planes */
    int co_blocks, taps;
    long offsets[MAX_TAPS];
} layout;

static size_t round_up(size_t v, size_t m) {
    return (v + m - 1) / m * m;
}

/* floor(a / b) for b > 0 and any sign of a; a - b floor(a / b) is then a mod b in 0..b-1 */
static long floor_div(long a, long b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

static void plan_layout(const gpfq_conv_geom *g, size_t n, int px, layout *l) {
    const int s = g->stride_h;
    l->g = g;
    l->stride = s;
    /* the values a phase plane holds per image: the input, or for stride 2 at most the output */
    const size_t content_h = s == 1 ? g->in_h : g->out_h, content_w = s == 1 ? g->in_w : g->out_w;
    l->wp = content_w + g->pad_w;
    l->image_stride = (content_h + g->pad_h) * l->wp;
    l->lead = (size_t)g->pad_h * l->wp + g->pad_w;
    /* a chunk's padded input and staged output stay within CHUNK_BYTES (as far as one image
     * allows): a conv with many more outputs than inputs would stream its staging otherwise */
    size_t co_padded = ((size_t)g->out_c + CO_BLOCK - 1) / CO_BLOCK * CO_BLOCK;
    size_t per_image = ((size_t)g->in_c * s * s + co_padded) * l->image_stride * sizeof(float);
    size_t most = CHUNK_BYTES / (per_image ? per_image : 1);
    if (most < 1) most = 1;
    if (most > n) most = n;
    /* the last pixel block of a chunk is part padding: of the chunk sizes within the budget,
     * take the one that wastes the least of its blocks (7x7 planes waste a third otherwise) */
    l->images = most;
    double best = 0;
    for (size_t images = most; images >= 1 && images * 2 > most; images--) {
        size_t q = images * l->image_stride;
        double used = (double)q / (double)((q + px - 1) / px * px);
        if (used > best + 1e-9) best = used, l->images = images;
    }
    l->q_blocks = (l->images * l->image_stride + px - 1) / px;
    l->px = (size_t)px;
    l->q_len = l->q_blocks * px;
    l->co_blocks = (g->out_c + CO_BLOCK - 1) / CO_BLOCK;
    l->taps = g->kernel_h * g->kernel_w;
    /* tap t reads phase plane phase[t] at offsets[t] past q; a plane must hold the farthest */
    int phase[MAX_TAPS];
    long reach = 0;
    for (int ki = 0; ki < g->kernel_h; ki++)
        for (int kj = 0; kj < g->kernel_w; kj++) {
            int r = ki - g->pad_h, c = kj - g->pad_w, t = ki * g->kernel_w + kj;
            int dy = s == 1 ? r : (int)floor_div(r, 2), dx = s == 1 ? c : (int)floor_div(c, 2);
            phase[t] = s == 1 ? 0 : (r & 1) * 2 + (c & 1);
            l->offsets[t] = (long)((g->pad_h + dy) * l->wp + (g->pad_w + dx));
            if (l->offsets[t] + 1 > reach) reach = l->offsets[t] + 1;
        }
    l->phase = round_up(l->q_len + (size_t)reach + l->lead, 16);
    l->plane = l->phase * s * s;
    for (int t = 0; t < l->taps; t++) l->offsets[t] += (long)(phase[t] * l->phase);
}

/* w (out_c, in_c, kh, kw) -> packed (co_blocks, in_c, taps, CO_BLOCK), zero beyond out_c, or
 * Winograd's (wino_pack): the order depends on the geometry, the kernel and the Winograd mode,
 * not on the batch. */
size_t gpfq_conv2d_packed_floats(const gpfq_conv_geom *g) {
    if (!gpfq_conv_direct_fits(g)) return 0;
    const int tile = gpfq_conv_winograd_tile(g);
    if (tile)
        return (size_t)(tile + 2) * (tile + 2) * round_up((size_t)g->out_c, WINO_CO) * g->in_c;
    return round_up((size_t)g->out_c, CO_BLOCK) * g->in_c * g->kernel_h * g->kernel_w;
}

static void wino_pack(const gpfq_conv_geom *g, const float *w, float *packed);

void gpfq_conv2d_pack(const gpfq_conv_geom *g, const float *w, float *packed) {
    if (gpfq_conv_winograd_fits(g)) {
        wino_pack(g, w, packed);
        return;
    }
    const int co_blocks = (g->out_c + CO_BLOCK - 1) / CO_BLOCK, taps = g->kernel_h * g->kernel_w;
    for (int cb = 0; cb < co_blocks; cb++)
        for (int c = 0; c < g->in_c; c++)
            for (int t = 0; t < taps; t++)
                for (int o = 0; o < CO_BLOCK; o++) {
                    int co = cb * CO_BLOCK + o;
                    size_t at = (((size_t)cb * g->in_c + c) * taps + t) * CO_BLOCK + o;
                    packed[at] = co < g->out_c ? w[((size_t)co * g->in_c + c) * taps + t] : 0.0f;
                }
}

/* The copies around the kernel are built per CPU (GPFQ_CLONES); -ffp-contract=off also keeps
 * the epilogue's multiply-add rounding as the unfused BatchNorm does. */

/* n floats, for rows of a few dozen: whole vector moves, the last one overlapping the one
 * before (a loop would do its remainder one float at a time, memcpy costs a call). Inlined
 * into the per-CPU clones, so the fixed-size copies become that CPU's vector moves. */
static inline void copy_row(float *restrict d, const float *restrict s, size_t n) {
    if (n >= 16) {
        size_t x = 0;
        for (; x + 16 <= n; x += 16) memcpy(d + x, s + x, 16 * sizeof(float));
        if (x < n) memcpy(d + n - 16, s + n - 16, 16 * sizeof(float));
    } else if (n >= 8) {
        memcpy(d, s, 8 * sizeof(float));
        memcpy(d + n - 8, s + n - 8, 8 * sizeof(float));
    } else if (n >= 4) {
        memcpy(d, s, 4 * sizeof(float));
        memcpy(d + n - 4, s + n - 4, 4 * sizeof(float));
    } else {
        for (size_t x = 0; x < n; x++) d[x] = s[x];
    }
}

/* Copies a chunk's images into their places in the planes. The rest (gaps, and for stride 2
 * the phase rows and columns an odd size leaves empty) is never written and stays as cleared
 * once per call; in a last, shorter chunk, the slots past `count` keep earlier images, which
 * only outputs that are dropped read. */
GPFQ_CLONES static void pad_chunk(const layout *l, const float *x, size_t count, float *in) {
    const gpfq_conv_geom *g = l->g;
    const size_t image = (size_t)g->in_c * g->in_h * g->in_w;
    const int s = l->stride;
    for (size_t i = 0; i < count; i++)
        for (int c = 0; c < g->in_c; c++) {
            const float *src = x + i * image + (size_t)c * g->in_h * g->in_w;
            float *dst = in + (size_t)c * l->plane + l->lead + i * l->image_stride;
            if (s == 1) {
                for (int y = 0; y < g->in_h; y++)
                    copy_row(dst + y * l->wp, src + (size_t)y * g->in_w, (size_t)g->in_w);
                continue;
            }
            /* input row y, column x goes to phase (y % s, x % s) at (y / s, x / s); s is 2, or
             * 4 for Winograd's F(4x4, 3x3) */
            for (int y = 0; y < g->in_h; y++) {
                const float *row = src + (size_t)y * g->in_w;
                float *p0 = dst + (size_t)((y % s) * s) * l->phase + (size_t)(y / s) * l->wp;
                float *p1 = p0 + l->phase;
                const int whole = g->in_w / s;
                if (s == 2) {
#pragma GCC ivdep /* the planes and the input do not overlap */
                    for (int b = 0; b < whole; b++) {
                        p0[b] = row[2 * b];
                        p1[b] = row[2 * b + 1];
                    }
                } else {
                    float *p2 = p1 + l->phase, *p3 = p2 + l->phase;
#pragma GCC ivdep
                    for (int b = 0; b < whole; b++) {
                        p0[b] = row[4 * b];
                        p1[b] = row[4 * b + 1];
                        p2[b] = row[4 * b + 2];
                        p3[b] = row[4 * b + 3];
                    }
                }
                for (int col = whole * s; col < g->in_w; col++)
                    p0[(size_t)(col % s) * l->phase + (size_t)(col / s)] = row[col];
            }
        }
}

/* Keeps the real outputs of the staged planes of images first.. first + count - 1, adds the
 * bias and runs the epilogue while the channel is in L1. With a residual, a channel's rows go
 * to `tmp` (a plane's worth of floats) and the epilogue takes them from there to y, so that the
 * residual may be y itself (an Add writing over its other operand, forward.c): each element's
 * residual is read before its output is written. */
GPFQ_CLONES static void unpad_chunk(const layout *l, const float *out, const float *bias,
                                    const gpfq_conv_epilogue *e, size_t first, size_t count,
                                    float *y, float *tmp) {
    const gpfq_conv_geom *g = l->g;
    const size_t pixels = (size_t)g->out_h * g->out_w, ow = (size_t)g->out_w;
    const int staged = e && e->residual;
    for (size_t i = 0; i < count; i++)
        for (int co = 0; co < g->out_c; co++) {
            const float *src = out + (size_t)co * l->q_len + i * l->image_stride;
            const size_t at = ((first + i) * g->out_c + co) * pixels;
            float *dst = y + at, *rows = staged ? tmp : dst;
            for (int r = 0; r < g->out_h; r++)
                copy_row(rows + (size_t)r * ow, src + (size_t)r * l->wp, ow);
            gpfq_epilogue_run(e, co, bias ? bias[co] : 0.0f, rows, dst, at, pixels);
        }
}

/*
 * One kernel, written once for both instruction sets: VEC is the register type, WIDTH its
 * floats, NV the registers per pixel block (PX = NV * WIDTH), P the intrinsics' prefix.
 */
#define DIRECT_KERNEL(NAME, TARGET, VEC, WIDTH, NV, P)                                             \
    __attribute__((target(TARGET))) static void NAME(                                              \
        const layout *l, const float *in, const float *packed, size_t q_blocks, float *out) {      \
        const int in_c = l->g->in_c, taps = l->taps;                                               \
        for (size_t qb = 0; qb < q_blocks; qb++) {                                                 \
            const size_t q0 = qb * (NV) * (WIDTH);                                                 \
            for (int cb = 0; cb < l->co_blocks; cb++) {                                            \
                VEC acc[CO_BLOCK][NV];                                                             \
                for (int o = 0; o < CO_BLOCK; o++)                                                 \
                    for (int v = 0; v < (NV); v++) acc[o][v] = P##_setzero_ps();                   \
                const float *wb = packed + (size_t)cb * in_c * taps * CO_BLOCK;                    \
                for (int c = 0; c < in_c; c++) {                                                   \
                    const float *xc = in + (size_t)c * l->plane + q0;                              \
                    const float *wc = wb + (size_t)c * taps * CO_BLOCK;                            \
                    for (int t = 0; t < taps; t++) {                                               \
                        const float *xt = xc + l->offsets[t];                                      \
                        VEC xv[NV];                                                                \
                        for (int v = 0; v < (NV); v++) xv[v] = P##_loadu_ps(xt + (WIDTH)*v);       \
                        for (int o = 0; o < CO_BLOCK; o++) {                                       \
                            VEC wv = P##_set1_ps(wc[t * CO_BLOCK + o]);                            \
                            for (int v = 0; v < (NV); v++)                                         \
                                acc[o][v] = P##_fmadd_ps(xv[v], wv, acc[o][v]);                    \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
                for (int o = 0; o < CO_BLOCK; o++) {                                               \
                    float *dst = out + (size_t)(cb * CO_BLOCK + o) * l->q_len + q0;                \
                    for (int v = 0; v < (NV); v++) P##_storeu_ps(dst + (WIDTH)*v, acc[o][v]);      \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

/* 24 accumulators of the 32 AVX-512 registers; 12 of AVX2's 16. The 64-pixel AVX-512 kernel
 * (16 accumulators) is for small planes, whose chunks would fill blocks of 96 poorly. */
DIRECT_KERNEL(kernel_avx512, "avx512f", __m512, 16, 6, _mm512)
DIRECT_KERNEL(kernel_avx512_64, "avx512f", __m512, 16, 4, _mm512)
DIRECT_KERNEL(kernel_avx2, "avx2,fma", __m256, 8, 3, _mm256)

/* Threads for a call of `flops` in `chunks` chunks: as many as BLAS is set to, at most one per
 * ~50 MFLOP (a thread started per call costs tens of microseconds) and per chunk. */
static int threads_for(double flops, size_t chunks) {
    int threads = openblas_get_num_threads();
    if (threads > 1 + flops / 50e6) threads = (int)(1 + flops / 50e6);
    if (threads < 1) threads = 1;
    if ((size_t)threads > chunks) threads = (int)chunks;
    if (threads > 64) threads = 64;
    return threads;
}

/* Runs fn on `threads` workers laid out `size` bytes apart, the first on this thread; a worker
 * whose thread cannot start runs here too. */
static void run_workers(void *(*fn)(void *), void *workers, size_t size, int threads) {
    pthread_t ids[64];
    int started = 1;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, fn, (char *)workers + t * size) != 0) break;
        started++;
    }
    for (int t = 0; t < threads; t++)
        if (t == 0 || t >= started) fn((char *)workers + t * size);
    for (int t = 1; t < started; t++) pthread_join(ids[t], NULL);
}

/*
 * Winograd's F(T x T, 3x3) (Lavin and Gray, 2016) for 3x3 stride-1 convs with padding 1, with
 * output tiles of T = 2 or 4. Output tile (th, tw), rows T th.. and columns T tw.., reads the
 * (T+2)x(T+2) window d of the input at rows T th - 1.. and columns T tw - 1..;
 * Y = A^T [(G g G^T) .* (B^T d B)] A gives its T x T outputs with (T+2)^2 products per
 * channel pair where the direct kernel does 9 T^2: 16 against 36 at T = 2, 36 against 144 at
 * T = 4. The products are (T+2)^2 matrix products M[p] (out_c x tiles) = U[p] (out_c x in_c)
 * V[p] (in_c x tiles), run by a GEMM micro-kernel of the direct kernel's kind (wino_gemm); the
 * transforms around them are additions and multiply-adds by small constants on whole vectors.
 * T = 4 rounds a little less exactly (its constants reach 8 and 1/24): still within the
 * tests' tolerance against the double-accumulating reference.
 *
 * The windows start at every T-th row and column, so the input goes into the T^2 phase planes
 * of a stride-T split on the grid of tiles (pad_chunk): window value (r, c) is then a plain
 * read at a fixed offset. Tiles are numbered without the planes' gaps (image, tile row, tile
 * column), so the products waste no work on gaps, and run in blocks of WINO_PX tiles: per
 * block, the input transform of its tiles for every input channel, the products, then the
 * output transform, which writes the outputs into y and runs the epilogue on them.
 */

typedef struct {
    layout pl; /* the phase planes (pad_chunk's stride-T split): rows of `cols` tiles, no gaps */
    const gpfq_conv_geom *g;
    int tile, side, points;        /* T, T + 2 (the window's side), (T + 2)^2 */
    size_t co_pad;                 /* out_c rounded up to WINO_CO */
    size_t rows, cols, tiles;      /* tile rows and columns per image, tiles per image */
    size_t v_point, m_point;       /* floats from one point's V, M to the next's */
    long offsets[WINO_MAX_POINTS]; /* window value (r, c) of tile t: t + offsets[r * side + c] */
} wino_plan;

static void wino_plan_make(const gpfq_conv_geom *g, size_t n, int threads, wino_plan *w) {
    w->g = g;
    w->tile = gpfq_conv_winograd_tile(g);
    w->side = w->tile + 2;
    w->points = w->side * w->side;
    const size_t T = (size_t)w->tile;
    w->rows = ((size_t)g->out_h + T - 1) / T;
    w->cols = ((size_t)g->out_w + T - 1) / T;
    w->tiles = w->rows * w->cols;
    w->co_pad = round_up((size_t)g->out_c, WINO_CO);
    w->v_point = (size_t)g->in_c * WINO_PX + WINO_SKEW;
    w->m_point = w->co_pad * WINO_PX + WINO_SKEW;
    /* the phase planes of a chunk within WINO_PLANE_BYTES (a 7x7 conv's hold a whole slice);
     * of the chunk sizes within it, the one that gives the busiest thread the fewest blocks
     * of tiles (one thread: the fewest blocks in all), the larger of equals */
    size_t per_image = (size_t)g->in_c * T * T * w->tiles * sizeof(float);
    size_t most = WINO_PLANE_BYTES / (per_image ? per_image : 1);
    if (most > n) most = n;
    if (most < 1) most = 1;
    size_t images = most, fewest = SIZE_MAX;
    for (size_t k = most; k >= 1; k--) {
        const size_t chunks = (n + k - 1) / k, last = n - (chunks - 1) * k;
        const size_t full = (k * w->tiles + WINO_PX - 1) / WINO_PX;
        const size_t blocks = threads > 1
                                  ? (chunks + threads - 1) / threads * full
                                  : (chunks - 1) * full + (last * w->tiles + WINO_PX - 1) / WINO_PX;
        if (blocks < fewest) fewest = blocks, images = k;
    }
    /* a window reaches one tile row and column either way; lead and tail keep those reads in
     * the plane (the values read there are masked off) */
    layout *l = &w->pl;
    *l = (layout){.g = g, .stride = w->tile, .wp = w->cols, .image_stride = w->tiles};
    l->lead = w->cols + 1;
    l->images = images;
    l->phase = round_up(l->lead + images * w->tiles + w->cols + 1 + WINO_LANES, 16);
    l->plane = T * T * l->phase;
    /* window row r is input row T th - 1 + r: phase (r - 1) mod T, tile row th + floor((r-1)/T) */
    const long t = w->tile;
    for (long r = 0; r < w->side; r++)
        for (long c = 0; c < w->side; c++) {
            const long phase =
                (r - 1 - t * floor_div(r - 1, t)) * t + (c - 1 - t * floor_div(c - 1, t));
            w->offsets[r * w->side + c] = phase * (long)l->phase + (long)l->lead +
                                          floor_div(r - 1, t) * (long)w->cols + floor_div(c - 1, t);
        }
}

/* G of F(2x2, 3x3) (interpolation points 0, 1, -1, infinity) and of F(4x4, 3x3) (0, 1, -1,
 * 2, -2, infinity); B^T and A^T are in wino_input and wino_output */
static const double wino_g2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double wino_g4[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};

/* U = G g G^T of WINO_CO channel pairs at once (k[j][o]: tap j of pair o), point p's values
 * to out[p * stride ..]. Inlined with constant G and side, so the products by G's ones fold
 * away (those by its zeros stay: 0 * x is not 0 for every x), and the loops over the pairs
 * become vector operations on doubles. */
__attribute__((always_inline)) static inline void wino_pack_pairs(const double k[9][WINO_CO],
                                                                  const double G[][3],
                                                                  const int side, float *out,
                                                                  size_t stride) {
    double t[6][3][WINO_CO]; /* G g */
    for (int r = 0; r < side; r++)
        for (int j = 0; j < 3; j++)
            for (int o = 0; o < WINO_CO; o++)
                t[r][j][o] = G[r][0] * k[j][o] + G[r][1] * k[3 + j][o] + G[r][2] * k[6 + j][o];
    for (int r = 0; r < side; r++) /* (G g) G^T */
        for (int j = 0; j < side; j++)
            for (int o = 0; o < WINO_CO; o++)
                out[(r * side + j) * stride + o] =
                    (float)(t[r][0][o] * G[j][0] + t[r][1][o] * G[j][1] + t[r][2][o] * G[j][2]);
}

/* U[p] = (G g G^T)[p] per channel pair, computed in double, in the order wino_gemm reads
 * them: per point, per slice of WINO_KC input channels, (out_c / WINO_CO, the slice's
 * channels, WINO_CO), so that a slice's products stream one contiguous panel. The points lie
 * per_point apart, often a multiple of 4 kB: one store per point and pair would hit one set of
 * the L1. Per output block, runs of up to PACK_RUN input channels (within one slice) are
 * transformed into `run`, then copied out point by point. */
GPFQ_CLONES static void wino_pack(const gpfq_conv_geom *g, const float *w, float *packed) {
    const size_t co_pad = round_up((size_t)g->out_c, WINO_CO), per_point = co_pad * g->in_c;
    const int side = gpfq_conv_winograd_tile(g) + 2;
    enum { PACK_RUN = 16 };
    float run[WINO_MAX_POINTS][PACK_RUN * WINO_CO];
    for (size_t cb = 0; cb < co_pad / WINO_CO; cb++)
        for (size_t c0 = 0; c0 < (size_t)g->in_c; c0 += WINO_KC) {
            const size_t kc = g->in_c - c0 < WINO_KC ? g->in_c - c0 : WINO_KC;
            for (size_t r0 = 0; r0 < kc; r0 += PACK_RUN) {
                const size_t len = kc - r0 < PACK_RUN ? kc - r0 : PACK_RUN;
                for (size_t i = 0; i < len; i++) {
                    double k[9][WINO_CO];
                    for (size_t o = 0; o < WINO_CO; o++) {
                        const size_t co = cb * WINO_CO + o, c = c0 + r0 + i;
                        for (int j = 0; j < 9; j++)
                            k[j][o] = co < (size_t)g->out_c ? w[(co * g->in_c + c) * 9 + j] : 0.0;
                    }
                    if (side == 4)
                        wino_pack_pairs(k, wino_g2, 4, &run[0][i * WINO_CO], PACK_RUN * WINO_CO);
                    else
                        wino_pack_pairs(k, wino_g4, 6, &run[0][i * WINO_CO], PACK_RUN * WINO_CO);
                }
                float *at = packed + c0 * co_pad + (cb * kc + r0) * WINO_CO;
                for (int p = 0; p < side * side; p++)
                    memcpy(at + p * per_point, run[p], len * WINO_CO * sizeof(float));
            }
        }
}

/* A run of tiles of one tile row within one vector of WINO_LANES tiles of a block */
typedef struct {
    size_t image;    /* within the chunk */
    int lane, count; /* its first tile's lane in its vector; tiles */
    int row, col;    /* of its first tile */
} wino_run;

/* a block's runs, by vector: vector k's are runs[first[k]] .. runs[first[k + 1] - 1]; and per
 * vector and neighbour (dy, dx) in -1..1, the lanes whose tile has that neighbour in its image */
typedef struct {
    wino_run runs[WINO_PX];
    int first[WINO_PX / WINO_LANES + 1];
    int vectors;
    __mmask16 inside[WINO_PX / WINO_LANES][3][3];
} wino_runs;

static void wino_split(const wino_plan *w, size_t t0, size_t t1, wino_runs *r) {
    int n = 0;
    r->vectors = (int)((t1 - t0 + WINO_LANES - 1) / WINO_LANES);
    memset(r->inside, 0, sizeof r->inside);
    for (int k = 0; k < r->vectors; k++) {
        r->first[k] = n;
        const size_t end = t0 + (size_t)(k + 1) * WINO_LANES < t1 ? t0 + (k + 1) * WINO_LANES : t1;
        for (size_t t = t0 + (size_t)k * WINO_LANES; t < end;) {
            size_t image = t / w->tiles, at = t % w->tiles, row = at / w->cols, col = at % w->cols;
            size_t count = w->cols - col < end - t ? w->cols - col : end - t;
            r->runs[n++] =
                (wino_run){image, (int)((t - t0) % WINO_LANES), (int)count, (int)row, (int)col};
            for (size_t i = 0; i < count; i++)
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        const long y = (long)row + dy, x = (long)(col + i) + dx;
                        if (y >= 0 && y < (long)w->rows && x >= 0 && x < (long)w->cols)
                            r->inside[k][dy + 1][dx + 1] |=
                                (__mmask16)(1u << ((t - t0 + i) % WINO_LANES));
                    }
            t += count;
        }
    }
    r->first[r->vectors] = n;
}

static void wino_input(const wino_plan *w, const float *planes, size_t t0, const wino_runs *r,
                       float *v);
static void wino_gemm(const wino_plan *w, const float *packed, const float *v, int vectors,
                      float *m);
static void wino_output(const wino_plan *w, const float *bias, const gpfq_conv_epilogue *e,
                        size_t first, const wino_runs *r, const float *m, float *y);

/* tiles t0 .. t1 - 1 of the chunk whose first image is image `first` of the call */
static void wino_block(const wino_plan *w, const float *planes, const float *packed,
                       const float *bias, const gpfq_conv_epilogue *e, size_t first, size_t t0,
                       size_t t1, float *v, float *m, float *y) {
    wino_runs r;
    wino_split(w, t0, t1, &r); /* a last, short block: the products skip its unused vectors */
    wino_input(w, planes, t0, &r, v);
    wino_gemm(w, packed, v, r.vectors, m);
    wino_output(w, bias, e, first, &r, m, y);
}

/* V = B^T d B, F(2x2): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], on whole vectors of
 * tiles: each window value is one load from the planes, the lanes whose value lies outside the
 * image (padding) masked to zero */
__attribute__((target("avx512f"), noinline)) static void
wino_input2(const wino_plan *w, const float *planes, size_t t0, const wino_runs *r, float *v) {
    const size_t in_c = (size_t)w->g->in_c;
    const size_t span = (size_t)r->vectors * WINO_LANES + 1;
    for (size_t c = 0; c < in_c; c++) {
        const float *pc = planes + c * w->pl.plane + t0;
        if (c + WINO_AHEAD < in_c) {
            const float *next = pc + WINO_AHEAD * w->pl.plane;
            for (int j = 0; j < 16; j += (j & 1) ? 3 : 1)
                for (size_t x = 0; x < span + 15; x += 16)
                    __builtin_prefetch(next + w->offsets[j] + x, 0, 3);
        }
        for (int k = 0; k < r->vectors; k++) {
            __m512 d[16], u[16];
            /* window row r reads tile row th + floor((r - 1) / 2): dy = -1, 0, 0, 1 */
            static const int reach[4] = {0, 1, 1, 2};
            for (int j = 0; j < 16; j++)
                d[j] = _mm512_maskz_loadu_ps(r->inside[k][reach[j / 4]][reach[j % 4]],
                                             pc + k * WINO_LANES + w->offsets[j]);
            for (int j = 0; j < 4; j++) {
                u[0 + j] = _mm512_sub_ps(d[0 + j], d[8 + j]);
                u[4 + j] = _mm512_add_ps(d[4 + j], d[8 + j]);
                u[8 + j] = _mm512_sub_ps(d[8 + j], d[4 + j]);
                u[12 + j] = _mm512_sub_ps(d[4 + j], d[12 + j]);
            }
            float *dst = v + c * WINO_PX + (size_t)k * WINO_LANES;
            const size_t point = w->v_point;
            for (int i = 0; i < 4; i++) {
                const __m512 *ui = u + i * 4;
                _mm512_storeu_ps(dst + (i * 4 + 0) * point, _mm512_sub_ps(ui[0], ui[2]));
                _mm512_storeu_ps(dst + (i * 4 + 1) * point, _mm512_add_ps(ui[1], ui[2]));
                _mm512_storeu_ps(dst + (i * 4 + 2) * point, _mm512_sub_ps(ui[2], ui[1]));
                _mm512_storeu_ps(dst + (i * 4 + 3) * point, _mm512_sub_ps(ui[1], ui[3]));
            }
        }
    }
}

/* o = B^T x for F(4x4): B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
 * 0 2 -1 -2 1 0; 0 4 0 -5 0 1] */
__attribute__((target("avx512f"))) static inline void wino_bt6(const __m512 x[6], __m512 o[6]) {
    const __m512 four = _mm512_set1_ps(4.0f), two = _mm512_set1_ps(2.0f);
    const __m512 x42 = _mm512_sub_ps(x[4], x[2]);
    const __m512 a = _mm512_fnmadd_ps(four, x[2], x[4]); /* x4 - 4 x2 */
    const __m512 b = _mm512_fnmadd_ps(four, x[1], x[3]); /* x3 - 4 x1 */
    const __m512 c = _mm512_mul_ps(two, _mm512_sub_ps(x[3], x[1]));
    o[0] = _mm512_fmadd_ps(four, _mm512_sub_ps(x[0], x[2]), x42);
    o[1] = _mm512_add_ps(a, b);
    o[2] = _mm512_sub_ps(a, b);
    o[3] = _mm512_add_ps(x42, c);
    o[4] = _mm512_sub_ps(x42, c);
    o[5] = _mm512_fmadd_ps(four, _mm512_sub_ps(x[1], x[3]), _mm512_sub_ps(x[5], x[3]));
}

/* V = B^T d B for F(4x4), as wino_input2: B^T down the window's columns, then along its rows */
__attribute__((target("avx512f"), noinline)) static void
wino_input4(const wino_plan *w, const float *planes, size_t t0, const wino_runs *r, float *v) {
    const size_t in_c = (size_t)w->g->in_c;
    const size_t span = (size_t)r->vectors * WINO_LANES + 1;
    /* window row r reads tile row th + floor((r - 1) / 4): dy = -1, 0, 0, 0, 0, 1 */
    static const int reach[6] = {0, 1, 1, 1, 1, 2};
    for (size_t c = 0; c < in_c; c++) {
        const float *pc = planes + c * w->pl.plane + t0;
        if (c + WINO_AHEAD < in_c) { /* the 16 phase planes, at dy = dx = 0 */
            const float *next = pc + WINO_AHEAD * w->pl.plane;
            for (int i = 1; i <= 4; i++)
                for (int j = 1; j <= 4; j++)
                    for (size_t x = 0; x < span + 15; x += 16)
                        __builtin_prefetch(next + w->offsets[i * 6 + j] + x, 0, 3);
        }
        for (int k = 0; k < r->vectors; k++) {
            __m512 u[36];
            for (int j = 0; j < 6; j++) {
                __m512 d[6], o[6];
                for (int i = 0; i < 6; i++)
                    d[i] = _mm512_maskz_loadu_ps(r->inside[k][reach[i]][reach[j]],
                                                 pc + k * WINO_LANES + w->offsets[i * 6 + j]);
                wino_bt6(d, o);
                for (int i = 0; i < 6; i++) u[i * 6 + j] = o[i];
            }
            float *dst = v + c * WINO_PX + (size_t)k * WINO_LANES;
            const size_t point = w->v_point;
            for (int i = 0; i < 6; i++) {
                __m512 o[6];
                wino_bt6(u + i * 6, o);
                for (int j = 0; j < 6; j++) _mm512_storeu_ps(dst + (i * 6 + j) * point, o[j]);
            }
        }
    }
}

static void wino_input(const wino_plan *w, const float *planes, size_t t0, const wino_runs *r,
                       float *v) {
    if (w->tile == 4)
        wino_input4(w, planes, t0, r, v);
    else
        wino_input2(w, planes, t0, r, v);
}

/* M[p] = U[p] V[p] for the (T+2)^2 points, on the first NV vectors of tiles of the block (a
 * constant once inlined: a slice of 32 4x4 images is 32 tiles at T = 4, two thirds of a block).
 * Reading all of V[p] (in_c x WINO_PX floats, up to 98 kB) once per block of output channels
 * would stream it from L2; the input channels run in slices of WINO_KC instead, whose 12 kB of
 * V stay in L1 for every output block. */
__attribute__((target("avx512f"), always_inline)) static inline void
wino_gemm_nv(const wino_plan *w, const float *packed, const float *v, float *m, const int NV) {
    const size_t in_c = (size_t)w->g->in_c, co_pad = w->co_pad;
    for (int p = 0; p < w->points; p++) {
        const float *vp = v + p * w->v_point, *up = packed + p * co_pad * in_c;
        float *mp = m + p * w->m_point;
        for (size_t c0 = 0; c0 < in_c; c0 += WINO_KC) {
            const size_t kc = in_c - c0 < WINO_KC ? in_c - c0 : WINO_KC;
            for (size_t cb = 0; cb < co_pad / WINO_CO; cb++) {
                float *dst = mp + cb * WINO_CO * WINO_PX;
                __m512 acc[WINO_CO][WINO_NV];
                for (int o = 0; o < WINO_CO; o++)
                    for (int j = 0; j < NV; j++)
                        acc[o][j] =
                            c0 ? _mm512_loadu_ps(dst + o * WINO_PX + 16 * j) : _mm512_setzero_ps();
                const float *u = up + c0 * co_pad + cb * kc * WINO_CO;
                const float *x = vp + c0 * WINO_PX;
                for (size_t c = 0; c < kc; c++, u += WINO_CO, x += WINO_PX) {
                    /* the next output block's panel follows this one; at 512 channels the
                     * transformed weights (16 MB with F(2x2), 38 MB with F(4x4)) come from
                     * beyond L2 */
                    if (!(c & 1)) __builtin_prefetch(u + kc * WINO_CO, 0, 3);
                    __m512 xv[WINO_NV];
                    for (int j = 0; j < NV; j++) xv[j] = _mm512_loadu_ps(x + 16 * j);
                    for (int o = 0; o < WINO_CO; o++) {
                        __m512 wv = _mm512_set1_ps(u[o]);
                        for (int j = 0; j < NV; j++)
                            acc[o][j] = _mm512_fmadd_ps(xv[j], wv, acc[o][j]);
                    }
                }
                for (int o = 0; o < WINO_CO; o++)
                    for (int j = 0; j < NV; j++)
                        _mm512_storeu_ps(dst + o * WINO_PX + 16 * j, acc[o][j]);
            }
        }
    }
}

_Static_assert(WINO_NV == 3, "wino_gemm has a case for each vector count");
__attribute__((target("avx512f"), noinline)) static void
wino_gemm(const wino_plan *w, const float *packed, const float *v, int vectors, float *m) {
    if (vectors == 1)
        wino_gemm_nv(w, packed, v, m, 1);
    else if (vectors == 2)
        wino_gemm_nv(w, packed, v, m, 2);
    else
        wino_gemm_nv(w, packed, v, m, 3);
}

/* ReLU as gpfq_relu1: +0 for x <= 0 (-0 included), NaN kept */
__attribute__((target("avx512f"))) static inline __m512 relu16(__m512 t) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_GT_OQ) |
                                   _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q),
                               t);
}

/* o = A^T x for F(4x4): A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1] */
__attribute__((target("avx512f"))) static inline void wino_at6(const __m512 x[6], __m512 o[4]) {
    const __m512 a = _mm512_add_ps(x[1], x[2]), b = _mm512_sub_ps(x[1], x[2]);
    const __m512 c = _mm512_add_ps(x[3], x[4]), d = _mm512_sub_ps(x[3], x[4]);
    o[0] = _mm512_add_ps(_mm512_add_ps(x[0], a), c);
    o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d, b);
    o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), c, a);
    o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d, b), x[5]);
}

/* Output row a of the tiles of vector k, channel co: R holds T vectors, the value of tile
 * lane l, column j at flat index T l + j. Each run's outputs are moved to lane 0 and stored in
 * its row, the residual added and the ReLU after it. */
__attribute__((target("avx512f"))) static inline void
wino_store(const wino_plan *w, const gpfq_conv_epilogue *e, size_t first, const wino_runs *r, int k,
           int co, int a, const __m512 *R, float *y) {
    const gpfq_conv_geom *g = w->g;
    const int T = w->tile, residual = e && e->residual, relu = e && e->relu;
    const size_t pixels = (size_t)g->out_h * g->out_w;
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int i = r->first[k]; i < r->first[k + 1]; i++) {
        const wino_run *run = &r->runs[i];
        if (T * run->row + a >= g->out_h) continue;
        const int out_col = T * run->col;
        int cols = T * run->count;
        if (cols > g->out_w - out_col) cols = g->out_w - out_col;
        const size_t at = ((first + run->image) * g->out_c + co) * pixels +
                          (size_t)(T * run->row + a) * g->out_w + out_col;
        for (int part = 0; part * 16 < cols; part++) {
            const int n = cols - part * 16 < 16 ? cols - part * 16 : 16;
            const __mmask16 mask = (__mmask16)((1u << n) - 1);
            /* the run's values from flat index f on: vector f / 16 and the one after it */
            const int f = T * run->lane + 16 * part, v = f / 16;
            const __m512i idx = _mm512_add_epi32(iota, _mm512_set1_epi32(f % 16));
            __m512 t = _mm512_permutex2var_ps(R[v], idx, R[v + 1 < T ? v + 1 : v]);
            if (co + WINO_AHEAD < g->out_c) {
                const size_t ahead = at + 16 * part + WINO_AHEAD * pixels;
                if (residual) {
                    __builtin_prefetch(e->residual + ahead, 0, 3);
                    __builtin_prefetch(e->residual + ahead + n - 1, 0, 3);
                }
                __builtin_prefetch(y + ahead, 1, 3);
                __builtin_prefetch(y + ahead + n - 1, 1, 3);
            }
            if (residual) {
                t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mask, e->residual + at + 16 * part));
                if (relu) t = relu16(t);
            }
            _mm512_mask_storeu_ps(y + at + 16 * part, mask, t);
        }
    }
}

/* Y = A^T M A on whole vectors of tiles, A^T = [1 1 1 0; 0 1 -1 -1] for F(2x2) (wino_at6's
 * for F(4x4)); a tile's T output columns interleave (wino_store). The epilogue does
 * gpfq_epilogue_run's float operations in the same order: bias, BatchNorm and (without a
 * residual) ReLU on whole vectors, the residual and the ReLU after it per run. */
__attribute__((target("avx512f"), noinline)) static void
wino_output(const wino_plan *w, const float *bias, const gpfq_conv_epilogue *e, size_t first,
            const wino_runs *r, const float *m, float *y) {
    const gpfq_conv_geom *g = w->g;
    const size_t point = w->m_point;
    const int T = w->tile;
    /* two vectors' values interleaved by 1 (lanes 0-7's, 8-15's), or by 2 */
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi =
        _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512i lo2 = _mm512_set_epi32(23, 22, 7, 6, 21, 20, 5, 4, 19, 18, 3, 2, 17, 16, 1, 0);
    const __m512i hi2 =
        _mm512_set_epi32(31, 30, 15, 14, 29, 28, 13, 12, 27, 26, 11, 10, 25, 24, 9, 8);
    const int scale = e && e->scale, residual = e && e->residual, relu = e && e->relu;
    for (int co = 0; co < g->out_c; co++) {
        const __m512 b = _mm512_set1_ps(bias ? bias[co] : 0.0f);
        const __m512 alpha = _mm512_set1_ps(scale ? e->scale[co] : 1.0f);
        const __m512 shift = _mm512_set1_ps(scale ? e->shift[co] : 0.0f);
        for (int k = 0; k < r->vectors; k++) {
            const float *src = m + co * WINO_PX + (size_t)k * WINO_LANES;
            __m512 out[4][4]; /* output row, column */
            if (T == 2) {
                __m512 s[2][4];
                for (int j = 0; j < 4; j++) {
                    __m512 m0 = _mm512_loadu_ps(src + (0 + j) * point);
                    __m512 m1 = _mm512_loadu_ps(src + (4 + j) * point);
                    __m512 m2 = _mm512_loadu_ps(src + (8 + j) * point);
                    __m512 m3 = _mm512_loadu_ps(src + (12 + j) * point);
                    s[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                    s[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                }
                for (int a = 0; a < 2; a++) {
                    out[a][0] = _mm512_add_ps(_mm512_add_ps(s[a][0], s[a][1]), s[a][2]);
                    out[a][1] = _mm512_sub_ps(_mm512_sub_ps(s[a][1], s[a][2]), s[a][3]);
                }
            } else {
                __m512 s[4][6];
                for (int j = 0; j < 6; j++) {
                    __m512 x[6], o[4];
                    for (int i = 0; i < 6; i++) x[i] = _mm512_loadu_ps(src + (i * 6 + j) * point);
                    wino_at6(x, o);
                    for (int a = 0; a < 4; a++) s[a][j] = o[a];
                }
                for (int a = 0; a < 4; a++) wino_at6(s[a], out[a]);
            }
            for (int a = 0; a < T; a++) {
                for (int j = 0; j < T; j++) {
                    out[a][j] = _mm512_add_ps(out[a][j], b);
                    if (scale) out[a][j] = _mm512_add_ps(_mm512_mul_ps(out[a][j], alpha), shift);
                    if (relu && !residual) out[a][j] = relu16(out[a][j]);
                }
                __m512 R[4];
                if (T == 2) {
                    R[0] = _mm512_permutex2var_ps(out[a][0], lo, out[a][1]); /* lanes 0-7's */
                    R[1] = _mm512_permutex2var_ps(out[a][0], hi, out[a][1]); /* lanes 8-15's */
                } else {
                    const __m512 lo01 = _mm512_permutex2var_ps(out[a][0], lo, out[a][1]);
                    const __m512 hi01 = _mm512_permutex2var_ps(out[a][0], hi, out[a][1]);
                    const __m512 lo23 = _mm512_permutex2var_ps(out[a][2], lo, out[a][3]);
                    const __m512 hi23 = _mm512_permutex2var_ps(out[a][2], hi, out[a][3]);
                    R[0] = _mm512_permutex2var_ps(lo01, lo2, lo23); /* lanes 0-3's */
                    R[1] = _mm512_permutex2var_ps(lo01, hi2, lo23); /* 4-7 */
                    R[2] = _mm512_permutex2var_ps(hi01, lo2, hi23); /* 8-11 */
                    R[3] = _mm512_permutex2var_ps(hi01, hi2, hi23); /* 12-15 */
                }
                wino_store(w, e, first, r, k, co, a, R, y);
            }
        }
    }
}

typedef struct {
    const wino_plan *w;
    const float *x, *packed, *bias;
    const gpfq_conv_epilogue *epilogue;
    float *y;
    size_t n, first_chunk, chunk_step;
    float *planes, *v, *m; /* this worker's phase planes and transformed tiles */
} wino_worker;

static void *run_wino_worker(void *arg) {
    wino_worker *ww = arg;
    const wino_plan *w = ww->w;
    const gpfq_conv_geom *g = w->g;
    const size_t in_image = (size_t)g->in_c * g->in_h * g->in_w, images = w->pl.images;
    memset(ww->planes, 0, sizeof(float) * w->pl.plane * g->in_c);
    for (size_t k = ww->first_chunk; k * images < ww->n; k += ww->chunk_step) {
        size_t first = k * images;
        size_t count = ww->n - first < images ? ww->n - first : images;
        pad_chunk(&w->pl, ww->x + first * in_image, count, ww->planes);
        const size_t tiles = count * w->tiles;
        for (size_t t0 = 0; t0 < tiles; t0 += WINO_PX)
            wino_block(w, ww->planes, ww->packed, ww->bias, ww->epilogue, first, t0,
                       t0 + WINO_PX < tiles ? t0 + WINO_PX : tiles, ww->v, ww->m, ww->y);
    }
    return NULL;
}

static int wino_conv(const gpfq_conv_geom *g, const float *x, const float *weight,
                     const float *prepacked, const float *bias, const gpfq_conv_epilogue *epilogue,
                     size_t n, float *y) {
    wino_plan w;
    const double flops = 2.0 * n * g->out_c * g->out_h * g->out_w * g->in_c * 9;
    wino_plan_make(g, n, threads_for(flops, n), &w);
    const size_t chunks = (n + w.pl.images - 1) / w.pl.images;
    const int threads = threads_for(flops, chunks);
    const size_t packed_floats = prepacked ? 0 : gpfq_conv2d_packed_floats(g);
    const size_t plane_floats = w.pl.plane * g->in_c;
    const size_t v_floats = (size_t)w.points * w.v_point;
    const size_t m_floats = (size_t)w.points * w.m_point;
    const size_t per_thread = plane_floats + v_floats + m_floats;
    float *own =
        gpfq_work_take(GPFQ_WORK_CONV, sizeof(float) * (packed_floats + threads * per_thread));
    if (!own) return -1;
    if (!prepacked) wino_pack(g, weight, own);
    wino_worker workers[64];
    float *next = own + packed_floats;
    for (int t = 0; t < threads; t++, next += per_thread)
        workers[t] = (wino_worker){&w,
                                   x,
                                   prepacked ? prepacked : own,
                                   bias,
                                   epilogue,
                                   y,
                                   n,
                                   (size_t)t,
                                   (size_t)threads,
                                   next,
                                   next + plane_floats,
                                   next + plane_floats + v_floats};
    run_workers(run_wino_worker, workers, sizeof workers[0], threads);
    gpfq_work_give(GPFQ_WORK_CONV, own);
    return 0;
}

/*
 * The image-interleaved kernel, for small planes. The flat planes compute an output at every
 * position of the padded plane and drop those in the gaps: LeNet-5's conv2 (5x5, unpadded,
 * 14x14 -> 10x10) keeps 100 of 196. Here a chunk is IL_LANES = 16 images side by side: value
 * (c, row, col) of image i sits at ((c * hp + row) * wp + col) * 16 + i of the padded input,
 * so that a vector holds one position of 16 images, and output (co, y, x) likewise. A block
 * is NP outputs of one row by CO channels, CO x NP accumulators in registers; per tap, NP
 * aligned loads and CO broadcasts feed CO * NP FMAs, and every computed output is kept (a
 * row whose width is no multiple of NP ends on a block that overlaps the one before, and
 * computes a few outputs twice, the same values). Each output sums over the input channels,
 * then the taps, in the direct kernel's order, with the same weights (its packing): the two
 * kernels give the same bits. The chunk goes in and out of NCHW through 16x16 register
 * transposes; the epilogue, and a 2x2 max pool after it, run on whole vectors before the
 * output transpose, so that a pooled conv transposes a quarter of its outputs.
 */
enum { IL_LANES = 16, IL_CHUNK_BYTES = 6 << 20 };

typedef struct {
    int co, np;
} il_shape;
/* the register blocks compiled: 20 or 24 accumulators of the 32 registers */
static const il_shape il_shapes[] = {{4, 6}, {6, 4}, {4, 5}, {8, 3}};
enum { IL_SHAPES = sizeof il_shapes / sizeof il_shapes[0] };

typedef struct {
    const gpfq_conv_geom *g;
    int shape;                    /* index into il_shapes */
    int co_blocks, x_blocks;      /* blocks of CO channels, and of NP outputs per row */
    size_t hp, wp;                /* the padded input's rows and columns */
    size_t in_floats, out_floats; /* a chunk's padded input and outputs */
} il_layout;

/* The block that computes the fewest outputs for g (the most accumulators on a tie), or -1
 * when no block fits a row. */
static int il_pick_shape(const gpfq_conv_geom *g) {
    int best = -1;
    size_t best_work = 0;
    for (int k = 0; k < IL_SHAPES; k++) {
        const int co = il_shapes[k].co, np = il_shapes[k].np;
        if (np > g->out_w) continue;
        const size_t work =
            round_up((size_t)g->out_c, (size_t)co) * round_up((size_t)g->out_w, (size_t)np);
        if (best < 0 || work < best_work ||
            (work == best_work && co * np > il_shapes[best].co * il_shapes[best].np))
            best = k, best_work = work;
    }
    return best;
}

static int il_plan(const gpfq_conv_geom *g, il_layout *l) {
    const int k = il_pick_shape(g);
    if (k < 0) return 0;
    const int s = g->stride_h, co = il_shapes[k].co, np = il_shapes[k].np;
    l->g = g;
    l->shape = k;
    l->co_blocks = (g->out_c + co - 1) / co;
    l->x_blocks = (g->out_w + np - 1) / np;
    /* the rows and columns the taps reach, and at least the padded input's */
    const size_t reach_h = (size_t)(g->out_h - 1) * s + g->kernel_h;
    const size_t reach_w = (size_t)(g->out_w - 1) * s + g->kernel_w;
    const size_t in_h = (size_t)g->in_h + g->pad_h, in_w = (size_t)g->in_w + g->pad_w;
    l->hp = reach_h > in_h ? reach_h : in_h;
    l->wp = reach_w > in_w ? reach_w : in_w;
    l->in_floats = (size_t)g->in_c * l->hp * l->wp * IL_LANES;
    l->out_floats = (size_t)l->co_blocks * co * g->out_h * g->out_w * IL_LANES;
    return 1;
}

int gpfq_conv_interleaved_fits(const gpfq_conv_geom *g) {
    const gpfq_interleave_mode mode = gpfq_conv_get_interleave();
    if (mode == GPFQ_INTERLEAVE_OFF || gpfq_conv_get_kernel() != GPFQ_CONV_AVX512 ||
        !gpfq_conv_direct_fits(g) || gpfq_conv_winograd_fits(g))
        return 0;
    il_layout il;
    if (!il_plan(g, &il)) return 0;
    if (mode == GPFQ_INTERLEAVE_ALL) return 1;
    /* AUTO, measured on the shipped models' convs (build/bench/conv_kernels, one core):
     * - a chunk within IL_CHUNK_BYTES: the kernel reads the whole input once per block of
     *   channels, from L3 where it exceeds the L2 (resnet18's 64->128 stride-2 conv, 5 MB:
     *   still 1.25x the flat kernel); planes of ImageNet's size would take hundreds of MB;
     * - stride 2: 1.15-2.2x the flat kernel on every such conv of resnet20 and resnet18;
     * - stride 1: where the flat layout computes 1.25x the outputs or more (LeNet-5's convs:
     *   1.3x and 1.8x the flat kernel's speed); where it computes about as many, the
     *   transposes cost more than the flat layout's copies (resnet20's 16->16 28x28 conv:
     *   166 against 209 GFLOP/s, 32->32 14x14: 160 against 176). */
    if ((il.in_floats + il.out_floats) * sizeof(float) > IL_CHUNK_BYTES) return 0;
    if (g->stride_h == 2) return 1;
    layout flat;
    plan_layout(g, 256, 6 * 16, &flat);
    const double flat_work =
        (double)flat.q_len / (double)flat.images * (double)flat.co_blocks * CO_BLOCK;
    const double il_work = (double)il.co_blocks * il_shapes[il.shape].co * g->out_h * il.x_blocks *
                           il_shapes[il.shape].np;
    return il_work < 0.8 * flat_work;
}

#define IL_KERNEL(NAME, CO, NP)                                                                    \
    __attribute__((target("avx512f"))) static void NAME(const il_layout *l, const float *in,       \
                                                        const float *packed, float *out) {         \
        const gpfq_conv_geom *g = l->g;                                                            \
        const int s = g->stride_h, kh = g->kernel_h, kw = g->kernel_w, taps = kh * kw;             \
        const size_t plane = l->hp * l->wp, stride_c = (size_t)taps * CO_BLOCK;                    \
        for (int cb = 0; cb < l->co_blocks; cb++) {                                                \
            /* channel co's weight for input channel c, tap t: wo[o][c * stride_c + t * 4] in      \
             * the direct kernel's packing; channels past out_c take the last one's */             \
            const float *wo[CO];                                                                   \
            for (int o = 0; o < (CO); o++) {                                                       \
                int co = cb * (CO) + o;                                                            \
                if (co >= g->out_c) co = g->out_c - 1;                                             \
                wo[o] = packed + (size_t)(co / CO_BLOCK) * g->in_c * stride_c + co % CO_BLOCK;     \
            }                                                                                      \
            for (int y = 0; y < g->out_h; y++)                                                     \
                for (int xb = 0; xb < l->x_blocks; xb++) {                                         \
                    const int x0 = (xb + 1) * (NP) <= g->out_w ? xb * (NP) : g->out_w - (NP);      \
                    __m512 acc[CO][NP];                                                            \
                    for (int o = 0; o < (CO); o++)                                                 \
                        for (int v = 0; v < (NP); v++) acc[o][v] = _mm512_setzero_ps();            \
                    for (int c = 0; c < g->in_c; c++)                                              \
                        for (int ki = 0; ki < kh; ki++) {                                          \
                            const float *row =                                                     \
                                in + ((size_t)c * plane + (size_t)(y * s + ki) * l->wp +           \
                                      (size_t)x0 * s) *                                            \
                                         IL_LANES;                                                 \
                            const size_t wt0 = (size_t)c * stride_c + (size_t)ki * kw * CO_BLOCK;  \
                            for (int kj = 0; kj < kw; kj++) {                                      \
                                __m512 xv[NP];                                                     \
                                for (int v = 0; v < (NP); v++)                                     \
                                    xv[v] = _mm512_load_ps(row + (size_t)(v * s + kj) * IL_LANES); \
                                for (int o = 0; o < (CO); o++) {                                   \
                                    const __m512 wv =                                              \
                                        _mm512_set1_ps(wo[o][wt0 + (size_t)kj * CO_BLOCK]);        \
                                    for (int v = 0; v < (NP); v++)                                 \
                                        acc[o][v] = _mm512_fmadd_ps(xv[v], wv, acc[o][v]);         \
                                }                                                                  \
                            }                                                                      \
                        }                                                                          \
                    for (int o = 0; o < (CO); o++) {                                               \
                        float *dst =                                                               \
                            out +                                                                  \
                            (((size_t)(cb * (CO) + o) * g->out_h + y) * g->out_w + x0) * IL_LANES; \
                        for (int v = 0; v < (NP); v++)                                             \
                            _mm512_store_ps(dst + (size_t)v * IL_LANES, acc[o][v]);                \
                    }                                                                              \
                }                                                                                  \
        }                                                                                          \
    }

IL_KERNEL(il_kernel_4x6, 4, 6)
IL_KERNEL(il_kernel_6x4, 6, 4)
IL_KERNEL(il_kernel_4x5, 4, 5)
IL_KERNEL(il_kernel_8x3, 8, 3)

/* Images first .. first + count - 1 (count <= 16) into the padded input's lanes; the padding
 * stays as cleared, and in a last, shorter chunk the lanes past count keep earlier images,
 * whose outputs are dropped. */
static void il_pad(const il_layout *l, const float *x, size_t first, size_t count, float *in) {
    const gpfq_conv_geom *g = l->g;
    const size_t plane = (size_t)g->in_h * g->in_w, image = (size_t)g->in_c * plane;
    for (int c = 0; c < g->in_c; c++) {
        const float *src = x + first * image + (size_t)c * plane;
        float *dst =
            in + ((size_t)c * l->hp * l->wp + (size_t)g->pad_h * l->wp + g->pad_w) * IL_LANES;
        if (l->wp == (size_t)g->in_w) { /* no column padding: the plane is one run */
            gpfq_transpose32_strided(src, image, count, plane, dst, IL_LANES);
            continue;
        }
        for (int y = 0; y < g->in_h; y++)
            gpfq_transpose32_strided(src + (size_t)y * g->in_w, image, count, (size_t)g->in_w,
                                     dst + (size_t)y * l->wp * IL_LANES, IL_LANES);
    }
}

/* The bias and the epilogue (without a residual) on a channel's `pixels` vectors in place, as
 * gpfq_epilogue_loop does them: the same float operations, so the same bits. */
__attribute__((target("avx512f"))) static void il_epilogue(float *v, size_t pixels, float bias,
                                                           const gpfq_conv_epilogue *e, int co) {
    const int scale = e && e->scale, relu = e && e->relu;
    const __m512 b = _mm512_set1_ps(bias);
    const __m512 alpha = _mm512_set1_ps(scale ? e->scale[co] : 1.0f);
    const __m512 shift = _mm512_set1_ps(scale ? e->shift[co] : 0.0f);
    for (size_t p = 0; p < pixels; p++) {
        __m512 t = _mm512_add_ps(_mm512_load_ps(v + p * IL_LANES), b);
        if (scale) t = _mm512_add_ps(_mm512_mul_ps(t, alpha), shift);
        if (relu) t = relu16(t);
        _mm512_store_ps(v + p * IL_LANES, t);
    }
}

/* 2x2 stride-2 max pool of an oh x ow channel of vectors into its first (oh/2)(ow/2), as
 * gpfq_maxpool2d's 2x2 loop: a later value replaces the best only when greater, and NaN
 * anywhere in the window gives NaN. Each output lies at or before the window it reads, and
 * before every later window, so it runs in place. */
__attribute__((target("avx512f"))) static void il_pool(float *v, int oh, int ow) {
    const __m512 nan = _mm512_set1_ps(NAN);
    const int ph = oh / 2, pw = ow / 2;
    for (int py = 0; py < ph; py++)
        for (int px = 0; px < pw; px++) {
            const float *r0 = v + ((size_t)(2 * py) * ow + 2 * px) * IL_LANES;
            const float *r1 = r0 + (size_t)ow * IL_LANES;
            const __m512 a = _mm512_load_ps(r0), b = _mm512_load_ps(r0 + IL_LANES);
            const __m512 c = _mm512_load_ps(r1), d = _mm512_load_ps(r1 + IL_LANES);
            __m512 best = _mm512_max_ps(b, a); /* b > a ? b : a */
            best = _mm512_max_ps(c, best);
            best = _mm512_max_ps(d, best);
            const __mmask16 isnan =
                _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q) |
                _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
            _mm512_store_ps(v + ((size_t)py * pw + px) * IL_LANES,
                            _mm512_mask_mov_ps(best, isnan, nan));
        }
}

/* A chunk's outputs to y (NCHW) after the bias and the epilogue: with a residual, transposed
 * first and finished by gpfq_epilogue_run as the flat kernel does; else finished in place
 * (and pooled), then transposed. */
static void il_unpad(const il_layout *l, float *out, const float *bias, const gpfq_conv_epilogue *e,
                     size_t first, size_t count, float *y) {
    const gpfq_conv_geom *g = l->g;
    const size_t pixels = (size_t)g->out_h * g->out_w;
    const int pool = e && e->pool;
    const size_t kept = pool ? (size_t)(g->out_h / 2) * (g->out_w / 2) : pixels;
    const size_t image = (size_t)g->out_c * kept;
    for (int co = 0; co < g->out_c; co++) {
        float *v = out + (size_t)co * pixels * IL_LANES;
        float *dst = y + first * image + (size_t)co * kept;
        const float b = bias ? bias[co] : 0.0f;
        if (e && e->residual) {
            gpfq_transpose32_strided(v, IL_LANES, pixels, count, dst, image);
            for (size_t i = 0; i < count; i++)
                gpfq_epilogue_run(e, co, b, dst + i * image, dst + i * image,
                                  (first + i) * image + (size_t)co * pixels, pixels);
            continue;
        }
        il_epilogue(v, pixels, b, e, co);
        if (pool) il_pool(v, g->out_h, g->out_w);
        gpfq_transpose32_strided(v, IL_LANES, kept, count, dst, image);
    }
}

typedef struct {
    const il_layout *l;
    const float *x, *packed, *bias;
    const gpfq_conv_epilogue *epilogue;
    float *y;
    size_t n, first_chunk, chunk_step;
    float *in, *out; /* this worker's padded input and outputs, 64-byte aligned */
} il_worker;

static void *run_il_worker(void *arg) {
    il_worker *w = arg;
    const il_layout *l = w->l;
    memset(w->in, 0, sizeof(float) * l->in_floats);
    for (size_t k = w->first_chunk; k * IL_LANES < w->n; k += w->chunk_step) {
        const size_t first = k * IL_LANES;
        const size_t count = w->n - first < IL_LANES ? w->n - first : IL_LANES;
        il_pad(l, w->x, first, count, w->in);
        switch (l->shape) {
        case 0:
            il_kernel_4x6(l, w->in, w->packed, w->out);
            break;
        case 1:
            il_kernel_6x4(l, w->in, w->packed, w->out);
            break;
        case 2:
            il_kernel_4x5(l, w->in, w->packed, w->out);
            break;
        default:
            il_kernel_8x3(l, w->in, w->packed, w->out);
            break;
        }
        il_unpad(l, w->out, w->bias, w->epilogue, first, count, w->y);
    }
    return NULL;
}

static int il_conv(const gpfq_conv_geom *g, const float *x, const float *weight,
                   const float *prepacked, const float *bias, const gpfq_conv_epilogue *epilogue,
                   size_t n, float *y) {
    il_layout l;
    if (!il_plan(g, &l)) return -1;
    const size_t chunks = (n + IL_LANES - 1) / IL_LANES;
    const int threads = threads_for(2.0 * (double)n * g->out_c * g->out_h * g->out_w * g->in_c *
                                        g->kernel_h * g->kernel_w,
                                    chunks);
    /* from this thread's heap, as the direct kernel's buffers (gpfq_conv2d_direct) */
    const size_t packed_floats = prepacked ? 0 : round_up(gpfq_conv2d_packed_floats(g), 16);
    const size_t per_thread = round_up(l.in_floats, 16) + round_up(l.out_floats, 16);
    float *own =
        gpfq_work_take(GPFQ_WORK_CONV, sizeof(float) * (packed_floats + threads * per_thread));
    if (!own) return -1;
    if (!prepacked) gpfq_conv2d_pack(g, weight, own);
    const float *packed = prepacked ? prepacked : own;
    il_worker workers[64];
    float *next = own + packed_floats;
    for (int t = 0; t < threads; t++, next += per_thread)
        workers[t] = (il_worker){&l,
                                 x,
                                 packed,
                                 bias,
                                 epilogue,
                                 y,
                                 n,
                                 (size_t)t,
                                 (size_t)threads,
                                 next,
                                 next + round_up(l.in_floats, 16)};
    run_workers(run_il_worker, workers, sizeof workers[0], threads);
    gpfq_work_give(GPFQ_WORK_CONV, own);
    return 0;
}

typedef struct {
    const layout *l;
    gpfq_conv_kernel kernel;
    const float *x, *packed, *bias;
    const gpfq_conv_epilogue *epilogue;
    float *y;
    size_t n, first_chunk, chunk_step;
    float *in, *out; /* this worker's padded input and staged output */
    float *tmp;      /* a plane of outputs on their way to y (unpad_chunk) */
} worker;

static void *run_worker(void *arg) {
    worker *w = arg;
    const layout *l = w->l;
    const gpfq_conv_geom *g = l->g;
    const size_t in_image = (size_t)g->in_c * g->in_h * g->in_w;
    memset(w->in, 0, sizeof(float) * l->plane * g->in_c);
    for (size_t k = w->first_chunk; k * l->images < w->n; k += w->chunk_step) {
        size_t first = k * l->images;
        size_t count = w->n - first < l->images ? w->n - first : l->images;
        /* a last, shorter chunk runs only the pixel blocks its images reach */
        const size_t blocks = (count * l->image_stride + l->px - 1) / l->px;
        pad_chunk(l, w->x + first * in_image, count, w->in);
        if (w->kernel == GPFQ_CONV_AVX512 && l->px == 64)
            kernel_avx512_64(l, w->in, w->packed, blocks, w->out);
        else if (w->kernel == GPFQ_CONV_AVX512)
            kernel_avx512(l, w->in, w->packed, blocks, w->out);
        else
            kernel_avx2(l, w->in, w->packed, blocks, w->out);
        unpad_chunk(l, w->out, w->bias, w->epilogue, first, count, w->y, w->tmp);
    }
    return NULL;
}

int gpfq_conv2d_direct(const gpfq_conv_geom *g, const float *x, const float *weight,
                       const float *prepacked, const float *bias,
                       const gpfq_conv_epilogue *epilogue, size_t n, float *y) {
    gpfq_conv_kernel kernel = gpfq_conv_get_kernel();
    if (n == 0) return 0;
    /* the interleaved kernel writes a chunk's outputs before it adds the residual (il_unpad):
     * where the residual is y itself, the flat kernel (the same packed weights and sums) */
    const int aliased = gpfq_residual_aliases(epilogue, y, n * g->out_c * g->out_h * g->out_w);
    GPFQ_ASSERT(!aliased || epilogue->residual == y); /* the same elements, or none */
    const int interleaved = gpfq_conv_interleaved_fits(g) && !aliased;
    /* only the interleaved kernel pools, and not after a residual (il_unpad) */
    if (epilogue && epilogue->pool && (epilogue->residual || !interleaved)) return -1;
    if (interleaved) return il_conv(g, x, weight, prepacked, bias, epilogue, n, y);
    if (gpfq_conv_winograd_fits(g)) return wino_conv(g, x, weight, prepacked, bias, epilogue, n, y);
    layout l;
    plan_layout(g, n, kernel == GPFQ_CONV_AVX512 ? 6 * 16 : 3 * 8, &l);
    if (kernel == GPFQ_CONV_AVX512) {
        /* blocks of 64 pixels where blocks of 96 compute over 1.15 times the outputs per
         * image: resnet18's 256->512 stride-2 conv has 4x4 outputs on planes of 5x5; with
         * blocks of 96 a chunk is 3 images, 75 pixels in one block (32 outputs per image),
         * with blocks of 64 it is 5 images, 125 pixels in two (25.6): 94.9 -> 113.3 GFLOP/s
         * on one core. Where both fill their blocks the 64-pixel kernel is 8-18% slower
         * (resnet18's 64->128 and 128->256 stride-2 convs), hence the margin. */
        layout l64;
        plan_layout(g, n, 4 * 16, &l64);
        if (1.15 * (double)l64.q_len / (double)l64.images < (double)l.q_len / (double)l.images)
            l = l64;
    }
    size_t chunks = (n + l.images - 1) / l.images;
    int threads =
        threads_for(2.0 * (double)n * g->out_c * g->out_h * g->out_w * g->in_c * l.taps, chunks);

    /* Every buffer comes from this thread's heap: threads started per call would each get
     * fresh pages from an arena of their own, a page fault per 4 kB on every call. */
    const size_t packed_floats = prepacked ? 0 : gpfq_conv2d_packed_floats(g);
    const size_t in_floats = l.plane * g->in_c, out_floats = l.q_len * l.co_blocks * CO_BLOCK;
    const size_t tmp_floats = epilogue && epilogue->residual ? (size_t)g->out_h * g->out_w : 0;
    const size_t per_thread = in_floats + out_floats + tmp_floats;
    float *own =
        gpfq_work_take(GPFQ_WORK_CONV, sizeof(float) * (packed_floats + threads * per_thread));
    if (!own) return -1;
    if (!prepacked) gpfq_conv2d_pack(g, weight, own);
    const float *packed = prepacked ? prepacked : own;

    worker workers[64];
    float *next = own + packed_floats;
    for (int t = 0; t < threads; t++, next += per_thread)
        workers[t] = (worker){&l,
                              kernel,
                              x,
                              packed,
                              bias,
                              epilogue,
                              y,
                              n,
                              (size_t)t,
                              (size_t)threads,
                              next,
                              next + in_floats,
                              tmp_floats ? next + in_floats + out_floats : NULL};
    run_workers(run_worker, workers, sizeof workers[0], threads);
    gpfq_work_give(GPFQ_WORK_CONV, own);
    return 0;
}
