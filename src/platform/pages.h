/*
 * platform/pages.h -- private anonymous memory for large receive buffers.
 *
 * Owns: shm_pages and shm_pages_alloc / shm_pages_free.
 * May include: the C library and core/status.h.  No OS header (those are in
 * the implementation files), no Python.h.
 *
 * Why not malloc: a message copied out of a channel lands in fresh memory,
 * and fresh memory costs one page fault per 4 KiB page on first touch --
 * slower than the copy itself (measured here: 1.2 GB/s for malloc + copy of
 * 64 MiB against 4.4 GB/s into a region advised for transparent huge pages,
 * with 5-6 GB/s for the copy alone).  So a large buffer is its own mapping,
 * aligned to 2 MiB and advised MADV_HUGEPAGE where the OS has it (Linux; a
 * no-op when THP is off), which takes one fault per 2 MiB.  Windows commits
 * ordinary pages with VirtualAlloc (large pages there need a privilege).
 *
 *   pages_posix.c   mmap(MAP_ANONYMOUS) + madvise
 *   pages_win32.c   VirtualAlloc / VirtualFree
 *
 * Safe to call without the GIL: no Python allocator, no global state.
 */
#ifndef PYSHM_PLATFORM_PAGES_H
#define PYSHM_PLATFORM_PAGES_H

#include <stddef.h>     /* size_t */

#include "core/status.h"    /* shm_status, shm_error */

/* Alignment of the start of every region on POSIX (a 2 MiB huge page on
   x86-64); Windows gives its allocation granularity, 64 KiB. */
#define SHM_PAGES_ALIGN ((size_t)2 << 20)

typedef struct {
    void *addr;         /* page-aligned start (see SHM_PAGES_ALIGN); NULL when none */
    size_t size;        /* bytes usable at addr (at least the size asked for) */
    void *base;         /* what the OS returned, for shm_pages_free */
    size_t mapped;      /* bytes the OS mapped at base */
} shm_pages;

/* Map SIZE (> 0) bytes of zeroed, private, read-write memory. */
shm_status shm_pages_alloc(shm_pages *pages, size_t size, shm_error *err);

/* Unmap; idempotent (the fields are cleared). */
void shm_pages_free(shm_pages *pages);

#endif /* PYSHM_PLATFORM_PAGES_H */
