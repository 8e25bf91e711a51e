/*
 * platform/pages_win32.c -- platform/pages.h on Windows: VirtualAlloc.
 *
 * Owns: the Windows shm_pages_* and shm_private_* calls.
 * May include: the C library, windows.h, platform/pages.h.  No Python.h.
 *
 * VirtualAlloc reserves at 64 KiB granularity and commits zeroed pages; large
 * pages would need SeLockMemoryPrivilege, so ordinary pages it is, and the
 * SHM_PAGES_ALIGN alignment is only promised where it is free: the region
 * starts where VirtualAlloc put it (64 KiB-aligned), which callers accept.
 *
 * Private copies in place: no call replaces part of a view of a section
 * with private memory in one step (a view is unmapped whole, and mapping
 * something else at its address afterwards leaves an instant where nothing
 * is there), so they report ERROR_NOT_SUPPORTED and the binding keeps the
 * loan until its views are gone (docs/windows.md, "Platform differences").
 */
#include "platform/pages.h"

#include <windows.h>

shm_status
shm_pages_alloc(shm_pages *pages, size_t size, shm_error *err)
{
    void *base;

    pages->addr = pages->base = NULL;
    pages->size = pages->mapped = 0;
    if (size == 0)
        return shm_fail(err, SHM_EVALUE, "bad size for a buffer");
    base = VirtualAlloc(NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (base == NULL)
        return shm_fail_os(err, "VirtualAlloc", (int)GetLastError());
    pages->addr = pages->base = base;
    pages->size = pages->mapped = size;
    return SHM_OK;
}

void
shm_pages_free(shm_pages *pages)
{
    if (pages->base != NULL)
        (void)VirtualFree(pages->base, 0, MEM_RELEASE);
    pages->addr = pages->base = NULL;
    pages->size = pages->mapped = 0;
}

void
shm_pages_idle(shm_pages *pages)
{
    /* The pages stay committed; their contents need not be kept. */
    if (pages->base != NULL)
        (void)VirtualAlloc(pages->base, pages->mapped, MEM_RESET, PAGE_READWRITE);
}

void
shm_pages_prepare(void *addr, size_t len)
{
    /* Large pages need a privilege, and a bytes object's pages are the
       Python allocator's: nothing to advise. */
    (void)addr;
    (void)len;
}

shm_status
shm_private_copy(shm_private *p, const void *addr, size_t len, shm_error *err)
{
    (void)addr;
    (void)len;
    p->at = p->copy = NULL;
    p->size = 0;
    return shm_fail_os(err, "MapViewOfFile", ERROR_NOT_SUPPORTED);
}

shm_status
shm_private_put(shm_private *p, shm_error *err)
{
    (void)p;
    return shm_fail_os(err, "MapViewOfFile", ERROR_NOT_SUPPORTED);
}

void
shm_private_free(shm_private *p)
{
    p->at = p->copy = NULL;
    p->size = 0;
}

shm_status
shm_pages_share_again(void *addr, size_t size, void **out, shm_error *err)
{
    (void)addr;
    (void)size;
    (void)out;
    return shm_fail_os(err, "MapViewOfFile", ERROR_NOT_SUPPORTED);
}

void
shm_pages_unmap_except(void *addr, size_t size, const shm_private *keep, size_t n)
{
    /* Never called here: no span is ever put (shm_private_put fails). */
    (void)addr;
    (void)size;
    (void)keep;
    (void)n;
}
