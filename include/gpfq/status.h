/*
 * Status codes and error messages shared by the whole library.
 *
 * Recoverable errors (a bad file, a bad option, out of memory) are returned as a
 * gpfq_status; the message that goes with it (what went wrong, where, and what to
 * do) is kept per thread and read with gpfq_last_error(). Broken invariants are
 * bugs and abort through GPFQ_ASSERT with the file and line.
 */
#ifndef GPFQ_STATUS_H
#define GPFQ_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GPFQ_OK = 0,
    GPFQ_ERR_ARG = 1,     /* a bad argument or option value */
    GPFQ_ERR_IO = 2,      /* a file that cannot be opened, read or written */
    GPFQ_ERR_FORMAT = 3,  /* a file whose content is malformed */
    GPFQ_ERR_NOMEM = 4,   /* an allocation failed */
    GPFQ_ERR_NUMERIC = 5, /* numbers went non-finite */
    GPFQ_ERR_STATE = 6,   /* an operation that does not fit the object's state */
} gpfq_status;

/* The message of the last error set on this thread ("" when none). */
const char *gpfq_last_error(void);

/* Sets the message (printf-style) and returns `status`, so that error paths read
 * `return gpfq_fail(GPFQ_ERR_FORMAT, "%s: ...", path);`. */
gpfq_status gpfq_fail(gpfq_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends context ("while loading x: ") to the current message; returns `status`. */
gpfq_status gpfq_fail_context(gpfq_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void gpfq_clear_error(void);

/* A short name for a status ("format error", ...). */
const char *gpfq_status_name(gpfq_status status);

/* Allocation helpers: on failure they set GPFQ_ERR_NOMEM with the size and
 * return NULL. `what` names the buffer in the message. */
void *gpfq_malloc(size_t bytes, const char *what);
void *gpfq_calloc(size_t count, size_t size, const char *what);

/* Per-call buffers of the direct conv kernels (padded planes, staged outputs, packed weights):
 * each thread keeps one buffer per slot, 64-byte aligned, and hands it out again at the next
 * call, grown when a call needs more. A pass's convs then find pages already touched where fresh
 * heap blocks of varying sizes crept over new ones (resnet20's float evaluation: 5083 page faults
 * without, 3597 with). The GEMM's packed panels stay on malloc: a kept buffer grows through
 * the quantize's larger products, where freed heap blocks were there to take (mlp: 145 more page
 * faults). A slot still taken (a nested call) gives a buffer of its own. NULL when out of memory
 * (no error set: the callers fall back). */
enum { GPFQ_WORK_CONV, GPFQ_WORK_SLOTS };
void *gpfq_work_take(int slot, size_t bytes);
void gpfq_work_give(int slot, void *p);

/* Process-wide malloc settings for a program's main(): freed memory stays in the
 * heap for reuse; with GPFQ_HUGEPAGES=1 the heap and buffers of 4 MB and more are
 * offered for transparent huge pages, with GPFQ_HUGEPAGES=0 the process gets none
 * (PR_SET_THP_DISABLE), and otherwise none are asked for (the kernel's THP mode
 * decides: "always" gives them, "madvise" does not). */
void gpfq_heap_setup(void);

/* What gpfq_heap_setup chose: 1 huge pages asked for (GPFQ_HUGEPAGES=1), -1 none
 * for the process (GPFQ_HUGEPAGES=0), 0 none asked for. */
int gpfq_huge_pages(void);

/* Overflow-checked size product; returns 0 and sets an error on overflow. */
int gpfq_mul_size(size_t a, size_t b, size_t *out);

void gpfq_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#define GPFQ_ASSERT(x)                                                                             \
    do {                                                                                           \
        if (!(x)) gpfq_assert_fail(#x, __FILE__, __LINE__);                                        \
    } while (0)

/* Propagates a non-OK status to the caller. */
#define GPFQ_TRY(expr)                                                                             \
    do {                                                                                           \
        gpfq_status gpfq_try_status_ = (expr);                                                     \
        if (gpfq_try_status_ != GPFQ_OK) return gpfq_try_status_;                                  \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
