/*
 * Shared by the LD_PRELOAD shims of the tests (no_threads.c, no_memory.c): which calls come from
 * the main program, gpfq's own code, rather than from a shared library. Call main_span_find once
 * before from_main.
 */
#ifndef GPFQ_TESTS_SHIM_H
#define GPFQ_TESTS_SHIM_H

#include <link.h>
#include <stdint.h>

static uintptr_t main_lo = UINTPTR_MAX, main_hi;

/* The main program is the first object dl_iterate_phdr reports: its loaded segments' span. */
static int main_span(struct dl_phdr_info *info, size_t size, void *unused) {
    (void)size, (void)unused;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        const uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (lo < main_lo) main_lo = lo;
        if (hi > main_hi) main_hi = hi;
    }
    return 1;
}

static void main_span_find(void) {
    dl_iterate_phdr(main_span, NULL);
}

/* 1 where a return address lies in the main program */
static int from_main(uintptr_t from) {
    return from >= main_lo && from < main_hi;
}

#endif
