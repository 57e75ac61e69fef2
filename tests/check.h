/*
 * A minimal test harness: CHECK records a failure with file and line and goes
 * on; a test's main returns check_report(), non-zero when anything failed.
 */
#ifndef GPFQ_TEST_CHECK_H
#define GPFQ_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Checks that `haystack` contains `needle`. */
#define CHECK_CONTAINS(haystack, needle)                                                           \
    CHECK(strstr((haystack), (needle)) != NULL, "message '%s' lacks '%s'", (haystack), (needle))

static inline int check_report(const char *name) {
    if (check_failures)
        fprintf(stderr, "%s: %d of %d checks failed\n", name, check_failures, check_count);
    else
        printf("%s: all %d checks passed\n", name, check_count);
    return check_failures ? 1 : 0;
}

/* Largest |a - b| - (atol + rtol |b|) over n values: <= 0 means within tolerance. */
static inline double check_excess(const float *a, const float *b, size_t n, double atol,
                                  double rtol, double *max_abs) {
    double worst = -INFINITY;
    *max_abs = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d == d)) return INFINITY;
        if (d > *max_abs) *max_abs = d;
        double excess = d - (atol + rtol * fabs((double)b[i]));
        if (excess > worst) worst = excess;
    }
    return worst;
}

/* A deterministic uniform generator in [-1, 1) for test data. */
static inline float check_rand(unsigned long long *state) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*state >> 40) & 0xFFFFFF) / (float)0x800000 - 1.0f;
}

#endif
