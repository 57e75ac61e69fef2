/*
 * Fuzzes the CIFAR-10 reader, gpfq_cifar10_load (binary batches of 1 label byte
 * + 3072 pixel bytes, gzip or plain).
 *
 * The input is one batch file, or two split at "CIFAR-NEXT" (the reader
 * concatenates batches). A data set the reader accepts must be 3x32x32 images
 * with labels below 10, all of whose pixels can be read.
 */
#include "fuzz_common.h"

#include "gpfq/gpfq.h"

#define SEPARATOR "CIFAR-NEXT"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *parts[2];
    size_t sizes[2];
    const int n = fuzz_split(data, size, SEPARATOR, parts, sizes, 2);
    char paths[2][512];
    const char *names[2];
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "cifar-batch-%d.bin", i);
        fuzz_path(paths[i], sizeof paths[i], name);
        fuzz_write(paths[i], parts[i], sizes[i]);
        names[i] = paths[i];
    }
    gpfq_dataset d;
    if (gpfq_cifar10_load(names, n, &d) == GPFQ_OK) {
        FUZZ_CHECK(d.n >= 1 && d.c == 3 && d.h == 32 && d.w == 32 && d.images && d.labels,
                   "accepted CIFAR data has shape %zux%dx%dx%d", d.n, d.c, d.h, d.w);
        for (size_t i = 0; i < d.n; i++)
            FUZZ_CHECK(d.labels[i] < 10, "label %d of record %zu", d.labels[i], i);
        float *out = malloc(3 * 32 * 32 * sizeof(float));
        FUZZ_CHECK(out != NULL, "out of memory");
        const float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.25f, 0.25f, 0.25f};
        gpfq_dataset_batch(&d, mean, std, d.n - 1, NULL, 1, out);
        free(out);
        gpfq_dataset_free(&d);
    } else {
        FUZZ_CHECK(!d.images && !d.labels && d.n == 0, "a failed load left data");
    }
    for (int i = 0; i < n; i++) remove(paths[i]);
    return 0;
}
