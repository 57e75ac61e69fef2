/*
 * Small checked wrappers around the HDF5 C API, shared by the model files and
 * the test fixtures. Each returns a gpfq_status and names the object at fault;
 * HDF5's own error stack printing is switched off by gpfq_h5_quiet().
 */
#ifndef GPFQ_H5UTIL_H
#define GPFQ_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

#include "gpfq/status.h"

/* Turns off HDF5's automatic error printing (once per process). */
void gpfq_h5_quiet(void);

/* Opens an existing file read-only with a clear error for missing, non-HDF5
 * or truncated files. */
gpfq_status gpfq_h5_open_read(const char *path, hid_t *file);

int gpfq_h5_has_attr(hid_t obj, const char *name);
int gpfq_h5_has_link(hid_t loc, const char *name);

/* Reads a string attribute (fixed or variable length) into a new buffer. */
gpfq_status gpfq_h5_attr_string(hid_t obj, const char *name, char **out);
/* Reads an integer attribute holding exactly `count` values. */
gpfq_status gpfq_h5_attr_ints(hid_t obj, const char *name, int *out, int count);
/* Reads a floating-point (or integer) attribute holding exactly `count` values. */
gpfq_status gpfq_h5_attr_doubles(hid_t obj, const char *name, double *out, int count);

/* Dataset shape; rank up to `max_rank`. */
gpfq_status gpfq_h5_dataset_dims(hid_t loc, const char *name, int *rank, hsize_t *dims,
                                 int max_rank);
/* Reads a floating-point dataset as float32 into a new buffer of *count values. */
gpfq_status gpfq_h5_read_floats(hid_t loc, const char *name, float **out, size_t *count);
/* Reads an integer dataset as int32 into a new buffer of *count values. */
gpfq_status gpfq_h5_read_ints(hid_t loc, const char *name, int32_t **out, size_t *count);

gpfq_status gpfq_h5_write_attr_string(hid_t obj, const char *name, const char *value);
gpfq_status gpfq_h5_write_attr_ints(hid_t obj, const char *name, const int *values, int count);
gpfq_status gpfq_h5_write_attr_doubles(hid_t obj, const char *name, const double *values,
                                       int count);
gpfq_status gpfq_h5_write_attr_floats(hid_t obj, const char *name, const float *values, int count);
gpfq_status gpfq_h5_write_floats(hid_t loc, const char *name, const float *data, int rank,
                                 const hsize_t *dims);
/* Writes int32 values in the smallest of int8, int16 and int32 that holds them all. */
gpfq_status gpfq_h5_write_ints(hid_t loc, const char *name, const int32_t *data, int rank,
                               const hsize_t *dims);

#endif
