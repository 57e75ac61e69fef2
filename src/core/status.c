/*
 * Per-thread error messages, allocation helpers and the assertion handler.
 */
#include "gpfq/status.h"

#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

enum { GPFQ_ERROR_CAPACITY = 2048 };

static _Thread_local char error_message[GPFQ_ERROR_CAPACITY];

const char *gpfq_last_error(void) {
    return error_message;
}

void gpfq_clear_error(void) {
    error_message[0] = '\0';
}

gpfq_status gpfq_fail(gpfq_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    return status;
}

gpfq_status gpfq_fail_context(gpfq_status status, const char *fmt, ...) {
    char prefix[GPFQ_ERROR_CAPACITY];
    char previous[GPFQ_ERROR_CAPACITY];
    va_list args;
    va_start(args, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, args);
    va_end(args);
    memcpy(previous, error_message, sizeof previous);
    /* truncation is acceptable: the message is for people */
    size_t used = strlen(prefix);
    if (used >= sizeof error_message) used = sizeof error_message - 1;
    memcpy(error_message, prefix, used);
    size_t rest = strlen(previous);
    if (rest > sizeof error_message - 1 - used) rest = sizeof error_message - 1 - used;
    memcpy(error_message + used, previous, rest);
    error_message[used + rest] = '\0';
    return status;
}

const char *gpfq_status_name(gpfq_status status) {
    switch (status) {
    case GPFQ_OK:
        return "ok";
    case GPFQ_ERR_ARG:
        return "invalid argument";
    case GPFQ_ERR_IO:
        return "I/O error";
    case GPFQ_ERR_FORMAT:
        return "format error";
    case GPFQ_ERR_NOMEM:
        return "out of memory";
    case GPFQ_ERR_NUMERIC:
        return "numeric error";
    case GPFQ_ERR_STATE:
        return "invalid state";
    }
    return "unknown error";
}

/*
 * Huge pages for buffers of several MB, on request (GPFQ_HUGEPAGES=1; GPFQ_HUGEPAGES=0 turns
 * them off for the process, also where the kernel would give them unasked): they fault 2 MB at a
 * time, 512 times fewer faults. But a VM that reports free memory to its host (virtio-balloon
 * free page reporting, as on the machine the bench runs on) hands every 2 MB block left free
 * for about two seconds back to the host, and a huge page's first touch then costs 3-6 ms: 160 MB
 * took 260-400 ms on huge pages against 52-107 ms on 4 kB pages, which come from the small free
 * blocks the guest keeps. Huge pages win only on memory freed in the seconds before (160 MB in
 * 8 ms), and touching one first to find out does not tell: a warm first page was often followed
 * by cold ones. In a warm process the page size changes nothing (resnet20 quantize, best of 6:
 * 220-233 ms on huge pages, 220-224 ms without), so only first touches are at stake, and 4 kB
 * pages bound their cost.
 */
enum { HUGE_PAGE = 2 << 20, HUGE_MIN = 4 << 20 };

static _Atomic int huge_pages; /* 1: offer large buffers for huge pages; -1: none at all */

int gpfq_huge_pages(void) {
    return huge_pages;
}

void *gpfq_malloc(size_t bytes, const char *what) {
    void *p = NULL;
    if (bytes >= HUGE_MIN && huge_pages == 1) {
        size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        if (posix_memalign(&p, HUGE_PAGE, rounded) == 0)
            madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure changes nothing */
        else
            p = NULL;
    } else {
        p = malloc(bytes ? bytes : 1);
    }
    if (!p) gpfq_fail(GPFQ_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

/*
 * glibc serves blocks over 128 kB with fresh mmaps and unmaps them on free, so every
 * layer's buffers (transposed weights, U, Grams, patches) would come back as new zero
 * pages: keep freed memory in the heap for reuse instead (the effect of the
 * GLIBC_TUNABLES setting the PyTorch timings use). With GPFQ_HUGEPAGES=1 the heap's
 * first growth is made 80 MB and offered for huge pages, as glibc.malloc.hugetlb=1
 * would (mlp: 5967 page faults for the whole process, 1534 with them).
 */
void gpfq_heap_setup(void) {
    mallopt(M_MMAP_THRESHOLD, 32 << 20); /* glibc's upper bound on 64-bit */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 64 << 20);
    const char *v = getenv("GPFQ_HUGEPAGES");
    if (v && *v && strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
        fprintf(stderr, "gpfq: warning: GPFQ_HUGEPAGES='%s' is not 0 or 1; ignored\n", v);
    /* 0: none even where the kernel's THP mode is "always" (then it would give them unasked) */
    if (v && !strcmp(v, "0") && prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0) huge_pages = -1;
    if (!v || strcmp(v, "1") != 0) return;
    huge_pages = 1;
    void *grow = malloc(16 << 20); /* under the mmap threshold: grows the heap */
    if (!grow) return;
    const uintptr_t lo = ((uintptr_t)grow + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    const uintptr_t hi = (uintptr_t)sbrk(0) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE); /* advice only */
    free(grow);
}

static _Thread_local struct {
    void *p;
    size_t bytes;
    int taken;
} work[GPFQ_WORK_SLOTS];

/* a thread's buffers go when it ends (the main thread's stay until exit, still reachable) */
static pthread_key_t work_key;
static pthread_once_t work_once = PTHREAD_ONCE_INIT;
static int work_keyed; /* 0: no key, so nothing is kept (it could not be freed) */

static void work_release(void *unused) {
    (void)unused;
    for (int k = 0; k < GPFQ_WORK_SLOTS; k++) {
        free(work[k].p);
        work[k].p = NULL;
        work[k].bytes = 0;
    }
}

static void work_key_make(void) {
    work_keyed = pthread_key_create(&work_key, work_release) == 0;
}

void *gpfq_work_take(int slot, size_t bytes) {
    bytes = (bytes ? bytes + 63 : 64) / 64 * 64;
    pthread_once(&work_once, work_key_make);
    if (work[slot].taken || !work_keyed) return aligned_alloc(64, bytes);
    if (work[slot].bytes < bytes) {
        pthread_setspecific(work_key, &work); /* any non-NULL value: the destructor runs */
        free(work[slot].p);
        work[slot].p = aligned_alloc(64, bytes);
        work[slot].bytes = work[slot].p ? bytes : 0;
        if (!work[slot].p) return NULL;
    }
    work[slot].taken = 1;
    return work[slot].p;
}

void gpfq_work_give(int slot, void *p) {
    if (p && p == work[slot].p)
        work[slot].taken = 0;
    else
        free(p);
}

void *gpfq_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        gpfq_fail(GPFQ_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size,
                  what);
    return p;
}

int gpfq_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) {
        gpfq_fail(GPFQ_ERR_ARG, "size overflow: %zu x %zu", a, b);
        return 0;
    }
    *out = a * b;
    return 1;
}

void gpfq_assert_fail(const char *expr, const char *file, int line) {
    fflush(stdout);
    fprintf(stderr, "gpfq: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    abort();
}
