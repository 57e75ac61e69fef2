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
 * Kernel. A block of 4 output channels by PX consecutive q (96 with AVX-512, 24 with AVX2)
 * stays in registers while the loop runs over input channels and taps: per tap, PX/width
 * unaligned loads and 4 broadcasts feed 4*PX/width FMAs.
 *
 * Threads. As many as BLAS is set to (openblas_get_num_threads), at most one per 50 MFLOP
 * of the call, each on its own chunks of images with its own buffers, so the evaluation's workers
 * (BLAS at one thread) each run it single-threaded and the calibration pass (BLAS at --threads)
 * uses every thread.
 */
#include "gpfq/ops.h"

#include "../core/clones.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int openblas_get_num_threads(void);

enum {
    CO_BLOCK = 4,
    MAX_TAPS = 64,            /* kernels up to 7x7 (and 5x11, ...) */
    CHUNK_BYTES = 768 * 1024, /* padded input and staged output of a chunk: most of an L2 */
};

static gpfq_conv_kernel chosen = GPFQ_CONV_AUTO;
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

/* floor(a / 2) and a mod 2 (in 0..1) for any sign of a */
static int floor_half(int a) {
    return (a - (a & 1)) / 2;
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
            int dy = s == 1 ? r : floor_half(r), dx = s == 1 ? c : floor_half(c);
            phase[t] = s == 1 ? 0 : (r & 1) * 2 + (c & 1);
            l->offsets[t] = (long)((g->pad_h + dy) * l->wp + (g->pad_w + dx));
            if (l->offsets[t] + 1 > reach) reach = l->offsets[t] + 1;
        }
    l->phase = round_up(l->q_len + (size_t)reach + l->lead, 16);
    l->plane = l->phase * s * s;
    for (int t = 0; t < l->taps; t++) l->offsets[t] += (long)(phase[t] * l->phase);
}

/* w (out_c, in_c, kh, kw) -> packed (co_blocks, in_c, taps, CO_BLOCK), zero beyond out_c: the
 * order depends on the geometry only, not on the kernel or the batch. */
size_t gpfq_conv2d_packed_floats(const gpfq_conv_geom *g) {
    if (!gpfq_conv_direct_fits(g)) return 0;
    const size_t co_blocks = ((size_t)g->out_c + CO_BLOCK - 1) / CO_BLOCK;
    return co_blocks * CO_BLOCK * g->in_c * g->kernel_h * g->kernel_w;
}

void gpfq_conv2d_pack(const gpfq_conv_geom *g, const float *w, float *packed) {
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
            /* input row y, column x goes to phase (y % 2, x % 2) at (y / 2, x / 2) */
            for (int y = 0; y < g->in_h; y++) {
                const float *row = src + (size_t)y * g->in_w;
                float *even = dst + ((y & 1) * 2) * l->phase + (size_t)(y / 2) * l->wp;
                float *odd = even + l->phase;
                const int pairs = g->in_w / 2;
#pragma GCC ivdep /* the planes and the input do not overlap */
                for (int b = 0; b < pairs; b++) {
                    even[b] = row[2 * b];
                    odd[b] = row[2 * b + 1];
                }
                if (g->in_w & 1) even[pairs] = row[2 * pairs];
            }
        }
}

/* Keeps the real outputs of the staged planes of images first.. first + count - 1, adds the
 * bias and runs the epilogue while the channel is in L1. */
GPFQ_CLONES static void unpad_chunk(const layout *l, const float *out, const float *bias,
                                    const gpfq_conv_epilogue *e, size_t first, size_t count,
                                    float *y) {
    const gpfq_conv_geom *g = l->g;
    const size_t pixels = (size_t)g->out_h * g->out_w, ow = (size_t)g->out_w;
    for (size_t i = 0; i < count; i++)
        for (int co = 0; co < g->out_c; co++) {
            const float *src = out + (size_t)co * l->q_len + i * l->image_stride;
            const size_t at = ((first + i) * g->out_c + co) * pixels;
            float *dst = y + at;
            for (int r = 0; r < g->out_h; r++)
                copy_row(dst + (size_t)r * ow, src + (size_t)r * l->wp, ow);
            gpfq_epilogue_run(e, co, bias ? bias[co] : 0.0f, dst, dst, at, pixels);
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

/* 24 accumulators of the 32 AVX-512 registers; 12 of AVX2's 16 */
DIRECT_KERNEL(kernel_avx512, "avx512f", __m512, 16, 6, _mm512)
DIRECT_KERNEL(kernel_avx2, "avx2,fma", __m256, 8, 3, _mm256)

typedef struct {
    const layout *l;
    gpfq_conv_kernel kernel;
    const float *x, *packed, *bias;
    const gpfq_conv_epilogue *epilogue;
    float *y;
    size_t n, first_chunk, chunk_step;
    float *in, *out; /* this worker's padded input and staged output */
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
        if (w->kernel == GPFQ_CONV_AVX512)
            kernel_avx512(l, w->in, w->packed, blocks, w->out);
        else
            kernel_avx2(l, w->in, w->packed, blocks, w->out);
        unpad_chunk(l, w->out, w->bias, w->epilogue, first, count, w->y);
    }
    return NULL;
}

int gpfq_conv2d_direct(const gpfq_conv_geom *g, const float *x, const float *weight,
                       const float *prepacked, const float *bias,
                       const gpfq_conv_epilogue *epilogue, size_t n, float *y) {
    gpfq_conv_kernel kernel = gpfq_conv_get_kernel();
    if (n == 0) return 0;
    layout l;
    plan_layout(g, n, kernel == GPFQ_CONV_AVX512 ? 6 * 16 : 3 * 8, &l);
    size_t chunks = (n + l.images - 1) / l.images;
    int threads = openblas_get_num_threads();
    /* a thread started per call costs tens of microseconds: at least ~50 MFLOP each */
    double flops = 2.0 * (double)n * g->out_c * g->out_h * g->out_w * g->in_c * l.taps;
    if (threads > 1 + flops / 50e6) threads = (int)(1 + flops / 50e6);
    if (threads < 1) threads = 1;
    if ((size_t)threads > chunks) threads = (int)chunks;
    if (threads > 64) threads = 64;

    /* Every buffer comes from this thread's heap: threads started per call would each get
     * fresh pages from an arena of their own, a page fault per 4 kB on every call. */
    const size_t packed_floats = prepacked ? 0 : gpfq_conv2d_packed_floats(g);
    const size_t in_floats = l.plane * g->in_c, out_floats = l.q_len * l.co_blocks * CO_BLOCK;
    float *own = malloc(sizeof(float) * (packed_floats + threads * (in_floats + out_floats)));
    if (!own) return -1;
    if (!prepacked) gpfq_conv2d_pack(g, weight, own);
    const float *packed = prepacked ? prepacked : own;

    worker workers[64];
    pthread_t ids[64];
    int started = 1;
    float *next = own + packed_floats;
    for (int t = 0; t < threads; t++, next += in_floats + out_floats)
        workers[t] = (worker){&l, kernel, x,         packed,          bias, epilogue,
                              y,  n,      (size_t)t, (size_t)threads, next, next + in_floats};
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, run_worker, &workers[t]) != 0) break;
        started++;
    }
    /* chunks of threads that could not start are run here */
    for (int t = 0; t < threads; t++)
        if (t == 0 || t >= started) run_worker(&workers[t]);
    for (int t = 1; t < started; t++) pthread_join(ids[t], NULL);
    free(own);
    return 0;
}
