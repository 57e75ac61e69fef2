/*
 * The passes of the ublock form on gpfq's own AVX-512 kernels (ublock_avx512.c).
 *
 * With OpenBLAS, one block of B columns costs five calls that each stream the block's rows of
 * Xt and Yt (d x m) or U (N x m) from memory: Y_b U^T, Y_b X_b^T, Y_b Y_b^T, then U's two
 * updates. Their products are B x N and B x B with m (up to 50432) as the inner dimension, a
 * shape OpenBLAS packs and blocks for poorly (20-50 GFLOP/s at N = 16). A pass here walks the
 * columns of U once, in chunks that stay in L2, and per chunk does block p-1's update of U and
 * then block p's three sums from the chunk it just wrote. The first pass also gives the layer
 * error's reference norm ||W Xt||, which OpenBLAS's path gets from one more product.
 *
 * A lane is a range of U's columns. The partial sums of each lane are kept apart and added in
 * lane order, so the results do not depend on how many threads run the lanes.
 */
#ifndef GPFQ_UBLOCK_H
#define GPFQ_UBLOCK_H

#include <stddef.h>

#include "gpfq/quant.h"

enum {
    UBLOCK_CHUNK = 1024, /* columns per chunk: Xt, Yt and U's rows of a chunk fit in L2 */
    UBLOCK_LANES = 2,    /* fixed, whatever the thread count */
};

typedef struct {
    size_t m;             /* columns of U, Xt and Yt */
    size_t n4;            /* rows of U: N rounded up to 4 (the padding rows stay 0) */
    float *U;             /* (n4, m) */
    const float *Xt, *Yt; /* (d, m); NULL where the rows are gathered from src */
    int same;             /* Xt is Yt (src: x is y) */
    /* The rows of the update's block (ux, uy) and of the sums' block (sx, sy), each pointing at
     * the block's first row, a row every ld floats. Held rows: into Xt and Yt (ld = m, column 0
     * at 0). Gathered rows: src describes the patches, and each chunk's rows of the sums' block
     * are gathered into gx, gy (= sx, sy; the lane's first column at 0) after the chunk's update
     * and before its sums, where the next pass's update finds them as ux, uy (gx may be ux: the
     * update reads a chunk's rows before the gather writes over them). */
    const gpfq_patches *src;
    const float *ux, *uy, *sx, *sy;
    float *gx, *gy;
    size_t ld;
    /* With src, the reference norm from V (n4 x ld) += W_b^T's block vw (ub x n4) times the
     * update's rows, pass by pass; with last, norm2 = ||V||^2 after the pass's update. */
    float *V;
    const float *vw;
    int last;
    /* the update: U[:, c0:c1] += Wb Xt[ut0 : ut0 + ub] - Qb Yt[ut0 : ut0 + ub]; cw and cq hold
     * Wb^T and Qb^T (ub x n4, zero padded). ub = 0: no update. cq NULL: cw holds
     * (Wb - Qb)^T and there is no Y term (Xt is Yt: U += (Wb - Qb) Xt[ut0 : ut0 + ub]). */
    size_t ut0, ub;
    const float *cw, *cq;
    /* the sums over the lane's columns, added to P (b4 x n4) += Y_b U^T, G (b4 x b4) +=
     * Y_b X_b^T and H += Y_b Y_b^T (only the tiles on and below the diagonal), with
     * Y_b = Yt[dt0 : dt0 + db]; where Xt is Yt, H is left alone (it would be G). db = 0: no
     * sums; with_p = 0: P is left alone (U is 0). */
    size_t dt0, db, b4;
    int with_p;
    float *P, *G, *H;
    /* the reference norm: norm2 = ||W Xt||^2 over the lane's columns, with nw = W^T (nd x n4,
     * zero padded); nw NULL: none */
    const float *nw;
    size_t nd;
    double norm2;
    size_t c0, c1; /* the lane's columns */
    /* 1 in the first pass: the lane first zeroes its columns of U and its V (the caller leaves
     * them as allocated, so that with two threads their pages are first touched by the two lanes
     * at once) */
    int clear;
    const float *zero; /* UBLOCK_CHUNK zeros: the rows past the block's end */
} ublock_lane;

/* Rows [t0, t0 + b) of the patches' columns [c, c + n) of one side (x or y of src) into dst, a
 * row every ld floats (AVX-512; the caller checks that the CPU has it). */
void gpfq_ublock_gather_avx512(const gpfq_patches *src, const float *side, size_t t0, size_t b,
                               size_t c, size_t n, float *dst, size_t ld);
/* Runs one lane of a pass (AVX-512; the caller checks that the CPU has it). */
void gpfq_ublock_lane_avx512(ublock_lane *l);

/* 0: the in-block sweep (gpfq_layer.c) updates its rows with the plain loop even where its
 * AVX-512 path would run; 1 (the default): back. For tests, which compare the two. */
void gpfq_sweep_allow_avx512(int allow);

/* 0: gpfq_layer_gathers says 0 everywhere, so the driver unfolds every conv's patches; 1 (the
 * default): back. For tests, which compare the two. */
void gpfq_layer_gather_allow(int allow);
/* The calls of gpfq_gpfq_layer_patches that passed its check, so far (not thread-safe; for tests,
 * which ask whether the driver took the path). */
size_t gpfq_layer_patches_calls(void);

#endif
