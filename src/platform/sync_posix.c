/*
 * sync_posix.c -- the parts of the wait layer (sync.h) that every POSIX
 * scheme shares: the monotonic clock, the spin-loop pause and yielding the
 * CPU.  Built with sync_linux.c or with sync_fallback.c (setup.py picks).
 */
#include "platform/sync.h"

#include <sched.h>      /* sched_yield */
#include <time.h>       /* clock_gettime */

#define NS_PER_S ((int64_t)1000000000)

int64_t
sync_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
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
