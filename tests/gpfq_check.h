/*
 * The checks of check.h that use the library: a call's status, and a model file of the
 * fixtures. check.h itself stays independent of it.
 */
#ifndef GPFQ_TEST_GPFQ_CHECK_H
#define GPFQ_TEST_GPFQ_CHECK_H

#include "check.h"
#include "gpfq/gpfq.h"

/* Checks that a call of the library returns GPFQ_OK, with its error message if not. */
#define CHECK_OK(call) CHECK((call) == GPFQ_OK, "%s", gpfq_last_error())

/* The model file `name` under the fixtures directory (the shipped models are two levels up:
 * "../../data/models/..."), or NULL after a failed check. */
static inline gpfq_model *load_fixture(const char *fixtures, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fixtures, name);
    gpfq_model *m = NULL;
    CHECK_OK(gpfq_model_load(path, &m));
    return m;
}

#endif
