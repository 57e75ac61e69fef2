/*
 * Model names to files: the shipped models live in data/models.
 */
#include "gpfq/data.h"
#include "gpfq/model.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

gpfq_status gpfq_model_resolve(const char *arg, const char *dataset, char *out, size_t size) {
    size_t len = strlen(arg);
    if (strchr(arg, '/') || (len > 3 && strcmp(arg + len - 3, ".h5") == 0)) {
        snprintf(out, size, "%s", arg);
        return GPFQ_OK;
    }
    const char *canonical = gpfq_dataset_canonical(dataset ? dataset : "fashion-mnist");
    if (!canonical) return gpfq_fail(GPFQ_ERR_ARG, "unknown data set '%s'", dataset);
    const char *suffix = strcmp(canonical, "fashion-mnist") == 0 ? "fashion" : canonical;
    char exe[PATH_MAX] = "", dirs[4][PATH_MAX];
    int n_dirs = 0;
    const char *env = getenv("GPFQ_MODEL_DIR");
    if (env && *env) snprintf(dirs[n_dirs++], PATH_MAX, "%.3900s", env);
    ssize_t got = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (got > 0) {
        exe[got] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(dirs[n_dirs++], PATH_MAX, "%.3900s/../data/models", exe);
        snprintf(dirs[n_dirs++], PATH_MAX, "%.3900s/../../data/models", exe);
    }
    snprintf(dirs[n_dirs++], PATH_MAX, "data/models");
    struct stat sb;
    for (int i = 0; i < n_dirs; i++) {
        snprintf(out, size, "%.3900s/%.100s_%s.h5", dirs[i], arg, suffix);
        if (stat(out, &sb) == 0) return GPFQ_OK;
    }
    return gpfq_fail(GPFQ_ERR_ARG,
                     "unknown model '%s' for %s: no %s_%s.h5 in data/models (shipped models: mlp, "
                     "lenet5, resnet20, resnet18 for fashion-mnist), and not a file path",
                     arg, canonical, arg, suffix);
}
