/*
 * platform/sync_fallback.c -- portable POSIX channel waits and locks, for
 * systems without futexes or robust process-shared mutexes (macOS has
 * neither; the BSDs differ).  Built and tested on Linux too:
 * PYSHM_WAIT=fallback.  The rest of platform/sync.h is in sync_posix.c.
 *
 * Owns: sync_kind, sync_domain, sync_cpu, sync_ncpu, the handles, the
 * locks and the waits of the portable scheme, sync_users (it cannot tell).
 * May include: the C library, POSIX headers, platform/sync.h,
 * core/atomics.h.  No Python.h.
 *
 * Waits: sleep with exponential backoff (nanosleep, 10 us doubling to
 * 2 ms) while the word's sequence is unchanged.  The channel spins first,
 * so a busy peer is caught without sleeping; an idle one costs at most
 * ~500 wake-ups a second.  Bumps only move the sequence: waiters look for
 * themselves, so there is nothing to register and no waiter bit.
 *
 * Locks: a 32-bit word holding the owner's pid, taken with compare-and-swap
 * from 0.  A waiter that finds the owner gone (kill(pid, 0) fails with
 * ESRCH) takes the lock over with another compare-and-swap from that pid,
 * so exactly one waiter wins.  A word above the largest pid is garbage
 * (SHM_ECORRUPT).  Known limits: if the dead owner's pid is reused by a
 * live process before anyone looks, the lock stays taken until that process
 * exits; and a pid means something only inside one PID namespace, so every
 * process using a channel must share its creator's (sync_domain(): on Linux
 * the namespace is recorded at create and checked at attach; a process of
 * another namespace is refused rather than allowed to mistake a live owner
 * for a dead one).  macOS has no PID namespaces; FreeBSD jails would need
 * the same care (one jail per channel), which nothing here can check.
 */
#include "platform/sync.h"

#include <errno.h>      /* EINTR, ESRCH */
#include <signal.h>     /* kill */
#include <sys/stat.h>   /* stat: the PID namespace's inode (Linux) */
#include <time.h>       /* clock_gettime, nanosleep */
#include <unistd.h>     /* getpid, sysconf, close */

#include "core/atomics.h"    /* compare-and-swap on the lock word */

#define LOCK_SLICE_NS ((int64_t)25000000)
#define BACKOFF_MIN_NS ((int64_t)10000)
#define BACKOFF_MAX_NS ((int64_t)2000000)
#define LOCK_SPINS 2000
/* The largest lock word that can be a pid: pid_t is a signed 32-bit int,
   and kill() reads a negative pid as a process group (-1: every process we
   may signal), so a word above INT32_MAX is garbage, never an owner.  Real
   pids are far smaller (Linux caps pid_max at 2^22); this bound only keeps
   the (pid_t) cast in try_take() positive. */
#define PID_LIMIT 0x7fffffffu

uint32_t
sync_kind(void)
{
    return SYNC_KIND_FALLBACK;
}

const char *
sync_kind_name(void)
{
    return "fallback";
}

uint32_t
sync_domain(void)
{
#ifdef __linux__
    /* The only POSIX system here with PID namespaces: the inode of
       /proc/self/ns/pid names ours (namespace inodes fit 32 bits). */
    struct stat st;

    if (stat("/proc/self/ns/pid", &st) == 0)
        return (uint32_t)st.st_ino;
#endif
    return 0;
}

uint32_t
sync_cpu(void)
{
    /* No portable way to ask (macOS has none): the spinner falls back to
       its fixed yield schedule. */
    return 0u;
}

int
sync_ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

shm_status
sync_handles_open(sync_handles *h, const shm_char *name, intptr_t *fd,
                  uint32_t *words[SYNC_NLOCKS], shm_error *err)
{
    (void)h;
    (void)name;
    (void)words;
    (void)err;
    /* Pid locks need no file: the descriptor the segment kept goes. */
    if (*fd >= 0)
        (void)close((int)*fd);
    *fd = -1;
    return SHM_OK;
}

void
sync_handles_close(sync_handles *h)
{
    (void)h;
}

shm_status
sync_users(intptr_t fd, long *users, shm_error *err)
{
    /* A lock word names a pid only while that lock is held: nothing here
       records who has a channel open. */
    (void)fd;
    (void)err;
    *users = -1;
    return SHM_OK;
}

/*
 * One backoff step of a wait that ends at DEADLINE: sleep *BACKOFF (never
 * past the deadline), double *BACKOFF up to BACKOFF_MAX_NS, and read the
 * clock into *NOW.  SHM_EINTR when a signal cut the sleep short.
 */
static shm_status
nap(int64_t deadline, int64_t *now, int64_t *backoff, shm_error *err)
{
    int64_t ns = deadline - *now < *backoff ? deadline - *now : *backoff;
    struct timespec ts;

    ts.tv_sec = (time_t)(ns / SYNC_NS_PER_S);
    ts.tv_nsec = (long)(ns % SYNC_NS_PER_S);
    if (nanosleep(&ts, NULL) != 0 && errno == EINTR)
        return shm_fail(err, SHM_EINTR, "interrupted");
    *backoff = *backoff * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : *backoff * 2;
    *now = sync_now_ns();
    return SHM_OK;
}

/* One attempt: free -> ours; owner gone -> ours.  1 taken, 0 busy, -1 garbage. */
static int
try_take(uint32_t *word, uint32_t me, int check_owner)
{
    uint32_t owner = at_load32(word);

    if (owner == 0)
        return at_cas32(word, 0, me) ? 1 : 0;
    if (owner > PID_LIMIT)
        return -1;
    if (!check_owner)
        return 0;
    if (kill((pid_t)owner, 0) == 0 || errno != ESRCH)
        return 0;
    /* The owner died holding the lock: whatever it did is unpublished. */
    return at_cas32(word, owner, me) ? 1 : 0;
}

static shm_status
take_result(int r, shm_error *err)
{
    if (r > 0)
        return SHM_OK;
    if (r < 0)
        return shm_fail(err, SHM_ECORRUPT, "lock word is corrupt (header overwritten?)");
    return shm_fail(err, SHM_ETIMEOUT, "the lock stayed busy until the timeout");
}

shm_status
sync_trylock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, shm_error *err)
{
    (void)h;
    (void)lock_id;
    return take_result(try_take(word, (uint32_t)getpid(), 0), err);
}

shm_status
sync_lock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, int64_t deadline,
          shm_error *err)
{
    uint32_t me = (uint32_t)getpid();
    int64_t now, slice_end, backoff = BACKOFF_MIN_NS;
    int i, r;
    shm_status status;

    (void)h;
    (void)lock_id;
    for (i = 0; i < LOCK_SPINS; i++) {
        r = try_take(word, me, 0);
        if (r != 0)
            return take_result(r, err);
        sync_cpu_relax();
    }
    now = sync_now_ns();
    slice_end = now + LOCK_SLICE_NS;
    for (;;) {
        r = try_take(word, me, 1);
        if (r != 0)
            return take_result(r, err);
        if (deadline <= now)
            return take_result(0, err);
        if (now >= slice_end)
            return shm_fail(err, SHM_EINTR, "lock wait slice");
        status = nap(deadline, &now, &backoff, err);
        if (status != SHM_OK)
            return status;
    }
}

void
sync_unlock(sync_handles *h, sync_lock_id lock_id, uint32_t *word)
{
    (void)h;
    (void)lock_id;
    /* Only our own pid goes back to 0: a word overwritten by another
       process is left for its next locker to judge. */
    (void)at_cas32(word, (uint32_t)getpid(), 0);
}

shm_status
sync_wait(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t *count,
          uint32_t seq, int64_t until, shm_error *err)
{
    int64_t now = sync_now_ns(), backoff = BACKOFF_MIN_NS;
    shm_status status;

    (void)h;
    (void)word_id;
    (void)count;
    for (;;) {
        if ((at_load32(word) ^ seq) & SYNC_SEQ_MASK)
            return SHM_OK;
        if (until <= now)
            return shm_fail(err, SHM_ETIMEOUT, "timed out");
        status = nap(until, &now, &backoff, err);
        if (status != SHM_OK)
            return status;
    }
}

void
sync_bump(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t *count)
{
    (void)h;
    (void)word_id;
    (void)count;
    /* Sleepers poll the sequence; a carry into the top bit is masked off. */
    (void)at_add32_sc(word, 1);
}
