/*
 * GPFQ for one layer, in three forms that give the same codes (up to float
 * rounding at exact ties):
 *
 * - ref: the reference's loop. U (N x m) += W[:,t] X[:,t]^T; the argument of
 *   column t is U Y[:,t] / ||Y[:,t]||^2; U -= Q[:,t] Y[:,t]^T. Rank-1 updates,
 *   memory-bound, O(N m d).
 *
 * - gram: without U. With G = Y^T X and H = Y^T Y (d x d), the argument of column t
 *   is (sum_{s<=t} G[t,s] W[:,s] - sum_{s<t} H[t,s] Q[:,s]) / H[t,t]. The W part
 *   is one product with the lower triangle of G; the Q part is brought in block by
 *   block with one GEMM per block, and only inside a block of B columns does the
 *   work go column by column. O(m d^2 + N d^2), all BLAS-3.
 *
 * - ublock: the U form blocked. For a block of columns starting at t0, the
 *   arguments need U_{t0} Y_block (one GEMM), the block's own small Grams, and the
 *   same in-block sweep; then U advances by two GEMMs. O(N m d), all BLAS-3:
 *   cheaper than gram when N < d/2, the common case for convs (d = C k k). With
 *   long enough columns on an AVX-512 CPU the products of a block run on gpfq's
 *   own kernels instead, one pass over U per block (ublock.h).
 *
 * The fast forms work on transposed matrices (Wt, Qt: d x N) so that "column t
 * of W" is a contiguous row; ublock keeps only the current block's rows of them.
 */
#include "gpfq/quant.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpfq/eval.h"
#include "gpfq/ops.h"

#include "../core/clones.h"
#include "../core/helper.h"
#include "ublock.h"

int openblas_get_num_threads(void);

enum { GPFQ_DEFAULT_BLOCK = 128, UBLOCK_OWN_BLOCK = 16, UBLOCK_NORM_ROWS = 64 };

void gpfq_gpfq_layer_ref(const float *weight, size_t N, size_t d, const float *Xt, const float *Yt,
                         size_t m, const gpfq_alphabet *a, int32_t *codes) {
    float *U = calloc(N * m, sizeof(float));
    GPFQ_ASSERT(U != NULL);
    for (size_t t = 0; t < d; t++) {
        const float *x = Xt + t * m, *y = Yt + t * m;
        float norm = 0.0f;
        for (size_t k = 0; k < m; k++) norm += y[k] * y[k];
        for (size_t i = 0; i < N; i++) {
            float *u = U + i * m;
            const float w = weight[i * d + t];
            float dot = 0.0f;
            for (size_t k = 0; k < m; k++) {
                u[k] += w * x[k];
                dot += u[k] * y[k];
            }
            int code = norm == 0.0f ? 0 : gpfq_quantize_code(a, dot / norm, i * d + t);
            codes[i * d + t] = (int32_t)code;
            const float q = gpfq_code_value(a, code);
            for (size_t k = 0; k < m; k++) u[k] -= q * y[k];
        }
    }
    free(U);
}

/* Values [0, w) of the row, w <= 16 V, in V vectors held in registers. */
__attribute__((target("avx512f"), always_inline)) static inline void
sweep_row_chunk(float *p, const float *h, size_t r, const float *Q, size_t ldq, size_t w,
                const int V) {
    __mmask16 mask[8];
    __m512 acc[8];
    for (int v = 0; v < V; v++) {
        const size_t lo = 16 * (size_t)v;
        mask[v] = w <= lo ? 0 : w - lo >= 16 ? 0xffff : (__mmask16)((1u << (w - lo)) - 1);
        acc[v] = _mm512_maskz_loadu_ps(mask[v], p + lo);
    }
    for (size_t s = 0; s < r; s++) {
        if (h[s] == 0.0f) continue;
        const __m512 hs = _mm512_set1_ps(h[s]);
        const float *q = Q + s * ldq;
        for (int v = 0; v < V; v++)
            acc[v] = _mm512_sub_ps(acc[v],
                                   _mm512_mul_ps(hs, _mm512_maskz_loadu_ps(mask[v], q + 16 * v)));
    }
    for (int v = 0; v < V; v++) _mm512_mask_storeu_ps(p + 16 * v, mask[v], acc[v]);
}

/* p[i] -= h[s] q_s[i] for s < r with h[s] != 0, in that order, for i < n; q_s = Q + s ldq. With
 * AVX-512, up to 128 of p's values stay in registers while s runs (a load and two operations
 * per 16 values, where the loop in memory also loads and stores p each time). Multiply, then
 * subtract, as the loop does: the same values. */
__attribute__((target("avx512f"))) static void
sweep_row_avx512(float *p, const float *h, size_t r, const float *Q, size_t ldq, size_t n) {
    for (size_t i0 = 0; i0 < n; i0 += 128) {
        const size_t w = n - i0 < 128 ? n - i0 : 128;
        if (w <= 16)
            sweep_row_chunk(p + i0, h, r, Q + i0, ldq, w, 1);
        else if (w <= 32)
            sweep_row_chunk(p + i0, h, r, Q + i0, ldq, w, 2);
        else if (w <= 64)
            sweep_row_chunk(p + i0, h, r, Q + i0, ldq, w, 4);
        else
            sweep_row_chunk(p + i0, h, r, Q + i0, ldq, w, 8);
    }
}

static int sweep_avx512_allowed = 1;

void gpfq_sweep_allow_avx512(int allow) {
    sweep_avx512_allowed = allow;
}

static int have_avx512(void) {
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx512f");
    return have && sweep_avx512_allowed;
}

/* Columns [i0, i1) of sweep_block's sweep (below), Qb and Cb the block's rows of Qt and Ct:
 * each column (neuron) is swept on its own,
 * so any split of the columns gives the same values; the stochastic streams are the weights'
 * indices i d + t. With work (i1 - i0 floats), each row of P is updated there instead of in
 * place: two threads on either side of a split would otherwise write the cache line that
 * straddles it r times per row (P's rows need not start on a line), and pass it between their
 * cores each time. Built for the CPU at hand (GPFQ_CLONES: every clone gives the same codes). */
GPFQ_CLONES static void sweep_columns(float *P, size_t B, size_t N, const float *H, size_t ldh,
                                      size_t t0, size_t d, const gpfq_alphabet *a, float *Qb,
                                      int32_t *Cb, size_t i0, size_t i1, float *work) {
    const size_t n = i1 - i0;
    const int avx512 = have_avx512();
    for (size_t r = 0; r < B; r++) {
        float *row = P + r * N + i0;
        if (work) row = memcpy(work, row, n * sizeof(float));
        float *restrict p = row;
        const float *h = H + r * ldh;
        if (avx512) {
            sweep_row_avx512(p, h, r, Qb + i0, N, n);
        } else {
            for (size_t s = 0; s < r; s++) {
                const float hs = h[s];
                if (hs == 0.0f) continue;
                const float *restrict q = Qb + s * N + i0;
                for (size_t i = 0; i < n; i++) p[i] -= hs * q[i];
            }
        }
        gpfq_quantize_row(a, p, n, h[r], t0 + r + i0 * d, d, Cb + r * N + i0, Qb + r * N + i0);
    }
}

/* 16 sums side by side, added up in a fixed order at the end: the compiler vectorises them (a
 * single running sum it may not reorder), and every clone adds the same way. U's norm at the
 * end of a layer took 6% of lenet5's quantize, on one thread, as one scalar sum. */
GPFQ_CLONES double gpfq_sum_squares(const float *v, const float *sub, size_t n) {
    enum { W = 16 };
    double acc[W] = {0};
    size_t k = 0;
    if (sub)
        for (; k + W <= n; k += W)
            for (int j = 0; j < W; j++) {
                const double t = (double)v[k + j] - (double)sub[k + j];
                acc[j] += t * t;
            }
    else
        for (; k + W <= n; k += W)
            for (int j = 0; j < W; j++) acc[j] += (double)v[k + j] * (double)v[k + j];
    for (; k < n; k++) {
        const double t = (double)v[k] - (sub ? (double)sub[k] : 0.0);
        acc[k % W] += t * t;
    }
    double sum = 0.0;
    for (int j = 0; j < W; j++) sum += acc[j];
    return sum;
}

/* ---- a second thread for a layer (../core/helper.h) ---- */

/* N B^2 of a block sweep worth splitting (a hand-off costs microseconds) */
#define SWEEP_SPLIT_WORK 2.6e5

typedef struct {
    gpfq_tri tri;
    ptrdiff_t off;
    int ta, tb;
    size_t M, N, K;
    float alpha;
    const float *A;
    size_t lda;
    const float *B;
    size_t ldb;
    float beta;
    float *C;
    size_t ldc;
} gemm_job;

static void gemm_job_run(void *arg) {
    const gemm_job *j = arg;
    if (j->tri == GPFQ_TRI_NONE)
        gpfq_sgemm(j->ta, j->tb, j->M, j->N, j->K, j->alpha, j->A, j->lda, j->B, j->ldb, j->beta,
                   j->C, j->ldc);
    else
        gpfq_sgemm_tri(j->tri, j->off, j->ta, j->tb, j->M, j->N, j->K, j->alpha, j->A, j->lda, j->B,
                       j->ldb, j->beta, j->C, j->ldc);
}

/* gpfq_sgemm_tri, the columns (or, for fewer than 64, the rows) of C split between this thread
 * and the helper when there is one and the product runs on gpfq's kernel. Each element is
 * summed in the same order either way (src/ops/gemm.c), so the split changes no result. A
 * triangular part is split where the work halves: C's lower triangle at 0.29 of its columns,
 * a lower A's rows at 0.71. On OpenBLAS (a helper acquired for ublock's lanes under
 * GPFQ_GEMM=openblas) the product runs whole, on OpenBLAS's own threads. */
static void pair_sgemm_tri(gpfq_helper *h, gpfq_tri tri, int ta, int tb, size_t M, size_t N,
                           size_t K, float alpha, const float *A, size_t lda, const float *B,
                           size_t ldb, float beta, float *C, size_t ldc) {
    gemm_job mine = {tri, 0, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc}, other = mine;
    /* under 2 MFLOP (about 10 us on one core) a product is not split: a hand-off to the helper
     * costs microseconds (the bound is a guess, not measured); nor when neither side has two
     * blocks of the kernel (32 columns, 12 rows) */
    if (!h || gpfq_gemm_get_kernel() != GPFQ_GEMM_AVX512 || (double)M * N * K < 1e6 ||
        (N < 64 && M < 24)) {
        gemm_job_run(&mine);
        return;
    }
    if (N >= 64) {
        const double at = tri == GPFQ_TRI_LOWER_C ? 1.0 - sqrt(0.5) : 0.5;
        size_t n1 = ((size_t)(at * (double)N) + 31) / 32 * 32;
        if (n1 < 32) n1 = 32;
        if (n1 >= N) n1 = N - 32;
        mine.N = n1, other.N = N - n1;
        other.B = tb ? B + n1 * ldb : B + n1;
        other.C = C + n1;
        other.off = tri == GPFQ_TRI_LOWER_C ? -(ptrdiff_t)n1 : 0; /* a lower A: the same rows */
    } else {
        const double at = tri == GPFQ_TRI_NONE ? 0.5 : sqrt(0.5);
        size_t m1 = ((size_t)(at * (double)M) + 11) / 12 * 12;
        if (m1 < 12) m1 = 12;
        if (m1 >= M) m1 = M - 12;
        mine.M = m1, other.M = M - m1;
        other.A = ta ? A + m1 : A + m1 * lda;
        other.C = C + m1 * ldc;
        other.off = (ptrdiff_t)m1;
    }
    gpfq_helper_post(h, gemm_job_run, &other);
    gemm_job_run(&mine);
    gpfq_helper_wait(h);
}

static void pair_sgemm(gpfq_helper *h, int ta, int tb, size_t M, size_t N, size_t K, float alpha,
                       const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                       size_t ldc) {
    pair_sgemm_tri(h, GPFQ_TRI_NONE, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* What the ublock forms do with a block's columns once they are swept, each thread for its own
 * columns (neurons), where it would otherwise run on one thread while the other waits (mlp:
 * 0.3 ms a quantize): the block's codes into the N x d result, D = W_b - Q_b for U's update
 * where Xt is Yt, and the next block's rows of W^T. */
typedef struct {
    int32_t *codes;  /* the N x d codes (the block's columns t0 ..), or NULL */
    const float *Wb; /* the block's rows of W^T (B x N) ... */
    float *D;        /* ... and D = Wb - Qb (B x N), or NULL */
    const float *W;  /* the N x d weights ... */
    size_t next_t0, next_B;
    float *next_Wb; /* ... and next_Wb (next_B x N): their columns next_t0 .. as rows */
} sweep_after;

typedef struct {
    float *P;
    size_t B, N;
    const float *H;
    size_t ldh, t0, d;
    const gpfq_alphabet *a;
    float *Qb;
    int32_t *Cb;
    size_t i0, i1;
    float *work;
    const sweep_after *after;
} sweep_job;

static void sweep_job_run(void *arg) {
    const sweep_job *j = arg;
    sweep_columns(j->P, j->B, j->N, j->H, j->ldh, j->t0, j->d, j->a, j->Qb, j->Cb, j->i0, j->i1,
                  j->work);
    const sweep_after *w = j->after;
    if (!w) return;
    const size_t N = j->N, i0 = j->i0, n = j->i1 - j->i0;
    if (w->codes)
        gpfq_transpose32_strided(j->Cb + i0, N, j->B, n, w->codes + i0 * j->d + j->t0, j->d);
    if (w->D)
        for (size_t r = 0; r < j->B; r++)
            for (size_t i = i0; i < j->i1; i++)
                w->D[r * N + i] = w->Wb[r * N + i] - j->Qb[r * N + i];
    if (w->next_Wb && w->next_B)
        gpfq_transpose32_strided(w->W + i0 * j->d + w->next_t0, j->d, n, w->next_B, w->next_Wb + i0,
                                 N);
}

/* The sequential part shared by the fast forms, for one block of B columns t0 .. t0+B-1. On
 * entry P (B x N) holds, for each column t of the block, the argument numerators without the
 * in-block Q terms; H is the d x d (gram) or B x B (ublock) matrix with leading dimension ldh,
 * positioned at the block's diagonal. Row r of P takes the corrections of the block's earlier
 * columns, then is quantized into row r of Qb and Cb (B x N: the block's rows of the code
 * values and the codes, transposed). The neurons split between this thread and the helper when the
 * block is worth a hand-off (mlp's fc1, N = 500 and B = 128: 0.6 ms less per quantize). */
static void sweep_block(gpfq_helper *h, float *P, size_t B, size_t N, const float *H, size_t ldh,
                        size_t t0, size_t d, const gpfq_alphabet *a, float *Qb, int32_t *Cb,
                        const sweep_after *after) {
    sweep_job mine = {P, B, N, H, ldh, t0, d, a, Qb, Cb, 0, N, NULL, after}, other = mine;
    float *work = h && N >= 64 && (double)N * B * B >= SWEEP_SPLIT_WORK
                      ? malloc((N + 16) * sizeof(float))
                      : NULL;
    if (!work) { /* not worth a hand-off, or no memory for the rows: all here, in place */
        sweep_job_run(&mine);
        return;
    }
    mine.i1 = other.i0 = (N / 2 + 15) / 16 * 16; /* whole vectors on this side */
    mine.work = work;
    other.work = work + mine.i1 + 16; /* a cache line apart */
    gpfq_helper_post(h, sweep_job_run, &other);
    sweep_job_run(&mine);
    gpfq_helper_wait(h);
    free(work);
}

/* The gram form once G and H are there, on weight into codes (N x d): G's upper triangle is
 * overwritten, H's lower triangle is read. */
static gpfq_status gram_sweep(gpfq_helper *h, const float *weight, size_t N, size_t d, float *G,
                              const float *H, const gpfq_alphabet *a, size_t block,
                              int32_t *codes) {
    float *P = gpfq_malloc(d * N * sizeof(float), "the GPFQ arguments");
    float *Wt = gpfq_malloc(d * N * sizeof(float), "transposed weights");
    float *Qt = gpfq_malloc(d * N * sizeof(float), "transposed code values");
    int32_t *Ct = gpfq_malloc(d * N * sizeof(int32_t), "transposed codes");
    if (!P || !Wt || !Qt || !Ct) {
        free(P), free(Wt), free(Qt), free(Ct);
        return GPFQ_ERR_NOMEM;
    }
    gpfq_transpose32(weight, N, d, Wt);
    const int own = gpfq_gemm_get_kernel() == GPFQ_GEMM_AVX512;
    /* P = tril(G) Wt: row t = sum_{s<=t} G[t,s] W[:,s] */
    for (size_t t = 0; t < d; t++)
        for (size_t s = t + 1; s < d; s++) G[t * d + s] = 0.0f;
    if (own) { /* G's zeros above the diagonal skipped in blocks */
        pair_sgemm_tri(h, GPFQ_TRI_LOWER_A, 0, 0, d, N, d, 1.0f, G, d, Wt, N, 0.0f, P, N);
    } else {
        memcpy(P, Wt, d * N * sizeof(float));
        cblas_strmm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (int)d,
                    (int)N, 1.0f, G, (int)d, P, (int)N);
    }
    for (size_t t0 = 0; t0 < d; t0 += block) {
        size_t B = d - t0 < block ? d - t0 : block;
        /* bring in every earlier block at once: P_b -= H[b, :t0] Qt[:t0] */
        if (t0 > 0) pair_sgemm(h, 0, 0, B, N, t0, -1.0f, H + t0 * d, d, Qt, N, 1.0f, P + t0 * N, N);
        sweep_block(h, P + t0 * N, B, N, H + t0 * d + t0, d, t0, d, a, Qt + t0 * N, Ct + t0 * N,
                    NULL);
    }
    gpfq_transpose32(Ct, d, N, codes);
    free(P), free(Wt), free(Qt), free(Ct);
    return GPFQ_OK;
}

static gpfq_status layer_gram(gpfq_helper *h, const float *weight, size_t N, size_t d,
                              const float *Xt, const float *Yt, size_t m, const gpfq_alphabet *a,
                              size_t block, int32_t *codes) {
    float *G = gpfq_malloc(d * d * sizeof(float), "the Gram matrix G");
    float *H = gpfq_malloc(d * d * sizeof(float), "the Gram matrix H");
    if (!G || !H) {
        free(G), free(H);
        return GPFQ_ERR_NOMEM;
    }
    /* G = Y^T X = Yt Xt^T; H = Yt Yt^T (lower triangle is what is read) */
    /* (on gpfq's kernel, where Xt is Yt, a first layer's, H is G: the same product of the same
     * rows; OpenBLAS's ssyrk would round otherwise than its sgemm) */
    /* (on gpfq's kernel only their lower triangles are computed, about half of the work) */
    const int own = gpfq_gemm_get_kernel() == GPFQ_GEMM_AVX512;
    pair_sgemm_tri(h, GPFQ_TRI_LOWER_C, 0, 1, d, d, m, 1.0f, Yt, m, Xt, m, 0.0f, G, d);
    if (own && Xt == Yt)
        memcpy(H, G, d * d * sizeof(float));
    else if (own)
        pair_sgemm_tri(h, GPFQ_TRI_LOWER_C, 0, 1, d, d, m, 1.0f, Yt, m, Yt, m, 0.0f, H, d);
    else
        cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)d, (int)m, 1.0f, Yt, (int)m, 0.0f,
                    H, (int)d);
    const gpfq_status st = gram_sweep(h, weight, N, d, G, H, a, block, codes);
    free(G), free(H);
    return st;
}

static void lane_run(void *lane) {
    gpfq_ublock_lane_avx512(lane);
}

/* One block's rows of the code values and of the codes (B x N each) and, with_w, two blocks'
 * rows of W^T (this block's, and the next one's, which the sweep's threads transpose while U's
 * update still reads this one's): the ublock forms need the rows of one block at a time, not
 * the d x N matrices (mlp's fc1: 1.6 MB each against 0.26 MB, memory a fresh process would
 * first have to touch). */
typedef struct {
    float *W, *Q;
    int32_t *C;
} block_rows;

static void block_rows_free(block_rows *r) {
    free(r->W), free(r->Q), free(r->C);
    r->W = r->Q = NULL, r->C = NULL;
}

static gpfq_status block_rows_alloc(block_rows *r, size_t block, size_t N, int with_w) {
    r->W = with_w ? gpfq_malloc(2 * block * N * sizeof(float), "two blocks of weights") : NULL;
    r->Q = gpfq_malloc(block * N * sizeof(float), "a block of code values");
    r->C = gpfq_malloc(block * N * sizeof(int32_t), "a block of codes");
    if (r->Q && r->C && (r->W || !with_w)) return GPFQ_OK;
    block_rows_free(r);
    return GPFQ_ERR_NOMEM;
}

/* When err2 is given, U is advanced past the last block too: it is then the
 * residual W Xt - Q Yt, and *err2 its squared norm, for one block's GEMMs instead
 * of gpfq_layer_error's two full products. U lives in `residual` (N x m) when given.
 * With by_rows, X and Y come as a network holds them, (m, d): a block's B x m rows of Xt are
 * then the transpose of X's B columns, which the products read with the other transpose
 * flag (ld d); on gpfq's GEMM kernel the packed operands, and so every value, are the same
 * (src/ops/gemm.c). */
static gpfq_status layer_ublock(gpfq_helper *h, const float *weight, size_t N, size_t d,
                                const float *Xt, const float *Yt, size_t m, int by_rows,
                                const gpfq_alphabet *a, size_t block, int32_t *codes, double *err2,
                                float *residual) {
    float *U = residual ? memset(residual, 0, N * m * sizeof(float))
                        : gpfq_calloc(N * m, sizeof(float), "the GPFQ residual U");
    float *P = gpfq_malloc(block * N * sizeof(float), "the GPFQ arguments");
    float *Gb = gpfq_malloc(block * block * sizeof(float), "a block Gram");
    float *Hb = gpfq_malloc(block * block * sizeof(float), "a block Gram");
    block_rows rows;
    if (!U || !P || !Gb || !Hb || block_rows_alloc(&rows, block, N, 1) != GPFQ_OK) {
        if (U != residual) free(U);
        free(P), free(Gb), free(Hb);
        return GPFQ_ERR_NOMEM;
    }
    float *Qb = rows.Q;
    gpfq_transpose32_strided(weight, d, N, d < block ? d : block, rows.W, N); /* first columns */
    for (size_t t0 = 0, k = 0; t0 < d; t0 += block, k++) {
        const size_t B = d - t0 < block ? d - t0 : block;
        /* block k's rows of W^T, and the next block's */
        const float *Wb = rows.W + (k % 2) * block * N;
        float *Wnext = rows.W + (k + 1) % 2 * block * N;
        /* the block's rows of Xt and Yt (B x m), stored as such (ld m) or transposed (ld d) */
        const float *Xb = by_rows ? Xt + t0 : Xt + t0 * m, *Yb = by_rows ? Yt + t0 : Yt + t0 * m;
        const size_t ld = by_rows ? d : m;
        const size_t next_t0 = t0 + B, next_B = d - next_t0 < block ? d - next_t0 : block;
        /* P (B x N) = Y_b^T U^T, the residual seen by each column of the block */
        if (t0 > 0)
            pair_sgemm(h, by_rows, 1, B, N, m, 1.0f, Yb, ld, U, m, 0.0f, P, N);
        else
            memset(P, 0, B * N * sizeof(float));
        pair_sgemm(h, by_rows, !by_rows, B, B, m, 1.0f, Yb, ld, Xb, ld, 0.0f, Gb, B);
        if (Xt == Yt) /* the same product of the same rows */
            memcpy(Hb, Gb, B * B * sizeof(float));
        else
            pair_sgemm(h, by_rows, !by_rows, B, B, m, 1.0f, Yb, ld, Yb, ld, 0.0f, Hb, B);
        for (size_t r = 0; r < B; r++)
            for (size_t s = r + 1; s < B; s++) Gb[r * B + s] = 0.0f;
        /* P += tril(Gb) W_b^T */
        pair_sgemm(h, 0, 0, B, N, B, 1.0f, Gb, B, Wb, N, 1.0f, P, N);
        /* then, per thread: the codes, W_b - Q_b into P (free until the next block) where Xt
         * is Yt, and the next block's rows of W^T */
        const int advance = t0 + B < d || err2;
        const sweep_after after = {codes,  Wb,      advance && Xt == Yt ? P : NULL,
                                   weight, next_t0, next_t0 < d ? next_B : 0,
                                   Wnext};
        sweep_block(h, P, B, N, Hb, B, t0, d, a, Qb, rows.C, &after);
        if (advance && Xt == Yt) {
            /* U += (W_b - Q_b) X_b: one product where the sides read the same inputs */
            pair_sgemm(h, 1, by_rows, N, m, B, 1.0f, P, N, Xb, ld, 1.0f, U, m);
        } else if (advance) {
            /* U += W_b X_b - Q_b Y_b, with W_b = Wb^T (N x B) */
            pair_sgemm(h, 1, by_rows, N, m, B, 1.0f, Wb, N, Xb, ld, 1.0f, U, m);
            pair_sgemm(h, 1, by_rows, N, m, B, -1.0f, Qb, N, Yb, ld, 1.0f, U, m);
        }
    }
    if (err2) *err2 = gpfq_sum_squares(U, NULL, N * m);
    if (U != residual) free(U);
    free(P), free(Gb), free(Hb);
    block_rows_free(&rows);
    return GPFQ_OK;
}

/* ---- ublock on gpfq's own kernels ---- */

/* 1 where ublock runs on ublock_avx512.c: the AVX-512 conv kernel is the one in use (the CPU has
 * it and GPFQ_CONV does not ask for less), and there are at least two chunks of columns. With
 * fewer (a Linear layer's m is the batch) the sums are too short to pay for their reductions,
 * and OpenBLAS, which blocks along N and d there, is as fast (mlp: 9.0 ms against 8.5 for fc1). */
static int ublock_own_kernels(size_t m) {
    return m >= 2 * UBLOCK_CHUNK && gpfq_conv_get_kernel() == GPFQ_CONV_AVX512;
}

/* layer_ublock's passes on gpfq's kernels (ublock.h). Pass p updates U with block p - 1 and
 * sums block p; the sweep between passes is layer_ublock's. With ref2, also *ref2 = ||W Xt||^2:
 * from the first pass where N <= UBLOCK_NORM_ROWS, else *ref2 = -1 (not computed). With src,
 * Xt and Yt are NULL: the lanes gather each block's rows as they go, and *ref2 comes from V,
 * summed with the updates (any N; as costly as the product the held rows' norm would take). */
static gpfq_status layer_ublock_own(gpfq_helper *h, const float *weight, size_t N, size_t d,
                                    const float *Xt, const float *Yt, const gpfq_patches *src,
                                    size_t m, const gpfq_alphabet *a, size_t block, int32_t *codes,
                                    double *err2, double *ref2) {
    const size_t n4 = (N + 3) / 4 * 4, b4 = (block + 3) / 4 * 4;
    const size_t lane_floats = b4 * n4 + 2 * b4 * b4;
    const int same = src ? src->x == src->y : Xt == Yt;
    /* lane 0 ends on a multiple of 16 columns, so only the last lane has a short vector */
    const size_t half = m / UBLOCK_LANES / 16 * 16;
    /* gathered rows: per lane, a block of each side, and V. A chunk's rows of block p - 1 are
     * read by pass p's update before its gather writes block p's over them. */
    const size_t ld = src ? (m - half + 15) / 16 * 16 : m;
    const size_t rows_floats = src ? (2 * b4 + (ref2 ? n4 : 0)) * ld : 0;
    /* U and V are zeroed by the lanes (ublock_lane.clear); the gathered rows are not: they are
     * read only where a gather wrote them */
    float *U = gpfq_malloc(n4 * m * sizeof(float), "the GPFQ residual U");
    float *sums = gpfq_malloc(UBLOCK_LANES * lane_floats * sizeof(float), "the block sums");
    float *wt4 = gpfq_calloc(d * n4, sizeof(float), "the padded weights");
    float *cq = gpfq_calloc(block * n4, sizeof(float), "the update's codes");
    float *zero = gpfq_calloc(UBLOCK_CHUNK, sizeof(float), "a zero row");
    float *P = gpfq_malloc(block * N * sizeof(float), "the GPFQ arguments");
    float *Gb = gpfq_malloc(block * block * sizeof(float), "a block Gram");
    float *Hb = gpfq_malloc(block * block * sizeof(float), "a block Gram");
    float *rows_buf =
        src ? gpfq_malloc(UBLOCK_LANES * rows_floats * sizeof(float), "the gathered rows") : NULL;
    block_rows rows = {0};
    if (!U || !sums || !wt4 || !cq || !zero || !P || !Gb || !Hb || (src && !rows_buf) ||
        block_rows_alloc(&rows, block, N, 0) != GPFQ_OK) {
        free(U), free(sums), free(wt4), free(cq), free(zero), free(P), free(Gb), free(Hb);
        free(rows_buf);
        block_rows_free(&rows);
        return GPFQ_ERR_NOMEM;
    }
    gpfq_transpose32_strided(weight, d, N, d, wt4, n4); /* W^T, its padding columns 0 */
    ublock_lane lanes[UBLOCK_LANES];
    for (int k = 0; k < UBLOCK_LANES; k++)
        lanes[k] = (ublock_lane){.m = m,
                                 .n4 = n4,
                                 .U = U,
                                 .Xt = Xt,
                                 .Yt = Yt,
                                 .same = same,
                                 .src = src,
                                 .ld = ld,
                                 .V = src && ref2 ? rows_buf + k * rows_floats + 2 * b4 * ld : NULL,
                                 .cq = cq,
                                 .b4 = b4,
                                 .P = sums + k * lane_floats,
                                 .G = sums + k * lane_floats + b4 * n4,
                                 .H = sums + k * lane_floats + b4 * n4 + b4 * b4,
                                 .nd = d,
                                 .c0 = k * half,
                                 .c1 = k + 1 < UBLOCK_LANES ? (k + 1) * half : m,
                                 .zero = zero};
    const size_t blocks = (d + block - 1) / block;
    /* the reference norm re-reads a chunk's d rows of Xt once per 4 rows of W: from L2 for
     * the small N of most convs, but for a larger N the chunk leaves L2 before the last rows
     * come, and gpfq_layer_error's GEMM, which blocks for the cache, is the better tool */
    const int own_norm = ref2 && !src && N <= UBLOCK_NORM_ROWS;
    if (ref2) *ref2 = own_norm || src ? 0.0 : -1.0;
    for (size_t p = 0; p < blocks || (p == blocks && (err2 || ref2)); p++) {
        const size_t t0 = p * block, B = p < blocks && d - t0 < block ? d - t0 : block;
        const size_t ut0 = p ? t0 - block : 0, ub = p ? (d - ut0 < block ? d - ut0 : block) : 0;
        /* where Xt is Yt, one product: cq holds (W_b - Q_b)^T, and there is no Y term */
        for (size_t s = 0; s < ub; s++)
            if (same)
                for (size_t i = 0; i < N; i++)
                    cq[s * n4 + i] = wt4[(ut0 + s) * n4 + i] - rows.Q[s * N + i];
            else
                memcpy(cq + s * n4, rows.Q + s * N, N * sizeof(float));
        memset(sums, 0, UBLOCK_LANES * lane_floats * sizeof(float));
        for (int k = 0; k < UBLOCK_LANES; k++) {
            ublock_lane *l = &lanes[k];
            l->ut0 = ut0, l->ub = ub;
            l->cw = same ? cq : wt4 + ut0 * n4;
            l->cq = same ? NULL : cq;
            l->dt0 = t0, l->db = p < blocks ? B : 0;
            l->with_p = p > 0;
            l->nw = p == 0 && own_norm ? wt4 : NULL;
            l->vw = wt4 + ut0 * n4;
            l->last = p == blocks;
            l->clear = p == 0;
            if (src) { /* block p over block p - 1, chunk by chunk */
                float *buf = rows_buf + k * rows_floats;
                l->gx = buf, l->gy = same ? buf : buf + b4 * ld;
                l->sx = l->gx, l->sy = l->gy;
                l->ux = l->gx, l->uy = l->gy;
            } else {
                l->ux = Xt + ut0 * m, l->uy = Yt + ut0 * m;
                l->sx = Xt + t0 * m, l->sy = Yt + t0 * m;
            }
        }
        if (h) gpfq_helper_post(h, lane_run, &lanes[1]);
        for (int k = 0; k < UBLOCK_LANES; k++)
            if (!h || k != 1) gpfq_ublock_lane_avx512(&lanes[k]);
        if (h) gpfq_helper_wait(h);
        if ((p == 0 && own_norm) || (p == blocks && src && ref2))
            for (int k = 0; k < UBLOCK_LANES; k++) *ref2 += lanes[k].norm2;
        if (p == blocks) break;
        /* the lanes' sums in lane order; G's upper triangle is not part of tril(G_b) */
        for (size_t r = 0; r < B; r++) {
            for (size_t i = 0; i < N; i++) {
                float v = 0.0f;
                for (int k = 0; k < UBLOCK_LANES; k++) v += lanes[k].P[r * n4 + i];
                P[r * N + i] = v;
            }
            for (size_t s = 0; s < B; s++) {
                float g = 0.0f, hh = 0.0f;
                for (int k = 0; k < UBLOCK_LANES; k++)
                    g += lanes[k].G[r * b4 + s], hh += lanes[k].H[r * b4 + s];
                if (same) hh = g; /* the lanes sum H only where Xt is not Yt */
                Gb[r * B + s] = s <= r ? g : 0.0f;
                Hb[r * B + s] = s <= r ? hh : 0.0f;
            }
        }
        /* P += tril(Gb) W_b^T */
        pair_sgemm(h, 0, 0, B, N, B, 1.0f, Gb, B, wt4 + t0 * n4, n4, 1.0f, P, N);
        const sweep_after after = {.codes = codes};
        sweep_block(h, P, B, N, Hb, B, t0, d, a, rows.Q, rows.C, &after);
    }
    if (err2) *err2 = gpfq_sum_squares(U, NULL, N * m);
    free(U), free(sums), free(wt4), free(cq), free(zero), free(P), free(Gb), free(Hb);
    free(rows_buf);
    block_rows_free(&rows);
    return GPFQ_OK;
}

/* Multiply-adds of each form, with the layer error after it: gram then needs two more products
 * (layer_error, 2 N m d); ublock's own kernels (m >= 2048) give the error, and ||W Xt|| where
 * N <= UBLOCK_NORM_ROWS (else one product, N m d). Without that term gram won where ublock was
 * twice as fast: lenet5's conv1 (6 x 25, m = 50432), gram 1.4-2.4 ms against ublock's 0.8 ms
 * (build/bench/gpfq_forms, GPFQ alone); lenet5's quantize with the defaults, in one process,
 * best of 60, eight runs each, interleaved: 7.3-9.1 ms before, 5.9-7.8 ms after. */
static gpfq_form choose_form(size_t N, size_t d, size_t m, size_t block) {
    double gram = 1.5 * (double)m * d * d + (double)N * d * d;
    double ublock = 3.0 * (double)N * m * d + 1.5 * (double)m * d * block;
    if (ublock_own_kernels(m)) gram += (N <= UBLOCK_NORM_ROWS ? 2.0 : 1.0) * (double)N * m * d;
    return gram <= ublock ? GPFQ_FORM_GRAM : GPFQ_FORM_UBLOCK;
}

/* With by_rows, X and Y are (m, d) as in layer_ublock. */
static gpfq_status layer_error(gpfq_helper *h, const float *weight, const float *quantized,
                               size_t N, size_t d, const float *Xt, const float *Yt, size_t m,
                               int by_rows, double *error, double *reference_norm) {
    /* in chunks of columns to bound memory */
    const size_t chunk = m < 8192 ? m : 8192;
    float *R = gpfq_malloc(N * chunk * sizeof(float), "the layer output");
    float *E = quantized ? gpfq_malloc(N * chunk * sizeof(float), "the layer error") : NULL;
    if (!R || (quantized && !E)) {
        free(E), free(R);
        return GPFQ_ERR_NOMEM;
    }
    double err = 0.0, ref = 0.0;
    for (size_t c0 = 0; c0 < m; c0 += chunk) {
        const size_t c = m - c0 < chunk ? m - c0 : chunk;
        /* R = W Xt[:, c0:c0+c]; E = R - Q Yt[:, c0:c0+c] */
        const size_t at = by_rows ? c0 * d : c0, ld = by_rows ? d : m;
        pair_sgemm(h, 0, by_rows, N, c, d, 1.0f, weight, d, Xt + at, ld, 0.0f, R, c);
        ref += gpfq_sum_squares(R, NULL, N * c);
        if (!quantized) continue;
        memcpy(E, R, N * c * sizeof(float));
        pair_sgemm(h, 0, by_rows, N, c, d, -1.0f, quantized, d, Yt + at, ld, 1.0f, E, c);
        err += gpfq_sum_squares(E, NULL, N * c);
    }
    free(E), free(R);
    if (error) *error = sqrt(err);
    *reference_norm = sqrt(ref);
    return GPFQ_OK;
}

/* A helper thread for a layer's GEMMs and passes, where there are two threads to use (the BLAS
 * thread count, as set by --threads) and gpfq's kernels run them: OpenBLAS has its own. */
static int want_helper(int own) {
    return openblas_get_num_threads() > 1 && (own || gpfq_gemm_get_kernel() == GPFQ_GEMM_AVX512);
}

gpfq_status gpfq_layer_error(const float *weight, const float *quantized, size_t N, size_t d,
                             const float *Xt, const float *Yt, size_t m, double *error,
                             double *reference_norm) {
    gpfq_helper *h = want_helper(0) ? gpfq_helper_acquire() : NULL;
    gpfq_status st = layer_error(h, weight, quantized, N, d, Xt, Yt, m, 0, error, reference_norm);
    gpfq_helper_release(h);
    return st;
}

/* The form to run (AUTO resolved by the cost model) and its block (0: the default). */
static gpfq_form resolve_form(size_t N, size_t d, size_t m, gpfq_form form, size_t *block) {
    /* The in-block sweep costs N B d / 2 against ublock's 3 N m d in GEMMs, but runs slower: small
     * layers want small blocks. On OpenBLAS B=32 at N<=64 and 64 up to N=256 beat 128
     * (bench/README.md); on gpfq's GEMM kernel, with the sweep's rows in registers, 64 beat 128
     * at N = 500 too (mlp's quantize, in one process, best of 100: 3.98 ms against 3.65-3.68
     * with 64; 3.70-3.72 with 32), where the gram form's block made no difference (6.8-7.0 ms).
     * ublock's own kernels spend m B d on the block Grams against 6 N m d on the rest, and a
     * pass costs little: 16 beat 32 by 5-25% at every N from 16 to 256 (bench/README.md). */
    size_t gram_block = *block ? *block : N <= 64 ? 32 : N <= 256 ? 64 : GPFQ_DEFAULT_BLOCK;
    size_t gemm_block = *block ? *block : N <= 64 ? 32 : 64; /* ublock on GEMMs */
    size_t own_block = *block ? *block : UBLOCK_OWN_BLOCK;
    if (gram_block > d) gram_block = d;
    if (gemm_block > d) gemm_block = d;
    if (own_block > d) own_block = d;
    const size_t ublock_block = ublock_own_kernels(m) ? own_block : gemm_block;
    if (form == GPFQ_FORM_AUTO) form = choose_form(N, d, m, ublock_block);
    *block = form == GPFQ_FORM_UBLOCK ? ublock_block : gram_block;
    return form;
}

gpfq_form gpfq_layer_form(size_t N, size_t d, size_t m, gpfq_form form, size_t block) {
    return resolve_form(N, d, m, form, &block);
}

int gpfq_layer_reads_rows(size_t N, size_t d, size_t m, gpfq_form form, size_t block) {
    return resolve_form(N, d, m, form, &block) == GPFQ_FORM_UBLOCK && !ublock_own_kernels(m);
}

/* gpfq_gpfq_layer; without want_norm, ||W Xt|| only where it comes without a product of its
 * own, else stats->relative_error is NaN; the residual into `residual` where the form holds it
 * (stats->residual). With by_rows, X and Y are (m, d) (gpfq_gpfq_layer_rows). */
static gpfq_status layer_run(const float *weight, size_t N, size_t d, const float *Xt,
                             const float *Yt, size_t m, int by_rows, const gpfq_alphabet *a,
                             gpfq_form form, size_t block, int32_t *codes, float *quantized,
                             float *residual, gpfq_layer_stats *stats, int want_norm) {
    const double start = gpfq_now();
    const int own = ublock_own_kernels(m);
    if (by_rows && !gpfq_layer_reads_rows(N, d, m, form, block))
        return gpfq_fail(GPFQ_ERR_ARG,
                         "GPFQ on inputs as rows (m, d) runs the ublock form on GEMMs only; the "
                         "%s form of an N = %zu, d = %zu, m = %zu layer takes them transposed "
                         "(gpfq_gpfq_layer)",
                         gpfq_form_name(resolve_form(N, d, m, form, &block)), N, d, m);
    form = resolve_form(N, d, m, form, &block);
    /* the same values on both sides (a first layer, whose inputs are the images) are taken
     * as one buffer, so the forms' shortcuts for it give the same bits either way */
    if (Yt != Xt && !memcmp(Xt, Yt, d * m * sizeof(float))) Yt = Xt;
    gpfq_status st = GPFQ_OK;
    if (stats) stats->residual = 0;
    double err2 = -1.0, ref2 = -1.0; /* the residual's and W Xt's squared norms, when given */
    gpfq_helper *h = form != GPFQ_FORM_REF && want_helper(own) ? gpfq_helper_acquire() : NULL;
    if (form == GPFQ_FORM_REF) {
        gpfq_gpfq_layer_ref(weight, N, d, Xt, Yt, m, a, codes);
    } else if (form == GPFQ_FORM_GRAM) {
        st = layer_gram(h, weight, N, d, Xt, Yt, m, a, block, codes);
    } else if (own) {
        st = layer_ublock_own(h, weight, N, d, Xt, Yt, NULL, m, a, block, codes,
                              stats ? &err2 : NULL, stats ? &ref2 : NULL);
    } else {
        st = layer_ublock(h, weight, N, d, Xt, Yt, m, by_rows, a, block, codes,
                          stats ? &err2 : NULL, stats ? residual : NULL);
        if (stats && residual && st == GPFQ_OK) stats->residual = 1;
    }
    float *values = st != GPFQ_OK ? NULL
                    : quantized   ? quantized
                                  : gpfq_malloc(N * d * sizeof(float), "quantized weights");
    if (!values) {
        gpfq_helper_release(h);
        return st != GPFQ_OK ? st : GPFQ_ERR_NOMEM;
    }
    gpfq_code_values(a, codes, N * d, values);
    if (stats) {
        stats->form = form;
        stats->seconds = gpfq_now() - start;
        /* what the form did not give (a form that gives ||W Xt|| gives the error too) */
        double ref = ref2 >= 0.0 ? sqrt(ref2) : 0.0;
        if (err2 >= 0.0) stats->error = sqrt(err2);
        if (ref2 < 0.0 && (want_norm || err2 < 0.0))
            st = layer_error(h, weight, err2 >= 0.0 ? NULL : values, N, d, Xt, Yt, m, by_rows,
                             err2 >= 0.0 ? NULL : &stats->error, &ref);
        else if (ref2 < 0.0)
            ref = NAN;
        stats->relative_error = ref > 0 ? stats->error / ref : isnan(ref) ? NAN : 0.0;
    }
    gpfq_helper_release(h);
    if (!quantized) free(values);
    return st;
}

gpfq_status gpfq_gpfq_layer(const float *weight, size_t N, size_t d, const float *Xt,
                            const float *Yt, size_t m, const gpfq_alphabet *a, gpfq_form form,
                            size_t block, int32_t *codes, float *quantized,
                            gpfq_layer_stats *stats) {
    return layer_run(weight, N, d, Xt, Yt, m, 0, a, form, block, codes, quantized, NULL, stats, 1);
}

gpfq_status gpfq_gpfq_layer_no_norm(const float *weight, size_t N, size_t d, const float *Xt,
                                    const float *Yt, size_t m, const gpfq_alphabet *a,
                                    gpfq_form form, size_t block, int32_t *codes, float *quantized,
                                    float *residual, gpfq_layer_stats *stats) {
    return layer_run(weight, N, d, Xt, Yt, m, 0, a, form, block, codes, quantized, residual, stats,
                     0);
}

gpfq_status gpfq_gpfq_layer_rows(const float *weight, size_t N, size_t d, const float *X,
                                 const float *Y, size_t m, const gpfq_alphabet *a, gpfq_form form,
                                 size_t block, int32_t *codes, float *quantized, float *residual,
                                 gpfq_layer_stats *stats, int want_norm) {
    return layer_run(weight, N, d, X, Y, m, 1, a, form, block, codes, quantized, residual, stats,
                     want_norm);
}

static int gather_allowed = 1;
static size_t patches_calls;

void gpfq_layer_gather_allow(int allow) {
    gather_allowed = allow;
}

size_t gpfq_layer_patches_calls(void) {
    return patches_calls;
}

int gpfq_layer_gathers(size_t N, size_t d, size_t m, gpfq_form form, size_t block) {
    return gather_allowed && resolve_form(N, d, m, form, &block) == GPFQ_FORM_UBLOCK &&
           ublock_own_kernels(m);
}

gpfq_status gpfq_gpfq_layer_patches(const float *weight, size_t N, size_t d, const gpfq_patches *P,
                                    size_t m, const gpfq_alphabet *a, gpfq_form form, size_t block,
                                    int32_t *codes, float *quantized, gpfq_layer_stats *stats) {
    const double start = gpfq_now();
    if (!gpfq_layer_gathers(N, d, m, form, block))
        return gpfq_fail(GPFQ_ERR_ARG,
                         "GPFQ on gathered patches runs the ublock form on gpfq's own kernels "
                         "only; an N = %zu, d = %zu, m = %zu layer takes them unfolded "
                         "(gpfq_gpfq_layer)",
                         N, d, m);
    resolve_form(N, d, m, form, &block);
    patches_calls++;
    float *values = quantized ? quantized : gpfq_malloc(N * d * sizeof(float), "quantized weights");
    if (!values) return GPFQ_ERR_NOMEM;
    double err2 = 0.0, ref2 = 0.0;
    gpfq_helper *h = want_helper(1) ? gpfq_helper_acquire() : NULL;
    gpfq_status st = layer_ublock_own(h, weight, N, d, NULL, NULL, P, m, a, block, codes,
                                      stats ? &err2 : NULL, stats ? &ref2 : NULL);
    gpfq_helper_release(h);
    if (st == GPFQ_OK) gpfq_code_values(a, codes, N * d, values);
    if (st == GPFQ_OK && stats) {
        stats->form = GPFQ_FORM_UBLOCK;
        stats->residual = 0;
        stats->error = sqrt(err2);
        stats->relative_error = ref2 > 0.0 ? stats->error / sqrt(ref2) : isnan(ref2) ? NAN : 0.0;
        stats->seconds = gpfq_now() - start;
    }
    if (!quantized) free(values);
    return st;
}

/* sum over rows i < N of v_i^T S v_i, v_i = A_i - B_i (B NULL: A_i), S symmetric (d x d) given
 * by its lower triangle; in double, in a fixed order */
static double quadratic_forms(const float *S, const float *A, const float *B, size_t N, size_t d,
                              double *v) {
    double sum = 0.0;
    for (size_t i = 0; i < N; i++) {
        for (size_t t = 0; t < d; t++) v[t] = (double)A[i * d + t] - (B ? B[i * d + t] : 0.0f);
        for (size_t t = 0; t < d; t++) {
            double off = 0.0;
            for (size_t s = 0; s < t; s++) off += (double)S[t * d + s] * v[s];
            sum += v[t] * ((double)S[t * d + t] * v[t] + 2.0 * off);
        }
    }
    return sum;
}

/* Against gram on the held inputs, G alone is less of everything. Against ublock, whose products
 * where X is Y cost 2 N m d, G's sums cost m d^2 / 2 but need no m x d inputs written and read
 * again, which in a fresh process are pages to touch first (about 1.2 us a 4 kB page on this
 * VM, docs/performance-notes.md), and ublock's U (N x m) besides. Measured on lenet5's conv1
 * (N = 6, d = 25, m = 50432: m d^2 / 2 about 2 N m d): its quantize in one process, best of 30,
 * 3.04-3.14 ms against 3.11-3.21 before, and its first run 6.2-6.4 ms against 7.9-9.9 (3205 page
 * faults against 3989). G is taken up to twice ublock's multiply-adds, a bound not measured. */
int gpfq_layer_gram_only(size_t N, size_t d, size_t m, gpfq_form form, size_t block) {
    if (form != GPFQ_FORM_AUTO) return 0;
    if (resolve_form(N, d, m, form, &block) != GPFQ_FORM_UBLOCK) return 1;
    return 0.5 * (double)m * d * d + 1.5 * (double)N * d * d <= 4.0 * (double)N * m * d;
}

gpfq_status gpfq_gpfq_layer_gram(const float *weight, size_t N, size_t d, const float *G, size_t m,
                                 const gpfq_alphabet *a, size_t block, int32_t *codes,
                                 float *quantized, gpfq_layer_stats *stats) {
    const double start = gpfq_now();
    resolve_form(N, d, m, GPFQ_FORM_GRAM, &block);
    float *Gw = gpfq_malloc(d * d * sizeof(float), "the Gram matrix G");
    float *values = quantized ? quantized : gpfq_malloc(N * d * sizeof(float), "quantized weights");
    double *v = gpfq_malloc(d * sizeof(double), "a row of the error");
    gpfq_status st = !Gw || !values || !v ? GPFQ_ERR_NOMEM : GPFQ_OK;
    gpfq_helper *h = st == GPFQ_OK && want_helper(0) ? gpfq_helper_acquire() : NULL;
    if (st == GPFQ_OK) {
        memcpy(Gw, G, d * d * sizeof(float)); /* the sweep's copy; H is G itself */
        st = gram_sweep(h, weight, N, d, Gw, G, a, block, codes);
    }
    gpfq_helper_release(h);
    if (st == GPFQ_OK) {
        gpfq_code_values(a, codes, N * d, values);
        if (stats) {
            /* ||X (W - Q)^T||^2 and ||X W^T||^2 as quadratic forms of G = X^T X */
            const double err2 = quadratic_forms(G, weight, values, N, d, v);
            const double ref2 = quadratic_forms(G, weight, NULL, N, d, v);
            stats->form = GPFQ_FORM_GRAM;
            stats->residual = 0;
            /* (a sum below 0 is rounding; NaN, from inputs that are not finite, stays NaN) */
            stats->error = err2 > 0.0 ? sqrt(err2) : err2 == err2 ? 0.0 : NAN;
            stats->relative_error = ref2 > 0.0     ? stats->error / sqrt(ref2)
                                    : ref2 == ref2 ? 0.0
                                                   : NAN;
            stats->seconds = gpfq_now() - start;
        }
    }
    free(Gw), free(v);
    if (!quantized) free(values);
    return st;
}
