/* A second thread for two-way splits: see helper.h. */
#include "helper.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "gpfq/eval.h" /* gpfq_now */

/* Between two jobs the helper spins (the sequential sweep between two passes of a layer takes
 * microseconds), then waits on a condition variable after HELPER_SPIN_SECONDS. */
#define HELPER_SPIN_SECONDS 2e-4

struct gpfq_helper {
    pthread_t id;
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* a job posted, or quit */
    pthread_cond_t done;          /* a job finished while the caller sleeps in gpfq_helper_wait */
    atomic_uint posted, finished; /* jobs handed over, jobs done */
    atomic_int quit;              /* set under mu, read while spinning too */
    atomic_int sleeping;          /* the caller waits on done (set under mu) */
    void (*fn)(void *);
    void *arg;
    int shared; /* the process's helper: released, not stopped */
};

static void *helper_main(void *arg) {
    gpfq_helper *h = arg;
    unsigned seen = 0;
    for (;;) {
        const double start = gpfq_now();
        for (unsigned spins = 1; atomic_load(&h->posted) == seen; spins++) {
            if (atomic_load(&h->quit)) return NULL; /* no job is pending: stop at once */
            if (spins % 64) {
                __builtin_ia32_pause();
                continue;
            }
            if (gpfq_now() - start < HELPER_SPIN_SECONDS) continue;
            pthread_mutex_lock(&h->mu);
            while (atomic_load(&h->posted) == seen && !atomic_load(&h->quit))
                pthread_cond_wait(&h->cv, &h->mu);
            const int quit = atomic_load(&h->posted) == seen;
            pthread_mutex_unlock(&h->mu);
            if (quit) return NULL;
        }
        seen++;
        h->fn(h->arg);
        atomic_store(&h->finished, seen);
        if (atomic_load(&h->sleeping)) { /* seq_cst: the caller sees finished, or this its flag */
            pthread_mutex_lock(&h->mu);
            pthread_cond_signal(&h->done);
            pthread_mutex_unlock(&h->mu);
        }
    }
}

static int helper_start(gpfq_helper *h) {
    atomic_init(&h->posted, 0);
    atomic_init(&h->finished, 0);
    atomic_init(&h->quit, 0);
    atomic_init(&h->sleeping, 0);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    pthread_cond_init(&h->done, NULL);
    if (pthread_create(&h->id, NULL, helper_main, h) == 0) return 1;
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    pthread_cond_destroy(&h->done);
    return 0;
}

/* Tells the thread to end once no job is pending, and joins it. */
static void helper_join(gpfq_helper *h) {
    pthread_mutex_lock(&h->mu);
    atomic_store(&h->quit, 1);
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->id, NULL);
}

static void helper_stop(gpfq_helper *h) {
    helper_join(h);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    pthread_cond_destroy(&h->done);
}

static gpfq_helper shared_helper = {.shared = 1};
static atomic_int shared_taken;
static int shared_started;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;

/* At exit the idle shared helper is joined (a clean exit leaves no thread running), and taken
 * for good: a later caller (another exit handler) gets a thread of its own. If a thread still
 * holds it (exit called while another thread quantizes), it is left to the process's end. */
static void shared_stop(void) {
    if (atomic_exchange(&shared_taken, 1)) return;
    helper_join(&shared_helper); /* its mutex and conditions stay: nothing is freed */
}

/* A child forked after the first use has no helper thread: it uses threads of its own, and
 * does not join the parent's at exit. */
static void shared_forked(void) {
    atomic_store(&shared_taken, 1);
}

static void shared_start(void) {
    shared_started = helper_start(&shared_helper);
    if (shared_started && (atexit(shared_stop) != 0 ||
                           pthread_atfork(NULL, NULL, shared_forked) != 0)) { /* not kept */
        helper_stop(&shared_helper);
        shared_started = 0;
    }
}

gpfq_helper *gpfq_helper_acquire(void) {
    if (!atomic_exchange(&shared_taken, 1)) {
        pthread_once(&shared_once, shared_start);
        if (shared_started) return &shared_helper;
        atomic_store(&shared_taken, 0);
    }
    gpfq_helper *h = calloc(1, sizeof *h);
    if (h && helper_start(h)) return h;
    free(h);
    return NULL;
}

void gpfq_helper_post(gpfq_helper *h, void (*fn)(void *), void *arg) {
    pthread_mutex_lock(&h->mu);
    h->fn = fn;
    h->arg = arg;
    atomic_fetch_add(&h->posted, 1);
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Spins while the job is likely short (a half of a layer's product), then sleeps: the halves of
 * two forward passes may end tens of milliseconds apart, and on a busy machine a spinning
 * caller would take the helper's core. */
void gpfq_helper_wait(gpfq_helper *h) {
    const double start = gpfq_now();
    for (unsigned spins = 1; atomic_load(&h->finished) != atomic_load(&h->posted); spins++) {
        if (spins % 64) {
            __builtin_ia32_pause();
            continue;
        }
        if (gpfq_now() - start < HELPER_SPIN_SECONDS) continue;
        pthread_mutex_lock(&h->mu);
        atomic_store(&h->sleeping, 1);
        while (atomic_load(&h->finished) != atomic_load(&h->posted))
            pthread_cond_wait(&h->done, &h->mu);
        atomic_store(&h->sleeping, 0);
        pthread_mutex_unlock(&h->mu);
        return;
    }
}

int gpfq_helper_is_shared(const gpfq_helper *h) {
    return h && h->shared;
}

void gpfq_helper_release(gpfq_helper *h) {
    if (!h) return;
    if (h->shared) {
        atomic_store(&shared_taken, 0);
        return;
    }
    helper_stop(h);
    free(h);
}

void gpfq_helper_pair(void (*fn)(void *), void *a, void *b, int parallel) {
    gpfq_helper *h = parallel ? gpfq_helper_acquire() : NULL;
    if (h)
        gpfq_helper_post(h, fn, a);
    else
        fn(a);
    fn(b);
    if (h) gpfq_helper_wait(h);
    gpfq_helper_release(h);
}
