/*
 * GPFQ_CLONES builds a function once per x86-64 level (AVX-512, AVX2+FMA, baseline) and
 * picks the clone for the CPU at run time (GCC's target_clones, an ifunc): for the loops
 * the compiler vectorises, where OpenBLAS or hand-written kernels are not the right tool.
 * The files using it are compiled with -ffp-contract=off (CMakeLists.txt), so every clone
 * does the same float operations and gives the same results.
 */
#ifndef GPFQ_CLONES_H
#define GPFQ_CLONES_H

#define GPFQ_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

#endif
