/*
 * Fuzzes the IDX reader, gpfq_idx_load (an image file and a label file, gzip or
 * plain).
 *
 * The first byte picks what the rest is: 0, the image file (with a valid label
 * file of 3 labels as its partner); 1, the label file (with a valid image file of
 * 3 images of 4x5); 2, both, the image file first, split at "IDX-LABELS". A data
 * set the reader accepts must hold what it says: labels in range and n images
 * whose pixels can all be read (gpfq_dataset_batch on the first and last).
 */
#include "fuzz_common.h"

#include "gpfq/gpfq.h"

#define SEPARATOR "IDX-LABELS"

static const uint8_t valid_images[16 + 3 * 20] = {
    0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, /* magic, n = 3, 4 x 5; pixels 0 */
};
static const uint8_t valid_labels[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 0, 9, 4};

static void check_dataset(const gpfq_dataset *d, int num_classes) {
    FUZZ_CHECK(d->c == 1 && d->h >= 1 && d->w >= 1 && d->num_classes == num_classes,
               "accepted IDX data has shape %zux%dx%dx%d", d->n, d->c, d->h, d->w);
    FUZZ_CHECK(d->n == 0 || (d->images && d->labels), "accepted IDX data without buffers");
    for (size_t i = 0; i < d->n; i++)
        FUZZ_CHECK(d->labels[i] < num_classes, "label %d of image %zu", d->labels[i], i);
    if (d->n == 0) return;
    const size_t image = (size_t)d->h * d->w;
    float *out = malloc(image * sizeof(float));
    FUZZ_CHECK(out != NULL, "out of memory");
    const float mean = 0.5f, std = 0.25f;
    size_t idx[2] = {0, d->n - 1};
    for (int k = 0; k < 2; k++) gpfq_dataset_batch(d, &mean, &std, 0, &idx[k], 1, out);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int mode = data[0] % 3;
    const int num_classes = 10;
    data++, size--;
    const uint8_t *img = valid_images, *lab = valid_labels;
    size_t img_size = sizeof valid_images, lab_size = sizeof valid_labels;
    if (mode == 0) {
        img = data, img_size = size;
    } else if (mode == 1) {
        lab = data, lab_size = size;
    } else {
        const uint8_t *parts[2];
        size_t sizes[2];
        if (fuzz_split(data, size, SEPARATOR, parts, sizes, 2) != 2) return 0;
        img = parts[0], img_size = sizes[0];
        lab = parts[1], lab_size = sizes[1];
    }
    char img_path[512], lab_path[512];
    fuzz_path(img_path, sizeof img_path, "images-idx3-ubyte");
    fuzz_path(lab_path, sizeof lab_path, "labels-idx1-ubyte");
    fuzz_write(img_path, img, img_size);
    fuzz_write(lab_path, lab, lab_size);
    gpfq_dataset d;
    if (gpfq_idx_load(img_path, lab_path, num_classes, &d) == GPFQ_OK) {
        check_dataset(&d, num_classes);
        gpfq_dataset_free(&d);
    } else {
        FUZZ_CHECK(!d.images && !d.labels, "a failed load left buffers");
    }
    remove(img_path);
    remove(lab_path);
    return 0;
}
