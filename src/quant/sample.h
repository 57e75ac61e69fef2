/*
 * Draws without and with replacement (internal; the network driver's images and patches).
 * Every draw is a function of (key, index): draw i of a stream is gpfq_uniform(key, i).
 */
#ifndef GPFQ_QUANT_SAMPLE_H
#define GPFQ_QUANT_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

/* The size_t words of scratch gpfq_sample_indices needs for k of n. */
size_t gpfq_sample_scratch(size_t n, size_t k);

/* k distinct indices of [0, n) into out, as a partial Fisher-Yates shuffle of 0 .. n-1 gives
 * them (swap i with i + below(i, n - i)), or with replacement k draws below(i, n), where
 * below(c, n) = (size_t)(gpfq_uniform(key, c) * n) % n, a uniform integer in [0, n). scratch holds
 * gpfq_sample_scratch(n, k) words. */
void gpfq_sample_indices(uint64_t key, size_t n, size_t k, int replacement, size_t *out,
                         size_t *scratch);

#endif
