/*
 * platform/pages.h -- this process's own memory: private anonymous buffers
 * for large receive buffers, and private copies put in place of shared
 * pages (for the zero-copy loans of the binding).
 *
 * Owns: shm_pages and shm_pages_alloc / shm_pages_free / shm_pages_idle,
 * shm_pages_prepare; shm_private and
 * shm_private_copy / shm_private_put / shm_private_free,
 * shm_pages_share_again, shm_pages_unmap_except.
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

/*
 * Keep the mapping but let the OS take its pages back when it needs them
 * (MADV_FREE; Windows: MEM_RESET): the contents are undefined from now on,
 * and writing them again costs no fault unless the OS did take a page (it
 * then comes back zeroed).  For a buffer kept to be filled again.
 */
void shm_pages_idle(shm_pages *pages);

/*
 * Advice for the memory [ADDR, ADDR + LEN), LEN > 0, of this process, that
 * the caller is about to write whole (fresh memory from any allocator: a
 * new bytes object's): its whole 2 MiB ranges for transparent huge pages,
 * then all of it populated writable in one call, so that the copy that
 * follows meets no page fault (Linux: MADV_HUGEPAGE, MADV_POPULATE_WRITE
 * from 5.14).  Memory the allocator hands out again, already resident
 * (mincore: the page in the middle), is left alone: it is fast as it is,
 * and advice would only cost calls.  Contents are left as they are; a
 * kernel without either ignores it, and elsewhere it does nothing.
 */
void shm_pages_prepare(void *addr, size_t len);

/*
 * Private copies in place.  A loan's memory (binding/loan_type.c) is lent
 * out as a memoryview that Python code may keep past the loan's end; when
 * the loan must end anyway (close(), a fork child), those views must stay
 * valid memory that no longer reaches the shared ring.  So the whole pages
 * under the loan are replaced, in place, by private memory holding the
 * same bytes:
 *
 *   1. shm_private_copy: new anonymous memory, the pages' bytes copied in
 *      (may fail: nothing has changed then);
 *   2. shm_private_put: the copy moved over the shared pages in one step --
 *      mremap(MREMAP_FIXED), no instant where they are unmapped or zero;
 *      from then on the span is private memory that the caller owns (and
 *      unmaps with shm_pages_unmap_except when the views are gone).
 *
 * Writes that land on the shared pages between the two steps are not in
 * the copy: the caller makes the copy while it still holds what the pages
 * hold (the loan's lock), so those writes reach only space that is still
 * its own.  Linux only (mremap); elsewhere every call here fails with
 * SHM_EOS / ENOTSUP (ERROR_NOT_SUPPORTED on Windows) and the binding keeps
 * the loan instead (docs/windows.md, "Platform differences").
 */
typedef struct {
    void *at;           /* the first page of the span; NULL when none */
    size_t size;        /* the span: whole pages */
    void *copy;         /* the copy, until shm_private_put moves it to AT */
} shm_private;

/* Step 1 for the whole pages that hold [ADDR, ADDR + LEN), LEN > 0. */
shm_status shm_private_copy(shm_private *p, const void *addr, size_t len, shm_error *err);

/* Step 2: the copy replaces the shared pages at p->at (p->copy is NULL after). */
shm_status shm_private_put(shm_private *p, shm_error *err);

/* Unmap a copy that was never put (nothing once it was); fields cleared. */
void shm_private_free(shm_private *p);

/*
 * A second mapping of the same shared memory as the SIZE bytes at ADDR (a
 * shared mapping), where the OS likes: *OUT.  With it, a ring can go on
 * (or be unlocked) while its first mapping is given away to private copies.
 * Linux: mremap(ADDR, 0, SIZE, MREMAP_MAYMOVE), which maps the same pages
 * again.
 */
shm_status shm_pages_share_again(void *addr, size_t size, void **out, shm_error *err);

/* Unmap the whole pages of [ADDR, ADDR + SIZE) except those of the spans
   KEEP[0..N) (shm_private spans, put; they may overlap each other and
   reach outside). */
void shm_pages_unmap_except(void *addr, size_t size, const shm_private *keep, size_t n);

#endif /* PYSHM_PLATFORM_PAGES_H */
