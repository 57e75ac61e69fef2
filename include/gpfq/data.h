/*
 * Image classification data sets: IDX files (MNIST, Fashion-MNIST; gzip or
 * plain) and CIFAR-10 binary batches. Images stay as bytes, (n, c, h, w); they
 * are normalized with the model's mean/std when a batch is made.
 */
#ifndef GPFQ_DATA_H
#define GPFQ_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "gpfq/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t n;
    int c, h, w;
    int num_classes;
    uint8_t *images; /* (n, c, h, w); read-only when mapped */
    uint8_t *labels; /* (n), each < num_classes */
    void *mapping;   /* the mapped file holding images, or NULL: images is malloc'd */
    size_t mapping_bytes;
} gpfq_dataset;

typedef enum { GPFQ_SPLIT_TRAIN, GPFQ_SPLIT_TEST } gpfq_split;

/* Where Debian's dataset-fashion-mnist package puts the files. */
#define GPFQ_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Reads an IDX image file (magic 0x00000803, u8) and its label file (0x00000801),
 * gzip or plain. Labels must be < num_classes. */
gpfq_status gpfq_idx_load(const char *images_path, const char *labels_path, int num_classes,
                          gpfq_dataset *out);

/* Reads and concatenates CIFAR-10 binary batches (records of 1 label + 3072 bytes). */
gpfq_status gpfq_cifar10_load(const char *const *paths, int n_paths, gpfq_dataset *out);

/* Opens a named data set ("fashion-mnist", "mnist", "cifar10") from `dir`
 * (NULL: the default directory for the name, if it has one). */
gpfq_status gpfq_dataset_open(const char *name, const char *dir, gpfq_split split,
                              gpfq_dataset *out);

/* The default directory of a named data set, or NULL when it has none. */
const char *gpfq_dataset_default_dir(const char *name);

/* Canonical name for user spellings ("FashionMNIST", "fashion_mnist", "CIFAR10", ...),
 * or NULL when unknown. */
const char *gpfq_dataset_canonical(const char *name);

void gpfq_dataset_free(gpfq_dataset *data);

/* Writes images indices[0..count) (or first..first+count when indices is NULL)
 * as float (count, c, h, w): (byte / 255 - mean[c]) / std[c], as torchvision's
 * ToTensor + Normalize compute it. */
void gpfq_dataset_batch(const gpfq_dataset *data, const float *mean, const float *std, size_t first,
                        const size_t *indices, size_t count, float *out);

#ifdef __cplusplus
}
#endif

#endif
