/*
 * platform/pages_posix.c -- platform/pages.h on POSIX: anonymous mappings,
 * aligned to SHM_PAGES_ALIGN and advised for transparent huge pages; and
 * private copies put in place of shared pages, where mremap(2) can do it
 * in one step (Linux: MREMAP_FIXED, and old_size 0 to map shared pages
 * again).
 *
 * Owns: the POSIX shm_pages_* and shm_private_* calls.
 * May include: the C library, POSIX headers, platform/pages.h.  No Python.h.
 */
#include "platform/pages.h"

#include <errno.h>      /* errno, ENOTSUP */
#include <stdint.h>     /* uintptr_t */
#include <string.h>     /* memcpy */
#include <sys/mman.h>   /* mmap, munmap, madvise, mremap (_GNU_SOURCE on Linux) */
#include <unistd.h>     /* sysconf */

/* mremap with MREMAP_FIXED and old_size 0 is Linux's (mremap(2)); setup.py
   defines _GNU_SOURCE there, which declares it. */
#if defined(__linux__) && defined(MREMAP_MAYMOVE) && defined(MREMAP_FIXED)
#  define HAVE_MREMAP_FIXED 1
#else
#  define HAVE_MREMAP_FIXED 0
#endif

static size_t
page_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

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

void
shm_pages_idle(shm_pages *pages)
{
#ifdef MADV_FREE
    if (pages->base != NULL)
        (void)madvise(pages->base, pages->mapped, MADV_FREE);
#else
    (void)pages;    /* the pages stay: as fast to refill, only not given back */
#endif
}

/* MADV_POPULATE_WRITE is Linux 5.14's; headers from before it lack the
   name, and kernels from before it refuse the value (EINVAL): advice. */
#if defined(__linux__) && !defined(MADV_POPULATE_WRITE)
#  define MADV_POPULATE_WRITE 23
#endif

void
shm_pages_prepare(void *addr, size_t len)
{
#if defined(MADV_HUGEPAGE) || defined(MADV_POPULATE_WRITE)
    size_t page = page_size();
    uintptr_t start = (uintptr_t)addr, end = start + len;
    unsigned char resident = 0;

    /* Memory the allocator had used before (its heap reuses what it was
       given back) is resident and fast already: advice would only cost
       calls.  The page in the middle tells (the first shares its page
       with the allocator's header). */
    if (mincore((void *)((start + len / 2) & ~(uintptr_t)(page - 1)), 1, (void *)&resident) ==
            0 && (resident & 1))
        return;
#endif
#ifdef MADV_HUGEPAGE
    {
        /* Only the whole huge pages inside: advice on the range beyond
           would reach memory that is not the caller's. */
        uintptr_t a = (start + SHM_PAGES_ALIGN - 1) & ~(uintptr_t)(SHM_PAGES_ALIGN - 1);
        uintptr_t b = end & ~(uintptr_t)(SHM_PAGES_ALIGN - 1);

        if (b > a)
            (void)madvise((void *)a, (size_t)(b - a), MADV_HUGEPAGE);
    }
#endif
#ifdef MADV_POPULATE_WRITE
    /* The whole pages that hold the range: populating neither changes nor
       reads a byte, so the pages it shares at its ends are safe to touch. */
    start &= ~(uintptr_t)(page - 1);
    end = (end + page - 1) & ~(uintptr_t)(page - 1);
    (void)madvise((void *)start, (size_t)(end - start), MADV_POPULATE_WRITE);
#endif
#if !defined(MADV_HUGEPAGE) && !defined(MADV_POPULATE_WRITE)
    (void)addr;
    (void)len;
#endif
}

void
shm_private_free(shm_private *p)
{
    if (p->copy != NULL)
        (void)munmap(p->copy, p->size);
    p->at = p->copy = NULL;
    p->size = 0;
}

#if HAVE_MREMAP_FIXED

shm_status
shm_private_copy(shm_private *p, const void *addr, size_t len, shm_error *err)
{
    size_t page = page_size();
    uintptr_t start = (uintptr_t)addr & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)addr + len + page - 1) & ~(uintptr_t)(page - 1);
    void *copy;

    p->at = p->copy = NULL;
    p->size = 0;
    if (len == 0)
        return shm_fail(err, SHM_EVALUE, "no bytes to copy");
    copy = mmap(NULL, (size_t)(end - start), PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED)
        return shm_fail_os(err, "mmap", errno);
    memcpy(copy, (const void *)start, (size_t)(end - start));
    p->at = (void *)start;
    p->size = (size_t)(end - start);
    p->copy = copy;
    return SHM_OK;
}

shm_status
shm_private_put(shm_private *p, shm_error *err)
{
    /* One step: the old (shared) pages at AT are unmapped and the copy's
       take their place atomically (mremap(2), MREMAP_FIXED). */
    if (mremap(p->copy, p->size, p->size, MREMAP_MAYMOVE | MREMAP_FIXED, p->at) == MAP_FAILED)
        return shm_fail_os(err, "mremap", errno);
    p->copy = NULL;
    return SHM_OK;
}

shm_status
shm_pages_share_again(void *addr, size_t size, void **out, shm_error *err)
{
    /* old_size 0 on a shared mapping: a new mapping of the same pages
       (mremap(2)); it needs MREMAP_MAYMOVE. */
    void *again = mremap(addr, 0, size, MREMAP_MAYMOVE);

    if (again == MAP_FAILED)
        return shm_fail_os(err, "mremap", errno);
    *out = again;
    return SHM_OK;
}

#else   /* no mremap: the binding keeps such loans instead */

shm_status
shm_private_copy(shm_private *p, const void *addr, size_t len, shm_error *err)
{
    (void)addr;
    (void)len;
    p->at = p->copy = NULL;
    p->size = 0;
    return shm_fail_os(err, "mremap", ENOTSUP);
}

shm_status
shm_private_put(shm_private *p, shm_error *err)
{
    (void)p;
    return shm_fail_os(err, "mremap", ENOTSUP);
}

shm_status
shm_pages_share_again(void *addr, size_t size, void **out, shm_error *err)
{
    (void)addr;
    (void)size;
    (void)out;
    return shm_fail_os(err, "mremap", ENOTSUP);
}

#endif

void
shm_pages_unmap_except(void *addr, size_t size, const shm_private *keep, size_t n)
{
    size_t page = page_size(), i;
    uintptr_t cur = (uintptr_t)addr & ~(uintptr_t)(page - 1);
    uintptr_t hi = ((uintptr_t)addr + size + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t next, k0, k1;
    int covered;

    while (cur < hi) {
        /* Inside a kept span: go to its end. */
        covered = 0;
        for (i = 0; i < n; i++) {
            k0 = (uintptr_t)keep[i].at;
            k1 = k0 + keep[i].size;
            if (keep[i].at != NULL && k0 <= cur && cur < k1) {
                cur = k1;
                covered = 1;
            }
        }
        if (covered)
            continue;
        /* Unmap up to the next kept span (or the end). */
        next = hi;
        for (i = 0; i < n; i++) {
            k0 = (uintptr_t)keep[i].at;
            if (keep[i].at != NULL && k0 > cur && k0 < next)
                next = k0;
        }
        (void)munmap((void *)cur, (size_t)(next - cur));
        cur = next;
    }
}
