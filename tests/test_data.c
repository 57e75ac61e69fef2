/*
 * The IDX and CIFAR-10 readers on tiny files made here: valid files (gzip and
 * plain) read back exactly, and every malformed case gets its own message.
 *
 * `test_data --write-idx DIR N` writes a tiny Fashion-MNIST-shaped test split
 * (N images, 28x28) and train split (2N images, labels i % 10) into DIR for the
 * command-line tests.
 */
#include "check.h"

#include "gpfq/gpfq.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[256];

static void path_in(char *out, const char *name) {
    snprintf(out, 512, "%s/%s", tmpdir, name);
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

/* Writes bytes to a file, gzip-compressed when gz is set. */
static void write_bytes(const char *path, const void *data, size_t n, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        gzwrite(f, data, (unsigned)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* IDX images: magic, n, rows, cols, then pixels (pixel = (i * 7 + k) % 256). */
static void write_idx_images(const char *path, uint32_t magic, uint32_t n, uint32_t rows,
                             uint32_t cols, size_t pixels_written, int gz) {
    size_t size = 16 + pixels_written;
    unsigned char *buf = malloc(size);
    put_be32(buf, magic), put_be32(buf + 4, n), put_be32(buf + 8, rows), put_be32(buf + 12, cols);
    for (size_t k = 0; k < pixels_written; k++) buf[16 + k] = (unsigned char)((k * 7) % 256);
    write_bytes(path, buf, size, gz);
    free(buf);
}

static void write_idx_labels(const char *path, uint32_t magic, uint32_t n, size_t written,
                             int bad_index, int gz) {
    unsigned char *buf = malloc(8 + written);
    put_be32(buf, magic), put_be32(buf + 4, n);
    for (size_t k = 0; k < written; k++) buf[8 + k] = (unsigned char)(k % 10);
    if (bad_index >= 0) buf[8 + bad_index] = 12;
    write_bytes(path, buf, 8 + written, gz);
    free(buf);
}

static void expect_error(gpfq_status st, gpfq_status want, const char *needle, const char *what) {
    CHECK(st == want, "%s: status %d (%s), expected %d", what, st, gpfq_last_error(), want);
    CHECK_CONTAINS(gpfq_last_error(), needle);
}

static void test_idx(void) {
    char img[512], lab[512];
    for (int gz = 0; gz <= 1; gz++) {
        path_in(img, gz ? "img.gz" : "img");
        path_in(lab, gz ? "lab.gz" : "lab");
        write_idx_images(img, 0x803, 3, 4, 5, 3 * 20, gz);
        write_idx_labels(lab, 0x801, 3, 3, -1, gz);
        gpfq_dataset d;
        gpfq_status st = gpfq_idx_load(img, lab, 10, &d);
        CHECK(st == GPFQ_OK, "valid IDX (gz=%d): %s", gz, gpfq_last_error());
        if (st != GPFQ_OK) continue;
        CHECK(d.n == 3 && d.c == 1 && d.h == 4 && d.w == 5, "IDX shape %zux%dx%dx%d", d.n, d.c, d.h,
              d.w);
        CHECK(d.images[21] == (21 * 7) % 256 && d.labels[2] == 2, "IDX content");
        /* normalization as torchvision does it, bit for bit, on every pixel of two images
         * (Fashion-MNIST's mean and std: divisions that round) */
        float mean = 0.2860f, std = 0.3530f, out[40];
        const size_t picked[2] = {2, 0};
        gpfq_dataset_batch(&d, &mean, &std, 0, picked, 2, out);
        int wrong = 0;
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 20; k++) {
                volatile float x = (float)d.images[picked[i] * 20 + k] / 255.0f;
                const float want = (x - mean) / std;
                wrong += memcmp(&out[i * 20 + k], &want, sizeof want) != 0;
            }
        CHECK(wrong == 0, "%d normalized values differ from (x / 255 - mean) / std", wrong);
        gpfq_dataset_free(&d);
    }
    gpfq_dataset d;
    path_in(img, "bad_img");
    path_in(lab, "bad_lab");
    write_idx_images(img, 0x801, 3, 4, 5, 60, 0);
    write_idx_labels(lab, 0x801, 3, 3, -1, 0);
    expect_error(gpfq_idx_load(img, lab, 10, &d), GPFQ_ERR_FORMAT, "wrong magic number 0x00000801",
                 "image magic");
    write_idx_images(img, 0x803, 3, 4, 5, 59, 1);
    expect_error(gpfq_idx_load(img, lab, 10, &d), GPFQ_ERR_FORMAT,
                 "truncated: expected 60 bytes of image data, found 59", "short images");
    write_idx_images(img, 0x803, 3, 4, 5, 60, 0);
    write_idx_labels(lab, 0x803, 3, 3, -1, 0);
    expect_error(gpfq_idx_load(img, lab, 10, &d), GPFQ_ERR_FORMAT, "expected 0x00000801",
                 "label magic");
    write_idx_labels(lab, 0x801, 3, 2, -1, 0);
    expect_error(gpfq_idx_load(img, lab, 10, &d), GPFQ_ERR_FORMAT, "truncated", "short labels");
    write_idx_labels(lab, 0x801, 4, 4, -1, 0);
    expect_error(gpfq_idx_load(img, lab, 10, &d), GPFQ_ERR_FORMAT,
                 "holds 4 labels but the image file has 3 images", "count mismatch");
    write_idx_labels(lab, 0x801, 3, 3, 1, 0);
    expect_error(gpfq_idx_load(img, lab, 10, &d), GPFQ_ERR_FORMAT,
                 "label 12 of image 1 is out of range (0..9)", "label range");
    write_bytes(img, "\x00\x00", 2, 0);
    expect_error(gpfq_idx_load(img, lab, 10, &d), GPFQ_ERR_FORMAT, "truncated", "tiny file");
    path_in(img, "does_not_exist");
    expect_error(gpfq_idx_load(img, lab, 10, &d), GPFQ_ERR_IO, "No such file", "missing file");
    expect_error(gpfq_dataset_open("imagenet", tmpdir, GPFQ_SPLIT_TEST, &d), GPFQ_ERR_ARG,
                 "unknown data set 'imagenet'", "unknown data set");
    expect_error(gpfq_dataset_open("cifar10", NULL, GPFQ_SPLIT_TEST, &d), GPFQ_ERR_ARG,
                 "--data-dir", "cifar without a directory");
    CHECK(strcmp(gpfq_dataset_canonical("FashionMNIST"), "fashion-mnist") == 0, "alias");
}

static void write_cifar(const char *path, int records, int short_last, int bad_label) {
    size_t size = (size_t)records * 3073 - (short_last ? 100 : 0);
    unsigned char *buf = malloc(size);
    for (size_t k = 0; k < size; k++) buf[k] = (unsigned char)(k % 251);
    for (int r = 0; r < records; r++)
        if ((size_t)r * 3073 < size) buf[(size_t)r * 3073] = (unsigned char)(r % 10);
    if (bad_label >= 0) buf[(size_t)bad_label * 3073] = 10;
    write_bytes(path, buf, size, 0);
    free(buf);
}

static void test_cifar(void) {
    char a[512], b[512];
    path_in(a, "data_batch_1.bin");
    path_in(b, "test_batch.bin");
    write_cifar(a, 3, 0, -1);
    write_cifar(b, 2, 0, -1);
    const char *paths[2] = {a, b};
    gpfq_dataset d;
    gpfq_status st = gpfq_cifar10_load(paths, 2, &d);
    CHECK(st == GPFQ_OK, "valid CIFAR: %s", gpfq_last_error());
    if (st == GPFQ_OK) {
        CHECK(d.n == 5 && d.c == 3 && d.h == 32 && d.w == 32, "CIFAR shape");
        CHECK(d.labels[4] == 1 && d.images[3 * 3072 + 5] == (1 + 5) % 251,
              "CIFAR content (second file appended)");
        gpfq_dataset_free(&d);
    }
    st = gpfq_dataset_open("cifar10", tmpdir, GPFQ_SPLIT_TEST, &d);
    CHECK(st == GPFQ_OK && d.n == 2, "cifar10 test split from a directory: %s", gpfq_last_error());
    gpfq_dataset_free(&d);
    expect_error(gpfq_dataset_open("cifar10", tmpdir, GPFQ_SPLIT_TRAIN, &d), GPFQ_ERR_IO,
                 "data_batch_2.bin", "missing training batch");
    write_cifar(a, 3, 1, -1);
    expect_error(gpfq_cifar10_load(paths, 1, &d), GPFQ_ERR_FORMAT,
                 "truncated: record 2 has 2973 of 3073 bytes", "short CIFAR");
    write_cifar(a, 3, 0, 1);
    expect_error(gpfq_cifar10_load(paths, 1, &d), GPFQ_ERR_FORMAT,
                 "label 10 of record 1 is out of range (0..9)", "CIFAR label range");
    write_bytes(a, "", 0, 0);
    expect_error(gpfq_cifar10_load(paths, 1, &d), GPFQ_ERR_FORMAT, "empty file", "empty CIFAR");
}

/* Train images: pseudo-random pixels (a fixed LCG), so that every image differs
 * and a calibration batch depends on which images are drawn. */
static void write_train_images(const char *path, uint32_t n) {
    size_t pixels = (size_t)n * 784, size = 16 + pixels;
    unsigned char *buf = malloc(size);
    put_be32(buf, 0x803), put_be32(buf + 4, n), put_be32(buf + 8, 28), put_be32(buf + 12, 28);
    uint32_t state = 12345;
    for (size_t k = 0; k < pixels; k++) {
        state = state * 1664525u + 1013904223u;
        buf[16 + k] = (unsigned char)(state >> 24);
    }
    write_bytes(path, buf, size, 1);
    free(buf);
}

static int write_idx_dir(const char *dir, uint32_t n) {
    char img[512], lab[512];
    mkdir(dir, 0755);
    snprintf(img, sizeof img, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(lab, sizeof lab, "%s/t10k-labels-idx1-ubyte", dir);
    write_idx_images(img, 0x803, n, 28, 28, (size_t)n * 784, 1);
    write_idx_labels(lab, 0x801, n, n, -1, 0);
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(lab, sizeof lab, "%s/train-labels-idx1-ubyte", dir);
    write_train_images(img, 2 * n);
    write_idx_labels(lab, 0x801, 2 * n, (size_t)2 * n, -1, 0);
    return 0;
}

/* .idx files in dir, and the path of one of them */
static int cache_files(const char *dir, char *one) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls '%s' 2>/dev/null | grep -c '\\.idx$'", dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (!p || fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    snprintf(cmd, sizeof cmd, "ls '%s'/*.idx 2>/dev/null | head -n1", dir);
    p = popen(cmd, "r");
    one[0] = '\0';
    if (p && fgets(one, 512, p)) one[strcspn(one, "\n")] = '\0';
    if (p) pclose(p);
    return n;
}

/* The decompressed-image cache: a gzipped image file of 1 MB or more is kept decompressed,
 * read back on the next load, ignored when damaged, keyed by the source's identity, and
 * not used when GPFQ_CACHE_DIR is empty. */
static void test_cache(void) {
    char img[512], lab[512], dir[512], file[512];
    path_in(img, "big-images-idx3-ubyte.gz");
    path_in(lab, "big-labels-idx1-ubyte");
    path_in(dir, "cache/sub");
    const uint32_t n = 11000; /* 8.6 MB of incompressible pixels */
    const size_t bytes = (size_t)n * 784;
    unsigned char *buf = malloc(16 + bytes);
    put_be32(buf, 0x803), put_be32(buf + 4, n), put_be32(buf + 8, 28), put_be32(buf + 12, 28);
    uint64_t x = 88172645463325252ULL;
    for (size_t k = 0; k < bytes; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[16 + k] = (unsigned char)x;
    }
    gzFile gz = gzopen(img, "wb1");
    gzwrite(gz, buf, (unsigned)(16 + bytes));
    gzclose(gz);
    write_idx_labels(lab, 0x801, n, n, -1, 0);
    setenv("GPFQ_CACHE_DIR", dir, 1);

    gpfq_dataset a, b;
    CHECK(gpfq_idx_load(img, lab, 10, &a) == GPFQ_OK, "%s", gpfq_last_error());
    CHECK(a.n == n && memcmp(a.images, buf + 16, bytes) == 0, "images read from the gzip file");
    CHECK(cache_files(dir, file) == 1, "one cache file in %s (the directory made)", dir);
    CHECK(gpfq_idx_load(img, lab, 10, &b) == GPFQ_OK && memcmp(a.images, b.images, bytes) == 0,
          "the second load gives the same images");
    CHECK(!a.mapping && b.mapping && b.images == (uint8_t *)b.mapping + 16,
          "the gzip file is read, the cache file mapped");
    gpfq_dataset_free(&b);
    /* the second load reads the cache: a byte changed there shows */
    FILE *f = fopen(file, "r+b");
    CHECK(f && fseek(f, 16, SEEK_SET) == 0 && fputc(buf[16] ^ 0xFF, f) != EOF, "edit %s", file);
    if (f) fclose(f);
    CHECK(gpfq_idx_load(img, lab, 10, &b) == GPFQ_OK && b.images[0] == (buf[16] ^ 0xFF),
          "the cache file is what the next load reads");
    gpfq_dataset_free(&b);
    /* a cache file whose header does not match is not mapped; the reader rejects it too */
    f = fopen(file, "r+b");
    CHECK(f && fputc(0x01, f) != EOF, "edit the magic of %s", file);
    if (f) fclose(f);
    CHECK(gpfq_idx_load(img, lab, 10, &b) == GPFQ_OK && !b.mapping &&
              memcmp(a.images, b.images, bytes) == 0,
          "a cache file with a wrong magic: the images come from the gzip file");
    gpfq_dataset_free(&b);
    CHECK(gpfq_idx_load(img, lab, 10, &b) == GPFQ_OK && b.mapping &&
              memcmp(a.images, b.images, bytes) == 0,
          "the cache file written again is mapped");
    gpfq_dataset_free(&b);
    /* a damaged cache file is ignored and written again */
    CHECK(truncate(file, 1000) == 0, "truncate %s", file);
    CHECK(gpfq_idx_load(img, lab, 10, &b) == GPFQ_OK && memcmp(a.images, b.images, bytes) == 0,
          "a truncated cache file: the images come from the gzip file");
    gpfq_dataset_free(&b);
    struct stat sb;
    CHECK(stat(file, &sb) == 0 && (size_t)sb.st_size == 16 + bytes,
          "the cache file is whole again");
    /* a changed source gets a cache file of its own */
    struct timespec when[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
    CHECK(utimensat(AT_FDCWD, img, when, 0) == 0, "set the mtime of %s", img);
    CHECK(gpfq_idx_load(img, lab, 10, &b) == GPFQ_OK && memcmp(a.images, b.images, bytes) == 0,
          "images after the source changed");
    gpfq_dataset_free(&b);
    CHECK(cache_files(dir, file) == 2, "a second cache file for the changed source");
    /* no cache when GPFQ_CACHE_DIR is empty */
    setenv("GPFQ_CACHE_DIR", "", 1);
    CHECK(utimensat(AT_FDCWD, img, (struct timespec[2]){{0, UTIME_OMIT}, {2000000000, 0}}, 0) == 0,
          "set the mtime of %s", img);
    CHECK(gpfq_idx_load(img, lab, 10, &b) == GPFQ_OK && memcmp(a.images, b.images, bytes) == 0,
          "images without a cache");
    gpfq_dataset_free(&b);
    CHECK(cache_files(dir, file) == 2, "no cache file written with GPFQ_CACHE_DIR empty");
    /* a gzipped file under 1 MB inflates faster than a cache file pays: not cached */
    char small[512], small_lab[512];
    path_in(small, "small-images-idx3-ubyte.gz");
    path_in(small_lab, "small-labels-idx1-ubyte");
    const uint32_t few = 1200; /* 0.94 MB, incompressible */
    put_be32(buf + 4, few);
    gz = gzopen(small, "wb1");
    gzwrite(gz, buf, (unsigned)(16 + (size_t)few * 784));
    gzclose(gz);
    write_idx_labels(small_lab, 0x801, few, few, -1, 0);
    setenv("GPFQ_CACHE_DIR", dir, 1);
    CHECK(gpfq_idx_load(small, small_lab, 10, &b) == GPFQ_OK && b.n == few &&
              memcmp(a.images, b.images, (size_t)few * 784) == 0,
          "images of a small gzipped file");
    gpfq_dataset_free(&b);
    CHECK(cache_files(dir, file) == 2, "no cache file for a gzipped file under 1 MB");
    unsetenv("GPFQ_CACHE_DIR");
    gpfq_dataset_free(&a);
    free(buf);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--write-idx") == 0)
        return write_idx_dir(argv[2], (uint32_t)atoi(argv[3]));
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gpfq_test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_idx();
    test_cifar();
    test_cache();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_report("test_data");
}
