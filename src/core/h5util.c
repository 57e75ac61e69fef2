/*
 * Checked HDF5 helpers (see h5util.h). Every hid_t opened here is closed here.
 */
#include "h5util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sanity limits for what a corrupt file's types claim: numbers are at most
 * 16 bytes wide, string attributes (the results file keeps the job file in one)
 * at most 16 MB. */
enum { MAX_NUMBER_BYTES = 16, MAX_STRING_BYTES = 1 << 24 };

void gpfq_h5_quiet(void) {
    static int done;
    if (done) return;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    done = 1;
}

gpfq_status gpfq_h5_open_read(const char *path, hid_t *file) {
    gpfq_h5_quiet();
    *file = H5I_INVALID_HID;
    FILE *probe = fopen(path, "rb");
    if (!probe) return gpfq_fail(GPFQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fclose(probe);
    htri_t is_h5 = H5Fis_hdf5(path);
    if (is_h5 <= 0)
        return gpfq_fail(GPFQ_ERR_FORMAT,
                         "%s: not an HDF5 file (no HDF5 signature); expected a gpfq model or "
                         "results file",
                         path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return gpfq_fail(GPFQ_ERR_FORMAT,
                         "%s: HDF5 cannot open it: the file is truncated or corrupt", path);
    *file = f;
    return GPFQ_OK;
}

int gpfq_h5_has_attr(hid_t obj, const char *name) {
    return H5Aexists(obj, name) > 0;
}

int gpfq_h5_has_link(hid_t loc, const char *name) {
    return H5Lexists(loc, name, H5P_DEFAULT) > 0;
}

gpfq_status gpfq_h5_attr_string(hid_t obj, const char *name, char **out) {
    *out = NULL;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0) return gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' is missing", name);
    hid_t type = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    gpfq_status st = GPFQ_OK;
    if (type < 0 || space < 0 || H5Tget_class(type) != H5T_STRING ||
        H5Sget_simple_extent_npoints(space) != 1) {
        st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' must be a single string", name);
    } else if (H5Tis_variable_str(type) > 0) {
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, H5T_VARIABLE);
        H5Tset_cset(mem, H5Tget_cset(type));
        char *value = NULL;
        if (H5Aread(attr, mem, &value) < 0 || !value) {
            st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' cannot be read", name);
        } else {
            *out = strdup(value);
            H5free_memory(value);
            if (!*out) st = gpfq_fail(GPFQ_ERR_NOMEM, "out of memory reading '%s'", name);
        }
        H5Tclose(mem);
    } else if (H5Tget_size(type) > MAX_STRING_BYTES) {
        /* a corrupt size would have us allocate it before HDF5 finds no such data */
        st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' claims a %zu-byte string", name,
                       H5Tget_size(type));
    } else {
        size_t size = H5Tget_size(type);
        char *value = gpfq_calloc(size + 1, 1, "a string attribute");
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, size + 1);
        H5Tset_strpad(mem, H5T_STR_NULLTERM);
        if (!value) {
            st = GPFQ_ERR_NOMEM;
        } else if (H5Aread(attr, mem, value) < 0) {
            free(value);
            st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' cannot be read", name);
        } else {
            *out = value;
        }
        H5Tclose(mem);
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attr);
    return st;
}

static gpfq_status attr_numbers(hid_t obj, const char *name, hid_t mem_type, void *out, int count,
                                int allow_float) {
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0) return gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' is missing", name);
    hid_t type = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    gpfq_status st = GPFQ_OK;
    if (cls != H5T_INTEGER && !(allow_float && cls == H5T_FLOAT)) {
        st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' must be %s", name,
                       allow_float ? "numeric" : "an integer");
    } else if (H5Tget_size(type) == 0 || H5Tget_size(type) > MAX_NUMBER_BYTES) {
        st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' holds %zu-byte numbers", name,
                       H5Tget_size(type));
    } else if (n != count) {
        st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' holds %lld value(s), expected %d", name,
                       (long long)n, count);
    } else if (H5Aread(attr, mem_type, out) < 0) {
        st = gpfq_fail(GPFQ_ERR_FORMAT, "attribute '%s' cannot be read (out of range?)", name);
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attr);
    return st;
}

gpfq_status gpfq_h5_attr_ints(hid_t obj, const char *name, int *out, int count) {
    return attr_numbers(obj, name, H5T_NATIVE_INT, out, count, 0);
}

gpfq_status gpfq_h5_attr_doubles(hid_t obj, const char *name, double *out, int count) {
    return attr_numbers(obj, name, H5T_NATIVE_DOUBLE, out, count, 1);
}

gpfq_status gpfq_h5_dataset_dims(hid_t loc, const char *name, int *rank, hsize_t *dims,
                                 int max_rank) {
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' is missing", name);
    hid_t space = H5Dget_space(ds);
    int r = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    gpfq_status st = GPFQ_OK;
    if (r < 0 || r > max_rank)
        st = gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' has rank %d; at most %d expected", name, r,
                       max_rank);
    else {
        H5Sget_simple_extent_dims(space, dims, NULL);
        *rank = r;
    }
    if (space >= 0) H5Sclose(space);
    H5Dclose(ds);
    return st;
}

static gpfq_status read_dataset(hid_t loc, const char *name, H5T_class_t want, hid_t mem_type,
                                size_t elem, void **out, size_t *count) {
    *out = NULL;
    *count = 0;
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' is missing", name);
    hid_t type = H5Dget_type(ds);
    hid_t space = H5Dget_space(ds);
    hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    gpfq_status st = GPFQ_OK;
    void *buf = NULL;
    size_t bytes = 0;
    if (type < 0 || H5Tget_class(type) != want) {
        st = gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' must hold %s values", name,
                       want == H5T_FLOAT ? "floating-point" : "integer");
    } else if (n < 0) {
        st = gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' has no readable extent", name);
    } else if (H5Tget_size(type) == 0 || H5Tget_size(type) > MAX_NUMBER_BYTES) {
        /* a corrupt type of 2^29-byte numbers makes HDF5 convert for minutes */
        st = gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' holds %zu-byte numbers", name,
                       H5Tget_size(type));
    } else if (!gpfq_mul_size((size_t)n, elem, &bytes)) {
        /* a corrupt extent (2^62 values) must not wrap the buffer size: HDF5 would
         * fill all of them (with the fill value, without any data in the file) */
        st = gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' claims %lld values, too many to read", name,
                       (long long)n);
    } else if (!(buf = gpfq_malloc(bytes, name))) {
        st = GPFQ_ERR_NOMEM;
    } else if (n > 0 && H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        st = gpfq_fail(GPFQ_ERR_FORMAT, "dataset '%s' cannot be read (truncated file?)", name);
    }
    if (st == GPFQ_OK) {
        *out = buf;
        *count = (size_t)n;
    } else {
        free(buf);
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Dclose(ds);
    return st;
}

gpfq_status gpfq_h5_read_floats(hid_t loc, const char *name, float **out, size_t *count) {
    return read_dataset(loc, name, H5T_FLOAT, H5T_NATIVE_FLOAT, sizeof(float), (void **)out, count);
}

gpfq_status gpfq_h5_read_ints(hid_t loc, const char *name, int32_t **out, size_t *count) {
    return read_dataset(loc, name, H5T_INTEGER, H5T_NATIVE_INT32, sizeof(int32_t), (void **)out,
                        count);
}

gpfq_status gpfq_h5_write_attr_string(hid_t obj, const char *name, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    const char *v = value ? value : "";
    herr_t err = attr >= 0 ? H5Awrite(attr, type, &v) : -1;
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    return err < 0 ? gpfq_fail(GPFQ_ERR_IO, "cannot write attribute '%s'", name) : GPFQ_OK;
}

static gpfq_status write_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type,
                              const void *values, int count) {
    hsize_t dims[1] = {(hsize_t)count};
    hid_t space = count == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t attr = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t err = attr >= 0 ? H5Awrite(attr, mem_type, values) : -1;
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    return err < 0 ? gpfq_fail(GPFQ_ERR_IO, "cannot write attribute '%s'", name) : GPFQ_OK;
}

gpfq_status gpfq_h5_write_attr_ints(hid_t obj, const char *name, const int *values, int count) {
    return write_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT, values, count);
}

gpfq_status gpfq_h5_write_attr_doubles(hid_t obj, const char *name, const double *values,
                                       int count) {
    return write_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values, count);
}

gpfq_status gpfq_h5_write_attr_floats(hid_t obj, const char *name, const float *values, int count) {
    return write_attr(obj, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, values, count);
}

static gpfq_status write_dataset(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                                 const void *data, int rank, const hsize_t *dims) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t err = ds >= 0 ? H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : -1;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
    return err < 0 ? gpfq_fail(GPFQ_ERR_IO, "cannot write dataset '%s'", name) : GPFQ_OK;
}

gpfq_status gpfq_h5_write_floats(hid_t loc, const char *name, const float *data, int rank,
                                 const hsize_t *dims) {
    return write_dataset(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, rank, dims);
}

gpfq_status gpfq_h5_write_ints(hid_t loc, const char *name, const int32_t *data, int rank,
                               const hsize_t *dims) {
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= (size_t)dims[i];
    int32_t largest = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t mag = data[i] < 0 ? -data[i] : data[i];
        if (mag > largest) largest = mag;
    }
    hid_t file_type = largest <= 127     ? H5T_STD_I8LE
                      : largest <= 32767 ? H5T_STD_I16LE
                                         : H5T_STD_I32LE;
    return write_dataset(loc, name, file_type, H5T_NATIVE_INT32, data, rank, dims);
}
