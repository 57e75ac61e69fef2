/*
 * A second thread for two-way splits (internal).
 *
 * The quantization splits its work in two many times per layer: the GEMMs and passes of a
 * layer's GPFQ, the float and quantized forward passes, the unfolding of X and Y. Starting and
 * joining a thread costs 37-53 us here, and lenet5's quantize started eleven (0.4-0.6 ms of
 * about 5). The process keeps one helper thread instead, started on first use: it spins for
 * a moment after each job (the next hand-off is usually microseconds away), then sleeps.
 *
 * One caller holds the shared helper at a time; a second caller at the same time (two
 * quantizations on two threads) gets a thread of its own, as before. Jobs run one at a time:
 * post, do this thread's half, wait (spinning for a moment, then asleep). At exit the idle
 * shared helper is joined; a child forked after its first use runs on threads of its own.
 */
#ifndef GPFQ_CORE_HELPER_H
#define GPFQ_CORE_HELPER_H

typedef struct gpfq_helper gpfq_helper;

/* The shared helper if free, else a new thread for this caller; NULL if none can start. */
gpfq_helper *gpfq_helper_acquire(void);
/* Hands fn(arg) to the helper; the previous job must have been waited for. */
void gpfq_helper_post(gpfq_helper *h, void (*fn)(void *), void *arg);
/* Returns once the posted job is done. */
void gpfq_helper_wait(gpfq_helper *h);
/* Gives the helper back (after gpfq_helper_wait); h may be NULL. */
void gpfq_helper_release(gpfq_helper *h);
/* 1 for the process's shared helper (tests) */
int gpfq_helper_is_shared(const gpfq_helper *h);

/* fn(a) on a helper and fn(b) on this thread when parallel (and a helper can be had), else
 * both here, a first. */
void gpfq_helper_pair(void (*fn)(void *), void *a, void *b, int parallel);

#endif
