/*
 * `gpfq env`: version, BLAS kernel and threads, and the MPI world as this
 * process sees it. Under mpirun every rank reports its host to rank 0, which
 * prints the list: a quick proof that the MPI toolchain works.
 */
#include "cli.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char env_usage[] =
    "usage: gpfq env\n"
    "\n"
    "Prints the gpfq version, the OpenBLAS kernel and threads, the GEMM and convolution\n"
    "kernels, the page size for large buffers, and the MPI ranks with their hosts. Run it\n"
    "under mpirun to check MPI.\n";

static int mpi_check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return 1;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fprintf(stderr, "gpfq env: error: %s failed: %s\n", what, msg);
    return 0;
}

int openblas_thread_timeout(void) __attribute__((weak));

/* The pages gpfq's large buffers get: asked for, turned off, or the kernel's THP mode. */
static void print_memory(void) {
    const int huge = gpfq_huge_pages();
    if (huge > 0) {
        printf("memory   transparent huge pages asked for buffers of 4 MB and more "
               "(GPFQ_HUGEPAGES=1)\n");
        return;
    }
    if (huge < 0) {
        printf("memory   4 kB pages: transparent huge pages off for the process "
               "(GPFQ_HUGEPAGES=0)\n");
        return;
    }
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (!fgets(mode, sizeof mode, f)) mode[0] = '\0';
        fclose(f);
    }
    mode[strcspn(mode, "\n")] = '\0';
    if (strstr(mode, "[always]"))
        printf("memory   huge pages where the kernel gives them unasked (THP: %s; "
               "GPFQ_HUGEPAGES=0 turns them off, 1 asks)\n",
               mode);
    else
        printf("memory   4 kB pages (THP: %s; GPFQ_HUGEPAGES=1 asks for huge pages)\n",
               *mode ? mode : "not available");
}

int cmd_env(int argc, char **argv) {
    if (argc > 1) {
        if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
            fputs(env_usage, stdout);
            return 0;
        }
        return cli_usage_error("env", "unexpected argument '%s'", argv[1]);
    }
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        fprintf(stderr, "gpfq env: error: MPI_Init failed\n");
        return EXIT_RUNTIME;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank = 0, size = 1, len = 0, ok = 1;
    char host[MPI_MAX_PROCESSOR_NAME] = "";
    ok = ok && mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
    ok = ok && mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
    ok = ok && mpi_check(MPI_Get_processor_name(host, &len), "MPI_Get_processor_name");
    char all[64][MPI_MAX_PROCESSOR_NAME];
    int gathered = size <= 64;
    if (ok && gathered)
        ok = mpi_check(MPI_Gather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all,
                                  MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, MPI_COMM_WORLD),
                       "MPI_Gather");
    if (ok && rank == 0) {
        int version = 0, subversion = 0;
        MPI_Get_version(&version, &subversion);
        char library[MPI_MAX_LIBRARY_VERSION_STRING];
        int lib_len = 0;
        MPI_Get_library_version(library, &lib_len);
        char *newline = strchr(library, '\n');
        if (newline) *newline = '\0';
        printf("gpfq     %s\n", GPFQ_VERSION);
        /* the value OpenBLAS has read, where it tells (gpfq sets it after OpenBLAS loaded) */
        char timeout[32];
        const int read = openblas_thread_timeout ? openblas_thread_timeout() : 0;
        const char *env = getenv("OPENBLAS_THREAD_TIMEOUT");
        if (read > 0)
            snprintf(timeout, sizeof timeout, "%d", read);
        else
            snprintf(timeout, sizeof timeout, "%s",
                     env && !openblas_thread_timeout ? env : "(unset: 28)");
        printf("blas     OpenBLAS, %s kernel, %d thread(s), OPENBLAS_THREAD_TIMEOUT=%s\n",
               cli_blas_core(), cli_blas_threads(), timeout);
        printf("gemm     %s kernel for Linear layers and the GPFQ layer products "
               "(GPFQ_GEMM=openblas|avx512)\n",
               gpfq_gemm_kernel_name(gpfq_gemm_get_kernel()));
        printf(
            "conv     %s kernel for stride-1 and -2 convolutions (GPFQ_CONV=im2col|avx2|avx512)\n",
            gpfq_conv_kernel_name(gpfq_conv_get_kernel()));
        const gpfq_winograd_mode wino = gpfq_conv_get_winograd();
        char which[96];
        if (gpfq_conv_get_kernel() != GPFQ_CONV_AVX512 || wino == GPFQ_WINOGRAD_OFF)
            snprintf(which, sizeof which, "for no conv%s",
                     wino == GPFQ_WINOGRAD_OFF ? "" : " (it needs the AVX-512 kernel)");
        else if (wino == GPFQ_WINOGRAD_ALL)
            snprintf(which, sizeof which, "for every 3x3 stride-1 \"same\" conv");
        else
            snprintf(which, sizeof which,
                     "for 3x3 stride-1 \"same\" convs with >= %d channels in and out",
                     GPFQ_WINOGRAD_MIN_CHANNELS);
        const int tile = gpfq_conv_get_winograd_tile();
        printf(
            "winograd %s: F(%dx%d,3x3) %s (GPFQ_WINOGRAD=off|auto|all, GPFQ_WINOGRAD_TILE=2|4)\n",
            gpfq_winograd_mode_name(wino), tile, tile, which);
        const gpfq_interleave_mode il = gpfq_conv_get_interleave();
        printf("interleave %s: 16 images per vector %s (GPFQ_INTERLEAVE=off|auto|all)\n",
               gpfq_interleave_mode_name(il),
               gpfq_conv_get_kernel() != GPFQ_CONV_AVX512 || il == GPFQ_INTERLEAVE_OFF
                   ? "for no conv"
               : il == GPFQ_INTERLEAVE_ALL ? "for every direct conv without Winograd"
                                           : "for stride-2 convs and small planes");
        print_memory();
        printf("mpi      MPI %d.%d, %s\n", version, subversion, library);
        printf("ranks    %d\n", size);
        for (int r = 0; gathered && r < size; r++) printf("rank %-3d %s\n", r, all[r]);
    }
    MPI_Finalize();
    return ok ? 0 : EXIT_RUNTIME;
}
