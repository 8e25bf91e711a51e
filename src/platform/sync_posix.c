/*
 * platform/sync_posix.c -- the parts of platform/sync.h that every POSIX
 * scheme shares: the monotonic clock, the spin-loop pause, yielding the
 * CPU, and the initial state of the per-process handles.  Built with
 * sync_linux.c or with sync_fallback.c (groups "posix" + "linux" or
 * "fallback" of src/sources.txt).
 *
 * Owns: sync_process_id, sync_now_ns, sync_cpu_relax, sync_yield,
 * sync_handles_init on POSIX.
 * May include: the C library, POSIX headers, platform/sync.h.  No Python.h.
 */
#include "platform/sync.h"

#include <sched.h>      /* sched_yield */
#include <time.h>       /* clock_gettime */
#include <unistd.h>     /* getpid */

uint32_t
sync_process_id(void)
{
    return (uint32_t)getpid();
}

int64_t
sync_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SYNC_NS_PER_S + ts.tv_nsec;
}

void
sync_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

void
sync_yield(void)
{
    (void)sched_yield();
}

/* Every handle invalid: sync_handles_close() is then a no-op.  The
   Windows fields stay unused on POSIX. */
void
sync_handles_init(sync_handles *h)
{
    int i;

    for (i = 0; i < SYNC_NLOCKS; i++) {
        h->lock[i] = -1;
        h->words[i] = NULL;
    }
    for (i = 0; i < SYNC_NWORDS; i++)
        h->sem[i] = -1;
    h->live = -1;       /* Windows only */
    h->fd = -1;
    h->slot = 0;
    h->probing = 0;
    h->next = h->prev = NULL;
}
