/*
 * An LD_PRELOAD shim for the tests: pthread_create fails with EAGAIN, as under a thread limit,
 * for every call made from the main program (gpfq's own threads: the quantization's helper, an
 * evaluation's workers, rank 0's worker in a sweep). Calls from
 * shared libraries (Open MPI's, OpenBLAS's) go through, so that MPI and BLAS still start. At
 * exit it says on stderr how many it refused.
 *
 *     LD_PRELOAD=libno_threads.so gpfq ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "shim.h"

static atomic_int refused;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int (*real_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

static void init(void) {
    main_span_find();
    real_create = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(
        RTLD_NEXT, "pthread_create");
}

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
    pthread_once(&once, init);
    const uintptr_t from = (uintptr_t)__builtin_return_address(0);
    if (from_main(from)) {
        atomic_fetch_add(&refused, 1);
        return EAGAIN;
    }
    return real_create ? real_create(thread, attr, fn, arg) : EAGAIN;
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "no_threads: refused %d thread(s)\n", atomic_load(&refused));
}
