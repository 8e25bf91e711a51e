/*
 * platform/pages_win32.c -- platform/pages.h on Windows: VirtualAlloc.
 *
 * Owns: shm_pages_alloc / shm_pages_free for Windows.
 * May include: the C library, windows.h, platform/pages.h.  No Python.h.
 *
 * VirtualAlloc reserves at 64 KiB granularity and commits zeroed pages; large
 * pages would need SeLockMemoryPrivilege, so ordinary pages it is, and the
 * SHM_PAGES_ALIGN alignment is only promised where it is free: the region
 * starts where VirtualAlloc put it (64 KiB-aligned), which callers accept.
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
