/*
 * The draws of quant/sample.h. Where n is large against k (256 calibration images of 60000),
 * the shuffled pool is not written out: a partial Fisher-Yates writes 2k of its places at
 * most, and a hash table of those stands in for the n words a pool would take (480 kB to
 * write on every draw and, in a fresh process, to first-touch). The draws are the same.
 */
#include "sample.h"

#include <string.h>

#include "gpfq/quant.h"

/* A uniform integer in [0, n) from stream (key, counter). */
static size_t draw_below(uint64_t key, uint64_t counter, size_t n) {
    return (size_t)(gpfq_uniform(key, counter) * (double)n) % n;
}

/* Slots of the table (a power of two, at least 4k: at most half full), or 0 where a pool of n
 * words is no larger than the table's two words a slot. */
static size_t table_slots(size_t n, size_t k) {
    size_t slots = 16;
    while (slots < 4 * k) slots *= 2;
    return 2 * slots < n ? slots : 0;
}

size_t gpfq_sample_scratch(size_t n, size_t k) {
    const size_t slots = table_slots(n, k);
    return slots ? 2 * slots : n;
}

/* The table: slot s holds place + 1 (0: empty) and the value at that place; a place not in it
 * holds itself. */
static size_t *slot_of(size_t *table, size_t slots, size_t place) {
    size_t s = (place * 0x9E3779B97F4A7C15ULL >> 20) & (slots - 1);
    while (table[2 * s] && table[2 * s] != place + 1) s = (s + 1) & (slots - 1);
    return table + 2 * s;
}

static size_t value_at(size_t *table, size_t slots, size_t place) {
    const size_t *slot = slot_of(table, slots, place);
    return slot[0] ? slot[1] : place;
}

static void set_value(size_t *table, size_t slots, size_t place, size_t value) {
    size_t *slot = slot_of(table, slots, place);
    slot[0] = place + 1, slot[1] = value;
}

void gpfq_sample_indices(uint64_t key, size_t n, size_t k, int replacement, size_t *out,
                         size_t *scratch) {
    if (replacement) {
        for (size_t i = 0; i < k; i++) out[i] = draw_below(key, i, n);
        return;
    }
    const size_t slots = table_slots(n, k);
    if (!slots) { /* the pool itself */
        for (size_t i = 0; i < n; i++) scratch[i] = i;
        for (size_t i = 0; i < k; i++) {
            const size_t j = i + draw_below(key, i, n - i);
            const size_t tmp = scratch[i];
            scratch[i] = scratch[j];
            scratch[j] = tmp;
            out[i] = scratch[i];
        }
        return;
    }
    memset(scratch, 0, 2 * slots * sizeof(size_t));
    for (size_t i = 0; i < k; i++) {
        const size_t j = i + draw_below(key, i, n - i);
        const size_t vi = value_at(scratch, slots, i), vj = value_at(scratch, slots, j);
        set_value(scratch, slots, j, vi);
        set_value(scratch, slots, i, vj);
        out[i] = vj;
    }
}
