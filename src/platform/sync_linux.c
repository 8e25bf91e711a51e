/*
 * platform/sync_linux.c -- channel waits and locks on Linux (futex and
 * robust mutexes); the rest of platform/sync.h is in sync_posix.c.
 *
 * Owns: sync_kind, sync_cpu, sync_ncpu, the locks and the waits on Linux.
 * May include: the C library, POSIX and Linux headers, platform/sync.h,
 * core/atomics.h.  No Python.h.
 *
 * Waits: futex(2) FUTEX_WAIT / FUTEX_WAKE on the 32-bit word in the shared
 * mapping (not FUTEX_PRIVATE: the waiters are in other processes).  A signal
 * ends FUTEX_WAIT with EINTR (CPython installs its handlers without
 * SA_RESTART), which is how Ctrl-C reaches a blocked recv().
 *
 * Locks: process-shared robust pthread mutexes (pthread_mutexattr_setrobust
 * (3)).  When the holder dies the kernel marks the lock (FUTEX_OWNER_DIED)
 * and the next locker gets EOWNERDEAD; the channel protocol leaves nothing
 * to repair, so it calls pthread_mutex_consistent() and goes on.  Lock waits
 * use pthread_mutex_timedlock() in slices, because a mutex wait cannot be
 * interrupted by a signal: after each slice the caller gets SHM_EINTR and
 * checks for signals.
 */
#include "platform/sync.h"

#include <errno.h>          /* EINTR, EAGAIN, ETIMEDOUT, EOWNERDEAD, ... */
#include <limits.h>         /* INT_MAX */
#include <linux/futex.h>    /* FUTEX_WAIT, FUTEX_WAKE, FUTEX_TID_MASK */
#include <pthread.h>        /* robust process-shared mutexes */
#include <sched.h>          /* sched_getaffinity, CPU_COUNT */
#include <signal.h>         /* kill: is a lock owner still alive? */
#include <sys/syscall.h>    /* SYS_futex */
#include <time.h>           /* clock_gettime */
#include <unistd.h>         /* syscall, sysconf */

#include "core/atomics.h"        /* at_load32 for the lock word peek */

typedef char sync_check_mutex_fits[sizeof(pthread_mutex_t) <= SYNC_LOCK_AREA ? 1 : -1];

/* Longest single lock wait before the caller checks for signals. */
#define LOCK_SLICE_NS ((int64_t)50000000)
/* Longest single futex wait: a waker killed between publishing and waking
   would otherwise leave a waiter asleep with data queued; this bounds the
   damage to one slice.  Not polling: once a second. */
#define WAIT_SLICE_NS ((int64_t)1000000000)
/* Spins on a busy lock before sleeping on it; holders only copy a message. */
#define LOCK_SPINS 2000

uint32_t
sync_kind(void)
{
    return SYNC_KIND_LINUX;
}

const char *
sync_kind_name(void)
{
    return "futex";
}

uint32_t
sync_cpu(void)
{
    /* sched_getcpu(3) is served from the vDSO/rseq area: a few ns. */
    int cpu = sched_getcpu();
    return cpu >= 0 ? (uint32_t)cpu + 1u : 0u;
}

int
sync_ncpu(void)
{
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Initialise the N mutexes at M[0..N-1] as channel locks; 0 or an errno. */
static int
init_locks(pthread_mutex_t **m, int n)
{
    pthread_mutexattr_t attr;
    int rc, i;

    rc = pthread_mutexattr_init(&attr);
    if (rc != 0)
        return rc;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    /* Error-checking: a relock by the holder is EDEADLK, not a hang. */
    if (rc == 0)
        rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    for (i = 0; rc == 0 && i < n; i++)
        rc = pthread_mutex_init(m[i], &attr);
    (void)pthread_mutexattr_destroy(&attr);
    return rc;
}

shm_status
sync_locks_format(void *area[SYNC_NLOCKS], shm_error *err)
{
    pthread_mutex_t *m[SYNC_NLOCKS];
    int rc, i;

    for (i = 0; i < SYNC_NLOCKS; i++)
        m[i] = (pthread_mutex_t *)area[i];
    rc = init_locks(m, SYNC_NLOCKS);
    if (rc != 0)
        return shm_fail_os(err, "pthread_mutex_init", rc);
    return SHM_OK;
}

/*
 * glibc keeps a mutex's type in its __kind word and believes it on every
 * call: a kind that says "priority protect" (64 and up) sends
 * pthread_mutex_trylock into __pthread_tpp_change_priority, which asserts
 * on the ceiling bits of the lock word and aborts the process; "priority
 * inherit" or a plain type silently drops robustness.  So one word written
 * by a hostile or broken peer could kill every process using the channel.
 * Our locks all come from init_locks(), so the kind must equal that of a
 * mutex made the same way here; anything else is garbage, refused before
 * glibc sees it.  (A peer that rewrites the word between this check and
 * glibc's own read can still win that race: pthread mutexes in untrusted
 * memory cannot be fully defended; this closes the at-rest case.)
 */
#ifdef __GLIBC__
static pthread_once_t kind_once = PTHREAD_ONCE_INIT;
static int kind_expected = -1;  /* written once under kind_once */

static void
kind_init(void)
{
    pthread_mutex_t local, *m = &local;

    if (init_locks(&m, 1) == 0) {
        kind_expected = local.__data.__kind;
        (void)pthread_mutex_destroy(&local);
    }
}

static int
lock_kind_ok(pthread_mutex_t *m)
{
    (void)pthread_once(&kind_once, kind_init);
    return kind_expected != -1 &&
           at_load32((uint32_t *)(void *)&m->__data.__kind) == (uint32_t)kind_expected;
}
#else
static int
lock_kind_ok(pthread_mutex_t *m)
{
    (void)m;
    return 1;
}
#endif

static shm_status
bad_kind(shm_error *err)
{
    return shm_fail(err, SHM_ECORRUPT, "channel lock is corrupt (its type word was "
                                       "overwritten)");
}

static shm_status
lock_result(pthread_mutex_t *m, int rc, shm_error *err)
{
    if (rc == 0)
        return SHM_OK;
    if (rc == EOWNERDEAD) {
        /* The holder died mid-operation: a sender's record was never
           published, a receiver's message never consumed.  Nothing to undo. */
        if (pthread_mutex_consistent(m) == 0)
            return SHM_OK;
        (void)pthread_mutex_unlock(m);
        return shm_fail(err, SHM_ECORRUPT, "channel lock is corrupt");
    }
    if (rc == EBUSY || rc == ETIMEDOUT)
        return shm_fail(err, SHM_ETIMEOUT, "the channel lock stayed busy until the timeout");
    /* EINVAL, ENOTRECOVERABLE, EDEADLK (a garbled owner id equal to ours):
       the lock area holds garbage. */
    return shm_fail(err, SHM_ECORRUPT, "channel lock is corrupt (header overwritten?)");
}

/*
 * Peek at glibc's lock word (the first int of the mutex: owner TID plus the
 * FUTEX_WAITERS / FUTEX_OWNER_DIED bits).  A busy lock whose owner thread
 * does not exist and was not marked dead by the kernel is garbage: the
 * kernel marks every robust lock of a dying thread before its TID is freed.
 * Only glibc's layout is known; elsewhere the check is skipped.
 */
static int
lock_owner_vanished(pthread_mutex_t *m)
{
#ifdef __GLIBC__
    uint32_t *word = (uint32_t *)(void *)m;
    uint32_t before = at_load32(word), tid = before & FUTEX_TID_MASK;

    if (before == 0 || (before & FUTEX_OWNER_DIED))
        return 0;
    if (tid == 0)
        return 1;
    if (kill((pid_t)tid, 0) == 0 || errno != ESRCH)
        return 0;
    return at_load32(word) == before;
#else
    (void)m;
    return 0;
#endif
}

shm_status
sync_trylock(sync_handles *h, sync_lock_id lock_id, void *area, shm_error *err)
{
    pthread_mutex_t *m = (pthread_mutex_t *)area;
    (void)h;
    (void)lock_id;
    if (!lock_kind_ok(m))
        return bad_kind(err);
    return lock_result(m, pthread_mutex_trylock(m), err);
}

shm_status
sync_lock(sync_handles *h, sync_lock_id lock_id, void *area, int64_t deadline,
          shm_error *err)
{
    pthread_mutex_t *m = (pthread_mutex_t *)area;
    struct timespec ts;
    int64_t now, until, real;
    int rc, i;

    (void)h;
    (void)lock_id;
    if (!lock_kind_ok(m))
        return bad_kind(err);
    for (i = 0; ; i++) {
        rc = pthread_mutex_trylock(m);
        if (rc != EBUSY || i >= LOCK_SPINS)
            break;
        sync_cpu_relax();
    }
    if (rc != EBUSY)
        return lock_result(m, rc, err);

    now = sync_now_ns();
    if (deadline <= now)
        return lock_result(m, EBUSY, err);
    until = deadline - now > LOCK_SLICE_NS ? now + LOCK_SLICE_NS : deadline;
    /* pthread_mutex_timedlock takes CLOCK_REALTIME; the slice is short, so
       a clock step only lengthens or shortens one slice. */
    clock_gettime(CLOCK_REALTIME, &ts);
    real = (int64_t)ts.tv_sec * SYNC_NS_PER_S + ts.tv_nsec + (until - now);
    ts.tv_sec = (time_t)(real / SYNC_NS_PER_S);
    ts.tv_nsec = (long)(real % SYNC_NS_PER_S);
    if (!lock_kind_ok(m))       /* re-read: we may have slept a while */
        return bad_kind(err);
    rc = pthread_mutex_timedlock(m, &ts);
    if (rc != ETIMEDOUT)
        return lock_result(m, rc, err);
    if (lock_owner_vanished(m))
        return shm_fail(err, SHM_ECORRUPT,
                        "channel lock is held by a thread that does not exist "
                        "(header overwritten?)");
    if (until >= deadline)
        return lock_result(m, ETIMEDOUT, err);
    return shm_fail(err, SHM_EINTR, "lock wait slice");
}

void
sync_unlock(sync_handles *h, sync_lock_id lock_id, void *area)
{
    (void)h;
    (void)lock_id;
    /* A kind rewritten while we held the lock: leave the garbage alone
       (the next locker is refused); glibc would act on it. */
    if (lock_kind_ok((pthread_mutex_t *)area))
        (void)pthread_mutex_unlock((pthread_mutex_t *)area);
}

shm_status
sync_wait(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t expected,
          int64_t deadline, shm_error *err)
{
    struct timespec ts;
    int64_t now = sync_now_ns(), rel;
    long rc;

    (void)h;
    (void)word_id;
    if (deadline <= now)
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    rel = deadline - now > WAIT_SLICE_NS ? WAIT_SLICE_NS : deadline - now;
    ts.tv_sec = (time_t)(rel / SYNC_NS_PER_S);
    ts.tv_nsec = (long)(rel % SYNC_NS_PER_S);
    /* FUTEX_WAIT's timeout is relative (CLOCK_MONOTONIC). */
    rc = syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
    if (rc == 0)
        return SHM_OK;
    switch (errno) {
    case EAGAIN:        /* the word had already changed */
        return SHM_OK;
    case ETIMEDOUT:
        /* At the deadline the caller re-checks and times out.  The end of
           a slice before it is a check-in (sync.h), as on Windows: a signal
           delivered before FUTEX_WAIT began interrupts nothing, and only
           the binding's PyErr_CheckSignals() after SHM_EINTR sees it. */
        if (rel == deadline - now)
            return SHM_OK;
        return shm_fail(err, SHM_EINTR, "wait slice");
    case EINTR:
        return shm_fail(err, SHM_EINTR, "interrupted");
    default:
        return shm_fail_os(err, "futex", errno);
    }
}

void
sync_wake(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t waiters)
{
    (void)waiters;
    (void)h;
    (void)word_id;
    (void)syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}
