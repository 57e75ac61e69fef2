/*
 * Shared helpers of the fuzz harnesses: scratch files for the readers (which all
 * take a path), input splitting, checks that abort (so libFuzzer records the
 * input), and, with -DGPFQ_FUZZ_MAIN, a main() that feeds files to
 * LLVMFuzzerTestOneInput without libFuzzer (the fuzz_regressions test).
 */
#ifndef GPFQ_FUZZ_COMMON_H
#define GPFQ_FUZZ_COMMON_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant the code under test must keep: abort with a message, so that
 * libFuzzer saves the input (and the regression driver fails). */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz check failed: %s (%s:%d): ", #cond, __FILE__, __LINE__);         \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A scratch file path private to this process: in /dev/shm when it is there (no
 * disk traffic per input), else in $TMPDIR or /tmp. */
static inline void fuzz_path(char *out, size_t size, const char *name) {
    const char *dir = getenv("GPFQ_FUZZ_TMP");
    if (!dir && access("/dev/shm", W_OK) == 0) dir = "/dev/shm";
    if (!dir) dir = getenv("TMPDIR");
    if (!dir) dir = "/tmp";
    snprintf(out, size, "%s/gpfq-fuzz-%ld-%s", dir, (long)getpid(), name);
}

static inline void fuzz_write(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL, "cannot create scratch file %s", path);
    FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size, "cannot write %s", path);
    FUZZ_CHECK(fclose(f) == 0, "cannot write %s", path);
}

/* Splits data at each occurrence of `sep` into at most `max` parts (the last part
 * keeps any further separators). Returns the number of parts (>= 1). */
static inline int fuzz_split(const uint8_t *data, size_t size, const char *sep,
                             const uint8_t **parts, size_t *sizes, int max) {
    const size_t seplen = strlen(sep);
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; n < max - 1 && i + seplen <= size;) {
        if (memcmp(data + i, sep, seplen) == 0) {
            parts[n] = data + start;
            sizes[n++] = i - start;
            i += seplen;
            start = i;
        } else {
            i++;
        }
    }
    parts[n] = data + start;
    sizes[n++] = size - start;
    return n;
}

#ifdef GPFQ_FUZZ_MAIN
/* Without libFuzzer: runs every file named on the command line, and every file
 * (not starting with '.') of every directory named, in name order. A directory
 * that does not exist counts as empty. */
static int fuzz_run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    size_t cap = 1 << 16, len = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            uint8_t *grown = realloc(buf, cap *= 2);
            if (!grown) free(buf);
            buf = grown;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "out of memory reading %s\n", path);
        return 1;
    }
    fprintf(stderr, "running %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    int ran = 0, bad = 0;
    for (int a = 1; a < argc; a++) {
        struct stat sb;
        if (stat(argv[a], &sb) != 0) continue;
        if (!S_ISDIR(sb.st_mode)) {
            bad += fuzz_run_file(argv[a]);
            ran++;
            continue;
        }
        struct dirent **names = NULL;
        int n = scandir(argv[a], &names, NULL, alphasort);
        for (int i = 0; i < n; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], names[i]->d_name);
            if (names[i]->d_name[0] != '.' && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                bad += fuzz_run_file(path);
                ran++;
            }
            free(names[i]);
        }
        free(names);
    }
    printf("%s: %d input(s) ran without a crash\n", argv[0], ran);
    return bad ? 1 : 0;
}
#endif

#endif
