/*
 * An LD_PRELOAD shim for the tests: memory runs out for gpfq. Allocations made from the main
 * program (gpfq's own code: the library, the sweep, the command line) are counted over all
 * threads from 0; call number NO_MEMORY_AT and every one after it fail (return NULL with
 * ENOMEM), as memory that has run out stays out. With NO_MEMORY_ONCE=1 only that call fails;
 * with NO_MEMORY_RANK=R only MPI rank R's (OMPI_COMM_WORLD_RANK) fail, the others only count.
 * strdup and strndup are wrapped too: the C library's own malloc calls inside them would
 * otherwise go through.
 * Calls from shared libraries (the C library's own, Open MPI's, HDF5's, OpenBLAS's) go through,
 * so that MPI, HDF5 and BLAS still start and can still write what gpfq hands them. Without
 * NO_MEMORY_AT nothing fails, and the count tells how many allocations a run makes.
 * At exit it says on stderr how many it counted and how many it failed.
 *
 *     NO_MEMORY_AT=K LD_PRELOAD=libno_memory.so gpfq ...
 *
 * It allocates through glibc's own entry points (__libc_malloc and the rest), so it needs no
 * dlsym (which itself allocates) and frees need no wrapper. Not for sanitized builds: their
 * runtime replaces malloc and free, and would be handed blocks it did not make.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_long counted, failed;
static long fail_at = -1; /* -1: nothing fails */
static int once;

/* Runs before main: the main program's span, and the settings. */
__attribute__((constructor)) static void init(void) {
    main_span_find();
    const char *at = getenv("NO_MEMORY_AT"), *one = getenv("NO_MEMORY_ONCE");
    const char *rank = getenv("NO_MEMORY_RANK"), *mine = getenv("OMPI_COMM_WORLD_RANK");
    if (at && *at) fail_at = strtol(at, NULL, 10);
    if (rank && *rank && (!mine || strtol(rank, NULL, 10) != strtol(mine, NULL, 10))) fail_at = -1;
    once = one && *one == '1';
}

/* 1 where a call from `from` is to fail */
static int failing(uintptr_t from) {
    if (!from_main(from)) return 0;
    const long call = atomic_fetch_add(&counted, 1);
    if (fail_at < 0 || call < fail_at || (once && call != fail_at)) return 0;
    atomic_fetch_add(&failed, 1);
    errno = ENOMEM;
    return 1;
}

#define FROM ((uintptr_t)__builtin_return_address(0))

void *malloc(size_t bytes) {
    return failing(FROM) ? NULL : __libc_malloc(bytes);
}
void *calloc(size_t count, size_t size) {
    return failing(FROM) ? NULL : __libc_calloc(count, size);
}
void *realloc(void *p, size_t bytes) {
    return failing(FROM) ? NULL : __libc_realloc(p, bytes);
}
void *aligned_alloc(size_t align, size_t bytes) {
    return failing(FROM) ? NULL : __libc_memalign(align, bytes);
}
int posix_memalign(void **p, size_t align, size_t bytes) {
    if (failing(FROM)) return ENOMEM;
    void *q = __libc_memalign(align, bytes);
    if (!q) return ENOMEM;
    *p = q;
    return 0;
}

char *strndup(const char *s, size_t n) {
    if (failing(FROM)) return NULL;
    const size_t len = strnlen(s, n);
    char *copy = __libc_malloc(len + 1);
    if (copy) memcpy(copy, s, len), copy[len] = '\0';
    return copy;
}
char *strdup(const char *s) {
    if (failing(FROM)) return NULL;
    const size_t len = strlen(s);
    char *copy = __libc_malloc(len + 1);
    if (copy) memcpy(copy, s, len + 1);
    return copy;
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "no_memory: counted %ld allocation(s), failed %ld\n", atomic_load(&counted),
            atomic_load(&failed));
}
