/*
 * platform/pages_posix.c -- platform/pages.h on POSIX: anonymous mappings,
 * aligned to SHM_PAGES_ALIGN and advised for transparent huge pages.
 *
 * Owns: shm_pages_alloc / shm_pages_free for POSIX.
 * May include: the C library, POSIX headers, platform/pages.h.  No Python.h.
 */
#include "platform/pages.h"

#include <errno.h>      /* errno */
#include <stdint.h>     /* uintptr_t */
#include <sys/mman.h>   /* mmap, munmap, madvise */
#include <unistd.h>     /* sysconf */

shm_status
shm_pages_alloc(shm_pages *pages, size_t size, shm_error *err)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), mapped, head, tail;
    unsigned char *base, *addr;

    pages->addr = pages->base = NULL;
    pages->size = pages->mapped = 0;
    if (size == 0 || size > SIZE_MAX / 2)
        return shm_fail(err, SHM_EVALUE, "bad size for a buffer");
    /* Map SHM_PAGES_ALIGN more than needed and keep an aligned region of
       whole pages: the kernel backs only aligned 2 MiB ranges that lie
       wholly inside a mapping with huge pages (the tail gets small ones). */
    if (page == 0 || page > SHM_PAGES_ALIGN)
        page = 4096;
    size = (size + page - 1) & ~(page - 1);
    mapped = size + SHM_PAGES_ALIGN;
    base = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return shm_fail_os(err, "mmap", errno);
    addr = (unsigned char *)(((uintptr_t)base + SHM_PAGES_ALIGN - 1) &
                             ~(uintptr_t)(SHM_PAGES_ALIGN - 1));
    head = (size_t)(addr - base);
    tail = mapped - head - size;
    /* Give back the unaligned ends (whole pages, so munmap takes them). */
    if (head > 0)
        (void)munmap(base, head);
    if (tail > 0)
        (void)munmap(addr + size, tail);
#ifdef MADV_HUGEPAGE
    /* Advice only: with THP off or unsupported it fails and changes nothing. */
    (void)madvise(addr, size, MADV_HUGEPAGE);
#endif
    pages->addr = pages->base = addr;
    pages->size = pages->mapped = size;
    return SHM_OK;
}

void
shm_pages_free(shm_pages *pages)
{
    if (pages->base != NULL)
        (void)munmap(pages->base, pages->mapped);
    pages->addr = pages->base = NULL;
    pages->size = pages->mapped = 0;
}
