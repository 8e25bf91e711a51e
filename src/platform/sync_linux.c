/*
 * platform/sync_linux.c -- channel waits and locks on Linux (futex words and
 * liveness slots); the rest of platform/sync.h is in sync_posix.c.
 *
 * Owns: sync_kind, sync_domain, sync_cpu, sync_ncpu, the handles, the
 * locks and the waits on Linux, the process's list of open handles
 * (for fork), and sync_users (the liveness slots held on a file).
 * May include: the C library, POSIX and Linux headers, platform/sync.h,
 * core/atomics.h.  No Python.h.
 *
 * Nothing in the segment is ever followed as a pointer: the lock and wait
 * words are plain 32-bit values that this file checks before use, and the
 * kernel only ever compares them (FUTEX_WAIT) or sleeps on their address.
 *
 * Waits: futex(2) FUTEX_WAIT / FUTEX_WAKE on the wait word in the shared
 * mapping (not FUTEX_PRIVATE: the waiters are in other processes).  A
 * waiter sets SYNC_WAITERS in the word before it sleeps on the value with
 * the bit; a waker moves the sequence on and clears the bit in one
 * compare-and-swap, and calls FUTEX_WAKE only when the bit was set.  So the
 * fast path makes no system call, and a waiter killed while blocked leaves
 * at most one needless wake behind (the next bump clears its bit).  A signal
 * ends FUTEX_WAIT with EINTR (CPython installs its handlers without
 * SA_RESTART), which is how Ctrl-C reaches a blocked recv().
 *
 * Locks: one word per side, 0 when free, else the owner's liveness slot
 * (1..SLOT_MAX), plus SYNC_WAITERS when someone may sleep on it.  Lock is a
 * compare-and-swap 0 -> slot, a short spin, then FUTEX_WAIT in slices;
 * unlock swaps the word back to 0 and wakes one sleeper if the bit was set.
 *
 * Liveness slots: every attached channel object (sync_handles) owns a
 * descriptor of the segment's file and, through its open file description,
 * an F_OFD_SETLK write lock on one byte at SLOT_BASE + slot (byte-range
 * locks may lie far beyond the end of the file).  The kernel drops that lock
 * when the description is released, that is when the object is closed or
 * its process dies, in whatever PID namespace: the file is the same for
 * every process that maps the segment.  No pid or thread id is stored or
 * trusted.  The description is one of its own (reopened through
 * /proc/self/fd), never the one the segment was mapped from: a mapping
 * holds its description, and a forked child inherits the mapping, so locks
 * on that one would outlive their process.
 *
 *   - Claiming (attach): F_OFD_SETLK on slot bytes until one is free.  Its
 *     previous holder is gone (the kernel let us lock the byte), so a lock
 *     word still naming that slot is an orphan: it is cleared at once.
 *   - A waiter that finds a lock busy after its spin, once per slice, tries
 *     F_OFD_SETLK on the owner's byte.  Refused: the owner lives.  Granted:
 *     the owner is dead, and while we hold its byte no one can claim that
 *     slot, so a compare-and-swap of the word from that owner to us takes
 *     the lock over (exactly one waiter wins); then the byte is released.
 *     Whatever the dead owner was doing is abandoned, which the channel
 *     protocol makes harmless (nothing to repair).
 *   - A word whose owner is outside 1..SLOT_MAX is garbage: SHM_ECORRUPT
 *     (treating it as dead would hide the corruption).
 *   - Counting (sync_users, for `pyshm rm --stale`): the slot bytes held
 *     are the channel objects attached to the file, in every process and
 *     PID namespace; F_OFD_GETLK through a description that holds none
 *     (any descriptor of the file, read-only too) finds them, and takes
 *     none.  Between an object's open and its claim, and after a creator
 *     published a new channel's name and before it claims its slot (a few
 *     microseconds), the count does not include it yet.
 *
 * Fork: a child shares its parent's open file descriptions and so its slot
 * locks; a parent that died holding a channel lock would then look alive for
 * as long as the child lives.  A pthread_atfork child handler therefore
 * gives every open handle of the child a description of its own (reopening
 * /proc/self/fd/N), claims a new slot on it and closes the inherited
 * descriptor.  Without /proc (and, at attach, without the segment's name
 * still naming the same file) the slot lives on the mapped description: the
 * locks stay exclusive, but after a fork a dead parent's lock is recovered
 * only when its child has exited too.
 */
#include "platform/sync.h"

#include <errno.h>          /* EINTR, EAGAIN, ETIMEDOUT, EUSERS, ... */
#include <fcntl.h>          /* fcntl, F_OFD_SETLK, struct flock, open */
#include <limits.h>         /* INT_MAX */
#include <linux/futex.h>    /* FUTEX_WAIT, FUTEX_WAKE */
#include <pthread.h>        /* pthread_atfork, the registry's mutex */
#include <sched.h>          /* sched_getaffinity, CPU_COUNT, sched_getcpu */
#include <stdio.h>          /* snprintf */
#include <string.h>         /* memset, memcpy, strlen */
#include <sys/stat.h>       /* fstat, S_ISREG: is a reopened name the same file? */
#include <sys/mman.h>       /* shm_open */
#include <sys/syscall.h>    /* SYS_futex */
#include <time.h>           /* struct timespec */
#include <unistd.h>         /* syscall, sysconf, close, getpid */

#include "core/atomics.h"   /* compare-and-swap on the shared words */

/* The OFD lock commands are Linux 3.15's and first in glibc 2.20's headers:
   a build against older ones (manylinux2014's glibc 2.17) defines them
   here, with the values of <asm-generic/fcntl.h> that x86 and arm64 share.
   A kernel older than 3.15 refuses them (EINVAL): channels and slots cannot be
   created or opened there (an OSError naming fcntl(F_OFD_SETLK)). */
#ifndef F_OFD_GETLK
#define F_OFD_GETLK 36
#endif
#ifndef F_OFD_SETLK
#define F_OFD_SETLK 37
#endif

/* Slot bytes live at SLOT_BASE + slot, far beyond any segment. */
typedef char sync_check_off_t[sizeof(off_t) >= 8 ? 1 : -1];
#define SLOT_BASE ((off_t)1 << 62)
/* Owner ids that a lock word may hold (sync.h).  More objects attached to
   one channel at once than this is refused (EUSERS). */
#define SLOT_MAX SYNC_SLOT_MAX

/* Longest single lock wait before the caller checks for signals; also how
   long a waiter already asleep takes to notice a dead owner. */
#define LOCK_SLICE_NS ((int64_t)25000000)
/* Spins on a busy lock before sleeping on it; holders only copy a message. */
#define LOCK_SPINS 2000

#define OWNER(v) ((v) & ~SYNC_WAITERS)

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
sync_domain(void)
{
    /* Liveness slots are locks on the shared file: every process that can
       map the segment sees them, whatever its PID namespace. */
    return 0;
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

static long
futex(uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}

static void
wake(uint32_t *word, int n)
{
    (void)futex(word, FUTEX_WAKE, (uint32_t)n, NULL);
}

/* Relative timeout from now to UNTIL (> now). */
static struct timespec
until_ts(int64_t until, int64_t now)
{
    struct timespec ts;
    int64_t rel = until - now;

    ts.tv_sec = (time_t)(rel / SYNC_NS_PER_S);
    ts.tv_nsec = (long)(rel % SYNC_NS_PER_S);
    return ts;
}

/* ---- liveness slots ------------------------------------------------------- */

/* F_OFD_SETLK of TYPE (F_WRLCK / F_UNLCK) on SLOT's byte through FD: 0 or
   errno (EAGAIN / EACCES: another description holds it).  Never blocks. */
static int
slot_lock(int fd, uint32_t slot, short type)
{
    struct flock fl;

    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = SLOT_BASE + (off_t)slot;
    fl.l_len = 1;
    fl.l_pid = 0;       /* required for the OFD commands */
    return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
}

static int
slot_busy(int rc)
{
    return rc == EAGAIN || rc == EACCES;
}

/* A slot number that is its own lock word's owner id: 1..SLOT_MAX. */
static int
owner_valid(uint32_t v)
{
    return OWNER(v) >= 1 && OWNER(v) <= SLOT_MAX;
}

/* H just claimed its slot: its previous holder is gone, so a lock word still
   naming it is an orphan that no waiter could ever take over (they would
   find the slot's byte locked, by us).  Free it and wake its sleepers. */
static void
clear_orphans(sync_handles *h)
{
    uint32_t v;
    int i;

    for (i = 0; i < SYNC_NLOCKS; i++) {
        if (h->words[i] == NULL)
            continue;
        v = at_load32(h->words[i]);
        while (OWNER(v) == h->slot) {
            if (at_cas32_val(h->words[i], &v, 0)) {
                if (v & SYNC_WAITERS)
                    wake(h->words[i], INT_MAX);
                break;
            }
        }
    }
}

/* Claim a free slot for H (whose fd is set): scan from a point that differs
   between processes, so that claims rarely probe a busy byte. */
static shm_status
claim_slot(sync_handles *h, shm_error *err)
{
    uint32_t start, i, k;
    int rc;

    start = (uint32_t)((uint64_t)sync_now_ns() ^ ((uint64_t)getpid() * 2654435761u));
    for (i = 0; i < SLOT_MAX; i++) {
        k = 1u + (start + i) % SLOT_MAX;
        rc = slot_lock(h->fd, k, F_WRLCK);
        if (rc == 0) {
            h->slot = k;
            clear_orphans(h);
            return SHM_OK;
        }
        if (!slot_busy(rc))
            return shm_fail_os(err, "fcntl(F_OFD_SETLK)", rc);
    }
    return shm_fail_os(err, "fcntl(F_OFD_SETLK)", EUSERS);
}

/*
 * The lock WORD, found holding V (another object's slot), stayed busy: if
 * its owner is dead, take the lock over for H.  1 taken, 0 not (the owner
 * lives, or another thread of this object is checking right now).
 */
static int
take_from_dead(sync_handles *h, uint32_t *word, uint32_t v)
{
    uint32_t owner = OWNER(v);
    int taken = 0;

    /* Threads of one object share one open file description, whose locks
       never conflict with each other: only one of them may check at once,
       or two could both "hold" the owner's byte and race past each other. */
    if (!at_casi(&h->probing, 0, 1))
        return 0;
    if (slot_lock(h->fd, owner, F_WRLCK) == 0) {
        /* No one holds the owner's byte, and while we do no one can claim
           that slot: every word naming it is an orphan. */
        v = at_load32(word);
        while (OWNER(v) == owner) {
            if (at_cas32_val(word, &v, h->slot | (v & SYNC_WAITERS))) {
                taken = 1;
                break;
            }
        }
        (void)slot_lock(h->fd, owner, F_UNLCK);
    }
    at_storei(&h->probing, 0);
    return taken;
}

/* ---- the process's open handles, for fork --------------------------------- */

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static sync_handles *registry;          /* guarded by registry_mutex */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_rc;                   /* written once under atfork_once */

static void
registry_link(sync_handles *h)
{
    h->prev = NULL;
    h->next = registry;
    if (registry != NULL)
        registry->prev = h;
    registry = h;
}

static void
registry_unlink(sync_handles *h)
{
    if (h->prev != NULL)
        h->prev->next = h->next;
    else if (registry == h)
        registry = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

static void
fork_prepare(void)
{
    (void)pthread_mutex_lock(&registry_mutex);
}

static void
fork_parent(void)
{
    (void)pthread_mutex_unlock(&registry_mutex);
}

/* "/proc/self/fd/" FD, without stdio (this runs in a fork child handler,
   where only async-signal-safe calls belong). */
static void
fd_path(char *buf, int fd)
{
    static const char prefix[] = "/proc/self/fd/";
    char digits[12];
    int n = 0, i;

    memcpy(buf, prefix, sizeof prefix - 1);
    do {
        digits[n++] = (char)('0' + fd % 10);
        fd /= 10;
    } while (fd > 0 && n < (int)sizeof digits);
    for (i = 0; i < n; i++)
        buf[sizeof prefix - 1 + (size_t)i] = digits[n - 1 - i];
    buf[sizeof prefix - 1 + (size_t)n] = '\0';
}

/* A new open file description of the file open as FD: -1 without /proc. */
static int
reopen(int fd)
{
    char path[32];

    fd_path(path, fd);
    return open(path, O_RDWR | O_CLOEXEC);
}

/* In a fork child: give H its own open file description and slot, and let
   go of the parent's (whose lock stays with the parent). */
static void
reclaim_after_fork(sync_handles *h)
{
    int inherited = h->fd, fd;
    uint32_t inherited_slot = h->slot;
    shm_error err;

    at_storei(&h->probing, 0);      /* the probing thread is not in the child */
    fd = reopen(inherited);
    if (fd < 0)
        return;                     /* no /proc: keep sharing (see the top) */
    h->fd = fd;
    if (claim_slot(h, &err) != SHM_OK) {
        (void)close(fd);
        h->fd = inherited;
        h->slot = inherited_slot;
        return;
    }
    (void)close(inherited);
}

static void
fork_child(void)
{
    sync_handles *h;

    for (h = registry; h != NULL; h = h->next)
        reclaim_after_fork(h);
    (void)pthread_mutex_unlock(&registry_mutex);
}

static void
atfork_init(void)
{
    atfork_rc = pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- handles ---------------------------------------------------------------- */

/* Without /proc: the segment's name, if it still names the file open as
   MAPPED (same device and inode, a regular file); -1 otherwise.  Anyone may
   have put a FIFO or a link under the name since it was opened: never
   blocking, never following (as platform/segment_posix.c opens names). */
static int
reopen_by_name(const char *name, int mapped)
{
    char path[SHM_NAME_MAX + 2];
    struct stat a, b;
    size_t len = strlen(name);
    int fd;

    if (len > SHM_NAME_MAX || fstat(mapped, &a) != 0)
        return -1;
    path[0] = '/';
    memcpy(path + 1, name, len + 1);
    /* glibc sets FD_CLOEXEC itself */
    fd = shm_open(path, O_RDWR | O_NONBLOCK | O_NOFOLLOW, 0);
    if (fd < 0)
        return -1;
    if (fstat(fd, &b) != 0 || !S_ISREG(b.st_mode) || a.st_dev != b.st_dev ||
        a.st_ino != b.st_ino) {
        (void)close(fd);
        return -1;
    }
    return fd;
}

shm_status
sync_handles_open(sync_handles *h, const shm_char *name, intptr_t *fd,
                  uint32_t *words[SYNC_NLOCKS], shm_error *err)
{
    shm_status status;
    int i, mapped;

    (void)pthread_once(&atfork_once, atfork_init);
    if (atfork_rc != 0)
        return shm_fail_os(err, "pthread_atfork", atfork_rc);
    if (*fd < 0)
        return shm_fail(err, SHM_EVALUE, "segment was opened without its descriptor");
    /* The slot's lock goes on a description of its own, not the mapped one
       (see the top); the segment's descriptor is taken over either way. */
    mapped = (int)*fd;
    *fd = -1;
    h->fd = reopen(mapped);
    if (h->fd < 0)
        h->fd = reopen_by_name(name, mapped);
    if (h->fd < 0)
        h->fd = mapped;
    else
        (void)close(mapped);
    for (i = 0; i < SYNC_NLOCKS; i++)
        h->words[i] = words[i];
    /* Claim and register as one step, so that a fork in between cannot
       give the child an unregistered copy of the parent's slot. */
    (void)pthread_mutex_lock(&registry_mutex);
    status = claim_slot(h, err);
    if (status == SHM_OK)
        registry_link(h);
    (void)pthread_mutex_unlock(&registry_mutex);
    if (status != SHM_OK) {
        (void)close(h->fd);
        h->fd = -1;
    }
    return status;
}

void
sync_handles_close(sync_handles *h)
{
    if (h->fd < 0)
        return;
    (void)pthread_mutex_lock(&registry_mutex);
    registry_unlink(h);
    /* Closing the description drops the slot's lock: our words, if any were
       left (there are none unless a thread died holding one), become
       orphans that the next waiter takes over. */
    (void)close(h->fd);
    h->fd = -1;
    h->slot = 0;
    (void)pthread_mutex_unlock(&registry_mutex);
}

/* Whether another open file description holds a lock in slot bytes
   [LO, HI) of the file open as FD: 1 yes, 0 no, or -errno.  F_OFD_GETLK
   takes any descriptor, read-only too, and reports one conflicting lock;
   FD's own description holds none. */
static int
slots_held(int fd, uint32_t lo, uint32_t hi)
{
    struct flock fl;

    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = SLOT_BASE + (off_t)lo;
    fl.l_len = (off_t)(hi - lo);
    fl.l_pid = 0;       /* required for the OFD commands */
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

shm_status
sync_users(intptr_t fd, long *users, shm_error *err)
{
    /* Halve each range that holds a lock until it is one slot: the kernel
       names one conflicting lock per question, not the lowest, so this
       counts every one with at most two questions per level (20 levels
       for SLOT_MAX).  The stack holds one pending half per level. */
    struct { uint32_t lo, hi; } todo[64];
    int n = 0, rc;
    long found = 0;
    uint32_t lo, hi, mid;

    todo[n].lo = 1;
    todo[n].hi = SLOT_MAX + 1u;
    n++;
    while (n > 0) {
        n--;
        lo = todo[n].lo;
        hi = todo[n].hi;
        rc = slots_held((int)fd, lo, hi);
        if (rc < 0)
            return shm_fail_os(err, "fcntl(F_OFD_GETLK)", -rc);
        if (rc == 0)
            continue;
        if (hi - lo == 1) {
            found++;
            continue;
        }
        mid = lo + (hi - lo) / 2;
        todo[n].lo = mid;
        todo[n].hi = hi;
        todo[n + 1].lo = lo;
        todo[n + 1].hi = mid;
        n += 2;
    }
    *users = found;
    return SHM_OK;
}

/* ---- locks ------------------------------------------------------------------ */

static shm_status
lock_corrupt(shm_error *err)
{
    return shm_fail(err, SHM_ECORRUPT, "lock word is corrupt (it names no valid owner; header "
                                       "overwritten?)");
}

static shm_status
lock_busy(shm_error *err)
{
    return shm_fail(err, SHM_ETIMEOUT, "the lock stayed busy until the timeout");
}

shm_status
sync_trylock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, shm_error *err)
{
    uint32_t v = 0;

    (void)lock_id;
    if (h->slot == 0)
        return shm_fail(err, SHM_EVALUE, "lock used by an object that is not attached");
    if (at_cas32_val(word, &v, h->slot))
        return SHM_OK;
    return owner_valid(v) ? lock_busy(err) : lock_corrupt(err);
}

shm_status
sync_lock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, int64_t deadline,
          shm_error *err)
{
    uint32_t me = h->slot, v;
    int64_t now, until;
    struct timespec ts;
    int i, probed = 0, interrupted = 0;

    (void)lock_id;
    if (me == 0)
        return shm_fail(err, SHM_EVALUE, "lock used by an object that is not attached");
    for (i = 0; ; i++) {
        /* Read before writing: a failed compare-and-swap still takes the
           cache line away from the holder. */
        v = at_load32(word);
        if (v == 0 && at_cas32_val(word, &v, me))
            return SHM_OK;
        if (!owner_valid(v))
            return lock_corrupt(err);
        if (i >= LOCK_SPINS)
            break;
        sync_cpu_relax();
    }

    /* Still busy: is its owner alive?  Asked even when the deadline has
       passed, so that a try (timeout 0) takes over a dead owner's lock at
       once, as it would a free one. */
    if (OWNER(v) != me) {
        probed = 1;
        if (take_from_dead(h, word, v))
            return SHM_OK;
    }
    now = sync_now_ns();
    if (deadline <= now)
        return lock_busy(err);
    until = deadline - now > LOCK_SLICE_NS ? now + LOCK_SLICE_NS : deadline;
    for (;;) {
        v = at_load32(word);
        if (v == 0) {
            /* Taken after sleeping: keep the bit, others may sleep too. */
            if (at_cas32_val(word, &v, me | SYNC_WAITERS))
                return SHM_OK;
            continue;
        }
        if (!owner_valid(v))
            return lock_corrupt(err);
        if (OWNER(v) != me && !probed) {
            /* Once per slice: is the (new) owner still alive?  Our own slot
               means this object holds it -- another thread, or a loan of
               the binding, which may outlive the thread that took it: the
               slot is alive, and the binding ends a loan whose thread has
               gone between the slices this wait returns for (SHM_EINTR). */
            probed = 1;
            if (take_from_dead(h, word, v))
                return SHM_OK;
            continue;
        }
        if (!(v & SYNC_WAITERS) && !at_cas32_val(word, &v, v | SYNC_WAITERS))
            continue;
        v |= SYNC_WAITERS;
        now = sync_now_ns();
        if (now >= until)
            break;
        ts = until_ts(until, now);
        if (futex(word, FUTEX_WAIT, v, &ts) != 0) {
            if (errno == EINTR) {
                interrupted = 1;
                break;
            }
            if (errno == ETIMEDOUT)
                break;
            if (errno != EAGAIN)
                return shm_fail_os(err, "futex", errno);
        }
    }
    /* The slice is over: one last try, then back to the caller, which
       checks for signals and calls again with the same deadline. */
    v = 0;
    if (at_cas32_val(word, &v, me | SYNC_WAITERS))
        return SHM_OK;
    if (!owner_valid(v))
        return lock_corrupt(err);
    if (interrupted)
        return shm_fail(err, SHM_EINTR, "interrupted");
    if (until >= deadline)
        return lock_busy(err);
    return shm_fail(err, SHM_EINTR, "lock wait slice");
}

void
sync_unlock(sync_handles *h, sync_lock_id lock_id, uint32_t *word)
{
    uint32_t me = h->slot, v = me;

    (void)lock_id;
    if (at_cas32_val(word, &v, 0))
        return;     /* nobody sleeps on it: no system call */
    while (OWNER(v) == me && me != 0) {
        if (at_cas32_val(word, &v, 0)) {
            if (v & SYNC_WAITERS)
                wake(word, 1);
            return;
        }
    }
    /* The word names someone else: overwritten by another process.  Leave
       it; its next locker sees what it holds. */
}

/* ---- waits ------------------------------------------------------------------ */

shm_status
sync_wait(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t *count,
          uint32_t seq, int64_t until, shm_error *err)
{
    uint32_t v = at_load32(word);
    struct timespec ts;
    int64_t now;

    (void)h;
    (void)word_id;
    (void)count;
    /* Register: the waker clears the bit and wakes only when it is set. */
    for (;;) {
        if ((v ^ seq) & SYNC_SEQ_MASK)
            return SHM_OK;
        if (v & SYNC_WAITERS)
            break;
        if (at_cas32_val(word, &v, v | SYNC_WAITERS)) {
            v |= SYNC_WAITERS;
            break;
        }
    }
    now = sync_now_ns();
    if (until <= now)
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    ts = until_ts(until, now);
    /* FUTEX_WAIT's timeout is relative (CLOCK_MONOTONIC). */
    if (futex(word, FUTEX_WAIT, v, &ts) == 0)
        return SHM_OK;
    switch (errno) {
    case EAGAIN:        /* the word had already changed */
        return SHM_OK;
    case ETIMEDOUT:
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    case EINTR:
        return shm_fail(err, SHM_EINTR, "interrupted");
    default:
        return shm_fail_os(err, "futex", errno);
    }
}

int
sync_waiting(const uint32_t *word, const uint32_t *count)
{
    (void)count;
    return (at_load32_relaxed(word) & SYNC_WAITERS) != 0;
}

void
sync_bump(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t *count)
{
    uint32_t v = at_load32_relaxed(word);

    (void)h;
    (void)word_id;
    (void)count;
    /* Next sequence, bit cleared, in one step: a waiter that registers
       after this sees a new sequence and does not sleep. */
    while (!at_cas32_val(word, &v, (v + 1u) & SYNC_SEQ_MASK))
        ;
    if (v & SYNC_WAITERS)
        wake(word, INT_MAX);
}
