/*
 * Data set readers: IDX (through zlib, which reads gzip and plain files alike)
 * and CIFAR-10 binary batches, plus batch normalization to float.
 */
#include "gpfq/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum { IDX_IMAGES_MAGIC = 0x00000803, IDX_LABELS_MAGIC = 0x00000801 };
enum { CIFAR_SIDE = 32, CIFAR_RECORD = 1 + 3 * 32 * 32 };

void gpfq_dataset_free(gpfq_dataset *data) {
    if (!data) return;
    if (data->mapping)
        munmap(data->mapping, data->mapping_bytes);
    else
        free(data->images);
    free(data->labels);
    memset(data, 0, sizeof *data);
}

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Reads exactly `bytes`, part of `total` of which `before` are read already, or
 * fails with a "truncated" message about the total. */
static gpfq_status gz_read_part(gzFile f, const char *path, void *buf, size_t bytes, size_t before,
                                size_t total, const char *what) {
    size_t done = 0;
    while (done < bytes) {
        unsigned chunk = bytes - done > (1u << 30) ? (1u << 30) : (unsigned)(bytes - done);
        int got = gzread(f, (char *)buf + done, chunk);
        if (got < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            return gpfq_fail(GPFQ_ERR_FORMAT, "%s: cannot read %s: %s", path, what, msg);
        }
        if (got == 0)
            return gpfq_fail(GPFQ_ERR_FORMAT,
                             "%s: file is truncated: expected %zu bytes of %s, found %zu", path,
                             total, what, before + done);
        done += (size_t)got;
    }
    return GPFQ_OK;
}

/* Reads exactly `bytes` or fails with a "truncated" message. */
static gpfq_status gz_read_exact(gzFile f, const char *path, void *buf, size_t bytes,
                                 const char *what) {
    return gz_read_part(f, path, buf, bytes, 0, bytes, what);
}

/* Like gz_read_exact into a new buffer, which grows as the data arrives: a corrupt
 * header announcing more than the file holds (up to 2^56 bytes of IDX images)
 * then fails as truncated having allocated about what the file holds, instead
 * of asking for all of it up front. */
static gpfq_status gz_read_alloc(gzFile f, const char *path, size_t bytes, const char *what,
                                 uint8_t **out) {
    /* 64 MB up front holds Fashion-MNIST's 47 MB in one piece (no copies as it grows); pages
     * a truncated file never fills are never touched */
    size_t cap = bytes < ((size_t)1 << 26) ? bytes : (size_t)1 << 26, done = 0;
    uint8_t *buf = gpfq_malloc(cap, what);
    if (!buf) return GPFQ_ERR_NOMEM;
    while (done < bytes) {
        if (done == cap) {
            size_t grown = cap <= bytes / 2 ? cap * 2 : bytes;
            uint8_t *bigger = realloc(buf, grown);
            if (!bigger) {
                free(buf);
                return gpfq_fail(GPFQ_ERR_NOMEM, "out of memory allocating %zu bytes for %s", grown,
                                 what);
            }
            buf = bigger, cap = grown;
        }
        gpfq_status st = gz_read_part(f, path, buf + done, cap - done, done, bytes, what);
        if (st != GPFQ_OK) {
            free(buf);
            return st;
        }
        done = cap;
    }
    *out = buf;
    return GPFQ_OK;
}

static gpfq_status gz_open(const char *path, gzFile *out) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return gpfq_fail(GPFQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return gpfq_fail(GPFQ_ERR_IO, "%s: is a directory, expected a data file", path);
    *out = gzopen(path, "rb");
    if (!*out) return gpfq_fail(GPFQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(*out, 1 << 20); /* fewer, larger reads and inflate calls than the 8 kB default */
    return GPFQ_OK;
}

/* Reads an IDX header: magic and `ndims` big-endian sizes. */
static gpfq_status idx_header(gzFile f, const char *path, uint32_t magic, int ndims,
                              uint32_t *dims) {
    unsigned char head[16];
    GPFQ_TRY(gz_read_exact(f, path, head, 4 + 4 * (size_t)ndims, "the IDX header"));
    uint32_t got = be32(head);
    if (got != magic)
        return gpfq_fail(GPFQ_ERR_FORMAT,
                         "%s: wrong magic number 0x%08x, expected 0x%08x (an IDX %s file)", path,
                         got, magic, magic == IDX_IMAGES_MAGIC ? "image" : "label");
    for (int i = 0; i < ndims; i++) dims[i] = be32(head + 4 + 4 * i);
    return GPFQ_OK;
}

static gpfq_status check_trailing(gzFile f, const char *path) {
    char extra;
    if (gzread(f, &extra, 1) == 1)
        return gpfq_fail(GPFQ_ERR_FORMAT, "%s: file has bytes after the data its header announces",
                         path);
    return GPFQ_OK;
}

static gpfq_status read_idx_images_from(const char *path, gpfq_dataset *out);

/* An IDX image size worth reading: 1..4096 pixels each way */
static int plausible_size(uint64_t h, uint64_t w) {
    return h >= 1 && w >= 1 && h <= 4096 && w <= 4096;
}

/*
 * The decompressed-image cache. Inflating Fashion-MNIST's 26 MB of gzipped training images
 * takes about 0.2 s of every command, its 4.4 MB of test images about 0.03 s (`gpfq eval
 * --limit 1` on lenet5: 0.10-0.14 s, 0.07-0.09 s with them cached); so the images of a gzipped
 * IDX file of CACHE_MIN bytes or more are kept decompressed in the cache directory, named after
 * the file and keyed by its path, size, inode and modification time: a changed source is
 * decompressed again. A cache file is mapped (map_idx_images), or read when it cannot be; one
 * that cannot be read back whole is ignored (and replaced); one that cannot be written is
 * skipped. A cache file must not be changed in place while gpfq runs (it writes a new one and
 * renames it). GPFQ_CACHE_DIR sets the directory (empty: no cache), else
 * $XDG_CACHE_HOME/gpfq, else ~/.cache/gpfq.
 */
enum { CACHE_MIN = 1 << 20 };

static int cache_dir(char *out, size_t size) {
    const char *d = getenv("GPFQ_CACHE_DIR");
    if (d) {
        if (!*d) return 0;
        snprintf(out, size, "%s", d);
    } else if ((d = getenv("XDG_CACHE_HOME")) && *d) {
        snprintf(out, size, "%s/gpfq", d);
    } else if ((d = getenv("HOME")) && *d) {
        snprintf(out, size, "%s/.cache/gpfq", d);
    } else {
        return 0;
    }
    /* mkdir -p */
    for (char *p = out + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(out, 0755);
            *p = '/';
        }
    return mkdir(out, 0755) == 0 || errno == EEXIST;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    return h;
}

/* The cache file for a gzipped IDX image file, or 0 when it has none. */
static int cache_path(const char *path, char *out, size_t size) {
    struct stat sb;
    size_t len = strlen(path);
    if (len < 4 || strcmp(path + len - 3, ".gz") != 0 || stat(path, &sb) != 0 ||
        !S_ISREG(sb.st_mode) || sb.st_size < CACHE_MIN)
        return 0;
    char dir[4096], *real = realpath(path, NULL);
    if (!real) return 0;
    uint64_t h = fnv1a(0xCBF29CE484222325ULL, real, strlen(real));
    free(real);
    const int64_t stamp[5] = {(int64_t)sb.st_size, (int64_t)sb.st_ino, (int64_t)sb.st_dev,
                              (int64_t)sb.st_mtim.tv_sec, (int64_t)sb.st_mtim.tv_nsec};
    h = fnv1a(h, stamp, sizeof stamp);
    if (!cache_dir(dir, sizeof dir)) return 0;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    int n = snprintf(out, size, "%s/%.*s-%016llx.idx", dir, (int)(strlen(base) - 3), base,
                     (unsigned long long)h);
    return n > 0 && (size_t)n < size;
}

/* Writes the images as a plain IDX file, atomically (a reader sees all of it or nothing). */
static void cache_write(const char *cached, const gpfq_dataset *d) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%.4096s.tmp.%ld", cached, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return;
    const uint32_t v[4] = {IDX_IMAGES_MAGIC, (uint32_t)d->n, (uint32_t)d->h, (uint32_t)d->w};
    unsigned char head[16];
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 4; b++) head[4 * i + b] = (unsigned char)(v[i] >> (24 - 8 * b));
    const size_t bytes = d->n * (size_t)d->h * (size_t)d->w;
    int ok =
        fwrite(head, 1, sizeof head, f) == sizeof head && fwrite(d->images, 1, bytes, f) == bytes;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, cached) != 0) unlink(tmp);
}

/*
 * The cache file is mapped, not read: no copy into fresh memory (47 MB for Fashion-MNIST's
 * training images, 0.11 s of a traced sweep rank on a VM whose first touch of a page is slow), and
 * the ranks of a sweep share the page cache's copy. The pages are mapped up front
 * (MAP_POPULATE) in one call: left to fault in one by one as calibration batches are drawn,
 * they slowed the quantization loop (mlp --reference, three batches: 56-58 ms against 49-54
 * ms populated, interleaved). The file is replaced by rename only, so a mapping stays whole.
 * A header or size that does not match leaves the file to the reader.
 */
static int map_idx_images(const char *path, gpfq_dataset *out) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat sb;
    void *map = MAP_FAILED;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size >= 16)
        map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return 0;
    const unsigned char *p = map;
    const uint64_t n = be32(p + 4), h = be32(p + 8), w = be32(p + 12);
    if (be32(p) != IDX_IMAGES_MAGIC || !plausible_size(h, w) ||
        16 + n * h * w != (uint64_t)sb.st_size) {
        munmap(map, (size_t)sb.st_size);
        return 0;
    }
    out->n = (size_t)n;
    out->c = 1;
    out->h = (int)h;
    out->w = (int)w;
    out->images = (uint8_t *)map + 16; /* read-only pages: nothing writes a data set's images */
    out->mapping = map;
    out->mapping_bytes = (size_t)sb.st_size;
    return 1;
}

static gpfq_status read_idx_images(const char *path, gpfq_dataset *out) {
    char cached[4200];
    const int cacheable = cache_path(path, cached, sizeof cached);
    if (cacheable) {
        if (map_idx_images(cached, out)) return GPFQ_OK;
        if (read_idx_images_from(cached, out) == GPFQ_OK) return GPFQ_OK;
        free(out->images), out->images = NULL;
        gpfq_clear_error();
    }
    GPFQ_TRY(read_idx_images_from(path, out));
    if (cacheable) cache_write(cached, out);
    return GPFQ_OK;
}

static gpfq_status read_idx_images_from(const char *path, gpfq_dataset *out) {
    gzFile f;
    GPFQ_TRY(gz_open(path, &f));
    uint32_t dims[3] = {0, 0, 0};
    gpfq_status st = idx_header(f, path, IDX_IMAGES_MAGIC, 3, dims);
    if (st == GPFQ_OK && !plausible_size(dims[1], dims[2]))
        st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: image size %ux%u is not plausible", path, dims[1],
                       dims[2]);
    size_t bytes = 0;
    if (st == GPFQ_OK) {
        bytes = (size_t)dims[0] * dims[1] * dims[2];
        out->n = dims[0];
        out->c = 1;
        out->h = (int)dims[1];
        out->w = (int)dims[2];
        st = gz_read_alloc(f, path, bytes, "image data", &out->images);
    }
    if (st == GPFQ_OK) st = check_trailing(f, path);
    gzclose(f);
    return st;
}

static gpfq_status check_labels(const char *path, const uint8_t *labels, size_t n,
                                int num_classes) {
    for (size_t i = 0; i < n; i++)
        if (labels[i] >= num_classes)
            return gpfq_fail(GPFQ_ERR_FORMAT, "%s: label %d of image %zu is out of range (0..%d)",
                             path, labels[i], i, num_classes - 1);
    return GPFQ_OK;
}

static gpfq_status read_idx_labels(const char *path, gpfq_dataset *out) {
    gzFile f;
    GPFQ_TRY(gz_open(path, &f));
    uint32_t count = 0;
    gpfq_status st = idx_header(f, path, IDX_LABELS_MAGIC, 1, &count);
    if (st == GPFQ_OK && count != out->n)
        st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: holds %u labels but the image file has %zu images",
                       path, count, out->n);
    if (st == GPFQ_OK && !(out->labels = gpfq_malloc(out->n, "labels"))) st = GPFQ_ERR_NOMEM;
    if (st == GPFQ_OK) st = gz_read_exact(f, path, out->labels, out->n, "labels");
    if (st == GPFQ_OK) st = check_trailing(f, path);
    if (st == GPFQ_OK) st = check_labels(path, out->labels, out->n, out->num_classes);
    gzclose(f);
    return st;
}

gpfq_status gpfq_idx_load(const char *images_path, const char *labels_path, int num_classes,
                          gpfq_dataset *out) {
    memset(out, 0, sizeof *out);
    out->num_classes = num_classes;
    gpfq_status st = read_idx_images(images_path, out);
    if (st == GPFQ_OK) st = read_idx_labels(labels_path, out);
    if (st != GPFQ_OK) gpfq_dataset_free(out);
    return st;
}

static gpfq_status read_cifar_file(const char *path, gpfq_dataset *out, size_t *capacity) {
    gzFile f;
    GPFQ_TRY(gz_open(path, &f));
    unsigned char *record = malloc(CIFAR_RECORD);
    gpfq_status st = record ? GPFQ_OK : gpfq_fail(GPFQ_ERR_NOMEM, "out of memory");
    const size_t image_bytes = CIFAR_RECORD - 1;
    size_t in_file = 0;
    while (st == GPFQ_OK) {
        int got = gzread(f, record, CIFAR_RECORD);
        if (got == 0) break;
        if (got != CIFAR_RECORD) {
            st = gpfq_fail(GPFQ_ERR_FORMAT,
                           "%s: file is truncated: record %zu has %d of %d bytes (CIFAR-10 "
                           "records are 1 label byte + 3072 pixel bytes)",
                           path, in_file, got < 0 ? 0 : got, CIFAR_RECORD);
            break;
        }
        if (record[0] >= out->num_classes) {
            st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: label %d of record %zu is out of range (0..%d)",
                           path, record[0], in_file, out->num_classes - 1);
            break;
        }
        if (out->n == *capacity) {
            size_t grown = *capacity ? *capacity * 2 : 10000;
            uint8_t *images = realloc(out->images, grown * image_bytes);
            if (images) out->images = images;
            uint8_t *labels = images ? realloc(out->labels, grown) : NULL;
            if (labels) out->labels = labels;
            if (!images || !labels) {
                st = gpfq_fail(GPFQ_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            *capacity = grown;
        }
        out->labels[out->n] = record[0];
        memcpy(out->images + out->n * image_bytes, record + 1, image_bytes);
        out->n++;
        in_file++;
    }
    if (st == GPFQ_OK && in_file == 0)
        st = gpfq_fail(GPFQ_ERR_FORMAT, "%s: holds no CIFAR-10 records (empty file)", path);
    free(record);
    gzclose(f);
    return st;
}

gpfq_status gpfq_cifar10_load(const char *const *paths, int n_paths, gpfq_dataset *out) {
    memset(out, 0, sizeof *out);
    out->c = 3;
    out->h = out->w = CIFAR_SIDE;
    out->num_classes = 10;
    size_t capacity = 0;
    gpfq_status st = GPFQ_OK;
    for (int i = 0; st == GPFQ_OK && i < n_paths; i++)
        st = read_cifar_file(paths[i], out, &capacity);
    if (st != GPFQ_OK) gpfq_dataset_free(out);
    return st;
}

const char *gpfq_dataset_canonical(const char *name) {
    static const struct {
        const char *alias, *canonical;
    } names[] = {
        {"fashion-mnist", "fashion-mnist"},
        {"fashion_mnist", "fashion-mnist"},
        {"fashionmnist", "fashion-mnist"},
        {"fmnist", "fashion-mnist"},
        {"fashion", "fashion-mnist"},
        {"mnist", "mnist"},
        {"cifar10", "cifar10"},
        {"cifar-10", "cifar10"},
        {"cifar_10", "cifar10"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(name, names[i].alias) == 0) return names[i].canonical;
    return NULL;
}

const char *gpfq_dataset_default_dir(const char *name) {
    const char *canonical = gpfq_dataset_canonical(name);
    if (canonical && strcmp(canonical, "fashion-mnist") == 0) return GPFQ_FASHION_MNIST_DIR;
    return NULL;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* dir/stem, or dir/stem.gz when only that exists. */
static void idx_path(const char *dir, const char *stem, char *out, size_t size) {
    snprintf(out, size, "%s/%s", dir, stem);
    if (file_exists(out)) return;
    snprintf(out, size, "%s/%s.gz", dir, stem);
}

gpfq_status gpfq_dataset_open(const char *name, const char *dir, gpfq_split split,
                              gpfq_dataset *out) {
    memset(out, 0, sizeof *out);
    const char *canonical = gpfq_dataset_canonical(name);
    if (!canonical)
        return gpfq_fail(GPFQ_ERR_ARG,
                         "unknown data set '%s'; known: fashion-mnist, mnist, cifar10", name);
    if (!dir) dir = gpfq_dataset_default_dir(canonical);
    if (!dir)
        return gpfq_fail(GPFQ_ERR_ARG,
                         "data set '%s' has no default location; give its directory with "
                         "--data-dir",
                         canonical);
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return gpfq_fail(GPFQ_ERR_IO, "data directory %s: %s%s", dir,
                         stat(dir, &sb) != 0 ? strerror(errno) : "not a directory",
                         strcmp(canonical, "fashion-mnist") == 0
                             ? " (install Debian's dataset-fashion-mnist package)"
                             : "");
    char images[4096], labels[4096];
    if (strcmp(canonical, "cifar10") == 0) {
        char names[5][4096];
        const char *paths[5];
        int n = 0;
        if (split == GPFQ_SPLIT_TEST) {
            snprintf(names[n], sizeof names[n], "%s/test_batch.bin", dir);
            paths[n] = names[n];
            n++;
        } else {
            for (int b = 1; b <= 5; b++, n++) {
                snprintf(names[n], sizeof names[n], "%s/data_batch_%d.bin", dir, b);
                paths[n] = names[n];
            }
        }
        return gpfq_cifar10_load(paths, n, out);
    }
    const char *prefix = split == GPFQ_SPLIT_TEST ? "t10k" : "train";
    char stem[64];
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", prefix);
    idx_path(dir, stem, images, sizeof images);
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", prefix);
    idx_path(dir, stem, labels, sizeof labels);
    return gpfq_idx_load(images, labels, 10, out);
}

void gpfq_dataset_batch(const gpfq_dataset *data, const float *mean, const float *std, size_t first,
                        const size_t *indices, size_t count, float *out) {
    const size_t plane = (size_t)data->h * data->w;
    const size_t image = plane * (size_t)data->c;
    for (size_t i = 0; i < count; i++) {
        size_t src = indices ? indices[i] : first + i;
        const uint8_t *pixels = data->images + src * image;
        float *dst = out + i * image;
        for (int c = 0; c < data->c; c++)
            for (size_t k = 0; k < plane; k++) {
                float x = (float)pixels[c * plane + k] / 255.0f;
                dst[c * plane + k] = (x - mean[c]) / std[c];
            }
    }
}
