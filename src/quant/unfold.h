/*
 * The conv patches GPFQ samples, unfolded as columns (internal; the network driver's X and Y).
 *
 * A patch's top-left tap lies in a padded plane of gpfq_unfold_padded_h(g) rows of
 * gpfq_unfold_padded_w(g) = in_w + 2 pad_w floats, with pad_h zero rows above and below: patch
 * (py, px) of the unfolding geometry g has its corner at py stride_h pw + px stride_w, and every
 * tap of every patch lies inside the plane.
 */
#ifndef GPFQ_QUANT_UNFOLD_H
#define GPFQ_QUANT_UNFOLD_H

#include <stddef.h>
#include <stdint.h>

#include "gpfq/ops.h"

size_t gpfq_unfold_padded_w(const gpfq_conv_geom *g);
size_t gpfq_unfold_padded_h(const gpfq_conv_geom *g);

/* Writes the patches at the corners offset[0 .. keep) of one image's channels [c0, c0 + cg) as
 * columns of dst (cg kh kw rows of stride m): what gpfq_im2col gives for those patches, without
 * unfolding the others. Each channel is first copied into `pad`, a padded plane whose border
 * the caller has zeroed (and which stays zero), so that tap (ki, kj) of patch j is
 * pad[offset[j] + ki dh pw + kj dw], with no bounds checks. */
void gpfq_unfold_patches(const gpfq_conv_geom *g, const float *image, int c0, int cg,
                         const uint32_t *offset, size_t keep, float *pad, float *dst, size_t m);

#endif
